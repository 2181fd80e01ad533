/*
 * wire/op_request: the training ops' small JSON requests as the client
 * writes them (create_model, load_weights, save_weights,
 * save_weights_for_sampler, optim_step, {"type"}), the seq_id and
 * model_id added last, and the sampling session's ids added to an
 * asample body (encode.h).  Each body is compared with the bytes the
 * client has always sent and, where the values are the same, with the
 * request the SDK sent in test/golden/tinker.txt (its keys in another
 * order).  The server's decoders read the SDK's recorded requests back to
 * the same values, and refuse malformed ones naming the field.
 */
#include "tb_test.h"

#include "core/json.h"
#include "wire/encode.h"
#include "wire/op_request.h"
#include "wire_golden.h"

/* The SDK's recorded body of the first request ">>> <request>". */
static json_t *golden_doc(const char *request) {
  char *bytes = golden_request(request, 0);
  json_t *doc = parse(bytes);
  free(bytes);
  return doc;
}

/* v, with its seq_id (when >= 0) and model_id added, has the golden
 * request's value; v is released. */
static void assert_value(json_t *v, int64_t seq_id, const char *request) {
  ASSERT(v != NULL);
  if (seq_id >= 0)
    ASSERT_OK(tb__wire_request_add_seq_id(v, seq_id));
  ASSERT_OK(tb__wire_request_add_model_id(v, RUN));
  json_t *g = golden_doc(request);
  if (!json_equal(v, g)) {
    char *a = tb__json_dump(v, NULL), *b = tb__json_dump(g, NULL);
    fprintf(stderr, "%s\n!=\n%s\n", a, b);
    free(a);
    free(b);
    ASSERT(0);
  }
  json_decref(g);
  json_decref(v);
}

TEST(create_and_load) {
  tb__wire_create_model_t cm = { SESS, 0, "base", 4, 1, 1, 1, 1, 3 };
  assert_bytes(tb__wire_create_model_to_json(&cm),
               "{\"session_id\":\"" SESS "\",\"model_seq_id\":0,\"base_model\":\"base\","
               "\"lora_config\":{\"rank\":4,\"train_mlp\":true,\"train_attn\":true,"
               "\"train_unembed\":true,\"seed\":3},\"type\":\"create_model\"}");
  json_t *g = golden_doc("POST /api/v1/create_model");
  json_t *v = tb__wire_create_model_to_json(&cm);
  ASSERT(json_equal(v, g));
  json_decref(v);
  json_decref(g);
  cm.has_seed = 0, cm.train_attn = 0;
  assert_bytes(tb__wire_create_model_to_json(&cm),
               "{\"session_id\":\"" SESS "\",\"model_seq_id\":0,\"base_model\":\"base\","
               "\"lora_config\":{\"rank\":4,\"train_mlp\":true,\"train_attn\":false,"
               "\"train_unembed\":true},\"type\":\"create_model\"}");

  tb__wire_load_request_t ld = { NULL, -1, "tinker://" RUN "/weights/w1", 1 };
  json_t *b = tb__wire_load_request_to_json(&ld);
  ASSERT_OK(tb__wire_request_add_seq_id(b, 6));
  ASSERT_OK(tb__wire_request_add_model_id(b, RUN));
  assert_bytes(b, "{\"path\":\"tinker://" RUN "/weights/w1\",\"optimizer\":true,"
                  "\"type\":\"load_weights\",\"seq_id\":6,\"model_id\":\"" RUN "\"}");
  assert_value(tb__wire_load_request_to_json(&ld), 6, "POST /api/v1/load_weights");
  /* create-via-load names the session and the model's seq first */
  tb__wire_load_request_t cl = { SESS, 2, "tinker://r/weights/w", 0 };
  assert_bytes(tb__wire_load_request_to_json(&cl),
               "{\"session_id\":\"" SESS "\",\"model_seq_id\":2,\"path\":\"tinker://r/weights/w\","
               "\"optimizer\":false,\"type\":\"load_weights\"}");
}

TEST(save_optim_and_typed) {
  tb__wire_save_request_t sv = { "save_weights", "w1", 0, 0, -1 };
  assert_bytes(tb__wire_save_request_to_json(&sv),
               "{\"type\":\"save_weights\",\"path\":\"w1\",\"overwrite\":false}");
  sv.ttl_seconds = 60;
  assert_bytes(tb__wire_save_request_to_json(&sv),
               "{\"type\":\"save_weights\",\"path\":\"w1\",\"ttl_seconds\":60,"
               "\"overwrite\":false}");
  tb__wire_save_request_t ss = { "save_weights_for_sampler", "s1", 0, -1, -1 };
  assert_bytes(tb__wire_save_request_to_json(&ss),
               "{\"type\":\"save_weights_for_sampler\",\"path\":\"s1\"}");
  assert_value(tb__wire_save_request_to_json(&ss), 7, "POST /api/v1/save_weights_for_sampler");
  tb__wire_save_request_t sg = { "save_weights_for_sampler", NULL, 0, -1, 3 };
  assert_bytes(tb__wire_save_request_to_json(&sg),
               "{\"type\":\"save_weights_for_sampler\",\"sampling_session_seq_id\":3}");

  tb__wire_adam_t a = { 0.5, 0.25, 0.125, 0.0625, 0.0, 1.5 };
  assert_bytes(tb__wire_optim_request_to_json(&a),
               "{\"adam_params\":{\"learning_rate\":0.5,\"beta1\":0.25,\"beta2\":0.125,"
               "\"eps\":0.0625,\"weight_decay\":0.0,\"grad_clip_norm\":1.5},"
               "\"type\":\"optim_step\"}");

  json_t *t = tb__wire_typed_to_json("unload_model");
  ASSERT_OK(tb__wire_request_add_model_id(t, "m"));
  assert_bytes(t, "{\"type\":\"unload_model\",\"model_id\":\"m\"}");
  assert_value(tb__wire_typed_to_json("unload_model"), -1, "POST /api/v1/unload_model");
  assert_value(tb__wire_typed_to_json("get_info"), -1, "POST /api/v1/get_info");
}

/* The decoders through one signature (tb_test_reader_fn). */
TB_TEST_READER(read_target, tb__wire_op_target_from_json)
TB_TEST_READER(read_create, tb__wire_create_model_from_json)
TB_TEST_READER(read_load, tb__wire_load_request_from_json)

static int read_save(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_save_request_from_json(c, v, "save_weights", out);
}

static int read_save_sampler(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_save_request_from_json(c, v, "save_weights_for_sampler", out);
}

static int read_adam(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_adam_from_json(c, v, 1, out);
}

/* The server reads what the SDK sent; written again by the client's
 * encoder, the value is the same. */
TEST(server_reads_recorded_requests) {
  tb__wire_create_model_t cm;
  char *bytes = golden_request("POST /api/v1/create_model", 0);
  json_t *doc = read_ok(bytes, read_create, NULL, &cm);
  ASSERT_EQ_INT(cm.rank, 4);
  ASSERT(cm.has_seed && cm.seed == 3);
  json_t *v = tb__wire_create_model_to_json(&cm);
  ASSERT(json_equal(v, doc));
  json_decref(v);
  json_decref(doc);
  free(bytes);

  static const char *const ops[] = { "POST /api/v1/optim_step", "POST /api/v1/save_weights",
                                     "POST /api/v1/load_weights",
                                     "POST /api/v1/save_weights_for_sampler" };
  for (int i = 0; i < 4; i++) {
    bytes = golden_request(ops[i], 0);
    tb__wire_op_target_t t;
    doc = read_ok(bytes, read_target, NULL, &t);
    ASSERT_STR_EQ(t.model_id, RUN);
    ASSERT_EQ_INT(t.seq_id, 4 + i);
    if (i == 0) {
      tb__wire_adam_t a = { 1, 2, 3, 4, 5, 6 };
      json_decref(read_ok(bytes, read_adam, NULL, &a));
      ASSERT(a.learning_rate == 0.01 && a.beta1 == 0.9 && a.beta2 == 0.95 && a.eps == 1e-12);
      ASSERT(a.weight_decay == 5 && a.grad_clip_norm == 6);  /* left out: the caller's */
    } else if (i == 2) {
      /* the strings read are the document's: written again before it goes */
      tb__wire_load_request_t ld;
      json_t *d = read_ok(bytes, read_load, NULL, &ld);
      ASSERT(ld.session_id == NULL && ld.optimizer == 1);
      assert_value(tb__wire_load_request_to_json(&ld), 6, ops[i]);
      json_decref(d);
    } else {
      tb__wire_save_request_t sv;
      json_t *d = read_ok(bytes, i == 1 ? read_save : read_save_sampler, NULL, &sv);
      ASSERT(sv.overwrite == 0 && sv.ttl_seconds == 0 && sv.sampling_session_seq_id == -1);
      if (i == 3) {
        sv.overwrite = -1;
        assert_value(tb__wire_save_request_to_json(&sv), 7, ops[i]);
      }
      json_decref(d);
    }
    json_decref(doc);
    free(bytes);
  }
  /* create-via-load */
  tb__wire_load_request_t cl = { SESS, 2, "tinker://r/weights/w", 0, "base" };
  char *text = tb__json_dump(v = tb__wire_load_request_to_json(&cl), NULL);
  json_decref(v);
  tb__wire_load_request_t back;
  doc = read_ok(text, read_load, NULL, &back);
  ASSERT_STR_EQ(back.session_id, SESS);
  ASSERT_EQ_INT(back.model_seq_id, 2);
  ASSERT_STR_EQ(back.base_model, "base");
  same_again(tb__wire_load_request_to_json(&back), doc, text);
}

TEST(server_refuses_malformed_requests) {
  static const tb_test_refusal_t cases[] = {
    { "{\"seq_id\":1}", read_target, "model_id: required field is missing" },
    { "{\"model_id\":\"m\",\"seq_id\":-1}", read_target, "seq_id: -1 is out of range" },
    { "{\"session_id\":\"s\",\"model_seq_id\":0,\"base_model\":\"b\","
      "\"lora_config\":{\"rank\":0}}",
      read_create, "lora_config.rank: 0 is out of range [1, 4096]" },
    { "{\"session_id\":\"s\",\"model_seq_id\":0,\"base_model\":\"b\","
      "\"lora_config\":{\"train_mlp\":1}}",
      read_create, "lora_config.train_mlp: expected a boolean" },
    { "{\"session_id\":\"s\",\"base_model\":\"b\"}", read_create,
      "model_seq_id: required field is missing" },
    { "{\"session_id\":\"s\",\"model_seq_id\":0}", read_load, "path: required field is missing" },
    { "{\"path\":\"p\",\"optimizer\":\"yes\"}", read_load, "optimizer: expected a boolean" },
    { "{}", read_save, "path: required field is missing" },
    { "{}", read_save_sampler, "sampling_session_seq_id: required field is missing" },
    { "{\"path\":\"p\",\"ttl_seconds\":0}", read_save, "ttl_seconds: 0 is out of range" },
    { "{\"adam_params\":{\"lr\":1}}", read_adam, "adam_params.lr: unknown Adam parameter" },
    { "{\"adam_params\":{\"beta1\":\"x\"}}", read_adam, "adam_params.beta1: expected a number" },
  };
  assert_refusals(cases, sizeof(cases) / sizeof(cases[0]));
}

/* A sample encoded before its session exists, the ids added later (and
 * again on a retry), is the body encoded with them. */
TEST(sample_ids_added_later) {
  int32_t prompt[3] = { 1, 2, 3 };
  tb__wire_sample_request_t r = { .prompt = prompt,
                                  .n_prompt = 3,
                                  .params = { .max_tokens = 5,
                                              .has_seed = 1,
                                              .seed = 7,
                                              .temperature = 1.0,
                                              .top_k = -1,
                                              .top_p = 1.0 },
                                  .num_samples = 2,
                                  .prompt_logprobs = 1,
                                  .seq_id = -1 };
  json_t *early = tb__wire_sample_request_to_json(&r);
  ASSERT_OK(tb__wire_sample_request_add_ids(early, SESS ":sample:0", 4));
  ASSERT_OK(tb__wire_sample_request_add_ids(early, SESS ":sample:0", 5));
  r.sampling_session_id = SESS ":sample:0";
  r.seq_id = 5;
  json_t *late = tb__wire_sample_request_to_json(&r);
  char *want = late != NULL ? tb__json_dump(late, NULL) : NULL;
  json_decref(late);
  ASSERT(want != NULL);
  ASSERT_STR_CONTAINS(want, "\"type\":\"sample\",\"sampling_session_id\":\"" SESS
                            ":sample:0\",\"seq_id\":5}");
  assert_bytes(early, want);
  free(want);
}

TEST_LIST(
  TEST_ENTRY(create_and_load),
  TEST_ENTRY(save_optim_and_typed),
  TEST_ENTRY(sample_ids_added_later),
  TEST_ENTRY(server_reads_recorded_requests),
  TEST_ENTRY(server_refuses_malformed_requests),
)

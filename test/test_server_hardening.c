/*
 * The server against inputs an attacker or an unlucky operator sends:
 * weights that diverged (NaN or infinite logits) and the Adam parameters
 * that make them, bodies whose declared sizes lie about the bytes they
 * carry, and bytes that are not UTF-8 quoted back in errors.  Each
 * reproduces what a probe of the server found, with the request that
 * found it.  What the server reads from and writes to disk is in
 * test_server_files.c.
 */
#include "test_server_hardening.h"

#include <fcntl.h>

#include "engine/safetensors.h"

/* ------------------------------------------------------------ helpers */

/* Overwrites every float of the tensors of the safetensors file at path
 * whose names contain `part` with value (f32, f16 or bf16 as stored):
 * weights as a diverged run leaves them.  Returns how many were hit. */
static size_t poison_tensors(const char *path, const char *part, float value) {
  tb__st_file_t f;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__st_open(&f, path, &err));
  int fd = open(path, O_WRONLY);
  ASSERT(fd >= 0);
  size_t hit = 0;
  for (size_t i = 0; i < f.n_tensors; i++) {
    const tb__st_tensor_t *t = &f.tensors[i];
    if (strstr(t->name, part) == NULL)
      continue;
    off_t off = (off_t)(t->data - (const unsigned char *)f.map);
    size_t es = tb__st_dtype_size(t->dtype);
    uint32_t bits;
    memcpy(&bits, &value, 4);
    uint16_t half = t->dtype == TB_ST_BF16 ? (uint16_t)(bits >> 16)
                    : isnan(value)         ? 0x7e00
                    : value > 0            ? 0x7c00
                                           : 0xfc00;
    for (size_t k = 0; k < t->nbytes / es; k++) {
      const void *src = es == 4 ? (const void *)&bits : (const void *)&half;
      ASSERT_EQ_INT(pwrite(fd, src, es, off + (off_t)(k * es)), (long long)es);
    }
    hit++;
  }
  close(fd);
  tb__st_close(&f);
  return hit;
}

/* Asserts v is {"error": "...want...", "category": cat} and frees it. */
static void expect_error(json_t *v, const char *cat, const char *want) {
  const char *e = json_string_value(json_object_get(v, "error"));
  if (e == NULL || strstr(e, want) == NULL)
    fprintf(stderr, "expected an error with \"%s\", got %s\n", want,
            e ? e : "(no error)");
  ASSERT(e != NULL);
  ASSERT_STR_CONTAINS(e, want);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "category")), cat);
  ASSERT(json_object_get(v, "sequences") == NULL && json_object_get(v, "samples") == NULL);
  json_decref(v);
}

#define NOT_FINITE "the model's outputs are not finite"

/* An asample of body fails as the user's error: outputs not finite, and
 * the message names why. */
static void asample_not_finite(const char *body, const char *why) {
  char *rid = post_field("/api/v1/asample", NULL, body, "request_id");
  char *msg = failure_of(rid, "user");
  ASSERT_STR_CONTAINS(msg, NOT_FINITE);
  ASSERT_STR_CONTAINS(msg, why);
  free(msg);
  free(rid);
}

/* ------------------------------------------------------------ fault 1 */

/* The path: forward_backward, optim_step with learning_rate 1e30,
 * then a sample with top_p 0.9.  The step is refused now; weights that
 * diverged anyway (here a checkpoint holding NaN, loaded with
 * load_weights) fail the sample as the user's error, in the Tinker
 * dialect, instead of drawing tokens from NaN (which read before the
 * sampler's buffer). */
TEST(diverged_adapter_fails_the_sample_tinker) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  char body[1024];
  fwdbwd_done(mid, 1);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":2,\"adam_params\":{\"learning_rate\":1e30},"
           "\"type\":\"optim_step\"}", mid);
  expect_error(post_json("/api/v1/optim_step", NULL, body, 400), "user",
               "adam_params.learning_rate: must be a finite number in [0, 1]");
  /* Every absurd Adam parameter is refused at submission, by name. */
  static const char *bad[][2] = {
    { "\"learning_rate\":-0.001", "adam_params.learning_rate: " },
    { "\"learning_rate\":1.5", "adam_params.learning_rate: " },
    { "\"beta1\":1", "adam_params.beta1: must lie in [0, 1)" },
    { "\"beta2\":-0.1", "adam_params.beta2: must lie in [0, 1)" },
    { "\"eps\":0", "adam_params.eps: must be a finite number > 0" },
    { "\"eps\":1e300", "adam_params.eps: " },
    { "\"weight_decay\":-1", "adam_params.weight_decay: " },
    { "\"learning_rate\":0.5,\"weight_decay\":3", "adam_params.weight_decay: " },
    { "\"grad_clip_norm\":-1", "adam_params.grad_clip_norm: " },
    { "\"grad_clip_norm\":1e300", "adam_params.grad_clip_norm: " },
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    snprintf(body, sizeof(body),
             "{\"model_id\":\"%s\",\"seq_id\":2,\"adam_params\":{%s},\"type\":\"optim_step\"}",
             mid, bad[i][0]);
    expect_error(post_json("/api/v1/optim_step", NULL, body, 400), "user", bad[i][1]);
  }
  /* The refusals took no seq_id: step 2 is still to come. */
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"get_info\"}", mid);
  hc_expect("POST", "/api/v1/get_info", NULL, body, 200, "\"lora_rank\":4");
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":2,\"adam_params\":{\"learning_rate\":0.01},"
           "\"type\":\"optim_step\"}", mid);
  json_decref(tinker_op("/api/v1/optim_step", body));

  /* A checkpoint of the adapter, its tensors then turned to NaN. */
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":3,\"path\":\"good\",\"type\":\"save_weights\"}", mid);
  json_decref(tinker_op("/api/v1/save_weights", body));
  char path[512];
  snprintf(path, sizeof(path), "%s/%s/weights/good/adapter_model.safetensors", data_dir, mid);
  ASSERT_GT(poison_tensors(path, "lora_B", NAN), 0);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":4,\"path\":\"tinker://%s/weights/good\","
           "\"type\":\"load_weights\"}", mid, mid);
  json_decref(tinker_op("/api/v1/load_weights", body));
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":5,\"path\":\"s\","
           "\"type\":\"save_weights_for_sampler\"}", mid);
  json_decref(tinker_op("/api/v1/save_weights_for_sampler", body));
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,"
           "\"model_path\":\"tinker://%s/sampler_weights/s\","
           "\"type\":\"create_sampling_session\"}", sid, mid);
  char *ssid = post_field("/api/v1/create_sampling_session", NULL, body,
                          "sampling_session_id");
  char *sb = sample_body(ssid, 0);
  asample_not_finite(sb, "the adapter has diverged");
  free(sb);
  /* A forward pass of the same weights still answers: a diverged loss is
   * a number the client may look at, not a draw. */
  fwdbwd_done(mid, 6);
  free(ssid);
  free(mid);
  free(sid);
  stop_training();
}

/* The same in the Tinkerbell dialect: optim_step refuses the rate, and a
 * model whose adapter holds infinities fails sample (400) and asample
 * (a failed future), with the user's category. */
TEST(diverged_adapter_fails_the_sample_tinkerbell) {
  start_training(NULL);
  const char *fb = "{\"model_id\":\"boom\",\"data\":[[{\"role\":\"user\",\"content\":\"hi\"},"
                   "{\"role\":\"assistant\",\"content\":\"hello\"}]],"
                   "\"loss_fn\":\"cross_entropy\"}";
  json_decref(post_json("/api/v1/forward_backward", NULL, fb, 200));
  expect_error(post_json("/api/v1/optim_step", NULL,
                         "{\"model_id\":\"boom\",\"adam_params\":{\"learning_rate\":1e30}}",
                         400),
               "user", "adam_params.learning_rate: must be a finite number in [0, 1]");
  expect_error(post_json("/api/v1/optim_step_async", NULL,
                         "{\"model_id\":\"boom\",\"adam_params\":{\"eps\":-1}}", 400),
               "user", "adam_params.eps: ");
  expect_error(post_json("/optim_step", NULL,
                         "{\"model_id\":\"boom\",\"adam_params\":{\"beta2\":1.0}}", 400),
               "user", "adam_params.beta2: ");
  json_decref(post_json("/api/v1/optim_step", NULL,
                        "{\"model_id\":\"boom\",\"adam_params\":{\"learning_rate\":0.01}}",
                        200));
  tb_async_ok("/api/v1/save_weights", "{\"model_id\":\"boom\",\"path\":\"w\"}");
  char path[512];
  tb_adapter_file(path, "boom", "w");
  ASSERT_GT(poison_tensors(path, "lora_B", INFINITY), 0);
  ASSERT_GT(poison_tensors(path, "lora_A", 1.0f), 0);
  tb_async_ok("/api/v1/load_weights", "{\"model_id\":\"boom\",\"path\":\"w\"}");
  const char *sample = "{\"model_id\":\"boom\",\"prompt\":\"hi\",\"max_tokens\":4,"
                       "\"top_p\":0.9,\"seed\":1}";
  json_t *v = post_json("/api/v1/sample", NULL, sample, 400);
  ASSERT_STR_CONTAINS(json_string_value(json_object_get(v, "detail")), NOT_FINITE);
  expect_error(v, "user", NOT_FINITE);
  hc_t *c = tb_await(post_json("/api/v1/asample", NULL, sample, 200));
  ASSERT_EQ_INT(c->status, 500);
  expect_error(hc_json(c), "user", "the adapter has diverged");
  hc_free(c);
  /* Training such a model still answers: the loss JSON cannot carry is
   * null. */
  v = post_json("/api/v1/forward_backward", NULL, fb, 200);
  ASSERT(json_is_null(json_object_get(v, "loss")));
  ASSERT(json_is_null(json_object_get(v, "loss_sum")));
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "model_id")), "boom");
  json_decref(v);
  stop_training();
}

/* A base model whose lm_head (or embeddings) hold NaN: sampling it fails
 * with the user's error in both dialects, never with tokens. */
TEST(nan_base_model_fails_the_sample) {
  char hf[64], dir[96], st[128];
  save_base_copy(hf, dir, sizeof(dir));
  snprintf(st, sizeof(st), "%s/model.safetensors", dir);
  if (poison_tensors(st, "lm_head", NAN) == 0)
    ASSERT_GT(poison_tensors(st, "embed_tokens", NAN), 0);
  start_training_beside("nan", dir);
  const char *sample = "{\"base_model\":\"nan\",\"prompt\":{\"chunks\":[{\"type\":"
                       "\"encoded_text\",\"tokens\":[1,2]}]},\"sampling_params\":"
                       "{\"max_tokens\":2,\"seed\":4,\"top_p\":0.9}}";
  asample_not_finite(sample, "base model");
  /* With top_k, greedy, and prompt log-probs only (no token drawn). */
  char *rid = post_field("/api/v1/asample", NULL,
                         "{\"base_model\":\"nan\",\"prompt\":{\"chunks\":[{\"type\":"
                         "\"encoded_text\",\"tokens\":[1,2]}]},\"sampling_params\":"
                         "{\"max_tokens\":0,\"top_k\":5,\"temperature\":0},"
                         "\"prompt_logprobs\":true}",
                         "request_id");
  free(failure_of(rid, "user"));
  free(rid);
  json_t *v = post_json("/api/v1/sample", NULL,
                        "{\"base_model\":\"nan\",\"prompt_tokens\":[1,2,3],\"top_p\":0.9,"
                        "\"max_tokens\":3}",
                        400);
  expect_error(v, "user", NOT_FINITE);
  /* The healthy model next to it still samples. */
  rid = post_field("/api/v1/asample", NULL,
                   "{\"base_model\":\"base\",\"prompt\":{\"chunks\":[{\"type\":"
                   "\"encoded_text\",\"tokens\":[1,2]}]},\"sampling_params\":"
                   "{\"max_tokens\":2,\"seed\":4,\"top_p\":0.9}}",
                   "request_id");
  json_decref(result_json(rid, NULL));
  free(rid);
  stop_training();
  tb_test_tmpdir_remove(hf);
}

/* ------------------------------------------------------------ fault 2 */

/* A ForwardBackwardRequest for model mid of one datum whose input `key`
 * (an int64 tensor) declares shape[0..n_shape) over a single value, with
 * loss function loss_fn: about 121 bytes with a model id of the server's
 * form. */
static uint8_t *datum_body(const char *mid, const char *loss_fn, const char *key,
                           const int64_t *shape, size_t n_shape, size_t *len) {
  static const int32_t toks[1] = { 1 };
  static const int64_t val[1] = { 2 };
  TinkerPublic__Tensor tt =
      tb_test_proto_dense(val, sizeof(val), TINKER_PUBLIC__DTYPE__DTYPE_INT64, shape, n_shape);
  tb_test_proto_input_t in[] = { { key, &tt } };
  return tb_test_proto_fwdbwd(mid, 1, loss_fn, toks, 1, in, 1, len);
}

static uint8_t *shape_body(const char *mid, const int64_t *shape, size_t n_shape, size_t *len) {
  return datum_body(mid, "cross_entropy", "target_tokens", shape, n_shape, len);
}

/* The bodies: shape [2^27] made the server allocate and zero
 * 1 GiB on the loop before it compared the shape with the one value
 * sent; [2^40] answered 400 {"error":"success"}.  Both are refused now
 * with a message, with no such allocation (the process' peak memory
 * does not move). */
TEST(lying_sizes_are_refused_before_allocating) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  long rss0 = peak_rss_kib();
  int64_t s27[1] = { (int64_t)1 << 27 }, s40[1] = { (int64_t)1 << 40 };
  size_t len;
  uint8_t *b = shape_body(mid, s27, 1, &len);
  ASSERT_LT(len, 160);
  hc_t *c = hc_do_raw("/api/v1/forward_backward", "Content-Type: application/x-protobuf\r\n",
                      b, len);
  free(b);
  ASSERT_EQ_INT(c->status, 400);
  expect_error(hc_json(c), "user", "target_tokens: data has 1 elements but the shape "
                                   "holds 134217728");
  hc_free(c);
  ASSERT_LT(peak_rss_kib() - rss0, 64 * 1024);
  b = shape_body(mid, s40, 1, &len);
  c = hc_do_raw("/api/v1/forward_backward", "Content-Type: application/x-protobuf\r\n", b,
                len);
  free(b);
  ASSERT_EQ_INT(c->status, 400);
  ASSERT(strstr(c->body, "success") == NULL);
  expect_error(hc_json(c), "user", "but the shape holds 1099511627776");
  hc_free(c);
  /* The JSON sparse path, in both dialects: one value of a [1, 2^31-1]
   * tensor is 16 GiB once dense. */
  const char *sparse = "\"target_tokens\":{\"data\":[5],\"dtype\":\"int64\","
                       "\"shape\":[1,2147483647],\"sparse_crow_indices\":[0,1],"
                       "\"sparse_col_indices\":[0]}";
  char *fb = fwd_body_n(mid, 1, "[1]", sparse);
  expect_error(post_json("/api/v1/forward_backward", NULL, fb, 400), "user",
               "shape [1, 2147483647]: 2147483647 elements of 8 bytes, more than the "
               "67108864 bytes a tensor of a request may take");
  free(fb);
  char tbb[512];
  snprintf(tbb, sizeof(tbb),
           "{\"model_id\":\"lies\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
           "\"encoded_text\",\"tokens\":[1]}]},\"loss_fn_inputs\":{%s}}]}", sparse);
  expect_error(post_json("/api/v1/forward_backward", NULL, tbb, 400), "user",
               "more than the 67108864 bytes");
  ASSERT_LT(peak_rss_kib() - rss0, 64 * 1024);
  /* The model is unharmed, and an honest protobuf body trains it. */
  b = proto_body(mid, 1, &len);
  c = hc_do_raw("/api/v1/forward_backward", "Content-Type: application/x-protobuf\r\n", b,
                len);
  free(b);
  ASSERT_EQ_INT(c->status, 200);
  char *rid = field_of(c, "request_id");
  hc_free(c);
  json_t *v = result_json(rid, NULL);
  ASSERT_GT(metric_of(v, "loss:sum"), 0);
  json_decref(v);
  free(rid);
  free(mid);
  free(sid);
  stop_training();
}

/* ------------------------------------------------------------ fault 5 */

/* An answer's body must be JSON a client can parse (jansson refuses
 * anything that is not UTF-8); returns the error message. */
static char *error_of(hc_t *c, int status) {
  if (c->status != status)
    fprintf(stderr, "%d %s\n", c->status, c->body);
  ASSERT_EQ_INT(c->status, status);
  json_error_t e;
  json_t *v = json_loadb(c->body, c->body_len, 0, &e);
  if (v == NULL)
    tb_test_fail(__FILE__, __LINE__, "the answer is not JSON (%s): %s", e.text, c->body);
  const char *msg = json_string_value(json_object_get(v, "error"));
  ASSERT(msg != NULL);
  char *r = xstrdup(msg);
  json_decref(v);
  return r;
}

#define FFFD "\xef\xbf\xbd"

/* Protobuf strings are bytes: a loss function, an input's key or a model
 * id that is not UTF-8 was quoted raw into the error, and the answer was
 * no JSON at all.  Such bytes come back as U+FFFD. */
TEST(invalid_utf8_is_never_echoed_into_json) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  const char *proto = "Content-Type: application/x-protobuf\r\n";
  /* model NULL: the model just made. */
  static const struct {
    const char *model, *loss_fn, *key;
    int64_t shape;
    int status;
    const char *want;
  } cases[] = {
    { NULL, "cross\xc3(entropy\xff", "target_tokens", 1, 400,
      "unknown loss function \"cross" FFFD "(entropy" FFFD "\"" },
    { NULL, "cross_entropy", "we\xffights\xe2\x82", 1, 400, "target_tokens: missing" },
    { NULL, "cross_entropy", "target_tokens\xc0\xaf", 7, 400,
      "loss_fn_inputs.target_tokens" FFFD FFFD ": data has 1 elements" },
    { "sess-\xff\xfe:train:0", "cross_entropy", "target_tokens", 1, 404,
      "sess-" FFFD FFFD ":train:0" },
  };
  hc_t *c;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t len;
    uint8_t *b = datum_body(cases[i].model ? cases[i].model : mid, cases[i].loss_fn,
                            cases[i].key, &cases[i].shape, 1, &len);
    c = hc_do_raw("/api/v1/forward_backward", proto, b, len);
    free(b);
    char *msg = error_of(c, cases[i].status);
    ASSERT_STR_CONTAINS(msg, cases[i].want);
    free(msg);
    hc_free(c);
  }
  /* A path parameter percent-decoded to bytes that are not UTF-8. */
  c = hc_do("GET", "/api/v1/training_runs/%FF%C3%28", NULL, NULL);
  free(error_of(c, 400));
  hc_free(c);
  c = hc_do("GET", "/api/v1/nope/%FF\xfe", NULL, NULL);
  free(error_of(c, 404));
  hc_free(c);
  /* A JSON body that is not UTF-8: jansson's message quotes the bytes. */
  c = hc_do("POST", "/api/v1/create_session", NULL, "{\"tags\":[\"\xff\xfe\"]}");
  free(error_of(c, 400));
  hc_free(c);
  c = hc_do("POST", "/api/v1/forward_backward", NULL, "{\"model_id\":\"\xc3(\"}");
  free(error_of(c, 400));
  hc_free(c);
  free(mid);
  free(sid);
  stop_training();
}

TEST_LIST(
  TEST_ENTRY(diverged_adapter_fails_the_sample_tinker),
  TEST_ENTRY(diverged_adapter_fails_the_sample_tinkerbell),
  TEST_ENTRY(nan_base_model_fails_the_sample),
  TEST_ENTRY(lying_sizes_are_refused_before_allocating),
  TEST_ENTRY(invalid_utf8_is_never_echoed_into_json),
)

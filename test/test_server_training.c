/*
 * The training routes over loopback: a server with its engine on one
 * loop, driven through a whole SFT round trip (create_model,
 * forward_backward in JSON and protobuf, optim_step, save, load, sampling
 * from the saved weights), the seq_id order of one model, bad input
 * answered 400 or as failed futures with a field path, and models
 * invisible to other users.
 */
#include "test_server_training.h"

TEST(train_save_load_sample) {
  start_training(NULL);
  hc_expect("GET", "/api/v1/get_server_capabilities", NULL, NULL, 200,
            "\"model_name\":\"base\"");
  char *sid = create_session(NULL);
  char *mid = create_model(sid, 0, NULL);

  /* get_info answers directly. */
  char body[1024];
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"get_info\"}", mid);
  hc_expect("POST", "/api/v1/get_info", NULL, body, 200, "\"lora_rank\":4");

  /* forward_backward (JSON): log-probs of every target, loss:sum their
   * negated sum. */
  char *rid = submit_fwdbwd(mid, 1, NULL);
  json_t *v = result_json(rid, NULL);
  free(rid);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "loss_fn_output_type")), "ArrayRecord");
  json_t *lp = json_object_get(json_object_get(json_array_get(
                                   json_object_get(v, "loss_fn_outputs"), 0), "logprobs"),
                               "data");
  ASSERT_EQ_INT(json_array_size(lp), 4);
  double sum = 0;
  for (size_t i = 0; i < 4; i++) {
    double x = json_number_value(json_array_get(lp, i));
    ASSERT_LT(x, 0);
    sum += x;
  }
  double loss0 = metric_of(v, "loss:sum");
  ASSERT_NEAR(loss0, -sum, 1e-4, 1e-4);
  json_decref(v);

  /* optim_step: the metrics of the step. */
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":2,\"adam_params\":{\"learning_rate\":0.01,"
           "\"beta1\":0.9,\"beta2\":0.95,\"eps\":1e-8},\"type\":\"optim_step\"}", mid);
  rid = post_field("/api/v1/optim_step", NULL, body, "request_id");
  v = result_json(rid, NULL);
  free(rid);
  ASSERT_GT(metric_of(v, "grad_norm:mean"), 0);
  ASSERT_NEAR(metric_of(v, "learning_rate:mean"), 0.01, 1e-7, 0);
  json_decref(v);

  /* forward_backward with a protobuf body, the result in protobuf: the
   * step lowered the loss of the same datum. */
  size_t plen;
  uint8_t *pb = proto_body(mid, 3, &plen);
  hc_t *c = hc_do_raw("/api/v1/forward_backward",
                      "Content-Type: application/x-protobuf\r\n", pb, plen);
  free(pb);
  ASSERT_EQ_INT(c->status, 200);
  rid = field_of(c, "request_id");
  hc_free(c);
  c = await_future(rid, "Accept: application/x-protobuf\r\n");
  free(rid);
  ASSERT_STR_CONTAINS(c->head, "application/x-protobuf");
  tb_test_reader_t rd;
  tb__wire_fwdbwd_output_t out;
  read_output_proto(&rd, c->body, c->body_len, &out);
  hc_free(c);
  ASSERT_EQ_INT(out.n_outputs, 1);
  ASSERT_EQ_INT(out.outputs[0].fields[0].tensor.numel, 4);
  double loss1 = NAN;
  for (size_t i = 0; i < out.n_metrics; i++)
    if (strcmp(out.metrics[i].name, "loss:sum") == 0)
      loss1 = out.metrics[i].value;
  ASSERT_LT(loss1, loss0);
  tb_test_reader_free(&rd);

  /* save_weights, then load it back with the optimizer state. */
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":4,\"path\":\"ckpt1\",\"type\":\"save_weights\"}",
           mid);
  rid = post_field("/api/v1/save_weights", NULL, body, "request_id");
  v = result_json(rid, NULL);
  free(rid);
  char want[256];
  snprintf(want, sizeof(want), "tinker://%s/weights/ckpt1", mid);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "path")), want);
  json_decref(v);
  char dir[256];
  struct stat st;
  snprintf(dir, sizeof(dir), "%s/%s/weights/ckpt1", data_dir, mid);
  ASSERT_OK(stat(dir, &st));
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":5,\"path\":\"%s\",\"optimizer\":true,"
           "\"type\":\"load_weights\"}", mid, want);
  rid = post_field("/api/v1/load_weights", NULL, body, "request_id");
  v = result_json(rid, NULL);
  free(rid);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "type")), "load_weights");
  json_decref(v);
  /* A checkpoint that is not there fails the future as a user error. */
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":6,\"path\":\"tinker://%s/weights/nothere\","
           "\"optimizer\":false,\"type\":\"load_weights\"}", mid, mid);
  rid = post_field("/api/v1/load_weights", NULL, body, "request_id");
  free(failure_of(rid, "user"));
  free(rid);

  /* Sampler weights, and sampling from them. */
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":7,\"path\":\"s1\","
           "\"type\":\"save_weights_for_sampler\"}", mid);
  rid = post_field("/api/v1/save_weights_for_sampler", NULL, body, "request_id");
  v = result_json(rid, NULL);
  free(rid);
  snprintf(want, sizeof(want), "tinker://%s/sampler_weights/s1", mid);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "path")), want);
  json_decref(v);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,\"model_path\":\"%s\","
           "\"type\":\"create_sampling_session\"}", sid, want);
  char *ssid = post_field("/api/v1/create_sampling_session", NULL, body,
                          "sampling_session_id");
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,\"num_samples\":2,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3]}]},"
           "\"sampling_params\":{\"max_tokens\":5,\"seed\":7,\"temperature\":1.0},"
           "\"prompt_logprobs\":true,\"type\":\"sample\"}", ssid);
  rid = post_field("/api/v1/asample", NULL, body, "request_id");
  v = result_json(rid, NULL);
  json_t *seqs = json_object_get(v, "sequences");
  ASSERT_EQ_INT(json_array_size(seqs), 2);
  for (size_t i = 0; i < 2; i++) {
    size_t n = json_array_size(json_object_get(json_array_get(seqs, i), "tokens"));
    ASSERT_GT(n, 0);
    ASSERT_LE(n, 5);
  }
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "prompt_logprobs")), 3);
  json_decref(v);
  /* The same result in protobuf. */
  c = await_future(rid, "Accept: application/x-protobuf\r\n");
  tb_test_reader_init(&rd);
  tb__wire_sample_response_t sr;
  ASSERT_OK(tb__wire_sample_response_from_proto(&rd.ctx, &rd.arena,
                                                (tb_slice_t){ c->body, c->body_len }, &sr));
  ASSERT_EQ_INT(sr.n_sequences, 2);
  tb_test_reader_free(&rd);
  hc_free(c);
  free(rid);

  /* The base model samples too; prompt tokens are checked at once. */
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":1,\"base_model\":\"base\","
           "\"type\":\"create_sampling_session\"}", sid);
  char *bsid = post_field("/api/v1/create_sampling_session", NULL, body,
                          "sampling_session_id");
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,99999]}]},"
           "\"sampling_params\":{\"max_tokens\":2},\"type\":\"sample\"}", bsid);
  hc_expect("POST", "/api/v1/asample", NULL, body, 400,
            "prompt: token 99999 at position 1 is outside the vocabulary");
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":1,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},"
           "\"sampling_params\":{\"max_tokens\":2,\"seed\":1},\"type\":\"sample\"}", bsid);
  rid = post_field("/api/v1/asample", NULL, body, "request_id");
  v = result_json(rid, NULL);
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "sequences")), 1);
  json_decref(v);
  free(rid);

  /* unload_model: the model is gone afterwards. */
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"unload_model\"}", mid);
  rid = post_field("/api/v1/unload_model", NULL, body, "request_id");
  v = result_json(rid, NULL);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "model_id")), mid);
  json_decref(v);
  free(rid);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"get_info\"}", mid);
  hc_expect("POST", "/api/v1/get_info", NULL, body, 404, "unknown model");

  free(bsid);
  free(ssid);
  free(mid);
  free(sid);
  stop_training();
}

/* The Tinkerbell dialect's poll does not hold: 202 while pending. */
static int is_pending(const char *rid) {
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  hc_t *c = hc_do("POST", "/retrieve_future", NULL, body);
  int pending = c->status == 202;
  hc_free(c);
  return pending;
}

TEST(unload_while_creating) {
  start_training(NULL);
  char *sid = create_session(NULL);
  /* The base model is still loading: the create waits, the unload after
   * it. */
  char body[256];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":0,\"base_model\":\"base\"}", sid);
  hc_t *c = hc_do("POST", "/api/v1/create_model", NULL, body);
  ASSERT_EQ_INT(c->status, 200);
  char *rid = field_of(c, "request_id");
  char *mid = field_of(c, "model_id");
  hc_free(c);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", mid);
  char *urid = post_field("/api/v1/unload_model", NULL, body, "request_id");
  json_decref(result_json(urid, NULL));
  json_decref(result_json(rid, NULL));
  ASSERT_EQ_INT(srv->auth.local->n_models, 0);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", mid);
  hc_expect("POST", "/api/v1/get_info", NULL, body, 404, "unknown model");
  free(urid);
  free(rid);
  free(mid);
  free(sid);
  stop_training();
}

TEST(seq_id_order) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);

  /* 2 before 1: 2 waits for 1. */
  char *b2 = fwd_body(mid, 2, "forward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  char *rid2 = post_field("/api/v1/forward", NULL, b2, "request_id");
  wait_ms(300);
  ASSERT(is_pending(rid2));
  /* A resent seq_id is the same future. */
  char *again = post_field("/api/v1/forward", NULL, b2, "request_id");
  ASSERT_STR_EQ(again, rid2);
  free(again);
  char *rid1 = submit_fwdbwd(mid, 1, NULL);
  json_t *v1 = result_json(rid1, NULL);
  json_t *v2 = result_json(rid2, NULL);
  /* 2 ran after 1's gradient step was queued but a forward does not
   * train: both see the same weights. */
  ASSERT_NEAR(metric_of(v2, "loss:sum"), metric_of(v1, "loss:sum"), 1e-5, 1e-5);
  json_decref(v1);
  json_decref(v2);
  /* seq 1 again after it ran: still the first future. */
  char *b1 = fwd_body(mid, 1, "forward_backward_input", "cross_entropy", "[1,2,3,4]",
                      SFT_INPUTS);
  again = post_field("/api/v1/forward_backward", NULL, b1, "request_id");
  ASSERT_STR_EQ(again, rid1);
  free(again);
  free(b1);
  /* Older than anything remembered: refused; further ahead than the
   * model's queue holds: 429, to be retried. */
  char *b0 = fwd_body(mid, 0, "forward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  hc_expect("POST", "/api/v1/forward", NULL, b0, 400, "seq_id: 0 is out of order");
  free(b0);
  char *bf = fwd_body(mid, 5000, "forward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  hc_t *c = hc_do("POST", "/api/v1/forward", NULL, bf);
  ASSERT_EQ_INT(c->status, 429);
  ASSERT_STR_CONTAINS(c->body, "seq_id: 5000 is 1024 or more ahead");
  ASSERT_STR_CONTAINS(c->head, "Retry-After: 1");
  hc_free(c);
  free(bf);

  /* The next seq_id runs at once. */
  char *bn = fwd_body(mid, 3, "forward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  char *rid3 = post_field("/api/v1/forward", NULL, bn, "request_id");
  json_decref(result_json(rid3, NULL));
  free(bn);

  free(rid1);
  free(rid2);
  free(rid3);
  free(b2);
  free(mid);
  free(sid);
  stop_training();
}

TEST(bad_input) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  tb__model_config_t cfg;
  tb__base_model_config(&cfg);

  /* Known at submission: 400 with the field's path. */
  char *b = fwd_body(mid, 1, "forward_backward_input", "hinge", "[1,2,3,4]", SFT_INPUTS);
  hc_expect("POST", "/api/v1/forward_backward", NULL, b, 400,
            "forward_backward_input.loss_fn: unknown loss function \\\"hinge\\\"");
  free(b);
  b = fwd_body(mid, 1, "forward_backward_input", "cross_entropy", "[1,2,3,4]",
               "\"weights\":[1,1,1,1]");
  hc_expect("POST", "/api/v1/forward_backward", NULL, b, 400,
            "forward_backward_input.data[0].loss_fn_inputs.target_tokens: missing");
  free(b);
  b = fwd_body(mid, 1, "forward_backward_input", "ppo", "[1,2,3,4]",
               "\"target_tokens\":[2,3,4,5]");
  hc_expect("POST", "/api/v1/forward_backward", NULL, b, 400,
            "data[0].loss_fn_inputs.logprobs: missing (the loss ppo needs it)");
  free(b);
  hc_expect("POST", "/api/v1/optim_step", NULL,
            "{\"model_id\":\"nope\",\"seq_id\":1,\"adam_params\":{}}", 404, "unknown model");
  char body[512];
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":1,\"adam_params\":{\"learning_rate\":-1}}", mid);
  hc_expect("POST", "/api/v1/optim_step", NULL, body, 400, "adam_params");
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":1,\"path\":\"../x\",\"type\":\"save_weights\"}",
           mid);
  hc_expect("POST", "/api/v1/save_weights", NULL, body, 400, "path: expected a name");
  hc_expect("POST", "/api/v1/create_model", NULL,
            "{\"session_id\":\"sess-none\",\"model_seq_id\":1,\"base_model\":\"base\"}", 404,
            "session_id");
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":1,\"base_model\":\"gpt\"}", sid);
  hc_expect("POST", "/api/v1/create_model", NULL, body, 400,
            "base_model: unknown model \\\"gpt\\\"");

  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":1,\"base_model\":\"base\","
           "\"lora_config\":{\"rank\":2,\"train_attn\":false,\"train_mlp\":false,"
           "\"train_unembed\":false}}", sid);
  hc_expect("POST", "/api/v1/create_model", NULL, body, 400,
            "lora_config: at least one of train_attn");

  /* The protobuf request names its fields from the top. */
  size_t plen;
  uint8_t *pb = proto_body_loss(mid, 1, "hinge", &plen);
  hc_t *hc = hc_do_raw("/api/v1/forward_backward", "Content-Type: application/x-protobuf\r\n",
                       pb, plen);
  free(pb);
  ASSERT_EQ_INT(hc->status, 400);
  ASSERT(strncmp(hc->body, "{\"error\":\"loss_fn: unknown loss function", 40) == 0);
  hc_free(hc);

  /* Known to the engine: a failed future of category user. */
  char tokens[64];
  snprintf(tokens, sizeof(tokens), "[1,%d,3,4]", cfg.vocab_size);
  b = fwd_body(mid, 1, "forward_backward_input", "cross_entropy", tokens, SFT_INPUTS);
  char *rid = post_field("/api/v1/forward_backward", NULL, b, "request_id");
  free(b);
  char *msg = failure_of(rid, "user");
  ASSERT_STR_CONTAINS(msg, "data[0]");
  ASSERT_STR_CONTAINS(msg, "outside the vocabulary");
  free(msg);
  free(rid);
  /* A sequence longer than the context. */
  size_t n = (size_t)cfg.max_position_embeddings + 1;
  tb__buf_t toks = { 0 }, ins = { 0 };
  ASSERT_OK(tb__buf_printf(&toks, "["));
  ASSERT_OK(tb__buf_printf(&ins, "\"target_tokens\":["));
  for (size_t i = 0; i < n; i++) {
    ASSERT_OK(tb__buf_printf(&toks, "%s1", i ? "," : ""));
    ASSERT_OK(tb__buf_printf(&ins, "%s2", i ? "," : ""));
  }
  ASSERT_OK(tb__buf_printf(&toks, "]"));
  ASSERT_OK(tb__buf_printf(&ins, "]"));
  ASSERT_OK(tb__buf_append(&toks, "", 1));
  ASSERT_OK(tb__buf_append(&ins, "", 1));
  b = fwd_body_n(mid, 2, toks.base, ins.base);
  rid = post_field("/api/v1/forward_backward", NULL, b, "request_id");
  free(b);
  tb__buf_free(&toks);
  tb__buf_free(&ins);
  msg = failure_of(rid, "user");
  ASSERT_STR_CONTAINS(msg, "data[0]");
  free(msg);
  free(rid);
  /* The model goes on with the next seq_id. */
  fwdbwd_done(mid, 3);

  free(mid);
  free(sid);
  stop_training();
}

TEST(models_belong_to_their_user) {
  char keys[] = "/tmp/tb-keys-XXXXXX";
  tb_test_temp_file(keys, "tml-a1 alice\ntml-b1 bob\n");
  tb_server_options_t o = { .api_keys_file = keys, .max_models_per_user = 1,
                            .long_poll_ms = 200 };
  start_training(&o);
  const char *alice = "X-API-Key: tml-a1\r\n", *bob = "X-API-Key: tml-b1\r\n";
  char *sid = create_session(alice);
  char *mid = create_model(sid, 0, alice);
  char body[512];
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"get_info\"}", mid);
  hc_expect("POST", "/api/v1/get_info", bob, body, 404, "unknown model");
  hc_expect("POST", "/api/v1/get_info", alice, body, 200, "\"is_lora\":true");
  char *b = fwd_body(mid, 1, "forward_backward_input", "cross_entropy", "[1,2,3,4]",
                     SFT_INPUTS);
  hc_expect("POST", "/api/v1/forward_backward", bob, b, 404, "unknown model");
  free(b);
  /* Bob cannot use alice's session nor load her checkpoints. */
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":5,\"base_model\":\"base\"}", sid);
  hc_expect("POST", "/api/v1/create_model", bob, body, 404, "session_id");

  /* Nor her checkpoints, from a model of his own. */
  char *bsid = create_session(bob);
  char *bmid = create_model(bsid, 0, bob);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":1,\"path\":\"tinker://%s/weights/x\"}", bmid,
           mid);
  hc_expect("POST", "/api/v1/load_weights", bob, body, 404, "path: no such checkpoint");
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,"
           "\"model_path\":\"tinker://%s/sampler_weights/x\"}", bsid, mid);
  hc_expect("POST", "/api/v1/create_sampling_session", bob, body, 404,
            "model_path: no such checkpoint");
  free(bmid);
  free(bsid);

  /* A second model of alice waits while she is at her limit. */
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":1,\"base_model\":\"base\","
           "\"lora_config\":{\"rank\":2}}", sid);
  char *rid = post_field("/api/v1/create_model", alice, body, "request_id");
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  wait_ms(100);
  hc_expect("POST", "/api/v1/retrieve_future", alice, body, 200,
            "\"queue_state\":\"paused_rate_limit\"");
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", mid);
  char *urid = post_field("/api/v1/unload_model", alice, body, "request_id");
  json_decref(result_json(urid, alice));
  json_t *v = result_json(rid, alice);
  ASSERT_STR_CONTAINS(json_string_value(json_object_get(v, "model_id")), ":train:1");
  json_decref(v);
  free(urid);
  free(rid);
  free(mid);
  free(sid);
  stop_training();
  unlink(keys);
}

TEST(session_expiry_unloads_models) {
  tb_server_options_t o = { .session_timeout_ms = 1000 };
  start_training(&o);
  char *sid = create_session(NULL);
  char *mid = create_model(sid, 0, NULL);
  char body[512];
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":1,\"path\":\"keep\",\"type\":\"save_weights\"}",
           mid);
  await_done("/api/v1/save_weights", body);
  ASSERT_EQ_INT(srv->auth.local->n_models, 1);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,"
           "\"model_path\":\"tinker://%s/weights/keep\"}", sid, mid);
  char *ssid = post_field("/api/v1/create_sampling_session", NULL, body, "sampling_session_id");
  char sample[512];
  snprintf(sample, sizeof(sample),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1]}]},"
           "\"sampling_params\":{\"max_tokens\":1}}", ssid);
  free(ssid);
  await_done("/api/v1/asample", sample);
  /* No heartbeat: the session expires and its model goes. */
  RUN_UNTIL(srv->auth.local->n_models == 0);
  /* Its sampling sessions too. */
  expect_failure("/api/v1/asample", sample, "the session expired");
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"get_info\"}", mid);
  hc_expect("POST", "/api/v1/get_info", NULL, body, 404, "unknown model");
  hc_expect("GET", "/metrics", NULL, NULL, 200, "tinkerbell_models 0");
  /* Its checkpoint stays. */
  char dir[256];
  struct stat st;
  snprintf(dir, sizeof(dir), "%s/%s/weights/keep", data_dir, mid);
  ASSERT_OK(stat(dir, &st));
  free(mid);
  free(sid);
  stop_training();
}

/* A forward on mid at seq: its loss:sum. */
static double forward_loss(const char *mid, int seq) {
  char *b = fwd_body(mid, seq, "forward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  char *rid = post_field("/api/v1/forward", NULL, b, "request_id");
  json_t *v = result_json(rid, NULL);
  double loss = metric_of(v, "loss:sum");
  json_decref(v);
  free(rid);
  free(b);
  return loss;
}

TEST(create_via_load_and_unnamed_sampler) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  train_step(mid, 1, 0.01);
  char *rid;
  char body[1024];
  double trained = forward_loss(mid, 3);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"seq_id\":4,\"path\":\"c\"}", mid);
  await_done("/api/v1/save_weights", body);

  /* A new model made by loading the checkpoint: its first operation. */
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":1,\"base_model\":\"base\","
           "\"path\":\"tinker://%s/weights/c\",\"optimizer\":true,\"type\":\"load_weights\"}",
           sid, mid);
  hc_t *c = hc_do("POST", "/api/v1/load_weights", NULL, body);
  ASSERT_EQ_INT(c->status, 200);
  rid = field_of(c, "request_id");
  char *mid2 = field_of(c, "model_id");
  hc_free(c);
  char want[128];
  snprintf(want, sizeof(want), "%s:train:1", sid);
  ASSERT_STR_EQ(mid2, want);
  /* A retry is the same future. */
  char *again = post_field("/api/v1/load_weights", NULL, body, "request_id");
  ASSERT_STR_EQ(again, rid);
  free(again);
  json_t *v = result_json(rid, NULL);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "model_id")), mid2);
  json_decref(v);
  free(rid);
  ASSERT_NEAR(forward_loss(mid2, 1), trained, 1e-5, 1e-5);
  /* A checkpoint that is not there: the load fails as a user error. */
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":2,\"path\":\"tinker://%s/weights/zz\","
           "\"optimizer\":false}", sid, mid);
  expect_failure("/api/v1/load_weights", body, "zz");
  /* Of a model that is not loaded, the shape is read from the checkpoint
   * (off the loop), which is not there either. */
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":3,\"path\":\"tinker://%s:train:9/weights/c\","
           "\"optimizer\":false}", sid, sid);
  expect_failure("/api/v1/load_weights", body, "path: ");
  snprintf(body, sizeof(body), "{\"model_id\":\"%s:train:3\",\"type\":\"get_info\"}", sid);
  hc_expect("POST", "/api/v1/get_info", NULL, body, 404, "unknown model");
  /* A sampling session over missing weights: its samples fail. */
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":7,"
           "\"model_path\":\"tinker://%s:train:9/sampler_weights/x\"}", sid, sid);
  char *bad_ss = post_field("/api/v1/create_sampling_session", NULL, body,
                            "sampling_session_id");
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1]}]},"
           "\"sampling_params\":{\"max_tokens\":1}}", bad_ss);
  free(bad_ss);
  expect_failure("/api/v1/asample", body, "model_path: ");

  /* The unnamed save for the sampler gives a sampling session. */
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":2,\"sampling_session_seq_id\":0,"
           "\"type\":\"save_weights_for_sampler\"}", mid2);
  rid = post_field("/api/v1/save_weights_for_sampler", NULL, body, "request_id");
  v = result_json(rid, NULL);
  free(rid);
  const char *ssid = json_string_value(json_object_get(v, "sampling_session_id"));
  snprintf(want, sizeof(want), "%s:sample:0", sid);
  ASSERT_STR_EQ(ssid, want);
  ASSERT_STR_CONTAINS(json_string_value(json_object_get(v, "path")), "/sampler_weights/sampler-");
  char path[256];
  snprintf(path, sizeof(path), "/api/v1/samplers/%s", ssid);
  c = hc_do("GET", path, NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  char *mp = field_of(c, "model_path");
  ASSERT_STR_EQ(mp, json_string_value(json_object_get(v, "path")));
  free(mp);
  hc_free(c);
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3]}]},"
           "\"sampling_params\":{\"max_tokens\":3,\"seed\":5},\"type\":\"sample\"}", ssid);
  json_decref(v);
  rid = post_field("/api/v1/asample", NULL, body, "request_id");
  v = result_json(rid, NULL);
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "sequences")), 1);
  json_decref(v);
  free(rid);
  hc_expect("GET", "/api/v1/samplers/nope", NULL, NULL, 404, "unknown sampling session");

  /* weights_info: from the live model, then from the files. */
  snprintf(body, sizeof(body), "{\"tinker_path\":\"tinker://%s/weights/c\"}", mid);
  hc_expect("POST", "/api/v1/weights_info", NULL, body, 200,
            "{\"base_model\":\"base\",\"is_lora\":true,\"lora_rank\":4,"
            "\"train_unembed\":true,\"train_mlp\":true,\"train_attn\":true}");

  /* Once the first model is unloaded, the shape of its checkpoint comes
   * from the files: for a new model, and for a sampling session. */
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", mid);
  await_done("/api/v1/unload_model", body);
  snprintf(body, sizeof(body), "{\"tinker_path\":\"tinker://%s/weights/c\"}", mid);
  hc_expect("POST", "/api/v1/weights_info", NULL, body, 200,
            "{\"base_model\":\"base\",\"is_lora\":true,\"lora_rank\":4,"
            "\"train_unembed\":true,\"train_mlp\":true,\"train_attn\":true}");
  snprintf(body, sizeof(body), "{\"tinker_path\":\"tinker://%s/weights/none\"}", mid);
  hc_expect("POST", "/api/v1/weights_info", NULL, body, 404, "tinker_path: ");
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":4,\"path\":\"tinker://%s/weights/c\","
           "\"optimizer\":false}", sid, mid);
  await_done("/api/v1/load_weights", body);
  snprintf(want, sizeof(want), "%s:train:4", sid);
  ASSERT_NEAR(forward_loss(want, 1), trained, 1e-5, 1e-5);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":8,"
           "\"model_path\":\"tinker://%s/weights/c\"}", sid, mid);
  char *ss2 = post_field("/api/v1/create_sampling_session", NULL, body, "sampling_session_id");
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},"
           "\"sampling_params\":{\"max_tokens\":2,\"seed\":2}}", ss2);
  free(ss2);
  await_done("/api/v1/asample", body);

  free(mid2);
  free(mid);
  free(sid);
  stop_training();
}

/* Closing with a save's directories being made, jobs in the engine, an
 * op waiting for a missing seq_id and a held unload: everything is
 * answered or released (ASan checks the rest). */
TEST(close_with_work_in_flight) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  char *r1 = submit_fwdbwd(mid, 1, NULL);
  char body[512];
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"seq_id\":2,\"path\":\"w\"}", mid);
  char *r2 = post_field("/api/v1/save_weights", NULL, body, "request_id");
  char *b = fwd_body(mid, 3, "forward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  char *r3 = post_field("/api/v1/forward", NULL, b, "request_id");
  free(b);
  b = fwd_body(mid, 5, "forward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  char *r5 = post_field("/api/v1/forward", NULL, b, "request_id");
  free(b);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", mid);
  char *ru = post_field("/api/v1/unload_model", NULL, body, "request_id");
  /* The op waiting for seq 4 failed with the unload. */
  char *msg = failure_of(r5, "user");
  ASSERT_STR_CONTAINS(msg, "unloaded");
  free(msg);
  stop_training();
  free(r1);
  free(r2);
  free(r3);
  free(r5);
  free(ru);
  free(mid);
  free(sid);
}

/* A save and the operations after it run in order, the save's
 * directories made off the loop. */
TEST(save_keeps_the_order) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  double fresh = forward_loss(mid, 1);
  char body[512];
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"seq_id\":2,\"path\":\"before\"}", mid);
  char *r2 = post_field("/api/v1/save_weights", NULL, body, "request_id");
  char *r3 = submit_fwdbwd(mid, 3, NULL);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":4,\"adam_params\":{\"learning_rate\":0.01}}", mid);
  char *r4 = post_field("/api/v1/optim_step", NULL, body, "request_id");
  json_decref(result_json(r4, NULL));
  json_decref(result_json(r3, NULL));
  json_decref(result_json(r2, NULL));
  double trained = forward_loss(mid, 5);
  ASSERT_GT(fabs(trained - fresh), 1e-3);
  /* Loading the save undoes the step: it was written before it. */
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":6,\"path\":\"tinker://%s/weights/before\"}", mid,
           mid);
  char *r6 = post_field("/api/v1/load_weights", NULL, body, "request_id");
  json_decref(result_json(r6, NULL));
  ASSERT_NEAR(forward_loss(mid, 7), fresh, 1e-5, 1e-6);
  /* A name is not written over unless asked to. */
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"seq_id\":8,\"path\":\"before\"}", mid);
  char *r8 = post_field("/api/v1/save_weights", NULL, body, "request_id");
  char *msg = failure_of(r8, "user");
  ASSERT_STR_CONTAINS(msg, "/weights/before exists; send overwrite: true");
  free(msg);
  free(r8);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":9,\"path\":\"before\",\"overwrite\":true}", mid);
  char *r9 = post_field("/api/v1/save_weights", NULL, body, "request_id");
  json_decref(result_json(r9, NULL));
  free(r9);
  free(r2);
  free(r3);
  free(r4);
  free(r6);
  free(mid);
  free(sid);
  stop_training();
}

/* One asample of the base model from [1, 2] with this seed and extra
 * sampling params; the first sequence. */
static json_t *sample_base(const char *ssid, int seed, const char *extra_params) {
  char body[1024];
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},"
           "\"sampling_params\":{\"max_tokens\":6,\"seed\":%d,\"temperature\":1.0%s}}",
           ssid, seed, extra_params);
  char *rid = post_field("/api/v1/asample", NULL, body, "request_id");
  json_t *v = result_json(rid, NULL);
  free(rid);
  json_t *seq = json_incref(json_array_get(json_object_get(v, "sequences"), 0));
  json_decref(v);
  return seq;
}

TEST(stop_strings) {
  start_training(NULL);
  char *sid = create_session(NULL);
  char body[512];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,\"base_model\":\"base\"}",
           sid);
  char *ssid = post_field("/api/v1/create_sampling_session", NULL, body, "sampling_session_id");
  /* Find a seed whose second token is a printable byte, then stop on it:
   * the same draw ends there. */
  int done = 0;
  for (int seed = 1; seed < 200 && !done; seed++) {
    json_t *seq = sample_base(ssid, seed, "");
    json_t *toks = json_object_get(seq, "tokens");
    if (json_array_size(toks) < 3) {
      json_decref(seq);
      continue;
    }
    int32_t t = (int32_t)json_integer_value(json_array_get(toks, 1));
    tb__buf_t b = { 0 };
    int rc = tb__tok_decode(&t, 1, 0, &b);
    int printable = rc == 0 && b.len == 1 && b.base[0] > 32 && b.base[0] < 127 &&
                    b.base[0] != '"' && b.base[0] != '\\';
    /* The first token must not hold the stop string already. */
    int32_t t0 = (int32_t)json_integer_value(json_array_get(toks, 0));
    tb__buf_t b0 = { 0 };
    printable = printable && tb__tok_decode(&t0, 1, 0, &b0) == 0 &&
                (b0.len == 0 || memchr(b0.base, b.base[0], b0.len) == NULL);
    if (printable) {
      char extra[64];
      snprintf(extra, sizeof(extra), ",\"stop\":[\"%c\"]", b.base[0]);
      json_t *stopped = sample_base(ssid, seed, extra);
      json_t *st = json_object_get(stopped, "tokens");
      ASSERT_EQ_INT(json_array_size(st), 2);
      ASSERT_EQ_INT(json_integer_value(json_array_get(st, 1)), t);
      ASSERT_STR_EQ(json_string_value(json_object_get(stopped, "stop_reason")), "stop");
      json_decref(stopped);
      done = 1;
    }
    tb__buf_free(&b);
    tb__buf_free(&b0);
    json_decref(seq);
  }
  ASSERT(done);
  free(ssid);
  free(sid);
  stop_training();
}

/* A second base model, loaded from a Hugging Face directory: models and
 * samples over it, announced once loaded. */
TEST(several_base_models) {
  char hf[64], dir[96];
  save_base_copy(hf, dir, sizeof(dir));
  start_training_beside("copy", dir);
  tb_error_t err = { 0 };
  /* Names are unique. */
  const char *twice[] = { "base", "base" };
  tb__engine_opts_t eo = { 0 };
  ASSERT_ERR(tb__training_start(srv, &eo, twice, 2, &err), TB_EEXIST);
  ASSERT_STR_CONTAINS(err.message, "named twice");
  tb_error_clear(&err);
  /* The public entry starts the training part once. */
  char spec[128];
  snprintf(spec, sizeof(spec), "copy=%s", dir);
  const char *models[] = { "base", spec };
  ASSERT_ERR(tb_server_start_training(&server, models, 2, 0), TB_EBUSY);
  ASSERT_STR_CONTAINS(server.message, "already runs");

  char *sid = create_session(NULL);
  char body[512];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":0,\"base_model\":\"copy\","
           "\"lora_config\":{\"rank\":4,\"seed\":3}}", sid);
  char *rid = post_field("/api/v1/create_model", NULL, body, "request_id");
  json_t *v = result_json(rid, NULL);
  char *cmid = xstrdup(json_string_value(json_object_get(v, "model_id")));
  json_decref(v);
  free(rid);
  hc_expect("GET", "/api/v1/get_server_capabilities", NULL, NULL, 200,
            "\"model_name\":\"copy\"");
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", cmid);
  hc_expect("POST", "/api/v1/get_info", NULL, body, 200, "\"model_name\":\"copy\"");
  /* The copy has the weights of base: the same adapter gives the same
   * loss on both. */
  char *bmid = create_model(sid, 1, NULL);
  ASSERT_NEAR(forward_loss(cmid, 1), forward_loss(bmid, 1), 1e-6, 1e-6);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":2,\"base_model\":\"nope\"}", sid);
  hc_expect("POST", "/api/v1/create_model", NULL, body, 400, "base_model: unknown model");

  /* Sampling the copy directly. */
  const char *sample = "{\"base_model\":\"copy\",\"prompt\":{\"chunks\":[{\"type\":"
                       "\"encoded_text\",\"tokens\":[1,2]}]},\"sampling_params\":"
                       "{\"max_tokens\":2,\"seed\":4}}";
  rid = post_field("/api/v1/asample", NULL, sample, "request_id");
  v = result_json(rid, NULL);
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "sequences")), 1);
  json_decref(v);
  free(rid);
  hc_expect("POST", "/api/v1/asample", NULL,
            "{\"base_model\":\"copy\",\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\","
            "\"tokens\":[1]}]},\"sampling_params\":{\"max_tokens\":2,\"stop\":[\"x\"]}}",
            422, "sampling_params.stop: the model copy has no tokenizer (copy/tokenizer.json "
                 "is missing");
  free(bmid);
  free(cmid);
  free(sid);
  stop_training();
  tb_test_tmpdir_remove(hf);
}

/* ------------------------------------------------------------ the HTTP client */

static int cl_done;

static void cl_cb(tb__http_client_req_t *req, int status) {
  ASSERT_OK(status);
  cl_done++;
}

/* Sends one request with the project's client and runs the loop until it
 * is answered; the response stays in req until it is freed. */
static void cl_send(tb__http_client_t *cl, tb__http_client_req_t *req, const char *path,
                    const tb__http_header_t *h, size_t nh, const void *body, size_t len) {
  static char url[128];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
  static uv_buf_t b;
  b = uv_buf_init((char *)body, (unsigned)len);
  tb__http_client_req_free(req);
  req->method = "POST";
  req->url = (tb_slice_t){ url, strlen(url) };
  req->headers = h;
  req->n_headers = nh;
  req->body = &b;
  req->n_body = 1;
  int before = cl_done;
  ASSERT_OK(tb__http_client_send(cl, req, cl_cb));
  RUN_UNTIL(cl_done > before);
  ASSERT_EQ_INT(req->response.status, 200);
}

static char *cl_field(tb__http_client_req_t *req, const char *key) {
  json_error_t e;
  json_t *v = json_loadb(req->response.body, req->response.body_len, 0, &e);
  ASSERT(v != NULL);
  ASSERT(json_is_string(json_object_get(v, key)));
  char *r = xstrdup(json_string_value(json_object_get(v, key)));
  json_decref(v);
  return r;
}

static int cl_closed;

static void on_cl_closed(tb__http_client_t *c) {
  cl_closed = 1;
}

TEST(with_the_http_client) {
  start_training(NULL);
  tb__http_client_t cl;
  ASSERT_OK(tb__http_client_init(&loop, &cl, NULL));
  tb__http_client_req_t req;
  tb__http_client_req_init(&req);
  static const tb__http_header_t json_h[] = {
    { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/json") },
  };
  static const tb__http_header_t proto_h[] = {
    { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/x-protobuf") },
    { TB_SLICE_LIT("Accept"), TB_SLICE_LIT("application/x-protobuf") },
  };
  const char *cs = "{\"tags\":[],\"user_metadata\":{},\"sdk_version\":\"0.25.0\"}";
  cl_send(&cl, &req, "/api/v1/create_session", json_h, 1, cs, strlen(cs));
  char *sid = cl_field(&req, "session_id");
  char body[512];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":0,\"base_model\":\"base\","
           "\"lora_config\":{\"rank\":4}}", sid);
  cl_send(&cl, &req, "/api/v1/create_model", json_h, 1, body, strlen(body));
  char *rid = cl_field(&req, "request_id");
  char *mid = cl_field(&req, "model_id");
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\",\"allow_metadata_only\":false}", rid);
  cl_send(&cl, &req, "/api/v1/retrieve_future", json_h, 1, body, strlen(body));
  ASSERT(req.reused_connection);
  char *got = cl_field(&req, "model_id");
  ASSERT_STR_EQ(got, mid);
  free(got);
  free(rid);

  /* forward_backward with a protobuf body, its result as protobuf. */
  size_t plen;
  uint8_t *pb = proto_body(mid, 1, &plen);
  cl_send(&cl, &req, "/api/v1/forward_backward", proto_h, 1, pb, plen);
  free(pb);
  rid = cl_field(&req, "request_id");
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\",\"allow_metadata_only\":false}", rid);
  cl_send(&cl, &req, "/api/v1/retrieve_future", proto_h + 1, 1, body, strlen(body));
  const tb__http_header_t *ct = tb__http_response_header(&req.response, "Content-Type");
  ASSERT(ct != NULL);
  ASSERT_MEM_EQ_STR(ct->value.base, ct->value.len, "application/x-protobuf");
  tb_test_reader_t rd;
  tb__wire_fwdbwd_output_t out;
  read_output_proto(&rd, req.response.body, req.response.body_len, &out);
  ASSERT_EQ_INT(out.n_outputs, 1);
  ASSERT_EQ_INT(out.outputs[0].fields[0].tensor.numel, 4);
  tb_test_reader_free(&rd);
  free(rid);

  tb__http_client_req_free(&req);
  cl_closed = 0;
  tb__http_client_close(&cl, on_cl_closed);
  RUN_UNTIL(cl_closed);
  free(mid);
  free(sid);
  stop_training();
}

/* A job that waits because every engine worker runs another model's job
 * is polled as paused_capacity, and as active (then done) once it runs. */
TEST(paused_capacity_while_the_engine_is_full) {
  char *sid, *a, *b;
  start_one_worker(50, &sid, &a, &b);
  /* A long job on a: 2000 tokens, 16 datums' worth of work in one. */
  char *ra = submit_long_fwd(a, 1);
  char *rb = submit_fwdbwd(b, 1, NULL);
  /* b's first poll ends (50 ms) while a's job runs (far longer). */
  char body[160];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rb);
  hc_t *c = hc_do("POST", "/api/v1/retrieve_future", NULL, body);
  ASSERT_EQ_INT(c->status, 200);
  json_t *v = hc_json(c);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "type")), "try_again");
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "queue_state")), "paused_capacity");
  ASSERT_STR_CONTAINS(json_string_value(json_object_get(v, "queue_state_reason")), "busy");
  json_decref(v);
  hc_free(c);
  /* Both finish. */
  json_decref(result_json(ra, NULL));
  json_decref(result_json(rb, NULL));
  free(ra);
  free(rb);
  free(a);
  free(b);
  free(sid);
  stop_training();
}

/* Bodies over 64 KiB are decoded on the threadpool: the same answers as
 * small ones, errors included. */
TEST(large_bodies_decode_off_the_loop) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  char *small = fwd_body(mid, 1, "forward_input", "cross_entropy", "[1,2,3,4]", SFT_INPUTS);
  /* The same request with 100 KiB of white space in it. */
  size_t n = strlen(small), pad = 100 * 1024;
  char *large = xmalloc(n + pad + 1);
  memcpy(large, small, n - 1);
  memset(large + n - 1, ' ', pad);
  memcpy(large + n - 1 + pad, small + n - 1, 2);
  char *r1 = post_field("/api/v1/forward", NULL, small, "request_id");
  json_t *v1 = result_json(r1, NULL);
  large[strstr(large, "\"seq_id\":1") - large + 9] = '2';
  char *r2 = post_field("/api/v1/forward", NULL, large, "request_id");
  json_t *v2 = result_json(r2, NULL);
  free(r1);
  free(r2);
  ASSERT(metric_of(v1, "loss:sum") == metric_of(v2, "loss:sum"));
  json_decref(v1);
  json_decref(v2);
  /* A large body with a bad field: the same path error. */
  char *bad = fwd_body(mid, 3, "forward_input", "cross_entropy", "[1,2,3,4]",
                       "\"target_tokens\":{\"data\":[2,3,4],\"dtype\":\"int64\","
                       "\"shape\":[3]}");
  n = strlen(bad);
  char *bad_large = xmalloc(n + pad + 1);
  memcpy(bad_large, bad, n - 1);
  memset(bad_large + n - 1, ' ', pad);
  memcpy(bad_large + n - 1 + pad, bad + n - 1, 2);
  hc_expect("POST", "/api/v1/forward", NULL, bad_large, 400, "target_tokens");
  /* And a large body that is no JSON at all. */
  memset(bad_large, ' ', pad);
  bad_large[pad] = '{';
  bad_large[pad + 1] = '\0';
  hc_expect("POST", "/api/v1/forward", NULL, bad_large, 400, "invalid JSON");
  free(small);
  free(large);
  free(bad);
  free(bad_large);
  free(mid);
  free(sid);
  stop_training();
}

/* Work items that hold every thread of the threadpool until released, so
 * that a decode queued behind them waits for the test. */
#define N_BLOCKERS 1024  /* libuv's largest threadpool */
static uv_sem_t blockers_sem;
static int blockers_done;

static void blocker_work(uv_work_t *w) {
  (void)w;
  uv_sem_wait(&blockers_sem);
}

static void blocker_done(uv_work_t *w, int status) {
  (void)w;
  (void)status;
  blockers_done++;
}

/* A client that goes away while its large body waits to be decoded off
 * the loop: the refusal then only gives the request back (which ends it
 * at once), and the op made for the request is freed after that. */
TEST(client_gone_during_an_off_loop_decode) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  tb__training_t *tr = tb__training_find(srv);
  char *bad = fwd_body(mid, 1, "forward_input", "cross_entropy", "[1,2,3,4]",
                       "\"target_tokens\":{\"data\":[2,3,4],\"dtype\":\"int64\","
                       "\"shape\":[3]}");
  size_t n = strlen(bad), pad = 100 * 1024;
  char *large = xmalloc(n + pad + 1);
  memcpy(large, bad, n - 1);
  memset(large + n - 1, ' ', pad);
  memcpy(large + n - 1 + pad, bad + n - 1, 2);
  static uv_work_t blockers[N_BLOCKERS];
  ASSERT_OK(uv_sem_init(&blockers_sem, 0));
  blockers_done = 0;
  for (int i = 0; i < N_BLOCKERS; i++)
    ASSERT_OK(uv_queue_work(&loop, &blockers[i], blocker_work, blocker_done));
  int ops = tr->n_ops;
  hc_t *c = hc_send("POST", "/api/v1/forward", NULL, large);
  RUN_UNTIL(tr->n_fs == 1);  /* queued behind the blockers */
  ASSERT_EQ_INT(tr->n_ops, ops + 1);
  hc_close(c);
  RUN_UNTIL(srv->http.n_detached == 1);
  for (int i = 0; i < N_BLOCKERS; i++)
    uv_sem_post(&blockers_sem);
  RUN_UNTIL(tr->n_fs == 0 && blockers_done == N_BLOCKERS);
  ASSERT_EQ_INT(srv->http.n_detached, 0);
  ASSERT_EQ_INT(tr->n_ops, ops);
  uv_sem_destroy(&blockers_sem);
  hc_free(c);
  hc_t *m = hc_do("GET", "/metrics", NULL, NULL);
  ASSERT_STR_CONTAINS(m->body, "route=\"/api/v1/forward\",status=\"400\"} 1\n");
  hc_free(m);
  free(bad);
  free(large);
  free(mid);
  free(sid);
  stop_training();
}

TEST_LIST(
  TEST_ENTRY(large_bodies_decode_off_the_loop),
  TEST_ENTRY(client_gone_during_an_off_loop_decode),
  TEST_ENTRY(paused_capacity_while_the_engine_is_full),
  TEST_ENTRY(train_save_load_sample),
  TEST_ENTRY(seq_id_order),
  TEST_ENTRY(unload_while_creating),
  TEST_ENTRY(bad_input),
  TEST_ENTRY(models_belong_to_their_user),
  TEST_ENTRY(session_expiry_unloads_models),
  TEST_ENTRY(create_via_load_and_unnamed_sampler),
  TEST_ENTRY(close_with_work_in_flight),
  TEST_ENTRY(save_keeps_the_order),
  TEST_ENTRY(stop_strings),
  TEST_ENTRY(with_the_http_client),
  TEST_ENTRY(several_base_models),
)

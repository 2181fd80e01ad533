/*
 * The Tinkerbell dialect over loopback: the API guide's three programs
 * (sync training, async pipelined training, several users at once) with
 * save, load and sampling; implicit creation; what /retrieve_future
 * answers for these jobs (202, 200, 500, 404, 410, 400); the legacy
 * routes; and which dialect serves a path both have.  What the dialect
 * takes (bad input, datums, other base models, limits, restarts) is in
 * test_server_tinkerbell_data.c.
 */
#include "test_server_tinkerbell.h"

/* ------------------------------------------------------------ the guide */

/* Example 1: add_lora, then forward_backward and optim_step, all sync;
 * then save, load and sample. */
TEST(sync_training_save_load_sample) {
  start_training(NULL);
  json_t *v = post_ok("/api/v1/add_lora", NULL, "{\"base_model\":\"base\",\"rank\":16,\"alpha\":32}");
  char *mid = xstrdup(str_of(v, "model_id"));
  ASSERT(strncmp(mid, "base_lora_", 10) == 0);
  ASSERT_EQ_INT(strlen(mid), 26);
  ASSERT_EQ_INT((int)num_of(v, "rank"), 16);
  ASSERT_NEAR(num_of(v, "alpha"), 32, 0, 0);
  ASSERT_STR_EQ(str_of(v, "status"), "created");
  json_decref(v);

  /* "Hi there!" and its <|end|>: ten trained tokens. */
  char *fb = fb_body(mid, HELLO), *opt = optim_body(mid, 0.01);
  double first = 0, loss = 0;
  for (int step = 0; step < 5; step++) {
    v = post_ok("/api/v1/forward_backward", NULL, fb);
    loss = check_fb(v, mid, 10);
    ASSERT(json_object_get(v, "created") == NULL);
    json_decref(v);
    if (step == 0)
      first = loss;
    v = post_ok("/api/v1/optim_step", NULL, opt);
    ASSERT_STR_EQ(str_of(v, "model_id"), mid);
    ASSERT_EQ_INT((int)num_of(v, "step"), step + 1);
    ASSERT_NEAR(num_of(json_object_get(v, "metrics"), "learning_rate"), 0.01, 1e-7, 0);
    ASSERT_GT(num_of(json_object_get(v, "metrics"), "grad_norm"), 0);
    json_decref(v);
  }
  ASSERT_LT(loss, first);

  /* Save after five steps, train on, load: the weights of step five. */
  char body[512];
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"path\":\"step5\"}", mid);
  char *rid = submit("/api/v1/save_weights_async", NULL, body, mid);
  v = retrieve(rid, NULL);
  char want[128];
  snprintf(want, sizeof(want), "tinkerbell://%s/weights/step5", mid);
  ASSERT_STR_EQ(str_of(v, "path"), want);
  ASSERT_STR_EQ(str_of(v, "status"), "saved");
  json_decref(v);
  free(rid);
  v = post_ok("/api/v1/forward_backward", NULL, fb);
  double at5 = check_fb(v, mid, 10);
  json_decref(v);
  json_decref(post_ok("/api/v1/optim_step", NULL, opt));
  rid = submit("/api/v1/load_weights_async", NULL, body, mid);
  v = retrieve(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "status"), "loaded");
  ASSERT_STR_EQ(str_of(v, "path"), want);
  json_decref(v);
  free(rid);
  /* forward is an evaluation: the same loss, and a log-prob per target
   * (19 positions of the 20 rendered tokens). */
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"data\":%s}", mid, HELLO);
  v = post_ok("/api/v1/forward", NULL, body);
  ASSERT_NEAR(check_fb(v, mid, 10), at5, 1e-6, 1e-5);
  json_t *lp = json_object_get(v, "logprobs");
  ASSERT_EQ_INT(json_array_size(lp), 1);
  ASSERT_EQ_INT(json_array_size(json_array_get(lp, 0)), 19);
  json_decref(v);

  /* Sampling the trained model: tokens, log-probs and a stop reason per
   * sample. */
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}],"
           "\"max_tokens\":8,\"seed\":1,\"num_samples\":2}", mid);
  v = post_ok("/api/v1/sample", NULL, body);
  ASSERT_STR_EQ(str_of(v, "model_id"), mid);
  ASSERT_EQ_INT((int)num_of(v, "prompt_tokens"), 10);  /* bos user Hello! end assistant */
  json_t *ss = json_object_get(v, "samples");
  ASSERT_EQ_INT(json_array_size(ss), 2);
  for (size_t i = 0; i < 2; i++) {
    json_t *s = json_array_get(ss, i);
    size_t n = json_array_size(json_object_get(s, "tokens"));
    ASSERT_GT(n, 0);
    ASSERT_LE(n, 8);
    ASSERT_EQ_INT(json_array_size(json_object_get(s, "logprobs")), n);
    const char *why = str_of(s, "stop_reason");
    ASSERT(strcmp(why, "stop") == 0 || strcmp(why, "length") == 0);
    ASSERT(json_is_string(json_object_get(s, "text")));
  }
  ASSERT_STR_EQ(str_of(v, "generated_text"), str_of(json_array_get(ss, 0), "text"));
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "completions")), 2);
  json_decref(v);
  /* Greedy sampling of a text prompt is the same twice. */
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"prompt\":\"Hello!\",\"max_tokens\":6,\"temperature\":0}", mid);
  v = post_ok("/api/v1/sample", NULL, body);
  json_t *v2 = post_ok("/api/v1/sample", NULL, body);
  ASSERT(json_equal(json_object_get(json_array_get(json_object_get(v, "samples"), 0), "tokens"),
                    json_object_get(json_array_get(json_object_get(v2, "samples"), 0),
                                    "tokens")));
  ASSERT_EQ_INT((int)num_of(v, "prompt_tokens"), 10);
  json_decref(v);
  json_decref(v2);

  snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", mid);
  v = post_ok("/api/v1/remove_lora", NULL, body);
  ASSERT_STR_EQ(str_of(v, "status"), "deleted");
  json_decref(v);
  hc_expect("POST", "/api/v1/remove_lora", NULL, body, 404, "model_id: unknown model");
  hc_expect("POST", "/api/v1/forward_backward", NULL, "{\"model_id\":\"x\",\"data\":[]}", 400,
            "data: expected at least one");
  free(fb);
  free(opt);
  free(mid);
  stop_training();
}

/* Example 2: five forward_backward_async submitted at once, then each
 * result and an optim_step_async.  The five ran before the first step (one
 * model's operations keep their order), so they saw the same weights. */
TEST(async_pipelined_training) {
  start_training(NULL);
  json_t *v = post_ok("/api/v1/add_lora_async", NULL,
                      "{\"base_model\":\"base\",\"rank\":16,\"alpha\":32}");
  char *rid = xstrdup(str_of(v, "request_id"));
  char *mid = xstrdup(str_of(v, "model_id"));
  json_decref(v);
  v = retrieve(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "model_id"), mid);
  json_decref(v);
  free(rid);
  char *fb = fb_body(mid, HELLO), *opt = optim_body(mid, 0.01);
  char *rids[5];
  for (int i = 0; i < 5; i++)
    rids[i] = submit("/api/v1/forward_backward_async", NULL, fb, mid);
  double l0 = 0;
  for (int i = 0; i < 5; i++) {
    v = retrieve(rids[i], NULL);
    double l = check_fb(v, mid, 10);
    json_decref(v);
    if (i == 0)
      l0 = l;
    ASSERT_NEAR(l, l0, 1e-9, 1e-7);
    char *orid = submit("/api/v1/optim_step_async", NULL, opt, mid);
    v = retrieve(orid, NULL);
    ASSERT_EQ_INT((int)num_of(v, "step"), i + 1);
    json_decref(v);
    free(orid);
    free(rids[i]);
  }
  v = post_ok("/api/v1/forward_backward", NULL, fb);
  ASSERT_LT(check_fb(v, mid, 10), l0);
  json_decref(v);
  /* Save, load and sample, all async and pipelined: they run in order. */
  char body[512];
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"path\":\"a1\"}", mid);
  char *srid = submit("/api/v1/save_weights_async", NULL, body, mid);
  char *lrid = submit("/api/v1/load_weights_async", NULL, body, mid);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"prompt\":\"Hello!\",\"max_tokens\":4,\"seed\":9}", mid);
  char *arid = submit("/api/v1/asample", NULL, body, mid);
  v = retrieve(arid, NULL);
  ASSERT_STR_EQ(str_of(v, "model_id"), mid);
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "samples")), 1);
  json_decref(v);
  v = retrieve(srid, NULL);
  ASSERT_STR_EQ(str_of(v, "status"), "saved");
  json_decref(v);
  v = retrieve(lrid, NULL);
  ASSERT_STR_EQ(str_of(v, "status"), "loaded");
  json_decref(v);
  /* A result stays retrievable: polling again answers the same. */
  v = retrieve(lrid, NULL);
  ASSERT_STR_EQ(str_of(v, "status"), "loaded");
  json_decref(v);
  free(srid);
  free(lrid);
  free(arid);
  free(fb);
  free(opt);
  free(mid);
  stop_training();
}

/* Example 3: three users' adapters trained at once, interleaved; each
 * result is what the same training alone gives. */
TEST(concurrent_users) {
  char keys[] = "/tmp/tb-keys-XXXXXX";
  start_training_with_keys(keys, "k-alice alice\nk-bob bob\nk-carol carol\n");
  static const char *names[] = { "Alice", "Bob", "Carol" };
  static const char *auth[] = { "X-API-Key: k-alice\r\n", "X-API-Key: k-bob\r\n",
                                "X-API-Key: k-carol\r\n" };
  char *mids[3], *fbs[3], *opts[3];
  double loss[3][3];
  for (int u = 0; u < 3; u++) {
    char *rid = submit("/api/v1/add_lora_async", auth[u],
                       "{\"base_model\":\"base\",\"rank\":16,\"alpha\":32}", NULL);
    json_t *v = retrieve(rid, auth[u]);
    mids[u] = xstrdup(str_of(v, "model_id"));
    json_decref(v);
    free(rid);
    char data[256];
    snprintf(data, sizeof(data),
             "[[{\"role\":\"user\",\"content\":\"Hello %s!\"},{\"role\":\"assistant\","
             "\"content\":\"Hi %s!\"}]]", names[u], names[u]);
    fbs[u] = fb_body(mids[u], data);
    opts[u] = optim_body(mids[u], 0.01);
  }
  /* Another user's request ids and models are not there for them (a
   * forward: it leaves no gradient behind). */
  char *rid = submit("/api/v1/forward_async", auth[0], fbs[0], mids[0]);
  char body[256];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  hc_expect("POST", "/retrieve_future", auth[1], body, 404, "unknown request");
  json_decref(retrieve(rid, auth[0]));
  free(rid);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", mids[0]);
  hc_expect("POST", "/api/v1/remove_lora", auth[1], body, 404, "unknown model");
  json_t *v;

  for (int step = 0; step < 3; step++) {
    char *fr[3], *orr[3];
    for (int u = 0; u < 3; u++)
      fr[u] = submit("/api/v1/forward_backward_async", auth[u], fbs[u], mids[u]);
    for (int u = 0; u < 3; u++) {
      v = retrieve(fr[u], auth[u]);
      loss[u][step] = num_of(v, "loss");
      json_decref(v);
      orr[u] = submit("/api/v1/optim_step_async", auth[u], opts[u], mids[u]);
    }
    for (int u = 0; u < 3; u++) {
      json_decref(retrieve(orr[u], auth[u]));
      free(fr[u]);
      free(orr[u]);
    }
  }
  for (int u = 0; u < 3; u++)
    ASSERT_LT(loss[u][2], loss[u][0]);
  /* Each samples its own model; another user's is not there. */
  for (int u = 0; u < 3; u++) {
    snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"prompt\":\"Hello %s!\","
                                 "\"max_tokens\":4,\"seed\":1}", mids[u], names[u]);
    rid = submit("/api/v1/asample", auth[u], body, mids[u]);
    v = retrieve(rid, auth[u]);
    ASSERT_STR_EQ(str_of(v, "model_id"), mids[u]);
    json_decref(v);
    free(rid);
    hc_expect("POST", "/api/v1/asample", auth[(u + 1) % 3], body, 404, "unknown model");
  }
  /* Different data, different losses. */
  ASSERT(fabs(loss[0][0] - loss[1][0]) > 1e-6);

  /* Bob's training alone, on a fresh adapter of the same settings (and
   * seed), gives his losses again. */
  v = post_ok("/api/v1/add_lora", auth[1], "{\"rank\":16,\"alpha\":32}");
  char *again = xstrdup(str_of(v, "model_id"));
  json_decref(v);
  char *fb = fb_body(again, "[[{\"role\":\"user\",\"content\":\"Hello Bob!\"},{\"role\":"
                            "\"assistant\",\"content\":\"Hi Bob!\"}]]");
  char *opt = optim_body(again, 0.01);
  for (int step = 0; step < 3; step++) {
    v = post_ok("/api/v1/forward_backward", auth[1], fb);
    ASSERT_NEAR(num_of(v, "loss"), loss[1][step], 1e-6, 1e-5);
    json_decref(v);
    json_decref(post_ok("/api/v1/optim_step", auth[1], opt));
  }
  free(fb);
  free(opt);
  free(again);
  for (int u = 0; u < 3; u++) {
    free(mids[u]);
    free(fbs[u]);
    free(opts[u]);
  }
  stop_training();
  unlink(keys);
}

/* ------------------------------------------------------------ semantics */

/* The guide's curl test: a training call naming an unknown model creates
 * it, says so, and only for its own user; the Tinker dialect never sees
 * these models. */
TEST(implicit_creation) {
  char keys[] = "/tmp/tb-keys-XXXXXX";
  start_training_with_keys(keys, "k-alice alice\nk-bob bob\n");
  const char *alice = "X-API-Key: k-alice\r\n", *bob = "X-API-Key: k-bob\r\n";
  const char *body = "{\"model_id\":\"test\",\"data\":[[{\"role\":\"user\",\"content\":"
                     "\"test\"}]],\"loss_fn\":\"cross_entropy\"}";
  hc_expect("POST", "/api/v1/forward_backward_async", NULL, body, 401, "API key");
  hc_expect("POST", "/fwdbwd", "X-API-Key: nope\r\n", body, 401, "invalid API key");
  hc_expect("GET", "/", NULL, NULL, 200, "\"/api/v1/forward_backward_async\"");
  char *rid = submit("/api/v1/forward_backward_async", alice, body, "test");
  ASSERT(strncmp(rid, "req-", 4) == 0);
  json_t *v = retrieve(rid, alice);
  /* No assistant message: all six predictions of <|bos|> <|user|> test
   * <|end|> are trained. */
  check_fb(v, "test", 6);
  ASSERT(json_is_true(json_object_get(v, "created")));
  json_decref(v);
  free(rid);
  v = post_ok("/api/v1/forward_backward", alice, body);
  check_fb(v, "test", 6);
  ASSERT(json_object_get(v, "created") == NULL);
  json_decref(v);
  /* Bob's "test" is his own, new one. */
  v = post_ok("/api/v1/forward_backward", bob, body);
  ASSERT(json_is_true(json_object_get(v, "created")));
  json_decref(v);
  /* Implicit creation from optim_step too, and a load creates from the
   * checkpoint's shape. */
  v = post_ok("/api/v1/optim_step", alice, "{\"model_id\":\"fresh\"}");
  ASSERT(json_is_true(json_object_get(v, "created")));
  ASSERT_EQ_INT((int)num_of(v, "step"), 1);
  json_decref(v);
  json_decref(post_ok("/api/v1/optim_step", alice,
                      "{\"model_id\":\"test\",\"adam_params\":{\"learning_rate\":0.01}}"));
  rid = submit("/api/v1/save_weights_async", alice, "{\"model_id\":\"test\",\"path\":\"c1\"}",
               "test");
  json_decref(retrieve(rid, alice));
  free(rid);
  rid = submit("/api/v1/load_weights_async", alice,
               "{\"model_id\":\"copy\",\"path\":\"tinkerbell://test/weights/c1\"}", "copy");
  v = retrieve(rid, alice);
  ASSERT(json_is_true(json_object_get(v, "created")));
  ASSERT_STR_EQ(str_of(v, "status"), "loaded");
  json_decref(v);
  free(rid);
  /* The copy scores like the original, which training changed. */
  v = post_ok("/api/v1/forward", alice, body);
  double a = num_of(v, "loss");
  json_decref(v);
  v = post_ok("/api/v1/forward", bob, body);
  ASSERT(fabs(num_of(v, "loss") - a) > 1e-6);
  json_decref(v);
  char copy[256];
  snprintf(copy, sizeof(copy), "%s", body);
  memcpy(strstr(copy, "test"), "copy", 4);
  v = post_ok("/api/v1/forward", alice, copy);
  ASSERT_NEAR(num_of(v, "loss"), a, 1e-6, 1e-5);
  json_decref(v);
  /* Bob cannot load alice's checkpoint: his own namespace has none. */
  rid = submit("/api/v1/load_weights_async", bob,
               "{\"model_id\":\"test\",\"path\":\"tinkerbell://test/weights/c1\"}", "test");
  json_decref(retrieve_status(rid, bob, 500));
  free(rid);
  /* The Tinker dialect does not see these models. */
  char *tb = fwd_body("test", 1, "forward_backward_input", "cross_entropy", "[1,2,3,4]",
                      SFT_INPUTS);
  hc_expect("POST", "/api/v1/forward_backward", alice, tb, 404, "unknown model");
  free(tb);
  stop_training();
  unlink(keys);
}

/* 202 while pending, 200 with the result, 500 for a failed job, 404 for
 * an unknown id, 400 for a bad body. */
TEST(retrieve_future_answers) {
  tb_server_options_t o = { .max_models_per_user = 1 };
  start_training(&o);
  json_t *v = post_ok("/api/v1/add_lora", NULL, "{}");
  char *first = xstrdup(str_of(v, "model_id"));
  json_decref(v);
  /* The user is at the model limit: the implicit create of "second"
   * waits, and so does the call that caused it. */
  char *fb = fb_body("second", HELLO);
  char *rid = submit("/api/v1/forward_backward_async", NULL, fb, "second");
  char body[256];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  for (int i = 0; i < 3; i++) {
    hc_expect("POST", "/retrieve_future", NULL, body, 202, "{\"status\":\"pending\"}");
    wait_ms(20);
  }
  /* At most 64 calls wait for a model being created; then 429. */
  char *waiting[63];
  for (int i = 0; i < 63; i++)
    waiting[i] = submit("/api/v1/optim_step_async", NULL, "{\"model_id\":\"second\"}", "second");
  hc_t *c = hc_do("POST", "/api/v1/optim_step_async", NULL, "{\"model_id\":\"second\"}");
  ASSERT_EQ_INT(c->status, 429);
  ASSERT_STR_CONTAINS(c->head, "Retry-After: 1");
  ASSERT_STR_CONTAINS(c->body, "64 operations of this model wait");
  hc_free(c);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\"}", first);
  json_decref(post_ok("/api/v1/remove_lora", NULL, body));
  v = retrieve(rid, NULL);
  check_fb(v, "second", 10);
  ASSERT(json_is_true(json_object_get(v, "created")));
  json_decref(v);
  for (int i = 0; i < 63; i++) {
    v = retrieve(waiting[i], NULL);
    ASSERT_EQ_INT((int)num_of(v, "step"), i + 1);
    json_decref(v);
    free(waiting[i]);
  }
  /* Retrieved twice, the same answer. */
  json_t *again = retrieve(rid, NULL);
  ASSERT_NEAR(num_of(again, "loss"), num_of(again, "loss_sum") / 10, 1e-9, 1e-6);
  json_decref(again);
  free(rid);
  /* A job that fails: 500 with the guide's detail. */
  rid = submit("/api/v1/load_weights_async", NULL,
               "{\"model_id\":\"second\",\"path\":\"missing\"}", "second");
  v = retrieve_status(rid, NULL, 500);
  ASSERT(strncmp(str_of(v, "detail"), "Job failed: ", 12) == 0);
  ASSERT_STR_EQ(str_of(v, "category"), "user");
  json_decref(v);
  /* The Tinker poll of the same future: the failure, answered 200. */
  free(failure_of(rid, "user"));
  free(rid);
  /* A load that would create its model from a checkpoint that is not
   * there fails, and leaves no model behind (the user's one model slot
   * freed first). */
  json_decref(post_ok("/api/v1/remove_lora", NULL, "{\"model_id\":\"second\"}"));
  rid = submit("/api/v1/load_weights_async", NULL, "{\"model_id\":\"ghost\",\"path\":\"none\"}",
               "ghost");
  v = retrieve_status(rid, NULL, 500);
  ASSERT(strncmp(str_of(v, "detail"), "Job failed: path: ", 18) == 0);
  json_decref(v);
  free(rid);
  hc_expect("POST", "/api/v1/remove_lora", NULL, "{\"model_id\":\"ghost\"}", 404, NULL);
  hc_expect("POST", "/retrieve_future", NULL,
            "{\"request_id\":\"req-00000000000000000000000000000000\"}", 404, "unknown request");
  hc_expect("POST", "/retrieve_future", NULL, "{}", 400, "request_id: required");
  hc_expect("POST", "/retrieve_future", NULL, "{\"request_id\":7}", 400, "request_id: expected");
  hc_expect("POST", "/retrieve_future", NULL, "not json", 400, "invalid JSON");
  free(fb);
  free(first);
  stop_training();
}

/* An unretrieved result expires after the TTL: 410. */
TEST(retrieve_future_expired) {
  tb_server_options_t o = { .result_ttl_ms = 50 };
  start_training(&o);
  char *fb = fb_body("m", HELLO);
  char *rid = submit("/api/v1/forward_backward_async", NULL, fb, "m");
  tb_slice_t id = { rid, strlen(rid) };
  tb__future_t *f = NULL;
  RUN_UNTIL(tb__futures_find(&srv->futures, srv->auth.local, id, &f) == TB__LOOKUP_FOUND &&
            f->state != TB__FUTURE_PENDING);
  wait_ms(200);
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  hc_expect("POST", "/retrieve_future", NULL, body, 410, "expired");
  free(rid);
  free(fb);
  stop_training();
}

/* The guide's legacy routes are the async variants. */
TEST(legacy_routes) {
  start_training(NULL);
  char *rid = submit("/add_lora", NULL, "{\"model_id\":\"legacy\",\"rank\":8}", "legacy");
  json_t *v = retrieve(rid, NULL);
  ASSERT_EQ_INT((int)num_of(v, "rank"), 8);
  json_decref(v);
  free(rid);
  char *fb = fb_body("legacy", HELLO);
  rid = submit("/fwdbwd", NULL, fb, "legacy");
  v = retrieve(rid, NULL);
  double l = check_fb(v, "legacy", 10);
  json_decref(v);
  free(rid);
  rid = submit("/fwd", NULL, fb, "legacy");
  v = retrieve(rid, NULL);
  ASSERT_NEAR(check_fb(v, "legacy", 10), l, 1e-6, 1e-5);
  ASSERT(json_is_array(json_object_get(v, "logprobs")));
  json_decref(v);
  free(rid);
  rid = submit("/optim_step", NULL, "{\"model_id\":\"legacy\"}", "legacy");
  v = retrieve(rid, NULL);
  ASSERT_EQ_INT((int)num_of(v, "step"), 1);
  json_decref(v);
  free(rid);
  rid = submit("/save_weights", NULL, "{\"model_id\":\"legacy\",\"path\":\"l1\"}", "legacy");
  v = retrieve(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "path"), "tinkerbell://legacy/weights/l1");
  json_decref(v);
  free(rid);
  rid = submit("/save_weights_for_sampler", NULL, "{\"model_id\":\"legacy\",\"path\":\"s1\"}",
               "legacy");
  v = retrieve(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "path"), "tinkerbell://legacy/sampler_weights/s1");
  json_decref(v);
  free(rid);
  rid = submit("/load_weights", NULL, "{\"model_id\":\"legacy\",\"path\":\"l1\"}", "legacy");
  v = retrieve(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "status"), "loaded");
  json_decref(v);
  free(rid);
  /* Saving the same name again needs overwrite. */
  rid = submit("/save_weights", NULL, "{\"model_id\":\"legacy\",\"path\":\"l1\"}", "legacy");
  v = retrieve_status(rid, NULL, 500);
  ASSERT_STR_CONTAINS(str_of(v, "error"), "overwrite");
  json_decref(v);
  free(rid);
  rid = submit("/save_weights", NULL,
               "{\"model_id\":\"legacy\",\"path\":\"l1\",\"overwrite\":true}", "legacy");
  json_decref(retrieve(rid, NULL));
  free(rid);
  rid = submit("/remove_lora", NULL, "{\"model_id\":\"legacy\"}", "legacy");
  v = retrieve(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "status"), "deleted");
  json_decref(v);
  free(rid);
  free(fb);
  stop_training();
}

static const char *dialect_in_index(json_t *idx, const char *path) {
  json_t *eps = json_object_get(idx, "endpoints");
  for (size_t i = 0; i < json_array_size(eps); i++) {
    json_t *e = json_array_get(eps, i);
    if (strcmp(str_of(e, "path"), path) == 0)
      return str_of(e, "dialect");
  }
  return NULL;
}

/* On a path both dialects serve, the body decides. */
TEST(dispatch_on_shared_paths) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  /* Tinker JSON (type, seq_id, forward_backward_input): a future. */
  char *rid = submit_fwdbwd(mid, 1, NULL);
  json_t *v = result_json(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "loss_fn_output_type"), "ArrayRecord");
  ASSERT_GT(metric_of(v, "loss:sum"), 0);
  json_decref(v);
  free(rid);
  /* Protobuf: a future too. */
  size_t plen;
  uint8_t *pb = proto_body(mid, 2, &plen);
  hc_t *c = hc_do_raw("/api/v1/forward_backward", "Content-Type: application/x-protobuf\r\n",
                      pb, plen);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_CONTAINS(c->body, "\"request_id\"");
  hc_free(c);
  free(pb);
  /* Only seq_id marks it Tinker: the Tinker route answers. */
  char body[512];
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"seq_id\":3}", mid);
  v = post_ok("/api/v1/optim_step", NULL, body);
  ASSERT(json_object_get(v, "request_id") != NULL);
  json_decref(v);
  /* A Tinkerbell body: answered with the result itself. */
  char *fb = fb_body("tb1", HELLO);
  v = post_ok("/api/v1/forward_backward", NULL, fb);
  check_fb(v, "tb1", 10);
  json_decref(v);
  v = post_ok("/api/v1/optim_step", NULL, "{\"model_id\":\"tb1\"}");
  ASSERT_EQ_INT((int)num_of(v, "step"), 1);
  json_decref(v);
  /* asample: Tinkerbell without "type", the base model by default. */
  rid = submit("/api/v1/asample", NULL, "{\"prompt\":\"hi\",\"max_tokens\":3,\"seed\":2}",
               "base");
  v = retrieve(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "model_id"), "base");
  ASSERT_LE(json_array_size(json_object_get(json_array_get(json_object_get(v, "samples"), 0),
                                            "tokens")),
            3);
  json_decref(v);
  free(rid);
  rid = post_field("/api/v1/asample", NULL,
                   "{\"base_model\":\"base\",\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\","
                   "\"tokens\":[1,2]}]},\"sampling_params\":{\"max_tokens\":2},"
                   "\"num_samples\":1,\"type\":\"sample\"}",
                   "request_id");
  v = result_json(rid, NULL);
  ASSERT(json_is_array(json_object_get(v, "sequences")));
  json_decref(v);
  free(rid);
  /* The Python server's direct routes. */
  v = post_ok("/get_info", NULL, "{\"model_id\":\"tb1\"}");
  ASSERT_EQ_INT((int)num_of(v, "lora_rank"), 16);
  ASSERT_STR_EQ(str_of(json_object_get(v, "model_data"), "model_name"), "base");
  json_decref(v);
  c = hc_do("GET", "/list_loss_functions", NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_CONTAINS(c->body, "\"cross_entropy\",\"importance_sampling\",\"ppo\"");
  hc_free(c);
  /* The Python server's vLLM form of a sample: prompts and nested
   * sampling_params are no Tinker markers. */
  rid = submit("/api/v1/asample", NULL,
               "{\"model_id\":\"tb1\",\"prompts\":[\"hi\"],\"sampling_params\":{\"n\":2,"
               "\"max_tokens\":3,\"seed\":4,\"temperature\":0.7}}", "tb1");
  v = retrieve(rid, NULL);
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "samples")), 2);
  ASSERT_LE(json_array_size(json_object_get(json_array_get(json_object_get(v, "samples"), 1),
                                            "tokens")),
            3);
  json_decref(v);
  free(rid);
  /* The weights routes of both. */
  rid = submit("/api/v1/save_weights", NULL, "{\"model_id\":\"tb1\",\"path\":\"w\"}", "tb1");
  v = retrieve(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "path"), "tinkerbell://tb1/weights/w");
  json_decref(v);
  free(rid);
  rid = submit("/api/v1/load_weights", NULL, "{\"model_id\":\"tb1\",\"path\":\"w\"}", "tb1");
  json_decref(retrieve(rid, NULL));
  free(rid);
  /* forward_backward_input alone marks it Tinker too. */
  char *tfb = fwd_body_n(mid, 4, "[1,2,3,4]", SFT_INPUTS);
  char *seqless = strstr(tfb, "\"seq_id\":4,");
  memmove(seqless, seqless + 11, strlen(seqless + 11) + 1);
  await_done("/api/v1/forward_backward", tfb);
  free(tfb);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"path\":\"w\",\"seq_id\":5,"
                               "\"type\":\"save_weights\"}", mid);
  rid = post_field("/api/v1/save_weights", NULL, body, "request_id");
  v = result_json(rid, NULL);
  ASSERT_STR_EQ(str_of(v, "type"), "save_weights");
  json_decref(v);
  free(rid);
  /* Only top-level keys count: a "type" inside the data, quotes and
   * brackets inside strings, spacing and newlines do not make it Tinker. */
  v = post_ok("/api/v1/forward_backward", NULL,
              " {\n \"model_id\" : \"tb1\" ,\"data\":[[{\"role\":\"user\",\"content\":"
              "\"say \\\"type\\\": {[1]}\\\\\"},{\"role\":\"assistant\",\"content\":\"ok ]}\"}]],"
              "\"x\":[{\"type\":1,\"seq_id\":[2]}],\"n\":null , \"t\":true}\n");
  ASSERT_STR_EQ(str_of(v, "model_id"), "tb1");
  ASSERT(json_object_get(v, "loss") != NULL);
  json_decref(v);
  /* A top-level "type" after nested ones does. */
  snprintf(body, sizeof(body),
           "{ \"model_id\" : \"%s\", \"adam_params\": {\"learning_rate\": 0.01, \"x\": "
           "[\"}\"]}, \"seq_id\" : 6 }", mid);
  v = post_ok("/api/v1/optim_step", NULL, body);
  ASSERT(json_object_get(v, "request_id") != NULL);
  json_decref(v);
  /* A body that is no JSON object is the Tinker route's to refuse. */
  hc_expect("POST", "/api/v1/forward_backward", NULL, "[1,2]", 400, "\"category\":\"user\"");
  /* The index tells which dialect serves what. */
  c = hc_do("GET", "/", NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  v = answer_json(c);
  hc_free(c);
  ASSERT_STR_EQ(dialect_in_index(v, "/api/v1/forward_backward"), "tinker+tinkerbell");
  ASSERT_STR_EQ(dialect_in_index(v, "/api/v1/asample"), "tinker+tinkerbell");
  ASSERT_STR_EQ(dialect_in_index(v, "/api/v1/forward_backward_async"), "tinkerbell");
  ASSERT_STR_EQ(dialect_in_index(v, "/fwdbwd"), "tinkerbell");
  ASSERT_STR_EQ(dialect_in_index(v, "/api/v1/save_weights_for_sampler_async"), "tinkerbell");
  ASSERT_STR_EQ(dialect_in_index(v, "/api/v1/create_model"), "tinker");
  json_decref(v);
  free(fb);
  free(mid);
  free(sid);
  stop_training();
}

TEST_LIST(
  TEST_ENTRY(sync_training_save_load_sample),
  TEST_ENTRY(async_pipelined_training),
  TEST_ENTRY(concurrent_users),
  TEST_ENTRY(implicit_creation),
  TEST_ENTRY(retrieve_future_answers),
  TEST_ENTRY(retrieve_future_expired),
  TEST_ENTRY(legacy_routes),
  TEST_ENTRY(dispatch_on_shared_paths),
)

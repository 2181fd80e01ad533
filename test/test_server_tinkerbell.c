/*
 * The Tinkerbell dialect over loopback: the API guide's three programs
 * (sync training, async pipelined training, several users at once) with
 * save, load and sampling; implicit creation; what /retrieve_future
 * answers for these jobs (202, 200, 500, 404, 410, 400); the legacy
 * routes; which dialect serves a path both have; and bad input of every
 * kind answered with a field path.
 */
#include "test_server_training.h"
#include "fixtures.h"

#include "engine/hf_model.h"
#include "kernels/kernels.h"

#define HELLO                                                                   \
  "[[{\"role\":\"user\",\"content\":\"Hello!\"},{\"role\":\"assistant\",\"content\":" \
  "\"Hi there!\"}]]"

/* The JSON of an answer.  Sampled text may hold a NUL byte (the untrained
 * model writes any byte), which JSON carries as \u0000. */
static json_t *answer_json(const hc_t *c) {
  json_error_t e;
  json_t *v = json_loadb(c->body, c->body_len, JSON_ALLOW_NUL, &e);
  if (v == NULL)
    fprintf(stderr, "not JSON (%s): %s\n", e.text, c->body);
  ASSERT(v != NULL);
  return v;
}

/* POSTs body, expects status, returns the JSON answer. */
static json_t *post_json(const char *path, const char *extra, const char *body, int status) {
  hc_t *c = hc_do("POST", path, extra, body);
  if (c->status != status)
    fprintf(stderr, "%s %s -> %d %s\n", path, body, c->status, c->body);
  ASSERT_EQ_INT(c->status, status);
  json_t *v = answer_json(c);
  hc_free(c);
  return v;
}

static json_t *post_ok(const char *path, const char *extra, const char *body) {
  return post_json(path, extra, body, 200);
}

static const char *str_of(json_t *v, const char *key) {
  const char *s = json_string_value(json_object_get(v, key));
  if (s == NULL)
    fprintf(stderr, "no string %s in %s\n", key, json_dumps(v, 0));
  ASSERT(s != NULL);
  return s;
}

static double num_of(json_t *v, const char *key) {
  json_t *n = json_object_get(v, key);
  if (!json_is_number(n))
    fprintf(stderr, "no number %s in %s\n", key, json_dumps(v, 0));
  ASSERT(json_is_number(n));
  return json_number_value(n);
}

/* An async call: {"request_id", "model_id"} at once; the request id. */
static char *submit(const char *path, const char *extra, const char *body,
                    const char *want_model) {
  json_t *v = post_ok(path, extra, body);
  char *rid = xstrdup(str_of(v, "request_id"));
  if (want_model != NULL)
    ASSERT_STR_EQ(str_of(v, "model_id"), want_model);
  ASSERT_EQ_INT(json_object_size(v), 2);
  json_decref(v);
  return rid;
}

/* Polls POST /retrieve_future until the job finished; expects status. */
static json_t *retrieve_status(const char *rid, const char *extra, int status) {
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  for (;;) {
    hc_t *c = hc_do("POST", "/retrieve_future", extra, body);
    if (c->status == 202) {
      ASSERT_STR_EQ(c->body, "{\"status\":\"pending\"}");
      hc_free(c);
      wait_ms(5);
      continue;
    }
    if (c->status != status)
      fprintf(stderr, "retrieve %s -> %d %s\n", rid, c->status, c->body);
    ASSERT_EQ_INT(c->status, status);
    json_t *v = answer_json(c);
    hc_free(c);
    return v;
  }
}

static json_t *retrieve(const char *rid, const char *extra) {
  return retrieve_status(rid, extra, 200);
}

static char *fb_body(const char *mid, const char *data) {
  char *b = xmalloc(strlen(data) + 256);
  sprintf(b, "{\"model_id\":\"%s\",\"data\":%s,\"loss_fn\":\"cross_entropy\"}", mid, data);
  return b;
}

static char *optim_body(const char *mid, double lr) {
  char *b = xmalloc(256);
  sprintf(b, "{\"model_id\":\"%s\",\"adam_params\":{\"learning_rate\":%g}}", mid, lr);
  return b;
}

/* The checks every forward_backward result passes; returns its loss. */
static double check_fb(json_t *v, const char *mid, double num_tokens) {
  ASSERT_STR_EQ(str_of(v, "model_id"), mid);
  ASSERT_STR_EQ(str_of(v, "backend"), "tinkerbell-cpu");
  ASSERT_STR_EQ(str_of(v, "loss_fn"), "cross_entropy");
  ASSERT_EQ_INT((int)num_of(v, "num_samples"), 1);
  ASSERT_NEAR(num_of(v, "num_tokens"), num_tokens, 0, 0);
  ASSERT_NEAR(num_of(v, "total_weight"), num_tokens, 0, 0);
  double loss = num_of(v, "loss");
  ASSERT_GT(loss, 0);
  /* The mean cross-entropy per trained token. */
  ASSERT_NEAR(loss, num_of(v, "loss_sum") / num_tokens, 1e-9, 1e-6);
  ASSERT(json_is_object(json_object_get(v, "metrics")));
  return loss;
}

/* ------------------------------------------------------------ the guide */

/* Example 1: add_lora, then forward_backward and optim_step, all sync;
 * then save, load and sample. */
TEST(sync_training_save_load_sample) {
  tb_server_options_t o = { 0 };
  start_training(&o);
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
  tb_server_options_t o = { 0 };
  start_training(&o);
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
  tb_test_temp_file(keys, "k-alice alice\nk-bob bob\nk-carol carol\n");
  tb_server_options_t o = { .api_keys_file = keys };
  start_training(&o);
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
  tb_test_temp_file(keys, "k-alice alice\nk-bob bob\n");
  tb_server_options_t o = { .api_keys_file = keys };
  start_training(&o);
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
  tb_server_options_t o = { 0 };
  start_training(&o);
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
  rid = post_field("/api/v1/forward_backward", NULL, tfb, "request_id");
  json_decref(result_json(rid, NULL));
  free(rid);
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

/* Bad input: 400 (or 404, 409, 422) with the field's path, category user,
 * and nothing created. */
TEST(bad_input) {
  tb_server_options_t o = { 0 };
  start_training(&o);
  json_decref(post_ok("/api/v1/add_lora", NULL, "{\"model_id\":\"m\"}"));
  char long_text[4096 + 64];
  memset(long_text, 'a', 4096);
  long_text[4096] = '\0';
  char *too_long = xmalloc(8192);
  snprintf(too_long, 8192,
           "{\"model_id\":\"m\",\"data\":[[{\"role\":\"user\",\"content\":\"%s\"}]]}", long_text);
  static const struct {
    const char *path, *body;
    int status;
    const char *want;
  } cases[] = {
    { "/api/v1/forward_backward", "{\"data\":[[]]}", 400, "model_id: required" },
    { "/api/v1/forward_backward", "{\"model_id\":7,\"data\":[]}", 400, "model_id: expected a string" },
    { "/api/v1/forward_backward_async", "{\"model_id\":\"../x\",\"data\":" HELLO "}", 400, "model_id: expected 1 to 128" },
    { "/api/v1/forward_backward_async", "{\"model_id\":\"a:b\",\"data\":" HELLO "}", 400, "model_id: expected" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\"}", 400, "data: required" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":{}}", 400, "data: expected an array" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[[]]}", 400, "data[0]: expected at least one message" },
    { "/api/v1/forward_backward", "{\"model_id\":\"fresh\",\"data\":[[{\"role\":\"bot\",\"content\":\"x\"}]]}", 400, "data[0][0].role: expected system, user or assistant" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[[{\"role\":\"user\"}]]}", 400, "data[0][0].content: required" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[[{\"role\":\"user\",\"content\":\"x\"}],7]}", 400, "data[1]: expected a conversation" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[[\"hi\"]]}", 400, "data[0][0]: expected an object" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":" HELLO ",\"loss_fn\":\"ppo\"}", 400, "loss_fn: chat conversations train with cross_entropy" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":" HELLO ",\"loss_fn_inputs\":{}}", 400, "loss_fn_inputs: not read at the top level" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},\"loss_fn_inputs\":{}}]}", 400, "data[0].loss_fn_inputs.target_tokens: missing" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},\"loss_fn_inputs\":{\"target_tokens\":[2,999]}}]}", 400, "data: " },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},\"loss_fn_inputs\":{\"target_tokens\":[2,3]}}],\"loss_fn\":\"nope\"}", 400, "loss_fn: unknown loss function" },
    { "/api/v1/optim_step", "{\"model_id\":\"m\",\"adam_params\":{\"lr\":0.1}}", 400, "adam_params.lr: unknown Adam parameter" },
    { "/api/v1/optim_step", "{\"model_id\":\"m\",\"adam_params\":{\"learning_rate\":-1}}", 400,
      "adam_params.learning_rate: must be a finite number in [0, 1]" },
    { "/api/v1/optim_step", "{\"model_id\":\"m\",\"adam_params\":{\"learning_rate\":\"x\"}}", 400, "adam_params.learning_rate: expected a number" },
    { "/api/v1/add_lora", "{\"rank\":0}", 400, "rank: " },
    { "/api/v1/add_lora", "{\"alpha\":-1}", 400, "alpha: expected a number > 0" },
    { "/api/v1/add_lora", "{\"base_model\":\"llama-3-8b\"}", 400, "base_model: unknown model" },
    { "/api/v1/add_lora_async", "{\"model_id\":\"m\"}", 409, "model_id: m exists" },
    { "/api/v1/add_lora", "{\"model_id\":\"/etc\"}", 400, "model_id: expected" },
    { "/api/v1/remove_lora", "{\"model_id\":\"nope\"}", 404, "model_id: unknown model nope" },
    { "/api/v1/remove_lora_async", "{}", 400, "model_id: required" },
    { "/api/v1/save_weights_async", "{\"model_id\":\"nope\"}", 404, "model_id: unknown model" },
    { "/api/v1/save_weights_async", "{\"model_id\":\"m\",\"path\":\"../x\"}", 400, "path: expected" },
    { "/api/v1/load_weights_async", "{\"model_id\":\"m\"}", 400, "path: required" },
    { "/api/v1/load_weights_async", "{\"model_id\":\"m\",\"path\":\"tinkerbell://m/other/x\"}", 400, "path: expected a checkpoint name" },
    { "/api/v1/load_weights_async", "{\"model_id\":\"m\",\"path\":\"tinkerbell://../weights/x\"}", 400, "path: expected" },
    { "/api/v1/sample", "{\"model_id\":\"m\"}", 400, "prompt: required" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"messages\":[]}", 400, "prompt: give one of" },
    { "/api/v1/sample", "{\"prompt\":7}", 400, "prompt: expected a string" },
    { "/api/v1/sample", "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content: required" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"temperature\":-1}", 400, "temperature: expected >= 0" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"top_p\":0}", 400, "top_p: expected a number in (0, 1]" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"top_k\":0}", 400, "top_k: expected -1" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"num_samples\":0}", 400, "num_samples: " },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"max_tokens\":0}", 400, "max_tokens: " },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"stop\":[\"\"]}", 400, "stop[0]: an empty stop string" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"stop\":{}}", 400, "stop: expected a string or a list" },
    { "/api/v1/sample", "{\"prompt_tokens\":[1,272]}", 400, "prompt_tokens[1]: " },
    { "/api/v1/sample", "{\"model_id\":\"nope\",\"prompt\":\"a\"}", 404, "model_id: unknown model" },
    { "/api/v1/sample", "{\"base_model\":\"nope\",\"prompt\":\"a\"}", 400, "base_model: unknown model" },
    { "/api/v1/asample", "{\"prompt\":\"a\",\"raw\":1}", 400, "raw: expected a boolean" },
    { "/api/v1/asample", "{\"prompts\":[\"a\",\"b\"]}", 400, "prompts: expected a list of one prompt" },
    { "/api/v1/asample", "{\"prompts\":[7]}", 400, "prompts[0]: expected a string" },
    { "/api/v1/asample", "{\"prompts\":[\"a\"],\"prompt\":\"b\"}", 400, "prompt: give one of" },
    { "/api/v1/asample", "{\"prompts\":[\"a\"],\"sampling_params\":{\"n\":0}}", 400, "sampling_params.n: " },
    { "/api/v1/asample", "{\"prompts\":[\"a\"],\"sampling_params\":{\"max_tokens\":\"x\"}}", 400, "sampling_params.max_tokens: expected an integer" },
    { "/api/v1/asample", "{\"prompts\":[\"a\"],\"sampling_params\":7}", 400, "sampling_params: expected an object" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"num_samples\":129}", 400, "num_samples: " },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"seed\":-1}", 400, "seed: " },
    { "/api/v1/sample", "{\"prompt_tokens\":[]}", 400, "prompt_tokens: expected a non-empty list" },
    { "/api/v1/sample", "{\"prompt_tokens\":[1.5]}", 400, "prompt_tokens[0]: expected an integer" },
    { "/api/v1/sample", "{\"messages\":{}}", 400, "messages: expected a non-empty list" },
    { "/api/v1/sample", "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"raw\":true}", 400, "raw: only with a text prompt" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"stop\":[1,\"x\",{}]}", 400, "stop[2]: expected an integer" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"temperature\":\"hot\"}", 400, "temperature: expected a number" },
    { "/api/v1/add_lora", "{\"rank\":5000}", 400, "rank: " },
    { "/api/v1/add_lora", "{\"train_mlp\":\"yes\"}", 400, "train_mlp: expected a boolean" },
    { "/api/v1/add_lora", "{\"seed\":-3}", 400, "seed: " },
    { "/api/v1/load_weights_async", "{\"model_id\":\"m\",\"path\":\"x\",\"optimizer\":\"yes\"}", 400, "optimizer: expected a boolean" },
    { "/api/v1/save_weights_async", "{\"model_id\":\"m\",\"overwrite\":1}", 400, "overwrite: expected a boolean" },
    { "/api/v1/save_weights_for_sampler_async", "{\"model_id\":\"m\",\"path\":\"\"}", 400, "path: expected 1 to 128" },
    { "/api/v1/optim_step", "{\"model_id\":\"m\",\"adam_params\":[]}", 400, "adam_params: expected an object" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":" HELLO ",\"loss_fn\":7}", 400, "loss_fn: expected a string" },
    { "/api/v1/forward_async", "not json", 400, "invalid JSON" },
    { "/fwdbwd", "[1]", 400, "body: expected an object" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    hc_t *c = hc_do("POST", cases[i].path, NULL, cases[i].body);
    if (c->status != cases[i].status || strstr(c->body, cases[i].want) == NULL ||
        strstr(c->body, "\"category\":\"user\"") == NULL)
      fprintf(stderr, "case %zu: %s %s -> %d %s\n", i, cases[i].path, cases[i].body, c->status,
              c->body);
    ASSERT_EQ_INT(c->status, cases[i].status);
    ASSERT_STR_CONTAINS(c->body, cases[i].want);
    ASSERT_STR_CONTAINS(c->body, "\"category\":\"user\"");
    hc_free(c);
  }
  /* Too long for the context of base: 422. */
  hc_expect("POST", "/api/v1/forward_backward", NULL, too_long, 422, "more than the context");
  /* A prompt and max_tokens beyond the context of base (2048); without
   * max_tokens, the default shrinks to what is left. */
  snprintf(too_long, 8192, "{\"prompt\":\"%.2000s\",\"max_tokens\":100}", long_text);
  hc_expect("POST", "/api/v1/sample", NULL, too_long, 422,
            "max_tokens: the prompt's 2004 tokens and 100 more exceed the context of 2048");
  snprintf(too_long, 8192, "{\"prompt\":\"%.2000s\",\"raw\":true,\"stop\":[]}", long_text);
  json_t *v = post_ok("/api/v1/sample", NULL, too_long);
  ASSERT_EQ_INT((int)num_of(v, "prompt_tokens"), 2001);
  ASSERT_LE(json_array_size(json_object_get(json_array_get(json_object_get(v, "samples"), 0),
                                            "tokens")),
            47);
  json_decref(v);
  hc_expect("POST", "/get_info", NULL, "{\"model_id\":\"nope\"}", 404, "model_id: unknown model");
  hc_expect("POST", "/get_info", NULL, "{}", 400, "model_id: required");
  /* Nothing was created by the refused calls. */
  hc_expect("POST", "/api/v1/remove_lora", NULL, "{\"model_id\":\"fresh\"}", 404, NULL);
  free(too_long);
  stop_training();
}

/* Tinker datums as data, with their own weights and losses; several
 * conversations with a system message. */
TEST(datums_and_conversations) {
  tb_server_options_t o = { 0 };
  start_training(&o);
  /* Cross-entropy over weights 1, 1, 0, 2: the mean divides by 4. */
  const char *ce = "{\"model_id\":\"d\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
                   "\"encoded_text\",\"tokens\":[1,2,3,4]}]},\"loss_fn_inputs\":{"
                   "\"target_tokens\":[2,3,4,5],\"weights\":[1,1,0,2]}}]}";
  json_t *v = post_ok("/api/v1/forward_backward", NULL, ce);
  ASSERT(json_is_true(json_object_get(v, "created")));
  ASSERT_NEAR(num_of(v, "num_tokens"), 3, 0, 0);
  ASSERT_NEAR(num_of(v, "total_weight"), 4, 0, 0);
  double sum = num_of(v, "loss_sum");
  ASSERT_NEAR(num_of(v, "loss"), sum / 4, 1e-9, 1e-6);
  json_decref(v);
  /* forward gives the log-probs the sum is made of. */
  v = post_ok("/api/v1/forward", NULL, ce);
  json_t *lp = json_array_get(json_object_get(v, "logprobs"), 0);
  ASSERT_EQ_INT(json_array_size(lp), 4);
  double want = 0;
  static const double w[] = { 1, 1, 0, 2 };
  for (size_t i = 0; i < 4; i++)
    want -= w[i] * json_number_value(json_array_get(lp, i));
  ASSERT_NEAR(sum, want, 1e-5, 1e-5);
  json_decref(v);
  /* A policy loss with its inputs. */
  v = post_ok("/api/v1/forward_backward", NULL,
              "{\"model_id\":\"d\",\"loss_fn\":\"importance_sampling\",\"data\":[{"
              "\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3]}]},"
              "\"loss_fn_inputs\":{\"target_tokens\":[2,3,4],\"logprobs\":[-1,-1,-1],"
              "\"advantages\":[1,0.5,-1]}}]}");
  ASSERT_STR_EQ(str_of(v, "loss_fn"), "importance_sampling");
  ASSERT_NEAR(num_of(v, "num_tokens"), 3, 0, 0);
  json_decref(v);
  /* Two conversations, one with a system message: the mean is over both
   * assistants' tokens ("4" + <|end|>, "ok" + <|end|>). */
  v = post_ok("/api/v1/forward_backward", NULL,
              "{\"model_id\":\"d\",\"data\":[[{\"role\":\"system\",\"content\":\"Be brief.\"},"
              "{\"role\":\"user\",\"content\":\"2+2?\"},{\"role\":\"assistant\",\"content\":"
              "\"4\"}],[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\","
              "\"content\":\"ok\"}]]}");
  ASSERT_EQ_INT((int)num_of(v, "num_samples"), 2);
  ASSERT_NEAR(num_of(v, "num_tokens"), 5, 0, 0);
  json_decref(v);
  /* Sampling by token ids, raw text and stop strings. */
  v = post_ok("/api/v1/sample", NULL,
              "{\"prompt_tokens\":[256,104,105],\"max_tokens\":4,\"seed\":3,\"stop\":[261]}");
  ASSERT_STR_EQ(str_of(v, "model_id"), "base");
  ASSERT_EQ_INT((int)num_of(v, "prompt_tokens"), 3);
  json_decref(v);
  v = post_ok("/api/v1/sample", NULL, "{\"prompt\":\"ab\",\"raw\":true,\"max_tokens\":2,\"seed\":5}");
  ASSERT_EQ_INT((int)num_of(v, "prompt_tokens"), 3);
  json_decref(v);
  /* Greedy raw text, then stopped at its first byte by a stop token and
   * by a stop string (the base model is the same everywhere, so is this). */
  v = post_ok("/api/v1/sample", NULL,
              "{\"prompt\":\"hi\",\"raw\":true,\"temperature\":0,\"max_tokens\":16}");
  json_t *toks = json_object_get(json_array_get(json_object_get(v, "samples"), 0), "tokens");
  size_t k = 0;
  while (k < json_array_size(toks) && json_integer_value(json_array_get(toks, k)) >= 128)
    k++;
  ASSERT_LT(k, json_array_size(toks));
  int byte = (int)json_integer_value(json_array_get(toks, k));
  json_decref(v);
  char body[256];
  snprintf(body, sizeof(body),
           "{\"prompt\":\"hi\",\"raw\":true,\"temperature\":0,\"max_tokens\":16,"
           "\"stop\":[%d]}", byte);
  v = post_ok("/api/v1/sample", NULL, body);
  json_t *s0 = json_array_get(json_object_get(v, "samples"), 0);
  ASSERT_STR_EQ(str_of(s0, "stop_reason"), "stop");
  ASSERT_EQ_INT(json_array_size(json_object_get(s0, "tokens")), k + 1);
  json_decref(v);
  snprintf(body, sizeof(body),
           "{\"prompt\":\"hi\",\"raw\":true,\"temperature\":0,\"max_tokens\":16,"
           "\"stop\":[\"\\u%04x\"]}", (unsigned)byte);
  v = post_ok("/api/v1/sample", NULL, body);
  s0 = json_array_get(json_object_get(v, "samples"), 0);
  ASSERT_STR_EQ(str_of(s0, "stop_reason"), "stop");
  ASSERT_EQ_INT(json_array_size(json_object_get(s0, "tokens")), k + 1);
  json_decref(v);
  stop_training();
}

/* A sync call waits on the loop; its client may leave meanwhile, and a
 * closing server still answers the ones that wait. */
TEST(sync_calls_waiting) {
  tb_server_options_t o = { .max_models_per_user = 1 };
  start_training(&o);
  json_decref(post_ok("/api/v1/add_lora", NULL, "{\"model_id\":\"one\"}"));
  /* "two" waits for the model limit, and so does the call. */
  char *fb = fb_body("two", HELLO);
  hc_t *c = hc_send("POST", "/api/v1/forward_backward", NULL, fb);
  wait_ms(50);
  ASSERT(!c->complete);
  hc_close(c);
  hc_wait(c);
  hc_free(c);
  wait_ms(20);
  /* The job still runs once "one" is gone; its result waits for nobody. */
  json_decref(post_ok("/api/v1/remove_lora", NULL, "{\"model_id\":\"one\"}"));
  json_t *v = post_ok("/api/v1/forward_backward", NULL, fb);
  ASSERT(json_object_get(v, "created") == NULL);  /* the first call made it */
  json_decref(v);
  /* Closing answers a sync call still waiting: 500, the server's. */
  c = hc_send("POST", "/api/v1/optim_step", NULL, "{\"model_id\":\"three\"}");
  wait_ms(50);
  ASSERT(!c->complete);
  tb_server_close(&server, on_server_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(server_closed, 1);
  ASSERT(c->complete);
  ASSERT_EQ_INT(c->status, 500);
  ASSERT_STR_CONTAINS(c->body, "closing");
  ASSERT_STR_CONTAINS(c->body, "\"category\":\"server\"");
  hc_free(c);
  free(fb);
  ASSERT_LOOP_CLOSE(&loop);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", data_dir);
  ASSERT_OK(system(cmd));
}

/* A base model from a Hugging Face directory has no chat template here:
 * chat data and text are refused with 422, datums and token ids work. */
TEST(another_base_model) {
  char hf[] = "/tmp/tb-tb-hf-XXXXXX";
  ASSERT(mkdtemp(hf) != NULL);
  char dir[64];
  snprintf(dir, sizeof(dir), "%s/m", hf);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__base_model_save(dir, &err));
  char spec[96];
  snprintf(spec, sizeof(spec), "copy=%s", dir);
  const char *models[] = { "base", spec };
  tb_server_options_t o = { 0 };
  start_training_models(&o, models, 2);
  json_t *v = post_ok("/api/v1/add_lora", NULL, "{\"base_model\":\"copy\",\"model_id\":\"c\"}");
  ASSERT_STR_EQ(str_of(v, "base_model"), "copy");
  json_decref(v);
  json_decref(post_ok("/api/v1/add_lora", NULL, "{\"model_id\":\"b\"}"));
  hc_expect("POST", "/api/v1/forward_backward", NULL,
            "{\"model_id\":\"c\",\"data\":" HELLO "}", 422,
            "data: the model copy has no tokenizer (copy/tokenizer.json is missing");
  hc_expect("POST", "/api/v1/sample", NULL, "{\"model_id\":\"c\",\"prompt\":\"hi\"}", 422,
            "prompt: the model copy has no tokenizer");
  hc_expect("POST", "/api/v1/sample", NULL,
            "{\"model_id\":\"c\",\"prompt_tokens\":[1,2],\"stop\":\"x\"}", 422,
            "stop: the model copy has no tokenizer");
  /* The copy has the weights of base: the same datum, the same loss. */
  const char *datum = "\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\","
                      "\"tokens\":[1,2,3,4]}]},\"loss_fn_inputs\":{\"target_tokens\":[2,3,4,5]}}]}";
  char body[512];
  snprintf(body, sizeof(body), "{\"model_id\":\"c\",%s", datum);
  v = post_ok("/api/v1/forward", NULL, body);
  double lc = num_of(v, "loss");
  json_decref(v);
  snprintf(body, sizeof(body), "{\"model_id\":\"b\",%s", datum);
  v = post_ok("/api/v1/forward", NULL, body);
  ASSERT_NEAR(num_of(v, "loss"), lc, 1e-6, 1e-6);
  json_decref(v);
  v = post_ok("/api/v1/sample", NULL, "{\"model_id\":\"c\",\"prompt_tokens\":[1,2],\"max_tokens\":2}");
  json_t *s0 = json_array_get(json_object_get(v, "samples"), 0);
  ASSERT(json_is_null(json_object_get(s0, "text")));
  ASSERT_STR_EQ(str_of(v, "base_model"), "copy");
  json_decref(v);
  /* A base model's name samples it bare. */
  v = post_ok("/api/v1/sample", NULL, "{\"model_id\":\"copy\",\"prompt_tokens\":[1],\"max_tokens\":1}");
  ASSERT_STR_EQ(str_of(v, "model_id"), "copy");
  json_decref(v);
  stop_training();
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", hf);
  ASSERT_OK(system(cmd));
}

/* A Qwen3 directory served beside base: its adapters train and sample,
 * and get_info names its family. */
TEST(a_qwen3_base_model) {
  char hf[] = "/tmp/tb-tb-q3-XXXXXX";
  ASSERT(mkdtemp(hf) != NULL);
  char dir[64];
  snprintf(dir, sizeof(dir), "%s/m", hf);
  tb__model_config_t c = tb_test_config(32, 48, 2, 4, 2, 16, 300, 64, 1e-6f, 1000000.0f);
  c.arch = TB_ARCH_QWEN3;
  c.qk_norm = 1;
  c.tie_word_embeddings = 1;
  tb__weights_t w;
  ASSERT_OK(tb__weights_alloc(&w, &c));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 8);
  tb__k_rng_fill_uniform(w.storage, &rng, -0.5f, 0.5f, w.storage_floats);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__hf_save(dir, &w, NULL, 0, &err));
  tb__weights_free(&w);
  char spec[96];
  snprintf(spec, sizeof(spec), "q3=%s", dir);
  const char *models[] = { "base", spec };
  tb_server_options_t o = { 0 };
  start_training_models(&o, models, 2);
  json_decref(post_ok("/api/v1/add_lora", NULL, "{\"base_model\":\"q3\",\"model_id\":\"q\"}"));
  json_t *v = post_ok("/get_info", NULL, "{\"model_id\":\"q\"}");
  ASSERT_STR_EQ(str_of(json_object_get(v, "model_data"), "arch"), "qwen3");
  ASSERT_EQ_INT((int)num_of(json_object_get(v, "model_data"), "vocab_size"), 300);
  json_decref(v);
  const char *fb = "{\"model_id\":\"q\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
                   "\"encoded_text\",\"tokens\":[1,2,3,299]}]},\"loss_fn_inputs\":"
                   "{\"target_tokens\":[2,3,299,5]}}]}";
  v = post_ok("/api/v1/forward_backward", NULL, fb);
  double l0 = num_of(v, "loss");
  json_decref(v);
  json_decref(post_ok("/api/v1/optim_step", NULL,
                      "{\"model_id\":\"q\",\"adam_params\":{\"learning_rate\":0.05}}"));
  v = post_ok("/api/v1/forward_backward", NULL, fb);
  ASSERT_LT(num_of(v, "loss"), l0);
  json_decref(v);
  v = post_ok("/api/v1/sample", NULL, "{\"model_id\":\"q\",\"prompt_tokens\":[1,2],\"max_tokens\":3}");
  json_t *s0 = json_array_get(json_object_get(v, "samples"), 0);
  ASSERT_EQ_INT(json_array_size(json_object_get(s0, "tokens")), 3);
  json_decref(v);
  stop_training();
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", hf);
  ASSERT_OK(system(cmd));
}

/* Submissions count against the user's rate limit: 429 with
 * Retry-After. */
TEST(rate_limited) {
  tb_server_options_t o = { .rate_limit_rps = 0.1, .rate_limit_burst = 2 };
  start_training(&o);
  char *fb = fb_body("r", HELLO);
  json_decref(post_ok("/api/v1/forward_backward", NULL, fb));
  char *rid = submit("/api/v1/forward_backward_async", NULL, fb, "r");
  hc_t *c = hc_do("POST", "/api/v1/forward_backward", NULL, fb);
  ASSERT_EQ_INT(c->status, 429);
  ASSERT_STR_CONTAINS(c->head, "Retry-After: ");
  ASSERT_STR_CONTAINS(c->body, "\"category\":\"user\"");
  hc_free(c);
  /* Polling is no submission. */
  json_decref(retrieve(rid, NULL));
  free(rid);
  free(fb);
  stop_training();
}

/* Checkpoints outlive the server: after a restart on the same data_dir a
 * load creates the model again from them. */
TEST(checkpoints_after_restart) {
  tb_server_options_t o = { 0 };
  start_training(&o);
  char *fb = fb_body("p", HELLO);
  json_decref(post_ok("/api/v1/forward_backward", NULL, fb));
  json_decref(post_ok("/api/v1/optim_step", NULL,
                      "{\"model_id\":\"p\",\"adam_params\":{\"learning_rate\":0.01}}"));
  char *rid = submit("/save_weights", NULL, "{\"model_id\":\"p\",\"path\":\"s\"}", "p");
  json_decref(retrieve(rid, NULL));
  free(rid);
  json_t *v = post_ok("/api/v1/forward", NULL, fb);
  double before = num_of(v, "loss");
  json_decref(v);
  stop_server();  /* data_dir stays */

  tb_server_options_t o2 = { .data_dir = data_dir, .long_poll_ms = 10000 };
  start_server(&o2);
  tb__engine_opts_t eo = { .shards = 2 };
  tb_error_t err = { 0 };
  ASSERT_OK(tb__training_start(srv, &eo, NULL, 0, &err));
  hc_expect("POST", "/api/v1/remove_lora", NULL, "{\"model_id\":\"p\"}", 404, NULL);
  rid = submit("/api/v1/load_weights_async", NULL,
               "{\"model_id\":\"p\",\"path\":\"tinkerbell://p/weights/s\",\"optimizer\":true}", "p");
  v = retrieve(rid, NULL);
  ASSERT(json_is_true(json_object_get(v, "created")));
  json_decref(v);
  free(rid);
  v = post_ok("/api/v1/forward", NULL, fb);
  ASSERT_NEAR(num_of(v, "loss"), before, 1e-6, 1e-5);
  json_decref(v);
  free(fb);
  stop_training();
}

/* A server without a data_dir keeps no checkpoints: saving and loading
 * are refused at once; training and sampling work. */
TEST(no_data_dir) {
  tb_server_options_t o = { .long_poll_ms = 10000 };
  start_server(&o);
  tb__engine_opts_t eo = { .shards = 2 };
  tb_error_t err = { 0 };
  ASSERT_OK(tb__training_start(srv, &eo, NULL, 0, &err));
  char *fb = fb_body("n", HELLO);
  json_decref(post_ok("/api/v1/forward_backward", NULL, fb));
  hc_expect("POST", "/api/v1/save_weights_async", NULL, "{\"model_id\":\"n\",\"path\":\"x\"}",
            400, "path: this server keeps no checkpoints");
  hc_expect("POST", "/load_weights", NULL, "{\"model_id\":\"n\",\"path\":\"x\"}", 400,
            "path: this server keeps no checkpoints");
  json_decref(post_ok("/api/v1/sample", NULL, "{\"model_id\":\"n\",\"prompt\":\"hi\",\"seed\":1}"));
  free(fb);
  stop_server();
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
  /* It samples from a 2001-token prompt: its prefill, attention row by row
   * over the KV blocks, takes about 20 s of CPU in the unoptimised sanitizer
   * build, and more than 90 s there on a loaded machine. */
  TEST_ENTRY_TIMEOUT(bad_input, 300000),
  TEST_ENTRY(datums_and_conversations),
  TEST_ENTRY(sync_calls_waiting),
  TEST_ENTRY(another_base_model),
  TEST_ENTRY(a_qwen3_base_model),
  TEST_ENTRY(rate_limited),
  TEST_ENTRY(checkpoints_after_restart),
  TEST_ENTRY(no_data_dir),
)

/*
 * The SamplingClient against a scripted fake server: the sampling
 * session, the shared 429 backoff with the same seq_id, resubmission
 * after a 410, the limit of submissions in flight, compute_logprobs and
 * get_base_model, and closing with samples in flight.
 */
#define _GNU_SOURCE
#include "test_client_fake.h"

#include <math.h>
#include <stdarg.h>

#include "tinkerbell/sampling_client.h"

typedef struct samp_fake_s {
  int n_429;                /* asample POSTs answered 429 */
  int n_410;                /* polls answered 410 */
  uint64_t post_delay_ms;   /* each asample POST answered this late */
  int never_answer;         /* results stay try_again */
  size_t big_prompt_logprobs;  /* results carry this many prompt log-probs */
  int64_t seqs[64];         /* seq_id of each asample POST, in order */
  uint64_t at[64];
  int status[64];
  size_t n;
  char session_body[256];
} samp_fake_t;

static samp_fake_t sf;

static fake_resp_t decide_sampling(fake_t *fk, tb__http_request_t *req, int is_poll) {
  fake_resp_t ok = { .status = 200 };
  char path[96];
  snprintf(path, sizeof(path), "%.*s", (int)req->path.len, req->path.base);
  if (strcmp(path, "/api/v1/create_session") == 0) {
    ok.body = "{\"session_id\":\"s1\"}";
    return ok;
  }
  if (strcmp(path, "/api/v1/session_heartbeat") == 0) {
    ok.body = "{\"type\":\"session_heartbeat\"}";
    return ok;
  }
  if (strcmp(path, "/api/v1/close_session") == 0) {
    ok.body = "{\"type\":\"close_session\"}";
    return ok;
  }
  if (strcmp(path, "/api/v1/create_sampling_session") == 0) {
    snprintf(sf.session_body, sizeof(sf.session_body), "%.*s", (int)req->body.len,
             req->body.base);
    ok.body = "{\"sampling_session_id\":\"s1:sample:0\"}";
    return ok;
  }
  if (strcmp(path, "/api/v1/samplers/s1:sample:0") == 0) {
    ok.body = "{\"sampler_id\":\"s1:sample:0\",\"base_model\":\"base\"}";
    return ok;
  }
  if (is_poll) {
    json_t *doc = json_loadb(req->body.base, req->body.len, 0, NULL);
    const char *rid = json_string_value(json_object_get(doc, "request_id"));
    ASSERT(rid != NULL);
    if (sf.n_410 > 0) {
      sf.n_410--;
      ok.status = 410;
      ok.body = "{\"error\":\"promise expired\",\"category\":\"server\"}";
    } else if (sf.never_answer) {
      char *b = tb__asprintf("{\"type\":\"try_again\",\"request_id\":\"%s\","
                             "\"queue_state\":\"active\"}", rid);
      ok.body = tb__arena_strndup(&req->arena, b, strlen(b));
      free(b);
      ok.delay_ms = 5;
    } else if (sf.big_prompt_logprobs > 0) {
      tb__buf_t big = TB_BUF_INIT;
      ASSERT_OK(tb__buf_append_str(&big, "{\"sequences\":[{\"stop_reason\":\"length\","
                                         "\"tokens\":[7]}],\"prompt_logprobs\":[null"));
      for (size_t i = 1; i < sf.big_prompt_logprobs; i++)
        ASSERT_OK(tb__buf_printf(&big, ",-%zu.25", i % 100));
      ASSERT_OK(tb__buf_append_str(&big, "]}"));
      ok.body = tb__arena_strndup(&req->arena, big.base, big.len);
      tb__buf_free(&big);
    } else {
      /* A JSON SampleResponse naming the seq_id in its one token. */
      long long seq = -1;
      ASSERT(sscanf(rid, "sample-%lld", &seq) == 1);
      char *b = tb__asprintf("{\"sequences\":[{\"stop_reason\":\"length\",\"tokens\":[%lld],"
                             "\"logprobs\":[-0.25]}],\"prompt_logprobs\":[null,-1.5,-2.0],"
                             "\"type\":\"sample\"}", seq);
      ok.body = tb__arena_strndup(&req->arena, b, strlen(b));
      free(b);
    }
    json_decref(doc);
    return ok;
  }
  ASSERT_STR_EQ(path, "/api/v1/asample");
  char bp[8];
  fake_copy_header(req, "x-tinker-sampling-backpressure", bp, sizeof(bp));
  ASSERT_STR_EQ(bp, "1");
  json_t *doc = json_loadb(req->body.base, req->body.len, 0, NULL);
  ASSERT(doc != NULL);
  ASSERT_STR_EQ(json_string_value(json_object_get(doc, "sampling_session_id")), "s1:sample:0");
  int64_t seq = json_integer_value(json_object_get(doc, "seq_id"));
  json_decref(doc);
  ASSERT_LT(sf.n, 64);
  sf.seqs[sf.n] = seq;
  sf.at[sf.n] = uv_now(fk->loop);
  if (sf.n_429 > 0) {
    sf.n_429--;
    sf.status[sf.n++] = 429;
    ok.status = 429;
    ok.body = "{\"error\":\"too many samples\",\"category\":\"user\"}";
    return ok;
  }
  sf.status[sf.n++] = 200;
  char *b = tb__asprintf("{\"request_id\":\"sample-%lld\"}", (long long)seq);
  ok.body = tb__arena_strndup(&req->arena, b, strlen(b));
  free(b);
  ok.delay_ms = sf.post_delay_ms;
  return ok;
}

typedef struct sworld_s {
  uv_loop_t loop;
  fake_t fk;
  tb_service_client_t sc;
  tb_sampling_client_t samp;
  tb_model_input_t prompt;
  int closed;
} sworld_t;

static void sworld_start(sworld_t *w) {
  memset(w, 0, sizeof(*w));
  memset(&sf, 0, sizeof(sf));
  ASSERT_OK(uv_loop_init(&w->loop));
  fake_start(&w->fk, &w->loop);
  w->fk.decide = decide_sampling;
  tb_client_config_t cfg = fake_config(&w->fk);
  tele.meta_key = "path";
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(&w->loop, &w->sc, &cfg, &err));
  ASSERT_OK(tb_service_client_create_sampling_client_sync(&w->sc, &w->samp, NULL, "base", &err));
  ASSERT_STR_EQ(w->samp.sampling_session_id, "s1:sample:0");
  int32_t toks[] = { 5, 6, 7 };
  ASSERT_OK(tb_model_input_init(&w->prompt, toks, 3));
}

static void on_samp_closed(tb_sampling_client_t *s) {
  ((sworld_t *)s->data)->closed++;
  uv_stop(s->loop);
}

static void on_sc_closed(tb_service_client_t *sc) {
  ((sworld_t *)sc->data)->closed++;
  uv_stop(sc->loop);
}

static void sworld_stop(sworld_t *w) {
  if (w->samp.impl_ != NULL) {
    w->samp.data = w;
    tb_sampling_client_close(&w->samp, on_samp_closed);
    while (w->closed < 1)
      uv_run(&w->loop, UV_RUN_ONCE);
  }
  w->sc.data = w;
  int want = w->closed + 1;
  tb_service_client_close(&w->sc, on_sc_closed);
  while (w->closed < want)
    uv_run(&w->loop, UV_RUN_ONCE);
  tb_model_input_clear(&w->prompt);
  fake_stop(&w->fk);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&w->loop);
}

static int64_t token_of(tb_future_t *f) {
  const tb_sample_response_t *r = tb_future_result(f, &tb_result_sample_response);
  ASSERT(r != NULL);
  ASSERT_EQ_INT(r->n_sequences, 1);
  return r->sequences[0].tokens[0];
}

TEST(session_and_sample) {
  sworld_t w;
  sworld_start(&w);
  /* the create_sampling_session body */
  json_t *b = json_loads(sf.session_body, 0, NULL);
  ASSERT(b != NULL);
  ASSERT_STR_EQ(json_string_value(json_object_get(b, "session_id")), "s1");
  ASSERT_STR_EQ(json_string_value(json_object_get(b, "base_model")), "base");
  ASSERT_EQ_INT(json_integer_value(json_object_get(b, "sampling_session_seq_id")), 0);
  json_decref(b);

  tb_error_t err = { 0 };
  tb_sample_response_t *r = NULL;
  tb_sample_params_t p;
  tb_sample_params_default(&p);
  p.max_tokens = 4;
  ASSERT_OK(tb_sampling_client_sample_sync(&w.samp, &w.prompt, 1, &p, 1, 0, &r, &err));
  ASSERT_EQ_INT(r->n_sequences, 1);
  ASSERT_EQ_INT(r->sequences[0].stop_reason, TB_SAMPLE_STOP_REASON_LENGTH);
  ASSERT_EQ_INT(r->sequences[0].tokens[0], 0);  /* the first seq_id */
  ASSERT_NEAR(r->sequences[0].logprobs[0], -0.25, 0, 0);
  ASSERT_EQ_INT(r->n_prompt_logprobs, 3);
  ASSERT(isnan(r->prompt_logprobs[0]));
  tb_sample_response_free(r);

  tb_logprobs_t *lp = NULL;
  ASSERT_OK(tb_sampling_client_compute_logprobs_sync(&w.samp, &w.prompt, &lp, &err));
  ASSERT_EQ_INT(lp->n, 3);
  ASSERT(isnan(lp->values[0]));
  ASSERT_NEAR(lp->values[2], -2.0, 0, 0);
  tb_logprobs_free(lp);
  ASSERT_EQ_INT(sf.seqs[1], 1);

  char *base = NULL;
  ASSERT_OK(tb_sampling_client_get_base_model_sync(&w.samp, &base, &err));
  ASSERT_STR_EQ(base, "base");
  free(base);

  /* bad arguments are refused before anything is sent, with a reason */
  tb_model_input_t empty = { 0 };
  ASSERT_ERR(tb_sampling_client_sample_sync(&w.samp, &empty, 1, NULL, 0, 0, &r, &err),
             TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "prompt is empty");
  p.top_p = 1.5;
  ASSERT_ERR(tb_sampling_client_sample_sync(&w.samp, &w.prompt, 1, &p, 0, 0, &r, &err),
             TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "top_p");
  tb_error_clear(&err);
  tb_future_t *f;
  ASSERT_ERR(tb_sampling_client_sample(&w.samp, &w.prompt, 0, NULL, 0, 0, &f), TB_EINVAL);
  ASSERT_EQ_INT(sf.n, 2);
  sworld_stop(&w);
}

/* A 429 pauses every sample of the client for 1 s; the refused one is
 * sent again with its seq_id. */
TEST(backoff_on_429) {
  sworld_t w;
  sworld_start(&w);
  sf.n_429 = 1;
  tb_future_t *fs[2];
  ASSERT_OK(tb_sampling_client_sample(&w.samp, &w.prompt, 1, NULL, 0, 0, &fs[0]));
  /* the second waits for the first's POST to be answered (the 429), then
   * for the backoff */
  for (int i = 0; i < 1000 && tele_count("http.request.stop") < 3; i++)
    uv_run(&w.loop, UV_RUN_ONCE);
  ASSERT_EQ_INT(sf.n, 1);
  ASSERT_EQ_INT(sf.status[0], 429);
  ASSERT_OK(tb_sampling_client_sample(&w.samp, &w.prompt, 1, NULL, 0, 0, &fs[1]));
  ASSERT_OK(tb_future_wait_many(fs, 2, 30000, NULL));
  ASSERT_EQ_INT(sf.n, 3);
  ASSERT_EQ_INT(sf.seqs[0], 0);
  ASSERT_EQ_INT(sf.seqs[1], 0);  /* resent with the same seq_id, first */
  ASSERT_EQ_INT(sf.seqs[2], 1);
  ASSERT_GE(sf.at[1] - sf.at[0], 900);
  ASSERT_GE(sf.at[2] - sf.at[0], 900);
  ASSERT_EQ_INT(token_of(fs[0]), 0);
  ASSERT_EQ_INT(token_of(fs[1]), 1);
  tb_future_free(fs[0]);
  tb_future_free(fs[1]);
  sworld_stop(&w);
}

/* The server's future expired (410 while polling): the sample is
 * submitted again, with a new seq_id. */
TEST(resubmit_on_410) {
  sworld_t w;
  sworld_start(&w);
  sf.n_410 = 1;
  tb_sample_response_t *r = NULL;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_sampling_client_sample_sync(&w.samp, &w.prompt, 1, NULL, 0, 0, &r, &err));
  ASSERT_EQ_INT(sf.n, 2);
  ASSERT_EQ_INT(sf.seqs[0], 0);
  ASSERT_EQ_INT(sf.seqs[1], 1);
  ASSERT_EQ_INT(r->sequences[0].tokens[0], 1);
  tb_sample_response_free(r);
  sworld_stop(&w);
}

/* Starts n samples of w's prompt, at most max_in_flight on the wire. */
static void sample_many(sworld_t *w, size_t max_in_flight, tb_future_t **fs, int n) {
  tb_sampling_client_set_max_in_flight(&w->samp, max_in_flight);
  for (int i = 0; i < n; i++)
    ASSERT_OK(tb_sampling_client_sample(&w->samp, &w->prompt, 1, NULL, 0, 0, &fs[i]));
}

/* At most max_in_flight asample POSTs are on the wire at once (the
 * client's own start/stop telemetry of them). */
TEST(in_flight_limit) {
  sworld_t w;
  sworld_start(&w);
  sf.post_delay_ms = 20;
  tb_future_t *fs[6];
  sample_many(&w, 2, fs, 6);
  ASSERT_OK(tb_future_wait_many(fs, 6, 30000, NULL));
  int cur = 0, peak = 0;
  for (size_t i = 0; i < tele.n; i++) {
    if (strcmp(tele.meta[i], "/api/v1/asample") != 0)
      continue;
    if (strcmp(tele.names[i], "http.request.start") == 0)
      cur++;
    else if (strcmp(tele.names[i], "http.request.stop") == 0)
      cur--;
    if (cur > peak)
      peak = cur;
  }
  ASSERT_EQ_INT(peak, 2);
  ASSERT_EQ_INT(sf.n, 6);
  for (int i = 0; i < 6; i++) {
    ASSERT_EQ_INT(sf.seqs[i], i);
    tb_future_free(fs[i]);
  }
  sworld_stop(&w);
}

/* Closing fails the samples in flight and queued with TB_ECANCELED. */
TEST(close_with_samples) {
  sworld_t w;
  sworld_start(&w);
  sf.never_answer = 1;
  tb_future_t *fs[3];
  sample_many(&w, 1, fs, 3);
  for (int i = 0; i < 1000 && sf.n < 1; i++)
    uv_run(&w.loop, UV_RUN_ONCE);
  w.samp.data = &w;
  tb_sampling_client_close(&w.samp, on_samp_closed);
  ASSERT_EQ_INT(w.closed, 0);
  while (w.closed < 1)
    uv_run(&w.loop, UV_RUN_ONCE);
  for (int i = 0; i < 3; i++) {
    ASSERT(tb_future_is_done(fs[i]));
    ASSERT_EQ_INT(fs[i]->status, TB_ECANCELED);
    tb_future_free(fs[i]);
  }
  sworld_stop(&w);
}

/* Closing while the sampling session is being made cancels it. */
TEST(close_while_creating) {
  sworld_t w;
  memset(&w, 0, sizeof(w));
  memset(&sf, 0, sizeof(sf));
  ASSERT_OK(uv_loop_init(&w.loop));
  fake_start(&w.fk, &w.loop);
  w.fk.decide = decide_sampling;
  tb_client_config_t cfg = fake_config(&w.fk);
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(&w.loop, &w.sc, &cfg, &err));
  tb_future_t *created, *f;
  ASSERT_OK(tb_service_client_create_sampling_client(&w.sc, &w.samp, "tinker://r:train:0/"
                                                     "sampler_weights/x", NULL, &created));
  int32_t toks[] = { 1, 2 };
  ASSERT_OK(tb_model_input_init(&w.prompt, toks, 2));
  ASSERT_OK(tb_sampling_client_sample(&w.samp, &w.prompt, 1, NULL, 0, 0, &f));
  w.samp.data = &w;
  tb_sampling_client_close(&w.samp, on_samp_closed);
  while (w.closed < 1)
    uv_run(&w.loop, UV_RUN_ONCE);
  ASSERT_EQ_INT(created->status, TB_ECANCELED);
  ASSERT_EQ_INT(f->status, TB_ECANCELED);
  ASSERT_EQ_INT(sf.n, 0);
  tb_future_free(created);
  tb_future_free(f);
  /* neither base model nor path, or a path that is not tinker:// */
  ASSERT_ERR(tb_service_client_create_sampling_client(&w.sc, &w.samp, NULL, NULL, &created),
             TB_EINVAL);
  ASSERT_ERR(tb_service_client_create_sampling_client(&w.sc, &w.samp, "/tmp/x", NULL, &created),
             TB_EINVAL);
  sworld_stop(&w);
}

/* A prompt over 128 KiB (at the SDK's 10 bytes a token) pauses for 5 s
 * after a 429. */
TEST(long_backoff_for_a_large_prompt) {
  sworld_t w;
  sworld_start(&w);
  sf.n_429 = 1;
  size_t n = 15000;
  int32_t *toks = malloc(n * sizeof(int32_t));
  for (size_t i = 0; i < n; i++)
    toks[i] = (int32_t)(i % 250);
  tb_model_input_t big = { 0 };
  ASSERT_OK(tb_model_input_init(&big, toks, n));
  free(toks);
  tb_sample_response_t *r = NULL;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_sampling_client_sample_sync(&w.samp, &big, 1, NULL, 0, 0, &r, &err));
  ASSERT_EQ_INT(sf.n, 2);
  ASSERT_EQ_INT(sf.seqs[1], sf.seqs[0]);
  ASSERT_GE(sf.at[1] - sf.at[0], 4900);
  tb_sample_response_free(r);
  tb_model_input_clear(&big);
  sworld_stop(&w);
}

/* A result over 64 KiB is decoded on the threadpool; the same values
 * come out. */
TEST(large_result) {
  sworld_t w;
  sworld_start(&w);
  sf.big_prompt_logprobs = 20000;
  tb_logprobs_t *lp = NULL;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_sampling_client_compute_logprobs_sync(&w.samp, &w.prompt, &lp, &err));
  ASSERT_EQ_INT(lp->n, 20000);
  ASSERT(isnan(lp->values[0]));
  ASSERT_NEAR(lp->values[1], -1.25, 0, 0);
  ASSERT_NEAR(lp->values[19999], -99.25, 1e-5, 0);
  tb_logprobs_free(lp);
  /* and cancelled while it decodes, or before: TB_ECANCELED either way */
  tb_future_t *f;
  ASSERT_OK(tb_sampling_client_sample(&w.samp, &w.prompt, 1, NULL, 1, 0, &f));
  for (int i = 0; i < 1000 && sf.n < 2; i++)
    uv_run(&w.loop, UV_RUN_ONCE);
  tb_future_cancel(f);
  int rc = tb_future_wait(f, 30000);
  ASSERT(rc == 0 || rc == TB_ECANCELED);
  tb_future_free(f);
  sworld_stop(&w);
}

TEST_LIST(
  TEST_ENTRY(session_and_sample),
  TEST_ENTRY(backoff_on_429),
  TEST_ENTRY(resubmit_on_410),
  TEST_ENTRY(in_flight_limit),
  TEST_ENTRY(close_with_samples),
  TEST_ENTRY(close_while_creating),
  TEST_ENTRY(large_result),
  TEST_ENTRY_TIMEOUT(long_backoff_for_a_large_prompt, 60000),
)

/*
 * Sampling through the server's decoder: concurrent requests share decode
 * steps and give what they give alone; a request that finds the KV cache
 * full is reported paused_capacity and runs later; a sync request whose
 * client goes away, and the samples of an expired sampling session, stop
 * decoding and give their KV memory back.  Seen through the answers and
 * /metrics.
 */
#include "test_server_training.h"

#include "engine/decode.h"

/* ------------------------------------------------------------ helpers */

/* A number of /metrics: the value on the line that starts with series. */
static double metric(const char *series) {
  hc_t *c = hc_do("GET", "/metrics", NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  char want[256];
  snprintf(want, sizeof(want), "\n%s ", series);
  const char *p = strstr(c->body, want);
  if (p == NULL)
    fprintf(stderr, "no %s in /metrics:\n%s\n", series, c->body);
  ASSERT(p != NULL);
  double v = strtod(p + strlen(want), NULL);
  hc_free(c);
  return v;
}

#define STEPS "tinkerbell_decode_steps_total{model=\"base\"}"
#define RUNNING "tinkerbell_decode_requests{model=\"base\",state=\"running\"}"
#define WAITING "tinkerbell_decode_requests{model=\"base\",state=\"waiting\"}"
#define KV_TOTAL "tinkerbell_kv_blocks{model=\"base\",state=\"total\"}"
#define KV_FREE "tinkerbell_kv_blocks{model=\"base\",state=\"available\"}"

/* A sampling session of the base model in a new session. */
static char *base_sampler(char **sid_out) {
  char *sid = create_session(NULL);
  char body[256];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,\"base_model\":\"base\","
           "\"type\":\"create_sampling_session\"}", sid);
  char *ssid = post_field("/api/v1/create_sampling_session", NULL, body,
                          "sampling_session_id");
  *sid_out = sid;
  return ssid;
}

static char *sample_body(const char *ssid, int seq, int first_token, int max_tokens,
                         int samples, int seed, double temperature) {
  char *b = xmalloc(512);
  snprintf(b, 512,
           "{\"sampling_session_id\":\"%s\",\"seq_id\":%d,\"num_samples\":%d,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[%d,%d,%d,%d]}]},"
           "\"sampling_params\":{\"max_tokens\":%d,\"seed\":%d,\"temperature\":%g},"
           "\"type\":\"sample\"}", ssid, seq, samples, first_token, first_token + 1,
           first_token + 2, first_token + 3, max_tokens, seed, temperature);
  return b;
}

/* The KV bytes of `blocks` blocks of 16 positions of the base model. */
static size_t base_kv_bytes(size_t blocks) {
  tb__model_config_t c;
  tb__base_model_config(&c);
  return blocks * 2 * (size_t)c.num_layers * 16 * (size_t)c.num_kv_heads *
         (size_t)c.head_dim * sizeof(float);
}

/* The blocks a 4-token prompt with these samples reserves. */
static size_t blocks_for(int max_tokens, int samples) {
  tb__sampling_params_t p;
  tb__sampling_params_default(&p);
  p.max_tokens = (size_t)max_tokens;
  p.num_samples = (size_t)samples;
  return tb__dec_blocks_needed(16, 4, &p);
}

/* ------------------------------------------------------------ tests */

/* Eight requests at once decode together: fewer steps than one after
 * another, and the same answers byte for byte. */
TEST(concurrent_requests_share_steps) {
  tb_server_options_t o = { 0 };
  start_training(&o);
  char *sid, *ssid = base_sampler(&sid);
  enum { N = 8, MAXT = 24 };
  char *body[N];
  for (int i = 0; i < N; i++)
    body[i] = sample_body(ssid, i, 10 + 3 * i, MAXT, 2, 100 + i, 1.0);
  char *rid[N];
  hc_t *c[N];
  for (int i = 0; i < N; i++)
    c[i] = hc_send("POST", "/api/v1/asample", NULL, body[i]);
  for (int i = 0; i < N; i++) {
    hc_wait(c[i]);
    ASSERT_EQ_INT(c[i]->status, 200);
    rid[i] = field_of(c[i], "request_id");
    hc_free(c[i]);
  }
  char *together[N];
  for (int i = 0; i < N; i++) {
    hc_t *a = await_future(rid[i], NULL);
    together[i] = xstrdup(a->body);
    hc_free(a);
    free(rid[i]);
  }
  double steps_together = metric(STEPS);
  ASSERT_LE(steps_together, 2 * MAXT);  /* alone: up to N * MAXT */
  for (int i = 0; i < N; i++) {
    free(body[i]);
    body[i] = sample_body(ssid, N + i, 10 + 3 * i, MAXT, 2, 100 + i, 1.0);
    char *r = post_field("/api/v1/asample", NULL, body[i], "request_id");
    hc_t *a = await_future(r, NULL);
    ASSERT_STR_EQ(a->body, together[i]);
    hc_free(a);
    free(r);
    free(together[i]);
    free(body[i]);
  }
  ASSERT_EQ_INT(metric(RUNNING), 0);
  free(ssid);
  free(sid);
  stop_training();
}

/* A KV cache with room for one request: the second waits and its poll
 * says paused_capacity; closing the session stops both. */
TEST(a_full_kv_cache_is_paused_capacity) {
  enum { MAXT = 1000, S = 4 };
  size_t need = blocks_for(MAXT, S);
  tb_server_options_t o = { 0 };
  o.kv_memory = base_kv_bytes(need);
  o.long_poll_ms = 1;
  start_training(&o);
  char *sid, *ssid = base_sampler(&sid);
  char *b1 = sample_body(ssid, 0, 5, MAXT, S, 1, 0);
  char *b2 = sample_body(ssid, 1, 7, MAXT, S, 2, 0);
  char *r1 = post_field("/api/v1/asample", NULL, b1, "request_id");
  while (metric(KV_TOTAL) == 0)  /* the decoder opens at the first sample */
    wait_ms(1);
  char *r2 = post_field("/api/v1/asample", NULL, b2, "request_id");
  ASSERT_EQ_INT(metric(KV_TOTAL), (double)need);
  ASSERT_EQ_INT(metric(WAITING), 1);
  char body[160];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\",\"allow_metadata_only\":false}", r2);
  hc_t *c = hc_do("POST", "/api/v1/retrieve_future", NULL, body);
  ASSERT_STR_CONTAINS(c->body, "\"try_again\"");
  ASSERT_STR_CONTAINS(c->body, "\"queue_state\":\"paused_capacity\"");
  ASSERT_STR_CONTAINS(c->body, "KV memory is full");
  hc_free(c);
  /* Closing the session stops both (the engine's tests see the second
   * run once the first is done). */
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"type\":\"close_session\"}", sid);
  hc_expect("POST", "/api/v1/close_session", NULL, body, 200, NULL);
  for (int i = 0; i < 2; i++) {
    char *why = failure_of(i == 0 ? r1 : r2, "user");
    ASSERT_STR_EQ(why, "the sample was cancelled: its session was closed");
    free(why);
  }
  while (metric(KV_FREE) < (double)need)  /* when the step under way ends */
    wait_ms(2);

  /* One larger than the whole cache is the user's error. */
  char *sid2, *ssid2 = base_sampler(&sid2);
  char *b3 = sample_body(ssid2, 0, 5, MAXT, S + 1, 3, 0);
  char *r3 = post_field("/api/v1/asample", NULL, b3, "request_id");
  char *why = failure_of(r3, "user");
  ASSERT_STR_CONTAINS(why, "KV blocks");
  free(why);
  free(ssid2);
  free(sid2);
  free(b1);
  free(b2);
  free(b3);
  free(r1);
  free(r2);
  free(r3);
  free(ssid);
  free(sid);
  stop_training();
}

/* A sync sample of the Tinkerbell dialect whose client hangs up stops
 * decoding at once: far fewer steps than its max_tokens, and its blocks
 * are back. */
TEST(a_sync_sample_stops_when_its_client_goes) {
  tb_server_options_t o = { 0 };
  start_training(&o);
  hc_t *c = hc_do("POST", "/api/v1/add_lora", NULL, "{\"base_model\":\"base\",\"rank\":4}");
  ASSERT_EQ_INT(c->status, 200);
  char *mid = field_of(c, "model_id");
  hc_free(c);
  char body[512];
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"prompt_tokens\":[5,6,7],\"max_tokens\":1900,"
           "\"temperature\":0}", mid);
  c = hc_send("POST", "/api/v1/sample", NULL, body);
  while (metric(STEPS) < 3)
    wait_ms(2);
  double total = metric(KV_TOTAL);
  ASSERT_LT(metric(KV_FREE), total);
  hc_close(c);
  hc_wait(c);
  hc_free(c);
  /* Its blocks come back when the step under way ends. */
  while (metric(RUNNING) > 0 || metric(KV_FREE) < total)
    wait_ms(2);
  ASSERT_LT(metric(STEPS), 1000);
  free(mid);
  stop_training();
}

/* The samples of a sampling session that expires stop decoding; their
 * futures fail, saying so. */
TEST(an_expired_session_stops_its_samples) {
  tb_server_options_t o = { 0 };
  o.session_timeout_ms = 300;
  start_training(&o);
  char *sid, *ssid = base_sampler(&sid);
  char *b = sample_body(ssid, 0, 5, 1900, 2, 1, 0);
  char *r = post_field("/api/v1/asample", NULL, b, "request_id");
  char *why = failure_of(r, "user");
  ASSERT_STR_EQ(why, "the sample was cancelled: its session expired");
  ASSERT_LT(metric(STEPS), 1500);
  ASSERT_EQ_INT(metric(RUNNING), 0);
  while (metric(KV_FREE) < metric(KV_TOTAL))  /* when the step under way ends */
    wait_ms(2);
  free(why);
  free(b);
  free(r);
  free(ssid);
  free(sid);
  stop_training();
}

TEST_LIST(
  TEST_ENTRY(concurrent_requests_share_steps),
  TEST_ENTRY(a_full_kv_cache_is_paused_capacity),
  TEST_ENTRY(a_sync_sample_stops_when_its_client_goes),
  TEST_ENTRY(an_expired_session_stops_its_samples),
)

/*
 * The client's transport against a scripted fake server: submission
 * retries (status rules, x-should-retry, Retry-After, the idempotency key)
 * and every path of the retrieve_future long-poll (try_again and queue
 * states, pending backoff, 408 storms, 5xx, 429, empty 400s, 410, user and
 * server failures, dropped connections, slow answers, the poll deadline).
 * Backoffs are milliseconds, and timing is asserted only as lower bounds.
 */
#include "test_client_fake.h"

#include <math.h>

static uv_loop_t loop;
static fake_t fk;
static tb__rt_t rt;

static void setup(const tb_client_config_t *override) {
  ASSERT_OK(uv_loop_init(&loop));
  fake_start(&fk, &loop);
  tb_client_config_t c = fake_config(&fk);
  if (override != NULL) {
    /* Only the fields tests change. */
    if (override->max_retries)
      c.max_retries = override->max_retries;
    if (override->poll_deadline_ms)
      c.poll_deadline_ms = override->poll_deadline_ms;
    if (override->poll_http_timeout_ms)
      c.poll_http_timeout_ms = override->poll_http_timeout_ms;
    if (override->http_timeout_ms)
      c.http_timeout_ms = override->http_timeout_ms;
    if (override->poll_backoff_initial_ms) {
      c.poll_backoff_initial_ms = override->poll_backoff_initial_ms;
      c.poll_backoff_max_ms = override->poll_backoff_max_ms;
    }
    if (override->poll_error_backoff_initial_ms) {
      c.poll_error_backoff_initial_ms = override->poll_error_backoff_initial_ms;
      c.poll_error_backoff_max_ms = override->poll_error_backoff_max_ms;
    }
    if (override->stall_ms)
      c.stall_ms = override->stall_ms;
    c.queue_observer = override->queue_observer;
    c.queue_observer_data = override->queue_observer_data;
  }
  rt_start(&rt, &loop, &c);
}

static void teardown(void) {
  rt_stop(&rt);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

static const fake_resp_t SUBMIT_OK[] = { { 200, "{\"request_id\":\"req-1\"}" } };

#define SCRIPT(sub, pol)                    \
  do {                                      \
    fk.submit = (sub);                      \
    fk.n_submit = sizeof(sub) / sizeof((sub)[0]); \
    fk.poll = (pol);                        \
    fk.n_poll = sizeof(pol) / sizeof((pol)[0]); \
  } while (0)

/* Runs f to completion and returns its status. */
static int run(tb_future_t *f) {
  int rc = tb_future_wait(f, 60000);
  ASSERT(tb_future_is_done(f));
  return rc;
}

static const char *text_of(tb_future_t *f) {
  const char *s = tb_future_result(f, &tb_result_string);
  ASSERT(s != NULL);
  return s;
}

/* ------------------------------------------------------------ results */

TEST(poll_bare_result) {
  static const fake_resp_t P[] = { { 200, "{\"type\":\"optim_step\",\"ok\":true}" } };
  setup(NULL);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_STR_EQ(text_of(f), "{\"type\":\"optim_step\",\"ok\":true}");
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/test_op"), 1);
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 1);
  const fake_log_t *p = fake_nth(&fk, POLL_PATH, 0);
  ASSERT_STR_CONTAINS(p->body, "\"request_id\":\"req-1\"");
  ASSERT_STR_CONTAINS(p->body, "\"allow_metadata_only\":true");
  ASSERT_STR_EQ(p->iteration, "0");
  ASSERT_STR_EQ(p->request_type, "ForwardBackward");
  ASSERT_STR_EQ(p->api_key, "tml-test-key");
  ASSERT_STR_EQ(fake_nth(&fk, "/api/v1/test_op", 0)->api_key, "tml-test-key");
  ASSERT_EQ_INT(tele_count("http.request.start"), 1);
  ASSERT_EQ_INT(tele_count("http.request.stop"), 1);
  tb_future_free(f);
  teardown();
}

TEST(poll_wrapped_completed_and_metadata_only) {
  static const fake_resp_t P[] = {
    { 200, "{\"status\":\"complete_metadata\",\"response_payload_size\":10}" },
    { 200, "{\"status\":\"completed\",\"result\":{\"loss\":1.5}}" },
  };
  setup(NULL);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_STR_EQ(text_of(f), "{\"loss\":1.5}");
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 2);
  ASSERT_STR_CONTAINS(fake_nth(&fk, POLL_PATH, 0)->body, "\"allow_metadata_only\":true");
  ASSERT_STR_CONTAINS(fake_nth(&fk, POLL_PATH, 1)->body, "\"allow_metadata_only\":false");
  ASSERT_STR_EQ(fake_nth(&fk, POLL_PATH, 1)->iteration, "1");
  tb_future_free(f);
  teardown();
}

TEST(poll_protobuf_result) {
  static const fake_resp_t P[] = { { 200, "\x0a\x03" "abc", "application/x-protobuf" } };
  setup(NULL);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_STR_EQ(text_of(f), "\x0a\x03" "abc");
  tb_future_free(f);
  teardown();
}

/* ------------------------------------------------------------ queue state */

typedef struct {
  tb_queue_state_t st[16];
  tb_queue_state_t prev[16];
  char reason[16][64];
  int n;
} qlog_t;

static void on_queue(const tb_queue_state_event_t *ev) {
  qlog_t *q = ev->data;
  ASSERT_STR_EQ(ev->request_id, "req-1");
  ASSERT_STR_EQ(ev->request_type, "ForwardBackward");
  q->st[q->n] = ev->state;
  q->prev[q->n] = ev->previous;
  snprintf(q->reason[q->n], 64, "%s", ev->reason ? ev->reason : "");
  q->n++;
}

TEST(poll_queue_state_transitions) {
  static const fake_resp_t P[] = {
    { 200, "{\"type\":\"try_again\",\"request_id\":\"req-1\",\"queue_state\":\"active\"}" },
    { 200, "{\"type\":\"try_again\",\"request_id\":\"req-1\",\"queue_state\":\"paused_rate_limit\","
           "\"queue_state_reason\":\"too many clients\"}" },
    { 200, "{\"type\":\"try_again\",\"request_id\":\"req-1\",\"queue_state\":\"paused_rate_limit\","
           "\"queue_state_reason\":\"too many clients\"}" },
    { 200, "{\"type\":\"try_again\",\"request_id\":\"req-1\","
           "\"queue_state\":\" PAUSED_CAPACITY \"}" },
    { 408, "{\"queue_state\":\"sleepy\"}" },
    { 200, "{\"type\":\"try_again\",\"request_id\":\"req-1\",\"queue_state\":\"active\","
           "\"retry_after_ms\":30}" },
    { 200, "{\"done\":1}" },
  };
  qlog_t q = { 0 };
  tb_client_config_t o = { .queue_observer = on_queue, .queue_observer_data = &q };
  setup(&o);
  SCRIPT(SUBMIT_OK, P);
  tele.meta_key = "queue_state";
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 7);
  /* active (no change from the start), rate limit, same again (no change),
   * capacity, unknown (408 body), active. */
  ASSERT_EQ_INT(q.n, 4);
  ASSERT_EQ_INT(q.st[0], TB_QUEUE_PAUSED_RATE_LIMIT);
  ASSERT_EQ_INT(q.prev[0], TB_QUEUE_ACTIVE);
  ASSERT_STR_EQ(q.reason[0], "too many clients");
  ASSERT_EQ_INT(q.st[1], TB_QUEUE_PAUSED_CAPACITY);
  ASSERT_STR_EQ(q.reason[1], "");
  ASSERT_EQ_INT(q.st[2], TB_QUEUE_UNKNOWN);
  ASSERT_EQ_INT(q.st[3], TB_QUEUE_ACTIVE);
  ASSERT_EQ_INT(q.prev[3], TB_QUEUE_UNKNOWN);
  ASSERT_EQ_INT(tele_count("future.queue_state_change"), 4);
  /* retry_after_ms was honoured before the last poll. */
  ASSERT_GE(fake_nth(&fk, POLL_PATH, 6)->at - fake_nth(&fk, POLL_PATH, 5)->at, 30);
  ASSERT_STR_EQ(tb_queue_state_name(TB_QUEUE_PAUSED_RATE_LIMIT), "paused_rate_limit");
  tb_future_free(f);
  teardown();
}

/* ------------------------------------------------------------ stalls */

#define TA(extra) "{\"type\":\"try_again\",\"request_id\":\"req-1\",\"queue_state\":\"active\"" extra "}"

typedef struct jlog_s {
  double started[8];
  int64_t pos[8];
  int n;
} jlog_t;

static void on_job(const tb_queue_state_event_t *ev) {
  jlog_t *j = ev->data;
  ASSERT_LT(j->n, 8);
  j->started[j->n] = ev->started_at;
  j->pos[j->n] = ev->queue_position;
  j->n++;
}

TEST(poll_stalled_once_per_stall) {
  /* Queued behind two jobs, then nothing new for a while (a stall), then
   * one job ahead (progress), nothing new again (a second stall), then it
   * starts and finishes. */
  static const fake_resp_t P[] = {
    { 200, TA(",\"started_at\":null,\"queue_position\":2"), .delay_ms = 5 },
    { 200, TA(",\"started_at\":null,\"queue_position\":2"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":null,\"queue_position\":2"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":null,\"queue_position\":2"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":null,\"queue_position\":2"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":null,\"queue_position\":2"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":null,\"queue_position\":1"), .delay_ms = 5 },
    { 200, TA(",\"started_at\":null,\"queue_position\":1"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":null,\"queue_position\":1"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":null,\"queue_position\":1"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":null,\"queue_position\":1"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":null,\"queue_position\":1"), .delay_ms = 30 },
    { 200, TA(",\"started_at\":\"2026-12-06T09:56:51.500Z\",\"queue_position\":0") },
    { 200, "{\"done\":1}" },
  };
  jlog_t j = { 0 };
  tb_client_config_t o = { .stall_ms = 80, .queue_observer = on_job,
                           .queue_observer_data = &j };
  setup(&o);
  SCRIPT(SUBMIT_OK, P);
  tele.meta_key = "queue_position";
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 14);
  /* Once per stall, saying where the job stood. */
  ASSERT_EQ_INT(tele_count("future.stalled"), 2);
  int k = 0;
  for (size_t i = 0; i < tele.n; i++)
    if (strcmp(tele.names[i], "future.stalled") == 0)
      ASSERT_STR_EQ(tele.meta[i], k++ == 0 ? "2" : "1");
  /* The observer hears each change of what the server says of the job;
   * the repeated answers are no change. */
  ASSERT_EQ_INT(j.n, 3);
  ASSERT_EQ_INT(j.pos[0], 2);
  ASSERT(j.started[0] == 0);
  ASSERT_EQ_INT(j.pos[1], 1);
  ASSERT_EQ_INT(j.pos[2], 0);
  ASSERT(fabs(j.started[2] - 1796551011.5) < 1e-3);  /* 2026-12-06T09:56:51.5Z */
  tb_future_free(f);
  teardown();
}

TEST(poll_stalled_while_an_answer_is_held) {
  /* A server that holds the poll: the stall is told when it is due, not
   * when the answer comes; a server without the new fields still works. */
  static const fake_resp_t P[] = {
    { 200, TA(""), .delay_ms = 250 },
    { 200, "{\"done\":1}" },
  };
  tb_client_config_t o = { .stall_ms = 60 };
  setup(&o);
  SCRIPT(SUBMIT_OK, P);
  tele.meta_key = "request_id";
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(tele_count("future.stalled"), 1);
  size_t at = 0, ans = 0;
  for (size_t i = 0; i < tele.n; i++) {
    if (strcmp(tele.names[i], "future.stalled") == 0) {
      at = i;
      ASSERT_STR_EQ(tele.meta[i], "req-1");
    }
    if (strcmp(tele.names[i], "http.request.stop") == 0)
      ans = i;  /* the submission's */
  }
  ASSERT_GT(at, ans);
  tb_future_free(f);
  teardown();
  /* Off. */
  tb_client_config_t off = { .stall_ms = TB_STALL_NEVER };
  setup(&off);
  SCRIPT(SUBMIT_OK, P);
  f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(tele_count("future.stalled"), 0);
  tb_future_free(f);
  teardown();
}

/* ------------------------------------------------------------ backoffs */

TEST(poll_pending_backoff) {
  static const fake_resp_t P[] = {
    { 200, "{\"status\":\"pending\"}" }, { 200, "{\"status\":\"pending\"}" },
    { 200, "{\"status\":\"pending\"}" }, { 200, "{\"status\":\"pending\"}" },
    { 200, "{\"r\":2}" },
  };
  tb_client_config_t o = { .poll_backoff_initial_ms = 20, .poll_backoff_max_ms = 50 };
  setup(&o);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 5);
  /* min(2^(n-1) * 20, 50): 20, 40, 50, 50. */
  static const uint64_t want[] = { 20, 40, 50, 50 };
  for (size_t i = 0; i < 4; i++)
    ASSERT_GE(fake_nth(&fk, POLL_PATH, i + 1)->at - fake_nth(&fk, POLL_PATH, i)->at, want[i]);
  tb_future_free(f);
  teardown();
}

TEST(poll_408_storm_and_5xx) {
  static fake_resp_t P[40];
  for (int i = 0; i < 39; i++) {
    P[i].status = i % 4 == 0 ? 500 : i % 4 == 1 ? 503 : 408;
    P[i].body = i % 3 == 0 ? "" : "{\"error\":\"busy\"}";
  }
  P[39].status = 200;
  P[39].body = "{\"r\":3}";
  setup(NULL);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 40);
  ASSERT_EQ_INT(tele_count("future.api_error"), 39);
  /* Never a hot loop: every re-poll waited its (jittered, >= half) delay. */
  for (size_t i = 1; i < 40; i++)
    ASSERT_GE(fake_nth(&fk, POLL_PATH, i)->at - fake_nth(&fk, POLL_PATH, i - 1)->at, 1);
  tb_future_free(f);
  teardown();
}

TEST(poll_429_honours_retry_after) {
  static const fake_resp_t P[] = {
    { 429, "{\"error\":\"slow down\"}", NULL, "retry-after-ms", "150" },
    { 429, "{\"error\":\"slow down\"}" },
    { 200, "{\"r\":4}" },
  };
  tb_client_config_t o = { .poll_error_backoff_initial_ms = 60,
                           .poll_error_backoff_max_ms = 1000 };
  setup(&o);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 3);
  ASSERT_GE(fake_nth(&fk, POLL_PATH, 1)->at - fake_nth(&fk, POLL_PATH, 0)->at, 150);
  /* The second 429 in a row, without Retry-After: 2 * 60. */
  ASSERT_GE(fake_nth(&fk, POLL_PATH, 2)->at - fake_nth(&fk, POLL_PATH, 1)->at, 120);
  tb_future_free(f);
  teardown();
}

TEST(poll_dropped_connections) {
  static const fake_resp_t P[] = {
    { 0, NULL, NULL, NULL, NULL, 0, 1 },
    { 0, NULL, NULL, NULL, NULL, 0, 1 },
    { 200, "{\"r\":5}" },
  };
  setup(NULL);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_STR_EQ(text_of(f), "{\"r\":5}");
  /* A drop on a kept-alive connection is resent once by the HTTP layer
   * itself; the one on the fresh connection reaches the poll. */
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 3);
  ASSERT_GE(tele_count("future.connection_error"), 1);
  tb_future_free(f);
  teardown();
}

TEST(poll_slow_answer_against_http_timeout) {
  static const fake_resp_t P[] = {
    { 200, "{\"late\":1}", NULL, NULL, NULL, 3000 },
    { 200, "{\"r\":6}" },
  };
  tb_client_config_t o = { .poll_http_timeout_ms = 100 };
  setup(&o);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_STR_EQ(text_of(f), "{\"r\":6}");
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 2);
  ASSERT_EQ_INT(tele_count("future.connection_error"), 1);
  tb_future_free(f);
  teardown();
}

TEST(poll_empty_400_retried_three_times) {
  static const fake_resp_t P[] = { { 400, "" }, { 400, "" }, { 400, "" }, { 200, "{\"r\":7}" } };
  setup(NULL);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 4);
  tb_future_free(f);
  teardown();

  static const fake_resp_t Q[] = { { 400, "" } };
  setup(NULL);
  SCRIPT(SUBMIT_OK, Q);
  f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EHTTP);
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 4);
  ASSERT_EQ_INT(f->error.http_status, 400);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_USER);
  tb_future_free(f);
  teardown();
}

/* ------------------------------------------------------------ failures */

TEST(poll_410_expired) {
  static const fake_resp_t P[] = { { 410, "{\"error\":\"gone\"}" } };
  setup(NULL);
  SCRIPT(SUBMIT_OK, P);
  tele.meta_key = "http_status";
  tb_future_t *f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EEXPIRED);
  ASSERT_EQ_INT(f->error.http_status, 410);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_SERVER);
  ASSERT_STR_CONTAINS(f->error.message, "expired");
  ASSERT_STR_EQ(f->error.request_id, "req-1");
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 1);
  size_t found = 0;
  for (size_t i = 0; i < tele.n; i++)
    if (strcmp(tele.names[i], "future.api_error") == 0 && strcmp(tele.meta[i], "410") == 0)
      found++;
  ASSERT_EQ_INT(found, 1);
  tb_future_free(f);
  teardown();
}

TEST(poll_user_failure_is_immediate) {
  static const fake_resp_t P[] = {
    { 200, "{\"status\":\"pending\"}" },
    { 200, "{\"error\":\"loss_fn: unknown\",\"category\":\"user\"}" },
  };
  setup(NULL);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EUSER);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_USER);
  ASSERT_STR_EQ(f->error.message, "loss_fn: unknown");
  ASSERT_STR_EQ(f->error.request_id, "req-1");
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 2);
  ASSERT_EQ_INT(tele_count("future.request_failed"), 1);
  tb_future_free(f);
  teardown();

  /* The wrapped form, with the category inside the error. */
  static const fake_resp_t Q[] = {
    { 200, "{\"status\":\"failed\",\"error\":{\"message\":\"bad\",\"category\":\"USER\"}}" },
  };
  setup(NULL);
  SCRIPT(SUBMIT_OK, Q);
  f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EUSER);
  ASSERT_STR_EQ(f->error.message, "bad");
  tb_future_free(f);
  teardown();
}

TEST(poll_server_failure_retried_until_deadline) {
  static const fake_resp_t P[] = {
    { 200, "{\"error\":\"worker lost\",\"category\":\"server\"}" },
  };
  tb_client_config_t o = { .poll_deadline_ms = 300 };
  setup(&o);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  uint64_t t0 = uv_now(&loop);
  ASSERT_ERR(run(f), TB_ESERVER);
  ASSERT_GE(uv_now(&loop) - t0, 300);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_SERVER);
  ASSERT_STR_EQ(f->error.message, "worker lost");
  ASSERT_STR_EQ(f->error.request_id, "req-1");
  ASSERT_GE(fake_count(&fk, POLL_PATH), 3);
  ASSERT_EQ_INT(tele_count("future.timeout"), 1);
  tb_future_free(f);
  teardown();

  /* A server failure followed by success: the success wins. */
  static const fake_resp_t Q[] = {
    { 200, "{\"error\":\"worker lost\",\"category\":\"server\"}" },
    { 200, "{\"error\":\"worker lost\",\"category\":\"unknown\"}" },
    { 200, "{\"r\":8}" },
  };
  setup(NULL);
  SCRIPT(SUBMIT_OK, Q);
  f = start_polled(&rt);
  ASSERT_OK(run(f));
  tb_future_free(f);
  teardown();
}

TEST(poll_deadline_without_failure_is_timeout) {
  static const fake_resp_t P[] = { { 200, "{\"status\":\"pending\"}" } };
  tb_client_config_t o = { .poll_deadline_ms = 200 };
  setup(&o);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_ETIMEDOUT);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_TIMEOUT);
  ASSERT_STR_EQ(f->error.request_id, "req-1");
  tb_future_free(f);
  teardown();

  /* The deadline also ends a long poll in flight. */
  static const fake_resp_t Q[] = { { 200, "{\"late\":1}", NULL, NULL, NULL, 5000 } };
  setup(&o);
  SCRIPT(SUBMIT_OK, Q);
  f = start_polled(&rt);
  uint64_t t0 = uv_now(&loop);
  ASSERT_ERR(run(f), TB_ETIMEDOUT);
  ASSERT_LT(uv_now(&loop) - t0, 4000);
  tb_future_free(f);
  teardown();
}

TEST(poll_other_status_is_fatal) {
  static const fake_resp_t P[] = {
    { 404, "{\"error\":\"unknown request\",\"category\":\"user\"}" } };
  setup(NULL);
  SCRIPT(SUBMIT_OK, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EHTTP);
  ASSERT_EQ_INT(f->error.http_status, 404);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_USER);
  ASSERT_STR_CONTAINS(f->error.message, "unknown request");
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 1);
  tb_future_free(f);
  teardown();

  static const fake_resp_t Q[] = { { 200, "not json" } };
  setup(NULL);
  SCRIPT(SUBMIT_OK, Q);
  f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EJSON);
  tb_future_free(f);
  teardown();
}

/* ------------------------------------------------------------ submission */

TEST(submit_retries_keep_the_idempotency_key) {
  /* The drop comes first, on a fresh connection, so that the HTTP layer
   * does not resend it on its own. */
  static const fake_resp_t S[] = {
    { 0, NULL, NULL, NULL, NULL, 0, 1 },
    { 503, "{\"error\":\"restarting\"}" },
    { 429, "{\"error\":\"slow\"}", NULL, "Retry-After", "0.1" },
    { 408, "" },
    { 409, "{\"error\":\"conflict\"}" },
    { 200, "{\"request_id\":\"req-1\"}" },
  };
  static const fake_resp_t P[] = { { 200, "{\"r\":9}" } };
  setup(NULL);
  SCRIPT(S, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/test_op"), 6);
  const fake_log_t *first = fake_nth(&fk, "/api/v1/test_op", 0);
  ASSERT(strlen(first->idem) > 20);
  for (size_t i = 0; i < 6; i++) {
    const fake_log_t *l = fake_nth(&fk, "/api/v1/test_op", i);
    ASSERT_STR_EQ(l->idem, first->idem);
    char want[8];
    snprintf(want, sizeof(want), "%zu", i);
    ASSERT_STR_EQ(l->retry_count, want);
    ASSERT_STR_EQ(l->body, "{\"x\":1}");
  }
  ASSERT_GE(fake_nth(&fk, "/api/v1/test_op", 3)->at - fake_nth(&fk, "/api/v1/test_op", 2)->at,
            100);
  ASSERT_EQ_INT(tele_count("http.retry"), 5);
  ASSERT_EQ_INT(tele_count("http.request.start"), 1);
  tb_future_free(f);

  /* A second call has a key of its own. */
  fk.i_submit = 5;
  f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT(strcmp(fake_nth(&fk, "/api/v1/test_op", 6)->idem, first->idem) != 0);
  tb_future_free(f);
  teardown();
}

TEST(submit_x_should_retry_and_limits) {
  static const fake_resp_t S[] = {
    { 500, "{\"error\":\"no\"}", NULL, "X-Should-Retry", "false" },
  };
  static const fake_resp_t P[] = { { 200, "{}" } };
  setup(NULL);
  SCRIPT(S, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EHTTP);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/test_op"), 1);
  ASSERT_EQ_INT(f->error.http_status, 500);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_SERVER);
  ASSERT_EQ_INT(tele_count("http.request.error"), 1);
  tb_future_free(f);
  teardown();

  static const fake_resp_t S2[] = {
    { 400, "{\"error\":\"flaky\"}", NULL, "x-should-retry", "TRUE" },
    { 422, "{\"detail\":\"bad field\"}" },
  };
  setup(NULL);
  SCRIPT(S2, P);
  f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EHTTP);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/test_op"), 2);  /* 422: not retried */
  ASSERT_EQ_INT(f->error.http_status, 422);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_USER);
  ASSERT_STR_CONTAINS(f->error.message, "bad field");
  tb_future_free(f);
  teardown();

  /* max_retries bounds the attempts. */
  static const fake_resp_t S3[] = { { 503, "" } };
  tb_client_config_t o = { .max_retries = 2 };
  setup(&o);
  SCRIPT(S3, P);
  f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EHTTP);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/test_op"), 3);
  tb_future_free(f);
  teardown();

  o.max_retries = -1;  /* none */
  setup(&o);
  SCRIPT(S3, P);
  f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EHTTP);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/test_op"), 1);
  tb_future_free(f);
  teardown();
}

TEST(submit_slow_answer_is_retried_after_its_timeout) {
  static const fake_resp_t S[] = {
    { 200, "{\"request_id\":\"late\"}", NULL, NULL, NULL, 3000 },
    { 200, "{\"request_id\":\"req-1\"}" },
  };
  static const fake_resp_t P[] = { { 200, "{\"r\":10}" } };
  tb_client_config_t o = { .http_timeout_ms = 100 };
  setup(&o);
  SCRIPT(S, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(run(f));
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/test_op"), 2);
  ASSERT_STR_EQ(fake_nth(&fk, "/api/v1/test_op", 0)->idem,
                fake_nth(&fk, "/api/v1/test_op", 1)->idem);
  ASSERT_STR_EQ(fake_nth(&fk, "/api/v1/test_op", 1)->retry_count, "1");
  ASSERT_STR_CONTAINS(fake_nth(&fk, POLL_PATH, 0)->body, "\"req-1\"");
  ASSERT_EQ_INT(tele_count("http.retry"), 1);
  tb_future_free(f);
  teardown();
}

TEST(submit_retry_count_past_nine) {
  static const fake_resp_t S[] = { { 503, "" } };
  static const fake_resp_t P[] = { { 200, "{}" } };
  tb_client_config_t o = { .max_retries = 11 };
  setup(&o);
  SCRIPT(S, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EHTTP);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/test_op"), 12);
  ASSERT_STR_EQ(fake_nth(&fk, "/api/v1/test_op", 9)->retry_count, "9");
  ASSERT_STR_EQ(fake_nth(&fk, "/api/v1/test_op", 10)->retry_count, "10");
  ASSERT_STR_EQ(fake_nth(&fk, "/api/v1/test_op", 11)->retry_count, "11");
  tb_future_free(f);
  teardown();
}

TEST(submit_connection_refused) {
  ASSERT_OK(uv_loop_init(&loop));
  /* A port nothing listens on: bind one, learn it, close it. */
  fake_start(&fk, &loop);
  tb_client_config_t c = fake_config(&fk);
  fake_stop(&fk);
  c.max_retries = 3;
  rt_start(&rt, &loop, &c);
  tb_future_t *f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_ECONNREFUSED);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_NETWORK);
  ASSERT_EQ_INT(tele_count("http.retry"), 3);
  tb_future_free(f);
  rt_stop(&rt);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST(submit_without_request_id_fails) {
  static const fake_resp_t S[] = { { 200, "{\"model_id\":\"m\"}" } };
  static const fake_resp_t P[] = { { 200, "{}" } };
  setup(NULL);
  SCRIPT(S, P);
  tb_future_t *f = start_polled(&rt);
  ASSERT_ERR(run(f), TB_EFIELD);
  ASSERT_STR_CONTAINS(f->error.message, "request_id");
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 0);
  tb_future_free(f);
  teardown();
}

/* ------------------------------------------------------------ units */

static tb__http_response_t response_with(int status, const char *name, const char *value,
                                        tb__http_header_t *h) {
  h->name = (tb_slice_t){ name, strlen(name) };
  h->value = (tb_slice_t){ value, strlen(value) };
  tb__http_response_t r = { .status = status, .headers = h, .n_headers = 1 };
  return r;
}

TEST(retry_after_parsing) {
  tb__http_header_t h;
  tb__http_response_t r = response_with(429, "retry-after-ms", "250", &h);
  ASSERT_EQ_INT(tb__retry_after_ms(&r, 60000), 250);
  r = response_with(429, "Retry-After", "2", &h);
  ASSERT_EQ_INT(tb__retry_after_ms(&r, 60000), 2000);
  r = response_with(429, "Retry-After", "1.5", &h);
  ASSERT_EQ_INT(tb__retry_after_ms(&r, 60000), 1500);
  r = response_with(429, "Retry-After", "61", &h);
  ASSERT_EQ_INT(tb__retry_after_ms(&r, 60000), -1);  /* over the cap */
  r = response_with(429, "Retry-After", "0", &h);
  ASSERT_EQ_INT(tb__retry_after_ms(&r, 60000), -1);
  r = response_with(429, "Retry-After", "soon", &h);
  ASSERT_EQ_INT(tb__retry_after_ms(&r, 60000), -1);
  /* An HTTP date 30 s ahead. */
  char date[64];
  time_t t = time(NULL) + 30;
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  r = response_with(429, "Retry-After", date, &h);
  int64_t ms = tb__retry_after_ms(&r, 60000);
  ASSERT_GE(ms, 28000);
  ASSERT_LE(ms, 30000);
  r = response_with(500, "x-other", "1", &h);
  ASSERT_EQ_INT(tb__call_should_retry_status(&r), 1);
  r.status = 404;
  ASSERT_EQ_INT(tb__call_should_retry_status(&r), 0);
  r = response_with(404, "x-should-retry", "true", &h);
  ASSERT_EQ_INT(tb__call_should_retry_status(&r), 1);
}

TEST(queue_state_parsing) {
  ASSERT_EQ_INT(tb__queue_state_parse(" Active ", 8), TB_QUEUE_ACTIVE);
  ASSERT_EQ_INT(tb__queue_state_parse("paused_rate_limit", 17),
                TB_QUEUE_PAUSED_RATE_LIMIT);
  ASSERT_EQ_INT(tb__queue_state_parse("PAUSED_CAPACITY", 15), TB_QUEUE_PAUSED_CAPACITY);
  ASSERT_EQ_INT(tb__queue_state_parse("provider", 8), TB_QUEUE_UNKNOWN);
  ASSERT_EQ_INT(tb__queue_state_parse("", 0), TB_QUEUE_UNKNOWN);
}

TEST(config_resolution) {
  tb__config_t c;
  tb_error_t err = { 0 };
  setenv("TINKER_BASE_URL", "http://example.test:9000/prefix/", 1);
  setenv("TINKER_API_KEY", "tml-from-env", 1);
  ASSERT_OK(tb__config_resolve(NULL, &c, &err));
  ASSERT_STR_EQ(c.base_url, "http://example.test:9000/prefix");
  ASSERT_STR_EQ(c.api_key, "tml-from-env");
  ASSERT_EQ_INT(c.max_retries, 10);
  ASSERT_EQ_INT(c.http_timeout_ms, 60000);
  ASSERT_EQ_INT(c.poll_http_timeout_ms, 45000);
  ASSERT_EQ_INT(c.poll_deadline_ms, 0);
  ASSERT_EQ_INT(c.retry_base_ms, 500);
  ASSERT_EQ_INT(c.retry_max_ms, 10000);
  ASSERT_EQ_INT(c.heartbeat_interval_ms, 10000);
  tb__config_free(&c);
  tb_client_config_t in = { .base_url = "http://127.0.0.1:1", .api_key = "tml-x",
                            .max_retries = -1 };
  ASSERT_OK(tb__config_resolve(&in, &c, &err));
  ASSERT_STR_EQ(c.base_url, "http://127.0.0.1:1");
  ASSERT_STR_EQ(c.api_key, "tml-x");
  ASSERT_EQ_INT(c.max_retries, 0);
  tb__config_free(&c);
  unsetenv("TINKER_BASE_URL");
  unsetenv("TINKER_API_KEY");
  ASSERT_OK(tb__config_resolve(NULL, &c, &err));
  ASSERT_STR_EQ(c.base_url, TB_CLIENT_DEFAULT_BASE_URL);
  ASSERT(c.api_key == NULL);
  tb__config_free(&c);
  in.base_url = "ftp://host";
  ASSERT_ERR(tb__config_resolve(&in, &c, &err), TB_EURL);
  ASSERT_STR_CONTAINS(err.message, "ftp://host");
  in.base_url = "http://h";
  in.api_key = "tml-\r\nX-Evil: 1";
  ASSERT_ERR(tb__config_resolve(&in, &c, &err), TB_EINVAL);
  in.api_key = NULL;
  in.poll_backoff_initial_ms = 100;
  in.poll_backoff_max_ms = 10;
  ASSERT_ERR(tb__config_resolve(&in, &c, &err), TB_EINVAL);
  tb_error_clear(&err);
}

TEST_LIST(
  TEST_ENTRY(poll_stalled_once_per_stall),
  TEST_ENTRY(poll_stalled_while_an_answer_is_held),
  TEST_ENTRY(poll_bare_result),
  TEST_ENTRY(poll_wrapped_completed_and_metadata_only),
  TEST_ENTRY(poll_protobuf_result),
  TEST_ENTRY(poll_queue_state_transitions),
  TEST_ENTRY(poll_pending_backoff),
  TEST_ENTRY(poll_408_storm_and_5xx),
  TEST_ENTRY(poll_429_honours_retry_after),
  TEST_ENTRY(poll_dropped_connections),
  TEST_ENTRY(poll_slow_answer_against_http_timeout),
  TEST_ENTRY(poll_empty_400_retried_three_times),
  TEST_ENTRY(poll_410_expired),
  TEST_ENTRY(poll_user_failure_is_immediate),
  TEST_ENTRY(poll_server_failure_retried_until_deadline),
  TEST_ENTRY(poll_deadline_without_failure_is_timeout),
  TEST_ENTRY(poll_other_status_is_fatal),
  TEST_ENTRY(submit_retries_keep_the_idempotency_key),
  TEST_ENTRY(submit_x_should_retry_and_limits),
  TEST_ENTRY(submit_slow_answer_is_retried_after_its_timeout),
  TEST_ENTRY(submit_retry_count_past_nine),
  TEST_ENTRY(submit_connection_refused),
  TEST_ENTRY(submit_without_request_id_fails),
  TEST_ENTRY(retry_after_parsing),
  TEST_ENTRY(queue_state_parsing),
  TEST_ENTRY(config_resolution),
)

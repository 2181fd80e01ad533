/*
 * Futures: callbacks, ownership of results, waits and their timeouts,
 * cancellation, TB_ENESTED, wait_many (order, no short-circuit, one
 * deadline), closing the runtime with work in flight, and 10,000 futures
 * in flight on one loop against the scripted fake server.
 */
#include "test_client_fake.h"

static uv_loop_t loop;
static fake_t fk;
static tb__rt_t rt;

static const fake_resp_t SUBMIT_OK[] = { { 200, "{\"request_id\":\"req-1\"}" } };
static const fake_resp_t RESULT[] = { { 200, "{\"r\":1}" } };
static const fake_resp_t PENDING[] = { { 200, "{\"status\":\"pending\"}" } };

/* A new loop and fake server that accepts one submission and answers
 * its polls with poll; the client's config for it. */
static tb_client_config_t fake_setup(const fake_resp_t *poll, size_t n_poll) {
  ASSERT_OK(uv_loop_init(&loop));
  fake_start(&fk, &loop);
  fk.submit = SUBMIT_OK;
  fk.n_submit = 1;
  fk.poll = poll;
  fk.n_poll = n_poll;
  return fake_config(&fk);
}

static void setup(const fake_resp_t *poll, size_t n_poll, uint64_t pending_ms) {
  tb_client_config_t c = fake_setup(poll, n_poll);
  if (pending_ms) {
    c.poll_backoff_initial_ms = pending_ms;
    c.poll_backoff_max_ms = pending_ms;
  }
  rt_start(&rt, &loop, &c);
}

static void teardown(void) {
  rt_stop(&rt);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------------ callbacks */

static int cb_calls, cb_status;
static int inside_cancel;

static void count_cb(tb_future_t *f, int status) {
  ASSERT(!inside_cancel);
  ASSERT(tb_future_is_done(f));
  ASSERT_EQ_INT(status, f->status);
  cb_calls++;
  cb_status = status;
}

TEST(callback_and_result_ownership) {
  setup(RESULT, 1, 0);
  tb_future_t *f = start_polled(&rt);
  ASSERT(!tb_future_is_done(f));
  ASSERT(tb_future_result(f, &tb_result_string) == NULL);
  cb_calls = 0;
  ASSERT_OK(tb_future_set_callback(f, count_cb));
  ASSERT_OK(tb_future_wait(f, 0));
  ASSERT_EQ_INT(cb_calls, 1);
  ASSERT_EQ_INT(cb_status, 0);
  ASSERT_EQ_INT(f->state, TB_FUTURE_DONE);
  ASSERT_ERR(tb_future_set_callback(f, count_cb), TB_EBUSY);
  ASSERT_ERR(tb_future_cancel(f), TB_EBUSY);
  /* Another type gets nothing; take hands the result over once. */
  ASSERT(tb_future_result(f, &tb_result_server_capabilities) == NULL);
  char *s = tb_future_take(f, &tb_result_string);
  ASSERT_STR_EQ(s, "{\"r\":1}");
  ASSERT(tb_future_take(f, &tb_result_string) == NULL);
  tb_result_string.free(s);
  ASSERT_OK(tb_future_wait(f, 10));  /* done: returns at once */
  tb_future_free(f);
  tb_future_free(NULL);
  ASSERT_ERR(tb_future_set_callback(NULL, count_cb), TB_EINVAL);
  ASSERT_ERR(tb_future_wait(NULL, 0), TB_EINVAL);
  ASSERT_ERR(tb_future_cancel(NULL), TB_EINVAL);
  teardown();
}

static void free_in_cb(tb_future_t *f, int status) {
  cb_calls++;
  tb_future_free(f);
}

TEST(free_inside_callback_and_free_pending) {
  setup(RESULT, 1, 0);
  tb_future_t *f = start_polled(&rt);
  cb_calls = 0;
  ASSERT_OK(tb_future_set_callback(f, free_in_cb));
  while (cb_calls == 0)
    uv_run(&loop, UV_RUN_ONCE);
  /* A pending future freed: no callback, nothing leaks (ASan). */
  tb_future_t *g = start_polled(&rt);
  ASSERT_OK(tb_future_set_callback(g, count_cb));
  cb_calls = 0;
  tb_future_free(g);
  for (int i = 0; i < 20; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  ASSERT_EQ_INT(cb_calls, 0);
  teardown();
}

/* ------------------------------------------------------------ cancel */

TEST(cancel_during_backoff_and_during_http) {
  setup(PENDING, 1, 60000);  /* the second poll would be a minute away */
  tb_future_t *f = start_polled(&rt);
  ASSERT_OK(tb_future_set_callback(f, count_cb));
  cb_calls = 0;
  while (fake_count(&fk, POLL_PATH) < 1)
    uv_run(&loop, UV_RUN_ONCE);
  for (int i = 0; i < 5; i++)
    uv_run(&loop, UV_RUN_NOWAIT);  /* the pending answer is in: backoff */
  inside_cancel = 1;
  ASSERT_OK(tb_future_cancel(f));
  inside_cancel = 0;
  ASSERT_ERR(tb_future_cancel(f), TB_EBUSY);
  ASSERT_EQ_INT(cb_calls, 0);
  ASSERT_ERR(tb_future_wait(f, 10000), TB_ECANCELED);
  ASSERT_EQ_INT(cb_calls, 1);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_CANCELLED);
  ASSERT_STR_EQ(f->error.request_id, "req-1");
  tb_future_free(f);
  teardown();

  /* While the long poll is held by the server. */
  static const fake_resp_t SLOW[] = { { 200, "{\"r\":1}", NULL, NULL, NULL, 5000 } };
  setup(SLOW, 1, 0);
  f = start_polled(&rt);
  while (fake_count(&fk, POLL_PATH) < 1)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_OK(tb_future_cancel(f));
  uint64_t t0 = uv_now(&loop);
  ASSERT_ERR(tb_future_wait(f, 0), TB_ECANCELED);
  ASSERT_LT(uv_now(&loop) - t0, 4000);
  tb_future_free(f);
  teardown();

  /* While the submission is in flight. */
  static const fake_resp_t SLOW_SUBMIT[] = {
    { 200, "{\"request_id\":\"req-1\"}", NULL, NULL, NULL, 5000 } };
  setup(RESULT, 1, 0);
  fk.submit = SLOW_SUBMIT;
  f = start_polled(&rt);
  ASSERT_OK(tb_future_cancel(f));
  ASSERT_ERR(tb_future_wait(f, 0), TB_ECANCELED);
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 0);
  tb_future_free(f);
  teardown();
}

static tb_future_t *to_cancel;

static void cancel_from_observer(const tb_queue_state_event_t *ev) {
  ASSERT_OK(tb_future_cancel(to_cancel));
  ASSERT(!tb_future_is_done(to_cancel));
}

TEST(cancel_from_a_hook) {
  static const fake_resp_t P[] = {
    { 200, "{\"type\":\"try_again\",\"request_id\":\"req-1\","
           "\"queue_state\":\"paused_capacity\"}" },
    { 200, "{\"r\":1}" },
  };
  tb_client_config_t c = fake_setup(P, 2);
  c.queue_observer = cancel_from_observer;
  rt_start(&rt, &loop, &c);
  to_cancel = start_polled(&rt);
  ASSERT_ERR(tb_future_wait(to_cancel, 0), TB_ECANCELED);
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), 1);  /* no poll after the cancel */
  tb_future_free(to_cancel);
  teardown();
}

/* ------------------------------------------------------------ waits */

TEST(wait_timeout_leaves_the_future_pending) {
  setup(PENDING, 1, 60000);
  tb_future_t *f = start_polled(&rt);
  uint64_t t0 = uv_now(&loop);
  ASSERT_ERR(tb_future_wait(f, 150), TB_ETIMEDOUT);
  ASSERT_GE(uv_now(&loop) - t0, 150);
  ASSERT(!tb_future_is_done(f));
  ASSERT_EQ_INT(f->error.code, 0);
  /* The wait's timeout is not the operation's: it still goes on. */
  ASSERT_OK(tb_future_cancel(f));
  ASSERT_ERR(tb_future_wait(f, 0), TB_ECANCELED);
  tb_future_free(f);
  teardown();
}

static void no_cancel(tb_future_t *f) {}

TEST(wait_on_a_loop_with_nothing_left) {
  ASSERT_OK(uv_loop_init(&loop));
  tb_future_t *f = tb__client_future_new(&loop);
  ASSERT(f != NULL);
  tb__client_future_set_driver(f, no_cancel, NULL);
  ASSERT_ERR(tb_future_wait(f, 0), TB_EIO);
  int st[1] = { 0 };
  ASSERT_ERR(tb_future_wait_many(&f, 1, 0, st), TB_EIO);
  ASSERT_ERR(st[0], TB_EIO);
  /* With a timeout the wait ends by it instead. */
  ASSERT_ERR(tb_future_wait(f, 20), TB_ETIMEDOUT);
  tb_error_t e = { 0 };
  tb_error_set(&e, TB_EUSER, TB_CATEGORY_USER, "done by hand");
  tb__client_future_fail(f, &e);
  ASSERT_ERR(tb_future_wait(f, 0), TB_EUSER);
  ASSERT_STR_EQ(f->error.message, "done by hand");
  tb_future_free(f);
  ASSERT_LOOP_CLOSE(&loop);
}

static tb_future_t *other;
static int nested_rc;

static void nested_wait_cb(tb_future_t *f, int status) {
  nested_rc = tb_future_wait(other, 1000);
  int st[1];
  ASSERT_ERR(tb_future_wait_many(&other, 1, 1000, st), TB_ENESTED);
}

static void nested_telemetry(const tb_telemetry_event_t *ev) {
  if (other != NULL && !tb_future_is_done(other))
    ASSERT_ERR(tb_future_wait(other, 10), TB_ENESTED);
}

static int timer_rc;
static void nested_timer_cb(uv_timer_t *t) {
  timer_rc = tb_future_wait(other, 10);
  uv_close((uv_handle_t *)t, NULL);
}

TEST(nested_wait_is_refused) {
  setup(RESULT, 1, 0);
  tb_future_t *f = start_polled(&rt);
  other = start_polled(&rt);
  nested_rc = 0;
  ASSERT_OK(tb_future_set_callback(f, nested_wait_cb));
  /* The callback runs under the host's own uv_run. */
  while (!tb_future_is_done(f))
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_ERR(nested_rc, TB_ENESTED);
  ASSERT_OK(tb_future_wait(other, 0));
  tb_future_free(f);
  tb_future_free(other);

  /* A callback of the host's own handle while tb_future_wait runs the loop. */
  static const fake_resp_t SLOW[] = { { 200, "{\"r\":1}", NULL, NULL, NULL, 100 } };
  fk.poll = SLOW;
  f = start_polled(&rt);
  other = f;
  uv_timer_t t;
  ASSERT_OK(uv_timer_init(&loop, &t));
  uv_timer_start(&t, nested_timer_cb, 10, 0);
  timer_rc = 0;
  ASSERT_OK(tb_future_wait(f, 0));
  ASSERT_ERR(timer_rc, TB_ENESTED);
  tb_future_free(f);
  other = NULL;
  teardown();

  /* From a telemetry hook. */
  tb_client_config_t c = fake_setup(RESULT, 1);
  c.telemetry = nested_telemetry;
  rt_start(&rt, &loop, &c);
  other = start_polled(&rt);
  while (!tb_future_is_done(other))
    uv_run(&loop, UV_RUN_ONCE);
  tb_future_free(other);
  other = NULL;
  teardown();
}

TEST(wait_many_order_and_no_short_circuit) {
  setup(RESULT, 1, 0);
  /* Each future gets its own answer: fail fast for the first, later
   * results for the others. */
  static const fake_resp_t P[] = {
    { 200, "{\"error\":\"bad input\",\"category\":\"user\"}" },
    { 200, "{\"r\":1}", NULL, NULL, NULL, 100 },
    { 200, "{\"r\":2}", NULL, NULL, NULL, 50 },
  };
  fk.poll = P;
  fk.n_poll = 3;
  tb_future_t *fs[3];
  for (int i = 0; i < 3; i++) {
    fs[i] = start_polled(&rt);
    /* One at a time so that the script order is the future order. */
    while (fake_count(&fk, POLL_PATH) < (size_t)i + 1)
      uv_run(&loop, UV_RUN_ONCE);
  }
  int st[3] = { 99, 99, 99 };
  ASSERT_ERR(tb_future_wait_many(fs, 3, 0, st), TB_EUSER);
  ASSERT_ERR(st[0], TB_EUSER);
  ASSERT_OK(st[1]);
  ASSERT_OK(st[2]);
  ASSERT_STR_EQ(tb_future_result(fs[1], &tb_result_string), "{\"r\":1}");
  ASSERT_STR_EQ(tb_future_result(fs[2], &tb_result_string), "{\"r\":2}");
  ASSERT_OK(tb_future_wait_many(fs + 1, 2, 0, NULL));
  ASSERT_OK(tb_future_wait_many(NULL, 0, 0, NULL));
  tb_future_t *bad[2] = { fs[0], NULL };
  ASSERT_ERR(tb_future_wait_many(bad, 2, 0, NULL), TB_EINVAL);
  for (int i = 0; i < 3; i++)
    tb_future_free(fs[i]);
  teardown();
}

TEST(wait_many_one_deadline) {
  static const fake_resp_t P[] = { { 200, "{\"r\":1}" }, { 200, "{\"status\":\"pending\"}" } };
  setup(P, 2, 60000);
  tb_future_t *fs[2];
  fs[0] = start_polled(&rt);
  while (fake_count(&fk, POLL_PATH) < 1)
    uv_run(&loop, UV_RUN_ONCE);
  fs[1] = start_polled(&rt);
  int st[2];
  uint64_t t0 = uv_now(&loop);
  ASSERT_ERR(tb_future_wait_many(fs, 2, 200, st), TB_ETIMEDOUT);
  uint64_t took = uv_now(&loop) - t0;
  ASSERT_GE(took, 200);
  ASSERT_LT(took, 20000);
  ASSERT_OK(st[0]);
  ASSERT_ERR(st[1], TB_ETIMEDOUT);
  ASSERT(!tb_future_is_done(fs[1]));
  tb_future_free(fs[0]);
  tb_future_free(fs[1]);  /* pending: cancelled and released */
  teardown();
}

/* ------------------------------------------------------------ close */

TEST(close_cancels_work_in_flight) {
  setup(PENDING, 1, 60000);
  tb_future_t *f = start_polled(&rt);
  tb_future_t *g = start_polled(&rt);
  cb_calls = 0;
  ASSERT_OK(tb_future_set_callback(f, count_cb));
  while (fake_count(&fk, POLL_PATH) < 1)
    uv_run(&loop, UV_RUN_ONCE);
  /* The owner cancels its operations, as the service client's close does;
   * the runtime then waits for them. */
  tb__client_op_cancel_all(&rt);
  tb__rt_close(&rt, on_rt_closed);
  rt_closed = 0;
  /* New work is refused while closing. */
  tb__client_op_opts_t o = { .path = "/api/v1/x", .max_retries = -1 };
  tb_future_t *h = NULL;
  ASSERT_ERR(tb__client_op_start(&rt, &o, &h), TB_ECLOSING);
  ASSERT(h == NULL);
  while (!rt_closed)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_EQ_INT(cb_calls, 1);
  ASSERT_ERR(cb_status, TB_ECANCELED);
  ASSERT_ERR(g->status, TB_ECANCELED);
  tb_future_free(f);
  tb_future_free(g);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------------ alarms */

#define N_ALARMS 300

static tb__alarm_t alarms[N_ALARMS];
static int fired[N_ALARMS], n_fired;
static uint64_t fire_due[2 * N_ALARMS];
static uint64_t fired_at[N_ALARMS];

static void on_test_alarm(tb__alarm_t *a) {
  int i = (int)(a - alarms);
  fired[i]++;
  fired_at[i] = uv_now(&loop);
  fire_due[n_fired++] = a->due;
  /* Re-arming from inside a sweep runs on a later one, never this one. */
  if (i % 10 == 0 && fired[i] == 1)
    ASSERT_OK(tb__alarm_start(&rt, a, 0));
}

TEST(alarms_fire_in_due_order) {
  ASSERT_OK(uv_loop_init(&loop));
  tb_client_config_t c = { .base_url = "http://127.0.0.1:9" };
  rt_start(&rt, &loop, &c);
  unsigned seed = 7;
  uint64_t t0 = uv_now(&loop);
  for (int i = 0; i < N_ALARMS; i++) {
    tb__alarm_init(&alarms[i], on_test_alarm, NULL);
    seed = seed * 1103515245u + 12345u;
    ASSERT_OK(tb__alarm_start(&rt, &alarms[i], (seed >> 16) % 60));
  }
  /* Re-arm some, stop others. */
  for (int i = 1; i < N_ALARMS; i += 7)
    ASSERT_OK(tb__alarm_start(&rt, &alarms[i], 80));
  for (int i = 3; i < N_ALARMS; i += 5)
    tb__alarm_stop(&rt, &alarms[i]);
  ASSERT_OK(tb__alarm_reserve(&rt, 1000));
  ASSERT_GE(rt.cap_heap, 1000);
  tb__alarm_unreserve(&rt, 1000);
  while (rt.n_heap > 0)
    uv_run(&loop, UV_RUN_ONCE);
  for (int i = 0; i < N_ALARMS; i++) {
    int stopped = i >= 3 && (i - 3) % 5 == 0;
    int want = stopped ? 0 : (i % 10 == 0 ? 2 : 1);
    ASSERT_EQ_INT(fired[i], want);
    if (!stopped && (i - 1) % 7 == 0 && i >= 1)
      ASSERT_GE(fired_at[i] - t0, 80);
  }
  /* Each alarm fires no earlier than its due time, in due order. */
  for (int k = 1; k < n_fired; k++)
    ASSERT_LE(fire_due[k - 1], fire_due[k]);
  rt_stop(&rt);
  ASSERT_LOOP_CLOSE(&loop);
}

/* Held polls (a long-polling server) take at most three quarters of the
 * connections, and hold no HTTP request while they wait for one: a
 * submission made meanwhile is answered at once, not behind the polls. */
static fake_resp_t decide_held(fake_t *f, tb__http_request_t *req, int is_poll) {
  fake_resp_t r = { 200, "{\"request_id\":\"held\"}" };
  if (is_poll) {
    r.body = "{\"r\":1}";
    r.delay_ms = 150;
  } else if (tb__slice_eq_str(req->path, "/api/v1/direct")) {
    r.body = "{\"d\":1}";
  }
  return r;
}

TEST(held_polls_leave_a_connection_to_submissions) {
  ASSERT_OK(uv_loop_init(&loop));
  fake_start(&fk, &loop);
  fk.decide = decide_held;
  tb_client_config_t c = fake_config(&fk);
  c.max_connections = 4;
  rt_start(&rt, &loop, &c);
  ASSERT_EQ_INT(rt.max_poll_wires, 3);
  tb_future_t *fs[8];
  for (int i = 0; i < 8; i++)
    fs[i] = start_polled(&rt);
  /* Three polls held, the others waiting with no request of their own. */
  while (rt.n_wires_lent < 3 || rt.pq_head == NULL)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_EQ_INT(rt.n_wires, 3);
  tb__client_op_opts_t o = { .path = "/api/v1/direct", .body = "{}", .body_len = 2,
                             .max_retries = -1, .decode = decode_text };
  tb_future_t *d = NULL;
  uint64_t t0 = uv_now(&loop);
  ASSERT_OK(tb__client_op_start(&rt, &o, &d));
  ASSERT_OK(tb_future_wait(d, 60000));
  ASSERT_LT(uv_now(&loop) - t0, 120);  /* not behind a 150 ms poll */
  ASSERT_STR_EQ(tb_future_result(d, &tb_result_string), "{\"d\":1}");
  tb_future_free(d);
  ASSERT_OK(tb_future_wait_many(fs, 8, 60000, NULL));
  ASSERT_EQ_INT(rt.n_wires, 3);
  ASSERT_EQ_INT(rt.n_wires_lent, 0);
  for (int i = 0; i < 8; i++)
    tb_future_free(fs[i]);
  rt_stop(&rt);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------------ scale */

/* Each submission {"i": N} gets the id "rN"; the first poll of every
 * third id answers try_again, every other poll the result naming the id. */
static fake_resp_t decide_many(fake_t *f, tb__http_request_t *req, int is_poll) {
  static char buf[128];
  fake_resp_t r = { 200, buf };
  json_t *doc = json_loadb(req->body.base, req->body.len, 0, NULL);
  if (!is_poll) {
    json_t *i = json_object_get(doc, "i");
    ASSERT(json_is_integer(i));
    snprintf(buf, sizeof(buf), "{\"request_id\":\"r%lld\"}", (long long)json_integer_value(i));
    json_decref(doc);
    return r;
  }
  const char *id = json_string_value(json_object_get(doc, "request_id"));
  ASSERT(id != NULL);
  unsigned long n = strtoul(id + 1, NULL, 10);
  const tb__http_header_t *it = tb__http_request_header(req, "x-tinker-request-iteration");
  int first = it != NULL && it->value.len == 1 && it->value.base[0] == '0';
  if (n % 3 == 0 && first)
    snprintf(buf, sizeof(buf), "{\"type\":\"try_again\",\"request_id\":\"%s\","
             "\"queue_state\":\"active\"}", id);
  else
    snprintf(buf, sizeof(buf), "{\"id\":\"%s\"}", id);
  json_decref(doc);
  return r;
}

#define N_MANY 10000

TEST(ten_thousand_futures_in_flight) {
  ASSERT_OK(uv_loop_init(&loop));
  fake_start(&fk, &loop);
  fk.decide = decide_many;
  tb_client_config_t c = fake_config(&fk);
  c.telemetry = NULL;
  c.max_connections = 64;
  rt_start(&rt, &loop, &c);
  tb_future_t **fs = calloc(N_MANY, sizeof(*fs));
  int *st = calloc(N_MANY, sizeof(*st));
  ASSERT(fs != NULL && st != NULL);
  for (size_t i = 0; i < N_MANY; i++) {
    char body[32];
    int n = snprintf(body, sizeof(body), "{\"i\":%zu}", i);
    tb__client_op_opts_t o = { .path = "/api/v1/test_op", .body = body, .body_len = (size_t)n,
                               .max_retries = -1, .poll = 1, .decode = decode_text };
    ASSERT_OK(tb__client_op_start(&rt, &o, &fs[i]));
  }
  ASSERT_EQ_INT(rt.n_ops, N_MANY);
  ASSERT_OK(tb_future_wait_many(fs, N_MANY, 0, st));
  for (size_t i = 0; i < N_MANY; i++) {
    ASSERT_OK(st[i]);
    char want[64];
    snprintf(want, sizeof(want), "{\"id\":\"r%zu\"}", i);
    ASSERT_STR_EQ(tb_future_result(fs[i], &tb_result_string), want);
    tb_future_free(fs[i]);
  }
  ASSERT_EQ_INT(rt.n_ops, 0);
  ASSERT_EQ_INT(fake_count(&fk, POLL_PATH), N_MANY + (N_MANY + 2) / 3);
  free(fs);
  free(st);
  rt_stop(&rt);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST_LIST(
  TEST_ENTRY(held_polls_leave_a_connection_to_submissions),
  TEST_ENTRY(callback_and_result_ownership),
  TEST_ENTRY(free_inside_callback_and_free_pending),
  TEST_ENTRY(cancel_during_backoff_and_during_http),
  TEST_ENTRY(cancel_from_a_hook),
  TEST_ENTRY(wait_timeout_leaves_the_future_pending),
  TEST_ENTRY(wait_on_a_loop_with_nothing_left),
  TEST_ENTRY(nested_wait_is_refused),
  TEST_ENTRY(wait_many_order_and_no_short_circuit),
  TEST_ENTRY(wait_many_one_deadline),
  TEST_ENTRY(close_cancels_work_in_flight),
  TEST_ENTRY(alarms_fire_in_due_order),
  TEST_ENTRY_TIMEOUT(ten_thousand_futures_in_flight, 300000),
)

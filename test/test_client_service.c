/*
 * The ServiceClient: the session created once on first use and shared, the
 * heartbeat (no retries, a warning after too long without success, a timer
 * that does not keep the loop alive), get_server_capabilities and the _sync
 * twins, close with work in flight -- against the scripted fake server, and
 * once against the real server on the same loop.
 */
#include "test_client_fake.h"

#include "test_tls_certs.h"
#include "server/internal.h"
#include "tinkerbell/server.h"

static uv_loop_t loop;
static fake_t fk;
static tb_service_client_t sc;
static int sc_closed;
static int in_close;

static void on_sc_closed(tb_service_client_t *c) {
  ASSERT(c == &sc);
  ASSERT(!in_close);
  sc_closed++;
}

static const char *caps_body = "{\"supported_models\":[{\"model_name\":\"base\","
                               "\"max_context_length\":512},{\"model_name\":\"other\"}]}";
static const char *heartbeat_body = "{\"type\":\"session_heartbeat\"}";
static int heartbeat_status = 200;
static int session_status = 200;
static uint64_t caps_delay;
static int close_status = 200;
static uint64_t close_delay;

static fake_resp_t decide_service(fake_t *f, tb__http_request_t *req, int is_poll) {
  fake_resp_t r = { 200, "{}" };
  if (tb__slice_eq_str(req->path, "/api/v1/create_session")) {
    r.status = session_status;
    r.body = session_status == 200 ? "{\"session_id\":\"sess-1\",\"type\":\"create_session\"}"
                                   : "{\"error\":\"sessions are full\",\"category\":\"user\"}";
    r.delay_ms = 20;
  } else if (tb__slice_eq_str(req->path, "/api/v1/session_heartbeat")) {
    r.status = heartbeat_status;
    r.body = heartbeat_status == 200 ? heartbeat_body : "{\"error\":\"down\"}";
  } else if (tb__slice_eq_str(req->path, "/api/v1/close_session")) {
    r.status = close_status;
    r.body = close_status == 200 ? "{\"type\":\"close_session\"}"
                                 : "{\"error\":\"session sess-1 was closed\","
                                   "\"category\":\"user\"}";
    r.delay_ms = close_delay;
  } else if (tb__slice_eq_str(req->path, "/api/v1/get_server_capabilities")) {
    r.body = caps_body;
    r.delay_ms = caps_delay;
  } else {
    r.status = 404;
    r.body = "{\"error\":\"no route\"}";
  }
  return r;
}

static void setup(tb_client_config_t *extra) {
  ASSERT_OK(uv_loop_init(&loop));
  fake_start(&fk, &loop);
  fk.decide = decide_service;
  heartbeat_status = 200;
  session_status = 200;
  caps_delay = 0;
  close_status = 200;
  close_delay = 0;
  tb_client_config_t c = fake_config(&fk);
  if (extra != NULL) {
    c.close_timeout_ms = extra->close_timeout_ms;
    c.keep_session_open = extra->keep_session_open;
    c.heartbeat_interval_ms = extra->heartbeat_interval_ms;
    c.heartbeat_warn_ms = extra->heartbeat_warn_ms;
    c.wait_timeout_ms = extra->wait_timeout_ms;
  }
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(&loop, &sc, &c, &err));
  sc_closed = 0;
}

static void close_sc(void) {
  in_close = 1;
  tb_service_client_close(&sc, on_sc_closed);
  in_close = 0;
  ASSERT_EQ_INT(sc_closed, 0);
  while (!sc_closed)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_EQ_INT(sc_closed, 1);
  ASSERT(sc.impl_ == NULL);
}

static void teardown(void) {
  close_sc();
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------------ session */

static int session_cb_calls;
static void session_cb(tb_future_t *f, int status) {
  ASSERT_OK(status);
  ASSERT_STR_EQ(tb_future_result(f, &tb_result_string), "sess-1");
  session_cb_calls++;
}

TEST(session_created_once_and_shared) {
  setup(NULL);
  ASSERT(sc.session_id == NULL);
  ASSERT_EQ_INT(fk.n_requests, 0);  /* nothing is sent at init */
  tb_future_t *a, *b, *c;
  ASSERT_OK(tb_service_client_session(&sc, &a));
  ASSERT_OK(tb_service_client_session(&sc, &b));
  session_cb_calls = 0;
  ASSERT_OK(tb_future_set_callback(a, session_cb));
  ASSERT_OK(tb_future_set_callback(b, session_cb));
  tb_future_t *both[2] = { a, b };
  ASSERT_OK(tb_future_wait_many(both, 2, 0, NULL));
  ASSERT_EQ_INT(session_cb_calls, 2);
  ASSERT_STR_EQ(sc.session_id, "sess-1");
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/create_session"), 1);
  const fake_log_t *l = fake_nth(&fk, "/api/v1/create_session", 0);
  ASSERT_STR_CONTAINS(l->body, "\"type\":\"create_session\"");
  ASSERT_STR_CONTAINS(l->body, "\"tags\":[]");
  /* Once it exists: a future completed on a later turn, no request. */
  ASSERT_OK(tb_service_client_session(&sc, &c));
  ASSERT(!tb_future_is_done(c));
  ASSERT_OK(tb_future_set_callback(c, session_cb));
  ASSERT_OK(tb_future_wait(c, 0));
  ASSERT_EQ_INT(session_cb_calls, 3);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/create_session"), 1);
  char *id = NULL;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_session_sync(&sc, &id, &err));
  ASSERT_STR_EQ(id, "sess-1");
  free(id);
  tb_future_free(a);
  tb_future_free(b);
  tb_future_free(c);
  teardown();
}

TEST(session_failure_is_shared_then_tried_again) {
  setup(NULL);
  session_status = 403;
  tb_future_t *a, *b;
  ASSERT_OK(tb_service_client_session(&sc, &a));
  ASSERT_OK(tb_service_client_session(&sc, &b));
  tb_future_t *both[2] = { a, b };
  int st[2];
  ASSERT_ERR(tb_future_wait_many(both, 2, 0, st), TB_EHTTP);
  ASSERT_ERR(st[1], TB_EHTTP);
  ASSERT_EQ_INT(a->error.http_status, 403);
  ASSERT_EQ_INT(b->error.category, TB_CATEGORY_USER);
  ASSERT_STR_CONTAINS(b->error.message, "sessions are full");
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/create_session"), 1);
  ASSERT(sc.session_id == NULL);
  tb_future_free(a);
  tb_future_free(b);
  session_status = 200;
  char *id = NULL;
  ASSERT_OK(tb_service_client_session_sync(&sc, &id, NULL));
  ASSERT_STR_EQ(id, "sess-1");
  free(id);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/create_session"), 2);
  teardown();
}

TEST(session_cancel_and_close_while_creating) {
  setup(NULL);
  tb_future_t *a, *b;
  ASSERT_OK(tb_service_client_session(&sc, &a));
  ASSERT_OK(tb_service_client_session(&sc, &b));
  ASSERT_OK(tb_future_cancel(a));
  ASSERT_ERR(tb_future_wait(a, 0), TB_ECANCELED);
  ASSERT(!tb_future_is_done(b));
  in_close = 1;
  tb_service_client_close(&sc, on_sc_closed);
  in_close = 0;
  ASSERT_ERR(tb_service_client_session(&sc, &a), TB_ECLOSING);
  while (!sc_closed)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_ERR(b->status, TB_ECANCELED);
  tb_future_free(b);
  tb_future_free(a);  /* the cancelled first one */
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST(session_request_carries_tags_metadata_and_project) {
  ASSERT_OK(uv_loop_init(&loop));
  fake_start(&fk, &loop);
  fk.decide = decide_service;
  tb_client_config_t c = fake_config(&fk);
  static const char *const tags[] = { "exp", " b ", "exp", "" };
  static const tb_telemetry_meta_t meta[] = { { "run", "r7" } };
  c.tags = tags;
  c.n_tags = 4;
  c.user_metadata = meta;
  c.n_user_metadata = 1;
  c.project_id = "proj-1";
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(&loop, &sc, &c, &err));
  sc_closed = 0;
  ASSERT_OK(tb_service_client_session_sync(&sc, NULL, &err));
  const char *body = fake_nth(&fk, "/api/v1/create_session", 0)->body;
  ASSERT_STR_CONTAINS(body, "\"tags\":[\"exp\",\"b\"]");
  ASSERT_STR_CONTAINS(body, "\"user_metadata\":{\"run\":\"r7\"}");
  ASSERT_STR_CONTAINS(body, "\"project_id\":\"proj-1\"");
  ASSERT_STR_CONTAINS(body, "\"sdk_version\":\"" TB_VERSION_STRING "\"");
  teardown();

  /* TINKER_TAGS when the config has none; bad input named at init. */
  tb__config_t rc;
  setenv("TINKER_TAGS", "a,b,,a, c", 1);
  ASSERT_OK(tb__config_resolve(NULL, &rc, &err));
  ASSERT_EQ_INT(rc.n_tags, 3);
  ASSERT_STR_EQ(rc.tags[0], "a");
  ASSERT_STR_EQ(rc.tags[2], "c");
  tb__config_free(&rc);
  unsetenv("TINKER_TAGS");
  static const char *const bad_tags[] = { "ok", "\xff\xfe" };
  tb_client_config_t b = { .tags = bad_tags, .n_tags = 2 };
  ASSERT_ERR(tb__config_resolve(&b, &rc, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "tags[1]");
  static const tb_telemetry_meta_t bad_meta[] = { { "k", NULL } };
  tb_client_config_t b2 = { .user_metadata = bad_meta, .n_user_metadata = 1 };
  ASSERT_ERR(tb__config_resolve(&b2, &rc, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "user_metadata[0]");
  tb_error_clear(&err);
}

/* ------------------------------------------------------------ heartbeat */

static void timer_closed_cb(uv_handle_t *h) { *(int *)h->data = 1; }

static void stop_timer_cb(uv_timer_t *t) {
  uv_close((uv_handle_t *)t, timer_closed_cb);
  uv_stop(t->loop);
}

/* Runs the loop for ms (the fake server keeps it alive meanwhile). */
static void run_for(uint64_t ms) {
  uv_timer_t t;
  int closed = 0;
  ASSERT_OK(uv_timer_init(&loop, &t));
  t.data = &closed;
  uv_timer_start(&t, stop_timer_cb, ms, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  while (!closed)
    uv_run(&loop, UV_RUN_ONCE);
}

TEST(heartbeat_runs_and_does_not_hold_the_loop) {
  tb_client_config_t o = { .heartbeat_interval_ms = 20, .heartbeat_warn_ms = 100000 };
  setup(&o);
  char *id = NULL;
  ASSERT_OK(tb_service_client_session_sync(&sc, &id, NULL));
  free(id);
  run_for(300);
  size_t n = fake_count(&fk, "/api/v1/session_heartbeat");
  ASSERT_GE(n, 3);
  ASSERT_STR_CONTAINS(fake_nth(&fk, "/api/v1/session_heartbeat", 0)->body, "\"sess-1\"");
  ASSERT_EQ_INT(tele_count("session.heartbeat_warning"), 0);
  /* Without the server's listener, nothing but the heartbeat is left: the
   * loop ends although the heartbeat goes on. */
  fake_stop(&fk);
  uv_run(&loop, UV_RUN_DEFAULT);
  close_sc();
  ASSERT_LOOP_CLOSE(&loop);
}

TEST(heartbeat_failures_warn_once_without_retries) {
  tb_client_config_t o = { .heartbeat_interval_ms = 20, .heartbeat_warn_ms = 100 };
  setup(&o);
  ASSERT_OK(tb_service_client_session_sync(&sc, NULL, NULL));
  heartbeat_status = 503;
  run_for(400);
  size_t n = fake_count(&fk, "/api/v1/session_heartbeat");
  ASSERT_GE(n, 3);
  for (size_t i = 0; i < n; i++)
    ASSERT_STR_EQ(fake_nth(&fk, "/api/v1/session_heartbeat", i)->retry_count, "0");
  ASSERT_EQ_INT(tele_count("session.heartbeat_warning"), 1);
  /* Success again ends the incident; a new one warns again. */
  heartbeat_status = 200;
  run_for(100);
  heartbeat_status = 503;
  run_for(400);
  ASSERT_EQ_INT(tele_count("session.heartbeat_warning"), 2);
  teardown();
}

/* ------------------------------------------------------------ closing the session */

TEST(close_closes_the_session) {
  setup(NULL);
  ASSERT_OK(tb_service_client_session_sync(&sc, NULL, NULL));
  close_sc();
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/close_session"), 1);
  const fake_log_t *l = fake_nth(&fk, "/api/v1/close_session", 0);
  ASSERT_STR_CONTAINS(l->body, "\"session_id\":\"sess-1\"");
  ASSERT_STR_CONTAINS(l->body, "\"type\":\"close_session\"");
  ASSERT_STR_EQ(l->retry_count, "0");
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST(close_without_a_session_or_kept_open_sends_nothing) {
  setup(NULL);
  close_sc();
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/close_session"), 0);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
  tb_client_config_t o = { .keep_session_open = 1 };
  setup(&o);
  ASSERT_OK(tb_service_client_session_sync(&sc, NULL, NULL));
  close_sc();
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/close_session"), 0);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST(close_does_not_hang_on_a_silent_or_gone_server) {
  /* A server that never answers: the close waits close_timeout_ms. */
  tb_client_config_t o = { .close_timeout_ms = 150 };
  setup(&o);
  ASSERT_OK(tb_service_client_session_sync(&sc, NULL, NULL));
  close_delay = 60000;
  uint64_t t0 = uv_now(&loop);
  close_sc();
  uint64_t took = uv_now(&loop) - t0;
  ASSERT_GE(took, 100);
  ASSERT_LT(took, 5000);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/close_session"), 1);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
  /* A server that is gone: refused at once, the close goes on. */
  setup(&o);
  ASSERT_OK(tb_service_client_session_sync(&sc, NULL, NULL));
  fake_stop(&fk);
  t0 = uv_now(&loop);
  close_sc();
  ASSERT_LT(uv_now(&loop) - t0, 5000);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST(close_session_future_and_sync) {
  tb_client_config_t o = { .heartbeat_interval_ms = 20, .heartbeat_warn_ms = 100000 };
  setup(&o);
  tb_future_t *f;
  ASSERT_ERR(tb_service_client_close_session(&sc, &f), TB_EINVAL);  /* no session yet */
  ASSERT_OK(tb_service_client_session_sync(&sc, NULL, NULL));
  ASSERT_OK(tb_service_client_close_session(&sc, &f));
  ASSERT_OK(tb_future_wait(f, 0));
  ASSERT(tb_future_result(f, NULL) == NULL);
  tb_future_free(f);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/close_session"), 1);
  /* No heartbeat any more, no new session, no second close. */
  size_t beats = fake_count(&fk, "/api/v1/session_heartbeat");
  run_for(100);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/session_heartbeat"), beats);
  ASSERT_ERR(tb_service_client_session(&sc, &f), TB_ECLOSING);
  ASSERT_ERR(tb_service_client_close_session(&sc, &f), TB_EINVAL);
  close_sc();
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/close_session"), 1);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
  /* The twin, against a server that says the session is gone. */
  setup(NULL);
  ASSERT_OK(tb_service_client_session_sync(&sc, NULL, NULL));
  close_status = 410;
  tb_error_t err = { 0 };
  ASSERT_ERR(tb_service_client_close_session_sync(&sc, &err), TB_EHTTP);
  ASSERT_EQ_INT(err.http_status, 410);
  ASSERT_STR_CONTAINS(err.message, "was closed");
  tb_error_clear(&err);
  teardown();
}

/* ------------------------------------------------------------ capabilities */

TEST(capabilities_future_and_sync) {
  setup(NULL);
  tb_future_t *f;
  ASSERT_OK(tb_service_client_get_server_capabilities(&sc, &f));
  ASSERT_OK(tb_future_wait(f, 0));
  const tb_server_capabilities_t *caps = tb_future_result(f, &tb_result_server_capabilities);
  ASSERT(caps != NULL);
  ASSERT_EQ_INT(caps->n_models, 2);
  ASSERT_STR_EQ(caps->models[0].model_name, "base");
  ASSERT_EQ_INT(caps->models[0].max_context_length, 512);
  ASSERT_STR_EQ(caps->models[1].model_name, "other");
  ASSERT_EQ_INT(caps->models[1].max_context_length, -1);
  tb_future_free(f);
  ASSERT_EQ_INT(fake_count(&fk, "/api/v1/create_session"), 0);  /* needs none */
  ASSERT_STR_EQ(fake_nth(&fk, "/api/v1/get_server_capabilities", 0)->idem, "");  /* GET */

  tb_server_capabilities_t *c2 = NULL;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_get_server_capabilities_sync(&sc, &c2, &err));
  ASSERT_EQ_INT(c2->n_models, 2);
  tb_server_capabilities_free(c2);

  caps_body = "{\"supported_models\":[{\"model_name\":7}]}";
  ASSERT_ERR(tb_service_client_get_server_capabilities_sync(&sc, &c2, &err), TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "supported_models[0].model_name");
  ASSERT_EQ_INT(err.category, TB_CATEGORY_SERVER);
  tb_error_clear(&err);
  caps_body = "{\"supported_models\":[{\"model_name\":\"base\","
              "\"max_context_length\":512},{\"model_name\":\"other\"}]}";
  ASSERT_ERR(tb_service_client_get_server_capabilities(&sc, NULL), TB_EINVAL);
  teardown();
}

TEST(sync_wait_timeout_and_close_with_work_in_flight) {
  tb_client_config_t o = { .wait_timeout_ms = 100 };
  setup(&o);
  caps_delay = 3000;
  tb_server_capabilities_t *caps = NULL;
  tb_error_t err = { 0 };
  uint64_t t0 = uv_now(&loop);
  ASSERT_ERR(tb_service_client_get_server_capabilities_sync(&sc, &caps, &err), TB_ETIMEDOUT);
  ASSERT_LT(uv_now(&loop) - t0, 2500);
  ASSERT(caps == NULL);
  ASSERT_EQ_INT(err.category, TB_CATEGORY_TIMEOUT);
  tb_error_clear(&err);

  tb_future_t *f;
  ASSERT_OK(tb_service_client_get_server_capabilities(&sc, &f));
  while (fake_count(&fk, "/api/v1/get_server_capabilities") < 2)
    uv_run(&loop, UV_RUN_ONCE);
  close_sc();
  ASSERT_ERR(f->status, TB_ECANCELED);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_CANCELLED);
  tb_future_free(f);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

static tb_future_t *second;

static void close_from_callback(tb_future_t *f, int status) {
  ASSERT_OK(status);
  tb_service_client_close(&sc, on_sc_closed);
  tb_service_client_close(&sc, on_sc_closed);  /* a second close is a no-op */
  ASSERT_EQ_INT(sc_closed, 0);
  ASSERT(!tb_future_is_done(second));
  tb_future_free(f);
}

TEST(close_from_a_future_callback) {
  setup(NULL);
  caps_delay = 5000;  /* the second request is held */
  ASSERT_OK(tb_service_client_get_server_capabilities(&sc, &second));
  while (fake_count(&fk, "/api/v1/get_server_capabilities") < 1)
    uv_run(&loop, UV_RUN_ONCE);
  caps_delay = 0;
  tb_future_t *f;
  ASSERT_OK(tb_service_client_get_server_capabilities(&sc, &f));
  ASSERT_OK(tb_future_set_callback(f, close_from_callback));
  uint64_t t0 = uv_now(&loop);
  while (!sc_closed)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_LT(uv_now(&loop) - t0, 4000);
  ASSERT_EQ_INT(sc_closed, 1);
  ASSERT_ERR(second->status, TB_ECANCELED);
  tb_future_free(second);
  fake_stop(&fk);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST(init_errors) {
  ASSERT_OK(uv_loop_init(&loop));
  tb_client_config_t c = { .base_url = "localhost:8000" };
  tb_error_t err = { 0 };
  ASSERT_ERR(tb_service_client_init(&loop, &sc, &c, &err), TB_EURL);
  ASSERT_STR_CONTAINS(err.message, "localhost:8000");
  tb_error_clear(&err);
  ASSERT_ERR(tb_service_client_init(NULL, &sc, &c, NULL), TB_EINVAL);
  tb_future_t *f;
  tb_service_client_t zero = { 0 };
  ASSERT_ERR(tb_service_client_session(&zero, &f), TB_EINVAL);
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------------ real server */

TEST(against_the_real_server) {
  ASSERT_OK(uv_loop_init(&loop));
  tb_server_t server;
  tb_server_options_t so = { 0 };
  ASSERT_OK(tb_server_init(&loop, &server, &so));
  ASSERT_OK(tb_server_start_training(&server, NULL, 0, 1));
  ASSERT_OK(tb_server_listen(&server, "127.0.0.1", 0));
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d", tb_server_port(&server));
  memset(&tele, 0, sizeof(tele));
  tele.meta_key = "path";
  tb_client_config_t c = { .base_url = url, .heartbeat_interval_ms = 50,
                           .telemetry = tele_hook, .telemetry_data = &tele };
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(&loop, &sc, &c, &err));
  sc_closed = 0;

  char *id = NULL;
  int rc = tb_service_client_session_sync(&sc, &id, &err);
  if (rc != 0)
    fprintf(stderr, "session: %s\n", tb_error_message(&err));
  ASSERT_OK(rc);
  ASSERT(id != NULL && id[0] != '\0');
  ASSERT_STR_EQ(sc.session_id, id);
  free(id);

  /* "base" is announced once loaded (on the threadpool). */
  int found = 0;
  uint64_t give_up = uv_now(&loop) + 240000;  /* a slow sanitizer build loads it slowly */
  while (!found && uv_now(&loop) < give_up) {
    tb_server_capabilities_t *caps = NULL;
    rc = tb_service_client_get_server_capabilities_sync(&sc, &caps, &err);
    if (rc != 0)
      fprintf(stderr, "capabilities: %s\n", tb_error_message(&err));
    ASSERT_OK(rc);
    for (size_t i = 0; i < caps->n_models; i++)
      if (caps->models[i].model_name != NULL && strcmp(caps->models[i].model_name, "base") == 0)
        found = 1;
    tb_server_capabilities_free(caps);
    if (!found)
      run_for(50);
  }
  ASSERT(found);

  /* The heartbeat reaches the server and succeeds. */
  run_for(300);
  size_t ok = 0;
  for (size_t i = 0; i < tele.n; i++)
    if (strcmp(tele.names[i], "http.request.stop") == 0 &&
        strcmp(tele.meta[i], "/api/v1/session_heartbeat") == 0)
      ok++;
  ASSERT_GE(ok, 2);
  ASSERT_EQ_INT(tele_count("http.request.error"), 0);

  /* The close closes the session on the server. */
  tb__server_t *srv = tb__server_of(&server);
  ASSERT_EQ_INT(srv->sessions.n_live, 1);
  close_sc();
  ASSERT_EQ_INT(srv->sessions.n_live, 0);
  ASSERT_EQ_INT(srv->sessions.n_closed, 1);
  tb_server_close(&server, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&loop);
}

/* HTTPS to the real server: verified against its certificate as the CA,
 * refused by the system's store, accepted when verification is off. */
TEST(https_against_the_real_server) {
  certs_t certs;
  make_cert(&certs, "/tmp/tb-client-tls-XXXXXX", "tinkerbell client test");
  ASSERT_OK(uv_loop_init(&loop));
  tb_server_t server;
  tb_server_options_t so = { .tls_cert_file = certs.cert, .tls_key_file = certs.key };
  ASSERT_OK(tb_server_init(&loop, &server, &so));
  ASSERT_OK(tb_server_listen(&server, "127.0.0.1", 0));
  char url[64];
  snprintf(url, sizeof(url), "https://127.0.0.1:%d", tb_server_port(&server));

  for (int mode = 0; mode < 3; mode++) {
    tb_client_config_t c = { .base_url = url, .max_retries = -1 };
    if (mode == 0)
      c.tls_ca_file = certs.cert;
    else if (mode == 2)
      c.tls_insecure = 1;
    tb_error_t err = { 0 };
    ASSERT_OK(tb_service_client_init(&loop, &sc, &c, &err));
    sc_closed = 0;
    char *id = NULL;
    int rc = tb_service_client_session_sync(&sc, &id, &err);
    if (mode == 1) {
      ASSERT_ERR(rc, TB_ETLS);
      ASSERT_EQ_INT(err.category, TB_CATEGORY_NETWORK);
      ASSERT(id == NULL);
    } else {
      if (rc != 0)
        fprintf(stderr, "mode %d: %s\n", mode, tb_error_message(&err));
      ASSERT_OK(rc);
      ASSERT(id != NULL && id[0] != '\0');
    }
    free(id);
    tb_error_clear(&err);
    close_sc();
  }
  /* A CA file that cannot be read is named at init. */
  tb_client_config_t bad = { .base_url = url, .tls_ca_file = "/nonexistent/ca.pem" };
  tb_error_t err = { 0 };
  ASSERT_ERR(tb_service_client_init(&loop, &sc, &bad, &err), TB_ETLS);
  ASSERT_STR_CONTAINS(err.message, "/nonexistent/ca.pem");
  tb_error_clear(&err);

  tb_server_close(&server, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&loop);
  remove_certs(&certs);
}

TEST_LIST(
  TEST_ENTRY(close_closes_the_session),
  TEST_ENTRY(close_without_a_session_or_kept_open_sends_nothing),
  TEST_ENTRY(close_does_not_hang_on_a_silent_or_gone_server),
  TEST_ENTRY(close_session_future_and_sync),
  TEST_ENTRY(session_created_once_and_shared),
  TEST_ENTRY(session_failure_is_shared_then_tried_again),
  TEST_ENTRY(session_cancel_and_close_while_creating),
  TEST_ENTRY(session_request_carries_tags_metadata_and_project),
  TEST_ENTRY(heartbeat_runs_and_does_not_hold_the_loop),
  TEST_ENTRY(heartbeat_failures_warn_once_without_retries),
  TEST_ENTRY(capabilities_future_and_sync),
  TEST_ENTRY(sync_wait_timeout_and_close_with_work_in_flight),
  TEST_ENTRY(close_from_a_future_callback),
  TEST_ENTRY(init_errors),
  TEST_ENTRY_TIMEOUT(against_the_real_server, 300000),
  TEST_ENTRY(https_against_the_real_server),
)

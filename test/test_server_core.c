/*
 * The server core over loopback: the service routes (client config,
 * health, capabilities, telemetry, the index, metrics), sessions with
 * heartbeats and expiry, API keys and user isolation, the rate limit,
 * and bad input answered 400 with a path.
 */
#include "test_server_client.h"
#include "fixtures.h"

TEST(service_routes) {
  start_server(NULL);
  ASSERT_OK(tb_server_add_model(&server, "base", 2048));
  ASSERT_OK(tb_server_add_model(&server, "Qwen/Qwen3-8B", 32768));
  ASSERT_ERR(tb_server_add_model(&server, "base", 1), TB_EEXIST);
  ASSERT_ERR(tb_server_add_model(&server, "", 1), TB_EINVAL);

  hc_t *c = hc_do("POST", "/api/v1/client/config", NULL, "{\"sdk_version\":\"0.25.0\"}");
  ASSERT_EQ_INT(c->status, 200);
  json_t *v = hc_json(c);
  ASSERT(json_is_false(json_object_get(v, "use_pyqwest_transport")));
  ASSERT(json_is_false(json_object_get(v, "pjwt_auth_enabled")));
  ASSERT_EQ_INT(json_integer_value(json_object_get(v, "fwdbwd_max_chunk_len")), 1024);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "credential_default_source")),
                "api_key");
  json_decref(v);
  hc_free(c);
  hc_expect("POST", "/api/v1/client/dynamic_config", NULL, "{\"sdk_version\":\"0.25.0\"}",
            200, "\"refresh_interval_sec\":300");
  hc_expect("GET", "/api/v1/healthz", NULL, NULL, 200, "{\"status\":\"ok\"}");

  c = hc_do("GET", "/api/v1/get_server_capabilities", NULL, NULL);
  v = hc_json(c);
  json_t *models = json_object_get(v, "supported_models");
  ASSERT_EQ_INT(json_array_size(models), 2);
  ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(models, 1), "model_name")),
                "Qwen/Qwen3-8B");
  ASSERT_EQ_INT(json_integer_value(json_object_get(json_array_get(models, 1),
                                                   "max_context_length")), 32768);
  json_decref(v);
  hc_free(c);

  const char *tel = "{\"events\":[{\"event\":\"SESSION_START\"},{\"event\":\"GENERIC_EVENT\"}],"
                    "\"platform\":\"Linux\",\"sdk_version\":\"0.25.0\","
                    "\"session_id\":\"s\",\"process_uuid\":\"p\"}";
  hc_expect("POST", "/api/v1/telemetry", NULL, tel, 200, "{\"status\":\"accepted\"}");
  hc_expect("POST", "/api/v1/telemetry", NULL, "{\"events\":[{}]}", 200, "accepted");
  ASSERT_EQ_INT(srv->n_telemetry_batches, 2);
  ASSERT_EQ_INT(srv->n_telemetry_events, 3);

  /* The index lists every route of the table, both dialects. */
  c = hc_do("GET", "/", NULL, NULL);
  v = hc_json(c);
  json_t *eps = json_object_get(v, "endpoints");
  ASSERT_EQ_INT(json_array_size(eps), srv->n_routes);
  int seen_tinker = 0, seen_tinkerbell = 0;
  for (size_t i = 0; i < json_array_size(eps); i++) {
    json_t *e = json_array_get(eps, i);
    const char *p = json_string_value(json_object_get(e, "path"));
    ASSERT_STR_EQ(p, srv->routes[i]->pattern);
    seen_tinker += strcmp(p, "/api/v1/retrieve_future") == 0;
    seen_tinkerbell += strcmp(p, "/retrieve_future") == 0;
  }
  ASSERT_EQ_INT(seen_tinker, 1);
  ASSERT_EQ_INT(seen_tinkerbell, 1);
  json_decref(v);
  hc_free(c);
  /* A route added later shows up too. */
  ASSERT_OK(tb__server_route(srv, "POST", "/api/v1/later", TB__DIALECT_TINKER, 0,
                             srv->routes[0]->handler, NULL, "added later"));
  hc_expect("GET", "/", NULL, NULL, 200, "\"path\":\"/api/v1/later\"");

  hc_expect("GET", "/nowhere", NULL, NULL, 404, "no route for GET /nowhere");
  c = hc_do("GET", "/api/v1/telemetry", NULL, NULL);
  ASSERT_EQ_INT(c->status, 405);
  ASSERT_STR_CONTAINS(c->head, "Allow: POST");
  hc_free(c);

  c = hc_do("GET", "/metrics", NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_CONTAINS(c->head, "Content-Type: text/plain; version=0.0.4");
  ASSERT_STR_CONTAINS(c->body, "# TYPE tinkerbell_http_requests_total counter\n");
  ASSERT_STR_CONTAINS(c->body, "tinkerbell_http_requests_total{method=\"GET\","
                               "route=\"/api/v1/healthz\",status=\"200\"} 1\n");
  ASSERT_STR_CONTAINS(c->body, "tinkerbell_http_requests_total{method=\"POST\","
                               "route=\"/api/v1/telemetry\",status=\"200\"} 2\n");
  ASSERT_STR_CONTAINS(c->body, "tinkerbell_http_requests_total{method=\"any\","
                               "route=\"unmatched\",status=\"404\"} 1\n");
  ASSERT_STR_CONTAINS(c->body, "tinkerbell_telemetry_events_total 3\n");
  ASSERT_STR_CONTAINS(c->body, "tinkerbell_futures_pending 0\n");
  ASSERT_STR_CONTAINS(c->body, "tinkerbell_sessions_live 0\n");
  hc_free(c);
  stop_server();
}

static int expired_hook_calls;
static char expired_id[TB__SESSION_ID_MAX];

static void on_expire(tb__sessions_t *ss, tb__session_t *s) {
  expired_hook_calls++;
  memcpy(expired_id, s->id, sizeof(expired_id));
  ASSERT(s->expired);
}

static char *create_session(const char *extra) {
  hc_t *c = hc_do("POST", "/api/v1/create_session", extra,
                  "{\"tags\":[\"a\",\"b\"],\"user_metadata\":{\"k\":1},"
                  "\"sdk_version\":\"0.25.0\",\"type\":\"create_session\"}");
  ASSERT_EQ_INT(c->status, 200);
  json_t *v = hc_json(c);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "type")), "create_session");
  char *id = xstrdup(json_string_value(json_object_get(v, "session_id")));
  json_decref(v);
  hc_free(c);
  ASSERT(strncmp(id, "sess-", 5) == 0);
  return id;
}

TEST(sessions_heartbeat_and_expiry) {
  /* Wide enough that a slow (sanitizer) build never misses a beat of s1. */
  tb_server_options_t o = { .session_timeout_ms = 1000 };
  start_server(&o);
  srv->sessions.on_expire = on_expire;
  expired_hook_calls = 0;
  char *s1 = create_session(NULL);
  char *s2 = create_session(NULL);
  ASSERT(strcmp(s1, s2) != 0);
  char body[160], path[160];
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"type\":\"session_heartbeat\"}", s1);
  /* s1 beats every 100 ms until s2, silent, expires (the test's timeout catches a hang). */
  while (expired_hook_calls == 0) {
    hc_expect("POST", "/api/v1/session_heartbeat", NULL, body, 200,
              "{\"type\":\"session_heartbeat\"}");
    wait_ms(100);
  }
  ASSERT_EQ_INT(expired_hook_calls, 1);
  ASSERT_STR_EQ(expired_id, s2);
  ASSERT_EQ_INT(srv->sessions.n_live, 1);
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\"}", s2);
  hc_expect("POST", "/api/v1/session_heartbeat", NULL, body, 410, "expired");
  hc_expect("POST", "/api/v1/session_heartbeat", NULL, "{\"session_id\":\"sess-nope\"}",
            404, "unknown session");

  /* What the training part records shows in GET /sessions/{id}. */
  tb__session_t *s = tb__session_find(&srv->sessions, srv->auth.local,
                                      (tb_slice_t){ s1, strlen(s1) });
  ASSERT(s != NULL);
  char run[128];
  snprintf(run, sizeof(run), "%s:train:0", s1);
  ASSERT_OK(tb__session_add_training_run(s, run));
  ASSERT_OK(tb__session_add_training_run(s, run));
  ASSERT_OK(tb__session_add_sampler(s, "sampler-1"));
  snprintf(path, sizeof(path), "/api/v1/sessions/%s", s1);
  hc_t *c = hc_do("GET", path, NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  json_t *v = hc_json(c);
  json_t *runs = json_object_get(v, "training_run_ids");
  ASSERT_EQ_INT(json_array_size(runs), 1);
  ASSERT_STR_EQ(json_string_value(json_array_get(runs, 0)), run);
  ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(v, "sampler_ids"), 0)),
                "sampler-1");
  ASSERT(json_is_false(json_object_get(v, "expired")));
  json_decref(v);
  hc_free(c);
  snprintf(path, sizeof(path), "/api/v1/sessions/%s", s2);
  hc_expect("GET", path, NULL, NULL, 200, "\"expired\":true");
  hc_expect("GET", "/api/v1/sessions/sess-unknown", NULL, NULL, 404, NULL);

  c = hc_do("GET", "/api/v1/sessions?limit=1", NULL, NULL);
  v = hc_json(c);
  ASSERT_EQ_INT(json_array_size(json_object_get(v, "sessions")), 1);
  ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(v, "sessions"), 0)), s2);
  ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(v, "cursor"),
                                                   "total_count")), 2);
  json_decref(v);
  hc_free(c);
  c = hc_do("GET", "/api/v1/sessions?limit=5&offset=1", NULL, NULL);
  v = hc_json(c);
  ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(v, "sessions"), 0)), s1);
  json_decref(v);
  hc_free(c);
  hc_expect("GET", "/api/v1/sessions?limit=abc", NULL, NULL, 400,
            "limit: expected an integer");
  hc_expect("GET", "/api/v1/sessions?offset=-1", NULL, NULL, 400, "offset: ");
  free(s1);
  free(s2);
  stop_server();
}

TEST(auth_and_isolation) {
  char path[] = "/tmp/tb_keys_XXXXXX";
  tb_test_temp_file(path, "# two users\n\ntml-a1 alice\ntml-b1\tbob   # trailing comment\n"
                   "tml-a2 alice\r\n");
  tb_server_options_t o = { .api_keys_file = path };
  start_server(&o);
  unlink(path);
  ASSERT_EQ_INT(srv->auth.n_users, 2);
  ASSERT_EQ_INT(srv->auth.n_keys, 3);
  /* Public routes need no key. */
  hc_expect("GET", "/api/v1/healthz", NULL, NULL, 200, "ok");
  hc_expect("GET", "/", NULL, NULL, 200, "\"auth\":true");
  hc_t *c = hc_do("POST", "/api/v1/client/config", NULL, "{}");
  ASSERT_EQ_INT(c->status, 401);
  ASSERT_STR_EQ(c->body, "{\"error\":\"missing API key: send X-API-Key or "
                         "Authorization: Bearer\",\"category\":\"user\"}");
  ASSERT_STR_CONTAINS(c->head, "WWW-Authenticate: Bearer");
  hc_free(c);
  hc_expect("POST", "/api/v1/client/config", "X-API-Key: tml-zz\r\n", "{}", 401,
            "invalid API key");
  hc_expect("POST", "/api/v1/client/config", "X-API-Key: tml-a\r\n", "{}", 401,
            "invalid API key");
  hc_expect("GET", "/metrics", NULL, NULL, 401, NULL);
  hc_expect("POST", "/api/v1/client/config", "Authorization: bearer  tml-b1 \r\n", "{}",
            200, "use_pyqwest_transport");

  char *sa = create_session("X-API-Key: tml-a1\r\n");
  char p[128], body[128];
  snprintf(p, sizeof(p), "/api/v1/sessions/%s", sa);
  hc_expect("GET", p, "X-API-Key: tml-a2\r\n", NULL, 200, "training_run_ids");
  hc_expect("GET", p, "X-API-Key: tml-b1\r\n", NULL, 404, "unknown session");
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\"}", sa);
  hc_expect("POST", "/api/v1/session_heartbeat", "X-API-Key: tml-b1\r\n", body, 404, NULL);
  hc_expect("GET", "/api/v1/sessions", "X-API-Key: tml-b1\r\n", NULL, 200,
            "{\"sessions\":[],");
  hc_expect("GET", "/api/v1/sessions", "X-API-Key: tml-a1\r\n", NULL, 200, sa);
  c = hc_do("GET", "/metrics", "X-API-Key: tml-a1\r\n", NULL);
  ASSERT_STR_CONTAINS(c->body, "tinkerbell_unauthorized_total 4\n");
  hc_free(c);
  free(sa);
  stop_server();
}

TEST(keys_file_errors) {
  ASSERT_OK(uv_loop_init(&loop));
  tb_server_t s;
  tb_server_options_t o = { .api_keys_file = "/nonexistent/tb-keys" };
  ASSERT_ERR(tb_server_init(&loop, &s, &o), TB_ENOENT);
  ASSERT_STR_CONTAINS(s.message, "/nonexistent/tb-keys");
  static const struct { const char *text, *want; } bad_files[] = {
    { "tml-1 alice\ntml-2 bob extra\n", "line 2" },
    { "tml-1 alice\n# again\ntml-1 bob\n", "line 3: the key appears twice" },
    { "# nothing\n", "" },
  };
  for (size_t i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
    char path[] = "/tmp/tb_keys_XXXXXX";
    tb_test_temp_file(path, bad_files[i].text);
    o.api_keys_file = path;
    ASSERT_ERR(tb_server_init(&loop, &s, &o), TB_ECORRUPT);
    ASSERT_STR_CONTAINS(s.message, bad_files[i].want);
    unlink(path);
  }
  tb_server_options_t bad = { .rate_limit_rps = -1 };
  ASSERT_ERR(tb_server_init(&loop, &s, &bad), TB_EINVAL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&loop);
}

/* A submission route as the training part will write it. */
static void route_submit(tb__http_request_t *req) {
  if (tb__server_rate_limited(req))
    return;
  tb__server_respond_json(req, 200, "{\"request_id\":\"r\"}", 18);
}

TEST(rate_limit_429) {
  char path[] = "/tmp/tb_keys_XXXXXX";
  tb_test_temp_file(path, "tml-a alice\ntml-b bob\n");
  tb_server_options_t o = { .api_keys_file = path, .rate_limit_rps = 2,
                            .rate_limit_burst = 3, .max_models_per_user = 2 };
  start_server(&o);
  unlink(path);
  ASSERT_OK(tb__server_route(srv, "POST", "/api/v1/submit", TB__DIALECT_TINKER, 0,
                             route_submit, NULL, "a test submission"));
  for (int i = 0; i < 3; i++)
    hc_expect("POST", "/api/v1/submit", "X-API-Key: tml-a\r\n", "{}", 200, NULL);
  hc_t *c = hc_do("POST", "/api/v1/submit", "X-API-Key: tml-a\r\n", "{}");
  ASSERT_EQ_INT(c->status, 429);
  ASSERT_STR_CONTAINS(c->head, "Retry-After: 1\r\n");
  ASSERT_STR_CONTAINS(c->body, "\"category\":\"user\"");
  ASSERT_STR_CONTAINS(c->body, "rate limit");
  hc_free(c);
  /* Bob has a bucket of his own. */
  hc_expect("POST", "/api/v1/submit", "X-API-Key: tml-b\r\n", "{}", 200, NULL);
  wait_ms(520);  /* one token back at 2 per second */
  hc_expect("POST", "/api/v1/submit", "X-API-Key: tml-a\r\n", "{}", 200, NULL);
  hc_expect("POST", "/api/v1/submit", "X-API-Key: tml-a\r\n", "{}", 429, NULL);
  ASSERT_EQ_INT(srv->n_rate_limited, 2);
  /* The concurrent-model limit the training part consults. */
  tb__user_t *alice = tb__auth_user(&srv->auth, "alice");
  ASSERT(!tb__server_user_at_model_limit(srv, alice));
  alice->n_models = 2;
  ASSERT(tb__server_user_at_model_limit(srv, alice));
  alice->n_models = 1;
  ASSERT(!tb__server_user_at_model_limit(srv, alice));
  stop_server();
}

TEST(bad_bodies_are_400_with_paths) {
  start_server(NULL);
  static const struct { const char *path, *body, *want; } cases[] = {
    { "/api/v1/create_session", "{", "body: invalid JSON" },
    { "/api/v1/create_session", "", "body: invalid JSON" },
    { "/api/v1/create_session", "[]", "body: expected an object, got an array" },
    { "/api/v1/create_session", "{\"tags\":\"x\"}", "tags: expected an array" },
    { "/api/v1/create_session", "{\"tags\":[\"a\",3]}", "tags[1]: expected a string" },
    { "/api/v1/create_session", "{\"user_metadata\":[]}", "user_metadata: expected an object" },
    { "/api/v1/create_session", "{\"sdk_version\":1}", "sdk_version: expected a string" },
    { "/api/v1/create_session", "{\"type\":\"sample\"}", "type: expected \\\"create_session\\\"" },
    { "/api/v1/session_heartbeat", "{}", "session_id: " },
    { "/api/v1/session_heartbeat", "{\"session_id\":null}", "session_id: " },
    { "/api/v1/session_heartbeat", "{\"session_id\":[1]}", "session_id: expected a string" },
    { "/api/v1/telemetry", "{\"platform\":\"x\"}", "events: " },
    { "/api/v1/telemetry", "{\"events\":{}}", "events: expected an array" },
    { "/api/v1/client/config", "{\"sdk_version\":false}", "sdk_version: expected a string" },
    { "/api/v1/retrieve_future", "{\"request_id\":\"a\\u0000\"}", NULL },
    { "/api/v1/retrieve_future", "null", "body: " },
    { "/api/v1/retrieve_future", "\"req-1\"", "body: " },
    { "/api/v1/retrieve_future", "{\"request_id\":1e400}", "body: invalid JSON" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    hc_t *c = hc_do("POST", cases[i].path, NULL, cases[i].body);
    if (c->status != 400)
      fprintf(stderr, "case %zu: %d %s\n", i, c->status, c->body);
    ASSERT(c->status == 400 || (cases[i].want == NULL && c->status == 404));
    json_t *v = hc_json(c);
    ASSERT_STR_EQ(json_string_value(json_object_get(v, "category")), "user");
    ASSERT(json_is_string(json_object_get(v, "error")));
    json_decref(v);
    if (cases[i].want)
      ASSERT_STR_CONTAINS(c->body, cases[i].want);
    hc_free(c);
  }
  /* Binary garbage is a 400 too, never a 500. */
  hc_expect("POST", "/api/v1/create_session", NULL, "\xff\xfe\x01garbage", 400,
            "invalid JSON");
  hc_t *m = hc_do("GET", "/metrics", NULL, NULL);
  ASSERT(strstr(m->body, "status=\"500\"") == NULL);
  hc_free(m);
  stop_server();
}

TEST_LIST(
  TEST_ENTRY(service_routes),
  TEST_ENTRY(sessions_heartbeat_and_expiry),
  TEST_ENTRY(auth_and_isolation),
  TEST_ENTRY(keys_file_errors),
  TEST_ENTRY(rate_limit_429),
  TEST_ENTRY(bad_bodies_are_400_with_paths),
)

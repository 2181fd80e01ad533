/*
 * What clients may hold of the server: bodies of requests without a valid
 * API key are refused on their head, never buffered; the bodies held over
 * all connections stay under max_body_memory; a request that trickles in
 * ends at request_timeout_ms; connections beyond max_connections are
 * refused at once; and the Tinker SDK's one-off client/config connection
 * is closed by the server.  Each test drives raw TCP clients that send
 * exactly what they are told, when they are told.
 */
#include "test_server_client.h"

#include "http/client.h"

/* ------------------------------------------------------------ raw client */

/* A connection that sends what the test says and keeps reading until the
 * server closes (or the test does). */
typedef struct rc_s {
  uv_tcp_t tcp;
  uv_connect_t cr;
  tb__buf_t in;
  int connected, eof, closed;
  uint64_t eof_at;
} rc_t;

static void rc_closed_cb(uv_handle_t *h) {
  ((rc_t *)h->data)->closed = 1;
}

static void rc_close(rc_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, rc_closed_cb);
}

static void rc_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  rc_t *c = h->data;
  ASSERT_OK(tb__buf_reserve(&c->in, 65536));
  buf->base = c->in.base + c->in.len;
  buf->len = c->in.cap - c->in.len - 1;
}

static void rc_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  rc_t *c = s->data;
  if (nread < 0) {
    c->eof = 1;
    c->eof_at = uv_now(&loop);
    uv_read_stop(s);
    return;
  }
  c->in.len += (size_t)nread;
  c->in.base[c->in.len] = '\0';
}

static void rc_connected(uv_connect_t *cr, int status) {
  rc_t *c = cr->data;
  if (status != 0) {
    c->eof = 1;  /* refused before it was accepted */
    return;
  }
  c->connected = 1;
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, rc_alloc, rc_read));
}

static rc_t *rc_open(void) {
  rc_t *c = calloc(1, sizeof(*c));
  ASSERT(c != NULL);
  ASSERT_OK(tb__buf_reserve(&c->in, 1));
  c->in.base[0] = '\0';
  connect_to_server(&c->tcp, &c->cr, c, rc_connected);
  RUN_UNTIL(c->connected || c->eof);
  return c;
}

static void rc_written(uv_write_t *w, int status) {
  free(w->data);
  free(w);
}

/* Queues len bytes of data (copied); a write the server refused because
 * it closed is fine. */
static void rc_send(rc_t *c, const void *data, size_t len) {
  if (c->eof || uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  uv_write_t *w = xmalloc(sizeof(*w));
  char *copy = xmalloc(len ? len : 1);
  memcpy(copy, data, len);
  w->data = copy;
  uv_buf_t b = uv_buf_init(copy, (unsigned)len);
  if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, rc_written) != 0) {
    free(copy);
    free(w);
  }
}

static void rc_send_str(rc_t *c, const char *s) {
  rc_send(c, s, strlen(s));
}

/* Sends n bytes of 'x' in writes of at most 64 KiB. */
static void rc_send_fill(rc_t *c, size_t n) {
  static char fill[65536];
  memset(fill, 'x', sizeof(fill));
  while (n > 0) {
    size_t k = n < sizeof(fill) ? n : sizeof(fill);
    rc_send(c, fill, k);
    n -= k;
  }
}

/* Runs the loop until cond holds or ms pass; returns whether it held. */
#define RUN_FOR(cond, ms)                                    \
  ({                                                         \
    uv_update_time(&loop);                                   \
    uint64_t until_ = uv_now(&loop) + (ms);                  \
    uv_timer_t t_;                                           \
    ASSERT_OK(uv_timer_init(&loop, &t_));                    \
    ASSERT_OK(uv_timer_start(&t_, on_wait, (ms), 0));        \
    while (!(cond) && uv_now(&loop) < until_)                \
      uv_run(&loop, UV_RUN_ONCE);                            \
    uv_close((uv_handle_t *)&t_, NULL);                      \
    uv_run(&loop, UV_RUN_NOWAIT);                            \
    (cond);                                                  \
  })

/* Whether the first response has fully arrived (head and Content-Length
 * bytes). */
static int rc_answered(const rc_t *c) {
  const char *end = strstr(c->in.base, "\r\n\r\n");
  if (end == NULL)
    return 0;
  const char *cl = strcasestr(c->in.base, "\r\nContent-Length: ");
  size_t n = cl && cl < end ? strtoul(cl + 18, NULL, 10) : 0;
  return c->in.len >= (size_t)(end + 4 - c->in.base) + n;
}

/* The first response's body as JSON (which it must be). */
static json_t *rc_json(const rc_t *c) {
  const char *end = strstr(c->in.base, "\r\n\r\n");
  ASSERT(end != NULL);
  char *body = xstrdup(end + 4);
  json_t *v = json_loads(body, 0, NULL);
  if (v == NULL)
    fprintf(stderr, "not JSON: %s\n", body);
  ASSERT(v != NULL);
  free(body);
  return v;
}

static int rc_status(const rc_t *c) {
  int status = 0;
  ASSERT(sscanf(c->in.base, "HTTP/1.1 %d", &status) == 1);
  return status;
}

static void rc_free(rc_t *c) {
  rc_close(c);
  RUN_UNTIL(c->closed);
  tb__buf_free(&c->in);
  free(c);
}

static void write_keys(const char *path) {
  FILE *f = fopen(path, "w");
  ASSERT(f != NULL);
  fputs("tml-key-a alice\n", f);
  fclose(f);
}

/* ------------------------------------------------------------ fault 6 */

static int cl_status, cl_done, cl_closed;

static void on_cl(tb__http_client_req_t *req, int status) {
  cl_status = status == 0 ? req->response.status : status;
  cl_done = 1;
}

static void on_cl_closed(tb__http_client_t *c) {
  cl_closed = 1;
}

/* The project's client, sending 8 MiB with a wrong key: it reads the 401
 * the server gives on the head while the server drops the rest. */
static void client_gets_401_early(void) {
  tb__http_client_t cl;
  ASSERT_OK(tb__http_client_init(&loop, &cl, NULL));
  tb__http_client_req_t req;
  tb__http_client_req_init(&req);
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v1/create_session", port);
  static const tb__http_header_t h = { TB_SLICE_LIT("X-API-Key"), TB_SLICE_LIT("tml-wrong") };
  size_t n = (size_t)8 << 20;
  char *big = xmalloc(n);
  memset(big, ' ', n);
  uv_buf_t b = uv_buf_init(big, (unsigned)n);
  req.method = "POST";
  req.url = (tb_slice_t){ url, strlen(url) };
  req.headers = &h;
  req.n_headers = 1;
  req.body = &b;
  req.n_body = 1;
  cl_done = cl_closed = 0;
  ASSERT_OK(tb__http_client_send(&cl, &req, on_cl));
  RUN_UNTIL(cl_done);
  ASSERT_EQ_INT(cl_status, 401);
  tb__http_client_req_free(&req);
  free(big);
  tb__http_client_close(&cl, on_cl_closed);
  RUN_UNTIL(cl_closed);
}

/* Eight clients without a key each announce a 60 MiB body and send the
 * first MiB of it: each is answered 401 on its head and closed, and the
 * server holds none of their bytes (they held 480 MiB before).  A
 * request without a body is refused on its head too, and its connection
 * lives on. */
TEST(unauthenticated_bodies_are_not_buffered) {
  char keys[] = "/tmp/tb-limits-keys-XXXXXX";
  int fd = mkstemp(keys);
  ASSERT(fd >= 0);
  close(fd);
  write_keys(keys);
  tb_server_options_t o = { .api_keys_file = keys };
  start_server(&o);
  unlink(keys);
  rc_t *cs[8];
  for (int i = 0; i < 8; i++) {
    cs[i] = rc_open();
    rc_send_str(cs[i], "POST /api/v1/create_session HTTP/1.1\r\nHost: t\r\n"
                       "Content-Type: application/json\r\n"
                       "Content-Length: 62914560\r\n\r\n");
    rc_send_fill(cs[i], 1 << 20);
  }
  for (int i = 0; i < 8; i++) {
    ASSERT(RUN_FOR(rc_answered(cs[i]) && cs[i]->eof, 5000));
    ASSERT_EQ_INT(rc_status(cs[i]), 401);
    ASSERT_STR_CONTAINS(cs[i]->in.base, "Connection: close\r\n");
    ASSERT_STR_CONTAINS(cs[i]->in.base, "WWW-Authenticate: Bearer\r\n");
    json_t *v = rc_json(cs[i]);
    ASSERT_STR_EQ(json_string_value(json_object_get(v, "error")),
                  "missing API key: send X-API-Key or Authorization: Bearer");
    json_decref(v);
  }
  ASSERT_EQ_INT(srv->http.body_memory, 0);
  ASSERT_EQ_INT(srv->n_unauthorized, 8);
  for (int i = 0; i < 8; i++)
    rc_free(cs[i]);
  client_gets_401_early();
  /* A wrong key, and a request without a body on a kept-alive connection:
   * refused at the head, and the next request on it is served. */
  rc_t *c = rc_open();
  rc_send_str(c, "GET /api/v1/sessions HTTP/1.1\r\nHost: t\r\nX-API-Key: nope\r\n\r\n"
                 "GET /api/v1/healthz HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT(RUN_FOR(strstr(c->in.base, "\"status\":\"ok\"") != NULL, 5000));
  ASSERT_EQ_INT(rc_status(c), 401);
  ASSERT_STR_CONTAINS(c->in.base, "invalid API key");
  ASSERT(strstr(c->in.base, "Connection: close") == NULL);
  ASSERT(!c->eof);
  rc_free(c);
  /* With the key, a body is read and the route answers (400 here: the
   * body is no JSON), and its memory is given back. */
  c = rc_open();
  rc_send_str(c, "POST /api/v1/create_session HTTP/1.1\r\nHost: t\r\nX-API-Key: tml-key-a\r\n"
                 "Content-Length: 100000\r\n\r\n");
  rc_send_fill(c, 100000);
  ASSERT(RUN_FOR(rc_answered(c), 5000));
  ASSERT_EQ_INT(rc_status(c), 400);
  ASSERT_STR_CONTAINS(c->in.base, "invalid JSON");
  rc_free(c);
  RUN_FOR(srv->http.body_memory == 0, 1000);
  ASSERT_EQ_INT(srv->http.body_memory, 0);
  /* Public routes need no key. */
  hc_t *h = hc_do("GET", "/api/v1/healthz", NULL, NULL);
  json_t *v = hc_json(h);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "status")), "ok");
  json_decref(v);
  hc_free(h);
  stop_server();
}

/* max_body_memory holds over all connections: two bodies that fill it are
 * being received, a third is refused 503 with Retry-After before any of
 * it is read, a chunked one is refused once it grows past what is left,
 * and room comes back when a request ends. */
TEST(body_memory_cap_holds) {
  tb_server_options_t o = { .max_body = 1 << 20, .max_body_memory = 5 << 19 };
  start_server(&o);
  const char *head = "POST /api/v1/client/config HTTP/1.1\r\nHost: t\r\n"
                     "Content-Length: 1048576\r\n\r\n";
  /* A JSON body of exactly 1 MiB: the prefix, 'x's, the suffix. */
  const char *prefix = "{\"sdk_version\":\"0.25.0\",\"pad\":\"";
  size_t fill = ((size_t)1 << 20) - strlen(prefix) - 2;
  rc_t *a = rc_open(), *b = rc_open();
  rc_send_str(a, head);
  rc_send_str(a, prefix);
  rc_send_fill(a, 1000);
  rc_send_str(b, head);
  rc_send_str(b, prefix);
  rc_send_fill(b, 1000);
  ASSERT(RUN_FOR(srv->http.body_memory == 2u << 20, 5000));
  wait_ms(50);
  ASSERT_EQ_INT(srv->http.body_memory, 2u << 20);  /* their bodies are arriving */
  rc_t *c = rc_open();
  rc_send_str(c, head);
  rc_send_fill(c, 1000);
  ASSERT(RUN_FOR(rc_answered(c) && c->eof, 5000));
  ASSERT_EQ_INT(rc_status(c), 503);
  ASSERT_STR_CONTAINS(c->in.base, "Retry-After: 1\r\n");
  ASSERT_STR_CONTAINS(c->in.base, "request bodies hold too much memory; retry later");
  ASSERT_EQ_INT(srv->http.n_refused_bodies, 1);
  ASSERT_EQ_INT(srv->http.body_memory, 2u << 20);
  rc_free(c);
  hc_expect("GET", "/metrics", NULL, NULL, 200, "\ntinkerbell_http_body_bytes 2097152\n");
  /* One body over max_body is 413 whatever the room. */
  c = rc_open();
  rc_send_str(c, "POST /api/v1/client/config HTTP/1.1\r\nHost: t\r\n"
                 "Content-Length: 1048577\r\n\r\n");
  ASSERT(RUN_FOR(rc_answered(c), 5000));
  ASSERT_EQ_INT(rc_status(c), 413);
  rc_free(c);
  /* A chunked body is counted as it grows, and refused once it passes
   * the half MiB left. */
  c = rc_open();
  rc_send_str(c, "POST /api/v1/client/config HTTP/1.1\r\nHost: t\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 15 && !c->eof; i++) {
    rc_send_str(c, "10000\r\n");
    rc_send_fill(c, 0x10000);
    rc_send_str(c, "\r\n");
    RUN_FOR(c->eof, 20);
  }
  ASSERT(RUN_FOR(rc_answered(c) && c->eof, 5000));
  ASSERT_EQ_INT(rc_status(c), 503);
  ASSERT_STR_CONTAINS(c->in.base, "Retry-After: 1\r\n");
  rc_free(c);
  ASSERT(RUN_FOR(srv->http.body_memory == 2u << 20, 5000));
  /* One of the two goes away: its room comes back. */
  rc_free(a);
  ASSERT(RUN_FOR(srv->http.body_memory == 1u << 20, 5000));
  /* The other completes its body and is answered. */
  rc_send_fill(b, fill - 1000);
  rc_send_str(b, "\"}");
  ASSERT(RUN_FOR(rc_answered(b), 5000));
  ASSERT_EQ_INT(rc_status(b), 200);
  rc_free(b);
  ASSERT(RUN_FOR(srv->http.body_memory == 0, 5000));
  /* The options are checked: a cap below max_body could never be met. */
  stop_server();
  tb_server_options_t bad = { .max_body = 1 << 20, .max_body_memory = 1 << 19 };
  ASSERT_OK(uv_loop_init(&loop));
  ASSERT_ERR(tb_server_init(&loop, &server, &bad), TB_EINVAL);
  ASSERT_STR_CONTAINS(server.message, "max_body_memory");
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------------ fault 7 */

/* A body sent one byte every 200 ms never trips the per-read body
 * timeout; the whole-request deadline closes it.  A head sent the same
 * way ends there too. */
TEST(slow_requests_end_at_the_request_deadline) {
  tb_server_options_t o = { .request_timeout_ms = 1000 };
  start_server(&o);
  rc_t *b = rc_open(), *h = rc_open();
  uv_update_time(&loop);
  uint64_t t0 = uv_now(&loop);
  rc_send_str(b, "POST /api/v1/client/config HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
  const char *head = "GET /api/v1/healthz HTTP/1.1\r\nHost: t\r\nX-Padding: aaaaaaaaaaaaaaaaaa\r\n";
  for (size_t i = 0; i < 40 && !(b->eof && h->eof); i++) {
    rc_send(b, "x", 1);
    rc_send(h, head + (i % strlen(head)), 1);
    RUN_FOR(b->eof && h->eof, 200);
  }
  ASSERT(b->eof && h->eof);
  ASSERT_EQ_INT(b->in.len, 0);  /* closed without an answer */
  ASSERT_EQ_INT(h->in.len, 0);
  ASSERT_GE(b->eof_at - t0, 900);
  ASSERT_LT(b->eof_at - t0, 2500);
  ASSERT_LT(h->eof_at - t0, 2500);
  rc_free(b);
  rc_free(h);
  /* A request that arrives in time is served as ever. */
  hc_expect("GET", "/api/v1/healthz", NULL, NULL, 200, "ok");
  stop_server();
}

/* Beyond max_connections a new connection is answered 503 (Retry-After)
 * and closed at once; when one closes, a new one is served. */
TEST(connections_beyond_the_cap_are_refused) {
  tb_server_options_t o = { .max_connections = 3 };
  start_server(&o);
  rc_t *idle[3];
  for (int i = 0; i < 3; i++)
    idle[i] = rc_open();
  RUN_FOR(srv->http.n_conns == 3, 2000);
  ASSERT_EQ_INT(srv->http.n_conns, 3);
  rc_t *c = rc_open();
  ASSERT(RUN_FOR(c->eof, 2000));
  ASSERT_EQ_INT(rc_status(c), 503);
  ASSERT_STR_CONTAINS(c->in.base, "Retry-After: 1\r\n");
  ASSERT_STR_CONTAINS(c->in.base, "too many connections");
  ASSERT(rc_answered(c));
  ASSERT_EQ_INT(srv->http.n_refused_conns, 1);
  rc_free(c);
  ASSERT_EQ_INT(srv->http.n_conns, 3);
  /* The three are still served. */
  rc_send_str(idle[0], "GET /api/v1/healthz HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT(RUN_FOR(rc_answered(idle[0]), 2000));
  ASSERT_EQ_INT(rc_status(idle[0]), 200);
  rc_free(idle[2]);
  ASSERT(RUN_FOR(srv->http.n_conns == 2, 2000));
  hc_expect("GET", "/metrics", NULL, NULL, 200, "\ntinkerbell_http_connections_refused_total 1\n");
  rc_free(idle[0]);
  rc_free(idle[1]);
  stop_server();
}

/* ------------------------------------------------------------ fault 10 */

/* POST /api/v1/client/config is answered with Connection: close and the
 * server then closes the connection, although the client asked to keep
 * it: the Tinker SDK never closes the one-off client it uses for it. */
TEST(client_config_closes_the_connection) {
  start_server(NULL);
  rc_t *c = rc_open();
  const char *body = "{\"sdk_version\":\"0.25.0\"}";
  char req[256];
  snprintf(req, sizeof(req),
           "POST /api/v1/client/config HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n"
           "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
           strlen(body), body);
  uv_update_time(&loop);
  uint64_t t0 = uv_now(&loop);
  rc_send_str(c, req);
  ASSERT(RUN_FOR(c->eof, 3000));
  ASSERT_LT(c->eof_at - t0, 1000);
  ASSERT(rc_answered(c));
  ASSERT_EQ_INT(rc_status(c), 200);
  ASSERT_STR_CONTAINS(c->in.base, "Connection: close\r\n");
  json_t *v = rc_json(c);
  ASSERT(json_is_false(json_object_get(v, "pjwt_auth_enabled")));
  json_decref(v);
  rc_free(c);
  /* The client of the project, hc_t, reads the same. */
  hc_t *h = hc_do("POST", "/api/v1/client/config", NULL, body);
  ASSERT_STR_CONTAINS(h->head, "Connection: close\r\n");
  v = hc_json(h);
  ASSERT(json_is_true(json_object_get(v, "parallel_fwdbwd_chunks")));
  json_decref(v);
  hc_free(h);
  /* Other routes keep the connection. */
  c = rc_open();
  rc_send_str(c, "GET /api/v1/healthz HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT(RUN_FOR(rc_answered(c), 2000));
  ASSERT(strstr(c->in.base, "Connection: close") == NULL);
  ASSERT(!RUN_FOR(c->eof, 300));
  rc_free(c);
  stop_server();
}

TEST_LIST(
  TEST_ENTRY(unauthenticated_bodies_are_not_buffered),
  TEST_ENTRY(body_memory_cap_holds),
  TEST_ENTRY(slow_requests_end_at_the_request_deadline),
  TEST_ENTRY(connections_beyond_the_cap_are_refused),
  TEST_ENTRY(client_config_closes_the_connection),
)

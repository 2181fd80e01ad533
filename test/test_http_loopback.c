/*
 * http/: the project's server and client together on one loop, over
 * loopback.  Each side has its own tests against scripted peers
 * (test_http_server.c, test_http_client.c); these check that the two agree
 * with each other at volume and at the edges: thousands of requests over a
 * small keep-alive pool, the limit statuses seen through the client, a
 * server that closes idle connections, and a client timeout against a
 * handler that never answers.
 */
#include "tb_test.h"

#include "core/buf.h"
#include "http/client.h"
#include "http/router.h"
#include "http/server.h"

typedef struct {
  uv_loop_t loop;
  tb__http_router_t router;
  tb__http_server_t server;
  tb__http_client_t client;
  char base[64];
  int server_closed, client_closed;
  tb__http_request_t *held;   /* the request /hang never answers */
  int held_aborted;
  tb__http_client_req_t req;  /* the request a test sends again and again */
  char url[20000];            /* its URL */
} pair_t;

/* GET /echo/{rest...}: answers the decoded trailing parameter. */
static void on_echo(tb__http_request_t *req) {
  const tb_slice_t *v = tb__http_request_param(req, "rest");
  uv_buf_t b = uv_buf_init((char *)v->base, (unsigned)v->len);
  static const tb__http_header_t ct = { TB_SLICE_LIT("Content-Type"),
                                       TB_SLICE_LIT("text/plain") };
  tb__http_respond(req, 200, &ct, 1, &b, 1);
}

/* POST /sum: the byte sum of the body, as text. */
static void on_sum(tb__http_request_t *req) {
  unsigned long sum = 0;
  for (size_t i = 0; i < req->body.len; i++)
    sum += (unsigned char)req->body.base[i];
  char *out = tb__arena_alloc(&req->arena, 32);
  int n = snprintf(out, 32, "%lu", sum);
  uv_buf_t b = uv_buf_init(out, (unsigned)n);
  tb__http_respond(req, 200, NULL, 0, &b, 1);
}

static void on_hang_abort(tb__http_request_t *req, int status) {
  pair_t *p = req->route_data;
  ASSERT_EQ_INT(status, TB_ECLOSED);
  p->held_aborted++;
  p->held = NULL;
  tb__http_respond_error(req, 500, "never sent"); /* only releases it */
}

static void on_hang(tb__http_request_t *req) {
  pair_t *p = req->route_data;
  p->held = req;
  req->on_abort = on_hang_abort;
}

static void pair_start(pair_t *p, const tb__http_server_options_t *sopts,
                       const tb__http_client_opts_t *copts) {
  memset(p, 0, sizeof(*p));
  ASSERT_OK(uv_loop_init(&p->loop));
  tb__http_router_init(&p->router);
  ASSERT_OK(tb__http_router_add(&p->router, "GET", "/echo/{rest...}", on_echo, p));
  ASSERT_OK(tb__http_router_add(&p->router, "POST", "/sum", on_sum, p));
  ASSERT_OK(tb__http_router_add(&p->router, "GET", "/hang", on_hang, p));
  tb__http_server_options_t so = sopts ? *sopts : (tb__http_server_options_t){ 0 };
  so.router = &p->router;
  ASSERT_OK(tb__http_server_init(&p->loop, &p->server, &so));
  ASSERT_OK(tb__http_server_listen(&p->server, "127.0.0.1", 0));
  snprintf(p->base, sizeof(p->base), "http://127.0.0.1:%d",
           tb__http_server_port(&p->server));
  ASSERT_OK(tb__http_client_init(&p->loop, &p->client, copts));
  p->server.data = p;
  p->client.data = p;
  tb__http_client_req_init(&p->req);
}

static void on_server_closed(tb__http_server_t *s) {
  ((pair_t *)s->data)->server_closed = 1;
}

static void on_client_closed(tb__http_client_t *c) {
  ((pair_t *)c->data)->client_closed = 1;
}

static void pair_finish(pair_t *p) {
  tb__http_client_req_free(&p->req);
  tb__http_client_close(&p->client, on_client_closed);
  tb__http_server_close(&p->server, on_server_closed);
  ASSERT_OK(uv_run(&p->loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(p->client_closed, 1);
  ASSERT_EQ_INT(p->server_closed, 1);
  tb__http_router_free(&p->router);
  ASSERT_LOOP_CLOSE(&p->loop);
}

/* ------------------------------------------------------------ volume */

#define N_REQUESTS 5000
#define WINDOW 64

typedef struct {
  tb__http_client_req_t req;
  char url[128];
  char body[256];
  uv_buf_t iov;
  int index;
} call_t;

typedef struct {
  pair_t *p;
  call_t calls[WINDOW];
  int next, done, failures;
} volume_t;

static void volume_send(volume_t *v, call_t *c);

/* The one volume run in flight (each test runs in its own process). */
static volume_t *g_volume;

static void check_and_continue(tb__http_client_req_t *req, int status) {
  volume_t *v = g_volume;
  call_t *c = req->data;
  if (status != 0 || req->response.status != 200) {
    v->failures++;
    fprintf(stderr, "request %d: status %d http %d %s\n", c->index, status,
            req->response.status, req->message);
  } else if (c->index % 2 == 0) {
    /* GET /echo/item-<i>/x: the trailing parameter comes back. */
    char want[64];
    snprintf(want, sizeof(want), "item-%d/x", c->index);
    ASSERT_MEM_EQ_STR(req->response.body, req->response.body_len, want);
  } else {
    unsigned long sum = 0;
    for (size_t i = 0; i < c->iov.len; i++)
      sum += (unsigned char)c->body[i];
    char want[32];
    snprintf(want, sizeof(want), "%lu", sum);
    ASSERT_MEM_EQ_STR(req->response.body, req->response.body_len, want);
  }
  v->done++;
  if (v->next < N_REQUESTS)
    volume_send(v, c);
}

static void volume_send(volume_t *v, call_t *c) {
  c->index = v->next++;
  c->req.data = c;
  if (c->index % 2 == 0) {
    snprintf(c->url, sizeof(c->url), "%s/echo/item-%d/x", v->p->base, c->index);
    c->req.method = "GET";
    c->req.body = NULL;
    c->req.n_body = 0;
  } else {
    snprintf(c->url, sizeof(c->url), "%s/sum", v->p->base);
    int n = snprintf(c->body, sizeof(c->body), "payload %d %s", c->index,
                     "abcdefghijklmnopqrstuvwxyz");
    c->iov = uv_buf_init(c->body, (unsigned)n);
    c->req.method = "POST";
    c->req.body = &c->iov;
    c->req.n_body = 1;
  }
  c->req.url = (tb_slice_t){ c->url, strlen(c->url) };
  ASSERT_OK(tb__http_client_send(&v->p->client, &c->req, check_and_continue));
}

TEST(thousands_of_requests_over_a_small_pool) {
  pair_t p;
  tb__http_client_opts_t copts = { .max_conns_per_origin = 4 };
  pair_start(&p, NULL, &copts);
  static volume_t v;
  memset(&v, 0, sizeof(v));
  v.p = &p;
  g_volume = &v;
  for (int i = 0; i < WINDOW; i++) {
    tb__http_client_req_init(&v.calls[i].req);
    volume_send(&v, &v.calls[i]);
  }
  /* The listener keeps the loop alive: run until the last answer. */
  while (v.done < N_REQUESTS)
    uv_run(&p.loop, UV_RUN_ONCE);
  ASSERT_EQ_INT(v.failures, 0);
  /* 64 requests in flight at a time, yet never more than 4 connections:
   * the pool queues and reuses. */
  ASSERT_LE(p.client.n_connects, 4);
  ASSERT_EQ_INT(p.server.n_requests, N_REQUESTS);
  for (int i = 0; i < WINDOW; i++)
    tb__http_client_req_free(&v.calls[i].req);
  pair_finish(&p);
}

/* ------------------------------------------------------------ limits */

typedef struct {
  int status;
  int http_status;
  int calls;
} result_t;

static void on_result(tb__http_client_req_t *req, int status) {
  result_t *r = req->data;
  r->status = status;
  r->http_status = req->response.status;
  r->calls++;
}

/* Sends one request and runs the loop until it completes. */
static void call(pair_t *p, tb__http_client_req_t *req, const char *method,
                 const char *url, const tb__http_header_t *headers, size_t nh,
                 const uv_buf_t *body, result_t *r) {
  memset(r, 0, sizeof(*r));
  req->data = r;
  req->method = method;
  req->url = (tb_slice_t){ url, strlen(url) };
  req->headers = headers;
  req->n_headers = nh;
  req->body = body;
  req->n_body = body ? 1 : 0;
  ASSERT_OK(tb__http_client_send(&p->client, req, on_result));
  while (r->calls == 0)
    uv_run(&p->loop, UV_RUN_ONCE);
}

/* GET of path on p's server through p's request; p->url keeps the URL
 * for what the test sends next. */
static void get(pair_t *p, const char *path, result_t *r) {
  snprintf(p->url, sizeof(p->url), "%s%s", p->base, path);
  call(p, &p->req, "GET", p->url, NULL, 0, NULL, r);
}

static void on_run_for(uv_timer_t *t) {
  *(int *)t->data = 1;
}

/* Runs the loop for about ms milliseconds. */
static void run_for(uv_loop_t *loop, uint64_t ms) {
  uv_timer_t t;
  int fired = 0;
  uv_timer_init(loop, &t);
  t.data = &fired;
  uv_timer_start(&t, on_run_for, ms, 0);
  while (!fired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

static const char *header(const tb__http_client_req_t *req, const char *name) {
  static char buf[256];
  const tb__http_header_t *h = tb__http_response_header(&req->response, name);
  if (h == NULL)
    return NULL;
  snprintf(buf, sizeof(buf), "%.*s", (int)h->value.len, h->value.base);
  return buf;
}

static void body_contains(const tb__http_client_req_t *req, const char *what) {
  char buf[512];
  snprintf(buf, sizeof(buf), "%.*s", (int)req->response.body_len,
           req->response.body ? req->response.body : "");
  ASSERT_STR_CONTAINS(buf, what);
}

TEST(every_limit_through_the_client) {
  pair_t p;
  pair_start(&p, &(tb__http_server_options_t){ .max_body = 1024 }, NULL);
  result_t r;

  /* 404 and 405 with Allow, JSON bodies. */
  get(&p, "/nowhere", &r);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.http_status, 404);
  body_contains(&p.req, "\"category\": \"user\"");
  get(&p, "/sum", &r);
  ASSERT_EQ_INT(r.http_status, 405);
  ASSERT_STR_EQ(header(&p.req, "Allow"), "POST");

  /* 413: a body over the server's maximum. */
  static char big[4096];
  memset(big, 'x', sizeof(big));
  uv_buf_t bb = uv_buf_init(big, sizeof(big));
  call(&p, &p.req, "POST", p.url, NULL, 0, &bb, &r);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.http_status, 413);
  body_contains(&p.req, "\"error\"");

  /* URLs: the client refuses to send one longer than the server's 414
   * limit (so the two agree), and a long one within it goes through. */
  int n = snprintf(p.url, sizeof(p.url), "%s/echo/", p.base);
  memset(p.url + n, 'a', 9000);
  p.url[n + 9000] = '\0';
  p.req.url = (tb_slice_t){ p.url, strlen(p.url) };
  p.req.method = "GET";
  ASSERT_ERR(tb__http_client_send(&p.client, &p.req, on_result), TB_EURL);
  p.url[n + 7000] = '\0';
  call(&p, &p.req, "GET", p.url, NULL, 0, NULL, &r);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.http_status, 200);
  ASSERT_EQ_INT(p.req.response.body_len, 7000);

  /* 431: a header block over 16 KiB. */
  static char value[17000];
  memset(value, 'v', sizeof(value) - 1);
  tb__http_header_t h = { TB_SLICE_LIT("X-Big"), { value, sizeof(value) - 1 } };
  snprintf(p.url, sizeof(p.url), "%s/echo/ok", p.base);
  call(&p, &p.req, "GET", p.url, &h, 1, NULL, &r);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.http_status, 431);

  /* After every refusal the next request still works. */
  call(&p, &p.req, "GET", p.url, NULL, 0, NULL, &r);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.http_status, 200);
  ASSERT_MEM_EQ_STR(p.req.response.body, p.req.response.body_len, "ok");
  pair_finish(&p);
}

TEST(server_closes_idle_connections_client_reconnects) {
  pair_t p;
  pair_start(&p, &(tb__http_server_options_t){ .idle_timeout_ms = 50 }, NULL);
  result_t r;
  get(&p, "/echo/one", &r);
  ASSERT_EQ_INT(r.http_status, 200);
  call(&p, &p.req, "GET", p.url, NULL, 0, NULL, &r);
  ASSERT_EQ_INT(r.http_status, 200);
  ASSERT_EQ_INT(p.client.n_connects, 1); /* kept alive */
  /* Let the server's idle timeout close the pooled connection. */
  run_for(&p.loop, 300);
  get(&p, "/echo/two", &r);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.http_status, 200);
  ASSERT_MEM_EQ_STR(p.req.response.body, p.req.response.body_len, "two");
  ASSERT_EQ_INT(p.client.n_connects, 2);
  pair_finish(&p);
}

TEST(client_timeout_against_a_handler_that_never_answers) {
  pair_t p;
  pair_start(&p, NULL, NULL);
  p.req.timeout_ms = 100;
  result_t r;
  uint64_t t0 = uv_now(&p.loop);
  get(&p, "/hang", &r);
  ASSERT_ERR(r.status, TB_ETIMEDOUT);
  ASSERT_GE(uv_now(&p.loop) - t0, 90);
  /* The client dropped the connection; the server tells the handler. */
  while (p.held_aborted == 0)
    uv_run(&p.loop, UV_RUN_ONCE);
  ASSERT(p.held == NULL);
  /* The pair still works afterwards, on a new connection. */
  p.req.timeout_ms = 0;
  get(&p, "/echo/after", &r);
  ASSERT_OK(r.status);
  ASSERT_MEM_EQ_STR(p.req.response.body, p.req.response.body_len, "after");
  pair_finish(&p);
}

TEST_LIST(
  TEST_ENTRY(thousands_of_requests_over_a_small_pool),
  TEST_ENTRY(every_limit_through_the_client),
  TEST_ENTRY(server_closes_idle_connections_client_reconnects),
  TEST_ENTRY(client_timeout_against_a_handler_that_never_answers),
)

/*
 * The HTTP server on a loop, driven by raw uv_tcp clients on the same loop:
 * keep-alive, pipelining with asynchronous handlers, every limit and its
 * status, timeouts, clients that vanish while a handler holds their
 * request, IPv6, graceful close; and the router on its own.
 */
#define _GNU_SOURCE  /* memmem */
#include "tb_test.h"
#include "fixtures.h"

#include <unistd.h>

#include "core/buf.h"
#include "http/router.h"
#include "http/server.h"
#include "http/server_internal.h"

/* ------------------------------------------------------------ fixture */

static uv_loop_t loop;
static tb__http_server_t server;
static tb__http_router_t router;
static int port;
static int server_closed;
static int clients_open;
static int close_server_when_clients_done;

static void on_server_closed(tb__http_server_t *s) {
  ASSERT(s == &server);
  server_closed++;
}

static void close_server(void) {
  tb__http_server_close(&server, on_server_closed);
}

static void h_sync(tb__http_request_t *req);
static void h_async(tb__http_request_t *req);
static void h_hold(tb__http_request_t *req);
static void h_big(tb__http_request_t *req);
static void h_files(tb__http_request_t *req);

static void setup_with(tb__http_server_options_t *opts, const char *host) {
  ASSERT_OK(uv_loop_init(&loop));
  tb__http_router_init(&router);
  ASSERT_OK(tb__http_router_add(&router, "GET", "/sync/{x}", h_sync, NULL));
  ASSERT_OK(tb__http_router_add(&router, "POST", "/sync/{x}", h_sync, NULL));
  ASSERT_OK(tb__http_router_add(&router, "GET", "/async/{ms}", h_async, NULL));
  ASSERT_OK(tb__http_router_add(&router, "GET", "/hold", h_hold, NULL));
  ASSERT_OK(tb__http_router_add(&router, "GET", "/big", h_big, NULL));
  ASSERT_OK(tb__http_router_add(&router, "GET", "/files/{path...}", h_files, NULL));
  opts->router = &router;
  ASSERT_OK(tb__http_server_init(&loop, &server, opts));
  server_closed = 0;
  clients_open = 0;
  close_server_when_clients_done = 1;
  if (host != NULL) {
    ASSERT_OK(tb__http_server_listen(&server, host, 0));
    port = tb__http_server_port(&server);
    ASSERT_GT(port, 0);
  }
}

static void setup(void) {
  tb__http_server_options_t opts = { 0 };
  setup_with(&opts, "127.0.0.1");
}

static void teardown(void) {
  ASSERT_EQ_INT(server_closed, 1);
  tb__http_router_free(&router);
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------------ handlers */

static void h_sync(tb__http_request_t *req) {
  tb_slice_t q = { "", 0 };
  int rc = tb__http_request_query(req, "q", &q);
  ASSERT(rc >= 0);
  const tb_slice_t *x = tb__http_request_param(req, "x");
  ASSERT(x != NULL);
  size_t cap = 64 + req->method.len + req->path.len + x->len + q.len + req->body.len;
  char *body = tb__arena_alloc(&req->arena, cap);
  int n = snprintf(body, cap, "%.*s %.*s x=%.*s q=%.*s body=%.*s",
                   (int)req->method.len, req->method.base, (int)req->path.len,
                   req->path.base, (int)x->len, x->base, (int)q.len, q.base,
                   (int)req->body.len, req->body.base);
  tb__http_header_t h = { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("text/plain") };
  uv_buf_t b = uv_buf_init(body, (unsigned)n);
  tb__http_respond(req, 200, &h, 1, &b, 1);
}

typedef struct {
  uv_timer_t timer;
  tb__http_request_t *req;
} delayed_t;

static int async_answered;

static void on_delayed_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_delay(uv_timer_t *t) {
  delayed_t *d = t->data;
  tb__http_request_t *req = d->req;
  const tb_slice_t *ms = tb__http_request_param(req, "ms");
  char *body = tb__arena_alloc(&req->arena, 64);
  int n = ms ? snprintf(body, 64, "async %.*s", (int)ms->len, ms->base)
             : snprintf(body, 64, "late");
  async_answered++;
  tb__http_respond_json(req, 200, body, (size_t)n);
  uv_close((uv_handle_t *)t, on_delayed_closed);
}

static void answer_later(tb__http_request_t *req, uint64_t ms) {
  delayed_t *d = xmalloc(sizeof(*d));
  d->req = req;
  uv_timer_init(&loop, &d->timer);
  d->timer.data = d;
  uv_timer_start(&d->timer, on_delay, ms, 0);
}

static void h_async(tb__http_request_t *req) {
  const tb_slice_t *ms = tb__http_request_param(req, "ms");
  answer_later(req, (uint64_t)strtoul(ms->base, NULL, 10));
}

/* /hold keeps the request until the test decides. */
static tb__http_request_t *held;
static int held_aborts, held_abort_status, held_done, held_done_status;
static int answer_in_abort;
static void (*on_held)(void);

static void on_held_abort(tb__http_request_t *req, int status) {
  ASSERT(req == held);
  ASSERT(req->aborted);
  held_aborts++;
  held_abort_status = status;
  if (answer_in_abort)
    tb__http_respond_error(req, 503, "gone");
  else
    answer_later(req, 30);  /* a long poll that ends later anyway */
}

static void on_held_done(tb__http_request_t *req, int status) {
  ASSERT(req == held);
  held_done++;
  held_done_status = status;
  held = NULL;
}

static void h_hold(tb__http_request_t *req) {
  held = req;
  req->on_abort = on_held_abort;
  req->on_done = on_held_done;
  if (on_held)
    on_held();
}

/* A body larger than the inline limit, lent to the server until on_done. */
#define BIG_LEN (200u * 1024u)
static int big_done;

static void on_big_done(tb__http_request_t *req, int status) {
  ASSERT_OK(status);
  free(req->data);
  big_done++;
}

static void h_big(tb__http_request_t *req) {
  char *body = xmalloc(BIG_LEN);
  for (size_t i = 0; i < BIG_LEN; i++)
    body[i] = (char)('a' + i % 26);
  req->data = body;
  req->on_done = on_big_done;
  uv_buf_t b[2] = { uv_buf_init(body, BIG_LEN / 2), uv_buf_init(body + BIG_LEN / 2, BIG_LEN / 2) };
  tb__http_respond(req, 200, NULL, 0, b, 2);
}

static void h_files(tb__http_request_t *req) {
  const tb_slice_t *p = tb__http_request_param(req, "path");
  tb__http_respond(req, 200, NULL, 0, &(uv_buf_t){ (char *)p->base, p->len }, 1);
}

/* ------------------------------------------------------------ raw client */

typedef struct client_s {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  tb__buf_t in;
  int connected, eof, closed;
  uint64_t eof_at;
  int want;        /* close after this many complete responses (0: at EOF) */
  const char *to_send;
  size_t to_send_len;
  void (*on_data)(struct client_s *c);
  void *data;
} client_t;

typedef struct {
  int status;
  char head[1024];
  const char *body;
  size_t body_len;
} resp_t;

/* Complete responses in buf, in order (100 Continue counts as one). */
static int parse_responses(const tb__buf_t *buf, resp_t *out, int max) {
  int n = 0;
  size_t off = 0;
  while (n < max && off < buf->len) {
    const char *start = buf->base + off;
    size_t left = buf->len - off;
    const char *end = memmem(start, left, "\r\n\r\n", 4);
    if (end == NULL)
      break;
    size_t head_len = (size_t)(end - start) + 4;
    resp_t *r = &out[n];
    ASSERT(sscanf(start, "HTTP/1.1 %d", &r->status) == 1);
    size_t hl = head_len < sizeof(r->head) ? head_len : sizeof(r->head) - 1;
    memcpy(r->head, start, hl);
    r->head[hl] = '\0';
    size_t cl = 0;
    const char *p = strstr(r->head, "Content-Length: ");
    if (p)
      cl = strtoul(p + 16, NULL, 10);
    if (left < head_len + cl)
      break;
    r->body = start + head_len;
    r->body_len = cl;
    off += head_len + cl;
    n++;
  }
  return n;
}

static void on_client_closed(uv_handle_t *h) {
  client_t *c = h->data;
  c->closed = 1;
  if (--clients_open == 0 && close_server_when_clients_done)
    close_server();
}

static void client_close(client_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
}

static void on_client_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  client_t *c = h->data;
  tb__buf_reserve(&c->in, 65536);
  buf->base = c->in.base + c->in.len;
  buf->len = c->in.cap - c->in.len - 1;
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  client_t *c = s->data;
  if (nread < 0) {
    c->eof = 1;
    c->eof_at = uv_now(&loop);
    uv_read_stop(s);
  } else {
    c->in.len += (size_t)nread;
  }
  if (c->on_data)
    c->on_data(c);
  if (c->closed || uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  static resp_t r[256];
  if (c->eof || (c->want > 0 && parse_responses(&c->in, r, 256) >= c->want))
    client_close(c);
}

static void client_send(client_t *c, const char *data, size_t len) {
  tb_test_write_copy((uv_stream_t *)&c->tcp, data, len);
}

static void on_client_connect(uv_connect_t *cr, int status) {
  client_t *c = cr->data;
  ASSERT_OK(status);
  c->connected = 1;
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read));
  if (c->to_send_len > 0)
    client_send(c, c->to_send, c->to_send_len);
}

/* Connects, sends `send` (may be NULL), and closes after `want` responses
 * or at EOF. */
static void client_start(client_t *c, const char *host, const char *send, size_t len,
                         int want) {
  memset(c, 0, sizeof(*c));
  tb__buf_init(&c->in);
  c->want = want;
  c->to_send = send;
  c->to_send_len = send ? len : 0;
  ASSERT_OK(uv_tcp_init(&loop, &c->tcp));
  c->tcp.data = c;
  c->connect_req.data = c;
  struct sockaddr_storage ss;
  if (strchr(host, ':'))
    ASSERT_OK(uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss));
  else
    ASSERT_OK(uv_ip4_addr(host, port, (struct sockaddr_in *)&ss));
  ASSERT_OK(uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&ss,
                           on_client_connect));
  clients_open++;
}

static void client_start_str(client_t *c, const char *send, int want) {
  client_start(c, "127.0.0.1", send, send ? strlen(send) : 0, want);
}

/* Runs the loop until this client has closed (the server stays up). */
static void run_until_closed(client_t *c) {
  while (!c->closed)
    uv_run(&loop, UV_RUN_ONCE);
}

static void client_free(client_t *c) {
  tb__buf_free(&c->in);
}

#define ASSERT_BODY(r, s) ASSERT_MEM_EQ_STR((r).body, (r).body_len, (s))

/* ------------------------------------------------------------ tests */

/* 100 requests one after another on one connection. */
static int seq_sent;

static void seq_on_data(client_t *c) {
  resp_t r[128];
  int n = parse_responses(&c->in, r, 128);
  if (n == seq_sent && seq_sent < 100) {
    char req[128];
    int len = snprintf(req, sizeof(req), "GET /sync/%d?q=%d HTTP/1.1\r\nHost: x\r\n\r\n",
                       seq_sent, seq_sent * 2);
    seq_sent++;
    client_send(c, req, (size_t)len);
  }
}

TEST(keep_alive_many_sequential_requests) {
  setup();
  client_t c;
  seq_sent = 1;
  client_start_str(&c, "GET /sync/0?q=0 HTTP/1.1\r\nHost: x\r\n\r\n", 100);
  c.on_data = seq_on_data;
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  resp_t r[128];
  ASSERT_EQ_INT(parse_responses(&c.in, r, 128), 100);
  for (int i = 0; i < 100; i++) {
    char want[64];
    snprintf(want, sizeof(want), "GET /sync/%d x=%d q=%d body=", i, i, i * 2);
    ASSERT_EQ_INT(r[i].status, 200);
    ASSERT_BODY(r[i], want);
    ASSERT(strstr(r[i].head, "Connection") == NULL);
    ASSERT_STR_CONTAINS(r[i].head, "Content-Type: text/plain\r\n");
  }
  ASSERT_EQ_INT(server.n_requests, 100);
  client_free(&c);
  teardown();
}

TEST(pipelined_answers_stay_in_order) {
  setup();
  client_t c;
  const char *reqs = "GET /async/60 HTTP/1.1\r\n\r\n"
                     "GET /sync/a HTTP/1.1\r\n\r\n"
                     "GET /async/10 HTTP/1.1\r\n\r\n"
                     "POST /sync/b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                     "GET /sync/c HTTP/1.1\r\nConnection: close\r\n\r\n";
  async_answered = 0;
  client_start_str(&c, reqs, 0);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  resp_t r[8];
  ASSERT_EQ_INT(parse_responses(&c.in, r, 8), 5);
  ASSERT_BODY(r[0], "async 60");
  ASSERT_BODY(r[1], "GET /sync/a x=a q= body=");
  ASSERT_BODY(r[2], "async 10");
  ASSERT_BODY(r[3], "POST /sync/b x=b q= body=hello");
  ASSERT_BODY(r[4], "GET /sync/c x=c q= body=");
  ASSERT_STR_CONTAINS(r[4].head, "Connection: close\r\n");
  ASSERT(strstr(r[3].head, "Connection") == NULL);
  ASSERT_STR_CONTAINS(r[0].head, "Content-Type: application/json\r\n");
  ASSERT(c.eof);
  ASSERT_EQ_INT(async_answered, 2);
  client_free(&c);
  teardown();
}

TEST(pipeline_back_pressure) {
  tb__http_server_options_t opts = { .max_pipeline = 1 };
  setup_with(&opts, "127.0.0.1");
  tb__buf_t reqs = TB_BUF_INIT;
  for (int i = 0; i < 20; i++)
    tb__buf_printf(&reqs, "GET /async/%d HTTP/1.1\r\nX-Pad: %0*d\r\n\r\n",
                   1 + (i * 7) % 5, 1000 + i * 300, 0);
  client_t c;
  client_start(&c, "127.0.0.1", reqs.base, reqs.len, 20);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  resp_t r[32];
  ASSERT_EQ_INT(parse_responses(&c.in, r, 32), 20);
  for (int i = 0; i < 20; i++) {
    char want[32];
    snprintf(want, sizeof(want), "async %d", 1 + (i * 7) % 5);
    ASSERT_BODY(r[i], want);
  }
  tb__buf_free(&reqs);
  client_free(&c);
  teardown();
}

/* One exchange on its own connection: the response, and whether the
 * server closed the connection. */
static void expect_status(const char *request, size_t len, int status,
                          const char *body_part, int closes) {
  client_t c;
  client_start(&c, "127.0.0.1", request, len, closes ? 0 : 1);
  close_server_when_clients_done = 0;
  run_until_closed(&c);
  resp_t r[4];
  ASSERT_EQ_INT(parse_responses(&c.in, r, 4), 1);
  ASSERT_EQ_INT(r[0].status, status);
  char *body = tb__strndup(r[0].body, r[0].body_len);
  ASSERT_STR_CONTAINS(body, body_part);
  free(body);
  if (closes) {
    ASSERT(c.eof);
    ASSERT_STR_CONTAINS(r[0].head, "Connection: close\r\n");
  }
  client_free(&c);
}

/* A head that the server answers at once (on_head) and that llhttp finds
 * malformed only after it (a Transfer-Encoding that is not chunked):
 * that one answer goes out, the parse error does not answer the request
 * a second time (which logged "answered twice" for every such request),
 * and the connection closes. */
static void refuse_at_head(tb__http_request_t *req) {
  if (tb__slice_eq_str(req->path, "/refused"))
    tb__http_respond_error(req, 404, "refused at the head");
}

TEST(answer_at_the_head_then_a_parse_error) {
  tb__http_server_options_t opts = { 0 };
  opts.on_head = refuse_at_head;
  setup_with(&opts, "127.0.0.1");
  /* The server's log goes to stderr: keep it in a file to read it. */
  char log_path[] = "/tmp/tb-test-log-XXXXXX";
  int log_fd = mkstemp(log_path);
  ASSERT(log_fd >= 0);
  fflush(stderr);
  int saved = dup(2);
  ASSERT(dup2(log_fd, 2) >= 0);
  static const char req[] = "POST /refused HTTP/1.1\r\nTransfer-Encoding: chu)ked\r\n\r\n";
  client_t c;
  client_start(&c, "127.0.0.1", req, sizeof(req) - 1, 0);
  run_until_closed(&c);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  resp_t r[4];
  ASSERT_EQ_INT(parse_responses(&c.in, r, 4), 1);
  ASSERT_EQ_INT(r[0].status, 404);
  ASSERT(c.eof);
  client_free(&c);
  tb__buf_t text = TB_BUF_INIT;
  char chunk[4096];
  ssize_t n;
  lseek(log_fd, 0, SEEK_SET);
  while ((n = read(log_fd, chunk, sizeof(chunk))) > 0)
    tb__buf_append(&text, chunk, (size_t)n);
  close(log_fd);
  unlink(log_path);
  ASSERT(text.len == 0 || memmem(text.base, text.len, "answered twice", 14) == NULL);
  tb__buf_free(&text);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  teardown();
}

TEST(every_limit_has_its_status) {
  tb__http_server_options_t opts = { .max_body = 1000 };
  setup_with(&opts, "127.0.0.1");
  char *s = tb_test_repeat("GET /sync/x HTTP/1.1\r\nX-Big: ", 'b', 17000, "\r\n\r\n");
  expect_status(s, strlen(s), 431,
                "{\"error\": \"request header fields too large\", \"category\": \"user\"}", 1);
  free(s);
  s = tb_test_repeat("GET /sync/", 'u', 9000, " HTTP/1.1\r\n\r\n");
  expect_status(s, strlen(s), 414, "\"request URL too long\"", 1);
  free(s);
  s = tb_test_repeat("POST /sync/x HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 'x', 1001, "");
  expect_status(s, strlen(s), 413, "\"request body too large\"", 1);
  free(s);
  tb__buf_t chunked = TB_BUF_INIT;
  tb__buf_append_str(&chunked, "POST /sync/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 2; i++) {
    tb__buf_append_str(&chunked, "300\r\n");
    for (int k = 0; k < 0x300; k++)
      tb__buf_append(&chunked, "c", 1);
    tb__buf_append_str(&chunked, "\r\n");
  }
  expect_status(chunked.base, chunked.len, 413, "\"category\": \"user\"", 1);
  tb__buf_free(&chunked);
  expect_status("\x16\x03\x01garbage\r\n\r\n", 14, 400, "\"malformed request\"", 1);
  const char *del = "DELETE /sync/x HTTP/1.1\r\n\r\n";
  expect_status(del, strlen(del), 405, "\"method not allowed\"", 0);
  const char *nf = "GET /nope HTTP/1.1\r\n\r\n";
  expect_status(nf, strlen(nf), 404,
                "{\"error\": \"not found\", \"category\": \"user\"}", 0);
  const char *bad = "GET /sync/%zz HTTP/1.1\r\n\r\n";
  expect_status(bad, strlen(bad), 400, "percent-encoding", 0);
  close_server();
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  teardown();
}

TEST(method_not_allowed_lists_methods) {
  setup();
  client_t c;
  client_start_str(&c, "PUT /sync/1 HTTP/1.1\r\n\r\n"
                       "HEAD /sync/1 HTTP/1.1\r\nConnection: close\r\n\r\n", 0);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  resp_t r[4];
  ASSERT_EQ_INT(parse_responses(&c.in, r, 4), 1);  /* HEAD: no body */
  ASSERT_EQ_INT(r[0].status, 405);
  ASSERT_STR_CONTAINS(r[0].head, "\r\nAllow: GET, POST\r\n");
  ASSERT_STR_CONTAINS(r[0].head, "Content-Type: application/json\r\n");
  /* The HEAD answer carries the GET body's length but no body. */
  const char *second = r[0].body + r[0].body_len;
  ASSERT_EQ_INT(strncmp(second, "HTTP/1.1 200 OK\r\n", 17), 0);
  ASSERT(strstr(second, "Content-Length: 25\r\n") != NULL);  /* "HEAD /sync/1 x=1 q= body=" */
  ASSERT_EQ_INT(c.in.len, (size_t)(strstr(second, "\r\n\r\n") + 4 - c.in.base));
  client_free(&c);
  teardown();
}

static client_t cont_c;
static int cont_stage;

static void cont_on_data(client_t *c) {
  resp_t r[4];
  int n = parse_responses(&c->in, r, 4);
  if (n == 1 && cont_stage == 0) {
    ASSERT_EQ_INT(r[0].status, 100);
    ASSERT_EQ_INT(c->in.len, 25);
    cont_stage = 1;
    client_send(c, "12345", 5);
  }
}

TEST(expect_100_continue) {
  tb__http_server_options_t opts = { .max_body = 100 };
  setup_with(&opts, "127.0.0.1");
  cont_stage = 0;
  client_start_str(&cont_c, "POST /sync/e HTTP/1.1\r\nExpect: 100-continue\r\n"
                            "Content-Length: 5\r\n\r\n", 2);
  cont_c.on_data = cont_on_data;
  close_server_when_clients_done = 0;
  run_until_closed(&cont_c);
  resp_t r[4];
  ASSERT_EQ_INT(parse_responses(&cont_c.in, r, 4), 2);
  ASSERT_EQ_INT(r[1].status, 200);
  ASSERT_BODY(r[1], "POST /sync/e x=e q= body=12345");
  client_free(&cont_c);
  /* Too large: 413 straight away, no 100. */
  const char *big = "POST /sync/e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n";
  expect_status(big, strlen(big), 413, "too large", 1);
  close_server();
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  teardown();
}

TEST(http10_closes_unless_keep_alive) {
  setup();
  client_t a, b;
  client_start_str(&a, "GET /sync/a HTTP/1.0\r\n\r\n", 0);
  client_start_str(&b, "GET /sync/b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  resp_t r[2];
  ASSERT_EQ_INT(parse_responses(&a.in, r, 2), 1);
  ASSERT(a.eof);
  ASSERT_STR_CONTAINS(r[0].head, "Connection: close\r\n");
  ASSERT_EQ_INT(parse_responses(&b.in, r, 2), 1);
  ASSERT_STR_CONTAINS(r[0].head, "Connection: keep-alive\r\n");
  ASSERT(!b.eof);
  client_free(&a);
  client_free(&b);
  teardown();
}

TEST(large_body_by_reference_and_trailing_params) {
  setup();
  client_t c;
  big_done = 0;
  client_start_str(&c, "GET /big HTTP/1.1\r\n\r\n"
                       "GET /files/weights/step-10%2Ffinal%20x HTTP/1.1\r\n\r\n", 2);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  resp_t r[4];
  ASSERT_EQ_INT(parse_responses(&c.in, r, 4), 2);
  ASSERT_EQ_INT(r[0].body_len, BIG_LEN);
  for (size_t i = 0; i < BIG_LEN; i++)
    ASSERT_EQ_INT(r[0].body[i], 'a' + i % 26);
  ASSERT_BODY(r[1], "weights/step-10/final x");
  ASSERT_EQ_INT(big_done, 1);
  client_free(&c);
  teardown();
}

TEST(idle_timeout_closes_connection) {
  tb__http_server_options_t opts = { .idle_timeout_ms = 100 };
  setup_with(&opts, "127.0.0.1");
  client_t c;
  client_start_str(&c, "GET /sync/1 HTTP/1.1\r\n\r\n", 0);
  uv_update_time(&loop);
  uint64_t t0 = uv_now(&loop);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  resp_t r[2];
  ASSERT_EQ_INT(parse_responses(&c.in, r, 2), 1);
  ASSERT(c.eof);
  ASSERT_GE(c.eof_at - t0, 90);
  ASSERT_LT(c.eof_at - t0, 2000);
  client_free(&c);
  teardown();
}

TEST(header_and_body_timeouts) {
  tb__http_server_options_t opts = { .header_timeout_ms = 100, .body_timeout_ms = 150,
                                    .idle_timeout_ms = 5000 };
  setup_with(&opts, "127.0.0.1");
  client_t a, b;
  client_start_str(&a, "GET /sync/1 HTTP/1.1\r\nHost: slow", 0);
  client_start_str(&b, "POST /sync/1 HTTP/1.1\r\nContent-Length: 10\r\n\r\n123", 0);
  uv_update_time(&loop);
  uint64_t t0 = uv_now(&loop);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT(a.eof && b.eof);
  ASSERT_EQ_INT(a.in.len, 0);
  ASSERT_EQ_INT(b.in.len, 0);
  ASSERT_GE(a.eof_at - t0, 90);
  ASSERT_LT(a.eof_at - t0, 1000);
  ASSERT_GE(b.eof_at - t0, 140);
  ASSERT_LT(b.eof_at - t0, 1000);
  client_free(&a);
  client_free(&b);
  teardown();
}

static client_t *drop_c;
static void drop_client_when_held(void) {
  client_close(drop_c);
}

static void run_disconnect(int in_abort) {
  setup();
  client_t c;
  held = NULL;
  held_aborts = held_done = 0;
  answer_in_abort = in_abort;
  drop_c = &c;
  on_held = drop_client_when_held;
  async_answered = 0;
  /* The second request is answered at once but waits behind the held one;
   * it is dropped when the client goes. */
  client_start_str(&c, "GET /hold HTTP/1.1\r\n\r\nGET /sync/2 HTTP/1.1\r\n\r\n", 0);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  on_held = NULL;
  ASSERT_EQ_INT(c.in.len, 0);
  ASSERT_EQ_INT(server.n_requests, 2);
  ASSERT_EQ_INT(held_aborts, 1);
  ASSERT_EQ_INT(held_abort_status, TB_ECLOSED);
  ASSERT_EQ_INT(held_done, 1);
  ASSERT_EQ_INT(held_done_status, TB_ECLOSED);
  ASSERT_EQ_INT(async_answered, in_abort ? 0 : 1);
  ASSERT(held == NULL);
  client_free(&c);
  teardown();
}

TEST(client_disconnect_while_handler_holds_request) {
  run_disconnect(0);
}

TEST(client_disconnect_answered_in_on_abort) {
  run_disconnect(1);
}

TEST(ipv6_loopback) {
  tb__http_server_options_t opts = { 0 };
  setup_with(&opts, NULL);
  int rc = tb__http_server_listen(&server, "::1", 0);
  if (rc != 0) {
    close_server();
    ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
    teardown();
    SKIP("no IPv6 loopback (%s)", uv_err_name(rc));
  }
  port = tb__http_server_port(&server);
  ASSERT_GT(port, 0);
  client_t c;
  client_start(&c, "::1", "GET /sync/six HTTP/1.1\r\n\r\n", 26, 1);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  resp_t r[2];
  ASSERT_EQ_INT(parse_responses(&c.in, r, 2), 1);
  ASSERT_BODY(r[0], "GET /sync/six x=six q= body=");
  client_free(&c);
  teardown();
}

/* Graceful close: the in-flight request is answered, the idle connection
 * closed, the listener gone, and close_cb comes last. */
static client_t gc_busy, gc_idle;

static void close_when_held(void) {
  ASSERT_EQ_INT(server_closed, 0);
  close_server();
  ASSERT_EQ_INT(server_closed, 0);
  answer_later(held, 50);
}

TEST(graceful_close_with_request_in_flight) {
  setup();
  close_server_when_clients_done = 0;
  held = NULL;
  held_done = 0;
  on_held = NULL;
  client_start_str(&gc_idle, "GET /sync/i HTTP/1.1\r\n\r\n", 0);
  while (gc_idle.in.len == 0)
    uv_run(&loop, UV_RUN_ONCE);
  on_held = close_when_held;
  client_start_str(&gc_busy, "GET /hold HTTP/1.1\r\n\r\n", 0);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  on_held = NULL;
  ASSERT_EQ_INT(server_closed, 1);
  ASSERT_EQ_INT(held_done, 1);
  ASSERT_EQ_INT(held_done_status, 0);
  resp_t r[2];
  ASSERT_EQ_INT(parse_responses(&gc_busy.in, r, 2), 1);
  ASSERT_EQ_INT(r[0].status, 200);
  ASSERT_BODY(r[0], "late");
  ASSERT_STR_CONTAINS(r[0].head, "Connection: close\r\n");
  ASSERT(gc_busy.eof && gc_idle.eof);
  ASSERT(gc_idle.eof_at <= gc_busy.eof_at);
  client_free(&gc_busy);
  client_free(&gc_idle);
  teardown();
}

TEST(close_right_after_init) {
  tb__http_server_options_t opts = { 0 };
  setup_with(&opts, NULL);
  close_server();
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  teardown();
}

TEST(init_rejects_missing_handler) {
  ASSERT_OK(uv_loop_init(&loop));
  tb__http_server_options_t opts = { 0 };
  ASSERT_ERR(tb__http_server_init(&loop, &server, &opts), TB_EINVAL);
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------------ router */

static void h_dummy(tb__http_request_t *req) { (void)req; }
static void h_dummy2(tb__http_request_t *req) { (void)req; }

static int match(tb__http_router_t *r, const char *method, const char *path,
                 tb__arena_t *a, tb__http_route_match_t *m) {
  return tb__http_router_match(r, (tb_slice_t){ method, strlen(method) },
                               (tb_slice_t){ path, strlen(path) }, a, m);
}

TEST(router_params_and_methods) {
  ASSERT_OK(uv_loop_init(&loop));
  tb__http_router_t r;
  tb__http_router_init(&r);
  int data = 7;
  ASSERT_OK(tb__http_router_add(&r, "GET", "/", h_dummy, NULL));
  ASSERT_OK(tb__http_router_add(&r, "GET", "/api/v1/training_runs/{run_id}", h_dummy, &data));
  ASSERT_OK(tb__http_router_add(&r, "DELETE", "/api/v1/training_runs/{run_id}", h_dummy2, NULL));
  ASSERT_OK(tb__http_router_add(&r, "GET",
                                "/api/v1/training_runs/{run_id}/checkpoints/{checkpoint_id...}",
                                h_dummy2, NULL));
  ASSERT_OK(tb__http_router_add(&r, "POST", "/api/v1/{a}/x/{b}", h_dummy, NULL));
  ASSERT_ERR(tb__http_router_add(&r, "GET", "no-slash", h_dummy, NULL), TB_EINVAL);
  ASSERT_ERR(tb__http_router_add(&r, "GET", "/a/{rest...}/b", h_dummy, NULL), TB_EINVAL);
  ASSERT_ERR(tb__http_router_add(&r, "GET", "/a/{}", h_dummy, NULL), TB_EINVAL);
  ASSERT_ERR(tb__http_router_add(&r, "GET", "/a/x{y}", h_dummy, NULL), TB_EINVAL);

  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__http_route_match_t m;
  ASSERT_EQ_INT(match(&r, "GET", "/", &a, &m), 0);
  ASSERT_EQ_INT(m.n_params, 0);
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/run%2D1", &a, &m), 0);
  ASSERT(m.handler == h_dummy && m.data == &data);
  ASSERT_EQ_INT(m.n_params, 1);
  ASSERT_MEM_EQ_STR(m.params[0].name.base, m.params[0].name.len, "run_id");
  ASSERT_STR_EQ(m.params[0].value.base, "run-1");
  ASSERT_EQ_INT(match(&r, "DELETE", "/api/v1/training_runs/r", &a, &m), 0);
  ASSERT(m.handler == h_dummy2);
  ASSERT_EQ_INT(match(&r, "HEAD", "/api/v1/training_runs/r", &a, &m), 0);
  ASSERT(m.handler == h_dummy);
  ASSERT_EQ_INT(match(&r, "PUT", "/api/v1/training_runs/r", &a, &m), 405);
  ASSERT_STR_EQ(m.allow, "GET, DELETE");
  /* Trailing parameter keeps its slashes; %2F in a segment is not a split. */
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/r%2F1/checkpoints/weights/step-10",
                      &a, &m), 0);
  ASSERT_EQ_INT(m.n_params, 2);
  ASSERT_STR_EQ(m.params[0].value.base, "r/1");
  ASSERT_MEM_EQ_STR(m.params[1].name.base, m.params[1].name.len, "checkpoint_id");
  ASSERT_STR_EQ(m.params[1].value.base, "weights/step-10");
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/r/checkpoints/", &a, &m), 404);
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/r/checkpoints", &a, &m), 404);
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/", &a, &m), 404);
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/r/", &a, &m), 404);
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs", &a, &m), 404);
  ASSERT_EQ_INT(match(&r, "GET", "//", &a, &m), 404);
  ASSERT_EQ_INT(match(&r, "POST", "/api/v1/q/x/z", &a, &m), 0);
  ASSERT_STR_EQ(m.params[0].value.base, "q");
  ASSERT_STR_EQ(m.params[1].value.base, "z");
  /* Bad escapes and NUL bytes are refused. */
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/a%2", &a, &m), 400);
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/a%g1", &a, &m), 400);
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/a%00b", &a, &m), 400);
  /* '+' is literal in paths. */
  ASSERT_EQ_INT(match(&r, "GET", "/api/v1/training_runs/a+b", &a, &m), 0);
  ASSERT_STR_EQ(m.params[0].value.base, "a+b");
  tb__arena_free(&a);
  tb__http_router_free(&r);
  ASSERT_LOOP_CLOSE(&loop);
}

/* The view a handler gets of a request whose URL is empty (llhttp lets
 * "CONNECT" without an authority through): an empty URL and the path "/",
 * with no arithmetic on the head buffer that does not exist yet. */
static tb__http_msg_t *empty_url_begin(tb__http_parser_t *p) {
  return p->data;
}

TEST(request_view_of_an_empty_url) {
  ASSERT_OK(uv_loop_init(&loop));
  static const tb__http_parser_cbs_t cbs = { empty_url_begin, NULL };
  tb__http_request_t req;
  memset(&req, 0, sizeof(req));
  tb__arena_init(&req.arena, 0);
  tb__http_msg_init(&req.msg);
  tb__http_parser_t p;
  tb__http_parser_init(&p, &cbs, 0);
  p.data = &req.msg;
  static const char text[] = "CONNECT \n\n";
  size_t used;
  ASSERT_EQ_INT(tb__http_parser_execute(&p, text, sizeof(text) - 1, &used), TB__HTTP_PARSE_MESSAGE);
  ASSERT_EQ_INT(req.msg.url_len, 0);
  ASSERT_OK(tb__http_req_fill_head(&req));
  tb__http_req_fill_body(&req);
  ASSERT(req.url.base != NULL);
  ASSERT_EQ_INT(req.url.len, 0);
  ASSERT_MEM_EQ_STR(req.path.base, req.path.len, "/");
  ASSERT(req.query.base != NULL);
  ASSERT_EQ_INT(req.query.len, 0);
  tb__http_msg_free(&req.msg);
  tb__arena_free(&req.arena);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST(query_parameters) {
  ASSERT_OK(uv_loop_init(&loop));
  tb__http_request_t req;
  memset(&req, 0, sizeof(req));
  tb__arena_init(&req.arena, 0);
  req.query = TB_SLICE_LIT("a=1&name=hello+world%21&empty=&flag&a=2&k%20x=v&bad=%zz");
  tb_slice_t v;
  ASSERT_EQ_INT(tb__http_request_query(&req, "a", &v), 1);
  ASSERT_STR_EQ(v.base, "1");
  ASSERT_EQ_INT(tb__http_request_query(&req, "name", &v), 1);
  ASSERT_STR_EQ(v.base, "hello world!");
  ASSERT_EQ_INT(tb__http_request_query(&req, "empty", &v), 1);
  ASSERT_EQ_INT(v.len, 0);
  ASSERT_EQ_INT(tb__http_request_query(&req, "flag", &v), 1);
  ASSERT_EQ_INT(v.len, 0);
  ASSERT_EQ_INT(tb__http_request_query(&req, "k x", &v), 1);
  ASSERT_STR_EQ(v.base, "v");
  ASSERT_EQ_INT(tb__http_request_query(&req, "missing", &v), 0);
  ASSERT_ERR(tb__http_request_query(&req, "bad", &v), TB_EINVAL);
  req.query = TB_SLICE_LIT("");
  ASSERT_EQ_INT(tb__http_request_query(&req, "a", &v), 0);
  tb_slice_t out;
  ASSERT_OK(tb__http_percent_decode(TB_SLICE_LIT("%e2%9C%93"), 0, &req.arena, &out));
  ASSERT_STR_EQ(out.base, "\xe2\x9c\x93");
  tb__arena_free(&req.arena);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST_LIST(
  TEST_ENTRY(keep_alive_many_sequential_requests),
  TEST_ENTRY(request_view_of_an_empty_url),
  TEST_ENTRY(pipelined_answers_stay_in_order),
  TEST_ENTRY(pipeline_back_pressure),
  TEST_ENTRY(every_limit_has_its_status),
  TEST_ENTRY(answer_at_the_head_then_a_parse_error),
  TEST_ENTRY(method_not_allowed_lists_methods),
  TEST_ENTRY(expect_100_continue),
  TEST_ENTRY(http10_closes_unless_keep_alive),
  TEST_ENTRY(large_body_by_reference_and_trailing_params),
  TEST_ENTRY(idle_timeout_closes_connection),
  TEST_ENTRY(header_and_body_timeouts),
  TEST_ENTRY(client_disconnect_while_handler_holds_request),
  TEST_ENTRY(client_disconnect_answered_in_on_abort),
  TEST_ENTRY(ipv6_loopback),
  TEST_ENTRY(graceful_close_with_request_in_flight),
  TEST_ENTRY(close_right_after_init),
  TEST_ENTRY(init_rejects_missing_handler),
  TEST_ENTRY(router_params_and_methods),
  TEST_ENTRY(query_parameters),
)

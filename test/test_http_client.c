/*
 * http/client: the HTTP/1.1 client against scripted servers made of raw
 * uv_tcp handles on the same loop.  The servers parse just enough of a
 * request (head and Content-Length body) to hand it to a per-test script,
 * which answers, stalls, closes or resets.
 *
 * The servers' handles are unref'd, so uv_run returns as soon as the
 * client has nothing left to do: every test therefore also checks that
 * idle pooled connections and the client's timers do not keep the loop
 * alive, and that requests in flight do.
 */
#define _GNU_SOURCE /* memmem */
#include "tb_test.h"
#include "fixtures.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "http/client.h"
#include "http/transport.h"

/* ------------------------------------------------------ scripted server */

typedef struct srv_s srv_t;

typedef struct sconn_s {
  uv_tcp_t tcp;
  srv_t *srv;
  tb__buf_t in;
  int index;   /* accept order, from 0 */
  int n_req;   /* requests seen on this connection */
  int closed;
  int refs;    /* the handle plus pending delayed actions */
} sconn_t;

/* Called for each complete request; head_len counts the blank line. */
typedef void (*srv_script_t)(sconn_t *c, const char *req, size_t head_len,
                             size_t total);

struct srv_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port;
  int accepts;
  int requests;
  int eofs;          /* connections the client ended */
  srv_script_t script;
  sconn_t *conns[256];
  int n_conns;
  char paths[256][64];
  int n_paths;
  char last_head[4096];
  tb__buf_t last_body;
  void *data;
};

static void sconn_unref_mem(sconn_t *c) {
  if (--c->refs == 0) {
    tb__buf_free(&c->in);
    free(c);
  }
}

static void on_sconn_closed(uv_handle_t *h) { sconn_unref_mem(h->data); }

static void sconn_close(sconn_t *c) {
  if (c->closed)
    return;
  c->closed = 1;
  uv_close((uv_handle_t *)&c->tcp, on_sconn_closed);
}

static void sconn_reset(sconn_t *c) {
  if (c->closed)
    return;
  c->closed = 1;
  ASSERT_OK(uv_tcp_close_reset(&c->tcp, on_sconn_closed));
}

static void sconn_send(sconn_t *c, const char *s, size_t n) {
  if (!c->closed)
    tb_test_write_copy((uv_stream_t *)&c->tcp, s, n);
}

static void sconn_send_str(sconn_t *c, const char *s) {
  sconn_send(c, s, strlen(s));
}

enum { LATER_SEND, LATER_CLOSE, LATER_RESET };

typedef struct later_s {
  uv_timer_t timer;
  sconn_t *c;
  int what;
  char *data;
  size_t n;
} later_t;

static void on_later_closed(uv_handle_t *h) {
  later_t *l = h->data;
  sconn_unref_mem(l->c);
  free(l->data);
  free(l);
}

static void on_later(uv_timer_t *t) {
  later_t *l = t->data;
  if (!l->c->closed) {
    if (l->what == LATER_SEND)
      sconn_send(l->c, l->data, l->n);
    else if (l->what == LATER_CLOSE)
      sconn_close(l->c);
    else
      sconn_reset(l->c);
  }
  uv_close((uv_handle_t *)t, on_later_closed);
}

/* Does `what` after ms milliseconds (sending s[0..n) for LATER_SEND). */
static void sconn_later(sconn_t *c, int what, const char *s, size_t n,
                        uint64_t ms) {
  later_t *l = xmalloc(sizeof(*l));
  memset(l, 0, sizeof(*l));
  l->c = c;
  l->what = what;
  if (n > 0) {
    l->data = xmalloc(n);
    memcpy(l->data, s, n);
    l->n = n;
  }
  c->refs++;
  ASSERT_OK(uv_timer_init(c->srv->loop, &l->timer));
  l->timer.data = l;
  ASSERT_OK(uv_timer_start(&l->timer, on_later, ms, 0));
}

static void respond(sconn_t *c, int status, const char *body) {
  char head[256];
  snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n",
           status, strlen(body));
  tb__buf_t b = TB_BUF_INIT;
  ASSERT_OK(tb__buf_append_str(&b, head));
  ASSERT_OK(tb__buf_append_str(&b, body));
  sconn_send(c, b.base, b.len);
  tb__buf_free(&b);
}

static size_t find_content_length(const char *head, size_t n) {
  for (size_t i = 0; i + 16 < n; i++)
    if (strncasecmp(head + i, "\ncontent-length:", 16) == 0)
      return (size_t)strtoul(head + i + 16, NULL, 10);
  return 0;
}

static void sconn_process(sconn_t *c) {
  srv_t *s = c->srv;
  while (!c->closed) {
    char *end = c->in.len ? memmem(c->in.base, c->in.len, "\r\n\r\n", 4)
                          : NULL;
    if (end == NULL)
      return;
    size_t head_len = (size_t)(end - c->in.base) + 4;
    size_t total = head_len + find_content_length(c->in.base, head_len);
    if (c->in.len < total)
      return;
    s->requests++;
    c->n_req++;
    snprintf(s->last_head, sizeof(s->last_head), "%.*s", (int)head_len,
             c->in.base);
    tb__buf_reset(&s->last_body);
    ASSERT_OK(tb__buf_append(&s->last_body, c->in.base + head_len,
                             total - head_len));
    const char *sp = memchr(c->in.base, ' ', head_len);
    const char *sp2 = sp ? memchr(sp + 1, ' ', head_len - (size_t)(sp + 1 -
                                                          c->in.base)) : NULL;
    if (sp && sp2 && s->n_paths < 256)
      snprintf(s->paths[s->n_paths++], 64, "%.*s", (int)(sp2 - sp - 1),
               sp + 1);
    /* The script may close the connection: keep the bytes alive. */
    c->refs++;
    s->script(c, c->in.base, head_len, total);
    tb__buf_consume(&c->in, total);
    sconn_unref_mem(c);
  }
}

static void on_salloc(uv_handle_t *h, size_t sug, uv_buf_t *buf) {
  static char slab[65536];
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void on_sread(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  sconn_t *c = st->data;
  if (nread < 0) {
    c->srv->eofs++;
    sconn_close(c);
    return;
  }
  ASSERT_OK(tb__buf_append(&c->in, buf->base, (size_t)nread));
  sconn_process(c);
}

static void on_sconn(uv_stream_t *l, int status) {
  srv_t *s = l->data;
  ASSERT_OK(status);
  sconn_t *c = xmalloc(sizeof(*c));
  memset(c, 0, sizeof(*c));
  c->srv = s;
  c->refs = 1;
  c->index = s->accepts++;
  ASSERT_OK(uv_tcp_init(s->loop, &c->tcp));
  c->tcp.data = c;
  ASSERT_OK(uv_accept(l, (uv_stream_t *)&c->tcp));
  ASSERT_OK(uv_tcp_nodelay(&c->tcp, 1));
  uv_unref((uv_handle_t *)&c->tcp);
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, on_salloc, on_sread));
  ASSERT_LT(s->n_conns, 256);
  s->conns[s->n_conns++] = c;
  c->refs++; /* the server's table */
}

/* Listens on 127.0.0.1 (or ::1 when ipv6) at a free port.  Returns 0, or
 * the bind error for ::1 on a machine without IPv6. */
static int srv_start_on(srv_t *s, uv_loop_t *loop, srv_script_t script,
                        int ipv6) {
  memset(s, 0, sizeof(*s));
  s->loop = loop;
  s->script = script;
  ASSERT_OK(uv_tcp_init(loop, &s->listener));
  s->listener.data = s;
  union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    struct sockaddr_storage ss;
  } a;
  if (ipv6)
    ASSERT_OK(uv_ip6_addr("::1", 0, &a.in6));
  else
    ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &a.in4));
  int rc = uv_tcp_bind(&s->listener, &a.sa, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->listener, 128, on_sconn);
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->listener, NULL);
    return rc;
  }
  int len = sizeof(a);
  ASSERT_OK(uv_tcp_getsockname(&s->listener, &a.sa, &len));
  s->port = ntohs(ipv6 ? a.in6.sin6_port : a.in4.sin_port);
  uv_unref((uv_handle_t *)&s->listener);
  return 0;
}

static void srv_start(srv_t *s, uv_loop_t *loop, srv_script_t script) {
  ASSERT_OK(srv_start_on(s, loop, script, 0));
}

static void srv_close(srv_t *s) {
  uv_close((uv_handle_t *)&s->listener, NULL);
  for (int i = 0; i < s->n_conns; i++) {
    sconn_close(s->conns[i]);
    sconn_unref_mem(s->conns[i]);
  }
  s->n_conns = 0;
  tb__buf_free(&s->last_body);
}

/* --------------------------------------------------------- client side */

typedef struct creq_s {
  tb__http_client_req_t req;
  char url[256];
  int calls;
  int status;
  int order;
} creq_t;

static int g_order;
static int g_client_closed;

static void on_done(tb__http_client_req_t *req, int status) {
  creq_t *r = req->data;
  r->calls++;
  r->status = status;
  r->order = g_order++;
}

static void creq_init(creq_t *r, const srv_t *s, const char *path) {
  memset(r, 0, sizeof(*r));
  tb__http_client_req_init(&r->req);
  r->req.data = r;
  snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d%s", s ? s->port : 9,
           path);
  r->req.url = (tb_slice_t){ r->url, strlen(r->url) };
}

static void send_ok(tb__http_client_t *c, creq_t *r) {
  int rc = tb__http_client_send(c, &r->req, on_done);
  if (rc != 0)
    tb_test_fail(__FILE__, __LINE__, "send: %s (%s)", tb_err_name(rc),
                 r->req.message);
}

static void on_client_closed(tb__http_client_t *c) { g_client_closed++; }

static void on_run_for(uv_timer_t *t) {
  uv_close((uv_handle_t *)t, NULL);
  uv_stop(t->loop);
}

/* Runs the loop for about ms milliseconds, whatever else is pending. */
static void run_for(uv_loop_t *loop, uint64_t ms) {
  uv_timer_t t;
  ASSERT_OK(uv_timer_init(loop, &t));
  ASSERT_OK(uv_timer_start(&t, on_run_for, ms, 0));
  uv_run(loop, UV_RUN_DEFAULT);
}

static void finish(uv_loop_t *loop, tb__http_client_t *c, srv_t *s) {
  g_client_closed = 0;
  tb__http_client_close(c, on_client_closed);
  ASSERT_EQ_INT(g_client_closed, 0); /* never synchronously */
  if (s != NULL)
    srv_close(s);
  uv_run(loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(g_client_closed, 1);
  ASSERT_LOOP_CLOSE(loop);
}

/* A loop, a scripted server on it (none when script is NULL) and a
 * client: the setup of most tests. */
typedef struct env_s {
  uv_loop_t loop;
  srv_t srv;
  int has_srv;
  tb__http_client_t client;
} env_t;

static void env_start(env_t *e, srv_script_t script,
                      const tb__http_client_opts_t *opts) {
  ASSERT_OK(uv_loop_init(&e->loop));
  e->has_srv = script != NULL;
  if (script != NULL)
    srv_start(&e->srv, &e->loop, script);
  ASSERT_OK(tb__http_client_init(&e->loop, &e->client, opts));
}

static void env_finish(env_t *e) {
  finish(&e->loop, &e->client, e->has_srv ? &e->srv : NULL);
}

/* r for the URL fmt formats (no scripted server behind it). */
__attribute__((format(printf, 2, 3)))
static void creq_url(creq_t *r, const char *fmt, ...) {
  creq_init(r, NULL, "/");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->url, sizeof(r->url), fmt, ap);
  va_end(ap);
  r->req.url = (tb_slice_t){ r->url, strlen(r->url) };
}

/* Sends r and runs the loop until the client has nothing left to do: r
 * was answered, once. */
static void send_wait(env_t *e, creq_t *r) {
  send_ok(&e->client, r);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(r->calls, 1);
}

static void body_is(const tb__http_client_req_t *req, const char *expected) {
  ASSERT_MEM_EQ_STR(req->response.body ? req->response.body : "",
                    req->response.body_len, expected);
}

/* -------------------------------------------------------------- scripts */

static void script_hello(sconn_t *c, const char *req, size_t hl, size_t n) {
  respond(c, 200, "hello");
}

/* Echoes the request body back. */
static void script_echo(sconn_t *c, const char *req, size_t hl, size_t n) {
  char head[128];
  snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
           n - hl);
  sconn_send_str(c, head);
  sconn_send(c, req + hl, n - hl);
}

static void script_never(sconn_t *c, const char *req, size_t hl, size_t n) {}

/* ---------------------------------------------------------------- tests */

#define N_SEQ 2000

typedef struct seq_s {
  creq_t r;
  tb__http_client_t *client;
  int left;
  int bad;
} seq_t;

static void on_seq(tb__http_client_req_t *req, int status) {
  seq_t *s = req->data;
  if (status != 0 || req->response.status != 200 ||
      req->response.body_len != 5 || memcmp(req->response.body, "hello", 5))
    s->bad++;
  if (--s->left > 0) {
    int rc = tb__http_client_send(s->client, req, on_seq);
    if (rc != 0)
      s->bad++;
  }
}

TEST(keepalive_reuses_one_connection) {
  env_t env;
  env_start(&env, script_hello, NULL);

  seq_t s;
  memset(&s, 0, sizeof(s));
  creq_init(&s.r, &env.srv, "/poll?id=7");
  s.r.req.data = &s;
  s.r.req.timeout_ms = 5000;
  s.client = &env.client;
  s.left = N_SEQ;
  uint64_t t0 = uv_hrtime();
  ASSERT_OK(tb__http_client_send(&env.client, &s.r.req, on_seq));
  uv_run(&env.loop, UV_RUN_DEFAULT);
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  ASSERT_EQ_INT(s.left, 0);
  ASSERT_EQ_INT(s.bad, 0);
  ASSERT_EQ_INT(env.srv.accepts, 1);
  ASSERT_EQ_INT(env.srv.requests, N_SEQ);
  ASSERT_EQ_INT(env.client.n_connects, 1);
  ASSERT_EQ_INT(s.r.req.reused_connection, 1);
  fprintf(stderr, "  %d sequential requests on one connection: %.0f req/s\n",
          N_SEQ, N_SEQ / secs);

  /* What went on the wire. */
  char host[64];
  snprintf(host, sizeof(host), "Host: 127.0.0.1:%d\r\n", env.srv.port);
  ASSERT_STR_CONTAINS(env.srv.last_head, "GET /poll?id=7 HTTP/1.1\r\n");
  ASSERT_STR_CONTAINS(env.srv.last_head, host);
  ASSERT_STR_CONTAINS(env.srv.last_head, "Connection: keep-alive\r\n");
  ASSERT_STR_CONTAINS(env.srv.last_head, "User-Agent: tinkerbell/");
  ASSERT(strstr(env.srv.last_head, "Content-Length") == NULL);

  tb__http_client_req_free(&s.r.req);
  env_finish(&env);
}

TEST(post_bodies_and_headers) {
  tb__http_client_opts_t opts = { .user_agent = "probe/1" };
  env_t env;
  env_start(&env, script_echo, &opts);

  /* A large body in three pieces goes out as iovecs, not copied. */
  size_t big = 300 * 1024;
  char *a = xmalloc(big);
  for (size_t i = 0; i < big; i++)
    a[i] = (char)('a' + i % 26);
  uv_buf_t parts[3] = { uv_buf_init(a, 1000), uv_buf_init(a + 1000, 0),
                        uv_buf_init(a + 1000, (unsigned)(big - 1000)) };
  tb__http_header_t hdrs[2] = {
    { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/json") },
    { TB_SLICE_LIT("X-Idempotency-Key"), TB_SLICE_LIT("k-1") },
  };
  creq_t r1, r2;
  creq_init(&r1, &env.srv, "/upload");
  r1.req.method = "POST";
  r1.req.body = parts;
  r1.req.n_body = 3;
  r1.req.headers = hdrs;
  r1.req.n_headers = 2;
  send_wait(&env, &r1);
  ASSERT_OK(r1.status);
  ASSERT_EQ_INT(r1.req.response.body_len, big);
  ASSERT(memcmp(r1.req.response.body, a, big) == 0);
  ASSERT_STR_CONTAINS(env.srv.last_head, "POST /upload HTTP/1.1\r\n");
  ASSERT_STR_CONTAINS(env.srv.last_head, "Content-Length: 307200\r\n");
  ASSERT_STR_CONTAINS(env.srv.last_head, "Content-Type: application/json\r\n");
  ASSERT_STR_CONTAINS(env.srv.last_head, "X-Idempotency-Key: k-1\r\n");
  ASSERT_STR_CONTAINS(env.srv.last_head, "User-Agent: probe/1\r\n");

  /* A small body joins the head; an empty POST still says its length;
   * the caller's Host and User-Agent replace the client's. */
  uv_buf_t small = uv_buf_init((char *)"{\"x\":1}", 7);
  tb__http_header_t mine[2] = {
    { TB_SLICE_LIT("host"), TB_SLICE_LIT("api.example") },
    { TB_SLICE_LIT("user-agent"), TB_SLICE_LIT("mine") },
  };
  creq_init(&r2, &env.srv, "/small");
  r2.req.method = "PUT";
  r2.req.body = &small;
  r2.req.n_body = 1;
  r2.req.headers = mine;
  r2.req.n_headers = 2;
  send_ok(&env.client, &r2);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(r2.status);
  body_is(&r2.req, "{\"x\":1}");
  ASSERT_STR_CONTAINS(env.srv.last_head, "Content-Length: 7\r\n");
  ASSERT_STR_CONTAINS(env.srv.last_head, "host: api.example\r\n");
  ASSERT(strstr(env.srv.last_head, "Host: 127") == NULL);
  ASSERT(strstr(env.srv.last_head, "probe/1") == NULL);

  r2.req.method = "POST";
  r2.req.n_body = 0;
  r2.req.n_headers = 0;
  send_ok(&env.client, &r2);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(r2.status);
  ASSERT_STR_CONTAINS(env.srv.last_head, "Content-Length: 0\r\n");
  ASSERT_EQ_INT(r2.req.response.body_len, 0);
  ASSERT(r2.req.response.body == NULL);
  ASSERT_EQ_INT(env.srv.accepts, 1);

  free(a);
  tb__http_client_req_free(&r1.req);
  tb__http_client_req_free(&r2.req);
  env_finish(&env);
}

/* Answers each request 15 ms later, so that requests overlap. */
static void script_slow(sconn_t *c, const char *req, size_t hl, size_t n) {
  const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  sconn_later(c, LATER_SEND, resp, strlen(resp), 15);
}

TEST(max_connections_per_origin_queue_fifo) {
  tb__http_client_opts_t opts = { .max_conns_per_origin = 2 };
  env_t env;
  env_start(&env, script_slow, &opts);
  creq_t r[7];
  g_order = 0;
  for (int i = 0; i < 7; i++) {
    char path[16];
    snprintf(path, sizeof(path), "/%d", i);
    creq_init(&r[i], &env.srv, path);
    send_ok(&env.client, &r[i]);
  }
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(env.srv.accepts, 2);
  ASSERT_EQ_INT(env.client.n_connects, 2);
  ASSERT_EQ_INT(env.srv.requests, 7);
  /* Queued requests leave the queue in the order they were sent: with
   * two connections, request i reaches the server (and completes) within
   * one place of i. */
  for (int i = 0; i < 7; i++) {
    int seen = -1;
    for (int k = 0; k < 7; k++)
      if (atoi(env.srv.paths[k] + 1) == i)
        seen = k;
    ASSERT_GE(seen, i - 1);
    ASSERT_LE(seen, i + 1);
    ASSERT_EQ_INT(r[i].calls, 1);
    ASSERT_OK(r[i].status);
    ASSERT_GE(r[i].order, i - 1);
    ASSERT_LE(r[i].order, i + 1);
    body_is(&r[i].req, "ok");
    tb__http_client_req_free(&r[i].req);
  }
  env_finish(&env);
}

/* -------------------------------------------------------- body framing */

static void script_bodies(sconn_t *c, const char *req, size_t hl, size_t n) {
  if (strncmp(req, "GET /cl ", 8) == 0) {
    respond(c, 200, "content-length body");
  } else if (strncmp(req, "GET /chunked ", 13) == 0) {
    sconn_send_str(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "4\r\nchun\r\n");
    sconn_later(c, LATER_SEND, "3\r\nked\r\n0\r\n\r\n", 13, 5);
  } else if (strncmp(req, "GET /close ", 11) == 0) {
    sconn_send_str(c, "HTTP/1.1 200 OK\r\nX-Mode: eof\r\n\r\nuntil ");
    sconn_later(c, LATER_SEND, "the end", 7, 5);
    sconn_later(c, LATER_CLOSE, NULL, 0, 10);
  } else if (strncmp(req, "HEAD /head ", 11) == 0) {
    sconn_send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
  } else if (strncmp(req, "GET /204 ", 9) == 0) {
    sconn_send_str(c, "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n");
  } else if (strncmp(req, "GET /304 ", 9) == 0) {
    sconn_send_str(c, "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n");
  } else if (strncmp(req, "GET /continue ", 14) == 0) {
    sconn_send_str(c, "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                      "HTTP/1.1 201 Created\r\nX-Final: 1\r\n"
                      "Content-Length: 2\r\n\r\nok");
  } else if (strncmp(req, "GET /big ", 9) == 0) {
    size_t len = 1u << 20;
    char *b = xmalloc(len);
    for (size_t i = 0; i < len; i++)
      b[i] = (char)(i * 7);
    char head[128];
    snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
             "\r\n", len);
    sconn_send_str(c, head);
    sconn_send(c, b, len);
    free(b);
  } else {
    respond(c, 404, "no");
  }
}

static void get(env_t *e, creq_t *r, const char *method, const char *path) {
  creq_init(r, &e->srv, path);
  r->req.method = method;
  send_wait(e, r);
}

TEST(body_framings) {
  env_t env;
  env_start(&env, script_bodies, NULL);
  creq_t r;

  get(&env, &r, NULL, "/cl");
  ASSERT_OK(r.status);
  body_is(&r.req, "content-length body");
  tb__http_client_req_free(&r.req);

  get(&env, &r, NULL, "/chunked");
  ASSERT_OK(r.status);
  body_is(&r.req, "chunked");
  tb__http_client_req_free(&r.req);

  /* No body whatever the headers say, and the connection stays usable. */
  get(&env, &r, "HEAD", "/head");
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.status, 200);
  ASSERT_EQ_INT(r.req.response.body_len, 0);
  tb__http_client_req_free(&r.req);
  get(&env, &r, NULL, "/204");
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.status, 204);
  ASSERT_EQ_INT(r.req.response.body_len, 0);
  tb__http_client_req_free(&r.req);
  get(&env, &r, NULL, "/304");
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.status, 304);
  ASSERT_EQ_INT(r.req.response.body_len, 0);
  tb__http_client_req_free(&r.req);

  /* An interim 100 is skipped; only the final response's headers stay. */
  get(&env, &r, NULL, "/continue");
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.status, 201);
  ASSERT(tb__http_response_header(&r.req.response, "x-final") != NULL);
  ASSERT(tb__http_response_header(&r.req.response, "x-interim") == NULL);
  body_is(&r.req, "ok");
  tb__http_client_req_free(&r.req);

  get(&env, &r, NULL, "/big");
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.body_len, 1u << 20);
  for (size_t i = 0; i < (1u << 20); i += 4099)
    ASSERT_EQ_INT((unsigned char)r.req.response.body[i],
                  (unsigned char)(char)(i * 7));
  tb__http_client_req_free(&r.req);
  ASSERT_EQ_INT(env.srv.accepts, 1);

  /* A close-delimited body ends with the connection, which is then not
   * reused. */
  get(&env, &r, NULL, "/close");
  ASSERT_OK(r.status);
  body_is(&r.req, "until the end");
  const tb__http_header_t *h = tb__http_response_header(&r.req.response,
                                                       "X-MODE");
  ASSERT(h != NULL);
  ASSERT_MEM_EQ_STR(h->value.base, h->value.len, "eof");
  tb__http_client_req_free(&r.req);
  get(&env, &r, NULL, "/cl");
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(env.srv.accepts, 2);
  tb__http_client_req_free(&r.req);
  env_finish(&env);
}

/* A golden chunked response, with a chunk extension and a trailer. */
static const char golden_chunked[] =
    "HTTP/1.1 200 OK\r\n"
    "Transfer-Encoding: chunked\r\n"
    "X-Trace: abc\r\n"
    "\r\n"
    "5;ext=1\r\nhello\r\n"
    "1\r\n \r\n"
    "a\r\nworld, 123\r\n"
    "0\r\n"
    "X-Trailer: t\r\n"
    "\r\n";

/* The response to the k-th request is split at byte k, the second part
 * sent 1 ms after the first so that the client reads it separately. */
static void script_split(sconn_t *c, const char *req, size_t hl, size_t n) {
  size_t k = (size_t)c->n_req;
  size_t len = sizeof(golden_chunked) - 1;
  sconn_send(c, golden_chunked, k);
  sconn_later(c, LATER_SEND, golden_chunked + k, len - k, 1);
}

typedef struct split_s {
  creq_t r;
  tb__http_client_t *client;
  size_t k;
} split_t;

static void on_split(tb__http_client_req_t *req, int status) {
  split_t *s = req->data;
  if (status != 0)
    tb_test_fail(__FILE__, __LINE__, "split at %zu: %s (%s)", s->k,
                 tb_err_name(status), req->message);
  ASSERT_EQ_INT(req->response.status, 200);
  ASSERT_EQ_INT(req->response.n_headers, 2);
  ASSERT_MEM_EQ_STR(req->response.headers[0].name.base,
                    req->response.headers[0].name.len, "Transfer-Encoding");
  ASSERT_MEM_EQ_STR(req->response.headers[1].value.base,
                    req->response.headers[1].value.len, "abc");
  ASSERT_MEM_EQ_STR(req->response.body, req->response.body_len,
                    "hello world, 123");
  if (++s->k < sizeof(golden_chunked) - 1)
    ASSERT_OK(tb__http_client_send(s->client, req, on_split));
}

TEST(chunked_split_at_every_offset) {
  env_t env;
  env_start(&env, script_split, NULL);
  split_t s;
  memset(&s, 0, sizeof(s));
  creq_init(&s.r, &env.srv, "/split");
  s.r.req.data = &s;
  s.client = &env.client;
  s.k = 1;
  ASSERT_OK(tb__http_client_send(&env.client, &s.r.req, on_split));
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(s.k, sizeof(golden_chunked) - 1);
  ASSERT_EQ_INT(env.srv.accepts, 1);
  tb__http_client_req_free(&s.r.req);
  env_finish(&env);
}

/* -------------------------------------------- stale connections, retry */

/* Answers, then closes the connection shortly after, as a server whose
 * keep-alive timeout is short does. */
static void script_answer_then_close(sconn_t *c, const char *req, size_t hl,
                                     size_t n) {
  respond(c, 200, "hello");
  sconn_later(c, LATER_CLOSE, NULL, 0, 5);
}

TEST(server_closed_idle_connection_reconnects) {
  env_t env;
  env_start(&env, script_answer_then_close, NULL);
  creq_t r;
  for (int i = 0; i < 3; i++) {
    get(&env, &r, NULL, "/x");
    ASSERT_OK(r.status);
    body_is(&r.req, "hello");
    ASSERT_EQ_INT(r.req.retried, 0);
    ASSERT_EQ_INT(r.req.reused_connection, 0);
    tb__http_client_req_free(&r.req);
    run_for(&env.loop, 30); /* the server closes the idle connection */
  }
  ASSERT_EQ_INT(env.srv.accepts, 3);
  ASSERT_EQ_INT(env.client.n_connects, 3);
  env_finish(&env);
}

/* The second request on each connection is dropped: the connection is
 * closed (or reset) without an answer, as when a server times out a
 * kept-alive connection while the request is on its way. */
static int g_drop_with_reset;
static void script_drop_second(sconn_t *c, const char *req, size_t hl,
                               size_t n) {
  if (c->n_req == 2) {
    if (g_drop_with_reset)
      sconn_reset(c);
    else
      sconn_close(c);
    return;
  }
  respond(c, 200, "hello");
}

static void on_first_then_second(tb__http_client_req_t *req, int status) {
  creq_t *r = req->data;
  ASSERT_OK(status);
  r->calls++;
  /* Sent from the callback: goes on the just released connection. */
  ASSERT_OK(tb__http_client_send(req->client_, req, on_done));
}

static void retry_case(int reset) {
  g_drop_with_reset = reset;
  env_t env;
  env_start(&env, script_drop_second, NULL);
  creq_t r;
  creq_init(&r, &env.srv, "/x");
  ASSERT_OK(tb__http_client_send(&env.client, &r.req, on_first_then_second));
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(r.calls, 2);
  if (r.status != 0)
    tb_test_fail(__FILE__, __LINE__, "%s: %s", tb_err_name(r.status),
                 r.req.message);
  body_is(&r.req, "hello");
  ASSERT_EQ_INT(r.req.retried, 1);
  ASSERT_EQ_INT(r.req.reused_connection, 0); /* the retry's connection */
  ASSERT_EQ_INT(env.srv.accepts, 2);
  ASSERT_EQ_INT(env.srv.requests, 3);
  tb__http_client_req_free(&r.req);
  env_finish(&env);
}

TEST(stale_connection_eof_retried_once) { retry_case(0); }
TEST(stale_connection_reset_retried_once) { retry_case(1); }

static void script_close_at_once(sconn_t *c, const char *req, size_t hl,
                                 size_t n) {
  sconn_close(c);
}

TEST(fresh_connection_closed_is_not_retried) {
  env_t env;
  env_start(&env, script_close_at_once, NULL);
  creq_t r;
  get(&env, &r, NULL, "/x");
  ASSERT_ERR(r.status, TB_ECLOSED);
  ASSERT_STR_CONTAINS(r.req.message, "closed before any response");
  ASSERT_EQ_INT(env.srv.accepts, 1);
  tb__http_client_req_free(&r.req);
  env_finish(&env);
}

/* ------------------------------------------------------------- failures */

static int free_port(uv_loop_t *loop) {
  uv_tcp_t t;
  ASSERT_OK(uv_tcp_init(loop, &t));
  struct sockaddr_in a;
  ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &a));
  ASSERT_OK(uv_tcp_bind(&t, (struct sockaddr *)&a, 0));
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  ASSERT_OK(uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len));
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

TEST(connection_refused) {
  env_t env;
  env_start(&env, NULL, NULL);
  int port = free_port(&env.loop);
  creq_t r;
  creq_url(&r, "http://127.0.0.1:%d/x", port);
  send_ok(&env.client, &r);
  ASSERT_EQ_INT(r.calls, 0);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(r.calls, 1);
  ASSERT_ERR(r.status, TB_ECONNREFUSED);
  ASSERT_STR_CONTAINS(r.req.message, "connect to 127.0.0.1 port");
  tb_error_t e = { 0 };
  ASSERT_ERR(tb__http_client_req_error(&r.req, r.status, &e), TB_ECONNREFUSED);
  ASSERT_EQ_INT(e.category, TB_CATEGORY_NETWORK);
  ASSERT_STR_CONTAINS(e.message, "connection refused");
  tb_error_clear(&e);
  tb__http_client_req_free(&r.req);

  /* The same through name resolution: every address refused. */
  creq_url(&r, "http://localhost:%d/x", port);
  send_wait(&env, &r);
  ASSERT_ERR(r.status, TB_ECONNREFUSED);
  ASSERT_STR_CONTAINS(r.req.message, "connect to localhost port");
  tb__http_client_req_free(&r.req);
  env_finish(&env);
}

TEST(dns_failure) {
  env_t env;
  env_start(&env, NULL, NULL);
  creq_t r;
  creq_url(&r, "http://nonexistent.invalid/x");
  send_wait(&env, &r);
  ASSERT_ERR(r.status, TB_EDNS);
  ASSERT_STR_CONTAINS(r.req.message, "resolve nonexistent.invalid");
  tb__http_client_req_free(&r.req);
  env_finish(&env);
}

TEST(name_resolution_localhost) {
  env_t env;
  env_start(&env, script_hello, NULL);
  creq_t r;
  /* localhost may resolve to ::1 first, where nothing listens: the client
   * goes on to the next address. */
  creq_url(&r, "http://localhost:%d/x", env.srv.port);
  send_wait(&env, &r);
  if (r.status != 0)
    tb_test_fail(__FILE__, __LINE__, "%s: %s", tb_err_name(r.status),
                 r.req.message);
  body_is(&r.req, "hello");
  char host[64];
  snprintf(host, sizeof(host), "Host: localhost:%d\r\n", env.srv.port);
  ASSERT_STR_CONTAINS(env.srv.last_head, host);
  tb__http_client_req_free(&r.req);
  env_finish(&env);
}

TEST(ipv6_literal_host) {
  uv_loop_t loop;
  ASSERT_OK(uv_loop_init(&loop));
  srv_t srv;
  if (srv_start_on(&srv, &loop, script_hello, 1) != 0) {
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_LOOP_CLOSE(&loop);
    SKIP("no IPv6 loopback");
  }
  tb__http_client_t client;
  ASSERT_OK(tb__http_client_init(&loop, &client, NULL));
  creq_t r;
  creq_url(&r, "http://[::1]:%d/v6?q=1", srv.port);
  send_ok(&client, &r);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_OK(r.status);
  body_is(&r.req, "hello");
  char host[64];
  snprintf(host, sizeof(host), "Host: [::1]:%d\r\n", srv.port);
  ASSERT_STR_CONTAINS(srv.last_head, host);
  ASSERT_STR_CONTAINS(srv.last_head, "GET /v6?q=1 HTTP/1.1\r\n");
  tb__http_client_req_free(&r.req);
  finish(&loop, &client, &srv);
}

TEST(total_timeout_when_server_never_answers) {
  env_t env;
  env_start(&env, script_never, NULL);
  creq_t r, q;
  creq_init(&r, &env.srv, "/stall");
  r.req.timeout_ms = 100;
  creq_init(&q, &env.srv, "/stall2");
  q.req.timeout_ms = 250;
  uint64_t t0 = uv_hrtime();
  send_ok(&env.client, &r);
  send_ok(&env.client, &q);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(r.calls, 1);
  ASSERT_EQ_INT(q.calls, 1);
  ASSERT_ERR(r.status, TB_ETIMEDOUT);
  ASSERT_ERR(q.status, TB_ETIMEDOUT);
  ASSERT_EQ_INT(r.order, 0);
  ASSERT_EQ_INT(q.order, 1);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  ASSERT_GE(ms, 240);
  ASSERT_LT(ms, 3000);
  ASSERT_STR_CONTAINS(r.req.message, "timed out");
  tb_error_t e = { 0 };
  tb__http_client_req_error(&r.req, r.status, &e);
  ASSERT_EQ_INT(e.category, TB_CATEGORY_TIMEOUT);
  tb_error_clear(&e);
  /* The stalled connections were discarded. */
  run_for(&env.loop, 20);
  ASSERT_EQ_INT(env.srv.eofs, 2);
  tb__http_client_req_free(&r.req);
  tb__http_client_req_free(&q.req);
  env_finish(&env);
}

/* A listener whose accept queue is full drops new SYNs, so a connect to
 * it hangs: that makes the connect timeout deterministic on loopback. */
TEST(connect_timeout_on_full_backlog) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT(l >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(0x7f000001);
  ASSERT_OK(bind(l, (struct sockaddr *)&a, sizeof(a)));
  ASSERT_OK(listen(l, 0));
  socklen_t alen = sizeof(a);
  ASSERT_OK(getsockname(l, (struct sockaddr *)&a, &alen));
  int fill[2];
  for (int i = 0; i < 2; i++) {
    fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(fill[i], (struct sockaddr *)&a, sizeof(a));
    struct pollfd p = { fill[i], POLLOUT, 0 };
    poll(&p, 1, i == 0 ? 1000 : 50);
  }

  uv_loop_t loop;
  ASSERT_OK(uv_loop_init(&loop));
  tb__http_client_t client;
  ASSERT_OK(tb__http_client_init(&loop, &client, NULL));
  creq_t r;
  creq_url(&r, "http://127.0.0.1:%d/x",
           ntohs(a.sin_port));
  r.req.connect_timeout_ms = 150;
  r.req.timeout_ms = 5000;
  uint64_t t0 = uv_hrtime();
  send_ok(&client, &r);
  uv_run(&loop, UV_RUN_DEFAULT);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  ASSERT_EQ_INT(r.calls, 1);
  ASSERT_ERR(r.status, TB_ECONNECT_TIMEOUT);
  ASSERT_GE(ms, 140);
  ASSERT_LT(ms, 2000);
  ASSERT_STR_CONTAINS(r.req.message, "timed out after 150 ms");
  tb__http_client_req_free(&r.req);
  finish(&loop, &client, NULL);
  close(fill[0]);
  close(fill[1]);
  close(l);
}

static void script_malformed(sconn_t *c, const char *req, size_t hl,
                             size_t n) {
  sconn_send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx");
}

TEST(malformed_response_is_a_protocol_error) {
  env_t env;
  env_start(&env, script_malformed, NULL);
  creq_t r;
  get(&env, &r, NULL, "/x");
  ASSERT_ERR(r.status, TB_EPROTO);
  ASSERT_STR_CONTAINS(r.req.message, "malformed response");
  ASSERT_STR_CONTAINS(r.req.message, "Content-Length");
  tb__http_client_req_free(&r.req);
  /* The connection was dropped: the next request makes another. */
  env.srv.script = script_hello;
  get(&env, &r, NULL, "/y");
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(env.srv.accepts, 2);
  tb__http_client_req_free(&r.req);
  env_finish(&env);
}

static int g_mid_body_reset;
static void script_cut_body(sconn_t *c, const char *req, size_t hl, size_t n) {
  sconn_send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
  sconn_later(c, g_mid_body_reset ? LATER_RESET : LATER_CLOSE, NULL, 0, 10);
}

TEST(connection_ends_mid_body) {
  for (int reset = 0; reset < 2; reset++) {
    g_mid_body_reset = reset;
    env_t env;
    env_start(&env, script_cut_body, NULL);
    creq_t r;
    get(&env, &r, NULL, "/x");
    if (reset) {
      ASSERT_ERR(r.status, TB_ECONNRESET);
      ASSERT_STR_CONTAINS(r.req.message, "reset");
    } else {
      ASSERT_ERR(r.status, TB_ECLOSED);
      ASSERT_STR_CONTAINS(r.req.message, "before the response was complete");
    }
    ASSERT_EQ_INT(r.req.retried, 0);
    tb__http_client_req_free(&r.req);
    env_finish(&env);
  }
}

static void script_large(sconn_t *c, const char *req, size_t hl, size_t n) {
  if (strncmp(req, "GET /cl ", 8) == 0) {
    sconn_send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
  } else if (strncmp(req, "GET /chunked ", 13) == 0) {
    sconn_send_str(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "40\r\n0123456789012345678901234567890123456789"
                      "012345678901234567890123\r\n"
                      "40\r\n0123456789012345678901234567890123456789"
                      "012345678901234567890123\r\n0\r\n\r\n");
  } else {
    sconn_send_str(c, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < TB_HTTP_MAX_HEADERS + 1; i++) {
      char h[32];
      snprintf(h, sizeof(h), "X-H%d: v\r\n", i);
      sconn_send_str(c, h);
    }
    sconn_send_str(c, "Content-Length: 0\r\n\r\n");
  }
}

TEST(response_limits) {
  tb__http_client_opts_t opts = { .max_body = 100 };
  env_t env;
  env_start(&env, script_large, &opts);
  creq_t r;
  get(&env, &r, NULL, "/cl");
  ASSERT_ERR(r.status, TB_ETOOLARGE);
  tb__http_client_req_free(&r.req);
  get(&env, &r, NULL, "/chunked");
  ASSERT_ERR(r.status, TB_ETOOLARGE);
  ASSERT_STR_CONTAINS(r.req.message, "body exceeds");
  tb__http_client_req_free(&r.req);
  /* A request may raise the client's limit. */
  creq_init(&r, &env.srv, "/chunked");
  r.req.max_body = 128;
  send_ok(&env.client, &r);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.body_len, 128);
  tb__http_client_req_free(&r.req);
  get(&env, &r, NULL, "/headers");
  ASSERT_ERR(r.status, TB_ETOOLARGE);
  ASSERT_STR_CONTAINS(r.req.message, "too many response headers");
  tb__http_client_req_free(&r.req);
  env_finish(&env);
}

/* --------------------------------------------------------- cancellation */

typedef struct cancel_s {
  creq_t *victim;
  int rc;
  int calls_at_cancel;
} cancel_t;

static void on_cancel_timer(uv_timer_t *t) {
  cancel_t *c = t->data;
  c->rc = tb__http_client_req_cancel(&c->victim->req);
  c->calls_at_cancel = c->victim->calls;
  uv_close((uv_handle_t *)t, NULL);
}

TEST(cancel_in_flight_and_queued) {
  tb__http_client_opts_t opts = { .max_conns_per_origin = 1 };
  env_t env;
  env_start(&env, script_never, &opts);

  /* In flight: the connection is discarded. */
  creq_t r;
  creq_init(&r, &env.srv, "/stall");
  send_ok(&env.client, &r);
  cancel_t cx = { &r, 1, -1 };
  uv_timer_t t;
  ASSERT_OK(uv_timer_init(&env.loop, &t));
  t.data = &cx;
  ASSERT_OK(uv_timer_start(&t, on_cancel_timer, 30, 0));
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(cx.rc);
  ASSERT_EQ_INT(cx.calls_at_cancel, 0); /* not synchronously */
  ASSERT_EQ_INT(r.calls, 1);
  ASSERT_ERR(r.status, UV_ECANCELED);
  run_for(&env.loop, 20);
  ASSERT_EQ_INT(env.srv.eofs, 1);
  ASSERT_ERR(tb__http_client_req_cancel(&r.req), UV_EINVAL); /* not in flight */
  tb__http_client_req_free(&r.req);

  /* Queued behind another request: the other one is untouched. */
  env.srv.script = script_slow;
  creq_t a, b;
  creq_init(&a, &env.srv, "/a");
  creq_init(&b, &env.srv, "/b");
  send_ok(&env.client, &a);
  send_ok(&env.client, &b);
  ASSERT_OK(tb__http_client_req_cancel(&b.req));
  ASSERT_OK(tb__http_client_req_cancel(&b.req)); /* already being cancelled */
  ASSERT_EQ_INT(b.calls, 0);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(a.calls, 1);
  ASSERT_OK(a.status);
  ASSERT_EQ_INT(b.calls, 1);
  ASSERT_ERR(b.status, UV_ECANCELED);
  ASSERT_EQ_INT(env.srv.accepts, 2);
  ASSERT_EQ_INT(env.srv.requests, 2); /* /stall and /a */
  tb_error_t e = { 0 };
  tb__http_client_req_error(&b.req, b.status, &e);
  ASSERT_EQ_INT(e.category, TB_CATEGORY_CANCELLED);
  tb_error_clear(&e);
  tb__http_client_req_free(&a.req);
  tb__http_client_req_free(&b.req);
  env_finish(&env);
}

static void on_close_timer(uv_timer_t *t) {
  tb__http_client_close(t->data, on_client_closed);
  uv_close((uv_handle_t *)t, NULL);
}

static int g_seen_at_close_cb;
static creq_t *g_close_reqs;
static void on_client_closed_count(tb__http_client_t *c) {
  g_client_closed++;
  for (int i = 0; i < 3; i++)
    g_seen_at_close_cb += g_close_reqs[i].calls;
}

static void on_done_send_again(tb__http_client_req_t *req, int status) {
  on_done(req, status);
  /* The client is closing: refused, and the callback never runs again. */
  ASSERT_ERR(tb__http_client_send(req->client_, req, on_done), TB_ECLOSING);
}

TEST(close_cancels_everything) {
  tb__http_client_opts_t opts = { .max_conns_per_origin = 1 };
  env_t env;
  env_start(&env, script_never, &opts);
  creq_t r[3];
  for (int i = 0; i < 3; i++) {
    creq_init(&r[i], &env.srv, "/x");
    ASSERT_OK(tb__http_client_send(&env.client, &r[i].req, on_done_send_again));
  }
  creq_t dns;
  creq_url(&dns, "http://localhost:1/x");
  send_ok(&env.client, &dns);
  g_client_closed = 0;
  g_seen_at_close_cb = 0;
  g_close_reqs = r;
  /* Closed while one request waits for its answer, two are queued and a
   * name lookup may be running. */
  run_for(&env.loop, 20);
  tb__http_client_close(&env.client, on_client_closed_count);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(g_client_closed, 1);
  ASSERT_EQ_INT(g_seen_at_close_cb, 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ_INT(r[i].calls, 1);
    ASSERT_ERR(r[i].status, UV_ECANCELED);
    tb__http_client_req_free(&r[i].req);
  }
  ASSERT_EQ_INT(dns.calls, 1);
  tb__http_client_req_free(&dns.req);
  srv_close(&env.srv);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&env.loop);
}

TEST(close_from_timer_with_request_in_flight) {
  env_t env;
  env_start(&env, script_never, NULL);
  creq_t r;
  creq_init(&r, &env.srv, "/x");
  send_ok(&env.client, &r);
  uv_timer_t t;
  ASSERT_OK(uv_timer_init(&env.loop, &t));
  t.data = &env.client;
  ASSERT_OK(uv_timer_start(&t, on_close_timer, 20, 0));
  g_client_closed = 0;
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(g_client_closed, 1);
  ASSERT_EQ_INT(r.calls, 1);
  ASSERT_ERR(r.status, UV_ECANCELED);
  tb__http_client_req_free(&r.req);
  srv_close(&env.srv);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&env.loop);
}

/* ------------------------------------------------------- idle eviction */

TEST(idle_connections_are_evicted) {
  tb__http_client_opts_t opts = { .idle_timeout_ms = 200 };
  env_t env;
  env_start(&env, script_hello, &opts);
  creq_t r[3];
  for (int i = 0; i < 3; i++) {
    creq_init(&r[i], &env.srv, "/x");
    send_ok(&env.client, &r[i]);
  }
  uv_run(&env.loop, UV_RUN_DEFAULT); /* returns with 3 idle connections */
  ASSERT_EQ_INT(env.srv.accepts, 3);
  ASSERT_EQ_INT(env.srv.eofs, 0);
  run_for(&env.loop, 20);
  ASSERT_EQ_INT(env.srv.eofs, 0); /* not yet */
  run_for(&env.loop, 400);
  ASSERT_EQ_INT(env.srv.eofs, 3);
  for (int i = 0; i < 3; i++)
    ASSERT_OK(r[i].status);
  /* The pool is empty: a new request connects again. */
  tb__http_client_req_free(&r[0].req);
  get(&env, &r[0], NULL, "/y");
  ASSERT_OK(r[0].status);
  ASSERT_EQ_INT(env.srv.accepts, 4);
  for (int i = 0; i < 3; i++)
    tb__http_client_req_free(&r[i].req);
  env_finish(&env);
}

/* ------------------------------------------------------------ redirects */

static srv_t *g_other;
static void script_redirects(sconn_t *c, const char *req, size_t hl,
                             size_t n) {
  char buf[256];
  if (strncmp(req, "GET /a ", 7) == 0) {
    sconn_send_str(c, "HTTP/1.1 302 Found\r\nLocation: /b?x=1\r\n"
                      "Content-Length: 3\r\n\r\nabc");
  } else if (strncmp(req, "GET /b?x=1 ", 11) == 0) {
    respond(c, 200, "final");
  } else if (strncmp(req, "GET /rel/one ", 13) == 0) {
    sconn_send_str(c, "HTTP/1.1 301 Moved\r\nLocation: ../b?x=1\r\n"
                      "Content-Length: 0\r\n\r\n");
  } else if (strncmp(req, "GET /abs ", 9) == 0) {
    snprintf(buf, sizeof(buf), "HTTP/1.1 307 Temporary\r\nLocation: "
             "http://127.0.0.1:%d/elsewhere\r\nContent-Length: 0\r\n\r\n",
             g_other->port);
    sconn_send_str(c, buf);
  } else if (strncmp(req, "GET /elsewhere ", 15) == 0) {
    respond(c, 200, "other server");
  } else if (strncmp(req + 4, "/loop ", 6) == 0 ||
             strncmp(req + 5, "/loop ", 6) == 0) {
    sconn_send_str(c, "HTTP/1.1 302 Found\r\nLocation: /loop\r\n"
                      "Content-Length: 0\r\n\r\n");
  } else if (strncmp(req, "GET /bad ", 9) == 0) {
    sconn_send_str(c, "HTTP/1.1 302 Found\r\nLocation: ftp://x/\r\n"
                      "Content-Length: 0\r\n\r\n");
  } else {
    respond(c, 404, "no");
  }
}

TEST(redirects_only_when_asked) {
  env_t env;
  env_start(&env, script_redirects, NULL);
  srv_t other;
  srv_start(&other, &env.loop, script_redirects);
  g_other = &other;
  creq_t r;

  get(&env, &r, NULL, "/a");
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.status, 302);
  body_is(&r.req, "abc");
  ASSERT_EQ_INT(r.req.redirects, 0);
  tb__http_client_req_free(&r.req);

  creq_init(&r, &env.srv, "/a");
  r.req.follow_redirects = 3;
  send_ok(&env.client, &r);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.status, 200);
  body_is(&r.req, "final");
  ASSERT_EQ_INT(r.req.redirects, 1);
  tb__http_client_req_free(&r.req);

  creq_init(&r, &env.srv, "/rel/one");
  r.req.follow_redirects = 1;
  send_ok(&env.client, &r);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(r.status);
  body_is(&r.req, "final");
  tb__http_client_req_free(&r.req);

  /* Absolute Location on another origin. */
  creq_init(&r, &env.srv, "/abs");
  r.req.follow_redirects = 1;
  send_ok(&env.client, &r);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(r.status);
  body_is(&r.req, "other server");
  ASSERT_EQ_INT(other.accepts, 1);
  tb__http_client_req_free(&r.req);

  /* At most N hops: the last redirect is the answer. */
  creq_init(&r, &env.srv, "/loop");
  r.req.follow_redirects = 2;
  send_ok(&env.client, &r);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.status, 302);
  ASSERT_EQ_INT(r.req.redirects, 2);
  tb__http_client_req_free(&r.req);

  /* Not for other methods. */
  creq_init(&r, &env.srv, "/loop");
  r.req.method = "POST";
  r.req.follow_redirects = 2;
  int before = env.srv.requests;
  send_ok(&env.client, &r);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(r.req.response.status, 302);
  ASSERT_EQ_INT(r.req.redirects, 0);
  ASSERT_EQ_INT(env.srv.requests, before + 1);
  tb__http_client_req_free(&r.req);

  /* A Location that is not an http URL fails the request. */
  creq_init(&r, &env.srv, "/bad");
  r.req.follow_redirects = 2;
  send_ok(&env.client, &r);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_ERR(r.status, TB_EURL);
  ASSERT_STR_CONTAINS(r.req.message, "ftp://x/");
  tb__http_client_req_free(&r.req);

  ASSERT_EQ_INT(env.srv.accepts, 1);
  srv_close(&other);
  env_finish(&env);
}

/* --------------------------------------- errors returned, no callback */

static int g_never_calls;
static void on_never(tb__http_client_req_t *req, int status) { g_never_calls++; }

static void expect_refused(tb__http_client_t *c, creq_t *r, int code,
                           const char *msg) {
  int rc = tb__http_client_send(c, &r->req, on_never);
  if (rc != code)
    tb_test_fail(__FILE__, __LINE__, "%s: got %s, expected %s (%s)", r->url,
                 tb_err_name(rc), tb_err_name(code), r->req.message);
  ASSERT_STR_CONTAINS(r->req.message, msg);
}

TEST(returned_error_means_no_callback) {
  env_t env;
  env_start(&env, script_slow, NULL);
  g_never_calls = 0;
  creq_t r;

  creq_init(&r, &env.srv, "/x");
  snprintf(r.url, sizeof(r.url), "http//broken");
  r.req.url = (tb_slice_t){ r.url, strlen(r.url) };
  expect_refused(&env.client, &r, TB_EURL, "invalid URL");
  snprintf(r.url, sizeof(r.url), "https://127.0.0.1:%d/", env.srv.port);
  r.req.url = (tb_slice_t){ r.url, strlen(r.url) };
  expect_refused(&env.client, &r, TB_EUNSUPPORTED, "https");
  /* A refused request may hold buffers; free releases them. */
  tb__http_client_req_free(&r.req);

  creq_init(&r, &env.srv, "/x");
  r.req.method = "GE T";
  expect_refused(&env.client, &r, TB_EINVAL, "method");
  r.req.method = NULL;
  tb__http_header_t bad_value = { TB_SLICE_LIT("X-A"), TB_SLICE_LIT("a\r\nb") };
  r.req.headers = &bad_value;
  r.req.n_headers = 1;
  expect_refused(&env.client, &r, TB_EINVAL, "invalid header");
  tb__http_header_t bad_name = { TB_SLICE_LIT("X A"), TB_SLICE_LIT("v") };
  r.req.headers = &bad_name;
  expect_refused(&env.client, &r, TB_EINVAL, "invalid header");
  tb__http_header_t ours = { TB_SLICE_LIT("content-length"), TB_SLICE_LIT("3") };
  r.req.headers = &ours;
  expect_refused(&env.client, &r, TB_EINVAL, "set by the client");
  r.req.n_headers = 0;
  ASSERT_ERR(tb__http_client_send(&env.client, &r.req, NULL), TB_EINVAL);

  /* In flight: a second send is refused and does not disturb the first. */
  creq_t ok;
  creq_init(&ok, &env.srv, "/ok");
  send_ok(&env.client, &ok);
  ASSERT_ERR(tb__http_client_send(&env.client, &ok.req, on_never), TB_EBUSY);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(ok.calls, 1);
  ASSERT_OK(ok.status);
  body_is(&ok.req, "ok");
  tb__http_client_req_free(&ok.req);

  g_client_closed = 0;
  tb__http_client_close(&env.client, on_client_closed);
  tb__http_client_req_free(&r.req);
  creq_init(&r, &env.srv, "/late");
  expect_refused(&env.client, &r, TB_ECLOSING, "closing");
  srv_close(&env.srv);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(g_client_closed, 1);
  ASSERT_EQ_INT(g_never_calls, 0);
  tb__http_client_req_free(&r.req);
  ASSERT_LOOP_CLOSE(&env.loop);
}

/* A stand-in for the TLS transport: plain TCP, so that the scripted
 * server can answer, and a record of what the client asked for. */
static int g_tls_calls;
static char g_tls_host[64];
static void *g_tls_ctx;
static int fake_tls_new(uv_loop_t *loop, void *ctx, const char *host,
                        tb__transport_t **out) {
  g_tls_calls++;
  g_tls_ctx = ctx;
  snprintf(g_tls_host, sizeof(g_tls_host), "%s", host);
  return tb__transport_tcp_new(loop, out);
}

TEST(https_goes_through_the_tls_transport_hook) {
  int ctx;
  tb__http_client_opts_t opts = { .tls_transport_new = fake_tls_new,
                                 .tls_ctx = &ctx };
  env_t env;
  env_start(&env, script_hello, &opts);
  g_tls_calls = 0;
  creq_t r;
  creq_init(&r, &env.srv, "/x");
  snprintf(r.url, sizeof(r.url), "HTTPS://127.0.0.1:%d/secure", env.srv.port);
  r.req.url = (tb_slice_t){ r.url, strlen(r.url) };
  send_ok(&env.client, &r);
  uv_run(&env.loop, UV_RUN_DEFAULT);
  ASSERT_OK(r.status);
  body_is(&r.req, "hello");
  ASSERT_EQ_INT(g_tls_calls, 1);
  ASSERT_STR_EQ(g_tls_host, "127.0.0.1");
  ASSERT(g_tls_ctx == &ctx);
  ASSERT_STR_CONTAINS(env.srv.last_head, "GET /secure HTTP/1.1\r\n");
  tb__http_client_req_free(&r.req);
  /* Same host and port over http is another origin, another pool. */
  get(&env, &r, NULL, "/plain");
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(g_tls_calls, 1);
  ASSERT_EQ_INT(env.srv.accepts, 2);
  tb__http_client_req_free(&r.req);
  env_finish(&env);
}

TEST(client_init_rejects_bad_options) {
  uv_loop_t loop;
  ASSERT_OK(uv_loop_init(&loop));
  tb__http_client_t client;
  tb__http_client_opts_t opts = { .user_agent = "a\r\nX-Evil: 1" };
  ASSERT_ERR(tb__http_client_init(&loop, &client, &opts), TB_EINVAL);
  ASSERT_ERR(tb__http_client_init(NULL, &client, NULL), TB_EINVAL);
  /* Nothing was left on the loop. */
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------- the transport */

typedef struct tprobe_s {
  int connected, written, shut, closed;
  tb__buf_t got;
  int eof;
} tprobe_t;

static void t_on_closed(tb__transport_t *t) {
  ((tprobe_t *)t->data)->closed++;
}
static void t_on_read(tb__transport_t *t, ssize_t n, const char *data) {
  tprobe_t *p = t->data;
  if (n < 0) {
    p->eof = (int)n;
    tb__transport_close(t, t_on_closed);
    return;
  }
  ASSERT_OK(tb__buf_append(&p->got, data, (size_t)n));
}
static void t_on_shutdown(tb__transport_t *t, int status) {
  ASSERT_OK(status);
  ((tprobe_t *)t->data)->shut++;
}
static void t_on_written(tb__transport_t *t, int status) {
  ASSERT_OK(status);
  ((tprobe_t *)t->data)->written++;
  ASSERT_OK(tb__transport_shutdown(t, t_on_shutdown));
}
static void t_on_connected(tb__transport_t *t, int status) {
  ASSERT_OK(status);
  ((tprobe_t *)t->data)->connected++;
  static char req[] = "GET /t HTTP/1.1\r\nHost: x\r\n\r\n";
  uv_buf_t b = uv_buf_init(req, sizeof(req) - 1);
  ASSERT_OK(tb__transport_read_start(t, t_on_read));
  ASSERT_OK(tb__transport_write(t, &b, 1, t_on_written));
  ASSERT_ERR(tb__transport_write(t, &b, 1, t_on_written), UV_EALREADY);
}

/* The server answers and closes when it sees the client's shutdown. */
static void script_hello_close(sconn_t *c, const char *req, size_t hl,
                               size_t n) {
  respond(c, 200, "hi");
}

TEST(tcp_transport_write_shutdown_read) {
  uv_loop_t loop;
  ASSERT_OK(uv_loop_init(&loop));
  srv_t srv;
  srv_start(&srv, &loop, script_hello_close);
  tb__transport_t *t;
  ASSERT_OK(tb__transport_tcp_new(&loop, &t));
  ASSERT_STR_EQ(t->vt->name, "tcp");
  tprobe_t p;
  memset(&p, 0, sizeof(p));
  t->data = &p;
  struct sockaddr_in a;
  ASSERT_OK(uv_ip4_addr("127.0.0.1", srv.port, &a));
  ASSERT_OK(tb__transport_connect(t, (struct sockaddr *)&a, t_on_connected));
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(p.connected, 1);
  ASSERT_EQ_INT(p.written, 1);
  ASSERT_EQ_INT(p.shut, 1);
  ASSERT_EQ_INT(p.eof, UV_EOF);
  ASSERT_EQ_INT(p.closed, 1);
  ASSERT_MEM_EQ_STR(p.got.base, p.got.len,
                    "HTTP/1.1 200 X\r\nContent-Length: 2\r\n\r\nhi");
  ASSERT_EQ_INT(srv.eofs, 1);
  tb__buf_free(&p.got);
  srv_close(&srv);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST_LIST(
  TEST_ENTRY(keepalive_reuses_one_connection),
  TEST_ENTRY(post_bodies_and_headers),
  TEST_ENTRY(max_connections_per_origin_queue_fifo),
  TEST_ENTRY(body_framings),
  TEST_ENTRY(chunked_split_at_every_offset),
  TEST_ENTRY(server_closed_idle_connection_reconnects),
  TEST_ENTRY(stale_connection_eof_retried_once),
  TEST_ENTRY(stale_connection_reset_retried_once),
  TEST_ENTRY(fresh_connection_closed_is_not_retried),
  TEST_ENTRY(connection_refused),
  TEST_ENTRY(dns_failure),
  TEST_ENTRY(name_resolution_localhost),
  TEST_ENTRY(ipv6_literal_host),
  TEST_ENTRY(total_timeout_when_server_never_answers),
  TEST_ENTRY(connect_timeout_on_full_backlog),
  TEST_ENTRY(malformed_response_is_a_protocol_error),
  TEST_ENTRY(connection_ends_mid_body),
  TEST_ENTRY(response_limits),
  TEST_ENTRY(cancel_in_flight_and_queued),
  TEST_ENTRY(close_cancels_everything),
  TEST_ENTRY(close_from_timer_with_request_in_flight),
  TEST_ENTRY(idle_connections_are_evicted),
  TEST_ENTRY(redirects_only_when_asked),
  TEST_ENTRY(returned_error_means_no_callback),
  TEST_ENTRY(https_goes_through_the_tls_transport_hook),
  TEST_ENTRY(client_init_rejects_bad_options),
  TEST_ENTRY(tcp_transport_write_shutdown_read),
)

/*
 * What the server tests share: a tb_server_t on a loop, raw HTTP/1.1
 * clients on the same loop (one request per connection, closed after the
 * answer), and helpers that run the loop until something happened.
 */
#ifndef TB_TEST_SERVER_CLIENT_H
#define TB_TEST_SERVER_CLIENT_H

#define _GNU_SOURCE  /* memmem */
#include "tb_test.h"

#include <jansson.h>
#include <unistd.h>

#include "core/buf.h"
#include "server/internal.h"
#include "tinkerbell/server.h"

static uv_loop_t loop;
static tb_server_t server;
static tb__server_t *srv;
static int port;
static int server_closed;

static inline void on_server_closed(tb_server_t *s) {
  ASSERT(s == &server);
  server_closed++;
}

/* A server on the loop (already initialised), listening, with opts (NULL:
 * the defaults). */
static inline void open_server(tb_server_options_t *opts) {
  int rc = tb_server_init(&loop, &server, opts);
  if (rc != 0)
    fprintf(stderr, "tb_server_init: %s\n", server.message);
  ASSERT_OK(rc);
  srv = tb__server_of(&server);
  ASSERT_OK(tb_server_listen(&server, "127.0.0.1", 0));
  port = tb_server_port(&server);
  ASSERT_GT(port, 0);
  server_closed = 0;
}

static inline void start_server(tb_server_options_t *opts) {
  ASSERT_OK(uv_loop_init(&loop));
  open_server(opts);
}

static inline void stop_server(void) {
  tb_server_close(&server, on_server_closed);
  ASSERT_EQ_INT(server_closed, 0);  /* never from inside the call */
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(server_closed, 1);
  ASSERT(server.impl_ == NULL);
  ASSERT_LOOP_CLOSE(&loop);
}

/* ------------------------------------------------------------ client */

/* Connects tcp (data holder) to the server's port through cr. */
static inline void connect_to_server(uv_tcp_t *tcp, uv_connect_t *cr, void *holder,
                                     uv_connect_cb cb) {
  ASSERT_OK(uv_tcp_init(&loop, tcp));
  tcp->data = holder;
  cr->data = holder;
  struct sockaddr_in sa;
  ASSERT_OK(uv_ip4_addr("127.0.0.1", port, &sa));
  ASSERT_OK(uv_tcp_connect(cr, tcp, (struct sockaddr *)&sa, cb));
}

typedef struct hc_s {
  uv_tcp_t tcp;
  uv_connect_t cr;
  tb__buf_t out, in;
  int connected, closed, complete, eof;
  int status;
  char head[4096];
  char *body;          /* NUL-terminated copy */
  size_t body_len;
  uint64_t sent_at, answered_at;
} hc_t;

static inline void hc_closed_cb(uv_handle_t *h) {
  ((hc_t *)h->data)->closed = 1;
}

static inline void hc_close(hc_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, hc_closed_cb);
}

static inline void hc_parse(hc_t *c) {
  const char *end = memmem(c->in.base, c->in.len, "\r\n\r\n", 4);
  if (end == NULL)
    return;
  size_t head_len = (size_t)(end - c->in.base) + 4;
  ASSERT_LT(head_len, sizeof(c->head));
  memcpy(c->head, c->in.base, head_len);
  c->head[head_len] = '\0';
  const char *cl = strcasestr(c->head, "\r\nContent-Length: ");
  size_t n = cl ? strtoul(cl + 18, NULL, 10) : 0;
  if (c->in.len < head_len + n)
    return;
  ASSERT(sscanf(c->head, "HTTP/1.1 %d", &c->status) == 1);
  c->body = xmalloc(n + 1);
  memcpy(c->body, c->in.base + head_len, n);
  c->body[n] = '\0';
  c->body_len = n;
  c->complete = 1;
  c->answered_at = uv_now(&loop);
}

static inline void hc_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  hc_t *c = h->data;
  ASSERT_OK(tb__buf_reserve(&c->in, 65536));
  buf->base = c->in.base + c->in.len;
  buf->len = c->in.cap - c->in.len;
}

static inline void hc_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hc_t *c = s->data;
  if (nread < 0) {
    c->eof = 1;
    hc_close(c);
    return;
  }
  c->in.len += (size_t)nread;
  if (!c->complete) {
    hc_parse(c);
    if (c->complete)
      hc_close(c);
  }
}

static inline void hc_written(uv_write_t *w, int status) {
  free(w);
}

static inline void hc_connected(uv_connect_t *cr, int status) {
  hc_t *c = cr->data;
  ASSERT_OK(status);
  c->connected = 1;
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, hc_alloc, hc_read));
  uv_write_t *w = xmalloc(sizeof(*w));
  uv_buf_t b = uv_buf_init(c->out.base, (unsigned)c->out.len);
  ASSERT_OK(uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, hc_written));
}

/* Sends one request; extra is "Name: value\r\n" lines or NULL. */
static inline hc_t *hc_send(const char *method, const char *path, const char *extra,
                     const char *body) {
  hc_t *c = calloc(1, sizeof(*c));
  ASSERT(c != NULL);
  size_t bl = body ? strlen(body) : 0;
  ASSERT_OK(tb__buf_printf(&c->out, "%s %s HTTP/1.1\r\nHost: t\r\n%s", method, path,
                           extra ? extra : ""));
  if (body)
    ASSERT_OK(tb__buf_printf(&c->out, "Content-Type: application/json\r\n"
                                      "Content-Length: %zu\r\n", bl));
  ASSERT_OK(tb__buf_printf(&c->out, "\r\n"));
  if (body)
    ASSERT_OK(tb__buf_append(&c->out, body, bl));
  connect_to_server(&c->tcp, &c->cr, c, hc_connected);
  c->sent_at = uv_now(&loop);
  return c;
}

static inline void hc_wait(hc_t *c) {
  while (!c->closed)
    uv_run(&loop, UV_RUN_ONCE);
}

static inline void hc_free(hc_t *c) {
  ASSERT(c->closed);
  tb__buf_free(&c->out);
  tb__buf_free(&c->in);
  free(c->body);
  free(c);
}

/* One request, run to its end; the caller frees the client. */
static inline hc_t *hc_do(const char *method, const char *path, const char *extra,
                   const char *body) {
  hc_t *c = hc_send(method, path, extra, body);
  hc_wait(c);
  ASSERT(c->complete);
  return c;
}

/* The request's status, with the body checked to contain want (or NULL). */
static inline void hc_expect(const char *method, const char *path, const char *extra,
                      const char *body, int status, const char *want) {
  hc_t *c = hc_do(method, path, extra, body);
  if (c->status != status)
    fprintf(stderr, "%s %s -> %d %s\n", method, path, c->status, c->body);
  ASSERT_EQ_INT(c->status, status);
  if (want)
    ASSERT_STR_CONTAINS(c->body, want);
  hc_free(c);
}

static inline json_t *hc_json(const hc_t *c) {
  json_error_t e;
  json_t *v = json_loadb(c->body, c->body_len, 0, &e);
  if (v == NULL)
    fprintf(stderr, "not JSON: %s\n", c->body);
  ASSERT(v != NULL);
  return v;
}

/* ------------------------------------------------------------ time */

static int waited;

static inline void on_wait(uv_timer_t *t) {
  waited = 1;
}

static inline void wait_ms(uint64_t ms) {
  uv_timer_t t;
  ASSERT_OK(uv_timer_init(&loop, &t));
  waited = 0;
  ASSERT_OK(uv_timer_start(&t, on_wait, ms, 0));
  while (!waited)
    uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

/* Runs the loop until cond holds (the test's timeout catches a hang). */
#define RUN_UNTIL(cond)             \
  do {                              \
    while (!(cond))                 \
      uv_run(&loop, UV_RUN_ONCE);   \
  } while (0)

static inline char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = xmalloc(n);
  memcpy(p, s, n);
  return p;
}

/* A string field of a JSON answer, copied. */
static inline char *field_of(hc_t *c, const char *key) {
  json_t *v = hc_json(c);
  const char *s = json_string_value(json_object_get(v, key));
  if (s == NULL)
    fprintf(stderr, "no %s in %s\n", key, c->body);
  ASSERT(s != NULL);
  char *r = xstrdup(s);
  json_decref(v);
  return r;
}

/* POSTs body and returns a string field of the 200 answer. */
static inline char *post_field(const char *path, const char *extra, const char *body,
                        const char *key) {
  hc_t *c = hc_do("POST", path, extra, body);
  if (c->status != 200)
    fprintf(stderr, "%s -> %d %s\n", path, c->status, c->body);
  ASSERT_EQ_INT(c->status, 200);
  char *r = field_of(c, key);
  hc_free(c);
  return r;
}

#endif /* TB_TEST_SERVER_CLIENT_H */

/*
 * The plain TCP transport (see transport.h): one uv_tcp_t with
 * TCP_NODELAY, since every request is one small write that must not wait
 * for Nagle's algorithm, and one read buffer allocated with the transport
 * and reused for every read, so a kept-alive connection allocates nothing
 * per request.
 */
#include "http/transport.h"

#include <stdlib.h>

#include "tinkerbell/error.h"

#define TCP_READ_BUF_SIZE (64u * 1024u)

typedef struct tcp_transport_s {
  tb__transport_t base;
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  tb__transport_cb connect_cb;
  tb__transport_cb write_cb;
  tb__transport_cb shutdown_cb;
  tb__transport_read_cb read_cb;
  tb__transport_close_cb close_cb;
  int closing;
  char rbuf[TCP_READ_BUF_SIZE];
} tcp_transport_t;

static void on_connect(uv_connect_t *req, int status) {
  tcp_transport_t *t = req->data;
  tb__transport_cb cb = t->connect_cb;
  t->connect_cb = NULL;
  if (t->closing)
    return;
  if (status == 0)
    status = uv_tcp_nodelay(&t->tcp, 1);
  cb(&t->base, status);
}

static int tcp_connect(tb__transport_t *base, const struct sockaddr *addr,
                       tb__transport_cb cb) {
  tcp_transport_t *t = (tcp_transport_t *)base;
  if (t->closing)
    return TB_ECLOSING;
  if (t->connect_cb != NULL)
    return UV_EALREADY;
  t->connect_req.data = t;
  int rc = uv_tcp_connect(&t->connect_req, &t->tcp, addr, on_connect);
  if (rc == 0)
    t->connect_cb = cb;
  return rc;
}

static void on_write(uv_write_t *req, int status) {
  tcp_transport_t *t = req->data;
  tb__transport_cb cb = t->write_cb;
  t->write_cb = NULL;
  if (!t->closing)
    cb(&t->base, status);
}

static int tcp_write(tb__transport_t *base, const uv_buf_t bufs[],
                     unsigned nbufs, tb__transport_cb cb) {
  tcp_transport_t *t = (tcp_transport_t *)base;
  if (t->closing)
    return TB_ECLOSING;
  if (t->write_cb != NULL)
    return UV_EALREADY;
  t->write_req.data = t;
  int rc = uv_write(&t->write_req, (uv_stream_t *)&t->tcp, bufs, nbufs,
                    on_write);
  if (rc == 0)
    t->write_cb = cb;
  return rc;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  tcp_transport_t *t = h->data;
  (void)suggested;
  *buf = uv_buf_init(t->rbuf, sizeof(t->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tcp_transport_t *t = s->data;
  (void)buf;
  if (nread == 0 || t->closing || t->read_cb == NULL)
    return;
  t->read_cb(&t->base, nread, t->rbuf);
}

static int tcp_read_start(tb__transport_t *base, tb__transport_read_cb cb) {
  tcp_transport_t *t = (tcp_transport_t *)base;
  if (t->closing)
    return TB_ECLOSING;
  t->read_cb = cb;
  int rc = uv_read_start((uv_stream_t *)&t->tcp, on_alloc, on_read);
  if (rc == UV_EALREADY)
    rc = 0;
  return rc;
}

static int tcp_read_stop(tb__transport_t *base) {
  tcp_transport_t *t = (tcp_transport_t *)base;
  t->read_cb = NULL;
  return uv_read_stop((uv_stream_t *)&t->tcp);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  tcp_transport_t *t = req->data;
  tb__transport_cb cb = t->shutdown_cb;
  t->shutdown_cb = NULL;
  if (!t->closing)
    cb(&t->base, status);
}

static int tcp_shutdown(tb__transport_t *base, tb__transport_cb cb) {
  tcp_transport_t *t = (tcp_transport_t *)base;
  if (t->closing)
    return TB_ECLOSING;
  if (t->shutdown_cb != NULL)
    return UV_EALREADY;
  t->shutdown_req.data = t;
  int rc = uv_shutdown(&t->shutdown_req, (uv_stream_t *)&t->tcp, on_shutdown);
  if (rc == 0)
    t->shutdown_cb = cb;
  return rc;
}

static void tcp_set_ref(tb__transport_t *base, int ref) {
  tcp_transport_t *t = (tcp_transport_t *)base;
  if (ref)
    uv_ref((uv_handle_t *)&t->tcp);
  else
    uv_unref((uv_handle_t *)&t->tcp);
}

static void on_close(uv_handle_t *h) {
  tcp_transport_t *t = h->data;
  if (t->close_cb != NULL)
    t->close_cb(&t->base);
  free(t);
}

static void tcp_close(tb__transport_t *base, tb__transport_close_cb cb) {
  tcp_transport_t *t = (tcp_transport_t *)base;
  if (t->closing)
    return;
  t->closing = 1;
  t->close_cb = cb;
  t->read_cb = NULL;
  uv_close((uv_handle_t *)&t->tcp, on_close);
}

static const tb__transport_vtable_t tcp_vtable = {
  "tcp", tcp_connect, tcp_write, tcp_read_start, tcp_read_stop,
  tcp_shutdown, tcp_set_ref, tcp_close,
};

int tb__transport_tcp_new(uv_loop_t *loop, tb__transport_t **out) {
  tcp_transport_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return TB_ENOMEM;
  int rc = uv_tcp_init(loop, &t->tcp);
  if (rc != 0) {
    free(t);
    return rc;
  }
  t->tcp.data = t;
  t->base.vt = &tcp_vtable;
  t->base.loop = loop;
  *out = &t->base;
  return 0;
}

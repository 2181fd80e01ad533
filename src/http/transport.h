/*
 * The byte stream under an HTTP client connection, behind a small vtable,
 * so that plain TCP (transport_tcp.c) and TLS (a later transport_tls.c
 * over OpenSSL) are interchangeable and the connection code above them
 * never touches a uv_tcp_t.
 *
 * A transport is one connection attempt and its stream.  It is allocated
 * by its constructor and frees itself after close() has called back, like
 * a libuv handle.  Only one connect, one write and one shutdown may be
 * outstanding at a time: the HTTP/1.1 client never pipelines, so this is
 * all it needs.  Every operation that returns an error does not call its
 * callback.
 *
 * Reads land in a buffer the transport owns and reuses (for TLS, the
 * decrypted bytes): the read callback sees them only during the call.
 * While a transport is "unref'd" (an idle pooled connection) it does not
 * keep the loop alive, as uv_unref does for a handle.
 */
#ifndef TB_HTTP_TRANSPORT_H
#define TB_HTTP_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

typedef struct tb__transport_s tb__transport_t;

typedef void (*tb__transport_cb)(tb__transport_t *t, int status);
/* nread > 0: data[0 .. nread) are new bytes; nread < 0: UV_EOF or an
 * error, after which no more reads arrive. */
typedef void (*tb__transport_read_cb)(tb__transport_t *t, ssize_t nread,
                                      const char *data);
typedef void (*tb__transport_close_cb)(tb__transport_t *t);

typedef struct tb__transport_vtable_s {
  const char *name; /* "tcp", "tls": for messages */
  /* Connects to one address; cb(t, 0) when the stream is ready (for TLS:
   * after the handshake).  A failed connect leaves the transport good
   * only for close(). */
  int (*connect)(tb__transport_t *t, const struct sockaddr *addr,
                 tb__transport_cb cb);
  /* Writes the buffers in order as one write; they must stay valid until
   * cb.  Data is not copied. */
  int (*write)(tb__transport_t *t, const uv_buf_t bufs[], unsigned nbufs,
               tb__transport_cb cb);
  int (*read_start)(tb__transport_t *t, tb__transport_read_cb cb);
  int (*read_stop)(tb__transport_t *t);
  /* Ends the sending side after pending writes (TCP FIN, TLS
   * close_notify). */
  int (*shutdown)(tb__transport_t *t, tb__transport_cb cb);
  /* ref = 0: the transport stops keeping the loop alive. */
  void (*set_ref)(tb__transport_t *t, int ref);
  /* After close() no other callback of the transport runs (pending
   * connect, write and shutdown callbacks are dropped), which spares the
   * owner from telling late callbacks apart.  The transport's memory is
   * released after cb returns; cb may be NULL. */
  void (*close)(tb__transport_t *t, tb__transport_close_cb cb);
} tb__transport_vtable_t;

struct tb__transport_s {
  /* public */
  void *data;
  /* read-only */
  const tb__transport_vtable_t *vt;
  uv_loop_t *loop;
};

/* Plain TCP with TCP_NODELAY; a 64 KiB read buffer reused for every read. */
int tb__transport_tcp_new(uv_loop_t *loop, tb__transport_t **out);

static inline int tb__transport_connect(tb__transport_t *t,
                                        const struct sockaddr *addr,
                                        tb__transport_cb cb) {
  return t->vt->connect(t, addr, cb);
}
static inline int tb__transport_write(tb__transport_t *t,
                                      const uv_buf_t bufs[], unsigned nbufs,
                                      tb__transport_cb cb) {
  return t->vt->write(t, bufs, nbufs, cb);
}
static inline int tb__transport_read_start(tb__transport_t *t,
                                           tb__transport_read_cb cb) {
  return t->vt->read_start(t, cb);
}
static inline int tb__transport_read_stop(tb__transport_t *t) {
  return t->vt->read_stop(t);
}
static inline int tb__transport_shutdown(tb__transport_t *t,
                                         tb__transport_cb cb) {
  return t->vt->shutdown(t, cb);
}
static inline void tb__transport_set_ref(tb__transport_t *t, int ref) {
  t->vt->set_ref(t, ref);
}
static inline void tb__transport_close(tb__transport_t *t,
                                       tb__transport_close_cb cb) {
  t->vt->close(t, cb);
}

#endif /* TB_HTTP_TRANSPORT_H */

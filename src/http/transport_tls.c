/*
 * The TLS client transport: the codec of tls.c over a TCP transport.
 *
 * connect() connects TCP, then runs the handshake; its callback fires when
 * the handshake is complete (or failed: TB_ETLS, the reason logged).
 * Ciphertext goes out in one TCP write at a time: OpenSSL may queue bytes
 * of its own (handshake, alerts, close_notify) while the caller's write is
 * on the wire, so what accumulates meanwhile leaves when that write
 * completes, and the caller's write callback runs once every byte of its
 * data has been written.
 */
#include "http/tls.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"

typedef struct tls_transport_s {
  tb__transport_t base;
  tb__transport_t *tcp;
  tb__tls_t *tls;
  char *host;
  tb__transport_cb connect_cb;
  tb__transport_cb write_cb;      /* the caller's write, until flushed */
  tb__transport_cb shutdown_cb;
  tb__transport_read_cb read_cb;
  tb__transport_close_cb close_cb;
  tb__buf_t wire;                  /* ciphertext of the TCP write in flight */
  tb__buf_t plain;                 /* decrypted bytes of one read */
  uv_buf_t wire_buf;
  int writing;                    /* a TCP write is in flight */
  int caller_in_flight;           /* the caller's data is in that write */
  int reading;                    /* TCP reads are on */
  int closing;
} tls_transport_t;

static void flush(tls_transport_t *t);

static void fail_connect(tls_transport_t *t, int status) {
  tb__transport_cb cb = t->connect_cb;
  t->connect_cb = NULL;
  if (cb != NULL)
    cb(&t->base, status);
}

static void on_tcp_write(tb__transport_t *tcp, int status) {
  tls_transport_t *t = tcp->data;
  t->writing = 0;
  t->wire.len = 0;
  int caller = t->caller_in_flight;
  t->caller_in_flight = 0;
  if (status == 0 && tb__tls_pending(t->tls) > 0) {
    /* More ciphertext queued meanwhile (the caller's included, when it
     * came after): send it before saying the write is done. */
    t->caller_in_flight = caller;
    flush(t);
    if (t->writing)
      return;
  }
  if (status != 0 && t->connect_cb != NULL) {
    fail_connect(t, status);
    return;
  }
  if (caller && t->write_cb != NULL) {
    tb__transport_cb cb = t->write_cb;
    t->write_cb = NULL;
    cb(&t->base, status);
  }
}

/* Writes what OpenSSL has queued, when no write is in flight. */
static void flush(tls_transport_t *t) {
  if (t->writing || t->closing || tb__tls_pending(t->tls) == 0)
    return;
  if (tb__tls_take_output(t->tls, &t->wire) != 0) {
    if (t->connect_cb)
      fail_connect(t, TB_ENOMEM);
    return;
  }
  t->wire_buf = uv_buf_init(t->wire.base, (unsigned)t->wire.len);
  int rc = tb__transport_write(t->tcp, &t->wire_buf, 1, on_tcp_write);
  if (rc == 0) {
    t->writing = 1;
    if (t->write_cb != NULL)
      t->caller_in_flight = 1;
  } else if (t->connect_cb != NULL) {
    fail_connect(t, rc);
  }
}

static void on_tcp_read(tb__transport_t *tcp, ssize_t nread, const char *data) {
  tls_transport_t *t = tcp->data;
  if (nread < 0) {
    if (t->connect_cb != NULL) {
      fail_connect(t, nread == UV_EOF ? TB_ETLS : (int)nread);
      return;
    }
    if (t->read_cb != NULL)
      t->read_cb(&t->base, nread, NULL);
    return;
  }
  t->plain.len = 0;
  int was_done = tb__tls_handshake_done(t->tls);
  int rc = tb__tls_feed(t->tls, data, (size_t)nread, &t->plain);
  flush(t);
  if (t->closing)
    return;
  if (!was_done) {
    if (rc == TB_ETLS || rc == UV_EOF) {
      tb__log(TB_LOG_WARN, "TLS with %s: %s", t->host,
              rc == UV_EOF ? "closed during the handshake" : tb__tls_error(t->tls));
      fail_connect(t, TB_ETLS);
      return;
    }
    if (rc != 0) {
      fail_connect(t, rc);
      return;
    }
    if (!tb__tls_handshake_done(t->tls))
      return;
    /* The handshake is complete: stop reading until the caller reads;
     * bytes already decrypted (none in practice) are kept for then. */
    tb__transport_cb cb = t->connect_cb;
    t->connect_cb = NULL;
    if (t->read_cb == NULL) {
      tb__transport_read_stop(t->tcp);
      t->reading = 0;
    }
    cb(&t->base, 0);
    if (t->closing || t->plain.len == 0 || t->read_cb == NULL)
      return;
  }
  if (t->plain.len > 0 && t->read_cb != NULL)
    t->read_cb(&t->base, (ssize_t)t->plain.len, t->plain.base);
  if (t->closing)
    return;
  if (rc != 0 && t->read_cb != NULL) {
    if (rc == TB_ETLS)
      tb__log(TB_LOG_WARN, "TLS with %s: %s", t->host, tb__tls_error(t->tls));
    t->read_cb(&t->base, rc == UV_EOF ? UV_EOF : rc, NULL);
  }
}

static void on_tcp_connect(tb__transport_t *tcp, int status) {
  tls_transport_t *t = tcp->data;
  if (status != 0) {
    fail_connect(t, status);
    return;
  }
  int rc = tb__transport_read_start(t->tcp, on_tcp_read);
  if (rc == 0) {
    t->reading = 1;
    rc = tb__tls_handshake(t->tls);
  }
  if (rc < 0) {
    fail_connect(t, rc);
    return;
  }
  flush(t); /* the ClientHello */
}

static int tls_connect(tb__transport_t *base, const struct sockaddr *addr,
                       tb__transport_cb cb) {
  tls_transport_t *t = (tls_transport_t *)base;
  if (t->closing)
    return TB_ECLOSING;
  if (t->connect_cb != NULL)
    return UV_EALREADY;
  int rc = tb__transport_connect(t->tcp, addr, on_tcp_connect);
  if (rc == 0)
    t->connect_cb = cb;
  return rc;
}

static int tls_write(tb__transport_t *base, const uv_buf_t bufs[], unsigned nbufs,
                     tb__transport_cb cb) {
  tls_transport_t *t = (tls_transport_t *)base;
  if (t->closing)
    return TB_ECLOSING;
  if (t->write_cb != NULL || !tb__tls_handshake_done(t->tls))
    return UV_EALREADY;
  int rc = tb__tls_encrypt(t->tls, bufs, nbufs);
  if (rc != 0)
    return rc;
  t->write_cb = cb;
  if (t->writing)
    return 0; /* leaves when the write in flight completes */
  flush(t);
  if (!t->writing) {
    t->write_cb = NULL;
    return UV_EIO;
  }
  return 0;
}

static int tls_read_start(tb__transport_t *base, tb__transport_read_cb cb) {
  tls_transport_t *t = (tls_transport_t *)base;
  if (t->closing)
    return TB_ECLOSING;
  t->read_cb = cb;
  if (t->reading)
    return 0;
  int rc = tb__transport_read_start(t->tcp, on_tcp_read);
  if (rc == 0)
    t->reading = 1;
  return rc;
}

static int tls_read_stop(tb__transport_t *base) {
  tls_transport_t *t = (tls_transport_t *)base;
  t->read_cb = NULL;
  t->reading = 0;
  return tb__transport_read_stop(t->tcp);
}

static void on_tcp_shutdown(tb__transport_t *tcp, int status) {
  tls_transport_t *t = tcp->data;
  tb__transport_cb cb = t->shutdown_cb;
  t->shutdown_cb = NULL;
  if (cb != NULL)
    cb(&t->base, status);
}

static int tls_shutdown(tb__transport_t *base, tb__transport_cb cb) {
  tls_transport_t *t = (tls_transport_t *)base;
  if (t->closing)
    return TB_ECLOSING;
  if (t->shutdown_cb != NULL)
    return UV_EALREADY;
  tb__tls_close_notify(t->tls);
  flush(t);
  /* TCP writes are ordered: the FIN follows the close_notify. */
  int rc = tb__transport_shutdown(t->tcp, on_tcp_shutdown);
  if (rc == 0)
    t->shutdown_cb = cb;
  return rc;
}

static void tls_set_ref(tb__transport_t *base, int ref) {
  tls_transport_t *t = (tls_transport_t *)base;
  tb__transport_set_ref(t->tcp, ref);
}

static void on_tcp_closed(tb__transport_t *tcp) {
  tls_transport_t *t = tcp->data;
  if (t->close_cb != NULL)
    t->close_cb(&t->base);
  tb__tls_free(t->tls);
  tb__buf_free(&t->wire);
  tb__buf_free(&t->plain);
  free(t->host);
  free(t);
}

static void tls_close(tb__transport_t *base, tb__transport_close_cb cb) {
  tls_transport_t *t = (tls_transport_t *)base;
  if (t->closing)
    return;
  t->closing = 1;
  t->close_cb = cb;
  t->read_cb = NULL;
  t->connect_cb = NULL;
  t->write_cb = NULL;
  t->shutdown_cb = NULL;
  tb__transport_close(t->tcp, on_tcp_closed);
}

static const tb__transport_vtable_t tls_vtable = {
  "tls", tls_connect, tls_write, tls_read_start, tls_read_stop,
  tls_shutdown, tls_set_ref, tls_close,
};

int tb__transport_tls_new(uv_loop_t *loop, void *tls_ctx, const char *host,
                          tb__transport_t **out) {
  tls_transport_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return TB_ENOMEM;
  t->host = tb__strndup(host ? host : "", host ? strlen(host) : 0);
  int rc = t->host ? tb__tls_new(tls_ctx, 0, host, &t->tls) : TB_ENOMEM;
  rc = rc ? rc : tb__transport_tcp_new(loop, &t->tcp);
  if (rc != 0) {
    tb__tls_free(t->tls);
    free(t->host);
    free(t);
    return rc;
  }
  t->tcp->data = t;
  t->base.vt = &tls_vtable;
  t->base.loop = loop;
  *out = &t->base;
  return 0;
}

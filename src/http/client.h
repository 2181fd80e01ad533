/*
 * The HTTP/1.1 client: requests over pooled keep-alive connections on the
 * host's loop.  The Tinker client runtime (futures, polling, retries) is
 * built on it, so it is made to be cheap per request on a kept-alive
 * connection: no connect, one write, and no allocation when the request
 * object is reused.
 *
 * A tb__http_client_t is a handle, as in libuv: the caller owns its memory,
 * tb__http_client_init() sets it up on a loop, tb__http_client_close()
 * starts closing it and the memory may be released only in the close
 * callback.  It owns one connection pool per origin (scheme, host, port):
 * at most max_conns_per_origin connections, later requests wait in FIFO
 * order, idle connections are reused most-recently-used first and closed
 * after idle_timeout_ms.  Idle connections and the client's timers do not
 * keep the loop alive.
 *
 * A tb__http_client_req_t is a request, as in libuv: the caller owns it, fills
 * its input fields and sends it; the callback runs exactly once with 0 or
 * a negative code, unless tb__http_client_send() returned an error, in
 * which case it never runs.  A request may be sent again after its
 * callback; its buffers are then reused.  tb__http_client_req_free() releases
 * what the request holds (the response) once it is no longer in flight.
 *
 * Status codes in the callback:
 *   0                    a response arrived (any HTTP status: 404 is a
 *                        response, not an error)
 *   UV_ECANCELED         tb__http_client_req_cancel() or the client closed
 *   TB_ECONNREFUSED      nothing listens at the address
 *   TB_ECONNRESET        the peer reset the connection
 *   TB_ECONNECT_TIMEOUT  resolving and connecting took too long
 *   TB_ETIMEDOUT         the whole exchange took too long
 *   TB_EDNS              the host name could not be resolved
 *   TB_EPROTO            the response was not valid HTTP/1.x
 *   TB_ECLOSED           the connection ended before the response did
 *   TB_ETOOLARGE         the body or head exceeded its limit
 *   TB_EURL              a redirect's Location could not be used
 *   other libuv codes    as the socket layer reported them
 * req->message then says what happened in a sentence.
 *
 * A request sent on a reused connection that fails with EOF, a reset or a
 * broken pipe before any byte of the response arrived is sent once more
 * on a fresh connection: the server closed the kept-alive connection as
 * the request was on its way, and since nothing came back the request was
 * not processed.
 *
 * Non-goals: pipelining, HTTP/2, chunked request bodies, cookies, proxies,
 * response streaming (bodies are collected into one buffer).
 */
#ifndef TB_HTTP_CLIENT_H
#define TB_HTTP_CLIENT_H

#include <stdint.h>
#include <uv.h>

#include <llhttp.h>

#include "core/buf.h"
#include "http/http.h"
#include "http/transport.h"
#include "http/url.h"

typedef struct tb__http_client_s tb__http_client_t;
typedef struct tb__http_client_req_s tb__http_client_req_t;

typedef void (*tb__http_client_req_cb)(tb__http_client_req_t *req, int status);
typedef void (*tb__http_client_close_cb)(tb__http_client_t *client);

/* A doubly linked list node, circular with a sentinel head. */
typedef struct tb__http_link_s {
  struct tb__http_link_s *next, *prev;
} tb__http_link_t;

/* Makes the transport for one connection to an https origin: the TLS
 * transport (a transport_tls.c over OpenSSL) provides one, with its
 * context in tls_ctx and the host name for SNI and verification. */
typedef int (*tb__http_tls_transport_new_t)(uv_loop_t *loop, void *tls_ctx,
                                            const char *host,
                                            tb__transport_t **out);

typedef struct tb__http_client_opts_s {
  unsigned max_conns_per_origin; /* 0: 8 */
  uint64_t idle_timeout_ms;      /* 0: 30 s */
  uint64_t connect_timeout_ms;   /* 0: 10 s; requests may override */
  uint64_t timeout_ms;           /* 0: no total timeout; requests may set one */
  size_t max_body;               /* 0: TB_HTTP_DEFAULT_MAX_BODY */
  const char *user_agent;        /* NULL: "tinkerbell/<version>"; copied */
  tb__http_tls_transport_new_t tls_transport_new; /* NULL: no https */
  void *tls_ctx;
} tb__http_client_opts_t;

/* What came back.  Everything points into memory the request owns; it is
 * valid from the callback until the request is sent again or freed. */
typedef struct tb__http_response_s {
  int status;                      /* 200, 404, ...; 0 before a head */
  uint8_t http_major, http_minor;
  const tb__http_header_t *headers; /* in the order received */
  size_t n_headers;
  const char *body;                /* contiguous; NULL when empty */
  size_t body_len;
} tb__http_response_t;

struct tb__http_client_req_s {
  /* public */
  void *data;

  /* Input, read when the request is sent.  The URL, method and headers
   * are copied then; the body is not: the buffers it points to (and the
   * array of them) must stay valid until the callback. */
  const char *method;               /* NULL: "GET" */
  tb_slice_t url;                   /* absolute http:// or https:// URL */
  const tb__http_header_t *headers;  /* extra headers; not Content-Length,
                                       Connection or Transfer-Encoding */
  size_t n_headers;
  const uv_buf_t *body;
  unsigned n_body;
  /* Resolving and connecting a new connection made for this request
   * (TB_ECONNECT_TIMEOUT); 0: the client's.  Waiting in the queue counts
   * only against the total timeout. */
  uint64_t connect_timeout_ms;
  /* From send to callback, redirects and a retry included
   * (TB_ETIMEDOUT); 0: the client's (0 there: none). */
  uint64_t timeout_ms;
  size_t max_body;                  /* 0: the client's */
  unsigned follow_redirects;        /* GET only: follow up to this many */

  /* read-only */
  tb__http_response_t response;
  unsigned redirects;               /* redirects followed */
  unsigned reused_connection : 1;   /* the last attempt reused a connection */
  unsigned retried : 1;             /* sent again after a stale connection */
  char message[192];                /* after a failure: what happened */

  /* private */
  tb__http_client_t *client_;
  tb__http_client_req_cb cb_;
  struct tb__http_origin_s *origin_;
  struct tb__http_conn_s *conn_;
  tb__http_link_t queue_link_;      /* in the origin's queue or deferred */
  tb__http_link_t active_link_;     /* in the client's requests in flight */
  int state_;
  int deferred_status_;
  uint64_t deadline_;               /* total timeout, 0: none */
  uint64_t connect_deadline_;       /* while connecting, 0: none */
  uint64_t connect_timeout_;
  size_t max_body_;
  size_t body_total_;               /* bytes in body[] */
  tb__url_t url_;                    /* slices into url_buf_ */
  tb__buf_t url_buf_;
  tb__buf_t scratch_;                /* redirect resolution */
  tb__buf_t head_;                   /* request head, plus a small body */
  tb__buf_t resp_strs_;              /* header names and values */
  tb__buf_t resp_body_;
  size_t *spans_;                   /* 4 per header: name off/len, value */
  tb__http_header_t *resp_headers_;
  size_t hdr_cap_;
  unsigned is_head_ : 1;
  unsigned body_inline_ : 1;
  unsigned fresh_only_ : 1;
  unsigned got_bytes_ : 1;
  unsigned in_field_ : 1;
  unsigned head_done_ : 1;
};

struct tb__http_client_s {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *loop;
  uint64_t n_connects;         /* connections established, for metrics */
  /* private */
  tb__http_client_opts_t opts_;  /* with defaults filled in */
  char *user_agent_;
  uv_timer_t timer_;            /* request deadlines and idle expiry */
  uv_timer_t defer_;            /* completions on the next loop turn */
  uint64_t timer_due_;          /* when timer_ fires, 0: stopped */
  tb__http_link_t origins_;
  tb__http_link_t active_;      /* requests in flight */
  tb__http_link_t deferred_;    /* requests waiting for their callback */
  size_t n_active_;
  size_t n_conns_;              /* connection structs alive */
  size_t n_transports_;         /* transports not yet closed */
  int n_handles_;               /* timers not yet closed */
  int closing_;
  int timers_closing_;
  tb__http_client_close_cb close_cb_;
};

/* Sets up the client on loop.  opts may be NULL for the defaults.  Returns
 * 0, TB_EINVAL or TB_ENOMEM. */
int tb__http_client_init(uv_loop_t *loop, tb__http_client_t *client,
                         const tb__http_client_opts_t *opts);

/* Cancels every request (their callbacks run with UV_ECANCELED), closes
 * every connection and calls close_cb (which may be NULL) once nothing of
 * the client remains on the loop.  Never calls back synchronously. */
void tb__http_client_close(tb__http_client_t *client,
                           tb__http_client_close_cb close_cb);

/* Zeroes a request: a zeroed request is valid for tb__http_client_req_free. */
void tb__http_client_req_init(tb__http_client_req_t *req);

/* Starts the request.  Returns 0, or an error without ever calling cb:
 * TB_EINVAL (no callback, bad method or header), TB_EURL, TB_EUNSUPPORTED
 * (https without opts.tls_transport_new), TB_EBUSY (the request is in flight),
 * TB_ECLOSING (the client is closing), TB_ENOMEM.  req->message says why. */
int tb__http_client_send(tb__http_client_t *client, tb__http_client_req_t *req,
                         tb__http_client_req_cb cb);

/* Cancels a request in flight: its connection, if it had one, is
 * discarded, and the callback runs on a later loop turn with
 * UV_ECANCELED.  Returns 0, UV_EINVAL when the request is not in flight,
 * or UV_EBUSY when its callback is already due (with another status). */
int tb__http_client_req_cancel(tb__http_client_req_t *req);

/* Releases the response and the request's buffers.  Not while the request
 * is in flight.  The request may be sent again afterwards. */
void tb__http_client_req_free(tb__http_client_req_t *req);

/* The first response header with this name (ASCII case-insensitive), or
 * NULL. */
const tb__http_header_t *tb__http_response_header(const tb__http_response_t *res,
                                                 const char *name);

/* Fills err from a callback status and req->message, with the category a
 * retry policy needs (network, timeout, cancelled).  Returns status. */
int tb__http_client_req_error(const tb__http_client_req_t *req, int status,
                           tb_error_t *err);

/* ------------------------------------------------------------------
 * Internal to client.c (requests, the exchange, parsing) and pool.c
 * (origins, connections, timers, completion).  Not for other modules.
 */

enum {
  TB__REQ_IDLE = 0,   /* not in flight */
  TB__REQ_QUEUED,     /* waiting in its origin's queue */
  TB__REQ_CONNECTING, /* a connection is being made for it */
  TB__REQ_SENT,       /* on a connection: written, response being read */
  TB__REQ_DEFERRED    /* its callback runs on the next loop turn */
};

enum {
  TB__CONN_RESOLVING = 0,
  TB__CONN_CONNECTING,
  TB__CONN_BUSY,
  TB__CONN_IDLE
};

/* One scheme+host+port and its pool. */
struct tb__http_origin_s {
  tb__http_link_t link;   /* in client->origins_ */
  tb__http_client_t *client;
  char *host;             /* lowercase, NUL-terminated, no [] */
  uint16_t port;
  unsigned tls : 1;
  unsigned ipv6 : 1;
  tb__http_link_t busy;   /* connections resolving, connecting or in use */
  tb__http_link_t idle;   /* kept-alive connections, most recent first */
  tb__http_link_t queue;  /* requests waiting for a connection, FIFO */
  unsigned n_conns;       /* busy + idle, against max_conns_per_origin */
  int dispatching;        /* guards against nested dispatch */
};

struct tb__http_conn_s {
  tb__http_link_t link;   /* in origin->busy or origin->idle */
  struct tb__http_origin_s *origin;
  tb__http_client_t *client;
  tb__transport_t *t;     /* NULL while resolving or between addresses */
  tb__http_client_req_t *req; /* NULL when idle */
  llhttp_t ll;
  uv_getaddrinfo_t gai;
  struct addrinfo *ai;    /* the resolved addresses */
  struct addrinfo *ai_next;
  uint64_t idle_deadline;
  int state;
  int last_err;           /* the last connect failure */
  int cb_err;             /* set by a parser callback that failed */
  unsigned n_requests;    /* requests sent on this connection */
  unsigned write_pending : 1;
  unsigned response_done : 1;
  unsigned leftover : 1;  /* not reusable: extra bytes, EOF, failed write */
  unsigned finishing : 1; /* inside llhttp_finish */
  unsigned dead : 1;      /* discarded while a lookup runs */
};

void tb__http_req_set_message(tb__http_client_req_t *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* client.c: the exchange on a connection. */
void tb__http_conn_parser_init(struct tb__http_conn_s *conn);
void tb__http_conn_send(struct tb__http_conn_s *conn);
void tb__http_conn_on_written(tb__transport_t *t, int status);
void tb__http_conn_on_read(tb__transport_t *t, ssize_t nread,
                           const char *data);
void tb__http_conn_io_error(struct tb__http_conn_s *conn, int err);

/* pool.c */
int tb__http_pool_has_tls(const tb__http_client_t *c);
struct tb__http_origin_s *tb__http_pool_origin(tb__http_client_t *c,
                                               const tb__url_t *url);
void tb__http_pool_activate(tb__http_client_t *c, tb__http_client_req_t *req);
void tb__http_pool_enqueue(struct tb__http_origin_s *o,
                           tb__http_client_req_t *req, int front);
void tb__http_pool_dispatch(struct tb__http_origin_s *o);
void tb__http_pool_complete(tb__http_client_req_t *req, int status);
void tb__http_pool_fail_later(tb__http_client_req_t *req, int status);
void tb__http_pool_retry(struct tb__http_conn_s *conn);
void tb__http_pool_discard(struct tb__http_conn_s *conn);
void tb__http_pool_discard_idle(struct tb__http_conn_s *conn);
void tb__http_conn_release(struct tb__http_conn_s *conn, int keep);
void tb__http_conn_fail(struct tb__http_conn_s *conn, int status);

#endif /* TB_HTTP_CLIENT_H */

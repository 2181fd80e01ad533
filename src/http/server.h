/*
 * The HTTP/1.1 server: a uv_tcp listener (IPv4 or IPv6), keep-alive
 * connections parsed with llhttp, pipelined requests answered strictly in
 * order, and handlers that answer at once or later (long polls).
 *
 * Object model, after libuv:
 *   - tb__http_server_t is a handle: tb__http_server_init, _listen, _close.
 *     The caller owns its memory, which must stay valid until close_cb.
 *   - tb__http_request_t is handed to the handler when a request is
 *     complete.  The handler answers it exactly once with one of the
 *     tb__http_respond* functions, now or later; that call gives the
 *     request back to the server.  Its memory (arena, headers, body) stays
 *     valid until then -- also when the client has gone away meanwhile:
 *     on_abort tells the handler, and a later respond is a safe no-op that
 *     only releases the request.
 *   - on_done is called exactly once per answered request, when the
 *     response was written (status 0) or could not be (TB_ECLOSED or a
 *     libuv error); this is where a handler frees a body it lent to the
 *     response.
 *
 * The server adds only Content-Length (none for 1xx/204/304), and
 * "Connection: close" or "Connection: keep-alive" where HTTP needs it;
 * no Date or Server.  Errors the server produces itself (400, 404, 405,
 * 413, 414, 431, 503) carry a JSON body {"error": "...", "category":
 * "user"}; timeouts close the connection without an answer.
 *
 * What clients may hold: a request's head and body must arrive within
 * request_timeout_ms of its first byte (besides the per-read header and
 * body timeouts), the bodies being received or held by handlers take at
 * most max_body_memory bytes together (a request that would pass it is
 * answered 503 with Retry-After before its body is read), and at most
 * max_connections are open (a connection beyond is answered 503 and
 * closed at once).  An on_head handler sees each request before its body
 * (to refuse it, say for its credentials, without reading the body).
 *
 * A client that closes its side (EOF) or resets while a handler holds one
 * of its requests counts as gone: on_abort.  That is noticed while the
 * connection reads, which it always does except when max_pipeline
 * requests wait for answers (then at the next write).
 *
 * Non-goals: TLS, HTTP/2, upgrades, response streaming (a response is one
 * set of buffers), write timeouts for clients that never read.
 */
#ifndef TB_HTTP_SERVER_H
#define TB_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/arena.h"
#include "core/buf.h"
#include "http/http.h"
#include "http/server_parser.h"
#include "tinkerbell/error.h"

typedef struct tb__http_server_s tb__http_server_t;
typedef struct tb__http_request_s tb__http_request_t;
typedef struct tb__http_server_conn_s tb__http_server_conn_t;
typedef struct tb__http_router_s tb__http_router_t;

/* Handles one complete request; must eventually answer it. */
typedef void (*tb__http_handler_cb)(tb__http_request_t *req);
/* on_abort and on_done: the request plus a status (see above). */
typedef void (*tb__http_request_cb)(tb__http_request_t *req, int status);
typedef void (*tb__http_server_close_cb)(tb__http_server_t *server);

/* A path parameter captured by the router, percent-decoded.  value is
 * also NUL-terminated (in the request's arena). */
typedef struct tb__http_param_s {
  tb_slice_t name;
  tb_slice_t value;
} tb__http_param_t;

#define TB_HTTP_MAX_PARAMS 8

typedef struct tb__http_server_options_s {
  /* Every complete request goes to the router when one is set, else to
   * on_request.  One of the two is required. */
  tb__http_router_t *router;
  tb__http_handler_cb on_request;
  size_t max_body;            /* 0: TB_HTTP_DEFAULT_MAX_BODY; more -> 413 */
  /* Timeouts in milliseconds; 0 means the default in brackets.  The
   * connection is closed (the server stays up) when
   *   idle:   a keep-alive connection waits for a request [60000];
   *   header: a request's head is not complete this long after its first
   *           byte [10000];
   *   body:   no body byte arrived for this long [30000]. */
  uint64_t idle_timeout_ms;
  uint64_t header_timeout_ms;
  uint64_t body_timeout_ms;
  /* The whole request, head and body, from its first byte; the
   * connection closes when it is not complete by then
   * [TB_HTTP_DEFAULT_REQUEST_TIMEOUT_MS].  A client that sends one byte
   * just often enough to beat the body timeout still ends here. */
  uint64_t request_timeout_ms;
  /* Bytes of request bodies held at once, over all connections: those
   * arriving and those whose requests a handler holds.  A request is
   * counted for its Content-Length from its head (a chunked one as it
   * grows); one that would pass the limit is answered 503 with
   * Retry-After (before its body is read), and its connection closes.
   * At least max_body [TB_HTTP_DEFAULT_MAX_BODY_MEMORY or max_body,
   * whichever is larger]. */
  size_t max_body_memory;
  /* Open connections; one accepted beyond them is answered 503 with
   * Retry-After and closed at once [TB_HTTP_DEFAULT_MAX_CONNECTIONS, or
   * the open-file limit less 64 when that is lower]. */
  size_t max_connections;
  /* Optional: called once a request's head is complete, before its body
   * is read, with method, url, path, query and headers set (body empty).
   * It may answer the request (tb__http_respond*): the body is then never
   * read, and when one was still to come the connection closes after the
   * answer.  Otherwise the request goes on to the router / on_request
   * once complete, with the req->data and req->on_done set here. */
  tb__http_handler_cb on_head;
  /* Requests a connection may have parsed but not yet answered; reading
   * stops at this many until answers go out [32]. */
  unsigned max_pipeline;
  int backlog;                /* listen(2) backlog [511] */
  /* HTTPS: a server context of http/tls.h (certificate and key), shared
   * by every connection and kept by the caller until the server closed;
   * NULL: plain HTTP. */
  struct tb__tls_ctx_s *tls_ctx;
} tb__http_server_options_t;

struct tb__http_server_s {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *loop;
  tb__http_server_options_t opts;  /* with the defaults filled in */
  uint64_t n_requests;            /* requests dispatched so far */
  /* private */
  uv_tcp_t tcp;
  int listening;
  int closing;
  int tcp_closed;
  size_t n_conns;
  size_t n_detached;              /* aborted requests a handler still holds */
  size_t body_memory;             /* bytes counted against max_body_memory */
  size_t n_refusing;              /* connections over the cap, closing */
  uint64_t n_refused_conns;       /* connections refused over the cap */
  uint64_t n_refused_bodies;      /* requests refused for body memory */
  tb__http_server_conn_t *conns;          /* every open connection */
  tb__http_request_t *free_reqs;   /* recycled request objects */
  size_t n_free_reqs;
  char *read_buf;                 /* shared by every connection */
  tb__http_server_close_cb close_cb;
};

typedef enum {
  TB__REQ_PARSING = 0,   /* bytes still arriving */
  TB__REQ_HANDLER,       /* with the handler */
  TB__REQ_RESPONDED,     /* answer ready, waiting for its turn */
  TB__REQ_WRITING,       /* in a uv_write */
  TB__REQ_DETACHED       /* connection gone, handler still holds it */
} tb__http_req_state_t;

struct tb__http_request_s {
  /* public */
  void *data;                   /* the handler's; NULL at dispatch */
  tb__http_request_cb on_abort;  /* optional: the client went away */
  tb__http_request_cb on_done;   /* optional: the answer is finished */
  /* read-only */
  tb__http_server_t *server;
  tb_slice_t method;            /* "GET", ... (static, NUL-terminated) */
  tb_slice_t url;               /* as sent: path?query */
  tb_slice_t path;              /* raw (not decoded), without the query */
  tb_slice_t query;             /* raw, after '?'; empty when none */
  const tb__http_header_t *headers;
  size_t n_headers;
  tb_slice_t body;              /* contiguous */
  tb__http_param_t params[TB_HTTP_MAX_PARAMS];
  size_t n_params;
  void *route_data;             /* the data given with the route */
  tb__arena_t arena;             /* released after on_done */
  int keep_alive;               /* the client wants to keep the connection */
  int aborted;                  /* the client went away; answers go nowhere */
  int status;                   /* what was answered; 0 before */
  /* private */
  tb__http_req_state_t state;
  tb__http_server_conn_t *conn;         /* NULL once detached */
  tb__http_request_t *next, *prev;
  tb__http_msg_t msg;
  tb__buf_t out;                 /* status line, headers, small bodies */
  uv_buf_t *body_iov;           /* large bodies, by reference */
  size_t n_body_iov;
  int close_after;              /* the connection ends after this answer */
  int continue_state;           /* 0 none, 1 "100 Continue" owed, 2 sent */
  int head_seen;                /* method, url, headers set at the head */
  size_t body_held;             /* counted in server->body_memory */
};

/* Fills in defaults and prepares the listener.  Returns 0 or a negative
 * error (nothing to close then).  After a successful init the server must
 * be closed with tb__http_server_close, even when listen fails. */
int tb__http_server_init(uv_loop_t *loop, tb__http_server_t *server,
                         const tb__http_server_options_t *opts);
/* Binds host ("127.0.0.1", "::1", "0.0.0.0", "::") and port (0: an
 * ephemeral port, see tb__http_server_port) and starts accepting. */
int tb__http_server_listen(tb__http_server_t *server, const char *host, int port);
/* The bound port, or a negative error. */
int tb__http_server_port(const tb__http_server_t *server);
/* Graceful close: stops accepting, closes idle connections, lets requests
 * already with a handler be answered and written (with Connection: close),
 * then closes the rest.  close_cb runs once every handle is closed and
 * every aborted request was released by its handler.  Also valid after
 * init alone. */
void tb__http_server_close(tb__http_server_t *server, tb__http_server_close_cb close_cb);

/* Answers a request: status, extra headers (copied now), and the body as
 * buffers that must stay valid until on_done (the request's arena, static
 * memory, or memory on_done frees).  Gives the request back to the server.
 * Headers must not include Content-Length or Connection. */
void tb__http_respond(tb__http_request_t *req, int status,
                      const tb__http_header_t *headers, size_t n_headers,
                      const uv_buf_t *body, size_t n_body);
/* The same with "Content-Type: application/json". */
void tb__http_respond_json(tb__http_request_t *req, int status, const char *json,
                           size_t len);
/* {"error": message, "category": "user"} (4xx) or "server" (5xx). */
void tb__http_respond_error(tb__http_request_t *req, int status, const char *message);
/* The connection closes after this request's answer ("Connection:
 * close"), whatever the client asked.  Call before answering. */
void tb__http_request_close_connection(tb__http_request_t *req);

/* The first header with this name (case-insensitive); NULL when absent. */
const tb__http_header_t *tb__http_request_header(const tb__http_request_t *req,
                                                const char *name);
/* The path parameter with this name; NULL when absent. */
const tb_slice_t *tb__http_request_param(const tb__http_request_t *req,
                                         const char *name);
/* The first query parameter with this name, percent-decoded ('+' is a
 * space) into the request's arena and NUL-terminated.  Returns 1 when
 * found, 0 when absent, TB_EINVAL for bad percent-encoding, TB_ENOMEM. */
int tb__http_request_query(tb__http_request_t *req, const char *name,
                           tb_slice_t *value);

#endif /* TB_HTTP_SERVER_H */

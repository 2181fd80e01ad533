/*
 * What the parts of the server share, and the API the training routes
 * plug into: routes registered in one table (which also feeds the index
 * at GET / and the metrics), a per-request context with the caller's
 * user, answers that go through the server so that every request is
 * logged and counted with its status, JSON body parsing with path errors,
 * the rate limit, the futures store and the sessions.
 *
 * A route handler is a tb__http_handler_cb.  The server owns req->data (a
 * tb__sreq_t) and req->on_done; a route keeps its own state in
 * tb__sreq(req)->data and its completion in tb__sreq(req)->on_done, which
 * the server calls from its own.  req->on_abort is the route's.  Routes
 * answer with tb__server_respond* only.
 */
#ifndef TB_SERVER_INTERNAL_H
#define TB_SERVER_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/json.h"
#include "http/router.h"
#include "http/server.h"
#include "server/auth.h"
#include "server/futures.h"
#include "server/sessions.h"
#include "tinkerbell/server.h"

typedef struct tb__server_s tb__server_t;

typedef enum {
  TB__DIALECT_SERVICE = 0,  /* both dialects use it */
  TB__DIALECT_TINKER,
  TB__DIALECT_TINKERBELL,
  TB__DIALECT_BOTH          /* one path, the body decides */
} tb__dialect_t;

enum {
  TB__ROUTE_PUBLIC = 1,     /* no API key needed */
  TB__ROUTE_CLOSING = 2,    /* 503 while the server closes */
  TB__ROUTE_SUBMITS = 4     /* takes the user's rate limit (429) */
};


/* The parts of the server whose routes are added together (routes.c). */
typedef enum {
  TB__PART_CORE = 0,   /* service, sessions, futures: at init */
  TB__PART_STORE,      /* the REST routes over the database: with a data_dir */
  TB__PART_TRAINING    /* the engine-backed routes of both dialects */
} tb__part_t;

/* Adds the routes of a part (tb__routes_add). */
typedef int (*tb__add_routes_fn)(tb__server_t *srv, tb__part_t part, void *data);

/* What one dialect of a row does with a request (routes.h): a handler of
 * its own, or the generic one (handler.c) with the columns below. */
typedef struct tb__route_call_s tb__route_call_t;
struct tb__top_s;  /* an op of the training part (training.h) */
typedef int (*tb__route_fn)(tb__route_call_t *call);
typedef struct tb__route_side_s {
  tb__http_handler_cb handler;     /* tb__route_generic, or the route's own */
  unsigned call;                   /* TB__CALL_*: the body, the op, where
                                      it is decoded */
  int op;                          /* TB__CALL_OP: the tb__op_type_t made */
  /* TB__CALL_OP: the encoder of the op's result, with encode_size bytes
   * of its own data in the op's arena; NULL: the Tinker dialect's wire
   * types (training.c). */
  json_t *(*encode)(struct tb__top_s *op);
  size_t encode_size;
  int sync;                        /* Tinkerbell: the answer is the op's
                                      result, not its request id */
  /* Before the decoder, on the loop: finds what the body names (the
   * base model whose text it needs) into call->in, and may wait for that
   * text (the handler then runs again from the start); or NULL. */
  tb__route_fn prepare;
  tb__route_fn decode;             /* body -> call->in, or NULL */
  size_t in_size;                  /* of call->in */
  tb__route_fn submit;             /* the decoded request -> the answer */
} tb__route_side_t;

/* A row of the route table (routes.c). */
typedef struct tb__route_row_s {
  tb__part_t part;
  const char *method;
  const char *path;
  tb__dialect_t dialect;           /* TB__DIALECT_BOTH: the body decides
                                      (tb__dialect_of) */
  unsigned flags;                  /* TB__ROUTE_* */
  tb__route_side_t tinker;         /* the Tinker dialect's, or the only one */
  tb__route_side_t tinkerbell;     /* TB__DIALECT_BOTH: the Tinkerbell one's */
  const char *summary;             /* one line for the index at GET / */
  const char *tinkerbell_summary;  /* TB__DIALECT_BOTH */
} tb__route_row_t;

typedef struct tb__status_count_s {
  int status;
  uint64_t count;
} tb__status_count_t;

typedef struct tb__route_s {
  char *method;
  char *pattern;
  char *summary;
  tb__dialect_t dialect;
  unsigned flags;
  tb__http_handler_cb handler;
  void *data;
  /* TB__DIALECT_BOTH: the Tinkerbell dialect's handler (handler is the
   * Tinker one's); tb__dialect_of picks per request. */
  tb__http_handler_cb tinkerbell_handler;
  /* A row's: what its handlers read (handler.c); NULL otherwise. */
  const tb__route_side_t *side, *tinkerbell_side;
  tb__status_count_t *counts;   /* requests answered, by status */
  size_t n_counts, cap_counts;
} tb__route_t;

/* The server's part of every request (req->data). */
typedef struct tb__sreq_s {
  tb__server_t *srv;
  tb__user_t *user;             /* NULL only for public routes with no key */
  tb__route_t *route;           /* NULL when no route matched */
  const tb__route_side_t *side;  /* the row's side that runs, or NULL */
  uint64_t start_ns;
  int status;                   /* what was answered; 0: nothing yet */
  int resumed;                  /* its route runs again after a wait: the
                                   rate limit counted it already */
  tb__result_t *lent;           /* a result the answer sends by reference */
  void *data;                   /* the route's */
  tb__http_request_cb on_done;   /* the route's */
} tb__sreq_t;

/* A part of the server that plugs in later (training, persistence): it is
 * told when the server closes, and may add lines to /metrics. */
typedef struct tb__server_ext_s tb__server_ext_t;
struct tb__server_ext_s {
  void *data;
  /* Starts closing; calls tb__server_ext_closed(srv, ext) when done (not
   * necessarily before returning).  Runs before held polls are answered,
   * so futures it fails now still reach their clients. */
  void (*close)(tb__server_t *srv, tb__server_ext_t *ext);
  /* Appends Prometheus text to out. */
  void (*metrics)(tb__server_t *srv, tb__server_ext_t *ext, tb__buf_t *out);
  tb__server_ext_t *next;
  int closed;
};

typedef struct tb__model_info_s {
  char *name;
  int64_t max_context_length;
} tb__model_info_t;

/* A directory of the server's that messages call by a name of the user's
 * (a base model's HF_DIR, by the model's name). */
typedef struct tb__path_name_s {
  char *dir;
  char *name;
} tb__path_name_t;

struct tb__server_s {
  tb_server_t *pub;
  uv_loop_t *loop;
  tb_server_options_t opts;     /* defaults filled in, strings copied */
  tb__http_server_t http;
  tb__route_t **routes;
  size_t n_routes, cap_routes;
  tb__http_router_t router;
  tb__route_t unmatched;        /* counts requests no route took */
  tb__auth_t auth;
  tb__futures_t futures;
  tb__sessions_t sessions;
  struct tb__tls_ctx_s *tls;    /* HTTPS (http/tls.h); NULL: plain HTTP */
  struct tb__store_s *store;    /* the database (store.h); NULL without
                                   data_dir */
  tb__model_info_t *models;
  size_t n_models, cap_models;
  tb__path_name_t *path_names;  /* user_paths.c */
  size_t n_path_names, cap_path_names;
  tb__server_ext_t *exts;
  uint64_t n_telemetry_batches, n_telemetry_events;
  uint64_t n_rate_limited;
  uint64_t n_unauthorized;
  int http_started;
  int closing;
  int init_failed;                /* init failed after the timers opened */
  int pending_closes;           /* parts still closing */
};

static inline tb__server_t *tb__server_of(tb_server_t *s) {
  return s->impl_;
}

static inline tb__sreq_t *tb__sreq(tb__http_request_t *req) {
  return (tb__sreq_t *)req->data;
}

static inline tb__server_t *tb__server_from_req(tb__http_request_t *req) {
  return tb__sreq(req)->srv;
}

/* Adds a route (before or after listen) of one dialect, not
 * TB__DIALECT_BOTH.  summary is one line for the index.  The server's
 * own routes are the rows of the route table (routes.h); this is for a
 * part that plugs in a route of its own.  Returns 0, TB_EINVAL or
 * TB_ENOMEM. */
int tb__server_route(tb__server_t *srv, const char *method, const char *pattern,
                     tb__dialect_t dialect, unsigned flags, tb__http_handler_cb handler,
                     void *data, const char *summary);
/* Adds a row of the route table with data as its route data; a
 * TB__DIALECT_BOTH row's summary tells both dialects'.  0, TB_EINVAL or
 * TB_ENOMEM. */
int tb__server_add_row(tb__server_t *srv, const tb__route_row_t *row, void *data);
/* The dialect of a request on a TB__DIALECT_BOTH route: a protobuf body,
 * or a JSON object with a top-level "type", "seq_id",
 * "forward_backward_input", "forward_input", "session_id" or
 * "sampling_session_id", or an object "prompt" (a ModelInput), is
 * TB__DIALECT_TINKER; any other JSON object is TB__DIALECT_TINKERBELL; a
 * body that is no JSON object goes to the Tinker route, which answers 400
 * (dialect.c). */
tb__dialect_t tb__dialect_of(const tb__http_request_t *req);
/* tb_server_init without its routes: the server core registers none of
 * its own; it has add_routes add the core part's, and the store part's
 * with a data_dir (api.c passes the route table's tb__routes_add). */
int tb__server_init(uv_loop_t *loop, tb_server_t *server, const tb_server_options_t *opts,
                    tb__add_routes_fn add_routes);
void tb__server_add_ext(tb__server_t *srv, tb__server_ext_t *ext);
void tb__server_ext_closed(tb__server_t *srv, tb__server_ext_t *ext);

/* Answers (see the file comment).  Headers are copied; body buffers must
 * live until the route's on_done (arena, static, or freed there). */
void tb__server_respond(tb__http_request_t *req, int status,
                        const tb__http_header_t *headers, size_t n_headers,
                        const uv_buf_t *body, size_t n_body);
void tb__server_respond_json(tb__http_request_t *req, int status, const char *json,
                             size_t len);
/* Serialises v (which is not consumed) into the request's arena. */
void tb__server_respond_jsonv(tb__http_request_t *req, int status, const json_t *v);
/* 200 with v, a wire/ encoder's answer, which is consumed; NULL (the
 * encoder ran out of memory) is 503. */
void tb__server_respond_answer(tb__http_request_t *req, json_t *v);
/* {"error": message, "category": "user" (4xx) | "server" (5xx)}.  The
 * message may hold any bytes: it is escaped, and what is not UTF-8
 * becomes U+FFFD.  Every error body of the server goes through here. */
void tb__server_respond_error(tb__http_request_t *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with extra headers (up to 3: Retry-After, WWW-Authenticate). */
void tb__server_respond_error_h(tb__http_request_t *req, int status,
                                const tb__http_header_t *headers, size_t n_headers,
                                const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* A result, by reference: protobuf when it has that form and want_proto
 * (or no JSON form), else JSON. */
void tb__server_respond_result(tb__http_request_t *req, int status, tb__result_t *r,
                               int want_proto);

/* body as a JSON object, answering nothing (safe off the loop).  0, or
 * a negative code with err's "<path>: <reason>". */
int tb__server_parse_object(tb_slice_t body, json_t **out, tb_error_t *err);
/* The body as a JSON object.  On failure answers 400 with "<path>:
 * <reason>" and returns a negative code; the route just returns. */
int tb__server_parse_body(tb__http_request_t *req, json_t **out);
/* Answers 400 with err's message (a path error from core/json.h), or 503
 * when err holds no error or TB_ENOMEM (a decoder's bare out of memory). */
void tb__server_respond_bad(tb__http_request_t *req, const tb_error_t *err);

/* The submission rate limit: returns 0 when the request may go on;
 * otherwise answers 429 with Retry-After and returns TB_EBUSY. */
int tb__server_rate_limited(tb__http_request_t *req);
/* Whether u already has as many models loaded as max_models_per_user
 * allows; the training part counts u->n_models and reports the queue
 * state paused_rate_limit while this holds. */
int tb__server_user_at_model_limit(const tb__server_t *srv, const tb__user_t *u);
/* Whether the request's Accept names application/x-protobuf. */
int tb__server_accepts_proto(const tb__http_request_t *req);

/* Gives back a request whose client went away (from on_abort): nothing
 * is sent; it is logged and counted as 499. */
void tb__server_release(tb__http_request_t *req);


/* user_paths.c: msg with the server's paths replaced by what the user
 * calls them: a checkpoint under data_dir by its tinker:// (or
 * tinkerbell://) path, a base model's directory by the model's name, the
 * data directory and the database by those words.  Every error body and
 * every failed future's message goes through it, so no absolute server
 * path reaches a client.  malloc'd; NULL on ENOMEM. */
char *tb__server_user_paths(const tb__server_t *srv, const char *msg);
/* Names dir (copied) as `name` in messages from now on.  0 or TB_ENOMEM. */
int tb__server_name_path(tb__server_t *srv, const char *dir, const char *name);
void tb__server_path_names_free(tb__server_t *srv);

/* The HTTP server's on_head: a request's route and API key, from its head
 * alone (server.c).  Answers 404, 405, 400 or 401 itself; otherwise sets
 * req->data (tb__sreq_t) and the route, and the request goes on to its
 * handler once complete.  The HTTP fuzz target of test/fuzz/ calls it as
 * the HTTP layer does. */
void tb__server_on_head(tb__http_request_t *req);

#endif /* TB_SERVER_INTERNAL_H */

/*
 * What the files of the client runtime share, and what the training and
 * sampling clients build on:
 *
 *   tb__rt_t     the runtime a ServiceClient owns: the loop, the resolved
 *                configuration, the HTTP client, one timer that drives every
 *                alarm, the jitter generator and the operations in flight.
 *   tb__alarm_t  a one-shot deadline on the runtime's timer (a min-heap of
 *                alarms under one uv_timer_t), so that calls, polls and
 *                operations are plain memory with no handle to close.
 *   tb__call_t   one API request with the submission retries (request.c).
 *   tb__client_poll_t   the long-poll of one retrieve_future (poll.c).
 *   tb__client_op_t     a future-returning operation: a call, then (when the answer
 *                is {"request_id"}) a poll, then a decoder that turns the
 *                final body into the future's typed result (op.c).
 *
 * Everything here runs on the loop thread.  Nothing here includes server/.
 */
#ifndef TB_CLIENT_INTERNAL_H
#define TB_CLIENT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "core/buf.h"
#include "http/client.h"
#include "tinkerbell/client.h"
#include "tinkerbell/future.h"
#include "tinkerbell/service_client.h"

typedef struct tb__rt_s tb__rt_t;
typedef struct tb__alarm_s tb__alarm_t;
typedef struct tb__call_s tb__call_t;
typedef struct tb__client_poll_s tb__client_poll_t;
typedef struct tb__client_op_s tb__client_op_t;

/* ------------------------------------------------------------ config.c */

/* The configuration with every default filled in and every string owned. */
typedef struct tb__config_s {
  char *base_url;                 /* without a trailing '/' */
  char *api_key;                  /* NULL: none */
  char *project_id;               /* NULL: none */
  char **tags;                    /* distinct, in first-seen order */
  size_t n_tags;
  tb_telemetry_meta_t *user_metadata; /* copies of keys and values */
  size_t n_user_metadata;
  uint64_t poll_deadline_ms;      /* 0: none */
  uint64_t wait_timeout_ms;       /* 0: none */
  uint64_t http_timeout_ms;
  uint64_t poll_http_timeout_ms;
  uint64_t connect_timeout_ms;
  unsigned max_retries;
  uint64_t retry_base_ms, retry_max_ms, retry_after_max_ms;
  uint64_t poll_backoff_initial_ms, poll_backoff_max_ms;
  uint64_t poll_retry_delay_ms;
  uint64_t poll_error_backoff_initial_ms, poll_error_backoff_max_ms;
  uint64_t heartbeat_interval_ms, heartbeat_warn_ms;
  uint64_t close_timeout_ms;
  int keep_session_open;
  uint64_t stall_ms;              /* TB_STALL_NEVER: off */
  unsigned max_connections;
  char *tls_ca_file;              /* NULL: the system's trust store */
  int tls_insecure;
  int tls;                        /* the base URL is https */
  tb_telemetry_cb telemetry;
  void *telemetry_data;
  tb_queue_state_cb queue_observer;
  void *queue_observer_data;
  tb_telemetry_meta_t *meta;      /* copies of keys and values */
  size_t n_meta;
  uint64_t jitter_seed;
} tb__config_t;

/* Fills out from in (NULL: all defaults) and the environment.  Returns 0,
 * TB_EURL (a base URL that is not http(s)://host...), TB_EINVAL or
 * TB_ENOMEM, with err saying which setting. */
int tb__config_resolve(const tb_client_config_t *in, tb__config_t *out,
                       tb_error_t *err);
void tb__config_free(tb__config_t *c);

/* ------------------------------------------------------------ runtime.c */

typedef void (*tb__alarm_cb)(tb__alarm_t *alarm);

struct tb__alarm_s {
  void *data;
  tb__alarm_cb cb;
  uint64_t due;        /* uv_now at which it fires */
  uint64_t seq;        /* ties fire in arming order */
  size_t index;        /* in the heap; SIZE_MAX when not armed */
};

typedef void (*tb__rt_close_cb)(tb__rt_t *rt);

/* A frame on the thread's stack of loops being run or called back from
 * (see tb__loop_enter): how TB_ENESTED is detected. */
typedef struct tb__loop_frame_s {
  uv_loop_t *loop;
  struct tb__loop_frame_s *next;
} tb__loop_frame_t;

struct tb__rt_s {
  void *data;
  uv_loop_t *loop;
  tb__config_t cfg;
  tb__http_client_t http;
  struct tb__tls_ctx_s *tls_ctx; /* https: shared by every connection */
  uv_timer_t timer;           /* fires the earliest alarm */
  tb__alarm_t **heap;
  size_t n_heap, cap_heap;
  size_t n_reserved;          /* heap slots promised (tb__alarm_reserve) */
  uint64_t alarm_seq;
  uint64_t rng;               /* xorshift64* state for the jitter */
  /* Polls share the HTTP requests they send (poll.c): a pending future
   * holds none while it waits for its turn or for a backoff.  At most
   * max_poll_wires are lent at once; the polls beyond wait in a FIFO. */
  struct tb__wire_s *wires_free;  /* idle, their buffers kept for reuse */
  size_t n_wires_lent, n_wires;
  size_t max_poll_wires;
  tb__client_poll_t *pq_head, *pq_tail;  /* polls waiting for a wire */
  char *poll_url;                 /* .../api/v1/retrieve_future */
  tb__client_op_t *ops;              /* operations in flight, for close */
  size_t n_ops;
  size_t n_busy;              /* calls/polls not yet finished (any owner) */
  int closing;
  int handles_open;
  tb__rt_close_cb close_cb;
};

int tb__rt_init(uv_loop_t *loop, tb__rt_t *rt, const tb_client_config_t *cfg,
                tb_error_t *err);
/* Waits for every operation, call and poll to finish (the owner cancels
 * its operations first: tb__client_op_cancel_all), closes the HTTP client
 * and the timer, then calls close_cb (never from inside this call).  The
 * runtime calls nothing above it, so that op.c, poll.c and request.c build
 * on it without a circle. */
void tb__rt_close(tb__rt_t *rt, tb__rt_close_cb close_cb);

/* Called by calls, polls and operations when they finish: they may be the
 * last thing a close waits for. */
void tb__rt_check_closed(tb__rt_t *rt);

void tb__alarm_init(tb__alarm_t *a, tb__alarm_cb cb, void *data);
/* Arms (or re-arms) a to fire delay_ms from now.  Returns 0, or TB_ENOMEM
 * only when the heap must grow beyond what was reserved. */
int tb__alarm_start(tb__rt_t *rt, tb__alarm_t *a, uint64_t delay_ms);
/* Promises n heap slots, so that alarms of objects that reserved them
 * never fail to start (a cancel must be able to defer its completion).
 * Returns 0 or TB_ENOMEM; unreserve gives them back. */
int tb__alarm_reserve(tb__rt_t *rt, size_t n);
void tb__alarm_unreserve(tb__rt_t *rt, size_t n);
void tb__alarm_stop(tb__rt_t *rt, tb__alarm_t *a);
static inline int tb__alarm_armed(const tb__alarm_t *a) { return a->index != SIZE_MAX; }

/* A uniform double in [lo, hi). */
double tb__rt_jitter(tb__rt_t *rt, double lo, double hi);
/* A random lowercase hex string of 2*n_bytes characters plus NUL. */
void tb__rt_random_hex(tb__rt_t *rt, char *out, size_t n_bytes);
/* The absolute URL for an API path ("/api/v1/..."), malloc'd. */
char *tb__rt_url(const tb__rt_t *rt, const char *path);

/* Emits a telemetry event with the config's metadata appended. */
void tb__rt_telemetry(tb__rt_t *rt, const char *name,
                      const tb_telemetry_measure_t *measures, size_t n_measures,
                      const tb_telemetry_meta_t *meta, size_t n_meta);

/* The thread's loop frames (future.c): enter before running a user callback
 * or uv_run for a loop, leave after; tb__loop_is_entered tells whether a
 * blocking wait on that loop would nest. */
void tb__loop_enter(tb__loop_frame_t *frame, uv_loop_t *loop);
void tb__loop_leave(tb__loop_frame_t *frame);
int tb__loop_is_entered(const uv_loop_t *loop);

/* ------------------------------------------------------------ future.c */

/* A pending future on loop; NULL on TB_ENOMEM. */
tb_future_t *tb__client_future_new(uv_loop_t *loop);
/* The operation that drives f: cancel(f) is called by tb_future_cancel and
 * by tb_future_free of a pending f; it must make the driver fail f with
 * TB_ECANCELED later. */
void tb__client_future_set_driver(tb_future_t *f, void (*cancel)(tb_future_t *f),
                           void *driver);
/* Completes f with a result it takes over (result may be NULL with a NULL
 * type).  Runs the callback (inside a loop frame) or, when f was released,
 * frees it.  The driver must not touch f afterwards. */
void tb__client_future_resolve(tb_future_t *f, const tb_result_type_t *type, void *result);
/* Completes f as failed, moving *err into it (err is left empty). */
void tb__client_future_fail(tb_future_t *f, tb_error_t *err);

/* ------------------------------------------------------------ request.c */

typedef void (*tb__call_cb)(tb__call_t *call, int status);

/* One API request with retries.  The caller owns the memory, fills the
 * input, starts it; the callback runs once, on a later loop turn, with 0
 * (a 2xx answer: call->http->response) or a negative code with call->err
 * filled (TB_EHTTP for a non-2xx answer, whose response is also kept; a
 * network code; TB_ECANCELED).  Then tb__call_free. */
struct tb__call_s {
  void *data;
  /* input */
  const char *method;             /* NULL: "POST" */
  const char *path;               /* "/api/v1/..." */
  tb_slice_t body;                /* not copied: valid until the callback */
  const char *content_type;       /* NULL: application/json when a body */
  const char *accept;             /* NULL: application/json */
  const tb__http_header_t *extra;  /* the array is copied at start; the
                                     bytes must outlive the call */
  size_t n_extra;
  int max_retries;                /* <0: the config's; 0: none */
  uint64_t timeout_ms;            /* 0: the config's http_timeout_ms */
  /* output */
  int http_status;                /* of the last answer; 0 when none */
  unsigned retries;               /* retries made */
  tb_error_t err;
  tb__http_client_req_t *http;     /* the last attempt's response; NULL
                                     before the start (allocated then, so
                                     that a call waiting in an operation's
                                     union costs little) */
  /* private */
  tb__rt_t *rt_;
  tb__call_cb cb_;
  tb__alarm_t alarm_;
  char *url_;
  size_t n_headers_;
  tb__http_header_t *all_headers_;
  uv_buf_t body_buf_;
  char idem_[64];
  char retry_count_[16];
  size_t retry_header_;           /* X-Stainless-Retry-Count in all_headers_ */
  uint64_t started_;
  int state_;
  int cancelled_;
};

int tb__call_start(tb__rt_t *rt, tb__call_t *call, tb__call_cb cb);
/* The callback then runs with TB_ECANCELED (unless it is already due).
 * Returns 0 or TB_EINVAL when the call is not in flight. */
int tb__call_cancel(tb__call_t *call);
/* Releases what the call holds; not while in flight.  Safe on a zeroed call. */
void tb__call_free(tb__call_t *call);
/* The retry decision for an answer: 1 to retry, 0 not (x-should-retry wins,
 * then 408, 409, 429, >= 500). */
int tb__call_should_retry_status(const tb__http_response_t *res);
/* The server's Retry-After in ms when given and in (0, max_ms]; else -1. */
int64_t tb__retry_after_ms(const tb__http_response_t *res, uint64_t max_ms);
/* Fills err from a non-2xx answer: the body's "error"/"message"/"detail",
 * its "category" (else user for 4xx, server for 5xx), the status and the
 * request id when the body names one.  Returns TB_EHTTP. */
int tb__error_from_response(const tb__http_response_t *res, tb_error_t *err);

/* ------------------------------------------------------------ poll.c */

typedef void (*tb__client_poll_cb)(tb__client_poll_t *poll, int status);

/* Polls POST /api/v1/retrieve_future for one request id until a result, a
 * terminal failure or the deadline.  The callback runs once with 0 (the
 * result: result_body/result_len, protobuf when result_proto, valid
 * during the callback only) or a negative code with err filled.  Then
 * tb__client_poll_free.
 *
 * A poll owns no HTTP request: it borrows one of the runtime's (a
 * "wire") to send, and gives it back as soon as the answer is read, so a
 * pending future costs this struct and its request id. */
typedef struct tb__wire_s tb__wire_t;

/* A wire: the runtime owns its idle wires (runtime.c frees them at close),
 * a poll fills and sends one (poll.c). */
struct tb__wire_s {
  tb__http_client_req_t http;
  tb__http_header_t headers[6];
  uv_buf_t body_buf;
  tb__buf_t body;
  char iter[24];
  char rtt[32];
  tb__wire_t *next;               /* rt->wires_free */
};


struct tb__client_poll_s {
  void *data;
  /* input */
  char *request_id;               /* owned (tb__client_poll_start copies it) */
  const char *request_type;       /* X-Tinker-Request-Type; NULL: none */
  int accept_proto;               /* Accept: application/x-protobuf */
  uint64_t deadline_ms;           /* 0: the config's poll deadline */
  uint64_t submit_rtt_ms;         /* X-Tinker-Create-Promise-Roundtrip-Time */
  /* output */
  const char *result_body;        /* valid during the callback */
  size_t result_len;
  int result_proto;
  unsigned iteration;             /* polls sent */
  tb_error_t err;
  /* private */
  tb__rt_t *rt_;
  tb__client_poll_cb cb_;
  tb__wire_t *wire_;              /* while sending and reading the answer */
  tb__client_poll_t *qnext_, *qprev_;  /* the runtime's FIFO of polls to send */
  tb__alarm_t alarm_;             /* the next poll */
  tb__alarm_t watch_alarm_;       /* the deadline, and the stall check */
  tb_error_t last_err_;           /* the last retried failure, for timeouts */
  char *result_own_;              /* a "completed" envelope's result, dumped */
  char *qreason_;
  uint64_t started_;
  uint64_t deadline_at_;          /* loop time; 0: none */
  uint64_t progress_at_;          /* loop time of the last progress */
  double started_at_;             /* the server's started_at; 0: queued */
  int64_t qpos_;                  /* the server's queue_position; -1: none */
  uint16_t n_pending_;            /* consecutive "pending" / server failures */
  uint16_t n_conn_errors_;        /* consecutive 429 / connection errors */
  uint8_t n_empty_400_;           /* consecutive empty 400s */
  uint8_t qstate_;                /* tb_queue_state_t */
  uint8_t state_;
  unsigned cancelled_ : 1;
  unsigned timed_out_ : 1;
  unsigned stalled_ : 1;          /* future.stalled was reported */
  unsigned allow_metadata_only_ : 1;
  int finish_status_;
};

int tb__client_poll_start(tb__rt_t *rt, tb__client_poll_t *poll, const char *request_id,
                   tb__client_poll_cb cb);
int tb__client_poll_cancel(tb__client_poll_t *poll);
void tb__client_poll_free(tb__client_poll_t *poll);
/* "active" etc. (trimmed, any case); anything else is unknown. */
tb_queue_state_t tb__queue_state_parse(const char *s, size_t len);

/* ------------------------------------------------------------ op.c */

/* Turns the final body into the typed result.  body is JSON unless proto.
 * Returns 0 with *result (of *type) set, or a negative code with err set. */
typedef int (*tb__client_op_decode_fn)(tb__client_op_t *op, const char *body, size_t len,
                                int proto, const tb_result_type_t **type,
                                void **result, tb_error_t *err);

typedef struct tb__client_op_opts_s {
  const char *method;             /* NULL: POST; a static string */
  const char *path;               /* copied */
  const char *body;               /* copied */
  size_t body_len;
  const char *content_type;
  int max_retries;                /* <0: the config's */
  int poll;                       /* the answer is {"request_id"}: poll it */
  const char *request_type;       /* for the poll's headers and telemetry */
  int accept_proto;
  tb__client_op_decode_fn decode;        /* NULL: the result is none */
  void *decode_data;              /* available as op->decode_data */
  /* Called once when the submission ends -- its answer came (status 0)
   * or it failed -- before the poll starts or the future completes; how
   * the training client's turns and the sampling client's back-pressure
   * follow the POSTs.  NULL: none. */
  void (*submitted)(tb__client_op_t *op, int status);
  /* More request headers; the strings must outlive the op (static). */
  const tb__http_header_t *extra;
  size_t n_extra;
} tb__client_op_opts_t;

struct tb__client_op_s {
  void *decode_data;
  tb__rt_t *rt;
  tb_future_t *future;
  tb__client_op_t *next, *prev;          /* rt->ops */
  /* The submission, then the poll: one at a time, so they share memory
   * (a pending future costs about half as much).  call is valid in phase
   * 0 -- the submitted hook may read it -- and poll in phase 1. */
  union {
    tb__call_t call;
    tb__client_poll_t poll;
  };
  tb__buf_t body;
  tb__client_op_decode_fn decode;
  void (*submitted)(tb__client_op_t *op, int status);
  char *request_type;
  char *path;
  const char *method;
  int accept_proto;
  int do_poll;
  int phase;                      /* 0 call, 1 poll */
  int cancelled;
};

/* Starts an operation whose outcome is the returned future.  Returns 0 or
 * TB_ENOMEM / TB_ECLOSING (no future then). */
int tb__client_op_start(tb__rt_t *rt, const tb__client_op_opts_t *opts, tb_future_t **out);
/* tb__client_op_start with body as the request's JSON: the reference to
 * body is taken (NULL, a failed build, is TB_ENOMEM), and opts->body is
 * left NULL again. */
int tb__client_op_start_json(tb__rt_t *rt, tb__client_op_opts_t *opts, json_t *body,
                             tb_future_t **out);
/* Sets e for an operation that could not start with rc: "what: reason",
 * cancelled when the client is closing.  Returns rc. */
int tb__client_not_started(tb_error_t *e, int rc, const char *what);
/* Cancels every operation of rt: the service client's close, before
 * tb__rt_close, which then waits for them to end. */
void tb__client_op_cancel_all(tb__rt_t *rt);

/* ------------------------------------------------------------ service_client.c */

/* What the training and sampling clients made from a ServiceClient use:
 * its runtime (NULL once it is closing), and the per-session counters
 * that number models (model_seq_id) and sampling sessions
 * (sampling_session_seq_id) from 0. */
tb__rt_t *tb__service_rt(tb_service_client_t *sc);
int64_t tb__service_next_model_seq(tb_service_client_t *sc);
int64_t tb__service_next_sampling_seq(tb_service_client_t *sc);

/* A result body larger than this is decoded on the threadpool, not on the loop
 * (docs/ARCHITECTURE.md §3): the decoder keeps a copy of it as a tb__raw_body_t, and the
 * caller's completion queues the work. */
#define TB__INLINE_DECODE_MAX (64 * 1024)

typedef struct tb__raw_body_s {
  char *data;
  size_t len;
  int proto;
} tb__raw_body_t;

/* The free function of every raw body result type. */
void tb__raw_body_free(void *p);
/* Makes *result a copy of body as a tb__raw_body_t of result type t. */
int tb__raw_body_keep(const char *body, size_t len, int proto, const tb_result_type_t *t,
                      const tb_result_type_t **type, void **result, tb_error_t *err);

#endif /* TB_CLIENT_INTERNAL_H */

/*
 * The client runtime's configuration: where the server is, how to
 * authenticate, the timeouts, the retry and polling backoffs, and the hooks
 * that observe it (telemetry, queue state).
 *
 * A tb_client_config_t is read (and copied) when a client is made
 * (tb_service_client_init); zero means the default in brackets everywhere,
 * so `tb_client_config_t cfg = { 0 };` is a working configuration against
 * TINKER_BASE_URL or a local `tinkerbell serve`.
 *
 * Three timeouts are independent of each other:
 *   - poll_deadline_ms: how long an operation's result is polled for
 *     (default: no deadline, as in the Tinker SDK);
 *   - the caller's wait: the timeout_ms of tb_future_wait*, and
 *     wait_timeout_ms for the _sync functions;
 *   - http_timeout_ms / poll_http_timeout_ms: each HTTP request's own
 *     timeout, from send to the complete answer, retries not included.
 *
 * Retries of a submission (every request but retrieve_future and the
 * heartbeat): up to max_retries more attempts on HTTP 408, 409, 429, 5xx
 * and connection errors (a response header "x-should-retry: true|false"
 * overrides the status rule), after min(retry_base_ms * 2^k,
 * retry_max_ms) * a jitter in [0.75, 1], or after the server's
 * "retry-after-ms" / "Retry-After" (seconds or an HTTP date) when that is
 * in (0, 60 s].  Every attempt of one call carries the same
 * X-Idempotency-Key.
 *
 * Polling (POST /api/v1/retrieve_future, each one a long poll of at most
 * poll_http_timeout_ms) re-polls at once on "try_again" (or after its
 * retry_after_ms), backs off min(2^(n-1) * poll_backoff_initial_ms,
 * poll_backoff_max_ms) on "pending" and on failures of category server,
 * waits poll_retry_delay_ms * [0.5, 1] after a 408 or 5xx, backs off with
 * the poll_error_* pair after a 429 (its Retry-After honoured) or a
 * connection error, retries an empty 400 at most 3 times, and fails at
 * once on a failure of category user (TB_EUSER), a 410 (TB_EEXPIRED: the
 * server no longer has the result; a sampling request is resubmitted by
 * the sampling client, a training request reports it) and any other
 * status (TB_EHTTP).  At the poll deadline it fails with the last retried
 * failure, or TB_ETIMEDOUT.  Queue states reported by "try_again" (and
 * 408) answers reach queue_observer on every change of (state, reason,
 * started_at, queue_position).  At most three quarters of max_connections
 * carry polls at once, so submissions always find a connection.
 */
#ifndef TINKERBELL_CLIENT_H
#define TINKERBELL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* stall_ms: never report a stalled future. */
#define TB_STALL_NEVER UINT64_MAX

/* The base URL used when neither the config nor TINKER_BASE_URL names one:
 * a local `tinkerbell serve`. */
#define TB_CLIENT_DEFAULT_BASE_URL "http://127.0.0.1:8000"

/* ------------------------------------------------------------ telemetry */

/* A measurement: a named number ("duration_ms", "attempt", ...). */
typedef struct tb_telemetry_measure_s {
  const char *name;
  double value;
} tb_telemetry_measure_t;

/* A metadata entry: a named string ("request_id", "queue_state", ...). */
typedef struct tb_telemetry_meta_s {
  const char *key;
  const char *value;
} tb_telemetry_meta_t;

/* One event, valid only during the hook's call (copy what you keep).
 * Event names, their metadata and (measures); http.* events are per API
 * call, its retries included, while the polls of a future report through
 * the future.* events:
 *   http.request.start   method, path                  (measure: attempt)
 *   http.request.stop    method, path, result ok|error, http_status
 *                                   (duration_ms, retries)
 *   http.retry           method, path, reason          (attempt, delay_ms)
 *   http.request.error   method, path, error, category (a call failed)
 *   future.queue_state_change  request_id, request_type, queue_state,
 *                              queue_state_reason
 *   future.stalled       request_id, request_type, queue_state,
 *                        queue_state_reason, started_at, queue_position,
 *                        severity WARNING  (waited_s: since the last
 *                        progress, elapsed_s, iteration): no progress
 *                        for stall_ms -- see stall_ms below
 *   future.timeout       request_id, request_type      (elapsed_ms,
 *                                                       iteration)
 *   future.api_error     request_id, request_type, http_status, category
 *   future.connection_error  request_id, request_type, error
 *   future.request_failed    request_id, request_type, category, error
 *   future.validation_error  request_id, request_type, error (an answer
 *                            that is not JSON)
 *   session.heartbeat_warning  session_id       (since_success_ms)
 * Every event also carries the config's telemetry_metadata entries. */
typedef struct tb_telemetry_event_s {
  void *data;                               /* the config's telemetry_data */
  const char *name;
  const tb_telemetry_measure_t *measures;
  size_t n_measures;
  const tb_telemetry_meta_t *meta;
  size_t n_meta;
} tb_telemetry_event_t;

typedef void (*tb_telemetry_cb)(const tb_telemetry_event_t *event);

/* ------------------------------------------------------------ queue state */

typedef enum {
  TB_QUEUE_ACTIVE = 0,
  TB_QUEUE_PAUSED_CAPACITY,
  TB_QUEUE_PAUSED_RATE_LIMIT,
  TB_QUEUE_UNKNOWN
} tb_queue_state_t;

/* "active", "paused_capacity", "paused_rate_limit", "unknown". */
TB_EXTERN const char *tb_queue_state_name(tb_queue_state_t s);

/* A change seen while polling one request -- of the queue state, its
 * reason, or what the server says of the job (started_at,
 * queue_position) -- valid only during the observer's call.  The first
 * answer of a poll is compared with "active, no reason, not started, no
 * position". */
typedef struct tb_queue_state_event_s {
  void *data;                     /* the config's queue_observer_data */
  const char *request_id;
  const char *request_type;       /* "ForwardBackward", ...; may be "" */
  tb_queue_state_t state;
  const char *reason;             /* the server's reason, or NULL */
  tb_queue_state_t previous;
  /* When the job's work started, seconds since the epoch; 0 while it is
   * queued (or when the server does not say). */
  double started_at;
  /* Jobs that must make way before it starts; -1 when the server does
   * not say.  A queued job with a position above 0 waits behind others;
   * a started one runs. */
  int64_t queue_position;
} tb_queue_state_event_t;

typedef void (*tb_queue_state_cb)(const tb_queue_state_event_t *event);

/* ------------------------------------------------------------ config */

typedef struct tb_client_config_s {
  /* Where: "http://host:port[/prefix]"; the API paths (/api/v1/...) are
   * appended.  [TINKER_BASE_URL, else TB_CLIENT_DEFAULT_BASE_URL] */
  const char *base_url;
  /* Sent as X-API-Key on every request.  [TINKER_API_KEY, else none] */
  const char *api_key;
  /* Sent in create_session: the project [TINKER_PROJECT_ID, else none],
   * tags [the comma-separated TINKER_TAGS, else none; duplicates dropped]
   * and the session's user metadata (string values) [none].  Copied. */
  const char *project_id;
  const char *const *tags;
  size_t n_tags;
  const tb_telemetry_meta_t *user_metadata;
  size_t n_user_metadata;

  /* Timeouts in milliseconds (see above). */
  uint64_t poll_deadline_ms;      /* [no deadline] */
  uint64_t wait_timeout_ms;       /* the _sync functions' wait [no limit] */
  uint64_t http_timeout_ms;       /* each request [60000] */
  uint64_t poll_http_timeout_ms;  /* each retrieve_future long poll [45000] */
  uint64_t connect_timeout_ms;    /* [5000] */

  /* Submission retries: retries after the first attempt [10]; a negative
   * value means none. */
  int max_retries;
  uint64_t retry_base_ms;         /* [500] */
  uint64_t retry_max_ms;          /* [10000] */
  uint64_t retry_after_max_ms;    /* a longer Retry-After is ignored [60000] */

  /* Polling backoffs. */
  uint64_t poll_backoff_initial_ms;  /* "pending", server failures: min(2^n
                                        * initial, max) [1000] */
  uint64_t poll_backoff_max_ms;      /* [30000] */
  uint64_t poll_retry_delay_ms;      /* 408 and 5xx: a delay jittered in
                                        [0.5, 1] x this [250] */
  uint64_t poll_error_backoff_initial_ms; /* 429, connection errors:
                                        min(2^n * initial, max) [1000] */
  uint64_t poll_error_backoff_max_ms;     /* [30000] */

  /* The session heartbeat. */
  uint64_t heartbeat_interval_ms;    /* [10000] */
  uint64_t heartbeat_warn_ms;        /* warning after this long without a
                                        successful heartbeat [120000] */
  /* The session's end: tb_service_client_close sends POST
   * /api/v1/close_session for the session the client created (its models
   * are unloaded at once), waiting at most close_timeout_ms for the
   * answer and never retrying [2000].  keep_session_open = 1 sends
   * nothing: for a program that hands the session id to another one,
   * which keeps it alive with its own heartbeats. */
  uint64_t close_timeout_ms;
  int keep_session_open;

  /* A polled future "stalls" when it made no progress for stall_ms.
   * Progress is a change of its queue state or reason, of the server's
   * started_at (the job started) or queue_position (a job ahead of it
   * finished), or its result; try_again answers that say the same as the
   * last one, failed polls and retries are not progress.  Then the
   * "future.stalled" telemetry event fires, once per stall; after
   * progress, a new stall fires it again.  [60000]  TB_STALL_NEVER turns
   * it off. */
  uint64_t stall_ms;

  /* Connections per origin [16]. */
  unsigned max_connections;

  /* HTTPS (an https:// base URL): the server's certificate is verified
   * against the system's trust store, or against tls_ca_file (PEM) when
   * given, and must name the URL's host; the host is sent as SNI.
   * tls_insecure = 1 turns verification off: for tests and self-signed
   * development servers only. */
  const char *tls_ca_file;
  int tls_insecure;

  /* Hooks, called on the loop (NULL: none).  A hook must not block; it
   * may not call tb_future_wait (TB_ENESTED). */
  tb_telemetry_cb telemetry;
  void *telemetry_data;
  tb_queue_state_cb queue_observer;
  void *queue_observer_data;
  /* Key/value pairs added to every telemetry event (copied). */
  const tb_telemetry_meta_t *telemetry_metadata;
  size_t n_telemetry_metadata;

  /* Seeds the jitter (0: from the clock), so tests can reproduce delays. */
  uint64_t jitter_seed;
} tb_client_config_t;

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_CLIENT_H */

/*
 * The ServiceClient: the entry point of the client runtime.  It holds the
 * configuration, the pooled HTTP connections and the session, and creates
 * the training and sampling clients.
 *
 * It is a handle on the host's loop; the caller owns its memory:
 *
 *   tb_service_client_t sc;
 *   tb_client_config_t cfg = { .api_key = "tml-..." };
 *   tb_error_t err = { 0 };
 *   if (tb_service_client_init(loop, &sc, &cfg, &err) != 0) ... err ...
 *   ...
 *   tb_service_client_close(&sc, on_closed);   // memory valid until then
 *
 * Nothing is sent at init.  The session is created on first use (the first
 * tb_service_client_session, or an operation that needs one); afterwards a
 * heartbeat is sent every heartbeat_interval_ms on a timer that does not
 * keep the loop alive.  Heartbeat failures are not fatal: after
 * heartbeat_warn_ms without a successful one, a "session.heartbeat_warning"
 * telemetry event says that the server may expire the session.
 *
 * Every operation returns a tb_future_t (see tinkerbell/future.h) and has a
 * blocking _sync twin that runs the loop until it is done (within the
 * config's wait_timeout_ms) and must not be called from inside a callback
 * of the loop (TB_ENESTED).  An operation that returns an error makes no
 * future.
 */
#ifndef TINKERBELL_SERVICE_CLIENT_H
#define TINKERBELL_SERVICE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "tinkerbell/client.h"
#include "tinkerbell/common.h"
#include "tinkerbell/error.h"
#include "tinkerbell/future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tb_service_client_s tb_service_client_t;
typedef void (*tb_service_client_close_cb)(tb_service_client_t *sc);

struct tb_service_client_s {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *loop;
  const char *session_id;        /* NULL until the session exists */
  /* private */
  struct tb__service_s *impl_;
  tb_service_client_close_cb close_cb_;
};

/* One base model the server offers. */
typedef struct tb_supported_model_s {
  char *model_name;              /* NULL when the server gave none */
  int64_t max_context_length;    /* -1 when the server gave none */
} tb_supported_model_t;

/* The result of get_server_capabilities; free with
 * tb_server_capabilities_free (its result type's free). */
typedef struct tb_server_capabilities_s {
  tb_supported_model_t *models;
  size_t n_models;
} tb_server_capabilities_t;

TB_EXTERN extern const tb_result_type_t tb_result_server_capabilities;
/* Releases caps and what it holds; NULL is a no-op. */
TB_EXTERN void tb_server_capabilities_free(tb_server_capabilities_t *caps);

/* Sets the client up on loop with cfg (NULL: defaults and the environment;
 * copied).  Returns 0, or TB_EURL (a bad base URL), TB_EINVAL, TB_ENOMEM
 * with err (may be NULL) saying why; there is nothing to close then. */
TB_EXTERN int tb_service_client_init(uv_loop_t *loop, tb_service_client_t *sc,
                                     const tb_client_config_t *cfg, tb_error_t *err);

/* Closes the client: the heartbeat stops, every operation still in flight
 * fails with TB_ECANCELED (their callbacks run), the session this client
 * created is closed on the server (POST /api/v1/close_session, once, no
 * retries, at most the config's close_timeout_ms; not with
 * keep_session_open, nor when tb_service_client_close_session already
 * did), connections close, and close_cb (may be NULL) runs once nothing
 * of the client is left on the loop -- never from inside this call.
 * Whatever the server answers, or when it does not answer at all, the
 * close goes on.  Futures the caller holds stay valid until
 * tb_future_free.  Clients made from this one must be closed first. */
TB_EXTERN void tb_service_client_close(tb_service_client_t *sc,
                                       tb_service_client_close_cb close_cb);

/* The session: created by POST /api/v1/create_session on the first call,
 * shared by every later one (callers during the creation wait for the same
 * answer).  The future's result is the session id (tb_result_string);
 * sc->session_id is set too.  A failed creation is tried again by the next
 * call.  Returns 0 or TB_ENOMEM / TB_ECLOSING / TB_EINVAL. */
TB_EXTERN int tb_service_client_session(tb_service_client_t *sc, tb_future_t **out);
/* The blocking twin: *session_id (may be NULL) receives a malloc'd copy of
 * the id.  Returns 0 or the failure (err, may be NULL, says why). */
TB_EXTERN int tb_service_client_session_sync(tb_service_client_t *sc, char **session_id,
                                             tb_error_t *err);

/* POST /api/v1/close_session for the client's session: the server unloads
 * its models at once (their checkpoints stay) and answers every later call
 * on the session, its models and samplers with 410 (TB_EHTTP,
 * http_status 410).  The heartbeat stops at once; later operations that
 * need a session return TB_ECLOSING.  The future has no result.  Returns
 * 0, TB_EINVAL (no session yet, or closed already), TB_ECLOSING or
 * TB_ENOMEM. */
TB_EXTERN int tb_service_client_close_session(tb_service_client_t *sc, tb_future_t **out);
/* The blocking twin. */
TB_EXTERN int tb_service_client_close_session_sync(tb_service_client_t *sc, tb_error_t *err);

/* GET /api/v1/get_server_capabilities: the base models the server offers.
 * The future's result is a tb_server_capabilities_t
 * (tb_result_server_capabilities). */
TB_EXTERN int tb_service_client_get_server_capabilities(tb_service_client_t *sc,
                                                        tb_future_t **out);
/* The blocking twin: *caps receives the result, freed by the caller with
 * tb_server_capabilities_free. */
TB_EXTERN int tb_service_client_get_server_capabilities_sync(
    tb_service_client_t *sc, tb_server_capabilities_t **caps, tb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_SERVICE_CLIENT_H */

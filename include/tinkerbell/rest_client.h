/*
 * The RestClient: training runs, checkpoints, sessions and samplers of the
 * caller, through the REST routes of the Tinker API (§9 of the SDK's
 * surface).
 *
 * A tb_rest_client_t is a plain value made from a ServiceClient
 * (tb_rest_client_init, which sends nothing); it has nothing to close and
 * is usable while the ServiceClient is.  Every operation returns a future
 * (tinkerbell/future.h) with a typed result, and has a _sync twin that
 * waits within the config's wait_timeout_ms.  A function that returns an
 * error (TB_EINVAL for a bad argument, such as a tinker path that is not
 * tinker://<run_id>/<weights|sampler_weights>/<name>) makes no future.
 *
 * A checkpoint id is "<kind>/<name>" (kind weights or sampler_weights), as
 * in the tinker path tinker://<run_id>/<kind>/<name>.
 */
#ifndef TINKERBELL_REST_CLIENT_H
#define TINKERBELL_REST_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"
#include "tinkerbell/future.h"
#include "tinkerbell/service_client.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tb_rest_client_s {
  /* public */
  void *data;
  /* read-only */
  tb_service_client_t *service;
} tb_rest_client_t;

/* Makes rc a REST client of sc; sends nothing.  Returns 0 or TB_EINVAL. */
TB_EXTERN int tb_rest_client_init(tb_rest_client_t *rc, tb_service_client_t *sc);

/* ------------------------------------------------------------ results */

/* Paging of a list: -1 where the server gave none. */
typedef struct tb_cursor_s {
  int64_t offset;
  int64_t limit;
  int64_t total_count;
} tb_cursor_t;

/* A saved checkpoint.  Times are RFC 3339 strings as the server sent
 * them; NULL where there is none. */
typedef struct tb_checkpoint_s {
  char *checkpoint_id;           /* "weights/<name>" or "sampler_weights/<name>" */
  char *checkpoint_type;         /* "training" or "sampler" */
  char *time;
  char *tinker_path;
  int64_t size_bytes;            /* -1 when not given */
  int is_public;
  char *expires_at;              /* NULL: kept until deleted */
} tb_checkpoint_t;

typedef struct tb_checkpoint_list_s {
  tb_checkpoint_t *checkpoints;
  size_t n;
  tb_cursor_t cursor;
} tb_checkpoint_list_t;
TB_EXTERN extern const tb_result_type_t tb_result_checkpoint_list;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_checkpoint_list_free(tb_checkpoint_list_t *l);

/* A training run (the model of a training client). */
typedef struct tb_training_run_s {
  char *training_run_id;
  char *base_model;
  char *model_owner;
  int is_lora;
  int corrupted;
  int64_t lora_rank;             /* -1 when not given */
  char *last_request_time;
  tb_checkpoint_t *last_checkpoint;          /* NULL: none */
  tb_checkpoint_t *last_sampler_checkpoint;  /* NULL: none */
  char *user_metadata_json;      /* the object as JSON text, or NULL */
} tb_training_run_t;
TB_EXTERN extern const tb_result_type_t tb_result_training_run;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_training_run_free(tb_training_run_t *r);

typedef struct tb_training_run_list_s {
  tb_training_run_t *runs;
  size_t n;
  tb_cursor_t cursor;
} tb_training_run_list_t;
TB_EXTERN extern const tb_result_type_t tb_result_training_run_list;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_training_run_list_free(tb_training_run_list_t *l);

/* What a checkpoint holds (weights_info). */
typedef struct tb_weights_info_s {
  char *base_model;
  int is_lora;
  int64_t lora_rank;             /* -1 when not given */
  int train_unembed;             /* -1 when not given */
  int train_mlp;
  int train_attn;
} tb_weights_info_t;
TB_EXTERN extern const tb_result_type_t tb_result_weights_info;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_weights_info_free(tb_weights_info_t *w);

/* A signed download link of a checkpoint's archive. */
typedef struct tb_archive_url_s {
  char *url;
  char *expires;                 /* RFC 3339, or NULL */
} tb_archive_url_t;
TB_EXTERN extern const tb_result_type_t tb_result_archive_url;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_archive_url_free(tb_archive_url_t *a);

/* A list of strings (session ids). */
typedef struct tb_string_list_s {
  char **items;
  size_t n;
} tb_string_list_t;
TB_EXTERN extern const tb_result_type_t tb_result_string_list;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_string_list_free(tb_string_list_t *l);

/* A session: the runs and samplers made in it. */
typedef struct tb_session_info_s {
  char **training_run_ids;
  size_t n_training_run_ids;
  char **sampler_ids;
  size_t n_sampler_ids;
} tb_session_info_t;
TB_EXTERN extern const tb_result_type_t tb_result_session_info;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_session_info_free(tb_session_info_t *s);

/* A sampler (sampling session). */
typedef struct tb_sampler_info_s {
  char *sampler_id;
  char *base_model;
  char *model_path;              /* NULL for a base model's sampler */
} tb_sampler_info_t;
TB_EXTERN extern const tb_result_type_t tb_result_sampler_info;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_sampler_info_free(tb_sampler_info_t *s);

/* Who the caller is, from the claims of its key (whoami). */
typedef struct tb_whoami_s {
  char *user_urn;                /* the "sub" claim */
  char *email;                   /* NULL when the key carries none */
} tb_whoami_t;
TB_EXTERN extern const tb_result_type_t tb_result_whoami;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_whoami_free(tb_whoami_t *w);

/* access_scope of the lookups: the caller's own, or also what others
 * published. */
typedef enum {
  TB_ACCESS_OWNED = 0,
  TB_ACCESS_ACCESSIBLE = 1
} tb_access_scope_t;

/* ------------------------------------------------------------ training runs */

/* GET /api/v1/training_runs/{id}.  Result: tb_training_run_t. */
TB_EXTERN int tb_rest_client_get_training_run(tb_rest_client_t *rc, const char *training_run_id,
                                              tb_access_scope_t scope, tb_future_t **out);
TB_EXTERN int tb_rest_client_get_training_run_sync(tb_rest_client_t *rc,
                                                   const char *training_run_id,
                                                   tb_access_scope_t scope,
                                                   tb_training_run_t **run, tb_error_t *err);
/* The run of a checkpoint's tinker path. */
TB_EXTERN int tb_rest_client_get_training_run_by_tinker_path(tb_rest_client_t *rc,
                                                             const char *tinker_path,
                                                             tb_access_scope_t scope,
                                                             tb_future_t **out);
TB_EXTERN int tb_rest_client_get_training_run_by_tinker_path_sync(
    tb_rest_client_t *rc, const char *tinker_path, tb_access_scope_t scope,
    tb_training_run_t **run, tb_error_t *err);
/* GET /api/v1/training_runs (limit [20], offset; project_id may be NULL).
 * Result: tb_training_run_list_t. */
TB_EXTERN int tb_rest_client_list_training_runs(tb_rest_client_t *rc, int64_t limit,
                                                int64_t offset, tb_access_scope_t scope,
                                                const char *project_id, tb_future_t **out);
TB_EXTERN int tb_rest_client_list_training_runs_sync(tb_rest_client_t *rc, int64_t limit,
                                                     int64_t offset, tb_access_scope_t scope,
                                                     const char *project_id,
                                                     tb_training_run_list_t **runs,
                                                     tb_error_t *err);
/* POST /api/v1/weights_info: the base model and LoRA shape of a
 * checkpoint.  Result: tb_weights_info_t. */
TB_EXTERN int tb_rest_client_get_weights_info_by_tinker_path(tb_rest_client_t *rc,
                                                             const char *tinker_path,
                                                             tb_future_t **out);
TB_EXTERN int tb_rest_client_get_weights_info_by_tinker_path_sync(tb_rest_client_t *rc,
                                                                  const char *tinker_path,
                                                                  tb_weights_info_t **info,
                                                                  tb_error_t *err);

/* ------------------------------------------------------------ checkpoints */

/* GET /api/v1/training_runs/{id}/checkpoints.  Result:
 * tb_checkpoint_list_t. */
TB_EXTERN int tb_rest_client_list_checkpoints(tb_rest_client_t *rc, const char *training_run_id,
                                              tb_future_t **out);
TB_EXTERN int tb_rest_client_list_checkpoints_sync(tb_rest_client_t *rc,
                                                   const char *training_run_id,
                                                   tb_checkpoint_list_t **list,
                                                   tb_error_t *err);
/* GET /api/v1/checkpoints: every checkpoint of the caller, newest first
 * (limit [100], offset). */
TB_EXTERN int tb_rest_client_list_user_checkpoints(tb_rest_client_t *rc, int64_t limit,
                                                   int64_t offset, tb_future_t **out);
TB_EXTERN int tb_rest_client_list_user_checkpoints_sync(tb_rest_client_t *rc, int64_t limit,
                                                        int64_t offset,
                                                        tb_checkpoint_list_t **list,
                                                        tb_error_t *err);
/* GET .../checkpoints/{checkpoint_id}/archive: a download link.  Result:
 * tb_archive_url_t. */
TB_EXTERN int tb_rest_client_get_checkpoint_archive_url(tb_rest_client_t *rc,
                                                        const char *training_run_id,
                                                        const char *checkpoint_id,
                                                        tb_future_t **out);
TB_EXTERN int tb_rest_client_get_checkpoint_archive_url_sync(tb_rest_client_t *rc,
                                                             const char *training_run_id,
                                                             const char *checkpoint_id,
                                                             tb_archive_url_t **url,
                                                             tb_error_t *err);
TB_EXTERN int tb_rest_client_get_checkpoint_archive_url_from_tinker_path(
    tb_rest_client_t *rc, const char *tinker_path, tb_future_t **out);
TB_EXTERN int tb_rest_client_get_checkpoint_archive_url_from_tinker_path_sync(
    tb_rest_client_t *rc, const char *tinker_path, tb_archive_url_t **url, tb_error_t *err);
/* DELETE .../checkpoints/{checkpoint_id}.  Result: none. */
TB_EXTERN int tb_rest_client_delete_checkpoint(tb_rest_client_t *rc,
                                               const char *training_run_id,
                                               const char *checkpoint_id, tb_future_t **out);
TB_EXTERN int tb_rest_client_delete_checkpoint_sync(tb_rest_client_t *rc,
                                                    const char *training_run_id,
                                                    const char *checkpoint_id, tb_error_t *err);
TB_EXTERN int tb_rest_client_delete_checkpoint_from_tinker_path(tb_rest_client_t *rc,
                                                                const char *tinker_path,
                                                                tb_future_t **out);
TB_EXTERN int tb_rest_client_delete_checkpoint_from_tinker_path_sync(tb_rest_client_t *rc,
                                                                     const char *tinker_path,
                                                                     tb_error_t *err);
/* POST / DELETE .../publish: every user may load a published checkpoint
 * (409 when it already is, or is not; sent once, as a 409 is final here).
 * Result: none. */
TB_EXTERN int tb_rest_client_publish_checkpoint_from_tinker_path(tb_rest_client_t *rc,
                                                                 const char *tinker_path,
                                                                 tb_future_t **out);
TB_EXTERN int tb_rest_client_publish_checkpoint_from_tinker_path_sync(tb_rest_client_t *rc,
                                                                      const char *tinker_path,
                                                                      tb_error_t *err);
TB_EXTERN int tb_rest_client_unpublish_checkpoint_from_tinker_path(tb_rest_client_t *rc,
                                                                   const char *tinker_path,
                                                                   tb_future_t **out);
TB_EXTERN int tb_rest_client_unpublish_checkpoint_from_tinker_path_sync(
    tb_rest_client_t *rc, const char *tinker_path, tb_error_t *err);
/* PUT .../ttl: the checkpoint expires ttl_seconds from now (> 0), or
 * never (0).  Result: none. */
TB_EXTERN int tb_rest_client_set_checkpoint_ttl_from_tinker_path(tb_rest_client_t *rc,
                                                                 const char *tinker_path,
                                                                 int64_t ttl_seconds,
                                                                 tb_future_t **out);
TB_EXTERN int tb_rest_client_set_checkpoint_ttl_from_tinker_path_sync(tb_rest_client_t *rc,
                                                                      const char *tinker_path,
                                                                      int64_t ttl_seconds,
                                                                      tb_error_t *err);

/* ------------------------------------------------------------ sessions */

/* GET /api/v1/sessions/{id}.  Result: tb_session_info_t. */
TB_EXTERN int tb_rest_client_get_session(tb_rest_client_t *rc, const char *session_id,
                                         tb_access_scope_t scope, tb_future_t **out);
TB_EXTERN int tb_rest_client_get_session_sync(tb_rest_client_t *rc, const char *session_id,
                                              tb_access_scope_t scope,
                                              tb_session_info_t **info, tb_error_t *err);
/* GET /api/v1/sessions (limit [20], offset).  Result: tb_string_list_t of
 * session ids. */
TB_EXTERN int tb_rest_client_list_sessions(tb_rest_client_t *rc, int64_t limit, int64_t offset,
                                           tb_access_scope_t scope, tb_future_t **out);
TB_EXTERN int tb_rest_client_list_sessions_sync(tb_rest_client_t *rc, int64_t limit,
                                                int64_t offset, tb_access_scope_t scope,
                                                tb_string_list_t **ids, tb_error_t *err);
/* PUT /api/v1/sessions/{id}/project.  Result: none. */
TB_EXTERN int tb_rest_client_assign_session_project(tb_rest_client_t *rc,
                                                    const char *session_id,
                                                    const char *project_id, tb_future_t **out);
TB_EXTERN int tb_rest_client_assign_session_project_sync(tb_rest_client_t *rc,
                                                         const char *session_id,
                                                         const char *project_id,
                                                         tb_error_t *err);
#define TB_REST_TRACE_POLL_MS 5000
/* GET /api/v1/sessions/{id}/trace_export, asked again every
 * TB_REST_TRACE_POLL_MS until the export is ready or failed.  Result: its
 * URL (tb_result_string). */
TB_EXTERN int tb_rest_client_export_session_trace(tb_rest_client_t *rc, const char *session_id,
                                                  tb_future_t **out);
TB_EXTERN int tb_rest_client_export_session_trace_sync(tb_rest_client_t *rc,
                                                       const char *session_id, char **url,
                                                       tb_error_t *err);

/* ------------------------------------------------------------ other */

/* Who the caller is, as the SDK's whoami(): no request is sent; the
 * claims of the API key are read when the key is a JWT whose issuer
 * ("iss") starts with "passport-" (sub: the user's URN, email).  Any other
 * key fails the future with TB_EUNSUPPORTED (category user): plain API
 * keys name no user.  Result: tb_whoami_t (tb_result_whoami). */
TB_EXTERN int tb_rest_client_whoami(tb_rest_client_t *rc, tb_future_t **out);
TB_EXTERN int tb_rest_client_whoami_sync(tb_rest_client_t *rc, tb_whoami_t **who,
                                         tb_error_t *err);

/* GET /api/v1/samplers/{id}.  Result: tb_sampler_info_t. */
TB_EXTERN int tb_rest_client_get_sampler(tb_rest_client_t *rc, const char *sampler_id,
                                         tb_future_t **out);
TB_EXTERN int tb_rest_client_get_sampler_sync(tb_rest_client_t *rc, const char *sampler_id,
                                              tb_sampler_info_t **info, tb_error_t *err);
/* GET /api/v1/audit (event_type "all" or "checkpoints", NULL: all; day
 * "YYYY-MM-DD" or NULL).  Result: the answer's JSON document
 * ({"entries": [...]}) as text (tb_result_string). */
TB_EXTERN int tb_rest_client_get_audit_log(tb_rest_client_t *rc, const char *event_type,
                                           const char *day, tb_future_t **out);
TB_EXTERN int tb_rest_client_get_audit_log_sync(tb_rest_client_t *rc, const char *event_type,
                                                const char *day, char **json, tb_error_t *err);
/* GET /api/v1/billing/usage/events between two RFC 3339 times.  Result:
 * the answer's JSON document ({"data": [...], "sessions": {...}}) as text
 * (tb_result_string). */
TB_EXTERN int tb_rest_client_get_billing_usage(tb_rest_client_t *rc, const char *starting_on,
                                               const char *ending_before, tb_future_t **out);
TB_EXTERN int tb_rest_client_get_billing_usage_sync(tb_rest_client_t *rc,
                                                    const char *starting_on,
                                                    const char *ending_before, char **json,
                                                    tb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_REST_CLIENT_H */

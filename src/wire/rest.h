/*
 * The REST types of the Tinker wire protocol (training runs, checkpoints
 * and their lists with a cursor, a checkpoint's change, the archive link,
 * sessions, samplers, weights info): one struct per answer, its to_json
 * (what the server sends) and its from_json (what the client reads).
 *
 * Strings are borrowed: to_json copies them into the JSON value; from_json
 * points them into the document it reads (valid while the document is) and
 * takes its arrays from the arena.  A NULL string is JSON null (or a key
 * left out where the protocol leaves it out).  Keys are written in the
 * order the server has always sent them.  from_json fails with
 * "<field path>: <reason>" (TB_EFIELD, category user; the client turns it
 * into a server error).  Not here: the SQL that fills the structs
 * (server/rest_queries.c) and the public result types the client copies
 * them into (client/rest_results.c).
 */
#ifndef TB_WIRE_REST_H
#define TB_WIRE_REST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/json.h"

typedef struct tb__wire_cursor_s {
  int64_t offset, limit, total_count;     /* -1 when not given */
} tb__wire_cursor_t;

typedef struct tb__wire_checkpoint_s {
  const char *checkpoint_id;              /* "weights/<name>", "sampler_weights/<name>" */
  const char *checkpoint_type;            /* "training" or "sampler" */
  const char *time;                       /* RFC 3339, or NULL */
  const char *tinker_path;
  int64_t size_bytes;                     /* -1 when not given */
  int is_public;
  const char *expires_at;                 /* NULL: kept until deleted */
  const char *training_run_id;            /* NULL: left out */
} tb__wire_checkpoint_t;

typedef struct tb__wire_rest_lora_s {
  int present;                            /* 0: lora_config left out */
  int64_t rank, seed;
  int train_attn, train_mlp, train_unembed;
} tb__wire_rest_lora_t;

typedef struct tb__wire_training_run_s {
  const char *training_run_id;
  const char *base_model;
  const char *model_owner;                /* NULL when not given */
  int is_lora, corrupted;
  int64_t lora_rank;                      /* -1 when not given */
  const char *last_request_time, *created_time;
  const tb__wire_checkpoint_t *last_checkpoint;          /* NULL: null */
  const tb__wire_checkpoint_t *last_sampler_checkpoint;  /* NULL: null */
  const json_t *user_metadata;            /* an object, or NULL: null */
  const char *session_id;                 /* NULL when not given */
  tb__wire_rest_lora_t lora_config;
} tb__wire_training_run_t;

/* {"training_runs": [...], "cursor"} and {"checkpoints": [...], "cursor"}. */
typedef struct tb__wire_training_runs_s {
  tb__wire_training_run_t *runs;
  size_t n;
  tb__wire_cursor_t cursor;
} tb__wire_training_runs_t;

typedef struct tb__wire_checkpoints_s {
  tb__wire_checkpoint_t *checkpoints;
  size_t n;
  tb__wire_cursor_t cursor;
} tb__wire_checkpoints_t;

/* What DELETE, publish/unpublish and ttl answer about one checkpoint. */
typedef enum {
  TB__WIRE_CKPT_DELETED = 1,              /* {tinker_path, deleted: true} */
  TB__WIRE_CKPT_PUBLIC,                   /* {tinker_path, public} */
  TB__WIRE_CKPT_TTL                       /* {tinker_path, expires_at | null} */
} tb__wire_ckpt_change_kind_t;

typedef struct tb__wire_checkpoint_change_s {
  tb__wire_ckpt_change_kind_t kind;
  const char *tinker_path;
  int is_public;                          /* TB__WIRE_CKPT_PUBLIC */
  const char *expires_at;                 /* TB__WIRE_CKPT_TTL; NULL: null */
} tb__wire_checkpoint_change_t;

/* {"expires", "url"} of GET .../archive. */
typedef struct tb__wire_archive_url_s {
  const char *url;
  const char *expires;                    /* RFC 3339, or NULL */
} tb__wire_archive_url_t;

typedef struct tb__wire_weights_info_s {
  const char *base_model;
  int is_lora;
  int64_t lora_rank;                      /* -1 when not given */
  int train_unembed, train_mlp, train_attn;  /* -1 when not given */
} tb__wire_weights_info_t;

typedef struct tb__wire_sampler_info_s {
  const char *sampler_id;
  const char *base_model;
  const char *model_path;                 /* NULL: left out (a base model's) */
} tb__wire_sampler_info_t;

/* GET /api/v1/sessions/{id}. */
typedef struct tb__wire_session_info_s {
  const char *session_id;
  const char **training_run_ids;
  size_t n_training_run_ids;
  const char **sampler_ids;
  size_t n_sampler_ids;
  int expired, closed;
  const json_t *tags;                     /* an array of strings, or NULL: null */
  const json_t *user_metadata;            /* NULL: null */
} tb__wire_session_info_t;

/* GET /api/v1/sessions: {"sessions": [...], "cursor"}. */
typedef struct tb__wire_sessions_s {
  const char **ids;
  size_t n;
  tb__wire_cursor_t cursor;
} tb__wire_sessions_t;

/* Two routes of a hosted Tinker service this server does not serve, which
 * the RestClient calls: PUT /api/v1/sessions/{id}/project {"project_id"}
 * (written only) and GET .../trace_export {"status": "pending" | "ready" |
 * "failed", "url"?, "error"?} (read only). */
typedef struct tb__wire_session_project_s {
  const char *project_id;
} tb__wire_session_project_t;

typedef struct tb__wire_trace_export_s {
  const char *status;
  const char *url, *error;                /* NULL when not given */
} tb__wire_trace_export_t;

/* Each to_json returns a new reference, or NULL when memory runs out. */
json_t *tb__wire_cursor_to_json(const tb__wire_cursor_t *c);
json_t *tb__wire_checkpoint_to_json(const tb__wire_checkpoint_t *c);
json_t *tb__wire_training_run_to_json(const tb__wire_training_run_t *r);
json_t *tb__wire_training_runs_to_json(const tb__wire_training_runs_t *l);
json_t *tb__wire_checkpoints_to_json(const tb__wire_checkpoints_t *l);
/* The lists as the server makes them, one row at a time: items is an
 * array of encoded runs (or checkpoints), which the answer takes over
 * (also when NULL is returned). */
json_t *tb__wire_training_runs_wrap(json_t *items, const tb__wire_cursor_t *c);
json_t *tb__wire_checkpoints_wrap(json_t *items, const tb__wire_cursor_t *c);
json_t *tb__wire_checkpoint_change_to_json(const tb__wire_checkpoint_change_t *c);
json_t *tb__wire_archive_url_to_json(const tb__wire_archive_url_t *a);
json_t *tb__wire_weights_info_to_json(const tb__wire_weights_info_t *w);
json_t *tb__wire_sampler_info_to_json(const tb__wire_sampler_info_t *s);
json_t *tb__wire_session_info_to_json(const tb__wire_session_info_t *s);
json_t *tb__wire_sessions_to_json(const tb__wire_sessions_t *s);
json_t *tb__wire_session_project_to_json(const tb__wire_session_project_t *p);

/* Each from_json reads the value v at c's path; 0, TB_EFIELD (recorded in
 * c) or TB_ENOMEM. */
int tb__wire_cursor_from_json(tb__jctx_t *c, const json_t *v, tb__wire_cursor_t *out);
int tb__wire_checkpoint_from_json(tb__jctx_t *c, const json_t *v, tb__wire_checkpoint_t *out);
int tb__wire_training_run_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                    tb__wire_training_run_t *out);
int tb__wire_training_runs_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                     tb__wire_training_runs_t *out);
int tb__wire_checkpoints_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                   tb__wire_checkpoints_t *out);
/* kind says which answer is expected. */
int tb__wire_checkpoint_change_from_json(tb__jctx_t *c, const json_t *v,
                                         tb__wire_ckpt_change_kind_t kind,
                                         tb__wire_checkpoint_change_t *out);
int tb__wire_archive_url_from_json(tb__jctx_t *c, const json_t *v, tb__wire_archive_url_t *out);
int tb__wire_weights_info_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_weights_info_t *out);
int tb__wire_sampler_info_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_sampler_info_t *out);
int tb__wire_session_info_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                    tb__wire_session_info_t *out);
int tb__wire_sessions_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                tb__wire_sessions_t *out);
int tb__wire_trace_export_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_trace_export_t *out);

#endif /* TB_WIRE_REST_H */

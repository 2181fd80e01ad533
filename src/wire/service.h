/*
 * The small requests and answers of the Tinker service routes beside the
 * REST queries (rest.h) and the futures' results (op_result.h): a
 * session's creation, heartbeat and close; create_sampling_session;
 * get_info's model info; get_server_capabilities; the {request_id,
 * model_id} that accepts an op; the body of weights_info and of a
 * checkpoint's ttl; the index of routes.  One struct per body, its to_json (what its sender
 * writes: the client for a request, the server for an answer) and its
 * from_json (what the other side reads).
 *
 * Strings are borrowed as in rest.h.  A request's strings are slices, as
 * the server compares them: base NULL is a field left out.  Keys are
 * written in the order the SDK and the server have always sent them.
 * from_json fails with "<field path>: <reason>" (TB_EFIELD, category
 * user).  Not here: what the server does with a request (sessions.c, the
 * route files) and the checks that need its state (a known model, a live
 * session).
 */
#ifndef TB_WIRE_SERVICE_H
#define TB_WIRE_SERVICE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/arena.h"
#include "core/json.h"

/* The longest ttl_seconds a checkpoint takes: 100 years. */
#define TB__WIRE_MAX_TTL_SECONDS ((int64_t)100 * 365 * 24 * 3600)

/* A C string (or NULL: left out) as a request's slice. */
static inline tb_slice_t tb__wire_str(const char *s) {
  return (tb_slice_t){ s, s != NULL ? strlen(s) : 0 };
}

typedef struct tb__wire_pair_s {
  const char *key, *value;
} tb__wire_pair_t;

/* POST /api/v1/create_session {"tags", "user_metadata", "sdk_version",
 * "type", "project_id"?}.  to_json writes tags and user_metadata from the
 * C lists; from_json gives them as sent (the session keeps them as JSON
 * values, a reference of their own: user_metadata may hold any JSON
 * value), checking that tags is an array of strings. */
typedef struct tb__wire_create_session_s {
  const char *const *tags;
  size_t n_tags;
  const tb__wire_pair_t *user_metadata;
  size_t n_user_metadata;
  json_t *tags_value;                     /* from_json: an array, or NULL */
  json_t *user_metadata_value;            /* from_json: an object, or NULL */
  tb_slice_t sdk_version, project_id;
} tb__wire_create_session_t;

/* Its answer {"session_id", "type": "create_session"}; the messages a
 * hosted service may add for the user to read are read, never written. */
typedef struct tb__wire_session_created_s {
  const char *session_id;
  const char *info_message, *warning_message, *error_message;  /* NULL: none */
} tb__wire_session_created_t;

/* {"session_id", "type"} of session_heartbeat and close_session. */
typedef struct tb__wire_session_call_s {
  tb_slice_t session_id;
  const char *type;
} tb__wire_session_call_t;

/* POST /api/v1/create_sampling_session {"session_id",
 * "sampling_session_seq_id", "type", "model_path"?, "base_model"?}: one of
 * model_path and base_model is required. */
typedef struct tb__wire_create_sampler_s {
  tb_slice_t session_id;
  int64_t seq_id;
  tb_slice_t model_path, base_model;
} tb__wire_create_sampler_t;

/* Its answer {"sampling_session_id", "type": "create_sampling_session"}. */
typedef struct tb__wire_sampler_created_s {
  const char *sampling_session_id;
} tb__wire_sampler_created_t;

/* get_info's answer {"model_data": {"arch", "model_name", "tokenizer_id"},
 * "model_id", "is_lora", "lora_rank", "model_name", "type": "get_info"}. */
typedef struct tb__wire_model_info_s {
  const char *model_id;
  const char *model_name;                 /* NULL when not given */
  const char *arch, *tokenizer_id;        /* NULL when not given */
  int is_lora;
  int64_t lora_rank;                      /* -1 when not given */
} tb__wire_model_info_t;

typedef struct tb__wire_supported_model_s {
  const char *model_name;                 /* NULL when not given */
  int64_t max_context_length;             /* -1 when not given */
} tb__wire_supported_model_t;

/* GET /api/v1/get_server_capabilities {"supported_models": [...]}. */
typedef struct tb__wire_capabilities_s {
  const tb__wire_supported_model_t *models;
  size_t n_models;
} tb__wire_capabilities_t;

/* {"request_id", "model_id"?}: an op accepted, its future to poll. */
typedef struct tb__wire_future_ref_s {
  const char *request_id;
  const char *model_id;                   /* NULL: left out */
} tb__wire_future_ref_t;

/* POST /api/v1/weights_info {"tinker_path"}. */
typedef struct tb__wire_weights_info_request_s {
  tb_slice_t tinker_path;
} tb__wire_weights_info_request_t;

/* PUT .../ttl {"ttl_seconds": n | null}: 1..TB__WIRE_MAX_TTL_SECONDS, or
 * 0 for null (kept until deleted). */
typedef struct tb__wire_ttl_request_s {
  int64_t ttl_seconds;
} tb__wire_ttl_request_t;

/* One route of the index (GET /). */
typedef struct tb__wire_endpoint_s {
  const char *method, *path, *dialect;
  int auth;
  const char *summary;
} tb__wire_endpoint_t;

/* GET / {"name", "version", "endpoints": [...], "dialects": {"tinker",
 * "tinkerbell", "both"}}: what the server serves, each dialect's one-line
 * description. */
typedef struct tb__wire_service_index_s {
  const char *name, *version;
  const tb__wire_endpoint_t *endpoints;
  size_t n_endpoints;
  const char *tinker, *tinkerbell, *both;
} tb__wire_service_index_t;

/* New references, or NULL when memory runs out. */
json_t *tb__wire_create_session_to_json(const tb__wire_create_session_t *r);
json_t *tb__wire_session_created_to_json(const tb__wire_session_created_t *r);
json_t *tb__wire_session_call_to_json(const tb__wire_session_call_t *r);
/* Its answer {"type"}. */
json_t *tb__wire_session_call_done_to_json(const tb__wire_session_call_t *r);
json_t *tb__wire_create_sampler_to_json(const tb__wire_create_sampler_t *r);
json_t *tb__wire_sampler_created_to_json(const tb__wire_sampler_created_t *r);
json_t *tb__wire_model_info_to_json(const tb__wire_model_info_t *r);
json_t *tb__wire_capabilities_to_json(const tb__wire_capabilities_t *r);
json_t *tb__wire_future_ref_to_json(const tb__wire_future_ref_t *r);
json_t *tb__wire_weights_info_request_to_json(const tb__wire_weights_info_request_t *r);
json_t *tb__wire_ttl_request_to_json(const tb__wire_ttl_request_t *r);
json_t *tb__wire_service_index_to_json(const tb__wire_service_index_t *r);

/* Each from_json reads the value v at c's path; 0, TB_EFIELD (recorded in
 * c) or TB_ENOMEM. */
int tb__wire_create_session_from_json(tb__jctx_t *c, const json_t *v,
                                      tb__wire_create_session_t *out);
int tb__wire_session_created_from_json(tb__jctx_t *c, const json_t *v,
                                       tb__wire_session_created_t *out);
/* "type" may be left out; when sent it must be type. */
int tb__wire_session_call_from_json(tb__jctx_t *c, const json_t *v, const char *type,
                                    tb__wire_session_call_t *out);
int tb__wire_create_sampler_from_json(tb__jctx_t *c, const json_t *v,
                                      tb__wire_create_sampler_t *out);
int tb__wire_sampler_created_from_json(tb__jctx_t *c, const json_t *v,
                                       tb__wire_sampler_created_t *out);
int tb__wire_model_info_from_json(tb__jctx_t *c, const json_t *v, tb__wire_model_info_t *out);
/* The models in the arena. */
int tb__wire_capabilities_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                    tb__wire_capabilities_t *out);
/* request_id must be a non-empty string. */
int tb__wire_future_ref_from_json(tb__jctx_t *c, const json_t *v, tb__wire_future_ref_t *out);
int tb__wire_weights_info_request_from_json(tb__jctx_t *c, const json_t *v,
                                            tb__wire_weights_info_request_t *out);
int tb__wire_ttl_request_from_json(tb__jctx_t *c, const json_t *v, tb__wire_ttl_request_t *out);
/* The endpoints in the arena. */
int tb__wire_service_index_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                     tb__wire_service_index_t *out);

#endif /* TB_WIRE_SERVICE_H */

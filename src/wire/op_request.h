/*
 * The small JSON requests of the Tinker dialect's training ops, as the
 * client writes them: create_model, load_weights (also the create of
 * create-via-load), save_weights, save_weights_for_sampler, optim_step,
 * and the bare {"type"} of unload_model and get_info; and the ids a
 * client adds to a request it encoded earlier (seq_id when the op takes
 * its turn, model_id when the model is known), which go last, as
 * tb__wire_fwdbwd_model_id_to_proto does for the protobuf body.  Keys are
 * in the order the client has always sent them.  The server reads them
 * back with the from_json decoders, which check types and the ranges
 * that need no server state; what the body means (a live session, a
 * known model, a checkpoint's name and files) is server/model_routes.c's.
 * Not here: ForwardBackward and SampleRequest (encode.h).
 */
#ifndef TB_WIRE_OP_REQUEST_H
#define TB_WIRE_OP_REQUEST_H

#include <jansson.h>
#include <stdint.h>

#include "core/json.h"

typedef struct tb__wire_create_model_s {
  const char *session_id;
  int64_t model_seq_id;
  const char *base_model;
  int64_t rank;
  int train_mlp, train_attn, train_unembed;
  int has_seed;                           /* 0: seed left out */
  int64_t seed;
} tb__wire_create_model_t;

/* {"session_id"?, "model_seq_id"?, "path", "optimizer", "type":
 * "load_weights"}: session_id and model_seq_id for create-via-load. */
typedef struct tb__wire_load_request_s {
  const char *session_id;                 /* NULL: left out, with model_seq_id */
  int64_t model_seq_id;
  const char *path;
  int optimizer;
  const char *base_model;                 /* create form only; NULL: left out */
} tb__wire_load_request_t;

/* {"type", "path"?, "ttl_seconds"?, "overwrite"?, "sampling_session_seq_id"?}
 * of save_weights and save_weights_for_sampler. */
typedef struct tb__wire_save_request_s {
  const char *type;                       /* "save_weights", "save_weights_for_sampler" */
  const char *path;                       /* the name; NULL: left out */
  int64_t ttl_seconds;                    /* <= 0: left out */
  int overwrite;                          /* -1: left out */
  int64_t sampling_session_seq_id;        /* -1: left out */
} tb__wire_save_request_t;

/* {"adam_params": {...}, "type": "optim_step"}. */
typedef struct tb__wire_adam_s {
  double learning_rate, beta1, beta2, eps, weight_decay, grad_clip_norm;
} tb__wire_adam_t;

/* {"model_id", "seq_id"?} of a training request: the model and its
 * turn. */
typedef struct tb__wire_op_target_s {
  const char *model_id;
  int64_t seq_id;                         /* -1: left out */
} tb__wire_op_target_t;

/* New references, or NULL when memory runs out. */
json_t *tb__wire_create_model_to_json(const tb__wire_create_model_t *r);
json_t *tb__wire_load_request_to_json(const tb__wire_load_request_t *r);
json_t *tb__wire_save_request_to_json(const tb__wire_save_request_t *r);
json_t *tb__wire_optim_request_to_json(const tb__wire_adam_t *adam);
/* {"type": type}: a request with no field of its own (unload_model,
 * get_info), or the answer of session_heartbeat and close_session. */
json_t *tb__wire_typed_to_json(const char *type);

/* Add "seq_id" / "model_id" last to a request body; 0 or TB_ENOMEM. */
int tb__wire_request_add_seq_id(json_t *body, int64_t seq_id);
int tb__wire_request_add_model_id(json_t *body, const char *model_id);

/* Decoders: 0 or TB_EFIELD (recorded in c); strings are the
 * document's. */
int tb__wire_op_target_from_json(tb__jctx_t *c, const json_t *v, tb__wire_op_target_t *out);
/* rank defaults to 32 and the train_* flags to 1 without lora_config. */
int tb__wire_create_model_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_create_model_t *out);
/* Whether a load_weights body is the create form: session_id given,
 * model_id not. */
int tb__wire_load_is_create(const json_t *v);
/* The create form (session_id given, model_id not: session_id,
 * model_seq_id, base_model? read) or the plain one (path and optimizer
 * only; session_id NULL). */
int tb__wire_load_request_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_load_request_t *out);
/* type's body: path is required for save_weights; without it,
 * sampling_session_seq_id is (the unnamed form).  overwrite reads 0 when
 * left out. */
int tb__wire_save_request_from_json(tb__jctx_t *c, const json_t *v, const char *type,
                                    tb__wire_save_request_t *out);
/* "adam_params"? of v: the values it gives over out's (the caller's
 * defaults); strict refuses a key that is no Adam parameter (a typo such
 * as "lr").  The values' ranges are the optimizer's to check. */
int tb__wire_adam_from_json(tb__jctx_t *c, const json_t *v, int strict, tb__wire_adam_t *out);

#endif /* TB_WIRE_OP_REQUEST_H */

/*
 * The small JSON requests of the Tinker dialect's training ops, as the
 * client writes them: create_model, load_weights (also the create of
 * create-via-load), save_weights, save_weights_for_sampler, optim_step,
 * and the bare {"type"} of unload_model and get_info; and the ids a
 * client adds to a request it encoded earlier (seq_id when the op takes
 * its turn, model_id when the model is known), which go last, as
 * tb__wire_fwdbwd_model_id_to_proto does for the protobuf body.  Keys are
 * in the order the client has always sent them.  Not here: the server's
 * reading of these bodies (server/model_routes.c), ForwardBackward and
 * SampleRequest (encode.h).
 */
#ifndef TB_WIRE_OP_REQUEST_H
#define TB_WIRE_OP_REQUEST_H

#include <jansson.h>
#include <stdint.h>

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

#endif /* TB_WIRE_OP_REQUEST_H */

/*
 * Tinker data types as the wire carries them, decoded into plain C.
 *
 * Decoders (JSON in datum_json.c, protobuf in datum_proto.c) fill these
 * structs from a request body; all memory comes from the caller's arena and
 * lives as long as the request.  Every decoding failure is a user error
 * whose message names the field, e.g.
 *   data[3].loss_fn_inputs.weights: expected 7 elements (the input length), got 6
 * The codecs know nothing of models: vocabulary and context checks happen
 * where the model is known.
 */
#ifndef TB_WIRE_TYPES_H
#define TB_WIRE_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "tinkerbell/error.h"

#define TB_WIRE_MAX_NDIM 4

typedef enum {
  TB_DTYPE_FLOAT32 = 1,
  TB_DTYPE_INT64 = 2
} tb__dtype_t;

/* A dense tensor; sparse CSR inputs are expanded on decode. */
typedef struct tb__wire_tensor_s {
  tb__dtype_t dtype;
  int ndim;                         /* 1..TB_WIRE_MAX_NDIM */
  int64_t shape[TB_WIRE_MAX_NDIM];
  size_t numel;
  float *f32;                       /* when dtype is FLOAT32 */
  int64_t *i64;                     /* when dtype is INT64 */
} tb__wire_tensor_t;

typedef struct tb__wire_named_tensor_s {
  const char *name;
  tb__wire_tensor_t tensor;
} tb__wire_named_tensor_t;

/* One training example: the model input flattened to its tokens (only
 * encoded_text chunks carry tokens for a text model) and the loss inputs. */
typedef struct tb__wire_datum_s {
  int32_t *tokens;
  size_t n_tokens;
  tb__wire_named_tensor_t *inputs;
  size_t n_inputs;
} tb__wire_datum_t;

typedef struct tb__wire_config_entry_s {
  const char *name;
  double value;
} tb__wire_config_entry_t;

/* ForwardBackwardInput plus the envelope fields of its request. */
typedef struct tb__wire_fwdbwd_s {
  tb__wire_datum_t *data;
  size_t n_data;
  const char *loss_fn;
  tb__wire_config_entry_t *config;
  size_t n_config;
  int forward_only;
  const char *model_id;   /* NULL when absent */
  int64_t seq_id;         /* -1 when absent */
} tb__wire_fwdbwd_t;

typedef struct tb__wire_metric_s {
  const char *name;    /* "<name>:<reduction>", exactly one colon */
  double value;
} tb__wire_metric_t;

/* The outputs of one datum: named tensors, e.g. "logprobs" (N,). */
typedef struct tb__wire_datum_output_s {
  tb__wire_named_tensor_t *fields;
  size_t n_fields;
} tb__wire_datum_output_t;

/* ForwardBackwardOutput: outputs in input datum order, and metrics. */
typedef struct tb__wire_fwdbwd_output_s {
  const char *loss_fn_output_type;
  tb__wire_datum_output_t *outputs;
  size_t n_outputs;
  tb__wire_metric_t *metrics;
  size_t n_metrics;
} tb__wire_fwdbwd_output_t;

/* Looks up a loss input by name; NULL when absent. */
const tb__wire_tensor_t *tb__wire_datum_input(const tb__wire_datum_t *d,
                                             const char *name);
/* Looks up a loss_fn_config value; returns 1 and sets *out when present. */
int tb__wire_fwdbwd_config(const tb__wire_fwdbwd_t *f, const char *name,
                           double *out);

#endif /* TB_WIRE_TYPES_H */

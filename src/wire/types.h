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
} tb_dtype_t;

/* A dense tensor; sparse CSR inputs are expanded on decode. */
typedef struct tb_wire_tensor_s {
  tb_dtype_t dtype;
  int ndim;                         /* 1..TB_WIRE_MAX_NDIM */
  int64_t shape[TB_WIRE_MAX_NDIM];
  size_t numel;
  float *f32;                       /* when dtype is FLOAT32 */
  int64_t *i64;                     /* when dtype is INT64 */
} tb_wire_tensor_t;

typedef struct tb_wire_named_tensor_s {
  const char *name;
  tb_wire_tensor_t tensor;
} tb_wire_named_tensor_t;

/* One training example: the model input flattened to its tokens (only
 * encoded_text chunks carry tokens for a text model) and the loss inputs. */
typedef struct tb_wire_datum_s {
  int32_t *tokens;
  size_t n_tokens;
  tb_wire_named_tensor_t *inputs;
  size_t n_inputs;
} tb_wire_datum_t;

typedef struct tb_wire_config_entry_s {
  const char *name;
  double value;
} tb_wire_config_entry_t;

/* ForwardBackwardInput plus the envelope fields of its request. */
typedef struct tb_wire_fwdbwd_s {
  tb_wire_datum_t *data;
  size_t n_data;
  const char *loss_fn;
  tb_wire_config_entry_t *config;
  size_t n_config;
  int forward_only;
  const char *model_id;   /* NULL when absent */
  int64_t seq_id;         /* -1 when absent */
} tb_wire_fwdbwd_t;

typedef struct tb_wire_metric_s {
  const char *name;    /* "<name>:<reduction>", exactly one colon */
  double value;
} tb_wire_metric_t;

/* The outputs of one datum: named tensors, e.g. "logprobs" (N,). */
typedef struct tb_wire_datum_output_s {
  tb_wire_named_tensor_t *fields;
  size_t n_fields;
} tb_wire_datum_output_t;

/* ForwardBackwardOutput: outputs in input datum order, and metrics. */
typedef struct tb_wire_fwdbwd_output_s {
  const char *loss_fn_output_type;
  tb_wire_datum_output_t *outputs;
  size_t n_outputs;
  tb_wire_metric_t *metrics;
  size_t n_metrics;
} tb_wire_fwdbwd_output_t;

/* Looks up a loss input by name; NULL when absent. */
const tb_wire_tensor_t *tb__wire_datum_input(const tb_wire_datum_t *d,
                                             const char *name);
/* Looks up a loss_fn_config value; returns 1 and sets *out when present. */
int tb__wire_fwdbwd_config(const tb_wire_fwdbwd_t *f, const char *name,
                           double *out);

#endif /* TB_WIRE_TYPES_H */

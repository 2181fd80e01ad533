/*
 * Decoders of forward/forward_backward requests into tb__wire_fwdbwd_t:
 * the JSON form of SDK 0.24 (datum_json.c) and the protobuf
 * ForwardBackwardRequest of SDK 0.25 (datum_proto.c).  Both give the same
 * structs and the same path errors.  Memory comes from the arena.
 */
#ifndef TB_WIRE_DATUM_H
#define TB_WIRE_DATUM_H

#include <jansson.h>

#include "core/json.h"
#include "wire/types.h"

/* TensorData JSON ({"data", "dtype", "shape"?, sparse CSR?}) or a plain
 * list cast by its key name (target_tokens -> int64, weights etc. ->
 * float32).  max_bytes bounds what one decoded tensor may take (a sparse
 * one is expanded to its dense shape): the server passes its max body.
 * Every size is checked against the values present or max_bytes before
 * anything is allocated. */
int tb__wire_tensor_from_json(tb__jctx_t *c, tb__arena_t *a, const char *key,
                              const json_t *v, size_t max_bytes,
                              tb__wire_tensor_t *t);
/* The same for a tensor of a result, where a float32 value that JSON
 * cannot carry (NaN, an infinity) travels as null: null reads as NaN. */
int tb__wire_result_tensor_from_json(tb__jctx_t *c, tb__arena_t *a, const char *key,
                                     const json_t *v, size_t max_bytes,
                                     tb__wire_tensor_t *t);
/* The named tensors of an object ({name: TensorData, ...}: a datum's
 * loss_fn_inputs, a result's record) at key of c's path (NULL: at c's
 * path); obj NULL: none.  result: a result's tensors (null reads as
 * NaN).  The names are copied to the arena. */
int tb__wire_named_tensors_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *obj,
                                     const char *key, size_t max_bytes, int result,
                                     tb__wire_named_tensor_t **out, size_t *n);
/* ModelInput {"chunks": [...]} flattened to its tokens. */
int tb__wire_model_input_from_json(tb__jctx_t *c, tb__arena_t *a,
                                   const json_t *mi, int32_t **tokens,
                                   size_t *n_tokens);
/* {"data": [Datum], "loss_fn", "loss_fn_config"?} */
int tb__wire_fwdbwd_input_from_json(tb__jctx_t *c, tb__arena_t *a,
                                    const json_t *in, size_t max_bytes,
                                    tb__wire_fwdbwd_t *out);
/* The whole request body; input_key is "forward_backward_input" or
 * "forward_input" (which also sets forward_only). */
int tb__wire_fwdbwd_request_from_json(tb__jctx_t *c, tb__arena_t *a,
                                      const json_t *body, const char *input_key,
                                      size_t max_bytes, tb__wire_fwdbwd_t *out);
/* A protobuf ForwardBackwardRequest (max_bytes as above). */
int tb__wire_fwdbwd_request_from_proto(tb__jctx_t *c, tb__arena_t *a,
                                       tb_slice_t body, size_t max_bytes,
                                       tb__wire_fwdbwd_t *out);

#endif /* TB_WIRE_DATUM_H */

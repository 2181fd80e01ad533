/*
 * Codecs of ForwardBackwardOutput, the result of forward and
 * forward_backward futures, in both formats the Tinker SDKs read:
 *   JSON  {"loss_fn_output_type", "loss_fn_outputs": [{name: TensorData}],
 *          "metrics": {...}}                                 (SDK <= 0.24)
 *   proto ForwardBackwardOutput with one ArrayRecord whose fields hold the
 *         datums' tensors back to back with byte offsets     (SDK 0.25)
 * The server encodes, the client decodes; both live here so that the two
 * sides can never drift apart.
 */
#ifndef TB_WIRE_OUTPUT_H
#define TB_WIRE_OUTPUT_H

#include <jansson.h>

#include "core/buf.h"
#include "core/json.h"
#include "wire/types.h"

/* A new JSON object (NULL on ENOMEM). */
json_t *tb__wire_fwdbwd_output_to_json(const tb__wire_fwdbwd_output_t *o);
/* Appends the protobuf encoding to out.  Every datum must carry the same
 * field names with the same dtype and trailing shape (TB_EINVAL if not). */
int tb__wire_fwdbwd_output_to_proto(const tb__wire_fwdbwd_output_t *o,
                                    tb__buf_t *out);
/* Decoders; memory from the arena.  Errors are TB_EFIELD with a path. */
int tb__wire_fwdbwd_output_from_json(tb__jctx_t *c, tb__arena_t *a,
                                     const json_t *v,
                                     tb__wire_fwdbwd_output_t *o);
int tb__wire_fwdbwd_output_from_proto(tb__jctx_t *c, tb__arena_t *a,
                                      tb_slice_t body,
                                      tb__wire_fwdbwd_output_t *o);

#endif /* TB_WIRE_OUTPUT_H */

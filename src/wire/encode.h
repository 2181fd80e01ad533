/*
 * Encoders of the requests a client sends, from the same wire structs the
 * server's decoders fill (datum.h, sample.h), so that a round trip through
 * both is the test of each:
 *   forward / forward_backward  protobuf ForwardBackwardRequest (SDK 0.25)
 *                               or the JSON body of SDK 0.24
 *   asample                     the JSON SampleRequest
 * Nothing here allocates from an arena: JSON values are new references,
 * protobuf bytes are appended to a tb__buf_t.
 */
#ifndef TB_WIRE_ENCODE_H
#define TB_WIRE_ENCODE_H

#include <jansson.h>

#include "core/buf.h"
#include "wire/sample.h"
#include "wire/types.h"

/* TensorData JSON: {"data": [...], "dtype", "shape": [...]} (tensor.c).
 * JSON has no NaN: a float value that is not finite is refused (NULL),
 * or with nonfinite_null (results, whose values the server computed)
 * travels as null. */
json_t *tb__wire_tensor_to_json(const tb__wire_tensor_t *t, int nonfinite_null);

/* ModelInput JSON of one encoded_text chunk: {"chunks": [{"type":
 * "encoded_text", "tokens": [...]}]}. */
json_t *tb__wire_model_input_to_json(const int32_t *tokens, size_t n);

/* Appends the protobuf ForwardBackwardRequest of f (model_id, seq_id,
 * data, loss_fn, loss_fn_config, forward_only) to out.  Returns 0,
 * TB_EINVAL (a tensor with no storage, a seq_id beyond int32) or
 * TB_ENOMEM. */
int tb__wire_fwdbwd_request_to_proto(const tb__wire_fwdbwd_t *f, tb__buf_t *out);

/* A ForwardBackwardRequest holding model_id alone.  Protobuf merges
 * concatenated messages, so these bytes followed by an encoding made
 * without a model_id are the request for that model: a client encodes
 * its data when the call is made and learns the model id later. */
int tb__wire_fwdbwd_model_id_to_proto(const char *model_id, tb__buf_t *out);

/* The JSON body {"<input_key>": {"data", "loss_fn", "loss_fn_config"?},
 * "model_id", "seq_id"} where input_key is "forward_backward_input" or
 * "forward_input" (for POST /api/v1/forward).  NULL on ENOMEM or a value
 * JSON cannot carry. */
json_t *tb__wire_fwdbwd_request_to_json(const tb__wire_fwdbwd_t *f,
                                        const char *input_key);

/* SamplingParams JSON; absent fields (max_tokens < 0, no seed, no stop)
 * are omitted, as the SDK omits None. */
json_t *tb__wire_sampling_params_to_json(const tb__wire_sampling_params_t *p);

/* The asample body: {"prompt", "sampling_params", "num_samples",
 * "prompt_logprobs", "topk_prompt_logprobs", "type": "sample",
 * "sampling_session_id"?, "base_model"?, "model_path"?, "seq_id"? (when
 * >= 0)}. */
json_t *tb__wire_sample_request_to_json(const tb__wire_sample_request_t *r);

/* Adds "sampling_session_id" and "seq_id" to a body made by
 * tb__wire_sample_request_to_json without them, where it writes them (a
 * client encodes a sample before its sampling session exists; again on a
 * retry, in place).  0 or TB_ENOMEM. */
int tb__wire_sample_request_add_ids(json_t *body, const char *sampling_session_id,
                                    int64_t seq_id);

#endif /* TB_WIRE_ENCODE_H */

/*
 * Between the client's public types (tinkerbell/types.h) and the wire
 * structs the codecs of src/wire read and write (wire/types.h,
 * wire/sample.h): requests are lent to the encoders without copying the
 * big arrays, results are decoded into an arena and then copied once
 * into the malloc'd public result the future owns.
 */
#ifndef TB_CLIENT_CONVERT_H
#define TB_CLIENT_CONVERT_H

#include "core/arena.h"
#include "tinkerbell/types.h"
#include "wire/sample.h"
#include "wire/types.h"

/* Wire datums that point into data (tokens of several chunks are joined
 * in the arena). */
int tb__datums_to_wire(tb__arena_t *a, const tb_train_datum_t *data, size_t n,
                       tb__wire_datum_t **out);

/* Sampling parameters for the encoder (pointers borrowed from p).
 * Returns 0 or TB_EINVAL with err saying which field is wrong. */
int tb__sample_params_to_wire(const tb_sample_params_t *p, tb__wire_sampling_params_t *w,
                              tb_error_t *err);

/* Deep copies of decoded results; TB_ENOMEM on failure. */
int tb__fwdbwd_output_from_wire(const tb__wire_fwdbwd_output_t *w,
                                tb_forward_backward_output_t **out);
int tb__sample_response_from_wire(const tb__wire_sample_response_t *w,
                                  tb_sample_response_t **out);

/* Decodes a result body (protobuf when proto, else JSON).  Returns 0, or
 * TB_EPROTO with err naming what was wrong (category server: the server
 * sent something unreadable), or TB_ENOMEM. */
int tb__decode_fwdbwd_output(const char *body, size_t len, int proto,
                             tb_forward_backward_output_t **out, tb_error_t *err);
int tb__decode_sample_response(const char *body, size_t len, int proto,
                               tb_sample_response_t **out, tb_error_t *err);

/* Copies decoded metrics (at least one element is allocated). */
int tb__metrics_from_wire(const tb__wire_metric_t *m, size_t n, tb_metric_t **out,
                          size_t *n_out);

#endif /* TB_CLIENT_CONVERT_H */

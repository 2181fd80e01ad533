/*
 * Protobuf bodies the wire and server tests build by hand: a
 * ForwardBackwardRequest of one datum whose tokens are one encoded_text
 * chunk and whose loss inputs are the tensors given.
 */
#ifndef TB_TEST_FIXTURES_PROTO_H
#define TB_TEST_FIXTURES_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "wire/proto.h"

/* One loss_fn_inputs entry. */
typedef struct tb_test_proto_input_s {
  const char *key;
  TinkerPublic__Tensor *tensor;
} tb_test_proto_input_t;

/* A dense tensor over len bytes of data (shape may be NULL). */
TinkerPublic__Tensor tb_test_proto_dense(const void *data, size_t len, TinkerPublic__DType dtype,
                                         const int64_t *shape, size_t n_shape);
/* The packed request, malloc'd with one spare byte; *len its size. */
uint8_t *tb_test_proto_fwdbwd(const char *model_id, int64_t seq_id, const char *loss_fn,
                              const int32_t *tokens, size_t n_tokens,
                              const tb_test_proto_input_t *inputs, size_t n_inputs, size_t *len);

#endif

/*
 * Protobuf bodies the wire and server tests build by hand: a
 * ForwardBackwardRequest of one datum whose tokens are one encoded_text
 * chunk and whose loss inputs are the tensors given; the pieces of a
 * ForwardBackwardOutput (batched tensors, fields, records).  And the
 * scratch a wire reader takes: an arena, an error and a context.
 */
#ifndef TB_TEST_FIXTURES_PROTO_H
#define TB_TEST_FIXTURES_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/json.h"
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

/* Any message m packed into a malloc'd buffer (one spare byte); *len its
 * size. */
uint8_t *tb_test_proto_pack(const ProtobufCMessage *m, size_t *len);

/* A BatchedTensor over len bytes of data cut at n_offsets byte offsets. */
TinkerPublic__BatchedTensor tb_test_proto_batched(const void *data, size_t len,
                                                  const int64_t *offsets, size_t n_offsets,
                                                  TinkerPublic__DType dtype);
/* An ArrayRecord field: key to value. */
TinkerPublic__ArrayRecord__FieldsEntry tb_test_proto_field(const char *key,
                                                           TinkerPublic__BatchedTensor *value);
/* An ArrayRecord of n fields for num_datums datums. */
TinkerPublic__ArrayRecord tb_test_proto_record(TinkerPublic__ArrayRecord__FieldsEntry **fields,
                                               size_t n, int64_t num_datums);
/* A ForwardBackwardOutput of n records (no type, no metrics). */
TinkerPublic__ForwardBackwardOutput tb_test_proto_output(TinkerPublic__ArrayRecord **records,
                                                         size_t n);

/* What a wire reader takes: the arena its values live in, and the error
 * its context fills. */
typedef struct tb_test_reader_s {
  tb__arena_t arena;
  tb_error_t err;
  tb__jctx_t ctx;
} tb_test_reader_t;

void tb_test_reader_init(tb_test_reader_t *r);
/* Frees the arena and clears the error. */
void tb_test_reader_free(tb_test_reader_t *r);

#endif

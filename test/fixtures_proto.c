/*
 * The protobuf bodies of fixtures_proto.h.
 */
#include "fixtures_proto.h"

#include <stdlib.h>
#include <string.h>

#include "tb_test.h"

TinkerPublic__Tensor tb_test_proto_dense(const void *data, size_t len, TinkerPublic__DType dtype,
                                         const int64_t *shape, size_t n_shape) {
  TinkerPublic__Tensor t = TINKER_PUBLIC__TENSOR__INIT;
  t.encoding_case = TINKER_PUBLIC__TENSOR__ENCODING_DENSE;
  t.dense.data = (uint8_t *)data;
  t.dense.len = len;
  t.dtype = dtype;
  t.n_shape = n_shape;
  t.shape = (int64_t *)shape;
  return t;
}

uint8_t *tb_test_proto_fwdbwd(const char *model_id, int64_t seq_id, const char *loss_fn,
                              const int32_t *tokens, size_t n_tokens,
                              const tb_test_proto_input_t *inputs, size_t n_inputs, size_t *len) {
  TinkerPublic__EncodedTextChunk etc = TINKER_PUBLIC__ENCODED_TEXT_CHUNK__INIT;
  etc.tokens.data = (uint8_t *)tokens;
  etc.tokens.len = n_tokens * sizeof(*tokens);
  TinkerPublic__Chunk ch = TINKER_PUBLIC__CHUNK__INIT;
  ch.chunk_case = TINKER_PUBLIC__CHUNK__CHUNK_ENCODED_TEXT;
  ch.encoded_text = &etc;
  TinkerPublic__Chunk *chs[] = { &ch };
  TinkerPublic__Datum__LossFnInputsEntry e[4], *es[4];
  ASSERT_LE(n_inputs, 4);
  for (size_t i = 0; i < n_inputs; i++) {
    tinker_public__datum__loss_fn_inputs_entry__init(&e[i]);
    e[i].key = (char *)inputs[i].key;
    e[i].value = inputs[i].tensor;
    es[i] = &e[i];
  }
  TinkerPublic__Datum datum = TINKER_PUBLIC__DATUM__INIT;
  datum.n_model_input = 1;
  datum.model_input = chs;
  datum.n_loss_fn_inputs = n_inputs;
  datum.loss_fn_inputs = es;
  TinkerPublic__Datum *ds[] = { &datum };
  TinkerPublic__ForwardBackwardRequest req = TINKER_PUBLIC__FORWARD_BACKWARD_REQUEST__INIT;
  req.model_id = (char *)model_id;
  req.seq_id = seq_id;
  req.loss_fn = (char *)loss_fn;
  req.n_data = 1;
  req.data = ds;
  return tb_test_proto_pack(&req.base, len);
}

uint8_t *tb_test_proto_pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = xmalloc(*len + 1);
  ASSERT_EQ_INT(protobuf_c_message_pack(m, buf), *len);
  return buf;
}

TinkerPublic__BatchedTensor tb_test_proto_batched(const void *data, size_t len,
                                                  const int64_t *offsets, size_t n_offsets,
                                                  TinkerPublic__DType dtype) {
  TinkerPublic__BatchedTensor bt = TINKER_PUBLIC__BATCHED_TENSOR__INIT;
  bt.data.data = (uint8_t *)data;
  bt.data.len = len;
  bt.offsets.data = (uint8_t *)offsets;
  bt.offsets.len = n_offsets * sizeof(*offsets);
  bt.dtype = dtype;
  return bt;
}

TinkerPublic__ArrayRecord__FieldsEntry tb_test_proto_field(const char *key,
                                                           TinkerPublic__BatchedTensor *value) {
  TinkerPublic__ArrayRecord__FieldsEntry e = TINKER_PUBLIC__ARRAY_RECORD__FIELDS_ENTRY__INIT;
  e.key = (char *)key;
  e.value = value;
  return e;
}

TinkerPublic__ArrayRecord tb_test_proto_record(TinkerPublic__ArrayRecord__FieldsEntry **fields,
                                               size_t n, int64_t num_datums) {
  TinkerPublic__ArrayRecord rec = TINKER_PUBLIC__ARRAY_RECORD__INIT;
  rec.n_fields = n;
  rec.fields = fields;
  rec.num_datums = num_datums;
  return rec;
}

TinkerPublic__ForwardBackwardOutput tb_test_proto_output(TinkerPublic__ArrayRecord **records,
                                                         size_t n) {
  TinkerPublic__ForwardBackwardOutput msg = TINKER_PUBLIC__FORWARD_BACKWARD_OUTPUT__INIT;
  msg.n_loss_fn_outputs = n;
  msg.loss_fn_outputs = records;
  return msg;
}

void tb_test_reader_init(tb_test_reader_t *r) {
  memset(r, 0, sizeof(*r));
  tb__arena_init(&r->arena, 0);
  tb__jctx_init(&r->ctx, &r->err);
}

void tb_test_reader_free(tb_test_reader_t *r) {
  tb__arena_free(&r->arena);
  tb_error_clear(&r->err);
}

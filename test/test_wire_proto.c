/*
 * The protobuf schema of the Tinker wire protocol (src/wire/
 * tinker_public.proto): golden bytes for small messages, so a field number
 * or type that drifts from the SDK's schema fails here, and round trips of
 * the messages the server and client exchange.
 */
#include "tb_test.h"

#include "wire/proto.h"
#include "fixtures_proto.h"

static void assert_bytes(const uint8_t *got, size_t n, const uint8_t *want,
                         size_t wn) {
  ASSERT_EQ_INT(n, wn);
  for (size_t i = 0; i < n; i++)
    if (got[i] != want[i])
      tb_test_fail(__FILE__, __LINE__, "byte %zu: 0x%02x != 0x%02x", i,
                   got[i], want[i]);
}

TEST(forward_backward_request_golden_bytes) {
  TinkerPublic__ForwardBackwardRequest req =
      TINKER_PUBLIC__FORWARD_BACKWARD_REQUEST__INIT;
  req.model_id = "m";
  req.seq_id = 1;
  req.loss_fn = "cross_entropy";
  req.forward_only = 1;
  uint8_t buf[64];
  size_t n = tinker_public__forward_backward_request__pack(&req, buf);
  /* field 1 (len) "m", field 2 (varint) 1, field 4 (len) "cross_entropy",
   * field 6 (varint) true. */
  static const uint8_t want[] = { 0x0a, 0x01, 'm', 0x10, 0x01, 0x22, 13,
    'c', 'r', 'o', 's', 's', '_', 'e', 'n', 't', 'r', 'o', 'p', 'y',
    0x30, 0x01 };
  assert_bytes(buf, n, want, sizeof(want));
}

TEST(tensor_and_chunk_golden_bytes) {
  int64_t shape[] = { 2 };
  uint8_t dense[8] = { 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40 }; /* 1.0f, 2.0f */
  TinkerPublic__Tensor t = TINKER_PUBLIC__TENSOR__INIT;
  t.encoding_case = TINKER_PUBLIC__TENSOR__ENCODING_DENSE;
  t.dense.data = dense;
  t.dense.len = sizeof(dense);
  t.dtype = TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32;
  t.n_shape = 1;
  t.shape = shape;
  uint8_t buf[64];
  size_t n = tinker_public__tensor__pack(&t, buf);
  static const uint8_t want[] = { 0x0a, 8, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40,
                                  0x18, 0x01, 0x22, 0x01, 0x02 };
  assert_bytes(buf, n, want, sizeof(want));

  /* An optional written as a one-field oneof is presence-tracked exactly
   * like proto3 `optional`: field 3 appears only when set. */
  TinkerPublic__ImageChunk img = TINKER_PUBLIC__IMAGE_CHUNK__INIT;
  img.format = "png";
  n = tinker_public__image_chunk__pack(&img, buf);
  static const uint8_t want_unset[] = { 0x12, 3, 'p', 'n', 'g' };
  assert_bytes(buf, n, want_unset, sizeof(want_unset));
  img._expected_tokens_case = TINKER_PUBLIC__IMAGE_CHUNK___EXPECTED_TOKENS_EXPECTED_TOKENS;
  img.expected_tokens = 0;
  n = tinker_public__image_chunk__pack(&img, buf);
  static const uint8_t want_set[] = { 0x12, 3, 'p', 'n', 'g', 0x18, 0x00 };
  assert_bytes(buf, n, want_set, sizeof(want_set));
}

TEST(forward_backward_output_round_trip) {
  float lp[3] = { -0.5f, -1.25f, -2.0f };
  int64_t offsets[3] = { 0, 8, 12 };
  TinkerPublic__BatchedTensor bt =
      tb_test_proto_batched(lp, sizeof(lp), offsets, 3, TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32);
  TinkerPublic__ArrayRecord__FieldsEntry fe = tb_test_proto_field("logprobs", &bt);
  TinkerPublic__ArrayRecord__FieldsEntry *fes[] = { &fe };
  TinkerPublic__ArrayRecord rec = tb_test_proto_record(fes, 1, 2);
  TinkerPublic__ArrayRecord *recs[] = { &rec };
  TinkerPublic__ForwardBackwardOutput__MetricsEntry me =
      TINKER_PUBLIC__FORWARD_BACKWARD_OUTPUT__METRICS_ENTRY__INIT;
  me.key = "loss:sum";
  me.value = 3.75;
  TinkerPublic__ForwardBackwardOutput__MetricsEntry *mes[] = { &me };
  TinkerPublic__ForwardBackwardOutput out = tb_test_proto_output(recs, 1);
  out.loss_fn_output_type = "ArrayRecord";
  out.n_metrics = 1;
  out.metrics = mes;

  size_t n;
  uint8_t *buf = tb_test_proto_pack(&out.base, &n);
  TinkerPublic__ForwardBackwardOutput *back =
      tinker_public__forward_backward_output__unpack(NULL, n, buf);
  ASSERT(back != NULL);
  ASSERT_STR_EQ(back->loss_fn_output_type, "ArrayRecord");
  ASSERT_EQ_INT(back->n_metrics, 1);
  ASSERT_STR_EQ(back->metrics[0]->key, "loss:sum");
  ASSERT_NEAR(back->metrics[0]->value, 3.75, 0, 0);
  ASSERT_EQ_INT(back->n_loss_fn_outputs, 1);
  TinkerPublic__ArrayRecord *r = back->loss_fn_outputs[0];
  ASSERT_EQ_INT(r->num_datums, 2);
  ASSERT_STR_EQ(r->fields[0]->key, "logprobs");
  ASSERT_EQ_INT(r->fields[0]->value->data.len, sizeof(lp));
  ASSERT_EQ_INT(memcmp(r->fields[0]->value->data.data, lp, sizeof(lp)), 0);
  tinker_public__forward_backward_output__free_unpacked(back, NULL);

  /* A truncated message is rejected, not misread. */
  ASSERT(tinker_public__forward_backward_output__unpack(NULL, n - 3, buf) == NULL);
  free(buf);
}

TEST_LIST(
  TEST_ENTRY(forward_backward_request_golden_bytes),
  TEST_ENTRY(tensor_and_chunk_golden_bytes),
  TEST_ENTRY(forward_backward_output_round_trip),
)

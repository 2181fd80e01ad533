/*
 * wire/: ForwardBackwardOutput in JSON and protobuf, both directions.
 */
#include "tb_test.h"

#include <math.h>

#include "core/arena.h"
#include "wire/datum.h"
#include "wire/output.h"
#include "wire/proto.h"
#include "fixtures_proto.h"

static float lp0[3] = { -0.5f, -1.0f, -2.5f };
static float lp1[2] = { -0.25f, -4.0f };

static tb__wire_fwdbwd_output_t sample_output(tb__wire_named_tensor_t f[2],
                                             tb__wire_datum_output_t d[2],
                                             tb__wire_metric_t m[1]) {
  memset(f, 0, 2 * sizeof(*f));
  f[0].name = "logprobs";
  f[0].tensor = (tb__wire_tensor_t){ .dtype = TB_DTYPE_FLOAT32, .ndim = 1,
                                    .shape = { 3 }, .numel = 3, .f32 = lp0 };
  f[1].name = "logprobs";
  f[1].tensor = (tb__wire_tensor_t){ .dtype = TB_DTYPE_FLOAT32, .ndim = 1,
                                    .shape = { 2 }, .numel = 2, .f32 = lp1 };
  d[0] = (tb__wire_datum_output_t){ &f[0], 1 };
  d[1] = (tb__wire_datum_output_t){ &f[1], 1 };
  m[0] = (tb__wire_metric_t){ "loss:sum", 8.25 };
  return (tb__wire_fwdbwd_output_t){ "ArrayRecord", d, 2, m, 1 };
}

static void assert_same(const tb__wire_fwdbwd_output_t *got) {
  ASSERT_STR_EQ(got->loss_fn_output_type, "ArrayRecord");
  ASSERT_EQ_INT(got->n_outputs, 2);
  ASSERT_EQ_INT(got->outputs[0].n_fields, 1);
  ASSERT_STR_EQ(got->outputs[0].fields[0].name, "logprobs");
  const tb__wire_tensor_t *t0 = &got->outputs[0].fields[0].tensor;
  const tb__wire_tensor_t *t1 = &got->outputs[1].fields[0].tensor;
  ASSERT_EQ_INT(t0->dtype, TB_DTYPE_FLOAT32);
  ASSERT_EQ_INT(t0->ndim, 1);
  ASSERT_EQ_INT(t0->shape[0], 3);
  ASSERT_EQ_INT(t1->shape[0], 2);
  for (int i = 0; i < 3; i++)
    ASSERT_NEAR(t0->f32[i], lp0[i], 0, 0);
  for (int i = 0; i < 2; i++)
    ASSERT_NEAR(t1->f32[i], lp1[i], 0, 0);
  ASSERT_EQ_INT(got->n_metrics, 1);
  ASSERT_STR_EQ(got->metrics[0].name, "loss:sum");
  ASSERT_NEAR(got->metrics[0].value, 8.25, 0, 0);
}

/* Reads the n bytes of buf as a ForwardBackwardOutput into o. */
static int read_proto(tb_test_reader_t *rd, const uint8_t *buf, size_t n,
                      tb__wire_fwdbwd_output_t *o) {
  return tb__wire_fwdbwd_output_from_proto(&rd->ctx, &rd->arena,
                                           (tb_slice_t){ (char *)buf, n }, o);
}

/* A ForwardBackwardOutput of one record, the n fields es for num_datums
 * datums, packed and read into o with rd (initialised here); the
 * reader's status. */
static int read_one_record(tb_test_reader_t *rd, TinkerPublic__ArrayRecord__FieldsEntry **es,
                           size_t n, int64_t num_datums, tb__wire_fwdbwd_output_t *o) {
  TinkerPublic__ArrayRecord rec = tb_test_proto_record(es, n, num_datums);
  TinkerPublic__ArrayRecord *recs[] = { &rec };
  TinkerPublic__ForwardBackwardOutput msg = tb_test_proto_output(recs, 1);
  uint8_t buf[256];
  ASSERT_LE(tinker_public__forward_backward_output__get_packed_size(&msg), sizeof(buf));
  size_t len = tinker_public__forward_backward_output__pack(&msg, buf);
  tb_test_reader_init(rd);
  return read_proto(rd, buf, len, o);
}

TEST(json_round_trip) {
  tb__wire_named_tensor_t f[2];
  tb__wire_datum_output_t d[2];
  tb__wire_metric_t m[1];
  tb__wire_fwdbwd_output_t o = sample_output(f, d, m);
  json_t *j = tb__wire_fwdbwd_output_to_json(&o);
  ASSERT(j != NULL);
  char *text = tb__json_dump(j, NULL);
  ASSERT_STR_EQ(text,
    "{\"loss_fn_output_type\":\"ArrayRecord\",\"loss_fn_outputs\":["
    "{\"logprobs\":{\"data\":[-0.5,-1.0,-2.5],\"dtype\":\"float32\",\"shape\":[3]}},"
    "{\"logprobs\":{\"data\":[-0.25,-4.0],\"dtype\":\"float32\",\"shape\":[2]}}],"
    "\"metrics\":{\"loss:sum\":8.25}}");
  free(text);

  tb_test_reader_t rd;
  tb_test_reader_init(&rd);
  tb__wire_fwdbwd_output_t back;
  ASSERT_OK(tb__wire_fwdbwd_output_from_json(&rd.ctx, &rd.arena, j, &back));
  assert_same(&back);
  json_decref(j);

  /* metrics are required by the SDK's model */
  json_t *bad = json_pack("{s:[]}", "loss_fn_outputs");
  ASSERT_ERR(tb__wire_fwdbwd_output_from_json(&rd.ctx, &rd.arena, bad, &back), TB_EFIELD);
  ASSERT_STR_EQ(rd.err.message, "metrics: required field is missing");
  json_decref(bad);

  /* a NaN travels as null and comes back as a missing (NaN) value */
  float nan_lp[1] = { NAN };
  f[0].tensor.f32 = nan_lp;
  f[0].tensor.numel = 1;
  f[0].tensor.shape[0] = 1;
  j = tb__wire_fwdbwd_output_to_json(&o);
  ASSERT(j != NULL);
  ASSERT(json_is_null(json_array_get(json_object_get(json_object_get(
      json_array_get(json_object_get(j, "loss_fn_outputs"), 0), "logprobs"), "data"), 0)));
  json_decref(j);
  tb_test_reader_free(&rd);
}

TEST(proto_round_trip_and_layout) {
  tb__wire_named_tensor_t f[2];
  tb__wire_datum_output_t d[2];
  tb__wire_metric_t m[1];
  tb__wire_fwdbwd_output_t o = sample_output(f, d, m);
  tb__buf_t buf = TB_BUF_INIT;
  ASSERT_OK(tb__wire_fwdbwd_output_to_proto(&o, &buf));

  /* The SDK's reading: one record, byte offsets 0, 12, 20. */
  TinkerPublic__ForwardBackwardOutput *msg =
      tinker_public__forward_backward_output__unpack(NULL, buf.len, (uint8_t *)buf.base);
  ASSERT(msg != NULL);
  ASSERT_EQ_INT(msg->n_loss_fn_outputs, 1);
  ASSERT_EQ_INT(msg->loss_fn_outputs[0]->num_datums, 2);
  const TinkerPublic__BatchedTensor *bt = msg->loss_fn_outputs[0]->fields[0]->value;
  static const uint8_t offsets[24] = { 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0,
                                       20, 0, 0, 0, 0, 0, 0, 0 };
  ASSERT_EQ_INT(bt->offsets.len, 24);
  ASSERT_EQ_INT(memcmp(bt->offsets.data, offsets, 24), 0);
  static const uint8_t minus_half[4] = { 0, 0, 0, 0xbf }; /* -0.5f little-endian */
  ASSERT_EQ_INT(memcmp(bt->data.data, minus_half, 4), 0);
  ASSERT_EQ_INT(bt->dtype, TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32);
  tinker_public__forward_backward_output__free_unpacked(msg, NULL);

  tb_test_reader_t rd;
  tb_test_reader_init(&rd);
  tb__wire_fwdbwd_output_t back;
  ASSERT_OK(tb__wire_fwdbwd_output_from_proto(&rd.ctx, &rd.arena, tb__buf_slice(&buf), &back));
  assert_same(&back);

  /* Datums whose fields differ cannot share a record. */
  f[1].tensor.dtype = TB_DTYPE_INT64;
  tb__buf_reset(&buf);
  ASSERT_ERR(tb__wire_fwdbwd_output_to_proto(&o, &buf), TB_EINVAL);
  tb__buf_free(&buf);
  tb_test_reader_free(&rd);
}

TEST(proto_decode_widens_and_rejects_bad_offsets) {
  /* (2, 2) int32 tensor for one datum, and a bf16 one. */
  int32_t ids[4] = { 1, 2, 3, -4 };
  int64_t offs[2] = { 0, 16 };
  int64_t trailing[1] = { 2 };
  TinkerPublic__BatchedTensor bt =
      tb_test_proto_batched(ids, sizeof(ids), offs, 2, TINKER_PUBLIC__DTYPE__DTYPE_INT32);
  bt.n_trailing_shape = 1;
  bt.trailing_shape = trailing;
  uint16_t bf[2] = { 0x3f80, 0xc000 }; /* 1.0, -2.0 */
  int64_t offs2[2] = { 0, 4 };
  TinkerPublic__BatchedTensor bt2 =
      tb_test_proto_batched(bf, sizeof(bf), offs2, 2, TINKER_PUBLIC__DTYPE__DTYPE_BFLOAT16);
  TinkerPublic__ArrayRecord__FieldsEntry e1 = tb_test_proto_field("ids", &bt);
  TinkerPublic__ArrayRecord__FieldsEntry e2 = tb_test_proto_field("lp", &bt2);
  TinkerPublic__ArrayRecord__FieldsEntry *es[] = { &e1, &e2 };
  tb_test_reader_t rd;
  tb__wire_fwdbwd_output_t o;
  /* num_datums 0: derived from the offsets */
  ASSERT_OK(read_one_record(&rd, es, 2, 0, &o));
  ASSERT_STR_EQ(o.loss_fn_output_type, "ArrayRecord");
  ASSERT_EQ_INT(o.n_outputs, 1);
  const tb__wire_tensor_t *t = &o.outputs[0].fields[0].tensor;
  ASSERT_EQ_INT(t->dtype, TB_DTYPE_INT64);
  ASSERT_EQ_INT(t->ndim, 2);
  ASSERT_EQ_INT(t->shape[0], 2);
  ASSERT_EQ_INT(t->shape[1], 2);
  ASSERT_EQ_INT(t->i64[3], -4);
  t = &o.outputs[0].fields[1].tensor;
  ASSERT_EQ_INT(t->dtype, TB_DTYPE_FLOAT32);
  ASSERT_NEAR(t->f32[1], -2.0, 0, 0);

  tb_test_reader_free(&rd);

  offs[1] = 17; /* past the data and not a whole element */
  ASSERT_ERR(read_one_record(&rd, es, 2, 0, &o), TB_EFIELD);
  ASSERT_STR_CONTAINS(rd.err.message, "loss_fn_outputs[0].ids: offsets[0]: [0, 17)");
  tb_test_reader_free(&rd);
}

/* A count on the wire is checked against the bytes that back it: an
 * answer of a few bytes declaring 2^24 datums in each of its records
 * made the client allocate gigabytes of empty outputs. */
TEST(proto_decode_checks_declared_datums) {
  TinkerPublic__ArrayRecord rec = tb_test_proto_record(NULL, 0, 1 << 24);
  TinkerPublic__ArrayRecord *recs[64];
  for (int i = 0; i < 64; i++)
    recs[i] = &rec;
  TinkerPublic__ForwardBackwardOutput msg = tb_test_proto_output(recs, 64);
  uint8_t buf[1024];
  size_t n = tinker_public__forward_backward_output__pack(&msg, buf);
  ASSERT_LT(n, 512);
  tb_test_reader_t rd;
  tb_test_reader_init(&rd);
  tb__wire_fwdbwd_output_t o;
  ASSERT_ERR(read_proto(&rd, buf, n, &o), TB_EFIELD);
  ASSERT_STR_CONTAINS(rd.err.message, "loss_fn_outputs[0]: 16777216 datums in an answer of");
  ASSERT_LT(rd.arena.total, 1 << 20);
  /* As many datums as the record has (empty), it decodes. */
  rec.num_datums = 3;
  msg.n_loss_fn_outputs = 1;
  n = tinker_public__forward_backward_output__pack(&msg, buf);
  ASSERT_OK(read_proto(&rd, buf, n, &o));
  ASSERT_EQ_INT(o.n_outputs, 3);
  tb_test_reader_free(&rd);
}

/* A protobuf map may carry a key twice; the last value is the one (the
 * protobuf rule): a metric, and a field of an ArrayRecord, are then read
 * once, as the JSON form (which cannot repeat a key) would carry them. */
TEST(proto_repeated_map_keys_take_the_last_value) {
  float first[2] = { -1, -2 }, last[2] = { -3, -4 };
  int64_t offs[2] = { 0, 8 };
  TinkerPublic__BatchedTensor b1 =
      tb_test_proto_batched(first, sizeof(first), offs, 2, TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32);
  TinkerPublic__BatchedTensor b2 = b1;
  b2.data.data = (uint8_t *)last;
  TinkerPublic__ArrayRecord__FieldsEntry e1 = tb_test_proto_field("logprobs", &b1);
  TinkerPublic__ArrayRecord__FieldsEntry e2 = tb_test_proto_field("logprobs", &b2);
  TinkerPublic__ArrayRecord__FieldsEntry *es[] = { &e1, &e2 };
  TinkerPublic__ArrayRecord rec = tb_test_proto_record(es, 2, 1);
  TinkerPublic__ArrayRecord *recs[] = { &rec };
  TinkerPublic__ForwardBackwardOutput__MetricsEntry m1 =
      TINKER_PUBLIC__FORWARD_BACKWARD_OUTPUT__METRICS_ENTRY__INIT;
  TinkerPublic__ForwardBackwardOutput__MetricsEntry m2 = m1, m3 = m1;
  m1.key = m3.key = "loss:sum";
  m1.value = 1;
  m2.key = "tokens:sum";
  m2.value = 3;
  m3.value = 2;
  TinkerPublic__ForwardBackwardOutput__MetricsEntry *ms[] = { &m1, &m2, &m3 };
  TinkerPublic__ForwardBackwardOutput msg = tb_test_proto_output(recs, 1);
  msg.n_metrics = 3;
  msg.metrics = ms;
  uint8_t buf[256];
  size_t n = tinker_public__forward_backward_output__pack(&msg, buf);

  tb_test_reader_t rd;
  tb_test_reader_init(&rd);
  tb__wire_fwdbwd_output_t o;
  ASSERT_OK(read_proto(&rd, buf, n, &o));
  ASSERT_EQ_INT(o.n_outputs, 1);
  ASSERT_EQ_INT(o.outputs[0].n_fields, 1);
  ASSERT_STR_EQ(o.outputs[0].fields[0].name, "logprobs");
  ASSERT_NEAR(o.outputs[0].fields[0].tensor.f32[1], -4.0, 0, 0);
  ASSERT_EQ_INT(o.n_metrics, 2);
  ASSERT_STR_EQ(o.metrics[0].name, "tokens:sum");
  ASSERT_NEAR(o.metrics[0].value, 3.0, 0, 0);
  ASSERT_STR_EQ(o.metrics[1].name, "loss:sum");
  ASSERT_NEAR(o.metrics[1].value, 2.0, 0, 0);
  tb_test_reader_free(&rd);
}

/* What the encoder writes for a value JSON cannot carry (null for a NaN
 * or infinite log-prob or metric, as a diverged loss gives) decodes again,
 * as NaN: a JSON client can read every result the server sends. */
TEST(json_null_reads_back_as_nan) {
  tb__wire_named_tensor_t f[2];
  tb__wire_datum_output_t d[2];
  tb__wire_metric_t m[1];
  tb__wire_fwdbwd_output_t o = sample_output(f, d, m);
  float lp[3] = { -1.0f, -INFINITY, NAN };
  f[0].tensor.f32 = lp;
  m[0].value = NAN;
  json_t *j = tb__wire_fwdbwd_output_to_json(&o);
  ASSERT(j != NULL);
  char *text = tb__json_dump(j, NULL);
  json_decref(j);
  ASSERT_STR_CONTAINS(text, "[-1.0,null,null]");
  ASSERT_STR_CONTAINS(text, "\"loss:sum\":null");
  tb_test_reader_t rd;
  tb_test_reader_init(&rd);
  json_t *doc;
  ASSERT_OK(tb__json_parse((tb_slice_t){ text, strlen(text) }, &doc, &rd.err));
  tb__wire_fwdbwd_output_t back;
  ASSERT_OK(tb__wire_fwdbwd_output_from_json(&rd.ctx, &rd.arena, doc, &back));
  const tb__wire_tensor_t *t = &back.outputs[0].fields[0].tensor;
  ASSERT_EQ_INT(t->numel, 3);
  ASSERT_NEAR(t->f32[0], -1.0, 0, 0);
  ASSERT(isnan(t->f32[1]) && isnan(t->f32[2]));
  ASSERT(isnan(back.metrics[0].value));
  /* Requests stay strict: a null weight is refused. */
  json_t *req = json_pack("{s:[n]}", "weights");
  tb__wire_tensor_t w;
  ASSERT_ERR(tb__wire_tensor_from_json(&rd.ctx, &rd.arena, "weights",
                                       json_object_get(req, "weights"),
                                       (size_t)1 << 20, &w),
             TB_EFIELD);
  json_decref(req);
  json_decref(doc);
  free(text);
  tb_test_reader_free(&rd);
}

/* jansson's allocations, counted, to see that a failed encoding leaves
 * nothing behind. */
static long live_json;

static void *counting_malloc(size_t n) {
  void *p = malloc(n);
  live_json += p != NULL;
  return p;
}

static void counting_free(void *p) {
  live_json -= p != NULL;
  free(p);
}

/* A loss_fn_output_type that is no UTF-8 (a result decoded from protobuf
 * may carry one) cannot be encoded as JSON: the encoder says so and
 * releases what it built. */
TEST(json_encode_failure_leaks_nothing) {
  tb__wire_named_tensor_t f[2];
  tb__wire_datum_output_t d[2];
  tb__wire_metric_t m[1];
  tb__wire_fwdbwd_output_t o = sample_output(f, d, m);
  o.loss_fn_output_type = "Array\xffRecord";
  json_set_alloc_funcs(counting_malloc, counting_free);
  json_t *j = tb__wire_fwdbwd_output_to_json(&o);
  json_set_alloc_funcs(malloc, free);
  ASSERT(j == NULL);
  ASSERT_EQ_INT(live_json, 0);
}

/* A field whose data bytes are empty (absent on the wire, so protobuf-c
 * leaves no buffer) holds empty tensors: no pointer arithmetic on the
 * missing buffer (undefined behaviour, which UBSan reports). */
TEST(proto_empty_field_decodes_to_empty_tensors) {
  int64_t offs[3] = { 0, 0, 0 };
  TinkerPublic__BatchedTensor bt =
      tb_test_proto_batched(NULL, 0, offs, 3, TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32);
  TinkerPublic__ArrayRecord__FieldsEntry e = tb_test_proto_field("logprobs", &bt);
  TinkerPublic__ArrayRecord__FieldsEntry *es[] = { &e };
  tb_test_reader_t rd;
  tb__wire_fwdbwd_output_t o;
  ASSERT_OK(read_one_record(&rd, es, 1, 2, &o));
  ASSERT_EQ_INT(o.n_outputs, 2);
  ASSERT_EQ_INT(o.outputs[1].fields[0].tensor.numel, 0);
  tb_test_reader_free(&rd);
}

/* A trailing shape whose product does not fit a size_t is refused, not
 * wrapped to zero (and then divided by). */
TEST(proto_trailing_shape_overflow_is_refused) {
  int64_t offs[2] = { 0, 0 };
  int64_t trailing[2] = { (int64_t)1 << 32, (int64_t)1 << 32 };
  TinkerPublic__BatchedTensor bt =
      tb_test_proto_batched(NULL, 0, offs, 2, TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32);
  bt.n_trailing_shape = 2;
  bt.trailing_shape = trailing;
  TinkerPublic__ArrayRecord__FieldsEntry e = tb_test_proto_field("logprobs", &bt);
  TinkerPublic__ArrayRecord__FieldsEntry *es[] = { &e };
  tb_test_reader_t rd;
  tb__wire_fwdbwd_output_t o;
  ASSERT_ERR(read_one_record(&rd, es, 1, 1, &o), TB_EFIELD);
  ASSERT_STR_CONTAINS(rd.err.message, "loss_fn_outputs[0].logprobs: trailing_shape");
  tb_test_reader_free(&rd);
}

TEST_LIST(
  TEST_ENTRY(json_round_trip),
  TEST_ENTRY(proto_round_trip_and_layout),
  TEST_ENTRY(proto_decode_widens_and_rejects_bad_offsets),
  TEST_ENTRY(proto_decode_checks_declared_datums),
  TEST_ENTRY(proto_repeated_map_keys_take_the_last_value),
  TEST_ENTRY(json_null_reads_back_as_nan),
  TEST_ENTRY(json_encode_failure_leaks_nothing),
  TEST_ENTRY(proto_empty_field_decodes_to_empty_tensors),
  TEST_ENTRY(proto_trailing_shape_overflow_is_refused),
)

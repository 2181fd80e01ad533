/*
 * wire/: decoding forward_backward requests from JSON (SDK 0.24) and from
 * protobuf (SDK 0.25) into the same structs, with path errors.
 */
#include "tb_test.h"

#include "core/arena.h"
#include "wire/datum.h"
#include "wire/proto.h"
#include "fixtures_proto.h"

/* What a decoded tensor may take here: the server's default max body. */
#define LIMIT ((size_t)64 << 20)

typedef struct {
  tb_test_reader_t rd;
  json_t *doc;
  tb__wire_fwdbwd_t req;
} fixture_t;

static int decode_json(fixture_t *f, const char *text, const char *key) {
  tb_test_reader_init(&f->rd);
  ASSERT_OK(tb__json_parse((tb_slice_t){ text, strlen(text) }, &f->doc, &f->rd.err));
  return tb__wire_fwdbwd_request_from_json(&f->rd.ctx, &f->rd.arena, f->doc, key, LIMIT,
                                           &f->req);
}

static void fixture_free(fixture_t *f) {
  json_decref(f->doc);
  tb_test_reader_free(&f->rd);
}

/* Reads the n bytes of buf as a protobuf ForwardBackwardRequest into out. */
static int read_request(tb_test_reader_t *rd, const uint8_t *buf, size_t n,
                        tb__wire_fwdbwd_t *out) {
  return tb__wire_fwdbwd_request_from_proto(&rd->ctx, &rd->arena,
                                            (tb_slice_t){ (const char *)buf, n }, LIMIT, out);
}

TEST(json_request_decodes) {
  fixture_t f;
  ASSERT_OK(decode_json(&f,
    "{\"model_id\":\"m1\",\"seq_id\":4,\"forward_backward_input\":{"
    "\"loss_fn\":\"ppo\",\"loss_fn_config\":{\"clip_low_threshold\":0.9},"
    "\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]},"
    "{\"tokens\":[3]}]},\"loss_fn_inputs\":{"
    "\"target_tokens\":{\"data\":[2,3,4],\"dtype\":\"int64\",\"shape\":[3]},"
    "\"advantages\":[0.5,-1,2]}}]}}", "forward_backward_input"));
  ASSERT_STR_EQ(f.req.model_id, "m1");
  ASSERT_EQ_INT(f.req.seq_id, 4);
  ASSERT_STR_EQ(f.req.loss_fn, "ppo");
  ASSERT_EQ_INT(f.req.forward_only, 0);
  double v;
  ASSERT_EQ_INT(tb__wire_fwdbwd_config(&f.req, "clip_low_threshold", &v), 1);
  ASSERT_NEAR(v, 0.9, 0, 0);
  ASSERT_EQ_INT(tb__wire_fwdbwd_config(&f.req, "beta", &v), 0);
  ASSERT_EQ_INT(f.req.n_data, 1);
  const tb__wire_datum_t *d = &f.req.data[0];
  ASSERT_EQ_INT(d->n_tokens, 3);
  ASSERT_EQ_INT(d->tokens[2], 3);
  const tb__wire_tensor_t *t = tb__wire_datum_input(d, "target_tokens");
  ASSERT(t != NULL);
  ASSERT_EQ_INT(t->dtype, TB_DTYPE_INT64);
  ASSERT_EQ_INT(t->i64[2], 4);
  t = tb__wire_datum_input(d, "advantages");
  ASSERT(t != NULL);
  ASSERT_EQ_INT(t->dtype, TB_DTYPE_FLOAT32); /* cast by key name */
  ASSERT_NEAR(t->f32[1], -1.0, 0, 0);
  ASSERT(tb__wire_datum_input(d, "weights") == NULL);
  fixture_free(&f);

  ASSERT_OK(decode_json(&f, "{\"forward_input\":{\"loss_fn\":\"cross_entropy\","
                        "\"data\":[]}}", "forward_input"));
  ASSERT_EQ_INT(f.req.forward_only, 1);
  ASSERT_EQ_INT(f.req.seq_id, -1);
  ASSERT(f.req.model_id == NULL);
  fixture_free(&f);
}

TEST(json_sparse_csr_expands) {
  fixture_t f;
  /* [[0, 5], [7, 0], [0, 0]] */
  ASSERT_OK(decode_json(&f,
    "{\"forward_backward_input\":{\"loss_fn\":\"cross_entropy\",\"data\":[{"
    "\"model_input\":{\"chunks\":[]},\"loss_fn_inputs\":{\"weights\":{"
    "\"data\":[5,7],\"dtype\":\"float32\",\"shape\":[3,2],"
    "\"sparse_crow_indices\":[0,1,2,2],\"sparse_col_indices\":[1,0]}}}]}}",
    "forward_backward_input"));
  const tb__wire_tensor_t *t = tb__wire_datum_input(&f.req.data[0], "weights");
  ASSERT_EQ_INT(t->numel, 6);
  float want[6] = { 0, 5, 7, 0, 0, 0 };
  for (int i = 0; i < 6; i++)
    ASSERT_NEAR(t->f32[i], want[i], 0, 0);
  fixture_free(&f);
}

static void expect_error(const char *text, const char *message) {
  fixture_t f;
  ASSERT_ERR(decode_json(&f, text, "forward_backward_input"), TB_EFIELD);
  ASSERT_STR_EQ(f.rd.err.message, message);
  ASSERT_EQ_INT(f.rd.err.category, TB_CATEGORY_USER);
  fixture_free(&f);
}

#define DATUM(inputs) \
  "{\"forward_backward_input\":{\"loss_fn\":\"cross_entropy\",\"data\":[{" \
  "\"model_input\":{\"chunks\":[{\"tokens\":[1,2]}]},\"loss_fn_inputs\":{" inputs "}}]}}"

TEST(json_errors_name_the_field) {
  expect_error("{}", "forward_backward_input: required field is missing");
  expect_error("{\"forward_backward_input\":{\"loss_fn\":\"x\",\"data\":[1]}}",
               "forward_backward_input.data[0]: expected an object, got an integer");
  expect_error(DATUM("\"weights\":{\"data\":[1,\"a\"],\"dtype\":\"float32\"}"),
               "forward_backward_input.data[0].loss_fn_inputs.weights.data[1]: "
               "expected a number, got a string");
  expect_error(DATUM("\"weights\":{\"data\":[1,2],\"dtype\":\"float16\"}"),
               "forward_backward_input.data[0].loss_fn_inputs.weights.dtype: "
               "expected \"float32\" or \"int64\", got \"float16\"");
  expect_error(DATUM("\"weights\":{\"data\":[1,2,3],\"dtype\":\"float32\",\"shape\":[2]}"),
               "forward_backward_input.data[0].loss_fn_inputs.weights: "
               "data has 3 elements but the shape holds 2");
  expect_error(DATUM("\"mystery\":[1,2]"),
               "forward_backward_input.data[0].loss_fn_inputs.mystery: a plain list "
               "needs a known key to infer its dtype; send TensorData "
               "{\"data\", \"dtype\"} instead");
  expect_error(DATUM("\"target_tokens\":{\"data\":[1.5],\"dtype\":\"int64\"}"),
               "forward_backward_input.data[0].loss_fn_inputs.target_tokens.data[0]: "
               "expected an integer, got 1.5");
  expect_error("{\"forward_backward_input\":{\"loss_fn\":\"cross_entropy\",\"data\":[{"
               "\"model_input\":{\"chunks\":[{\"type\":\"image\",\"data\":\"AA==\"}]}}]}}",
               "forward_backward_input.data[0].model_input.chunks[0]: image chunks are "
               "not supported: this server's models read text tokens only");
  expect_error("{\"forward_backward_input\":{\"loss_fn\":\"cross_entropy\",\"data\":[{"
               "\"model_input\":{\"chunks\":[{\"tokens\":[1,-2]}]}}]}}",
               "forward_backward_input.data[0].model_input.chunks[0].tokens[1]: "
               "-2 is out of range [0, 2147483647]");
  expect_error(DATUM("\"weights\":{\"data\":[1],\"dtype\":\"float32\",\"shape\":[2,2],"
                     "\"sparse_crow_indices\":[0,1,1],\"sparse_col_indices\":[5]}"),
               "forward_backward_input.data[0].loss_fn_inputs.weights: "
               "sparse_col_indices[0]: 5 is outside [0, 2)");
}

TEST(proto_request_decodes_like_json) {
  int32_t toks[3] = { 7, 8, 9 };
  float w[3] = { 0, 1, 1 };
  int64_t tgt[3] = { 8, 9, 10 };
  int64_t shape[1] = { 3 };
  TinkerPublic__Tensor tw =
      tb_test_proto_dense(w, sizeof(w), TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32, shape, 1);
  TinkerPublic__Tensor tt =
      tb_test_proto_dense(tgt, sizeof(tgt), TINKER_PUBLIC__DTYPE__DTYPE_INT64, NULL, 0);
  tb_test_proto_input_t in[] = { { "weights", &tw }, { "target_tokens", &tt } };
  size_t n;
  uint8_t *buf = tb_test_proto_fwdbwd("m2", 3, "cross_entropy", toks, 3, in, 2, &n);

  tb_test_reader_t rd;
  tb_test_reader_init(&rd);
  tb__wire_fwdbwd_t out;
  ASSERT_OK(read_request(&rd, buf, n, &out));
  ASSERT_STR_EQ(out.model_id, "m2");
  ASSERT_EQ_INT(out.seq_id, 3);
  ASSERT_EQ_INT(out.data[0].n_tokens, 3);
  ASSERT_EQ_INT(out.data[0].tokens[1], 8);
  const tb__wire_tensor_t *t = tb__wire_datum_input(&out.data[0], "target_tokens");
  ASSERT_EQ_INT(t->ndim, 1);
  ASSERT_EQ_INT(t->shape[0], 3); /* no shape: read as 1-D */
  ASSERT_EQ_INT(t->i64[2], 10);
  t = tb__wire_datum_input(&out.data[0], "weights");
  ASSERT_NEAR(t->f32[1], 1.0, 0, 0);

  /* A dense tensor whose bytes do not match its dtype is a user error. */
  tw.dense.len = 5;
  free(buf);
  buf = tb_test_proto_fwdbwd("m2", 3, "cross_entropy", toks, 3, in, 2, &n);
  ASSERT_ERR(read_request(&rd, buf, n, &out),
             TB_EFIELD);
  ASSERT_STR_EQ(rd.err.message, "data[0].loss_fn_inputs.weights: data: 5 bytes is not a "
                "whole number of 4-byte elements");
  /* Garbage is rejected. */
  ASSERT_ERR(read_request(&rd, (const uint8_t *)"\xff\xff\xff", 3, &out),
             TB_EFIELD);
  ASSERT_STR_CONTAINS(rd.err.message, "not a valid protobuf");
  free(buf);
  tb_test_reader_free(&rd);
}

/* A protobuf request of one datum whose target_tokens tensor declares
 * `shape` (n_shape dimensions) over n_vals int64 values, dense or as CSR
 * (one value per row); packed into buf, its length returned. */
static size_t lying_proto(uint8_t *buf, size_t cap, const int64_t *shape, size_t n_shape,
                          size_t n_vals, int sparse) {
  static int32_t toks[1] = { 1 };
  static int64_t vals[4] = { 2, 2, 2, 2 }, crow[2] = { 0, 1 }, col[1] = { 0 };
  TinkerPublic__Tensor tt = TINKER_PUBLIC__TENSOR__INIT;
  TinkerPublic__SparseCsr csr = TINKER_PUBLIC__SPARSE_CSR__INIT;
  tt.dtype = TINKER_PUBLIC__DTYPE__DTYPE_INT64;
  tt.n_shape = n_shape;
  tt.shape = (int64_t *)shape;
  if (sparse) {
    csr.values.data = (uint8_t *)vals;
    csr.values.len = n_vals * 8;
    csr.crow_indices.data = (uint8_t *)crow;
    csr.crow_indices.len = sizeof(crow);
    csr.col_indices.data = (uint8_t *)col;
    csr.col_indices.len = sizeof(col);
    tt.encoding_case = TINKER_PUBLIC__TENSOR__ENCODING_SPARSE_CSR;
    tt.sparse_csr = &csr;
  } else {
    tt.encoding_case = TINKER_PUBLIC__TENSOR__ENCODING_DENSE;
    tt.dense.data = (uint8_t *)vals;
    tt.dense.len = n_vals * 8;
  }
  tb_test_proto_input_t in[] = { { "target_tokens", &tt } };
  size_t n;
  uint8_t *packed = tb_test_proto_fwdbwd("m", 0, "cross_entropy", toks, 1, in, 1, &n);
  ASSERT_LE(n, cap);
  memcpy(buf, packed, n);
  free(packed);
  return n;
}

/* Decodes a protobuf body: its status, with the message in err and the
 * bytes the arena handed out in *taken. */
static int decode_proto(const uint8_t *buf, size_t n, tb_error_t *err, size_t *taken) {
  tb__arena_t arena;
  tb__arena_init(&arena, 0);
  tb__jctx_t c;
  tb__jctx_init(&c, err);
  tb__wire_fwdbwd_t out;
  int rc = tb__wire_fwdbwd_request_from_proto(&c, &arena, (tb_slice_t){ (char *)buf, n },
                                              LIMIT, &out);
  *taken = arena.total;
  tb__arena_free(&arena);
  return rc;
}

/* A size declared on the wire is checked against the bytes present (and
 * the limit) before anything is allocated from it: the bodies
 * made the server allocate and zero 1 GiB, or fail with no message. */
TEST(declared_sizes_checked_before_allocating) {
  uint8_t buf[256];
  tb_error_t err = { 0 };
  size_t taken;
  /* shape [2^27] over one value: 1 GiB of int64 before the fix. */
  int64_t s27[1] = { (int64_t)1 << 27 };
  size_t n = lying_proto(buf, sizeof(buf), s27, 1, 1, 0);
  ASSERT_ERR(decode_proto(buf, n, &err, &taken), TB_EFIELD);
  ASSERT_STR_EQ(err.message, "data[0].loss_fn_inputs.target_tokens: data has 1 elements "
                             "but the shape holds 134217728");
  ASSERT_LT(taken, 1 << 20);
  /* [2^40]: no allocation could succeed; the answer was "success". */
  int64_t s40[1] = { (int64_t)1 << 40 };
  n = lying_proto(buf, sizeof(buf), s40, 1, 1, 0);
  ASSERT_ERR(decode_proto(buf, n, &err, &taken), TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "but the shape holds 1099511627776");
  ASSERT_LT(taken, 1 << 20);
  /* Sparse: one stored value of a [1, 2^27] tensor is legal CSR, but its
   * dense form (1 GiB) is more than a request may take. */
  int64_t sp[2] = { 1, (int64_t)1 << 27 };
  n = lying_proto(buf, sizeof(buf), sp, 2, 1, 1);
  ASSERT_ERR(decode_proto(buf, n, &err, &taken), TB_EFIELD);
  ASSERT_STR_EQ(err.message, "data[0].loss_fn_inputs.target_tokens: shape [1, 134217728]: "
                             "134217728 elements of 8 bytes, more than the 67108864 bytes "
                             "a tensor of a request may take");
  ASSERT_LT(taken, 1 << 20);
  /* Within the limit, the same sparse tensor decodes. */
  int64_t ok[2] = { 1, 1000 };
  n = lying_proto(buf, sizeof(buf), ok, 2, 1, 1);
  ASSERT_OK(decode_proto(buf, n, &err, &taken));
  tb_error_clear(&err);

  /* The JSON sparse path. */
  fixture_t f;
  ASSERT_ERR(decode_json(&f, DATUM("\"target_tokens\":{\"data\":[5],\"dtype\":\"int64\","
                                   "\"shape\":[1,2147483647],\"sparse_crow_indices\":[0,1],"
                                   "\"sparse_col_indices\":[0]}"),
                         "forward_backward_input"),
             TB_EFIELD);
  ASSERT_STR_EQ(f.rd.err.message, "forward_backward_input.data[0].loss_fn_inputs.target_tokens: "
                               "shape [1, 2147483647]: 2147483647 elements of 8 bytes, more "
                               "than the 67108864 bytes a tensor of a request may take");
  ASSERT_LT(f.rd.arena.total, 1 << 20);
  fixture_free(&f);
  ASSERT_ERR(decode_json(&f, DATUM("\"weights\":{\"data\":[5],\"dtype\":\"float32\","
                                   "\"shape\":[65536,65536],\"sparse_crow_indices\":[0,1],"
                                   "\"sparse_col_indices\":[0]}"),
                         "forward_backward_input"),
             TB_EFIELD);
  ASSERT_STR_CONTAINS(f.rd.err.message, "more than the 67108864 bytes");
  ASSERT_LT(f.rd.arena.total, 1 << 20);
  fixture_free(&f);
}

/* A protobuf map may carry a key twice; the last value is the one (the
 * protobuf rule), for the loss inputs of a datum and for loss_fn_config,
 * so that the server reads what any other protobuf reader would. */
TEST(proto_repeated_map_keys_take_the_last_value) {
  int32_t toks[2] = { 7, 8 };
  float w_first[2] = { 0, 0 }, w_last[2] = { 1, 0.5f };
  TinkerPublic__EncodedTextChunk etc = TINKER_PUBLIC__ENCODED_TEXT_CHUNK__INIT;
  etc.tokens.data = (uint8_t *)toks;
  etc.tokens.len = sizeof(toks);
  TinkerPublic__Chunk ch = TINKER_PUBLIC__CHUNK__INIT;
  ch.chunk_case = TINKER_PUBLIC__CHUNK__CHUNK_ENCODED_TEXT;
  ch.encoded_text = &etc;
  TinkerPublic__Chunk *chs[] = { &ch };
  TinkerPublic__Tensor t1 = TINKER_PUBLIC__TENSOR__INIT, t2 = TINKER_PUBLIC__TENSOR__INIT;
  t1.encoding_case = t2.encoding_case = TINKER_PUBLIC__TENSOR__ENCODING_DENSE;
  t1.dtype = t2.dtype = TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32;
  t1.dense.data = (uint8_t *)w_first;
  t1.dense.len = sizeof(w_first);
  t2.dense.data = (uint8_t *)w_last;
  t2.dense.len = sizeof(w_last);
  TinkerPublic__Datum__LossFnInputsEntry e1 = TINKER_PUBLIC__DATUM__LOSS_FN_INPUTS_ENTRY__INIT;
  TinkerPublic__Datum__LossFnInputsEntry e2 = TINKER_PUBLIC__DATUM__LOSS_FN_INPUTS_ENTRY__INIT;
  e1.key = e2.key = "weights";
  e1.value = &t1;
  e2.value = &t2;
  TinkerPublic__Datum__LossFnInputsEntry *es[] = { &e1, &e2 };
  TinkerPublic__Datum datum = TINKER_PUBLIC__DATUM__INIT;
  datum.n_model_input = 1;
  datum.model_input = chs;
  datum.n_loss_fn_inputs = 2;
  datum.loss_fn_inputs = es;
  TinkerPublic__Datum *ds[] = { &datum };
  TinkerPublic__ForwardBackwardRequest__LossFnConfigEntry c1 =
      TINKER_PUBLIC__FORWARD_BACKWARD_REQUEST__LOSS_FN_CONFIG_ENTRY__INIT;
  TinkerPublic__ForwardBackwardRequest__LossFnConfigEntry c2 = c1, c3 = c1;
  c1.key = c3.key = "clip_low_threshold";
  c1.value = 0.5;
  c2.key = "clip_high_threshold";
  c2.value = 1.5;
  c3.value = 0.75;
  TinkerPublic__ForwardBackwardRequest__LossFnConfigEntry *cs[] = { &c1, &c2, &c3 };
  TinkerPublic__ForwardBackwardRequest req = TINKER_PUBLIC__FORWARD_BACKWARD_REQUEST__INIT;
  req.model_id = "m";
  req.loss_fn = "ppo";
  req.n_data = 1;
  req.data = ds;
  req.n_loss_fn_config = 3;
  req.loss_fn_config = cs;
  size_t n;
  uint8_t *buf = tb_test_proto_pack(&req.base, &n);

  tb_test_reader_t rd;
  tb_test_reader_init(&rd);
  tb__wire_fwdbwd_t out;
  ASSERT_OK(read_request(&rd, buf, n, &out));
  ASSERT_EQ_INT(out.data[0].n_inputs, 1);
  const tb__wire_tensor_t *t = tb__wire_datum_input(&out.data[0], "weights");
  ASSERT(t != NULL);
  ASSERT_NEAR(t->f32[0], 1.0, 0, 0);
  ASSERT_NEAR(t->f32[1], 0.5, 0, 0);
  ASSERT_EQ_INT(out.n_config, 2);
  double v = 0;
  ASSERT(tb__wire_fwdbwd_config(&out, "clip_low_threshold", &v));
  ASSERT_NEAR(v, 0.75, 0, 0);
  ASSERT(tb__wire_fwdbwd_config(&out, "clip_high_threshold", &v));
  ASSERT_NEAR(v, 1.5, 0, 0);
  free(buf);
  tb_test_reader_free(&rd);
}

TEST_LIST(
  TEST_ENTRY(json_request_decodes),
  TEST_ENTRY(json_sparse_csr_expands),
  TEST_ENTRY(json_errors_name_the_field),
  TEST_ENTRY(proto_request_decodes_like_json),
  TEST_ENTRY(declared_sizes_checked_before_allocating),
  TEST_ENTRY(proto_repeated_map_keys_take_the_last_value),
)

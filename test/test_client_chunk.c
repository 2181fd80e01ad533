/*
 * The client's pure parts: the data type builders, forward_backward
 * chunking and metric reduction (client/chunk.c), and the request
 * encoders (wire/encode.h) read back by the server's own decoders.
 */
#include "tb_test.h"

#include "client/chunk.h"
#include "client/convert.h"
#include "core/arena.h"
#include "core/json.h"
#include "wire/datum.h"
#include "wire/encode.h"
#include "wire/sample.h"

static void make_datum(tb_train_datum_t *d, size_t n_tokens) {
  int32_t *toks = malloc((n_tokens + 1) * sizeof(int32_t));
  for (size_t i = 0; i <= n_tokens; i++)
    toks[i] = (int32_t)(i % 200);
  memset(d, 0, sizeof(*d));
  ASSERT_OK(tb_train_datum_init_next_token(d, toks, NULL, n_tokens + 1));
  free(toks);
}

TEST(builders) {
  tb_train_datum_t d = { 0 };
  int32_t toks[] = { 5, 6, 7, 8 };
  float w[] = { 0, 0, 1, 1 };
  ASSERT_OK(tb_train_datum_init_next_token(&d, toks, w, 4));
  ASSERT_EQ_INT(tb_model_input_length(&d.model_input), 3);
  const tb_tensor_data_t *tt = tb_train_datum_input(&d, "target_tokens");
  const tb_tensor_data_t *wt = tb_train_datum_input(&d, "weights");
  ASSERT(tt != NULL && wt != NULL);
  ASSERT_EQ_INT(tt->dtype, TB_TENSOR_INT64);
  ASSERT_EQ_INT(tt->numel, 3);
  ASSERT_EQ_INT(tt->i64[0], 6);
  ASSERT_EQ_INT(tt->i64[2], 8);
  ASSERT_NEAR(wt->f32[0], 0, 0, 0);
  ASSERT_NEAR(wt->f32[2], 1, 0, 0);
  /* replacing an input keeps one entry */
  float ones[] = { 1, 1, 1 };
  ASSERT_OK(tb_train_datum_set_f32(&d, "weights", ones, 3));
  ASSERT_EQ_INT(d.n_loss_fn_inputs, 2);
  ASSERT_NEAR(tb_train_datum_input(&d, "weights")->f32[0], 1, 0, 0);
  /* bad inputs are refused and leave the datum as it was */
  float nan_v[] = { NAN };
  ASSERT_ERR(tb_train_datum_set_f32(&d, "advantages", nan_v, 1), TB_EINVAL);
  ASSERT_ERR(tb_train_datum_init_next_token(&d, toks, NULL, 1), TB_EINVAL);
  int32_t neg[] = { 1, -2 };
  ASSERT_ERR(tb_train_datum_init(&d, neg, 2), TB_EINVAL);
  ASSERT_EQ_INT(tb_model_input_length(&d.model_input), 3);
  tb_train_datum_t copy = { 0 };
  ASSERT_OK(tb_train_datum_copy(&copy, &d));
  ASSERT_EQ_INT(copy.n_loss_fn_inputs, 2);
  tb_train_datum_clear(&d);
  tb_train_datum_clear(&d);
  tb_train_datum_clear(&copy);

  tb_tensor_data_t t;
  float v6[6] = { 1, 2, 3, 4, 5, 6 };
  int64_t shape[2] = { 2, 3 }, bad[2] = { 4, 2 };
  ASSERT_OK(tb_tensor_data_init_f32(&t, v6, 6, shape, 2));
  ASSERT_EQ_INT(t.ndim, 2);
  ASSERT_EQ_INT(t.shape[1], 3);
  tb_tensor_data_clear(&t);
  ASSERT_ERR(tb_tensor_data_init_f32(&t, v6, 6, bad, 2), TB_ESHAPE);
  ASSERT_ERR(tb_tensor_data_init_f32(&t, v6, 6, shape, 5), TB_ESHAPE);

  tb_model_input_t mi = { 0 };
  ASSERT_OK(tb_model_input_init(&mi, toks, 2));
  ASSERT_OK(tb_model_input_append(&mi, toks + 2, 2));
  ASSERT_EQ_INT(mi.n_chunks, 2);
  int32_t all[4];
  tb_model_input_tokens(&mi, all);
  ASSERT_EQ_INT(all[3], 8);
  tb_model_input_clear(&mi);
}

TEST(estimate_is_the_sdks) {
  tb_train_datum_t d;
  make_datum(&d, 10);
  /* 10 tokens * 4 + target_tokens 10 * 8 + weights 10 * 4 */
  ASSERT_EQ_INT(tb__datum_estimated_bytes(&d), 40 + 80 + 40);
  tb_train_datum_clear(&d);
}

TEST(split_by_count) {
  size_t n = 2 * TB_CHUNK_MAX_LEN + 1;
  tb_train_datum_t *data = calloc(n, sizeof(*data));
  for (size_t i = 0; i < n; i++)
    make_datum(&data[i], 3);
  size_t *b, nc;
  ASSERT_OK(tb__chunk_split(data, n, TB_CHUNK_MAX_LEN, TB_CHUNK_MAX_BYTES, &b, &nc));
  ASSERT_EQ_INT(nc, 3);
  ASSERT_EQ_INT(b[0], 0);
  ASSERT_EQ_INT(b[1], 1024);
  ASSERT_EQ_INT(b[2], 2048);
  ASSERT_EQ_INT(b[3], n);
  free(b);
  /* exactly the limit is one chunk */
  ASSERT_OK(tb__chunk_split(data, 1024, TB_CHUNK_MAX_LEN, TB_CHUNK_MAX_BYTES, &b, &nc));
  ASSERT_EQ_INT(nc, 1);
  free(b);
  ASSERT_ERR(tb__chunk_split(data, 0, TB_CHUNK_MAX_LEN, TB_CHUNK_MAX_BYTES, &b, &nc), TB_EINVAL);
  for (size_t i = 0; i < n; i++)
    tb_train_datum_clear(&data[i]);
  free(data);
}

TEST(split_by_bytes) {
  /* Each datum estimates 16 bytes per token: 100 tokens = 1600 bytes. */
  tb_train_datum_t data[5];
  for (int i = 0; i < 5; i++)
    make_datum(&data[i], 100);
  ASSERT_EQ_INT(tb__datum_estimated_bytes(&data[0]), 1600);
  size_t *b, nc;
  /* 3200 holds two datums exactly; the third starts a new chunk. */
  ASSERT_OK(tb__chunk_split(data, 5, 1024, 3200, &b, &nc));
  ASSERT_EQ_INT(nc, 3);
  ASSERT_EQ_INT(b[1], 2);
  ASSERT_EQ_INT(b[2], 4);
  ASSERT_EQ_INT(b[3], 5);
  free(b);
  /* a datum over the budget gets a chunk of its own, never an empty one */
  ASSERT_OK(tb__chunk_split(data, 3, 1024, 1000, &b, &nc));
  ASSERT_EQ_INT(nc, 3);
  ASSERT_EQ_INT(b[1], 1);
  ASSERT_EQ_INT(b[2], 2);
  free(b);
  for (int i = 0; i < 5; i++)
    tb_train_datum_clear(&data[i]);

  /* The real 5,000,000 limit: 2 datums of 2,000,000 bytes fit, a third
   * does not. */
  tb_train_datum_t big[3];
  for (int i = 0; i < 3; i++)
    make_datum(&big[i], 125000);
  ASSERT_EQ_INT(tb__datum_estimated_bytes(&big[0]), 2000000);
  ASSERT_OK(tb__chunk_split(big, 3, TB_CHUNK_MAX_LEN, TB_CHUNK_MAX_BYTES, &b, &nc));
  ASSERT_EQ_INT(nc, 2);
  ASSERT_EQ_INT(b[1], 2);
  free(b);
  for (int i = 0; i < 3; i++)
    tb_train_datum_clear(&big[i]);
}

static double metric(const tb_metric_t *m, size_t n, const char *name, int *found) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(m[i].name, name) == 0) {
      *found = 1;
      return m[i].value;
    }
  *found = 0;
  return 0;
}

TEST(metric_reduction) {
  tb_metric_t a[] = { { "loss:sum", 3 },  { "acc:mean", 1.0 }, { "lo:min", 5 },
                      { "hi:max", 1 },    { "s:slack", 2 },    { "id:unique", 7 },
                      { "only:sum", 1 },  { "odd:median", 1 }, { "h:hash_unordered", 1 } };
  tb_metric_t b[] = { { "loss:sum", 4 }, { "acc:mean", 0.0 }, { "lo:min", 2 },
                      { "hi:max", 9 },   { "s:slack", 4 },    { "id:unique", 8 },
                      { "odd:median", 1 }, { "h:hash_unordered", 2 } };
  const tb_metric_t *ms[] = { a, b };
  size_t ns[] = { sizeof(a) / sizeof(a[0]), sizeof(b) / sizeof(b[0]) };
  double w[] = { 3, 1 };
  tb_metric_t *out;
  size_t n;
  int found;
  ASSERT_OK(tb__metrics_reduce(ms, ns, w, 2, &out, &n));
  ASSERT_NEAR(metric(out, n, "loss:sum", &found), 7, 0, 0);
  ASSERT(found);
  ASSERT_NEAR(metric(out, n, "acc:mean", &found), 0.75, 1e-12, 0);
  ASSERT_NEAR(metric(out, n, "lo:min", &found), 2, 0, 0);
  ASSERT_NEAR(metric(out, n, "hi:max", &found), 9, 0, 0);
  /* slack: max 4 minus the weighted mean (2*3 + 4*1)/4 = 2.5 */
  ASSERT_NEAR(metric(out, n, "s:slack", &found), 1.5, 1e-12, 0);
  ASSERT_NEAR(metric(out, n, "id:unique", &found), 7, 0, 0);
  ASSERT_NEAR(metric(out, n, "id:unique_2", &found), 8, 0, 0);
  ASSERT(found);
  metric(out, n, "only:sum", &found);
  ASSERT(!found);                      /* missing from a chunk: dropped */
  metric(out, n, "odd:median", &found);
  ASSERT(!found);                      /* unknown reduction: dropped */
  double h1 = metric(out, n, "h:hash_unordered", &found);
  ASSERT(found);
  for (size_t i = 0; i < n; i++)
    free(out[i].name);
  free(out);

  /* the hash does not depend on the order of the chunks */
  const tb_metric_t *rev[] = { b, a };
  size_t nrev[] = { ns[1], ns[0] };
  ASSERT_OK(tb__metrics_reduce(rev, nrev, w, 2, &out, &n));
  ASSERT_NEAR(metric(out, n, "h:hash_unordered", &found), h1, 0, 0);
  /* unique values that repeat are kept once */
  tb_metric_t c[] = { { "id:unique", 7 } };
  const tb_metric_t *same[] = { c, c, c };
  size_t nsame[] = { 1, 1, 1 };
  double w3[] = { 1, 1, 1 };
  for (size_t i = 0; i < n; i++)
    free(out[i].name);
  free(out);
  ASSERT_OK(tb__metrics_reduce(same, nsame, w3, 3, &out, &n));
  ASSERT_EQ_INT(n, 1);
  for (size_t i = 0; i < n; i++)
    free(out[i].name);
  free(out);
}

static tb_forward_backward_output_t *part(size_t n_datums, float base, double loss,
                                          double mean) {
  tb_forward_backward_output_t *o = calloc(1, sizeof(*o));
  o->loss_fn_output_type = strdup("ArrayRecord");
  o->n_outputs = n_datums;
  o->outputs = calloc(n_datums, sizeof(*o->outputs));
  for (size_t i = 0; i < n_datums; i++) {
    float v = base + (float)i;
    o->outputs[i].n_fields = 1;
    o->outputs[i].fields = calloc(1, sizeof(tb_named_tensor_t));
    o->outputs[i].fields[0].name = strdup("logprobs");
    ASSERT_OK(tb_tensor_data_init_f32(&o->outputs[i].fields[0].tensor, &v, 1, NULL, 1));
  }
  o->n_metrics = 2;
  o->metrics = calloc(2, sizeof(tb_metric_t));
  o->metrics[0].name = strdup("loss:sum");
  o->metrics[0].value = loss;
  o->metrics[1].name = strdup("loss:mean");
  o->metrics[1].value = mean;
  return o;
}

TEST(combine_in_input_order) {
  /* 1025 datums as the SDK splits them: 1024 then 1; the weighted mean of
   * 1.0 and 5.0 is (1024 + 5) / 1025, the sum adds up. */
  tb_forward_backward_output_t *parts[2] = { part(1024, 0, 10, 1.0), part(1, 1024, 2, 5.0) };
  size_t counts[2] = { 1024, 1 };
  tb_forward_backward_output_t *o = NULL;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__fwdbwd_combine(parts, counts, 2, &o, &err));
  ASSERT_EQ_INT(o->n_outputs, 1025);
  for (size_t i = 0; i < 1025; i++)
    ASSERT_NEAR(tb_forward_backward_output_tensor(o, i, "logprobs")->f32[0], (double)i, 0, 0);
  double v;
  ASSERT(tb_forward_backward_output_metric(o, "loss:sum", &v));
  ASSERT_NEAR(v, 12, 0, 0);
  ASSERT(tb_forward_backward_output_metric(o, "loss:mean", &v));
  ASSERT_NEAR(v, (1024.0 + 5.0) / 1025.0, 1e-12, 0);
  ASSERT_STR_EQ(o->loss_fn_output_type, "ArrayRecord");
  tb_forward_backward_output_free(o);

  /* a part whose outputs do not match its datums is the server's error */
  tb_forward_backward_output_t *bad[2] = { part(2, 0, 1, 1), part(1, 0, 1, 1) };
  size_t want[2] = { 2, 2 };
  ASSERT_ERR(tb__fwdbwd_combine(bad, want, 2, &o, &err), TB_EPROTO);
  ASSERT_EQ_INT(err.category, TB_CATEGORY_SERVER);
  tb_error_clear(&err);
}

static void fill_request(tb_train_datum_t d[2], tb__wire_fwdbwd_t *w, tb__arena_t *a) {
  int32_t toks[] = { 1, 2, 3, 4 };
  float adv[] = { 0.5f, -1.0f, 2.0f };
  ASSERT_OK(tb_train_datum_init_next_token(&d[0], toks, NULL, 4));
  ASSERT_OK(tb_train_datum_set_f32(&d[0], "advantages", adv, 3));
  ASSERT_OK(tb_train_datum_init_next_token(&d[1], toks + 1, NULL, 3));
  /* two chunks of model input are joined into one token list */
  ASSERT_OK(tb_model_input_init(&d[1].model_input, toks, 1));
  ASSERT_OK(tb_model_input_append(&d[1].model_input, toks + 1, 1));
  static tb__wire_config_entry_t cfg[] = { { "clip_low_threshold", 0.8 } };
  memset(w, 0, sizeof(*w));
  ASSERT_OK(tb__datums_to_wire(a, d, 2, &w->data));
  w->n_data = 2;
  w->loss_fn = "ppo";
  w->config = cfg;
  w->n_config = 1;
  w->model_id = "s:train:0";
  w->seq_id = 7;
}

static void assert_decoded(const tb__wire_fwdbwd_t *r, int forward_only) {
  ASSERT_STR_EQ(r->model_id, "s:train:0");
  ASSERT_EQ_INT(r->seq_id, 7);
  ASSERT_STR_EQ(r->loss_fn, "ppo");
  ASSERT_EQ_INT(r->forward_only, forward_only);
  ASSERT_EQ_INT(r->n_config, 1);
  ASSERT_NEAR(r->config[0].value, 0.8, 0, 0);
  ASSERT_EQ_INT(r->n_data, 2);
  ASSERT_EQ_INT(r->data[0].n_tokens, 3);
  ASSERT_EQ_INT(r->data[0].tokens[2], 3);
  ASSERT_EQ_INT(r->data[1].n_tokens, 2);
  ASSERT_EQ_INT(r->data[1].tokens[1], 2);
  const tb__wire_tensor_t *tt = tb__wire_datum_input(&r->data[0], "target_tokens");
  const tb__wire_tensor_t *ad = tb__wire_datum_input(&r->data[0], "advantages");
  ASSERT(tt != NULL && ad != NULL);
  ASSERT_EQ_INT(tt->dtype, TB_DTYPE_INT64);
  ASSERT_EQ_INT(tt->i64[0], 2);
  ASSERT_EQ_INT(ad->dtype, TB_DTYPE_FLOAT32);
  ASSERT_NEAR(ad->f32[1], -1.0, 0, 0);
  ASSERT_EQ_INT(ad->shape[0], 3);
}

TEST(fwdbwd_request_round_trips) {
  tb__arena_t a, back;
  tb__arena_init(&a, 0);
  tb__arena_init(&back, 0);
  tb_train_datum_t d[2] = { 0 };
  tb__wire_fwdbwd_t w;
  fill_request(d, &w, &a);
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);

  /* protobuf, through the server's decoder */
  tb__buf_t buf = TB_BUF_INIT;
  w.forward_only = 1;
  ASSERT_OK(tb__wire_fwdbwd_request_to_proto(&w, &buf));
  tb__wire_fwdbwd_t r;
  ASSERT_OK(tb__wire_fwdbwd_request_from_proto(&c, &back, tb__buf_slice(&buf), SIZE_MAX, &r));
  assert_decoded(&r, 1);
  tb__buf_free(&buf);
  w.forward_only = 0;

  /* encoded without the model id, which is put in front later */
  w.model_id = NULL;
  tb__buf_t tail = TB_BUF_INIT;
  ASSERT_OK(tb__wire_fwdbwd_request_to_proto(&w, &tail));
  ASSERT_OK(tb__wire_fwdbwd_model_id_to_proto("s:train:0", &buf));
  ASSERT_OK(tb__buf_append(&buf, tail.base, tail.len));
  ASSERT_OK(tb__wire_fwdbwd_request_from_proto(&c, &back, tb__buf_slice(&buf), SIZE_MAX, &r));
  assert_decoded(&r, 0);
  tb__buf_free(&tail);
  tb__buf_free(&buf);
  w.model_id = "s:train:0";

  /* JSON, both input keys */
  w.forward_only = 0;
  json_t *j = tb__wire_fwdbwd_request_to_json(&w, "forward_backward_input");
  ASSERT(j != NULL);
  ASSERT_OK(tb__wire_fwdbwd_request_from_json(&c, &back, j, "forward_backward_input", SIZE_MAX,
                                              &r));
  assert_decoded(&r, 0);
  json_decref(j);
  j = tb__wire_fwdbwd_request_to_json(&w, "forward_input");
  ASSERT_OK(tb__wire_fwdbwd_request_from_json(&c, &back, j, "forward_input", SIZE_MAX, &r));
  assert_decoded(&r, 1);
  json_decref(j);

  /* a seq_id the proto cannot carry is refused */
  w.seq_id = (int64_t)INT32_MAX + 1;
  ASSERT_ERR(tb__wire_fwdbwd_request_to_proto(&w, &buf), TB_EINVAL);
  tb__buf_free(&buf);
  tb_train_datum_clear(&d[0]);
  tb_train_datum_clear(&d[1]);
  tb__arena_free(&a);
  tb__arena_free(&back);
}

TEST(sample_request_round_trips) {
  tb_sample_params_t p;
  tb_sample_params_default(&p);
  const char *stops[] = { "\n\n", "END" };
  p.max_tokens = 12;
  p.has_seed = 1;
  p.seed = 42;
  p.temperature = 0.5;
  p.top_k = 40;
  p.top_p = 0.9;
  p.stop_strings = stops;
  p.n_stop_strings = 2;
  tb_error_t err = { 0 };
  tb__wire_sample_request_t req = { 0 };
  ASSERT_OK(tb__sample_params_to_wire(&p, &req.params, &err));
  int32_t prompt[] = { 10, 11, 12 };
  req.prompt = prompt;
  req.n_prompt = 3;
  req.num_samples = 4;
  req.prompt_logprobs = 1;
  req.topk_prompt_logprobs = 2;
  req.sampling_session_id = "s:sample:0";
  req.seq_id = 9;
  json_t *j = tb__wire_sample_request_to_json(&req);
  ASSERT(j != NULL);
  ASSERT_STR_EQ(json_string_value(json_object_get(j, "type")), "sample");

  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  tb__wire_sample_request_t r;
  ASSERT_OK(tb__wire_sample_request_from_json(&c, &a, j, &r));
  ASSERT_EQ_INT(r.n_prompt, 3);
  ASSERT_EQ_INT(r.prompt[2], 12);
  ASSERT_EQ_INT(r.num_samples, 4);
  ASSERT_EQ_INT(r.prompt_logprobs, 1);
  ASSERT_EQ_INT(r.topk_prompt_logprobs, 2);
  ASSERT_STR_EQ(r.sampling_session_id, "s:sample:0");
  ASSERT_EQ_INT(r.seq_id, 9);
  ASSERT_EQ_INT(r.params.max_tokens, 12);
  ASSERT_EQ_INT(r.params.has_seed, 1);
  ASSERT_EQ_INT(r.params.seed, 42);
  ASSERT_NEAR(r.params.temperature, 0.5, 0, 0);
  ASSERT_EQ_INT(r.params.top_k, 40);
  ASSERT_NEAR(r.params.top_p, 0.9, 0, 0);
  ASSERT_EQ_INT(r.params.n_stop_strings, 2);
  ASSERT_STR_EQ(r.params.stop_strings[1], "END");
  json_decref(j);

  /* stop tokens, and the defaults left out */
  tb_sample_params_default(&p);
  int32_t stop_ids[] = { 3, 4 };
  p.stop_tokens = stop_ids;
  p.n_stop_tokens = 2;
  ASSERT_OK(tb__sample_params_to_wire(&p, &req.params, &err));
  j = tb__wire_sampling_params_to_json(&req.params);
  ASSERT(json_object_get(j, "max_tokens") == NULL);
  ASSERT(json_object_get(j, "seed") == NULL);
  tb__wire_sampling_params_t sp;
  ASSERT_OK(tb__wire_sampling_params_from_json(&c, &a, j, &sp));
  ASSERT_EQ_INT(sp.n_stop_tokens, 2);
  ASSERT_EQ_INT(sp.stop_tokens[1], 4);
  ASSERT_EQ_INT(sp.max_tokens, -1);
  json_decref(j);

  /* both kinds of stop, or a bad top_p, are the caller's error */
  p.stop_strings = stops;
  p.n_stop_strings = 1;
  ASSERT_ERR(tb__sample_params_to_wire(&p, &req.params, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "not both");
  tb_sample_params_default(&p);
  p.top_p = 0;
  ASSERT_ERR(tb__sample_params_to_wire(&p, &req.params, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "top_p");
  tb_error_clear(&err);
  tb__arena_free(&a);
}

TEST_LIST(
  TEST_ENTRY(builders),
  TEST_ENTRY(estimate_is_the_sdks),
  TEST_ENTRY(split_by_count),
  TEST_ENTRY(split_by_bytes),
  TEST_ENTRY(metric_reduction),
  TEST_ENTRY(combine_in_input_order),
  TEST_ENTRY(fwdbwd_request_round_trips),
  TEST_ENTRY(sample_request_round_trips),
)

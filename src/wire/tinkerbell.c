/*
 * The JSON codecs of the Tinkerbell dialect's answers (see tinkerbell.h).
 * The encoders write the keys in the order the dialect has always sent
 * them, so recorded answers stay byte for byte the same; the decoders
 * refuse a present field of the wrong type, naming it.
 */
#include "wire/tinkerbell.h"

#include <math.h>
#include <string.h>

#include "core/buf.h"
#include "wire/codec.h"

/* ------------------------------------------------------------ text */

/* The length of the valid UTF-8 sequence at s, or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80)
    return 1;
  size_t len = c >= 0xc2 && c < 0xe0 ? 2 : c >= 0xe0 && c < 0xf0 ? 3 : c >= 0xf0 && c <= 0xf4 ? 4
                                                                                               : 0;
  if (len == 0 || len > n)
    return 0;
  for (size_t i = 1; i < len; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  /* Overlong forms, surrogates and code points past U+10FFFF. */
  if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0) || (c == 0xf0 && s[1] < 0x90) ||
      (c == 0xf4 && s[1] >= 0x90))
    return 0;
  return len;
}

json_t *tb__wire_text_json(const char *s, size_t n) {
  tb__buf_t t = TB_BUF_INIT;
  const unsigned char *p = (const unsigned char *)(s ? s : "");
  int ok = tb__buf_reserve(&t, n + 1) == 0;
  for (size_t i = 0; ok && i < n;) {
    size_t k = utf8_seq(p + i, n - i);
    ok = k ? tb__buf_append(&t, p + i, k) == 0 : tb__buf_append(&t, "\xef\xbf\xbd", 3) == 0;
    i += k ? k : 1;
  }
  json_t *v = ok ? json_stringn(t.base ? t.base : "", t.len) : NULL;
  tb__buf_free(&t);
  return v;
}

/* Text, or null for NULL. */
static json_t *text_or_null(const char *s, size_t n) {
  return s != NULL ? tb__wire_text_json(s, n) : json_null();
}

/* A string of the document (with its length: text may hold NUL), or
 * NULL for null; required. */
static int read_text(tb__jctx_t *c, const json_t *o, const char *key, int required,
                     const char **s, size_t *n) {
  tb_slice_t v = { NULL, 0 };
  const json_t *x = json_object_get(o, key);
  int rc = x != NULL && json_is_null(x) ? 0 : tb__json_get_string(c, o, key, required, &v);
  *s = v.base;
  *n = v.len;
  return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------ arrays */

static json_t *ints_json(const int32_t *v, size_t n) {
  json_t *arr = json_array();
  int bad = arr == NULL;
  for (size_t i = 0; !bad && i < n; i++)
    bad = json_array_append_new(arr, json_integer(v[i])) != 0;
  return tb__wire_done(arr, bad);
}

static json_t *reals_json(const float *v, size_t n) {
  json_t *arr = json_array();
  int bad = arr == NULL;
  for (size_t i = 0; !bad && i < n; i++)
    bad = json_array_append_new(arr, tb__wire_real_or_null(v[i])) != 0;
  return tb__wire_done(arr, bad);
}

static int read_int32(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  int64_t x;
  int rc = tb__json_as_int(c, v, INT32_MIN, INT32_MAX, &x);
  *(int32_t *)out = (int32_t)x;
  return rc;
}

static int read_real(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  double x = NAN;
  int rc = json_is_null(v) ? 0 : tb__json_as_double(c, v, &x);
  *(float *)out = (float)x;
  return rc;
}

static int read_name(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  if (!json_is_string(v))
    return tb__jctx_fail(c, "expected a string, got %s", tb__json_type_name(v));
  *(const char **)out = json_string_value(v);
  return 0;
}

/* ------------------------------------------------------------ results */

/* Ends a result: "created": true when the call created its model. */
static json_t *result_done(json_t *o, int bad, int created) {
  if (created)
    bad |= tb__wire_put(o, "created", json_true());
  return tb__wire_done(o, bad);
}

static int read_created(tb__jctx_t *c, const json_t *v, int *created) {
  return tb__wire_opt_bool(c, v, "created", 0, created);
}

json_t *tb__wire_tb_adapter_to_json(const tb__wire_tb_adapter_t *r) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "model_id", json_string(r->model_id));
  bad |= tb__wire_put(o, "base_model", json_string(r->base_model));
  bad |= tb__wire_put(o, "rank", json_integer((json_int_t)r->rank));
  bad |= tb__wire_put(o, "alpha", json_real(r->alpha));
  bad |= tb__wire_put(o, "status", json_string("created"));
  bad |= tb__wire_put(o, "backend", json_string(r->backend));
  return result_done(o, bad, r->created);
}

int tb__wire_tb_adapter_from_json(tb__jctx_t *c, const json_t *v, tb__wire_tb_adapter_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  rc = rc ? rc : tb__wire_req_str(c, v, "model_id", &out->model_id);
  rc = rc ? rc : tb__wire_req_str(c, v, "base_model", &out->base_model);
  rc = rc ? rc : tb__json_get_int(c, v, "rank", TB_JSON_REQUIRED, 1, INT64_MAX, &out->rank);
  rc = rc ? rc : tb__json_get_double(c, v, "alpha", TB_JSON_REQUIRED, &out->alpha);
  rc = rc ? rc : tb__wire_req_str(c, v, "backend", &out->backend);
  return rc ? rc : read_created(c, v, &out->created);
}

json_t *tb__wire_tb_forward_to_json(const tb__wire_tb_forward_t *r) {
  json_t *o = json_object(), *outputs = json_object();
  int bad = tb__wire_put(o, "loss", tb__wire_real_or_null(r->loss));
  bad |= tb__wire_put(o, "loss_sum", tb__wire_real_or_null(r->loss_sum));
  bad |= tb__wire_put(o, "num_samples", json_integer((json_int_t)r->num_samples));
  bad |= tb__wire_put(o, "num_tokens", json_integer((json_int_t)r->num_tokens));
  bad |= tb__wire_put(o, "total_weight", json_real(r->total_weight));
  bad |= tb__wire_put(o, "model_id", json_string(r->model_id));
  bad |= tb__wire_put(o, "backend", json_string(r->backend));
  bad |= tb__wire_put(o, "loss_fn", json_string(r->loss_fn));
  bad |= tb__wire_put(outputs, "loss_fn", json_string(r->loss_fn));
  bad |= tb__wire_put(o, "loss_fn_outputs", outputs);
  bad |= tb__wire_put(o, "metrics", tb__wire_metrics_to_json(r->metrics, r->n_metrics));
  if (r->has_logprobs) {
    json_t *rows = json_array();
    size_t at = 0;
    bad |= rows == NULL;
    for (size_t i = 0; !bad && i < r->n_rows; i++) {
      bad = json_array_append_new(rows, reals_json(r->logprobs + at, r->row_len[i])) != 0;
      at += r->row_len[i];
    }
    bad |= tb__wire_put(o, "logprobs", rows);
  }
  return result_done(o, bad, r->created);
}

/* One row of logprobs into the flat array being filled. */
typedef struct {
  float *values;
  size_t n;
} row_t;

static int read_row(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  row_t *row = out;
  if (!json_is_array(v))
    return tb__jctx_fail(c, "expected a list of log-probabilities, got %s",
                         tb__json_type_name(v));
  row->n = json_array_size(v);
  row->values = tb__arena_calloc(a, row->n + 1, sizeof(float));
  if (row->values == NULL)
    return TB_ENOMEM;
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < row->n; i++) {
    size_t mark = tb__jctx_push_index(c, i);
    rc = read_real(c, a, json_array_get(v, i), &row->values[i]);
    tb__jctx_pop(c, mark);
  }
  return rc;
}

int tb__wire_tb_forward_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                  tb__wire_tb_forward_t *out) {
  memset(out, 0, sizeof(*out));
  json_t *outputs = NULL;
  tb__wire_metric_t *ms = NULL;
  int rc = tb__json_expect_object(c, v);
  rc = rc ? rc : tb__wire_req_real(c, v, "loss", &out->loss);
  rc = rc ? rc : tb__wire_req_real(c, v, "loss_sum", &out->loss_sum);
  rc = rc ? rc : tb__json_get_int(c, v, "num_samples", TB_JSON_REQUIRED, 0, INT64_MAX,
                                  &out->num_samples);
  rc = rc ? rc : tb__json_get_int(c, v, "num_tokens", TB_JSON_REQUIRED, 0, INT64_MAX,
                                  &out->num_tokens);
  rc = rc ? rc : tb__json_get_double(c, v, "total_weight", TB_JSON_REQUIRED,
                                     &out->total_weight);
  rc = rc ? rc : tb__wire_req_str(c, v, "model_id", &out->model_id);
  rc = rc ? rc : tb__wire_req_str(c, v, "backend", &out->backend);
  rc = rc ? rc : tb__wire_req_str(c, v, "loss_fn", &out->loss_fn);
  rc = rc ? rc : tb__json_get_object(c, v, "loss_fn_outputs", TB_JSON_REQUIRED, &outputs);
  rc = rc ? rc : tb__wire_metrics_from_json(c, a, v, "metrics", &ms, &out->n_metrics);
  out->metrics = ms;
  void *rows = NULL;
  rc = rc ? rc : tb__wire_items_from_json(c, a, v, "logprobs", TB_JSON_OPTIONAL, sizeof(row_t),
                                         read_row, &rows, &out->n_rows);
  if (rc == 0 && json_object_get(v, "logprobs") != NULL) {
    /* Flat, as the server holds them. */
    const row_t *r = rows;
    size_t total = 0;
    for (size_t i = 0; i < out->n_rows; i++)
      total += r[i].n;
    float *flat = tb__arena_calloc(a, total + 1, sizeof(*flat));
    size_t *len = tb__arena_calloc(a, out->n_rows + 1, sizeof(*len));
    if (flat == NULL || len == NULL)
      return TB_ENOMEM;
    for (size_t i = 0, at = 0; i < out->n_rows; at += r[i].n, i++) {
      memcpy(flat + at, r[i].values, r[i].n * sizeof(*flat));
      len[i] = r[i].n;
    }
    out->has_logprobs = 1;
    out->logprobs = flat;
    out->row_len = len;
  }
  return rc ? rc : read_created(c, v, &out->created);
}

json_t *tb__wire_tb_optim_to_json(const tb__wire_tb_optim_t *r) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "model_id", json_string(r->model_id));
  bad |= tb__wire_put(o, "backend", json_string(r->backend));
  bad |= tb__wire_put(o, "step", json_integer((json_int_t)r->step));
  bad |= tb__wire_put(o, "metrics", tb__wire_metrics_to_json(r->metrics, r->n_metrics));
  return result_done(o, bad, r->created);
}

int tb__wire_tb_optim_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                tb__wire_tb_optim_t *out) {
  memset(out, 0, sizeof(*out));
  tb__wire_metric_t *ms = NULL;
  int rc = tb__json_expect_object(c, v);
  rc = rc ? rc : tb__wire_req_str(c, v, "model_id", &out->model_id);
  rc = rc ? rc : tb__wire_req_str(c, v, "backend", &out->backend);
  rc = rc ? rc : tb__json_get_int(c, v, "step", TB_JSON_REQUIRED, 0, INT64_MAX, &out->step);
  rc = rc ? rc : tb__wire_metrics_from_json(c, a, v, "metrics", &ms, &out->n_metrics);
  out->metrics = ms;
  return rc ? rc : read_created(c, v, &out->created);
}

json_t *tb__wire_tb_status_to_json(const tb__wire_tb_status_t *r) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "model_id", json_string(r->model_id));
  if (r->path != NULL)
    bad |= tb__wire_put(o, "path", json_string(r->path));
  bad |= tb__wire_put(o, "status", json_string(r->status));
  if (r->backend != NULL)
    bad |= tb__wire_put(o, "backend", json_string(r->backend));
  return result_done(o, bad, r->created);
}

int tb__wire_tb_status_from_json(tb__jctx_t *c, const json_t *v, tb__wire_tb_status_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  rc = rc ? rc : tb__wire_req_str(c, v, "model_id", &out->model_id);
  rc = rc ? rc : tb__wire_opt_str(c, v, "path", &out->path);
  rc = rc ? rc : tb__wire_req_str(c, v, "status", &out->status);
  rc = rc ? rc : tb__wire_opt_str(c, v, "backend", &out->backend);
  return rc ? rc : read_created(c, v, &out->created);
}

/* ------------------------------------------------------------ samples */

static json_t *sample_json(const tb__wire_tb_sample_t *s) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "text", text_or_null(s->text, s->text_len));
  bad |= tb__wire_put(o, "tokens", ints_json(s->tokens, s->n_tokens));
  bad |= tb__wire_put(o, "logprobs", reals_json(s->logprobs, s->n_tokens));
  bad |= tb__wire_put(o, "stop_reason", json_string(s->stop_reason));
  if (s->reasoning != NULL)
    bad |= tb__wire_put(o, "reasoning", tb__wire_text_json(s->reasoning, s->reasoning_len));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_tb_sampled_to_json(const tb__wire_tb_sampled_t *r) {
  json_t *samples = json_array(), *texts = json_array();
  int bad = samples == NULL || texts == NULL;
  for (size_t i = 0; !bad && i < r->n_samples; i++) {
    const tb__wire_tb_sample_t *s = &r->samples[i];
    bad = json_array_append_new(texts, text_or_null(s->text, s->text_len)) != 0;
    bad |= json_array_append_new(samples, sample_json(s)) != 0;
  }
  json_t *first = r->n_samples > 0 ? text_or_null(r->samples[0].text, r->samples[0].text_len)
                                   : json_null();
  json_t *o = json_object();
  bad |= tb__wire_put(o, "model_id", json_string(r->model_id));
  bad |= tb__wire_put(o, "base_model", json_string(r->base_model));
  bad |= tb__wire_put(o, "backend", json_string(r->backend));
  bad |= tb__wire_put(o, "generated_text", first);
  bad |= tb__wire_put(o, "completions", texts);
  bad |= tb__wire_put(o, "prompt_tokens", json_integer((json_int_t)r->prompt_tokens));
  bad |= tb__wire_put(o, "samples", samples);
  return result_done(o, bad, r->created);
}

static int read_sample(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  tb__wire_tb_sample_t *s = out;
  void *tokens = NULL, *lps = NULL;
  size_t n_lps = 0;
  int rc = tb__json_expect_object(c, v);
  rc = rc ? rc : read_text(c, v, "text", TB_JSON_REQUIRED, &s->text, &s->text_len);
  rc = rc ? rc : tb__wire_items_from_json(c, a, v, "tokens", TB_JSON_REQUIRED, sizeof(int32_t),
                                         read_int32, &tokens, &s->n_tokens);
  rc = rc ? rc : tb__wire_items_from_json(c, a, v, "logprobs", TB_JSON_REQUIRED, sizeof(float),
                                         read_real, &lps, &n_lps);
  if (rc == 0 && n_lps != s->n_tokens)
    rc = tb__jctx_fail_at(c, "logprobs", "expected %zu values (one per token), got %zu",
                          s->n_tokens, n_lps);
  rc = rc ? rc : tb__wire_req_str(c, v, "stop_reason", &s->stop_reason);
  rc = rc ? rc : read_text(c, v, "reasoning", TB_JSON_OPTIONAL, &s->reasoning,
                           &s->reasoning_len);
  s->tokens = tokens;
  s->logprobs = lps;
  return rc;
}

int tb__wire_tb_sampled_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                  tb__wire_tb_sampled_t *out) {
  memset(out, 0, sizeof(*out));
  void *samples = NULL;
  int rc = tb__json_expect_object(c, v);
  rc = rc ? rc : tb__wire_req_str(c, v, "model_id", &out->model_id);
  rc = rc ? rc : tb__wire_req_str(c, v, "base_model", &out->base_model);
  rc = rc ? rc : tb__wire_req_str(c, v, "backend", &out->backend);
  rc = rc ? rc : tb__json_get_int(c, v, "prompt_tokens", TB_JSON_REQUIRED, 0, INT64_MAX,
                                  &out->prompt_tokens);
  /* generated_text and completions repeat the samples' texts. */
  rc = rc ? rc : tb__wire_items_from_json(c, a, v, "samples", TB_JSON_REQUIRED,
                                         sizeof(tb__wire_tb_sample_t), read_sample, &samples,
                                         &out->n_samples);
  out->samples = samples;
  return rc ? rc : read_created(c, v, &out->created);
}

/* ------------------------------------------------------------ direct routes */

json_t *tb__wire_tb_model_to_json(const tb__wire_tb_model_t *r) {
  json_t *o = json_object(), *data = json_object();
  int bad = tb__wire_put(o, "model_id", json_string(r->model_id));
  bad |= tb__wire_put(data, "model_name", json_string(r->base_model));
  bad |= tb__wire_put(data, "arch", json_string(r->arch));
  bad |= tb__wire_put(data, "vocab_size", json_integer((json_int_t)r->vocab_size));
  bad |= tb__wire_put(o, "model_data", data);
  bad |= tb__wire_put(o, "base_model", json_string(r->base_model));
  bad |= tb__wire_put(o, "lora_rank", json_integer((json_int_t)r->lora_rank));
  bad |= tb__wire_put(o, "lora_alpha", json_real(r->lora_alpha));
  bad |= tb__wire_put(o, "ready", json_boolean(r->ready));
  return tb__wire_done(o, bad);
}

int tb__wire_tb_model_from_json(tb__jctx_t *c, const json_t *v, tb__wire_tb_model_t *out) {
  memset(out, 0, sizeof(*out));
  json_t *data = NULL;
  int rc = tb__json_expect_object(c, v);
  rc = rc ? rc : tb__wire_req_str(c, v, "model_id", &out->model_id);
  rc = rc ? rc : tb__json_get_object(c, v, "model_data", TB_JSON_REQUIRED, &data);
  if (rc == 0) {
    size_t mark = tb__jctx_push_key(c, "model_data");
    rc = tb__wire_req_str(c, data, "arch", &out->arch);
    rc = rc ? rc : tb__json_get_int(c, data, "vocab_size", TB_JSON_REQUIRED, 0, INT64_MAX,
                                    &out->vocab_size);
    tb__jctx_pop(c, mark);
  }
  rc = rc ? rc : tb__wire_req_str(c, v, "base_model", &out->base_model);
  rc = rc ? rc : tb__json_get_int(c, v, "lora_rank", TB_JSON_REQUIRED, 0, INT64_MAX,
                                  &out->lora_rank);
  rc = rc ? rc : tb__json_get_double(c, v, "lora_alpha", TB_JSON_REQUIRED, &out->lora_alpha);
  rc = rc ? rc : tb__json_get_bool(c, v, "ready", TB_JSON_REQUIRED, &out->ready);
  return rc;
}

json_t *tb__wire_tb_loss_fns_to_json(const tb__wire_tb_loss_fns_t *r) {
  json_t *names = json_array();
  int bad = names == NULL;
  for (size_t i = 0; !bad && i < r->n_names; i++)
    bad = json_array_append_new(names, json_string(r->names[i])) != 0;
  json_t *o = json_object();
  bad |= tb__wire_put(o, "available_loss_functions", tb__wire_done(names, bad));
  return tb__wire_done(o, bad);
}

int tb__wire_tb_loss_fns_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                   tb__wire_tb_loss_fns_t *out) {
  memset(out, 0, sizeof(*out));
  void *names = NULL;
  int rc = tb__json_expect_object(c, v);
  rc = rc ? rc : tb__wire_items_from_json(c, a, v, "available_loss_functions",
                                         TB_JSON_REQUIRED, sizeof(const char *), read_name,
                                         &names, &out->n_names);
  out->names = names;
  return rc;
}

json_t *tb__wire_tb_text_to_json(const tb__wire_tb_text_t *r) {
  json_t *o = json_object();
  int bad = 0;
  if (r->has_tokens)
    bad |= tb__wire_put(o, "tokens", ints_json(r->tokens, r->n_tokens));
  if (r->text != NULL)
    bad |= tb__wire_put(o, "text", tb__wire_text_json(r->text, r->text_len));
  return tb__wire_done(o, bad);
}

int tb__wire_tb_text_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                               tb__wire_tb_text_t *out) {
  memset(out, 0, sizeof(*out));
  void *tokens = NULL;
  int rc = tb__json_expect_object(c, v);
  rc = rc ? rc : tb__wire_items_from_json(c, a, v, "tokens", TB_JSON_OPTIONAL, sizeof(int32_t),
                                         read_int32, &tokens, &out->n_tokens);
  out->has_tokens = rc == 0 && json_object_get(v, "tokens") != NULL;
  out->tokens = tokens;
  return rc ? rc : read_text(c, v, "text", TB_JSON_OPTIONAL, &out->text, &out->text_len);
}

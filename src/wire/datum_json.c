/*
 * JSON decoding of forward/forward_backward requests: ModelInput, TensorData,
 * Datum and the request envelope of the Tinker SDK's JSON form
 *   {"forward_backward_input": {"data": [...], "loss_fn": ..., "loss_fn_config": {...}},
 *    "model_id": ..., "seq_id": ...}
 * (or "forward_input" for POST /api/v1/forward).
 */
#include "wire/datum.h"

#include <math.h>
#include <string.h>

#include "core/buf.h"
#include "wire/codec.h"
#include "wire/tensor.h"

/* Plain lists in loss_fn_inputs are cast by key name, as the SDK does. */
static int default_dtype_for_key(const char *key, tb__dtype_t *out) {
  static const char *floats[] = { "weights", "advantages", "logprobs",
                                  "clip_low_threshold", "clip_high_threshold" };
  if (strcmp(key, "target_tokens") == 0) {
    *out = TB_DTYPE_INT64;
    return 1;
  }
  for (size_t i = 0; i < sizeof(floats) / sizeof(floats[0]); i++) {
    if (strcmp(key, floats[i]) == 0) {
      *out = TB_DTYPE_FLOAT32;
      return 1;
    }
  }
  return 0;
}

static int read_int64_array(tb__jctx_t *c, tb__arena_t *a, const json_t *arr,
                            int64_t **out, size_t *n) {
  *n = json_array_size(arr);
  *out = tb__arena_calloc(a, *n ? *n : 1, sizeof(int64_t));
  if (*out == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < *n; i++) {
    size_t m = tb__jctx_push_index(c, i);
    int rc = tb__json_as_int(c, json_array_get(arr, i), INT64_MIN, INT64_MAX,
                             &(*out)[i]);
    tb__jctx_pop(c, m);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static int store_value(tb__jctx_t *c, tb__wire_tensor_t *t, size_t pos,
                       const json_t *v, int null_is_nan) {
  if (t->dtype == TB_DTYPE_FLOAT32) {
    if (null_is_nan && json_is_null(v)) {
      t->f32[pos] = NAN;
      return 0;
    }
    double d;
    int rc = tb__json_as_double(c, v, &d);
    if (rc != 0)
      return rc;
    if (fabs(d) > 3.4028234663852886e38)
      return tb__jctx_fail(c, "%g does not fit a float32", d);
    t->f32[pos] = (float)d;
    return 0;
  }
  return tb__json_as_int(c, v, INT64_MIN, INT64_MAX, &t->i64[pos]);
}

static int tensor_from_json(tb__jctx_t *c, tb__arena_t *a, const char *key,
                            const json_t *v, size_t max_bytes, tb__wire_tensor_t *t,
                            int null_is_nan) {
  memset(t, 0, sizeof(*t));
  const json_t *data = v;
  json_t *shape = NULL, *crow = NULL, *col = NULL;
  int rc;

  if (json_is_array(v)) {
    if (!default_dtype_for_key(key, &t->dtype))
      return tb__jctx_fail(c, "a plain list needs a known key to infer its dtype; "
                           "send TensorData {\"data\", \"dtype\"} instead");
  } else if (json_is_object(v)) {
    tb_slice_t dt;
    json_t *d;
    if ((rc = tb__json_get_array(c, v, "data", TB_JSON_REQUIRED, &d)) != 0)
      return rc;
    data = d;
    if ((rc = tb__json_get_string(c, v, "dtype", TB_JSON_REQUIRED, &dt)) != 0)
      return rc;
    if (tb__slice_eq_str(dt, "float32"))
      t->dtype = TB_DTYPE_FLOAT32;
    else if (tb__slice_eq_str(dt, "int64"))
      t->dtype = TB_DTYPE_INT64;
    else
      return tb__jctx_fail_at(c, "dtype", "expected \"float32\" or \"int64\", got \"%.*s\"",
                              (int)(dt.len > 32 ? 32 : dt.len), dt.base);
    if ((rc = tb__json_get_array(c, v, "shape", TB_JSON_OPTIONAL, &shape)) < 0 ||
        (rc = tb__json_get_array(c, v, "sparse_crow_indices", TB_JSON_OPTIONAL, &crow)) < 0 ||
        (rc = tb__json_get_array(c, v, "sparse_col_indices", TB_JSON_OPTIONAL, &col)) < 0)
      return rc;
  } else {
    return tb__jctx_fail(c, "expected a TensorData object, got %s",
                         tb__json_type_name(v));
  }

  size_t nvals = json_array_size(data);
  int64_t dims[TB_WIRE_MAX_NDIM + 1];
  size_t ndim = 0;
  if (shape != NULL) {
    ndim = json_array_size(shape);
    size_t m = tb__jctx_push_key(c, "shape");
    for (size_t i = 0; i < ndim && i <= TB_WIRE_MAX_NDIM; i++) {
      size_t mi = tb__jctx_push_index(c, i);
      rc = tb__json_as_int(c, json_array_get(shape, i), 0, INT32_MAX, &dims[i]);
      tb__jctx_pop(c, mi);
      if (rc != 0)
        return rc;
    }
    tb__jctx_pop(c, m);
  }
  if ((rc = tb__wire_tensor_set_shape(c, t, dims, ndim, nvals)) != 0)
    return rc;
  if ((crow == NULL) != (col == NULL))
    return tb__jctx_fail(c, "sparse_crow_indices and sparse_col_indices go together");
  if (crow == NULL && nvals != t->numel)
    return tb__jctx_fail(c, "data has %zu elements but the shape holds %zu",
                         nvals, t->numel);
  if ((rc = tb__wire_tensor_alloc(c, a, t, max_bytes)) != 0)
    return rc;

  size_t mark = tb__jctx_push_key(c, "data");
  if (crow == NULL) {
    for (size_t i = 0; i < nvals; i++) {
      size_t mi = tb__jctx_push_index(c, i);
      rc = store_value(c, t, i, json_array_get(data, i), null_is_nan);
      tb__jctx_pop(c, mi);
      if (rc != 0)
        break;
    }
    tb__jctx_pop(c, mark);
    return rc;
  }
  tb__jctx_pop(c, mark);

  int64_t *cr, *co;
  size_t ncr, nco;
  mark = tb__jctx_push_key(c, "sparse_crow_indices");
  rc = read_int64_array(c, a, crow, &cr, &ncr);
  tb__jctx_pop(c, mark);
  if (rc != 0)
    return rc;
  mark = tb__jctx_push_key(c, "sparse_col_indices");
  rc = read_int64_array(c, a, col, &co, &nco);
  tb__jctx_pop(c, mark);
  if (rc != 0)
    return rc;
  if ((rc = tb__wire_csr_check(c, t, cr, ncr, co, nco, nvals)) != 0)
    return rc;
  size_t row = 0;
  mark = tb__jctx_push_key(c, "data");
  for (size_t i = 0; i < nvals && rc == 0; i++) {
    size_t mi = tb__jctx_push_index(c, i);
    rc = store_value(c, t, tb__wire_csr_position(t, cr, co, i, &row),
                     json_array_get(data, i), null_is_nan);
    tb__jctx_pop(c, mi);
  }
  tb__jctx_pop(c, mark);
  return rc;
}

int tb__wire_tensor_from_json(tb__jctx_t *c, tb__arena_t *a, const char *key,
                              const json_t *v, size_t max_bytes,
                              tb__wire_tensor_t *t) {
  return tensor_from_json(c, a, key, v, max_bytes, t, 0);
}

int tb__wire_result_tensor_from_json(tb__jctx_t *c, tb__arena_t *a, const char *key,
                                     const json_t *v, size_t max_bytes,
                                     tb__wire_tensor_t *t) {
  return tensor_from_json(c, a, key, v, max_bytes, t, 1);
}

int tb__wire_model_input_from_json(tb__jctx_t *c, tb__arena_t *a,
                                   const json_t *mi, int32_t **tokens,
                                   size_t *n_tokens) {
  json_t *chunks;
  int rc;
  if ((rc = tb__json_expect_object(c, mi)) != 0 ||
      (rc = tb__json_get_array(c, mi, "chunks", TB_JSON_REQUIRED, &chunks)) != 0)
    return rc;
  size_t total = 0;
  size_t mark = tb__jctx_push_key(c, "chunks");
  for (size_t i = 0; i < json_array_size(chunks); i++) {
    json_t *ch = json_array_get(chunks, i), *toks;
    tb_slice_t type = TB_SLICE_LIT("encoded_text");
    size_t mi_ = tb__jctx_push_index(c, i);
    if ((rc = tb__json_expect_object(c, ch)) != 0 ||
        (rc = tb__json_get_string(c, ch, "type", TB_JSON_OPTIONAL, &type)) < 0)
      goto out;
    if (!tb__slice_eq_str(type, "encoded_text")) {
      rc = tb__jctx_fail(c, "%.*s chunks are not supported: this server's models "
                         "read text tokens only", (int)(type.len > 32 ? 32 : type.len),
                         type.base);
      goto out;
    }
    if ((rc = tb__json_get_array(c, ch, "tokens", TB_JSON_REQUIRED, &toks)) != 0)
      goto out;
    total += json_array_size(toks);
    tb__jctx_pop(c, mi_);
  }
  tb__jctx_pop(c, mark);

  *n_tokens = total;
  *tokens = tb__arena_calloc(a, total ? total : 1, sizeof(int32_t));
  if (*tokens == NULL)
    return TB_ENOMEM;
  size_t k = 0;
  mark = tb__jctx_push_key(c, "chunks");
  for (size_t i = 0; i < json_array_size(chunks); i++) {
    json_t *toks = json_object_get(json_array_get(chunks, i), "tokens");
    size_t m1 = tb__jctx_push_index(c, i);
    size_t m2 = tb__jctx_push_key(c, "tokens");
    for (size_t j = 0; j < json_array_size(toks); j++) {
      int64_t v;
      size_t m3 = tb__jctx_push_index(c, j);
      rc = tb__json_as_int(c, json_array_get(toks, j), 0, INT32_MAX, &v);
      tb__jctx_pop(c, m3);
      if (rc != 0) {
        tb__jctx_pop(c, mark);
        return rc;
      }
      (*tokens)[k++] = (int32_t)v;
    }
    tb__jctx_pop(c, m2);
    tb__jctx_pop(c, m1);
  }
  tb__jctx_pop(c, mark);
  return 0;
out:
  tb__jctx_pop(c, mark);
  return rc;
}

static int datum_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *d,
                           size_t max_bytes, tb__wire_datum_t *out) {
  json_t *mi, *lfi;
  int rc;
  if ((rc = tb__json_expect_object(c, d)) != 0 ||
      (rc = tb__json_get_object(c, d, "model_input", TB_JSON_REQUIRED, &mi)) != 0)
    return rc;
  size_t mark = tb__jctx_push_key(c, "model_input");
  rc = tb__wire_model_input_from_json(c, a, mi, &out->tokens, &out->n_tokens);
  tb__jctx_pop(c, mark);
  if (rc != 0)
    return rc;
  if ((rc = tb__json_get_object(c, d, "loss_fn_inputs", TB_JSON_OPTIONAL, &lfi)) < 0)
    return rc;
  return tb__wire_named_tensors_from_json(c, a, lfi, "loss_fn_inputs", max_bytes, 0,
                                          &out->inputs, &out->n_inputs);
}

/* What a named tensor's reader needs beside the member. */
typedef struct {
  size_t max_bytes;
  int result;
} tensor_ctx_t;

static int read_named_tensor(tb__jctx_t *c, tb__arena_t *a, void *ctx, const char *name,
                             const json_t *v, void *out) {
  const tensor_ctx_t *t = ctx;
  tb__wire_named_tensor_t *nt = out;
  if ((nt->name = tb__arena_strndup(a, name, strlen(name))) == NULL)
    return TB_ENOMEM;
  return tensor_from_json(c, a, name, v, t->max_bytes, &nt->tensor, t->result);
}

int tb__wire_named_tensors_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *obj,
                                     const char *key, size_t max_bytes, int result,
                                     tb__wire_named_tensor_t **out, size_t *n) {
  tensor_ctx_t t = { max_bytes, result };
  void *items = NULL;
  int rc = tb__wire_members_from_json(c, a, obj, key, sizeof(**out), read_named_tensor, &t,
                                      &items, n);
  if (rc == 0)
    *out = items;
  return rc;
}

/* One value of loss_fn_config. */
/* The datums of a request's "data" array, for tb__wire_items_read. */
typedef struct datums_s {
  const json_t *data;
  size_t max_bytes;
} datums_t;

static int read_datum(tb__jctx_t *c, tb__arena_t *a, void *ctx, size_t i, void *out) {
  const datums_t *d = ctx;
  return datum_from_json(c, a, json_array_get(d->data, i), d->max_bytes, out);
}

static int read_config_entry(tb__jctx_t *c, tb__arena_t *a, void *ctx, const char *name,
                             const json_t *v, void *out) {
  (void)ctx;
  tb__wire_config_entry_t *e = out;
  if ((e->name = tb__arena_strndup(a, name, strlen(name))) == NULL)
    return TB_ENOMEM;
  return tb__json_as_double(c, v, &e->value);
}

int tb__wire_fwdbwd_input_from_json(tb__jctx_t *c, tb__arena_t *a,
                                    const json_t *in, size_t max_bytes,
                                    tb__wire_fwdbwd_t *out) {
  json_t *data, *conf;
  tb_slice_t loss_fn;
  int rc;
  if ((rc = tb__json_expect_object(c, in)) != 0 ||
      (rc = tb__json_get_array(c, in, "data", TB_JSON_REQUIRED, &data)) != 0 ||
      (rc = tb__json_get_string(c, in, "loss_fn", TB_JSON_REQUIRED, &loss_fn)) != 0 ||
      (rc = tb__json_get_object(c, in, "loss_fn_config", TB_JSON_OPTIONAL, &conf)) < 0)
    return rc;
  if ((out->loss_fn = tb__arena_strndup(a, loss_fn.base, loss_fn.len)) == NULL)
    return TB_ENOMEM;
  datums_t datums = { data, max_bytes };
  void *items = NULL;
  if ((rc = tb__wire_items_read(c, a, "data", json_array_size(data), sizeof(*out->data),
                                read_datum, &datums, &items)) != 0)
    return rc;
  out->data = items;
  out->n_data = json_array_size(data);

  void *config = NULL;
  rc = tb__wire_members_from_json(c, a, conf, "loss_fn_config", sizeof(*out->config),
                                  read_config_entry, NULL, &config, &out->n_config);
  out->config = config;
  return rc;
}

int tb__wire_fwdbwd_request_from_json(tb__jctx_t *c, tb__arena_t *a,
                                      const json_t *body, const char *input_key,
                                      size_t max_bytes, tb__wire_fwdbwd_t *out) {
  json_t *in;
  tb_slice_t model_id;
  int rc;
  memset(out, 0, sizeof(*out));
  out->seq_id = -1;
  out->forward_only = strcmp(input_key, "forward_input") == 0;
  if ((rc = tb__json_expect_object(c, body)) != 0 ||
      (rc = tb__json_get_object(c, body, input_key, TB_JSON_REQUIRED, &in)) != 0)
    return rc;
  size_t mark = tb__jctx_push_key(c, input_key);
  rc = tb__wire_fwdbwd_input_from_json(c, a, in, max_bytes, out);
  tb__jctx_pop(c, mark);
  if (rc != 0)
    return rc;
  if ((rc = tb__json_get_string(c, body, "model_id", TB_JSON_OPTIONAL, &model_id)) < 0)
    return rc;
  if (rc == 0 && (out->model_id = tb__arena_strndup(a, model_id.base, model_id.len)) == NULL)
    return TB_ENOMEM;
  rc = tb__json_get_int(c, body, "seq_id", TB_JSON_OPTIONAL, 0, INT32_MAX, &out->seq_id);
  return rc < 0 ? rc : 0;
}

/*
 * Tensor helpers shared by the JSON and protobuf decoders: shape checks,
 * allocation from the request arena and CSR expansion; and the one JSON
 * encoder of a tensor (encode.h), for requests and results alike.
 */
#include "wire/tensor.h"

#include <math.h>
#include <string.h>

#include "wire/encode.h"

/* json_object_set_new steals its value even when it fails, so children are
 * attached to their parent first and filled afterwards: one decref of the
 * root releases everything on any failure. */
json_t *tb__wire_tensor_to_json(const tb__wire_tensor_t *t, int nonfinite_null) {
  json_t *obj = json_object(), *data = json_array(), *shape = json_array();
  if (obj == NULL) {
    json_decref(data);
    json_decref(shape);
    return NULL;
  }
  /* json_object_set_new steals its value even when it fails: every child
   * is attached (no || chain, which would leave the later ones behind), so
   * one decref of obj releases everything on any failure. */
  int bad = json_object_set_new(obj, "data", data) != 0;
  bad |= json_object_set_new(obj, "dtype", json_string(t->dtype == TB_DTYPE_FLOAT32
                                                           ? "float32" : "int64")) != 0;
  bad |= json_object_set_new(obj, "shape", shape) != 0;
  if (bad)
    goto fail;
  for (size_t i = 0; i < t->numel; i++) {
    json_t *v;
    if (t->dtype != TB_DTYPE_FLOAT32)
      v = json_integer((json_int_t)t->i64[i]);
    else if (isfinite(t->f32[i]))
      v = json_real(t->f32[i]);
    else if (nonfinite_null)
      v = json_null();
    else
      goto fail;
    if (json_array_append_new(data, v) != 0)
      goto fail;
  }
  for (int d = 0; d < t->ndim; d++)
    if (json_array_append_new(shape, json_integer(t->shape[d])) != 0)
      goto fail;
  return obj;
fail:
  json_decref(obj);
  return NULL;
}

const tb__wire_tensor_t *tb__wire_datum_input(const tb__wire_datum_t *d,
                                             const char *name) {
  for (size_t i = 0; i < d->n_inputs; i++)
    if (strcmp(d->inputs[i].name, name) == 0)
      return &d->inputs[i].tensor;
  return NULL;
}

int tb__wire_fwdbwd_config(const tb__wire_fwdbwd_t *f, const char *name,
                           double *out) {
  for (size_t i = 0; i < f->n_config; i++) {
    if (strcmp(f->config[i].name, name) == 0) {
      *out = f->config[i].value;
      return 1;
    }
  }
  return 0;
}

int tb__wire_tensor_set_shape(tb__jctx_t *c, tb__wire_tensor_t *t,
                              const int64_t *shape, size_t ndim,
                              size_t numel_given) {
  if (ndim == 0) {
    /* No shape: the tensor is read as 1-D. */
    t->ndim = 1;
    t->shape[0] = (int64_t)numel_given;
    t->numel = numel_given;
    return 0;
  }
  if (ndim > TB_WIRE_MAX_NDIM)
    return tb__jctx_fail(c, "shape: at most %d dimensions are supported, got %zu",
                         TB_WIRE_MAX_NDIM, ndim);
  size_t numel = 1;
  for (size_t i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return tb__jctx_fail(c, "shape[%zu]: %lld is negative", i,
                           (long long)shape[i]);
    if (shape[i] != 0 && numel > SIZE_MAX / (size_t)shape[i] / 8)
      return tb__jctx_fail(c, "shape: too many elements");
    numel *= (size_t)shape[i];
    t->shape[i] = shape[i];
  }
  t->ndim = (int)ndim;
  t->numel = numel;
  return 0;
}

int tb__wire_tensor_alloc(tb__jctx_t *c, tb__arena_t *arena,
                          tb__wire_tensor_t *t, size_t max_bytes) {
  size_t esize = t->dtype == TB_DTYPE_FLOAT32 ? sizeof(float) : sizeof(int64_t);
  if (t->numel > max_bytes / esize) {
    char shape[128];
    size_t len = 0;
    for (int i = 0; i < t->ndim && len < sizeof(shape); i++)
      len += (size_t)snprintf(shape + len, sizeof(shape) - len, "%s%lld", i ? ", " : "",
                              (long long)t->shape[i]);
    return tb__jctx_fail(c, "shape [%s]: %zu elements of %zu bytes, more than the %zu "
                         "bytes a tensor of a request may take", shape, t->numel, esize,
                         max_bytes);
  }
  size_t n = t->numel ? t->numel : 1;
  if (t->dtype == TB_DTYPE_FLOAT32) {
    t->f32 = tb__arena_calloc(arena, n, sizeof(float));
    t->i64 = NULL;
    if (t->f32 == NULL)
      return TB_ENOMEM;
  } else {
    t->i64 = tb__arena_calloc(arena, n, sizeof(int64_t));
    t->f32 = NULL;
    if (t->i64 == NULL)
      return TB_ENOMEM;
  }
  return 0;
}

int tb__wire_csr_check(tb__jctx_t *c, const tb__wire_tensor_t *t,
                       const int64_t *crow, size_t n_crow, const int64_t *col,
                       size_t n_col, size_t nnz) {
  if (t->ndim != 2)
    return tb__jctx_fail(c, "sparse tensors must be 2-D with a shape");
  size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
  if (n_crow != rows + 1)
    return tb__jctx_fail(c, "sparse_crow_indices: expected %zu entries, got %zu",
                         rows + 1, n_crow);
  if (n_col != nnz)
    return tb__jctx_fail(c, "sparse_col_indices: expected %zu entries (one per "
                         "value), got %zu", nnz, n_col);
  if (crow[0] != 0 || (size_t)crow[rows] != nnz)
    return tb__jctx_fail(c, "sparse_crow_indices: must start at 0 and end at %zu",
                         nnz);
  for (size_t r = 0; r < rows; r++)
    if (crow[r + 1] < crow[r])
      return tb__jctx_fail(c, "sparse_crow_indices: must not decrease");
  for (size_t i = 0; i < nnz; i++)
    if (col[i] < 0 || (size_t)col[i] >= cols)
      return tb__jctx_fail(c, "sparse_col_indices[%zu]: %lld is outside [0, %zu)",
                           i, (long long)col[i], cols);
  return 0;
}

/* Position of the i-th stored value in the dense row-major tensor. */
size_t tb__wire_csr_position(const tb__wire_tensor_t *t, const int64_t *crow,
                             const int64_t *col, size_t i, size_t *row_hint) {
  size_t r = *row_hint;
  while ((size_t)crow[r + 1] <= i)
    r++;
  *row_hint = r;
  return r * (size_t)t->shape[1] + (size_t)col[i];
}

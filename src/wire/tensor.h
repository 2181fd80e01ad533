/*
 * Internal helpers of the wire decoders (see types.h for the types).
 */
#ifndef TB_WIRE_TENSOR_H
#define TB_WIRE_TENSOR_H

#include "core/json.h"
#include "wire/types.h"

/* Sets ndim/shape/numel from a declared shape; with no shape the tensor is
 * 1-D of numel_given elements. */
int tb__wire_tensor_set_shape(tb__jctx_t *c, tb__wire_tensor_t *t,
                              const int64_t *shape, size_t ndim,
                              size_t numel_given);
/* Zeroed storage for t->numel elements of t->dtype, refused with a path
 * error naming the shape when that is more than max_bytes.  Decoders
 * check a dense tensor's shape against the values present before they
 * get here; a sparse tensor is expanded to its declared shape, so this is
 * what keeps a few bytes of request from asking for gigabytes. */
int tb__wire_tensor_alloc(tb__jctx_t *c, tb__arena_t *arena,
                          tb__wire_tensor_t *t, size_t max_bytes);
/* Validates CSR indices of a 2-D tensor holding nnz stored values. */
int tb__wire_csr_check(tb__jctx_t *c, const tb__wire_tensor_t *t,
                       const int64_t *crow, size_t n_crow, const int64_t *col,
                       size_t n_col, size_t nnz);
/* Dense index of stored value i (values visited in order; row_hint starts
 * at 0). */
size_t tb__wire_csr_position(const tb__wire_tensor_t *t, const int64_t *crow,
                             const int64_t *col, size_t i, size_t *row_hint);

#endif /* TB_WIRE_TENSOR_H */

/*
 * Protobuf decoding of ForwardBackwardRequest (Tinker SDK 0.25) into the
 * same tb__wire_fwdbwd_t the JSON decoder fills.  protobuf-c allocates from
 * the request arena, so nothing here is freed one by one.
 */
#include "wire/datum.h"

#include <math.h>
#include <string.h>

#include "wire/codec.h"
#include "wire/le.h"
#include "wire/proto.h"
#include "wire/tensor.h"

/* Element size and target dtype of a proto DType. */
static int proto_dtype(tb__jctx_t *c, TinkerPublic__DType d, size_t *esize,
                       tb__dtype_t *out) {
  switch (d) {
    case TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32: *esize = 4; *out = TB_DTYPE_FLOAT32; return 0;
    case TINKER_PUBLIC__DTYPE__DTYPE_BFLOAT16: *esize = 2; *out = TB_DTYPE_FLOAT32; return 0;
    case TINKER_PUBLIC__DTYPE__DTYPE_INT64: *esize = 8; *out = TB_DTYPE_INT64; return 0;
    case TINKER_PUBLIC__DTYPE__DTYPE_INT32: *esize = 4; *out = TB_DTYPE_INT64; return 0;
    default:
      return tb__jctx_fail(c, "dtype: unsupported value %d", (int)d);
  }
}

static int store(tb__jctx_t *c, tb__wire_tensor_t *t, TinkerPublic__DType d,
                 size_t pos, const uint8_t *p) {
  switch (d) {
    case TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32: t->f32[pos] = tb__le_f32(p); break;
    case TINKER_PUBLIC__DTYPE__DTYPE_BFLOAT16: t->f32[pos] = tb__le_bf16(p); break;
    case TINKER_PUBLIC__DTYPE__DTYPE_INT64: t->i64[pos] = tb__le_i64(p); return 0;
    default: t->i64[pos] = tb__le_i32(p); return 0;
  }
  if (!isfinite(t->f32[pos]))
    return tb__jctx_fail(c, "value %zu is not a finite number", pos);
  return 0;
}

static int tensor_from_proto(tb__jctx_t *c, tb__arena_t *a,
                             const TinkerPublic__Tensor *pt, size_t max_bytes,
                             tb__wire_tensor_t *t) {
  size_t esize = 0;
  int rc;
  memset(t, 0, sizeof(*t));
  if ((rc = proto_dtype(c, pt->dtype, &esize, &t->dtype)) != 0)
    return rc;
  const ProtobufCBinaryData *vals;
  if (pt->encoding_case == TINKER_PUBLIC__TENSOR__ENCODING_DENSE)
    vals = &pt->dense;
  else if (pt->encoding_case == TINKER_PUBLIC__TENSOR__ENCODING_SPARSE_CSR)
    vals = &pt->sparse_csr->values;
  else
    return tb__jctx_fail(c, "tensor has neither dense nor sparse_csr data");
  if (vals->len % esize != 0)
    return tb__jctx_fail(c, "data: %zu bytes is not a whole number of %zu-byte "
                         "elements", vals->len, esize);
  size_t nvals = vals->len / esize;
  if ((rc = tb__wire_tensor_set_shape(c, t, pt->shape, pt->n_shape, nvals)) != 0)
    return rc;
  /* A dense tensor's shape must describe the values sent, before its
   * storage is allocated from that shape. */
  if (pt->encoding_case == TINKER_PUBLIC__TENSOR__ENCODING_DENSE && nvals != t->numel)
    return tb__jctx_fail(c, "data has %zu elements but the shape holds %zu",
                         nvals, t->numel);
  if ((rc = tb__wire_tensor_alloc(c, a, t, max_bytes)) != 0)
    return rc;

  if (pt->encoding_case == TINKER_PUBLIC__TENSOR__ENCODING_DENSE) {
    for (size_t i = 0; i < nvals; i++)
      if ((rc = store(c, t, pt->dtype, i, vals->data + i * esize)) != 0)
        return rc;
    return 0;
  }

  const TinkerPublic__SparseCsr *csr = pt->sparse_csr;
  if (csr->crow_indices.len % 8 != 0 || csr->col_indices.len % 8 != 0)
    return tb__jctx_fail(c, "sparse indices must be int64 arrays");
  size_t ncr = csr->crow_indices.len / 8, nco = csr->col_indices.len / 8;
  int64_t *cr = tb__arena_alloc(a, (ncr + 1) * 8), *co = tb__arena_alloc(a, (nco + 1) * 8);
  if (cr == NULL || co == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < ncr; i++)
    cr[i] = tb__le_i64(csr->crow_indices.data + i * 8);
  for (size_t i = 0; i < nco; i++)
    co[i] = tb__le_i64(csr->col_indices.data + i * 8);
  if ((rc = tb__wire_csr_check(c, t, cr, ncr, co, nco, nvals)) != 0)
    return rc;
  size_t row = 0;
  for (size_t i = 0; i < nvals; i++)
    if ((rc = store(c, t, pt->dtype, tb__wire_csr_position(t, cr, co, i, &row),
                    vals->data + i * esize)) != 0)
      return rc;
  return 0;
}

static int datum_from_proto(tb__jctx_t *c, tb__arena_t *a,
                            const TinkerPublic__Datum *pd, size_t max_bytes,
                            tb__wire_datum_t *d) {
  size_t total = 0;
  size_t mark = tb__jctx_push_key(c, "model_input");
  for (size_t i = 0; i < pd->n_model_input; i++) {
    const TinkerPublic__Chunk *ch = pd->model_input[i];
    if (ch->chunk_case != TINKER_PUBLIC__CHUNK__CHUNK_ENCODED_TEXT) {
      tb__jctx_push_index(c, i);
      int rc = tb__jctx_fail(c, "%s chunks are not supported: this server's models "
                             "read text tokens only",
                             ch->chunk_case == TINKER_PUBLIC__CHUNK__CHUNK_IMAGE ? "image"
                                                                            : "non-text");
      tb__jctx_pop(c, mark);
      return rc;
    }
    if (ch->encoded_text->tokens.len % 4 != 0) {
      tb__jctx_push_index(c, i);
      int rc = tb__jctx_fail(c, "tokens: %zu bytes is not an int32 array",
                             ch->encoded_text->tokens.len);
      tb__jctx_pop(c, mark);
      return rc;
    }
    total += ch->encoded_text->tokens.len / 4;
  }
  d->n_tokens = total;
  d->tokens = tb__arena_calloc(a, total ? total : 1, sizeof(int32_t));
  if (d->tokens == NULL)
    return TB_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < pd->n_model_input; i++) {
    const ProtobufCBinaryData *b = &pd->model_input[i]->encoded_text->tokens;
    for (size_t j = 0; j < b->len / 4; j++) {
      int32_t tok = tb__le_i32(b->data + j * 4);
      if (tok < 0) {
        tb__jctx_push_index(c, i);
        int rc = tb__jctx_fail(c, "tokens[%zu]: %d is negative", j, (int)tok);
        tb__jctx_pop(c, mark);
        return rc;
      }
      d->tokens[k++] = tok;
    }
  }
  tb__jctx_pop(c, mark);

  d->n_inputs = pd->n_loss_fn_inputs;
  d->inputs = tb__arena_calloc(a, d->n_inputs ? d->n_inputs : 1, sizeof(*d->inputs));
  if (d->inputs == NULL)
    return TB_ENOMEM;
  mark = tb__jctx_push_key(c, "loss_fn_inputs");
  for (size_t i = 0; i < d->n_inputs; i++) {
    const TinkerPublic__Datum__LossFnInputsEntry *e = pd->loss_fn_inputs[i];
    size_t mk = tb__jctx_push_key(c, e->key);
    d->inputs[i].name = e->key;
    int rc = e->value ? tensor_from_proto(c, a, e->value, max_bytes, &d->inputs[i].tensor)
                      : tb__jctx_fail(c, "missing tensor");
    tb__jctx_pop(c, mk);
    if (rc != 0) {
      tb__jctx_pop(c, mark);
      return rc;
    }
  }
  tb__jctx_pop(c, mark);
  return 0;
}

/* A map key sent twice means its last value (wire/proto.h). */
static int maps_last_wins(tb__arena_t *a, TinkerPublic__ForwardBackwardRequest *req) {
  int rc = TB__WIRE_PROTO_MAP_LAST(a, req->loss_fn_config, req->n_loss_fn_config,
                                   TinkerPublic__ForwardBackwardRequest__LossFnConfigEntry);
  for (size_t i = 0; rc == 0 && i < req->n_data; i++)
    rc = TB__WIRE_PROTO_MAP_LAST(a, req->data[i]->loss_fn_inputs,
                                 req->data[i]->n_loss_fn_inputs,
                                 TinkerPublic__Datum__LossFnInputsEntry);
  return rc;
}

/* The datums of a request, for tb__wire_items_read. */
typedef struct datums_s {
  TinkerPublic__Datum **data;
  size_t max_bytes;
} datums_t;

static int read_datum(tb__jctx_t *c, tb__arena_t *a, void *ctx, size_t i, void *out) {
  const datums_t *d = ctx;
  return datum_from_proto(c, a, d->data[i], d->max_bytes, out);
}

int tb__wire_fwdbwd_request_from_proto(tb__jctx_t *c, tb__arena_t *a,
                                       tb_slice_t body, size_t max_bytes,
                                       tb__wire_fwdbwd_t *out) {
  ProtobufCAllocator alloc = tb__wire_proto_allocator(a);
  memset(out, 0, sizeof(*out));
  TinkerPublic__ForwardBackwardRequest *req =
      tinker_public__forward_backward_request__unpack(
          &alloc, body.len, (const uint8_t *)body.base);
  if (req == NULL)
    return tb__jctx_fail(c, "not a valid protobuf ForwardBackwardRequest");
  if (maps_last_wins(a, req) != 0)
    return TB_ENOMEM;
  out->model_id = req->model_id && req->model_id[0] ? req->model_id : NULL;
  out->seq_id = req->seq_id;
  out->loss_fn = req->loss_fn ? req->loss_fn : "";
  out->forward_only = req->forward_only;
  if (req->seq_id < 0)
    return tb__jctx_fail_at(c, "seq_id", "%d is negative", (int)req->seq_id);
  out->n_config = req->n_loss_fn_config;
  out->config = tb__arena_calloc(a, out->n_config ? out->n_config : 1,
                                 sizeof(*out->config));
  if (out->config == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < out->n_config; i++) {
    out->config[i].name = req->loss_fn_config[i]->key;
    out->config[i].value = req->loss_fn_config[i]->value;
    if (!isfinite(out->config[i].value)) {
      size_t m = tb__jctx_push_key(c, "loss_fn_config");
      int rc = tb__jctx_fail_at(c, out->config[i].name, "expected a finite number");
      tb__jctx_pop(c, m);
      return rc;
    }
  }
  datums_t datums = { req->data, max_bytes };
  void *items = NULL;
  int rc = tb__wire_items_read(c, a, "data", req->n_data, sizeof(*out->data), read_datum,
                               &datums, &items);
  if (rc != 0)
    return rc;
  out->data = items;
  out->n_data = req->n_data;
  return 0;
}

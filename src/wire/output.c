/*
 * ForwardBackwardOutput codecs (see output.h).
 */
#include "wire/output.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "wire/codec.h"
#include "wire/datum.h"
#include "wire/encode.h"
#include "wire/le.h"
#include "wire/proto.h"
#include "wire/tensor.h"

/* What one tensor of a result may take once decoded: a dense one holds
 * only the values the answer carries; this bounds a sparse one, which is
 * expanded to its declared shape. */
#define OUTPUT_MAX_TENSOR_BYTES ((size_t)1 << 30)

/* ---------------------------------------------------------------- JSON */

json_t *tb__wire_fwdbwd_output_to_json(const tb__wire_fwdbwd_output_t *o) {
  json_t *root = json_object(), *outs = json_array();
  json_t *metrics = tb__wire_metrics_to_json(o->metrics, o->n_metrics);
  if (root == NULL) {
    json_decref(outs);
    json_decref(metrics);
    return NULL;
  }
  const char *type = o->loss_fn_output_type ? o->loss_fn_output_type : "ArrayRecord";
  int bad = json_object_set_new(root, "loss_fn_output_type", json_string(type)) != 0;
  bad |= json_object_set_new(root, "loss_fn_outputs", outs) != 0;
  bad |= json_object_set_new(root, "metrics", metrics) != 0;
  if (bad)
    goto fail;
  for (size_t i = 0; i < o->n_outputs; i++) {
    json_t *rec = json_object();
    if (json_array_append_new(outs, rec) != 0)
      goto fail;
    for (size_t f = 0; f < o->outputs[i].n_fields; f++) {
      const tb__wire_named_tensor_t *nt = &o->outputs[i].fields[f];
      if (json_object_set_new(rec, nt->name, tb__wire_tensor_to_json(&nt->tensor, 1)) != 0)
        goto fail;
    }
  }
  return root;
fail:
  json_decref(root);
  return NULL;
}

int tb__wire_fwdbwd_output_from_json(tb__jctx_t *c, tb__arena_t *a,
                                     const json_t *v,
                                     tb__wire_fwdbwd_output_t *o) {
  json_t *outs, *metrics;
  tb_slice_t type = TB_SLICE_LIT("ArrayRecord");
  int rc;
  memset(o, 0, sizeof(*o));
  if ((rc = tb__json_expect_object(c, v)) != 0 ||
      (rc = tb__json_get_string(c, v, "loss_fn_output_type", TB_JSON_OPTIONAL, &type)) < 0 ||
      (rc = tb__json_get_array(c, v, "loss_fn_outputs", TB_JSON_REQUIRED, &outs)) != 0 ||
      (rc = tb__json_get_object(c, v, "metrics", TB_JSON_REQUIRED, &metrics)) != 0)
    return rc;
  if ((o->loss_fn_output_type = tb__arena_strndup(a, type.base, type.len)) == NULL)
    return TB_ENOMEM;
  o->n_outputs = json_array_size(outs);
  o->outputs = tb__arena_calloc(a, o->n_outputs + 1, sizeof(*o->outputs));
  if (o->outputs == NULL)
    return TB_ENOMEM;
  size_t mark = tb__jctx_push_key(c, "loss_fn_outputs");
  for (size_t i = 0; i < o->n_outputs && rc == 0; i++) {
    const json_t *rec = json_array_get(outs, i);
    tb__wire_datum_output_t *d = &o->outputs[i];
    size_t mi = tb__jctx_push_index(c, i);
    rc = tb__json_expect_object(c, rec);
    rc = rc ? rc : tb__wire_named_tensors_from_json(c, a, rec, NULL, OUTPUT_MAX_TENSOR_BYTES,
                                                    1, &d->fields, &d->n_fields);
    tb__jctx_pop(c, mi);
  }
  tb__jctx_pop(c, mark);
  /* A metric that diverged travels as null (tb__wire_real_or_null). */
  return rc ? rc : tb__wire_metrics_from_json(c, a, v, "metrics", &o->metrics, &o->n_metrics);
}

/* ---------------------------------------------------------------- protobuf */

static size_t elem_size(tb__dtype_t d) {
  return d == TB_DTYPE_FLOAT32 ? 4 : 8;
}

/* The field layout shared by all datums must match datum 0's. */
static int same_layout(const tb__wire_tensor_t *a, const tb__wire_tensor_t *b) {
  if (a->dtype != b->dtype || a->ndim != b->ndim)
    return 0;
  for (int d = 1; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d])
      return 0;
  return 1;
}

static const tb__wire_tensor_t *find_field(const tb__wire_datum_output_t *d,
                                          const char *name) {
  for (size_t f = 0; f < d->n_fields; f++)
    if (strcmp(d->fields[f].name, name) == 0)
      return &d->fields[f].tensor;
  return NULL;
}

int tb__wire_fwdbwd_output_to_proto(const tb__wire_fwdbwd_output_t *o,
                                    tb__buf_t *out) {
  size_t nf = o->n_outputs ? o->outputs[0].n_fields : 0;
  size_t nd = o->n_outputs;
  int rc = TB_ENOMEM;
  TinkerPublic__BatchedTensor *bts = calloc(nf + 1, sizeof(*bts));
  TinkerPublic__ArrayRecord__FieldsEntry *fes = calloc(nf + 1, sizeof(*fes));
  TinkerPublic__ArrayRecord__FieldsEntry **fep = calloc(nf + 1, sizeof(*fep));
  TinkerPublic__ForwardBackwardOutput__MetricsEntry *mes =
      calloc(o->n_metrics + 1, sizeof(*mes));
  TinkerPublic__ForwardBackwardOutput__MetricsEntry **mep =
      calloc(o->n_metrics + 1, sizeof(*mep));
  int64_t *trailing = calloc(nf * TB_WIRE_MAX_NDIM + 1, sizeof(int64_t));
  if (!bts || !fes || !fep || !mes || !mep || !trailing)
    goto done;

  for (size_t f = 0; f < nf; f++) {
    const tb__wire_named_tensor_t *f0 = &o->outputs[0].fields[f];
    size_t es = elem_size(f0->tensor.dtype), bytes = 0;
    for (size_t i = 0; i < nd; i++) {
      const tb__wire_tensor_t *t = find_field(&o->outputs[i], f0->name);
      if (t == NULL || !same_layout(t, &f0->tensor)) {
        rc = TB_EINVAL;
        goto done;
      }
      bytes += t->numel * es;
    }
    TinkerPublic__BatchedTensor *bt = &bts[f];
    tinker_public__batched_tensor__init(bt);
    bt->data.data = malloc(bytes + 1);
    bt->offsets.data = malloc((nd + 1) * 8);
    if (bt->data.data == NULL || bt->offsets.data == NULL)
      goto done;
    bt->data.len = bytes;
    bt->offsets.len = (nd + 1) * 8;
    size_t off = 0;
    tb__le_put_i64(bt->offsets.data, 0);
    for (size_t i = 0; i < nd; i++) {
      const tb__wire_tensor_t *t = find_field(&o->outputs[i], f0->name);
      /* Host order is the wire's little-endian order (le.h). */
      memcpy(bt->data.data + off,
             t->dtype == TB_DTYPE_FLOAT32 ? (const void *)t->f32 : (const void *)t->i64,
             t->numel * es);
      off += t->numel * es;
      tb__le_put_i64(bt->offsets.data + (i + 1) * 8, (int64_t)off);
    }
    bt->dtype = f0->tensor.dtype == TB_DTYPE_FLOAT32 ? TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32
                                                     : TINKER_PUBLIC__DTYPE__DTYPE_INT64;
    bt->n_trailing_shape = f0->tensor.ndim > 1 ? (size_t)f0->tensor.ndim - 1 : 0;
    bt->trailing_shape = trailing + f * TB_WIRE_MAX_NDIM;
    for (size_t d = 0; d < bt->n_trailing_shape; d++)
      bt->trailing_shape[d] = f0->tensor.shape[d + 1];
    tinker_public__array_record__fields_entry__init(&fes[f]);
    fes[f].key = (char *)f0->name;
    fes[f].value = bt;
    fep[f] = &fes[f];
  }

  TinkerPublic__ArrayRecord rec = TINKER_PUBLIC__ARRAY_RECORD__INIT;
  TinkerPublic__ArrayRecord *recp = &rec;
  rec.type_tag = "ArrayRecord";
  rec.n_fields = nf;
  rec.fields = fep;
  rec.num_datums = (int64_t)nd;
  for (size_t i = 0; i < o->n_metrics; i++) {
    tinker_public__forward_backward_output__metrics_entry__init(&mes[i]);
    mes[i].key = (char *)o->metrics[i].name;
    mes[i].value = o->metrics[i].value;
    mep[i] = &mes[i];
  }
  TinkerPublic__ForwardBackwardOutput msg = TINKER_PUBLIC__FORWARD_BACKWARD_OUTPUT__INIT;
  msg.loss_fn_output_type = (char *)(o->loss_fn_output_type ? o->loss_fn_output_type
                                                           : "ArrayRecord");
  msg.n_loss_fn_outputs = nd ? 1 : 0;
  msg.loss_fn_outputs = &recp;
  msg.n_metrics = o->n_metrics;
  msg.metrics = mep;
  size_t n = tinker_public__forward_backward_output__get_packed_size(&msg);
  if ((rc = tb__buf_reserve(out, n)) != 0)
    goto done;
  out->len += tinker_public__forward_backward_output__pack(&msg, (uint8_t *)out->base + out->len);
  rc = 0;
done:
  for (size_t f = 0; bts && f < nf; f++) {
    free(bts[f].data.data);
    free(bts[f].offsets.data);
  }
  free(bts);
  free(fes);
  free(fep);
  free(mes);
  free(mep);
  free(trailing);
  return rc;
}

/* Decodes one field of one ArrayRecord into datums [first, first + n). */
static int field_from_proto(tb__jctx_t *c, tb__arena_t *a, const char *name,
                            const TinkerPublic__BatchedTensor *bt,
                            tb__wire_fwdbwd_output_t *o, size_t first, size_t n) {
  size_t es;
  tb__dtype_t dt;
  switch (bt->dtype) {
    case TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32: es = 4; dt = TB_DTYPE_FLOAT32; break;
    case TINKER_PUBLIC__DTYPE__DTYPE_BFLOAT16: es = 2; dt = TB_DTYPE_FLOAT32; break;
    case TINKER_PUBLIC__DTYPE__DTYPE_INT64: es = 8; dt = TB_DTYPE_INT64; break;
    case TINKER_PUBLIC__DTYPE__DTYPE_INT32: es = 4; dt = TB_DTYPE_INT64; break;
    default: return tb__jctx_fail(c, "dtype: unsupported value %d", (int)bt->dtype);
  }
  if (bt->offsets.len != (n + 1) * 8)
    return tb__jctx_fail(c, "offsets: expected %zu int64 values, got %zu bytes", n + 1,
                         bt->offsets.len);
  if (bt->n_trailing_shape + 1 > TB_WIRE_MAX_NDIM)
    return tb__jctx_fail(c, "trailing_shape: too many dimensions");
  size_t inner = 1;
  for (size_t d = 0; d < bt->n_trailing_shape; d++) {
    if (bt->trailing_shape[d] <= 0)
      return tb__jctx_fail(c, "trailing_shape[%zu]: must be positive", d);
    /* A product past SIZE_MAX would wrap, to zero at worst. */
    if ((uint64_t)bt->trailing_shape[d] > SIZE_MAX / inner)
      return tb__jctx_fail(c, "trailing_shape: too many elements");
    inner *= (size_t)bt->trailing_shape[d];
  }
  for (size_t i = 0; i < n; i++) {
    int64_t lo = tb__le_i64(bt->offsets.data + i * 8), hi = tb__le_i64(bt->offsets.data + i * 8 + 8);
    if (lo < 0 || hi < lo || (uint64_t)hi > bt->data.len || (size_t)(hi - lo) % es != 0)
      return tb__jctx_fail(c, "offsets[%zu]: [%lld, %lld) is not a whole run of elements "
                           "inside %zu bytes", i, (long long)lo, (long long)hi, bt->data.len);
    size_t count = (size_t)(hi - lo) / es;
    if (count % inner != 0)
      return tb__jctx_fail(c, "datum %zu: %zu elements do not fill the trailing shape", i,
                           count);
    tb__wire_datum_output_t *d = &o->outputs[first + i];
    tb__wire_named_tensor_t *nt = &d->fields[d->n_fields++];
    nt->name = name;
    tb__wire_tensor_t *t = &nt->tensor;
    t->dtype = dt;
    t->ndim = 1 + (int)bt->n_trailing_shape;
    t->shape[0] = (int64_t)(count / inner);
    for (size_t k = 0; k < bt->n_trailing_shape; k++)
      t->shape[k + 1] = bt->trailing_shape[k];
    t->numel = count;
    int rc = tb__wire_tensor_alloc(c, a, t, SIZE_MAX);  /* count <= the bytes present */
    if (rc != 0)
      return rc;
    /* No arithmetic on an empty field's missing buffer. */
    const uint8_t *p = count > 0 ? bt->data.data + lo : NULL;
    for (size_t k = 0; k < count; k++, p += es) {
      switch (bt->dtype) {
        case TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32: t->f32[k] = tb__le_f32(p); break;
        case TINKER_PUBLIC__DTYPE__DTYPE_BFLOAT16: t->f32[k] = tb__le_bf16(p); break;
        case TINKER_PUBLIC__DTYPE__DTYPE_INT64: t->i64[k] = tb__le_i64(p); break;
        default: t->i64[k] = tb__le_i32(p); break;
      }
    }
  }
  return 0;
}

int tb__wire_fwdbwd_output_from_proto(tb__jctx_t *c, tb__arena_t *a,
                                      tb_slice_t body,
                                      tb__wire_fwdbwd_output_t *o) {
  ProtobufCAllocator alloc = tb__wire_proto_allocator(a);
  memset(o, 0, sizeof(*o));
  TinkerPublic__ForwardBackwardOutput *msg = tinker_public__forward_backward_output__unpack(
      &alloc, body.len, (const uint8_t *)body.base);
  if (msg == NULL)
    return tb__jctx_fail(c, "not a valid protobuf ForwardBackwardOutput");
  /* A map key sent twice means its last value (wire/proto.h). */
  int mrc = TB__WIRE_PROTO_MAP_LAST(a, msg->metrics, msg->n_metrics,
                                    TinkerPublic__ForwardBackwardOutput__MetricsEntry);
  for (size_t r = 0; mrc == 0 && r < msg->n_loss_fn_outputs; r++)
    mrc = TB__WIRE_PROTO_MAP_LAST(a, msg->loss_fn_outputs[r]->fields,
                                  msg->loss_fn_outputs[r]->n_fields,
                                  TinkerPublic__ArrayRecord__FieldsEntry);
  if (mrc != 0)
    return TB_ENOMEM;
  o->loss_fn_output_type = msg->loss_fn_output_type && msg->loss_fn_output_type[0]
                               ? msg->loss_fn_output_type : "ArrayRecord";
  /* Datum counts per record: num_datums, or the first field's offsets. */
  size_t total = 0;
  size_t *counts = tb__arena_calloc(a, msg->n_loss_fn_outputs + 1, sizeof(size_t));
  if (counts == NULL)
    return TB_ENOMEM;
  for (size_t r = 0; r < msg->n_loss_fn_outputs; r++) {
    const TinkerPublic__ArrayRecord *rec = msg->loss_fn_outputs[r];
    if (rec->num_datums < 0)
      return tb__jctx_fail(c, "loss_fn_outputs[%zu].num_datums: negative", r);
    counts[r] = (size_t)rec->num_datums;
    if (counts[r] == 0 && rec->n_fields > 0 && rec->fields[0]->value &&
        rec->fields[0]->value->offsets.len >= 8)
      counts[r] = rec->fields[0]->value->offsets.len / 8 - 1;
    if (counts[r] > (1u << 24))
      return tb__jctx_fail(c, "loss_fn_outputs[%zu]: too many datums", r);
    total += counts[r];
    /* num_datums is only a number: every datum of a real answer carries
     * at least an offset, so more datums than bytes is a lie, and would
     * allocate far more than the answer holds. */
    if (total > body.len)
      return tb__jctx_fail(c, "loss_fn_outputs[%zu]: %zu datums in an answer of %zu bytes",
                           r, total, body.len);
  }
  o->n_outputs = total;
  o->outputs = tb__arena_calloc(a, total + 1, sizeof(*o->outputs));
  if (o->outputs == NULL)
    return TB_ENOMEM;
  size_t first = 0;
  for (size_t r = 0; r < msg->n_loss_fn_outputs; r++) {
    const TinkerPublic__ArrayRecord *rec = msg->loss_fn_outputs[r];
    for (size_t i = 0; i < counts[r]; i++) {
      o->outputs[first + i].fields = tb__arena_calloc(a, rec->n_fields + 1,
                                                      sizeof(tb__wire_named_tensor_t));
      if (o->outputs[first + i].fields == NULL)
        return TB_ENOMEM;
    }
    size_t mr = tb__jctx_push_key(c, "loss_fn_outputs");
    tb__jctx_push_index(c, r);
    for (size_t f = 0; f < rec->n_fields; f++) {
      size_t mf = tb__jctx_push_key(c, rec->fields[f]->key);
      int rc = rec->fields[f]->value
                   ? field_from_proto(c, a, rec->fields[f]->key, rec->fields[f]->value, o,
                                      first, counts[r])
                   : tb__jctx_fail(c, "missing tensor");
      tb__jctx_pop(c, mf);
      if (rc != 0) {
        tb__jctx_pop(c, mr);
        return rc;
      }
    }
    tb__jctx_pop(c, mr);
    first += counts[r];
  }
  o->n_metrics = msg->n_metrics;
  o->metrics = tb__arena_calloc(a, o->n_metrics + 1, sizeof(*o->metrics));
  if (o->metrics == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < o->n_metrics; i++) {
    o->metrics[i].name = msg->metrics[i]->key;
    o->metrics[i].value = msg->metrics[i]->value;
  }
  return 0;
}

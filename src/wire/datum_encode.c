/*
 * Encoders of forward/forward_backward requests and of the JSON pieces
 * they share with sampling (see encode.h).  The protobuf message is built
 * in a scratch arena that points at the caller's arrays (the host is
 * little-endian, le.h) and packed once; the JSON follows the SDK's
 * pydantic dump, None fields omitted.
 */
#include "wire/encode.h"

#include <math.h>
#include <string.h>

#include "core/arena.h"
#include "wire/le.h"
#include "wire/proto.h"

/* ---------------------------------------------------------------- JSON */

json_t *tb__wire_model_input_to_json(const int32_t *tokens, size_t n) {
  json_t *mi = json_object(), *chunks = json_array(), *chunk = json_object(),
         *toks = json_array();
  if (mi == NULL || json_object_set_new(mi, "chunks", chunks) != 0) {
    json_decref(mi);
    json_decref(chunk);
    json_decref(toks);
    return NULL;
  }
  if (json_array_append_new(chunks, chunk) != 0) {
    json_decref(toks);
    goto fail;
  }
  if (json_object_set_new(chunk, "type", json_string("encoded_text")) != 0 ||
      json_object_set_new(chunk, "tokens", toks) != 0)
    goto fail;
  for (size_t i = 0; i < n; i++)
    if (json_array_append_new(toks, json_integer(tokens[i])) != 0)
      goto fail;
  return mi;
fail:
  json_decref(mi);
  return NULL;
}

static json_t *datum_to_json(const tb__wire_datum_t *d) {
  json_t *obj = json_object(), *inputs = json_object();
  if (obj == NULL || json_object_set_new(obj, "loss_fn_inputs", inputs) != 0) {
    json_decref(obj);
    return NULL;
  }
  if (json_object_set_new(obj, "model_input",
                          tb__wire_model_input_to_json(d->tokens, d->n_tokens)) != 0)
    goto fail;
  for (size_t i = 0; i < d->n_inputs; i++)
    if (json_object_set_new(inputs, d->inputs[i].name,
                            tb__wire_tensor_to_json(&d->inputs[i].tensor, 0)) != 0)
      goto fail;
  return obj;
fail:
  json_decref(obj);
  return NULL;
}

json_t *tb__wire_fwdbwd_request_to_json(const tb__wire_fwdbwd_t *f,
                                        const char *input_key) {
  json_t *root = json_object(), *in = json_object(), *data = json_array();
  if (root == NULL || json_object_set_new(root, input_key, in) != 0) {
    json_decref(root);
    json_decref(data);
    return NULL;
  }
  if (json_object_set_new(in, "data", data) != 0 ||
      json_object_set_new(in, "loss_fn", json_string(f->loss_fn ? f->loss_fn : "")) != 0)
    goto fail;
  if (f->n_config > 0) {
    json_t *cfg = json_object();
    if (json_object_set_new(in, "loss_fn_config", cfg) != 0)
      goto fail;
    for (size_t i = 0; i < f->n_config; i++)
      if (!isfinite(f->config[i].value) ||
          json_object_set_new(cfg, f->config[i].name, json_real(f->config[i].value)) != 0)
        goto fail;
  }
  for (size_t i = 0; i < f->n_data; i++)
    if (json_array_append_new(data, datum_to_json(&f->data[i])) != 0)
      goto fail;
  if (f->model_id != NULL &&
      json_object_set_new(root, "model_id", json_string(f->model_id)) != 0)
    goto fail;
  if (f->seq_id >= 0 &&
      json_object_set_new(root, "seq_id", json_integer((json_int_t)f->seq_id)) != 0)
    goto fail;
  return root;
fail:
  json_decref(root);
  return NULL;
}

/* ---------------------------------------------------------------- protobuf */

static int tensor_to_proto(tb__arena_t *a, const tb__wire_tensor_t *t, TinkerPublic__Tensor **out) {
  TinkerPublic__Tensor *pt = tb__arena_alloc(a, sizeof(*pt));
  int64_t *shape = tb__arena_calloc(a, (size_t)t->ndim + 1, sizeof(int64_t));
  if (pt == NULL || shape == NULL)
    return TB_ENOMEM;
  tinker_public__tensor__init(pt);
  const void *base = t->dtype == TB_DTYPE_FLOAT32 ? (const void *)t->f32 : (const void *)t->i64;
  size_t esize = t->dtype == TB_DTYPE_FLOAT32 ? sizeof(float) : sizeof(int64_t);
  if (base == NULL && t->numel > 0)
    return TB_EINVAL;
  pt->encoding_case = TINKER_PUBLIC__TENSOR__ENCODING_DENSE;
  pt->dense.data = (uint8_t *)base;
  pt->dense.len = t->numel * esize;
  pt->dtype = t->dtype == TB_DTYPE_FLOAT32 ? TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32
                                           : TINKER_PUBLIC__DTYPE__DTYPE_INT64;
  for (int d = 0; d < t->ndim; d++)
    shape[d] = t->shape[d];
  pt->shape = shape;
  pt->n_shape = (size_t)t->ndim;
  *out = pt;
  return 0;
}

static int datum_to_proto(tb__arena_t *a, const tb__wire_datum_t *d, TinkerPublic__Datum *pd) {
  tinker_public__datum__init(pd);
  TinkerPublic__Chunk *chunk = tb__arena_alloc(a, sizeof(*chunk));
  TinkerPublic__EncodedTextChunk *text = tb__arena_alloc(a, sizeof(*text));
  TinkerPublic__Chunk **chunks = tb__arena_alloc(a, sizeof(*chunks));
  TinkerPublic__Datum__LossFnInputsEntry *ents =
      tb__arena_calloc(a, d->n_inputs + 1, sizeof(*ents));
  TinkerPublic__Datum__LossFnInputsEntry **entp =
      tb__arena_calloc(a, d->n_inputs + 1, sizeof(*entp));
  if (chunk == NULL || text == NULL || chunks == NULL || ents == NULL || entp == NULL)
    return TB_ENOMEM;
  tinker_public__chunk__init(chunk);
  tinker_public__encoded_text_chunk__init(text);
  text->tokens.data = (uint8_t *)d->tokens;
  text->tokens.len = d->n_tokens * sizeof(int32_t);
  chunk->chunk_case = TINKER_PUBLIC__CHUNK__CHUNK_ENCODED_TEXT;
  chunk->encoded_text = text;
  chunks[0] = chunk;
  pd->model_input = chunks;
  pd->n_model_input = 1;
  for (size_t i = 0; i < d->n_inputs; i++) {
    tinker_public__datum__loss_fn_inputs_entry__init(&ents[i]);
    ents[i].key = (char *)d->inputs[i].name;
    int rc = tensor_to_proto(a, &d->inputs[i].tensor, &ents[i].value);
    if (rc != 0)
      return rc;
    entp[i] = &ents[i];
  }
  pd->loss_fn_inputs = entp;
  pd->n_loss_fn_inputs = d->n_inputs;
  return 0;
}

int tb__wire_fwdbwd_request_to_proto(const tb__wire_fwdbwd_t *f, tb__buf_t *out) {
  if (f->seq_id > INT32_MAX)
    return TB_EINVAL;
  tb__arena_t a;
  tb__arena_init(&a, 0);
  TinkerPublic__ForwardBackwardRequest msg = TINKER_PUBLIC__FORWARD_BACKWARD_REQUEST__INIT;
  int rc = TB_ENOMEM;
  TinkerPublic__Datum *data = tb__arena_calloc(&a, f->n_data + 1, sizeof(*data));
  TinkerPublic__Datum **datap = tb__arena_calloc(&a, f->n_data + 1, sizeof(*datap));
  TinkerPublic__ForwardBackwardRequest__LossFnConfigEntry *cfg =
      tb__arena_calloc(&a, f->n_config + 1, sizeof(*cfg));
  TinkerPublic__ForwardBackwardRequest__LossFnConfigEntry **cfgp =
      tb__arena_calloc(&a, f->n_config + 1, sizeof(*cfgp));
  if (data == NULL || datap == NULL || cfg == NULL || cfgp == NULL)
    goto done;
  msg.model_id = (char *)(f->model_id ? f->model_id : "");
  msg.seq_id = f->seq_id < 0 ? 0 : (int32_t)f->seq_id;
  msg.loss_fn = (char *)(f->loss_fn ? f->loss_fn : "");
  msg.forward_only = f->forward_only ? 1 : 0;
  for (size_t i = 0; i < f->n_config; i++) {
    tinker_public__forward_backward_request__loss_fn_config_entry__init(&cfg[i]);
    cfg[i].key = (char *)f->config[i].name;
    cfg[i].value = f->config[i].value;
    cfgp[i] = &cfg[i];
  }
  msg.loss_fn_config = cfgp;
  msg.n_loss_fn_config = f->n_config;
  for (size_t i = 0; i < f->n_data; i++) {
    if ((rc = datum_to_proto(&a, &f->data[i], &data[i])) != 0)
      goto done;
    datap[i] = &data[i];
  }
  msg.data = datap;
  msg.n_data = f->n_data;
  size_t n = tinker_public__forward_backward_request__get_packed_size(&msg);
  if ((rc = tb__buf_reserve(out, n)) == 0)
    out->len += tinker_public__forward_backward_request__pack(
        &msg, (uint8_t *)out->base + out->len);
done:
  tb__arena_free(&a);
  return rc;
}

int tb__wire_fwdbwd_model_id_to_proto(const char *model_id, tb__buf_t *out) {
  TinkerPublic__ForwardBackwardRequest msg = TINKER_PUBLIC__FORWARD_BACKWARD_REQUEST__INIT;
  msg.model_id = (char *)model_id;
  size_t n = tinker_public__forward_backward_request__get_packed_size(&msg);
  int rc = tb__buf_reserve(out, n);
  if (rc == 0)
    out->len += tinker_public__forward_backward_request__pack(
        &msg, (uint8_t *)out->base + out->len);
  return rc;
}

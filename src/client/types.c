/*
 * Builders and frees of the client's data types (tinkerbell/types.h).
 * Plain memory only: nothing here touches the loop.
 */
#include "tinkerbell/types.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/adamw.h"

/* ------------------------------------------------------------ model input */

void tb_model_input_clear(tb_model_input_t *mi) {
  if (mi == NULL)
    return;
  for (size_t i = 0; i < mi->n_chunks; i++)
    free(mi->chunks[i].tokens);
  free(mi->chunks);
  mi->chunks = NULL;
  mi->n_chunks = 0;
}

int tb_model_input_append(tb_model_input_t *mi, const int32_t *tokens, size_t n) {
  if (mi == NULL || (tokens == NULL && n > 0))
    return TB_EINVAL;
  if (n == 0)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (tokens[i] < 0)
      return TB_EINVAL;
  int32_t *copy = malloc(n * sizeof(int32_t));
  tb_model_input_chunk_t *chunks = copy ? realloc(mi->chunks, (mi->n_chunks + 1) * sizeof(*chunks))
                                        : NULL;
  if (chunks == NULL) {
    free(copy);
    return TB_ENOMEM;
  }
  memcpy(copy, tokens, n * sizeof(int32_t));
  mi->chunks = chunks;
  mi->chunks[mi->n_chunks].tokens = copy;
  mi->chunks[mi->n_chunks].n_tokens = n;
  mi->n_chunks++;
  return 0;
}

int tb_model_input_init(tb_model_input_t *mi, const int32_t *tokens, size_t n) {
  if (mi == NULL)
    return TB_EINVAL;
  tb_model_input_t fresh = { NULL, 0 };
  int rc = tb_model_input_append(&fresh, tokens, n);
  if (rc != 0)
    return rc;
  tb_model_input_clear(mi);
  *mi = fresh;
  return 0;
}

size_t tb_model_input_length(const tb_model_input_t *mi) {
  size_t n = 0;
  for (size_t i = 0; mi != NULL && i < mi->n_chunks; i++)
    n += mi->chunks[i].n_tokens;
  return n;
}

void tb_model_input_tokens(const tb_model_input_t *mi, int32_t *out) {
  size_t k = 0;
  for (size_t i = 0; mi != NULL && i < mi->n_chunks; i++) {
    memcpy(out + k, mi->chunks[i].tokens, mi->chunks[i].n_tokens * sizeof(int32_t));
    k += mi->chunks[i].n_tokens;
  }
}

int tb_model_input_copy(tb_model_input_t *dst, const tb_model_input_t *src) {
  if (dst == NULL || src == NULL)
    return TB_EINVAL;
  tb_model_input_t fresh = { NULL, 0 };
  for (size_t i = 0; i < src->n_chunks; i++) {
    int rc = tb_model_input_append(&fresh, src->chunks[i].tokens, src->chunks[i].n_tokens);
    if (rc != 0) {
      tb_model_input_clear(&fresh);
      return rc;
    }
  }
  tb_model_input_clear(dst);
  *dst = fresh;
  return 0;
}

/* ------------------------------------------------------------ tensors */

static int tensor_shape(tb_tensor_data_t *t, size_t numel, const int64_t *shape, int ndim) {
  if (shape == NULL) {
    t->ndim = 1;
    t->shape[0] = (int64_t)numel;
  } else {
    if (ndim < 1 || ndim > TB_TENSOR_MAX_NDIM)
      return TB_ESHAPE;
    size_t prod = 1;
    for (int d = 0; d < ndim; d++) {
      if (shape[d] < 0)
        return TB_ESHAPE;
      prod *= (size_t)shape[d];
      t->shape[d] = shape[d];
    }
    if (prod != numel)
      return TB_ESHAPE;
    t->ndim = ndim;
  }
  t->numel = numel;
  return 0;
}

int tb_tensor_data_init_f32(tb_tensor_data_t *t, const float *data, size_t numel,
                            const int64_t *shape, int ndim) {
  if (t == NULL || (data == NULL && numel > 0))
    return TB_EINVAL;
  tb_tensor_data_t fresh = { 0 };
  fresh.dtype = TB_TENSOR_FLOAT32;
  int rc = tensor_shape(&fresh, numel, shape, ndim);
  if (rc != 0)
    return rc;
  for (size_t i = 0; i < numel; i++)
    if (!isfinite(data[i]))
      return TB_EINVAL;
  fresh.f32 = malloc(numel ? numel * sizeof(float) : 1);
  if (fresh.f32 == NULL)
    return TB_ENOMEM;
  if (numel > 0)
    memcpy(fresh.f32, data, numel * sizeof(float));
  *t = fresh;
  return 0;
}

int tb_tensor_data_init_i64(tb_tensor_data_t *t, const int64_t *data, size_t numel,
                            const int64_t *shape, int ndim) {
  if (t == NULL || (data == NULL && numel > 0))
    return TB_EINVAL;
  tb_tensor_data_t fresh = { 0 };
  fresh.dtype = TB_TENSOR_INT64;
  int rc = tensor_shape(&fresh, numel, shape, ndim);
  if (rc != 0)
    return rc;
  fresh.i64 = malloc(numel ? numel * sizeof(int64_t) : 1);
  if (fresh.i64 == NULL)
    return TB_ENOMEM;
  if (numel > 0)
    memcpy(fresh.i64, data, numel * sizeof(int64_t));
  *t = fresh;
  return 0;
}

int tb_tensor_data_copy(tb_tensor_data_t *dst, const tb_tensor_data_t *src) {
  if (dst == NULL || src == NULL)
    return TB_EINVAL;
  if (src->dtype == TB_TENSOR_FLOAT32)
    return tb_tensor_data_init_f32(dst, src->f32, src->numel, src->shape, src->ndim);
  if (src->dtype == TB_TENSOR_INT64)
    return tb_tensor_data_init_i64(dst, src->i64, src->numel, src->shape, src->ndim);
  return TB_EINVAL;
}

void tb_tensor_data_clear(tb_tensor_data_t *t) {
  if (t == NULL)
    return;
  free(t->f32);
  free(t->i64);
  memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------ datums */

void tb_train_datum_clear(tb_train_datum_t *d) {
  if (d == NULL)
    return;
  tb_model_input_clear(&d->model_input);
  for (size_t i = 0; i < d->n_loss_fn_inputs; i++) {
    free(d->loss_fn_inputs[i].name);
    tb_tensor_data_clear(&d->loss_fn_inputs[i].tensor);
  }
  free(d->loss_fn_inputs);
  d->loss_fn_inputs = NULL;
  d->n_loss_fn_inputs = 0;
}

int tb_train_datum_init(tb_train_datum_t *d, const int32_t *tokens, size_t n) {
  if (d == NULL)
    return TB_EINVAL;
  tb_train_datum_t fresh = { 0 };
  int rc = tb_model_input_init(&fresh.model_input, tokens, n);
  if (rc != 0)
    return rc;
  tb_train_datum_clear(d);
  *d = fresh;
  return 0;
}

/* Takes t over (moved, not copied) as the input `name`. */
static int datum_put(tb_train_datum_t *d, const char *name, tb_tensor_data_t *t) {
  for (size_t i = 0; i < d->n_loss_fn_inputs; i++)
    if (strcmp(d->loss_fn_inputs[i].name, name) == 0) {
      tb_tensor_data_clear(&d->loss_fn_inputs[i].tensor);
      d->loss_fn_inputs[i].tensor = *t;
      return 0;
    }
  char *nm = strdup(name);
  tb_named_tensor_t *ins =
      nm ? realloc(d->loss_fn_inputs, (d->n_loss_fn_inputs + 1) * sizeof(*ins)) : NULL;
  if (ins == NULL) {
    free(nm);
    tb_tensor_data_clear(t);
    return TB_ENOMEM;
  }
  d->loss_fn_inputs = ins;
  ins[d->n_loss_fn_inputs].name = nm;
  ins[d->n_loss_fn_inputs].tensor = *t;
  d->n_loss_fn_inputs++;
  return 0;
}

int tb_train_datum_set_input(tb_train_datum_t *d, const char *name, const tb_tensor_data_t *t) {
  if (d == NULL || name == NULL || name[0] == '\0' || t == NULL)
    return TB_EINVAL;
  tb_tensor_data_t copy;
  int rc = tb_tensor_data_copy(&copy, t);
  return rc != 0 ? rc : datum_put(d, name, &copy);
}

int tb_train_datum_set_f32(tb_train_datum_t *d, const char *name, const float *v, size_t n) {
  if (d == NULL || name == NULL || name[0] == '\0')
    return TB_EINVAL;
  tb_tensor_data_t t;
  int rc = tb_tensor_data_init_f32(&t, v, n, NULL, 1);
  return rc != 0 ? rc : datum_put(d, name, &t);
}

int tb_train_datum_set_i64(tb_train_datum_t *d, const char *name, const int64_t *v, size_t n) {
  if (d == NULL || name == NULL || name[0] == '\0')
    return TB_EINVAL;
  tb_tensor_data_t t;
  int rc = tb_tensor_data_init_i64(&t, v, n, NULL, 1);
  return rc != 0 ? rc : datum_put(d, name, &t);
}

int tb_train_datum_set_tokens(tb_train_datum_t *d, const char *name, const int32_t *v,
                              size_t n) {
  if (d == NULL || name == NULL || name[0] == '\0' || (v == NULL && n > 0))
    return TB_EINVAL;
  int64_t *wide = malloc(n ? n * sizeof(int64_t) : 1);
  if (wide == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < n; i++)
    wide[i] = v[i];
  tb_tensor_data_t t = { 0 };
  t.dtype = TB_TENSOR_INT64;
  t.ndim = 1;
  t.shape[0] = (int64_t)n;
  t.numel = n;
  t.i64 = wide;
  return datum_put(d, name, &t);
}

int tb_train_datum_init_next_token(tb_train_datum_t *d, const int32_t *tokens,
                                   const float *weights, size_t n) {
  if (d == NULL || tokens == NULL || n < 2)
    return TB_EINVAL;
  tb_train_datum_t fresh = { 0 };
  float *w = malloc((n - 1) * sizeof(float));
  int rc = w ? 0 : TB_ENOMEM;
  for (size_t i = 0; rc == 0 && i + 1 < n; i++)
    w[i] = weights ? weights[i + 1] : 1.0f;
  rc = rc ? rc : tb_model_input_init(&fresh.model_input, tokens, n - 1);
  rc = rc ? rc : tb_train_datum_set_tokens(&fresh, "target_tokens", tokens + 1, n - 1);
  rc = rc ? rc : tb_train_datum_set_f32(&fresh, "weights", w, n - 1);
  free(w);
  if (rc != 0) {
    tb_train_datum_clear(&fresh);
    return rc;
  }
  tb_train_datum_clear(d);
  *d = fresh;
  return 0;
}

const tb_tensor_data_t *tb_train_datum_input(const tb_train_datum_t *d, const char *name) {
  for (size_t i = 0; d != NULL && i < d->n_loss_fn_inputs; i++)
    if (strcmp(d->loss_fn_inputs[i].name, name) == 0)
      return &d->loss_fn_inputs[i].tensor;
  return NULL;
}

int tb_train_datum_copy(tb_train_datum_t *dst, const tb_train_datum_t *src) {
  if (dst == NULL || src == NULL)
    return TB_EINVAL;
  tb_train_datum_t fresh = { 0 };
  int rc = tb_model_input_copy(&fresh.model_input, &src->model_input);
  for (size_t i = 0; rc == 0 && i < src->n_loss_fn_inputs; i++)
    rc = tb_train_datum_set_input(&fresh, src->loss_fn_inputs[i].name,
                                  &src->loss_fn_inputs[i].tensor);
  if (rc != 0) {
    tb_train_datum_clear(&fresh);
    return rc;
  }
  tb_train_datum_clear(dst);
  *dst = fresh;
  return 0;
}

/* ------------------------------------------------------------ parameters */

void tb_lora_params_default(tb_lora_params_t *p) {
  memset(p, 0, sizeof(*p));
  p->rank = 32;
  p->train_mlp = p->train_attn = p->train_unembed = 1;
}

void tb_adamw_params_default(tb_adamw_params_t *p) {
  TB__ADAMW_SET_DEFAULTS(p, double);
}

void tb_sample_params_default(tb_sample_params_t *p) {
  memset(p, 0, sizeof(*p));
  p->max_tokens = -1;
  p->temperature = 1.0;
  p->top_k = -1;
  p->top_p = 1.0;
}

/* ------------------------------------------------------------ results */

static void metrics_free(tb_metric_t *m, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(m[i].name);
  free(m);
}

void tb_forward_backward_output_free(tb_forward_backward_output_t *o) {
  if (o == NULL)
    return;
  for (size_t i = 0; i < o->n_outputs; i++) {
    for (size_t j = 0; j < o->outputs[i].n_fields; j++) {
      free(o->outputs[i].fields[j].name);
      tb_tensor_data_clear(&o->outputs[i].fields[j].tensor);
    }
    free(o->outputs[i].fields);
  }
  free(o->outputs);
  metrics_free(o->metrics, o->n_metrics);
  free(o->loss_fn_output_type);
  free(o);
}

const tb_tensor_data_t *tb_forward_backward_output_tensor(const tb_forward_backward_output_t *o,
                                                          size_t i, const char *name) {
  if (o == NULL || i >= o->n_outputs || name == NULL)
    return NULL;
  for (size_t j = 0; j < o->outputs[i].n_fields; j++)
    if (strcmp(o->outputs[i].fields[j].name, name) == 0)
      return &o->outputs[i].fields[j].tensor;
  return NULL;
}

int tb_forward_backward_output_metric(const tb_forward_backward_output_t *o, const char *name,
                                      double *value) {
  for (size_t i = 0; o != NULL && name != NULL && i < o->n_metrics; i++)
    if (strcmp(o->metrics[i].name, name) == 0) {
      if (value != NULL)
        *value = o->metrics[i].value;
      return 1;
    }
  return 0;
}

void tb_optim_step_output_free(tb_optim_step_output_t *o) {
  if (o == NULL)
    return;
  metrics_free(o->metrics, o->n_metrics);
  free(o);
}

const char *tb_sample_stop_reason_name(tb_sample_stop_reason_t r) {
  return r == TB_SAMPLE_STOP_REASON_LENGTH ? "length" : "stop";
}

void tb_sample_response_free(tb_sample_response_t *r) {
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->n_sequences; i++) {
    free(r->sequences[i].tokens);
    free(r->sequences[i].logprobs);
  }
  free(r->sequences);
  free(r->prompt_logprobs);
  free(r->topk_ids);
  free(r->topk_logprobs);
  free(r);
}

void tb_logprobs_free(tb_logprobs_t *l) {
  if (l == NULL)
    return;
  free(l->values);
  free(l);
}

void tb_model_info_free(tb_model_info_t *info) {
  if (info == NULL)
    return;
  free(info->model_id);
  free(info->model_name);
  free(info->arch);
  free(info->tokenizer_id);
  free(info);
}

static void free_fwdbwd(void *p) { tb_forward_backward_output_free(p); }
static void free_optim(void *p) { tb_optim_step_output_free(p); }
static void free_sample(void *p) { tb_sample_response_free(p); }
static void free_logprobs(void *p) { tb_logprobs_free(p); }
static void free_info(void *p) { tb_model_info_free(p); }

const tb_result_type_t tb_result_forward_backward_output = { "forward_backward_output",
                                                             free_fwdbwd };
const tb_result_type_t tb_result_optim_step_output = { "optim_step_output", free_optim };
const tb_result_type_t tb_result_sample_response = { "sample_response", free_sample };
const tb_result_type_t tb_result_logprobs = { "logprobs", free_logprobs };
const tb_result_type_t tb_result_model_info = { "model_info", free_info };

/*
 * Public types <-> wire structs (see convert.h).
 */
#include "client/convert.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "wire/output.h"

int tb__datums_to_wire(tb__arena_t *a, const tb_train_datum_t *data, size_t n,
                       tb__wire_datum_t **out) {
  tb__wire_datum_t *w = tb__arena_calloc(a, n + 1, sizeof(*w));
  if (w == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const tb_train_datum_t *d = &data[i];
    const tb_model_input_t *mi = &d->model_input;
    if (mi->n_chunks == 1) {
      w[i].tokens = mi->chunks[0].tokens;
      w[i].n_tokens = mi->chunks[0].n_tokens;
    } else {
      w[i].n_tokens = tb_model_input_length(mi);
      w[i].tokens = tb__arena_alloc(a, (w[i].n_tokens + 1) * sizeof(int32_t));
      if (w[i].tokens == NULL)
        return TB_ENOMEM;
      tb_model_input_tokens(mi, w[i].tokens);
    }
    w[i].n_inputs = d->n_loss_fn_inputs;
    w[i].inputs = tb__arena_calloc(a, d->n_loss_fn_inputs + 1, sizeof(*w[i].inputs));
    if (w[i].inputs == NULL)
      return TB_ENOMEM;
    for (size_t j = 0; j < d->n_loss_fn_inputs; j++) {
      const tb_tensor_data_t *t = &d->loss_fn_inputs[j].tensor;
      tb__wire_tensor_t *wt = &w[i].inputs[j].tensor;
      w[i].inputs[j].name = d->loss_fn_inputs[j].name;
      wt->dtype = t->dtype == TB_TENSOR_FLOAT32 ? TB_DTYPE_FLOAT32 : TB_DTYPE_INT64;
      wt->ndim = t->ndim;
      memcpy(wt->shape, t->shape, sizeof(wt->shape));
      wt->numel = t->numel;
      wt->f32 = t->f32;
      wt->i64 = t->i64;
    }
  }
  *out = w;
  return 0;
}

int tb__sample_params_to_wire(const tb_sample_params_t *p, tb__wire_sampling_params_t *w,
                              tb_error_t *err) {
  memset(w, 0, sizeof(*w));
  if (p->n_stop_strings > 0 && p->n_stop_tokens > 0)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "sampling params: stop on strings or on token ids, not both");
  if ((p->n_stop_strings > 0 && p->stop_strings == NULL) ||
      (p->n_stop_tokens > 0 && p->stop_tokens == NULL))
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "sampling params: stop list is NULL");
  for (size_t i = 0; i < p->n_stop_strings; i++)
    if (p->stop_strings[i] == NULL || p->stop_strings[i][0] == '\0')
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "sampling params: stop_strings[%zu] is empty", i);
  if (!isfinite(p->temperature) || p->temperature < 0)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "sampling params: temperature must be a number >= 0");
  if (!(p->top_p > 0 && p->top_p <= 1))
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "sampling params: top_p must be in (0, 1]");
  if (p->top_k == 0 || p->top_k < -1)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "sampling params: top_k must be positive, or -1 for no limit");
  w->max_tokens = p->max_tokens < 0 ? -1 : p->max_tokens;
  w->has_seed = p->has_seed;
  w->seed = p->seed;
  w->temperature = p->temperature;
  w->top_k = p->top_k;
  w->top_p = p->top_p;
  w->stop_strings = (const char **)p->stop_strings;
  w->n_stop_strings = p->n_stop_strings;
  w->stop_tokens = (int32_t *)p->stop_tokens;
  w->n_stop_tokens = p->n_stop_tokens;
  return 0;
}

/* ------------------------------------------------------------ results */

static int tensor_from_wire(const tb__wire_tensor_t *w, tb_tensor_data_t *t) {
  memset(t, 0, sizeof(*t));
  t->dtype = w->dtype == TB_DTYPE_FLOAT32 ? TB_TENSOR_FLOAT32 : TB_TENSOR_INT64;
  t->ndim = w->ndim;
  memcpy(t->shape, w->shape, sizeof(t->shape));
  t->numel = w->numel;
  size_t es = t->dtype == TB_TENSOR_FLOAT32 ? sizeof(float) : sizeof(int64_t);
  void *mem = malloc(w->numel ? w->numel * es : 1);
  if (mem == NULL)
    return TB_ENOMEM;
  if (w->numel > 0)
    memcpy(mem, t->dtype == TB_TENSOR_FLOAT32 ? (void *)w->f32 : (void *)w->i64,
           w->numel * es);
  if (t->dtype == TB_TENSOR_FLOAT32)
    t->f32 = mem;
  else
    t->i64 = mem;
  return 0;
}

int tb__metrics_from_wire(const tb__wire_metric_t *m, size_t n, tb_metric_t **out,
                          size_t *n_out) {
  *out = calloc(n + 1, sizeof(**out));
  *n_out = 0;
  if (*out == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    (*out)[i].name = strdup(m[i].name);
    if ((*out)[i].name == NULL)
      return TB_ENOMEM;
    (*out)[i].value = m[i].value;
    (*n_out)++;
  }
  return 0;
}

int tb__fwdbwd_output_from_wire(const tb__wire_fwdbwd_output_t *w,
                                tb_forward_backward_output_t **out) {
  tb_forward_backward_output_t *o = calloc(1, sizeof(*o));
  if (o == NULL)
    return TB_ENOMEM;
  int rc = TB_ENOMEM;
  o->loss_fn_output_type = strdup(w->loss_fn_output_type ? w->loss_fn_output_type : "");
  o->outputs = calloc(w->n_outputs + 1, sizeof(*o->outputs));
  if (o->loss_fn_output_type == NULL || o->outputs == NULL)
    goto fail;
  for (size_t i = 0; i < w->n_outputs; i++) {
    const tb__wire_datum_output_t *wd = &w->outputs[i];
    tb_loss_fn_output_t *od = &o->outputs[i];
    o->n_outputs++;
    od->fields = calloc(wd->n_fields + 1, sizeof(*od->fields));
    if (od->fields == NULL)
      goto fail;
    for (size_t j = 0; j < wd->n_fields; j++) {
      od->fields[j].name = strdup(wd->fields[j].name);
      if (od->fields[j].name == NULL)
        goto fail;
      od->n_fields++;
      if ((rc = tensor_from_wire(&wd->fields[j].tensor, &od->fields[j].tensor)) != 0)
        goto fail;
    }
  }
  if ((rc = tb__metrics_from_wire(w->metrics, w->n_metrics, &o->metrics, &o->n_metrics)) != 0)
    goto fail;
  *out = o;
  return 0;
fail:
  tb_forward_backward_output_free(o);
  return TB_ENOMEM;
}

static void *dup_mem(const void *p, size_t n) {
  void *m = malloc(n ? n : 1);
  if (m != NULL && n > 0)
    memcpy(m, p, n);
  return m;
}

int tb__sample_response_from_wire(const tb__wire_sample_response_t *w,
                                  tb_sample_response_t **out) {
  tb_sample_response_t *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return TB_ENOMEM;
  r->sequences = calloc(w->n_sequences + 1, sizeof(*r->sequences));
  if (r->sequences == NULL)
    goto fail;
  for (size_t i = 0; i < w->n_sequences; i++) {
    const tb__wire_sequence_t *ws = &w->sequences[i];
    tb_sampled_sequence_t *s = &r->sequences[i];
    r->n_sequences++;
    s->stop_reason = ws->stop_reason == TB_WIRE_STOP_REASON_LENGTH
                         ? TB_SAMPLE_STOP_REASON_LENGTH
                         : TB_SAMPLE_STOP_REASON_STOP;
    s->n_tokens = ws->n_tokens;
    s->tokens = dup_mem(ws->tokens, ws->n_tokens * sizeof(int32_t));
    if (s->tokens == NULL)
      goto fail;
    if (ws->logprobs != NULL &&
        (s->logprobs = dup_mem(ws->logprobs, ws->n_tokens * sizeof(float))) == NULL)
      goto fail;
  }
  if (w->prompt_logprobs != NULL) {
    r->n_prompt_logprobs = w->n_prompt;
    if ((r->prompt_logprobs = dup_mem(w->prompt_logprobs, w->n_prompt * sizeof(float))) == NULL)
      goto fail;
  }
  if (w->topk_ids != NULL) {
    size_t cells = w->topk_rows * w->topk_k;
    r->topk_rows = w->topk_rows;
    r->topk_k = w->topk_k;
    r->topk_ids = dup_mem(w->topk_ids, cells * sizeof(int32_t));
    r->topk_logprobs = dup_mem(w->topk_logprobs, cells * sizeof(float));
    if (r->topk_ids == NULL || r->topk_logprobs == NULL)
      goto fail;
  }
  r->prompt_cache_hit_tokens = w->prompt_cache_hit_tokens;
  *out = r;
  return 0;
fail:
  tb_sample_response_free(r);
  return TB_ENOMEM;
}

/* A decoding failure of a result is the server's: what it sent cannot be
 * read. */
static int unreadable(tb_error_t *err, const char *what, tb_error_t *why) {
  tb_error_set(err, TB_EPROTO, TB_CATEGORY_SERVER, "unreadable %s result: %s", what,
               tb_error_message(why));
  tb_error_clear(why);
  return TB_EPROTO;
}

int tb__decode_fwdbwd_output(const char *body, size_t len, int proto,
                             tb_forward_backward_output_t **out, tb_error_t *err) {
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb_error_t why = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &why);
  tb__wire_fwdbwd_output_t w;
  int rc;
  tb_slice_t s = { body, len };
  if (proto) {
    rc = tb__wire_fwdbwd_output_from_proto(&c, &a, s, &w);
  } else {
    json_t *doc = NULL;
    rc = tb__json_parse(s, &doc, &why);
    rc = rc < 0 ? rc : tb__wire_fwdbwd_output_from_json(&c, &a, doc, &w);
    json_decref(doc);
  }
  if (rc == TB_ENOMEM)
    tb_error_set(err, rc, TB_CATEGORY_NONE, "out of memory");
  else if (rc < 0)
    rc = unreadable(err, "forward_backward", &why);
  else if ((rc = tb__fwdbwd_output_from_wire(&w, out)) != 0)
    tb_error_set(err, rc, TB_CATEGORY_NONE, "out of memory");
  tb_error_clear(&why);
  tb__arena_free(&a);
  return rc;
}

int tb__decode_sample_response(const char *body, size_t len, int proto,
                               tb_sample_response_t **out, tb_error_t *err) {
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb_error_t why = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &why);
  tb__wire_sample_response_t w;
  int rc;
  tb_slice_t s = { body, len };
  if (proto) {
    rc = tb__wire_sample_response_from_proto(&c, &a, s, &w);
  } else {
    json_t *doc = NULL;
    rc = tb__json_parse(s, &doc, &why);
    rc = rc < 0 ? rc : tb__wire_sample_response_from_json(&c, &a, doc, &w);
    json_decref(doc);
  }
  if (rc == TB_ENOMEM)
    tb_error_set(err, rc, TB_CATEGORY_NONE, "out of memory");
  else if (rc < 0)
    rc = unreadable(err, "sample", &why);
  else if ((rc = tb__sample_response_from_wire(&w, out)) != 0)
    tb_error_set(err, rc, TB_CATEGORY_NONE, "out of memory");
  tb_error_clear(&why);
  tb__arena_free(&a);
  return rc;
}

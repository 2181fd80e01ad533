/*
 * The results of the Tinkerbell dialect, in the shapes of the API guide
 * and the Python server it replaces (flat objects, "model_id" and
 * "backend" in each), built from the engine job of an op when it
 * succeeded.  They are what /retrieve_future answers for an async call and
 * what a sync call answers itself.
 *
 * forward / forward_backward report "loss" as the mean cross-entropy per
 * trained token (the summed loss over the summed weights, which for chat
 * data is the number of trained tokens) -- the number the guide prints --
 * next to the sum the Tinker dialect reports.
 *
 * The bodies themselves are written by wire/tinkerbell.c; this file
 * fills them from the op.
 */
#include "server/tinkerbell.h"

#include <stdlib.h>
#include <string.h>

#include "wire/tinkerbell.h"

static const char *model_id_of(const tb__top_t *op) {
  const tb__tbop_t *info = op->encode_data;
  if (op->model != NULL)
    return op->model->id;
  return info && info->model_id ? info->model_id : op->base->name;
}

/* The engine's metrics with room for extra more, in the op's arena;
 * NULL on ENOMEM. */
static tb__wire_metric_t *metrics_of(tb__top_t *op, size_t extra) {
  const tb__engine_job_t *job = &op->job;
  tb__wire_metric_t *m = tb__arena_calloc(&op->arena, job->num_metrics + extra + 1, sizeof(*m));
  for (size_t i = 0; m != NULL && i < job->num_metrics; i++)
    m[i] = (tb__wire_metric_t){ job->metrics[i].key, job->metrics[i].value };
  return m;
}

static json_t *encode_forward(tb__top_t *op, int created) {
  const tb__tbop_t *info = op->encode_data;
  const tb__engine_job_t *job = &op->job;
  const tb__batch_t *b = &op->batch;
  tb__wire_tb_forward_t r = {
    .loss = info->trained_weight > 0 ? job->loss / info->trained_weight : 0.0,
    .loss_sum = job->loss,
    .total_weight = info->trained_weight,
    .num_samples = (int64_t)b->num_data,
    .num_tokens = (int64_t)info->trained_tokens,
    .model_id = op->model->id,
    .backend = TB__TB_BACKEND,
    .loss_fn = tb__loss_fn_name(b->loss_fn),
    .metrics = metrics_of(op, 0),
    .n_metrics = job->num_metrics,
    .created = created,
  };
  if (r.metrics == NULL)
    return NULL;
  if (op->type == TB__OP_FORWARD) {
    /* Forward is an evaluation: the log-probability of every target, a
     * row per datum (cut short where the engine gave fewer). */
    size_t *len = tb__arena_calloc(&op->arena, b->num_data + 1, sizeof(*len));
    if (len == NULL)
      return NULL;
    for (size_t i = 0, at = 0; i < b->num_data; i++) {
      size_t n = b->data[i].n * (b->data[i].k ? b->data[i].k : 1);
      len[i] = at >= job->num_logprobs ? 0 : at + n > job->num_logprobs ? job->num_logprobs - at
                                                                          : n;
      at += n;
    }
    r.has_logprobs = 1;
    r.logprobs = job->logprobs;
    r.row_len = len;
    r.n_rows = b->num_data;
  }
  return tb__wire_tb_forward_to_json(&r);
}

static json_t *encode_optim(tb__top_t *op, int created) {
  const tb__optim_metrics_t *o = &op->job.optim;
  size_t n = op->job.num_metrics;
  tb__wire_metric_t *m = metrics_of(op, 3);
  if (m == NULL)
    return NULL;
  m[n++] = (tb__wire_metric_t){ "learning_rate", o->learning_rate };
  m[n++] = (tb__wire_metric_t){ "grad_norm", o->grad_norm };
  m[n++] = (tb__wire_metric_t){ "step_completed", 1.0 };
  tb__wire_tb_optim_t r = { .model_id = op->model->id, .backend = TB__TB_BACKEND,
                            .step = (int64_t)o->step, .metrics = m, .n_metrics = n,
                            .created = created };
  return tb__wire_tb_optim_to_json(&r);
}

/* The text of a sample, in the op's arena: a chat reply as the renderer
 * reads it back (with Qwen3's reasoning apart, in s->reasoning), or the
 * tokens' text with special tokens left out; NULL (shown as null) when
 * there is none.  Invalid UTF-8 where a sample stopped inside a sequence
 * is the wire's to show (wire/tinkerbell.h). */
static void text_of(tb__top_t *op, tb__wire_tb_sample_t *s) {
  const tb__tbop_t *info = op->encode_data;
  const tb_tokenizer_t *tok = op->base->text ? op->base->text->tok : NULL;
  tb_error_t err = { 0 };
  if (info->renderer != NULL) {
    tb_reply_t r;
    if (tb_renderer_parse(info->renderer, s->tokens, s->n_tokens, &r, &err) == 0) {
      s->text = tb__arena_strndup(&op->arena, r.content ? r.content : "", r.content_len);
      s->text_len = s->text ? r.content_len : 0;
      if (r.reasoning != NULL) {
        s->reasoning = tb__arena_strndup(&op->arena, r.reasoning, r.reasoning_len);
        s->reasoning_len = s->reasoning ? r.reasoning_len : 0;
      }
      tb_reply_free(&r);
    }
  } else if (tok != NULL) {
    char *text;
    size_t len;
    if (tb_tokenizer_decode(tok, s->tokens, s->n_tokens, TB_DECODE_SKIP_SPECIAL, &text, &len,
                            &err) == 0) {
      s->text = tb__arena_strndup(&op->arena, text ? text : "", len);
      s->text_len = s->text ? len : 0;
      free(text);
    }
  }
  tb_error_clear(&err);
}

static json_t *encode_sample(tb__top_t *op, int created) {
  const tb__tbop_t *info = op->encode_data;
  const tb__sample_result_t *res = &op->job.sample;
  tb__wire_tb_sample_t *s = tb__arena_calloc(&op->arena, res->num_seqs + 1, sizeof(*s));
  if (s == NULL)
    return NULL;
  for (size_t i = 0; i < res->num_seqs; i++) {
    const tb__sample_seq_t *q = &res->seqs[i];
    s[i].tokens = q->tokens;
    s[i].logprobs = q->logprobs;
    s[i].n_tokens = q->len;
    s[i].stop_reason = tb__stop_reason_name(q->stop_reason);
    if (info->text)
      text_of(op, &s[i]);
  }
  tb__wire_tb_sampled_t r = { .model_id = model_id_of(op), .base_model = op->base->name,
                              .backend = TB__TB_BACKEND, .prompt_tokens = (int64_t)op->prompt_len,
                              .samples = s, .n_samples = res->num_seqs, .created = created };
  return tb__wire_tb_sampled_to_json(&r);
}

/* A status result: save, load, remove. */
static json_t *encode_status(tb__top_t *op, const char *path, const char *status,
                             const char *backend, int created) {
  tb__wire_tb_status_t r = { .model_id = op->model->id, .path = path, .status = status,
                             .backend = backend, .created = created };
  return tb__wire_tb_status_to_json(&r);
}

json_t *tb__tb_encode(tb__top_t *op) {
  const tb__tbop_t *info = op->encode_data;
  int created = info != NULL && info->created;
  switch (op->type) {
  case TB__OP_CREATE: {
    const tb__tmodel_t *m = op->model;
    tb__wire_tb_adapter_t r = {
      .model_id = m->id,
      .base_model = m->base->name,
      .backend = TB__TB_BACKEND,
      .rank = m->lora.rank,
      .alpha = m->lora.alpha > 0 ? m->lora.alpha : TB_LORA_DEFAULT_ALPHA,
      .created = created,
    };
    return tb__wire_tb_adapter_to_json(&r);
  }
  case TB__OP_FORWARD:
  case TB__OP_FORWARD_BACKWARD:
    return encode_forward(op, created);
  case TB__OP_OPTIM:
    return encode_optim(op, created);
  case TB__OP_SAVE:
  case TB__OP_SAVE_SAMPLER:
    return encode_status(op, op->tinker_path, "saved", TB__TB_BACKEND, created);
  case TB__OP_LOAD:
    return encode_status(op, op->tinker_path, "loaded", TB__TB_BACKEND, created);
  case TB__OP_UNLOAD:
    return encode_status(op, NULL, "deleted", NULL, created);
  case TB__OP_SAMPLE:
    return encode_sample(op, created);
  }
  return NULL;
}

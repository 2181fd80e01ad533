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
 */
#include "server/tinkerbell.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

static const char *model_id_of(const tb__top_t *op) {
  const tb__tbop_t *info = op->encode_data;
  if (op->model != NULL)
    return op->model->id;
  return info && info->model_id ? info->model_id : op->base->name;
}

/* A number, or null for one JSON cannot carry (a loss that diverged to
 * inf or NaN is still a result the caller should see). */
static json_t *number(double x) {
  return isfinite(x) ? json_real(x) : json_null();
}

/* {"key": value, ...} of the engine's metrics. */
static json_t *metrics_of(const tb__engine_job_t *job) {
  json_t *m = json_object();
  for (size_t i = 0; m != NULL && i < job->num_metrics; i++)
    json_object_set_new(m, job->metrics[i].key, number(job->metrics[i].value));
  return m;
}

static json_t *encode_forward(tb__top_t *op) {
  const tb__tbop_t *info = op->encode_data;
  const tb__engine_job_t *job = &op->job;
  const tb__batch_t *b = &op->batch;
  double mean = info->trained_weight > 0 ? job->loss / info->trained_weight : 0.0;
  json_t *v = json_pack("{sososIsIsfsssssss{ss}so}", "loss", number(mean), "loss_sum",
                        number(job->loss),
                        "num_samples", (json_int_t)b->num_data, "num_tokens",
                        (json_int_t)info->trained_tokens, "total_weight", info->trained_weight,
                        "model_id", op->model->id, "backend",
                        TB__TB_BACKEND, "loss_fn", tb__loss_fn_name(b->loss_fn),
                        "loss_fn_outputs", "loss_fn", tb__loss_fn_name(b->loss_fn), "metrics",
                        metrics_of(job));
  if (v != NULL && op->type == TB__OP_FORWARD) {
    /* Forward is an evaluation: the log-probability of every target. */
    json_t *all = json_array();
    size_t at = 0;
    for (size_t i = 0; all != NULL && i < b->num_data; i++) {
      size_t n = b->data[i].n * (b->data[i].k ? b->data[i].k : 1);
      json_t *row = json_array();
      for (size_t j = 0; row != NULL && j < n && at + j < job->num_logprobs; j++)
        json_array_append_new(row, number(job->logprobs[at + j]));
      at += n;
      json_array_append_new(all, row);
    }
    json_object_set_new(v, "logprobs", all);
  }
  return v;
}

static json_t *encode_optim(tb__top_t *op) {
  const tb__optim_metrics_t *o = &op->job.optim;
  json_t *m = metrics_of(&op->job);
  if (m != NULL) {
    json_object_set_new(m, "learning_rate", json_real(o->learning_rate));
    json_object_set_new(m, "grad_norm", number(o->grad_norm));
    json_object_set_new(m, "step_completed", json_real(1.0));
  }
  return json_pack("{sssssIso}", "model_id", op->model->id, "backend", TB__TB_BACKEND, "step",
                   (json_int_t)o->step, "metrics", m);
}

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

json_t *tb__tb_text_json(const char *s, size_t n) {
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

/* The text of a sample: a chat reply as the renderer reads it back (with
 * Qwen3's reasoning apart, in *reasoning), or the tokens' text with
 * special tokens left out.  A sample may stop inside a UTF-8 sequence,
 * so bytes that are no valid UTF-8 become U+FFFD, as a text decoder would
 * show them; the tokens stay exact. */
static json_t *text_of(const tb__top_t *op, const int32_t *ids, size_t n, json_t **reasoning) {
  const tb__tbop_t *info = op->encode_data;
  const tb_tokenizer_t *tok = op->base->text ? op->base->text->tok : NULL;
  *reasoning = NULL;
  json_t *s = NULL;
  tb_error_t err = { 0 };
  if (info->renderer != NULL) {
    tb_reply_t r;
    if (tb_renderer_parse(info->renderer, ids, n, &r, &err) == 0) {
      s = tb__tb_text_json(r.content, r.content_len);
      if (r.reasoning != NULL)
        *reasoning = tb__tb_text_json(r.reasoning, r.reasoning_len);
      tb_reply_free(&r);
    }
  } else if (tok != NULL) {
    char *text;
    size_t len;
    if (tb_tokenizer_decode(tok, ids, n, TB_DECODE_SKIP_SPECIAL, &text, &len, &err) == 0) {
      s = tb__tb_text_json(text, len);
      free(text);
    }
  }
  tb_error_clear(&err);
  return s ? s : json_null();
}

static json_t *encode_sample(tb__top_t *op) {
  const tb__tbop_t *info = op->encode_data;
  const tb__sample_result_t *r = &op->job.sample;
  json_t *samples = json_array(), *texts = json_array();
  for (size_t i = 0; samples != NULL && texts != NULL && i < r->num_seqs; i++) {
    const tb__sample_seq_t *q = &r->seqs[i];
    json_t *toks = json_array(), *lps = json_array();
    for (size_t j = 0; toks != NULL && lps != NULL && j < q->len; j++) {
      json_array_append_new(toks, json_integer(q->tokens[j]));
      json_array_append_new(lps, number(q->logprobs[j]));
    }
    json_t *reasoning = NULL;
    json_t *text = info->text ? text_of(op, q->tokens, q->len, &reasoning) : json_null();
    json_array_append(texts, text);
    json_t *one = json_pack("{sosososs}", "text", text, "tokens", toks, "logprobs", lps,
                            "stop_reason", tb__stop_reason_name(q->stop_reason));
    if (one != NULL && reasoning != NULL)
      json_object_set_new(one, "reasoning", reasoning);
    else
      json_decref(reasoning);
    json_array_append_new(samples, one);
  }
  json_t *first = json_array_get(texts, 0);
  return json_pack("{sssssssOsosIso}", "model_id", model_id_of(op), "base_model",
                   op->base->name, "backend", TB__TB_BACKEND, "generated_text",
                   first ? first : json_null(), "completions", texts, "prompt_tokens",
                   (json_int_t)op->prompt_len, "samples", samples);
}

json_t *tb__tb_encode(tb__top_t *op) {
  const tb__tbop_t *info = op->encode_data;
  json_t *v = NULL;
  switch (op->type) {
  case TB__OP_CREATE:
    v = json_pack("{sssssisfssss}", "model_id", op->model->id, "base_model",
                  op->model->base->name, "rank", op->model->lora.rank, "alpha",
                  (double)(op->model->lora.alpha > 0 ? op->model->lora.alpha
                                                     : TB_LORA_DEFAULT_ALPHA),
                  "status", "created", "backend", TB__TB_BACKEND);
    break;
  case TB__OP_FORWARD:
  case TB__OP_FORWARD_BACKWARD:
    v = encode_forward(op);
    break;
  case TB__OP_OPTIM:
    v = encode_optim(op);
    break;
  case TB__OP_SAVE:
  case TB__OP_SAVE_SAMPLER:
    v = json_pack("{ssssssss}", "model_id", op->model->id, "path", op->tinker_path, "status",
                  "saved", "backend", TB__TB_BACKEND);
    break;
  case TB__OP_LOAD:
    v = json_pack("{ssssssss}", "model_id", op->model->id, "path", op->tinker_path, "status",
                  "loaded", "backend", TB__TB_BACKEND);
    break;
  case TB__OP_UNLOAD:
    v = json_pack("{ssss}", "model_id", op->model->id, "status", "deleted");
    break;
  case TB__OP_SAMPLE:
    v = encode_sample(op);
    break;
  }
  if (v != NULL && info != NULL && info->created)
    json_object_set_new(v, "created", json_true());
  return v;
}

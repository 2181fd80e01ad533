/*
 * The work the engine's jobs run on the threadpool: model loading,
 * adapter creation and removal, the shards of forward and
 * forward_backward with their datum checks, the sum of shard gradients,
 * the optimizer step, and checkpoint I/O.  Sampling runs through the
 * model's decoder (engine_sample.c).
 *
 * Each function runs on a worker thread and touches only its work item,
 * its job, the job's adapter (serialised by the adapter's FIFO) and the
 * read-only base weights.  Results are left in the item or the job for
 * the after-work callback in engine.c.
 */
#include "engine/engine_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/base_model.h"
#include "engine/engine_ckpt.h"
#include "kernels/kernels.h"

void tb__engine_error_default(tb_error_t *err, int code) {
  if (err->code != 0 || code == 0)
    return;
  tb_category_t cat = TB_CATEGORY_SERVER;
  if (code == TB_EINVAL || code == TB_ENOTFOUND || code == TB_ENOENT ||
      code == TB_ESHAPE)
    cat = TB_CATEGORY_USER;
  else if (code == TB_ECANCELED)
    cat = TB_CATEGORY_CANCELLED;
  tb_error_set(err, code, cat, "%s", tb_strerror(code));
}

static int user_error(tb_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int user_error(tb_error_t *err, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s", msg);
}

/* ------------------------------------------------------------ models */

void tb__engine_work_load_model(tb__engine_shard_t *it) {
  tb__engine_model_t *m = it->job->held;
  it->status = tb__model_weights_load(m->source, &m->weights, &it->error);
}

void tb__engine_work_create(tb__engine_shard_t *it) {
  tb__engine_job_t *job = it->job;
  tb__engine_adapter_t *a = job->target;
  it->status = tb__lora_init(&a->lora, &a->model->weights.config,
                             &job->lora_config);
}

void tb__engine_work_remove(tb__engine_shard_t *it) {
  tb__engine_adapter_t *a = it->job->target;
  tb__lora_free(&a->lora);
  free(a->shard_grads);
  a->shard_grads = NULL;
  a->shard_slots = 0;
  it->status = 0;
}

/* ------------------------------------------------------------ batches */

static size_t datum_k(const tb__datum_t *d) { return d->k ? d->k : 1; }

int tb__engine_batch_precheck(const tb__batch_t *b, tb_error_t *err) {
  const tb__loss_config_t *c = &b->loss_config;
  if ((unsigned)b->loss_fn > TB_LOSS_DRO)
    return user_error(err, "loss_fn: unknown loss function");
  if ((b->loss_fn == TB_LOSS_PPO || b->loss_fn == TB_LOSS_CISPO) &&
      !(isfinite(c->clip_low_threshold) && isfinite(c->clip_high_threshold) &&
        c->clip_low_threshold >= 0 &&
        c->clip_low_threshold <= c->clip_high_threshold))
    return user_error(err, "loss_fn_config: clip thresholds must be finite "
                      "with 0 <= clip_low_threshold <= clip_high_threshold");
  if (b->loss_fn == TB_LOSS_DRO && !(isfinite(c->beta) && c->beta >= 0))
    return user_error(err, "loss_fn_config.beta: must be finite and >= 0");
  if (b->num_data == 0 || b->data == NULL)
    return user_error(err, "data: the batch is empty");
  size_t k0 = 0, total = 0;
  for (size_t i = 0; i < b->num_data; i++) {
    const tb__datum_t *d = &b->data[i];
    total += d->n;
    if (d->n == 0)
      continue;
    size_t k = datum_k(d);
    if (k0 == 0)
      k0 = k;
    if (k != k0)
      return user_error(err, "data[%zu].loss_fn_inputs.target_tokens: %zu "
                        "targets per position, datum 0 has %zu", i, k, k0);
    if (k > 1 && b->loss_fn != TB_LOSS_CROSS_ENTROPY)
      return user_error(err, "data[%zu].loss_fn_inputs.target_tokens: "
                        "several targets per position need cross_entropy",
                        i);
  }
  if (total == 0)
    return user_error(err, "data: the batch has no tokens");
  return 0;
}

static int check_ids(const int32_t *ids, size_t n, int V, size_t di,
                     const char *key, tb_error_t *err) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= V)
      return user_error(err, "data[%zu].%s[%zu]: token %d is outside the "
                        "vocabulary [0, %d)", di, key, i, (int)ids[i], V);
  return 0;
}

static int check_floats(const float *x, size_t n, size_t di, const char *key,
                        const char *loss, tb_error_t *err) {
  if (x == NULL)
    return user_error(err, "data[%zu].loss_fn_inputs.%s: missing (%s needs "
                      "it)", di, key, loss);
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return user_error(err, "data[%zu].loss_fn_inputs.%s[%zu]: not a finite "
                        "number", di, key, i);
  return 0;
}

/* Everything about datum di that the math cannot run with, named by the
 * wire's keys. */
static int check_datum(const tb__batch_t *b, size_t di,
                       const tb__model_config_t *m, tb_error_t *err) {
  const tb__datum_t *d = &b->data[di];
  size_t k = datum_k(d);
  const char *loss = tb__loss_fn_name(b->loss_fn);
  int rc;
  if (d->n == 0)
    return 0;
  if (d->n > (size_t)m->max_position_embeddings)
    return user_error(err, "data[%zu].model_input: %zu tokens, longer than "
                      "the model's context of %d", di, d->n,
                      m->max_position_embeddings);
  if (d->tokens == NULL)
    return user_error(err, "data[%zu].model_input: missing", di);
  if ((rc = check_ids(d->tokens, d->n, m->vocab_size, di, "model_input",
                      err)) != 0)
    return rc;
  if (d->target_tokens == NULL)
    return user_error(err, "data[%zu].loss_fn_inputs.target_tokens: missing",
                      di);
  if ((rc = check_ids(d->target_tokens, d->n * k, m->vocab_size, di,
                      "loss_fn_inputs.target_tokens", err)) != 0)
    return rc;
  if (b->loss_fn == TB_LOSS_CROSS_ENTROPY)
    return check_floats(d->weights, d->n * k, di, "weights", loss, err);
  if ((rc = check_floats(d->logprobs, d->n, di, "logprobs", loss, err)) != 0)
    return rc;
  return check_floats(d->advantages, d->n, di, "advantages", loss, err);
}

void tb__engine_work_shard(tb__engine_shard_t *it) {
  tb__engine_job_t *job = it->job;
  tb__engine_adapter_t *a = job->target;
  const tb__weights_t *w = &a->model->weights;
  const tb__lora_t *lora = &a->lora;
  size_t tokens = 0;
  for (size_t i = it->d0; i < it->d1; i++) {
    it->status = check_datum(&job->batch, i, &w->config, &it->error);
    if (it->status != 0)
      return;
    tokens += job->batch.data[i].n;
  }
  it->loss = 0;
  if (tokens == 0) {  /* only empty datums: nothing to compute */
    it->status = 0;
    return;
  }
  tb__batch_t sub = job->batch;
  sub.data = job->batch.data + it->d0;
  sub.num_data = it->d1 - it->d0;
  float *lp = job->logprobs + it->out0;
  int rc;
  if (job->type == TB_ENGINE_FORWARD) {
    rc = tb__llama_forward(it->ws, w, lora, &sub, lp, &it->loss);
  } else {
    /* One shard adds straight into the adapter's gradients; several each
     * fill their own buffer, summed by tb__engine_work_sum. */
    float *g = a->lora.grads;
    if (job->num_shards > 1) {
      g = it->grads;
      tb__k_zero(g, lora->num_params);
    }
    rc = tb__llama_forward_backward(it->ws, w, lora, &sub, g, lp, &it->loss);
  }
  it->status = rc;
  tb__engine_error_default(&it->error, rc);
}

void tb__engine_work_sum(tb__engine_shard_t *it) {
  tb__engine_job_t *job = it->job;
  tb__lora_t *lora = &job->target->lora;
  /* In shard order, so a given sharding always gives the same sums.  The
   * buffers stay with the adapter for its next forward_backward. */
  for (size_t s = 0; s < job->num_shards; s++) {
    tb__engine_shard_t *sh = &job->items[s];
    if (it->apply && sh->grads != NULL)
      tb__lora_add_grads(lora, sh->grads, it->p0, it->p1);
  }
  it->status = 0;
}

/* ------------------------------------------------------------ optimizer */

/* The optimizer step in two rounds over the pieces: the engine adds up
 * the squares into the norm and counts the step between them.  The
 * parameters were checked at submission. */
void tb__engine_work_optim_norm(tb__engine_shard_t *it) {
  it->sumsq = tb__optim_sumsq(&it->job->target->lora, it->p0, it->p1);
  it->status = 0;
}

void tb__engine_work_optim_update(tb__engine_shard_t *it) {
  tb__engine_job_t *job = it->job;
  tb__optim_update(&job->target->lora, &job->adam, job->optim.grad_norm,
                   it->p0, it->p1);
  it->status = 0;
}

/* ------------------------------------------------------------ checkpoints */

/* The adapter's tensors with views into params/m/v (laid out like the
 * adapter's buffers; m and v may be NULL). */
static int tensors_of(const tb__lora_t *lora, float *params, float *m,
                      float *v, tb__eng_tensor_t **out, size_t *n) {
  size_t count = tb__lora_num_tensors(lora);
  tb__eng_tensor_t *t = calloc(count ? count : 1, sizeof(*t));
  if (t == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < count; i++) {
    size_t shape[2], off;
    int rc = tb__lora_tensor(lora, i, t[i].name, sizeof(t[i].name), shape,
                             &off);
    if (rc != 0) {
      free(t);
      return rc;
    }
    t[i].shape[0] = (int64_t)shape[0];
    t[i].shape[1] = (int64_t)shape[1];
    t[i].data = params + off;
    t[i].adam_m = m ? m + off : NULL;
    t[i].adam_v = v ? v + off : NULL;
  }
  *out = t;
  *n = count;
  return 0;
}

static void meta_of(const tb__engine_adapter_t *a, tb__eng_ckpt_meta_t *meta) {
  const tb__lora_t *lora = &a->lora;
  memset(meta, 0, sizeof(*meta));
  meta->rank = lora->config.rank;
  meta->alpha = lora->config.alpha;
  meta->train_attn = lora->config.train_attn;
  meta->train_mlp = lora->config.train_mlp;
  meta->train_unembed = lora->config.train_unembed;
  meta->base_model = a->model->name;
  meta->step = lora->step;
}

void tb__engine_work_save(tb__engine_shard_t *it) {
  tb__engine_job_t *job = it->job;
  tb__lora_t *lora = &job->target->lora;
  tb__eng_tensor_t *t;
  size_t n;
  int rc = tensors_of(lora, lora->params, lora->adam_m, lora->adam_v, &t, &n);
  if (rc == 0) {
    tb__eng_ckpt_meta_t meta;
    meta_of(job->target, &meta);
    int flags = job->flags == TB_ENGINE_SAVE_SAMPLER ? TB__ENG_CKPT_SAMPLER
              : job->flags == TB_ENGINE_SAVE_STATE_OPTIMIZER
                  ? TB__ENG_CKPT_OPTIMIZER : 0;
    rc = tb__eng_ckpt_save(job->path, t, n, &meta, flags, &it->error);
    free(t);
  }
  it->status = rc;
  tb__engine_error_default(&it->error, rc);
}

void tb__engine_work_load(tb__engine_shard_t *it) {
  tb__engine_job_t *job = it->job;
  tb__lora_t *lora = &job->target->lora;
  size_t np = lora->num_params;
  int with_opt = job->flags != 0;
  /* Loaded into a copy first: a failed load leaves the adapter as it
   * was. */
  float *tmp = malloc((with_opt ? 3 : 1) * (np ? np : 1) * sizeof(float));
  tb__eng_tensor_t *t = NULL;
  size_t n = 0;
  int64_t step = 0;
  int rc = tmp == NULL ? TB_ENOMEM
         : tensors_of(lora, tmp, with_opt ? tmp + np : NULL,
                      with_opt ? tmp + 2 * np : NULL, &t, &n);
  if (rc == 0) {
    tb__eng_ckpt_meta_t meta;
    meta_of(job->target, &meta);
    rc = tb__eng_ckpt_load(job->path, t, n, &meta,
                           with_opt ? TB__ENG_CKPT_OPTIMIZER : 0, &step,
                           &it->error);
  }
  if (rc == 0) {
    memcpy(lora->params, tmp, np * sizeof(float));
    if (with_opt) {
      memcpy(lora->adam_m, tmp + np, np * sizeof(float));
      memcpy(lora->adam_v, tmp + 2 * np, np * sizeof(float));
      lora->step = (long)step;
    } else {
      tb__k_zero(lora->adam_m, np);
      tb__k_zero(lora->adam_v, np);
      lora->step = 0;
    }
    tb__lora_zero_grads(lora);
  }
  free(t);
  free(tmp);
  it->status = rc;
  tb__engine_error_default(&it->error, rc);
}

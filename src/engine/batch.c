/*
 * Losses and batches (see llama.h): the loss functions' names and
 * defaults, and the checks of a batch against a model, which the loop
 * runs before a job reaches the threadpool.  Not the model math, which is
 * llama.c's.
 */
#include "engine/llama.h"

#include <string.h>

#include "tinkerbell/error.h"

static const char *const loss_names[] = {
  "cross_entropy", "importance_sampling", "ppo", "cispo", "dro",
};

int tb__loss_fn_parse(const char *name, size_t len, tb__loss_fn_t *out) {
  for (size_t i = 0; i < sizeof(loss_names) / sizeof(loss_names[0]); i++) {
    if (strlen(loss_names[i]) == len && memcmp(loss_names[i], name, len) == 0) {
      *out = (tb__loss_fn_t)i;
      return 0;
    }
  }
  return TB_EINVAL;
}

const char *tb__loss_fn_name(tb__loss_fn_t fn) {
  if ((unsigned)fn < sizeof(loss_names) / sizeof(loss_names[0]))
    return loss_names[fn];
  return "unknown";
}

void tb__loss_config_default(tb__loss_config_t *c) {
  c->clip_low_threshold = 0.8f;
  c->clip_high_threshold = 1.2f;
  c->beta = 0.05f;
}

int tb__ids_in_vocab(const int32_t *ids, size_t n, int V) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= V)
      return 0;
  return 1;
}

size_t tb__batch_num_outputs(const tb__batch_t *b) {
  size_t n = 0;
  for (size_t i = 0; i < b->num_data; i++)
    n += b->data[i].n * tb__datum_k(&b->data[i]);
  return n;
}

int tb__batch_validate(const tb__batch_t *b, const tb__model_config_t *m,
                       const char **why) {
  const char *w = NULL;
  size_t total = 0, k0 = 0;
  int ce = b->loss_fn == TB_LOSS_CROSS_ENTROPY;
  if ((unsigned)b->loss_fn > TB_LOSS_DRO)
    w = "unknown loss function";
  for (size_t i = 0; w == NULL && i < b->num_data; i++) {
    const tb__datum_t *d = &b->data[i];
    size_t k = tb__datum_k(d);
    total += d->n;
    if (d->n == 0)
      continue;
    if (k0 == 0)
      k0 = k;
    if (k != k0)
      w = "every datum must have the same number of targets per position";
    else if (k > 1 && !ce)
      w = "several targets per position need the cross_entropy loss";
    else if (d->tokens == NULL || d->target_tokens == NULL)
      w = "model_input and target_tokens are required";
    else if (ce && d->weights == NULL)
      w = "cross_entropy needs weights";
    else if (!ce && (d->logprobs == NULL || d->advantages == NULL))
      w = "this loss needs logprobs and advantages";
    else if (!tb__ids_in_vocab(d->tokens, d->n, m->vocab_size))
      w = "a model_input token is outside the vocabulary";
    else if (!tb__ids_in_vocab(d->target_tokens, d->n * k, m->vocab_size))
      w = "a target token is outside the vocabulary";
  }
  if (w == NULL && total == 0)
    w = "the batch has no tokens";
  if (why)
    *why = w;
  return w ? TB_EINVAL : 0;
}

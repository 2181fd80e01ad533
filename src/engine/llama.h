/*
 * The Llama-family decoder with a LoRA adapter: forward over a batch of
 * sequences with per-token target log-probs and one of the five Tinker
 * losses, backward into the adapter's gradients, and the incremental
 * forward (prefill and decode steps over a KV cache) that sampling uses.
 *
 * The batch's sequences are packed into one (T, C) row block, so every
 * linear layer is one GEMM over all tokens; attention and RoPE walk the
 * sequences (each starts at position 0).  Activations live in one flat
 * float buffer of a workspace (tb__llama_ws_t) that grows to the largest
 * batch seen and is reused, so a worker thread that keeps its workspace
 * allocates nothing in the steady state.  Logits are never held for the
 * whole batch: the unembedding runs over row blocks of TB__LLAMA_LOGIT_ROWS.
 *
 * Gradients: tb__llama_forward_backward adds (+=) the gradient of the
 * batch's summed loss to a caller-given flat buffer laid out like
 * lora->grads.  Pass lora->grads to accumulate across calls until the
 * optimizer step; to split a batch into shards that run at once on
 * different threads, give each shard its own zeroed buffer and workspace,
 * then add the buffers with tb__lora_add_grads.  The base weights and the
 * adapter parameters are only read, so shards may share them.
 *
 * Non-goals: loss inputs in JSON or tensors (the server converts them to
 * tb__datum_t), scheduling, and sampling policy (sampler.c).
 */
#ifndef TB_ENGINE_LLAMA_H
#define TB_ENGINE_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "engine/lora.h"
#include "engine/weights.h"

/* Rows of the (rows, V) logits scratch. */
#define TB__LLAMA_LOGIT_ROWS 256

typedef enum {
  TB_LOSS_CROSS_ENTROPY = 0,
  TB_LOSS_IMPORTANCE_SAMPLING,
  TB_LOSS_PPO,
  TB_LOSS_CISPO,
  TB_LOSS_DRO
} tb__loss_fn_t;

/* "cross_entropy", ... -> the enum; 0 or TB_EINVAL. */
int tb__loss_fn_parse(const char *name, size_t len, tb__loss_fn_t *out);
const char *tb__loss_fn_name(tb__loss_fn_t fn);

/* loss_fn_config.  tb__loss_config_default gives clip 0.8 / 1.2 (PPO's
 * epsilon 0.2) and beta 0.05. */
typedef struct tb__loss_config_s {
  float clip_low_threshold;
  float clip_high_threshold;
  float beta;
} tb__loss_config_t;

void tb__loss_config_default(tb__loss_config_t *c);

/* One datum: the model input and the loss inputs, all per position.
 * Input position i predicts target_tokens[i] (the caller has shifted).
 * k is the number of targets per position: 1 (0 is read as 1), or K > 1
 * for top-K distillation with cross_entropy, where target_tokens and
 * weights are (n, K).  Arrays a loss does not use may be NULL:
 *   cross_entropy          target_tokens, weights
 *   the other four         target_tokens, logprobs, advantages */
typedef struct tb__datum_s {
  const int32_t *tokens;         /* (n) */
  size_t n;
  size_t k;
  const int32_t *target_tokens;  /* (n, k) */
  const float *weights;          /* (n, k) */
  const float *logprobs;         /* (n) the sampler's log-probs */
  const float *advantages;       /* (n) */
} tb__datum_t;

typedef struct tb__batch_s {
  const tb__datum_t *data;
  size_t num_data;
  tb__loss_fn_t loss_fn;
  tb__loss_config_t loss_config;
} tb__batch_t;

/* A datum's targets per position (k, 0 read as 1). */
static inline size_t tb__datum_k(const tb__datum_t *d) { return d->k ? d->k : 1; }

/* Whether the n ids are all in [0, V). */
int tb__ids_in_vocab(const int32_t *ids, size_t n, int V);

/* Total floats of the per-token log-probs output: sum of n * k. */
size_t tb__batch_num_outputs(const tb__batch_t *b);

/* Checks the batch against the model: tokens and targets in [0, V), the
 * arrays the loss needs present, k > 1 only with cross_entropy and the
 * same k for every datum, at least one token in total.  0 or TB_EINVAL
 * with a short reason in *why (may be NULL). */
int tb__batch_validate(const tb__batch_t *b, const tb__model_config_t *m,
                       const char **why);

/* The workspace: activation and scratch buffers, reused across calls.
 * One per thread that runs model math. */
typedef struct tb__llama_ws_s tb__llama_ws_t;

int tb__llama_ws_new(tb__llama_ws_t **out);
void tb__llama_ws_free(tb__llama_ws_t *ws);
/* Releases the buffers but keeps the workspace usable (for idle workers). */
void tb__llama_ws_trim(tb__llama_ws_t *ws);

/* Forward only.  lora may be NULL (the base model).  logprobs (may be
 * NULL) receives tb__batch_num_outputs(b) floats: each datum's (n, k)
 * target log-probs in datum order.  *loss (may be NULL) receives the
 * summed loss.  0,
 * TB_EINVAL (batch invalid) or TB_ENOMEM. */
int tb__llama_forward(tb__llama_ws_t *ws, const tb__weights_t *w,
                      const tb__lora_t *lora, const tb__batch_t *b,
                      float *logprobs, double *loss);

/* Forward and backward: as tb__llama_forward, and grads (lora->num_params
 * floats, laid out as lora->grads) += d(summed loss)/d(adapter params).
 * lora and grads are required (TB_EINVAL otherwise). */
int tb__llama_forward_backward(tb__llama_ws_t *ws, const tb__weights_t *w,
                               const tb__lora_t *lora, const tb__batch_t *b,
                               float *grads, float *logprobs, double *loss);

/* The logits of every position of one sequence, (n, V), by the full
 * (packed, non-cached) forward.  For tests and small prompts. */
int tb__llama_logits(tb__llama_ws_t *ws, const tb__weights_t *w,
                     const tb__lora_t *lora, const int32_t *tokens, size_t n,
                     float *logits);

/* ------------------------------------------------------------ KV cache */

/* The keys and values of one sequence for every layer:
 * k and v are (L, cap, KVH*D); len positions are filled. */
typedef struct tb__kv_cache_s {
  float *k;
  float *v;
  size_t cap;
  size_t len;
} tb__kv_cache_t;

int tb__kv_cache_init(tb__kv_cache_t *c, const tb__model_config_t *m,
                      size_t cap);
void tb__kv_cache_free(tb__kv_cache_t *c);
/* dst takes src's filled positions (same model, dst->cap >= src->len). */
void tb__kv_cache_copy(tb__kv_cache_t *dst, const tb__kv_cache_t *src,
                       const tb__model_config_t *m);

/* Runs new tokens through the model against KV caches.  The tokens form
 * num_seqs runs of lens[s] consecutive tokens; run s continues the
 * sequence of caches[s] at position caches[s]->len, and its cache grows by
 * lens[s] (which must fit in cap).  logits receives (rows, V): with
 * all_rows, every token's row; otherwise only the last row of each run, in
 * run order (num_seqs rows).  A prefill is one run holding the prompt; a
 * decode step of S samples is S runs of one token.  0 or TB_EINVAL /
 * TB_ENOMEM (the caches are unchanged on error). */
int tb__llama_step(tb__llama_ws_t *ws, const tb__weights_t *w,
                   const tb__lora_t *lora, const int32_t *tokens,
                   const size_t *lens, tb__kv_cache_t *const *caches,
                   size_t num_seqs, int all_rows, float *logits);

#endif /* TB_ENGINE_LLAMA_H */

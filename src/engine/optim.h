/*
 * The AdamW step over a LoRA adapter, with Tinker's AdamParams.
 *
 * The step follows torch.optim.AdamW (decoupled weight decay, bias
 * correction) over the adapter's one flat parameter buffer, after optional
 * clipping of the global gradient norm as torch.nn.utils.clip_grad_norm_
 * does.  The gradients are zeroed after the step, so the next
 * forward_backward calls start accumulating afresh.
 *
 * Non-goals: learning-rate schedules (the client sends the rate of each
 * step) and optimizers other than AdamW.
 */
#ifndef TB_ENGINE_OPTIM_H
#define TB_ENGINE_OPTIM_H

#include "engine/lora.h"

/* The defaults are core/adamw.h's, shared with the public API. */
typedef struct tb__adam_params_s {
  float learning_rate;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;    /* decoupled, as AdamW */
  float grad_clip_norm;  /* 0: no clipping */
} tb__adam_params_t;

typedef struct tb__optim_metrics_s {
  double grad_norm;      /* global L2 norm before clipping */
  float learning_rate;
  long step;             /* the adapter's step count after this step */
} tb__optim_metrics_t;

/* Tinker's defaults (wire protocol §5.6), from core/adamw.h. */
void tb__adam_params_default(tb__adam_params_t *p);

/* The largest learning rate accepted.  An AdamW step moves each weight by
 * about the learning rate, so a rate near 1 already wrecks an adapter in
 * one step; beyond this bound it is a typo (1e30 for 1e-3). */
#define TB__ADAM_MAX_LEARNING_RATE 1.0

/* Checks AdamW values as a request gives them (doubles, before they are
 * narrowed to float).  0, or TB_EINVAL with the offending field's name
 * ("learning_rate", "beta1", ...) in *field and the reason in *why (both
 * may be NULL).  Refused: a learning rate that is not finite, negative or
 * above TB__ADAM_MAX_LEARNING_RATE; betas outside [0, 1); eps not finite
 * or <= 0; weight_decay not finite, negative, or so large that
 * learning_rate x weight_decay exceeds 1 (a step would flip the weights'
 * signs); grad_clip_norm not finite or negative. */
int tb__adam_values_validate(double learning_rate, double beta1, double beta2,
                             double eps, double weight_decay,
                             double grad_clip_norm, const char **field,
                             const char **why);
/* The same for params already in floats. */
int tb__adam_params_validate(const tb__adam_params_t *p, const char **field,
                             const char **why);

/* One step: clip lora->grads, update params, adam_m and adam_v, count the
 * step, zero the grads.  metrics may be NULL.  0 or TB_EINVAL (params). */
int tb__optim_step(tb__lora_t *lora, const tb__adam_params_t *p,
                   tb__optim_metrics_t *metrics);

/* The same step in two passes over pieces [p0, p1) of the flat buffers, so
 * that several work items share it: the sum of tb__optim_sumsq over the
 * pieces is the square of the gradient norm; then, with lora->step
 * counted once by the caller, tb__optim_update does every piece.  The
 * parameters must be valid. */
double tb__optim_sumsq(const tb__lora_t *lora, size_t p0, size_t p1);
void tb__optim_update(tb__lora_t *lora, const tb__adam_params_t *p,
                      double grad_norm, size_t p0, size_t p1);

#endif /* TB_ENGINE_OPTIM_H */

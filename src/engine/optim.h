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

typedef struct tb_adam_params_s {
  float learning_rate;   /* 1e-4 */
  float beta1;           /* 0.9 */
  float beta2;           /* 0.95 */
  float eps;             /* 1e-12 */
  float weight_decay;    /* 0: decoupled, as AdamW */
  float grad_clip_norm;  /* 0: no clipping */
} tb_adam_params_t;

typedef struct tb_optim_metrics_s {
  double grad_norm;      /* global L2 norm before clipping */
  float learning_rate;
  long step;             /* the adapter's step count after this step */
} tb_optim_metrics_t;

/* Tinker's defaults (wire protocol §5.6). */
void tb__adam_params_default(tb_adam_params_t *p);

/* 0, or TB_EINVAL with a reason in *why (may be NULL) for values AdamW
 * cannot use: negative or non-finite rates, betas outside [0, 1), eps or
 * weight decay or clip norm negative. */
int tb__adam_params_validate(const tb_adam_params_t *p, const char **why);

/* One step: clip lora->grads, update params, adam_m and adam_v, count the
 * step, zero the grads.  metrics may be NULL.  0 or TB_EINVAL (params). */
int tb__optim_step(tb_lora_t *lora, const tb_adam_params_t *p,
                   tb_optim_metrics_t *metrics);

/* The same step in two passes over pieces [p0, p1) of the flat buffers, so
 * that several work items share it: the sum of tb__optim_sumsq over the
 * pieces is the square of the gradient norm; then, with lora->step
 * counted once by the caller, tb__optim_update does every piece.  The
 * parameters must be valid. */
double tb__optim_sumsq(const tb_lora_t *lora, size_t p0, size_t p1);
void tb__optim_update(tb_lora_t *lora, const tb_adam_params_t *p,
                      double grad_norm, size_t p0, size_t p1);

#endif /* TB_ENGINE_OPTIM_H */

/*
 * AdamW over a LoRA adapter's flat buffers (see optim.h).
 */
#include "engine/optim.h"

#include <math.h>

#include "kernels/kernels.h"
#include "tinkerbell/error.h"

void tb__adam_params_default(tb_adam_params_t *p) {
  p->learning_rate = 1e-4f;
  p->beta1 = 0.9f;
  p->beta2 = 0.95f;
  p->eps = 1e-12f;
  p->weight_decay = 0.0f;
  p->grad_clip_norm = 0.0f;
}

int tb__adam_params_validate(const tb_adam_params_t *p, const char **why) {
  const char *w = NULL;
  if (!isfinite(p->learning_rate) || p->learning_rate < 0)
    w = "learning_rate must be a finite number >= 0";
  else if (!(p->beta1 >= 0 && p->beta1 < 1) || !(p->beta2 >= 0 && p->beta2 < 1))
    w = "beta1 and beta2 must lie in [0, 1)";
  else if (!isfinite(p->eps) || p->eps < 0)
    w = "eps must be a finite number >= 0";
  else if (!isfinite(p->weight_decay) || p->weight_decay < 0)
    w = "weight_decay must be a finite number >= 0";
  else if (!isfinite(p->grad_clip_norm) || p->grad_clip_norm < 0)
    w = "grad_clip_norm must be a finite number >= 0";
  if (why)
    *why = w;
  return w ? TB_EINVAL : 0;
}

int tb__optim_step(tb_lora_t *lora, const tb_adam_params_t *p,
                   tb_optim_metrics_t *metrics) {
  if (tb__adam_params_validate(p, NULL) != 0)
    return TB_EINVAL;
  size_t n = lora->num_params;
  double norm = sqrt(tb__optim_sumsq(lora, 0, n));
  lora->step++;
  tb__optim_update(lora, p, norm, 0, n);
  if (metrics) {
    metrics->grad_norm = norm;
    metrics->learning_rate = p->learning_rate;
    metrics->step = lora->step;
  }
  return 0;
}

double tb__optim_sumsq(const tb_lora_t *lora, size_t p0, size_t p1) {
  return tb__k_grad_sumsq(lora->grads + p0, p1 - p0);
}

void tb__optim_update(tb_lora_t *lora, const tb_adam_params_t *p,
                      double grad_norm, size_t p0, size_t p1) {
  size_t n = p1 - p0;
  float *g = lora->grads + p0;
  /* clip_grad_norm_ semantics: off when grad_clip_norm is 0. */
  tb__k_grad_clip_to(g, (double)p->grad_clip_norm, grad_norm, n);
  tb__k_adamw_step(lora->params + p0, lora->adam_m + p0, lora->adam_v + p0, g,
                   p->learning_rate, p->beta1, p->beta2, p->eps,
                   p->weight_decay, lora->step, n);
  tb__k_zero(g, n);
}

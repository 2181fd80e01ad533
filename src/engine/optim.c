/*
 * AdamW over a LoRA adapter's flat buffers (see optim.h).
 */
#include "engine/optim.h"

#include <float.h>
#include <math.h>

#include "core/adamw.h"
#include "kernels/kernels.h"
#include "tinkerbell/error.h"

void tb__adam_params_default(tb__adam_params_t *p) {
  TB__ADAMW_SET_DEFAULTS(p, float);
}

int tb__adam_values_validate(double learning_rate, double beta1, double beta2,
                             double eps, double weight_decay,
                             double grad_clip_norm, const char **field,
                             const char **why) {
  const char *f = NULL, *w = NULL;
  if (!isfinite(learning_rate) || learning_rate < 0 ||
      learning_rate > TB__ADAM_MAX_LEARNING_RATE) {
    f = "learning_rate";
    w = "must be a finite number in [0, 1]";
  } else if (!(beta1 >= 0 && beta1 < 1)) {
    f = "beta1";
    w = "must lie in [0, 1)";
  } else if (!(beta2 >= 0 && beta2 < 1)) {
    f = "beta2";
    w = "must lie in [0, 1)";
  } else if (!isfinite(eps) || !(eps > 0) || eps > FLT_MAX) {
    f = "eps";
    w = "must be a finite number > 0";
  } else if (!isfinite(weight_decay) || weight_decay < 0 ||
             weight_decay > FLT_MAX || learning_rate * weight_decay > 1) {
    f = "weight_decay";
    w = "must be a finite number >= 0 with learning_rate x weight_decay "
        "at most 1";
  } else if (!isfinite(grad_clip_norm) || grad_clip_norm < 0 ||
             grad_clip_norm > FLT_MAX) {
    f = "grad_clip_norm";
    w = "must be a finite number >= 0";
  }
  if (field)
    *field = f;
  if (why)
    *why = w;
  return w ? TB_EINVAL : 0;
}

int tb__adam_params_validate(const tb__adam_params_t *p, const char **field,
                             const char **why) {
  return tb__adam_values_validate(p->learning_rate, p->beta1, p->beta2, p->eps,
                                  p->weight_decay, p->grad_clip_norm, field,
                                  why);
}

int tb__optim_step(tb__lora_t *lora, const tb__adam_params_t *p,
                   tb__optim_metrics_t *metrics) {
  if (tb__adam_params_validate(p, NULL, NULL) != 0)
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

double tb__optim_sumsq(const tb__lora_t *lora, size_t p0, size_t p1) {
  return tb__k_grad_sumsq(lora->grads + p0, p1 - p0);
}

void tb__optim_update(tb__lora_t *lora, const tb__adam_params_t *p,
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

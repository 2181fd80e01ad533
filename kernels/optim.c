/*
 * AdamW over a flat parameter buffer, global gradient norm and clipping,
 * and zero-grad.
 *
 * An adapter keeps its LoRA matrices, gradients and both Adam moments as
 * four contiguous float arrays of the same layout (STYLE.md rule 14), so
 * each of these is one loop.  The step reproduces torch.optim.AdamW's
 * single-tensor path: the bias corrections are computed in double from the
 * step count, as Python floats are.  Naive reference: ref_optim.c.
 */
#include "kernels.h"
#include "fastmath.h"

#include <math.h>
#include <string.h>

TB__K_VECTORISED
void tb__k_adamw_step(float *params, float *m, float *v, const float *grads,
                      double lr, double beta1, double beta2, double eps,
                      double weight_decay, long t, size_t n) {
  /* Scalars are formed in double, as Python floats, and rounded to float
   * where PyTorch applies them to a float32 tensor. */
  double bc1 = 1.0 - pow(beta1, (double)t);
  double bc2 = 1.0 - pow(beta2, (double)t);
  const float step_size = (float)(lr / bc1);
  const float bc2_sqrt = (float)sqrt(bc2);
  const float decay = (float)(1.0 - lr * weight_decay);
  const float w1 = (float)(1.0 - beta1); /* exp_avg.lerp_(g, 1 - beta1) */
  const float b2 = (float)beta2, w2 = (float)(1.0 - beta2);
  const float epsf = (float)eps;
  for (size_t i = 0; i < n; i++) {
    float g = grads[i];
    float p = params[i] * decay;
    float mi = m[i] + w1 * (g - m[i]);
    float vi = v[i] * b2 + w2 * g * g;
    float denom = sqrtf(vi) / bc2_sqrt + epsf;
    params[i] = p - step_size * (mi / denom);
    m[i] = mi;
    v[i] = vi;
  }
}

TB__K_VECTORISED
double tb__k_grad_sumsq(const float *g, size_t n) {
  return tb__k_dot_d(g, g, n);
}

double tb__k_grad_norm(const float *g, size_t n) {
  return sqrt(tb__k_grad_sumsq(g, n));
}

TB__K_VECTORISED
void tb__k_grad_clip_to(float *g, double max_norm, double norm, size_t n) {
  if (!(max_norm > 0.0))
    return;
  double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    float c = (float)coef;
    for (size_t i = 0; i < n; i++)
      g[i] *= c;
  }
}

double tb__k_grad_clip(float *g, double max_norm, size_t n) {
  double norm = tb__k_grad_norm(g, n);
  tb__k_grad_clip_to(g, max_norm, norm, n);
  return norm;
}

void tb__k_zero(float *x, size_t n) {
  if (n > 0)
    memset(x, 0, n * sizeof(float));
}

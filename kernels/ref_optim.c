/*
 * Naive references for AdamW and gradient clipping, in the textbook form of
 * Loshchilov and Hutter (bias-corrected moments), in double.
 */
#include "ref.h"

#include <math.h>

void tb__kref_adamw_step(float *params, float *m, float *v, const float *grads,
                         double lr, double beta1, double beta2, double eps,
                         double weight_decay, long t, size_t n) {
  for (size_t i = 0; i < n; i++) {
    double g = grads[i];
    double mi = beta1 * m[i] + (1.0 - beta1) * g;
    double vi = beta2 * v[i] + (1.0 - beta2) * g * g;
    double mhat = mi / (1.0 - pow(beta1, (double)t));
    double vhat = vi / (1.0 - pow(beta2, (double)t));
    double p = params[i];
    p -= lr * weight_decay * p;
    p -= lr * mhat / (sqrt(vhat) + eps);
    params[i] = (float)p;
    m[i] = (float)mi;
    v[i] = (float)vi;
  }
}

double tb__kref_grad_clip(float *g, double max_norm, size_t n) {
  double ss = 0.0;
  for (size_t i = 0; i < n; i++)
    ss += (double)g[i] * g[i];
  double norm = sqrt(ss);
  if (max_norm > 0.0 && norm + 1e-6 > max_norm)
    for (size_t i = 0; i < n; i++)
      g[i] = (float)(g[i] * (max_norm / (norm + 1e-6)));
  return norm;
}

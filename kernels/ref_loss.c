/*
 * Naive references for log-softmax, the logits gradient and the five
 * Tinker losses.  The losses follow the PyTorch definitions in the Tinker
 * documentation line by line, in double; their derivatives are written out
 * case by case as autograd would produce them.
 */
#include "ref.h"

#include <math.h>

void tb__kref_logprobs(float *lse, float *lp, const float *logits,
                       const int32_t *targets, size_t T, size_t V, size_t K) {
  for (size_t t = 0; t < T; t++) {
    double mx = -INFINITY, sum = 0.0;
    for (size_t v = 0; v < V; v++)
      if (logits[t * V + v] > mx)
        mx = logits[t * V + v];
    for (size_t v = 0; v < V; v++)
      sum += exp(logits[t * V + v] - mx);
    double l = mx + log(sum);
    lse[t] = (float)l;
    if (lp != NULL)
      for (size_t j = 0; j < K; j++)
        lp[t * K + j] = (float)(logits[t * V + (size_t)targets[t * K + j]] - l);
  }
}

void tb__kref_logits_backward(float *dlogits, const float *logits,
                              const int32_t *targets, const float *coef,
                              size_t T, size_t V, size_t K) {
  /* d lp_j / d logit_v = onehot(v == target_j) - softmax_v. */
  for (size_t t = 0; t < T; t++) {
    double mx = -INFINITY, sum = 0.0;
    for (size_t v = 0; v < V; v++)
      if (logits[t * V + v] > mx)
        mx = logits[t * V + v];
    for (size_t v = 0; v < V; v++)
      sum += exp(logits[t * V + v] - mx);
    for (size_t v = 0; v < V; v++) {
      double p = exp(logits[t * V + v] - mx) / sum, g = 0.0;
      for (size_t j = 0; j < K; j++)
        g += coef[t * K + j] * (((size_t)targets[t * K + j] == v) - p);
      dlogits[t * V + v] = (float)g;
    }
  }
}

static double clamp(double x, double lo, double hi) {
  return fmin(fmax(x, lo), hi);
}

static double finish(float *loss, float *coef, size_t i, double l, double c) {
  if (loss != NULL)
    loss[i] = (float)l;
  if (coef != NULL)
    coef[i] = (float)c;
  return l;
}

double tb__kref_loss_cross_entropy(float *loss, float *coef, const float *lp,
                                   const float *weights, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++)
    sum += finish(loss, coef, i, -(double)lp[i] * weights[i], -(double)weights[i]);
  return sum;
}

double tb__kref_loss_importance_sampling(float *loss, float *coef,
                                         const float *lp, const float *lp_samp,
                                         const float *adv, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    double ratio = exp((double)lp[i] - lp_samp[i]);
    sum += finish(loss, coef, i, -ratio * adv[i], -ratio * adv[i]);
  }
  return sum;
}

double tb__kref_loss_ppo(float *loss, float *coef, const float *lp,
                         const float *lp_samp, const float *adv,
                         float clip_low, float clip_high, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    double ratio = exp((double)lp[i] - lp_samp[i]);
    double clipped = clamp(ratio, clip_low, clip_high);
    double un_obj = ratio * adv[i], cl_obj = clipped * adv[i];
    double obj = fmin(un_obj, cl_obj);
    /* Autograd: torch.min sends the gradient to the smaller input, half to
     * each on a tie; clamp passes it only for lo <= ratio <= hi. */
    double g_un = -ratio * adv[i];
    int in_range = ratio >= clip_low && ratio <= clip_high;
    double g_cl = in_range ? -ratio * adv[i] : 0.0;
    double g = un_obj < cl_obj ? g_un
             : un_obj > cl_obj ? g_cl
             : 0.5 * (g_un + g_cl);
    sum += finish(loss, coef, i, -obj, g);
  }
  return sum;
}

double tb__kref_loss_cispo(float *loss, float *coef, const float *lp,
                           const float *lp_samp, const float *adv,
                           float clip_low, float clip_high, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    double ratio = exp((double)lp[i] - lp_samp[i]);
    double w = clamp(ratio, clip_low, clip_high); /* detached */
    sum += finish(loss, coef, i, -w * lp[i] * adv[i], -w * adv[i]);
  }
  return sum;
}

double tb__kref_loss_dro(float *loss, float *coef, const float *lp,
                         const float *lp_samp, const float *adv, float beta,
                         size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)lp[i] - lp_samp[i];
    double obj = (double)lp[i] * adv[i] - 0.5 * beta * d * d;
    sum += finish(loss, coef, i, -obj, -((double)adv[i] - beta * d));
  }
  return sum;
}

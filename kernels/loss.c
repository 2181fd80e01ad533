/*
 * Log-softmax over the vocabulary, the gradient of a loss with respect to
 * the logits, and the five Tinker losses (wire protocol §5.4).
 *
 * Every Tinker loss is a sum over tokens of a function of that token's
 * target log-prob lp (plus per-token inputs), so the whole backward through
 * the vocabulary reduces to one coefficient per token, coef = dloss/dlp:
 *   dloss/dlogits[v] = coef * (onehot(target) - softmax(logits)[v]).
 * The loss functions below produce that coefficient; tb__k_logits_backward
 * applies it to a block of rows in place.  Sums are taken in double, so a
 * 2048-token sequence sums to the same value whatever the row-block size.
 * Naive reference: ref_loss.c.
 */
#include "kernels.h"
#include "fastmath.h"

#include <math.h>

TB__K_VECTORISED
void tb__k_logprobs(float *lse, float *lp, const float *logits,
                    const int32_t *targets, size_t T, size_t V, size_t K) {
  for (size_t t = 0; t < T; t++) {
    const float *row = logits + t * V;
    float mx = tb__k_maxf(row, V);
    /* The logits are read-only here, so the exponentials go through a
     * small stack buffer to stay vectorised. */
    float buf[256];
    double sum = 0.0;
    for (size_t v0 = 0; v0 < V; v0 += 256) {
      size_t m = V - v0 < 256 ? V - v0 : 256;
      tb__k_exp_shift(buf, row + v0, mx, m);
      sum += tb__k_sumf(buf, m);
    }
    float l = mx + (float)log(sum);
    lse[t] = l;
    if (lp != NULL)
      for (size_t j = 0; j < K; j++)
        lp[t * K + j] = row[targets[t * K + j]] - l;
  }
}

TB__K_VECTORISED
void tb__k_logits_backward(float *dlogits, const float *logits,
                           const float *lse, const int32_t *targets,
                           const float *coef, size_t T, size_t V, size_t K) {
  for (size_t t = 0; t < T; t++) {
    const float *row = logits + t * V;
    float *drow = dlogits + t * V;
    float csum = 0.0f;
    for (size_t j = 0; j < K; j++)
      csum += coef[t * K + j];
    float l = lse[t];
    /* Element v is read before it is written, so this works in place. */
    tb__k_exp_shift(drow, row, l, V);
    for (size_t v = 0; v < V; v++)
      drow[v] *= -csum;
    for (size_t j = 0; j < K; j++)
      drow[targets[t * K + j]] += coef[t * K + j];
  }
}

static float clampf(float x, float lo, float hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

double tb__k_loss_cross_entropy(float *loss, float *coef, const float *lp,
                                const float *weights, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    float l = -weights[i] * lp[i];
    if (loss != NULL)
      loss[i] = l;
    if (coef != NULL)
      coef[i] = -weights[i];
    sum += l;
  }
  return sum;
}

double tb__k_loss_importance_sampling(float *loss, float *coef,
                                      const float *lp, const float *lp_samp,
                                      const float *adv, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    float r = expf(lp[i] - lp_samp[i]);
    float l = -r * adv[i];
    if (loss != NULL)
      loss[i] = l;
    if (coef != NULL)
      coef[i] = l; /* d(-r A)/dlp = -r A because dr/dlp = r */
    sum += l;
  }
  return sum;
}

double tb__k_loss_ppo(float *loss, float *coef, const float *lp,
                      const float *lp_samp, const float *adv, float clip_low,
                      float clip_high, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    float r = expf(lp[i] - lp_samp[i]);
    float a = adv[i];
    float unclipped = r * a;
    float clipped = clampf(r, clip_low, clip_high) * a;
    /* min(unclipped, clipped).  When the unclipped term is the minimum the
     * gradient is -r A.  Otherwise r lies outside [lo, hi] (inside, the two
     * terms are equal), where the clipped term is flat in lp. */
    int take_unclipped = unclipped <= clipped;
    float l = -(take_unclipped ? unclipped : clipped);
    if (loss != NULL)
      loss[i] = l;
    if (coef != NULL)
      coef[i] = take_unclipped ? -unclipped : 0.0f;
    sum += l;
  }
  return sum;
}

double tb__k_loss_cispo(float *loss, float *coef, const float *lp,
                        const float *lp_samp, const float *adv, float clip_low,
                        float clip_high, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    /* The clipped ratio is detached: it weights the log-prob's gradient
     * but receives none itself. */
    float w = clampf(expf(lp[i] - lp_samp[i]), clip_low, clip_high) * adv[i];
    float l = -w * lp[i];
    if (loss != NULL)
      loss[i] = l;
    if (coef != NULL)
      coef[i] = -w;
    sum += l;
  }
  return sum;
}

double tb__k_loss_dro(float *loss, float *coef, const float *lp,
                      const float *lp_samp, const float *adv, float beta,
                      size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    float d = lp[i] - lp_samp[i];
    float l = -(lp[i] * adv[i] - 0.5f * beta * d * d);
    if (loss != NULL)
      loss[i] = l;
    if (coef != NULL)
      coef[i] = -(adv[i] - beta * d);
    sum += l;
  }
  return sum;
}

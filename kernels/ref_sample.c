/*
 * Naive references for top-k and sampling: sort the whole vocabulary by
 * (logit descending, id ascending), cut it by top-k and then top-p, and
 * walk the cumulative distribution.  NaN logits sort after every number
 * and, like -inf, have probability 0; with no finite logit on top, or a
 * temperature without a finite scale, the first of the order is drawn.
 */
#include "ref.h"

#include <math.h>

/* Is a strictly below b, with NaN below every number? */
static int below(float a, float b) {
  return isnan(a) ? !isnan(b) : a < b;
}

static void sort_desc(int32_t *order, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    order[i] = (int32_t)i;
  for (size_t i = 1; i < n; i++) {
    int32_t c = order[i];
    size_t j = i;
    /* Insertion sort is stable and the scan runs in id order, so equal
     * logits keep the lower id first. */
    while (j > 0 && below(x[order[j - 1]], x[c])) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = c;
  }
}

void tb__kref_topk(int32_t *idx, float *val, const float *x, size_t k,
                   size_t n) {
  int32_t order[n > 0 ? n : 1];
  sort_desc(order, x, n);
  for (size_t j = 0; j < k; j++) {
    idx[j] = order[j];
    val[j] = x[order[j]];
  }
}

/* The same float probability as the fast kernel computes, so that both
 * draw from identical numbers; only the order of the sums differs. */
static float prob(float x, float mx, float temperature) {
  float e = expf((x - mx) * (1.0f / temperature));
  return isnan(e) ? 0.0f : e;
}

int32_t tb__kref_sample(int32_t *order, const float *logits, float temperature,
                        int top_k, float top_p, double u, size_t V) {
  if (V == 0)
    return -1;
  sort_desc(order, logits, V);
  float mx = logits[order[0]];
  if (!(temperature > 0.0f) || top_k == 1 || !isfinite(1.0f / temperature) ||
      !isfinite(mx))
    return order[0];
  size_t n = V;
  if (top_k > 0 && (size_t)top_k < V)
    n = (size_t)top_k;
  double z = 0.0;
  for (size_t j = 0; j < n; j++)
    z += prob(logits[order[j]], mx, temperature);
  size_t keep = n;
  double mass = z;
  if (top_p < 1.0f) {
    double cum = 0.0;
    for (keep = 0; keep < n;) {
      cum += prob(logits[order[keep]], mx, temperature);
      keep++;
      if (cum >= (double)top_p * z)
        break;
    }
    mass = cum;
  }
  double acc = 0.0, target = u * mass;
  int32_t last = order[0];
  for (size_t j = 0; j < keep; j++) {
    float p = prob(logits[order[j]], mx, temperature);
    if (p > 0.0f)
      last = order[j];
    acc += p;
    if (acc > target)
      return order[j];
  }
  return last;  /* the last token with any mass */
}

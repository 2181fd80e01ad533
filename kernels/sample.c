/*
 * Choosing tokens from a logits row: argmax, top-k lists, and sampling with
 * temperature, top-k and top-p (nucleus).
 *
 * Candidates are ordered by logit, descending, with ties broken by the
 * lower token id.  That is a total order, so the chosen token depends only
 * on the logits and the caller's uniform number, never on the sort.  A
 * binary max-heap over the caller's index scratch gives the candidates in
 * that order one at a time, so the common cases (peaked distributions,
 * small top-k, top-p) touch only the head of the order instead of sorting
 * the whole vocabulary.  The draw walks the kept candidates in that same
 * order.  Naive reference (full sort): ref_sample.c.
 *
 * Every input is safe, not only the finite ones a healthy model gives: a
 * NaN logit comes after every number (-inf included) in the order and has
 * probability 0, as has -inf; when no logit is finite, or the largest is
 * +inf, or the temperature leaves no finite scale, the draw is the argmax.
 * Callers that must not sample a diverged model check the logits first
 * (the engine's sampler does).
 */
#include "kernels.h"

#include <float.h>
#include <math.h>

/* Does candidate a come before candidate b?  Larger logits first, ties by
 * the lower id, NaN after every number. */
static int before(const float *x, int32_t a, int32_t b) {
  const float xa = x[a], xb = x[b];
  if (xa > xb)
    return 1;
  if (xa == xb)
    return a < b;
  /* xa < xb, or unordered: one of them is NaN. */
  if (isnan(xa))
    return isnan(xb) && a < b;
  return isnan(xb);
}

static void sift_down(int32_t *heap, const float *x, size_t i, size_t n) {
  for (;;) {
    size_t l = 2 * i + 1, best = i;
    if (l < n && before(x, heap[l], heap[best]))
      best = l;
    if (l + 1 < n && before(x, heap[l + 1], heap[best]))
      best = l + 1;
    if (best == i)
      return;
    int32_t tmp = heap[i];
    heap[i] = heap[best];
    heap[best] = tmp;
    i = best;
  }
}

static void heapify(int32_t *heap, const float *x, size_t n) {
  for (size_t i = n / 2; i-- > 0;)
    sift_down(heap, x, i, n);
}

/* Removes the first candidate of heap[0..n) and stores it at heap[n-1], so
 * the j-th candidate popped ends at heap[n0 - 1 - j]. */
static int32_t pop(int32_t *heap, const float *x, size_t n) {
  int32_t top = heap[0];
  heap[0] = heap[n - 1];
  heap[n - 1] = top;
  sift_down(heap, x, 0, n - 1);
  return top;
}

size_t tb__k_argmax(const float *x, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; i++)
    if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i])))
      best = i;
  return best;
}

void tb__k_topk(int32_t *idx, float *val, int32_t *scratch, const float *x,
                size_t k, size_t n) {
  for (size_t i = 0; i < n; i++)
    scratch[i] = (int32_t)i;
  heapify(scratch, x, n);
  for (size_t j = 0; j < k; j++) {
    int32_t t = pop(scratch, x, n - j);
    idx[j] = t;
    val[j] = x[t];
  }
}

int32_t tb__k_sample(float *probs, int32_t *idx, const float *logits,
                     float temperature, int top_k, float top_p, double u,
                     size_t V) {
  if (V == 0)
    return -1;
  const size_t am = tb__k_argmax(logits, V);
  const float mx = logits[am];
  const float inv_t = 1.0f / temperature;
  /* No distribution to draw from: greedy decoding, a single candidate, a
   * scale that is not finite, or no finite logit on top. */
  if (!(temperature > 0.0f) || top_k == 1 || V == 1 || !isfinite(inv_t) ||
      !isfinite(mx))
    return (int32_t)am;
  const int use_k = top_k > 0 && (size_t)top_k < V;
  const int use_p = top_p < 1.0f;

  /* Unnormalised probabilities; the sums are kept in double.  -inf and
   * NaN logits have probability 0 (NaN also when temperature is inf). */
  double z = 0.0;
  for (size_t v = 0; v < V; v++) {
    float e = expf((logits[v] - mx) * inv_t);
    probs[v] = e == e ? e : 0.0f;
    z += probs[v];
  }

  /* Without top-k, a token whose probability is below (1 - top_p)/(V - 1)
   * cannot be in the nucleus: if it were, it and everything after it
   * (at most V - 1 tokens) would hold less than 1 - top_p, yet more than
   * 1 - top_p remains once the nucleus is not yet complete.  Dropping such
   * tokens up front keeps the heap small.  The first token always stays. */
  size_t nc = 0;
  if (use_p && !use_k) {
    double cut = (1.0 - (double)top_p) / (double)(V - 1) * z;
    for (size_t v = 0; v < V; v++)
      if ((double)probs[v] >= cut || logits[v] == mx)
        idx[nc++] = (int32_t)v;
  } else {
    for (size_t v = 0; v < V; v++)
      idx[nc++] = (int32_t)v;
  }
  heapify(idx, logits, nc);

  size_t popped = 0; /* candidates so far sit at idx[nc-1], idx[nc-2], ... */
  if (use_k) {
    size_t k = (size_t)top_k;
    z = 0.0;
    for (; popped < k; popped++)
      z += probs[pop(idx, logits, nc - popped)];
  }

  /* Keep the shortest head of the order whose mass reaches top_p * z
   * (everything when top_p is off), then draw within it. */
  double target;
  double cum = 0.0;
  size_t keep = 0;
  if (use_p) {
    double need = (double)top_p * z;
    for (;;) {
      if (keep == popped) {
        if (popped == nc)
          break;
        pop(idx, logits, nc - popped);
        popped++;
      }
      cum += probs[idx[nc - 1 - keep]];
      keep++;
      if (cum >= need)
        break;
    }
    target = u * cum;
  } else {
    keep = nc;
    target = u * z;
  }

  /* The first candidate has probability 1, so one always qualifies; a
   * draw rounded up to the full mass takes the last with any mass, never
   * a token of probability 0. */
  double acc = 0.0;
  int32_t last = idx[nc - 1];
  for (size_t j = 0; j < keep; j++) {
    if (j == popped) {
      pop(idx, logits, nc - popped);
      popped++;
    }
    int32_t t = idx[nc - 1 - j];
    if (probs[t] > 0.0f)
      last = t;
    acc += probs[t];
    if (acc > target)
      return last;
  }
  return last;
}

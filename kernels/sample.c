/*
 * Choosing tokens from a logits row: argmax, top-k lists, and sampling with
 * temperature, top-k and top-p (nucleus).
 *
 * Candidates are ordered by logit, descending, with ties broken by the
 * lower token id.  That is a total order, so the chosen token depends only
 * on the logits and the caller's uniform number, never on the sort.  The
 * draw walks the kept candidates in that order, which is produced lazily:
 * a counting sort into buckets of descending logit, each bucket sorted
 * when the walk reaches it, so a peaked distribution touches only the
 * head of the order and a flat one (walked far) costs two passes over the
 * vocabulary and small sorts rather than a heap pop per candidate.
 * Without top-k and top-p (the whole vocabulary, the common and costliest
 * draw) most buckets need no sort at all: while every sum so far is
 * exact (see exact_bound) the walk's running sum at a bucket's end is the
 * exact sum of the bucket whatever the order inside, so the walk adds a
 * bucket up in the order the scatter left it and sorts only the bucket
 * where the draw falls (or where exactness ends, from which it walks as
 * before).  The tokens drawn are the same bits.
 * tb__k_topk uses a binary max-heap.  Naive reference (full sort): ref_sample.c.
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
#include <string.h>

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

/* The candidates in that same order, produced lazily and fast when many
 * are needed (a flat distribution is walked far): a counting sort by the
 * top 12 bits of an order key puts the candidates in buckets of
 * descending logit (ids ascending within each, as they were scattered in
 * id order), and each bucket is put in exact order only when the walk
 * reaches it (a counting sort by the next 8 bits, then an insertion sort
 * by the full comparison, which has little left to do).  The order is the
 * heap's, so the tokens drawn are the same. */
#define ORDER_BITS 12
#define ORDER_BUCKETS (1u << ORDER_BITS)
#define ORDER_SMALL 4096

typedef struct order_s {
  int32_t *idx;        /* the candidates, bucket by bucket */
  const float *x;
  size_t n;
  size_t sorted;       /* idx[0 .. sorted) is in final order */
  size_t bucket;       /* the next bucket to sort */
  uint32_t end[ORDER_BUCKETS];  /* each bucket's end in idx */
} order_t;

/* Ascending key for descending logits; every NaN after -inf (as
 * `before` orders them). */
static uint32_t order_key(float f) {
  if (isnan(f))
    return UINT32_MAX;
  uint32_t b;
  memcpy(&b, &f, sizeof(b));
  b = b & 0x80000000u ? ~b : b | 0x80000000u;  /* ascending with f */
  return ~b;
}

static void insertion(int32_t *a, size_t n, const float *x) {
  for (size_t i = 1; i < n; i++) {
    int32_t v = a[i];
    size_t j = i;
    for (; j > 0 && before(x, v, a[j - 1]); j--)
      a[j] = a[j - 1];
    a[j] = v;
  }
}

static void sort_range(int32_t *a, size_t n, const float *x) {
  if (n <= 32) {
    insertion(a, n, x);
    return;
  }
  if (n <= ORDER_SMALL) {
    /* Stable counting sort by the next 8 bits of the key. */
    int32_t tmp[ORDER_SMALL];
    uint32_t cnt[257] = { 0 };
    for (size_t i = 0; i < n; i++)
      cnt[((order_key(x[a[i]]) >> (24 - ORDER_BITS)) & 0xff) + 1]++;
    for (size_t b = 1; b < 257; b++)
      cnt[b] += cnt[b - 1];
    for (size_t i = 0; i < n; i++)
      tmp[cnt[(order_key(x[a[i]]) >> (24 - ORDER_BITS)) & 0xff]++] = a[i];
    memcpy(a, tmp, n * sizeof(int32_t));
    insertion(a, n, x);
    return;
  }
  /* A huge bucket (logits bunched within one part in eight of an
   * octave): a heap sort, first candidate popped last. */
  heapify(a, x, n);
  for (size_t m = n; m > 1; m--)
    pop(a, x, m);
  for (size_t i = 0, j = n - 1; i < j; i++, j--) {
    int32_t t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

/* Is token v a candidate?  With a filter, those of probability at least
 * cut, and the top ones. */
static int candidate(const float *probs, const float *x, size_t v,
                     int filter, double cut, float mx) {
  return !filter || (double)probs[v] >= cut || x[v] == mx;
}

/* Scatters the candidates among tokens 0 .. V-1 into idx by bucket, in
 * id order within each; returns their number. */
static size_t order_init(order_t *o, int32_t *idx, const float *x,
                         const float *probs, size_t V, int filter,
                         double cut, float mx) {
  uint32_t *cnt = o->end;
  memset(cnt, 0, sizeof(o->end));
  for (size_t v = 0; v < V; v++)
    if (candidate(probs, x, v, filter, cut, mx))
      cnt[order_key(x[v]) >> (32 - ORDER_BITS)]++;
  uint32_t at = 0;
  for (size_t b = 0; b < ORDER_BUCKETS; b++) {
    uint32_t c = cnt[b];
    cnt[b] = at;  /* the start, for the scatter; then the end */
    at += c;
  }
  for (size_t v = 0; v < V; v++)
    if (candidate(probs, x, v, filter, cut, mx))
      idx[cnt[order_key(x[v]) >> (32 - ORDER_BITS)]++] = (int32_t)v;
  o->idx = idx;
  o->x = x;
  o->n = at;
  o->sorted = 0;
  o->bucket = 0;
  return at;
}

/* Makes sure idx[i] is in its final place (i < n). */
static void order_reach(order_t *o, size_t i) {
  while (o->sorted <= i) {
    size_t start = o->bucket == 0 ? 0 : o->end[o->bucket - 1];
    size_t end = o->end[o->bucket++];
    sort_range(o->idx + start, end - start, o->x);
    o->sorted = end;
  }
}

/* Up to which computed total every partial sum of non-negative floats,
 * none below exponent field emin, is exact in double: such floats are
 * multiples of 2^(emin - 150), so every sum of them below 2^53 times that
 * is exactly representable, and the sums are the exact real ones in any
 * order and grouping.  The bound is half that, which covers any rounding
 * of the computed total. */
static double exact_bound(uint32_t emin) {
  return ldexp(1.0, 52 + (int)emin - 150);
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

/* One token of a draw's walk: adds its mass to *acc and remembers it as
 * the last with any; non-zero once the running sum passes the target. */
static inline int walk_passes(const float *probs, int32_t t, double *acc,
                              double target, int32_t *last) {
  if (probs[t] > 0.0f)
    *last = t;
  *acc += probs[t];
  return *acc > target;
}

/* The draw over every candidate, in order, at `target` (u z), as the walk
 * in tb__k_sample makes it: the first token where the running sum passes
 * the target, or the last with any mass when rounding never lets it.
 * Whole buckets are passed by their sums while those are exact. */
static int32_t draw_jumping(order_t *o, const float *probs, double target) {
  double acc = 0.0, bound = INFINITY;
  float pmin = INFINITY;  /* the smallest probability > 0 passed */
  size_t b = 0;
  for (; b < ORDER_BUCKETS; b++) {
    size_t start = b == 0 ? 0 : o->end[b - 1], end = o->end[b];
    double s = acc;
    float m = pmin;
    for (size_t j = start; j < end; j++) {
      float p = probs[o->idx[j]];
      s += p;
      if (p > 0.0f && p < m)
        m = p;
    }
    if (m < pmin) {
      uint32_t e;
      memcpy(&e, &m, sizeof(e));
      e >>= 23;  /* probabilities are >= 0 */
      pmin = m;
      bound = exact_bound(e == 0 ? 1 : e);
    }
    if (s > bound || s > target)
      break;
    acc = s;
  }
  /* Passing every bucket would need the exact total to be at most u z <
   * z, itself that total: it does not happen, but the whole walk is the
   * answer if it did. */
  if (b == ORDER_BUCKETS) {
    b = 0;
    acc = 0.0;
  }
  /* The walk from bucket b on, from the same running sum.  Bucket b
   * holds the first token of mass after the passed ones (its sum is
   * positive, or its new smallest exponent is that of a positive one),
   * so `last` is set before the walk can end. */
  o->bucket = b;
  o->sorted = b == 0 ? 0 : o->end[b - 1];
  int32_t last = -1;
  for (size_t j = o->sorted; j < o->n; j++) {
    order_reach(o, j);
    if (walk_passes(probs, o->idx[j], &acc, target, &last))
      return last;
  }
  return last;
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
   * tokens up front keeps the candidates few.  The first token always
   * stays. */
  const int filter = use_p && !use_k;
  const double cut = filter ? (1.0 - (double)top_p) / (double)(V - 1) * z : 0;
  order_t *o = &(order_t){ 0 };
  const size_t nc = order_init(o, idx, logits, probs, V, filter, cut, mx);
  if (!use_k && !use_p)
    return draw_jumping(o, probs, u * z);

  size_t popped = 0; /* candidates idx[0 .. popped) are in order */
  if (use_k) {
    size_t k = (size_t)top_k;
    z = 0.0;
    for (; popped < k; popped++) {
      order_reach(o, popped);
      z += probs[idx[popped]];
    }
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
        order_reach(o, popped);
        popped++;
      }
      cum += probs[idx[keep]];
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
  order_reach(o, 0);
  int32_t last = idx[0];
  for (size_t j = 0; j < keep; j++) {
    if (j == popped) {
      order_reach(o, popped);
      popped++;
    }
    if (walk_passes(probs, idx[j], &acc, target, &last))
      return last;
  }
  return last;
}

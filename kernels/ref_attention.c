/*
 * Naive reference for causal grouped-query attention: one query row and
 * head at a time, the full softmax over its visible keys in double, and a
 * backward derived directly from the chain rule without the recompute
 * trick.
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Softmax probabilities of query row (t, h) over keys 0..nk-1, into p;
 * returns the log-sum-exp of the scaled scores. */
static double row_probs(double *p, const float *qr, const float *k,
                        size_t kvh, size_t nk, size_t KVH, size_t D) {
  double scale = 1.0 / sqrt((double)D), mx = -INFINITY;
  for (size_t j = 0; j < nk; j++) {
    double s = 0.0;
    for (size_t d = 0; d < D; d++)
      s += (double)qr[d] * k[(j * KVH + kvh) * D + d];
    p[j] = s * scale;
    if (p[j] > mx)
      mx = p[j];
  }
  double sum = 0.0;
  for (size_t j = 0; j < nk; j++)
    sum += exp(p[j] - mx);
  double lse = mx + log(sum);
  for (size_t j = 0; j < nk; j++)
    p[j] = exp(p[j] - lse);
  return lse;
}

void tb__kref_attention_forward(float *out, float *lse, const float *q,
                                const float *k, const float *v, size_t T,
                                size_t pos0, size_t H, size_t KVH, size_t D) {
  double *p = malloc((pos0 + T + 1) * sizeof(double));
  if (p == NULL)
    abort();
  for (size_t t = 0; t < T; t++)
    for (size_t h = 0; h < H; h++) {
      size_t kvh = h / (H / KVH), nk = pos0 + t + 1;
      double l = row_probs(p, q + (t * H + h) * D, k, kvh, nk, KVH, D);
      if (lse != NULL)
        lse[t * H + h] = (float)l;
      for (size_t d = 0; d < D; d++) {
        double s = 0.0;
        for (size_t j = 0; j < nk; j++)
          s += p[j] * v[(j * KVH + kvh) * D + d];
        out[(t * H + h) * D + d] = (float)s;
      }
    }
  free(p);
}

void tb__kref_attention_backward(float *dq, float *dk, float *dv,
                                 const float *dout, const float *q,
                                 const float *k, const float *v, size_t T,
                                 size_t H, size_t KVH, size_t D) {
  double *p = malloc(2 * (T + 1) * sizeof(double));
  if (p == NULL)
    abort();
  double *dp = p + T + 1;
  double scale = 1.0 / sqrt((double)D);
  for (size_t t = 0; t < T; t++)
    for (size_t h = 0; h < H; h++) {
      size_t kvh = h / (H / KVH), nk = t + 1;
      const float *qr = q + (t * H + h) * D, *dor = dout + (t * H + h) * D;
      row_probs(p, qr, k, kvh, nk, KVH, D);
      /* out = sum_j p_j v_j: dv_j += p_j dout, dp_j = dout . v_j;
       * softmax: ds_j = p_j (dp_j - sum_i p_i dp_i); s_j = scale q.k_j. */
      double pdp = 0.0;
      for (size_t j = 0; j < nk; j++) {
        const float *vj = v + (j * KVH + kvh) * D;
        double s = 0.0;
        for (size_t d = 0; d < D; d++) {
          s += (double)dor[d] * vj[d];
          dv[(j * KVH + kvh) * D + d] += (float)(p[j] * dor[d]);
        }
        dp[j] = s;
        pdp += p[j] * s;
      }
      for (size_t j = 0; j < nk; j++) {
        double ds = p[j] * (dp[j] - pdp) * scale;
        const float *kj = k + (j * KVH + kvh) * D;
        for (size_t d = 0; d < D; d++) {
          dq[(t * H + h) * D + d] += (float)(ds * kj[d]);
          dk[(j * KVH + kvh) * D + d] += (float)(ds * qr[d]);
        }
      }
    }
  free(p);
}

void tb__kref_attention_decode(float *out, const float *q,
                               const float *k_cache, const float *v_cache,
                               size_t P, size_t H, size_t KVH, size_t D) {
  /* The newest position sees every cached one: a forward of one row. */
  tb__kref_attention_forward(out, NULL, q, k_cache, v_cache, 1, P - 1, H, KVH,
                             D);
}

void tb__kref_attention_paged(float *out, const float *q,
                              const float *const *k_blocks,
                              const float *const *v_blocks, size_t block,
                              size_t P, size_t H, size_t KVH, size_t D) {
  size_t ld = KVH * D;
  float *k = malloc(P * ld * sizeof(float));
  float *v = malloc(P * ld * sizeof(float));
  for (size_t j = 0; j < P; j++) {
    memcpy(k + j * ld, k_blocks[j / block] + (j % block) * ld,
           ld * sizeof(float));
    memcpy(v + j * ld, v_blocks[j / block] + (j % block) * ld,
           ld * sizeof(float));
  }
  tb__kref_attention_decode(out, q, k, v, P, H, KVH, D);
  free(k);
  free(v);
}

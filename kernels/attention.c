/*
 * Causal grouped-query attention for one sequence, forward, backward and
 * one-token decoding, on cblas_sgemm.
 *
 * The forward walks each head in blocks of TB__K_ATTN_BLOCK query rows.  A
 * block of rows i0..i1-1 can only see keys 0..pos0+i1-1, so the score
 * matrix of the block is (bq, pos0+i1) and the masked upper triangle is
 * computed only inside the diagonal block: about half the work of a full
 * (T, T) score matrix, in sgemm-sized pieces.  The probabilities are not
 * stored; the forward keeps one log-sum-exp per (row, head), and the
 * backward recomputes each block's probabilities from it (the recompute
 * trick of FlashAttention), so activation memory is O(T H) rather than
 * O(H T^2).  Scratch is two (bq, nk) blocks plus one bq vector.
 *
 * Layouts: q and out are (T, H, D), k and v are (nk, KVH, D); query head h
 * reads KV head h / (H / KVH), which sgemm reaches through leading
 * dimensions H*D and KVH*D without copying.  Naive reference:
 * ref_attention.c.
 */
#include "kernels.h"
#include "fastmath.h"

#include <cblas.h>
#include <math.h>

size_t tb__k_attention_scratch_floats(size_t nk) {
  return 2 * (size_t)TB__K_ATTN_BLOCK * nk + TB__K_ATTN_BLOCK;
}

TB__K_VECTORISED
void tb__k_attention_forward(float *out, float *lse, float *scratch,
                             const float *q, const float *k, const float *v,
                             size_t T, size_t pos0, size_t H, size_t KVH,
                             size_t D) {
  if (T == 0 || H == 0 || D == 0)
    return;
  const size_t group = H / KVH;
  const float scale = (float)(1.0 / sqrt((double)D));
  const int ldq = (int)(H * D), ldk = (int)(KVH * D);
  float *s = scratch; /* (bq, nk) scores, then unnormalised probabilities */
  float *inv = scratch + 2 * (size_t)TB__K_ATTN_BLOCK * (pos0 + T); /* (bq) */

  for (size_t h = 0; h < H; h++) {
    const float *kh = k + (h / group) * D;
    const float *vh = v + (h / group) * D;
    for (size_t i0 = 0; i0 < T; i0 += TB__K_ATTN_BLOCK) {
      size_t bq = T - i0 < TB__K_ATTN_BLOCK ? T - i0 : TB__K_ATTN_BLOCK;
      size_t nk = pos0 + i0 + bq;
      const float *qb = q + i0 * H * D + h * D;
      /* S = scale * Q_blk K[0:nk]^T */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)nk,
                  (int)D, scale, qb, ldq, kh, ldk, 0.0f, s, (int)nk);
      for (size_t ii = 0; ii < bq; ii++) {
        float *row = s + ii * nk;
        size_t lim = pos0 + i0 + ii + 1; /* keys 0..lim-1 are visible */
        float mx = tb__k_maxf(row, lim);
        tb__k_exp_shift(row, row, mx, lim);
        double sum = tb__k_sumf(row, lim);
        /* Normalising the (bq, D) output is cheaper than the (bq, nk)
         * probabilities. */
        inv[ii] = (float)(1.0 / sum);
        for (size_t j = lim; j < nk; j++)
          row[j] = 0.0f;
        if (lse != NULL)
          lse[(i0 + ii) * H + h] = mx + (float)log(sum);
      }
      /* out_blk = P V[0:nk], then each row divided by its sum. */
      float *ob = out + i0 * H * D + h * D;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)D,
                  (int)nk, 1.0f, s, (int)nk, vh, ldk, 0.0f, ob, ldq);
      for (size_t ii = 0; ii < bq; ii++)
        for (size_t c = 0; c < D; c++)
          ob[ii * H * D + c] *= inv[ii];
    }
  }
}

TB__K_VECTORISED
void tb__k_attention_backward(float *dq, float *dk, float *dv, float *scratch,
                              const float *dout, const float *q,
                              const float *k, const float *v,
                              const float *out, const float *lse, size_t T,
                              size_t H, size_t KVH, size_t D) {
  if (T == 0 || H == 0 || D == 0)
    return;
  const size_t group = H / KVH;
  const float scale = (float)(1.0 / sqrt((double)D));
  const int ldq = (int)(H * D), ldk = (int)(KVH * D);
  float *p = scratch;                                        /* (bq, nk) */
  float *dp = scratch + (size_t)TB__K_ATTN_BLOCK * T;        /* (bq, nk) */
  float *drow = scratch + 2 * (size_t)TB__K_ATTN_BLOCK * T;  /* (bq) */

  for (size_t h = 0; h < H; h++) {
    const float *kh = k + (h / group) * D;
    const float *vh = v + (h / group) * D;
    float *dkh = dk + (h / group) * D;
    float *dvh = dv + (h / group) * D;
    for (size_t i0 = 0; i0 < T; i0 += TB__K_ATTN_BLOCK) {
      size_t bq = T - i0 < TB__K_ATTN_BLOCK ? T - i0 : TB__K_ATTN_BLOCK;
      size_t nk = i0 + bq;
      size_t off = i0 * H * D + h * D;
      const float *qb = q + off, *dob = dout + off, *ob = out + off;

      /* P = exp(scale * Q K^T - lse), zero above the diagonal. */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)nk,
                  (int)D, scale, qb, ldq, kh, ldk, 0.0f, p, (int)nk);
      for (size_t ii = 0; ii < bq; ii++) {
        float *row = p + ii * nk;
        size_t lim = i0 + ii + 1;
        float l = lse[(i0 + ii) * H + h];
        tb__k_exp_shift(row, row, l, lim);
        for (size_t j = lim; j < nk; j++)
          row[j] = 0.0f;
        /* D_i = dO_i . O_i = sum_j P_ij dP_ij, the softmax's correction. */
        float d = 0.0f;
        for (size_t c = 0; c < D; c++)
          d += dob[ii * H * D + c] * ob[ii * H * D + c];
        drow[ii] = d;
      }
      /* dV[0:nk] += P^T dO_blk */
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)D,
                  (int)bq, 1.0f, p, (int)nk, dob, ldq, 1.0f, dvh, ldk);
      /* dP = dO_blk V[0:nk]^T */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)nk,
                  (int)D, 1.0f, dob, ldq, vh, ldk, 0.0f, dp, (int)nk);
      /* dS = P * (dP - D_i); masked entries have P = 0. */
      for (size_t ii = 0; ii < bq; ii++) {
        float *pr = p + ii * nk, *dr = dp + ii * nk;
        for (size_t j = 0; j < nk; j++)
          dr[j] = pr[j] * (dr[j] - drow[ii]);
      }
      /* dQ_blk += scale * dS K[0:nk];  dK[0:nk] += scale * dS^T Q_blk */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)D,
                  (int)nk, scale, dp, (int)nk, kh, ldk, 1.0f, dq + off, ldq);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)D,
                  (int)bq, scale, dp, (int)nk, qb, ldq, 1.0f, dkh, ldk);
    }
  }
}

TB__K_VECTORISED
void tb__k_attention_decode(float *out, float *scratch, const float *q,
                            const float *k_cache, const float *v_cache,
                            size_t P, size_t H, size_t KVH, size_t D) {
  if (P == 0 || H == 0 || D == 0)
    return;
  const size_t group = H / KVH;
  const float scale = (float)(1.0 / sqrt((double)D));
  const int ldk = (int)(KVH * D);
  for (size_t h = 0; h < H; h++) {
    const float *kh = k_cache + (h / group) * D;
    const float *vh = v_cache + (h / group) * D;
    /* scores = scale * K q_h over all cached positions (all visible). */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)P, (int)D, scale, kh, ldk,
                q + h * D, 1, 0.0f, scratch, 1);
    float mx = tb__k_maxf(scratch, P);
    tb__k_exp_shift(scratch, scratch, mx, P);
    float inv = (float)(1.0 / tb__k_sumf(scratch, P));
    /* out_h = V^T p / sum */
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)P, (int)D, inv, vh, ldk,
                scratch, 1, 0.0f, out + h * D, 1);
  }
}

/*
 * Causal grouped-query attention for one sequence, forward, backward and
 * one-token decoding, on cblas_sgemm.
 *
 * The forward walks each KV head's query heads in blocks of TB__K_ATTN_BLOCK query rows.  A
 * block of rows i0..i1-1 can only see keys 0..pos0+i1-1, so the score
 * matrix of the block is (bq, pos0+i1) and the masked upper triangle is
 * computed only inside the diagonal block: about half the work of a full
 * (T, T) score matrix, in sgemm-sized pieces.  The probabilities are not
 * stored; the forward keeps one log-sum-exp per (row, head), and the
 * backward recomputes each block's probabilities from it (the recompute
 * trick of FlashAttention), so activation memory is O(T H) rather than
 * O(H T^2).  Scratch: see tb__k_attention_scratch_floats.
 *
 * Layouts: q and out are (T, H, D), k and v are (nk, KVH, D); query head h
 * reads KV head h / (H / KVH), which sgemm reaches through leading
 * dimensions H*D and KVH*D.  The H/KVH query heads that share one KV head
 * are stacked into one (G bq, D) block per query block (a small copy), so
 * every product is G times taller than one head's: with SmolLM2's 3 heads
 * per KV head, 192 rows instead of 64.  Naive reference: ref_attention.c.
 */
#include "kernels.h"
#include "fastmath.h"
#include "vec16.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

size_t tb__k_attention_scratch_floats(size_t nk, size_t H, size_t KVH,
                                      size_t D) {
  size_t rows = (KVH ? H / KVH : 1) * (size_t)TB__K_ATTN_BLOCK;
  return rows * (2 * nk + 3 * D + 1);
}

/* The query-side rows of one block for the G heads that share KV head kvh,
 * stacked head by head: row g * bq + ii is head kvh * G + g at position
 * i0 + ii.  src is (T, H, D); dst is (G * bq, D). */
static void gather_heads(float *dst, const float *src, size_t i0, size_t bq,
                         size_t kvh, size_t G, size_t H, size_t D) {
  for (size_t g = 0; g < G; g++)
    for (size_t ii = 0; ii < bq; ii++)
      memcpy(dst + (g * bq + ii) * D, src + ((i0 + ii) * H + kvh * G + g) * D,
             D * sizeof(float));
}

TB__K_VECTORISED
void tb__k_attention_forward(float *out, float *lse, float *scratch,
                             const float *q, const float *k, const float *v,
                             size_t T, size_t pos0, size_t H, size_t KVH,
                             size_t D) {
  if (T == 0 || H == 0 || D == 0)
    return;
  const size_t G = H / KVH, B = TB__K_ATTN_BLOCK;
  const float scale = (float)(1.0 / sqrt((double)D));
  const int ldk = (int)(KVH * D);
  float *s = scratch;                     /* (G bq, nk) scores, then exp */
  float *qg = s + G * B * (pos0 + T);     /* (G bq, D) stacked queries */
  float *og = qg + G * B * D;             /* (G bq, D) unnormalised output */
  float *inv = og + G * B * D;            /* (G bq) 1 / row sums */

  for (size_t kvh = 0; kvh < KVH; kvh++) {
    const float *kh = k + kvh * D;
    const float *vh = v + kvh * D;
    for (size_t i0 = 0; i0 < T; i0 += B) {
      size_t bq = T - i0 < B ? T - i0 : B;
      size_t nk = pos0 + i0 + bq, rows = G * bq;
      gather_heads(qg, q, i0, bq, kvh, G, H, D);
      /* S = scale * Q_blk K[0:nk]^T for the whole group at once. */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nk,
                  (int)D, scale, qg, (int)D, kh, ldk, 0.0f, s, (int)nk);
      for (size_t row_i = 0; row_i < rows; row_i++) {
        size_t g = row_i / bq, ii = row_i % bq;
        float *row = s + row_i * nk;
        size_t lim = pos0 + i0 + ii + 1; /* keys 0..lim-1 are visible */
        float mx = tb__k_maxf(row, lim);
        tb__k_exp_shift(row, row, mx, lim);
        double sum = tb__k_sumf(row, lim);
        /* Normalising the (bq, D) output is cheaper than the (bq, nk)
         * probabilities. */
        inv[row_i] = (float)(1.0 / sum);
        for (size_t j = lim; j < nk; j++)
          row[j] = 0.0f;
        if (lse != NULL)
          lse[(i0 + ii) * H + kvh * G + g] = mx + (float)log(sum);
      }
      /* out_blk = P V[0:nk], then each row divided by its sum. */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)D,
                  (int)nk, 1.0f, s, (int)nk, vh, ldk, 0.0f, og, (int)D);
      for (size_t row_i = 0; row_i < rows; row_i++) {
        size_t g = row_i / bq, ii = row_i % bq;
        float *o = out + ((i0 + ii) * H + kvh * G + g) * D;
        for (size_t c = 0; c < D; c++)
          o[c] = og[row_i * D + c] * inv[row_i];
      }
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
  const size_t G = H / KVH, B = TB__K_ATTN_BLOCK;
  const float scale = (float)(1.0 / sqrt((double)D));
  const int ldk = (int)(KVH * D);
  float *p = scratch;                 /* (G bq, nk) probabilities */
  float *dp = p + G * B * T;          /* (G bq, nk) dP, then dS */
  float *qg = dp + G * B * T;         /* (G bq, D) stacked queries */
  float *dog = qg + G * B * D;        /* (G bq, D) stacked dout */
  float *dqg = dog + G * B * D;       /* (G bq, D) this block's dQ */
  float *drow = dqg + G * B * D;      /* (G bq) */

  for (size_t kvh = 0; kvh < KVH; kvh++) {
    const float *kh = k + kvh * D;
    const float *vh = v + kvh * D;
    float *dkh = dk + kvh * D;
    float *dvh = dv + kvh * D;
    for (size_t i0 = 0; i0 < T; i0 += B) {
      size_t bq = T - i0 < B ? T - i0 : B;
      size_t nk = i0 + bq, rows = G * bq;
      gather_heads(qg, q, i0, bq, kvh, G, H, D);
      gather_heads(dog, dout, i0, bq, kvh, G, H, D);

      /* P = exp(scale * Q K^T - lse), zero above the diagonal. */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nk,
                  (int)D, scale, qg, (int)D, kh, ldk, 0.0f, p, (int)nk);
      for (size_t row_i = 0; row_i < rows; row_i++) {
        size_t g = row_i / bq, ii = row_i % bq;
        size_t at = (i0 + ii) * H + kvh * G + g;
        float *row = p + row_i * nk;
        size_t lim = i0 + ii + 1;
        tb__k_exp_shift(row, row, lse[at], lim);
        for (size_t j = lim; j < nk; j++)
          row[j] = 0.0f;
        /* D_i = dO_i . O_i = sum_j P_ij dP_ij, the softmax's correction.
         * A plain float sum here would be one serial chain of adds. */
        drow[row_i] = (float)tb__k_dot_d(dog + row_i * D, out + at * D, D);
      }
      /* dV[0:nk] += P^T dO_blk */
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)D,
                  (int)rows, 1.0f, p, (int)nk, dog, (int)D, 1.0f, dvh, ldk);
      /* dP = dO_blk V[0:nk]^T */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nk,
                  (int)D, 1.0f, dog, (int)D, vh, ldk, 0.0f, dp, (int)nk);
      /* dS = P * (dP - D_i); masked entries have P = 0. */
      for (size_t row_i = 0; row_i < rows; row_i++) {
        float *pr = p + row_i * nk, *dr = dp + row_i * nk;
        for (size_t j = 0; j < nk; j++)
          dr[j] = pr[j] * (dr[j] - drow[row_i]);
      }
      /* dQ_blk = scale * dS K[0:nk];  dK[0:nk] += scale * dS^T Q_blk */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)D,
                  (int)nk, scale, dp, (int)nk, kh, ldk, 0.0f, dqg, (int)D);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)D,
                  (int)rows, scale, dp, (int)nk, qg, (int)D, 1.0f, dkh, ldk);
      for (size_t row_i = 0; row_i < rows; row_i++) {
        size_t g = row_i / bq, ii = row_i % bq;
        float *d = dq + ((i0 + ii) * H + kvh * G + g) * D;
        for (size_t c = 0; c < D; c++)
          d[c] += dqg[row_i * D + c];
      }
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

/* The paged decode attention keeps its own order of operations (vec16.h),
 * so that a row's output is the same whether it is computed in a decode
 * step or in a prefill chunk, alone or beside other sequences.  Faster
 * arrangements below keep every element's operations and their order:
 * the lane sums of sixteen keys' dot products are made together (each
 * key's own tree, tb__v16_hsum16), and the weighted sum of the values
 * keeps four vectors of a head's output in registers over all keys. */

/* o (n floats) = sum over the P keys j of p[j] v_j, each element one
 * chain over j from zero, nv vectors (1 to 4) at a time in registers. */
#define VALUE_SUM(NAME, NV)                                                  \
  TB__V16 void NAME(float *o, const float *p, const float *const *v_blocks,  \
                    size_t block, size_t ld, size_t off, size_t P) {         \
    tb__v16f acc[NV];                                                        \
    for (int c = 0; c < NV; c++)                                             \
      acc[c] = (tb__v16f){ 0 };                                              \
    for (size_t j = 0; j < P; j++) {                                         \
      const float *vj = v_blocks[j / block] + (j % block) * ld + off;        \
      tb__v16f pv = tb__v16_splat(p[j]);                                     \
      for (int c = 0; c < NV; c++)                                           \
        acc[c] = acc[c] + pv * tb__v16_load(vj + 16 * c);                    \
    }                                                                        \
    memcpy(o, acc, sizeof(acc));                                             \
  }
VALUE_SUM(value_sum4, 4)
VALUE_SUM(value_sum1, 1)

TB__K_VECTORISED
void tb__k_attention_paged(float *out, float *scratch, const float *q,
                           const float *const *k_blocks,
                           const float *const *v_blocks, size_t block,
                           size_t ld, size_t P, size_t H, size_t KVH,
                           size_t D) {
  if (P == 0 || H == 0 || D == 0)
    return;
  const size_t G = H / KVH;
  const float scale = (float)(1.0 / sqrt((double)D));
  for (size_t kvh = 0; kvh < KVH; kvh++) {
    const float *qg = q + kvh * G * D;
    float *og = out + kvh * G * D;
    /* Scores of the G heads that read this KV head: each key is read once
     * for all of them.  scratch holds (G, P). */
    size_t j = 0;
    for (; j + 16 <= P; j += 16)
      for (size_t g = 0; g < G; g++) {
        tb__v16f a[16];
        for (size_t m = 0; m < 16; m++) {
          const float *km =
              k_blocks[(j + m) / block] + ((j + m) % block) * ld + kvh * D;
          a[m] = tb__v16_dot_lanes(qg + g * D, km, D);
        }
        tb__v16f d = tb__v16_splat(scale) * tb__v16_hsum16(a);
        memcpy(scratch + g * P + j, &d, sizeof(d));
      }
    for (; j < P; j++) {
      const float *kj = k_blocks[j / block] + (j % block) * ld + kvh * D;
      for (size_t g = 0; g < G; g++)
        scratch[g * P + j] = scale * tb__v16_dot(qg + g * D, kj, D);
    }
    float inv[G];
    for (size_t g = 0; g < G; g++) {
      float *s = scratch + g * P;
      float mx = tb__k_maxf(s, P);
      tb__k_exp_shift(s, s, mx, P);
      inv[g] = (float)(1.0 / tb__k_sumf(s, P));
    }
    /* Sixteen outputs to a vector, each one chain over j from zero. */
    const size_t D16 = D / 16 * 16;
    for (size_t g = 0; g < G; g++) {
      const float *p = scratch + g * P;
      float *o = og + g * D;
      size_t c = 0;
      for (; c + 64 <= D16; c += 64)
        value_sum4(o + c, p, v_blocks, block, ld, kvh * D + c, P);
      for (; c < D16; c += 16)
        value_sum1(o + c, p, v_blocks, block, ld, kvh * D + c, P);
      for (; c < D; c++) {
        o[c] = 0.0f;
        for (size_t jj = 0; jj < P; jj++)
          o[c] += p[jj] * v_blocks[jj / block][(jj % block) * ld + kvh * D + c];
      }
    }
    for (size_t g = 0; g < G; g++)
      for (size_t c = 0; c < D; c++)
        og[g * D + c] *= inv[g];
  }
}

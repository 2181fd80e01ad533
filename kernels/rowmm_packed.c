/*
 * Row-independent products over packed weights: each element of y is one
 * chain of multiply-adds over k in ascending order, starting from zero,
 * whatever the number of rows and whichever rows and outputs are computed
 * with it (see kernels.h for the packed layout).
 *
 * This is the shape of a BLAS micro-kernel: each k broadcasts one value of
 * every row of the block and multiplies it into two vectors of 16 outputs
 * per panel, so the accumulators are outputs and no sum across lanes is
 * ever made.  Every block shape (6, 4, 3, 2 or 1 rows by two panels of 32
 * outputs; 8, 4, 3, 2 or 1 rows by the odd last panel) makes the same
 * chain for each element, which is what makes a row's result independent
 * of its neighbours; BLAS libraries pick other kernels (and orders) at the
 * edges.  Six rows by two panels keep 24 accumulators in registers and
 * load two weight vectors and six broadcasts per 24 multiply-adds.
 *
 * The weights are packed once: float32 panels (K, 32), or bfloat16 panels
 * whose words pair outputs j and j + 16, so one 64-byte load gives 32
 * weights and two integer operations widen them exactly.  At batch 1 the
 * product streams the panels at memory speed; with many rows a panel
 * (37 KB in bfloat16 for K = 576) stays in the first-level cache while
 * every row block uses it.  tb__k_rowmm_seq_f32 packs a matrix with a
 * short K (LoRA's up products, K = rank) on the stack and runs the same
 * blocks.  Naive reference: ref_linear.c.
 */
#include "kernels.h"
#include "vec16.h"

#define P TB__K_PANEL

TB__V16 void store1(float *y, float d, float alpha, int accumulate) {
  *y = accumulate ? *y + alpha * d : alpha * d;
}

/* 16 outputs of a row from one accumulator; nv of them are kept. */
TB__V16 void store16(float *y, tb__v16f s, float alpha, int accumulate,
                     size_t nv) {
  if (nv >= 16) {
    tb__v16f a = tb__v16_splat(alpha);
    tb__v16f v = accumulate ? tb__v16_load(y) + a * s : a * s;
    memcpy(y, &v, sizeof(v));
    return;
  }
  for (size_t j = 0; j < nv; j++)
    store1(y + j, s[j], alpha, accumulate);
}

TB__V16 void load_f32(const float *w, size_t k, tb__v16f *lo, tb__v16f *hi) {
  *lo = tb__v16_load(w + k * P);
  *hi = tb__v16_load(w + k * P + 16);
}

TB__V16 void load_bf16(const uint32_t *w, size_t k, tb__v16f *lo,
                       tb__v16f *hi) {
  tb__v16u u;
  memcpy(&u, w + k * (P / 2), sizeof(u));
  *lo = (tb__v16f)(u << 16);
  *hi = (tb__v16f)(u & 0xffff0000u);
}

/* The loops over a block's rows and vectors are unrolled whole, so its
 * accumulators stay in registers (a loop left rolled keeps them in memory:
 * a tenth of the speed). */
#define UNROLL _Pragma("GCC unroll 16")

/* TR rows by TP panels (of 32 outputs, pstride elements apart) over the
 * whole of K; nv outputs of the TP panels are kept. */
#define PACKED_BLOCK(NAME, TR, TP, WT, LOADW)                                \
  static inline __attribute__((always_inline)) void NAME(                    \
      float *y, size_t ldy, const float *x, size_t ldx, const WT *w,         \
      size_t pstride, float alpha, int accumulate, size_t K, size_t nv) {    \
    tb__v16f s[TR][2 * TP];                                                  \
    UNROLL for (int i = 0; i < TR; i++)                                      \
      UNROLL for (int j = 0; j < 2 * TP; j++)                                \
        s[i][j] = (tb__v16f){ 0 };                                           \
    for (size_t k = 0; k < K; k++) {                                         \
      tb__v16f wv[2 * TP];                                                   \
      UNROLL for (int q = 0; q < TP; q++)                                    \
        LOADW(w + (size_t)q * pstride, k, &wv[2 * q], &wv[2 * q + 1]);       \
      UNROLL for (int i = 0; i < TR; i++) {                                  \
        tb__v16f xb = tb__v16_splat(x[(size_t)i * ldx + k]);                 \
        UNROLL for (int j = 0; j < 2 * TP; j++)                              \
          s[i][j] += xb * wv[j];                                             \
      }                                                                      \
    }                                                                        \
    for (int i = 0; i < TR; i++)                                             \
      for (int j = 0; j < 2 * TP && (size_t)j * 16 < nv; j++)                \
        store16(y + (size_t)i * ldy + (size_t)j * 16, s[i][j], alpha,        \
                accumulate, nv - (size_t)j * 16);                            \
  }

#define PACKED_BLOCKS(SUFFIX, WT, LOADW)                                     \
  PACKED_BLOCK(b8_##SUFFIX, 8, 1, WT, LOADW)                                 \
  PACKED_BLOCK(b4_##SUFFIX, 4, 1, WT, LOADW)                                 \
  PACKED_BLOCK(b3_##SUFFIX, 3, 1, WT, LOADW)                                 \
  PACKED_BLOCK(b2_##SUFFIX, 2, 1, WT, LOADW)                                 \
  PACKED_BLOCK(b1_##SUFFIX, 1, 1, WT, LOADW)                                 \
  PACKED_BLOCK(b6x2_##SUFFIX, 6, 2, WT, LOADW)                               \
  PACKED_BLOCK(b4x2_##SUFFIX, 4, 2, WT, LOADW)                               \
  PACKED_BLOCK(b3x2_##SUFFIX, 3, 2, WT, LOADW)                               \
  PACKED_BLOCK(b2x2_##SUFFIX, 2, 2, WT, LOADW)                               \
  PACKED_BLOCK(b1x2_##SUFFIX, 1, 2, WT, LOADW)

PACKED_BLOCKS(f32, float, load_f32)
PACKED_BLOCKS(bf16, uint32_t, load_bf16)

/* Every row block against every panel, panels outermost so that a panel
 * (or a pair) serves all the rows while it is in cache; panels go in
 * pairs, the odd last one alone. */
#define PACKED_PRODUCT(SUFFIX, WT, PSTRIDE)                                  \
  static inline __attribute__((always_inline)) void product_##SUFFIX(        \
      float *y, size_t ldy, const float *x, size_t ldx, const WT *w,         \
      float alpha, int acc, size_t T, size_t K, size_t N) {                  \
    const size_t ps = (PSTRIDE), np = (N + P - 1) / P;                       \
    if (T == 1) {                                                            \
      size_t p = 0;                                                          \
      for (; p + 2 <= np; p += 2)                                            \
        b1x2_##SUFFIX(y + p * P, ldy, x, ldx, w + p * ps, ps, alpha, acc, K, \
                      N - p * P);                                            \
      if (p < np)                                                            \
        b1_##SUFFIX(y + p * P, ldy, x, ldx, w + p * ps, ps, alpha, acc, K,   \
                    N - p * P);                                              \
      return;                                                                \
    }                                                                        \
    /* Pairs of panels by blocks of six rows: 24 accumulators, and per k   \
     * two weight loads and six broadcasts for 24 multiply-adds. */         \
    size_t p = 0;                                                            \
    for (; p + 2 <= np; p += 2) {                                            \
      const WT *wp = w + p * ps;                                             \
      float *yp = y + p * P;                                                 \
      size_t nv = N - p * P, t = 0;                                          \
      for (; t + 6 <= T; t += 6)                                             \
        b6x2_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha,    \
                      acc, K, nv);                                           \
      if (t + 4 <= T) {                                                      \
        b4x2_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha,    \
                      acc, K, nv);                                           \
        t += 4;                                                              \
      }                                                                      \
      if (T - t == 3)                                                        \
        b3x2_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha,    \
                      acc, K, nv);                                           \
      else if (T - t == 2)                                                   \
        b2x2_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha,    \
                      acc, K, nv);                                           \
      else if (T - t == 1)                                                   \
        b1x2_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha,    \
                      acc, K, nv);                                           \
    }                                                                        \
    for (; p < np; p++) {                                                    \
      const WT *wp = w + p * ps;                                             \
      float *yp = y + p * P;                                                 \
      size_t nv = N - p * P, t = 0;                                          \
      for (; t + 8 <= T; t += 8)                                             \
        b8_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha, acc, \
                    K, nv);                                                  \
      if (t + 4 <= T) {                                                      \
        b4_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha, acc, \
                    K, nv);                                                  \
        t += 4;                                                              \
      }                                                                      \
      if (T - t == 3)                                                        \
        b3_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha, acc, \
                    K, nv);                                                  \
      else if (T - t == 2)                                                   \
        b2_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha, acc, \
                    K, nv);                                                  \
      else if (T - t == 1)                                                   \
        b1_##SUFFIX(yp + t * ldy, ldy, x + t * ldx, ldx, wp, ps, alpha, acc, \
                    K, nv);                                                  \
    }                                                                        \
  }

PACKED_PRODUCT(f32, float, K * P)
PACKED_PRODUCT(bf16, uint32_t, K * (P / 2))

TB__K_VECTORISED
void tb__k_rowmm_packed_f32(float *y, size_t ldy, const float *x, size_t ldx,
                            const float *w, float alpha, int accumulate,
                            size_t T, size_t K, size_t N) {
  product_f32(y, ldy, x, ldx, w, alpha, accumulate, T, K, N);
}

TB__K_VECTORISED
void tb__k_rowmm_packed_bf16(float *y, size_t ldy, const float *x,
                             size_t ldx, const uint32_t *w, float alpha,
                             int accumulate, size_t T, size_t K, size_t N) {
  product_bf16(y, ldy, x, ldx, w, alpha, accumulate, T, K, N);
}

TB__K_VECTORISED
void tb__k_rowmm_seq_f32(float *y, size_t ldy, const float *x, size_t ldx,
                         const float *w, size_t ldw, float alpha,
                         int accumulate, size_t T, size_t K, size_t N) {
  float panel[TB__K_ROWMM_SEQ_MAX_K * P];
  if (K > TB__K_ROWMM_SEQ_MAX_K)
    return;
  for (size_t n0 = 0; n0 < N; n0 += P) {
    size_t nv = N - n0 < P ? N - n0 : P;
    tb__k_pack_f32(panel, w + n0 * ldw, ldw, K, nv);
    product_f32(y + n0, ldy, x, ldx, panel, alpha, accumulate, T, K, nv);
  }
}

/* ------------------------------------------------------------ packing */

size_t tb__k_packed_elems(size_t K, size_t N) {
  return (N + P - 1) / P * K * P;
}

void tb__k_pack_f32(float *dst, const float *w, size_t ldw, size_t K,
                    size_t N) {
  for (size_t p = 0; p * P < N; p++)
    for (size_t k = 0; k < K; k++)
      for (size_t j = 0; j < P; j++) {
        size_t n = p * P + j;
        dst[(p * K + k) * P + j] = n < N ? w[n * ldw + k] : 0.0f;
      }
}

void tb__k_pack_bf16(uint32_t *dst, const float *w, size_t ldw, size_t K,
                     size_t N) {
  for (size_t p = 0; p * P < N; p++)
    for (size_t k = 0; k < K; k++)
      for (size_t j = 0; j < P / 2; j++) {
        size_t n0 = p * P + j, n1 = n0 + P / 2;
        uint16_t lo = 0, hi = 0;
        if (n0 < N)
          tb__k_bf16_from_f32(&lo, &w[n0 * ldw + k], 1);
        if (n1 < N)
          tb__k_bf16_from_f32(&hi, &w[n1 * ldw + k], 1);
        dst[(p * K + k) * (P / 2) + j] = (uint32_t)lo | (uint32_t)hi << 16;
      }
}

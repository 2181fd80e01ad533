/*
 * Row-independent matrix products for decoding: y = x W^T where each
 * output element is the same function of its own row of x and row of W,
 * however many rows the call has and whichever rows and outputs are
 * computed beside it.
 *
 * A decode step runs the rows of many sequences through one product, and a
 * sequence must sample the same tokens alone as in any batch.  BLAS makes
 * no such promise: a gemv and a gemm accumulate in different orders, and
 * OpenBLAS picks edge kernels by the row count.  Here every element (t, n)
 * is accumulated in sixteen lanes over k (lane j takes k = j mod 16 in
 * ascending order, a short tail in zero-padded lanes) and the lanes are
 * summed in one fixed tree (vec16.h).  The blocking, 4 rows by 4 outputs
 * sharing their loads, only decides which elements are computed together.
 *
 * The other order, one chain of multiply-adds per element over k, is
 * rowmm_packed.c's: faster wherever the weights can be packed once.
 *
 * The weights may be float32 or bfloat16 (the top half of a float, widened
 * exactly), so a checkpoint stored in bfloat16 is streamed at half the
 * bytes.  At batch 1 the product is bound by memory: one row of x against
 * four weight rows at a time, four streams.  With many rows, a bfloat16
 * panel of four weight rows is widened once into a float32 scratch on the
 * stack and reused by every row block.  Naive reference: ref_linear.c.
 */
#include "kernels.h"
#include "vec16.h"

/* Widest K whose four-row float32 panel is kept on the stack (32 KiB). */
#define PANEL_MAX_K 2048

TB__V16 void store(float *y, float d, float alpha, int accumulate) {
  *y = accumulate ? *y + alpha * d : alpha * d;
}

/* One block of TR rows by TN outputs over the whole of K.  The main loop
 * and the tail make the same multiply-add, so the compiler contracts both
 * or neither. */
#define ROWMM_BLOCK(NAME, TR, TN, WT, LOADW, TAILW)                          \
  static inline __attribute__((always_inline)) void NAME(                    \
      float *y, size_t ldy, const float *x, size_t ldx, const WT *w,         \
      size_t ldw, float alpha, int accumulate, size_t K) {                   \
    tb__v16f s[TR][TN];                                                      \
    for (int i = 0; i < TR; i++)                                             \
      for (int j = 0; j < TN; j++)                                           \
        s[i][j] = (tb__v16f){ 0 };                                           \
    size_t k = 0;                                                            \
    for (; k + 16 <= K; k += 16) {                                           \
      tb__v16f wv[TN];                                                       \
      for (int j = 0; j < TN; j++)                                           \
        wv[j] = LOADW(w + (size_t)j * ldw + k);                              \
      for (int i = 0; i < TR; i++) {                                         \
        tb__v16f xv = tb__v16_load(x + (size_t)i * ldx + k);                 \
        for (int j = 0; j < TN; j++)                                         \
          s[i][j] += xv * wv[j];                                             \
      }                                                                      \
    }                                                                        \
    if (k < K) {                                                             \
      tb__v16f wv[TN];                                                       \
      for (int j = 0; j < TN; j++)                                           \
        wv[j] = TAILW(w + (size_t)j * ldw + k, K - k);                       \
      for (int i = 0; i < TR; i++) {                                         \
        tb__v16f xv = tb__v16_load_tail(x + (size_t)i * ldx + k, K - k);     \
        for (int j = 0; j < TN; j++)                                         \
          s[i][j] += xv * wv[j];                                             \
      }                                                                      \
    }                                                                        \
    for (int i = 0; i < TR; i++)                                             \
      for (int j = 0; j < TN; j++)                                           \
        store(y + (size_t)i * ldy + j, tb__v16_hsum(s[i][j]), alpha,         \
              accumulate);                                                   \
  }

ROWMM_BLOCK(f32_4x4, 4, 4, float, tb__v16_load, tb__v16_load_tail)
ROWMM_BLOCK(f32_1x4, 1, 4, float, tb__v16_load, tb__v16_load_tail)
ROWMM_BLOCK(f32_4x1, 4, 1, float, tb__v16_load, tb__v16_load_tail)
ROWMM_BLOCK(f32_1x1, 1, 1, float, tb__v16_load, tb__v16_load_tail)
ROWMM_BLOCK(h_1x4, 1, 4, uint16_t, tb__v16_load_bf16, tb__v16_load_tail_bf16)
ROWMM_BLOCK(h_4x1, 4, 1, uint16_t, tb__v16_load_bf16, tb__v16_load_tail_bf16)
ROWMM_BLOCK(h_4x4, 4, 4, uint16_t, tb__v16_load_bf16, tb__v16_load_tail_bf16)
ROWMM_BLOCK(h_1x1, 1, 1, uint16_t, tb__v16_load_bf16, tb__v16_load_tail_bf16)

/* Four outputs of every row, from a float32 panel (4, K) or W itself. */
static inline __attribute__((always_inline)) void f32_cols4(
    float *y, size_t ldy, const float *x, size_t ldx, const float *w,
    size_t ldw, float alpha, int accumulate, size_t T, size_t K) {
  size_t t = 0;
  for (; t + 4 <= T; t += 4)
    f32_4x4(y + t * ldy, ldy, x + t * ldx, ldx, w, ldw, alpha, accumulate, K);
  for (; t < T; t++)
    f32_1x4(y + t * ldy, ldy, x + t * ldx, ldx, w, ldw, alpha, accumulate, K);
}

TB__K_VECTORISED
void tb__k_rowmm_f32(float *y, size_t ldy, const float *x, size_t ldx,
                     const float *w, size_t ldw, float alpha, int accumulate,
                     size_t T, size_t K, size_t N) {
  size_t n = 0;
  for (; n + 4 <= N; n += 4)
    f32_cols4(y + n, ldy, x, ldx, w + n * ldw, ldw, alpha, accumulate, T, K);
  for (; n < N; n++) {
    size_t t = 0;
    for (; t + 4 <= T; t += 4)
      f32_4x1(y + t * ldy + n, ldy, x + t * ldx, ldx, w + n * ldw, ldw, alpha,
              accumulate, K);
    for (; t < T; t++)
      f32_1x1(y + t * ldy + n, ldy, x + t * ldx, ldx, w + n * ldw, ldw, alpha,
              accumulate, K);
  }
}

TB__K_VECTORISED
void tb__k_rowmm_bf16(float *y, size_t ldy, const float *x, size_t ldx,
                      const uint16_t *w, size_t ldw, float alpha,
                      int accumulate, size_t T, size_t K, size_t N) {
  /* With few rows every weight is widened where it is used; with more,
   * once per panel (widening is exact, so the results are the same). */
  const int panel = T >= 8 && K <= PANEL_MAX_K;
  float buf[panel ? 4 * K : 1];
  size_t n = 0;
  for (; n + 4 <= N; n += 4) {
    const uint16_t *wn = w + n * ldw;
    if (panel) {
      for (size_t j = 0; j < 4; j++)
        for (size_t k = 0; k < K; k++) {
          uint32_t u = (uint32_t)wn[j * ldw + k] << 16;
          memcpy(&buf[j * K + k], &u, sizeof(u));
        }
      f32_cols4(y + n, ldy, x, ldx, buf, K, alpha, accumulate, T, K);
      continue;
    }
    size_t t = 0;
    for (; t + 4 <= T; t += 4)
      h_4x4(y + t * ldy + n, ldy, x + t * ldx, ldx, wn, ldw, alpha,
            accumulate, K);
    for (; t < T; t++)
      h_1x4(y + t * ldy + n, ldy, x + t * ldx, ldx, wn, ldw, alpha,
            accumulate, K);
  }
  for (; n < N; n++) {
    size_t t = 0;
    for (; t + 4 <= T; t += 4)
      h_4x1(y + t * ldy + n, ldy, x + t * ldx, ldx, w + n * ldw, ldw, alpha,
            accumulate, K);
    for (; t < T; t++)
      h_1x1(y + t * ldy + n, ldy, x + t * ldx, ldx, w + n * ldw, ldw, alpha,
            accumulate, K);
  }
}

/* ------------------------------------------------------------ bfloat16 */

TB__K_VECTORISED
void tb__k_bf16_from_f32(uint16_t *dst, const float *src, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &src[i], sizeof(u));
    /* Round to nearest, ties to even; a NaN stays a (quiet) NaN. */
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = ((u & 0x7fffffffu) > 0x7f800000u);
    dst[i] = (uint16_t)(nan ? (u >> 16) | 0x40u : r);
  }
}

TB__K_VECTORISED
int tb__k_f32_is_bf16(const float *src, size_t n) {
  uint32_t low = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &src[i], sizeof(u));
    low |= u & 0xffffu;
  }
  return low == 0;
}

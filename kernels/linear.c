/*
 * Linear layers and their LoRA low-rank contribution, as cblas_sgemm calls.
 *
 * All matrices are row-major; W is (out, in) as Hugging Face stores it, so
 * the forward is y = x W^T (sgemm NoTrans x Trans).  BLAS takes int
 * dimensions; the model's shapes are far below INT_MAX, and the casts are
 * the only place a size leaves size_t.  The naive references live in
 * ref_linear.c.
 */
#include "kernels.h"

#include <cblas.h>

/* BLAS rejects a leading dimension of 0 even when the matrix is empty. */
static int ld(size_t n) { return n > 0 ? (int)n : 1; }

void tb__k_linear_forward(float *y, const float *x, const float *w,
                          int accumulate, size_t T, size_t K, size_t N) {
  if (T == 0 || N == 0)
    return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)N, (int)K,
              1.0f, x, ld(K), w, ld(K), accumulate ? 1.0f : 0.0f, y, ld(N));
}

void tb__k_linear_backward_input(float *dx, const float *dy, const float *w,
                                 size_t T, size_t K, size_t N) {
  if (T == 0 || K == 0)
    return;
  /* (T, N) x (N, K) */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)K,
              (int)N, 1.0f, dy, ld(N), w, ld(K), 1.0f, dx, ld(K));
}

void tb__k_linear_backward_weight(float *dw, const float *dy, const float *x,
                                  size_t T, size_t K, size_t N) {
  if (N == 0 || K == 0)
    return;
  /* (N, T) x (T, K) */
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)N, (int)K, (int)T,
              1.0f, dy, ld(N), x, ld(K), 1.0f, dw, ld(K));
}

/* The adapter in two halves, down (x -> xa, rank R) and up (xa -> y, rank r
 * of one adapter), so that adapters reading the same x (q, k and v; gate and
 * up) stack their A matrices and run one down product: x is packed once and
 * the product is R = 2r or 3r wide instead of r.  xa of one adapter is then
 * a column slice of the shared (T, R) block, ldxa floats per row. */

void tb__k_lora_down(float *xa, const float *x, const float *a, size_t T,
                     size_t K, size_t R) {
  if (T == 0 || R == 0)
    return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)R, (int)K,
              1.0f, x, ld(K), a, ld(K), 0.0f, xa, ld(R));
}

void tb__k_lora_up(float *y, const float *xa, size_t ldxa, const float *b,
                   float scale, size_t T, size_t N, size_t r) {
  if (T == 0 || N == 0 || r == 0)
    return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)N, (int)r,
              scale, xa, ld(ldxa), b, ld(r), 1.0f, y, ld(N));
}

void tb__k_lora_up_backward(float *dxa, float *db, const float *dy,
                            const float *xa, size_t ldxa, const float *b,
                            float scale, size_t T, size_t N, size_t r) {
  if (T == 0 || r == 0)
    return;
  /* dB (N, r) += scale * dy^T (N, T) xa (T, r) */
  if (N > 0)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)N, (int)r,
                (int)T, scale, dy, ld(N), xa, ld(ldxa), 1.0f, db, ld(r));
  /* dxa (T, r) = scale * dy (T, N) B (N, r) */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)r,
              (int)N, scale, dy, ld(N), b, ld(r), 0.0f, dxa, ld(ldxa));
}

void tb__k_lora_down_backward(float *dx, float *da, const float *dxa,
                              const float *x, const float *a, size_t T,
                              size_t K, size_t R) {
  if (T == 0 || R == 0 || K == 0)
    return;
  /* dA (R, K) += dxa^T (R, T) x (T, K) */
  if (da != NULL)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)R, (int)K,
                (int)T, 1.0f, dxa, ld(R), x, ld(K), 1.0f, da, ld(K));
  /* dx (T, K) += dxa (T, R) A (R, K) */
  if (dx != NULL)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)K,
                (int)R, 1.0f, dxa, ld(R), a, ld(K), 1.0f, dx, ld(K));
}

TB__K_VECTORISED
void tb__k_lora_da_normed(float *da, float *scratch, float *dxa,
                          const float *x, const float *rstd, const float *w,
                          size_t T, size_t K, size_t R) {
  if (T == 0 || R == 0 || K == 0)
    return;
  /* h = diag(rstd) x diag(w), so dxa^T h = (diag(rstd) dxa)^T x, column
   * by column times w. */
  for (size_t t = 0; t < T; t++)
    for (size_t j = 0; j < R; j++)
      dxa[t * R + j] *= rstd[t];
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)R, (int)K, (int)T,
              1.0f, dxa, ld(R), x, ld(K), 0.0f, scratch, ld(K));
  for (size_t j = 0; j < R; j++)
    for (size_t c = 0; c < K; c++)
      da[j * K + c] += scratch[j * K + c] * w[c];
}

void tb__k_lora_forward(float *y, float *xa, const float *x, const float *a,
                        const float *b, float scale, size_t T, size_t K,
                        size_t N, size_t r) {
  /* Going through the thin (T, r) intermediate costs 2Tr(K+N) flops
   * instead of forming the (N, K) product B A. */
  tb__k_lora_down(xa, x, a, T, K, r);
  tb__k_lora_up(y, xa, r, b, scale, T, N, r);
}

void tb__k_lora_backward(float *dx, float *da, float *db, float *scratch,
                         const float *dy, const float *x, const float *xa,
                         const float *a, const float *b, float scale, size_t T,
                         size_t K, size_t N, size_t r) {
  tb__k_lora_up_backward(scratch, db, dy, xa, r, b, scale, T, N, r);
  tb__k_lora_down_backward(dx, da, scratch, x, a, T, K, r);
}

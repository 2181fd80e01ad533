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

void tb__k_lora_forward(float *y, float *xa, const float *x, const float *a,
                        const float *b, float scale, size_t T, size_t K,
                        size_t N, size_t r) {
  if (T == 0 || r == 0)
    return;
  /* xa (T, r) = x (T, K) A^T; then y += scale * xa B^T.  Going through the
   * thin (T, r) intermediate costs 2Tr(K+N) flops instead of forming the
   * (N, K) product B A. */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)r, (int)K,
              1.0f, x, ld(K), a, ld(K), 0.0f, xa, ld(r));
  if (N == 0)
    return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)N, (int)r,
              scale, xa, ld(r), b, ld(r), 1.0f, y, ld(N));
}

void tb__k_lora_backward(float *dx, float *da, float *db, float *scratch,
                         const float *dy, const float *x, const float *xa,
                         const float *a, const float *b, float scale, size_t T,
                         size_t K, size_t N, size_t r) {
  if (T == 0 || r == 0)
    return;
  /* dB (N, r) += scale * dy^T (N, T) xa (T, r) */
  if (N > 0)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)N, (int)r,
                (int)T, scale, dy, ld(N), xa, ld(r), 1.0f, db, ld(r));
  /* dxa (T, r) = scale * dy (T, N) B (N, r) */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)r,
              (int)N, scale, dy, ld(N), b, ld(r), 0.0f, scratch, ld(r));
  if (K == 0)
    return;
  /* dA (r, K) += dxa^T (r, T) x (T, K) */
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)K, (int)T,
              1.0f, scratch, ld(r), x, ld(K), 1.0f, da, ld(K));
  /* dx (T, K) += dxa (T, r) A (r, K) */
  if (dx != NULL)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)K,
                (int)r, 1.0f, scratch, ld(r), a, ld(K), 1.0f, dx, ld(K));
}

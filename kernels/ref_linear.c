/*
 * Naive references for linear layers and LoRA: triple loops in double.
 */
#include "ref.h"

#include <string.h>

void tb__kref_linear_forward(float *y, const float *x, const float *w,
                             int accumulate, size_t T, size_t K, size_t N) {
  for (size_t t = 0; t < T; t++)
    for (size_t n = 0; n < N; n++) {
      double s = accumulate ? y[t * N + n] : 0.0;
      for (size_t k = 0; k < K; k++)
        s += (double)x[t * K + k] * w[n * K + k];
      y[t * N + n] = (float)s;
    }
}

void tb__kref_linear_backward_input(float *dx, const float *dy, const float *w,
                                    size_t T, size_t K, size_t N) {
  for (size_t t = 0; t < T; t++)
    for (size_t k = 0; k < K; k++) {
      double s = dx[t * K + k];
      for (size_t n = 0; n < N; n++)
        s += (double)dy[t * N + n] * w[n * K + k];
      dx[t * K + k] = (float)s;
    }
}

void tb__kref_linear_backward_weight(float *dw, const float *dy, const float *x,
                                     size_t T, size_t K, size_t N) {
  for (size_t n = 0; n < N; n++)
    for (size_t k = 0; k < K; k++) {
      double s = dw[n * K + k];
      for (size_t t = 0; t < T; t++)
        s += (double)dy[t * N + n] * x[t * K + k];
      dw[n * K + k] = (float)s;
    }
}

void tb__kref_lora_forward(float *y, float *xa, const float *x, const float *a,
                           const float *b, float scale, size_t T, size_t K,
                           size_t N, size_t r) {
  tb__kref_linear_forward(xa, x, a, 0, T, K, r);
  for (size_t t = 0; t < T; t++)
    for (size_t n = 0; n < N; n++) {
      double s = 0.0;
      for (size_t j = 0; j < r; j++)
        s += (double)xa[t * r + j] * b[n * r + j];
      y[t * N + n] += (float)(scale * s);
    }
}

void tb__kref_lora_backward(float *dx, float *da, float *db, float *scratch,
                            const float *dy, const float *x, const float *xa,
                            const float *a, const float *b, float scale,
                            size_t T, size_t K, size_t N, size_t r) {
  /* y = scale * (x A^T) B^T, so with dxa = scale * dy B:
   * dB = scale * dy^T xa, dA = dxa^T x, dx = dxa A. */
  for (size_t n = 0; n < N; n++)
    for (size_t j = 0; j < r; j++) {
      double s = 0.0;
      for (size_t t = 0; t < T; t++)
        s += (double)dy[t * N + n] * xa[t * r + j];
      db[n * r + j] += (float)(scale * s);
    }
  for (size_t t = 0; t < T; t++)
    for (size_t j = 0; j < r; j++) {
      double s = 0.0;
      for (size_t n = 0; n < N; n++)
        s += (double)dy[t * N + n] * b[n * r + j];
      scratch[t * r + j] = (float)(scale * s);
    }
  tb__kref_linear_backward_weight(da, scratch, x, T, K, r);
  if (dx != NULL)
    tb__kref_linear_backward_input(dx, scratch, a, T, K, r);
}

void tb__kref_rowmm(float *y, size_t ldy, const float *x, size_t ldx,
                    const float *w, const uint16_t *w16, size_t ldw,
                    float alpha, int accumulate, size_t T, size_t K,
                    size_t N) {
  for (size_t t = 0; t < T; t++)
    for (size_t n = 0; n < N; n++) {
      double s = 0.0;
      for (size_t k = 0; k < K; k++) {
        float wk;
        if (w16 != NULL) {
          uint32_t u = (uint32_t)w16[n * ldw + k] << 16;
          memcpy(&wk, &u, sizeof(wk));
        } else {
          wk = w[n * ldw + k];
        }
        s += (double)x[t * ldx + k] * wk;
      }
      double v = (double)alpha * s;
      if (accumulate)
        v += y[t * ldy + n];
      y[t * ldy + n] = (float)v;
    }
}

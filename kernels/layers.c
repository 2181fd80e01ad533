/*
 * The row-wise layers of a Llama block: RMSNorm, rotary position
 * embeddings (with Llama 3's frequency scaling), the SwiGLU gate, the
 * frozen biases of Qwen2's projections and the embedding lookup.
 *
 * These are memory-bound loops over (T, C) rows; they stay plain C that the
 * compiler vectorises.  Row sums are accumulated in double so a long row
 * (C = 4096) loses no precision against the float reference in PyTorch.
 * Naive references: ref_layers.c.
 */
#include "kernels.h"
#include "fastmath.h"

#include <math.h>
#include <string.h>

TB__K_VECTORISED
void tb__k_rmsnorm_forward(float *out, float *rstd, const float *x,
                           const float *w, float eps, size_t T, size_t C) {
  for (size_t t = 0; t < T; t++) {
    const float *xr = x + t * C;
    float *o = out + t * C;
    double ss = tb__k_dot_d(xr, xr, C);
    float rs = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
    for (size_t i = 0; i < C; i++)
      o[i] = xr[i] * rs * w[i];
    if (rstd != NULL)
      rstd[t] = rs;
  }
}

TB__K_VECTORISED
void tb__k_rmsnorm_backward(float *dx, float *dw, const float *dout,
                            const float *x, const float *w, const float *rstd,
                            size_t T, size_t C) {
  for (size_t t = 0; t < T; t++) {
    const float *xr = x + t * C;
    const float *dr = dout + t * C;
    float *dxr = dx + t * C;
    float rs = rstd[t];
    /* out_i = w_i xhat_i with xhat = x*rs; d rs/d x_j = -rs^3 x_j / C, so
     * dx_j = rs*(w_j g_j) - rs * xhat_j * mean_i(w_i g_i xhat_i). */
    double lane[8] = { 0 }, dot = 0.0;  /* lanes: see tb__k_dot_d */
    size_t i0 = 0;
    for (; i0 + 8 <= C; i0 += 8)
      for (size_t j = 0; j < 8; j++)
        lane[j] += (double)w[i0 + j] * dr[i0 + j] * (xr[i0 + j] * rs);
    for (; i0 < C; i0++)
      dot += (double)w[i0] * dr[i0] * (xr[i0] * rs);
    for (size_t j = 0; j < 8; j++)
      dot += lane[j];
    float mean = (float)(dot / (double)C);
    for (size_t i = 0; i < C; i++) {
      float xhat = xr[i] * rs;
      dxr[i] += rs * (w[i] * dr[i] - xhat * mean);
    }
    if (dw != NULL)
      for (size_t i = 0; i < C; i++)
        dw[i] += dr[i] * xr[i] * rs;
  }
}

static float inv_freq_of(float theta, size_t i, size_t D) {
  /* PyTorch: 1.0 / (base ** (arange(0, D, 2).float() / D)) in float32. */
  float expo = (float)(2 * i) / (float)D;
  return (float)(1.0 / pow((double)theta, (double)expo));
}

void tb__k_rope_inv_freq(float *inv_freq, float theta, size_t D) {
  for (size_t i = 0; i < D / 2; i++)
    inv_freq[i] = inv_freq_of(theta, i, D);
}

void tb__k_rope_llama3(float *inv_freq, float factor, float low_freq_factor,
                       float high_freq_factor, float original_max_positions,
                       size_t D) {
  /* The bounds are Python floats (double) there, compared with float32
   * tensors after rounding to float. */
  float low_wavelen = (float)((double)original_max_positions /
                              (double)low_freq_factor);
  float high_wavelen = (float)((double)original_max_positions /
                               (double)high_freq_factor);
  for (size_t i = 0; i < D / 2; i++) {
    float f = inv_freq[i];
    float wavelen = (float)(2.0 * M_PI) / f;
    float scaled = wavelen > low_wavelen ? f / factor : f;
    if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
      float s = (original_max_positions / wavelen - low_freq_factor) /
                (high_freq_factor - low_freq_factor);
      scaled = (1.0f - s) * scaled / factor + s * scaled;
    }
    inv_freq[i] = scaled;
  }
}

void tb__k_rope_table_freq(float *cos_t, float *sin_t, const float *inv_freq,
                           size_t pos0, size_t P, size_t D) {
  size_t half = D / 2;
  for (size_t i = 0; i < half; i++) {
    for (size_t p = 0; p < P; p++) {
      float angle = (float)(pos0 + p) * inv_freq[i];
      cos_t[p * half + i] = (float)cos((double)angle);
      sin_t[p * half + i] = (float)sin((double)angle);
    }
  }
}

void tb__k_rope_table(float *cos_t, float *sin_t, float theta, size_t pos0,
                      size_t P, size_t D) {
  size_t half = D / 2;
  for (size_t i = 0; i < half; i++) {
    float inv_freq = inv_freq_of(theta, i, D);
    for (size_t p = 0; p < P; p++) {
      float angle = (float)(pos0 + p) * inv_freq;
      cos_t[p * half + i] = (float)cos((double)angle);
      sin_t[p * half + i] = (float)sin((double)angle);
    }
  }
}

/* Rotates every head of every row by the table angle; sign = +1 applies
 * the rotation, -1 its inverse (the transpose). */
TB__K_VECTORISED
static void rope_rotate(float *out, const float *x, const float *cos_t,
                        const float *sin_t, float sign, size_t T, size_t NH,
                        size_t D) {
  size_t half = D / 2;
  for (size_t t = 0; t < T; t++) {
    const float *c = cos_t + t * half;
    const float *s = sin_t + t * half;
    for (size_t h = 0; h < NH; h++) {
      const float *xr = x + (t * NH + h) * D;
      float *o = out + (t * NH + h) * D;
      for (size_t i = 0; i < half; i++) {
        float x1 = xr[i], x2 = xr[i + half];
        float sn = sign * s[i];
        /* Both inputs are read before either output is written, so out may
         * equal x. */
        o[i] = x1 * c[i] - x2 * sn;
        o[i + half] = x2 * c[i] + x1 * sn;
      }
    }
  }
}

void tb__k_rope_forward(float *out, const float *x, const float *cos_t,
                        const float *sin_t, size_t T, size_t NH, size_t D) {
  rope_rotate(out, x, cos_t, sin_t, 1.0f, T, NH, D);
}

void tb__k_rope_backward(float *dx, const float *dout, const float *cos_t,
                         const float *sin_t, size_t T, size_t NH, size_t D) {
  rope_rotate(dx, dout, cos_t, sin_t, -1.0f, T, NH, D);
}

TB__K_VECTORISED
void tb__k_swiglu_forward(float *h, const float *gate, const float *up,
                          size_t n) {
  for (size_t i = 0; i < n; i++)
    h[i] = gate[i] * tb__k_sigmoidf(gate[i]) * up[i];
}

TB__K_VECTORISED
void tb__k_swiglu_backward(float *restrict h, float *restrict dgate,
                           float *restrict dup, const float *restrict dh,
                           const float *restrict gate,
                           const float *restrict up, size_t n) {
  /* restrict spares the compiler the run-time overlap checks of six
   * arrays, which it gives up on, leaving the loop scalar. */
  for (size_t i = 0; i < n; i++) {
    float g = gate[i];
    float s = tb__k_sigmoidf(g);
    float silu = g * s;
    h[i] = silu * up[i];
    dgate[i] = dh[i] * up[i] * s * (1.0f + g * (1.0f - s));
    dup[i] = dh[i] * silu;
  }
}

TB__K_VECTORISED
void tb__k_bias_forward(float *y, const float *b, size_t T, size_t N) {
  for (size_t t = 0; t < T; t++) {
    float *yr = y + t * N;
    for (size_t n = 0; n < N; n++)
      yr[n] += b[n];
  }
}

void tb__k_embedding_forward(float *out, const int32_t *tokens,
                             const float *table, size_t T, size_t C) {
  for (size_t t = 0; t < T; t++)
    memcpy(out + t * C, table + (size_t)tokens[t] * C, C * sizeof(float));
}

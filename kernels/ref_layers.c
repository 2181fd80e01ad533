/*
 * Naive references for RMSNorm, RoPE, SwiGLU and the embedding lookup.
 *
 * RoPE is written the way Hugging Face writes it, q*cos + rotate_half(q)*sin
 * with cos and sin duplicated over both halves, rather than pairwise, so it
 * checks the pairing convention of the fast kernel too.
 */
#include "ref.h"

#include <math.h>
#include <string.h>

void tb__kref_rmsnorm_forward(float *out, float *rstd, const float *x,
                              const float *w, float eps, size_t T, size_t C) {
  for (size_t t = 0; t < T; t++) {
    double ss = 0.0;
    for (size_t i = 0; i < C; i++)
      ss += (double)x[t * C + i] * x[t * C + i];
    double rs = 1.0 / sqrt(ss / (double)C + eps);
    for (size_t i = 0; i < C; i++)
      out[t * C + i] = (float)(x[t * C + i] * rs * w[i]);
    if (rstd != NULL)
      rstd[t] = (float)rs;
  }
}

void tb__kref_rmsnorm_backward(float *dx, float *dw, const float *dout,
                               const float *x, const float *w,
                               const float *rstd, size_t T, size_t C) {
  /* Written from the Jacobian: d out_i / d x_j = w_i (rs delta_ij
   * - rs^3 x_i x_j / C). */
  for (size_t t = 0; t < T; t++) {
    const float *xr = x + t * C;
    double rs = rstd[t];
    for (size_t j = 0; j < C; j++) {
      double s = 0.0;
      for (size_t i = 0; i < C; i++) {
        double jac = -rs * rs * rs * xr[i] * xr[j] / (double)C;
        if (i == j)
          jac += rs;
        s += dout[t * C + i] * w[i] * jac;
      }
      dx[t * C + j] += (float)s;
    }
    if (dw != NULL)
      for (size_t i = 0; i < C; i++)
        dw[i] += (float)(dout[t * C + i] * xr[i] * rs);
  }
}

void tb__kref_rope_table(float *cos_t, float *sin_t, float theta, size_t pos0,
                         size_t P, size_t D) {
  size_t half = D / 2;
  for (size_t p = 0; p < P; p++)
    for (size_t i = 0; i < half; i++) {
      double inv_freq = 1.0 / pow(theta, (double)(2 * i) / (double)D);
      double angle = (double)(pos0 + p) * inv_freq;
      cos_t[p * half + i] = (float)cos(angle);
      sin_t[p * half + i] = (float)sin(angle);
    }
}

void tb__kref_rope_llama3(float *inv_freq, float factor, float low_freq_factor,
                          float high_freq_factor, float original_max_positions,
                          size_t D) {
  double low_wavelen = original_max_positions / (double)low_freq_factor;
  double high_wavelen = original_max_positions / (double)high_freq_factor;
  for (size_t i = 0; i < D / 2; i++) {
    double freq = inv_freq[i];
    double wavelen = 2 * M_PI / freq;
    double out;
    if (wavelen < high_wavelen) {
      out = freq;
    } else if (wavelen > low_wavelen) {
      out = freq / factor;
    } else {
      double smooth = (original_max_positions / wavelen - low_freq_factor) /
                      ((double)high_freq_factor - low_freq_factor);
      out = (1 - smooth) * freq / factor + smooth * freq;
    }
    inv_freq[i] = (float)out;
  }
}

void tb__kref_bias_forward(float *y, const float *b, size_t T, size_t N) {
  for (size_t t = 0; t < T; t++)
    for (size_t n = 0; n < N; n++)
      y[t * N + n] = (float)((double)y[t * N + n] + b[n]);
}

/* q*cos + rotate_half(q)*sin, rotate_half(q) = cat(-q[D/2:], q[:D/2]);
 * sign -1 rotates backwards. */
static void rope_hf(float *out, const float *x, const float *cos_t,
                    const float *sin_t, double sign, size_t T, size_t NH,
                    size_t D) {
  size_t half = D / 2;
  for (size_t t = 0; t < T; t++)
    for (size_t h = 0; h < NH; h++) {
      const float *xr = x + (t * NH + h) * D;
      double tmp[D > 0 ? D : 1];
      for (size_t d = 0; d < D; d++) {
        double c = cos_t[t * half + d % half];
        double s = sign * sin_t[t * half + d % half];
        double rot = d < half ? -xr[d + half] : xr[d - half];
        tmp[d] = xr[d] * c + rot * s;
      }
      for (size_t d = 0; d < D; d++)
        out[(t * NH + h) * D + d] = (float)tmp[d];
    }
}

void tb__kref_rope_forward(float *out, const float *x, const float *cos_t,
                           const float *sin_t, size_t T, size_t NH, size_t D) {
  rope_hf(out, x, cos_t, sin_t, 1.0, T, NH, D);
}

void tb__kref_rope_backward(float *dx, const float *dout, const float *cos_t,
                            const float *sin_t, size_t T, size_t NH, size_t D) {
  rope_hf(dx, dout, cos_t, sin_t, -1.0, T, NH, D);
}

void tb__kref_swiglu_forward(float *h, const float *gate, const float *up,
                             size_t n) {
  for (size_t i = 0; i < n; i++) {
    double g = gate[i];
    h[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
  }
}

void tb__kref_swiglu_backward(float *dgate, float *dup, const float *dh,
                              const float *gate, const float *up, size_t n) {
  for (size_t i = 0; i < n; i++) {
    double g = gate[i];
    double s = 1.0 / (1.0 + exp(-g));
    /* d(g s)/dg = s + g s (1 - s) */
    dgate[i] = (float)(dh[i] * up[i] * (s + g * s * (1.0 - s)));
    dup[i] = (float)(dh[i] * g * s);
  }
}

void tb__kref_embedding_forward(float *out, const int32_t *tokens,
                                const float *table, size_t T, size_t C) {
  for (size_t t = 0; t < T; t++)
    for (size_t c = 0; c < C; c++)
      out[t * C + c] = table[(size_t)tokens[t] * C + c];
}

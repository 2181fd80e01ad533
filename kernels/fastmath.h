/*
 * Branch-free float exp, max and sum over arrays, written so the compiler
 * vectorises them without -ffast-math.
 *
 * Softmax rows dominate the non-matmul cost of attention (H T^2 / 2
 * exponentials per layer) and of the logits (T V per sequence); glibc's
 * expf is scalar, so a row of them costs several times the sgemm that
 * produced it.  The exp below is Cephes' expf polynomial (about 1 ulp on
 * the range used here) with the power of two put together from bits.
 * Reductions keep eight partial results, which the compiler maps onto
 * vector lanes without needing to reassociate a single sum.
 */
#ifndef TB_KERNELS_FASTMATH_H
#define TB_KERNELS_FASTMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* exp(x), with x clamped to [-87, 88]: below, the result is about 1.6e-38,
 * which is zero for every softmax and sigmoid it feeds; above, it is about
 * 1.7e38 rather than infinity.  The clamps work on integer bits: a float
 * compare-and-select is left as a branch by the vectoriser under the
 * default -ftrapping-math.  As unsigned integers, every float at or below
 * -87 (including -inf) has bits at or above those of -87; as signed
 * integers, every float at or above 88 (including +inf) has bits at or
 * above those of 88, and negative floats are negative. */
static inline float tb__k_expf(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  u = u > 0xc2ae0000u ? 0xc2ae0000u : u;
  u = (int32_t)u > (int32_t)0x42b00000 ? 0x42b00000u : u;
  memcpy(&x, &u, sizeof x);
  /* n = round(x / ln 2), by the 1.5 * 2^23 shifter; r = x - n ln 2 in two
   * parts (Cody-Waite). */
  float fn = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - fn * 0.693359375f - fn * -2.12194440e-4f;
  float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  int32_t n = (int32_t)fn; /* in [-126, 128) after the clamp */
  n = n > 127 ? 127 : n;
  uint32_t bits = (uint32_t)(n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/* 1 / (1 + exp(-x)), for every x. */
static inline float tb__k_sigmoidf(float x) {
  return 1.0f / (1.0f + tb__k_expf(-x));
}

/* dst[i] = exp(src[i] - shift); dst may equal src. */
static inline void tb__k_exp_shift(float *dst, const float *src, float shift,
                                   size_t n) {
  for (size_t i = 0; i < n; i++)
    dst[i] = tb__k_expf(src[i] - shift);
}

/* Floats ordered as signed integers: flipping the magnitude bits of
 * negative values makes integer order match float order (the map is its
 * own inverse), and integer max vectorises where float max does not. */
static inline int32_t tb__k_float_key(float f) {
  int32_t b;
  memcpy(&b, &f, sizeof b);
  return b ^ (int32_t)(-(int32_t)((uint32_t)b >> 31) & 0x7fffffff);
}

static inline float tb__k_maxf(const float *x, size_t n) {
  int32_t m[8];
  for (int j = 0; j < 8; j++)
    m[j] = tb__k_float_key(-3.402823466e38f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) {
      int32_t k = tb__k_float_key(x[i + j]);
      m[j] = k > m[j] ? k : m[j];
    }
  for (; i < n; i++) {
    int32_t k = tb__k_float_key(x[i]);
    m[0] = k > m[0] ? k : m[0];
  }
  for (int j = 1; j < 8; j++)
    m[0] = m[j] > m[0] ? m[j] : m[0];
  int32_t b = m[0] ^ (int32_t)(-(int32_t)((uint32_t)m[0] >> 31) & 0x7fffffff);
  float best;
  memcpy(&best, &b, sizeof best);
  return best;
}

/* sum x[i] * y[i] in eight double lanes: the products of floats are exact
 * in double, and the lanes let the compiler vectorise a sum it may not
 * reorder. */
static inline double tb__k_dot_d(const float *x, const float *y, size_t n) {
  double s[8] = { 0 };
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++)
      s[j] += (double)x[i + j] * y[i + j];
  double total = 0.0;
  for (; i < n; i++)
    total += (double)x[i] * y[i];
  for (int j = 0; j < 8; j++)
    total += s[j];
  return total;
}

/* Sum in eight float lanes, combined in double. */
static inline double tb__k_sumf(const float *x, size_t n) {
  float s[8] = { 0 };
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++)
      s[j] += x[i + j];
  double total = 0.0;
  for (; i < n; i++)
    total += x[i];
  for (int j = 0; j < 8; j++)
    total += s[j];
  return total;
}

#endif /* TB_KERNELS_FASTMATH_H */

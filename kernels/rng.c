/*
 * A portable, deterministic random number generator: xoshiro256** (Blackman
 * and Vigna) seeded through splitmix64, with Box-Muller normals.
 *
 * The `base` model's weights and every LoRA A initialisation are drawn from
 * here, and the project promises the same numbers for the same seed on
 * every machine.  The integer generator is exact by construction.  The
 * normals need log, sin and cos, whose last bits differ between C
 * libraries, so this file computes them with its own series in IEEE
 * double using only +, -, *, / and sqrt (which IEEE 754 rounds exactly).
 * Fused multiply-add would change the rounding of those series on machines
 * that have it, so contraction is switched off for this file.  (Targets
 * that evaluate double in x87 extended precision are not covered.)
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "kernels.h"

#include <math.h>

uint64_t tb__k_splitmix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void tb__k_rng_seed(tb__k_rng_t *rng, uint64_t seed) {
  uint64_t sm = seed;
  for (int i = 0; i < 4; i++)
    rng->s[i] = tb__k_splitmix64(&sm);
  rng->spare = 0.0;
  rng->has_spare = 0;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t tb__k_rng_next(tb__k_rng_t *rng) {
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double tb__k_rng_uniform(tb__k_rng_t *rng) {
  /* The top 53 bits scaled by 2^-53: exact, in [0, 1). */
  return (double)(tb__k_rng_next(rng) >> 11) * 0x1.0p-53;
}

/* Natural log for x in (0, 1]: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172, so eleven odd terms
 * reach double precision.  frexp only moves bits, so it is exact. */
static double det_log(double x) {
  int e;
  double m = frexp(x, &e);
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  double s = (m - 1.0) / (m + 1.0);
  double s2 = s * s;
  double poly = 0.0;
  for (int k = 21; k >= 1; k -= 2)
    poly = poly * s2 + 1.0 / (double)k;
  return (double)e * 0.69314718055994530942 + 2.0 * s * poly;
}

/* sin and cos of 2 pi f for f in [0, 1): the quadrant comes from 4f
 * exactly, the remaining angle a = (pi/2) frac(4f) lies in [0, pi/2), where
 * Taylor series to a^25 are accurate to double precision. */
static void det_sincos_turns(double f, double *sn, double *cs) {
  double q4 = f * 4.0;
  double qf = floor(q4);
  int quad = (int)qf;
  double a = (q4 - qf) * 1.57079632679489661923;
  double a2 = a * a;
  double sp = 0.0, cp = 0.0;
  /* sin a = a (1 - a^2/(2*3) (1 - a^2/(4*5) (...))), likewise cos. */
  for (int k = 24; k >= 2; k -= 2) {
    sp = 1.0 - a2 / (double)(k * (k + 1)) * sp;
    cp = 1.0 - a2 / (double)((k - 1) * k) * cp;
  }
  double s = a * sp, c = cp;
  switch (quad & 3) {
  case 0: *sn = s; *cs = c; break;
  case 1: *sn = c; *cs = -s; break;
  case 2: *sn = -s; *cs = -c; break;
  default: *sn = -c; *cs = s; break;
  }
}

double tb__k_rng_normal(tb__k_rng_t *rng) {
  if (rng->has_spare) {
    rng->has_spare = 0;
    return rng->spare;
  }
  /* u1 in (0, 1] so the log is finite. */
  double u1 = (double)((tb__k_rng_next(rng) >> 11) + 1) * 0x1.0p-53;
  double u2 = tb__k_rng_uniform(rng);
  double r = sqrt(-2.0 * det_log(u1));
  double sn, cs;
  det_sincos_turns(u2, &sn, &cs);
  rng->spare = r * sn;
  rng->has_spare = 1;
  return r * cs;
}

void tb__k_rng_fill_normal(float *out, tb__k_rng_t *rng, float mean, float std,
                           size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = (float)((double)mean + (double)std * tb__k_rng_normal(rng));
}

void tb__k_rng_fill_uniform(float *out, tb__k_rng_t *rng, float lo, float hi,
                            size_t n) {
  for (size_t i = 0; i < n; i++) {
    double u = tb__k_rng_uniform(rng);
    float x = (float)((double)lo + ((double)hi - (double)lo) * u);
    /* Rounding to float can land on hi itself; keep the interval open. */
    out[i] = x < hi ? x : nextafterf(hi, lo);
  }
}

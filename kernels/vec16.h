/*
 * Sixteen-lane float vectors in GCC's vector extension, for the kernels
 * whose every output must come out of one fixed order of operations,
 * whatever the number of rows computed with it (rowmm.c, the paged
 * attention of attention.c).
 *
 * A vector of 16 floats is one AVX-512 register, two AVX2 registers or
 * four SSE2 ones: the lanes mean the same in every clone of
 * TB__K_VECTORISED, so a dot product accumulated lane by lane and then
 * summed in the fixed tree of tb__v16_hsum is the same function of its
 * inputs in every block shape a kernel uses (the clones may differ from
 * each other, as fused and unfused multiply-adds do; one process runs one
 * clone).  Internal to kernels/.
 */
#ifndef TB_KERNELS_VEC16_H
#define TB_KERNELS_VEC16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* These helpers are always inlined, so no vector ever crosses a call:
 * they are compiled for the baseline but called from the AVX-512 and AVX2
 * clones, whose calling conventions for 64-byte vectors differ (an
 * unoptimised build would otherwise call them).  GCC still warns at the
 * definitions that the convention would change. */
#pragma GCC diagnostic ignored "-Wpsabi"
#define TB__V16 static inline __attribute__((always_inline))

typedef float tb__v16f __attribute__((vector_size(64)));
typedef uint16_t tb__v16h __attribute__((vector_size(32)));
typedef uint32_t tb__v16u __attribute__((vector_size(64)));

TB__V16 tb__v16f tb__v16_load(const float *p) {
  tb__v16f v;
  memcpy(&v, p, sizeof(v));
  return v;
}

/* bfloat16 is the top half of a float: widening is exact. */
TB__V16 tb__v16f tb__v16_load_bf16(const uint16_t *p) {
  tb__v16h h;
  memcpy(&h, p, sizeof(h));
  tb__v16u u = __builtin_convertvector(h, tb__v16u) << 16;
  return (tb__v16f)u;
}

/* Every lane v: one broadcast (an initialiser of sixteen v's is built
 * lane by lane under masks, and adding v to a zero vector costs an add). */
TB__V16 tb__v16f tb__v16_splat(float v) {
#ifdef __clang__  /* clang has no __builtin_shuffle, GCC no __builtin_shufflevector before 12 */
  tb__v16f x = { v };
  return __builtin_shufflevector(x, x, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
#else
  return __builtin_shuffle((tb__v16f){ v }, (tb__v16u){ 0 });
#endif
}

/* The first n < 16 floats of p, zeros after: a zero lane adds nothing. */
TB__V16 tb__v16f tb__v16_load_tail(const float *p, size_t n) {
  float t[16] = { 0 };
  memcpy(t, p, n * sizeof(float));
  return tb__v16_load(t);
}

TB__V16 tb__v16f tb__v16_load_tail_bf16(const uint16_t *p, size_t n) {
  uint16_t t[16] = { 0 };
  memcpy(t, p, n * sizeof(uint16_t));
  return tb__v16_load_bf16(t);
}

/* Lanes summed pairwise: (j, j+8), then (j, j+4), (j, j+2), (j, j+1). */
TB__V16 float tb__v16_hsum(tb__v16f a) {
  float r[8];
  for (int j = 0; j < 8; j++)
    r[j] = a[j] + a[j + 8];
  for (int j = 0; j < 4; j++)
    r[j] = r[j] + r[j + 4];
  r[0] = r[0] + r[2];
  r[1] = r[1] + r[3];
  return r[0] + r[1];
}

/* Two vectors' lanes picked by sixteen indices (0-15 from a, 16-31
 * from b). */
#ifdef __clang__
#define TB__V16_SHUFFLE2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define TB__V16_SHUFFLE2(a, b, ...) \
  __builtin_shuffle(a, b, (tb__v16u){ __VA_ARGS__ })
#endif

/* The lane sums of sixteen vectors, tb__v16_hsum(a[m]) in lane m: each
 * vector's own pairwise tree, with four levels of shuffles shared by all
 * sixteen (floating-point addition commutes, so every sum is the same). */
TB__V16 tb__v16f tb__v16_hsum16(const tb__v16f a[16]) {
  tb__v16f r1[8], r2[4], r3[2];
  /* (j, j+8): lanes 0-7 of r1[i] are a[2i]'s, 8-15 a[2i+1]'s. */
  for (int i = 0; i < 8; i++)
    r1[i] = TB__V16_SHUFFLE2(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7,
                             16, 17, 18, 19, 20, 21, 22, 23) +
            TB__V16_SHUFFLE2(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13,
                             14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  /* (j, j+4) within each eight: four lanes per vector, a[4i .. 4i+3]. */
  for (int i = 0; i < 4; i++)
    r2[i] = TB__V16_SHUFFLE2(r1[2 * i], r1[2 * i + 1], 0, 1, 2, 3, 8, 9, 10,
                             11, 16, 17, 18, 19, 24, 25, 26, 27) +
            TB__V16_SHUFFLE2(r1[2 * i], r1[2 * i + 1], 4, 5, 6, 7, 12, 13,
                             14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  /* (0, 2) and (1, 3) within each four: two lanes per vector. */
  for (int i = 0; i < 2; i++)
    r3[i] = TB__V16_SHUFFLE2(r2[2 * i], r2[2 * i + 1], 0, 1, 4, 5, 8, 9, 12,
                             13, 16, 17, 20, 21, 24, 25, 28, 29) +
            TB__V16_SHUFFLE2(r2[2 * i], r2[2 * i + 1], 2, 3, 6, 7, 10, 11,
                             14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  /* (0, 1) within each pair: one lane per vector, in order. */
  return TB__V16_SHUFFLE2(r3[0], r3[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18,
                          20, 22, 24, 26, 28, 30) +
         TB__V16_SHUFFLE2(r3[0], r3[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19,
                          21, 23, 25, 27, 29, 31);
}

/* The lanes of sum x[i] y[i] before the sum across lanes: lane j takes
 * i = j mod 16 in ascending order. */
TB__V16 tb__v16f tb__v16_dot_lanes(const float *x, const float *y, size_t n) {
  tb__v16f s = { 0 };
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    s += tb__v16_load(x + i) * tb__v16_load(y + i);
  if (i < n)
    s += tb__v16_load_tail(x + i, n - i) * tb__v16_load_tail(y + i, n - i);
  return s;
}

/* sum x[i] y[i]: the lanes above, then their sum. */
TB__V16 float tb__v16_dot(const float *x, const float *y, size_t n) {
  return tb__v16_hsum(tb__v16_dot_lanes(x, y, n));
}

#endif /* TB_KERNELS_VEC16_H */

/*
 * What the kernel tests share: buffers freed together at the end of a
 * test, seeded random inputs, a closeness assertion, and the processor
 * check of the per-variant builds (test/meson.build).  Included by one
 * test file each, so everything here is static.
 */
#ifndef TB_TEST_KERNELS_HELPERS_H
#define TB_TEST_KERNELS_HELPERS_H

#include "tb_test.h"

#include <cblas.h>

#include "kernels/kernels.h"

/* Built as test_kernels_avx2 (test/meson.build), the kernels need AVX2 and
 * FMA; this runs before main and before any of them. */
#ifdef TB_TEST_KERNELS_VARIANT
__attribute__((constructor)) static void check_processor(void) {
  if (strcmp(TB_TEST_KERNELS_VARIANT, "avx2") == 0 &&
      !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
    printf("# skipped: this processor has no AVX2 and FMA\n1 skipped\n0 passed, 0 failed\n");
    exit(TB_TEST_SKIP_STATUS);
  }
}
#endif

/* Every buffer a test allocates, freed together at its end so the
 * sanitizer build sees no leak. */
static void *allocs[64];
static size_t nallocs;

static float *fbuf(size_t n) {
  ASSERT(nallocs < sizeof(allocs) / sizeof(allocs[0]));
  float *p = xmalloc((n > 0 ? n : 1) * sizeof(float));
  memset(p, 0, (n > 0 ? n : 1) * sizeof(float));
  allocs[nallocs++] = p;
  return p;
}

static float *rbuf(tb__k_rng_t *rng, size_t n, float std) {
  float *p = fbuf(n);
  tb__k_rng_fill_normal(p, rng, 0.0f, std, n);
  return p;
}

static float *copy(const float *src, size_t n) {
  float *p = fbuf(n);
  memcpy(p, src, n * sizeof(float));
  return p;
}

static void free_all(void) {
  while (nallocs > 0)
    free(allocs[--nallocs]);
}

static void setup(tb__k_rng_t *rng, uint64_t seed) {
  openblas_set_num_threads(1);
  tb__k_rng_seed(rng, seed);
}

/* |a - b| <= atol + rtol |b| elementwise, naming the first bad index. */
#define ASSERT_CLOSE(a, b, n, atol, rtol)                                   \
  do {                                                                      \
    for (size_t i_ = 0; i_ < (size_t)(n); i_++) {                           \
      double x_ = (a)[i_], y_ = (b)[i_];                                    \
      if (!(fabs(x_ - y_) <= (atol) + (rtol) * fabs(y_)))                   \
        tb_test_fail(__FILE__, __LINE__, "%s[%zu] ~= %s[%zu]: %.9g vs %.9g", \
                     #a, i_, #b, i_, x_, y_);                               \
    }                                                                       \
  } while (0)

#endif /* TB_TEST_KERNELS_HELPERS_H */

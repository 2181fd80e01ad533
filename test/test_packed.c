/*
 * Packed frozen weights (src/engine/packed.h): both roles against the
 * OpenBLAS products they replace, over shapes and row counts on both sides
 * of the threshold; a slot that is handed another matrix; several threads
 * packing one matrix at once; and the switch that turns packing off.
 * Where the build or the processor has no packing, the tests that compare
 * packed products with OpenBLAS skip (they would compare OpenBLAS with
 * itself); the switch that turns packing off is tested everywhere.
 */
#include "tb_test.h"

#include <math.h>
#include <stdlib.h>

#include "engine/packed.h"
#include "kernels/kernels.h"

static float *random_floats(size_t n, unsigned seed) {
  float *p = xmalloc(n * sizeof(float));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  tb__k_rng_fill_uniform(p, &rng, -1.0f, 1.0f, n);
  return p;
}

/* |got - want| within rounding of a K-term float sum. */
static void assert_close(const float *got, const float *want, size_t n,
                         size_t K) {
  double tol = 1e-6 * (double)K;
  for (size_t i = 0; i < n; i++)
    if (!(fabs((double)got[i] - (double)want[i]) <= tol * (1.0 + fabs(want[i]))))
      tb_test_fail(__FILE__, __LINE__, "element %zu: %.9g, OpenBLAS %.9g", i,
                   got[i], want[i]);
}

typedef struct { size_t K, N; } shape_t;

static const shape_t shapes[] = { { 64, 96 }, { 77, 130 }, { 576, 192 } };
static const size_t row_counts[] = { 1, TB__PACKED_MIN_ROWS - 1,
                                     TB__PACKED_MIN_ROWS, 100, 257 };
#define NSHAPES (sizeof(shapes) / sizeof(shapes[0]))
#define NROWS (sizeof(row_counts) / sizeof(row_counts[0]))

static void need_packing(void) {
  if (!tb__packed_available())
    SKIP("this build or processor packs no weights");
}

/* One slot per shape; every row count and both accumulate modes. */
static void check_role(int backward) {
  need_packing();
  tb__packed_t *p = tb__packed_new(NSHAPES);
  ASSERT(p != NULL);
  for (size_t s = 0; s < NSHAPES; s++) {
    size_t K = shapes[s].K, N = shapes[s].N;
    float *W = random_floats(N * K, 1 + (unsigned)s);
    for (size_t r = 0; r < NROWS; r++) {
      size_t T = row_counts[r];
      size_t in = backward ? N : K, out = backward ? K : N;
      float *x = random_floats(T * in, 10 + (unsigned)r);
      float *y0 = random_floats(T * out, 20 + (unsigned)r);
      float *got = xmalloc(T * out * sizeof(float));
      float *want = xmalloc(T * out * sizeof(float));
      for (int acc = 0; acc <= 1; acc++) {
        memcpy(got, y0, T * out * sizeof(float));
        memcpy(want, y0, T * out * sizeof(float));
        if (backward) {
          tb__packed_backward_input(p, s, got, x, W, acc, T, K, N);
          if (!acc)
            memset(want, 0, T * out * sizeof(float));
          tb__k_linear_backward_input(want, x, W, T, K, N);
        } else {
          tb__packed_forward(p, s, got, x, W, acc, T, K, N);
          tb__k_linear_forward(want, x, W, acc, T, K, N);
        }
        assert_close(got, want, T * out, in);
      }
      free(x);
      free(y0);
      free(got);
      free(want);
      /* Packing starts at the threshold, and only there. */
      ASSERT_EQ_INT(tb__packed_count(p, NULL),
                      s + (T >= TB__PACKED_MIN_ROWS ? 1 : 0));
    }
    free(W);
  }
  size_t bytes = 0;
  ASSERT_EQ_INT(tb__packed_count(p, &bytes), NSHAPES);
  ASSERT_GE(bytes, (64 * 96 + 77 * 130 + 576 * 192) * sizeof(float));
  tb__packed_free(p);
}

TEST(forward_matches_openblas) { check_role(0); }
TEST(backward_input_matches_openblas) { check_role(1); }

/* A slot keeps the matrix it was packed from; handed another, the product
 * is still that other matrix's (through OpenBLAS). */
TEST(slot_names_one_matrix) {
  need_packing();
  size_t T = 64, K = 96, N = 80;
  tb__packed_t *p = tb__packed_new(1);
  float *W1 = random_floats(N * K, 1), *W2 = random_floats(N * K, 2);
  float *x = random_floats(T * K, 3);
  float *got = xmalloc(T * N * sizeof(float)), *want = xmalloc(T * N * sizeof(float));
  tb__packed_forward(p, 0, got, x, W1, 0, T, K, N);
  tb__k_linear_forward(want, x, W1, 0, T, K, N);
  assert_close(got, want, T * N, K);
  tb__packed_forward(p, 0, got, x, W2, 0, T, K, N);
  tb__k_linear_forward(want, x, W2, 0, T, K, N);
  assert_close(got, want, T * N, K);
  /* A slot past the end is not an error either. */
  tb__packed_forward(p, 5, got, x, W2, 0, T, K, N);
  assert_close(got, want, T * N, K);
  tb__packed_free(p);
  free(W1);
  free(W2);
  free(x);
  free(got);
  free(want);
}

/* Four work items meet one unpacked matrix at once, in both roles: one
 * packs, the others wait for it, and every product is right. */
typedef struct {
  uv_work_t req;
  tb__packed_t *p;
  const float *W, *x;
  float *y, *dx;
  int done;
} job_t;

#define JT 96
#define JK 200
#define JN 150

/* y = x W^T, then dx = y W: W (JN, JK) in both roles. */
static void job_work(uv_work_t *req) {
  job_t *j = req->data;
  tb__packed_forward(j->p, 0, j->y, j->x, j->W, 0, JT, JK, JN);
  tb__packed_backward_input(j->p, 0, j->dx, j->y, j->W, 1, JT, JK, JN);
}

static void job_after(uv_work_t *req, int status) {
  ASSERT_EQ_INT(status, 0);
  ((job_t *)req->data)->done = 1;
}

TEST(concurrent_first_use) {
  need_packing();
  uv_loop_t loop;
  ASSERT_OK(uv_loop_init(&loop));
  tb__packed_t *p = tb__packed_new(1);
  float *W = random_floats(JN * JK, 4), *x = random_floats(JT * JK, 5);
  float *y = xmalloc(JT * JN * sizeof(float));
  float *dx = calloc(JT * JK, sizeof(float));
  tb__k_linear_forward(y, x, W, 0, JT, JK, JN);
  tb__k_linear_backward_input(dx, y, W, JT, JK, JN);
  job_t jobs[4];
  for (int i = 0; i < 4; i++) {
    jobs[i] = (job_t){ .p = p, .W = W, .x = x,
                       .y = xmalloc(JT * JN * sizeof(float)),
                       .dx = calloc(JT * JK, sizeof(float)) };
    jobs[i].req.data = &jobs[i];
    ASSERT_OK(uv_queue_work(&loop, &jobs[i].req, job_work, job_after));
  }
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  for (int i = 0; i < 4; i++) {
    ASSERT(jobs[i].done);
    assert_close(jobs[i].y, y, JT * JN, JK);
    assert_close(jobs[i].dx, dx, JT * JK, JK + JN);
    free(jobs[i].y);
    free(jobs[i].dx);
  }
  ASSERT_EQ_INT(tb__packed_count(p, NULL), 2);
  tb__packed_free(p);
  free(W);
  free(x);
  free(y);
  free(dx);
  ASSERT_LOOP_CLOSE(&loop);
}

/* TINKERBELL_PACKED_WEIGHTS=0 turns packing off for the process: no set is
 * made, and products go to OpenBLAS.  (Each test runs in its own process,
 * so the setting is read here for the first time.) */
TEST(off_by_environment) {
  ASSERT_OK(setenv("TINKERBELL_PACKED_WEIGHTS", "0", 1));
  ASSERT_EQ_INT(tb__packed_available(), 0);
  tb__packed_t *p = tb__packed_new(3);
  ASSERT(p == NULL);
  size_t T = 64, K = 32, N = 48;
  float *W = random_floats(N * K, 6), *x = random_floats(T * K, 7);
  float *got = xmalloc(T * N * sizeof(float)), *want = xmalloc(T * N * sizeof(float));
  tb__packed_forward(p, 0, got, x, W, 0, T, K, N);
  tb__k_linear_forward(want, x, W, 0, T, K, N);
  ASSERT_EQ_INT(memcmp(got, want, T * N * sizeof(float)), 0);
  ASSERT_EQ_INT(tb__packed_count(p, NULL), 0);
  free(W);
  free(x);
  free(got);
  free(want);
}

TEST_LIST(
  TEST_ENTRY(forward_matches_openblas),
  TEST_ENTRY(backward_input_matches_openblas),
  TEST_ENTRY(slot_names_one_matrix),
  TEST_ENTRY(concurrent_first_use),
  TEST_ENTRY(off_by_environment),
)

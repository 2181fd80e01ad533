/*
 * The frozen base matrices, each packed once for the products that read it.
 *
 * OpenBLAS copies both operands of every product into its own blocked
 * layout before it multiplies, on every call: 18% of a training step.  For
 * the activations that is the price of a fresh operand; for the frozen
 * weights, about half of it, it is the same copy made again and again.
 * OpenBLAS has no way to keep a matrix packed; oneDNN's matmul has
 * (Debian's libdnnl, when the build finds it).  A weights' packed set holds,
 * per matrix and per role,
 * that matrix in the layout the product wants, made on first use and shared
 * read-only by every adapter and every work item on the model.
 *
 * The two roles of a weight W (N, K), stored as Hugging Face does:
 *   forward          y (T, N) (+)= x (T, K) W^T
 *   backward_input  dx (T, K) (+)= dy (T, N) W
 * Each costs one more copy of W.  Rows of fewer than TB__PACKED_MIN_ROWS
 * (decoding) stay on OpenBLAS, as does everything when packing is off: no
 * oneDNN in the build, a processor or shape it has no packed kernel for,
 * a failed allocation, or TINKERBELL_PACKED_WEIGHTS=0 in the environment
 * (for a machine short of memory).  Results agree with the OpenBLAS
 * products to rounding; the tests compare the two.
 */
#ifndef TB_ENGINE_PACKED_H
#define TB_ENGINE_PACKED_H

#include <stddef.h>

typedef struct tb__packed_s tb__packed_t;

/* Calls with fewer rows than this use OpenBLAS. */
#define TB__PACKED_MIN_ROWS 32

/* A set for `slots` matrices, nothing packed yet; NULL when packing is off
 * or out of memory (callers then use OpenBLAS throughout). */
tb__packed_t *tb__packed_new(size_t slots);
void tb__packed_free(tb__packed_t *p);

/* 1 when this build and this environment pack weights. */
int tb__packed_available(void);

/* y (+)= x W^T, as tb__k_linear_forward; W is slot's matrix, (N, K).  p may
 * be NULL.  Safe to call from several threads at once. */
void tb__packed_forward(tb__packed_t *p, size_t slot, float *y, const float *x,
                        const float *W, int accumulate, size_t T, size_t K,
                        size_t N);

/* dx (+)= dy W: as tb__k_linear_backward_input when accumulate, else dx
 * is overwritten (and need not be initialised). */
void tb__packed_backward_input(tb__packed_t *p, size_t slot, float *dx,
                               const float *dy, const float *W, int accumulate,
                               size_t T, size_t K, size_t N);

/* Packed copies the set holds; *bytes (may be NULL) gets their size. */
size_t tb__packed_count(const tb__packed_t *p, size_t *bytes);

#endif /* TB_ENGINE_PACKED_H */

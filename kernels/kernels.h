/*
 * The math that CPU LoRA training and sampling of Llama-family decoders run
 * on: pure functions over flat float arrays.
 *
 * Conventions (STYLE.md rules 14-17, after llm.c):
 *  - Outputs come first, then inputs, then scalars, then dimensions as
 *    trailing size_t arguments.  Every pointer carries a shape comment.
 *  - Activations are row-major (T, C): one row per token of one sequence.
 *    Matrices are in the Hugging Face orientation (out, in), so a linear
 *    layer computes y = x W^T.
 *  - Backward kernels accumulate (+=) into gradients, so the caller zeroes a
 *    gradient buffer once per step.  The few exceptions (rope, the logits
 *    gradient, the per-token loss coefficients) transform a buffer the
 *    caller owns and say so.
 *  - No allocation, no globals, no threads: callers pass scratch buffers and
 *    call openblas_set_num_threads(1) once, because parallelism comes from
 *    running several kernels at once on different work items.
 *  - Index arithmetic is size_t.  Token ids are int32_t.
 *
 * Non-goals: the model forward/backward itself (engine/llama.c composes
 * these kernels), batching across sequences (attention works on one
 * sequence; the caller loops), and reduced-precision arithmetic (bfloat16
 * weights are widened to float32 for the decode products).
 *
 * Every kernel has a naive reference in kernels/ref_*.c (kernels/ref.h),
 * which the tests compare against with explicit tolerances.
 */
#ifndef TB_KERNELS_KERNELS_H
#define TB_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* The element-wise kernels are compiled three times, for AVX-512, for AVX2
 * with FMA and for the baseline x86-64, and the loader picks the widest the
 * processor runs (GCC's target_clones, resolved once through an ifunc).  A
 * distribution build targets the baseline, whose SSE2 is a quarter of the
 * width these loops can use; the matrix products get the same choice from
 * OpenBLAS's own core detection.  Elsewhere the macro is empty, and so it is
 * with TB__K_ONE_TARGET, which builds the kernels for the compiler's target
 * alone: the tests build them so for the baseline and for AVX2, whose code
 * a machine with AVX-512 would otherwise never run. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__ELF__) && defined(__GLIBC__) && !defined(TB__K_ONE_TARGET)
#define TB__K_VECTORISED \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TB__K_VECTORISED
#endif

/* ------------------------------------------------------------------ linear */

/* y = x W^T, or y += x W^T when accumulate is non-zero. */
void tb__k_linear_forward(float *y,        /* (T, N) */
                          const float *x,  /* (T, K) */
                          const float *w,  /* (N, K) */
                          int accumulate, size_t T, size_t K, size_t N);

/* dx += dy W. */
void tb__k_linear_backward_input(float *dx,        /* (T, K) */
                                 const float *dy,  /* (T, N) */
                                 const float *w,   /* (N, K) */
                                 size_t T, size_t K, size_t N);

/* dW += dy^T x (only LoRA matrices are trained; the base stays frozen). */
void tb__k_linear_backward_weight(float *dw,        /* (N, K) */
                                  const float *dy,  /* (T, N) */
                                  const float *x,   /* (T, K) */
                                  size_t T, size_t K, size_t N);

/* y[t] += b for every row: the frozen bias of a linear layer (Qwen2's q,
 * k and v).  Its gradient is never needed. */
void tb__k_bias_forward(float *y,        /* (T, N) */
                        const float *b,  /* (N) */
                        size_t T, size_t N);

/* ------------------------------------------------------------------ decoding */

/* Row-independent products for decoding (rowmm.c):
 *   y[t,n] = alpha * d            (accumulate == 0)
 *   y[t,n] = y[t,n] + alpha * d   (accumulate != 0)
 * with d = sum_k x[t,k] W[n,k] accumulated in one fixed order: sixteen
 * lanes over k (lane j takes k = j mod 16, ascending), summed pairwise
 * (j, j+8), (j, j+4), (j, j+2), (j, j+1).  An element's value depends
 * only on its row of x and row of W, never on T, N or the element's
 * neighbours, so a sequence's rows come out the same in any batch.  The
 * weights are float32 or bfloat16 (uint16_t, the top half of a float).
 * Leading dimensions let y, x and W be slices of wider matrices. */
void tb__k_rowmm_f32(float *y,        /* (T, N), rows ldy apart */
                     size_t ldy,
                     const float *x,  /* (T, K), rows ldx apart */
                     size_t ldx,
                     const float *w,  /* (N, K), rows ldw apart */
                     size_t ldw, float alpha, int accumulate, size_t T,
                     size_t K, size_t N);
void tb__k_rowmm_bf16(float *y,           /* (T, N), rows ldy apart */
                      size_t ldy,
                      const float *x,     /* (T, K), rows ldx apart */
                      size_t ldx,
                      const uint16_t *w,  /* (N, K) bfloat16, rows ldw apart */
                      size_t ldw, float alpha, int accumulate, size_t T,
                      size_t K, size_t N);

/* Row-independent products in another fixed order, over weights packed
 * once (rowmm_packed.c): d = x[t,0] W[n,0], then + x[t,k] W[n,k] for
 * k = 1 .. K-1 in turn, one multiply-add each (so they do not reproduce
 * tb__k_rowmm_f32's results), then y as above.
 *
 * Packed layout of W (N, K): panels of TB__K_PANEL = 32 outputs, the last
 * one zero-padded, tb__k_packed_elems(K, N) elements in all.  Panel p
 * holds, for k = 0 .. K-1 in turn, W[32p + j, k] for j = 0 .. 31: as 32
 * floats (tb__k_pack_f32), or as 16 words (tb__k_pack_bf16, rounded to
 * bfloat16 to nearest even) whose word j holds output j in its low half
 * and output j + 16 in its high half.  A product starts at a panel: w
 * points to panel n0 / 32 of a packed matrix, y to column n0, and N is the
 * number of outputs wanted from there. */
#define TB__K_PANEL 32
size_t tb__k_packed_elems(size_t K, size_t N);
void tb__k_pack_f32(float *dst,      /* packed_elems(K, N) */
                    const float *w,  /* (N, K), rows ldw apart */
                    size_t ldw, size_t K, size_t N);
void tb__k_pack_bf16(uint32_t *dst,   /* packed_elems(K, N) / 2 */
                     const float *w,  /* (N, K), rows ldw apart */
                     size_t ldw, size_t K, size_t N);
void tb__k_rowmm_packed_f32(float *y,        /* (T, N), rows ldy apart */
                            size_t ldy,
                            const float *x,  /* (T, K), rows ldx apart */
                            size_t ldx,
                            const float *w,  /* packed (N, K) */
                            float alpha, int accumulate, size_t T, size_t K,
                            size_t N);
void tb__k_rowmm_packed_bf16(float *y,           /* (T, N), rows ldy apart */
                             size_t ldy,
                             const float *x,     /* (T, K), rows ldx apart */
                             size_t ldx,
                             const uint32_t *w,  /* packed bfloat16 (N, K) */
                             float alpha, int accumulate, size_t T, size_t K,
                             size_t N);
/* The same order for W (N, K) unpacked with a short K (LoRA's up
 * products, K = its rank), packed on the stack as it goes.  K at most
 * TB__K_ROWMM_SEQ_MAX_K (a larger K computes nothing). */
#define TB__K_ROWMM_SEQ_MAX_K 256
void tb__k_rowmm_seq_f32(float *y,        /* (T, N), rows ldy apart */
                         size_t ldy,
                         const float *x,  /* (T, K), rows ldx apart */
                         size_t ldx,
                         const float *w,  /* (N, K), rows ldw apart */
                         size_t ldw, float alpha, int accumulate, size_t T,
                         size_t K, size_t N);

/* dst = src rounded to bfloat16, to nearest with ties to even (a NaN
 * stays NaN). */
void tb__k_bf16_from_f32(uint16_t *dst,     /* (n) */
                         const float *src,  /* (n) */
                         size_t n);
/* 1 when every value of src is exactly a bfloat16 (its low 16 bits are
 * zero): a checkpoint stored in bfloat16 and widened to float32. */
int tb__k_f32_is_bf16(const float *src,  /* (n) */
                      size_t n);

/* ------------------------------------------------------------------ LoRA */

/* The low-rank contribution of an adapted linear layer:
 *   xa = x A^T              (kept by the caller for the backward pass)
 *   y += scale * xa B^T
 * scale is alpha / r in the usual LoRA formulation. */
void tb__k_lora_forward(float *y,        /* (T, N) accumulated */
                        float *xa,       /* (T, r) written */
                        const float *x,  /* (T, K) */
                        const float *a,  /* (r, K) */
                        const float *b,  /* (N, r) */
                        float scale, size_t T, size_t K, size_t N, size_t r);

/* Backward of tb__k_lora_forward, all accumulating:
 *   dxa = scale * dy B        (written into scratch)
 *   dB += scale * dy^T xa
 *   dA += dxa^T x
 *   dx += dxa A               (skipped when dx is NULL) */
void tb__k_lora_backward(float *dx,         /* (T, K) or NULL */
                         float *da,         /* (r, K) */
                         float *db,         /* (N, r) */
                         float *scratch,    /* (T, r) */
                         const float *dy,   /* (T, N) */
                         const float *x,    /* (T, K) */
                         const float *xa,   /* (T, r) from the forward */
                         const float *a,    /* (r, K) */
                         const float *b,    /* (N, r) */
                         float scale, size_t T, size_t K, size_t N, size_t r);

/* The same in halves, for adapters that read one input x: their A
 * matrices stacked as one (R, K) block (R = the sum of their ranks) give
 * one down product, and each adapter's xa is a column slice of it, rows
 * ldxa floats apart.
 *   down:           xa = x A^T
 *   up:             y += scale * xa B^T
 *   up_backward:    dB += scale * dy^T xa;  dxa = scale * dy B (written)
 *   down_backward:  dA += dxa^T x;  dx += dxa A (each skipped when NULL)
 * tb__k_lora_forward is down then up with R = r; tb__k_lora_backward is
 * up_backward then down_backward. */
void tb__k_lora_down(float *xa,       /* (T, R) written */
                     const float *x,  /* (T, K) */
                     const float *a,  /* (R, K) */
                     size_t T, size_t K, size_t R);
void tb__k_lora_up(float *y,          /* (T, N) accumulated */
                   const float *xa,   /* (T, r), rows ldxa apart */
                   size_t ldxa,
                   const float *b,    /* (N, r) */
                   float scale, size_t T, size_t N, size_t r);
void tb__k_lora_up_backward(float *dxa,        /* (T, r), rows ldxa apart */
                            float *db,         /* (N, r) */
                            const float *dy,   /* (T, N) */
                            const float *xa,   /* (T, r), rows ldxa apart */
                            size_t ldxa,
                            const float *b,    /* (N, r) */
                            float scale, size_t T, size_t N, size_t r);
void tb__k_lora_down_backward(float *dx,         /* (T, K) or NULL */
                              float *da,         /* (R, K) or NULL */
                              const float *dxa,  /* (T, R) */
                              const float *x,    /* (T, K) */
                              const float *a,    /* (R, K) */
                              size_t T, size_t K, size_t R);

/* dA += dxa^T h for the RMSNorm output h = x * rstd (per row) * w (per
 * column), without forming h: a backward that did not keep h needs only
 * the norm's input and rstd.  dxa is scratch: its rows are scaled by rstd
 * in place. */
void tb__k_lora_da_normed(float *da,          /* (R, K) */
                          float *scratch,     /* (R, K) */
                          float *dxa,         /* (T, R) scaled in place */
                          const float *x,     /* (T, K) the norm's input */
                          const float *rstd,  /* (T) */
                          const float *w,     /* (K) the norm's weight */
                          size_t T, size_t K, size_t R);

/* ------------------------------------------------------------------ RMSNorm */

/* out = x / sqrt(mean(x^2) + eps) * w per row; rstd keeps 1/sqrt(...) for
 * the backward pass (may be NULL when no backward follows). */
void tb__k_rmsnorm_forward(float *out,       /* (T, C) */
                           float *rstd,      /* (T) or NULL */
                           const float *x,   /* (T, C) */
                           const float *w,   /* (C) */
                           float eps, size_t T, size_t C);

/* dx += rstd * (w*dout - xhat * mean(w*dout*xhat)), xhat = x*rstd;
 * dw += sum_t dout*xhat when dw is non-NULL.  dx must not alias dout or x. */
void tb__k_rmsnorm_backward(float *dx,          /* (T, C) */
                            float *dw,          /* (C) or NULL */
                            const float *dout,  /* (T, C) */
                            const float *x,     /* (T, C) */
                            const float *w,     /* (C) */
                            const float *rstd,  /* (T) */
                            size_t T, size_t C);

/* ------------------------------------------------------------------ RoPE */

/* Fills cos/sin tables for positions pos0 .. pos0+P-1, Hugging Face Llama
 * convention (no rope_scaling): inv_freq[i] = theta^(-2i/D) rounded to
 * float, angle = (float)pos * inv_freq[i] in float, as PyTorch computes it. */
void tb__k_rope_table(float *cos_t,  /* (P, D/2) */
                      float *sin_t,  /* (P, D/2) */
                      float theta, size_t pos0, size_t P, size_t D);

/* The rotary frequencies inv_freq[i] = theta^(-2i/D), i < D/2, rounded to
 * float as PyTorch computes them (what tb__k_rope_table uses). */
void tb__k_rope_inv_freq(float *inv_freq,  /* (D/2) */
                         float theta, size_t D);

/* Llama 3's rescaling of the frequencies, in place (rope_scaling
 * rope_type "llama3"), in float in the order of Hugging Face's
 * _compute_llama3_parameters: with wavelen = 2 pi / f, a frequency whose
 * wavelength exceeds orig / low_freq_factor becomes f / factor, one whose
 * wavelength is below orig / high_freq_factor stays, and between them
 * s = (orig / wavelen - low) / (high - low) mixes the two:
 * (1 - s) f / factor + s f. */
void tb__k_rope_llama3(float *inv_freq,  /* (D/2) */
                       float factor, float low_freq_factor,
                       float high_freq_factor, float original_max_positions,
                       size_t D);

/* cos/sin tables for positions pos0 .. pos0+P-1 from given frequencies:
 * angle = (float)pos * inv_freq[i] in float. */
void tb__k_rope_table_freq(float *cos_t,           /* (P, D/2) */
                           float *sin_t,           /* (P, D/2) */
                           const float *inv_freq,  /* (D/2) */
                           size_t pos0, size_t P, size_t D);

/* Rotates pairs (i, i + D/2) of every head of every row:
 *   out[i]       = x[i] cos - x[i+D/2] sin
 *   out[i+D/2]   = x[i+D/2] cos + x[i] sin
 * Row t uses table row t, so pass cos_t + pos0*(D/2) for a sequence that
 * starts at pos0.  out may equal x (the model rotates q and k in place). */
void tb__k_rope_forward(float *out,          /* (T, NH, D) */
                        const float *x,      /* (T, NH, D) */
                        const float *cos_t,  /* (T, D/2) */
                        const float *sin_t,  /* (T, D/2) */
                        size_t T, size_t NH, size_t D);

/* The inverse rotation, which is the exact gradient of an orthogonal map.
 * It overwrites dx (not +=) so that it can run in place on the gradient
 * buffer: dx may equal dout. */
void tb__k_rope_backward(float *dx,           /* (T, NH, D) */
                         const float *dout,   /* (T, NH, D) */
                         const float *cos_t,  /* (T, D/2) */
                         const float *sin_t,  /* (T, D/2) */
                         size_t T, size_t NH, size_t D);

/* ------------------------------------------------------------------ attention */

/* Query rows per block in the blocked attention kernels. */
#define TB__K_ATTN_BLOCK 64

/* Floats of scratch that the attention kernels need for nk key rows:
 * per block of the H/KVH query heads that share a KV head, two (rows, nk)
 * score blocks and three (rows, D) stacked blocks, rows = H/KVH *
 * TB__K_ATTN_BLOCK. */
size_t tb__k_attention_scratch_floats(size_t nk, size_t H, size_t KVH,
                                      size_t D);

/* Causal grouped-query attention for one sequence, softmax scale
 * 1/sqrt(D).  The T queries sit at positions pos0 .. pos0+T-1 and attend
 * to keys 0 .. pos0+i (so k and v hold pos0+T rows: a KV cache while
 * sampling, the sequence itself in training with pos0 = 0).  Query head h
 * reads KV head h / (H/KVH).  lse keeps the log-sum-exp of each (row,
 * head)'s scaled scores for the backward pass, which recomputes the
 * probabilities from it instead of storing (H, T, T).  lse may be NULL.
 * Masked scores are never computed, except inside the diagonal blocks. */
void tb__k_attention_forward(float *out,       /* (T, H, D) */
                             float *lse,       /* (T, H) or NULL */
                             float *scratch,   /* attention_scratch_floats(pos0+T, ..) */
                             const float *q,   /* (T, H, D) */
                             const float *k,   /* (pos0+T, KVH, D) */
                             const float *v,   /* (pos0+T, KVH, D) */
                             size_t T, size_t pos0, size_t H, size_t KVH,
                             size_t D);

/* Backward of tb__k_attention_forward with pos0 = 0; dq, dk, dv
 * accumulate. */
void tb__k_attention_backward(float *dq,          /* (T, H, D) */
                              float *dk,          /* (T, KVH, D) */
                              float *dv,          /* (T, KVH, D) */
                              float *scratch,     /* attention_scratch_floats(T, ..) */
                              const float *dout,  /* (T, H, D) */
                              const float *q,     /* (T, H, D) */
                              const float *k,     /* (T, KVH, D) */
                              const float *v,     /* (T, KVH, D) */
                              const float *out,   /* (T, H, D) */
                              const float *lse,   /* (T, H) */
                              size_t T, size_t H, size_t KVH, size_t D);

/* One decoding step: the query of the newest position (P-1) against a KV
 * cache holding positions 0 .. P-1 (the new k and v already written). */
void tb__k_attention_decode(float *out,            /* (H, D) */
                            float *scratch,        /* (P) */
                            const float *q,        /* (H, D) */
                            const float *k_cache,  /* (P, KVH, D) */
                            const float *v_cache,  /* (P, KVH, D) */
                            size_t P, size_t H, size_t KVH, size_t D);

/* One query row at position P-1 against keys 0 .. P-1 held in blocks of
 * `block` positions: the keys of position j for KV head h are the D floats
 * at k_blocks[j / block] + (j % block) * ld + h * D (likewise v), so a
 * block may hold more than these heads (ld >= KVH*D): one KV head's call
 * passes pointers offset to it.
 * Softmax scale 1/sqrt(D).  Every output is computed in one fixed order
 * (scores by tb__v16_dot, the max, exp and sum of fastmath.h, then the
 * weighted values in ascending position), so a row gives the same bits
 * whichever other rows and sequences are computed around it. */
void tb__k_attention_paged(float *out,                   /* (H, D) */
                           float *scratch,               /* (H/KVH, P) */
                           const float *q,               /* (H, D) */
                           const float *const *k_blocks, /* (P/block) */
                           const float *const *v_blocks, /* (P/block) */
                           size_t block, size_t ld, size_t P, size_t H,
                           size_t KVH, size_t D);

/* ------------------------------------------------------------------ MLP, embedding */

/* h = silu(gate) * up, silu(g) = g * sigmoid(g).  n = T * I. */
void tb__k_swiglu_forward(float *h,            /* (n) */
                          const float *gate,   /* (n) */
                          const float *up,     /* (n) */
                          size_t n);

/* dgate = dh * up * sigmoid(g) * (1 + g * (1 - sigmoid(g)));
 * dup = dh * silu(g).  Both are written, not accumulated: the gate and up
 * projections have no other path to the loss.  The forward's output
 * silu(g) * up is written to h too, from the same sigmoid: a backward that
 * did not keep it recomputes it for free.  The six arrays must not
 * overlap. */
void tb__k_swiglu_backward(float *h,           /* (n) */
                           float *dgate,       /* (n) */
                           float *dup,         /* (n) */
                           const float *dh,    /* (n) */
                           const float *gate,  /* (n) */
                           const float *up,    /* (n) */
                           size_t n);

/* out[t] = table[tokens[t]].  Tokens must lie in [0, V); the caller
 * validates them (the kernel has no error path).  The embedding is frozen,
 * so there is no backward. */
void tb__k_embedding_forward(float *out,             /* (T, C) */
                             const int32_t *tokens,  /* (T) */
                             const float *table,     /* (V, C) */
                             size_t T, size_t C);

/* ------------------------------------------------------------------ logits */

/* The vocabulary is large (V = 49152 for some models), so the model never
 * holds (T, V) logits.  It walks the sequence in row blocks of Bt rows with
 * one (Bt, V) scratch buffer:
 *   1. logits = h_blk lm_head^T (+ LoRA)            tb__k_linear_forward
 *   2. lse, lp = tb__k_logprobs(...)                 target log-probs
 *   3. per-token loss and coef = dL/dlp              tb__k_loss_*
 *   4. logits := dlogits in place                    tb__k_logits_backward
 *   5. dh_blk += dlogits lm_head, LoRA dA, dB         linear/lora backward
 * Every loss here depends on a token only through its own log-prob, so the
 * backward of a block needs nothing from other blocks. */

/* lse[t] = log sum_v exp(logits[t,v]);
 * lp[t,j] = logits[t, targets[t,j]] - lse[t] for the K targets of each row
 * (K = 1 for ordinary next-token targets; K > 1 for top-K distillation).
 * lp may be NULL when only lse is wanted. */
void tb__k_logprobs(float *lse,              /* (T) */
                    float *lp,               /* (T, K) or NULL */
                    const float *logits,     /* (T, V) */
                    const int32_t *targets,  /* (T, K) */
                    size_t T, size_t V, size_t K);

/* Turns logits into the gradient of the loss with respect to them, given
 * coef[t,j] = dL/dlp[t,j]:
 *   dlogits[t,v] = sum_j coef[t,j] * (onehot(v == targets[t,j]) - p[t,v]),
 *   p[t,v] = exp(logits[t,v] - lse[t]).
 * Overwrites; dlogits may equal logits (the usual, memory-lean use). */
void tb__k_logits_backward(float *dlogits,          /* (T, V) */
                           const float *logits,     /* (T, V) */
                           const float *lse,        /* (T) */
                           const int32_t *targets,  /* (T, K) */
                           const float *coef,       /* (T, K) */
                           size_t T, size_t V, size_t K);

/* ------------------------------------------------------------------ losses */

/* The five Tinker losses (wire protocol §5.4), per token and summed.  Each
 * takes the learner's target log-probs lp and writes the per-token loss
 * (loss, may be NULL) and its derivative coef = dloss/dlp (may be NULL),
 * and returns the sum of the per-token losses in double.  The formulas are
 * those of the Tinker documentation's PyTorch definitions; derivatives are
 * those PyTorch autograd gives (clamp passes the gradient at its bounds,
 * min splits ties evenly, which sums to the same value here).
 * r = exp(lp - lp_samp) is the importance ratio throughout. */

/* loss = -w * lp;  coef = -w. */
double tb__k_loss_cross_entropy(float *loss,          /* (n) or NULL */
                                float *coef,          /* (n) or NULL */
                                const float *lp,      /* (n) */
                                const float *weights, /* (n) */
                                size_t n);

/* loss = -r * A;  coef = -r * A. */
double tb__k_loss_importance_sampling(float *loss,          /* (n) or NULL */
                                      float *coef,          /* (n) or NULL */
                                      const float *lp,      /* (n) */
                                      const float *lp_samp, /* (n) */
                                      const float *adv,     /* (n) */
                                      size_t n);

/* loss = -min(r*A, clamp(r, lo, hi)*A);
 * coef = -r*A where the unclipped term is the minimum (r*A <= clamp*A),
 * else 0 (the clipped term is constant in lp outside [lo, hi]). */
double tb__k_loss_ppo(float *loss,          /* (n) or NULL */
                      float *coef,          /* (n) or NULL */
                      const float *lp,      /* (n) */
                      const float *lp_samp, /* (n) */
                      const float *adv,     /* (n) */
                      float clip_low, float clip_high, size_t n);

/* loss = -sg(clamp(r, lo, hi)) * lp * A;  coef = -clamp(r, lo, hi) * A. */
double tb__k_loss_cispo(float *loss,          /* (n) or NULL */
                        float *coef,          /* (n) or NULL */
                        const float *lp,      /* (n) */
                        const float *lp_samp, /* (n) */
                        const float *adv,     /* (n) */
                        float clip_low, float clip_high, size_t n);

/* loss = -(lp*A - beta/2 * (lp - lp_samp)^2);
 * coef = -(A - beta * (lp - lp_samp)). */
double tb__k_loss_dro(float *loss,          /* (n) or NULL */
                      float *coef,          /* (n) or NULL */
                      const float *lp,      /* (n) */
                      const float *lp_samp, /* (n) */
                      const float *adv,     /* (n) */
                      float beta, size_t n);

/* ------------------------------------------------------------------ optimizer */

/* One AdamW step exactly as torch.optim.AdamW (non-fused, non-amsgrad)
 * does it, with t the 1-based step number:
 *   p *= 1 - lr*wd                       (decoupled weight decay)
 *   m += (1-b1)*(g - m);  v = b2*v + (1-b2)*g^2
 *   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps) */
void tb__k_adamw_step(float *params,       /* (n) */
                      float *m,            /* (n) */
                      float *v,            /* (n) */
                      const float *grads,  /* (n) */
                      double lr, double beta1, double beta2, double eps,
                      double weight_decay, long t, size_t n);

/* sum g^2 and sqrt(sum g^2), accumulated in double.  The sum of squares
 * of a buffer's pieces adds up to the whole one's, so work items can each
 * take a piece. */
double tb__k_grad_sumsq(const float *g,  /* (n) */
                        size_t n);
double tb__k_grad_norm(const float *g,  /* (n) */
                       size_t n);

/* Scales g by max_norm / (norm + 1e-6) when that is below 1, as
 * torch.nn.utils.clip_grad_norm_ does; max_norm <= 0 turns clipping off.
 * grad_clip measures the norm of g and returns it; grad_clip_to is given
 * the norm (of a whole buffer g is a piece of). */
double tb__k_grad_clip(float *g,  /* (n) */
                       double max_norm, size_t n);
void tb__k_grad_clip_to(float *g,  /* (n) */
                        double max_norm, double norm, size_t n);

/* x = 0 (zero-grad of a flat buffer). */
void tb__k_zero(float *x,  /* (n) */
                size_t n);

/* ------------------------------------------------------------------ sampling */

/* Index of the largest value; the lowest index wins a tie, and a NaN wins
 * only when every value is NaN (then 0). */
size_t tb__k_argmax(const float *x,  /* (n) */
                    size_t n);

/* The k largest values of x in descending order (ties: lower index first,
 * NaN after every number), with their indices.  k <= n. */
void tb__k_topk(int32_t *idx,        /* (k) */
                float *val,          /* (k) */
                int32_t *scratch,    /* (n) */
                const float *x,      /* (n) */
                size_t k, size_t n);

/* Draws a token from softmax(logits / temperature) restricted first to
 * the top_k largest logits (top_k <= 0 or >= V: no limit) and then to the
 * smallest set of most likely tokens whose probability, renormalised over
 * the top-k set, reaches top_p (top_p >= 1: no limit).  u is a uniform
 * number in [0, 1) from the caller.  temperature <= 0 or top_k == 1 gives
 * the argmax.  Ties between equal logits are ordered by index, so a seed
 * gives the same tokens on every machine.
 *
 * Any input is safe and gives a token in [0, V) (-1 only when V is 0):
 * NaN and -inf logits have probability 0 (NaN ordered after every
 * number); when no logit is finite, the largest is +inf, or temperature
 * is NaN or too small for 1 / temperature to be finite, the result is the
 * argmax.  top_k <= 0 or >= V and top_p >= 1 (or NaN) mean no limit;
 * top_p <= 0 keeps the first token only.  Such a draw is defined, not
 * meaningful: a caller that must not sample a diverged model checks the
 * logits first. */
int32_t tb__k_sample(float *probs_scratch,  /* (V) */
                     int32_t *idx_scratch,  /* (V) */
                     const float *logits,   /* (V) */
                     float temperature, int top_k, float top_p, double u,
                     size_t V);

/* ------------------------------------------------------------------ PRNG */

/* xoshiro256** seeded through splitmix64, with Box-Muller normals whose
 * log, sin and cos are computed by this file's own polynomials in IEEE
 * double without fused multiply-add, so a seed gives bit-identical numbers
 * on every machine with IEEE arithmetic (the `base` model weights and the
 * LoRA A init are generated from it).  The state is a plain value the
 * caller owns. */
typedef struct tb__k_rng_s {
  uint64_t s[4];
  double spare;     /* second Box-Muller value */
  int has_spare;
} tb__k_rng_t;

void tb__k_rng_seed(tb__k_rng_t *rng, uint64_t seed);
uint64_t tb__k_rng_next(tb__k_rng_t *rng);
/* Uniform in [0, 1) with 53 random bits. */
double tb__k_rng_uniform(tb__k_rng_t *rng);
/* Standard normal. */
double tb__k_rng_normal(tb__k_rng_t *rng);
/* out[i] = mean + std * normal, rounded to float. */
void tb__k_rng_fill_normal(float *out,  /* (n) */
                           tb__k_rng_t *rng, float mean, float std, size_t n);
/* out[i] uniform in [lo, hi). */
void tb__k_rng_fill_uniform(float *out,  /* (n) */
                            tb__k_rng_t *rng, float lo, float hi, size_t n);

/* The splitmix64 step, also useful to derive independent seeds (one per
 * tensor or per sampling request) from one seed. */
uint64_t tb__k_splitmix64(uint64_t *state);

#endif /* TB_KERNELS_KERNELS_H */

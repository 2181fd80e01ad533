/*
 * Naive reference versions of the kernels in kernels.h.
 *
 * Each one is the shortest loop that states what its kernel computes,
 * accumulating in double, with the fast kernel's signature less most of its
 * scratch buffers.  They are the algorithmic definition the tests hold the
 * fast kernels to (with an explicit tolerance), as llm.c keeps
 * matmul_forward_naive beside its fast matmul.  They are slow; nothing outside tests should call them.
 */
#ifndef TB_KERNELS_REF_H
#define TB_KERNELS_REF_H

#include "kernels.h"

void tb__kref_linear_forward(float *y, const float *x, const float *w,
                             int accumulate, size_t T, size_t K, size_t N);
void tb__kref_linear_backward_input(float *dx, const float *dy, const float *w,
                                    size_t T, size_t K, size_t N);
void tb__kref_linear_backward_weight(float *dw, const float *dy, const float *x,
                                     size_t T, size_t K, size_t N);
/* y (+)= alpha * x W^T in double; W float32 or bfloat16 (w16 non-NULL). */
void tb__kref_rowmm(float *y, size_t ldy, const float *x, size_t ldx,
                    const float *w, const uint16_t *w16, size_t ldw,
                    float alpha, int accumulate, size_t T, size_t K, size_t N);
void tb__kref_lora_forward(float *y, float *xa, const float *x, const float *a,
                           const float *b, float scale, size_t T, size_t K,
                           size_t N, size_t r);
void tb__kref_lora_backward(float *dx, float *da, float *db, float *scratch,
                            const float *dy, const float *x, const float *xa,
                            const float *a, const float *b, float scale,
                            size_t T, size_t K, size_t N, size_t r);

void tb__kref_rmsnorm_forward(float *out, float *rstd, const float *x,
                              const float *w, float eps, size_t T, size_t C);
void tb__kref_rmsnorm_backward(float *dx, float *dw, const float *dout,
                               const float *x, const float *w,
                               const float *rstd, size_t T, size_t C);
void tb__kref_rope_table(float *cos_t, float *sin_t, float theta, size_t pos0,
                         size_t P, size_t D);
/* Meta's Llama 3.1 apply_scaling, in double, one frequency at a time. */
void tb__kref_rope_llama3(float *inv_freq, float factor, float low_freq_factor,
                          float high_freq_factor, float original_max_positions,
                          size_t D);
void tb__kref_bias_forward(float *y, const float *b, size_t T, size_t N);
void tb__kref_rope_forward(float *out, const float *x, const float *cos_t,
                           const float *sin_t, size_t T, size_t NH, size_t D);
void tb__kref_rope_backward(float *dx, const float *dout, const float *cos_t,
                            const float *sin_t, size_t T, size_t NH, size_t D);
void tb__kref_swiglu_forward(float *h, const float *gate, const float *up,
                             size_t n);
void tb__kref_swiglu_backward(float *dgate, float *dup, const float *dh,
                              const float *gate, const float *up, size_t n);
void tb__kref_embedding_forward(float *out, const int32_t *tokens,
                                const float *table, size_t T, size_t C);

/* The references keep nothing between forward and backward except what the
 * fast kernels keep (lse), and need no scratch. */
void tb__kref_attention_forward(float *out, float *lse, const float *q,
                                const float *k, const float *v, size_t T,
                                size_t pos0, size_t H, size_t KVH, size_t D);
void tb__kref_attention_backward(float *dq, float *dk, float *dv,
                                 const float *dout, const float *q,
                                 const float *k, const float *v, size_t T,
                                 size_t H, size_t KVH, size_t D);
void tb__kref_attention_decode(float *out, const float *q,
                               const float *k_cache, const float *v_cache,
                               size_t P, size_t H, size_t KVH, size_t D);

/* Gathers the blocks into one cache and runs tb__kref_attention_decode. */
void tb__kref_attention_paged(float *out, const float *q,
                              const float *const *k_blocks,
                              const float *const *v_blocks, size_t block,
                              size_t P, size_t H, size_t KVH, size_t D);

void tb__kref_logprobs(float *lse, float *lp, const float *logits,
                       const int32_t *targets, size_t T, size_t V, size_t K);
void tb__kref_logits_backward(float *dlogits, const float *logits,
                              const int32_t *targets, const float *coef,
                              size_t T, size_t V, size_t K);
double tb__kref_loss_cross_entropy(float *loss, float *coef, const float *lp,
                                   const float *weights, size_t n);
double tb__kref_loss_importance_sampling(float *loss, float *coef,
                                         const float *lp, const float *lp_samp,
                                         const float *adv, size_t n);
double tb__kref_loss_ppo(float *loss, float *coef, const float *lp,
                         const float *lp_samp, const float *adv,
                         float clip_low, float clip_high, size_t n);
double tb__kref_loss_cispo(float *loss, float *coef, const float *lp,
                           const float *lp_samp, const float *adv,
                           float clip_low, float clip_high, size_t n);
double tb__kref_loss_dro(float *loss, float *coef, const float *lp,
                         const float *lp_samp, const float *adv, float beta,
                         size_t n);

void tb__kref_adamw_step(float *params, float *m, float *v, const float *grads,
                         double lr, double beta1, double beta2, double eps,
                         double weight_decay, long t, size_t n);
double tb__kref_grad_clip(float *g, double max_norm, size_t n);

/* Sorts the whole vocabulary (insertion sort) and walks it. */
void tb__kref_topk(int32_t *idx, float *val, const float *x, size_t k,
                   size_t n);
int32_t tb__kref_sample(int32_t *order_scratch, const float *logits,
                        float temperature, int top_k, float top_p, double u,
                        size_t V);

#endif /* TB_KERNELS_REF_H */

/*
 * The frozen matrices as decoding reads them: float32 views of the model's
 * weights, or bfloat16 copies at half the bytes.
 *
 * Decoding one token streams every weight once, so at small batches its
 * speed is the memory bandwidth divided by the bytes of the weights.  A
 * checkpoint stored in bfloat16 (most are) was widened to float32 when it
 * was loaded; its values are still exactly bfloat16, and a bfloat16 copy
 * holds the very same numbers in half the bytes.  TB_DEC_WEIGHTS_AUTO
 * makes such a copy exactly when every value is a bfloat16, so it never
 * changes a weight; TB_DEC_WEIGHTS_BF16 rounds any model (its log-probs
 * then move by the rounding, see README), TB_DEC_WEIGHTS_F32 never copies.
 * Training keeps reading the float32 weights.
 *
 * Layout: per layer the q, k and v matrices stacked into one (QD + 2 KVD,
 * C) matrix, o (C, QD), gate and up stacked (2 I, C), down (C, I); then
 * the unembedding (V, C).  The bfloat16 copies are packed in panels of 32
 * outputs (tb__k_pack_bf16, kernels.h) for tb__k_rowmm_packed_bf16, which
 * streams them at memory speed at batch 1 and keeps a panel in cache for
 * every row of a large batch; the float32 views are the model's own rows
 * (tb__k_rowmm_f32), since a packed float32 copy would double the memory.  The float32 views rely on tb__weights_alloc
 * placing wq, wk, wv and w_gate, w_up next to each other, which it does.
 */
#ifndef TB_ENGINE_DEC_WEIGHTS_H
#define TB_ENGINE_DEC_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/weights.h"

typedef enum {
  TB_DEC_WEIGHTS_AUTO = 0,  /* bfloat16 when that is exact, else float32 */
  TB_DEC_WEIGHTS_F32,
  TB_DEC_WEIGHTS_BF16       /* rounded to bfloat16 */
} tb__dec_weights_mode_t;

typedef struct tb__dec_layer_s {
  const void *qkv;      /* (QD + 2 KVD, C) */
  const void *o;        /* (C, QD) */
  const void *gate_up;  /* (2 I, C) */
  const void *down;     /* (C, I) */
} tb__dec_layer_t;

typedef struct tb__dec_weights_s {
  int bf16;                /* the matrices are packed bfloat16 */
  tb__dec_layer_t *layers;  /* L */
  const void *head;        /* (V, C) */
  size_t bytes;            /* read per token by the matrices above */
  uint16_t *copy;          /* the packed bfloat16 copies, owned */
  size_t copy_len;
} tb__dec_weights_t;

/* Builds the views (and copies) for w, which must outlive them.  Reads
 * every weight in AUTO mode and copies in the bfloat16 modes: run it off
 * the loop.  0, TB_EINVAL (weights not laid out by tb__weights_alloc) or
 * TB_ENOMEM. */
int tb__dec_weights_init(tb__dec_weights_t *dw, const tb__weights_t *w,
                         tb__dec_weights_mode_t mode);
void tb__dec_weights_free(tb__dec_weights_t *dw);

#endif /* TB_ENGINE_DEC_WEIGHTS_H */

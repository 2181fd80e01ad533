/*
 * The model's forward pass over the rows of one decode step, cut into
 * phases of independent chunks for the cooperative work items of coop.h.
 *
 * A step's rows come from many sequences: one row per live sample of the
 * decoding ones, a chunk of the prompt of each prefilling one.  Each row
 * has its token, its position and its sequence's block table; rows are
 * grouped by adapter (a group may have none), contiguously.  First each
 * row's embedding and input norm, beside the packing of any adapter the
 * decoder holds no packed copy of for its key (dec_lora.h).  Per layer:
 *   QKV      the base q, k, v product over all rows; each group's LoRA
 *            down product x A^T over its own rows
 *   QKV_UP   each group's up products into q, k, v
 *   ROPE     per row: biases, head norms, rotary; k and v into the blocks
 *   ATTN     per row and KV head, over the row's sequence's blocks
 *   O, O_UP  the output projection (+ LoRA), added to the residual
 *   NORM2    per row
 *   GU, GU_UP  gate and up (+ LoRA), then SwiGLU
 *   DOWN, DOWN_UP  the down projection (+ LoRA), added to the residual
 *   NORM     per row: the next layer's input norm, or the final norm of
 *            the rows whose logits are wanted
 * then HEAD and HEAD_UP: the logits of those rows (+ LoRA).  Products are
 * cut by output columns, so at batch 1 both cores stream half the weights.
 *
 * Every row's result depends on its own inputs alone, whatever else the
 * step holds: the products are tb__k_rowmm (row-independent), the rest is
 * row-wise, and attention reads the row's own sequence's blocks in one
 * fixed order (tb__k_attention_paged), whether the row is a prompt token
 * or a sampled one.  So a position's keys and values are the same bits
 * however its sequence was batched or chunked, which is also what lets a
 * prompt prefix computed by one request serve another.
 *
 * Non-goals: choosing the rows (decode.c), sampling (decode.c runs it in
 * the phase after these), and training (llama.c).
 */
#ifndef TB_ENGINE_DECODE_FWD_H
#define TB_ENGINE_DECODE_FWD_H

#include <stddef.h>
#include <stdint.h>

#include "engine/dec_lora.h"
#include "engine/dec_weights.h"
#include "engine/kv_pool.h"
#include "engine/lora.h"
#include "engine/weights.h"

typedef struct tb__dec_row_s {
  int32_t token;
  size_t pos;              /* its position; the table covers 0 .. pos */
  const int32_t *table;    /* its sequence's block ids, in position order */
  int32_t logit;           /* its row of the logits, or -1 */
} tb__dec_row_t;

typedef struct tb__dec_group_s {
  const tb__lora_t *lora;   /* NULL: the bare model */
  size_t row0, rows;       /* its rows of the step */
  size_t logit0, logits;   /* its rows of the logits */
  tb__kv_key_t key;        /* the adapter's, for its packed copies */
} tb__dec_group_t;

typedef struct tb__dec_fwd_s {
  /* set by the caller before tb__dec_fwd_plan */
  const tb__weights_t *w;
  const tb__dec_weights_t *dw;
  const tb__kv_pool_t *pool;
  const tb__dec_row_t *rows;
  size_t T;
  const tb__dec_group_t *groups;
  size_t ngroups;
  size_t nlogits;
  size_t item_extra;       /* bytes of per-item scratch for the caller */
  /* set by tb__dec_fwd_plan, valid until the next plan */
  float *logits;           /* (nlogits, V) */
  size_t num_phases;
  /* private */
  float *buf;
  size_t buf_floats;
  float *x, *h, *qkv, *att, *o, *gu, *act, *xa, *hl, *xau;
  size_t ldxa, ldxau;
  float *rope_cos, *rope_sin;
  size_t rope_len;
  char *scratch;           /* per item */
  size_t scratch_bytes, scratch_cap, items;
  size_t max_pos;
  tb__dec_lora_cache_t lcache;    /* the adapters' packed copies */
  const tb__dec_lora_t **gpk;     /* per group: its entry, or NULL */
  size_t gpk_cap;
} tb__dec_fwd_t;

/* Sizes the buffers for the rows set in f and `items` work items, and
 * counts the phases.  0 or TB_ENOMEM. */
int tb__dec_fwd_plan(tb__dec_fwd_t *f, size_t items);
/* Chunks of phase p (may be 0). */
uint32_t tb__dec_fwd_chunks(const tb__dec_fwd_t *f, size_t p);
/* Runs chunk i of phase p on item `item`. */
void tb__dec_fwd_chunk(tb__dec_fwd_t *f, size_t p, size_t i, size_t item);
/* The caller's item_extra bytes of item `item` (64-byte aligned). */
void *tb__dec_fwd_item_extra(const tb__dec_fwd_t *f, size_t item);
void tb__dec_fwd_free(tb__dec_fwd_t *f);

#endif /* TB_ENGINE_DECODE_FWD_H */

/*
 * The engine's bridge to checkpoint.h: adapter tensors described with
 * plain types, saved and loaded on a work item's thread.
 *
 * checkpoint.h and lora.h each declare the LoRA target enumeration, so no
 * file can include both; engine.c (which needs lora.h) describes the
 * tensors with tb__eng_tensor_t and engine_ckpt.c (which needs
 * checkpoint.h) turns them into checkpoint calls.
 */
#ifndef TB_ENGINE_ENGINE_CKPT_H
#define TB_ENGINE_ENGINE_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "tinkerbell/error.h"

/* One LoRA tensor: its PEFT name, (rows, cols) and buffers. */
typedef struct tb__eng_tensor_s {
  char name[96];
  int64_t shape[2];
  float *data;
  float *adam_m;
  float *adam_v;
} tb__eng_tensor_t;

/* What a checkpoint records about its adapter. */
typedef struct tb__eng_ckpt_meta_s {
  int rank;
  double alpha;
  int train_attn, train_mlp, train_unembed;
  const char *base_model;
  int64_t step;
} tb__eng_ckpt_meta_t;

enum {
  TB__ENG_CKPT_OPTIMIZER = 1,  /* include / require the Adam moments */
  TB__ENG_CKPT_SAMPLER = 2     /* PEFT export instead of a checkpoint */
};

int tb__eng_ckpt_save(const char *dir, const tb__eng_tensor_t *t, size_t n,
                      const tb__eng_ckpt_meta_t *meta, int flags,
                      tb_error_t *err);

/* Fills the tensors' buffers from dir after checking that the
 * checkpoint's rank, alpha and targets are those of meta.  *step receives
 * the checkpoint's step count.  On error the buffers may be partly
 * written. */
int tb__eng_ckpt_load(const char *dir, const tb__eng_tensor_t *t, size_t n,
                      const tb__eng_ckpt_meta_t *meta, int flags,
                      int64_t *step, tb_error_t *err);

#endif /* TB_ENGINE_ENGINE_CKPT_H */

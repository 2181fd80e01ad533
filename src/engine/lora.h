/*
 * A LoRA adapter over a Llama-family base: its configuration, its trainable
 * parameters and their optimizer state.
 *
 * Every adapted linear layer W (out, in) gets y = x W^T + scale * x A^T B^T
 * with A (r, in) and B (out, r), scale = alpha / r.  The targets are the
 * attention projections q, k, v, o (train_attn), the MLP projections gate,
 * up, down (train_mlp) of every layer, and the unembedding lm_head
 * (train_unembed).
 *
 * All A and B matrices live in ONE contiguous float buffer `params`, and
 * `grads`, `adam_m`, `adam_v` have exactly the same layout (STYLE.md rule
 * 14), so zero-grad, the optimizer and checkpoint I/O are single loops or
 * memcpys.  One walk (point_views, as in llm.c) assigns each tensor its
 * offset; the order is layer-major: for layer l, for each group of targets
 * that read the same input ({q, k, v}, {o}, {gate, up}, {down}; see
 * tb__lora_groups), the A of every member that is on, then their Bs; the
 * unembedding's A and B come last.  A group's A matrices are thus one
 * (members * r, in) block, so llama.c runs one down product per group.
 *
 * A is drawn from the adapter's seed with the portable PRNG of kernels/
 * (uniform in +-1/sqrt(in), the bound of PEFT's kaiming_uniform_(a=sqrt(5)))
 * and B is zero, so a new adapter leaves the model's outputs unchanged.
 *
 * Tensor names follow PEFT, so a checkpoint is a loadable PEFT adapter:
 *   base_model.model.model.layers.{l}.self_attn.q_proj.lora_A.weight
 *   base_model.model.model.layers.{l}.mlp.down_proj.lora_B.weight
 *   base_model.model.lm_head.lora_A.weight
 *
 * Non-goals: the math that uses the adapter (llama.c), the optimizer step
 * (optim.c) and file formats (checkpoint.c).
 */
#ifndef TB_ENGINE_LORA_H
#define TB_ENGINE_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "engine/lora_target.h"

#include "engine/weights.h"

/* The default lora_alpha when a request does not give one. */
#define TB_LORA_DEFAULT_ALPHA 32.0f

typedef struct tb__lora_config_s {
  int rank;            /* r >= 1 */
  uint64_t seed;       /* A's initialisation */
  float alpha;         /* <= 0 means TB_LORA_DEFAULT_ALPHA */
  int train_attn;      /* q, k, v, o */
  int train_mlp;       /* gate, up, down */
  int train_unembed;   /* lm_head */
} tb__lora_config_t;

/* Targets that read the same input within a layer.  The members of a group
 * are switched on and off together (train_attn, train_mlp), and their A
 * matrices are adjacent in the layout, first member first. */
typedef struct tb__lora_group_s {
  tb__lora_target_t first;
  int count;
} tb__lora_group_t;

enum {
  TB_LORA_GROUP_QKV,      /* read the attention norm's output */
  TB_LORA_GROUP_O,        /* reads the attention output */
  TB_LORA_GROUP_GATE_UP,  /* read the MLP norm's output */
  TB_LORA_GROUP_DOWN,     /* reads the SwiGLU output */
  TB_LORA_LAYER_GROUPS
};
#define TB_LORA_GROUP_MAX 3 /* members of the largest group */
extern const tb__lora_group_t tb__lora_groups[TB_LORA_LAYER_GROUPS];

/* Where one adapted layer's A and B sit in a flat buffer, in floats.
 * `on` is 0 for layers the adapter does not target (no storage). */
typedef struct tb__lora_slot_s {
  int on;
  size_t in, out;     /* the base layer's (out, in) */
  size_t a_off;       /* A (r, in) */
  size_t b_off;       /* B (out, r) */
} tb__lora_slot_t;

typedef struct tb__lora_s {
  /* read-only after tb__lora_init */
  tb__lora_config_t config;     /* alpha filled in */
  tb__model_config_t model;
  float scale;                 /* alpha / rank */
  size_t rank;
  size_t num_params;           /* floats in each of the four buffers */
  /* slots[l * TB_LORA_LAYER_TARGETS + t] for the layers, then the
   * unembedding at index num_layers * TB_LORA_LAYER_TARGETS. */
  tb__lora_slot_t *slots;
  size_t num_slots;
  /* the four equally laid-out buffers */
  float *params;
  float *grads;
  float *adam_m;
  float *adam_v;
  long step;                   /* optimizer steps taken */
} tb__lora_t;

/* Checks a LoRA configuration; 0 or TB_EINVAL with a short reason in *why
 * (may be NULL). */
int tb__lora_config_validate(const tb__lora_config_t *c, const char **why);

/* Lays out and allocates an adapter for the model `m`, initialised from
 * c->seed (A random, B zero; grads and moments zero; step 0).  0,
 * TB_EINVAL or TB_ENOMEM; on failure *lora is left safe to free. */
int tb__lora_init(tb__lora_t *lora, const tb__model_config_t *m,
                  const tb__lora_config_t *c);
/* Releases what init allocated; safe on a zeroed struct. */
void tb__lora_free(tb__lora_t *lora);

/* The slot of layer l's target t, or of the unembedding. */
static inline const tb__lora_slot_t *tb__lora_slot(const tb__lora_t *lora,
                                                  int layer,
                                                  tb__lora_target_t t) {
  return &lora->slots[(size_t)layer * TB_LORA_LAYER_TARGETS + (size_t)t];
}
static inline const tb__lora_slot_t *tb__lora_unembed(const tb__lora_t *lora) {
  return &lora->slots[lora->num_slots - 1];
}

/* grads += shard over the piece [p0, p1) of the flat buffers (shard is a
 * shard's gradient buffer of num_params floats), for batches whose shards
 * were computed separately. */
void tb__lora_add_grads(tb__lora_t *lora, const float *shard, size_t p0,
                        size_t p1);
void tb__lora_zero_grads(tb__lora_t *lora);

/* Tensors, for checkpoint I/O: 2 per targeted layer (A, then B), in slot
 * order (layer by layer, q .. down, then the unembedding).  tb__lora_tensor
 * fills the name (NUL-terminated, in name of `cap` bytes; 96 is enough),
 * its shape (rows, cols) and its offset in the flat buffers.  0, or TB_EINVAL when i is out of range or cap too small. */
size_t tb__lora_num_tensors(const tb__lora_t *lora);
int tb__lora_tensor(const tb__lora_t *lora, size_t i, char *name, size_t cap,
                    size_t shape[2], size_t *offset);

#endif /* TB_ENGINE_LORA_H */

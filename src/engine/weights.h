/*
 * The shape of a Llama-family decoder and views of its frozen base weights.
 *
 * This is the contract between the loaders (safetensors / Hugging Face
 * directories / the generated `base` model) and the math (llama.c and the
 * kernels): loaders fill a tb__weights_t, the math only reads it.  All
 * matrices are row-major float32 in the Hugging Face orientation, (out, in),
 * so a linear layer computes y = x W^T.
 */
#ifndef TB_ENGINE_WEIGHTS_H
#define TB_ENGINE_WEIGHTS_H

#include <stddef.h>

#include "engine/lora_target.h"
#include "engine/packed.h"

/* The families of decoder the math runs.  They share the Llama block and
 * differ in a few switches of tb__model_config_t: Qwen2 adds biases to the
 * q, k and v projections, Qwen3 an RMSNorm of every query and key head
 * before rotary. */
typedef enum {
  TB_ARCH_LLAMA = 0,  /* LlamaForCausalLM (Llama 2/3.x, SmolLM2, base) */
  TB_ARCH_QWEN2,      /* Qwen2ForCausalLM (Qwen2, Qwen2.5) */
  TB_ARCH_QWEN3,      /* Qwen3ForCausalLM (Qwen3 dense) */
  TB_ARCH_COUNT
} tb__model_arch_t;

/* Rotary frequencies: as computed (TB_ROPE_DEFAULT), or rescaled the
 * Llama 3 way (rope_scaling {"rope_type": "llama3"}): wavelengths longer
 * than original_max_position_embeddings / low_freq_factor are divided by
 * factor, those shorter than .. / high_freq_factor kept, and the band
 * between interpolated. */
typedef enum { TB_ROPE_DEFAULT = 0, TB_ROPE_LLAMA3 } tb__rope_type_t;

typedef struct tb__model_config_s {
  int hidden_size;              /* C */
  int intermediate_size;        /* I */
  int num_layers;               /* L */
  int num_heads;                /* H */
  int num_kv_heads;             /* KVH; H % KVH == 0 */
  int head_dim;                 /* D = C / H unless config.json says otherwise */
  int vocab_size;               /* V */
  int max_position_embeddings;  /* longest sequence */
  float rms_norm_eps;
  float rope_theta;
  int tie_word_embeddings;      /* lm_head shares embed_tokens */
  tb__model_arch_t arch;
  int qkv_bias;                 /* q, k, v projections add a frozen bias */
  int qk_norm;                  /* RMSNorm (weight (D)) of each q, k head */
  tb__rope_type_t rope_type;
  float rope_factor;            /* TB_ROPE_LLAMA3 only */
  float rope_low_freq_factor;
  float rope_high_freq_factor;
  int rope_original_max_position_embeddings;
} tb__model_config_t;

/* "LlamaForCausalLM", ...; and the config.json model_type, "llama", ... */
const char *tb__model_arch_name(tb__model_arch_t a);
const char *tb__model_arch_type(tb__model_arch_t a);

typedef struct tb__layer_weights_s {
  const float *attn_norm;  /* (C)            input_layernorm.weight */
  const float *wq;         /* (H*D, C)       self_attn.q_proj.weight */
  const float *wk;         /* (KVH*D, C)     self_attn.k_proj.weight */
  const float *wv;         /* (KVH*D, C)     self_attn.v_proj.weight */
  const float *bq;         /* (H*D)          self_attn.q_proj.bias, or NULL */
  const float *bk;         /* (KVH*D)        self_attn.k_proj.bias, or NULL */
  const float *bv;         /* (KVH*D)        self_attn.v_proj.bias, or NULL */
  const float *q_norm;     /* (D)            self_attn.q_norm.weight, or NULL */
  const float *k_norm;     /* (D)            self_attn.k_norm.weight, or NULL */
  const float *wo;         /* (C, H*D)       self_attn.o_proj.weight */
  const float *mlp_norm;   /* (C)            post_attention_layernorm.weight */
  const float *w_gate;     /* (I, C)         mlp.gate_proj.weight */
  const float *w_up;       /* (I, C)         mlp.up_proj.weight */
  const float *w_down;     /* (C, I)         mlp.down_proj.weight */
} tb__layer_weights_t;

typedef struct tb__weights_s {
  tb__model_config_t config;
  const float *embed;        /* (V, C)  model.embed_tokens.weight */
  tb__layer_weights_t *layers;/* L entries */
  const float *final_norm;   /* (C)     model.norm.weight */
  const float *lm_head;      /* (V, C)  lm_head.weight, == embed when tied */
  /* Owned storage: one contiguous float array holding every tensor above
   * (so the base is one allocation shared read-only by all adapters). */
  float *storage;
  size_t storage_floats;
  /* The linears' matrices packed for their products, made on first use
   * (packed.h); NULL when packing is off.  Slots: tb__weights_slot. */
  tb__packed_t *packed;
} tb__weights_t;

/* The packed-set slots: layer l's linear t (TB_LORA_Q .. TB_LORA_DOWN),
 * then lm_head after every layer's. */
static inline size_t tb__weights_slot(size_t l, tb__lora_target_t t) {
  return l * TB_LORA_LAYER_TARGETS + (size_t)t;
}
static inline size_t tb__weights_head_slot(const tb__model_config_t *c) {
  return (size_t)c->num_layers * TB_LORA_LAYER_TARGETS;
}

/* Checks a config for values the math cannot run with and for sizes past
 * the bounds below (so that no size computed from a config overflows or
 * asks for absurd memory); 0 or TB_EINVAL.  `why` (may be NULL) receives a
 * short reason that starts with the config.json field's name. */
#define TB_MODEL_MAX_HIDDEN 65536
#define TB_MODEL_MAX_INTERMEDIATE (1 << 20)
#define TB_MODEL_MAX_LAYERS 1024
#define TB_MODEL_MAX_HEADS 1024
#define TB_MODEL_MAX_HEAD_DIM 1024
#define TB_MODEL_MAX_VOCAB (1 << 22)
#define TB_MODEL_MAX_POSITIONS (1 << 24)
int tb__model_config_validate(const tb__model_config_t *c, const char **why);

/* Number of floats a weights storage needs for this config. */
size_t tb__weights_float_count(const tb__model_config_t *c);

/* Allocates zeroed storage and points every view into it, in a fixed order:
 * embed, then per layer attn_norm, wq, wk, wv, (qkv_bias) bq, bk, bv,
 * (qk_norm) q_norm, k_norm, wo, mlp_norm, w_gate, w_up, w_down, then
 * final_norm and (untied only) lm_head.  0, TB_EINVAL (a config that
 * tb__model_config_validate refuses) or TB_ENOMEM. */
int tb__weights_alloc(tb__weights_t *w, const tb__model_config_t *c);
void tb__weights_free(tb__weights_t *w);

#endif /* TB_ENGINE_WEIGHTS_H */

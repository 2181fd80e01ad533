/*
 * Base weight storage and views (see weights.h).
 */
#include "engine/weights.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/bigmem.h"
#include "tinkerbell/error.h"

static const char *const arch_names[TB_ARCH_COUNT] = {
  "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
};
static const char *const arch_types[TB_ARCH_COUNT] = { "llama", "qwen2",
                                                       "qwen3" };

const char *tb__model_arch_name(tb__model_arch_t a) {
  return (unsigned)a < TB_ARCH_COUNT ? arch_names[a] : "unknown";
}

const char *tb__model_arch_type(tb__model_arch_t a) {
  return (unsigned)a < TB_ARCH_COUNT ? arch_types[a] : "unknown";
}

int tb__model_config_validate(const tb__model_config_t *c, const char **why) {
  const char *reason = NULL;
  if (c->hidden_size <= 0 || c->hidden_size > TB_MODEL_MAX_HIDDEN)
    reason = "hidden_size must be from 1 to 65536";
  else if (c->intermediate_size <= 0 ||
           c->intermediate_size > TB_MODEL_MAX_INTERMEDIATE)
    reason = "intermediate_size must be from 1 to 1048576";
  else if (c->num_layers <= 0 || c->num_layers > TB_MODEL_MAX_LAYERS)
    reason = "num_hidden_layers must be from 1 to 1024";
  else if (c->num_heads <= 0 || c->num_heads > TB_MODEL_MAX_HEADS)
    reason = "num_attention_heads must be from 1 to 1024";
  else if (c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads != 0)
    reason = "num_key_value_heads must divide num_attention_heads";
  else if (c->head_dim <= 0 || c->head_dim % 2 != 0 ||
           c->head_dim > TB_MODEL_MAX_HEAD_DIM)
    reason = "head_dim must be even, from 2 to 1024";
  else if (c->vocab_size <= 0 || c->vocab_size > TB_MODEL_MAX_VOCAB)
    reason = "vocab_size must be from 1 to 4194304";
  else if (c->max_position_embeddings <= 0 ||
           c->max_position_embeddings > TB_MODEL_MAX_POSITIONS)
    reason = "max_position_embeddings must be from 1 to 16777216";
  else if (!(c->rms_norm_eps > 0.0f && c->rms_norm_eps < 1.0f))
    reason = "rms_norm_eps must be in (0, 1)";
  else if (!(c->rope_theta > 0.0f && isfinite(c->rope_theta)))
    reason = "rope_theta must be positive";
  else if ((unsigned)c->arch >= TB_ARCH_COUNT)
    reason = "architectures: unknown family";
  else if (c->rope_type == TB_ROPE_LLAMA3 &&
           !(c->rope_factor >= 1.0f && isfinite(c->rope_factor)))
    reason = "rope_scaling.factor must be at least 1";
  else if (c->rope_type == TB_ROPE_LLAMA3 &&
           !(c->rope_low_freq_factor > 0.0f &&
             c->rope_low_freq_factor < c->rope_high_freq_factor &&
             isfinite(c->rope_high_freq_factor)))
    reason = "rope_scaling.low_freq_factor must be positive and below "
             "high_freq_factor";
  else if (c->rope_type == TB_ROPE_LLAMA3 &&
           (c->rope_original_max_position_embeddings <= 0 ||
            c->rope_original_max_position_embeddings > TB_MODEL_MAX_POSITIONS))
    reason = "rope_scaling.original_max_position_embeddings must be from 1 "
             "to 16777216";
  else if (c->rope_type != TB_ROPE_DEFAULT && c->rope_type != TB_ROPE_LLAMA3)
    reason = "rope_scaling.rope_type: unknown";
  if (why != NULL)
    *why = reason;
  return reason == NULL ? 0 : TB_EINVAL;
}

/* Floats of one decoder layer.  The bounds of tb__model_config_validate
 * keep every product here far inside size_t. */
static size_t layer_floats(const tb__model_config_t *c) {
  size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
  size_t D = (size_t)c->head_dim;
  size_t q = (size_t)c->num_heads * D;
  size_t kv = (size_t)c->num_kv_heads * D;
  return C + q * C + 2 * kv * C + (c->qkv_bias ? q + 2 * kv : 0) +
         (c->qk_norm ? 2 * D : 0) + C * q + C + 3 * I * C;
}

size_t tb__weights_float_count(const tb__model_config_t *c) {
  size_t VC = (size_t)c->vocab_size * (size_t)c->hidden_size;
  return VC + (size_t)c->num_layers * layer_floats(c) +
         (size_t)c->hidden_size + (c->tie_word_embeddings ? 0 : VC);
}

int tb__weights_alloc(tb__weights_t *w, const tb__model_config_t *c) {
  memset(w, 0, sizeof(*w));
  if (tb__model_config_validate(c, NULL) != 0)
    return TB_EINVAL;
  w->config = *c;
  size_t n = tb__weights_float_count(c);
  w->storage = tb__big_alloc(n * sizeof(float));
  w->storage_floats = w->storage ? n : 0;  /* tb__weights_free needs it */
  w->layers = calloc((size_t)c->num_layers, sizeof(*w->layers));
  /* NULL when packing is off: the products then use OpenBLAS alone. */
  w->packed = tb__packed_new(tb__weights_head_slot(c) + 1);
  if (w->storage == NULL || w->layers == NULL) {
    tb__weights_free(w);
    return TB_ENOMEM;
  }

  size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
  size_t D = (size_t)c->head_dim;
  size_t q = (size_t)c->num_heads * D;
  size_t kv = (size_t)c->num_kv_heads * D;
  float *p = w->storage;
  w->embed = p; p += (size_t)c->vocab_size * C;
  for (int l = 0; l < c->num_layers; l++) {
    tb__layer_weights_t *L = &w->layers[l];
    L->attn_norm = p; p += C;
    L->wq = p; p += q * C;
    L->wk = p; p += kv * C;
    L->wv = p; p += kv * C;
    if (c->qkv_bias) {
      L->bq = p; p += q;
      L->bk = p; p += kv;
      L->bv = p; p += kv;
    }
    if (c->qk_norm) {
      L->q_norm = p; p += D;
      L->k_norm = p; p += D;
    }
    L->wo = p; p += C * q;
    L->mlp_norm = p; p += C;
    L->w_gate = p; p += I * C;
    L->w_up = p; p += I * C;
    L->w_down = p; p += C * I;
  }
  w->final_norm = p; p += C;
  if (c->tie_word_embeddings) {
    w->lm_head = w->embed;
  } else {
    w->lm_head = p; p += (size_t)c->vocab_size * C;
  }
  return 0;
}

void tb__weights_free(tb__weights_t *w) {
  tb__big_free(w->storage, w->storage_floats * sizeof(float));
  free(w->layers);
  tb__packed_free(w->packed);
  memset(w, 0, sizeof(*w));
}

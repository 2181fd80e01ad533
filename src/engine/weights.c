/*
 * Base weight storage and views (see weights.h).
 */
#include "engine/weights.h"

#include <stdlib.h>
#include <string.h>

#include "engine/bigmem.h"
#include "tinkerbell/error.h"

int tb__model_config_validate(const tb_model_config_t *c, const char **why) {
  const char *reason = NULL;
  if (c->hidden_size <= 0) reason = "hidden_size must be positive";
  else if (c->intermediate_size <= 0) reason = "intermediate_size must be positive";
  else if (c->num_layers <= 0) reason = "num_hidden_layers must be positive";
  else if (c->num_heads <= 0) reason = "num_attention_heads must be positive";
  else if (c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads != 0)
    reason = "num_key_value_heads must divide num_attention_heads";
  else if (c->head_dim <= 0 || c->head_dim % 2 != 0)
    reason = "head_dim must be positive and even";
  else if (c->vocab_size <= 0) reason = "vocab_size must be positive";
  else if (c->max_position_embeddings <= 0)
    reason = "max_position_embeddings must be positive";
  else if (!(c->rms_norm_eps > 0.0f)) reason = "rms_norm_eps must be positive";
  else if (!(c->rope_theta > 0.0f)) reason = "rope_theta must be positive";
  if (why != NULL)
    *why = reason;
  return reason == NULL ? 0 : TB_EINVAL;
}

static size_t layer_floats(const tb_model_config_t *c) {
  size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
  size_t q = (size_t)c->num_heads * (size_t)c->head_dim;
  size_t kv = (size_t)c->num_kv_heads * (size_t)c->head_dim;
  return C + q * C + 2 * kv * C + C * q + C + 3 * I * C;
}

size_t tb__weights_float_count(const tb_model_config_t *c) {
  size_t VC = (size_t)c->vocab_size * (size_t)c->hidden_size;
  return VC + (size_t)c->num_layers * layer_floats(c) +
         (size_t)c->hidden_size + (c->tie_word_embeddings ? 0 : VC);
}

int tb__weights_alloc(tb_weights_t *w, const tb_model_config_t *c) {
  memset(w, 0, sizeof(*w));
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
  size_t q = (size_t)c->num_heads * (size_t)c->head_dim;
  size_t kv = (size_t)c->num_kv_heads * (size_t)c->head_dim;
  float *p = w->storage;
  w->embed = p; p += (size_t)c->vocab_size * C;
  for (int l = 0; l < c->num_layers; l++) {
    tb_layer_weights_t *L = &w->layers[l];
    L->attn_norm = p; p += C;
    L->wq = p; p += q * C;
    L->wk = p; p += kv * C;
    L->wv = p; p += kv * C;
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

void tb__weights_free(tb_weights_t *w) {
  tb__big_free(w->storage, w->storage_floats * sizeof(float));
  free(w->layers);
  tb__packed_free(w->packed);
  memset(w, 0, sizeof(*w));
}

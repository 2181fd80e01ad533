/*
 * Decoding's view of the frozen matrices (see dec_weights.h).
 */
#include "engine/dec_weights.h"

#include <stdlib.h>
#include <string.h>

#include "engine/bigmem.h"
#include "kernels/kernels.h"
#include "tinkerbell/error.h"

typedef struct mats_s {
  const float *m[4];  /* qkv, o, gate_up, down of one layer */
  size_t n[4];        /* their floats */
} mats_t;

static int layer_mats(mats_t *mt, const tb__weights_t *w, size_t l) {
  const tb__model_config_t *c = &w->config;
  const tb__layer_weights_t *lw = &w->layers[l];
  size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
  size_t QD = (size_t)c->num_heads * (size_t)c->head_dim;
  size_t KVD = (size_t)c->num_kv_heads * (size_t)c->head_dim;
  if (lw->wk != lw->wq + QD * C || lw->wv != lw->wk + KVD * C ||
      lw->w_up != lw->w_gate + I * C)
    return TB_EINVAL;
  mt->m[0] = lw->wq;
  mt->n[0] = (QD + 2 * KVD) * C;
  mt->m[1] = lw->wo;
  mt->n[1] = C * QD;
  mt->m[2] = lw->w_gate;
  mt->n[2] = 2 * I * C;
  mt->m[3] = lw->w_down;
  mt->n[3] = C * I;
  return 0;
}

void tb__dec_weights_free(tb__dec_weights_t *dw) {
  free(dw->layers);
  tb__big_free(dw->copy, dw->copy_len * sizeof(uint16_t));
  memset(dw, 0, sizeof(*dw));
}

int tb__dec_weights_init(tb__dec_weights_t *dw, const tb__weights_t *w,
                         tb__dec_weights_mode_t mode) {
  memset(dw, 0, sizeof(*dw));
  const tb__model_config_t *c = &w->config;
  size_t L = (size_t)c->num_layers;
  size_t VC = (size_t)c->vocab_size * (size_t)c->hidden_size;
  dw->layers = calloc(L ? L : 1, sizeof(*dw->layers));
  if (dw->layers == NULL)
    return TB_ENOMEM;
  size_t total = VC;
  int exact = tb__k_f32_is_bf16(w->lm_head, VC);
  for (size_t l = 0; l < L; l++) {
    mats_t mt;
    if (layer_mats(&mt, w, l) != 0) {
      tb__dec_weights_free(dw);
      return TB_EINVAL;
    }
    for (int i = 0; i < 4; i++) {
      total += mt.n[i];
      if (mode == TB_DEC_WEIGHTS_AUTO && exact)
        exact = tb__k_f32_is_bf16(mt.m[i], mt.n[i]);
    }
  }
  dw->bf16 = mode == TB_DEC_WEIGHTS_BF16 ||
             (mode == TB_DEC_WEIGHTS_AUTO && exact);
  dw->bytes = total * (dw->bf16 ? sizeof(uint16_t) : sizeof(float));
  if (!dw->bf16) {
    for (size_t l = 0; l < L; l++) {
      mats_t mt;
      layer_mats(&mt, w, l);
      dw->layers[l] = (tb__dec_layer_t){ mt.m[0], mt.m[1], mt.m[2], mt.m[3] };
    }
    dw->head = w->lm_head;
    return 0;
  }
  dw->copy = tb__big_alloc(total * sizeof(uint16_t));
  if (dw->copy == NULL) {
    tb__dec_weights_free(dw);
    return TB_ENOMEM;
  }
  dw->copy_len = total;
  uint16_t *p = dw->copy;
  for (size_t l = 0; l < L; l++) {
    mats_t mt;
    layer_mats(&mt, w, l);
    const void **dst[4] = { &dw->layers[l].qkv, &dw->layers[l].o,
                            &dw->layers[l].gate_up, &dw->layers[l].down };
    for (int i = 0; i < 4; i++) {
      tb__k_bf16_from_f32(p, mt.m[i], mt.n[i]);
      *dst[i] = p;
      p += mt.n[i];
    }
  }
  tb__k_bf16_from_f32(p, w->lm_head, VC);
  dw->head = p;
  return 0;
}

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
  size_t K[4];        /* their columns */
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
  mt->K[0] = mt->K[2] = C;
  mt->K[1] = QD;
  mt->K[3] = I;
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

/* Packs w (N, K) into bfloat16 panels at *p (its slot in the copy),
 * points *dst at them and moves *p past them. */
static void pack(uint16_t **p, const void **dst, const float *w, size_t K,
                 size_t N) {
  tb__k_pack_bf16((uint32_t *)*p, w, K, K, N);
  *dst = *p;
  *p += tb__k_packed_elems(K, N);
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
  size_t packed = tb__k_packed_elems((size_t)c->hidden_size,
                                     (size_t)c->vocab_size);
  int exact = tb__k_f32_is_bf16(w->lm_head, VC);
  for (size_t l = 0; l < L; l++) {
    mats_t mt;
    if (layer_mats(&mt, w, l) != 0) {
      tb__dec_weights_free(dw);
      return TB_EINVAL;
    }
    for (int i = 0; i < 4; i++) {
      total += mt.n[i];
      packed += tb__k_packed_elems(mt.K[i], mt.n[i] / mt.K[i]);
      if (mode == TB_DEC_WEIGHTS_AUTO && exact)
        exact = tb__k_f32_is_bf16(mt.m[i], mt.n[i]);
    }
  }
  dw->bf16 = mode == TB_DEC_WEIGHTS_BF16 ||
             (mode == TB_DEC_WEIGHTS_AUTO && exact);
  dw->bytes = dw->bf16 ? packed * sizeof(uint16_t) : total * sizeof(float);
  if (!dw->bf16) {
    for (size_t l = 0; l < L; l++) {
      mats_t mt;
      layer_mats(&mt, w, l);
      dw->layers[l] = (tb__dec_layer_t){ mt.m[0], mt.m[1], mt.m[2], mt.m[3] };
    }
    dw->head = w->lm_head;
    return 0;
  }
  dw->copy = tb__big_alloc(packed * sizeof(uint16_t));
  if (dw->copy == NULL) {
    tb__dec_weights_free(dw);
    return TB_ENOMEM;
  }
  dw->copy_len = packed;
  uint16_t *p = dw->copy;
  for (size_t l = 0; l < L; l++) {
    mats_t mt;
    layer_mats(&mt, w, l);
    const void **dst[4] = { &dw->layers[l].qkv, &dw->layers[l].o,
                            &dw->layers[l].gate_up, &dw->layers[l].down };
    for (int i = 0; i < 4; i++) {
      pack(&p, dst[i], mt.m[i], mt.K[i], mt.n[i] / mt.K[i]);
    }
  }
  pack(&p, &dw->head, w->lm_head, (size_t)c->hidden_size,
       (size_t)c->vocab_size);
  return 0;
}

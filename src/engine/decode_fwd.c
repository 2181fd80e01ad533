/*
 * The forward pass of a decode step, phase by phase (see decode_fwd.h).
 *
 * Buffers (T rows, NL logit rows): the residual x, the normed input h,
 * q|k|v, the attention output, o (the output or down projection before it
 * joins the residual), gate|up, the SwiGLU output, the groups' LoRA down
 * products xa (each group's rows, its R = members * rank columns), and
 * for the logit rows their final norm, the unembedding LoRA's xa and the
 * logits.  Rows of a group are contiguous, so a group's rows of every
 * buffer are one slice.
 */
#include "engine/decode_fwd.h"

#include <stdlib.h>
#include <string.h>

#include "engine/bigmem.h"
#include "kernels/kernels.h"
#include "tinkerbell/error.h"

/* Output columns per chunk: the layers' base products, the LoRA down
 * products (a panel of one member's rank outputs), the up products (cut
 * at the members' edges, so a chunk starts on a panel of the member's
 * packed B), the unembedding. */
#define NB 64
#define NBR TB__K_PANEL
#define NBU 64
#define NBH 512

enum {
  PH_QKV, PH_QKV_UP, PH_ROPE, PH_ATTN, PH_O, PH_O_UP, PH_NORM2, PH_GU,
  PH_GU_UP, PH_DOWN, PH_DOWN_UP, PH_NORM, PH_PER_LAYER
};

typedef struct dims_s {
  size_t C, H, KVH, D, G, QD, KVD, QKVN, I, V, L, bs;
  float eps;
} dims_t;

static void dims_of(dims_t *d, const tb__dec_fwd_t *f) {
  const tb__model_config_t *m = &f->w->config;
  d->C = (size_t)m->hidden_size;
  d->H = (size_t)m->num_heads;
  d->KVH = (size_t)m->num_kv_heads;
  d->D = (size_t)m->head_dim;
  d->G = d->H / d->KVH;
  d->QD = d->H * d->D;
  d->KVD = d->KVH * d->D;
  d->QKVN = d->QD + 2 * d->KVD;
  d->I = (size_t)m->intermediate_size;
  d->V = (size_t)m->vocab_size;
  d->L = (size_t)m->num_layers;
  d->bs = f->pool->block_tokens;
  d->eps = m->rms_norm_eps;
}

static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

static const tb__lora_slot_t *slot(const tb__dec_group_t *g, size_t l,
                                  tb__lora_target_t t) {
  if (g->lora == NULL)
    return NULL;
  const tb__lora_slot_t *s = tb__lora_slot(g->lora, (int)l, t);
  return s->on ? s : NULL;
}

static const tb__lora_slot_t *unembed(const tb__dec_group_t *g) {
  if (g->lora == NULL || g->logits == 0)
    return NULL;
  const tb__lora_slot_t *s = tb__lora_unembed(g->lora);
  return s->on ? s : NULL;
}

/* ------------------------------------------------------------ planning */

/* What one of the four product groups of a layer reads and writes. */
typedef struct prod_s {
  int group;              /* TB_LORA_GROUP_* */
  const float *in;        /* (T, K) */
  size_t K;
  float *out;             /* (T, ldo): the base product, members side by side */
  size_t ldo, N;          /* N: the base product's outputs */
  const void *W;          /* (N, K) */
} prod_t;

static void prod_of(prod_t *p, const tb__dec_fwd_t *f, const dims_t *d,
                    size_t l, int k) {
  const tb__dec_layer_t *dl = &f->dw->layers[l];
  switch (k) {
    case PH_QKV: case PH_QKV_UP:
      *p = (prod_t){ TB_LORA_GROUP_QKV, f->h, d->C, f->qkv, d->QKVN, d->QKVN,
                     dl->qkv };
      break;
    case PH_O: case PH_O_UP:
      *p = (prod_t){ TB_LORA_GROUP_O, f->att, d->QD, f->o, d->C, d->C, dl->o };
      break;
    case PH_GU: case PH_GU_UP:
      *p = (prod_t){ TB_LORA_GROUP_GATE_UP, f->h, d->C, f->gu, 2 * d->I,
                     2 * d->I, dl->gate_up };
      break;
    default:
      *p = (prod_t){ TB_LORA_GROUP_DOWN, f->act, d->I, f->o, d->C, d->C,
                     dl->down };
      break;
  }
}

/* Chunks of a group's down products x A^T: a panel of a member's rank
 * outputs each, or 0 when the group's adapter does not adapt the
 * product. */
static size_t group_chunks(const tb__dec_group_t *g, size_t l, int grp) {
  tb__lora_target_t t0 = tb__lora_groups[grp].first;
  return slot(g, l, t0) ? (size_t)tb__lora_groups[grp].count *
                              ceil_div(g->lora->rank, NBR)
                        : 0;
}

static int any_group_r(const tb__dec_fwd_t *f, size_t l, int grp) {
  for (size_t g = 0; g < f->ngroups; g++)
    if (group_chunks(&f->groups[g], l, grp) > 0)
      return 1;
  return 0;
}

/* Phase p of the layers (1 <= p <= PH_PER_LAYER * L): its layer in *l,
 * its kind returned, and for a product phase the product in *pr. */
static int layer_phase(prod_t *pr, const tb__dec_fwd_t *f, const dims_t *d,
                       size_t p, size_t *l) {
  *l = (p - 1) / PH_PER_LAYER;
  int k = (int)((p - 1) % PH_PER_LAYER);
  if (k == PH_QKV || k == PH_O || k == PH_GU || k == PH_DOWN)
    prod_of(pr, f, d, *l, k);
  return k;
}

uint32_t tb__dec_fwd_chunks(const tb__dec_fwd_t *f, size_t p) {
  dims_t d;
  dims_of(&d, f);
  size_t T = f->T, n = 0;
  if (p == 0)
    return (uint32_t)(T + tb__dec_lora_chunks(&f->lcache));
  if (p == 1 + PH_PER_LAYER * d.L || p == 2 + PH_PER_LAYER * d.L) {
    if (f->nlogits == 0)
      return 0;
    int any = 0;
    for (size_t g = 0; g < f->ngroups; g++)
      if (unembed(&f->groups[g])) {
        any = 1;
        if (p == 1 + PH_PER_LAYER * d.L)
          n += ceil_div(f->groups[g].lora->rank, NBR);
      }
    if (p == 1 + PH_PER_LAYER * d.L)
      return (uint32_t)(n + ceil_div(d.V, NBH));
    return any ? (uint32_t)ceil_div(d.V, NBH) : 0;
  }
  size_t l;
  prod_t pr;
  int k = layer_phase(&pr, f, &d, p, &l);
  switch (k) {
    case PH_QKV: case PH_O: case PH_GU: case PH_DOWN:
      n = ceil_div(pr.N, NB);
      for (size_t g = 0; g < f->ngroups; g++)
        n += group_chunks(&f->groups[g], l, pr.group);
      return (uint32_t)n;
    case PH_QKV_UP:
      return any_group_r(f, l, TB_LORA_GROUP_QKV)
                 ? (uint32_t)(ceil_div(d.QD, NBU) + 2 * ceil_div(d.KVD, NBU))
                 : 0;
    case PH_O_UP: case PH_DOWN_UP:
      return (uint32_t)ceil_div(d.C, NBU);
    case PH_GU_UP:
      return (uint32_t)ceil_div(d.I, NBU);
    case PH_ATTN:
      return (uint32_t)(T * d.KVH);
    default:  /* ROPE, NORM2, NORM */
      return (uint32_t)T;
  }
}

static int rope_reserve(tb__dec_fwd_t *f, const dims_t *d, size_t npos) {
  if (npos <= f->rope_len)
    return 0;
  const tb__model_config_t *m = &f->w->config;
  size_t half = d->D / 2, len = npos < 256 ? 256 : npos;
  if (len < 2 * f->rope_len)
    len = 2 * f->rope_len;
  float *t = malloc((2 * len + 1) * half * sizeof(float));
  if (t == NULL)
    return TB_ENOMEM;
  free(f->rope_cos);
  f->rope_cos = t;
  f->rope_sin = t + len * half;
  f->rope_len = len;
  /* As llama.c's workspace computes them, so both passes agree. */
  float *freq = t + 2 * len * half;
  tb__k_rope_inv_freq(freq, m->rope_theta, d->D);
  if (m->rope_type == TB_ROPE_LLAMA3)
    tb__k_rope_llama3(freq, m->rope_factor, m->rope_low_freq_factor,
                      m->rope_high_freq_factor,
                      (float)m->rope_original_max_position_embeddings, d->D);
  tb__k_rope_table_freq(f->rope_cos, f->rope_sin, freq, 0, len, d->D);
  return 0;
}

static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

int tb__dec_fwd_plan(tb__dec_fwd_t *f, size_t items) {
  dims_t d;
  dims_of(&d, f);
  size_t T = f->T, NL = f->nlogits, max_pos = 0, rmax = 0;
  for (size_t t = 0; t < T; t++)
    if (f->rows[t].pos > max_pos)
      max_pos = f->rows[t].pos;
  for (size_t g = 0; g < f->ngroups; g++)
    if (f->groups[g].lora && f->groups[g].lora->rank > rmax)
      rmax = f->groups[g].lora->rank;
  f->ldxa = TB_LORA_GROUP_MAX * rmax;
  f->ldxau = rmax;
  int rc = rope_reserve(f, &d, max_pos + 1);
  if (rc != 0)
    return rc;
  if (f->ngroups > f->gpk_cap) {
    const tb__dec_lora_t **g = realloc(f->gpk, f->ngroups * sizeof(*g));
    if (g == NULL)
      return TB_ENOMEM;
    f->gpk = g;
    f->gpk_cap = f->ngroups;
  }
  tb__dec_lora_begin(&f->lcache);
  for (size_t g = 0; g < f->ngroups; g++)
    if ((rc = tb__dec_lora_use(&f->lcache, f->groups[g].lora,
                               f->groups[g].key, &f->gpk[g])) != 0)
      return rc;

  size_t sizes[] = { T * d.C, T * d.C, T * d.QKVN, T * d.QD, T * d.C,
                     T * 2 * d.I, T * d.I, T * f->ldxa, NL * d.C,
                     NL * f->ldxau, NL * d.V };
  float **views[] = { &f->x, &f->h, &f->qkv, &f->att, &f->o, &f->gu,
                      &f->act, &f->xa, &f->hl, &f->xau, &f->logits };
  size_t total = 0;
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
    total += up16(sizes[i]);
  if (total > f->buf_floats) {
    tb__big_free(f->buf, f->buf_floats * sizeof(float));
    f->buf_floats = 0;
    f->buf = tb__big_alloc(total * sizeof(float));
    if (f->buf == NULL)
      return TB_ENOMEM;
    f->buf_floats = total;
  }
  float *p = f->buf;
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    *views[i] = p;
    p += up16(sizes[i]);
  }

  /* Per item: the attention's scores (G, P) and block pointers, then the
   * caller's bytes. */
  size_t nb = ceil_div(max_pos + 1, d.bs);
  size_t bytes = up16(d.G * (max_pos + 1)) * sizeof(float) +
                 2 * nb * sizeof(float *);
  bytes = (bytes + 63) & ~(size_t)63;
  bytes += (f->item_extra + 63) & ~(size_t)63;
  if (bytes * items > f->scratch_cap) {
    free(f->scratch);
    f->scratch_cap = 0;
    f->scratch = aligned_alloc(64, bytes * items);
    if (f->scratch == NULL)
      return TB_ENOMEM;
    f->scratch_cap = bytes * items;
  }
  f->scratch_bytes = bytes;
  f->items = items;
  f->max_pos = max_pos;
  f->num_phases = 3 + PH_PER_LAYER * d.L;
  return 0;
}

void *tb__dec_fwd_item_extra(const tb__dec_fwd_t *f, size_t item) {
  return f->scratch + item * f->scratch_bytes + f->scratch_bytes -
         ((f->item_extra + 63) & ~(size_t)63);
}

void tb__dec_fwd_free(tb__dec_fwd_t *f) {
  tb__big_free(f->buf, f->buf_floats * sizeof(float));
  free(f->rope_cos);
  free(f->scratch);
  free(f->gpk);
  tb__dec_lora_free(&f->lcache);
  f->buf = NULL;
  f->rope_cos = NULL;
  f->scratch = NULL;
  f->gpk = NULL;
  f->buf_floats = f->rope_len = f->scratch_cap = f->gpk_cap = 0;
}

/* ------------------------------------------------------------ chunks */

static void base_product(const tb__dec_fwd_t *f, float *y, size_t ldy,
                         const float *x, size_t ldx, const void *W, size_t T,
                         size_t K, size_t n0, size_t n1, int accumulate) {
  /* n0 is a multiple of the chunk widths, themselves of TB__K_PANEL. */
  if (f->dw->bf16)
    tb__k_rowmm_packed_bf16(y + n0, ldy, x, ldx,
                            (const uint32_t *)W + n0 * K / 2, 1.0f,
                            accumulate, T, K, n1 - n0);
  else
    tb__k_rowmm_f32(y + n0, ldy, x, ldx, (const float *)W + n0 * K, K, 1.0f,
                    accumulate, T, K, n1 - n0);
}

/* A product phase's chunk i: a slice of the base product's outputs, then
 * slices of each group's down product. */
static void product_chunk(const tb__dec_fwd_t *f, const prod_t *pr, size_t l,
                          size_t i) {
  size_t nbase = ceil_div(pr->N, NB);
  if (i < nbase) {
    size_t n0 = i * NB, n1 = n0 + NB < pr->N ? n0 + NB : pr->N;
    base_product(f, pr->out, pr->ldo, pr->in, pr->K, pr->W, f->T, pr->K, n0,
                 n1, 0);
    return;
  }
  i -= nbase;
  for (size_t g = 0; g < f->ngroups; g++) {
    const tb__dec_group_t *gr = &f->groups[g];
    size_t n = group_chunks(gr, l, pr->group);
    if (i >= n) {
      i -= n;
      continue;
    }
    /* Member j's panel q: its outputs [r0, r1) of xa's columns j r ... */
    size_t r = gr->lora->rank, per = ceil_div(r, NBR), j = i / per;
    size_t r0 = (i % per) * NBR, r1 = r0 + NBR < r ? r0 + NBR : r;
    const tb__lora_slot_t *s = slot(
        gr, l, (tb__lora_target_t)(tb__lora_groups[pr->group].first + (int)j));
    if (s == NULL)
      return;
    tb__k_rowmm_packed_f32(f->xa + gr->row0 * f->ldxa + j * r + r0, f->ldxa,
                           pr->in + gr->row0 * pr->K, pr->K,
                           tb__dec_lora_a(f->gpk[g], s) + r0 * pr->K, 1.0f, 0,
                           gr->rows, pr->K, r1 - r0);
    return;
  }
}

/* y += alpha x B^T over outputs [n0, n1) of an up product (K: the
 * adapter's rank) from B packed (dec_lora.h); n0 starts a panel. */
static void up_product(float *y, size_t ldy, const float *x, size_t ldx,
                       const float *bpk, float alpha, size_t T, size_t r,
                       size_t n0, size_t n1) {
  tb__k_rowmm_packed_f32(y + n0, ldy, x, ldx, bpk + n0 * r, alpha, 1, T, r,
                         n1 - n0);
}

/* Member j of group g (its column offset in the product's output) adds
 * scale * xa_j B^T over output columns [n0, n1) of its own. */
static void up_member(const tb__dec_fwd_t *f, const prod_t *pr, size_t g,
                      size_t l, int j, size_t off, size_t n0, size_t n1) {
  const tb__dec_group_t *gr = &f->groups[g];
  tb__lora_target_t t = (tb__lora_target_t)(tb__lora_groups[pr->group].first + j);
  const tb__lora_slot_t *s = slot(gr, l, t);
  if (s == NULL || n0 >= n1)
    return;
  size_t r = gr->lora->rank;
  up_product(pr->out + gr->row0 * pr->ldo + off, pr->ldo,
             f->xa + gr->row0 * f->ldxa + (size_t)j * r, f->ldxa,
             tb__dec_lora_b(f->gpk[g], s), gr->lora->scale, gr->rows, r, n0,
             n1);
}

static void up_chunk(tb__dec_fwd_t *f, const dims_t *d, size_t l, int k,
                     size_t i) {
  prod_t pr;
  prod_of(&pr, f, d, l, k);
  size_t T = f->T, C = d->C;
  if (k == PH_QKV_UP) {
    /* Columns [n0, n1) of member j of q|k|v. */
    const size_t off[3] = { 0, d->QD, d->QD + d->KVD };
    const size_t wid[3] = { d->QD, d->KVD, d->KVD };
    int j = 0;
    for (; j < 2 && i >= ceil_div(wid[j], NBU); j++)
      i -= ceil_div(wid[j], NBU);
    size_t n0 = i * NBU, n1 = n0 + NBU < wid[j] ? n0 + NBU : wid[j];
    for (size_t g = 0; g < f->ngroups; g++)
      up_member(f, &pr, g, l, j, off[j], n0, n1);
    return;
  }
  if (k == PH_GU_UP) {
    size_t n0 = i * NBU, n1 = n0 + NBU < d->I ? n0 + NBU : d->I;
    for (size_t g = 0; g < f->ngroups; g++) {
      up_member(f, &pr, g, l, 0, 0, n0, n1);
      up_member(f, &pr, g, l, 1, d->I, n0, n1);
    }
    for (size_t t = 0; t < T; t++)
      tb__k_swiglu_forward(f->act + t * d->I + n0, f->gu + t * 2 * d->I + n0,
                           f->gu + t * 2 * d->I + d->I + n0, n1 - n0);
    return;
  }
  /* O_UP and DOWN_UP: the adapters' share, then into the residual. */
  size_t n0 = i * NBU, n1 = n0 + NBU < C ? n0 + NBU : C;
  for (size_t g = 0; g < f->ngroups; g++)
    up_member(f, &pr, g, l, 0, 0, n0, n1);
  for (size_t t = 0; t < T; t++) {
    float *x = f->x + t * C;
    const float *o = f->o + t * C;
    for (size_t n = n0; n < n1; n++)
      x[n] += o[n];
  }
}

static void rope_row(tb__dec_fwd_t *f, const dims_t *d, size_t l, size_t t) {
  const tb__layer_weights_t *lw = &f->w->layers[l];
  const tb__dec_row_t *row = &f->rows[t];
  float *q = f->qkv + t * d->QKVN, *k = q + d->QD, *v = k + d->KVD;
  if (lw->bq != NULL) {
    tb__k_bias_forward(q, lw->bq, 1, d->QD);
    tb__k_bias_forward(k, lw->bk, 1, d->KVD);
    tb__k_bias_forward(v, lw->bv, 1, d->KVD);
  }
  if (lw->q_norm != NULL) {
    tb__k_rmsnorm_forward(q, NULL, q, lw->q_norm, d->eps, d->H, d->D);
    tb__k_rmsnorm_forward(k, NULL, k, lw->k_norm, d->eps, d->KVH, d->D);
  }
  size_t half = d->D / 2;
  const float *cs = f->rope_cos + row->pos * half;
  const float *sn = f->rope_sin + row->pos * half;
  tb__k_rope_forward(q, q, cs, sn, 1, d->H, d->D);
  tb__k_rope_forward(k, k, cs, sn, 1, d->KVH, d->D);
  float *blk = tb__kv_block(f->pool, row->table[row->pos / d->bs]);
  size_t at = (row->pos % d->bs) * d->KVD;
  memcpy(blk + (2 * l) * d->bs * d->KVD + at, k, d->KVD * sizeof(float));
  memcpy(blk + (2 * l + 1) * d->bs * d->KVD + at, v, d->KVD * sizeof(float));
}

static void attn_chunk(tb__dec_fwd_t *f, const dims_t *d, size_t l, size_t i,
                       size_t item) {
  size_t t = i / d->KVH, h = i % d->KVH;
  const tb__dec_row_t *row = &f->rows[t];
  size_t P = row->pos + 1, nb = ceil_div(P, d->bs);
  char *s = f->scratch + item * f->scratch_bytes;
  float *scores = (float *)s;
  const float **kp =
      (const float **)(s + up16(d->G * (f->max_pos + 1)) * sizeof(float));
  const float **vp = kp + nb;
  size_t part = d->bs * d->KVD;
  for (size_t b = 0; b < nb; b++) {
    const float *blk = tb__kv_block(f->pool, row->table[b]);
    kp[b] = blk + (2 * l) * part + h * d->D;
    vp[b] = blk + (2 * l + 1) * part + h * d->D;
  }
  tb__k_attention_paged(f->att + t * d->QD + h * d->G * d->D, scores,
                        f->qkv + t * d->QKVN + h * d->G * d->D, kp, vp, d->bs,
                        d->KVD, P, d->G, 1, d->D);
}

static void norm_row(tb__dec_fwd_t *f, const dims_t *d, size_t l, size_t t) {
  if (l + 1 < d->L) {
    tb__k_rmsnorm_forward(f->h + t * d->C, NULL, f->x + t * d->C,
                          f->w->layers[l + 1].attn_norm, d->eps, 1, d->C);
  } else if (f->rows[t].logit >= 0) {
    tb__k_rmsnorm_forward(f->hl + (size_t)f->rows[t].logit * d->C, NULL,
                          f->x + t * d->C, f->w->final_norm, d->eps, 1, d->C);
  }
}

static void head_chunk(tb__dec_fwd_t *f, const dims_t *d, size_t i, int up) {
  size_t nv = ceil_div(d->V, NBH), NL = f->nlogits;
  if (up) {
    size_t n0 = i * NBH, n1 = n0 + NBH < d->V ? n0 + NBH : d->V;
    for (size_t g = 0; g < f->ngroups; g++) {
      const tb__dec_group_t *gr = &f->groups[g];
      const tb__lora_slot_t *s = unembed(gr);
      if (s == NULL)
        continue;
      up_product(f->logits + gr->logit0 * d->V, d->V,
                 f->xau + gr->logit0 * f->ldxau, f->ldxau,
                 tb__dec_lora_b(f->gpk[g], s), gr->lora->scale, gr->logits,
                 gr->lora->rank, n0, n1);
    }
    return;
  }
  if (i < nv) {
    size_t n0 = i * NBH, n1 = n0 + NBH < d->V ? n0 + NBH : d->V;
    base_product(f, f->logits, d->V, f->hl, d->C, f->dw->head, NL, d->C, n0,
                 n1, 0);
    return;
  }
  i -= nv;
  for (size_t g = 0; g < f->ngroups; g++) {
    const tb__dec_group_t *gr = &f->groups[g];
    const tb__lora_slot_t *s = unembed(gr);
    size_t r = s ? gr->lora->rank : 0, n = ceil_div(r, NBR);
    if (i >= n) {
      i -= n;
      continue;
    }
    size_t r0 = i * NBR, r1 = r0 + NBR < r ? r0 + NBR : r;
    tb__k_rowmm_packed_f32(f->xau + gr->logit0 * f->ldxau + r0, f->ldxau,
                           f->hl + gr->logit0 * d->C, d->C,
                           tb__dec_lora_a(f->gpk[g], s) + r0 * d->C, 1.0f, 0,
                           gr->logits, d->C, r1 - r0);
    return;
  }
}

void tb__dec_fwd_chunk(tb__dec_fwd_t *f, size_t p, size_t i, size_t item) {
  dims_t d;
  dims_of(&d, f);
  if (p == 0 && i >= f->T) {
    tb__dec_lora_pack(&f->lcache, i - f->T);
    return;
  }
  if (p == 0) {
    const tb__dec_row_t *row = &f->rows[i];
    tb__k_embedding_forward(f->x + i * d.C, &row->token, f->w->embed, 1, d.C);
    tb__k_rmsnorm_forward(f->h + i * d.C, NULL, f->x + i * d.C,
                          f->w->layers[0].attn_norm, d.eps, 1, d.C);
    return;
  }
  if (p >= 1 + PH_PER_LAYER * d.L) {
    head_chunk(f, &d, i, p == 2 + PH_PER_LAYER * d.L);
    return;
  }
  size_t l;
  prod_t pr;
  int k = layer_phase(&pr, f, &d, p, &l);
  switch (k) {
    case PH_QKV: case PH_O: case PH_GU: case PH_DOWN:
      product_chunk(f, &pr, l, i);
      break;
    case PH_QKV_UP: case PH_O_UP: case PH_GU_UP: case PH_DOWN_UP:
      up_chunk(f, &d, l, k, i);
      break;
    case PH_ROPE:
      rope_row(f, &d, l, i);
      break;
    case PH_ATTN:
      attn_chunk(f, &d, l, i, item);
      break;
    case PH_NORM2:
      tb__k_rmsnorm_forward(f->h + i * d.C, NULL, f->x + i * d.C,
                            f->w->layers[l].mlp_norm, d.eps, 1, d.C);
      break;
    default:
      norm_row(f, &d, l, i);
      break;
  }
}

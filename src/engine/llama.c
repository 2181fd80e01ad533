/*
 * The Llama-family decoder (Llama, Qwen2, Qwen3) with LoRA, composed from
 * kernels/ (see llama.h).  The losses' names and the checks of a batch
 * are in batch.c.
 *
 * One forward pass (run_forward) serves training, evaluation and sampling:
 * the rows of a call are split into sequences, each with a start position
 * and optionally a KV cache it continues.  Training packs every datum as a
 * sequence starting at 0 without a cache; a prefill is one sequence that
 * fills a cache; a decode step is one single-row sequence per sample.
 *
 * Activations for the backward pass are kept per layer in one contiguous
 * block (point_layer lays it out), so layer l's views are the same walk
 * over base + l * stride.  To save memory the normalised inputs of the
 * projections and the SwiGLU output are not kept.  The backward needs the
 * former only for the adapters' dA, which it takes through the norm from
 * the residual stream and the stored rstd (tb__k_lora_da_normed); the
 * latter comes back with the SwiGLU gradient's pass.  A forward without
 * backward keeps a single layer block and two residual buffers.
 *
 * The families differ in three places (weights.h): Qwen2's q, k and v
 * add frozen biases after their products; Qwen3 normalises every head of
 * q and k (RMSNorm over head_dim) before rotary, and then keeps the raw
 * projections with the norms' rstd and makes the normalised, rotated heads
 * again in the backward pass, into one scratch that then takes their
 * gradient; Llama 3 rescales the rotary frequencies (rope_reserve).  The
 * LoRA gradients flow through all three like any other frozen op.
 */
#include "engine/llama.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/bigmem.h"
#include "kernels/kernels.h"
#include "tinkerbell/error.h"

/* ------------------------------------------------------------ workspace */

typedef struct seq_s {
  size_t row0, len, pos0;
  tb__kv_cache_t *cache;  /* NULL: attend to the call's own keys */
} seq_t;

struct tb__llama_ws_s {
  float *acts;
  size_t acts_cap;
  int32_t *ints;
  size_t ints_cap;
  seq_t *seqs;
  size_t seqs_cap;
  /* RoPE tables for positions 0 .. rope_len-1, reused across calls, and
   * the config they were made for (its rope fields and head_dim). */
  float *rope_cos, *rope_sin;
  size_t rope_len;
  tb__model_config_t rope_for;
};

int tb__llama_ws_new(tb__llama_ws_t **out) {
  *out = calloc(1, sizeof(**out));
  return *out ? 0 : TB_ENOMEM;
}

void tb__llama_ws_trim(tb__llama_ws_t *ws) {
  tb__big_free(ws->acts, ws->acts_cap * sizeof(float));
  free(ws->ints);
  free(ws->seqs);
  free(ws->rope_cos);
  memset(ws, 0, sizeof(*ws));
}

void tb__llama_ws_free(tb__llama_ws_t *ws) {
  if (ws == NULL)
    return;
  tb__llama_ws_trim(ws);
  free(ws);
}

static int grow(void **p, size_t *cap, size_t n, size_t elem) {
  if (n <= *cap)
    return 0;
  void *q = realloc(*p, n * elem);
  if (q == NULL)
    return TB_ENOMEM;
  *p = q;
  *cap = n;
  return 0;
}

static int same_rope(const tb__model_config_t *a, const tb__model_config_t *b) {
  return a->head_dim == b->head_dim && a->rope_theta == b->rope_theta &&
         a->rope_type == b->rope_type && a->rope_factor == b->rope_factor &&
         a->rope_low_freq_factor == b->rope_low_freq_factor &&
         a->rope_high_freq_factor == b->rope_high_freq_factor &&
         a->rope_original_max_position_embeddings ==
             b->rope_original_max_position_embeddings;
}

static int rope_reserve(tb__llama_ws_t *ws, const tb__model_config_t *m,
                        size_t npos) {
  size_t half = (size_t)m->head_dim / 2;
  int same = ws->rope_cos != NULL && same_rope(&ws->rope_for, m);
  if (same && npos <= ws->rope_len)
    return 0;
  size_t len = npos < 64 ? 64 : npos;
  if (same && len < 2 * ws->rope_len)
    len = 2 * ws->rope_len;  /* decoding grows one position at a time */
  /* The frequencies sit after the two tables. */
  float *t = malloc((2 * len + 1) * half * sizeof(float));
  if (t == NULL)
    return TB_ENOMEM;
  free(ws->rope_cos);
  ws->rope_cos = t;
  ws->rope_sin = t + len * half;
  ws->rope_len = len;
  ws->rope_for = *m;
  float *freq = t + 2 * len * half;
  tb__k_rope_inv_freq(freq, m->rope_theta, (size_t)m->head_dim);
  if (m->rope_type == TB_ROPE_LLAMA3)
    tb__k_rope_llama3(freq, m->rope_factor, m->rope_low_freq_factor,
                      m->rope_high_freq_factor,
                      (float)m->rope_original_max_position_embeddings,
                      (size_t)m->head_dim);
  tb__k_rope_table_freq(ws->rope_cos, ws->rope_sin, freq, 0, len,
                        (size_t)m->head_dim);
  return 0;
}

/* ------------------------------------------------------------ layout */

typedef struct dims_s {
  size_t C, H, KVH, D, QD, KVD, I, V, L, r;
  float eps;
  int qk_norm;
} dims_t;

static void dims_init(dims_t *d, const tb__model_config_t *m,
                      const tb__lora_t *lora) {
  d->C = (size_t)m->hidden_size;
  d->H = (size_t)m->num_heads;
  d->KVH = (size_t)m->num_kv_heads;
  d->D = (size_t)m->head_dim;
  d->QD = d->H * d->D;
  d->KVD = d->KVH * d->D;
  d->I = (size_t)m->intermediate_size;
  d->V = (size_t)m->vocab_size;
  d->L = (size_t)m->num_layers;
  d->r = lora ? lora->rank : 0;
  d->eps = m->rms_norm_eps;
  d->qk_norm = m->qk_norm;
}

/* A bump pointer over the activation buffer; with base NULL it only
 * counts, which is how the buffer's size is found. */
typedef struct bump_s {
  float *base;
  size_t used;
} bump_t;

static float *take(bump_t *b, size_t n) {
  float *p = b->base ? b->base + b->used : NULL;
  b->used += (n + 15) & ~(size_t)15;  /* 64-byte aligned views */
  return p;
}

/* What one layer keeps for its backward pass. */
typedef struct layer_acts_s {
  float *rstd1;    /* (T) */
  float *q;        /* (T, QD) after RoPE; with qk_norm, before the norm */
  float *k;        /* (T, KVD) after RoPE; with qk_norm, before the norm */
  float *rstd_q;   /* (T, H) qk_norm only */
  float *rstd_k;   /* (T, KVH) qk_norm only */
  float *v;        /* (T, KVD) */
  float *att;      /* (T, QD) attention output */
  float *lse;      /* (T, H) */
  float *res_mid;  /* (T, C) residual after attention */
  float *rstd2;    /* (T) */
  float *gate;     /* (T, I) */
  float *up;       /* (T, I) */
  /* (T, r) each, NULL when not adapted: column slices of one (T, R) block
   * per LoRA group, R = members * r, so rows are xa_ld[t] floats apart. */
  float *xa[TB_LORA_LAYER_TARGETS];
  size_t xa_ld[TB_LORA_LAYER_TARGETS];
} layer_acts_t;

static void point_layer(layer_acts_t *a, bump_t *b, const dims_t *d,
                        const tb__lora_t *lora, int layer, size_t T) {
  a->rstd1 = take(b, T);
  a->q = take(b, T * d->QD);
  a->k = take(b, T * d->KVD);
  a->rstd_q = d->qk_norm ? take(b, T * d->H) : NULL;
  a->rstd_k = d->qk_norm ? take(b, T * d->KVH) : NULL;
  a->v = take(b, T * d->KVD);
  a->att = take(b, T * d->QD);
  a->lse = take(b, T * d->H);
  a->res_mid = take(b, T * d->C);
  a->rstd2 = take(b, T);
  a->gate = take(b, T * d->I);
  a->up = take(b, T * d->I);
  for (int g = 0; g < TB_LORA_LAYER_GROUPS; g++) {
    int t0 = (int)tb__lora_groups[g].first, n = tb__lora_groups[g].count;
    int on = lora && tb__lora_slot(lora, layer, (tb__lora_target_t)t0)->on;
    size_t R = (size_t)n * d->r;
    float *block = on ? take(b, T * R) : NULL;
    for (int j = 0; j < n; j++) {
      a->xa[t0 + j] = block ? block + (size_t)j * d->r : NULL;
      a->xa_ld[t0 + j] = R;
    }
  }
}

/* Everything of one call besides the per-layer blocks. */
typedef struct acts_s {
  size_t T, nres, nlayer, layer_stride;
  float *res;      /* (nres, T, C) residual stream */
  float *layers;   /* nlayer blocks of layer_stride floats */
  float *h;        /* (T, C) normalised input of a projection */
  float *act;      /* (T, I) SwiGLU output */
  float *hf;       /* (T, C) final norm output */
  float *qn, *kn;  /* (T, QD), (T, KVD) qk_norm only: q, k normed, rotated */
  float *rstdf;    /* (T) */
  float *xa_u;     /* (T, r) unembedding LoRA */
  float *logits;   /* (R, V) */
  float *lse_blk;  /* (R) */
  float *coef;     /* (R, K) */
  float *att_scratch;
  /* packed loss inputs and outputs */
  float *weights;  /* (T, K) */
  float *lp_samp;  /* (T) */
  float *adv;      /* (T) */
  float *lp;       /* (T, K) */
  /* backward only */
  float *dres, *dh, *dq, *dk, *dv, *datt, *dgate, *dup, *dact;
  float *lora_scratch;  /* (T, TB_LORA_GROUP_MAX * r): a group's dxa */
  float *lora_da;       /* (TB_LORA_GROUP_MAX * r, C): a group's dA */
} acts_t;

static void point_acts(acts_t *a, bump_t *b, const dims_t *d,
                       const tb__lora_t *lora, size_t T, size_t K,
                       size_t max_keys, int backward) {
  /* A block of the unembedding never has more rows than the call. */
  const size_t R = T < TB__LLAMA_LOGIT_ROWS ? T : TB__LLAMA_LOGIT_ROWS;
  a->T = T;
  a->nres = backward ? d->L + 1 : 2;
  a->nlayer = backward ? d->L : 1;
  /* Every layer adapts the same targets, so all blocks have one size. */
  bump_t lb = { NULL, 0 };
  layer_acts_t tmp;
  point_layer(&tmp, &lb, d, lora, 0, T);
  a->layer_stride = lb.used;
  a->res = take(b, a->nres * T * d->C);
  a->layers = take(b, a->nlayer * a->layer_stride);
  a->h = take(b, T * d->C);
  a->act = take(b, T * d->I);
  a->hf = take(b, T * d->C);
  a->qn = d->qk_norm ? take(b, T * d->QD) : NULL;
  a->kn = d->qk_norm ? take(b, T * d->KVD) : NULL;
  a->rstdf = take(b, T);
  a->xa_u = take(b, T * d->r);
  a->logits = take(b, R * d->V);
  a->lse_blk = take(b, R);
  a->coef = take(b, R * K);
  a->att_scratch =
      take(b, tb__k_attention_scratch_floats(max_keys, d->H, d->KVH, d->D));
  a->weights = take(b, T * K);
  a->lp_samp = take(b, T);
  a->adv = take(b, T);
  a->lp = take(b, T * K);
  if (backward) {
    a->dres = take(b, T * d->C);
    a->dh = take(b, T * d->C);
    a->dq = take(b, T * d->QD);
    a->dk = take(b, T * d->KVD);
    a->dv = take(b, T * d->KVD);
    a->datt = take(b, T * d->QD);
    a->dgate = take(b, T * d->I);
    a->dup = take(b, T * d->I);
    a->dact = take(b, T * d->I);
    a->lora_scratch = take(b, T * TB_LORA_GROUP_MAX * d->r);
    a->lora_da = take(b, TB_LORA_GROUP_MAX * d->r * d->C);
  } else {
    a->dres = a->dh = a->dq = a->dk = a->dv = a->datt = NULL;
    a->dgate = a->dup = a->dact = a->lora_scratch = a->lora_da = NULL;
  }
}

static int acts_reserve(tb__llama_ws_t *ws, acts_t *a, const dims_t *d,
                        const tb__lora_t *lora, size_t T, size_t K,
                        size_t max_keys, int backward) {
  bump_t b = { NULL, 0 };
  point_acts(a, &b, d, lora, T, K, max_keys, backward);
  if (b.used > ws->acts_cap) {
    /* Nothing in the buffer outlives a call, so it is replaced, not
     * reallocated. */
    tb__big_free(ws->acts, ws->acts_cap * sizeof(float));
    ws->acts_cap = 0;
    ws->acts = tb__big_alloc(b.used * sizeof(float));
    if (ws->acts == NULL)
      return TB_ENOMEM;
    ws->acts_cap = b.used;
  }
  b.base = ws->acts;
  b.used = 0;
  point_acts(a, &b, d, lora, T, K, max_keys, backward);
  return 0;
}

static void layer_view(layer_acts_t *la, const acts_t *a, const dims_t *d,
                       const tb__lora_t *lora, size_t l) {
  size_t slot = a->nlayer == 1 ? 0 : l;
  bump_t b = { a->layers + slot * a->layer_stride, 0 };
  point_layer(la, &b, d, lora, (int)l, a->T);
}

static float *res_at(const acts_t *a, const dims_t *d, size_t l) {
  return a->res + (a->nres == 2 ? l % 2 : l) * a->T * d->C;
}

/* ------------------------------------------------------------ forward */

static const tb__lora_slot_t *slot_of(const tb__lora_t *lora, size_t l, int t) {
  return lora ? tb__lora_slot(lora, (int)l, (tb__lora_target_t)t) : NULL;
}

/* xa = x A^T for every adapter of group g at once (their As are one
 * block), before the group's linears. */
static void adapt_down(const layer_acts_t *la, const float *x,
                       const tb__lora_t *lora, size_t l, int g, size_t T,
                       size_t K) {
  tb__lora_target_t t0 = tb__lora_groups[g].first;
  const tb__lora_slot_t *s = slot_of(lora, l, t0);
  if (s && s->on)
    tb__k_lora_down(la->xa[t0], x, lora->params + s->a_off, T, K,
                    la->xa_ld[t0]);
}

/* y (+)= x W^T, plus the adapter's up product when target t is adapted.
 * W is layer l's matrix of target t in w. */
static void linear(float *y, const float *x, const tb__weights_t *w,
                   const float *W, const layer_acts_t *la,
                   const tb__lora_t *lora, size_t l, int t, int accumulate,
                   size_t T, size_t K, size_t N) {
  tb__packed_forward(w->packed, tb__weights_slot(l, (tb__lora_target_t)t), y,
                     x, W, accumulate, T, K, N);
  const tb__lora_slot_t *s = slot_of(lora, l, t);
  if (s && s->on)
    tb__k_lora_up(y, la->xa[t], la->xa_ld[t], lora->params + s->b_off,
                  lora->scale, T, N, lora->rank);
}

static void layer_forward(tb__llama_ws_t *ws, const acts_t *a, const dims_t *d,
                          const tb__weights_t *w, const tb__lora_t *lora,
                          size_t l, const seq_t *seqs, size_t nseq) {
  const tb__layer_weights_t *lw = &w->layers[l];
  layer_acts_t la;
  layer_view(&la, a, d, lora, l);
  const float *x = res_at(a, d, l);
  float *x_out = res_at(a, d, l + 1);
  size_t T = a->T, half = d->D / 2;

  tb__k_rmsnorm_forward(a->h, la.rstd1, x, lw->attn_norm, d->eps, T, d->C);
  adapt_down(&la, a->h, lora, l, TB_LORA_GROUP_QKV, T, d->C);
  linear(la.q, a->h, w, lw->wq, &la, lora, l, TB_LORA_Q, 0, T, d->C, d->QD);
  linear(la.k, a->h, w, lw->wk, &la, lora, l, TB_LORA_K, 0, T, d->C, d->KVD);
  linear(la.v, a->h, w, lw->wv, &la, lora, l, TB_LORA_V, 0, T, d->C, d->KVD);
  if (lw->bq != NULL) {
    tb__k_bias_forward(la.q, lw->bq, T, d->QD);
    tb__k_bias_forward(la.k, lw->bk, T, d->KVD);
    tb__k_bias_forward(la.v, lw->bv, T, d->KVD);
  }
  /* With qk_norm the raw projections stay for the backward pass, and the
   * heads are normalised (and then rotated) into scratch. */
  float *qs = la.q, *ks = la.k;
  if (d->qk_norm) {
    qs = a->qn;
    ks = a->kn;
    tb__k_rmsnorm_forward(qs, la.rstd_q, la.q, lw->q_norm, d->eps, T * d->H,
                          d->D);
    tb__k_rmsnorm_forward(ks, la.rstd_k, la.k, lw->k_norm, d->eps,
                          T * d->KVH, d->D);
  }
  for (size_t s = 0; s < nseq; s++) {
    const seq_t *sq = &seqs[s];
    const float *cs = ws->rope_cos + sq->pos0 * half;
    const float *sn = ws->rope_sin + sq->pos0 * half;
    float *q = qs + sq->row0 * d->QD, *k = ks + sq->row0 * d->KVD;
    const float *v = la.v + sq->row0 * d->KVD;
    tb__k_rope_forward(q, q, cs, sn, sq->len, d->H, d->D);
    tb__k_rope_forward(k, k, cs, sn, sq->len, d->KVH, d->D);
    const float *keys = k, *vals = v;
    if (sq->cache) {
      size_t base = l * sq->cache->cap * d->KVD;
      float *kc = sq->cache->k + base, *vc = sq->cache->v + base;
      memcpy(kc + sq->pos0 * d->KVD, k, sq->len * d->KVD * sizeof(float));
      memcpy(vc + sq->pos0 * d->KVD, v, sq->len * d->KVD * sizeof(float));
      keys = kc;
      vals = vc;
    }
    tb__k_attention_forward(la.att + sq->row0 * d->QD, la.lse + sq->row0 * d->H,
                            a->att_scratch, q, keys, vals, sq->len,
                            sq->cache ? sq->pos0 : 0, d->H, d->KVH, d->D);
  }
  memcpy(la.res_mid, x, T * d->C * sizeof(float));
  adapt_down(&la, la.att, lora, l, TB_LORA_GROUP_O, T, d->QD);
  linear(la.res_mid, la.att, w, lw->wo, &la, lora, l, TB_LORA_O, 1, T, d->QD,
         d->C);

  tb__k_rmsnorm_forward(a->h, la.rstd2, la.res_mid, lw->mlp_norm, d->eps, T, d->C);
  adapt_down(&la, a->h, lora, l, TB_LORA_GROUP_GATE_UP, T, d->C);
  linear(la.gate, a->h, w, lw->w_gate, &la, lora, l, TB_LORA_GATE, 0, T, d->C,
         d->I);
  linear(la.up, a->h, w, lw->w_up, &la, lora, l, TB_LORA_UP, 0, T, d->C, d->I);
  tb__k_swiglu_forward(a->act, la.gate, la.up, T * d->I);
  memcpy(x_out, la.res_mid, T * d->C * sizeof(float));
  adapt_down(&la, a->act, lora, l, TB_LORA_GROUP_DOWN, T, d->I);
  linear(x_out, a->act, w, lw->w_down, &la, lora, l, TB_LORA_DOWN, 1, T, d->I,
         d->C);
}

/* Embedding, every layer and the final norm: a->hf holds the result. */
static void run_forward(tb__llama_ws_t *ws, const acts_t *a, const dims_t *d,
                        const tb__weights_t *w, const tb__lora_t *lora,
                        const int32_t *tokens, const seq_t *seqs, size_t nseq) {
  tb__k_embedding_forward(res_at(a, d, 0), tokens, w->embed, a->T, d->C);
  for (size_t l = 0; l < d->L; l++)
    layer_forward(ws, a, d, w, lora, l, seqs, nseq);
  tb__k_rmsnorm_forward(a->hf, a->rstdf, res_at(a, d, d->L), w->final_norm,
                        d->eps, a->T, d->C);
}

/* logits = h lm_head^T (+ adapter), rows [t0, t0 + n) of the call. */
static void head(float *logits, const acts_t *a, const dims_t *d,
                 const tb__weights_t *w, const tb__lora_t *lora,
                 const float *h, size_t t0, size_t n) {
  const tb__lora_slot_t *u = lora ? tb__lora_unembed(lora) : NULL;
  tb__packed_forward(w->packed, tb__weights_head_slot(&w->config), logits,
                     h + t0 * d->C, w->lm_head, 0, n, d->C, d->V);
  if (u && u->on)
    tb__k_lora_forward(logits, a->xa_u + t0 * d->r, h + t0 * d->C,
                       lora->params + u->a_off, lora->params + u->b_off,
                       lora->scale, n, d->C, d->V, lora->rank);
}

/* ------------------------------------------------------------ backward */

/* The adapters of group g, whose member j had output gradient dys[j] and
 * input x: each member's dB and its slice of dxa (left in lora_scratch),
 * then one dA and one dx (accumulated) for the whole group.  With x NULL
 * the dA waits for adapt_backward_da. */
static void adapt_backward(float *dx, float *grads, const acts_t *a,
                           const layer_acts_t *la, const tb__lora_t *lora,
                           size_t l, int g, const float *const *dys,
                           const float *x, size_t T, size_t K) {
  tb__lora_target_t t0 = tb__lora_groups[g].first;
  const tb__lora_slot_t *s0 = slot_of(lora, l, t0);
  if (!s0->on)
    return;
  size_t r = lora->rank, R = la->xa_ld[t0];
  for (int j = 0; j < tb__lora_groups[g].count; j++) {
    const tb__lora_slot_t *s = slot_of(lora, l, (int)t0 + j);
    tb__k_lora_up_backward(a->lora_scratch + (size_t)j * r, grads + s->b_off,
                           dys[j], la->xa[t0 + j], R, lora->params + s->b_off,
                           lora->scale, T, s->out, r);
  }
  tb__k_lora_down_backward(dx, x ? grads + s0->a_off : NULL, a->lora_scratch,
                           x, lora->params + s0->a_off, T, K, R);
}

/* The dA of a group whose input is an RMSNorm's output, which the backward
 * does not keep: from the norm's input x, its rstd and weight w. */
static void adapt_backward_da_normed(float *grads, const acts_t *a,
                                     const layer_acts_t *la,
                                     const tb__lora_t *lora, size_t l, int g,
                                     const float *x, const float *rstd,
                                     const float *w, size_t T, size_t K) {
  tb__lora_target_t t0 = tb__lora_groups[g].first;
  const tb__lora_slot_t *s0 = slot_of(lora, l, t0);
  if (s0->on)
    tb__k_lora_da_normed(grads + s0->a_off, a->lora_da, a->lora_scratch, x,
                         rstd, w, T, K, la->xa_ld[t0]);
}

/* The dA that adapt_backward left for later, once x exists. */
static void adapt_backward_da(float *grads, const acts_t *a,
                              const layer_acts_t *la, const tb__lora_t *lora,
                              size_t l, int g, const float *x, size_t T,
                              size_t K) {
  tb__lora_target_t t0 = tb__lora_groups[g].first;
  const tb__lora_slot_t *s0 = slot_of(lora, l, t0);
  if (s0->on)
    tb__k_lora_down_backward(NULL, grads + s0->a_off, a->lora_scratch, x,
                             lora->params + s0->a_off, T, K, la->xa_ld[t0]);
}

/* On entry a->dres holds d(loss)/d(layer output); on return d/d(input),
 * except for layer 0, whose input gradient nothing needs. */
static void layer_backward(const tb__llama_ws_t *ws, const acts_t *a,
                           const dims_t *d,
                           const tb__weights_t *w, const tb__lora_t *lora,
                           float *grads, size_t l, const seq_t *seqs,
                           size_t nseq) {
  const tb__layer_weights_t *lw = &w->layers[l];
  layer_acts_t la;
  layer_view(&la, a, d, lora, l);
  const float *x = res_at(a, d, l);
  size_t T = a->T, C = d->C, I = d->I;
  float *dres = a->dres;

  /* MLP: the SwiGLU output comes back with the SwiGLU gradient, just in
   * time for the down adapter's dA; the normalised inputs are not needed
   * (adapt_backward_da_normed). */
  tb__packed_backward_input(w->packed, tb__weights_slot(l, TB_LORA_DOWN),
                            a->dact, dres, lw->w_down, 0, T, I, C);
  const float *dy_down[] = { dres };
  adapt_backward(a->dact, grads, a, &la, lora, l, TB_LORA_GROUP_DOWN, dy_down,
                 NULL, T, I);
  tb__k_swiglu_backward(a->act, a->dgate, a->dup, a->dact, la.gate, la.up,
                        T * I);
  adapt_backward_da(grads, a, &la, lora, l, TB_LORA_GROUP_DOWN, a->act, T, I);
  tb__packed_backward_input(w->packed, tb__weights_slot(l, TB_LORA_GATE),
                            a->dh, a->dgate, lw->w_gate, 0, T, C, I);
  tb__packed_backward_input(w->packed, tb__weights_slot(l, TB_LORA_UP), a->dh,
                            a->dup, lw->w_up, 1, T, C, I);
  const float *dy_gate_up[] = { a->dgate, a->dup };
  adapt_backward(a->dh, grads, a, &la, lora, l, TB_LORA_GROUP_GATE_UP,
                 dy_gate_up, NULL, T, C);
  adapt_backward_da_normed(grads, a, &la, lora, l, TB_LORA_GROUP_GATE_UP,
                           la.res_mid, la.rstd2, lw->mlp_norm, T, C);
  tb__k_rmsnorm_backward(dres, NULL, a->dh, la.res_mid, lw->mlp_norm, la.rstd2,
                         T, C);

  /* Attention. */
  tb__packed_backward_input(w->packed, tb__weights_slot(l, TB_LORA_O),
                            a->datt, dres, lw->wo, 0, T, d->QD, C);
  const float *dy_o[] = { dres };
  adapt_backward(a->datt, grads, a, &la, lora, l, TB_LORA_GROUP_O, dy_o, la.att,
                 T, d->QD);
  tb__k_zero(a->dq, T * d->QD);
  tb__k_zero(a->dk, T * d->KVD);
  tb__k_zero(a->dv, T * d->KVD);
  /* With qk_norm the attention saw the normalised, rotated heads, which
   * the forward did not keep: they are made again (cheap, row-wise). */
  const float *qs = la.q, *ks = la.k;
  if (d->qk_norm) {
    tb__k_rmsnorm_forward(a->qn, NULL, la.q, lw->q_norm, d->eps, T * d->H,
                          d->D);
    tb__k_rmsnorm_forward(a->kn, NULL, la.k, lw->k_norm, d->eps, T * d->KVH,
                          d->D);
    for (size_t s = 0; s < nseq; s++) {
      size_t r0 = seqs[s].row0, n = seqs[s].len;
      tb__k_rope_forward(a->qn + r0 * d->QD, a->qn + r0 * d->QD, ws->rope_cos,
                         ws->rope_sin, n, d->H, d->D);
      tb__k_rope_forward(a->kn + r0 * d->KVD, a->kn + r0 * d->KVD,
                         ws->rope_cos, ws->rope_sin, n, d->KVH, d->D);
    }
    qs = a->qn;
    ks = a->kn;
  }
  for (size_t s = 0; s < nseq; s++) {
    size_t r0 = seqs[s].row0, n = seqs[s].len;
    float *dq = a->dq + r0 * d->QD, *dk = a->dk + r0 * d->KVD;
    tb__k_attention_backward(dq, dk, a->dv + r0 * d->KVD, a->att_scratch,
                             a->datt + r0 * d->QD, qs + r0 * d->QD,
                             ks + r0 * d->KVD, la.v + r0 * d->KVD,
                             la.att + r0 * d->QD, la.lse + r0 * d->H, n, d->H,
                             d->KVH, d->D);
    /* The training rows of a sequence sit at positions 0 .. n-1. */
    tb__k_rope_backward(dq, dq, ws->rope_cos, ws->rope_sin, n, d->H, d->D);
    tb__k_rope_backward(dk, dk, ws->rope_cos, ws->rope_sin, n, d->KVH, d->D);
  }
  /* Through the head norms: the gradient of the raw projections goes to
   * the scratch that held the normalised heads, now free. */
  float *dq = a->dq, *dk = a->dk;
  if (d->qk_norm) {
    tb__k_zero(a->qn, T * d->QD);
    tb__k_zero(a->kn, T * d->KVD);
    tb__k_rmsnorm_backward(a->qn, NULL, a->dq, la.q, lw->q_norm, la.rstd_q,
                           T * d->H, d->D);
    tb__k_rmsnorm_backward(a->kn, NULL, a->dk, la.k, lw->k_norm, la.rstd_k,
                           T * d->KVH, d->D);
    dq = a->qn;
    dk = a->kn;
  }
  /* The first layer's input is the frozen embedding: its gradient is of
   * no use, so only the adapters' own gradients are computed there. */
  int need_dx = l > 0;
  const float *dy_qkv[] = { dq, dk, a->dv };
  if (need_dx) {
    tb__packed_backward_input(w->packed, tb__weights_slot(l, TB_LORA_Q),
                              a->dh, dq, lw->wq, 0, T, C, d->QD);
    tb__packed_backward_input(w->packed, tb__weights_slot(l, TB_LORA_K),
                              a->dh, dk, lw->wk, 1, T, C, d->KVD);
    tb__packed_backward_input(w->packed, tb__weights_slot(l, TB_LORA_V),
                              a->dh, a->dv, lw->wv, 1, T, C, d->KVD);
  }
  adapt_backward(need_dx ? a->dh : NULL, grads, a, &la, lora, l,
                 TB_LORA_GROUP_QKV, dy_qkv, NULL, T, C);
  adapt_backward_da_normed(grads, a, &la, lora, l, TB_LORA_GROUP_QKV, x,
                           la.rstd1, lw->attn_norm, T, C);
  if (need_dx)
    tb__k_rmsnorm_backward(dres, NULL, a->dh, x, lw->attn_norm, la.rstd1, T,
                           C);
}

/* ------------------------------------------------------------ batches */

/* The loss of rows whose target log-probs are lp; coef (may be NULL)
 * receives dloss/dlp.  Inputs are the packed arrays at the same rows. */
static double block_loss(const tb__batch_t *b, float *coef, const float *lp,
                         const float *weights, const float *lp_samp,
                         const float *adv, size_t n, size_t K) {
  const tb__loss_config_t *c = &b->loss_config;
  switch (b->loss_fn) {
  case TB_LOSS_CROSS_ENTROPY:
    return tb__k_loss_cross_entropy(NULL, coef, lp, weights, n * K);
  case TB_LOSS_IMPORTANCE_SAMPLING:
    return tb__k_loss_importance_sampling(NULL, coef, lp, lp_samp, adv, n);
  case TB_LOSS_PPO:
    return tb__k_loss_ppo(NULL, coef, lp, lp_samp, adv, c->clip_low_threshold,
                          c->clip_high_threshold, n);
  case TB_LOSS_CISPO:
    return tb__k_loss_cispo(NULL, coef, lp, lp_samp, adv, c->clip_low_threshold,
                            c->clip_high_threshold, n);
  case TB_LOSS_DRO:
    return tb__k_loss_dro(NULL, coef, lp, lp_samp, adv, c->beta, n);
  }
  return 0.0;
}

static int run_batch(tb__llama_ws_t *ws, const tb__weights_t *w,
                     const tb__lora_t *lora, const tb__batch_t *b, float *grads,
                     float *logprobs, double *loss_out, int backward) {
  if (tb__batch_validate(b, &w->config, NULL) != 0)
    return TB_EINVAL;
  if (backward && (lora == NULL || grads == NULL))
    return TB_EINVAL;
  dims_t d;
  dims_init(&d, &w->config, lora);

  size_t T = 0, K = 1, nseq = 0, maxn = 0;
  for (size_t i = 0; i < b->num_data; i++) {
    const tb__datum_t *dt = &b->data[i];
    if (dt->n == 0)
      continue;
    K = tb__datum_k(dt);
    T += dt->n;
    nseq++;
    if (dt->n > maxn)
      maxn = dt->n;
  }
  int rc;
  acts_t a;
  if ((rc = grow((void **)&ws->seqs, &ws->seqs_cap, nseq, sizeof(seq_t))) ||
      (rc = grow((void **)&ws->ints, &ws->ints_cap, T + T * K, sizeof(int32_t))) ||
      (rc = rope_reserve(ws, &w->config, maxn)) ||
      (rc = acts_reserve(ws, &a, &d, lora, T, K, maxn, backward)))
    return rc;

  /* Pack the data into rows. */
  int32_t *tokens = ws->ints, *targets = ws->ints + T;
  size_t row = 0, s = 0;
  for (size_t i = 0; i < b->num_data; i++) {
    const tb__datum_t *dt = &b->data[i];
    size_t n = dt->n;
    if (n == 0)
      continue;
    ws->seqs[s++] = (seq_t){ row, n, 0, NULL };
    memcpy(tokens + row, dt->tokens, n * sizeof(int32_t));
    memcpy(targets + row * K, dt->target_tokens, n * K * sizeof(int32_t));
    if (b->loss_fn == TB_LOSS_CROSS_ENTROPY) {
      memcpy(a.weights + row * K, dt->weights, n * K * sizeof(float));
    } else {
      memcpy(a.lp_samp + row, dt->logprobs, n * sizeof(float));
      memcpy(a.adv + row, dt->advantages, n * sizeof(float));
    }
    row += n;
  }

  run_forward(ws, &a, &d, w, lora, tokens, ws->seqs, nseq);

  const tb__lora_slot_t *u = lora ? tb__lora_unembed(lora) : NULL;
  double loss = 0.0;
  for (size_t t0 = 0; t0 < T; t0 += TB__LLAMA_LOGIT_ROWS) {
    size_t n = T - t0 < TB__LLAMA_LOGIT_ROWS ? T - t0 : TB__LLAMA_LOGIT_ROWS;
    const int32_t *tg = targets + t0 * K;
    head(a.logits, &a, &d, w, lora, a.hf, t0, n);
    tb__k_logprobs(a.lse_blk, a.lp + t0 * K, a.logits, tg, n, d.V, K);
    loss += block_loss(b, backward ? a.coef : NULL, a.lp + t0 * K,
                       a.weights + t0 * K, a.lp_samp + t0, a.adv + t0, n, K);
    if (!backward)
      continue;
    tb__k_logits_backward(a.logits, a.logits, a.lse_blk, tg, a.coef, n, d.V, K);
    float *dh = a.dh + t0 * d.C;
    /* The row blocks cover dh, each written first here. */
    tb__packed_backward_input(w->packed, tb__weights_head_slot(&w->config),
                              dh, a.logits, w->lm_head, 0, n, d.C, d.V);
    if (u->on)
      tb__k_lora_backward(dh, grads + u->a_off, grads + u->b_off,
                          a.lora_scratch, a.logits, a.hf + t0 * d.C,
                          a.xa_u + t0 * d.r, lora->params + u->a_off,
                          lora->params + u->b_off, lora->scale, n, d.C, d.V,
                          d.r);
  }

  if (backward && (lora->config.train_attn || lora->config.train_mlp)) {
    tb__k_zero(a.dres, T * d.C);
    tb__k_rmsnorm_backward(a.dres, NULL, a.dh, res_at(&a, &d, d.L),
                           w->final_norm, a.rstdf, T, d.C);
    for (size_t l = d.L; l-- > 0;)
      layer_backward(ws, &a, &d, w, lora, grads, l, ws->seqs, nseq);
  }

  if (logprobs)
    memcpy(logprobs, a.lp, T * K * sizeof(float));
  if (loss_out)
    *loss_out = loss;
  return 0;
}

int tb__llama_forward(tb__llama_ws_t *ws, const tb__weights_t *w,
                      const tb__lora_t *lora, const tb__batch_t *b,
                      float *logprobs, double *loss) {
  return run_batch(ws, w, lora, b, NULL, logprobs, loss, 0);
}

int tb__llama_forward_backward(tb__llama_ws_t *ws, const tb__weights_t *w,
                               const tb__lora_t *lora, const tb__batch_t *b,
                               float *grads, float *logprobs, double *loss) {
  return run_batch(ws, w, lora, b, grads, logprobs, loss, 1);
}

int tb__llama_logits(tb__llama_ws_t *ws, const tb__weights_t *w,
                     const tb__lora_t *lora, const int32_t *tokens, size_t n,
                     float *logits) {
  if (n == 0 || !tb__ids_in_vocab(tokens, n, w->config.vocab_size))
    return TB_EINVAL;
  dims_t d;
  dims_init(&d, &w->config, lora);
  acts_t a;
  int rc;
  if ((rc = grow((void **)&ws->seqs, &ws->seqs_cap, 1, sizeof(seq_t))) ||
      (rc = rope_reserve(ws, &w->config, n)) ||
      (rc = acts_reserve(ws, &a, &d, lora, n, 1, n, 0)))
    return rc;
  ws->seqs[0] = (seq_t){ 0, n, 0, NULL };
  run_forward(ws, &a, &d, w, lora, tokens, ws->seqs, 1);
  head(logits, &a, &d, w, lora, a.hf, 0, n);
  return 0;
}

/* ------------------------------------------------------------ KV cache */

int tb__kv_cache_init(tb__kv_cache_t *c, const tb__model_config_t *m,
                      size_t cap) {
  memset(c, 0, sizeof(*c));
  size_t per = (size_t)m->num_layers * cap * (size_t)m->num_kv_heads *
               (size_t)m->head_dim;
  float *p = malloc((per > 0 ? 2 * per : 1) * sizeof(float));
  if (p == NULL)
    return TB_ENOMEM;
  c->k = p;
  c->v = p + per;
  c->cap = cap;
  return 0;
}

void tb__kv_cache_free(tb__kv_cache_t *c) {
  free(c->k);  /* v shares the allocation */
  memset(c, 0, sizeof(*c));
}

void tb__kv_cache_copy(tb__kv_cache_t *dst, const tb__kv_cache_t *src,
                       const tb__model_config_t *m) {
  size_t kvd = (size_t)m->num_kv_heads * (size_t)m->head_dim;
  for (size_t l = 0; l < (size_t)m->num_layers; l++) {
    memcpy(dst->k + l * dst->cap * kvd, src->k + l * src->cap * kvd,
           src->len * kvd * sizeof(float));
    memcpy(dst->v + l * dst->cap * kvd, src->v + l * src->cap * kvd,
           src->len * kvd * sizeof(float));
  }
  dst->len = src->len;
}

int tb__llama_step(tb__llama_ws_t *ws, const tb__weights_t *w,
                   const tb__lora_t *lora, const int32_t *tokens,
                   const size_t *lens, tb__kv_cache_t *const *caches,
                   size_t num_seqs, int all_rows, float *logits) {
  size_t T = 0, max_keys = 0;
  for (size_t s = 0; s < num_seqs; s++) {
    if (lens[s] == 0 || caches[s]->len + lens[s] > caches[s]->cap)
      return TB_EINVAL;
    T += lens[s];
    if (caches[s]->len + lens[s] > max_keys)
      max_keys = caches[s]->len + lens[s];
  }
  if (T == 0 || !tb__ids_in_vocab(tokens, T, w->config.vocab_size))
    return TB_EINVAL;
  dims_t d;
  dims_init(&d, &w->config, lora);
  acts_t a;
  int rc;
  if ((rc = grow((void **)&ws->seqs, &ws->seqs_cap, num_seqs, sizeof(seq_t))) ||
      (rc = rope_reserve(ws, &w->config, max_keys)) ||
      (rc = acts_reserve(ws, &a, &d, lora, T, 1, max_keys, 0)))
    return rc;
  size_t row = 0;
  for (size_t s = 0; s < num_seqs; s++) {
    ws->seqs[s] = (seq_t){ row, lens[s], caches[s]->len, caches[s] };
    row += lens[s];
  }
  run_forward(ws, &a, &d, w, lora, tokens, ws->seqs, num_seqs);
  for (size_t s = 0; s < num_seqs; s++)
    caches[s]->len += lens[s];

  if (all_rows) {
    head(logits, &a, &d, w, lora, a.hf, 0, T);
    return 0;
  }
  /* Only the newest row of each sequence: gather them into one block so
   * the unembedding is a single GEMM over the samples. */
  for (size_t s = 0; s < num_seqs; s++) {
    const seq_t *sq = &ws->seqs[s];
    memcpy(a.h + s * d.C, a.hf + (sq->row0 + sq->len - 1) * d.C,
           d.C * sizeof(float));
  }
  head(logits, &a, &d, w, lora, a.h, 0, num_seqs);
  return 0;
}

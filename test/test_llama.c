/*
 * engine/llama.c and engine/sampler.c: the model forward against a plain
 * float64 implementation of the whole Llama forward written here (so the
 * composition of the kernels is checked independently), LoRA gradients of
 * every loss against finite differences of that reference, and sampling
 * (determinism, greedy, KV cache, stops, prompt log-probs).
 */
#include "tb_test.h"
#include "fixtures.h"

#include "engine/llama.h"
#include "engine/lora.h"
#include "engine/sampler.h"
#include "engine/weights.h"
#include "kernels/kernels.h"

/* ------------------------------------------------------------ fixtures */
/* (the shared ones are in fixtures.h) */

static tb__lora_config_t all_targets(int rank) {
  tb__lora_config_t lc = tb_test_all_targets(rank, 7);
  lc.alpha = 4.0f;
  return lc;
}

/* An adapter whose B is not zero, so it changes the model. */
static void random_lora(tb__lora_t *lora, const tb__model_config_t *c, int rank,
                        uint64_t seed) {
  tb__lora_config_t lc = all_targets(rank);
  ASSERT_OK(tb__lora_init(lora, c, &lc));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  tb__k_rng_fill_uniform(lora->params, &rng, -0.3f, 0.3f, lora->num_params);
}

/* ------------------------------------------------------------ reference */

/* y (T, N) = x (T, K) W^T + scale * (x A^T) B^T, everything in double;
 * W in float, A and B in double (so they can be perturbed finely). */
static void ref_linear(double *y, const double *x, const float *W,
                       const double *A, const double *B, double scale,
                       size_t T, size_t K, size_t N, size_t r) {
  for (size_t t = 0; t < T; t++) {
    double xa[16] = { 0 };
    if (A)
      for (size_t j = 0; j < r; j++)
        for (size_t k = 0; k < K; k++)
          xa[j] += x[t * K + k] * A[j * K + k];
    for (size_t n = 0; n < N; n++) {
      double s = 0;
      for (size_t k = 0; k < K; k++)
        s += x[t * K + k] * (double)W[n * K + k];
      if (A)
        for (size_t j = 0; j < r; j++)
          s += scale * xa[j] * B[n * r + j];
      y[t * N + n] = s;
    }
  }
}

static void ref_rmsnorm(double *out, const double *x, const float *w,
                        double eps, size_t T, size_t C) {
  for (size_t t = 0; t < T; t++) {
    double ss = 0;
    for (size_t i = 0; i < C; i++)
      ss += x[t * C + i] * x[t * C + i];
    double rs = 1.0 / sqrt(ss / (double)C + eps);
    for (size_t i = 0; i < C; i++)
      out[t * C + i] = x[t * C + i] * rs * (double)w[i];
  }
}

/* Hugging Face rotate_half convention. */
static void ref_rope(double *x, size_t T, size_t NH, size_t D, double theta) {
  for (size_t t = 0; t < T; t++)
    for (size_t h = 0; h < NH; h++) {
      double *v = x + (t * NH + h) * D;
      for (size_t i = 0; i < D / 2; i++) {
        double f = pow(theta, -2.0 * (double)i / (double)D);
        double a = (double)t * f, c = cos(a), s = sin(a);
        double x1 = v[i], x2 = v[i + D / 2];
        v[i] = x1 * c - x2 * s;
        v[i + D / 2] = x2 * c + x1 * s;
      }
    }
}

#define MAXT 16
#define MAXW 64

/* A, B of slot i of the adapter in double (NULL when off). */
static const double *ref_a(const tb__lora_t *lo, const double *p, size_t slot) {
  return lo && lo->slots[slot].on ? p + lo->slots[slot].a_off : NULL;
}
static const double *ref_b(const tb__lora_t *lo, const double *p, size_t slot) {
  return lo && lo->slots[slot].on ? p + lo->slots[slot].b_off : NULL;
}

/* logits (T, V) of one sequence; lora/p may be NULL. */
static void ref_forward(double *logits, const tb__weights_t *w,
                        const tb__lora_t *lo, const double *p,
                        const int32_t *tok, size_t T) {
  const tb__model_config_t *c = &w->config;
  size_t C = (size_t)c->hidden_size, H = (size_t)c->num_heads;
  size_t KVH = (size_t)c->num_kv_heads, D = (size_t)c->head_dim;
  size_t I = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
  size_t r = lo ? lo->rank : 0;
  double sc = lo ? lo->scale : 0, eps = c->rms_norm_eps;
  static double x[MAXT * MAXW], h[MAXT * MAXW], q[MAXT * MAXW], k[MAXT * MAXW],
      v[MAXT * MAXW], att[MAXT * MAXW], tmp[MAXT * MAXW], g[MAXT * MAXW],
      u[MAXT * MAXW];
  ASSERT(T <= MAXT);
  for (size_t t = 0; t < T; t++)
    for (size_t i = 0; i < C; i++)
      x[t * C + i] = w->embed[(size_t)tok[t] * C + i];
  for (size_t l = 0; l < (size_t)c->num_layers; l++) {
    const tb__layer_weights_t *lw = &w->layers[l];
    size_t s0 = l * TB_LORA_LAYER_TARGETS;
#define LIN(y, xin, W, t, K, N) \
    ref_linear(y, xin, W, ref_a(lo, p, s0 + t), ref_b(lo, p, s0 + t), sc, T, K, N, r)
    ref_rmsnorm(h, x, lw->attn_norm, eps, T, C);
    LIN(q, h, lw->wq, TB_LORA_Q, C, H * D);
    LIN(k, h, lw->wk, TB_LORA_K, C, KVH * D);
    LIN(v, h, lw->wv, TB_LORA_V, C, KVH * D);
    ref_rope(q, T, H, D, c->rope_theta);
    ref_rope(k, T, KVH, D, c->rope_theta);
    for (size_t hh = 0; hh < H; hh++) {
      size_t kh = hh / (H / KVH);
      for (size_t i = 0; i < T; i++) {
        double sco[MAXT], mx = -1e300, z = 0;
        for (size_t j = 0; j <= i; j++) {
          double s = 0;
          for (size_t e = 0; e < D; e++)
            s += q[(i * H + hh) * D + e] * k[(j * KVH + kh) * D + e];
          sco[j] = s / sqrt((double)D);
          if (sco[j] > mx)
            mx = sco[j];
        }
        for (size_t j = 0; j <= i; j++)
          z += (sco[j] = exp(sco[j] - mx));
        for (size_t e = 0; e < D; e++) {
          double o = 0;
          for (size_t j = 0; j <= i; j++)
            o += sco[j] / z * v[(j * KVH + kh) * D + e];
          att[(i * H + hh) * D + e] = o;
        }
      }
    }
    LIN(tmp, att, lw->wo, TB_LORA_O, H * D, C);
    for (size_t i = 0; i < T * C; i++)
      x[i] += tmp[i];
    ref_rmsnorm(h, x, lw->mlp_norm, eps, T, C);
    LIN(g, h, lw->w_gate, TB_LORA_GATE, C, I);
    LIN(u, h, lw->w_up, TB_LORA_UP, C, I);
    for (size_t i = 0; i < T * I; i++)
      g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
    LIN(tmp, g, lw->w_down, TB_LORA_DOWN, I, C);
    for (size_t i = 0; i < T * C; i++)
      x[i] += tmp[i];
#undef LIN
  }
  ref_rmsnorm(h, x, w->final_norm, eps, T, C);
  size_t us = lo ? lo->num_slots - 1 : 0;
  ref_linear(logits, h, w->lm_head, ref_a(lo, p, us), ref_b(lo, p, us), sc, T,
             C, V, r);
}

static void ref_logprobs(double *lp, const double *logits, const int32_t *tg,
                         size_t T, size_t V) {
  for (size_t t = 0; t < T; t++) {
    double mx = -1e300, z = 0;
    for (size_t v = 0; v < V; v++)
      if (logits[t * V + v] > mx)
        mx = logits[t * V + v];
    for (size_t v = 0; v < V; v++)
      z += exp(logits[t * V + v] - mx);
    lp[t] = logits[t * V + (size_t)tg[t]] - mx - log(z);
  }
}

/* The summed loss of a batch under the reference.  frozen_lp (per packed
 * token) fixes the stop-gradient ratio of CISPO; NULL uses the current. */
static double ref_loss(const tb__weights_t *w, const tb__lora_t *lo,
                       const double *p, const tb__batch_t *b, double *lp_out,
                       const double *frozen_lp) {
  double total = 0, logits[MAXT * 64], lp[MAXT];
  size_t V = (size_t)w->config.vocab_size, row = 0;
  const tb__loss_config_t *cf = &b->loss_config;
  for (size_t i = 0; i < b->num_data; i++) {
    const tb__datum_t *d = &b->data[i];
    ref_forward(logits, w, lo, p, d->tokens, d->n);
    ref_logprobs(lp, logits, d->target_tokens, d->n, V);
    for (size_t t = 0; t < d->n; t++, row++) {
      if (lp_out)
        lp_out[row] = lp[t];
      double l = lp[t], A = 0, ratio = 0, lo_ = cf->clip_low_threshold,
             hi = cf->clip_high_threshold;
      if (b->loss_fn != TB_LOSS_CROSS_ENTROPY) {
        A = d->advantages[t];
        ratio = exp(l - d->logprobs[t]);
      }
      switch (b->loss_fn) {
      case TB_LOSS_CROSS_ENTROPY: total += -l * d->weights[t]; break;
      case TB_LOSS_IMPORTANCE_SAMPLING: total += -ratio * A; break;
      case TB_LOSS_PPO: {
        double cl = ratio < lo_ ? lo_ : ratio > hi ? hi : ratio;
        total += -fmin(ratio * A, cl * A);
        break;
      }
      case TB_LOSS_CISPO: {
        double fr = frozen_lp ? exp(frozen_lp[row] - d->logprobs[t]) : ratio;
        double cl = fr < lo_ ? lo_ : fr > hi ? hi : fr;
        total += -cl * l * A;
        break;
      }
      case TB_LOSS_DRO: {
        double dl = l - d->logprobs[t];
        total += -(l * A - 0.5 * cf->beta * dl * dl);
        break;
      }
      }
    }
  }
  return total;
}

static double *params_double(const tb__lora_t *lo) {
  double *p = xmalloc(lo->num_params * sizeof(double));
  for (size_t i = 0; i < lo->num_params; i++)
    p[i] = lo->params[i];
  return p;
}

/* ------------------------------------------------------------ batch fixture */

typedef struct fixture_s {
  int32_t tok[2][MAXT], tgt[2][MAXT];
  float wts[2][MAXT], lps[2][MAXT], adv[2][MAXT];
  tb__datum_t data[2];
  tb__batch_t batch;
} fixture_t;

static void make_batch(fixture_t *f, const tb__model_config_t *c,
                       tb__loss_fn_t fn) {
  static const size_t lens[2] = { 5, 7 };
  uint64_t st = 99;
  memset(f, 0, sizeof(*f));
  for (int d = 0; d < 2; d++) {
    for (size_t t = 0; t < lens[d]; t++) {
      f->tok[d][t] = (int32_t)(tb__k_splitmix64(&st) % (uint64_t)c->vocab_size);
      f->tgt[d][t] = (int32_t)(tb__k_splitmix64(&st) % (uint64_t)c->vocab_size);
      f->wts[d][t] = (float)(t % 3) * 0.5f + 0.25f;
      f->adv[d][t] = (t % 2 ? 1.0f : -0.7f) * (float)(1 + t % 3);
    }
    f->data[d] = (tb__datum_t){ f->tok[d], lens[d], 1, f->tgt[d], f->wts[d],
                               f->lps[d], f->adv[d] };
  }
  f->batch.data = f->data;
  f->batch.num_data = 2;
  f->batch.loss_fn = fn;
  tb__loss_config_default(&f->batch.loss_config);
}

/* The sampler's log-probs: the model's own, offset so that the ratios
 * fall on both sides of the PPO/CISPO clip range but away from its edges
 * (where the loss has a kink). */
static void set_sampler_logprobs(fixture_t *f, const double *lp) {
  static const float off[] = { 0.5f, -0.05f, -0.4f, 0.1f, 0.02f, -0.6f, 0.3f };
  size_t row = 0;
  for (int d = 0; d < 2; d++)
    for (size_t t = 0; t < f->data[d].n; t++, row++)
      f->lps[d][t] = (float)lp[row] + off[row % 7];
}

/* ------------------------------------------------------------ tests */

TEST(forward_matches_float64_reference) {
  tb__model_config_t c = tb_test_tiny_config();
  tb__weights_t w;
  tb__lora_t lora;
  tb_test_random_model(&w, &c, 1);
  random_lora(&lora, &c, 3, 2);
  fixture_t f;
  make_batch(&f, &c, TB_LOSS_CROSS_ENTROPY);
  tb__llama_ws_t *ws;
  ASSERT_OK(tb__llama_ws_new(&ws));
  size_t n = tb__batch_num_outputs(&f.batch);
  ASSERT_EQ_INT(n, 12);
  float lp[12];
  double loss, ref_lp[12];
  double *p = params_double(&lora);
  for (int with_lora = 0; with_lora < 2; with_lora++) {
    const tb__lora_t *lo = with_lora ? &lora : NULL;
    ASSERT_OK(tb__llama_forward(ws, &w, lo, &f.batch, lp, &loss));
    double ref = ref_loss(&w, lo, p, &f.batch, ref_lp, NULL);
    for (size_t i = 0; i < n; i++)
      ASSERT_NEAR(lp[i], ref_lp[i], 2e-5, 2e-5);
    ASSERT_NEAR(loss, ref, 1e-4, 1e-5);
  }
  /* A tied unembedding reads the embedding table. */
  tb__model_config_t ct = c;
  ct.tie_word_embeddings = 1;
  tb__weights_t wt;
  tb_test_random_model(&wt, &ct, 3);
  ASSERT(wt.lm_head == wt.embed);
  ASSERT_OK(tb__llama_forward(ws, &wt, &lora, &f.batch, lp, &loss));
  ref_loss(&wt, &lora, p, &f.batch, ref_lp, NULL);
  for (size_t i = 0; i < n; i++)
    ASSERT_NEAR(lp[i], ref_lp[i], 2e-5, 2e-5);
  free(p);
  tb__llama_ws_free(ws);
  tb__weights_free(&wt);
  tb__weights_free(&w);
  tb__lora_free(&lora);
}

TEST(new_adapter_gives_base_logprobs_exactly) {
  tb__model_config_t c = tb_test_tiny_config();
  tb__weights_t w;
  tb_test_random_model(&w, &c, 4);
  tb__lora_t lora;
  tb__lora_config_t lc = all_targets(4);
  lc.alpha = 0;  /* default */
  ASSERT_OK(tb__lora_init(&lora, &c, &lc));
  ASSERT(lora.config.alpha == TB_LORA_DEFAULT_ALPHA);
  ASSERT(lora.scale == TB_LORA_DEFAULT_ALPHA / 4);
  fixture_t f;
  make_batch(&f, &c, TB_LOSS_CROSS_ENTROPY);
  tb__llama_ws_t *ws;
  ASSERT_OK(tb__llama_ws_new(&ws));
  float a[12], b[12];
  double la, lb;
  ASSERT_OK(tb__llama_forward(ws, &w, NULL, &f.batch, a, &la));
  ASSERT_OK(tb__llama_forward(ws, &w, &lora, &f.batch, b, &lb));
  ASSERT_EQ_INT(memcmp(a, b, sizeof(a)), 0);
  ASSERT(la == lb);
  tb__llama_ws_free(ws);
  tb__weights_free(&w);
  tb__lora_free(&lora);
}

/* Analytical gradients of every adapter tensor (all targets, unembedding
 * included) against central differences of the float64 reference, for
 * each loss.  Two entries of each tensor are checked. */
static void grad_check(tb__loss_fn_t fn) {
  tb__model_config_t c = tb_test_tiny_config();
  tb__weights_t w;
  tb__lora_t lora;
  tb_test_random_model(&w, &c, 5);
  random_lora(&lora, &c, 2, 6);
  fixture_t f;
  make_batch(&f, &c, fn);
  double *p = params_double(&lora), base_lp[12];
  ref_loss(&w, &lora, p, &f.batch, base_lp, NULL);
  set_sampler_logprobs(&f, base_lp);

  tb__llama_ws_t *ws;
  ASSERT_OK(tb__llama_ws_new(&ws));
  float *g = calloc(lora.num_params, sizeof(float));
  float lp[12];
  double loss;
  ASSERT_OK(tb__llama_forward_backward(ws, &w, &lora, &f.batch, g, lp, &loss));
  ASSERT_NEAR(loss, ref_loss(&w, &lora, p, &f.batch, NULL, base_lp), 1e-4, 1e-5);

  double gmax = 0;
  for (size_t i = 0; i < lora.num_params; i++)
    gmax = fmax(gmax, fabs(g[i]));
  ASSERT(gmax > 1e-3);
  size_t nt = tb__lora_num_tensors(&lora), checked = 0;
  ASSERT_EQ_INT(nt, 2 * (2 * 7 + 1));
  for (size_t ti = 0; ti < nt; ti++) {
    char name[96];
    size_t shape[2], off;
    ASSERT_OK(tb__lora_tensor(&lora, ti, name, sizeof(name), shape, &off));
    size_t cnt = shape[0] * shape[1];
    size_t picks[2] = { (ti * 7) % cnt, (ti * 13 + cnt / 2) % cnt };
    for (int k = 0; k < 2; k++) {
      size_t i = off + picks[k];
      double h = 1e-5, keep = p[i];
      p[i] = keep + h;
      double up = ref_loss(&w, &lora, p, &f.batch, NULL, base_lp);
      p[i] = keep - h;
      double dn = ref_loss(&w, &lora, p, &f.batch, NULL, base_lp);
      p[i] = keep;
      double fd = (up - dn) / (2 * h);
      if (fabs(g[i] - fd) > 1e-3 * gmax + 1e-3 * fabs(fd))
        tb_test_fail(__FILE__, __LINE__, "%s %s[%zu]: analytic %.8g, fd %.8g",
                     tb__loss_fn_name(fn), name, picks[k], g[i], fd);
      checked++;
    }
  }
  ASSERT_EQ_INT(checked, 2 * nt);
  free(g);
  free(p);
  tb__llama_ws_free(ws);
  tb__weights_free(&w);
  tb__lora_free(&lora);
}

TEST(grad_cross_entropy) { grad_check(TB_LOSS_CROSS_ENTROPY); }
TEST(grad_importance_sampling) { grad_check(TB_LOSS_IMPORTANCE_SAMPLING); }
TEST(grad_ppo) { grad_check(TB_LOSS_PPO); }
TEST(grad_cispo) { grad_check(TB_LOSS_CISPO); }
TEST(grad_dro) { grad_check(TB_LOSS_DRO); }

/* With rows enough to pack (two sequences of 40), forward_backward on the
 * packed weights gives OpenBLAS's loss, log-probs and gradients to
 * rounding, and packs exactly the matrices a training step reads: every
 * linear forward, every linear backward except the first layer's q, k, v
 * (whose input gradient is not needed), and the unembedding both ways. */
TEST(packed_weights_match_openblas) {
  if (!tb__packed_available()) {
    SKIP("this build or processor packs no weights");
  }
  tb__model_config_t c = tb_test_tiny_config();
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.head_dim = 16;
  c.vocab_size = 100;
  tb__weights_t w;
  tb__lora_t lora;
  tb_test_random_model(&w, &c, 11);
  random_lora(&lora, &c, 4, 12);
  enum { N = 40 };
  int32_t tok[2][N], tgt[2][N];
  float wts[2][N];
  tb__datum_t data[2];
  uint64_t st = 5;
  for (int d = 0; d < 2; d++) {
    for (size_t t = 0; t < N; t++) {
      tok[d][t] = (int32_t)(tb__k_splitmix64(&st) % 100);
      tgt[d][t] = (int32_t)(tb__k_splitmix64(&st) % 100);
      wts[d][t] = 1.0f;
    }
    data[d] = (tb__datum_t){ tok[d], N, 1, tgt[d], wts[d], NULL, NULL };
  }
  tb__batch_t b = { 0 };
  b.data = data;
  b.num_data = 2;
  b.loss_fn = TB_LOSS_CROSS_ENTROPY;
  tb__loss_config_default(&b.loss_config);

  tb__llama_ws_t *ws;
  ASSERT_OK(tb__llama_ws_new(&ws));
  float *g_packed = calloc(lora.num_params, sizeof(float));
  float *g_blas = calloc(lora.num_params, sizeof(float));
  float lp_packed[2 * N], lp_blas[2 * N];
  double loss_packed, loss_blas;
  ASSERT_OK(tb__llama_forward_backward(ws, &w, &lora, &b, g_packed, lp_packed,
                                       &loss_packed));
  size_t L = (size_t)c.num_layers;
  ASSERT_EQ_INT(tb__packed_count(w.packed, NULL),
                (7 * L + 1) + (7 * L - 3 + 1));
  tb__packed_t *keep = w.packed;
  w.packed = NULL;
  ASSERT_OK(tb__llama_forward_backward(ws, &w, &lora, &b, g_blas, lp_blas,
                                       &loss_blas));
  w.packed = keep;
  ASSERT_NEAR(loss_packed, loss_blas, 1e-6, 1e-5);
  for (size_t i = 0; i < 2 * N; i++)
    ASSERT_NEAR(lp_packed[i], lp_blas[i], 1e-5, 1e-5);
  double gmax = 0;
  for (size_t i = 0; i < lora.num_params; i++)
    gmax = fmax(gmax, fabs(g_blas[i]));
  ASSERT(gmax > 1e-3);
  for (size_t i = 0; i < lora.num_params; i++)
    ASSERT_NEAR(g_packed[i], g_blas[i], 1e-5 * gmax, 1e-4);
  free(g_packed);
  free(g_blas);
  tb__llama_ws_free(ws);
  tb__weights_free(&w);
  tb__lora_free(&lora);
}

TEST(batch_validation) {
  tb__model_config_t c = tb_test_tiny_config();
  fixture_t f;
  make_batch(&f, &c, TB_LOSS_PPO);
  const char *why;
  ASSERT_OK(tb__batch_validate(&f.batch, &c, &why));
  f.tgt[1][3] = 37;
  ASSERT_ERR(tb__batch_validate(&f.batch, &c, &why), TB_EINVAL);
  ASSERT_STR_CONTAINS(why, "target");
  f.tgt[1][3] = 0;
  f.data[0].advantages = NULL;
  ASSERT_ERR(tb__batch_validate(&f.batch, &c, &why), TB_EINVAL);
  f.batch.loss_fn = TB_LOSS_CROSS_ENTROPY;
  ASSERT_OK(tb__batch_validate(&f.batch, &c, &why));
  f.data[0].k = 2;
  ASSERT_ERR(tb__batch_validate(&f.batch, &c, &why), TB_EINVAL);
  /* An empty datum takes no part in the checks, and its k is ignored. */
  f.data[0].n = 0;
  ASSERT_OK(tb__batch_validate(&f.batch, &c, &why));
  ASSERT_EQ_INT(tb__batch_num_outputs(&f.batch), 7);
  f.data[1].n = 0;
  ASSERT_ERR(tb__batch_validate(&f.batch, &c, &why), TB_EINVAL);
  ASSERT_STR_CONTAINS(why, "no tokens");
  tb__loss_fn_t fn;
  ASSERT_OK(tb__loss_fn_parse("cispo", 5, &fn));
  ASSERT_EQ_INT(fn, TB_LOSS_CISPO);
  ASSERT_ERR(tb__loss_fn_parse("cisp", 4, &fn), TB_EINVAL);
}

/* Top-K distillation: (n, K) targets give (n, K) log-probs, each equal to
 * the single-target log-prob of that token. */
TEST(cross_entropy_with_k_targets) {
  tb__model_config_t c = tb_test_tiny_config();
  tb__weights_t w;
  tb__lora_t lora;
  tb_test_random_model(&w, &c, 8);
  random_lora(&lora, &c, 2, 9);
  int32_t tok[4] = { 1, 5, 9, 3 }, tg2[8], tg1[4];
  float w2[8], w1[4];
  for (int i = 0; i < 8; i++) {
    tg2[i] = (int32_t)((i * 11 + 3) % 37);
    w2[i] = i % 2 ? 0.25f : 0.75f;
  }
  tb__datum_t d2 = { tok, 4, 2, tg2, w2, NULL, NULL };
  tb__batch_t b2 = { &d2, 1, TB_LOSS_CROSS_ENTROPY, { 0.8f, 1.2f, 0.05f } };
  tb__llama_ws_t *ws;
  ASSERT_OK(tb__llama_ws_new(&ws));
  float lp2[8], lp1[4];
  double loss2, loss1, sum = 0;
  ASSERT_EQ_INT(tb__batch_num_outputs(&b2), 8);
  ASSERT_OK(tb__llama_forward(ws, &w, &lora, &b2, lp2, &loss2));
  for (int j = 0; j < 2; j++) {
    for (int t = 0; t < 4; t++) {
      tg1[t] = tg2[t * 2 + j];
      w1[t] = w2[t * 2 + j];
    }
    tb__datum_t d1 = { tok, 4, 1, tg1, w1, NULL, NULL };
    tb__batch_t b1 = { &d1, 1, TB_LOSS_CROSS_ENTROPY, { 0.8f, 1.2f, 0.05f } };
    ASSERT_OK(tb__llama_forward(ws, &w, &lora, &b1, lp1, &loss1));
    for (int t = 0; t < 4; t++)
      ASSERT_NEAR(lp2[t * 2 + j], lp1[t], 1e-6, 1e-6);
    sum += loss1;
  }
  ASSERT_NEAR(loss2, sum, 1e-5, 1e-6);
  tb__llama_ws_free(ws);
  tb__weights_free(&w);
  tb__lora_free(&lora);
}

/* ------------------------------------------------------------ sampling */

static void log_softmax_row(double *out, const float *row, size_t V) {
  double mx = -1e300, z = 0;
  for (size_t v = 0; v < V; v++)
    mx = fmax(mx, row[v]);
  for (size_t v = 0; v < V; v++)
    z += exp(row[v] - mx);
  for (size_t v = 0; v < V; v++)
    out[v] = row[v] - mx - log(z);
}

TEST(kv_cache_logits_equal_full_forward) {
  tb__model_config_t c = tb_test_tiny_config();
  tb__weights_t w;
  tb__lora_t lora;
  tb_test_random_model(&w, &c, 10);
  random_lora(&lora, &c, 2, 11);
  const size_t V = 37, n = 13;
  int32_t seq[13] = { 3, 14, 15, 9, 2, 6, 5, 35, 8, 9, 7, 9, 3 };
  tb__llama_ws_t *ws;
  ASSERT_OK(tb__llama_ws_new(&ws));
  float *full = xmalloc(n * V * sizeof(float));
  float step[5 * 37];
  ASSERT_OK(tb__llama_logits(ws, &w, &lora, seq, n, full));
  /* Reference check of the full forward too. */
  double *p = params_double(&lora), ref[13 * 37];
  ref_forward(ref, &w, &lora, p, seq, n);
  for (size_t i = 0; i < n * V; i++)
    ASSERT_NEAR(full[i], ref[i], 1e-4, 1e-4);

  /* Two caches decoding the same sequence in one batched step: one is
   * prefilled with 5 tokens, the other with 1 and caught up one by one. */
  tb__kv_cache_t a, b;
  ASSERT_OK(tb__kv_cache_init(&a, &c, n));
  ASSERT_OK(tb__kv_cache_init(&b, &c, n));
  size_t len = 5;
  tb__kv_cache_t *ca = &a, *cb = &b;
  ASSERT_OK(tb__llama_step(ws, &w, &lora, seq, &len, &ca, 1, 1, step));
  for (size_t i = 0; i < 5 * V; i++)
    ASSERT_NEAR(step[i], full[i], 1e-5, 1e-5);
  len = 1;
  for (size_t i = 0; i < 5; i++) {
    ASSERT_OK(tb__llama_step(ws, &w, &lora, seq + i, &len, &cb, 1, 0, step));
    for (size_t v = 0; v < V; v++)
      ASSERT_NEAR(step[v], full[i * V + v], 1e-5, 1e-5);
  }
  ASSERT_EQ_INT(a.len, 5);
  ASSERT_EQ_INT(b.len, 5);
  for (size_t i = 5; i < n; i++) {
    int32_t two[2] = { seq[i], seq[i] };
    size_t lens[2] = { 1, 1 };
    tb__kv_cache_t *cs[2] = { &a, &b };
    ASSERT_OK(tb__llama_step(ws, &w, &lora, two, lens, cs, 2, 0, step));
    for (size_t v = 0; v < V; v++) {
      ASSERT_NEAR(step[v], full[i * V + v], 1e-5, 1e-5);
      ASSERT_NEAR(step[V + v], full[i * V + v], 1e-5, 1e-5);
    }
  }
  /* A full cache refuses more tokens. */
  ASSERT_ERR(tb__llama_step(ws, &w, &lora, seq, &len, &ca, 1, 0, step),
             TB_EINVAL);
  tb__kv_cache_free(&a);
  tb__kv_cache_free(&b);
  free(full);
  free(p);
  tb__llama_ws_free(ws);
  tb__weights_free(&w);
  tb__lora_free(&lora);
}

static int same_tokens(const tb__sample_seq_t *a, const tb__sample_seq_t *b) {
  return a->len == b->len &&
         memcmp(a->tokens, b->tokens, a->len * sizeof(int32_t)) == 0;
}

TEST(sampler_seed_determinism) {
  tb__model_config_t c = tb_test_tiny_config();
  tb__weights_t w;
  tb_test_random_model(&w, &c, 12);
  tb__llama_ws_t *ws;
  ASSERT_OK(tb__llama_ws_new(&ws));
  int32_t prompt[3] = { 1, 2, 3 };
  tb__sampling_params_t sp;
  tb__sampling_params_default(&sp);
  sp.max_tokens = 24;
  sp.num_samples = 3;
  sp.seed = 42;
  tb__sample_result_t r1, r2, r3;
  ASSERT_OK(tb__sample(ws, &w, NULL, prompt, 3, &sp, &r1));
  ASSERT_OK(tb__sample(ws, &w, NULL, prompt, 3, &sp, &r2));
  sp.seed = 43;
  ASSERT_OK(tb__sample(ws, &w, NULL, prompt, 3, &sp, &r3));
  ASSERT_EQ_INT(r1.num_seqs, 3);
  for (size_t s = 0; s < 3; s++) {
    ASSERT_EQ_INT(r1.seqs[s].len, 24);
    ASSERT_EQ_INT(r1.seqs[s].stop_reason, TB_STOP_LENGTH);
    ASSERT(same_tokens(&r1.seqs[s], &r2.seqs[s]));
    ASSERT_EQ_INT(memcmp(r1.seqs[s].logprobs, r2.seqs[s].logprobs,
                         24 * sizeof(float)), 0);
    ASSERT(!same_tokens(&r1.seqs[s], &r3.seqs[s]));
  }
  /* The samples of one request differ from each other. */
  ASSERT(!same_tokens(&r1.seqs[0], &r1.seqs[1]));
  ASSERT_STR_EQ(tb__stop_reason_name(r1.seqs[0].stop_reason), "length");
  tb__sample_result_free(&r1);
  tb__sample_result_free(&r2);
  tb__sample_result_free(&r3);
  tb__llama_ws_free(ws);
  tb__weights_free(&w);
}

/* top_k = 1 is greedy: every token is the argmax of the full forward's
 * logits over the prompt and the tokens so far, and its reported
 * log-prob is the model's. */
TEST(sampler_greedy_is_argmax_of_forward) {
  tb__model_config_t c = tb_test_tiny_config();
  tb__weights_t w;
  tb__lora_t lora;
  tb_test_random_model(&w, &c, 13);
  random_lora(&lora, &c, 2, 14);
  tb__llama_ws_t *ws;
  ASSERT_OK(tb__llama_ws_new(&ws));
  const size_t V = 37;
  int32_t all[32] = { 4, 8, 15, 16, 23 };
  size_t n = 5;
  tb__sampling_params_t sp;
  tb__sampling_params_default(&sp);
  sp.max_tokens = 12;
  sp.top_k = 1;
  sp.seed = 1;
  sp.prompt_logprobs = 1;
  sp.topk_prompt_logprobs = 3;
  tb__sample_result_t r;
  ASSERT_OK(tb__sample(ws, &w, &lora, all, n, &sp, &r));
  ASSERT_EQ_INT(r.seqs[0].len, 12);
  memcpy(all + n, r.seqs[0].tokens, 12 * sizeof(int32_t));
  float *logits = xmalloc(17 * V * sizeof(float));
  double ls[37];
  ASSERT_OK(tb__llama_logits(ws, &w, &lora, all, 17, logits));
  for (size_t i = 0; i < 12; i++) {
    const float *row = logits + (n - 1 + i) * V;
    ASSERT_EQ_INT(r.seqs[0].tokens[i], tb__k_argmax(row, V));
    log_softmax_row(ls, row, V);
    ASSERT_NEAR(r.seqs[0].logprobs[i], ls[r.seqs[0].tokens[i]], 1e-4, 1e-4);
  }
  /* Prompt log-probs and top-k prompt log-probs. */
  ASSERT(isnan(r.prompt_logprobs[0]));
  ASSERT_EQ_INT(r.topk, 3);
  ASSERT_EQ_INT(r.topk_ids[0], 0);
  ASSERT(r.topk_logprobs[0] == TB_TOPK_EMPTY_LOGPROB);
  for (size_t i = 1; i < n; i++) {
    log_softmax_row(ls, logits + (i - 1) * V, V);
    ASSERT_NEAR(r.prompt_logprobs[i], ls[all[i]], 1e-4, 1e-4);
    ASSERT_EQ_INT(r.topk_ids[i * 3], tb__k_argmax(logits + (i - 1) * V, V));
    ASSERT_NEAR(r.topk_logprobs[i * 3], ls[r.topk_ids[i * 3]], 1e-4, 1e-4);
    ASSERT(r.topk_logprobs[i * 3] >= r.topk_logprobs[i * 3 + 1]);
    ASSERT(r.topk_logprobs[i * 3 + 1] >= r.topk_logprobs[i * 3 + 2]);
  }
  /* Temperature 0 is greedy too. */
  tb__sample_result_t r0;
  sp.top_k = -1;
  sp.temperature = 0;
  sp.prompt_logprobs = 0;
  sp.topk_prompt_logprobs = 0;
  ASSERT_OK(tb__sample(ws, &w, &lora, all, n, &sp, &r0));
  ASSERT(same_tokens(&r.seqs[0], &r0.seqs[0]));
  ASSERT(r0.prompt_logprobs == NULL && r0.topk_ids == NULL);
  tb__sample_result_free(&r0);
  tb__sample_result_free(&r);
  free(logits);
  tb__llama_ws_free(ws);
  tb__weights_free(&w);
  tb__lora_free(&lora);
}

TEST(sampler_stops) {
  tb__model_config_t c = tb_test_tiny_config();
  tb__weights_t w;
  tb_test_random_model(&w, &c, 15);
  tb__llama_ws_t *ws;
  ASSERT_OK(tb__llama_ws_new(&ws));
  int32_t prompt[2] = { 7, 7 };
  tb__sampling_params_t sp;
  tb__sampling_params_default(&sp);
  sp.max_tokens = 20;
  sp.seed = 5;
  tb__sample_result_t free_run;
  ASSERT_OK(tb__sample(ws, &w, NULL, prompt, 2, &sp, &free_run));
  const tb__sample_seq_t *s0 = &free_run.seqs[0];
  ASSERT_EQ_INT(s0->len, 20);

  /* A stop token: generation ends right after its first occurrence. */
  int32_t stop_tok = s0->tokens[6];
  size_t first = 0;
  while (s0->tokens[first] != stop_tok)
    first++;
  sp.stop_tokens = &stop_tok;
  sp.num_stop_tokens = 1;
  tb__sample_result_t r;
  ASSERT_OK(tb__sample(ws, &w, NULL, prompt, 2, &sp, &r));
  ASSERT_EQ_INT(r.seqs[0].stop_reason, TB_STOP_STOP);
  ASSERT_EQ_INT(r.seqs[0].len, first + 1);
  ASSERT_EQ_INT(memcmp(r.seqs[0].tokens, s0->tokens, (first + 1) * 4), 0);
  ASSERT_STR_EQ(tb__stop_reason_name(r.seqs[0].stop_reason), "stop");
  tb__sample_result_free(&r);

  /* A stop string over the decoded bytes, spanning two tokens of two
   * bytes each: token t decodes to "<letter t><digit t%10>". */
  char text[37][2];
  tb_slice_t bytes[37];
  for (int t = 0; t < 37; t++) {
    text[t][0] = (char)('A' + t % 26);
    text[t][1] = (char)('0' + t % 10);
    bytes[t] = (tb_slice_t){ text[t], 2 };
  }
  char want[3] = { text[s0->tokens[8]][1], text[s0->tokens[9]][0],
                   text[s0->tokens[9]][1] };
  /* Where the string first completes in the free run's text. */
  char all[40];
  for (size_t i = 0; i < 20; i++)
    memcpy(all + 2 * i, text[s0->tokens[i]], 2);
  size_t end = 0;
  for (size_t st = 0; st + 3 <= 40; st++)
    if (memcmp(all + st, want, 3) == 0) {
      end = st + 3;
      break;
    }
  ASSERT(end > 0);
  tb_slice_t stop_str = { want, 3 };
  sp.stop_tokens = NULL;
  sp.num_stop_tokens = 0;
  sp.stop_strings = &stop_str;
  sp.num_stop_strings = 1;
  sp.token_bytes = NULL;
  ASSERT_ERR(tb__sample(ws, &w, NULL, prompt, 2, &sp, &r), TB_EINVAL);
  sp.token_bytes = bytes;
  ASSERT_OK(tb__sample(ws, &w, NULL, prompt, 2, &sp, &r));
  ASSERT_EQ_INT(r.seqs[0].stop_reason, TB_STOP_STOP);
  ASSERT_EQ_INT(r.seqs[0].len, (end + 1) / 2);
  tb__sample_result_free(&r);

  /* max_tokens bounds everything; 0 generates nothing. */
  sp.num_stop_strings = 0;
  sp.max_tokens = 4;
  ASSERT_OK(tb__sample(ws, &w, NULL, prompt, 2, &sp, &r));
  ASSERT(same_tokens(&r.seqs[0], &(tb__sample_seq_t){ s0->tokens, NULL, 4, 0 }));
  tb__sample_result_free(&r);
  sp.num_samples = 2;
  ASSERT_OK(tb__sample(ws, &w, NULL, prompt, 2, &sp, &r));
  for (size_t i = 0; i < 2; i++) {
    ASSERT_EQ_INT(r.seqs[i].len, 4);
    ASSERT_EQ_INT(r.seqs[i].stop_reason, TB_STOP_LENGTH);
  }
  tb__sample_result_free(&r);
  sp.max_tokens = 0;
  ASSERT_OK(tb__sample(ws, &w, NULL, prompt, 2, &sp, &r));
  ASSERT_EQ_INT(r.seqs[0].len, 0);
  ASSERT_EQ_INT(r.seqs[0].stop_reason, TB_STOP_LENGTH);
  tb__sample_result_free(&r);
  int32_t bad = 37;
  sp.max_tokens = 3;
  ASSERT_ERR(tb__sample(ws, &w, NULL, &bad, 1, &sp, &r), TB_EINVAL);

  tb__sample_result_free(&free_run);
  tb__llama_ws_free(ws);
  tb__weights_free(&w);
}

TEST_LIST(
  TEST_ENTRY(packed_weights_match_openblas),
  TEST_ENTRY(forward_matches_float64_reference),
  TEST_ENTRY(new_adapter_gives_base_logprobs_exactly),
  TEST_ENTRY(grad_cross_entropy),
  TEST_ENTRY(grad_importance_sampling),
  TEST_ENTRY(grad_ppo),
  TEST_ENTRY(grad_cispo),
  TEST_ENTRY(grad_dro),
  TEST_ENTRY(batch_validation),
  TEST_ENTRY(cross_entropy_with_k_targets),
  TEST_ENTRY(kv_cache_logits_equal_full_forward),
  TEST_ENTRY(sampler_seed_determinism),
  TEST_ENTRY(sampler_greedy_is_argmax_of_forward),
  TEST_ENTRY(sampler_stops),
)

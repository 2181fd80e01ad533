/*
 * kernels/: every backward kernel against central finite differences of
 * its forward, and the LoRA A and B gradients through the logits for each
 * of the five Tinker losses against finite differences of an independent
 * double-precision implementation of the same head and loss.
 *
 * A backward kernel is checked through the scalar L = sum(dout * y): its
 * gradient with respect to an input is exactly what the kernel computes
 * for upstream gradient dout.
 */
#include "tb_test.h"

#include <cblas.h>

#include "kernels/kernels.h"

static void *allocs[64];
static size_t nallocs;

static void *zbuf(size_t bytes) {
  ASSERT(nallocs < sizeof(allocs) / sizeof(allocs[0]));
  void *p = xmalloc(bytes > 0 ? bytes : 1);
  memset(p, 0, bytes > 0 ? bytes : 1);
  allocs[nallocs++] = p;
  return p;
}

static float *fbuf(size_t n) { return zbuf(n * sizeof(float)); }

static float *rbuf(tb__k_rng_t *rng, size_t n, float std) {
  float *p = fbuf(n);
  tb__k_rng_fill_normal(p, rng, 0.0f, std, n);
  return p;
}

static void free_all(void) {
  while (nallocs > 0)
    free(allocs[--nallocs]);
}

static double dot(const float *a, const float *b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++)
    s += (double)a[i] * b[i];
  return s;
}

typedef double (*objective_fn)(void *ctx);

/* Compares analytic[i] with (f(p + e) - f(p - e)) / 2e for every stride-th
 * element of param, dividing by the perturbation float rounding actually
 * made. */
static void check_grad(const char *what, float *param, const float *analytic,
                       size_t n, size_t stride, objective_fn f, void *ctx,
                       float eps, double atol, double rtol) {
  for (size_t i = 0; i < n; i += stride) {
    float save = param[i];
    float hi = save + eps, lo = save - eps;
    param[i] = hi;
    double fp = f(ctx);
    param[i] = lo;
    double fm = f(ctx);
    param[i] = save;
    double fd = (fp - fm) / ((double)hi - (double)lo);
    if (!(fabs(analytic[i] - fd) <= atol + rtol * fabs(fd)))
      tb_test_fail(__FILE__, __LINE__, "%s[%zu]: analytic %.9g, numeric %.9g",
                   what, i, analytic[i], fd);
  }
}

/* ------------------------------------------------------------ per kernel */

typedef struct {
  size_t T, K, N, r;
  float *x, *w, *a, *b, *xa, *y, *dout, scale;
} lin_ctx;

static double linear_obj(void *p) {
  lin_ctx *c = p;
  tb__k_linear_forward(c->y, c->x, c->w, 0, c->T, c->K, c->N);
  return dot(c->y, c->dout, c->T * c->N);
}

static double lora_obj(void *p) {
  lin_ctx *c = p;
  memset(c->y, 0, c->T * c->N * sizeof(float));
  tb__k_lora_forward(c->y, c->xa, c->x, c->a, c->b, c->scale, c->T, c->K, c->N,
                     c->r);
  return dot(c->y, c->dout, c->T * c->N);
}

TEST(linear_and_lora_gradients) {
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 21);
  openblas_set_num_threads(1);
  lin_ctx c = { .T = 7, .K = 13, .N = 5, .r = 3, .scale = 1.5f };
  c.x = rbuf(&rng, c.T * c.K, 1);
  c.w = rbuf(&rng, c.N * c.K, 1);
  c.a = rbuf(&rng, c.r * c.K, 1);
  c.b = rbuf(&rng, c.N * c.r, 1);
  c.xa = fbuf(c.T * c.r);
  c.y = fbuf(c.T * c.N);
  c.dout = rbuf(&rng, c.T * c.N, 1);
  float *dx = fbuf(c.T * c.K), *dw = fbuf(c.N * c.K);
  tb__k_linear_backward_input(dx, c.dout, c.w, c.T, c.K, c.N);
  tb__k_linear_backward_weight(dw, c.dout, c.x, c.T, c.K, c.N);
  check_grad("linear dx", c.x, dx, c.T * c.K, 1, linear_obj, &c, 1e-2f, 1e-3,
             1e-3);
  check_grad("linear dw", c.w, dw, c.N * c.K, 1, linear_obj, &c, 1e-2f, 1e-3,
             1e-3);

  float *ldx = fbuf(c.T * c.K), *lda = fbuf(c.r * c.K);
  float *ldb = fbuf(c.N * c.r), *scratch = fbuf(c.T * c.r);
  lora_obj(&c);
  tb__k_lora_backward(ldx, lda, ldb, scratch, c.dout, c.x, c.xa, c.a, c.b,
                      c.scale, c.T, c.K, c.N, c.r);
  check_grad("lora dx", c.x, ldx, c.T * c.K, 1, lora_obj, &c, 1e-2f, 1e-3,
             1e-3);
  check_grad("lora dA", c.a, lda, c.r * c.K, 1, lora_obj, &c, 1e-2f, 1e-3,
             1e-3);
  check_grad("lora dB", c.b, ldb, c.N * c.r, 1, lora_obj, &c, 1e-2f, 1e-3,
             1e-3);
  free_all();
}

typedef struct {
  size_t T, C, NH, D;
  float *x, *w, *out, *dout, *cos_t, *sin_t, *up;
} row_ctx;

static double rmsnorm_obj(void *p) {
  row_ctx *c = p;
  tb__k_rmsnorm_forward(c->out, NULL, c->x, c->w, 1e-5f, c->T, c->C);
  return dot(c->out, c->dout, c->T * c->C);
}

static double rope_obj(void *p) {
  row_ctx *c = p;
  tb__k_rope_forward(c->out, c->x, c->cos_t, c->sin_t, c->T, c->NH, c->D);
  return dot(c->out, c->dout, c->T * c->NH * c->D);
}

static double swiglu_obj(void *p) {
  row_ctx *c = p; /* x is the gate */
  tb__k_swiglu_forward(c->out, c->x, c->up, c->T * c->C);
  return dot(c->out, c->dout, c->T * c->C);
}

TEST(rmsnorm_and_swiglu_gate_gradients) {
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 22);
  row_ctx c = { .T = 7, .C = 13 };
  c.x = rbuf(&rng, c.T * c.C, 1);
  c.w = rbuf(&rng, c.C, 1);
  c.out = fbuf(c.T * c.C);
  c.dout = rbuf(&rng, c.T * c.C, 1);
  float *rstd = fbuf(c.T), *dx = fbuf(c.T * c.C), *dw = fbuf(c.C);
  tb__k_rmsnorm_forward(c.out, rstd, c.x, c.w, 1e-5f, c.T, c.C);
  tb__k_rmsnorm_backward(dx, dw, c.dout, c.x, c.w, rstd, c.T, c.C);
  check_grad("rmsnorm dx", c.x, dx, c.T * c.C, 1, rmsnorm_obj, &c, 1e-2f,
             2e-3, 1e-2);
  check_grad("rmsnorm dw", c.w, dw, c.C, 1, rmsnorm_obj, &c, 1e-2f, 2e-3,
             1e-2);

  /* Gate values up to about +-4 cover both tails of the sigmoid. */
  c.x = rbuf(&rng, c.T * c.C, 2);
  c.up = rbuf(&rng, c.T * c.C, 1);
  float *dg = fbuf(c.T * c.C), *du = fbuf(c.T * c.C);
  tb__k_swiglu_backward(fbuf(c.T * c.C), dg, du, c.dout, c.x, c.up,
                        c.T * c.C);
  check_grad("swiglu dgate", c.x, dg, c.T * c.C, 1, swiglu_obj, &c, 1e-2f,
             2e-3, 1e-2);
  free_all();
}

static double swiglu_up_obj(void *p) {
  row_ctx *c = p; /* x is up, up is the gate */
  tb__k_swiglu_forward(c->out, c->up, c->x, c->T * c->C);
  return dot(c->out, c->dout, c->T * c->C);
}

TEST(swiglu_up_and_rope_gradients) {
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 23);
  row_ctx c = { .T = 7, .C = 13 };
  float *gate = rbuf(&rng, c.T * c.C, 2), *up = rbuf(&rng, c.T * c.C, 1);
  c.dout = rbuf(&rng, c.T * c.C, 1);
  c.out = fbuf(c.T * c.C);
  float *dg = fbuf(c.T * c.C), *du = fbuf(c.T * c.C);
  tb__k_swiglu_backward(fbuf(c.T * c.C), dg, du, c.dout, gate, up,
                        c.T * c.C);
  c.x = up;
  c.up = gate;
  check_grad("swiglu dup", c.x, du, c.T * c.C, 1, swiglu_up_obj, &c, 1e-2f,
             1e-3, 1e-3);

  row_ctx r = { .T = 7, .NH = 3, .D = 6 };
  size_t n = r.T * r.NH * r.D;
  r.x = rbuf(&rng, n, 1);
  r.out = fbuf(n);
  r.dout = rbuf(&rng, n, 1);
  r.cos_t = fbuf(r.T * r.D / 2);
  r.sin_t = fbuf(r.T * r.D / 2);
  tb__k_rope_table(r.cos_t, r.sin_t, 10000.0f, 3, r.T, r.D);
  float *dx = fbuf(n);
  tb__k_rope_backward(dx, r.dout, r.cos_t, r.sin_t, r.T, r.NH, r.D);
  check_grad("rope dx", r.x, dx, n, 1, rope_obj, &r, 1e-2f, 1e-3, 1e-3);
  free_all();
}

typedef struct {
  size_t T, H, KVH, D;
  float *q, *k, *v, *out, *lse, *dout, *scratch;
} attn_ctx;

static double attn_obj(void *p) {
  attn_ctx *c = p;
  tb__k_attention_forward(c->out, c->lse, c->scratch, c->q, c->k, c->v, c->T,
                          0, c->H, c->KVH, c->D);
  return dot(c->out, c->dout, c->T * c->H * c->D);
}

static void attention_grad_case(uint64_t seed, size_t T, size_t stride) {
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  openblas_set_num_threads(1);
  attn_ctx c = { .T = T, .H = 4, .KVH = 2, .D = 6 };
  size_t nq = c.T * c.H * c.D, nk = c.T * c.KVH * c.D;
  c.q = rbuf(&rng, nq, 1);
  c.k = rbuf(&rng, nk, 1);
  c.v = rbuf(&rng, nk, 1);
  c.out = fbuf(nq);
  c.lse = fbuf(c.T * c.H);
  c.dout = rbuf(&rng, nq, 1);
  c.scratch = fbuf(tb__k_attention_scratch_floats(c.T, c.H, c.KVH, c.D));
  float *dq = fbuf(nq), *dk = fbuf(nk), *dv = fbuf(nk);
  attn_obj(&c);
  tb__k_attention_backward(dq, dk, dv, c.scratch, c.dout, c.q, c.k, c.v, c.out,
                           c.lse, c.T, c.H, c.KVH, c.D);
  check_grad("attention dq", c.q, dq, nq, stride, attn_obj, &c, 1e-2f, 2e-3,
             1e-2);
  check_grad("attention dk", c.k, dk, nk, stride, attn_obj, &c, 1e-2f, 2e-3,
             1e-2);
  check_grad("attention dv", c.v, dv, nk, stride, attn_obj, &c, 1e-2f, 2e-3,
             1e-2);
  free_all();
}

TEST(attention_gradients) {
  attention_grad_case(24, 7, 1);
  /* Past one query block, sampled every 5th element. */
  attention_grad_case(25, 70, 5);
}

typedef struct {
  size_t T, V, K;
  float *logits, *lse, *lp, *coef;
  int32_t *targets;
} logit_ctx;

static double logit_obj(void *p) {
  logit_ctx *c = p;
  tb__k_logprobs(c->lse, c->lp, c->logits, c->targets, c->T, c->V, c->K);
  return dot(c->lp, c->coef, c->T * c->K);
}

TEST(logits_gradient) {
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 26);
  logit_ctx c = { .T = 5, .V = 37, .K = 2 };
  c.logits = rbuf(&rng, c.T * c.V, 2);
  c.lse = fbuf(c.T);
  c.lp = fbuf(c.T * c.K);
  c.coef = rbuf(&rng, c.T * c.K, 1);
  c.targets = zbuf(c.T * c.K * sizeof(int32_t));
  for (size_t i = 0; i < c.T * c.K; i++)
    c.targets[i] = (int32_t)(tb__k_rng_next(&rng) % c.V);
  c.targets[1] = c.targets[0]; /* the same target twice in one row */
  float *dl = fbuf(c.T * c.V);
  logit_obj(&c);
  tb__k_logits_backward(dl, c.logits, c.lse, c.targets, c.coef, c.T, c.V, c.K);
  check_grad("dlogits", c.logits, dl, c.T * c.V, 1, logit_obj, &c, 1e-2f,
             1e-3, 1e-2);
  free_all();
}

/* ------------------------------------------------------------ LoRA head */

enum { L_CE, L_IS, L_PPO, L_CISPO, L_DRO, L_COUNT };
static const char *const loss_names[L_COUNT] = { "cross_entropy",
                                                 "importance_sampling", "ppo",
                                                 "cispo", "dro" };

/* logits = h W^T + scale (h A^T) B^T over a tiny vocabulary, then a loss:
 * the last layer of a model with a LoRA adapter on the unembedding. */
typedef struct {
  size_t T, C, V, r;
  int loss;
  float scale, clip_lo, clip_hi, beta;
  int32_t *targets;
  float *weights, *lp_samp, *adv;
  double *h, *w, *a, *b; /* double copies for the independent objective */
} head_ctx;

/* The head and loss in double, written from the Tinker definitions
 * without any kernel. */
static double head_obj_double(head_ctx *c, double *lp_out) {
  double total = 0.0;
  for (size_t t = 0; t < c->T; t++) {
    double logits[64], ha[8];
    for (size_t j = 0; j < c->r; j++) {
      ha[j] = 0.0;
      for (size_t i = 0; i < c->C; i++)
        ha[j] += c->h[t * c->C + i] * c->a[j * c->C + i];
    }
    double mx = -INFINITY, sum = 0.0;
    for (size_t v = 0; v < c->V; v++) {
      double z = 0.0;
      for (size_t i = 0; i < c->C; i++)
        z += c->h[t * c->C + i] * c->w[v * c->C + i];
      for (size_t j = 0; j < c->r; j++)
        z += c->scale * ha[j] * c->b[v * c->r + j];
      logits[v] = z;
      mx = fmax(mx, z);
    }
    for (size_t v = 0; v < c->V; v++)
      sum += exp(logits[v] - mx);
    double lp = logits[c->targets[t]] - mx - log(sum);
    if (lp_out != NULL)
      lp_out[t] = lp;
    double ratio = exp(lp - c->lp_samp[t]), adv = c->adv[t];
    double clipped = fmin(fmax(ratio, c->clip_lo), c->clip_hi);
    switch (c->loss) {
    case L_CE: total += -lp * c->weights[t]; break;
    case L_IS: total += -ratio * adv; break;
    case L_PPO: total += -fmin(ratio * adv, clipped * adv); break;
    case L_CISPO: total += -clipped * lp * adv; break; /* value only */
    default: {
      double d = lp - c->lp_samp[t];
      total += -(lp * adv - 0.5 * c->beta * d * d);
    }
    }
  }
  return total;
}

/* CISPO detaches the clipped ratio, so its gradient is not the derivative
 * of its value; the numeric check holds the ratio fixed at the point of
 * evaluation, which is what stop-gradient means. */
static double cispo_fixed_obj(head_ctx *c, const double *ratio0) {
  double lp[16], total = 0.0;
  head_obj_double(c, lp);
  for (size_t t = 0; t < c->T; t++)
    total += -fmin(fmax(ratio0[t], c->clip_lo), c->clip_hi) * lp[t] * c->adv[t];
  return total;
}

static void head_case(int loss) {
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 30 + (uint64_t)loss);
  openblas_set_num_threads(1);
  head_ctx c = { .T = 7, .C = 13, .V = 37, .r = 3, .loss = loss,
                 .scale = 2.0f, .clip_lo = 0.8f, .clip_hi = 1.2f,
                 .beta = 0.3f };
  size_t T = c.T, C = c.C, V = c.V, r = c.r;
  float *h = rbuf(&rng, T * C, 1), *w = rbuf(&rng, V * C, 0.5f);
  float *a = rbuf(&rng, r * C, 0.5f), *b = rbuf(&rng, V * r, 0.5f);
  c.targets = zbuf(T * sizeof(int32_t));
  for (size_t t = 0; t < T; t++)
    c.targets[t] = (int32_t)(tb__k_rng_next(&rng) % V);
  c.weights = rbuf(&rng, T, 1);
  c.adv = rbuf(&rng, T, 1);
  c.lp_samp = fbuf(T);
  c.h = zbuf(T * C * sizeof(double));
  c.w = zbuf(V * C * sizeof(double));
  c.a = zbuf(r * C * sizeof(double));
  c.b = zbuf(V * r * sizeof(double));
  for (size_t i = 0; i < T * C; i++) c.h[i] = h[i];
  for (size_t i = 0; i < V * C; i++) c.w[i] = w[i];
  for (size_t i = 0; i < r * C; i++) c.a[i] = a[i];
  for (size_t i = 0; i < V * r; i++) c.b[i] = b[i];

  /* Sampling log-probs put every ratio clearly inside or outside the clip
   * range (r = 0.61, 1.49, 0.95, 1.82, 1.05, ...), away from the kinks
   * that a finite difference cannot straddle. */
  static const double offs[5] = { 0.5, -0.4, 0.05, -0.6, -0.05 };
  double lp0[16], ratio0[16];
  head_obj_double(&c, lp0);
  for (size_t t = 0; t < T; t++) {
    c.lp_samp[t] = (float)(lp0[t] + offs[t % 5]);
    ratio0[t] = exp(lp0[t] - c.lp_samp[t]);
  }

  /* Analytic gradient with the kernels, as a model's last layer runs. */
  float *logits = fbuf(T * V), *xa = fbuf(T * r), *lse = fbuf(T);
  float *lp = fbuf(T), *coef = fbuf(T), *loss_t = fbuf(T);
  float *da = fbuf(r * C), *db = fbuf(V * r), *dh = fbuf(T * C);
  float *scratch = fbuf(T * r);
  tb__k_linear_forward(logits, h, w, 0, T, C, V);
  tb__k_lora_forward(logits, xa, h, a, b, c.scale, T, C, V, r);
  tb__k_logprobs(lse, lp, logits, c.targets, T, V, 1);
  double sum = 0.0;
  switch (loss) {
  case L_CE: sum = tb__k_loss_cross_entropy(loss_t, coef, lp, c.weights, T); break;
  case L_IS:
    sum = tb__k_loss_importance_sampling(loss_t, coef, lp, c.lp_samp, c.adv, T);
    break;
  case L_PPO:
    sum = tb__k_loss_ppo(loss_t, coef, lp, c.lp_samp, c.adv, c.clip_lo,
                         c.clip_hi, T);
    break;
  case L_CISPO:
    sum = tb__k_loss_cispo(loss_t, coef, lp, c.lp_samp, c.adv, c.clip_lo,
                           c.clip_hi, T);
    break;
  default:
    sum = tb__k_loss_dro(loss_t, coef, lp, c.lp_samp, c.adv, c.beta, T);
  }
  for (size_t t = 0; t < T; t++)
    ASSERT_NEAR(lp[t], lp0[t], 1e-5, 1e-5);
  ASSERT_NEAR(sum, head_obj_double(&c, NULL), 1e-4, 1e-5);
  tb__k_logits_backward(logits, logits, lse, c.targets, coef, T, V, 1);
  tb__k_lora_backward(dh, da, db, scratch, logits, h, xa, a, b, c.scale, T, C,
                      V, r);
  tb__k_linear_backward_input(dh, logits, w, T, C, V);

  /* Central differences in double. */
  struct { double *p; const float *g; size_t n; const char *name; } sets[3] = {
    { c.a, da, r * C, "dA" }, { c.b, db, V * r, "dB" }, { c.h, dh, T * C, "dh" }
  };
  const double eps = 1e-5;
  for (int s = 0; s < 3; s++)
    for (size_t i = 0; i < sets[s].n; i++) {
      double save = sets[s].p[i];
      sets[s].p[i] = save + eps;
      double fp = loss == L_CISPO ? cispo_fixed_obj(&c, ratio0)
                                  : head_obj_double(&c, NULL);
      sets[s].p[i] = save - eps;
      double fm = loss == L_CISPO ? cispo_fixed_obj(&c, ratio0)
                                  : head_obj_double(&c, NULL);
      sets[s].p[i] = save;
      double fd = (fp - fm) / (2 * eps);
      double g = sets[s].g[i];
      if (!(fabs(g - fd) <= 1e-4 + 1e-3 * fabs(fd)))
        tb_test_fail(__FILE__, __LINE__, "%s %s[%zu]: analytic %.9g, numeric "
                     "%.9g", loss_names[loss], sets[s].name, i, g, fd);
    }
  free_all();
}

TEST(lora_gradients_through_each_loss) {
  for (int l = 0; l < L_COUNT; l++)
    head_case(l);
}

TEST_LIST(
  TEST_ENTRY(linear_and_lora_gradients),
  TEST_ENTRY(rmsnorm_and_swiglu_gate_gradients),
  TEST_ENTRY(swiglu_up_and_rope_gradients),
  TEST_ENTRY(attention_gradients),
  TEST_ENTRY(logits_gradient),
  TEST_ENTRY(lora_gradients_through_each_loss),
)

/*
 * kernels/: every fast kernel against its naive reference on random inputs
 * of awkward sizes, with explicit tolerances; hand-worked values for the
 * losses, AdamW and clipping; sampling behaviour; known answers for the
 * PRNG.  Gradient checks by finite differences are in test_kernels_grad.c,
 * decoding's kernels in test_kernels_decode.c.
 */
#include "kernels_helpers.h"

#include "kernels/fastmath.h"
#include "kernels/ref.h"

TEST(linear_matches_reference) {
  tb__k_rng_t rng;
  setup(&rng, 1);
  const size_t T = 7, K = 13, N = 5;
  float *x = rbuf(&rng, T * K, 1), *w = rbuf(&rng, N * K, 1);
  float *y0 = rbuf(&rng, T * N, 1), *dy = rbuf(&rng, T * N, 1);
  for (int acc = 0; acc <= 1; acc++) {
    float *y = copy(y0, T * N), *yr = copy(y0, T * N);
    tb__k_linear_forward(y, x, w, acc, T, K, N);
    tb__kref_linear_forward(yr, x, w, acc, T, K, N);
    ASSERT_CLOSE(y, yr, T * N, 1e-5, 1e-5);
  }
  /* Backward accumulates into what is already there. */
  float *dx0 = rbuf(&rng, T * K, 1), *dw0 = rbuf(&rng, N * K, 1);
  float *dx = copy(dx0, T * K), *dxr = copy(dx0, T * K);
  float *dw = copy(dw0, N * K), *dwr = copy(dw0, N * K);
  tb__k_linear_backward_input(dx, dy, w, T, K, N);
  tb__kref_linear_backward_input(dxr, dy, w, T, K, N);
  tb__k_linear_backward_weight(dw, dy, x, T, K, N);
  tb__kref_linear_backward_weight(dwr, dy, x, T, K, N);
  ASSERT_CLOSE(dx, dxr, T * K, 1e-5, 1e-5);
  ASSERT_CLOSE(dw, dwr, N * K, 1e-5, 1e-5);
  ASSERT(fabsf(dx[0] - dx0[0]) > 0.0f);
  free_all();
}

TEST(lora_matches_reference) {
  tb__k_rng_t rng;
  setup(&rng, 2);
  const size_t T = 7, K = 13, N = 5, r = 3;
  const float scale = 2.5f;
  float *x = rbuf(&rng, T * K, 1), *a = rbuf(&rng, r * K, 1);
  float *b = rbuf(&rng, N * r, 1), *dy = rbuf(&rng, T * N, 1);
  float *y0 = rbuf(&rng, T * N, 1);
  float *y = copy(y0, T * N), *yr = copy(y0, T * N);
  float *xa = fbuf(T * r), *xar = fbuf(T * r);
  tb__k_lora_forward(y, xa, x, a, b, scale, T, K, N, r);
  tb__kref_lora_forward(yr, xar, x, a, b, scale, T, K, N, r);
  ASSERT_CLOSE(xa, xar, T * r, 1e-5, 1e-5);
  ASSERT_CLOSE(y, yr, T * N, 1e-4, 1e-5);

  float *dx0 = rbuf(&rng, T * K, 1), *da0 = rbuf(&rng, r * K, 1);
  float *db0 = rbuf(&rng, N * r, 1);
  float *dx = copy(dx0, T * K), *dxr = copy(dx0, T * K);
  float *da = copy(da0, r * K), *dar = copy(da0, r * K);
  float *db = copy(db0, N * r), *dbr = copy(db0, N * r);
  float *s = fbuf(T * r), *sr = fbuf(T * r);
  tb__k_lora_backward(dx, da, db, s, dy, x, xa, a, b, scale, T, K, N, r);
  tb__kref_lora_backward(dxr, dar, dbr, sr, dy, x, xar, a, b, scale, T, K, N,
                         r);
  ASSERT_CLOSE(dx, dxr, T * K, 1e-4, 1e-5);
  ASSERT_CLOSE(da, dar, r * K, 1e-4, 1e-5);
  ASSERT_CLOSE(db, dbr, N * r, 1e-4, 1e-5);

  /* Without dx, dA and dB come out the same. */
  float *da2 = copy(da0, r * K), *db2 = copy(db0, N * r);
  tb__k_lora_backward(NULL, da2, db2, s, dy, x, xa, a, b, scale, T, K, N, r);
  ASSERT_CLOSE(da2, da, r * K, 0, 0);
  ASSERT_CLOSE(db2, db, N * r, 0, 0);
  free_all();
}

/* Three adapters on one input (as q, k and v), run as one stacked down
 * product and three up products on column slices, against the reference
 * run per adapter. */
TEST(lora_halves_stacked_match_per_adapter_reference) {
  tb__k_rng_t rng;
  setup(&rng, 12);
  enum { G = 3 };
  const size_t T = 7, K = 13, r = 3, R = G * r, N[G] = { 5, 2, 4 };
  const float scale = 1.5f;
  float *x = rbuf(&rng, T * K, 1), *a = rbuf(&rng, R * K, 1);
  float *xa = fbuf(T * R), *dxa = fbuf(T * R);
  float *da0 = rbuf(&rng, R * K, 1), *dx0 = rbuf(&rng, T * K, 1);
  float *da = copy(da0, R * K), *dar = copy(da0, R * K);
  float *dx = copy(dx0, T * K), *dxr = copy(dx0, T * K);
  float *b[G], *y[G], *yr[G], *dy[G], *db[G], *dbr[G];
  tb__k_lora_down(xa, x, a, T, K, R);
  for (int j = 0; j < G; j++) {
    b[j] = rbuf(&rng, N[j] * r, 1);
    dy[j] = rbuf(&rng, T * N[j], 1);
    y[j] = rbuf(&rng, T * N[j], 1);
    yr[j] = copy(y[j], T * N[j]);
    db[j] = rbuf(&rng, N[j] * r, 1);
    dbr[j] = copy(db[j], N[j] * r);
    float *xar = fbuf(T * r), *sr = fbuf(T * r);
    tb__k_lora_up(y[j], xa + j * r, R, b[j], scale, T, N[j], r);
    tb__kref_lora_forward(yr[j], xar, x, a + j * r * K, b[j], scale, T, K,
                          N[j], r);
    ASSERT_CLOSE(y[j], yr[j], T * N[j], 1e-4, 1e-5);
    for (size_t t = 0; t < T; t++)
      ASSERT_CLOSE(xa + t * R + j * r, xar + t * r, r, 1e-5, 1e-5);
    tb__k_lora_up_backward(dxa + j * r, db[j], dy[j], xa + j * r, R, b[j],
                           scale, T, N[j], r);
    tb__kref_lora_backward(dxr, dar + j * r * K, dbr[j], sr, dy[j], x, xar,
                           a + j * r * K, b[j], scale, T, K, N[j], r);
    ASSERT_CLOSE(db[j], dbr[j], N[j] * r, 1e-4, 1e-5);
  }
  tb__k_lora_down_backward(dx, da, dxa, x, a, T, K, R);
  ASSERT_CLOSE(da, dar, R * K, 1e-4, 1e-5);
  ASSERT_CLOSE(dx, dxr, T * K, 1e-4, 1e-5);
  free_all();
}

/* dA through the RMSNorm's input, against dA from the normalised rows. */
TEST(lora_da_through_rmsnorm_matches_reference) {
  tb__k_rng_t rng;
  setup(&rng, 13);
  const size_t T = 9, K = 13, R = 6;
  float *x = rbuf(&rng, T * K, 2), *w = rbuf(&rng, K, 1);
  float *dxa = rbuf(&rng, T * R, 1), *da0 = rbuf(&rng, R * K, 1);
  float *h = fbuf(T * K), *rstd = fbuf(T), *hr = fbuf(T * K), *rr = fbuf(T);
  tb__k_rmsnorm_forward(h, rstd, x, w, 1e-5f, T, K);
  tb__kref_rmsnorm_forward(hr, rr, x, w, 1e-5f, T, K);
  float *da = copy(da0, R * K), *dar = copy(da0, R * K);
  float *dxar = copy(dxa, T * R), *scratch = fbuf(R * K);
  tb__kref_linear_backward_weight(dar, dxar, hr, T, K, R);
  tb__k_lora_da_normed(da, scratch, dxa, x, rstd, w, T, K, R);
  ASSERT_CLOSE(da, dar, R * K, 1e-5, 1e-5);
  free_all();
}

TEST(rmsnorm_swiglu_embedding_match_reference) {
  tb__k_rng_t rng;
  setup(&rng, 3);
  const size_t T = 7, C = 13;
  float *x = rbuf(&rng, T * C, 2), *w = rbuf(&rng, C, 1);
  float *out = fbuf(T * C), *outr = fbuf(T * C);
  float *rs = fbuf(T), *rsr = fbuf(T);
  tb__k_rmsnorm_forward(out, rs, x, w, 1e-5f, T, C);
  tb__kref_rmsnorm_forward(outr, rsr, x, w, 1e-5f, T, C);
  ASSERT_CLOSE(out, outr, T * C, 1e-6, 1e-5);
  ASSERT_CLOSE(rs, rsr, T, 0, 1e-6);
  float *dout = rbuf(&rng, T * C, 1);
  float *dx0 = rbuf(&rng, T * C, 1);
  float *dx = copy(dx0, T * C), *dxr = copy(dx0, T * C);
  float *dw = fbuf(C), *dwr = fbuf(C);
  tb__k_rmsnorm_backward(dx, dw, dout, x, w, rs, T, C);
  tb__kref_rmsnorm_backward(dxr, dwr, dout, x, w, rs, T, C);
  ASSERT_CLOSE(dx, dxr, T * C, 1e-5, 1e-4);
  ASSERT_CLOSE(dw, dwr, C, 1e-5, 1e-4);

  const size_t n = 37;
  float *g = rbuf(&rng, n, 3), *u = rbuf(&rng, n, 1);
  /* Both tails of the sigmoid, past where exp(-g) over- and underflows. */
  g[0] = 100.0f, g[1] = -100.0f, g[2] = -1e30f, g[3] = 1e30f, g[4] = 20.0f;
  float *h = fbuf(n), *hr = fbuf(n);
  tb__k_swiglu_forward(h, g, u, n);
  tb__kref_swiglu_forward(hr, g, u, n);
  ASSERT_CLOSE(h, hr, n, 1e-6, 1e-5);
  float *dh = rbuf(&rng, n, 1);
  float *dg = fbuf(n), *dgr = fbuf(n), *du = fbuf(n), *dur = fbuf(n);
  float *h1 = fbuf(n);
  tb__k_swiglu_backward(h1, dg, du, dh, g, u, n);
  tb__kref_swiglu_backward(dgr, dur, dh, g, u, n);
  ASSERT_CLOSE(dg, dgr, n, 1e-6, 1e-5);
  ASSERT_CLOSE(du, dur, n, 1e-6, 1e-5);
  /* With h, the same gradients and the forward's output, bit for bit. */
  float *h2 = fbuf(n), *dg2 = fbuf(n), *du2 = fbuf(n);
  tb__k_swiglu_backward(h2, dg2, du2, dh, g, u, n);
  ASSERT_CLOSE(h2, h, n, 0, 0);
  ASSERT_CLOSE(dg2, dg, n, 0, 0);
  ASSERT_CLOSE(du2, du, n, 0, 0);

  const size_t V = 37;
  float *table = rbuf(&rng, V * C, 1), *e = fbuf(T * C), *er = fbuf(T * C);
  int32_t tok[7] = { 0, 36, 5, 5, 17, 1, 35 };
  tb__k_embedding_forward(e, tok, table, T, C);
  tb__kref_embedding_forward(er, tok, table, T, C);
  ASSERT_CLOSE(e, er, T * C, 0, 0);
  ASSERT_CLOSE(e + C, table + 36 * C, C, 0, 0);
  free_all();
}

TEST(rope_matches_reference) {
  tb__k_rng_t rng;
  setup(&rng, 4);
  const size_t T = 7, NH = 3, D = 6, pos0 = 5, half = D / 2;
  const float theta = 10000.0f;
  float *c = fbuf((pos0 + T) * half), *s = fbuf((pos0 + T) * half);
  float *cr = fbuf((pos0 + T) * half), *sr = fbuf((pos0 + T) * half);
  tb__k_rope_table(c, s, theta, 0, pos0 + T, D);
  tb__kref_rope_table(cr, sr, theta, 0, pos0 + T, D);
  /* The fast table rounds the angle to float as PyTorch does; at position
   * 11 that moves it by at most about 1e-6 radians. */
  ASSERT_CLOSE(c, cr, (pos0 + T) * half, 2e-6, 0);
  ASSERT_CLOSE(s, sr, (pos0 + T) * half, 2e-6, 0);
  /* A table that starts at pos0 equals the tail of one that starts at 0. */
  float *c2 = fbuf(T * half), *s2 = fbuf(T * half);
  tb__k_rope_table(c2, s2, theta, pos0, T, D);
  ASSERT_CLOSE(c2, c + pos0 * half, T * half, 0, 0);
  ASSERT_CLOSE(s2, s + pos0 * half, T * half, 0, 0);
  /* Position 1, pair 0: angle 1 radian. */
  ASSERT_NEAR(c[half], cos(1.0), 1e-7, 0);
  ASSERT_NEAR(s[half], sin(1.0), 1e-7, 0);

  float *x = rbuf(&rng, T * NH * D, 1);
  float *y = fbuf(T * NH * D), *yr = fbuf(T * NH * D);
  tb__k_rope_forward(y, x, c2, s2, T, NH, D);
  tb__kref_rope_forward(yr, x, c2, s2, T, NH, D);
  ASSERT_CLOSE(y, yr, T * NH * D, 1e-6, 1e-6);
  /* In place gives the same; backward undoes forward. */
  float *xi = copy(x, T * NH * D);
  tb__k_rope_forward(xi, xi, c2, s2, T, NH, D);
  ASSERT_CLOSE(xi, y, T * NH * D, 0, 0);
  float *dx = fbuf(T * NH * D), *dxr = fbuf(T * NH * D);
  tb__k_rope_backward(dx, y, c2, s2, T, NH, D);
  tb__kref_rope_backward(dxr, y, c2, s2, T, NH, D);
  ASSERT_CLOSE(dx, dxr, T * NH * D, 1e-6, 1e-6);
  ASSERT_CLOSE(dx, x, T * NH * D, 1e-6, 1e-5);
  free_all();
}

/* Llama 3.2's rope_scaling (factor 32, low 1, high 4, 8192 positions) on
 * head_dim 64, theta 500000: the frequencies kept, divided and blended
 * all occur, and the float kernel agrees with Meta's formulation in
 * double; the table from frequencies equals the default table when they
 * are unscaled. */
TEST(rope_llama3_scaling_and_bias_match_reference) {
  tb__k_rng_t rng;
  setup(&rng, 9);
  const size_t D = 64, half = D / 2, P = 40;
  float *f = fbuf(half), *fr = fbuf(half), *f0 = fbuf(half);
  tb__k_rope_inv_freq(f0, 500000.0f, D);
  for (size_t i = 0; i < half; i++)
    ASSERT_NEAR(f0[i], pow(500000.0, -(double)(2 * i) / (double)D), 0, 1e-6);
  memcpy(f, f0, half * sizeof(float));
  memcpy(fr, f0, half * sizeof(float));
  tb__k_rope_llama3(f, 32.0f, 1.0f, 4.0f, 8192.0f, D);
  tb__kref_rope_llama3(fr, 32.0f, 1.0f, 4.0f, 8192.0f, D);
  ASSERT_CLOSE(f, fr, half, 0, 2e-6);
  int kept = 0, divided = 0, blended = 0;
  for (size_t i = 0; i < half; i++) {
    if (f[i] == f0[i])
      kept++;
    else if (fabs(f[i] - f0[i] / 32.0f) <= 1e-6 * f0[i])
      divided++;
    else
      blended++;
  }
  ASSERT(kept > 0 && divided > 0 && blended > 0);

  float *c = fbuf(P * half), *s = fbuf(P * half);
  float *cr = fbuf(P * half), *sr = fbuf(P * half);
  tb__k_rope_table_freq(c, s, f0, 3, P, D);
  tb__k_rope_table(cr, sr, 500000.0f, 3, P, D);
  ASSERT_CLOSE(c, cr, P * half, 0, 0);
  ASSERT_CLOSE(s, sr, P * half, 0, 0);
  tb__k_rope_table_freq(c, s, f, 0, P, D);
  ASSERT_NEAR(c[5 * half + half - 1], cos(5.0 * fr[half - 1]), 1e-6, 0);

  const size_t T = 5, N = 19;
  float *y = rbuf(&rng, T * N, 1), *b = rbuf(&rng, N, 1);
  float *yr = copy(y, T * N);
  tb__k_bias_forward(y, b, T, N);
  tb__kref_bias_forward(yr, b, T, N);
  ASSERT_CLOSE(y, yr, T * N, 0, 0);
  free_all();
}

static void attention_case(uint64_t seed, size_t T, size_t pos0, size_t H,
                           size_t KVH, size_t D) {
  tb__k_rng_t rng;
  setup(&rng, seed);
  size_t nk = pos0 + T;
  float *q = rbuf(&rng, T * H * D, 1), *k = rbuf(&rng, nk * KVH * D, 1);
  float *v = rbuf(&rng, nk * KVH * D, 1);
  float *scratch = fbuf(tb__k_attention_scratch_floats(nk, H, KVH, D));
  float *out = fbuf(T * H * D), *outr = fbuf(T * H * D);
  float *lse = fbuf(T * H), *lser = fbuf(T * H);
  tb__k_attention_forward(out, lse, scratch, q, k, v, T, pos0, H, KVH, D);
  tb__kref_attention_forward(outr, lser, q, k, v, T, pos0, H, KVH, D);
  ASSERT_CLOSE(out, outr, T * H * D, 1e-5, 1e-4);
  ASSERT_CLOSE(lse, lser, T * H, 1e-5, 1e-5);

  /* The newest row equals one decoding step against the cache. */
  float *dec = fbuf(H * D), *decr = fbuf(H * D);
  tb__k_attention_decode(dec, scratch, q + (T - 1) * H * D, k, v, nk, H, KVH,
                         D);
  tb__kref_attention_decode(decr, q + (T - 1) * H * D, k, v, nk, H, KVH, D);
  ASSERT_CLOSE(dec, decr, H * D, 1e-5, 1e-4);
  ASSERT_CLOSE(dec, out + (T - 1) * H * D, H * D, 1e-5, 1e-4);

  if (pos0 != 0) {
    free_all();
    return;
  }
  float *dout = rbuf(&rng, T * H * D, 1);
  float *dq0 = rbuf(&rng, T * H * D, 1), *dk0 = rbuf(&rng, T * KVH * D, 1);
  float *dv0 = rbuf(&rng, T * KVH * D, 1);
  float *dq = copy(dq0, T * H * D), *dqr = copy(dq0, T * H * D);
  float *dk = copy(dk0, T * KVH * D), *dkr = copy(dk0, T * KVH * D);
  float *dv = copy(dv0, T * KVH * D), *dvr = copy(dv0, T * KVH * D);
  tb__k_attention_backward(dq, dk, dv, scratch, dout, q, k, v, out, lse, T, H,
                           KVH, D);
  tb__kref_attention_backward(dqr, dkr, dvr, dout, q, k, v, T, H, KVH, D);
  ASSERT_CLOSE(dq, dqr, T * H * D, 1e-4, 1e-3);
  ASSERT_CLOSE(dk, dkr, T * KVH * D, 1e-4, 1e-3);
  ASSERT_CLOSE(dv, dvr, T * KVH * D, 1e-4, 1e-3);
  free_all();
}

TEST(attention_matches_reference) {
  attention_case(5, 7, 0, 4, 2, 6);      /* one partial block */
  attention_case(6, 150, 0, 4, 2, 6);    /* three blocks, ragged tail */
  attention_case(7, 64, 0, 3, 3, 5);     /* exactly one block, MHA */
  attention_case(8, 70, 9, 4, 1, 6);     /* prefill after a cached prefix */
  attention_case(9, 1, 40, 4, 2, 6);     /* one new token */
}

TEST(logprobs_and_logits_backward_match_reference) {
  tb__k_rng_t rng;
  setup(&rng, 10);
  const size_t T = 5, V = 37;
  for (size_t K = 1; K <= 3; K += 2) {
    float *logits = rbuf(&rng, T * V, 3);
    int32_t targets[15];
    for (size_t i = 0; i < T * K; i++)
      targets[i] = (int32_t)(tb__k_rng_next(&rng) % V);
    float *lse = fbuf(T), *lser = fbuf(T), *lp = fbuf(T * K),
          *lpr = fbuf(T * K);
    tb__k_logprobs(lse, lp, logits, targets, T, V, K);
    tb__kref_logprobs(lser, lpr, logits, targets, T, V, K);
    ASSERT_CLOSE(lse, lser, T, 1e-5, 1e-6);
    ASSERT_CLOSE(lp, lpr, T * K, 1e-5, 1e-5);
    float *coef = rbuf(&rng, T * K, 1);
    float *dl = fbuf(T * V), *dlr = fbuf(T * V);
    tb__k_logits_backward(dl, logits, lse, targets, coef, T, V, K);
    tb__kref_logits_backward(dlr, logits, targets, coef, T, V, K);
    ASSERT_CLOSE(dl, dlr, T * V, 1e-6, 1e-5);
    /* In place, the memory-lean use. */
    tb__k_logits_backward(logits, logits, lse, targets, coef, T, V, K);
    ASSERT_CLOSE(logits, dl, T * V, 0, 0);
    /* Each row's gradient sums to zero (softmax is shift-invariant). */
    for (size_t t = 0; t < T; t++) {
      double sum = 0;
      for (size_t v = 0; v < V; v++)
        sum += dl[t * V + v];
      ASSERT_NEAR(sum, 0.0, 1e-5, 0);
    }
  }
  /* Uniform logits: lse = log V, every lp = -log V. */
  float flat[37] = { 0 };
  int32_t tgt = 3;
  float l1, p1;
  tb__k_logprobs(&l1, &p1, flat, &tgt, 1, V, 1);
  ASSERT_NEAR(l1, log(37.0), 1e-6, 0);
  ASSERT_NEAR(p1, -log(37.0), 1e-6, 0);
  free_all();
}

TEST(losses_match_reference_and_hand_values) {
  tb__k_rng_t rng;
  setup(&rng, 11);
  const size_t n = 37;
  float *lp = rbuf(&rng, n, 1), *ls = rbuf(&rng, n, 1), *adv = rbuf(&rng, n, 1);
  float *w = rbuf(&rng, n, 1);
  for (size_t i = 0; i < n; i++) {
    lp[i] = -fabsf(lp[i]);
    ls[i] = lp[i] + 0.4f * ls[i];
  }
  float *l = fbuf(n), *lr = fbuf(n), *c = fbuf(n), *cr = fbuf(n);
  double s, sr;

  s = tb__k_loss_cross_entropy(l, c, lp, w, n);
  sr = tb__kref_loss_cross_entropy(lr, cr, lp, w, n);
  ASSERT_NEAR(s, sr, 1e-5, 1e-6);
  ASSERT_CLOSE(l, lr, n, 1e-6, 1e-6);
  ASSERT_CLOSE(c, cr, n, 1e-6, 1e-6);
  s = tb__k_loss_importance_sampling(l, c, lp, ls, adv, n);
  sr = tb__kref_loss_importance_sampling(lr, cr, lp, ls, adv, n);
  ASSERT_NEAR(s, sr, 1e-5, 1e-6);
  ASSERT_CLOSE(l, lr, n, 1e-6, 1e-6);
  ASSERT_CLOSE(c, cr, n, 1e-6, 1e-6);
  s = tb__k_loss_ppo(l, c, lp, ls, adv, 0.8f, 1.2f, n);
  sr = tb__kref_loss_ppo(lr, cr, lp, ls, adv, 0.8f, 1.2f, n);
  ASSERT_NEAR(s, sr, 1e-5, 1e-6);
  ASSERT_CLOSE(l, lr, n, 1e-6, 1e-6);
  ASSERT_CLOSE(c, cr, n, 1e-6, 1e-6);
  s = tb__k_loss_cispo(l, c, lp, ls, adv, 0.8f, 1.2f, n);
  sr = tb__kref_loss_cispo(lr, cr, lp, ls, adv, 0.8f, 1.2f, n);
  ASSERT_NEAR(s, sr, 1e-5, 1e-6);
  ASSERT_CLOSE(l, lr, n, 1e-6, 1e-6);
  ASSERT_CLOSE(c, cr, n, 1e-6, 1e-6);
  s = tb__k_loss_dro(l, c, lp, ls, adv, 0.05f, n);
  sr = tb__kref_loss_dro(lr, cr, lp, ls, adv, 0.05f, n);
  ASSERT_NEAR(s, sr, 1e-5, 1e-6);
  ASSERT_CLOSE(l, lr, n, 1e-6, 1e-6);
  ASSERT_CLOSE(c, cr, n, 1e-6, 1e-6);

  /* Worked by hand.  Cross-entropy: -(0.5 * -2) = 1, coef -0.5; the sum
   * runs over tokens, not a mean. */
  float hl[4], hc[4];
  float lp2[2] = { -2.0f, -1.0f }, w2[2] = { 0.5f, 0.0f };
  ASSERT_NEAR(tb__k_loss_cross_entropy(hl, hc, lp2, w2, 2), 1.0, 1e-7, 0);
  ASSERT_NEAR(hc[0], -0.5, 0, 0);
  ASSERT_NEAR(hl[1], 0.0, 0, 0);
  /* PPO with bounds 0.8/1.2, r = 1.5 or 0.5, A = +-1:
   *   r=1.5 A=+1: min(1.5, 1.2) = 1.2 -> loss -1.2, flat (coef 0)
   *   r=1.5 A=-1: min(-1.5, -1.2) = -1.5 -> loss 1.5, coef -rA = 1.5
   *   r=0.5 A=+1: min(0.5, 0.8) = 0.5 -> loss -0.5, coef -0.5
   *   r=0.5 A=-1: min(-0.5, -0.8) = -0.8 -> loss 0.8, flat */
  float lr4 = logf(1.5f), lh4 = logf(0.5f);
  float plp[4] = { lr4, lr4, lh4, lh4 }, pls[4] = { 0, 0, 0, 0 };
  float pa[4] = { 1, -1, 1, -1 };
  double ps = tb__k_loss_ppo(hl, hc, plp, pls, pa, 0.8f, 1.2f, 4);
  ASSERT_NEAR(hl[0], -1.2, 1e-6, 0);
  ASSERT_NEAR(hc[0], 0.0, 0, 0);
  ASSERT_NEAR(hl[1], 1.5, 1e-6, 0);
  ASSERT_NEAR(hc[1], 1.5, 1e-6, 0);
  ASSERT_NEAR(hl[2], -0.5, 1e-6, 0);
  ASSERT_NEAR(hc[2], -0.5, 1e-6, 0);
  ASSERT_NEAR(hl[3], 0.8, 1e-6, 0);
  ASSERT_NEAR(hc[3], 0.0, 0, 0);
  ASSERT_NEAR(ps, -1.2 + 1.5 - 0.5 + 0.8, 1e-6, 0);
  /* Importance sampling: r = 1.5, A = 2 -> loss -3, coef -3. */
  float two = 2.0f;
  ASSERT_NEAR(tb__k_loss_importance_sampling(hl, hc, plp, pls, &two, 1), -3.0,
              1e-6, 0);
  ASSERT_NEAR(hc[0], -3.0, 1e-6, 0);
  /* CISPO: r = 1.5 clipped to 1.2, lp = log 1.5, A = 2:
   * loss = -1.2 * log(1.5) * 2, coef = -2.4. */
  ASSERT_NEAR(tb__k_loss_cispo(hl, hc, plp, pls, &two, 0.8f, 1.2f, 1),
              -2.4 * log(1.5), 1e-6, 0);
  ASSERT_NEAR(hc[0], -2.4, 1e-6, 0);
  /* DRO: lp = -1, lp_samp = -1.5, A = 2, beta = 0.1:
   * loss = -(-2 - 0.05 * 0.25) = 2.0125, coef = -(2 - 0.1 * 0.5) = -1.95. */
  float dlp = -1.0f, dls = -1.5f;
  ASSERT_NEAR(tb__k_loss_dro(hl, hc, &dlp, &dls, &two, 0.1f, 1), 2.0125, 1e-6,
              0);
  ASSERT_NEAR(hc[0], -1.95, 1e-6, 0);
  free_all();
}

TEST(adamw_two_steps_by_hand) {
  /* lr 0.1, betas 0.9/0.999, eps 1e-8, weight decay 0.01; gradients
   * (0.1, -0.2, 0) then (0.3, 0.1, -0.5).  Step 1: mhat = g, vhat = g^2,
   * so each weight moves by -lr sign(g) after decaying by 0.999:
   * 1 -> 0.999 - 0.1/(1 + 1e-7) = 0.89900001.  Step 2 (bias corrections
   * 0.19 and 0.001999): m = 0.039, v = 9.999e-5, mhat = 0.2052632,
   * sqrt(vhat) = 0.2236515, so 0.89900001 * 0.999 - 0.1 * 0.917781 =
   * 0.8063229. */
  float p[3] = { 1.0f, -2.0f, 0.5f }, m[3] = { 0 }, v[3] = { 0 };
  float g1[3] = { 0.1f, -0.2f, 0.0f }, g2[3] = { 0.3f, 0.1f, -0.5f };
  tb__k_adamw_step(p, m, v, g1, 0.1, 0.9, 0.999, 1e-8, 0.01, 1, 3);
  ASSERT_NEAR(p[0], 0.89900001, 1e-6, 0);
  ASSERT_NEAR(p[1], -1.898, 1e-6, 0);
  ASSERT_NEAR(p[2], 0.4995, 1e-6, 0);
  ASSERT_NEAR(m[1], -0.02, 1e-8, 0);
  ASSERT_NEAR(v[1], 4e-5, 1e-11, 0);
  tb__k_adamw_step(p, m, v, g2, 0.1, 0.9, 0.999, 1e-8, 0.01, 2, 3);
  ASSERT_NEAR(p[0], 0.806322902, 1e-6, 0);
  ASSERT_NEAR(p[1], -1.8694683, 1e-6, 0);
  ASSERT_NEAR(p[2], 0.57341418, 1e-6, 0);
  ASSERT_NEAR(m[0], 0.039, 1e-8, 0);
  ASSERT_NEAR(v[0], 9.999e-5, 1e-10, 0);

  /* Random buffers, Tinker's defaults and a few steps, against the
   * textbook reference. */
  tb__k_rng_t rng;
  setup(&rng, 12);
  const size_t n = 37;
  float *pf = rbuf(&rng, n, 1), *pr = copy(pf, n);
  float *mf = fbuf(n), *mr = fbuf(n), *vf = fbuf(n), *vr = fbuf(n);
  for (long t = 1; t <= 3; t++) {
    float *g = rbuf(&rng, n, 0.1f);
    tb__k_adamw_step(pf, mf, vf, g, 1e-2, 0.9, 0.95, 1e-12, 0.1, t, n);
    tb__kref_adamw_step(pr, mr, vr, g, 1e-2, 0.9, 0.95, 1e-12, 0.1, t, n);
  }
  ASSERT_CLOSE(pf, pr, n, 1e-6, 1e-5);
  ASSERT_CLOSE(mf, mr, n, 1e-7, 1e-5);
  ASSERT_CLOSE(vf, vr, n, 1e-9, 1e-5);
  free_all();
}

TEST(grad_norm_clip_and_zero) {
  float g[2] = { 3.0f, 4.0f };
  ASSERT_NEAR(tb__k_grad_norm(g, 2), 5.0, 0, 0);
  ASSERT_NEAR(tb__k_grad_clip(g, 0.0, 2), 5.0, 0, 0); /* off */
  ASSERT_NEAR(g[0], 3.0, 0, 0);
  ASSERT_NEAR(tb__k_grad_clip(g, 10.0, 2), 5.0, 0, 0); /* under the limit */
  ASSERT_NEAR(g[1], 4.0, 0, 0);
  ASSERT_NEAR(tb__k_grad_clip(g, 1.0, 2), 5.0, 0, 0);
  ASSERT_NEAR(g[0], 0.6, 1e-6, 0);
  ASSERT_NEAR(g[1], 0.8, 1e-6, 0);
  ASSERT_NEAR(tb__k_grad_norm(g, 2), 1.0, 1e-6, 0);
  float h[3] = { 1.0f, -2.0f, 2.0f }, hr[3] = { 1.0f, -2.0f, 2.0f };
  ASSERT_NEAR(tb__k_grad_clip(h, 1.5, 3), tb__kref_grad_clip(hr, 1.5, 3), 0,
              0);
  ASSERT_CLOSE(h, hr, 3, 1e-7, 1e-6);
  /* In pieces: the sums of squares add up, and clipping each piece to the
   * whole's norm is clipping the whole. */
  float p[5] = { 1, 2, -2, 4, 2 }, q[5] = { 1, 2, -2, 4, 2 };
  double ss = tb__k_grad_sumsq(p, 2) + tb__k_grad_sumsq(p + 2, 3);
  ASSERT_NEAR(ss, 29.0, 0, 0);
  tb__k_grad_clip_to(p, 2.0, sqrt(ss), 2);
  tb__k_grad_clip_to(p + 2, 2.0, sqrt(ss), 3);
  tb__k_grad_clip(q, 2.0, 5);
  ASSERT_CLOSE(p, q, 5, 0, 0);
  tb__k_zero(h, 3);
  ASSERT_NEAR(tb__k_grad_norm(h, 3), 0.0, 0, 0);
  ASSERT_NEAR(tb__k_grad_clip(h, 1.0, 3), 0.0, 0, 0);
  ASSERT_NEAR(h[0], 0.0, 0, 0);
}

TEST(sampling_behaviour) {
  tb__k_rng_t rng;
  setup(&rng, 13);
  const size_t V = 37;
  float *logits = rbuf(&rng, V, 2), *probs = fbuf(V);
  int32_t idx[37], order[37];
  size_t am = tb__k_argmax(logits, V);
  for (int i = 0; i < 50; i++) {
    double u = tb__k_rng_uniform(&rng);
    ASSERT_EQ_INT(tb__k_sample(probs, idx, logits, 1.0f, 1, 1.0f, u, V), am);
    ASSERT_EQ_INT(tb__k_sample(probs, idx, logits, 0.0f, -1, 1.0f, u, V), am);
    ASSERT_EQ_INT(tb__k_sample(probs, idx, logits, 0.7f, -1, 1e-6f, u, V), am);
    ASSERT_EQ_INT(tb__k_sample(probs, idx, logits, 2.0f, 5, 1e-6f, u, V), am);
  }
  /* Against the full-sort reference over a grid of settings. */
  const float temps[] = { 0.5f, 1.0f, 1.7f };
  const int ks[] = { -1, 0, 2, 5, 36, 37, 100 };
  const float ps[] = { 1.0f, 0.95f, 0.5f, 0.1f };
  for (size_t a = 0; a < 3; a++)
    for (size_t b = 0; b < 7; b++)
      for (size_t c = 0; c < 4; c++)
        for (int i = 0; i < 20; i++) {
          double u = tb__k_rng_uniform(&rng);
          int32_t f = tb__k_sample(probs, idx, logits, temps[a], ks[b], ps[c],
                                   u, V);
          int32_t r = tb__kref_sample(order, logits, temps[a], ks[b], ps[c],
                                      u, V);
          if (f != r)
            tb_test_fail(__FILE__, __LINE__,
                         "T=%g k=%d p=%g u=%.17g: %d vs ref %d", temps[a],
                         ks[b], ps[c], u, f, r);
        }
  /* Ties: equal logits are ordered by id, argmax takes the lowest. */
  float tied[6] = { 1, 3, 0, 3, 3, -1 };
  ASSERT_EQ_INT(tb__k_argmax(tied, 6), 1);
  int32_t ti[6];
  float tv[6];
  tb__k_topk(ti, tv, idx, tied, 4, 6);
  ASSERT_EQ_INT(ti[0], 1);
  ASSERT_EQ_INT(ti[1], 3);
  ASSERT_EQ_INT(ti[2], 4);
  ASSERT_EQ_INT(ti[3], 0);
  ASSERT_NEAR(tv[3], 1.0, 0, 0);
  /* top_k = 3 over the ties keeps ids 1, 3, 4 with equal mass, drawn in
   * that order along u. */
  ASSERT_EQ_INT(tb__k_sample(probs, idx, tied, 1.0f, 3, 1.0f, 0.1, 6), 1);
  ASSERT_EQ_INT(tb__k_sample(probs, idx, tied, 1.0f, 3, 1.0f, 0.5, 6), 3);
  ASSERT_EQ_INT(tb__k_sample(probs, idx, tied, 1.0f, 3, 1.0f, 0.9, 6), 4);
  int32_t rk[37], fk[37];
  float rv[37], fv[37];
  tb__k_topk(fk, fv, idx, logits, 10, V);
  tb__kref_topk(rk, rv, logits, 10, V);
  for (size_t j = 0; j < 10; j++)
    ASSERT_EQ_INT(fk[j], rk[j]);

  /* Frequencies follow softmax(logits / T): 20000 draws over 4 tokens. */
  float small[4] = { 0.0f, 1.0f, 2.0f, 0.5f };
  int counts[4] = { 0 };
  for (int i = 0; i < 20000; i++)
    counts[tb__k_sample(probs, idx, small, 2.0f, -1, 1.0f,
                        tb__k_rng_uniform(&rng), 4)]++;
  double z = exp(0.0) + exp(0.5) + exp(1.0) + exp(0.25);
  ASSERT_NEAR(counts[2] / 20000.0, exp(1.0) / z, 0.02, 0);
  ASSERT_NEAR(counts[0] / 20000.0, 1.0 / z, 0.02, 0);
  /* top_p = 0.5 on these (probabilities .39, .24, .23, .14) keeps the two
   * most likely tokens only. */
  for (int i = 0; i < 200; i++) {
    int32_t t = tb__k_sample(probs, idx, small, 2.0f, -1, 0.5f,
                             tb__k_rng_uniform(&rng), 4);
    ASSERT(t == 2 || t == 1);
  }

  /* The same seed draws the same tokens. */
  tb__k_rng_t r1, r2;
  tb__k_rng_seed(&r1, 99);
  tb__k_rng_seed(&r2, 99);
  for (int i = 0; i < 100; i++)
    ASSERT_EQ_INT(tb__k_sample(probs, idx, logits, 1.0f, -1, 0.9f,
                               tb__k_rng_uniform(&r1), V),
                  tb__k_sample(probs, idx, logits, 1.0f, -1, 0.9f,
                               tb__k_rng_uniform(&r2), V));
  free_all();
}

/* One draw on any input: the fast kernel and the reference agree, the
 * token is in range, and it has probability > 0 whenever some token has. */
static void check_draw(float *probs, int32_t *idx, int32_t *order, const float *x,
                       size_t V, float t, int k, float p, double u) {
  int32_t f = tb__k_sample(probs, idx, x, t, k, p, u, V);
  int32_t r = tb__kref_sample(order, x, t, k, p, u, V);
  if (f != r)
    tb_test_fail(__FILE__, __LINE__, "V=%zu T=%g k=%d p=%g u=%.17g: %d vs ref %d", V, t, k,
                 p, u, f, r);
  ASSERT(f >= 0 && (size_t)f < V);
  int any_finite = 0, any_nan_free = 0;
  for (size_t v = 0; v < V; v++) {
    any_finite |= isfinite(x[v]) != 0;
    any_nan_free |= !isnan(x[v]);
  }
  if (any_nan_free && isnan(x[f]))
    tb_test_fail(__FILE__, __LINE__, "T=%g k=%d p=%g u=%g: drew NaN token %d", t, k, p, u, f);
  if (any_finite && isinf(x[f]) && x[f] < 0)
    tb_test_fail(__FILE__, __LINE__, "T=%g k=%d p=%g u=%g: drew -inf token %d", t, k, p, u, f);
}

TEST(sampling_is_safe_for_every_input) {
  enum { V = 37 };
  tb__k_rng_t rng;
  setup(&rng, 17);
  float *probs = fbuf(V);
  int32_t idx[V], order[V];
  const float nan = NAN, inf = INFINITY;
  const float temps[] = { 0.0f, -1.0f, NAN, 1e-45f, 1e-30f, 0.3f, 1.0f, 50.0f, INFINITY };
  const int ks[] = { -5, -1, 0, 1, 2, V - 1, V, V + 1, 1 << 30 };
  const float ps[] = { -1.0f, 0.0f, 1e-9f, 0.5f, 0.9f, 0.999f, 1.0f, 2.0f, NAN };
  const double us[] = { 0.0, 0.25, 0.5, 0.999999, 0x1.fffffffffffffp-1 };
  float x[V];
  /* Shapes of logits a diverged or odd model produces. */
  for (int shape = 0; shape < 9; shape++) {
    tb__k_rng_fill_normal(x, &rng, 0.0f, 2.0f, V);
    switch (shape) {
      case 0: for (size_t v = 0; v < V; v++) x[v] = nan; break;            /* all NaN */
      case 1: for (size_t v = 0; v < V; v += 3) x[v] = nan; break;         /* some NaN */
      case 2: x[5] = inf; x[20] = inf; break;                              /* +inf */
      case 3: for (size_t v = 0; v < V; v += 2) x[v] = -inf; break;        /* some -inf */
      case 4: for (size_t v = 0; v < V; v++) x[v] = -inf; break;           /* all -inf */
      case 5: for (size_t v = 0; v < V; v++) x[v] = 0.75f; break;          /* all equal */
      case 6: x[0] = nan; x[1] = inf; x[2] = -inf; break;                  /* all three */
      case 7: for (size_t v = 1; v < V; v++) x[v] = nan; x[0] = -inf; break;
      case 8: x[3] = 3e38f; x[4] = -3e38f; break;                          /* huge spread */
    }
    for (size_t a = 0; a < sizeof(temps) / sizeof(temps[0]); a++)
      for (size_t b = 0; b < sizeof(ks) / sizeof(ks[0]); b++)
        for (size_t c = 0; c < sizeof(ps) / sizeof(ps[0]); c++)
          for (size_t d = 0; d < sizeof(us) / sizeof(us[0]); d++)
            check_draw(probs, idx, order, x, V, temps[a], ks[b], ps[c], us[d]);
  }
  /* Where the answer is known: +inf wins (the first one), no finite logit
   * gives the argmax, NaN loses to everything. */
  for (size_t v = 0; v < V; v++)
    x[v] = (float)v;
  x[5] = inf;
  x[20] = inf;
  ASSERT_EQ_INT(tb__k_sample(probs, idx, x, 1.0f, -1, 0.9f, 0.7, V), 5);
  for (size_t v = 0; v < V; v++)
    x[v] = nan;
  ASSERT_EQ_INT(tb__k_argmax(x, V), 0);
  ASSERT_EQ_INT(tb__k_sample(probs, idx, x, 1.0f, -1, 0.9f, 0.7, V), 0);
  x[30] = -inf;
  ASSERT_EQ_INT(tb__k_argmax(x, V), 30);
  ASSERT_EQ_INT(tb__k_sample(probs, idx, x, 1.0f, 5, 0.5f, 0.3, V), 30);
  x[12] = 1.0f;
  x[31] = 2.0f;
  for (int i = 0; i < 200; i++) {
    int32_t t = tb__k_sample(probs, idx, x, 1.0f, -1, 1.0f, tb__k_rng_uniform(&rng), V);
    ASSERT(t == 12 || t == 31);
  }
  int32_t ti[4];
  float tv[4];
  tb__k_topk(ti, tv, idx, x, 4, V);
  ASSERT_EQ_INT(ti[0], 31);
  ASSERT_EQ_INT(ti[1], 12);
  ASSERT_EQ_INT(ti[2], 30);
  ASSERT_EQ_INT(ti[3], 0);
  /* All equal: uniform over the tokens top_k keeps. */
  int counts[V] = { 0 };
  for (size_t v = 0; v < V; v++)
    x[v] = -2.0f;
  for (int i = 0; i < 8000; i++)
    counts[tb__k_sample(probs, idx, x, 1.0f, 4, 1.0f, tb__k_rng_uniform(&rng), V)]++;
  for (int v = 0; v < 4; v++)
    ASSERT_NEAR(counts[v] / 8000.0, 0.25, 0.03, 0);
  for (int v = 4; v < V; v++)
    ASSERT_EQ_INT(counts[v], 0);
  /* One token, and none. */
  float one = nan;
  for (size_t a = 0; a < sizeof(temps) / sizeof(temps[0]); a++) {
    ASSERT_EQ_INT(tb__k_sample(probs, idx, &one, temps[a], -1, 0.5f, 0.5, 1), 0);
    ASSERT_EQ_INT(tb__kref_sample(order, &one, temps[a], -1, 0.5f, 0.5, 1), 0);
  }
  one = 4.0f;
  ASSERT_EQ_INT(tb__k_sample(probs, idx, &one, 1.0f, 3, 0.1f, 0.99, 1), 0);
  ASSERT_EQ_INT(tb__k_sample(probs, idx, &one, 1.0f, -1, 1.0f, 0.5, 0), -1);
  ASSERT_EQ_INT(tb__kref_sample(order, &one, 1.0f, -1, 1.0f, 0.5, 0), -1);
  free_all();
}

TEST(prng_known_answers) {
  /* splitmix64 from seed 1234567: the published test vector. */
  uint64_t st = 1234567;
  const uint64_t sm[5] = { UINT64_C(6457827717110365317),
                           UINT64_C(3203168211198807973),
                           UINT64_C(9817491932198370423),
                           UINT64_C(4593380528125082431),
                           UINT64_C(16408922859458223821) };
  for (int i = 0; i < 5; i++)
    ASSERT(tb__k_splitmix64(&st) == sm[i]);
  /* xoshiro256** seeded with splitmix64(42). */
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 42);
  const uint64_t xo[4] = { UINT64_C(1546998764402558742),
                           UINT64_C(6990951692964543102),
                           UINT64_C(12544586762248559009),
                           UINT64_C(17057574109182124193) };
  for (int i = 0; i < 4; i++)
    ASSERT(tb__k_rng_next(&rng) == xo[i]);
  /* Box-Muller normals from seed 42, bit for bit.  (With the C library's
   * log and cos they agree to about 1e-15; see below.) */
  const double nv[6] = { -0x1.9cfc3b5554225p+0, 0x1.88d42946b3dep+0,
                         0x1.9039f092211cbp-1, -0x1.99cc52c8c3eb9p-2,
                         0x1.0409077faf54cp-6, -0x1.04bb11bdc1bafp-3 };
  tb__k_rng_seed(&rng, 42);
  for (int i = 0; i < 6; i++) {
    double x = tb__k_rng_normal(&rng);
    if (x != nv[i])
      tb_test_fail(__FILE__, __LINE__, "normal %d: %a, expected %a", i, x,
                   nv[i]);
  }
  /* The file's own log and sin/cos are accurate: compare many normals
   * with libm's Box-Muller on the same uniform draws. */
  tb__k_rng_t a, b;
  tb__k_rng_seed(&a, 7);
  tb__k_rng_seed(&b, 7);
  double maxerr = 0.0;
  for (int i = 0; i < 20000; i++) {
    double u1 = (double)((tb__k_rng_next(&b) >> 11) + 1) * 0x1.0p-53;
    double u2 = (double)(tb__k_rng_next(&b) >> 11) * 0x1.0p-53;
    double r = sqrt(-2.0 * log(u1));
    double z0 = r * cos(2.0 * M_PI * u2), z1 = r * sin(2.0 * M_PI * u2);
    double e0 = fabs(tb__k_rng_normal(&a) - z0);
    double e1 = fabs(tb__k_rng_normal(&a) - z1);
    maxerr = fmax(maxerr, fmax(e0, e1));
  }
  ASSERT_NEAR(maxerr, 0.0, 1e-13, 0);
  /* Moments of the float fillers. */
  float *x = fbuf(20000);
  tb__k_rng_fill_normal(x, &a, 1.0f, 2.0f, 20000);
  double mean = 0, var = 0;
  for (int i = 0; i < 20000; i++)
    mean += x[i] / 20000.0;
  for (int i = 0; i < 20000; i++)
    var += (x[i] - mean) * (x[i] - mean) / 20000.0;
  ASSERT_NEAR(mean, 1.0, 0.05, 0);
  ASSERT_NEAR(var, 4.0, 0.15, 0);
  tb__k_rng_fill_uniform(x, &a, -0.5f, 0.25f, 20000);
  for (int i = 0; i < 20000; i++)
    ASSERT(x[i] >= -0.5f && x[i] < 0.25f);
  free_all();
}

TEST(fast_exp_and_max) {
  /* Within 2 ulp of exp over the whole range the softmaxes use. */
  double worst = 0.0;
  for (float x = -87.0f; x <= 88.0f; x += 0.00731f) {
    double e = exp((double)x);
    worst = fmax(worst, fabs(tb__k_expf(x) - e) / e);
  }
  ASSERT_NEAR(worst, 0.0, 1.2e-7, 0);
  ASSERT_NEAR(tb__k_expf(0.0f), 1.0, 0, 0);
  /* Far below the range it clamps to about 1.6e-38 instead of 0. */
  ASSERT(tb__k_expf(-1000.0f) >= 0.0f && tb__k_expf(-1000.0f) < 2e-38f);
  ASSERT(tb__k_expf(-INFINITY) >= 0.0f && tb__k_expf(-INFINITY) < 2e-38f);
  /* Far above it clamps to exp(88), finite, so a sigmoid never sees inf. */
  ASSERT(tb__k_expf(1000.0f) == tb__k_expf(88.0f) && isfinite(tb__k_expf(88.0f)));
  ASSERT(tb__k_expf(INFINITY) == tb__k_expf(88.0f));
  ASSERT(tb__k_sigmoidf(-1000.0f) >= 0.0f && tb__k_sigmoidf(-1000.0f) < 1e-38f);
  ASSERT(tb__k_sigmoidf(1000.0f) == 1.0f && tb__k_sigmoidf(0.0f) == 0.5f);
  float x[19] = { -3, -0.0f, -7, 2, 1e-30f, -1e30f };
  ASSERT(tb__k_maxf(x, 2) == 0.0f);
  ASSERT(tb__k_maxf(x, 19) == 2.0f);
  x[11] = 5.5f;
  ASSERT(tb__k_maxf(x, 19) == 5.5f);
  float neg[3] = { -4, -2.5f, -9 };
  ASSERT(tb__k_maxf(neg, 3) == -2.5f);
  ASSERT_NEAR(tb__k_sumf(neg, 3), -15.5, 0, 0);
}

TEST_LIST(
  TEST_ENTRY(linear_matches_reference),
  TEST_ENTRY(lora_matches_reference),
  TEST_ENTRY(lora_halves_stacked_match_per_adapter_reference),
  TEST_ENTRY(lora_da_through_rmsnorm_matches_reference),
  TEST_ENTRY(rmsnorm_swiglu_embedding_match_reference),
  TEST_ENTRY(rope_matches_reference),
  TEST_ENTRY(rope_llama3_scaling_and_bias_match_reference),
  TEST_ENTRY(attention_matches_reference),
  TEST_ENTRY(logprobs_and_logits_backward_match_reference),
  TEST_ENTRY(losses_match_reference_and_hand_values),
  TEST_ENTRY(adamw_two_steps_by_hand),
  TEST_ENTRY(grad_norm_clip_and_zero),
  TEST_ENTRY(sampling_behaviour),
  TEST_ENTRY(sampling_is_safe_for_every_input),
  TEST_ENTRY(prng_known_answers),
  TEST_ENTRY(fast_exp_and_max),
)

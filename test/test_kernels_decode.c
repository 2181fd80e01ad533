/*
 * kernels/ for decoding: the row-independent products (float32, bfloat16
 * and packed weights; the short-K order) against the naive reference and
 * row by row against themselves, bfloat16 conversions, paged decode
 * attention, and sampling over large vocabularies against the reference.
 */
#include "kernels_helpers.h"

#include "kernels/ref.h"
#include "kernels/vec16.h"

static uint16_t *hbuf_from(const float *src, size_t n) {
  ASSERT(nallocs < sizeof(allocs) / sizeof(allocs[0]));
  uint16_t *p = xmalloc((n > 0 ? n : 1) * sizeof(uint16_t));
  tb__k_bf16_from_f32(p, src, n);
  allocs[nallocs++] = p;
  return p;
}

/* One product: mode 0 and 1 the lanes order with float32 and bfloat16
 * weights, 2 the short-K chain (packed on the stack), 3 and 4 the chain
 * over float32 and bfloat16 packed weights.  y (T, N) rows ldy apart; the
 * outputs from n0 (a multiple of 32 in modes 3 and 4). */
static int mode;
static void rowmm_at(float *y, size_t ldy, const float *x, size_t ldx,
                     const float *w, const uint16_t *w16, size_t ldw,
                     float alpha, int acc, size_t T, size_t K, size_t N,
                     size_t n0) {
  if (mode >= 3) {
    size_t all = n0 + N, el = tb__k_packed_elems(K, all);
    void *pk = xmalloc(el * sizeof(float));
    if (mode == 3) {
      tb__k_pack_f32(pk, w, ldw, K, all);
      tb__k_rowmm_packed_f32(y, ldy, x, ldx, (float *)pk + n0 * K, alpha, acc,
                             T, K, N);
    } else {
      tb__k_pack_bf16(pk, w, ldw, K, all);
      tb__k_rowmm_packed_bf16(y, ldy, x, ldx, (uint32_t *)pk + n0 * K / 2,
                              alpha, acc, T, K, N);
    }
    free(pk);
    return;
  }
  w += n0 * ldw;
  if (mode == 2)
    tb__k_rowmm_seq_f32(y, ldy, x, ldx, w, ldw, alpha, acc, T, K, N);
  else if (mode == 1)
    tb__k_rowmm_bf16(y, ldy, x, ldx, w16 + n0 * ldw, ldw, alpha, acc, T, K, N);
  else
    tb__k_rowmm_f32(y, ldy, x, ldx, w, ldw, alpha, acc, T, K, N);
}

static void rowmm(float *y, size_t ldy, const float *x, size_t ldx,
                  const float *w, const uint16_t *w16, size_t ldw, float alpha,
                  int acc, size_t T, size_t K, size_t N) {
  rowmm_at(y, ldy, x, ldx, w, w16, ldw, alpha, acc, T, K, N, 0);
}

TEST(rowmm_matches_reference) {
  tb__k_rng_t rng;
  setup(&rng, 40);
  const size_t Ts[] = { 1, 3, 4, 5, 9, 17 }, Ks[] = { 1, 15, 16, 17, 64, 100 };
  const size_t Ns[] = { 1, 3, 4, 7, 13 };
  const size_t Ns2[] = { 1, 3, 4, 7, 13, 33, 70 };
  for (size_t a = 0; a < 6; a++)
    for (size_t b = 0; b < 6; b++)
      for (size_t c = 0; c < 7; c++)
        for (int bf = 0; bf <= 4; bf++) {
          size_t T = Ts[a], K = Ks[b], N = c < 5 ? Ns[c] : Ns2[c];
          mode = bf;
          /* Leading dimensions wider than the matrices. */
          size_t ldy = N + 2, ldx = K + 3, ldw = K + 1;
          float *x = rbuf(&rng, T * ldx, 1), *w = rbuf(&rng, N * ldw, 1);
          uint16_t *w16 = bf == 1 || bf == 4 ? hbuf_from(w, N * ldw) : NULL;
          float *y0 = rbuf(&rng, T * ldy, 1);
          for (int acc = 0; acc <= 1; acc++) {
            float *y = copy(y0, T * ldy), *yr = copy(y0, T * ldy);
            rowmm(y, ldy, x, ldx, w, w16, ldw, 0.75f, acc, T, K, N);
            tb__kref_rowmm(yr, ldy, x, ldx, w, w16, ldw, 0.75f, acc, T, K, N);
            ASSERT_CLOSE(y, yr, T * ldy, 1e-5, 1e-5);
          }
          free_all();
        }
  mode = 0;
}

/* Every element is the same bits whatever rows and outputs are computed
 * with it: all row ranges [t0, t1) and output ranges [n0, n1) against the
 * full product, for shapes around the blocking (4 by 4) and the lanes
 * (16), both weight types, and the bfloat16 panel (8 rows and more). */
TEST(rowmm_rows_are_independent) {
  tb__k_rng_t rng;
  setup(&rng, 41);
  const size_t shapes[][3] = { { 19, 37, 9 }, { 12, 64, 6 }, { 21, 16, 5 },
                               { 9, 5, 11 }, { 33, 130, 4 }, { 10, 32, 70 } };
  for (size_t sh = 0; sh < 6; sh++)
    for (int bf = 0; bf <= 4; bf++)
      for (int acc = 0; acc <= 1; acc++) {
        size_t T = shapes[sh][0], K = shapes[sh][1], N = shapes[sh][2];
        mode = bf;
        float *x = rbuf(&rng, T * K, 1), *w = rbuf(&rng, N * K, 1);
        uint16_t *w16 = bf == 1 ? hbuf_from(w, N * K) : NULL;
        float *y0 = rbuf(&rng, T * N, 1);
        float *full = copy(y0, T * N), *part = fbuf(T * N);
        rowmm(full, N, x, K, w, w16, K, 1.0f, acc, T, K, N);
        for (size_t t0 = 0; t0 < T; t0++)
          for (size_t t1 = t0 + 1; t1 <= T; t1++) {
            memcpy(part, y0, T * N * sizeof(float));
            rowmm(part + t0 * N, N, x + t0 * K, K, w, w16, K, 1.0f, acc,
                  t1 - t0, K, N);
            ASSERT_EQ_INT(memcmp(part + t0 * N, full + t0 * N,
                                 (t1 - t0) * N * sizeof(float)), 0);
          }
        for (size_t n0 = 0; n0 < N; n0 += bf >= 3 ? TB__K_PANEL : 1)
          for (size_t n1 = n0 + 1; n1 <= N; n1++) {
            memcpy(part, y0, T * N * sizeof(float));
            rowmm_at(part + n0, N, x, K, w, w16, K, 1.0f, acc, T, K, n1 - n0,
                     n0);
            for (size_t t = 0; t < T; t++)
              ASSERT_EQ_INT(memcmp(part + t * N + n0, full + t * N + n0,
                                   (n1 - n0) * sizeof(float)), 0);
          }
        free_all();
      }
  mode = 0;
}

/* Packed bfloat16 weights that are exactly bfloat16 give the very bits of
 * the same weights packed as float32. */
TEST(rowmm_packed_bf16_of_bf16_weights_is_exact) {
  tb__k_rng_t rng;
  setup(&rng, 44);
  const size_t T = 13, K = 70, N = 77;
  float *x = rbuf(&rng, T * K, 1), *w = rbuf(&rng, N * K, 1);
  uint16_t *h = hbuf_from(w, N * K);
  for (size_t i = 0; i < N * K; i++) {
    uint32_t u = (uint32_t)h[i] << 16;
    memcpy(&w[i], &u, sizeof(u));
  }
  float *a = fbuf(T * N), *b = fbuf(T * N);
  mode = 3;
  rowmm(a, N, x, K, w, NULL, K, 0.5f, 0, T, K, N);
  mode = 4;
  rowmm(b, N, x, K, w, NULL, K, 0.5f, 0, T, K, N);
  mode = 0;
  ASSERT_EQ_INT(memcmp(a, b, T * N * sizeof(float)), 0);
  free_all();
}

TEST(bf16_conversion) {
  const float in[] = { 1.0f, -2.5f, 1.00390625f /* 1 + 2^-8: a tie, to even */,
                       1.01171875f /* 1 + 3 * 2^-8: a tie, rounds up */,
                       1.0f + 0x1p-8f + 0x1p-20f /* just above half: up */,
                       INFINITY, -INFINITY, 0.0f, -0.0f, 3.0e38f };
  const uint16_t want[] = { 0x3f80, 0xc020, 0x3f80, 0x3f82, 0x3f81,
                            0x7f80, 0xff80, 0x0000, 0x8000, 0x7f62 };
  uint16_t out[10];
  tb__k_bf16_from_f32(out, in, 10);
  for (size_t i = 0; i < 10; i++)
    ASSERT_EQ_INT(out[i], want[i]);
  float nan = NAN;
  tb__k_bf16_from_f32(out, &nan, 1);
  ASSERT((out[0] & 0x7f80) == 0x7f80 && (out[0] & 0x7f) != 0);
  ASSERT(tb__k_f32_is_bf16(in, 2));
  ASSERT(!tb__k_f32_is_bf16(in, 5));
  ASSERT(tb__k_f32_is_bf16(in, 0));
}

/* Sixteen lane sums made together are each vector's own, to the bit. */
TEST(hsum16_matches_hsum) {
  tb__k_rng_t rng;
  setup(&rng, 7);
  for (int rep = 0; rep < 50; rep++) {
    tb__v16f a[16];
    for (int m = 0; m < 16; m++)
      for (int j = 0; j < 16; j++)
        a[m][j] = (float)(tb__k_rng_uniform(&rng) - 0.5) *
                  (float)(1u << (tb__k_rng_next(&rng) % 24));
    tb__v16f all = tb__v16_hsum16(a);
    for (int m = 0; m < 16; m++) {
      float one = tb__v16_hsum(a[m]);
      ASSERT_EQ_INT(memcmp(&all[m], &one, sizeof(float)), 0);
    }
  }
}

TEST(attention_paged_matches_reference) {
  tb__k_rng_t rng;
  setup(&rng, 42);
  /* D = 20: vectors and a scalar tail; 64 and 144: four vectors at once
   * (and one more); 50 and 17 keys: sixteen at once and the rest. */
  const size_t H = 6, KVH = 2, Ds[] = { 20, 64, 144 };
  const size_t Ps[] = { 1, 7, 16, 17, 50 };
  for (size_t a = 0; a < 15; a++) {
    size_t P = Ps[a % 5], D = Ds[a / 5], ld = KVH * D;
    float *k = rbuf(&rng, P * ld, 1), *v = rbuf(&rng, P * ld, 1);
    float *q = rbuf(&rng, H * D, 1), *scratch = fbuf(H / KVH * P);
    float *ref = fbuf(H * D), *first = fbuf(H * D), *out = fbuf(H * D);
    /* The same keys and values in blocks of 1, 3 and 16 positions, copied
     * into blocks laid out in reverse order in one arena. */
    const size_t blocks[] = { 16, 1, 3 };
    for (size_t b = 0; b < 3; b++) {
      size_t bs = blocks[b], nb = (P + bs - 1) / bs;
      float *kar = fbuf(nb * bs * ld), *var = fbuf(nb * bs * ld);
      const float *kb[64], *vb[64];
      ASSERT(nb <= 64);
      for (size_t i = 0; i < nb; i++) {
        size_t slot = nb - 1 - i, n = P - i * bs < bs ? P - i * bs : bs;
        memcpy(kar + slot * bs * ld, k + i * bs * ld, n * ld * sizeof(float));
        memcpy(var + slot * bs * ld, v + i * bs * ld, n * ld * sizeof(float));
        kb[i] = kar + slot * bs * ld;
        vb[i] = var + slot * bs * ld;
      }
      tb__k_attention_paged(out, scratch, q, kb, vb, bs, ld, P, H, KVH, D);
      if (b == 0) {
        tb__kref_attention_paged(ref, q, kb, vb, bs, P, H, KVH, D);
        ASSERT_CLOSE(out, ref, H * D, 1e-5, 1e-4);
        memcpy(first, out, H * D * sizeof(float));
      } else {
        /* The block size changes where positions live, not the order. */
        ASSERT_EQ_INT(memcmp(out, first, H * D * sizeof(float)), 0);
      }
      /* One KV head at a time, as the decoder splits the work. */
      const float *kh[64], *vh[64];
      for (size_t h = 0; h < KVH; h++) {
        for (size_t i = 0; i < nb; i++) {
          kh[i] = kb[i] + h * D;
          vh[i] = vb[i] + h * D;
        }
        size_t G = H / KVH;
        tb__k_attention_paged(out + h * G * D, scratch, q + h * G * D, kh, vh,
                              bs, ld, P, G, 1, D);
      }
      ASSERT_EQ_INT(memcmp(out, first, H * D * sizeof(float)), 0);
    }
    free_all();
  }
}

/* Large vocabularies walked far: flat logits (many buckets), logits
 * bunched within one bucket (its heap sort), and many ties; the token
 * drawn is the reference's (a full sort and walk). */
TEST(sampling_large_vocabularies_match_reference) {
  tb__k_rng_t rng;
  setup(&rng, 43);
  const size_t V = 6000;
  float *x = fbuf(V), *probs = fbuf(V);
  int32_t *idx = xmalloc(V * sizeof(int32_t)), *order = xmalloc(V * sizeof(int32_t));
  const int ks[] = { -1, -1, 50, 50, 4000 };
  const float ps[] = { 1.0f, 0.9f, 1.0f, 0.8f, 0.95f };
  for (int kind = 0; kind < 3; kind++) {
    for (size_t v = 0; v < V; v++) {
      double g = tb__k_rng_normal(&rng);
      x[v] = kind == 0 ? (float)(0.5 * g)
             : kind == 1 ? 1.0f + (float)(1e-4 * g)
                         : (float)((int)(4 * g)) * 0.25f;
    }
    for (int c = 0; c < 5; c++)
      for (int j = 0; j < 2; j++) {
        double u = tb__k_rng_uniform(&rng);
        int32_t f = tb__k_sample(probs, idx, x, 1.0f, ks[c], ps[c], u, V);
        int32_t r = tb__kref_sample(order, x, 1.0f, ks[c], ps[c], u, V);
        ASSERT_EQ_INT(f, r);
      }
  }
  free(idx);
  free(order);
  free_all();
}

/* The walk of the reference over its order (from tb__kref_topk): the
 * first token whose running sum passes the target (u z, with z summed in
 * id order as the kernel sums it), or the last with any mass. */
static int32_t walk_at(const int32_t *order, const float *p, size_t V,
                       double target) {
  double acc = 0.0;
  int32_t last = order[0];
  for (size_t j = 0; j < V; j++) {
    if (p[order[j]] > 0.0f)
      last = order[j];
    acc += p[order[j]];
    if (acc > target)
      return order[j];
  }
  return last;
}

/* Draws over the whole vocabulary (no top-k, no top-p) pass whole buckets
 * of the order by their sums while those are exact.  Each draw is aimed
 * at the running sum of the reference's walk at every position (u z equal
 * to it, or one step either side), where a sum rounded otherwise than the
 * walk's would draw the neighbouring token: logits close together (every
 * sum exact), spread wide (tiny probabilities make the sums inexact
 * part-way), in two far apart clusters, and with NaN and -inf among them.
 * u just below 1 draws past the end of the sums, where the last token
 * with any mass is taken. */
TEST(sampling_whole_vocabulary_draws_at_every_boundary) {
  tb__k_rng_t rng;
  setup(&rng, 47);
  const size_t V = 1000;
  float *x = fbuf(V), *probs = fbuf(V), *p = fbuf(V), *val = fbuf(V);
  int32_t *idx = xmalloc(V * sizeof(int32_t));
  int32_t *order = xmalloc(V * sizeof(int32_t));
  int32_t *ref = xmalloc(V * sizeof(int32_t));
  const float temps[] = { 1.0f, 1.0f, 1.0f, 0.7f };
  size_t draws = 0;
  for (int kind = 0; kind < 4; kind++) {
    const float T = temps[kind];
    for (size_t v = 0; v < V; v++) {
      double g = tb__k_rng_normal(&rng);
      x[v] = kind == 0   ? (float)(0.5 * g)
             : kind == 1 ? (float)(8.0 * g)
             : kind == 2 ? (float)(v % 2 ? -25.0 + 0.1 * g : 0.1 * g)
                         : (float)(3.0 * g);
    }
    if (kind == 3)
      for (size_t v = 0; v < V; v += 7)
        x[v] = v % 2 ? NAN : -INFINITY;
    tb__kref_topk(order, val, x, V, V);
    float mx = x[order[0]];
    double z = 0.0;
    for (size_t v = 0; v < V; v++) {
      float e = expf((x[v] - mx) * (1.0f / T));
      p[v] = isnan(e) ? 0.0f : e;
      z += p[v];
    }
    double acc = 0.0;
    for (size_t j = 0; j < V; j++) {
      acc += p[order[j]];
      double u0 = acc / z;
      for (int d = -1; d <= 1; d++) {
        double u = d < 0 ? nextafter(u0, 0.0) : d > 0 ? nextafter(u0, 1.0) : u0;
        if (!(u < 1.0))
          u = 0x1.fffffffffffffp-1;
        int32_t want = walk_at(order, p, V, u * z);
        int32_t got = tb__k_sample(probs, idx, x, T, -1, 1.0f, u, V);
        if (got != want)
          tb_test_fail(__FILE__, __LINE__,
                       "kind %d position %zu u=%.17g: %d, the walk %d", kind,
                       j, u, got, want);
        draws++;
      }
    }
    const double ends[] = { 0.0, 0x1.fffffffffffffp-1, 0.999999 };
    for (size_t i = 0; i < 3; i++)
      ASSERT_EQ_INT(tb__k_sample(probs, idx, x, T, -1, 1.0f, ends[i], V),
                    walk_at(order, p, V, ends[i] * z));
    /* The walk is the reference's (which sums z in its own order, so it
     * is compared away from the boundaries). */
    for (int i = 0; i < 4; i++) {
      double u = tb__k_rng_uniform(&rng);
      ASSERT_EQ_INT(tb__kref_sample(ref, x, T, -1, 1.0f, u, V),
                    walk_at(order, p, V, u * z));
    }
  }
  ASSERT(draws == 4 * 3 * V);
  free(idx);
  free(order);
  free(ref);
  free_all();
}

TEST_LIST(
  TEST_ENTRY(rowmm_matches_reference),
  TEST_ENTRY(rowmm_rows_are_independent),
  TEST_ENTRY(rowmm_packed_bf16_of_bf16_weights_is_exact),
  TEST_ENTRY(bf16_conversion),
  TEST_ENTRY(hsum16_matches_hsum),
  TEST_ENTRY(attention_paged_matches_reference),
  TEST_ENTRY(sampling_large_vocabularies_match_reference),
  TEST_ENTRY(sampling_whole_vocabulary_draws_at_every_boundary),
)

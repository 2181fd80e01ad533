/*
 * engine/kv_pool.c, engine/coop.c and the decoder (decode.c,
 * decode_step.c, decode_fwd.c): the pool's blocks, sharing, copies, prefix
 * cache, eviction and bound; the cooperative phases with 1, 2 and 4 work
 * items; and the decoder's promise that every sequence's tokens and
 * log-probs are the same bits alone as in any batch (adapters mixed,
 * lengths mixed, joining, pausing and leaving at different steps, prefix
 * cache on and off, any number of work items), that a diverged adapter
 * fails its own sequences only, and that memory waits and comes back.
 */
#include "tb_test.h"
#include "fixtures.h"

#include <stdatomic.h>

#include "engine/coop.h"
#include "engine/decode_internal.h"
#include "engine/kv_pool.h"
#include "engine/sampler.h"
#include "kernels/kernels.h"

/* ------------------------------------------------------------ pool */

static float *block_at(tb__kv_pool_t *p, int32_t b) { return tb__kv_block(p, b); }

TEST(pool_alloc_share_copy) {
  tb__kv_pool_t p;
  /* One layer, one KV float: a block is 4 keys then 4 values. */
  ASSERT_OK(tb__kv_pool_init(&p, 4, 8, 4, 0));
  ASSERT_EQ_INT(tb__kv_pool_available(&p), 4);
  ASSERT_OK(tb__kv_pool_admit(&p, NULL, 0, 3));
  ASSERT_EQ_INT(tb__kv_pool_available(&p), 1);
  ASSERT_ERR(tb__kv_pool_admit(&p, NULL, 0, 2), TB_EBUSY);
  ASSERT_EQ_INT(p.reserved, 3);  /* a refused admission changes nothing */
  int32_t a = tb__kv_pool_alloc(&p), b = tb__kv_pool_alloc(&p);
  ASSERT(a != b);
  ASSERT_EQ_INT(p.reserved, 1);
  for (int i = 0; i < 8; i++)
    block_at(&p, a)[i] = (float)(i + 1);
  /* Shared by a second holder: writing position 2 takes a copy of
   * positions 0 and 1, keys and values. */
  tb__kv_pool_ref(&p, a);
  int32_t w = a;
  ASSERT_EQ_INT(tb__kv_pool_cow(&p, &w, 2, 1, 1), 1);
  ASSERT(w != a);
  ASSERT_EQ_INT(p.refs[a], 1);
  ASSERT_EQ_INT(p.refs[w], 1);
  ASSERT(block_at(&p, w)[0] == 1.0f && block_at(&p, w)[1] == 2.0f);
  ASSERT(block_at(&p, w)[4] == 5.0f && block_at(&p, w)[5] == 6.0f);
  ASSERT_EQ_INT(p.copies, 1);
  ASSERT_EQ_INT(p.reserved, 0);
  /* The last holder writes in place. */
  int32_t again = a;
  ASSERT_EQ_INT(tb__kv_pool_cow(&p, &again, 2, 1, 1), 0);
  ASSERT_EQ_INT(again, a);
  /* Releasing everything gives every block back. */
  tb__kv_pool_unref(&p, a);
  tb__kv_pool_unref(&p, b);
  tb__kv_pool_unref(&p, w);
  ASSERT_EQ_INT(p.num_free, 4);
  ASSERT_EQ_INT(tb__kv_pool_available(&p), 4);
  tb__kv_pool_free(&p);
}

TEST(pool_prefix_cache_lru_and_bound) {
  tb__kv_pool_t p;
  ASSERT_OK(tb__kv_pool_init(&p, 2, 4, 4, 1));
  const int32_t toks[8] = { 5, 6, 7, 8, 9, 10, 11, 12 };
  tb__kv_key_t k1 = { 3, 1 }, k2 = { 3, 2 };
  ASSERT_OK(tb__kv_pool_admit(&p, NULL, 0, 3));
  int32_t b0 = tb__kv_pool_alloc(&p), b1 = tb__kv_pool_alloc(&p);
  int32_t b2 = tb__kv_pool_alloc(&p);
  tb__kv_pool_register(&p, k1, TB_KV_NONE, toks, b0);
  tb__kv_pool_register(&p, k1, b0, toks + 2, b1);
  tb__kv_pool_register(&p, k1, b1, toks + 4, b2);
  int32_t hit[4];
  ASSERT_EQ_INT(tb__kv_pool_lookup(&p, k1, toks, 8, hit, 4), 3);
  ASSERT(hit[0] == b0 && hit[1] == b1 && hit[2] == b2);
  ASSERT_EQ_INT(tb__kv_pool_lookup(&p, k1, toks, 8, hit, 2), 2);
  /* Another weights version, another adapter, other tokens: no hit past
   * the difference. */
  ASSERT_EQ_INT(tb__kv_pool_lookup(&p, k2, toks, 8, hit, 4), 0);
  ASSERT_EQ_INT(tb__kv_pool_lookup(&p, (tb__kv_key_t){ 4, 1 }, toks, 8, hit, 4),
                0);
  const int32_t other[6] = { 5, 6, 7, 99, 9, 10 };
  ASSERT_EQ_INT(tb__kv_pool_lookup(&p, k1, other, 6, hit, 4), 1);
  /* An equal block registered again is not filed twice. */
  ASSERT_OK(tb__kv_pool_admit(&p, NULL, 0, 1));
  int32_t dup = tb__kv_pool_alloc(&p);
  tb__kv_pool_register(&p, k1, TB_KV_NONE, toks, dup);
  ASSERT(!p.cached[dup]);
  tb__kv_pool_unref(&p, dup);
  ASSERT_EQ_INT(p.num_free, 1);

  /* Released cached blocks stay findable, evictable, in LRU order. */
  tb__kv_pool_unref(&p, b2);
  tb__kv_pool_unref(&p, b0);
  tb__kv_pool_unref(&p, b1);
  ASSERT_EQ_INT(p.num_lru, 3);
  ASSERT_EQ_INT(tb__kv_pool_available(&p), 4);
  ASSERT_EQ_INT(tb__kv_pool_lookup(&p, k1, toks, 8, hit, 4), 3);
  /* Admitting with two hits that nobody holds makes them unevictable:
   * two more blocks fit, not three. */
  ASSERT_ERR(tb__kv_pool_admit(&p, hit, 2, 3), TB_EBUSY);
  ASSERT_OK(tb__kv_pool_admit(&p, hit, 2, 2));
  ASSERT_EQ_INT(p.refs[b0], 1);
  ASSERT_EQ_INT(p.hits, 2);
  /* The free block goes first, then the least recently released: b2. */
  int32_t f1 = tb__kv_pool_alloc(&p);
  ASSERT_EQ_INT(p.evictions, 0);
  int32_t f2 = tb__kv_pool_alloc(&p);
  ASSERT_EQ_INT(f2, b2);
  ASSERT_EQ_INT(p.evictions, 1);
  ASSERT_EQ_INT(tb__kv_pool_lookup(&p, k1, toks, 8, hit, 4), 2);
  /* The bound: every block is held, nothing more can be promised. */
  ASSERT_EQ_INT(tb__kv_pool_available(&p), 0);
  ASSERT_ERR(tb__kv_pool_admit(&p, NULL, 0, 1), TB_EBUSY);
  /* Evicting a parent makes its cached children unreachable, even when
   * its block is filed again under the same id with the same tokens. */
  tb__kv_pool_unref(&p, f1);
  tb__kv_pool_unref(&p, f2);
  tb__kv_pool_unref(&p, b0);  /* LRU: b0, then b1 */
  tb__kv_pool_unref(&p, b1);
  ASSERT_OK(tb__kv_pool_admit(&p, NULL, 0, 3));
  int32_t got[3];
  for (int i = 0; i < 3; i++)
    got[i] = tb__kv_pool_alloc(&p);
  ASSERT(got[2] == b0 && p.cached[b1] && !p.cached[b0]);
  tb__kv_pool_register(&p, k1, TB_KV_NONE, toks, b0);
  ASSERT_EQ_INT(tb__kv_pool_lookup(&p, k1, toks, 8, hit, 4), 1);
  for (int i = 0; i < 3; i++)
    tb__kv_pool_unref(&p, got[i]);
  ASSERT_EQ_INT(p.num_free + p.num_lru, 4);
  tb__kv_pool_free(&p);
}

/* ------------------------------------------------------------ coop */

#define CP 40          /* phases */
#define CMAX 17        /* chunks at most per phase */

typedef struct coop_case_s {
  uint32_t chunks[CP];
  double out[CP][CMAX];
  double want[CP][CMAX];
  tb__coop_t *c;
  _Atomic int bad;
  uv_work_t req[4];
  size_t started;
} coop_case_t;

/* Chunk i of phase p reads every result of phase p-1. */
static void coop_chunk(void *ctx, size_t p, size_t i, size_t item) {
  coop_case_t *cc = ctx;
  (void)item;
  double s = 0;
  if (p > 0)
    for (size_t j = 0; j < cc->chunks[p - 1]; j++) {
      if (cc->out[p - 1][j] == 0)
        atomic_store(&cc->bad, 1);  /* read before it was written */
      s += cc->out[p - 1][j];
    }
  cc->out[p][i] = s * 0.5 + (double)(i + 1);
}

static void coop_setup(coop_case_t *cc, size_t items) {
  memset(cc, 0, sizeof(*cc));
  cc->c = tb__coop_new(CP, items, coop_chunk, cc);
  ASSERT(cc->c != NULL);
  for (size_t p = 0; p < CP; p++) {
    /* Empty phases, single chunks and many. */
    cc->chunks[p] = p % 7 == 3 ? 0 : (uint32_t)(1 + (p * 5) % CMAX);
    cc->c->phases[p].chunks = cc->chunks[p];
  }
  /* The same recurrence, serially; an empty phase gives the next a sum of
   * zero. */
  for (size_t p = 0; p < CP; p++)
    for (size_t j = 0; j < cc->chunks[p]; j++) {
      double sum = 0;
      if (p > 0)
        for (size_t k = 0; k < cc->chunks[p - 1]; k++)
          sum += cc->want[p - 1][k];
      cc->want[p][j] = sum * 0.5 + (double)(j + 1);
    }
}

static void coop_work(uv_work_t *req) {
  coop_case_t *cc = req->data;
  tb__coop_run(cc->c, (size_t)(req - cc->req));
}

static void coop_after(uv_work_t *req, int status) {
  ASSERT_EQ_INT(status, 0);
  coop_case_t *cc = req->data;
  cc->started++;
}

TEST(coop_items_1_2_4) {
  const size_t counts[] = { 1, 2, 4 };
  for (size_t ci = 0; ci < 3; ci++) {
    size_t k = counts[ci];
    for (int rep = 0; rep < 20; rep++) {
      coop_case_t *cc = calloc(1, sizeof(*cc));
      coop_setup(cc, k);
      uv_loop_t loop;
      ASSERT_OK(uv_loop_init(&loop));
      for (size_t i = 0; i < k; i++) {
        cc->req[i].data = cc;
        ASSERT_OK(uv_queue_work(&loop, &cc->req[i], coop_work, coop_after));
      }
      ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
      ASSERT_EQ_INT(cc->started, k);
      ASSERT(tb__coop_finished(cc->c));
      ASSERT_EQ_INT(atomic_load(&cc->bad), 0);
      uint32_t total = 0, ran = 0;
      for (size_t p = 0; p < CP; p++) {
        total += cc->chunks[p];
        for (size_t i = 0; i < cc->chunks[p]; i++)
          ASSERT(cc->out[p][i] == cc->want[p][i]);
      }
      for (size_t i = 0; i < k; i++)
        ran += atomic_load(&cc->c->ran[i]);
      ASSERT_EQ_INT(ran, total);  /* each chunk ran exactly once */
      tb__coop_free(cc->c);
      free(cc);
      ASSERT_LOOP_CLOSE(&loop);
    }
  }
}

/* Four items queued, one runs: it does the whole task alone; an item
 * that starts afterwards returns without running anything. */
TEST(coop_one_item_alone_and_a_late_one) {
  coop_case_t *cc = calloc(1, sizeof(*cc));
  coop_setup(cc, 4);
  ASSERT(!tb__coop_finished(cc->c));
  tb__coop_run(cc->c, 2);
  ASSERT(tb__coop_finished(cc->c));
  tb__coop_run(cc->c, 0);
  ASSERT_EQ_INT(atomic_load(&cc->c->ran[0]), 0);
  for (size_t p = 0; p < CP; p++)
    for (size_t i = 0; i < cc->chunks[p]; i++)
      ASSERT(cc->out[p][i] == cc->want[p][i]);
  tb__coop_free(cc->c);
  free(cc);
}

/* ------------------------------------------------------------ fixtures */

static tb__model_config_t small_config(int qwen) {
  tb__model_config_t c = tb_test_config(48, 80, 2, 6, 2, 8, 101, 512, 1e-5f, 10000.0f);
  c.tie_word_embeddings = 1;
  if (qwen) {
    c.arch = TB_ARCH_QWEN3;
    c.qkv_bias = 1;
    c.qk_norm = 1;
  }
  return c;
}

static void make_model(tb__weights_t *w, const tb__model_config_t *c,
                       uint64_t seed, int bf16) {
  ASSERT_OK(tb__weights_alloc(w, c));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  tb__k_rng_fill_normal(w->storage, &rng, 0.0f, 0.35f, w->storage_floats);
  size_t C = (size_t)c->hidden_size;
  for (int l = 0; l < c->num_layers; l++) {
    tb__k_rng_fill_uniform((float *)w->layers[l].attn_norm, &rng, 0.8f, 1.2f, C);
    tb__k_rng_fill_uniform((float *)w->layers[l].mlp_norm, &rng, 0.8f, 1.2f, C);
    if (c->qk_norm) {
      size_t D = (size_t)c->head_dim;
      tb__k_rng_fill_uniform((float *)w->layers[l].q_norm, &rng, 0.8f, 1.2f, D);
      tb__k_rng_fill_uniform((float *)w->layers[l].k_norm, &rng, 0.8f, 1.2f, D);
    }
  }
  tb__k_rng_fill_uniform((float *)w->final_norm, &rng, 0.8f, 1.2f, C);
  if (bf16) {
    /* As a checkpoint stored in bfloat16 loads. */
    for (size_t i = 0; i < w->storage_floats; i++) {
      uint16_t h;
      tb__k_bf16_from_f32(&h, &w->storage[i], 1);
      uint32_t u = (uint32_t)h << 16;
      memcpy(&w->storage[i], &u, sizeof(u));
    }
  }
}

static void make_lora(tb__lora_t *lora, const tb__model_config_t *c, int rank,
                      int unembed, uint64_t seed) {
  tb__lora_config_t lc = { 0 };
  lc.rank = rank;
  lc.seed = seed;
  lc.alpha = 8.0f;
  lc.train_attn = lc.train_mlp = 1;
  lc.train_unembed = unembed;
  ASSERT_OK(tb__lora_init(lora, c, &lc));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed + 100);
  tb__k_rng_fill_uniform(lora->params, &rng, -0.25f, 0.25f, lora->num_params);
}

/* A request: its prompt, parameters and adapter (index into the
 * adapters, -1 for none), and when it joins and pauses in a schedule. */
typedef struct req_s {
  int32_t prompt[160];
  size_t n;
  tb__sampling_params_t p;
  int32_t stop;
  int adapter;
  size_t join, pause, resume;  /* steps; pause == 0: never */
  tb__dec_seq_t *seq;
  tb__sample_result_t res;
  int status;
  int done;
} req_t;

#define NREQ 9

typedef struct world_s {
  tb__model_config_t c;
  tb__weights_t w;
  tb__lora_t lora[3];
  tb__dec_adapter_t ad[3];
  req_t req[NREQ];
  tb__sample_result_t alone[NREQ];
} world_t;

static void make_world(world_t *W, int qwen, int bf16) {
  memset(W, 0, sizeof(*W));
  W->c = small_config(qwen);
  make_model(&W->w, &W->c, 21, bf16);
  make_lora(&W->lora[0], &W->c, 4, 0, 31);
  make_lora(&W->lora[1], &W->c, 8, 1, 32);
  make_lora(&W->lora[2], &W->c, 2, 1, 33);
  for (int i = 0; i < 3; i++)
    W->ad[i] = (tb__dec_adapter_t){ &W->lora[i], { (uint64_t)i + 1, 1 } };
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 5);
  /* Prompt lengths around the blocks (16) and the prefill chunk (64);
   * requests 6 and 7 share request 5's first 40 tokens and adapter. */
  const size_t lens[NREQ] = { 1, 5, 16, 17, 70, 150, 48, 41, 33 };
  const int adapters[NREQ] = { -1, 0, 1, 2, 0, 1, 1, 1, -1 };
  for (int i = 0; i < NREQ; i++) {
    req_t *r = &W->req[i];
    r->n = lens[i];
    for (size_t j = 0; j < r->n; j++)
      r->prompt[j] = (int32_t)(tb__k_rng_next(&rng) % 101);
    if (i == 6 || i == 7)
      memcpy(r->prompt, W->req[5].prompt, 40 * sizeof(int32_t));
    r->adapter = adapters[i];
    tb__sampling_params_default(&r->p);
    r->p.seed = 1000 + (uint64_t)i;
    r->p.max_tokens = 6 + (size_t)(i * 5) % 23;
    r->p.num_samples = 1 + (size_t)i % 3;
    r->p.temperature = i % 4 == 3 ? 0.0f : 0.7f + 0.1f * (float)i;
    r->p.top_k = i % 3 == 1 ? 7 : -1;
    r->p.top_p = i % 2 ? 0.9f : 1.0f;
    if (i == 2 || i == 7) {
      r->p.prompt_logprobs = 1;
      r->p.topk_prompt_logprobs = 3;
    }
    if (i == 4) {
      r->stop = 17;  /* a likely token, to end some samples early */
      r->p.stop_tokens = &r->stop;
      r->p.num_stop_tokens = 1;
    }
  }
  /* Each alone, through tb__sample (its own decoder). */
  for (int i = 0; i < NREQ; i++) {
    req_t *r = &W->req[i];
    const tb__lora_t *lora = r->adapter >= 0 ? &W->lora[r->adapter] : NULL;
    ASSERT_OK(tb__sample(NULL, &W->w, lora, r->prompt, r->n, &r->p,
                         &W->alone[i]));
  }
}

static void free_world(world_t *W) {
  for (int i = 0; i < NREQ; i++) {
    tb__sample_result_free(&W->alone[i]);
    tb__sample_result_free(&W->req[i].res);
  }
  for (int i = 0; i < 3; i++)
    tb__lora_free(&W->lora[i]);
  tb__weights_free(&W->w);
}

static void assert_same_result(const tb__sample_result_t *a,
                               const tb__sample_result_t *b) {
  ASSERT_EQ_INT(a->num_seqs, b->num_seqs);
  ASSERT_EQ_INT(a->prompt_len, b->prompt_len);
  for (size_t s = 0; s < a->num_seqs; s++) {
    ASSERT_EQ_INT(a->seqs[s].len, b->seqs[s].len);
    ASSERT_EQ_INT(a->seqs[s].stop_reason, b->seqs[s].stop_reason);
    ASSERT_EQ_INT(memcmp(a->seqs[s].tokens, b->seqs[s].tokens,
                         a->seqs[s].len * sizeof(int32_t)), 0);
    ASSERT_EQ_INT(memcmp(a->seqs[s].logprobs, b->seqs[s].logprobs,
                         a->seqs[s].len * sizeof(float)), 0);
  }
  ASSERT_EQ_INT(a->prompt_logprobs == NULL, b->prompt_logprobs == NULL);
  if (a->prompt_logprobs)
    ASSERT_EQ_INT(memcmp(a->prompt_logprobs, b->prompt_logprobs,
                         a->prompt_len * sizeof(float)), 0);
  ASSERT_EQ_INT(a->topk, b->topk);
  if (a->topk) {
    ASSERT_EQ_INT(memcmp(a->topk_ids, b->topk_ids,
                         a->prompt_len * a->topk * sizeof(int32_t)), 0);
    ASSERT_EQ_INT(memcmp(a->topk_logprobs, b->topk_logprobs,
                         a->prompt_len * a->topk * sizeof(float)), 0);
  }
}

/* ------------------------------------------------------------ driver */

typedef struct run_s {
  world_t *W;
  tb__dec_t dec;
  size_t step;
  int waited;       /* an admission was refused for room */
  int closed;
  size_t max_running;
} run_t;

static const tb__dec_adapter_t *adapter_of(world_t *W, const req_t *r) {
  return r->adapter >= 0 ? &W->ad[r->adapter] : NULL;
}

/* Joins, pauses and resumptions due at this step, and finished ones. */
static int before_step(run_t *R) {
  world_t *W = R->W;
  tb__dec_seq_t *s;
  while ((s = tb__dec_next_finished(&R->dec)) != NULL) {
    req_t *r = s->data;
    r->status = s->status;
    if (s->state == TB_DEC_DONE)
      tb__dec_seq_take(s, &r->res);
    r->done = 1;
    tb__dec_seq_free(s);
    r->seq = NULL;
  }
  int pending = 0;
  for (int i = 0; i < NREQ; i++) {
    req_t *r = &W->req[i];
    if (r->done)
      continue;
    pending = 1;
    if (r->seq == NULL && R->step >= r->join) {
      ASSERT_OK(tb__dec_seq_new(&R->dec, adapter_of(W, r), r->prompt, r->n,
                                &r->p, &r->seq, NULL));
      r->seq->data = r;
    }
    if (r->seq == NULL)
      continue;
    if (r->seq->state == TB_DEC_NEW) {
      int rc = tb__dec_seq_add(r->seq);
      if (rc == TB_EBUSY)
        R->waited = 1;
      else
        ASSERT_OK(rc);
    } else if (r->pause && R->step == r->pause) {
      tb__dec_seq_remove(r->seq);
      ASSERT_EQ_INT(r->seq->state, TB_DEC_PAUSED);
    } else if (r->seq->state == TB_DEC_PAUSED && R->step >= r->resume) {
      ASSERT_OK(tb__dec_seq_add(r->seq));
    }
  }
  size_t running = tb__dec_running(&R->dec);
  if (running > R->max_running)
    R->max_running = running;
  return pending;
}

static void run_sync(world_t *W, const tb__dec_opts_t *opts, run_t *R) {
  memset(R, 0, sizeof(*R));
  R->W = W;
  ASSERT_OK(tb__dec_init_sync(&R->dec, &W->w, opts));
  while (before_step(R)) {
    if (tb__dec_running(&R->dec) > 0)
      ASSERT_OK(tb__dec_step_sync(&R->dec));
    R->step++;
    ASSERT(R->step < 10000);
  }
  tb__dec_free_sync(&R->dec);
}

static void on_step(tb__dec_t *dec, int status);

static void next_step(run_t *R) {
  for (;;) {
    if (!before_step(R)) {
      ASSERT_OK(tb__dec_close(&R->dec, NULL));
      return;
    }
    if (tb__dec_running(&R->dec) > 0) {
      ASSERT_OK(tb__dec_step(&R->dec, on_step));
      return;
    }
    R->step++;  /* nothing runs yet: later joins */
  }
}

static void on_step(tb__dec_t *dec, int status) {
  ASSERT_OK(status);
  run_t *R = dec->data;
  R->step++;
  next_step(R);
}

static void on_open(tb__dec_t *dec, int status) {
  ASSERT_OK(status);
  next_step(dec->data);
}

static void run_async(world_t *W, const tb__dec_opts_t *opts, run_t *R) {
  memset(R, 0, sizeof(*R));
  R->W = W;
  uv_loop_t loop;
  ASSERT_OK(uv_loop_init(&loop));
  R->dec.data = R;
  ASSERT_OK(tb__dec_open(&loop, &R->dec, &W->w, opts, on_open));
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_LOOP_CLOSE(&loop);
}

static void reset_reqs(world_t *W) {
  for (int i = 0; i < NREQ; i++) {
    req_t *r = &W->req[i];
    tb__sample_result_free(&r->res);
    r->seq = NULL;
    r->done = 0;
    r->status = 0;
    r->join = r->pause = r->resume = 0;
  }
}

static void assert_all_alone(world_t *W) {
  for (int i = 0; i < NREQ; i++) {
    ASSERT_EQ_INT(W->req[i].status, 0);
    assert_same_result(&W->req[i].res, &W->alone[i]);
  }
}

/* ------------------------------------------------------------ decoder */

static void compositions(int qwen) {
  world_t *W = malloc(sizeof(*W));
  make_world(W, qwen, 0);
  tb__dec_opts_t o = { 0 };
  run_t R;

  /* Everyone at once, prefix cache on: requests 6 and 7 reuse request
   * 5's first 32 positions, or not (7 wants its prompt's log-probs). */
  reset_reqs(W);
  run_sync(W, &o, &R);
  assert_all_alone(W);
  ASSERT_EQ_INT(R.max_running, NREQ);

  /* Joining at different steps, pausing and coming back; later joiners
   * find the prefix cached. */
  reset_reqs(W);
  for (int i = 0; i < NREQ; i++) {
    W->req[i].join = (size_t)(i * 3) % 7;
    if (i % 3 == 0) {
      W->req[i].pause = W->req[i].join + 2;
      W->req[i].resume = W->req[i].join + 5;
    }
  }
  W->req[6].join = 12;
  run_sync(W, &o, &R);
  assert_all_alone(W);

  /* Prefix cache off, blocks of 5 positions, a budget of one prefill
   * chunk per step. */
  reset_reqs(W);
  for (int i = 0; i < NREQ; i++)
    W->req[i].join = (size_t)i;
  tb__dec_opts_t o2 = { 0 };
  o2.no_prefix_cache = 1;
  o2.block_tokens = 5;
  o2.max_prefill_rows = 64;
  run_sync(W, &o2, &R);
  assert_all_alone(W);
  free_world(W);
  free(W);
}

TEST(batch_equals_alone_llama) { compositions(0); }
TEST(batch_equals_alone_qwen_norms_and_biases) { compositions(1); }

/* The same through the loop, with 1, 2 and 4 work items per step. */
TEST(async_steps_with_1_2_4_items) {
  world_t *W = malloc(sizeof(*W));
  make_world(W, 0, 0);
  const size_t counts[] = { 1, 2, 4 };
  for (size_t ci = 0; ci < 3; ci++) {
    reset_reqs(W);
    for (int i = 0; i < NREQ; i++)
      W->req[i].join = (size_t)i % 4;
    tb__dec_opts_t o = { 0 };
    o.work_items = counts[ci];
    run_t R;
    run_async(W, &o, &R);
    assert_all_alone(W);
  }
  free_world(W);
  free(W);
}

/* One sequence on dec to its end: its result equals want (if given);
 * returns its prompt positions found in the cache. */
static size_t run_one(tb__dec_t *dec, const tb__dec_adapter_t *ad,
                      const req_t *r, const tb__sampling_params_t *p,
                      const tb__sample_result_t *want) {
  tb__dec_seq_t *s;
  ASSERT_OK(tb__dec_seq_new(dec, ad, r->prompt, r->n, p, &s, NULL));
  ASSERT_OK(tb__dec_seq_add(s));
  size_t hit = s->prompt_hit;
  while (s->state == TB_DEC_RUNNING)
    ASSERT_OK(tb__dec_step_sync(dec));
  ASSERT_EQ_INT(s->state, TB_DEC_DONE);
  if (want != NULL)
    assert_same_result(&s->result, want);
  tb__dec_seq_free(s);
  return hit;
}

/* The prefix cache serves a second request the blocks of the first, with
 * the same results; another weights version does not. */
TEST(prefix_cache_hits_and_versions) {
  world_t *W = malloc(sizeof(*W));
  make_world(W, 0, 0);
  tb__dec_t dec;
  tb__dec_opts_t o = { 0 };
  ASSERT_OK(tb__dec_init_sync(&dec, &W->w, &o));
  req_t *a = &W->req[5], *b = &W->req[6];
  ASSERT_EQ_INT(run_one(&dec, &W->ad[1], a, &a->p, &W->alone[5]), 0);
  /* b shares a's first 40 tokens: two blocks of 16. */
  ASSERT_EQ_INT(run_one(&dec, &W->ad[1], b, &b->p, &W->alone[6]), 32);
  /* The adapter's weights changed (a new version): no hit. */
  tb__dec_adapter_t v2 = { W->ad[1].lora, { 2, 2 } };
  tb__dec_seq_t *sc;
  ASSERT_OK(tb__dec_seq_new(&dec, &v2, b->prompt, b->n, &b->p, &sc, NULL));
  ASSERT_OK(tb__dec_seq_add(sc));
  ASSERT_EQ_INT(sc->prompt_hit, 0);
  tb__dec_seq_free(sc);
  /* Everything released: the cached blocks count as room. */
  ASSERT_EQ_INT(tb__dec_room(&dec), dec.pool.num_blocks);
  tb__dec_free_sync(&dec);
  free_world(W);
  free(W);
}

/* A decoder keeps each adapter packed under its key: a second request
 * on the same key reuses the copy, new weights under a new version are
 * packed again (the results are the new weights', not the old copy's),
 * and copies idle for TB__DEC_LORA_IDLE steps are freed. */
TEST(adapter_copies_follow_versions) {
  world_t *W = malloc(sizeof(*W));
  make_world(W, 0, 0);
  tb__dec_t dec;
  tb__dec_opts_t o = { .no_prefix_cache = 1 };
  ASSERT_OK(tb__dec_init_sync(&dec, &W->w, &o));
  req_t *r = &W->req[4];  /* adapter 0 */
  for (int rep = 0; rep < 2; rep++)  /* packed, then the same copy */
    run_one(&dec, &W->ad[0], r, &r->p, &W->alone[4]);
  ASSERT_EQ_INT(dec.fwd.lcache.n, 1);
  tb__lora_t *lora = &W->lora[0];
  for (size_t i = 0; i < lora->num_params; i++)
    lora->params[i] = -lora->params[i] * 0.5f;
  tb__sample_result_t fresh;
  ASSERT_OK(tb__sample(NULL, &W->w, lora, r->prompt, r->n, &r->p, &fresh));
  ASSERT(memcmp(fresh.seqs[0].logprobs, W->alone[4].seqs[0].logprobs,
                sizeof(float)) != 0);
  run_one(&dec, &(tb__dec_adapter_t){ lora, { 1, 2 } }, r, &r->p, &fresh);
  ASSERT_EQ_INT(dec.fwd.lcache.n, 2);
  tb__sampling_params_t p = W->req[0].p;  /* bare model steps only */
  p.max_tokens = TB__DEC_LORA_IDLE + 4;
  run_one(&dec, NULL, &W->req[0], &p, NULL);
  ASSERT_EQ_INT(dec.fwd.lcache.n, 0);
  tb__sample_result_free(&fresh);
  tb__dec_free_sync(&dec);
  free_world(W);
  free(W);
}

/* A pool too small for everyone: admissions wait (TB_EBUSY) and succeed
 * once others finish, results unchanged; a request that could never fit
 * is refused when it is made. */
TEST(pool_bound_admissions_wait) {
  world_t *W = malloc(sizeof(*W));
  make_world(W, 0, 0);
  size_t bs = 16, most = 0;
  for (int i = 0; i < NREQ; i++) {
    size_t need = tb__dec_blocks_needed(bs, W->req[i].n, &W->req[i].p);
    most = need > most ? need : most;
  }
  tb__dec_opts_t o = { 0 };
  o.block_tokens = bs;
  size_t block_bytes = 2 * 2 * bs * 16 * sizeof(float);  /* L, KVH * D */
  o.kv_bytes = (most + 2) * block_bytes;
  reset_reqs(W);
  run_t R;
  run_sync(W, &o, &R);
  assert_all_alone(W);
  ASSERT(R.waited);
  ASSERT(R.max_running < NREQ);

  tb__dec_t dec;
  o.kv_bytes = (most - 1) * block_bytes;
  ASSERT_OK(tb__dec_init_sync(&dec, &W->w, &o));
  ASSERT_EQ_INT(dec.pool.num_blocks, most - 1);
  tb__dec_seq_t *s = NULL;
  int big = 0;
  for (int i = 0; i < NREQ; i++)
    if (tb__dec_blocks_needed(bs, W->req[i].n, &W->req[i].p) == most)
      big = i;
  tb_error_t err = { 0 };
  ASSERT_ERR(tb__dec_seq_new(&dec, NULL, W->req[big].prompt, W->req[big].n,
                             &W->req[big].p, &s, &err), TB_EINVAL);
  ASSERT(s == NULL);
  ASSERT_STR_CONTAINS(err.message, "KV blocks");
  tb_error_clear(&err);
  tb__dec_free_sync(&dec);
  free_world(W);
  free(W);
}

/* Cancelling gives every block back at once; so does finishing. */
TEST(cancel_frees_blocks) {
  world_t *W = malloc(sizeof(*W));
  make_world(W, 0, 0);
  tb__dec_t dec;
  tb__dec_opts_t o = { 0 };
  o.no_prefix_cache = 1;
  ASSERT_OK(tb__dec_init_sync(&dec, &W->w, &o));
  size_t all = tb__dec_room(&dec);
  req_t *r = &W->req[5];
  tb__dec_seq_t *s;
  ASSERT_OK(tb__dec_seq_new(&dec, NULL, r->prompt, r->n, &r->p, &s, NULL));
  ASSERT_OK(tb__dec_seq_add(s));
  ASSERT(tb__dec_room(&dec) < all);
  for (int i = 0; i < 4; i++)
    ASSERT_OK(tb__dec_step_sync(&dec));
  ASSERT(dec.pool.num_free < dec.pool.num_blocks);
  tb__dec_seq_cancel(s);
  ASSERT_EQ_INT(s->state, TB_DEC_CANCELLED);
  ASSERT_EQ_INT(tb__dec_room(&dec), all);
  ASSERT_EQ_INT(dec.pool.num_free, dec.pool.num_blocks);
  ASSERT_EQ_INT(tb__dec_running(&dec), 0);
  ASSERT(tb__dec_next_finished(&dec) == NULL);
  tb__dec_seq_free(s);
  tb__dec_free_sync(&dec);
  free_world(W);
  free(W);
}

/* An adapter whose weights hold a NaN fails its own sequence with
 * TB_ENONFINITE, as a user error; the others in the same steps come out
 * as they do alone. */
TEST(nonfinite_fails_one_sequence_only) {
  world_t *W = malloc(sizeof(*W));
  make_world(W, 0, 0);
  tb__lora_t bad;
  make_lora(&bad, &W->c, 4, 0, 77);
  const tb__lora_slot_t *sl = tb__lora_slot(&bad, 1, TB_LORA_DOWN);
  bad.params[sl->b_off + 3] = NAN;
  tb__dec_t dec;
  tb__dec_opts_t o = { 0 };
  ASSERT_OK(tb__dec_init_sync(&dec, &W->w, &o));
  tb__dec_adapter_t ad = { &bad, { 9, 1 } };
  tb__dec_seq_t *seqs[NREQ + 1];
  for (int i = 0; i < NREQ; i++) {
    req_t *r = &W->req[i];
    ASSERT_OK(tb__dec_seq_new(&dec, adapter_of(W, r), r->prompt, r->n, &r->p,
                              &seqs[i], NULL));
    ASSERT_OK(tb__dec_seq_add(seqs[i]));
  }
  req_t *r = &W->req[3];
  ASSERT_OK(tb__dec_seq_new(&dec, &ad, r->prompt, r->n, &r->p, &seqs[NREQ],
                            NULL));
  ASSERT_OK(tb__dec_seq_add(seqs[NREQ]));
  while (tb__dec_running(&dec) > 0)
    ASSERT_OK(tb__dec_step_sync(&dec));
  ASSERT_EQ_INT(seqs[NREQ]->state, TB_DEC_FAILED);
  ASSERT_EQ_INT(seqs[NREQ]->status, TB_ENONFINITE);
  ASSERT_EQ_INT(seqs[NREQ]->error.category, TB_CATEGORY_USER);
  ASSERT_STR_CONTAINS(seqs[NREQ]->error.message, "diverged");
  ASSERT(seqs[NREQ]->result.seqs == NULL);
  for (int i = 0; i < NREQ; i++) {
    ASSERT_EQ_INT(seqs[i]->state, TB_DEC_DONE);
    assert_same_result(&seqs[i]->result, &W->alone[i]);
  }
  for (int i = 0; i <= NREQ; i++)
    tb__dec_seq_free(seqs[i]);
  ASSERT_EQ_INT(dec.pool.num_free + dec.pool.num_lru, dec.pool.num_blocks);
  tb__dec_free_sync(&dec);
  tb__lora_free(&bad);
  free_world(W);
  free(W);
}

/* Greedy alone results of every request (tb__sample: float32 views). */
static void greedy_alone(world_t *W) {
  for (int i = 0; i < NREQ; i++) {
    W->req[i].p.temperature = 0;  /* greedy: compare the same tokens */
    tb__sample_result_free(&W->alone[i]);
    const tb__lora_t *lora =
        W->req[i].adapter >= 0 ? &W->lora[W->req[i].adapter] : NULL;
    ASSERT_OK(tb__sample(NULL, &W->w, lora, W->req[i].prompt, W->req[i].n,
                         &W->req[i].p, &W->alone[i]));
  }
}

/* The largest log-prob change from the alone results, up to the first
 * token where the argmax moved. */
static double worst_change(world_t *W) {
  double worst = 0;
  for (int i = 0; i < NREQ; i++) {
    const tb__sample_seq_t *a = &W->req[i].res.seqs[0], *b = &W->alone[i].seqs[0];
    for (size_t j = 0; j < a->len && j < b->len; j++) {
      double d = fabs((double)a->logprobs[j] - b->logprobs[j]);
      worst = d > worst ? d : worst;
      if (a->tokens[j] != b->tokens[j])
        break;
    }
  }
  return worst;
}

/* Weights that are exactly bfloat16 are decoded from a packed bfloat16
 * copy: the same values as float32 summed in another order, so log-probs
 * within 1e-3 of the float32 path, and still the same bits in any batch
 * composition.  Forcing bfloat16 on other weights moves log-probs by the
 * rounding only (within 0.1 here). */
TEST(bf16_weights) {
  world_t *W = malloc(sizeof(*W));
  make_world(W, 0, 1);
  tb__dec_t dec;
  tb__dec_opts_t o = { 0 };
  ASSERT_OK(tb__dec_init_sync(&dec, &W->w, &o));
  ASSERT(dec.dw.bf16);
  ASSERT(dec.dw.copy != NULL);
  tb__dec_free_sync(&dec);
  greedy_alone(W);
  reset_reqs(W);
  run_t R;
  run_sync(W, &o, &R);
  double worst = worst_change(W);
  if (getenv("TB_TEST_VERBOSE"))
    fprintf(stderr, "bf16 exact: largest logprob change %.3g\n", worst);
  ASSERT(worst < 1e-3);
  tb__sample_result_t *first = calloc(NREQ, sizeof(*first));
  for (int i = 0; i < NREQ; i++) {
    first[i] = W->req[i].res;
    memset(&W->req[i].res, 0, sizeof(W->req[i].res));
  }
  reset_reqs(W);
  for (int i = 0; i < NREQ; i++)
    W->req[i].join = (size_t)(i * 3) % 7;
  run_sync(W, &o, &R);
  for (int i = 0; i < NREQ; i++) {
    ASSERT_EQ_INT(W->req[i].status, 0);
    assert_same_result(&W->req[i].res, &first[i]);
    tb__sample_result_free(&first[i]);
  }
  free(first);
  free_world(W);

  make_world(W, 0, 0);
  ASSERT_OK(tb__dec_init_sync(&dec, &W->w, &o));
  ASSERT(!dec.dw.bf16);  /* AUTO: these weights are not bfloat16 */
  tb__dec_free_sync(&dec);
  o.weights = TB_DEC_WEIGHTS_BF16;
  greedy_alone(W);
  reset_reqs(W);
  run_sync(W, &o, &R);
  worst = worst_change(W);
  if (getenv("TB_TEST_VERBOSE"))
    fprintf(stderr, "bf16 rounding: largest logprob change %.3g\n", worst);
  ASSERT(worst < 0.1);
  free_world(W);
  free(W);
}

TEST_LIST(
  TEST_ENTRY(pool_alloc_share_copy),
  TEST_ENTRY(pool_prefix_cache_lru_and_bound),
  TEST_ENTRY(coop_items_1_2_4),
  TEST_ENTRY(coop_one_item_alone_and_a_late_one),
  TEST_ENTRY(batch_equals_alone_llama),
  TEST_ENTRY(batch_equals_alone_qwen_norms_and_biases),
  TEST_ENTRY(async_steps_with_1_2_4_items),
  TEST_ENTRY(prefix_cache_hits_and_versions),
  TEST_ENTRY(adapter_copies_follow_versions),
  TEST_ENTRY(pool_bound_admissions_wait),
  TEST_ENTRY(cancel_frees_blocks),
  TEST_ENTRY(nonfinite_fails_one_sequence_only),
  TEST_ENTRY(bf16_weights),
)

/*
 * The decoder's rows per step (decode.h, "Rows per step"): no step's
 * rows cost more than its budget, a sample's row counting
 * TB_DEC_SAMPLE_ROW_COST prompt rows, so at most `cap` (max_decode_rows)
 * sample rows; a new prompt goes ahead of the sample rows, so its first
 * token comes within its own prefill steps however many samples decode
 * beside it; the running samples take turns, each advancing at least once
 * in every ceil(live / cap) steps whatever its age; prompts never shut decoding out two steps in a row; and every
 * sequence's tokens and log-probs stay the same bits as when it samples
 * alone, at any cap (chunks then end anywhere, not only at blocks).
 * Steps are counted, not timed.
 */
#include "tb_test.h"
#include "fixtures.h"

#include "engine/decode_internal.h"
#include "engine/sampler.h"

#define NLOAD 12     /* requests decoding */
#define SAMPLES 4    /* samples each */
#define NREQ (NLOAD + 2)
#define PROBE NLOAD  /* a prompt that comes while they decode */
#define SCORE (NLOAD + 1)  /* one that wants its prompt's log-probs */

typedef struct world_s {
  tb__model_config_t c;
  tb__weights_t w;
  int32_t prompt[NREQ][48];
  size_t n[NREQ];
  tb__sampling_params_t p[NREQ];
  tb__dec_t dec;
  tb__dec_seq_t *seq[NREQ];
  size_t idle[NREQ][SAMPLES];  /* steps since the sample last advanced */
  size_t steps;
  size_t quiet;                /* consecutive steps without prompts */
  size_t most;                 /* the most samples live in them */
  size_t shut_out;             /* consecutive steps no decode row ran */
} world_t;

static void make_world(world_t *W) {
  memset(W, 0, sizeof(*W));
  W->c = tb_test_config(48, 80, 2, 6, 2, 8, 101, 512, 1e-5f, 10000.0f);
  tb_test_random_model(&W->w, &W->c, 77);
  for (int i = 0; i < NREQ; i++) {
    W->n[i] = i == PROBE ? 47 : i == SCORE ? 29 : 8 + (size_t)i % 3;
    for (size_t j = 0; j < W->n[i]; j++)
      W->prompt[i][j] = (int32_t)((i * 37 + (int)j * 11) % 101);
    tb__sampling_params_t *p = &W->p[i];
    tb__sampling_params_default(p);
    p->seed = 500 + (uint64_t)i;
    p->temperature = 0.8f + 0.05f * (float)i;
    p->num_samples = i < NLOAD ? SAMPLES : i == PROBE ? 1 : 2;
    p->max_tokens = i < NLOAD ? 24 + (size_t)i % 5 : i == PROBE ? 1 : 3;
    if (i == SCORE) {
      p->prompt_logprobs = 1;
      p->topk_prompt_logprobs = 2;
    }
  }
}

static void add(world_t *W, int i) {
  ASSERT_OK(tb__dec_seq_new(&W->dec, NULL, W->prompt[i], W->n[i], &W->p[i],
                            &W->seq[i], NULL));
  ASSERT_OK(tb__dec_seq_add(W->seq[i]));
}

static int decoding(const tb__dec_seq_t *s) {
  return s != NULL && s->state == TB_DEC_RUNNING && s->prefilled == s->n;
}

/* One step: never rows that cost more than the budget; once no prompt has been under
 * way for b = ceil(live / cap) steps (live: the most samples live in
 * those steps), no live sample has waited b steps
 * for its turn (the least recently run go first, so any b steps without
 * prompts serve every sample); decoding is never shut out two steps in a
 * row. */
static void step(world_t *W) {
  size_t cap = W->dec.max_decode_rows, live = 0, before[NREQ][SAMPLES];
  int was[NREQ][SAMPLES] = { { 0 } }, prompts = 0;
  for (int i = 0; i < NREQ; i++) {
    tb__dec_seq_t *s = W->seq[i];
    prompts |= s != NULL && s->state == TB_DEC_RUNNING && !decoding(s);
    for (size_t k = 0; decoding(s) && k < s->S; k++) {
      was[i][k] = s->samples[k].live;
      before[i][k] = s->result.seqs[k].len;
      live += (size_t)was[i][k];
    }
  }
  W->quiet = prompts ? 0 : W->quiet + 1;
  W->most = prompts || live > W->most ? live : W->most;
  ASSERT_OK(tb__dec_step_sync(&W->dec));
  W->steps++;
  size_t pr = W->dec.step_prompt_rows, dr = W->dec.step_decode_rows;
  ASSERT_EQ_INT(W->dec.fwd.T, pr + dr);
  ASSERT_LE(pr + TB_DEC_SAMPLE_ROW_COST * dr, W->dec.step_budget);
  ASSERT_LE(dr, cap);
  size_t advanced = 0, b = (W->most + cap - 1) / cap;
  for (int i = 0; i < NREQ; i++)
    for (size_t k = 0; k < SAMPLES; k++) {
      if (!was[i][k])
        continue;
      if (W->seq[i]->result.seqs[k].len > before[i][k]) {
        advanced++;
        W->idle[i][k] = 0;
      } else if (++W->idle[i][k] && W->quiet >= b) {
        ASSERT_LE(W->idle[i][k], b - 1);
      }
    }
  W->shut_out = live > 0 && advanced == 0 ? W->shut_out + 1 : 0;
  ASSERT_LE(W->shut_out, 1);
}

static void assert_alone(world_t *W, int i) {
  tb__sample_result_t a = { 0 }, b = { 0 };
  ASSERT_EQ_INT(W->seq[i]->state, TB_DEC_DONE);
  tb__dec_seq_take(W->seq[i], &b);
  ASSERT_OK(tb__sample(NULL, &W->w, NULL, W->prompt[i], W->n[i], &W->p[i],
                       &a));
  ASSERT_EQ_INT(a.num_seqs, b.num_seqs);
  for (size_t s = 0; s < a.num_seqs; s++) {
    ASSERT_EQ_INT(a.seqs[s].len, b.seqs[s].len);
    ASSERT_EQ_INT(memcmp(a.seqs[s].tokens, b.seqs[s].tokens,
                         a.seqs[s].len * sizeof(int32_t)), 0);
    ASSERT_EQ_INT(memcmp(a.seqs[s].logprobs, b.seqs[s].logprobs,
                         a.seqs[s].len * sizeof(float)), 0);
  }
  ASSERT_EQ_INT(a.prompt_logprobs == NULL, b.prompt_logprobs == NULL);
  if (a.prompt_logprobs)
    ASSERT_EQ_INT(memcmp(a.prompt_logprobs, b.prompt_logprobs,
                         a.prompt_len * sizeof(float)), 0);
  ASSERT_EQ_INT(a.topk, b.topk);
  if (a.topk)
    ASSERT_EQ_INT(memcmp(a.topk_logprobs, b.topk_logprobs,
                         a.prompt_len * a.topk * sizeof(float)), 0);
  tb__sample_result_free(&a);
  tb__sample_result_free(&b);
}

/* NLOAD requests of SAMPLES samples decode under a cap of `cap` sample
 * rows, a budget of twice as many prompt rows; once all decode, a prompt
 * of 47 tokens comes (its first token must come within ceil(47 / cap)
 * steps: prompts take the whole budget, or at least half of it, cap
 * rows, in two steps of which one shut decoding out), then one that
 * scores its prompt; everything is checked against each alone. */
static void load_and_probe(size_t cap) {
  world_t *W = malloc(sizeof(*W));
  make_world(W);
  tb__dec_opts_t o = { 0 };
  o.max_decode_rows = cap;
  ASSERT_OK(tb__dec_init_sync(&W->dec, &W->w, &o));
  ASSERT_EQ_INT(W->dec.max_decode_rows, cap);
  ASSERT_EQ_INT(W->dec.step_budget, cap * TB_DEC_SAMPLE_ROW_COST);
  for (int i = 0; i < NLOAD; i++)
    add(W, i);
  for (int all = 0; !all;) {
    step(W);
    all = 1;
    for (int i = 0; i < NLOAD; i++)
      all &= decoding(W->seq[i]);
    ASSERT(W->steps < 1000);
  }
  /* A few steps of decoding alone: every sample takes its turn. */
  for (int i = 0; i < 6; i++)
    step(W);
  for (int i = 0; i < NLOAD; i++)
    ASSERT_EQ_INT(W->seq[i]->state, TB_DEC_RUNNING);

  /* The probe: one sample of one token; decoding goes on beside it. */
  add(W, PROBE);
  size_t bound = (W->n[PROBE] + cap - 1) / cap, at = W->steps;
  while (W->seq[PROBE]->state == TB_DEC_RUNNING)
    step(W);
  ASSERT_LE(W->steps - at, bound);
  for (int i = 0; i < NLOAD; i++)
    ASSERT_EQ_INT(W->seq[i]->state, TB_DEC_RUNNING);
  assert_alone(W, PROBE);

  add(W, SCORE);
  for (int more = 1; more;) {
    step(W);
    more = 0;
    for (int i = 0; i < NREQ; i++)
      more |= W->seq[i] != NULL && W->seq[i]->state == TB_DEC_RUNNING;
    ASSERT(W->steps < 5000);
  }
  for (int i = 0; i < NREQ; i++)
    if (i != PROBE)
      assert_alone(W, i);
  for (int i = 0; i < NREQ; i++)
    tb__dec_seq_free(W->seq[i]);
  tb__dec_free_sync(&W->dec);
  tb__weights_free(&W->w);
  free(W);
}

/* A step of 16 sample rows: 48 samples take turns in threes. */
TEST(cap_16_rotation_prefill_first_same_bits) { load_and_probe(16); }
/* Fewer rows than a block or a chunk: prompts cut anywhere. */
TEST(cap_5_chunks_anywhere_same_bits) { load_and_probe(5); }
/* One sample row or two prompt rows: after a step of prompts only, the
 * next leaves room for one sample row. */
TEST(cap_1_alternates_same_bits) { load_and_probe(1); }
/* The default: sample rows that cost one prefill chunk. */
TEST(default_cap_is_one_chunk) {
  tb__model_config_t c = tb_test_config(48, 80, 2, 6, 2, 8, 101, 512, 1e-5f,
                                        10000.0f);
  tb__weights_t w;
  tb_test_random_model(&w, &c, 1);
  tb__dec_t dec;
  ASSERT_OK(tb__dec_init_sync(&dec, &w, NULL));
  ASSERT_EQ_INT(dec.max_decode_rows, TB_DEC_DEFAULT_DECODE_ROWS);
  ASSERT_EQ_INT(dec.step_budget, TB_DEC_PREFILL_CHUNK);
  tb__dec_free_sync(&dec);
  tb__weights_free(&w);
}

TEST_LIST(
  TEST_ENTRY(cap_16_rotation_prefill_first_same_bits),
  TEST_ENTRY(cap_5_chunks_anywhere_same_bits),
  TEST_ENTRY(cap_1_alternates_same_bits),
  TEST_ENTRY(default_cap_is_one_chunk),
)

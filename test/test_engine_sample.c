/*
 * engine/engine_sample.c: sample jobs of many requests and adapters
 * decoded together by the model's one decoder.  Each job's result is the
 * same bits as the request sampled alone (tb__sample); an adapter's run of
 * samples starts together and its optimizer step waits for it; requests
 * wait for room in the KV pool in order (reported as capacity) and one
 * larger than the pool fails; cancelling gives the blocks back; training
 * keeps running while sequences decode; close cancels what remains.
 */
#include "tb_test.h"

#include "engine/base_model.h"
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "kernels/kernels.h"

/* ------------------------------------------------------------ fixture */

typedef struct env_s {
  uv_loop_t loop;
  tb__engine_t engine;
  tb__engine_model_t *base;
  int done;         /* completions, in order */
  int closed;
} env_t;

/* One request: its job, what it asks, and what came back. */
typedef struct req_s {
  env_t *env;
  tb__engine_job_t job;
  int32_t prompt[48];
  size_t n;
  tb__sampling_params_t p;
  tb__engine_adapter_t *adapter;
  int calls, status, done_at, started_at, waiting_events;
  uint64_t steps_at_start;
} req_t;

static void req_cb(tb__engine_job_t *job, int status) {
  req_t *r = job->data;
  r->calls++;
  r->status = status;
  r->done_at = ++r->env->done;
  if (status != 0)
    ASSERT_EQ_INT(job->error.code, status);
}

static void req_on_start(tb__engine_job_t *job) {
  req_t *r = job->data;
  r->started_at = r->env->done + 1;
}

static void req_on_capacity(tb__engine_job_t *job, int waiting) {
  req_t *r = job->data;
  r->waiting_events += waiting ? 1 : 100;
}

static void env_closed(tb__engine_t *e) { ((env_t *)e->data)->closed++; }

static void env_run(env_t *env) { ASSERT_OK(uv_run(&env->loop, UV_RUN_DEFAULT)); }

static void env_init_rows(env_t *env, size_t kv_bytes, size_t decode_rows) {
  memset(env, 0, sizeof(*env));
  ASSERT_OK(uv_loop_init(&env->loop));
  tb__engine_opts_t opts = { 0 };
  opts.kv_bytes = kv_bytes;
  opts.decode_rows = decode_rows;
  env->engine.data = env;
  ASSERT_OK(tb__engine_init(&env->loop, &env->engine, &opts));
  req_t r = { .env = env };
  r.job.data = &r;
  ASSERT_OK(tb__engine_load_model(&r.job, &env->engine, "base", req_cb));
  env_run(env);
  ASSERT_OK(r.status);
  env->base = r.job.model;
  tb__engine_job_cleanup(&r.job);
  env->done = 0;
}

static void env_init(env_t *env, size_t kv_bytes) {
  env_init_rows(env, kv_bytes, 0);
}

static void env_close(env_t *env) {
  tb__engine_model_unref(env->base);
  ASSERT_OK(tb__engine_close(&env->engine, env_closed));
  env_run(env);
  ASSERT_EQ_INT(env->closed, 1);
  ASSERT_LOOP_CLOSE(&env->loop);
}

/* An adapter whose weights are random (B too), so that each one samples
 * its own distribution. */
static tb__engine_adapter_t *adapter_new(env_t *env, uint64_t seed) {
  req_t r = { .env = env };
  r.job.data = &r;
  tb__lora_config_t c = { 0 };
  c.rank = 4;
  c.seed = seed;
  c.train_attn = c.train_mlp = c.train_unembed = 1;
  ASSERT_OK(tb__engine_create_adapter(&r.job, env->base, &c, req_cb));
  env_run(env);
  ASSERT_OK(r.status);
  tb__engine_adapter_t *a = r.job.adapter;
  tb__engine_job_cleanup(&r.job);
  tb__lora_t *l = tb__engine_adapter_lora(a);
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  tb__k_rng_fill_uniform(l->params, &rng, -0.05f, 0.05f, l->num_params);
  return a;
}

static void req_init(req_t *r, env_t *env, tb__engine_adapter_t *a,
                     size_t n, size_t samples, size_t max_tokens,
                     uint64_t seed) {
  memset(r, 0, sizeof(*r));
  r->env = env;
  r->adapter = a;
  r->n = n;
  for (size_t i = 0; i < n; i++)
    r->prompt[i] = (int32_t)((seed * 31 + i * 7) % 200 + 1);
  tb__sampling_params_default(&r->p);
  r->p.num_samples = samples;
  r->p.max_tokens = max_tokens;
  r->p.seed = seed;
  r->p.top_k = 40;
  r->p.top_p = 0.95f;
  r->job.data = r;
  r->job.on_start = req_on_start;
  r->job.on_capacity = req_on_capacity;
}

static void req_submit(req_t *r) {
  ASSERT_OK(tb__engine_sample(&r->job, r->env->base, r->adapter, r->prompt,
                              r->n, &r->p, req_cb));
}

/* The request alone, on the calling thread. */
static void req_alone(req_t *r, tb__sample_result_t *out) {
  const tb__lora_t *lora =
      r->adapter ? tb__engine_adapter_lora(r->adapter) : NULL;
  ASSERT_OK(tb__sample(NULL, tb__engine_model_weights(r->env->base), lora,
                       r->prompt, r->n, &r->p, out));
}

static void assert_same_result(const tb__sample_result_t *a,
                               const tb__sample_result_t *b) {
  ASSERT_EQ_INT(a->num_seqs, b->num_seqs);
  for (size_t s = 0; s < a->num_seqs; s++) {
    ASSERT_EQ_INT(a->seqs[s].len, b->seqs[s].len);
    ASSERT_EQ_INT(a->seqs[s].stop_reason, b->seqs[s].stop_reason);
    ASSERT(memcmp(a->seqs[s].tokens, b->seqs[s].tokens,
                  a->seqs[s].len * sizeof(int32_t)) == 0);
    ASSERT(memcmp(a->seqs[s].logprobs, b->seqs[s].logprobs,
                  a->seqs[s].len * sizeof(float)) == 0);
  }
}

static tb__dec_t *decoder_of(env_t *env) {
  ASSERT(env->base->decoder != NULL);
  return &env->base->decoder->dec;
}

/* An engine whose KV pool holds exactly the blocks one request of n
 * prompt tokens, `samples` samples and max_tokens reserves; returns that
 * many blocks. */
static size_t env_init_for(env_t *env, size_t n, size_t samples,
                           size_t max_tokens) {
  tb__sampling_params_t p;
  tb__sampling_params_default(&p);
  p.num_samples = samples;
  p.max_tokens = max_tokens;
  size_t need = tb__dec_blocks_needed(16, n, &p);
  tb__model_config_t c;
  tb__base_model_config(&c);
  env_init(env, need * 2 * (size_t)c.num_layers * 16 * (size_t)c.num_kv_heads *
                    (size_t)c.head_dim * sizeof(float));
  return need;
}

/* ------------------------------------------------------------ tests */

/* Nine requests over three adapters and the bare model, of different
 * prompt lengths, decoding together: each gives the bits it gives alone,
 * and the decoder ran far fewer steps than the requests alone would. */
TEST(requests_decode_together_as_alone) {
  env_t env;
  env_init(&env, 0);
  tb__engine_adapter_t *ad[3];
  for (int i = 0; i < 3; i++)
    ad[i] = adapter_new(&env, 11 + (uint64_t)i);
  enum { N = 9 };
  req_t r[N];
  for (int i = 0; i < N; i++)
    req_init(&r[i], &env, i < 8 ? ad[i % 3] : NULL, 5 + 4 * (size_t)i, 2, 24,
             100 + (uint64_t)i);
  for (int i = 0; i < N; i++)
    req_submit(&r[i]);
  env_run(&env);
  uint64_t steps = decoder_of(&env)->steps;
  for (int i = 0; i < N; i++) {
    ASSERT_EQ_INT(r[i].calls, 1);
    ASSERT_OK(r[i].status);
    tb__sample_result_t alone;
    req_alone(&r[i], &alone);
    assert_same_result(&r[i].job.sample, &alone);
    tb__sample_result_free(&alone);
    tb__engine_job_cleanup(&r[i].job);
  }
  /* Alone, each would take its prompt's chunk and up to 23 decode steps. */
  ASSERT(steps < 2 * 24);
  env_close(&env);
}

/* An adapter's samples run together; its optimizer step waits for them,
 * and a sample submitted after the step sees the new weights. */
TEST(optim_step_waits_for_the_adapters_samples) {
  env_t env;
  env_init(&env, 0);
  tb__engine_adapter_t *a = adapter_new(&env, 5);
  req_t s1, s2, s3;
  req_init(&s1, &env, a, 8, 1, 40, 1);
  req_init(&s2, &env, a, 9, 1, 40, 2);
  req_init(&s3, &env, a, 8, 1, 40, 1);
  tb__sample_result_t before;
  req_alone(&s1, &before);

  /* Gradients to step on. */
  tb__lora_t *l = tb__engine_adapter_lora(a);
  for (size_t i = 0; i < l->num_params; i++)
    l->grads[i] = (float)((i % 7) - 3) * 1e-3f;
  req_t opt = { .env = &env };
  opt.job.data = &opt;
  tb__adam_params_t adam = { 0 };
  adam.learning_rate = 0.05f;
  adam.beta1 = 0.9f;
  adam.beta2 = 0.95f;
  adam.eps = 1e-8f;
  req_submit(&s1);
  req_submit(&s2);
  ASSERT_OK(tb__engine_optim_step(&opt.job, a, &adam, req_cb));
  req_submit(&s3);
  ASSERT(s1.job.started && s2.job.started);
  ASSERT(!opt.job.started && !s3.job.started);
  env_run(&env);
  ASSERT_OK(s1.status);
  ASSERT_OK(s2.status);
  ASSERT_OK(opt.status);
  ASSERT_OK(s3.status);
  ASSERT(opt.done_at > s1.done_at && opt.done_at > s2.done_at);
  ASSERT(s3.started_at > opt.done_at);
  assert_same_result(&s1.job.sample, &before);
  tb__sample_result_t after;
  req_alone(&s3, &after);
  assert_same_result(&s3.job.sample, &after);
  /* Same prompt and seed, new weights: another sample. */
  ASSERT(memcmp(before.seqs[0].logprobs, after.seqs[0].logprobs,
                sizeof(float)) != 0);
  tb__sample_result_free(&before);
  tb__sample_result_free(&after);
  req_t *all[] = { &s1, &s2, &s3, &opt };
  for (size_t i = 0; i < 4; i++)
    tb__engine_job_cleanup(&all[i]->job);
  env_close(&env);
}

/* A pool with room for one request at a time: the others wait, are told
 * so, and are admitted in order; one larger than the pool fails at once
 * with a user error. */
TEST(requests_wait_for_room_in_order) {
  env_t env;
  size_t need = env_init_for(&env, 20, 2, 30);
  req_t r[3], big;
  for (int i = 0; i < 3; i++) {
    req_init(&r[i], &env, NULL, 20, 2, 30, 7 + (uint64_t)i);
    r[i].p.temperature = 0;  /* greedy: every sample runs to max_tokens */
  }
  req_init(&big, &env, NULL, 20, 4, 30, 1);
  for (int i = 0; i < 3; i++)
    req_submit(&r[i]);
  req_submit(&big);
  env_run(&env);
  for (int i = 0; i < 3; i++) {
    ASSERT_OK(r[i].status);
    ASSERT_EQ_INT(r[i].job.sample.num_seqs, 2);
    tb__sample_result_t alone;
    req_alone(&r[i], &alone);
    assert_same_result(&r[i].job.sample, &alone);
    tb__sample_result_free(&alone);
  }
  ASSERT_EQ_INT(r[0].waiting_events, 0);
  ASSERT_EQ_INT(r[1].waiting_events, 101);  /* waited, then admitted */
  ASSERT_EQ_INT(r[2].waiting_events, 101);
  ASSERT(r[1].started_at > r[0].done_at);
  ASSERT(r[2].started_at > r[1].done_at);
  ASSERT_ERR(big.status, TB_EINVAL);
  ASSERT_EQ_INT(big.job.error.category, TB_CATEGORY_USER);
  ASSERT(strstr(tb_error_message(&big.job.error), "KV blocks") != NULL);
  ASSERT_EQ_INT(tb__dec_room(decoder_of(&env)), need);
  for (int i = 0; i < 3; i++)
    tb__engine_job_cleanup(&r[i].job);
  tb__engine_job_cleanup(&big.job);
  env_close(&env);
}

/* Cancelling: a running request gives its blocks back and the one waiting
 * for them runs; a waiting request never starts. */
typedef struct canceller_s {
  uv_timer_t timer;
  req_t *victim;
} canceller_t;

static void cancel_now(uv_timer_t *t) {
  canceller_t *c = t->data;
  tb__dec_t *dec = decoder_of(c->victim->env);
  if (dec->steps < 3) {  /* let it decode a little first */
    uv_timer_start(t, cancel_now, 1, 0);
    return;
  }
  ASSERT_OK(tb__engine_job_cancel(&c->victim->job));
  ASSERT_OK(tb__engine_job_cancel(&c->victim->job));  /* twice is harmless */
  uv_close((uv_handle_t *)t, NULL);
}

TEST(cancel_frees_the_blocks) {
  env_t env;
  size_t need = env_init_for(&env, 10, 1, 1500);
  req_t a, b, c;
  req_init(&a, &env, NULL, 10, 1, 1500, 3);
  a.p.temperature = 0;
  req_init(&b, &env, NULL, 10, 1, 20, 4);
  req_init(&c, &env, NULL, 10, 1, 20, 5);
  req_submit(&a);
  req_submit(&b);
  req_submit(&c);
  ASSERT_OK(tb__engine_job_cancel(&c.job));  /* waiting: never starts */
  canceller_t k = { .victim = &a };
  ASSERT_OK(uv_timer_init(&env.loop, &k.timer));
  k.timer.data = &k;
  ASSERT_OK(uv_timer_start(&k.timer, cancel_now, 1, 0));
  env_run(&env);
  ASSERT_ERR(a.status, TB_ECANCELED);
  ASSERT_EQ_INT(a.job.error.category, TB_CATEGORY_CANCELLED);
  ASSERT_EQ_INT(a.job.sample.num_seqs, 0);
  ASSERT_ERR(c.status, TB_ECANCELED);
  ASSERT_EQ_INT(c.started_at, 0);
  ASSERT_OK(b.status);
  ASSERT(b.done_at > a.done_at);
  ASSERT_EQ_INT(tb__dec_room(decoder_of(&env)), need);
  ASSERT_OK(tb__engine_job_cancel(&b.job));  /* completed: nothing to do */
  ASSERT_EQ_INT(b.calls, 1);
  tb__engine_job_cleanup(&a.job);
  tb__engine_job_cleanup(&b.job);
  tb__engine_job_cleanup(&c.job);
  env_close(&env);
}

/* Fairness: a forward_backward submitted while sequences decode completes
 * long before they do, and the decoder keeps stepping while it runs. */
typedef struct fb_s {
  req_t r;
  uint64_t steps_at_submit, steps_at_done;
} fb_t;

static void fb_cb(tb__engine_job_t *job, int status) {
  fb_t *f = job->data;
  f->steps_at_done = decoder_of(f->r.env)->steps;
  f->r.calls++;
  f->r.status = status;
  f->r.done_at = ++f->r.env->done;
}

typedef struct trainer_s {
  uv_timer_t timer;
  fb_t *fb;
  tb__engine_adapter_t *a;
  tb__batch_t *batch;
} trainer_t;

static void train_now(uv_timer_t *t) {
  trainer_t *tr = t->data;
  tb__dec_t *dec = decoder_of(tr->fb->r.env);
  if (dec->steps < 5) {
    uv_timer_start(t, train_now, 1, 0);
    return;
  }
  tr->fb->steps_at_submit = dec->steps;
  ASSERT_OK(tb__engine_forward_backward(&tr->fb->r.job, tr->a, tr->batch,
                                        fb_cb));
  uv_close((uv_handle_t *)t, NULL);
}

TEST(training_and_sampling_share_the_threadpool) {
  env_t env;
  env_init(&env, 0);
  tb__engine_adapter_t *a = adapter_new(&env, 1), *b = adapter_new(&env, 2);
  enum { N = 4, T = 120, MAXT = 300 };
  static int32_t tok[N][T], tgt[N][T];
  static float wts[N][T];
  tb__datum_t d[N];
  for (int i = 0; i < N; i++) {
    for (int t = 0; t < T; t++) {
      tok[i][t] = (i * 13 + t * 5) % 200 + 1;
      tgt[i][t] = (i * 11 + t * 3) % 200 + 1;
      wts[i][t] = 1;
    }
    memset(&d[i], 0, sizeof(d[i]));
    d[i].tokens = tok[i];
    d[i].target_tokens = tgt[i];
    d[i].weights = wts[i];
    d[i].n = T;
  }
  tb__batch_t batch = { 0 };
  batch.data = d;
  batch.num_data = N;
  batch.loss_fn = TB_LOSS_CROSS_ENTROPY;

  req_t s[4];
  for (int i = 0; i < 4; i++) {
    req_init(&s[i], &env, a, 16, 2, MAXT, 50 + (uint64_t)i);
    s[i].p.temperature = 0;
    req_submit(&s[i]);
  }
  fb_t fb = { .r = { .env = &env } };
  fb.r.job.data = &fb;
  trainer_t tr = { .fb = &fb, .a = b, .batch = &batch };
  ASSERT_OK(uv_timer_init(&env.loop, &tr.timer));
  tr.timer.data = &tr;
  ASSERT_OK(uv_timer_start(&tr.timer, train_now, 1, 0));
  env_run(&env);
  ASSERT_OK(fb.r.status);
  for (int i = 0; i < 4; i++) {
    ASSERT_OK(s[i].status);
    ASSERT(fb.r.done_at < s[i].done_at);  /* training was not starved */
    tb__engine_job_cleanup(&s[i].job);
  }
  ASSERT(fb.steps_at_done > fb.steps_at_submit);  /* nor was sampling */
  tb__engine_job_cleanup(&fb.r.job);
  env_close(&env);
}

/* A request that comes while 32 samples decode under decode_rows 8. */
typedef struct probe_s {
  uv_idle_t idle;
  env_t *env;
  req_t *load;
  size_t nload;
  req_t probe;
  uint64_t sent_at, got_at;
  size_t max_cost;     /* prompt rows + TB_DEC_SAMPLE_ROW_COST x sample rows */
  size_t max_decode;   /* sample rows */
  int sent;
} probe_t;

static void probe_cb(tb__engine_job_t *job, int status) {
  probe_t *pr = (probe_t *)((char *)job->data - offsetof(probe_t, probe));
  req_cb(job, status);
  pr->got_at = decoder_of(pr->env)->steps;
  uv_close((uv_handle_t *)&pr->idle, NULL);
}

/* Every loop turn: the rows of the step under way (each step is planned
 * on the loop, so every one is seen); once every load request decodes,
 * the probe goes in. */
static void probe_idle(uv_idle_t *h) {
  probe_t *pr = h->data;
  if (pr->env->base->decoder == NULL || !pr->env->base->decoder->open)
    return;
  tb__dec_t *dec = decoder_of(pr->env);
  if (dec->stepping) {
    size_t cost = dec->step_prompt_rows +
                  TB_DEC_SAMPLE_ROW_COST * dec->step_decode_rows;
    ASSERT_EQ_INT(dec->fwd.T, dec->step_prompt_rows + dec->step_decode_rows);
    pr->max_cost = cost > pr->max_cost ? cost : pr->max_cost;
    if (dec->step_decode_rows > pr->max_decode)
      pr->max_decode = dec->step_decode_rows;
  }
  if (pr->sent)
    return;
  for (size_t i = 0; i < pr->nload; i++)
    if (pr->load[i].calls > 0) {  /* too late: the test fails */
      uv_close((uv_handle_t *)&pr->idle, NULL);
      return;
    }
  for (size_t i = 0; i < pr->nload; i++) {
    tb__dec_seq_t *s = pr->load[i].job.seq;
    if (s == NULL || s->state != TB_DEC_RUNNING || s->prefilled < s->n)
      return;
  }
  pr->sent = 1;
  pr->sent_at = dec->steps;
  ASSERT_OK(tb__engine_sample(&pr->probe.job, pr->env->base, NULL,
                              pr->probe.prompt, pr->probe.n, &pr->probe.p,
                              probe_cb));
}

/* decode_rows bounds every step: 8 sample rows, or 16 prompt rows; a new
 * prompt goes ahead of the sample rows, so its first token comes after at
 * most the step under way and its own prefill steps (counted, not timed:
 * ceil(20 / 8), prompts taking at least half the budget), while everyone
 * keeps the bits of alone. */
TEST(decode_rows_bound_steps_and_first_token) {
  env_t env;
  env_init_rows(&env, 0, 8);
  enum { N = 8 };
  req_t r[N];
  probe_t pr = { .env = &env, .load = r, .nload = N };
  for (int i = 0; i < N; i++) {
    req_init(&r[i], &env, NULL, 6, 4, 40, 300 + (uint64_t)i);
    req_submit(&r[i]);
  }
  req_init(&pr.probe, &env, NULL, 20, 1, 1, 999);
  ASSERT_OK(uv_idle_init(&env.loop, &pr.idle));
  pr.idle.data = &pr;
  ASSERT_OK(uv_idle_start(&pr.idle, probe_idle));
  env_run(&env);
  ASSERT(pr.sent);
  ASSERT_EQ_INT(decoder_of(&env)->max_decode_rows, 8);
  ASSERT_LE(pr.max_cost, 8 * TB_DEC_SAMPLE_ROW_COST);
  ASSERT_EQ_INT(pr.max_decode, 8);  /* 32 samples: every step is full */
  ASSERT_LE(pr.got_at - pr.sent_at, 1 + 3);
  for (int i = 0; i < N; i++)
    ASSERT(r[i].done_at > pr.probe.done_at);  /* it came while they ran */
  req_t *all[N + 1];
  for (int i = 0; i < N; i++)
    all[i] = &r[i];
  all[N] = &pr.probe;
  for (int i = 0; i < N + 1; i++) {
    ASSERT_EQ_INT(all[i]->calls, 1);
    ASSERT_OK(all[i]->status);
    tb__sample_result_t alone;
    req_alone(all[i], &alone);
    assert_same_result(&all[i]->job.sample, &alone);
    tb__sample_result_free(&alone);
    tb__engine_job_cleanup(&all[i]->job);
  }
  env_close(&env);
}

/* Closing the engine cancels sequences running and waiting; the model's
 * decoder closes before its weights go. */
TEST(close_cancels_sampling) {
  env_t env;
  env_init_for(&env, 10, 1, 1000);
  req_t a, b;
  req_init(&a, &env, NULL, 10, 1, 1000, 1);
  req_init(&b, &env, NULL, 10, 1, 1000, 2);
  a.p.temperature = b.p.temperature = 0;
  req_submit(&a);
  req_submit(&b);
  (void)uv_run(&env.loop, UV_RUN_ONCE);
  tb__engine_model_unref(env.base);
  env.base = NULL;
  ASSERT_OK(tb__engine_close(&env.engine, env_closed));
  env_run(&env);
  ASSERT_EQ_INT(env.closed, 1);
  ASSERT_ERR(a.status, TB_ECANCELED);
  ASSERT_ERR(b.status, TB_ECANCELED);
  tb__engine_job_cleanup(&a.job);
  tb__engine_job_cleanup(&b.job);
  ASSERT_LOOP_CLOSE(&env.loop);
}

TEST_LIST(
  TEST_ENTRY(requests_decode_together_as_alone),
  TEST_ENTRY(optim_step_waits_for_the_adapters_samples),
  TEST_ENTRY(requests_wait_for_room_in_order),
  TEST_ENTRY(cancel_frees_the_blocks),
  TEST_ENTRY_TIMEOUT(training_and_sampling_share_the_threadpool, 180000),
  TEST_ENTRY(close_cancels_sampling),
  TEST_ENTRY(decode_rows_bound_steps_and_first_token),
)

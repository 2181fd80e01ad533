/*
 * What the engine's tests share (test_engine.c: jobs and their
 * scheduling; test_engine_train.c: what training computes): an engine with
 * the `base` model on a loop of its own, adapters, a batch of six random
 * datums, synchronous forward, forward_backward, optimizer steps and
 * removals, and the checks of a completion (on the loop thread, once).
 */
#ifndef TB_TEST_ENGINE_H
#define TB_TEST_ENGINE_H

#include "tb_test.h"

#include <pthread.h>

#include "engine/engine.h"
#include "fixtures.h"
#include "kernels/kernels.h"
#include "text/base_chat.h"

static pthread_t loop_thread;
static int completions;

typedef struct rec_s {
  int calls;
  int status;
  int seq;
} rec_t;

static inline void rec_cb(tb__engine_job_t *job, int status) {
  rec_t *r = job->data;
  ASSERT(pthread_equal(pthread_self(), loop_thread));
  r->calls++;
  r->status = status;
  r->seq = ++completions;
  if (status != 0)
    ASSERT_EQ_INT(job->error.code, status);
}

typedef struct env_s {
  uv_loop_t loop;
  tb__engine_t engine;
  tb__engine_model_t *base;
  int closed;
} env_t;

static inline void closed_cb(tb__engine_t *e) {
  env_t *env = e->data;
  ASSERT(pthread_equal(pthread_self(), loop_thread));
  env->closed++;
}

/* Runs the loop until every queued job has completed; returns its status. */
static inline int wait_job(env_t *env, tb__engine_job_t *job, rec_t *r) {
  ASSERT_OK(uv_run(&env->loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(r->calls, 1);
  (void)job;
  return r->status;
}

/* An engine that keeps at most max_items work items in the threadpool (0:
 * the default). */
static inline void env_init_items(env_t *env, size_t shards, size_t max_items) {
  loop_thread = pthread_self();
  completions = 0;
  memset(env, 0, sizeof(*env));
  ASSERT_OK(uv_loop_init(&env->loop));
  tb__engine_opts_t opts = { shards, 1, max_items };
  env->engine.data = env;
  ASSERT_OK(tb__engine_init(&env->loop, &env->engine, &opts));
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  ASSERT_OK(tb__engine_load_model(&job, &env->engine, "base", rec_cb));
  ASSERT_OK(wait_job(env, &job, &r));
  env->base = job.model;
  ASSERT(env->base != NULL);
  tb__engine_job_cleanup(&job);
}

static inline void env_init(env_t *env, size_t shards) {
  env_init_items(env, shards, 0);
}

static inline void env_close(env_t *env) {
  ASSERT_OK(tb__engine_close(&env->engine, closed_cb));
  ASSERT_ERR(tb__engine_close(&env->engine, closed_cb), TB_ECLOSING);
  ASSERT_OK(uv_run(&env->loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(env->closed, 1);
  ASSERT_LOOP_CLOSE(&env->loop);
}

static inline tb__engine_adapter_t *new_adapter(env_t *env, int rank, uint64_t seed) {
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  tb__lora_config_t c = tb_test_all_targets(rank, seed);
  ASSERT_OK(tb__engine_create_adapter(&job, env->base, &c, rec_cb));
  ASSERT_OK(wait_job(env, &job, &r));
  tb__engine_adapter_t *a = job.adapter;
  ASSERT(a != NULL);
  tb__engine_job_cleanup(&job);
  return a;
}

/* Makes B non-zero so that gradients reach every tensor. */
static inline void perturb(tb__engine_adapter_t *a, uint64_t seed) {
  ASSERT(!tb__engine_adapter_busy(a));
  tb__lora_t *l = tb__engine_adapter_lora(a);
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  tb__k_rng_fill_uniform(l->params, &rng, -0.05f, 0.05f, l->num_params);
}

/* Six datums of random byte tokens with cross-entropy weights. */
#define ND 6
#define NMAX 40
typedef struct data_s {
  int32_t tok[ND][NMAX], tgt[ND][NMAX];
  float wts[ND][NMAX], lps[ND][NMAX], adv[ND][NMAX];
  tb__datum_t d[ND];
  tb__batch_t batch;
} data_t;

static inline void make_data(data_t *x, uint64_t seed) {
  uint64_t st = seed;
  for (int i = 0; i < ND; i++) {
    size_t n = 12 + 5 * (size_t)i;
    for (size_t t = 0; t < n; t++) {
      x->tok[i][t] = (int32_t)(tb__k_splitmix64(&st) % TB_TOK_VOCAB);
      x->tgt[i][t] = (int32_t)(tb__k_splitmix64(&st) % TB_TOK_VOCAB);
      x->wts[i][t] = (float)(tb__k_splitmix64(&st) % 3) * 0.5f;
      x->lps[i][t] = -5.0f;
      x->adv[i][t] = 1.0f;
    }
    x->d[i] = (tb__datum_t){ x->tok[i], n, 1, x->tgt[i], x->wts[i], x->lps[i],
                            x->adv[i] };
  }
  x->batch = (tb__batch_t){ x->d, ND, TB_LOSS_CROSS_ENTROPY,
                           { 0.8f, 1.2f, 0.05f } };
}

/* The setup of most job tests: a two-shard engine, an adapter of rank 4
 * (seed 3) and a batch made from data_seed. */
static inline tb__engine_adapter_t *env_with_adapter(env_t *env, data_t *x, uint64_t data_seed) {
  env_init(env, 2);
  make_data(x, data_seed);
  return new_adapter(env, 4, 3);
}

static inline size_t data_outputs(const data_t *x) {
  return tb__batch_num_outputs(&x->batch);
}

static size_t last_shards;

/* One forward or forward_backward, synchronously; logprobs copied out. */
static inline double run_batch(env_t *env, tb__engine_adapter_t *a, const data_t *x,
                        int backward, float *lp) {
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  if (backward)
    ASSERT_OK(tb__engine_forward_backward(&job, a, &x->batch, rec_cb));
  else
    ASSERT_OK(tb__engine_forward(&job, a, &x->batch, rec_cb));
  ASSERT_OK(wait_job(env, &job, &r));
  ASSERT_EQ_INT(job.num_logprobs, data_outputs(x));
  ASSERT_EQ_INT(job.num_metrics, 1);
  ASSERT_STR_EQ(job.metrics[0].key, "loss:sum");
  ASSERT(job.metrics[0].value == job.loss);
  if (lp)
    memcpy(lp, job.logprobs, job.num_logprobs * sizeof(float));
  double loss = job.loss;
  last_shards = job.num_shards;
  tb__engine_job_cleanup(&job);
  return loss;
}

static inline tb__adam_params_t adam(float lr) {
  tb__adam_params_t p;
  tb__adam_params_default(&p);
  p.learning_rate = lr;
  return p;
}

static inline void run_optim(env_t *env, tb__engine_adapter_t *a, float lr) {
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  tb__adam_params_t p = adam(lr);
  ASSERT_OK(tb__engine_optim_step(&job, a, &p, rec_cb));
  ASSERT_OK(wait_job(env, &job, &r));
  ASSERT_EQ_INT(job.num_metrics, 2);
  ASSERT_STR_EQ(job.metrics[0].key, "grad_norm:mean");
  ASSERT(job.metrics[0].value > 0);
  tb__engine_job_cleanup(&job);
}

static inline void remove_adapter(env_t *env, tb__engine_adapter_t *a) {
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  ASSERT_OK(tb__engine_remove_adapter(&job, a, rec_cb));
  ASSERT_OK(wait_job(env, &job, &r));
  tb__engine_job_cleanup(&job);
}

static inline void assert_near_buffers(const float *a, const float *b, size_t n,
                                double rtol) {
  double amax = 0;
  for (size_t i = 0; i < n; i++)
    amax = fmax(amax, fabs(b[i]));
  ASSERT(amax > 0);
  for (size_t i = 0; i < n; i++)
    ASSERT_NEAR(a[i], b[i], rtol * amax, rtol);
}

static inline void assert_user_error(const tb__engine_job_t *job, int code,
                              const char *a, const char *b) {
  ASSERT_ERR(job->error.code, code);
  ASSERT_EQ_INT(job->error.category, TB_CATEGORY_USER);
  ASSERT_STR_CONTAINS(job->error.message, a);
  if (b)
    ASSERT_STR_CONTAINS(job->error.message, b);
}

#endif

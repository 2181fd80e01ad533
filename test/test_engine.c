/*
 * engine/engine.c: jobs on the threadpool completing on the loop, the
 * model registry, adapters training side by side, sharded against
 * unsharded forward_backward, per-adapter FIFO order, user errors that
 * name the datum and key, save/load round trips, the "an error return
 * means no callback" rule, close with jobs in flight, and the acceptance
 * run: `base` learns a small chat dataset and greedy sampling then repeats
 * a trained reply.
 */
#include "tb_test.h"

#include <pthread.h>
#include <unistd.h>

#include "engine/base_model.h"
#include "engine/engine.h"
#include "engine/llama.h"
#include "text/base_chat.h"
#include "kernels/kernels.h"

/* ------------------------------------------------------------ helpers */

static pthread_t loop_thread;
static int completions;

typedef struct rec_s {
  int calls;
  int status;
  int seq;
} rec_t;

static void rec_cb(tb__engine_job_t *job, int status) {
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

static void closed_cb(tb__engine_t *e) {
  env_t *env = e->data;
  ASSERT(pthread_equal(pthread_self(), loop_thread));
  env->closed++;
}

/* Runs the loop until every queued job has completed; returns its status. */
static int wait_job(env_t *env, tb__engine_job_t *job, rec_t *r) {
  ASSERT_OK(uv_run(&env->loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(r->calls, 1);
  (void)job;
  return r->status;
}

/* An engine that keeps at most max_items work items in the threadpool (0:
 * the default). */
static void env_init_items(env_t *env, size_t shards, size_t max_items) {
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

static void env_init(env_t *env, size_t shards) {
  env_init_items(env, shards, 0);
}

static void env_close(env_t *env) {
  ASSERT_OK(tb__engine_close(&env->engine, closed_cb));
  ASSERT_ERR(tb__engine_close(&env->engine, closed_cb), TB_ECLOSING);
  ASSERT_OK(uv_run(&env->loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(env->closed, 1);
  ASSERT_LOOP_CLOSE(&env->loop);
}

static tb__lora_config_t lora_config(int rank, uint64_t seed) {
  tb__lora_config_t c = { 0 };
  c.rank = rank;
  c.seed = seed;
  c.train_attn = c.train_mlp = c.train_unembed = 1;
  return c;
}

static tb__engine_adapter_t *new_adapter(env_t *env, int rank, uint64_t seed) {
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  tb__lora_config_t c = lora_config(rank, seed);
  ASSERT_OK(tb__engine_create_adapter(&job, env->base, &c, rec_cb));
  ASSERT_OK(wait_job(env, &job, &r));
  tb__engine_adapter_t *a = job.adapter;
  ASSERT(a != NULL);
  tb__engine_job_cleanup(&job);
  return a;
}

/* Makes B non-zero so that gradients reach every tensor. */
static void perturb(tb__engine_adapter_t *a, uint64_t seed) {
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

static void make_data(data_t *x, uint64_t seed) {
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
static tb__engine_adapter_t *env_with_adapter(env_t *env, data_t *x, uint64_t data_seed) {
  env_init(env, 2);
  make_data(x, data_seed);
  return new_adapter(env, 4, 3);
}

static size_t data_outputs(const data_t *x) {
  return tb__batch_num_outputs(&x->batch);
}

static size_t last_shards;

/* One forward or forward_backward, synchronously; logprobs copied out. */
static double run_batch(env_t *env, tb__engine_adapter_t *a, const data_t *x,
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

static tb__adam_params_t adam(float lr) {
  tb__adam_params_t p;
  tb__adam_params_default(&p);
  p.learning_rate = lr;
  return p;
}

static void run_optim(env_t *env, tb__engine_adapter_t *a, float lr) {
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

static void remove_adapter(env_t *env, tb__engine_adapter_t *a) {
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  ASSERT_OK(tb__engine_remove_adapter(&job, a, rec_cb));
  ASSERT_OK(wait_job(env, &job, &r));
  tb__engine_job_cleanup(&job);
}

static void assert_near_buffers(const float *a, const float *b, size_t n,
                                double rtol) {
  double amax = 0;
  for (size_t i = 0; i < n; i++)
    amax = fmax(amax, fabs(b[i]));
  ASSERT(amax > 0);
  for (size_t i = 0; i < n; i++)
    ASSERT_NEAR(a[i], b[i], rtol * amax, rtol);
}

/* ------------------------------------------------------------ tests */

TEST(jobs_complete_on_the_loop) {
  env_t env;
  env_init(&env, 2);
  /* "base" again is the same model, shared, with another reference. */
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  ASSERT_OK(tb__engine_load_model(&job, &env.engine, "base", rec_cb));
  ASSERT_EQ_INT(r.calls, 0);  /* never from inside the submission */
  ASSERT_OK(wait_job(&env, &job, &r));
  ASSERT(job.model == env.base);
  ASSERT(tb__engine_model_find(&env.engine, "base") == env.base);
  ASSERT_STR_EQ(tb__engine_model_name(env.base), "base");
  tb__engine_model_unref(job.model);
  tb__engine_job_cleanup(&job);

  tb__engine_adapter_t *a = new_adapter(&env, 4, 1);
  tb__engine_adapter_t *b = new_adapter(&env, 4, 2);
  ASSERT(tb__engine_adapter_model(a) == env.base);
  ASSERT(tb__engine_adapter_model(b) == env.base);
  /* A new adapter leaves the model unchanged (B = 0): both agree. */
  data_t x;
  make_data(&x, 5);
  float lpa[ND * NMAX], lpb[ND * NMAX];
  double la = run_batch(&env, a, &x, 0, lpa);
  double lb = run_batch(&env, b, &x, 0, lpb);
  ASSERT(la > 0);
  ASSERT_NEAR(la, lb, 1e-4, 1e-6);
  for (size_t i = 0; i < data_outputs(&x); i++)
    ASSERT(lpa[i] < 0);
  remove_adapter(&env, a);
  remove_adapter(&env, b);
  tb__engine_model_unref(env.base);
  ASSERT(tb__engine_model_find(&env.engine, "base") == NULL);
  env_close(&env);
}

TEST(concurrent_loads_share_one_model) {
  loop_thread = pthread_self();
  env_t env;
  memset(&env, 0, sizeof(env));
  ASSERT_OK(uv_loop_init(&env.loop));
  env.engine.data = &env;
  ASSERT_OK(tb__engine_init(&env.loop, &env.engine, NULL));
  tb__engine_job_t jobs[5];
  rec_t recs[5];
  memset(jobs, 0, sizeof(jobs));
  memset(recs, 0, sizeof(recs));
  completions = 0;
  for (int i = 0; i < 5; i++) {
    jobs[i].data = &recs[i];
    ASSERT_OK(tb__engine_load_model(&jobs[i], &env.engine,
                                    i < 3 ? "base" : "bad=/nonexistent/m",
                                    rec_cb));
  }
  /* Not loaded yet: not findable, and no adapter can be made on it. */
  ASSERT(tb__engine_model_find(&env.engine, "base") == NULL);
  ASSERT_OK(uv_run(&env.loop, UV_RUN_DEFAULT));
  for (int i = 0; i < 5; i++)
    ASSERT_EQ_INT(recs[i].calls, 1);
  /* Waiters complete after the loader, in arrival order. */
  ASSERT(recs[0].seq < recs[1].seq && recs[1].seq < recs[2].seq);
  ASSERT(recs[3].seq < recs[4].seq);
  tb__engine_model_t *m = jobs[0].model;
  ASSERT(m != NULL && jobs[1].model == m && jobs[2].model == m);
  ASSERT(tb__engine_model_find(&env.engine, "base") == m);
  for (int i = 3; i < 5; i++) {
    ASSERT_ERR(recs[i].status, TB_ENOENT);
    ASSERT(jobs[i].model == NULL);
    ASSERT_STR_CONTAINS(jobs[i].error.message, "/nonexistent/m");
  }
  ASSERT(tb__engine_model_find(&env.engine, "bad") == NULL);
  /* The model lives while any reference does. */
  tb__engine_model_unref(jobs[0].model);
  tb__engine_model_unref(jobs[1].model);
  ASSERT(tb__engine_model_find(&env.engine, "base") == m);
  tb__engine_model_unref(jobs[2].model);
  ASSERT(tb__engine_model_find(&env.engine, "base") == NULL);
  for (int i = 0; i < 5; i++)
    tb__engine_job_cleanup(&jobs[i]);
  /* A model handed over in memory. */
  tb__weights_t w;
  ASSERT_OK(tb__base_model_generate(&w));
  ASSERT_OK(tb__engine_model_add(&env.engine, "mine", &w, &m));
  ASSERT(w.storage == NULL);
  ASSERT(tb__engine_model_find(&env.engine, "mine") == m);
  ASSERT_OK(tb__base_model_generate(&w));
  tb__engine_model_t *m2;
  ASSERT_ERR(tb__engine_model_add(&env.engine, "mine", &w, &m2), TB_EEXIST);
  ASSERT(w.storage == NULL);
  env_close(&env);
}

/* Trains adapter a for `steps` steps (forward_backward + optim_step) and
 * returns the logprobs after. */
typedef struct trainer_s {
  env_t *env;
  tb__engine_adapter_t *a;
  const data_t *x;
  tb__engine_job_t job;
  rec_t rec;
  int steps_left;
  int phase;  /* 0 forward_backward, 1 optim, 2 final forward */
  float lp[ND * NMAX];
  double loss;
} trainer_t;

static void trainer_next(trainer_t *t);

static void trainer_cb(tb__engine_job_t *job, int status) {
  trainer_t *t = job->data;
  ASSERT_OK(status);
  if (t->phase == 2) {
    memcpy(t->lp, job->logprobs, job->num_logprobs * sizeof(float));
    t->loss = job->loss;
    t->phase = 3;
    tb__engine_job_cleanup(job);
    return;
  }
  tb__engine_job_cleanup(job);
  if (t->phase == 0) {
    t->phase = 1;
  } else {
    t->phase = --t->steps_left > 0 ? 0 : 2;
  }
  trainer_next(t);
}

static void trainer_next(trainer_t *t) {
  t->job.data = t;
  if (t->phase == 0) {
    ASSERT_OK(tb__engine_forward_backward(&t->job, t->a, &t->x->batch,
                                          trainer_cb));
  } else if (t->phase == 1) {
    tb__adam_params_t p = adam(1e-2f);
    ASSERT_OK(tb__engine_optim_step(&t->job, t->a, &p, trainer_cb));
  } else {
    ASSERT_OK(tb__engine_forward(&t->job, t->a, &t->x->batch, trainer_cb));
  }
}

static void trainer_start(trainer_t *t, env_t *env, tb__engine_adapter_t *a,
                          const data_t *x, int steps) {
  memset(t, 0, sizeof(*t));
  t->env = env;
  t->a = a;
  t->x = x;
  t->steps_left = steps;
  trainer_next(t);
}

TEST(two_adapters_train_concurrently) {
  env_t env;
  env_init(&env, 2);
  data_t x, y;
  make_data(&x, 11);
  make_data(&y, 12);
  y.batch.loss_fn = TB_LOSS_PPO;
  /* Alone, one after the other. */
  tb__engine_adapter_t *a = new_adapter(&env, 4, 7);
  tb__engine_adapter_t *b = new_adapter(&env, 8, 8);
  static trainer_t ta, tb;
  trainer_start(&ta, &env, a, &x, 3);
  ASSERT_OK(uv_run(&env.loop, UV_RUN_DEFAULT));
  trainer_start(&tb, &env, b, &y, 3);
  ASSERT_OK(uv_run(&env.loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(ta.phase, 3);
  ASSERT_EQ_INT(tb.phase, 3);
  static float alone_a[ND * NMAX], alone_b[ND * NMAX];
  memcpy(alone_a, ta.lp, sizeof(alone_a));
  memcpy(alone_b, tb.lp, sizeof(alone_b));
  double la = ta.loss, lb = tb.loss;
  remove_adapter(&env, a);
  remove_adapter(&env, b);

  /* Together: fresh adapters with the same seeds, both trainers in
   * flight at once on one loop. */
  a = new_adapter(&env, 4, 7);
  b = new_adapter(&env, 8, 8);
  trainer_start(&ta, &env, a, &x, 3);
  trainer_start(&tb, &env, b, &y, 3);
  ASSERT_OK(uv_run(&env.loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(ta.phase, 3);
  ASSERT_EQ_INT(tb.phase, 3);
  /* Same sharding, same arithmetic: the same bits. */
  ASSERT(ta.loss == la);
  ASSERT(tb.loss == lb);
  ASSERT_EQ_INT(memcmp(ta.lp, alone_a, data_outputs(&x) * sizeof(float)), 0);
  ASSERT_EQ_INT(memcmp(tb.lp, alone_b, data_outputs(&y) * sizeof(float)), 0);
  /* And training changed something. */
  ASSERT(tb__engine_adapter_lora(a)->step == 3);
  env_close(&env);
}

TEST(sharded_equals_unsharded) {
  static float lp1[ND * NMAX], lp3[ND * NMAX];
  float *g1 = NULL, *p1 = NULL;
  size_t np = 0;
  double l1 = 0, norm1 = 0;
  for (int pass = 0; pass < 2; pass++) {
    env_t env;
    env_init(&env, pass == 0 ? 1 : 3);
    /* Rank 24 gives over 3 * 64K parameters: the three-thread engine
     * then sums the shards and steps the optimizer in three pieces. */
    tb__engine_adapter_t *a = new_adapter(&env, 24, 3);
    perturb(a, 4);
    data_t x;
    make_data(&x, 9);
    x.batch.loss_fn = TB_LOSS_DRO;
    /* Two calls accumulate. */
    double l = run_batch(&env, a, &x, 1, pass == 0 ? lp1 : lp3);
    ASSERT_EQ_INT(last_shards, pass == 0 ? 1 : 3);
    l += run_batch(&env, a, &x, 1, NULL);
    tb__lora_t *lora = tb__engine_adapter_lora(a);
    if (pass == 0) {
      np = lora->num_params;
      g1 = xmalloc(np * sizeof(float));
      memcpy(g1, lora->grads, np * sizeof(float));
      l1 = l;
    } else {
      ASSERT_EQ_INT(lora->num_params, np);
      assert_near_buffers(lora->grads, g1, np, 1e-4);
      ASSERT_NEAR(l, l1, 1e-5 * fabs(l1), 1e-5);
      for (size_t i = 0; i < data_outputs(&x); i++)
        ASSERT_NEAR(lp3[i], lp1[i], 1e-5, 1e-5);
    }
    /* One optimizer step, clipping to a tenth of the norm: the pieces
     * share one global norm. */
    tb__engine_job_t job = { 0 };
    rec_t r = { 0 };
    job.data = &r;
    tb__adam_params_t p = adam(1e-2f);
    p.grad_clip_norm = (float)(sqrt(tb__k_grad_sumsq(lora->grads, np)) / 10);
    ASSERT_OK(tb__engine_optim_step(&job, a, &p, rec_cb));
    ASSERT_OK(wait_job(&env, &job, &r));
    ASSERT(np >= 3 * 65536);  /* three pieces (engine.c, param_pieces) */
    ASSERT_EQ_INT(lora->step, 1);
    ASSERT_EQ_INT(tb__k_grad_sumsq(lora->grads, np), 0);  /* zeroed */
    if (pass == 0) {
      p1 = xmalloc(np * sizeof(float));
      memcpy(p1, lora->params, np * sizeof(float));
      norm1 = job.optim.grad_norm;
    } else {
      ASSERT_NEAR(job.optim.grad_norm, norm1, 1e-4 * norm1, 0);
      assert_near_buffers(lora->params, p1, np, 1e-4);
    }
    tb__engine_job_cleanup(&job);
    env_close(&env);
  }
  free(g1);
  free(p1);
}

TEST(fifo_order_per_adapter) {
  env_t env;
  data_t x;
  tb__engine_adapter_t *a = env_with_adapter(&env, &x, 21);
  tb__engine_job_t jobs[6];
  rec_t recs[6];
  memset(jobs, 0, sizeof(jobs));
  memset(recs, 0, sizeof(recs));
  for (int i = 0; i < 6; i++)
    jobs[i].data = &recs[i];
  tb__adam_params_t p = adam(1e-2f);
  char dir[] = "/tmp/tb_engine_fifo_XXXXXX";
  ASSERT(mkdtemp(dir) != NULL);
  char path[128];
  snprintf(path, sizeof(path), "%s/ckpt", dir);
  completions = 0;
  ASSERT_OK(tb__engine_forward(&jobs[0], a, &x.batch, rec_cb));
  ASSERT_OK(tb__engine_forward_backward(&jobs[1], a, &x.batch, rec_cb));
  ASSERT_OK(tb__engine_optim_step(&jobs[2], a, &p, rec_cb));
  ASSERT_OK(tb__engine_forward(&jobs[3], a, &x.batch, rec_cb));
  ASSERT_OK(tb__engine_save(&jobs[4], a, path, TB_ENGINE_SAVE_STATE, rec_cb));
  ASSERT_OK(tb__engine_remove_adapter(&jobs[5], a, rec_cb));
  ASSERT(tb__engine_adapter_busy(a));
  ASSERT_OK(uv_run(&env.loop, UV_RUN_DEFAULT));
  for (int i = 0; i < 6; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    ASSERT_OK(recs[i].status);
    ASSERT_EQ_INT(recs[i].seq, i + 1);
  }
  /* The forward after the step sees the stepped adapter. */
  ASSERT(jobs[0].loss == jobs[1].loss);
  ASSERT(jobs[3].loss < jobs[0].loss);
  for (int i = 0; i < 6; i++)
    tb__engine_job_cleanup(&jobs[i]);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ASSERT_EQ_INT(system(cmd), 0);
  env_close(&env);
}

static void assert_user_error(const tb__engine_job_t *job, int code,
                              const char *a, const char *b) {
  ASSERT_ERR(job->error.code, code);
  ASSERT_EQ_INT(job->error.category, TB_CATEGORY_USER);
  ASSERT_STR_CONTAINS(job->error.message, a);
  if (b)
    ASSERT_STR_CONTAINS(job->error.message, b);
}

TEST(user_errors_name_the_datum_and_key) {
  env_t env;
  env_init(&env, 3);
  tb__engine_adapter_t *a = new_adapter(&env, 4, 3);
  tb__lora_t *lora = tb__engine_adapter_lora(a);
  data_t x;
  make_data(&x, 31);
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;

  /* A target token outside the vocabulary in datum 4: the other shards
   * ran, yet no gradient was applied. */
  x.tgt[4][3] = TB_TOK_VOCAB + 5;
  ASSERT_OK(tb__engine_forward_backward(&job, a, &x.batch, rec_cb));
  ASSERT_ERR(wait_job(&env, &job, &r), TB_EINVAL);
  assert_user_error(&job, TB_EINVAL, "data[4].loss_fn_inputs.target_tokens[3]",
                    "277");
  for (size_t i = 0; i < lora->num_params; i++)
    ASSERT(lora->grads[i] == 0.0f);
  tb__engine_job_cleanup(&job);
  x.tgt[4][3] = 1;

  /* A model_input token, negative. */
  memset(&r, 0, sizeof(r));
  x.tok[0][0] = -1;
  ASSERT_OK(tb__engine_forward(&job, a, &x.batch, rec_cb));
  ASSERT_ERR(wait_job(&env, &job, &r), TB_EINVAL);
  assert_user_error(&job, TB_EINVAL, "data[0].model_input[0]", "vocabulary");
  tb__engine_job_cleanup(&job);
  x.tok[0][0] = 1;

  /* A sequence longer than the context (2048 for base). */
  static int32_t longtok[2100], longtgt[2100];
  static float longw[2100];
  for (int i = 0; i < 2100; i++)
    longw[i] = 1.0f;
  x.d[1] = (tb__datum_t){ longtok, 2100, 1, longtgt, longw, NULL, NULL };
  memset(&r, 0, sizeof(r));
  ASSERT_OK(tb__engine_forward_backward(&job, a, &x.batch, rec_cb));
  ASSERT_ERR(wait_job(&env, &job, &r), TB_EINVAL);
  assert_user_error(&job, TB_EINVAL, "data[1].model_input", "context of 2048");
  tb__engine_job_cleanup(&job);
  make_data(&x, 31);

  /* A loss input the loss needs is missing. */
  x.batch.loss_fn = TB_LOSS_IMPORTANCE_SAMPLING;
  x.d[2].advantages = NULL;
  memset(&r, 0, sizeof(r));
  ASSERT_OK(tb__engine_forward(&job, a, &x.batch, rec_cb));
  ASSERT_ERR(wait_job(&env, &job, &r), TB_EINVAL);
  assert_user_error(&job, TB_EINVAL, "data[2].loss_fn_inputs.advantages",
                    "importance_sampling");
  tb__engine_job_cleanup(&job);

  /* Unknown model: at once, no callback. */
  memset(&r, 0, sizeof(r));
  ASSERT_ERR(tb__engine_load_model(&job, &env.engine, "nosuch", rec_cb),
             TB_ENOTFOUND);
  assert_user_error(&job, TB_ENOTFOUND, "nosuch", NULL);
  tb__engine_job_cleanup(&job);
  /* A directory that does not exist: read on the threadpool, so the
   * error comes through the callback. */
  ASSERT_OK(tb__engine_load_model(&job, &env.engine,
                                  "gone=/nonexistent/tb-model", rec_cb));
  ASSERT_ERR(wait_job(&env, &job, &r), TB_ENOENT);
  ASSERT_STR_CONTAINS(job.error.message, "/nonexistent/tb-model");
  ASSERT(tb__engine_model_find(&env.engine, "gone") == NULL);
  tb__engine_job_cleanup(&job);

  /* A prompt token outside the vocabulary; a prompt beyond the context. */
  int32_t prompt[3] = { 1, 999, 2 };
  tb__sampling_params_t sp;
  tb__sampling_params_default(&sp);
  memset(&r, 0, sizeof(r));
  ASSERT_OK(tb__engine_sample(&job, NULL, a, prompt, 3, &sp, rec_cb));
  ASSERT_ERR(wait_job(&env, &job, &r), TB_EINVAL);
  assert_user_error(&job, TB_EINVAL, "prompt[1]", "999");
  tb__engine_job_cleanup(&job);
  prompt[1] = 5;
  sp.max_tokens = 5000;
  memset(&r, 0, sizeof(r));
  ASSERT_OK(tb__engine_sample(&job, env.base, NULL, prompt, 3, &sp, rec_cb));
  ASSERT_ERR(wait_job(&env, &job, &r), TB_EINVAL);
  assert_user_error(&job, TB_EINVAL, "max_tokens", "context");
  tb__engine_job_cleanup(&job);

  /* Loading a checkpoint that is not there. */
  memset(&r, 0, sizeof(r));
  ASSERT_OK(tb__engine_load(&job, a, "/nonexistent/ckpt", 0, rec_cb));
  ASSERT_NE_INT(wait_job(&env, &job, &r), 0);
  ASSERT_STR_CONTAINS(job.error.message, "/nonexistent/ckpt");
  tb__engine_job_cleanup(&job);
  env_close(&env);
}

static void forward_lp(env_t *env, tb__engine_adapter_t *a, const data_t *x,
                       float *lp) {
  run_batch(env, a, x, 0, lp);
}

TEST(save_load_round_trip) {
  env_t env;
  data_t x;
  tb__engine_adapter_t *a = env_with_adapter(&env, &x, 41);
  for (int s = 0; s < 2; s++) {
    run_batch(&env, a, &x, 1, NULL);
    run_optim(&env, a, 1e-2f);
  }
  char dir[] = "/tmp/tb_engine_ckpt_XXXXXX";
  ASSERT(mkdtemp(dir) != NULL);
  char state[128], full[128], sampler[128];
  snprintf(state, sizeof(state), "%s/state", dir);
  snprintf(full, sizeof(full), "%s/full", dir);
  snprintf(sampler, sizeof(sampler), "%s/sampler", dir);
  const char *paths[3] = { state, full, sampler };
  tb__engine_save_kind_t kinds[3] = { TB_ENGINE_SAVE_STATE,
                                     TB_ENGINE_SAVE_STATE_OPTIMIZER,
                                     TB_ENGINE_SAVE_SAMPLER };
  for (int k = 0; k < 3; k++) {
    tb__engine_job_t job = { 0 };
    rec_t r = { 0 };
    job.data = &r;
    ASSERT_OK(tb__engine_save(&job, a, paths[k], kinds[k], rec_cb));
    ASSERT_OK(wait_job(&env, &job, &r));
    tb__engine_job_cleanup(&job);
  }
  static float want[ND * NMAX], got[ND * NMAX], saved[ND * NMAX];
  forward_lp(&env, a, &x, want);
  memcpy(saved, want, sizeof(saved));

  /* Each of the three loads into a fresh adapter (another seed) gives
   * the same log-probs, bit for bit. */
  for (int k = 0; k < 3; k++) {
    tb__engine_adapter_t *b = new_adapter(&env, 4, 99);
    tb__engine_job_t job = { 0 };
    rec_t r = { 0 };
    job.data = &r;
    ASSERT_OK(tb__engine_load(&job, b, paths[k], k == 1, rec_cb));
    ASSERT_OK(wait_job(&env, &job, &r));
    tb__engine_job_cleanup(&job);
    forward_lp(&env, b, &x, got);
    ASSERT_EQ_INT(memcmp(got, saved, data_outputs(&x) * sizeof(float)), 0);
    tb__lora_t *lb = tb__engine_adapter_lora(b), *la = tb__engine_adapter_lora(a);
    if (k == 1) {
      /* With the optimizer state, the next step is the same step. */
      ASSERT_EQ_INT(lb->step, 2);
      run_batch(&env, a, &x, 1, NULL);
      run_optim(&env, a, 1e-2f);
      run_batch(&env, b, &x, 1, NULL);
      run_optim(&env, b, 1e-2f);
      ASSERT_EQ_INT(memcmp(la->params, lb->params,
                           la->num_params * sizeof(float)), 0);
      forward_lp(&env, a, &x, want);
      forward_lp(&env, b, &x, got);
      ASSERT_EQ_INT(memcmp(got, want, data_outputs(&x) * sizeof(float)), 0);
    } else {
      ASSERT_EQ_INT(lb->step, 0);
    }
    remove_adapter(&env, b);
  }

  /* The optimizer state is required when asked for, and a rank that
   * does not match is refused; the adapter is unchanged either way. */
  tb__engine_adapter_t *c = new_adapter(&env, 4, 5);
  tb__engine_adapter_t *d = new_adapter(&env, 8, 5);
  static float before[ND * NMAX];
  forward_lp(&env, c, &x, before);
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  ASSERT_OK(tb__engine_load(&job, c, state, 1, rec_cb));
  ASSERT_ERR(wait_job(&env, &job, &r), TB_ENOENT);
  ASSERT_STR_CONTAINS(job.error.message, "optimizer");
  tb__engine_job_cleanup(&job);
  forward_lp(&env, c, &x, got);
  ASSERT_EQ_INT(memcmp(got, before, data_outputs(&x) * sizeof(float)), 0);
  memset(&r, 0, sizeof(r));
  ASSERT_OK(tb__engine_load(&job, d, state, 0, rec_cb));
  ASSERT_ERR(wait_job(&env, &job, &r), TB_EINVAL);
  ASSERT_STR_CONTAINS(job.error.message, "rank");
  tb__engine_job_cleanup(&job);

  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ASSERT_EQ_INT(system(cmd), 0);
  env_close(&env);
}

TEST(error_return_means_no_callback) {
  env_t env;
  data_t x;
  tb__engine_adapter_t *a = env_with_adapter(&env, &x, 51);
  tb__engine_job_t job = { 0 };
  rec_t r = { 0 };
  job.data = &r;
  tb__adam_params_t bad = adam(-1.0f);
  ASSERT_ERR(tb__engine_optim_step(&job, a, &bad, rec_cb), TB_EINVAL);
  ASSERT_STR_CONTAINS(job.error.message, "learning_rate");
  tb__engine_job_cleanup(&job);
  ASSERT_ERR(tb__engine_forward(&job, a, NULL, rec_cb), TB_EINVAL);
  tb__engine_job_cleanup(&job);
  x.batch.loss_fn = (tb__loss_fn_t)17;
  ASSERT_ERR(tb__engine_forward_backward(&job, a, &x.batch, rec_cb),
             TB_EINVAL);
  tb__engine_job_cleanup(&job);
  x.batch.loss_fn = TB_LOSS_PPO;
  x.batch.loss_config.clip_low_threshold = 2.0f;
  ASSERT_ERR(tb__engine_forward(&job, a, &x.batch, rec_cb), TB_EINVAL);
  assert_user_error(&job, TB_EINVAL, "loss_fn_config", NULL);
  tb__engine_job_cleanup(&job);
  tb__lora_config_t lc = lora_config(0, 1);
  ASSERT_ERR(tb__engine_create_adapter(&job, env.base, &lc, rec_cb),
             TB_EINVAL);
  assert_user_error(&job, TB_EINVAL, "lora_config", "rank");
  tb__engine_job_cleanup(&job);
  ASSERT_ERR(tb__engine_save(&job, a, "", TB_ENGINE_SAVE_STATE, rec_cb),
             TB_EINVAL);
  tb__engine_job_cleanup(&job);

  /* After a removal is queued, the adapter takes no more jobs. */
  tb__engine_job_t rm = { 0 };
  rec_t rr = { 0 };
  rm.data = &rr;
  ASSERT_OK(tb__engine_remove_adapter(&rm, a, rec_cb));
  ASSERT_ERR(tb__engine_optim_step(&job, a, &bad, rec_cb), TB_EINVAL);
  tb__engine_job_cleanup(&job);
  tb__adam_params_t good = adam(1e-3f);
  ASSERT_ERR(tb__engine_optim_step(&job, a, &good, rec_cb), TB_ECLOSING);
  tb__engine_job_cleanup(&job);
  ASSERT_OK(wait_job(&env, &rm, &rr));
  tb__engine_job_cleanup(&rm);

  /* A closing engine takes no jobs. */
  ASSERT_OK(tb__engine_close(&env.engine, closed_cb));
  ASSERT_ERR(tb__engine_load_model(&job, &env.engine, "base", rec_cb),
             TB_ECLOSING);
  tb__engine_job_cleanup(&job);
  ASSERT_OK(uv_run(&env.loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(r.calls, 0);
  ASSERT_EQ_INT(env.closed, 1);
  ASSERT_LOOP_CLOSE(&env.loop);
}

TEST(close_with_jobs_in_flight) {
  env_t env;
  env_init(&env, 2);
  data_t x;
  make_data(&x, 61);
  enum { NA = 3, PER = 4 };
  tb__engine_adapter_t *ad[NA];
  for (int i = 0; i < NA; i++)
    ad[i] = new_adapter(&env, 4, (uint64_t)i);
  static tb__engine_job_t jobs[NA * PER + 2];
  static rec_t recs[NA * PER + 2];
  memset(jobs, 0, sizeof(jobs));
  memset(recs, 0, sizeof(recs));
  int n = 0;
  tb__adam_params_t p = adam(1e-3f);
  for (int k = 0; k < PER; k++)
    for (int i = 0; i < NA; i++) {
      jobs[n].data = &recs[n];
      if (k % 2 == 0)
        ASSERT_OK(tb__engine_forward_backward(&jobs[n], ad[i], &x.batch,
                                              rec_cb));
      else
        ASSERT_OK(tb__engine_optim_step(&jobs[n], ad[i], &p, rec_cb));
      n++;
    }
  /* A model load in flight too, and a sample from the bare model. */
  jobs[n].data = &recs[n];
  ASSERT_OK(tb__engine_load_model(&jobs[n++], &env.engine, "base", rec_cb));
  int32_t prompt[2] = { TB_TOK_BOS, 'a' };
  tb__sampling_params_t sp;
  tb__sampling_params_default(&sp);
  jobs[n].data = &recs[n];
  ASSERT_OK(tb__engine_sample(&jobs[n++], env.base, NULL, prompt, 2, &sp,
                              rec_cb));
  ASSERT_OK(tb__engine_close(&env.engine, closed_cb));
  ASSERT_EQ_INT(env.closed, 0);
  ASSERT_OK(uv_run(&env.loop, UV_RUN_DEFAULT));
  int cancelled = 0;
  for (int i = 0; i < n; i++) {
    ASSERT_EQ_INT(recs[i].calls, 1);
    if (recs[i].status == TB_ECANCELED) {
      cancelled++;
      ASSERT_EQ_INT(jobs[i].error.category, TB_CATEGORY_CANCELLED);
    } else {
      ASSERT_OK(recs[i].status);
    }
    tb__engine_job_cleanup(&jobs[i]);
  }
  /* Queued behind the running heads, most never ran. */
  ASSERT_GE(cancelled, NA * (PER - 1));
  ASSERT_EQ_INT(env.closed, 1);
  ASSERT_LOOP_CLOSE(&env.loop);
}

/* ------------------------------------------------------------ acceptance */

static const char *const chat[][2] = {
  { "What is the capital of France?", "Paris." },
  { "Say hello.", "Hello there!" },
  { "What color is the sky?", "Blue, mostly." },
  { "Count to three.", "One, two, three." },
};
#define NCHAT (sizeof(chat) / sizeof(chat[0]))

TEST(base_learns_a_chat_dataset) {
  env_t env;
  env_init(&env, 2);
  tb__engine_adapter_t *a = new_adapter(&env, 16, 1);
  /* Render each conversation; position i predicts token i+1 and counts
   * when that token is trainable (assistant content and its <|end|>). */
  tb__tokens_t toks[NCHAT];
  static int32_t tgt[NCHAT][128];
  static float w[NCHAT][128];
  tb__datum_t d[NCHAT];
  for (size_t c = 0; c < NCHAT; c++) {
    tb__chat_msg_t m[2] = {
      { TB_SLICE_LIT("user"), { chat[c][0], strlen(chat[c][0]) } },
      { TB_SLICE_LIT("assistant"), { chat[c][1], strlen(chat[c][1]) } },
    };
    tb_error_t err = { 0 };
    toks[c] = (tb__tokens_t)TB_TOKENS_INIT;
    ASSERT_OK(tb__chat_render(m, 2, &toks[c], &err));
    size_t n = toks[c].len - 1;
    ASSERT(n < 128);
    for (size_t i = 0; i < n; i++) {
      tgt[c][i] = toks[c].ids[i + 1];
      w[c][i] = toks[c].trainable[i + 1] ? 1.0f : 0.0f;
    }
    d[c] = (tb__datum_t){ toks[c].ids, n, 1, tgt[c], w[c], NULL, NULL };
  }
  tb__batch_t batch = { d, NCHAT, TB_LOSS_CROSS_ENTROPY, { 0.8f, 1.2f, 0.05f } };
  double first = 0, last = 0;
  int steps = 0;
  for (; steps < 150; steps++) {
    tb__engine_job_t job = { 0 };
    rec_t r = { 0 };
    job.data = &r;
    ASSERT_OK(tb__engine_forward_backward(&job, a, &batch, rec_cb));
    ASSERT_OK(wait_job(&env, &job, &r));
    last = job.loss;
    if (getenv("TB_TEST_VERBOSE"))
      fprintf(stderr, "step %d loss %.4f\n", steps, last);
    if (steps == 0)
      first = last;
    tb__engine_job_cleanup(&job);
    if (last < first / 50)
      break;
    run_optim(&env, a, 3e-3f);
  }
  fprintf(stderr, "chat loss %.4f -> %.4f in %d steps\n", first, last, steps);
  ASSERT(last < first / 50);

  /* Greedy sampling from the prompt reproduces the trained reply. */
  for (size_t c = 0; c < NCHAT; c++) {
    tb__chat_msg_t m = { TB_SLICE_LIT("user"), { chat[c][0], strlen(chat[c][0]) } };
    tb__tokens_t prompt = TB_TOKENS_INIT;
    tb_error_t err = { 0 };
    ASSERT_OK(tb__chat_render_prompt(&m, 1, &prompt, &err));
    int32_t stop = TB_TOK_END;
    tb__sampling_params_t sp;
    tb__sampling_params_default(&sp);
    sp.temperature = 0;
    sp.max_tokens = 40;
    sp.stop_tokens = &stop;
    sp.num_stop_tokens = 1;
    tb__engine_job_t job = { 0 };
    rec_t r = { 0 };
    job.data = &r;
    ASSERT_OK(tb__engine_sample(&job, NULL, a, prompt.ids, prompt.len, &sp,
                                rec_cb));
    ASSERT_OK(wait_job(&env, &job, &r));
    ASSERT_EQ_INT(job.sample.num_seqs, 1);
    tb__sample_seq_t *s = &job.sample.seqs[0];
    ASSERT_EQ_INT(s->stop_reason, TB_STOP_STOP);
    ASSERT(s->len >= 1 && s->tokens[s->len - 1] == TB_TOK_END);
    tb__buf_t text = { 0 };
    ASSERT_OK(tb__tok_decode(s->tokens, s->len - 1, 0, &text));
    ASSERT_MEM_EQ_STR(text.base, text.len, chat[c][1]);
    tb__buf_free(&text);
    tb__engine_job_cleanup(&job);
    tb__tokens_free(&prompt);
  }
  for (size_t c = 0; c < NCHAT; c++)
    tb__tokens_free(&toks[c]);
  env_close(&env);
}

/* A job whose work finds every work item taken by another job's is told
 * so (on_capacity 1, during its submission), and again when it starts. */
static int capacity_events[8];
static int n_capacity_events;

static void on_capacity(tb__engine_job_t *job, int waiting) {
  capacity_events[n_capacity_events++] = waiting;
  ASSERT(job->data != NULL);
}

TEST(jobs_waiting_for_room_are_reported) {
  env_t env;
  env_init_items(&env, 1, 1);
  data_t x, y;
  make_data(&x, 21);
  make_data(&y, 22);
  tb__engine_adapter_t *a = new_adapter(&env, 4, 1);
  tb__engine_adapter_t *b = new_adapter(&env, 4, 2);
  tb__engine_job_t ja = { 0 }, jb = { 0 };
  rec_t ra = { 0 }, rb = { 0 };
  ja.data = &ra;
  jb.data = &rb;
  ja.on_capacity = on_capacity;
  jb.on_capacity = on_capacity;
  n_capacity_events = 0;
  ASSERT_OK(tb__engine_forward_backward(&ja, a, &x.batch, rec_cb));
  ASSERT_EQ_INT(n_capacity_events, 0);  /* room for the first */
  ASSERT_OK(tb__engine_forward_backward(&jb, b, &y.batch, rec_cb));
  ASSERT_EQ_INT(n_capacity_events, 1);  /* the second waits, at once */
  ASSERT_EQ_INT(capacity_events[0], 1);
  ASSERT_OK(wait_job(&env, &ja, &ra));
  ASSERT_OK(wait_job(&env, &jb, &rb));
  ASSERT_EQ_INT(n_capacity_events, 2);  /* and was told when it started */
  ASSERT_EQ_INT(capacity_events[1], 0);
  tb__engine_job_cleanup(&ja);
  tb__engine_job_cleanup(&jb);
  env_close(&env);
}

/* Long sequences cross the unembedding's row blocks (TB__LLAMA_LOGIT_ROWS):
 * a 600-token sequence trained only on its first 300 targets gives the
 * log-probs and the gradient of its 300-token prefix, computed with other
 * block boundaries (causal attention: later tokens change nothing before
 * them, and carry no loss). */
TEST(long_sequences_cross_logit_blocks) {
  env_t env;
  env_init(&env, 1);
  enum { LONG = 600, PREFIX = 300 };
  ASSERT(LONG > 2 * TB__LLAMA_LOGIT_ROWS && PREFIX > TB__LLAMA_LOGIT_ROWS);
  static int32_t tok[LONG], tgt[LONG];
  static float w_long[LONG], w_prefix[PREFIX];
  uint64_t st = 99;
  for (int i = 0; i < LONG; i++) {
    tok[i] = (int32_t)(tb__k_splitmix64(&st) % 256);
    tgt[i] = (int32_t)(tb__k_splitmix64(&st) % 256);
    w_long[i] = i < PREFIX ? 1.0f : 0.0f;
  }
  for (int i = 0; i < PREFIX; i++)
    w_prefix[i] = 1.0f;
  tb__datum_t dl = { tok, LONG, 1, tgt, w_long, NULL, NULL };
  tb__datum_t dp = { tok, PREFIX, 1, tgt, w_prefix, NULL, NULL };
  tb__batch_t bl = { &dl, 1, TB_LOSS_CROSS_ENTROPY, { 0.8f, 1.2f, 0.05f } };
  tb__batch_t bp = { &dp, 1, TB_LOSS_CROSS_ENTROPY, { 0.8f, 1.2f, 0.05f } };
  tb__engine_adapter_t *a = new_adapter(&env, 8, 5);
  tb__engine_adapter_t *b = new_adapter(&env, 8, 5);
  perturb(a, 6);
  perturb(b, 6);
  tb__engine_job_t ja = { 0 }, jb = { 0 };
  rec_t ra = { 0 }, rb = { 0 };
  ja.data = &ra;
  jb.data = &rb;
  ASSERT_OK(tb__engine_forward_backward(&ja, a, &bl, rec_cb));
  ASSERT_OK(wait_job(&env, &ja, &ra));
  ASSERT_OK(tb__engine_forward_backward(&jb, b, &bp, rec_cb));
  ASSERT_OK(wait_job(&env, &jb, &rb));
  ASSERT_EQ_INT(ja.num_logprobs, LONG);
  ASSERT_EQ_INT(jb.num_logprobs, PREFIX);
  for (int i = 0; i < PREFIX; i++)
    ASSERT_NEAR(ja.logprobs[i], jb.logprobs[i], 1e-4, 1e-5);
  ASSERT_NEAR(ja.loss, jb.loss, 1e-3, 1e-5);
  const tb__lora_t *la = tb__engine_adapter_lora(a), *lb = tb__engine_adapter_lora(b);
  ASSERT_EQ_INT(la->num_params, lb->num_params);
  double norm = 0;
  for (size_t i = 0; i < la->num_params; i++) {
    ASSERT_NEAR(la->grads[i], lb->grads[i], 1e-4, 1e-3);
    norm += (double)la->grads[i] * la->grads[i];
  }
  ASSERT(norm > 0);  /* a gradient that could fail the comparison */
  tb__engine_job_cleanup(&ja);
  tb__engine_job_cleanup(&jb);
  env_close(&env);
}

TEST_LIST(
  TEST_ENTRY(jobs_complete_on_the_loop),
  TEST_ENTRY(concurrent_loads_share_one_model),
  TEST_ENTRY(two_adapters_train_concurrently),
  TEST_ENTRY(jobs_waiting_for_room_are_reported),
  TEST_ENTRY(long_sequences_cross_logit_blocks),
  TEST_ENTRY(sharded_equals_unsharded),
  TEST_ENTRY(fifo_order_per_adapter),
  TEST_ENTRY(user_errors_name_the_datum_and_key),
  TEST_ENTRY(save_load_round_trip),
  TEST_ENTRY(error_return_means_no_callback),
  TEST_ENTRY(close_with_jobs_in_flight),
  TEST_ENTRY_TIMEOUT(base_learns_a_chat_dataset, 120000),
)

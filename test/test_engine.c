/*
 * engine/engine.c and engine_models.c, the jobs and their scheduling:
 * jobs completing on the loop, the model registry (loads that share one
 * model, models handed over in memory), adapters training side by side
 * with the same bits as alone, per-adapter FIFO order, jobs waiting for
 * room in the threadpool, the "an error return means no callback" rule
 * and close with jobs in flight.  What training computes is
 * test_engine_train.c; the shared setup is test_engine.h.
 */
#include "test_engine.h"

#include <unistd.h>

#include "engine/base_model.h"

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
  tb__lora_config_t lc = tb_test_all_targets(0, 1);
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

TEST_LIST(
  TEST_ENTRY(jobs_complete_on_the_loop),
  TEST_ENTRY(concurrent_loads_share_one_model),
  TEST_ENTRY(two_adapters_train_concurrently),
  TEST_ENTRY(jobs_waiting_for_room_are_reported),
  TEST_ENTRY(fifo_order_per_adapter),
  TEST_ENTRY(error_return_means_no_callback),
  TEST_ENTRY(close_with_jobs_in_flight),
)

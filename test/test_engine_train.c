/*
 * What the engine's training jobs compute: sharded against unsharded
 * forward_backward and optimizer steps, long sequences across the logit
 * blocks, user errors that name the datum and key, save/load round trips,
 * and the acceptance run: `base` learns a small chat dataset and greedy
 * sampling then repeats a trained reply.  The jobs' scheduling is
 * test_engine.c; the shared setup is test_engine.h.
 */
#include "test_engine.h"

#include "engine/llama.h"

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
  TEST_ENTRY(long_sequences_cross_logit_blocks),
  TEST_ENTRY(sharded_equals_unsharded),
  TEST_ENTRY(user_errors_name_the_datum_and_key),
  TEST_ENTRY(save_load_round_trip),
  TEST_ENTRY_TIMEOUT(base_learns_a_chat_dataset, 120000),
)

/*
 * The engine's LoRA math against an independent PyTorch float64
 * implementation (test/reference/torch_lora_reference.py): for each of the
 * five losses and each family (Llama with Llama 3's rope scaling, Qwen2's
 * q/k/v biases, Qwen3's q/k norms with an explicit head_dim), the summed
 * loss, every datum's target log-probs and the gradient of every LoRA
 * tensor must agree.  The family models are tiny but have their family's
 * real vocabulary (151936 for Qwen, 128256 for Llama 3) and tied
 * embeddings; one is stored sharded in bf16.
 *
 * The model is written as a Hugging Face directory and loaded by the
 * engine by name ("NAME=DIR"), the adapter (all targets, unembedding
 * included, with B made non-zero) is exported as PEFT by a save job, and
 * the batch goes to PyTorch as batch.json.  Tolerances: relative error
 * 1e-4 on losses and log-probs, norm-relative error 1e-3 per gradient
 * tensor (float32 against float64).
 *
 * PyTorch comes from Debian's python3-torch for /usr/bin/python3 (or the
 * interpreter in TB_TORCH_PYTHON).  Without it every test skips, saying
 * why, and the program exits 77, which meson reports as a skip.
 */
#include "tb_test.h"
#include "fixtures.h"

#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/base_model.h"
#include "engine/engine.h"
#include "engine/hf_model.h"
#include "kernels/kernels.h"

/* Set by main before the tests run (and inherited by their processes). */
static int torch_missing;

static const char *python(void) {
  const char *p = getenv("TB_TORCH_PYTHON");
  if (p != NULL && p[0] != '\0')
    return p;
  if (access("/usr/bin/python3", X_OK) == 0)
    return "/usr/bin/python3";
  return "python3";
}

/* The script sits in the source tree at test/reference/.  __FILE__ is
 * either absolute or relative to the build directory, which is the parent
 * of this executable's directory. */
static void script_path(char *out, size_t cap) {
  const char *env = getenv("TB_TORCH_REFERENCE");
  if (env != NULL && env[0] != '\0') {
    snprintf(out, cap, "%s", env);
    return;
  }
  char src[PATH_MAX];
  snprintf(src, sizeof(src), "%s", __FILE__);
  const char *srcdir = dirname(src);
  if (srcdir[0] == '/') {
    snprintf(out, cap, "%s/reference/torch_lora_reference.py", srcdir);
    return;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  ASSERT(n > 0);
  exe[n] = '\0';
  char *exedir = dirname(exe);
  snprintf(out, cap, "%s/../%s/reference/torch_lora_reference.py", exedir,
           srcdir);
}

/* ------------------------------------------------------------ the engine */

static pthread_t loop_thread;

typedef struct env_s {
  uv_loop_t loop;
  tb__engine_t engine;
  int done;
} env_t;

static void job_cb(tb__engine_job_t *job, int status) {
  ASSERT(pthread_equal(pthread_self(), loop_thread));
  if (status != 0)
    fprintf(stderr, "job failed: %s\n", tb_error_message(&job->error));
  ASSERT_OK(status);
  ((env_t *)job->data)->done++;
}

static void run(env_t *env) {
  int before = env->done;
  ASSERT_OK(uv_run(&env->loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(env->done, before + 1);
}

static void closed_cb(tb__engine_t *e) { ((env_t *)e->data)->done = -1; }

/* ------------------------------------------------------------ models */

/* How a test's model is made: `base` itself, or a config with random
 * weights, stored as dtype, sharded when shard_bytes > 0. */
typedef struct model_s {
  int base;
  tb__model_config_t config;
  tb__st_dtype_t dtype;
  size_t shard_bytes;
} model_t;

/* A small untied Llama. */
static model_t untied(void) {
  model_t m = { 0 };
  m.config = tb_test_config(64, 96, 2, 4, 2, 16, 300, 128, 1e-5f, 10000.0f);
  return m;
}

/* The families at a tiny width with their real vocabularies, tied. */
static model_t family(tb__model_arch_t arch) {
  model_t m = untied();
  tb__model_config_t *c = &m.config;
  c->arch = arch;
  c->hidden_size = 32;
  c->intermediate_size = 48;
  c->tie_word_embeddings = 1;
  c->head_dim = 8;
  c->vocab_size = 151936;
  c->rms_norm_eps = 1e-6f;
  if (arch == TB_ARCH_LLAMA) {
    /* Llama 3's rope_scaling, with original_max_position_embeddings small
     * enough that the short test sequences see all three bands of
     * frequencies (kept, blended, divided). */
    c->vocab_size = 128256;
    c->rope_theta = 10000.0f;
    c->rope_type = TB_ROPE_LLAMA3;
    c->rope_factor = 8.0f;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_position_embeddings = 64;
  } else if (arch == TB_ARCH_QWEN2) {
    c->qkv_bias = 1;
    c->rope_theta = 1000000.0f;
  } else {
    /* head_dim 16 with hidden 32 over 4 heads: q is 64 wide, as Qwen3-0.6B
     * has 16 heads of 128 over hidden 1024. */
    c->qk_norm = 1;
    c->head_dim = 16;
    c->rope_theta = 1000000.0f;
  }
  return m;
}

/* Random weights large enough that the log-probs are far from uniform;
 * norm weights near 1. */
static void write_model(const char *dir, const model_t *m) {
  tb_error_t err = { 0 };
  if (m->base) {
    ASSERT_OK(tb__base_model_save(dir, &err));
    return;
  }
  const tb__model_config_t *c = &m->config;
  tb__weights_t w;
  ASSERT_OK(tb__weights_alloc(&w, c));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 77);
  tb__k_rng_fill_normal(w.storage, &rng, 0.0f, 0.15f, w.storage_floats);
  tb__hf_tensor_t *ts = calloc(tb__hf_tensor_count(c), sizeof(*ts));
  ASSERT(ts != NULL);
  size_t n = tb__hf_tensors(c, &w, ts);
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(ts[i].name);
    if (len > 11 && strcmp(ts[i].name + len - 11, "norm.weight") == 0)
      tb__k_rng_fill_uniform((float *)ts[i].data, &rng, 0.8f, 1.2f,
                             (size_t)ts[i].shape[0]);
  }
  free(ts);
  ASSERT_OK(tb__hf_save_as(dir, &w, NULL, m->shard_bytes, m->dtype, &err));
  tb__weights_free(&w);
}

/* ------------------------------------------------------------ the check */

#define ND 3
#define NMAX 24

typedef struct batch_s {
  int32_t tok[ND][NMAX], tgt[ND][NMAX];
  float w[ND][NMAX], lps[ND][NMAX], adv[ND][NMAX];
  tb__datum_t d[ND];
  tb__batch_t b;
} batch_t;

static json_t *ints(const int32_t *x, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(a, json_integer(x[i]));
  return a;
}

static json_t *floats(const float *x, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(a, json_real(x[i]));
  return a;
}

static void write_batch_json(const char *path, const batch_t *bt,
                             int with_config) {
  json_t *data = json_array();
  for (size_t i = 0; i < bt->b.num_data; i++) {
    const tb__datum_t *d = &bt->d[i];
    json_array_append_new(
        data, json_pack("{s:o, s:o, s:o, s:o, s:o}", "tokens",
                        ints(d->tokens, d->n), "target_tokens",
                        ints(d->target_tokens, d->n), "weights",
                        floats(d->weights, d->n), "logprobs",
                        floats(d->logprobs, d->n), "advantages",
                        floats(d->advantages, d->n)));
  }
  const tb__loss_config_t *c = &bt->b.loss_config;
  json_t *cfg = with_config
                    ? json_pack("{s:f, s:f, s:f}", "clip_low_threshold",
                                (double)c->clip_low_threshold,
                                "clip_high_threshold",
                                (double)c->clip_high_threshold, "beta",
                                (double)c->beta)
                    : json_object();
  json_t *root = json_pack("{s:s, s:o, s:o}", "loss_fn",
                           tb__loss_fn_name(bt->b.loss_fn), "loss_fn_config",
                           cfg, "data", data);
  ASSERT(root != NULL);
  ASSERT_OK(json_dump_file(root, path, JSON_COMPACT));
  json_decref(root);
}

static double norm_rel(const float *got, const json_t *want, size_t n) {
  ASSERT_EQ_INT(json_array_size(want), n);
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double w = json_number_value(json_array_get(want, i));
    double d = (double)got[i] - w;
    num += d * d;
    den += w * w;
  }
  ASSERT(den > 0);
  return sqrt(num / den);
}

/* Runs one loss through the engine and through PyTorch and compares. */
static void check_loss(const char *model_spec_fmt, const model_t *mdl,
                       tb__loss_fn_t fn, const tb__loss_config_t *cfg) {
  if (torch_missing)
    SKIP("PyTorch not installed for %s (Debian: apt install python3-torch)", python());
  loop_thread = pthread_self();
  char dir[] = "/tmp/tb_torch_ref_XXXXXX";
  ASSERT(mkdtemp(dir) != NULL);
  char model_dir[256], adapter_dir[256], batch_path[256], result_path[256];
  snprintf(model_dir, sizeof(model_dir), "%s/model", dir);
  snprintf(adapter_dir, sizeof(adapter_dir), "%s/adapter", dir);
  snprintf(batch_path, sizeof(batch_path), "%s/batch.json", dir);
  snprintf(result_path, sizeof(result_path), "%s/result.json", dir);
  write_model(model_dir, mdl);

  env_t env;
  memset(&env, 0, sizeof(env));
  ASSERT_OK(uv_loop_init(&env.loop));
  env.engine.data = &env;
  tb__engine_opts_t opts = { 2, 1, 0 };
  ASSERT_OK(tb__engine_init(&env.loop, &env.engine, &opts));
  char spec[300];
  snprintf(spec, sizeof(spec), model_spec_fmt, model_dir);
  tb__engine_job_t job = { 0 };
  job.data = &env;
  ASSERT_OK(tb__engine_load_model(&job, &env.engine, spec, job_cb));
  run(&env);
  tb__engine_model_t *model = job.model;
  tb__engine_job_cleanup(&job);
  const tb__model_config_t *mc = &tb__engine_model_weights(model)->config;

  tb__lora_config_t lc = { 0 };
  lc.rank = 4;
  lc.seed = 5;
  lc.alpha = 16;
  lc.train_attn = lc.train_mlp = lc.train_unembed = 1;
  ASSERT_OK(tb__engine_create_adapter(&job, model, &lc, job_cb));
  run(&env);
  tb__engine_adapter_t *a = job.adapter;
  tb__engine_job_cleanup(&job);
  /* B is zero at init; give every tensor values so that all gradients
   * are non-trivial. */
  tb__lora_t *lora = tb__engine_adapter_lora(a);
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 6);
  tb__k_rng_fill_uniform(lora->params, &rng, -0.1f, 0.1f, lora->num_params);
  ASSERT_OK(tb__engine_save(&job, a, adapter_dir, TB_ENGINE_SAVE_SAMPLER,
                            job_cb));
  run(&env);
  tb__engine_job_cleanup(&job);

  /* The batch: random tokens; sampler log-probs near the model's own so
   * that importance ratios straddle the clip thresholds. */
  static batch_t bt;
  memset(&bt, 0, sizeof(bt));
  uint64_t st = 1234 + (uint64_t)fn;
  for (int i = 0; i < ND; i++) {
    size_t n = 8 + 7 * (size_t)i;
    for (size_t t = 0; t < n; t++) {
      bt.tok[i][t] = (int32_t)(tb__k_splitmix64(&st) % (uint64_t)mc->vocab_size);
      bt.tgt[i][t] = (int32_t)(tb__k_splitmix64(&st) % (uint64_t)mc->vocab_size);
      bt.w[i][t] = (float)(tb__k_splitmix64(&st) % 4) * 0.5f;
      bt.adv[i][t] = (float)(tb__k_rng_uniform(&rng) * 2.0 - 1.0);
    }
    bt.d[i] = (tb__datum_t){ bt.tok[i], n, 1, bt.tgt[i], bt.w[i], bt.lps[i],
                            bt.adv[i] };
  }
  bt.b = (tb__batch_t){ bt.d, ND, TB_LOSS_CROSS_ENTROPY, *cfg };
  ASSERT_OK(tb__engine_forward(&job, a, &bt.b, job_cb));
  run(&env);
  size_t k = 0;
  for (int i = 0; i < ND; i++)
    for (size_t t = 0; t < bt.d[i].n; t++)
      bt.lps[i][t] = job.logprobs[k++] +
                     (float)(tb__k_rng_uniform(&rng) * 0.6 - 0.3);
  tb__engine_job_cleanup(&job);
  bt.b.loss_fn = fn;

  /* Our side: forward_backward in two shards into zero gradients. */
  ASSERT_OK(tb__engine_forward_backward(&job, a, &bt.b, job_cb));
  run(&env);
  double loss = job.loss;
  static float lp[ND * NMAX];
  memcpy(lp, job.logprobs, job.num_logprobs * sizeof(float));
  tb__engine_job_cleanup(&job);

  /* Theirs.  The default clip thresholds are checked by leaving the
   * config out for some losses. */
  tb__loss_config_t def;
  tb__loss_config_default(&def);
  int with_config = fn == TB_LOSS_DRO ||
                    memcmp(cfg, &def, sizeof(def)) != 0;
  write_batch_json(batch_path, &bt, with_config);
  char script[PATH_MAX], cmd[2 * PATH_MAX];
  script_path(script, sizeof(script));
  snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s' '%s' '%s' '%s'", python(),
           script, model_dir, adapter_dir, batch_path, result_path);
  int rc = system(cmd);
  ASSERT(WIFEXITED(rc));
  ASSERT_EQ_INT(WEXITSTATUS(rc), 0);
  json_error_t jerr;
  json_t *res = json_load_file(result_path, 0, &jerr);
  ASSERT(res != NULL);

  double want_loss = json_number_value(json_object_get(res, "loss"));
  fprintf(stderr, "%s: loss %.9g, torch %.9g\n", tb__loss_fn_name(fn), loss,
          want_loss);
  ASSERT_NEAR(loss, want_loss, 1e-6, 1e-4);
  json_t *lps = json_object_get(res, "logprobs");
  ASSERT_EQ_INT(json_array_size(lps), ND);
  k = 0;
  for (size_t i = 0; i < ND; i++) {
    json_t *row = json_array_get(lps, i);
    ASSERT_EQ_INT(json_array_size(row), bt.d[i].n);
    for (size_t t = 0; t < bt.d[i].n; t++, k++)
      ASSERT_NEAR(lp[k], json_number_value(json_array_get(row, t)), 1e-6,
                  1e-4);
  }
  json_t *grads = json_object_get(res, "grads");
  size_t nt = tb__lora_num_tensors(lora);
  ASSERT_EQ_INT(json_object_size(grads), nt);
  double worst = 0;
  for (size_t i = 0; i < nt; i++) {
    char name[96];
    size_t shape[2], off;
    ASSERT_OK(tb__lora_tensor(lora, i, name, sizeof(name), shape, &off));
    json_t *g = json_object_get(grads, name);
    if (g == NULL)
      tb_test_fail(__FILE__, __LINE__, "no reference gradient for %s", name);
    double e = norm_rel(lora->grads + off, g, shape[0] * shape[1]);
    if (e > 1e-3)
      tb_test_fail(__FILE__, __LINE__, "%s: gradient norm-relative error %g",
                   name, e);
    worst = fmax(worst, e);
  }
  fprintf(stderr, "%s: %zu gradient tensors, worst norm-relative error %.3g\n",
          tb__loss_fn_name(fn), nt, worst);
  json_decref(res);

  tb__engine_model_unref(model);
  ASSERT_OK(tb__engine_close(&env.engine, closed_cb));
  ASSERT_OK(uv_run(&env.loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(env.done, -1);
  ASSERT_LOOP_CLOSE(&env.loop);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  ASSERT_EQ_INT(system(cmd), 0);
}

static tb__loss_config_t config(float lo, float hi, float beta) {
  tb__loss_config_t c = { lo, hi, beta };
  return c;
}

static tb__loss_config_t default_config(void) {
  tb__loss_config_t c;
  tb__loss_config_default(&c);
  return c;
}

TEST(cross_entropy_on_base) {
  tb__loss_config_t c = default_config();
  model_t m = { 1, { 0 }, TB_ST_F32, 0 };
  check_loss("ref=%s", &m, TB_LOSS_CROSS_ENTROPY, &c);
}

/* Checks loss with configuration c on the untied tiny model. */
static void check_untied(tb__loss_fn_t loss, tb__loss_config_t c) {
  model_t m = untied();
  check_loss("tiny=%s", &m, loss, &c);
}

TEST(cross_entropy_untied) {
  check_untied(TB_LOSS_CROSS_ENTROPY, default_config());
}

TEST(importance_sampling) {
  check_untied(TB_LOSS_IMPORTANCE_SAMPLING, default_config());
}

TEST(ppo_with_clip_thresholds) {
  check_untied(TB_LOSS_PPO, config(0.9f, 1.1f, 0.05f));
}

TEST(cispo_default_thresholds) {
  check_untied(TB_LOSS_CISPO, default_config());
}

TEST(dro_with_beta) {
  check_untied(TB_LOSS_DRO, config(0.8f, 1.2f, 0.3f));
}

/* Every loss on one family's model. */
static void family_losses(const model_t *m) {
  tb__loss_config_t def;
  tb__loss_config_default(&def);
  const struct {
    tb__loss_fn_t fn;
    tb__loss_config_t cfg;
  } cases[] = {
    { TB_LOSS_CROSS_ENTROPY, def },
    { TB_LOSS_IMPORTANCE_SAMPLING, def },
    { TB_LOSS_PPO, config(0.9f, 1.1f, 0.05f) },
    { TB_LOSS_CISPO, def },
    { TB_LOSS_DRO, config(0.8f, 1.2f, 0.3f) },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    check_loss("family=%s", m, cases[i].fn, &cases[i].cfg);
}

TEST(llama3_rope_scaling_every_loss) {
  model_t m = family(TB_ARCH_LLAMA);
  family_losses(&m);
}

TEST(qwen2_qkv_biases_f16_every_loss) {
  model_t m = family(TB_ARCH_QWEN2);
  m.dtype = TB_ST_F16;
  family_losses(&m);
}

TEST(qwen3_qk_norm_head_dim_bf16_sharded_every_loss) {
  model_t m = family(TB_ARCH_QWEN3);
  m.dtype = TB_ST_BF16;
  m.shard_bytes = 4 << 20;  /* the embedding alone is 9.7 MB in bf16 */
  family_losses(&m);
}

static const tb_test_t tests[] = {
  TEST_ENTRY_TIMEOUT(cross_entropy_on_base, 120000),
  TEST_ENTRY_TIMEOUT(cross_entropy_untied, 120000),
  TEST_ENTRY_TIMEOUT(importance_sampling, 120000),
  TEST_ENTRY_TIMEOUT(ppo_with_clip_thresholds, 120000),
  TEST_ENTRY_TIMEOUT(cispo_default_thresholds, 120000),
  TEST_ENTRY_TIMEOUT(dro_with_beta, 120000),
  TEST_ENTRY_TIMEOUT(llama3_rope_scaling_every_loss, 600000),
  TEST_ENTRY_TIMEOUT(qwen2_qkv_biases_f16_every_loss, 600000),
  TEST_ENTRY_TIMEOUT(qwen3_qk_norm_head_dim_bf16_sharded_every_loss, 600000),
  { NULL, NULL, 0 },
};

int main(int argc, char **argv) {
  char cmd[PATH_MAX + 64];
  snprintf(cmd, sizeof(cmd), "'%s' -c 'import torch, numpy' 2>/dev/null",
           python());
  int rc = system(cmd);
  torch_missing = !WIFEXITED(rc) || WEXITSTATUS(rc) != 0;
  return tb_test_main(argc, argv, tests);
}

/*
 * The training-step benchmark: forward_backward + optim_step of a LoRA
 * adapter through the engine (shards on the libuv threadpool), against
 * the machine's own cblas_sgemm and against the same step in PyTorch
 * (bench/torch_train_step.py), all in one run.
 *
 * Models: --model smollm (default), the shape of SmolLM2-135M (hidden 576,
 * 30 layers, 9 heads over 3 KV heads, intermediate 1536, vocabulary 49152,
 * tied embeddings); --model qwen3-0.6b, the shape of Qwen3-0.6B (hidden
 * 1024, 28 layers, 16 heads of 128 over 8 KV heads, intermediate 3072,
 * vocabulary 151936, tied, q/k norms); both with random weights from the
 * project PRNG; --model base, the built-in model; or --model-dir DIR, any
 * Hugging Face directory the engine loads -- with random weights of its
 * config when DIR holds config.json alone (so a model's shape can be
 * measured from its config without downloading its weights).  LoRA rank 32
 * on q, k, v, o, gate, up, down (not the unembedding); 4 sequences of 256
 * tokens; cross-entropy on every position.
 *
 * FLOPs are counted one fixed way (M = batch * seq tokens): a frozen
 * linear (K in, N out) counts 2MKN forward and 2MKN for its activation
 * gradient; LoRA adds 2Mr(K+N) forward, the same for activation gradients
 * and again for its weight gradients; the unembedding counts 2MCV forward
 * and 2MCV backward; attention counts 2PD per matmul over the P =
 * seq(seq+1)/2 causal pairs of each head (2 matmuls forward, 4 backward);
 * nothing else (norms, biases, rotary: element-wise).  That is 638.1 GFLOP
 * per step for the SmolLM2 shape and 2655.7 for the Qwen3-0.6B shape.
 *
 * Memory: the peak RSS of the process (weights, the packed copies of
 * them, every shard's activations and its (256, V) logits block), and the
 * model's own memory after the step: its float32 weights and the copies
 * packed for the products.
 *
 * usage: bench_train [--threads N] [--steps S] [--skip-torch]
 *                    [--model smollm|qwen3-0.6b|base | --model-dir DIR]
 * Output: human lines, then one `BENCH train key=value ...` line.
 * OPENBLAS_CORETYPE is left as the environment sets it.
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "bench_model.h"
#include "engine/base_model.h"
#include "engine/engine.h"
#include "engine/hf_model.h"
#include "engine/jsonfile.h"
#include "kernels/kernels.h"

#define BATCH 4
#define SEQ 256
#define RANK 32

static void qwen3_config(tb__model_config_t *c) {
  memset(c, 0, sizeof(*c));
  c->arch = TB_ARCH_QWEN3;
  c->qk_norm = 1;
  c->hidden_size = 1024;
  c->intermediate_size = 3072;
  c->num_layers = 28;
  c->num_heads = 16;
  c->num_kv_heads = 8;
  c->head_dim = 128;
  c->vocab_size = 151936;
  c->max_position_embeddings = 40960;
  c->rms_norm_eps = 1e-6f;
  c->rope_theta = 1000000.0f;
  c->tie_word_embeddings = 1;
}

/* DIR/config.json alone (no weights file): its config, for random
 * weights; 0 when DIR has weights to load, 1 when the config was read. */
static int config_only(const char *dir, tb__model_config_t *c) {
  char *st = tb__path_join(dir, TB_HF_WEIGHTS);
  char *ix = tb__path_join(dir, TB_HF_INDEX);
  char *cf = tb__path_join(dir, TB_HF_CONFIG);
  int weights = access(st, F_OK) == 0 || access(ix, F_OK) == 0;
  int rc = 0;
  if (!weights) {
    json_t *root;
    tb_error_t err = { 0 };
    if (tb__json_read_file(cf, &root, &err) != 0 ||
        tb__hf_config_from_json(root, cf, c, &err) != 0) {
      fprintf(stderr, "bench_train: %s\n", tb_error_message(&err));
      exit(2);
    }
    json_decref(root);
    rc = 1;
  }
  free(st);
  free(ix);
  free(cf);
  return rc;
}

/* The FLOP count described at the top of this file. */
static double step_flops(const tb__model_config_t *c, double B, double T,
                         double r) {
  double M = B * T, C = c->hidden_size, In = c->intermediate_size;
  double qd = (double)c->num_heads * c->head_dim;
  double kvd = (double)c->num_kv_heads * c->head_dim;
  const double K[7] = { C, C, C, qd, C, C, In };
  const double N[7] = { qd, kvd, kvd, C, In, In, C };
  double layer = 0;
  for (int i = 0; i < 7; i++)
    layer += 4 * M * K[i] * N[i] + 6 * M * r * (K[i] + N[i]);
  double P = T * (T + 1) / 2;
  layer += 6 * 2 * P * c->head_dim * c->num_heads * B;
  return layer * c->num_layers + 4 * M * C * c->vocab_size;
}

/* ------------------------------------------------------------ sgemm peer */

static double sgemm_gflops(int threads) {
  const int n = 2048;
  float *a = xmalloc((size_t)n * n * sizeof(float));
  float *b = xmalloc((size_t)n * n * sizeof(float));
  float *c = xmalloc((size_t)n * n * sizeof(float));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 1);
  tb__k_rng_fill_uniform(a, &rng, -1, 1, (size_t)n * n);
  tb__k_rng_fill_uniform(b, &rng, -1, 1, (size_t)n * n);
  openblas_set_num_threads(threads);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n,
              b, n, 0.0f, c, n);  /* warm-up */
  double best = 1e30;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n,
                b, n, 0.0f, c, n);
    double dt = now_s() - t0;
    if (dt < best)
      best = dt;
  }
  openblas_set_num_threads(1);
  free(a);
  free(b);
  free(c);
  return 2.0 * n * n * (double)n / best / 1e9;
}

/* ------------------------------------------------------------ our step */

typedef struct run_s {
  tb__engine_t engine;
  tb__engine_adapter_t *adapter;
  tb__batch_t batch;
  tb__engine_job_t job;
  int steps_left;
  int in_optim;
  double t0;
  double *times;
  int ntimes;
  double loss;
} run_t;

static void step_cb(tb__engine_job_t *job, int status);

static void step_start(run_t *r) {
  r->t0 = now_s();
  r->in_optim = 0;
  r->job.data = r;
  int rc = tb__engine_forward_backward(&r->job, r->adapter, &r->batch,
                                       step_cb);
  if (rc != 0)
    die("forward_backward", rc);
}

static void step_cb(tb__engine_job_t *job, int status) {
  run_t *r = job->data;
  if (status != 0) {
    fprintf(stderr, "bench_train: %s\n", tb_error_message(&job->error));
    exit(1);
  }
  if (!r->in_optim) {
    r->loss = job->loss;
    tb__engine_job_cleanup(job);
    tb__adam_params_t p;
    tb__adam_params_default(&p);
    r->in_optim = 1;
    job->data = r;
    int rc = tb__engine_optim_step(job, r->adapter, &p, step_cb);
    if (rc != 0)
      die("optim_step", rc);
    return;
  }
  tb__engine_job_cleanup(job);
  r->times[r->ntimes++] = now_s() - r->t0;
  if (--r->steps_left > 0)
    step_start(r);
}

static void created_cb(tb__engine_job_t *job, int status) {
  if (status != 0)
    die("create adapter", status);
  ((run_t *)job->data)->adapter = job->adapter;
}

static void loaded_cb(tb__engine_job_t *job, int status) {
  if (status != 0) {
    fprintf(stderr, "bench_train: %s\n", tb_error_message(&job->error));
    exit(2);
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ torch peer */

/* ms per step of the PyTorch peer, or -1 when it could not run. */
static double torch_ms(const tb__model_config_t *c, int threads, int steps) {
  char script[PATH_MAX], cmd[2 * PATH_MAX];
  bench_peer_script(script, sizeof(script), "TB_TORCH_TRAIN_STEP", "torch_train_step.py");
  snprintf(cmd, sizeof(cmd),
           "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=%d /usr/bin/python3 '%s' "
           "--hidden %d --layers %d --heads %d --kv-heads %d --head-dim %d "
           "--intermediate %d --vocab %d --rank %d --batch %d --seq %d "
           "--threads %d --steps %d%s%s%s",
           threads, script, c->hidden_size, c->num_layers, c->num_heads,
           c->num_kv_heads, c->head_dim, c->intermediate_size, c->vocab_size,
           RANK, BATCH, SEQ, threads, steps, c->qk_norm ? " --qk-norm" : "",
           c->qkv_bias ? " --qkv-bias" : "",
           c->tie_word_embeddings ? "" : " --untied");
  FILE *p = popen(cmd, "r");
  if (p == NULL)
    return -1;
  char line[512];
  double ms = -1;
  while (fgets(line, sizeof(line), p) != NULL) {
    const char *k = strstr(line, "TORCH ms_per_step=");
    if (k != NULL)
      ms = atof(k + strlen("TORCH ms_per_step="));
    else
      fputs(line, stderr);
  }
  int rc = pclose(p);
  return rc == 0 ? ms : -1;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
  int threads = (int)uv_available_parallelism(), steps = 3, skip_torch = 0;
  const char *model = "smollm", *model_dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--skip-torch") == 0)
      skip_torch = 1;
    else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
      model = argv[++i];
    else if (strcmp(argv[i], "--model-dir") == 0 && i + 1 < argc)
      model_dir = argv[++i];
    else {
      fprintf(stderr, "usage: bench_train [--threads N] [--steps S] "
                      "[--skip-torch] [--model smollm|qwen3-0.6b|base | "
                      "--model-dir DIR]\n");
      return 2;
    }
  }
  if (threads < 1 || steps < 1 ||
      (model_dir == NULL && strcmp(model, "smollm") != 0 &&
       strcmp(model, "qwen3-0.6b") != 0 && strcmp(model, "base") != 0)) {
    fprintf(stderr, "bench_train: bad --threads, --steps or --model\n");
    return 2;
  }
  /* One threadpool worker per shard; libuv reads this at its first
   * uv_queue_work. */
  if (threads > 4) {
    char v[16];
    snprintf(v, sizeof(v), "%d", threads);
    setenv("UV_THREADPOOL_SIZE", v, 1);
  }

  tb__model_config_t cfg;
  tb__weights_t w;
  memset(&w, 0, sizeof(w));
  const char *weights_from = "random";
  char load_spec[PATH_MAX + 16] = "base";
  if (model_dir != NULL) {
    model = "dir";
    if (config_only(model_dir, &cfg)) {
      bench_random_weights(&w, &cfg);
    } else {
      snprintf(load_spec, sizeof(load_spec), "dir=%s", model_dir);
      weights_from = model_dir;
    }
  } else if (strcmp(model, "smollm") == 0) {
    cfg = bench_smollm_config();
    bench_random_weights(&w, &cfg);
  } else if (strcmp(model, "qwen3-0.6b") == 0) {
    qwen3_config(&cfg);
    bench_random_weights(&w, &cfg);
  } else {
    tb__base_model_config(&cfg);
    weights_from = "generated";
  }
  double sgemm = sgemm_gflops(threads);

  uv_loop_t loop;
  uv_loop_init(&loop);
  static run_t r;
  tb__engine_opts_t opts = { (size_t)threads, 0, (size_t)threads };
  int rc = tb__engine_init(&loop, &r.engine, &opts);
  if (rc != 0)
    die("engine", rc);
  tb__engine_model_t *m = NULL;
  tb__engine_job_t job = { 0 };
  if (w.storage != NULL) {
    if ((rc = tb__engine_model_add(&r.engine, model, &w, &m)) != 0)
      die("model", rc);
  } else {
    double t0 = now_s();
    if ((rc = tb__engine_load_model(&job, &r.engine, load_spec,
                                    loaded_cb)) != 0)
      die("load model", rc);
    uv_run(&loop, UV_RUN_DEFAULT);
    m = job.model;
    tb__engine_job_cleanup(&job);
    if (m == NULL)
      return 1;
    if (model_dir != NULL)
      printf("loaded %s in %.2f s\n", model_dir, now_s() - t0);
  }
  cfg = tb__engine_model_weights(m)->config;
  double flops = step_flops(&cfg, BATCH, SEQ, RANK);
  static const struct { const char *model; double gflop; } pinned[] = {
    { "smollm", 638.1 }, { "qwen3-0.6b", 2655.7 },
  };
  for (size_t i = 0; i < sizeof(pinned) / sizeof(pinned[0]); i++)
    if (strcmp(model, pinned[i].model) == 0 &&
        fabs(flops / 1e9 - pinned[i].gflop) > 0.05) {
      fprintf(stderr, "bench_train: FLOP count %.2f GFLOP, expected %.1f\n",
              flops / 1e9, pinned[i].gflop);
      return 1;
    }
  tb__lora_config_t lc = { 0 };
  lc.rank = RANK;
  lc.seed = 1;
  lc.train_attn = lc.train_mlp = 1;
  job.data = &r;
  if ((rc = tb__engine_create_adapter(&job, m, &lc, created_cb)) != 0)
    die("create adapter", rc);
  uv_run(&loop, UV_RUN_DEFAULT);
  tb__engine_job_cleanup(&job);

  static int32_t tok[BATCH][SEQ], tgt[BATCH][SEQ];
  static float wts[BATCH][SEQ];
  tb__datum_t d[BATCH];
  uint64_t st = 7;
  for (int b = 0; b < BATCH; b++) {
    for (int t = 0; t < SEQ; t++) {
      tok[b][t] = (int32_t)(tb__k_splitmix64(&st) % (uint64_t)cfg.vocab_size);
      wts[b][t] = 1.0f;
    }
    for (int t = 0; t < SEQ; t++)
      tgt[b][t] = t + 1 < SEQ ? tok[b][t + 1]
                              : (int32_t)(tb__k_splitmix64(&st) %
                                          (uint64_t)cfg.vocab_size);
    d[b] = (tb__datum_t){ tok[b], SEQ, 1, tgt[b], wts[b], NULL, NULL };
  }
  r.batch = (tb__batch_t){ d, BATCH, TB_LOSS_CROSS_ENTROPY,
                          { 0.8f, 1.2f, 0.05f } };
  r.times = xmalloc((size_t)(steps + 1) * sizeof(double));
  r.steps_left = steps + 1;  /* the first step warms up */
  step_start(&r);
  uv_run(&loop, UV_RUN_DEFAULT);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double maxrss_mb = (double)ru.ru_maxrss / 1024.0;
  size_t packed_bytes = 0;
  size_t packed = tb__packed_count(tb__engine_model_weights(m)->packed,
                                   &packed_bytes);
  double weights_mb =
      (double)tb__engine_model_weights(m)->storage_floats * 4 / 1048576.0;
  tb__engine_model_unref(m);
  tb__engine_close(&r.engine, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);

  qsort(r.times + 1, (size_t)steps, sizeof(double), cmp_double);
  double ms = r.times[1 + steps / 2] * 1e3;
  double gflops = flops / (ms / 1e3) / 1e9;
  double tps = BATCH * SEQ / (ms / 1e3);
  double tms = skip_torch ? -1 : torch_ms(&cfg, threads, steps);

  printf("model %s (%s, weights %s): %.1f GFLOP per step, %d tokens, LoRA "
         "rank %d, %d threads, OpenBLAS core %s\n", model,
         tb__model_arch_name(cfg.arch), weights_from, flops / 1e9,
         BATCH * SEQ, RANK, threads, openblas_get_corename());
  if (packed > 0)
    printf("model memory: weights %.0f MB (float32) + %zu matrices packed "
           "once by oneDNN, %.0f MB\n", weights_mb, packed,
           (double)packed_bytes / 1048576.0);
  else
    printf("model memory: weights %.0f MB (float32), packed by OpenBLAS in "
           "every product\n", weights_mb);
  printf("tinkerbell: %.1f ms/step (min %.1f, max %.1f; first %.1f), %.0f "
         "tokens/s, %.1f GFLOP/s, peak RSS %.0f MB, loss %.3f\n", ms,
         r.times[1] * 1e3, r.times[steps] * 1e3, r.times[0] * 1e3, tps,
         gflops, maxrss_mb, r.loss);
  printf("sgemm 2048^3: %.1f GFLOP/s; ratio to sgemm %.3f\n", sgemm,
         gflops / sgemm);
  if (tms > 0)
    printf("pytorch: %.1f ms/step; torch ms / our ms = %.3f\n", tms,
           tms / ms);
  else
    printf("pytorch: %s\n", skip_torch ? "skipped (--skip-torch)"
                                       : "not available");
  printf("BENCH train model=%s threads=%d steps=%d ms_per_step=%.1f "
         "tokens_per_s=%.0f gflops=%.2f sgemm_gflops=%.2f ratio_sgemm=%.3f "
         "torch_ms=%.1f ratio_torch=%.3f maxrss_mb=%.0f weights_mb=%.0f "
         "packed_mb=%.0f core=%s\n", model, threads, steps, ms, tps, gflops,
         sgemm, gflops / sgemm, tms, tms > 0 ? tms / ms : 0.0, maxrss_mb,
         weights_mb, (double)packed_bytes / 1048576.0,
         openblas_get_corename());
  free(r.times);
  return 0;
}

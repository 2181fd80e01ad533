/*
 * The sampling benchmark: decode steps through the engine's decoder
 * (decode.h: work items on the libuv threadpool) at batch 1 and at a
 * large batch, against the memory-bandwidth limit and against the same
 * decode loop in PyTorch (bench/torch_sample.py), all in one run.
 *
 * Model: the shape of SmolLM2-135M (hidden 576, 30 layers, 9 heads over 3
 * KV heads, intermediate 1536, vocabulary 49152, tied embeddings) with
 * random weights, rounded to bfloat16 as the real checkpoint is stored, and
 * LoRA adapters of rank 32 on q, k, v, o, gate, up and down, unmerged, with
 * random non-zero B.  Every sequence has its own random prompt of --prompt
 * tokens and draws --tokens tokens at temperature 1 (the whole vocabulary:
 * the costliest draw).  Only decode steps are timed; prefill is reported
 * apart.
 *
 * The limit at batch 1: a STREAM-like read of 1 GiB by --threads work
 * items in the same run gives the sustained read bandwidth; a decode step
 * reads every frozen matrix once (bfloat16, or float32 with --weights
 * f32), the adapter's A and B (float32), and the sequence's keys and
 * values (float32, at the mean context of the timed steps).  The limit is
 * bandwidth / those bytes.
 *
 * The ceiling at the large batch: the tokens/s that cblas_sgemm alone
 * gives for a step's base products (every layer's q|k|v, o, gate|up and
 * down, then the unembedding, float32, over --batch rows, OpenBLAS with
 * --threads threads), without LoRA, attention, norms or sampling: how far
 * a batch is from what the machine's own BLAS computes.
 *
 * Also measured: the overhead of the cooperative steps (coop.h), as the
 * time of a task of as many phases as a decode step with empty chunks,
 * per phase and per step.
 *
 * usage: bench_sample [--threads N] [--batch B] [--prompt P] [--tokens T]
 *                     [--reps R] [--adapters A] [--weights auto|f32|bf16]
 *                     [--skip-torch]
 * Output: human lines, then one `BENCH sample key=value ...` line.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cblas.h>
#include <uv.h>

#include "bench_model.h"
#include "engine/coop.h"
#include "engine/decode.h"
#include "engine/lora.h"
#include "engine/weights.h"
#include "kernels/kernels.h"

#define RANK 32
#define MAX_ADAPTERS 16

static void random_lora(tb__lora_t *lora, const tb__model_config_t *c,
                        uint64_t seed) {
  tb__lora_config_t lc = { 0 };
  lc.rank = RANK;
  lc.seed = seed;
  lc.train_attn = lc.train_mlp = 1;
  int rc = tb__lora_init(lora, c, &lc);
  if (rc != 0)
    die("adapter", rc);
  /* B is zero after init; make it count. */
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed + 1);
  for (size_t s = 0; s + 1 < lora->num_slots; s++) {
    const tb__lora_slot_t *sl = &lora->slots[s];
    if (sl->on)
      tb__k_rng_fill_uniform(lora->params + sl->b_off, &rng, -0.01f, 0.01f,
                             sl->out * lora->rank);
  }
}

/* ------------------------------------------------------------ bandwidth */

typedef struct stream_s {
  uv_work_t req;
  const float *p;
  size_t n;
  double sum;
} stream_t;

static void stream_work(uv_work_t *req) {
  stream_t *s = (stream_t *)req;
  float acc[16] = { 0 };
  size_t i = 0;
  for (; i + 16 <= s->n; i += 16)
    for (int j = 0; j < 16; j++)
      acc[j] += s->p[i + j];
  double t = 0;
  for (int j = 0; j < 16; j++)
    t += acc[j];
  s->sum = t;
}

static void stream_after(uv_work_t *req, int status) { (void)req; (void)status; }

/* GB/s of the best of five reads of 1 GiB by `threads` work items. */
static double read_bandwidth(uv_loop_t *loop, int threads) {
  const size_t n = ((size_t)1 << 30) / sizeof(float);
  float *a = xmalloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++)
    a[i] = (float)(i & 7);
  stream_t s[64];
  double best = 0, check = 0;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
      size_t lo = n * (size_t)i / (size_t)threads;
      size_t hi = n * (size_t)(i + 1) / (size_t)threads;
      s[i] = (stream_t){ .p = a + lo, .n = hi - lo };
      uv_queue_work(loop, &s[i].req, stream_work, stream_after);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    double gbs = (double)(n * sizeof(float)) / (now_s() - t0) / 1e9;
    best = gbs > best ? gbs : best;
    for (int i = 0; i < threads; i++)
      check += s[i].sum;
  }
  if (check < 0)
    printf("impossible\n");
  free(a);
  return best;
}

/* ------------------------------------------------------------ sgemm ceiling */

/* y (B, N) = x (B, K) W^T for the model's own float32 W (N, K). */
static void sgemm_rows(float *y, const float *x, const float *W, int B, int N,
                       int K) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, N, K, 1.0f, x, K,
              W, K, 0.0f, y, N);
}

/* Tokens/s of a step's base products by cblas_sgemm alone at B rows: the
 * median of five steps after one to warm up. */
static double sgemm_step_tps(const tb__weights_t *w, int threads, int B) {
  const tb__model_config_t *c = &w->config;
  int hid = c->hidden_size, mid = c->intermediate_size, voc = c->vocab_size;
  int QD = c->num_heads * c->head_dim, KVD = c->num_kv_heads * c->head_dim;
  int widest = voc > 2 * mid ? voc : 2 * mid;
  size_t nx = (size_t)B * (size_t)(mid > QD ? mid : QD);
  float *x = xmalloc(nx * sizeof(float));
  float *y = xmalloc((size_t)B * (size_t)widest * sizeof(float));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 5);
  tb__k_rng_fill_uniform(x, &rng, -1, 1, nx);
  openblas_set_num_threads(threads);
  double times[6];
  for (int rep = 0; rep < 6; rep++) {
    double t0 = now_s();
    for (int l = 0; l < c->num_layers; l++) {
      const tb__layer_weights_t *lw = &w->layers[l];
      /* q, k, v and gate, up lie side by side (tb__weights_alloc). */
      sgemm_rows(y, x, lw->wq, B, QD + 2 * KVD, hid);
      sgemm_rows(y, x, lw->wo, B, hid, QD);
      sgemm_rows(y, x, lw->w_gate, B, 2 * mid, hid);
      sgemm_rows(y, x, lw->w_down, B, hid, mid);
    }
    sgemm_rows(y, x, w->lm_head, B, voc, hid);
    times[rep] = now_s() - t0;
  }
  openblas_set_num_threads(1);
  free(x);
  free(y);
  return (double)B / median(times + 1, 5);
}

/* ------------------------------------------------------------ coop cost */

static void empty_chunk(void *ctx, size_t p, size_t i, size_t item) {
  (void)ctx; (void)p; (void)i; (void)item;
}

typedef struct coop_item_s {
  uv_work_t req;
  tb__coop_t *c;
  size_t index;
} coop_item_t;

static void coop_work(uv_work_t *req) {
  coop_item_t *it = (coop_item_t *)req;
  tb__coop_run(it->c, it->index);
}

/* Microseconds per phase of a task of `phases` phases of `chunks` empty
 * chunks each, run by `items` work items. */
static double coop_phase_us(uv_loop_t *loop, size_t phases, uint32_t chunks,
                            size_t items) {
  double times[9];
  coop_item_t it[64];
  for (int rep = 0; rep < 9; rep++) {
    tb__coop_t *c = tb__coop_new(phases, items, empty_chunk, NULL);
    for (size_t p = 0; p < phases; p++)
      c->phases[p].chunks = chunks;
    double t0 = now_s();
    for (size_t i = 0; i < items; i++) {
      it[i] = (coop_item_t){ .c = c, .index = i };
      uv_queue_work(loop, &it[i].req, coop_work, stream_after);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    times[rep] = (now_s() - t0) * 1e6 / (double)phases;
    tb__coop_free(c);
  }
  return median(times, 9);
}

/* ------------------------------------------------------------ decoding */

typedef struct bench_s {
  uv_loop_t *loop;
  tb__dec_t dec;
  int done;
  int status;
} bench_t;

static void on_done(tb__dec_t *dec, int status) {
  bench_t *b = dec->data;
  b->done = 1;
  b->status = status;
}

static void run_step(bench_t *b) {
  b->done = 0;
  int rc = tb__dec_step(&b->dec, on_done);
  if (rc != 0)
    die("step", rc);
  uv_run(b->loop, UV_RUN_DEFAULT);
  if (!b->done || b->status != 0)
    die("step", b->status ? b->status : TB_EINVAL);
}

typedef struct result_s {
  double decode_tps;   /* median over reps */
  double decode_min, decode_max;
  double prefill_tps;
} result_t;

/* `batch` sequences (their adapters in turn), each prompted with `prompt`
 * random tokens; the decode steps of `tokens` tokens are timed. */
static void decode_run(bench_t *b, const tb__dec_adapter_t *ads, int nads,
                       int batch, int prompt, int tokens, int reps,
                       result_t *out) {
  const int V = b->dec.w->config.vocab_size;
  double *tps = xmalloc((size_t)(reps + 1) * sizeof(double));
  double *pre = xmalloc((size_t)(reps + 1) * sizeof(double));
  int32_t *toks = xmalloc((size_t)prompt * sizeof(int32_t));
  tb__dec_seq_t **seqs = xmalloc((size_t)batch * sizeof(*seqs));
  uint64_t st = 11;
  for (int rep = 0; rep <= reps; rep++) {  /* the first warms up */
    tb__sampling_params_t p;
    tb__sampling_params_default(&p);
    p.max_tokens = (size_t)tokens + 1;  /* the first draw ends the prefill */
    for (int i = 0; i < batch; i++) {
      for (int t = 0; t < prompt; t++)
        toks[t] = (int32_t)(tb__k_splitmix64(&st) % (uint64_t)V);
      p.seed = (uint64_t)(rep * batch + i);
      tb_error_t err = { 0 };
      int rc = tb__dec_seq_new(&b->dec, &ads[i % nads], toks, (size_t)prompt,
                               &p, &seqs[i], &err);
      if (rc != 0) {
        fprintf(stderr, "bench_sample: %s\n", tb_error_message(&err));
        exit(1);
      }
      if ((rc = tb__dec_seq_add(seqs[i])) != 0)
        die("admission (raise the pool)", rc);
    }
    double t0 = now_s();
    while (seqs[batch - 1]->prefilled < (size_t)prompt ||
           seqs[0]->prefilled < (size_t)prompt)
      run_step(b);
    double t1 = now_s();
    int steps = 0;
    while (tb__dec_running(&b->dec) > 0) {
      run_step(b);
      steps++;
    }
    double t2 = now_s();
    if (steps != tokens)
      fprintf(stderr, "bench_sample: %d decode steps, expected %d\n", steps,
              tokens);
    tps[rep] = (double)batch * tokens / (t2 - t1);
    pre[rep] = (double)batch * prompt / (t1 - t0);
    tb__dec_seq_t *s;
    while ((s = tb__dec_next_finished(&b->dec)) != NULL)
      if (s->status != 0)
        die("sequence", s->status);
    for (int i = 0; i < batch; i++)
      tb__dec_seq_free(seqs[i]);
  }
  out->decode_tps = median(tps + 1, reps);
  out->decode_min = tps[1];
  out->decode_max = tps[reps];
  out->prefill_tps = median(pre + 1, reps);
  free(tps);
  free(pre);
  free(toks);
  free(seqs);
}

/* ------------------------------------------------------------ torch peer */

/* Tokens/s of the PyTorch peer, or -1 when it could not run. */
static double torch_tps(const tb__model_config_t *c, int threads, int batch,
                        int prompt, int tokens, int reps) {
  char script[PATH_MAX], cmd[2 * PATH_MAX];
  bench_peer_script(script, sizeof(script), "TB_TORCH_SAMPLE", "torch_sample.py");
  snprintf(cmd, sizeof(cmd),
           "OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=%d /usr/bin/python3 '%s' "
           "--hidden %d --layers %d --heads %d --kv-heads %d --head-dim %d "
           "--intermediate %d --vocab %d --rank %d --batch %d --prompt %d "
           "--tokens %d --threads %d --reps %d",
           threads, script, c->hidden_size, c->num_layers, c->num_heads,
           c->num_kv_heads, c->head_dim, c->intermediate_size, c->vocab_size,
           RANK, batch, prompt, tokens, threads, reps);
  FILE *p = popen(cmd, "r");
  if (p == NULL)
    return -1;
  char line[512];
  double v = -1;
  while (fgets(line, sizeof(line), p) != NULL) {
    const char *k = strstr(line, "TORCH tokens_per_s=");
    if (k != NULL)
      v = atof(k + strlen("TORCH tokens_per_s="));
    else
      fputs(line, stderr);
  }
  return pclose(p) == 0 ? v : -1;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
  int threads = (int)uv_available_parallelism(), batch = 64, prompt = 64;
  int tokens = 64, reps = 3, nads = 1, skip_torch = 0;
  tb__dec_weights_mode_t mode = TB_DEC_WEIGHTS_AUTO;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
      batch = atoi(argv[++i]);
    else if (strcmp(argv[i], "--prompt") == 0 && i + 1 < argc)
      prompt = atoi(argv[++i]);
    else if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc)
      tokens = atoi(argv[++i]);
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--adapters") == 0 && i + 1 < argc)
      nads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--weights") == 0 && i + 1 < argc) {
      const char *v = argv[++i];
      mode = strcmp(v, "f32") == 0    ? TB_DEC_WEIGHTS_F32
             : strcmp(v, "bf16") == 0 ? TB_DEC_WEIGHTS_BF16
             : strcmp(v, "auto") == 0 ? TB_DEC_WEIGHTS_AUTO
                                      : (tb__dec_weights_mode_t)-1;
    } else if (strcmp(argv[i], "--skip-torch") == 0)
      skip_torch = 1;
    else {
      fprintf(stderr, "usage: bench_sample [--threads N] [--batch B] "
                      "[--prompt P] [--tokens T] [--reps R] [--adapters A] "
                      "[--weights auto|f32|bf16] [--skip-torch]\n");
      return 2;
    }
  }
  if (threads < 1 || threads > 64 || batch < 1 || prompt < 1 || tokens < 1 ||
      reps < 1 || nads < 1 || nads > MAX_ADAPTERS || (int)mode < 0) {
    fprintf(stderr, "bench_sample: bad option value\n");
    return 2;
  }
  if (threads > 4) {
    char v[16];
    snprintf(v, sizeof(v), "%d", threads);
    setenv("UV_THREADPOOL_SIZE", v, 1);
  }

  tb__model_config_t cfg = bench_smollm_config();
  tb__weights_t w;
  bench_random_weights(&w, &cfg);
  bench_round_bf16(&w);
  static tb__lora_t loras[MAX_ADAPTERS];
  tb__dec_adapter_t ads[MAX_ADAPTERS];
  for (int i = 0; i < nads; i++) {
    random_lora(&loras[i], &cfg, 100 + (uint64_t)i);
    ads[i] = (tb__dec_adapter_t){ &loras[i], { (uint64_t)i + 1, 1 } };
  }

  uv_loop_t loop;
  uv_loop_init(&loop);
  double gbs = read_bandwidth(&loop, threads);

  static bench_t b;
  b.loop = &loop;
  b.dec.data = &b;
  tb__dec_opts_t o = { 0 };
  o.work_items = (size_t)threads;
  o.weights = mode;
  o.no_prefix_cache = 1;  /* every prompt is new anyway */
  o.max_prefill_rows = 1024;
  /* Every row of the batch in every step: this measures the decoder's
   * products, not the server's turns. */
  o.max_decode_rows = (size_t)batch > 1024 ? (size_t)batch : 1024;
  size_t per_seq = tb__dec_blocks_needed(16, (size_t)prompt,
                                         &(tb__sampling_params_t){
                                             .num_samples = 1,
                                             .max_tokens = (size_t)tokens + 1 });
  size_t block_bytes = 2 * (size_t)cfg.num_layers * 16 *
                       (size_t)cfg.num_kv_heads * (size_t)cfg.head_dim *
                       sizeof(float);
  o.kv_bytes = (per_seq * (size_t)batch + 16) * block_bytes;
  int rc = tb__dec_open(&loop, &b.dec, &w, &o, on_done);
  if (rc != 0)
    die("decoder", rc);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (b.status != 0)
    die("decoder", b.status);

  result_t r1, rb;
  decode_run(&b, ads, nads, 1, prompt, tokens, reps, &r1);
  decode_run(&b, ads, nads, batch, prompt, tokens, reps, &rb);

  /* Bytes a batch-1 step reads: the matrices, the adapter, the keys and
   * values at the mean context of the timed steps. */
  const tb__model_config_t *c = &cfg;
  double lora_bytes = (double)loras[0].num_params * sizeof(float);
  double kv_bytes = (double)(prompt + tokens / 2) * c->num_layers * 2 *
                    c->num_kv_heads * c->head_dim * sizeof(float);
  double other = (double)c->hidden_size * (2 * c->num_layers + 2) *
                 sizeof(float);
  double bytes = (double)b.dec.dw.bytes + lora_bytes + kv_bytes + other;
  double limit = gbs * 1e9 / bytes;
  int bf16 = b.dec.dw.bf16;
  double matrix_bytes = (double)b.dec.dw.bytes;

  size_t phases = b.dec.fwd.num_phases + 1;
  double phase_us = coop_phase_us(&loop, phases, (uint32_t)threads,
                                  (size_t)threads);

  tb__dec_close(&b.dec, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  double sgemm_tps = sgemm_step_tps(&w, threads, batch);
  for (int i = 0; i < nads; i++)
    tb__lora_free(&loras[i]);
  tb__weights_free(&w);

  double t1 = -1, tb = -1;
  if (!skip_torch) {
    t1 = torch_tps(&cfg, threads, 1, prompt, tokens, reps);
    tb = torch_tps(&cfg, threads, batch, prompt, tokens < 32 ? tokens : 32,
                   reps);
  }

  double step_ms = 1e3 / r1.decode_tps;
  printf("model SmolLM2-135M shape, random weights (%s for decoding), LoRA "
         "rank %d on q,k,v,o,gate,up,down x %d adapter%s, %d threads, prompt "
         "%d, %d tokens\n", bf16 ? "bfloat16" : "float32", RANK, nads,
         nads > 1 ? "s" : "", threads, prompt, tokens);
  printf("read bandwidth (1 GiB, %d items): %.1f GB/s; a batch-1 step reads "
         "%.1f MB (matrices %.1f, adapter %.1f, KV %.1f): limit %.1f "
         "tokens/s\n", threads, gbs, bytes / 1e6, matrix_bytes / 1e6,
         lora_bytes / 1e6, kv_bytes / 1e6, limit);
  printf("tinkerbell batch 1: %.2f tokens/s (%.2f-%.2f), %.2f ms/token, "
         "%.3f of the limit; prefill %.0f tokens/s\n", r1.decode_tps,
         r1.decode_min, r1.decode_max, step_ms, r1.decode_tps / limit,
         r1.prefill_tps);
  printf("tinkerbell batch %d: %.1f tokens/s (%.1f-%.1f); prefill %.0f "
         "tokens/s\n", batch, rb.decode_tps, rb.decode_min, rb.decode_max,
         rb.prefill_tps);
  printf("sgemm ceiling batch %d: %.1f tokens/s (cblas_sgemm over the step's "
         "base products, float32, %d threads); ours %.3f of it\n", batch,
         sgemm_tps, threads, rb.decode_tps / sgemm_tps);
  printf("cooperative steps: %zu phases, %.2f us per phase with empty "
         "chunks, %.3f ms per step (%.1f%% of a batch-1 step)\n", phases,
         phase_us, phase_us * (double)phases / 1e3,
         100.0 * phase_us * (double)phases / 1e3 / step_ms);
  if (t1 > 0 && tb > 0)
    printf("pytorch: batch 1 %.2f tokens/s, batch %d %.1f tokens/s; ours / "
           "theirs: %.2fx, %.2fx\n", t1, batch, tb, r1.decode_tps / t1,
           rb.decode_tps / tb);
  else
    printf("pytorch: %s\n", skip_torch ? "skipped (--skip-torch)"
                                       : "not available");
  printf("BENCH sample threads=%d batch=%d adapters=%d weights=%s "
         "read_gbs=%.1f step_mb=%.1f limit_tps=%.1f b1_tps=%.2f "
         "b1_limit=%.3f b1_prefill_tps=%.0f bn_tps=%.1f torch_b1_tps=%.2f "
         "torch_bn_tps=%.1f ratio_torch_b1=%.2f ratio_torch_bn=%.2f "
         "coop_phase_us=%.2f coop_step_ms=%.3f sgemm_bn_tps=%.1f "
         "ratio_sgemm_bn=%.3f\n", threads, batch, nads,
         bf16 ? "bf16" : "f32", gbs, bytes / 1e6, limit, r1.decode_tps,
         r1.decode_tps / limit, r1.prefill_tps, rb.decode_tps, t1, tb,
         t1 > 0 ? r1.decode_tps / t1 : 0.0, tb > 0 ? rb.decode_tps / tb : 0.0,
         phase_us, phase_us * (double)phases / 1e3, sgemm_tps,
         rb.decode_tps / sgemm_tps);
  return 0;
}

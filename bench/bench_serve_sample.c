/*
 * The sampling benchmark through the server: `tinkerbell serve` in a child
 * process, the client library in this one on its own loop, as a user runs
 * them.  What it measures, each against its peer in the same run:
 *
 *   concurrent   --requests (64) sample requests of --samples (4) samples
 *                of --tokens (128) new tokens each, all submitted at
 *                once on one adapter: aggregate generated tokens/s, against
 *                the same kind of requests sent one at a time (only the
 *                first --sequential (8) of them, one after another: a
 *                rate, so the figures compare).  Goal: >= 10x.
 *   adapters     the same requests spread over --adapters (8) adapters in
 *                turn, against all on one adapter.  Goal: >= 0.8x.
 *   first token  a request of one sample with max_tokens 1 alone (median
 *                of 5), and while the concurrent requests decode (median
 *                of 9, each sent after a random pause of 0 to 400 ms, so
 *                that it comes at a random point of the step under way,
 *                as a user's request does; the slowest of them is near
 *                the worst case, a whole step under way; the first sent
 *                once /metrics shows every request
 *                admitted and enough steps run for their prefills to be
 *                done, counted from the decoder's rows per step and its
 *                prompts' share of them, at least half, so that the
 *                probes meet decode steps, not other prompts: a step of
 *                --decode-rows sample rows under way, then their own
 *                prefill;
 *                when /metrics after a probe shows that some had
 *                finished, the figure is marked as not taken under the
 *                whole load).  The probes go through a client of their
 *                own, as another user's would: in the client of the
 *                requests that decode, their result polls would wait
 *                behind those requests' held long polls.  Goal: <= 2x.
 *   client       --client-requests (400) requests of one sample of
 *                --client-tokens (16) tokens, all in flight at once: the
 *                CPU time of the thread that runs the client's loop
 *                (getrusage RUSAGE_THREAD, user + system, from the first
 *                submission to the last result) per completed request, its
 *                share of the wall time, and the server's tokens/s in that
 *                run: a client loop far from 100% busy is not what limits
 *                the server.
 *
 * Every request has its own random prompt of --prompt (64) tokens (fresh
 * ones in every run, so that no run finds another's prompt in the
 * server's prefix cache), a fixed seed, temperature 1 and no stop: each
 * sample must come back with exactly max_tokens tokens and the reason
 * "length", or the program fails.
 *
 * The model: the SmolLM2-135M shape with random weights, exactly bfloat16,
 * written once as a Hugging Face directory (config.json and a bfloat16
 * model.safetensors) into a temporary directory and served as `smol` with
 * --threads (2) and --kv-memory (2G: 64 requests x (64 + 4 x 128)
 * positions of float32 keys and values are about 1.7 GB), and
 * --decode-rows when given (the server's default, 32, otherwise): the
 * sample rows of one decode step, which trade the time to first token under
 * load against the aggregate tokens/s.  The adapters
 * are LoRA of rank 32 on q, k, v, o, gate, up and down, each trained one
 * step (so that B is not zero) and saved for the sampler.
 *
 * --model base serves the built-in model `base` instead (hidden 128, 4
 * layers, 272 tokens): a smoke run, for the tests, not figures to quote.
 *
 * The server: --tinkerbell PATH, else the build tree's src/cli/tinkerbell
 * or the installed bin/tinkerbell beside this program's directory.  It is
 * stopped and the temporary directory removed at the end, also when the
 * program fails.
 *
 * usage: bench_serve_sample [--tinkerbell PATH] [--model smollm|base]
 *          [--requests R]
 *          [--samples S] [--tokens T] [--prompt P] [--sequential K]
 *          [--adapters A] [--client-requests N] [--client-tokens T]
 *          [--threads N] [--kv-memory SIZE] [--decode-rows N]
 * Output: human lines, then one `BENCH serve_sample key=value ...` line.
 */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "bench_child.h"
#include "bench_model.h"
#include "engine/base_model.h"
#include "engine/decode.h"
#include "engine/hf_model.h"
#include "http/client.h"
#include "kernels/kernels.h"
#include "tinkerbell.h"
#include "tinkerbell/sampling_client.h"
#include "tinkerbell/training_client.h"

#define RANK 32
#define MAX_ADAPTERS 64
#define PROBES_ALONE 5
#define PROBES_LOADED 9
/* A loaded probe is sent after a pause drawn from 0 to this many ms. */
#define PROBE_JITTER_MS 400
/* The decoder's prompt rows per step at most (decode.h: max_prefill_rows,
 * default 256), and the sample rows of one step (--decode-rows, else
 * TB_DEC_DEFAULT_DECODE_ROWS). */
#define PREFILL_ROWS_PER_STEP 256
static int decode_rows = TB_DEC_DEFAULT_DECODE_ROWS;
static int decode_rows_given;

static uv_loop_t loop;
static char tmp_dir[64];
/* The model as the server names it, and its vocabulary. */
static const char *model_name = "smol";
static int vocab;

/* ------------------------------------------------------------ the server */

static const char *server_url;

/* At exit, also after a failure: no server left behind, no files. */
static void cleanup(void) {
  bench_child_kill();
  if (tmp_dir[0] != '\0') {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0)
      fprintf(stderr, "bench_serve_sample: could not remove %s\n", tmp_dir);
  }
}

static void fail(const char *what, const tb_error_t *err, int rc) {
  fprintf(stderr, "bench_serve_sample: %s: %s\n", what,
          err && err->message ? tb_error_message(err) : tb_strerror(rc));
  exit(1);
}

/* model_dir NULL: the built-in model. */
static void server_start(const char *exe, const char *model_dir,
                         const char *data_dir, int threads,
                         const char *kv_memory) {
  char model[PATH_MAX + 8], nthreads[16], rows[16];
  if (model_dir != NULL)
    snprintf(model, sizeof(model), "%s=%s", model_name, model_dir);
  else
    snprintf(model, sizeof(model), "%s", model_name);
  snprintf(nthreads, sizeof(nthreads), "%d", threads);
  snprintf(rows, sizeof(rows), "%d", decode_rows);
  char *args[] = { "--data-dir", (char *)data_dir, "--model", model,
                   "--threads", nthreads, "--kv-memory", (char *)kv_memory,
                   "--log-level", "warn",
                   decode_rows_given ? "--decode-rows" : NULL, rows, NULL };
  server_url = bench_child_start(&loop, "bench_serve_sample", exe, args);
}

/* ------------------------------------------------------------ plain GETs */

static tb__http_client_t http;

static void on_get(tb__http_client_req_t *req, int status) {
  *(int *)req->data = status == 0 ? 1 : status;
}

/* GET path of the server: its body (malloc'd) when it answers 200, else
 * NULL. */
static char *http_get(const char *path) {
  char url[256];
  snprintf(url, sizeof(url), "%s%s", server_url, path);
  tb__http_client_req_t req;
  tb__http_client_req_init(&req);
  int state = 0;
  req.data = &state;
  req.url = (tb_slice_t){ url, strlen(url) };
  req.timeout_ms = 10000;
  if (tb__http_client_send(&http, &req, on_get) != 0)
    fail(path, NULL, TB_EIO);
  while (state == 0)
    uv_run(&loop, UV_RUN_ONCE);
  char *body = NULL;
  if (state == 1 && req.response.status == 200) {
    body = xmalloc(req.response.body_len + 1);
    memcpy(body, req.response.body ? req.response.body : "",
           req.response.body_len);
    body[req.response.body_len] = '\0';
  }
  tb__http_client_req_free(&req);
  return body;
}

/* The value of one sample of /metrics (name with its labels), or -1. */
static long long metric(const char *body, const char *key) {
  const char *p = body ? strstr(body, key) : NULL;
  return p ? atoll(p + strlen(key)) : -1;
}

typedef struct decode_state_s {
  long long running, waiting, steps;
} decode_state_t;

static decode_state_t decode_state(void) {
  char *m = http_get("/metrics");
  char running[128], waiting[128], steps[128];
  snprintf(running, sizeof(running),
           "tinkerbell_decode_requests{model=\"%s\",state=\"running\"} ",
           model_name);
  snprintf(waiting, sizeof(waiting),
           "tinkerbell_decode_requests{model=\"%s\",state=\"waiting\"} ",
           model_name);
  snprintf(steps, sizeof(steps), "tinkerbell_decode_steps_total{model=\"%s\"} ",
           model_name);
  decode_state_t d = { metric(m, running), metric(m, waiting),
                       metric(m, steps) };
  free(m);
  if (d.running < 0 || d.waiting < 0 || d.steps < 0)
    fail("/metrics has no tinkerbell_decode_* of the model", NULL, TB_EPROTO);
  return d;
}

static void on_pause(uv_timer_t *t) { *(int *)t->data = 1; }

/* Runs the loop (the client's polls go on) for ms milliseconds. */
static void pause_ms(uint64_t ms) {
  uv_timer_t t;
  int fired = 0;
  uv_timer_init(&loop, &t);
  t.data = &fired;
  uv_timer_start(&t, on_pause, ms, 0);
  while (!fired)
    uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

/* ------------------------------------------------------------ the model */

static void write_model(const char *dir) {
  tb__model_config_t cfg = bench_smollm_config();
  tb__weights_t w;
  bench_random_weights(&w, &cfg);
  bench_round_bf16(&w);
  tb_error_t err = { 0 };
  int rc = tb__hf_save_as(dir, &w, NULL, 0, TB_ST_BF16, &err);
  if (rc != 0)
    fail("writing the model", &err, rc);
  tb__weights_free(&w);
}

/* ------------------------------------------------------------ requests */

typedef struct req_s {
  tb_future_t *f;
  double t0, t1;
  int done;
} req_t;

typedef struct shape_s {
  int requests, samples, tokens, prompt;
} shape_t;

static int n_open;  /* requests submitted and not yet completed */

static void on_sampled(tb_future_t *f, int status) {
  (void)status;
  req_t *r = f->data;
  r->t1 = now_s();
  r->done = 1;
  n_open--;
}

/* n random prompts of len tokens, new ones at every call. */
static tb_model_input_t *make_prompts(int n, int len) {
  static uint64_t state = 2026;
  tb_model_input_t *p = xmalloc((size_t)n * sizeof(*p));
  int32_t *toks = xmalloc((size_t)len * sizeof(*toks));
  for (int i = 0; i < n; i++) {
    for (int t = 0; t < len; t++)
      toks[t] = (int32_t)(tb__k_splitmix64(&state) % (uint64_t)vocab);
    p[i] = (tb_model_input_t){ 0 };
    if (tb_model_input_init(&p[i], toks, (size_t)len) != 0)
      fail("prompt", NULL, TB_ENOMEM);
  }
  free(toks);
  return p;
}

static void free_prompts(tb_model_input_t *p, int n) {
  for (int i = 0; i < n; i++)
    tb_model_input_clear(&p[i]);
  free(p);
}

static void submit(req_t *r, tb_sampling_client_t *s,
                   const tb_model_input_t *prompt, int samples, int tokens,
                   uint64_t seed) {
  tb_sample_params_t p;
  tb_sample_params_default(&p);
  p.max_tokens = tokens;
  p.has_seed = 1;
  p.seed = seed;
  p.temperature = 1.0;
  *r = (req_t){ 0 };
  r->t0 = now_s();
  int rc = tb_sampling_client_sample(s, prompt, (size_t)samples, &p, 0, 0,
                                     &r->f);
  if (rc != 0)
    fail("sample", NULL, rc);
  r->f->data = r;
  if (tb_future_set_callback(r->f, on_sampled) != 0)
    fail("sample callback", NULL, TB_EINVAL);
  n_open++;
}

static void wait_all(void) {
  while (n_open > 0)
    uv_run(&loop, UV_RUN_ONCE);
}

static long long cache_hit_tokens;

/* Checks that r returned samples samples of exactly tokens tokens each,
 * none stopped early; frees it and returns the tokens it generated. */
static long long check(req_t *r, int samples, int tokens) {
  if (r->f->status != 0)
    fail("sample", &r->f->error, r->f->status);
  const tb_sample_response_t *res =
      tb_future_result(r->f, &tb_result_sample_response);
  if (res == NULL || res->n_sequences != (size_t)samples) {
    fprintf(stderr, "bench_serve_sample: a request of %d samples returned "
                    "%zu\n", samples, res ? res->n_sequences : 0);
    exit(1);
  }
  long long n = 0;
  for (size_t i = 0; i < res->n_sequences; i++) {
    const tb_sampled_sequence_t *q = &res->sequences[i];
    if (q->n_tokens != (size_t)tokens ||
        q->stop_reason != TB_SAMPLE_STOP_REASON_LENGTH) {
      fprintf(stderr, "bench_serve_sample: a sample returned %zu tokens "
                      "(%s), not %d (length)\n", q->n_tokens,
              tb_sample_stop_reason_name(q->stop_reason), tokens);
      exit(1);
    }
    n += (long long)q->n_tokens;
  }
  cache_hit_tokens += res->prompt_cache_hit_tokens;
  tb_future_free(r->f);
  r->f = NULL;
  return n;
}

/* Aggregate generated tokens/s of sh.requests requests submitted at once,
 * request i on adapter i % nads. */
static double run_concurrent(tb_sampling_client_t *ads, int nads, shape_t sh,
                             uint64_t seed) {
  tb_model_input_t *prompts = make_prompts(sh.requests, sh.prompt);
  req_t *r = xmalloc((size_t)sh.requests * sizeof(*r));
  double t0 = now_s();
  for (int i = 0; i < sh.requests; i++)
    submit(&r[i], &ads[i % nads], &prompts[i], sh.samples, sh.tokens,
           seed + (uint64_t)i);
  wait_all();
  double t1 = now_s();
  long long n = 0;
  for (int i = 0; i < sh.requests; i++)
    n += check(&r[i], sh.samples, sh.tokens);
  if (n != (long long)sh.requests * sh.samples * sh.tokens) {
    fprintf(stderr, "bench_serve_sample: %lld tokens in all, expected %lld\n",
            n, (long long)sh.requests * sh.samples * sh.tokens);
    exit(1);
  }
  free(r);
  free_prompts(prompts, sh.requests);
  return (double)n / (t1 - t0);
}

/* Generated tokens/s of k such requests, one after another. */
static double run_sequential(tb_sampling_client_t *s, int k, shape_t sh,
                             uint64_t seed) {
  tb_model_input_t *prompts = make_prompts(k, sh.prompt);
  long long n = 0;
  double t0 = now_s();
  for (int i = 0; i < k; i++) {
    req_t r;
    submit(&r, s, &prompts[i], sh.samples, sh.tokens, seed + (uint64_t)i);
    wait_all();
    n += check(&r, sh.samples, sh.tokens);
  }
  double t1 = now_s();
  free_prompts(prompts, k);
  return (double)n / (t1 - t0);
}

/* Seconds from submission to the result of one sample of one token. */
static double first_token(tb_sampling_client_t *s, int prompt, uint64_t seed) {
  tb_model_input_t *p = make_prompts(1, prompt);
  req_t r;
  submit(&r, s, p, 1, 1, seed);
  while (!r.done)
    uv_run(&loop, UV_RUN_ONCE);
  double t = r.t1 - r.t0;
  check(&r, 1, 1);
  free_prompts(p, 1);
  return t;
}

typedef struct ttft_s {
  double alone, alone_min, alone_max;
  double loaded, loaded_min, loaded_max;
  int valid;  /* every load request still decoded after each probe */
  double load_tps;
} ttft_t;

/* Time to first token alone, then while sh's requests on s decode, of
 * probes sent through probe: another client, whose polls do not wait
 * behind those of the requests that decode. */
static void run_ttft(tb_sampling_client_t *s, tb_sampling_client_t *probe,
                     shape_t sh, uint64_t seed, ttft_t *out) {
  double a[PROBES_ALONE], b[PROBES_LOADED];
  for (int i = 0; i < PROBES_ALONE; i++)
    a[i] = first_token(probe, sh.prompt, seed + 1000 + (uint64_t)i);
  out->alone = median(a, PROBES_ALONE);
  out->alone_min = a[0];
  out->alone_max = a[PROBES_ALONE - 1];

  tb_model_input_t *prompts = make_prompts(sh.requests, sh.prompt);
  req_t *r = xmalloc((size_t)sh.requests * sizeof(*r));
  long long steps0 = decode_state().steps;
  double t0 = now_s();
  for (int i = 0; i < sh.requests; i++)
    submit(&r[i], s, &prompts[i], sh.samples, sh.tokens, seed + (uint64_t)i);
  /* Every request admitted, and steps enough for every prefill (the
   * decoder's prompt rows per step: the step's budget, what its sample
   * rows cost in prompt rows, at most 256, of which prompts get at least
   * half while samples decode) and a few decode steps after. */
  long long budget = (long long)decode_rows * TB_DEC_SAMPLE_ROW_COST;
  long long per_step = budget < PREFILL_ROWS_PER_STEP
                           ? budget : PREFILL_ROWS_PER_STEP;
  per_step = per_step / 2 > 0 ? per_step / 2 : 1;
  long long need =
      ((long long)sh.requests * sh.prompt + per_step - 1) / per_step + 4;
  out->valid = 0;
  while (n_open > 0) {
    decode_state_t d = decode_state();
    if (d.running >= sh.requests && d.waiting == 0 &&
        d.steps - steps0 >= need) {
      out->valid = 1;
      break;
    }
    pause_ms(20);
  }
  /* Each probe after a random pause, so that it comes at a random point
   * of the step under way, as a user's request does: sent back to back,
   * each would come just after a step began, always the worst case. */
  uint64_t jitter = seed * 0x9e3779b97f4a7c15ull + 7;
  for (int i = 0; i < PROBES_LOADED; i++) {
    pause_ms(tb__k_splitmix64(&jitter) % (PROBE_JITTER_MS + 1));
    b[i] = first_token(probe, sh.prompt, seed + 2000 + (uint64_t)i);
    if (decode_state().running < sh.requests)
      out->valid = 0;  /* some load request had finished by then */
  }
  wait_all();
  double t1 = now_s();
  long long n = 0;
  for (int i = 0; i < sh.requests; i++)
    n += check(&r[i], sh.samples, sh.tokens);
  out->load_tps = (double)n / (t1 - t0);
  out->loaded = median(b, PROBES_LOADED);
  out->loaded_min = b[0];
  out->loaded_max = b[PROBES_LOADED - 1];
  free(r);
  free_prompts(prompts, sh.requests);
}

typedef struct client_cost_s {
  double cpu_us_per_req, loop_share, tps, wall_s;
} client_cost_t;

static double thread_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* n requests of one sample of tokens tokens, all in flight: the CPU time
 * of this thread, which runs the client's loop, per completed request. */
static void run_client_cost(tb_sampling_client_t *s, int n, int tokens,
                            int prompt, uint64_t seed, client_cost_t *out) {
  tb_model_input_t *prompts = make_prompts(n, prompt);
  req_t *r = xmalloc((size_t)n * sizeof(*r));
  double c0 = thread_cpu_s(), t0 = now_s();
  for (int i = 0; i < n; i++)
    submit(&r[i], s, &prompts[i], 1, tokens, seed + (uint64_t)i);
  wait_all();
  double c1 = thread_cpu_s(), t1 = now_s();
  long long got = 0;
  for (int i = 0; i < n; i++)
    got += check(&r[i], 1, tokens);
  out->wall_s = t1 - t0;
  out->cpu_us_per_req = (c1 - c0) * 1e6 / n;
  out->loop_share = (c1 - c0) / (t1 - t0);
  out->tps = (double)got / (t1 - t0);
  free(r);
  free_prompts(prompts, n);
}

/* ------------------------------------------------------------ adapters */

static tb_service_client_t service;
static tb_training_client_t trainers[MAX_ADAPTERS];
static tb_sampling_client_t samplers[MAX_ADAPTERS];
static char *adapter0_path;
/* The probes of the time to first token: a client of their own. */
static tb_service_client_t probe_service;
static tb_sampling_client_t probe_sampler;
static int closing;

/* A rank-32 adapter on attention and MLP, one training step from its
 * start (B is zero until then), saved for the sampler. */
static void make_adapter(int i, size_t max_in_flight) {
  tb_lora_params_t lp;
  tb_lora_params_default(&lp);
  lp.rank = RANK;
  lp.has_seed = 1;
  lp.seed = 100 + (uint64_t)i;
  lp.train_attn = lp.train_mlp = 1;
  lp.train_unembed = 0;
  tb_error_t err = { 0 };
  int rc = tb_service_client_create_lora_training_client_sync(
      &service, &trainers[i], model_name, &lp, &err);
  if (rc != 0)
    fail("create_model", &err, rc);
  tb_train_datum_t d = { 0 };
  tb_model_input_t *p = make_prompts(1, 17);
  int32_t toks[17];
  tb_model_input_tokens(&p[0], toks);
  free_prompts(p, 1);
  if (tb_train_datum_init_next_token(&d, toks, NULL, 17) != 0)
    fail("datum", NULL, TB_ENOMEM);
  tb_forward_backward_output_t *fb = NULL;
  rc = tb_training_client_forward_backward_sync(&trainers[i], &d, 1,
                                                "cross_entropy", NULL, 0, &fb,
                                                &err);
  tb_train_datum_clear(&d);
  tb_forward_backward_output_free(fb);
  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  adam.learning_rate = 1e-3;
  rc = rc ? rc : tb_training_client_optim_step_sync(&trainers[i], &adam, NULL,
                                                    &err);
  if (rc != 0)
    fail("training step", &err, rc);
  char name[32], *path = NULL;
  snprintf(name, sizeof(name), "bench-%d", i);
  rc = tb_training_client_save_weights_for_sampler_sync(&trainers[i], name, 0,
                                                        &path, &err);
  rc = rc ? rc : tb_training_client_create_sampling_client_sync(
                     &trainers[i], path, &samplers[i], &err);
  if (rc != 0)
    fail("sampler", &err, rc);
  if (i == 0)
    adapter0_path = path;
  else
    free(path);
  tb_sampling_client_set_max_in_flight(&samplers[i], max_in_flight);
}

static void on_sampler_closed(tb_sampling_client_t *s) {
  (void)s;
  closing--;
}

static void on_trainer_closed(tb_training_client_t *t) {
  (void)t;
  closing--;
}

static void on_service_closed(tb_service_client_t *s) {
  (void)s;
  closing--;
}

static void on_http_closed(tb__http_client_t *c) {
  (void)c;
  closing--;
}

static void close_clients(int nads) {
  closing++;
  tb_sampling_client_close(&probe_sampler, on_sampler_closed);
  for (int i = 0; i < nads; i++) {
    closing += 2;
    tb_sampling_client_close(&samplers[i], on_sampler_closed);
    tb_training_client_close(&trainers[i], on_trainer_closed);
  }
  while (closing > 0)
    uv_run(&loop, UV_RUN_ONCE);
  closing += 3;
  tb_service_client_close(&probe_service, on_service_closed);
  tb_service_client_close(&service, on_service_closed);
  tb__http_client_close(&http, on_http_closed);
  while (closing > 0)
    uv_run(&loop, UV_RUN_ONCE);
}

/* ------------------------------------------------------------ main */

static int int_arg(const char *v, int lo, int hi, const char *name) {
  char *end;
  long n = strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || n < lo || n > hi) {
    fprintf(stderr, "bench_serve_sample: %s must be from %d to %d\n", name, lo,
            hi);
    exit(2);
  }
  return (int)n;
}

int main(int argc, char **argv) {
  const char *exe_opt = NULL, *kv_memory = "2G", *model = "smollm";
  shape_t sh = { 64, 4, 128, 64 };
  int sequential = 8, nads = 8, client_requests = 400, client_tokens = 16;
  int threads = 2;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL && strcmp(o, "--help") != 0) {
      fprintf(stderr, "bench_serve_sample: %s needs a value\n", o);
      return 2;
    }
    i++;
    if (strcmp(o, "--tinkerbell") == 0)
      exe_opt = v;
    else if (strcmp(o, "--model") == 0 &&
             (strcmp(v, "smollm") == 0 || strcmp(v, "base") == 0))
      model = v;
    else if (strcmp(o, "--kv-memory") == 0)
      kv_memory = v;
    else if (strcmp(o, "--requests") == 0)
      sh.requests = int_arg(v, 1, 100000, o);
    else if (strcmp(o, "--samples") == 0)
      sh.samples = int_arg(v, 1, 1000, o);
    else if (strcmp(o, "--tokens") == 0)
      sh.tokens = int_arg(v, 1, 4096, o);
    else if (strcmp(o, "--prompt") == 0)
      sh.prompt = int_arg(v, 1, 4096, o);
    else if (strcmp(o, "--sequential") == 0)
      sequential = int_arg(v, 1, 100000, o);
    else if (strcmp(o, "--adapters") == 0)
      nads = int_arg(v, 1, MAX_ADAPTERS, o);
    else if (strcmp(o, "--client-requests") == 0)
      client_requests = int_arg(v, 1, 100000, o);
    else if (strcmp(o, "--client-tokens") == 0)
      client_tokens = int_arg(v, 1, 4096, o);
    else if (strcmp(o, "--threads") == 0)
      threads = int_arg(v, 1, 256, o);
    else if (strcmp(o, "--decode-rows") == 0) {
      decode_rows = int_arg(v, 1, 65536, o);
      decode_rows_given = 1;
    }
    else {
      fprintf(stderr,
              "usage: bench_serve_sample [--tinkerbell PATH] "
              "[--model smollm|base] [--requests R] "
              "[--samples S] [--tokens T] [--prompt P] [--sequential K] "
              "[--adapters A] [--client-requests N] [--client-tokens T] "
              "[--threads N] [--kv-memory SIZE] [--decode-rows N]\n");
      return 2;
    }
  }
  if (sequential > sh.requests)
    sequential = sh.requests;
  char exe[PATH_MAX];
  bench_find_tinkerbell("bench_serve_sample", exe_opt, exe, sizeof(exe));
  signal(SIGPIPE, SIG_IGN);

  snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/tb-bench-serve-sample-XXXXXX");
  if (mkdtemp(tmp_dir) == NULL) {
    tmp_dir[0] = '\0';
    fail("mkdtemp", NULL, TB_EIO);
  }
  atexit(cleanup);
  bench_child_on_fatal_signals();
  char model_dir[128], data_dir[128];
  snprintf(model_dir, sizeof(model_dir), "%s/smol", tmp_dir);
  snprintf(data_dir, sizeof(data_dir), "%s/data", tmp_dir);
  int smollm = strcmp(model, "smollm") == 0;
  tb__model_config_t mc = bench_smollm_config();
  if (smollm) {
    write_model(model_dir);
  } else {
    tb__base_model_config(&mc);
    model_name = TB_BASE_MODEL_NAME;
  }
  vocab = mc.vocab_size;

  uv_loop_init(&loop);
  server_start(exe, smollm ? model_dir : NULL, data_dir, threads, kv_memory);
  if (tb__http_client_init(&loop, &http, NULL) != 0)
    fail("http client", NULL, TB_ENOMEM);
  char *health = http_get("/api/v1/healthz");
  if (health == NULL)
    fail("GET /api/v1/healthz", NULL, TB_EHTTP);
  free(health);
  tb_client_config_t cfg = { .base_url = server_url };
  tb_error_t err = { 0 };
  int rc = tb_service_client_init(&loop, &service, &cfg, &err);
  if (rc != 0)
    fail("service client", &err, rc);
  /* The model is announced once it is loaded. */
  for (double t0 = now_s();;) {
    tb_server_capabilities_t *caps = NULL;
    rc = tb_service_client_get_server_capabilities_sync(&service, &caps, &err);
    if (rc != 0)
      fail("get_server_capabilities", &err, rc);
    int found = 0;
    for (size_t i = 0; i < caps->n_models; i++)
      found |= caps->models[i].model_name != NULL &&
               strcmp(caps->models[i].model_name, model_name) == 0;
    tb_server_capabilities_free(caps);
    if (found)
      break;
    if (now_s() - t0 > 600 || bench_child_exited())
      fail("the server did not load the model", NULL, TB_ETIMEDOUT);
    pause_ms(100);
  }

  size_t in_flight = (size_t)(client_requests > sh.requests ? client_requests
                                                            : sh.requests);
  in_flight = in_flight > 400 ? in_flight : 400;
  for (int i = 0; i < nads; i++)
    make_adapter(i, in_flight);
  rc = tb_service_client_init(&loop, &probe_service, &cfg, &err);
  rc = rc ? rc : tb_service_client_create_sampling_client_sync(
                     &probe_service, &probe_sampler, adapter0_path, NULL, &err);
  if (rc != 0)
    fail("the probes' client", &err, rc);
  free(adapter0_path);
  /* The first sample of an adapter loads it on the server: not timed. */
  req_t *warm = xmalloc((size_t)nads * sizeof(*warm));
  tb_model_input_t *wp = make_prompts(1, sh.prompt);
  for (int i = 0; i < nads; i++)
    submit(&warm[i], &samplers[i], wp, 1, 2, 1);
  wait_all();
  for (int i = 0; i < nads; i++)
    check(&warm[i], 1, 2);
  free(warm);
  free_prompts(wp, 1);
  cache_hit_tokens = 0;

  printf("model %s, served by tinkerbell serve --threads %d --kv-memory "
         "%s --decode-rows %d%s; LoRA rank %d on q,k,v,o,gate,up,down; "
         "requests of %d samples x %d tokens, prompts of %d tokens, "
         "temperature 1, no stop\n",
         smollm ? "SmolLM2-135M shape, random bfloat16 weights"
                : "base (built in; a smoke run)",
         threads, kv_memory, decode_rows,
         decode_rows_given ? "" : " (its default)", RANK, sh.samples,
         sh.tokens, sh.prompt);
  fflush(stdout);
  double seq_tps = run_sequential(&samplers[0], sequential, sh, 1);
  printf("one at a time: %.1f tokens/s (the first %d requests, one after "
         "another)\n", seq_tps, sequential);
  fflush(stdout);
  double one_tps = run_concurrent(samplers, 1, sh, 1);
  printf("%d at once, one adapter: %.1f tokens/s in all, %.2fx one at a "
         "time (goal 10x)\n", sh.requests, one_tps, one_tps / seq_tps);
  fflush(stdout);
  double many_tps = run_concurrent(samplers, nads, sh, 1);
  printf("%d at once over %d adapters: %.1f tokens/s in all, %.2fx one "
         "adapter (goal 0.8x)\n", sh.requests, nads, many_tps,
         many_tps / one_tps);
  fflush(stdout);
  ttft_t tt;
  run_ttft(&samplers[0], &probe_sampler, sh, 1, &tt);
  printf("time to first token (1 sample, max_tokens 1): alone %.1f ms "
         "(%.1f-%.1f, median of %d), while %d requests decode %.1f ms "
         "(%.1f-%.1f, median of %d, each after a random pause)%s: "
         "%.2fx (goal 2x); those requests: "
         "%.1f tokens/s\n", tt.alone * 1e3, tt.alone_min * 1e3,
         tt.alone_max * 1e3, PROBES_ALONE, sh.requests, tt.loaded * 1e3,
         tt.loaded_min * 1e3, tt.loaded_max * 1e3, PROBES_LOADED,
         tt.valid ? "" : " (not all decoding throughout: too short a run)",
         tt.loaded / tt.alone, tt.load_tps);
  fflush(stdout);
  client_cost_t cc;
  run_client_cost(&samplers[0], client_requests, client_tokens, sh.prompt, 1,
                  &cc);
  printf("client: %d requests of 1 x %d tokens in flight at once: %.1f us "
         "CPU of the client's loop thread per request, %.2f%% of the wall "
         "time (%.2f s); the server %.1f tokens/s\n", client_requests,
         client_tokens, cc.cpu_us_per_req, 100 * cc.loop_share, cc.wall_s,
         cc.tps);
  if (cache_hit_tokens != 0)
    printf("note: %lld prompt tokens were found in the server's prefix "
           "cache\n", cache_hit_tokens);
  printf("BENCH serve_sample model=%s threads=%d decode_rows=%d requests=%d "
         "samples=%d tokens=%d prompt=%d adapters=%d sequential=%d seq_tps=%.1f one_tps=%.1f "
         "ratio_concurrent=%.2f many_tps=%.1f ratio_adapters=%.2f "
         "ttft_alone_ms=%.1f ttft_loaded_ms=%.1f ratio_ttft=%.2f "
         "ttft_valid=%d client_requests=%d client_cpu_us=%.1f "
         "client_loop_share=%.4f client_tps=%.1f\n", model, threads,
         decode_rows, sh.requests,
         sh.samples, sh.tokens, sh.prompt, nads, sequential, seq_tps, one_tps,
         one_tps / seq_tps, many_tps, many_tps / one_tps, tt.alone * 1e3,
         tt.loaded * 1e3, tt.loaded / tt.alone, tt.valid, client_requests,
         cc.cpu_us_per_req, cc.loop_share, cc.tps);
  fflush(stdout);

  close_clients(nads);
  bench_child_stop();
  if (uv_loop_close(&loop) != 0)
    fprintf(stderr, "bench_serve_sample: handles left on the loop\n");
  return 0;
}

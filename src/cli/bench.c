/*
 * tinkerbell bench: runs the benchmark programs one after the other (never
 * two at once: they measure a noisy machine) and prints one table of the
 * figures and their ratios against the peers each program measures in the
 * same run.
 *
 * Each program prints human lines, which pass through to the terminal,
 * and one machine-readable line "BENCH <name> key=value ..."; the table is
 * built from those lines alone, so a program is added by one entry below.
 *
 * The programs are looked for in --bench-dir, $TINKERBELL_BENCH_DIR, the
 * build tree beside this executable (build/bench for build/src/cli), then
 * the installed libexec directory.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "cli/cli.h"
#include "core/buf.h"

#ifndef TB_BENCH_LIBEXEC_DIR
#define TB_BENCH_LIBEXEC_DIR "/usr/local/libexec/tinkerbell"
#endif

/* One row of the table: the program, its arguments (full and --quick;
 * "@dir" stands for the benchmark directory, "@exe" for this command),
 * and how its BENCH line reads.  Templates name keys of the line in
 * braces: "{ms_per_step} ms/step". */
typedef struct bench_s {
  const char *name;
  const char *what;
  const char *program;      /* in the bench directory */
  const char *args[20];
  const char *quick_args[20];
  const char *ours;
  const char *peer;
  const char *ratio;
} bench_t;

static const bench_t benches[] = {
  { "http", "HTTP server, fixed response, wrk -c50", "http_vs_nginx.sh",
    { "@dir", "5", "50", "5", "--retrieve", "@exe" },
    { "@dir", "2", "50", "1", "--retrieve", "@exe" },
    "{tinkerbell} req/s, {cpu_us} us CPU/req",
    "nginx (1 worker): {nginx} req/s, {nginx_cpu_us} us", "{ratio}" },
  { "retrieve", "retrieve_future of a finished result, wrk -c50", "http_vs_nginx.sh",
    { NULL }, { NULL },
    "{retrieve} req/s, {retrieve_cpu_us} us CPU/req",
    "nginx {nginx} req/s; Flask server {flask} req/s",
    "{retrieve_ratio} of nginx, {flask_ratio}x Flask" },
  { "train-smollm", "training step, SmolLM2-135M shape (638.1 GFLOP)", "bench_train",
    { "--model", "smollm", "--steps", "3" }, { "--model", "smollm", "--steps", "1" },
    "{ms_per_step} ms/step, {gflops} GFLOP/s, {maxrss_mb} MB",
    "PyTorch {torch_ms} ms/step; sgemm {sgemm_gflops} GFLOP/s",
    "{ratio_torch}x PyTorch, {ratio_sgemm} of sgemm" },
  { "train-qwen3", "training step, Qwen3-0.6B shape (2655.7 GFLOP)", "bench_train",
    { "--model", "qwen3-0.6b", "--steps", "3" }, { "--model", "qwen3-0.6b", "--steps", "1" },
    "{ms_per_step} ms/step, {gflops} GFLOP/s, {maxrss_mb} MB",
    "PyTorch {torch_ms} ms/step; sgemm {sgemm_gflops} GFLOP/s",
    "{ratio_torch}x PyTorch, {ratio_sgemm} of sgemm" },
  { "train-base", "training step, base model", "bench_train",
    { "--model", "base", "--steps", "20" }, { "--model", "base", "--steps", "3" },
    "{ms_per_step} ms/step, {tokens_per_s} tokens/s", "PyTorch {torch_ms} ms/step",
    "{ratio_torch}x PyTorch" },
  { "sample", "decode, SmolLM2-135M shape, rank-32 LoRA, 2 threads", "bench_sample",
    { "--threads", "2", "--batch", "64", "--tokens", "64", "--reps", "3" },
    { "--threads", "2", "--batch", "8", "--tokens", "4", "--reps", "1" },
    "batch 1 {b1_tps} tokens/s ({b1_limit} of {limit_tps} at {read_gbs} GB/s), "
    "batch {batch} {bn_tps} tokens/s",
    "PyTorch: batch 1 {torch_b1_tps}, batch {batch} {torch_bn_tps} tokens/s; "
    "sgemm ceiling {sgemm_bn_tps}",
    "{ratio_torch_b1}x, {ratio_torch_bn}x PyTorch, {ratio_sgemm_bn} of sgemm" },
  { "serve-sample", "64 sample requests at once through the server", "bench_serve_sample",
    { "--tinkerbell", "@exe" },
    { "--tinkerbell", "@exe", "--model", "base", "--requests", "4", "--tokens", "8",
      "--sequential", "2", "--adapters", "2", "--client-requests", "16",
      "--kv-memory", "64M" },
    "{one_tps} tokens/s", "one at a time: {seq_tps} tokens/s", "{ratio_concurrent}x" },
  { "serve-adapters", "the same over 8 adapters", "bench_serve_sample",
    { NULL }, { NULL },
    "{many_tps} tokens/s", "all on one adapter: {one_tps} tokens/s", "{ratio_adapters}x" },
  { "serve-ttft", "time to first token while they decode", "bench_serve_sample",
    { NULL }, { NULL },
    "{ttft_loaded_ms} ms", "alone: {ttft_alone_ms} ms", "{ratio_ttft}x" },
  { "serve-client", "client loop, 400 sample requests in flight", "bench_serve_sample",
    { NULL }, { NULL },
    "{client_cpu_us} us CPU/request", "the server: {client_tps} tokens/s",
    "{client_loop_share} of a core" },
  { "pipeline", "training steps through the client, pipelined", "bench_pipeline",
    { "--steps", "20", "--users", "4" }, { "--steps", "3", "--users", "2" },
    "{pipe_sps} steps/s", "the sync pattern: {seq_sps} steps/s", "{pipe_ratio}x" },
  { "users", "several users training at once (aggregate)", "bench_pipeline",
    { NULL }, { NULL },
    "{users} users: {users_tps} tokens/s", "one user: {one_tps} tokens/s", "{users_ratio}x" },
  { "pipeline-10ms", "the same, server 10 ms away each way (proxy)", "bench_pipeline",
    { NULL }, { NULL },
    "{delay_pipe_sps} steps/s (light batch {light_ratio}x)",
    "the sync pattern: {delay_seq_sps} steps/s", "{delay_ratio}x" },
  { "futures", "pending futures of the client, 10k and 100k", "bench_client_futures",
    { "--futures", "10000,100000" }, { "--futures", "1000", "--seconds", "1" },
    "{n}: {bytes_per_future} B/future, {cpu_us_per_poll} us CPU/poll, {allocs_per_poll} allocs",
    "bare HTTP client: {raw_cpu_us} us/poll", "{ratio}x the bare client's CPU" },
  { "tokenizer", "tokenizer encode, Llama 3, mixed text, one thread", "bench_tokenizer",
    { "--seconds", "3", "--mb", "4" }, { "--seconds", "0.3", "--mb", "0.5" },
    "{mb_per_s} MB/s; tokenizer.json load: Qwen3 {load_qwen3_ms} ms, Llama 3 {load_llama3_ms} ms",
    "JavaScript (@huggingface/tokenizers): {js_mb_per_s} MB/s", "{ratio}x" },
  { NULL, NULL, NULL, { NULL }, { NULL }, NULL, NULL, NULL },
};

/* ------------------------------------------------------------ running */

typedef struct run_s {
  uv_process_t proc;
  uv_pipe_t out;
  tb__buf_t line;        /* the output line being read */
  char *bench_line;     /* the last "BENCH ..." line */
  int64_t exit_status;
  int term_signal;
  int open;
} run_t;

static void on_closed(uv_handle_t *h) {
  run_t *r = h->data;
  r->open--;
}

static void on_proc_exit(uv_process_t *p, int64_t status, int sig) {
  run_t *r = p->data;
  r->exit_status = status;
  r->term_signal = sig;
  uv_close((uv_handle_t *)p, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char mem[65536];
  buf->base = mem;
  buf->len = sizeof(mem);
}

static void take_line(run_t *r) {
  if (tb__buf_terminate(&r->line) != 0)
    return;
  if (strncmp(r->line.base, "BENCH ", 6) == 0) {
    free(r->bench_line);
    r->bench_line = tb__strndup(r->line.base, r->line.len);
  }
  r->line.len = 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  run_t *r = s->data;
  if (n < 0) {
    if (r->line.len > 0)
      take_line(r);
    uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  /* The program's lines reach the terminal as they come. */
  fwrite(buf->base, 1, (size_t)n, stdout);
  fflush(stdout);
  for (ssize_t i = 0; i < n; i++) {
    if (buf->base[i] == '\n')
      take_line(r);
    else
      tb__buf_append(&r->line, &buf->base[i], 1);
  }
}

/* Runs argv to its end; its BENCH line (malloc'd) or NULL. */
static char *run_program(uv_loop_t *loop, char **argv) {
  run_t r;
  memset(&r, 0, sizeof(r));
  r.exit_status = -1;
  uv_pipe_init(loop, &r.out, 0);
  r.out.data = &r;
  r.proc.data = &r;
  uv_stdio_container_t stdio[3] = {
    { .flags = UV_IGNORE },
    { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r.out },
    { .flags = UV_INHERIT_FD, .data.fd = 2 },
  };
  uv_process_options_t o = { .exit_cb = on_proc_exit, .file = argv[0], .args = argv,
                             .stdio_count = 3, .stdio = stdio };
  int rc = uv_spawn(loop, &r.proc, &o);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell bench: cannot run %s: %s\n", argv[0], uv_strerror(rc));
    uv_close((uv_handle_t *)&r.out, NULL);
    uv_close((uv_handle_t *)&r.proc, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return NULL;
  }
  r.open = 2;
  uv_read_start((uv_stream_t *)&r.out, on_alloc, on_read);
  uv_run(loop, UV_RUN_DEFAULT);
  tb__buf_free(&r.line);
  if (r.exit_status != 0 || r.term_signal != 0) {
    fprintf(stderr, "tinkerbell bench: %s %s %lld\n", argv[0],
            r.term_signal ? "killed by signal" : "exited with status",
            (long long)(r.term_signal ? r.term_signal : r.exit_status));
    free(r.bench_line);
    return NULL;
  }
  if (r.bench_line == NULL)
    fprintf(stderr, "tinkerbell bench: %s printed no BENCH line\n", argv[0]);
  return r.bench_line;
}

/* ------------------------------------------------------------ the table */

/* The value of key in a BENCH line, or NULL (a pointer into a static). */
static const char *value_of(const char *line, const char *key, size_t key_len) {
  static char val[64];
  for (const char *p = line; (p = strstr(p, " ")) != NULL; p++) {
    const char *k = p + 1;
    if (strncmp(k, key, key_len) == 0 && k[key_len] == '=') {
      const char *v = k + key_len + 1;
      size_t n = strcspn(v, " ");
      snprintf(val, sizeof(val), "%.*s", (int)(n < 63 ? n : 63), v);
      return val;
    }
  }
  return NULL;
}

/* Expands {key} from the BENCH line; a missing key reads "?". */
static void expand(tb__buf_t *out, const char *tmpl, const char *line) {
  out->len = 0;
  for (const char *p = tmpl; *p; p++) {
    const char *end = *p == '{' ? strchr(p, '}') : NULL;
    if (end == NULL) {
      tb__buf_append(out, p, 1);
      continue;
    }
    const char *v = value_of(line, p + 1, (size_t)(end - p - 1));
    tb__buf_append_str(out, v ? v : "?");
    p = end;
  }
  tb__buf_terminate(out);
}

static int bench_dir_has(const char *dir, const char *program) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%s", dir, program);
  return access(path, X_OK) == 0;
}

/* The first directory that holds the benchmark programs. */
static int find_bench_dir(const char *given, char *out, size_t cap) {
  const char *env = getenv("TINKERBELL_BENCH_DIR");
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  exe[n > 0 ? n : 0] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash != NULL)
    *slash = '\0';
  char beside[PATH_MAX + 16];
  snprintf(beside, sizeof(beside), "%s/../../bench", exe);
  const char *candidates[] = { given, env && env[0] ? env : NULL, beside,
                               TB_BENCH_LIBEXEC_DIR };
  for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
    if (candidates[i] != NULL && bench_dir_has(candidates[i], "bench_train")) {
      snprintf(out, cap, "%s", candidates[i]);
      return 0;
    }
  return -1;
}

static int selected(const char *only, const char *name) {
  if (only == NULL)
    return 1;
  size_t len = strlen(name);
  for (const char *p = only; *p;) {
    size_t n = strcspn(p, ",");
    if (n == len && strncmp(p, name, n) == 0)
      return 1;
    p += n + (p[n] == ',');
  }
  return 0;
}

enum { OPT_ONLY, OPT_QUICK, OPT_LIST, OPT_BENCH_DIR, OPT_HELP, OPT_COUNT };

static const tb__cli_opt_t bench_opts[OPT_COUNT + 1] = {
  [OPT_ONLY] = { "only", "NAMES", "run only these benchmarks (comma-separated;\n"
                                  "see --list) [all]" },
  [OPT_QUICK] = { "quick", NULL, "one short repetition each: a smoke run, not\n"
                                 "figures to quote" },
  [OPT_LIST] = { "list", NULL, "list the benchmarks and exit" },
  [OPT_BENCH_DIR] = { "bench-dir", "DIR", "where the benchmark programs are\n"
                                          "[TINKERBELL_BENCH_DIR, build tree, libexec]" },
  [OPT_HELP] = { "help", NULL, "print this help and exit" },
  [OPT_COUNT] = { NULL, NULL, NULL },
};

int tb__cli_bench(int argc, char **argv) {
  tb__cli_args_t a;
  tb__cli_args_init(&a, "bench", bench_opts, argc, argv);
  const char *only = NULL, *dir_opt = NULL, *value;
  int quick = 0, opt;
  while ((opt = tb__cli_next(&a, &value)) != TB__CLI_END) {
    switch (opt) {
      case OPT_ONLY: only = value; break;
      case OPT_QUICK: quick = 1; break;
      case OPT_BENCH_DIR: dir_opt = value; break;
      case OPT_LIST:
        for (const bench_t *b = benches; b->name; b++)
          printf("%-14s %s\n", b->name, b->what);
        return 0;
      case OPT_HELP:
        tb__cli_help(stdout, "tinkerbell bench [options]",
                     "Runs the benchmark programs one at a time and prints one table of\n"
                     "figures with their ratios against the peers measured in the same run\n"
                     "(nginx, PyTorch, the machine's sgemm).  Run it on a quiet machine.",
                     bench_opts);
        return 0;
      case TB__CLI_ARG:
        tb__cli_error(&a, "unexpected argument '%s'", value);
        return TB__CLI_USAGE;
      default:
        return TB__CLI_USAGE;
    }
  }
  for (const char *p = only; p && *p;) {
    size_t n = strcspn(p, ",");
    int known = 0;
    for (const bench_t *b = benches; b->name; b++)
      known |= strlen(b->name) == n && strncmp(b->name, p, n) == 0;
    if (!known) {
      tb__cli_error(&a, "--only: unknown benchmark '%.*s' (see --list)", (int)n, p);
      return TB__CLI_USAGE;
    }
    p += n + (p[n] == ',');
  }
  char dir[PATH_MAX];
  if (find_bench_dir(dir_opt, dir, sizeof(dir)) != 0) {
    tb__cli_error(&a, "no benchmark programs found%s%s", dir_opt ? " in " : "",
                  dir_opt ? dir_opt : " (give --bench-dir)");
    return TB__CLI_USAGE;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  size_t n_benches = sizeof(benches) / sizeof(benches[0]) - 1;
  char **lines = calloc(n_benches, sizeof(*lines));
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  exe[n > 0 ? n : 0] = '\0';
  int failed = 0;
  for (size_t i = 0; i < n_benches; i++) {
    const bench_t *b = &benches[i];
    /* A row without arguments reads the line of the row before it that
     * runs the same program (one run gives both rows). */
    if (b->args[0] == NULL)
      continue;
    int wanted = selected(only, b->name);
    for (size_t j = i + 1; j < n_benches && benches[j].args[0] == NULL; j++)
      wanted |= selected(only, benches[j].name);
    if (!wanted)
      continue;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, b->program);
    char *args[22];
    size_t k = 0;
    args[k++] = path;
    const char *const *extra = quick ? b->quick_args : b->args;
    for (size_t j = 0; extra[j] != NULL && k < 21; j++)
      args[k++] = strcmp(extra[j], "@dir") == 0   ? dir
                  : strcmp(extra[j], "@exe") == 0 ? exe
                                                  : (char *)extra[j];
    args[k] = NULL;
    printf("\n== %s: %s\n", b->name, b->what);
    fflush(stdout);
    lines[i] = run_program(&loop, args);
    failed |= lines[i] == NULL;
  }
  uv_loop_close(&loop);

  printf("\n%-48s | %-44s | %-46s | %s\n", "benchmark", "Tinkerbell", "peer", "ratio");
  tb__buf_t ours = TB_BUF_INIT, peer = TB_BUF_INIT, ratio = TB_BUF_INIT;
  for (size_t i = 0; i < n_benches; i++) {
    const bench_t *b = &benches[i];
    if (!selected(only, b->name))
      continue;
    const char *line = lines[i];
    for (size_t j = i; line == NULL && benches[j].args[0] == NULL && j > 0; j--)
      line = lines[j - 1];
    if (line == NULL) {
      printf("%-48s | %-44s | %-46s | %s\n", b->what, "(failed)", "", "");
      continue;
    }
    expand(&ours, b->ours, line);
    expand(&peer, b->peer, line);
    expand(&ratio, b->ratio, line);
    printf("%-48s | %-44s | %-46s | %s\n", b->what, ours.base, peer.base, ratio.base);
  }
  for (size_t i = 0; i < n_benches; i++)
    free(lines[i]);
  tb__buf_free(&ours);
  tb__buf_free(&peer);
  tb__buf_free(&ratio);
  free(lines);
  if (quick)
    printf("\n(--quick: one short repetition each; not figures to quote)\n");
  return failed ? 1 : 0;
}

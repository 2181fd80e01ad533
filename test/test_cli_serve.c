/*
 * `tinkerbell serve` as a user runs it: the built command (TINKERBELL_EXE,
 * set by meson) in a child process, its help, its refusals of bad
 * command lines (exit 2, one line naming the option), the URL line on
 * stdout with --port 0, requests over loopback, request logs on stderr,
 * API keys, a port already taken (exit 1), and a graceful exit 0 on
 * SIGTERM and SIGINT.
 */
#define _GNU_SOURCE  /* nftw, memmem */
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>

/* The raw HTTP client of the server tests; its in-process server helpers
 * are not used here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "test_server_client.h"
#pragma GCC diagnostic pop

#include "cli/cli.h"
#include "engine/base_model.h"
#include "http/client.h"
#include "http/tls.h"
#include "test_tls_certs.h"

extern char **environ;

/* ------------------------------------------------------------ child */

typedef struct proc_s {
  uv_process_t proc;
  uv_pipe_t out, err;
  tb__buf_t out_buf, err_buf;
  int exited, open_handles;
  pid_t pid;
  int64_t exit_status;
  int term_signal;
  uint64_t exited_at;
} proc_t;

static char tmp_dir[64];

/* Children still running: a failed assertion (abort) kills them, so that
 * a failing test leaves no server behind. */
#define MAX_CHILDREN 4
static volatile pid_t children[MAX_CHILDREN];

static void on_abort_signal(int sig) {
  for (int i = 0; i < MAX_CHILDREN; i++)
    if (children[i] > 0)
      kill(children[i], SIGKILL);
  signal(sig, SIG_DFL);
  raise(sig);
}

static void track_child(pid_t pid, pid_t replace) {
  for (int i = 0; i < MAX_CHILDREN; i++)
    if (children[i] == replace) {
      children[i] = pid;
      return;
    }
  ASSERT(0 && "more children than MAX_CHILDREN");
}

static double timeout_scale(void) {
  const char *s = getenv("TB_TEST_TIMEOUT_SCALE");
  return s != NULL && atof(s) > 0 ? atof(s) : 1.0;
}

static void on_handle_closed(uv_handle_t *h) {
  proc_t *p = h->data;
  p->open_handles--;
}

static void on_exit_cb(uv_process_t *h, int64_t status, int sig) {
  proc_t *p = h->data;
  p->exited = 1;
  p->exit_status = status;
  p->term_signal = sig;
  p->exited_at = uv_now(&loop);
  track_child(0, p->pid);
  uv_close((uv_handle_t *)h, on_handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  proc_t *p = h->data;
  tb__buf_t *b = (uv_pipe_t *)h == &p->out ? &p->out_buf : &p->err_buf;
  ASSERT_OK(tb__buf_reserve(b, 4096 + 1));
  buf->base = b->base + b->len;
  buf->len = b->cap - b->len - 1;  /* room for a NUL */
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  proc_t *p = s->data;
  tb__buf_t *b = (uv_pipe_t *)s == &p->out ? &p->out_buf : &p->err_buf;
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_handle_closed);
    return;
  }
  b->len += (size_t)n;
  b->base[b->len] = '\0';
}

/* The environment without the variables a test sets itself. */
static char **child_env(const char *const *extra) {
  size_t n = 0, k = 0;
  while (environ[n] != NULL)
    n++;
  while (extra != NULL && extra[k] != NULL)
    k++;
  char **env = xmalloc((n + k + 1) * sizeof(*env));
  size_t j = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "TINKERBELL_LOG=", 15) != 0 &&
        strncmp(environ[i], "UV_THREADPOOL_SIZE=", 19) != 0)
      env[j++] = environ[i];
  for (size_t i = 0; i < k; i++)
    env[j++] = (char *)extra[i];
  env[j] = NULL;
  return env;
}

/* Starts `tinkerbell ARGS...` (args end with NULL) with stdout and stderr
 * read into buffers; env adds "NAME=value" strings (or NULL). */
static proc_t *spawn(const char *const *args, const char *const *env) {
  const char *exe = getenv("TINKERBELL_EXE");
  if (exe == NULL)
    fprintf(stderr, "TINKERBELL_EXE is not set (meson test sets it)\n");
  ASSERT(exe != NULL);
  size_t n = 0;
  while (args[n] != NULL)
    n++;
  char **argv = xmalloc((n + 2) * sizeof(*argv));
  argv[0] = (char *)exe;
  for (size_t i = 0; i < n; i++)
    argv[i + 1] = (char *)args[i];
  argv[n + 1] = NULL;
  proc_t *p = calloc(1, sizeof(*p));
  ASSERT(p != NULL);
  p->proc.data = p->out.data = p->err.data = p;
  ASSERT_OK(uv_pipe_init(&loop, &p->out, 0));
  ASSERT_OK(uv_pipe_init(&loop, &p->err, 0));
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&p->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&p->err;
  char **envp = child_env(env);
  uv_process_options_t o = { 0 };
  o.file = exe;
  o.args = argv;
  o.env = envp;
  o.exit_cb = on_exit_cb;
  o.stdio = stdio;
  o.stdio_count = 3;
  signal(SIGABRT, on_abort_signal);
  ASSERT_OK(uv_spawn(&loop, &p->proc, &o));
  p->pid = p->proc.pid;
  track_child(p->pid, 0);
  p->open_handles = 3;
  ASSERT_OK(uv_read_start((uv_stream_t *)&p->out, on_alloc, on_read));
  ASSERT_OK(uv_read_start((uv_stream_t *)&p->err, on_alloc, on_read));
  free(envp);
  free(argv);
  return p;
}

/* Runs until the child exited and its pipes closed. */
static void wait_exit(proc_t *p) {
  RUN_UNTIL(p->open_handles == 0);
}

static void proc_free(proc_t *p) {
  ASSERT_EQ_INT(p->open_handles, 0);
  tb__buf_free(&p->out_buf);
  tb__buf_free(&p->err_buf);
  free(p);
}

static const char *out_of(proc_t *p) {
  return p->out_buf.len > 0 ? p->out_buf.base : "";
}

static const char *err_of(proc_t *p) {
  return p->err_buf.len > 0 ? p->err_buf.base : "";
}

/* Runs a command to its end. */
static proc_t *run_to_end(const char *const *args) {
  proc_t *p = spawn(args, NULL);
  wait_exit(p);
  return p;
}

/* Starts serve with args and waits for the URL line; sets port. */
static proc_t *serve(const char *const *args, const char *const *env) {
  proc_t *p = spawn(args, env);
  const char *url;
  while ((url = strstr(out_of(p), "listening on http")) == NULL ||
         strchr(url, '\n') == NULL) {
    if (p->exited) {
      wait_exit(p);
      fprintf(stderr, "serve exited with %d before listening; stderr:\n%s\n",
              (int)p->exit_status, err_of(p));
    }
    ASSERT(!p->exited);
    uv_run(&loop, UV_RUN_ONCE);
  }
  const char *colon = strrchr(url, ':');
  port = atoi(colon + 1);
  ASSERT_GT(port, 0);
  return p;
}

/* Sends sig and waits for the exit, which must be 0 and prompt. */
static void stop_with(proc_t *p, int sig) {
  uint64_t sent = uv_now(&loop);
  ASSERT_OK(uv_process_kill(&p->proc, sig));
  wait_exit(p);
  if (p->exit_status != 0 || p->term_signal != 0)
    fprintf(stderr, "serve stderr:\n%s\n", err_of(p));
  ASSERT_EQ_INT(p->term_signal, 0);
  ASSERT_EQ_INT(p->exit_status, 0);
  ASSERT_LT(p->exited_at - sent, (uint64_t)(10000 * timeout_scale()));
}

static void setup(void) {
  ASSERT_OK(uv_loop_init(&loop));
  strcpy(tmp_dir, "/tmp/tb-cli-XXXXXX");
  ASSERT(mkdtemp(tmp_dir) != NULL);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

static void teardown(void) {
  ASSERT_OK(nftw(tmp_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS));
  ASSERT_LOOP_CLOSE(&loop);
}

static char *in_tmp(const char *name) {
  char *path = xmalloc(strlen(tmp_dir) + strlen(name) + 2);
  sprintf(path, "%s/%s", tmp_dir, name);
  return path;
}

/* ------------------------------------------------------------ tests */

/* ------------------------------------------------------------ parser */

/* The option parser of the sub-commands (src/cli/options.c) on its own. */
TEST(option_parser) {
  static const tb__cli_opt_t opts[] = {
    { "size", "SIZE", "a size" },
    { "verbose", NULL, "a flag" },
    { "help", NULL, "help" },
    { NULL, NULL, NULL },
  };
  char *argv[] = { "x", "in.jsonl", "--size=3M", "--verbose", "--size", "-7", "--",
                   "--verbose", "-", NULL };
  tb__cli_args_t a;
  tb__cli_args_init(&a, "x", opts, 9, argv);
  const char *v;
  ASSERT_EQ_INT(tb__cli_next(&a, &v), TB__CLI_ARG);
  ASSERT_STR_EQ(v, "in.jsonl");
  ASSERT_EQ_INT(tb__cli_next(&a, &v), 0);
  ASSERT_STR_EQ(v, "3M");
  ASSERT_EQ_INT(tb__cli_next(&a, &v), 1);
  ASSERT(v == NULL);
  ASSERT_EQ_INT(tb__cli_next(&a, &v), 0);
  ASSERT_STR_EQ(v, "-7");  /* a value may start with '-' */
  /* After "--" everything is an argument. */
  ASSERT_EQ_INT(tb__cli_next(&a, &v), TB__CLI_ARG);
  ASSERT_STR_EQ(v, "--verbose");
  ASSERT_EQ_INT(tb__cli_next(&a, &v), TB__CLI_ARG);
  ASSERT_STR_EQ(v, "-");
  ASSERT_EQ_INT(tb__cli_next(&a, &v), TB__CLI_END);

  char *help[] = { "x", "-h", "--verb", NULL };
  tb__cli_args_init(&a, "x", opts, 3, help);
  ASSERT_EQ_INT(tb__cli_next(&a, &v), 2);
  ASSERT_EQ_INT(tb__cli_next(&a, &v), TB__CLI_ERROR);  /* no abbreviations */

  static const struct {
    const char *s;
    uint64_t want;  /* 0: refused */
  } sizes[] = {
    { "1024", 1024 }, { "1k", 1024 }, { "2K", 2048 }, { "1KiB", 1024 }, { "1kB", 1024 },
    { "3M", 3 << 20 }, { "3MiB", 3 << 20 }, { "1G", 1 << 30 }, { "5B", 5 },
    { "", 0 }, { "k", 0 }, { "1x", 0 }, { "-1", 0 }, { "+1", 0 }, { " 1", 0 },
    { "1.5M", 0 }, { "0x10", 0 }, { "17179869184G", 0 }, { "99999999999999999999", 0 },
  };
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    uint64_t got = 0;
    int rc = tb__cli_size(&a, "size", sizes[i].s, 1, UINT64_MAX, &got);
    if (sizes[i].want == 0) {
      ASSERT_EQ_INT(rc, -1);
    } else {
      ASSERT_OK(rc);
      ASSERT_EQ_INT(got, sizes[i].want);
    }
  }
  uint64_t u;
  ASSERT_OK(tb__cli_uint(&a, "n", "18446744073709551615", 0, UINT64_MAX, &u));
  ASSERT(u == UINT64_MAX);
  ASSERT_EQ_INT(tb__cli_uint(&a, "n", "18446744073709551616", 0, UINT64_MAX, &u), -1);
  ASSERT_EQ_INT(tb__cli_uint(&a, "n", "5", 6, 9, &u), -1);
  double d;
  ASSERT_OK(tb__cli_number(&a, "n", "2.5e1", 0, 100, &d));
  ASSERT_NEAR(d, 25, 0, 0);
  ASSERT_EQ_INT(tb__cli_number(&a, "n", "1e999", 0, 1e300, &d), -1);
  ASSERT_EQ_INT(tb__cli_number(&a, "n", "3 ", 0, 100, &d), -1);
}

TEST(help_lists_every_option) {
  setup();
  proc_t *p = run_to_end((const char *[]){ "serve", "--help", NULL });
  ASSERT_EQ_INT(p->exit_status, 0);
  static const char *const opts[] = {
    "--host ADDR", "--port PORT", "--data-dir DIR", "--model SPEC", "--api-keys FILE",
    "--threads N", "--long-poll-ms MS", "--session-timeout-ms MS", "--result-grace-ms MS",
    "--result-ttl-ms MS", "--max-result-bytes SIZE", "--rate-limit RPS", "--rate-burst N",
    "--max-models-per-user N", "--max-body SIZE", "--max-body-memory SIZE",
    "--request-timeout-ms MS", "--max-connections N", "--decode-rows N", "--log-level LEVEL",
    "--tls-cert FILE",
    "--tls-key FILE", "--help",
  };
  for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
    ASSERT_STR_CONTAINS(out_of(p), opts[i]);
  ASSERT_STR_CONTAINS(out_of(p), "usage: tinkerbell serve [options]");
  ASSERT_STR_CONTAINS(out_of(p), "[./tinkerbell-data]");
  /* Every line fits a terminal of 80 columns. */
  for (const char *l = out_of(p); *l != '\0';) {
    const char *nl = strchr(l, '\n');
    ASSERT(nl != NULL);
    ASSERT_LE(nl - l, 80);
    l = nl + 1;
  }
  ASSERT_STR_EQ(err_of(p), "");
  proc_free(p);

  p = run_to_end((const char *[]){ "serve", "-h", NULL });
  ASSERT_EQ_INT(p->exit_status, 0);
  ASSERT_STR_CONTAINS(out_of(p), "--max-body SIZE");
  proc_free(p);

  /* The command's own help names serve. */
  p = run_to_end((const char *[]){ "--help", NULL });
  ASSERT_EQ_INT(p->exit_status, 0);
  ASSERT_STR_CONTAINS(out_of(p), "  serve ");
  proc_free(p);
  p = run_to_end((const char *[]){ "serv", NULL });
  ASSERT_EQ_INT(p->exit_status, 2);
  ASSERT_STR_CONTAINS(err_of(p), "unknown command 'serv'");
  proc_free(p);
  teardown();
}

TEST(bad_options_exit_2) {
  setup();
  char *file = in_tmp("a-file");
  FILE *f = fopen(file, "w");
  ASSERT(f != NULL);
  fclose(f);
  char *data = in_tmp("data");
  const char *keys_missing = "/nonexistent/keys";
  /* A FIFO nobody writes to: opening it for reading would wait forever. */
  char *fifo = in_tmp("a-fifo");
  ASSERT_EQ_INT(mkfifo(fifo, 0600), 0);
  char model_not_hf[96], model_file[96];
  snprintf(model_not_hf, sizeof(model_not_hf), "x=%s", tmp_dir);
  snprintf(model_file, sizeof(model_file), "x=%s", file);
  struct {
    const char *args[6];
    const char *message;
  } cases[] = {
    { { "--port", "70000" }, "--port: expected an integer from 0 to 65535, got '70000'" },
    { { "--port=abc" }, "--port: expected an integer from 0 to 65535, got 'abc'" },
    { { "--port", "-1" }, "--port: expected an integer" },
    { { "--port" }, "--port needs a value: --port PORT" },
    { { "--frobnicate", "1" }, "unknown option '--frobnicate'" },
    { { "--por", "1" }, "unknown option '--por'" },
    { { "-x" }, "unknown option '-x'" },
    { { "extra" }, "unexpected argument 'extra'" },
    { { "--help=yes" }, "--help takes no value" },
    { { "--threads", "0" }, "--threads: expected an integer from 1 to 1024, got '0'" },
    { { "--threads", "2x" }, "--threads: expected an integer" },
    { { "--long-poll-ms", "0" }, "--long-poll-ms: expected an integer from 1" },
    { { "--session-timeout-ms", "1e3" }, "--session-timeout-ms: expected an integer" },
    { { "--result-grace-ms", "1000" }, "--result-grace-ms: expected an integer from 120000" },
    { { "--result-ttl-ms", "" }, "--result-ttl-ms: expected an integer" },
    { { "--max-result-bytes", "1k" }, "--max-result-bytes: expected a size in bytes" },
    { { "--rate-limit", "-1" }, "--rate-limit: expected a number from 0" },
    { { "--rate-limit", "nan" }, "--rate-limit: expected a number" },
    { { "--rate-limit", "inf" }, "--rate-limit: expected a number" },
    { { "--rate-burst", "5" }, "--rate-burst needs --rate-limit" },
    { { "--rate-limit", "2", "--rate-burst", "0.5" }, "--rate-burst: expected a number from 1" },
    { { "--max-models-per-user", "many" }, "--max-models-per-user: expected an integer" },
    { { "--max-body", "12Q" }, "--max-body: expected a size in bytes from 1024" },
    { { "--max-body", "100" }, "got '100'" },
    { { "--max-body", "99999999999G" }, "--max-body: expected a size" },
    { { "--max-body-memory", "1x" }, "--max-body-memory: expected a size" },
    { { "--max-body", "2M", "--max-body-memory", "1M" },
      "--max-body-memory must be at least --max-body (2097152 bytes)" },
    { { "--max-body-memory", "32M" }, "--max-body-memory must be at least --max-body" },
    { { "--request-timeout-ms", "0" }, "--request-timeout-ms: expected an integer from 1" },
    { { "--max-connections", "none" }, "--max-connections: expected an integer" },
    { { "--decode-rows", "0" }, "--decode-rows: expected an integer from 1" },
    { { "--decode-rows", "65537" }, "--decode-rows: expected an integer from 1 to 65536" },
    { { "--model", "nonesuch" }, "--model nonesuch: a model is base (the built-in model) or "
                                 "NAME=HF_DIR" },
    { { "--model", "x=" }, "--model x=: expected NAME=HF_DIR with a name and a directory" },
    { { "--model", "=/tmp" }, "--model =/tmp: expected NAME=HF_DIR" },
    { { "--model", "x=/nonexistent/model" },
      "--model x=/nonexistent/model: /nonexistent/model: No such file or directory" },
    { { "--model", "base", "--model", "base" }, "--model base: the name base is given twice" },
    { { "--model", model_not_hf }, "no config.json in " },
    { { "--model", model_file }, "is not a directory" },
    { { "--host", "example.org" }, "--host: expected an IP address such as 127.0.0.1" },
    { { "--log-level", "loud" }, "--log-level: expected debug, info, warn, error or off" },
    { { "--data-dir", "" }, "--data-dir: expected a directory" },
    { { "--data-dir", file }, "Not a directory" },
    { { "--api-keys", keys_missing }, "--api-keys /nonexistent/keys: " },
    { { "--api-keys", fifo }, "a-fifo is not a regular file" },
    { { "--tls-cert", fifo, "--tls-key", fifo }, "a-fifo: not a regular file" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *args[12] = { "serve", "--port", "0" };
    size_t n = 3;
    /* Never the working directory's ./tinkerbell-data. */
    if (cases[i].args[0] == NULL || strcmp(cases[i].args[0], "--data-dir") != 0) {
      args[n++] = "--data-dir";
      args[n++] = data;
    }
    for (size_t j = 0; j < 6 && cases[i].args[j] != NULL; j++)
      args[n++] = cases[i].args[j];
    args[n] = NULL;
    proc_t *p = run_to_end(args);
    if (p->exit_status != 2 || strstr(err_of(p), cases[i].message) == NULL)
      fprintf(stderr, "case %zu (%s %s): exit %d, stderr: %s\n", i, cases[i].args[0],
              cases[i].args[1] ? cases[i].args[1] : "", (int)p->exit_status, err_of(p));
    ASSERT_EQ_INT(p->exit_status, 2);
    ASSERT_STR_CONTAINS(err_of(p), cases[i].message);
    /* The parser's refusals point to the help; a directory or a keys
     * file that cannot be used is a fact about the file instead. */
    if (strstr(cases[i].message, "--data-dir ") == NULL &&
        strstr(cases[i].message, "Not a directory") == NULL &&
        strstr(cases[i].message, "--api-keys ") == NULL &&
        strstr(cases[i].message, "not a regular file") == NULL)
      ASSERT_STR_CONTAINS(err_of(p), "Run 'tinkerbell serve --help'");
    ASSERT_STR_EQ(out_of(p), "");  /* never a URL line */
    proc_free(p);
  }
  free(file);
  free(fifo);
  free(data);
  teardown();
}

TEST(serves_until_sigterm) {
  setup();
  char *data = in_tmp("a/b/data");  /* made with its parents */
  proc_t *p = serve((const char *[]){ "serve", "--port", "0", "--data-dir", data,
                                      "--threads", "2", NULL },
                    NULL);
  ASSERT_STR_CONTAINS(out_of(p), "tinkerbell serve: listening on http://127.0.0.1:");
  struct stat st;
  ASSERT_OK(stat(data, &st));
  ASSERT(S_ISDIR(st.st_mode));

  hc_expect("GET", "/api/v1/healthz", NULL, NULL, 200, "{\"status\":\"ok\"}");
  hc_t *c = hc_do("GET", "/", NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  json_t *v = hc_json(c);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "name")), "Tinkerbell");
  ASSERT_GT(json_array_size(json_object_get(v, "endpoints")), 10);
  ASSERT_STR_CONTAINS(c->body, "\"path\":\"/api/v1/create_model\"");
  ASSERT_STR_CONTAINS(c->body, "\"path\":\"/retrieve_future\"");
  json_decref(v);
  hc_free(c);
  hc_expect("GET", "/api/v1/get_server_capabilities", NULL, NULL, 200,
            "\"model_name\":\"base\"");
  hc_expect("GET", "/nowhere", NULL, NULL, 404, "no route for GET /nowhere");
  hc_expect("GET", "/metrics", NULL, NULL, 200,
            "tinkerbell_http_requests_total{method=\"GET\",route=\"/api/v1/healthz\","
            "status=\"200\"} 1\n");

  stop_with(p, SIGTERM);
  /* One line per request at info level, which serve shows by default. */
  ASSERT_STR_CONTAINS(err_of(p), " info  GET /api/v1/healthz 200 ");
  ASSERT_STR_CONTAINS(err_of(p), " info  GET /nowhere 404 ");
  ASSERT_STR_CONTAINS(err_of(p), "SIGTERM: closing");
  /* stdout holds the URL line alone. */
  ASSERT_EQ_INT(strchr(out_of(p), '\n') - out_of(p) + 1, (long)strlen(out_of(p)));
  proc_free(p);
  free(data);
  teardown();
}

TEST(sigint_closes_gracefully_and_log_level) {
  setup();
  char *data = in_tmp("data");
  /* TINKERBELL_LOG=warn silences the request lines... */
  proc_t *p = serve((const char *[]){ "serve", "--port=0", "--data-dir", data, NULL },
                    (const char *[]){ "TINKERBELL_LOG=warn", NULL });
  hc_expect("GET", "/healthz", NULL, NULL, 200, "ok");
  stop_with(p, SIGINT);
  ASSERT(strstr(err_of(p), "GET /healthz") == NULL);
  proc_free(p);
  /* ...and --log-level wins over it. */
  p = serve((const char *[]){ "serve", "--port", "0", "--data-dir", data, "--log-level",
                              "debug", NULL },
            (const char *[]){ "TINKERBELL_LOG=off", NULL });
  hc_expect("GET", "/healthz", NULL, NULL, 200, "ok");
  stop_with(p, SIGINT);
  ASSERT_STR_CONTAINS(err_of(p), "GET /healthz 200");
  ASSERT_STR_CONTAINS(err_of(p), "SIGINT: closing");
  proc_free(p);
  /* A level that is none falls back to info, and says so. */
  p = serve((const char *[]){ "serve", "--port", "0", "--data-dir", data, NULL },
            (const char *[]){ "TINKERBELL_LOG=verbose", NULL });
  hc_expect("GET", "/healthz", NULL, NULL, 200, "ok");
  stop_with(p, SIGTERM);
  ASSERT_STR_CONTAINS(err_of(p), "TINKERBELL_LOG=verbose is not debug, info, warn, error "
                                 "or off; logging at info");
  ASSERT_STR_CONTAINS(err_of(p), "GET /healthz 200");
  proc_free(p);
  free(data);
  teardown();
}

TEST(api_keys_file) {
  setup();
  char *data = in_tmp("data");
  char *keys = in_tmp("keys");
  FILE *f = fopen(keys, "w");
  ASSERT(f != NULL);
  fputs("# test keys\ntml-alice-key alice\n", f);
  fclose(f);
  proc_t *p = serve((const char *[]){ "serve", "--port", "0", "--data-dir", data,
                                      "--api-keys", keys, NULL },
                    NULL);
  hc_expect("GET", "/api/v1/healthz", NULL, NULL, 200, "ok");
  hc_expect("GET", "/api/v1/get_server_capabilities", NULL, NULL, 401, "missing API key");
  hc_expect("GET", "/api/v1/get_server_capabilities", "X-API-Key: tml-wrong\r\n", NULL, 401,
            "invalid API key");
  hc_expect("GET", "/api/v1/get_server_capabilities", "X-API-Key: tml-alice-key\r\n", NULL,
            200, "\"base\"");
  stop_with(p, SIGTERM);
  ASSERT_STR_CONTAINS(err_of(p), "user=alice");
  proc_free(p);

  /* A malformed keys file names its line. */
  f = fopen(keys, "w");
  ASSERT(f != NULL);
  fputs("tml-a alice\ntml-a bob\n", f);
  fclose(f);
  p = run_to_end((const char *[]){ "serve", "--port", "0", "--data-dir", data, "--api-keys",
                                   keys, NULL });
  ASSERT_EQ_INT(p->exit_status, 2);
  ASSERT_STR_CONTAINS(err_of(p), "--api-keys ");
  ASSERT_STR_CONTAINS(err_of(p), "line 2: the key appears twice");
  proc_free(p);
  free(data);
  free(keys);
  teardown();
}

static void on_listener_closed(uv_handle_t *h) {
}

TEST(port_taken_exits_1) {
  setup();
  uv_tcp_t taken;
  struct sockaddr_in sa;
  ASSERT_OK(uv_tcp_init(&loop, &taken));
  ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &sa));
  ASSERT_OK(uv_tcp_bind(&taken, (struct sockaddr *)&sa, 0));
  ASSERT_OK(uv_listen((uv_stream_t *)&taken, 4, NULL));
  int len = sizeof(sa);
  ASSERT_OK(uv_tcp_getsockname(&taken, (struct sockaddr *)&sa, &len));
  char port_s[16], want[64];
  snprintf(port_s, sizeof(port_s), "%d", ntohs(sa.sin_port));
  snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%s", port_s);
  char *data = in_tmp("data");
  proc_t *p = run_to_end((const char *[]){ "serve", "--port", port_s, "--data-dir", data,
                                           NULL });
  ASSERT_EQ_INT(p->exit_status, 1);
  ASSERT_STR_CONTAINS(err_of(p), want);
  ASSERT_STR_EQ(out_of(p), "");
  proc_free(p);
  uv_close((uv_handle_t *)&taken, on_listener_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  free(data);
  teardown();
}

static int client_closed;

static void on_client_closed(tb__http_client_t *c) {
  client_closed++;
}

static void on_https_result(tb__http_client_req_t *req, int status) {
  int *calls = req->data;
  ASSERT_OK(status);
  (*calls)++;
}

/* --tls-cert and --tls-key: the URL line says https, and the project's
 * client, verifying the certificate, gets an answer. */
TEST(https_with_a_certificate) {
  setup();
  certs_t certs;
  make_cert(&certs, "/tmp/tb-cli-tls-XXXXXX", "tinkerbell serve");
  char *data = in_tmp("data");
  proc_t *p = serve((const char *[]){ "serve", "--port", "0", "--data-dir", data,
                                      "--tls-cert", certs.cert, "--tls-key", certs.key,
                                      NULL },
                    NULL);
  ASSERT_STR_CONTAINS(out_of(p), "tinkerbell serve: listening on https://127.0.0.1:");
  tb__tls_ctx_t *ctx;
  tb__http_client_t client;
  https_client_init(&loop, &client, certs.cert, &ctx);
  char url[64];
  tb__http_client_req_t req;
  int calls = 0;
  https_get_healthz(&client, &req, url, port, on_https_result, &calls);
  RUN_UNTIL(calls == 1);
  ASSERT_EQ_INT(req.response.status, 200);
  ASSERT_MEM_EQ_STR(req.response.body, req.response.body_len, "{\"status\":\"ok\"}");
  tb__http_client_req_free(&req);
  client_closed = 0;
  tb__http_client_close(&client, on_client_closed);
  RUN_UNTIL(client_closed == 1);
  tb__tls_ctx_free(ctx);
  stop_with(p, SIGTERM);
  ASSERT_STR_CONTAINS(err_of(p), "GET /api/v1/healthz 200");
  proc_free(p);

  /* A half pair, and a key that is none, are refused with status 2. */
  p = run_to_end((const char *[]){ "serve", "--data-dir", data, "--tls-cert", certs.cert,
                                   NULL });
  ASSERT_EQ_INT(p->exit_status, 2);
  ASSERT_STR_CONTAINS(err_of(p), "--tls-cert needs --tls-key");
  proc_free(p);
  p = run_to_end((const char *[]){ "serve", "--port", "0", "--data-dir", data, "--tls-cert",
                                   certs.cert, "--tls-key", certs.cert, NULL });
  ASSERT_EQ_INT(p->exit_status, 2);
  ASSERT_STR_CONTAINS(err_of(p), "key");
  ASSERT_STR_EQ(out_of(p), "");
  proc_free(p);
  remove_certs(&certs);
  free(data);
  teardown();
}

/* Long-polls a Tinker future to its end; its result must not be an error. */
static void await_ok(const char *rid) {
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  for (;;) {
    hc_t *c = hc_do("POST", "/api/v1/retrieve_future", NULL, body);
    ASSERT_EQ_INT(c->status, 200);
    int pending = strstr(c->body, "\"try_again\"") != NULL;
    if (!pending && strstr(c->body, "\"error\"") != NULL)
      fprintf(stderr, "future %s failed: %s\n", rid, c->body);
    ASSERT(pending || strstr(c->body, "\"error\"") == NULL);
    hc_free(c);
    if (!pending)
      return;
  }
}

static char *get_metrics(void) {
  hc_t *c = hc_do("GET", "/metrics", NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  char *text = xstrdup(c->body);
  hc_free(c);
  return text;
}

static char *create_session(void) {
  return post_field("/api/v1/create_session", NULL,
                    "{\"tags\":[],\"user_metadata\":{},\"sdk_version\":\"0.25.0\","
                    "\"type\":\"create_session\"}",
                    "session_id");
}

/* Submits create_model; returns its request id. */
static char *submit_create(const char *sid, int mseq) {
  char body[256];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":%d,\"base_model\":\"base\","
           "\"lora_config\":{\"rank\":4},\"type\":\"create_model\"}", sid, mseq);
  return post_field("/api/v1/create_model", NULL, body, "request_id");
}

/* setup() and `serve` on a new data directory *data with one model per
 * user and long polls of poll_ms; a session *sid that holds its model 0. */
static proc_t *serve_holding_one_model(const char *poll_ms, char **data, char **sid) {
  setup();
  *data = in_tmp("data");
  proc_t *p = serve((const char *[]){ "serve", "--port", "0", "--data-dir", *data,
                                      "--max-models-per-user", "1", "--long-poll-ms",
                                      poll_ms, NULL },
                    NULL);
  *sid = create_session();
  char *rid = submit_create(*sid, 0);
  await_ok(rid);
  free(rid);
  return p;
}

/* --max-body, --rate-limit with --rate-burst, --max-models-per-user and
 * --long-poll-ms reach the server; --max-body-memory equal to --max-body,
 * --request-timeout-ms and --max-connections are taken. */
TEST(options_reach_the_server) {
  setup();
  char *data = in_tmp("data");
  proc_t *p = serve((const char *[]){ "serve", "--port", "0", "--data-dir", data,
                                      "--max-body", "2k", "--rate-limit", "0.001",
                                      "--rate-burst", "2", "--max-models-per-user", "1",
                                      "--long-poll-ms", "300", "--max-body-memory", "2k",
                                      "--request-timeout-ms", "60000",
                                      "--max-connections", "64", NULL },
                    NULL);
  /* 2k is 2048 bytes. */
  char *big = xmalloc(2100);
  memset(big, ' ', 2099);
  big[2099] = '\0';
  memcpy(big, "{\"events\":[]}", 13);
  hc_expect("POST", "/api/v1/telemetry", NULL, big, 413, "request body too large");
  big[2040] = '\0';
  hc_expect("POST", "/api/v1/telemetry", NULL, big, 200, "accepted");
  free(big);

  char *sid = create_session();
  char *first = submit_create(sid, 0);
  await_ok(first);
  /* The user's second model waits for the first: a poll is held for the
   * long-poll time, then answers try_again. */
  char *second = submit_create(sid, 1);
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", second);
  hc_t *c = hc_do("POST", "/api/v1/retrieve_future", NULL, body);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_CONTAINS(c->body, "\"type\":\"try_again\"");
  ASSERT_STR_CONTAINS(c->body, "\"queue_state\":\"paused_rate_limit\"");
  ASSERT_GE(c->answered_at - c->sent_at, 250);
  hc_free(c);
  /* The burst of two submissions is spent. */
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":2,\"base_model\":\"base\","
           "\"type\":\"create_model\"}", sid);
  c = hc_do("POST", "/api/v1/create_model", NULL, body);
  ASSERT_EQ_INT(c->status, 429);
  ASSERT_STR_CONTAINS(c->head, "Retry-After: ");
  ASSERT_STR_CONTAINS(c->body, "rate limit: 0.001 requests per second (burst 2)");
  hc_free(c);
  stop_with(p, SIGTERM);
  proc_free(p);
  free(second);
  free(sid);
  free(data);
  teardown();
}

/* --model NAME=HF_DIR: a Hugging Face directory (here `base` written as
 * one) is announced once loaded and takes models. */
TEST(serves_a_hugging_face_directory) {
  setup();
  char *hf = in_tmp("hf-base");
  tb_error_t err = { 0 };
  ASSERT_OK(tb__base_model_save(hf, &err));
  char spec[128];
  snprintf(spec, sizeof(spec), "copy=%s", hf);
  char *data = in_tmp("data");
  proc_t *p = serve((const char *[]){ "serve", "--port", "0", "--data-dir", data, "--model",
                                      "base", "--model", spec, NULL },
                    NULL);
  for (;;) {
    hc_t *c = hc_do("GET", "/api/v1/get_server_capabilities", NULL, NULL);
    ASSERT_EQ_INT(c->status, 200);
    ASSERT_STR_CONTAINS(c->body, "{\"model_name\":\"base\",\"max_context_length\":2048}");
    int loaded = strstr(c->body, "{\"model_name\":\"copy\",\"max_context_length\":2048}") !=
                 NULL;
    hc_free(c);
    if (loaded)
      break;
    wait_ms(20);
  }
  char *sid = create_session();
  char body[256];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":0,\"base_model\":\"copy\","
           "\"lora_config\":{\"rank\":2},\"type\":\"create_model\"}", sid);
  char *rid = post_field("/api/v1/create_model", NULL, body, "request_id");
  await_ok(rid);
  stop_with(p, SIGTERM);
  ASSERT_STR_CONTAINS(err_of(p), "models base, copy=");
  ASSERT_STR_CONTAINS(err_of(p), "model copy loaded from ");
  proc_free(p);
  free(rid);
  free(sid);
  free(data);
  free(hf);
  teardown();
}

/* SIGTERM while a poll is held: the poll is answered at once and the
 * server exits 0. */
TEST(sigterm_answers_held_polls) {
  char *data, *sid;
  proc_t *p = serve_holding_one_model("600000", &data, &sid);
  char *second = submit_create(sid, 1);
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", second);
  hc_t *poll = hc_send("POST", "/api/v1/retrieve_future", NULL, body);
  for (;;) {
    char *m = get_metrics();
    int held = strstr(m, "tinkerbell_long_polls_held 1\n") != NULL;
    free(m);
    if (held)
      break;
    ASSERT(!poll->closed);
  }
  uint64_t sent = uv_now(&loop);
  stop_with(p, SIGTERM);
  hc_wait(poll);
  ASSERT(poll->complete);
  ASSERT_EQ_INT(poll->status, 200);
  /* The closing server fails the waiting create, or answers try_again. */
  if (strstr(poll->body, "try_again") == NULL)
    ASSERT_STR_CONTAINS(poll->body, "closing");
  ASSERT_LT(poll->answered_at - sent, (uint64_t)(10000 * timeout_scale()));
  hc_free(poll);
  proc_free(p);
  free(second);
  free(sid);
  free(data);
  teardown();
}

/* The metrics after create, forward_backward, a create held by the
 * user's model limit and its release: queue states, queue depths, the
 * latency histogram and the tokens. */
TEST(metrics_of_training) {
  char *data, *sid;
  proc_t *p = serve_holding_one_model("500", &data, &sid);
  char body[1024];
  char mid[128];
  snprintf(mid, sizeof(mid), "%s:train:0", sid);
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":1,\"forward_backward_input\":{\"loss_fn\":"
           "\"cross_entropy\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
           "\"encoded_text\",\"tokens\":[1,2,3,4]}]},\"loss_fn_inputs\":{\"target_tokens\":"
           "{\"data\":[2,3,4,5],\"dtype\":\"int64\",\"shape\":[4]},\"weights\":{\"data\":"
           "[1,1,1,1],\"dtype\":\"float32\",\"shape\":[4]}}}]}}", mid);
  char *rid = post_field("/api/v1/forward_backward", NULL, body, "request_id");
  await_ok(rid);
  free(rid);

  /* A second model waits for the first to go. */
  char *held = submit_create(sid, 1);
  char *m = get_metrics();
  ASSERT_STR_CONTAINS(m, "# TYPE tinkerbell_futures_queue_state gauge\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_futures_queue_state{state=\"paused_rate_limit\"} 1\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_futures_queue_state{state=\"active\"} 0\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_futures_pending 1\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_queue_depth{stage=\"held\"} 1\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_queue_depth{stage=\"ordered\"} 0\n");
  ASSERT_STR_CONTAINS(m, "# TYPE tinkerbell_job_latency_seconds histogram\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_job_latency_seconds_count{op=\"create_model\"} 1\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_job_latency_seconds_bucket{op=\"forward_backward\","
                         "le=\"+Inf\"} 1\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_job_latency_seconds_count{op=\"forward_backward\"} 1\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_tokens_total{op=\"forward_backward\"} 4\n");
  free(m);

  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"unload_model\"}", mid);
  rid = post_field("/api/v1/unload_model", NULL, body, "request_id");
  await_ok(rid);
  await_ok(held);
  m = get_metrics();
  ASSERT_STR_CONTAINS(m, "tinkerbell_futures_queue_state{state=\"paused_rate_limit\"} 0\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_futures_pending 0\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_queue_depth{stage=\"held\"} 0\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_queue_depth{stage=\"engine\"} 0\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_job_latency_seconds_count{op=\"create_model\"} 2\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_job_latency_seconds_count{op=\"unload_model\"} 1\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_tokens_total{op=\"forward_backward\"} 4\n");
  ASSERT_STR_CONTAINS(m, "tinkerbell_http_requests_total{method=\"POST\","
                         "route=\"/api/v1/forward_backward\",status=\"200\"} 1\n");
  free(m);

  /* A sample counts its prompt and the tokens it generated. */
  hc_t *c = hc_do("POST", "/api/v1/sample", NULL,
                  "{\"prompt\":\"Hi\",\"max_tokens\":4,\"seed\":1}");
  ASSERT_EQ_INT(c->status, 200);
  json_t *v = hc_json(c);
  json_int_t n = json_integer_value(json_object_get(v, "prompt_tokens"));
  ASSERT_GT(n, 0);
  json_t *tokens = json_object_get(json_array_get(json_object_get(v, "samples"), 0), "tokens");
  ASSERT_GT(json_array_size(tokens), 0);
  n += (json_int_t)json_array_size(tokens);
  json_decref(v);
  hc_free(c);
  char want[96];
  snprintf(want, sizeof(want), "tinkerbell_tokens_total{op=\"sample\"} %lld\n", (long long)n);
  m = get_metrics();
  ASSERT_STR_CONTAINS(m, want);
  ASSERT_STR_CONTAINS(m, "tinkerbell_job_latency_seconds_count{op=\"sample\"} 1\n");
  free(m);
  stop_with(p, SIGTERM);
  proc_free(p);
  free(held);
  free(rid);
  free(sid);
  free(data);
  teardown();
}

TEST_LIST(
  TEST_ENTRY(option_parser),
  TEST_ENTRY(help_lists_every_option),
  TEST_ENTRY_TIMEOUT(bad_options_exit_2, 60000),
  TEST_ENTRY(serves_until_sigterm),
  TEST_ENTRY(sigint_closes_gracefully_and_log_level),
  TEST_ENTRY(api_keys_file),
  TEST_ENTRY(port_taken_exits_1),
  TEST_ENTRY(https_with_a_certificate),
  TEST_ENTRY_TIMEOUT(metrics_of_training, 60000),
  TEST_ENTRY_TIMEOUT(options_reach_the_server, 60000),
  TEST_ENTRY_TIMEOUT(sigterm_answers_held_polls, 60000),
  TEST_ENTRY_TIMEOUT(serves_a_hugging_face_directory, 60000),
)

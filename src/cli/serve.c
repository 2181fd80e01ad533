/*
 * tinkerbell serve: the training server (include/tinkerbell/server.h) on
 * a loop of its own, until SIGINT or SIGTERM.
 *
 * What it adds to the library: options with defaults a first run can use
 * (loopback, port 8000, checkpoints under ./tinkerbell-data, the built-in
 * `base` model), one line on stdout with the URL it listens on (so that a
 * script that asked for --port 0 can read the port), request logs at
 * info level unless TINKERBELL_LOG or --log-level say otherwise, and a
 * graceful close on the first signal: held polls are answered, answers
 * under way are written, the loop ends and the command exits 0.  A second
 * signal exits at once, without waiting for running jobs (checkpoints are
 * written atomically, so none is left half-written).
 *
 * Exit status: 0 after a signal, 2 for a command line that cannot be used
 * (including a keys file, certificate, key or data directory that cannot
 * be read or made), 1 when the server cannot start (the port is taken,
 * say).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "cli/cli.h"
#include "core/log.h"
#include "tinkerbell.h"
#include "tinkerbell/server.h"

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 8000
#define DEFAULT_DATA_DIR "./tinkerbell-data"
#define MS_PER_WEEK (7ull * 24 * 3600 * 1000)

enum {
  OPT_HOST,
  OPT_PORT,
  OPT_DATA_DIR,
  OPT_MODEL,
  OPT_API_KEYS,
  OPT_TLS_CERT,
  OPT_TLS_KEY,
  OPT_THREADS,
  OPT_LONG_POLL_MS,
  OPT_SESSION_TIMEOUT_MS,
  OPT_RESULT_GRACE_MS,
  OPT_RESULT_TTL_MS,
  OPT_MAX_RESULT_BYTES,
  OPT_RATE_LIMIT,
  OPT_RATE_BURST,
  OPT_MAX_MODELS_PER_USER,
  OPT_MAX_BODY,
  OPT_MAX_BODY_MEMORY,
  OPT_KV_MEMORY,
  OPT_DECODE_ROWS,
  OPT_REQUEST_TIMEOUT_MS,
  OPT_MAX_CONNECTIONS,
  OPT_LOG_LEVEL,
  OPT_HELP,
  OPT_COUNT
};

/* Help lines stay within 52 columns so that the help fits 80. */
static const tb__cli_opt_t serve_opts[OPT_COUNT + 1] = {
  [OPT_HOST] = { "host", "ADDR",
                 "IP address to listen on: 127.0.0.1, ::1, 0.0.0.0\n"
                 "(every IPv4 interface), :: (every interface) or\n"
                 "another; localhost means 127.0.0.1 [127.0.0.1]" },
  [OPT_PORT] = { "port", "PORT",
                 "TCP port; 0 picks a free one, which the line on\n"
                 "stdout tells [8000]" },
  [OPT_DATA_DIR] = { "data-dir", "DIR",
                     "where checkpoints are kept; made if missing\n"
                     "[./tinkerbell-data]" },
  [OPT_MODEL] = { "model", "SPEC",
                  "a base model to serve, repeatable: base (the\n"
                  "built-in model) or NAME=HF_DIR (a Hugging Face\n"
                  "model directory, served as NAME once loaded);\n"
                  "the first is the default model [base]" },
  [OPT_API_KEYS] = { "api-keys", "FILE",
                     "require API keys, one 'KEY USER' per line ('#'\n"
                     "starts a comment): every route but the health\n"
                     "check and GET / then needs X-API-Key or\n"
                     "Authorization: Bearer, and each user sees only\n"
                     "its own models [no keys: one user, local]" },
  [OPT_TLS_CERT] = { "tls-cert", "FILE",
                     "serve HTTPS (TLS 1.2 or later) only, with this\n"
                     "PEM certificate or chain; needs --tls-key\n"
                     "[plain HTTP]" },
  [OPT_TLS_KEY] = { "tls-key", "FILE", "the PEM private key of --tls-cert" },
  [OPT_THREADS] = { "threads", "N",
                    "threadpool size (sets UV_THREADPOOL_SIZE) and the\n"
                    "work items a training step is split into\n"
                    "[UV_THREADPOOL_SIZE or 4; one item per core]" },
  [OPT_LONG_POLL_MS] = { "long-poll-ms", "MS",
                         "how long retrieve_future holds a request for a\n"
                         "result before it answers try_again [30000]" },
  [OPT_SESSION_TIMEOUT_MS] = { "session-timeout-ms", "MS",
                               "a session without a heartbeat for this long\n"
                               "expires and its models are unloaded [120000]" },
  [OPT_RESULT_GRACE_MS] = { "result-grace-ms", "MS",
                            "a result stays retrievable this long after its\n"
                            "first delivery; at least 120000 [120000]" },
  [OPT_RESULT_TTL_MS] = { "result-ttl-ms", "MS",
                          "a result nobody retrieved expires after this\n"
                          "long [3600000]" },
  [OPT_MAX_RESULT_BYTES] = { "max-result-bytes", "SIZE",
                             "memory held by results; above it delivered\n"
                             "results go first (suffixes k, M, G) [1G]" },
  [OPT_RATE_LIMIT] = { "rate-limit", "RPS",
                       "submissions per second per user; more are\n"
                       "answered 429 with Retry-After; 0: no limit [0]" },
  [OPT_RATE_BURST] = { "rate-burst", "N",
                       "submissions a user may make at once under\n"
                       "--rate-limit [max(1, RPS)]" },
  [OPT_MAX_MODELS_PER_USER] = { "max-models-per-user", "N",
                                "models a user may have loaded at once; more\n"
                                "creates wait, reported as paused_rate_limit;\n"
                                "0: no limit [0]" },
  [OPT_MAX_BODY] = { "max-body", "SIZE",
                     "largest request body; larger ones are answered\n"
                     "413 (suffixes k, M, G) [64M]" },
  [OPT_MAX_BODY_MEMORY] = { "max-body-memory", "SIZE",
                            "request bodies held at once over all\n"
                            "connections, counted from each head; more are\n"
                            "answered 503 with Retry-After before the body\n"
                            "is read; at least --max-body [512M]" },
  [OPT_KV_MEMORY] = { "kv-memory", "SIZE",
                      "the KV cache of each base model, shared by every\n"
                      "sample request; a request that does not fit waits\n"
                      "(paused_capacity) [twice the model's float32\n"
                      "weights, at least 64M]" },
  [OPT_DECODE_ROWS] = { "decode-rows", "N",
                        "sample rows of one decode step of each base\n"
                        "model (a prompt row counts half of one): a new\n"
                        "prompt goes first, the running samples take\n"
                        "turns for the rest, so a new request's first\n"
                        "token waits little; more trades that wait for\n"
                        "throughput under heavy load [32]" },
  [OPT_REQUEST_TIMEOUT_MS] = { "request-timeout-ms", "MS",
                               "a request's head and body must arrive within\n"
                               "this long of its first byte, or the\n"
                               "connection closes [120000]" },
  [OPT_MAX_CONNECTIONS] = { "max-connections", "N",
                            "open connections; one more is answered 503\n"
                            "and closed [1024, or ulimit -n less 64]" },
  [OPT_LOG_LEVEL] = { "log-level", "LEVEL",
                      "debug, info (a line per request), warn, error\n"
                      "or off [TINKERBELL_LOG, else info]" },
  [OPT_HELP] = { "help", NULL, "print this help and exit" },
  [OPT_COUNT] = { NULL, NULL, NULL },
};

static const char serve_description[] =
    "Serves the Tinker API (/api/v1/..., what the Tinker SDK speaks) and the\n"
    "Tinkerbell dialect (sync and *_async routes, POST /retrieve_future) over\n"
    "HTTP/1.1 or HTTPS, training and sampling LoRA adapters on the CPU.  GET /\n"
    "lists every route; GET /metrics gives Prometheus metrics.  Prints the URL\n"
    "it listens on, logs a line per request to stderr, and closes gracefully on\n"
    "SIGINT or SIGTERM (a second signal exits at once).";

typedef struct serve_config_s {
  const char *host;
  int port;
  const char *data_dir;
  const char **models;
  size_t n_models;
  size_t threads;               /* 0: libuv's and the engine's defaults */
  int log_level;                /* -1: TINKERBELL_LOG, else info */
  tb_server_options_t so;
} serve_config_t;

typedef struct serve_s {
  uv_loop_t loop;
  tb_server_t server;
  uv_signal_t sigint, sigterm;
  int n_signals;                /* of the two, the handles open */
  int closing;
} serve_t;

/* ------------------------------------------------------------ options */

static int check_host(const tb__cli_args_t *a, const char *host) {
  struct sockaddr_in6 sa6;
  struct sockaddr_in sa4;
  if (uv_ip4_addr(host, 0, &sa4) == 0 || uv_ip6_addr(host, 0, &sa6) == 0)
    return 0;
  tb__cli_error(a, "--host: expected an IP address such as 127.0.0.1, ::1, 0.0.0.0 or "
                   "::, got '%s'", host);
  return -1;
}

/* "base" or NAME=HF_DIR with an existing directory, each name once. */
static int check_model(const tb__cli_args_t *a, const serve_config_t *c, const char *spec) {
  const char *eq = strchr(spec, '=');
  size_t name_len = eq ? (size_t)(eq - spec) : strlen(spec);
  if (eq == NULL && strcmp(spec, TB_BASE_MODEL_NAME) != 0) {
    tb__cli_error(a, "--model %s: a model is %s (the built-in model) or NAME=HF_DIR (a "
                     "Hugging Face model directory)", spec, TB_BASE_MODEL_NAME);
    return -1;
  }
  if (name_len == 0 || (eq != NULL && eq[1] == '\0')) {
    tb__cli_error(a, "--model %s: expected NAME=HF_DIR with a name and a directory", spec);
    return -1;
  }
  struct stat st;
  if (eq != NULL && stat(eq + 1, &st) != 0) {
    tb__cli_error(a, "--model %s: %s: %s", spec, eq + 1, strerror(errno));
    return -1;
  }
  if (eq != NULL && !S_ISDIR(st.st_mode)) {
    tb__cli_error(a, "--model %s: %s is not a directory (expected a Hugging Face model "
                     "directory with config.json)", spec, eq + 1);
    return -1;
  }
  if (eq != NULL) {
    /* The rest of the directory is read when the model loads, off the
     * loop; a directory that is not a model at all is told now. */
    size_t dl = strlen(eq + 1);
    char *config = malloc(dl + sizeof("/config.json"));
    int missing = config == NULL;
    if (config != NULL) {
      memcpy(config, eq + 1, dl);
      memcpy(config + dl, "/config.json", sizeof("/config.json"));
      missing = stat(config, &st) != 0;
    }
    free(config);
    if (missing) {
      tb__cli_error(a, "--model %s: no config.json in %s (expected a Hugging Face model "
                       "directory: config.json, model.safetensors)", spec, eq + 1);
      return -1;
    }
  }
  for (size_t i = 0; i < c->n_models; i++) {
    const char *o = c->models[i];
    const char *oeq = strchr(o, '=');
    size_t olen = oeq ? (size_t)(oeq - o) : strlen(o);
    if (olen == name_len && memcmp(o, spec, name_len) == 0) {
      tb__cli_error(a, "--model %s: the name %.*s is given twice", spec, (int)name_len,
                    spec);
      return -1;
    }
  }
  return 0;
}

/* Fills c from the command line: 0, 1 after --help, or -1 after an
 * error. */
static int parse_options(int argc, char **argv, serve_config_t *c) {
  tb__cli_args_t a;
  tb__cli_args_init(&a, "serve", serve_opts, argc, argv);
  const char *v;
  uint64_t u;
  double d;
  int rate_burst_given = 0;
  for (;;) {
    int opt = tb__cli_next(&a, &v);
    if (opt == TB__CLI_END)
      break;
    int rc = 0;
    switch (opt) {
    case TB__CLI_ERROR:
      return -1;
    case TB__CLI_ARG:
      tb__cli_error(&a, "unexpected argument '%s' (serve takes options only)", v);
      return -1;
    case OPT_HOST:
      c->host = strcmp(v, "localhost") == 0 ? "127.0.0.1" : v;
      rc = check_host(&a, c->host);
      break;
    case OPT_PORT:
      rc = tb__cli_uint(&a, "port", v, 0, 65535, &u);
      c->port = (int)u;
      break;
    case OPT_DATA_DIR:
      c->data_dir = v;
      if (v[0] == '\0') {
        tb__cli_error(&a, "--data-dir: expected a directory, got ''");
        rc = -1;
      }
      break;
    case OPT_MODEL:
      rc = check_model(&a, c, v);
      if (rc == 0)
        c->models[c->n_models++] = v;
      break;
    case OPT_API_KEYS:
      c->so.api_keys_file = v;
      break;
    case OPT_TLS_CERT:
      c->so.tls_cert_file = v;
      break;
    case OPT_TLS_KEY:
      c->so.tls_key_file = v;
      break;
    case OPT_THREADS:
      rc = tb__cli_uint(&a, "threads", v, 1, 1024, &u);
      c->threads = (size_t)u;
      break;
    case OPT_LONG_POLL_MS:
      rc = tb__cli_uint(&a, "long-poll-ms", v, 1, 3600000, &c->so.long_poll_ms);
      break;
    case OPT_SESSION_TIMEOUT_MS:
      rc = tb__cli_uint(&a, "session-timeout-ms", v, 1000, MS_PER_WEEK,
                        &c->so.session_timeout_ms);
      break;
    case OPT_RESULT_GRACE_MS:
      rc = tb__cli_uint(&a, "result-grace-ms", v, 120000, MS_PER_WEEK,
                        &c->so.result_grace_ms);
      break;
    case OPT_RESULT_TTL_MS:
      rc = tb__cli_uint(&a, "result-ttl-ms", v, 1000, MS_PER_WEEK, &c->so.result_ttl_ms);
      break;
    case OPT_MAX_RESULT_BYTES:
      rc = tb__cli_size(&a, "max-result-bytes", v, 1 << 20, SIZE_MAX, &u);
      c->so.max_result_bytes = (size_t)u;
      break;
    case OPT_RATE_LIMIT:
      rc = tb__cli_number(&a, "rate-limit", v, 0, 1e9, &c->so.rate_limit_rps);
      break;
    case OPT_RATE_BURST:
      rc = tb__cli_number(&a, "rate-burst", v, 1, 1e9, &d);
      c->so.rate_limit_burst = d;
      rate_burst_given = 1;
      break;
    case OPT_MAX_MODELS_PER_USER:
      rc = tb__cli_uint(&a, "max-models-per-user", v, 0, 1000000, &u);
      c->so.max_models_per_user = (unsigned)u;
      break;
    case OPT_MAX_BODY:
      rc = tb__cli_size(&a, "max-body", v, 1024, (uint64_t)1 << 34, &u);
      c->so.max_body = (size_t)u;
      break;
    case OPT_MAX_BODY_MEMORY:
      rc = tb__cli_size(&a, "max-body-memory", v, 1024, (uint64_t)1 << 40, &u);
      c->so.max_body_memory = (size_t)u;
      break;
    case OPT_KV_MEMORY:
      rc = tb__cli_size(&a, "kv-memory", v, 1 << 20, (uint64_t)1 << 44, &u);
      c->so.kv_memory = (size_t)u;
      break;
    case OPT_DECODE_ROWS:
      rc = tb__cli_uint(&a, "decode-rows", v, 1, 65536, &u);
      c->so.decode_rows = (size_t)u;
      break;
    case OPT_REQUEST_TIMEOUT_MS:
      rc = tb__cli_uint(&a, "request-timeout-ms", v, 1, 86400000, &u);
      c->so.request_timeout_ms = u;
      break;
    case OPT_MAX_CONNECTIONS:
      rc = tb__cli_uint(&a, "max-connections", v, 1, 1000000, &u);
      c->so.max_connections = (size_t)u;
      break;
    case OPT_LOG_LEVEL:
      c->log_level = tb__log_parse_level(v);
      if (c->log_level < 0) {
        tb__cli_error(&a, "--log-level: expected debug, info, warn, error or off, got "
                          "'%s'", v);
        rc = -1;
      }
      break;
    case OPT_HELP:
      tb__cli_help(stdout, "tinkerbell serve [options]", serve_description, serve_opts);
      return 1;
    default:
      rc = -1;
      break;
    }
    if (rc != 0)
      return -1;
  }
  if ((c->so.tls_cert_file == NULL) != (c->so.tls_key_file == NULL)) {
    tb__cli_error(&a, "%s needs %s", c->so.tls_cert_file ? "--tls-cert" : "--tls-key",
                  c->so.tls_cert_file ? "--tls-key" : "--tls-cert");
    return -1;
  }
  if (rate_burst_given && c->so.rate_limit_rps == 0) {
    tb__cli_error(&a, "--rate-burst needs --rate-limit");
    return -1;
  }
  size_t max_body = c->so.max_body ? c->so.max_body : (size_t)64 << 20;
  if (c->so.max_body_memory != 0 && c->so.max_body_memory < max_body) {
    tb__cli_error(&a, "--max-body-memory must be at least --max-body (%zu bytes)", max_body);
    return -1;
  }
  return 0;
}

/* mkdir -p, before the loop runs; 0 or -1 after a message. */
static int make_data_dir(const char *dir) {
  int err = -tb__cli_make_dirs(dir);
  struct stat st;
  const char *what = "cannot make the directory";
  if (err == 0 && stat(dir, &st) != 0)
    err = errno;
  else if (err == 0 && !S_ISDIR(st.st_mode))
    err = ENOTDIR;
  else if (err == 0 && access(dir, W_OK | X_OK) != 0) {
    err = errno;
    what = "cannot write to it";
  }
  if (err != 0) {
    fprintf(stderr, "tinkerbell serve: --data-dir %s: %s: %s\n", dir, what, strerror(err));
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------ running */

static void on_signal_closed(uv_handle_t *h) {
}

static void on_server_closed(tb_server_t *server) {
  serve_t *s = server->data;
  if (s->n_signals > 0)
    uv_close((uv_handle_t *)&s->sigint, on_signal_closed);
  if (s->n_signals > 1)
    uv_close((uv_handle_t *)&s->sigterm, on_signal_closed);
}

static void on_signal(uv_signal_t *h, int signum) {
  serve_t *s = h->data;
  const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
  if (s->closing) {
    /* The first one is still closing: running jobs are waited for. */
    fprintf(stderr, "tinkerbell serve: %s again: exiting without waiting for running "
                    "jobs\n", name);
    _exit(128 + signum);
  }
  s->closing = 1;
  tb__info("%s: closing (answering held polls, finishing answers under way; send it "
          "again to exit at once)", name);
  tb_server_close(&s->server, on_server_closed);
}

/* Closes what init left and the loop; returns status. */
static int finish(serve_t *s, int status) {
  uv_run(&s->loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&s->loop);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell serve: the loop did not close: %s\n", uv_strerror(rc));
    return status ? status : 1;
  }
  return status;
}

static int close_and_finish(serve_t *s, int status) {
  tb_server_close(&s->server, NULL);
  return finish(s, status);
}

static void print_url(const char *scheme, const char *host, int port) {
  int v6 = strchr(host, ':') != NULL;
  printf("tinkerbell serve: listening on %s://%s%s%s:%d\n", scheme, v6 ? "[" : "", host,
         v6 ? "]" : "", port);
  fflush(stdout);
}

static int run(serve_t *s, const serve_config_t *c) {
  int rc = uv_loop_init(&s->loop);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell serve: cannot make a loop: %s\n", uv_strerror(rc));
    return 1;
  }
  s->server.data = s;
  rc = tb_server_init(&s->loop, &s->server, &c->so);
  if (rc != 0) {
    /* The keys file is read first; its messages name it, as those of
     * the certificate and key name theirs. */
    int keys = c->so.api_keys_file != NULL && strstr(s->server.message, "API keys") != NULL;
    int usage = keys || rc == TB_ETLS;
    if (keys)
      fprintf(stderr, "tinkerbell serve: --api-keys %s: %s\n", c->so.api_keys_file,
              s->server.message[0] ? s->server.message : tb_strerror(rc));
    else
      fprintf(stderr, "tinkerbell serve: %s\n",
              s->server.message[0] ? s->server.message : tb_strerror(rc));
    return finish(s, usage ? TB__CLI_USAGE : 1);
  }
  rc = tb_server_start_training(&s->server, c->models, c->n_models, c->threads);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell serve: --model: %s\n", s->server.message);
    return close_and_finish(s, rc == TB_EINVAL || rc == TB_EEXIST || rc == TB_ENOTFOUND
                                   ? TB__CLI_USAGE
                                   : 1);
  }
  rc = tb_server_listen(&s->server, c->host, c->port);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell serve: %s\n", s->server.message);
    return close_and_finish(s, 1);
  }
  s->sigint.data = s;
  s->sigterm.data = s;
  rc = uv_signal_init(&s->loop, &s->sigint);
  s->n_signals = rc == 0;
  if (rc == 0) {
    rc = uv_signal_init(&s->loop, &s->sigterm);
    s->n_signals += rc == 0;
  }
  rc = rc ? rc : uv_signal_start(&s->sigint, on_signal, SIGINT);
  rc = rc ? rc : uv_signal_start(&s->sigterm, on_signal, SIGTERM);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell serve: cannot watch signals: %s\n", uv_strerror(rc));
    s->closing = 1;
    tb_server_close(&s->server, on_server_closed);
    return finish(s, 1);
  }
  print_url(c->so.tls_cert_file ? "https" : "http", c->host, tb_server_port(&s->server));
  if (TB_LOG_ENABLED(TB_LOG_INFO)) {
    char models[512] = "";
    size_t at = 0;
    for (size_t i = 0; i < (c->n_models ? c->n_models : 1) && at < sizeof(models); i++)
      at += (size_t)snprintf(models + at, sizeof(models) - at, "%s%s", i ? ", " : "",
                             c->n_models ? c->models[i] : TB_BASE_MODEL_NAME);
    tb__log(TB_LOG_INFO, "tinkerbell %s: models %s; data in %s; %s", tb_version_string(),
            models, c->data_dir,
            c->so.api_keys_file ? "API keys required" : "no API keys (one user, local)");
  }
  return finish(s, 0);
}

int tb__cli_serve(int argc, char **argv) {
  serve_config_t c = {
    .host = DEFAULT_HOST,
    .port = DEFAULT_PORT,
    .data_dir = DEFAULT_DATA_DIR,
    .log_level = -1,
  };
  c.models = calloc((size_t)argc, sizeof(*c.models));
  if (c.models == NULL) {
    fprintf(stderr, "tinkerbell serve: out of memory\n");
    return 1;
  }
  int rc = parse_options(argc, argv, &c);
  if (rc != 0) {
    free(c.models);
    return rc > 0 ? 0 : TB__CLI_USAGE;
  }
  if (c.threads > 0) {
    /* Before anything on the loop starts libuv's threadpool. */
    char n[24];
    snprintf(n, sizeof(n), "%zu", c.threads);
    setenv("UV_THREADPOOL_SIZE", n, 1);
  }
  const char *env_level = getenv("TINKERBELL_LOG");
  if (c.log_level < 0 && env_level != NULL && tb__log_parse_level(env_level) < 0)
    fprintf(stderr, "tinkerbell serve: TINKERBELL_LOG=%s is not debug, info, warn, error "
                    "or off; logging at info\n", env_level);
  if (c.log_level < 0)
    c.log_level = env_level != NULL && tb__log_parse_level(env_level) >= 0
                      ? tb__log_parse_level(env_level)
                      : TB_LOG_INFO;
  tb__log_set_level((tb__log_level_t)c.log_level);
  if (make_data_dir(c.data_dir) != 0) {
    free(c.models);
    return TB__CLI_USAGE;
  }
  c.so.data_dir = c.data_dir;
  /* A client that goes away while its answer is written must not kill
   * the process: libuv writes to sockets with write(2). */
  signal(SIGPIPE, SIG_IGN);
  serve_t *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    free(c.models);
    fprintf(stderr, "tinkerbell serve: out of memory\n");
    return 1;
  }
  rc = run(s, &c);
  free(s);
  free(c.models);
  return rc;
}

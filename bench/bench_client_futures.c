/*
 * The client runtime under load: memory per pending future and loop CPU
 * per poll with many futures in flight on one loop, against the same
 * polls sent by the bare HTTP client (the layer below, measured in the same
 * run), which prices what futures, retries and polling add per request.
 *
 * A responder runs in a child process (so that its CPU is not counted):
 * submissions answer {"request_id"}, retrieve_future answers "try_again"
 * at once until the parent says /finish, then results.  The parent makes N
 * futures, waits until every one is polling, reads the heap in use
 * (mallinfo2) per future, then counts CPU time, polls and heap
 * allocations (the bench wraps malloc) for a while.
 *
 * usage: bench_client_futures [--futures N[,N...]] [--seconds S] [--conns C]
 * Output: a human line per N, then one `BENCH futures key=value ...` line
 * for the largest N.
 */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "client/internal.h"
#include "http/server.h"

/* ------------------------------------------------------------ responder */

static int finished;
static uv_signal_t sigterm;
static tb__http_server_t server;

static void respond_text(tb__http_request_t *req, const char *text) {
  size_t n = strlen(text);
  char *copy = tb__arena_alloc(&req->arena, n);
  memcpy(copy, text, n);
  tb__http_respond_json(req, 200, copy, n);
}

static void on_request(tb__http_request_t *req) {
  char buf[160];
  if (tb__slice_eq_str(req->path, "/finish")) {
    finished = 1;
    respond_text(req, "{}");
    return;
  }
  if (tb__slice_eq_str(req->path, "/reset")) {
    finished = 0;
    respond_text(req, "{}");
    return;
  }
  json_t *doc = json_loadb(req->body.base, req->body.len, 0, NULL);
  if (tb__slice_eq_str(req->path, "/api/v1/op")) {
    snprintf(buf, sizeof(buf), "{\"request_id\":\"r%lld\"}",
             (long long)json_integer_value(json_object_get(doc, "i")));
  } else {
    const char *id = json_string_value(json_object_get(doc, "request_id"));
    if (finished && tb__slice_eq_str(req->path, "/api/v1/retrieve_future"))
      snprintf(buf, sizeof(buf), "{\"done\":true}");
    else
      snprintf(buf, sizeof(buf), "{\"type\":\"try_again\",\"request_id\":\"%s\","
               "\"queue_state\":\"active\"}", id ? id : "x");
  }
  json_decref(doc);
  respond_text(req, buf);
}

static void on_sigterm(uv_signal_t *s, int signum) {
  uv_close((uv_handle_t *)s, NULL);
  tb__http_server_close(&server, NULL);
}

/* Runs the responder; writes its port to fd. */
static int responder(int fd) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  tb__http_server_options_t o = { .on_request = on_request, .max_pipeline = 64 };
  if (tb__http_server_init(&loop, &server, &o) != 0 ||
      tb__http_server_listen(&server, "127.0.0.1", 0) != 0)
    return 1;
  int port = tb__http_server_port(&server);
  if (write(fd, &port, sizeof(port)) != sizeof(port))
    return 1;
  close(fd);
  uv_signal_init(&loop, &sigterm);
  uv_signal_start(&sigterm, on_sigterm, SIGTERM);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return 0;
}

/* ------------------------------------------------------------ measuring */

/* Allocations counted by wrapping glibc's allocator (an executable's own
 * malloc takes precedence over libc's): what a poll costs the heap. */
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
static uint64_t n_allocs;

void *malloc(size_t n) {
  n_allocs++;
  return __libc_malloc(n);
}

void *calloc(size_t n, size_t size) {
  n_allocs++;
  return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n) {
  n_allocs++;
  return __libc_realloc(p, n);
}

static double cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
         (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
}

static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

static void stop_cb(uv_timer_t *t) { uv_stop(t->loop); }

/* Runs the loop for ms. */
static void run_for(uv_loop_t *loop, uint64_t ms) {
  uv_timer_t t;
  uv_timer_init(loop, &t);
  uv_timer_start(&t, stop_cb, ms, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

static uint64_t polls_sent(tb__rt_t *rt, size_t *n_polling) {
  uint64_t n = 0;
  size_t k = 0;
  for (tb__client_op_t *op = rt->ops; op != NULL; op = op->next)
    if (op->phase == 1) {
      n += op->poll.iteration;
      k++;
    }
  *n_polling = k;
  return n;
}

static int call_done;
static void on_call_done(tb__call_t *c, int status) { call_done = 1; }

static void control(tb__rt_t *rt, const char *path) {
  tb__call_t c;
  memset(&c, 0, sizeof(c));
  c.path = path;
  c.body = TB_SLICE_LIT("{}");
  c.max_retries = -1;
  call_done = 0;
  if (tb__call_start(rt, &c, on_call_done) != 0)
    abort();
  while (!call_done)
    uv_run(rt->loop, UV_RUN_ONCE);
  tb__call_free(&c);
}

static int rt_closed;
static void on_rt_closed(tb__rt_t *rt) { rt_closed = 1; }

typedef struct {
  double bytes_per_future;
  double cpu_us_per_poll;
  double polls_per_s;
  double allocs_per_poll;
} result_t;

static result_t measure_futures(uv_loop_t *loop, const char *url, size_t n, double seconds,
                                unsigned conns) {
  result_t res = { 0 };
  tb__rt_t rt;
  tb_client_config_t cfg = { .base_url = url, .max_connections = conns };
  tb_error_t err = { 0 };
  if (tb__rt_init(loop, &rt, &cfg, &err) != 0) {
    fprintf(stderr, "bench_client_futures: %s\n", tb_error_message(&err));
    exit(1);
  }
  tb_future_t **fs = calloc(n, sizeof(*fs));
  if (fs == NULL)
    abort();
  size_t heap0 = heap_in_use();
  for (size_t i = 0; i < n; i++) {
    char body[32];
    int len = snprintf(body, sizeof(body), "{\"i\":%zu}", i);
    tb__client_op_opts_t o = { .path = "/api/v1/op", .body = body, .body_len = (size_t)len,
                               .max_retries = -1, .poll = 1 };
    if (tb__client_op_start(&rt, &o, &fs[i]) != 0)
      abort();
  }
  /* Until every future is polling. */
  size_t polling = 0;
  while (polls_sent(&rt, &polling), polling < n)
    run_for(loop, 50);
  res.bytes_per_future = (double)(heap_in_use() - heap0) / (double)n;

  size_t k;
  uint64_t p0 = polls_sent(&rt, &k);
  uint64_t a0 = n_allocs;
  double c0 = cpu_us();
  uint64_t t0 = uv_hrtime();
  run_for(loop, (uint64_t)(seconds * 1000));
  double c1 = cpu_us();
  double dt = (double)(uv_hrtime() - t0) / 1e9;
  uint64_t a1 = n_allocs;
  uint64_t p1 = polls_sent(&rt, &k);
  res.cpu_us_per_poll = p1 > p0 ? (c1 - c0) / (double)(p1 - p0) : 0;
  res.allocs_per_poll = p1 > p0 ? (double)(a1 - a0) / (double)(p1 - p0) : 0;
  res.polls_per_s = (double)(p1 - p0) / dt;

  control(&rt, "/finish");
  int rc = tb_future_wait_many(fs, n, 0, NULL);
  if (rc != 0) {
    fprintf(stderr, "bench_client_futures: futures failed: %s\n", tb_strerror(rc));
    exit(1);
  }
  for (size_t i = 0; i < n; i++)
    tb_future_free(fs[i]);
  free(fs);
  control(&rt, "/reset");
  rt_closed = 0;
  tb__rt_close(&rt, on_rt_closed);
  while (!rt_closed)
    uv_run(loop, UV_RUN_ONCE);
  return res;
}

/* The peer: the same try_again polls from the bare HTTP client, conns of
 * them in flight at a time. */
typedef struct {
  tb__http_client_req_t req;
  tb__http_header_t hdr;
  uv_buf_t body;
} raw_t;

static tb__http_client_t raw_client;
static uint64_t raw_done;
static int raw_stop;
static char raw_url[96];
static const char raw_body[] = "{\"request_id\":\"r0\",\"allow_metadata_only\":true}";

static void raw_send(raw_t *r);

static void raw_cb(tb__http_client_req_t *req, int status) {
  if (raw_stop)
    return;  /* cancelled by the close */
  if (status != 0 || req->response.status != 200) {
    fprintf(stderr, "bench_client_futures: a bare poll failed: %s (HTTP %d) %s\n",
            tb_strerror(status), req->response.status, req->message);
    exit(1);
  }
  raw_done++;
  raw_send((raw_t *)req);
}

static void raw_send(raw_t *r) {
  r->req.method = "POST";
  r->req.url = (tb_slice_t){ raw_url, strlen(raw_url) };
  r->hdr.name = TB_SLICE_LIT("Content-Type");
  r->hdr.value = TB_SLICE_LIT("application/json");
  r->req.headers = &r->hdr;
  r->req.n_headers = 1;
  r->body = uv_buf_init((char *)raw_body, sizeof(raw_body) - 1);
  r->req.body = &r->body;
  r->req.n_body = 1;
  int rc = tb__http_client_send(&raw_client, &r->req, raw_cb);
  if (rc != 0) {
    fprintf(stderr, "bench_client_futures: send: %s %s\n", tb_strerror(rc), r->req.message);
    exit(1);
  }
}

static int raw_closed;
static void on_raw_closed(tb__http_client_t *c) { raw_closed = 1; }

static double raw_allocs_per_poll;

static double measure_raw(uv_loop_t *loop, const char *url, double seconds, unsigned conns) {
  snprintf(raw_url, sizeof(raw_url), "%s/api/v1/retrieve_future", url);
  tb__http_client_opts_t o = { .max_conns_per_origin = conns };
  if (tb__http_client_init(loop, &raw_client, &o) != 0)
    abort();
  raw_t *rs = calloc(conns, sizeof(*rs));
  raw_stop = 0;
  for (unsigned i = 0; i < conns; i++)
    raw_send(&rs[i]);
  run_for(loop, 300);  /* connections made */
  uint64_t d0 = raw_done;
  uint64_t a0 = n_allocs;
  double c0 = cpu_us();
  run_for(loop, (uint64_t)(seconds * 1000));
  double c1 = cpu_us();
  uint64_t d1 = raw_done;
  raw_allocs_per_poll = d1 > d0 ? (double)(n_allocs - a0) / (double)(d1 - d0) : 0;
  raw_stop = 1;
  tb__http_client_close(&raw_client, on_raw_closed);
  while (!raw_closed)
    uv_run(loop, UV_RUN_ONCE);
  for (unsigned i = 0; i < conns; i++)
    tb__http_client_req_free(&rs[i].req);
  free(rs);
  return d1 > d0 ? (c1 - c0) / (double)(d1 - d0) : 0;
}

int main(int argc, char **argv) {
  const char *counts = "10000,100000";
  double seconds = 3;
  unsigned conns = 16;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--futures") == 0 && i + 1 < argc) {
      counts = argv[++i];
    } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      seconds = atof(argv[++i]);
    } else if (strcmp(argv[i], "--conns") == 0 && i + 1 < argc) {
      conns = (unsigned)atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: %s [--futures N[,N...]] [--seconds S] [--conns C]\n", argv[0]);
      return 2;
    }
  }
  if (seconds <= 0 || conns == 0) {
    fprintf(stderr, "bench_client_futures: --seconds and --conns must be positive\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int fds[2];
  if (pipe(fds) != 0)
    return 1;
  pid_t pid = fork();
  if (pid < 0)
    return 1;
  if (pid == 0) {
    close(fds[0]);
    _exit(responder(fds[1]));
  }
  close(fds[1]);
  int port = 0;
  if (read(fds[0], &port, sizeof(port)) != sizeof(port) || port <= 0) {
    fprintf(stderr, "bench_client_futures: the responder did not start\n");
    return 1;
  }
  close(fds[0]);
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);

  uv_loop_t loop;
  uv_loop_init(&loop);
  double raw = measure_raw(&loop, url, seconds, conns);
  printf("bare HTTP client: %.2f us CPU per poll, %.2f allocations per poll (%u connections)\n",
         raw, raw_allocs_per_poll, conns);
  result_t last = { 0 };
  size_t last_n = 0;
  for (const char *p = counts; *p != '\0';) {
    char *end;
    size_t n = strtoul(p, &end, 10);
    if (end == p || n == 0) {
      fprintf(stderr, "bench_client_futures: bad --futures list \"%s\"\n", counts);
      return 2;
    }
    result_t r = measure_futures(&loop, url, n, seconds, conns);
    printf("%zu futures in flight: %.0f bytes per pending future, %.2f us CPU per poll "
           "(%.2fx the bare client), %.2f allocations per poll, %.0f polls/s\n",
           n, r.bytes_per_future, r.cpu_us_per_poll, raw > 0 ? r.cpu_us_per_poll / raw : 0,
           r.allocs_per_poll, r.polls_per_s);
    fflush(stdout);
    last = r;
    last_n = n;
    p = *end == ',' ? end + 1 : end;
  }
  printf("BENCH futures n=%zu bytes_per_future=%.0f cpu_us_per_poll=%.2f raw_cpu_us=%.2f "
         "ratio=%.2f polls_per_s=%.0f allocs_per_poll=%.2f raw_allocs_per_poll=%.2f\n",
         last_n, last.bytes_per_future, last.cpu_us_per_poll, raw,
         raw > 0 ? last.cpu_us_per_poll / raw : 0, last.polls_per_s, last.allocs_per_poll,
         raw_allocs_per_poll);
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  uv_loop_close(&loop);
  return 0;
}

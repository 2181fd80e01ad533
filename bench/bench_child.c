/*
 * `tinkerbell serve` in a child process of a benchmark (see
 * bench_child.h).  Everything runs on the benchmark's loop thread but the
 * fatal signal handler, which only kills the child and re-raises.
 */
#include "bench_child.h"

#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct child_s {
  uv_loop_t *loop;
  uv_process_t proc;
  uv_pipe_t out;
  char head[4096];  /* stdout until the "listening on" line */
  size_t head_len;
  char url[128];
  int started, exited, open;
  int64_t status;
  int signal;
  const char *prog;
} child_t;

static child_t srv;

void bench_child_kill(void) {
  if (srv.started && !srv.exited)
    kill(srv.proc.pid, SIGKILL);
}

int bench_child_exited(void) { return srv.exited; }

static const int fatal_signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT,
                                     SIGINT, SIGTERM, SIGHUP };
static struct sigaction old_actions[NSIG];

static void on_fatal_signal(int sig, siginfo_t *info, void *ctx) {
  bench_child_kill();
  const struct sigaction *o = &old_actions[sig];
  if ((o->sa_flags & SA_SIGINFO) && o->sa_sigaction != NULL) {
    o->sa_sigaction(sig, info, ctx);
  } else if (!(o->sa_flags & SA_SIGINFO) && o->sa_handler != SIG_DFL &&
             o->sa_handler != SIG_IGN) {
    o->sa_handler(sig);
  } else {
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

void bench_child_on_fatal_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_fatal_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++)
    sigaction(fatal_signals[i], &sa, &old_actions[fatal_signals[i]]);
}

static void on_closed(uv_handle_t *h) {
  (void)h;
  srv.open--;
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  srv.exited = 1;
  srv.status = status;
  srv.signal = sig;
  uv_close((uv_handle_t *)p, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char mem[4096];
  (void)h;
  (void)suggested;
  buf->base = mem;
  buf->len = sizeof(mem);
}

/* Reads the URL from "tinkerbell serve: listening on URL"; later output
 * is dropped. */
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  if (srv.url[0] != '\0')
    return;
  size_t room = sizeof(srv.head) - 1 - srv.head_len;
  size_t take = (size_t)n < room ? (size_t)n : room;
  memcpy(srv.head + srv.head_len, buf->base, take);
  srv.head_len += take;
  srv.head[srv.head_len] = '\0';
  const char *at = strstr(srv.head, "listening on ");
  const char *end = at ? strchr(at, '\n') : NULL;
  if (end != NULL) {
    at += strlen("listening on ");
    snprintf(srv.url, sizeof(srv.url), "%.*s", (int)(end - at), at);
  }
}

void bench_find_tinkerbell(const char *prog, const char *given, char *out,
                           size_t cap) {
  if (given != NULL) {
    snprintf(out, cap, "%s", given);
    return;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  exe[n > 0 ? n : 0] = '\0';
  const char *dir = dirname(exe);
  /* build/bench -> build/src/cli; libexec/tinkerbell -> bin */
  const char *rel[] = { "../src/cli/tinkerbell", "../../bin/tinkerbell" };
  for (size_t i = 0; i < 2; i++) {
    snprintf(out, cap, "%s/%s", dir, rel[i]);
    if (access(out, X_OK) == 0)
      return;
  }
  fprintf(stderr, "%s: tinkerbell not found beside %s (give --tinkerbell "
                  "PATH)\n", prog, dir);
  exit(2);
}

const char *bench_child_start(uv_loop_t *loop, const char *prog,
                              const char *exe, char *const *args) {
  char *argv[64] = { (char *)exe, "serve", "--host", "127.0.0.1", "--port",
                     "0" };
  size_t n = 6;
  for (size_t i = 0; args[i] != NULL && n + 1 < 64; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  srv.loop = loop;
  srv.prog = prog;
  uv_pipe_init(loop, &srv.out, 0);
  uv_stdio_container_t stdio[3] = {
    { .flags = UV_IGNORE },
    { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
      .data.stream = (uv_stream_t *)&srv.out },
    { .flags = UV_INHERIT_FD, .data.fd = 2 },
  };
  uv_process_options_t o = { .exit_cb = on_exit_cb, .file = exe,
                             .args = argv, .stdio_count = 3,
                             .stdio = stdio };
  int rc = uv_spawn(loop, &srv.proc, &o);
  if (rc != 0) {
    fprintf(stderr, "%s: cannot run %s: %s\n", prog, exe, uv_strerror(rc));
    exit(1);
  }
  srv.started = 1;
  srv.open = 2;
  uv_read_start((uv_stream_t *)&srv.out, on_alloc, on_read);
  while (srv.url[0] == '\0' && !srv.exited)
    uv_run(loop, UV_RUN_ONCE);
  if (srv.url[0] == '\0') {
    fprintf(stderr, "%s: %s serve exited (status %lld, signal %d) before "
                    "listening\n", prog, exe, (long long)srv.status,
            srv.signal);
    exit(1);
  }
  return srv.url;
}

void bench_child_stop(void) {
  if (!srv.exited)
    uv_process_kill(&srv.proc, SIGTERM);
  while (srv.open > 0)
    uv_run(srv.loop, UV_RUN_ONCE);
  if (srv.status != 0 || srv.signal != 0)
    fprintf(stderr, "%s: the server ended with status %lld, signal %d\n",
            srv.prog, (long long)srv.status, srv.signal);
}

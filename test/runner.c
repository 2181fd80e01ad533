/*
 * The test runner linked into every test executable.
 *
 * Each test runs in a child process so that a crash or a hang fails that
 * test alone; a hang is killed after its timeout (default 30 s, scaled by
 * TB_TEST_TIMEOUT_SCALE for slow builds such as the sanitizer build).
 * `./test_x name` runs one test in-process, which is what a debugger wants.
 * A test that cannot run here calls SKIP(reason): its process exits with
 * status 77 and the test is reported as skipped, never as passed.
 * Output: one "ok", "not ok" or "skip" line per test, a "N skipped" line
 * when any were, then "N passed, N failed".  An executable whose every
 * test skipped exits 77 itself, which meson reports as SKIP.
 */
#include "tb_test.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void tb_test_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  abort();
}

void tb_test_skip(const char *fmt, ...) {
  va_list ap;
  printf("# skipped: ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
  fflush(stderr);
  _exit(TB_TEST_SKIP_STATUS);
}

void *tb_test_xmalloc(size_t n, const char *file, int line) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) {
    fprintf(stderr, "%s:%d: out of memory (%zu bytes)\n", file, line, n);
    abort();
  }
  return p;
}

static void print_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  fprintf(stderr, "  open handle: %s%s\n", uv_handle_type_name(h->type),
          uv_is_closing(h) ? " (closing)" : "");
}

void tb_test_print_handles(uv_loop_t *loop) {
  uv_walk(loop, print_handle, NULL);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static unsigned timeout_of(const tb_test_t *t) {
  double scale = 1.0;
  const char *env = getenv("TB_TEST_TIMEOUT_SCALE");
  if (env != NULL && atof(env) > 0)
    scale = atof(env);
  return (unsigned)((t->timeout_ms ? t->timeout_ms : 30000) * scale);
}

enum { FAILED, PASSED, SKIPPED };

/* Runs one test in a child; returns PASSED, FAILED or SKIPPED. */
static int run_forked(const tb_test_t *t) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return FAILED;
  }
  if (pid == 0) {
    t->fn();
    fflush(stdout);
    fflush(stderr);
    _exit(0);
  }
  double deadline = now_ms() + timeout_of(t);
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
      break;
    if (r < 0 && errno != EINTR) {
      perror("waitpid");
      return FAILED;
    }
    if (now_ms() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      fprintf(stderr, "%s: timed out after %u ms\n", t->name, timeout_of(t));
      return FAILED;
    }
    usleep(1000);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return PASSED;
  if (WIFEXITED(status) && WEXITSTATUS(status) == TB_TEST_SKIP_STATUS)
    return SKIPPED;
  if (WIFSIGNALED(status))
    fprintf(stderr, "%s: killed by signal %d\n", t->name, WTERMSIG(status));
  else
    fprintf(stderr, "%s: exit status %d\n", t->name, WEXITSTATUS(status));
  return FAILED;
}

int tb_test_main(int argc, char **argv, const tb_test_t *tests) {
  /* A peer that closes a socket must not kill the test with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);

  if (argc > 1) {
    for (const tb_test_t *t = tests; t->name != NULL; t++) {
      if (strcmp(t->name, argv[1]) == 0) {
        t->fn();
        printf("ok - %s\n", t->name);
        printf("1 passed, 0 failed\n");
        return 0;
      }
    }
    fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
  }

  static const char *const verdict[] = { "not ok", "ok", "skip" };
  int count[3] = { 0 }, n = 0;
  for (const tb_test_t *t = tests; t->name != NULL; t++) {
    double t0 = now_ms();
    int v = run_forked(t);
    n++;
    count[v]++;
    printf("%s %d - %s (%.0f ms)\n", verdict[v], n, t->name, now_ms() - t0);
  }
  if (count[SKIPPED] > 0)
    printf("%d skipped\n", count[SKIPPED]);
  printf("%d passed, %d failed\n", count[PASSED], count[FAILED]);
  if (count[FAILED] > 0)
    return 1;
  return count[PASSED] == 0 && count[SKIPPED] > 0 ? TB_TEST_SKIP_STATUS : 0;
}

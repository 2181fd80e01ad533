/*
 * `tinkerbell serve` in a child process of a benchmark, on the
 * benchmark's loop: found beside the program or given, started on a free
 * port, its URL read from its "listening on" line, stopped gracefully at
 * the end, and killed when the program exits early or dies of a signal.
 * Not a harness: what the benchmark measures and prints is its own.
 */
#ifndef TB_BENCH_CHILD_H
#define TB_BENCH_CHILD_H

#include <stddef.h>
#include <uv.h>

/* The tinkerbell command: given, or the build tree's src/cli/tinkerbell
 * or the installed bin/tinkerbell beside this program's directory;
 * exits 2 when there is none.  prog names the program in messages. */
void bench_find_tinkerbell(const char *prog, const char *given, char *out,
                           size_t cap);
/* Runs `exe serve --host 127.0.0.1 --port 0 args...` (args ends with
 * NULL; a NULL in its middle ends it there too) on loop and returns its
 * URL once it listens; exits 1 when it cannot start or ends first.  One
 * server per program. */
const char *bench_child_start(uv_loop_t *loop, const char *prog,
                              const char *exe, char *const *args);
/* Non-zero once the server has exited. */
int bench_child_exited(void);
/* SIGTERM (a graceful close) and the wait for its end. */
void bench_child_stop(void);
/* Kills the server at once if it runs (at exit after a failure). */
void bench_child_kill(void);
/* A crash or a signal that ends the program kills the server first,
 * then goes on to the handler that was there before, or the default. */
void bench_child_on_fatal_signals(void);

#endif

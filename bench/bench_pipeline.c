/*
 * Training through the client runtime against the embedded server, each
 * figure against its peer in the same run:
 *
 *   pipeline  training steps per second of one client that submits the next
 *             step while the current one runs (two steps in flight), against
 *             the sync pattern (forward_backward, wait, optim_step, wait);
 *             the server is embedded on the same loop (model base, 8
 *             sequences of 128 tokens).
 *   delayed   the same two patterns through a loopback proxy that delays
 *             each direction by --delay-ms (10): what pipelining is for,
 *             a server that is not 0.1 ms away.  The proxy runs on the same
 *             loop, every delay a libuv timer.  Once with the batch above,
 *             once with a light one (1 x 16 tokens), where the round trips
 *             are nearly all of a step: the client's overlap alone.
 *   users     aggregate training tokens/s of several users training at once
 *             (each its own ServiceClient, session and adapter, pipelined),
 *             against one user alone doing the same per-user work.
 *
 * usage: bench_pipeline [--only pipeline|delayed|users] [--steps S]
 *                       [--users U] [--delay-ms MS]
 * Output: human lines, then one `BENCH pipeline key=value ...` line.
 */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/buf.h"
#include "core/log.h"
#include "kernels/kernels.h"
#include "tinkerbell.h"
#include "tinkerbell/training_client.h"

#define SEQS 8
#define SEQ_LEN 128

static void die(const char *what, const tb_error_t *err, int rc) {
  fprintf(stderr, "bench_pipeline: %s: %s\n", what,
          err && err->message ? tb_error_message(err) : tb_strerror(rc));
  exit(1);
}

static double now_s(void) {
  return (double)uv_hrtime() / 1e9;
}

/* ------------------------------------------------------------ embedded */

typedef struct {
  uv_loop_t loop;
  tb_server_t server;
  char url[64];
  char dir[64];
} embedded_t;

static void embedded_start(embedded_t *e) {
  uv_loop_init(&e->loop);
  snprintf(e->dir, sizeof(e->dir), "/tmp/tb-bench-pipeline-XXXXXX");
  if (mkdtemp(e->dir) == NULL)
    die("mkdtemp", NULL, TB_EIO);
  tb_server_options_t so = { .data_dir = e->dir };
  if (tb_server_init(&e->loop, &e->server, &so) != 0 ||
      tb_server_start_training(&e->server, NULL, 0, 0) != 0 ||
      tb_server_listen(&e->server, "127.0.0.1", 0) != 0)
    die(e->server.message, NULL, TB_EIO);
  snprintf(e->url, sizeof(e->url), "http://127.0.0.1:%d", tb_server_port(&e->server));
}

static void embedded_stop(embedded_t *e) {
  tb_server_close(&e->server, NULL);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  uv_loop_close(&e->loop);
  char cmd[96];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
  if (system(cmd) != 0)
    fprintf(stderr, "bench_pipeline: could not remove %s\n", e->dir);
}

/* ------------------------------------------------------------ delay proxy */

/* Bytes read from one side, written to the other once due. */
typedef struct chunk_s {
  struct chunk_s *next;
  uint64_t due;
  uv_write_t wr;
  uv_buf_t buf;
  char data[];
} chunk_t;

typedef struct pconn_s pconn_t;

/* One direction of a proxied connection. */
typedef struct {
  pconn_t *c;
  uv_tcp_t *to;
  chunk_t *head, *tail;
  uv_timer_t timer;
} pdir_t;

struct pconn_s {
  uv_tcp_t down, up;             /* the client's side, the server's side */
  uv_connect_t connect;
  pdir_t d2u, u2d;
  int up_ready;
  int closing;
  int open;                      /* handles not yet closed */
};

typedef struct {
  uv_tcp_t listener;
  struct sockaddr_in upstream;
  uint64_t delay_ms;
  char url[64];
} proxy_t;

static proxy_t proxy;

static void pdir_drop(pdir_t *d) {
  while (d->head != NULL) {
    chunk_t *k = d->head;
    d->head = k->next;
    free(k);
  }
  d->tail = NULL;
}

static void pconn_handle_closed(uv_handle_t *h) {
  pconn_t *c = h->data;
  if (--c->open == 0) {
    pdir_drop(&c->d2u);
    pdir_drop(&c->u2d);
    free(c);
  }
}

static void pconn_close(pconn_t *c) {
  if (c->closing)
    return;
  c->closing = 1;
  /* The timers' data was their direction; their close callback needs c. */
  c->d2u.timer.data = c->u2d.timer.data = c;
  uv_close((uv_handle_t *)&c->down, pconn_handle_closed);
  uv_close((uv_handle_t *)&c->up, pconn_handle_closed);
  uv_close((uv_handle_t *)&c->d2u.timer, pconn_handle_closed);
  uv_close((uv_handle_t *)&c->u2d.timer, pconn_handle_closed);
}

static void on_chunk_written(uv_write_t *wr, int status) {
  chunk_t *k = wr->data;
  pconn_t *c = wr->handle->data;
  free(k);
  if (status != 0)
    pconn_close(c);
}

static void pdir_flush(uv_timer_t *t);

static void pdir_arm(pdir_t *d, uint64_t min_ms) {
  if (d->head == NULL || d->c->closing)
    return;
  uint64_t now = uv_now(d->timer.loop);
  uint64_t wait = d->head->due > now ? d->head->due - now : 0;
  uv_timer_start(&d->timer, pdir_flush, wait > min_ms ? wait : min_ms, 0);
}

/* Writes every chunk that is due, in order. */
static void pdir_flush(uv_timer_t *t) {
  pdir_t *d = t->data;
  pconn_t *c = d->c;
  uint64_t now = uv_now(t->loop);
  if (d->to == &c->up && !c->up_ready) {
    pdir_arm(d, 1);  /* upstream still connecting */
    return;
  }
  while (d->head != NULL && d->head->due <= now) {
    chunk_t *k = d->head;
    d->head = k->next;
    if (d->head == NULL)
      d->tail = NULL;
    k->wr.data = k;
    if (uv_write(&k->wr, (uv_stream_t *)d->to, &k->buf, 1, on_chunk_written) != 0) {
      free(k);
      pconn_close(c);
      return;
    }
  }
  pdir_arm(d, 0);
}

static void palloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  chunk_t *k = malloc(sizeof(*k) + 65536);
  buf->base = k ? k->data : NULL;
  buf->len = k ? 65536 : 0;
}

static void on_pread(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  pconn_t *c = s->data;
  pdir_t *d = s == (uv_stream_t *)&c->down ? &c->d2u : &c->u2d;
  chunk_t *k = buf->base ? (chunk_t *)(buf->base - offsetof(chunk_t, data)) : NULL;
  if (n <= 0) {
    free(k);
    if (n < 0)
      pconn_close(c);
    return;
  }
  if (c->closing) {
    free(k);
    return;
  }
  k->next = NULL;
  k->due = uv_now(s->loop) + proxy.delay_ms;
  k->buf = uv_buf_init(k->data, (unsigned)n);
  if (d->tail != NULL)
    d->tail->next = k;
  else
    d->head = k;
  d->tail = k;
  if (d->head == k)
    pdir_arm(d, 0);
}

static void on_upstream(uv_connect_t *req, int status) {
  pconn_t *c = req->data;
  if (c->closing)
    return;
  if (status != 0) {
    pconn_close(c);
    return;
  }
  c->up_ready = 1;
  uv_read_start((uv_stream_t *)&c->up, palloc, on_pread);
}

static void on_proxy_conn(uv_stream_t *server, int status) {
  if (status != 0)
    return;
  pconn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    die("proxy", NULL, TB_ENOMEM);
  uv_loop_t *loop = server->loop;
  uv_tcp_init(loop, &c->down);
  uv_tcp_init(loop, &c->up);
  uv_timer_init(loop, &c->d2u.timer);
  uv_timer_init(loop, &c->u2d.timer);
  c->open = 4;
  c->down.data = c->up.data = c;
  c->d2u.c = c->u2d.c = c;
  c->d2u.to = &c->up;
  c->u2d.to = &c->down;
  c->d2u.timer.data = &c->d2u;
  c->u2d.timer.data = &c->u2d;
  if (uv_accept(server, (uv_stream_t *)&c->down) != 0) {
    pconn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->down, 1);
  c->connect.data = c;
  if (uv_tcp_connect(&c->connect, &c->up, (const struct sockaddr *)&proxy.upstream,
                     on_upstream) != 0) {
    pconn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->up, 1);
  uv_read_start((uv_stream_t *)&c->down, palloc, on_pread);
}

/* A proxy on an ephemeral loopback port in front of upstream_port. */
static void proxy_start(uv_loop_t *loop, int upstream_port, uint64_t delay_ms) {
  memset(&proxy, 0, sizeof(proxy));
  proxy.delay_ms = delay_ms;
  uv_ip4_addr("127.0.0.1", upstream_port, &proxy.upstream);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(loop, &proxy.listener);
  if (uv_tcp_bind(&proxy.listener, (const struct sockaddr *)&a, 0) != 0 ||
      uv_listen((uv_stream_t *)&proxy.listener, 128, on_proxy_conn) != 0)
    die("proxy listen", NULL, TB_EIO);
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  uv_tcp_getsockname(&proxy.listener, (struct sockaddr *)&ss, &len);
  snprintf(proxy.url, sizeof(proxy.url), "http://127.0.0.1:%d",
           ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

/* Stops listening; the proxied connections end when their peers close. */
static void proxy_stop(void) {
  uv_close((uv_handle_t *)&proxy.listener, NULL);
}

/* A batch of n random byte sequences of len tokens, every target trained. */
static void make_batch(tb_train_datum_t *d, uint64_t seed, int n, int len) {
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  int32_t tokens[SEQ_LEN + 1];
  for (int i = 0; i < n; i++) {
    for (int j = 0; j <= len; j++)
      tokens[j] = (int32_t)(tb__k_rng_next(&rng) % 256);
    d[i] = (tb_train_datum_t){ 0 };
    if (tb_train_datum_init_next_token(&d[i], tokens, NULL, (size_t)len + 1) != 0)
      die("datum", NULL, TB_ENOMEM);
  }
}

typedef struct {
  tb_service_client_t sc;
  tb_training_client_t tc;
  tb_train_datum_t batch[SEQS];
  int n;                         /* sequences per step, at most SEQS */
  tb_future_t *fb[2], *opt[2];
} trainer_t;

static void trainer_open_batch(trainer_t *t, uv_loop_t *loop, const char *url, uint64_t seed,
                               int n, int len) {
  tb_client_config_t cfg = { .base_url = url };
  tb_error_t err = { 0 };
  int rc = tb_service_client_init(loop, &t->sc, &cfg, &err);
  rc = rc ? rc : tb_service_client_create_lora_training_client_sync(&t->sc, &t->tc, "base", NULL,
                                                                    &err);
  if (rc != 0)
    die("create", &err, rc);
  t->n = n;
  make_batch(t->batch, seed, n, len);
}

static void trainer_open(trainer_t *t, uv_loop_t *loop, const char *url, uint64_t seed) {
  trainer_open_batch(t, loop, url, seed, SEQS, SEQ_LEN);
}

/* Clients still closing: their memory must live until then. */
static int closing;

static void on_sc_closed(tb_service_client_t *sc) {
  closing--;
}

static void on_tc_closed(tb_training_client_t *tc) {
  tb_service_client_close(tc->service, on_sc_closed);
}

static void trainer_close(trainer_t *t) {
  for (int i = 0; i < t->n; i++)
    tb_train_datum_clear(&t->batch[i]);
  closing++;
  tb_training_client_close(&t->tc, on_tc_closed);
}

static void wait_closed(uv_loop_t *loop) {
  while (closing > 0)
    uv_run(loop, UV_RUN_ONCE);
}

static void submit(trainer_t *t, int slot) {
  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  if (tb_training_client_forward_backward(&t->tc, t->batch, (size_t)t->n, "cross_entropy", NULL, 0,
                                          &t->fb[slot]) != 0 ||
      tb_training_client_optim_step(&t->tc, &adam, &t->opt[slot]) != 0)
    die("submit", NULL, TB_EIO);
}

static void finish(trainer_t *t, int slot) {
  if (tb_future_wait(t->fb[slot], 0) != 0)
    die("forward_backward", &t->fb[slot]->error, t->fb[slot]->status);
  if (tb_future_wait(t->opt[slot], 0) != 0)
    die("optim_step", &t->opt[slot]->error, t->opt[slot]->status);
  tb_future_free(t->fb[slot]);
  tb_future_free(t->opt[slot]);
}

/* Steps per second, sequential or with two steps in flight. */
static double run_steps(trainer_t *t, int steps, int pipelined) {
  double t0 = now_s();
  if (!pipelined) {
    /* The sync pattern: each call waits for its result. */
    tb_adamw_params_t adam;
    tb_adamw_params_default(&adam);
    tb_error_t err = { 0 };
    for (int s = 0; s < steps; s++) {
      tb_forward_backward_output_t *out = NULL;
      int rc = tb_training_client_forward_backward_sync(&t->tc, t->batch, (size_t)t->n, "cross_entropy",
                                                        NULL, 0, &out, &err);
      rc = rc ? rc : tb_training_client_optim_step_sync(&t->tc, &adam, NULL, &err);
      if (rc != 0)
        die("step", &err, rc);
      tb_forward_backward_output_free(out);
    }
  } else {
    submit(t, 0);
    for (int s = 1; s < steps; s++) {
      submit(t, s % 2);
      finish(t, (s - 1) % 2);
    }
    finish(t, (steps - 1) % 2);
  }
  return steps / (now_s() - t0);
}

/* Steps/s of t sequential and pipelined after two warm-up steps (buffers,
 * connections), the modes alternated twice so that drift of the machine
 * hits both. */
static void both_modes(trainer_t *t, int steps, double *seq_sps, double *pipe_sps) {
  run_steps(t, 2, 0);
  double a = 0, b = 0;
  for (int r = 0; r < 2; r++) {
    a += run_steps(t, steps, 0);
    b += run_steps(t, steps, 1);
  }
  *seq_sps = a / 2;
  *pipe_sps = b / 2;
}

static void bench_pipeline(int steps, double *seq_sps, double *pipe_sps) {
  embedded_t e;
  embedded_start(&e);
  trainer_t t;
  trainer_open(&t, &e.loop, e.url, 1);
  both_modes(&t, steps, seq_sps, pipe_sps);
  trainer_close(&t);
  wait_closed(&e.loop);
  embedded_stop(&e);
  printf("pipeline: %.2f steps/s sequential, %.2f steps/s pipelined, ratio %.2f "
         "(%d x %d tokens per step)\n", *seq_sps, *pipe_sps, *pipe_sps / *seq_sps, SEQS,
         SEQ_LEN);
}

/* The same through the delay proxy: a server delay_ms away each way,
 * with n sequences of len tokens per step (the light batch leaves the
 * client's overlap of round trips alone in the figure). */
static void bench_delayed(int steps, uint64_t delay_ms, int n, int len, double *seq_sps,
                          double *pipe_sps) {
  embedded_t e;
  embedded_start(&e);
  proxy_start(&e.loop, tb_server_port(&e.server), delay_ms);
  trainer_t t;
  trainer_open_batch(&t, &e.loop, proxy.url, 1, n, len);
  both_modes(&t, steps, seq_sps, pipe_sps);
  trainer_close(&t);
  wait_closed(&e.loop);
  proxy_stop();
  embedded_stop(&e);
  printf("pipeline, server %llu ms away each way, %d x %d tokens per step: %.2f steps/s "
         "sequential, %.2f steps/s pipelined, ratio %.2f\n", (unsigned long long)delay_ms, n,
         len, *seq_sps, *pipe_sps, *pipe_sps / *seq_sps);
}

/* Aggregate tokens/s of n users each running steps pipelined steps. */
static double users_tokens_per_s(embedded_t *e, int n, int steps) {
  trainer_t *t = calloc((size_t)n, sizeof(*t));
  for (int u = 0; u < n; u++)
    trainer_open(&t[u], &e->loop, e->url, (uint64_t)u + 10);
  double t0 = now_s();
  for (int u = 0; u < n; u++)
    submit(&t[u], 0);
  for (int s = 1; s < steps; s++)
    for (int u = 0; u < n; u++) {
      submit(&t[u], s % 2);
      finish(&t[u], (s - 1) % 2);
    }
  for (int u = 0; u < n; u++)
    finish(&t[u], (steps - 1) % 2);
  double tps = (double)n * steps * SEQS * SEQ_LEN / (now_s() - t0);
  for (int u = 0; u < n; u++)
    trainer_close(&t[u]);
  wait_closed(&e->loop);
  free(t);
  return tps;
}

static void bench_users(int users, int steps, double *one, double *many) {
  embedded_t e;
  embedded_start(&e);
  users_tokens_per_s(&e, 1, 2); /* warm up */
  *one = users_tokens_per_s(&e, 1, steps);
  *many = users_tokens_per_s(&e, users, steps);
  embedded_stop(&e);
  printf("users: one user %.0f tokens/s, %d users at once %.0f tokens/s in all, ratio %.2f\n",
         *one, users, *many, *many / *one);
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
  const char *only = NULL;
  int steps = 20, users = 4;
  long delay_ms = 10;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
      only = argv[++i];
    else if (strcmp(argv[i], "--delay-ms") == 0 && i + 1 < argc)
      delay_ms = atol(argv[++i]);
    else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--users") == 0 && i + 1 < argc)
      users = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_pipeline [--only pipeline|delayed|users] [--steps S] "
                      "[--users U] [--delay-ms MS]\n");
      return 2;
    }
  }
  if (delay_ms < 1 || delay_ms > 10000) {
    fprintf(stderr, "bench_pipeline: --delay-ms must be from 1 to 10000\n");
    return 2;
  }
  if (steps < 2 || users < 2) {
    fprintf(stderr, "bench_pipeline: --steps and --users must be at least 2\n");
    return 2;
  }
  if (getenv("TINKERBELL_LOG") == NULL)
    tb__log_set_level(TB_LOG_ERROR);
  signal(SIGPIPE, SIG_IGN);
  tb__buf_t line = TB_BUF_INIT;
  tb__buf_printf(&line, "BENCH pipeline");
  if (only == NULL || strcmp(only, "pipeline") == 0) {
    double seq, pipe;
    bench_pipeline(steps, &seq, &pipe);
    tb__buf_printf(&line, " seq_sps=%.2f pipe_sps=%.2f pipe_ratio=%.2f", seq, pipe, pipe / seq);
  }
  if (only == NULL || strcmp(only, "delayed") == 0) {
    double seq, pipe, lseq, lpipe;
    bench_delayed(steps, (uint64_t)delay_ms, SEQS, SEQ_LEN, &seq, &pipe);
    bench_delayed(steps, (uint64_t)delay_ms, 1, 16, &lseq, &lpipe);
    tb__buf_printf(&line, " delay_ms=%ld delay_seq_sps=%.2f delay_pipe_sps=%.2f "
                   "delay_ratio=%.2f light_seq_sps=%.2f light_pipe_sps=%.2f light_ratio=%.2f",
                   delay_ms, seq, pipe, pipe / seq, lseq, lpipe, lpipe / lseq);
  }
  if (only == NULL || strcmp(only, "users") == 0) {
    double one, many;
    bench_users(users, steps / 2 > 2 ? steps / 2 : 2, &one, &many);
    tb__buf_printf(&line, " users=%d one_tps=%.0f users_tps=%.0f users_ratio=%.2f", users, one,
                   many, many / one);
  }
  tb__buf_terminate(&line);
  printf("%s\n", line.base);
  tb__buf_free(&line);
  return 0;
}

/*
 * What the C examples share: the server's address from the command line
 * (else TINKER_BASE_URL, else http://127.0.0.1:8000), one training datum
 * from a chat, the mean loss per trained token of a result, and closing
 * the clients in order.  The examples mirror the three programs of the
 * Tinkerbell async API guide, on the Tinker API through the client runtime.
 */
#ifndef TB_EXAMPLES_COMMON_H
#define TB_EXAMPLES_COMMON_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "tinkerbell.h"
#include "tinkerbell/training_client.h"

static inline void die(const char *what, const tb_error_t *err, int rc) {
  fprintf(stderr, "%s: %s\n", what,
          err != NULL && err->message ? tb_error_message(err) : tb_strerror(rc));
  exit(1);
}

/* The loop and a ServiceClient of the server named on the command line
 * (argv[1]; else TINKER_BASE_URL, else the default). */
static inline void open_service(uv_loop_t *loop, tb_service_client_t *sc, int argc,
                                char **argv) {
  /* libuv leaves SIGPIPE alone: a server that goes away mid-write must
   * give an error, not end the program. */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_init(loop);
  tb_client_config_t cfg = { .base_url = argc > 1 ? argv[1] : NULL };
  tb_error_t err = { 0 };
  int rc = tb_service_client_init(loop, sc, &cfg, &err);
  if (rc != 0)
    die("service client", &err, rc);
}

/* LoRA parameters of rank 16 on every target. */
static inline tb_lora_params_t rank16(void) {
  tb_lora_params_t lora;
  tb_lora_params_default(&lora);
  lora.rank = 16;
  return lora;
}

/* One next-token example of a conversation of `base`; *trained receives
 * the number of tokens its loss counts. */
static inline void chat_datum(tb_train_datum_t *d, const char *user, const char *assistant,
                       size_t *trained) {
  const tb_chat_message_t chat[] = { { "user", user }, { "assistant", assistant } };
  int32_t *tokens;
  float *weights;
  size_t n;
  tb_error_t err = { 0 };
  int rc = tb_base_chat_render(chat, 2, 0, &tokens, &weights, &n, &err);
  if (rc != 0)
    die("render", &err, rc);
  *d = (tb_train_datum_t){ 0 };
  rc = tb_train_datum_init_next_token(d, tokens, weights, n);
  if (rc != 0)
    die("datum", NULL, rc);
  *trained = 0;
  for (size_t i = 1; i < n; i++)
    *trained += weights[i] > 0;
  free(tokens);
  free(weights);
}

/* The loss per trained token of a forward_backward result. */
static inline double mean_loss(const tb_forward_backward_output_t *out, size_t trained) {
  double sum = 0;
  tb_forward_backward_output_metric(out, "loss:sum", &sum);
  return sum / (double)trained;
}

static inline void on_service_closed(tb_service_client_t *sc) {
  (void)sc;
}

/* A training client closes before the ServiceClient it was made from. */
static inline void on_training_closed(tb_training_client_t *tc) {
  tb_service_client_close(tc->service, on_service_closed);
}

static inline void close_and_finish(uv_loop_t *loop, tb_training_client_t *tc) {
  tb_training_client_close(tc, on_training_closed);
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0) {
    fprintf(stderr, "the loop did not close\n");
    exit(1);
  }
}

#endif /* TB_EXAMPLES_COMMON_H */

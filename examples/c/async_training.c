/*
 * Async training: every step is submitted at once, then the results are
 * collected.  The operations keep their call order on the server (each
 * takes its seq_id when called), so step k's forward_backward sees the
 * weights of step k-1's optim_step while all of them are in flight.  The C
 * form of Example 2 of the Tinkerbell async API guide.
 *
 *   async_training [BASE_URL]
 */
#include "common.h"

#define STEPS 5

int main(int argc, char **argv) {
  uv_loop_t loop;
  tb_service_client_t sc;
  open_service(&loop, &sc, argc, argv);
  int rc;

  /* 1. Create the adapter; the steps below may be called before it exists. */
  tb_training_client_t tc;
  tb_lora_params_t lora = rank16();
  tb_future_t *created;
  rc = tb_service_client_create_lora_training_client(&sc, &tc, "base", &lora, &created);
  if (rc != 0)
    die("create the adapter", NULL, rc);

  /* 2. Training data. */
  tb_train_datum_t datum;
  size_t trained;
  chat_datum(&datum, "Hello!", "Hi there!", &trained);
  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  adam.learning_rate = 1e-3;

  /* 3. Submit every step: nothing waits here. */
  printf("Submitting %d training steps asynchronously...\n", STEPS);
  tb_future_t *fb[STEPS], *opt[STEPS];
  for (int i = 0; i < STEPS; i++) {
    rc = tb_training_client_forward_backward(&tc, &datum, 1, "cross_entropy", NULL, 0, &fb[i]);
    rc = rc ? rc : tb_training_client_optim_step(&tc, &adam, &opt[i]);
    if (rc != 0)
      die("submit", NULL, rc);
    printf("  Submitted step %d\n", i + 1);
  }
  tb_train_datum_clear(&datum);
  if (tb_future_wait(created, 0) != 0)
    die("create the adapter", &created->error, created->status);
  printf("Created adapter: %s\nAll steps submitted! Waiting for results...\n", tc.model_id);
  tb_future_free(created);

  /* 4. Collect the results in order. */
  double first = 0, last = 0;
  for (int i = 0; i < STEPS; i++) {
    if (tb_future_wait(fb[i], 0) != 0)
      die("forward_backward", &fb[i]->error, fb[i]->status);
    last = mean_loss(tb_future_result(fb[i], &tb_result_forward_backward_output), trained);
    if (i == 0)
      first = last;
    printf("  Step %d complete - Loss: %.4f\n", i + 1, last);
    if (tb_future_wait(opt[i], 0) != 0)
      die("optim_step", &opt[i]->error, opt[i]->status);
    printf("  Step %d optimizer applied\n", i + 1);
    tb_future_free(fb[i]);
    tb_future_free(opt[i]);
  }
  close_and_finish(&loop, &tc);
  printf("Loss %.4f -> %.4f\nDone!\n", first, last);
  return last < first ? 0 : 1;
}

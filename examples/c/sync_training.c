/*
 * Sync training: every call blocks until its result is back.  The C form
 * of Example 1 of the Tinkerbell async API guide.
 *
 *   sync_training [BASE_URL]
 */
#include "common.h"

int main(int argc, char **argv) {
  uv_loop_t loop;
  tb_service_client_t sc;
  open_service(&loop, &sc, argc, argv);
  tb_error_t err = { 0 };
  int rc;

  /* 1. Create a LoRA adapter. */
  tb_training_client_t tc;
  tb_lora_params_t lora = rank16();
  rc = tb_service_client_create_lora_training_client_sync(&sc, &tc, "base", &lora, &err);
  if (rc != 0)
    die("create the adapter", &err, rc);
  printf("Created adapter: %s\n", tc.model_id);

  /* 2. Training data. */
  tb_train_datum_t datum;
  size_t trained;
  chat_datum(&datum, "Hello!", "Hi there!", &trained);
  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  adam.learning_rate = 1e-3;

  /* 3. Train: each call waits for its result. */
  for (int step = 1; step <= 5; step++) {
    printf("Step %d/5...\n", step);
    tb_forward_backward_output_t *out;
    rc = tb_training_client_forward_backward_sync(&tc, &datum, 1, "cross_entropy", NULL, 0, &out,
                                                  &err);
    if (rc != 0)
      die("forward_backward", &err, rc);
    printf("  Loss: %.4f\n", mean_loss(out, trained));
    tb_forward_backward_output_free(out);
    rc = tb_training_client_optim_step_sync(&tc, &adam, NULL, &err);
    if (rc != 0)
      die("optim_step", &err, rc);
    printf("  Optimizer applied\n");
  }
  tb_train_datum_clear(&datum);
  close_and_finish(&loop, &tc);
  printf("Done!\n");
  return 0;
}

/*
 * Parallel client creation: four training clients and a sampling client
 * are created at once with the async creation functions, and one
 * tb_future_wait_many waits for all of them (results in input order,
 * every outcome reported even when one fails).
 *
 *   parallel_create [BASE_URL]
 */
#include "common.h"

#define TRAINERS 4

/* The ServiceClient closes once every client made from it has. */
static tb_service_client_t sc;
static int open_clients;

static void client_closed(void) {
  if (--open_clients == 0)
    tb_service_client_close(&sc, on_service_closed);
}

static void on_sampling_closed(tb_sampling_client_t *samp) {
  client_closed();
}

static void on_trainer_closed(tb_training_client_t *tc) {
  client_closed();
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  open_service(&loop, &sc, argc, argv);
  int rc;

  tb_training_client_t tc[TRAINERS];
  tb_sampling_client_t samp;
  tb_future_t *f[TRAINERS + 1];
  for (int i = 0; i < TRAINERS; i++) {
    tb_lora_params_t lora;
    tb_lora_params_default(&lora);
    lora.rank = 4 << i;          /* 4, 8, 16, 32 */
    rc = tb_service_client_create_lora_training_client(&sc, &tc[i], "base", &lora, &f[i]);
    if (rc != 0)
      die("create", NULL, rc);
  }
  rc = tb_service_client_create_sampling_client(&sc, &samp, NULL, "base", &f[TRAINERS]);
  if (rc != 0)
    die("create the sampling client", NULL, rc);

  int statuses[TRAINERS + 1];
  rc = tb_future_wait_many(f, TRAINERS + 1, 60000, statuses);
  for (int i = 0; i < TRAINERS; i++)
    printf("training client %d (rank %d): %s\n", i, 4 << i,
           statuses[i] == 0 ? tc[i].model_id : tb_strerror(statuses[i]));
  printf("sampling client: %s\n",
         statuses[TRAINERS] == 0 ? samp.sampling_session_id : tb_strerror(statuses[TRAINERS]));
  for (int i = 0; i <= TRAINERS; i++)
    tb_future_free(f[i]);

  open_clients = TRAINERS + 1;
  tb_sampling_client_close(&samp, on_sampling_closed);
  for (int i = 0; i < TRAINERS; i++)
    tb_training_client_close(&tc[i], on_trainer_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    return 1;
  printf("Done!\n");
  return rc == 0 ? 0 : 1;
}

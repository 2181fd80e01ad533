#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>
#include "tinkerbell.h"
#include "tinkerbell/training_client.h"

int main(void) {
  signal(SIGPIPE, SIG_IGN);                 /* libuv leaves it to the program */
  uv_loop_t loop;
  uv_loop_init(&loop);
  tb_client_config_t cfg = { 0 };          /* TINKER_BASE_URL, TINKER_API_KEY */
  tb_service_client_t sc;
  tb_error_t err = { 0 };
  if (tb_service_client_init(&loop, &sc, &cfg, &err) != 0)
    return fprintf(stderr, "%s\n", tb_error_message(&err)), 1;

  tb_training_client_t tc;
  if (tb_service_client_create_lora_training_client_sync(&sc, &tc, "base", NULL, &err) != 0)
    return fprintf(stderr, "%s\n", tb_error_message(&err)), 1;

  /* One conversation, rendered with the chat template of `base`. */
  const tb_chat_message_t chat[] = { { "user", "Hello!" }, { "assistant", "Hi there!" } };
  int32_t *tokens;
  float *weights;
  size_t n;
  tb_base_chat_render(chat, 2, 0, &tokens, &weights, &n, &err);
  tb_train_datum_t datum = { 0 };
  tb_train_datum_init_next_token(&datum, tokens, weights, n);

  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  adam.learning_rate = 1e-3;
  for (int step = 0; step < 5; step++) {
    tb_forward_backward_output_t *out;
    if (tb_training_client_forward_backward_sync(&tc, &datum, 1, "cross_entropy", NULL, 0,
                                                 &out, &err) != 0 ||
        tb_training_client_optim_step_sync(&tc, &adam, NULL, &err) != 0)
      return fprintf(stderr, "%s\n", tb_error_message(&err)), 1;
    double loss_sum;
    tb_forward_backward_output_metric(out, "loss:sum", &loss_sum);
    printf("step %d: loss:sum %.3f\n", step + 1, loss_sum);
    tb_forward_backward_output_free(out);
  }
  tb_train_datum_clear(&datum);
  free(tokens);
  free(weights);
  tb_training_client_close(&tc, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);             /* the training client closes */
  tb_service_client_close(&sc, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) == 0 ? 0 : 1;
}

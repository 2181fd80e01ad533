/*
 * Several users training at once on one loop: each has its own
 * ServiceClient (its own session; with API keys, its own key), its own
 * adapter and its own pipelined steps, and every future of every user is
 * awaited together.  The C form of Example 3 of the Tinkerbell async API
 * guide, without threads: the loop runs everyone.
 *
 *   multi_user [BASE_URL]
 */
#include "common.h"

#define USERS 3
#define STEPS 3

typedef struct user_s {
  const char *name;
  tb_service_client_t sc;
  tb_training_client_t tc;
  tb_train_datum_t datum;
  size_t trained;
  tb_future_t *created;
  tb_future_t *fb[STEPS], *opt[STEPS];
} user_t;

int main(int argc, char **argv) {
  /* libuv leaves SIGPIPE alone: a server that goes away mid-write must
   * give an error, not end the program. */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t loop;
  uv_loop_init(&loop);
  const char *base_url = argc > 1 ? argv[1] : NULL;
  static user_t users[USERS] = { { .name = "Alice" }, { .name = "Bob" }, { .name = "Carol" } };
  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  adam.learning_rate = 1e-3;

  /* Everything is submitted before anything is awaited. */
  for (int u = 0; u < USERS; u++) {
    user_t *p = &users[u];
    tb_client_config_t cfg = { .base_url = base_url };
    tb_error_t err = { 0 };
    int rc = tb_service_client_init(&loop, &p->sc, &cfg, &err);
    if (rc != 0)
      die("service client", &err, rc);
    rc = tb_service_client_create_lora_training_client(&p->sc, &p->tc, "base", NULL, &p->created);
    if (rc != 0)
      die("create", NULL, rc);
    char hello[64], hi[64];
    snprintf(hello, sizeof(hello), "Hello %s!", p->name);
    snprintf(hi, sizeof(hi), "Hi %s!", p->name);
    chat_datum(&p->datum, hello, hi, &p->trained);
    for (int s = 0; s < STEPS; s++) {
      rc = tb_training_client_forward_backward(&p->tc, &p->datum, 1, "cross_entropy", NULL, 0,
                                               &p->fb[s]);
      rc = rc ? rc : tb_training_client_optim_step(&p->tc, &adam, &p->opt[s]);
      if (rc != 0)
        die("submit", NULL, rc);
    }
    printf("[%s] Starting...\n", p->name);
  }

  /* One wait for every future of every user, in a known order. */
  tb_future_t *all[USERS * (1 + 2 * STEPS)];
  size_t n = 0;
  for (int u = 0; u < USERS; u++) {
    all[n++] = users[u].created;
    for (int s = 0; s < STEPS; s++) {
      all[n++] = users[u].fb[s];
      all[n++] = users[u].opt[s];
    }
  }
  int statuses[USERS * (1 + 2 * STEPS)];
  int rc = tb_future_wait_many(all, n, 0, statuses);
  if (rc != 0)
    die("training", NULL, rc);

  int ok = 1;
  for (int u = 0; u < USERS; u++) {
    user_t *p = &users[u];
    printf("[%s] Created adapter: %s\n", p->name, p->tc.model_id);
    double first = 0, last = 0;
    for (int s = 0; s < STEPS; s++) {
      last = mean_loss(tb_future_result(p->fb[s], &tb_result_forward_backward_output), p->trained);
      first = s == 0 ? last : first;
      printf("[%s] Step %d: Loss=%.4f\n", p->name, s + 1, last);
    }
    ok &= last < first;
    printf("[%s] Done!\n", p->name);
  }
  for (size_t i = 0; i < n; i++)
    tb_future_free(all[i]);
  for (int u = 0; u < USERS; u++) {
    tb_train_datum_clear(&users[u].datum);
    tb_training_client_close(&users[u].tc, on_training_closed);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    return 1;
  printf("All users trained!\n");
  return ok ? 0 : 1;
}

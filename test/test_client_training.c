/*
 * The training and sampling clients against the real server on the same
 * loop: a full training run on `base` -- creation, pipelined
 * forward_backward and optim_step with the loss falling, sampler weights
 * and samples from them, a state saved and a training client restored
 * from it -- in protobuf and in JSON.
 */
#define _GNU_SOURCE
#include "tb_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tinkerbell/sampling_client.h"
#include "tinkerbell/server.h"
#include "tinkerbell/service_client.h"
#include "tinkerbell/training_client.h"

typedef struct world_s {
  uv_loop_t loop;
  tb_server_t server;
  tb_service_client_t sc;
  char data_dir[64];
  int closed;
} world_t;

static void world_start(world_t *w) {
  memset(w, 0, sizeof(*w));
  ASSERT_OK(uv_loop_init(&w->loop));
  strcpy(w->data_dir, "/tmp/tb-client-XXXXXX");
  ASSERT(mkdtemp(w->data_dir) != NULL);
  tb_server_options_t o = { .data_dir = w->data_dir, .long_poll_ms = 10000 };
  ASSERT_OK(tb_server_init(&w->loop, &w->server, &o));
  ASSERT_OK(tb_server_start_training(&w->server, NULL, 0, 2));
  ASSERT_OK(tb_server_listen(&w->server, "127.0.0.1", 0));
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d", tb_server_port(&w->server));
  tb_client_config_t cfg = { .base_url = url, .wait_timeout_ms = 300000 };
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(&w->loop, &w->sc, &cfg, &err));
}

static void on_server_closed(tb_server_t *s) {
  ((world_t *)s->data)->closed++;
  uv_stop(s->loop);
}

static void on_sc_closed(tb_service_client_t *sc) {
  world_t *w = sc->data;
  w->closed++;
  uv_stop(sc->loop);
  w->server.data = w;
  tb_server_close(&w->server, on_server_closed);
}

static void world_stop(world_t *w) {
  w->sc.data = w;
  tb_service_client_close(&w->sc, on_sc_closed);
  while (w->closed < 2)
    uv_run(&w->loop, UV_RUN_ONCE);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&w->loop);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", w->data_dir);
  ASSERT_OK(system(cmd));
}

static int n_closed;
/* The close callbacks stop uv_run: they run from a timer, after which a
 * UV_RUN_ONCE would otherwise sleep until the next unrelated event. */
static void on_tc_closed(tb_training_client_t *tc) {
  n_closed++;
  uv_stop(tc->loop);
}
static void on_samp_closed(tb_sampling_client_t *s) {
  n_closed++;
  uv_stop(s->loop);
}

/* Closes clients made from w->sc and waits for them. */
static void close_training(world_t *w, tb_training_client_t *tc) {
  int before = n_closed;
  tb_training_client_close(tc, on_tc_closed);
  while (n_closed == before)
    uv_run(&w->loop, UV_RUN_ONCE);
  ASSERT(tc->impl_ == NULL);
}

static void close_sampling(world_t *w, tb_sampling_client_t *s) {
  int before = n_closed;
  tb_sampling_client_close(s, on_samp_closed);
  while (n_closed == before)
    uv_run(&w->loop, UV_RUN_ONCE);
}

/* Two next-token examples of byte tokens (the base model's vocabulary). */
static const char *texts[] = { "the cat sat on the mat. the cat sat on the mat.",
                               "a dog ran in the park. a dog ran in the park." };

static void make_data(tb_train_datum_t d[2]) {
  for (int i = 0; i < 2; i++) {
    size_t n = strlen(texts[i]);
    int32_t toks[64];
    for (size_t k = 0; k < n; k++)
      toks[k] = (unsigned char)texts[i][k];
    memset(&d[i], 0, sizeof(d[i]));
    ASSERT_OK(tb_train_datum_init_next_token(&d[i], toks, NULL, n));
  }
}

static double loss_of(tb_future_t *f) {
  const tb_forward_backward_output_t *o = tb_future_result(f, &tb_result_forward_backward_output);
  ASSERT(o != NULL);
  double v = NAN;
  ASSERT(tb_forward_backward_output_metric(o, "loss:sum", &v));
  return v;
}

#define STEPS 6

TEST(training_run) {
  world_t w;
  world_start(&w);
  tb_training_client_t tc;
  tb_future_t *created;
  tb_lora_params_t lora;
  tb_lora_params_default(&lora);
  lora.rank = 4;
  ASSERT_OK(tb_service_client_create_lora_training_client(&w.sc, &tc, "base", &lora, &created));
  ASSERT(tc.model_id == NULL);

  /* Every step is submitted before any result is back: the client keeps
   * their order by seq_id and the turns of their POSTs. */
  tb_train_datum_t data[2];
  make_data(data);
  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  adam.learning_rate = 0.02;
  tb_future_t *fs[1 + 2 * STEPS];
  fs[0] = created;
  for (int k = 0; k < STEPS; k++) {
    ASSERT_OK(tb_training_client_forward_backward(&tc, data, 2, "cross_entropy", NULL, 0,
                                                  &fs[1 + 2 * k]));
    ASSERT_OK(tb_training_client_optim_step(&tc, &adam, &fs[2 + 2 * k]));
  }
  int st[1 + 2 * STEPS];
  int rc = tb_future_wait_many(fs, 1 + 2 * STEPS, 300000, st);
  for (int i = 0; i < 1 + 2 * STEPS; i++)
    if (st[i] != 0)
      fprintf(stderr, "future %d: %s\n", i, tb_error_message(&fs[i]->error));
  ASSERT_OK(rc);
  ASSERT(tc.model_id != NULL);
  ASSERT_STR_EQ(tb_future_result(created, &tb_result_string), tc.model_id);
  double first = loss_of(fs[1]), last = loss_of(fs[1 + 2 * (STEPS - 1)]);
  ASSERT_GT(first, 0);
  ASSERT_LT(last, first * 0.9);
  const tb_forward_backward_output_t *o = tb_future_result(fs[1], &tb_result_forward_backward_output);
  ASSERT_EQ_INT(o->n_outputs, 2);
  const tb_tensor_data_t *lp = tb_forward_backward_output_tensor(o, 1, "logprobs");
  ASSERT(lp != NULL);
  ASSERT_EQ_INT(lp->numel, strlen(texts[1]) - 1);
  const tb_optim_step_output_t *os = tb_future_result(fs[2], &tb_result_optim_step_output);
  ASSERT(os != NULL && os->n_metrics > 0);
  for (int i = 0; i < 1 + 2 * STEPS; i++)
    tb_future_free(fs[i]);

  /* The model as the server describes it. */
  tb_error_t err = { 0 };
  tb_model_info_t *info = NULL;
  ASSERT_OK(tb_training_client_get_info_sync(&tc, &info, &err));
  ASSERT_STR_EQ(info->model_id, tc.model_id);
  ASSERT_STR_EQ(info->model_name, "base");
  ASSERT_EQ_INT(info->lora_rank, 4);
  tb_model_info_free(info);

  /* The same forward in JSON gives the same loss as in protobuf. */
  tb_forward_backward_output_t *fp = NULL, *fj = NULL;
  ASSERT_OK(tb_training_client_forward_sync(&tc, data, 2, "cross_entropy", NULL, 0, &fp, &err));
  tb_training_client_use_json(&tc, 1);
  ASSERT_OK(tb_training_client_forward_sync(&tc, data, 2, "cross_entropy", NULL, 0, &fj, &err));
  tb_training_client_use_json(&tc, 0);
  double lp_loss, lj_loss;
  ASSERT(tb_forward_backward_output_metric(fp, "loss:sum", &lp_loss));
  ASSERT(tb_forward_backward_output_metric(fj, "loss:sum", &lj_loss));
  ASSERT_NEAR(lj_loss, lp_loss, 1e-4, 1e-5);
  ASSERT_LT(lp_loss, first);
  tb_forward_backward_output_free(fj);

  /* Sampler weights, and samples from them. */
  char *sampler_path = NULL;
  ASSERT_OK(tb_training_client_save_weights_for_sampler_sync(&tc, "final", 0, &sampler_path,
                                                            &err));
  ASSERT_STR_CONTAINS(sampler_path, "/sampler_weights/final");
  tb_sampling_client_t samp;
  ASSERT_OK(tb_training_client_create_sampling_client_sync(&tc, sampler_path, &samp, &err));
  ASSERT(samp.sampling_session_id != NULL);
  tb_model_input_t prompt = { 0 };
  int32_t ptoks[] = { 't', 'h', 'e', ' ' };
  ASSERT_OK(tb_model_input_init(&prompt, ptoks, 4));
  tb_sample_params_t sp;
  tb_sample_params_default(&sp);
  sp.max_tokens = 8;
  sp.has_seed = 1;
  sp.seed = 7;
  tb_sample_response_t *resp = NULL;
  ASSERT_OK(tb_sampling_client_sample_sync(&samp, &prompt, 2, &sp, 1, 0, &resp, &err));
  ASSERT_EQ_INT(resp->n_sequences, 2);
  for (size_t i = 0; i < 2; i++) {
    ASSERT_GT(resp->sequences[i].n_tokens, 0);
    ASSERT_LE(resp->sequences[i].n_tokens, 8);
    ASSERT(resp->sequences[i].logprobs != NULL);
  }
  ASSERT_EQ_INT(resp->n_prompt_logprobs, 4);
  ASSERT(isnan(resp->prompt_logprobs[0]));
  tb_sample_response_free(resp);
  /* The same seed samples the same tokens. */
  tb_sample_response_t *r1 = NULL, *r2 = NULL;
  sp.temperature = 0.8;
  ASSERT_OK(tb_sampling_client_sample_sync(&samp, &prompt, 1, &sp, 0, 0, &r1, &err));
  ASSERT_OK(tb_sampling_client_sample_sync(&samp, &prompt, 1, &sp, 0, 0, &r2, &err));
  ASSERT_EQ_INT(r1->sequences[0].n_tokens, r2->sequences[0].n_tokens);
  ASSERT(memcmp(r1->sequences[0].tokens, r2->sequences[0].tokens,
                r1->sequences[0].n_tokens * sizeof(int32_t)) == 0);
  tb_sample_response_free(r1);
  tb_sample_response_free(r2);
  tb_logprobs_t *lps = NULL;
  ASSERT_OK(tb_sampling_client_compute_logprobs_sync(&samp, &prompt, &lps, &err));
  ASSERT_EQ_INT(lps->n, 4);
  ASSERT(isnan(lps->values[0]));
  ASSERT_LT(lps->values[1], 0);
  tb_logprobs_free(lps);
  char *base = NULL;
  ASSERT_OK(tb_sampling_client_get_base_model_sync(&samp, &base, &err));
  ASSERT_STR_EQ(base, "base");
  free(base);
  close_sampling(&w, &samp);

  /* The ephemeral form: weights saved and a sampling client in one go. */
  tb_sampling_client_t eph;
  ASSERT_OK(tb_training_client_save_weights_and_get_sampling_client_sync(&tc, &eph, &err));
  ASSERT(eph.sampling_session_id != NULL);
  ASSERT_OK(tb_sampling_client_sample_sync(&eph, &prompt, 1, &sp, 0, 0, &r1, &err));
  ASSERT_EQ_INT(r1->n_sequences, 1);
  tb_sample_response_free(r1);
  close_sampling(&w, &eph);

  /* A state saved and a training client restored from it: its forward
   * gives the trained model's loss, and it trains on. */
  char *state = NULL;
  ASSERT_OK(tb_training_client_save_state_sync(&tc, "state1", 0, &state, &err));
  ASSERT_STR_CONTAINS(state, "/weights/state1");
  tb_training_client_t back;
  rc = tb_service_client_create_training_client_from_state_with_optimizer_sync(&w.sc, &back,
                                                                               state, &err);
  if (rc != 0)
    fprintf(stderr, "from state: %s\n", tb_error_message(&err));
  ASSERT_OK(rc);
  ASSERT(back.model_id != NULL);
  ASSERT(strcmp(back.model_id, tc.model_id) != 0);
  tb_forward_backward_output_t *fb = NULL;
  ASSERT_OK(tb_training_client_forward_sync(&back, data, 2, "cross_entropy", NULL, 0, &fb, &err));
  double lb;
  ASSERT(tb_forward_backward_output_metric(fb, "loss:sum", &lb));
  ASSERT_NEAR(lb, lp_loss, 1e-3, 1e-4);
  tb_forward_backward_output_free(fb);
  tb_forward_backward_output_free(fp);
  ASSERT_OK(tb_training_client_forward_backward_sync(&back, data, 2, "cross_entropy", NULL, 0,
                                                     &fb, &err));
  tb_forward_backward_output_free(fb);
  tb_optim_step_output_t *ost = NULL;
  ASSERT_OK(tb_training_client_optim_step_sync(&back, &adam, &ost, &err));
  tb_optim_step_output_free(ost);
  /* load_state on the first client as well */
  ASSERT_OK(tb_training_client_load_state_sync(&tc, state, &err));
  ASSERT_OK(tb_training_client_unload_sync(&back, &err));
  close_training(&w, &back);

  free(state);
  free(sampler_path);
  tb_model_input_clear(&prompt);
  tb_train_datum_clear(&data[0]);
  tb_train_datum_clear(&data[1]);
  close_training(&w, &tc);
  world_stop(&w);
}

/* forward_backward_custom: a loss of the log-probs computed here, and its
 * gradient, trains the model as cross_entropy would. */
static int neg_mean_logprob(tb_custom_loss_t *ctx) {
  size_t total = 0;
  for (size_t i = 0; i < ctx->n; i++)
    total += ctx->n_logprobs[i];
  double loss = 0;
  for (size_t i = 0; i < ctx->n; i++)
    for (size_t j = 0; j < ctx->n_logprobs[i]; j++) {
      loss -= ctx->logprobs[i][j] / (double)total;
      ctx->grads[i][j] = (float)(-1.0 / (double)total);
    }
  ctx->loss = loss;
  int *calls = ctx->data;
  (*calls)++;
  return tb_custom_loss_add_metric(ctx, "tokens:sum", (double)total);
}

static int refuse_loss(tb_custom_loss_t *ctx) {
  return tb_custom_loss_fail(ctx, TB_EINVAL, "no loss for %zu datums", ctx->n);
}

TEST(custom_loss) {
  world_t w;
  world_start(&w);
  tb_training_client_t tc;
  tb_error_t err = { 0 };
  tb_lora_params_t lora;
  tb_lora_params_default(&lora);
  lora.rank = 4;
  ASSERT_OK(tb_service_client_create_lora_training_client_sync(&w.sc, &tc, "base", &lora, &err));
  tb_train_datum_t data[2];
  make_data(data);
  int calls = 0;
  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  adam.learning_rate = 0.02;
  double losses[4];
  for (int k = 0; k < 4; k++) {
    tb_forward_backward_output_t *o = NULL;
    ASSERT_OK(tb_training_client_forward_backward_custom_sync(&tc, data, 2, neg_mean_logprob,
                                                              &calls, &o, &err));
    ASSERT(tb_forward_backward_output_metric(o, "loss:sum", &losses[k]));
    double tokens;
    ASSERT(tb_forward_backward_output_metric(o, "tokens:sum", &tokens));
    ASSERT_EQ_INT((int)tokens, (int)(strlen(texts[0]) + strlen(texts[1]) - 2));
    ASSERT_EQ_INT(o->n_outputs, 2);
    tb_forward_backward_output_free(o);
    ASSERT_OK(tb_training_client_optim_step_sync(&tc, &adam, NULL, &err));
  }
  ASSERT_EQ_INT(calls, 4);
  ASSERT_GT(losses[0], 0);
  ASSERT_LT(losses[3], losses[0]);

  /* A loss function that fails fails the call (category user) -- and,
   * since its backward seq_ids are never sent, the client after it. */
  tb_forward_backward_output_t *o = NULL;
  ASSERT_ERR(tb_training_client_forward_backward_custom_sync(&tc, data, 2, refuse_loss, NULL,
                                                             &o, &err),
             TB_EINVAL);
  ASSERT_EQ_INT(err.category, TB_CATEGORY_USER);
  ASSERT_STR_CONTAINS(err.message, "no loss for 2 datums");
  tb_error_clear(&err);
  ASSERT_ERR(tb_training_client_optim_step_sync(&tc, &adam, NULL, &err), TB_EBUSY);
  ASSERT_STR_CONTAINS(err.message, "was not accepted");
  tb_error_clear(&err);
  /* custom datums may carry only target_tokens and weights */
  float adv[64] = { 0 };
  ASSERT_OK(tb_train_datum_set_f32(&data[0], "advantages", adv, strlen(texts[0]) - 1));
  tb_future_t *f;
  ASSERT_ERR(tb_training_client_forward_backward_custom(&tc, data, 2, neg_mean_logprob, &calls,
                                                        &f),
             TB_EINVAL);
  tb_train_datum_clear(&data[0]);
  tb_train_datum_clear(&data[1]);
  close_training(&w, &tc);
  world_stop(&w);
}

/* What the server refuses comes back as a precise error. */
TEST(server_errors) {
  world_t w;
  world_start(&w);
  tb_training_client_t tc;
  tb_error_t err = { 0 };
  /* an unknown base model: the create fails, and so do operations queued
   * behind it */
  tb_future_t *created, *step;
  ASSERT_OK(tb_service_client_create_lora_training_client(&w.sc, &tc, "no-such-model", NULL,
                                                          &created));
  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  ASSERT_OK(tb_training_client_optim_step(&tc, &adam, &step));
  ASSERT_ERR(tb_future_wait(created, 60000), TB_EHTTP);
  ASSERT_EQ_INT(created->error.http_status, 400);
  ASSERT_EQ_INT(created->error.category, TB_CATEGORY_USER);
  ASSERT_STR_CONTAINS(created->error.message, "base_model");
  ASSERT_ERR(tb_future_wait(step, 60000), TB_EHTTP);
  ASSERT_STR_CONTAINS(step->error.message, "base_model");
  tb_future_free(created);
  tb_future_free(step);
  close_training(&w, &tc);

  /* a checkpoint that does not exist */
  {
    int rc = tb_service_client_create_training_client_from_state_sync(
        &w.sc, &tc, "tinker://nobody:train:0/weights/none", &err);
    ASSERT_NE_INT(rc, 0);
    ASSERT_EQ_INT(err.http_status, 404);
    tb_error_clear(&err);
    close_training(&w, &tc);
  }
  /* arguments refused before anything is sent */
  ASSERT_ERR(tb_service_client_create_lora_training_client(&w.sc, &tc, "", NULL, &created),
             TB_EINVAL);
  ASSERT_ERR(tb_service_client_create_training_client_from_state(&w.sc, &tc, "/tmp/x", &created),
             TB_EINVAL);
  world_stop(&w);
}

TEST_LIST(
  TEST_ENTRY_TIMEOUT(training_run, 600000),
  TEST_ENTRY_TIMEOUT(custom_loss, 600000),
  TEST_ENTRY_TIMEOUT(server_errors, 300000),
)

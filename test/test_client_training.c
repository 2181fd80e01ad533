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
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_client_fake.h"
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
  ASSERT_OK(tb_server_start_training(&w->server, NULL, 0, 0));
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
  const tb_forward_backward_output_t *o =
      tb_future_result(fs[1], &tb_result_forward_backward_output);
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
  /* the top-3 log-probs of each prompt position: after the first, 3 cells
   * in falling order, the prompt's own token's log-prob no higher than
   * the first cell */
  sp.stop_strings = NULL;
  ASSERT_OK(tb_sampling_client_sample_sync(&samp, &prompt, 1, &sp, 1, 3, &resp, &err));
  ASSERT_EQ_INT(resp->topk_k, 3);
  ASSERT_EQ_INT(resp->topk_rows, 4);
  for (size_t row = 1; row < 4; row++) {
    const float *top = resp->topk_logprobs + row * 3;
    ASSERT(top[0] != TB_SAMPLE_TOPK_EMPTY);
    ASSERT(top[0] >= top[1] && top[1] >= top[2]);
    ASSERT(resp->prompt_logprobs[row] <= top[0] + 1e-4f);
  }
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

/* 1025 datums in two chunks against the server (the second chunk is
 * sent first and waits there for the first), and a loss with its
 * loss_fn_config: a bad config fails that operation alone, on the
 * server, and the client goes on. */
TEST(chunks_and_losses) {
  world_t w;
  world_start(&w);
  tb_training_client_t tc;
  tb_error_t err = { 0 };
  tb_lora_params_t lora;
  tb_lora_params_default(&lora);
  lora.rank = 2;
  ASSERT_OK(tb_service_client_create_lora_training_client_sync(&w.sc, &tc, "base", &lora, &err));
  size_t n = 1025;
  tb_train_datum_t *d = calloc(n, sizeof(*d));
  /* 20 tokens a datum: the first chunk's result (1024 x 19 log-probs) is
   * large enough to be decoded on the threadpool */
  for (size_t i = 0; i < n; i++) {
    int32_t toks[20] = { (int32_t)(i % 200) };
    for (int k = 1; k < 20; k++)
      toks[k] = 'a' + k;
    ASSERT_OK(tb_train_datum_init_next_token(&d[i], toks, NULL, 20));
  }
  tb_forward_backward_output_t *o = NULL;
  ASSERT_OK(tb_training_client_forward_sync(&tc, d, n, "cross_entropy", NULL, 0, &o, &err));
  ASSERT_EQ_INT(o->n_outputs, n);
  double sum = 0, loss = 0;
  for (size_t i = 0; i < n; i++) {
    const tb_tensor_data_t *lp = tb_forward_backward_output_tensor(o, i, "logprobs");
    ASSERT(lp != NULL);
    ASSERT_EQ_INT(lp->numel, 19);
    for (size_t k = 0; k < 19; k++)
      sum -= lp->f32[k];
  }
  ASSERT(tb_forward_backward_output_metric(o, "loss:sum", &loss));
  ASSERT_NEAR(loss, sum, 1e-1, 1e-4);
  /* datum 1024, alone in the second chunk, is datum 24 again: the same
   * outputs in its place; datum 25 differs */
  const float *a = tb_forward_backward_output_tensor(o, 24, "logprobs")->f32;
  const float *b = tb_forward_backward_output_tensor(o, 1024, "logprobs")->f32;
  const float *c = tb_forward_backward_output_tensor(o, 25, "logprobs")->f32;
  for (size_t k = 0; k < 19; k++)
    ASSERT_NEAR(a[k], b[k], 1e-5, 1e-5);
  ASSERT(fabsf(a[0] - c[0]) > 1e-6f);
  tb_forward_backward_output_free(o);

  /* ppo reads its clip thresholds from loss_fn_config */
  tb_train_datum_t pd[1] = { 0 };
  int32_t toks[4] = { 'x', 'y', 'z', 'w' };
  float lps[3] = { -1.0f, -2.0f, -3.0f }, adv[3] = { 1.0f, -0.5f, 2.0f };
  ASSERT_OK(tb_train_datum_init_next_token(&pd[0], toks, NULL, 4));
  ASSERT_OK(tb_train_datum_set_f32(&pd[0], "logprobs", lps, 3));
  ASSERT_OK(tb_train_datum_set_f32(&pd[0], "advantages", adv, 3));
  tb_loss_fn_config_entry_t bad[] = { { "clip_low_threshold", 1.5 },
                                      { "clip_high_threshold", 0.5 } };
  ASSERT_NE_INT(tb_training_client_forward_backward_sync(&tc, pd, 1, "ppo", bad, 2, &o, &err),
                0);
  ASSERT_EQ_INT(err.category, TB_CATEGORY_USER);
  ASSERT_STR_CONTAINS(err.message, "clip");
  tb_error_clear(&err);
  tb_loss_fn_config_entry_t good[] = { { "clip_low_threshold", 0.8 },
                                       { "clip_high_threshold", 1.2 } };
  ASSERT_OK(tb_training_client_forward_backward_sync(&tc, pd, 1, "ppo", good, 2, &o, &err));
  ASSERT_EQ_INT(o->n_outputs, 1);
  tb_forward_backward_output_free(o);
  ASSERT_OK(tb_training_client_optim_step_sync(&tc, NULL, NULL, &err));
  /* an unknown loss is refused at the submission: a 400, after which the
   * client stops */
  ASSERT_ERR(tb_training_client_forward_sync(&tc, pd, 1, "hinge", NULL, 0, &o, &err), TB_EHTTP);
  ASSERT_EQ_INT(err.http_status, 400);
  ASSERT_STR_CONTAINS(err.message, "loss_fn");
  tb_error_clear(&err);
  tb_train_datum_clear(&pd[0]);
  for (size_t i = 0; i < n; i++)
    tb_train_datum_clear(&d[i]);
  free(d);
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
  /* sampling from the base model itself */
  tb_sampling_client_t samp;
  ASSERT_OK(tb_service_client_create_sampling_client_sync(&w.sc, &samp, NULL, "base", &err));
  tb_model_input_t prompt = { 0 };
  int32_t ptoks[] = { 'h', 'i' };
  ASSERT_OK(tb_model_input_init(&prompt, ptoks, 2));
  tb_sample_params_t sp;
  tb_sample_params_default(&sp);
  sp.max_tokens = 3;
  tb_sample_response_t *resp = NULL;
  ASSERT_OK(tb_sampling_client_sample_sync(&samp, &prompt, 3, &sp, 0, 0, &resp, &err));
  ASSERT_EQ_INT(resp->n_sequences, 3);
  tb_sample_response_free(resp);
  /* sixteen samples at once, each seed its own */
  tb_future_t *many[16];
  for (int i = 0; i < 16; i++) {
    sp.has_seed = 1;
    sp.seed = (uint64_t)i;
    ASSERT_OK(tb_sampling_client_sample(&samp, &prompt, 1, &sp, 0, 0, &many[i]));
  }
  ASSERT_OK(tb_future_wait_many(many, 16, 120000, NULL));
  for (int i = 0; i < 16; i++) {
    const tb_sample_response_t *r = tb_future_result(many[i], &tb_result_sample_response);
    ASSERT(r != NULL && r->n_sequences == 1 && r->sequences[0].n_tokens > 0);
    tb_future_free(many[i]);
  }
  sp.has_seed = 0;
  /* a token outside the vocabulary is the caller's error, from the server */
  int32_t bad_tok[] = { 1 << 20 };
  ASSERT_OK(tb_model_input_init(&prompt, bad_tok, 1));
  ASSERT_NE_INT(tb_sampling_client_sample_sync(&samp, &prompt, 1, &sp, 0, 0, &resp, &err), 0);
  ASSERT_EQ_INT(err.category, TB_CATEGORY_USER);
  tb_error_clear(&err);
  tb_model_input_clear(&prompt);
  close_sampling(&w, &samp);

  /* arguments refused before anything is sent */
  ASSERT_ERR(tb_service_client_create_lora_training_client(&w.sc, &tc, "", NULL, &created),
             TB_EINVAL);
  ASSERT_ERR(tb_service_client_create_training_client_from_state(&w.sc, &tc, "/tmp/x", &created),
             TB_EINVAL);
  world_stop(&w);
}

/* ------------------------------------------------------------ against a fake */

/* What the fake saw of each training POST (the bodies are JSON: the
 * client runs with tb_training_client_use_json). */
typedef struct sent_s {
  char path[64];
  int64_t seq;
  size_t n_data;
  double w0;                    /* the first datum's first weight, or NAN */
  char idem[96];
  int status;
} sent_t;

typedef struct train_fake_s {
  sent_t sent[64];
  size_t n_sent;
  size_t expect_posts;          /* results wait until this many POSTs came */
  int fail_first_503;           /* 503s answered to the first training POST */
  int refuse_seq;               /* seq_id answered 400, or 0 */
  uint64_t refuse_delay_ms;     /* that answer comes this much later */
  uint64_t create_delay_ms;     /* the create_model result comes this late */
  int poll_410;                 /* result polls answered 410 */
} train_fake_t;

static train_fake_t tf;

static char *arena_printf(tb__http_request_t *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *arena_printf(tb__http_request_t *req, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *tmp = tb__vasprintf(fmt, ap);
  va_end(ap);
  ASSERT(tmp != NULL);
  char *r = tb__arena_strndup(&req->arena, tmp, strlen(tmp));
  free(tmp);
  return r;
}

/* A fwd/bwd result of n datums of two target tokens each (the fake's
 * datums): loss:sum n, loss:mean the chunk's seq_id. */
static char *fwdbwd_result(tb__http_request_t *req, int64_t seq, size_t n) {
  tb__buf_t b = TB_BUF_INIT;
  ASSERT_OK(tb__buf_append_str(
      &b, "{\"loss_fn_output_type\":\"ArrayRecord\",\"loss_fn_outputs\":["));
  for (size_t i = 0; i < n; i++)
    ASSERT_OK(tb__buf_printf(&b, "%s{\"logprobs\":{\"data\":[-%zu.5,-1],\"dtype\":\"float32\"}}",
                             i ? "," : "", i));
  ASSERT_OK(tb__buf_printf(&b, "],\"metrics\":{\"loss:sum\":%zu,\"loss:mean\":%lld}}", n,
                           (long long)seq));
  char *r = tb__arena_strndup(&req->arena, b.base, b.len);
  tb__buf_free(&b);
  return r;
}

static fake_resp_t decide_train(fake_t *fk, tb__http_request_t *req, int is_poll) {
  fake_resp_t ok = { .status = 200 };
  char path[64];
  snprintf(path, sizeof(path), "%.*s", (int)req->path.len, req->path.base);
  if (strcmp(path, "/api/v1/create_session") == 0) {
    ok.body = "{\"session_id\":\"s1\"}";
    return ok;
  }
  if (strcmp(path, "/api/v1/create_model") == 0) {
    ok.body = "{\"request_id\":\"create\",\"model_id\":\"s1:train:0\"}";
    return ok;
  }
  json_t *doc = json_loadb(req->body.base, req->body.len, 0, NULL);
  ASSERT(doc != NULL);
  if (is_poll) {
    const char *rid = json_string_value(json_object_get(doc, "request_id"));
    ASSERT(rid != NULL);
    if (strcmp(rid, "create") == 0) {
      ok.body = "{\"model_id\":\"s1:train:0\",\"type\":\"create_model\"}";
      ok.delay_ms = tf.create_delay_ms;
    } else if (tf.poll_410 > 0) {
      tf.poll_410--;
      ok.status = 410;
      ok.body = "{\"error\":\"promise expired\",\"category\":\"server\"}";
    } else if (tf.n_sent < tf.expect_posts) {
      /* Held like a long poll until every step is in. */
      ok.body = arena_printf(req, "{\"type\":\"try_again\",\"request_id\":\"%s\","
                                  "\"queue_state\":\"active\"}", rid);
      ok.delay_ms = 5;
    } else {
      long long seq = 0;
      size_t n = 0;
      if (sscanf(rid, "fb-%lld-%zu", &seq, &n) == 2)
        ok.body = fwdbwd_result(req, seq, n);
      else
        ok.body = "{\"metrics\":{\"learning_rate:mean\":0.001}}";
    }
    json_decref(doc);
    return ok;
  }
  ASSERT_LT(tf.n_sent, 64);
  sent_t *s = &tf.sent[tf.n_sent++];
  memset(s, 0, sizeof(*s));
  snprintf(s->path, sizeof(s->path), "%s", path);
  json_t *in = json_object_get(doc, "forward_backward_input");
  if (in == NULL)
    in = json_object_get(doc, "forward_input");
  s->seq = json_integer_value(json_object_get(doc, "seq_id"));
  s->n_data = json_array_size(json_object_get(in, "data"));
  json_t *w0 = json_array_get(json_object_get(json_object_get(json_object_get(
                                  json_array_get(json_object_get(in, "data"), 0),
                                  "loss_fn_inputs"), "weights"), "data"), 0);
  s->w0 = json_is_number(w0) ? json_number_value(w0) : NAN;
  fake_copy_header(req, "x-idempotency-key", s->idem, sizeof(s->idem));
  json_decref(doc);
  if (tf.fail_first_503 > 0) {
    tf.fail_first_503--;
    s->status = 503;
    ok.status = 503;
    ok.body = "{\"error\":\"busy\",\"category\":\"server\"}";
    tf.n_sent--;  /* a failed attempt is not a submission (the fake's log has it) */
    return ok;
  }
  if (s->seq == tf.refuse_seq) {
    s->status = 400;
    ok.status = 400;
    ok.body = "{\"error\":\"seq_id: refused\",\"category\":\"user\"}";
    ok.delay_ms = tf.refuse_delay_ms;
    return ok;
  }
  s->status = 200;
  ok.body = in != NULL ? arena_printf(req, "{\"request_id\":\"fb-%lld-%zu\"}", (long long)s->seq,
                                      s->n_data)
                       : arena_printf(req, "{\"request_id\":\"op-%lld\"}", (long long)s->seq);
  return ok;
}

typedef struct fake_world_s {
  uv_loop_t loop;
  fake_t fk;
  tb_service_client_t sc;
  tb_training_client_t tc;
  int closed;
} fake_world_t;

static void fake_world_start(fake_world_t *w, int create) {
  memset(w, 0, sizeof(*w));
  memset(&tf, 0, sizeof(tf));
  ASSERT_OK(uv_loop_init(&w->loop));
  fake_start(&w->fk, &w->loop);
  w->fk.decide = decide_train;
  tb_client_config_t cfg = fake_config(&w->fk);
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(&w->loop, &w->sc, &cfg, &err));
  if (create) {
    ASSERT_OK(tb_service_client_create_lora_training_client_sync(&w->sc, &w->tc, "base", NULL,
                                                                &err));
    tb_training_client_use_json(&w->tc, 1);
  }
}

static void on_fake_sc_closed(tb_service_client_t *sc) {
  ((fake_world_t *)sc->data)->closed = 1;
  uv_stop(sc->loop);
}

static void fake_world_stop(fake_world_t *w) {
  int before = n_closed;
  if (w->tc.impl_ != NULL) {
    tb_training_client_close(&w->tc, on_tc_closed);
    while (n_closed == before)
      uv_run(&w->loop, UV_RUN_ONCE);
  }
  w->sc.data = w;
  tb_service_client_close(&w->sc, on_fake_sc_closed);
  while (!w->closed)
    uv_run(&w->loop, UV_RUN_ONCE);
  fake_stop(&w->fk);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&w->loop);
}

static void tiny_data(tb_train_datum_t *d, size_t n) {
  int32_t toks[3] = { 1, 2, 3 };
  for (size_t i = 0; i < n; i++) {
    memset(&d[i], 0, sizeof(d[i]));
    ASSERT_OK(tb_train_datum_init_next_token(&d[i], toks, NULL, 3));
  }
}

/* forward_backward of d[0..n) with cross-entropy, then optim_step, on
 * w's client: fs[0] and fs[1]. */
static void submit_step(fake_world_t *w, tb_train_datum_t *d, size_t n, tb_future_t **fs) {
  ASSERT_OK(tb_training_client_forward_backward(&w->tc, d, n, "cross_entropy", NULL, 0, &fs[0]));
  ASSERT_OK(tb_training_client_optim_step(&w->tc, NULL, &fs[1]));
}

/* Results are held until every step was submitted: a client that waited
 * for step k before sending step k+1 would never finish. */
TEST(fake_pipelined_submissions) {
  fake_world_t w;
  fake_world_start(&w, 1);
  tf.expect_posts = 6;
  tb_train_datum_t d[2];
  tiny_data(d, 2);
  tb_future_t *fs[6];
  for (int k = 0; k < 3; k++) {
    ASSERT_OK(tb_training_client_forward_backward(&w.tc, d, 2, "cross_entropy", NULL, 0,
                                                  &fs[2 * k]));
    ASSERT_OK(tb_training_client_optim_step(&w.tc, NULL, &fs[2 * k + 1]));
  }
  int st[6];
  ASSERT_OK(tb_future_wait_many(fs, 6, 60000, st));
  ASSERT_EQ_INT(tf.n_sent, 6);
  /* Every seq_id once, on its operation's route; they leave without
   * waiting for each other's answers, so on several connections they may
   * arrive in any order (the server orders them by seq_id). */
  int seen[7] = { 0 };
  for (size_t i = 0; i < 6; i++) {
    int64_t q = tf.sent[i].seq;
    ASSERT(q >= 1 && q <= 6 && !seen[q]);
    seen[q] = 1;
    ASSERT_STR_EQ(tf.sent[i].path, q % 2 ? "/api/v1/forward_backward" : "/api/v1/optim_step");
  }
  for (int i = 0; i < 6; i++)
    tb_future_free(fs[i]);
  tb_train_datum_clear(&d[0]);
  tb_train_datum_clear(&d[1]);
  fake_world_stop(&w);
}

/* forward_backward on one tiny datum (d[0]), then optim_step: fs[0], fs[1]. */
static void tiny_step(fake_world_t *w, tb_train_datum_t *d, tb_future_t **fs) {
  tiny_data(d, 1);
  submit_step(w, d, 1, fs);
}

/* Each POST answered 503 is sent again with the same seq_id and
 * idempotency key.  The next operation does not wait for the answer --
 * the server holds a seq_id that arrives before an earlier one -- so both
 * leave at once. */
TEST(fake_sequencing_under_retries) {
  fake_world_t w;
  fake_world_start(&w, 1);
  tf.fail_first_503 = 2;
  tb_train_datum_t d[1];
  tb_future_t *fs[2];
  tiny_step(&w, d, fs);
  ASSERT_OK(tb_future_wait_many(fs, 2, 60000, NULL));
  ASSERT_EQ_INT(tf.n_sent, 2);
  for (int i = 0; i < 2; i++)
    ASSERT_STR_EQ(tf.sent[i].path, tf.sent[i].seq == 1 ? "/api/v1/forward_backward"
                                                       : "/api/v1/optim_step");
  ASSERT_EQ_INT(tf.sent[0].seq + tf.sent[1].seq, 3);
  ASSERT(strcmp(tf.sent[0].idem, tf.sent[1].idem) != 0);
  size_t fb_posts = fake_count(&w.fk, "/api/v1/forward_backward");
  size_t opt_posts = fake_count(&w.fk, "/api/v1/optim_step");
  ASSERT_EQ_INT(fb_posts + opt_posts, 4);
  const char *k0 = fake_nth(&w.fk, "/api/v1/forward_backward", 0)->idem;
  for (size_t i = 1; i < fb_posts; i++)
    ASSERT_STR_EQ(fake_nth(&w.fk, "/api/v1/forward_backward", i)->idem, k0);
  const char *k1 = fake_nth(&w.fk, "/api/v1/optim_step", 0)->idem;
  for (size_t i = 1; i < opt_posts; i++)
    ASSERT_STR_EQ(fake_nth(&w.fk, "/api/v1/optim_step", i)->idem, k1);
  /* optim_step left before forward_backward's last attempt was answered */
  size_t i_fb = 0, i_opt = SIZE_MAX;
  for (size_t i = 0; i < w.fk.n_log; i++) {
    if (strcmp(w.fk.log[i].path, "/api/v1/forward_backward") == 0)
      i_fb = i;
    if (strcmp(w.fk.log[i].path, "/api/v1/optim_step") == 0 && i_opt == SIZE_MAX)
      i_opt = i;
  }
  ASSERT_LT(i_opt, i_fb);
  tb_future_free(fs[0]);
  tb_future_free(fs[1]);
  tb_train_datum_clear(&d[0]);
  fake_world_stop(&w);
}

/* 1025 datums: two chunks, seq_ids 1 and 2, the second sent first; the
 * results joined in input order and the metrics reduced. */
TEST(fake_chunk_boundaries) {
  fake_world_t w;
  fake_world_start(&w, 1);
  size_t n = 1025;
  tb_train_datum_t *d = calloc(n, sizeof(*d));
  tiny_data(d, n);
  tb_future_t *fs[2];
  submit_step(&w, d, n, fs);
  ASSERT_OK(tb_future_wait_many(fs, 2, 60000, NULL));
  ASSERT_EQ_INT(tf.n_sent, 3);
  ASSERT_EQ_INT(tf.sent[0].seq, 2);
  ASSERT_EQ_INT(tf.sent[0].n_data, 1);
  /* The first chunk once the second was answered; optim_step right after
   * it was sent, so the two may arrive in either order. */
  const sent_t *c1 = tf.sent[1].seq == 1 ? &tf.sent[1] : &tf.sent[2];
  const sent_t *c3 = tf.sent[1].seq == 1 ? &tf.sent[2] : &tf.sent[1];
  ASSERT_EQ_INT(c1->seq, 1);
  ASSERT_EQ_INT(c1->n_data, 1024);
  ASSERT_EQ_INT(c3->seq, 3);
  const tb_forward_backward_output_t *o =
      tb_future_result(fs[0], &tb_result_forward_backward_output);
  ASSERT_EQ_INT(o->n_outputs, 1025);
  /* datum 1023 is the last of chunk 1, datum 1024 the only one of chunk 2 */
  ASSERT_NEAR(tb_forward_backward_output_tensor(o, 1023, "logprobs")->f32[0], -1023.5, 0, 0);
  ASSERT_NEAR(tb_forward_backward_output_tensor(o, 1024, "logprobs")->f32[0], -0.5, 0, 0);
  double v;
  ASSERT(tb_forward_backward_output_metric(o, "loss:sum", &v));
  ASSERT_NEAR(v, 1025, 0, 0);
  ASSERT(tb_forward_backward_output_metric(o, "loss:mean", &v));
  ASSERT_NEAR(v, (1024.0 * 1 + 1.0 * 2) / 1025.0, 1e-12, 0);
  tb_future_free(fs[0]);
  tb_future_free(fs[1]);
  for (size_t i = 0; i < n; i++)
    tb_train_datum_clear(&d[i]);
  free(d);
  fake_world_stop(&w);
}

/* A seq_id the server refused is a gap no later operation can pass: the
 * ones already sent are stopped (the server would hold them forever) and
 * the later ones fail at once without being sent. */
TEST(fake_refused_seq_stops_the_client) {
  fake_world_t w;
  fake_world_start(&w, 1);
  tf.refuse_seq = 1;
  tb_train_datum_t d[1];
  tb_future_t *fs[2];
  tiny_step(&w, d, fs);
  int st[2];
  ASSERT_ERR(tb_future_wait_many(fs, 2, 60000, st), TB_EHTTP);
  ASSERT_EQ_INT(st[0], TB_EHTTP);
  ASSERT_EQ_INT(fs[0]->error.http_status, 400);
  ASSERT_STR_CONTAINS(fs[0]->error.message, "refused");
  ASSERT_EQ_INT(st[1], TB_EBUSY);
  ASSERT_STR_CONTAINS(fs[1]->error.message, "seq_id 1");
  size_t opt_posts = fake_count(&w.fk, "/api/v1/optim_step");
  ASSERT_LE(opt_posts, 1);  /* it may have left before the refusal came */
  tb_future_free(fs[0]);
  tb_future_free(fs[1]);
  tb_future_t *later;
  ASSERT_OK(tb_training_client_optim_step(&w.tc, NULL, &later));
  ASSERT_ERR(tb_future_wait(later, 60000), TB_EBUSY);
  ASSERT_EQ_INT(fake_count(&w.fk, "/api/v1/optim_step"), opt_posts);
  tb_future_free(later);
  /* unsequenced calls still work: the model exists */
  tb_future_t *info;
  ASSERT_OK(tb_training_client_get_info(&w.tc, &info));
  tb_future_free(info);  /* freeing a pending future cancels it */
  tb_train_datum_clear(&d[0]);
  fake_world_stop(&w);
}

/* The same when the refusal comes late: the operation sent meanwhile
 * would be held by the server forever (this fake holds its polls like
 * one); the client stops its poll and fails it. */
TEST(fake_refused_seq_stops_what_was_sent) {
  fake_world_t w;
  fake_world_start(&w, 1);
  tf.refuse_seq = 1;
  tf.refuse_delay_ms = 100;
  tf.expect_posts = 100;  /* polls are held: no result ever comes */
  tb_train_datum_t d[1];
  tb_future_t *fs[2];
  tiny_step(&w, d, fs);
  int st[2];
  ASSERT_ERR(tb_future_wait_many(fs, 2, 60000, st), TB_EHTTP);
  ASSERT_EQ_INT(st[0], TB_EHTTP);
  ASSERT_EQ_INT(st[1], TB_EBUSY);
  ASSERT_STR_CONTAINS(fs[1]->error.message, "seq_id 1");
  ASSERT_EQ_INT(fake_count(&w.fk, "/api/v1/optim_step"), 1);  /* it had left */
  tb_future_free(fs[0]);
  tb_future_free(fs[1]);
  tb_train_datum_clear(&d[0]);
  fake_world_stop(&w);
}

static int cb_calls;
static void count_cb(tb_future_t *f, int status) { cb_calls++; }

/* Operations called before the model exists wait for it; one cancelled
 * before it was sent fails with TB_ECANCELED, and the ones after it
 * cannot run.  Nothing completes inside the call that cancels. */
TEST(fake_cancel_before_sent) {
  fake_world_t w;
  fake_world_start(&w, 0);
  tf.create_delay_ms = 50;
  tb_future_t *created, *a, *b, *c;
  ASSERT_OK(tb_service_client_create_lora_training_client(&w.sc, &w.tc, "base", NULL, &created));
  tb_training_client_use_json(&w.tc, 1);
  tb_train_datum_t d[1];
  tiny_data(d, 1);
  ASSERT_OK(tb_training_client_forward_backward(&w.tc, d, 1, "cross_entropy", NULL, 0, &a));
  ASSERT_OK(tb_training_client_optim_step(&w.tc, NULL, &b));
  ASSERT_OK(tb_training_client_optim_step(&w.tc, NULL, &c));
  cb_calls = 0;
  ASSERT_OK(tb_future_set_callback(b, count_cb));
  ASSERT_OK(tb_future_cancel(b));
  ASSERT_EQ_INT(cb_calls, 0);
  ASSERT_ERR(tb_future_cancel(b), TB_EBUSY);
  tb_future_t *all[4] = { created, a, b, c };
  int st[4];
  tb_future_wait_many(all, 4, 60000, st);
  ASSERT_EQ_INT(st[0], 0);
  ASSERT_EQ_INT(st[1], 0);
  ASSERT_EQ_INT(st[2], TB_ECANCELED);
  ASSERT_EQ_INT(b->error.category, TB_CATEGORY_CANCELLED);
  ASSERT_EQ_INT(cb_calls, 1);
  ASSERT_EQ_INT(st[3], TB_EBUSY);
  ASSERT_EQ_INT(tf.n_sent, 1);
  for (int i = 0; i < 4; i++)
    tb_future_free(all[i]);
  tb_train_datum_clear(&d[0]);
  fake_world_stop(&w);
}

/* Closing with operations queued and in flight fails them all with
 * TB_ECANCELED; the close callback runs once they are done. */
TEST(fake_close_with_work) {
  fake_world_t w;
  fake_world_start(&w, 1);
  tf.expect_posts = 100;  /* results never come */
  tb_train_datum_t d[1];
  tiny_data(d, 1);
  tb_future_t *fs[3];
  submit_step(&w, d, 1, fs);
  ASSERT_OK(tb_training_client_optim_step(&w.tc, NULL, &fs[2]));
  for (int i = 0; i < 20 && tf.n_sent < 1; i++)
    uv_run(&w.loop, UV_RUN_ONCE);
  int before = n_closed;
  tb_training_client_close(&w.tc, on_tc_closed);
  ASSERT_EQ_INT(n_closed, before);
  ASSERT_ERR(tb_training_client_optim_step(&w.tc, NULL, &fs[0]), TB_ECLOSING);
  while (n_closed == before)
    uv_run(&w.loop, UV_RUN_ONCE);
  for (int i = 0; i < 3; i++) {
    ASSERT(tb_future_is_done(fs[i]));
    ASSERT_EQ_INT(fs[i]->status, TB_ECANCELED);
    tb_future_free(fs[i]);
  }
  tb_train_datum_clear(&d[0]);
  fake_world_stop(&w);
}

/* Closing while the model is being created cancels the creation; the
 * operations waiting for it fail too. */
TEST(fake_close_while_creating) {
  fake_world_t w;
  fake_world_start(&w, 0);
  tf.create_delay_ms = 200;
  tb_future_t *created, *step;
  ASSERT_OK(tb_service_client_create_lora_training_client(&w.sc, &w.tc, "base", NULL, &created));
  ASSERT_OK(tb_training_client_optim_step(&w.tc, NULL, &step));
  for (int i = 0; i < 1000 && fake_count(&w.fk, "/api/v1/create_model") == 0; i++)
    uv_run(&w.loop, UV_RUN_ONCE);
  int before = n_closed;
  tb_training_client_close(&w.tc, on_tc_closed);
  while (n_closed == before)
    uv_run(&w.loop, UV_RUN_ONCE);
  ASSERT(tb_future_is_done(created));
  ASSERT_EQ_INT(created->status, TB_ECANCELED);
  ASSERT(tb_future_is_done(step));
  ASSERT_EQ_INT(step->status, TB_ECANCELED);
  ASSERT_EQ_INT(tf.n_sent, 0);
  tb_future_free(created);
  tb_future_free(step);
  fake_world_stop(&w);
}

/* A sampling client made by save_weights_and_get_sampling_client takes
 * the save's failure: its samples fail with it, and it closes. */
TEST(fake_sampling_client_of_a_failed_save) {
  fake_world_t w;
  fake_world_start(&w, 1);
  tb_sampling_client_t samp;
  tb_future_t *saved, *sample;
  ASSERT_OK(tb_training_client_save_weights_and_get_sampling_client(&w.tc, &samp, &saved));
  ASSERT(samp.sampling_session_id == NULL);
  tb_model_input_t prompt = { 0 };
  int32_t toks[] = { 1, 2 };
  ASSERT_OK(tb_model_input_init(&prompt, toks, 2));
  ASSERT_OK(tb_sampling_client_sample(&samp, &prompt, 1, NULL, 0, 0, &sample));
  /* the fake answers the save with a result that names no session */
  tb_future_t *both[2] = { saved, sample };
  int st[2];
  tb_future_wait_many(both, 2, 60000, st);
  ASSERT_EQ_INT(st[0], TB_EFIELD);
  ASSERT_STR_CONTAINS(saved->error.message, "sampling_session_id");
  ASSERT_EQ_INT(st[1], TB_EFIELD);
  ASSERT_STR_CONTAINS(sample->error.message, "sampling_session_id");
  ASSERT_EQ_INT(fake_count(&w.fk, "/api/v1/asample"), 0);
  tb_future_free(saved);
  tb_future_free(sample);
  int before = n_closed;
  tb_sampling_client_close(&samp, on_samp_closed);
  while (n_closed == before)
    uv_run(&w.loop, UV_RUN_ONCE);
  tb_model_input_clear(&prompt);
  fake_world_stop(&w);
}

static int nested_rc;
static char nested_msg[256];

static void call_sync_inside(tb_future_t *f, int status) {
  tb_training_client_t *tc = f->data;
  tb_error_t err = { 0 };
  nested_rc = tb_training_client_optim_step_sync(tc, NULL, NULL, &err);
  snprintf(nested_msg, sizeof(nested_msg), "%s", err.message ? err.message : "");
  tb_error_clear(&err);
}

/* A _sync function inside a callback of the loop is refused before it
 * makes anything, so the client goes on. */
TEST(fake_sync_inside_a_callback) {
  fake_world_t w;
  fake_world_start(&w, 1);
  tb_future_t *f;
  ASSERT_OK(tb_training_client_optim_step(&w.tc, NULL, &f));
  f->data = &w.tc;
  ASSERT_OK(tb_future_set_callback(f, call_sync_inside));
  nested_rc = 0;
  ASSERT_OK(tb_future_wait(f, 60000));
  ASSERT_EQ_INT(nested_rc, TB_ENESTED);
  ASSERT_STR_CONTAINS(nested_msg, "callback");
  tb_future_free(f);
  tb_error_t err = { 0 };
  ASSERT_OK(tb_training_client_optim_step_sync(&w.tc, NULL, NULL, &err));
  ASSERT_EQ_INT(tf.n_sent, 2);
  ASSERT_EQ_INT(tf.sent[1].seq, 2);
  fake_world_stop(&w);
}

/* A training result whose server-side future expired (410) fails with
 * TB_EEXPIRED; its seq_id was accepted, so the client goes on. */
TEST(fake_expired_result) {
  fake_world_t w;
  fake_world_start(&w, 1);
  tf.poll_410 = 1;
  tb_future_t *f;
  ASSERT_OK(tb_training_client_optim_step(&w.tc, NULL, &f));
  ASSERT_ERR(tb_future_wait(f, 60000), TB_EEXPIRED);
  ASSERT_EQ_INT(f->error.http_status, 410);
  tb_future_free(f);
  tb_error_t err = { 0 };
  ASSERT_OK(tb_training_client_optim_step_sync(&w.tc, NULL, NULL, &err));
  ASSERT_EQ_INT(tf.n_sent, 2);
  fake_world_stop(&w);
}

static int unit_grads(tb_custom_loss_t *ctx) {
  ctx->loss = 0;
  for (size_t i = 0; i < ctx->n; i++)
    for (size_t j = 0; j < ctx->n_logprobs[i]; j++) {
      ctx->loss -= ctx->logprobs[i][j];
      ctx->grads[i][j] = -1.0f;
    }
  return 0;
}

/* forward_backward_custom on 1025 datums: the forward pass in two chunks
 * (seq_ids 1 and 2, the second sent first), then the backward pass in two
 * (3 and 4) with -dLoss/dlogprob as the weights; an optim_step called
 * right after the custom call takes seq_id 5. */
TEST(fake_custom_loss_in_chunks) {
  fake_world_t w;
  fake_world_start(&w, 1);
  size_t n = 1025;
  tb_train_datum_t *d = calloc(n, sizeof(*d));
  int32_t toks[3] = { 1, 2, 3 };
  for (size_t i = 0; i < n; i++) {  /* target tokens, no weights */
    ASSERT_OK(tb_train_datum_init(&d[i], toks, 2));
    ASSERT_OK(tb_train_datum_set_tokens(&d[i], "target_tokens", toks + 1, 2));
  }
  tb_future_t *fs[2];
  ASSERT_OK(tb_training_client_forward_backward_custom(&w.tc, d, n, unit_grads, NULL, &fs[0]));
  ASSERT_OK(tb_training_client_optim_step(&w.tc, NULL, &fs[1]));
  ASSERT_OK(tb_future_wait_many(fs, 2, 60000, NULL));
  ASSERT_EQ_INT(tf.n_sent, 5);
  int64_t want_seq[5] = { 2, 1, 4, 3, 5 };
  const char *want_path[5] = { "/api/v1/forward", "/api/v1/forward", "/api/v1/forward_backward",
                               "/api/v1/forward_backward", "/api/v1/optim_step" };
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ_INT(tf.sent[i].seq, want_seq[i]);
    ASSERT_STR_EQ(tf.sent[i].path, want_path[i]);
  }
  ASSERT_NEAR(tf.sent[0].w0, 0, 0, 0);  /* no weights given: zeros forward */
  ASSERT_NEAR(tf.sent[2].w0, 1, 0, 0);  /* -dLoss/dlogprob */
  ASSERT_NEAR(tf.sent[3].w0, 1, 0, 0);
  const tb_forward_backward_output_t *o =
      tb_future_result(fs[0], &tb_result_forward_backward_output);
  ASSERT_EQ_INT(o->n_outputs, n);
  double loss;
  ASSERT(tb_forward_backward_output_metric(o, "loss:sum", &loss));
  /* the loss function's own: the sum of -logprob over both chunks */
  double want = 0;
  for (size_t i = 0; i < 1024; i++)
    want += (double)i + 0.5 + 1.0;
  want += 0.5 + 1.0;  /* datum 1024, first of its chunk */
  ASSERT_NEAR(loss, want, 1e-3, 1e-9);
  tb_future_free(fs[0]);
  tb_future_free(fs[1]);
  for (size_t i = 0; i < n; i++)
    tb_train_datum_clear(&d[i]);
  free(d);
  fake_world_stop(&w);
}

TEST_LIST(
  TEST_ENTRY_TIMEOUT(training_run, 600000),
  TEST_ENTRY_TIMEOUT(custom_loss, 600000),
  TEST_ENTRY_TIMEOUT(chunks_and_losses, 600000),
  TEST_ENTRY_TIMEOUT(server_errors, 300000),
  TEST_ENTRY(fake_pipelined_submissions),
  TEST_ENTRY(fake_sequencing_under_retries),
  TEST_ENTRY(fake_chunk_boundaries),
  TEST_ENTRY(fake_refused_seq_stops_the_client),
  TEST_ENTRY(fake_refused_seq_stops_what_was_sent),
  TEST_ENTRY(fake_cancel_before_sent),
  TEST_ENTRY(fake_close_with_work),
  TEST_ENTRY(fake_close_while_creating),
  TEST_ENTRY(fake_sampling_client_of_a_failed_save),
  TEST_ENTRY(fake_sync_inside_a_callback),
  TEST_ENTRY(fake_expired_result),
  TEST_ENTRY(fake_custom_loss_in_chunks),
)

/*
 * The RestClient against the real server on the same loop: the runs,
 * checkpoints, sessions and samplers made by a training client, listed,
 * published, given a TTL, archived and deleted.
 */
#define _GNU_SOURCE
#include "tb_test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tinkerbell/rest_client.h"
#include "tinkerbell/sampling_client.h"
#include "tinkerbell/server.h"
#include "tinkerbell/service_client.h"
#include "tinkerbell/training_client.h"

static uv_loop_t loop;
static tb_server_t server;
static tb_service_client_t sc;
static char data_dir[64];
static int closed;

static void on_closed_server(tb_server_t *s) {
  closed++;
  uv_stop(s->loop);
}

static void on_closed_sc(tb_service_client_t *c) {
  closed++;
  uv_stop(c->loop);
  tb_server_close(&server, on_closed_server);
}

static void on_closed_tc(tb_training_client_t *tc) {
  closed++;
  uv_stop(tc->loop);
}

static void on_closed_samp(tb_sampling_client_t *s) {
  closed++;
  uv_stop(s->loop);
}

static void start(void) {
  ASSERT_OK(uv_loop_init(&loop));
  strcpy(data_dir, "/tmp/tb-rest-XXXXXX");
  ASSERT(mkdtemp(data_dir) != NULL);
  tb_server_options_t o = { .data_dir = data_dir, .long_poll_ms = 10000 };
  ASSERT_OK(tb_server_init(&loop, &server, &o));
  ASSERT_OK(tb_server_start_training(&server, NULL, 0, 2));
  ASSERT_OK(tb_server_listen(&server, "127.0.0.1", 0));
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d", tb_server_port(&server));
  tb_client_config_t cfg = { .base_url = url, .wait_timeout_ms = 300000 };
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(&loop, &sc, &cfg, &err));
}

static void stop(void) {
  int want = closed + 2;
  tb_service_client_close(&sc, on_closed_sc);
  while (closed < want)
    uv_run(&loop, UV_RUN_ONCE);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&loop);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", data_dir);
  ASSERT_OK(system(cmd));
}

static const tb_checkpoint_t *find(const tb_checkpoint_list_t *l, const char *path) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->checkpoints[i].tinker_path, path) == 0)
      return &l->checkpoints[i];
  return NULL;
}

TEST(runs_checkpoints_sessions) {
  start();
  tb_error_t err = { 0 };
  tb_training_client_t tc;
  tb_lora_params_t lora;
  tb_lora_params_default(&lora);
  lora.rank = 4;
  ASSERT_OK(tb_service_client_create_lora_training_client_sync(&sc, &tc, "base", &lora, &err));
  char *state = NULL, *weights = NULL;
  ASSERT_OK(tb_training_client_save_state_sync(&tc, "s1", 0, &state, &err));
  ASSERT_OK(tb_training_client_save_weights_for_sampler_sync(&tc, "w1", 0, &weights, &err));
  char *run_id = strdup(tc.model_id);

  tb_rest_client_t rc;
  ASSERT_OK(tb_rest_client_init(&rc, &sc));

  /* the run */
  tb_training_run_t *run = NULL;
  ASSERT_OK(tb_rest_client_get_training_run_sync(&rc, run_id, TB_ACCESS_OWNED, &run, &err));
  ASSERT_STR_EQ(run->training_run_id, run_id);
  ASSERT_STR_EQ(run->base_model, "base");
  ASSERT_EQ_INT(run->lora_rank, 4);
  ASSERT(run->last_checkpoint != NULL);
  ASSERT_STR_EQ(run->last_checkpoint->tinker_path, state);
  ASSERT(run->last_sampler_checkpoint != NULL);
  tb_training_run_free(run);
  ASSERT_OK(tb_rest_client_get_training_run_by_tinker_path_sync(&rc, weights, TB_ACCESS_OWNED,
                                                                &run, &err));
  ASSERT_STR_EQ(run->training_run_id, run_id);
  tb_training_run_free(run);
  tb_training_run_list_t *runs = NULL;
  ASSERT_OK(tb_rest_client_list_training_runs_sync(&rc, 0, 0, TB_ACCESS_OWNED, NULL, &runs,
                                                   &err));
  ASSERT_EQ_INT(runs->n, 1);
  ASSERT_STR_EQ(runs->runs[0].training_run_id, run_id);
  ASSERT_EQ_INT(runs->cursor.total_count, 1);
  tb_training_run_list_free(runs);

  /* what the checkpoint holds */
  tb_weights_info_t *wi = NULL;
  ASSERT_OK(tb_rest_client_get_weights_info_by_tinker_path_sync(&rc, state, &wi, &err));
  ASSERT_STR_EQ(wi->base_model, "base");
  ASSERT_EQ_INT(wi->lora_rank, 4);
  ASSERT_EQ_INT(wi->train_mlp, 1);
  tb_weights_info_free(wi);

  /* the checkpoints, of the run and of the user */
  tb_checkpoint_list_t *l = NULL;
  ASSERT_OK(tb_rest_client_list_checkpoints_sync(&rc, run_id, &l, &err));
  ASSERT_EQ_INT(l->n, 2);
  const tb_checkpoint_t *c = find(l, state);
  ASSERT(c != NULL);
  ASSERT_STR_EQ(c->checkpoint_id, "weights/s1");
  ASSERT_STR_EQ(c->checkpoint_type, "training");
  ASSERT_GT(c->size_bytes, 0);
  ASSERT_EQ_INT(c->is_public, 0);
  ASSERT(c->expires_at == NULL);
  ASSERT(find(l, weights) != NULL);
  tb_checkpoint_list_free(l);
  ASSERT_OK(tb_rest_client_list_user_checkpoints_sync(&rc, 0, 0, &l, &err));
  ASSERT_EQ_INT(l->n, 2);
  tb_checkpoint_list_free(l);

  /* publish, twice (409), unpublish */
  ASSERT_OK(tb_rest_client_publish_checkpoint_from_tinker_path_sync(&rc, state, &err));
  ASSERT_ERR(tb_rest_client_publish_checkpoint_from_tinker_path_sync(&rc, state, &err),
             TB_EHTTP);
  ASSERT_EQ_INT(err.http_status, 409);
  tb_error_clear(&err);
  ASSERT_OK(tb_rest_client_list_checkpoints_sync(&rc, run_id, &l, &err));
  ASSERT_EQ_INT(find(l, state)->is_public, 1);
  tb_checkpoint_list_free(l);
  ASSERT_OK(tb_rest_client_unpublish_checkpoint_from_tinker_path_sync(&rc, state, &err));

  /* a TTL, and none again */
  ASSERT_OK(tb_rest_client_set_checkpoint_ttl_from_tinker_path_sync(&rc, state, 3600, &err));
  ASSERT_OK(tb_rest_client_list_checkpoints_sync(&rc, run_id, &l, &err));
  ASSERT(find(l, state)->expires_at != NULL);
  tb_checkpoint_list_free(l);
  ASSERT_OK(tb_rest_client_set_checkpoint_ttl_from_tinker_path_sync(&rc, state, 0, &err));
  ASSERT_OK(tb_rest_client_list_checkpoints_sync(&rc, run_id, &l, &err));
  ASSERT(find(l, state)->expires_at == NULL);
  tb_checkpoint_list_free(l);

  /* an archive link */
  tb_archive_url_t *au = NULL;
  ASSERT_OK(tb_rest_client_get_checkpoint_archive_url_from_tinker_path_sync(&rc, state, &au,
                                                                           &err));
  ASSERT_STR_CONTAINS(au->url, "/api/v1/checkpoint_archives/arc-");
  ASSERT(au->expires != NULL);
  tb_archive_url_free(au);

  /* the session and the sampler */
  tb_session_info_t *si = NULL;
  ASSERT_OK(tb_rest_client_get_session_sync(&rc, sc.session_id, TB_ACCESS_OWNED, &si, &err));
  ASSERT_EQ_INT(si->n_training_run_ids, 1);
  ASSERT_STR_EQ(si->training_run_ids[0], run_id);
  tb_session_info_free(si);
  tb_string_list_t *ids = NULL;
  ASSERT_OK(tb_rest_client_list_sessions_sync(&rc, 0, 0, TB_ACCESS_OWNED, &ids, &err));
  ASSERT_GE(ids->n, 1);
  int seen = 0;
  for (size_t i = 0; i < ids->n; i++)
    seen |= strcmp(ids->items[i], sc.session_id) == 0;
  ASSERT(seen);
  tb_string_list_free(ids);
  tb_sampling_client_t samp;
  ASSERT_OK(tb_service_client_create_sampling_client_sync(&sc, &samp, weights, NULL, &err));
  tb_sampler_info_t *sam = NULL;
  ASSERT_OK(tb_rest_client_get_sampler_sync(&rc, samp.sampling_session_id, &sam, &err));
  ASSERT_STR_EQ(sam->sampler_id, samp.sampling_session_id);
  ASSERT_STR_EQ(sam->base_model, "base");
  ASSERT_STR_EQ(sam->model_path, weights);
  tb_sampler_info_free(sam);
  int want = closed + 1;
  tb_sampling_client_close(&samp, on_closed_samp);
  while (closed < want)
    uv_run(&loop, UV_RUN_ONCE);

  /* deleted: gone from the list, and 404 the second time */
  ASSERT_OK(tb_rest_client_delete_checkpoint_from_tinker_path_sync(&rc, state, &err));
  ASSERT_OK(tb_rest_client_list_checkpoints_sync(&rc, run_id, &l, &err));
  ASSERT_EQ_INT(l->n, 1);
  ASSERT(find(l, state) == NULL);
  tb_checkpoint_list_free(l);
  ASSERT_ERR(tb_rest_client_delete_checkpoint_sync(&rc, run_id, "weights/s1", &err), TB_EHTTP);
  ASSERT_EQ_INT(err.http_status, 404);
  tb_error_clear(&err);

  /* a run of nobody, and paths that are not checkpoints */
  ASSERT_ERR(tb_rest_client_get_training_run_sync(&rc, "nobody:train:9", TB_ACCESS_OWNED, &run,
                                                  &err),
             TB_EHTTP);
  ASSERT_EQ_INT(err.http_status, 404);
  tb_error_clear(&err);
  tb_future_t *f;
  ASSERT_ERR(tb_rest_client_delete_checkpoint_from_tinker_path(&rc, "tinker://r/other/x", &f),
             TB_EINVAL);
  ASSERT_ERR(tb_rest_client_publish_checkpoint_from_tinker_path(&rc, "http://r/weights/x", &f),
             TB_EINVAL);
  ASSERT_ERR(tb_rest_client_set_checkpoint_ttl_from_tinker_path(&rc, weights, -1, &f),
             TB_EINVAL);
  ASSERT_ERR(tb_rest_client_get_audit_log(&rc, "everything", NULL, &f), TB_EINVAL);

  free(state);
  free(weights);
  free(run_id);
  want = closed + 1;
  tb_training_client_close(&tc, on_closed_tc);
  while (closed < want)
    uv_run(&loop, UV_RUN_ONCE);
  stop();
}

TEST_LIST(
  TEST_ENTRY_TIMEOUT(runs_checkpoints_sessions, 300000),
)

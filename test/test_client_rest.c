/*
 * The RestClient against the real server on the same loop: the runs,
 * checkpoints, sessions and samplers made by a training client, listed,
 * published, given a TTL, archived and deleted.
 */
#define _GNU_SOURCE
#include "test_client_fake.h"

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

static void on_closed_sc_flag(tb_service_client_t *c) {
  *(int *)c->data = 1;
  uv_stop(c->loop);
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
  ASSERT_OK(tb_server_start_training(&server, NULL, 0, 0));
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

/* ------------------------------------------------------------ against a fake */

static int trace_polls;

static fake_resp_t decide_rest(fake_t *fk, tb__http_request_t *req, int is_poll) {
  fake_resp_t ok = { .status = 200 };
  char path[256];
  snprintf(path, sizeof(path), "%.*s", (int)req->path.len, req->path.base);
  if (strcmp(path, "/api/v1/sessions/s%201/trace_export") == 0) {
    ok.body = trace_polls++ == 0 ? "{\"status\":\"pending\"}"
                                 : "{\"status\":\"ready\",\"url\":\"https://x/trace.json\"}";
  } else if (strcmp(path, "/api/v1/sessions/bad/trace_export") == 0) {
    ok.body = "{\"status\":\"failed\",\"error\":\"no events\"}";
  } else if (strncmp(path, "/api/v1/audit", 13) == 0) {
    ok.body = "{\"entries\":[{\"timestamp\":\"2026-11-30T10:00:00Z\",\"event\":\"save\"}]}";
  } else if (strncmp(path, "/api/v1/billing/usage/events", 28) == 0) {
    ok.body = "{\"data\":[],\"sessions\":{}}";
  } else if (strcmp(path, "/api/v1/sessions/s%201/project") == 0) {
    ok.body = "{}";
  } else if (strcmp(path, "/api/v1/training_runs/bad") == 0) {
    ok.body = "{\"training_run_id\":\"bad\"}";
  } else if (strcmp(path, "/api/v1/training_runs/bad/checkpoints") == 0) {
    ok.body = "{\"checkpoints\":[{\"checkpoint_id\":\"weights/a\",\"checkpoint_type\":"
              "\"training\",\"tinker_path\":\"tinker://bad/weights/a\",\"size_bytes\":\"9\"}]}";
  } else {
    ok.status = 404;
    ok.body = "{\"error\":\"no such route\",\"category\":\"user\"}";
  }
  return ok;
}

/* The functions the server does not serve, against a fake: the trace
 * export asked again until ready (one TB_REST_TRACE_POLL_MS pause), or
 * failed; the audit log and billing usage as JSON text; the paths and
 * queries as sent; malformed answers refused naming the field. */
TEST(fake_trace_audit_billing) {
  uv_loop_t l;
  ASSERT_OK(uv_loop_init(&l));
  fake_t fk;
  fake_start(&fk, &l);
  fk.decide = decide_rest;
  tb_client_config_t cfg = fake_config(&fk);
  tb_service_client_t s;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(&l, &s, &cfg, &err));
  tb_rest_client_t rc;
  ASSERT_OK(tb_rest_client_init(&rc, &s));

  trace_polls = 0;
  char *url = NULL;
  uint64_t t0 = uv_now(&l);
  ASSERT_OK(tb_rest_client_export_session_trace_sync(&rc, "s 1", &url, &err));
  ASSERT_STR_EQ(url, "https://x/trace.json");
  ASSERT_EQ_INT(trace_polls, 2);
  ASSERT_GE(uv_now(&l) - t0, TB_REST_TRACE_POLL_MS - 100);
  free(url);
  ASSERT_ERR(tb_rest_client_export_session_trace_sync(&rc, "bad", &url, &err), TB_ESERVER);
  ASSERT_STR_CONTAINS(err.message, "no events");
  tb_error_clear(&err);

  char *json = NULL;
  ASSERT_OK(tb_rest_client_get_audit_log_sync(&rc, "checkpoints", "2026-11-30", &json, &err));
  ASSERT_STR_CONTAINS(json, "\"entries\"");
  free(json);
  ASSERT_STR_EQ(fk.log[fk.n_log - 1].path, "/api/v1/audit");
  ASSERT_OK(tb_rest_client_get_billing_usage_sync(&rc, "2026-11-01T00:00:00Z",
                                                  "2026-12-01T00:00:00Z", &json, &err));
  ASSERT_STR_CONTAINS(json, "\"data\"");
  free(json);
  ASSERT_OK(tb_rest_client_assign_session_project_sync(&rc, "s 1", "p1", &err));
  ASSERT_STR_CONTAINS(fk.log[fk.n_log - 1].body, "\"project_id\":\"p1\"");

  /* malformed answers fail as the server's, naming the field */
  tb_training_run_t *run = NULL;
  ASSERT_ERR(tb_rest_client_get_training_run_sync(&rc, "bad", TB_ACCESS_OWNED, &run, &err),
             TB_EPROTO);
  ASSERT_EQ_INT(err.category, TB_CATEGORY_SERVER);
  ASSERT_STR_CONTAINS(err.message, "training run: base_model: required field is missing");
  tb_error_clear(&err);
  tb_checkpoint_list_t *cl = NULL;
  ASSERT_ERR(tb_rest_client_list_checkpoints_sync(&rc, "bad", &cl, &err), TB_EPROTO);
  ASSERT_STR_CONTAINS(err.message,
                      "checkpoints: checkpoints[0].size_bytes: expected an integer, got a string");
  tb_error_clear(&err);

  /* cancelling an export in its pause fails it with TB_ECANCELED, later */
  trace_polls = 0;
  tb_future_t *f;
  ASSERT_OK(tb_rest_client_export_session_trace(&rc, "s 1", &f));
  for (int i = 0; i < 1000 && trace_polls == 0; i++)
    uv_run(&l, UV_RUN_ONCE);
  for (int i = 0; i < 20; i++)
    uv_run(&l, UV_RUN_NOWAIT);
  ASSERT_OK(tb_future_cancel(f));
  ASSERT(!tb_future_is_done(f));
  ASSERT_ERR(tb_future_wait(f, 10000), TB_ECANCELED);
  tb_future_free(f);

  int done = 0;
  s.data = &done;
  tb_service_client_close(&s, on_closed_sc_flag);
  while (!done)
    uv_run(&l, UV_RUN_ONCE);
  fake_stop(&fk);
  uv_run(&l, UV_RUN_DEFAULT);
  ASSERT_LOOP_CLOSE(&l);
}

TEST_LIST(
  TEST_ENTRY_TIMEOUT(runs_checkpoints_sessions, 300000),
  TEST_ENTRY_TIMEOUT(fake_trace_audit_billing, 60000),
)

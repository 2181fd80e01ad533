/*
 * The blocking twins of the RestClient's operations: each calls the
 * future-returning form and waits for it (tinkerbell/rest_client.h).
 */
#include "tinkerbell/rest_client.h"

#include "client/clients.h"

static int finish(tb_rest_client_t *rc, int ret, tb_future_t *f, const char *what,
                  const tb_result_type_t *type, void **result, tb_error_t *err) {
  if (ret != 0)
    return tb__client_refused(err, ret, what);
  tb__rt_t *rt = tb__service_rt(rc->service);
  if (rt == NULL) {
    tb_future_free(f);
    return tb__client_refused(err, TB_ECLOSING, what);
  }
  return tb__client_wait_take(rt, f, type, result, err);
}

/* The body of every twin below: refused inside a callback of the loop
 * (nothing is started then), else the operation is started and waited
 * for.  `call` puts its future in f. */
#define SYNC_TWIN(call, what, type, out)                                \
  do {                                                                  \
    if (tb__client_check_nested(rc ? rc->service : NULL, err) != 0)     \
      return TB_ENESTED;                                                \
    tb_future_t *f = NULL;                                              \
    int ret = (call);                                                   \
    return finish(rc, ret, f, what, type, (void **)(out), err);         \
  } while (0)

int tb_rest_client_get_training_run_sync(tb_rest_client_t *rc,
    const char *training_run_id,
    tb_access_scope_t scope,
    tb_training_run_t **run,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_get_training_run(rc, training_run_id, scope, &f),
            "get_training_run", &tb_result_training_run, run);
}

int tb_rest_client_get_training_run_by_tinker_path_sync(tb_rest_client_t *rc,
    const char *tinker_path,
    tb_access_scope_t scope,
    tb_training_run_t **run,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_get_training_run_by_tinker_path(rc, tinker_path, scope, &f),
            "get_training_run_by_tinker_path", &tb_result_training_run, run);
}

int tb_rest_client_list_training_runs_sync(tb_rest_client_t *rc,
    int64_t limit,
    int64_t offset,
    tb_access_scope_t scope,
    const char *project_id,
    tb_training_run_list_t **runs,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_list_training_runs(rc, limit, offset, scope, project_id, &f),
            "list_training_runs", &tb_result_training_run_list, runs);
}

int tb_rest_client_get_weights_info_by_tinker_path_sync(tb_rest_client_t *rc,
    const char *tinker_path,
    tb_weights_info_t **info,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_get_weights_info_by_tinker_path(rc, tinker_path, &f),
            "get_weights_info_by_tinker_path", &tb_result_weights_info, info);
}

int tb_rest_client_list_checkpoints_sync(tb_rest_client_t *rc,
    const char *training_run_id,
    tb_checkpoint_list_t **list,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_list_checkpoints(rc, training_run_id, &f),
            "list_checkpoints", &tb_result_checkpoint_list, list);
}

int tb_rest_client_list_user_checkpoints_sync(tb_rest_client_t *rc,
    int64_t limit,
    int64_t offset,
    tb_checkpoint_list_t **list,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_list_user_checkpoints(rc, limit, offset, &f),
            "list_user_checkpoints", &tb_result_checkpoint_list, list);
}

int tb_rest_client_get_checkpoint_archive_url_sync(tb_rest_client_t *rc,
    const char *training_run_id,
    const char *checkpoint_id,
    tb_archive_url_t **url,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_get_checkpoint_archive_url(rc, training_run_id, checkpoint_id, &f),
            "get_checkpoint_archive_url", &tb_result_archive_url, url);
}

int tb_rest_client_get_checkpoint_archive_url_from_tinker_path_sync(tb_rest_client_t *rc,
    const char *tinker_path,
    tb_archive_url_t **url,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_get_checkpoint_archive_url_from_tinker_path(rc, tinker_path, &f),
            "get_checkpoint_archive_url_from_tinker_path", &tb_result_archive_url, url);
}

int tb_rest_client_delete_checkpoint_sync(tb_rest_client_t *rc,
    const char *training_run_id,
    const char *checkpoint_id,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_delete_checkpoint(rc, training_run_id, checkpoint_id, &f),
            "delete_checkpoint", NULL, NULL);
}

int tb_rest_client_delete_checkpoint_from_tinker_path_sync(tb_rest_client_t *rc,
    const char *tinker_path,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_delete_checkpoint_from_tinker_path(rc, tinker_path, &f),
            "delete_checkpoint_from_tinker_path", NULL, NULL);
}

int tb_rest_client_publish_checkpoint_from_tinker_path_sync(tb_rest_client_t *rc,
    const char *tinker_path,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_publish_checkpoint_from_tinker_path(rc, tinker_path, &f),
            "publish_checkpoint_from_tinker_path", NULL, NULL);
}

int tb_rest_client_unpublish_checkpoint_from_tinker_path_sync(tb_rest_client_t *rc,
    const char *tinker_path,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_unpublish_checkpoint_from_tinker_path(rc, tinker_path, &f),
            "unpublish_checkpoint_from_tinker_path", NULL, NULL);
}

int tb_rest_client_set_checkpoint_ttl_from_tinker_path_sync(tb_rest_client_t *rc,
    const char *tinker_path,
    int64_t ttl_seconds,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_set_checkpoint_ttl_from_tinker_path(rc, tinker_path, ttl_seconds, &f),
            "set_checkpoint_ttl_from_tinker_path", NULL, NULL);
}

int tb_rest_client_get_session_sync(tb_rest_client_t *rc,
    const char *session_id,
    tb_access_scope_t scope,
    tb_session_info_t **info,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_get_session(rc, session_id, scope, &f),
            "get_session", &tb_result_session_info, info);
}

int tb_rest_client_list_sessions_sync(tb_rest_client_t *rc,
    int64_t limit,
    int64_t offset,
    tb_access_scope_t scope,
    tb_string_list_t **ids,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_list_sessions(rc, limit, offset, scope, &f),
            "list_sessions", &tb_result_string_list, ids);
}

int tb_rest_client_assign_session_project_sync(tb_rest_client_t *rc,
    const char *session_id,
    const char *project_id,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_assign_session_project(rc, session_id, project_id, &f),
            "assign_session_project", NULL, NULL);
}

int tb_rest_client_export_session_trace_sync(tb_rest_client_t *rc,
    const char *session_id,
    char **url,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_export_session_trace(rc, session_id, &f),
            "export_session_trace", &tb_result_string, url);
}

int tb_rest_client_get_sampler_sync(tb_rest_client_t *rc,
    const char *sampler_id,
    tb_sampler_info_t **info,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_get_sampler(rc, sampler_id, &f),
            "get_sampler", &tb_result_sampler_info, info);
}

int tb_rest_client_get_audit_log_sync(tb_rest_client_t *rc,
    const char *event_type,
    const char *day,
    char **json,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_get_audit_log(rc, event_type, day, &f),
            "get_audit_log", &tb_result_string, json);
}

int tb_rest_client_get_billing_usage_sync(tb_rest_client_t *rc,
    const char *starting_on,
    const char *ending_before,
    char **json,
    tb_error_t *err) {
  SYNC_TWIN(tb_rest_client_get_billing_usage(rc, starting_on, ending_before, &f),
            "get_billing_usage", &tb_result_string, json);
}

/*
 * The blocking twins of the TrainingClient's operations: each calls the
 * future-returning form and waits for it (tinkerbell/training_client.h).
 */
#include "tinkerbell/training_client.h"

#include "client/clients.h"

/* The runtime a training client's wait runs under. */
static tb__rt_t *rt_of(tb_training_client_t *tc) {
  return tb__service_rt(tc->service);
}

/* Waits for f (made by a call that returned rc) and takes its result. */
static int finish(tb_training_client_t *tc, int rc, tb_future_t *f, const char *what,
                  const tb_result_type_t *type, void **result, tb_error_t *err) {
  if (rc != 0)
    return tb__client_refused(err, rc, what);
  tb__rt_t *rt = rt_of(tc);
  if (rt == NULL) {
    tb_future_free(f);
    return tb__client_refused(err, TB_ECLOSING, what);
  }
  return tb__client_wait_take(rt, f, type, result, err);
}

int tb_service_client_create_lora_training_client_sync(tb_service_client_t *sc,
                                                       tb_training_client_t *tc,
                                                       const char *base_model,
                                                       const tb_lora_params_t *lora,
                                                       tb_error_t *err) {
  if (tb__client_check_nested(sc, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_service_client_create_lora_training_client(sc, tc, base_model, lora, &f);
  return finish(tc, rc, f, "create_lora_training_client", &tb_result_string, NULL, err);
}

int tb_service_client_create_training_client_from_state_sync(tb_service_client_t *sc,
                                                             tb_training_client_t *tc,
                                                             const char *path, tb_error_t *err) {
  if (tb__client_check_nested(sc, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_service_client_create_training_client_from_state(sc, tc, path, &f);
  return finish(tc, rc, f, "create_training_client_from_state", &tb_result_string, NULL, err);
}

int tb_service_client_create_training_client_from_state_with_optimizer_sync(
    tb_service_client_t *sc, tb_training_client_t *tc, const char *path, tb_error_t *err) {
  if (tb__client_check_nested(sc, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_service_client_create_training_client_from_state_with_optimizer(sc, tc, path, &f);
  return finish(tc, rc, f, "create_training_client_from_state_with_optimizer",
                &tb_result_string, NULL, err);
}

int tb_training_client_forward_sync(tb_training_client_t *tc, const tb_train_datum_t *data,
                                    size_t n, const char *loss_fn,
                                    const tb_loss_fn_config_entry_t *config, size_t n_config,
                                    tb_forward_backward_output_t **result, tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_forward(tc, data, n, loss_fn, config, n_config, &f);
  return finish(tc, rc, f, "forward", &tb_result_forward_backward_output, (void **)result, err);
}

int tb_training_client_forward_backward_sync(tb_training_client_t *tc,
                                             const tb_train_datum_t *data, size_t n,
                                             const char *loss_fn,
                                             const tb_loss_fn_config_entry_t *config,
                                             size_t n_config,
                                             tb_forward_backward_output_t **result,
                                             tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_forward_backward(tc, data, n, loss_fn, config, n_config, &f);
  return finish(tc, rc, f, "forward_backward", &tb_result_forward_backward_output,
                (void **)result, err);
}

int tb_training_client_forward_backward_custom_sync(tb_training_client_t *tc,
                                                    const tb_train_datum_t *data, size_t n,
                                                    tb_custom_loss_fn fn, void *fn_data,
                                                    tb_forward_backward_output_t **result,
                                                    tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_forward_backward_custom(tc, data, n, fn, fn_data, &f);
  return finish(tc, rc, f, "forward_backward_custom", &tb_result_forward_backward_output,
                (void **)result, err);
}

int tb_training_client_optim_step_sync(tb_training_client_t *tc,
                                       const tb_adamw_params_t *params,
                                       tb_optim_step_output_t **result, tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_optim_step(tc, params, &f);
  return finish(tc, rc, f, "optim_step", &tb_result_optim_step_output, (void **)result, err);
}

int tb_training_client_save_state_sync(tb_training_client_t *tc, const char *name,
                                       int64_t ttl_seconds, char **path, tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_save_state(tc, name, ttl_seconds, &f);
  return finish(tc, rc, f, "save_state", &tb_result_string, (void **)path, err);
}

int tb_training_client_load_state_sync(tb_training_client_t *tc, const char *path,
                                       tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_load_state(tc, path, &f);
  return finish(tc, rc, f, "load_state", &tb_result_string, NULL, err);
}

int tb_training_client_load_state_with_optimizer_sync(tb_training_client_t *tc,
                                                      const char *path, tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_load_state_with_optimizer(tc, path, &f);
  return finish(tc, rc, f, "load_state_with_optimizer", &tb_result_string, NULL, err);
}

int tb_training_client_save_weights_for_sampler_sync(tb_training_client_t *tc, const char *name,
                                                     int64_t ttl_seconds, char **path,
                                                     tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_save_weights_for_sampler(tc, name, ttl_seconds, &f);
  return finish(tc, rc, f, "save_weights_for_sampler", &tb_result_string, (void **)path, err);
}

int tb_training_client_save_weights_and_get_sampling_client_sync(tb_training_client_t *tc,
                                                                 tb_sampling_client_t *sc,
                                                                 tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_save_weights_and_get_sampling_client(tc, sc, &f);
  return finish(tc, rc, f, "save_weights_and_get_sampling_client", &tb_result_string, NULL,
                err);
}

int tb_training_client_create_sampling_client_sync(tb_training_client_t *tc,
                                                   const char *model_path,
                                                   tb_sampling_client_t *sc, tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_create_sampling_client(tc, model_path, sc, &f);
  return finish(tc, rc, f, "create_sampling_client", &tb_result_string, NULL, err);
}

int tb_training_client_get_info_sync(tb_training_client_t *tc, tb_model_info_t **info,
                                     tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_get_info(tc, &f);
  return finish(tc, rc, f, "get_info", &tb_result_model_info, (void **)info, err);
}

int tb_training_client_unload_sync(tb_training_client_t *tc, tb_error_t *err) {
  if (tb__client_check_nested(tc ? tc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int rc = tb_training_client_unload(tc, &f);
  return finish(tc, rc, f, "unload", NULL, NULL, err);
}

/*
 * The TrainingClient's operations as the caller sees them: arguments
 * checked, data chunked and encoded, seq_ids taken, the op queued (see
 * training_internal.h).
 */
#include "client/training_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/chunk.h"
#include "client/convert.h"
#include "core/json.h"
#include "wire/encode.h"
#include "wire/op_request.h"

/* ------------------------------------------------------------ checks */

static int check_data(const tb_train_datum_t *data, size_t n) {
  if (data == NULL || n == 0)
    return TB_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (tb_model_input_length(&data[i].model_input) == 0)
      return TB_EINVAL;
    for (size_t j = 0; j < data[i].n_loss_fn_inputs; j++) {
      const tb_tensor_data_t *t = &data[i].loss_fn_inputs[j].tensor;
      if (data[i].loss_fn_inputs[j].name == NULL ||
          (t->dtype != TB_TENSOR_FLOAT32 && t->dtype != TB_TENSOR_INT64) ||
          (t->numel > 0 && (t->dtype == TB_TENSOR_FLOAT32 ? (void *)t->f32 : (void *)t->i64) ==
                               NULL))
        return TB_EINVAL;
    }
  }
  return 0;
}

/* forward, forward_backward and the first half of the custom loss. */
static int fwd_common(tb_training_client_t *ptc, tb__tc_kind_t kind, const tb_train_datum_t *data,
                      size_t n, const char *loss_fn, const tb_loss_fn_config_entry_t *config,
                      size_t n_config, tb_custom_loss_fn fn, void *fn_data, tb_future_t **out) {
  tb__tc_t *tc = tb__tc_usable(ptc);
  if (tc == NULL || out == NULL || loss_fn == NULL || loss_fn[0] == '\0' ||
      (config == NULL && n_config > 0))
    return TB_EINVAL;
  if (tc->closing)
    return TB_ECLOSING;
  int rc = check_data(data, n);
  for (size_t i = 0; rc == 0 && i < n_config; i++)
    if (config[i].name == NULL || !isfinite(config[i].value))
      rc = TB_EINVAL;
  if (rc != 0)
    return rc;
  tb_train_datum_t *copies = NULL;
  if (kind == TB__TC_CUSTOM) {
    /* Only target_tokens and weights; a datum without weights gets zeros
     * for the forward pass. */
    copies = calloc(n, sizeof(*copies));
    if (copies == NULL)
      return TB_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
      const tb_tensor_data_t *tt = tb_train_datum_input(&data[i], "target_tokens");
      for (size_t j = 0; j < data[i].n_loss_fn_inputs; j++) {
        const char *nm = data[i].loss_fn_inputs[j].name;
        if (strcmp(nm, "target_tokens") != 0 && strcmp(nm, "weights") != 0)
          rc = TB_EINVAL;
      }
      if (tt == NULL || tt->dtype != TB_TENSOR_INT64)
        rc = TB_EINVAL;
      rc = rc ? rc : tb_train_datum_copy(&copies[i], &data[i]);
      if (rc == 0 && tb_train_datum_input(&copies[i], "weights") == NULL) {
        float *z = calloc(tt->numel + 1, sizeof(float));
        rc = z ? tb_train_datum_set_f32(&copies[i], "weights", z, tt->numel) : TB_ENOMEM;
        free(z);
      }
    }
    data = copies;
  }
  size_t *bounds = NULL, nc = 0;
  if (rc == 0)
    rc = tb__chunk_split(data, n, TB_CHUNK_MAX_LEN, TB_CHUNK_MAX_BYTES, &bounds, &nc);
  size_t n_reqs = kind == TB__TC_CUSTOM ? 2 * nc : nc;
  tb__tc_op_t *op = rc == 0 ? tb__tc_op_new(tc, kind, n_reqs) : NULL;
  if (rc == 0 && op == NULL)
    rc = TB_ENOMEM;
  if (rc == 0 && (op->parts = calloc(n_reqs + 1, sizeof(*op->parts))) == NULL)
    rc = TB_ENOMEM;
  if (rc == 0)
    rc = tb__tc_encode_chunks(op, 0, data, bounds, nc, tc->next_seq,
                              kind == TB__TC_CUSTOM ? "cross_entropy" : loss_fn,
                              kind == TB__TC_CUSTOM ? NULL : config,
                              kind == TB__TC_CUSTOM ? 0 : n_config,
                              kind != TB__TC_FORWARD_BACKWARD);
  free(bounds);
  if (rc != 0) {
    if (op != NULL)
      tb__tc_op_discard(op);
    for (size_t i = 0; copies != NULL && i < n; i++)
      tb_train_datum_clear(&copies[i]);
    free(copies);
    return rc;
  }
  if (kind == TB__TC_CUSTOM) {
    op->datums = copies;
    op->n_datums = n;
    op->fn = fn;
    op->fn_data = fn_data;
    op->after_forward = tb__tc_run_custom_loss;
    for (size_t k = 0; k < nc; k++) {
      op->reqs[nc + k].seq = tc->next_seq + (int64_t)(nc + k);
      op->reqs[nc + k].n_datums = op->reqs[k].n_datums;
    }
  }
  op->first = 0;
  op->count = nc;
  tc->next_seq += (int64_t)n_reqs;
  tb__tc_op_register(op, out);
  tb__tc_enqueue(op);
  return 0;
}

int tb_training_client_forward(tb_training_client_t *tc, const tb_train_datum_t *data, size_t n,
                               const char *loss_fn, const tb_loss_fn_config_entry_t *config,
                               size_t n_config, tb_future_t **out) {
  return fwd_common(tc, TB__TC_FORWARD, data, n, loss_fn, config, n_config, NULL, NULL, out);
}

int tb_training_client_forward_backward(tb_training_client_t *tc, const tb_train_datum_t *data,
                                        size_t n, const char *loss_fn,
                                        const tb_loss_fn_config_entry_t *config,
                                        size_t n_config, tb_future_t **out) {
  return fwd_common(tc, TB__TC_FORWARD_BACKWARD, data, n, loss_fn, config, n_config, NULL, NULL,
                    out);
}

int tb_training_client_forward_backward_custom(tb_training_client_t *tc,
                                               const tb_train_datum_t *data, size_t n,
                                               tb_custom_loss_fn fn, void *fn_data,
                                               tb_future_t **out) {
  if (fn == NULL)
    return TB_EINVAL;
  return fwd_common(tc, TB__TC_CUSTOM, data, n, "cross_entropy", NULL, 0, fn, fn_data, out);
}

/* An op of one JSON request; body is taken over. */
static int json_op(tb_training_client_t *ptc, tb__tc_kind_t kind, json_t *body, int sequenced,
                   tb__tc_op_t **opp, tb_future_t **out) {
  tb__tc_t *tc = tb__tc_usable(ptc);
  if (tc == NULL || out == NULL) {
    json_decref(body);
    return TB_EINVAL;
  }
  if (tc->closing) {
    json_decref(body);
    return TB_ECLOSING;
  }
  tb__tc_op_t *op = body ? tb__tc_op_new(tc, kind, 1) : NULL;
  if (op == NULL) {
    json_decref(body);
    return TB_ENOMEM;
  }
  op->reqs[0].json = body;
  op->count = 1;
  if (sequenced) {
    op->reqs[0].seq = tc->next_seq;
    if (tb__wire_request_add_seq_id(body, tc->next_seq) != 0) {
      tb__tc_op_discard(op);
      return TB_ENOMEM;
    }
    tc->next_seq++;
  }
  if (opp != NULL)
    *opp = op;
  tb__tc_op_register(op, out);
  if (kind == TB__TC_UNLOAD || sequenced)
    tb__tc_enqueue(op);
  else
    tb__tc_run_or_wait_model(op);
  return 0;
}

int tb_training_client_optim_step(tb_training_client_t *tc, const tb_adamw_params_t *params,
                                  tb_future_t **out) {
  tb_adamw_params_t p;
  if (params == NULL)
    tb_adamw_params_default(&p);
  else
    p = *params;
  double v[] = { p.learning_rate, p.beta1, p.beta2, p.eps, p.weight_decay, p.grad_clip_norm };
  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
    if (!isfinite(v[i]) || v[i] < 0)
      return TB_EINVAL;
  tb__wire_adam_t a = { p.learning_rate, p.beta1,        p.beta2,
                        p.eps,           p.weight_decay, p.grad_clip_norm };
  return json_op(tc, TB__TC_OPTIM, tb__wire_optim_request_to_json(&a), 1, NULL, out);
}

static int check_name(const char *name) {
  if (name == NULL || name[0] == '\0')
    return TB_EINVAL;
  return 0;
}

static json_t *save_body(const char *type, const char *name, int64_t ttl_seconds,
                         int overwrite) {
  tb__wire_save_request_t r = { type, name, ttl_seconds, overwrite, -1 };
  return tb__wire_save_request_to_json(&r);
}

int tb_training_client_save_state(tb_training_client_t *tc, const char *name,
                                  int64_t ttl_seconds, tb_future_t **out) {
  if (check_name(name) != 0 || ttl_seconds < 0)
    return TB_EINVAL;
  return json_op(tc, TB__TC_SAVE, save_body("save_weights", name, ttl_seconds, 0), 1, NULL, out);
}

int tb_training_client_save_weights_for_sampler(tb_training_client_t *tc, const char *name,
                                                int64_t ttl_seconds, tb_future_t **out) {
  if (check_name(name) != 0 || ttl_seconds < 0)
    return TB_EINVAL;
  return json_op(tc, TB__TC_SAVE_SAMPLER,
                 save_body("save_weights_for_sampler", name, ttl_seconds, -1), 1, NULL, out);
}

static int load_common(tb_training_client_t *tc, const char *path, int optimizer,
                       tb_future_t **out) {
  if (path == NULL || strncmp(path, "tinker://", 9) != 0)
    return TB_EINVAL;
  tb__wire_load_request_t r = { NULL, -1, path, optimizer };
  json_t *b = tb__wire_load_request_to_json(&r);
  tb__tc_op_t *op = NULL;
  int rc = json_op(tc, TB__TC_LOAD, b, 1, &op, out);
  /* The answer's path when it gives one, else this one (when it could be
   * copied). */
  if (rc == 0)
    op->model_path = strdup(path);
  return rc;
}

int tb_training_client_load_state(tb_training_client_t *tc, const char *path,
                                  tb_future_t **out) {
  return load_common(tc, path, 0, out);
}

int tb_training_client_load_state_with_optimizer(tb_training_client_t *tc, const char *path,
                                                 tb_future_t **out) {
  return load_common(tc, path, 1, out);
}

int tb_training_client_unload(tb_training_client_t *tc, tb_future_t **out) {
  return json_op(tc, TB__TC_UNLOAD, tb__wire_typed_to_json("unload_model"), 0, NULL, out);
}

int tb_training_client_get_info(tb_training_client_t *tc, tb_future_t **out) {
  return json_op(tc, TB__TC_INFO, tb__wire_typed_to_json("get_info"), 0, NULL, out);
}

/* ------------------------------------------------------------ sampling clients */

/* save_weights_and_get_sampling_client answered: set up op->samp. */
static void finish_sampling_client(tb__tc_op_t *op, char *session_id) {
  if (session_id == NULL) {
    tb_error_t e = { 0 };
    tb_error_set(&e, TB_EPROTO, TB_CATEGORY_SERVER, "no sampling session id in the answer");
    tb__tc_keep_first_error(op, &e);
    tb_error_clear(&e);
    tb__tc_op_complete(op, NULL, NULL);
    return;
  }
  tb__sampling_client_ready(op->samp, session_id, NULL);
  op->samp = NULL;
  tb__tc_op_complete(op, &tb_result_string, session_id);
}

int tb_training_client_save_weights_and_get_sampling_client(tb_training_client_t *ptc,
                                                            tb_sampling_client_t *samp,
                                                            tb_future_t **out) {
  tb__tc_t *tc = tb__tc_usable(ptc);
  if (tc == NULL || samp == NULL || out == NULL)
    return TB_EINVAL;
  if (tc->closing)
    return TB_ECLOSING;
  int rc = tb__sampling_client_init_pending(tc->svc, samp, NULL, tc->base_model);
  if (rc != 0)
    return rc;
  tb__wire_save_request_t r = { "save_weights_for_sampler", NULL, 0, -1,
                                tb__service_next_sampling_seq(tc->svc) };
  json_t *b = tb__wire_save_request_to_json(&r);
  tb__tc_op_t *op = NULL;
  rc = json_op(ptc, TB__TC_SAVE_GET_SAMPLER, b, 1, &op, out);
  if (rc != 0) {
    tb__sampling_client_discard(samp);
    return rc;
  }
  op->samp = samp;
  op->take_session = finish_sampling_client;
  return 0;
}

int tb_training_client_create_sampling_client(tb_training_client_t *ptc, const char *model_path,
                                              tb_sampling_client_t *samp, tb_future_t **out) {
  tb__tc_t *tc = tb__tc_usable(ptc);
  if (tc == NULL)
    return TB_EINVAL;
  return tb_service_client_create_sampling_client(tc->svc, samp, model_path, NULL, out);
}

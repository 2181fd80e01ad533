/*
 * The TrainingClient's model: created by create_model or a load that
 * creates it; the ops that waited for it then go out (see
 * training_internal.h).
 */
#include "client/training_internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "wire/op_request.h"

/* ------------------------------------------------------------ creation */

static void created(tb__tc_t *tc, int status, tb_error_t *err) {
  tb_future_t *f = tc->create_f;
  tc->create_f = NULL;
  if (status == 0) {
    tc->state = 1;
    tc->pub->model_id = tc->model_id;
    tc->pub->base_model = tc->base_model;
  } else {
    tc->state = -1;
    if (tb_error_copy(&tc->create_err, err) != 0)
      tc->create_err.code = err->code;
    if (tc->create_err.code == 0)
      tc->create_err.code = TB_EIO;
  }
  /* Waiting ops go now (or fail later, on their own alarms). */
  tb__tc_op_t *w = tc->waiting_model;
  tc->waiting_model = NULL;
  while (w != NULL) {
    tb__tc_op_t *next = w->next;
    w->next = NULL;
    tb__tc_run_or_wait_model(w);
    w = next;
  }
  tb__tc_pump(tc);
  if (status == 0) {
    char *id = strdup(tc->model_id);
    if (id == NULL) {
      tb_error_t e = { 0 };
      tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
      tb__client_future_fail(f, &e);
    } else {
      tb__client_future_resolve(f, &tb_result_string, id);
    }
  } else {
    tb__client_future_fail(f, err);
  }
  tb__tc_check_closed(tc);
}

/* Ends the creation with the failure of f (status when it names no code). */
static void created_failed(tb__tc_t *tc, tb_future_t *f, int status) {
  tb_error_t e = { 0 };
  tb_error_copy(&e, &f->error);
  if (e.code == 0)
    e.code = status;
  tb_future_free(f);
  created(tc, status, &e);
  tb_error_clear(&e);
}

static void on_create_done(tb_future_t *f, int status) {
  tb__tc_t *tc = f->data;
  tc->create_op_f = NULL;
  if (status != 0) {
    created_failed(tc, f, status);
    return;
  }
  tb_error_t e = { 0 };
  char *mid = tb_future_take(f, &tb_result_string);
  if (mid != NULL) {
    free(tc->model_id);
    tc->model_id = mid;
  }
  if (tc->model_id == NULL)
    status = tb_error_set(&e, TB_EPROTO, TB_CATEGORY_SERVER, "the server named no model id");
  tb_future_free(f);
  created(tc, status, &e);
  tb_error_clear(&e);
}

static int decode_model_id(tb__client_op_t *cop, const char *body, size_t len, int proto,
                           const tb_result_type_t **type, void **result, tb_error_t *err) {
  return tb__tc_decode_string_field(body, len, "model_id", 0, NULL, type, result, err);
}

static void on_session(tb_future_t *f, int status) {
  tb__tc_t *tc = f->data;
  tc->session_f = NULL;
  if (status != 0) {
    created_failed(tc, f, status);
    return;
  }
  const char *sid = tb_future_result(f, &tb_result_string);
  json_t *b;
  if (tc->create_via_load) {
    tb__wire_load_request_t r = { sid, tc->model_seq, tc->create_path, tc->create_optimizer };
    b = tb__wire_load_request_to_json(&r);
    /* The SDK's assumption, kept unless the answer names the model. */
    tc->model_id = tb__asprintf("%s:train:%lld", sid, (long long)tc->model_seq);
  } else {
    tb__wire_create_model_t r = { sid,
                                  tc->model_seq,
                                  tc->base_model,
                                  tc->lora.rank,
                                  tc->lora.train_mlp,
                                  tc->lora.train_attn,
                                  tc->lora.train_unembed,
                                  tc->lora.has_seed,
                                  (int64_t)tc->lora.seed };
    b = tb__wire_create_model_to_json(&r);
  }
  tb_future_free(f);
  tb__client_op_opts_t o = { 0 };
  o.path = tc->create_via_load ? "/api/v1/load_weights" : "/api/v1/create_model";
  o.max_retries = -1;
  o.poll = 1;
  o.request_type = tc->create_via_load ? "LoadWeights" : "CreateModel";
  o.decode = decode_model_id;
  int rc = tb__client_op_start_json(tc->rt, &o, b, &tc->create_op_f);
  if (rc != 0) {
    tb_error_t e = { 0 };
    tb__client_not_started(&e, rc, "cannot create the model");
    created(tc, rc, &e);
    tb_error_clear(&e);
    return;
  }
  tc->create_op_f->data = tc;
  tb_future_set_callback(tc->create_op_f, on_create_done);
}

static void cancel_create(tb_future_t *f) {
  tb__tc_t *tc = f->driver_;
  if (tc->session_f != NULL)
    tb_future_cancel(tc->session_f);
  if (tc->create_op_f != NULL)
    tb_future_cancel(tc->create_op_f);
}

static int create_common(tb_service_client_t *sc, tb_training_client_t *ptc,
                         const char *base_model, const tb_lora_params_t *lora,
                         const char *path, int optimizer, tb_future_t **out) {
  if (sc == NULL || ptc == NULL || out == NULL)
    return TB_EINVAL;
  tb__rt_t *rt = tb__service_rt(sc);
  if (rt == NULL)
    return sc->impl_ == NULL ? TB_EINVAL : TB_ECLOSING;
  tb__tc_t *tc = calloc(1, sizeof(*tc));
  tb_future_t *f = tb__client_future_new(sc->loop);
  int rc = tc && f ? 0 : TB_ENOMEM;
  if (rc == 0 && base_model != NULL && (tc->base_model = strdup(base_model)) == NULL)
    rc = TB_ENOMEM;
  if (rc == 0 && path != NULL && (tc->create_path = strdup(path)) == NULL)
    rc = TB_ENOMEM;
  if (rc == 0)
    rc = tb_service_client_session(sc, &tc->session_f);
  if (rc != 0) {
    if (tc != NULL) {
      free(tc->base_model);
      free(tc->create_path);
    }
    free(tc);
    free(f);
    return rc;
  }
  memset(ptc, 0, sizeof(*ptc));
  ptc->loop = sc->loop;
  ptc->service = sc;
  ptc->impl_ = tc;
  tc->pub = ptc;
  tc->svc = sc;
  tc->rt = rt;
  tc->next_seq = 1;
  tc->create_f = f;
  tc->create_via_load = path != NULL;
  tc->create_optimizer = optimizer;
  if (lora != NULL)
    tc->lora = *lora;
  else
    tb_lora_params_default(&tc->lora);
  tc->model_seq = tb__service_next_model_seq(sc);
  tc->session_f->data = tc;
  tb_future_set_callback(tc->session_f, on_session);
  tb__client_future_set_driver(f, cancel_create, tc);
  *out = f;
  return 0;
}

int tb_service_client_create_lora_training_client(tb_service_client_t *sc,
                                                  tb_training_client_t *tc,
                                                  const char *base_model,
                                                  const tb_lora_params_t *lora,
                                                  tb_future_t **out) {
  if (base_model == NULL || base_model[0] == '\0')
    return TB_EINVAL;
  if (lora != NULL && (lora->rank < 1 || !(lora->train_mlp || lora->train_attn ||
                                           lora->train_unembed)))
    return TB_EINVAL;
  return create_common(sc, tc, base_model, lora, NULL, 0, out);
}

int tb_service_client_create_training_client_from_state(tb_service_client_t *sc,
                                                        tb_training_client_t *tc,
                                                        const char *path, tb_future_t **out) {
  if (path == NULL || strncmp(path, "tinker://", 9) != 0)
    return TB_EINVAL;
  return create_common(sc, tc, NULL, NULL, path, 0, out);
}

int tb_service_client_create_training_client_from_state_with_optimizer(
    tb_service_client_t *sc, tb_training_client_t *tc, const char *path, tb_future_t **out) {
  if (path == NULL || strncmp(path, "tinker://", 9) != 0)
    return TB_EINVAL;
  return create_common(sc, tc, NULL, NULL, path, 1, out);
}

void tb_training_client_use_json(tb_training_client_t *ptc, int on) {
  tb__tc_t *tc = tb__tc_usable(ptc);
  if (tc != NULL)
    tc->json = on != 0;
}

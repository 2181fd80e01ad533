/*
 * The SamplingClient's session (tinkerbell/sampling_client.h): creating
 * it for create_sampling_client, or a client set up now whose session id
 * comes later from the training side; when the session is ready (or
 * failed) the samples waiting in sampling_client.c's queue go out (or
 * fail).
 */
#include "tinkerbell/sampling_client.h"

#include <stdlib.h>
#include <string.h>

#include "client/answer.h"
#include "client/clients.h"
#include "client/sampling_internal.h"
#include "core/json.h"
#include "wire/service.h"

typedef struct tb__sampling_client_s sc_t;

static void on_backoff_over(tb__alarm_t *a) {
  tb__sampling_pump(a->data);
}

static void session_ready(sc_t *s, const char *session_id, const tb_error_t *err) {
  tb_future_t *f = s->create_f;
  s->create_f = NULL;
  char *copy = session_id ? strdup(session_id) : NULL;
  if (session_id != NULL && copy != NULL) {
    s->session_id = copy;
    s->state = 1;
    s->pub->sampling_session_id = s->session_id;
  } else {
    s->state = -1;
    if (err == NULL || tb_error_copy(&s->create_err, err) != 0 || s->create_err.code == 0)
      tb_error_set(&s->create_err, err && err->code ? err->code : TB_ENOMEM,
                   err ? err->category : TB_CATEGORY_NONE, "%s",
                   err ? tb_error_message(err) : "out of memory");
  }
  tb__sampling_pump(s);
  if (f != NULL) {
    if (s->state == 1) {
      char *id = strdup(s->session_id);
      if (id != NULL) {
        tb__client_future_resolve(f, &tb_result_string, id);
      } else {
        tb_error_t e = { 0 };
        tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
        tb__client_future_fail(f, &e);
      }
    } else {
      tb_error_t e = { 0 };
      tb_error_copy(&e, &s->create_err);
      if (e.code == 0)
        e.code = s->create_err.code;
      tb__client_future_fail(f, &e);
    }
  }
  tb__sampling_check_closed(s);
}

void tb__sampling_client_ready(tb_sampling_client_t *samp, const char *session_id,
                               const tb_error_t *err) {
  sc_t *s = tb__sampling_usable(samp);
  if (s != NULL && s->state == 0)
    session_ready(s, session_id, err);
}

static int decode_sampling_session(tb__client_op_t *cop, const char *body, size_t len,
                                   int proto, const tb_result_type_t **type, void **result,
                                   tb_error_t *err) {
  TB__DECODE_FIELDS(tb__wire_sampler_created_t,
                    tb__wire_sampler_created_from_json(&d.jc, d.doc, &w),
                    "create_sampling_session");
  return tb__answer_string(&d, w.sampling_session_id, type, result, err);
}

static void on_session_created(tb_future_t *f, int status) {
  sc_t *s = f->data;
  s->create_op_f = NULL;
  session_ready(s, status == 0 ? tb_future_result(f, &tb_result_string) : NULL,
                status == 0 ? NULL : &f->error);
  tb_future_free(f);
}

static void on_session(tb_future_t *f, int status) {
  sc_t *s = f->data;
  s->session_f = NULL;
  if (status != 0) {
    session_ready(s, NULL, &f->error);
    tb_future_free(f);
    return;
  }
  const char *sid = tb_future_result(f, &tb_result_string);
  tb__wire_create_sampler_t r = { tb__wire_str(sid), s->sampling_seq,
                                  tb__wire_str(s->model_path), tb__wire_str(s->base_model) };
  json_t *b = tb__wire_create_sampler_to_json(&r);
  tb_future_free(f);
  tb__client_op_opts_t o = { 0 };
  o.path = "/api/v1/create_sampling_session";
  o.max_retries = -1;
  o.decode = decode_sampling_session;
  int rc = tb__client_op_start_json(s->rt, &o, b, &s->create_op_f);
  if (rc != 0) {
    tb_error_t e = { 0 };
    tb__client_not_started(&e, rc, "cannot create the sampling session");
    session_ready(s, NULL, &e);
    tb_error_clear(&e);
    return;
  }
  s->create_op_f->data = s;
  tb_future_set_callback(s->create_op_f, on_session_created);
}

static void cancel_create(tb_future_t *f) {
  sc_t *s = f->driver_;
  if (s->session_f != NULL)
    tb_future_cancel(s->session_f);
  if (s->create_op_f != NULL)
    tb_future_cancel(s->create_op_f);
}

int tb__sampling_client_init_pending(tb_service_client_t *svc, tb_sampling_client_t *samp,
                                     const char *model_path, const char *base_model) {
  if (svc == NULL || samp == NULL)
    return TB_EINVAL;
  tb__rt_t *rt = tb__service_rt(svc);
  if (rt == NULL)
    return svc->impl_ == NULL ? TB_EINVAL : TB_ECLOSING;
  sc_t *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return TB_ENOMEM;
  if ((model_path != NULL && (s->model_path = strdup(model_path)) == NULL) ||
      (base_model != NULL && (s->base_model = strdup(base_model)) == NULL)) {
    free(s->model_path);
    free(s);
    return TB_ENOMEM;
  }
  memset(samp, 0, sizeof(*samp));
  samp->loop = svc->loop;
  samp->service = svc;
  samp->model_path = s->model_path;
  samp->base_model = s->base_model;
  samp->impl_ = s;
  s->pub = samp;
  s->svc = svc;
  s->rt = rt;
  s->max_in_flight = TB_SAMPLING_DEFAULT_MAX_IN_FLIGHT;
  tb__alarm_init(&s->backoff_alarm, on_backoff_over, s);
  return 0;
}

void tb__sampling_client_discard(tb_sampling_client_t *samp) {
  sc_t *s = tb__sampling_usable(samp);
  if (s == NULL)
    return;
  free(s->model_path);
  free(s->base_model);
  free(s);
  memset(samp, 0, sizeof(*samp));
}

int tb_service_client_create_sampling_client(tb_service_client_t *svc,
                                             tb_sampling_client_t *samp, const char *model_path,
                                             const char *base_model, tb_future_t **out) {
  if (out == NULL || (model_path == NULL && base_model == NULL) ||
      (model_path != NULL && strncmp(model_path, "tinker://", 9) != 0))
    return TB_EINVAL;
  tb__rt_t *rt = tb__service_rt(svc);
  if (rt == NULL)
    return svc == NULL || svc->impl_ == NULL ? TB_EINVAL : TB_ECLOSING;
  tb_future_t *f = tb__client_future_new(svc->loop), *sf = NULL;
  if (f == NULL)
    return TB_ENOMEM;
  int rc = tb_service_client_session(svc, &sf);
  if (rc != 0) {
    free(f);
    return rc;
  }
  rc = tb__sampling_client_init_pending(svc, samp, model_path, base_model);
  if (rc != 0) {
    tb_future_free(sf);  /* the session is made anyway, for the next caller */
    free(f);
    return rc;
  }
  sc_t *s = samp->impl_;
  s->sampling_seq = tb__service_next_sampling_seq(svc);
  s->create_f = f;
  s->session_f = sf;
  sf->data = s;
  tb_future_set_callback(sf, on_session);
  tb__client_future_set_driver(f, cancel_create, s);
  *out = f;
  return 0;
}

int tb_service_client_create_sampling_client_sync(tb_service_client_t *svc,
                                                  tb_sampling_client_t *samp,
                                                  const char *model_path, const char *base_model,
                                                  tb_error_t *err) {
  if (tb__client_check_nested(svc, err) != 0)
    return TB_ENESTED;
  tb_future_t *f;
  int rc = tb_service_client_create_sampling_client(svc, samp, model_path, base_model, &f);
  if (rc != 0)
    return tb__client_refused(err, rc, "create_sampling_client");
  return tb__client_wait_take(samp->impl_->rt, f, &tb_result_string, NULL, err);
}

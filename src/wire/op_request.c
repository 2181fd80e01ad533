/*
 * The training ops' small JSON requests (see op_request.h).
 */
#include "wire/op_request.h"

#include <string.h>

#include "tinkerbell/error.h"
#include "wire/codec.h"
#include "wire/service.h"

json_t *tb__wire_create_model_to_json(const tb__wire_create_model_t *r) {
  json_t *lc = json_object();
  int bad = tb__wire_put(lc, "rank", json_integer((json_int_t)r->rank));
  bad |= tb__wire_put(lc, "train_mlp", json_boolean(r->train_mlp));
  bad |= tb__wire_put(lc, "train_attn", json_boolean(r->train_attn));
  bad |= tb__wire_put(lc, "train_unembed", json_boolean(r->train_unembed));
  if (r->has_seed)
    bad |= tb__wire_put(lc, "seed", json_integer((json_int_t)r->seed));
  json_t *o = json_object();
  bad |= tb__wire_put(o, "session_id", json_string(r->session_id));
  bad |= tb__wire_put(o, "model_seq_id", json_integer((json_int_t)r->model_seq_id));
  bad |= tb__wire_put(o, "base_model", json_string(r->base_model));
  bad |= tb__wire_put(o, "lora_config", tb__wire_done(lc, bad));
  bad |= tb__wire_put(o, "type", json_string("create_model"));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_load_request_to_json(const tb__wire_load_request_t *r) {
  json_t *o = json_object();
  int bad = 0;
  if (r->session_id != NULL) {
    bad |= tb__wire_put(o, "session_id", json_string(r->session_id));
    bad |= tb__wire_put(o, "model_seq_id", json_integer((json_int_t)r->model_seq_id));
  }
  bad |= tb__wire_put(o, "path", json_string(r->path));
  if (r->base_model != NULL)
    bad |= tb__wire_put(o, "base_model", json_string(r->base_model));
  bad |= tb__wire_put(o, "optimizer", json_boolean(r->optimizer));
  bad |= tb__wire_put(o, "type", json_string("load_weights"));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_save_request_to_json(const tb__wire_save_request_t *r) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "type", json_string(r->type));
  if (r->path != NULL)
    bad |= tb__wire_put(o, "path", json_string(r->path));
  if (r->ttl_seconds > 0)
    bad |= tb__wire_put(o, "ttl_seconds", json_integer((json_int_t)r->ttl_seconds));
  if (r->overwrite >= 0)
    bad |= tb__wire_put(o, "overwrite", json_boolean(r->overwrite));
  if (r->sampling_session_seq_id >= 0)
    bad |= tb__wire_put(o, "sampling_session_seq_id",
                        json_integer((json_int_t)r->sampling_session_seq_id));
  return tb__wire_done(o, bad);
}

/* The Adam parameters' keys, in the order of tb__wire_adam_t. */
static const char *const ADAM_KEYS[6] = { "learning_rate", "beta1", "beta2", "eps",
                                          "weight_decay", "grad_clip_norm" };

json_t *tb__wire_optim_request_to_json(const tb__wire_adam_t *a) {
  const double vals[6] = { a->learning_rate, a->beta1, a->beta2, a->eps, a->weight_decay,
                           a->grad_clip_norm };
  json_t *ap = json_object();
  int bad = 0;
  for (int i = 0; i < 6; i++)
    bad |= tb__wire_put(ap, ADAM_KEYS[i], json_real(vals[i]));
  json_t *o = json_object();
  bad |= tb__wire_put(o, "adam_params", tb__wire_done(ap, bad));
  bad |= tb__wire_put(o, "type", json_string("optim_step"));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_typed_to_json(const char *type) {
  json_t *o = json_object();
  return tb__wire_done(o, tb__wire_put(o, "type", json_string(type)));
}

int tb__wire_request_add_seq_id(json_t *body, int64_t seq_id) {
  return tb__wire_put(body, "seq_id", json_integer((json_int_t)seq_id)) == 0 ? 0 : TB_ENOMEM;
}

int tb__wire_request_add_model_id(json_t *body, const char *model_id) {
  return tb__wire_put(body, "model_id", json_string(model_id)) == 0 ? 0 : TB_ENOMEM;
}

/* ------------------------------------------------------------ decoding */

int tb__wire_op_target_from_json(tb__jctx_t *c, const json_t *v, tb__wire_op_target_t *out) {
  out->seq_id = -1;
  int rc = tb__wire_req_str(c, v, "model_id", &out->model_id);
  rc = rc < 0 ? rc : tb__json_get_int(c, v, "seq_id", TB_JSON_OPTIONAL, 0, INT64_MAX,
                                      &out->seq_id);
  return rc < 0 ? rc : 0;
}

int tb__wire_create_model_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_create_model_t *out) {
  memset(out, 0, sizeof(*out));
  out->rank = 32;
  out->train_attn = out->train_mlp = out->train_unembed = 1;
  json_t *lc = NULL;
  int rc = tb__wire_req_str(c, v, "session_id", &out->session_id);
  rc = rc < 0 ? rc : tb__json_get_int(c, v, "model_seq_id", TB_JSON_REQUIRED, 0, INT32_MAX,
                                      &out->model_seq_id);
  rc = rc < 0 ? rc : tb__wire_req_str(c, v, "base_model", &out->base_model);
  rc = rc < 0 ? rc : tb__json_get_object(c, v, "lora_config", TB_JSON_OPTIONAL, &lc);
  if (rc >= 0 && lc != NULL) {
    size_t mark = tb__jctx_push_key(c, "lora_config");
    rc = tb__json_get_int(c, lc, "rank", TB_JSON_OPTIONAL, 1, 4096, &out->rank);
    rc = rc < 0 ? rc : tb__json_get_int(c, lc, "seed", TB_JSON_OPTIONAL, 0, INT64_MAX,
                                        &out->seed);
    out->has_seed = rc == 0;
    rc = rc < 0 ? rc : tb__wire_opt_bool(c, lc, "train_attn", 1, &out->train_attn);
    rc = rc < 0 ? rc : tb__wire_opt_bool(c, lc, "train_mlp", 1, &out->train_mlp);
    rc = rc < 0 ? rc : tb__wire_opt_bool(c, lc, "train_unembed", 1, &out->train_unembed);
    tb__jctx_pop(c, mark);
  }
  return rc < 0 ? rc : 0;
}

int tb__wire_load_is_create(const json_t *v) {
  return json_object_get(v, "model_id") == NULL && json_object_get(v, "session_id") != NULL;
}

int tb__wire_load_request_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_load_request_t *out) {
  memset(out, 0, sizeof(*out));
  out->model_seq_id = -1;
  int rc = 0;
  if (tb__wire_load_is_create(v)) {
    rc = tb__wire_req_str(c, v, "session_id", &out->session_id);
    rc = rc < 0 ? rc : tb__json_get_int(c, v, "model_seq_id", TB_JSON_REQUIRED, 0, INT32_MAX,
                                        &out->model_seq_id);
    rc = rc < 0 ? rc : tb__wire_req_str(c, v, "path", &out->path);
    rc = rc < 0 ? rc : tb__wire_opt_str(c, v, "base_model", &out->base_model);
  } else {
    rc = tb__wire_req_str(c, v, "path", &out->path);
  }
  rc = rc < 0 ? rc : tb__wire_opt_bool(c, v, "optimizer", 0, &out->optimizer);
  return rc < 0 ? rc : 0;
}

int tb__wire_save_request_from_json(tb__jctx_t *c, const json_t *v, const char *type,
                                    tb__wire_save_request_t *out) {
  memset(out, 0, sizeof(*out));
  out->type = type;
  out->sampling_session_seq_id = -1;
  int named = strcmp(type, "save_weights") == 0;
  int rc = named ? tb__wire_req_str(c, v, "path", &out->path)
                 : tb__wire_opt_str(c, v, "path", &out->path);
  if (rc >= 0 && out->path == NULL)
    rc = tb__json_get_int(c, v, "sampling_session_seq_id", TB_JSON_REQUIRED, 0, INT32_MAX,
                          &out->sampling_session_seq_id);
  rc = rc < 0 ? rc : tb__wire_opt_bool(c, v, "overwrite", 0, &out->overwrite);
  rc = rc < 0 ? rc : tb__json_get_int(c, v, "ttl_seconds", TB_JSON_OPTIONAL, 1,
                                      TB__WIRE_MAX_TTL_SECONDS, &out->ttl_seconds);
  return rc < 0 ? rc : 0;
}

int tb__wire_adam_from_json(tb__jctx_t *c, const json_t *v, int strict, tb__wire_adam_t *out) {
  json_t *ap = NULL;
  int rc = tb__json_get_object(c, v, "adam_params", TB_JSON_OPTIONAL, &ap);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  double *vals[6] = { &out->learning_rate, &out->beta1, &out->beta2, &out->eps,
                      &out->weight_decay, &out->grad_clip_norm };
  size_t mark = tb__jctx_push_key(c, "adam_params");
  for (size_t i = 0; rc >= 0 && i < 6; i++)
    rc = tb__json_get_double(c, ap, ADAM_KEYS[i], TB_JSON_OPTIONAL, vals[i]);
  /* An unknown key is a typo ("lr"), not something to ignore. */
  const char *k;
  json_t *x;
  json_object_foreach(ap, k, x) {
    int known = 0;
    for (size_t i = 0; i < 6; i++)
      known |= strcmp(k, ADAM_KEYS[i]) == 0;
    if (rc >= 0 && strict && !known)
      rc = tb__jctx_fail_at(c, k, "unknown Adam parameter (expected learning_rate, beta1, "
                                  "beta2, eps, weight_decay or grad_clip_norm)");
  }
  tb__jctx_pop(c, mark);
  return rc < 0 ? rc : 0;
}

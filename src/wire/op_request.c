/*
 * The training ops' small JSON requests (see op_request.h).
 */
#include "wire/op_request.h"

#include "tinkerbell/error.h"
#include "wire/codec.h"

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

json_t *tb__wire_optim_request_to_json(const tb__wire_adam_t *a) {
  const char *keys[6] = { "learning_rate", "beta1", "beta2", "eps", "weight_decay",
                          "grad_clip_norm" };
  const double vals[6] = { a->learning_rate, a->beta1, a->beta2, a->eps, a->weight_decay,
                           a->grad_clip_norm };
  json_t *ap = json_object();
  int bad = 0;
  for (int i = 0; i < 6; i++)
    bad |= tb__wire_put(ap, keys[i], json_real(vals[i]));
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

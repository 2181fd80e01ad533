/*
 * The REST types' JSON codecs (see rest.h).  The encoders write the keys
 * in the order the server has always sent them, so recorded answers stay
 * byte for byte the same; the decoders accept what a hosted Tinker
 * service may leave out (the fields rest.h marks "when not given") and
 * refuse a present field of the wrong type, naming it.
 */
#include "wire/rest.h"

#include <string.h>

#include "wire/codec.h"

/* ------------------------------------------------------------ encoding */

json_t *tb__wire_cursor_to_json(const tb__wire_cursor_t *c) {
  return json_pack("{s:I, s:I, s:I}", "offset", (json_int_t)c->offset, "limit",
                   (json_int_t)c->limit, "total_count", (json_int_t)c->total_count);
}

json_t *tb__wire_checkpoint_to_json(const tb__wire_checkpoint_t *c) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "checkpoint_id", json_string(c->checkpoint_id));
  bad |= tb__wire_put(o, "checkpoint_type", json_string(c->checkpoint_type));
  bad |= tb__wire_put(o, "time", tb__wire_str_or_null(c->time));
  bad |= tb__wire_put(o, "tinker_path", json_string(c->tinker_path));
  bad |= tb__wire_put(o, "size_bytes", json_integer((json_int_t)c->size_bytes));
  bad |= tb__wire_put(o, "public", json_boolean(c->is_public));
  bad |= tb__wire_put(o, "expires_at", tb__wire_str_or_null(c->expires_at));
  if (c->training_run_id != NULL)
    bad |= tb__wire_put(o, "training_run_id", json_string(c->training_run_id));
  return tb__wire_done(o, bad);
}

static json_t *ckpt_or_null(const tb__wire_checkpoint_t *c) {
  return c != NULL ? tb__wire_checkpoint_to_json(c) : json_null();
}

json_t *tb__wire_training_run_to_json(const tb__wire_training_run_t *r) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "training_run_id", json_string(r->training_run_id));
  bad |= tb__wire_put(o, "base_model", json_string(r->base_model));
  bad |= tb__wire_put(o, "model_owner", tb__wire_str_or_null(r->model_owner));
  bad |= tb__wire_put(o, "is_lora", json_boolean(r->is_lora));
  bad |= tb__wire_put(o, "corrupted", json_boolean(r->corrupted));
  bad |= tb__wire_put(o, "lora_rank", json_integer((json_int_t)r->lora_rank));
  bad |= tb__wire_put(o, "last_request_time", tb__wire_str_or_null(r->last_request_time));
  bad |= tb__wire_put(o, "created_time", tb__wire_str_or_null(r->created_time));
  bad |= tb__wire_put(o, "last_checkpoint", ckpt_or_null(r->last_checkpoint));
  bad |= tb__wire_put(o, "last_sampler_checkpoint", ckpt_or_null(r->last_sampler_checkpoint));
  bad |= tb__wire_put(o, "user_metadata",
                      r->user_metadata ? json_deep_copy(r->user_metadata) : json_null());
  bad |= tb__wire_put(o, "session_id", tb__wire_str_or_null(r->session_id));
  if (r->lora_config.present) {
    const tb__wire_rest_lora_t *l = &r->lora_config;
    bad |= tb__wire_put(o, "lora_config",
                        json_pack("{s:I, s:I, s:b, s:b, s:b}", "rank", (json_int_t)l->rank,
                                  "seed", (json_int_t)l->seed, "train_attn", l->train_attn,
                                  "train_mlp", l->train_mlp, "train_unembed",
                                  l->train_unembed));
  }
  return tb__wire_done(o, bad);
}

static json_t *wrap(const char *key, json_t *items, const tb__wire_cursor_t *c) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, key, items);
  bad |= tb__wire_put(o, "cursor", tb__wire_cursor_to_json(c));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_training_runs_wrap(json_t *items, const tb__wire_cursor_t *c) {
  return wrap("training_runs", items, c);
}

json_t *tb__wire_checkpoints_wrap(json_t *items, const tb__wire_cursor_t *c) {
  return wrap("checkpoints", items, c);
}

json_t *tb__wire_training_runs_to_json(const tb__wire_training_runs_t *l) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < l->n; i++) {
    json_t *r = tb__wire_training_run_to_json(&l->runs[i]);
    if (r == NULL || json_array_append_new(a, r) != 0)
      json_decref(a), a = NULL;
  }
  return wrap("training_runs", a, &l->cursor);
}

json_t *tb__wire_checkpoints_to_json(const tb__wire_checkpoints_t *l) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < l->n; i++) {
    json_t *r = tb__wire_checkpoint_to_json(&l->checkpoints[i]);
    if (r == NULL || json_array_append_new(a, r) != 0)
      json_decref(a), a = NULL;
  }
  return wrap("checkpoints", a, &l->cursor);
}

json_t *tb__wire_checkpoint_change_to_json(const tb__wire_checkpoint_change_t *c) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "tinker_path", json_string(c->tinker_path));
  switch (c->kind) {
  case TB__WIRE_CKPT_DELETED:
    bad |= tb__wire_put(o, "deleted", json_true());
    break;
  case TB__WIRE_CKPT_PUBLIC:
    bad |= tb__wire_put(o, "public", json_boolean(c->is_public));
    break;
  case TB__WIRE_CKPT_TTL:
    bad |= tb__wire_put(o, "expires_at", tb__wire_str_or_null(c->expires_at));
    break;
  default:
    bad = 1;
  }
  return tb__wire_done(o, bad);
}

json_t *tb__wire_archive_url_to_json(const tb__wire_archive_url_t *a) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "expires", tb__wire_str_or_null(a->expires));
  bad |= tb__wire_put(o, "url", json_string(a->url));
  return tb__wire_done(o, bad);
}

/* A bool field that may be "not given" (-1) is left out then. */
json_t *tb__wire_weights_info_to_json(const tb__wire_weights_info_t *w) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "base_model", json_string(w->base_model));
  bad |= tb__wire_put(o, "is_lora", json_boolean(w->is_lora));
  if (w->lora_rank >= 0)
    bad |= tb__wire_put(o, "lora_rank", json_integer((json_int_t)w->lora_rank));
  const char *keys[3] = { "train_unembed", "train_mlp", "train_attn" };
  const int vals[3] = { w->train_unembed, w->train_mlp, w->train_attn };
  for (int i = 0; i < 3; i++)
    if (vals[i] >= 0)
      bad |= tb__wire_put(o, keys[i], json_boolean(vals[i]));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_sampler_info_to_json(const tb__wire_sampler_info_t *s) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "sampler_id", json_string(s->sampler_id));
  bad |= tb__wire_put(o, "base_model", json_string(s->base_model));
  if (s->model_path != NULL)
    bad |= tb__wire_put(o, "model_path", json_string(s->model_path));
  return tb__wire_done(o, bad);
}

static json_t *strings_json(const char *const *s, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < n; i++)
    if (json_array_append_new(a, json_string(s[i])) != 0)
      json_decref(a), a = NULL;
  return a;
}

static json_t *copy_or_null(const json_t *v) {
  return v != NULL ? json_deep_copy(v) : json_null();
}

json_t *tb__wire_session_info_to_json(const tb__wire_session_info_t *s) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "session_id", json_string(s->session_id));
  bad |= tb__wire_put(o, "training_run_ids",
                      strings_json(s->training_run_ids, s->n_training_run_ids));
  bad |= tb__wire_put(o, "sampler_ids", strings_json(s->sampler_ids, s->n_sampler_ids));
  bad |= tb__wire_put(o, "expired", json_boolean(s->expired));
  bad |= tb__wire_put(o, "closed", json_boolean(s->closed));
  bad |= tb__wire_put(o, "tags", copy_or_null(s->tags));
  bad |= tb__wire_put(o, "user_metadata", copy_or_null(s->user_metadata));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_sessions_to_json(const tb__wire_sessions_t *s) {
  return wrap("sessions", strings_json(s->ids, s->n), &s->cursor);
}

json_t *tb__wire_session_project_to_json(const tb__wire_session_project_t *p) {
  json_t *o = json_object();
  return tb__wire_done(o, tb__wire_put(o, "project_id", json_string(p->project_id)));
}

/* ------------------------------------------------------------ decoding */

/* An optional object (or null): NULL when absent or null. */
static int opt_obj(tb__jctx_t *c, const json_t *o, const char *key, const json_t **out) {
  json_t *v = NULL;
  int rc = tb__json_get_object(c, o, key, TB_JSON_OPTIONAL, &v);
  *out = rc == 0 ? v : NULL;
  return rc < 0 ? rc : 0;
}

int tb__wire_cursor_from_json(tb__jctx_t *c, const json_t *v, tb__wire_cursor_t *out) {
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_opt_int(c, v, "offset", &out->offset);
  if (rc == 0)
    rc = tb__wire_opt_int(c, v, "limit", &out->limit);
  if (rc == 0)
    rc = tb__wire_opt_int(c, v, "total_count", &out->total_count);
  return rc;
}

int tb__wire_checkpoint_from_json(tb__jctx_t *c, const json_t *v, tb__wire_checkpoint_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "checkpoint_id", &out->checkpoint_id);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "checkpoint_type", &out->checkpoint_type);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "time", &out->time);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "tinker_path", &out->tinker_path);
  if (rc == 0)
    rc = tb__wire_opt_int(c, v, "size_bytes", &out->size_bytes);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "public", 0, &out->is_public);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "expires_at", &out->expires_at);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "training_run_id", &out->training_run_id);
  return rc;
}

/* A nested checkpoint (or null) at key, in the arena. */
static int opt_ckpt(tb__jctx_t *c, tb__arena_t *a, const json_t *o, const char *key,
                    const tb__wire_checkpoint_t **out) {
  const json_t *v;
  *out = NULL;
  int rc = opt_obj(c, o, key, &v);
  if (rc != 0 || v == NULL)
    return rc;
  tb__wire_checkpoint_t *ck = tb__arena_alloc(a, sizeof(*ck));
  if (ck == NULL)
    return TB_ENOMEM;
  size_t mark = tb__jctx_push_key(c, key);
  rc = tb__wire_checkpoint_from_json(c, v, ck);
  tb__jctx_pop(c, mark);
  *out = ck;
  return rc;
}

static int lora_from_json(tb__jctx_t *c, const json_t *o, tb__wire_rest_lora_t *l) {
  const json_t *v;
  int rc = opt_obj(c, o, "lora_config", &v);
  if (rc != 0 || v == NULL)
    return rc;
  size_t mark = tb__jctx_push_key(c, "lora_config");
  l->present = 1;
  rc = tb__json_get_int(c, v, "rank", TB_JSON_REQUIRED, 0, INT64_MAX, &l->rank);
  if (rc == 0)
    rc = tb__json_get_int(c, v, "seed", TB_JSON_REQUIRED, INT64_MIN, INT64_MAX, &l->seed);
  if (rc == 0)
    rc = tb__json_get_bool(c, v, "train_attn", TB_JSON_REQUIRED, &l->train_attn);
  if (rc == 0)
    rc = tb__json_get_bool(c, v, "train_mlp", TB_JSON_REQUIRED, &l->train_mlp);
  if (rc == 0)
    rc = tb__json_get_bool(c, v, "train_unembed", TB_JSON_REQUIRED, &l->train_unembed);
  tb__jctx_pop(c, mark);
  return rc;
}

int tb__wire_training_run_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                    tb__wire_training_run_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "training_run_id", &out->training_run_id);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "base_model", &out->base_model);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "model_owner", &out->model_owner);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "is_lora", 0, &out->is_lora);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "corrupted", 0, &out->corrupted);
  if (rc == 0)
    rc = tb__wire_opt_int(c, v, "lora_rank", &out->lora_rank);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "last_request_time", &out->last_request_time);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "created_time", &out->created_time);
  if (rc == 0)
    rc = opt_ckpt(c, a, v, "last_checkpoint", &out->last_checkpoint);
  if (rc == 0)
    rc = opt_ckpt(c, a, v, "last_sampler_checkpoint", &out->last_sampler_checkpoint);
  if (rc == 0)
    rc = opt_obj(c, v, "user_metadata", &out->user_metadata);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "session_id", &out->session_id);
  if (rc == 0)
    rc = lora_from_json(c, v, &out->lora_config);
  return rc;
}

/* The array at key and the cursor beside it; *items in the arena. */
static int list_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v, const char *key,
                          size_t size, void **items, size_t *n, tb__wire_cursor_t *cur,
                          tb__wire_item_fn item) {
  json_t *cv = NULL;
  *items = NULL;
  *n = 0;
  cur->offset = cur->limit = cur->total_count = -1;
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_items_from_json(c, a, v, key, TB_JSON_REQUIRED, size, item, items, n);
  if (rc != 0)
    return rc;
  rc = tb__json_get_object(c, v, "cursor", TB_JSON_OPTIONAL, &cv);
  if (rc == 0) {
    size_t mark = tb__jctx_push_key(c, "cursor");
    rc = tb__wire_cursor_from_json(c, cv, cur);
    tb__jctx_pop(c, mark);
  }
  return rc < 0 ? rc : 0;
}

static int run_item(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  return tb__wire_training_run_from_json(c, a, v, out);
}

static int ckpt_item(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_checkpoint_from_json(c, v, out);
}

static int string_item(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  if (!json_is_string(v))
    return tb__jctx_fail(c, "expected a string, got %s", tb__json_type_name(v));
  *(const char **)out = json_string_value(v);
  return 0;
}

int tb__wire_training_runs_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                     tb__wire_training_runs_t *out) {
  void *items;
  int rc = list_from_json(c, a, v, "training_runs", sizeof(tb__wire_training_run_t), &items,
                          &out->n, &out->cursor, run_item);
  out->runs = items;
  return rc;
}

int tb__wire_checkpoints_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                   tb__wire_checkpoints_t *out) {
  void *items;
  int rc = list_from_json(c, a, v, "checkpoints", sizeof(tb__wire_checkpoint_t), &items,
                          &out->n, &out->cursor, ckpt_item);
  out->checkpoints = items;
  return rc;
}

int tb__wire_sessions_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                tb__wire_sessions_t *out) {
  void *items;
  int rc = list_from_json(c, a, v, "sessions", sizeof(const char *), &items, &out->n,
                          &out->cursor, string_item);
  out->ids = items;
  return rc;
}

int tb__wire_checkpoint_change_from_json(tb__jctx_t *c, const json_t *v,
                                         tb__wire_ckpt_change_kind_t kind,
                                         tb__wire_checkpoint_change_t *out) {
  memset(out, 0, sizeof(*out));
  out->kind = kind;
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "tinker_path", &out->tinker_path);
  if (rc != 0)
    return rc;
  int flag = 0;
  switch (kind) {
  case TB__WIRE_CKPT_DELETED:
    rc = tb__json_get_bool(c, v, "deleted", TB_JSON_REQUIRED, &flag);
    if (rc == 0 && !flag)
      rc = tb__jctx_fail_at(c, "deleted", "expected true");
    return rc;
  case TB__WIRE_CKPT_PUBLIC:
    return tb__json_get_bool(c, v, "public", TB_JSON_REQUIRED, &out->is_public);
  case TB__WIRE_CKPT_TTL:
    if (json_object_get(v, "expires_at") == NULL)
      return tb__jctx_fail_at(c, "expires_at", "required (a time, or null)");
    return tb__wire_opt_str(c, v, "expires_at", &out->expires_at);
  }
  return tb__jctx_fail(c, "unknown checkpoint change");
}

int tb__wire_archive_url_from_json(tb__jctx_t *c, const json_t *v, tb__wire_archive_url_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "url", &out->url);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "expires", &out->expires);
  return rc;
}

int tb__wire_weights_info_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_weights_info_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "base_model", &out->base_model);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "is_lora", 0, &out->is_lora);
  if (rc == 0)
    rc = tb__wire_opt_int(c, v, "lora_rank", &out->lora_rank);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "train_unembed", -1, &out->train_unembed);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "train_mlp", -1, &out->train_mlp);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "train_attn", -1, &out->train_attn);
  return rc;
}

int tb__wire_sampler_info_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_sampler_info_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "sampler_id", &out->sampler_id);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "base_model", &out->base_model);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "model_path", &out->model_path);
  return rc;
}

/* An optional array of strings (or null) at key, into the arena. */
static int opt_strings(tb__jctx_t *c, tb__arena_t *a, const json_t *o, const char *key,
                       const char ***out, size_t *n) {
  void *items = NULL;
  *n = 0;
  int rc = tb__wire_items_from_json(c, a, o, key, TB_JSON_OPTIONAL, sizeof(const char *),
                                    string_item, &items, n);
  *out = items;
  return rc;
}

int tb__wire_trace_export_from_json(tb__jctx_t *c, const json_t *v,
                                    tb__wire_trace_export_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "status", &out->status);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "url", &out->url);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "error", &out->error);
  return rc;
}

int tb__wire_session_info_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                    tb__wire_session_info_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "session_id", &out->session_id);
  if (rc == 0)
    rc = opt_strings(c, a, v, "training_run_ids", &out->training_run_ids,
                     &out->n_training_run_ids);
  if (rc == 0)
    rc = opt_strings(c, a, v, "sampler_ids", &out->sampler_ids, &out->n_sampler_ids);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "expired", 0, &out->expired);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "closed", 0, &out->closed);
  if (rc == 0) {
    json_t *t = NULL;
    rc = tb__json_get_array(c, v, "tags", TB_JSON_OPTIONAL, &t);
    out->tags = rc == 0 ? t : NULL;
    rc = rc < 0 ? rc : 0;
  }
  if (rc == 0)
    rc = opt_obj(c, v, "user_metadata", &out->user_metadata);
  return rc;
}

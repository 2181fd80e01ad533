/*
 * The JSON codecs of the service routes' small bodies (see service.h).
 * The encoders write the keys in the order the SDK and the server have
 * always sent them, so recorded bodies stay byte for byte the same; the
 * decoders refuse a present field of the wrong type, naming it.
 */
#include "wire/service.h"

#include <string.h>

#include "wire/codec.h"
#include "wire/op_request.h"

/* ------------------------------------------------------------ encoding */

/* A slice as a JSON string; NULL (nothing added by tb__wire_put) for a
 * field left out. */
static json_t *slice_json(tb_slice_t s) {
  return s.base != NULL ? json_stringn(s.base, s.len) : NULL;
}

/* Adds key: s when s is given. */
static int put_opt(json_t *o, const char *key, tb_slice_t s) {
  return s.base != NULL ? tb__wire_put(o, key, slice_json(s)) : 0;
}

json_t *tb__wire_create_session_to_json(const tb__wire_create_session_t *r) {
  json_t *tags = json_array();
  for (size_t i = 0; tags != NULL && i < r->n_tags; i++)
    if (json_array_append_new(tags, json_string(r->tags[i])) != 0)
      json_decref(tags), tags = NULL;
  json_t *meta = json_object();
  for (size_t i = 0; meta != NULL && i < r->n_user_metadata; i++)
    if (tb__wire_put(meta, r->user_metadata[i].key, json_string(r->user_metadata[i].value)))
      json_decref(meta), meta = NULL;
  json_t *o = json_object();
  int bad = tb__wire_put(o, "tags", tags);
  bad |= tb__wire_put(o, "user_metadata", meta);
  bad |= put_opt(o, "sdk_version", r->sdk_version);
  bad |= tb__wire_put(o, "type", json_string("create_session"));
  bad |= put_opt(o, "project_id", r->project_id);
  return tb__wire_done(o, bad);
}

/* {id_key: id, "type": type}. */
static json_t *id_and_type(const char *id_key, json_t *id, const char *type) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, id_key, id);
  bad |= tb__wire_put(o, "type", json_string(type));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_session_created_to_json(const tb__wire_session_created_t *r) {
  return id_and_type("session_id", json_string(r->session_id), "create_session");
}

json_t *tb__wire_session_call_to_json(const tb__wire_session_call_t *r) {
  return id_and_type("session_id", slice_json(r->session_id), r->type);
}

json_t *tb__wire_session_call_done_to_json(const tb__wire_session_call_t *r) {
  return tb__wire_typed_to_json(r->type);
}

json_t *tb__wire_create_sampler_to_json(const tb__wire_create_sampler_t *r) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "session_id", slice_json(r->session_id));
  bad |= tb__wire_put(o, "sampling_session_seq_id", json_integer((json_int_t)r->seq_id));
  bad |= tb__wire_put(o, "type", json_string("create_sampling_session"));
  bad |= put_opt(o, "model_path", r->model_path);
  bad |= put_opt(o, "base_model", r->base_model);
  return tb__wire_done(o, bad);
}

json_t *tb__wire_sampler_created_to_json(const tb__wire_sampler_created_t *r) {
  return id_and_type("sampling_session_id", json_string(r->sampling_session_id),
                     "create_sampling_session");
}

json_t *tb__wire_model_info_to_json(const tb__wire_model_info_t *r) {
  json_t *md = json_object();
  int bad = tb__wire_put(md, "arch", tb__wire_str_or_null(r->arch));
  bad |= tb__wire_put(md, "model_name", tb__wire_str_or_null(r->model_name));
  bad |= tb__wire_put(md, "tokenizer_id", tb__wire_str_or_null(r->tokenizer_id));
  json_t *o = json_object();
  bad |= tb__wire_put(o, "model_data", tb__wire_done(md, bad));
  bad |= tb__wire_put(o, "model_id", json_string(r->model_id));
  bad |= tb__wire_put(o, "is_lora", json_boolean(r->is_lora));
  bad |= tb__wire_put(o, "lora_rank", json_integer((json_int_t)r->lora_rank));
  bad |= tb__wire_put(o, "model_name", tb__wire_str_or_null(r->model_name));
  bad |= tb__wire_put(o, "type", json_string("get_info"));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_capabilities_to_json(const tb__wire_capabilities_t *r) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < r->n_models; i++) {
    json_t *m = json_object();
    int bad = tb__wire_put(m, "model_name", tb__wire_str_or_null(r->models[i].model_name));
    bad |= tb__wire_put(m, "max_context_length",
                        json_integer((json_int_t)r->models[i].max_context_length));
    m = tb__wire_done(m, bad);
    if (m == NULL || json_array_append_new(a, m) != 0)
      json_decref(a), a = NULL;
  }
  json_t *o = json_object();
  return tb__wire_done(o, tb__wire_put(o, "supported_models", a));
}

json_t *tb__wire_future_ref_to_json(const tb__wire_future_ref_t *r) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "request_id", json_string(r->request_id));
  if (r->model_id != NULL)
    bad |= tb__wire_put(o, "model_id", json_string(r->model_id));
  return tb__wire_done(o, bad);
}

json_t *tb__wire_weights_info_request_to_json(const tb__wire_weights_info_request_t *r) {
  json_t *o = json_object();
  return tb__wire_done(o, tb__wire_put(o, "tinker_path", slice_json(r->tinker_path)));
}

json_t *tb__wire_ttl_request_to_json(const tb__wire_ttl_request_t *r) {
  json_t *o = json_object();
  json_t *v = r->ttl_seconds > 0 ? json_integer((json_int_t)r->ttl_seconds) : json_null();
  return tb__wire_done(o, tb__wire_put(o, "ttl_seconds", v));
}

json_t *tb__wire_service_index_to_json(const tb__wire_service_index_t *r) {
  json_t *eps = json_array();
  for (size_t i = 0; eps != NULL && i < r->n_endpoints; i++) {
    const tb__wire_endpoint_t *e = &r->endpoints[i];
    json_t *o = json_object();
    int bad = tb__wire_put(o, "method", json_string(e->method));
    bad |= tb__wire_put(o, "path", json_string(e->path));
    bad |= tb__wire_put(o, "dialect", json_string(e->dialect));
    bad |= tb__wire_put(o, "auth", json_boolean(e->auth));
    bad |= tb__wire_put(o, "summary", json_string(e->summary));
    o = tb__wire_done(o, bad);
    if (o == NULL || json_array_append_new(eps, o) != 0)
      json_decref(eps), eps = NULL;
  }
  json_t *d = json_object();
  int bad = tb__wire_put(d, "tinker", json_string(r->tinker));
  bad |= tb__wire_put(d, "tinkerbell", json_string(r->tinkerbell));
  bad |= tb__wire_put(d, "both", json_string(r->both));
  json_t *o = json_object();
  bad |= tb__wire_put(o, "name", json_string(r->name));
  bad |= tb__wire_put(o, "version", json_string(r->version));
  bad |= tb__wire_put(o, "endpoints", eps);
  bad |= tb__wire_put(o, "dialects", tb__wire_done(d, bad));
  return tb__wire_done(o, bad);
}

/* ------------------------------------------------------------ decoding */

/* An optional string field into a slice ({NULL, 0} when absent). */
static int opt_slice(tb__jctx_t *c, const json_t *o, const char *key, tb_slice_t *out) {
  *out = (tb_slice_t){ NULL, 0 };
  int rc = tb__json_get_string(c, o, key, TB_JSON_OPTIONAL, out);
  if (rc != 0)
    *out = (tb_slice_t){ NULL, 0 };
  return rc < 0 ? rc : 0;
}

/* "type", when sent, must name the request. */
static int check_type(tb__jctx_t *c, const json_t *v, const char *want) {
  tb_slice_t type;
  int rc = tb__json_get_string(c, v, "type", TB_JSON_OPTIONAL, &type);
  if (rc == 0 && !(type.len == strlen(want) && memcmp(type.base, want, type.len) == 0))
    return tb__jctx_fail_at(c, "type", "expected \"%s\"", want);
  return rc < 0 ? rc : 0;
}

int tb__wire_create_session_from_json(tb__jctx_t *c, const json_t *v,
                                      tb__wire_create_session_t *out) {
  memset(out, 0, sizeof(*out));
  json_t *tags = NULL, *meta = NULL;
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = check_type(c, v, "create_session");
  if (rc == 0)
    rc = tb__json_get_array(c, v, "tags", TB_JSON_OPTIONAL, &tags);
  if (rc >= 0 && tags != NULL) {
    size_t mark = tb__jctx_push_key(c, "tags");
    for (size_t i = 0; i < json_array_size(tags) && rc >= 0; i++) {
      json_t *t = json_array_get(tags, i);
      if (!json_is_string(t)) {
        size_t m = tb__jctx_push_index(c, i);
        rc = tb__jctx_fail(c, "expected a string, got %s", tb__json_type_name(t));
        tb__jctx_pop(c, m);
      }
    }
    tb__jctx_pop(c, mark);
  }
  if (rc >= 0)
    rc = tb__json_get_object(c, v, "user_metadata", TB_JSON_OPTIONAL, &meta);
  if (rc >= 0)
    rc = opt_slice(c, v, "sdk_version", &out->sdk_version);
  if (rc >= 0)
    rc = opt_slice(c, v, "project_id", &out->project_id);
  if (rc < 0)
    return rc;
  out->tags_value = tags;
  out->user_metadata_value = meta;
  return 0;
}

int tb__wire_session_created_from_json(tb__jctx_t *c, const json_t *v,
                                       tb__wire_session_created_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "session_id", &out->session_id);
  if (rc == 0 && out->session_id[0] == '\0')
    rc = tb__jctx_fail_at(c, "session_id", "empty");
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "info_message", &out->info_message);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "warning_message", &out->warning_message);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "error_message", &out->error_message);
  return rc;
}

int tb__wire_session_call_from_json(tb__jctx_t *c, const json_t *v, const char *type,
                                    tb__wire_session_call_t *out) {
  memset(out, 0, sizeof(*out));
  out->type = type;
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = check_type(c, v, type);
  if (rc == 0)
    rc = tb__json_get_string(c, v, "session_id", TB_JSON_REQUIRED, &out->session_id);
  return rc < 0 ? rc : 0;
}

int tb__wire_create_sampler_from_json(tb__jctx_t *c, const json_t *v,
                                      tb__wire_create_sampler_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__json_get_string(c, v, "session_id", TB_JSON_REQUIRED, &out->session_id);
  if (rc == 0)
    rc = tb__json_get_int(c, v, "sampling_session_seq_id", TB_JSON_REQUIRED, 0, INT32_MAX,
                          &out->seq_id);
  if (rc == 0)
    rc = opt_slice(c, v, "base_model", &out->base_model);
  if (rc == 0)
    rc = opt_slice(c, v, "model_path", &out->model_path);
  if (rc == 0 && out->base_model.base == NULL && out->model_path.base == NULL)
    rc = tb__jctx_fail_at(c, "base_model", "base_model or model_path is required");
  return rc < 0 ? rc : 0;
}

int tb__wire_sampler_created_from_json(tb__jctx_t *c, const json_t *v,
                                       tb__wire_sampler_created_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "sampling_session_id", &out->sampling_session_id);
  return rc;
}

int tb__wire_model_info_from_json(tb__jctx_t *c, const json_t *v, tb__wire_model_info_t *out) {
  memset(out, 0, sizeof(*out));
  json_t *md = NULL;
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "model_id", &out->model_id);
  if (rc == 0)
    rc = tb__json_get_object(c, v, "model_data", TB_JSON_REQUIRED, &md);
  if (rc == 0) {
    size_t mark = tb__jctx_push_key(c, "model_data");
    rc = tb__wire_opt_str(c, md, "arch", &out->arch);
    if (rc == 0)
      rc = tb__wire_opt_str(c, md, "model_name", &out->model_name);
    if (rc == 0)
      rc = tb__wire_opt_str(c, md, "tokenizer_id", &out->tokenizer_id);
    tb__jctx_pop(c, mark);
  }
  /* An older answer names the model beside model_data only. */
  if (rc == 0 && out->model_name == NULL)
    rc = tb__wire_opt_str(c, v, "model_name", &out->model_name);
  if (rc == 0)
    rc = tb__wire_opt_bool(c, v, "is_lora", 0, &out->is_lora);
  if (rc == 0)
    rc = tb__wire_opt_int(c, v, "lora_rank", &out->lora_rank);
  return rc;
}

static int model_item(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  tb__wire_supported_model_t *m = out;
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "model_name", &m->model_name);
  if (rc == 0) {
    rc = tb__json_get_int(c, v, "max_context_length", TB_JSON_OPTIONAL, 0, INT64_MAX,
                          &m->max_context_length);
    if (rc == 1)
      m->max_context_length = -1, rc = 0;
  }
  return rc;
}

int tb__wire_capabilities_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                    tb__wire_capabilities_t *out) {
  memset(out, 0, sizeof(*out));
  void *items = NULL;
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_items_from_json(c, a, v, "supported_models", TB_JSON_REQUIRED,
                                  sizeof(tb__wire_supported_model_t), model_item, &items,
                                  &out->n_models);
  out->models = items;
  return rc;
}

int tb__wire_future_ref_from_json(tb__jctx_t *c, const json_t *v, tb__wire_future_ref_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "request_id", &out->request_id);
  if (rc == 0 && out->request_id[0] == '\0')
    rc = tb__jctx_fail_at(c, "request_id", "empty");
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "model_id", &out->model_id);
  return rc;
}

int tb__wire_weights_info_request_from_json(tb__jctx_t *c, const json_t *v,
                                            tb__wire_weights_info_request_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__json_get_string(c, v, "tinker_path", TB_JSON_REQUIRED, &out->tinker_path);
  return rc < 0 ? rc : 0;
}

static int endpoint_item(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  tb__wire_endpoint_t *e = out;
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "method", &e->method);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "path", &e->path);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "dialect", &e->dialect);
  if (rc == 0)
    rc = tb__json_get_bool(c, v, "auth", TB_JSON_REQUIRED, &e->auth);
  if (rc == 0)
    rc = tb__wire_opt_str(c, v, "summary", &e->summary);
  return rc;
}

int tb__wire_service_index_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                     tb__wire_service_index_t *out) {
  memset(out, 0, sizeof(*out));
  json_t *d = NULL;
  void *items = NULL;
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "name", &out->name);
  if (rc == 0)
    rc = tb__wire_req_str(c, v, "version", &out->version);
  if (rc == 0)
    rc = tb__wire_items_from_json(c, a, v, "endpoints", TB_JSON_REQUIRED,
                                  sizeof(tb__wire_endpoint_t), endpoint_item, &items,
                                  &out->n_endpoints);
  out->endpoints = items;
  if (rc == 0)
    rc = tb__json_get_object(c, v, "dialects", TB_JSON_REQUIRED, &d);
  if (rc == 0) {
    size_t mark = tb__jctx_push_key(c, "dialects");
    rc = tb__wire_opt_str(c, d, "tinker", &out->tinker);
    if (rc == 0)
      rc = tb__wire_opt_str(c, d, "tinkerbell", &out->tinkerbell);
    if (rc == 0)
      rc = tb__wire_opt_str(c, d, "both", &out->both);
    tb__jctx_pop(c, mark);
  }
  return rc;
}

/* Integers only (no 3.0): a ttl is counted in whole seconds. */
int tb__wire_ttl_request_from_json(tb__jctx_t *c, const json_t *v, tb__wire_ttl_request_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc != 0)
    return rc;
  const json_t *t = json_object_get(v, "ttl_seconds");
  if (t == NULL)
    return tb__jctx_fail_at(c, "ttl_seconds",
                            "required (an integer number of seconds, or null for no expiry)");
  if (json_is_null(t))
    return 0;
  if (!json_is_integer(t))
    return tb__jctx_fail_at(c, "ttl_seconds", "expected an integer or null");
  json_int_t n = json_integer_value(t);
  if (n <= 0 || n > TB__WIRE_MAX_TTL_SECONDS)
    return tb__jctx_fail_at(c, "ttl_seconds",
                            "expected a positive number of seconds (at most 100 years)");
  out->ttl_seconds = (int64_t)n;
  return 0;
}

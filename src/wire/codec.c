/*
 * The shared pieces of wire/'s JSON codecs (see codec.h).
 */
#include "wire/codec.h"

int tb__wire_put(json_t *o, const char *key, json_t *v) {
  if (o == NULL || v == NULL) {
    json_decref(v);
    return -1;
  }
  return json_object_set_new(o, key, v) == 0 ? 0 : -1;
}

json_t *tb__wire_done(json_t *o, int failed) {
  if (failed) {
    json_decref(o);
    return NULL;
  }
  return o;
}

json_t *tb__wire_str_or_null(const char *s) {
  return s != NULL ? json_string(s) : json_null();
}

int tb__wire_req_str(tb__jctx_t *c, const json_t *o, const char *key, const char **out) {
  tb_slice_t v;
  int rc = tb__json_get_string(c, o, key, TB_JSON_REQUIRED, &v);
  *out = rc == 0 ? v.base : NULL;
  return rc < 0 ? rc : 0;
}

int tb__wire_opt_str(tb__jctx_t *c, const json_t *o, const char *key, const char **out) {
  tb_slice_t v;
  int rc = tb__json_get_string(c, o, key, TB_JSON_OPTIONAL, &v);
  *out = rc == 0 ? v.base : NULL;
  return rc < 0 ? rc : 0;
}

int tb__wire_opt_int(tb__jctx_t *c, const json_t *o, const char *key, int64_t *out) {
  int rc = tb__json_get_int(c, o, key, TB_JSON_OPTIONAL, -1, INT64_MAX, out);
  if (rc == 1)
    *out = -1;
  return rc < 0 ? rc : 0;
}

int tb__wire_items_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *o, const char *key,
                             int required, size_t size, tb__wire_item_fn item, void **items,
                             size_t *n) {
  json_t *arr = NULL;
  int rc = tb__json_get_array(c, o, key, required, &arr);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  size_t len = json_array_size(arr);
  char *base = tb__arena_calloc(a, len + 1, size);
  if (base == NULL)
    return TB_ENOMEM;
  size_t mark = tb__jctx_push_key(c, key);
  for (size_t i = 0; rc == 0 && i < len; i++) {
    size_t m = tb__jctx_push_index(c, i);
    rc = item(c, a, json_array_get(arr, i), base + i * size);
    tb__jctx_pop(c, m);
  }
  tb__jctx_pop(c, mark);
  if (rc == 0)
    *items = base, *n = len;
  return rc;
}

int tb__wire_opt_bool(tb__jctx_t *c, const json_t *o, const char *key, int absent, int *out) {
  int rc = tb__json_get_bool(c, o, key, TB_JSON_OPTIONAL, out);
  if (rc == 1)
    *out = absent;
  return rc < 0 ? rc : 0;
}

/*
 * The shared pieces of wire/'s JSON codecs (see codec.h).
 */
#include "wire/codec.h"

#include <math.h>
#include <string.h>

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

json_t *tb__wire_real_or_null(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

json_t *tb__wire_metrics_to_json(const tb__wire_metric_t *ms, size_t n) {
  json_t *o = json_object();
  int bad = 0;
  for (size_t i = 0; !bad && i < n; i++)
    bad = tb__wire_put(o, ms[i].name, tb__wire_real_or_null(ms[i].value));
  return tb__wire_done(o, bad);
}

int tb__wire_req_real(tb__jctx_t *c, const json_t *o, const char *key, double *out) {
  const json_t *v = json_object_get(o, key);
  if (v != NULL && json_is_null(v)) {
    *out = NAN;
    return 0;
  }
  return tb__json_get_double(c, o, key, TB_JSON_REQUIRED, out);
}

int tb__wire_members_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *obj,
                               const char *key, size_t size, tb__wire_member_fn member,
                               void *ctx, void **items, size_t *n) {
  if (obj == NULL) {
    *items = NULL, *n = 0;
    return 0;
  }
  char *base = tb__arena_calloc(a, json_object_size(obj) + 1, size);
  if (base == NULL)
    return TB_ENOMEM;
  size_t i = 0, mark = key != NULL ? tb__jctx_push_key(c, key) : 0;
  int rc = 0;
  const char *name;
  json_t *v;
  json_object_foreach((json_t *)obj, name, v) {
    size_t m = tb__jctx_push_key(c, name);
    rc = member(c, a, ctx, name, v, base + i++ * size);
    tb__jctx_pop(c, m);
    if (rc != 0)
      break;
  }
  if (key != NULL)
    tb__jctx_pop(c, mark);
  if (rc == 0)
    *items = base, *n = i;
  return rc;
}

/* A metric: null is a value that diverged (tb__wire_real_or_null). */
static int read_metric(tb__jctx_t *c, tb__arena_t *a, void *ctx, const char *name,
                       const json_t *v, void *out) {
  (void)ctx;
  tb__wire_metric_t *m = out;
  if ((m->name = tb__arena_strndup(a, name, strlen(name))) == NULL)
    return TB_ENOMEM;
  m->value = NAN;
  return json_is_null(v) ? 0 : tb__json_as_double(c, v, &m->value);
}

int tb__wire_metrics_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *o, const char *key,
                               tb__wire_metric_t **out, size_t *n) {
  json_t *m;
  int rc = tb__json_get_object(c, o, key, TB_JSON_REQUIRED, &m);
  void *items = NULL;
  rc = rc ? rc : tb__wire_members_from_json(c, a, m, key, sizeof(**out), read_metric, NULL,
                                            &items, n);
  if (rc == 0)
    *out = items;
  return rc;
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

int tb__wire_items_read(tb__jctx_t *c, tb__arena_t *a, const char *key, size_t n,
                        size_t size, tb__wire_index_fn item, void *ctx, void **items) {
  char *base = tb__arena_calloc(a, n + 1, size);
  if (base == NULL)
    return TB_ENOMEM;
  int rc = 0;
  size_t mark = tb__jctx_push_key(c, key);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    size_t m = tb__jctx_push_index(c, i);
    rc = item(c, a, ctx, i, base + i * size);
    tb__jctx_pop(c, m);
  }
  tb__jctx_pop(c, mark);
  if (rc == 0)
    *items = base;
  return rc;
}

/* tb__wire_items_read's reader over a JSON array and an element reader. */
typedef struct json_items_s {
  const json_t *arr;
  tb__wire_item_fn item;
} json_items_t;

static int json_item(tb__jctx_t *c, tb__arena_t *a, void *ctx, size_t i, void *out) {
  json_items_t *j = ctx;
  return j->item(c, a, json_array_get(j->arr, i), out);
}

int tb__wire_items_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *o, const char *key,
                             int required, size_t size, tb__wire_item_fn item, void **items,
                             size_t *n) {
  json_t *arr = NULL;
  int rc = tb__json_get_array(c, o, key, required, &arr);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  json_items_t j = { arr, item };
  size_t len = json_array_size(arr);
  rc = tb__wire_items_read(c, a, key, len, size, json_item, &j, items);
  if (rc == 0)
    *n = len;
  return rc;
}

int tb__wire_opt_bool(tb__jctx_t *c, const json_t *o, const char *key, int absent, int *out) {
  int rc = tb__json_get_bool(c, o, key, TB_JSON_OPTIONAL, out);
  if (rc == 1)
    *out = absent;
  return rc < 0 ? rc : 0;
}

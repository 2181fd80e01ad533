/*
 * The small results of the training futures (see op_result.h).
 */
#include "wire/op_result.h"

#include <string.h>

json_t *tb__wire_op_result_to_json(const tb__wire_op_result_t *r) {
  const char *keys[4] = { "path", "model_id", "type", "sampling_session_id" };
  const char *vals[4] = { r->path, r->model_id, r->type, r->sampling_session_id };
  json_t *o = json_object();
  for (int i = 0; o != NULL && i < 4; i++) {
    if (vals[i] == NULL)
      continue;
    json_t *s = json_string(vals[i]);
    if (s == NULL || json_object_set_new(o, keys[i], s) != 0)
      json_decref(o), o = NULL;
  }
  return o;
}

json_t *tb__wire_optim_result_to_json(const tb__wire_optim_result_t *r) {
  json_t *m = json_object();
  for (size_t i = 0; m != NULL && i < r->n_metrics; i++) {
    json_t *x = json_real(r->metrics[i].value);
    if (x == NULL || json_object_set_new(m, r->metrics[i].name, x) != 0)
      json_decref(m), m = NULL;
  }
  return m != NULL ? json_pack("{so}", "metrics", m) : NULL;
}

static int opt_str(tb__jctx_t *c, const json_t *o, const char *key, int required,
                   const char **out) {
  tb_slice_t v;
  int rc = tb__json_get_string(c, o, key, required, &v);
  *out = rc == 0 ? v.base : NULL;
  return rc < 0 ? rc : 0;
}

int tb__wire_op_result_from_json(tb__jctx_t *c, const json_t *v, tb__wire_op_result_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = opt_str(c, v, "path", TB_JSON_OPTIONAL, &out->path);
  if (rc == 0)
    rc = opt_str(c, v, "model_id", TB_JSON_OPTIONAL, &out->model_id);
  if (rc == 0)
    rc = opt_str(c, v, "type", TB_JSON_OPTIONAL, &out->type);
  if (rc == 0)
    rc = opt_str(c, v, "sampling_session_id", TB_JSON_OPTIONAL, &out->sampling_session_id);
  return rc;
}

int tb__wire_optim_result_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                    tb__wire_optim_result_t *out) {
  json_t *m = NULL;
  memset(out, 0, sizeof(*out));
  int rc = tb__json_expect_object(c, v);
  if (rc == 0)
    rc = tb__json_get_object(c, v, "metrics", TB_JSON_OPTIONAL, &m);
  if (rc != 0)
    return rc < 0 ? rc : 0;  /* absent or null: no metrics */
  size_t n = json_object_size(m), i = 0;
  tb__wire_metric_t *ms = tb__arena_calloc(a, n + 1, sizeof(*ms));
  if (ms == NULL)
    return TB_ENOMEM;
  const char *key;
  json_t *x;
  size_t mark = tb__jctx_push_key(c, "metrics");
  json_object_foreach(m, key, x) {
    size_t k = tb__jctx_push_key(c, key);
    rc = tb__json_as_double(c, x, &ms[i].value);
    tb__jctx_pop(c, k);
    if (rc != 0)
      break;
    ms[i++].name = key;
  }
  tb__jctx_pop(c, mark);
  if (rc == 0)
    out->metrics = ms, out->n_metrics = n;
  return rc;
}

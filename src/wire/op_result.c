/*
 * The small results of the training futures (see op_result.h).
 */
#include "wire/op_result.h"

#include <string.h>

#include "wire/codec.h"

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

/* One metric of a result: a finite number (the name is the document's). */
static int read_metric(tb__jctx_t *c, tb__arena_t *a, void *ctx, const char *name,
                       const json_t *v, void *out) {
  (void)a, (void)ctx;
  tb__wire_metric_t *m = out;
  m->name = name;
  return tb__json_as_double(c, v, &m->value);
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
  void *ms = NULL;
  rc = tb__wire_members_from_json(c, a, m, "metrics", sizeof(tb__wire_metric_t), read_metric,
                                  NULL, &ms, &out->n_metrics);
  out->metrics = ms;
  return rc;
}

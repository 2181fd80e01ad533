/*
 * The RestClient (tinkerbell/rest_client.h): each function is one direct
 * request of the operation layer (op.c) with a decoder into its typed
 * result; export_session_trace repeats its request until the export is
 * done.  Identifiers are percent-encoded into the paths, except the '/'
 * inside a checkpoint id, which the routes expect as it is.
 */
#include "tinkerbell/rest_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/clients.h"
#include "core/json.h"

int tb_rest_client_init(tb_rest_client_t *rc, tb_service_client_t *sc) {
  if (rc == NULL || sc == NULL || sc->impl_ == NULL)
    return TB_EINVAL;
  memset(rc, 0, sizeof(*rc));
  rc->service = sc;
  return 0;
}

/* ------------------------------------------------------------ results */

static void checkpoint_clear(tb_checkpoint_t *c) {
  free(c->checkpoint_id);
  free(c->checkpoint_type);
  free(c->time);
  free(c->tinker_path);
  free(c->expires_at);
}

void tb_checkpoint_list_free(tb_checkpoint_list_t *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++)
    checkpoint_clear(&l->checkpoints[i]);
  free(l->checkpoints);
  free(l);
}

static void run_clear(tb_training_run_t *r) {
  free(r->training_run_id);
  free(r->base_model);
  free(r->model_owner);
  free(r->last_request_time);
  if (r->last_checkpoint != NULL)
    checkpoint_clear(r->last_checkpoint);
  if (r->last_sampler_checkpoint != NULL)
    checkpoint_clear(r->last_sampler_checkpoint);
  free(r->last_checkpoint);
  free(r->last_sampler_checkpoint);
  free(r->user_metadata_json);
}

void tb_training_run_free(tb_training_run_t *r) {
  if (r == NULL)
    return;
  run_clear(r);
  free(r);
}

void tb_training_run_list_free(tb_training_run_list_t *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++)
    run_clear(&l->runs[i]);
  free(l->runs);
  free(l);
}

void tb_weights_info_free(tb_weights_info_t *w) {
  if (w == NULL)
    return;
  free(w->base_model);
  free(w);
}

void tb_archive_url_free(tb_archive_url_t *a) {
  if (a == NULL)
    return;
  free(a->url);
  free(a->expires);
  free(a);
}

static void strings_free(char **s, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(s[i]);
  free(s);
}

void tb_string_list_free(tb_string_list_t *l) {
  if (l == NULL)
    return;
  strings_free(l->items, l->n);
  free(l);
}

void tb_session_info_free(tb_session_info_t *s) {
  if (s == NULL)
    return;
  strings_free(s->training_run_ids, s->n_training_run_ids);
  strings_free(s->sampler_ids, s->n_sampler_ids);
  free(s);
}

void tb_sampler_info_free(tb_sampler_info_t *s) {
  if (s == NULL)
    return;
  free(s->sampler_id);
  free(s->base_model);
  free(s->model_path);
  free(s);
}

static void free_ckpts(void *p) { tb_checkpoint_list_free(p); }
static void free_run(void *p) { tb_training_run_free(p); }
static void free_runs(void *p) { tb_training_run_list_free(p); }
static void free_winfo(void *p) { tb_weights_info_free(p); }
static void free_archive(void *p) { tb_archive_url_free(p); }
static void free_strings(void *p) { tb_string_list_free(p); }
static void free_session(void *p) { tb_session_info_free(p); }
static void free_sampler(void *p) { tb_sampler_info_free(p); }

const tb_result_type_t tb_result_checkpoint_list = { "checkpoint_list", free_ckpts };
const tb_result_type_t tb_result_training_run = { "training_run", free_run };
const tb_result_type_t tb_result_training_run_list = { "training_run_list", free_runs };
const tb_result_type_t tb_result_weights_info = { "weights_info", free_winfo };
const tb_result_type_t tb_result_archive_url = { "archive_url", free_archive };
const tb_result_type_t tb_result_string_list = { "string_list", free_strings };
const tb_result_type_t tb_result_session_info = { "session_info", free_session };
const tb_result_type_t tb_result_sampler_info = { "sampler_info", free_sampler };

/* ------------------------------------------------------------ decoding */

/* A copy of a string field; *ok becomes 0 when a present string cannot be
 * copied or a required one is missing. */
static char *str_field(const json_t *o, const char *key, int required, int *ok) {
  const char *v = json_string_value(json_object_get(o, key));
  if (v == NULL) {
    if (required)
      *ok = 0;
    return NULL;
  }
  char *c = strdup(v);
  if (c == NULL)
    *ok = 0;
  return c;
}

static int64_t int_field(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static int bool_field(const json_t *o, const char *key, int absent) {
  const json_t *v = json_object_get(o, key);
  return json_is_boolean(v) ? json_is_true(v) : absent;
}

static int checkpoint_from_json(const json_t *o, tb_checkpoint_t *c) {
  int ok = json_is_object(o);
  memset(c, 0, sizeof(*c));
  if (!ok)
    return 0;
  c->checkpoint_id = str_field(o, "checkpoint_id", 1, &ok);
  c->checkpoint_type = str_field(o, "checkpoint_type", 1, &ok);
  c->time = str_field(o, "time", 0, &ok);
  c->tinker_path = str_field(o, "tinker_path", 1, &ok);
  c->expires_at = str_field(o, "expires_at", 0, &ok);
  c->size_bytes = int_field(o, "size_bytes");
  c->is_public = bool_field(o, "public", 0);
  return ok;
}

static void cursor_from_json(const json_t *o, tb_cursor_t *c) {
  c->offset = int_field(o, "offset");
  c->limit = int_field(o, "limit");
  c->total_count = int_field(o, "total_count");
}

static int run_from_json(const json_t *o, tb_training_run_t *r) {
  int ok = json_is_object(o);
  memset(r, 0, sizeof(*r));
  if (!ok)
    return 0;
  r->training_run_id = str_field(o, "training_run_id", 1, &ok);
  r->base_model = str_field(o, "base_model", 1, &ok);
  r->model_owner = str_field(o, "model_owner", 0, &ok);
  r->last_request_time = str_field(o, "last_request_time", 0, &ok);
  r->is_lora = bool_field(o, "is_lora", 0);
  r->corrupted = bool_field(o, "corrupted", 0);
  r->lora_rank = int_field(o, "lora_rank");
  const char *keys[2] = { "last_checkpoint", "last_sampler_checkpoint" };
  tb_checkpoint_t **dst[2] = { &r->last_checkpoint, &r->last_sampler_checkpoint };
  for (int i = 0; i < 2 && ok; i++) {
    const json_t *c = json_object_get(o, keys[i]);
    if (!json_is_object(c))
      continue;
    *dst[i] = malloc(sizeof(tb_checkpoint_t));
    ok = *dst[i] != NULL && checkpoint_from_json(c, *dst[i]);
  }
  const json_t *md = json_object_get(o, "user_metadata");
  if (ok && json_is_object(md) && (r->user_metadata_json = tb__json_dump(md, NULL)) == NULL)
    ok = 0;
  return ok;
}

static int strings_from_json(const json_t *a, char ***out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (a == NULL || json_is_null(a))
    return 1;
  if (!json_is_array(a))
    return 0;
  *out = calloc(json_array_size(a) + 1, sizeof(char *));
  if (*out == NULL)
    return 0;
  for (size_t i = 0; i < json_array_size(a); i++) {
    const char *s = json_string_value(json_array_get(a, i));
    if (s == NULL || ((*out)[i] = strdup(s)) == NULL)
      return 0;
    (*n)++;
  }
  return 1;
}

/* The answer as a JSON object; a malformed answer is the server's error. */
static int parse_answer(const char *body, size_t len, json_t **doc, tb_error_t *err) {
  int rc = tb__json_parse((tb_slice_t){ body, len }, doc, err);
  if (rc != 0) {
    err->category = TB_CATEGORY_SERVER;
    return rc;
  }
  if (!json_is_object(*doc)) {
    json_decref(*doc);
    return tb_error_set(err, TB_EPROTO, TB_CATEGORY_SERVER, "the answer is not a JSON object");
  }
  return 0;
}

static int malformed(tb_error_t *err, const char *what) {
  return tb_error_set(err, TB_EPROTO, TB_CATEGORY_SERVER,
                      "%s: the answer lacks a required field (or memory ran out)", what);
}

#define DECODER(name) \
  static int name(tb__client_op_t *cop, const char *body, size_t len, int proto, \
                  const tb_result_type_t **type, void **result, tb_error_t *err)

DECODER(decode_run) {
  json_t *doc;
  int rc = parse_answer(body, len, &doc, err);
  if (rc != 0)
    return rc;
  tb_training_run_t *r = calloc(1, sizeof(*r));
  int ok = r != NULL && run_from_json(doc, r);
  json_decref(doc);
  if (!ok) {
    tb_training_run_free(r);
    return malformed(err, "training run");
  }
  *type = &tb_result_training_run;
  *result = r;
  return 0;
}

DECODER(decode_runs) {
  json_t *doc;
  int rc = parse_answer(body, len, &doc, err);
  if (rc != 0)
    return rc;
  const json_t *a = json_object_get(doc, "training_runs");
  tb_training_run_list_t *l = calloc(1, sizeof(*l));
  int ok = l != NULL && json_is_array(a) &&
           (l->runs = calloc(json_array_size(a) + 1, sizeof(*l->runs))) != NULL;
  for (size_t i = 0; ok && i < json_array_size(a); i++) {
    ok = run_from_json(json_array_get(a, i), &l->runs[i]);
    l->n++;
  }
  if (l != NULL)
    cursor_from_json(json_object_get(doc, "cursor"), &l->cursor);
  json_decref(doc);
  if (!ok) {
    tb_training_run_list_free(l);
    return malformed(err, "training runs");
  }
  *type = &tb_result_training_run_list;
  *result = l;
  return 0;
}

DECODER(decode_checkpoints) {
  json_t *doc;
  int rc = parse_answer(body, len, &doc, err);
  if (rc != 0)
    return rc;
  const json_t *a = json_object_get(doc, "checkpoints");
  tb_checkpoint_list_t *l = calloc(1, sizeof(*l));
  int ok = l != NULL && json_is_array(a) &&
           (l->checkpoints = calloc(json_array_size(a) + 1, sizeof(*l->checkpoints))) != NULL;
  for (size_t i = 0; ok && i < json_array_size(a); i++) {
    ok = checkpoint_from_json(json_array_get(a, i), &l->checkpoints[i]);
    l->n++;
  }
  if (l != NULL)
    cursor_from_json(json_object_get(doc, "cursor"), &l->cursor);
  json_decref(doc);
  if (!ok) {
    tb_checkpoint_list_free(l);
    return malformed(err, "checkpoints");
  }
  *type = &tb_result_checkpoint_list;
  *result = l;
  return 0;
}

DECODER(decode_weights_info) {
  json_t *doc;
  int rc = parse_answer(body, len, &doc, err);
  if (rc != 0)
    return rc;
  tb_weights_info_t *w = calloc(1, sizeof(*w));
  int ok = w != NULL;
  if (ok) {
    w->base_model = str_field(doc, "base_model", 1, &ok);
    w->is_lora = bool_field(doc, "is_lora", 0);
    w->lora_rank = int_field(doc, "lora_rank");
    w->train_unembed = bool_field(doc, "train_unembed", -1);
    w->train_mlp = bool_field(doc, "train_mlp", -1);
    w->train_attn = bool_field(doc, "train_attn", -1);
  }
  json_decref(doc);
  if (!ok) {
    tb_weights_info_free(w);
    return malformed(err, "weights_info");
  }
  *type = &tb_result_weights_info;
  *result = w;
  return 0;
}

/* The archive's link: {"url", "expires"}. */
DECODER(decode_archive) {
  json_t *doc;
  int rc = parse_answer(body, len, &doc, err);
  if (rc != 0)
    return rc;
  tb_archive_url_t *a = calloc(1, sizeof(*a));
  int ok = a != NULL;
  if (ok) {
    a->url = str_field(doc, "url", 1, &ok);
    a->expires = str_field(doc, "expires", 0, &ok);
  }
  json_decref(doc);
  if (!ok) {
    tb_archive_url_free(a);
    return malformed(err, "checkpoint archive");
  }
  *type = &tb_result_archive_url;
  *result = a;
  return 0;
}

DECODER(decode_session) {
  json_t *doc;
  int rc = parse_answer(body, len, &doc, err);
  if (rc != 0)
    return rc;
  tb_session_info_t *s = calloc(1, sizeof(*s));
  int ok = s != NULL &&
           strings_from_json(json_object_get(doc, "training_run_ids"), &s->training_run_ids,
                             &s->n_training_run_ids) &&
           strings_from_json(json_object_get(doc, "sampler_ids"), &s->sampler_ids,
                             &s->n_sampler_ids);
  json_decref(doc);
  if (!ok) {
    tb_session_info_free(s);
    return malformed(err, "session");
  }
  *type = &tb_result_session_info;
  *result = s;
  return 0;
}

DECODER(decode_sessions) {
  json_t *doc;
  int rc = parse_answer(body, len, &doc, err);
  if (rc != 0)
    return rc;
  tb_string_list_t *l = calloc(1, sizeof(*l));
  const json_t *a = json_object_get(doc, "sessions");
  int ok = l != NULL && json_is_array(a) && strings_from_json(a, &l->items, &l->n);
  json_decref(doc);
  if (!ok) {
    tb_string_list_free(l);
    return malformed(err, "sessions");
  }
  *type = &tb_result_string_list;
  *result = l;
  return 0;
}

DECODER(decode_sampler) {
  json_t *doc;
  int rc = parse_answer(body, len, &doc, err);
  if (rc != 0)
    return rc;
  tb_sampler_info_t *s = calloc(1, sizeof(*s));
  int ok = s != NULL;
  if (ok) {
    s->sampler_id = str_field(doc, "sampler_id", 1, &ok);
    s->base_model = str_field(doc, "base_model", 1, &ok);
    s->model_path = str_field(doc, "model_path", 0, &ok);
  }
  json_decref(doc);
  if (!ok) {
    tb_sampler_info_free(s);
    return malformed(err, "sampler");
  }
  *type = &tb_result_sampler_info;
  *result = s;
  return 0;
}

/* The whole answer as JSON text (checked to be JSON). */
DECODER(decode_json_text) {
  json_t *doc;
  int rc = parse_answer(body, len, &doc, err);
  if (rc != 0)
    return rc;
  json_decref(doc);
  char *s = tb__strndup(body, len);
  if (s == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  *type = &tb_result_string;
  *result = s;
  return 0;
}

/* ------------------------------------------------------------ requests */

/* Appends s percent-encoded (keeping unreserved characters, ':' and, when
 * keep_slash, '/'). */
static int append_segment(tb__buf_t *b, const char *s, int keep_slash) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' ||
                *p == '~' || *p == ':' || (keep_slash && *p == '/');
    int rc = plain ? tb__buf_append(b, p, 1) : tb__buf_printf(b, "%%%02X", *p);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* A path from a template: each %s is replaced by the next argument,
 * percent-encoded; %c keeps its '/' (a checkpoint id); %q is a query
 * value.  Returns a malloc'd string or NULL. */
static char *build_path(const char *tmpl, const char *const *args) {
  tb__buf_t b = TB_BUF_INIT;
  int rc = 0;
  size_t k = 0;
  for (const char *t = tmpl; *t && rc == 0; t++) {
    if (*t == '%' && (t[1] == 's' || t[1] == 'c' || t[1] == 'q')) {
      rc = append_segment(&b, args[k++], t[1] == 'c');
      t++;
    } else {
      rc = tb__buf_append(&b, t, 1);
    }
  }
  rc = rc ? rc : tb__buf_terminate(&b);
  if (rc != 0) {
    tb__buf_free(&b);
    return NULL;
  }
  return tb__buf_steal(&b, NULL);
}

static tb__rt_t *rt_of(tb_rest_client_t *rc) {
  return rc != NULL ? tb__service_rt(rc->service) : NULL;
}

/* Starts a request with the submission retries (retries < 0: the
 * config's; 0: none). */
static int start_r(tb_rest_client_t *rc, const char *method, char *path, json_t *body,
                   tb__client_op_decode_fn decode, int retries, tb_future_t **out) {
  tb__rt_t *rt = rt_of(rc);
  int ret = 0;
  char *text = NULL;
  size_t len = 0;
  if (out == NULL || rt == NULL)
    ret = out == NULL || rc == NULL || rc->service == NULL || rc->service->impl_ == NULL
              ? TB_EINVAL
              : TB_ECLOSING;
  else if (path == NULL || (body != NULL && (text = tb__json_dump(body, &len)) == NULL))
    ret = TB_ENOMEM;
  if (ret == 0) {
    tb__client_op_opts_t o = { 0 };
    o.method = method;
    o.path = path;
    o.body = text;
    o.body_len = len;
    o.max_retries = retries;
    o.decode = decode;
    ret = tb__client_op_start(rt, &o, out);
  }
  free(text);
  free(path);
  json_decref(body);
  return ret;
}

static int start(tb_rest_client_t *rc, const char *method, char *path, json_t *body,
                 tb__client_op_decode_fn decode, tb_future_t **out) {
  return start_r(rc, method, path, body, decode, -1, out);
}

static const char *scope_name(tb_access_scope_t s) {
  return s == TB_ACCESS_ACCESSIBLE ? "accessible" : "owned";
}

/* Splits tinker://<run_id>/<weights|sampler_weights>/<name>. */
static int split_tinker_path(const char *path, char **run, char **ckpt) {
  static const char scheme[] = "tinker://";
  *run = *ckpt = NULL;
  if (path == NULL || strncmp(path, scheme, sizeof(scheme) - 1) != 0)
    return TB_EINVAL;
  const char *p = path + sizeof(scheme) - 1;
  const char *s1 = strchr(p, '/');
  const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
  if (s1 == NULL || s2 == NULL || s1 == p || s2[1] == '\0' || strchr(s2 + 1, '/') != NULL)
    return TB_EINVAL;
  size_t kl = (size_t)(s2 - s1 - 1);
  if (!((kl == 7 && strncmp(s1 + 1, "weights", 7) == 0) ||
        (kl == 15 && strncmp(s1 + 1, "sampler_weights", 15) == 0)))
    return TB_EINVAL;
  *run = strndup(p, (size_t)(s1 - p));
  *ckpt = strdup(s1 + 1);
  if (*run == NULL || *ckpt == NULL) {
    free(*run);
    free(*ckpt);
    *run = *ckpt = NULL;
    return TB_ENOMEM;
  }
  return 0;
}

static int valid(const char *s) {
  return s != NULL && s[0] != '\0';
}

/* ------------------------------------------------------------ training runs */

int tb_rest_client_get_training_run(tb_rest_client_t *rc, const char *training_run_id,
                                    tb_access_scope_t scope, tb_future_t **out) {
  if (!valid(training_run_id))
    return TB_EINVAL;
  const char *args[] = { training_run_id, scope_name(scope) };
  return start(rc, "GET", build_path("/api/v1/training_runs/%s?access_scope=%q", args), NULL,
               decode_run, out);
}

int tb_rest_client_get_training_run_by_tinker_path(tb_rest_client_t *rc,
                                                   const char *tinker_path,
                                                   tb_access_scope_t scope,
                                                   tb_future_t **out) {
  char *run, *ckpt;
  int ret = split_tinker_path(tinker_path, &run, &ckpt);
  if (ret != 0)
    return ret;
  ret = tb_rest_client_get_training_run(rc, run, scope, out);
  free(run);
  free(ckpt);
  return ret;
}

int tb_rest_client_list_training_runs(tb_rest_client_t *rc, int64_t limit, int64_t offset,
                                      tb_access_scope_t scope, const char *project_id,
                                      tb_future_t **out) {
  if (limit < 0 || offset < 0)
    return TB_EINVAL;
  char lim[24], off[24];
  snprintf(lim, sizeof(lim), "%lld", (long long)(limit ? limit : 20));
  snprintf(off, sizeof(off), "%lld", (long long)offset);
  const char *args[] = { lim, off, scope_name(scope), project_id ? project_id : "" };
  return start(rc, "GET",
               build_path(project_id ? "/api/v1/training_runs?limit=%q&offset=%q&access_scope=%q"
                                       "&project_id=%q"
                                     : "/api/v1/training_runs?limit=%q&offset=%q&access_scope=%q",
                          args),
               NULL, decode_runs, out);
}

int tb_rest_client_get_weights_info_by_tinker_path(tb_rest_client_t *rc,
                                                   const char *tinker_path, tb_future_t **out) {
  char *run, *ckpt;
  int ret = split_tinker_path(tinker_path, &run, &ckpt);
  if (ret != 0)
    return ret;
  free(run);
  free(ckpt);
  json_t *b = json_pack("{ss}", "tinker_path", tinker_path);
  if (b == NULL)
    return TB_ENOMEM;
  return start(rc, "POST", strdup("/api/v1/weights_info"), b, decode_weights_info, out);
}

/* ------------------------------------------------------------ checkpoints */

int tb_rest_client_list_checkpoints(tb_rest_client_t *rc, const char *training_run_id,
                                    tb_future_t **out) {
  if (!valid(training_run_id))
    return TB_EINVAL;
  const char *args[] = { training_run_id };
  return start(rc, "GET", build_path("/api/v1/training_runs/%s/checkpoints", args), NULL,
               decode_checkpoints, out);
}

int tb_rest_client_list_user_checkpoints(tb_rest_client_t *rc, int64_t limit, int64_t offset,
                                         tb_future_t **out) {
  if (limit < 0 || offset < 0)
    return TB_EINVAL;
  char lim[24], off[24];
  snprintf(lim, sizeof(lim), "%lld", (long long)(limit ? limit : 100));
  snprintf(off, sizeof(off), "%lld", (long long)offset);
  const char *args[] = { lim, off };
  return start(rc, "GET", build_path("/api/v1/checkpoints?limit=%q&offset=%q", args), NULL,
               decode_checkpoints, out);
}

/* A request on one checkpoint: .../checkpoints/{id}<suffix>. */
static int on_checkpoint(tb_rest_client_t *rc, const char *method, const char *run,
                         const char *ckpt, const char *suffix, json_t *body,
                         tb__client_op_decode_fn decode, tb_future_t **out) {
  /* A 409 to publish or unpublish says the checkpoint already is what was
   * asked: final, not worth the retries other 409s get. */
  int retries = strcmp(suffix, "/publish") == 0 ? 0 : -1;
  if (!valid(run) || !valid(ckpt)) {
    json_decref(body);
    return TB_EINVAL;
  }
  const char *args[] = { run, ckpt };
  char *base = build_path("/api/v1/training_runs/%s/checkpoints/%c", args);
  char *path = base ? tb__asprintf("%s%s", base, suffix) : NULL;
  free(base);
  return start_r(rc, method, path, body, decode, retries, out);
}

/* The same, from a tinker path. */
static int on_tinker_path(tb_rest_client_t *rc, const char *method, const char *tinker_path,
                          const char *suffix, json_t *body, tb__client_op_decode_fn decode,
                          tb_future_t **out) {
  char *run, *ckpt;
  int ret = split_tinker_path(tinker_path, &run, &ckpt);
  if (ret != 0) {
    json_decref(body);
    return ret;
  }
  ret = on_checkpoint(rc, method, run, ckpt, suffix, body, decode, out);
  free(run);
  free(ckpt);
  return ret;
}

int tb_rest_client_get_checkpoint_archive_url(tb_rest_client_t *rc, const char *training_run_id,
                                              const char *checkpoint_id, tb_future_t **out) {
  return on_checkpoint(rc, "GET", training_run_id, checkpoint_id, "/archive", NULL,
                       decode_archive, out);
}

int tb_rest_client_get_checkpoint_archive_url_from_tinker_path(tb_rest_client_t *rc,
                                                               const char *tinker_path,
                                                               tb_future_t **out) {
  return on_tinker_path(rc, "GET", tinker_path, "/archive", NULL, decode_archive, out);
}

int tb_rest_client_delete_checkpoint(tb_rest_client_t *rc, const char *training_run_id,
                                     const char *checkpoint_id, tb_future_t **out) {
  return on_checkpoint(rc, "DELETE", training_run_id, checkpoint_id, "", NULL, NULL, out);
}

int tb_rest_client_delete_checkpoint_from_tinker_path(tb_rest_client_t *rc,
                                                      const char *tinker_path,
                                                      tb_future_t **out) {
  return on_tinker_path(rc, "DELETE", tinker_path, "", NULL, NULL, out);
}

int tb_rest_client_publish_checkpoint_from_tinker_path(tb_rest_client_t *rc,
                                                       const char *tinker_path,
                                                       tb_future_t **out) {
  return on_tinker_path(rc, "POST", tinker_path, "/publish", NULL, NULL, out);
}

int tb_rest_client_unpublish_checkpoint_from_tinker_path(tb_rest_client_t *rc,
                                                         const char *tinker_path,
                                                         tb_future_t **out) {
  return on_tinker_path(rc, "DELETE", tinker_path, "/publish", NULL, NULL, out);
}

int tb_rest_client_set_checkpoint_ttl_from_tinker_path(tb_rest_client_t *rc,
                                                       const char *tinker_path,
                                                       int64_t ttl_seconds, tb_future_t **out) {
  if (ttl_seconds < 0)
    return TB_EINVAL;
  json_t *b = json_object();
  if (b == NULL || json_object_set_new(b, "ttl_seconds", ttl_seconds > 0
                                                             ? json_integer(ttl_seconds)
                                                             : json_null()) != 0) {
    json_decref(b);
    return TB_ENOMEM;
  }
  return on_tinker_path(rc, "PUT", tinker_path, "/ttl", b, NULL, out);
}

/* ------------------------------------------------------------ sessions */

int tb_rest_client_get_session(tb_rest_client_t *rc, const char *session_id,
                               tb_access_scope_t scope, tb_future_t **out) {
  if (!valid(session_id))
    return TB_EINVAL;
  const char *args[] = { session_id, scope_name(scope) };
  return start(rc, "GET", build_path("/api/v1/sessions/%s?access_scope=%q", args), NULL,
               decode_session, out);
}

int tb_rest_client_list_sessions(tb_rest_client_t *rc, int64_t limit, int64_t offset,
                                 tb_access_scope_t scope, tb_future_t **out) {
  if (limit < 0 || offset < 0)
    return TB_EINVAL;
  char lim[24], off[24];
  snprintf(lim, sizeof(lim), "%lld", (long long)(limit ? limit : 20));
  snprintf(off, sizeof(off), "%lld", (long long)offset);
  const char *args[] = { lim, off, scope_name(scope) };
  return start(rc, "GET", build_path("/api/v1/sessions?limit=%q&offset=%q&access_scope=%q", args),
               NULL, decode_sessions, out);
}

int tb_rest_client_assign_session_project(tb_rest_client_t *rc, const char *session_id,
                                          const char *project_id, tb_future_t **out) {
  if (!valid(session_id) || !valid(project_id))
    return TB_EINVAL;
  json_t *b = json_pack("{ss}", "project_id", project_id);
  if (b == NULL)
    return TB_ENOMEM;
  const char *args[] = { session_id };
  return start(rc, "PUT", build_path("/api/v1/sessions/%s/project", args), b, NULL, out);
}

int tb_rest_client_get_sampler(tb_rest_client_t *rc, const char *sampler_id, tb_future_t **out) {
  if (!valid(sampler_id))
    return TB_EINVAL;
  const char *args[] = { sampler_id };
  return start(rc, "GET", build_path("/api/v1/samplers/%s", args), NULL, decode_sampler, out);
}

int tb_rest_client_get_audit_log(tb_rest_client_t *rc, const char *event_type, const char *day,
                                 tb_future_t **out) {
  const char *et = event_type ? event_type : "all";
  if (strcmp(et, "all") != 0 && strcmp(et, "checkpoints") != 0)
    return TB_EINVAL;
  const char *args[] = { et, day ? day : "" };
  return start(rc, "GET",
               build_path(day ? "/api/v1/audit?event_type=%q&day=%q"
                              : "/api/v1/audit?event_type=%q",
                          args),
               NULL, decode_json_text, out);
}

int tb_rest_client_get_billing_usage(tb_rest_client_t *rc, const char *starting_on,
                                     const char *ending_before, tb_future_t **out) {
  if (!valid(starting_on) || !valid(ending_before))
    return TB_EINVAL;
  const char *args[] = { starting_on, ending_before };
  return start(rc, "GET",
               build_path("/api/v1/billing/usage/events?starting_on=%q&ending_before=%q", args),
               NULL, decode_json_text, out);
}

/* ------------------------------------------------------------ trace export */

/* The export is asked for again until it is ready: its own future drives
 * a request, then a pause, and so on. */
typedef struct trace_s {
  tb_rest_client_t *rc;
  tb__rt_t *rt;
  char *session_id;
  tb_future_t *future;          /* the caller's */
  tb_future_t *inner;           /* the request in flight */
  tb__alarm_t alarm;            /* the pause, or a late completion */
  int cancelled;
} trace_t;

static void trace_free(trace_t *t) {
  free(t->session_id);
  free(t);
}

static void trace_fail(trace_t *t, tb_error_t *e) {
  tb_future_t *f = t->future;
  trace_free(t);
  tb__client_future_fail(f, e);
}

static void trace_ask(trace_t *t);

static void on_trace_alarm(tb__alarm_t *a) {
  trace_t *t = a->data;
  if (t->cancelled) {
    tb_error_t e = { 0 };
    tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "cancelled");
    trace_fail(t, &e);
    return;
  }
  trace_ask(t);
}

static void on_trace_answer(tb_future_t *f, int status) {
  trace_t *t = f->data;
  t->inner = NULL;
  tb_error_t e = { 0 };
  if (status != 0 || t->cancelled) {
    if (t->cancelled)
      tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "cancelled");
    else
      tb_error_copy(&e, &f->error);
    tb_future_free(f);
    trace_fail(t, &e);
    return;
  }
  const char *text = tb_future_result(f, &tb_result_string);
  json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
  tb_future_free(f);
  const char *st = json_string_value(json_object_get(doc, "status"));
  const char *url = json_string_value(json_object_get(doc, "url"));
  if (st != NULL && strcmp(st, "ready") == 0 && url != NULL) {
    char *copy = strdup(url);
    json_decref(doc);
    if (copy == NULL) {
      tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
      trace_fail(t, &e);
      return;
    }
    tb_future_t *out = t->future;
    trace_free(t);
    tb__client_future_resolve(out, &tb_result_string, copy);
    return;
  }
  if (st != NULL && strcmp(st, "pending") == 0) {
    json_decref(doc);
    if (tb__alarm_start(t->rt, &t->alarm, TB_REST_TRACE_POLL_MS) == 0)
      return;
    tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    trace_fail(t, &e);
    return;
  }
  const char *why = json_string_value(json_object_get(doc, "error"));
  if (st != NULL && strcmp(st, "failed") == 0)
    tb_error_set(&e, TB_ESERVER, TB_CATEGORY_SERVER, "the trace export failed: %s",
                 why ? why : "no reason given");
  else
    tb_error_set(&e, TB_EPROTO, TB_CATEGORY_SERVER,
                 "trace_export: expected a status of pending, ready (with a url) or failed");
  json_decref(doc);
  trace_fail(t, &e);
}

static void trace_ask(trace_t *t) {
  const char *args[] = { t->session_id };
  int rc = start(t->rc, "GET", build_path("/api/v1/sessions/%s/trace_export", args), NULL,
                 decode_json_text, &t->inner);
  if (rc != 0) {
    tb_error_t e = { 0 };
    tb_error_set(&e, rc, rc == TB_ECLOSING ? TB_CATEGORY_CANCELLED : TB_CATEGORY_NONE,
                 "trace_export: %s", tb_strerror(rc));
    trace_fail(t, &e);
    return;
  }
  t->inner->data = t;
  tb_future_set_callback(t->inner, on_trace_answer);
}

static void trace_cancel(tb_future_t *f) {
  trace_t *t = f->driver_;
  t->cancelled = 1;
  if (t->inner != NULL) {
    tb_future_cancel(t->inner);
  } else {
    /* In the pause: fail on the next turn. */
    tb__alarm_start(t->rt, &t->alarm, 0);
  }
}

int tb_rest_client_export_session_trace(tb_rest_client_t *rc, const char *session_id,
                                        tb_future_t **out) {
  tb__rt_t *rt = rt_of(rc);
  if (!valid(session_id) || out == NULL)
    return TB_EINVAL;
  if (rt == NULL)
    return rc == NULL || rc->service == NULL || rc->service->impl_ == NULL ? TB_EINVAL
                                                                           : TB_ECLOSING;
  trace_t *t = calloc(1, sizeof(*t));
  if (t == NULL || (t->session_id = strdup(session_id)) == NULL ||
      (t->future = tb__client_future_new(rt->loop)) == NULL) {
    if (t != NULL)
      trace_free(t);
    return TB_ENOMEM;
  }
  t->rc = rc;
  t->rt = rt;
  tb__alarm_init(&t->alarm, on_trace_alarm, t);
  const char *args[] = { session_id };
  int ret = start(rc, "GET", build_path("/api/v1/sessions/%s/trace_export", args), NULL,
                  decode_json_text, &t->inner);
  if (ret != 0) {
    free(t->future);
    trace_free(t);
    return ret;
  }
  t->inner->data = t;
  tb_future_set_callback(t->inner, on_trace_answer);
  tb__client_future_set_driver(t->future, trace_cancel, t);
  *out = t->future;
  return 0;
}

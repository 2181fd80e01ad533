/*
 * The RestClient's results (tinkerbell/rest_client.h): their free
 * functions and result types, and the decoders of the server's answers
 * into them (rest_results.h), which rest_client.c hands to the operation
 * layer with each request.
 */
#include "client/rest_results.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

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
  int name(tb__client_op_t *cop, const char *body, size_t len, int proto, \
           const tb_result_type_t **type, void **result, tb_error_t *err)

DECODER(tb__rest_decode_run) {
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

DECODER(tb__rest_decode_runs) {
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

DECODER(tb__rest_decode_checkpoints) {
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

DECODER(tb__rest_decode_weights_info) {
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
DECODER(tb__rest_decode_archive) {
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

DECODER(tb__rest_decode_session) {
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

DECODER(tb__rest_decode_sessions) {
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

DECODER(tb__rest_decode_sampler) {
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
DECODER(tb__rest_decode_json_text) {
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

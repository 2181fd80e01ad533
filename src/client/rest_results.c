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

#include "client/answer.h"
#include "core/arena.h"
#include "core/json.h"
#include "wire/rest.h"

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

/* Each answer is read by its wire type (wire/rest.h), whose strings point
 * into the document and whose arrays live in a scratch arena, then copied
 * into the public result the user frees. */

static void cursor_copy(const tb__wire_cursor_t *w, tb_cursor_t *c) {
  c->offset = w->offset;
  c->limit = w->limit;
  c->total_count = w->total_count;
}

static int checkpoint_copy(const tb__wire_checkpoint_t *w, tb_checkpoint_t *c) {
  int ok = 1;
  memset(c, 0, sizeof(*c));
  c->checkpoint_id = tb__answer_dup(w->checkpoint_id, &ok);
  c->checkpoint_type = tb__answer_dup(w->checkpoint_type, &ok);
  c->time = tb__answer_dup(w->time, &ok);
  c->tinker_path = tb__answer_dup(w->tinker_path, &ok);
  c->expires_at = tb__answer_dup(w->expires_at, &ok);
  c->size_bytes = w->size_bytes;
  c->is_public = w->is_public;
  return ok;
}

static int run_copy(const tb__wire_training_run_t *w, tb_training_run_t *r) {
  int ok = 1;
  memset(r, 0, sizeof(*r));
  r->training_run_id = tb__answer_dup(w->training_run_id, &ok);
  r->base_model = tb__answer_dup(w->base_model, &ok);
  r->model_owner = tb__answer_dup(w->model_owner, &ok);
  r->last_request_time = tb__answer_dup(w->last_request_time, &ok);
  r->is_lora = w->is_lora;
  r->corrupted = w->corrupted;
  r->lora_rank = w->lora_rank;
  const tb__wire_checkpoint_t *src[2] = { w->last_checkpoint, w->last_sampler_checkpoint };
  tb_checkpoint_t **dst[2] = { &r->last_checkpoint, &r->last_sampler_checkpoint };
  for (int i = 0; i < 2 && ok; i++) {
    if (src[i] == NULL)
      continue;
    *dst[i] = malloc(sizeof(tb_checkpoint_t));
    ok = *dst[i] != NULL && checkpoint_copy(src[i], *dst[i]);
  }
  if (ok && w->user_metadata != NULL &&
      (r->user_metadata_json = tb__json_dump(w->user_metadata, NULL)) == NULL)
    ok = 0;
  return ok;
}

static int strings_copy(const char *const *w, size_t n, char ***out, size_t *nout) {
  *out = calloc(n + 1, sizeof(char *));
  *nout = 0;
  if (*out == NULL)
    return 0;
  for (; *nout < n; (*nout)++)
    if (((*out)[*nout] = strdup(w[*nout])) == NULL)
      return 0;
  return 1;
}

#define DECODER(name) \
  int name(tb__client_op_t *cop, const char *body, size_t len, int proto, \
           const tb_result_type_t **type, void **result, tb_error_t *err)

DECODER(tb__rest_decode_run) {
  TB__DECODE_WIRE(tb__wire_training_run_t,
              tb__wire_training_run_from_json(&d.jc, &d.arena, d.doc, &w), "training run");
  tb_training_run_t *r = calloc(1, sizeof(*r));
  int ok = r != NULL && run_copy(&w, r);
  return tb__answer_result(&d, ok, &tb_result_training_run, r, type, result, err);
}

DECODER(tb__rest_decode_runs) {
  TB__DECODE_WIRE(tb__wire_training_runs_t,
              tb__wire_training_runs_from_json(&d.jc, &d.arena, d.doc, &w), "training runs");
  tb_training_run_list_t *l = calloc(1, sizeof(*l));
  int ok = l != NULL && (l->runs = calloc(w.n + 1, sizeof(*l->runs))) != NULL;
  for (size_t i = 0; ok && i < w.n; i++, l->n++)
    ok = run_copy(&w.runs[i], &l->runs[i]);
  if (ok)
    cursor_copy(&w.cursor, &l->cursor);
  return tb__answer_result(&d, ok, &tb_result_training_run_list, l, type, result, err);
}

DECODER(tb__rest_decode_checkpoints) {
  TB__DECODE_WIRE(tb__wire_checkpoints_t,
              tb__wire_checkpoints_from_json(&d.jc, &d.arena, d.doc, &w), "checkpoints");
  tb_checkpoint_list_t *l = calloc(1, sizeof(*l));
  int ok = l != NULL && (l->checkpoints = calloc(w.n + 1, sizeof(*l->checkpoints))) != NULL;
  for (size_t i = 0; ok && i < w.n; i++, l->n++)
    ok = checkpoint_copy(&w.checkpoints[i], &l->checkpoints[i]);
  if (ok)
    cursor_copy(&w.cursor, &l->cursor);
  return tb__answer_result(&d, ok, &tb_result_checkpoint_list, l, type, result, err);
}

DECODER(tb__rest_decode_weights_info) {
  TB__DECODE_WIRE(tb__wire_weights_info_t, tb__wire_weights_info_from_json(&d.jc, d.doc, &w),
              "weights_info");
  tb_weights_info_t *i = calloc(1, sizeof(*i));
  int ok = i != NULL;
  if (ok) {
    i->base_model = tb__answer_dup(w.base_model, &ok);
    i->is_lora = w.is_lora;
    i->lora_rank = w.lora_rank;
    i->train_unembed = w.train_unembed;
    i->train_mlp = w.train_mlp;
    i->train_attn = w.train_attn;
  }
  return tb__answer_result(&d, ok, &tb_result_weights_info, i, type, result, err);
}

/* The archive's link: {"url", "expires"}. */
DECODER(tb__rest_decode_archive) {
  TB__DECODE_WIRE(tb__wire_archive_url_t, tb__wire_archive_url_from_json(&d.jc, d.doc, &w),
              "checkpoint archive");
  tb_archive_url_t *a = calloc(1, sizeof(*a));
  int ok = a != NULL;
  if (ok) {
    a->url = tb__answer_dup(w.url, &ok);
    a->expires = tb__answer_dup(w.expires, &ok);
  }
  return tb__answer_result(&d, ok, &tb_result_archive_url, a, type, result, err);
}

DECODER(tb__rest_decode_session) {
  TB__DECODE_WIRE(tb__wire_session_info_t,
              tb__wire_session_info_from_json(&d.jc, &d.arena, d.doc, &w), "session");
  tb_session_info_t *s = calloc(1, sizeof(*s));
  int ok = s != NULL &&
           strings_copy(w.training_run_ids, w.n_training_run_ids, &s->training_run_ids,
                        &s->n_training_run_ids) &&
           strings_copy(w.sampler_ids, w.n_sampler_ids, &s->sampler_ids, &s->n_sampler_ids);
  return tb__answer_result(&d, ok, &tb_result_session_info, s, type, result, err);
}

DECODER(tb__rest_decode_sessions) {
  TB__DECODE_WIRE(tb__wire_sessions_t, tb__wire_sessions_from_json(&d.jc, &d.arena, d.doc, &w),
              "sessions");
  tb_string_list_t *l = calloc(1, sizeof(*l));
  int ok = l != NULL && strings_copy(w.ids, w.n, &l->items, &l->n);
  return tb__answer_result(&d, ok, &tb_result_string_list, l, type, result, err);
}

DECODER(tb__rest_decode_sampler) {
  TB__DECODE_WIRE(tb__wire_sampler_info_t, tb__wire_sampler_info_from_json(&d.jc, d.doc, &w),
              "sampler");
  tb_sampler_info_t *s = calloc(1, sizeof(*s));
  int ok = s != NULL;
  if (ok) {
    s->sampler_id = tb__answer_dup(w.sampler_id, &ok);
    s->base_model = tb__answer_dup(w.base_model, &ok);
    s->model_path = tb__answer_dup(w.model_path, &ok);
  }
  return tb__answer_result(&d, ok, &tb_result_sampler_info, s, type, result, err);
}

/* The whole answer as JSON text (checked to be JSON). */
DECODER(tb__rest_decode_json_text) {
  json_t *doc;
  int rc = tb__json_parse((tb_slice_t){ body, len }, &doc, err);
  if (rc != 0) {
    err->category = TB_CATEGORY_SERVER;
    return rc;
  }
  if (!json_is_object(doc)) {
    json_decref(doc);
    return tb_error_set(err, TB_EPROTO, TB_CATEGORY_SERVER, "the answer is not a JSON object");
  }
  json_decref(doc);
  char *s = tb__strndup(body, len);
  if (s == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  *type = &tb_result_string;
  *result = s;
  return 0;
}

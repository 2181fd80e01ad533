/*
 * The REST routes of the Tinker dialect over the store (store.h):
 *
 *   GET    /api/v1/training_runs                 (limit, offset, access_scope,
 *                                                 project_id)
 *   GET    /api/v1/training_runs/{run_id}        (access_scope)
 *   GET    /api/v1/training_runs/{run_id}/checkpoints   (limit, offset)
 *   GET    /api/v1/checkpoints                   (limit, offset): the user's, newest first
 *   DELETE /api/v1/training_runs/{run_id}/checkpoints/{kind}/{name}
 *   GET    .../checkpoints/{kind}/{name}/archive  -> {"url", "expires"}
 *   POST   .../checkpoints/{kind}/{name}/publish, DELETE .../publish
 *   PUT    .../checkpoints/{kind}/{name}/ttl     {"ttl_seconds": int | null}
 *   GET    /api/v1/checkpoint_archives/{token}   the tar (no API key: the
 *                                                 token is the credential)
 *
 * A checkpoint id is "<kind>/<name>" with kind weights or sampler_weights,
 * as in tinker://<run_id>/<kind>/<name>, so the SDK's interpolated URLs
 * route as they are.  Every query runs as a store op on the threadpool;
 * its work (rest_queries.c) builds the answer (a JSON value, or the tar)
 * and the loop sends it.  Runs and checkpoints of another user are 404, except checkpoints
 * that were published (and their runs, with access_scope=accessible).
 */
#define _GNU_SOURCE  /* memmem */
#include "server/store.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "server/internal.h"
#include "server/rest.h"
#include "server/routes.h"
#include "wire/rest.h"
#include "wire/service.h"


/* ------------------------------------------------------------ loop side */

static void rest_op_free(tb__rest_op_t *q) {
  free(q->user);
  free(q->run_id);
  free(q->ckpt_id);
  free(q->token);
  free(q->project_id);
  free(q->tinker_path);
  free(q->tar_name);
  json_decref(q->answer);
  tb__buf_free(&q->tar);
  free(q);
}

/* The tar is lent to the answer until the request is done. */
static void on_download_done(tb__http_request_t *req, int status) {
  rest_op_free(tb__sreq(req)->data);
}

/* "http://<Host>" of the request, when its Host header is a plain host
 * and port; else the address the server listens on. */
static char *base_url(tb__http_request_t *req) {
  const tb__http_header_t *h = tb__http_request_header(req, "Host");
  int ok = h != NULL && h->value.len > 0 && h->value.len < 256;
  for (size_t i = 0; ok && i < h->value.len; i++) {
    char c = h->value.base[i];
    ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
  }
  if (ok)
    return tb__asprintf("http://%.*s", (int)h->value.len, h->value.base);
  int port = tb__http_server_port(&tb__server_from_req(req)->http);
  return tb__asprintf("http://127.0.0.1:%d", port);
}

static void rest_done(tb__store_op_t *op, int status) {
  tb__rest_op_t *q = (tb__rest_op_t *)op;
  tb__http_request_t *req = q->req;
  tb__store_t *st = op->store;
  if (status != 0 && q->status == 0)
    tb__rest_fail(q, 503, "the database is unavailable: %s", uv_strerror(status));
  if (q->status != 0) {
    tb__server_respond_error(req, q->status, "%s", q->message);
    rest_op_free(q);
    return;
  }
  switch (q->kind) {
  case Q_DELETE:
  case Q_UNPUBLISH:
    tb__store_set_public(st, q->tinker_path, 0);
    break;
  case Q_PUBLISH:
    tb__store_set_public(st, q->tinker_path, 1);
    break;
  case Q_TTL:
    if (q->has_ttl)
      tb__store_sweep_at(st, q->expires_at);
    break;
  case Q_ARCHIVE: {
    char *base = base_url(req);
    char *url = base ? tb__asprintf("%s/api/v1/checkpoint_archives/%s", base, q->token) : NULL;
    free(base);
    tb__wire_archive_url_t a = { .url = url, .expires = q->expires };
    q->answer = url ? tb__wire_archive_url_to_json(&a) : NULL;
    free(url);
    if (q->answer == NULL) {
      tb__server_respond_error(req, 503, "out of memory");
      rest_op_free(q);
      return;
    }
    break;
  }
  case Q_DOWNLOAD: {
    char *disp = tb__arena_alloc(&req->arena, strlen(q->tar_name) + 40);
    if (disp == NULL) {
      tb__server_respond_error(req, 503, "out of memory");
      rest_op_free(q);
      return;
    }
    sprintf(disp, "attachment; filename=\"%s.tar\"", q->tar_name);
    tb__http_header_t hs[2] = {
      { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/x-tar") },
      { TB_SLICE_LIT("Content-Disposition"), { disp, strlen(disp) } },
    };
    tb__sreq(req)->data = q;
    tb__sreq(req)->on_done = on_download_done;
    uv_buf_t b = uv_buf_init(q->tar.base, (unsigned)q->tar.len);
    tb__server_respond(req, 200, hs, 2, &b, 1);
    return;
  }
  default:
    break;
  }
  tb__server_respond_jsonv(req, 200, q->answer);
  rest_op_free(q);
}

static tb__rest_op_t *rest_op_new(tb__http_request_t *req, int kind) {
  tb__server_t *srv = tb__server_from_req(req);
  if (srv->store == NULL || tb__store_state(srv->store) < 0) {
    tb__server_respond_error(req, 503, "the database is unavailable: %s",
                             tb__store_error(srv->store));
    return NULL;
  }
  tb__rest_op_t *q = calloc(1, sizeof(*q));
  const tb__user_t *u = tb__sreq(req)->user;
  if (q != NULL) {
    q->req = req;
    q->kind = kind;
    q->op.work = tb__rest_work;
    q->op.done = rest_done;
    q->data_dir = tb__store_data_dir(srv->store);
    q->user = u ? tb__strndup(u->name, u->name_len) : tb__strndup("", 0);
  }
  if (q == NULL || q->user == NULL) {
    free(q);
    tb__server_respond_error(req, 503, "out of memory");
    return NULL;
  }
  return q;
}

static void rest_submit(tb__http_request_t *req, tb__rest_op_t *q) {
  if (tb__store_submit(tb__server_from_req(req)->store, &q->op) != 0) {
    tb__server_respond_error(req, 503, "the server is closing");
    rest_op_free(q);
  }
}

/* A path parameter that names a file-system component: printable ASCII
 * without '/', not "." or "..", nor starting with '.'.  Answers 400 and
 * returns NULL otherwise; the copy is malloc'd. */
static char *path_param(tb__http_request_t *req, const char *name, size_t max) {
  const tb_slice_t *v = tb__http_request_param(req, name);
  const char *why = NULL;
  if (v == NULL || v->len == 0)
    why = "required";
  else if (v->len > max)
    why = "too long";
  else if (memmem(v->base, v->len, "..", 2) != NULL)
    why = "'..' is not allowed";
  else if (v->base[0] == '.')
    why = "must not start with '.'";
  for (size_t i = 0; why == NULL && i < v->len; i++) {
    unsigned char c = (unsigned char)v->base[i];
    if (c == '/' || c == '\\' || c <= 0x20 || c >= 0x7f)
      why = "expected printable ASCII without '/', '\\' or spaces";
  }
  if (why != NULL) {
    tb__server_respond_error(req, 400, "%s: %s", name, why);
    return NULL;
  }
  char *s = tb__strndup(v->base, v->len);
  if (s == NULL)
    tb__server_respond_error(req, 503, "out of memory");
  return s;
}

/* run_id, and with a checkpoint "<kind>/<name>" in q->ckpt_id. */
static int checkpoint_params(tb__http_request_t *req, tb__rest_op_t *q, int with_checkpoint) {
  q->run_id = path_param(req, "run_id", 200);
  if (q->run_id == NULL)
    return -1;
  if (!with_checkpoint)
    return 0;
  const tb_slice_t *kind = tb__http_request_param(req, "kind");
  if (kind == NULL ||
      !(tb__slice_eq_str(*kind, "weights") || tb__slice_eq_str(*kind, "sampler_weights"))) {
    tb__server_respond_error(req, 400,
                             "checkpoint_id: expected weights/<name> or sampler_weights/<name>");
    return -1;
  }
  char *name = path_param(req, "name", 128);
  if (name == NULL)
    return -1;
  q->ckpt_id = tb__asprintf("%.*s/%s", (int)kind->len, kind->base, name);
  free(name);
  if (q->ckpt_id == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return -1;
  }
  return 0;
}

/* An integer query parameter within [min, max] (def when absent); answers
 * 400 and returns -1 when malformed. */
static int query_int(tb__http_request_t *req, const char *name, int64_t min, int64_t max,
                     int64_t def, int64_t *out) {
  tb_slice_t v;
  *out = def;
  int rc = tb__http_request_query(req, name, &v);
  if (rc == 0)
    return 0;
  char buf[32];
  char *end = NULL;
  long long n = 0;
  if (rc > 0 && v.len > 0 && v.len < sizeof(buf)) {
    memcpy(buf, v.base, v.len);
    buf[v.len] = '\0';
    errno = 0;
    n = strtoll(buf, &end, 10);
  }
  if (rc < 0 || end == NULL || *end != '\0' || errno != 0 || n < min || n > max) {
    tb__server_respond_error(req, 400, "%s: expected an integer from %lld to %lld", name,
                             (long long)min, (long long)max);
    return -1;
  }
  *out = n;
  return 0;
}

/* access_scope=owned (default) or accessible. */
static int query_scope(tb__http_request_t *req, int *accessible) {
  tb_slice_t v;
  *accessible = 0;
  int rc = tb__http_request_query(req, "access_scope", &v);
  if (rc == 0 || (rc > 0 && tb__slice_eq_str(v, "owned")))
    return 0;
  if (rc > 0 && tb__slice_eq_str(v, "accessible")) {
    *accessible = 1;
    return 0;
  }
  tb__server_respond_error(req, 400, "access_scope: expected owned or accessible");
  return -1;
}

void tb__route_list_runs(tb__http_request_t *req) {
  tb__rest_op_t *q = rest_op_new(req, Q_LIST_RUNS);
  if (q == NULL)
    return;
  tb_slice_t project;
  int prc = tb__http_request_query(req, "project_id", &project);
  if (query_int(req, "limit", 1, 1000, 20, &q->limit) != 0 ||
      query_int(req, "offset", 0, INT32_MAX, 0, &q->offset) != 0 ||
      query_scope(req, &q->accessible) != 0) {
    rest_op_free(q);
    return;
  }
  if (prc < 0 || (prc > 0 && project.len == 0)) {
    tb__server_respond_error(req, 400, "project_id: expected a non-empty string");
    rest_op_free(q);
    return;
  }
  if (prc > 0 && (q->project_id = tb__strndup(project.base, project.len)) == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

void tb__route_get_run(tb__http_request_t *req) {
  tb__rest_op_t *q = rest_op_new(req, Q_GET_RUN);
  if (q == NULL)
    return;
  if (query_scope(req, &q->accessible) != 0 || checkpoint_params(req, q, 0) != 0) {
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

void tb__route_run_checkpoints(tb__http_request_t *req) {
  tb__rest_op_t *q = rest_op_new(req, Q_RUN_CHECKPOINTS);
  if (q == NULL)
    return;
  if (query_int(req, "limit", 1, 10000, 10000, &q->limit) != 0 ||
      query_int(req, "offset", 0, INT32_MAX, 0, &q->offset) != 0 ||
      checkpoint_params(req, q, 0) != 0) {
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

void tb__route_user_checkpoints(tb__http_request_t *req) {
  tb__rest_op_t *q = rest_op_new(req, Q_USER_CHECKPOINTS);
  if (q == NULL)
    return;
  if (query_int(req, "limit", 1, 1000, 100, &q->limit) != 0 ||
      query_int(req, "offset", 0, INT32_MAX, 0, &q->offset) != 0) {
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

/* The routes on one checkpoint. */
static void checkpoint_route(tb__http_request_t *req, int kind) {
  tb__rest_op_t *q = rest_op_new(req, kind);
  if (q == NULL)
    return;
  if (checkpoint_params(req, q, 1) != 0) {
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

void tb__route_delete_checkpoint(tb__http_request_t *req) {
  checkpoint_route(req, Q_DELETE);
}

void tb__route_archive(tb__http_request_t *req) {
  checkpoint_route(req, Q_ARCHIVE);
}

void tb__route_publish(tb__http_request_t *req) {
  checkpoint_route(req, Q_PUBLISH);
}

void tb__route_unpublish(tb__http_request_t *req) {
  checkpoint_route(req, Q_UNPUBLISH);
}

int tb__route_ttl(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  const tb__wire_ttl_request_t *w = call->in;
  tb__rest_op_t *q = rest_op_new(req, Q_TTL);
  if (q == NULL)
    return 0;
  q->has_ttl = w->ttl_seconds > 0;
  q->ttl = w->ttl_seconds;
  if (checkpoint_params(req, q, 1) != 0) {
    rest_op_free(q);
    return 0;
  }
  rest_submit(req, q);
  return 0;
}

void tb__route_download(tb__http_request_t *req) {
  const tb_slice_t *t = tb__http_request_param(req, "token");
  int ok = t != NULL && t->len == 36 && memcmp(t->base, "arc-", 4) == 0;
  for (size_t i = 4; ok && i < t->len; i++)
    ok = (t->base[i] >= '0' && t->base[i] <= '9') || (t->base[i] >= 'a' && t->base[i] <= 'f');
  if (!ok) {
    tb__server_respond_error(req, 404, "token: unknown or expired archive link");
    return;
  }
  tb__rest_op_t *q = rest_op_new(req, Q_DOWNLOAD);
  if (q == NULL)
    return;
  if ((q->token = tb__strndup(t->base, t->len)) == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

/*
 * The routes of sessions (sessions.h):
 *   POST /api/v1/create_session, POST /api/v1/session_heartbeat,
 *   POST /api/v1/close_session,
 *   GET /api/v1/sessions (limit, offset), GET /api/v1/sessions/{id};
 * and the answer 410 other routes give for a closed session.
 */
#include "server/sessions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "server/internal.h"
#include "server/routes.h"

int tb__session_gone(tb__http_request_t *req, tb_slice_t id) {
  const char *colon = id.base != NULL ? memchr(id.base, ':', id.len) : NULL;
  tb_slice_t sid = { id.base, colon != NULL ? (size_t)(colon - id.base) : id.len };
  tb__server_t *srv = tb__server_from_req(req);
  tb__session_t *s = tb__session_find(&srv->sessions, tb__sreq(req)->user, sid);
  if (s == NULL || !s->closed)
    return 0;
  tb__session_respond_closed(req, s);
  return 1;
}

void tb__session_respond_closed(tb__http_request_t *req, const tb__session_t *s) {
  tb__server_respond_error(req, 410, "session %s was closed: open a new session", s->id);
}

/* ------------------------------------------------------------ routes */

/* "type", when sent, must name the request. */
static int check_type(tb__jctx_t *c, const json_t *doc, const char *want) {
  tb_slice_t type;
  int rc = tb__json_get_string(c, doc, "type", TB_JSON_OPTIONAL, &type);
  if (rc == 0 && !tb__slice_eq_str(type, want))
    return tb__jctx_fail_at(c, "type", "expected \"%s\"", want);
  return rc < 0 ? rc : 0;
}

void tb__route_create_session(tb__http_request_t *req) {
  tb__server_t *srv = tb__server_from_req(req);
  json_t *doc;
  if (tb__server_parse_body(req, &doc) != 0)
    return;
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  json_t *tags = NULL, *meta = NULL;
  tb_slice_t sdk = { NULL, 0 }, project = { NULL, 0 };
  int rc = check_type(&c, doc, "create_session");
  if (rc >= 0)
    rc = tb__json_get_array(&c, doc, "tags", TB_JSON_OPTIONAL, &tags);
  if (rc >= 0 && tags != NULL) {
    size_t mark = tb__jctx_push_key(&c, "tags");
    for (size_t i = 0; i < json_array_size(tags) && rc >= 0; i++) {
      json_t *t = json_array_get(tags, i);
      if (!json_is_string(t)) {
        size_t m2 = tb__jctx_push_index(&c, i);
        rc = tb__jctx_fail(&c, "expected a string, got %s", tb__json_type_name(t));
        tb__jctx_pop(&c, m2);
      }
    }
    tb__jctx_pop(&c, mark);
  }
  if (rc >= 0)
    rc = tb__json_get_object(&c, doc, "user_metadata", TB_JSON_OPTIONAL, &meta);
  if (rc >= 0)
    rc = tb__json_get_string(&c, doc, "sdk_version", TB_JSON_OPTIONAL, &sdk);
  if (rc >= 0)
    rc = tb__json_get_string(&c, doc, "project_id", TB_JSON_OPTIONAL, &project);
  if (rc < 0) {
    tb__server_respond_bad(req, &err);
    tb_error_clear(&err);
    json_decref(doc);
    return;
  }
  tb__session_t *s;
  rc = tb__session_create(&srv->sessions, tb__sreq(req)->user, tags, meta, sdk,
                          project, &s);
  json_decref(doc);
  if (rc != 0) {
    tb__server_respond_error(req, 503, "cannot create a session: %s", tb_strerror(rc));
    return;
  }
  char *json = tb__arena_alloc(&req->arena, 96);
  int n = json ? snprintf(json, 96, "{\"session_id\":\"%s\",\"type\":\"create_session\"}",
                          s->id)
               : 0;
  tb__server_respond_json(req, 200, json, (size_t)n);
}

/* Finds the caller's session named by a body field or path parameter;
 * answers 404 itself when there is none. */
static tb__session_t *find_or_404(tb__http_request_t *req, tb_slice_t id) {
  tb__server_t *srv = tb__server_from_req(req);
  tb__session_t *s = tb__session_find(&srv->sessions, tb__sreq(req)->user, id);
  if (s == NULL)
    tb__server_respond_error(req, 404, "session %.*s: unknown session",
                             (int)(id.len > 80 ? 80 : id.len), id.base);
  return s;
}

/* {"session_id", "type": type}: applies act to the caller's live session and answers
 * {"type": type}; a session closed or expired is 410, an unknown one 404. */
static void session_call(tb__http_request_t *req, const char *type,
                         void (*act)(tb__sessions_t *, tb__session_t *)) {
  tb__server_t *srv = tb__server_from_req(req);
  json_t *doc;
  if (tb__server_parse_body(req, &doc) != 0)
    return;
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  tb_slice_t id;
  int rc = check_type(&c, doc, type);
  if (rc >= 0)
    rc = tb__json_get_string(&c, doc, "session_id", TB_JSON_REQUIRED, &id);
  if (rc < 0) {
    tb__server_respond_bad(req, &err);
    tb_error_clear(&err);
  } else {
    tb__session_t *s = find_or_404(req, id);
    if (s != NULL && s->closed) {
      tb__session_gone(req, id);
    } else if (s != NULL && s->expired) {
      tb__server_respond_error(req, 410, "session %s expired: no heartbeat for %llu ms",
                               s->id, (unsigned long long)srv->sessions.timeout_ms);
    } else if (s != NULL) {
      act(&srv->sessions, s);
      char ok[64];
      int n = snprintf(ok, sizeof(ok), "{\"type\":\"%s\"}", type);
      tb__server_respond_json(req, 200, ok, (size_t)n);
    }
  }
  json_decref(doc);
}

void tb__route_heartbeat(tb__http_request_t *req) {
  session_call(req, "session_heartbeat", tb__session_heartbeat);
}

/* {"session_id", "type": "close_session"} -> {"type": "close_session"}.
 * A session already closed, or expired, is 410 like every later call. */
void tb__route_close_session(tb__http_request_t *req) {
  session_call(req, "close_session", tb__session_close);
}

/* Reads an integer query parameter within [min, max]; answers 400 itself
 * and returns -1 when it is malformed. */
static int query_int(tb__http_request_t *req, const char *name, long min, long max,
                     long *out) {
  tb_slice_t v;
  int rc = tb__http_request_query(req, name, &v);
  if (rc == 0)
    return 0;
  char *end = NULL;
  long n = rc > 0 && v.len > 0 ? strtol(v.base, &end, 10) : 0;
  if (rc < 0 || v.len == 0 || end != v.base + v.len || n < min || n > max) {
    tb__server_respond_error(req, 400, "%s: expected an integer from %ld to %ld", name,
                             min, max);
    return -1;
  }
  *out = n;
  return 0;
}

void tb__route_list_sessions(tb__http_request_t *req) {
  tb__server_t *srv = tb__server_from_req(req);
  long limit = 20, offset = 0;
  if (query_int(req, "limit", 1, 1000, &limit) != 0 ||
      query_int(req, "offset", 0, 1L << 30, &offset) != 0)
    return;
  json_t *ids = json_array();
  size_t total = 0;
  for (tb__session_t *s = srv->sessions.all; s != NULL; s = s->anext) {
    if (s->owner != tb__sreq(req)->user)
      continue;
    if (total >= (size_t)offset && json_array_size(ids) < (size_t)limit)
      json_array_append_new(ids, json_string(s->id));
    total++;
  }
  json_t *doc = json_pack("{s:o, s:{s:i, s:i, s:I}}", "sessions", ids, "cursor",
                          "offset", (int)offset, "limit", (int)limit, "total_count",
                          (json_int_t)total);
  if (doc == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  tb__server_respond_jsonv(req, 200, doc);
  json_decref(doc);
}

static json_t *strlist_json(const tb__strlist_t *l) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < l->n; i++)
    json_array_append_new(a, json_string(l->items[i]));
  return a;
}

void tb__route_get_session(tb__http_request_t *req) {
  const tb_slice_t *id = tb__http_request_param(req, "session_id");
  tb__session_t *s = find_or_404(req, *id);
  if (s == NULL)
    return;
  json_t *doc = json_pack("{s:s, s:o, s:o, s:b, s:b, s:O, s:O}", "session_id", s->id,
                          "training_run_ids", strlist_json(&s->training_run_ids),
                          "sampler_ids", strlist_json(&s->sampler_ids), "expired",
                          s->expired, "closed", s->closed, "tags", s->tags,
                          "user_metadata", s->user_metadata);
  if (doc == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  tb__server_respond_jsonv(req, 200, doc);
  json_decref(doc);
}

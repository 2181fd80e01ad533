/*
 * The routes of sessions (sessions.h):
 *   POST /api/v1/create_session, POST /api/v1/session_heartbeat,
 *   POST /api/v1/close_session,
 *   GET /api/v1/sessions (limit, offset), GET /api/v1/sessions/{id};
 * and the answer 410 other routes give for a closed session.
 */
#include "server/sessions.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "server/internal.h"
#include "server/routes.h"
#include "wire/rest.h"
#include "wire/service.h"

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

tb__session_t *tb__session_live(tb__http_request_t *req, tb_slice_t sid) {
  tb__server_t *srv = tb__server_from_req(req);
  tb__session_t *s = tb__session_find(&srv->sessions, tb__sreq(req)->user, sid);
  if (s != NULL && s->closed)
    tb__session_respond_closed(req, s);
  else if (s == NULL || s->expired)
    tb__server_respond_error(req, 404, "session_id: unknown or expired session");
  else
    return s;
  return NULL;
}

void tb__session_respond_closed(tb__http_request_t *req, const tb__session_t *s) {
  tb__server_respond_error(req, 410, "session %s was closed: open a new session", s->id);
}

/* ------------------------------------------------------------ routes */

int tb__route_create_session(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__server_t *srv = tb__server_from_req(req);
  const tb__wire_create_session_t *w = call->in;
  tb__session_t *s;
  int rc = tb__session_create(&srv->sessions, tb__sreq(req)->user, w->tags_value,
                              w->user_metadata_value, w->sdk_version, w->project_id, &s);
  if (rc != 0) {
    tb__server_respond_error(req, 503, "cannot create a session: %s", tb_strerror(rc));
    return 0;
  }
  tb__server_respond_answer(req, tb__wire_session_created_to_json(
                                     &(tb__wire_session_created_t){ .session_id = s->id }));
  return 0;
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

/* {"session_id", "type"}, decoded by the route's row: applies act to the
 * caller's live session and answers {"type"}; a session closed or expired
 * is 410, an unknown one 404. */
static int session_call(tb__route_call_t *call,
                        void (*act)(tb__sessions_t *, tb__session_t *)) {
  tb__http_request_t *req = call->req;
  tb__server_t *srv = tb__server_from_req(req);
  const tb__wire_session_call_t *w = call->in;
  tb_slice_t id = w->session_id;
  tb__session_t *s = find_or_404(req, id);
  if (s != NULL && s->closed) {
    tb__session_gone(req, id);
  } else if (s != NULL && s->expired) {
    tb__server_respond_error(req, 410, "session %s expired: no heartbeat for %llu ms",
                             s->id, (unsigned long long)srv->sessions.timeout_ms);
  } else if (s != NULL) {
    act(&srv->sessions, s);
    tb__server_respond_answer(req, tb__wire_session_call_done_to_json(w));
  }
  return 0;
}

int tb__route_heartbeat(tb__route_call_t *call) {
  return session_call(call, tb__session_heartbeat);
}

/* {"session_id", "type": "close_session"} -> {"type": "close_session"}.
 * A session already closed, or expired, is 410 like every later call. */
int tb__route_close_session(tb__route_call_t *call) {
  return session_call(call, tb__session_close);
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
  tb__wire_sessions_t w = { tb__arena_calloc(&req->arena, (size_t)limit, sizeof(char *)), 0,
                            { offset, limit, 0 } };
  if (w.ids == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  for (tb__session_t *s = srv->sessions.all; s != NULL; s = s->anext) {
    if (s->owner != tb__sreq(req)->user)
      continue;
    if (w.cursor.total_count >= offset && w.n < (size_t)limit)
      w.ids[w.n++] = s->id;
    w.cursor.total_count++;
  }
  tb__server_respond_answer(req, tb__wire_sessions_to_json(&w));
}

void tb__route_get_session(tb__http_request_t *req) {
  const tb_slice_t *id = tb__http_request_param(req, "session_id");
  tb__session_t *s = find_or_404(req, *id);
  if (s == NULL)
    return;
  tb__wire_session_info_t w = { .session_id = s->id,
                                .training_run_ids = (const char **)s->training_run_ids.items,
                                .n_training_run_ids = s->training_run_ids.n,
                                .sampler_ids = (const char **)s->sampler_ids.items,
                                .n_sampler_ids = s->sampler_ids.n,
                                .expired = s->expired,
                                .closed = s->closed,
                                .tags = s->tags,
                                .user_metadata = s->user_metadata };
  tb__server_respond_answer(req, tb__wire_session_info_to_json(&w));
}

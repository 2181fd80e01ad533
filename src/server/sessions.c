/*
 * Sessions (see sessions.h): the store of sessions, their heartbeats and
 * expiry.  Their routes are sessions_routes.c's.
 */
#include "server/sessions.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/list.h"
#include "core/log.h"
#include "server/internal.h"

#define MAX_EXPIRED_KEPT 10000

/* ------------------------------------------------------------ store */

#define LIST_PUSH(l, x) TB__LIST_PUSH(l, x, lnext, lprev)
#define LIST_REMOVE(l, x) TB__LIST_REMOVE(l, x, lnext, lprev)

static void strlist_free(tb__strlist_t *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->items[i]);
  free(l->items);
  memset(l, 0, sizeof(*l));
}

static int strlist_add(tb__strlist_t *l, const char *s) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->items[i], s) == 0)
      return 0;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4;
    char **items = realloc(l->items, cap * sizeof(*items));
    if (items == NULL)
      return TB_ENOMEM;
    l->items = items;
    l->cap = cap;
  }
  char *copy = tb__strndup(s, strlen(s));
  if (copy == NULL)
    return TB_ENOMEM;
  l->items[l->n++] = copy;
  return 0;
}

int tb__session_add_training_run(tb__session_t *s, const char *id) {
  return strlist_add(&s->training_run_ids, id);
}

int tb__session_add_sampler(tb__session_t *s, const char *id) {
  size_t before = s->sampler_ids.n;
  int rc = strlist_add(&s->sampler_ids, id);
  if (rc == 0 && s->sampler_ids.n > before && s->ss != NULL && s->ss->on_event)
    s->ss->on_event(s->ss, s, TB__SESSION_SAMPLER_ADDED, id);
  return rc;
}

static void session_free(tb__session_t *s) {
  json_decref(s->tags);
  json_decref(s->user_metadata);
  free(s->sdk_version);
  free(s->project_id);
  strlist_free(&s->training_run_ids);
  strlist_free(&s->sampler_ids);
  free(s);
}

/* Forgets an expired session entirely. */
static void session_drop(tb__sessions_t *ss, tb__session_t *s) {
  LIST_REMOVE(ss->dead, s);
  tb__idmap_remove(&ss->by_id, &s->link);
  TB__LIST_REMOVE_HEAD(ss->all, s, anext, aprev);
  ss->n_expired--;
  session_free(s);
}

static void on_timer(uv_timer_t *t);

static void arm(tb__sessions_t *ss) {
  if (ss->closing)
    return;
  if (ss->live.head == NULL) {
    uv_timer_stop(&ss->timer);
    ss->timer_due = 0;
    return;
  }
  uint64_t due = ss->live.head->last_heartbeat_ms + ss->timeout_ms;
  if (due == ss->timer_due)
    return;
  ss->timer_due = due;
  uint64_t now = uv_now(ss->loop);
  uv_timer_start(&ss->timer, on_timer, due > now ? due - now : 0, 0);
}

/* A live session ends (event: expired or closed): it moves to the dead
 * list, whose models the training part unloads and the store hears of. */
static void retire(tb__sessions_t *ss, tb__session_t *s, int event) {
  LIST_REMOVE(ss->live, s);
  LIST_PUSH(ss->dead, s);
  s->expired = 1;
  ss->n_live--;
  ss->n_expired++;
  if (ss->on_expire)
    ss->on_expire(ss, s);
  if (ss->on_event)
    ss->on_event(ss, s, event, NULL);
}

/* Keeps at most max_expired dead sessions, then arms the sweep. */
static void drop_and_arm(tb__sessions_t *ss) {
  while (ss->n_expired > ss->max_expired)
    session_drop(ss, ss->dead.head);
  arm(ss);
}

void tb__sessions_sweep(tb__sessions_t *ss) {
  uint64_t now = uv_now(ss->loop);
  tb__session_t *s;
  while ((s = ss->live.head) != NULL && s->last_heartbeat_ms + ss->timeout_ms <= now) {
    tb__info("session %s of %s expired (no heartbeat for %llu ms)", s->id,
            s->owner->name, (unsigned long long)(now - s->last_heartbeat_ms));
    retire(ss, s, TB__SESSION_EXPIRED);
  }
  drop_and_arm(ss);
}

static void on_timer(uv_timer_t *t) {
  tb__sessions_t *ss = t->data;
  ss->timer_due = 0;
  tb__sessions_sweep(ss);
}

int tb__sessions_init(uv_loop_t *loop, tb__sessions_t *ss, uint64_t timeout_ms) {
  memset(ss, 0, sizeof(*ss));
  ss->loop = loop;
  ss->timeout_ms = timeout_ms;
  ss->max_expired = MAX_EXPIRED_KEPT;
  tb__idgen_init(&ss->ids);  /* zeroed, the id map is empty */
  uv_timer_init(loop, &ss->timer);
  ss->timer.data = ss;
  uv_unref((uv_handle_t *)&ss->timer);
  return 0;
}

static void on_closed(uv_handle_t *h) {
  tb__sessions_t *ss = h->data;
  tb__session_t *s = ss->all;
  while (s != NULL) {
    tb__session_t *next = s->anext;
    session_free(s);
    s = next;
  }
  ss->all = NULL;
  tb__idmap_free(&ss->by_id);
  ss->n_live = ss->n_expired = 0;
  if (ss->close_cb)
    ss->close_cb(ss);
}

void tb__sessions_close(tb__sessions_t *ss, tb__sessions_close_cb close_cb) {
  if (ss->closing)
    return;
  ss->closing = 1;
  ss->close_cb = close_cb;
  uv_close((uv_handle_t *)&ss->timer, on_closed);
}

static tb__session_t *get(const tb__sessions_t *ss, const char *id, size_t len) {
  tb__idmap_link_t *l = tb__idmap_find(&ss->by_id, id, len);
  return l != NULL ? TB__IDMAP_ENTRY(l, tb__session_t, link) : NULL;
}

/* Makes s, whose id is set, found by its id and listed among all.
 * Returns 0 or TB_ENOMEM. */
static int index_session(tb__sessions_t *ss, tb__session_t *s) {
  if (tb__idmap_insert(&ss->by_id, &s->link, s->id, s->id_len) != 0)
    return TB_ENOMEM;
  TB__LIST_PUSH_HEAD(ss->all, s, anext, aprev);
  return 0;
}

int tb__session_create(tb__sessions_t *ss, const tb__user_t *owner, json_t *tags,
                       json_t *user_metadata, tb_slice_t sdk_version,
                       tb_slice_t project_id, tb__session_t **out) {
  if (ss->closing)
    return TB_ECLOSING;
  tb__session_t *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return TB_ENOMEM;
  s->tags = tags ? json_incref(tags) : json_array();
  s->user_metadata = user_metadata ? json_incref(user_metadata) : json_object();
  if (sdk_version.base)
    s->sdk_version = tb__strndup(sdk_version.base, sdk_version.len);
  if (project_id.base)
    s->project_id = tb__strndup(project_id.base, project_id.len);
  if (s->tags == NULL || s->user_metadata == NULL ||
      (sdk_version.base && s->sdk_version == NULL) ||
      (project_id.base && s->project_id == NULL)) {
    session_free(s);
    return TB_ENOMEM;
  }
  do
    s->id_len = tb__idgen_next(&ss->ids, "sess-", s->id);
  while (get(ss, s->id, s->id_len) != NULL);
  s->owner = owner;
  s->created_wall = tb__wall_time();
  s->last_heartbeat_ms = uv_now(ss->loop);
  if (index_session(ss, s) != 0) {
    session_free(s);
    return TB_ENOMEM;
  }
  LIST_PUSH(ss->live, s);
  ss->n_live++;
  ss->n_created++;
  s->ss = ss;
  arm(ss);
  *out = s;
  if (ss->on_event)
    ss->on_event(ss, s, TB__SESSION_CREATED, NULL);
  return 0;
}

int tb__session_restore(tb__sessions_t *ss, const tb__user_t *owner, tb_slice_t id,
                        double created_wall, int expired, json_t *tags,
                        json_t *user_metadata, const char *sdk_version,
                        const char *project_id, tb__session_t **out) {
  if (ss->closing) {
    json_decref(tags);
    json_decref(user_metadata);
    return TB_ECLOSING;
  }
  int rc = 0;
  if (id.len == 0 || id.len >= TB__SESSION_ID_MAX || memchr(id.base, '\0', id.len) != NULL)
    rc = TB_EINVAL;
  else if (get(ss, id.base, id.len) != NULL)
    rc = TB_EEXIST;
  tb__session_t *s = rc == 0 ? calloc(1, sizeof(*s)) : NULL;
  if (s == NULL) {
    json_decref(tags);
    json_decref(user_metadata);
    return rc ? rc : TB_ENOMEM;
  }
  s->tags = json_is_array(tags) ? tags : (json_decref(tags), json_array());
  s->user_metadata = json_is_object(user_metadata)
                         ? user_metadata
                         : (json_decref(user_metadata), json_object());
  if (sdk_version)
    s->sdk_version = tb__strndup(sdk_version, strlen(sdk_version));
  if (project_id)
    s->project_id = tb__strndup(project_id, strlen(project_id));
  if (s->tags == NULL || s->user_metadata == NULL || (sdk_version && !s->sdk_version) ||
      (project_id && !s->project_id)) {
    session_free(s);
    return TB_ENOMEM;
  }
  memcpy(s->id, id.base, id.len);
  s->id[id.len] = '\0';
  s->id_len = id.len;
  s->owner = owner;
  s->created_wall = created_wall;
  s->last_heartbeat_ms = uv_now(ss->loop);
  s->ss = ss;
  if (index_session(ss, s) != 0) {
    session_free(s);
    return TB_ENOMEM;
  }
  if (expired) {
    s->expired = 1;
    s->closed = expired == 2;
    LIST_PUSH(ss->dead, s);
    ss->n_expired++;
    while (ss->n_expired > ss->max_expired)
      session_drop(ss, ss->dead.head);
  } else {
    LIST_PUSH(ss->live, s);
    ss->n_live++;
    arm(ss);
  }
  if (out != NULL)
    *out = s;
  return 0;
}

tb__session_t *tb__session_find(tb__sessions_t *ss, const tb__user_t *owner,
                                tb_slice_t id) {
  if (id.len == 0 || id.len >= TB__SESSION_ID_MAX)
    return NULL;
  tb__session_t *s = get(ss, id.base, id.len);
  return s != NULL && s->owner == owner ? s : NULL;
}

void tb__session_heartbeat(tb__sessions_t *ss, tb__session_t *s) {
  if (s->expired)
    return;
  s->last_heartbeat_ms = uv_now(ss->loop);
  ss->n_heartbeats++;
  /* The freshest heartbeat goes last: the list stays sorted. */
  LIST_REMOVE(ss->live, s);
  LIST_PUSH(ss->live, s);
  arm(ss);
}

void tb__session_close(tb__sessions_t *ss, tb__session_t *s) {
  if (s->expired)
    return;
  s->closed = 1;
  ss->n_closed++;
  tb__info("session %s of %s closed by its client", s->id, s->owner->name);
  retire(ss, s, TB__SESSION_CLOSED);
  drop_and_arm(ss);
}

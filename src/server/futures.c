/*
 * The futures store (see futures.h): the id table, finishing futures,
 * waiters, expiry, the memory bound and tombstones.  The retrieve_future
 * routes that read it are in futures_routes.c.
 */
#include "server/futures.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/list.h"
#include "core/log.h"

struct tb__tombstone_s {
  tb__idmap_link_t link;     /* in tombs_by_id */
  tb__tombstone_t *next;     /* FIFO, oldest first */
  const tb__user_t *owner;
  uint64_t until;
  size_t id_len;
  char id[TB__FUTURE_ID_MAX];
};

/* Bookkeeping a finished future costs beyond its result bytes. */
#define FUTURE_OVERHEAD (sizeof(tb__future_t) + sizeof(tb__result_t))

const char *tb__queue_state_name(tb__queue_state_t s) {
  switch (s) {
    case TB__QUEUE_PAUSED_CAPACITY: return "paused_capacity";
    case TB__QUEUE_PAUSED_RATE_LIMIT: return "paused_rate_limit";
    default: return "active";
  }
}

void tb__result_ref(tb__result_t *r) {
  r->refs++;
}

void tb__result_unref(tb__result_t *r) {
  if (r == NULL || --r->refs > 0)
    return;
  free(r->json);
  free(r->proto);
  free(r);
}

/* ------------------------------------------------------------ table */

static tb__future_t *table_get(const tb__futures_t *fs, const char *id, size_t len) {
  tb__idmap_link_t *l = tb__idmap_find(&fs->by_id, id, len);
  return l != NULL ? TB__IDMAP_ENTRY(l, tb__future_t, link) : NULL;
}

static tb__tombstone_t *tomb_get(const tb__futures_t *fs, const char *id, size_t len) {
  tb__idmap_link_t *l = tb__idmap_find(&fs->tombs_by_id, id, len);
  return l != NULL ? TB__IDMAP_ENTRY(l, tb__tombstone_t, link) : NULL;
}

static void tomb_drop_oldest(tb__futures_t *fs) {
  tb__tombstone_t *t = fs->thead;
  fs->thead = t->next;
  if (fs->thead == NULL)
    fs->ttail = NULL;
  tb__idmap_remove(&fs->tombs_by_id, &t->link);
  fs->n_tombstones--;
  free(t);
}

/* Remembers an expired id.  Without memory the id is simply forgotten:
 * a late poll then gets 404 instead of 410. */
static void tomb_add(tb__futures_t *fs, const tb__future_t *f) {
  if (fs->n_tombstones >= TB__FUTURES_MAX_TOMBSTONES)
    tomb_drop_oldest(fs);
  tb__tombstone_t *t = malloc(sizeof(*t));
  if (t == NULL)
    return;
  memcpy(t->id, f->id, f->id_len);
  t->id_len = f->id_len;
  t->owner = f->owner;
  t->until = uv_now(fs->loop) + fs->opts.tombstone_ms;
  t->next = NULL;
  if (tb__idmap_insert(&fs->tombs_by_id, &t->link, t->id, t->id_len) != 0) {
    free(t);
    return;
  }
  if (fs->ttail)
    fs->ttail->next = t;
  else
    fs->thead = t;
  fs->ttail = t;
  fs->n_tombstones++;
}

/* ------------------------------------------------------------ lists */

#define LIST_PUSH(l, x) TB__LIST_PUSH(l, x, lnext, lprev)
#define LIST_REMOVE(l, x) TB__LIST_REMOVE(l, x, lnext, lprev)

static void future_free(tb__future_t *f) {
  tb__result_unref(f->result);
  free(f->message);
  free(f->queue_reason);
  free(f);
}

/* Drops a finished future, leaving a tombstone. */
static void expire(tb__futures_t *fs, tb__future_t *f, int evicted) {
  if (f->delivered_ms != 0)
    LIST_REMOVE(fs->delivered, f);
  else
    LIST_REMOVE(fs->undelivered, f);
  tb__idmap_remove(&fs->by_id, &f->link);
  fs->bytes -= f->bytes;
  fs->n_finished--;
  if (evicted)
    fs->n_evicted++;
  else
    fs->n_expired++;
  tb__debug("futures: %s %s", evicted ? "evicted" : "expired", f->id);
  tomb_add(fs, f);
  future_free(f);
}

/* ------------------------------------------------------------ sweep */

static void on_sweep(uv_timer_t *t);

static void arm_sweep(tb__futures_t *fs) {
  if (fs->closing)
    return;
  uint64_t due = 0;
  if (fs->delivered.head)
    due = fs->delivered.head->delivered_ms + fs->opts.grace_ms;
  if (fs->undelivered.head) {
    uint64_t d = fs->undelivered.head->finished_ms + fs->opts.ttl_ms;
    due = due == 0 || d < due ? d : due;
  }
  if (fs->thead && (due == 0 || fs->thead->until < due))
    due = fs->thead->until;
  if (due == fs->sweep_due)
    return;
  fs->sweep_due = due;
  if (due == 0) {
    uv_timer_stop(&fs->sweep_timer);
    return;
  }
  uint64_t now = uv_now(fs->loop);
  uv_timer_start(&fs->sweep_timer, on_sweep, due > now ? due - now : 0, 0);
}

void tb__futures_sweep(tb__futures_t *fs) {
  uint64_t now = uv_now(fs->loop);
  while (fs->delivered.head && fs->delivered.head->delivered_ms + fs->opts.grace_ms <= now)
    expire(fs, fs->delivered.head, 0);
  while (fs->undelivered.head && fs->undelivered.head->finished_ms + fs->opts.ttl_ms <= now)
    expire(fs, fs->undelivered.head, 0);
  while (fs->thead && fs->thead->until <= now)
    tomb_drop_oldest(fs);
  arm_sweep(fs);
}

static void on_sweep(uv_timer_t *t) {
  tb__futures_t *fs = t->data;
  fs->sweep_due = 0;
  tb__futures_sweep(fs);
}

/* Above the bound, delivered results go first, then the oldest
 * undelivered; keep is never dropped (a result larger than the whole
 * bound is still delivered once). */
static void enforce_bound(tb__futures_t *fs, tb__future_t *keep) {
  while (fs->bytes > fs->opts.max_bytes) {
    tb__future_t *victim = fs->delivered.head ? fs->delivered.head : fs->undelivered.head;
    if (victim == NULL || victim == keep)
      break;
    expire(fs, victim, 1);
  }
}

/* ------------------------------------------------------------ lifecycle */

int tb__futures_init(uv_loop_t *loop, tb__futures_t *fs, const tb__futures_opts_t *opts) {
  memset(fs, 0, sizeof(*fs));
  fs->loop = loop;
  fs->opts = *opts;
  tb__idgen_init(&fs->ids);  /* zeroed, the id maps are empty */
  uv_timer_init(loop, &fs->poll_timer);
  uv_timer_init(loop, &fs->sweep_timer);
  fs->poll_timer.data = fs;
  fs->sweep_timer.data = fs;
  uv_unref((uv_handle_t *)&fs->poll_timer);
  uv_unref((uv_handle_t *)&fs->sweep_timer);
  fs->open_handles = 2;
  return 0;
}

static void notify(tb__future_t *f) {
  tb__fwaiter_t *w;
  while ((w = f->waiters) != NULL) {
    TB__LIST_REMOVE_HEAD(f->waiters, w, next, prev);
    w->future = NULL;
    w->cb(w, f);
  }
}

static void on_timer_closed(uv_handle_t *h) {
  tb__futures_t *fs = h->data;
  if (--fs->open_handles > 0)
    return;
  for (tb__idmap_link_t *l = tb__idmap_first(&fs->by_id), *next; l != NULL; l = next) {
    next = tb__idmap_next(&fs->by_id, l);
    future_free(TB__IDMAP_ENTRY(l, tb__future_t, link));
  }
  tb__idmap_free(&fs->by_id);
  while (fs->thead)
    tomb_drop_oldest(fs);
  tb__idmap_free(&fs->tombs_by_id);
  fs->n_pending = fs->n_finished = 0;
  memset(fs->n_queue_state, 0, sizeof(fs->n_queue_state));
  fs->bytes = 0;
  if (fs->close_cb)
    fs->close_cb(fs);
}

void tb__futures_close(tb__futures_t *fs, tb__futures_close_cb close_cb) {
  if (fs->closing)
    return;
  fs->closing = 1;
  fs->close_cb = close_cb;
  /* Waiters answer with the future still pending (try_again for a poll). */
  for (tb__idmap_link_t *l = tb__idmap_first(&fs->by_id); l != NULL;
       l = tb__idmap_next(&fs->by_id, l))
    notify(TB__IDMAP_ENTRY(l, tb__future_t, link));
  uv_close((uv_handle_t *)&fs->poll_timer, on_timer_closed);
  uv_close((uv_handle_t *)&fs->sweep_timer, on_timer_closed);
}

/* ------------------------------------------------------------ futures */

int tb__future_create(tb__futures_t *fs, const tb__user_t *owner, tb__future_t **out) {
  if (fs->closing)
    return TB_ECLOSING;
  tb__future_t *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return TB_ENOMEM;
  do
    f->id_len = tb__idgen_next(&fs->ids, "req-", f->id);
  while (table_get(fs, f->id, f->id_len) != NULL || tomb_get(fs, f->id, f->id_len) != NULL);
  f->store = fs;
  f->owner = owner;
  f->created_ms = uv_now(fs->loop);
  if (tb__idmap_insert(&fs->by_id, &f->link, f->id, f->id_len) != 0) {
    free(f);
    return TB_ENOMEM;
  }
  fs->n_pending++;
  fs->n_queue_state[TB__QUEUE_ACTIVE]++;
  fs->n_created++;
  *out = f;
  return 0;
}

int tb__future_set_queue_state(tb__future_t *f, tb__queue_state_t state,
                               const char *reason) {
  char *copy = NULL;
  if (reason != NULL && (copy = tb__strndup(reason, strlen(reason))) == NULL)
    return TB_ENOMEM;
  free(f->queue_reason);
  f->queue_reason = copy;
  if (f->state == TB__FUTURE_PENDING) {
    f->store->n_queue_state[f->queue_state]--;
    f->store->n_queue_state[state]++;
  }
  f->queue_state = state;
  return 0;
}

void tb__future_set_started(tb__future_t *f) {
  f->started_ms = uv_now(f->store->loop);
  f->started_wall = tb__wall_time();
}

static void finish(tb__future_t *f, size_t bytes) {
  tb__futures_t *fs = f->store;
  free(f->queue_reason);
  f->queue_reason = NULL;
  fs->n_queue_state[f->queue_state]--;
  f->queue_state = TB__QUEUE_ACTIVE;
  f->data = NULL;  /* whatever drove it is done with it */
  f->finished_ms = uv_now(fs->loop);
  f->bytes = bytes + FUTURE_OVERHEAD;
  fs->bytes += f->bytes;
  fs->n_pending--;
  fs->n_finished++;
  LIST_PUSH(fs->undelivered, f);
  enforce_bound(fs, f);
  notify(f);
  arm_sweep(fs);
}

static void fail_nomem(tb__future_t *f) {
  static const char msg[] = "out of memory storing the result";
  f->state = TB__FUTURE_FAILED;
  f->category = TB_CATEGORY_SERVER;
  f->message = tb__strndup(msg, sizeof(msg) - 1);
  finish(f, sizeof(msg));
}

int tb__future_resolve(tb__future_t *f, char *json, size_t json_len, char *proto,
                       size_t proto_len) {
  if (f->state != TB__FUTURE_PENDING) {
    tb__log_error("futures: %s finished twice", f->id);
    free(json);
    free(proto);
    return TB_EINVAL;
  }
  tb__result_t *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    free(json);
    free(proto);
    fail_nomem(f);
    return TB_ENOMEM;
  }
  r->refs = 1;
  r->json = json;
  r->json_len = json ? json_len : 0;
  r->proto = proto;
  r->proto_len = proto ? proto_len : 0;
  f->result = r;
  f->state = TB__FUTURE_DONE;
  finish(f, r->json_len + r->proto_len);
  return 0;
}

void tb__future_fail(tb__future_t *f, tb_category_t category, const char *fmt, ...) {
  if (f->state != TB__FUTURE_PENDING) {
    tb__log_error("futures: %s finished twice", f->id);
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  char *msg = tb__vasprintf(fmt, ap);
  va_end(ap);
  if (msg == NULL) {
    fail_nomem(f);
    return;
  }
  tb__futures_t *fs = f->store;
  char *rewritten = fs->opts.rewrite_message != NULL
                        ? fs->opts.rewrite_message(fs->opts.rewrite_data, msg)
                        : NULL;
  if (rewritten != NULL) {
    free(msg);
    msg = rewritten;
  }
  f->state = TB__FUTURE_FAILED;
  f->category = category == TB_CATEGORY_USER ? TB_CATEGORY_USER : TB_CATEGORY_SERVER;
  f->message = msg;
  finish(f, strlen(msg));
}

void tb__future_mark_delivered(tb__future_t *f) {
  if (f->state == TB__FUTURE_PENDING || f->delivered_ms != 0)
    return;
  tb__futures_t *fs = f->store;
  LIST_REMOVE(fs->undelivered, f);
  f->delivered_ms = uv_now(fs->loop);
  LIST_PUSH(fs->delivered, f);
  arm_sweep(fs);
}

void tb__future_wait(tb__future_t *f, tb__fwaiter_t *w, tb__fwaiter_cb cb) {
  w->cb = cb;
  w->future = f;
  TB__LIST_PUSH_HEAD(f->waiters, w, next, prev);
}

void tb__future_unwait(tb__fwaiter_t *w) {
  tb__future_t *f = w->future;
  if (f == NULL)
    return;
  TB__LIST_REMOVE_HEAD(f->waiters, w, next, prev);
  w->future = NULL;
}

tb__lookup_t tb__futures_find(tb__futures_t *fs, const tb__user_t *user,
                              tb_slice_t id, tb__future_t **out) {
  *out = NULL;
  if (id.len == 0 || id.len >= TB__FUTURE_ID_MAX)
    return TB__LOOKUP_UNKNOWN;
  tb__future_t *f = table_get(fs, id.base, id.len);
  if (f != NULL) {
    if (f->owner != user)
      return TB__LOOKUP_UNKNOWN;
    *out = f;
    return TB__LOOKUP_FOUND;
  }
  tb__tombstone_t *t = tomb_get(fs, id.base, id.len);
  if (t != NULL && t->owner == user && t->until > uv_now(fs->loop))
    return TB__LOOKUP_EXPIRED;
  return TB__LOOKUP_UNKNOWN;
}

/*
 * retrieve_future in both dialects, over the futures store.
 *
 * Tinker (POST /api/v1/retrieve_future): a finished future is answered at
 * once -- the bare result (protobuf when the request accepts it and the
 * result has that form), or {"error", "category"} for a failure.  A
 * pending one is held as a long poll: the request waits on the future and
 * in the store's deadline list; whichever comes first, the result or
 * long_poll_ms, answers it, the latter with {"type": "try_again", ...,
 * "queue_state"}.  A client that goes away while held is unlinked at once
 * (on_abort), so nothing answers into freed memory.
 *
 * Tinkerbell (POST /retrieve_future): no holding; 202 {"status":
 * "pending"}, 200 with the result, 500 {"detail": "Job failed: ..."}.
 *
 * Both: unknown ids and other users' ids are 404, expired ids 410.
 */
#include "server/futures.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "core/json_scan.h"
#include "server/internal.h"
#include "server/routes.h"
#include "server/store.h"
#include "wire/future_answer.h"

struct tb__poll_s {
  tb__fwaiter_t w;            /* first: the waiter callback gets &w */
  tb__http_request_t *req;
  tb__futures_t *fs;
  uint64_t deadline;
  int want_proto;
  tb__poll_t *next, *prev;    /* the store's deadline list */
};

/* ------------------------------------------------------------ answers */

/* The answer of a pending future (wire/future_answer.h). */
static void answer_try_again(tb__http_request_t *req, const tb__future_t *f) {
  char when[48];
  tb__wire_try_again_t a = {
    .request_id = f->id,
    .queue_state = tb__queue_state_name(f->queue_state),
    .reason = f->queue_reason,
    .started_at = NULL,
    .queue_position = 0,
  };
  if (f->started_ms != 0) {
    tb__store_iso_time(f->started_wall, when, sizeof(when));
    a.started_at = when;
  } else if (f->store->position != NULL) {
    a.queue_position = f->store->position(f);
  }
  char *json = tb__arena_alloc(&req->arena, tb__wire_try_again_size(&a));
  if (json == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  size_t n = tb__wire_try_again_write(&a, json);
  f->store->n_try_again++;
  tb__server_respond_json(req, 200, json, n);
}

/* {"error": message, "category": ...} plus, for the Tinkerbell dialect,
 * "detail": "Job failed: message". */
void tb__futures_respond_failure(tb__http_request_t *req, int status, const tb__future_t *f,
                                 int with_detail) {
  char *json = tb__arena_alloc(&req->arena, tb__wire_failure_size(f->message));
  if (json == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  size_t n = tb__wire_failure_write(f->message, tb_category_name(f->category), with_detail, json);
  tb__server_respond_json(req, status, json, n);
}

static void answer_tinker(tb__http_request_t *req, tb__future_t *f, int want_proto) {
  switch (f->state) {
    case TB__FUTURE_PENDING:
      answer_try_again(req, f);
      return;
    case TB__FUTURE_DONE:
      tb__future_mark_delivered(f);
      tb__server_respond_result(req, 200, f->result, want_proto);
      return;
    case TB__FUTURE_FAILED:
      tb__future_mark_delivered(f);
      tb__futures_respond_failure(req, 200, f, 0);
      return;
  }
}

/* ------------------------------------------------------------ held polls */

static void poll_unlink(tb__poll_t *p) {
  tb__futures_t *fs = p->fs;
  if (p->prev)
    p->prev->next = p->next;
  else
    fs->phead = p->next;
  if (p->next)
    p->next->prev = p->prev;
  else
    fs->ptail = p->prev;
  p->next = p->prev = NULL;
  fs->n_polls--;
  tb__future_unwait(&p->w);
}

static void arm_poll_timer(tb__futures_t *fs) {
  if (fs->closing)
    return;
  if (fs->phead == NULL) {
    uv_timer_stop(&fs->poll_timer);
    return;
  }
  uint64_t now = uv_now(fs->loop);
  uint64_t due = fs->phead->deadline;
  uv_timer_start(&fs->poll_timer, tb__futures_poll_timeout, due > now ? due - now : 0, 0);
}

/* The future finished, or the store is closing. */
static void on_poll_future(tb__fwaiter_t *w, tb__future_t *f) {
  tb__poll_t *p = (tb__poll_t *)w;
  tb__futures_t *fs = p->fs;
  int was_head = fs->phead == p;
  poll_unlink(p);
  answer_tinker(p->req, f, p->want_proto);
  if (was_head)
    arm_poll_timer(fs);
}

void tb__futures_poll_timeout(uv_timer_t *t) {
  tb__futures_t *fs = t->data;
  uint64_t now = uv_now(fs->loop);
  while (fs->phead != NULL && fs->phead->deadline <= now) {
    tb__poll_t *p = fs->phead;
    tb__future_t *f = p->w.future;
    poll_unlink(p);
    answer_try_again(p->req, f);
  }
  arm_poll_timer(fs);
}

static void on_poll_abort(tb__http_request_t *req, int status) {
  tb__poll_t *p = tb__sreq(req)->data;
  tb__futures_t *fs = p->fs;
  int was_head = fs->phead == p;
  poll_unlink(p);
  if (was_head)
    arm_poll_timer(fs);
  tb__server_release(req);
}

static void hold(tb__http_request_t *req, tb__futures_t *fs, tb__future_t *f,
                 int want_proto) {
  tb__poll_t *p = tb__arena_calloc(&req->arena, 1, sizeof(*p));
  if (p == NULL) {
    answer_try_again(req, f);
    return;
  }
  p->req = req;
  p->fs = fs;
  p->want_proto = want_proto;
  p->deadline = uv_now(fs->loop) + fs->opts.long_poll_ms;
  tb__sreq(req)->data = p;
  req->on_abort = on_poll_abort;
  tb__future_wait(f, &p->w, on_poll_future);
  /* Every poll waits equally long, so appending keeps the list sorted. */
  p->prev = fs->ptail;
  if (fs->ptail)
    fs->ptail->next = p;
  else
    fs->phead = p;
  fs->ptail = p;
  fs->n_polls++;
  if (fs->phead == p)
    arm_poll_timer(fs);
}

/* ------------------------------------------------------------ routes */

/* Reads {"request_id": ...}; answers 400/404/410 itself and returns NULL
 * then. */
/* ------------------------------------------------------------ the body */

typedef struct {
  tb_slice_t id;
  int has_id;
} poll_body_t;

static int poll_member(void *ctx, const tb__jscan_member_t *m) {
  poll_body_t *b = ctx;
  if (tb__slice_eq_str(m->key, "request_id") && m->type == TB_JSCAN_STRING && !b->has_id) {
    for (size_t i = 0; i < m->str.len; i++) {
      char c = m->str.base[i];
      if (!isalnum((unsigned char)c) && c != '-' && c != '_' && c != ':' && c != '.')
        return 1;
    }
    b->id = m->str;
    b->has_id = m->str.len > 0;
    return !b->has_id;
  }
  if (tb__slice_eq_str(m->key, "allow_metadata_only") &&
      (m->type == TB_JSCAN_TRUE || m->type == TB_JSCAN_FALSE))
    return 0;
  return 1;
}

/* Nearly every poll's body is {"request_id": "<id>"}, the SDK's with
 * "allow_metadata_only": true|false after it.  That one shape is read
 * with the flat-object reader the client also uses for try_again answers,
 * without building a document (jansson's allocations were a tenth of a
 * poll's CPU); any other body -- other keys, escapes, errors -- goes
 * through jansson and its error messages.  1 and *id, or 0. */
static int scan_poll_body(tb_slice_t body, tb_slice_t *id) {
  poll_body_t b = { { NULL, 0 }, 0 };
  if (body.len > 512 || !tb__jscan_object(body, poll_member, &b) || !b.has_id)
    return 0;
  *id = b.id;
  return 1;
}

static tb__future_t *lookup(tb__http_request_t *req, json_t **doc, int tinker) {
  tb__server_t *srv = tb__server_from_req(req);
  tb_slice_t id;
  if (!scan_poll_body(req->body, &id)) {
    if (tb__server_parse_body(req, doc) != 0)
      return NULL;
    tb_error_t err = { 0 };
    tb__jctx_t c;
    tb__jctx_init(&c, &err);
    int rc = tb__json_get_string(&c, *doc, "request_id", TB_JSON_REQUIRED, &id);
    if (rc == 0 && tinker) {
      int b;
      rc = tb__json_get_bool(&c, *doc, "allow_metadata_only", TB_JSON_OPTIONAL, &b);
      rc = rc > 0 ? 0 : rc;
    }
    if (rc != 0) {
      tb__server_respond_bad(req, &err);
      tb_error_clear(&err);
      return NULL;
    }
  }
  tb__future_t *f;
  switch (tb__futures_find(&srv->futures, tb__sreq(req)->user, id, &f)) {
    case TB__LOOKUP_FOUND:
      return f;
    case TB__LOOKUP_EXPIRED:
      tb__server_respond_error(req, 410, "request_id %.*s: the result expired",
                               (int)id.len, id.base);
      return NULL;
    default:
      tb__server_respond_error(req, 404, "request_id %.*s: unknown request",
                               (int)(id.len > 80 ? 80 : id.len), id.base);
      return NULL;
  }
}

void tb__futures_route_tinker(tb__http_request_t *req) {
  tb__server_t *srv = tb__server_from_req(req);
  json_t *doc = NULL;
  tb__future_t *f = lookup(req, &doc, 1);
  if (f != NULL) {
    int want_proto = tb__server_accepts_proto(req);
    if (f->state == TB__FUTURE_PENDING && !srv->futures.closing &&
        srv->futures.opts.long_poll_ms > 0)
      hold(req, &srv->futures, f, want_proto);
    else
      answer_tinker(req, f, want_proto);
  }
  json_decref(doc);
}

void tb__futures_route_tinkerbell(tb__http_request_t *req) {
  json_t *doc = NULL;
  tb__future_t *f = lookup(req, &doc, 0);
  json_decref(doc);
  if (f == NULL)
    return;
  switch (f->state) {
    case TB__FUTURE_PENDING:
      tb__server_respond_json(req, 202, "{\"status\":\"pending\"}", 20);
      return;
    case TB__FUTURE_DONE:
      tb__future_mark_delivered(f);
      tb__server_respond_result(req, 200, f->result, tb__server_accepts_proto(req));
      return;
    case TB__FUTURE_FAILED:
      tb__future_mark_delivered(f);
      tb__futures_respond_failure(req, 500, f, 1);
      return;
  }
}

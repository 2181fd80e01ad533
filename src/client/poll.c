/*
 * The long-poll of one server-side future: POST /api/v1/retrieve_future
 * until a result, a terminal failure, the poll deadline, or cancellation.
 * Every wait is a runtime alarm; nothing blocks.
 *
 * What each answer leads to:
 *   200/2xx, protobuf            the result (forward_backward, sample)
 *   {"type":"try_again"}         queue state noted; re-poll at once, or
 *                                after retry_after_ms when given
 *   {"status":"pending"}         backoff min(2^(n-1) * initial, max)
 *   {"status":"complete_metadata"}  re-poll at once without
 *                                allow_metadata_only
 *   {"status":"completed","result"}  the result
 *   {"status":"failed","error"} / {"error","category"}
 *                                category user: fail at once; otherwise
 *                                keep it as the last error and re-poll with
 *                                the pending backoff until the deadline
 *   any other JSON object        the result itself
 *   408, 5xx                     re-poll after a short jittered delay
 *                                (poll_retry_delay_ms * [0.5, 1]); a 408's
 *                                queue state is noted
 *   429, connection errors       backoff min(2^(n-1) * initial, max), a
 *                                429's Retry-After honoured
 *   400 with an empty body       re-poll at once, at most 3 times in a row
 *   410                          TB_EEXPIRED: the promise expired (the
 *                                sampling client resubmits; training
 *                                reports it)
 *   anything else                TB_EHTTP, at once
 * At the deadline the poll fails with the last retried failure, or with
 * TB_ETIMEDOUT (category timeout) when there was none; a long poll in
 * flight is aborted then.
 *
 * Progress, for the stall report: a change of the queue state or its
 * reason, of the server's started_at (the job started) or of its
 * queue_position (a job ahead finished), or the end of the poll.  A
 * "try_again" that says the same as the last one is no progress, nor is a
 * failed or retried poll.  After stall_ms without progress the
 * "future.stalled" event fires once; progress re-arms it.
 *
 * Cost: a pending future holds no HTTP request.  The runtime lends its
 * polls "wires" -- an HTTP request with its headers and body buffer, kept
 * for reuse -- at most max_poll_wires at once, three quarters of the
 * connections, so that submissions always find one free even while
 * every poll is held by a long-polling server.  Polls beyond wait in a
 * FIFO; a poll gives its wire back as soon as its answer is read, so a
 * re-poll goes to the back of the line.  Answers are read with the
 * flat-object reader (core/json_scan.h) and only fall back to jansson
 * for other shapes, so a steady try_again costs no allocation
 * (wire/future_answer.c).
 */
#define _GNU_SOURCE  /* memmem */
#include "client/internal.h"
#include "wire/error_body.h"
#include "wire/future_answer.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/json.h"
#include "core/json_scan.h"

/* QUEUED: waiting for a wire.  HANDLING: an answer is being processed;
 * hooks called meanwhile (the observer, telemetry) may cancel, which
 * takes effect when it is done. */
enum {
  POLL_IDLE = 0,
  POLL_QUEUED,
  POLL_SENDING,
  POLL_WAITING,
  POLL_DEFERRED,
  POLL_HANDLING
};

static void send_poll(tb__client_poll_t *p);
static void send_now(tb__client_poll_t *p);
static void watch_rearm(tb__client_poll_t *p);

tb_queue_state_t tb__queue_state_parse(const char *s, size_t len) {
  while (len > 0 && isspace((unsigned char)*s)) {
    s++;
    len--;
  }
  while (len > 0 && isspace((unsigned char)s[len - 1]))
    len--;
  static const struct { const char *name; tb_queue_state_t st; } names[] = {
    { "active", TB_QUEUE_ACTIVE },
    { "paused_capacity", TB_QUEUE_PAUSED_CAPACITY },
    { "paused_rate_limit", TB_QUEUE_PAUSED_RATE_LIMIT },
  };
  for (size_t i = 0; i < 3; i++)
    if (strlen(names[i].name) == len && strncasecmp(s, names[i].name, len) == 0)
      return names[i].st;
  return TB_QUEUE_UNKNOWN;
}

/* ------------------------------------------------------------ wires */


static void queue_push(tb__rt_t *rt, tb__client_poll_t *p) {
  p->qnext_ = NULL;
  p->qprev_ = rt->pq_tail;
  if (rt->pq_tail != NULL)
    rt->pq_tail->qnext_ = p;
  else
    rt->pq_head = p;
  rt->pq_tail = p;
  p->state_ = POLL_QUEUED;
}

static void queue_remove(tb__rt_t *rt, tb__client_poll_t *p) {
  if (p->qprev_ != NULL)
    p->qprev_->qnext_ = p->qnext_;
  else
    rt->pq_head = p->qnext_;
  if (p->qnext_ != NULL)
    p->qnext_->qprev_ = p->qprev_;
  else
    rt->pq_tail = p->qprev_;
  p->qnext_ = p->qprev_ = NULL;
}

/* Sends the polls waiting for a wire while wires are free. */
static void pump(tb__rt_t *rt) {
  while (rt->pq_head != NULL && rt->n_wires_lent < rt->max_poll_wires) {
    tb__client_poll_t *p = rt->pq_head;
    queue_remove(rt, p);
    send_now(p);
  }
}

/* Gives p's wire back (its answer is read) and lets a waiting poll use it. */
static void wire_release(tb__rt_t *rt, tb__wire_t *w) {
  w->next = rt->wires_free;
  rt->wires_free = w;
  rt->n_wires_lent--;
  pump(rt);
}

static void drop_wire(tb__client_poll_t *p) {
  tb__wire_t *w = p->wire_;
  if (w != NULL) {
    p->wire_ = NULL;
    wire_release(p->rt_, w);
  }
}

/* ------------------------------------------------------------ finishing */

static void finish(tb__client_poll_t *p, int status) {
  tb__rt_t *rt = p->rt_;
  tb__alarm_stop(rt, &p->alarm_);
  tb__alarm_stop(rt, &p->watch_alarm_);
  if (p->state_ == POLL_QUEUED)
    queue_remove(rt, p);
  p->state_ = POLL_IDLE;
  if (status != 0 && p->err.request_id == NULL)
    tb_error_set_request_id(&p->err, p->request_id);
  tb__alarm_unreserve(rt, 2);
  rt->n_busy--;
  /* The result is in the wire's response: lent until the callback is
   * done. */
  tb__wire_t *w = p->wire_;
  p->wire_ = NULL;
  p->cb_(p, status);  /* may free p */
  if (w != NULL)
    wire_release(rt, w);
  tb__rt_check_closed(rt);
}

/* Finishes from an alarm on a later turn (cancel, the deadline while
 * waiting, a send that failed at once). */
static void finish_later(tb__client_poll_t *p, int status) {
  drop_wire(p);
  if (p->state_ == POLL_QUEUED)
    queue_remove(p->rt_, p);
  p->finish_status_ = status;
  p->state_ = POLL_DEFERRED;
  tb__alarm_start(p->rt_, &p->alarm_, 0);
}

static int fail_cancelled(tb__client_poll_t *p) {
  return tb_error_set(&p->err, TB_ECANCELED, TB_CATEGORY_CANCELLED,
                      "polling request %s: cancelled", p->request_id);
}

static int fail_deadline(tb__client_poll_t *p) {
  tb__rt_t *rt = p->rt_;
  uint64_t elapsed = uv_now(rt->loop) - p->started_;
  tb_telemetry_measure_t m[] = { { "elapsed_ms", (double)elapsed },
                                 { "iteration", (double)p->iteration } };
  tb_telemetry_meta_t meta[] = { { "request_id", p->request_id },
                                 { "request_type", p->request_type } };
  tb__rt_telemetry(rt, "future.timeout", m, 2, meta, 2);
  if (p->last_err_.code != 0) {
    tb_error_clear(&p->err);
    p->err = p->last_err_;
    memset(&p->last_err_, 0, sizeof(p->last_err_));
    return p->err.code;
  }
  return tb_error_set(&p->err, TB_ETIMEDOUT, TB_CATEGORY_TIMEOUT,
                      "request %s: no result after %llu ms of polling", p->request_id,
                      (unsigned long long)elapsed);
}

static int slice_is(tb_slice_t s, const char *lit) {
  size_t n = strlen(lit);
  return s.base != NULL && s.len == n && memcmp(s.base, lit, n) == 0;
}

/* ------------------------------------------------------------ progress */

static void emit_error(tb__client_poll_t *p, const char *event, const tb_error_t *e) {
  char st[16];
  snprintf(st, sizeof(st), "%d", e->http_status);
  tb_telemetry_measure_t m[] = {
    { "elapsed_ms", (double)(uv_now(p->rt_->loop) - p->started_) },
    { "iteration", (double)p->iteration },
  };
  tb_telemetry_meta_t meta[] = {
    { "request_id", p->request_id }, { "request_type", p->request_type },
    { "http_status", st }, { "category", tb_category_name(e->category) },
    { "error", tb_error_message(e) },
  };
  tb__rt_telemetry(p->rt_, event, m, 2, meta, 5);
}

static void progressed(tb__client_poll_t *p) {
  p->progress_at_ = uv_now(p->rt_->loop);
  if (p->stalled_) {
    p->stalled_ = 0;
    watch_rearm(p);
  }
}

/* Notes what a try_again (or 408) says of the job: the queue state and
 * its reason (telemetry on a change), started_at and queue_position (the
 * observer hears of any change of the four). */
static void note_queue_state(tb__client_poll_t *p, const tb__wire_future_answer_t *a) {
  tb__rt_t *rt = p->rt_;
  int state_changed = 0;
  tb_queue_state_t prev = (tb_queue_state_t)p->qstate_;
  if (a->has_queue_state) {
    tb_queue_state_t st = tb__queue_state_parse(a->queue_state.base, a->queue_state.len);
    const char *r = p->qreason_;
    int same_reason = (a->reason.base == NULL && r == NULL) ||
                      (a->reason.base != NULL && r != NULL && strlen(r) == a->reason.len &&
                       memcmp(r, a->reason.base, a->reason.len) == 0);
    if (st != prev || !same_reason) {
      char *copy = a->reason.base != NULL ? tb__strndup(a->reason.base, a->reason.len) : NULL;
      if (a->reason.base != NULL && copy == NULL)
        return;  /* out of memory: the change is reported with the next answer */
      free(p->qreason_);
      p->qreason_ = copy;
      p->qstate_ = (uint8_t)st;
      state_changed = 1;
    }
  }
  int job_changed = 0;
  if (a->has_started && a->started_at != p->started_at_) {
    p->started_at_ = a->started_at;
    job_changed = 1;
  }
  if (a->queue_position >= 0 && a->queue_position != p->qpos_) {
    p->qpos_ = a->queue_position;
    job_changed = 1;
  }
  if (!state_changed && !job_changed)
    return;
  progressed(p);
  if (state_changed) {
    tb_telemetry_meta_t meta[] = {
      { "request_id", p->request_id }, { "request_type", p->request_type },
      { "queue_state", tb_queue_state_name((tb_queue_state_t)p->qstate_) },
      { "queue_state_reason", p->qreason_ },
    };
    tb__rt_telemetry(rt, "future.queue_state_change", NULL, 0, meta, 4);
  }
  if (rt->cfg.queue_observer != NULL) {
    tb_queue_state_event_t ev = { rt->cfg.queue_observer_data, p->request_id,
                                  p->request_type ? p->request_type : "",
                                  (tb_queue_state_t)p->qstate_, p->qreason_, prev,
                                  p->started_at_, p->qpos_ };
    tb__loop_frame_t frame;
    tb__loop_enter(&frame, rt->loop);
    rt->cfg.queue_observer(&ev);
    tb__loop_leave(&frame);
  }
}

/* No progress for stall_ms: said once, until progress. */
static void report_stall(tb__client_poll_t *p) {
  tb__rt_t *rt = p->rt_;
  uint64_t now = uv_now(rt->loop);
  p->stalled_ = 1;
  char pos[24] = "", started[48] = "";
  if (p->qpos_ >= 0)
    snprintf(pos, sizeof(pos), "%lld", (long long)p->qpos_);
  if (p->started_at_ > 0) {
    time_t t = (time_t)p->started_at_;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%SZ", &tm);
  }
  tb_telemetry_measure_t m[] = {
    { "waited_s", (double)(now - p->progress_at_) / 1e3 },
    { "elapsed_s", (double)(now - p->started_) / 1e3 },
    { "iteration", (double)p->iteration },
  };
  tb_telemetry_meta_t meta[] = {
    { "request_id", p->request_id },
    { "request_type", p->request_type },
    { "queue_state", tb_queue_state_name((tb_queue_state_t)p->qstate_) },
    { "queue_state_reason", p->qreason_ },
    { "started_at", started[0] ? started : NULL },
    { "queue_position", pos[0] ? pos : NULL },
    { "severity", "WARNING" },
  };
  tb__rt_telemetry(rt, "future.stalled", m, 3, meta, 7);
}

/* The watch alarm fires at the deadline or when a stall is due, whichever
 * comes first. */
static void watch_rearm(tb__client_poll_t *p) {
  tb__rt_t *rt = p->rt_;
  uint64_t due = p->deadline_at_ != 0 ? p->deadline_at_ : UINT64_MAX;
  uint64_t stall = rt->cfg.stall_ms;
  if (!p->stalled_ && stall != TB_STALL_NEVER && p->progress_at_ + stall < due)
    due = p->progress_at_ + stall;
  if (due == UINT64_MAX) {
    tb__alarm_stop(rt, &p->watch_alarm_);
    return;
  }
  uint64_t now = uv_now(rt->loop);
  tb__alarm_start(rt, &p->watch_alarm_, due > now ? due - now : 0);
}

/* ------------------------------------------------------------ decisions */

static uint64_t exp_backoff(unsigned n, uint64_t initial, uint64_t max) {
  uint64_t d = initial;
  for (unsigned k = 1; k < n && d < max; k++)
    d *= 2;
  return d < max ? d : max;
}

static void repoll(tb__client_poll_t *p, uint64_t delay) {
  drop_wire(p);
  if (p->cancelled_) {
    finish(p, fail_cancelled(p));
    return;
  }
  if (delay == 0) {
    send_poll(p);
    return;
  }
  /* Never sleep past the deadline: its alarm ends the poll then. */
  p->state_ = POLL_WAITING;
  tb__alarm_start(p->rt_, &p->alarm_, delay);
}

/* Keeps e as the failure a deadline reports. */
static void keep_last(tb__client_poll_t *p, tb_error_t *e) {
  tb_error_clear(&p->last_err_);
  p->last_err_ = *e;
  memset(e, 0, sizeof(*e));
  tb_error_set_request_id(&p->last_err_, p->request_id);
}

/* A failure reported by the server in a 200 answer. */
static void on_failed(tb__client_poll_t *p, const tb__wire_future_answer_t *a) {
  int user = a->category.base != NULL && a->category.len == 4 &&
             strncasecmp(a->category.base, "user", 4) == 0;
  tb_error_t e = { 0 };
  if (a->error_msg.base != NULL)
    tb_error_set(&e, user ? TB_EUSER : TB_ESERVER, user ? TB_CATEGORY_USER : TB_CATEGORY_SERVER,
                 "%.*s", (int)a->error_msg.len, a->error_msg.base);
  else
    tb_error_set(&e, user ? TB_EUSER : TB_ESERVER, user ? TB_CATEGORY_USER : TB_CATEGORY_SERVER,
                 "the request failed");
  e.http_status = 200;
  tb_error_set_request_id(&e, p->request_id);
  emit_error(p, "future.request_failed", &e);
  if (user) {
    tb_error_clear(&p->err);
    p->err = e;
    finish(p, TB_EUSER);
    return;
  }
  keep_last(p, &e);
  p->n_pending_++;
  repoll(p, exp_backoff(p->n_pending_, p->rt_->cfg.poll_backoff_initial_ms,
                        p->rt_->cfg.poll_backoff_max_ms));
}

static void on_result(tb__client_poll_t *p, const char *body, size_t len, int proto) {
  if (p->cancelled_) {
    finish(p, fail_cancelled(p));
    return;
  }
  p->result_body = body;
  p->result_len = len;
  p->result_proto = proto;
  tb_error_clear(&p->err);
  finish(p, 0);
}

/* A "completed" envelope: its result, dumped (a rare shape, so jansson). */
static void on_completed(tb__client_poll_t *p, const tb__http_response_t *res, json_t *doc) {
  json_t *own = doc == NULL ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
  tb__wire_future_answer_t a;
  tb__wire_future_answer_from_json(&a, doc != NULL ? doc : own);
  const json_t *r = a.result;
  size_t len = 0;
  free(p->result_own_);
  p->result_own_ = r != NULL ? tb__json_dump(r, &len) : NULL;
  json_decref(own);
  if (r != NULL && p->result_own_ == NULL) {
    tb_error_set(&p->err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    finish(p, TB_ENOMEM);
    return;
  }
  on_result(p, p->result_own_ ? p->result_own_ : "null", p->result_own_ ? len : 4, 0);
}

static void on_json_answer(tb__client_poll_t *p, const tb__http_response_t *res) {
  tb__wire_future_answer_t a;
  tb__wire_future_answer_init(&a);
  json_t *doc = NULL;
  tb_slice_t body = { res->body, res->body_len };
  if (!tb__jscan_object(body, tb__wire_future_answer_member, &a)) {
    json_error_t jerr;
    doc = res->body_len > 0 ? json_loadb(res->body, res->body_len, 0, &jerr) : NULL;
    if (!json_is_object(doc)) {
      tb_error_set(&p->err, TB_EJSON, TB_CATEGORY_SERVER,
                   "retrieve_future for %s: the answer is not a JSON object", p->request_id);
      p->err.http_status = res->status;
      emit_error(p, "future.validation_error", &p->err);
      json_decref(doc);
      finish(p, TB_EJSON);
      return;
    }
    tb__wire_future_answer_from_json(&a, doc);
  }
  p->n_empty_400_ = 0;
  if (slice_is(a.type, "try_again")) {
    p->n_pending_ = 0;
    note_queue_state(p, &a);
    json_decref(doc);
    repoll(p, (uint64_t)a.retry_after_ms);
  } else if (slice_is(a.status, "pending")) {
    json_decref(doc);
    p->n_pending_++;
    repoll(p, exp_backoff(p->n_pending_, p->rt_->cfg.poll_backoff_initial_ms,
                          p->rt_->cfg.poll_backoff_max_ms));
  } else if (slice_is(a.status, "complete_metadata")) {
    json_decref(doc);
    p->n_pending_ = 0;
    p->allow_metadata_only_ = 0;
    repoll(p, 0);
  } else if (slice_is(a.status, "completed")) {
    on_completed(p, res, doc);
    json_decref(doc);
  } else if (slice_is(a.status, "failed") || a.has_error) {
    on_failed(p, &a);
    json_decref(doc);
  } else {
    json_decref(doc);
    on_result(p, res->body, res->body_len, 0);
  }
}

static int body_blank(const tb__http_response_t *res) {
  for (size_t i = 0; i < res->body_len; i++)
    if (!isspace((unsigned char)res->body[i]))
      return 0;
  return 1;
}

static void on_http_answer(tb__client_poll_t *p, const tb__http_response_t *res) {
  const tb__config_t *cfg = &p->rt_->cfg;
  int s = res->status;
  if (s != 429)
    p->n_conn_errors_ = 0;
  if (s >= 200 && s < 300) {
    const tb__http_header_t *ct = tb__http_response_header(res, "content-type");
    if (ct != NULL && memmem(ct->value.base, ct->value.len, "application/x-protobuf", 22)) {
      on_result(p, res->body, res->body_len, 1);
      return;
    }
    on_json_answer(p, res);
    return;
  }
  tb_error_t e = { 0 };
  tb__error_from_response(res, &e);
  tb_error_set_request_id(&e, p->request_id);
  if (s == 400 && body_blank(res) && p->n_empty_400_ < 3) {
    /* A proxy's empty 400: nothing from the server, try again. */
    p->n_empty_400_++;
    emit_error(p, "future.api_error", &e);
    keep_last(p, &e);
    repoll(p, 0);
    return;
  }
  p->n_empty_400_ = 0;
  p->n_pending_ = 0;
  if (s == 408 || s >= 500) {
    if (s == 408 && res->body_len > 0) {
      json_t *doc = json_loadb(res->body, res->body_len, 0, NULL);
      if (json_is_object(doc)) {
        tb__wire_future_answer_t a;
        tb__wire_future_answer_from_json(&a, doc);
        note_queue_state(p, &a);
      }
      json_decref(doc);
    }
    emit_error(p, "future.api_error", &e);
    keep_last(p, &e);
    repoll(p, (uint64_t)((double)cfg->poll_retry_delay_ms * tb__rt_jitter(p->rt_, 0.5, 1.0)));
    return;
  }
  if (s == 429) {
    emit_error(p, "future.api_error", &e);
    keep_last(p, &e);
    p->n_conn_errors_++;
    int64_t ra = tb__retry_after_ms(res, cfg->retry_after_max_ms);
    repoll(p, ra >= 0 ? (uint64_t)ra
                      : exp_backoff(p->n_conn_errors_, cfg->poll_error_backoff_initial_ms,
                                    cfg->poll_error_backoff_max_ms));
    return;
  }
  if (s == 410) {
    /* The server's category when it gave one, else server. */
    tb_category_t cat = TB_CATEGORY_SERVER;
    json_t *doc = res->body_len > 0 ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    tb__wire_error_body_t b;
    tb__wire_error_body_from_json(doc, &b);
    const char *c = b.category;
    if (c != NULL && strcasecmp(c, "user") == 0)
      cat = TB_CATEGORY_USER;
    json_decref(doc);
    tb_error_clear(&e);
    tb_error_set(&e, TB_EEXPIRED, cat,
                 "Promise expired for request %s; submit a new request.", p->request_id);
    e.http_status = 410;
    tb_error_set_request_id(&e, p->request_id);
    emit_error(p, "future.api_error", &e);
    tb_error_clear(&p->err);
    p->err = e;
    finish(p, TB_EEXPIRED);
    return;
  }
  emit_error(p, "future.api_error", &e);
  tb_error_clear(&p->err);
  p->err = e;
  finish(p, TB_EHTTP);
}

/* ------------------------------------------------------------ I/O */

static void on_http(tb__http_client_req_t *req, int status) {
  tb__client_poll_t *p = req->data;
  p->state_ = POLL_HANDLING;
  if (p->cancelled_) {
    finish(p, fail_cancelled(p));
    return;
  }
  if (p->timed_out_) {
    finish(p, fail_deadline(p));
    return;
  }
  if (status == 0) {
    on_http_answer(p, &req->response);
    return;
  }
  tb_error_t e = { 0 };
  tb__http_client_req_error(req, status, &e);
  tb_error_set_request_id(&e, p->request_id);
  if (status == TB_EINVAL || status == TB_EURL || status == TB_EUNSUPPORTED ||
      status == TB_ETOOLARGE) {
    tb_error_clear(&p->err);
    p->err = e;
    finish(p, status);
    return;
  }
  tb_telemetry_meta_t meta[] = { { "request_id", p->request_id },
                                 { "request_type", p->request_type },
                                 { "error", tb_error_message(&e) } };
  tb_telemetry_measure_t m[] = { { "iteration", (double)p->iteration } };
  tb__rt_telemetry(p->rt_, "future.connection_error", m, 1, meta, 3);
  keep_last(p, &e);
  p->n_conn_errors_++;
  repoll(p, exp_backoff(p->n_conn_errors_, p->rt_->cfg.poll_error_backoff_initial_ms,
                        p->rt_->cfg.poll_error_backoff_max_ms));
}

static void set_header(tb__http_header_t *h, const char *name, const char *value) {
  h->name = (tb_slice_t){ name, strlen(name) };
  h->value = (tb_slice_t){ value, strlen(value) };
}


/* Sends p on a wire, which the caller knows is free to lend. */
static void send_now(tb__client_poll_t *p) {
  tb__rt_t *rt = p->rt_;
  tb__wire_t *w = rt->wires_free;
  if (w != NULL) {
    rt->wires_free = w->next;
  } else if ((w = calloc(1, sizeof(*w))) != NULL) {
    rt->n_wires++;
  } else {
    tb_error_set(&p->err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    finish_later(p, TB_ENOMEM);
    return;
  }
  rt->n_wires_lent++;
  p->wire_ = w;
  tb__wire_future_request_t fr = { p->request_id, p->allow_metadata_only_ };
  tb__buf_reset(&w->body);
  if (tb__wire_future_request_to_buf(&fr, &w->body) != 0) {
    tb_error_set(&p->err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    finish_later(p, TB_ENOMEM);
    return;
  }
  size_t n = 0;
  set_header(&w->headers[n++], "Content-Type", "application/json");
  set_header(&w->headers[n++], "Accept",
             p->accept_proto ? "application/x-protobuf, application/json"
                             : "application/json");
  if (rt->cfg.api_key != NULL)
    set_header(&w->headers[n++], "X-API-Key", rt->cfg.api_key);
  snprintf(w->iter, sizeof(w->iter), "%u", p->iteration);
  set_header(&w->headers[n++], "X-Tinker-Request-Iteration", w->iter);
  if (p->request_type != NULL && p->request_type[0] != '\0')
    set_header(&w->headers[n++], "X-Tinker-Request-Type", p->request_type);
  if (p->iteration == 0 && p->submit_rtt_ms > 0) {
    snprintf(w->rtt, sizeof(w->rtt), "%.3f", (double)p->submit_rtt_ms / 1000.0);
    set_header(&w->headers[n++], "X-Tinker-Create-Promise-Roundtrip-Time", w->rtt);
  }
  tb__http_client_req_t *h = &w->http;
  h->data = p;
  h->method = "POST";
  h->url = (tb_slice_t){ rt->poll_url, strlen(rt->poll_url) };
  h->headers = w->headers;
  h->n_headers = n;
  w->body_buf = uv_buf_init(w->body.base, (unsigned)w->body.len);
  h->body = &w->body_buf;
  h->n_body = 1;
  h->timeout_ms = rt->cfg.poll_http_timeout_ms;
  p->iteration++;
  p->state_ = POLL_SENDING;
  int rc = tb__http_client_send(&rt->http, h, on_http);
  if (rc != 0) {
    tb_error_set(&p->err, rc, rc == TB_ECLOSING ? TB_CATEGORY_CANCELLED : TB_CATEGORY_USER,
                 "%s", h->message[0] ? h->message : tb_strerror(rc));
    finish_later(p, rc);
  }
}

/* Sends p now, or queues it behind the polls waiting for a wire. */
static void send_poll(tb__client_poll_t *p) {
  tb__rt_t *rt = p->rt_;
  if (rt->pq_head != NULL || rt->n_wires_lent >= rt->max_poll_wires)
    queue_push(rt, p);
  else
    send_now(p);
}

static void on_alarm(tb__alarm_t *a) {
  tb__client_poll_t *p = a->data;
  if (p->state_ == POLL_DEFERRED) {
    finish(p, p->finish_status_);
    return;
  }
  send_poll(p);
}

static void on_watch(tb__alarm_t *a) {
  tb__client_poll_t *p = a->data;
  uint64_t now = uv_now(p->rt_->loop);
  if (p->deadline_at_ != 0 && now >= p->deadline_at_) {
    p->timed_out_ = 1;
    if (p->state_ == POLL_SENDING) {
      tb__http_client_req_cancel(&p->wire_->http);  /* on_http finishes */
    } else if (p->state_ == POLL_WAITING || p->state_ == POLL_QUEUED) {
      finish(p, fail_deadline(p));
    }
    return;
  }
  uint64_t stall = p->rt_->cfg.stall_ms;
  if (!p->stalled_ && stall != TB_STALL_NEVER && now >= p->progress_at_ + stall &&
      p->state_ != POLL_DEFERRED)
    report_stall(p);
  watch_rearm(p);
}

int tb__client_poll_start(tb__rt_t *rt, tb__client_poll_t *p, const char *request_id,
                          tb__client_poll_cb cb) {
  if (cb == NULL || request_id == NULL || request_id[0] == '\0')
    return TB_EINVAL;
  if (rt->closing)
    return TB_ECLOSING;
  if (p->state_ != POLL_IDLE)
    return TB_EBUSY;
  free(p->request_id);
  p->request_id = strdup(request_id);
  if (p->request_id == NULL)
    return TB_ENOMEM;
  p->rt_ = rt;
  p->cb_ = cb;
  p->wire_ = NULL;
  p->iteration = 0;
  p->n_pending_ = p->n_conn_errors_ = p->n_empty_400_ = 0;
  p->qstate_ = TB_QUEUE_ACTIVE;
  free(p->qreason_);
  p->qreason_ = NULL;
  p->started_at_ = 0;
  p->qpos_ = -1;
  p->allow_metadata_only_ = 1;
  p->cancelled_ = p->timed_out_ = p->stalled_ = 0;
  p->result_body = NULL;
  p->result_len = 0;
  p->result_proto = 0;
  tb_error_clear(&p->err);
  tb_error_clear(&p->last_err_);
  tb__alarm_init(&p->alarm_, on_alarm, p);
  tb__alarm_init(&p->watch_alarm_, on_watch, p);
  if (tb__alarm_reserve(rt, 2) != 0)  /* the next poll and the watch */
    return TB_ENOMEM;
  p->started_ = p->progress_at_ = uv_now(rt->loop);
  uint64_t deadline = p->deadline_ms != 0 ? p->deadline_ms : rt->cfg.poll_deadline_ms;
  p->deadline_at_ = deadline != 0 ? p->started_ + deadline : 0;
  watch_rearm(p);
  rt->n_busy++;
  send_poll(p);
  return 0;
}

int tb__client_poll_cancel(tb__client_poll_t *p) {
  if (p->state_ == POLL_IDLE)
    return TB_EINVAL;
  if (p->cancelled_)
    return 0;
  p->cancelled_ = 1;
  if (p->state_ == POLL_SENDING) {
    tb__http_client_req_cancel(&p->wire_->http);
  } else if (p->state_ == POLL_WAITING || p->state_ == POLL_QUEUED) {
    tb__alarm_stop(p->rt_, &p->alarm_);
    fail_cancelled(p);
    finish_later(p, TB_ECANCELED);
  }
  return 0;
}

void tb__client_poll_free(tb__client_poll_t *p) {
  free(p->request_id);
  free(p->qreason_);
  free(p->result_own_);
  tb_error_clear(&p->err);
  tb_error_clear(&p->last_err_);
  p->request_id = p->qreason_ = p->result_own_ = NULL;
  p->result_body = NULL;
}

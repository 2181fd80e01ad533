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
 */
#define _GNU_SOURCE  /* memmem */
#include "client/internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/json.h"

/* HANDLING: an answer is being processed; hooks called meanwhile (the
 * observer, telemetry) may cancel, which takes effect when it is done. */
enum { POLL_IDLE = 0, POLL_SENDING, POLL_WAITING, POLL_DEFERRED, POLL_HANDLING };

static void send_poll(tb__client_poll_t *p);

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

/* ------------------------------------------------------------ finishing */

static void finish(tb__client_poll_t *p, int status) {
  tb__rt_t *rt = p->rt_;
  tb__alarm_stop(rt, &p->alarm_);
  tb__alarm_stop(rt, &p->deadline_alarm_);
  p->state_ = POLL_IDLE;
  if (status != 0 && p->err.request_id == NULL)
    tb_error_set_request_id(&p->err, p->request_id);
  tb__alarm_unreserve(rt, 2);
  rt->n_busy--;
  p->cb_(p, status);  /* may free p */
  tb__rt_check_closed(rt);
}

/* Finishes from an alarm on a later turn (cancel, the deadline while
 * waiting, a send that failed at once). */
static void finish_later(tb__client_poll_t *p, int status) {
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

/* ------------------------------------------------------------ telemetry */

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

static void note_queue_state(tb__client_poll_t *p, const json_t *doc) {
  const char *qs = json_string_value(json_object_get(doc, "queue_state"));
  if (qs == NULL)
    return;
  tb_queue_state_t st = tb__queue_state_parse(qs, strlen(qs));
  const char *reason = json_string_value(json_object_get(doc, "queue_state_reason"));
  int same_reason = (reason == NULL && p->qreason_ == NULL) ||
                    (reason != NULL && p->qreason_ != NULL && strcmp(reason, p->qreason_) == 0);
  if (st == p->qstate_ && same_reason)
    return;
  tb_queue_state_t prev = p->qstate_;
  char *r = reason != NULL ? strdup(reason) : NULL;
  if (reason != NULL && r == NULL)
    return;  /* out of memory: the change is reported with the next answer */
  free(p->qreason_);
  p->qreason_ = r;
  p->qstate_ = st;
  tb__rt_t *rt = p->rt_;
  tb_telemetry_meta_t meta[] = {
    { "request_id", p->request_id }, { "request_type", p->request_type },
    { "queue_state", tb_queue_state_name(st) }, { "queue_state_reason", r },
  };
  tb__rt_telemetry(rt, "future.queue_state_change", NULL, 0, meta, 4);
  if (rt->cfg.queue_observer != NULL) {
    tb_queue_state_event_t ev = { rt->cfg.queue_observer_data, p->request_id,
                                  p->request_type ? p->request_type : "", st, r, prev };
    tb__loop_frame_t frame;
    tb__loop_enter(&frame, rt->loop);
    rt->cfg.queue_observer(&ev);
    tb__loop_leave(&frame);
  }
}

/* ------------------------------------------------------------ decisions */

static uint64_t exp_backoff(unsigned n, uint64_t initial, uint64_t max) {
  uint64_t d = initial;
  for (unsigned k = 1; k < n && d < max; k++)
    d *= 2;
  return d < max ? d : max;
}

static void repoll(tb__client_poll_t *p, uint64_t delay) {
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
static void on_failed(tb__client_poll_t *p, const json_t *error, const json_t *doc) {
  const char *msg = json_string_value(error);
  if (msg == NULL && json_is_object(error))
    msg = json_string_value(json_object_get(error, "message"));
  const char *cat = json_string_value(json_object_get(doc, "category"));
  if (cat == NULL && json_is_object(error))
    cat = json_string_value(json_object_get(error, "category"));
  int user = cat != NULL && strcasecmp(cat, "user") == 0;
  tb_error_t e = { 0 };
  tb_error_set(&e, user ? TB_EUSER : TB_ESERVER,
               user ? TB_CATEGORY_USER : TB_CATEGORY_SERVER, "%s",
               msg != NULL ? msg : "the request failed");
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

static void on_json_answer(tb__client_poll_t *p, const tb_http_response_t *res) {
  json_error_t jerr;
  json_t *doc = res->body_len > 0 ? json_loadb(res->body, res->body_len, 0, &jerr) : NULL;
  if (!json_is_object(doc)) {
    tb_error_set(&p->err, TB_EJSON, TB_CATEGORY_SERVER,
                 "retrieve_future for %s: the answer is not a JSON object", p->request_id);
    p->err.http_status = res->status;
    emit_error(p, "future.validation_error", &p->err);
    json_decref(doc);
    finish(p, TB_EJSON);
    return;
  }
  const char *type = json_string_value(json_object_get(doc, "type"));
  const char *status = json_string_value(json_object_get(doc, "status"));
  json_t *error = json_object_get(doc, "error");
  p->n_empty_400_ = 0;
  if (type != NULL && strcmp(type, "try_again") == 0) {
    p->n_pending_ = 0;
    note_queue_state(p, doc);
    json_t *ra = json_object_get(doc, "retry_after_ms");
    uint64_t delay = json_is_integer(ra) && json_integer_value(ra) > 0
                         ? (uint64_t)json_integer_value(ra) : 0;
    json_decref(doc);
    repoll(p, delay);
  } else if (status != NULL && strcmp(status, "pending") == 0) {
    json_decref(doc);
    p->n_pending_++;
    repoll(p, exp_backoff(p->n_pending_, p->rt_->cfg.poll_backoff_initial_ms,
                          p->rt_->cfg.poll_backoff_max_ms));
  } else if (status != NULL && strcmp(status, "complete_metadata") == 0) {
    json_decref(doc);
    p->n_pending_ = 0;
    p->allow_metadata_only_ = 0;
    repoll(p, 0);
  } else if (status != NULL && strcmp(status, "completed") == 0) {
    json_t *r = json_object_get(doc, "result");
    size_t len = 0;
    free(p->result_own_);
    p->result_own_ = r != NULL ? tb__json_dump(r, &len) : NULL;
    json_decref(doc);
    if (r != NULL && p->result_own_ == NULL) {
      tb_error_set(&p->err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
      finish(p, TB_ENOMEM);
      return;
    }
    on_result(p, p->result_own_ ? p->result_own_ : "null", p->result_own_ ? len : 4, 0);
  } else if (status != NULL && strcmp(status, "failed") == 0) {
    on_failed(p, error, doc);
    json_decref(doc);
  } else if (error != NULL && !json_is_null(error)) {
    on_failed(p, error, doc);
    json_decref(doc);
  } else {
    json_decref(doc);
    on_result(p, res->body, res->body_len, 0);
  }
}

static int body_blank(const tb_http_response_t *res) {
  for (size_t i = 0; i < res->body_len; i++)
    if (!isspace((unsigned char)res->body[i]))
      return 0;
  return 1;
}

static void on_http_answer(tb__client_poll_t *p, const tb_http_response_t *res) {
  const tb__config_t *cfg = &p->rt_->cfg;
  int s = res->status;
  if (s != 429)
    p->n_conn_errors_ = 0;
  if (s >= 200 && s < 300) {
    const tb_http_header_t *ct = tb__http_response_header(res, "content-type");
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
      if (json_is_object(doc))
        note_queue_state(p, doc);
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
    const char *c = json_string_value(json_object_get(doc, "category"));
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

static void on_http(tb_http_client_req_t *req, int status) {
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

static void set_header(tb_http_header_t *h, const char *name, const char *value) {
  h->name = (tb_slice_t){ name, strlen(name) };
  h->value = (tb_slice_t){ value, strlen(value) };
}

static void send_poll(tb__client_poll_t *p) {
  tb__rt_t *rt = p->rt_;
  json_t *body = json_pack("{s:s, s:b}", "request_id", p->request_id,
                           "allow_metadata_only", p->allow_metadata_only_);
  size_t len = 0;
  char *text = body != NULL ? tb__json_dump(body, &len) : NULL;
  json_decref(body);
  tb__buf_reset(&p->req_body_);
  if (text == NULL || tb__buf_append(&p->req_body_, text, len) != 0) {
    free(text);
    tb_error_set(&p->err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    finish_later(p, TB_ENOMEM);
    return;
  }
  free(text);
  size_t n = 0;
  set_header(&p->headers_[n++], "Content-Type", "application/json");
  set_header(&p->headers_[n++], "Accept",
             p->accept_proto ? "application/x-protobuf, application/json"
                             : "application/json");
  if (rt->cfg.api_key != NULL)
    set_header(&p->headers_[n++], "X-API-Key", rt->cfg.api_key);
  snprintf(p->iter_buf_, sizeof(p->iter_buf_), "%u", p->iteration);
  set_header(&p->headers_[n++], "X-Tinker-Request-Iteration", p->iter_buf_);
  if (p->request_type != NULL && p->request_type[0] != '\0')
    set_header(&p->headers_[n++], "X-Tinker-Request-Type", p->request_type);
  if (p->iteration == 0 && p->submit_rtt_ms > 0) {
    snprintf(p->rtt_buf_, sizeof(p->rtt_buf_), "%.3f", (double)p->submit_rtt_ms / 1000.0);
    set_header(&p->headers_[n++], "X-Tinker-Create-Promise-Roundtrip-Time", p->rtt_buf_);
  }
  tb_http_client_req_t *h = &p->http_;
  h->data = p;
  h->method = "POST";
  h->url = (tb_slice_t){ p->url_, strlen(p->url_) };
  h->headers = p->headers_;
  h->n_headers = n;
  p->body_buf_ = uv_buf_init(p->req_body_.base, (unsigned)p->req_body_.len);
  h->body = &p->body_buf_;
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

static void on_alarm(tb__alarm_t *a) {
  tb__client_poll_t *p = a->data;
  if (p->state_ == POLL_DEFERRED) {
    finish(p, p->finish_status_);
    return;
  }
  send_poll(p);
}

static void on_deadline(tb__alarm_t *a) {
  tb__client_poll_t *p = a->data;
  p->timed_out_ = 1;
  if (p->state_ == POLL_SENDING) {
    tb__http_client_req_cancel(&p->http_);  /* on_http finishes */
  } else if (p->state_ == POLL_WAITING) {
    finish(p, fail_deadline(p));
  }
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
  free(p->url_);
  p->request_id = strdup(request_id);
  p->url_ = tb__rt_url(rt, "/api/v1/retrieve_future");
  if (p->request_id == NULL || p->url_ == NULL)
    return TB_ENOMEM;
  p->rt_ = rt;
  p->cb_ = cb;
  p->iteration = 0;
  p->n_pending_ = p->n_conn_errors_ = p->n_empty_400_ = 0;
  p->qstate_ = TB_QUEUE_ACTIVE;
  free(p->qreason_);
  p->qreason_ = NULL;
  p->allow_metadata_only_ = 1;
  p->cancelled_ = p->timed_out_ = 0;
  p->result_body = NULL;
  p->result_len = 0;
  p->result_proto = 0;
  tb_error_clear(&p->err);
  tb_error_clear(&p->last_err_);
  tb__alarm_init(&p->alarm_, on_alarm, p);
  tb__alarm_init(&p->deadline_alarm_, on_deadline, p);
  if (tb__alarm_reserve(rt, 2) != 0)  /* the next poll and the deadline */
    return TB_ENOMEM;
  p->started_ = uv_now(rt->loop);
  uint64_t deadline = p->deadline_ms != 0 ? p->deadline_ms : rt->cfg.poll_deadline_ms;
  if (deadline != 0)
    tb__alarm_start(rt, &p->deadline_alarm_, deadline);
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
    tb__http_client_req_cancel(&p->http_);
  } else if (p->state_ == POLL_WAITING) {
    tb__alarm_stop(p->rt_, &p->alarm_);
    fail_cancelled(p);
    finish_later(p, TB_ECANCELED);
  }
  return 0;
}

void tb__client_poll_free(tb__client_poll_t *p) {
  tb__http_client_req_free(&p->http_);
  free(p->request_id);
  free(p->url_);
  free(p->qreason_);
  free(p->result_own_);
  tb__buf_free(&p->req_body_);
  tb_error_clear(&p->err);
  tb_error_clear(&p->last_err_);
  p->request_id = p->url_ = p->qreason_ = p->result_own_ = NULL;
  p->result_body = NULL;
}

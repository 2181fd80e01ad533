/*
 * API requests with the submission retries of the Tinker SDK (its
 * "Stainless" layer): up to max_retries more attempts on 408, 409, 429,
 * 5xx and connection errors, "x-should-retry" obeyed, Retry-After /
 * retry-after-ms honoured up to retry_after_max_ms, otherwise
 * min(base * 2^k, max) * a jitter in [0.75, 1].  Every attempt carries the
 * same X-Idempotency-Key (non-GET) and its attempt number in
 * X-Stainless-Retry-Count.  Waits between attempts are runtime alarms.
 *
 * Non-goals: the higher retry layer of the SDK (execute_with_retries),
 * which repeats a whole call with a fresh key; callers that want it call
 * again.
 */
#define _GNU_SOURCE  /* timegm, strptime */
#include "client/internal.h"

#include <ctype.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "wire/error_body.h"

enum { CALL_IDLE = 0, CALL_SENDING, CALL_WAITING, CALL_DEFERRED };

static void attempt(tb__call_t *call);

/* ------------------------------------------------------------ policy */

static int header_is(const tb__http_header_t *h, const char *v) {
  return h != NULL && tb__slice_case_eq_str(h->value, v);
}

int tb__call_should_retry_status(const tb__http_response_t *res) {
  const tb__http_header_t *h = tb__http_response_header(res, "x-should-retry");
  if (header_is(h, "true"))
    return 1;
  if (header_is(h, "false"))
    return 0;
  int s = res->status;
  return s == 408 || s == 409 || s == 429 || s >= 500;
}

/* A number of the header's value, or -1 when it is not one. */
static double header_number(const tb__http_header_t *h) {
  if (h == NULL || h->value.len == 0 || h->value.len > 31)
    return -1;
  char tmp[32], *end;
  memcpy(tmp, h->value.base, h->value.len);
  tmp[h->value.len] = '\0';
  double v = strtod(tmp, &end);
  while (*end == ' ')
    end++;
  return *end == '\0' && end != tmp && v == v ? v : -1;
}

int64_t tb__retry_after_ms(const tb__http_response_t *res, uint64_t max_ms) {
  double ms = header_number(tb__http_response_header(res, "retry-after-ms"));
  if (ms < 0) {
    const tb__http_header_t *h = tb__http_response_header(res, "retry-after");
    double s = header_number(h);
    if (s >= 0) {
      ms = s * 1000.0;
    } else if (h != NULL && h->value.len < 64) {
      /* An HTTP date: "Wed, 21 Oct 2015 07:28:00 GMT". */
      char tmp[64];
      struct tm tm;
      memcpy(tmp, h->value.base, h->value.len);
      tmp[h->value.len] = '\0';
      memset(&tm, 0, sizeof(tm));
      const char *end = strptime(tmp, "%a, %d %b %Y %H:%M:%S GMT", &tm);
      if (end != NULL && *end == '\0')
        ms = difftime(timegm(&tm), time(NULL)) * 1000.0;
    }
  }
  if (!(ms > 0) || ms > (double)max_ms)
    return -1;
  return (int64_t)ms;
}

int tb__error_from_response(const tb__http_response_t *res, tb_error_t *err) {
  int st = res->status;
  tb_category_t cat = st >= 500 || st == 408 || st == 429 ? TB_CATEGORY_SERVER
                                                          : TB_CATEGORY_USER;
  json_t *doc = NULL;
  if (res->body_len > 0)
    doc = json_loadb(res->body, res->body_len, 0, NULL);
  tb__wire_error_body_t b;
  tb__wire_error_body_from_json(doc, &b);
  const char *msg = b.message, *rid = b.request_id, *c = b.category;
  if (c != NULL && strcasecmp(c, "user") == 0)
    cat = TB_CATEGORY_USER;
  else if (c != NULL && strcasecmp(c, "server") == 0)
    cat = TB_CATEGORY_SERVER;
  if (msg != NULL)
    tb_error_set(err, TB_EHTTP, cat, "HTTP %d: %s", st, msg);
  else if (res->body_len > 0 && doc == NULL)
    tb_error_set(err, TB_EHTTP, cat, "HTTP %d: %.*s", st,
                 (int)(res->body_len > 200 ? 200 : res->body_len), res->body);
  else
    tb_error_set(err, TB_EHTTP, cat, "HTTP %d %s", st, tb__http_status_text(st));
  if (err != NULL) {
    err->http_status = st;
    if (rid != NULL)
      tb_error_set_request_id(err, rid);
  }
  json_decref(doc);
  return TB_EHTTP;
}

/* Failures of the transport worth another attempt: the request may not
 * have reached the server, or its answer was lost. */
static int retryable_network(int status) {
  return status == TB_ECONNREFUSED || status == TB_ECONNRESET ||
         status == TB_ECLOSED || status == TB_ETIMEDOUT ||
         status == TB_ECONNECT_TIMEOUT || status == TB_EDNS || status == TB_EPROTO ||
         status == UV_EPIPE || status == UV_ENETUNREACH || status == UV_EHOSTUNREACH ||
         status == UV_ECONNABORTED || status == UV_EAI_AGAIN;
}

/* ------------------------------------------------------------ the call */

static void telemetry_stop(tb__call_t *call, int status) {
  tb__rt_t *rt = call->rt_;
  char st[16];
  snprintf(st, sizeof(st), "%d", call->http_status);
  tb_telemetry_measure_t m[] = {
    { "duration_ms", (double)(uv_now(rt->loop) - call->started_) },
    { "retries", (double)call->retries },
  };
  tb_telemetry_meta_t meta[] = {
    { "method", call->method }, { "path", call->path },
    { "result", status == 0 ? "ok" : "error" }, { "http_status", st },
  };
  tb__rt_telemetry(rt, "http.request.stop", m, 2, meta, 4);
  if (status != 0 && status != TB_ECANCELED) {
    tb_telemetry_meta_t em[] = {
      { "method", call->method }, { "path", call->path },
      { "error", tb_error_message(&call->err) },
      { "category", tb_category_name(call->err.category) },
      { "http_status", st },
    };
    tb__rt_telemetry(rt, "http.request.error", m, 2, em, 5);
  }
}

static void finish(tb__call_t *call, int status) {
  tb__rt_t *rt = call->rt_;
  call->state_ = CALL_IDLE;
  if (status == TB_ECANCELED || (status != 0 && call->cancelled_)) {
    status = TB_ECANCELED;
    tb_error_set(&call->err, TB_ECANCELED, TB_CATEGORY_CANCELLED,
                 "%s %s: cancelled", call->method, call->path);
  }
  telemetry_stop(call, status);
  tb__alarm_unreserve(rt, 1);
  rt->n_busy--;
  call->cb_(call, status);  /* may free call */
  tb__rt_check_closed(rt);
}

static void on_alarm(tb__alarm_t *a) {
  tb__call_t *call = a->data;
  if (call->state_ == CALL_DEFERRED || call->cancelled_) {
    finish(call, call->cancelled_ ? TB_ECANCELED : call->err.code);
    return;
  }
  call->retries++;
  attempt(call);
}

static void schedule_retry(tb__call_t *call, uint64_t delay, const char *reason) {
  tb__rt_t *rt = call->rt_;
  tb_telemetry_measure_t m[] = { { "attempt", (double)(call->retries + 1) },
                                 { "delay_ms", (double)delay } };
  tb_telemetry_meta_t meta[] = { { "method", call->method }, { "path", call->path },
                                 { "reason", reason } };
  tb__rt_telemetry(rt, "http.retry", m, 2, meta, 3);
  call->state_ = CALL_WAITING;
  if (tb__alarm_start(rt, &call->alarm_, delay) != 0) {
    tb_error_set(&call->err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    finish(call, TB_ENOMEM);
  }
}

static uint64_t backoff(tb__call_t *call) {
  const tb__config_t *c = &call->rt_->cfg;
  double d = (double)c->retry_base_ms;
  for (unsigned k = 0; k < call->retries && d < (double)c->retry_max_ms; k++)
    d *= 2;
  if (d > (double)c->retry_max_ms)
    d = (double)c->retry_max_ms;
  return (uint64_t)(d * tb__rt_jitter(call->rt_, 0.75, 1.0));
}

static unsigned max_retries(const tb__call_t *call) {
  return call->max_retries < 0 ? call->rt_->cfg.max_retries : (unsigned)call->max_retries;
}

static void on_http(tb__http_client_req_t *req, int status) {
  tb__call_t *call = req->data;
  if (call->cancelled_) {
    finish(call, TB_ECANCELED);
    return;
  }
  if (status == 0) {
    const tb__http_response_t *res = &req->response;
    call->http_status = res->status;
    if (res->status >= 200 && res->status < 300) {
      tb_error_clear(&call->err);
      finish(call, 0);
      return;
    }
    tb__error_from_response(res, &call->err);
    if (call->retries < max_retries(call) && tb__call_should_retry_status(res)) {
      int64_t ra = tb__retry_after_ms(res, call->rt_->cfg.retry_after_max_ms);
      char reason[16];
      snprintf(reason, sizeof(reason), "http %d", res->status);
      schedule_retry(call, ra >= 0 ? (uint64_t)ra : backoff(call), reason);
      return;
    }
    finish(call, TB_EHTTP);
    return;
  }
  tb__http_client_req_error(req, status, &call->err);
  call->http_status = 0;
  if (call->retries < max_retries(call) && retryable_network(status)) {
    schedule_retry(call, backoff(call), tb_err_name(status));
    return;
  }
  finish(call, status);
}

static void attempt(tb__call_t *call) {
  tb__rt_t *rt = call->rt_;
  int n = snprintf(call->retry_count_, sizeof(call->retry_count_), "%u", call->retries);
  call->all_headers_[call->retry_header_].value.len = (size_t)n;  /* "9" -> "10" */
  tb__http_client_req_t *h = call->http;
  h->data = call;
  h->method = call->method;
  h->url = (tb_slice_t){ call->url_, strlen(call->url_) };
  h->headers = call->all_headers_;
  h->n_headers = call->n_headers_;
  h->body = call->body.len > 0 ? &call->body_buf_ : NULL;
  h->n_body = call->body.len > 0 ? 1 : 0;
  h->timeout_ms = call->timeout_ms != 0 ? call->timeout_ms : rt->cfg.http_timeout_ms;
  call->state_ = CALL_SENDING;
  int rc = tb__http_client_send(&rt->http, h, on_http);
  if (rc != 0) {
    /* The callback of a call always runs on a later turn. */
    tb_error_set(&call->err, rc, rc == TB_ECLOSING ? TB_CATEGORY_CANCELLED : TB_CATEGORY_USER,
                 "%s", h->message[0] ? h->message : tb_strerror(rc));
    call->state_ = CALL_DEFERRED;
    if (tb__alarm_start(rt, &call->alarm_, 0) != 0)
      finish(call, rc);
  }
}

static void set_header(tb__http_header_t *h, const char *name, const char *value) {
  h->name = (tb_slice_t){ name, strlen(name) };
  h->value = (tb_slice_t){ value, strlen(value) };
}

int tb__call_start(tb__rt_t *rt, tb__call_t *call, tb__call_cb cb) {
  if (cb == NULL || call->path == NULL)
    return TB_EINVAL;
  if (rt->closing)
    return TB_ECLOSING;
  if (call->state_ != CALL_IDLE)
    return TB_EBUSY;
  if (call->method == NULL)
    call->method = "POST";
  free(call->url_);
  free(call->all_headers_);
  call->all_headers_ = NULL;
  call->url_ = tb__rt_url(rt, call->path);
  call->all_headers_ = calloc(8 + call->n_extra, sizeof(tb__http_header_t));
  if (call->http == NULL)
    call->http = calloc(1, sizeof(*call->http));
  if (call->url_ == NULL || call->all_headers_ == NULL || call->http == NULL)
    return TB_ENOMEM;
  call->rt_ = rt;
  call->cb_ = cb;
  call->retries = 0;
  call->http_status = 0;
  call->cancelled_ = 0;
  tb_error_clear(&call->err);
  tb__alarm_init(&call->alarm_, on_alarm, call);
  size_t n = 0;
  tb__http_header_t *hs = call->all_headers_;
  set_header(&hs[n++], "Accept", call->accept ? call->accept : "application/json");
  if (call->body.len > 0)
    set_header(&hs[n++], "Content-Type",
               call->content_type ? call->content_type : "application/json");
  if (rt->cfg.api_key != NULL)
    set_header(&hs[n++], "X-API-Key", rt->cfg.api_key);
  if (strcmp(call->method, "GET") != 0) {
    memcpy(call->idem_, "tinkerbell-retry-", 17);
    tb__rt_random_hex(rt, call->idem_ + 17, 16);
    set_header(&hs[n++], "X-Idempotency-Key", call->idem_);
  }
  call->retry_count_[0] = '0';
  call->retry_count_[1] = '\0';
  call->retry_header_ = n;
  set_header(&hs[n++], "X-Stainless-Retry-Count", call->retry_count_);
  for (size_t i = 0; i < call->n_extra; i++)
    hs[n++] = call->extra[i];
  call->n_headers_ = n;
  call->body_buf_ = uv_buf_init((char *)call->body.base, (unsigned)call->body.len);
  if (tb__alarm_reserve(rt, 1) != 0)
    return TB_ENOMEM;
  call->started_ = uv_now(rt->loop);
  rt->n_busy++;
  tb_telemetry_measure_t m[] = { { "attempt", 0 } };
  tb_telemetry_meta_t meta[] = { { "method", call->method }, { "path", call->path } };
  tb__rt_telemetry(rt, "http.request.start", m, 1, meta, 2);
  attempt(call);
  return 0;
}

int tb__call_cancel(tb__call_t *call) {
  if (call->state_ == CALL_IDLE)
    return TB_EINVAL;
  if (call->cancelled_)
    return 0;
  call->cancelled_ = 1;
  if (call->state_ == CALL_SENDING) {
    /* The HTTP callback follows (with UV_ECANCELED, or with the status it
     * was already due with); it sees cancelled_. */
    tb__http_client_req_cancel(call->http);
  } else if (call->state_ == CALL_WAITING) {
    call->state_ = CALL_DEFERRED;
    if (tb__alarm_start(call->rt_, &call->alarm_, 0) != 0)
      finish(call, TB_ECANCELED);
  }
  return 0;
}

void tb__call_free(tb__call_t *call) {
  if (call->http != NULL) {
    tb__http_client_req_free(call->http);
    free(call->http);
    call->http = NULL;
  }
  free(call->url_);
  free(call->all_headers_);
  call->url_ = NULL;
  call->all_headers_ = NULL;
  tb_error_clear(&call->err);
}

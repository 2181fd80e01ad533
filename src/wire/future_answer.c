/*
 * One answer of retrieve_future read into a tb__wire_future_answer_t, and
 * the server's pending and failed answers written (see future_answer.h);
 * what an answer leads to is client/poll.c's.
 */
#include "wire/future_answer.h"

#include "wire/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void tb__wire_future_answer_init(tb__wire_future_answer_t *a) {
  memset(a, 0, sizeof(*a));
  a->queue_position = -1;
}

/* "2026-12-06T09:56:51.808Z" (an offset other than Z is taken as UTC) as
 * seconds since the epoch; 0 when unreadable. */
static double parse_time(tb_slice_t s) {
  char buf[48];
  if (s.base == NULL || s.len == 0 || s.len >= sizeof(buf))
    return 0;
  memcpy(buf, s.base, s.len);
  buf[s.len] = '\0';
  struct tm tm;
  memset(&tm, 0, sizeof(tm));
  int n = 0;
  if (sscanf(buf, "%4d-%2d-%2d%*[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
             &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  double frac = 0;
  if (buf[n] == '.')
    frac = strtod(buf + n, NULL);
  time_t t = timegm(&tm);
  return t > 0 ? (double)t + frac : 0;
}

int tb__wire_future_answer_member(void *ctx, const tb__jscan_member_t *m) {
  tb__wire_future_answer_t *a = ctx;
  int str = m->type == TB_JSCAN_STRING;
  if (tb__slice_eq_str(m->key, "type")) {
    a->type = str ? m->str : (tb_slice_t){ NULL, 0 };
  } else if (tb__slice_eq_str(m->key, "status")) {
    a->status = str ? m->str : (tb_slice_t){ NULL, 0 };
  } else if (tb__slice_eq_str(m->key, "error")) {
    a->has_error = m->type != TB_JSCAN_NULL;
    a->error_msg = str ? m->str : (tb_slice_t){ NULL, 0 };
  } else if (tb__slice_eq_str(m->key, "category")) {
    a->category = str ? m->str : (tb_slice_t){ NULL, 0 };
  } else if (tb__slice_eq_str(m->key, "queue_state")) {
    a->has_queue_state = str;
    a->queue_state = m->str;
  } else if (tb__slice_eq_str(m->key, "queue_state_reason")) {
    a->reason = str ? m->str : (tb_slice_t){ NULL, 0 };
  } else if (tb__slice_eq_str(m->key, "started_at")) {
    a->has_started = 1;
    a->started_at = str ? parse_time(m->str)
                        : m->type == TB_JSCAN_NUMBER && m->num > 0 ? m->num : 0;
  } else if (tb__slice_eq_str(m->key, "queue_position")) {
    if (m->type == TB_JSCAN_NUMBER && m->num >= 0 && m->num < 1e15)
      a->queue_position = (int64_t)m->num;
  } else if (tb__slice_eq_str(m->key, "retry_after_ms")) {
    if (m->type == TB_JSCAN_NUMBER && m->num > 0 && m->num < 1e12 &&
        memchr(m->str.base, '.', m->str.len) == NULL)
      a->retry_after_ms = (int64_t)m->num;
  }
  return 0;  /* other members: a result's, read later by its decoder */
}

static tb_slice_t doc_string(const json_t *v) {
  const char *s = json_string_value(v);
  return s != NULL ? (tb_slice_t){ s, json_string_length(v) } : (tb_slice_t){ NULL, 0 };
}

void tb__wire_future_answer_from_json(tb__wire_future_answer_t *a, const json_t *doc) {
  tb__wire_future_answer_init(a);
  a->type = doc_string(json_object_get(doc, "type"));
  a->status = doc_string(json_object_get(doc, "status"));
  const json_t *error = json_object_get(doc, "error");
  a->has_error = error != NULL && !json_is_null(error);
  a->error_msg = doc_string(error);
  if (a->error_msg.base == NULL && json_is_object(error))
    a->error_msg = doc_string(json_object_get(error, "message"));
  a->category = doc_string(json_object_get(doc, "category"));
  if (a->category.base == NULL && json_is_object(error))
    a->category = doc_string(json_object_get(error, "category"));
  a->queue_state = doc_string(json_object_get(doc, "queue_state"));
  a->has_queue_state = a->queue_state.base != NULL;
  a->reason = doc_string(json_object_get(doc, "queue_state_reason"));
  const json_t *st = json_object_get(doc, "started_at");
  a->has_started = st != NULL;
  if (json_is_string(st))
    a->started_at = parse_time(doc_string(st));
  else if (json_is_number(st) && json_number_value(st) > 0)
    a->started_at = json_number_value(st);
  const json_t *qp = json_object_get(doc, "queue_position");
  if (json_is_integer(qp) && json_integer_value(qp) >= 0)
    a->queue_position = json_integer_value(qp);
  const json_t *ra = json_object_get(doc, "retry_after_ms");
  if (json_is_integer(ra) && json_integer_value(ra) > 0)
    a->retry_after_ms = json_integer_value(ra);
  a->result = json_object_get(doc, "result");
}

int tb__wire_future_request_to_buf(const tb__wire_future_request_t *r, tb__buf_t *b) {
  size_t n = strlen(r->request_id);
  int rc = tb__buf_append_str(b, "{\"request_id\":\"");
  rc = rc ? rc : tb__buf_reserve(b, 6 * n + 1);
  if (rc == 0)  /* escaped in place: ids need no escaping in practice */
    b->len += tb__json_escape(b->base + b->len, r->request_id, n);
  rc = rc ? rc : tb__buf_append_str(b, "\",\"allow_metadata_only\":");
  return rc ? rc : tb__buf_append_str(b, r->allow_metadata_only ? "true}" : "false}");
}

int tb__wire_future_request_from_json(tb__jctx_t *c, const json_t *v,
                                      tb__wire_future_request_t *out) {
  tb_slice_t id;
  out->allow_metadata_only = 0;
  int rc = tb__json_get_string(c, v, "request_id", TB_JSON_REQUIRED, &id);
  out->request_id = rc == 0 ? id.base : NULL;
  rc = rc < 0 ? rc : tb__wire_opt_bool(c, v, "allow_metadata_only", 0,
                                       &out->allow_metadata_only);
  return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------ writing */

/* Escaping writes at most 6 bytes for an input byte (\u00XX). */
#define ESCAPED_MAX(n) (6 * (n))

size_t tb__wire_try_again_size(const tb__wire_try_again_t *a) {
  return 160 + strlen(a->request_id) + strlen(a->queue_state) +
         (a->reason ? ESCAPED_MAX(strlen(a->reason)) : 0) +
         (a->started_at ? strlen(a->started_at) : 0);
}

size_t tb__wire_try_again_write(const tb__wire_try_again_t *a, char *dst) {
  char *p = dst;
  p += sprintf(p, "{\"type\":\"try_again\",\"request_id\":\"%s\",\"queue_state\":\"%s\"",
               a->request_id, a->queue_state);
  if (a->reason != NULL) {
    p += sprintf(p, ",\"queue_state_reason\":\"");
    p += tb__json_escape(p, a->reason, strlen(a->reason));
    *p++ = '"';
  }
  if (a->started_at != NULL)
    p += sprintf(p, ",\"started_at\":\"%s\"", a->started_at);
  else
    p += sprintf(p, ",\"started_at\":null");
  p += sprintf(p, ",\"queue_position\":%zu}", a->queue_position);
  return (size_t)(p - dst);
}

size_t tb__wire_failure_size(const char *message) {
  return 96 + 2 * ESCAPED_MAX(strlen(message));
}

size_t tb__wire_failure_write(const char *message, const char *category, int with_detail,
                              char *dst) {
  size_t ml = strlen(message);
  char *p = dst;
  *p++ = '{';
  if (with_detail) {
    p += sprintf(p, "\"detail\":\"Job failed: ");
    p += tb__json_escape(p, message, ml);
    p += sprintf(p, "\",");
  }
  p += sprintf(p, "\"error\":\"");
  p += tb__json_escape(p, message, ml);
  p += sprintf(p, "\",\"category\":\"%s\"}", category);
  return (size_t)(p - dst);
}

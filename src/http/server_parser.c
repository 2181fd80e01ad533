/*
 * Request-parsing glue over llhttp (see server_parser.h).
 *
 * Every llhttp callback appends to the current message or closes a span.
 * llhttp 8 reports the end of the URL, of each header name and of each
 * value (on_*_complete), so a span is simply [span_start, head.len) at that
 * moment, however many reads the bytes came in.  The parser pauses at the
 * end of each message so that the owner sees requests one at a time and
 * can stop reading (pipelining back-pressure) between any two of them.
 */
#include "http/server_parser.h"

#include <string.h>
#include <strings.h>

/* Bodies are grown rather than reserved up front past this size, so a
 * client that announces 64 MiB and sends nothing costs nothing. */
#define TB__BODY_PRERESERVE ((size_t)1 << 20)

void tb__http_msg_init(tb__http_msg_t *m) {
  memset(m, 0, offsetof(tb__http_msg_t, hdr));
  tb__buf_init(&m->head);
  tb__buf_init(&m->body);
}

void tb__http_msg_clear(tb__http_msg_t *m, size_t keep_cap) {
  tb__buf_t head = m->head, body = m->body;
  if (head.cap > keep_cap)
    tb__buf_free(&head);
  if (body.cap > keep_cap)
    tb__buf_free(&body);
  head.len = 0;
  body.len = 0;
  memset(m, 0, offsetof(tb__http_msg_t, hdr));
  m->head = head;
  m->body = body;
}

void tb__http_msg_free(tb__http_msg_t *m) {
  tb__buf_free(&m->head);
  tb__buf_free(&m->body);
  tb__http_msg_init(m);
}

void tb__http_msg_headers(const tb__http_msg_t *m, tb__http_header_t *out) {
  for (size_t i = 0; i < m->n_headers; i++) {
    const tb__http_hdr_span_t *s = &m->hdr[i];
    out[i].name.base = m->head.base + s->name_off;
    out[i].name.len = s->name_len;
    out[i].value.base = m->head.base + s->value_off;
    out[i].value.len = s->value_len;
  }
}

static tb__http_parser_t *parser_of(llhttp_t *ll) {
  return (tb__http_parser_t *)ll->data;
}

/* Records the error that ends the connection; the first one wins. */
static int fail(tb__http_parser_t *p, int status, const char *reason) {
  if (p->status == 0) {
    p->status = status;
    p->reason = reason;
  }
  return -1;
}

static int on_message_begin(llhttp_t *ll) {
  tb__http_parser_t *p = parser_of(ll);
  tb__http_msg_t *m = p->cbs->begin(p);
  if (m == NULL)
    return fail(p, 503, "out of memory");
  p->msg = m;
  p->span_start = 0;
  p->in_trailers = 0;
  return 0;
}

static int append_head(tb__http_parser_t *p, const char *at, size_t len) {
  if (tb__buf_append(&p->msg->head, at, len) != 0)
    return fail(p, 503, "out of memory");
  return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len) {
  tb__http_parser_t *p = parser_of(ll);
  if (p->msg->head.len + len > TB_HTTP_MAX_URL_BYTES)
    return fail(p, 414, "request URL too long");
  return append_head(p, at, len);
}

static int on_url_complete(llhttp_t *ll) {
  tb__http_parser_t *p = parser_of(ll);
  p->msg->url_len = p->msg->head.len;
  p->span_start = p->msg->head.len;
  return 0;
}

/* Header names and values (and trailers, which are only counted). */
static int on_header_bytes(llhttp_t *ll, const char *at, size_t len) {
  tb__http_parser_t *p = parser_of(ll);
  tb__http_msg_t *m = p->msg;
  m->header_bytes += len;
  if (m->header_bytes > TB_HTTP_MAX_HEADER_BYTES)
    return fail(p, 431, "request header fields too large");
  if (p->in_trailers)
    return 0;
  return append_head(p, at, len);
}

static int on_header_field_complete(llhttp_t *ll) {
  tb__http_parser_t *p = parser_of(ll);
  tb__http_msg_t *m = p->msg;
  if (p->in_trailers)
    return 0;
  if (m->n_headers == TB_HTTP_MAX_HEADERS)
    return fail(p, 431, "too many header fields");
  m->hdr[m->n_headers].name_off = p->span_start;
  m->hdr[m->n_headers].name_len = m->head.len - p->span_start;
  p->span_start = m->head.len;
  return 0;
}

static int on_header_value_complete(llhttp_t *ll) {
  tb__http_parser_t *p = parser_of(ll);
  tb__http_msg_t *m = p->msg;
  /* ": " and CRLF count towards the header block too. */
  m->header_bytes += 4;
  if (m->header_bytes > TB_HTTP_MAX_HEADER_BYTES)
    return fail(p, 431, "request header fields too large");
  if (p->in_trailers)
    return 0;
  size_t len = m->head.len - p->span_start;
  /* llhttp drops leading whitespace; trailing whitespace is ours to drop. */
  while (len > 0 && (m->head.base[p->span_start + len - 1] == ' ' ||
                     m->head.base[p->span_start + len - 1] == '\t'))
    len--;
  m->hdr[m->n_headers].value_off = p->span_start;
  m->hdr[m->n_headers].value_len = len;
  m->n_headers++;
  p->span_start = m->head.len;
  return 0;
}

static int on_headers_complete(llhttp_t *ll) {
  tb__http_parser_t *p = parser_of(ll);
  tb__http_msg_t *m = p->msg;
  m->method = (uint8_t)ll->method;
  m->http_major = ll->http_major;
  m->http_minor = ll->http_minor;
  m->chunked = (ll->flags & F_CHUNKED) != 0;
  m->has_content_length = (ll->flags & F_CONTENT_LENGTH) != 0;
  m->content_length = m->has_content_length ? ll->content_length : 0;
  m->upgrade = ll->upgrade || ll->method == HTTP_CONNECT;
  for (size_t i = 0; i < m->n_headers; i++) {
    const tb__http_hdr_span_t *s = &m->hdr[i];
    if (s->name_len == 6 && strncasecmp(m->head.base + s->name_off, "expect", 6) == 0 &&
        s->value_len == 12 &&
        strncasecmp(m->head.base + s->value_off, "100-continue", 12) == 0)
      m->expect_continue = 1;
  }
  if (m->content_length > p->max_body)
    return fail(p, 413, "request body too large");
  m->head_complete = 1;
  p->in_trailers = 1;
  /* Whether the connection may live on, as far as the head tells; an
   * answer given at the head needs it. */
  m->keep_alive = llhttp_should_keep_alive(ll) != 0;
  if (p->cbs->head != NULL && p->cbs->head(p, m) == TB__HTTP_HEAD_ANSWERED) {
    /* Answered: a body still to come is not read.  Without one the
     * message simply completes. */
    if (m->content_length > 0 || m->chunked) {
      p->answered = 1;
      return -1;
    }
    return 0;
  }
  if (m->content_length > 0) {
    size_t want = m->content_length < TB__BODY_PRERESERVE
                      ? (size_t)m->content_length
                      : TB__BODY_PRERESERVE;
    if (tb__buf_reserve(&m->body, want) != 0)
      return fail(p, 503, "out of memory");
  }
  return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len) {
  tb__http_parser_t *p = parser_of(ll);
  tb__http_msg_t *m = p->msg;
  if (len > p->max_body - m->body.len)
    return fail(p, 413, "request body too large");
  int status = p->cbs->body != NULL ? p->cbs->body(p, m, len) : 0;
  if (status != 0)
    return fail(p, status, status == 503 ? "request bodies hold too much memory; retry later"
                                         : "request body refused");
  if (tb__buf_append(&m->body, at, len) != 0)
    return fail(p, 503, "out of memory");
  return 0;
}

static int on_message_complete(llhttp_t *ll) {
  tb__http_parser_t *p = parser_of(ll);
  tb__http_msg_t *m = p->msg;
  m->keep_alive = llhttp_should_keep_alive(ll) != 0;
  m->complete = 1;
  p->completed = m;
  p->msg = NULL;
  /* Hand the request over before parsing the next one. */
  return HPE_PAUSED;
}

static const llhttp_settings_t tb__parser_settings = {
  .on_message_begin = on_message_begin,
  .on_url = on_url,
  .on_url_complete = on_url_complete,
  .on_header_field = on_header_bytes,
  .on_header_field_complete = on_header_field_complete,
  .on_header_value = on_header_bytes,
  .on_header_value_complete = on_header_value_complete,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

void tb__http_parser_init(tb__http_parser_t *p, const tb__http_parser_cbs_t *cbs,
                          size_t max_body) {
  memset(p, 0, sizeof(*p));
  p->cbs = cbs;
  p->max_body = max_body ? max_body : TB_HTTP_DEFAULT_MAX_BODY;
  llhttp_init(&p->ll, HTTP_REQUEST, &tb__parser_settings);
  p->ll.data = p;
}

int tb__http_parser_execute(tb__http_parser_t *p, const char *data, size_t len,
                            size_t *consumed) {
  *consumed = 0;
  if (p->status != 0 || p->answered)
    return TB_EPROTO;
  p->completed = NULL;
  llhttp_errno_t err = llhttp_execute(&p->ll, data, len);
  const char *pos = llhttp_get_error_pos(&p->ll);
  switch (err) {
    case HPE_OK:
      *consumed = len;
      return TB__HTTP_PARSE_MORE;
    case HPE_PAUSED:
      *consumed = pos != NULL ? (size_t)(pos - data) : len;
      llhttp_resume(&p->ll);
      return TB__HTTP_PARSE_MESSAGE;
    case HPE_PAUSED_UPGRADE:
      /* The request itself is complete; what follows is not HTTP, so the
       * parser stops here for good and the owner closes after answering. */
      *consumed = pos != NULL ? (size_t)(pos - data) : len;
      fail(p, 400, "protocol upgrade not supported");
      if (p->completed != NULL) {
        p->completed->upgrade = 1;
        return TB__HTTP_PARSE_MESSAGE;
      }
      return TB_EPROTO;
    default:
      *consumed = pos != NULL && pos >= data ? (size_t)(pos - data) : 0;
      if (p->answered && p->status == 0)
        return TB__HTTP_PARSE_ANSWERED;
      if (p->status == 0) {
        /* A malformed request: llhttp's reason is static text too. */
        p->status = 400;
        p->reason = "malformed request";
      }
      return TB_EPROTO;
  }
}

/*
 * The HTTP/1.1 client's requests: building the request head, the exchange
 * on a connection, response parsing with llhttp, redirects, timeouts,
 * cancellation and completion (see client.h).  The connection pool --
 * origins, DNS, connecting, idle connections -- is in pool.c; the two
 * share the internal declarations at the end of client.h.
 *
 * A request moves QUEUED (in its origin's queue) -> CONNECTING (a new
 * connection is being made for it) or SENT (its head is written on a
 * connection and the response is being read) -> back to IDLE when its
 * callback runs.  Completions that are decided outside a loop callback of
 * the request's own (cancel, close, failures found while dispatching) go
 * through DEFERRED and run from a zero-delay timer, so no user callback
 * ever runs inside a call the user made.
 */
#include "http/client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define INLINE_BODY_MAX (16u * 1024u) /* smaller bodies join the head */

static const llhttp_settings_t settings; /* set up below */

/* ------------------------------------------------------------- messages */

void tb__http_req_set_message(tb__http_client_req_t *req, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(req->message, sizeof(req->message), fmt, ap);
  va_end(ap);
}

/* ------------------------------------------------------------ building */

static int is_tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

static int valid_token(const char *s, size_t n) {
  if (n == 0)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_tchar(s[i]))
      return 0;
  return 1;
}

static int valid_value(tb_slice_t v) {
  for (size_t i = 0; i < v.len; i++) {
    unsigned char c = (unsigned char)v.base[i];
    if (c == '\r' || c == '\n' || c == '\0')
      return 0;
  }
  return 1;
}

static const char *method_of(const tb__http_client_req_t *req) {
  return req->method ? req->method : "GET";
}

/* Checks what the caller gave before anything is built, so that a bad
 * request is refused by send() and never half sent. */
static int validate_input(tb__http_client_req_t *req) {
  const char *m = method_of(req);
  if (!valid_token(m, strlen(m))) {
    tb__http_req_set_message(req, "invalid method");
    return TB_EINVAL;
  }
  for (size_t i = 0; i < req->n_headers; i++) {
    const tb__http_header_t *h = &req->headers[i];
    if (h->name.base == NULL || !valid_token(h->name.base, h->name.len) ||
        (h->value.len && h->value.base == NULL) || !valid_value(h->value)) {
      tb__http_req_set_message(req, "invalid header %zu", i);
      return TB_EINVAL;
    }
    if (tb__slice_case_eq_str(h->name, "content-length") ||
        tb__slice_case_eq_str(h->name, "connection") ||
        tb__slice_case_eq_str(h->name, "transfer-encoding")) {
      tb__http_req_set_message(req, "header %.*s is set by the client",
                               (int)h->name.len, h->name.base);
      return TB_EINVAL;
    }
  }
  if (req->n_body > 0 && req->body == NULL) {
    tb__http_req_set_message(req, "n_body without body");
    return TB_EINVAL;
  }
  return 0;
}

/* Copies the URL into the request and parses it there. */
static int take_url(tb__http_client_req_t *req, const char *s, size_t n) {
  tb__buf_reset(&req->url_buf_);
  if (tb__buf_append(&req->url_buf_, s, n) != 0)
    return TB_ENOMEM;
  int rc = tb__url_parse(&req->url_, req->url_buf_.base, req->url_buf_.len);
  if (rc != 0) {
    tb__http_req_set_message(req, "invalid URL \"%.*s\"",
                             (int)(n > 100 ? 100 : n), s ? s : "");
    return rc;
  }
  if (req->url_.tls && !tb__http_pool_has_tls(req->client_)) {
    tb__http_req_set_message(req, "https needs a TLS transport, and the "
                             "client has none");
    return TB_EUNSUPPORTED;
  }
  return 0;
}

static int has_header(const tb__http_client_req_t *req, const char *name) {
  return tb__http_find_header(req->headers, req->n_headers, name) != NULL;
}

/* The request head: request line, Host, User-Agent, Content-Length,
 * Connection, the caller's headers, and a small body appended so that
 * the whole request is one buffer. */
static int build_head(tb__http_client_req_t *req) {
  tb__buf_t *b = &req->head_;
  tb__http_client_t *c = req->client_;
  const char *m = method_of(req);
  int rc = 0;
  tb__buf_reset(b);
  rc |= tb__buf_append_str(b, m);
  rc |= tb__buf_append(b, " ", 1);
  rc |= tb__url_append_target(&req->url_, b);
  rc |= tb__buf_append(b, " HTTP/1.1\r\n", 11);
  if (!has_header(req, "host")) {
    rc |= tb__buf_append(b, "Host: ", 6);
    rc |= tb__url_append_authority(&req->url_, b);
    rc |= tb__buf_append(b, "\r\n", 2);
  }
  if (!has_header(req, "user-agent") && c->user_agent_[0] != '\0')
    rc |= tb__buf_printf(b, "User-Agent: %s\r\n", c->user_agent_);
  if (req->body_total_ > 0 || strcmp(m, "POST") == 0 ||
      strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0)
    rc |= tb__buf_printf(b, "Content-Length: %zu\r\n", req->body_total_);
  rc |= tb__buf_append(b, "Connection: keep-alive\r\n", 24);
  for (size_t i = 0; i < req->n_headers; i++) {
    const tb__http_header_t *h = &req->headers[i];
    rc |= tb__buf_append(b, h->name.base, h->name.len);
    rc |= tb__buf_append(b, ": ", 2);
    rc |= tb__buf_append(b, h->value.base, h->value.len);
    rc |= tb__buf_append(b, "\r\n", 2);
  }
  rc |= tb__buf_append(b, "\r\n", 2);
  req->body_inline_ = req->body_total_ <= INLINE_BODY_MAX;
  if (req->body_inline_)
    for (unsigned i = 0; i < req->n_body; i++)
      rc |= tb__buf_append(b, req->body[i].base, req->body[i].len);
  return rc ? TB_ENOMEM : 0;
}

static void reset_response(tb__http_client_req_t *req) {
  memset(&req->response, 0, sizeof(req->response));
  tb__buf_reset(&req->resp_strs_);
  tb__buf_reset(&req->resp_body_);
  req->got_bytes_ = 0;
  req->in_field_ = 0;
  req->head_done_ = 0;
}

/* ------------------------------------------------------------- sending */

void tb__http_client_req_init(tb__http_client_req_t *req) {
  memset(req, 0, sizeof(*req));
}

void tb__http_client_req_free(tb__http_client_req_t *req) {
  if (req->state_ != TB__REQ_IDLE)
    return; /* in flight: the client still uses these buffers */
  tb__buf_free(&req->url_buf_);
  tb__buf_free(&req->scratch_);
  tb__buf_free(&req->head_);
  tb__buf_free(&req->resp_strs_);
  tb__buf_free(&req->resp_body_);
  free(req->spans_);
  free(req->resp_headers_);
  req->spans_ = NULL;
  req->resp_headers_ = NULL;
  req->hdr_cap_ = 0;
  memset(&req->response, 0, sizeof(req->response));
  memset(&req->url_, 0, sizeof(req->url_));
}

int tb__http_client_send(tb__http_client_t *c, tb__http_client_req_t *req,
                         tb__http_client_req_cb cb) {
  if (req->state_ != TB__REQ_IDLE)
    return TB_EBUSY; /* message untouched: it belongs to the flight */
  req->message[0] = '\0';
  if (c->closing_) {
    tb__http_req_set_message(req, "the client is closing");
    return TB_ECLOSING;
  }
  if (cb == NULL) {
    tb__http_req_set_message(req, "no callback");
    return TB_EINVAL;
  }
  req->client_ = c;
  int rc = validate_input(req);
  if (rc == 0)
    rc = take_url(req, req->url.base, req->url.len);
  if (rc != 0)
    return rc;
  req->body_total_ = 0;
  for (unsigned i = 0; i < req->n_body; i++)
    req->body_total_ += req->body[i].len;
  req->is_head_ = strcmp(method_of(req), "HEAD") == 0;
  if ((rc = build_head(req)) != 0) {
    tb__http_req_set_message(req, "out of memory");
    return rc;
  }
  struct tb__http_origin_s *o = tb__http_pool_origin(c, &req->url_);
  if (o == NULL) {
    tb__http_req_set_message(req, "out of memory");
    return TB_ENOMEM;
  }
  req->cb_ = cb;
  req->origin_ = o;
  req->conn_ = NULL;
  req->redirects = 0;
  req->retried = 0;
  req->reused_connection = 0;
  req->fresh_only_ = 0;
  req->connect_deadline_ = 0;
  req->connect_timeout_ = req->connect_timeout_ms ? req->connect_timeout_ms
                                                  : c->opts_.connect_timeout_ms;
  req->max_body_ = req->max_body ? req->max_body : c->opts_.max_body;
  uint64_t total = req->timeout_ms ? req->timeout_ms : c->opts_.timeout_ms;
  req->deadline_ = total ? uv_now(c->loop) + total : 0;
  reset_response(req);

  tb__http_pool_activate(c, req);
  tb__http_pool_enqueue(o, req, 0);
  tb__http_pool_dispatch(o);
  return 0;
}

int tb__http_client_req_cancel(tb__http_client_req_t *req) {
  if (req->state_ == TB__REQ_IDLE)
    return UV_EINVAL;
  if (req->state_ == TB__REQ_DEFERRED)
    return req->deferred_status_ == UV_ECANCELED ? 0 : UV_EBUSY;
  tb__http_req_set_message(req, "cancelled");
  tb__http_pool_fail_later(req, UV_ECANCELED);
  return 0;
}

/* -------------------------------------------------------- the exchange */

void tb__http_conn_send(struct tb__http_conn_s *conn) {
  tb__http_client_req_t *req = conn->req;
  uv_buf_t small[8];
  uv_buf_t *bufs = small;
  unsigned n = 1;
  if (!req->body_inline_) {
    n += req->n_body;
    if (n > sizeof(small) / sizeof(small[0])) {
      bufs = malloc(sizeof(*bufs) * n);
      if (bufs == NULL) {
        tb__http_req_set_message(req, "out of memory");
        tb__http_pool_fail_later(req, TB_ENOMEM);
        return;
      }
    }
    for (unsigned i = 0; i < req->n_body; i++)
      bufs[1 + i] = req->body[i];
  }
  bufs[0] = uv_buf_init(req->head_.base, (unsigned)req->head_.len);
  req->state_ = TB__REQ_SENT;
  conn->n_requests++;
  req->reused_connection = conn->n_requests > 1;
  conn->response_done = 0;
  conn->leftover = 0;
  conn->cb_err = 0;
  conn->ll.data = conn;
  int rc = tb__transport_write(conn->t, bufs, n, tb__http_conn_on_written);
  if (bufs != small)
    free(bufs); /* uv_write keeps its own copy of the array */
  if (rc != 0) {
    /* This may run inside send(): the callback must come later. */
    tb__http_req_set_message(req, "write: %s", tb_strerror(rc));
    tb__http_pool_fail_later(req, rc);
    return;
  }
  conn->write_pending = 1;
}

/* The request on conn has its whole response (and its write finished):
 * follow a redirect or complete it. */
static void finish_exchange(struct tb__http_conn_s *conn) {
  tb__http_client_req_t *req = conn->req;
  int keep = llhttp_should_keep_alive(&conn->ll) && !conn->leftover;
  tb__http_conn_release(conn, keep);

  int st = req->response.status;
  const tb__http_header_t *loc = tb__http_response_header(&req->response,
                                                         "location");
  if (req->redirects < req->follow_redirects && loc != NULL &&
      strcmp(method_of(req), "GET") == 0 &&
      (st == 301 || st == 302 || st == 303 || st == 307 || st == 308)) {
    tb__buf_reset(&req->scratch_);
    int rc = tb__url_resolve(&req->url_, loc->value, &req->scratch_);
    if (rc == 0) {
      tb__buf_t t = req->url_buf_;
      req->url_buf_ = req->scratch_;
      req->scratch_ = t;
      rc = tb__url_parse(&req->url_, req->url_buf_.base, req->url_buf_.len);
      if (rc == 0 && req->url_.tls && !tb__http_pool_has_tls(req->client_))
        rc = TB_EUNSUPPORTED;
    }
    if (rc == 0)
      rc = build_head(req);
    struct tb__http_origin_s *o = NULL;
    if (rc == 0 && (o = tb__http_pool_origin(req->client_, &req->url_)) == NULL)
      rc = TB_ENOMEM;
    if (rc != 0) {
      tb__http_req_set_message(req, "cannot follow redirect to \"%.*s\"",
                               (int)(loc->value.len > 100 ? 100
                                                          : loc->value.len),
                               loc->value.base);
      tb__http_pool_complete(req, rc == TB_ENOMEM ? rc : TB_EURL);
      return;
    }
    struct tb__http_origin_s *old = req->origin_;
    req->redirects++;
    req->fresh_only_ = 0;
    req->retried = 0;
    reset_response(req);
    req->origin_ = o;
    tb__http_pool_enqueue(o, req, 1);
    tb__http_pool_dispatch(o);
    if (old != o)
      tb__http_pool_dispatch(old);
    return;
  }
  tb__http_pool_complete(req, 0);
}

void tb__http_conn_on_written(tb__transport_t *t, int status) {
  struct tb__http_conn_s *conn = t->data;
  conn->write_pending = 0;
  if (conn->req == NULL)
    return;
  if (status < 0) {
    if (conn->response_done) {
      /* The server answered before reading all we sent; the answer
       * stands, but the connection is not reusable. */
      conn->leftover = 1;
      finish_exchange(conn);
      return;
    }
    tb__http_conn_io_error(conn, status);
    return;
  }
  if (conn->response_done)
    finish_exchange(conn);
}

static const char *io_error_message(int err, int got_bytes) {
  if (err == UV_EOF)
    return got_bytes ? "connection closed before the response was complete"
                     : "connection closed before any response";
  return NULL;
}

void tb__http_conn_io_error(struct tb__http_conn_s *conn, int err) {
  tb__http_client_req_t *req = conn->req;
  if (req == NULL) {
    tb__http_pool_discard(conn);
    return;
  }
  if (err == UV_EOF && !conn->response_done && req->got_bytes_) {
    /* A close-delimited body ends here; llhttp says whether that was a
     * valid end of the message. */
    conn->finishing = 1;
    llhttp_errno_t e = llhttp_finish(&conn->ll);
    conn->finishing = 0;
    if (e == HPE_OK && conn->response_done) {
      /* Nothing more can come on this connection, and a write still
       * pending is moot: the response is complete. */
      conn->leftover = 1;
      finish_exchange(conn);
      return;
    }
    if (conn->cb_err != 0) {
      tb__http_conn_fail(conn, conn->cb_err);
      return;
    }
  }
  int stale = err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE;
  if (stale && !req->got_bytes_ && req->reused_connection && !req->retried) {
    /* The kept-alive connection was closed by the server as this request
     * went out; nothing came back, so it was not processed: try once
     * more on a new connection. */
    tb__http_pool_retry(conn);
    return;
  }
  int code;
  const char *msg = io_error_message(err, req->got_bytes_);
  if (err == UV_EOF || err == UV_EPIPE)
    code = TB_ECLOSED;
  else
    code = err; /* UV_ECONNRESET is TB_ECONNRESET */
  if (msg != NULL)
    tb__http_req_set_message(req, "%s", msg);
  else
    tb__http_req_set_message(req, "%s %s:%u: %s", err == UV_EPIPE ? "write to"
                             : "read from", req->origin_->host,
                             (unsigned)req->origin_->port, tb_strerror(err));
  tb__http_conn_fail(conn, code);
}

void tb__http_conn_on_read(tb__transport_t *t, ssize_t nread,
                           const char *data) {
  struct tb__http_conn_s *conn = t->data;
  tb__http_client_req_t *req = conn->req;
  if (req == NULL || conn->response_done) {
    /* Idle: the server closed (or sent what nobody asked for).  After a
     * complete response: the connection is done either way. */
    if (req != NULL)
      conn->leftover = 1;
    else
      tb__http_pool_discard_idle(conn);
    return;
  }
  if (nread < 0) {
    tb__http_conn_io_error(conn, (int)nread);
    return;
  }
  req->got_bytes_ = 1;
  llhttp_errno_t e = llhttp_execute(&conn->ll, data, (size_t)nread);
  if (e == HPE_OK)
    return;
  if (e == HPE_PAUSED && conn->response_done) {
    if (llhttp_get_error_pos(&conn->ll) != data + nread)
      conn->leftover = 1; /* bytes past the response: not reusable */
    llhttp_resume(&conn->ll);
    if (!conn->write_pending)
      finish_exchange(conn);
    return;
  }
  if (conn->cb_err != 0) {
    tb__http_conn_fail(conn, conn->cb_err);
    return;
  }
  tb__http_req_set_message(req, "malformed response from %s:%u: %s",
                           req->origin_->host, (unsigned)req->origin_->port,
                           llhttp_get_error_reason(&conn->ll)
                               ? llhttp_get_error_reason(&conn->ll)
                               : llhttp_errno_name(e));
  tb__http_conn_fail(conn, TB_EPROTO);
}

/* --------------------------------------------------- llhttp callbacks */

static tb__http_client_req_t *req_of(llhttp_t *ll) {
  return ((struct tb__http_conn_s *)ll->data)->req;
}

static int cb_fail(llhttp_t *ll, int code, const char *msg) {
  struct tb__http_conn_s *conn = ll->data;
  conn->cb_err = code;
  tb__http_req_set_message(conn->req, "%s", msg);
  return -1;
}

static int grow_headers(tb__http_client_req_t *req) {
  size_t cap = req->hdr_cap_ ? req->hdr_cap_ * 2 : 16;
  size_t *spans = realloc(req->spans_, cap * 4 * sizeof(*spans));
  if (spans == NULL)
    return TB_ENOMEM;
  req->spans_ = spans;
  tb__http_header_t *h = realloc(req->resp_headers_, cap * sizeof(*h));
  if (h == NULL)
    return TB_ENOMEM;
  req->resp_headers_ = h;
  req->hdr_cap_ = cap;
  return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len) {
  tb__http_client_req_t *req = req_of(ll);
  if (req->head_done_)
    return 0; /* trailers are dropped */
  if (!req->in_field_) {
    size_t n = req->response.n_headers;
    if (n >= TB_HTTP_MAX_HEADERS)
      return cb_fail(ll, TB_ETOOLARGE, "too many response headers");
    if (n == req->hdr_cap_ && grow_headers(req) != 0)
      return cb_fail(ll, TB_ENOMEM, "out of memory");
    size_t *s = &req->spans_[4 * n];
    s[0] = req->resp_strs_.len;
    s[1] = s[2] = s[3] = 0;
    req->response.n_headers = n + 1;
    req->in_field_ = 1;
  }
  if (req->resp_strs_.len + len > TB_HTTP_MAX_HEADER_BYTES)
    return cb_fail(ll, TB_ETOOLARGE, "response head too large");
  if (tb__buf_append(&req->resp_strs_, at, len) != 0)
    return cb_fail(ll, TB_ENOMEM, "out of memory");
  req->spans_[4 * (req->response.n_headers - 1) + 1] += len;
  return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len) {
  tb__http_client_req_t *req = req_of(ll);
  if (req->head_done_)
    return 0;
  size_t *s = &req->spans_[4 * (req->response.n_headers - 1)];
  if (req->in_field_) {
    s[2] = req->resp_strs_.len;
    req->in_field_ = 0;
  }
  if (req->resp_strs_.len + len > TB_HTTP_MAX_HEADER_BYTES)
    return cb_fail(ll, TB_ETOOLARGE, "response head too large");
  if (tb__buf_append(&req->resp_strs_, at, len) != 0)
    return cb_fail(ll, TB_ENOMEM, "out of memory");
  s[3] += len;
  return 0;
}

static int on_headers_complete(llhttp_t *ll) {
  tb__http_client_req_t *req = req_of(ll);
  int st = llhttp_get_status_code(ll);
  if (st == 101 || llhttp_get_upgrade(ll))
    return cb_fail(ll, TB_EPROTO, "unexpected protocol upgrade");
  if (st >= 100 && st < 200) {
    /* An interim response (100 Continue, 103 Early Hints): forget it
     * and wait for the real one. */
    req->response.n_headers = 0;
    tb__buf_reset(&req->resp_strs_);
    req->in_field_ = 0;
    return 1;
  }
  req->response.status = st;
  req->response.http_major = llhttp_get_http_major(ll);
  req->response.http_minor = llhttp_get_http_minor(ll);
  size_t n = req->response.n_headers;
  for (size_t i = 0; i < n; i++) {
    const size_t *s = &req->spans_[4 * i];
    req->resp_headers_[i].name = (tb_slice_t){ req->resp_strs_.base + s[0],
                                               s[1] };
    req->resp_headers_[i].value = (tb_slice_t){ req->resp_strs_.base + s[2],
                                                s[3] };
  }
  req->response.headers = n ? req->resp_headers_ : NULL;
  req->head_done_ = 1;
  if (req->is_head_ || st == 204 || st == 304)
    return 1; /* no body, whatever the headers say */
  if (ll->flags & F_CONTENT_LENGTH) {
    if (ll->content_length > req->max_body_)
      return cb_fail(ll, TB_ETOOLARGE, "response body exceeds the limit");
    if (tb__buf_reserve(&req->resp_body_, (size_t)ll->content_length) != 0)
      return cb_fail(ll, TB_ENOMEM, "out of memory");
  }
  return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len) {
  tb__http_client_req_t *req = req_of(ll);
  if (len > req->max_body_ - req->resp_body_.len)
    return cb_fail(ll, TB_ETOOLARGE, "response body exceeds the limit");
  if (tb__buf_append(&req->resp_body_, at, len) != 0)
    return cb_fail(ll, TB_ENOMEM, "out of memory");
  return 0;
}

static int on_message_complete(llhttp_t *ll) {
  struct tb__http_conn_s *conn = ll->data;
  tb__http_client_req_t *req = conn->req;
  if (!req->head_done_)
    return 0; /* the end of an interim response */
  req->response.body = req->resp_body_.len ? req->resp_body_.base : NULL;
  req->response.body_len = req->resp_body_.len;
  conn->response_done = 1;
  /* Stop here so that bytes after the response are seen, not parsed as
   * the start of another one. */
  return conn->finishing ? 0 : HPE_PAUSED;
}

static const llhttp_settings_t settings = {
  .on_header_field = on_header_field,
  .on_header_value = on_header_value,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

void tb__http_conn_parser_init(struct tb__http_conn_s *conn) {
  llhttp_init(&conn->ll, HTTP_RESPONSE, &settings);
  conn->ll.data = conn;
}

/* ------------------------------------------------------------ helpers */

const tb__http_header_t *tb__http_response_header(const tb__http_response_t *res,
                                                 const char *name) {
  return tb__http_find_header(res->headers, res->n_headers, name);
}

int tb__http_client_req_error(const tb__http_client_req_t *req, int status,
                           tb_error_t *err) {
  tb_category_t cat;
  if (status == 0)
    return 0;
  if (status == UV_ECANCELED)
    cat = TB_CATEGORY_CANCELLED;
  else if (status == TB_ETIMEDOUT || status == TB_ECONNECT_TIMEOUT)
    cat = TB_CATEGORY_TIMEOUT;
  else if (status == TB_EINVAL || status == TB_EURL ||
           status == TB_EUNSUPPORTED)
    cat = TB_CATEGORY_USER;
  else
    cat = TB_CATEGORY_NETWORK;
  if (req->message[0] != '\0')
    return tb_error_set(err, status, cat, "%s", req->message);
  return tb_error_set(err, status, cat, "%s", tb_strerror(status));
}

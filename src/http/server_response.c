/*
 * Answers: serializing a response, keeping answers in request order, and
 * writing them (see server.h for the handler's contract).
 *
 * The status line, the headers and any body up to TB__HTTP_INLINE_BODY go
 * into the request's own reusable buffer, so a small answer is one iovec;
 * larger bodies are written from the caller's buffers by reference.  A
 * connection has at most one uv_write in flight, which carries every
 * answer that is ready at the head of its queue: pipelined requests
 * answered in one read are written with one writev.  An answer that is
 * ready before those of earlier requests waits for them.
 */
#include "http/server_internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "http/tls.h"

static const char tb__continue[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* What is left when even the answer cannot be built. */
static const char tb__oom_response[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 48\r\n"
    "Connection: close\r\n"
    "\r\n"
    "{\"error\": \"out of memory\", \"category\": \"server\"}";

void tb__http_req_finish(tb__http_request_t *req, int status) {
  if (req->on_done != NULL)
    req->on_done(req, status);
  tb__http_req_put(req);
}

tb__http_request_t *tb__http_conn_take_writing(tb__http_server_conn_t *conn) {
  tb__http_request_t *w = conn->writing;
  conn->writing = conn->writing_tail = NULL;
  return w;
}

void tb__http_reqs_finish(tb__http_request_t *list, int status) {
  while (list != NULL) {
    tb__http_request_t *next = list->next;
    list->next = NULL;
    tb__http_req_finish(list, status);
    list = next;
  }
}

static char *put_uint(char *p, size_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  while (n > 0)
    *p++ = tmp[--n];
  return p;
}

static int body_allowed(int status) {
  return status >= 200 && status != 204 && status != 304;
}

/* Builds the head (and a small body) in req->out.  0 or TB_ENOMEM. */
static int serialize(tb__http_request_t *req, int status,
                     const tb__http_header_t *headers, size_t n_headers,
                     const uv_buf_t *body, size_t n_body) {
  tb__buf_t *out = &req->out;
  size_t body_len = 0;
  for (size_t i = 0; i < n_body; i++)
    body_len += body[i].len;
  int send_body = body_allowed(status) && !tb__slice_eq_str(req->method, "HEAD");
  if (!body_allowed(status))
    body_len = 0;
  const char *reason = tb__http_status_text(status);
  size_t need = 64 + strlen(reason) + 40;
  for (size_t i = 0; i < n_headers; i++)
    need += headers[i].name.len + headers[i].value.len + 4;
  int inline_body = send_body && body_len <= TB__HTTP_INLINE_BODY;
  if (inline_body)
    need += body_len;
  tb__buf_reset(out);
  if (tb__buf_reserve(out, need) != 0)
    return TB_ENOMEM;
  char *p = out->base;
  memcpy(p, "HTTP/1.1 ", 9);
  p += 9;
  p = put_uint(p, (size_t)status);
  *p++ = ' ';
  size_t rl = strlen(reason);
  memcpy(p, reason, rl);
  p += rl;
  *p++ = '\r';
  *p++ = '\n';
  for (size_t i = 0; i < n_headers; i++) {
    memcpy(p, headers[i].name.base, headers[i].name.len);
    p += headers[i].name.len;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, headers[i].value.base, headers[i].value.len);
    p += headers[i].value.len;
    *p++ = '\r';
    *p++ = '\n';
  }
  if (body_allowed(status)) {
    memcpy(p, "Content-Length: ", 16);
    p = put_uint(p + 16, body_len);
    *p++ = '\r';
    *p++ = '\n';
  }
  if (req->close_after) {
    memcpy(p, "Connection: close\r\n", 19);
    p += 19;
  } else if (req->msg.http_major == 1 && req->msg.http_minor == 0) {
    memcpy(p, "Connection: keep-alive\r\n", 24);
    p += 24;
  }
  *p++ = '\r';
  *p++ = '\n';
  if (inline_body) {
    for (size_t i = 0; i < n_body; i++) {
      memcpy(p, body[i].base, body[i].len);
      p += body[i].len;
    }
  } else if (send_body && n_body > 0) {
    uv_buf_t *iov = tb__arena_alloc(&req->arena, n_body * sizeof(*iov));
    if (iov == NULL)
      return TB_ENOMEM;
    memcpy(iov, body, n_body * sizeof(*iov));
    req->body_iov = iov;
    req->n_body_iov = n_body;
  }
  out->len = (size_t)(p - out->base);
  return 0;
}

void tb__http_respond(tb__http_request_t *req, int status,
                      const tb__http_header_t *headers, size_t n_headers,
                      const uv_buf_t *body, size_t n_body) {
  if (req->state == TB__REQ_DETACHED) {
    /* The client is gone; the handler is only giving the request back. */
    tb__http_server_t *server = req->server;
    server->n_detached--;
    tb__http_req_finish(req, TB_ECLOSED);
    tb__http_server_maybe_finish(server);
    return;
  }
  if (req->state != TB__REQ_HANDLER && req->state != TB__REQ_PARSING) {
    tb__log_error("http server: a request was answered twice (status %d)", status);
    return;
  }
  tb__http_server_conn_t *conn = req->conn;
  if (!req->keep_alive || (conn->draining && req->next == NULL))
    req->close_after = 1;
  if (status < 100 || status > 999)
    status = 500;
  req->status = status;
  req->body_iov = NULL;
  req->n_body_iov = 0;
  if (serialize(req, status, headers, n_headers, body, n_body) != 0) {
    tb__buf_reset(&req->out);
    req->body_iov = NULL;
    req->n_body_iov = 0;
    req->close_after = 1;
  }
  req->state = TB__REQ_RESPONDED;
  if (conn->in_process)
    conn->dirty = 1;
  else
    tb__http_conn_flush(conn);
}

void tb__http_respond_json(tb__http_request_t *req, int status, const char *json,
                           size_t len) {
  static const tb__http_header_t ct = {
    TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/json")
  };
  uv_buf_t b = uv_buf_init((char *)json, (unsigned)len);
  tb__http_respond(req, status, &ct, 1, &b, 1);
}

void tb__http_respond_error(tb__http_request_t *req, int status, const char *message) {
  const char *category = status >= 500 ? "server" : "user";
  size_t ml = strlen(message);
  /* Worst case every byte becomes \u00XX. */
  char *json = tb__arena_alloc(&req->arena, ml * 6 + 64);
  if (json == NULL) {
    tb__http_respond_json(req, status, "{}", 2);
    return;
  }
  char *p = json;
  memcpy(p, "{\"error\": \"", 11);
  p += 11;
  p += tb__json_escape(p, message, ml);
  p += sprintf(p, "\", \"category\": \"%s\"}", category);
  /* What the server refuses with 503 (memory, connections) passes. */
  static const tb__http_header_t h[2] = {
    { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/json") },
    { TB_SLICE_LIT("Retry-After"), TB_SLICE_LIT("1") },
  };
  uv_buf_t b = uv_buf_init(json, (unsigned)(p - json));
  tb__http_respond(req, status, h, status == 503 ? 2 : 1, &b, 1);
}

void tb__http_request_close_connection(tb__http_request_t *req) {
  req->keep_alive = 0;
}

/* ------------------------------------------------------------ writing */

static int iov_reserve(tb__http_server_conn_t *conn, size_t n) {
  if (n <= conn->iov_cap)
    return 0;
  size_t cap = conn->iov_cap ? conn->iov_cap : 16;
  while (cap < n)
    cap *= 2;
  uv_buf_t *iov = realloc(conn->iov, cap * sizeof(*iov));
  if (iov == NULL)
    return TB_ENOMEM;
  conn->iov = iov;
  conn->iov_cap = cap;
  return 0;
}

static void on_write(uv_write_t *wr, int status) {
  tb__http_conn_write_done(wr->data, status);
}

void tb__http_conn_write_done(tb__http_server_conn_t *conn, int status) {
  conn->write_active = 0;
  conn->written_at_once = 0;
  tb__http_reqs_finish(tb__http_conn_take_writing(conn), status < 0 ? status : 0);
  if (conn->closing)
    return;
  if (status < 0) {
    tb__debug("http server: write failed: %s", uv_strerror(status));
    tb__http_conn_abort(conn, status);
    return;
  }
  tb__http_conn_after_write(conn);
}

void tb__http_conn_flush(tb__http_server_conn_t *conn) {
  if (conn->write_active || conn->closing)
    return;
  size_t n_iov = 0;
  tb__http_request_t *r;
  while ((r = conn->head) != NULL) {
    if (r->state == TB__REQ_PARSING) {
      /* An interim answer, in order, while the body is still to come. */
      if (r->continue_state == 1 && !conn->stop_parsing &&
          iov_reserve(conn, n_iov + 1) == 0) {
        conn->iov[n_iov++] = uv_buf_init((char *)tb__continue, sizeof(tb__continue) - 1);
        r->continue_state = 2;
      }
      break;
    }
    if (r->state != TB__REQ_RESPONDED)
      break;
    if (iov_reserve(conn, n_iov + 1 + r->n_body_iov) != 0) {
      if (n_iov > 0)
        break;
      tb__http_conn_abort(conn, TB_ENOMEM);
      return;
    }
    if (r->out.len > 0) {
      conn->iov[n_iov++] = uv_buf_init(r->out.base, (unsigned)r->out.len);
      for (size_t i = 0; i < r->n_body_iov; i++)
        conn->iov[n_iov++] = r->body_iov[i];
    } else {
      conn->iov[n_iov++] = uv_buf_init((char *)tb__oom_response,
                                       sizeof(tb__oom_response) - 1);
    }
    tb__http_queue_remove(conn, r);
    r->state = TB__REQ_WRITING;
    if (conn->writing_tail)
      conn->writing_tail->next = r;
    else
      conn->writing = r;
    conn->writing_tail = r;
    if (r->close_after) {
      conn->close_after_write = 1;
      break;
    }
  }
  if (n_iov == 0)
    return;
  conn->write_req.data = conn;
  uv_buf_t *iov = conn->iov;
  int rc = 0;
  if (conn->tls != NULL) {
    /* HTTPS: the answers leave as one buffer of ciphertext, kept until
     * the write completes. */
    conn->tls_wire.len = 0;
    rc = tb__tls_encrypt(conn->tls, conn->iov, (unsigned)n_iov);
    rc = rc ? rc : tb__tls_take_output(conn->tls, &conn->tls_wire);
    conn->iov[0] = uv_buf_init(conn->tls_wire.base, (unsigned)conn->tls_wire.len);
    n_iov = 1;
  }
  if (rc == 0 && conn->tls == NULL) {
    /* Most answers fit the socket's buffer: written at once, they need no
     * write request, and libuv then does not re-arm the socket in epoll
     * after every answer (a system call each).  The completion still
     * runs on a later loop turn, as uv_write's would. */
    size_t total = 0;
    for (size_t i = 0; i < n_iov; i++)
      total += iov[i].len;
    int n = uv_try_write((uv_stream_t *)&conn->tcp, iov, (unsigned)n_iov);
    if (n > 0 && (size_t)n == total) {
      conn->write_active = 1;
      conn->written_at_once = 1;
      uv_idle_start(&conn->written, tb__http_sconn_on_written);
      return;
    }
    /* Part of it went: the rest by uv_write. */
    for (size_t done = n > 0 ? (size_t)n : 0; done > 0;) {
      if (done >= iov[0].len) {
        done -= iov[0].len;
        iov++;
        n_iov--;
      } else {
        iov[0].base += done;
        iov[0].len -= done;
        done = 0;
      }
    }
  }
  if (rc == 0)
    rc = uv_write(&conn->write_req, (uv_stream_t *)&conn->tcp, iov, (unsigned)n_iov,
                  on_write);
  if (rc != 0) {
    tb__http_request_t *w = tb__http_conn_take_writing(conn);
    tb__http_conn_abort(conn, rc);
    tb__http_reqs_finish(w, rc);
    return;
  }
  conn->write_active = 1;
}

/*
 * One server connection: reading, parsing, dispatching requests to the
 * handler, timeouts and the ways a connection ends (see server_internal.h).
 *
 * Reads go into the server's one 64 KiB buffer; the parser copies what it
 * keeps, so the buffer is free again when the read callback returns.  The
 * parser stops after each request, which is where back-pressure applies:
 * with max_pipeline requests unanswered, the rest of the buffer is kept in
 * conn->pending and reading stops until answers go out.
 *
 * Memory: a request's body is counted against the server's
 * max_body_memory from its head (its Content-Length) or as it grows
 * (chunked), until the request is released; one that would pass the limit
 * is refused at once, so clients that announce large bodies and send
 * them slowly cannot together hold more than that.  The head of every
 * request goes to the server's on_head before its body is read, which is
 * where a request without credentials is refused without buffering it.
 *
 * One uv_timer serves all the timeouts.  It is re-armed lazily (after
 * redis' ae timers): state changes only move conn's timestamps, and the
 * timer, when it fires, computes the real deadline and either acts or
 * sleeps again, so a busy keep-alive connection does not touch the timer
 * heap on every request.
 *
 * Endings: a malformed request, a request with "Connection: close" or an
 * upgrade stops parsing; the last answer is written, then the connection
 * shuts down its write side and lingers, reading and dropping, until the
 * client closes (or TB__HTTP_LINGER_MS), so that the client reads the
 * answer rather than a reset.  A client that goes away (EOF, reset) while
 * a handler holds a request aborts the connection: such requests are
 * detached and their handlers told through on_abort.
 */
#include "http/server_internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "http/tls.h"

#define container_of(ptr, type, member) \
  ((type *)((char *)(ptr) - offsetof(type, member)))

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void stop_parsing_input(tb__http_server_conn_t *conn);

/* ------------------------------------------------------------ parser glue */

static tb__http_msg_t *conn_begin(tb__http_parser_t *p) {
  tb__http_server_conn_t *conn = p->data;
  tb__http_request_t *req = tb__http_req_get(conn->server);
  if (req == NULL)
    return NULL;
  req->conn = conn;
  req->state = TB__REQ_PARSING;
  req->prev = conn->tail;
  if (conn->tail)
    conn->tail->next = req;
  else
    conn->head = req;
  conn->tail = req;
  conn->n_queued++;
  conn->header_start = uv_now(conn->server->loop);
  return &req->msg;
}

/* Counts `more` body bytes of req against the server's limit: 0, or
 * TB_EBUSY when they do not fit. */
static int hold_body(tb__http_request_t *req, size_t more) {
  tb__http_server_t *server = req->server;
  if (more > server->opts.max_body_memory - server->body_memory) {
    server->n_refused_bodies++;
    return TB_EBUSY;
  }
  req->body_held += more;
  server->body_memory += more;
  return 0;
}

static int conn_head(tb__http_parser_t *p, tb__http_msg_t *m) {
  tb__http_server_conn_t *conn = p->data;
  tb__http_server_t *server = conn->server;
  tb__http_request_t *req = container_of(m, tb__http_request_t, msg);
  conn->last_read = uv_now(server->loop);
  int body_follows = m->content_length > 0 || m->chunked;
  /* An answer given here closes the connection when a body was to come:
   * it is never read. */
  req->keep_alive = m->keep_alive && !m->upgrade && !body_follows;
  if (tb__http_req_fill_head(req) != 0) {
    tb__http_respond_error(req, 503, "out of memory");
    return TB__HTTP_HEAD_ANSWERED;
  }
  /* The handler's verdict first (a request without credentials is a 401
   * whatever the memory), then room for the body. */
  if (server->opts.on_head != NULL) {
    server->opts.on_head(req);
    if (req->state != TB__REQ_PARSING) {
      server->n_requests++;
      return TB__HTTP_HEAD_ANSWERED;
    }
  }
  if (m->content_length > 0 && hold_body(req, (size_t)m->content_length) != 0) {
    tb__debug("http server: %zu bytes of bodies held, refusing %llu more",
             server->body_memory, (unsigned long long)m->content_length);
    tb__http_respond_error(req, 503, "request bodies hold too much memory; retry later");
    return TB__HTTP_HEAD_ANSWERED;
  }
  req->keep_alive = 0;  /* decided again when the request is complete */
  /* Owed only while the body is still to come; flush decides when. */
  if (m->expect_continue && m->http_major == 1 && m->http_minor >= 1) {
    req->continue_state = 1;
    conn->dirty = 1;
  }
  return 0;
}

/* Chunked bodies are counted as they grow (a Content-Length was counted
 * whole at the head). */
static int conn_body(tb__http_parser_t *p, tb__http_msg_t *m, size_t len) {
  tb__http_request_t *req = container_of(m, tb__http_request_t, msg);
  size_t have = m->body.len + len;
  if (have <= req->body_held)
    return 0;
  return hold_body(req, have - req->body_held) == 0 ? 0 : 503;
}

static const tb__http_parser_cbs_t conn_parser_cbs = { conn_begin, conn_head, conn_body };

/* ------------------------------------------------------------ timers */

static uint64_t conn_deadline(const tb__http_server_conn_t *conn) {
  const tb__http_server_options_t *o = &conn->server->opts;
  if (conn->closing)
    return 0;
  if (conn->lingering)
    return conn->linger_until;
  if (tb__http_parser_in_message(&conn->parser) && !conn->stop_parsing &&
      !conn->read_paused) {
    /* Per read, and for the whole request from its first byte. */
    uint64_t d = conn->parser.msg->head_complete ? conn->last_read + o->body_timeout_ms
                                                 : conn->header_start + o->header_timeout_ms;
    uint64_t whole = conn->header_start + o->request_timeout_ms;
    return d < whole ? d : whole;
  }
  if (conn->n_queued == 0 && !conn->write_active && !conn->stop_parsing &&
      !conn->read_eof)
    return conn->idle_since + o->idle_timeout_ms;
  return 0;
}

static void on_timer(uv_timer_t *t) {
  tb__http_server_conn_t *conn = t->data;
  uint64_t now = uv_now(conn->server->loop);
  uint64_t d = conn_deadline(conn);
  if (d == 0)
    return;
  if (now < d) {
    conn->timer_due = d;
    uv_timer_start(&conn->timer, on_timer, d - now, 0);
    return;
  }
  if (conn->lingering)
    tb__debug("http server: linger over, closing");
  else
    tb__debug("http server: connection timed out");
  tb__http_conn_abort(conn, TB_ETIMEDOUT);
}

void tb__http_conn_arm_timer(tb__http_server_conn_t *conn) {
  uint64_t d = conn_deadline(conn);
  if (d == 0)
    return;
  if (uv_is_active((uv_handle_t *)&conn->timer) && conn->timer_due <= d)
    return;  /* fires earlier and re-arms itself */
  uint64_t now = uv_now(conn->server->loop);
  conn->timer_due = d;
  uv_timer_start(&conn->timer, on_timer, d > now ? d - now : 0, 0);
}

/* ------------------------------------------------------------ dispatch */

static void dispatch(tb__http_server_conn_t *conn, tb__http_request_t *req) {
  tb__http_server_t *server = conn->server;
  if (!req->head_seen && tb__http_req_fill_head(req) != 0) {
    req->state = TB__REQ_HANDLER;
    req->keep_alive = 0;
    tb__http_respond_error(req, 503, "out of memory");
    return;
  }
  tb__http_req_fill_body(req);
  req->state = TB__REQ_HANDLER;
  server->n_requests++;
  server->opts.on_request(req);  /* the router's, when one is set */
}

/* The parser failed: the request it was filling becomes the error answer
 * and nothing more is read. */
static void parse_error(tb__http_server_conn_t *conn) {
  tb__http_parser_t *p = &conn->parser;
  conn->stop_parsing = 1;
  if (p->msg == NULL) {
    /* Not even a request object to answer with (out of memory). */
    tb__http_conn_abort(conn, TB_ENOMEM);
    return;
  }
  tb__http_request_t *req = container_of(p->msg, tb__http_request_t, msg);
  p->msg = NULL;
  tb__debug("http server: %d %s", p->status, p->reason);
  /* Answered at its head already (llhttp finds some faults of a head,
   * such as a Transfer-Encoding that is not chunked, only after it): that
   * answer stands, and the connection ends after it. */
  if (req->state == TB__REQ_RESPONDED)
    return;
  req->keep_alive = 0;
  req->continue_state = 0;
  tb__http_respond_error(req, p->status, p->reason);
}

/* Complete requests not yet written count against max_pipeline; the one
 * still arriving does not, or a limit of 1 could never finish it. */
static int pipeline_full(const tb__http_server_conn_t *conn) {
  size_t n = conn->n_queued - (conn->parser.msg != NULL ? 1 : 0);
  return n >= conn->server->opts.max_pipeline;
}

/* Parses and dispatches; returns how many bytes were consumed.  Stops early
 * when parsing must stop or too many requests wait for answers. */
static size_t conn_process(tb__http_server_conn_t *conn, const char *data, size_t len) {
  size_t total = 0;
  conn->in_process = 1;
  while (len > 0 && !conn->stop_parsing && !conn->closing) {
    if (pipeline_full(conn))
      break;
    size_t used;
    int rc = tb__http_parser_execute(&conn->parser, data, len, &used);
    data += used;
    len -= used;
    total += used;
    if (rc == TB__HTTP_PARSE_MESSAGE) {
      tb__http_request_t *req =
          container_of(conn->parser.completed, tb__http_request_t, msg);
      if (!req->msg.keep_alive || req->msg.upgrade)
        conn->stop_parsing = 1;
      if (req->state == TB__REQ_PARSING)
        dispatch(conn, req);  /* unless it was answered at its head */
    } else if (rc == TB__HTTP_PARSE_ANSWERED) {
      /* Answered at the head with a body still to come: the answer stays
       * in the queue, and nothing more is read. */
      conn->parser.msg = NULL;
      conn->stop_parsing = 1;
      break;
    } else if (rc < 0) {
      parse_error(conn);
      break;
    }
  }
  conn->in_process = 0;
  if (conn->closing)
    return total;
  if (conn->stop_parsing) {
    stop_parsing_input(conn);
  } else if (pipeline_full(conn) && !conn->read_paused) {
    conn->read_paused = 1;
    uv_read_stop((uv_stream_t *)&conn->tcp);
  }
  if (conn->dirty) {
    conn->dirty = 0;
    tb__http_conn_flush(conn);
  }
  return total;
}

/* ------------------------------------------------------------ reading */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  tb__http_server_conn_t *conn = h->data;
  buf->base = conn->server->read_buf;
  buf->len = TB__HTTP_READ_BUF;
}

static int has_handler_requests(const tb__http_server_conn_t *conn) {
  for (const tb__http_request_t *r = conn->head; r != NULL; r = r->next)
    if (r->state == TB__REQ_HANDLER)
      return 1;
  return 0;
}

static void drop_partial(tb__http_server_conn_t *conn) {
  if (conn->parser.msg == NULL)
    return;
  tb__http_request_t *req = container_of(conn->parser.msg, tb__http_request_t, msg);
  conn->parser.msg = NULL;
  tb__http_queue_remove(conn, req);
  tb__http_req_put(req);
}

/* EOF or a read error. */
static void conn_read_end(tb__http_server_conn_t *conn, ssize_t nread) {
  if (nread != UV_EOF || has_handler_requests(conn)) {
    /* Gone: whatever a handler holds is answered into the void. */
    tb__http_conn_abort(conn, nread == UV_EOF ? TB_ECLOSED : (int)nread);
    return;
  }
  /* Half-closed: write what is answered, then close. */
  uv_read_stop((uv_stream_t *)&conn->tcp);
  conn->read_eof = 1;
  conn->stop_parsing = 1;
  drop_partial(conn);
  tb__buf_reset(&conn->pending);
  if (conn->n_queued == 0 && !conn->write_active)
    tb__http_conn_abort(conn, TB_ECLOSED);
}

/* After parsing stopped: input is dropped, but reading goes on so that a
 * client that leaves while a handler holds its request is noticed. */
static void on_discard_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  if (nread < 0)
    conn_read_end(s->data, nread);
}

static void stop_parsing_input(tb__http_server_conn_t *conn) {
  conn->stop_parsing = 1;
  uv_read_stop((uv_stream_t *)&conn->tcp);
  if (uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_discard_read) != 0)
    conn->read_eof = 1;  /* cannot watch it: treat it as half-closed */
}

/* ------------------------------------------------------------ TLS */

typedef struct tls_send_s {
  uv_write_t req;
  char *data;
} tls_send_t;

static void on_tls_sent(uv_write_t *wr, int status) {
  tls_send_t *w = (tls_send_t *)wr;
  tb__http_server_conn_t *conn = wr->data;
  free(w->data);
  free(w);
  if (status < 0 && !conn->closing)
    tb__http_conn_abort(conn, status);
}

void tb__http_conn_tls_send(tb__http_server_conn_t *conn) {
  if (conn->tls == NULL || conn->closing || tb__tls_pending(conn->tls) == 0)
    return;
  tb__buf_t out = TB_BUF_INIT;
  tls_send_t *w = malloc(sizeof(*w));
  if (w == NULL || tb__tls_take_output(conn->tls, &out) != 0) {
    free(w);
    tb__buf_free(&out);
    tb__http_conn_abort(conn, TB_ENOMEM);
    return;
  }
  w->data = out.base;
  w->req.data = conn;
  uv_buf_t b = uv_buf_init(out.base, (unsigned)out.len);
  int rc = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &b, 1, on_tls_sent);
  if (rc != 0) {
    free(w->data);
    free(w);
    tb__http_conn_abort(conn, rc);
  }
}

/* Decrypts one read into conn->tls_plain.  0 with the plaintext (maybe
 * none yet: a handshake), or the read's end: UV_EOF after close_notify,
 * TB_ETLS for a failed handshake or a corrupt record. */
static int tls_decrypt(tb__http_server_conn_t *conn, const char *data, size_t len) {
  conn->tls_plain.len = 0;
  int rc = tb__tls_feed(conn->tls, data, len, &conn->tls_plain);
  tb__http_conn_tls_send(conn);
  if (rc == TB_ETLS)
    tb__debug("http server: %s", tb__tls_error(conn->tls));
  return rc;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tb__http_server_conn_t *conn = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    conn_read_end(conn, nread);
    return;
  }
  conn->last_read = uv_now(conn->server->loop);
  const char *data = buf->base;
  size_t len = (size_t)nread;
  int end = 0;
  if (conn->tls != NULL) {
    end = tls_decrypt(conn, data, len);
    if (conn->closing)
      return;
    data = conn->tls_plain.base;
    len = conn->tls_plain.len;
  }
  size_t used = len > 0 ? conn_process(conn, data, len) : 0;
  if (used < len && !conn->stop_parsing && !conn->closing) {
    /* Back-pressure: keep the rest for when answers have gone out. */
    if (tb__buf_append(&conn->pending, data + used, len - used) != 0) {
      tb__http_conn_abort(conn, TB_ENOMEM);
      return;
    }
  }
  if (end != 0 && !conn->closing) {
    conn_read_end(conn, end == UV_EOF ? UV_EOF : end);
    return;
  }
  if (!conn->closing)
    tb__http_conn_arm_timer(conn);
}

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tb__http_server_conn_t *conn = s->data;
  if (nread < 0)
    tb__http_conn_abort(conn, TB_ECLOSED);
}

static void on_shutdown(uv_shutdown_t *sr, int status) {
  tb__http_server_conn_t *conn = sr->data;
  if (conn->closing)
    return;
  if (status < 0 || conn->read_eof) {
    tb__http_conn_abort(conn, TB_ECLOSED);
    return;
  }
  conn->lingering = 1;
  conn->linger_until = uv_now(conn->server->loop) + TB__HTTP_LINGER_MS;
  int rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_linger_read);
  if (rc != 0) {
    tb__http_conn_abort(conn, rc);
    return;
  }
  tb__http_conn_arm_timer(conn);
}

/* Every answer is out and no more will come: FIN, then linger. */
static void conn_finish(tb__http_server_conn_t *conn) {
  /* A half-closed client sends nothing more, and a draining connection
   * was idle: neither needs the linger. */
  if (conn->read_eof || conn->draining) {
    tb__http_conn_abort(conn, TB_ECLOSED);
    return;
  }
  uv_read_stop((uv_stream_t *)&conn->tcp);
  conn->stop_parsing = 1;
  if (conn->tls != NULL) {
    /* close_notify, then the FIN (writes leave in order). */
    tb__tls_close_notify(conn->tls);
    tb__http_conn_tls_send(conn);
    if (conn->closing)
      return;
  }
  conn->shutdown_req.data = conn;
  int rc = uv_shutdown(&conn->shutdown_req, (uv_stream_t *)&conn->tcp, on_shutdown);
  if (rc != 0)
    tb__http_conn_abort(conn, rc);
}

void tb__http_conn_after_write(tb__http_server_conn_t *conn) {
  if (conn->close_after_write) {
    conn_finish(conn);
    return;
  }
  if (conn->n_queued == 0 && (conn->stop_parsing || conn->read_eof)) {
    conn_finish(conn);
    return;
  }
  if (conn->read_paused && !pipeline_full(conn)) {
    conn->read_paused = 0;
    if (conn->pending.len > 0) {
      size_t used = conn_process(conn, conn->pending.base, conn->pending.len);
      if (conn->closing)
        return;
      tb__buf_consume(&conn->pending, used);
    }
    if (!conn->read_paused && !conn->stop_parsing) {
      int rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
      if (rc != 0) {
        tb__http_conn_abort(conn, rc);
        return;
      }
    }
  }
  tb__http_conn_flush(conn);
  if (conn->closing)
    return;
  if (conn->n_queued == 0 && !conn->write_active)
    conn->idle_since = uv_now(conn->server->loop);
  tb__http_conn_arm_timer(conn);
}

/* ------------------------------------------------------------ life cycle */

void tb__http_sconn_on_written(uv_idle_t *idle) {
  tb__http_server_conn_t *conn = idle->data;
  uv_idle_stop(idle);
  tb__http_conn_write_done(conn, 0);
}

static void on_handle_closed(uv_handle_t *h) {
  tb__http_server_conn_t *conn = h->data;
  if (--conn->open_handles > 0)
    return;
  tb__http_server_t *server = conn->server;
  if (conn->prev)
    conn->prev->next = conn->next;
  else
    server->conns = conn->next;
  if (conn->next)
    conn->next->prev = conn->prev;
  server->n_conns--;
  tb__buf_free(&conn->pending);
  tb__tls_free(conn->tls);
  tb__buf_free(&conn->tls_plain);
  tb__buf_free(&conn->tls_wire);
  free(conn->iov);
  free(conn);
  tb__http_server_maybe_finish(server);
}

int tb__http_conn_start(tb__http_server_t *server, tb__http_server_conn_t **out) {
  tb__http_server_conn_t *conn = calloc(1, sizeof(*conn));
  if (conn == NULL)
    return TB_ENOMEM;
  conn->server = server;
  int rc = uv_tcp_init(server->loop, &conn->tcp);
  if (rc != 0) {
    free(conn);
    return rc;
  }
  conn->tcp.data = conn;
  uv_timer_init(server->loop, &conn->timer);
  conn->timer.data = conn;
  uv_idle_init(server->loop, &conn->written);
  conn->written.data = conn;
  conn->open_handles = 3;
  server->n_conns++;
  conn->next = server->conns;
  if (server->conns)
    server->conns->prev = conn;
  server->conns = conn;
  tb__http_parser_init(&conn->parser, &conn_parser_cbs, server->opts.max_body);
  conn->parser.data = conn;
  conn->idle_since = uv_now(server->loop);
  if (server->opts.tls_ctx != NULL && tb__tls_new(server->opts.tls_ctx, 1, NULL, &conn->tls) != 0)
    conn->tls = NULL;
  rc = uv_accept((uv_stream_t *)&server->tcp, (uv_stream_t *)&conn->tcp);
  if (rc == 0 && server->opts.tls_ctx != NULL && conn->tls == NULL)
    rc = TB_ENOMEM;
  if (rc == 0) {
    /* Answers are small and written whole: no Nagle delay. */
    uv_tcp_nodelay(&conn->tcp, 1);
    rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
  }
  if (rc != 0) {
    tb__http_conn_abort(conn, rc);
    return rc;
  }
  tb__http_conn_arm_timer(conn);
  *out = conn;
  return 0;
}

void tb__http_conn_abort(tb__http_server_conn_t *conn, int status) {
  if (conn->closing)
    return;
  conn->closing = 1;
  conn->parser.msg = NULL;
  tb__http_server_t *server = conn->server;
  /* Take the whole queue first: on_abort may answer (and so release)
   * requests, which must not touch this list any more. */
  tb__http_request_t *r = conn->head;
  conn->head = conn->tail = NULL;
  conn->n_queued = 0;
  while (r != NULL) {
    tb__http_request_t *next = r->next;
    r->next = r->prev = NULL;
    switch (r->state) {
      case TB__REQ_HANDLER:
        r->state = TB__REQ_DETACHED;
        r->conn = NULL;
        r->aborted = 1;
        server->n_detached++;
        if (r->on_abort != NULL)
          r->on_abort(r, status);
        break;
      case TB__REQ_RESPONDED:
        tb__http_req_finish(r, TB_ECLOSED);
        break;
      default:
        tb__http_req_put(r);
        break;
    }
    r = next;
  }
  /* A write that went out at once has no libuv callback to come: its
   * requests finish here, written.  Those of a write in flight finish in
   * its callback (UV_ECANCELED). */
  if (conn->written_at_once) {
    uv_idle_stop(&conn->written);
    conn->written_at_once = 0;
    conn->write_active = 0;
    tb__http_reqs_finish(tb__http_conn_take_writing(conn), 0);
  }
  uv_close((uv_handle_t *)&conn->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&conn->timer, on_handle_closed);
  uv_close((uv_handle_t *)&conn->written, on_handle_closed);
}

void tb__http_conn_drain(tb__http_server_conn_t *conn) {
  if (conn->closing)
    return;
  conn->draining = 1;
  if (conn->lingering) {
    tb__http_conn_abort(conn, TB_ECLOSED);
    return;
  }
  stop_parsing_input(conn);
  drop_partial(conn);
  tb__buf_reset(&conn->pending);
  if (conn->n_queued == 0 && !conn->write_active) {
    tb__http_conn_abort(conn, TB_ECLOSED);
    return;
  }
  /* The last answer gets "Connection: close"; after_write closes. */
  if (conn->tail != NULL)
    conn->tail->close_after = 1;
}

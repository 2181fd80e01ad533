/*
 * What server.c (listener), server_conn.c (reading, parsing, timers,
 * closing), server_response.c (answers, writes) and server_req.c (request
 * pool, the end of the close) share.  Not for handlers: they see server.h
 * only.  The calls go one way: server.c -> server_conn.c <-> server_response.c
 * -> server_req.c (the connection and its answers are one pair: a write's
 * end goes back to reading or closing); a router (router.c) is reached
 * through on_request and calls only the answers.
 *
 * Ownership: a connection owns the requests in its queue (arrival order,
 * PARSING -> HANDLER -> RESPONDED) and those of the write in flight
 * (WRITING).  A request the handler holds when the connection dies is
 * detached: it then belongs to the handler until it answers, and the
 * server counts it so that its close waits for it.
 */
#ifndef TB_HTTP_SERVER_INTERNAL_H
#define TB_HTTP_SERVER_INTERNAL_H

#include "http/server.h"

#define TB__HTTP_READ_BUF (64u * 1024u)
/* Bodies up to this size are copied next to the headers: one iovec. */
#define TB__HTTP_INLINE_BODY 4096u
/* Recycled request buffers larger than this are released. */
#define TB__HTTP_KEEP_CAP (64u * 1024u)
/* How long a closing connection reads and drops what the client still
 * sends, so that an early answer (413, 400) is not lost to a reset. */
#define TB__HTTP_LINGER_MS 2000u

struct tb__http_server_conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_idle_t written;                /* completes a write done at once */
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  tb__http_server_t *server;
  tb__http_server_conn_t *next, *prev;      /* server->conns */
  tb__http_parser_t parser;
  tb__http_request_t *head, *tail;   /* the queue, in arrival order */
  size_t n_queued;
  tb__http_request_t *writing;       /* the write in flight, in order */
  tb__http_request_t *writing_tail;
  uv_buf_t *iov;
  size_t iov_cap;
  tb__buf_t pending;                 /* read but not yet parsed */
  struct tb__tls_s *tls;            /* HTTPS: the connection's codec */
  tb__buf_t tls_plain;               /* HTTPS: the bytes one read decrypted */
  tb__buf_t tls_wire;                /* HTTPS: ciphertext of the write in flight */
  uint64_t idle_since;
  uint64_t header_start;
  uint64_t last_read;
  uint64_t linger_until;
  uint64_t timer_due;
  int open_handles;
  unsigned in_process : 1;      /* inside conn_process: flush later */
  unsigned dirty : 1;           /* answers to flush after conn_process */
  unsigned read_paused : 1;     /* too many requests queued */
  unsigned stop_parsing : 1;    /* error, Connection: close, upgrade, drain */
  unsigned write_active : 1;
  unsigned written_at_once : 1;     /* the write in flight went out whole in
                                       uv_try_write; `written` completes it */
  unsigned close_after_write : 1;
  unsigned read_eof : 1;
  unsigned draining : 1;        /* the server is closing */
  unsigned lingering : 1;
  unsigned closing : 1;         /* uv_close was called */
};

/* server_req.c */
tb__http_request_t *tb__http_req_get(tb__http_server_t *server);
void tb__http_req_put(tb__http_request_t *req);
void tb__http_server_maybe_finish(tb__http_server_t *server);
/* The handler's view of a request, in the two steps a connection takes
 * (server_req.c, beside the request pool, so that the fuzz target of
 * test/fuzz/ runs them as the connection does, without a socket):
 * fill_head once the head is complete (method, URL, path and query,
 * headers; sets head_seen), 0 or TB_ENOMEM; fill_body once the request is
 * (body, keep-alive). */
int tb__http_req_fill_head(tb__http_request_t *req);
void tb__http_req_fill_body(tb__http_request_t *req);

/* server_conn.c */
/* HTTPS: writes what the TLS codec queued of its own (handshake,
 * close_notify) in a write of its own, ordered with the answers. */
void tb__http_conn_tls_send(tb__http_server_conn_t *conn);
int tb__http_conn_start(tb__http_server_t *server, tb__http_server_conn_t **out);
/* Closes at once; requests with a handler are detached (on_abort). */
void tb__http_conn_abort(tb__http_server_conn_t *conn, int status);
/* The server closes: finish what handlers hold, take nothing new. */
void tb__http_conn_drain(tb__http_server_conn_t *conn);
/* A write finished and the connection lives on: read, flush, or close. */
void tb__http_conn_after_write(tb__http_server_conn_t *conn);
void tb__http_conn_arm_timer(tb__http_server_conn_t *conn);

/* server_response.c */
void tb__http_conn_flush(tb__http_server_conn_t *conn);
/* The write in flight is over (status 0 or an error): its requests finish,
 * then reading, flushing or closing goes on. */
void tb__http_conn_write_done(tb__http_server_conn_t *conn, int status);
/* server_conn.c: the idle callback of `written`. */
void tb__http_sconn_on_written(uv_idle_t *idle);
/* on_done(status), then back to the pool. */
void tb__http_req_finish(tb__http_request_t *req, int status);
/* Takes the requests of the write in flight off conn (writing, its tail
 * NULL), for tb__http_reqs_finish. */
tb__http_request_t *tb__http_conn_take_writing(tb__http_server_conn_t *conn);
/* tb__http_req_finish(status) of each request of a list linked by next. */
void tb__http_reqs_finish(tb__http_request_t *list, int status);

static inline void tb__http_queue_remove(tb__http_server_conn_t *c, tb__http_request_t *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    c->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    c->tail = r->prev;
  r->next = r->prev = NULL;
  c->n_queued--;
}

#endif /* TB_HTTP_SERVER_INTERNAL_H */

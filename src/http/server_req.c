/*
 * The HTTP server's request objects: their pool, the handler's view of a
 * parsed one (server.h), and the end of the server's close, which frees
 * that pool once the last connection, detached request and refused socket
 * is gone.  Every other file of the server calls down into this one and it
 * calls none of them back: the listener (server.c), the connections
 * (server_conn.c) and the answers (server_response.c) each let go of the
 * server here.  Not a place for I/O.
 *
 * Request objects are recycled through a free list on the server, with
 * their arena's first block and their buffers kept, so that a keep-alive
 * request costs no malloc once the server is warm.
 */
#include "http/server_internal.h"

#include <stdlib.h>
#include <string.h>

#define TB__HTTP_MAX_FREE_REQS 1024

static void free_req(tb__http_request_t *req) {
  tb__arena_free(&req->arena);
  tb__http_msg_free(&req->msg);
  tb__buf_free(&req->out);
  free(req);
}

void tb__http_server_maybe_finish(tb__http_server_t *server) {
  if (!server->closing || !server->tcp_closed || server->n_conns > 0 ||
      server->n_detached > 0 || server->n_refusing > 0 || server->close_cb == NULL)
    return;
  while (server->free_reqs != NULL) {
    tb__http_request_t *req = server->free_reqs;
    server->free_reqs = req->next;
    free_req(req);
  }
  server->n_free_reqs = 0;
  free(server->read_buf);
  server->read_buf = NULL;
  tb__http_server_close_cb cb = server->close_cb;
  server->close_cb = NULL;
  /* Last: the callback may free the server. */
  cb(server);
}

tb__http_request_t *tb__http_req_get(tb__http_server_t *server) {
  tb__http_request_t *req = server->free_reqs;
  if (req != NULL) {
    server->free_reqs = req->next;
    server->n_free_reqs--;
  } else {
    req = calloc(1, sizeof(*req));
    if (req == NULL)
      return NULL;
    tb__arena_init(&req->arena, 0);
    tb__http_msg_init(&req->msg);
    tb__buf_init(&req->out);
  }
  req->next = req->prev = NULL;
  req->server = server;
  return req;
}

void tb__http_req_put(tb__http_request_t *req) {
  tb__http_server_t *server = req->server;
  server->body_memory -= req->body_held;
  req->body_held = 0;
  tb__arena_reset(&req->arena);
  tb__http_msg_clear(&req->msg, TB__HTTP_KEEP_CAP);
  if (req->out.cap > TB__HTTP_KEEP_CAP)
    tb__buf_free(&req->out);
  tb__buf_reset(&req->out);
  /* The public and read-only fields go back to zero; the arena, message
   * and output buffer keep their memory. */
  memset(req, 0, offsetof(tb__http_request_t, arena));
  req->aborted = 0;
  req->keep_alive = 0;
  req->state = TB__REQ_PARSING;
  req->conn = NULL;
  req->next = req->prev = NULL;
  req->body_iov = NULL;
  req->n_body_iov = 0;
  req->close_after = 0;
  req->continue_state = 0;
  req->head_seen = 0;
  req->status = 0;
  if (server->n_free_reqs >= TB__HTTP_MAX_FREE_REQS || server->read_buf == NULL) {
    free_req(req);
    return;
  }
  req->next = server->free_reqs;
  server->free_reqs = req;
  server->n_free_reqs++;
}

/* Splits the URL as sent into path and query. */
static void split_url(tb__http_request_t *req) {
  tb_slice_t url = req->url;
  const char *p = url.base, *end = url.base + url.len;
  /* Absolute form (a proxy's request line): drop scheme and authority. */
  if (url.len > 7 && (memcmp(p, "http://", 7) == 0 ||
                      (url.len > 8 && memcmp(p, "https://", 8) == 0))) {
    p = (const char *)memchr(p, '/', (size_t)(end - p)) + 2;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    p = slash ? slash : end;
  }
  const char *q = memchr(p, '?', (size_t)(end - p));
  const char *path_end = q ? q : end;
  if (p == path_end) {
    req->path = TB_SLICE_LIT("/");
  } else {
    req->path.base = p;
    req->path.len = (size_t)(path_end - p);
  }
  if (q != NULL) {
    req->query.base = q + 1;
    req->query.len = (size_t)(end - q - 1);
  } else {
    req->query.base = end;
    req->query.len = 0;
  }
}

int tb__http_req_fill_head(tb__http_request_t *req) {
  tb__http_msg_t *m = &req->msg;
  const char *method = llhttp_method_name((llhttp_method_t)m->method);
  req->method.base = method;
  req->method.len = strlen(method);
  req->url = tb__http_msg_url(m);
  if (req->url.base == NULL)
    req->url.base = "";  /* an empty URL, before any head byte was kept */
  split_url(req);
  req->n_headers = m->n_headers;
  if (m->n_headers > 0) {
    tb__http_header_t *h = tb__arena_alloc(&req->arena, m->n_headers * sizeof(*h));
    if (h == NULL)
      return TB_ENOMEM;
    tb__http_msg_headers(m, h);
    req->headers = h;
  }
  req->head_seen = 1;
  return 0;
}

void tb__http_req_fill_body(tb__http_request_t *req) {
  tb__http_msg_t *m = &req->msg;
  req->body.base = m->body.base ? m->body.base : "";
  req->body.len = m->body.len;
  req->keep_alive = m->keep_alive && !m->upgrade;
  req->continue_state = 0;
}

const tb__http_header_t *tb__http_request_header(const tb__http_request_t *req,
                                                const char *name) {
  return tb__http_find_header(req->headers, req->n_headers, name);
}

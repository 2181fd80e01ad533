/*
 * The HTTP server's listener and the start of its graceful close (see
 * server.h).  Connections live in server_conn.c, answers in
 * server_response.c, request objects and the end of the close in
 * server_req.c.
 *
 * A connection accepted beyond max_connections gets a fixed 503 written
 * straight into its socket and is closed at once: not accepting it would
 * leave the client waiting in the kernel's backlog instead.
 */
#include "http/server_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/log.h"
#include "http/router.h"

int tb__http_server_init(uv_loop_t *loop, tb__http_server_t *server,
                         const tb__http_server_options_t *opts) {
  if (opts == NULL || (opts->router == NULL && opts->on_request == NULL))
    return TB_EINVAL;
  memset(server, 0, sizeof(*server));
  server->loop = loop;
  server->opts = *opts;
  tb__http_server_options_t *o = &server->opts;
  /* A router serves through on_request, so that the connections call
   * the handler alone and the router, which answers through
   * server_response.c, stays above them. */
  if (o->router != NULL)
    o->on_request = tb__http_router_serve;
  if (o->max_body == 0)
    o->max_body = TB_HTTP_DEFAULT_MAX_BODY;
  if (o->idle_timeout_ms == 0)
    o->idle_timeout_ms = 60000;
  if (o->header_timeout_ms == 0)
    o->header_timeout_ms = 10000;
  if (o->body_timeout_ms == 0)
    o->body_timeout_ms = 30000;
  if (o->max_pipeline == 0)
    o->max_pipeline = 32;
  if (o->request_timeout_ms == 0)
    o->request_timeout_ms = TB_HTTP_DEFAULT_REQUEST_TIMEOUT_MS;
  if (o->max_body_memory == 0)
    o->max_body_memory = o->max_body > TB_HTTP_DEFAULT_MAX_BODY_MEMORY
                             ? o->max_body : TB_HTTP_DEFAULT_MAX_BODY_MEMORY;
  if (o->max_body_memory < o->max_body)
    return TB_EINVAL;  /* a body of the largest size could never be read */
  if (o->max_connections == 0) {
    /* Each connection is a descriptor; leave some for files, the
     * database and the listener. */
    o->max_connections = TB_HTTP_DEFAULT_MAX_CONNECTIONS;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < o->max_connections + 64)
      o->max_connections = rl.rlim_cur > 64 + 16 ? (size_t)rl.rlim_cur - 64 : 16;
  }
  if (o->backlog <= 0)
    o->backlog = 511;
  server->read_buf = malloc(TB__HTTP_READ_BUF);
  if (server->read_buf == NULL)
    return TB_ENOMEM;
  int rc = uv_tcp_init(loop, &server->tcp);
  if (rc != 0) {
    free(server->read_buf);
    server->read_buf = NULL;
    return rc;
  }
  server->tcp.data = server;
  return 0;
}

static const char tb__busy_response[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Retry-After: 1\r\n"
    "Content-Length: 68\r\n"
    "Connection: close\r\n"
    "\r\n"
    "{\"error\": \"too many connections; retry later\", \"category\": \"server\"}";

static void on_refused_closed(uv_handle_t *h) {
  tb__http_server_t *server = h->data;
  free(h);
  server->n_refusing--;
  tb__http_server_maybe_finish(server);
}

/* Accepts the connection over the cap, answers 503 if the socket takes it
 * at once, and closes. */
static void refuse_connection(tb__http_server_t *server) {
  uv_tcp_t *tcp = malloc(sizeof(*tcp));
  if (tcp == NULL || uv_tcp_init(server->loop, tcp) != 0) {
    free(tcp);
    return;  /* it waits in the backlog; the next accept tries again */
  }
  tcp->data = server;
  server->n_refusing++;
  server->n_refused_conns++;
  if (uv_accept((uv_stream_t *)&server->tcp, (uv_stream_t *)tcp) == 0) {
    uv_buf_t b = uv_buf_init((char *)tb__busy_response, sizeof(tb__busy_response) - 1);
    (void)uv_try_write((uv_stream_t *)tcp, &b, 1);
  }
  uv_close((uv_handle_t *)tcp, on_refused_closed);
}

static void on_connection(uv_stream_t *listener, int status) {
  tb__http_server_t *server = listener->data;
  if (status < 0) {
    tb__warn("http server: accept failed: %s", uv_strerror(status));
    return;
  }
  if (server->closing)
    return;
  if (server->n_conns >= server->opts.max_connections) {
    tb__debug("http server: %zu connections open, refusing one more", server->n_conns);
    refuse_connection(server);
    return;
  }
  tb__http_server_conn_t *conn;
  int rc = tb__http_conn_start(server, &conn);
  if (rc != 0)
    tb__warn("http server: connection dropped: %s", tb_strerror(rc));
}

int tb__http_server_listen(tb__http_server_t *server, const char *host, int port) {
  if (server->closing || server->listening)
    return TB_EINVAL;
  if (port < 0 || port > 65535)
    return TB_EINVAL;
  struct sockaddr_storage ss;
  int rc = strchr(host, ':') != NULL
               ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
               : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
  if (rc != 0)
    return rc;
  rc = uv_tcp_bind(&server->tcp, (const struct sockaddr *)&ss, 0);
  if (rc != 0)
    return rc;
  rc = uv_listen((uv_stream_t *)&server->tcp, server->opts.backlog, on_connection);
  if (rc != 0)
    return rc;
  server->listening = 1;
  return 0;
}

int tb__http_server_port(const tb__http_server_t *server) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  int rc = uv_tcp_getsockname(&server->tcp, (struct sockaddr *)&ss, &len);
  if (rc != 0)
    return rc;
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void on_listener_closed(uv_handle_t *h) {
  tb__http_server_t *server = h->data;
  server->tcp_closed = 1;
  tb__http_server_maybe_finish(server);
}

void tb__http_server_close(tb__http_server_t *server, tb__http_server_close_cb close_cb) {
  if (server->closing)
    return;
  server->closing = 1;
  server->close_cb = close_cb;
  uv_close((uv_handle_t *)&server->tcp, on_listener_closed);
  /* Draining may close a connection at once, but its memory goes only in
   * its close callback, so walking the list stays safe. */
  for (tb__http_server_conn_t *c = server->conns; c != NULL; c = c->next)
    tb__http_conn_drain(c);
}

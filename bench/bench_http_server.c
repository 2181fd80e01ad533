/*
 * The server side of bench/http_vs_nginx.sh: Tinkerbell's HTTP server on
 * one loop, answering every request with the same small JSON body, until
 * SIGINT or SIGTERM.  It measures the HTTP layer alone (parsing, keep-alive,
 * response writing), the part every API route pays for.
 *
 * usage: bench_http_server [--host 127.0.0.1] [--port 8080] [--body TEXT]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "http/server.h"

static const char *body = "{\"status\":\"ok\"}";
static size_t body_len;

static void on_request(tb__http_request_t *req) {
  tb__http_respond_json(req, 200, body, body_len);
}

static uv_signal_t sigint, sigterm;
static tb__http_server_t server;

static void on_closed(uv_handle_t *h) {
  (void)h;
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  uv_close((uv_handle_t *)&sigint, on_closed);
  uv_close((uv_handle_t *)&sigterm, on_closed);
  tb__http_server_close(&server, NULL);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 8080;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      host = argv[++i];
    } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--body") == 0 && i + 1 < argc) {
      body = argv[++i];
    } else {
      fprintf(stderr, "usage: %s [--host H] [--port P] [--body TEXT]\n", argv[0]);
      return 2;
    }
  }
  body_len = strlen(body);
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t *loop = uv_default_loop();
  tb__http_server_options_t opts = { .on_request = on_request };
  int rc = tb__http_server_init(loop, &server, &opts);
  if (rc == 0)
    rc = tb__http_server_listen(&server, host, port);
  if (rc != 0) {
    fprintf(stderr, "bench_http_server: %s:%d: %s\n", host, port, tb_strerror(rc));
    return 1;
  }
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 1;
}

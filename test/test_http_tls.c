/*
 * http/ over TLS: the project's server and client on one loop with a
 * certificate made by the test (a self-signed P-256 certificate for
 * IP 127.0.0.1).  Verified against that certificate as the CA, with the
 * system store (refused), insecure (accepted), against the wrong CA
 * (refused); keep-alive, large bodies both ways, a plain-HTTP client
 * against the HTTPS server, and unusable certificate files.
 */
#include "tb_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/buf.h"
#include "http/client.h"
#include "http/router.h"
#include "http/server.h"
#include "http/tls.h"
#include "test_tls_certs.h"

/* ------------------------------------------------------------ the pair */

typedef struct {
  uv_loop_t loop;
  tb__http_router_t router;
  tb__http_server_t server;
  tb__http_client_t client;
  tb__tls_ctx_t *server_ctx, *client_ctx;
  char base[64];
  int closed;
  tb__http_client_req_t req;  /* what post_echo sends */
} pair_t;

/* POST /echo: the body back. */
static void on_echo(tb__http_request_t *req) {
  uv_buf_t b = uv_buf_init((char *)req->body.base, (unsigned)req->body.len);
  tb__http_respond(req, 200, NULL, 0, &b, 1);
}

static void on_closed_server(tb__http_server_t *s) {
  ((pair_t *)s->data)->closed++;
}

static void on_closed_client(tb__http_client_t *c) {
  ((pair_t *)c->data)->closed++;
}

/* ca NULL with insecure 0: the system store. */
static void pair_start(pair_t *p, const certs_t *server_certs, const char *ca, int insecure,
                       int client_tls) {
  memset(p, 0, sizeof(*p));
  ASSERT_OK(uv_loop_init(&p->loop));
  tb__http_router_init(&p->router);
  ASSERT_OK(tb__http_router_add(&p->router, "POST", "/echo", on_echo, p));
  tb_error_t err = { 0 };
  ASSERT_OK(tb__tls_ctx_server_new(server_certs->cert, server_certs->key, &p->server_ctx, &err));
  tb__http_server_options_t so = { .router = &p->router, .tls_ctx = p->server_ctx };
  ASSERT_OK(tb__http_server_init(&p->loop, &p->server, &so));
  ASSERT_OK(tb__http_server_listen(&p->server, "127.0.0.1", 0));
  snprintf(p->base, sizeof(p->base), "%s://127.0.0.1:%d", client_tls ? "https" : "http",
           tb__http_server_port(&p->server));
  ASSERT_OK(tb__tls_ctx_client_new(ca, insecure, &p->client_ctx, &err));
  tb__http_client_opts_t co = { .max_conns_per_origin = 2,
                               .tls_transport_new = tb__transport_tls_new,
                               .tls_ctx = p->client_ctx };
  ASSERT_OK(tb__http_client_init(&p->loop, &p->client, &co));
  p->server.data = p;
  p->client.data = p;
  tb__http_client_req_init(&p->req);
}

static void pair_finish(pair_t *p) {
  tb__http_client_req_free(&p->req);
  tb__http_client_close(&p->client, on_closed_client);
  tb__http_server_close(&p->server, on_closed_server);
  ASSERT_OK(uv_run(&p->loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(p->closed, 2);
  tb__tls_ctx_free(p->server_ctx);
  tb__tls_ctx_free(p->client_ctx);
  tb__http_router_free(&p->router);
  ASSERT_LOOP_CLOSE(&p->loop);
}

/* POSTs body to /echo and runs the loop until the answer. */
static int post_echo(pair_t *p, const char *body, size_t len) {
  tb__http_client_req_t *req = &p->req;
  static char url[96];
  snprintf(url, sizeof(url), "%s/echo", p->base);
  result_t r = { 0 };
  uv_buf_t b = uv_buf_init((char *)body, (unsigned)len);
  req->data = &r;
  req->method = "POST";
  req->url = (tb_slice_t){ url, strlen(url) };
  req->body = &b;
  req->n_body = 1;
  ASSERT_OK(tb__http_client_send(&p->client, req, on_result));
  while (r.calls == 0)
    uv_run(&p->loop, UV_RUN_ONCE);
  return r.status;
}

/* ------------------------------------------------------------ tests */

TEST(https_round_trips_verified_against_its_ca) {
  certs_t c;
  make_cert(&c, "/tmp/tb-tls-XXXXXX", "tinkerbell test");
  pair_t p;
  pair_start(&p, &c, c.cert, 0, 1);
  /* Keep-alive: ten requests, one connection, one handshake. */
  for (int i = 0; i < 10; i++) {
    char body[32];
    int n = snprintf(body, sizeof(body), "hello %d", i);
    ASSERT_OK(post_echo(&p, body, (size_t)n));
    ASSERT_EQ_INT(p.req.response.status, 200);
    ASSERT_MEM_EQ_STR(p.req.response.body, p.req.response.body_len, body);
  }
  ASSERT_EQ_INT(p.client.n_connects, 1);
  /* 3 MiB each way: many TLS records, many reads. */
  size_t big = 3u << 20;
  char *data = malloc(big);
  ASSERT(data != NULL);
  for (size_t i = 0; i < big; i++)
    data[i] = (char)('a' + (i * 7 + i / 4096) % 26);
  ASSERT_OK(post_echo(&p, data, big));
  ASSERT_EQ_INT(p.req.response.status, 200);
  ASSERT_EQ_INT(p.req.response.body_len, big);
  ASSERT_EQ_INT(memcmp(p.req.response.body, data, big), 0);
  free(data);
  pair_finish(&p);
  remove_certs(&c);
}

TEST(verification_refuses_unknown_certificates) {
  certs_t c, other;
  make_cert(&c, "/tmp/tb-tls-XXXXXX", "tinkerbell test");
  make_cert(&other, "/tmp/tb-tls-XXXXXX", "someone else");
  /* The system store knows nothing of a self-signed certificate. */
  pair_t p;
  pair_start(&p, &c, NULL, 0, 1);
  ASSERT_ERR(post_echo(&p, "x", 1), TB_ETLS);
  pair_finish(&p);
  /* Another CA: refused too. */
  pair_start(&p, &c, other.cert, 0, 1);
  ASSERT_ERR(post_echo(&p, "x", 1), TB_ETLS);
  pair_finish(&p);
  /* The explicit opt-out accepts it. */
  pair_start(&p, &c, NULL, 1, 1);
  ASSERT_OK(post_echo(&p, "ok", 2));
  ASSERT_MEM_EQ_STR(p.req.response.body, p.req.response.body_len, "ok");
  pair_finish(&p);
  remove_certs(&c);
  remove_certs(&other);
}

TEST(plain_http_against_https_fails_cleanly) {
  certs_t c;
  make_cert(&c, "/tmp/tb-tls-XXXXXX", "tinkerbell test");
  pair_t p;
  pair_start(&p, &c, c.cert, 0, 0);
  int rc = post_echo(&p, "x", 1);
  ASSERT(rc < 0);
  tb__http_client_req_free(&p.req);
  tb__http_client_req_init(&p.req);
  /* The server is unharmed: an HTTPS client gets through afterwards. */
  snprintf(p.base, sizeof(p.base), "https://127.0.0.1:%d", tb__http_server_port(&p.server));
  ASSERT_OK(post_echo(&p, "fine", 4));
  ASSERT_MEM_EQ_STR(p.req.response.body, p.req.response.body_len, "fine");
  pair_finish(&p);
  remove_certs(&c);
}

TEST(unusable_certificate_files_are_named) {
  certs_t c;
  make_cert(&c, "/tmp/tb-tls-XXXXXX", "tinkerbell test");
  tb__tls_ctx_t *ctx = NULL;
  tb_error_t err = { 0 };
  ASSERT_ERR(tb__tls_ctx_server_new("/nonexistent/cert.pem", c.key, &ctx, &err), TB_ETLS);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "certificate /nonexistent/cert.pem");
  tb_error_clear(&err);
  /* The key of the certificate must match it. */
  certs_t other;
  make_cert(&other, "/tmp/tb-tls-XXXXXX", "someone else");
  ASSERT_ERR(tb__tls_ctx_server_new(c.cert, other.key, &ctx, &err), TB_ETLS);
  ASSERT_STR_CONTAINS(tb_error_message(&err), other.key);
  tb_error_clear(&err);
  ASSERT_ERR(tb__tls_ctx_client_new("/nonexistent/ca.pem", 0, &ctx, &err), TB_ETLS);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "/nonexistent/ca.pem");
  tb_error_clear(&err);
  remove_certs(&c);
  remove_certs(&other);
}

TEST_LIST(
  TEST_ENTRY(https_round_trips_verified_against_its_ca),
  TEST_ENTRY(verification_refuses_unknown_certificates),
  TEST_ENTRY(plain_http_against_https_fails_cleanly),
  TEST_ENTRY(unusable_certificate_files_are_named),
)

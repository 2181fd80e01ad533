/*
 * The training server over HTTPS (tb_server_options_t.tls_cert_file and
 * tls_key_file): a request through the project's HTTP client verified
 * against the server's certificate, and the errors of unusable options.
 */
#include "tb_test.h"

#include "http/client.h"
#include "http/tls.h"
#include "test_tls_certs.h"
#include "tinkerbell/server.h"

static int closed;

static void on_server_closed(tb_server_t *s) {
  closed++;
}

static void on_client_closed(tb__http_client_t *c) {
  closed++;
}

/* Each test's setup: a fresh certificate and key, and a loop. */
static void certs_and_loop(certs_t *c, uv_loop_t *loop) {
  make_cert(c, "/tmp/tb-server-tls-XXXXXX", "tinkerbell server");
  ASSERT_OK(uv_loop_init(loop));
}

TEST(healthz_over_https) {
  certs_t c;
  uv_loop_t loop;
  certs_and_loop(&c, &loop);
  tb_server_t server;
  tb_server_options_t o = { .tls_cert_file = c.cert, .tls_key_file = c.key };
  ASSERT_OK(tb_server_init(&loop, &server, &o));
  ASSERT_OK(tb_server_listen(&server, "127.0.0.1", 0));
  tb__tls_ctx_t *ctx;
  tb__http_client_t client;
  https_client_init(&loop, &client, c.cert, &ctx);
  char url[64];
  tb__http_client_req_t req;
  result_t r = { 0 };
  https_get_healthz(&client, &req, url, tb_server_port(&server), on_result, &r);
  while (r.calls == 0)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_OK(r.status);
  ASSERT_EQ_INT(req.response.status, 200);
  char body[128];
  snprintf(body, sizeof(body), "%.*s", (int)req.response.body_len, req.response.body);
  ASSERT_STR_CONTAINS(body, "ok");
  tb__http_client_req_free(&req);
  tb__http_client_close(&client, on_client_closed);
  tb_server_close(&server, on_server_closed);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(closed, 2);
  tb__tls_ctx_free(ctx);
  ASSERT_LOOP_CLOSE(&loop);
  remove_certs(&c);
}

TEST(unusable_tls_options) {
  certs_t c;
  uv_loop_t loop;
  certs_and_loop(&c, &loop);
  tb_server_t server;
  tb_server_options_t o = { .tls_cert_file = c.cert };
  ASSERT_ERR(tb_server_init(&loop, &server, &o), TB_EINVAL);
  ASSERT_STR_CONTAINS(server.message, "both a certificate and its key");
  o.tls_cert_file = "/nonexistent/cert.pem";
  o.tls_key_file = c.key;
  ASSERT_ERR(tb_server_init(&loop, &server, &o), TB_ETLS);
  ASSERT_STR_CONTAINS(server.message, "/nonexistent/cert.pem");
  /* A key file that holds a certificate is refused too. */
  o.tls_cert_file = c.cert;
  o.tls_key_file = c.cert;
  ASSERT_ERR(tb_server_init(&loop, &server, &o), TB_ETLS);
  ASSERT_STR_CONTAINS(server.message, "key");
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_LOOP_CLOSE(&loop);
  remove_certs(&c);
}

TEST_LIST(
  TEST_ENTRY(healthz_over_https),
  TEST_ENTRY(unusable_tls_options),
)

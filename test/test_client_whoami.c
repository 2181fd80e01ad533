/*
 * The RestClient's whoami: the claims of a JWT API key, no request sent
 * (the base URL names a port nothing listens on), the failures of other
 * keys, cancellation, and a close while a whoami is pending.
 */
#include "tb_test.h"

#include "tinkerbell/rest_client.h"

/* {"iss":"passport-tinker","sub":"urn:user:42","email":"ada@example.com"} */
#define JWT_OK                                                                 \
  "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."                                      \
  "eyJpc3MiOiJwYXNzcG9ydC10aW5rZXIiLCJzdWIiOiJ1cm46dXNlcjo0MiIsImVtYWlsIjoi" \
  "YWRhQGV4YW1wbGUuY29tIn0.sig"
/* {"iss":"someone-else","sub":"urn:user:42"} */
#define JWT_OTHER_ISSUER                                                        \
  "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."                                      \
  "eyJpc3MiOiJzb21lb25lLWVsc2UiLCJzdWIiOiJ1cm46dXNlcjo0MiJ9.sig"
/* {"iss":"passport-x"} */
#define JWT_NO_SUB "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJwYXNzcG9ydC14In0.sig"

static int closed;

static void on_closed(tb_service_client_t *sc) {
  closed = 1;
}

static void open_client(uv_loop_t *loop, tb_service_client_t *sc, tb_rest_client_t *rc,
                        const char *key) {
  ASSERT_OK(uv_loop_init(loop));
  tb_client_config_t cfg = { .base_url = "http://127.0.0.1:9", .api_key = key };
  tb_error_t err = { 0 };
  ASSERT_OK(tb_service_client_init(loop, sc, &cfg, &err));
  ASSERT_OK(tb_rest_client_init(rc, sc));
}

static void close_client(uv_loop_t *loop, tb_service_client_t *sc) {
  closed = 0;
  tb_service_client_close(sc, on_closed);
  ASSERT_OK(uv_run(loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(closed, 1);
  ASSERT_LOOP_CLOSE(loop);
}

TEST(claims_of_a_jwt_key) {
  uv_loop_t loop;
  tb_service_client_t sc;
  tb_rest_client_t rc;
  open_client(&loop, &sc, &rc, JWT_OK);
  tb_whoami_t *who = NULL;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_rest_client_whoami_sync(&rc, &who, &err));
  ASSERT_STR_EQ(who->user_urn, "urn:user:42");
  ASSERT_STR_EQ(who->email, "ada@example.com");
  tb_whoami_free(who);
  /* The future completes on a later turn, never inside the call. */
  tb_future_t *f;
  ASSERT_OK(tb_rest_client_whoami(&rc, &f));
  ASSERT_EQ_INT(tb_future_is_done(f), 0);
  ASSERT_OK(tb_future_wait(f, 5000));
  ASSERT(tb_future_result(f, &tb_result_whoami) != NULL);
  tb_future_free(f);
  close_client(&loop, &sc);
}

TEST(other_keys_fail_with_the_reason) {
  static const struct {
    const char *key, *want;
    int code;
  } cases[] = {
    { "tml-0123456789abcdef", "not a JWT", TB_EUNSUPPORTED },
    { JWT_OTHER_ISSUER, "iss: someone-else", TB_EUNSUPPORTED },
    { JWT_NO_SUB, "no sub", TB_EFIELD },
    { "a.!!!.b", "not a JSON object", TB_EUNSUPPORTED },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uv_loop_t loop;
    tb_service_client_t sc;
    tb_rest_client_t rc;
    open_client(&loop, &sc, &rc, cases[i].key);
    tb_whoami_t *who = NULL;
    tb_error_t err = { 0 };
    ASSERT_ERR(tb_rest_client_whoami_sync(&rc, &who, &err), cases[i].code);
    ASSERT(who == NULL);
    ASSERT_EQ_INT(err.category, TB_CATEGORY_USER);
    ASSERT_STR_CONTAINS(tb_error_message(&err), cases[i].want);
    tb_error_clear(&err);
    close_client(&loop, &sc);
  }
}

TEST(cancel_and_close_while_pending) {
  uv_loop_t loop;
  tb_service_client_t sc;
  tb_rest_client_t rc;
  open_client(&loop, &sc, &rc, JWT_OK);
  tb_future_t *f, *g;
  ASSERT_OK(tb_rest_client_whoami(&rc, &f));
  ASSERT_OK(tb_future_cancel(f));
  ASSERT_ERR(tb_future_wait(f, 5000), TB_ECANCELED);
  ASSERT_EQ_INT(f->error.category, TB_CATEGORY_CANCELLED);
  tb_future_free(f);
  /* One still pending when the client closes, and one freed unfinished:
   * the close waits for both, nothing leaks. */
  ASSERT_OK(tb_rest_client_whoami(&rc, &f));
  ASSERT_OK(tb_rest_client_whoami(&rc, &g));
  tb_future_free(g);
  closed = 0;
  tb_service_client_close(&sc, on_closed);
  ASSERT_ERR(tb_rest_client_whoami(&rc, &g), TB_ECLOSING);
  ASSERT_OK(uv_run(&loop, UV_RUN_DEFAULT));
  ASSERT_EQ_INT(closed, 1);
  ASSERT(tb_future_is_done(f));
  tb_future_free(f);
  ASSERT_LOOP_CLOSE(&loop);
}

TEST_LIST(
  TEST_ENTRY(claims_of_a_jwt_key),
  TEST_ENTRY(other_keys_fail_with_the_reason),
  TEST_ENTRY(cancel_and_close_while_pending),
)

/*
 * core/: error table, buffers, arena, JSON path errors, AdamW defaults.
 */
#include "tb_test.h"

#include "core/arena.h"
#include "core/buf.h"
#include "core/json.h"
#include "core/json_scan.h"
#include "core/log.h"
#include "engine/optim.h"
#include "tinkerbell/types.h"

TEST(error_names_and_messages) {
  ASSERT_STR_EQ(tb_err_name(TB_EPROTO), "TB_EPROTO");
  ASSERT_STR_EQ(tb_err_name(TB_ENOMEM), "ENOMEM");
  ASSERT_STR_EQ(tb_err_name(UV_ECONNREFUSED), "ECONNREFUSED");
  ASSERT_STR_EQ(tb_err_name(0), "OK");
  ASSERT_STR_EQ(tb_strerror(TB_EDNS), "host name could not be resolved");
  ASSERT_STR_EQ(tb_strerror(UV_ECONNRESET), uv_strerror(UV_ECONNRESET));
  ASSERT_STR_EQ(tb_strerror(-123456), "unknown error");
  /* Our codes never collide with libuv's. */
  ASSERT_LT(TB_EPROTO, UV_ERRNO_MAX);
  ASSERT_LT(TB_EUNSUPPORTED, TB_EPROTO + 100);
}

TEST(rich_error_owns_its_strings) {
  tb_error_t e = { 0 };
  ASSERT_EQ_INT(tb_error_set(&e, TB_EHTTP, TB_CATEGORY_SERVER, "status %d", 503),
                TB_EHTTP);
  ASSERT_STR_EQ(e.message, "status 503");
  ASSERT_OK(tb_error_set_request_id(&e, "req-1"));
  tb_error_t copy = { 0 };
  ASSERT_OK(tb_error_copy(&copy, &e));
  tb_error_clear(&e);
  ASSERT_STR_EQ(copy.message, "status 503");
  ASSERT_STR_EQ(copy.request_id, "req-1");
  ASSERT_EQ_INT(copy.category, TB_CATEGORY_SERVER);
  ASSERT_STR_EQ(tb_category_name(copy.category), "server");
  tb_error_clear(&copy);
  ASSERT_EQ_INT(copy.code, 0);
  ASSERT_STR_EQ(tb_error_message(&(tb_error_t){ .code = TB_ECLOSED }),
                tb_strerror(TB_ECLOSED));
}

/* tb__array_grow doubles from 16 to at least n, keeps what it held, and
 * refuses a size that overflows without touching the array. */
TEST(array_grow_doubles_and_refuses_overflow) {
  int *a = NULL;
  size_t cap = 0;
  ASSERT_OK(tb__array_grow((void **)&a, &cap, 3, sizeof(*a)));
  ASSERT_EQ_INT(cap, 16);
  for (int i = 0; i < 16; i++)
    a[i] = i;
  ASSERT_OK(tb__array_grow((void **)&a, &cap, 16, sizeof(*a)));
  ASSERT_EQ_INT(cap, 16);
  ASSERT_OK(tb__array_grow((void **)&a, &cap, 100, sizeof(*a)));
  ASSERT_EQ_INT(cap, 128);
  for (int i = 0; i < 16; i++)
    ASSERT_EQ_INT(a[i], i);
  int *before = a;
  ASSERT_EQ_INT(tb__array_grow((void **)&a, &cap, SIZE_MAX / 2, sizeof(*a)),
                TB_ENOMEM);
  ASSERT_EQ_INT(tb__array_grow((void **)&a, &cap, SIZE_MAX, 1), TB_ENOMEM);
  ASSERT(a == before);
  ASSERT_EQ_INT(cap, 128);
  free(a);
}

TEST(buf_grows_and_consumes) {
  tb__buf_t b = TB_BUF_INIT;
  for (int i = 0; i < 1000; i++)
    ASSERT_OK(tb__buf_printf(&b, "%d,", i));
  ASSERT_EQ_INT(b.len, 3890);
  ASSERT_OK(tb__buf_terminate(&b));
  ASSERT_EQ_INT(strncmp(b.base, "0,1,2,", 6), 0);
  tb__buf_consume(&b, 2);
  ASSERT_EQ_INT(b.base[0], '1');
  tb__buf_consume(&b, b.len + 5);
  ASSERT_EQ_INT(b.len, 0);
  size_t n;
  ASSERT_OK(tb__buf_append_str(&b, "abc"));
  char *s = tb__buf_steal(&b, &n);
  ASSERT_STR_EQ(s, "abc");
  ASSERT_EQ_INT(n, 3);
  ASSERT(b.base == NULL);
  free(s);
  tb__buf_free(&b);
  ASSERT(tb__slice_case_eq_str(TB_SLICE_LIT("Content-Length"), "content-length"));
  ASSERT(!tb__slice_eq_str(TB_SLICE_LIT("abc"), "abcd"));
}

TEST(arena_alignment_and_large_blocks) {
  tb__arena_t a;
  tb__arena_init(&a, 256);
  for (int i = 0; i < 100; i++) {
    char *p = tb__arena_alloc(&a, (size_t)(i % 7) + 1);
    ASSERT(p != NULL);
    ASSERT_EQ_INT((uintptr_t)p % 16, 0);
    memset(p, 0xab, (size_t)(i % 7) + 1);
  }
  char *big = tb__arena_alloc(&a, 10000);
  ASSERT(big != NULL);
  memset(big, 1, 10000);
  char *s = tb__arena_strndup(&a, "hello world", 5);
  ASSERT_STR_EQ(s, "hello");
  int *z = tb__arena_calloc(&a, 10, sizeof(int));
  ASSERT_EQ_INT(z[9], 0);
  ASSERT(tb__arena_calloc(&a, SIZE_MAX / 2, 4) == NULL);
  tb__arena_reset(&a);
  ASSERT_EQ_INT(a.total, 0);
  ASSERT(tb__arena_alloc(&a, 8) != NULL);
  tb__arena_free(&a);
}

/* A size within 16 bytes of SIZE_MAX passes the arena's own check, and a
 * dedicated block's header must not wrap it around to a tiny malloc (then
 * overrun by the caller's memset: a tensor of 2^61 - 3 int64 values). */
TEST(arena_refuses_sizes_its_block_header_would_wrap) {
  tb__arena_t a;
  tb__arena_init(&a, 0);
  /* Every size that rounds up to the last 16 bytes (larger ones than
   * those never reach malloc; smaller ones are malloc's to refuse). */
  for (size_t back = 16; back <= 30; back++)
    ASSERT(tb__arena_alloc(&a, SIZE_MAX - back) == NULL);
  ASSERT(tb__arena_calloc(&a, ((size_t)1 << 61) - 3, 8) == NULL);
  tb__arena_free(&a);
}

TEST(json_paths_in_errors) {
  tb_error_t err = { 0 };
  json_t *doc;
  const char *text =
      "{\"data\":[{},{},{},{\"loss_fn_inputs\":{\"weights\":\"x\"}}],"
      "\"n\":3.0,\"f\":1.5,\"big\":100,\"s\":\"hi\",\"b\":true}";
  ASSERT_OK(tb__json_parse((tb_slice_t){ text, strlen(text) }, &doc, &err));

  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  json_t *data, *lfi;
  ASSERT_OK(tb__json_get_array(&c, doc, "data", TB_JSON_REQUIRED, &data));
  size_t m0 = tb__jctx_push_key(&c, "data");
  size_t m1 = tb__jctx_push_index(&c, 3);
  ASSERT_OK(tb__json_get_object(&c, json_array_get(data, 3), "loss_fn_inputs",
                                TB_JSON_REQUIRED, &lfi));
  size_t m2 = tb__jctx_push_key(&c, "loss_fn_inputs");
  ASSERT_ERR(tb__json_get_array(&c, lfi, "weights", TB_JSON_REQUIRED, &data),
             TB_EFIELD);
  ASSERT_STR_EQ(err.message,
                "data[3].loss_fn_inputs.weights: expected an array, got a string");
  ASSERT_EQ_INT(err.category, TB_CATEGORY_USER);
  tb__jctx_pop(&c, m2);
  tb__jctx_pop(&c, m1);
  tb__jctx_pop(&c, m0);
  ASSERT_STR_EQ(tb__jctx_path(&c), "body");

  int64_t n;
  ASSERT_OK(tb__json_get_int(&c, doc, "n", TB_JSON_REQUIRED, 0, 10, &n));
  ASSERT_EQ_INT(n, 3);
  ASSERT_ERR(tb__json_get_int(&c, doc, "f", TB_JSON_REQUIRED, 0, 10, &n),
             TB_EFIELD);
  ASSERT_STR_EQ(err.message, "f: expected an integer, got 1.5");
  ASSERT_ERR(tb__json_get_int(&c, doc, "big", TB_JSON_REQUIRED, 0, 10, &n),
             TB_EFIELD);
  ASSERT_STR_EQ(err.message, "big: 100 is out of range [0, 10]");
  ASSERT_EQ_INT(tb__json_get_int(&c, doc, "absent", TB_JSON_OPTIONAL, 0, 1, &n), 1);
  ASSERT_ERR(tb__json_get_int(&c, doc, "absent", TB_JSON_REQUIRED, 0, 1, &n),
             TB_EFIELD);
  ASSERT_STR_EQ(err.message, "absent: required field is missing");

  double d;
  ASSERT_OK(tb__json_get_double(&c, doc, "f", TB_JSON_REQUIRED, &d));
  ASSERT_NEAR(d, 1.5, 0, 0);
  tb_slice_t s;
  ASSERT_OK(tb__json_get_string(&c, doc, "s", TB_JSON_REQUIRED, &s));
  ASSERT_MEM_EQ_STR(s.base, s.len, "hi");
  int b;
  ASSERT_OK(tb__json_get_bool(&c, doc, "b", TB_JSON_REQUIRED, &b));
  ASSERT_EQ_INT(b, 1);
  ASSERT_ERR(tb__json_get_bool(&c, doc, "s", TB_JSON_REQUIRED, &b), TB_EFIELD);
  ASSERT_STR_EQ(err.message, "s: expected a boolean, got a string");
  json_decref(doc);

  ASSERT_ERR(tb__json_parse(TB_SLICE_LIT("{\"a\":1,\"a\":2}"), &doc, &err),
             TB_EJSON);
  ASSERT_STR_CONTAINS(err.message, "duplicate");
  ASSERT_ERR(tb__json_parse(TB_SLICE_LIT("{\"a\":"), &doc, &err), TB_EJSON);
  ASSERT_STR_CONTAINS(err.message, "body: invalid JSON at line 1");
  tb_error_clear(&err);
}

typedef struct {
  char log[512];
  int stop_at;   /* give up at this member (1-based); 0: never */
  int n;
} jscan_log_t;

static int jscan_record(void *ctx, const tb__jscan_member_t *m) {
  jscan_log_t *l = ctx;
  static const char *const types[] = { "s", "n", "t", "f", "0" };
  size_t len = strlen(l->log);
  snprintf(l->log + len, sizeof(l->log) - len, "%.*s=%s:%.*s;", (int)m->key.len, m->key.base,
           types[m->type], (int)m->str.len, m->str.base);
  return ++l->n == l->stop_at;
}

static int jscan(const char *text, jscan_log_t *l) {
  memset(l, 0, sizeof(*l));
  return tb__jscan_object((tb_slice_t){ text, strlen(text) }, jscan_record, l);
}

TEST(json_scan_reads_flat_objects_only) {
  jscan_log_t l;
  ASSERT_EQ_INT(jscan(" { \"type\" : \"try_again\", \"n\":-1.5e3,\"a\":true,\"b\":false,"
                      "\"c\":null,\"e\":\"\" } \n", &l), 1);
  ASSERT_STR_EQ(l.log, "type=s:try_again;n=n:-1.5e3;a=t:;b=f:;c=0:;e=s:;");
  ASSERT_EQ_INT(jscan("{}", &l), 1);
  ASSERT_EQ_INT(l.n, 0);
  /* Everything else is left to jansson: nesting, escapes, bad JSON. */
  static const char *const others[] = {
    "", "[]", "{", "{\"a\":1", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":{}}",
    "{\"a\":[1]}", "{\"a\":\"x\\\"y\"}", "{\"a\\n\":1}", "{\"a\":\"\x01\"}", "{\"a\":01}",
    "{\"a\":1.}", "{\"a\":-}", "{\"a\":1e}", "{\"a\":tru}", "{\"a\":1} x", "{\"a\":1}{}",
    "{\"a\":1 \"b\":2}", "{\"a\":123456789012345678901234567890123456789012345678901234567890123456}",
  };
  for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
    if (jscan(others[i], &l) != 0)
      fprintf(stderr, "accepted: %s\n", others[i]);
    ASSERT_EQ_INT(jscan(others[i], &l), 0);
  }
  /* The callback may give up. */
  jscan_log_t g;
  memset(&g, 0, sizeof(g));
  g.stop_at = 2;
  const char *t = "{\"a\":1,\"b\":2,\"c\":3}";
  ASSERT_EQ_INT(tb__jscan_object((tb_slice_t){ t, strlen(t) }, jscan_record, &g), 0);
  ASSERT_EQ_INT(g.n, 2);
  tb__jscan_member_t m = { TB_SLICE_LIT("k"), TB_JSCAN_STRING, TB_SLICE_LIT("try_again"), 0 };
  ASSERT(tb__jscan_is(&m, "try_again"));
  ASSERT(!tb__jscan_is(&m, "try_agai"));
  m.type = TB_JSCAN_TRUE;
  ASSERT(tb__jscan_is(&m, "true"));
}

/* Escapes s (n bytes) and checks the result, quoted, is valid JSON whose
 * bytes are want. */
static void expect_escape(const char *s, size_t n, const char *want) {
  char out[256];
  ASSERT_LE(n * 6, sizeof(out) - 3);
  out[0] = '"';
  size_t len = tb__json_escape(out + 1, s, n);
  ASSERT_LE(len, n * 6);
  out[len + 1] = '"';
  out[len + 2] = '\0';
  ASSERT_MEM_EQ_STR(out + 1, len, want);
  json_error_t e;
  json_t *v = json_loadb(out, len + 2, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  if (v == NULL)
    tb_test_fail(__FILE__, __LINE__, "not JSON: %s (%s)", out, e.text);
  json_decref(v);
}

#define FFFD "\xef\xbf\xbd"

TEST(json_escape_keeps_json_valid) {
  expect_escape("plain", 5, "plain");
  expect_escape("a\"b\\c\n\x01", 7, "a\\\"b\\\\c\\u000a\\u0001");
  /* Well-formed UTF-8 passes as it is: 2, 3 and 4 bytes. */
  expect_escape("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  /* Every byte of an ill-formed sequence becomes U+FFFD. */
  expect_escape("\xff", 1, FFFD);
  expect_escape("x\x80y", 3, "x" FFFD "y");                    /* stray continuation */
  expect_escape("\xc0\xaf", 2, FFFD FFFD);                     /* overlong '/' */
  expect_escape("\xe0\x80\xaf", 3, FFFD FFFD FFFD);            /* overlong, 3 bytes */
  expect_escape("\xed\xa0\x80", 3, FFFD FFFD FFFD);            /* a surrogate */
  expect_escape("\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD);   /* above U+10FFFF */
  expect_escape("\xf5\x80", 2, FFFD FFFD);
  expect_escape("ab\xe2\x82", 4, "ab" FFFD FFFD);              /* cut short */
  expect_escape("\xc3(", 2, FFFD "(");
  expect_escape("\"\xff\"", 3, "\\\"" FFFD "\\\"");
  /* NUL bytes inside the length are characters like any other. */
  expect_escape("a\0b", 3, "a\\u0000b");
}

TEST(log_levels_parse) {
  ASSERT_EQ_INT(tb__log_parse_level("debug"), TB_LOG_DEBUG);
  ASSERT_EQ_INT(tb__log_parse_level("warn"), TB_LOG_WARN);
  ASSERT_EQ_INT(tb__log_parse_level("loud"), -1);
  tb__log_set_level(TB_LOG_ERROR);
  ASSERT(!TB_LOG_ENABLED(TB_LOG_INFO));
  ASSERT(TB_LOG_ENABLED(TB_LOG_ERROR));
}

/* Bytes outside ASCII in a key or a string are left to jansson, which
 * checks that they are UTF-8: the reader must not accept what JSON does
 * not, such as a request_id with a byte 0xff. */
TEST(json_scan_leaves_non_ascii_to_jansson) {
  jscan_log_t l;
  ASSERT_EQ_INT(jscan("{\"request_id\":\"req-\xff\"}", &l), 0);
  ASSERT_EQ_INT(jscan("{\"\xc3\":1}", &l), 0);
  ASSERT_EQ_INT(jscan("{\"k\":\"\xe2\x9c\x93\"}", &l), 0);
  ASSERT_EQ_INT(jscan("{\"k\":\"ascii\"}", &l), 1);
}

/* The public API's AdamW defaults (doubles) and the engine's (floats)
 * come from core/adamw.h: Tinker's values, the same on both sides. */
TEST(adamw_defaults_one_source) {
  tb_adamw_params_t d;
  memset(&d, 0xff, sizeof(d));
  tb_adamw_params_default(&d);
  tb__adam_params_t f;
  memset(&f, 0xff, sizeof(f));
  tb__adam_params_default(&f);
  const double want[6] = { 1e-4, 0.9, 0.95, 1e-12, 0.0, 0.0 };
  const double got_d[6] = { d.learning_rate, d.beta1, d.beta2, d.eps, d.weight_decay,
                            d.grad_clip_norm };
  const float got_f[6] = { f.learning_rate, f.beta1, f.beta2, f.eps, f.weight_decay,
                           f.grad_clip_norm };
  for (int i = 0; i < 6; i++) {
    ASSERT(got_d[i] == want[i]);
    ASSERT(got_f[i] == (float)want[i]);
    ASSERT(got_f[i] == (float)got_d[i]);
  }
}

TEST_LIST(
  TEST_ENTRY(array_grow_doubles_and_refuses_overflow),
  TEST_ENTRY(adamw_defaults_one_source),
  TEST_ENTRY(json_scan_reads_flat_objects_only),
  TEST_ENTRY(error_names_and_messages),
  TEST_ENTRY(arena_refuses_sizes_its_block_header_would_wrap),
  TEST_ENTRY(rich_error_owns_its_strings),
  TEST_ENTRY(buf_grows_and_consumes),
  TEST_ENTRY(arena_alignment_and_large_blocks),
  TEST_ENTRY(json_paths_in_errors),
  TEST_ENTRY(json_escape_keeps_json_valid),
  TEST_ENTRY(log_levels_parse),
  TEST_ENTRY(json_scan_leaves_non_ascii_to_jansson),
)

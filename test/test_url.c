/*
 * http/url: parsing of absolute http(s) URLs, the request target and Host
 * value built from them, and resolution of redirect references.
 */
#include "tb_test.h"

#include "http/http.h"
#include "http/url.h"

static tb__url_t parse_ok(const char *s) {
  tb__url_t u;
  int rc = tb__url_parse(&u, s, strlen(s));
  if (rc != 0)
    tb_test_fail(__FILE__, __LINE__, "parse \"%s\": %s", s, tb_err_name(rc));
  return u;
}

/* What one of the appenders writes for u, as a string (static). */
static char *text_of(int (*append)(const tb__url_t *, tb__buf_t *), const tb__url_t *u) {
  static char out[512];
  tb__buf_t b = TB_BUF_INIT;
  ASSERT_OK(append(u, &b));
  snprintf(out, sizeof(out), "%.*s", (int)b.len, b.base);
  tb__buf_free(&b);
  return out;
}
#define target_of(u) text_of(tb__url_append_target, (u))
#define authority_of(u) text_of(tb__url_append_authority, (u))

TEST(parses_plain_http) {
  tb__url_t u = parse_ok("http://example.com/a/b?x=1&y=2#frag");
  ASSERT_MEM_EQ_STR(u.scheme.base, u.scheme.len, "http");
  ASSERT_MEM_EQ_STR(u.host.base, u.host.len, "example.com");
  ASSERT_EQ_INT(u.port, 80);
  ASSERT_EQ_INT(u.tls, 0);
  ASSERT_EQ_INT(u.explicit_port, 0);
  ASSERT_MEM_EQ_STR(u.path.base, u.path.len, "/a/b");
  ASSERT_MEM_EQ_STR(u.query.base, u.query.len, "?x=1&y=2");
  ASSERT_STR_EQ(target_of(&u), "/a/b?x=1&y=2");
  ASSERT_STR_EQ(authority_of(&u), "example.com");
}

TEST(default_and_explicit_ports) {
  tb__url_t u = parse_ok("https://api.example.org");
  ASSERT_EQ_INT(u.tls, 1);
  ASSERT_EQ_INT(u.port, 443);
  ASSERT_STR_EQ(target_of(&u), "/");
  ASSERT_STR_EQ(authority_of(&u), "api.example.org");

  u = parse_ok("HTTP://Host:8080");
  ASSERT_EQ_INT(u.tls, 0);
  ASSERT_EQ_INT(u.port, 8080);
  ASSERT_EQ_INT(u.explicit_port, 1);
  ASSERT_STR_EQ(authority_of(&u), "Host:8080");

  /* The default port written out is still the default in Host. */
  u = parse_ok("https://h:443/x");
  ASSERT_EQ_INT(u.port, 443);
  ASSERT_STR_EQ(authority_of(&u), "h");
  u = parse_ok("http://h:443/x");
  ASSERT_STR_EQ(authority_of(&u), "h:443");

  /* An empty port means the default (RFC 3986 3.2.3). */
  u = parse_ok("http://h:/x");
  ASSERT_EQ_INT(u.port, 80);
  ASSERT_EQ_INT(u.explicit_port, 0);

  u = parse_ok("http://127.0.0.1:65535?q");
  ASSERT_EQ_INT(u.port, 65535);
  ASSERT_MEM_EQ_STR(u.host.base, u.host.len, "127.0.0.1");
  ASSERT_STR_EQ(target_of(&u), "/?q");
}

TEST(ipv6_literals) {
  tb__url_t u = parse_ok("http://[::1]:8000/v1/x");
  ASSERT_EQ_INT(u.ipv6, 1);
  ASSERT_MEM_EQ_STR(u.host.base, u.host.len, "::1");
  ASSERT_EQ_INT(u.port, 8000);
  ASSERT_STR_EQ(authority_of(&u), "[::1]:8000");
  ASSERT_STR_EQ(target_of(&u), "/v1/x");

  u = parse_ok("https://[2001:db8::a:b]");
  ASSERT_MEM_EQ_STR(u.host.base, u.host.len, "2001:db8::a:b");
  ASSERT_EQ_INT(u.port, 443);
  ASSERT_STR_EQ(authority_of(&u), "[2001:db8::a:b]");

  u = parse_ok("http://[::ffff:127.0.0.1]/");
  ASSERT_MEM_EQ_STR(u.host.base, u.host.len, "::ffff:127.0.0.1");
}

TEST(errors) {
  static const char *bad[] = {
    "",
    "example.com/x",            /* no scheme */
    "ftp://example.com/",       /* unknown scheme */
    "http:/example.com",        /* one slash */
    "http://",                  /* no host */
    "http:///path",             /* empty host */
    "http://:80/",              /* empty host with port */
    "http://user:pw@host/",     /* user information */
    "http://host:0/",           /* port 0 */
    "http://host:65536/",       /* port too large */
    "http://host:8o/",          /* port not a number */
    "http://host:123456/",
    "http://[::1/",             /* unclosed bracket */
    "http://[::1]x/",           /* junk after bracket */
    "http://[not-v6]/",
    "http://[]/",
    "http://ho st/",            /* space in host */
    "http://host/a b",          /* space in path */
    "http://host/a\tb",
    "http://host/\x7f",
    "http://host/caf\xc3\xa9",  /* non-ASCII */
    "http://ex%41mple.com/",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    tb__url_t u;
    int rc = tb__url_parse(&u, bad[i], strlen(bad[i]));
    if (rc != TB_EURL)
      tb_test_fail(__FILE__, __LINE__, "\"%s\": got %s, expected TB_EURL",
                   bad[i], tb_err_name(rc));
  }
  tb__url_t u;
  ASSERT_ERR(tb__url_parse(&u, NULL, 0), TB_EURL);
  /* A NUL inside the given length is not part of a URL. */
  ASSERT_ERR(tb__url_parse(&u, "http://h/\0x", 11), TB_EURL);
  /* Too long. */
  size_t n = TB_HTTP_MAX_URL_BYTES + 1;
  char *big = xmalloc(n);
  memcpy(big, "http://h/", 9);
  memset(big + 9, 'a', n - 9);
  ASSERT_ERR(tb__url_parse(&u, big, n), TB_EURL);
  ASSERT_OK(tb__url_parse(&u, big, n - 1));
  free(big);
}

TEST(same_origin) {
  tb__url_t a = parse_ok("http://Example.COM/x");
  tb__url_t b = parse_ok("http://example.com:80/y?z");
  tb__url_t c = parse_ok("https://example.com/x");
  tb__url_t d = parse_ok("http://example.com:8080/x");
  ASSERT_EQ_INT(tb__url_same_origin(&a, &b), 1);
  ASSERT_EQ_INT(tb__url_same_origin(&a, &c), 0);
  ASSERT_EQ_INT(tb__url_same_origin(&a, &d), 0);
}

static void check_resolve(const char *base, const char *ref,
                          const char *expected, int line) {
  tb__url_t u;
  if (tb__url_parse(&u, base, strlen(base)) != 0)
    tb_test_fail(__FILE__, line, "base \"%s\" does not parse", base);
  tb__buf_t out = TB_BUF_INIT;
  int rc = tb__url_resolve(&u, (tb_slice_t){ ref, strlen(ref) }, &out);
  if (rc != 0)
    tb_test_fail(__FILE__, line, "resolve \"%s\": %s", ref, tb_err_name(rc));
  if (out.len != strlen(expected) || memcmp(out.base, expected, out.len) != 0)
    tb_test_fail(__FILE__, line, "resolve \"%s\" against \"%s\": got "
                 "\"%.*s\", expected \"%s\"", ref, base, (int)out.len,
                 out.base, expected);
  tb__buf_free(&out);
}
#define RESOLVE(b, r, e) check_resolve((b), (r), (e), __LINE__)

TEST(resolves_references) {
  /* The examples of RFC 3986 section 5.4.1, with an http base. */
  const char *base = "http://a/b/c/d;p?q";
  RESOLVE(base, "g", "http://a/b/c/g");
  RESOLVE(base, "./g", "http://a/b/c/g");
  RESOLVE(base, "g/", "http://a/b/c/g/");
  RESOLVE(base, "/g", "http://a/g");
  RESOLVE(base, "//g", "http://g");
  RESOLVE(base, "?y", "http://a/b/c/d;p?y");
  RESOLVE(base, "g?y", "http://a/b/c/g?y");
  RESOLVE(base, "#s", "http://a/b/c/d;p?q");
  RESOLVE(base, "g#s", "http://a/b/c/g");
  RESOLVE(base, ";x", "http://a/b/c/;x");
  RESOLVE(base, "", "http://a/b/c/d;p?q");
  RESOLVE(base, ".", "http://a/b/c/");
  RESOLVE(base, "./", "http://a/b/c/");
  RESOLVE(base, "..", "http://a/b/");
  RESOLVE(base, "../", "http://a/b/");
  RESOLVE(base, "../g", "http://a/b/g");
  RESOLVE(base, "../..", "http://a/");
  RESOLVE(base, "../../", "http://a/");
  RESOLVE(base, "../../g", "http://a/g");
  /* Abnormal examples (5.4.2). */
  RESOLVE(base, "../../../g", "http://a/g");
  RESOLVE(base, "/./g", "http://a/g");
  RESOLVE(base, "/../g", "http://a/g");
  RESOLVE(base, "g.", "http://a/b/c/g.");
  RESOLVE(base, "..g", "http://a/b/c/..g");
  RESOLVE(base, "./../g", "http://a/b/g");
  RESOLVE(base, "g/./h", "http://a/b/c/g/h");
  RESOLVE(base, "g/../h", "http://a/b/c/h");
  /* Absolute references replace everything. */
  RESOLVE(base, "https://other:8443/x?y", "https://other:8443/x?y");
  /* The base's port and IPv6 brackets carry over. */
  RESOLVE("http://[::1]:8080/a/b", "c", "http://[::1]:8080/a/c");
  RESOLVE("http://h:8080", "x", "http://h:8080/x");
  RESOLVE("http://h:8080", "?q", "http://h:8080/?q");
}

TEST(resolved_urls_parse) {
  tb__url_t base = parse_ok("http://127.0.0.1:9/v1/a?z");
  tb__buf_t out = TB_BUF_INIT;
  ASSERT_OK(tb__url_resolve(&base, TB_SLICE_LIT("../v2/b?k=1"), &out));
  tb__url_t u;
  ASSERT_OK(tb__url_parse(&u, out.base, out.len));
  ASSERT_EQ_INT(u.port, 9);
  ASSERT_STR_EQ(target_of(&u), "/v2/b?k=1");
  tb__buf_reset(&out);
  /* A reference with a bad port resolves but does not parse. */
  ASSERT_OK(tb__url_resolve(&base, TB_SLICE_LIT("http://h:99999/"), &out));
  ASSERT_ERR(tb__url_parse(&u, out.base, out.len), TB_EURL);
  tb__buf_free(&out);
}

TEST_LIST(
  TEST_ENTRY(parses_plain_http),
  TEST_ENTRY(default_and_explicit_ports),
  TEST_ENTRY(ipv6_literals),
  TEST_ENTRY(errors),
  TEST_ENTRY(same_origin),
  TEST_ENTRY(resolves_references),
  TEST_ENTRY(resolved_urls_parse),
)

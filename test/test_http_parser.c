/*
 * Golden tests of the server's request-parsing glue (src/http/server_parser.c).
 *
 * Each case feeds raw request bytes and compares the event log -- begin,
 * head (method, URL, version, headers), message (keep-alive, body), error
 * (status, reason) -- with an expected transcript.  Every input is also
 * split at every byte offset and fed byte by byte, and must give the same
 * log: llhttp hands out spans that break wherever a read ended, and the
 * glue must not care.
 */
#include "tb_test.h"
#include "fixtures.h"

#include "core/buf.h"
#include "http/server_parser.h"

#define N_MSGS 8

typedef struct {
  tb__http_parser_t parser;
  tb__http_msg_t msgs[N_MSGS];
  size_t next;
  tb__buf_t log;
  int failed;
} harness_t;

static tb__http_msg_t *h_begin(tb__http_parser_t *p) {
  harness_t *h = p->data;
  tb__http_msg_t *m = &h->msgs[h->next++ % N_MSGS];
  tb__http_msg_clear(m, 1 << 20);
  tb__buf_append_str(&h->log, "begin\n");
  return m;
}

static int h_head(tb__http_parser_t *p, tb__http_msg_t *m) {
  harness_t *h = p->data;
  tb_slice_t url = tb__http_msg_url(m);
  tb__buf_printf(&h->log, "head %s %.*s HTTP/%u.%u\n",
                 llhttp_method_name((llhttp_method_t)m->method), (int)url.len,
                 url.base, m->http_major, m->http_minor);
  tb__http_header_t hdrs[TB_HTTP_MAX_HEADERS];
  tb__http_msg_headers(m, hdrs);
  for (size_t i = 0; i < m->n_headers; i++)
    tb__buf_printf(&h->log, "  %.*s: [%.*s]\n", (int)hdrs[i].name.len,
                   hdrs[i].name.base, (int)hdrs[i].value.len, hdrs[i].value.base);
  if (m->expect_continue)
    tb__buf_append_str(&h->log, "  expect 100-continue\n");
  if (m->chunked)
    tb__buf_append_str(&h->log, "  chunked\n");
  if (m->has_content_length)
    tb__buf_printf(&h->log, "  content-length %llu\n",
                   (unsigned long long)m->content_length);
  return 0;
}

static const tb__http_parser_cbs_t h_cbs = { h_begin, h_head };

static void h_init(harness_t *h, size_t max_body) {
  memset(h, 0, sizeof(*h));
  for (size_t i = 0; i < N_MSGS; i++)
    tb__http_msg_init(&h->msgs[i]);
  tb__http_parser_init(&h->parser, &h_cbs, max_body);
  h->parser.data = h;
}

static void h_free(harness_t *h) {
  for (size_t i = 0; i < N_MSGS; i++)
    tb__http_msg_free(&h->msgs[i]);
  tb__buf_free(&h->log);
}

/* Feeds one piece, looping over completed messages as a connection does. */
static void h_feed(harness_t *h, const char *data, size_t len) {
  while (!h->failed) {
    size_t used;
    int rc = tb__http_parser_execute(&h->parser, data, len, &used);
    ASSERT_LE(used, len);
    if (rc == TB__HTTP_PARSE_MESSAGE) {
      tb__http_msg_t *m = h->parser.completed;
      ASSERT(m != NULL && m->complete);
      tb__buf_printf(&h->log, "message keep-alive=%d%s body=%zu[%.*s]\n",
                     m->keep_alive, m->upgrade ? " upgrade" : "", m->body.len,
                     (int)m->body.len, m->body.base ? m->body.base : "");
      data += used;
      len -= used;
      if (m->upgrade) {
        h->failed = 1;  /* the server stops reading after an upgrade */
        return;
      }
      continue;
    }
    if (rc < 0) {
      ASSERT_EQ_INT(rc, TB_EPROTO);
      tb__buf_printf(&h->log, "error %d %s\n", h->parser.status, h->parser.reason);
      h->failed = 1;
      return;
    }
    ASSERT_EQ_INT(rc, TB__HTTP_PARSE_MORE);
    ASSERT_EQ_INT(used, len);
    return;
  }
}

static void check_log(const harness_t *h, const char *expected, const char *how) {
  if (h->log.len != strlen(expected) || memcmp(h->log.base, expected, h->log.len) != 0)
    tb_test_fail(__FILE__, __LINE__, "%s:\n--- got\n%.*s--- expected\n%s", how,
                 (int)h->log.len, h->log.base ? h->log.base : "", expected);
}

/* Whole, split at every offset, and byte by byte: one transcript. */
static void golden(const char *input, size_t max_body, const char *expected) {
  size_t n = strlen(input);
  harness_t h;
  h_init(&h, max_body);
  h_feed(&h, input, n);
  check_log(&h, expected, "whole");
  h_free(&h);
  for (size_t k = 0; k <= n; k++) {
    h_init(&h, max_body);
    h_feed(&h, input, k);
    h_feed(&h, input + k, n - k);
    char how[64];
    snprintf(how, sizeof(how), "split at %zu", k);
    check_log(&h, expected, how);
    h_free(&h);
  }
  h_init(&h, max_body);
  for (size_t i = 0; i < n; i++)
    h_feed(&h, input + i, 1);
  check_log(&h, expected, "byte by byte");
  h_free(&h);
}

TEST(get_with_headers) {
  golden("GET /api/v1/healthz?x=1&y=%20 HTTP/1.1\r\n"
         "Host: localhost:8000\r\n"
         "User-Agent: test  \r\n"
         "X-Empty:\r\n"
         "Accept:   */*\r\n"
         "\r\n",
         0,
         "begin\n"
         "head GET /api/v1/healthz?x=1&y=%20 HTTP/1.1\n"
         "  Host: [localhost:8000]\n"
         "  User-Agent: [test]\n"
         "  X-Empty: []\n"
         "  Accept: [*/*]\n"
         "message keep-alive=1 body=0[]\n");
}

TEST(keep_alive_rules) {
  golden("GET / HTTP/1.0\r\n\r\n", 0,
         "begin\nhead GET / HTTP/1.0\nmessage keep-alive=0 body=0[]\n");
  golden("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0,
         "begin\nhead GET / HTTP/1.0\n  Connection: [keep-alive]\n"
         "message keep-alive=1 body=0[]\n");
  golden("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0,
         "begin\nhead GET / HTTP/1.1\n  Connection: [close]\n"
         "message keep-alive=0 body=0[]\n");
}

TEST(content_length_body) {
  golden("POST /api/v1/forward HTTP/1.1\r\n"
         "Content-Type: application/json\r\n"
         "Content-Length: 13\r\n"
         "\r\n"
         "{\"a\": [1, 2]}",
         0,
         "begin\n"
         "head POST /api/v1/forward HTTP/1.1\n"
         "  Content-Type: [application/json]\n"
         "  Content-Length: [13]\n"
         "  content-length 13\n"
         "message keep-alive=1 body=13[{\"a\": [1, 2]}]\n");
}

TEST(chunked_body_with_extension_and_trailer) {
  golden("POST /upload HTTP/1.1\r\n"
         "Transfer-Encoding: chunked\r\n"
         "\r\n"
         "5;name=value\r\nhello\r\n"
         "7\r\n, world\r\n"
         "0\r\n"
         "X-Checksum: abc\r\n"
         "\r\n",
         0,
         "begin\n"
         "head POST /upload HTTP/1.1\n"
         "  Transfer-Encoding: [chunked]\n"
         "  chunked\n"
         "message keep-alive=1 body=12[hello, world]\n");
}

TEST(pipelined_requests_in_one_buffer) {
  golden("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
         "POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
         "DELETE /c/d HTTP/1.1\r\nConnection: close\r\n\r\n",
         0,
         "begin\nhead GET /a HTTP/1.1\n  Host: [h]\n"
         "message keep-alive=1 body=0[]\n"
         "begin\nhead POST /b HTTP/1.1\n  Content-Length: [3]\n"
         "  content-length 3\n"
         "message keep-alive=1 body=3[xyz]\n"
         "begin\nhead DELETE /c/d HTTP/1.1\n  Connection: [close]\n"
         "message keep-alive=0 body=0[]\n");
}

TEST(expect_100_continue) {
  golden("PUT /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\nbody", 0,
         "begin\nhead PUT /x HTTP/1.1\n  Expect: [100-Continue]\n"
         "  Content-Length: [4]\n  expect 100-continue\n  content-length 4\n"
         "message keep-alive=1 body=4[body]\n");
  /* Too large: 413 at the head, before any body byte is wanted. */
  golden("PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n", 1000,
         "begin\nerror 413 request body too large\n");
}

TEST(body_limits) {
  golden("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world", 10,
         "begin\nerror 413 request body too large\n");
  golden("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhelloworld", 10,
         "begin\nhead POST / HTTP/1.1\n  Content-Length: [10]\n"
         "  content-length 10\nmessage keep-alive=1 body=10[helloworld]\n");
  /* Chunked: caught when the data passes the limit. */
  golden("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         "6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n",
         10,
         "begin\nhead POST / HTTP/1.1\n  Transfer-Encoding: [chunked]\n"
         "  chunked\nerror 413 request body too large\n");
}

/* Large inputs are checked whole and byte by byte only (every split of a
 * 16 KiB input would be quadratic). */
static void golden_large(const char *input, const char *expected) {
  harness_t h;
  h_init(&h, 0);
  h_feed(&h, input, strlen(input));
  check_log(&h, expected, "whole");
  h_free(&h);
  h_init(&h, 0);
  for (size_t i = 0; input[i] != '\0'; i++)
    h_feed(&h, input + i, 1);
  check_log(&h, expected, "byte by byte");
  h_free(&h);
}

TEST(url_and_header_limits) {
  char *s = tb_test_repeat("GET /", 'a', TB_HTTP_MAX_URL_BYTES, " HTTP/1.1\r\n\r\n");
  golden_large(s, "begin\nerror 414 request URL too long\n");
  free(s);
  /* Exactly at the limit is fine. */
  s = tb_test_repeat("GET /", 'a', TB_HTTP_MAX_URL_BYTES - 1, " HTTP/1.1\r\n\r\n");
  harness_t h;
  h_init(&h, 0);
  h_feed(&h, s, strlen(s));
  ASSERT_STR_CONTAINS(h.log.base, "message keep-alive=1");
  h_free(&h);
  free(s);

  s = tb_test_repeat("GET / HTTP/1.1\r\nX-Big: ", 'b', TB_HTTP_MAX_HEADER_BYTES, "\r\n\r\n");
  golden_large(s, "begin\nerror 431 request header fields too large\n");
  free(s);

  tb__buf_t many = TB_BUF_INIT;
  tb__buf_append_str(&many, "GET / HTTP/1.1\r\n");
  for (int i = 0; i <= TB_HTTP_MAX_HEADERS; i++)
    tb__buf_printf(&many, "X-H%d: v\r\n", i);
  tb__buf_append_str(&many, "\r\n");
  tb__buf_terminate(&many);
  golden_large(many.base, "begin\nerror 431 too many header fields\n");
  tb__buf_free(&many);
}

TEST(malformed_requests) {
  golden("GARBAGE\r\n\r\n", 0, "begin\nerror 400 malformed request\n");
  golden("GET / HTTP/1.1\r\nNoColonHere\r\n\r\n", 0,
         "begin\nerror 400 malformed request\n");
  golden("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 0,
         "begin\nerror 400 malformed request\n");
  golden("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
         "3\r\nabc\r\n0\r\n\r\n",
         0, "begin\nerror 400 malformed request\n");
  golden("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0,
         "begin\nhead POST / HTTP/1.1\n  Transfer-Encoding: [chunked]\n  chunked\n"
         "error 400 malformed request\n");
  golden("GET / HTTP/9.9\r\n\r\n", 0, "begin\nerror 400 malformed request\n");
  /* A good request, then garbage: the first is still delivered. */
  golden("GET /ok HTTP/1.1\r\n\r\n\x01\x02junk\r\n\r\n", 0,
         "begin\nhead GET /ok HTTP/1.1\nmessage keep-alive=1 body=0[]\n"
         "begin\nerror 400 malformed request\n");
}

TEST(upgrade_stops_the_parser) {
  golden("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
         "\x81\x05hello",
         0,
         "begin\nhead GET /ws HTTP/1.1\n  Connection: [Upgrade]\n"
         "  Upgrade: [websocket]\nmessage keep-alive=1 upgrade body=0[]\n");
}

TEST(errors_are_sticky) {
  harness_t h;
  h_init(&h, 0);
  size_t used;
  ASSERT_ERR(tb__http_parser_execute(&h.parser, "BAD\r\n", 5, &used), TB_EPROTO);
  ASSERT_EQ_INT(h.parser.status, 400);
  ASSERT_ERR(tb__http_parser_execute(&h.parser, "GET / HTTP/1.1\r\n\r\n", 18, &used),
             TB_EPROTO);
  ASSERT_EQ_INT(used, 0);
  h_free(&h);
}

TEST_LIST(
  TEST_ENTRY(get_with_headers),
  TEST_ENTRY(keep_alive_rules),
  TEST_ENTRY(content_length_body),
  TEST_ENTRY(chunked_body_with_extension_and_trailer),
  TEST_ENTRY(pipelined_requests_in_one_buffer),
  TEST_ENTRY(expect_100_continue),
  TEST_ENTRY(body_limits),
  TEST_ENTRY(url_and_header_limits),
  TEST_ENTRY(malformed_requests),
  TEST_ENTRY(upgrade_stops_the_parser),
  TEST_ENTRY(errors_are_sticky),
)

/*
 * The test harness: assertions that print both values, a registry of tests
 * per executable, and a runner (runner.c) that runs each test in a child
 * process with a timeout and ends with one "N passed, N failed" line.
 *
 * A test file defines its tests with TEST(name) and lists them once:
 *
 *   TEST(parses_get) { ... }
 *   TEST_LIST(
 *     TEST_ENTRY(parses_get),
 *     TEST_ENTRY_TIMEOUT(slow_one, 60000),
 *   )
 *
 * Every test that makes a loop ends with ASSERT_LOOP_CLOSE(loop): a loop
 * that still holds a handle fails to close, which is how leaks of handles
 * are caught (libuv's MAKE_VALGRIND_HAPPY).
 */
#ifndef TB_TEST_H
#define TB_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "tinkerbell/error.h"

typedef struct tb_test_s {
  const char *name;
  void (*fn)(void);
  unsigned timeout_ms;
} tb_test_t;

#define TEST(name) static void test_##name(void)
#define TEST_ENTRY(name) { #name, test_##name, 0 }
#define TEST_ENTRY_TIMEOUT(name, ms) { #name, test_##name, (ms) }
#define TEST_LIST(...)                                               \
  static const tb_test_t tb_tests_[] = { __VA_ARGS__ { NULL, NULL, 0 } }; \
  int main(int argc, char **argv) { return tb_test_main(argc, argv, tb_tests_); }

int tb_test_main(int argc, char **argv, const tb_test_t *tests);
void tb_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
void tb_test_skip(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* Ends the test as skipped, with the reason: for a test that cannot run in
 * this build or on this machine (no oneDNN, no IPv6, no PyTorch).  The
 * runner counts and prints it apart; it is never counted as passed.  Call
 * it before the test makes a loop or anything else that needs closing. */
#define SKIP(...) tb_test_skip(__VA_ARGS__)

/* The exit status of a test process that skipped (automake's and meson's
 * convention for a skipped test program). */
#define TB_TEST_SKIP_STATUS 77

#define ASSERT(cond)                                                       \
  do {                                                                     \
    if (!(cond))                                                           \
      tb_test_fail(__FILE__, __LINE__, "assertion failed: %s", #cond);     \
  } while (0)

#define ASSERT_EQ_INT(a, b)                                                \
  do {                                                                     \
    long long a_ = (long long)(a), b_ = (long long)(b);                    \
    if (a_ != b_)                                                          \
      tb_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b,   \
                   a_, b_);                                                \
  } while (0)

#define ASSERT_NE_INT(a, b)                                                \
  do {                                                                     \
    long long a_ = (long long)(a), b_ = (long long)(b);                    \
    if (a_ == b_)                                                          \
      tb_test_fail(__FILE__, __LINE__, "%s != %s: both %lld", #a, #b, a_); \
  } while (0)

#define TB__ASSERT_CMP(a, op, b)                                           \
  do {                                                                     \
    long long a_ = (long long)(a), b_ = (long long)(b);                    \
    if (!(a_ op b_))                                                       \
      tb_test_fail(__FILE__, __LINE__, "%s %s %s: %lld vs %lld", #a, #op,  \
                   #b, a_, b_);                                            \
  } while (0)
#define ASSERT_LT(a, b) TB__ASSERT_CMP(a, <, b)
#define ASSERT_LE(a, b) TB__ASSERT_CMP(a, <=, b)
#define ASSERT_GT(a, b) TB__ASSERT_CMP(a, >, b)
#define ASSERT_GE(a, b) TB__ASSERT_CMP(a, >=, b)

/* rc must be 0; otherwise prints the error's name and message. */
#define ASSERT_OK(rc)                                                      \
  do {                                                                     \
    int r_ = (rc);                                                         \
    if (r_ != 0)                                                           \
      tb_test_fail(__FILE__, __LINE__, "%s: %d %s (%s)", #rc, r_,          \
                   tb_err_name(r_), tb_strerror(r_));                      \
  } while (0)

#define ASSERT_ERR(rc, expected)                                           \
  do {                                                                     \
    int r_ = (rc), e_ = (expected);                                        \
    if (r_ != e_)                                                          \
      tb_test_fail(__FILE__, __LINE__, "%s: got %s (%d), expected %s (%d)",\
                   #rc, tb_err_name(r_), r_, tb_err_name(e_), e_);         \
  } while (0)

#define ASSERT_STR_EQ(a, b)                                                \
  do {                                                                     \
    const char *a_ = (a), *b_ = (b);                                       \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                   \
      tb_test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a,   \
                   #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");            \
  } while (0)

/* a (of length alen) equals the C string b. */
#define ASSERT_MEM_EQ_STR(a, alen, b)                                      \
  do {                                                                     \
    const char *a_ = (const char *)(a), *b_ = (b);                         \
    size_t al_ = (size_t)(alen);                                           \
    if (al_ != strlen(b_) || (al_ && memcmp(a_, b_, al_) != 0))            \
      tb_test_fail(__FILE__, __LINE__, "%s == %s: \"%.*s\" != \"%s\"", #a, \
                   #b, (int)al_, a_ ? a_ : "", b_);                        \
  } while (0)

#define ASSERT_STR_CONTAINS(hay, needle)                                   \
  do {                                                                     \
    const char *h_ = (hay), *n_ = (needle);                                \
    if (h_ == NULL || strstr(h_, n_) == NULL)                              \
      tb_test_fail(__FILE__, __LINE__, "%s contains \"%s\": got \"%s\"",   \
                   #hay, n_, h_ ? h_ : "(null)");                          \
  } while (0)

/* |a - b| <= atol + rtol * |b| */
#define ASSERT_NEAR(a, b, atol, rtol)                                      \
  do {                                                                     \
    double a_ = (double)(a), b_ = (double)(b);                             \
    double tol_ = (double)(atol) + (double)(rtol) * fabs(b_);              \
    if (!(fabs(a_ - b_) <= tol_))                                          \
      tb_test_fail(__FILE__, __LINE__,                                     \
                   "%s ~= %s: %.9g vs %.9g (diff %.3g > tol %.3g)", #a, #b,\
                   a_, b_, fabs(a_ - b_), tol_);                           \
  } while (0)

/* A loop closes only when every handle on it was closed. */
#define ASSERT_LOOP_CLOSE(loop)                                            \
  do {                                                                     \
    uv_loop_t *l_ = (loop);                                                \
    int rc_ = uv_loop_close(l_);                                           \
    if (rc_ != 0) {                                                        \
      tb_test_print_handles(l_);                                           \
      tb_test_fail(__FILE__, __LINE__, "uv_loop_close: %s (handles leaked)",\
                   uv_err_name(rc_));                                      \
    }                                                                      \
  } while (0)

void tb_test_print_handles(uv_loop_t *loop);

/* abort-on-failure allocation for tests and benches only. */
void *tb_test_xmalloc(size_t n, const char *file, int line);
#define xmalloc(n) tb_test_xmalloc((n), __FILE__, __LINE__)

#endif /* TB_TEST_H */

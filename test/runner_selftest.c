/*
 * A test executable for the runner itself (test/runner.c): one test that
 * passes, one that skips and one that fails on request.  test/runner.sh
 * runs it and checks what the runner prints and returns.
 */
#include "tb_test.h"

TEST(passes) { ASSERT_EQ_INT(1 + 1, 2); }

TEST(skips) {
  SKIP("nothing to run on here");
  ASSERT(0); /* never reached */
}

/* Fails only when asked, so that the script can check both outcomes. */
TEST(fails_when_asked) {
  if (getenv("TB_SELFTEST_FAIL") != NULL)
    ASSERT_EQ_INT(1, 2);
}

TEST_LIST(
  TEST_ENTRY(passes),
  TEST_ENTRY(skips),
  TEST_ENTRY(fails_when_asked),
)

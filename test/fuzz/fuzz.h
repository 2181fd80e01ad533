/*
 * What the libFuzzer targets of test/fuzz/ share: the entry points and a
 * reader that takes the target's own choices (a selector, split points)
 * off the front of the input, so that the fuzzer mutates them with the
 * rest.
 *
 * A target aborts on a broken property (a well-formed answer, an output
 * that decodes again); the sanitizers catch the rest.  Non-goals: running
 * without libFuzzer (each target is a libFuzzer main).
 */
#ifndef TB_TEST_FUZZ_H
#define TB_TEST_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input, consumed from the front. */
typedef struct fuzz_in_s {
  const uint8_t *p;
  size_t n;
} fuzz_in_t;

/* The next byte, or 0 once the input is used up. */
static inline uint8_t fuzz_byte(fuzz_in_t *in) {
  if (in->n == 0)
    return 0;
  in->n--;
  return *in->p++;
}

/* A property of the code under test does not hold: report and abort, so
 * that libFuzzer saves the input as a crash. */
#define FUZZ_CHECK(cond, ...)                                          \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "fuzz property failed at %s:%d: %s: ", __FILE__, \
              __LINE__, #cond);                                        \
      fprintf(stderr, __VA_ARGS__);                                    \
      fputc('\n', stderr);                                             \
      abort();                                                         \
    }                                                                  \
  } while (0)

#endif /* TB_TEST_FUZZ_H */

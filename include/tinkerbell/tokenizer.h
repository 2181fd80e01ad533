/*
 * The tokenizer and chat template of the built-in `base` model, for
 * programs that train or sample it through the client runtime (the Tinker
 * SDK leaves tokenization to the caller; for `base` this is all it takes).
 *
 * Tokens: one per byte (ids 0..255), then special tokens: <|bos|> 256,
 * <|eos|> 257, <|system|> 258, <|user|> 259, <|assistant|> 260, <|end|> 261,
 * <|pad|> 262 (vocabulary 272).  A conversation renders as <|bos|>, then
 * <|role|> content <|end|> per message; a prompt for sampling ends with
 * <|assistant|>, and the model closes its reply with <|end|>, the token to
 * stop sampling at.
 */
#ifndef TINKERBELL_TOKENIZER_H
#define TINKERBELL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The token that ends a message: stop sampling at it. */
#define TB_BASE_TOKEN_END 261
/* The number of token ids of `base`. */
#define TB_BASE_VOCAB_SIZE 272

/* One message of a conversation. */
typedef struct tb_chat_message_s {
  const char *role;      /* "system", "user" or "assistant" */
  const char *content;   /* UTF-8 (any bytes, in fact), NUL-terminated */
} tb_chat_message_t;

/* Renders n messages for training: *tokens (len entries) and *weights,
 * 1.0 for the tokens the loss should count (the assistant messages'
 * content and their <|end|>; every token when there is no assistant
 * message) and 0.0 elsewhere.  weights[i] belongs to tokens[i], so
 * tb_train_datum_init_next_token(d, tokens, weights, len) makes the usual
 * next-token example of it.  Both arrays are malloc'd; free them with
 * free().  With generation_prompt, the conversation is rendered as a
 * prompt instead (ending with <|assistant|>, weights all 0).  Returns 0,
 * TB_EINVAL (an unknown role, with err naming the message) or TB_ENOMEM. */
TB_EXTERN int tb_base_chat_render(const tb_chat_message_t *msgs, size_t n,
                                  int generation_prompt, int32_t **tokens, float **weights,
                                  size_t *len, tb_error_t *err);

/* The text of n tokens (special tokens left out), malloc'd and
 * NUL-terminated, in *text.  Returns 0, TB_EINVAL (an id outside the
 * vocabulary) or TB_ENOMEM. */
TB_EXTERN int tb_base_decode(const int32_t *ids, size_t n, char **text);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_TOKENIZER_H */

/*
 * The byte-level tokenizer of the `base` model and its chat template.
 *
 * Vocabulary (272 ids):
 *   0..255    one token per byte value
 *   256       <|bos|>        start of a document
 *   257       <|eos|>        end of a plain-text document
 *   258       <|system|>     role headers of the chat template
 *   259       <|user|>
 *   260       <|assistant|>
 *   261       <|end|>        end of one chat message
 *   262       <|pad|>
 *   263..271  <|reserved_0|> .. <|reserved_8|> (never produced)
 *
 * Encoding maps each byte of the text to its own token; special tokens are
 * never recognised inside text (so user content cannot forge a role
 * header), they are added by the template or asked for by name.
 *
 * Chat template: <|bos|>, then for each message
 *   <|role|> content-bytes <|end|>
 * and, for a generation prompt, a final <|assistant|>; the model then
 * writes the reply and closes it with <|end|>, which is therefore a stop
 * token.  Example: [{user, "hi"}, {assistant, "yo"}] renders as
 *   <|bos|> <|user|> h i <|end|> <|assistant|> y o <|end|>
 * The trainable mask marks the tokens the loss counts: the content of
 * assistant messages and their <|end|> (the model must learn to stop), not
 * <|bos|>, role headers, or system/user content.  mask[i] refers to token
 * i itself, i.e. to the prediction of token i from tokens[0..i).
 *
 * Pure computation with no global state; safe on any thread.
 */
#ifndef TB_ENGINE_TOKENIZER_H
#define TB_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "tinkerbell/common.h"
#include "tinkerbell/error.h"

enum {
  TB_TOK_BYTES = 256,
  TB_TOK_BOS = 256,
  TB_TOK_EOS = 257,
  TB_TOK_SYSTEM = 258,
  TB_TOK_USER = 259,
  TB_TOK_ASSISTANT = 260,
  TB_TOK_END = 261,
  TB_TOK_PAD = 262,
  TB_TOK_RESERVED0 = 263,
  TB_TOK_VOCAB = 272
};

/* A growable token sequence with its per-token trainable mask (0/1). */
typedef struct tb_tokens_s {
  int32_t *ids;
  uint8_t *trainable;
  size_t len;
  size_t cap;
} tb_tokens_t;

#define TB_TOKENS_INIT { NULL, NULL, 0, 0 }

void tb__tokens_free(tb_tokens_t *t);
/* Appends one token; 0 or TB_ENOMEM. */
int tb__tokens_push(tb_tokens_t *t, int32_t id, int trainable);

/* Appends the byte tokens of text (mask 0). */
int tb__tok_encode(tb_slice_t text, tb_tokens_t *out);

enum {
  /* Decode special tokens as their names ("<|end|>"); otherwise they are
   * left out of the text. */
  TB_TOK_DECODE_SPECIAL = 1
};
/* Appends the bytes of ids to out.  TB_EINVAL for an id outside the
 * vocabulary (nothing is appended then). */
int tb__tok_decode(const int32_t *ids, size_t n, int flags, tb_buf_t *out);

/* The name of a special token ("<|bos|>"), or NULL for a byte token or an
 * id outside the vocabulary. */
const char *tb__tok_special_name(int32_t id);
/* The id of a special token by name, or TB_ENOENT. */
int tb__tok_special_id(tb_slice_t name);

typedef struct tb_chat_msg_s {
  tb_slice_t role;     /* "system", "user" or "assistant" */
  tb_slice_t content;
} tb_chat_msg_t;

/* Renders a whole conversation for training, with the mask described
 * above.  An unknown role gives TB_EINVAL naming the message index. */
int tb__chat_render(const tb_chat_msg_t *msgs, size_t n, tb_tokens_t *out,
                    tb_error_t *err);
/* Renders a prompt that ends with the assistant header (mask all 0). */
int tb__chat_render_prompt(const tb_chat_msg_t *msgs, size_t n,
                           tb_tokens_t *out, tb_error_t *err);
/* 1 when sampling should stop at this token (<|end|> or <|eos|>). */
int tb__chat_is_stop(int32_t id);

#endif /* TB_ENGINE_TOKENIZER_H */

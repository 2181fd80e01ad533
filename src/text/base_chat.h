/*
 * The `base` model's byte tokenizer and chat template for the code that
 * works on token arrays with a trainable mask (the engine's tests, the
 * Tinkerbell dialect's chat data), kept over the text layer's tokenizer
 * and `base` renderer: one process-wide immutable instance of each,
 * made on first use.  text/base_vocab.h has the ids.
 *
 * Encoding here maps each byte to its token and never reads special
 * tokens in text (so content cannot forge a role header); the chat
 * template is the `base` renderer's (tinkerbell/renderer.h).
 */
#ifndef TB_TEXT_BASE_CHAT_H
#define TB_TEXT_BASE_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "text/base_vocab.h"
#include "tinkerbell/common.h"
#include "tinkerbell/error.h"
#include "tinkerbell/renderer.h"

/* The shared `base` tokenizer and renderer (never freed). */
const tb_renderer_t *tb__base_renderer(void);

/* A growable token sequence with its per-token trainable mask (0/1). */
typedef struct tb__tokens_s {
  int32_t *ids;
  uint8_t *trainable;
  size_t len;
  size_t cap;
} tb__tokens_t;

#define TB_TOKENS_INIT { NULL, NULL, 0, 0 }

void tb__tokens_free(tb__tokens_t *t);
/* Appends one token; 0 or TB_ENOMEM. */
int tb__tokens_push(tb__tokens_t *t, int32_t id, int trainable);

/* Appends the byte tokens of text (mask 0). */
int tb__tok_encode(tb_slice_t text, tb__tokens_t *out);

enum {
  /* Decode special tokens as their names ("<|end|>"); otherwise they are
   * left out of the text. */
  TB_TOK_DECODE_SPECIAL = 1
};
/* Appends the bytes of ids to out.  TB_EINVAL for an id outside the
 * vocabulary (nothing is appended then). */
int tb__tok_decode(const int32_t *ids, size_t n, int flags, tb__buf_t *out);

/* The name of a special token ("<|bos|>"), or NULL for a byte token or an
 * id outside the vocabulary. */
const char *tb__tok_special_name(int32_t id);
/* The id of a special token by name, or TB_ENOENT. */
int tb__tok_special_id(tb_slice_t name);

typedef struct tb__chat_msg_s {
  tb_slice_t role;     /* "system", "user" or "assistant" */
  tb_slice_t content;
} tb__chat_msg_t;

/* Appends a whole conversation rendered for training, the mask marking
 * what the `base` renderer weights (every token without an assistant
 * message).  An unknown role gives TB_EINVAL naming the message, and out
 * is left as it was. */
int tb__chat_render(const tb__chat_msg_t *msgs, size_t n, tb__tokens_t *out, tb_error_t *err);
/* Appends a prompt that ends with the assistant header (mask all 0). */
int tb__chat_render_prompt(const tb__chat_msg_t *msgs, size_t n, tb__tokens_t *out,
                           tb_error_t *err);
/* 1 when sampling should stop at this token (<|end|> or <|eos|>). */
int tb__chat_is_stop(int32_t id);

#endif /* TB_TEXT_BASE_CHAT_H */

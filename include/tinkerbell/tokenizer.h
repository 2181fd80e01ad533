/*
 * Tokenizers: Hugging Face `tokenizer.json` files of the byte-level BPE
 * family (GPT-2, Llama 3, Qwen2/2.5/3, SmolLM2, Mistral-Nemo-style), and the
 * byte tokenizer of the built-in `base` model, behind one opaque type.
 *
 *   tb_tokenizer_t *tok;
 *   tb_error_t err = { 0 };
 *   if (tb_tokenizer_load_dir("/models/Qwen3-0.6B", &tok, &err) != 0)
 *     fprintf(stderr, "%s\n", tb_error_message(&err));
 *   int32_t *ids;
 *   size_t n;
 *   tb_tokenizer_encode(tok, "Hello world", 11, 0, &ids, NULL, &n, &err);
 *   char *text;
 *   tb_tokenizer_decode(tok, ids, n, 0, &text, NULL, &err);
 *   free(ids), free(text), tb_tokenizer_free(tok);
 *
 * Encoding is as `transformers` encodes with add_special_tokens=False:
 * the text of an added token (`<|im_start|>`) anywhere in the text becomes
 * that token, and no BOS/EOS is added; TB_ENCODE_ADD_SPECIAL adds what the
 * file's post-processor adds.  Decoding is the file's decoder
 * (`tokenizers`' decode: invalid UTF-8 becomes U+FFFD), without
 * `transformers`' clean_up_tokenization_spaces.
 *
 * Threads: a loaded tokenizer is immutable except for its cache of encoded
 * words, which is split into shards with a lock each, so any number of
 * threads may encode and decode with one tokenizer at once; a thread
 * holds a shard's lock only to look up or store one word.  Freeing it is
 * the caller's to order after the last use.
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

typedef struct tb_tokenizer_s tb_tokenizer_t;

/* Loads DIR/tokenizer.json with DIR/tokenizer_config.json and
 * DIR/generation_config.json when they exist (special tokens and the
 * bos/eos/pad ids).  A file the tokenizer cannot take exactly (another
 * model type, an unknown normalizer, pre-tokenizer, post-processor or
 * decoder, a corrupt or truncated file, sizes past the limits) is refused
 * with TB_EINVAL and err saying "FILE: FIELD: reason"; a missing file is
 * TB_ENOENT.  *out is NULL on failure. */
TB_EXTERN int tb_tokenizer_load_dir(const char *dir, tb_tokenizer_t **out,
                                    tb_error_t *err);

/* The same from explicit files; config and generation may be NULL. */
TB_EXTERN int tb_tokenizer_load_files(const char *tokenizer_json,
                                      const char *tokenizer_config_json,
                                      const char *generation_config_json,
                                      tb_tokenizer_t **out, tb_error_t *err);

/* One input of tb_tokenizer_load_buffers: bytes and the name the errors
 * give them (a file name).  A NULL base means absent. */
typedef struct tb_tokenizer_source_s {
  const char *base;
  size_t len;
  const char *name;
} tb_tokenizer_source_t;

/* The same from bytes in memory (not NUL-terminated; copied as needed). */
TB_EXTERN int tb_tokenizer_load_buffers(const tb_tokenizer_source_t *tokenizer_json,
                                        const tb_tokenizer_source_t *tokenizer_config,
                                        const tb_tokenizer_source_t *generation_config,
                                        tb_tokenizer_t **out, tb_error_t *err);

/* The byte tokenizer of the built-in `base` model: one token per byte
 * (0..255), then <|bos|> 256, <|eos|> 257, <|system|> 258, <|user|> 259,
 * <|assistant|> 260, <|end|> 261, <|pad|> 262 and reserved ids to 271.
 * Returns 0 or TB_ENOMEM. */
TB_EXTERN int tb_tokenizer_base(tb_tokenizer_t **out);

/* Frees tok (NULL is fine), after its last use by any thread. */
TB_EXTERN void tb_tokenizer_free(tb_tokenizer_t *tok);

enum {
  /* Add the tokens of the post-processor (TemplateProcessing: Llama 3's
   * <|begin_of_text|>), as add_special_tokens=True does; a text that
   * already begins with them does not get them twice. */
  TB_ENCODE_ADD_SPECIAL = 1,
  /* Special tokens' text is encoded as plain text (for untrusted content);
   * added tokens that are not special (Qwen3's <think>) are still
   * matched, as `tokenizers`' encode_special_tokens does. */
  TB_ENCODE_SPECIAL_AS_TEXT = 2
};

/* Encodes len bytes of UTF-8 text.  *ids (n entries) is malloc'd; with
 * offsets non-NULL, *offsets gets 2 * n byte offsets into text, [start,
 * end) of each token (a token made by a normalizer's change of text spans
 * the changed characters; a token the post-processor added is empty).
 * Free both with free().  Returns 0, TB_EINVAL (invalid UTF-8, with err
 * naming the byte) or TB_ENOMEM. */
TB_EXTERN int tb_tokenizer_encode(const tb_tokenizer_t *tok, const char *text, size_t len,
                                  int flags, int32_t **ids, size_t **offsets, size_t *n,
                                  tb_error_t *err);

enum {
  /* Leave special tokens out of the text (skip_special_tokens=True). */
  TB_DECODE_SKIP_SPECIAL = 1
};

/* Decodes n ids into a malloc'd, NUL-terminated *text (*len bytes; len
 * may be NULL).  Returns 0, TB_EINVAL (an id outside the vocabulary, with
 * err naming it) or TB_ENOMEM. */
TB_EXTERN int tb_tokenizer_decode(const tb_tokenizer_t *tok, const int32_t *ids, size_t n,
                                  int flags, char **text, size_t *len, tb_error_t *err);

/* Streaming decode, for sampled text and stop strings: feed ids as they
 * come; each call appends to *out only complete UTF-8 characters (bytes
 * of a character still incomplete wait for the next ids, bytes that can
 * never form one come out as U+FFFD at once).  The pieces put together
 * with the last tb_decoder_finish equal tb_tokenizer_decode of all the
 * ids.  The decoder holds a pointer to tok, which must outlive it. */
typedef struct tb_decoder_s tb_decoder_t;

/* A streaming decoder (flags: TB_DECODE_SKIP_SPECIAL); 0 or TB_ENOMEM. */
TB_EXTERN int tb_decoder_new(const tb_tokenizer_t *tok, int flags, tb_decoder_t **out);
/* Appends the text of ids to the malloc'd string *out (*out_len bytes,
 * NUL-terminated; *out may start NULL).  Returns 0, TB_EINVAL (an id
 * outside the vocabulary; nothing is appended) or TB_ENOMEM. */
TB_EXTERN int tb_decoder_feed(tb_decoder_t *d, const int32_t *ids, size_t n, char **out,
                              size_t *out_len, tb_error_t *err);
/* Appends what is held back (an incomplete character, as U+FFFD). */
TB_EXTERN int tb_decoder_finish(tb_decoder_t *d, char **out, size_t *out_len);
/* Frees d (NULL is fine). */
TB_EXTERN void tb_decoder_free(tb_decoder_t *d);

/* The number of ids (one more than the largest id, added tokens
 * included). */
TB_EXTERN size_t tb_tokenizer_vocab_size(const tb_tokenizer_t *tok);
/* The id of a token as the file spells it ("<|im_end|>", "Ġhello"), or
 * -1. */
TB_EXTERN int32_t tb_tokenizer_token_to_id(const tb_tokenizer_t *tok, const char *token,
                                           size_t len);
/* The token's spelling in the file (not NUL-terminated: *len bytes), or
 * NULL for an id without a token. */
TB_EXTERN const char *tb_tokenizer_id_to_token(const tb_tokenizer_t *tok, int32_t id,
                                               size_t *len);
/* The bytes id stands for, as decoding joins them (not NUL-terminated:
 * *len bytes, valid while tok lives): a piece of UTF-8 that may end or
 * begin inside a character, or an added token's text (special or not).
 * NULL for an id without a token.  For matching stop strings on sampled
 * tokens as they come. */
TB_EXTERN const char *tb_tokenizer_token_bytes(const tb_tokenizer_t *tok, int32_t id,
                                               size_t *len);
/* 1 when id is a special added token (left out by TB_DECODE_SKIP_SPECIAL). */
TB_EXTERN int tb_tokenizer_is_special(const tb_tokenizer_t *tok, int32_t id);

/* The ids of tokenizer_config.json's bos_token, eos_token and pad_token
 * (generation_config.json's bos_token_id, eos_token_id, pad_token_id win
 * when present), or -1 when the files name none. */
TB_EXTERN int32_t tb_tokenizer_bos_id(const tb_tokenizer_t *tok);
TB_EXTERN int32_t tb_tokenizer_eos_id(const tb_tokenizer_t *tok);
TB_EXTERN int32_t tb_tokenizer_pad_id(const tb_tokenizer_t *tok);
/* Every end-of-sequence id (generation_config.json's eos_token_id may be
 * a list, as Llama 3.1's is): *n entries valid while tok lives. */
TB_EXTERN const int32_t *tb_tokenizer_eos_ids(const tb_tokenizer_t *tok, size_t *n);

/* ----------------------------------------------------------------------
 * The chat template of `base`, kept for programs written against it; the
 * renderer API (tinkerbell/renderer.h) does the same for every model. */

/* The name of the built-in model (tinkerbell serve --model base). */
#define TB_BASE_MODEL_NAME "base"
/* The token that ends a message of `base`: stop sampling at it. */
#define TB_BASE_TOKEN_END 261
/* The number of token ids of `base`. */
#define TB_BASE_VOCAB_SIZE 272

/* One message of a conversation.  New fields are added at the end, so
 * `{ "user", "Hello!" }` stays a complete initializer. */
typedef struct tb_chat_message_s {
  const char *role;      /* "system", "user" or "assistant" */
  const char *content;   /* UTF-8, NUL-terminated unless content_len is set */
  /* Optional: the reasoning of an assistant message, which Qwen3's
   * template puts between <think> and </think> (its reasoning_content);
   * NULL when there is none. */
  const char *reasoning;
  /* Optional: when nonzero, the length of content, which may then hold
   * NUL bytes (JSON strings can). */
  size_t content_len;
} tb_chat_message_t;

/* Renders n messages with the `base` renderer (tb_renderer_render with
 * every assistant message trained): *tokens (len entries) and *weights,
 * 1.0 for the assistant messages' content and their <|end|> (every token
 * when there is no assistant message), 0.0 elsewhere; with
 * generation_prompt, a prompt ending with <|assistant|> (weights all 0).
 * Free both with free().  Returns 0, TB_EINVAL (an unknown role, with err
 * naming the message) or TB_ENOMEM. */
TB_EXTERN int tb_base_chat_render(const tb_chat_message_t *msgs, size_t n,
                                  int generation_prompt, int32_t **tokens, float **weights,
                                  size_t *len, tb_error_t *err);

/* The text of n `base` tokens (special tokens left out), malloc'd and
 * NUL-terminated, in *text.  Returns 0, TB_EINVAL (an id outside the
 * vocabulary) or TB_ENOMEM. */
TB_EXTERN int tb_base_decode(const int32_t *ids, size_t n, char **text);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_TOKENIZER_H */

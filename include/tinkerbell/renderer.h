/*
 * Chat renderers: a conversation to tokens and per-token weights for
 * training, the prompt for sampling, the stop sequences, and the parse of
 * a sampled reply, for the chat formats of the models Tinkerbell trains.
 * They are named as the Tinker cookbook names them:
 *
 *   llama3                  Llama 3 Instruct (<|start_header_id|>role<|end_header_id|>)
 *   qwen3                   Qwen3, thinking: the reply starts with <think>
 *   qwen3_disable_thinking  Qwen3 with the empty <think> block in the prompt
 *   chatml                  <|im_start|>role ... <|im_end|> (SmolLM2, Qwen2.5)
 *   role_colon              "User: ...\n\nAssistant: ..." for base models
 *   base                    the built-in `base` model's template
 *
 * The contract: a renderer's tokens equal the tokens of the model's own
 * Jinja chat_template as transformers' apply_chat_template(tokenize=True)
 * gives them, for system, user and assistant messages (the whole string
 * is rendered and encoded in one pass, as there).  Which tokens get
 * weight, per renderer: the body of an assistant message, from after its
 * role header through its end-of-turn token (llama3: the trimmed content
 * and <|eot_id|>; qwen3 and chatml: the content, for qwen3 with its
 * <think> block, and <|im_end|>, not the newline after it;
 * qwen3_disable_thinking: as qwen3 but not the <think> block, which its
 * prompt supplies; role_colon: " content\n\n", and after the last message
 * "User:", as the cookbook trains it; base: the content and <|end|>).  A
 * token that straddles the edge of a weighted stretch gets weight.  A
 * conversation without an assistant message trains on every token.
 *
 *   tb_renderer_t *r;
 *   tb_renderer_from_dir("/models/Qwen3-0.6B", tok, &r, &err);
 *   tb_chat_message_t chat[] = { { "user", "Hi" }, { "assistant", "Hello!" } };
 *   tb_rendered_t out;
 *   tb_renderer_render(r, chat, 2, 0, &out, &err);   (out.tokens, out.weights)
 *   tb_rendered_free(&out);
 *   tb_renderer_free(r);
 *
 * A renderer is immutable and may be used by several threads at once; it
 * keeps a pointer to its tokenizer, which must outlive it.
 */
#ifndef TINKERBELL_RENDERER_H
#define TINKERBELL_RENDERER_H

#include <stddef.h>
#include <stdint.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"
#include "tinkerbell/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tb_renderer_s tb_renderer_t;

/* The renderer's names, for --renderer's help: *n entries. */
TB_EXTERN const char *const *tb_renderer_names(size_t *n);

/* A renderer by name for a tokenizer, which must have the renderer's
 * special tokens (TB_EINVAL naming the missing one otherwise; an unknown
 * name is TB_EINVAL listing the names). */
TB_EXTERN int tb_renderer_new(const char *name, const tb_tokenizer_t *tok, tb_renderer_t **out,
                              tb_error_t *err);

/* The renderer a model directory's chat template asks for: DIR/config.json's
 * architectures (when present) and a fingerprint of
 * DIR/tokenizer_config.json's chat_template.  A template no renderer is
 * known to reproduce is refused (TB_EINVAL, naming the file and field and
 * listing the names to choose one from). */
TB_EXTERN int tb_renderer_from_dir(const char *dir, const tb_tokenizer_t *tok,
                                   tb_renderer_t **out, tb_error_t *err);
/* The same detection without a tokenizer: the renderer's name in *name
 * (static). */
TB_EXTERN int tb_renderer_detect(const char *dir, const char **name, tb_error_t *err);
/* The same from the two files' bytes (config may be NULL). */
TB_EXTERN int tb_renderer_detect_buffers(const char *config_json, size_t config_len,
                                         const char *tokenizer_config_json,
                                         size_t tokenizer_config_len, const char *file_name,
                                         const char **name, tb_error_t *err);

/* The renderer's name ("qwen3"), static. */
TB_EXTERN const char *tb_renderer_name(const tb_renderer_t *r);
/* The tokenizer it was made for. */
TB_EXTERN const tb_tokenizer_t *tb_renderer_tokenizer(const tb_renderer_t *r);
/* Frees r (NULL is fine); its tokenizer is the caller's. */
TB_EXTERN void tb_renderer_free(tb_renderer_t *r);

enum {
  /* Render a prompt for sampling: the conversation, then the assistant's
   * header (add_generation_prompt=True); weights are all 0. */
  TB_RENDER_GENERATION_PROMPT = 1,
  /* Weight only the last assistant message (default: every one). */
  TB_RENDER_TRAIN_LAST = 2,
  /* Special-token text inside messages' content stays text (for
   * untrusted content); the template's own tokens are unaffected.  The
   * tokens then differ from transformers' exactly where content holds
   * such text. */
  TB_RENDER_PLAIN_CONTENT = 4
};

typedef struct tb_rendered_s {
  int32_t *tokens;
  float *weights; /* weights[i] belongs to tokens[i] */
  size_t len;
  char *text;     /* the rendered string, NUL-terminated */
  size_t text_len;
} tb_rendered_t;

/* Renders n messages (roles "system", "user", "assistant"; another role
 * is TB_EINVAL naming the message).  Free out with tb_rendered_free. */
TB_EXTERN int tb_renderer_render(const tb_renderer_t *r, const tb_chat_message_t *msgs,
                                 size_t n, int flags, tb_rendered_t *out, tb_error_t *err);
TB_EXTERN void tb_rendered_free(tb_rendered_t *out);

/* Where sampling stops: token ids (the end-of-turn token and the
 * tokenizer's eos ids) and strings (role_colon's "\n\nUser:").  The
 * arrays live as long as the renderer. */
typedef struct tb_stop_s {
  const int32_t *tokens;
  size_t n_tokens;
  const char *const *strings;
  size_t n_strings;
} tb_stop_t;

/* Fills out with the renderer's stop sequences. */
TB_EXTERN void tb_renderer_stop(const tb_renderer_t *r, tb_stop_t *out);

/* A sampled reply read back as a message. */
typedef struct tb_reply_s {
  char *content;   /* NUL-terminated */
  size_t content_len;
  char *reasoning; /* qwen3: the text inside <think>...</think>; else NULL */
  size_t reasoning_len;
  int ended;       /* 1 when the reply reached a stop sequence */
} tb_reply_t;

/* Parses the tokens sampled after a prompt of this renderer: the text up
 * to the first stop sequence, with qwen3's <think> part kept apart.
 * Returns 0, TB_EINVAL (an id outside the vocabulary) or TB_ENOMEM. */
TB_EXTERN int tb_renderer_parse(const tb_renderer_t *r, const int32_t *tokens, size_t n,
                                tb_reply_t *out, tb_error_t *err);
TB_EXTERN void tb_reply_free(tb_reply_t *reply);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_RENDERER_H */

/*
 * The public face of the `base` tokenizer (include/tinkerbell/tokenizer.h)
 * over the engine's own (tokenizer.h), with plain arrays in and out so the
 * client runtime and its users need nothing of the engine.
 */
#include "tinkerbell/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"

_Static_assert(TB_BASE_TOKEN_END == TB_TOK_END, "<|end|> id");
_Static_assert(TB_BASE_VOCAB_SIZE == TB_TOK_VOCAB, "vocabulary size");

int tb_base_chat_render(const tb_chat_message_t *msgs, size_t n, int generation_prompt,
                        int32_t **tokens, float **weights, size_t *len, tb_error_t *err) {
  *tokens = NULL;
  *weights = NULL;
  *len = 0;
  tb_chat_msg_t *m = calloc(n ? n : 1, sizeof(*m));
  if (m == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_USER, "out of memory");
  int has_assistant = 0;
  for (size_t i = 0; i < n; i++) {
    const char *role = msgs[i].role ? msgs[i].role : "";
    const char *content = msgs[i].content ? msgs[i].content : "";
    m[i].role = (tb_slice_t){ role, strlen(role) };
    m[i].content = (tb_slice_t){ content, strlen(content) };
    has_assistant |= strcmp(role, "assistant") == 0;
  }
  tb_tokens_t t = TB_TOKENS_INIT;
  int rc = generation_prompt ? tb__chat_render_prompt(m, n, &t, err)
                             : tb__chat_render(m, n, &t, err);
  free(m);
  if (rc != 0) {
    tb__tokens_free(&t);
    return rc;
  }
  int32_t *ids = malloc((t.len ? t.len : 1) * sizeof(*ids));
  float *w = malloc((t.len ? t.len : 1) * sizeof(*w));
  if (ids == NULL || w == NULL) {
    free(ids);
    free(w);
    tb__tokens_free(&t);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_USER, "out of memory");
  }
  for (size_t i = 0; i < t.len; i++) {
    ids[i] = t.ids[i];
    w[i] = generation_prompt ? 0.0f : !has_assistant || t.trainable[i] ? 1.0f : 0.0f;
  }
  *tokens = ids;
  *weights = w;
  *len = t.len;
  tb__tokens_free(&t);
  return 0;
}

int tb_base_decode(const int32_t *ids, size_t n, char **text) {
  *text = NULL;
  tb_buf_t b = TB_BUF_INIT;
  int rc = tb__tok_decode(ids, n, 0, &b);
  rc = rc ? rc : tb__buf_terminate(&b);
  if (rc != 0) {
    tb__buf_free(&b);
    return rc;
  }
  *text = tb__buf_steal(&b, NULL);
  if (*text == NULL) {
    *text = calloc(1, 1);
    return *text ? 0 : TB_ENOMEM;
  }
  return 0;
}

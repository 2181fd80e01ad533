/*
 * text/base_chat.h over the tokenizer and the `base` renderer.
 */
#include "text/base_chat.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

static tb_tokenizer_t *base_tok;
static tb_renderer_t *base_renderer;
static pthread_once_t base_once = PTHREAD_ONCE_INIT;

static void make_base(void) {
  tb_error_t err = { 0 };
  if (tb__tok_base_new(&base_tok) == 0 &&
      tb_renderer_new("base", base_tok, &base_renderer, &err) != 0) {
    tb_tokenizer_free(base_tok);
    base_tok = NULL;
  }
  tb_error_clear(&err);
}

const tb_renderer_t *tb__base_renderer(void) {
  pthread_once(&base_once, make_base);
  return base_renderer;
}

void tb__tokens_free(tb__tokens_t *t) {
  free(t->ids);
  free(t->trainable);
  memset(t, 0, sizeof(*t));
}

static int tokens_reserve(tb__tokens_t *t, size_t extra) {
  if (extra <= t->cap - t->len)
    return 0;
  if (extra > SIZE_MAX / 2 / sizeof(int32_t) - t->len)
    return TB_ENOMEM;
  size_t cap = t->cap ? t->cap : 64;
  while (cap - t->len < extra)
    cap *= 2;
  int32_t *ids = realloc(t->ids, cap * sizeof(*ids));
  if (ids == NULL)
    return TB_ENOMEM;
  t->ids = ids;
  uint8_t *m = realloc(t->trainable, cap);
  if (m == NULL)
    return TB_ENOMEM;
  t->trainable = m;
  t->cap = cap;
  return 0;
}

int tb__tokens_push(tb__tokens_t *t, int32_t id, int trainable) {
  if (tokens_reserve(t, 1) != 0)
    return TB_ENOMEM;
  t->ids[t->len] = id;
  t->trainable[t->len] = trainable ? 1 : 0;
  t->len++;
  return 0;
}

int tb__tok_encode(tb_slice_t text, tb__tokens_t *out) {
  if (tokens_reserve(out, text.len) != 0)
    return TB_ENOMEM;
  const unsigned char *p = (const unsigned char *)text.base;
  for (size_t i = 0; i < text.len; i++) {
    out->ids[out->len + i] = p[i];
    out->trainable[out->len + i] = 0;
  }
  out->len += text.len;
  return 0;
}

const char *tb__tok_special_name(int32_t id) {
  if (id < TB_TOK_BYTES || id >= TB_TOK_VOCAB)
    return NULL;
  return tb__tok_base_special_names[id - TB_TOK_BYTES];
}

int tb__tok_special_id(tb_slice_t name) {
  for (int i = 0; i < TB_TOK_VOCAB - TB_TOK_BYTES; i++)
    if (tb__slice_eq_str(name, tb__tok_base_special_names[i]))
      return TB_TOK_BYTES + i;
  return TB_ENOENT;
}

int tb__tok_decode(const int32_t *ids, size_t n, int flags, tb__buf_t *out) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= TB_TOK_VOCAB)
      return TB_EINVAL;
  if (tb__buf_reserve(out, n) != 0)
    return TB_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < TB_TOK_BYTES) {
      out->base[out->len++] = (char)(unsigned char)ids[i];
    } else if (flags & TB_TOK_DECODE_SPECIAL) {
      if (tb__buf_append_str(out, tb__tok_base_special_names[ids[i] - TB_TOK_BYTES]) != 0)
        return TB_ENOMEM;
    }
  }
  return 0;
}

static int render(const tb__chat_msg_t *msgs, size_t n, int flags, tb__tokens_t *out,
                  tb_error_t *err) {
  const tb_renderer_t *r = tb__base_renderer();
  tb_chat_message_t *m = calloc(n ? n : 1, sizeof(*m));
  if (r == NULL || m == NULL) {
    free(m);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    /* Roles and content arrive as slices: pass roles the renderer knows
     * as C strings, and content by length. */
    tb_slice_t role = msgs[i].role;
    m[i].role = tb__slice_eq_str(role, "system")      ? "system"
                : tb__slice_eq_str(role, "user")      ? "user"
                : tb__slice_eq_str(role, "assistant") ? "assistant"
                                                      : NULL;
    if (m[i].role == NULL) {
      free(m);
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "messages[%zu].role: \"%.*s\" is not one of system, user, assistant",
                          i, (int)(role.len > 64 ? 64 : role.len), role.base ? role.base : "");
    }
    m[i].content = msgs[i].content.len ? msgs[i].content.base : "";
    m[i].content_len = msgs[i].content.len;
  }
  tb_rendered_t o;
  int rc = tb_renderer_render(r, m, n, flags, &o, err);
  free(m);
  if (rc != 0)
    return rc;
  if (tokens_reserve(out, o.len) != 0) {
    tb_rendered_free(&o);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  }
  for (size_t i = 0; i < o.len; i++) {
    out->ids[out->len + i] = o.tokens[i];
    out->trainable[out->len + i] = o.weights[i] > 0;
  }
  out->len += o.len;
  tb_rendered_free(&o);
  return 0;
}

int tb__chat_render(const tb__chat_msg_t *msgs, size_t n, tb__tokens_t *out, tb_error_t *err) {
  return render(msgs, n, 0, out, err);
}

int tb__chat_render_prompt(const tb__chat_msg_t *msgs, size_t n, tb__tokens_t *out,
                           tb_error_t *err) {
  return render(msgs, n, TB_RENDER_GENERATION_PROMPT, out, err);
}

int tb__chat_is_stop(int32_t id) {
  return id == TB_TOK_END || id == TB_TOK_EOS;
}

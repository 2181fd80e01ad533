/*
 * Byte-level tokenizer and chat template (see tokenizer.h for the
 * vocabulary and the template).
 *
 * Non-goals: BPE or any learned merges; Unicode awareness (bytes are
 * tokens, so any byte string round-trips, valid UTF-8 or not).
 */
#include "engine/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char *const special_names[TB_TOK_VOCAB - TB_TOK_BYTES] = {
  "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>",
  "<|end|>", "<|pad|>", "<|reserved_0|>", "<|reserved_1|>",
  "<|reserved_2|>", "<|reserved_3|>", "<|reserved_4|>", "<|reserved_5|>",
  "<|reserved_6|>", "<|reserved_7|>", "<|reserved_8|>",
};

void tb__tokens_free(tb_tokens_t *t) {
  free(t->ids);
  free(t->trainable);
  memset(t, 0, sizeof(*t));
}

static int tokens_reserve(tb_tokens_t *t, size_t extra) {
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

int tb__tokens_push(tb_tokens_t *t, int32_t id, int trainable) {
  if (tokens_reserve(t, 1) != 0)
    return TB_ENOMEM;
  t->ids[t->len] = id;
  t->trainable[t->len] = trainable ? 1 : 0;
  t->len++;
  return 0;
}

static int encode_masked(tb_slice_t text, int trainable, tb_tokens_t *out) {
  if (tokens_reserve(out, text.len) != 0)
    return TB_ENOMEM;
  const unsigned char *p = (const unsigned char *)text.base;
  for (size_t i = 0; i < text.len; i++) {
    out->ids[out->len + i] = p[i];
    out->trainable[out->len + i] = trainable ? 1 : 0;
  }
  out->len += text.len;
  return 0;
}

int tb__tok_encode(tb_slice_t text, tb_tokens_t *out) {
  return encode_masked(text, 0, out);
}

const char *tb__tok_special_name(int32_t id) {
  if (id < TB_TOK_BYTES || id >= TB_TOK_VOCAB)
    return NULL;
  return special_names[id - TB_TOK_BYTES];
}

int tb__tok_special_id(tb_slice_t name) {
  for (int i = 0; i < TB_TOK_VOCAB - TB_TOK_BYTES; i++)
    if (tb__slice_eq_str(name, special_names[i]))
      return TB_TOK_BYTES + i;
  return TB_ENOENT;
}

int tb__tok_decode(const int32_t *ids, size_t n, int flags, tb_buf_t *out) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= TB_TOK_VOCAB)
      return TB_EINVAL;
  if (tb__buf_reserve(out, n) != 0)
    return TB_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < TB_TOK_BYTES) {
      out->base[out->len++] = (char)(unsigned char)ids[i];
    } else if (flags & TB_TOK_DECODE_SPECIAL) {
      if (tb__buf_append_str(out, special_names[ids[i] - TB_TOK_BYTES]) != 0)
        return TB_ENOMEM;
    }
  }
  return 0;
}

static int role_token(tb_slice_t role) {
  if (tb__slice_eq_str(role, "system")) return TB_TOK_SYSTEM;
  if (tb__slice_eq_str(role, "user")) return TB_TOK_USER;
  if (tb__slice_eq_str(role, "assistant")) return TB_TOK_ASSISTANT;
  return -1;
}

static int render(const tb_chat_msg_t *msgs, size_t n, int train,
                  tb_tokens_t *out, tb_error_t *err) {
  /* Check every role before appending anything, so a failure leaves out
   * as it was. */
  for (size_t i = 0; i < n; i++)
    if (role_token(msgs[i].role) < 0)
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "messages[%zu].role: \"%.*s\" is not one of "
                          "system, user, assistant", i,
                          (int)(msgs[i].role.len > 64 ? 64
                                                      : msgs[i].role.len),
                          msgs[i].role.base ? msgs[i].role.base : "");
  size_t start = out->len;
  int rc = tb__tokens_push(out, TB_TOK_BOS, 0);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    int role = role_token(msgs[i].role);
    int t = train && role == TB_TOK_ASSISTANT;
    rc = tb__tokens_push(out, role, 0);
    if (rc == 0)
      rc = encode_masked(msgs[i].content, t, out);
    if (rc == 0)
      rc = tb__tokens_push(out, TB_TOK_END, t);
  }
  if (rc == 0 && !train)
    rc = tb__tokens_push(out, TB_TOK_ASSISTANT, 0);
  if (rc != 0) {
    out->len = start;
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  }
  return 0;
}

int tb__chat_render(const tb_chat_msg_t *msgs, size_t n, tb_tokens_t *out,
                    tb_error_t *err) {
  return render(msgs, n, 1, out, err);
}

int tb__chat_render_prompt(const tb_chat_msg_t *msgs, size_t n,
                           tb_tokens_t *out, tb_error_t *err) {
  return render(msgs, n, 0, out, err);
}

int tb__chat_is_stop(int32_t id) {
  return id == TB_TOK_END || id == TB_TOK_EOS;
}

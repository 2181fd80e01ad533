/*
 * Renderers (tinkerbell/renderer.h): a conversation is written as one
 * string in the model's format (render_formats.c), with the byte spans of
 * every message's content and assistant body; the string is encoded in
 * one pass with token offsets, as transformers encodes a rendered
 * template, and each token's weight comes from the spans its bytes
 * overlap.  Encoding message by message and concatenating would differ
 * from the template wherever BPE or the pre-tokenizer's pattern crosses
 * a seam.
 *
 * Also here: stop sequences, the parse of a sampled reply, and the
 * `base` template's old entry points (tb_base_chat_render,
 * tb_base_decode) over this API.
 */
#include <stdlib.h>
#include <string.h>

#include "text/render_internal.h"
#include "text/tok_internal.h"

static const char *const names[] = { "llama3", "qwen3", "qwen3_disable_thinking", "chatml",
                                     "role_colon", "base" };
#define N_NAMES (sizeof(names) / sizeof(names[0]))

const char *const *tb_renderer_names(size_t *n) {
  *n = N_NAMES;
  return names;
}

static int oom(tb_error_t *err) {
  return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
}

/* The id of a token the renderer needs, or a failure naming it. */
static int need(const tb_renderer_t *r, const char *tok, int32_t *id, tb_error_t *err) {
  *id = tb_tokenizer_token_to_id(r->tok, tok, strlen(tok));
  if (*id < 0)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "renderer %s: the tokenizer (%s) has no token %s", r->name,
                        r->tok->name ? r->tok->name : "?", tok);
  return 0;
}

static void add_stop(tb_renderer_t *r, int32_t id) {
  for (size_t i = 0; i < r->n_stop_ids; i++)
    if (r->stop_ids[i] == id)
      return;
  if (r->n_stop_ids < sizeof(r->stop_ids) / sizeof(r->stop_ids[0]))
    r->stop_ids[r->n_stop_ids++] = id;
}

int tb__renderer_new_variant(const char *name, const tb__render_variant_t *v,
                             const tb_tokenizer_t *tok, tb_renderer_t **out, tb_error_t *err) {
  *out = NULL;
  size_t which = N_NAMES;
  for (size_t i = 0; i < N_NAMES; i++)
    if (name != NULL && strcmp(name, names[i]) == 0)
      which = i;
  if (which == N_NAMES)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "renderer: \"%.40s\" is not one of llama3, qwen3, "
                        "qwen3_disable_thinking, chatml, role_colon, base",
                        name ? name : "(null)");
  tb_renderer_t *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return oom(err);
  r->name = names[which];
  r->tok = tok;
  if (v != NULL)
    r->v = *v;
  int rc = 0;
  int32_t id;
  size_t n_eos;
  const int32_t *eos = tb_tokenizer_eos_ids(tok, &n_eos);
  switch (which) {
    case 0:
      r->kind = TB__R_LLAMA3;
      if ((rc = need(r, "<|start_header_id|>", &id, err)) == 0 &&
          (rc = need(r, "<|end_header_id|>", &id, err)) == 0 &&
          (rc = need(r, "<|eot_id|>", &id, err)) == 0) {
        add_stop(r, id);
        r->bos_text = tb_tokenizer_bos_id(tok) >= 0
                          ? tb_tokenizer_id_to_token(tok, tb_tokenizer_bos_id(tok), NULL)
                          : NULL;
        if (r->bos_text == NULL)
          rc = tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                            "renderer llama3: the tokenizer names no bos_token "
                            "(tokenizer_config.json)");
      }
      break;
    case 1:
    case 2:
    case 3:
      r->kind = which == 3 ? TB__R_CHATML : TB__R_QWEN3;
      r->disable_thinking = which == 2;
      if ((rc = need(r, "<|im_start|>", &id, err)) == 0 &&
          (rc = need(r, "<|im_end|>", &id, err)) == 0)
        add_stop(r, id);
      break;
    case 4:
      r->kind = TB__R_ROLE_COLON;
      r->stop_strings[0] = "\n\nUser:";
      r->n_stop_strings = 1;
      if (tb_tokenizer_bos_id(tok) >= 0)
        r->bos_text = tb_tokenizer_id_to_token(tok, tb_tokenizer_bos_id(tok), NULL);
      break;
    default:
      r->kind = TB__R_BASE;
      if ((rc = need(r, "<|bos|>", &id, err)) == 0 && (rc = need(r, "<|end|>", &id, err)) == 0)
        add_stop(r, id);
      break;
  }
  /* bos_text points into the tokenizer's blob, which is not
   * NUL-terminated: keep a copy. */
  if (rc == 0 && r->bos_text != NULL) {
    size_t l;
    const char *s = tb_tokenizer_id_to_token(tok, tb_tokenizer_bos_id(tok), &l);
    char *c = tb__strndup(s, l);
    if (c == NULL)
      rc = oom(err);
    r->bos_text = c;
  }
  for (size_t i = 0; rc == 0 && i < n_eos; i++)
    add_stop(r, eos[i]);
  if (rc != 0) {
    tb_renderer_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

int tb_renderer_new(const char *name, const tb_tokenizer_t *tok, tb_renderer_t **out,
                    tb_error_t *err) {
  return tb__renderer_new_variant(name, NULL, tok, out, err);
}

void tb_renderer_free(tb_renderer_t *r) {
  if (r == NULL)
    return;
  free((char *)r->bos_text);
  free(r);
}

const char *tb_renderer_name(const tb_renderer_t *r) {
  return r->name;
}

const tb_tokenizer_t *tb_renderer_tokenizer(const tb_renderer_t *r) {
  return r->tok;
}

void tb_renderer_stop(const tb_renderer_t *r, tb_stop_t *out) {
  out->tokens = r->stop_ids;
  out->n_tokens = r->n_stop_ids;
  out->strings = r->stop_strings;
  out->n_strings = r->n_stop_strings;
}

/* ---------------------------------------------------------------- render */

void tb_rendered_free(tb_rendered_t *o) {
  free(o->tokens);
  free(o->weights);
  free(o->text);
  memset(o, 0, sizeof(*o));
}

static int to_msgs(const tb_chat_message_t *msgs, size_t n, tb__msg_t *m, tb_error_t *err) {
  for (size_t i = 0; i < n; i++) {
    const char *role = msgs[i].role ? msgs[i].role : "";
    const char *content = msgs[i].content ? msgs[i].content : "";
    m[i].role = (tb_slice_t){ role, strlen(role) };
    m[i].content = (tb_slice_t){ content, msgs[i].content_len ? msgs[i].content_len
                                                               : strlen(content) };
    m[i].reasoning = msgs[i].reasoning;
    m[i].assistant = strcmp(role, "assistant") == 0;
    if (!m[i].assistant && strcmp(role, "user") != 0 && strcmp(role, "system") != 0)
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "messages[%zu].role: \"%.*s\" is not one of system, user, assistant",
                          i, (int)(m[i].role.len > 64 ? 64 : m[i].role.len), role);
  }
  return 0;
}

int tb_renderer_render(const tb_renderer_t *r, const tb_chat_message_t *msgs, size_t n,
                       int flags, tb_rendered_t *out, tb_error_t *err) {
  memset(out, 0, sizeof(*out));
  tb__msg_t *m = calloc(n ? n : 1, sizeof(*m));
  if (m == NULL)
    return oom(err);
  int rc = to_msgs(msgs, n, m, err);
  if (rc != 0) {
    free(m);
    return rc;
  }
  int gen = (flags & TB_RENDER_GENERATION_PROMPT) != 0;
  int any_assistant = 0;
  for (size_t i = 0; i < n; i++)
    any_assistant |= m[i].assistant;
  tb__rbuild_t b = { TB_BUF_INIT, NULL, 0, 0, NULL, 0, 0, 0 };
  tb__render_format(r, m, n, gen, &b);
  free(m);
  if (b.rc == 0)
    b.rc = tb__buf_terminate(&b.text);
  tb__ids_t ids = { 0 };
  ids.want_offs = 1;
  if (b.rc != 0) {
    rc = oom(err);
  } else {
    /* `base` never reads special tokens in content; the others do what
     * transformers does unless asked not to. */
    int plain = r->kind == TB__R_BASE || (flags & TB_RENDER_PLAIN_CONTENT);
    rc = tb__tok_encode_spans(r->tok, b.text.base, b.text.len, 0, plain ? b.content : NULL,
                              plain ? b.n_content : 0, &ids, err);
  }
  float *w = NULL;
  if (rc == 0 && (w = malloc((ids.len ? ids.len : 1) * sizeof(*w))) == NULL)
    rc = oom(err);
  if (rc == 0) {
    size_t first_body = (flags & TB_RENDER_TRAIN_LAST) && b.n_body ? b.n_body - 1 : 0;
    for (size_t i = 0; i < ids.len; i++) {
      size_t s = ids.offs[2 * i], e = ids.offs[2 * i + 1];
      float v = 0;
      if (!gen && !any_assistant) {
        v = 1;
      } else if (!gen) {
        for (size_t k = first_body; k < b.n_body && v == 0; k++)
          if (s < b.body[2 * k + 1] && e > b.body[2 * k])
            v = 1;
      }
      w[i] = v;
    }
    if (ids.ids == NULL && (ids.ids = malloc(sizeof(*ids.ids))) == NULL)
      rc = oom(err);
  }
  if (rc != 0) {
    free(w);
    tb__ids_free(&ids);
    tb__buf_free(&b.text);
  } else {
    out->tokens = ids.ids;
    out->weights = w;
    out->len = ids.len;
    out->text = tb__buf_steal(&b.text, &out->text_len);
    free(ids.offs);
  }
  free(b.content);
  free(b.body);
  return rc;
}

/* ----------------------------------------------------------------- parse */

void tb_reply_free(tb_reply_t *r) {
  free(r->content);
  free(r->reasoning);
  memset(r, 0, sizeof(*r));
}

static int is_stop(const tb_renderer_t *r, int32_t id) {
  for (size_t i = 0; i < r->n_stop_ids; i++)
    if (r->stop_ids[i] == id)
      return 1;
  return 0;
}

int tb_renderer_parse(const tb_renderer_t *r, const int32_t *tokens, size_t n, tb_reply_t *out,
                      tb_error_t *err) {
  memset(out, 0, sizeof(*out));
  size_t cut = n;
  for (size_t i = 0; i < n; i++)
    if (is_stop(r, tokens[i])) {
      cut = i;
      out->ended = 1;
      break;
    }
  char *text;
  size_t len;
  int rc = tb_tokenizer_decode(r->tok, tokens, cut, 0, &text, &len, err);
  if (rc != 0)
    return rc;
  for (size_t k = 0; k < r->n_stop_strings; k++) {
    char *hit = strstr(text, r->stop_strings[k]);
    if (hit != NULL) {
      *hit = 0;
      len = (size_t)(hit - text);
      out->ended = 1;
    }
  }
  tb_slice_t c = { text, len }, reasoning = { NULL, 0 };
  if (r->kind == TB__R_ROLE_COLON) {
    /* the cookbook strips the reply (by character: a byte of UTF-8 is
     * no code point of its own) */
    c = tb__py_strip(c);
  } else if (r->kind == TB__R_QWEN3) {
    /* As the template reads an assistant message back: the reasoning is
     * what precedes the first </think> (after the last <think>), the
     * content what follows the last one. */
    const char *first = NULL, *last = NULL;
    for (size_t i = 0; i + 8 <= c.len; i++)
      if (memcmp(c.base + i, "</think>", 8) == 0) {
        if (first == NULL)
          first = c.base + i;
        last = c.base + i;
      }
    if (first != NULL) {
      tb_slice_t before = { c.base, (size_t)(first - c.base) };
      while (before.len && before.base[before.len - 1] == '\n')
        before.len--;
      for (size_t i = before.len; i-- > 0;)
        if (i + 7 <= before.len && memcmp(before.base + i, "<think>", 7) == 0) {
          before = (tb_slice_t){ before.base + i + 7, before.len - i - 7 };
          break;
        }
      while (before.len && before.base[0] == '\n')
        before.base++, before.len--;
      reasoning = before;
      c = (tb_slice_t){ last + 8, (size_t)(c.base + c.len - (last + 8)) };
      while (c.len && c.base[0] == '\n')
        c.base++, c.len--;
    }
  }
  out->content = tb__strndup(c.base, c.len);
  out->content_len = c.len;
  if (reasoning.base != NULL) {
    out->reasoning = tb__strndup(reasoning.base, reasoning.len);
    out->reasoning_len = reasoning.len;
  }
  free(text);
  if (out->content == NULL || (reasoning.base != NULL && out->reasoning == NULL)) {
    tb_reply_free(out);
    return oom(err);
  }
  return 0;
}

/* ------------------------------------------------------------------ base */

int tb_base_chat_render(const tb_chat_message_t *msgs, size_t n, int generation_prompt,
                        int32_t **tokens, float **weights, size_t *len, tb_error_t *err) {
  *tokens = NULL;
  *weights = NULL;
  *len = 0;
  tb_tokenizer_t *tok;
  tb_renderer_t *r;
  if (tb__tok_base_new(&tok) != 0)
    return oom(err);
  int rc = tb_renderer_new("base", tok, &r, err);
  if (rc == 0) {
    tb_rendered_t out;
    rc = tb_renderer_render(r, msgs, n, generation_prompt ? TB_RENDER_GENERATION_PROMPT : 0,
                            &out, err);
    if (rc == 0) {
      *tokens = out.tokens;
      *weights = out.weights;
      *len = out.len;
      free(out.text);
    }
    tb_renderer_free(r);
  }
  tb_tokenizer_free(tok);
  return rc;
}

int tb_base_decode(const int32_t *ids, size_t n, char **text) {
  *text = NULL;
  tb_tokenizer_t *tok;
  if (tb__tok_base_new(&tok) != 0)
    return TB_ENOMEM;
  tb_error_t err = { 0 };
  int rc = tb_tokenizer_decode(tok, ids, n, TB_DECODE_SKIP_SPECIAL, text, NULL, &err);
  tb_error_clear(&err);
  tb_tokenizer_free(tok);
  return rc;
}

/*
 * The text of each chat format, written as the models' Jinja templates
 * write it (the templates are quoted where the logic is not obvious), so
 * that encoding the whole text in one pass gives the template's tokens.
 * Python's string methods that the templates call (strip('\n'), split,
 * Jinja's trim) are reproduced exactly: they decide bytes.
 *
 * Non-goals: tool calls and the "tool" role (the caller refuses roles
 * other than system, user, assistant), Llama 3.1's date preamble (the
 * Llama 3 Instruct template has none).
 */
#include <string.h>

#include <utf8proc.h>

#include "text/render_internal.h"

void tb__rb_mem(tb__rbuild_t *b, const char *s, size_t n) {
  if (b->rc == 0 && n > 0)
    b->rc = tb__buf_append(&b->text, s, n);
}

void tb__rb_str(tb__rbuild_t *b, const char *s) {
  tb__rb_mem(b, s, strlen(s));
}

static void push_pair(tb__rbuild_t *b, size_t **a, size_t *n, size_t *cap, size_t x, size_t y) {
  if (b->rc != 0)
    return;
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 16;
    size_t *na = realloc(*a, 2 * c * sizeof(*na));
    if (na == NULL) {
      b->rc = TB_ENOMEM;
      return;
    }
    *a = na;
    *cap = c;
  }
  (*a)[2 * *n] = x;
  (*a)[2 * *n + 1] = y;
  (*n)++;
}

void tb__rb_content(tb__rbuild_t *b, const char *s, size_t n) {
  size_t at = b->text.len;
  tb__rb_mem(b, s, n);
  if (n > 0)
    push_pair(b, &b->content, &b->n_content, &b->cap_content, at, at + n);
}

void tb__rb_body(tb__rbuild_t *b, size_t start, size_t end) {
  push_pair(b, &b->body, &b->n_body, &b->cap_body, start, end);
}

int tb__py_isspace(uint32_t cp) {
  /* Python: general category Zs, or bidirectional class WS, B or S. */
  if ((cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85)
    return 1;
  if (cp < 0x80)
    return 0;
  const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
  return p->category == UTF8PROC_CATEGORY_ZS || p->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
         p->bidi_class == UTF8PROC_BIDI_CLASS_B || p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

tb_slice_t tb__py_strip(tb_slice_t s) {
  const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s.base;
  size_t a = 0, e = s.len;
  while (a < e) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate(p + a, (utf8proc_ssize_t)(e - a), &cp);
    if (l <= 0 || !tb__py_isspace((uint32_t)cp))
      break;
    a += (size_t)l;
  }
  while (e > a) {
    size_t k = e - 1;
    while (k > a && (p[k] & 0xC0) == 0x80)
      k--;
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate(p + k, (utf8proc_ssize_t)(e - k), &cp);
    if (l <= 0 || !tb__py_isspace((uint32_t)cp))
      break;
    e = k;
  }
  return (tb_slice_t){ s.base + a, e - a };
}

static tb_slice_t strip_nl(tb_slice_t s, int left, int right) {
  while (left && s.len > 0 && s.base[0] == '\n')
    s.base++, s.len--;
  while (right && s.len > 0 && s.base[s.len - 1] == '\n')
    s.len--;
  return s;
}

/* The first (or last) occurrence of needle in s, or NULL. */
static const char *find(tb_slice_t s, const char *needle, int last) {
  size_t nl = strlen(needle);
  const char *hit = NULL;
  for (size_t i = 0; i + nl <= s.len; i++)
    if (memcmp(s.base + i, needle, nl) == 0) {
      hit = s.base + i;
      if (!last)
        break;
    }
  return hit;
}

static int starts(tb_slice_t s, const char *p) {
  size_t n = strlen(p);
  return s.len >= n && memcmp(s.base, p, n) == 0;
}

static int ends(tb_slice_t s, const char *p) {
  size_t n = strlen(p);
  return s.len >= n && memcmp(s.base + s.len - n, p, n) == 0;
}

/* One message: open, the role, mid, the content and end; the content and
 * end are the trained body when the message is the assistant's. */
static void rb_message(tb__rbuild_t *b, const char *open, tb_slice_t role, const char *mid,
                       tb_slice_t content, const char *end, int assistant) {
  tb__rb_str(b, open);
  tb__rb_mem(b, role.base, role.len);
  tb__rb_str(b, mid);
  size_t body = b->text.len;
  tb__rb_content(b, content.base, content.len);
  tb__rb_str(b, end);
  if (assistant)
    tb__rb_body(b, body, b->text.len);
}

/* ------------------------------------------------------------------ base */

static void format_base(const tb__msg_t *m, size_t n, int gen, tb__rbuild_t *b) {
  tb__rb_str(b, "<|bos|>");
  for (size_t i = 0; i < n; i++)
    rb_message(b, "<|", m[i].role, "|>", m[i].content, "<|end|>", m[i].assistant);
  if (gen)
    tb__rb_str(b, "<|assistant|>");
}

/* ---------------------------------------------------------------- llama3 */

/* Llama 3 Instruct:
 *   {% for message in messages %}{% set content = '<|start_header_id|>' +
 *   message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim +
 *   '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token +
 *   content %}{% endif %}{{ content }}{% endfor %}{% if
 *   add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
 * (an early revision has no `if add_generation_prompt`: always_header). */
static void format_llama3(const tb_renderer_t *r, const tb__msg_t *m, size_t n, int gen,
                          tb__rbuild_t *b) {
  for (size_t i = 0; i < n; i++) {
    if (i == 0)
      tb__rb_str(b, r->bos_text);
    rb_message(b, "<|start_header_id|>", m[i].role, "<|end_header_id|>\n\n",
               tb__py_strip(m[i].content), "<|eot_id|>", m[i].assistant);
  }
  if (gen || r->v.always_header)
    tb__rb_str(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* ----------------------------------------------------------------- qwen3 */

/* Qwen3's template, for system, user and assistant messages:
 * - a first system message opens the text; later ones render as users do;
 * - last_query_index is the last user message whose content is not
 *   wrapped in <tool_response>...</tool_response>;
 * - an assistant message's reasoning is its reasoning_content, or else
 *   what its content holds before '</think>' (content then keeps what
 *   follows the last '</think>', less leading newlines);
 * - an assistant message after the last query gets a <think> block when
 *   it is the last message or has reasoning;
 * - add_generation_prompt adds '<|im_start|>assistant\n', and with
 *   enable_thinking=false '<think>\n\n</think>\n\n'. */
static void format_qwen3(const tb_renderer_t *r, const tb__msg_t *m, size_t n, int gen,
                         tb__rbuild_t *b) {
  size_t first = 0;
  if (n > 0 && !m[0].assistant && tb__slice_eq_str(m[0].role, "system")) {
    tb__rb_str(b, "<|im_start|>system\n");
    tb__rb_content(b, m[0].content.base, m[0].content.len);
    tb__rb_str(b, "<|im_end|>\n");
    first = 1;
  }
  size_t last_query = n ? n - 1 : 0;
  for (size_t k = n; k-- > 0;)
    if (tb__slice_eq_str(m[k].role, "user") &&
        !(starts(m[k].content, "<tool_response>") && ends(m[k].content, "</tool_response>"))) {
      last_query = k;
      break;
    }
  for (size_t i = first; i < n; i++) {
    if (!m[i].assistant) {
      tb__rb_str(b, "<|im_start|>");
      tb__rb_mem(b, m[i].role.base, m[i].role.len);
      tb__rb_str(b, "\n");
      tb__rb_content(b, m[i].content.base, m[i].content.len);
      tb__rb_str(b, "<|im_end|>\n");
      continue;
    }
    tb_slice_t content = m[i].content, reasoning = { "", 0 };
    if (m[i].reasoning != NULL) {
      reasoning = (tb_slice_t){ m[i].reasoning, strlen(m[i].reasoning) };
    } else if (find(content, "</think>", 0) != NULL) {
      const char *lastc = find(content, "</think>", 1) + 8;
      const char *firstc = find(content, "</think>", 0);
      tb_slice_t before = strip_nl((tb_slice_t){ content.base, (size_t)(firstc - content.base) },
                                   0, 1);
      const char *open = find(before, "<think>", 1);
      if (open != NULL)
        before = (tb_slice_t){ open + 7, (size_t)(before.base + before.len - (open + 7)) };
      reasoning = strip_nl(before, 1, 0);
      content = strip_nl((tb_slice_t){ lastc, (size_t)(content.base + content.len - lastc) }, 1,
                         0);
    }
    tb__rb_str(b, "<|im_start|>assistant\n");
    size_t body = b->text.len;
    if (i > last_query && (i == n - 1 || reasoning.len > 0)) {
      tb__rb_str(b, "<think>\n");
      tb_slice_t rs = strip_nl(reasoning, 1, 1);
      tb__rb_content(b, rs.base, rs.len);
      tb__rb_str(b, "\n</think>\n\n");
      if (r->disable_thinking)
        body = b->text.len; /* the prompt supplies the block */
      tb_slice_t cs = strip_nl(content, 1, 0);
      tb__rb_content(b, cs.base, cs.len);
    } else {
      tb__rb_content(b, content.base, content.len);
    }
    tb__rb_str(b, "<|im_end|>");
    tb__rb_body(b, body, b->text.len);
    tb__rb_str(b, "\n");
  }
  if (gen) {
    tb__rb_str(b, "<|im_start|>assistant\n");
    if (r->disable_thinking)
      tb__rb_str(b, "<think>\n\n</think>\n\n");
  }
}

/* ---------------------------------------------------------------- chatml */

/* {% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' +
 * message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if
 * add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %},
 * SmolLM2's with a default system message when the first is not one. */
static void format_chatml(const tb_renderer_t *r, const tb__msg_t *m, size_t n, int gen,
                          tb__rbuild_t *b) {
  if (n > 0 && r->v.default_system != NULL && !tb__slice_eq_str(m[0].role, "system")) {
    tb__rb_str(b, "<|im_start|>system\n");
    tb__rb_str(b, r->v.default_system);
    tb__rb_str(b, "<|im_end|>\n");
  }
  for (size_t i = 0; i < n; i++) {
    rb_message(b, "<|im_start|>", m[i].role, "\n", m[i].content, "<|im_end|>", m[i].assistant);
    tb__rb_str(b, "\n");
  }
  if (gen)
    tb__rb_str(b, "<|im_start|>assistant\n");
}

/* ------------------------------------------------------------ role_colon */

/* The cookbook's format for base models: BOS, then "Role: content\n\n"
 * per message; a prompt ends with "Assistant:"; the last assistant
 * message of a training conversation is followed by "User:", which it
 * trains on, so the model learns to stop. */
static void format_role_colon(const tb_renderer_t *r, const tb__msg_t *m, size_t n, int gen,
                              tb__rbuild_t *b) {
  if (r->bos_text != NULL)
    tb__rb_str(b, r->bos_text);
  for (size_t i = 0; i < n; i++) {
    char cap = m[i].role.base[0];
    cap = (char)(cap >= 'a' && cap <= 'z' ? cap - 'a' + 'A' : cap);
    tb__rb_mem(b, &cap, 1);
    tb__rb_mem(b, m[i].role.base + 1, m[i].role.len - 1);
    tb__rb_str(b, ":");
    size_t body = b->text.len;
    tb__rb_str(b, " ");
    tb__rb_content(b, m[i].content.base, m[i].content.len);
    tb__rb_str(b, "\n\n");
    if (m[i].assistant && i == n - 1 && !gen)
      tb__rb_str(b, "User:");
    if (m[i].assistant)
      tb__rb_body(b, body, b->text.len);
  }
  if (gen)
    tb__rb_str(b, "Assistant:");
}

void tb__render_format(const tb_renderer_t *r, const tb__msg_t *m, size_t n, int gen,
                       tb__rbuild_t *b) {
  switch (r->kind) {
    case TB__R_BASE: format_base(m, n, gen, b); break;
    case TB__R_LLAMA3: format_llama3(r, m, n, gen, b); break;
    case TB__R_QWEN3: format_qwen3(r, m, n, gen, b); break;
    case TB__R_CHATML: format_chatml(r, m, n, gen, b); break;
    default: format_role_colon(r, m, n, gen, b); break;
  }
}

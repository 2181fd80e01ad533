/*
 * The inside of tb_renderer_t, shared by renderer.c (the public API:
 * rendering, weights, stops, parsing), render_formats.c (the text of each
 * chat format) and render_detect.c (picking one from a model directory).
 */
#ifndef TB_TEXT_RENDER_INTERNAL_H
#define TB_TEXT_RENDER_INTERNAL_H

#include "core/buf.h"
#include "tinkerbell/renderer.h"

enum { TB__R_BASE = 1, TB__R_LLAMA3, TB__R_QWEN3, TB__R_CHATML, TB__R_ROLE_COLON };

/* Variants of a format that real templates take. */
typedef struct tb__render_variant_s {
  int always_header;          /* llama3: the header ends every rendering */
  const char *default_system; /* chatml: a system message when none is given */
} tb__render_variant_t;

struct tb_renderer_s {
  const char *name;
  int kind;
  int disable_thinking;
  tb__render_variant_t v;
  const tb_tokenizer_t *tok;
  const char *bos_text; /* llama3, role_colon: the tokenizer's BOS, or NULL */
  int32_t stop_ids[72];
  size_t n_stop_ids;
  const char *stop_strings[1];
  size_t n_stop_strings;
};

/* One message, as slices. */
typedef struct tb__msg_s {
  tb_slice_t role, content;
  const char *reasoning; /* NUL-terminated, or NULL */
  int assistant;
} tb__msg_t;

/* The rendered text with the byte spans that matter: the content of each
 * message (plain text under TB_RENDER_PLAIN_CONTENT) and the weighted
 * body of each assistant message. */
typedef struct tb__rbuild_s {
  tb__buf_t text;
  size_t *content; /* pairs */
  size_t n_content, cap_content;
  size_t *body;    /* pairs, one per assistant message in order */
  size_t n_body, cap_body;
  int rc;          /* the first allocation failure */
} tb__rbuild_t;

void tb__rb_str(tb__rbuild_t *b, const char *s);
void tb__rb_mem(tb__rbuild_t *b, const char *s, size_t n);
/* Appends text of a message's content, recording it as content. */
void tb__rb_content(tb__rbuild_t *b, const char *s, size_t n);
void tb__rb_body(tb__rbuild_t *b, size_t start, size_t end);

/* Writes the text of the conversation in the renderer's format. */
void tb__render_format(const tb_renderer_t *r, const tb__msg_t *m, size_t n, int gen,
                       tb__rbuild_t *b);
/* Python's str.isspace for one code point (Jinja's trim). */
int tb__py_isspace(uint32_t cp);
/* Python's str.strip() with no argument (Jinja's trim), by character:
 * whitespace of any length in UTF-8 at either end. */
tb_slice_t tb__py_strip(tb_slice_t s);

int tb__renderer_new_variant(const char *name, const tb__render_variant_t *v,
                             const tb_tokenizer_t *tok, tb_renderer_t **out, tb_error_t *err);
/* The detection of render_detect.c, with the variant. */
int tb__renderer_detect(const char *config_json, size_t config_len, const char *tok_config,
                        size_t tok_config_len, const char *config_name, const char *file_name,
                        const char **name, tb__render_variant_t *v, tb_error_t *err);

#endif /* TB_TEXT_RENDER_INTERNAL_H */

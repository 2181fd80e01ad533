/*
 * The small parts of a tokenizer, read with jansson: added tokens, the
 * normalizer, pre-tokenizer, post-processor and decoder of
 * tokenizer.json, and tokenizer_config.json / generation_config.json.
 *
 * Each part the code implements is checked member by member; any other
 * kind is refused with "FILE: FIELD: reason".  Split patterns are written
 * for Oniguruma, which `tokenizers` uses; they are compiled with PCRE2
 * (JIT, UTF, UCP) after one rewrite: `\s` and `\S` become Oniguruma's
 * Unicode white space set, since PCRE2's `\s` also takes U+180E.
 */
#include <stdlib.h>
#include <string.h>

#include "text/tok_config.h"

/* Oniguruma's \s under Unicode: TAB..CR, NEL, Zs, LINE and PARAGRAPH
 * SEPARATOR. */
#define ONIG_SPACE "\\t\\n\\x0B\\f\\r\\x{85}\\p{Zs}\\x{2028}\\x{2029}"

/* GPT-2's pattern, which ByteLevel's use_regex applies. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int oom(tb_error_t *err) {
  return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
}

static int get_bool(json_t *o, const char *key, int dflt, int *out) {
  json_t *v = json_object_get(o, key);
  if (v == NULL || json_is_null(v)) {
    *out = dflt;
    return 0;
  }
  if (!json_is_boolean(v))
    return -1;
  *out = json_is_true(v);
  return 0;
}

/* ------------------------------------------------------------- added tokens */

int tb__trie_add(tb__trie_t *tr, const char *s, size_t n, int32_t id) {
  if (tr->nodes == NULL) {
    tr->cap = 64;
    tr->nodes = calloc(tr->cap, sizeof(*tr->nodes));
    if (tr->nodes == NULL)
      return TB_ENOMEM;
    tr->nodes[0].id = -1;
    tr->len = 1;
  }
  if (n == 0)
    return 0;
  tr->first[(unsigned char)s[0] >> 3] |= (uint8_t)(1u << ((unsigned char)s[0] & 7));
  uint32_t at = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t b = (uint8_t)s[i];
    uint32_t c = tr->nodes[at].child;
    while (c != 0 && tr->nodes[c].byte != b)
      c = tr->nodes[c].sibling;
    if (c == 0) {
      if (tr->len == tr->cap) {
        tb__trie_node_t *nn = realloc(tr->nodes, 2 * tr->cap * sizeof(*nn));
        if (nn == NULL)
          return TB_ENOMEM;
        tr->nodes = nn;
        tr->cap *= 2;
      }
      c = tr->len++;
      tr->nodes[c] = (tb__trie_node_t){ 0, tr->nodes[at].child, -1, b };
      tr->nodes[at].child = c;
    }
    at = c;
  }
  tr->nodes[at].id = id;
  return 0;
}

static int add_one(tb_tokenizer_t *t, const char *file, const char *where, int32_t id,
                   const char *content, size_t len, json_t *o, const int16_t byte_of[324],
                   tb_error_t *err) {
  if (len == 0 || len > TB__TOK_MAX_TOKEN)
    return tb__tok_fail(err, file, "%s.content: must be 1 to %u bytes", where,
                        TB__TOK_MAX_TOKEN);
  tb__added_t a = { id, 0, 0, 0, 0, 0 };
  int v[5];
  const char *keys[5] = { "lstrip", "rstrip", "single_word", "normalized", "special" };
  for (int k = 0; k < 5; k++)
    if (get_bool(o, keys[k], k == 3, &v[k]) != 0)
      return tb__tok_fail(err, file, "%s.%s: expected true or false", where, keys[k]);
  a.lstrip = (uint8_t)v[0];
  a.rstrip = (uint8_t)v[1];
  a.single_word = (uint8_t)v[2];
  a.normalized = (uint8_t)v[3];
  a.special = (uint8_t)v[4];
  /* `tokenizers` never normalizes special tokens' text. */
  if (a.special)
    a.normalized = 0;
  tb__added_t *na = realloc(t->added, (t->n_added + 1) * sizeof(*na));
  if (na == NULL)
    return oom(err);
  t->added = na;
  t->added[t->n_added++] = a;
  t->flags[id] |= TB__ID_PRESENT | TB__ID_ADDED | (a.special ? TB__ID_SPECIAL : 0);
  if (tb__tok_add_string(t, content, len, &t->text[id]) != 0)
    return oom(err);
  /* The bytes decoding gives it: through the byte-level alphabet when
   * every character is in it, else its UTF-8, as for model tokens. */
  char *tmp = malloc(len);
  if (tmp == NULL)
    return oom(err);
  size_t k = 0;
  int alphabet = 1;
  for (size_t i = 0; i < len && alphabet;) {
    unsigned char c = (unsigned char)content[i];
    uint32_t cp = c;
    size_t l = 1;
    if (c >= 0x80) {
      if ((c & 0xE0) == 0xC0 && i + 1 < len) {
        cp = (uint32_t)(c & 0x1F) << 6 | (content[i + 1] & 0x3F);
        l = 2;
      } else {
        cp = 0x7FFFFFFF;
      }
    }
    if (cp >= 324 || byte_of[cp] < 0)
      alphabet = 0;
    else
      tmp[k++] = (char)byte_of[cp];
    i += l;
  }
  int rc = alphabet ? tb__tok_add_string(t, tmp, k, &t->bytes[id])
                    : tb__tok_add_string(t, content, len, &t->bytes[id]);
  free(tmp);
  if (rc != 0)
    return oom(err);
  tb__strhash_put(&t->by_text, t->blob, t->text, id, 1);
  return 0;
}

int tb__tok_config_added(tb_tokenizer_t *t, const char *file, json_t *added,
                         const int16_t byte_of[324], tb_error_t *err) {
  size_t i;
  json_t *o;
  json_array_foreach(added, i, o) {
    char where[48];
    snprintf(where, sizeof(where), "added_tokens[%zu]", i);
    json_t *c = json_object_get(o, "content");
    if (!json_is_object(o) || !json_is_string(c))
      return tb__tok_fail(err, file, "%s.content: expected a string", where);
    int32_t id = (int32_t)json_integer_value(json_object_get(o, "id"));
    int rc = add_one(t, file, where, id, json_string_value(c), json_string_length(c), o, byte_of,
                     err);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* ------------------------------------------------------------------ model */

int tb__tok_config_model(tb_tokenizer_t *t, const char *file, json_t *model, tb_error_t *err) {
  json_t *unk = json_object_get(model, "unk_token");
  if (unk != NULL && !json_is_null(unk)) {
    if (!json_is_string(unk))
      return tb__tok_fail(err, file, "model.unk_token: expected a string or null");
    t->unk_id = tb__strhash_get(&t->by_text, t->blob, t->text, json_string_value(unk),
                                json_string_length(unk));
    if (t->unk_id < 0)
      return tb__tok_fail(err, file, "model.unk_token: \"%.40s\" is not in model.vocab",
                          json_string_value(unk));
  }
  for (int b = 0; b < 256; b++) {
    char c = (char)b;
    t->byte_id[b] = tb__strhash_get(&t->by_bytes, t->blob, t->bytes, &c, 1);
    char fb[8];
    snprintf(fb, sizeof(fb), "<0x%02X>", b);
    t->fallback_id[b] = tb__strhash_get(&t->by_text, t->blob, t->text, fb, 6);
    if (t->byte_id[b] < 0 && !(t->byte_fallback && t->fallback_id[b] >= 0) && t->unk_id < 0)
      return tb__tok_fail(err, file,
                          "model.vocab: no token for the byte 0x%02x, and neither byte_fallback "
                          "nor unk_token to stand for it", b);
  }
  return 0;
}

/* ---------------------------------------------------------------- pipeline */

static const char *type_of(json_t *o) {
  return json_string_value(json_object_get(o, "type"));
}

static int add_normalizer(tb_tokenizer_t *t, const char *file, json_t *o, int depth,
                          tb_error_t *err) {
  if (o == NULL || json_is_null(o))
    return 0;
  const char *ty = type_of(o);
  if (ty == NULL || depth > 4)
    return tb__tok_fail(err, file, "normalizer.type: missing");
  if (strcmp(ty, "Sequence") == 0) {
    json_t *list = json_object_get(o, "normalizers");
    if (!json_is_array(list))
      return tb__tok_fail(err, file, "normalizer.normalizers: expected an array");
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n) {
      int rc = add_normalizer(t, file, n, depth + 1, err);
      if (rc != 0)
        return rc;
    }
    return 0;
  }
  int kind = strcmp(ty, "NFC") == 0 ? TB__NORM_NFC : strcmp(ty, "NFD") == 0 ? TB__NORM_NFD
             : strcmp(ty, "NFKC") == 0 ? TB__NORM_NFKC : strcmp(ty, "NFKD") == 0 ? TB__NORM_NFKD
             : 0;
  if (kind == 0)
    return tb__tok_fail(err, file,
                        "normalizer.type: \"%.40s\" is not supported (NFC, NFD, NFKC, NFKD and "
                        "Sequence are)", ty);
  if (t->n_norm == TB__TOK_MAX_STEPS)
    return tb__tok_fail(err, file, "normalizer: more than %d steps", TB__TOK_MAX_STEPS);
  t->norm[t->n_norm++] = kind;
  return 0;
}

/* Rewrites an Oniguruma pattern's \s and \S for PCRE2 (see the top). */
static char *rewrite_pattern(const char *p, size_t n, int *bad) {
  tb__buf_t b = TB_BUF_INIT;
  int in_class = 0, rc = 0;
  *bad = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    char c = p[i];
    if (c == '\\' && i + 1 < n) {
      char e = p[i + 1];
      i++;
      if (e == 's')
        rc = tb__buf_append_str(&b, in_class ? ONIG_SPACE : "[" ONIG_SPACE "]");
      else if (e == 'S' && !in_class)
        rc = tb__buf_append_str(&b, "[^" ONIG_SPACE "]");
      else if (e == 'S')
        *bad = 1;
      else
        rc = tb__buf_append(&b, p + i - 1, 2);
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = 1;
      rc = tb__buf_append(&b, &c, 1);
      /* A ']' right after '[' or '[^' is a literal. */
      if (rc == 0 && i + 1 < n && p[i + 1] == '^')
        rc = tb__buf_append(&b, &p[++i], 1);
      if (rc == 0 && i + 1 < n && p[i + 1] == ']')
        rc = tb__buf_append(&b, &p[++i], 1);
      continue;
    }
    if (c == '[' && in_class && i + 1 < n && p[i + 1] == ':') {
      const char *end = memchr(p + i + 2, ']', n - i - 2);
      if (end != NULL && end[-1] == ':') {
        rc = tb__buf_append(&b, p + i, (size_t)(end - (p + i)) + 1);
        i = (size_t)(end - p);
        continue;
      }
    }
    if (c == '[' && in_class)
      *bad = 1; /* nested classes: Oniguruma's set operations */
    if (c == ']' && in_class)
      in_class = 0;
    rc = tb__buf_append(&b, &c, 1);
  }
  if (rc == 0)
    rc = tb__buf_terminate(&b);
  if (rc != 0) {
    tb__buf_free(&b);
    return NULL;
  }
  return tb__buf_steal(&b, NULL);
}

static int compile(const char *file, const char *field, const char *pat, size_t n, int literal,
                   pcre2_code **out, int *jit, tb_error_t *err) {
  int bad = 0;
  char *p = NULL;
  if (!literal) {
    p = rewrite_pattern(pat, n, &bad);
    if (p == NULL)
      return oom(err);
    if (bad) {
      free(p);
      return tb__tok_fail(err, file, "%s: \"%.60s\" uses \\S or a class inside a class, which "
                          "this tokenizer does not translate", field, pat);
    }
  }
  int ec;
  PCRE2_SIZE eo;
  uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : 0);
  *out = pcre2_compile((PCRE2_SPTR)(literal ? pat : p), literal ? n : PCRE2_ZERO_TERMINATED,
                       opts, &ec, &eo, NULL);
  free(p);
  if (*out == NULL) {
    PCRE2_UCHAR msg[120];
    pcre2_get_error_message(ec, msg, sizeof(msg));
    return tb__tok_fail(err, file, "%s: \"%.60s\": %s at offset %zu", field, pat, (char *)msg,
                        (size_t)eo);
  }
  /* Without JIT (an unsupported CPU) the interpreter gives the same
   * matches, only slower. */
  *jit = pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE) == 0;
  return 0;
}

static int add_pretok(tb_tokenizer_t *t, const char *file, json_t *o, int depth,
                      tb_error_t *err) {
  const char *ty = type_of(o);
  if (ty == NULL || depth > 4)
    return tb__tok_fail(err, file, "pre_tokenizer.type: missing");
  if (strcmp(ty, "Sequence") == 0) {
    json_t *list = json_object_get(o, "pretokenizers");
    if (!json_is_array(list))
      return tb__tok_fail(err, file, "pre_tokenizer.pretokenizers: expected an array");
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n) {
      int rc = add_pretok(t, file, n, depth + 1, err);
      if (rc != 0)
        return rc;
    }
    return 0;
  }
  if (t->n_pre == TB__TOK_MAX_STEPS)
    return tb__tok_fail(err, file, "pre_tokenizer: more than %d steps", TB__TOK_MAX_STEPS);
  tb__pretok_t *p = &t->pre[t->n_pre];
  memset(p, 0, sizeof(*p));
  if (strcmp(ty, "Split") == 0) {
    json_t *pat = json_object_get(o, "pattern");
    json_t *re = json_object_get(pat, "Regex"), *str = json_object_get(pat, "String");
    const char *beh = json_string_value(json_object_get(o, "behavior"));
    if (!json_is_string(re) && !json_is_string(str))
      return tb__tok_fail(err, file, "pre_tokenizer.pattern: expected {\"Regex\": ...} or "
                          "{\"String\": ...}");
    if (beh == NULL || (strcmp(beh, "Isolated") != 0 && strcmp(beh, "Removed") != 0))
      return tb__tok_fail(err, file, "pre_tokenizer.behavior: %s%.40s%s is not supported "
                          "(Isolated and Removed are)", beh ? "\"" : "", beh ? beh : "missing",
                          beh ? "\"" : "");
    if (get_bool(o, "invert", 0, &p->invert) != 0)
      return tb__tok_fail(err, file, "pre_tokenizer.invert: expected true or false");
    p->kind = TB__PRE_SPLIT;
    p->removed = strcmp(beh, "Removed") == 0;
    json_t *s = json_is_string(re) ? re : str;
    int rc = compile(file, "pre_tokenizer.pattern", json_string_value(s), json_string_length(s),
                     !json_is_string(re), &p->re, &p->jit, err);
    if (rc != 0)
      return rc;
  } else if (strcmp(ty, "ByteLevel") == 0) {
    int use_regex;
    if (get_bool(o, "add_prefix_space", 1, &p->prefix_space) != 0 ||
        get_bool(o, "use_regex", 1, &use_regex) != 0)
      return tb__tok_fail(err, file, "pre_tokenizer: ByteLevel's add_prefix_space and "
                          "use_regex must be true or false");
    p->kind = TB__PRE_BYTELEVEL;
    if (use_regex) {
      int rc = compile(file, "pre_tokenizer (ByteLevel's regex)", gpt2_pattern,
                       sizeof(gpt2_pattern) - 1, 0, &p->re, &p->jit, err);
      if (rc != 0)
        return rc;
    }
  } else if (strcmp(ty, "Digits") == 0) {
    if (get_bool(o, "individual_digits", 0, &p->individual) != 0)
      return tb__tok_fail(err, file, "pre_tokenizer.individual_digits: expected true or false");
    p->kind = TB__PRE_DIGITS;
  } else {
    return tb__tok_fail(err, file,
                        "pre_tokenizer.type: \"%.40s\" is not supported (Split, ByteLevel, "
                        "Digits and Sequence are)", ty);
  }
  t->n_pre++;
  return 0;
}

static int special_ids(tb_tokenizer_t *t, const char *file, json_t *specials, const char *name,
                       int32_t **ids, size_t *n, tb_error_t *err) {
  json_t *ent = json_object_get(specials, name);
  json_t *list = json_object_get(ent, "ids");
  if (!json_is_array(list))
    return tb__tok_fail(err, file, "post_processor.special_tokens.%.40s.ids: expected an array",
                        name);
  size_t i;
  json_t *v;
  json_array_foreach(list, i, v) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) >= (json_int_t)t->n_ids ||
        !(t->flags[json_integer_value(v)] & TB__ID_PRESENT))
      return tb__tok_fail(err, file, "post_processor.special_tokens.%.40s.ids[%zu]: not an id "
                          "of this tokenizer", name, i);
    int32_t *g = realloc(*ids, (*n + 1) * sizeof(*g));
    if (g == NULL)
      return oom(err);
    *ids = g;
    g[(*n)++] = (int32_t)json_integer_value(v);
  }
  return 0;
}

static int add_post(tb_tokenizer_t *t, const char *file, json_t *o, int depth, tb_error_t *err) {
  if (o == NULL || json_is_null(o))
    return 0;
  const char *ty = type_of(o);
  if (ty == NULL || depth > 4)
    return tb__tok_fail(err, file, "post_processor.type: missing");
  if (strcmp(ty, "Sequence") == 0) {
    json_t *list = json_object_get(o, "processors");
    if (!json_is_array(list))
      return tb__tok_fail(err, file, "post_processor.processors: expected an array");
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n) {
      int rc = add_post(t, file, n, depth + 1, err);
      if (rc != 0)
        return rc;
    }
    return 0;
  }
  if (strcmp(ty, "ByteLevel") == 0)
    return 0; /* it changes offsets only (trim_offsets), never ids */
  if (strcmp(ty, "TemplateProcessing") != 0)
    return tb__tok_fail(err, file, "post_processor.type: \"%.40s\" is not supported "
                        "(TemplateProcessing, ByteLevel and Sequence are)", ty);
  if (t->post_before != NULL || t->post_after != NULL)
    return tb__tok_fail(err, file, "post_processor: two TemplateProcessing steps");
  json_t *single = json_object_get(o, "single");
  json_t *specials = json_object_get(o, "special_tokens");
  if (!json_is_array(single))
    return tb__tok_fail(err, file, "post_processor.single: expected an array");
  int seen = 0;
  size_t i;
  json_t *it;
  json_array_foreach(single, i, it) {
    json_t *sp = json_object_get(it, "SpecialToken"), *seq = json_object_get(it, "Sequence");
    if (seq != NULL) {
      const char *sid = json_string_value(json_object_get(seq, "id"));
      if (seen || sid == NULL || strcmp(sid, "A") != 0)
        return tb__tok_fail(err, file, "post_processor.single[%zu]: only one Sequence, \"A\", "
                            "is supported", i);
      seen = 1;
      continue;
    }
    const char *name = json_string_value(json_object_get(sp, "id"));
    if (name == NULL)
      return tb__tok_fail(err, file, "post_processor.single[%zu]: expected SpecialToken or "
                          "Sequence", i);
    int rc = seen ? special_ids(t, file, specials, name, &t->post_after, &t->n_post_after, err)
                  : special_ids(t, file, specials, name, &t->post_before, &t->n_post_before, err);
    if (rc != 0)
      return rc;
  }
  if (!seen)
    return tb__tok_fail(err, file, "post_processor.single: no Sequence \"A\"");
  return 0;
}

static int check_decoder(const char *file, json_t *o, int depth, tb_error_t *err) {
  const char *ty = o ? type_of(o) : NULL;
  if (ty != NULL && strcmp(ty, "Sequence") == 0 && depth < 4) {
    json_t *list = json_object_get(o, "decoders");
    if (!json_is_array(list) || json_array_size(list) == 0)
      return tb__tok_fail(err, file, "decoder.decoders: expected a non-empty array");
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n) {
      int rc = check_decoder(file, n, depth + 1, err);
      if (rc != 0)
        return rc;
    }
    return 0;
  }
  if (ty == NULL || strcmp(ty, "ByteLevel") != 0)
    return tb__tok_fail(err, file, "decoder%s: %s%.40s%s is not supported (ByteLevel is)",
                        ty ? ".type" : "", ty ? "\"" : "", ty ? ty : "missing", ty ? "\"" : "");
  return 0;
}

int tb__tok_config_pipeline(tb_tokenizer_t *t, const char *file, json_t *top, tb_error_t *err) {
  int rc = add_normalizer(t, file, json_object_get(top, "normalizer"), 0, err);
  json_t *pre = json_object_get(top, "pre_tokenizer");
  if (rc == 0 && (pre == NULL || json_is_null(pre)))
    rc = tb__tok_fail(err, file, "pre_tokenizer: missing (only byte-level BPE is supported)");
  if (rc == 0)
    rc = add_pretok(t, file, pre, 0, err);
  int byte_level = 0;
  for (size_t i = 0; rc == 0 && i < t->n_pre; i++)
    byte_level |= t->pre[i].kind == TB__PRE_BYTELEVEL;
  if (rc == 0 && !byte_level)
    rc = tb__tok_fail(err, file, "pre_tokenizer: no ByteLevel step (only byte-level BPE is "
                      "supported)");
  if (rc == 0)
    rc = add_post(t, file, json_object_get(top, "post_processor"), 0, err);
  if (rc == 0)
    rc = check_decoder(file, json_object_get(top, "decoder"), 0, err);
  if (rc == 0 && t->n_norm > 0)
    for (size_t i = 0; i < t->n_added; i++)
      t->has_norm_added |= t->added[i].normalized;
  return rc;
}

/* ------------------------------------------------------ companion files */

static int load_json(const tb_tokenizer_source_t *src, int ints, json_t **out, tb_error_t *err) {
  json_error_t je;
  /* tokenizer_config.json holds numbers past 64 bits (Llama 3's
   * model_max_length is 1e30) and no id: its numbers may be reals. */
  *out = json_loadb(src->base, src->len, JSON_ALLOW_NUL | (ints ? 0 : JSON_DECODE_INT_AS_REAL),
                    &je);
  if (*out == NULL || !json_is_object(*out)) {
    json_decref(*out);
    *out = NULL;
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s: %s (line %d)", src->name,
                        je.text[0] ? je.text : "expected a JSON object", je.line);
  }
  return 0;
}

/* bos_token and friends: a string, {"content": ...} or null. */
static int named_token(tb_tokenizer_t *t, const char *file, json_t *cfg, const char *key,
                       int32_t *id, tb_error_t *err) {
  json_t *v = json_object_get(cfg, key);
  if (json_is_object(v))
    v = json_object_get(v, "content");
  if (v == NULL || json_is_null(v))
    return 0;
  if (!json_is_string(v))
    return tb__tok_fail(err, file, "%s: expected a string, {\"content\": ...} or null", key);
  *id = tb__strhash_get(&t->by_text, t->blob, t->text, json_string_value(v),
                        json_string_length(v));
  if (*id < 0)
    return tb__tok_fail(err, file, "%s: \"%.40s\" is not a token of %s", key,
                        json_string_value(v), t->name);
  return 0;
}

int tb__tok_config_file(tb_tokenizer_t *t, const tb_tokenizer_source_t *src, tb_error_t *err) {
  json_t *cfg;
  int rc = load_json(src, 0, &cfg, err);
  if (rc != 0)
    return rc;
  /* added_tokens_decoder repeats tokenizer.json's added tokens; a token
   * only it names is added, as transformers does. */
  json_t *dec = json_object_get(cfg, "added_tokens_decoder");
  const char *key;
  json_t *o;
  int16_t byte_of[324];
  {
    int n = 0;
    for (int i = 0; i < 324; i++)
      byte_of[i] = -1;
    for (int b = 0; b < 256; b++) {
      int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      byte_of[printable ? b : 256 + n++] = (int16_t)b;
    }
  }
  json_object_foreach(dec, key, o) {
    char *end;
    long id = strtol(key, &end, 10);
    json_t *c = json_object_get(o, "content");
    if (*end != 0 || id < 0 || !json_is_string(c)) {
      rc = tb__tok_fail(err, src->name, "added_tokens_decoder.%.20s: expected an id and "
                        "{\"content\": ...}", key);
      break;
    }
    if ((uint32_t)id < t->n_ids && (t->flags[id] & TB__ID_ADDED))
      continue;
    if ((uint32_t)id >= t->n_ids || ((t->flags[id] & TB__ID_PRESENT) &&
                                     (t->text[id].len != json_string_length(c) ||
                                      memcmp(t->blob + t->text[id].off, json_string_value(c),
                                             t->text[id].len) != 0))) {
      rc = tb__tok_fail(err, src->name, "added_tokens_decoder.%.20s: the id is not \"%.40s\" in "
                        "%s", key, json_string_value(c), t->name);
      break;
    }
    char where[64];
    snprintf(where, sizeof(where), "added_tokens_decoder.%.20s", key);
    rc = add_one(t, src->name, where, (int32_t)id, json_string_value(c), json_string_length(c),
                 o, byte_of, err);
    if (rc != 0)
      break;
  }
  if (rc == 0)
    rc = named_token(t, src->name, cfg, "bos_token", &t->bos, err);
  if (rc == 0)
    rc = named_token(t, src->name, cfg, "eos_token", &t->eos, err);
  if (rc == 0)
    rc = named_token(t, src->name, cfg, "pad_token", &t->pad, err);
  json_decref(cfg);
  return rc;
}

static int id_value(tb_tokenizer_t *t, const char *file, const char *key, json_t *v,
                    int32_t *id, tb_error_t *err) {
  if (!json_is_integer(v) || json_integer_value(v) < 0 ||
      json_integer_value(v) >= (json_int_t)t->n_ids)
    return tb__tok_fail(err, file, "%s: expected an id of %s, below %u", key, t->name, t->n_ids);
  *id = (int32_t)json_integer_value(v);
  return 0;
}

int tb__tok_generation_file(tb_tokenizer_t *t, const tb_tokenizer_source_t *src,
                            tb_error_t *err) {
  json_t *g;
  int rc = load_json(src, 1, &g, err);
  if (rc != 0)
    return rc;
  json_t *v;
  if ((v = json_object_get(g, "bos_token_id")) != NULL && !json_is_null(v))
    rc = id_value(t, src->name, "bos_token_id", v, &t->bos, err);
  if (rc == 0 && (v = json_object_get(g, "pad_token_id")) != NULL && !json_is_null(v))
    rc = id_value(t, src->name, "pad_token_id", v, &t->pad, err);
  if (rc == 0 && (v = json_object_get(g, "eos_token_id")) != NULL && !json_is_null(v)) {
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (n == 0 || n > 64) {
      rc = tb__tok_fail(err, src->name, "eos_token_id: expected an id or a list of 1 to 64");
    } else {
      int32_t *ids = calloc(n, sizeof(*ids));
      if (ids == NULL)
        rc = oom(err);
      for (size_t i = 0; rc == 0 && i < n; i++)
        rc = id_value(t, src->name, "eos_token_id", json_is_array(v) ? json_array_get(v, i) : v,
                      &ids[i], err);
      if (rc == 0) {
        free(t->eos_ids);
        t->eos_ids = ids;
        t->n_eos_ids = n;
        t->eos = ids[0];
      } else {
        free(ids);
      }
    }
  }
  json_decref(g);
  return rc;
}

int tb__tok_config_finish(tb_tokenizer_t *t, tb_error_t *err) {
  if (t->eos_ids == NULL && t->eos >= 0) {
    t->eos_ids = malloc(sizeof(*t->eos_ids));
    if (t->eos_ids == NULL)
      return oom(err);
    t->eos_ids[0] = t->eos;
    t->n_eos_ids = 1;
  }
  for (size_t i = 0; i < t->n_added; i++) {
    const tb__added_t *a = &t->added[i];
    tb__trie_t *tr = a->normalized && t->n_norm > 0 ? &t->trie_norm : &t->trie_raw;
    const tb__span32_t *s = &t->text[a->id];
    if (tb__trie_add(tr, t->blob + s->off, s->len, (int32_t)i) != 0)
      return oom(err);
  }
  return 0;
}

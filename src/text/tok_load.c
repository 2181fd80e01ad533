/*
 * Loading a tokenizer.json of the byte-level BPE family, with
 * tokenizer_config.json and generation_config.json, into a tb_tokenizer_t.
 *
 * Every member that changes how text is tokenized is read and checked;
 * one the code does not implement exactly is refused with a message
 * naming the file and the member, never ignored.  The big members
 * (model.vocab, model.merges) are read by the scanner of tok_json.c, the
 * rest by jansson (tok_config.c reads the pipeline's parts).
 *
 * Non-goals: the pair form of TemplateProcessing (one sequence only),
 * truncation and padding (the caller's), models other than BPE.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "text/tok_config.h"
#include "text/tok_internal.h"

int tb__tok_fail(tb_error_t *err, const char *file, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s: %s", file, msg);
}

int tb__tok_add_string(tb_tokenizer_t *t, const void *p, size_t n, tb__span32_t *out) {
  if (n > TB__TOK_MAX_TOKEN || t->blob_len + n > UINT32_MAX)
    return TB_EINVAL;
  if (t->blob_len + n > t->blob_cap) {
    size_t cap = t->blob_cap ? t->blob_cap : 1 << 16;
    while (cap < t->blob_len + n)
      cap *= 2;
    char *b = realloc(t->blob, cap);
    if (b == NULL)
      return TB_ENOMEM;
    t->blob = b;
    t->blob_cap = cap;
  }
  if (n)
    memcpy(t->blob + t->blob_len, p, n);
  out->off = (uint32_t)t->blob_len;
  out->len = (uint32_t)n;
  t->blob_len += n;
  return 0;
}

/* ------------------------------------------------------ byte-level alphabet */

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the
 * others for 256, 257, ... in byte order. */
static void byte_alphabet(uint32_t cp_of[256], int16_t byte_of[324]) {
  int n = 0;
  for (int i = 0; i < 324; i++)
    byte_of[i] = -1;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    cp_of[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    byte_of[cp_of[b]] = (int16_t)b;
  }
}

/* The bytes a token's spelling stands for: each character through the
 * byte-level alphabet, or, when one is outside it, the spelling's own
 * UTF-8 (as the ByteLevel decoder of `tokenizers` does). */
static int spelling_to_bytes(const int16_t byte_of[324], const char *s, size_t n, char *out,
                             size_t *out_len) {
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    uint32_t cp;
    size_t l;
    if (c < 0x80) { cp = c; l = 1; }
    else if ((c & 0xE0) == 0xC0 && i + 1 < n) { cp = (uint32_t)(c & 0x1F) << 6 | (s[i + 1] & 0x3F); l = 2; }
    else { cp = 0x7FFFFFFF; l = 1; }
    if (cp >= 324 || byte_of[cp] < 0) {
      memcpy(out, s, n);
      *out_len = n;
      return 0;
    }
    out[k++] = (char)byte_of[cp];
    i += l;
  }
  *out_len = k;
  return 0;
}

/* ------------------------------------------------------------ file reading */

static int read_file(const char *path, int optional, char **data, size_t *len,
                     tb_error_t *err) {
  *data = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    if (optional && errno == ENOENT)
      return 0;
    return tb_error_set(err, errno == ENOENT ? TB_ENOENT : TB_EIO, TB_CATEGORY_USER,
                        "%s: %s", path, strerror(errno));
  }
  if (fseek(f, 0, SEEK_END) != 0) {
    fclose(f);
    return tb_error_set(err, TB_EIO, TB_CATEGORY_USER, "%s: not a regular file", path);
  }
  long size = ftell(f);
  if (size < 0 || (unsigned long)size > TB__TOK_MAX_FILE) {
    fclose(f);
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s: larger than %zu bytes", path,
                        TB__TOK_MAX_FILE);
  }
  rewind(f);
  char *buf = malloc((size_t)size + 1);
  if (buf == NULL) {
    fclose(f);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  }
  size_t got = fread(buf, 1, (size_t)size, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || got != (size_t)size) {
    free(buf);
    return tb_error_set(err, TB_EIO, TB_CATEGORY_USER, "%s: read error", path);
  }
  buf[got] = 0;
  *data = buf;
  *len = got;
  return 0;
}

/* ------------------------------------------------------- tokenizer.json */

typedef struct vocab_entry_s {
  tb__span32_t text;
  uint32_t id;
} vocab_entry_t;

typedef struct parse_s {
  tb_tokenizer_t *t;
  const char *file;
  tb_error_t *err;
  json_t *top;     /* every top-level member but model */
  json_t *model;   /* every model member but vocab and merges */
  const char *vocab_at, *merges_at; /* where their values start */
  tb__buf_t merge_text;              /* the merges' sides, read before the ids */
  struct merge_s *merges;
  size_t n_merges, cap_merges;
  vocab_entry_t *vocab;
  size_t n_vocab, cap_vocab;
  uint32_t max_id;
  int16_t byte_of[324];
  uint32_t cp_of[256];
} parse_t;

static int scan_fail(parse_t *ps, tb__jscan_t *s, const char *what) {
  return tb__tok_fail(ps->err, ps->file, "%s: not valid JSON at byte %zu%s", what,
                      (size_t)(s->p - s->start),
                      s->p >= s->end ? " (the file is truncated)" : "");
}

/* Reads an object's members, handing each to member(); values of members
 * it does not take are parsed by jansson into `into`. */
static int scan_members(parse_t *ps, tb__jscan_t *s, const char *what, json_t *into,
                        int (*member)(parse_t *, tb__jscan_t *, const char *key, int *taken)) {
  if (tb__jscan_expect(s, '{') != 0)
    return tb__tok_fail(ps->err, ps->file, "%s: expected an object", what);
  tb__jscan_ws(s);
  if (s->p < s->end && *s->p == '}') {
    s->p++;
    return 0;
  }
  for (;;) {
    int rc = tb__jscan_string(s);
    if (rc == TB_ENOMEM)
      return tb_error_set(ps->err, rc, TB_CATEGORY_SERVER, "out of memory");
    if (rc != 0 || tb__jscan_expect(s, ':') != 0)
      return scan_fail(ps, s, what);
    char *key = tb__strndup(s->str.base ? s->str.base : "", s->str.len);
    if (key == NULL)
      return tb_error_set(ps->err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
    int taken = 0;
    rc = member ? member(ps, s, key, &taken) : 0;
    if (rc == 0 && !taken) {
      tb__jscan_ws(s);
      const char *v = s->p;
      rc = tb__jscan_skip(s, 0);
      if (rc != 0) {
        rc = scan_fail(ps, s, what);
      } else {
        json_error_t je;
        json_t *j = json_loadb(v, (size_t)(s->p - v), JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (j == NULL)
          rc = tb__tok_fail(ps->err, ps->file, "%s.%s: %s", what, key, je.text);
        else
          json_object_set_new(into, key, j);
      }
    }
    free(key);
    if (rc != 0)
      return rc;
    tb__jscan_ws(s);
    if (s->p < s->end && *s->p == ',') {
      s->p++;
      continue;
    }
    if (tb__jscan_expect(s, '}') != 0)
      return scan_fail(ps, s, what);
    return 0;
  }
}

static int read_vocab(parse_t *ps, tb__jscan_t *s);
static int read_merges(parse_t *ps, tb__jscan_t *s);

static int model_member(parse_t *ps, tb__jscan_t *s, const char *key, int *taken) {
  if (strcmp(key, "vocab") == 0 || strcmp(key, "merges") == 0) {
    /* Read where they stand, in the one pass over the file. */
    tb__jscan_ws(s);
    *taken = 1;
    if ((key[0] == 'v' ? ps->vocab_at : ps->merges_at) != NULL)
      return tb__tok_fail(ps->err, ps->file, "model.%s: given twice", key);
    if (key[0] == 'v') {
      ps->vocab_at = s->p;
      return read_vocab(ps, s);
    }
    ps->merges_at = s->p;
    return read_merges(ps, s);
  }
  return 0;
}

static int top_member(parse_t *ps, tb__jscan_t *s, const char *key, int *taken) {
  if (strcmp(key, "model") != 0)
    return 0;
  *taken = 1;
  json_decref(ps->model);
  ps->model = json_object();
  if (ps->model == NULL)
    return tb_error_set(ps->err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  return scan_members(ps, s, "model", ps->model, model_member);
}

static int read_vocab(parse_t *ps, tb__jscan_t *s) {
  tb_tokenizer_t *t = ps->t;
  if (tb__jscan_expect(s, '{') != 0)
    return tb__tok_fail(ps->err, ps->file, "model.vocab: expected an object of token: id");
  tb__jscan_ws(s);
  int empty = s->p < s->end && *s->p == '}';
  while (!empty) {
    int rc = tb__jscan_string(s);
    long long id;
    if (rc == TB_ENOMEM)
      return tb_error_set(ps->err, rc, TB_CATEGORY_SERVER, "out of memory");
    if (rc != 0 || tb__jscan_expect(s, ':') != 0)
      return scan_fail(ps, s, "model.vocab");
    if (tb__jscan_int(s, &id) != 0 || id < 0 || id >= TB__TOK_MAX_IDS)
      return tb__tok_fail(ps->err, ps->file,
                          "model.vocab: \"%.*s\": the id must be an integer in [0, %u)",
                          (int)(s->str.len > 40 ? 40 : s->str.len),
                          s->str.base ? s->str.base : "", TB__TOK_MAX_IDS);
    if (ps->n_vocab == ps->cap_vocab) {
      size_t cap = ps->cap_vocab ? ps->cap_vocab * 2 : 4096;
      vocab_entry_t *v = realloc(ps->vocab, cap * sizeof(*v));
      if (v == NULL)
        return tb_error_set(ps->err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
      ps->vocab = v;
      ps->cap_vocab = cap;
    }
    vocab_entry_t *e = &ps->vocab[ps->n_vocab++];
    e->id = (uint32_t)id;
    if (tb__tok_add_string(t, s->str.base, s->str.len, &e->text) != 0)
      return tb__tok_fail(ps->err, ps->file, "model.vocab: a token is longer than %u bytes",
                          TB__TOK_MAX_TOKEN);
    if ((uint32_t)id > ps->max_id)
      ps->max_id = (uint32_t)id;
    tb__jscan_ws(s);
    if (s->p < s->end && *s->p == ',') {
      s->p++;
      continue;
    }
    break;
  }
  if (tb__jscan_expect(s, '}') != 0)
    return scan_fail(ps, s, "model.vocab");
  if (ps->n_vocab == 0)
    return tb__tok_fail(ps->err, ps->file, "model.vocab: empty");
  return 0;
}

/* One merge as read: its two sides stored one after the other in a
 * buffer, so the merged token's spelling is their concatenation. */
typedef struct merge_s {
  uint32_t off, na, nb;
} merge_t;

static int merge_fail(parse_t *ps, const tb__buf_t *text, const merge_t *m, size_t i,
                      const char *which) {
  const char *p = text->base + m->off + (which[0] == 'r' ? m->na : 0);
  size_t n = which[0] == 'l' ? m->na : which[0] == 'r' ? m->nb : m->na + m->nb;
  return tb__tok_fail(ps->err, ps->file, "model.merges[%zu]: %s \"%.*s\" is not in model.vocab",
                      i, which[0] == 'm' ? "the merged token" : "the token",
                      (int)(n > 40 ? 40 : n), p);
}

/* Resolves the merges' ids in batches whose hash lookups overlap. */
static int resolve_merges(parse_t *ps, const tb__buf_t *text, const merge_t *m, size_t n) {
  tb_tokenizer_t *t = ps->t;
  enum { B = 64 };
  tb__lookup_t q[3 * B];
  for (size_t at = 0; at < n; at += B) {
    size_t k = n - at < B ? n - at : B;
    for (size_t i = 0; i < k; i++) {
      const merge_t *g = &m[at + i];
      const char *p = text->base + g->off;
      q[3 * i] = (tb__lookup_t){ p, g->na, 0, -1 };
      q[3 * i + 1] = (tb__lookup_t){ p + g->na, g->nb, 0, -1 };
      q[3 * i + 2] = (tb__lookup_t){ p, g->na + g->nb, 0, -1 };
    }
    tb__strhash_get_many(&t->by_text, t->blob, t->text, q, 3 * k);
    for (size_t i = 0; i < k; i++) {
      static const char *const which[3] = { "left", "right", "merged" };
      for (int j = 0; j < 3; j++)
        if (q[3 * i + j].id < 0 || !(t->flags[q[3 * i + j].id] & TB__ID_MODEL))
          return merge_fail(ps, text, &m[at + i], at + i, which[j]);
      tb__pairhash_prefetch(&t->merges, q[3 * i].id, q[3 * i + 1].id);
    }
    for (size_t i = 0; i < k; i++)
      tb__pairhash_put(&t->merges, q[3 * i].id, q[3 * i + 1].id, (uint32_t)(at + i),
                       q[3 * i + 2].id);
  }
  return 0;
}

static int push_merge(tb__buf_t *text, merge_t **m, size_t *n, size_t *cap, const char *a,
                      size_t na, const char *b, size_t nb) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 65536;
    merge_t *g = realloc(*m, c * sizeof(*g));
    if (g == NULL)
      return TB_ENOMEM;
    *m = g;
    *cap = c;
  }
  if (text->len + na + nb > UINT32_MAX || na > TB__TOK_MAX_TOKEN || nb > TB__TOK_MAX_TOKEN)
    return TB_EINVAL;
  (*m)[*n] = (merge_t){ (uint32_t)text->len, (uint32_t)na, (uint32_t)nb };
  if (tb__buf_append(text, a, na) != 0 || tb__buf_append(text, b, nb) != 0)
    return TB_ENOMEM;
  (*n)++;
  return 0;
}

/* Reads the merges' spellings; their ids are resolved once the
 * vocabulary is in (resolve_merges). */
static int read_merges(parse_t *ps, tb__jscan_t *s) {
  if (tb__jscan_expect(s, '[') != 0)
    return tb__tok_fail(ps->err, ps->file, "model.merges: expected an array");
  tb__buf_t first = TB_BUF_INIT;
  tb__buf_t *text = &ps->merge_text;
  merge_t **m = &ps->merges;
  size_t *n = &ps->n_merges, *cap = &ps->cap_merges;
  int rc = 0;
  tb__jscan_ws(s);
  int empty = s->p < s->end && *s->p == ']';
  if (empty)
    s->p++;
  for (size_t i = 0; !empty; i++) {
    tb__jscan_ws(s);
    if (s->p < s->end && *s->p == '[') {
      /* ["a", "b"], as newer files write them. */
      s->p++;
      if ((rc = tb__jscan_string(s)) != 0)
        break;
      first.len = 0;
      if (tb__buf_append(&first, s->str.base, s->str.len) != 0) {
        rc = TB_ENOMEM;
        break;
      }
      if ((rc = tb__jscan_expect(s, ',')) != 0 || (rc = tb__jscan_string(s)) != 0 ||
          (rc = tb__jscan_expect(s, ']')) != 0)
        break;
      rc = push_merge(text, m, n, cap, first.base ? first.base : "", first.len,
                      s->str.base ? s->str.base : "", s->str.len);
    } else {
      /* "a b", as older files write them. */
      if ((rc = tb__jscan_string(s)) != 0)
        break;
      const char *str = s->str.base ? s->str.base : "";
      const char *sp = memchr(str, ' ', s->str.len);
      if (sp == NULL || memchr(sp + 1, ' ', s->str.len - (size_t)(sp + 1 - str)) != NULL) {
        rc = tb__tok_fail(ps->err, ps->file,
                          "model.merges[%zu]: \"%.*s\" is not two tokens separated by a space",
                          i, (int)(s->str.len > 40 ? 40 : s->str.len), str);
        goto done;
      }
      rc = push_merge(text, m, n, cap, str, (size_t)(sp - str), sp + 1,
                      s->str.len - (size_t)(sp + 1 - str));
    }
    if (rc == TB_EINVAL) {
      rc = tb__tok_fail(ps->err, ps->file, "model.merges[%zu]: too long", i);
      goto done;
    }
    if (rc != 0)
      break;
    tb__jscan_ws(s);
    if (s->p < s->end && *s->p == ',') {
      s->p++;
      continue;
    }
    rc = tb__jscan_expect(s, ']');
    break;
  }
  if (rc == TB_ENOMEM)
    rc = tb_error_set(ps->err, rc, TB_CATEGORY_SERVER, "out of memory");
  else if (rc != 0)
    rc = scan_fail(ps, s, "model.merges");
done:
  tb__buf_free(&first);
  return rc;
}

static int check_model_fields(parse_t *ps) {
  tb_tokenizer_t *t = ps->t;
  json_t *m = ps->model;
  const char *f = ps->file;
  json_t *type = json_object_get(m, "type");
  if (type != NULL && !(json_is_string(type) && strcmp(json_string_value(type), "BPE") == 0))
    return tb__tok_fail(ps->err, f, "model.type: %s%s%s is not supported (only BPE models are)",
                        json_is_string(type) ? "\"" : "",
                        json_is_string(type) ? json_string_value(type) : "a non-string",
                        json_is_string(type) ? "\"" : "");
  if (ps->vocab_at == NULL || ps->merges_at == NULL)
    return tb__tok_fail(ps->err, f, "model.%s: missing (a BPE model has vocab and merges)",
                        ps->vocab_at == NULL ? "vocab" : "merges");
  json_t *d = json_object_get(m, "dropout");
  if (d != NULL && !json_is_null(d) && !(json_is_number(d) && json_number_value(d) == 0))
    return tb__tok_fail(ps->err, f, "model.dropout: BPE dropout is not supported");
  const char *empty_only[] = { "continuing_subword_prefix", "end_of_word_suffix" };
  for (size_t i = 0; i < 2; i++) {
    json_t *v = json_object_get(m, empty_only[i]);
    if (v != NULL && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
      return tb__tok_fail(ps->err, f, "model.%s: only null or \"\" is supported", empty_only[i]);
  }
  json_t *im = json_object_get(m, "ignore_merges");
  json_t *bf = json_object_get(m, "byte_fallback");
  if ((im != NULL && !json_is_boolean(im)) || (bf != NULL && !json_is_boolean(bf)))
    return tb__tok_fail(ps->err, f, "model.%s: expected true or false",
                        im != NULL && !json_is_boolean(im) ? "ignore_merges" : "byte_fallback");
  t->ignore_merges = json_is_true(im);
  t->byte_fallback = json_is_true(bf);
  return 0;
}

/* Fills the per-id tables from the vocabulary and the added tokens. */
static int build_ids(parse_t *ps, json_t *added) {
  tb_tokenizer_t *t = ps->t;
  size_t n_added = json_array_size(added);
  for (size_t i = 0; i < n_added; i++) {
    json_t *id = json_object_get(json_array_get(added, i), "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0 ||
        json_integer_value(id) >= TB__TOK_MAX_IDS)
      return tb__tok_fail(ps->err, ps->file, "added_tokens[%zu].id: expected an integer in [0, %u)",
                          i, TB__TOK_MAX_IDS);
    if ((uint32_t)json_integer_value(id) > ps->max_id)
      ps->max_id = (uint32_t)json_integer_value(id);
  }
  t->n_ids = ps->max_id + 1;
  t->flags = calloc(t->n_ids, 1);
  t->text = calloc(t->n_ids, sizeof(*t->text));
  t->bytes = calloc(t->n_ids, sizeof(*t->bytes));
  if (t->flags == NULL || t->text == NULL || t->bytes == NULL ||
      tb__strhash_init(&t->by_text, ps->n_vocab + n_added) != 0 ||
      tb__strhash_init(&t->by_bytes, ps->n_vocab) != 0)
    return tb_error_set(ps->err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  char tmp[TB__TOK_MAX_TOKEN];
  for (size_t i = 0; i < ps->n_vocab; i++) {
    const vocab_entry_t *e = &ps->vocab[i];
    if (t->flags[e->id] & TB__ID_MODEL)
      return tb__tok_fail(ps->err, ps->file, "model.vocab: the id %u is given twice", e->id);
    t->flags[e->id] |= TB__ID_PRESENT | TB__ID_MODEL;
    t->text[e->id] = e->text;
    size_t bl;
    spelling_to_bytes(ps->byte_of, t->blob + e->text.off, e->text.len, tmp, &bl);
    if (tb__tok_add_string(t, tmp, bl, &t->bytes[e->id]) != 0)
      return tb_error_set(ps->err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  }
  /* In batches whose table slots are fetched before they are written. */
  uint32_t ht[64], hb[64];
  for (size_t at = 0; at < ps->n_vocab; at += 64) {
    size_t k = ps->n_vocab - at < 64 ? ps->n_vocab - at : 64;
    for (size_t i = 0; i < k; i++) {
      uint32_t id = ps->vocab[at + i].id;
      ht[i] = tb__tok_hash(t->blob + t->text[id].off, t->text[id].len);
      hb[i] = tb__tok_hash(t->blob + t->bytes[id].off, t->bytes[id].len);
      tb__strhash_prefetch(&t->by_text, ht[i]);
      tb__strhash_prefetch(&t->by_bytes, hb[i]);
    }
    for (size_t i = 0; i < k; i++) {
      int32_t id = (int32_t)ps->vocab[at + i].id;
      tb__strhash_put_hashed(&t->by_text, t->blob, t->text, id, ht[i], 0);
      tb__strhash_put_hashed(&t->by_bytes, t->blob, t->bytes, id, hb[i], 0);
    }
  }
  return tb__tok_config_added(t, ps->file, added, ps->byte_of, ps->err);
}

static void parse_free(parse_t *ps) {
  json_decref(ps->top);
  json_decref(ps->model);
  free(ps->vocab);
  tb__buf_free(&ps->merge_text);
  free(ps->merges);
}

static int load_tokenizer_json(tb_tokenizer_t *t, const tb_tokenizer_source_t *src,
                               tb_error_t *err) {
  parse_t ps = { 0 };
  ps.t = t;
  ps.file = src->name ? src->name : "tokenizer.json";
  ps.err = err;
  byte_alphabet(ps.cp_of, ps.byte_of);
  ps.top = json_object();
  if (ps.top == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  tb__jscan_t s = { src->base, src->base + src->len, src->base, TB_BUF_INIT };
  int rc = scan_members(&ps, &s, "(top level)", ps.top, top_member);
  if (rc == 0) {
    tb__jscan_ws(&s);
    if (s.p != s.end)
      rc = tb__tok_fail(err, ps.file, "(top level): data after the JSON object at byte %zu",
                        (size_t)(s.p - s.start));
  }
  if (rc == 0 && ps.model == NULL)
    rc = tb__tok_fail(err, ps.file, "model: missing");
  if (rc == 0)
    rc = check_model_fields(&ps);
  json_t *added = json_object_get(ps.top, "added_tokens");
  if (rc == 0 && added != NULL && !json_is_array(added) && !json_is_null(added))
    rc = tb__tok_fail(err, ps.file, "added_tokens: expected an array");
  if (rc == 0)
    rc = build_ids(&ps, added);
  if (rc == 0 && tb__pairhash_init(&t->merges, ps.n_merges) != 0)
    rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  if (rc == 0)
    rc = resolve_merges(&ps, &ps.merge_text, ps.merges, ps.n_merges);
  if (rc == 0)
    rc = tb__tok_config_model(t, ps.file, ps.model, err);
  if (rc == 0)
    rc = tb__tok_config_pipeline(t, ps.file, ps.top, err);
  tb__buf_free(&s.str);
  parse_free(&ps);
  return rc;
}

/* ------------------------------------------------------------ public API */

void tb_tokenizer_free(tb_tokenizer_t *t) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->n_pre; i++)
    pcre2_code_free(t->pre[i].re);
  tb__cache_free(t);
  tb__strhash_free(&t->by_text);
  tb__strhash_free(&t->by_bytes);
  tb__pairhash_free(&t->merges);
  free(t->trie_raw.nodes);
  free(t->trie_norm.nodes);
  free(t->added);
  free(t->post_before);
  free(t->post_after);
  free(t->eos_ids);
  free(t->flags);
  free(t->text);
  free(t->bytes);
  free(t->blob);
  free(t->name);
  free(t);
}

int tb_tokenizer_load_buffers(const tb_tokenizer_source_t *tj, const tb_tokenizer_source_t *cfg,
                              const tb_tokenizer_source_t *gen, tb_tokenizer_t **out,
                              tb_error_t *err) {
  *out = NULL;
  if (tj == NULL || tj->base == NULL)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "tokenizer.json: missing");
  if (tj->len > TB__TOK_MAX_FILE)
    return tb__tok_fail(err, tj->name ? tj->name : "tokenizer.json", "larger than %zu bytes",
                        TB__TOK_MAX_FILE);
  tb_tokenizer_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  t->kind = TB__TOK_BPE;
  t->bos = t->eos = t->pad = t->unk_id = -1;
  t->name = strdup(tj->name ? tj->name : "tokenizer.json");
  int rc = t->name ? 0 : tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  if (rc == 0)
    rc = load_tokenizer_json(t, tj, err);
  if (rc == 0 && cfg != NULL && cfg->base != NULL)
    rc = tb__tok_config_file(t, cfg, err);
  if (rc == 0 && gen != NULL && gen->base != NULL)
    rc = tb__tok_generation_file(t, gen, err);
  if (rc == 0)
    rc = tb__tok_config_finish(t, err);
  if (rc == 0 && tb__cache_init(t) != 0)
    rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  if (rc != 0) {
    tb_tokenizer_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

int tb_tokenizer_load_files(const char *tokenizer_json, const char *config,
                            const char *generation, tb_tokenizer_t **out, tb_error_t *err) {
  *out = NULL;
  char *d[3] = { NULL, NULL, NULL };
  size_t n[3] = { 0, 0, 0 };
  const char *paths[3] = { tokenizer_json, config, generation };
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++)
    if (paths[i] != NULL)
      rc = read_file(paths[i], 0, &d[i], &n[i], err);
  if (rc == 0) {
    tb_tokenizer_source_t s[3];
    for (int i = 0; i < 3; i++)
      s[i] = (tb_tokenizer_source_t){ d[i], n[i], paths[i] };
    rc = tb_tokenizer_load_buffers(&s[0], &s[1], &s[2], out, err);
  }
  for (int i = 0; i < 3; i++)
    free(d[i]);
  return rc;
}

int tb_tokenizer_load_dir(const char *dir, tb_tokenizer_t **out, tb_error_t *err) {
  *out = NULL;
  const char *names[3] = { "tokenizer.json", "tokenizer_config.json", "generation_config.json" };
  char *path[3] = { NULL, NULL, NULL };
  char *d[3] = { NULL, NULL, NULL };
  size_t n[3] = { 0, 0, 0 };
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++) {
    path[i] = tb__asprintf("%s/%s", dir, names[i]);
    if (path[i] == NULL)
      rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
    else
      rc = read_file(path[i], i > 0, &d[i], &n[i], err);
  }
  if (rc == 0) {
    tb_tokenizer_source_t s[3];
    for (int i = 0; i < 3; i++)
      s[i] = (tb_tokenizer_source_t){ d[i], n[i], path[i] };
    rc = tb_tokenizer_load_buffers(&s[0], &s[1], &s[2], out, err);
  }
  for (int i = 0; i < 3; i++) {
    free(d[i]);
    free(path[i]);
  }
  return rc;
}

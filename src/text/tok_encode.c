/*
 * Encoding, in the order `tokenizers` runs it: added tokens are split off
 * the text first (longest match, with their lstrip, rstrip and
 * single_word rules), the rest is normalized, split again by the added
 * tokens that match normalized text, pre-tokenized (Split patterns with
 * PCRE2, Digits, ByteLevel) and merged word by word by BPE; then the
 * post-processor adds its tokens when asked.
 *
 * Offsets are byte offsets into the caller's text.  Normalization keeps
 * them exact wherever it changed nothing; a stretch it changed gives its
 * tokens the whole stretch.  The text is cut for normalization only
 * before ASCII characters, which never compose with what precedes them.
 */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "text/tok_internal.h"

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 character at s (1..4), or 0 when the bytes
 * are not one; then *maximal is the length of the longest valid prefix
 * of a character there (at least 1), and *cut says that prefix was cut
 * short by the end of the bytes rather than by a wrong byte. */
static size_t utf8_char_cut(const unsigned char *s, size_t n, size_t *maximal, int *cut) {
  unsigned char c = s[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *maximal = 1;
    *cut = 0;
    return 0;
  }
  for (size_t i = 1; i < len; i++) {
    if (i >= n) {
      *maximal = i; /* a valid prefix cut off by the end */
      *cut = 1;
      return 0;
    }
    unsigned char x = s[i];
    if (x < (i == 1 ? lo : 0x80) || x > (i == 1 ? hi : 0xBF)) {
      *maximal = i;
      *cut = 0;
      return 0;
    }
  }
  return len;
}

static size_t utf8_char(const unsigned char *s, size_t n, size_t *maximal) {
  int cut;
  return utf8_char_cut(s, n, maximal, &cut);
}

size_t tb__utf8_valid_prefix(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    if (p[i] < 0x80) {
      i++;
      continue;
    }
    size_t m;
    size_t l = utf8_char(p + i, len - i, &m);
    if (l == 0)
      return i;
    i += l;
  }
  return len;
}

int tb__utf8_lossy_append(tb__buf_t *out, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    size_t v = tb__utf8_valid_prefix(s + i, len - i);
    if (v > 0 && tb__buf_append(out, s + i, v) != 0)
      return TB_ENOMEM;
    i += v;
    if (i >= len)
      break;
    size_t m = 1;
    utf8_char(p + i, len - i, &m);
    if (tb__buf_append(out, "\xEF\xBF\xBD", 3) != 0)
      return TB_ENOMEM;
    i += m;
  }
  return 0;
}

size_t tb__utf8_incomplete_tail(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  /* A held-back tail is at most 3 bytes: a lead byte and continuations
   * that are a valid prefix of a character. */
  for (size_t k = 1; k <= 3 && k <= len; k++) {
    size_t at = len - k;
    if (p[at] < 0x80)
      return 0;
    if (p[at] >= 0xC0) {
      size_t m = 0;
      int cut = 0;
      size_t l = utf8_char_cut(p + at, k, &m, &cut);
      return l == 0 && cut && m == k ? k : 0;
    }
  }
  return 0;
}

/* ------------------------------------------------------------- encoder */

typedef struct align_s {
  size_t norm;      /* where the stretch starts in the normalized text */
  size_t orig, end; /* the original stretch */
  int same;         /* the stretch is unchanged */
} align_t;

/* A word waiting for BPE: words are taken in batches whose cache slots
 * are fetched before the first is looked up. */
typedef struct pending_s {
  const char *p;
  size_t n;
  long long org;
  size_t lo;
  uint32_t h;
} pending_t;

#define TB__BATCH 16

typedef struct enc_s {
  const tb_tokenizer_t *t;
  pending_t pend[TB__BATCH];
  size_t n_pend;
  int batch; /* words may wait: they point into the caller's text */
  tb__ids_t *out;
  int flags;
  const size_t *plain;
  size_t n_plain;
  tb_error_t *err;
  tb__bpe_scratch_t bpe;
  pcre2_match_data *md;
  tb__buf_t norm;
  align_t *al;
  size_t n_al, cap_al;
  tb__buf_t pre[TB__TOK_MAX_STEPS]; /* ByteLevel's prefixed copies */
} enc_t;

static int fail_oom(enc_t *e) {
  return tb_error_set(e->err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
}

/* Token offsets pushed since k0, from piece-local to text coordinates:
 * position j of the piece is max(org + j, lo). */
static void fix_offsets(enc_t *e, size_t k0, long long org, size_t lo) {
  if (!e->out->want_offs)
    return;
  for (size_t k = 2 * k0; k < 2 * e->out->len; k++) {
    long long v = org + (long long)e->out->offs[k];
    e->out->offs[k] = v < (long long)lo ? lo : (size_t)v;
  }
}

static int bpe_now(enc_t *e, const char *p, size_t n, long long org, size_t lo, uint32_t h) {
  size_t k0 = e->out->len;
  int rc = tb__bpe_word_hashed(e->t, p, n, 0, h, &e->bpe, e->out);
  if (rc == TB_ENOMEM)
    return fail_oom(e);
  if (rc != 0)
    return tb_error_set(e->err, TB_EINVAL, TB_CATEGORY_USER, "text: a byte without a token");
  fix_offsets(e, k0, org, lo);
  return 0;
}

/* Runs BPE on the waiting words, in order. */
static int flush(enc_t *e) {
  for (size_t i = 0; i < e->n_pend; i++) {
    pending_t *w = &e->pend[i];
    w->h = tb__tok_hash(w->p, w->n);
    tb__cache_prefetch(e->t, w->h);
  }
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < e->n_pend; i++)
    rc = bpe_now(e, e->pend[i].p, e->pend[i].n, e->pend[i].org, e->pend[i].lo, e->pend[i].h);
  e->n_pend = 0;
  return rc;
}

static int bpe_piece(enc_t *e, const char *p, size_t n, long long org, size_t lo) {
  if (!e->batch)
    return bpe_now(e, p, n, org, lo, tb__tok_hash(p, n));
  e->pend[e->n_pend++] = (pending_t){ p, n, org, lo, 0 };
  return e->n_pend == TB__BATCH ? flush(e) : 0;
}

static int pretok(enc_t *e, size_t step, const char *p, size_t n, long long org, size_t lo);

static int piece(enc_t *e, size_t step, const char *p, size_t a, size_t b, long long org,
                 size_t lo) {
  if (b <= a)
    return 0;
  return pretok(e, step + 1, p + a, b - a, org + (long long)a, lo);
}

static int regex_split(enc_t *e, size_t step, const tb__pretok_t *pt, const char *p, size_t n,
                       long long org, size_t lo) {
  size_t off = 0, last = 0;
  int keep_match = !(pt->removed && !pt->invert), keep_gap = !(pt->removed && pt->invert);
  while (off < n) {
    /* The text is valid UTF-8 (checked once): no check per match. */
    int rc = pt->jit ? pcre2_jit_match(pt->re, (PCRE2_SPTR)p, n, off, 0, e->md, NULL)
                     : pcre2_match(pt->re, (PCRE2_SPTR)p, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH)
      break;
    if (rc < 0)
      return tb_error_set(e->err, TB_EINVAL, TB_CATEGORY_USER,
                          "text: the pre-tokenizer's pattern failed on it (PCRE2 error %d)", rc);
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    size_t ms = ov[0], me = ov[1];
    if (me == ms) {
      /* An empty match splits nothing; step over one character. */
      off = ms + 1;
      while (off < n && ((unsigned char)p[off] & 0xC0) == 0x80)
        off++;
      continue;
    }
    if (keep_gap && (rc = piece(e, step, p, last, ms, org, lo)) != 0)
      return rc;
    if (keep_match && (rc = piece(e, step, p, ms, me, org, lo)) != 0)
      return rc;
    last = off = me;
  }
  return keep_gap ? piece(e, step, p, last, n, org, lo) : 0;
}

static int digits_split(enc_t *e, size_t step, const tb__pretok_t *pt, const char *p, size_t n,
                        long long org, size_t lo) {
  size_t last = 0, i = 0;
  int in_digits = 0;
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)p + i, (utf8proc_ssize_t)(n - i), &cp);
    if (l <= 0)
      l = 1, cp = 0;
    utf8proc_category_t c = utf8proc_category(cp);
    int digit = c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL ||
                c == UTF8PROC_CATEGORY_NO;
    int rc = 0;
    if (digit && (pt->individual || !in_digits)) {
      rc = piece(e, step, p, last, i, org, lo);
      last = i;
    } else if (!digit && in_digits) {
      rc = piece(e, step, p, last, i, org, lo);
      last = i;
    }
    if (rc != 0)
      return rc;
    in_digits = digit;
    i += (size_t)l;
  }
  return piece(e, step, p, last, n, org, lo);
}

static int pretok(enc_t *e, size_t step, const char *p, size_t n, long long org, size_t lo) {
  const tb_tokenizer_t *t = e->t;
  if (step == t->n_pre)
    return bpe_piece(e, p, n, org, lo);
  const tb__pretok_t *pt = &t->pre[step];
  switch (pt->kind) {
    case TB__PRE_SPLIT:
      return regex_split(e, step, pt, p, n, org, lo);
    case TB__PRE_DIGITS:
      return digits_split(e, step, pt, p, n, org, lo);
    default: {
      /* ByteLevel: BPE works on raw bytes, so the byte mapping is free;
       * what is left is the prefix space and GPT-2's split. */
      if (pt->prefix_space && p[0] != ' ') {
        tb__buf_t *b = &e->pre[step];
        b->len = 0;
        if (tb__buf_append(b, " ", 1) != 0 || tb__buf_append(b, p, n) != 0)
          return fail_oom(e);
        p = b->base;
        n = b->len;
        lo = org < (long long)lo ? lo : (size_t)org;
        org -= 1;
      }
      if (pt->re != NULL)
        return regex_split(e, step, pt, p, n, org, lo);
      return pretok(e, step + 1, p, n, org, lo);
    }
  }
}

/* Whether [a, b) overlaps a plain span. */
static int in_plain(const enc_t *e, size_t a, size_t b) {
  size_t lo = 0, hi = e->n_plain;
  while (lo < hi) { /* the first span that ends after a */
    size_t mid = (lo + hi) / 2;
    if (e->plain[2 * mid + 1] <= a)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < e->n_plain && e->plain[2 * lo] < b;
}

static int is_space_at(const char *s, size_t n, size_t *len, int back) {
  utf8proc_int32_t cp = -1;
  size_t l = 0;
  if (back) {
    size_t k = n;
    while (k > 0 && ((unsigned char)s[k - 1] & 0xC0) == 0x80 && n - k < 3)
      k--;
    if (k == 0)
      return 0;
    k--;
    l = n - k;
    utf8proc_iterate((const utf8proc_uint8_t *)s + k, (utf8proc_ssize_t)l, &cp);
  } else {
    if (n == 0)
      return 0;
    l = (size_t)utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
  }
  *len = l;
  if (cp < 0)
    return 0;
  if (cp == ' ' || (cp >= 9 && cp <= 13) || cp == 0x85 || cp == 0x2028 || cp == 0x2029)
    return 1;
  return utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS;
}

static int is_word_at(const char *s, size_t n, int back) {
  utf8proc_int32_t cp = -1;
  if (n == 0)
    return 0;
  if (back) {
    size_t k = n - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
      k--;
    utf8proc_iterate((const utf8proc_uint8_t *)s + k, (utf8proc_ssize_t)(n - k), &cp);
  } else {
    utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
  }
  if (cp == '_')
    return 1;
  utf8proc_category_t c = utf8proc_category(cp);
  return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
         (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

typedef int (*text_fn)(enc_t *e, const char *s, size_t a, size_t b);

/* Splits s[a, b) by the added tokens of trie: tokens are pushed, the
 * stretches between them go to fn.  `raw` says s is the caller's text
 * (plain spans and offsets apply directly). */
static int split_added(enc_t *e, const tb__trie_t *tr, const char *s, size_t a, size_t b,
                       int raw, text_fn fn) {
  const tb_tokenizer_t *t = e->t;
  size_t pos = a, from = a;
  int rc;
  while (pos < b && tr->nodes != NULL) {
    unsigned char c = (unsigned char)s[pos];
    if (!(tr->first[c >> 3] & (1u << (c & 7)))) {
      pos++;
      continue;
    }
    /* The longest token at pos. */
    uint32_t at = 0;
    int32_t best = -1;
    size_t end = pos;
    for (size_t i = pos; i < b; i++) {
      uint32_t ch = tr->nodes[at].child;
      while (ch != 0 && tr->nodes[ch].byte != (uint8_t)s[i])
        ch = tr->nodes[ch].sibling;
      if (ch == 0)
        break;
      at = ch;
      if (tr->nodes[at].id >= 0) {
        best = tr->nodes[at].id;
        end = i + 1;
      }
    }
    if (best < 0) {
      pos++;
      continue;
    }
    const tb__added_t *ad = &t->added[best];
    if (ad->special && raw &&
        ((e->flags & TB_ENCODE_SPECIAL_AS_TEXT) || in_plain(e, pos, end))) {
      pos = end; /* as `tokenizers` skips it: the matched text stays text */
      continue;
    }
    if (ad->single_word && (is_word_at(s + from, pos - from, 1) || is_word_at(s + end, b - end, 0))) {
      pos = end;
      continue;
    }
    size_t start = pos, stop = end, l;
    if (ad->lstrip)
      while (start > from && is_space_at(s + from, start - from, &l, 1))
        start -= l;
    if (ad->rstrip)
      while (stop < b && is_space_at(s + stop, b - stop, &l, 0))
        stop += l;
    if (start > from && (rc = fn(e, s, from, start)) != 0)
      return rc;
    if ((rc = flush(e)) != 0)
      return rc;
    if (tb__ids_push(e->out, t->added[best].id, start, stop) != 0)
      return fail_oom(e);
    from = pos = stop;
  }
  return from < b ? fn(e, s, from, b) : 0;
}

/* Pre-tokenizes s[a, b) of the normalized text (offsets relative to it). */
static int norm_piece(enc_t *e, const char *s, size_t a, size_t b) {
  return pretok(e, 0, s + a, b - a, (long long)a, 0);
}

static int align_push(enc_t *e, size_t norm, size_t orig, size_t end, int same) {
  if (same && e->n_al > 0) {
    align_t *l = &e->al[e->n_al - 1];
    if (l->same && l->end == orig && l->norm + (l->end - l->orig) == norm) {
      l->end = end;
      return 0;
    }
  }
  if (e->n_al == e->cap_al) {
    size_t cap = e->cap_al ? e->cap_al * 2 : 16;
    align_t *n = realloc(e->al, cap * sizeof(*n));
    if (n == NULL)
      return TB_ENOMEM;
    e->al = n;
    e->cap_al = cap;
  }
  e->al[e->n_al++] = (align_t){ norm, orig, end, same };
  return 0;
}

/* The NFC of a stretch whose characters all are in ranges NFC leaves
 * alone: below U+0300 (no combining marks), CJK ideographs and Hangul
 * syllables that no mark follows. */
static int nfc_stable(const char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    if (l <= 0)
      return 0;
    if (!(cp < 0x300 || (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xAC00 && cp <= 0xD7A3)))
      return 0;
    i += (size_t)l;
  }
  return 1;
}

static int normalize(enc_t *e, const char *s, size_t a, size_t b) {
  const tb_tokenizer_t *t = e->t;
  e->norm.len = 0;
  e->n_al = 0;
  int only_nfc = 1;
  for (size_t k = 0; k < t->n_norm; k++)
    only_nfc &= t->norm[k] == TB__NORM_NFC;
  size_t i = a;
  while (i < b) {
    /* An ASCII run, then a stretch from its last character (which marks
     * may follow) to the next ASCII byte. */
    size_t j = i;
    while (j < b && (unsigned char)s[j] < 0x80)
      j++;
    if (j == b) {
      if (tb__buf_append(&e->norm, s + i, j - i) != 0 || align_push(e, e->norm.len - (j - i), i, j, 1) != 0)
        return fail_oom(e);
      break;
    }
    size_t st = j > i ? j - 1 : j;
    if (st > i && (tb__buf_append(&e->norm, s + i, st - i) != 0 ||
                   align_push(e, e->norm.len - (st - i), i, st, 1) != 0))
      return fail_oom(e);
    size_t en = j;
    while (en < b && (unsigned char)s[en] >= 0x80)
      en++;
    size_t nlen = e->norm.len;
    if (only_nfc && nfc_stable(s + st, en - st)) {
      if (tb__buf_append(&e->norm, s + st, en - st) != 0 || align_push(e, nlen, st, en, 1) != 0)
        return fail_oom(e);
    } else {
      utf8proc_uint8_t *cur = NULL;
      const utf8proc_uint8_t *in = (const utf8proc_uint8_t *)s + st;
      utf8proc_ssize_t inl = (utf8proc_ssize_t)(en - st);
      for (size_t k = 0; k < t->n_norm; k++) {
        int f = t->norm[k];
        utf8proc_option_t o = UTF8PROC_STABLE |
                              (f == TB__NORM_NFC || f == TB__NORM_NFKC ? UTF8PROC_COMPOSE
                                                                       : UTF8PROC_DECOMPOSE) |
                              (f == TB__NORM_NFKC || f == TB__NORM_NFKD ? UTF8PROC_COMPAT : 0);
        utf8proc_uint8_t *next = NULL;
        utf8proc_ssize_t r = utf8proc_map(in, inl, &next, o);
        free(cur);
        if (r < 0)
          return r == UTF8PROC_ERROR_NOMEM ? fail_oom(e)
                                           : tb_error_set(e->err, TB_EINVAL, TB_CATEGORY_USER,
                                                          "text: cannot normalize bytes %zu-%zu",
                                                          st, en);
        cur = next;
        in = cur;
        inl = r;
      }
      int same = (size_t)inl == en - st && memcmp(in, s + st, en - st) == 0;
      int rc = tb__buf_append(&e->norm, in, (size_t)inl);
      free(cur);
      if (rc != 0 || align_push(e, nlen, st, en, same) != 0)
        return fail_oom(e);
    }
    i = en;
  }
  return 0;
}

/* Maps a normalized offset back to the text: starts to the start of a
 * changed stretch, ends to its end. */
static size_t map_back(const enc_t *e, size_t x, int is_end) {
  size_t lo = 0, hi = e->n_al;
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (e->al[mid].norm <= x - (is_end && x > 0))
      lo = mid;
    else
      hi = mid;
  }
  const align_t *a = &e->al[lo];
  if (a->same) {
    size_t v = a->orig + (x - a->norm);
    return v > a->end ? a->end : v;
  }
  return is_end ? a->end : a->orig;
}

static int text_piece(enc_t *e, const char *s, size_t a, size_t b) {
  const tb_tokenizer_t *t = e->t;
  if (t->kind == TB__TOK_BYTES) {
    for (size_t i = a; i < b; i++)
      if (tb__ids_push(e->out, t->byte_id[(unsigned char)s[i]], i, i + 1) != 0)
        return fail_oom(e);
    return 0;
  }
  if (t->n_norm == 0) {
    int rc = pretok(e, 0, s + a, b - a, (long long)a, 0);
    return rc ? rc : flush(e);
  }
  int rc = normalize(e, s, a, b);
  if (rc != 0)
    return rc;
  size_t k0 = e->out->len;
  const char *ns = e->norm.base ? e->norm.base : "";
  /* The normalized text is reused by the next stretch: process it now. */
  tb__buf_t keep = e->norm;
  e->norm = (tb__buf_t)TB_BUF_INIT;
  if (t->has_norm_added)
    rc = split_added(e, &t->trie_norm, ns, 0, keep.len, 0, norm_piece);
  else
    rc = norm_piece(e, ns, 0, keep.len);
  tb__buf_free(&e->norm);
  e->norm = keep;
  if (rc == 0)
    rc = flush(e);
  if (rc == 0 && e->out->want_offs)
    for (size_t k = k0; k < e->out->len; k++) {
      e->out->offs[2 * k] = map_back(e, e->out->offs[2 * k], 0);
      e->out->offs[2 * k + 1] = map_back(e, e->out->offs[2 * k + 1], 1);
    }
  return rc;
}

static int has_prefix(const tb__ids_t *o, size_t from, const int32_t *ids, size_t n) {
  if (o->len - from < n)
    return 0;
  return memcmp(o->ids + from, ids, n * sizeof(*ids)) == 0;
}

int tb__tok_encode_spans(const tb_tokenizer_t *t, const char *text, size_t len, int flags,
                         const size_t *plain, size_t n_plain, tb__ids_t *out, tb_error_t *err) {
  if (text == NULL)
    text = "";
  if (t->kind == TB__TOK_BPE) {
    size_t v = tb__utf8_valid_prefix(text, len);
    if (v != len)
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "text: invalid UTF-8 at byte %zu", v);
  }
  enc_t e = { 0 };
  e.t = t;
  e.out = out;
  e.flags = flags;
  e.plain = plain;
  e.n_plain = n_plain;
  e.err = err;
  if (t->kind == TB__TOK_BPE) {
    e.md = pcre2_match_data_create(1, NULL);
    if (e.md == NULL)
      return fail_oom(&e);
  }
  /* Words may wait for BPE unless a pre-tokenizer copies them (ByteLevel's
   * prefix space) or offsets are wanted (no cache then). */
  e.batch = t->cache != NULL && !out->want_offs;
  for (size_t i = 0; i < t->n_pre; i++)
    if (t->pre[i].kind == TB__PRE_BYTELEVEL && t->pre[i].prefix_space)
      e.batch = 0;
  size_t k0 = out->len;
  int rc = split_added(&e, &t->trie_raw, text, 0, len, 1, text_piece);
  if (rc == 0 && (flags & TB_ENCODE_ADD_SPECIAL)) {
    /* The post-processor's tokens, once: a text that already begins (or
     * ends) with them keeps them as they are. */
    if (t->n_post_before && !has_prefix(out, k0, t->post_before, t->n_post_before)) {
      for (size_t i = 0; rc == 0 && i < t->n_post_before; i++)
        rc = tb__ids_push(out, 0, 0, 0);
      if (rc == 0) {
        size_t m = t->n_post_before, n = out->len - k0 - m;
        memmove(out->ids + k0 + m, out->ids + k0, n * sizeof(*out->ids));
        memcpy(out->ids + k0, t->post_before, m * sizeof(*out->ids));
        if (out->want_offs) {
          memmove(out->offs + 2 * (k0 + m), out->offs + 2 * k0, 2 * n * sizeof(*out->offs));
          memset(out->offs + 2 * k0, 0, 2 * m * sizeof(*out->offs));
        }
      }
    }
    if (rc == 0 && t->n_post_after &&
        !(out->len - k0 >= t->n_post_after &&
          has_prefix(out, out->len - t->n_post_after, t->post_after, t->n_post_after)))
      for (size_t i = 0; rc == 0 && i < t->n_post_after; i++)
        rc = tb__ids_push(out, t->post_after[i], len, len);
    if (rc != 0)
      rc = fail_oom(&e);
  }
  tb__bpe_scratch_free(&e.bpe);
  pcre2_match_data_free(e.md);
  tb__buf_free(&e.norm);
  free(e.al);
  for (size_t i = 0; i < TB__TOK_MAX_STEPS; i++)
    tb__buf_free(&e.pre[i]);
  return rc;
}

int tb_tokenizer_encode(const tb_tokenizer_t *t, const char *text, size_t len, int flags,
                        int32_t **ids, size_t **offsets, size_t *n, tb_error_t *err) {
  *ids = NULL;
  *n = 0;
  if (offsets)
    *offsets = NULL;
  tb__ids_t o = { 0 };
  o.want_offs = offsets != NULL;
  int rc = tb__tok_encode_spans(t, text, len, flags, NULL, 0, &o, err);
  if (rc != 0) {
    tb__ids_free(&o);
    return rc;
  }
  if (o.ids == NULL) {
    /* Nothing to encode: still hand out arrays the caller may free. */
    o.ids = malloc(sizeof(*o.ids));
    o.offs = offsets ? malloc(2 * sizeof(*o.offs)) : NULL;
    if (o.ids == NULL || (offsets && o.offs == NULL)) {
      tb__ids_free(&o);
      return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
    }
  }
  *ids = o.ids;
  if (offsets)
    *offsets = o.offs;
  *n = o.len;
  return 0;
}

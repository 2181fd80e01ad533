/*
 * Decoding, whole and streaming, and the small accessors of a tokenizer.
 *
 * A byte-level tokenizer's tokens stand for bytes; the text is their
 * concatenation with every invalid UTF-8 sequence replaced by U+FFFD
 * (maximal subparts, as `tokenizers` and a browser's TextDecoder do).
 * `base`'s decode gives the bytes as they are, so any byte string round
 * trips.  The streaming decoder holds back only the bytes of a character
 * still incomplete, which is what makes its pieces add up to the whole.
 */
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

static int bad_id(tb_error_t *err, size_t i, int32_t id) {
  return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                      "tokens[%zu]: %ld is not an id of this tokenizer", i, (long)id);
}

/* Appends the bytes of ids (checked first, so a failure appends
 * nothing). */
static int ids_bytes(const tb_tokenizer_t *t, const int32_t *ids, size_t n, int flags,
                     tb__buf_t *out, tb_error_t *err) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || (uint32_t)ids[i] >= t->n_ids || !(t->flags[ids[i]] & TB__ID_PRESENT))
      return bad_id(err, i, ids[i]);
    total += t->bytes[ids[i]].len;
  }
  if (tb__buf_reserve(out, total + 1) != 0)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  for (size_t i = 0; i < n; i++) {
    if ((flags & TB_DECODE_SKIP_SPECIAL) && (t->flags[ids[i]] & TB__ID_SPECIAL))
      continue;
    const tb__span32_t *s = &t->bytes[ids[i]];
    memcpy(out->base + out->len, t->blob + s->off, s->len);
    out->len += s->len;
  }
  return 0;
}

int tb_tokenizer_decode(const tb_tokenizer_t *t, const int32_t *ids, size_t n, int flags,
                        char **text, size_t *len, tb_error_t *err) {
  *text = NULL;
  if (len)
    *len = 0;
  tb__buf_t raw = TB_BUF_INIT, out = TB_BUF_INIT;
  int rc = ids_bytes(t, ids, n, flags, &raw, err);
  if (rc == 0) {
    if (t->kind == TB__TOK_BYTES) {
      out = raw;
      raw = (tb__buf_t)TB_BUF_INIT;
    } else if (tb__utf8_lossy_append(&out, raw.base ? raw.base : "", raw.len) != 0) {
      rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
    }
  }
  if (rc == 0 && tb__buf_terminate(&out) != 0)
    rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  tb__buf_free(&raw);
  if (rc != 0) {
    tb__buf_free(&out);
    return rc;
  }
  size_t l;
  *text = tb__buf_steal(&out, &l);
  if (len)
    *len = l;
  return 0;
}

/* ---------------------------------------------------------------- streaming */

struct tb_decoder_s {
  const tb_tokenizer_t *tok;
  int flags;
  char held[4];
  size_t n_held;
};

int tb_decoder_new(const tb_tokenizer_t *tok, int flags, tb_decoder_t **out) {
  *out = calloc(1, sizeof(**out));
  if (*out == NULL)
    return TB_ENOMEM;
  (*out)->tok = tok;
  (*out)->flags = flags;
  return 0;
}

void tb_decoder_free(tb_decoder_t *d) {
  free(d);
}

/* Appends len bytes of text to the caller's malloc'd string. */
static int append_out(char **out, size_t *out_len, const char *s, size_t len) {
  size_t have = *out ? *out_len : 0;
  char *n = realloc(*out, have + len + 1);
  if (n == NULL)
    return TB_ENOMEM;
  if (len)
    memcpy(n + have, s, len);
  n[have + len] = 0;
  *out = n;
  *out_len = have + len;
  return 0;
}

int tb_decoder_feed(tb_decoder_t *d, const int32_t *ids, size_t n, char **out,
                    size_t *out_len, tb_error_t *err) {
  tb__buf_t raw = TB_BUF_INIT, text = TB_BUF_INIT;
  if (d->n_held && tb__buf_append(&raw, d->held, d->n_held) != 0)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  int rc = ids_bytes(d->tok, ids, n, d->flags, &raw, err);
  if (rc != 0) {
    tb__buf_free(&raw);
    return rc;
  }
  size_t tail = tb__utf8_incomplete_tail(raw.base ? raw.base : "", raw.len);
  size_t ready = raw.len - tail;
  if (d->tok->kind == TB__TOK_BYTES)
    rc = tb__buf_append(&text, raw.base ? raw.base : "", ready);
  else
    rc = tb__utf8_lossy_append(&text, raw.base ? raw.base : "", ready);
  if (rc == 0)
    rc = append_out(out, out_len, text.base ? text.base : "", text.len);
  if (rc == 0) {
    memcpy(d->held, raw.base + ready, tail);
    d->n_held = tail;
  } else {
    rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  }
  tb__buf_free(&raw);
  tb__buf_free(&text);
  return rc;
}

int tb_decoder_finish(tb_decoder_t *d, char **out, size_t *out_len) {
  tb__buf_t text = TB_BUF_INIT;
  int rc = d->tok->kind == TB__TOK_BYTES ? tb__buf_append(&text, d->held, d->n_held)
                                         : tb__utf8_lossy_append(&text, d->held, d->n_held);
  if (rc == 0)
    rc = append_out(out, out_len, text.base ? text.base : "", text.len);
  if (rc == 0)
    d->n_held = 0;
  tb__buf_free(&text);
  return rc;
}

/* ---------------------------------------------------------------- accessors */

size_t tb_tokenizer_vocab_size(const tb_tokenizer_t *t) {
  return t->n_ids;
}

int32_t tb_tokenizer_token_to_id(const tb_tokenizer_t *t, const char *token, size_t len) {
  return tb__strhash_get(&t->by_text, t->blob, t->text, token, len);
}

const char *tb_tokenizer_id_to_token(const tb_tokenizer_t *t, int32_t id, size_t *len) {
  if (id < 0 || (uint32_t)id >= t->n_ids || !(t->flags[id] & TB__ID_PRESENT)) {
    if (len)
      *len = 0;
    return NULL;
  }
  if (len)
    *len = t->text[id].len;
  return t->blob + t->text[id].off;
}

const char *tb_tokenizer_token_bytes(const tb_tokenizer_t *t, int32_t id, size_t *len) {
  if (id < 0 || (uint32_t)id >= t->n_ids || !(t->flags[id] & TB__ID_PRESENT)) {
    *len = 0;
    return NULL;
  }
  *len = t->bytes[id].len;
  return t->blob + t->bytes[id].off;
}

int tb_tokenizer_is_special(const tb_tokenizer_t *t, int32_t id) {
  return id >= 0 && (uint32_t)id < t->n_ids && (t->flags[id] & TB__ID_SPECIAL) != 0;
}

int32_t tb_tokenizer_bos_id(const tb_tokenizer_t *t) {
  return t->bos;
}

int32_t tb_tokenizer_eos_id(const tb_tokenizer_t *t) {
  return t->eos;
}

int32_t tb_tokenizer_pad_id(const tb_tokenizer_t *t) {
  return t->pad;
}

const int32_t *tb_tokenizer_eos_ids(const tb_tokenizer_t *t, size_t *n) {
  *n = t->n_eos_ids;
  return t->eos_ids;
}

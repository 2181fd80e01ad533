/*
 * A strict JSON scanner for the two big members of a tokenizer.json,
 * `model.vocab` and `model.merges`: they are most of the file (150k
 * tokens, 150k-280k merges), and building them as a jansson tree cost
 * more than the whole load may take.  Everything else in the file still
 * goes through jansson.
 *
 * It reads strings (escapes, surrogate pairs, UTF-8 checked), integers,
 * and skips any value with a depth limit, failing with TB_EINVAL at the
 * first byte that is not JSON.  Non-goals: numbers with fractions (no
 * member read here has them), building values.
 */
#include <string.h>

#include "text/tok_internal.h"

void tb__jscan_ws(tb__jscan_t *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
    s->p++;
}

int tb__jscan_expect(tb__jscan_t *s, char c) {
  tb__jscan_ws(s);
  if (s->p >= s->end || *s->p != c)
    return TB_EINVAL;
  s->p++;
  return 0;
}

static int hex4(const char *p, unsigned *v) {
  unsigned x = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    x <<= 4;
    if (c >= '0' && c <= '9') x |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') x |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') x |= (unsigned)(c - 'A' + 10);
    else return TB_EINVAL;
  }
  *v = x;
  return 0;
}

static int put_utf8(tb__buf_t *b, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) { u[0] = (char)cp; n = 1; }
  else if (cp < 0x800) { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
  else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
  } else {
    u[0] = (char)(0xF0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
  }
  return tb__buf_append(b, u, n);
}

int tb__jscan_string(tb__jscan_t *s) {
  tb__jscan_ws(s);
  s->str.len = 0;
  if (s->p >= s->end || *s->p != '"')
    return TB_EINVAL;
  s->p++;
  for (;;) {
    const char *run = s->p;
    while (s->p < s->end && *s->p != '"' && *s->p != '\\' && (unsigned char)*s->p >= 0x20)
      s->p++;
    if (s->p > run) {
      size_t n = (size_t)(s->p - run);
      if (tb__utf8_valid_prefix(run, n) != n)
        return TB_EINVAL;
      if (tb__buf_append(&s->str, run, n) != 0)
        return TB_ENOMEM;
    }
    if (s->p >= s->end || (unsigned char)*s->p < 0x20)
      return TB_EINVAL;
    if (*s->p == '"') {
      s->p++;
      return 0;
    }
    /* A backslash escape. */
    if (s->end - s->p < 2)
      return TB_EINVAL;
    char c = s->p[1];
    s->p += 2;
    char lit = 0;
    switch (c) {
      case '"': lit = '"'; break;
      case '\\': lit = '\\'; break;
      case '/': lit = '/'; break;
      case 'b': lit = '\b'; break;
      case 'f': lit = '\f'; break;
      case 'n': lit = '\n'; break;
      case 'r': lit = '\r'; break;
      case 't': lit = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (s->end - s->p < 4 || hex4(s->p, &cp) != 0)
          return TB_EINVAL;
        s->p += 4;
        if (cp >= 0xD800 && cp < 0xDC00) {
          if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' ||
              hex4(s->p + 2, &lo) != 0 || lo < 0xDC00 || lo >= 0xE000)
            return TB_EINVAL; /* a lone surrogate is no character */
          s->p += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp < 0xE000) {
          return TB_EINVAL;
        }
        if (put_utf8(&s->str, cp) != 0)
          return TB_ENOMEM;
        continue;
      }
      default:
        return TB_EINVAL;
    }
    if (tb__buf_append(&s->str, &lit, 1) != 0)
      return TB_ENOMEM;
  }
}

int tb__jscan_int(tb__jscan_t *s, long long *v) {
  tb__jscan_ws(s);
  int neg = 0;
  if (s->p < s->end && *s->p == '-') {
    neg = 1;
    s->p++;
  }
  if (s->p >= s->end || *s->p < '0' || *s->p > '9')
    return TB_EINVAL;
  if (*s->p == '0' && s->end - s->p > 1 && s->p[1] >= '0' && s->p[1] <= '9')
    return TB_EINVAL; /* no leading zeros in JSON */
  long long x = 0;
  while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
    if (x > (1LL << 53))
      return TB_EINVAL;
    x = x * 10 + (*s->p - '0');
    s->p++;
  }
  if (s->p < s->end && (*s->p == '.' || *s->p == 'e' || *s->p == 'E'))
    return TB_EINVAL;
  *v = neg ? -x : x;
  return 0;
}

static int skip_number(tb__jscan_t *s) {
  if (s->p < s->end && *s->p == '-')
    s->p++;
  const char *d = s->p;
  while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
    s->p++;
  if (s->p == d)
    return TB_EINVAL;
  if (s->p < s->end && *s->p == '.') {
    d = ++s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
      s->p++;
    if (s->p == d)
      return TB_EINVAL;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
      s->p++;
    d = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
      s->p++;
    if (s->p == d)
      return TB_EINVAL;
  }
  return 0;
}

static int skip_word(tb__jscan_t *s, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
    return TB_EINVAL;
  s->p += n;
  return 0;
}

int tb__jscan_skip(tb__jscan_t *s, int depth) {
  if (depth > 64)
    return TB_EINVAL;
  tb__jscan_ws(s);
  if (s->p >= s->end)
    return TB_EINVAL;
  int rc;
  switch (*s->p) {
    case '"':
      /* Skipped strings are not unescaped: the member that is read later
       * (by jansson or the readers here) checks them. */
      for (s->p++; s->p < s->end; s->p++) {
        if (*s->p == '\\') {
          s->p++;
          continue;
        }
        if (*s->p == '"') {
          s->p++;
          return 0;
        }
        if ((unsigned char)*s->p < 0x20)
          return TB_EINVAL;
      }
      return TB_EINVAL;
    case '{':
    case '[': {
      char close = *s->p == '{' ? '}' : ']';
      int obj = *s->p == '{';
      s->p++;
      tb__jscan_ws(s);
      if (s->p < s->end && *s->p == close) {
        s->p++;
        return 0;
      }
      for (;;) {
        tb__jscan_ws(s);
        if (obj && (s->p >= s->end || *s->p != '"' || (rc = tb__jscan_skip(s, depth + 1)) != 0 ||
                    (rc = tb__jscan_expect(s, ':')) != 0))
          return rc ? rc : TB_EINVAL;
        if ((rc = tb__jscan_skip(s, depth + 1)) != 0)
          return rc;
        tb__jscan_ws(s);
        if (s->p < s->end && *s->p == ',') {
          s->p++;
          continue;
        }
        return tb__jscan_expect(s, close);
      }
    }
    case 't': return skip_word(s, "true");
    case 'f': return skip_word(s, "false");
    case 'n': return skip_word(s, "null");
    default: return skip_number(s);
  }
}

/*
 * The flat-object reader of json_scan.h.  It accepts a subset of JSON and
 * gives up on everything else; it never accepts what JSON does not.
 */
#include "core/json_scan.h"

#include <stdlib.h>
#include <string.h>

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
    p++;
  return p;
}

/* A string of printable ASCII without escapes; p is past the quote.
 * Returns the closing quote, or NULL.  Other bytes are jansson's to
 * read: it checks that they are UTF-8, which JSON text must be. */
static const char *scan_string(const char *p, const char *end) {
  while (p < end && *p != '"') {
    if (*p == '\\' || (unsigned char)*p < 0x20 || (unsigned char)*p >= 0x80)
      return NULL;
    p++;
  }
  return p < end ? p : NULL;
}

/* A JSON number (RFC 8259 grammar), read with strtod once checked. */
static const char *scan_number(const char *p, const char *end, double *out) {
  const char *s = p;
  if (p < end && *p == '-')
    p++;
  if (p < end && *p == '0') {
    p++;
  } else {
    if (p >= end || *p < '1' || *p > '9')
      return NULL;
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < end && *p == '.') {
    p++;
    if (p >= end || *p < '0' || *p > '9')
      return NULL;
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-'))
      p++;
    if (p >= end || *p < '0' || *p > '9')
      return NULL;
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  char buf[64];
  size_t n = (size_t)(p - s);
  if (n >= sizeof(buf))
    return NULL;  /* leave long numbers to jansson */
  memcpy(buf, s, n);
  buf[n] = '\0';
  *out = strtod(buf, NULL);
  return p;
}

static const char *literal(const char *p, const char *end, const char *lit) {
  size_t n = strlen(lit);
  return (size_t)(end - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

int tb__jscan_object(tb_slice_t text, tb__jscan_fn fn, void *ctx) {
  const char *p = text.base, *end = text.base + text.len;
  if (p == NULL)
    return 0;
  p = skip_ws(p, end);
  if (p >= end || *p != '{')
    return 0;
  p = skip_ws(p + 1, end);
  if (p < end && *p == '}')
    return skip_ws(p + 1, end) == end;
  for (;;) {
    tb__jscan_member_t m;
    if (p >= end || *p != '"')
      return 0;
    const char *q = scan_string(p + 1, end);
    if (q == NULL)
      return 0;
    m.key = (tb_slice_t){ p + 1, (size_t)(q - p - 1) };
    p = skip_ws(q + 1, end);
    if (p >= end || *p != ':')
      return 0;
    p = skip_ws(p + 1, end);
    if (p >= end)
      return 0;
    m.num = 0;
    m.str = (tb_slice_t){ p, 0 };
    if (*p == '"') {
      q = scan_string(p + 1, end);
      if (q == NULL)
        return 0;
      m.type = TB_JSCAN_STRING;
      m.str = (tb_slice_t){ p + 1, (size_t)(q - p - 1) };
      p = q + 1;
    } else if ((q = literal(p, end, "true")) != NULL) {
      m.type = TB_JSCAN_TRUE;
      p = q;
    } else if ((q = literal(p, end, "false")) != NULL) {
      m.type = TB_JSCAN_FALSE;
      p = q;
    } else if ((q = literal(p, end, "null")) != NULL) {
      m.type = TB_JSCAN_NULL;
      p = q;
    } else if ((q = scan_number(p, end, &m.num)) != NULL) {
      m.type = TB_JSCAN_NUMBER;
      m.str = (tb_slice_t){ p, (size_t)(q - p) };
      p = q;
    } else {
      return 0;  /* an object, an array, or not JSON */
    }
    if (fn(ctx, &m) != 0)
      return 0;
    p = skip_ws(p, end);
    if (p < end && *p == ',') {
      p = skip_ws(p + 1, end);
      continue;
    }
    if (p < end && *p == '}')
      return skip_ws(p + 1, end) == end;
    return 0;
  }
}

int tb__jscan_is(const tb__jscan_member_t *m, const char *s) {
  size_t n = strlen(s);
  switch (m->type) {
    case TB_JSCAN_STRING:
      return m->str.len == n && memcmp(m->str.base, s, n) == 0;
    case TB_JSCAN_TRUE:
      return strcmp(s, "true") == 0;
    case TB_JSCAN_FALSE:
      return strcmp(s, "false") == 0;
    case TB_JSCAN_NULL:
      return strcmp(s, "null") == 0;
    default:
      return 0;
  }
}

/*
 * Growable buffers and string helpers (see buf.h).
 */
#include "core/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void tb__buf_init(tb__buf_t *b) {
  b->base = NULL;
  b->len = 0;
  b->cap = 0;
}

void tb__buf_free(tb__buf_t *b) {
  free(b->base);
  tb__buf_init(b);
}

int tb__array_grow(void **p, size_t *cap, size_t n, size_t elem) {
  if (n <= *cap)
    return 0;
  size_t c = *cap ? *cap : 16;
  while (c < n) {
    if (c > SIZE_MAX / 2)
      return TB_ENOMEM;
    c *= 2;
  }
  if (elem != 0 && c > SIZE_MAX / elem)
    return TB_ENOMEM;
  void *q = realloc(*p, c * elem);
  if (q == NULL)
    return TB_ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

int tb__buf_reserve(tb__buf_t *b, size_t extra) {
  if (extra > SIZE_MAX - b->len - 1)
    return TB_ENOMEM;
  size_t need = b->len + extra + 1; /* room for tb__buf_terminate */
  if (need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *p = realloc(b->base, cap);
  if (p == NULL)
    return TB_ENOMEM;
  b->base = p;
  b->cap = cap;
  return 0;
}

int tb__buf_append(tb__buf_t *b, const void *data, size_t len) {
  if (len == 0)
    return 0;
  int rc = tb__buf_reserve(b, len);
  if (rc != 0)
    return rc;
  memcpy(b->base + b->len, data, len);
  b->len += len;
  return 0;
}

int tb__buf_append_str(tb__buf_t *b, const char *s) {
  return tb__buf_append(b, s, strlen(s));
}

int tb__buf_vprintf(tb__buf_t *b, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return TB_EINVAL;
  int rc = tb__buf_reserve(b, (size_t)n);
  if (rc != 0)
    return rc;
  vsnprintf(b->base + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
  return 0;
}

int tb__buf_printf(tb__buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = tb__buf_vprintf(b, fmt, ap);
  va_end(ap);
  return rc;
}

int tb__buf_terminate(tb__buf_t *b) {
  int rc = tb__buf_reserve(b, 0);
  if (rc != 0)
    return rc;
  b->base[b->len] = '\0';
  return 0;
}

void tb__buf_consume(tb__buf_t *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->base, b->base + n, b->len - n);
  b->len -= n;
}

char *tb__buf_steal(tb__buf_t *b, size_t *len) {
  if (tb__buf_terminate(b) != 0)
    return NULL;
  char *p = b->base;
  if (len != NULL)
    *len = b->len;
  tb__buf_init(b);
  return p;
}

char *tb__vasprintf(const char *fmt, va_list ap) {
  tb__buf_t b = TB_BUF_INIT;
  if (tb__buf_vprintf(&b, fmt, ap) != 0 || tb__buf_terminate(&b) != 0) {
    tb__buf_free(&b);
    return NULL;
  }
  return b.base;
}

char *tb__asprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = tb__vasprintf(fmt, ap);
  va_end(ap);
  return s;
}

char *tb__str_fill(char *dst, const char *s, size_t n) {
  if (dst == NULL)
    return NULL;
  if (n > 0)
    memcpy(dst, s, n);
  dst[n] = '\0';
  return dst;
}

char *tb__strndup(const char *s, size_t n) {
  return tb__str_fill(malloc(n + 1), s, n);
}

int tb__slice_eq_str(tb_slice_t a, const char *s) {
  size_t n = strlen(s);
  return a.len == n && (n == 0 || memcmp(a.base, s, n) == 0);
}

int tb__slice_case_eq_str(tb_slice_t a, const char *s) {
  size_t n = strlen(s);
  return a.len == n && (n == 0 || strncasecmp(a.base, s, n) == 0);
}

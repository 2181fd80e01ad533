/*
 * Growable byte buffers and small string helpers.
 *
 * tb__buf_t is layout-compatible with the first two fields of uv_buf_t's
 * Linux definition (base, len) so a filled buffer can be handed to uv_write
 * as-is.  Growth doubles the capacity; every function that may allocate
 * returns 0 or TB_ENOMEM and leaves the buffer valid on failure.
 */
#ifndef TB_CORE_BUF_H
#define TB_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"

typedef struct tb__buf_s {
  char *base;
  size_t len;
  size_t cap;
} tb__buf_t;

#define TB_BUF_INIT { NULL, 0, 0 }

void tb__buf_init(tb__buf_t *b);
void tb__buf_free(tb__buf_t *b);
/* Makes room for at least `extra` more bytes past len. */
int tb__buf_reserve(tb__buf_t *b, size_t extra);
/* Makes the array *p of *cap elements of elem bytes hold at least n,
 * doubling its capacity (from 16) so that appends one at a time cost
 * amortized O(1).  TB_ENOMEM leaves *p and *cap as they were. */
int tb__array_grow(void **p, size_t *cap, size_t n, size_t elem);
int tb__buf_append(tb__buf_t *b, const void *data, size_t len);
int tb__buf_append_str(tb__buf_t *b, const char *s);
int tb__buf_printf(tb__buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int tb__buf_vprintf(tb__buf_t *b, const char *fmt, va_list ap);
/* Keeps a NUL byte after len without counting it, so base can be used as
 * a C string (for logging and libraries that need one). */
int tb__buf_terminate(tb__buf_t *b);
/* Drops the first n bytes (used by connection read buffers). */
void tb__buf_consume(tb__buf_t *b, size_t n);
static inline void tb__buf_reset(tb__buf_t *b) { b->len = 0; }
/* Hands the bytes to the caller (who frees them) and empties the buffer. */
char *tb__buf_steal(tb__buf_t *b, size_t *len);

static inline tb_slice_t tb__buf_slice(const tb__buf_t *b) {
  tb_slice_t s = { b->base, b->len };
  return s;
}

/* malloc'd printf; NULL on allocation failure. */
char *tb__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *tb__vasprintf(const char *fmt, va_list ap);
/* malloc'd NUL-terminated copy of a slice; NULL on allocation failure. */
char *tb__strndup(const char *s, size_t n);
/* Copies the n bytes at s and a NUL into dst, which holds n + 1 bytes;
 * returns dst, NULL when dst is NULL (a failed allocation passes through). */
char *tb__str_fill(char *dst, const char *s, size_t n);

int tb__slice_eq_str(tb_slice_t a, const char *s);
/* ASCII case-insensitive comparison, for HTTP header names. */
int tb__slice_case_eq_str(tb_slice_t a, const char *s);

#endif /* TB_CORE_BUF_H */

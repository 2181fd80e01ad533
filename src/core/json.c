/*
 * Typed JSON readers with path errors (see json.h).
 */
#include "core/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <utf8proc.h>

#include "core/buf.h"

void tb__jctx_init(tb__jctx_t *c, tb_error_t *err) {
  c->path[0] = '\0';
  c->len = 0;
  c->truncated = 0;
  c->err = err;
}

static void path_append(tb__jctx_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void path_append(tb__jctx_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = sizeof(c->path) - c->len;
  int n = vsnprintf(c->path + c->len, room, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= room) {
    c->truncated = 1;
    c->len = sizeof(c->path) - 1;
    c->path[c->len] = '\0';
    return;
  }
  c->len += (size_t)n;
}

size_t tb__jctx_push_key(tb__jctx_t *c, const char *key) {
  size_t mark = c->len;
  path_append(c, c->len == 0 ? "%s" : ".%s", key);
  return mark;
}

size_t tb__jctx_push_index(tb__jctx_t *c, size_t index) {
  size_t mark = c->len;
  path_append(c, "[%zu]", index);
  return mark;
}

void tb__jctx_pop(tb__jctx_t *c, size_t mark) {
  if (mark < sizeof(c->path)) {
    c->len = mark;
    c->path[mark] = '\0';
    c->truncated = 0;
  }
}

const char *tb__jctx_path(const tb__jctx_t *c) {
  return c->len == 0 ? "body" : c->path;
}

static int fail_v(tb__jctx_t *c, const char *fmt, va_list ap) {
  char reason[512];
  vsnprintf(reason, sizeof(reason), fmt, ap);
  if (c->err != NULL)
    tb_error_set(c->err, TB_EFIELD, TB_CATEGORY_USER, "%s%s: %s",
                 tb__jctx_path(c), c->truncated ? "..." : "", reason);
  return TB_EFIELD;
}

int tb__jctx_fail(tb__jctx_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = fail_v(c, fmt, ap);
  va_end(ap);
  return rc;
}

int tb__jctx_fail_at(tb__jctx_t *c, const char *key, const char *fmt, ...) {
  size_t mark = tb__jctx_push_key(c, key);
  va_list ap;
  va_start(ap, fmt);
  int rc = fail_v(c, fmt, ap);
  va_end(ap);
  tb__jctx_pop(c, mark);
  return rc;
}

const char *tb__json_type_name(const json_t *v) {
  if (v == NULL)
    return "nothing";
  switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
  }
  return "an unknown value";
}

int tb__json_parse(tb_slice_t text, json_t **out, tb_error_t *err) {
  json_error_t je;
  /* JSON_REJECT_DUPLICATES: a body that says a field twice is ambiguous.
   * JSON_ALLOW_NUL is off: strings with NUL bytes are rejected. */
  json_t *v = json_loadb(text.base ? text.base : "", text.len,
                         JSON_REJECT_DUPLICATES, &je);
  if (v == NULL) {
    *out = NULL;
    return tb_error_set(err, TB_EJSON, TB_CATEGORY_USER,
                        "body: invalid JSON at line %d column %d: %s",
                        je.line, je.column, je.text);
  }
  *out = v;
  return 0;
}

/* Looks a field up; returns 1 when absent or null (and not required). */
static int lookup(tb__jctx_t *c, const json_t *obj, const char *key,
                  int required, json_t **out) {
  json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
  if (v == NULL || json_is_null(v)) {
    *out = NULL;
    if (required)
      return tb__jctx_fail_at(c, key, "required field is missing");
    return 1;
  }
  *out = v;
  return 0;
}

int tb__json_expect_object(tb__jctx_t *c, const json_t *v) {
  if (json_is_object(v))
    return 0;
  return tb__jctx_fail(c, "expected an object, got %s", tb__json_type_name(v));
}

int tb__json_get_object(tb__jctx_t *c, const json_t *obj, const char *key,
                        int required, json_t **out) {
  int rc = lookup(c, obj, key, required, out);
  if (rc != 0)
    return rc;
  if (!json_is_object(*out))
    return tb__jctx_fail_at(c, key, "expected an object, got %s",
                            tb__json_type_name(*out));
  return 0;
}

int tb__json_get_array(tb__jctx_t *c, const json_t *obj, const char *key,
                       int required, json_t **out) {
  int rc = lookup(c, obj, key, required, out);
  if (rc != 0)
    return rc;
  if (!json_is_array(*out))
    return tb__jctx_fail_at(c, key, "expected an array, got %s",
                            tb__json_type_name(*out));
  return 0;
}

int tb__json_get_string(tb__jctx_t *c, const json_t *obj, const char *key,
                        int required, tb_slice_t *out) {
  json_t *v;
  int rc = lookup(c, obj, key, required, &v);
  if (rc != 0)
    return rc;
  if (!json_is_string(v))
    return tb__jctx_fail_at(c, key, "expected a string, got %s",
                            tb__json_type_name(v));
  out->base = json_string_value(v);
  out->len = json_string_length(v);
  return 0;
}

int tb__json_as_int(tb__jctx_t *c, const json_t *v, int64_t min, int64_t max,
                    int64_t *out) {
  int64_t n;
  if (json_is_integer(v)) {
    n = (int64_t)json_integer_value(v);
  } else if (json_is_real(v)) {
    double d = json_real_value(v);
    if (!(d == floor(d)) || d < -9.2e18 || d > 9.2e18)
      return tb__jctx_fail(c, "expected an integer, got %g", d);
    n = (int64_t)d;
  } else {
    return tb__jctx_fail(c, "expected an integer, got %s",
                         tb__json_type_name(v));
  }
  int rc = tb__json_check_range(c, n, min, max);
  if (rc == 0)
    *out = n;
  return rc;
}

int tb__json_check_range(tb__jctx_t *c, int64_t n, int64_t min, int64_t max) {
  if (n < min || n > max)
    return tb__jctx_fail(c, "%lld is out of range [%lld, %lld]", (long long)n,
                         (long long)min, (long long)max);
  return 0;
}

int tb__json_get_int(tb__jctx_t *c, const json_t *obj, const char *key,
                     int required, int64_t min, int64_t max, int64_t *out) {
  json_t *v;
  int rc = lookup(c, obj, key, required, &v);
  if (rc != 0)
    return rc;
  size_t mark = tb__jctx_push_key(c, key);
  rc = tb__json_as_int(c, v, min, max, out);
  tb__jctx_pop(c, mark);
  return rc;
}

int tb__json_as_double(tb__jctx_t *c, const json_t *v, double *out) {
  if (!json_is_number(v))
    return tb__jctx_fail(c, "expected a number, got %s",
                         tb__json_type_name(v));
  double d = json_number_value(v);
  if (!isfinite(d))
    return tb__jctx_fail(c, "expected a finite number");
  *out = d;
  return 0;
}

int tb__json_get_double(tb__jctx_t *c, const json_t *obj, const char *key,
                        int required, double *out) {
  json_t *v;
  int rc = lookup(c, obj, key, required, &v);
  if (rc != 0)
    return rc;
  size_t mark = tb__jctx_push_key(c, key);
  rc = tb__json_as_double(c, v, out);
  tb__jctx_pop(c, mark);
  return rc;
}

int tb__json_get_bool(tb__jctx_t *c, const json_t *obj, const char *key,
                      int required, int *out) {
  json_t *v;
  int rc = lookup(c, obj, key, required, &v);
  if (rc != 0)
    return rc;
  if (!json_is_boolean(v))
    return tb__jctx_fail_at(c, key, "expected a boolean, got %s",
                            tb__json_type_name(v));
  *out = json_is_true(v);
  return 0;
}

char *tb__json_dump(const json_t *v, size_t *len) {
  char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  if (s != NULL && len != NULL)
    *len = strlen(s);
  return s;
}

size_t tb__json_escape(char *dst, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  char *p = dst;
  for (size_t i = 0; i < len;) {
    unsigned char c = u[i];
    if (c >= 0x80) {
      utf8proc_int32_t cp;
      utf8proc_ssize_t n = utf8proc_iterate(u + i, (utf8proc_ssize_t)(len - i), &cp);
      if (n > 0) {
        memcpy(p, u + i, (size_t)n);
        p += n;
        i += (size_t)n;
      } else {
        memcpy(p, "\xef\xbf\xbd", 3);  /* U+FFFD for this byte, then go on */
        p += 3;
        i++;
      }
      continue;
    }
    if (c == '"' || c == '\\') {
      *p++ = '\\';
      *p++ = (char)c;
    } else if (c < 0x20) {
      memcpy(p, "\\u00", 4);
      p[4] = hex[c >> 4];
      p[5] = hex[c & 15];
      p += 6;
    } else {
      *p++ = (char)c;
    }
    i++;
  }
  return (size_t)(p - dst);
}

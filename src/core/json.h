/*
 * Typed JSON readers over jansson that report precise paths.
 *
 * A tb__jctx_t follows the decoder down the document: push a key or an index
 * before reading inside it, pop back to the mark afterwards.  Every reader
 * that fails records "<path>: <reason>" in the context's tb_error_t with
 * category user and code TB_EFIELD, for example
 *   data[3].loss_fn_inputs.weights: expected a float32 tensor
 * so that every decoder in the project gives the same kind of message.
 *
 * Readers return 0 when the field was read, 1 when an optional field is
 * absent (or JSON null), and a negative code on error.
 */
#ifndef TB_CORE_JSON_H
#define TB_CORE_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"

#define TB_JSON_PATH_MAX 256

typedef struct tb__jctx_s {
  char path[TB_JSON_PATH_MAX];
  size_t len;         /* length of path; 0 at the document root */
  int truncated;      /* the path grew past TB_JSON_PATH_MAX */
  tb_error_t *err;    /* where failures are recorded; may be NULL */
} tb__jctx_t;

enum { TB_JSON_OPTIONAL = 0, TB_JSON_REQUIRED = 1 };

void tb__jctx_init(tb__jctx_t *c, tb_error_t *err);
/* Each push returns a mark to pass to tb__jctx_pop. */
size_t tb__jctx_push_key(tb__jctx_t *c, const char *key);
size_t tb__jctx_push_index(tb__jctx_t *c, size_t index);
void tb__jctx_pop(tb__jctx_t *c, size_t mark);
/* The current path as a C string ("" at the root, shown as "body"). */
const char *tb__jctx_path(const tb__jctx_t *c);
/* Records "<path>: <reason>" and returns TB_EFIELD. */
int tb__jctx_fail(tb__jctx_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Same, for a failure at `key` inside the current path. */
int tb__jctx_fail_at(tb__jctx_t *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "an object", "a string", "an integer", ... for messages. */
const char *tb__json_type_name(const json_t *v);

/* Parses a whole document.  On failure records "body: invalid JSON at line
 * L column C: ..." with code TB_EJSON, category user. */
int tb__json_parse(tb_slice_t text, json_t **out, tb_error_t *err);

/* The current value must be of a type; these fail with the current path. */
int tb__json_expect_object(tb__jctx_t *c, const json_t *v);

/* Field readers on an object.  Borrowed references, valid while obj is. */
int tb__json_get_object(tb__jctx_t *c, const json_t *obj, const char *key,
                        int required, json_t **out);
int tb__json_get_array(tb__jctx_t *c, const json_t *obj, const char *key,
                       int required, json_t **out);
int tb__json_get_string(tb__jctx_t *c, const json_t *obj, const char *key,
                        int required, tb_slice_t *out);
/* Integers within [min, max]; a float with an integral value is accepted
 * (Python clients send 3.0 for 3 now and then). */
int tb__json_get_int(tb__jctx_t *c, const json_t *obj, const char *key,
                     int required, int64_t min, int64_t max, int64_t *out);
/* Finite numbers only: NaN and infinities are rejected. */
int tb__json_get_double(tb__jctx_t *c, const json_t *obj, const char *key,
                        int required, double *out);
int tb__json_get_bool(tb__jctx_t *c, const json_t *obj, const char *key,
                      int required, int *out);

/* The value itself (not a field) as a number or an integer. */
int tb__json_as_double(tb__jctx_t *c, const json_t *v, double *out);
int tb__json_as_int(tb__jctx_t *c, const json_t *v, int64_t min, int64_t max,
                    int64_t *out);
/* An integer already read (a wire struct's) against [min, max], refused
 * as tb__json_as_int refuses it at c's path. */
int tb__json_check_range(tb__jctx_t *c, int64_t n, int64_t min, int64_t max);

/* Serialises compactly into a malloc'd string (NULL on ENOMEM). */
char *tb__json_dump(const json_t *v, size_t *len);

/* Writes s[0..len) as the inside of a JSON string (no quotes) to dst,
 * which has room for 6 * len bytes, and returns the bytes written.
 * Quotes, backslashes and control characters are escaped, and every byte
 * that is not part of well-formed UTF-8 (a stray continuation, an
 * overlong form, a surrogate, a truncated sequence) becomes U+FFFD, so
 * the result is valid JSON text whatever the input: a protobuf string
 * quoted in an error, a path, a message cut short.  Every JSON body the
 * server writes by hand goes through here. */
size_t tb__json_escape(char *dst, const char *s, size_t len);

#endif /* TB_CORE_JSON_H */

/*
 * A reader for the small, flat JSON objects that make up most of the
 * traffic of a long poll: retrieve_future's request ({"request_id",
 * "allow_metadata_only"}) and its "try_again" answer.  It walks the
 * object's members without building a document, so a poll costs no
 * allocation; both sides of the wire use it.
 *
 * Non-goals: everything else.  A value that is an object or an array, a
 * string with an escape or a byte outside ASCII, a number it cannot read
 * whole -- anything outside that flat shape -- makes it give up (0), and
 * the caller parses the text with jansson instead, which also produces the
 * error messages.
 */
#ifndef TB_CORE_JSON_SCAN_H
#define TB_CORE_JSON_SCAN_H

#include <stddef.h>

#include "tinkerbell/common.h"

typedef enum {
  TB_JSCAN_STRING = 0,   /* str: the characters between the quotes */
  TB_JSCAN_NUMBER,       /* num; str: its text */
  TB_JSCAN_TRUE,
  TB_JSCAN_FALSE,
  TB_JSCAN_NULL
} tb__jscan_type_t;

typedef struct tb__jscan_member_s {
  tb_slice_t key;        /* without quotes; never has escapes */
  tb__jscan_type_t type;
  tb_slice_t str;
  double num;
} tb__jscan_member_t;

/* Called for each member in order; returns 0 to go on, anything else to
 * give up (tb__jscan_object then returns 0). */
typedef int (*tb__jscan_fn)(void *ctx, const tb__jscan_member_t *m);

/* 1 when text is one flat object (surrounding white space allowed) and fn
 * accepted every member; 0 otherwise -- the caller falls back to a full
 * parser.  Members seen before giving up were passed to fn already. */
int tb__jscan_object(tb_slice_t text, tb__jscan_fn fn, void *ctx);

/* 1 when the member is the string or literal s. */
int tb__jscan_is(const tb__jscan_member_t *m, const char *s);

#endif /* TB_CORE_JSON_SCAN_H */

/*
 * The pieces every JSON codec of wire/ writes and reads objects with
 * (rest.c, service.c): adding a key that may fail, strings that may be
 * null, optional fields with their "not given" values; and the loop that
 * reads an array element by element, which the protobuf decoders share.
 * Internal to wire/; the field readers themselves are core/json.h's.
 */
#ifndef TB_WIRE_CODEC_H
#define TB_WIRE_CODEC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/json.h"
#include "wire/types.h"

/* Adds key: v to o, taking v (freed on failure); returns 0, or -1 when o
 * or v is NULL or the add failed, so that a codec ORs the results. */
int tb__wire_put(json_t *o, const char *key, json_t *v);
/* o, or NULL (o released) when failed. */
json_t *tb__wire_done(json_t *o, int failed);
/* A string, or JSON null for NULL. */
json_t *tb__wire_str_or_null(const char *s);
/* A real, or JSON null for one JSON cannot carry (inf, NaN). */
json_t *tb__wire_real_or_null(double v);
/* {name: value, ...} of n metrics, each value a real or null. */
json_t *tb__wire_metrics_to_json(const tb__wire_metric_t *ms, size_t n);

/* Readers of a field of o into a borrowed C string: required, or NULL
 * when absent or null.  0 or the reader's error. */
int tb__wire_req_str(tb__jctx_t *c, const json_t *o, const char *key, const char **out);
int tb__wire_opt_str(tb__jctx_t *c, const json_t *o, const char *key, const char **out);
/* An optional integer >= -1: -1 when absent or null. */
int tb__wire_opt_int(tb__jctx_t *c, const json_t *o, const char *key, int64_t *out);
/* Reads one member (name: v) of an object into out; ctx is the caller's. */
typedef int (*tb__wire_member_fn)(tb__jctx_t *c, tb__arena_t *a, void *ctx, const char *name,
                                  const json_t *v, void *out);
/* Each member of the object obj (at key of c's path, or at c's path for
 * key NULL; obj NULL: none), read by
 * member into an arena array of n + 1 zeroed elements of size bytes, the
 * member's path ("key.name") named on failure.  0 (*items NULL and *n 0
 * for none), the reader's error or TB_ENOMEM; *items and *n are set only
 * on success. */
int tb__wire_members_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *obj,
                               const char *key, size_t size, tb__wire_member_fn member,
                               void *ctx, void **items, size_t *n);
/* A required number that may be null (read as NaN: what
 * tb__wire_real_or_null wrote for inf or NaN). */
int tb__wire_req_real(tb__jctx_t *c, const json_t *o, const char *key, double *out);
/* The metrics object at key of o (required), in the arena, each value a
 * number or null (NaN); the names are copied to the arena.  0, the
 * reader's error or TB_ENOMEM. */
int tb__wire_metrics_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *o, const char *key,
                               tb__wire_metric_t **out, size_t *n);
/* An optional boolean: absent when absent or null. */
int tb__wire_opt_bool(tb__jctx_t *c, const json_t *o, const char *key, int absent, int *out);

/* Reads element i of the caller's sequence (ctx) into out. */
typedef int (*tb__wire_index_fn)(tb__jctx_t *c, tb__arena_t *a, void *ctx, size_t i,
                                 void *out);
/* n elements, each read by item into an arena array of n + 1 zeroed
 * elements of size bytes, element i's path ("key[i]") named on failure:
 * the loop of every array reader, a JSON array's or a protobuf repeated
 * field's.  Returns 0 (*items set), the reader's error or TB_ENOMEM. */
int tb__wire_items_read(tb__jctx_t *c, tb__arena_t *a, const char *key, size_t n,
                        size_t size, tb__wire_index_fn item, void *ctx, void **items);

/* Reads one element of an array into out. */
typedef int (*tb__wire_item_fn)(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out);
/* The array at key of o, each element read by item into an arena array
 * of n + 1 zeroed elements of size bytes, the element's path ("key[i]")
 * named on failure.  Returns 0 (an optional array left out or null gives
 * *items NULL and *n 0), the reader's error or TB_ENOMEM; *items and *n
 * are set only on success. */
int tb__wire_items_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *o, const char *key,
                             int required, size_t size, tb__wire_item_fn item, void **items,
                             size_t *n);

#endif /* TB_WIRE_CODEC_H */

/*
 * Reading a server's JSON answer through its wire type (wire/rest.h,
 * wire/service.h, wire/op_result.h): the document and the scratch arena
 * behind the wire struct, and the error a refused answer becomes; and
 * the text of a request body a wire encoder made.  Every
 * decoder of a small answer in client/ begins with TB__DECODE_WIRE and
 * ends with tb__answer_end, so a malformed answer is always the server's
 * protocol error naming the field.  Not here: the copies into the public
 * result types, which each decoder makes.
 */
#ifndef TB_CLIENT_ANSWER_H
#define TB_CLIENT_ANSWER_H

#include <jansson.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/json.h"
#include "tinkerbell/error.h"
#include "tinkerbell/future.h"

typedef struct tb__answer_s {
  json_t *doc;
  tb__arena_t arena;
  tb__jctx_t jc;
} tb__answer_t;

/* Parses the answer; a malformed answer is the server's error. */
int tb__answer_begin(tb__answer_t *d, const char *body, size_t len, tb_error_t *err);
void tb__answer_end(tb__answer_t *d);
/* rc of a wire decoder: an answer the wire type refuses is the server's
 * error (category server) with code (TB_EPROTO for the RestClient's
 * answers, TB_EFIELD for the small results the other clients have always
 * refused with it), "<what>: <field path>: <reason>". */
int tb__answer_refused(int rc, tb_error_t *err, int code, const char *what);
int tb__answer_out_of_memory(tb_error_t *err);
/* A malloc'd copy of a decoded string (NULL for NULL); *ok becomes 0
 * when memory runs out, so that a decoder copies every field and checks
 * once. */
char *tb__answer_dup(const char *s, int *ok);

/* Ends d and hands a copy of s (a string of d's document, not NULL) over
 * as the decoder's tb_result_string.  Returns 0 or TB_ENOMEM. */
int tb__answer_string(tb__answer_t *d, const char *s, const tb_result_type_t **type,
                      void **result, tb_error_t *err);

/* Ends d and hands value over as the decoder's result of type t; when ok
 * is 0 (a copy ran out of memory, or value is NULL) value is freed with
 * t->free and the decoder fails with TB_ENOMEM. */
int tb__answer_result(tb__answer_t *d, int ok, const tb_result_type_t *t, void *value,
                      const tb_result_type_t **type, void **result, tb_error_t *err);

/* Replaces out's bytes with the compact text of v, a wire encoder's
 * value, which is consumed (NULL: the encoder ran out of memory).
 * Returns 0 or TB_ENOMEM. */
int tb__body_from_wire(json_t *v, tb__buf_t *out);

/* The head every decoder shares: parse into the tb__answer_t d, read the
 * wire type W as w with CALL, else fail with CODE naming WHAT (returns
 * from the decoder). */
#define TB__DECODE_WIRE_CODE(W, CALL, CODE, WHAT)       \
  tb__answer_t d;                                       \
  W w;                                                  \
  int rc = tb__answer_begin(&d, body, len, err);        \
  if (rc == 0 && (rc = (CALL)) != 0)                    \
    rc = tb__answer_refused(rc, err, CODE, WHAT);       \
  if (rc != 0) {                                        \
    tb__answer_end(&d);                                 \
    return rc;                                          \
  }
#define TB__DECODE_WIRE(W, CALL, WHAT) TB__DECODE_WIRE_CODE(W, CALL, TB_EPROTO, WHAT)
#define TB__DECODE_FIELDS(W, CALL, WHAT) TB__DECODE_WIRE_CODE(W, CALL, TB_EFIELD, WHAT)

#endif /* TB_CLIENT_ANSWER_H */

/*
 * Reading a server's JSON answer through its wire type (see answer.h).
 */
#include "client/answer.h"

#include <stdlib.h>
#include <string.h>

int tb__answer_begin(tb__answer_t *d, const char *body, size_t len, tb_error_t *err) {
  tb__arena_init(&d->arena, 0);
  tb__jctx_init(&d->jc, err);
  d->doc = NULL;
  int rc = tb__json_parse((tb_slice_t){ body, len }, &d->doc, err);
  if (rc != 0)
    err->category = TB_CATEGORY_SERVER;
  return rc;
}

void tb__answer_end(tb__answer_t *d) {
  json_decref(d->doc);
  d->doc = NULL;
  tb__arena_free(&d->arena);
}

int tb__answer_refused(int rc, tb_error_t *err, int code, const char *what) {
  if (rc == TB_ENOMEM)
    return tb__answer_out_of_memory(err);
  char *why = err->message;  /* tb_error_set frees the old message */
  err->message = NULL;
  tb_error_set(err, code, TB_CATEGORY_SERVER, "%s: %s", what, why ? why : "malformed answer");
  free(why);
  return code;
}

int tb__body_from_wire(json_t *v, tb__buf_t *out) {
  size_t len = 0;
  char *text = v != NULL ? tb__json_dump(v, &len) : NULL;
  json_decref(v);
  tb__buf_reset(out);
  int rc = text != NULL ? tb__buf_append(out, text, len) : TB_ENOMEM;
  free(text);
  return rc;
}

char *tb__answer_dup(const char *s, int *ok) {
  char *c = s != NULL ? strdup(s) : NULL;
  if (s != NULL && c == NULL)
    *ok = 0;
  return c;
}

int tb__answer_string(tb__answer_t *d, const char *s, const tb_result_type_t **type,
                      void **result, tb_error_t *err) {
  char *copy = strdup(s);
  return tb__answer_result(d, copy != NULL, &tb_result_string, copy, type, result, err);
}

int tb__answer_result(tb__answer_t *d, int ok, const tb_result_type_t *t, void *value,
                      const tb_result_type_t **type, void **result, tb_error_t *err) {
  tb__answer_end(d);
  if (!ok) {
    t->free(value);
    return tb__answer_out_of_memory(err);
  }
  *type = t;
  *result = value;
  return 0;
}

int tb__answer_out_of_memory(tb_error_t *err) {
  return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
}

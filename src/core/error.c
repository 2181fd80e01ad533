/*
 * Error codes: names and messages for Tinkerbell's table, libuv's for the
 * rest, and the rich tb_error_t used by futures and HTTP failures.
 */
#include "tinkerbell/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/buf.h"

_Static_assert(TB_ENOMEM == UV_ENOMEM, "TB_ENOMEM must alias UV_ENOMEM");
_Static_assert(TB_EINVAL == UV_EINVAL, "TB_EINVAL must alias UV_EINVAL");
_Static_assert(TB_ETIMEDOUT == UV_ETIMEDOUT, "alias");
_Static_assert(TB_ECONNREFUSED == UV_ECONNREFUSED, "alias");
_Static_assert(TB_ECONNRESET == UV_ECONNRESET, "alias");
_Static_assert(TB_ECANCELED == UV_ECANCELED, "alias");
_Static_assert(TB_ENOENT == UV_ENOENT, "alias");
_Static_assert(TB_EEXIST == UV_EEXIST, "alias");
_Static_assert(TB_EIO == UV_EIO, "alias");
_Static_assert((int)TB__ERR_END < (int)UV_ERRNO_MAX,
               "our codes sit below libuv's");

const char *tb_version_string(void) {
  return TB_VERSION_STRING;
}

const char *tb_strerror(int code) {
  switch (code) {
#define TB__ERR_MSG(name, msg) case TB_E##name: return msg;
    TB_ERRNO_MAP(TB__ERR_MSG)
#undef TB__ERR_MSG
    case 0: return "success";
    default: break;
  }
  if (code < 0 && code > UV_ERRNO_MAX - 1)
    return uv_strerror(code);
  return "unknown error";
}

const char *tb_err_name(int code) {
  switch (code) {
#define TB__ERR_NAME(name, msg) case TB_E##name: return "TB_E" #name;
    TB_ERRNO_MAP(TB__ERR_NAME)
#undef TB__ERR_NAME
    case 0: return "OK";
    default: break;
  }
  if (code < 0 && code > UV_ERRNO_MAX - 1)
    return uv_err_name(code);
  return "UNKNOWN";
}

const char *tb_category_name(tb_category_t c) {
  switch (c) {
    case TB_CATEGORY_NONE: return "none";
    case TB_CATEGORY_USER: return "user";
    case TB_CATEGORY_SERVER: return "server";
    case TB_CATEGORY_NETWORK: return "network";
    case TB_CATEGORY_TIMEOUT: return "timeout";
    case TB_CATEGORY_CANCELLED: return "cancelled";
  }
  return "unknown";
}

int tb_error_set(tb_error_t *e, int code, tb_category_t category,
                 const char *fmt, ...) {
  if (e == NULL)
    return code;
  free(e->message);
  e->message = NULL;
  e->code = code;
  e->category = category;
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    /* On allocation failure the message is simply absent; the code and
     * category still describe the failure. */
    e->message = tb__vasprintf(fmt, ap);
    va_end(ap);
  }
  return code;
}

int tb_error_set_request_id(tb_error_t *e, const char *request_id) {
  char *copy = NULL;
  if (request_id != NULL && (copy = strdup(request_id)) == NULL)
    return TB_ENOMEM;
  free(e->request_id);
  e->request_id = copy;
  return 0;
}

int tb_error_copy(tb_error_t *dst, const tb_error_t *src) {
  tb_error_t tmp = *src;
  tmp.message = NULL;
  tmp.request_id = NULL;
  if (src->message != NULL && (tmp.message = strdup(src->message)) == NULL)
    return TB_ENOMEM;
  if (src->request_id != NULL &&
      (tmp.request_id = strdup(src->request_id)) == NULL) {
    free(tmp.message);
    return TB_ENOMEM;
  }
  tb_error_clear(dst);
  *dst = tmp;
  return 0;
}

void tb_error_clear(tb_error_t *e) {
  if (e == NULL)
    return;
  free(e->message);
  free(e->request_id);
  memset(e, 0, sizeof(*e));
}

const char *tb_error_message(const tb_error_t *e) {
  if (e->message != NULL)
    return e->message;
  return tb_strerror(e->code);
}

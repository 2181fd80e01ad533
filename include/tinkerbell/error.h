/*
 * Error codes and rich errors.
 *
 * Every fallible function returns 0 or a negative int.  libuv's codes (UV_E*,
 * all above -4096) pass through unchanged; Tinkerbell's own codes live below
 * -5000 in the TB_ERRNO_MAP table.  A few TB_ names alias libuv codes so that
 * library code can say TB_ENOMEM without including uv.h.
 *
 * Failures that need more than a code -- a failed future, an HTTP error from
 * a server -- carry a tb_error_t: code, category, HTTP status, the server's
 * message and the request id.
 */
#ifndef TINKERBELL_ERROR_H
#define TINKERBELL_ERROR_H

#include "tinkerbell/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Aliases of libuv codes (values from uv-errno on Linux, checked at build
 * time in src/core/error.c). */
#define TB_ENOMEM (-12)
#define TB_EINVAL (-22)
#define TB_ETIMEDOUT (-110)
#define TB_ECONNREFUSED (-111)
#define TB_ECONNRESET (-104)
#define TB_ECANCELED (-125)
#define TB_ENOENT (-2)
#define TB_EEXIST (-17)
#define TB_EIO (-5)

/* Tinkerbell's own codes: XX(name, message). */
#define TB_ERRNO_MAP(XX)                                                    \
  XX(PROTO, "protocol error (malformed HTTP message)")                     \
  XX(HTTP, "the server answered with an error status")                     \
  XX(DNS, "host name could not be resolved")                               \
  XX(CONNECT_TIMEOUT, "connection attempt timed out")                      \
  XX(CLOSED, "connection closed before the response was complete")         \
  XX(TOOLARGE, "message exceeds the configured size limit")                \
  XX(URL, "invalid URL")                                                   \
  XX(JSON, "invalid JSON")                                                 \
  XX(FIELD, "invalid or missing field")                                    \
  XX(NOTFOUND, "not found")                                                \
  XX(EXPIRED, "expired")                                                   \
  XX(CORRUPT, "corrupt or truncated file")                                 \
  XX(SHAPE, "tensor shape mismatch")                                       \
  XX(BUSY, "resource busy")                                                \
  XX(CLOSING, "object is closing")                                         \
  XX(USER, "request rejected by the server (user error)")                  \
  XX(SERVER, "the server failed the request (server error)")               \
  XX(NESTED, "blocking wait called from inside a callback of its loop")    \
  XX(UNSUPPORTED, "not supported")                                         \
  XX(TLS, "TLS handshake or certificate verification failed")             \
  XX(NONFINITE, "a model's outputs are not finite (NaN or infinity)")      \

typedef enum {
  TB__ERR_BASE = -5000,
#define TB__ERR_ENUM(name, msg) TB_E##name,
  /* TB_EPROTO = -4999, ... counting up from the base. */
  TB_ERRNO_MAP(TB__ERR_ENUM)
#undef TB__ERR_ENUM
  TB__ERR_END
} tb_errno_t;

/* A static description of any code (ours or libuv's).  Never NULL. */
TB_EXTERN const char *tb_strerror(int code);
/* The symbolic name: "TB_EPROTO", "ECONNREFUSED", ...  Never NULL. */
TB_EXTERN const char *tb_err_name(int code);

typedef enum {
  TB_CATEGORY_NONE = 0,
  TB_CATEGORY_USER,      /* the request was wrong: do not retry */
  TB_CATEGORY_SERVER,    /* the server failed: may be retried */
  TB_CATEGORY_NETWORK,   /* transport: refused, reset, DNS, protocol */
  TB_CATEGORY_TIMEOUT,   /* a deadline passed */
  TB_CATEGORY_CANCELLED  /* the caller cancelled */
} tb_category_t;

/* "none", "user", "server", "network", "timeout" or "cancelled" ("unknown"
 * for a value outside the enum). */
TB_EXTERN const char *tb_category_name(tb_category_t c);

/* A failure with everything a caller needs to act on it.  Strings are owned
 * by the error and released by tb_error_clear(); a zeroed struct is empty. */
typedef struct tb_error_s {
  int code;               /* 0 when empty */
  tb_category_t category;
  int http_status;        /* 0 when no HTTP answer was involved */
  char *message;          /* NULL or a NUL-terminated message */
  char *request_id;       /* NULL or the server-side request id */
} tb_error_t;

/* Sets code, category and a printf-formatted message, replacing what was
 * there.  Returns code, so `return tb_error_set(e, ...)` reads naturally.
 * Safe with e == NULL (only the code is returned). */
TB_EXTERN int tb_error_set(tb_error_t *e, int code, tb_category_t category,
                           const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
TB_EXTERN int tb_error_set_request_id(tb_error_t *e, const char *request_id);
/* Deep copy; returns 0 or TB_ENOMEM. */
TB_EXTERN int tb_error_copy(tb_error_t *dst, const tb_error_t *src);
TB_EXTERN void tb_error_clear(tb_error_t *e);
/* The message when there is one, else tb_strerror(code). */
TB_EXTERN const char *tb_error_message(const tb_error_t *e);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_ERROR_H */

/*
 * What the HTTP server and the HTTP client share: header fields, status
 * reason phrases and the limits both sides enforce.  The server lives in
 * server*.c and router.c, the client in client*.c; both parse with llhttp.
 */
#ifndef TB_HTTP_HTTP_H
#define TB_HTTP_HTTP_H

#include <stddef.h>

#include "tinkerbell/common.h"

/* One header field.  Slices point into memory owned by the message (the
 * request's arena on the server, the response on the client). */
typedef struct tb__http_header_s {
  tb_slice_t name;
  tb_slice_t value;
} tb__http_header_t;

#define TB_HTTP_MAX_HEADER_BYTES (16u * 1024u)   /* larger -> 431 */
#define TB_HTTP_MAX_URL_BYTES (8u * 1024u)       /* larger -> 414 */
#define TB_HTTP_MAX_HEADERS 100
#define TB_HTTP_DEFAULT_MAX_BODY ((size_t)64 * 1024 * 1024) /* larger -> 413 */
/* The server's defaults for what all connections together may hold (see
 * tb__http_server_options_t). */
#define TB_HTTP_DEFAULT_MAX_BODY_MEMORY ((size_t)512 * 1024 * 1024)
#define TB_HTTP_DEFAULT_REQUEST_TIMEOUT_MS 120000u
#define TB_HTTP_DEFAULT_MAX_CONNECTIONS 1024u

/* "OK", "Not Found", ...; "Unknown" for codes without a phrase. */
const char *tb__http_status_text(int status);

/* Finds a header by case-insensitive name; NULL when absent. */
const tb__http_header_t *tb__http_find_header(const tb__http_header_t *headers,
                                             size_t n, const char *name);

#endif /* TB_HTTP_HTTP_H */

/*
 * Absolute http:// and https:// URLs as the HTTP client needs them: the
 * origin (scheme, host, port) that picks a connection pool, and the
 * request target (path and query) that goes on the request line.
 *
 * Parsing does not copy: every slice of a tb__url_t points into the string
 * that was parsed, which must outlive the tb__url_t.  Resolution of a
 * reference (a redirect's Location) writes a new absolute URL into a
 * buffer, which is then parsed in turn.
 *
 * Non-goals: other schemes, user information ("user:pass@host" is
 * rejected rather than silently sent in clear), internationalised names
 * (the host must already be ASCII), percent-decoding (the target is sent
 * exactly as given).
 */
#ifndef TB_HTTP_URL_H
#define TB_HTTP_URL_H

#include <stdint.h>

#include "core/buf.h"
#include "tinkerbell/common.h"

typedef struct tb__url_s {
  tb_slice_t scheme;  /* "http" or "https", as written (any case) */
  tb_slice_t host;    /* a name or address; an IPv6 literal without [] */
  tb_slice_t path;    /* from the first '/' up to '?' or '#'; may be empty */
  tb_slice_t query;   /* from '?' (included) up to '#'; may be empty */
  uint16_t port;      /* the explicit port, else 80 or 443 */
  unsigned tls : 1;   /* https */
  unsigned ipv6 : 1;  /* the host was a bracketed IPv6 literal */
  unsigned explicit_port : 1;
} tb__url_t;

/* Parses an absolute URL.  Returns 0 or TB_EURL (unknown scheme, missing
 * or malformed host, bad port, user information, a byte that may not
 * appear in a request target, longer than TB_HTTP_MAX_URL_BYTES).  The
 * fragment, if any, is dropped. */
int tb__url_parse(tb__url_t *u, const char *s, size_t len);

/* Appends the request target: the path ("/" when empty) and the query. */
int tb__url_append_target(const tb__url_t *u, tb__buf_t *out);

/* Appends the Host header's value: the host ([] around IPv6) and ":port"
 * unless the port is the scheme's default. */
int tb__url_append_authority(const tb__url_t *u, tb__buf_t *out);

/* 1 when both URLs name the same origin (scheme, host case-insensitive,
 * port). */
int tb__url_same_origin(const tb__url_t *a, const tb__url_t *b);

/* Appends to out the absolute URL that the reference `ref` names relative
 * to `base` (RFC 3986 section 5.2): an absolute URL, a network-path
 * reference ("//host/x"), an absolute path ("/x"), a query ("?q") or a
 * relative path ("x", "../x"), with dot segments removed.  Returns 0,
 * TB_EURL for a reference that cannot be resolved, or TB_ENOMEM.  The
 * result is not validated; parse it with tb__url_parse. */
int tb__url_resolve(const tb__url_t *base, tb_slice_t ref, tb__buf_t *out);

#endif /* TB_HTTP_URL_H */

/*
 * URL parsing and reference resolution for the HTTP client (see url.h).
 *
 * The parser is strict on purpose: whatever it accepts goes onto a request
 * line or into a Host header byte for byte, so a control character, a
 * space or a non-ASCII byte is an error here rather than a malformed
 * request later.
 */
#include "http/url.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "http/http.h"

static int is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Letters, digits, '-', '.', '_' and '~': what DNS names and IPv4
 * addresses are made of. */
static int is_host_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' ||
         c == '~';
}

/* Visible ASCII: what may appear in a request target. */
static int is_target_char(char c) {
  unsigned char u = (unsigned char)c;
  return u > 0x20 && u < 0x7f;
}

static int parse_port(const char *p, size_t n, uint16_t *port) {
  if (n == 0 || n > 5)
    return TB_EURL;
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!is_digit(p[i]))
      return TB_EURL;
    v = v * 10 + (unsigned)(p[i] - '0');
  }
  if (v == 0 || v > 65535)
    return TB_EURL;
  *port = (uint16_t)v;
  return 0;
}

static int valid_ipv6(const char *p, size_t n) {
  char tmp[64];
  unsigned char addr[16];
  if (n == 0 || n >= sizeof(tmp))
    return 0;
  memcpy(tmp, p, n);
  tmp[n] = '\0';
  return uv_inet_pton(AF_INET6, tmp, addr) == 0;
}

int tb__url_parse(tb__url_t *u, const char *s, size_t len) {
  memset(u, 0, sizeof(*u));
  if (s == NULL || len == 0 || len > TB_HTTP_MAX_URL_BYTES)
    return TB_EURL;

  /* scheme "://" */
  size_t i = 0;
  while (i < len && is_alpha(s[i]))
    i++;
  if (i == 0 || len - i < 3 || memcmp(s + i, "://", 3) != 0)
    return TB_EURL;
  u->scheme = (tb_slice_t){ s, i };
  if (i == 4 && strncasecmp(s, "http", 4) == 0) {
    u->port = 80;
  } else if (i == 5 && strncasecmp(s, "https", 5) == 0) {
    u->tls = 1;
    u->port = 443;
  } else {
    return TB_EURL;
  }
  i += 3;

  /* authority: host [":" port], up to the path, query or fragment */
  size_t a = i, a_end = i;
  while (a_end < len && s[a_end] != '/' && s[a_end] != '?' && s[a_end] != '#')
    a_end++;
  if (memchr(s + a, '@', a_end - a) != NULL)
    return TB_EURL; /* user information is not supported */
  size_t h_end;
  if (a < a_end && s[a] == '[') {
    const char *close = memchr(s + a, ']', a_end - a);
    if (close == NULL)
      return TB_EURL;
    size_t c = (size_t)(close - s);
    if (!valid_ipv6(s + a + 1, c - a - 1))
      return TB_EURL;
    u->host = (tb_slice_t){ s + a + 1, c - a - 1 };
    u->ipv6 = 1;
    h_end = c + 1;
    if (h_end < a_end && s[h_end] != ':')
      return TB_EURL;
  } else {
    h_end = a;
    while (h_end < a_end && s[h_end] != ':') {
      if (!is_host_char(s[h_end]))
        return TB_EURL;
      h_end++;
    }
    if (h_end == a)
      return TB_EURL;
    u->host = (tb_slice_t){ s + a, h_end - a };
  }
  if (h_end < a_end) {
    /* ":" then the port; an empty port means the default (RFC 3986). */
    size_t p = h_end + 1;
    if (p < a_end) {
      if (parse_port(s + p, a_end - p, &u->port) != 0)
        return TB_EURL;
      u->explicit_port = 1;
    }
  }

  /* path, query, fragment */
  size_t q = a_end;
  while (q < len && s[q] != '?' && s[q] != '#')
    q++;
  u->path = (tb_slice_t){ s + a_end, q - a_end };
  size_t f = q;
  while (f < len && s[f] != '#')
    f++;
  u->query = (tb_slice_t){ s + q, f - q };
  for (size_t k = a_end; k < len; k++)
    if (!is_target_char(s[k]))
      return TB_EURL;
  return 0;
}

int tb__url_append_target(const tb__url_t *u, tb__buf_t *out) {
  int rc;
  if (u->path.len == 0)
    rc = tb__buf_append(out, "/", 1);
  else
    rc = tb__buf_append(out, u->path.base, u->path.len);
  if (rc == 0)
    rc = tb__buf_append(out, u->query.base, u->query.len);
  return rc;
}

int tb__url_append_authority(const tb__url_t *u, tb__buf_t *out) {
  int rc = 0;
  if (u->ipv6)
    rc = tb__buf_append(out, "[", 1);
  if (rc == 0)
    rc = tb__buf_append(out, u->host.base, u->host.len);
  if (rc == 0 && u->ipv6)
    rc = tb__buf_append(out, "]", 1);
  if (rc == 0 && u->port != (u->tls ? 443 : 80))
    rc = tb__buf_printf(out, ":%u", (unsigned)u->port);
  return rc;
}

int tb__url_same_origin(const tb__url_t *a, const tb__url_t *b) {
  return a->tls == b->tls && a->port == b->port &&
         a->host.len == b->host.len &&
         strncasecmp(a->host.base, b->host.base, a->host.len) == 0;
}

/* Appends `path` to out with its dot segments removed (RFC 3986 section
 * 5.2.4).  Segments are removed from out no further back than out->len at
 * entry, so an excess of ".." stops at the root. */
static int append_without_dots(tb__buf_t *out, const char *path, size_t n) {
  char *in = tb__strndup(path, n);
  if (in == NULL)
    return TB_ENOMEM;
  size_t root = out->len;
  char *p = in, *end = in + n;
  int rc = 0;
  while (p < end && rc == 0) {
    size_t left = (size_t)(end - p);
    if (left >= 3 && memcmp(p, "../", 3) == 0) {
      p += 3;
    } else if (left >= 2 && memcmp(p, "./", 2) == 0) {
      p += 2;
    } else if (left >= 3 && memcmp(p, "/./", 3) == 0) {
      p += 2;
    } else if (left == 2 && memcmp(p, "/.", 2) == 0) {
      p += 1;
      *p = '/';
    } else if ((left >= 4 && memcmp(p, "/../", 4) == 0) ||
               (left == 3 && memcmp(p, "/..", 3) == 0)) {
      if (left == 3) {
        p += 2;
        *p = '/';
      } else {
        p += 3;
      }
      while (out->len > root && out->base[out->len - 1] != '/')
        out->len--;
      if (out->len > root)
        out->len--; /* the '/' that began the removed segment */
    } else if ((left == 1 && p[0] == '.') ||
               (left == 2 && memcmp(p, "..", 2) == 0)) {
      p = end;
    } else {
      char *seg = p + (p[0] == '/' ? 1 : 0);
      while (seg < end && *seg != '/')
        seg++;
      rc = tb__buf_append(out, p, (size_t)(seg - p));
      p = seg;
    }
  }
  free(in);
  return rc;
}

/* A reference starts with a scheme when letters, digits, '+', '-' or '.'
 * after a first letter reach a ':' (RFC 3986 section 3.1). */
static int has_scheme(tb_slice_t r) {
  if (r.len == 0 || !is_alpha(r.base[0]))
    return 0;
  for (size_t i = 1; i < r.len; i++) {
    char c = r.base[i];
    if (c == ':')
      return 1;
    if (!(is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.'))
      return 0;
  }
  return 0;
}

int tb__url_resolve(const tb__url_t *base, tb_slice_t ref, tb__buf_t *out) {
  if (ref.len > TB_HTTP_MAX_URL_BYTES)
    return TB_EURL;
  /* The fragment never travels. */
  const char *hash = ref.len ? memchr(ref.base, '#', ref.len) : NULL;
  if (hash != NULL)
    ref.len = (size_t)(hash - ref.base);
  if (has_scheme(ref))
    return tb__buf_append(out, ref.base, ref.len);
  int rc = tb__buf_append(out, base->scheme.base, base->scheme.len);
  if (rc != 0)
    return rc;
  if (ref.len >= 2 && ref.base[0] == '/' && ref.base[1] == '/') {
    rc = tb__buf_append(out, ":", 1);
    return rc ? rc : tb__buf_append(out, ref.base, ref.len);
  }
  rc = tb__buf_append(out, "://", 3);
  if (rc == 0)
    rc = tb__url_append_authority(base, out);
  if (rc != 0)
    return rc;

  const char *qm = ref.len ? memchr(ref.base, '?', ref.len) : NULL;
  size_t rpath_len = qm ? (size_t)(qm - ref.base) : ref.len;
  tb_slice_t rquery = { ref.base + rpath_len, ref.len - rpath_len };

  if (rpath_len == 0) {
    /* Same path; the reference's query if it has one, else the base's. */
    rc = tb__buf_append(out, base->path.len ? base->path.base : "/",
                        base->path.len ? base->path.len : 1);
    if (rc == 0)
      rc = qm ? tb__buf_append(out, rquery.base, rquery.len)
              : tb__buf_append(out, base->query.base, base->query.len);
    return rc;
  }
  if (ref.base[0] == '/') {
    rc = append_without_dots(out, ref.base, rpath_len);
  } else {
    /* Merge: the base path up to its last '/', then the reference. */
    tb__buf_t merged = TB_BUF_INIT;
    size_t keep = base->path.len;
    while (keep > 0 && base->path.base[keep - 1] != '/')
      keep--;
    rc = keep ? tb__buf_append(&merged, base->path.base, keep)
              : tb__buf_append(&merged, "/", 1);
    if (rc == 0)
      rc = tb__buf_append(&merged, ref.base, rpath_len);
    if (rc == 0)
      rc = append_without_dots(out, merged.base, merged.len);
    tb__buf_free(&merged);
  }
  if (rc == 0)
    rc = tb__buf_append(out, rquery.base, rquery.len);
  return rc;
}

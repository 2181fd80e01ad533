/*
 * Which dialect a request on a path both dialects serve speaks
 * (internal.h, tb__dialect_of): the server's dispatch picks the handler
 * of a TB__DIALECT_BOTH row of the route table with it.
 */
#include "server/internal.h"

#include <string.h>
#include <strings.h>

/* The dialect is read off the body's top-level keys with a scan that
 * builds nothing: the route's handler parses the body anyway, and a body
 * can be megabytes.  The scan assumes valid JSON; on anything else it
 * gives up, and whichever handler gets the body answers 400. */

static const char *skip_ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    p++;
  return p;
}

/* p at '"': past the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *e) {
  for (p++; p < e; p++) {
    if (*p == '\\')
      p++;
    else if (*p == '"')
      return p + 1;
  }
  return NULL;
}

/* Past one value (string, container or scalar), or NULL. */
static const char *skip_value(const char *p, const char *e) {
  if (p < e && *p == '"')
    return skip_string(p, e);
  if (p < e && (*p == '{' || *p == '[')) {
    size_t depth = 0;
    while (p < e) {
      if (*p == '"') {
        if ((p = skip_string(p, e)) == NULL)
          return NULL;
        continue;
      }
      if (*p == '{' || *p == '[')
        depth++;
      else if ((*p == '}' || *p == ']') && --depth == 0)
        return p + 1;
      p++;
    }
    return NULL;
  }
  const char *start = p;
  while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
         *p != '\n' && *p != '\r')
    p++;
  return p > start ? p : NULL;
}

/* Whether a top-level key (as sent, escapes not decoded) and the start of
 * its value mark a Tinker body: fields only the Tinker dialect's bodies
 * have, or a prompt that is a ModelInput object (a Tinkerbell prompt is a
 * string). */
static int tinker_key(const char *k, size_t n, char value_start) {
  static const char *const tinker_only[] = { "type", "seq_id", "forward_backward_input",
                                             "forward_input", "session_id",
                                             "sampling_session_id" };
  for (size_t i = 0; i < sizeof(tinker_only) / sizeof(tinker_only[0]); i++)
    if (strlen(tinker_only[i]) == n && memcmp(tinker_only[i], k, n) == 0)
      return 1;
  return n == 6 && memcmp(k, "prompt", 6) == 0 && value_start == '{';
}

tb__dialect_t tb__dialect_of(const tb__http_request_t *req) {
  static const char proto[] = "application/x-protobuf";
  const tb__http_header_t *ct = tb__http_request_header(req, "Content-Type");
  if (ct != NULL && ct->value.len >= sizeof(proto) - 1 &&
      strncasecmp(ct->value.base, proto, sizeof(proto) - 1) == 0)
    return TB__DIALECT_TINKER;
  const char *p = req->body.base, *e = req->body.base + req->body.len;
  p = skip_ws(p, e);
  if (p == e || *p != '{')
    return TB__DIALECT_TINKER;  /* no object: the Tinker route says so */
  p = skip_ws(p + 1, e);
  if (p < e && *p == '}')
    return TB__DIALECT_TINKERBELL;
  while (p < e && *p == '"') {
    const char *k = p + 1;
    if ((p = skip_string(p, e)) == NULL)
      break;
    size_t n = (size_t)(p - 1 - k);
    p = skip_ws(p, e);
    if (p == e || *p != ':')
      break;
    p = skip_ws(p + 1, e);
    if (p == e)
      break;
    if (tinker_key(k, n, *p))
      return TB__DIALECT_TINKER;
    if ((p = skip_value(p, e)) == NULL)
      break;
    p = skip_ws(p, e);
    if (p < e && *p == '}')
      return TB__DIALECT_TINKERBELL;
    if (p == e || *p != ',')
      break;
    p = skip_ws(p + 1, e);
  }
  return TB__DIALECT_TINKER;  /* malformed: the Tinker route answers 400 */
}

/*
 * Error bodies and JWT claims (see error_body.h).
 */
#include "wire/error_body.h"

#include <stddef.h>
#include <string.h>

#include "wire/codec.h"

/* A string member of v (NULL: absent, or of another type). */
static const char *str(const json_t *v, const char *key) {
  return json_string_value(json_object_get(v, key));
}

/* Adds key: s when s is given. */
static int put_opt(json_t *o, const char *key, const char *s) {
  return s != NULL ? tb__wire_put(o, key, json_string(s)) : 0;
}

json_t *tb__wire_error_body_to_json(const tb__wire_error_body_t *r) {
  json_t *o = json_object();
  int bad = tb__wire_put(o, "error", json_string(r->message ? r->message : ""));
  bad |= put_opt(o, "category", r->category);
  bad |= put_opt(o, "request_id", r->request_id);
  return tb__wire_done(o, bad);
}

int tb__wire_error_body_from_json(const json_t *v, tb__wire_error_body_t *out) {
  memset(out, 0, sizeof(*out));
  if (!json_is_object(v))
    return -1;
  static const char *const keys[] = { "error", "message", "detail" };
  for (size_t i = 0; i < 3 && out->message == NULL; i++) {
    const json_t *m = json_object_get(v, keys[i]);
    out->message = json_is_object(m) ? str(m, "message") : json_string_value(m);
  }
  out->category = str(v, "category");
  out->request_id = str(v, "request_id");
  return 0;
}

json_t *tb__wire_jwt_claims_to_json(const tb__wire_jwt_claims_t *r) {
  json_t *o = json_object();
  int bad = o == NULL;
  bad |= put_opt(o, "iss", r->iss);
  bad |= put_opt(o, "sub", r->sub);
  bad |= put_opt(o, "email", r->email);
  return tb__wire_done(o, bad);
}

int tb__wire_jwt_claims_from_json(const json_t *v, tb__wire_jwt_claims_t *out) {
  memset(out, 0, sizeof(*out));
  if (!json_is_object(v))
    return -1;
  out->iss = str(v, "iss");
  out->sub = str(v, "sub");
  out->email = str(v, "email");
  return 0;
}

/*
 * The bodies that say why a request failed, as the client reads them from
 * the servers it talks to: this server's {"error", "category"}, the
 * hosted service's {"message"} or {"error": {"message", "category"}},
 * FastAPI's {"detail"}, each with a "request_id" a service may add; and
 * the claims of a JWT API key ({"iss", "sub", "email"?}), which name the
 * key's user.  Lenient, as a reader of other services' failures must be:
 * a field of another type reads as absent.  The server writes its own
 * error bodies in one place (server.c, through tb__json_escape, valid
 * JSON whatever bytes a request put into the message); to_json writes the
 * same shape.
 */
#ifndef TB_WIRE_ERROR_BODY_H
#define TB_WIRE_ERROR_BODY_H

#include <jansson.h>

/* The message (from "error", "message" or "detail", in that order, as a
 * string or an object's "message"), the top level's "category" and
 * "request_id"; NULL: absent.  Strings are the
 * document's. */
typedef struct tb__wire_error_body_s {
  const char *message, *category, *request_id;
} tb__wire_error_body_t;

/* {"iss", "sub", "email"?} of a JWT's payload; NULL: absent. */
typedef struct tb__wire_jwt_claims_s {
  const char *iss, *sub, *email;
} tb__wire_jwt_claims_t;

/* {"error", "category"?, "request_id"?}: a new reference, or NULL when
 * memory runs out. */
json_t *tb__wire_error_body_to_json(const tb__wire_error_body_t *r);
json_t *tb__wire_jwt_claims_to_json(const tb__wire_jwt_claims_t *r);
/* Read from v; 0, or -1 when v is no object (out: every field NULL). */
int tb__wire_error_body_from_json(const json_t *v, tb__wire_error_body_t *out);
int tb__wire_jwt_claims_from_json(const json_t *v, tb__wire_jwt_claims_t *out);

#endif /* TB_WIRE_ERROR_BODY_H */

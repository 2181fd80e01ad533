/*
 * whoami (tinkerbell/rest_client.h): the claims of a JWT API key, read
 * without a request.  The future still completes on a later loop turn, on
 * an alarm of the runtime (which the ServiceClient's close waits for).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client/clients.h"
#include "core/buf.h"
#include "tinkerbell/rest_client.h"
#include "wire/error_body.h"

static void whoami_free(void *p) {
  tb_whoami_free(p);
}

const tb_result_type_t tb_result_whoami = { "whoami", whoami_free };

void tb_whoami_free(tb_whoami_t *w) {
  if (w == NULL)
    return;
  free(w->user_urn);
  free(w->email);
  free(w);
}

/* base64url without padding (RFC 4648 §5) into a NUL-terminated copy. */
static char *base64url_decode(const char *s, size_t n) {
  char *out = malloc(n * 3 / 4 + 4);
  if (out == NULL)
    return NULL;
  uint32_t acc = 0;
  int bits = 0;
  size_t len = 0;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)s[i], v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '-')
      v = 62;
    else if (c == '_')
      v = 63;
    else if (c == '=')
      break;
    else {
      free(out);
      return NULL;
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[len++] = (char)((acc >> bits) & 0xff);
    }
  }
  out[len] = '\0';
  return out;
}

/* The claims of key, or a failure in err. */
static tb_whoami_t *read_claims(const char *key, tb_error_t *err) {
  const char *dot1 = key ? strchr(key, '.') : NULL;
  const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
  if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL) {
    tb_error_set(err, TB_EUNSUPPORTED, TB_CATEGORY_USER,
                 "whoami: the API key is not a JWT; plain API keys name no user");
    return NULL;
  }
  char *payload = base64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1));
  json_t *claims = payload ? json_loads(payload, 0, NULL) : NULL;
  free(payload);
  tb__wire_jwt_claims_t cl;
  int is_object = tb__wire_jwt_claims_from_json(claims, &cl) == 0;
  const char *iss = cl.iss, *sub = cl.sub, *email = cl.email;
  tb_whoami_t *w = NULL;
  if (!is_object) {
    tb_error_set(err, TB_EUNSUPPORTED, TB_CATEGORY_USER,
                 "whoami: the API key's JWT payload is not a JSON object");
  } else if (iss == NULL || strncmp(iss, "passport-", 9) != 0) {
    tb_error_set(err, TB_EUNSUPPORTED, TB_CATEGORY_USER,
                 "whoami: the API key's JWT is not issued by passport-* (iss: %s)",
                 iss ? iss : "none");
  } else if (sub == NULL) {
    tb_error_set(err, TB_EFIELD, TB_CATEGORY_USER, "whoami: the API key's JWT has no sub");
  } else if ((w = calloc(1, sizeof(*w))) == NULL ||
             (w->user_urn = tb__strndup(sub, strlen(sub))) == NULL ||
             (email != NULL && (w->email = tb__strndup(email, strlen(email))) == NULL)) {
    tb_whoami_free(w);
    w = NULL;
    tb_error_set(err, TB_ENOMEM, TB_CATEGORY_USER, "out of memory");
  }
  json_decref(claims);
  return w;
}

typedef struct whoami_op_s {
  tb__alarm_t alarm;
  tb__rt_t *rt;
  tb_future_t *f;
  tb_whoami_t *result;
  tb_error_t err;
  int cancelled;
} whoami_op_t;

static void on_alarm(tb__alarm_t *a) {
  whoami_op_t *op = a->data;
  tb__rt_t *rt = op->rt;
  tb__alarm_unreserve(rt, 1);
  if (op->cancelled) {
    tb_whoami_free(op->result);
    tb_error_clear(&op->err);
    tb_error_set(&op->err, TB_ECANCELED, TB_CATEGORY_CANCELLED, "whoami: cancelled");
    tb__client_future_fail(op->f, &op->err);
  } else if (op->result != NULL) {
    tb__client_future_resolve(op->f, &tb_result_whoami, op->result);
  } else {
    tb__client_future_fail(op->f, &op->err);
  }
  tb_error_clear(&op->err);
  free(op);
  tb__rt_check_closed(rt);
}

/* The alarm is due at once: a cancel only changes how it ends. */
static void on_cancel(tb_future_t *f) {
  whoami_op_t *op = f->driver_;
  op->cancelled = 1;
}

int tb_rest_client_whoami(tb_rest_client_t *rc, tb_future_t **out) {
  if (rc == NULL || out == NULL)
    return TB_EINVAL;
  *out = NULL;
  tb__rt_t *rt = tb__service_rt(rc->service);
  if (rt == NULL)
    return TB_ECLOSING;
  whoami_op_t *op = calloc(1, sizeof(*op));
  tb_future_t *f = op ? tb__client_future_new(rt->loop) : NULL;
  if (f == NULL || tb__alarm_reserve(rt, 1) != 0) {
    free(f);
    free(op);
    return TB_ENOMEM;
  }
  op->rt = rt;
  op->f = f;
  op->result = read_claims(rt->cfg.api_key, &op->err);
  tb__alarm_init(&op->alarm, on_alarm, op);
  tb__alarm_start(rt, &op->alarm, 0);
  tb__client_future_set_driver(f, on_cancel, op);
  *out = f;
  return 0;
}

int tb_rest_client_whoami_sync(tb_rest_client_t *rc, tb_whoami_t **who, tb_error_t *err) {
  if (tb__client_check_nested(rc ? rc->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f = NULL;
  int ret = tb_rest_client_whoami(rc, &f);
  if (ret != 0)
    return tb__client_refused(err, ret, "whoami");
  return tb__client_wait_take(tb__service_rt(rc->service), f, &tb_result_whoami, (void **)who,
                              err);
}

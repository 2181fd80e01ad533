/*
 * Users, API keys and the per-user submission rate limit.
 *
 * A user is created for every name in the API keys file (or the single
 * user "local" when there is none) and lives as long as the server, so
 * the rest of the server compares owners by pointer.  Keys are looked up
 * by a linear scan with a constant-time comparison: a deployment has a
 * handful of keys, and the scan does not tell by its timing how much of a
 * key matched.
 *
 * The rate limit is a token bucket per user: rate_limit_rps tokens per
 * second up to burst; a submission takes one.  The training routes ask
 * before they create a future (tb__server_rate_limited in internal.h).
 */
#ifndef TB_SERVER_AUTH_H
#define TB_SERVER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "tinkerbell/common.h"

typedef struct tb__user_s tb__user_t;

struct tb__user_s {
  char *name;             /* NUL-terminated */
  size_t name_len;
  double tokens;          /* the rate limit's bucket */
  uint64_t refilled_ms;   /* loop time of the last refill */
  unsigned n_models;      /* models loaded, kept by the training part */
  uint64_t n_rate_limited;
  tb__user_t *next;
};

typedef struct tb__api_key_s {
  char *key;
  size_t len;
  tb__user_t *user;
} tb__api_key_t;

typedef struct tb__auth_s {
  int enabled;            /* a keys file was given */
  tb__api_key_t *keys;
  size_t n_keys, cap_keys;
  tb__user_t *users;      /* every user, in order of first appearance */
  size_t n_users;
  tb__user_t *local;      /* the user of every request without auth */
  double rps;             /* 0: no rate limit */
  double burst;
} tb__auth_t;

/* Loads keys_file (NULL: no auth).  Returns 0, TB_ENOENT/TB_EIO (cannot
 * read), TB_ECORRUPT (msg names the line) or TB_ENOMEM.  On error the
 * struct holds nothing. */
int tb__auth_init(tb__auth_t *a, const char *keys_file, double rps, double burst,
                  char *msg, size_t msg_cap);
/* The same from the file's text (tests use it directly). */
int tb__auth_init_text(tb__auth_t *a, const char *text, size_t len, double rps,
                       double burst, char *msg, size_t msg_cap);
void tb__auth_free(tb__auth_t *a);

/* The credential a request carries: X-API-Key, else "Authorization:
 * Bearer <key>".  Returns 1 with key set, or 0 when there is none. */
int tb__auth_request_key(const tb__http_request_t *req, tb_slice_t *key);
/* The key's user, or NULL. */
tb__user_t *tb__auth_lookup(const tb__auth_t *a, tb_slice_t key);
/* A user by name, or NULL. */
tb__user_t *tb__auth_user(const tb__auth_t *a, const char *name);

/* Takes one token from u's bucket at loop time now_ms.  Returns 0, or
 * TB_EBUSY with *retry_after_ms set to when a token will be there. */
int tb__auth_take(tb__auth_t *a, tb__user_t *u, uint64_t now_ms,
                  uint64_t *retry_after_ms);

#endif /* TB_SERVER_AUTH_H */

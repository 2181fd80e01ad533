/*
 * API keys, users and token buckets (see auth.h).
 *
 * The keys file is read once, synchronously, by tb_server_init: that runs
 * before the server takes requests, and the file is a few lines.
 */
#include "server/auth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/file.h"

#define TB__KEYS_FILE_MAX ((size_t)1 << 20)

static tb__user_t *user_add(tb__auth_t *a, const char *name, size_t len) {
  for (tb__user_t *u = a->users; u != NULL; u = u->next)
    if (u->name_len == len && memcmp(u->name, name, len) == 0)
      return u;
  tb__user_t *u = calloc(1, sizeof(*u));
  if (u == NULL)
    return NULL;
  u->name = tb__strndup(name, len);
  if (u->name == NULL) {
    free(u);
    return NULL;
  }
  u->name_len = len;
  u->tokens = a->burst;
  /* Appended, so that the users keep the file's order. */
  tb__user_t **tail = &a->users;
  while (*tail != NULL)
    tail = &(*tail)->next;
  *tail = u;
  a->n_users++;
  return u;
}

static int key_add(tb__auth_t *a, const char *key, size_t len, tb__user_t *u) {
  if (a->n_keys == a->cap_keys) {
    size_t cap = a->cap_keys ? a->cap_keys * 2 : 8;
    tb__api_key_t *keys = realloc(a->keys, cap * sizeof(*keys));
    if (keys == NULL)
      return TB_ENOMEM;
    a->keys = keys;
    a->cap_keys = cap;
  }
  char *copy = tb__strndup(key, len);
  if (copy == NULL)
    return TB_ENOMEM;
  a->keys[a->n_keys].key = copy;
  a->keys[a->n_keys].len = len;
  a->keys[a->n_keys].user = u;
  a->n_keys++;
  return 0;
}

static void setup_limits(tb__auth_t *a, double rps, double burst) {
  memset(a, 0, sizeof(*a));
  a->rps = rps > 0 && isfinite(rps) ? rps : 0;
  a->burst = burst >= 1 && isfinite(burst) ? burst : (a->rps > 1 ? a->rps : 1);
}

static int is_token_char(char c) {
  return c > ' ' && c < 127;
}

int tb__auth_init_text(tb__auth_t *a, const char *text, size_t len, double rps,
                       double burst, char *msg, size_t msg_cap) {
  setup_limits(a, rps, burst);
  a->enabled = 1;
  size_t line_no = 0, pos = 0;
  int rc = 0;
  while (pos < len && rc == 0) {
    const char *line = text + pos;
    const char *nl = memchr(line, '\n', len - pos);
    size_t ll = nl ? (size_t)(nl - line) : len - pos;
    pos += ll + (nl != NULL);
    line_no++;
    if (ll > 0 && line[ll - 1] == '\r')
      ll--;
    /* Up to two fields; '#' starts a comment anywhere outside a field. */
    tb_slice_t f[3];
    size_t nf = 0, i = 0;
    while (i < ll) {
      while (i < ll && (line[i] == ' ' || line[i] == '\t'))
        i++;
      if (i == ll || line[i] == '#')
        break;
      size_t start = i;
      while (i < ll && line[i] != ' ' && line[i] != '\t')
        i++;
      if (nf < 3) {
        f[nf].base = line + start;
        f[nf].len = i - start;
      }
      nf++;
    }
    if (nf == 0)
      continue;
    int printable = 1;
    for (size_t k = 0; k < nf && k < 2; k++)
      for (size_t j = 0; j < f[k].len; j++)
        printable &= is_token_char(f[k].base[j]);
    if (nf != 2 || !printable) {
      snprintf(msg, msg_cap, "API keys file, line %zu: expected \"KEY USER\"", line_no);
      rc = TB_ECORRUPT;
      break;
    }
    if (tb__auth_lookup(a, f[0]) != NULL) {
      snprintf(msg, msg_cap, "API keys file, line %zu: the key appears twice", line_no);
      rc = TB_ECORRUPT;
      break;
    }
    tb__user_t *u = user_add(a, f[1].base, f[1].len);
    rc = u == NULL ? TB_ENOMEM : key_add(a, f[0].base, f[0].len, u);
  }
  if (rc == 0 && a->n_keys == 0) {
    snprintf(msg, msg_cap, "API keys file: no keys (every request would be refused)");
    rc = TB_ECORRUPT;
  }
  if (rc == TB_ENOMEM)
    snprintf(msg, msg_cap, "out of memory reading the API keys file");
  if (rc != 0)
    tb__auth_free(a);
  return rc;
}

int tb__auth_init(tb__auth_t *a, const char *keys_file, double rps, double burst,
                  char *msg, size_t msg_cap) {
  if (keys_file == NULL) {
    setup_limits(a, rps, burst);
    a->local = user_add(a, "local", 5);
    if (a->local == NULL) {
      snprintf(msg, msg_cap, "out of memory");
      return TB_ENOMEM;
    }
    return 0;
  }
  /* Opened without blocking: a FIFO named as the keys file would
   * otherwise hang the start. */
  int fd = tb__open_regular(keys_file);
  if (fd == TB_EINVAL) {
    snprintf(msg, msg_cap, "the API keys file %s is not a regular file", keys_file);
    return TB_EINVAL;
  }
  FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
  if (f == NULL) {
    int err = fd < 0 ? -fd : errno;
    if (fd >= 0)
      close(fd);
    snprintf(msg, msg_cap, "cannot open the API keys file %s: %s", keys_file,
             strerror(err));
    return err == ENOENT ? TB_ENOENT : TB_EIO;
  }
  tb__buf_t b = TB_BUF_INIT;
  char chunk[4096];
  size_t n;
  int rc = 0;
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    if (b.len + n > TB__KEYS_FILE_MAX) {
      snprintf(msg, msg_cap, "the API keys file %s is larger than 1 MiB", keys_file);
      rc = TB_ECORRUPT;
      break;
    }
    if (tb__buf_append(&b, chunk, n) != 0) {
      snprintf(msg, msg_cap, "out of memory");
      rc = TB_ENOMEM;
      break;
    }
  }
  if (rc == 0 && ferror(f)) {
    snprintf(msg, msg_cap, "cannot read the API keys file %s", keys_file);
    rc = TB_EIO;
  }
  fclose(f);
  if (rc == 0)
    rc = tb__auth_init_text(a, b.base ? b.base : "", b.len, rps, burst, msg, msg_cap);
  tb__buf_free(&b);
  return rc;
}

void tb__auth_free(tb__auth_t *a) {
  for (size_t i = 0; i < a->n_keys; i++)
    free(a->keys[i].key);
  free(a->keys);
  tb__user_t *u = a->users;
  while (u != NULL) {
    tb__user_t *next = u->next;
    free(u->name);
    free(u);
    u = next;
  }
  double rps = a->rps, burst = a->burst;
  memset(a, 0, sizeof(*a));
  a->rps = rps;
  a->burst = burst;
}

int tb__auth_request_key(const tb__http_request_t *req, tb_slice_t *key) {
  const tb__http_header_t *h = tb__http_request_header(req, "X-API-Key");
  if (h != NULL && h->value.len > 0) {
    *key = h->value;
    return 1;
  }
  h = tb__http_request_header(req, "Authorization");
  if (h == NULL || h->value.len < 7)
    return 0;
  tb_slice_t scheme = { h->value.base, 6 };
  if (!tb__slice_case_eq_str(scheme, "Bearer") || h->value.base[6] != ' ')
    return 0;
  const char *p = h->value.base + 7, *end = h->value.base + h->value.len;
  while (p < end && *p == ' ')
    p++;
  while (end > p && end[-1] == ' ')
    end--;
  if (p == end)
    return 0;
  key->base = p;
  key->len = (size_t)(end - p);
  return 1;
}

/* Compares without stopping at the first difference. */
static int ct_equal(const char *a, const char *b, size_t n) {
  unsigned char d = 0;
  for (size_t i = 0; i < n; i++)
    d |= (unsigned char)(a[i] ^ b[i]);
  return d == 0;
}

tb__user_t *tb__auth_lookup(const tb__auth_t *a, tb_slice_t key) {
  tb__user_t *found = NULL;
  for (size_t i = 0; i < a->n_keys; i++)
    if (a->keys[i].len == key.len && ct_equal(a->keys[i].key, key.base, key.len))
      found = a->keys[i].user;
  return found;
}

tb__user_t *tb__auth_user(const tb__auth_t *a, const char *name) {
  for (tb__user_t *u = a->users; u != NULL; u = u->next)
    if (strcmp(u->name, name) == 0)
      return u;
  return NULL;
}

int tb__auth_take(tb__auth_t *a, tb__user_t *u, uint64_t now_ms,
                  uint64_t *retry_after_ms) {
  if (a->rps <= 0)
    return 0;
  if (u->refilled_ms == 0 || now_ms < u->refilled_ms) {
    if (u->refilled_ms == 0)
      u->tokens = a->burst;
    u->refilled_ms = now_ms;
  }
  double add = (double)(now_ms - u->refilled_ms) * a->rps / 1000.0;
  u->tokens = fmin(a->burst, u->tokens + add);
  u->refilled_ms = now_ms;
  if (u->tokens >= 1.0) {
    u->tokens -= 1.0;
    return 0;
  }
  u->n_rate_limited++;
  double wait_ms = ceil((1.0 - u->tokens) * 1000.0 / a->rps);
  *retry_after_ms = wait_ms < 1 ? 1 : (uint64_t)wait_ms;
  return TB_EBUSY;
}

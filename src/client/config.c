/*
 * The client configuration: defaults, the environment (TINKER_BASE_URL,
 * TINKER_API_KEY, TINKER_PROJECT_ID), validation of the base URL, and
 * owned copies of every string, so that the caller's config may go away
 * once the client is made.
 */
#include "client/internal.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "http/url.h"

/* Strings that go into JSON must be UTF-8. */
static int valid_utf8(const char *s) {
  json_t *j = json_string(s);
  json_decref(j);
  return j != NULL;
}

/* Adds a tag unless empty or already there. */
static int add_tag(tb__config_t *c, const char *t, size_t len) {
  while (len > 0 && (*t == ' ' || *t == '\t')) {
    t++;
    len--;
  }
  while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t'))
    len--;
  if (len == 0)
    return 0;
  for (size_t i = 0; i < c->n_tags; i++)
    if (strlen(c->tags[i]) == len && memcmp(c->tags[i], t, len) == 0)
      return 0;
  char *copy = tb__strndup(t, len);
  if (copy == NULL)
    return TB_ENOMEM;
  if (!valid_utf8(copy)) {
    free(copy);
    return TB_EINVAL;
  }
  char **tags = realloc(c->tags, (c->n_tags + 1) * sizeof(*tags));
  if (tags == NULL) {
    free(copy);
    return TB_ENOMEM;
  }
  c->tags = tags;
  tags[c->n_tags++] = copy;
  return 0;
}

/* Copies n key/value pairs; TB_EINVAL names the first NULL one. */
static int copy_pairs(const tb_telemetry_meta_t *in, size_t n, const char *what,
                      tb_telemetry_meta_t **out, size_t *n_out, tb_error_t *err) {
  if (n == 0)
    return 0;
  if (in == NULL)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s: NULL with a count of %zu",
                        what, n);
  for (size_t i = 0; i < n; i++) {
    if (in[i].key == NULL || in[i].value == NULL)
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s[%zu]: NULL key or value",
                          what, i);
    if (!valid_utf8(in[i].key) || !valid_utf8(in[i].value))
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s[%zu]: not UTF-8", what, i);
  }
  if ((*out = calloc(n, sizeof(**out))) == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  for (size_t i = 0; i < n; i++) {
    char *k = strdup(in[i].key), *v = strdup(in[i].value);
    if (k == NULL || v == NULL) {
      free(k);
      free(v);
      return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    }
    (*out)[i].key = k;
    (*out)[i].value = v;
    *n_out = i + 1;
  }
  return 0;
}

static void free_pairs(tb_telemetry_meta_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free((char *)p[i].key);
    free((char *)p[i].value);
  }
  free(p);
}

static uint64_t or_default(uint64_t v, uint64_t def) { return v != 0 ? v : def; }

/* The setting, else the environment variable when set and not empty. */
static const char *pick(const char *v, const char *env) {
  if (v != NULL)
    return v;
  const char *e = getenv(env);
  return e != NULL && e[0] != '\0' ? e : NULL;
}

static int dup_opt(const char *s, char **out) {
  *out = NULL;
  if (s == NULL)
    return 0;
  *out = strdup(s);
  return *out != NULL ? 0 : TB_ENOMEM;
}

/* A header value must not carry CR, LF or other control characters. */
static int header_safe(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 0;
  return 1;
}

int tb__config_resolve(const tb_client_config_t *in, tb__config_t *out,
                       tb_error_t *err) {
  static const tb_client_config_t zero;
  if (in == NULL)
    in = &zero;
  memset(out, 0, sizeof(*out));

  const char *base = pick(in->base_url, "TINKER_BASE_URL");
  if (base == NULL)
    base = TB_CLIENT_DEFAULT_BASE_URL;
  tb__url_t url;
  size_t blen = strlen(base);
  while (blen > 0 && base[blen - 1] == '/')
    blen--;
  if (tb__url_parse(&url, base, blen) != 0 || url.host.len == 0 ||
      url.query.len != 0)
    return tb_error_set(err, TB_EURL, TB_CATEGORY_USER,
                        "base URL \"%s\": expected http://host[:port][/prefix] or "
                        "https://...", base);
  out->base_url = tb__strndup(base, blen);
  if (out->base_url == NULL)
    goto nomem;
  out->tls = url.tls;
  out->tls_insecure = in->tls_insecure != 0;
  if (dup_opt(in->tls_ca_file, &out->tls_ca_file) != 0)
    goto nomem;

  const char *project = pick(in->project_id, "TINKER_PROJECT_ID");
  if (project != NULL && !valid_utf8(project)) {
    tb__config_free(out);
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "project_id: not UTF-8");
  }
  const char *key = pick(in->api_key, "TINKER_API_KEY");
  if (key != NULL && !header_safe(key)) {
    tb__config_free(out);
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "api_key: control characters are not allowed");
  }
  if (dup_opt(key, &out->api_key) != 0 ||
      dup_opt(project, &out->project_id) != 0)
    goto nomem;

  out->poll_deadline_ms = in->poll_deadline_ms;
  out->wait_timeout_ms = in->wait_timeout_ms;
  out->http_timeout_ms = or_default(in->http_timeout_ms, 60000);
  out->poll_http_timeout_ms = or_default(in->poll_http_timeout_ms, 45000);
  out->connect_timeout_ms = or_default(in->connect_timeout_ms, 5000);
  out->max_retries = in->max_retries < 0 ? 0u
                     : in->max_retries == 0 ? 10u : (unsigned)in->max_retries;
  out->retry_base_ms = or_default(in->retry_base_ms, 500);
  out->retry_max_ms = or_default(in->retry_max_ms, 10000);
  out->retry_after_max_ms = or_default(in->retry_after_max_ms, 60000);
  out->poll_backoff_initial_ms = or_default(in->poll_backoff_initial_ms, 1000);
  out->poll_backoff_max_ms = or_default(in->poll_backoff_max_ms, 30000);
  out->poll_retry_delay_ms = or_default(in->poll_retry_delay_ms, 250);
  out->poll_error_backoff_initial_ms = or_default(in->poll_error_backoff_initial_ms, 1000);
  out->poll_error_backoff_max_ms = or_default(in->poll_error_backoff_max_ms, 30000);
  out->heartbeat_interval_ms = or_default(in->heartbeat_interval_ms, 10000);
  out->heartbeat_warn_ms = or_default(in->heartbeat_warn_ms, 120000);
  out->close_timeout_ms = or_default(in->close_timeout_ms, 2000);
  out->keep_session_open = in->keep_session_open != 0;
  out->stall_ms = or_default(in->stall_ms, 60000);
  out->max_connections = in->max_connections != 0 ? in->max_connections : 16;
  out->telemetry = in->telemetry;
  out->telemetry_data = in->telemetry_data;
  out->queue_observer = in->queue_observer;
  out->queue_observer_data = in->queue_observer_data;
  out->jitter_seed = in->jitter_seed;
  if (out->poll_backoff_max_ms < out->poll_backoff_initial_ms ||
      out->poll_error_backoff_max_ms < out->poll_error_backoff_initial_ms ||
      out->retry_max_ms < out->retry_base_ms) {
    tb__config_free(out);
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "a backoff maximum is below its initial delay");
  }

  int rc = copy_pairs(in->telemetry_metadata, in->n_telemetry_metadata,
                      "telemetry_metadata", &out->meta, &out->n_meta, err);
  if (rc == 0)
    rc = copy_pairs(in->user_metadata, in->n_user_metadata, "user_metadata",
                    &out->user_metadata, &out->n_user_metadata, err);
  if (rc == 0 && in->n_tags > 0 && in->tags == NULL)
    rc = tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "tags: NULL with a count of %zu",
                      in->n_tags);
  for (size_t i = 0; rc == 0 && i < in->n_tags; i++) {
    int r = in->tags[i] == NULL ? TB_EINVAL : add_tag(out, in->tags[i], strlen(in->tags[i]));
    if (r != 0)
      rc = tb_error_set(err, r, r == TB_EINVAL ? TB_CATEGORY_USER : TB_CATEGORY_NONE,
                        "tags[%zu]: %s", i, r == TB_ENOMEM ? "out of memory"
                                            : in->tags[i] == NULL ? "NULL" : "not UTF-8");
  }
  const char *env_tags = in->n_tags == 0 ? getenv("TINKER_TAGS") : NULL;
  while (rc == 0 && env_tags != NULL && *env_tags != '\0') {
    const char *comma = strchr(env_tags, ',');
    size_t len = comma ? (size_t)(comma - env_tags) : strlen(env_tags);
    int r = add_tag(out, env_tags, len);
    if (r != 0)
      rc = tb_error_set(err, r, r == TB_EINVAL ? TB_CATEGORY_USER : TB_CATEGORY_NONE,
                        "TINKER_TAGS: %s", r == TB_EINVAL ? "not UTF-8" : "out of memory");
    env_tags = comma ? comma + 1 : NULL;
  }
  if (rc != 0) {
    tb__config_free(out);
    return rc;
  }
  return 0;

nomem:
  tb__config_free(out);
  return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
}

void tb__config_free(tb__config_t *c) {
  free(c->base_url);
  free(c->api_key);
  free(c->project_id);
  free(c->tls_ca_file);
  for (size_t i = 0; i < c->n_tags; i++)
    free(c->tags[i]);
  free(c->tags);
  free_pairs(c->meta, c->n_meta);
  free_pairs(c->user_metadata, c->n_user_metadata);
  memset(c, 0, sizeof(*c));
}

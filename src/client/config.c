/*
 * The client configuration: defaults, the environment (TINKER_BASE_URL,
 * TINKER_API_KEY, TINKER_PROJECT_ID), validation of the base URL, and
 * owned copies of every string, so that the caller's config may go away
 * once the client is made.
 */
#include "client/internal.h"

#include <stdlib.h>
#include <string.h>

#include "http/url.h"

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
  tb_url_t url;
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

  const char *key = pick(in->api_key, "TINKER_API_KEY");
  if (key != NULL && !header_safe(key)) {
    tb__config_free(out);
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "api_key: control characters are not allowed");
  }
  if (dup_opt(key, &out->api_key) != 0 ||
      dup_opt(pick(in->project_id, "TINKER_PROJECT_ID"), &out->project_id) != 0)
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

  if (in->n_telemetry_metadata > 0) {
    if (in->telemetry_metadata == NULL) {
      tb__config_free(out);
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "telemetry_metadata: NULL with n_telemetry_metadata > 0");
    }
    out->meta = calloc(in->n_telemetry_metadata, sizeof(*out->meta));
    if (out->meta == NULL)
      goto nomem;
    for (size_t i = 0; i < in->n_telemetry_metadata; i++) {
      const tb_telemetry_meta_t *m = &in->telemetry_metadata[i];
      char *k = NULL, *v = NULL;
      if (m->key == NULL || m->value == NULL) {
        tb__config_free(out);
        return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                            "telemetry_metadata[%zu]: NULL key or value", i);
      }
      if (dup_opt(m->key, &k) != 0 || dup_opt(m->value, &v) != 0) {
        free(k);
        goto nomem;
      }
      out->meta[i].key = k;
      out->meta[i].value = v;
      out->n_meta = i + 1;
    }
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
  for (size_t i = 0; i < c->n_meta; i++) {
    free((char *)c->meta[i].key);
    free((char *)c->meta[i].value);
  }
  free(c->meta);
  memset(c, 0, sizeof(*c));
}

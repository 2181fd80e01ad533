/*
 * The RestClient (tinkerbell/rest_client.h): each function is one direct
 * request of the operation layer (op.c) with a decoder into its typed
 * result (rest_results.c); export_session_trace repeats its request until the export is
 * done.  Identifiers are percent-encoded into the paths, except the '/'
 * inside a checkpoint id, which the routes expect as it is.
 */
#include "tinkerbell/rest_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/answer.h"
#include "client/clients.h"
#include "client/rest_results.h"
#include "core/json.h"
#include "wire/rest.h"
#include "wire/service.h"

int tb_rest_client_init(tb_rest_client_t *rc, tb_service_client_t *sc) {
  if (rc == NULL || sc == NULL || sc->impl_ == NULL)
    return TB_EINVAL;
  memset(rc, 0, sizeof(*rc));
  rc->service = sc;
  return 0;
}

/* ------------------------------------------------------------ requests */

/* Appends s percent-encoded (keeping unreserved characters, ':' and, when
 * keep_slash, '/'). */
static int append_segment(tb__buf_t *b, const char *s, int keep_slash) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' ||
                *p == '~' || *p == ':' || (keep_slash && *p == '/');
    int rc = plain ? tb__buf_append(b, p, 1) : tb__buf_printf(b, "%%%02X", *p);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* A path from a template: each %s is replaced by the next argument,
 * percent-encoded; %c keeps its '/' (a checkpoint id); %q is a query
 * value.  Returns a malloc'd string or NULL. */
static char *build_path(const char *tmpl, const char *const *args) {
  tb__buf_t b = TB_BUF_INIT;
  int rc = 0;
  size_t k = 0;
  for (const char *t = tmpl; *t && rc == 0; t++) {
    if (*t == '%' && (t[1] == 's' || t[1] == 'c' || t[1] == 'q')) {
      rc = append_segment(&b, args[k++], t[1] == 'c');
      t++;
    } else {
      rc = tb__buf_append(&b, t, 1);
    }
  }
  rc = rc ? rc : tb__buf_terminate(&b);
  if (rc != 0) {
    tb__buf_free(&b);
    return NULL;
  }
  return tb__buf_steal(&b, NULL);
}

static tb__rt_t *rt_of(tb_rest_client_t *rc) {
  return rc != NULL ? tb__service_rt(rc->service) : NULL;
}

/* Starts a request with the submission retries (retries < 0: the
 * config's; 0: none). */
static int start_r(tb_rest_client_t *rc, const char *method, char *path, json_t *body,
                   tb__client_op_decode_fn decode, int retries, tb_future_t **out) {
  tb__rt_t *rt = rt_of(rc);
  int ret = 0;
  if (out == NULL || rt == NULL)
    ret = out == NULL || rc == NULL || rc->service == NULL || rc->service->impl_ == NULL
              ? TB_EINVAL
              : TB_ECLOSING;
  else if (path == NULL)
    ret = TB_ENOMEM;
  if (ret == 0) {
    tb__client_op_opts_t o = { .method = method, .path = path, .max_retries = retries,
                               .decode = decode };
    ret = body != NULL ? tb__client_op_start_json(rt, &o, body, out)
                       : tb__client_op_start(rt, &o, out);
    body = NULL;  /* taken */
  }
  free(path);
  json_decref(body);
  return ret;
}

static int start(tb_rest_client_t *rc, const char *method, char *path, json_t *body,
                 tb__client_op_decode_fn decode, tb_future_t **out) {
  return start_r(rc, method, path, body, decode, -1, out);
}

static const char *scope_name(tb_access_scope_t s) {
  return s == TB_ACCESS_ACCESSIBLE ? "accessible" : "owned";
}

/* Splits tinker://<run_id>/<weights|sampler_weights>/<name>. */
static int split_tinker_path(const char *path, char **run, char **ckpt) {
  static const char scheme[] = "tinker://";
  *run = *ckpt = NULL;
  if (path == NULL || strncmp(path, scheme, sizeof(scheme) - 1) != 0)
    return TB_EINVAL;
  const char *p = path + sizeof(scheme) - 1;
  const char *s1 = strchr(p, '/');
  const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
  if (s1 == NULL || s2 == NULL || s1 == p || s2[1] == '\0' || strchr(s2 + 1, '/') != NULL)
    return TB_EINVAL;
  size_t kl = (size_t)(s2 - s1 - 1);
  if (!((kl == 7 && strncmp(s1 + 1, "weights", 7) == 0) ||
        (kl == 15 && strncmp(s1 + 1, "sampler_weights", 15) == 0)))
    return TB_EINVAL;
  *run = strndup(p, (size_t)(s1 - p));
  *ckpt = strdup(s1 + 1);
  if (*run == NULL || *ckpt == NULL) {
    free(*run);
    free(*ckpt);
    *run = *ckpt = NULL;
    return TB_ENOMEM;
  }
  return 0;
}

static int valid(const char *s) {
  return s != NULL && s[0] != '\0';
}

/* ------------------------------------------------------------ training runs */

int tb_rest_client_get_training_run(tb_rest_client_t *rc, const char *training_run_id,
                                    tb_access_scope_t scope, tb_future_t **out) {
  if (!valid(training_run_id))
    return TB_EINVAL;
  const char *args[] = { training_run_id, scope_name(scope) };
  return start(rc, "GET", build_path("/api/v1/training_runs/%s?access_scope=%q", args), NULL,
               tb__rest_decode_run, out);
}

int tb_rest_client_get_training_run_by_tinker_path(tb_rest_client_t *rc,
                                                   const char *tinker_path,
                                                   tb_access_scope_t scope,
                                                   tb_future_t **out) {
  char *run, *ckpt;
  int ret = split_tinker_path(tinker_path, &run, &ckpt);
  if (ret != 0)
    return ret;
  ret = tb_rest_client_get_training_run(rc, run, scope, out);
  free(run);
  free(ckpt);
  return ret;
}

int tb_rest_client_list_training_runs(tb_rest_client_t *rc, int64_t limit, int64_t offset,
                                      tb_access_scope_t scope, const char *project_id,
                                      tb_future_t **out) {
  if (limit < 0 || offset < 0)
    return TB_EINVAL;
  char lim[24], off[24];
  snprintf(lim, sizeof(lim), "%lld", (long long)(limit ? limit : 20));
  snprintf(off, sizeof(off), "%lld", (long long)offset);
  const char *args[] = { lim, off, scope_name(scope), project_id ? project_id : "" };
  return start(rc, "GET",
               build_path(project_id ? "/api/v1/training_runs?limit=%q&offset=%q&access_scope=%q"
                                       "&project_id=%q"
                                     : "/api/v1/training_runs?limit=%q&offset=%q&access_scope=%q",
                          args),
               NULL, tb__rest_decode_runs, out);
}

int tb_rest_client_get_weights_info_by_tinker_path(tb_rest_client_t *rc,
                                                   const char *tinker_path, tb_future_t **out) {
  char *run, *ckpt;
  int ret = split_tinker_path(tinker_path, &run, &ckpt);
  if (ret != 0)
    return ret;
  free(run);
  free(ckpt);
  tb__wire_weights_info_request_t r = { tb__wire_str(tinker_path) };
  json_t *b = tb__wire_weights_info_request_to_json(&r);
  if (b == NULL)
    return TB_ENOMEM;
  return start(rc, "POST", strdup("/api/v1/weights_info"), b, tb__rest_decode_weights_info, out);
}

/* ------------------------------------------------------------ checkpoints */

int tb_rest_client_list_checkpoints(tb_rest_client_t *rc, const char *training_run_id,
                                    tb_future_t **out) {
  if (!valid(training_run_id))
    return TB_EINVAL;
  const char *args[] = { training_run_id };
  return start(rc, "GET", build_path("/api/v1/training_runs/%s/checkpoints", args), NULL,
               tb__rest_decode_checkpoints, out);
}

int tb_rest_client_list_user_checkpoints(tb_rest_client_t *rc, int64_t limit, int64_t offset,
                                         tb_future_t **out) {
  if (limit < 0 || offset < 0)
    return TB_EINVAL;
  char lim[24], off[24];
  snprintf(lim, sizeof(lim), "%lld", (long long)(limit ? limit : 100));
  snprintf(off, sizeof(off), "%lld", (long long)offset);
  const char *args[] = { lim, off };
  return start(rc, "GET", build_path("/api/v1/checkpoints?limit=%q&offset=%q", args), NULL,
               tb__rest_decode_checkpoints, out);
}

/* A request on one checkpoint: .../checkpoints/{id}<suffix>. */
static int on_checkpoint(tb_rest_client_t *rc, const char *method, const char *run,
                         const char *ckpt, const char *suffix, json_t *body,
                         tb__client_op_decode_fn decode, tb_future_t **out) {
  /* A 409 to publish or unpublish says the checkpoint already is what was
   * asked: final, not worth the retries other 409s get. */
  int retries = strcmp(suffix, "/publish") == 0 ? 0 : -1;
  if (!valid(run) || !valid(ckpt)) {
    json_decref(body);
    return TB_EINVAL;
  }
  const char *args[] = { run, ckpt };
  char *base = build_path("/api/v1/training_runs/%s/checkpoints/%c", args);
  char *path = base ? tb__asprintf("%s%s", base, suffix) : NULL;
  free(base);
  return start_r(rc, method, path, body, decode, retries, out);
}

/* The same, from a tinker path. */
static int on_tinker_path(tb_rest_client_t *rc, const char *method, const char *tinker_path,
                          const char *suffix, json_t *body, tb__client_op_decode_fn decode,
                          tb_future_t **out) {
  char *run, *ckpt;
  int ret = split_tinker_path(tinker_path, &run, &ckpt);
  if (ret != 0) {
    json_decref(body);
    return ret;
  }
  ret = on_checkpoint(rc, method, run, ckpt, suffix, body, decode, out);
  free(run);
  free(ckpt);
  return ret;
}

int tb_rest_client_get_checkpoint_archive_url(tb_rest_client_t *rc, const char *training_run_id,
                                              const char *checkpoint_id, tb_future_t **out) {
  return on_checkpoint(rc, "GET", training_run_id, checkpoint_id, "/archive", NULL,
                       tb__rest_decode_archive, out);
}

int tb_rest_client_get_checkpoint_archive_url_from_tinker_path(tb_rest_client_t *rc,
                                                               const char *tinker_path,
                                                               tb_future_t **out) {
  return on_tinker_path(rc, "GET", tinker_path, "/archive", NULL, tb__rest_decode_archive, out);
}

int tb_rest_client_delete_checkpoint(tb_rest_client_t *rc, const char *training_run_id,
                                     const char *checkpoint_id, tb_future_t **out) {
  return on_checkpoint(rc, "DELETE", training_run_id, checkpoint_id, "", NULL, NULL, out);
}

int tb_rest_client_delete_checkpoint_from_tinker_path(tb_rest_client_t *rc,
                                                      const char *tinker_path,
                                                      tb_future_t **out) {
  return on_tinker_path(rc, "DELETE", tinker_path, "", NULL, NULL, out);
}

int tb_rest_client_publish_checkpoint_from_tinker_path(tb_rest_client_t *rc,
                                                       const char *tinker_path,
                                                       tb_future_t **out) {
  return on_tinker_path(rc, "POST", tinker_path, "/publish", NULL, NULL, out);
}

int tb_rest_client_unpublish_checkpoint_from_tinker_path(tb_rest_client_t *rc,
                                                         const char *tinker_path,
                                                         tb_future_t **out) {
  return on_tinker_path(rc, "DELETE", tinker_path, "/publish", NULL, NULL, out);
}

int tb_rest_client_set_checkpoint_ttl_from_tinker_path(tb_rest_client_t *rc,
                                                       const char *tinker_path,
                                                       int64_t ttl_seconds, tb_future_t **out) {
  if (ttl_seconds < 0)
    return TB_EINVAL;
  json_t *b = tb__wire_ttl_request_to_json(&(tb__wire_ttl_request_t){ ttl_seconds });
  if (b == NULL)
    return TB_ENOMEM;
  return on_tinker_path(rc, "PUT", tinker_path, "/ttl", b, NULL, out);
}

/* ------------------------------------------------------------ sessions */

int tb_rest_client_get_session(tb_rest_client_t *rc, const char *session_id,
                               tb_access_scope_t scope, tb_future_t **out) {
  if (!valid(session_id))
    return TB_EINVAL;
  const char *args[] = { session_id, scope_name(scope) };
  return start(rc, "GET", build_path("/api/v1/sessions/%s?access_scope=%q", args), NULL,
               tb__rest_decode_session, out);
}

int tb_rest_client_list_sessions(tb_rest_client_t *rc, int64_t limit, int64_t offset,
                                 tb_access_scope_t scope, tb_future_t **out) {
  if (limit < 0 || offset < 0)
    return TB_EINVAL;
  char lim[24], off[24];
  snprintf(lim, sizeof(lim), "%lld", (long long)(limit ? limit : 20));
  snprintf(off, sizeof(off), "%lld", (long long)offset);
  const char *args[] = { lim, off, scope_name(scope) };
  return start(rc, "GET", build_path("/api/v1/sessions?limit=%q&offset=%q&access_scope=%q", args),
               NULL, tb__rest_decode_sessions, out);
}

int tb_rest_client_assign_session_project(tb_rest_client_t *rc, const char *session_id,
                                          const char *project_id, tb_future_t **out) {
  if (!valid(session_id) || !valid(project_id))
    return TB_EINVAL;
  json_t *b = tb__wire_session_project_to_json(&(tb__wire_session_project_t){ project_id });
  if (b == NULL)
    return TB_ENOMEM;
  const char *args[] = { session_id };
  return start(rc, "PUT", build_path("/api/v1/sessions/%s/project", args), b, NULL, out);
}

int tb_rest_client_get_sampler(tb_rest_client_t *rc, const char *sampler_id, tb_future_t **out) {
  if (!valid(sampler_id))
    return TB_EINVAL;
  const char *args[] = { sampler_id };
  return start(rc, "GET", build_path("/api/v1/samplers/%s", args), NULL,
               tb__rest_decode_sampler, out);
}

int tb_rest_client_get_audit_log(tb_rest_client_t *rc, const char *event_type, const char *day,
                                 tb_future_t **out) {
  const char *et = event_type ? event_type : "all";
  if (strcmp(et, "all") != 0 && strcmp(et, "checkpoints") != 0)
    return TB_EINVAL;
  const char *args[] = { et, day ? day : "" };
  return start(rc, "GET",
               build_path(day ? "/api/v1/audit?event_type=%q&day=%q"
                              : "/api/v1/audit?event_type=%q",
                          args),
               NULL, tb__rest_decode_json_text, out);
}

int tb_rest_client_get_billing_usage(tb_rest_client_t *rc, const char *starting_on,
                                     const char *ending_before, tb_future_t **out) {
  if (!valid(starting_on) || !valid(ending_before))
    return TB_EINVAL;
  const char *args[] = { starting_on, ending_before };
  return start(rc, "GET",
               build_path("/api/v1/billing/usage/events?starting_on=%q&ending_before=%q", args),
               NULL, tb__rest_decode_json_text, out);
}

/* ------------------------------------------------------------ trace export */

/* The export is asked for again until it is ready: its own future drives
 * a request, then a pause, and so on. */
typedef struct trace_s {
  tb_rest_client_t *rc;
  tb__rt_t *rt;
  char *session_id;
  tb_future_t *future;          /* the caller's */
  tb_future_t *inner;           /* the request in flight */
  tb__alarm_t alarm;            /* the pause, or a late completion */
  int cancelled;
} trace_t;

static void trace_free(trace_t *t) {
  free(t->session_id);
  free(t);
}

static void trace_fail(trace_t *t, tb_error_t *e) {
  tb_future_t *f = t->future;
  trace_free(t);
  tb__client_future_fail(f, e);
}

static void trace_ask(trace_t *t);

static void on_trace_alarm(tb__alarm_t *a) {
  trace_t *t = a->data;
  if (t->cancelled) {
    tb_error_t e = { 0 };
    tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "cancelled");
    trace_fail(t, &e);
    return;
  }
  trace_ask(t);
}

static void on_trace_answer(tb_future_t *f, int status) {
  trace_t *t = f->data;
  t->inner = NULL;
  tb_error_t e = { 0 };
  if (status != 0 || t->cancelled) {
    if (t->cancelled)
      tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "cancelled");
    else
      tb_error_copy(&e, &f->error);
    tb_future_free(f);
    trace_fail(t, &e);
    return;
  }
  const char *text = tb_future_result(f, &tb_result_string);
  tb__answer_t d;
  tb__wire_trace_export_t w;
  int rc = tb__answer_begin(&d, text, text ? strlen(text) : 0, &e);
  if (rc == 0)
    rc = tb__wire_trace_export_from_json(&d.jc, d.doc, &w);
  tb_future_free(f);
  if (rc != 0) {
    tb__answer_refused(rc, &e, TB_EPROTO, "trace_export");
    tb__answer_end(&d);
    trace_fail(t, &e);
    return;
  }
  const char *st = w.status, *url = w.url;
  if (strcmp(st, "ready") == 0 && url != NULL) {
    int ok = 1;
    char *copy = tb__answer_dup(url, &ok);
    tb__answer_end(&d);
    if (!ok) {
      tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
      trace_fail(t, &e);
      return;
    }
    tb_future_t *out = t->future;
    trace_free(t);
    tb__client_future_resolve(out, &tb_result_string, copy);
    return;
  }
  if (strcmp(st, "pending") == 0) {
    tb__answer_end(&d);
    if (tb__alarm_start(t->rt, &t->alarm, TB_REST_TRACE_POLL_MS) == 0)
      return;
    tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    trace_fail(t, &e);
    return;
  }
  const char *why = w.error;
  if (strcmp(st, "failed") == 0)
    tb_error_set(&e, TB_ESERVER, TB_CATEGORY_SERVER, "the trace export failed: %s",
                 why ? why : "no reason given");
  else
    tb_error_set(&e, TB_EPROTO, TB_CATEGORY_SERVER,
                 "trace_export: expected a status of pending, ready (with a url) or failed");
  tb__answer_end(&d);
  trace_fail(t, &e);
}

static void trace_ask(trace_t *t) {
  const char *args[] = { t->session_id };
  int rc = start(t->rc, "GET", build_path("/api/v1/sessions/%s/trace_export", args), NULL,
                 tb__rest_decode_json_text, &t->inner);
  if (rc != 0) {
    tb_error_t e = { 0 };
    tb__client_not_started(&e, rc, "trace_export");
    trace_fail(t, &e);
    return;
  }
  t->inner->data = t;
  tb_future_set_callback(t->inner, on_trace_answer);
}

static void trace_cancel(tb_future_t *f) {
  trace_t *t = f->driver_;
  t->cancelled = 1;
  if (t->inner != NULL) {
    tb_future_cancel(t->inner);
  } else {
    /* In the pause: fail on the next turn. */
    tb__alarm_start(t->rt, &t->alarm, 0);
  }
}

int tb_rest_client_export_session_trace(tb_rest_client_t *rc, const char *session_id,
                                        tb_future_t **out) {
  tb__rt_t *rt = rt_of(rc);
  if (!valid(session_id) || out == NULL)
    return TB_EINVAL;
  if (rt == NULL)
    return rc == NULL || rc->service == NULL || rc->service->impl_ == NULL ? TB_EINVAL
                                                                           : TB_ECLOSING;
  trace_t *t = calloc(1, sizeof(*t));
  if (t == NULL || (t->session_id = strdup(session_id)) == NULL ||
      (t->future = tb__client_future_new(rt->loop)) == NULL) {
    if (t != NULL)
      trace_free(t);
    return TB_ENOMEM;
  }
  t->rc = rc;
  t->rt = rt;
  tb__alarm_init(&t->alarm, on_trace_alarm, t);
  const char *args[] = { session_id };
  int ret = start(rc, "GET", build_path("/api/v1/sessions/%s/trace_export", args), NULL,
                  tb__rest_decode_json_text, &t->inner);
  if (ret != 0) {
    free(t->future);
    trace_free(t);
    return ret;
  }
  t->inner->data = t;
  tb_future_set_callback(t->inner, on_trace_answer);
  tb__client_future_set_driver(t->future, trace_cancel, t);
  *out = t->future;
  return 0;
}

/*
 * The server handle (include/tinkerbell/server.h) and the request path
 * every route shares (internal.h): routing through one table, API keys,
 * the per-request context, answers that are logged and counted, JSON
 * bodies with path errors, the rate limit.
 *
 * Closing runs in two phases.  First the parts plugged in later (the
 * training part) close, so that the futures they fail on the way out
 * still reach the clients polling them.  Then the futures store answers
 * every held poll and closes its timers, the sessions close their timer,
 * and the HTTP server drains; when all three are done the memory goes and
 * the close callback runs.
 */
#include "server/internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "http/tls.h"
#include "server/store.h"

#define DEFAULT_LONG_POLL_MS 30000u
#define DEFAULT_SESSION_TIMEOUT_MS 120000u
#define MIN_GRACE_MS 120000u
#define DEFAULT_TTL_MS 3600000u
#define DEFAULT_MAX_RESULT_BYTES ((size_t)1 << 30)
#define TOMBSTONE_MS (6u * 3600u * 1000u)

#define container_of(ptr, type, member) \
  ((type *)((char *)(ptr) - offsetof(type, member)))

/* ------------------------------------------------------------ routes */

static int add_route(tb__server_t *srv, const char *method, const char *pattern,
                     tb__dialect_t dialect, unsigned flags, tb__http_handler_cb handler,
                     tb__http_handler_cb tinkerbell, void *data, const char *summary) {
  if (srv->n_routes == srv->cap_routes) {
    size_t cap = srv->cap_routes ? srv->cap_routes * 2 : 32;
    tb__route_t **routes = realloc(srv->routes, cap * sizeof(*routes));
    if (routes == NULL)
      return TB_ENOMEM;
    srv->routes = routes;
    srv->cap_routes = cap;
  }
  tb__route_t *rt = calloc(1, sizeof(*rt));
  if (rt == NULL)
    return TB_ENOMEM;
  rt->method = tb__strndup(method, strlen(method));
  rt->pattern = tb__strndup(pattern, strlen(pattern));
  rt->summary = tb__strndup(summary ? summary : "", summary ? strlen(summary) : 0);
  rt->dialect = dialect;
  rt->flags = flags;
  rt->handler = handler;
  rt->tinkerbell_handler = tinkerbell;
  rt->data = data;
  int rc = rt->method && rt->pattern && rt->summary ? 0 : TB_ENOMEM;
  /* The router hands the route back as route_data; dispatch unwraps it. */
  if (rc == 0)
    rc = tb__http_router_add(&srv->router, method, pattern, handler, rt);
  if (rc != 0) {
    free(rt->method);
    free(rt->pattern);
    free(rt->summary);
    free(rt);
    return rc;
  }
  srv->routes[srv->n_routes++] = rt;
  return 0;
}

int tb__server_route(tb__server_t *srv, const char *method, const char *pattern,
                     tb__dialect_t dialect, unsigned flags, tb__http_handler_cb handler,
                     void *data, const char *summary) {
  if (dialect == TB__DIALECT_BOTH)
    return TB_EINVAL;  /* a row of the table, with both handlers */
  return add_route(srv, method, pattern, dialect, flags, handler, NULL, data, summary);
}

/* The route just added gets the row's sides, for the generic handler. */
static void set_sides(tb__server_t *srv, const tb__route_row_t *row) {
  tb__route_t *rt = srv->routes[srv->n_routes - 1];
  rt->side = &row->tinker;
  rt->tinkerbell_side = row->dialect == TB__DIALECT_BOTH ? &row->tinkerbell : NULL;
}

int tb__server_add_row(tb__server_t *srv, const tb__route_row_t *row, void *data) {
  if (row->tinker.handler == NULL)
    return TB_EINVAL;
  if (row->dialect != TB__DIALECT_BOTH) {
    int rc = add_route(srv, row->method, row->path, row->dialect, row->flags,
                       row->tinker.handler, NULL, data, row->summary);
    if (rc == 0)
      set_sides(srv, row);
    return rc;
  }
  if (row->tinkerbell.handler == NULL)
    return TB_EINVAL;
  char *both = tb__asprintf("Tinker: %s. Tinkerbell: %s", row->summary,
                            row->tinkerbell_summary);
  if (both == NULL)
    return TB_ENOMEM;
  int rc = add_route(srv, row->method, row->path, row->dialect, row->flags, row->tinker.handler,
                     row->tinkerbell.handler, data, both);
  free(both);
  if (rc == 0)
    set_sides(srv, row);
  return rc;
}

static void count(tb__route_t *rt, int status) {
  for (size_t i = 0; i < rt->n_counts; i++)
    if (rt->counts[i].status == status) {
      rt->counts[i].count++;
      return;
    }
  if (rt->n_counts == rt->cap_counts) {
    size_t cap = rt->cap_counts ? rt->cap_counts * 2 : 4;
    tb__status_count_t *c = realloc(rt->counts, cap * sizeof(*c));
    if (c == NULL)
      return;  /* the metric loses one count; the request is unaffected */
    rt->counts = c;
    rt->cap_counts = cap;
  }
  rt->counts[rt->n_counts].status = status;
  rt->counts[rt->n_counts].count = 1;
  rt->n_counts++;
}

/* ------------------------------------------------------------ dispatch */

static void on_req_done(tb__http_request_t *req, int status) {
  tb__sreq_t *sr = req->data;
  if (sr->on_done != NULL)
    sr->on_done(req, status);
  tb__result_unref(sr->lent);
  sr->lent = NULL;
  /* The HTTP layer may have answered itself (a body over the limits). */
  if (sr->status == 0)
    sr->status = req->status;
  count(sr->route ? sr->route : &sr->srv->unmatched, sr->status);
  if (TB_LOG_ENABLED(TB_LOG_INFO)) {
    double ms = (double)(uv_hrtime() - sr->start_ns) / 1e6;
    tb__log(TB_LOG_INFO, "%s %.*s %d %.3f ms%s%s%s%s", req->method.base,
            (int)req->path.len, req->path.base, sr->status, ms,
            sr->user ? " user=" : "", sr->user ? sr->user->name : "",
            status != 0 ? " not delivered: " : "", status != 0 ? tb_err_name(status) : "");
  }
}

/* The head of every request, before its body is read: the route and the
 * caller's key are known from the head alone, so a request that has no
 * route or no valid key is answered here and its body is never read (nor
 * held in memory).  What passes goes on to on_request once complete. */
void tb__server_on_head(tb__http_request_t *req) {
  tb__server_t *srv = container_of(req->server, tb__server_t, http);
  tb__sreq_t *sr = tb__arena_calloc(&req->arena, 1, sizeof(*sr));
  if (sr == NULL) {
    tb__http_respond_error(req, 503, "out of memory");
    return;
  }
  sr->srv = srv;
  sr->start_ns = uv_hrtime();
  req->data = sr;
  req->on_done = on_req_done;
  tb__http_route_match_t m;
  int rc = tb__http_router_match(&srv->router, req->method, req->path, &req->arena, &m);
  if (rc == 405) {
    static const char body[] = "{\"error\":\"method not allowed\",\"category\":\"user\"}";
    tb__http_header_t h[2] = {
      { TB_SLICE_LIT("Allow"), { m.allow, strlen(m.allow) } },
      { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/json") },
    };
    uv_buf_t b = uv_buf_init((char *)body, sizeof(body) - 1);
    tb__server_respond(req, 405, h, 2, &b, 1);
    return;
  }
  if (rc != 0) {
    if (rc == 404)
      tb__server_respond_error(req, 404, "no route for %s %.*s", req->method.base,
                               (int)(req->path.len > 200 ? 200 : req->path.len),
                               req->path.base);
    else if (rc == 400)
      tb__server_respond_error(req, 400, "invalid percent-encoding in the path");
    else
      tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  tb__route_t *rt = m.data;
  sr->route = rt;
  memcpy(req->params, m.params, m.n_params * sizeof(m.params[0]));
  req->n_params = m.n_params;
  req->route_data = rt->data;
  if (srv->auth.enabled) {
    tb_slice_t key;
    int has_key = tb__auth_request_key(req, &key);
    if (has_key)
      sr->user = tb__auth_lookup(&srv->auth, key);
    if (sr->user == NULL && !(rt->flags & TB__ROUTE_PUBLIC)) {
      srv->n_unauthorized++;
      static const tb__http_header_t h = { TB_SLICE_LIT("WWW-Authenticate"),
                                          TB_SLICE_LIT("Bearer") };
      tb__server_respond_error_h(req, 401, &h, 1, "%s",
                                 has_key ? "invalid API key"
                                         : "missing API key: send X-API-Key or "
                                           "Authorization: Bearer");
      return;
    }
  } else {
    sr->user = srv->auth.local;
  }
}

/* A complete request that passed tb__server_on_head: its route's handler. */
static void on_request(tb__http_request_t *req) {
  tb__sreq_t *sr = req->data;
  tb__route_t *rt = sr->route;
  /* The gates of the route's row, in this order, before its handler
   * reads the body. */
  if ((rt->flags & TB__ROUTE_CLOSING) && sr->srv->closing) {
    tb__server_respond_error(req, 503, "the server is closing");
    return;
  }
  if ((rt->flags & TB__ROUTE_SUBMITS) && tb__server_rate_limited(req) != 0)
    return;
  if (rt->dialect == TB__DIALECT_BOTH && tb__dialect_of(req) == TB__DIALECT_TINKERBELL) {
    sr->side = rt->tinkerbell_side;
    rt->tinkerbell_handler(req);
  } else {
    sr->side = rt->side;
    rt->handler(req);
  }
}

/* A request the store deferred until its contents were read, run again
 * (a closing server's routes may be gone with their parts). */
static void resume_deferred(tb__http_request_t *req) {
  if (tb__sreq(req)->srv->closing)
    tb__server_respond_error(req, 503, "the server is closing");
  else
    tb__sreq(req)->route->handler(req);
}

/* ------------------------------------------------------------ answers */

void tb__server_respond(tb__http_request_t *req, int status,
                        const tb__http_header_t *headers, size_t n_headers,
                        const uv_buf_t *body, size_t n_body) {
  tb__sreq(req)->status = status;
  tb__http_respond(req, status, headers, n_headers, body, n_body);
}

void tb__server_release(tb__http_request_t *req) {
  tb__sreq(req)->status = 499;
  tb__http_respond(req, 499, NULL, 0, NULL, 0);
}

void tb__server_respond_json(tb__http_request_t *req, int status, const char *json,
                             size_t len) {
  tb__sreq(req)->status = status;
  tb__http_respond_json(req, status, json, len);
}

void tb__server_respond_jsonv(tb__http_request_t *req, int status, const json_t *v) {
  size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT);
  char *buf = n > 0 ? tb__arena_alloc(&req->arena, n) : NULL;
  if (buf == NULL || json_dumpb(v, buf, n, JSON_COMPACT) != n) {
    tb__server_respond_error(req, 503, "cannot serialise the answer");
    return;
  }
  tb__server_respond_json(req, status, buf, n);
}

void tb__server_respond_answer(tb__http_request_t *req, json_t *v) {
  if (v == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  tb__server_respond_jsonv(req, 200, v);
  json_decref(v);
}

/* Every error body of the server is built here: the message (cut at 1 KiB)
 * goes through tb__json_escape, so it is valid JSON whatever bytes a
 * request put into it. */
static void respond_errorv(tb__http_request_t *req, int status, const tb__http_header_t *headers,
                           size_t n_headers, const char *fmt, va_list ap) {
  char buf[1024];
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  if (n < 0)
    buf[0] = '\0';
  /* Paths of the server's become the user's names for them. */
  char *named = tb__server_user_paths(tb__sreq(req)->srv, buf);
  const char *msg = named ? named : buf;
  size_t ml = strlen(msg);
  if (ml > sizeof(buf) - 1)
    ml = sizeof(buf) - 1;
  tb__http_header_t h[4];
  size_t nh = 0;
  for (size_t i = 0; i < n_headers && nh < 3; i++)
    h[nh++] = headers[i];
  h[nh++] = (tb__http_header_t){ TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/json") };
  char *json = tb__arena_alloc(&req->arena, ml * 6 + 64);
  if (json == NULL) {
    free(named);
    uv_buf_t b = uv_buf_init("{}", 2);
    tb__server_respond(req, status, h, nh, &b, 1);
    return;
  }
  char *p = json;
  p += sprintf(p, "{\"error\":\"");
  p += tb__json_escape(p, msg, ml);
  p += sprintf(p, "\",\"category\":\"%s\"}", status >= 500 ? "server" : "user");
  free(named);
  uv_buf_t b = uv_buf_init(json, (unsigned)(p - json));
  tb__server_respond(req, status, h, nh, &b, 1);
}

void tb__server_respond_error(tb__http_request_t *req, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  respond_errorv(req, status, NULL, 0, fmt, ap);
  va_end(ap);
}

void tb__server_respond_error_h(tb__http_request_t *req, int status,
                                const tb__http_header_t *headers, size_t n_headers,
                                const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  respond_errorv(req, status, headers, n_headers, fmt, ap);
  va_end(ap);
}

void tb__server_respond_bad(tb__http_request_t *req, const tb_error_t *err) {
  /* A decoder that failed without a path error ran out of memory (its
   * only bare return); that is the server's failure, not the request's,
   * and never a 400 whose message is "success". */
  if (err == NULL || err->code == 0 || err->code == TB_ENOMEM) {
    tb__server_respond_error(req, 503, "out of memory while reading the request");
    return;
  }
  tb__server_respond_error(req, 400, "%s", tb_error_message(err));
}

void tb__server_respond_result(tb__http_request_t *req, int status, tb__result_t *r,
                               int want_proto) {
  static const tb__http_header_t ct_json = {
    TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/json")
  };
  static const tb__http_header_t ct_proto = {
    TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/x-protobuf")
  };
  tb__sreq_t *sr = tb__sreq(req);
  int proto = r->proto != NULL && (want_proto || r->json == NULL);
  if (!proto && r->json == NULL) {
    tb__server_respond_json(req, status, "{}", 2);
    return;
  }
  /* The body goes by reference: the reference keeps it alive until the
   * write ends, even when the store lets the future go meanwhile. */
  tb__result_unref(sr->lent);
  tb__result_ref(r);
  sr->lent = r;
  uv_buf_t b = proto ? uv_buf_init(r->proto, (unsigned)r->proto_len)
                     : uv_buf_init(r->json, (unsigned)r->json_len);
  tb__server_respond(req, status, proto ? &ct_proto : &ct_json, 1, &b, 1);
}

int tb__server_parse_object(tb_slice_t body, json_t **out, tb_error_t *err) {
  *out = NULL;
  json_t *doc;
  int rc = tb__json_parse(body, &doc, err);
  if (rc == 0 && !json_is_object(doc)) {
    tb__jctx_t c;
    tb__jctx_init(&c, err);
    rc = tb__json_expect_object(&c, doc);
    json_decref(doc);
  }
  if (rc == 0)
    *out = doc;
  return rc;
}

int tb__server_parse_body(tb__http_request_t *req, json_t **out) {
  tb_error_t err = { 0 };
  int rc = tb__server_parse_object(req->body, out, &err);
  if (rc != 0) {
    tb__server_respond_bad(req, &err);
    tb_error_clear(&err);
  }
  return rc;
}

int tb__server_rate_limited(tb__http_request_t *req) {
  tb__sreq_t *sr = tb__sreq(req);
  tb__server_t *srv = sr->srv;
  uint64_t retry_ms = 0;
  if (sr->user == NULL || sr->resumed ||
      tb__auth_take(&srv->auth, sr->user, uv_now(srv->loop), &retry_ms) == 0)
    return 0;
  srv->n_rate_limited++;
  uint64_t secs = (retry_ms + 999) / 1000;
  char *v = tb__arena_alloc(&req->arena, 24);
  char *json = tb__arena_alloc(&req->arena, 256);
  if (v == NULL || json == NULL) {
    tb__server_respond_error(req, 429, "rate limit exceeded");
    return TB_EBUSY;
  }
  int vn = snprintf(v, 24, "%llu", (unsigned long long)secs);
  int n = snprintf(json, 256,
                   "{\"error\":\"rate limit: %g requests per second (burst %g); retry "
                   "after %llu s\",\"category\":\"user\",\"retry_after_ms\":%llu}",
                   srv->auth.rps, srv->auth.burst, (unsigned long long)secs,
                   (unsigned long long)retry_ms);
  tb__http_header_t h[2] = {
    { TB_SLICE_LIT("Retry-After"), { v, (size_t)vn } },
    { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/json") },
  };
  uv_buf_t b = uv_buf_init(json, (unsigned)n);
  tb__server_respond(req, 429, h, 2, &b, 1);
  return TB_EBUSY;
}

int tb__server_user_at_model_limit(const tb__server_t *srv, const tb__user_t *u) {
  return srv->opts.max_models_per_user > 0 && u->n_models >= srv->opts.max_models_per_user;
}

int tb__server_accepts_proto(const tb__http_request_t *req) {
  static const char want[] = "application/x-protobuf";
  const size_t wl = sizeof(want) - 1;
  const tb__http_header_t *h = tb__http_request_header(req, "Accept");
  if (h == NULL)
    return 0;
  for (size_t i = 0; i + wl <= h->value.len; i++) {
    tb_slice_t s = { h->value.base + i, wl };
    if (tb__slice_case_eq_str(s, want))
      return 1;
  }
  return 0;
}

/* ------------------------------------------------------------ extensions */

void tb__server_add_ext(tb__server_t *srv, tb__server_ext_t *ext) {
  ext->closed = 0;
  ext->next = srv->exts;
  srv->exts = ext;
}

static void close_core(tb__server_t *srv);

void tb__server_ext_closed(tb__server_t *srv, tb__server_ext_t *ext) {
  if (ext->closed)
    return;
  ext->closed = 1;
  for (tb__server_ext_t *e = srv->exts; e != NULL; e = e->next)
    if (!e->closed)
      return;
  if (srv->closing)
    close_core(srv);
}

/* ------------------------------------------------------------ lifecycle */

/* The futures' hook: failures name the user's paths, as error bodies do. */
static char *user_paths_of(void *data, const char *msg) {
  return tb__server_user_paths(data, msg);
}

static void free_impl(tb__server_t *srv) {
  for (size_t i = 0; i < srv->n_routes; i++) {
    tb__route_t *rt = srv->routes[i];
    free(rt->method);
    free(rt->pattern);
    free(rt->summary);
    free(rt->counts);
    free(rt);
  }
  free(srv->routes);
  free(srv->unmatched.counts);
  tb__http_router_free(&srv->router);
  for (size_t i = 0; i < srv->n_models; i++)
    free(srv->models[i].name);
  free(srv->models);
  tb__auth_free(&srv->auth);
  tb__server_path_names_free(srv);
  tb__tls_ctx_free(srv->tls);
  free((char *)srv->opts.data_dir);
  free((char *)srv->opts.api_keys_file);
  free(srv);
}

static void part_closed(tb__server_t *srv) {
  if (--srv->pending_closes > 0)
    return;
  if (srv->init_failed) {
    free_impl(srv);
    return;
  }
  tb_server_t *server = srv->pub;
  tb_server_close_cb cb = server->close_cb_;
  free_impl(srv);
  server->impl_ = NULL;
  if (cb != NULL)
    cb(server);
}

static void on_futures_closed(tb__futures_t *fs) {
  part_closed(fs->data);
}

static void on_sessions_closed(tb__sessions_t *ss) {
  part_closed(ss->data);
}

static void on_http_closed(tb__http_server_t *http) {
  part_closed(container_of(http, tb__server_t, http));
}

static void on_store_closed(void *data) {
  tb__server_t *srv = data;
  srv->store = NULL;
  part_closed(srv);
}

int tb__server_init(uv_loop_t *loop, tb_server_t *server, const tb_server_options_t *opts,
                    tb__add_routes_fn add_routes) {
  void *data = server->data;
  memset(server, 0, sizeof(*server));
  server->data = data;
  server->loop = loop;
  tb_server_options_t o = { 0 };
  if (opts != NULL)
    o = *opts;
  if (loop == NULL || isnan(o.rate_limit_rps) || o.rate_limit_rps < 0 ||
      isnan(o.rate_limit_burst) || o.rate_limit_burst < 0) {
    snprintf(server->message, sizeof(server->message), "invalid server options");
    return TB_EINVAL;
  }
  if (o.long_poll_ms == 0)
    o.long_poll_ms = DEFAULT_LONG_POLL_MS;
  if (o.session_timeout_ms == 0)
    o.session_timeout_ms = DEFAULT_SESSION_TIMEOUT_MS;
  if (o.result_grace_ms < MIN_GRACE_MS)
    o.result_grace_ms = MIN_GRACE_MS;
  if (o.result_ttl_ms == 0)
    o.result_ttl_ms = DEFAULT_TTL_MS;
  if (o.max_result_bytes == 0)
    o.max_result_bytes = DEFAULT_MAX_RESULT_BYTES;
  if (o.max_body == 0)
    o.max_body = TB_HTTP_DEFAULT_MAX_BODY;
  if (o.max_body_memory != 0 && o.max_body_memory < o.max_body) {
    snprintf(server->message, sizeof(server->message),
             "max_body_memory (%zu) must be at least max_body (%zu)", o.max_body_memory,
             o.max_body);
    return TB_EINVAL;
  }
  tb__server_t *srv = calloc(1, sizeof(*srv));
  if (srv == NULL)
    return TB_ENOMEM;
  srv->pub = server;
  srv->loop = loop;
  srv->opts = o;
  srv->opts.data_dir = o.data_dir ? tb__strndup(o.data_dir, strlen(o.data_dir)) : NULL;
  srv->opts.api_keys_file =
      o.api_keys_file ? tb__strndup(o.api_keys_file, strlen(o.api_keys_file)) : NULL;
  srv->unmatched.method = "";
  srv->unmatched.pattern = "";
  tb__http_router_init(&srv->router);
  if ((o.data_dir && !srv->opts.data_dir) || (o.api_keys_file && !srv->opts.api_keys_file)) {
    free_impl(srv);
    return TB_ENOMEM;
  }
  int rc = tb__auth_init(&srv->auth, o.api_keys_file, o.rate_limit_rps, o.rate_limit_burst,
                         server->message, sizeof(server->message));
  if (rc != 0) {
    free_impl(srv);
    return rc;
  }
  if (o.tls_cert_file != NULL || o.tls_key_file != NULL) {
    tb_error_t err = { 0 };
    rc = o.tls_cert_file && o.tls_key_file
             ? tb__tls_ctx_server_new(o.tls_cert_file, o.tls_key_file, &srv->tls, &err)
             : tb_error_set(&err, TB_EINVAL, TB_CATEGORY_USER,
                            "HTTPS needs both a certificate and its key");
    if (rc != 0) {
      snprintf(server->message, sizeof(server->message), "%s", tb_error_message(&err));
      tb_error_clear(&err);
      free_impl(srv);
      return rc;
    }
  }
  rc = add_routes(srv, TB__PART_CORE, NULL);
  if (rc != 0) {
    snprintf(server->message, sizeof(server->message), "cannot set up the routes");
    free_impl(srv);
    return rc;
  }
  tb__futures_opts_t fo = {
    .long_poll_ms = o.long_poll_ms,
    .grace_ms = o.result_grace_ms,
    .ttl_ms = o.result_ttl_ms,
    .tombstone_ms = TOMBSTONE_MS,
    .max_bytes = o.max_result_bytes,
    .rewrite_message = user_paths_of,
    .rewrite_data = srv,
  };
  tb__http_server_options_t ho = { 0 };
  ho.on_head = tb__server_on_head;
  ho.on_request = on_request;
  ho.max_body = o.max_body;
  ho.max_body_memory = o.max_body_memory;
  ho.request_timeout_ms = o.request_timeout_ms;
  ho.max_connections = o.max_connections;
  ho.tls_ctx = srv->tls;
  /* A held poll must not be cut by the idle timer: the longest silence
   * on a connection is a poll held to its end. */
  ho.idle_timeout_ms = o.long_poll_ms + 60000;
  rc = tb__futures_init(loop, &srv->futures, &fo);
  if (rc != 0) {
    free_impl(srv);
    return rc;
  }
  srv->futures.data = srv;
  int sessions_ok = 0, http_ok = 0;
  rc = tb__sessions_init(loop, &srv->sessions, o.session_timeout_ms);
  if (rc == 0) {
    sessions_ok = 1;
    srv->sessions.data = srv;
    rc = tb__http_server_init(loop, &srv->http, &ho);
    http_ok = rc == 0;
  }
  /* With a data_dir: the database (opened on the threadpool) and the
   * REST routes over it. */
  if (rc == 0 && srv->opts.data_dir != NULL) {
    rc = add_routes(srv, TB__PART_STORE, srv);
    rc = rc ? rc : tb__store_open(srv, resume_deferred, &srv->store);
  }
  if (rc != 0) {
    /* The stores' timers are open: they close when the loop runs next,
     * and the last one frees srv without touching the caller's struct. */
    snprintf(server->message, sizeof(server->message), "cannot set up the server: %s",
             tb_strerror(rc));
    srv->init_failed = 1;
    srv->closing = 1;
    srv->pending_closes = 1 + sessions_ok + http_ok;
    tb__futures_close(&srv->futures, on_futures_closed);
    if (sessions_ok)
      tb__sessions_close(&srv->sessions, on_sessions_closed);
    if (http_ok)
      tb__http_server_close(&srv->http, on_http_closed);
    return rc;
  }
  server->impl_ = srv;
  return 0;
}

int tb_server_listen(tb_server_t *server, const char *host, int port) {
  tb__server_t *srv = server->impl_;
  if (srv == NULL || srv->closing)
    return TB_ECLOSING;
  int rc = tb__http_server_listen(&srv->http, host, port);
  if (rc != 0)
    snprintf(server->message, sizeof(server->message), "cannot listen on %s:%d: %s", host,
             port, tb_strerror(rc));
  return rc;
}

int tb_server_port(const tb_server_t *server) {
  if (server->impl_ == NULL)
    return TB_ECLOSING;
  return tb__http_server_port(&server->impl_->http);
}

int tb_server_add_model(tb_server_t *server, const char *name, int64_t max_context_length) {
  tb__server_t *srv = server->impl_;
  if (srv == NULL || name == NULL || name[0] == '\0' || max_context_length <= 0)
    return TB_EINVAL;
  for (size_t i = 0; i < srv->n_models; i++)
    if (strcmp(srv->models[i].name, name) == 0)
      return TB_EEXIST;
  if (srv->n_models == srv->cap_models) {
    size_t cap = srv->cap_models ? srv->cap_models * 2 : 4;
    tb__model_info_t *m = realloc(srv->models, cap * sizeof(*m));
    if (m == NULL)
      return TB_ENOMEM;
    srv->models = m;
    srv->cap_models = cap;
  }
  char *copy = tb__strndup(name, strlen(name));
  if (copy == NULL)
    return TB_ENOMEM;
  srv->models[srv->n_models].name = copy;
  srv->models[srv->n_models].max_context_length = max_context_length;
  srv->n_models++;
  return 0;
}

static void close_core(tb__server_t *srv) {
  if (srv->pending_closes > 0)
    return;
  srv->pending_closes = 3 + (srv->store != NULL);
  /* The HTTP server first: held polls then carry "Connection: close" when
   * the store answers them right after. */
  tb__http_server_close(&srv->http, on_http_closed);
  tb__futures_close(&srv->futures, on_futures_closed);
  tb__sessions_close(&srv->sessions, on_sessions_closed);
  /* After the parts plugged in later: what they wrote on their way out is
   * in the queue, which drains before the database closes. */
  if (srv->store != NULL)
    tb__store_close(srv->store, on_store_closed, srv);
}

void tb_server_close(tb_server_t *server, tb_server_close_cb close_cb) {
  tb__server_t *srv = server->impl_;
  if (srv == NULL || srv->closing)
    return;
  srv->closing = 1;
  server->close_cb_ = close_cb;
  int waiting = 0;
  for (tb__server_ext_t *e = srv->exts; e != NULL; e = e->next)
    if (!e->closed) {
      waiting = 1;
      e->close(srv, e);
    }
  /* An extension that finished inside its close already moved on. */
  if (!waiting)
    close_core(srv);
}

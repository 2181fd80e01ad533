/*
 * The request router and URL helpers (see router.h).
 *
 * A pattern is compiled once into segments; matching walks the raw path
 * and the segments together, so a request costs no allocation unless it
 * has parameters (their decoded values go to the request's arena).  A
 * linear scan over the routes is plenty for an API of a few dozen routes.
 */
#include "http/router.h"

#include <stdlib.h>
#include <string.h>

typedef enum { SEG_LITERAL, SEG_PARAM, SEG_REST } seg_kind_t;

typedef struct {
  seg_kind_t kind;
  tb_slice_t text;  /* the literal, or the parameter's name */
} seg_t;

struct tb__http_route_s {
  char *method;
  char *pattern;    /* owns the bytes seg_t slices point to */
  seg_t *segs;
  size_t n_segs;
  tb__http_handler_cb handler;
  void *data;
};

void tb__http_router_init(tb__http_router_t *r) {
  memset(r, 0, sizeof(*r));
}

void tb__http_router_free(tb__http_router_t *r) {
  for (size_t i = 0; i < r->n_routes; i++) {
    free(r->routes[i].method);
    free(r->routes[i].pattern);
    free(r->routes[i].segs);
  }
  free(r->routes);
  tb__http_router_init(r);
}

/* Splits "/a/{b}/{c...}" into segments.  Returns the count or -1. */
static long compile(const char *pattern, seg_t *segs, size_t max) {
  if (pattern[0] != '/')
    return -1;
  size_t n = 0;
  const char *p = pattern + 1;
  for (;;) {
    const char *end = strchr(p, '/');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (n == max)
      return -1;
    seg_t *s = &segs[n++];
    if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
      s->kind = SEG_PARAM;
      s->text.base = p + 1;
      s->text.len = len - 2;
      if (s->text.len > 3 && memcmp(p + len - 4, "...", 3) == 0) {
        s->kind = SEG_REST;
        s->text.len -= 3;
        if (end != NULL)  /* the rest parameter must be last */
          return -1;
      }
      if (s->text.len == 0 || memchr(s->text.base, '{', s->text.len) ||
          memchr(s->text.base, '}', s->text.len))
        return -1;
    } else {
      if (memchr(p, '{', len) || memchr(p, '}', len))
        return -1;
      s->kind = SEG_LITERAL;
      s->text.base = p;
      s->text.len = len;
    }
    if (end == NULL)
      break;
    p = end + 1;
  }
  return (long)n;
}

int tb__http_router_add(tb__http_router_t *r, const char *method,
                        const char *pattern, tb__http_handler_cb handler,
                        void *data) {
  if (method == NULL || pattern == NULL || handler == NULL || method[0] == '\0')
    return TB_EINVAL;
  size_t max = 1;
  for (const char *c = pattern; *c; c++)
    max += *c == '/';
  tb__http_route_t rt = { 0 };
  rt.pattern = tb__strndup(pattern, strlen(pattern));
  rt.method = tb__strndup(method, strlen(method));
  rt.segs = calloc(max, sizeof(seg_t));
  if (rt.pattern == NULL || rt.method == NULL || rt.segs == NULL)
    goto nomem;
  long n = compile(rt.pattern, rt.segs, max);
  size_t n_params = 0;
  for (long i = 0; i < n; i++)
    n_params += rt.segs[i].kind != SEG_LITERAL;
  if (n < 0 || n_params > TB_HTTP_MAX_PARAMS) {
    free(rt.pattern);
    free(rt.method);
    free(rt.segs);
    return TB_EINVAL;
  }
  rt.n_segs = (size_t)n;
  rt.handler = handler;
  rt.data = data;
  if (r->n_routes == r->cap_routes) {
    size_t cap = r->cap_routes ? r->cap_routes * 2 : 16;
    tb__http_route_t *routes = realloc(r->routes, cap * sizeof(*routes));
    if (routes == NULL)
      goto nomem;
    r->routes = routes;
    r->cap_routes = cap;
  }
  r->routes[r->n_routes++] = rt;
  return 0;
nomem:
  free(rt.pattern);
  free(rt.method);
  free(rt.segs);
  return TB_ENOMEM;
}

/* Matches the path's shape; fills raw (undecoded) parameter values. */
static int match_path(const tb__http_route_t *rt, tb_slice_t path,
                      tb_slice_t *raw) {
  if (path.len == 0 || path.base[0] != '/')
    return 0;
  const char *p = path.base + 1, *end = path.base + path.len;
  size_t n_raw = 0;
  int more = 1;  /* path segments left to match */
  for (size_t i = 0; i < rt->n_segs; i++) {
    const seg_t *s = &rt->segs[i];
    if (!more)
      return 0;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *seg_end = slash ? slash : end;
    size_t len = (size_t)(seg_end - p);
    switch (s->kind) {
      case SEG_LITERAL:
        if (len != s->text.len || memcmp(p, s->text.base, len) != 0)
          return 0;
        break;
      case SEG_PARAM:
        if (len == 0)
          return 0;
        raw[n_raw].base = p;
        raw[n_raw++].len = len;
        break;
      case SEG_REST:
        if (p == end)
          return 0;
        raw[n_raw].base = p;
        raw[n_raw++].len = (size_t)(end - p);
        return 1;
    }
    if (slash == NULL)
      more = 0;
    else
      p = slash + 1;
  }
  return !more;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int tb__http_percent_decode(tb_slice_t in, int plus_is_space, tb__arena_t *arena,
                            tb_slice_t *out) {
  char *dst = tb__arena_alloc(arena, in.len + 1);
  if (dst == NULL)
    return TB_ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < in.len; i++) {
    char c = in.base[i];
    if (c == '%') {
      if (in.len - i < 3)
        return TB_EINVAL;
      int hi = hexval(in.base[i + 1]), lo = hexval(in.base[i + 2]);
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
        return TB_EINVAL;
      c = (char)(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    dst[n++] = c;
  }
  dst[n] = '\0';
  out->base = dst;
  out->len = n;
  return 0;
}

static int method_matches(const tb__http_route_t *rt, tb_slice_t method) {
  if (tb__slice_eq_str(method, rt->method))
    return 1;
  return tb__slice_eq_str(method, "HEAD") && strcmp(rt->method, "GET") == 0;
}

static void allow_add(char *allow, size_t cap, const char *method) {
  /* Each method once; a full buffer just stops growing. */
  size_t ml = strlen(method);
  for (const char *p = allow; (p = strstr(p, method)) != NULL; p += ml)
    if ((p == allow || p[-1] == ' ') && (p[ml] == ',' || p[ml] == '\0'))
      return;
  size_t len = strlen(allow);
  if (len + ml + 3 > cap)
    return;
  if (len > 0) {
    memcpy(allow + len, ", ", 2);
    len += 2;
  }
  memcpy(allow + len, method, ml + 1);
}

int tb__http_router_match(const tb__http_router_t *r, tb_slice_t method,
                          tb_slice_t path, tb__arena_t *arena,
                          tb__http_route_match_t *m) {
  tb_slice_t raw[TB_HTTP_MAX_PARAMS];
  int path_seen = 0;
  m->allow[0] = '\0';
  m->n_params = 0;
  for (size_t i = 0; i < r->n_routes; i++) {
    const tb__http_route_t *rt = &r->routes[i];
    if (!match_path(rt, path, raw))
      continue;
    if (!method_matches(rt, method)) {
      path_seen = 1;
      allow_add(m->allow, sizeof(m->allow), rt->method);
      continue;
    }
    size_t k = 0;
    for (size_t j = 0; j < rt->n_segs; j++) {
      if (rt->segs[j].kind == SEG_LITERAL)
        continue;
      m->params[k].name = rt->segs[j].text;
      int rc = tb__http_percent_decode(raw[k], 0, arena, &m->params[k].value);
      if (rc == TB_EINVAL)
        return 400;
      if (rc != 0)
        return rc;
      k++;
    }
    m->n_params = k;
    m->handler = rt->handler;
    m->data = rt->data;
    return 0;
  }
  return path_seen ? 405 : 404;
}

void tb__http_router_handle(const tb__http_router_t *r, tb__http_request_t *req) {
  tb__http_route_match_t m;
  int rc = tb__http_router_match(r, req->method, req->path, &req->arena, &m);
  if (rc == 0) {
    memcpy(req->params, m.params, m.n_params * sizeof(m.params[0]));
    req->n_params = m.n_params;
    req->route_data = m.data;
    m.handler(req);
    return;
  }
  if (rc == 405) {
    static const char body[] =
        "{\"error\": \"method not allowed\", \"category\": \"user\"}";
    tb__http_header_t h[2] = {
      { TB_SLICE_LIT("Allow"), { m.allow, strlen(m.allow) } },
      { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/json") },
    };
    uv_buf_t b = uv_buf_init((char *)body, sizeof(body) - 1);
    tb__http_respond(req, 405, h, 2, &b, 1);
    return;
  }
  if (rc == 404)
    tb__http_respond_error(req, 404, "not found");
  else if (rc == 400)
    tb__http_respond_error(req, 400, "invalid percent-encoding in the path");
  else
    tb__http_respond_error(req, 503, "out of memory");
}

void tb__http_router_serve(tb__http_request_t *req) {
  tb__http_router_handle(req->server->opts.router, req);
}

const tb_slice_t *tb__http_request_param(const tb__http_request_t *req,
                                         const char *name) {
  for (size_t i = 0; i < req->n_params; i++)
    if (tb__slice_eq_str(req->params[i].name, name))
      return &req->params[i].value;
  return NULL;
}

int tb__http_request_query(tb__http_request_t *req, const char *name,
                           tb_slice_t *value) {
  const char *p = req->query.base, *end = req->query.base + req->query.len;
  while (p < end) {
    const char *amp = memchr(p, '&', (size_t)(end - p));
    const char *pair_end = amp ? amp : end;
    const char *eq = memchr(p, '=', (size_t)(pair_end - p));
    const char *key_end = eq ? eq : pair_end;
    tb_slice_t key = { p, (size_t)(key_end - p) }, k;
    int rc = tb__http_percent_decode(key, 1, &req->arena, &k);
    if (rc != 0)
      return rc;
    if (tb__slice_eq_str(k, name)) {
      tb_slice_t v = { eq ? eq + 1 : pair_end, eq ? (size_t)(pair_end - eq - 1) : 0 };
      rc = tb__http_percent_decode(v, 1, &req->arena, value);
      return rc != 0 ? rc : 1;
    }
    p = pair_end + 1;
  }
  return 0;
}

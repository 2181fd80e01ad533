/*
 * The request router: method + path pattern -> handler.
 *
 * Patterns are literal segments and parameters separated by '/':
 *   "/api/v1/training_runs/{run_id}"
 *   "/api/v1/training_runs/{run_id}/checkpoints/{checkpoint_id...}"
 * A parameter matches one non-empty segment; a trailing "{name...}" matches
 * the non-empty rest of the path, '/' included ("weights/step-10").
 * Segments are split before percent-decoding, so "%2F" inside a parameter
 * becomes a '/' in its value and never a separator.  Parameter values are
 * decoded into the request's arena; bad escapes and %00 are rejected with
 * 400.  Whether a value like ".." is acceptable is the handler's call.
 *
 * Routes are tried in the order they were added.  A path that matches a
 * route of another method gets 405 with an Allow header; no match at all
 * gets 404.  HEAD is served by the GET route (the server drops the body).
 *
 * Non-goals: regular expressions, wildcards in the middle of a pattern,
 * host-based routing.
 */
#ifndef TB_HTTP_ROUTER_H
#define TB_HTTP_ROUTER_H

#include "http/server.h"

typedef struct tb__http_route_s tb__http_route_t;

struct tb__http_router_s {
  /* private */
  tb__http_route_t *routes;
  size_t n_routes, cap_routes;
};

void tb__http_router_init(tb__http_router_t *r);
void tb__http_router_free(tb__http_router_t *r);
/* Adds a route; data is handed to the handler as req->route_data.
 * Returns 0, TB_EINVAL for a malformed pattern, or TB_ENOMEM. */
int tb__http_router_add(tb__http_router_t *r, const char *method,
                        const char *pattern, tb__http_handler_cb handler,
                        void *data);

typedef struct tb__http_route_match_s {
  tb__http_handler_cb handler;
  void *data;
  tb__http_param_t params[TB_HTTP_MAX_PARAMS];
  size_t n_params;
  char allow[96];  /* for 405: "GET, POST" */
} tb__http_route_match_t;

/* Finds the route for method and raw path.  Returns 0 (m filled), 404,
 * 405 (m->allow filled), 400 (bad percent-encoding in a parameter), or
 * TB_ENOMEM.  Parameter values are allocated in arena. */
int tb__http_router_match(const tb__http_router_t *r, tb_slice_t method,
                          tb_slice_t path, tb__arena_t *arena,
                          tb__http_route_match_t *m);

/* Routes one request: calls its handler, or answers 404/405/400 itself.
 * Suits tb__http_server_options_t.router. */
void tb__http_router_handle(const tb__http_router_t *r, tb__http_request_t *req);
/* tb__http_router_handle with the router of req's server: the server's
 * on_request when its options name a router. */
void tb__http_router_serve(tb__http_request_t *req);

/* Percent-decodes in into arena (NUL-terminated).  plus_is_space for
 * query strings.  Returns 0, TB_EINVAL (bad escape or %00), TB_ENOMEM. */
int tb__http_percent_decode(tb_slice_t in, int plus_is_space, tb__arena_t *arena,
                            tb_slice_t *out);

#endif /* TB_HTTP_ROUTER_H */

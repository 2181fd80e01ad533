/*
 * The service routes both dialects share: client configuration, health,
 * capabilities, telemetry, the index of every route (GET /, built from
 * the route table so that it lists exactly what is served) and the
 * Prometheus metrics (GET /metrics).
 */
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "server/internal.h"
#include "server/routes.h"
#include "wire/service.h"

/* Table 2.1 of the wire notes: the SDK's defaults, except that pyqwest is
 * off (a plain HTTP/1.1 server is reached through httpx). */
static const char client_config[] =
    "{\"pjwt_auth_enabled\":false,"
    "\"credential_default_source\":\"api_key\","
    "\"sample_dispatch_bytes_semaphore_size\":10485760,"
    "\"inflight_response_bytes_semaphore_size\":52428800,"
    "\"parallel_fwdbwd_chunks\":true,"
    "\"proto_compress_fwdbwd\":false,"
    "\"fwdbwd_max_chunk_len\":1024,"
    "\"fwdbwd_max_chunk_bytes_count\":5000000,"
    "\"fwdbwd_dispatch_bytes_semaphore_size\":50000000,"
    "\"billing_exception_max_pause_duration_sec\":3600,"
    "\"sample_no_retries\":false,"
    "\"sample_enable_stuck_detection\":true,"
    "\"sample_max_concurrent_requests\":2000,"
    "\"use_pyqwest_transport\":false,"
    "\"create_model_via_load_weights\":false}";

/* Validates {"sdk_version"?: str}; answers 400 itself and returns -1 when
 * the body is wrong.  An empty body is accepted. */
static int check_sdk_body(tb__http_request_t *req) {
  if (req->body.len == 0)
    return 0;
  json_t *doc;
  if (tb__server_parse_body(req, &doc) != 0)
    return -1;
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  tb_slice_t v;
  int rc = tb__json_get_string(&c, doc, "sdk_version", TB_JSON_OPTIONAL, &v);
  json_decref(doc);
  if (rc < 0) {
    tb__server_respond_bad(req, &err);
    tb_error_clear(&err);
    return -1;
  }
  return 0;
}

/* The Tinker Python SDK (0.25, httpx) asks this through a one-off client
 * it never closes; its late clean-up then breaks the next connection, a
 * 10 s stall at the start of every script.  Closing the connection from
 * this side after the answer leaves it nothing to clean up. */
void tb__route_client_config(tb__http_request_t *req) {
  tb__http_request_close_connection(req);
  if (check_sdk_body(req) == 0)
    tb__server_respond_json(req, 200, client_config, sizeof(client_config) - 1);
}

void tb__route_dynamic_config(tb__http_request_t *req) {
  static const char body[] = "{\"refresh_interval_sec\":300}";
  if (check_sdk_body(req) == 0)
    tb__server_respond_json(req, 200, body, sizeof(body) - 1);
}

void tb__route_healthz(tb__http_request_t *req) {
  static const char body[] = "{\"status\":\"ok\"}";
  tb__server_respond_json(req, 200, body, sizeof(body) - 1);
}

void tb__route_capabilities(tb__http_request_t *req) {
  tb__server_t *srv = tb__server_from_req(req);
  tb__wire_supported_model_t *ms = tb__arena_calloc(&req->arena, srv->n_models + 1,
                                                    sizeof(*ms));
  for (size_t i = 0; ms != NULL && i < srv->n_models; i++)
    ms[i] = (tb__wire_supported_model_t){ srv->models[i].name,
                                          srv->models[i].max_context_length };
  tb__wire_capabilities_t w = { ms, srv->n_models };
  tb__server_respond_answer(req, ms ? tb__wire_capabilities_to_json(&w) : NULL);
}

/* {"events": [...], "platform", "sdk_version", "session_id",
 * "process_uuid"}: counted, not stored. */
int tb__route_telemetry(tb__route_call_t *call) {
  tb__server_t *srv = tb__server_from_req(call->req);
  const json_t *doc = call->doc;
  tb__jctx_t *c = &call->c;
  json_t *events;
  tb_slice_t s;
  int rc = tb__json_get_array(c, doc, "events", TB_JSON_REQUIRED, &events);
  static const char *const strs[] = { "platform", "sdk_version", "session_id",
                                      "process_uuid" };
  for (size_t i = 0; rc >= 0 && i < sizeof(strs) / sizeof(strs[0]); i++)
    rc = tb__json_get_string(c, doc, strs[i], TB_JSON_OPTIONAL, &s);
  if (rc < 0)
    return rc;
  srv->n_telemetry_batches++;
  srv->n_telemetry_events += json_array_size(events);
  static const char body[] = "{\"status\":\"accepted\"}";
  tb__server_respond_json(call->req, 200, body, sizeof(body) - 1);
  return 0;
}

static const char *dialect_name(tb__dialect_t d) {
  switch (d) {
    case TB__DIALECT_TINKER: return "tinker";
    case TB__DIALECT_TINKERBELL: return "tinkerbell";
    case TB__DIALECT_BOTH: return "tinker+tinkerbell";
    default: return "service";
  }
}

void tb__route_index(tb__http_request_t *req) {
  tb__server_t *srv = tb__server_from_req(req);
  tb__wire_endpoint_t *eps = tb__arena_calloc(&req->arena, srv->n_routes + 1, sizeof(*eps));
  for (size_t i = 0; eps != NULL && i < srv->n_routes; i++) {
    const tb__route_t *rt = srv->routes[i];
    eps[i] = (tb__wire_endpoint_t){ rt->method, rt->pattern, dialect_name(rt->dialect),
                                    srv->auth.enabled && !(rt->flags & TB__ROUTE_PUBLIC),
                                    rt->summary };
  }
  tb__wire_service_index_t w = {
    "Tinkerbell", TB_VERSION_STRING, eps, srv->n_routes,
    "The Tinker SDK's /api/v1 routes: work requests answer {request_id}; "
    "POST /api/v1/retrieve_future long-polls the result.",
    "Sync routes answer the result; *_async routes answer {request_id, model_id}; "
    "POST /retrieve_future answers 202 while pending.",
    "Where a path is in both dialects, a protobuf body or a JSON body with type, "
    "seq_id, forward_backward_input, forward_input, session_id, sampling_session_id or "
    "an object prompt is the Tinker dialect; other JSON objects are the Tinkerbell "
    "dialect."
  };
  tb__server_respond_answer(req, eps ? tb__wire_service_index_to_json(&w) : NULL);
}

static void metric(tb__buf_t *b, const char *name, const char *type, const char *help,
                   double value) {
  tb__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type,
                 name, value);
}

static void route_counts(tb__buf_t *b, const tb__route_t *rt) {
  for (size_t i = 0; i < rt->n_counts; i++)
    tb__buf_printf(b, "tinkerbell_http_requests_total{method=\"%s\",route=\"%s\","
                      "status=\"%d\"} %llu\n",
                   rt->method[0] ? rt->method : "any",
                   rt->pattern[0] ? rt->pattern : "unmatched", rt->counts[i].status,
                   (unsigned long long)rt->counts[i].count);
}

static void on_metrics_done(tb__http_request_t *req, int status) {
  free(tb__sreq(req)->data);
}

void tb__route_metrics(tb__http_request_t *req) {
  tb__server_t *srv = tb__server_from_req(req);
  const tb__futures_t *fs = &srv->futures;
  tb__buf_t b = TB_BUF_INIT;
  tb__buf_printf(&b, "# HELP tinkerbell_http_requests_total Requests answered, by route "
                     "and status (499: the client went away).\n"
                     "# TYPE tinkerbell_http_requests_total counter\n");
  for (size_t i = 0; i < srv->n_routes; i++)
    route_counts(&b, srv->routes[i]);
  route_counts(&b, &srv->unmatched);
  metric(&b, "tinkerbell_futures_pending", "gauge", "Futures whose job has not finished.",
         (double)fs->n_pending);
  tb__buf_printf(&b, "# HELP tinkerbell_futures_queue_state Pending futures by the queue "
                     "state they report.\n# TYPE tinkerbell_futures_queue_state gauge\n");
  for (int s = TB__QUEUE_ACTIVE; s <= TB__QUEUE_PAUSED_RATE_LIMIT; s++)
    tb__buf_printf(&b, "tinkerbell_futures_queue_state{state=\"%s\"} %zu\n",
                   tb__queue_state_name((tb__queue_state_t)s), fs->n_queue_state[s]);
  metric(&b, "tinkerbell_futures_finished", "gauge",
         "Finished futures whose results are held.", (double)fs->n_finished);
  metric(&b, "tinkerbell_futures_created_total", "counter", "Futures created.",
         (double)fs->n_created);
  metric(&b, "tinkerbell_futures_expired_total", "counter",
         "Results dropped after their TTL or grace period.", (double)fs->n_expired);
  metric(&b, "tinkerbell_futures_evicted_total", "counter",
         "Results dropped to keep the memory bound.", (double)fs->n_evicted);
  metric(&b, "tinkerbell_result_bytes", "gauge", "Bytes held by results.",
         (double)fs->bytes);
  metric(&b, "tinkerbell_long_polls_held", "gauge", "retrieve_future requests held now.",
         (double)fs->n_polls);
  metric(&b, "tinkerbell_try_again_total", "counter", "try_again answers.",
         (double)fs->n_try_again);
  metric(&b, "tinkerbell_sessions_live", "gauge", "Sessions with a recent heartbeat.",
         (double)srv->sessions.n_live);
  metric(&b, "tinkerbell_sessions_expired", "gauge", "Expired sessions still listed.",
         (double)srv->sessions.n_expired);
  metric(&b, "tinkerbell_sessions_created_total", "counter", "Sessions created.",
         (double)srv->sessions.n_created);
  metric(&b, "tinkerbell_sessions_closed_total", "counter",
         "Sessions closed by their clients (POST /api/v1/close_session).",
         (double)srv->sessions.n_closed);
  metric(&b, "tinkerbell_telemetry_batches_total", "counter", "Telemetry batches accepted.",
         (double)srv->n_telemetry_batches);
  metric(&b, "tinkerbell_telemetry_events_total", "counter", "Telemetry events accepted.",
         (double)srv->n_telemetry_events);
  metric(&b, "tinkerbell_rate_limited_total", "counter", "Submissions answered 429.",
         (double)srv->n_rate_limited);
  metric(&b, "tinkerbell_unauthorized_total", "counter", "Requests answered 401.",
         (double)srv->n_unauthorized);
  metric(&b, "tinkerbell_http_connections_open", "gauge", "Connections open.",
         (double)srv->http.n_conns);
  metric(&b, "tinkerbell_http_connections_refused_total", "counter",
         "Connections answered 503 beyond --max-connections.",
         (double)srv->http.n_refused_conns);
  metric(&b, "tinkerbell_http_body_bytes", "gauge",
         "Bytes of request bodies held (counted against --max-body-memory).",
         (double)srv->http.body_memory);
  metric(&b, "tinkerbell_http_bodies_refused_total", "counter",
         "Requests answered 503 beyond --max-body-memory.",
         (double)srv->http.n_refused_bodies);
  for (tb__server_ext_t *e = srv->exts; e != NULL; e = e->next)
    if (e->metrics)
      e->metrics(srv, e, &b);
  if (b.base == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  static const tb__http_header_t ct = { TB_SLICE_LIT("Content-Type"),
                                       TB_SLICE_LIT("text/plain; version=0.0.4") };
  tb__sreq(req)->data = b.base;
  tb__sreq(req)->on_done = on_metrics_done;
  uv_buf_t body = uv_buf_init(b.base, (unsigned)b.len);
  tb__server_respond(req, 200, &ct, 1, &body, 1);
}

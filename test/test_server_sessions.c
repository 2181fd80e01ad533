/*
 * Sessions closed by their clients (POST /api/v1/close_session) and what
 * the server tells about stuck work: the models of a closed session go at
 * once, every later call on it answers 410; try_again answers say when a
 * job started and how many jobs are ahead of it, and /metrics ages the
 * oldest queued and running ones.
 */
/* The shared helpers include some this file has no use for. */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "test_server_training.h"

#include <sys/stat.h>

TEST(close_session_unloads_and_answers_410) {
  char *sid, *mid;
  start_training_with_model(&sid, &mid);
  char body[512];
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":1,\"path\":\"keep\",\"type\":\"save_weights\"}",
           mid);
  await_done("/api/v1/save_weights", body);
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":0,"
           "\"model_path\":\"tinker://%s/weights/keep\"}", sid, mid);
  char *ssid = post_field("/api/v1/create_sampling_session", NULL, body, "sampling_session_id");
  /* One operation accepted before the close, one waiting for a seq_id
   * that never comes. */
  char *run = submit_fwdbwd(mid, 2, NULL);
  char *held = submit_fwdbwd(mid, 4, NULL);
  ASSERT_EQ_INT(srv->auth.local->n_models, 1);
  char close[128];
  snprintf(close, sizeof(close), "{\"session_id\":\"%s\",\"type\":\"close_session\"}", sid);
  hc_expect("POST", "/api/v1/close_session", NULL, close, 200, "{\"type\":\"close_session\"}");
  /* The accepted one runs to the end, the held one fails, the model goes. */
  json_t *v = result_json(run, NULL);
  ASSERT(json_object_get(v, "loss_fn_outputs") != NULL || json_object_get(v, "metrics") != NULL);
  json_decref(v);
  char *msg = failure_of(held, "user");
  ASSERT_STR_CONTAINS(msg, "unloaded");
  free(msg);
  RUN_UNTIL(srv->auth.local->n_models == 0);
  /* Every later call on the session, its model or its sampler: 410. */
  hc_expect("POST", "/api/v1/close_session", NULL, close, 410, "was closed");
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\"}", sid);
  hc_expect("POST", "/api/v1/session_heartbeat", NULL, body, 410, "was closed");
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":1,\"base_model\":\"base\"}", sid);
  hc_expect("POST", "/api/v1/create_model", NULL, body, 410, "\"category\":\"user\"");
  char *fb = fwd_body(mid, 3, "forward_backward_input", "cross_entropy", "[1,2,3,4]",
                      SFT_INPUTS);
  hc_expect("POST", "/api/v1/forward_backward", NULL, fb, 410, "was closed");
  free(fb);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"get_info\"}", mid);
  hc_expect("POST", "/api/v1/get_info", NULL, body, 410, "was closed");
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"sampling_session_seq_id\":1,\"base_model\":\"base\"}",
           sid);
  hc_expect("POST", "/api/v1/create_sampling_session", NULL, body, 410, "was closed");
  snprintf(body, sizeof(body),
           "{\"sampling_session_id\":\"%s\",\"seq_id\":0,"
           "\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1]}]},"
           "\"sampling_params\":{\"max_tokens\":1}}", ssid);
  hc_expect("POST", "/api/v1/asample", NULL, body, 410, "was closed");
  char url[256];
  snprintf(url, sizeof(url), "/api/v1/samplers/%s", ssid);
  hc_expect("GET", url, NULL, NULL, 410, "was closed");
  /* Its records and checkpoints stay. */
  snprintf(url, sizeof(url), "/api/v1/sessions/%s", sid);
  hc_expect("GET", url, NULL, NULL, 200, "\"closed\":true");
  char dir[256];
  struct stat st;
  snprintf(dir, sizeof(dir), "%s/%s/weights/keep", data_dir, mid);
  ASSERT_OK(stat(dir, &st));
  hc_expect("GET", "/metrics", NULL, NULL, 200, "tinkerbell_sessions_closed_total 1");
  /* Another session is not touched; unknown and malformed are 404 / 400. */
  char *sid2 = create_session(NULL);
  char *mid2 = create_model(sid2, 0, NULL);
  snprintf(body, sizeof(body), "{\"model_id\":\"%s\",\"type\":\"get_info\"}", mid2);
  hc_expect("POST", "/api/v1/get_info", NULL, body, 200, NULL);
  hc_expect("POST", "/api/v1/close_session", NULL, "{\"session_id\":\"sess-nope\"}", 404,
            "unknown session");
  hc_expect("POST", "/api/v1/close_session", NULL, "{}", 400, "session_id: ");
  snprintf(body, sizeof(body), "{\"session_id\":\"%s\",\"type\":\"session_heartbeat\"}", sid2);
  hc_expect("POST", "/api/v1/close_session", NULL, body, 400, "type: expected");
  free(mid2);
  free(sid2);
  free(run);
  free(held);
  free(ssid);
  free(mid);
  free(sid);
  stop_training();
}

/* A poll's fields, as JSON. */
static json_t *poll_once(const char *rid) {
  char body[160];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\"}", rid);
  hc_t *c = hc_do("POST", "/api/v1/retrieve_future", NULL, body);
  ASSERT_EQ_INT(c->status, 200);
  json_t *v = hc_json(c);
  hc_free(c);
  return v;
}

static double metric_value(const char *body, const char *name) {
  const char *p = strstr(body, name);
  ASSERT(p != NULL);
  return strtod(p + strlen(name), NULL);
}

TEST(try_again_tells_queued_from_running) {
  char *sid, *a, *b;
  start_one_worker(5, &sid, &a, &b);
  /* A long job on a runs; a's seq 3 waits for seq 2; b's job waits for
   * the one work item. */
  char *ra = submit_long_fwd(a, 1);
  char *ra3 = submit_fwdbwd(a, 3, NULL);
  char *rb = submit_fwdbwd(b, 1, NULL);

  json_t *v = poll_once(ra);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "type")), "try_again");
  const char *started = json_string_value(json_object_get(v, "started_at"));
  ASSERT(started != NULL);
  ASSERT(strlen(started) == 24 && started[10] == 'T' && started[23] == 'Z');
  ASSERT_EQ_INT(json_integer_value(json_object_get(v, "queue_position")), 0);
  json_decref(v);
  v = poll_once(rb);  /* behind the running job, for the work item */
  ASSERT(json_is_null(json_object_get(v, "started_at")));
  ASSERT_EQ_INT(json_integer_value(json_object_get(v, "queue_position")), 1);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "queue_state")), "paused_capacity");
  json_decref(v);
  v = poll_once(ra3);  /* behind a's running job; seq 2 is no job */
  ASSERT(json_is_null(json_object_get(v, "started_at")));
  ASSERT_EQ_INT(json_integer_value(json_object_get(v, "queue_position")), 1);
  json_decref(v);
  wait_ms(20);
  hc_t *m = hc_do("GET", "/metrics", NULL, NULL);
  ASSERT_STR_CONTAINS(m->body, "tinkerbell_jobs{state=\"queued\"} 2\n");
  ASSERT_STR_CONTAINS(m->body, "tinkerbell_jobs{state=\"running\"} 1\n");
  ASSERT_GE(metric_value(m->body, "tinkerbell_job_oldest_age_seconds{state=\"queued\"} "),
            0.015);
  ASSERT_GE(metric_value(m->body, "tinkerbell_job_oldest_age_seconds{state=\"running\"} "),
            0.015);
  hc_free(m);
  /* Seq 2 comes: everything finishes, and nothing is left to age. */
  char *ra2 = submit_fwdbwd(a, 2, NULL);
  json_decref(result_json(ra, NULL));
  json_decref(result_json(ra2, NULL));
  json_decref(result_json(ra3, NULL));
  json_decref(result_json(rb, NULL));
  m = hc_do("GET", "/metrics", NULL, NULL);
  ASSERT_STR_CONTAINS(m->body, "tinkerbell_jobs{state=\"queued\"} 0\n");
  ASSERT_STR_CONTAINS(m->body, "tinkerbell_jobs{state=\"running\"} 0\n");
  ASSERT_STR_CONTAINS(m->body, "tinkerbell_job_oldest_age_seconds{state=\"running\"} 0.000\n");
  hc_free(m);
  free(ra);
  free(ra2);
  free(ra3);
  free(rb);
  free(a);
  free(b);
  free(sid);
  stop_training();
}

TEST_LIST(
  TEST_ENTRY(try_again_tells_queued_from_running),
  TEST_ENTRY(close_session_unloads_and_answers_410),
)

/*
 * wire/service: the service routes' small requests and answers (a
 * session's creation, heartbeat and close; create_sampling_session;
 * get_info; capabilities; an accepted op; weights_info's and ttl's
 * bodies; the index of routes), and rest.h's two hosted-only session
 * routes.  Each body is read from the bytes recorded in
 * test/golden/tinker.txt and written again, which must give the same
 * bytes; malformed bodies are refused naming the field.
 */
#include "tb_test.h"

#include "core/arena.h"
#include "core/json.h"
#include "core/buf.h"
#include "core/json_scan.h"
#include "wire/error_body.h"
#include "wire/future_answer.h"
#include "wire/rest.h"
#include "wire/service.h"
#include "wire_golden.h"

_Static_assert(sizeof(tb__wire_create_session_t) <= TB_TEST_WIRE_SCRATCH,
               "the refusals' scratch is too small");
_Static_assert(sizeof(tb__wire_service_index_t) <= TB_TEST_WIRE_SCRATCH,
               "the refusals' scratch is too small");

/* The decoders through one signature (tb_test_reader_fn). */
static int read_create_session(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_create_session_from_json(c, v, out);
}

static int read_heartbeat(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_session_call_from_json(c, v, "session_heartbeat", out);
}

static int read_close(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_session_call_from_json(c, v, "close_session", out);
}

static int read_session_created(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_session_created_from_json(c, v, out);
}

static int read_create_sampler(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_create_sampler_from_json(c, v, out);
}

static int read_sampler_created(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_sampler_created_from_json(c, v, out);
}

static int read_model_info(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_model_info_from_json(c, v, out);
}

static int read_caps(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  return tb__wire_capabilities_from_json(c, a, v, out);
}

static int read_future_ref(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_future_ref_from_json(c, v, out);
}

static int read_weights_info_req(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_weights_info_request_from_json(c, v, out);
}

static int read_ttl_req(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_ttl_request_from_json(c, v, out);
}

static int read_index(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  return tb__wire_service_index_from_json(c, a, v, out);
}

static int read_trace_export(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_trace_export_from_json(c, v, out);
}

TEST(session_bodies_round_trip) {
  char *bytes = golden_request("POST /api/v1/create_session", 0);
  tb__wire_create_session_t cs;
  json_t *doc = read_ok(bytes, read_create_session, NULL, &cs);
  ASSERT_EQ_INT(json_array_size(cs.tags_value), 1);
  ASSERT_STR_EQ(json_string_value(json_object_get(cs.user_metadata_value, "k")), "v");
  ASSERT_EQ_INT(cs.sdk_version.len, 6);
  ASSERT(cs.project_id.base == NULL);
  /* the client writes the same bytes from its C lists */
  const char *tags[] = { json_string_value(json_array_get(cs.tags_value, 0)) };
  tb__wire_pair_t meta[] = { { "k", "v" } };
  cs.tags = tags, cs.n_tags = 1, cs.user_metadata = meta, cs.n_user_metadata = 1;
  json_t *v = tb__wire_create_session_to_json(&cs);
  cs.project_id = tb__wire_str("p1");
  json_t *with_project = tb__wire_create_session_to_json(&cs);
  ASSERT_STR_EQ(json_string_value(json_object_get(with_project, "project_id")), "p1");
  json_decref(with_project);
  same_again(v, doc, bytes);

  bytes = golden_answer("POST /api/v1/create_session", 0);
  tb__wire_session_created_t sc;
  doc = read_ok(bytes, read_session_created, NULL, &sc);
  ASSERT_STR_EQ(sc.session_id, SESS);
  ASSERT(sc.info_message == NULL && sc.warning_message == NULL && sc.error_message == NULL);
  same_again(tb__wire_session_created_to_json(&sc), doc, bytes);

  const char *calls[2] = { "POST /api/v1/session_heartbeat", "POST /api/v1/close_session" };
  tb_test_reader_fn readers[2] = { read_heartbeat, read_close };
  for (int i = 0; i < 2; i++) {
    tb__wire_session_call_t call;
    bytes = golden_request(calls[i], 0);
    doc = read_ok(bytes, readers[i], NULL, &call);
    ASSERT_EQ_INT(call.session_id.len, strlen(SESS));
    json_t *answer = tb__wire_session_call_done_to_json(&call);
    same_again(tb__wire_session_call_to_json(&call), doc, bytes);
    same_again(answer, NULL, golden_answer(calls[i], 0));
  }
}

TEST(sampler_bodies_round_trip) {
  for (int i = 0; i < 2; i++) {
    char *bytes = golden_request("POST /api/v1/create_sampling_session", i);
    tb__wire_create_sampler_t r;
    json_t *doc = read_ok(bytes, read_create_sampler, NULL, &r);
    ASSERT_EQ_INT(r.seq_id, i);
    ASSERT((r.model_path.base != NULL) == (i == 0));
    ASSERT((r.base_model.base != NULL) == (i == 1));
    /* The client writes "type" before the model (the SDK, which the
     * golden script follows, after it): the same value. */
    json_t *v = tb__wire_create_sampler_to_json(&r);
    ASSERT(json_equal(v, doc));
    if (i == 1)
      assert_bytes(json_incref(v),
                   "{\"session_id\":\"" SESS "\",\"sampling_session_seq_id\":1,"
                   "\"type\":\"create_sampling_session\",\"base_model\":\"base\"}");
    json_decref(v);
    json_decref(doc);
    free(bytes);

    bytes = golden_answer("POST /api/v1/create_sampling_session", i);
    tb__wire_sampler_created_t a;
    doc = read_ok(bytes, read_sampler_created, NULL, &a);
    ASSERT_STR_EQ(a.sampling_session_id, i == 0 ? SESS ":sample:0" : SESS ":sample:1");
    same_again(tb__wire_sampler_created_to_json(&a), doc, bytes);
  }
}

TEST(service_answers_round_trip) {
  tb__arena_t a;
  tb__arena_init(&a, 0);
  char *bytes = golden_answer("POST /api/v1/get_info", 0);
  tb__wire_model_info_t mi;
  json_t *doc = read_ok(bytes, read_model_info, NULL, &mi);
  ASSERT_STR_EQ(mi.arch, "llama");
  ASSERT_STR_EQ(mi.model_name, "base");
  ASSERT_EQ_INT(mi.lora_rank, 4);
  ASSERT_EQ_INT(mi.is_lora, 1);
  same_again(tb__wire_model_info_to_json(&mi), doc, bytes);
  /* an answer naming the model beside model_data only */
  doc = read_ok("{\"model_id\":\"m\",\"model_data\":{},\"model_name\":\"n\"}", read_model_info,
                NULL, &mi);
  ASSERT_STR_EQ(mi.model_name, "n");
  ASSERT(mi.arch == NULL && mi.tokenizer_id == NULL);
  ASSERT_EQ_INT(mi.lora_rank, -1);
  json_decref(doc);

  bytes = golden_answer("GET /api/v1/get_server_capabilities", 0);
  tb__wire_capabilities_t caps;
  doc = read_ok(bytes, read_caps, &a, &caps);
  ASSERT_EQ_INT(caps.n_models, 1);
  ASSERT_STR_EQ(caps.models[0].model_name, "base");
  ASSERT_EQ_INT(caps.models[0].max_context_length, 2048);
  same_again(tb__wire_capabilities_to_json(&caps), doc, bytes);

  /* an op accepted, with its model (create_model) and without (asample) */
  const char *reqs[2] = { "POST /api/v1/create_model", "POST /api/v1/asample" };
  for (int i = 0; i < 2; i++) {
    tb__wire_future_ref_t ref;
    bytes = golden_answer(reqs[i], 0);
    doc = read_ok(bytes, read_future_ref, NULL, &ref);
    ASSERT_STR_CONTAINS(ref.request_id, "<req#");
    ASSERT((ref.model_id != NULL) == (i == 0));
    same_again(tb__wire_future_ref_to_json(&ref), doc, bytes);
  }

  bytes = golden_request("POST /api/v1/weights_info", 0);
  tb__wire_weights_info_request_t wr;
  doc = read_ok(bytes, read_weights_info_req, NULL, &wr);
  ASSERT_EQ_INT(wr.tinker_path.len, strlen("tinker://" RUN "/weights/w1"));
  same_again(tb__wire_weights_info_request_to_json(&wr), doc, bytes);

  for (int i = 0; i < 2; i++) {
    tb__wire_ttl_request_t t;
    bytes = golden_request("PUT /api/v1/training_runs/" RUN "/checkpoints/weights/w1/ttl", i);
    doc = read_ok(bytes, read_ttl_req, NULL, &t);
    ASSERT_EQ_INT(t.ttl_seconds, i == 0 ? 3600 : 0);
    same_again(tb__wire_ttl_request_to_json(&t), doc, bytes);
  }
  tb__arena_free(&a);
}

TEST(service_index_round_trip) {
  tb__arena_t a;
  tb__arena_init(&a, 0);
  char *bytes = golden_line("{\"name\":\"Tinkerbell\",");  /* GET /, the file's first */
  tb__wire_service_index_t idx;
  json_t *doc = read_ok(bytes, read_index, &a, &idx);
  ASSERT_STR_EQ(idx.name, "Tinkerbell");
  ASSERT_GT(idx.n_endpoints, 10);
  ASSERT_STR_EQ(idx.endpoints[0].path, "/");
  ASSERT_EQ_INT(idx.endpoints[0].auth, 0);
  ASSERT_STR_CONTAINS(idx.both, "Tinkerbell dialect");
  same_again(tb__wire_service_index_to_json(&idx), doc, bytes);
  tb__arena_free(&a);
}

/* Two routes of a hosted service only: no recorded bytes to compare. */
TEST(hosted_session_routes) {
  assert_bytes(tb__wire_session_project_to_json(&(tb__wire_session_project_t){ "p1" }),
               "{\"project_id\":\"p1\"}");
  tb__wire_trace_export_t t;
  json_t *doc = read_ok("{\"status\":\"ready\",\"url\":\"https://x/t.json\"}",
                        read_trace_export, NULL, &t);
  ASSERT_STR_EQ(t.status, "ready");
  ASSERT_STR_EQ(t.url, "https://x/t.json");
  ASSERT(t.error == NULL);
  json_decref(doc);
}

TEST(malformed_bodies_refused) {
  struct {
    const char *text;
    tb_test_reader_fn read;
    const char *want;
  } cases[] = {
    { "{\"type\":\"close_session\"}", read_create_session, "type: expected \"create_session\"" },
    { "{\"tags\":[\"a\",1]}", read_create_session, "tags[1]: expected a string, got an integer" },
    { "{\"user_metadata\":[]}", read_create_session,
      "user_metadata: expected an object, got an array" },
    { "{\"project_id\":5}", read_create_session, "project_id: expected a string, got an integer" },
    { "{\"type\":\"session_heartbeat\"}", read_heartbeat, "session_id: required field is missing" },
    { "{\"session_id\":\"s\",\"type\":\"close_session\"}", read_heartbeat,
      "type: expected \"session_heartbeat\"" },
    { "{\"session_id\":\"\"}", read_session_created, "session_id: empty" },
    { "{\"session_id\":\"s\",\"info_message\":1}", read_session_created,
      "info_message: expected a string, got an integer" },
    { "{\"session_id\":\"s\",\"sampling_session_seq_id\":0}", read_create_sampler,
      "base_model: base_model or model_path is required" },
    { "{\"session_id\":\"s\",\"sampling_session_seq_id\":-1,\"base_model\":\"b\"}",
      read_create_sampler, "sampling_session_seq_id: " },
    { "{\"sampling_session_seq_id\":0,\"base_model\":\"b\"}", read_create_sampler,
      "session_id: required field is missing" },
    { "{\"type\":\"create_sampling_session\"}", read_sampler_created,
      "sampling_session_id: required field is missing" },
    { "{\"model_id\":\"m\"}", read_model_info, "model_data: required field is missing" },
    { "{\"model_id\":\"m\",\"model_data\":{\"arch\":1}}", read_model_info,
      "model_data.arch: expected a string, got an integer" },
    { "{\"model_id\":\"m\",\"model_data\":{},\"lora_rank\":\"4\"}", read_model_info,
      "lora_rank: expected an integer, got a string" },
    { "{\"supported_models\":[{\"model_name\":7}]}", read_caps,
      "supported_models[0].model_name: expected a string, got an integer" },
    { "{\"supported_models\":[{\"max_context_length\":-2}]}", read_caps,
      "supported_models[0].max_context_length: " },
    { "{}", read_caps, "supported_models: required field is missing" },
    { "{\"model_id\":\"m\"}", read_future_ref, "request_id: required field is missing" },
    { "{\"request_id\":\"\"}", read_future_ref, "request_id: empty" },
    { "{}", read_weights_info_req, "tinker_path: required field is missing" },
    { "{}", read_ttl_req,
      "ttl_seconds: required (an integer number of seconds, or null for no expiry)" },
    { "{\"ttl_seconds\":\"1\"}", read_ttl_req, "ttl_seconds: expected an integer or null" },
    { "{\"ttl_seconds\":60.0}", read_ttl_req, "ttl_seconds: expected an integer or null" },
    { "{\"ttl_seconds\":0}", read_ttl_req,
      "ttl_seconds: expected a positive number of seconds (at most 100 years)" },
    { "{\"ttl_seconds\":3153600001}", read_ttl_req,
      "ttl_seconds: expected a positive number of seconds (at most 100 years)" },
    { "{\"name\":\"x\",\"version\":\"1\",\"endpoints\":[{\"method\":\"GET\",\"path\":\"/\","
      "\"dialect\":\"service\",\"auth\":1}],\"dialects\":{}}",
      read_index, "endpoints[0].auth: expected a boolean, got an integer" },
    { "{\"url\":\"u\"}", read_trace_export, "status: required field is missing" },
    { "{\"status\":\"failed\",\"error\":{}}", read_trace_export,
      "error: expected a string, got an object" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *msg = refusal(cases[i].text, cases[i].read);
    ASSERT_STR_CONTAINS(msg, cases[i].want);
    free(msg);
  }
}

/* retrieve_future: the poll the client sends, byte for byte, and a
 * pending answer read alike by the flat-object reader and from a
 * document. */
TEST(future_poll_and_answer) {
  char *bytes = golden_request("POST /api/v1/retrieve_future", 0);
  json_t *doc = parse(bytes);
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);
  tb__wire_future_request_t r;
  ASSERT_OK(tb__wire_future_request_from_json(&c, doc, &r));
  tb__buf_t b = TB_BUF_INIT;
  ASSERT_OK(tb__wire_future_request_to_buf(&r, &b));
  ASSERT_EQ_INT(b.len, strlen(bytes));
  ASSERT(memcmp(b.base, bytes, b.len) == 0);
  /* an id that needs escaping still makes JSON that reads back the same */
  tb__wire_future_request_t odd = { "a\"b\\c\n", 1 };
  tb__buf_reset(&b);
  ASSERT_OK(tb__wire_future_request_to_buf(&odd, &b));
  char *text = strndup(b.base, b.len);
  json_t *back = parse(text);
  free(text);
  ASSERT_STR_EQ(json_string_value(json_object_get(back, "request_id")), odd.request_id);
  ASSERT(json_is_true(json_object_get(back, "allow_metadata_only")));
  json_decref(back);
  tb__buf_free(&b);
  json_decref(doc);
  free(bytes);

  golden_name = "retrieve_future.txt";
  bytes = golden_answer("POST /api/v1/retrieve_future", 0);
  tb__wire_future_answer_t scan, full;
  tb__wire_future_answer_init(&scan);
  ASSERT(tb__jscan_object((tb_slice_t){ bytes, strlen(bytes) }, tb__wire_future_answer_member,
                          &scan));
  doc = parse(bytes);
  tb__wire_future_answer_from_json(&full, doc);
  ASSERT(tb__slice_eq_str(scan.type, "try_again") && tb__slice_eq_str(full.type, "try_again"));
  ASSERT(tb__slice_eq_str(full.queue_state, "active") && scan.has_queue_state);
  ASSERT(full.has_started && scan.has_started && full.started_at == 0);
  ASSERT_EQ_INT(full.queue_position, 0);
  ASSERT_EQ_INT(scan.queue_position, 0);
  ASSERT(full.result == NULL && !full.has_error);
  /* the server writes that answer again to the byte, and one with a
   * reason to escape and a start time reads back the same */
  json_t *id = json_object_get(doc, "request_id");
  tb__wire_try_again_t pending = { json_string_value(id), "active", NULL, NULL, 0 };
  char *out = malloc(tb__wire_try_again_size(&pending));
  size_t n = tb__wire_try_again_write(&pending, out);
  ASSERT_EQ_INT(n, strlen(bytes));
  ASSERT(memcmp(out, bytes, n) == 0);
  free(out);
  pending = (tb__wire_try_again_t){ "f-1", "paused_capacity", "the KV memory is full",
                                    "2026-12-06T09:56:51.808Z", 3 };
  out = malloc(tb__wire_try_again_size(&pending));
  n = tb__wire_try_again_write(&pending, out);
  tb__wire_future_answer_init(&scan);
  ASSERT(tb__jscan_object((tb_slice_t){ out, n }, tb__wire_future_answer_member, &scan));
  ASSERT(tb__slice_eq_str(scan.queue_state, "paused_capacity") && scan.has_started);
  ASSERT(tb__slice_eq_str(scan.reason, pending.reason));
  ASSERT(scan.started_at > 1.7e9 && scan.queue_position == 3);
  free(out);
  pending.reason = "full: \"kv\"\n\x01";
  out = malloc(tb__wire_try_again_size(&pending) + 1);
  n = tb__wire_try_again_write(&pending, out);
  out[n] = '\0';
  json_t *again = parse(out);
  ASSERT_STR_EQ(json_string_value(json_object_get(again, "queue_state_reason")), pending.reason);
  json_decref(again);
  free(out);
  json_decref(doc);
  free(bytes);
}

/* A failed future as both dialects answer it. */
TEST(failure_bodies) {
  static const char msg[] = "bad \"input\"\n";
  char *out = malloc(tb__wire_failure_size(msg));
  size_t n = tb__wire_failure_write(msg, "user", 0, out);
  static const char tinker[] = "{\"error\":\"bad \\\"input\\\"\\u000a\",\"category\":\"user\"}";
  ASSERT_EQ_INT(n, strlen(tinker));
  ASSERT(memcmp(out, tinker, n) == 0);
  free(out);
  out = malloc(tb__wire_failure_size(msg) + 1);
  n = tb__wire_failure_write(msg, "server", 1, out);
  out[n] = '\0';
  json_t *doc = parse(out);
  tb__wire_error_body_t e;
  ASSERT_OK(tb__wire_error_body_from_json(doc, &e));
  ASSERT_STR_EQ(e.message, msg);
  ASSERT_STR_EQ(e.category, "server");
  ASSERT_STR_EQ(json_string_value(json_object_get(doc, "detail")), "Job failed: bad \"input\"\n");
  json_decref(doc);
  free(out);
}

/* Error bodies: this server's (recorded), the Tinkerbell dialect's failed
 * future, and the shapes of other services. */
TEST(error_bodies) {
  golden_name = "errors.txt";
  char *bytes = golden_answer("POST /api/v1/get_info", 0);
  json_t *doc = parse(bytes);
  tb__wire_error_body_t e;
  ASSERT_OK(tb__wire_error_body_from_json(doc, &e));
  ASSERT_STR_EQ(e.category, "user");
  same_again(tb__wire_error_body_to_json(&e), doc, bytes);
  static const struct {
    const char *body, *message, *category, *request_id;
  } cases[] = {
    { "{\"detail\":\"Job failed: x\",\"error\":\"x\",\"category\":\"user\"}", "x", "user",
      NULL },
    { "{\"message\":\"m\",\"request_id\":\"r1\"}", "m", NULL, "r1" },
    { "{\"error\":{\"message\":\"nested\",\"category\":\"user\"}}", "nested", NULL, NULL },
    { "{\"detail\":[{\"msg\":\"v\"}],\"category\":7}", NULL, NULL, NULL },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    doc = parse(cases[i].body);
    ASSERT_OK(tb__wire_error_body_from_json(doc, &e));
    ASSERT((e.message == NULL) == (cases[i].message == NULL));
    if (e.message != NULL)
      ASSERT_STR_EQ(e.message, cases[i].message);
    ASSERT((e.category == NULL) == (cases[i].category == NULL));
    ASSERT((e.request_id == NULL) == (cases[i].request_id == NULL));
    json_decref(doc);
  }
  ASSERT(tb__wire_error_body_from_json(NULL, &e) < 0 && e.message == NULL);

  tb__wire_jwt_claims_t cl = { "passport-x", "user:1", NULL }, rb;
  json_t *v = tb__wire_jwt_claims_to_json(&cl);
  char *text = tb__json_dump(v, NULL);
  ASSERT_STR_EQ(text, "{\"iss\":\"passport-x\",\"sub\":\"user:1\"}");
  ASSERT_OK(tb__wire_jwt_claims_from_json(v, &rb));
  ASSERT_STR_EQ(rb.sub, "user:1");
  ASSERT(rb.email == NULL);
  free(text);
  json_decref(v);
}

TEST_LIST(
  TEST_ENTRY(session_bodies_round_trip),
  TEST_ENTRY(sampler_bodies_round_trip),
  TEST_ENTRY(service_answers_round_trip),
  TEST_ENTRY(service_index_round_trip),
  TEST_ENTRY(hosted_session_routes),
  TEST_ENTRY(malformed_bodies_refused),
  TEST_ENTRY(future_poll_and_answer),
  TEST_ENTRY(error_bodies),
  TEST_ENTRY(failure_bodies),
)

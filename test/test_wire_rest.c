/*
 * wire/rest: the REST answers (training runs, checkpoints, their changes,
 * the archive link, sessions, samplers, weights info), wire/op_result:
 * the training futures' small results, and wire/service: the service
 * routes' small requests and answers (sessions, samplers, get_info,
 * capabilities, an accepted op, weights_info's and ttl's bodies).  Each type is read
 * from the bytes the server answered in test/golden/tinker.txt and written
 * again, which must give the same bytes; malformed bodies are refused
 * naming the field.
 */
#include "tb_test.h"

#include <stddef.h>
#include <stdio.h>

#include "core/arena.h"
#include "core/json.h"
#include "wire/op_result.h"
#include "wire/rest.h"
#include "wire/service.h"

/* The whole of test/golden/tinker.txt (TB_GOLDEN_DIR, set by meson). */
static char *golden_text(void) {
  const char *dir = getenv("TB_GOLDEN_DIR");
  if (dir == NULL)
    SKIP("TB_GOLDEN_DIR is not set");
  char path[1024];
  snprintf(path, sizeof(path), "%s/tinker.txt", dir);
  FILE *f = fopen(path, "rb");
  ASSERT(f != NULL);
  ASSERT_OK(fseek(f, 0, SEEK_END));
  long n = ftell(f);
  ASSERT_GT(n, 0);
  rewind(f);
  char *s = xmalloc((size_t)n + 1);
  ASSERT_EQ_INT(fread(s, 1, (size_t)n, f), n);
  s[n] = '\0';
  fclose(f);
  return s;
}

/* The JSON answer (a copy) to the nth request whose line is exactly
 * ">>> <request>" in the golden file: the first line starting with '{'
 * after its "<<< " line. */
static char *golden_answer(const char *request, int nth) {
  char *all = golden_text();
  char want[512];
  snprintf(want, sizeof(want), "\n>>> %s\n", request);
  const char *p = all;
  for (int i = 0; i <= nth; i++) {
    p = strstr(p, want);
    ASSERT(p != NULL);
    p += strlen(want) - 1;
  }
  p = strstr(p, "\n<<< ");
  ASSERT(p != NULL);
  p = strstr(p, "\n{");
  ASSERT(p != NULL);
  p++;
  const char *end = strchr(p, '\n');
  ASSERT(end != NULL);
  char *line = xmalloc((size_t)(end - p) + 1);
  memcpy(line, p, (size_t)(end - p));
  line[end - p] = '\0';
  free(all);
  return line;
}

/* The JSON body (a copy) of the nth request whose line is exactly
 * ">>> <request>": the first line starting with '{' before its "<<< ". */
static char *golden_request(const char *request, int nth) {
  char *all = golden_text();
  char want[512];
  snprintf(want, sizeof(want), "\n>>> %s\n", request);
  const char *p = all;
  for (int i = 0; i <= nth; i++) {
    p = strstr(p, want);
    ASSERT(p != NULL);
    p += strlen(want) - 1;
  }
  const char *answer = strstr(p, "\n<<< ");
  p = strstr(p, "\n{");
  ASSERT(p != NULL && answer != NULL && p < answer);
  p++;
  const char *end = strchr(p, '\n');
  char *line = xmalloc((size_t)(end - p) + 1);
  memcpy(line, p, (size_t)(end - p));
  line[end - p] = '\0';
  free(all);
  return line;
}

/* The first line of the golden file that starts with prefix (a copy). */
static char *golden_line(const char *prefix) {
  char *all = golden_text();
  char want[256];
  snprintf(want, sizeof(want), "\n%s", prefix);
  const char *p = strstr(all, want);
  ASSERT(p != NULL);
  p++;
  const char *end = strchr(p, '\n');
  ASSERT(end != NULL);
  char *line = xmalloc((size_t)(end - p) + 1);
  memcpy(line, p, (size_t)(end - p));
  line[end - p] = '\0';
  free(all);
  return line;
}

static json_t *parse(const char *text) {
  json_t *doc = NULL;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__json_parse((tb_slice_t){ text, strlen(text) }, &doc, &err));
  return doc;
}

/* The bytes a value is sent as, compared with want; v is released. */
static void assert_bytes(json_t *v, const char *want) {
  ASSERT(v != NULL);
  char *got = tb__json_dump(v, NULL);
  ASSERT(got != NULL);
  ASSERT_STR_EQ(got, want);
  free(got);
  json_decref(v);
}

#define SESS "<sess#1>"
#define RUN SESS ":train:0"

TEST(training_runs_round_trip) {
  const char *reqs[2] = { "GET /api/v1/training_runs", "GET /api/v1/training_runs?limit=5&offset=0" };
  for (int i = 0; i < 2; i++) {
    char *bytes = golden_answer(reqs[i], 0);
    json_t *doc = parse(bytes);
    tb__arena_t a;
    tb__arena_init(&a, 0);
    tb__jctx_t c;
    tb_error_t err = { 0 };
    tb__jctx_init(&c, &err);
    tb__wire_training_runs_t l;
    ASSERT_OK(tb__wire_training_runs_from_json(&c, &a, doc, &l));
    ASSERT_EQ_INT(l.n, 1);
    ASSERT_EQ_INT(l.cursor.limit, i == 0 ? 20 : 5);
    ASSERT_EQ_INT(l.cursor.total_count, 1);
    const tb__wire_training_run_t *r = &l.runs[0];
    ASSERT_STR_EQ(r->training_run_id, RUN);
    ASSERT_STR_EQ(r->model_owner, "local");
    ASSERT_EQ_INT(r->lora_rank, 4);
    ASSERT(r->last_checkpoint != NULL && r->last_sampler_checkpoint != NULL);
    ASSERT_STR_EQ(r->last_checkpoint->checkpoint_id, "weights/w1");
    ASSERT_EQ_INT(r->last_checkpoint->size_bytes, 509826);
    ASSERT(r->last_checkpoint->expires_at == NULL);
    ASSERT(r->user_metadata == NULL);
    ASSERT(r->lora_config.present);
    ASSERT_EQ_INT(r->lora_config.seed, 3);
    assert_bytes(tb__wire_training_runs_to_json(&l), bytes);
    json_decref(doc);
    tb__arena_free(&a);
    free(bytes);
  }
}

TEST(training_run_round_trip) {
  char *bytes = golden_answer("GET /api/v1/training_runs/" RUN, 0);
  json_t *doc = parse(bytes);
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);
  tb__wire_training_run_t r;
  ASSERT_OK(tb__wire_training_run_from_json(&c, &a, doc, &r));
  ASSERT_STR_EQ(r.last_sampler_checkpoint->checkpoint_type, "sampler");
  assert_bytes(tb__wire_training_run_to_json(&r), bytes);
  json_decref(doc);
  tb__arena_free(&a);
  free(bytes);
}

TEST(checkpoints_round_trip) {
  const char *reqs[2] = { "GET /api/v1/training_runs/" RUN "/checkpoints",
                          "GET /api/v1/checkpoints" };
  for (int i = 0; i < 2; i++) {
    char *bytes = golden_answer(reqs[i], 0);
    json_t *doc = parse(bytes);
    tb__arena_t a;
    tb__arena_init(&a, 0);
    tb__jctx_t c;
    tb_error_t err = { 0 };
    tb__jctx_init(&c, &err);
    tb__wire_checkpoints_t l;
    ASSERT_OK(tb__wire_checkpoints_from_json(&c, &a, doc, &l));
    ASSERT_EQ_INT(l.n, 2);
    ASSERT_STR_EQ(l.checkpoints[0].checkpoint_id, "sampler_weights/s1");
    ASSERT_EQ_INT(l.checkpoints[1].is_public, 0);
    ASSERT_EQ_INT(l.cursor.limit, i == 0 ? 10000 : 100);
    assert_bytes(tb__wire_checkpoints_to_json(&l), bytes);
    json_decref(doc);
    tb__arena_free(&a);
    free(bytes);
  }
}

TEST(checkpoint_changes_round_trip) {
  struct {
    const char *req;
    int nth;
    tb__wire_ckpt_change_kind_t kind;
  } cases[] = {
    { "POST /api/v1/training_runs/" RUN "/checkpoints/weights/w1/publish", 0,
      TB__WIRE_CKPT_PUBLIC },
    { "DELETE /api/v1/training_runs/" RUN "/checkpoints/weights/w1/publish", 0,
      TB__WIRE_CKPT_PUBLIC },
    { "PUT /api/v1/training_runs/" RUN "/checkpoints/weights/w1/ttl", 0, TB__WIRE_CKPT_TTL },
    { "PUT /api/v1/training_runs/" RUN "/checkpoints/weights/w1/ttl", 1, TB__WIRE_CKPT_TTL },
    { "DELETE /api/v1/training_runs/" RUN "/checkpoints/sampler_weights/s1", 0,
      TB__WIRE_CKPT_DELETED },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *bytes = golden_answer(cases[i].req, cases[i].nth);
    json_t *doc = parse(bytes);
    tb__jctx_t c;
    tb_error_t err = { 0 };
    tb__jctx_init(&c, &err);
    tb__wire_checkpoint_change_t ch;
    ASSERT_OK(tb__wire_checkpoint_change_from_json(&c, doc, cases[i].kind, &ch));
    ASSERT_STR_CONTAINS(ch.tinker_path, "tinker://" RUN "/");
    if (i < 2)
      ASSERT_EQ_INT(ch.is_public, i == 0);
    if (cases[i].kind == TB__WIRE_CKPT_TTL)
      ASSERT((ch.expires_at != NULL) == (cases[i].nth == 0));
    assert_bytes(tb__wire_checkpoint_change_to_json(&ch), bytes);
    json_decref(doc);
    free(bytes);
  }
}

TEST(small_answers_round_trip) {
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);

  char *bytes = golden_answer("GET /api/v1/training_runs/" RUN "/checkpoints/weights/w1/archive", 0);
  json_t *doc = parse(bytes);
  tb__wire_archive_url_t au;
  ASSERT_OK(tb__wire_archive_url_from_json(&c, doc, &au));
  ASSERT_STR_CONTAINS(au.url, "/api/v1/checkpoint_archives/");
  assert_bytes(tb__wire_archive_url_to_json(&au), bytes);
  json_decref(doc);
  free(bytes);

  bytes = golden_answer("POST /api/v1/weights_info", 0);
  doc = parse(bytes);
  tb__wire_weights_info_t wi;
  ASSERT_OK(tb__wire_weights_info_from_json(&c, doc, &wi));
  ASSERT_EQ_INT(wi.lora_rank, 4);
  ASSERT_EQ_INT(wi.train_unembed, 1);
  assert_bytes(tb__wire_weights_info_to_json(&wi), bytes);
  json_decref(doc);
  free(bytes);

  bytes = golden_answer("GET /api/v1/samplers/" SESS ":sample:0", 0);
  doc = parse(bytes);
  tb__wire_sampler_info_t si;
  ASSERT_OK(tb__wire_sampler_info_from_json(&c, doc, &si));
  ASSERT_STR_EQ(si.base_model, "base");
  assert_bytes(tb__wire_sampler_info_to_json(&si), bytes);
  /* A base model's sampler has no model_path: the key is left out. */
  si.model_path = NULL;
  assert_bytes(tb__wire_sampler_info_to_json(&si),
               "{\"sampler_id\":\"" SESS ":sample:0\",\"base_model\":\"base\"}");
  json_decref(doc);
  free(bytes);
}

TEST(sessions_round_trip) {
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);

  char *bytes = golden_answer("GET /api/v1/sessions", 0);
  json_t *doc = parse(bytes);
  tb__wire_sessions_t l;
  ASSERT_OK(tb__wire_sessions_from_json(&c, &a, doc, &l));
  ASSERT_EQ_INT(l.n, 1);
  ASSERT_STR_EQ(l.ids[0], SESS);
  assert_bytes(tb__wire_sessions_to_json(&l), bytes);
  json_decref(doc);
  free(bytes);

  bytes = golden_answer("GET /api/v1/sessions/" SESS, 0);
  doc = parse(bytes);
  tb__wire_session_info_t s;
  ASSERT_OK(tb__wire_session_info_from_json(&c, &a, doc, &s));
  ASSERT_EQ_INT(s.n_training_run_ids, 1);
  ASSERT_EQ_INT(s.n_sampler_ids, 2);
  ASSERT_STR_EQ(s.sampler_ids[1], SESS ":sample:1");
  ASSERT(s.tags != NULL && s.user_metadata != NULL);
  assert_bytes(tb__wire_session_info_to_json(&s), bytes);
  json_decref(doc);
  free(bytes);
  tb__arena_free(&a);
}

_Static_assert(sizeof(tb__wire_session_info_t) <= 256, "the refusals' scratch is too small");
_Static_assert(sizeof(tb__wire_create_session_t) <= 256, "the refusals' scratch is too small");
_Static_assert(sizeof(tb__wire_model_info_t) <= 256, "the refusals' scratch is too small");

/* Reads text with read, which must refuse it; returns the message. */
static char *refusal(const char *text, int (*read)(tb__jctx_t *, tb__arena_t *,
                                                   const json_t *, void *)) {
  json_t *doc = parse(text);
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);
  _Alignas(max_align_t) char out[256];  /* any of the wire structs read */
  ASSERT_ERR(read(&c, &a, doc, out), TB_EFIELD);
  ASSERT_EQ_INT(err.category, TB_CATEGORY_USER);
  ASSERT(err.message != NULL);
  char *msg = strdup(err.message);
  tb_error_clear(&err);
  json_decref(doc);
  tb__arena_free(&a);
  return msg;
}

static int read_ckpts(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  return tb__wire_checkpoints_from_json(c, a, v, out);
}

static int read_runs(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  return tb__wire_training_runs_from_json(c, a, v, out);
}

static int read_session(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  return tb__wire_session_info_from_json(c, a, v, out);
}

static int read_archive(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_archive_url_from_json(c, v, out);
}

static int read_ttl(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_checkpoint_change_from_json(c, v, TB__WIRE_CKPT_TTL, out);
}

static int read_deleted(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_checkpoint_change_from_json(c, v, TB__WIRE_CKPT_DELETED, out);
}

TEST(malformed_answers_refused) {
  struct {
    const char *text;
    int (*read)(tb__jctx_t *, tb__arena_t *, const json_t *, void *);
    const char *want;
  } cases[] = {
    { "{\"cursor\":{}}", read_ckpts, "checkpoints: required field is missing" },
    { "{\"checkpoints\":{}}", read_ckpts, "checkpoints: expected an array, got an object" },
    { "{\"checkpoints\":[{\"checkpoint_id\":\"weights/a\",\"checkpoint_type\":\"training\"}]}",
      read_ckpts, "checkpoints[0].tinker_path: required field is missing" },
    { "{\"checkpoints\":[{\"checkpoint_id\":\"weights/a\",\"checkpoint_type\":\"training\","
      "\"tinker_path\":\"tinker://r/weights/a\",\"size_bytes\":\"12\"}]}",
      read_ckpts, "checkpoints[0].size_bytes: expected an integer, got a string" },
    { "{\"checkpoints\":[],\"cursor\":{\"limit\":true}}", read_ckpts,
      "cursor.limit: expected an integer, got a boolean" },
    { "{\"training_runs\":[{\"training_run_id\":\"r\"}]}", read_runs,
      "training_runs[0].base_model: required field is missing" },
    { "{\"training_runs\":[{\"training_run_id\":\"r\",\"base_model\":\"b\","
      "\"last_checkpoint\":{\"checkpoint_id\":7}}]}",
      read_runs, "training_runs[0].last_checkpoint.checkpoint_id: expected a string, got an integer" },
    { "{\"training_runs\":[{\"training_run_id\":\"r\",\"base_model\":\"b\","
      "\"lora_config\":{\"rank\":4,\"seed\":1,\"train_attn\":1}}]}",
      read_runs, "training_runs[0].lora_config.train_attn: expected a boolean, got an integer" },
    { "[]", read_runs, "expected an object, got an array" },
    { "{\"sampler_ids\":[\"a\",3]}", read_session, "sampler_ids[1]: expected a string, got an integer" },
    { "{\"expires\":\"t\"}", read_archive, "url: required field is missing" },
    { "{\"tinker_path\":\"tinker://r/weights/a\"}", read_ttl,
      "expires_at: required (a time, or null)" },
    { "{\"tinker_path\":\"tinker://r/weights/a\",\"deleted\":false}", read_deleted,
      "deleted: expected true" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *msg = refusal(cases[i].text, cases[i].read);
    ASSERT_STR_CONTAINS(msg, cases[i].want);
    free(msg);
  }
}

TEST(training_results_round_trip) {
  const char *prefixes[] = {
    "{\"model_id\":\"" RUN "\",\"type\":\"create_model\"}",
    "{\"path\":\"tinker://" RUN "/weights/w1\",\"type\":\"save_weights\"}",
    "{\"path\":\"tinker://" RUN "/weights/w1\",\"model_id\":",
    "{\"path\":\"tinker://" RUN "/sampler_weights/s1\",\"type\":\"save_weights_for_sampler\"",
  };
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);
  for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
    char *bytes = golden_line(prefixes[i]);
    json_t *doc = parse(bytes);
    tb__wire_op_result_t r;
    ASSERT_OK(tb__wire_op_result_from_json(&c, doc, &r));
    ASSERT(r.type != NULL);
    assert_bytes(tb__wire_op_result_to_json(&r), bytes);
    json_decref(doc);
    free(bytes);
  }
  /* save_weights_for_sampler names the sampler it opened last */
  tb__wire_op_result_t r = { .path = "tinker://r/sampler_weights/s", .type =
                             "save_weights_for_sampler", .sampling_session_id = "s:sample:0" };
  assert_bytes(tb__wire_op_result_to_json(&r),
               "{\"path\":\"tinker://r/sampler_weights/s\",\"type\":"
               "\"save_weights_for_sampler\",\"sampling_session_id\":\"s:sample:0\"}");

  char *bytes = golden_line("{\"metrics\":{\"grad_norm:mean\":");
  json_t *doc = parse(bytes);
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__wire_optim_result_t o;
  ASSERT_OK(tb__wire_optim_result_from_json(&c, &a, doc, &o));
  ASSERT_EQ_INT(o.n_metrics, 2);
  ASSERT_STR_EQ(o.metrics[1].name, "learning_rate:mean");
  assert_bytes(tb__wire_optim_result_to_json(&o), bytes);
  json_decref(doc);
  free(bytes);

  doc = parse("{\"metrics\":{\"loss:sum\":\"1\"}}");
  ASSERT_ERR(tb__wire_optim_result_from_json(&c, &a, doc, &o), TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "metrics.loss:sum: expected a number, got a string");
  json_decref(doc);
  doc = parse("{\"path\":3}");
  ASSERT_ERR(tb__wire_op_result_from_json(&c, doc, &r), TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "path: expected a string, got an integer");
  json_decref(doc);
  /* the SDK's result types default their "type": it may be left out */
  doc = parse("{\"sampling_session_id\":\"s:sample:0\"}");
  ASSERT_OK(tb__wire_op_result_from_json(&c, doc, &r));
  ASSERT(r.type == NULL && r.path == NULL);
  ASSERT_STR_EQ(r.sampling_session_id, "s:sample:0");
  json_decref(doc);
  tb_error_clear(&err);
  tb__arena_free(&a);
}

/* ------------------------------------------------------------ service.h */

TEST(session_bodies_round_trip) {
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);

  char *bytes = golden_request("POST /api/v1/create_session", 0);
  json_t *doc = parse(bytes);
  tb__wire_create_session_t cs;
  ASSERT_OK(tb__wire_create_session_from_json(&c, doc, &cs));
  ASSERT_EQ_INT(json_array_size(cs.tags_value), 1);
  ASSERT_STR_EQ(json_string_value(json_object_get(cs.user_metadata_value, "k")), "v");
  ASSERT_EQ_INT(cs.sdk_version.len, 6);
  ASSERT(cs.project_id.base == NULL);
  /* the client writes the same bytes from its C lists */
  const char *tags[] = { json_string_value(json_array_get(cs.tags_value, 0)) };
  tb__wire_pair_t meta[] = { { "k", "v" } };
  cs.tags = tags, cs.n_tags = 1, cs.user_metadata = meta, cs.n_user_metadata = 1;
  assert_bytes(tb__wire_create_session_to_json(&cs), bytes);
  cs.project_id = tb__wire_str("p1");
  json_t *v = tb__wire_create_session_to_json(&cs);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "project_id")), "p1");
  json_decref(v);
  json_decref(doc);
  free(bytes);

  bytes = golden_answer("POST /api/v1/create_session", 0);
  doc = parse(bytes);
  tb__wire_session_created_t sc;
  ASSERT_OK(tb__wire_session_created_from_json(&c, doc, &sc));
  ASSERT_STR_EQ(sc.session_id, SESS);
  ASSERT(sc.info_message == NULL && sc.warning_message == NULL && sc.error_message == NULL);
  assert_bytes(tb__wire_session_created_to_json(&sc), bytes);
  json_decref(doc);
  free(bytes);

  const char *calls[2] = { "POST /api/v1/session_heartbeat", "POST /api/v1/close_session" };
  const char *types[2] = { "session_heartbeat", "close_session" };
  for (int i = 0; i < 2; i++) {
    bytes = golden_request(calls[i], 0);
    doc = parse(bytes);
    tb__wire_session_call_t call;
    ASSERT_OK(tb__wire_session_call_from_json(&c, doc, types[i], &call));
    ASSERT_EQ_INT(call.session_id.len, strlen(SESS));
    assert_bytes(tb__wire_session_call_to_json(&call), bytes);
    json_decref(doc);
    free(bytes);
    bytes = golden_answer(calls[i], 0);
    assert_bytes(tb__wire_session_call_done_to_json(&call), bytes);
    free(bytes);
  }
}

TEST(sampler_bodies_round_trip) {
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);
  for (int i = 0; i < 2; i++) {
    char *bytes = golden_request("POST /api/v1/create_sampling_session", i);
    json_t *doc = parse(bytes);
    tb__wire_create_sampler_t r;
    ASSERT_OK(tb__wire_create_sampler_from_json(&c, doc, &r));
    ASSERT_EQ_INT(r.seq_id, i);
    ASSERT((r.model_path.base != NULL) == (i == 0));
    ASSERT((r.base_model.base != NULL) == (i == 1));
    /* The client writes "type" before the model (the SDK, which the
     * golden script follows, after it): the same value. */
    json_t *v = tb__wire_create_sampler_to_json(&r);
    ASSERT(json_equal(v, doc));
    json_decref(v);
    if (i == 1)
      assert_bytes(tb__wire_create_sampler_to_json(&r),
                   "{\"session_id\":\"" SESS "\",\"sampling_session_seq_id\":1,"
                   "\"type\":\"create_sampling_session\",\"base_model\":\"base\"}");
    json_decref(doc);
    free(bytes);

    bytes = golden_answer("POST /api/v1/create_sampling_session", i);
    doc = parse(bytes);
    tb__wire_sampler_created_t a;
    ASSERT_OK(tb__wire_sampler_created_from_json(&c, doc, &a));
    ASSERT_STR_EQ(a.sampling_session_id, i == 0 ? SESS ":sample:0" : SESS ":sample:1");
    assert_bytes(tb__wire_sampler_created_to_json(&a), bytes);
    json_decref(doc);
    free(bytes);
  }
}

TEST(service_answers_round_trip) {
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);

  char *bytes = golden_answer("POST /api/v1/get_info", 0);
  json_t *doc = parse(bytes);
  tb__wire_model_info_t mi;
  ASSERT_OK(tb__wire_model_info_from_json(&c, doc, &mi));
  ASSERT_STR_EQ(mi.arch, "llama");
  ASSERT_STR_EQ(mi.model_name, "base");
  ASSERT_EQ_INT(mi.lora_rank, 4);
  ASSERT_EQ_INT(mi.is_lora, 1);
  assert_bytes(tb__wire_model_info_to_json(&mi), bytes);
  json_decref(doc);
  free(bytes);
  /* an answer naming the model beside model_data only */
  doc = parse("{\"model_id\":\"m\",\"model_data\":{},\"model_name\":\"n\"}");
  ASSERT_OK(tb__wire_model_info_from_json(&c, doc, &mi));
  ASSERT_STR_EQ(mi.model_name, "n");
  ASSERT(mi.arch == NULL && mi.tokenizer_id == NULL);
  ASSERT_EQ_INT(mi.lora_rank, -1);
  json_decref(doc);

  bytes = golden_answer("GET /api/v1/get_server_capabilities", 0);
  doc = parse(bytes);
  tb__wire_capabilities_t caps;
  ASSERT_OK(tb__wire_capabilities_from_json(&c, &a, doc, &caps));
  ASSERT_EQ_INT(caps.n_models, 1);
  ASSERT_STR_EQ(caps.models[0].model_name, "base");
  ASSERT_EQ_INT(caps.models[0].max_context_length, 2048);
  assert_bytes(tb__wire_capabilities_to_json(&caps), bytes);
  json_decref(doc);
  free(bytes);

  /* an op accepted, with its model (create_model) and without (asample) */
  const char *reqs[2] = { "POST /api/v1/create_model", "POST /api/v1/asample" };
  for (int i = 0; i < 2; i++) {
    bytes = golden_answer(reqs[i], 0);
    doc = parse(bytes);
    tb__wire_future_ref_t ref;
    ASSERT_OK(tb__wire_future_ref_from_json(&c, doc, &ref));
    ASSERT_STR_CONTAINS(ref.request_id, "<req#");
    ASSERT((ref.model_id != NULL) == (i == 0));
    assert_bytes(tb__wire_future_ref_to_json(&ref), bytes);
    json_decref(doc);
    free(bytes);
  }

  bytes = golden_request("POST /api/v1/weights_info", 0);
  doc = parse(bytes);
  tb__wire_weights_info_request_t wr;
  ASSERT_OK(tb__wire_weights_info_request_from_json(&c, doc, &wr));
  ASSERT_EQ_INT(wr.tinker_path.len, strlen("tinker://" RUN "/weights/w1"));
  assert_bytes(tb__wire_weights_info_request_to_json(&wr), bytes);
  json_decref(doc);
  free(bytes);

  for (int i = 0; i < 2; i++) {
    bytes = golden_request("PUT /api/v1/training_runs/" RUN "/checkpoints/weights/w1/ttl", i);
    doc = parse(bytes);
    tb__wire_ttl_request_t t;
    ASSERT_OK(tb__wire_ttl_request_from_json(&c, doc, &t));
    ASSERT_EQ_INT(t.ttl_seconds, i == 0 ? 3600 : 0);
    assert_bytes(tb__wire_ttl_request_to_json(&t), bytes);
    json_decref(doc);
    free(bytes);
  }
  tb__arena_free(&a);
}

TEST(service_index_round_trip) {
  char *bytes = golden_line("{\"name\":\"Tinkerbell\",");  /* GET /, the file's first */
  json_t *doc = parse(bytes);
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);
  tb__wire_service_index_t idx;
  ASSERT_OK(tb__wire_service_index_from_json(&c, &a, doc, &idx));
  ASSERT_STR_EQ(idx.name, "Tinkerbell");
  ASSERT_GT(idx.n_endpoints, 10);
  ASSERT_STR_EQ(idx.endpoints[0].path, "/");
  ASSERT_EQ_INT(idx.endpoints[0].auth, 0);
  ASSERT_STR_CONTAINS(idx.both, "Tinkerbell dialect");
  assert_bytes(tb__wire_service_index_to_json(&idx), bytes);
  json_decref(doc);
  doc = parse("{\"name\":\"x\",\"version\":\"1\",\"endpoints\":[{\"method\":\"GET\","
              "\"path\":\"/\",\"dialect\":\"service\",\"auth\":1}],\"dialects\":{}}");
  ASSERT_ERR(tb__wire_service_index_from_json(&c, &a, doc, &idx), TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "endpoints[0].auth: expected a boolean, got an integer");
  tb_error_clear(&err);
  json_decref(doc);
  tb__arena_free(&a);
  free(bytes);
}

static int read_trace_export(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_trace_export_from_json(c, v, out);
}

/* Two routes of a hosted service only: no recorded bytes to compare. */
TEST(hosted_session_routes) {
  assert_bytes(tb__wire_session_project_to_json(&(tb__wire_session_project_t){ "p1" }),
               "{\"project_id\":\"p1\"}");
  json_t *doc = parse("{\"status\":\"ready\",\"url\":\"https://x/t.json\"}");
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);
  tb__wire_trace_export_t t;
  ASSERT_OK(tb__wire_trace_export_from_json(&c, doc, &t));
  ASSERT_STR_EQ(t.status, "ready");
  ASSERT_STR_EQ(t.url, "https://x/t.json");
  ASSERT(t.error == NULL);
  json_decref(doc);
  char *msg = refusal("{\"url\":\"u\"}", read_trace_export);
  ASSERT_STR_CONTAINS(msg, "status: required field is missing");
  free(msg);
  msg = refusal("{\"status\":\"failed\",\"error\":{}}", read_trace_export);
  ASSERT_STR_CONTAINS(msg, "error: expected a string, got an object");
  free(msg);
}

static int read_create_session(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_create_session_from_json(c, v, out);
}

static int read_heartbeat(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  (void)a;
  return tb__wire_session_call_from_json(c, v, "session_heartbeat", out);
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

TEST(malformed_service_bodies_refused) {
  struct {
    const char *text;
    int (*read)(tb__jctx_t *, tb__arena_t *, const json_t *, void *);
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
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *msg = refusal(cases[i].text, cases[i].read);
    ASSERT_STR_CONTAINS(msg, cases[i].want);
    free(msg);
  }
}

TEST_LIST(
  TEST_ENTRY(training_runs_round_trip),
  TEST_ENTRY(training_run_round_trip),
  TEST_ENTRY(checkpoints_round_trip),
  TEST_ENTRY(checkpoint_changes_round_trip),
  TEST_ENTRY(small_answers_round_trip),
  TEST_ENTRY(sessions_round_trip),
  TEST_ENTRY(malformed_answers_refused),
  TEST_ENTRY(training_results_round_trip),
  TEST_ENTRY(session_bodies_round_trip),
  TEST_ENTRY(sampler_bodies_round_trip),
  TEST_ENTRY(service_answers_round_trip),
  TEST_ENTRY(malformed_service_bodies_refused),
  TEST_ENTRY(service_index_round_trip),
  TEST_ENTRY(hosted_session_routes),
)

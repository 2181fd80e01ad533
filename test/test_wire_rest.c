/*
 * wire/rest: the REST answers (training runs, checkpoints, their changes,
 * the archive link, sessions, samplers, weights info), and wire/op_result:
 * the training futures' small results.  Each type is read from the bytes
 * the server answered in test/golden/tinker.txt and written again, which
 * must give the same bytes; malformed answers are refused naming the
 * field.  The service routes' bodies are test_wire_service.c's.
 */
#include "tb_test.h"

#include "core/arena.h"
#include "core/json.h"
#include "wire/op_result.h"
#include "wire/rest.h"
#include "wire_golden.h"

/* A golden answer read for decoding: its bytes, their JSON, an arena and
 * a context. */
typedef struct answer_s {
  char *bytes;
  json_t *doc;
  tb__arena_t a;
  tb__jctx_t c;
  tb_error_t err;
} answer_t;

static void answer_read(answer_t *x, const char *request, int nth) {
  memset(x, 0, sizeof(*x));
  x->bytes = golden_answer(request, nth);
  x->doc = parse(x->bytes);
  tb__arena_init(&x->a, 0);
  tb__jctx_init(&x->c, &x->err);
}

static void answer_done(answer_t *x) {
  json_decref(x->doc);
  tb__arena_free(&x->a);
  tb_error_clear(&x->err);
  free(x->bytes);
}

TEST(training_runs_round_trip) {
  const char *reqs[2] = { "GET /api/v1/training_runs", "GET /api/v1/training_runs?limit=5&offset=0" };
  for (int i = 0; i < 2; i++) {
    answer_t x;
    answer_read(&x, reqs[i], 0);
    tb__wire_training_runs_t l;
    ASSERT_OK(tb__wire_training_runs_from_json(&x.c, &x.a, x.doc, &l));
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
    assert_bytes(tb__wire_training_runs_to_json(&l), x.bytes);
    answer_done(&x);
  }
}

TEST(training_run_round_trip) {
  answer_t x;
  answer_read(&x, "GET /api/v1/training_runs/" RUN, 0);
  tb__wire_training_run_t r;
  ASSERT_OK(tb__wire_training_run_from_json(&x.c, &x.a, x.doc, &r));
  ASSERT_STR_EQ(r.last_sampler_checkpoint->checkpoint_type, "sampler");
  assert_bytes(tb__wire_training_run_to_json(&r), x.bytes);
  answer_done(&x);
}

TEST(checkpoints_round_trip) {
  const char *reqs[2] = { "GET /api/v1/training_runs/" RUN "/checkpoints",
                          "GET /api/v1/checkpoints" };
  for (int i = 0; i < 2; i++) {
    answer_t x;
    answer_read(&x, reqs[i], 0);
    tb__wire_checkpoints_t l;
    ASSERT_OK(tb__wire_checkpoints_from_json(&x.c, &x.a, x.doc, &l));
    ASSERT_EQ_INT(l.n, 2);
    ASSERT_STR_EQ(l.checkpoints[0].checkpoint_id, "sampler_weights/s1");
    ASSERT_EQ_INT(l.checkpoints[1].is_public, 0);
    ASSERT_EQ_INT(l.cursor.limit, i == 0 ? 10000 : 100);
    assert_bytes(tb__wire_checkpoints_to_json(&l), x.bytes);
    answer_done(&x);
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

_Static_assert(sizeof(tb__wire_session_info_t) <= TB_TEST_WIRE_SCRATCH,
               "the refusals' scratch is too small");

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

TEST_LIST(
  TEST_ENTRY(training_runs_round_trip),
  TEST_ENTRY(training_run_round_trip),
  TEST_ENTRY(checkpoints_round_trip),
  TEST_ENTRY(checkpoint_changes_round_trip),
  TEST_ENTRY(small_answers_round_trip),
  TEST_ENTRY(sessions_round_trip),
  TEST_ENTRY(malformed_answers_refused),
  TEST_ENTRY(training_results_round_trip),
)

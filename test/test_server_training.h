/*
 * What the training-route tests share: a server with its engine on a
 * loop (test_server_client.h), a data_dir of its own, and helpers that
 * submit requests, await futures and build forward_backward bodies in
 * JSON and protobuf.
 */
#ifndef TB_TEST_SERVER_TRAINING_H
#define TB_TEST_SERVER_TRAINING_H

#include "test_server_client.h"

#include <math.h>
#include <sys/stat.h>

#include "core/arena.h"
#include "core/json.h"
#include "engine/base_model.h"
#include "text/base_chat.h"
#include "http/client.h"
#include "server/training.h"
#include "wire/output.h"
#include "fixtures.h"
#include "fixtures_proto.h"
#include "wire/proto.h"
#include "wire/sample.h"

static char data_dir[64];

/* The server on its loop with the training part serving models (NULL:
 * the generated base only), with the engine's options eo and the server's
 * o (NULL: the defaults). */
static inline void start_training_engine(tb_server_options_t *o, const tb__engine_opts_t *eo,
                                         const char *const *models, size_t n) {
  tb_server_options_t defaults = { 0 };
  if (o == NULL)
    o = &defaults;
  strcpy(data_dir, "/tmp/tb-train-XXXXXX");
  ASSERT(mkdtemp(data_dir) != NULL);
  o->data_dir = data_dir;
  if (o->long_poll_ms == 0)
    o->long_poll_ms = 10000;
  start_server(o);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__training_start(srv, eo, models, n, &err));
}

static inline void start_training_models(tb_server_options_t *o, const char *const *models,
                                         size_t n) {
  tb__engine_opts_t eo = { .shards = 2 };
  start_training_engine(o, &eo, models, n);
}

static inline void start_training(tb_server_options_t *o) {
  start_training_models(o, NULL, 0);
}

/* A copy of the generated base model saved as a Hugging Face directory
 * hf/m, hf a new temporary directory (64 bytes, prefix tb-hf); remove it
 * with tb_test_tmpdir_remove. */
static inline void save_base_copy(char *hf, char *dir, size_t cap) {
  tb_test_tmpdir(hf, "tb-hf");
  snprintf(dir, cap, "%s/m", hf);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__base_model_save(dir, &err));
}

/* The training server serving base and, as name, the model in dir. */
static inline void start_training_beside(const char *name, const char *dir) {
  char spec[128];
  snprintf(spec, sizeof(spec), "%s=%s", name, dir);
  const char *models[] = { "base", spec };
  start_training_models(NULL, models, 2);
}

/* The training server with the API keys file keys (a mkstemp template,
 * filled in) holding text. */
static inline void start_training_with_keys(char *keys, const char *text) {
  tb_test_temp_file(keys, text);
  tb_server_options_t o = { .api_keys_file = keys };
  start_training(&o);
}

static inline void stop_training(void) {
  stop_server();
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", data_dir);
  ASSERT_OK(system(cmd));
}

/* The JSON of an answer.  Sampled text may hold a NUL byte (the untrained
 * model writes any byte), which JSON carries as \u0000. */
static inline json_t *answer_json(const hc_t *c) {
  json_error_t e;
  json_t *v = json_loadb(c->body, c->body_len, JSON_ALLOW_NUL, &e);
  if (v == NULL)
    fprintf(stderr, "not JSON (%s): %s\n", e.text, c->body);
  ASSERT(v != NULL);
  return v;
}

/* POSTs body, expects status, returns the JSON answer. */
static inline json_t *post_json(const char *path, const char *extra, const char *body,
                                int status) {
  hc_t *c = hc_do("POST", path, extra, body);
  if (c->status != status)
    fprintf(stderr, "%s %.300s -> %d %s\n", path, body ? body : "", c->status, c->body);
  ASSERT_EQ_INT(c->status, status);
  json_t *v = answer_json(c);
  hc_free(c);
  return v;
}

/* Long-polls a future until it finished; the caller frees the answer. */
static inline hc_t *await_future(const char *rid, const char *extra) {
  char body[128];
  snprintf(body, sizeof(body), "{\"request_id\":\"%s\",\"allow_metadata_only\":false}", rid);
  for (;;) {
    hc_t *c = hc_do("POST", "/api/v1/retrieve_future", extra, body);
    ASSERT_EQ_INT(c->status, 200);
    if (strstr(c->body, "\"try_again\"") == NULL)
      return c;
    hc_free(c);
  }
}

/* The finished future's JSON result (must not be a failure). */
static inline json_t *result_json(const char *rid, const char *extra) {
  hc_t *c = await_future(rid, extra);
  json_t *v = hc_json(c);
  if (json_object_get(v, "error") != NULL)
    fprintf(stderr, "future %s failed: %s\n", rid, c->body);
  ASSERT(json_object_get(v, "error") == NULL);
  hc_free(c);
  return v;
}

/* POSTs body to path (no extra headers) and awaits the future it
 * answers, which must succeed. */
static inline void await_done(const char *path, const char *body) {
  char *rid = post_field(path, NULL, body, "request_id");
  json_decref(result_json(rid, NULL));
  free(rid);
}

/* The failed future's message; category must be cat. */
static inline char *failure_of(const char *rid, const char *cat) {
  hc_t *c = await_future(rid, NULL);
  json_t *v = hc_json(c);
  const char *e = json_string_value(json_object_get(v, "error"));
  if (e == NULL)
    fprintf(stderr, "future %s did not fail: %s\n", rid, c->body);
  ASSERT(e != NULL);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "category")), cat);
  char *r = xstrdup(e);
  json_decref(v);
  hc_free(c);
  return r;
}

/* POSTs body to path (no extra headers); its future must fail with the
 * user's category and a message holding want. */
static inline void expect_failure(const char *path, const char *body, const char *want) {
  char *rid = post_field(path, NULL, body, "request_id");
  char *msg = failure_of(rid, "user");
  ASSERT_STR_CONTAINS(msg, want);
  free(msg);
  free(rid);
}

static inline char *create_session(const char *extra) {
  return post_field("/api/v1/create_session", extra,
                    "{\"tags\":[],\"user_metadata\":{},\"sdk_version\":\"0.25.0\","
                    "\"type\":\"create_session\"}",
                    "session_id");
}

/* create_model, awaited; returns the model id. */
static inline char *create_model(const char *sid, int mseq, const char *extra) {
  char body[256];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":%d,\"base_model\":\"base\","
           "\"lora_config\":{\"rank\":4,\"seed\":3,\"train_unembed\":true,"
           "\"train_mlp\":true,\"train_attn\":true},\"type\":\"create_model\"}",
           sid, mseq);
  char *rid = post_field("/api/v1/create_model", extra, body, "request_id");
  json_t *v = result_json(rid, extra);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "type")), "create_model");
  char *mid = xstrdup(json_string_value(json_object_get(v, "model_id")));
  char want[128];
  snprintf(want, sizeof(want), "%s:train:%d", sid, mseq);
  ASSERT_STR_EQ(mid, want);
  json_decref(v);
  free(rid);
  return mid;
}

/* A JSON forward_backward (or forward) body with one datum. */
static inline char *fwd_body(const char *mid, int seq, const char *key, const char *loss_fn,
                      const char *tokens, const char *inputs) {
  char *b = xmalloc(1024);
  snprintf(b, 1024,
           "{\"model_id\":\"%s\",\"seq_id\":%d,\"%s\":{\"loss_fn\":\"%s\",\"data\":["
           "{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":%s}]},"
           "\"loss_fn_inputs\":{%s}}]},\"type\":\"forward_backward\"}",
           mid, seq, key, loss_fn, tokens, inputs);
  return b;
}

/* The same with a body of any size. */
static inline char *fwd_body_n(const char *mid, int seq, const char *tokens, const char *inputs) {
  size_t cap = strlen(tokens) + strlen(inputs) + 512;
  char *b = xmalloc(cap);
  snprintf(b, cap,
           "{\"model_id\":\"%s\",\"seq_id\":%d,\"forward_backward_input\":{\"loss_fn\":"
           "\"cross_entropy\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
           "\"encoded_text\",\"tokens\":%s}]},\"loss_fn_inputs\":{%s}}]}}",
           mid, seq, tokens, inputs);
  return b;
}

#define SFT_INPUTS                                                          \
  "\"target_tokens\":{\"data\":[2,3,4,5],\"dtype\":\"int64\",\"shape\":[4]}," \
  "\"weights\":{\"data\":[1,1,1,1],\"dtype\":\"float32\",\"shape\":[4]}"

static inline char *submit_fwdbwd(const char *mid, int seq, const char *extra) {
  char *b = fwd_body(mid, seq, "forward_backward_input", "cross_entropy", "[1,2,3,4]",
                     SFT_INPUTS);
  char *rid = post_field("/api/v1/forward_backward", extra, b, "request_id");
  free(b);
  return rid;
}

/* submit_fwdbwd without extra headers, awaited: it must succeed. */
static inline void fwdbwd_done(const char *mid, int seq) {
  char *rid = submit_fwdbwd(mid, seq, NULL);
  json_decref(result_json(rid, NULL));
  free(rid);
}

/* Reads the protobuf ForwardBackwardOutput body[0..len) into out, its
 * values in rd (initialised here; free it with tb_test_reader_free). */
static inline void read_output_proto(tb_test_reader_t *rd, const char *body, size_t len,
                                     tb__wire_fwdbwd_output_t *out) {
  tb_test_reader_init(rd);
  ASSERT_OK(tb__wire_fwdbwd_output_from_proto(&rd->ctx, &rd->arena, (tb_slice_t){ body, len },
                                              out));
}

static inline double metric_of(json_t *v, const char *key) {
  json_t *m = json_object_get(json_object_get(v, "metrics"), key);
  ASSERT(json_is_number(m));
  return json_number_value(m);
}

/* A training server with the default options, a session and one model
 * in it (model_seq_id 0).  Free *sid and *mid; stop_training ends it. */
static inline void start_training_with_model(char **sid, char **mid) {
  start_training(NULL);
  *sid = create_session(NULL);
  *mid = create_model(*sid, 0, NULL);
}

/* A training server whose engine runs one work item at a time, with
 * long polls of long_poll_ms, a session and its models a (model_seq_id 0)
 * and b (1).  Free the three; stop_training ends it. */
static inline void start_one_worker(uint64_t long_poll_ms, char **sid, char **a, char **b) {
  tb_server_options_t o = { .long_poll_ms = long_poll_ms };
  tb__engine_opts_t eo = { .shards = 1, .max_work_items = 1 };
  start_training_engine(&o, &eo, NULL, 0);
  *sid = create_session(NULL);
  *a = create_model(*sid, 0, NULL);
  *b = create_model(*sid, 1, NULL);
}

/* One step on mid: forward_backward of the SFT datum at seq, then
 * optim_step at seq + 1 with learning rate lr; waits for both. */
static inline void train_step(const char *mid, int seq, double lr) {
  char *rid = submit_fwdbwd(mid, seq, NULL);
  json_decref(result_json(rid, NULL));
  free(rid);
  char body[256];
  snprintf(body, sizeof(body),
           "{\"model_id\":\"%s\",\"seq_id\":%d,\"adam_params\":{\"learning_rate\":%g}}", mid,
           seq + 1, lr);
  rid = post_field("/api/v1/optim_step", NULL, body, "request_id");
  json_decref(result_json(rid, NULL));
  free(rid);
}

/* A forward_backward body for mid at seq of 2000 tokens: far more work
 * than any other job of the tests.  Free it. */
static inline char *long_fwd_body(const char *mid, int seq) {
  tb__buf_t toks = TB_BUF_INIT, ins = TB_BUF_INIT;
  enum { N = 2000 };
  tb__buf_append_str(&toks, "[");
  tb__buf_append_str(&ins, "\"target_tokens\":{\"dtype\":\"int64\",\"shape\":[2000],\"data\":[");
  for (int i = 0; i < N; i++) {
    tb__buf_printf(&toks, "%s%d", i ? "," : "", 1 + i % 250);
    tb__buf_printf(&ins, "%s%d", i ? "," : "", 2 + i % 250);
  }
  tb__buf_append_str(&toks, "]");
  tb__buf_append_str(&ins, "]}");
  tb__buf_terminate(&toks);
  tb__buf_terminate(&ins);
  char *body = fwd_body_n(mid, seq, toks.base, ins.base);
  tb__buf_free(&toks);
  tb__buf_free(&ins);
  return body;
}

/* long_fwd_body(mid, seq) submitted; the request id. */
static inline char *submit_long_fwd(const char *mid, int seq) {
  char *b = long_fwd_body(mid, seq);
  char *rid = post_field("/api/v1/forward_backward", NULL, b, "request_id");
  free(b);
  return rid;
}

/* A protobuf ForwardBackwardRequest of the same datum as SFT_INPUTS. */
static inline uint8_t *proto_body_loss(const char *mid, int seq, const char *loss_fn, size_t *len) {
  static const int32_t toks[4] = { 1, 2, 3, 4 };
  static const float w[4] = { 1, 1, 1, 1 };
  static const int64_t tgt[4] = { 2, 3, 4, 5 };
  TinkerPublic__Tensor tw = tb_test_proto_dense(w, sizeof(w), TINKER_PUBLIC__DTYPE__DTYPE_FLOAT32, NULL, 0);
  TinkerPublic__Tensor tt = tb_test_proto_dense(tgt, sizeof(tgt), TINKER_PUBLIC__DTYPE__DTYPE_INT64, NULL, 0);
  tb_test_proto_input_t in[] = { { "weights", &tw }, { "target_tokens", &tt } };
  return tb_test_proto_fwdbwd(mid, seq, loss_fn, toks, 4, in, 2, len);
}

static inline uint8_t *proto_body(const char *mid, int seq, size_t *len) {
  return proto_body_loss(mid, seq, "cross_entropy", len);
}

/* Sends a raw request with a binary body and the given content type. */
static inline hc_t *hc_do_raw(const char *path, const char *headers, const void *body, size_t n) {
  hc_t *c = hc_send("POST", path, headers, NULL);
  /* hc_send wrote the head ending in a blank line; put the body after a
   * Content-Length before the connection starts writing. */
  c->out.len -= 2;
  ASSERT_OK(tb__buf_printf(&c->out, "Content-Length: %zu\r\n\r\n", n));
  ASSERT_OK(tb__buf_append(&c->out, body, n));
  hc_wait(c);
  ASSERT(c->complete);
  return c;
}

#endif /* TB_TEST_SERVER_TRAINING_H */

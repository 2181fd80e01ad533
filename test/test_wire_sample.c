/*
 * wire/: sampling requests and SampleResponse in JSON and protobuf.
 */
#include "tb_test.h"

#include <math.h>

#include "core/arena.h"
#include "core/buf.h"
#include "wire/proto.h"
#include "wire/sample.h"

typedef struct {
  tb__arena_t arena;
  tb_error_t err;
  tb__jctx_t ctx;
  json_t *docs[4];
  size_t n_docs;
} ctx_t;

static void ctx_init(ctx_t *c) {
  memset(c, 0, sizeof(*c));
  tb__arena_init(&c->arena, 0);
  tb__jctx_init(&c->ctx, &c->err);
}

static void ctx_free(ctx_t *c) {
  for (size_t i = 0; i < c->n_docs; i++)
    json_decref(c->docs[i]);
  tb__arena_free(&c->arena);
  tb_error_clear(&c->err);
}

static int decode_request(ctx_t *c, const char *text, tb__wire_sample_request_t *r) {
  json_t *doc;
  ASSERT_OK(tb__json_parse((tb_slice_t){ text, strlen(text) }, &doc, &c->err));
  ASSERT_LT(c->n_docs, 4);
  c->docs[c->n_docs++] = doc;
  return tb__wire_sample_request_from_json(&c->ctx, &c->arena, doc, r);
}

TEST(sample_request_decodes_with_defaults) {
  ctx_t c;
  ctx_init(&c);
  tb__wire_sample_request_t r;
  ASSERT_OK(decode_request(&c,
    "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[5,6,7]}]},"
    "\"sampling_params\":{\"max_tokens\":20,\"seed\":42,\"stop\":[\"\\n\",\"END\"],"
    "\"temperature\":0.7},\"num_samples\":3,\"prompt_logprobs\":true,"
    "\"sampling_session_id\":\"s:sample:0\",\"seq_id\":2,\"type\":\"sample\"}", &r));
  ASSERT_EQ_INT(r.n_prompt, 3);
  ASSERT_EQ_INT(r.prompt[2], 7);
  ASSERT_EQ_INT(r.params.max_tokens, 20);
  ASSERT_EQ_INT(r.params.has_seed, 1);
  ASSERT_EQ_INT(r.params.seed, 42);
  ASSERT_NEAR(r.params.temperature, 0.7, 0, 0);
  ASSERT_EQ_INT(r.params.top_k, -1);
  ASSERT_NEAR(r.params.top_p, 1.0, 0, 0);
  ASSERT_EQ_INT(r.params.n_stop_strings, 2);
  ASSERT_STR_EQ(r.params.stop_strings[1], "END");
  ASSERT_EQ_INT(r.num_samples, 3);
  ASSERT_EQ_INT(r.prompt_logprobs, 1);
  ASSERT_EQ_INT(r.topk_prompt_logprobs, 0);
  ASSERT_STR_EQ(r.sampling_session_id, "s:sample:0");
  ASSERT_EQ_INT(r.seq_id, 2);
  ASSERT(r.model_path == NULL);

  ASSERT_OK(decode_request(&c, "{\"prompt\":{\"chunks\":[]},\"sampling_params\":"
                           "{\"stop\":[3,4]}}", &r));
  ASSERT_EQ_INT(r.params.n_stop_tokens, 2);
  ASSERT_EQ_INT(r.params.stop_tokens[1], 4);
  ASSERT_EQ_INT(r.params.has_seed, 0);
  ASSERT_EQ_INT(r.params.max_tokens, -1);
  ASSERT_OK(decode_request(&c, "{\"prompt\":{\"chunks\":[]},\"sampling_params\":"
                           "{\"stop\":\"###\"}}", &r));
  ASSERT_EQ_INT(r.params.n_stop_strings, 1);
  ctx_free(&c);
}

TEST(sample_request_errors) {
  static const struct { const char *body, *message; } cases[] = {
    { "{}", "prompt: required field is missing" },
    { "{\"prompt\":{\"chunks\":[]},\"sampling_params\":{\"top_p\":0}}",
      "sampling_params.top_p: must be in (0, 1]" },
    { "{\"prompt\":{\"chunks\":[]},\"sampling_params\":{\"temperature\":-1}}",
      "sampling_params.temperature: must not be negative" },
    { "{\"prompt\":{\"chunks\":[]},\"sampling_params\":{\"top_k\":0}}",
      "sampling_params.top_k: must be positive, or -1 for no limit" },
    { "{\"prompt\":{\"chunks\":[]},\"sampling_params\":{\"stop\":[\"a\",3]}}",
      "sampling_params.stop[1]: expected a non-empty string, got an integer" },
    { "{\"prompt\":{\"chunks\":[]},\"sampling_params\":{\"stop\":{}}}",
      "sampling_params.stop: expected a string, a list of strings or a list of token "
      "ids, got an object" },
    { "{\"prompt\":{\"chunks\":[]},\"num_samples\":0}",
      "num_samples: 0 is out of range [1, 1024]" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    ctx_t c;
    ctx_init(&c);
    tb__wire_sample_request_t r;
    ASSERT_ERR(decode_request(&c, cases[i].body, &r), TB_EFIELD);
    ASSERT_STR_EQ(c.err.message, cases[i].message);
    ctx_free(&c);
  }
}

static int32_t toks0[3] = { 10, 11, 12 };
static float lps0[3] = { -0.1f, -0.2f, -0.3f };
static int32_t toks1[1] = { 99 };
static float plp[3] = { NAN, -1.5f, -2.5f };
static int32_t tk_ids[6] = { 0, 0, 4, 5, 6, 0 };
static float tk_lps[6] = { TB_WIRE_TOPK_EMPTY_LOGPROB, TB_WIRE_TOPK_EMPTY_LOGPROB,
                           -0.5f, -1.0f, -0.25f, TB_WIRE_TOPK_EMPTY_LOGPROB };

static tb__wire_sample_response_t sample_response(tb__wire_sequence_t seqs[2]) {
  seqs[0] = (tb__wire_sequence_t){ TB_WIRE_STOP_REASON_STOP, toks0, 3, lps0 };
  seqs[1] = (tb__wire_sequence_t){ TB_WIRE_STOP_REASON_LENGTH, toks1, 1, NULL };
  return (tb__wire_sample_response_t){ seqs, 2, plp, 3, tk_ids, tk_lps, 3, 2, 0 };
}

static void assert_same_response(const tb__wire_sample_response_t *r) {
  ASSERT_EQ_INT(r->n_sequences, 2);
  ASSERT_EQ_INT(r->sequences[0].stop_reason, TB_WIRE_STOP_REASON_STOP);
  ASSERT_EQ_INT(r->sequences[0].n_tokens, 3);
  ASSERT_EQ_INT(r->sequences[0].tokens[2], 12);
  ASSERT_NEAR(r->sequences[0].logprobs[1], -0.2f, 0, 0);
  ASSERT_EQ_INT(r->sequences[1].stop_reason, TB_WIRE_STOP_REASON_LENGTH);
  ASSERT(r->sequences[1].logprobs == NULL);
  ASSERT_EQ_INT(r->n_prompt, 3);
  ASSERT(isnan(r->prompt_logprobs[0]));
  ASSERT_NEAR(r->prompt_logprobs[2], -2.5, 0, 0);
  ASSERT_EQ_INT(r->topk_rows, 3);
  ASSERT_EQ_INT(r->topk_k, 2);
  ASSERT_NEAR(r->topk_logprobs[0], TB_WIRE_TOPK_EMPTY_LOGPROB, 0, 0);
  ASSERT_EQ_INT(r->topk_ids[3], 5);
  ASSERT_NEAR(r->topk_logprobs[4], -0.25, 0, 0);
  ASSERT_NEAR(r->topk_logprobs[5], TB_WIRE_TOPK_EMPTY_LOGPROB, 0, 0);
}

TEST(sample_response_json_round_trip) {
  tb__wire_sequence_t seqs[2];
  tb__wire_sample_response_t r = sample_response(seqs);
  json_t *j = tb__wire_sample_response_to_json(&r);
  ASSERT(j != NULL);
  char *text = tb__json_dump(j, NULL);
  ASSERT_STR_EQ(text,
    "{\"type\":\"sample\",\"sequences\":[{\"stop_reason\":\"stop\",\"tokens\":[10,11,12],"
    "\"logprobs\":[-0.10000000149011612,-0.20000000298023224,-0.30000001192092896]},"
    "{\"stop_reason\":\"length\",\"tokens\":[99]}],\"prompt_cache_hit_tokens\":0,"
    "\"prompt_logprobs\":[null,-1.5,-2.5],"
    "\"topk_prompt_logprobs\":[null,[[4,-0.5],[5,-1.0]],[[6,-0.25]]]}");
  free(text);
  ctx_t c;
  ctx_init(&c);
  tb__wire_sample_response_t back;
  ASSERT_OK(tb__wire_sample_response_from_json(&c.ctx, &c.arena, j, &back));
  assert_same_response(&back);
  json_decref(j);

  j = json_loads("{\"sequences\":[{\"stop_reason\":\"maybe\",\"tokens\":[]}]}", 0, NULL);
  ASSERT_ERR(tb__wire_sample_response_from_json(&c.ctx, &c.arena, j, &back), TB_EFIELD);
  ASSERT_STR_EQ(c.err.message, "sequences[0].stop_reason: expected \"stop\" or \"length\"");
  json_decref(j);
  j = json_loads("{\"sequences\":[{\"stop_reason\":\"stop\",\"tokens\":[1,2],"
                 "\"logprobs\":[0.5]}]}", 0, NULL);
  ASSERT_ERR(tb__wire_sample_response_from_json(&c.ctx, &c.arena, j, &back), TB_EFIELD);
  ASSERT_STR_EQ(c.err.message,
                "sequences[0].logprobs: expected 2 values (one per token), got 1");
  json_decref(j);
  ctx_free(&c);
}

TEST(sample_response_proto_round_trip) {
  tb__wire_sequence_t seqs[2];
  tb__wire_sample_response_t r = sample_response(seqs);
  tb__buf_t buf = TB_BUF_INIT;
  ASSERT_OK(tb__wire_sample_response_to_proto(&r, &buf));
  /* What the SDK reads: tokens int32 LE, an empty logprobs means none. */
  TinkerPublic__SampleResponse *msg =
      tinker_public__sample_response__unpack(NULL, buf.len, (uint8_t *)buf.base);
  ASSERT(msg != NULL);
  ASSERT_EQ_INT(msg->n_sequences, 2);
  static const uint8_t ten_le[4] = { 10, 0, 0, 0 };
  ASSERT_EQ_INT(memcmp(msg->sequences[0]->tokens.data, ten_le, 4), 0);
  ASSERT_EQ_INT(msg->sequences[1]->_logprobs_case,
                TINKER_PUBLIC__SAMPLED_SEQUENCE___LOGPROBS__NOT_SET);
  ASSERT_EQ_INT(msg->sequences[1]->stop_reason, TINKER_PUBLIC__STOP_REASON__STOP_REASON_LENGTH);
  ASSERT_EQ_INT(msg->topk_prompt_logprobs->k, 2);
  ASSERT_EQ_INT(msg->topk_prompt_logprobs->prompt_length, 3);
  tinker_public__sample_response__free_unpacked(msg, NULL);

  ctx_t c;
  ctx_init(&c);
  tb__wire_sample_response_t back;
  ASSERT_OK(tb__wire_sample_response_from_proto(&c.ctx, &c.arena, tb__buf_slice(&buf), &back));
  assert_same_response(&back);
  ASSERT_ERR(tb__wire_sample_response_from_proto(&c.ctx, &c.arena,
                                                 TB_SLICE_LIT("\x0a\x05\x12"), &back),
             TB_EFIELD);
  ASSERT_STR_CONTAINS(c.err.message, "not a valid protobuf SampleResponse");
  tb__buf_free(&buf);
  ctx_free(&c);
}

/* The padded top-k grid is bounded by what the answer sends: 4000 empty
 * rows and one of 4000 cells made a grid of 16 million cells from 50 KB. */
TEST(sample_response_topk_grid_is_bounded) {
  tb__buf_t b = TB_BUF_INIT;
  ASSERT_OK(tb__buf_append_str(&b, "{\"sequences\":[],\"topk_prompt_logprobs\":[null,["));
  for (int i = 0; i < 4000; i++)
    ASSERT_OK(tb__buf_printf(&b, "%s[%d,-1.0]", i ? "," : "", i));
  ASSERT_OK(tb__buf_append_str(&b, "]"));
  for (int i = 0; i < 4000; i++)
    ASSERT_OK(tb__buf_append_str(&b, ",[]"));
  ASSERT_OK(tb__buf_append_str(&b, "]}"));
  json_t *j = json_loadb(b.base, b.len, 0, NULL);
  ASSERT(j != NULL);
  ctx_t c;
  ctx_init(&c);
  tb__wire_sample_response_t r;
  ASSERT_ERR(tb__wire_sample_response_from_json(&c.ctx, &c.arena, j, &r), TB_EFIELD);
  ASSERT_STR_CONTAINS(c.err.message, "topk_prompt_logprobs: rows of very different lengths");
  ASSERT_LT(c.arena.total, 1 << 20);
  json_decref(j);
  tb__buf_free(&b);
  ctx_free(&c);
}

/* Decoded values live in the arena (sample.h): the stop strings too, so
 * that a request outlives its JSON document. */
TEST(sample_request_stop_strings_outlive_the_document) {
  const char *texts[] = {
    "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1]}]},"
    "\"sampling_params\":{\"stop\":\"END\"}}",
    "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1]}]},"
    "\"sampling_params\":{\"stop\":[\"a\",\"END\"]}}",
  };
  for (size_t k = 0; k < 2; k++) {
    tb__arena_t a;
    tb__arena_init(&a, 0);
    tb_error_t err = { 0 };
    tb__jctx_t c;
    tb__jctx_init(&c, &err);
    json_t *doc;
    ASSERT_OK(tb__json_parse((tb_slice_t){ texts[k], strlen(texts[k]) }, &doc, &err));
    tb__wire_sample_request_t r;
    ASSERT_OK(tb__wire_sample_request_from_json(&c, &a, doc, &r));
    const json_t *stop = json_object_get(json_object_get(doc, "sampling_params"), "stop");
    const json_t *last = json_is_array(stop) ? json_array_get(stop, 1) : stop;
    ASSERT(r.params.stop_strings[k] != json_string_value(last));
    json_decref(doc);
    ASSERT_EQ_INT(r.params.n_stop_strings, k + 1);
    ASSERT_STR_EQ(r.params.stop_strings[k], "END");
    tb__arena_free(&a);
    tb_error_clear(&err);
  }
}

/* The protobuf decoder refuses what the JSON one refuses: negative token
 * ids (sampled or top-k), a non-finite top-k log-prob, a negative cache
 * hit count; so both forms of a result read the same. */
TEST(sample_response_proto_checks_like_json) {
  int32_t toks[2] = { 5, -1170 };
  TinkerPublic__SampledSequence seq = TINKER_PUBLIC__SAMPLED_SEQUENCE__INIT;
  seq.tokens.data = (uint8_t *)toks;
  seq.tokens.len = sizeof(toks);
  TinkerPublic__SampledSequence *seqs[] = { &seq };
  TinkerPublic__SampleResponse msg = TINKER_PUBLIC__SAMPLE_RESPONSE__INIT;
  msg.n_sequences = 1;
  msg.sequences = seqs;
  uint8_t buf[256];
  ctx_t c;
  ctx_init(&c);
  tb__wire_sample_response_t back;
  size_t n = tinker_public__sample_response__pack(&msg, buf);
  ASSERT_ERR(tb__wire_sample_response_from_proto(&c.ctx, &c.arena, (tb_slice_t){ (char *)buf, n },
                                                 &back),
             TB_EFIELD);
  ASSERT_STR_EQ(c.err.message, "sequences[0].tokens[1]: -1170 is negative");

  toks[1] = 6;
  msg.prompt_cache_hit_tokens = -3;
  n = tinker_public__sample_response__pack(&msg, buf);
  ASSERT_ERR(tb__wire_sample_response_from_proto(&c.ctx, &c.arena, (tb_slice_t){ (char *)buf, n },
                                                 &back),
             TB_EFIELD);
  ASSERT_STR_EQ(c.err.message, "prompt_cache_hit_tokens: -3 is negative");

  msg.prompt_cache_hit_tokens = 0;
  int32_t ids[2] = { 1, -2 };
  float lps[2] = { -0.5f, -1.0f };
  TinkerPublic__TopkPromptLogprobs tk = TINKER_PUBLIC__TOPK_PROMPT_LOGPROBS__INIT;
  tk.token_ids.data = (uint8_t *)ids;
  tk.token_ids.len = sizeof(ids);
  tk.logprobs.data = (uint8_t *)lps;
  tk.logprobs.len = sizeof(lps);
  tk.k = 2;
  tk.prompt_length = 1;
  msg._topk_prompt_logprobs_case =
      TINKER_PUBLIC__SAMPLE_RESPONSE___TOPK_PROMPT_LOGPROBS_TOPK_PROMPT_LOGPROBS;
  msg.topk_prompt_logprobs = &tk;
  n = tinker_public__sample_response__pack(&msg, buf);
  ASSERT_ERR(tb__wire_sample_response_from_proto(&c.ctx, &c.arena, (tb_slice_t){ (char *)buf, n },
                                                 &back),
             TB_EFIELD);
  ASSERT_STR_EQ(c.err.message, "topk_prompt_logprobs[0][1]: expected [token_id, logprob]");
  ids[1] = 2;
  lps[1] = NAN;
  n = tinker_public__sample_response__pack(&msg, buf);
  ASSERT_ERR(tb__wire_sample_response_from_proto(&c.ctx, &c.arena, (tb_slice_t){ (char *)buf, n },
                                                 &back),
             TB_EFIELD);
  /* An empty cell (the sentinel log-prob) is not checked. */
  ids[1] = -1;
  lps[1] = TB_WIRE_TOPK_EMPTY_LOGPROB;
  n = tinker_public__sample_response__pack(&msg, buf);
  ASSERT_OK(tb__wire_sample_response_from_proto(&c.ctx, &c.arena, (tb_slice_t){ (char *)buf, n },
                                                &back));
  ASSERT_EQ_INT(back.topk_k, 2);
  ASSERT_EQ_INT(back.sequences[0].tokens[1], 6);
  ctx_free(&c);
}

TEST_LIST(
  TEST_ENTRY(sample_request_decodes_with_defaults),
  TEST_ENTRY(sample_request_errors),
  TEST_ENTRY(sample_response_json_round_trip),
  TEST_ENTRY(sample_response_proto_round_trip),
  TEST_ENTRY(sample_response_topk_grid_is_bounded),
  TEST_ENTRY(sample_request_stop_strings_outlive_the_document),
  TEST_ENTRY(sample_response_proto_checks_like_json),
)

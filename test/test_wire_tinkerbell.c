/*
 * wire/tinkerbell: the Tinkerbell dialect's answers (add_lora, forward,
 * forward_backward, optim_step, save, load and remove_lora results,
 * samples, get_info, list_loss_functions, tokenize, detokenize) and its
 * text requests (the model a call names, chat messages, tokenize and
 * detokenize bodies).  Each is
 * read from the bytes the server answered in test/golden/tinkerbell.txt
 * (and retrieve_future.txt for a result that created its model) and
 * written again, which must give the same bytes; what JSON cannot carry
 * and text that is no valid UTF-8 are written as the dialect always wrote
 * them; malformed answers are refused naming the field.
 */
#include "tb_test.h"

#include <math.h>

#include "core/arena.h"
#include "core/json.h"
#include "wire/tinkerbell.h"
#include "wire/tinkerbell_request.h"
#include "wire_golden.h"

_Static_assert(sizeof(tb__wire_tb_forward_t) <= TB_TEST_WIRE_SCRATCH,
               "the refusals' scratch is too small");
_Static_assert(sizeof(tb__wire_tb_sample_request_t) <= TB_TEST_WIRE_SCRATCH,
               "the refusals' scratch is too small");
_Static_assert(sizeof(tb__wire_tb_batch_t) <= TB_TEST_WIRE_SCRATCH,
               "the refusals' scratch is too small");

/* The decoders through one signature (tb_test_reader_fn). */
TB_TEST_READER(read_adapter, tb__wire_tb_adapter_from_json)
TB_TEST_READER_A(read_forward, tb__wire_tb_forward_from_json)
TB_TEST_READER_A(read_optim, tb__wire_tb_optim_from_json)
TB_TEST_READER(read_status, tb__wire_tb_status_from_json)
TB_TEST_READER_A(read_sampled, tb__wire_tb_sampled_from_json)
TB_TEST_READER(read_model, tb__wire_tb_model_from_json)
TB_TEST_READER_A(read_loss_fns, tb__wire_tb_loss_fns_from_json)
TB_TEST_READER_A(read_text, tb__wire_tb_text_from_json)
TB_TEST_READER_A(read_tokenize, tb__wire_tb_tokenize_from_json)
TB_TEST_READER_A(read_detokenize, tb__wire_tb_detokenize_from_json)
TB_TEST_READER_A(read_chat, tb__wire_tb_chat_from_json)
TB_TEST_READER_A(read_sample_request, tb__wire_tb_sample_request_from_json)

static int read_batch(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) {
  return tb__wire_tb_batch_from_json(c, a, v, 1 << 20, out);
}

/* Writes a struct of each kind again. */
typedef json_t *(*writer_fn)(const void *r);

static json_t *write_adapter(const void *r) { return tb__wire_tb_adapter_to_json(r); }
static json_t *write_forward(const void *r) { return tb__wire_tb_forward_to_json(r); }
static json_t *write_optim(const void *r) { return tb__wire_tb_optim_to_json(r); }
static json_t *write_status(const void *r) { return tb__wire_tb_status_to_json(r); }
static json_t *write_sampled(const void *r) { return tb__wire_tb_sampled_to_json(r); }
static json_t *write_model(const void *r) { return tb__wire_tb_model_to_json(r); }
static json_t *write_loss_fns(const void *r) { return tb__wire_tb_loss_fns_to_json(r); }
static json_t *write_text(const void *r) { return tb__wire_tb_text_to_json(r); }

/* One recorded answer: the nth answer to request in the golden file. */
typedef struct {
  const char *file, *request;
  int nth;
  tb_test_reader_fn read;
  writer_fn write;
} recorded_t;

#define TB "tinkerbell.txt"
#define FUTURE "POST /retrieve_future"

static const recorded_t RECORDED[] = {
  { TB, FUTURE, 0, read_adapter, write_adapter },
  { TB, FUTURE, 19, read_adapter, write_adapter },
  { TB, "POST /api/v1/forward_backward", 0, read_forward, write_forward },
  { TB, "POST /api/v1/forward", 0, read_forward, write_forward },
  { TB, FUTURE, 4, read_forward, write_forward },
  { TB, "POST /api/v1/optim_step", 0, read_optim, write_optim },
  { TB, FUTURE, 5, read_optim, write_optim },
  { TB, FUTURE, 7, read_status, write_status },
  { TB, FUTURE, 11, read_status, write_status },
  { TB, FUTURE, 13, read_status, write_status },
  { TB, "POST /api/v1/remove_lora", 0, read_status, write_status },
  { TB, FUTURE, 17, read_status, write_status },
  { TB, "POST /api/v1/sample", 0, read_sampled, write_sampled },
  { TB, "POST /api/v1/sample", 1, read_sampled, write_sampled },
  { TB, FUTURE, 15, read_sampled, write_sampled },
  { TB, FUTURE, 16, read_sampled, write_sampled },
  { TB, "POST /get_info", 0, read_model, write_model },
  { TB, "GET /list_loss_functions", 0, read_loss_fns, write_loss_fns },
  { TB, "POST /api/v1/tokenize", 0, read_text, write_text },
  { TB, "POST /api/v1/tokenize", 1, read_text, write_text },
  { TB, "POST /api/v1/detokenize", 0, read_text, write_text },
  /* a forward_backward that created its model, read back from its future */
  { "retrieve_future.txt", FUTURE, 1, read_forward, write_forward },
};

TEST(recorded_answers_round_trip) {
  for (size_t i = 0; i < sizeof(RECORDED) / sizeof(RECORDED[0]); i++) {
    const recorded_t *r = &RECORDED[i];
    golden_name = r->file;
    char *bytes = golden_answer(r->request, r->nth);
    tb__arena_t a;
    tb__arena_init(&a, 0);
    _Alignas(max_align_t) char out[TB_TEST_WIRE_SCRATCH];
    json_t *doc = read_ok(bytes, r->read, &a, out);
    same_again(r->write(out), doc, bytes);
    tb__arena_free(&a);
  }
}

TEST(recorded_answers_read) {
  golden_name = "tinkerbell.txt";
  tb__arena_t a;
  tb__arena_init(&a, 0);
  char *bytes = golden_answer("POST /api/v1/forward", 0);
  tb__wire_tb_forward_t f;
  json_t *doc = read_ok(bytes, read_forward, &a, &f);
  ASSERT_STR_EQ(f.model_id, "m1");
  ASSERT_STR_EQ(f.loss_fn, "cross_entropy");
  ASSERT_EQ_INT(f.num_samples, 1);
  ASSERT_EQ_INT(f.num_tokens, 10);
  ASSERT(f.has_logprobs);
  ASSERT_EQ_INT(f.n_rows, 1);
  ASSERT_EQ_INT(f.n_metrics, 1);
  ASSERT_STR_EQ(f.metrics[0].name, "loss:sum");
  ASSERT(fabs(f.loss * f.total_weight - f.loss_sum) < 1e-9 * f.loss_sum);
  json_decref(doc);
  free(bytes);

  bytes = golden_answer("POST /api/v1/sample", 0);
  tb__wire_tb_sampled_t s;
  doc = read_ok(bytes, read_sampled, &a, &s);
  ASSERT_EQ_INT(s.n_samples, 1);
  ASSERT_EQ_INT(s.samples[0].n_tokens, 6);
  ASSERT_EQ_INT(s.samples[0].tokens[0], 101);
  ASSERT_STR_EQ(s.samples[0].stop_reason, "length");
  ASSERT_STR_EQ(s.samples[0].text, "eeeeee");
  ASSERT(s.samples[0].reasoning == NULL);
  json_decref(doc);
  free(bytes);

  bytes = golden_answer("POST /api/v1/detokenize", 0);
  tb__wire_tb_text_t t;
  doc = read_ok(bytes, read_text, &a, &t);
  ASSERT(!t.has_tokens);
  ASSERT_EQ_INT(t.text_len, 2);
  json_decref(doc);
  free(bytes);

  golden_name = "retrieve_future.txt";
  bytes = golden_answer("POST /retrieve_future", 1);
  doc = read_ok(bytes, read_forward, &a, &f);
  ASSERT(f.created);
  ASSERT(!f.has_logprobs);
  json_decref(doc);
  free(bytes);
  tb__arena_free(&a);
}

/* What the recordings do not hold: a diverged loss, a sample with
 * reasoning, a text no tokenizer could show, invalid UTF-8. */
TEST(unrecorded_shapes) {
  tb__wire_metric_t m[] = { { "loss:sum", INFINITY } };
  size_t rows[] = { 2, 0 };
  float lps[] = { -1.5f, NAN };
  tb__wire_tb_forward_t f = { .loss = NAN, .loss_sum = INFINITY, .total_weight = 2,
                              .num_samples = 2, .num_tokens = 2, .model_id = "m",
                              .backend = "b", .loss_fn = "ppo", .metrics = m, .n_metrics = 1,
                              .has_logprobs = 1, .logprobs = lps, .row_len = rows,
                              .n_rows = 2 };
  const char *want = "{\"loss\":null,\"loss_sum\":null,\"num_samples\":2,\"num_tokens\":2,"
                     "\"total_weight\":2.0,\"model_id\":\"m\",\"backend\":\"b\","
                     "\"loss_fn\":\"ppo\",\"loss_fn_outputs\":{\"loss_fn\":\"ppo\"},"
                     "\"metrics\":{\"loss:sum\":null},\"logprobs\":[[-1.5,null],[]]}";
  assert_bytes(tb__wire_tb_forward_to_json(&f), want);
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__wire_tb_forward_t back;
  json_t *doc = read_ok(want, read_forward, &a, &back);
  ASSERT(isnan(back.loss) && isnan(back.metrics[0].value) && isnan(back.logprobs[1]));
  ASSERT_EQ_INT(back.row_len[0], 2);
  ASSERT_EQ_INT(back.row_len[1], 0);
  assert_bytes(tb__wire_tb_forward_to_json(&back), want);
  json_decref(doc);

  int32_t toks[] = { 7, 8 };
  float slps[] = { -0.25f, -0.5f };
  tb__wire_tb_sample_t s[] = {
    { .text = "ok\xff", .text_len = 3, .reasoning = "why", .reasoning_len = 3, .tokens = toks,
      .logprobs = slps, .n_tokens = 2, .stop_reason = "stop" },
    { .tokens = toks, .logprobs = slps, .n_tokens = 1, .stop_reason = "length" },
  };
  tb__wire_tb_sampled_t r = { .model_id = "m", .base_model = "base", .backend = "b",
                              .prompt_tokens = 3, .samples = s, .n_samples = 2,
                              .created = 1 };
  want = "{\"model_id\":\"m\",\"base_model\":\"base\",\"backend\":\"b\","
         "\"generated_text\":\"ok\xef\xbf\xbd\",\"completions\":[\"ok\xef\xbf\xbd\",null],"
         "\"prompt_tokens\":3,\"samples\":[{\"text\":\"ok\xef\xbf\xbd\",\"tokens\":[7,8],"
         "\"logprobs\":[-0.25,-0.5],\"stop_reason\":\"stop\",\"reasoning\":\"why\"},"
         "{\"text\":null,\"tokens\":[7],\"logprobs\":[-0.25],\"stop_reason\":\"length\"}],"
         "\"created\":true}";
  assert_bytes(tb__wire_tb_sampled_to_json(&r), want);
  tb__wire_tb_sampled_t rb;
  doc = read_ok(want, read_sampled, &a, &rb);
  ASSERT(rb.created);
  ASSERT(rb.samples[1].text == NULL);
  ASSERT_STR_EQ(rb.samples[0].reasoning, "why");
  assert_bytes(tb__wire_tb_sampled_to_json(&rb), want);
  json_decref(doc);

  /* No samples: generated_text is null. */
  r.n_samples = 0;
  r.created = 0;
  assert_bytes(tb__wire_tb_sampled_to_json(&r),
               "{\"model_id\":\"m\",\"base_model\":\"base\",\"backend\":\"b\","
               "\"generated_text\":null,\"completions\":[],\"prompt_tokens\":3,"
               "\"samples\":[]}");
  /* A text with a NUL and a sequence cut short. */
  tb__wire_tb_text_t t = { .text = "a\0b\xe2\x82", .text_len = 5 };
  assert_bytes(tb__wire_tb_text_to_json(&t), "{\"text\":\"a\\u0000b\xef\xbf\xbd\xef\xbf\xbd\"}");
  tb__arena_free(&a);
}

TEST(recorded_requests_round_trip) {
  golden_name = "tinkerbell.txt";
  tb__arena_t a;
  tb__arena_init(&a, 0);
  for (int i = 0; i < 2; i++) {
    char *bytes = golden_request("POST /api/v1/tokenize", i);
    tb__wire_tb_tokenize_t r;
    json_t *doc = read_ok(bytes, read_tokenize, &a, &r);
    tb__jctx_t c;
    tb_error_t err = { 0 };
    tb__jctx_init(&c, &err);
    tb__wire_tb_target_t t;
    ASSERT_OK(tb__wire_tb_target_from_json(&c, doc, &t));
    ASSERT((t.model_id.base != NULL) == (i == 1));
    ASSERT((t.base_model.base != NULL) == (i == 0));
    ASSERT_EQ_INT(r.chat.n_messages, i);
    ASSERT_EQ_INT(r.add_generation_prompt, i);
    same_again(tb__wire_tb_tokenize_to_json(&t, &r), doc, bytes);
  }
  char *bytes = golden_request("POST /api/v1/detokenize", 0);
  tb__wire_tb_detokenize_t d;
  json_t *doc = read_ok(bytes, read_detokenize, &a, &d);
  ASSERT_EQ_INT(d.n_tokens, 2);
  ASSERT_EQ_INT(d.tokens[1], 105);
  tb__wire_tb_target_t none = { { NULL, 0 }, { NULL, 0 } };
  same_again(tb__wire_tb_detokenize_to_json(&none, &d), doc, bytes);

  /* A conversation of the training data and of a sample's messages. */
  const char *with_chat[] = { "POST /api/v1/forward_backward", "POST /api/v1/sample" };
  const char *list[] = { "data", "messages" };
  for (int i = 0; i < 2; i++) {
    bytes = golden_request(with_chat[i], i);
    doc = parse(bytes);
    json_t *conv = json_object_get(doc, list[i]);
    if (i == 0)
      conv = json_array_get(conv, 0);
    tb__jctx_t c;
    tb_error_t err = { 0 };
    tb__jctx_init(&c, &err);
    tb__wire_tb_chat_t chat;
    ASSERT_OK(tb__wire_tb_chat_from_json(&c, &a, conv, &chat));
    ASSERT_EQ_INT(chat.n_messages, i == 0 ? 2 : 1);
    ASSERT_STR_EQ(chat.messages[0].role, "user");
    json_t *again = tb__wire_tb_chat_to_json(&chat);
    ASSERT(json_equal(again, conv));
    json_decref(again);
    json_decref(doc);
    free(bytes);
  }
  /* reasoning travels as reasoning_content */
  tb_chat_message_t m = { "assistant", "a", "b", 1 };
  tb__wire_tb_chat_t chat = { &m, 1 };
  assert_bytes(tb__wire_tb_chat_to_json(&chat),
               "[{\"role\":\"assistant\",\"content\":\"a\",\"reasoning_content\":\"b\"}]");
  tb__arena_free(&a);
}

/* The sample bodies: read, written again (a number as the writer
 * writes it: 0 may come back 0.0) and read again to the same values. */
TEST(sample_requests_round_trip) {
  golden_name = "tinkerbell.txt";
  const char *calls[] = { "POST /api/v1/sample", "POST /api/v1/sample", "POST /api/v1/asample",
                          "POST /api/v1/asample" };
  const char *forms[] = { "prompt", "messages", "prompt", "prompts" };
  for (int i = 0; i < 4; i++) {
    tb__arena_t a;
    tb__arena_init(&a, 0);
    char *bytes = golden_request(calls[i], i % 2);
    tb__wire_tb_sample_request_t r, back;
    json_t *doc = read_ok(bytes, read_sample_request, &a, &r);
    ASSERT(json_object_get(doc, forms[i]) != NULL);
    ASSERT_EQ_INT(r.chat.n_messages, i == 1);
    tb__jctx_t c;
    tb_error_t err = { 0 };
    tb__jctx_init(&c, &err);
    tb__wire_tb_target_t t;
    ASSERT_OK(tb__wire_tb_target_from_json(&c, doc, &t));
    json_t *again = tb__wire_tb_sample_request_to_json(&t, &r);
    ASSERT(again != NULL);
    ASSERT_OK(tb__wire_tb_sample_request_from_json(&c, &a, again, &back));
    ASSERT_EQ_INT(back.has_max_tokens, r.has_max_tokens);
    ASSERT_EQ_INT(back.max_tokens, r.max_tokens);
    ASSERT_EQ_INT(back.seed, r.seed);
    ASSERT_EQ_INT(back.num_samples, r.num_samples);
    ASSERT_EQ_INT(back.nested, r.nested);
    ASSERT(back.temperature == r.temperature);
    ASSERT_STR_EQ(back.text_key, r.text_key);
    char *want = tb__json_dump(again, NULL);
    assert_bytes(tb__wire_tb_sample_request_to_json(&t, &back), want);
    free(want);
    json_decref(again);
    json_decref(doc);
    free(bytes);
    tb__arena_free(&a);
  }
  /* Stops: a string alone, or a list of strings and ids. */
  tb__arena_t a;
  tb__arena_init(&a, 0);
  const char *with_stops[] = {
    "{\"prompt_tokens\":[1,2],\"raw\":true,\"max_tokens\":0,\"top_k\":5,\"stop\":\"x\"}",
    "{\"prompt\":\"p\",\"sampling_params\":{\"temperature\":0.5,\"n\":3,"
    "\"stop\":[\"a\",7]}}",
  };
  for (int i = 0; i < 2; i++) {
    tb__wire_tb_sample_request_t r;
    json_t *doc = read_ok(with_stops[i], read_sample_request, &a, &r);
    ASSERT_EQ_INT(r.n_stops, i + 1);
    ASSERT_EQ_INT(r.stop_list, i);
    tb__wire_tb_target_t none = { { NULL, 0 }, { NULL, 0 } };
    assert_bytes(tb__wire_tb_sample_request_to_json(&none, &r), with_stops[i]);
    json_decref(doc);
  }
  tb__arena_free(&a);
}

TEST(batch_requests_read) {
  golden_name = "tinkerbell.txt";
  tb__arena_t a;
  tb__arena_init(&a, 0);
  char *bytes = golden_request("POST /api/v1/forward", 0);
  tb__wire_tb_batch_t b;
  json_t *doc = read_ok(bytes, read_batch, &a, &b);
  ASSERT(b.chat);
  ASSERT_EQ_INT(b.n_convs, 1);
  ASSERT_EQ_INT(b.convs[0].n_messages, 2);
  /* the chat form is written with its loss */
  json_t *again = tb__wire_tb_batch_to_json(&b);
  ASSERT(json_equal(json_object_get(again, "data"), json_object_get(doc, "data")));
  json_decref(again);
  json_decref(doc);
  free(bytes);
  /* Datums take cross_entropy when they name no loss, the body untouched. */
  const char *datums = "{\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\","
                       "\"tokens\":[1,2]}]},\"loss_fn_inputs\":{\"target_tokens\":[2,3],"
                       "\"weights\":[1.0,1.0]}}]}";
  doc = read_ok(datums, read_batch, &a, &b);
  ASSERT(!b.chat);
  ASSERT_STR_EQ(b.datums.loss_fn, "cross_entropy");
  ASSERT_EQ_INT(b.datums.n_data, 1);
  ASSERT(json_object_get(doc, "loss_fn") == NULL);
  json_decref(doc);
  tb__arena_free(&a);
}

TEST(malformed_requests_refused) {
  static const tb_test_refusal_t cases[] = {
    { "{\"text\":\"a\",\"messages\":[]}", read_tokenize,
      "text: give text or messages, not both" },
    { "{}", read_tokenize, "text: required (or messages)" },
    { "{\"text\":1}", read_tokenize, "text: expected a string, got an integer" },
    { "{\"text\":\"a\",\"add_special_tokens\":1}", read_tokenize,
      "add_special_tokens: expected a boolean" },
    { "{\"text\":\"a\",\"add_generation_prompt\":true}", read_tokenize,
      "add_generation_prompt: only with messages" },
    { "{\"text\":\"a\",\"renderer\":\"x\"}", read_tokenize, "renderer: only with messages" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"add_special_tokens\":true}",
      read_tokenize, "add_special_tokens: only with text" },
    { "{\"messages\":[]}", read_tokenize,
      "messages: expected a non-empty list of {role, content}" },
    { "{\"messages\":[{\"role\":\"tool\",\"content\":\"a\"}]}", read_tokenize,
      "messages[0].role: expected system, user or assistant, got \"tool\"" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":\"a\",\"reasoning_content\":\"r\"}]}",
      read_tokenize, "messages[0].reasoning_content: only an assistant message has one" },
    { "{\"messages\":[{\"role\":\"user\"}]}", read_tokenize,
      "messages[0].content: required field is missing" },
    { "{}", read_detokenize, "tokens: required field is missing" },
    { "{\"tokens\":[1,\"2\"]}", read_detokenize, "tokens[1]: expected an integer, got a string" },
    { "{\"tokens\":[],\"skip_special_tokens\":0}", read_detokenize,
      "skip_special_tokens: expected a boolean" },
    { "[3]", read_chat, "[0]: expected an object" },
    { "{}", read_sample_request, "prompt: required (or messages, or prompt_tokens)" },
    { "{\"prompt\":\"a\",\"prompt_tokens\":[1]}", read_sample_request,
      "prompt: give one of prompt, messages and prompt_tokens" },
    { "{\"prompts\":[\"a\",\"b\"]}", read_sample_request, "prompts: expected a list of one" },
    { "{\"prompts\":[1]}", read_sample_request, "prompts[0]: expected a string, got an integer" },
    { "{\"prompt_tokens\":[]}", read_sample_request,
      "prompt_tokens: expected a non-empty list of token ids" },
    { "{\"prompt_tokens\":[1,null]}", read_sample_request,
      "prompt_tokens[1]: expected an integer, got null" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"raw\":true}",
      read_sample_request, "raw: only with a text prompt" },
    { "{\"prompt\":\"a\",\"sampling_params\":[]}", read_sample_request,
      "sampling_params: expected an object" },
    { "{\"prompt\":\"a\",\"max_tokens\":\"3\"}", read_sample_request,
      "max_tokens: expected an integer, got a string" },
    { "{\"prompt\":\"a\",\"temperature\":-1}", read_sample_request,
      "temperature: expected >= 0 (0 is greedy)" },
    { "{\"prompt\":\"a\",\"sampling_params\":{\"top_p\":0}}", read_sample_request,
      "sampling_params.top_p: expected a number in (0, 1]" },
    { "{\"prompt\":\"a\",\"top_k\":0}", read_sample_request,
      "top_k: expected -1 (no limit) or at least 1" },
    { "{\"prompt\":\"a\",\"sampling_params\":{\"n\":0}}", read_sample_request,
      "sampling_params.n: 0 is out of range [1, 128]" },
    { "{\"prompt\":\"a\",\"stop\":{}}", read_sample_request,
      "stop: expected a string or a list of strings and token ids, got an object" },
    { "{\"prompt\":\"a\",\"stop\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}",
      read_sample_request, "stop: at most 16 stops" },
    { "{\"prompt\":\"a\",\"stop\":[\"x\",\"\"]}", read_sample_request,
      "stop[1]: an empty stop string" },
    { "{\"prompt\":\"a\",\"stop\":[1.5]}", read_sample_request,
      "stop[0]: expected an integer, got 1.5" },
    { "{}", read_batch, "data: required field is missing" },
    { "{\"data\":[]}", read_batch, "data: expected at least one conversation or datum" },
    { "{\"data\":[[]],\"loss_fn_inputs\":{}}", read_batch,
      "loss_fn_inputs: not read at the top level" },
    { "{\"data\":[[]],\"loss_fn\":\"ppo\"}", read_batch,
      "loss_fn: chat conversations train with cross_entropy; send Tinker datums for ppo" },
    { "{\"data\":[[]]}", read_batch, "data[0]: expected at least one message" },
    { "{\"data\":[[{\"role\":\"user\",\"content\":\"a\"}],3]}", read_batch,
      "data[1]: expected a conversation (a list of messages) like data[0], got an integer" },
    { "{\"data\":[{\"model_input\":1}]}", read_batch, "data[0].model_input: " },
  };
  assert_refusals(cases, sizeof(cases) / sizeof(cases[0]));
}

TEST(malformed_answers_refused) {
  static const tb_test_refusal_t cases[] = {
    { "[]", read_adapter, "expected an object" },
    { "{\"model_id\":\"m\",\"base_model\":\"b\",\"rank\":0,\"alpha\":1.0,\"backend\":\"x\"}",
      read_adapter, "rank: " },
    { "{\"loss\":\"x\"}", read_forward, "loss: expected a number" },
    { "{\"loss\":1.0,\"loss_sum\":1.0,\"num_samples\":1,\"num_tokens\":1,\"total_weight\":1.0,"
      "\"model_id\":\"m\",\"backend\":\"b\",\"loss_fn\":\"ce\",\"loss_fn_outputs\":{},"
      "\"metrics\":{\"a:sum\":\"1\"}}",
      read_forward, "metrics.a:sum: expected a number" },
    { "{\"loss\":1.0,\"loss_sum\":1.0,\"num_samples\":1,\"num_tokens\":1,\"total_weight\":1.0,"
      "\"model_id\":\"m\",\"backend\":\"b\",\"loss_fn\":\"ce\",\"loss_fn_outputs\":{},"
      "\"metrics\":{},\"logprobs\":[[1.0],2]}",
      read_forward, "logprobs[1]: expected a list of log-probabilities, got an integer" },
    { "{\"model_id\":\"m\",\"backend\":\"b\",\"step\":1}", read_optim,
      "metrics: required field is missing" },
    { "{\"model_id\":\"m\"}", read_status, "status: required field is missing" },
    { "{\"model_id\":\"m\",\"status\":\"saved\",\"created\":1}", read_status,
      "created: expected a boolean" },
    { "{\"model_id\":\"m\",\"base_model\":\"b\",\"backend\":\"x\",\"prompt_tokens\":1,"
      "\"samples\":[{\"text\":null,\"tokens\":[1,2],\"logprobs\":[0.5],"
      "\"stop_reason\":\"stop\"}]}",
      read_sampled, "samples[0].logprobs: expected 2 values (one per token), got 1" },
    { "{\"model_id\":\"m\",\"base_model\":\"b\",\"backend\":\"x\",\"prompt_tokens\":1,"
      "\"samples\":[{\"text\":1}]}",
      read_sampled, "samples[0].text: expected a string" },
    { "{\"model_id\":\"m\",\"model_data\":{\"arch\":\"llama\"}}", read_model,
      "model_data.vocab_size: required field is missing" },
    { "{\"available_loss_functions\":[\"ce\",3]}", read_loss_fns,
      "available_loss_functions[1]: expected a string, got an integer" },
    { "{\"tokens\":[1,\"2\"]}", read_text, "tokens[1]: " },
  };
  assert_refusals(cases, sizeof(cases) / sizeof(cases[0]));
}

TEST_LIST(
  TEST_ENTRY(recorded_answers_round_trip),
  TEST_ENTRY(recorded_answers_read),
  TEST_ENTRY(unrecorded_shapes),
  TEST_ENTRY(malformed_answers_refused),
  TEST_ENTRY(recorded_requests_round_trip),
  TEST_ENTRY(sample_requests_round_trip),
  TEST_ENTRY(batch_requests_read),
  TEST_ENTRY(malformed_requests_refused),
)

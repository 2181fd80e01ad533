/*
 * What the Tinkerbell dialect takes over loopback: bad input of every kind
 * answered with a field path; Tinker datums and conversations; sync calls
 * that wait; base models beside the generated one (a copy without a
 * tokenizer, a Qwen3 directory); rate limits; checkpoints after a
 * restart; a server without a data directory.
 */
#include "test_server_tinkerbell.h"

#include "engine/hf_model.h"

/* Bad input: 400 (or 404, 409, 422) with the field's path, category user,
 * and nothing created. */
TEST(bad_input) {
  start_training(NULL);
  json_decref(post_ok("/api/v1/add_lora", NULL, "{\"model_id\":\"m\"}"));
  char long_text[4096 + 64];
  memset(long_text, 'a', 4096);
  long_text[4096] = '\0';
  char *too_long = xmalloc(8192);
  snprintf(too_long, 8192,
           "{\"model_id\":\"m\",\"data\":[[{\"role\":\"user\",\"content\":\"%s\"}]]}", long_text);
  static const struct {
    const char *path, *body;
    int status;
    const char *want;
  } cases[] = {
    { "/api/v1/forward_backward", "{\"data\":[[]]}", 400, "model_id: required" },
    { "/api/v1/forward_backward", "{\"model_id\":7,\"data\":[]}", 400, "model_id: expected a string" },
    { "/api/v1/forward_backward_async", "{\"model_id\":\"../x\",\"data\":" HELLO "}", 400, "model_id: expected 1 to 128" },
    { "/api/v1/forward_backward_async", "{\"model_id\":\"a:b\",\"data\":" HELLO "}", 400, "model_id: expected" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\"}", 400, "data: required" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":{}}", 400, "data: expected an array" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[[]]}", 400, "data[0]: expected at least one message" },
    { "/api/v1/forward_backward", "{\"model_id\":\"fresh\",\"data\":[[{\"role\":\"bot\",\"content\":\"x\"}]]}", 400, "data[0][0].role: expected system, user or assistant" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[[{\"role\":\"user\"}]]}", 400, "data[0][0].content: required" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[[{\"role\":\"user\",\"content\":\"x\"}],7]}", 400, "data[1]: expected a conversation" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[[\"hi\"]]}", 400, "data[0][0]: expected an object" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":" HELLO ",\"loss_fn\":\"ppo\"}", 400, "loss_fn: chat conversations train with cross_entropy" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":" HELLO ",\"loss_fn_inputs\":{}}", 400, "loss_fn_inputs: not read at the top level" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},\"loss_fn_inputs\":{}}]}", 400, "data[0].loss_fn_inputs.target_tokens: missing" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},\"loss_fn_inputs\":{\"target_tokens\":[2,999]}}]}", 400, "data: " },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},\"loss_fn_inputs\":{\"target_tokens\":[2,3]}}],\"loss_fn\":\"nope\"}", 400, "loss_fn: unknown loss function" },
    { "/api/v1/optim_step", "{\"model_id\":\"m\",\"adam_params\":{\"lr\":0.1}}", 400, "adam_params.lr: unknown Adam parameter" },
    { "/api/v1/optim_step", "{\"model_id\":\"m\",\"adam_params\":{\"learning_rate\":-1}}", 400,
      "adam_params.learning_rate: must be a finite number in [0, 1]" },
    { "/api/v1/optim_step", "{\"model_id\":\"m\",\"adam_params\":{\"learning_rate\":\"x\"}}", 400, "adam_params.learning_rate: expected a number" },
    { "/api/v1/add_lora", "{\"rank\":0}", 400, "rank: " },
    { "/api/v1/add_lora", "{\"alpha\":-1}", 400, "alpha: expected a number > 0" },
    { "/api/v1/add_lora", "{\"base_model\":\"llama-3-8b\"}", 400, "base_model: unknown model" },
    { "/api/v1/add_lora_async", "{\"model_id\":\"m\"}", 409, "model_id: m exists" },
    { "/api/v1/add_lora", "{\"model_id\":\"/etc\"}", 400, "model_id: expected" },
    { "/api/v1/remove_lora", "{\"model_id\":\"nope\"}", 404, "model_id: unknown model nope" },
    { "/api/v1/remove_lora_async", "{}", 400, "model_id: required" },
    { "/api/v1/save_weights_async", "{\"model_id\":\"nope\"}", 404, "model_id: unknown model" },
    { "/api/v1/save_weights_async", "{\"model_id\":\"m\",\"path\":\"../x\"}", 400, "path: expected" },
    { "/api/v1/load_weights_async", "{\"model_id\":\"m\"}", 400, "path: required" },
    { "/api/v1/load_weights_async", "{\"model_id\":\"m\",\"path\":\"tinkerbell://m/other/x\"}", 400, "path: expected a checkpoint name" },
    { "/api/v1/load_weights_async", "{\"model_id\":\"m\",\"path\":\"tinkerbell://../weights/x\"}", 400, "path: expected" },
    { "/api/v1/sample", "{\"model_id\":\"m\"}", 400, "prompt: required" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"messages\":[]}", 400, "prompt: give one of" },
    { "/api/v1/sample", "{\"prompt\":7}", 400, "prompt: expected a string" },
    { "/api/v1/sample", "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content: required" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"temperature\":-1}", 400, "temperature: expected >= 0" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"top_p\":0}", 400, "top_p: expected a number in (0, 1]" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"top_k\":0}", 400, "top_k: expected -1" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"num_samples\":0}", 400, "num_samples: " },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"max_tokens\":0}", 400, "max_tokens: " },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"stop\":[\"\"]}", 400, "stop[0]: an empty stop string" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"stop\":{}}", 400, "stop: expected a string or a list" },
    { "/api/v1/sample", "{\"prompt_tokens\":[1,272]}", 400, "prompt_tokens[1]: " },
    { "/api/v1/sample", "{\"model_id\":\"nope\",\"prompt\":\"a\"}", 404, "model_id: unknown model" },
    { "/api/v1/sample", "{\"base_model\":\"nope\",\"prompt\":\"a\"}", 400, "base_model: unknown model" },
    { "/api/v1/asample", "{\"prompt\":\"a\",\"raw\":1}", 400, "raw: expected a boolean" },
    { "/api/v1/asample", "{\"prompts\":[\"a\",\"b\"]}", 400, "prompts: expected a list of one prompt" },
    { "/api/v1/asample", "{\"prompts\":[7]}", 400, "prompts[0]: expected a string" },
    { "/api/v1/asample", "{\"prompts\":[\"a\"],\"prompt\":\"b\"}", 400, "prompt: give one of" },
    { "/api/v1/asample", "{\"prompts\":[\"a\"],\"sampling_params\":{\"n\":0}}", 400, "sampling_params.n: " },
    { "/api/v1/asample", "{\"prompts\":[\"a\"],\"sampling_params\":{\"max_tokens\":\"x\"}}", 400, "sampling_params.max_tokens: expected an integer" },
    { "/api/v1/asample", "{\"prompts\":[\"a\"],\"sampling_params\":7}", 400, "sampling_params: expected an object" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"num_samples\":129}", 400, "num_samples: " },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"seed\":-1}", 400, "seed: " },
    { "/api/v1/sample", "{\"prompt_tokens\":[]}", 400, "prompt_tokens: expected a non-empty list" },
    { "/api/v1/sample", "{\"prompt_tokens\":[1.5]}", 400, "prompt_tokens[0]: expected an integer" },
    { "/api/v1/sample", "{\"messages\":{}}", 400, "messages: expected a non-empty list" },
    { "/api/v1/sample", "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"raw\":true}", 400, "raw: only with a text prompt" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"stop\":[1,\"x\",{}]}", 400, "stop[2]: expected an integer" },
    { "/api/v1/sample", "{\"prompt\":\"a\",\"temperature\":\"hot\"}", 400, "temperature: expected a number" },
    { "/api/v1/add_lora", "{\"rank\":5000}", 400, "rank: " },
    { "/api/v1/add_lora", "{\"train_mlp\":\"yes\"}", 400, "train_mlp: expected a boolean" },
    { "/api/v1/add_lora", "{\"seed\":-3}", 400, "seed: " },
    { "/api/v1/load_weights_async", "{\"model_id\":\"m\",\"path\":\"x\",\"optimizer\":\"yes\"}", 400, "optimizer: expected a boolean" },
    { "/api/v1/save_weights_async", "{\"model_id\":\"m\",\"overwrite\":1}", 400, "overwrite: expected a boolean" },
    { "/api/v1/save_weights_for_sampler_async", "{\"model_id\":\"m\",\"path\":\"\"}", 400, "path: expected 1 to 128" },
    { "/api/v1/optim_step", "{\"model_id\":\"m\",\"adam_params\":[]}", 400, "adam_params: expected an object" },
    { "/api/v1/forward_backward", "{\"model_id\":\"m\",\"data\":" HELLO ",\"loss_fn\":7}", 400, "loss_fn: expected a string" },
    { "/api/v1/forward_async", "not json", 400, "invalid JSON" },
    { "/fwdbwd", "[1]", 400, "body: expected an object" },
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    hc_t *c = hc_do("POST", cases[i].path, NULL, cases[i].body);
    if (c->status != cases[i].status || strstr(c->body, cases[i].want) == NULL ||
        strstr(c->body, "\"category\":\"user\"") == NULL)
      fprintf(stderr, "case %zu: %s %s -> %d %s\n", i, cases[i].path, cases[i].body, c->status,
              c->body);
    ASSERT_EQ_INT(c->status, cases[i].status);
    ASSERT_STR_CONTAINS(c->body, cases[i].want);
    ASSERT_STR_CONTAINS(c->body, "\"category\":\"user\"");
    hc_free(c);
  }
  /* Too long for the context of base: 422. */
  hc_expect("POST", "/api/v1/forward_backward", NULL, too_long, 422, "more than the context");
  /* A prompt and max_tokens beyond the context of base (2048); without
   * max_tokens, the default shrinks to what is left. */
  snprintf(too_long, 8192, "{\"prompt\":\"%.2000s\",\"max_tokens\":100}", long_text);
  hc_expect("POST", "/api/v1/sample", NULL, too_long, 422,
            "max_tokens: the prompt's 2004 tokens and 100 more exceed the context of 2048");
  snprintf(too_long, 8192, "{\"prompt\":\"%.2000s\",\"raw\":true,\"stop\":[]}", long_text);
  json_t *v = post_ok("/api/v1/sample", NULL, too_long);
  ASSERT_EQ_INT((int)num_of(v, "prompt_tokens"), 2001);
  ASSERT_LE(json_array_size(json_object_get(json_array_get(json_object_get(v, "samples"), 0),
                                            "tokens")),
            47);
  json_decref(v);
  hc_expect("POST", "/get_info", NULL, "{\"model_id\":\"nope\"}", 404, "model_id: unknown model");
  hc_expect("POST", "/get_info", NULL, "{}", 400, "model_id: required");
  /* Nothing was created by the refused calls. */
  hc_expect("POST", "/api/v1/remove_lora", NULL, "{\"model_id\":\"fresh\"}", 404, NULL);
  free(too_long);
  stop_training();
}

/* Tinker datums as data, with their own weights and losses; several
 * conversations with a system message. */
TEST(datums_and_conversations) {
  start_training(NULL);
  /* Cross-entropy over weights 1, 1, 0, 2: the mean divides by 4. */
  const char *ce = "{\"model_id\":\"d\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
                   "\"encoded_text\",\"tokens\":[1,2,3,4]}]},\"loss_fn_inputs\":{"
                   "\"target_tokens\":[2,3,4,5],\"weights\":[1,1,0,2]}}]}";
  json_t *v = post_ok("/api/v1/forward_backward", NULL, ce);
  ASSERT(json_is_true(json_object_get(v, "created")));
  ASSERT_NEAR(num_of(v, "num_tokens"), 3, 0, 0);
  ASSERT_NEAR(num_of(v, "total_weight"), 4, 0, 0);
  double sum = num_of(v, "loss_sum");
  ASSERT_NEAR(num_of(v, "loss"), sum / 4, 1e-9, 1e-6);
  json_decref(v);
  /* forward gives the log-probs the sum is made of. */
  v = post_ok("/api/v1/forward", NULL, ce);
  json_t *lp = json_array_get(json_object_get(v, "logprobs"), 0);
  ASSERT_EQ_INT(json_array_size(lp), 4);
  double want = 0;
  static const double w[] = { 1, 1, 0, 2 };
  for (size_t i = 0; i < 4; i++)
    want -= w[i] * json_number_value(json_array_get(lp, i));
  ASSERT_NEAR(sum, want, 1e-5, 1e-5);
  json_decref(v);
  /* A policy loss with its inputs. */
  v = post_ok("/api/v1/forward_backward", NULL,
              "{\"model_id\":\"d\",\"loss_fn\":\"importance_sampling\",\"data\":[{"
              "\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3]}]},"
              "\"loss_fn_inputs\":{\"target_tokens\":[2,3,4],\"logprobs\":[-1,-1,-1],"
              "\"advantages\":[1,0.5,-1]}}]}");
  ASSERT_STR_EQ(str_of(v, "loss_fn"), "importance_sampling");
  ASSERT_NEAR(num_of(v, "num_tokens"), 3, 0, 0);
  json_decref(v);
  /* Two conversations, one with a system message: the mean is over both
   * assistants' tokens ("4" + <|end|>, "ok" + <|end|>). */
  v = post_ok("/api/v1/forward_backward", NULL,
              "{\"model_id\":\"d\",\"data\":[[{\"role\":\"system\",\"content\":\"Be brief.\"},"
              "{\"role\":\"user\",\"content\":\"2+2?\"},{\"role\":\"assistant\",\"content\":"
              "\"4\"}],[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\","
              "\"content\":\"ok\"}]]}");
  ASSERT_EQ_INT((int)num_of(v, "num_samples"), 2);
  ASSERT_NEAR(num_of(v, "num_tokens"), 5, 0, 0);
  json_decref(v);
  /* Sampling by token ids, raw text and stop strings. */
  v = post_ok("/api/v1/sample", NULL,
              "{\"prompt_tokens\":[256,104,105],\"max_tokens\":4,\"seed\":3,\"stop\":[261]}");
  ASSERT_STR_EQ(str_of(v, "model_id"), "base");
  ASSERT_EQ_INT((int)num_of(v, "prompt_tokens"), 3);
  json_decref(v);
  v = post_ok("/api/v1/sample", NULL, "{\"prompt\":\"ab\",\"raw\":true,\"max_tokens\":2,\"seed\":5}");
  ASSERT_EQ_INT((int)num_of(v, "prompt_tokens"), 3);
  json_decref(v);
  /* Greedy raw text, then stopped at its first byte by a stop token and
   * by a stop string (the base model is the same everywhere, so is this). */
  v = post_ok("/api/v1/sample", NULL,
              "{\"prompt\":\"hi\",\"raw\":true,\"temperature\":0,\"max_tokens\":16}");
  json_t *toks = json_object_get(json_array_get(json_object_get(v, "samples"), 0), "tokens");
  size_t k = 0;
  while (k < json_array_size(toks) && json_integer_value(json_array_get(toks, k)) >= 128)
    k++;
  ASSERT_LT(k, json_array_size(toks));
  int byte = (int)json_integer_value(json_array_get(toks, k));
  json_decref(v);
  char body[256];
  snprintf(body, sizeof(body),
           "{\"prompt\":\"hi\",\"raw\":true,\"temperature\":0,\"max_tokens\":16,"
           "\"stop\":[%d]}", byte);
  v = post_ok("/api/v1/sample", NULL, body);
  json_t *s0 = json_array_get(json_object_get(v, "samples"), 0);
  ASSERT_STR_EQ(str_of(s0, "stop_reason"), "stop");
  ASSERT_EQ_INT(json_array_size(json_object_get(s0, "tokens")), k + 1);
  json_decref(v);
  snprintf(body, sizeof(body),
           "{\"prompt\":\"hi\",\"raw\":true,\"temperature\":0,\"max_tokens\":16,"
           "\"stop\":[\"\\u%04x\"]}", (unsigned)byte);
  v = post_ok("/api/v1/sample", NULL, body);
  s0 = json_array_get(json_object_get(v, "samples"), 0);
  ASSERT_STR_EQ(str_of(s0, "stop_reason"), "stop");
  ASSERT_EQ_INT(json_array_size(json_object_get(s0, "tokens")), k + 1);
  json_decref(v);
  stop_training();
}

/* A sync call waits on the loop; its client may leave meanwhile, and a
 * closing server still answers the ones that wait. */
TEST(sync_calls_waiting) {
  tb_server_options_t o = { .max_models_per_user = 1 };
  start_training(&o);
  json_decref(post_ok("/api/v1/add_lora", NULL, "{\"model_id\":\"one\"}"));
  /* "two" waits for the model limit, and so does the call. */
  char *fb = fb_body("two", HELLO);
  hc_t *c = hc_send("POST", "/api/v1/forward_backward", NULL, fb);
  wait_ms(50);
  ASSERT(!c->complete);
  hc_close(c);
  hc_wait(c);
  hc_free(c);
  wait_ms(20);
  /* The job still runs once "one" is gone; its result waits for nobody. */
  json_decref(post_ok("/api/v1/remove_lora", NULL, "{\"model_id\":\"one\"}"));
  json_t *v = post_ok("/api/v1/forward_backward", NULL, fb);
  ASSERT(json_object_get(v, "created") == NULL);  /* the first call made it */
  json_decref(v);
  /* Closing answers a sync call still waiting: 500, the server's. */
  c = hc_send("POST", "/api/v1/optim_step", NULL, "{\"model_id\":\"three\"}");
  wait_ms(50);
  ASSERT(!c->complete);
  tb_server_close(&server, on_server_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ_INT(server_closed, 1);
  ASSERT(c->complete);
  ASSERT_EQ_INT(c->status, 500);
  ASSERT_STR_CONTAINS(c->body, "closing");
  ASSERT_STR_CONTAINS(c->body, "\"category\":\"server\"");
  hc_free(c);
  free(fb);
  ASSERT_LOOP_CLOSE(&loop);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", data_dir);
  ASSERT_OK(system(cmd));
}

/* A base model from a Hugging Face directory has no chat template here:
 * chat data and text are refused with 422, datums and token ids work. */
TEST(another_base_model) {
  char hf[64], dir[96];
  save_base_copy(hf, dir, sizeof(dir));
  start_training_beside("copy", dir);
  json_t *v = post_ok("/api/v1/add_lora", NULL, "{\"base_model\":\"copy\",\"model_id\":\"c\"}");
  ASSERT_STR_EQ(str_of(v, "base_model"), "copy");
  json_decref(v);
  json_decref(post_ok("/api/v1/add_lora", NULL, "{\"model_id\":\"b\"}"));
  hc_expect("POST", "/api/v1/forward_backward", NULL,
            "{\"model_id\":\"c\",\"data\":" HELLO "}", 422,
            "data: the model copy has no tokenizer (copy/tokenizer.json is missing");
  hc_expect("POST", "/api/v1/sample", NULL, "{\"model_id\":\"c\",\"prompt\":\"hi\"}", 422,
            "prompt: the model copy has no tokenizer");
  hc_expect("POST", "/api/v1/sample", NULL,
            "{\"model_id\":\"c\",\"prompt_tokens\":[1,2],\"stop\":\"x\"}", 422,
            "stop: the model copy has no tokenizer");
  /* The copy has the weights of base: the same datum, the same loss. */
  const char *datum = "\"data\":[{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\","
                      "\"tokens\":[1,2,3,4]}]},\"loss_fn_inputs\":{\"target_tokens\":[2,3,4,5]}}]}";
  char body[512];
  snprintf(body, sizeof(body), "{\"model_id\":\"c\",%s", datum);
  v = post_ok("/api/v1/forward", NULL, body);
  double lc = num_of(v, "loss");
  json_decref(v);
  snprintf(body, sizeof(body), "{\"model_id\":\"b\",%s", datum);
  v = post_ok("/api/v1/forward", NULL, body);
  ASSERT_NEAR(num_of(v, "loss"), lc, 1e-6, 1e-6);
  json_decref(v);
  v = post_ok("/api/v1/sample", NULL, "{\"model_id\":\"c\",\"prompt_tokens\":[1,2],\"max_tokens\":2}");
  json_t *s0 = json_array_get(json_object_get(v, "samples"), 0);
  ASSERT(json_is_null(json_object_get(s0, "text")));
  ASSERT_STR_EQ(str_of(v, "base_model"), "copy");
  json_decref(v);
  /* A base model's name samples it bare. */
  v = post_ok("/api/v1/sample", NULL, "{\"model_id\":\"copy\",\"prompt_tokens\":[1],\"max_tokens\":1}");
  ASSERT_STR_EQ(str_of(v, "model_id"), "copy");
  json_decref(v);
  stop_training();
  tb_test_tmpdir_remove(hf);
}

/* A Qwen3 directory served beside base: its adapters train and sample,
 * and get_info names its family. */
TEST(a_qwen3_base_model) {
  char hf[64], dir[96];
  tb_test_tmpdir(hf, "tb-tb-q3");
  snprintf(dir, sizeof(dir), "%s/m", hf);
  tb__model_config_t c = tb_test_config(32, 48, 2, 4, 2, 16, 300, 64, 1e-6f, 1000000.0f);
  c.arch = TB_ARCH_QWEN3;
  c.qk_norm = 1;
  c.tie_word_embeddings = 1;
  tb__weights_t w;
  tb_test_uniform_model(&w, &c, 8, -0.5f, 0.5f);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__hf_save(dir, &w, NULL, 0, &err));
  tb__weights_free(&w);
  start_training_beside("q3", dir);
  json_decref(post_ok("/api/v1/add_lora", NULL, "{\"base_model\":\"q3\",\"model_id\":\"q\"}"));
  json_t *v = post_ok("/get_info", NULL, "{\"model_id\":\"q\"}");
  ASSERT_STR_EQ(str_of(json_object_get(v, "model_data"), "arch"), "qwen3");
  ASSERT_EQ_INT((int)num_of(json_object_get(v, "model_data"), "vocab_size"), 300);
  json_decref(v);
  const char *fb = "{\"model_id\":\"q\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
                   "\"encoded_text\",\"tokens\":[1,2,3,299]}]},\"loss_fn_inputs\":"
                   "{\"target_tokens\":[2,3,299,5]}}]}";
  v = post_ok("/api/v1/forward_backward", NULL, fb);
  double l0 = num_of(v, "loss");
  json_decref(v);
  json_decref(post_ok("/api/v1/optim_step", NULL,
                      "{\"model_id\":\"q\",\"adam_params\":{\"learning_rate\":0.05}}"));
  v = post_ok("/api/v1/forward_backward", NULL, fb);
  ASSERT_LT(num_of(v, "loss"), l0);
  json_decref(v);
  v = post_ok("/api/v1/sample", NULL, "{\"model_id\":\"q\",\"prompt_tokens\":[1,2],\"max_tokens\":3}");
  json_t *s0 = json_array_get(json_object_get(v, "samples"), 0);
  ASSERT_EQ_INT(json_array_size(json_object_get(s0, "tokens")), 3);
  json_decref(v);
  stop_training();
  tb_test_tmpdir_remove(hf);
}

/* Submissions count against the user's rate limit: 429 with
 * Retry-After. */
TEST(rate_limited) {
  tb_server_options_t o = { .rate_limit_rps = 0.1, .rate_limit_burst = 2 };
  start_training(&o);
  char *fb = fb_body("r", HELLO);
  json_decref(post_ok("/api/v1/forward_backward", NULL, fb));
  char *rid = submit("/api/v1/forward_backward_async", NULL, fb, "r");
  hc_t *c = hc_do("POST", "/api/v1/forward_backward", NULL, fb);
  ASSERT_EQ_INT(c->status, 429);
  ASSERT_STR_CONTAINS(c->head, "Retry-After: ");
  ASSERT_STR_CONTAINS(c->body, "\"category\":\"user\"");
  hc_free(c);
  /* Polling is no submission. */
  json_decref(retrieve(rid, NULL));
  free(rid);
  free(fb);
  stop_training();
}

/* Checkpoints outlive the server: after a restart on the same data_dir a
 * load creates the model again from them. */
TEST(checkpoints_after_restart) {
  start_training(NULL);
  char *fb = fb_body("p", HELLO);
  json_decref(post_ok("/api/v1/forward_backward", NULL, fb));
  json_decref(post_ok("/api/v1/optim_step", NULL,
                      "{\"model_id\":\"p\",\"adam_params\":{\"learning_rate\":0.01}}"));
  char *rid = submit("/save_weights", NULL, "{\"model_id\":\"p\",\"path\":\"s\"}", "p");
  json_decref(retrieve(rid, NULL));
  free(rid);
  json_t *v = post_ok("/api/v1/forward", NULL, fb);
  double before = num_of(v, "loss");
  json_decref(v);
  stop_server();  /* data_dir stays */

  tb_server_options_t o2 = { .data_dir = data_dir, .long_poll_ms = 10000 };
  start_server(&o2);
  tb__engine_opts_t eo = { .shards = 2 };
  tb_error_t err = { 0 };
  ASSERT_OK(tb__training_start(srv, &eo, NULL, 0, &err));
  hc_expect("POST", "/api/v1/remove_lora", NULL, "{\"model_id\":\"p\"}", 404, NULL);
  rid = submit("/api/v1/load_weights_async", NULL,
               "{\"model_id\":\"p\",\"path\":\"tinkerbell://p/weights/s\",\"optimizer\":true}", "p");
  v = retrieve(rid, NULL);
  ASSERT(json_is_true(json_object_get(v, "created")));
  json_decref(v);
  free(rid);
  v = post_ok("/api/v1/forward", NULL, fb);
  ASSERT_NEAR(num_of(v, "loss"), before, 1e-6, 1e-5);
  json_decref(v);
  free(fb);
  stop_training();
}

/* A server without a data_dir keeps no checkpoints: saving and loading
 * are refused at once; training and sampling work. */
TEST(no_data_dir) {
  tb_server_options_t o = { .long_poll_ms = 10000 };
  start_server(&o);
  tb__engine_opts_t eo = { .shards = 2 };
  tb_error_t err = { 0 };
  ASSERT_OK(tb__training_start(srv, &eo, NULL, 0, &err));
  char *fb = fb_body("n", HELLO);
  json_decref(post_ok("/api/v1/forward_backward", NULL, fb));
  hc_expect("POST", "/api/v1/save_weights_async", NULL, "{\"model_id\":\"n\",\"path\":\"x\"}",
            400, "path: this server keeps no checkpoints");
  hc_expect("POST", "/load_weights", NULL, "{\"model_id\":\"n\",\"path\":\"x\"}", 400,
            "path: this server keeps no checkpoints");
  json_decref(post_ok("/api/v1/sample", NULL, "{\"model_id\":\"n\",\"prompt\":\"hi\",\"seed\":1}"));
  free(fb);
  stop_server();
}

TEST_LIST(
  /* It samples from a 2001-token prompt: its prefill, attention row by row
   * over the KV blocks, takes about 20 s of CPU in the unoptimised sanitizer
   * build, and more than 90 s there on a loaded machine. */
  TEST_ENTRY_TIMEOUT(bad_input, 300000),
  TEST_ENTRY(datums_and_conversations),
  TEST_ENTRY(sync_calls_waiting),
  TEST_ENTRY(another_base_model),
  TEST_ENTRY(a_qwen3_base_model),
  TEST_ENTRY(rate_limited),
  TEST_ENTRY(checkpoints_after_restart),
  TEST_ENTRY(no_data_dir),
)

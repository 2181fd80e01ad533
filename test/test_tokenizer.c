/*
 * The `base` tokenizer and template (text/base_chat.h and the public
 * tokenizer and renderer API): byte round trips, special tokens by name,
 * and the chat template with its trainable mask.
 */
#include "tb_test.h"

#include "core/buf.h"
#include "text/base_chat.h"
#include "tinkerbell/renderer.h"
#include "tinkerbell/tokenizer.h"

TEST(bytes_round_trip) {
  /* Every byte value, including NUL and invalid UTF-8. */
  char text[256];
  for (int i = 0; i < 256; i++)
    text[i] = (char)i;
  tb__tokens_t t = TB_TOKENS_INIT;
  ASSERT_OK(tb__tok_encode((tb_slice_t){ text, sizeof(text) }, &t));
  ASSERT_EQ_INT(t.len, 256);
  for (int i = 0; i < 256; i++) {
    ASSERT_EQ_INT(t.ids[i], i);
    ASSERT_EQ_INT(t.trainable[i], 0);
  }
  tb__buf_t out = TB_BUF_INIT;
  ASSERT_OK(tb__tok_decode(t.ids, t.len, 0, &out));
  ASSERT_EQ_INT(out.len, 256);
  ASSERT_EQ_INT(memcmp(out.base, text, 256), 0);
  tb__buf_free(&out);
  tb__tokens_free(&t);

  ASSERT_OK(tb__tok_encode(TB_SLICE_LIT("h\xc3\xa9!"), &t));
  ASSERT_EQ_INT(t.len, 4);
  ASSERT_EQ_INT(t.ids[1], 0xc3);
  tb__tokens_free(&t);
}

TEST(special_tokens_are_never_parsed_from_text) {
  tb__tokens_t t = TB_TOKENS_INIT;
  ASSERT_OK(tb__tok_encode(TB_SLICE_LIT("<|end|>"), &t));
  ASSERT_EQ_INT(t.len, 7);
  for (size_t i = 0; i < t.len; i++)
    ASSERT_LT(t.ids[i], TB_TOK_BYTES);
  tb__tokens_free(&t);
}

TEST(special_tokens_by_name_and_decode_flags) {
  ASSERT_EQ_INT(tb__tok_special_id(TB_SLICE_LIT("<|bos|>")), TB_TOK_BOS);
  ASSERT_EQ_INT(tb__tok_special_id(TB_SLICE_LIT("<|assistant|>")),
                TB_TOK_ASSISTANT);
  ASSERT_EQ_INT(tb__tok_special_id(TB_SLICE_LIT("<|reserved_8|>")),
                TB_TOK_VOCAB - 1);
  ASSERT_ERR(tb__tok_special_id(TB_SLICE_LIT("<|nope|>")), TB_ENOENT);
  ASSERT_STR_EQ(tb__tok_special_name(TB_TOK_END), "<|end|>");
  ASSERT(tb__tok_special_name('a') == NULL);
  ASSERT(tb__tok_special_name(TB_TOK_VOCAB) == NULL);
  for (int id = TB_TOK_BYTES; id < TB_TOK_VOCAB; id++) {
    const char *name = tb__tok_special_name(id);
    ASSERT(name != NULL);
    ASSERT_EQ_INT(tb__tok_special_id((tb_slice_t){ name, strlen(name) }), id);
  }

  int32_t ids[] = { TB_TOK_USER, 'h', 'i', TB_TOK_END };
  tb__buf_t out = TB_BUF_INIT;
  ASSERT_OK(tb__tok_decode(ids, 4, 0, &out));
  ASSERT_MEM_EQ_STR(out.base, out.len, "hi");
  out.len = 0;
  ASSERT_OK(tb__tok_decode(ids, 4, TB_TOK_DECODE_SPECIAL, &out));
  ASSERT_MEM_EQ_STR(out.base, out.len, "<|user|>hi<|end|>");
  out.len = 0;
  int32_t bad[] = { 'a', TB_TOK_VOCAB };
  ASSERT_ERR(tb__tok_decode(bad, 2, 0, &out), TB_EINVAL);
  ASSERT_EQ_INT(out.len, 0);
  int32_t neg[] = { -1 };
  ASSERT_ERR(tb__tok_decode(neg, 1, 0, &out), TB_EINVAL);
  tb__buf_free(&out);
}

#define MSG(r, c) { TB_SLICE_LIT(r), TB_SLICE_LIT(c) }

TEST(chat_template_and_mask) {
  tb__chat_msg_t msgs[] = {
    MSG("system", "S"),
    MSG("user", "hi"),
    MSG("assistant", "yo"),
    MSG("user", "q"),
    MSG("assistant", "a"),
  };
  tb__tokens_t t = TB_TOKENS_INIT;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__chat_render(msgs, 5, &t, &err));
  int32_t want[] = {
    TB_TOK_BOS,
    TB_TOK_SYSTEM, 'S', TB_TOK_END,
    TB_TOK_USER, 'h', 'i', TB_TOK_END,
    TB_TOK_ASSISTANT, 'y', 'o', TB_TOK_END,
    TB_TOK_USER, 'q', TB_TOK_END,
    TB_TOK_ASSISTANT, 'a', TB_TOK_END,
  };
  uint8_t mask[] = {
    0,
    0, 0, 0,
    0, 0, 0, 0,
    0, 1, 1, 1,
    0, 0, 0,
    0, 1, 1,
  };
  size_t n = sizeof(want) / sizeof(want[0]);
  ASSERT_EQ_INT(t.len, n);
  for (size_t i = 0; i < n; i++) {
    ASSERT_EQ_INT(t.ids[i], want[i]);
    ASSERT_EQ_INT(t.trainable[i], mask[i]);
  }
  tb__buf_t text = TB_BUF_INIT;
  ASSERT_OK(tb__tok_decode(t.ids, t.len, TB_TOK_DECODE_SPECIAL, &text));
  ASSERT_MEM_EQ_STR(text.base, text.len,
                    "<|bos|><|system|>S<|end|><|user|>hi<|end|>"
                    "<|assistant|>yo<|end|><|user|>q<|end|>"
                    "<|assistant|>a<|end|>");
  tb__buf_free(&text);
  tb__tokens_free(&t);

  /* The generation prompt ends with the assistant header, nothing
   * trainable; the reply ends at a stop token. */
  ASSERT_OK(tb__chat_render_prompt(msgs + 1, 1, &t, &err));
  int32_t pwant[] = { TB_TOK_BOS, TB_TOK_USER, 'h', 'i', TB_TOK_END,
                      TB_TOK_ASSISTANT };
  ASSERT_EQ_INT(t.len, 6);
  for (size_t i = 0; i < 6; i++) {
    ASSERT_EQ_INT(t.ids[i], pwant[i]);
    ASSERT_EQ_INT(t.trainable[i], 0);
  }
  ASSERT(tb__chat_is_stop(TB_TOK_END));
  ASSERT(tb__chat_is_stop(TB_TOK_EOS));
  ASSERT(!tb__chat_is_stop('a'));
  ASSERT(!tb__chat_is_stop(TB_TOK_ASSISTANT));

  /* Rendering appends to what the sequence already holds. */
  size_t before = t.len;
  ASSERT_OK(tb__chat_render(msgs, 0, &t, &err));
  ASSERT_EQ_INT(t.len, before + 1);
  ASSERT_EQ_INT(t.ids[before], TB_TOK_BOS);
  tb__tokens_free(&t);
}

TEST(chat_rejects_unknown_roles_without_side_effects) {
  tb__chat_msg_t msgs[] = { MSG("user", "x"), MSG("tool", "y") };
  tb__tokens_t t = TB_TOKENS_INIT;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__tokens_push(&t, 'z', 1));
  ASSERT_ERR(tb__chat_render(msgs, 2, &t, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "messages[1].role");
  ASSERT_STR_CONTAINS(err.message, "\"tool\"");
  ASSERT_EQ_INT(t.len, 1);
  ASSERT_ERR(tb__chat_render_prompt(msgs, 2, &t, &err), TB_EINVAL);
  ASSERT_EQ_INT(t.len, 1);
  tb_error_clear(&err);
  tb__tokens_free(&t);
}

TEST(long_content_grows_the_buffer) {
  size_t n = 100000;
  char *big = xmalloc(n);
  memset(big, 'x', n);
  tb__chat_msg_t msgs[] = { { TB_SLICE_LIT("assistant"), { big, n } } };
  tb__tokens_t t = TB_TOKENS_INIT;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__chat_render(msgs, 1, &t, &err));
  ASSERT_EQ_INT(t.len, n + 3);
  size_t trainable = 0;
  for (size_t i = 0; i < t.len; i++)
    trainable += t.trainable[i];
  ASSERT_EQ_INT(trainable, n + 1);
  tb__tokens_free(&t);
  free(big);
}

/* The public face: plain arrays, weights on assistant tokens (or all
 * tokens without an assistant), prompts, decoding. */
TEST(public_chat_render_and_decode) {
  const tb_chat_message_t chat[] = { { "user", "hi" }, { "assistant", "yo" } };
  int32_t *ids;
  float *w;
  size_t n;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_base_chat_render(chat, 2, 0, &ids, &w, &n, &err));
  const int32_t want[] = { TB_TOK_BOS, TB_TOK_USER, 'h', 'i', TB_TOK_END,
                           TB_TOK_ASSISTANT, 'y', 'o', TB_TOK_END };
  ASSERT_EQ_INT(n, 9);
  for (size_t i = 0; i < n; i++) {
    ASSERT_EQ_INT(ids[i], want[i]);
    ASSERT_EQ_INT(w[i] == 1.0f, i >= 6);
  }
  free(ids);
  free(w);
  ASSERT_OK(tb_base_chat_render(chat, 1, 0, &ids, &w, &n, &err));
  for (size_t i = 0; i < n; i++)
    ASSERT(w[i] == 1.0f);
  free(ids);
  free(w);
  ASSERT_OK(tb_base_chat_render(chat, 1, 1, &ids, &w, &n, &err));
  ASSERT_EQ_INT(n, 6);
  ASSERT_EQ_INT(ids[5], TB_TOK_ASSISTANT);
  ASSERT(w[0] == 0.0f && w[5] == 0.0f);
  char *text;
  ASSERT_OK(tb_base_decode(ids, n, &text));
  ASSERT_STR_EQ(text, "hi");
  free(text);
  free(ids);
  free(w);
  const tb_chat_message_t bad[] = { { "user", "x" }, { "robot", "y" } };
  ASSERT_ERR(tb_base_chat_render(bad, 2, 0, &ids, &w, &n, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(tb_error_message(&err), "1");
  tb_error_clear(&err);
  const int32_t out_of_range[] = { 'a', 9999 };
  ASSERT_ERR(tb_base_decode(out_of_range, 2, &text), TB_EINVAL);
}

/* `base` behind the tokenizer and renderer API: special tokens are read
 * in text as every tokenizer's are (not inside content the renderer
 * writes), bytes round-trip, and the renderer gives the same tokens and
 * weights as the template above. */
TEST(base_through_the_public_api) {
  tb_tokenizer_t *t;
  ASSERT_OK(tb_tokenizer_base(&t));
  ASSERT_EQ_INT(tb_tokenizer_vocab_size(t), TB_TOK_VOCAB);
  ASSERT_EQ_INT(tb_tokenizer_bos_id(t), TB_TOK_BOS);
  ASSERT_EQ_INT(tb_tokenizer_eos_id(t), TB_TOK_EOS);
  ASSERT_EQ_INT(tb_tokenizer_token_to_id(t, "<|end|>", 7), TB_TOK_END);
  int32_t *ids;
  size_t n;
  tb_error_t err = { 0 };
  ASSERT_OK(tb_tokenizer_encode(t, "a<|end|>\xff", 9, 0, &ids, NULL, &n, &err));
  ASSERT_EQ_INT(n, 3);
  ASSERT_EQ_INT(ids[0], 'a');
  ASSERT_EQ_INT(ids[1], TB_TOK_END);
  ASSERT_EQ_INT(ids[2], 0xff);
  char *text;
  size_t len;
  ASSERT_OK(tb_tokenizer_decode(t, ids, n, 0, &text, &len, &err));
  ASSERT_MEM_EQ_STR(text, len, "a<|end|>\xff");
  free(text);
  free(ids);
  ASSERT_OK(tb_tokenizer_encode(t, "<|end|>", 7, TB_ENCODE_SPECIAL_AS_TEXT, &ids, NULL, &n, &err));
  ASSERT_EQ_INT(n, 7);
  free(ids);
  tb_renderer_t *r;
  ASSERT_OK(tb_renderer_new("base", t, &r, &err));
  const tb_chat_message_t chat[] = { { "user", "<|end|>" }, { "assistant", "yo" } };
  tb_rendered_t out;
  ASSERT_OK(tb_renderer_render(r, chat, 2, 0, &out, &err));
  const int32_t want[] = { TB_TOK_BOS, TB_TOK_USER, '<', '|', 'e', 'n', 'd', '|', '>', TB_TOK_END,
                           TB_TOK_ASSISTANT, 'y', 'o', TB_TOK_END };
  ASSERT_EQ_INT(out.len, 14);
  for (size_t i = 0; i < out.len; i++) {
    ASSERT_EQ_INT(out.tokens[i], want[i]);
    ASSERT_EQ_INT(out.weights[i] == 1.0f, i >= 11);
  }
  tb_stop_t stop;
  tb_renderer_stop(r, &stop);
  ASSERT_EQ_INT(stop.n_tokens, 2);
  ASSERT_EQ_INT(stop.tokens[0], TB_TOK_END);
  ASSERT_EQ_INT(stop.tokens[1], TB_TOK_EOS);
  tb_reply_t reply;
  ASSERT_OK(tb_renderer_parse(r, out.tokens + 11, 3, &reply, &err));
  ASSERT_STR_EQ(reply.content, "yo");
  ASSERT(reply.ended && reply.reasoning == NULL);
  tb_reply_free(&reply);
  tb_rendered_free(&out);
  tb_renderer_free(r);
  tb_tokenizer_free(t);
}

TEST_LIST(
  TEST_ENTRY(base_through_the_public_api),
  TEST_ENTRY(bytes_round_trip),
  TEST_ENTRY(special_tokens_are_never_parsed_from_text),
  TEST_ENTRY(special_tokens_by_name_and_decode_flags),
  TEST_ENTRY(chat_template_and_mask),
  TEST_ENTRY(chat_rejects_unknown_roles_without_side_effects),
  TEST_ENTRY(long_content_grows_the_buffer),
  TEST_ENTRY(public_chat_render_and_decode),
)

/*
 * The JSON codecs of the Tinkerbell dialect's text requests (see
 * tinkerbell_request.h).  The decoders check in the order the server has
 * always checked, so that a body with one fault is refused with the same
 * message as before.
 */
#include "wire/tinkerbell_request.h"

#include <string.h>

#include "core/buf.h"
#include "wire/codec.h"

/* ------------------------------------------------------------ encoding */

/* Adds key: s when s is given. */
static int put_slice(json_t *o, const char *key, tb_slice_t s) {
  return s.base != NULL ? tb__wire_put(o, key, json_stringn(s.base, s.len)) : 0;
}

static int put_target(json_t *o, const tb__wire_tb_target_t *t) {
  return put_slice(o, "model_id", t->model_id) | put_slice(o, "base_model", t->base_model);
}

json_t *tb__wire_tb_target_to_json(const tb__wire_tb_target_t *r) {
  json_t *o = json_object();
  return tb__wire_done(o, o == NULL || put_target(o, r));
}

json_t *tb__wire_tb_chat_to_json(const tb__wire_tb_chat_t *r) {
  json_t *arr = json_array();
  int bad = arr == NULL;
  for (size_t i = 0; !bad && i < r->n_messages; i++) {
    const tb_chat_message_t *m = &r->messages[i];
    json_t *o = json_object();
    bad = tb__wire_put(o, "role", json_string(m->role));
    bad |= tb__wire_put(o, "content", json_stringn(m->content ? m->content : "", m->content_len));
    if (m->reasoning != NULL)
      bad |= tb__wire_put(o, "reasoning_content", json_string(m->reasoning));
    bad |= json_array_append_new(arr, tb__wire_done(o, bad)) != 0;
  }
  return tb__wire_done(arr, bad);
}

json_t *tb__wire_tb_tokenize_to_json(const tb__wire_tb_target_t *t,
                                     const tb__wire_tb_tokenize_t *r) {
  json_t *o = json_object();
  int bad = o == NULL || put_target(o, t);
  if (r->text.base != NULL) {
    bad |= put_slice(o, "text", r->text);
    if (r->add_special_tokens)
      bad |= tb__wire_put(o, "add_special_tokens", json_true());
  } else {
    bad |= tb__wire_put(o, "messages", tb__wire_tb_chat_to_json(&r->chat));
    if (r->add_generation_prompt)
      bad |= tb__wire_put(o, "add_generation_prompt", json_true());
  }
  return tb__wire_done(o, bad);
}

json_t *tb__wire_tb_detokenize_to_json(const tb__wire_tb_target_t *t,
                                       const tb__wire_tb_detokenize_t *r) {
  json_t *o = json_object(), *ids = json_array();
  int bad = o == NULL || ids == NULL || put_target(o, t);
  for (size_t i = 0; !bad && i < r->n_tokens; i++)
    bad = json_array_append_new(ids, json_integer((json_int_t)r->tokens[i])) != 0;
  bad |= tb__wire_put(o, "tokens", ids);
  if (r->skip_special_tokens)
    bad |= tb__wire_put(o, "skip_special_tokens", json_true());
  return tb__wire_done(o, bad);
}

/* ------------------------------------------------------------ decoding */

int tb__wire_tb_target_from_json(tb__jctx_t *c, const json_t *v, tb__wire_tb_target_t *out) {
  memset(out, 0, sizeof(*out));
  int rc = tb__json_get_string(c, v, "model_id", TB_JSON_OPTIONAL, &out->model_id);
  rc = rc < 0 ? rc : tb__json_get_string(c, v, "base_model", TB_JSON_OPTIONAL, &out->base_model);
  return rc < 0 ? rc : 0;
}

/* One message of a conversation. */
static int read_message(tb__jctx_t *c, const json_t *m, tb_chat_message_t *out) {
  tb_slice_t role = { NULL, 0 }, content = { NULL, 0 }, reasoning = { NULL, 0 };
  int rc = tb__json_expect_object(c, m);
  rc = rc < 0 ? rc : tb__json_get_string(c, m, "role", TB_JSON_REQUIRED, &role);
  rc = rc < 0 ? rc : tb__json_get_string(c, m, "content", TB_JSON_REQUIRED, &content);
  rc = rc < 0 ? rc : tb__json_get_string(c, m, "reasoning_content", TB_JSON_OPTIONAL,
                                          &reasoning);
  if (rc < 0)
    return rc;
  if (!tb__slice_eq_str(role, "system") && !tb__slice_eq_str(role, "user") &&
      !tb__slice_eq_str(role, "assistant"))
    return tb__jctx_fail_at(c, "role", "expected system, user or assistant, got \"%.*s\"",
                            (int)(role.len > 40 ? 40 : role.len), role.base);
  if (reasoning.base != NULL && !tb__slice_eq_str(role, "assistant"))
    return tb__jctx_fail_at(c, "reasoning_content", "only an assistant message has one");
  out->role = role.base;
  out->content = content.len ? content.base : "";
  out->content_len = content.len;
  out->reasoning = reasoning.base;
  return 0;
}

int tb__wire_tb_chat_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                               tb__wire_tb_chat_t *out) {
  size_t n = json_array_size(v);
  tb_chat_message_t *msgs = tb__arena_calloc(a, n ? n : 1, sizeof(*msgs));
  if (msgs == NULL)
    return tb__jctx_fail(c, "out of memory");
  int rc = 0;
  for (size_t j = 0; rc == 0 && j < n; j++) {
    size_t mark = tb__jctx_push_index(c, j);
    rc = read_message(c, json_array_get(v, j), &msgs[j]);
    tb__jctx_pop(c, mark);
  }
  out->messages = msgs;
  out->n_messages = n;
  return rc;
}

/* Fails at key when o has it: an option of the other form. */
static int absent(tb__jctx_t *c, const json_t *o, const char *key, const char *why) {
  return json_object_get(o, key) != NULL ? tb__jctx_fail_at(c, key, "%s", why) : 0;
}

int tb__wire_tb_tokenize_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                   tb__wire_tb_tokenize_t *out) {
  memset(out, 0, sizeof(*out));
  const json_t *text = json_object_get(v, "text");
  const json_t *msgs = json_object_get(v, "messages");
  if ((text != NULL) == (msgs != NULL))
    return tb__jctx_fail_at(c, "text", text ? "give text or messages, not both"
                                            : "required (or messages)");
  int rc;
  if (text != NULL) {
    rc = tb__wire_opt_bool(c, v, "add_special_tokens", 0, &out->add_special_tokens);
    rc = rc ? rc : absent(c, v, "add_generation_prompt", "only with messages");
    rc = rc ? rc : absent(c, v, "renderer", "only with messages");
    if (rc == 0 && !json_is_string(text))
      rc = tb__jctx_fail_at(c, "text", "expected a string, got %s", tb__json_type_name(text));
    if (rc == 0)
      out->text = (tb_slice_t){ json_string_value(text), json_string_length(text) };
    return rc;
  }
  rc = tb__wire_opt_bool(c, v, "add_generation_prompt", 0, &out->add_generation_prompt);
  rc = rc ? rc : absent(c, v, "add_special_tokens", "only with text (a chat template writes "
                                                    "its own special tokens)");
  if (rc == 0 && (!json_is_array(msgs) || json_array_size(msgs) == 0))
    rc = tb__jctx_fail_at(c, "messages", "expected a non-empty list of {role, content}");
  if (rc == 0) {
    size_t mark = tb__jctx_push_key(c, "messages");
    rc = tb__wire_tb_chat_from_json(c, a, msgs, &out->chat);
    tb__jctx_pop(c, mark);
  }
  return rc;
}

int tb__wire_tb_detokenize_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                     tb__wire_tb_detokenize_t *out) {
  memset(out, 0, sizeof(*out));
  json_t *arr;
  int rc = tb__json_get_array(c, v, "tokens", TB_JSON_REQUIRED, &arr);
  rc = rc < 0 ? rc : tb__wire_opt_bool(c, v, "skip_special_tokens", 0, &out->skip_special_tokens);
  if (rc < 0)
    return rc;
  out->n_tokens = json_array_size(arr);
  out->tokens = tb__arena_calloc(a, out->n_tokens + 1, sizeof(*out->tokens));
  if (out->tokens == NULL)
    return tb__jctx_fail(c, "out of memory");
  size_t mark = tb__jctx_push_key(c, "tokens");
  for (size_t i = 0; rc == 0 && i < out->n_tokens; i++) {
    size_t m = tb__jctx_push_index(c, i);
    rc = tb__json_as_int(c, json_array_get(arr, i), INT64_MIN, INT64_MAX, &out->tokens[i]);
    tb__jctx_pop(c, m);
  }
  tb__jctx_pop(c, mark);
  return rc;
}

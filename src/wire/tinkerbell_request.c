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
#include "wire/datum.h"

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

/* ------------------------------------------------------------ sample */

/* The ids of a list (c's path at it), as sent. */
static int read_ids(tb__jctx_t *c, tb__arena_t *a, const json_t *arr, int64_t **out,
                    size_t *n) {
  *n = json_array_size(arr);
  *out = tb__arena_calloc(a, *n + 1, sizeof(**out));
  if (*out == NULL)
    return tb__jctx_fail(c, "out of memory");
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < *n; i++) {
    size_t m = tb__jctx_push_index(c, i);
    rc = tb__json_as_int(c, json_array_get(arr, i), INT64_MIN, INT64_MAX, &(*out)[i]);
    tb__jctx_pop(c, m);
  }
  return rc;
}

/* The prompt: exactly one of its four forms. */
static int read_prompt(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                       tb__wire_tb_sample_request_t *out) {
  const json_t *text = json_object_get(v, "prompt");
  const json_t *msgs = json_object_get(v, "messages");
  const json_t *ids = json_object_get(v, "prompt_tokens");
  const json_t *list = json_object_get(v, "prompts");
  int given = (text != NULL) + (msgs != NULL) + (ids != NULL) + (list != NULL);
  if (given != 1)
    return tb__jctx_fail_at(c, "prompt", given == 0 ? "required (or messages, or "
                                                      "prompt_tokens)"
                                                    : "give one of prompt, messages and "
                                                      "prompt_tokens");
  out->text_key = "prompt";
  if (list != NULL) {
    if (!json_is_array(list) || json_array_size(list) != 1)
      return tb__jctx_fail_at(c, "prompts", "expected a list of one prompt (a call samples "
                                            "one; send a call per prompt)");
    text = json_array_get(list, 0);
    out->text_key = "prompts[0]";
  }
  int rc = tb__wire_opt_bool(c, v, "raw", 0, &out->raw);
  if (rc != 0)
    return rc;
  if (ids != NULL) {
    if (!json_is_array(ids) || json_array_size(ids) == 0)
      return tb__jctx_fail_at(c, "prompt_tokens", "expected a non-empty list of token ids");
    size_t mark = tb__jctx_push_key(c, "prompt_tokens");
    rc = read_ids(c, a, ids, &out->prompt_tokens, &out->n_prompt_tokens);
    tb__jctx_pop(c, mark);
    return rc;
  }
  if (text != NULL && !json_is_string(text))
    return tb__jctx_fail_at(c, out->text_key, "expected a string, got %s",
                            tb__json_type_name(text));
  if (msgs != NULL && out->raw)
    return tb__jctx_fail_at(c, "raw", "only with a text prompt");
  if (msgs != NULL && (!json_is_array(msgs) || json_array_size(msgs) == 0))
    return tb__jctx_fail_at(c, "messages", "expected a non-empty list of {role, content}");
  if (text != NULL) {
    out->text = (tb_slice_t){ json_string_value(text), json_string_length(text) };
    return 0;
  }
  size_t mark = tb__jctx_push_key(c, "messages");
  rc = tb__wire_tb_chat_from_json(c, a, msgs, &out->chat);
  tb__jctx_pop(c, mark);
  return rc;
}

/* "stop" of ps: a string, or a list of strings and token ids. */
static int read_stops(tb__jctx_t *c, tb__arena_t *a, const json_t *ps,
                      tb__wire_tb_sample_request_t *out) {
  const json_t *v = json_object_get(ps, "stop");
  if (v == NULL || json_is_null(v))
    return 0;
  out->stop_list = json_is_array(v);
  size_t n = out->stop_list ? json_array_size(v) : 1;
  if (!out->stop_list && !json_is_string(v))
    return tb__jctx_fail_at(c, "stop", "expected a string or a list of strings and token ids, "
                                       "got %s",
                            tb__json_type_name(v));
  if (n > 16)
    return tb__jctx_fail_at(c, "stop", "at most 16 stops");
  out->stops = tb__arena_calloc(a, n + 1, sizeof(*out->stops));
  if (out->stops == NULL)
    return tb__jctx_fail(c, "out of memory");
  size_t mark = tb__jctx_push_key(c, "stop");
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const json_t *s = out->stop_list ? json_array_get(v, i) : v;
    size_t m2 = out->stop_list ? tb__jctx_push_index(c, i) : mark;
    tb__wire_tb_stop_t *st = &out->stops[i];
    if (json_is_string(s) && json_string_length(s) == 0)
      rc = tb__jctx_fail(c, "an empty stop string");
    else if (json_is_string(s))
      st->string = (tb_slice_t){ json_string_value(s), json_string_length(s) };
    else
      rc = tb__json_as_int(c, s, INT64_MIN, INT64_MAX, &st->id);
    tb__jctx_pop(c, m2);
  }
  tb__jctx_pop(c, mark);
  out->n_stops = n;
  return rc;
}

/* The sampling parameters of ps (the body, or its "sampling_params"). */
static int read_params(tb__jctx_t *c, tb__arena_t *a, const json_t *ps,
                       tb__wire_tb_sample_request_t *out) {
  out->n_key = out->nested && json_object_get(ps, "n") != NULL ? "n" : "num_samples";
  int rc = tb__json_get_int(c, ps, "max_tokens", TB_JSON_OPTIONAL, INT64_MIN, INT64_MAX,
                            &out->max_tokens);
  out->has_max_tokens = rc == 0;
  rc = rc < 0 ? rc : tb__json_get_double(c, ps, "temperature", TB_JSON_OPTIONAL,
                                         &out->temperature);
  if (rc >= 0 && out->temperature < 0)
    rc = tb__jctx_fail_at(c, "temperature", "expected >= 0 (0 is greedy)");
  rc = rc < 0 ? rc : tb__json_get_double(c, ps, "top_p", TB_JSON_OPTIONAL, &out->top_p);
  if (rc >= 0 && !(out->top_p > 0 && out->top_p <= 1))
    rc = tb__jctx_fail_at(c, "top_p", "expected a number in (0, 1]");
  rc = rc < 0 ? rc : tb__json_get_int(c, ps, "top_k", TB_JSON_OPTIONAL, -1, INT32_MAX,
                                      &out->top_k);
  if (rc >= 0 && out->top_k == 0)
    rc = tb__jctx_fail_at(c, "top_k", "expected -1 (no limit) or at least 1");
  rc = rc < 0 ? rc : tb__json_get_int(c, ps, "seed", TB_JSON_OPTIONAL, 0, INT64_MAX,
                                      &out->seed);
  rc = rc < 0 ? rc : tb__json_get_int(c, ps, out->n_key, TB_JSON_OPTIONAL, 1, 128,
                                      &out->num_samples);
  return rc < 0 ? rc : read_stops(c, a, ps, out);
}

int tb__wire_tb_sample_request_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                         tb__wire_tb_sample_request_t *out) {
  memset(out, 0, sizeof(*out));
  out->temperature = 1.0;
  out->top_p = 1.0;
  out->top_k = -1;
  out->seed = -1;
  out->num_samples = 1;
  int rc = read_prompt(c, a, v, out);
  json_t *sp = NULL;
  rc = rc < 0 ? rc : tb__json_get_object(c, v, "sampling_params", TB_JSON_OPTIONAL, &sp);
  if (rc < 0)
    return rc;
  out->nested = sp != NULL;
  size_t mark = sp != NULL ? tb__jctx_push_key(c, "sampling_params") : 0;
  rc = read_params(c, a, sp != NULL ? sp : v, out);
  if (sp != NULL)
    tb__jctx_pop(c, mark);
  return rc;
}

json_t *tb__wire_tb_sample_request_to_json(const tb__wire_tb_target_t *t,
                                           const tb__wire_tb_sample_request_t *r) {
  json_t *o = json_object();
  int bad = o == NULL || put_target(o, t);
  if (r->prompt_tokens != NULL) {
    json_t *ids = json_array();
    bad |= ids == NULL;
    for (size_t i = 0; !bad && i < r->n_prompt_tokens; i++)
      bad = json_array_append_new(ids, json_integer((json_int_t)r->prompt_tokens[i])) != 0;
    bad |= tb__wire_put(o, "prompt_tokens", ids);
  } else if (r->text.base != NULL && r->text_key != NULL && strcmp(r->text_key, "prompt") != 0) {
    json_t *list = json_array();
    bad |= json_array_append_new(list, json_stringn(r->text.base, r->text.len)) != 0;
    bad |= tb__wire_put(o, "prompts", list);
  } else if (r->text.base != NULL) {
    bad |= put_slice(o, "prompt", r->text);
  } else {
    bad |= tb__wire_put(o, "messages", tb__wire_tb_chat_to_json(&r->chat));
  }
  if (r->raw)
    bad |= tb__wire_put(o, "raw", json_true());
  json_t *ps = r->nested ? json_object() : o;
  if (r->has_max_tokens)
    bad |= tb__wire_put(ps, "max_tokens", json_integer((json_int_t)r->max_tokens));
  if (r->temperature != 1.0)
    bad |= tb__wire_put(ps, "temperature", json_real(r->temperature));
  if (r->top_p != 1.0)
    bad |= tb__wire_put(ps, "top_p", json_real(r->top_p));
  if (r->top_k != -1)
    bad |= tb__wire_put(ps, "top_k", json_integer((json_int_t)r->top_k));
  if (r->seed >= 0)
    bad |= tb__wire_put(ps, "seed", json_integer((json_int_t)r->seed));
  if (r->num_samples != 1)
    bad |= tb__wire_put(ps, r->nested ? "n" : "num_samples",
                        json_integer((json_int_t)r->num_samples));
  if (r->n_stops > 0) {
    json_t *stops = r->stop_list ? json_array() : NULL;
    for (size_t i = 0; i < r->n_stops; i++) {
      const tb__wire_tb_stop_t *st = &r->stops[i];
      json_t *one = st->string.base != NULL ? json_stringn(st->string.base, st->string.len)
                                            : json_integer((json_int_t)st->id);
      if (stops == NULL)
        stops = one;
      else
        bad |= json_array_append_new(stops, one) != 0;
    }
    bad |= tb__wire_put(ps, "stop", stops);
  }
  if (r->nested)
    bad |= tb__wire_put(o, "sampling_params", ps);
  return tb__wire_done(o, bad);
}

/* ------------------------------------------------------------ training data */

int tb__wire_tb_batch_is_chat(const json_t *v) {
  return json_is_array(json_array_get(json_object_get(v, "data"), 0));
}

int tb__wire_tb_sample_needs_text(const json_t *v) {
  if (json_object_get(v, "prompt") || json_object_get(v, "messages") ||
      json_object_get(v, "prompts"))
    return 1;
  const json_t *sp = json_object_get(v, "sampling_params");
  const json_t *stop = json_object_get(json_is_object(sp) ? sp : v, "stop");
  if (json_is_string(stop))
    return 1;
  for (size_t i = 0; i < json_array_size(stop); i++)
    if (json_is_string(json_array_get(stop, i)))
      return 1;
  return 0;
}

/* The conversations of data (c's path at it). */
static int read_convs(tb__jctx_t *c, tb__arena_t *a, const json_t *data,
                      tb__wire_tb_batch_t *out) {
  size_t n = json_array_size(data);
  out->convs = tb__arena_calloc(a, n + 1, sizeof(*out->convs));
  if (out->convs == NULL)
    return tb__jctx_fail(c, "out of memory");
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const json_t *conv = json_array_get(data, i);
    size_t m = tb__jctx_push_index(c, i);
    if (!json_is_array(conv))
      rc = tb__jctx_fail(c, "expected a conversation (a list of messages) like data[0], got %s",
                         tb__json_type_name(conv));
    else if (json_array_size(conv) == 0)
      rc = tb__jctx_fail(c, "expected at least one message");
    else
      rc = tb__wire_tb_chat_from_json(c, a, conv, &out->convs[i]);
    tb__jctx_pop(c, m);
  }
  out->n_convs = n;
  return rc;
}

int tb__wire_tb_batch_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                size_t max_bytes, tb__wire_tb_batch_t *out) {
  memset(out, 0, sizeof(*out));
  json_t *data;
  int rc = tb__json_get_array(c, v, "data", TB_JSON_REQUIRED, &data);
  if (rc < 0)
    return rc;
  if (json_array_size(data) == 0)
    return tb__jctx_fail_at(c, "data", "expected at least one conversation or datum");
  if (json_object_get(v, "loss_fn_inputs") != NULL)
    return tb__jctx_fail_at(c, "loss_fn_inputs", "not read at the top level: send Tinker "
                                                 "datums, each with its loss_fn_inputs");
  tb_slice_t lf = { "cross_entropy", 13 };
  rc = tb__json_get_string(c, v, "loss_fn", TB_JSON_OPTIONAL, &lf);
  if (rc < 0)
    return rc;
  if (!tb__wire_tb_batch_is_chat(v)) {
    if (rc == 0)
      return tb__wire_fwdbwd_input_from_json(c, a, v, max_bytes, &out->datums);
    /* The default loss, given to the datums' decoder in a shallow copy
     * of the body (its values shared, not copied). */
    json_t *with = json_copy((json_t *)v);
    if (with == NULL || json_object_set_new(with, "loss_fn", json_string("cross_entropy")) != 0) {
      json_decref(with);
      return tb__jctx_fail(c, "out of memory");
    }
    rc = tb__wire_fwdbwd_input_from_json(c, a, with, max_bytes, &out->datums);
    json_decref(with);
    return rc;
  }
  if (!tb__slice_eq_str(lf, "cross_entropy"))
    return tb__jctx_fail_at(c, "loss_fn", "chat conversations train with cross_entropy; send "
                                          "Tinker datums for %.*s",
                            (int)(lf.len > 40 ? 40 : lf.len), lf.base);
  out->chat = 1;
  size_t mark = tb__jctx_push_key(c, "data");
  rc = read_convs(c, a, data, out);
  tb__jctx_pop(c, mark);
  return rc;
}

json_t *tb__wire_tb_batch_to_json(const tb__wire_tb_batch_t *r) {
  json_t *o = json_object(), *data = json_array();
  int bad = o == NULL || data == NULL;
  for (size_t i = 0; !bad && i < r->n_convs; i++)
    bad = json_array_append_new(data, tb__wire_tb_chat_to_json(&r->convs[i])) != 0;
  bad |= tb__wire_put(o, "data", data);
  bad |= tb__wire_put(o, "loss_fn", json_string("cross_entropy"));
  return tb__wire_done(o, bad);
}

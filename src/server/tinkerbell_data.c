/*
 * What the Tinkerbell dialect's requests carry, decoded into the engine's
 * inputs: the training data of forward and forward_backward (chat
 * conversations or Tinker datums) and the prompt and parameters of
 * sample / asample.  Everything is checked here, so that a bad request is
 * answered at once with the path of the field at fault; what needs the
 * model's vocabulary and context is checked against the base model's
 * config when it is known (always for the generated `base`), and by the
 * engine otherwise.  The functions read only the request, its arena and
 * the base model's settled text (tb__tctx_t), so they may run on a
 * worker thread.
 *
 * Chat conversations ([[{"role", "content"}, ...], ...]) are rendered
 * with the base model's renderer (model_text.h; a request's "renderer"
 * picks another), as transformers' apply_chat_template renders them: the
 * text of a special token inside content becomes that token.  A model
 * without a tokenizer refuses chat data and text prompts with 422 and a
 * pointer to the token forms.  A rendered conversation of L tokens
 * becomes one datum of L - 1 positions, position i predicting token
 * i + 1, weighted as the renderer weights token i + 1 (the assistant
 * messages' bodies, or every token when the conversation has no
 * assistant message: the Python server trained on every token; this
 * keeps that for such data, and only for it).
 */
#include "server/tinkerbell.h"

#include <math.h>
#include <string.h>

#include "wire/datum.h"
#include "wire/tinkerbell_request.h"

int tb__tb_check_name(tb__jctx_t *c, const char *key, tb_slice_t name) {
  int ok = name.len > 0 && name.len <= 128 && name.base[0] != '.';
  for (size_t i = 0; ok && i < name.len; i++) {
    char ch = name.base[i];
    ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '.' || ch == '_' || ch == '-';
  }
  return ok ? 0 : tb__jctx_fail_at(c, key, "expected 1 to 128 letters, digits, '.', '_' or "
                                           "'-', not starting with '.'");
}

/* The vocabulary and context of the base when known now, else NULL. */
static const tb__model_config_t *known_config(const tb__tctx_t *x) {
  return x->has_cfg ? &x->cfg : NULL;
}

/* ------------------------------------------------------------ chat */

static int chat_batch(tb__jctx_t *c, tb__arena_t *a, const json_t *doc, const json_t *data,
                      const tb__tctx_t *x, tb__batch_t *b, tb__tbop_t *info, int *status) {
  const tb_renderer_t *r = tb__tctx_renderer(c, x, doc, "data", status);
  if (r == NULL)
    return -1;
  size_t n = json_array_size(data);
  tb__datum_t *d = tb__arena_calloc(a, n, sizeof(*d));
  if (d == NULL)
    return tb__jctx_fail(c, "out of memory");
  const tb__model_config_t *mc = known_config(x);
  int rc = 0;
  size_t m1 = tb__jctx_push_key(c, "data");
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const json_t *conv = json_array_get(data, i);
    size_t m2 = tb__jctx_push_index(c, i);
    if (!json_is_array(conv)) {
      rc = tb__jctx_fail(c, "expected a conversation (a list of messages) like data[0], got %s",
                         tb__json_type_name(conv));
    } else if (json_array_size(conv) == 0) {
      rc = tb__jctx_fail(c, "expected at least one message");
    }
    tb__wire_tb_chat_t chat;
    rc = rc < 0 ? rc : tb__wire_tb_chat_from_json(c, a, conv, &chat);
    tb_rendered_t t = { 0 };
    tb_error_t rerr = { 0 };
    if (rc == 0 && tb_renderer_render(r, chat.messages, chat.n_messages, 0, &t, &rerr) != 0)
      rc = tb__jctx_fail(c, "%s", tb_error_message(&rerr));
    tb_error_clear(&rerr);
    size_t len = t.len;
    if (rc == 0 && len < 2)
      rc = tb__jctx_fail(c, "renders to %zu token%s: nothing to predict", len,
                         len == 1 ? "" : "s");
    if (rc == 0 && mc != NULL && len - 1 > (size_t)mc->max_position_embeddings) {
      *status = 422;
      rc = tb__jctx_fail(c, "the conversation renders to %zu tokens, more than the context of "
                            "%d",
                         len, mc->max_position_embeddings);
    }
    int32_t *tokens = rc == 0 ? tb__arena_alloc(a, (len - 1) * sizeof(int32_t)) : NULL;
    int32_t *targets = rc == 0 ? tb__arena_alloc(a, (len - 1) * sizeof(int32_t)) : NULL;
    float *weights = rc == 0 ? tb__arena_alloc(a, (len - 1) * sizeof(float)) : NULL;
    if (rc == 0 && (tokens == NULL || targets == NULL || weights == NULL))
      rc = tb__jctx_fail(c, "out of memory");
    for (size_t p = 0; rc == 0 && p + 1 < len; p++) {
      /* The renderer weights every token of a conversation without an
       * assistant message. */
      tokens[p] = t.tokens[p];
      targets[p] = t.tokens[p + 1];
      weights[p] = t.weights[p + 1];
      info->trained_weight += weights[p];
      info->trained_tokens += weights[p] > 0;
    }
    if (rc == 0) {
      d[i].tokens = tokens;
      d[i].n = len - 1;
      d[i].k = 1;
      d[i].target_tokens = targets;
      d[i].weights = weights;
    }
    tb_rendered_free(&t);
    tb__jctx_pop(c, m2);
  }
  tb__jctx_pop(c, m1);
  b->data = d;
  b->num_data = n;
  b->loss_fn = TB_LOSS_CROSS_ENTROPY;
  tb__loss_config_default(&b->loss_config);
  return rc;
}

/* ------------------------------------------------------------ datums */

static int datum_batch(tb__jctx_t *c, tb__arena_t *a, json_t *doc, const tb__tctx_t *x,
                       tb__batch_t *b, tb__tbop_t *info, int *status) {
  tb__wire_fwdbwd_t w;
  memset(&w, 0, sizeof(w));
  int rc = tb__wire_fwdbwd_input_from_json(c, a, doc, x->max_body, &w);
  rc = rc < 0 ? rc : tb__fwdbwd_to_batch(c, a, &w, b, NULL);
  if (rc < 0)
    return rc;
  const tb__model_config_t *mc = known_config(x);
  for (size_t i = 0; mc != NULL && i < b->num_data; i++)
    if (b->data[i].n > (size_t)mc->max_position_embeddings) {
      *status = 422;
      size_t m1 = tb__jctx_push_key(c, "data");
      size_t m2 = tb__jctx_push_index(c, i);
      rc = tb__jctx_fail(c, "%zu tokens, more than the context of %d", b->data[i].n,
                         mc->max_position_embeddings);
      tb__jctx_pop(c, m2);
      tb__jctx_pop(c, m1);
      return rc;
    }
  const char *why = NULL;
  if (mc != NULL && tb__batch_validate(b, mc, &why) != 0)
    return tb__jctx_fail_at(c, "data", "%s", why ? why : "invalid");
  for (size_t i = 0; i < b->num_data; i++) {
    const tb__datum_t *d = &b->data[i];
    size_t k = d->k ? d->k : 1;
    for (size_t j = 0; j < d->n * k; j++) {
      /* The mean of a policy loss is over its tokens; cross-entropy's
       * over the weights, as a weighted mean. */
      double wgt = b->loss_fn == TB_LOSS_CROSS_ENTROPY ? d->weights[j] : 1.0;
      info->trained_weight += wgt;
      info->trained_tokens += wgt != 0;
    }
  }
  return 0;
}

int tb__tb_batch_is_chat(const json_t *doc) {
  return json_is_array(json_array_get(json_object_get(doc, "data"), 0));
}

int tb__tb_decode_batch(tb__jctx_t *c, tb__arena_t *a, json_t *doc, const tb__tctx_t *x,
                        tb__batch_t *b, tb__tbop_t *info, int *status) {
  *status = 400;
  json_t *data;
  int rc = tb__json_get_array(c, doc, "data", TB_JSON_REQUIRED, &data);
  if (rc < 0)
    return rc;
  if (json_array_size(data) == 0)
    return tb__jctx_fail_at(c, "data", "expected at least one conversation or datum");
  if (json_object_get(doc, "loss_fn_inputs") != NULL)
    return tb__jctx_fail_at(c, "loss_fn_inputs", "not read at the top level: send Tinker "
                                                 "datums, each with its loss_fn_inputs");
  tb_slice_t lf = { "cross_entropy", 13 };
  rc = tb__json_get_string(c, doc, "loss_fn", TB_JSON_OPTIONAL, &lf);
  if (rc < 0)
    return rc;
  if (!json_is_array(json_array_get(data, 0))) {
    if (rc == 1 && json_object_set_new(doc, "loss_fn", json_string("cross_entropy")) != 0)
      return tb__jctx_fail(c, "out of memory");
    return datum_batch(c, a, doc, x, b, info, status);
  }
  if (!tb__slice_eq_str(lf, "cross_entropy"))
    return tb__jctx_fail_at(c, "loss_fn", "chat conversations train with cross_entropy; send "
                                          "Tinker datums for %.*s",
                            (int)(lf.len > 40 ? 40 : lf.len), lf.base);
  rc = chat_batch(c, a, doc, data, x, b, info, status);
  if (rc == 0 && info->trained_weight <= 0)
    rc = tb__jctx_fail_at(c, "data", "no token to train on");
  return rc;
}

/* ------------------------------------------------------------ sampling */

int tb__tb_sample_needs_text(const json_t *doc) {
  if (json_object_get(doc, "prompt") || json_object_get(doc, "messages") ||
      json_object_get(doc, "prompts"))
    return 1;
  const json_t *sp = json_object_get(doc, "sampling_params");
  const json_t *stop = json_object_get(json_is_object(sp) ? sp : doc, "stop");
  if (json_is_string(stop))
    return 1;
  for (size_t i = 0; i < json_array_size(stop); i++)
    if (json_is_string(json_array_get(stop, i)))
      return 1;
  return 0;
}

/* "stop": a string, or a list of strings and token ids.  The strings go
 * to p->stop_strings, the ids to stops. */
static int read_stop(tb__jctx_t *c, tb__arena_t *a, const json_t *doc, const tb__tctx_t *x,
                     int64_t vocab, tb__sampling_params_t *p, int32_t *stops,
                     size_t *n_stops, int *status) {
  const json_t *v = json_object_get(doc, "stop");
  if (v == NULL || json_is_null(v))
    return 0;
  size_t n = json_is_array(v) ? json_array_size(v) : 1;
  if (!json_is_array(v) && !json_is_string(v))
    return tb__jctx_fail_at(c, "stop", "expected a string or a list of strings and token ids, "
                                       "got %s",
                            tb__json_type_name(v));
  if (n > 16)
    return tb__jctx_fail_at(c, "stop", "at most 16 stops");
  tb_slice_t *ss = tb__arena_calloc(a, n + 1, sizeof(*ss));
  if (ss == NULL)
    return tb__jctx_fail(c, "out of memory");
  size_t n_ss = 0;
  size_t mark = tb__jctx_push_key(c, "stop");
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
    size_t m2 = json_is_array(v) ? tb__jctx_push_index(c, i) : mark;
    if (json_is_string(s)) {
      if (json_string_length(s) == 0) {
        rc = tb__jctx_fail(c, "an empty stop string");
      } else if (tb__tctx_tokenizer(c, x, NULL, status) == NULL) {
        rc = -1;  /* 422: the model has no tokenizer to match it with */
      } else {
        size_t len = json_string_length(s);
        ss[n_ss] = (tb_slice_t){ tb__arena_strndup(a, json_string_value(s), len), len };
        rc = ss[n_ss++].base == NULL ? tb__jctx_fail(c, "out of memory") : 0;
      }
    } else {
      int64_t id;
      rc = tb__json_as_int(c, s, 0, vocab - 1, &id);
      if (rc == 0)
        stops[(*n_stops)++] = (int32_t)id;
    }
    tb__jctx_pop(c, m2);
  }
  tb__jctx_pop(c, mark);
  if (rc == 0 && n_ss > 0) {
    p->stop_strings = ss;
    p->num_stop_strings = n_ss;
    p->token_bytes = x->text->token_bytes;
  }
  return rc;
}

/* Appends the renderer's stop sequences to the sampling parameters (room
 * for them was made). */
static int add_renderer_stops(tb__jctx_t *c, tb__arena_t *a, const tb__tctx_t *x,
                              const tb_renderer_t *r, tb__sampling_params_t *p, int32_t *stops,
                              size_t *n_stops) {
  tb_stop_t st;
  tb_renderer_stop(r, &st);
  for (size_t i = 0; i < st.n_tokens; i++)
    stops[(*n_stops)++] = st.tokens[i];
  if (st.n_strings == 0)
    return 0;
  tb_slice_t *ss = tb__arena_calloc(a, p->num_stop_strings + st.n_strings, sizeof(*ss));
  if (ss == NULL)
    return tb__jctx_fail(c, "out of memory");
  if (p->num_stop_strings > 0)
    memcpy(ss, p->stop_strings, p->num_stop_strings * sizeof(*ss));
  for (size_t i = 0; i < st.n_strings; i++)
    ss[p->num_stop_strings++] = (tb_slice_t){ st.strings[i], strlen(st.strings[i]) };
  p->stop_strings = ss;
  p->token_bytes = x->text->token_bytes;
  return 0;
}

/* The ids of a text prompt as a plain continuation: the post-processor's
 * BOS as the tokenizer file says (for `base`, its <|bos|>), then the
 * text. */
static int raw_prompt(tb__jctx_t *c, tb__arena_t *a, const tb__tctx_t *x,
                      const tb_tokenizer_t *tok, tb_slice_t s, const char *key,
                      int32_t **out, size_t *n) {
  int32_t *ids = NULL;
  size_t len = 0;
  tb_error_t err = { 0 };
  int rc = tb_tokenizer_encode(tok, s.base, s.len, TB_ENCODE_ADD_SPECIAL, &ids, NULL, &len,
                               &err);
  if (rc != 0) {
    rc = tb__jctx_fail_at(c, key, "%s", tb_error_message(&err));
    tb_error_clear(&err);
    return rc;
  }
  int bos = x->builtin && tb_tokenizer_bos_id(tok) >= 0;
  int32_t *p = tb__arena_alloc(a, (len + 1) * sizeof(*p));
  if (p == NULL) {
    free(ids);
    return tb__jctx_fail(c, "out of memory");
  }
  *n = 0;
  if (bos)
    p[(*n)++] = tb_tokenizer_bos_id(tok);
  memcpy(p + *n, ids, len * sizeof(*ids));
  *n += len;
  free(ids);
  *out = p;
  return 0;
}

/* The prompt: exactly one of "prompt" (text), "messages" (a conversation)
 * or "prompt_tokens" (ids); or the Python server's "prompts", a list that
 * here holds one text (a call samples one prompt). */
static int read_prompt(tb__jctx_t *c, tb__arena_t *a, const json_t *doc, const tb__tctx_t *x,
                       int64_t vocab, tb__top_t *op, tb__tbop_t *info, int *status) {
  const json_t *text = json_object_get(doc, "prompt");
  const json_t *msgs = json_object_get(doc, "messages");
  const json_t *ids = json_object_get(doc, "prompt_tokens");
  const json_t *list = json_object_get(doc, "prompts");
  int given = (text != NULL) + (msgs != NULL) + (ids != NULL) + (list != NULL);
  if (given != 1)
    return tb__jctx_fail_at(c, "prompt", given == 0 ? "required (or messages, or "
                                                      "prompt_tokens)"
                                                    : "give one of prompt, messages and "
                                                      "prompt_tokens");
  const char *text_key = "prompt";
  if (list != NULL) {
    if (!json_is_array(list) || json_array_size(list) != 1)
      return tb__jctx_fail_at(c, "prompts", "expected a list of one prompt (a call samples "
                                            "one; send a call per prompt)");
    text = json_array_get(list, 0);
    text_key = "prompts[0]";
  }
  int raw = 0;
  int rc = tb__json_get_bool(c, doc, "raw", TB_JSON_OPTIONAL, &raw);
  if (rc < 0)
    return rc;
  rc = 0;
  if (ids != NULL) {
    if (!json_is_array(ids) || json_array_size(ids) == 0)
      return tb__jctx_fail_at(c, "prompt_tokens", "expected a non-empty list of token ids");
    int32_t *p = tb__arena_alloc(a, json_array_size(ids) * sizeof(*p));
    if (p == NULL)
      return tb__jctx_fail(c, "out of memory");
    size_t mark = tb__jctx_push_key(c, "prompt_tokens");
    for (size_t i = 0; rc == 0 && i < json_array_size(ids); i++) {
      size_t m2 = tb__jctx_push_index(c, i);
      int64_t id;
      rc = tb__json_as_int(c, json_array_get(ids, i), 0, vocab - 1, &id);
      p[i] = (int32_t)id;
      tb__jctx_pop(c, m2);
    }
    tb__jctx_pop(c, mark);
    op->prompt = p;
    op->prompt_len = json_array_size(ids);
    /* The sampled tokens are shown as text where the model has a
     * tokenizer. */
    info->text = x->text != NULL && x->text->tok != NULL;
    return rc;
  }
  const char *key = text != NULL ? text_key : "messages";
  if (text != NULL && !json_is_string(text))
    return tb__jctx_fail_at(c, text_key, "expected a string, got %s", tb__json_type_name(text));
  if (msgs != NULL && raw)
    return tb__jctx_fail_at(c, "raw", "only with a text prompt");
  if (msgs != NULL && (!json_is_array(msgs) || json_array_size(msgs) == 0))
    return tb__jctx_fail_at(c, "messages", "expected a non-empty list of {role, content}");
  const tb_tokenizer_t *tok = tb__tctx_tokenizer(c, x, key, status);
  if (tok == NULL)
    return -1;
  if (text != NULL && raw) {
    /* A plain continuation of the text, stopping at the end of the
     * sequence. */
    tb_slice_t s = { json_string_value(text), json_string_length(text) };
    int32_t *p = NULL;
    size_t n = 0;
    rc = raw_prompt(c, a, x, tok, s, text_key, &p, &n);
    if (rc == 0) {
      op->prompt = p;
      op->prompt_len = n;
      size_t n_eos;
      const int32_t *eos = tb_tokenizer_eos_ids(tok, &n_eos);
      int32_t *stops = (int32_t *)op->sampling.stop_tokens;
      for (size_t i = 0; i < n_eos; i++)
        stops[op->sampling.num_stop_tokens++] = eos[i];
      info->text = 1;
    }
    return rc;
  }
  const tb_renderer_t *r = tb__tctx_renderer(c, x, doc, key, status);
  if (r == NULL)
    return -1;
  tb_chat_message_t one = { "user", NULL, NULL, 0 };
  tb__wire_tb_chat_t chat = { &one, 1 };
  if (text != NULL) {
    /* As the Python server: the text is one user message. */
    one.content = json_string_length(text) ? json_string_value(text) : "";
    one.content_len = json_string_length(text);
  } else {
    size_t mark = tb__jctx_push_key(c, "messages");
    rc = tb__wire_tb_chat_from_json(c, a, msgs, &chat);
    tb__jctx_pop(c, mark);
    if (rc != 0)
      return rc;
  }
  tb_rendered_t t = { 0 };
  tb_error_t rerr = { 0 };
  if (tb_renderer_render(r, chat.messages, chat.n_messages, TB_RENDER_GENERATION_PROMPT, &t,
                         &rerr) != 0)
    rc = tb__jctx_fail_at(c, key, "%s", tb_error_message(&rerr));
  tb_error_clear(&rerr);
  int32_t *p = rc == 0 ? tb__arena_alloc(a, t.len * sizeof(*p) + 1) : NULL;
  if (rc == 0 && p == NULL)
    rc = tb__jctx_fail(c, "out of memory");
  if (rc == 0) {
    memcpy(p, t.tokens, t.len * sizeof(*p));
    op->prompt = p;
    op->prompt_len = t.len;
    info->text = 1;
    info->renderer = r;
  }
  tb_rendered_free(&t);
  return rc;
}

int tb__tb_decode_sample(tb__jctx_t *c, const tb__tctx_t *x, tb__top_t *op, const json_t *doc,
                         tb__tbop_t *info, int *status) {
  *status = 400;
  const tb__model_config_t *mc = known_config(x);
  int64_t vocab = mc ? mc->vocab_size : INT32_MAX;
  tb__sampling_params_t *p = &op->sampling;
  tb__sampling_params_default(p);
  /* The renderer's stops or the end of sequence, and up to 16 of the
   * request's. */
  size_t n_eos = 0;
  if (x->text != NULL && x->text->tok != NULL)
    tb_tokenizer_eos_ids(x->text->tok, &n_eos);
  size_t room = 16 + 72 + n_eos;
  int32_t *stops = tb__arena_alloc(&op->arena, room * sizeof(*stops));
  if (stops == NULL)
    return tb__jctx_fail(c, "out of memory");
  p->stop_tokens = stops;
  p->num_stop_tokens = 0;
  int rc = read_prompt(c, &op->arena, doc, x, vocab, op, info, status);
  size_t n_stops = p->num_stop_tokens;
  if (rc == 0 && mc != NULL && op->prompt_len >= (size_t)mc->max_position_embeddings) {
    *status = 422;
    rc = tb__jctx_fail_at(c, "prompt", "%zu tokens do not fit the context of %d",
                          op->prompt_len, mc->max_position_embeddings);
  }
  int64_t max_tokens = TB__TB_DEFAULT_MAX_TOKENS, top_k = -1, num_samples = 1, seed = -1;
  double temperature = 1.0, top_p = 1.0;
  int64_t ctx = mc ? mc->max_position_embeddings : INT32_MAX;
  /* The parameters sit at the top, or in "sampling_params" as the Python
   * server's vLLM form has them (with "n" for num_samples). */
  json_t *sp = NULL;
  rc = rc < 0 ? rc : tb__json_get_object(c, doc, "sampling_params", TB_JSON_OPTIONAL, &sp);
  const json_t *ps = sp != NULL ? sp : doc;
  size_t mark = sp != NULL ? tb__jctx_push_key(c, "sampling_params") : 0;
  const char *n_key = sp != NULL && json_object_get(sp, "n") != NULL ? "n" : "num_samples";
  rc = rc < 0 ? rc : tb__json_get_int(c, ps, "max_tokens", TB_JSON_OPTIONAL, 1, ctx,
                                      &max_tokens);
  if (rc == 1 && mc != NULL && op->prompt_len + (size_t)max_tokens > (size_t)ctx) {
    /* The default shrinks to what the context leaves. */
    max_tokens = ctx - (int64_t)op->prompt_len;
  } else if (rc == 0 && mc != NULL && op->prompt_len + (size_t)max_tokens > (size_t)ctx) {
    *status = 422;
    rc = tb__jctx_fail_at(c, "max_tokens", "the prompt's %zu tokens and %lld more exceed the "
                          "context of %lld",
                          op->prompt_len, (long long)max_tokens, (long long)ctx);
  }
  rc = rc < 0 ? rc : tb__json_get_double(c, ps, "temperature", TB_JSON_OPTIONAL, &temperature);
  if (rc >= 0 && temperature < 0)
    rc = tb__jctx_fail_at(c, "temperature", "expected >= 0 (0 is greedy)");
  rc = rc < 0 ? rc : tb__json_get_double(c, ps, "top_p", TB_JSON_OPTIONAL, &top_p);
  if (rc >= 0 && !(top_p > 0 && top_p <= 1))
    rc = tb__jctx_fail_at(c, "top_p", "expected a number in (0, 1]");
  rc = rc < 0 ? rc : tb__json_get_int(c, ps, "top_k", TB_JSON_OPTIONAL, -1, INT32_MAX, &top_k);
  if (rc >= 0 && top_k == 0)
    rc = tb__jctx_fail_at(c, "top_k", "expected -1 (no limit) or at least 1");
  rc = rc < 0 ? rc : tb__json_get_int(c, ps, "seed", TB_JSON_OPTIONAL, 0, INT64_MAX, &seed);
  rc = rc < 0 ? rc : tb__json_get_int(c, ps, n_key, TB_JSON_OPTIONAL, 1, 128, &num_samples);
  rc = rc < 0 ? rc : read_stop(c, &op->arena, ps, x, vocab, p, stops, &n_stops, status);
  if (sp != NULL)
    tb__jctx_pop(c, mark);
  p->num_stop_tokens = n_stops;
  if (rc >= 0 && info->renderer != NULL)
    rc = add_renderer_stops(c, &op->arena, x, info->renderer, p, stops, &p->num_stop_tokens);
  if (rc < 0)
    return rc;
  p->max_tokens = (size_t)max_tokens;
  p->temperature = (float)temperature;
  p->top_p = (float)top_p;
  p->top_k = (int)top_k;
  p->seed = seed >= 0 ? (uint64_t)seed : uv_hrtime();
  p->num_samples = (size_t)num_samples;
  op->unchecked = mc == NULL;
  return 0;
}

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

static int chat_batch(tb__jctx_t *c, tb__arena_t *a, const json_t *doc,
                      const tb__wire_tb_batch_t *w, const tb__tctx_t *x, tb__batch_t *b,
                      tb__tbop_t *info, int *status) {
  const tb_renderer_t *r = tb__tctx_renderer(c, x, doc, "data", status);
  if (r == NULL)
    return -1;
  size_t n = w->n_convs;
  tb__datum_t *d = tb__arena_calloc(a, n, sizeof(*d));
  if (d == NULL)
    return tb__jctx_fail(c, "out of memory");
  const tb__model_config_t *mc = known_config(x);
  int rc = 0;
  size_t m1 = tb__jctx_push_key(c, "data");
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const tb__wire_tb_chat_t *chat = &w->convs[i];
    size_t m2 = tb__jctx_push_index(c, i);
    tb_rendered_t t = { 0 };
    tb_error_t rerr = { 0 };
    if (tb_renderer_render(r, chat->messages, chat->n_messages, 0, &t, &rerr) != 0)
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

static int datum_batch(tb__jctx_t *c, tb__arena_t *a, const tb__wire_fwdbwd_t *w,
                       const tb__tctx_t *x, tb__batch_t *b, tb__tbop_t *info, int *status) {
  int rc = tb__fwdbwd_to_batch(c, a, w, b, NULL);
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

int tb__tb_decode_batch(tb__jctx_t *c, tb__arena_t *a, const json_t *doc, const tb__tctx_t *x,
                        tb__batch_t *b, tb__tbop_t *info, int *status) {
  *status = 400;
  tb__wire_tb_batch_t w;
  int rc = tb__wire_tb_batch_from_json(c, a, doc, x->max_body, &w);
  if (rc != 0)
    return rc;
  if (!w.chat)
    return datum_batch(c, a, &w.datums, x, b, info, status);
  rc = chat_batch(c, a, doc, &w, x, b, info, status);
  if (rc == 0 && info->trained_weight <= 0)
    rc = tb__jctx_fail_at(c, "data", "no token to train on");
  return rc;
}

/* ------------------------------------------------------------ sampling */

/* The request's stops against the model: a string needs its tokenizer,
 * an id its vocabulary.  The strings go to p->stop_strings, the ids to
 * stops.  c's path is at the parameters. */
static int check_stops(tb__jctx_t *c, tb__arena_t *a, const tb__wire_tb_sample_request_t *r,
                       const tb__tctx_t *x, int64_t vocab, tb__sampling_params_t *p,
                       int32_t *stops, size_t *n_stops, int *status) {
  if (r->n_stops == 0)
    return 0;
  tb_slice_t *ss = tb__arena_calloc(a, r->n_stops + 1, sizeof(*ss));
  if (ss == NULL)
    return tb__jctx_fail(c, "out of memory");
  size_t n_ss = 0;
  size_t mark = tb__jctx_push_key(c, "stop");
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < r->n_stops; i++) {
    const tb__wire_tb_stop_t *st = &r->stops[i];
    size_t m2 = r->stop_list ? tb__jctx_push_index(c, i) : mark;
    if (st->string.base != NULL) {
      if (tb__tctx_tokenizer(c, x, NULL, status) == NULL)
        rc = -1;  /* 422: the model has no tokenizer to match it with */
      else if ((ss[n_ss].base = tb__arena_strndup(a, st->string.base, st->string.len)) == NULL)
        rc = tb__jctx_fail(c, "out of memory");  /* the op outlives the document */
      else
        ss[n_ss++].len = st->string.len;
    } else {
      rc = tb__json_check_range(c, st->id, 0, vocab - 1);
      if (rc == 0)
        stops[(*n_stops)++] = (int32_t)st->id;
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

/* The prompt of r against the model: ids in its vocabulary, text
 * through its tokenizer (raw) or renderer (a text prompt is one user
 * message, as the Python server has it). */
static int read_prompt(tb__jctx_t *c, tb__arena_t *a, const json_t *doc,
                       const tb__wire_tb_sample_request_t *r, const tb__tctx_t *x,
                       int64_t vocab, tb__top_t *op, tb__tbop_t *info, int *status) {
  int rc = 0;
  if (r->prompt_tokens != NULL) {
    int32_t *p = tb__arena_alloc(a, r->n_prompt_tokens * sizeof(*p));
    if (p == NULL)
      return tb__jctx_fail(c, "out of memory");
    size_t mark = tb__jctx_push_key(c, "prompt_tokens");
    for (size_t i = 0; rc == 0 && i < r->n_prompt_tokens; i++) {
      size_t m2 = tb__jctx_push_index(c, i);
      rc = tb__json_check_range(c, r->prompt_tokens[i], 0, vocab - 1);
      p[i] = (int32_t)r->prompt_tokens[i];
      tb__jctx_pop(c, m2);
    }
    tb__jctx_pop(c, mark);
    op->prompt = p;
    op->prompt_len = r->n_prompt_tokens;
    /* The sampled tokens are shown as text where the model has a
     * tokenizer. */
    info->text = x->text != NULL && x->text->tok != NULL;
    return rc;
  }
  int text = r->text.base != NULL;
  const char *key = text ? r->text_key : "messages";
  const tb_tokenizer_t *tok = tb__tctx_tokenizer(c, x, key, status);
  if (tok == NULL)
    return -1;
  if (text && r->raw) {
    /* A plain continuation of the text, stopping at the end of the
     * sequence. */
    int32_t *p = NULL;
    size_t n = 0;
    rc = raw_prompt(c, a, x, tok, r->text, r->text_key, &p, &n);
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
  const tb_renderer_t *rd = tb__tctx_renderer(c, x, doc, key, status);
  if (rd == NULL)
    return -1;
  tb_chat_message_t one = { "user", r->text.len ? r->text.base : "", NULL, r->text.len };
  tb__wire_tb_chat_t chat = text ? (tb__wire_tb_chat_t){ &one, 1 } : r->chat;
  tb_rendered_t t = { 0 };
  tb_error_t rerr = { 0 };
  if (tb_renderer_render(rd, chat.messages, chat.n_messages, TB_RENDER_GENERATION_PROMPT, &t,
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
    info->renderer = rd;
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
  tb__wire_tb_sample_request_t r;
  int rc = tb__wire_tb_sample_request_from_json(c, &op->arena, doc, &r);
  if (rc != 0)
    return rc;
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
  rc = read_prompt(c, &op->arena, doc, &r, x, vocab, op, info, status);
  size_t n_stops = p->num_stop_tokens;
  if (rc == 0 && mc != NULL && op->prompt_len >= (size_t)mc->max_position_embeddings) {
    *status = 422;
    rc = tb__jctx_fail_at(c, "prompt", "%zu tokens do not fit the context of %d",
                          op->prompt_len, mc->max_position_embeddings);
  }
  int64_t max_tokens = r.has_max_tokens ? r.max_tokens : TB__TB_DEFAULT_MAX_TOKENS;
  int64_t ctx = mc ? mc->max_position_embeddings : INT32_MAX;
  /* The parameters' path: at the top, or in "sampling_params". */
  size_t mark = r.nested ? tb__jctx_push_key(c, "sampling_params") : 0;
  if (rc == 0 && r.has_max_tokens) {
    size_t m2 = tb__jctx_push_key(c, "max_tokens");
    rc = tb__json_check_range(c, max_tokens, 1, ctx);
    tb__jctx_pop(c, m2);
  }
  if (rc == 0 && !r.has_max_tokens && mc != NULL &&
      op->prompt_len + (size_t)max_tokens > (size_t)ctx) {
    /* The default shrinks to what the context leaves. */
    max_tokens = ctx - (int64_t)op->prompt_len;
  } else if (rc == 0 && mc != NULL && op->prompt_len + (size_t)max_tokens > (size_t)ctx) {
    *status = 422;
    rc = tb__jctx_fail_at(c, "max_tokens", "the prompt's %zu tokens and %lld more exceed the "
                          "context of %lld",
                          op->prompt_len, (long long)max_tokens, (long long)ctx);
  }
  rc = rc < 0 ? rc : check_stops(c, &op->arena, &r, x, vocab, p, stops, &n_stops, status);
  if (r.nested)
    tb__jctx_pop(c, mark);
  p->num_stop_tokens = n_stops;
  if (rc >= 0 && info->renderer != NULL)
    rc = add_renderer_stops(c, &op->arena, x, info->renderer, p, stops, &p->num_stop_tokens);
  if (rc < 0)
    return rc;
  p->max_tokens = (size_t)max_tokens;
  p->temperature = (float)r.temperature;
  p->top_p = (float)r.top_p;
  p->top_k = (int)r.top_k;
  p->seed = r.seed >= 0 ? (uint64_t)r.seed : uv_hrtime();
  p->num_samples = (size_t)r.num_samples;
  op->unchecked = mc == NULL;
  return 0;
}

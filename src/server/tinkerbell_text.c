/*
 * The routes of the Tinkerbell dialect that meet text (tinkerbell.h):
 * sampling (/api/v1/sample, /api/v1/asample), and tokenize and
 * detokenize, as llama.cpp's server offers them:
 *
 *   POST /api/v1/tokenize {"model_id" | "base_model", "text",
 *                          "add_special_tokens"?}             -> {"tokens"}
 *   POST /api/v1/tokenize {"model_id" | "base_model", "messages",
 *                          "add_generation_prompt"?, "renderer"?}
 *                                                            -> {"tokens", "text"}
 *   POST /api/v1/detokenize {"model_id" | "base_model", "tokens",
 *                            "skip_special_tokens"?}         -> {"text"}
 *
 * "text" is encoded as transformers encodes with add_special_tokens=False
 * (special-token text becomes the special token; no BOS or EOS), unless
 * "add_special_tokens" asks for the post-processor's; "messages" are
 * rendered by the model's renderer (or "renderer"), the rendered string
 * coming back beside its tokens; detokenize keeps special tokens unless
 * "skip_special_tokens".  The model is the caller's model of this dialect
 * or a base model by name (either field; neither: the default model).
 *
 * Every one of them needs the base model's text (model_text.h): it waits
 * while that loads, is 422 for a model without a tokenizer, and runs its
 * encoding on the threadpool when the body is large.
 */
#include "server/tinkerbell.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "server/routes.h"
#include "wire/tinkerbell.h"
#include "wire/tinkerbell_request.h"

/* The model a sample, tokenize or detokenize call names (one of the two
 * fields when exclusive): "model_id", the caller's model (*m) or a base
 * model by its name (404 when neither); else "base_model", a base model
 * (unknown_status when unknown); else the default base model.  0, or -1
 * after c's error or answering. */
static int find_target(tb__route_call_t *call, int exclusive, int unknown_status, tb_slice_t *id,
                       tb__tmodel_t **m, tb__tbase_t **b) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  tb__wire_tb_target_t t;
  int rc = tb__wire_tb_target_from_json(&call->c, call->doc, &t);
  if (rc >= 0 && exclusive && t.model_id.base != NULL && t.base_model.base != NULL)
    rc = tb__jctx_fail_at(&call->c, "base_model", "give model_id or base_model, not both");
  if (rc < 0)
    return -1;
  tb_slice_t base = t.base_model;
  *id = t.model_id;
  *m = id->base ? tb__tb_find_model(tr, tb__sreq(req)->user, *id) : NULL;
  *b = *m        ? (*m)->base
       : id->base ? tb__tbase_find(tr, *id)  /* a base model's name samples it bare */
       : base.base ? tb__tbase_find(tr, base)
                   : &tr->bases[0];
  if (*b != NULL)
    return 0;
  if (id->base != NULL) {
    tb__tb_unknown_model(req, *id);
    return -1;
  }
  call->status = unknown_status;
  return tb__jctx_fail_at(&call->c, "base_model",
                          "unknown model \"%.*s\" (see get_server_capabilities)",
                          (int)(base.len > 80 ? 80 : base.len), base.base);
}

/* ------------------------------------------------------------ sampling */

/* {"model_id"? | "base_model"?, "prompt" | "messages" | "prompt_tokens",
 * sampling parameters}: from the caller's model (after its earlier
 * operations) or from a base model, whose text a prompt of text needs. */
int tb__route_tb_sample_prepare(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb_slice_t id;
  tb__tmodel_t *m;
  tb__tbase_t *b;
  if (find_target(call, 0, 400, &id, &m, &b) != 0)
    return -1;
  if (b->state < 0) {
    tb__server_respond_error(req, 422, "%s: %s", id.base ? "model_id" : "base_model",
                             b->error ? b->error : "the base model failed to load");
    return -1;
  }
  if (tb__wire_tb_sample_needs_text(call->doc) && tb__mtext_wait(req, b, tb__route_generic))
    return 1;
  tb__tb_text_in_t *in = call->in;
  in->id = id;
  in->m = m;
  in->b = b;
  tb__tctx_init(&in->x, tb__training_of(req), b);
  call->op->base = b;
  ((tb__tbop_t *)call->op->encode_data)->model_id = b->name;
  return 0;
}

/* The prompt, decoded (and rendered) off the loop when the body is
 * large. */
int tb__route_tb_sample_decode(tb__route_call_t *call) {
  tb__tb_text_in_t *in = call->in;
  return tb__tb_decode_sample(&call->c, &in->x, call->op, call->doc, call->op->encode_data,
                              &call->status);
}

int tb__route_tb_sample(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  tb__tb_text_in_t *in = call->in;
  tb__top_t *op = call->op;
  call->op = NULL;  /* taken */
  if (in->m != NULL) {
    /* After the model's earlier operations; it may have gone meanwhile. */
    tb__tmodel_t *m = tb__tb_find_model(tr, tb__sreq(req)->user, in->id);
    if (m == NULL || m->base != op->base) {
      tb__tb_unknown_model(req, in->id);
      tb__top_free(op);
    } else {
      op->model = m;
      tb__tb_submit(req, op, in->id, call->side->sync);
    }
  } else if (tb__top_accept(req, op) == 0) {
    tb__tbase_t *b = op->base;
    char fid[TB__FUTURE_ID_MAX];
    memcpy(fid, op->future->id, sizeof(fid));
    if (b->state == 0) {
      op->next = tr->base_waiting;  /* sampled once the base model is loaded */
      tr->base_waiting = op;
    } else {
      tb__sample_start(op);
    }
    tb__tb_answer_call(req, fid, b->name, call->side->sync);
  }
  return 0;
}

/* ------------------------------------------------------------ tokenize */

/* The answer r as the wire writes it, or NULL with c's error; frees
 * owned (what r borrows). */
static json_t *answer(tb__jctx_t *c, const tb__wire_tb_text_t *r, void *owned) {
  json_t *v = tb__wire_tb_text_to_json(r);
  free(owned);
  if (v == NULL)
    tb__jctx_fail(c, "out of memory");
  return v;
}

/* "text": its tokens. */
static json_t *tokenize_text(tb__jctx_t *c, const tb__tctx_t *x, const tb__wire_tb_tokenize_t *r,
                             int *status) {
  const tb_tokenizer_t *tok = tb__tctx_tokenizer(c, x, "text", status);
  if (tok == NULL)
    return NULL;
  int32_t *ids;
  size_t n;
  tb_error_t err = { 0 };
  if (tb_tokenizer_encode(tok, r->text.base, r->text.len,
                          r->add_special_tokens ? TB_ENCODE_ADD_SPECIAL : 0, &ids, NULL, &n,
                          &err) != 0) {
    tb__jctx_fail_at(c, "text", "%s", tb_error_message(&err));
    tb_error_clear(&err);
    return NULL;
  }
  tb__wire_tb_text_t t = { .has_tokens = 1, .tokens = ids, .n_tokens = n };
  return answer(c, &t, ids);
}

/* "messages": the rendered conversation's tokens and text. */
static json_t *tokenize_messages(tb__jctx_t *c, const tb__tctx_t *x, const json_t *doc,
                                 const tb__wire_tb_tokenize_t *r, int *status) {
  const tb_renderer_t *rd = tb__tctx_renderer(c, x, doc, "messages", status);
  if (rd == NULL)
    return NULL;
  tb_rendered_t out;
  tb_error_t err = { 0 };
  if (tb_renderer_render(rd, r->chat.messages, r->chat.n_messages,
                         r->add_generation_prompt ? TB_RENDER_GENERATION_PROMPT : 0, &out,
                         &err) != 0) {
    tb__jctx_fail_at(c, "messages", "%s", tb_error_message(&err));
    tb_error_clear(&err);
    return NULL;
  }
  tb__wire_tb_text_t t = { .has_tokens = 1, .tokens = out.tokens, .n_tokens = out.len,
                           .text = out.text ? out.text : "", .text_len = out.text_len };
  json_t *v = answer(c, &t, NULL);
  tb_rendered_free(&out);
  return v;
}

/* "tokens": their text, special tokens kept. */
static json_t *detokenize(tb__jctx_t *c, tb__arena_t *a, const tb__tctx_t *x, const json_t *doc,
                          int *status) {
  tb__wire_tb_detokenize_t r;
  if (tb__wire_tb_detokenize_from_json(c, a, doc, &r) != 0)
    return NULL;
  const tb_tokenizer_t *tok = tb__tctx_tokenizer(c, x, "tokens", status);
  if (tok == NULL)
    return NULL;
  int32_t *ids = tb__arena_calloc(a, r.n_tokens + 1, sizeof(*ids));
  if (ids == NULL) {
    tb__jctx_fail(c, "out of memory");
    return NULL;
  }
  int64_t vocab = (int64_t)tb_tokenizer_vocab_size(tok);
  int rc = 0;
  size_t mark = tb__jctx_push_key(c, "tokens");
  for (size_t i = 0; rc == 0 && i < r.n_tokens; i++) {
    size_t m2 = tb__jctx_push_index(c, i);
    size_t len;
    rc = tb__json_check_range(c, r.tokens[i], 0, vocab - 1);
    ids[i] = (int32_t)r.tokens[i];
    if (rc == 0 && tb_tokenizer_token_bytes(tok, ids[i], &len) == NULL)
      rc = tb__jctx_fail(c, "%lld is no token of the model's tokenizer", (long long)ids[i]);
    tb__jctx_pop(c, m2);
  }
  tb__jctx_pop(c, mark);
  char *text = NULL;
  size_t len = 0;
  tb_error_t err = { 0 };
  if (rc == 0 && tb_tokenizer_decode(tok, ids, r.n_tokens,
                                     r.skip_special_tokens ? TB_DECODE_SKIP_SPECIAL : 0, &text,
                                     &len, &err) != 0)
    rc = tb__jctx_fail(c, "%s", tb_error_message(&err));
  tb_error_clear(&err);
  if (rc != 0) {
    free(text);
    return NULL;
  }
  tb__wire_tb_text_t t = { .text = text ? text : "", .text_len = len };
  return answer(c, &t, text);
}

/* The base model a tokenize or detokenize call names, whose text it
 * waits for: 404 for an unknown model. */
int tb__route_tb_text_prepare(tb__route_call_t *call) {
  tb_slice_t id;
  tb__tmodel_t *m;
  tb__tbase_t *b;
  if (find_target(call, 1, 404, &id, &m, &b) != 0)
    return -1;
  if (tb__mtext_wait(call->req, b, tb__route_generic))
    return 1;
  tb__tb_text_in_t *in = call->in;
  in->b = b;
  tb__tctx_init(&in->x, tb__training_of(call->req), b);
  return 0;
}

/* Decodes, encodes and writes the answer (call->answer): off the loop
 * when the body is large. */
static int text_call(tb__route_call_t *call, int detok) {
  tb__tb_text_in_t *in = call->in;
  tb__jctx_t *c = &call->c;
  json_t *v = NULL;
  tb__wire_tb_tokenize_t r;
  if (detok)
    v = detokenize(c, &call->arena, &in->x, call->doc, &call->status);
  else if (tb__wire_tb_tokenize_from_json(c, &call->arena, call->doc, &r) != 0)
    v = NULL;
  else if (r.text.base != NULL)
    v = tokenize_text(c, &in->x, &r, &call->status);
  else
    v = tokenize_messages(c, &in->x, call->doc, &r, &call->status);
  if (v == NULL)
    return -1;
  call->answer = tb__json_dump(v, &call->answer_len);
  json_decref(v);
  if (call->answer != NULL)
    return 0;
  call->status = 503;
  return tb_error_set(&call->err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
}

int tb__route_tb_tokenize(tb__route_call_t *call) { return text_call(call, 0); }
int tb__route_tb_detokenize(tb__route_call_t *call) { return text_call(call, 1); }

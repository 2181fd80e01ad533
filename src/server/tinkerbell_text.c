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
 * fields when exclusive); -1 after answering 400. */
static int read_target(tb__http_request_t *req, const json_t *doc, int exclusive,
                       tb__wire_tb_target_t *t) {
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  int rc = tb__wire_tb_target_from_json(&c, doc, t);
  if (rc >= 0 && exclusive && t->model_id.base != NULL && t->base_model.base != NULL)
    rc = tb__jctx_fail_at(&c, "base_model", "give model_id or base_model, not both");
  if (rc < 0) {
    tb__tb_refuse(req, 400, &err, NULL, NULL);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------ sampling */

/* A sample's prompt, decoded (and rendered) off the loop when the body
 * is large. */
static void sample_run(tb__offload_t *o) {
  tb__tb_decode_t *d = (tb__tb_decode_t *)o;
  tb__jctx_t c;
  tb__jctx_init(&c, &d->err);
  d->rc = tb__tb_decode_sample(&c, &d->x, d->op, d->doc, d->op->encode_data, &d->status);
}

static void sample_done(tb__offload_t *o) {
  tb__tb_decode_t *d = (tb__tb_decode_t *)o;
  tb__http_request_t *req = o->req;
  tb__training_t *tr = o->tr;
  tb__top_t *op = d->op;
  if (tb__tb_decode_refused(d)) {
    /* answered */
  } else if (d->m != NULL) {
    /* After the model's earlier operations; it may have gone meanwhile. */
    tb__tmodel_t *m = tb__tb_find_model(tr, tb__sreq(req)->user, d->id);
    if (m == NULL || m->base != op->base) {
      tb__tb_unknown_model(req, d->id);
      tb__top_free(op);
    } else {
      op->model = m;
      tb__tb_submit(req, op, d->id, d->sync);
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
    tb__tb_answer_call(req, fid, b->name, d->sync);
  }
  tb__tb_decode_free(d);
}

/* {"model_id"? | "base_model"?, "prompt" | "messages" | "prompt_tokens",
 * sampling parameters}: from the caller's model (after its earlier
 * operations) or from a base model. */
static void sample(tb__http_request_t *req, int sync) {
  tb__training_t *tr = tb__training_of(req);
  json_t *doc;
  if (tb__server_parse_body(req, &doc) != 0)
    return;
  tb__wire_tb_target_t target;
  if (read_target(req, doc, 0, &target) != 0) {
    json_decref(doc);
    return;
  }
  tb_slice_t id = target.model_id, base = target.base_model;
  tb__tmodel_t *m = id.base ? tb__tb_find_model(tr, tb__sreq(req)->user, id) : NULL;
  tb__tbase_t *b = m ? m->base : &tr->bases[0];
  if (m == NULL && id.base != NULL) {
    /* As in the Python server, a base model's name samples it bare. */
    b = tb__tbase_find(tr, id);
    if (b == NULL) {
      tb__tb_unknown_model(req, id);
      json_decref(doc);
      return;
    }
  } else if (m == NULL && base.base != NULL && (b = tb__tbase_find(tr, base)) == NULL) {
    tb_error_t err = { 0 };
    tb__jctx_t c;
    tb__jctx_init(&c, &err);
    tb__jctx_fail_at(&c, "base_model", "unknown model \"%.*s\" (see get_server_capabilities)",
                     (int)(base.len > 80 ? 80 : base.len), base.base);
    tb__tb_refuse(req, 400, &err, NULL, doc);
    return;
  }
  if (b->state < 0) {
    tb__server_respond_error(req, 422, "%s: %s", m ? "model_id" : id.base ? "model_id"
                                                                       : "base_model",
                             b->error ? b->error : "the base model failed to load");
    json_decref(doc);
    return;
  }
  if (tb__wire_tb_sample_needs_text(doc) &&
      tb__mtext_wait(req, b, sync ? tb__route_tb_sample : tb__route_tb_asample)) {
    json_decref(doc);
    return;
  }
  tb__top_t *op = tb__tb_new_op(req, TB__OP_SAMPLE);
  if (op == NULL) {
    json_decref(doc);
    return;
  }
  op->base = b;
  ((tb__tbop_t *)op->encode_data)->model_id = b->name;
  tb__tb_decode_start(req, op, doc, id, m, b, sync, sample_run, sample_done);
}

void tb__route_tb_sample(tb__http_request_t *req) { sample(req, 1); }
void tb__route_tb_asample(tb__http_request_t *req) { sample(req, 0); }

/* ------------------------------------------------------------ tokenize */

/* A tokenize or detokenize call: decoded, encoded and its answer
 * written off the loop when the body is large. */
typedef struct text_call_s {
  tb__offload_t o;
  json_t *doc;
  tb__tctx_t x;
  int detokenize;
  tb__arena_t arena;        /* the decoded body */
  int status;              /* of the answer */
  char *answer;            /* JSON, malloc'd: the body until on_done */
  size_t answer_len;
  tb_error_t err;
} text_call_t;

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

static void text_call_run(tb__offload_t *o) {
  text_call_t *t = (text_call_t *)o;
  tb__jctx_t c;
  tb__jctx_init(&c, &t->err);
  t->status = 400;
  json_t *v = NULL;
  tb__wire_tb_tokenize_t r;
  if (t->detokenize)
    v = detokenize(&c, &t->arena, &t->x, t->doc, &t->status);
  else if (tb__wire_tb_tokenize_from_json(&c, &t->arena, t->doc, &r) != 0)
    v = NULL;
  else if (r.text.base != NULL)
    v = tokenize_text(&c, &t->x, &r, &t->status);
  else
    v = tokenize_messages(&c, &t->x, t->doc, &r, &t->status);
  if (v != NULL) {
    t->status = 200;
    t->answer = tb__json_dump(v, &t->answer_len);
    json_decref(v);
  }
}

static void on_text_answered(tb__http_request_t *req, int status) {
  (void)status;
  free(tb__sreq(req)->data);
}

static void text_call_done(tb__offload_t *o) {
  text_call_t *t = (text_call_t *)o;
  tb__http_request_t *req = o->req;
  if (o->tr->closing) {
    tb__server_respond_error(req, 503, "the server is closing");
    free(t->answer);
  } else if (t->status == 200 && t->answer == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
  } else if (t->status == 200) {
    /* Lent to the answer: freed once it is written. */
    tb__sreq(req)->data = t->answer;
    tb__sreq(req)->on_done = on_text_answered;
    tb__server_respond_json(req, 200, t->answer, t->answer_len);
  } else {
    tb__tb_refuse(req, t->status, &t->err, NULL, NULL);
  }
  json_decref(t->doc);
  tb__arena_free(&t->arena);
  tb_error_clear(&t->err);
  free(t);
}


/* The base model a tokenize or detokenize call names; NULL after
 * answering 404 (an unknown model) or 400. */
static tb__tbase_t *text_call_base(tb__http_request_t *req, const json_t *doc) {
  tb__training_t *tr = tb__training_of(req);
  tb__wire_tb_target_t target;
  if (read_target(req, doc, 1, &target) != 0)
    return NULL;
  tb_slice_t id = target.model_id, base = target.base_model;
  if (id.base != NULL) {
    tb__tmodel_t *m = tb__tb_find_model(tr, tb__sreq(req)->user, id);
    tb__tbase_t *b = m ? m->base : tb__tbase_find(tr, id);
    if (b == NULL)
      tb__tb_unknown_model(req, id);
    return b;
  }
  if (base.base == NULL)
    return &tr->bases[0];
  tb__tbase_t *b = tb__tbase_find(tr, base);
  if (b == NULL)
    tb__server_respond_error(req, 404, "base_model: unknown model \"%.*s\" (see "
                                       "get_server_capabilities)",
                             (int)(base.len > 80 ? 80 : base.len), base.base);
  return b;
}

static void text_call(tb__http_request_t *req, int detok) {
  tb__training_t *tr = tb__training_of(req);
  json_t *doc;
  if (tb__server_parse_body(req, &doc) != 0)
    return;
  tb__tbase_t *b = text_call_base(req, doc);
  if (b == NULL ||
      tb__mtext_wait(req, b, detok ? tb__route_tb_detokenize : tb__route_tb_tokenize)) {
    json_decref(doc);
    return;
  }
  text_call_t *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    json_decref(doc);
    return;
  }
  t->o = (tb__offload_t){ .tr = tr, .req = req, .run = text_call_run, .done = text_call_done };
  t->doc = doc;
  t->detokenize = detok;
  tb__arena_init(&t->arena, 4096);
  tb__tctx_init(&t->x, tr, b);
  tb__offload(&t->o);
}

void tb__route_tb_tokenize(tb__http_request_t *req) { text_call(req, 0); }
void tb__route_tb_detokenize(tb__http_request_t *req) { text_call(req, 1); }

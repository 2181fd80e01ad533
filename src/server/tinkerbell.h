/*
 * The Tinkerbell dialect of the training server: the routes of the
 * Tinkerbell async API guide (sync and async pairs under /api/v1, the
 * legacy root routes, chat training data) over the same models, engine,
 * futures and seq_id order as the Tinker dialect (training.c).
 *
 * Its models are LoRA adapters without a session, named by the caller
 * ("user_123") or by add_lora ("base_lora_<16 hex>"), and belong to the
 * caller's user.  A training call naming a model the user does not have
 * creates it with the defaults below on the default base model.
 *
 * Files: tinkerbell_routes.c (the training routes, sync waits),
 * tinkerbell_text.c (the routes that meet text: sampling, tokenize and
 * detokenize), tinkerbell_data.c (training data and sampling requests
 * decoded into engine inputs), tinkerbell_results.c (the result shapes).
 */
#ifndef TB_SERVER_TINKERBELL_H
#define TB_SERVER_TINKERBELL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"
#include "server/training.h"

/* The adapter a Tinkerbell call creates when it gives no settings: the
 * Python server's LoraConfigParams (r 16, alpha 32), on every target. */
/* Calls of one model of this dialect that may wait at once; more are 429. */
#define TB__TB_MAX_WAITING 64
#define TB__TB_DEFAULT_RANK 16
#define TB__TB_DEFAULT_ALPHA 32.0
/* What "backend" says in results. */
#define TB__TB_BACKEND "tinkerbell-cpu"
/* Sampling defaults where a request gives none. */
#define TB__TB_DEFAULT_MAX_TOKENS 64

/* What the encoders need beyond the op itself (in the op's arena). */
typedef struct tb__tbop_s {
  int created;             /* this call created the model */
  double trained_weight;   /* forward*: the weight the mean divides by */
  size_t trained_tokens;   /* forward*: target tokens with weight > 0 */
  const char *model_id;    /* sample: what the result names */
  int text;                /* sample: decode the tokens to text */
  const tb_renderer_t *renderer; /* sample: a chat prompt's, which reads
                                    the replies back */
} tb__tbop_t;

/* What the route files share (tinkerbell_routes.c). */
/* The caller's model of this dialect named id, or NULL. */
tb__tmodel_t *tb__tb_find_model(tb__training_t *tr, const tb__user_t *u, tb_slice_t id);
/* Submits op (of op->model, or of a new model id when op->model is NULL)
 * in the model's order and answers.  Takes op. */
void tb__tb_submit(tb__http_request_t *req, tb__top_t *op, tb_slice_t id, int sync);
/* Answers an accepted call: async, {"request_id", "model_id"}; sync, the
 * future's result once it finishes. */
void tb__tb_answer_call(tb__http_request_t *req, const char *fid, const char *model_id,
                        int sync);
/* 404 for a model id the caller does not have. */
void tb__tb_unknown_model(tb__http_request_t *req, tb_slice_t id);

/* What a training, sample, tokenize or detokenize call knows before its
 * body is decoded (call->in of its row), found by the row's prepare on
 * the loop: the base model whose text the body is decoded with (off the
 * loop when it is large, model_text.h). */
typedef struct tb__tb_text_in_s {
  tb_slice_t id;           /* model_id, in the body; base NULL when not given */
  tb__tmodel_t *m;         /* the caller's model named by id when the call
                              came, or NULL */
  tb__tbase_t *b;
  tb__tctx_t x;            /* of b */
} tb__tb_text_in_t;

/* --- tinkerbell_data.c ------------------------------------------------- */

/* The body of a forward or forward_backward call (read by
 * wire/tinkerbell_request.h) into op->batch: chat conversations
 * rendered with the base model's renderer (loss on what it weights: the
 * assistant messages; a conversation without an assistant message trains
 * on all its tokens), or Tinker datums.  Fills info->trained_*.  0, or a
 * negative code with c's error; *status is the HTTP status to answer
 * (400, or 422 for data the model cannot take).  Safe on a worker. */
int tb__tb_decode_batch(tb__jctx_t *c, tb__arena_t *a, const json_t *doc, const tb__tctx_t *x,
                        tb__batch_t *b, tb__tbop_t *info, int *status);
/* The prompt and the sampling parameters of a sample call (read by
 * wire/tinkerbell_request.h) into op->prompt and op->sampling, checked
 * against the model.  Same conventions as above. */
int tb__tb_decode_sample(tb__jctx_t *c, const tb__tctx_t *x, tb__top_t *op, const json_t *doc,
                         tb__tbop_t *info, int *status);

/* A model id a caller may choose: 1 to 128 letters, digits, '.', '_' or
 * '-', not starting with '.' (no ':', so it never looks like a Tinker
 * model's).  0 or c's error at key. */
int tb__tb_check_name(tb__jctx_t *c, const char *key, tb_slice_t name);

/* --- tinkerbell_results.c ---------------------------------------------- */

/* The encoder of each op type (set as op->encode): the op's result as
 * wire/tinkerbell.h writes it. */
json_t *tb__tb_encode(tb__top_t *op);

#endif /* TB_SERVER_TINKERBELL_H */

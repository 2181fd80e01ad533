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
 * Files: tinkerbell_routes.c (routes, dialect dispatch, sync waits),
 * tinkerbell_data.c (training data and sampling requests decoded into
 * engine inputs), tinkerbell_results.c (the result shapes).
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
} tb__tbop_t;

/* Registers the dialect's routes (after the Tinker ones, whose shared
 * paths become TB__DIALECT_BOTH). */
int tb__tinkerbell_routes(tb__training_t *tr);

/* --- tinkerbell_data.c ------------------------------------------------- */

/* {"data": [...], "loss_fn"?, "loss_fn_config"?} of a forward or
 * forward_backward call into op->batch: chat conversations rendered with
 * base's chat template (loss on assistant tokens; a conversation without
 * an assistant message trains on all its tokens), or Tinker datums.
 * Fills info->trained_*.  0, or a negative code with c's error; *status
 * is the HTTP status to answer (400, or 422 for data the model cannot
 * take). */
int tb__tb_decode_batch(tb_jctx_t *c, tb_arena_t *a, json_t *doc, const tb__tbase_t *base,
                        tb_batch_t *b, tb__tbop_t *info, int *status);

/* The prompt ("prompt" text, "messages" or "prompt_tokens") and the
 * sampling parameters of a sample call into op->prompt and op->sampling,
 * for op->base.  Same conventions as above. */
int tb__tb_decode_sample(tb_jctx_t *c, tb__training_t *tr, tb__top_t *op, const json_t *doc,
                         tb__tbop_t *info, int *status);

/* A model id a caller may choose: 1 to 128 letters, digits, '.', '_' or
 * '-', not starting with '.' (no ':', so it never looks like a Tinker
 * model's).  0 or c's error at key. */
int tb__tb_check_name(tb_jctx_t *c, const char *key, tb_slice_t name);

/* --- tinkerbell_results.c ---------------------------------------------- */

/* The encoder of each op type (set as op->encode). */
json_t *tb__tb_encode(tb__top_t *op);

#endif /* TB_SERVER_TINKERBELL_H */

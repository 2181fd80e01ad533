/*
 * The text of a base model the server serves: its tokenizer, its chat
 * renderers and the bytes of its tokens (which stop strings are matched
 * on), loaded from the model's directory on the threadpool when the
 * model's weights start loading, and immutable once loaded, so that a
 * request may encode with them on a worker thread.
 *
 *   `base`          the byte tokenizer and the `base` renderer, at once
 *   NAME=HF_DIR     HF_DIR/tokenizer.json with tokenizer_config.json and
 *                   generation_config.json; the renderer its
 *                   chat_template asks for (tinkerbell/renderer.h)
 *
 * A directory without tokenizer.json (or with one the tokenizer cannot
 * read exactly) still serves token ids; what needs text is refused with
 * 422 saying what is missing.  A chat template no renderer is known to
 * reproduce leaves the model without a default renderer: chat needs a
 * request's "renderer" then.  A request that needs text while the text
 * is loading waits for it (its route runs again once it is there).
 *
 * Also here: running a request's encoding on the threadpool when its
 * body is large (tb__offload), since a conversation of megabytes takes
 * tens of milliseconds to encode.
 */
#ifndef TB_SERVER_MODEL_TEXT_H
#define TB_SERVER_MODEL_TEXT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/json.h"
#include "engine/weights.h"
#include "http/server.h"
#include "tinkerbell/renderer.h"
#include "tinkerbell/tokenizer.h"

typedef struct tb__training_s tb__training_t;
typedef struct tb__tbase_s tb__tbase_t;

/* As many renderers as tb_renderer_names lists, at most. */
#define TB__MAX_RENDERERS 8

/* Bodies larger than this are decoded and encoded on the threadpool. */
#define TB__OFF_LOOP_BODY (64u * 1024u)

typedef struct tb__mtext_s {
  tb_tokenizer_t *tok;           /* NULL: the model has none */
  char *missing;                 /* then why, naming the file */
  /* In tb_renderer_names' order; NULL where the tokenizer lacks the
   * renderer's tokens (why[] says which). */
  tb_renderer_t *renderers[TB__MAX_RENDERERS];
  char *why[TB__MAX_RENDERERS];
  int dflt;                      /* the directory's renderer, or -1 */
  char *dflt_why;                /* then why: its chat template is unknown */
  /* The bytes of every id (tb_tokenizer_token_bytes; special tokens as
   * their text), for the engine's stop strings; NULL without tok. */
  tb_slice_t *token_bytes;
} tb__mtext_t;

/* What a request's text needs of its base model, fixed on the loop
 * before the work is handed to a worker (the base's state and config
 * change on the loop). */
typedef struct tb__tctx_s {
  const char *name;              /* the base model's */
  int builtin;                   /* `base` */
  const tb__mtext_t *text;       /* settled; NULL while it loads */
  int has_cfg;                   /* cfg is known */
  tb__model_config_t cfg;
  size_t max_body;
} tb__tctx_t;

/* Starts loading b's text (b->spec known): at once for `base`, else on
 * the threadpool (counted in tr->n_fs).  0 or TB_ENOMEM. */
int tb__mtext_start(tb__training_t *tr, tb__tbase_t *b);
void tb__mtext_free(tb__mtext_t *t);

/* 1 when req must wait for b's text, which is loading: resume(req) runs
 * once it is settled (the route starts over), or the request is answered
 * 503 when the server closes first.  0 when the text is settled. */
int tb__mtext_wait(tb__http_request_t *req, tb__tbase_t *b, tb__http_handler_cb resume);
/* Answers 503 to every request waiting for text (the server closes). */
void tb__mtext_fail_waiters(tb__training_t *tr);

/* Fills x for a request on b (on the loop). */
void tb__tctx_init(tb__tctx_t *x, const tb__training_t *tr, const tb__tbase_t *b);

/* The tokenizer of x for a request field key; NULL after c's error (a
 * 422 in *status) naming what the model lacks. */
const tb_tokenizer_t *tb__tctx_tokenizer(tb__jctx_t *c, const tb__tctx_t *x, const char *key,
                                         int *status);
/* The renderer of a chat request: doc's "renderer" (a name), else the
 * model's own.  NULL after c's error: 400 for an unknown name, 422 for a
 * model without a tokenizer, a renderer its tokenizer cannot take, or no
 * renderer of its own. */
const tb_renderer_t *tb__tctx_renderer(tb__jctx_t *c, const tb__tctx_t *x, const json_t *doc,
                                       const char *key, int *status);

/* ------------------------------------------------------------ off the loop */

/* Work of a request that runs on the threadpool when its body is large:
 * run on a worker (it may touch only the struct it is embedded in and
 * what is immutable), then done on the loop, which answers the request
 * and frees the struct.  tr->closing may hold by then. */
typedef struct tb__offload_s tb__offload_t;
struct tb__offload_s {
  uv_work_t work;
  tb__training_t *tr;
  tb__http_request_t *req;
  void (*run)(tb__offload_t *o);
  void (*done)(tb__offload_t *o);
};

/* Runs o->run and o->done: on the threadpool and then the loop when the
 * request's body is over TB__OFF_LOOP_BODY, else both now (ops.c). */
void tb__offload(tb__offload_t *o);

#endif /* TB_SERVER_MODEL_TEXT_H */

/*
 * The request bodies of the Tinkerbell dialect that meet text: what a
 * sample, tokenize or detokenize call names, chat messages (in sample,
 * tokenize and the training data of forward and forward_backward), the
 * bodies of tokenize and detokenize, and the top of a forward /
 * forward_backward body.  One struct per body, its to_json (a sender of
 * the dialect) and its from_json (the server), which checks every type
 * and every rule the body alone decides, naming the field ("messages[1]
 * .role: expected system, user or assistant, got \"tool\"").
 *
 * Strings are slices borrowed from the document (JSON strings may hold
 * NUL, so text goes by length); base NULL is a field left out.  Not here:
 * what needs a model -- token ids against its vocabulary, lengths against
 * its context, a tokenizer or renderer to turn text into tokens -- which
 * the server checks (server/tinkerbell_data.c, tinkerbell_text.c); the
 * answers (tinkerbell.h).
 */
#ifndef TB_WIRE_TINKERBELL_REQUEST_H
#define TB_WIRE_TINKERBELL_REQUEST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/json.h"
#include "tinkerbell/renderer.h"
#include "wire/types.h"

/* {"model_id"?, "base_model"?}: the model a sample, tokenize or
 * detokenize call names (neither: the default base model). */
typedef struct tb__wire_tb_target_s {
  tb_slice_t model_id, base_model;
} tb__wire_tb_target_t;

/* A conversation [{"role", "content", "reasoning_content"?}, ...]: the
 * roles system, user and assistant; reasoning only in an assistant
 * message.  The messages' strings are the document's (jansson keeps them
 * NUL-terminated; content goes by length). */
typedef struct tb__wire_tb_chat_s {
  tb_chat_message_t *messages;
  size_t n_messages;
} tb__wire_tb_chat_t;

/* POST /api/v1/tokenize {target, "text", "add_special_tokens"?} or
 * {target, "messages", "add_generation_prompt"?, "renderer"?}: exactly
 * one of text and messages (a non-empty list), each with only its own
 * options.  The target and renderer are read apart (the target before
 * the body, on the loop; the renderer where it is chosen). */
typedef struct tb__wire_tb_tokenize_s {
  tb_slice_t text;                 /* base NULL: messages instead */
  tb__wire_tb_chat_t chat;
  int add_special_tokens, add_generation_prompt;
} tb__wire_tb_tokenize_t;

/* POST /api/v1/detokenize {target, "tokens", "skip_special_tokens"?}:
 * the ids as sent (integers; their range is the model's). */
typedef struct tb__wire_tb_detokenize_s {
  int64_t *tokens;
  size_t n_tokens;
  int skip_special_tokens;
} tb__wire_tb_detokenize_t;

/* One stop of a sample: a string, or a token id as sent. */
typedef struct tb__wire_tb_stop_s {
  tb_slice_t string;               /* base NULL: an id */
  int64_t id;
} tb__wire_tb_stop_t;

/* POST /api/v1/sample and asample {target, exactly one of "prompt" (text),
 * "messages" (a conversation), "prompt_tokens" (ids) and the Python
 * server's "prompts" (a list of one text), "raw"? (a text prompt as a
 * plain continuation), "renderer"?, and the sampling parameters at the
 * top or in "sampling_params" (the Python server's vLLM form, with "n"
 * for num_samples)}.  The target and renderer are read apart. */
typedef struct tb__wire_tb_sample_request_s {
  tb_slice_t text;                 /* "prompt" or "prompts"[0]; base NULL: none */
  const char *text_key;            /* "prompt" or "prompts[0]": where it was */
  tb__wire_tb_chat_t chat;         /* n_messages 0: no "messages" */
  int64_t *prompt_tokens;          /* NULL: no "prompt_tokens" */
  size_t n_prompt_tokens;
  int raw;
  int nested;                      /* the parameters are in "sampling_params" */
  const char *n_key;               /* "n" or "num_samples": the one given */
  int has_max_tokens;              /* 0: the model's default */
  int64_t max_tokens;              /* as sent: its range is the model's */
  double temperature, top_p;       /* 1.0 and 1.0 when not given */
  int64_t top_k, seed;             /* -1 (no limit, a random seed) when not given */
  int64_t num_samples;             /* 1 when not given */
  tb__wire_tb_stop_t *stops;       /* "stop": a string or a list of strings and ids */
  size_t n_stops;
  int stop_list;                   /* "stop" was a list */
} tb__wire_tb_sample_request_t;

/* forward / forward_backward {"data", "loss_fn"?, "loss_fn_config"?,
 * "renderer"?}: data is a non-empty list of chat conversations (data[0]
 * a list: each a non-empty conversation, trained with cross_entropy) or
 * of Tinker datums (datum.h; loss_fn defaults to cross_entropy).
 * "loss_fn_inputs" at the top is refused: they belong to each datum. */
typedef struct tb__wire_tb_batch_s {
  int chat;
  tb__wire_tb_chat_t *convs;       /* chat: n_convs conversations */
  size_t n_convs;
  tb__wire_fwdbwd_t datums;        /* otherwise */
} tb__wire_tb_batch_t;

/* Peeks at a body's shape before it is decoded (on the loop, to wait for
 * a model's text only when the body needs it): a forward body of chat
 * conversations; a sample body with a text prompt, messages or stop
 * strings. */
int tb__wire_tb_batch_is_chat(const json_t *v);
int tb__wire_tb_sample_needs_text(const json_t *v);

/* New references, or NULL when memory runs out. */
json_t *tb__wire_tb_target_to_json(const tb__wire_tb_target_t *r);
json_t *tb__wire_tb_chat_to_json(const tb__wire_tb_chat_t *r);
/* With the target's fields first, as a caller sends them. */
json_t *tb__wire_tb_tokenize_to_json(const tb__wire_tb_target_t *t,
                                     const tb__wire_tb_tokenize_t *r);
json_t *tb__wire_tb_detokenize_to_json(const tb__wire_tb_target_t *t,
                                       const tb__wire_tb_detokenize_t *r);

/* The chat form only (a client sends datums through datum_encode.c). */
json_t *tb__wire_tb_batch_to_json(const tb__wire_tb_batch_t *r);
json_t *tb__wire_tb_sample_request_to_json(const tb__wire_tb_target_t *t,
                                           const tb__wire_tb_sample_request_t *r);

/* 0, TB_EFIELD (recorded in c) or TB_ENOMEM; arrays in the arena. */
int tb__wire_tb_target_from_json(tb__jctx_t *c, const json_t *v, tb__wire_tb_target_t *out);
/* v is the list itself; c's path is at it. */
int tb__wire_tb_chat_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                               tb__wire_tb_chat_t *out);
int tb__wire_tb_tokenize_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                   tb__wire_tb_tokenize_t *out);
int tb__wire_tb_detokenize_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                     tb__wire_tb_detokenize_t *out);

/* Checks what needs no model: temperature >= 0, top_p in (0, 1], top_k
 * -1 or >= 1, seed >= 0, 1 to 128 samples, at most 16 stops, no empty
 * stop string; token ids and max_tokens are read as integers, their
 * ranges the model's. */
int tb__wire_tb_sample_request_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                         tb__wire_tb_sample_request_t *out);

/* max_bytes bounds a datum's tensors (datum.h). */
int tb__wire_tb_batch_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                size_t max_bytes, tb__wire_tb_batch_t *out);

#endif /* TB_WIRE_TINKERBELL_REQUEST_H */

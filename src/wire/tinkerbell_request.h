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

/* New references, or NULL when memory runs out. */
json_t *tb__wire_tb_target_to_json(const tb__wire_tb_target_t *r);
json_t *tb__wire_tb_chat_to_json(const tb__wire_tb_chat_t *r);
/* With the target's fields first, as a caller sends them. */
json_t *tb__wire_tb_tokenize_to_json(const tb__wire_tb_target_t *t,
                                     const tb__wire_tb_tokenize_t *r);
json_t *tb__wire_tb_detokenize_to_json(const tb__wire_tb_target_t *t,
                                       const tb__wire_tb_detokenize_t *r);

/* 0, TB_EFIELD (recorded in c) or TB_ENOMEM; arrays in the arena. */
int tb__wire_tb_target_from_json(tb__jctx_t *c, const json_t *v, tb__wire_tb_target_t *out);
/* v is the list itself; c's path is at it. */
int tb__wire_tb_chat_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                               tb__wire_tb_chat_t *out);
int tb__wire_tb_tokenize_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                   tb__wire_tb_tokenize_t *out);
int tb__wire_tb_detokenize_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                     tb__wire_tb_detokenize_t *out);

#endif /* TB_WIRE_TINKERBELL_REQUEST_H */

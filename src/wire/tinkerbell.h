/*
 * The answers of the Tinkerbell dialect: the results of its ops (what a
 * sync call answers and what /retrieve_future answers for an async one)
 * and the answers of its direct routes (get_info, list_loss_functions,
 * tokenize, detokenize), in the shapes of the API guide and the Python
 * server it replaces: flat objects with "model_id" and "backend".  One
 * struct per body, its to_json (the server) and its from_json (a reader
 * of the dialect; the golden tests read recorded answers back).
 *
 * Every result may end in "created": true, when the call created the
 * model it names.  A number JSON cannot carry (a loss that diverged to
 * inf or NaN) travels as null and reads back as NaN.  Text is written as
 * valid UTF-8: a sample may stop inside a UTF-8 sequence, so an invalid
 * sequence becomes U+FFFD, as a text decoder would show it (the tokens
 * stay exact).  Strings are borrowed (from the document when read); keys
 * are written in the order the dialect has always sent them.  Not here:
 * the requests, read by the server's route files, and what the results
 * mean (server/tinkerbell_results.c).
 */
#ifndef TB_WIRE_TINKERBELL_H
#define TB_WIRE_TINKERBELL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/json.h"
#include "wire/types.h"

/* add_lora's result {"model_id", "base_model", "rank", "alpha",
 * "status": "created", "backend"}. */
typedef struct tb__wire_tb_adapter_s {
  const char *model_id, *base_model, *backend;
  int64_t rank;
  double alpha;
  int created;
} tb__wire_tb_adapter_t;

/* forward / forward_backward's result {"loss" (the mean per trained
 * token), "loss_sum", "num_samples", "num_tokens", "total_weight",
 * "model_id", "backend", "loss_fn", "loss_fn_outputs": {"loss_fn"},
 * "metrics", "logprobs"?}: logprobs (forward only) is one row per datum,
 * row i holding row_len[i] values of the flat array. */
typedef struct tb__wire_tb_forward_s {
  double loss, loss_sum, total_weight;
  int64_t num_samples, num_tokens;
  const char *model_id, *backend, *loss_fn;
  const tb__wire_metric_t *metrics;
  size_t n_metrics;
  int has_logprobs;
  const float *logprobs;
  const size_t *row_len;
  size_t n_rows;
  int created;
} tb__wire_tb_forward_t;

/* optim_step's result {"model_id", "backend", "step", "metrics"}. */
typedef struct tb__wire_tb_optim_s {
  const char *model_id, *backend;
  int64_t step;
  const tb__wire_metric_t *metrics;
  size_t n_metrics;
  int created;
} tb__wire_tb_optim_t;

/* The results that report a status: save and load {"model_id", "path",
 * "status": "saved" | "loaded", "backend"}, remove_lora {"model_id",
 * "status": "deleted"}.  path and backend NULL: left out. */
typedef struct tb__wire_tb_status_s {
  const char *model_id, *path, *status, *backend;
  int created;
} tb__wire_tb_status_t;

/* One sample: {"text", "tokens", "logprobs", "stop_reason",
 * "reasoning"?}.  text NULL is null (no tokenizer to show it with);
 * reasoning NULL is left out. */
typedef struct tb__wire_tb_sample_s {
  const char *text, *reasoning;
  size_t text_len, reasoning_len;
  const int32_t *tokens;
  const float *logprobs;
  size_t n_tokens;
  const char *stop_reason;
} tb__wire_tb_sample_t;

/* sample's result {"model_id", "base_model", "backend",
 * "generated_text" (the first sample's text), "completions" (every
 * sample's text), "prompt_tokens" (the prompt's length), "samples"}. */
typedef struct tb__wire_tb_sampled_s {
  const char *model_id, *base_model, *backend;
  int64_t prompt_tokens;
  const tb__wire_tb_sample_t *samples;
  size_t n_samples;
  int created;
} tb__wire_tb_sampled_t;

/* POST /get_info's answer {"model_id", "model_data": {"model_name",
 * "arch", "vocab_size"}, "base_model", "lora_rank", "lora_alpha",
 * "ready"}. */
typedef struct tb__wire_tb_model_s {
  const char *model_id, *base_model, *arch;
  int64_t vocab_size, lora_rank;
  double lora_alpha;
  int ready;
} tb__wire_tb_model_t;

/* GET /list_loss_functions' answer {"available_loss_functions"}. */
typedef struct tb__wire_tb_loss_fns_s {
  const char *const *names;
  size_t n_names;
} tb__wire_tb_loss_fns_t;

/* tokenize's answer {"tokens", "text"?} and detokenize's {"text"}:
 * has_tokens 0 leaves tokens out, text NULL leaves text out. */
typedef struct tb__wire_tb_text_s {
  int has_tokens;
  const int32_t *tokens;
  size_t n_tokens;
  const char *text;
  size_t text_len;
} tb__wire_tb_text_t;

/* New references, or NULL when memory runs out. */
json_t *tb__wire_tb_adapter_to_json(const tb__wire_tb_adapter_t *r);
json_t *tb__wire_tb_forward_to_json(const tb__wire_tb_forward_t *r);
json_t *tb__wire_tb_optim_to_json(const tb__wire_tb_optim_t *r);
json_t *tb__wire_tb_status_to_json(const tb__wire_tb_status_t *r);
json_t *tb__wire_tb_sampled_to_json(const tb__wire_tb_sampled_t *r);
json_t *tb__wire_tb_model_to_json(const tb__wire_tb_model_t *r);
json_t *tb__wire_tb_loss_fns_to_json(const tb__wire_tb_loss_fns_t *r);
json_t *tb__wire_tb_text_to_json(const tb__wire_tb_text_t *r);

/* 0, TB_EFIELD (recorded in c) or TB_ENOMEM; arrays in the arena. */
int tb__wire_tb_adapter_from_json(tb__jctx_t *c, const json_t *v, tb__wire_tb_adapter_t *out);
int tb__wire_tb_forward_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                  tb__wire_tb_forward_t *out);
int tb__wire_tb_optim_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                tb__wire_tb_optim_t *out);
int tb__wire_tb_status_from_json(tb__jctx_t *c, const json_t *v, tb__wire_tb_status_t *out);
int tb__wire_tb_sampled_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                  tb__wire_tb_sampled_t *out);
int tb__wire_tb_model_from_json(tb__jctx_t *c, const json_t *v, tb__wire_tb_model_t *out);
int tb__wire_tb_loss_fns_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                   tb__wire_tb_loss_fns_t *out);
int tb__wire_tb_text_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                               tb__wire_tb_text_t *out);

/* A JSON string of n bytes of text, every invalid UTF-8 sequence turned
 * into U+FFFD; NULL on ENOMEM. */
json_t *tb__wire_text_json(const char *s, size_t n);

#endif /* TB_WIRE_TINKERBELL_H */

/*
 * Sampling on the wire: the asample request (JSON) and SampleResponse in
 * JSON and protobuf, both directions (the server encodes, the client
 * decodes).  Memory of decoded values comes from the arena.
 */
#ifndef TB_WIRE_SAMPLE_H
#define TB_WIRE_SAMPLE_H

#include <jansson.h>

#include "core/buf.h"
#include "core/json.h"
#include "wire/types.h"

typedef enum {
  TB_WIRE_STOP_REASON_STOP = 0,    /* a stop string or token, or end of sequence */
  TB_WIRE_STOP_REASON_LENGTH = 1   /* max_tokens reached */
} tb__wire_stop_reason_t;

typedef struct tb__wire_sampling_params_s {
  int64_t max_tokens;        /* -1 when absent (the server's default) */
  int has_seed;
  uint64_t seed;
  double temperature;        /* default 1.0 */
  int64_t top_k;             /* default -1: no limit */
  double top_p;              /* default 1.0 */
  const char **stop_strings; /* stop as strings ... */
  size_t n_stop_strings;
  int32_t *stop_tokens;      /* ... or as token ids */
  size_t n_stop_tokens;
} tb__wire_sampling_params_t;

typedef struct tb__wire_sample_request_s {
  int32_t *prompt;
  size_t n_prompt;
  tb__wire_sampling_params_t params;
  int64_t num_samples;              /* default 1 */
  int prompt_logprobs;              /* bool */
  int64_t topk_prompt_logprobs;     /* default 0 */
  const char *sampling_session_id;  /* NULL when absent */
  const char *base_model;           /* NULL when absent */
  const char *model_path;           /* NULL when absent */
  int64_t seq_id;                   /* -1 when absent */
} tb__wire_sample_request_t;

typedef struct tb__wire_sequence_s {
  tb__wire_stop_reason_t stop_reason;
  int32_t *tokens;
  size_t n_tokens;
  float *logprobs;           /* n_tokens values, or NULL */
} tb__wire_sequence_t;

/* Sentinel of an empty top-k cell, as the SDK reads it. */
#define TB_WIRE_TOPK_EMPTY_LOGPROB (-99999.0f)

typedef struct tb__wire_sample_response_s {
  tb__wire_sequence_t *sequences;
  size_t n_sequences;
  float *prompt_logprobs;    /* n_prompt values (NaN = none), or NULL */
  size_t n_prompt;
  int32_t *topk_ids;         /* (topk_rows, topk_k) or NULL */
  float *topk_logprobs;      /* (topk_rows, topk_k) */
  size_t topk_rows;
  size_t topk_k;
  int64_t prompt_cache_hit_tokens;
} tb__wire_sample_response_t;

/* SamplingParams JSON (stop as a string, a list of strings or a list of
 * token ids). */
int tb__wire_sampling_params_from_json(tb__jctx_t *c, tb__arena_t *a,
                                       const json_t *v,
                                       tb__wire_sampling_params_t *p);
/* The asample body: {"prompt": ModelInput, "sampling_params", ...}. */
int tb__wire_sample_request_from_json(tb__jctx_t *c, tb__arena_t *a,
                                      const json_t *body,
                                      tb__wire_sample_request_t *r);

json_t *tb__wire_sample_response_to_json(const tb__wire_sample_response_t *r);
int tb__wire_sample_response_to_proto(const tb__wire_sample_response_t *r,
                                      tb__buf_t *out);
int tb__wire_sample_response_from_json(tb__jctx_t *c, tb__arena_t *a,
                                       const json_t *v,
                                       tb__wire_sample_response_t *r);
int tb__wire_sample_response_from_proto(tb__jctx_t *c, tb__arena_t *a,
                                        tb_slice_t body,
                                        tb__wire_sample_response_t *r);

#endif /* TB_WIRE_SAMPLE_H */

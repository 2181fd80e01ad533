/*
 * The data of the Tinker API as plain C: what a program gives the training
 * and sampling clients (model inputs, tensors, datums, LoRA, AdamW and
 * sampling parameters) and what their futures give back (forward_backward
 * outputs, optimizer metrics, samples, model info).
 *
 * Ownership is explicit and the same everywhere:
 *   - Values the caller builds (tb_model_input_t, tb_tensor_data_t,
 *     tb_train_datum_t) live in the caller's memory; their builders copy the
 *     arrays they are given, and their _clear function releases what the
 *     builders allocated (safe on a zeroed value, and again after a clear).
 *   - Parameter structs (tb_lora_params_t, tb_adamw_params_t,
 *     tb_sample_params_t) own nothing: fill them with their _default
 *     function, change fields, pass a pointer.  Pointers inside them are
 *     borrowed for the duration of the call that takes them.
 *   - Results come from futures (tinkerbell/future.h): each has a
 *     tb_result_type_t and a _free function; tb_future_result lends one,
 *     tb_future_take hands it over.
 * A function that returns an error leaves its output as it was (a builder
 * that fails leaves the value unchanged).
 */
#ifndef TINKERBELL_TYPES_H
#define TINKERBELL_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"
#include "tinkerbell/future.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ model input */

/* A run of token ids (an encoded_text chunk). */
typedef struct tb_model_input_chunk_s {
  int32_t *tokens;
  size_t n_tokens;
} tb_model_input_chunk_t;

/* The tokens a model reads, in chunks (ModelInput).  Zeroed is empty. */
typedef struct tb_model_input_s {
  tb_model_input_chunk_t *chunks;
  size_t n_chunks;
} tb_model_input_t;

/* Makes mi one chunk holding a copy of tokens (none when n is 0),
 * releasing what mi held.  Returns 0, TB_EINVAL (a negative token id) or
 * TB_ENOMEM. */
TB_EXTERN int tb_model_input_init(tb_model_input_t *mi, const int32_t *tokens, size_t n);
/* Appends a chunk holding a copy of tokens (nothing when n is 0). */
TB_EXTERN int tb_model_input_append(tb_model_input_t *mi, const int32_t *tokens, size_t n);
/* The number of tokens over every chunk. */
TB_EXTERN size_t tb_model_input_length(const tb_model_input_t *mi);
/* Copies every token into out (room for tb_model_input_length). */
TB_EXTERN void tb_model_input_tokens(const tb_model_input_t *mi, int32_t *out);
TB_EXTERN int tb_model_input_copy(tb_model_input_t *dst, const tb_model_input_t *src);
TB_EXTERN void tb_model_input_clear(tb_model_input_t *mi);

/* ------------------------------------------------------------ tensors */

#define TB_TENSOR_MAX_NDIM 4

typedef enum {
  TB_TENSOR_FLOAT32 = 1,
  TB_TENSOR_INT64 = 2
} tb_tensor_dtype_t;

/* A dense row-major tensor (TensorData) that owns its values: f32 when the
 * dtype is FLOAT32, i64 when INT64, the other NULL. */
typedef struct tb_tensor_data_s {
  tb_tensor_dtype_t dtype;
  int ndim;                              /* 1..TB_TENSOR_MAX_NDIM */
  int64_t shape[TB_TENSOR_MAX_NDIM];
  size_t numel;
  float *f32;
  int64_t *i64;
} tb_tensor_data_t;

/* Fills t with a copy of numel values.  shape (ndim entries) may be NULL
 * for a 1-D tensor of numel values; otherwise its product must be numel.
 * Returns 0, TB_ESHAPE (shape and numel disagree, ndim out of range),
 * TB_EINVAL (a value that is not finite) or TB_ENOMEM.  t is overwritten
 * without being cleared first. */
TB_EXTERN int tb_tensor_data_init_f32(tb_tensor_data_t *t, const float *data, size_t numel,
                                      const int64_t *shape, int ndim);
TB_EXTERN int tb_tensor_data_init_i64(tb_tensor_data_t *t, const int64_t *data, size_t numel,
                                      const int64_t *shape, int ndim);
TB_EXTERN int tb_tensor_data_copy(tb_tensor_data_t *dst, const tb_tensor_data_t *src);
TB_EXTERN void tb_tensor_data_clear(tb_tensor_data_t *t);

/* A tensor with a name (a loss input, or an output field like "logprobs"). */
typedef struct tb_named_tensor_s {
  char *name;
  tb_tensor_data_t tensor;
} tb_named_tensor_t;

/* ------------------------------------------------------------ datums */

/* One example for forward / forward_backward (Datum): the model input and
 * the loss function's inputs by name ("target_tokens" int64, "weights",
 * "logprobs", "advantages" float32, each with one value per input
 * position).  Zeroed is empty. */
typedef struct tb_train_datum_s {
  tb_model_input_t model_input;
  tb_named_tensor_t *loss_fn_inputs;
  size_t n_loss_fn_inputs;
} tb_train_datum_t;

/* Makes d an example whose model input is a copy of tokens, with no loss
 * inputs yet (releasing what d held). */
TB_EXTERN int tb_train_datum_init(tb_train_datum_t *d, const int32_t *tokens, size_t n);
/* The usual next-token example of a sequence of n >= 2 tokens: the model
 * reads tokens[0..n-2], "target_tokens" are tokens[1..n-1] and "weights"
 * are weights[1..n-1] (all 1 when weights is NULL), so position i is
 * trained to predict token i+1 with the weight of that token. */
TB_EXTERN int tb_train_datum_init_next_token(tb_train_datum_t *d, const int32_t *tokens,
                                             const float *weights, size_t n);
/* Sets (or replaces) a loss input with a copy of t. */
TB_EXTERN int tb_train_datum_set_input(tb_train_datum_t *d, const char *name,
                                       const tb_tensor_data_t *t);
/* 1-D shorthands: n float32 values, n int64 values, n token ids (stored as
 * int64, the dtype of target_tokens). */
TB_EXTERN int tb_train_datum_set_f32(tb_train_datum_t *d, const char *name, const float *v,
                                     size_t n);
TB_EXTERN int tb_train_datum_set_i64(tb_train_datum_t *d, const char *name, const int64_t *v,
                                     size_t n);
TB_EXTERN int tb_train_datum_set_tokens(tb_train_datum_t *d, const char *name,
                                        const int32_t *v, size_t n);
/* The loss input of that name, or NULL. */
TB_EXTERN const tb_tensor_data_t *tb_train_datum_input(const tb_train_datum_t *d,
                                                       const char *name);
TB_EXTERN int tb_train_datum_copy(tb_train_datum_t *dst, const tb_train_datum_t *src);
TB_EXTERN void tb_train_datum_clear(tb_train_datum_t *d);

/* ------------------------------------------------------------ parameters */

/* The LoRA adapter of a new training client (LoraConfig). */
typedef struct tb_lora_params_s {
  int rank;                      /* [32] */
  int has_seed;                  /* seed is sent only when set [0] */
  uint64_t seed;
  int train_mlp;                 /* [1] */
  int train_attn;                /* [1] */
  int train_unembed;             /* [1]; at least one of the three */
} tb_lora_params_t;
/* Fills p with the defaults in brackets above. */
TB_EXTERN void tb_lora_params_default(tb_lora_params_t *p);

/* An AdamW step (AdamParams); all six are sent. */
typedef struct tb_adamw_params_s {
  double learning_rate;          /* [1e-4] */
  double beta1;                  /* [0.9] */
  double beta2;                  /* [0.95] */
  double eps;                    /* [1e-12] */
  double weight_decay;           /* decoupled [0] */
  double grad_clip_norm;         /* 0: no clipping [0] */
} tb_adamw_params_t;
/* Fills p with the defaults in brackets above. */
TB_EXTERN void tb_adamw_params_default(tb_adamw_params_t *p);

/* How to sample (SamplingParams).  Stop on strings or on token ids, not
 * both. */
typedef struct tb_sample_params_s {
  int64_t max_tokens;            /* < 0: the server's default [-1] */
  int has_seed;                  /* [0] */
  uint64_t seed;
  double temperature;            /* 0 is greedy [1.0] */
  int64_t top_k;                 /* -1: no limit [-1] */
  double top_p;                  /* in (0, 1] [1.0] */
  const char *const *stop_strings;
  size_t n_stop_strings;
  const int32_t *stop_tokens;
  size_t n_stop_tokens;
} tb_sample_params_t;
/* Fills p with the defaults in brackets above. */
TB_EXTERN void tb_sample_params_default(tb_sample_params_t *p);

/* A loss function's extra numbers (loss_fn_config), e.g.
 * {"clip_low_threshold", 0.8} for ppo. */
typedef struct tb_loss_fn_config_entry_s {
  const char *name;
  double value;
} tb_loss_fn_config_entry_t;

/* ------------------------------------------------------------ results */

/* A named number.  Names of forward_backward metrics end in their
 * reduction: "loss:sum", "tokens:mean", ... */
typedef struct tb_metric_s {
  char *name;
  double value;
} tb_metric_t;

/* The outputs of one datum (e.g. "logprobs", float32 of its input length). */
typedef struct tb_loss_fn_output_s {
  tb_named_tensor_t *fields;
  size_t n_fields;
} tb_loss_fn_output_t;

/* The result of forward and forward_backward (ForwardBackwardOutput):
 * outputs in input datum order, metrics combined over every chunk. */
typedef struct tb_forward_backward_output_s {
  char *loss_fn_output_type;
  tb_loss_fn_output_t *outputs;
  size_t n_outputs;
  tb_metric_t *metrics;
  size_t n_metrics;
} tb_forward_backward_output_t;
TB_EXTERN extern const tb_result_type_t tb_result_forward_backward_output;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_forward_backward_output_free(tb_forward_backward_output_t *o);
/* The output tensor `name` of datum i, or NULL. */
TB_EXTERN const tb_tensor_data_t *tb_forward_backward_output_tensor(
    const tb_forward_backward_output_t *o, size_t i, const char *name);
/* Sets *value to the metric `name` and returns 1, or returns 0. */
TB_EXTERN int tb_forward_backward_output_metric(const tb_forward_backward_output_t *o,
                                                const char *name, double *value);

/* The result of optim_step: the optimizer's metrics (may be none). */
typedef struct tb_optim_step_output_s {
  tb_metric_t *metrics;
  size_t n_metrics;
} tb_optim_step_output_t;
TB_EXTERN extern const tb_result_type_t tb_result_optim_step_output;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_optim_step_output_free(tb_optim_step_output_t *o);

typedef enum {
  TB_SAMPLE_STOP_REASON_STOP = 0,   /* a stop string or token, or the end */
  TB_SAMPLE_STOP_REASON_LENGTH = 1  /* max_tokens reached */
} tb_sample_stop_reason_t;

/* "stop" or "length". */
TB_EXTERN const char *tb_sample_stop_reason_name(tb_sample_stop_reason_t r);

typedef struct tb_sampled_sequence_s {
  tb_sample_stop_reason_t stop_reason;
  int32_t *tokens;
  size_t n_tokens;
  float *logprobs;               /* n_tokens values, or NULL */
} tb_sampled_sequence_t;

/* The result of sample (SampleResponse). */
typedef struct tb_sample_response_s {
  tb_sampled_sequence_t *sequences;
  size_t n_sequences;
  /* One per prompt position when asked for; NaN where there is none (the
   * first position).  NULL when not asked for. */
  float *prompt_logprobs;
  size_t n_prompt_logprobs;
  /* The top-k prompt log-probs, (topk_rows, topk_k) row-major, when asked
   * for; an empty cell has id 0 and logprob TB_SAMPLE_TOPK_EMPTY. */
  int32_t *topk_ids;
  float *topk_logprobs;
  size_t topk_rows;
  size_t topk_k;
  int64_t prompt_cache_hit_tokens;
} tb_sample_response_t;
#define TB_SAMPLE_TOPK_EMPTY (-99999.0f)
TB_EXTERN extern const tb_result_type_t tb_result_sample_response;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_sample_response_free(tb_sample_response_t *r);

/* The result of compute_logprobs: one log-prob per prompt token, NaN where
 * there is none (the first). */
typedef struct tb_logprobs_s {
  float *values;
  size_t n;
} tb_logprobs_t;
TB_EXTERN extern const tb_result_type_t tb_result_logprobs;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_logprobs_free(tb_logprobs_t *l);

/* The result of get_info (GetInfoResponse).  Strings may be NULL when the
 * server gave none. */
typedef struct tb_model_info_s {
  char *model_id;
  char *model_name;              /* the base model */
  char *arch;
  char *tokenizer_id;            /* cut at its first ':', as the SDK does */
  int is_lora;
  int64_t lora_rank;             /* -1 when not given */
} tb_model_info_t;
TB_EXTERN extern const tb_result_type_t tb_result_model_info;
/* Releases the result and everything it holds; NULL is a no-op. */
TB_EXTERN void tb_model_info_free(tb_model_info_t *info);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_TYPES_H */

/*
 * The SamplingClient: samples from a base model or from saved sampler
 * weights, through one sampling session on the server.
 *
 * A handle on the ServiceClient's loop whose memory the caller owns, set
 * up by tb_service_client_create_sampling_client (or by the training
 * client's save_weights_and_get_sampling_client / create_sampling_client),
 * which returns at once with a future that completes when the sampling
 * session exists; samples asked for before that wait for it.  Close it
 * with tb_sampling_client_close, before the ServiceClient.
 *
 * Flow control, as the Tinker SDK does it: at most max_in_flight sample
 * submissions are on the wire at once (default 400; results are polled
 * without limit).  A 429 answer to a submission pauses every submission
 * of the client for 1 s (5 s when the prompt is over 128 KiB at the SDK's
 * 10 bytes per token) and the request is sent again with the same
 * seq_id.  A sample whose server-side future expired (HTTP 410 while
 * polling) is submitted again, under a new seq_id.  Other failures of a
 * submission are retried as every submission is (tinkerbell/client.h).
 *
 * Every operation returns a future and has a _sync twin (see
 * tinkerbell/training_client.h for the conventions).
 */
#ifndef TINKERBELL_SAMPLING_CLIENT_H
#define TINKERBELL_SAMPLING_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"
#include "tinkerbell/future.h"
#include "tinkerbell/service_client.h"
#include "tinkerbell/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TB_SAMPLING_DEFAULT_MAX_IN_FLIGHT 400

typedef struct tb_sampling_client_s tb_sampling_client_t;
typedef void (*tb_sampling_client_close_cb)(tb_sampling_client_t *sc);

struct tb_sampling_client_s {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *loop;
  tb_service_client_t *service;
  const char *sampling_session_id;  /* NULL until the session exists */
  const char *model_path;           /* as given, or NULL */
  const char *base_model;           /* as given, or NULL */
  /* private */
  struct tb__sampling_client_s *impl_;
  tb_sampling_client_close_cb close_cb_;
};

/* POST /api/v1/create_sampling_session for saved sampler weights
 * (model_path, "tinker://...") or a base model (base_model); one of the
 * two must be given.  The future's result is the sampling session id
 * (tb_result_string).  Returns 0, TB_EINVAL, TB_ECLOSING or TB_ENOMEM;
 * samp is then not set up. */
TB_EXTERN int tb_service_client_create_sampling_client(tb_service_client_t *sc,
                                                       tb_sampling_client_t *samp,
                                                       const char *model_path,
                                                       const char *base_model,
                                                       tb_future_t **out);
/* The blocking twin; samp is set up (close it) unless an error came
 * before any request (samp->impl_ NULL). */
TB_EXTERN int tb_service_client_create_sampling_client_sync(tb_service_client_t *sc,
                                                            tb_sampling_client_t *samp,
                                                            const char *model_path,
                                                            const char *base_model,
                                                            tb_error_t *err);

/* Sets the limit of sample submissions in flight (n >= 1). */
TB_EXTERN void tb_sampling_client_set_max_in_flight(tb_sampling_client_t *samp, size_t n);

/* Closes the client: samples in flight fail with TB_ECANCELED, and
 * close_cb (may be NULL) runs once nothing of it is left, never from
 * inside this call. */
TB_EXTERN void tb_sampling_client_close(tb_sampling_client_t *samp,
                                        tb_sampling_client_close_cb close_cb);

/* POST /api/v1/asample: num_samples (>= 1) continuations of prompt with
 * params (NULL: tb_sample_params_default), and, when asked, the prompt's
 * log-probs and its top-k log-probs per position.  The future's result is
 * a tb_sample_response_t (tb_result_sample_response).  TB_EINVAL for an
 * empty prompt or bad parameters (err-less: see the _sync twin for the
 * message). */
TB_EXTERN int tb_sampling_client_sample(tb_sampling_client_t *samp,
                                        const tb_model_input_t *prompt, size_t num_samples,
                                        const tb_sample_params_t *params,
                                        int include_prompt_logprobs,
                                        size_t topk_prompt_logprobs, tb_future_t **out);
TB_EXTERN int tb_sampling_client_sample_sync(tb_sampling_client_t *samp,
                                             const tb_model_input_t *prompt,
                                             size_t num_samples,
                                             const tb_sample_params_t *params,
                                             int include_prompt_logprobs,
                                             size_t topk_prompt_logprobs,
                                             tb_sample_response_t **result, tb_error_t *err);

/* The log-prob of each prompt token under the model (one sample of one
 * token with prompt log-probs).  Result: tb_logprobs_t (tb_result_logprobs),
 * NaN at the first position. */
TB_EXTERN int tb_sampling_client_compute_logprobs(tb_sampling_client_t *samp,
                                                  const tb_model_input_t *prompt,
                                                  tb_future_t **out);
TB_EXTERN int tb_sampling_client_compute_logprobs_sync(tb_sampling_client_t *samp,
                                                       const tb_model_input_t *prompt,
                                                       tb_logprobs_t **result, tb_error_t *err);

/* GET /api/v1/samplers/{id}: the base model the session samples from.
 * Result: its name (tb_result_string). */
TB_EXTERN int tb_sampling_client_get_base_model(tb_sampling_client_t *samp, tb_future_t **out);
TB_EXTERN int tb_sampling_client_get_base_model_sync(tb_sampling_client_t *samp,
                                                     char **base_model, tb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_SAMPLING_CLIENT_H */

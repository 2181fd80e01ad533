/*
 * The TrainingClient: one LoRA model on the server, trained by forward,
 * forward_backward and optim_step, saved and loaded as checkpoints, and
 * turned into sampling clients.
 *
 * A handle on the ServiceClient's loop whose memory the caller owns.  It
 * is set up by one of the creation functions below, which return at once
 * with the client usable and a future that completes when the model
 * exists; operations called before that wait for it (and fail with the
 * creation's error if it fails).  Freeing (or cancelling) the creation
 * future before it completes cancels the creation.  Close the client with
 * tb_training_client_close in every case, before the ServiceClient.
 *
 *   tb_training_client_t tc;
 *   tb_future_t *created, *step, *opt;
 *   tb_service_client_create_lora_training_client(&sc, &tc, "base", NULL, &created);
 *   tb_training_client_forward_backward(&tc, data, n, "cross_entropy", NULL, 0, &step);
 *   tb_training_client_optim_step(&tc, &adam, &opt);   // sent right after, not
 *                                                      // after step completes
 *
 * Order.  Every training operation takes its seq_id(s) when it is called,
 * so the server runs them in the order of the calls.  Submissions leave
 * in that order without waiting for each other's answers (the server
 * holds a seq_id that arrives before an earlier one; only the custom loss
 * keeps its turn from its forward pass to its backward pass); results are
 * polled concurrently, so a pipelined caller has step k+1 submitted while
 * step k runs, even with a server far away.  forward / forward_backward data
 * is split into chunks of at most 1024 datums and 5,000,000 estimated
 * bytes (one seq_id each); the chunks of one call are sent together, the
 * first one last, and their results are joined in input order with the
 * metrics reduced by the suffix of their names ("loss:sum" adds up,
 * ":mean" is weighted by datums, ...).
 *
 * A submission that fails (after its retries) or is cancelled leaves a
 * gap in the server's sequence that no later operation could pass, so the
 * client then stops: every later training operation fails with TB_EBUSY,
 * category user, naming the seq_id that was lost -- those already sent
 * have their polls stopped, the others are never sent.  Create a new
 * client (from a saved state) to go on.
 *
 * Requests are sent as protobuf (the Tinker SDK 0.25 wire), or as JSON
 * after tb_training_client_use_json(tc, 1); results are read in either
 * format.
 *
 * Every operation returns a future (tinkerbell/future.h) and has a _sync
 * twin that waits for it within the config's wait_timeout_ms; a wait that
 * runs out cancels the operation (see above for what that means to the
 * order).  A _sync function called inside a callback of the loop returns
 * TB_ENESTED and makes nothing.  A function that returns an error makes
 * no future.  The data given to an operation is copied: it may be
 * released as soon as the call returns.
 */
#ifndef TINKERBELL_TRAINING_CLIENT_H
#define TINKERBELL_TRAINING_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"
#include "tinkerbell/future.h"
#include "tinkerbell/sampling_client.h"
#include "tinkerbell/service_client.h"
#include "tinkerbell/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tb_training_client_s tb_training_client_t;
typedef void (*tb_training_client_close_cb)(tb_training_client_t *tc);

struct tb_training_client_s {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *loop;
  tb_service_client_t *service;
  const char *model_id;           /* NULL until the model exists */
  const char *base_model;         /* NULL until known */
  /* private */
  struct tb__training_client_s *impl_;
  tb_training_client_close_cb close_cb_;
};

/* ------------------------------------------------------------ creation */

/* POST /api/v1/create_model: a new LoRA model on base_model, with lora
 * (NULL: tb_lora_params_default).  The future's result is the model id
 * (tb_result_string).  Returns 0, TB_EINVAL (no base model, a rank < 1, no
 * train_* flag set), TB_ECLOSING, TB_ENOMEM; tc is then not set up. */
TB_EXTERN int tb_service_client_create_lora_training_client(tb_service_client_t *sc,
                                                            tb_training_client_t *tc,
                                                            const char *base_model,
                                                            const tb_lora_params_t *lora,
                                                            tb_future_t **out);
/* The blocking twin: 0 once the model exists, else the failure (err).
 * tc is set up whenever the non-blocking form would have set it up, so
 * close it even after a failure (but not after an error before any
 * request: TB_EINVAL etc. with tc->impl_ NULL). */
TB_EXTERN int tb_service_client_create_lora_training_client_sync(
    tb_service_client_t *sc, tb_training_client_t *tc, const char *base_model,
    const tb_lora_params_t *lora, tb_error_t *err);

/* A model made from a checkpoint saved by save_state
 * ("tinker://<model_id>/weights/<name>"), with its LoRA shape and base:
 * one create-via-load request.  The optimizer state is restored too by
 * the _with_optimizer form.  The future's result is the model id. */
TB_EXTERN int tb_service_client_create_training_client_from_state(tb_service_client_t *sc,
                                                                  tb_training_client_t *tc,
                                                                  const char *path,
                                                                  tb_future_t **out);
TB_EXTERN int tb_service_client_create_training_client_from_state_sync(
    tb_service_client_t *sc, tb_training_client_t *tc, const char *path, tb_error_t *err);
TB_EXTERN int tb_service_client_create_training_client_from_state_with_optimizer(
    tb_service_client_t *sc, tb_training_client_t *tc, const char *path, tb_future_t **out);
TB_EXTERN int tb_service_client_create_training_client_from_state_with_optimizer_sync(
    tb_service_client_t *sc, tb_training_client_t *tc, const char *path, tb_error_t *err);

/* Requests as JSON (on = 1) or protobuf (on = 0, the default) from the
 * next call on. */
TB_EXTERN void tb_training_client_use_json(tb_training_client_t *tc, int on);

/* Closes the client: operations in flight fail with TB_ECANCELED (their
 * callbacks run), and close_cb (may be NULL) runs once nothing of the
 * client is left, never from inside this call.  The model stays on the
 * server (see tb_training_client_unload). */
TB_EXTERN void tb_training_client_close(tb_training_client_t *tc,
                                        tb_training_client_close_cb close_cb);

/* ------------------------------------------------------------ training */

/* Forward only: the loss function's outputs (per-datum "logprobs") and
 * metrics, no gradient.  loss_fn: "cross_entropy", "importance_sampling",
 * "ppo", "cispo", "dro"; config (may be NULL) its loss_fn_config.  The
 * future's result is a tb_forward_backward_output_t
 * (tb_result_forward_backward_output).  TB_EINVAL for no data or a datum
 * with no model input. */
TB_EXTERN int tb_training_client_forward(tb_training_client_t *tc, const tb_train_datum_t *data,
                                         size_t n, const char *loss_fn,
                                         const tb_loss_fn_config_entry_t *config,
                                         size_t n_config, tb_future_t **out);
TB_EXTERN int tb_training_client_forward_sync(tb_training_client_t *tc,
                                              const tb_train_datum_t *data, size_t n,
                                              const char *loss_fn,
                                              const tb_loss_fn_config_entry_t *config,
                                              size_t n_config,
                                              tb_forward_backward_output_t **result,
                                              tb_error_t *err);

/* Forward and backward: gradients accumulate on the server until the next
 * optim_step.  Result as for forward. */
TB_EXTERN int tb_training_client_forward_backward(tb_training_client_t *tc,
                                                  const tb_train_datum_t *data, size_t n,
                                                  const char *loss_fn,
                                                  const tb_loss_fn_config_entry_t *config,
                                                  size_t n_config, tb_future_t **out);
TB_EXTERN int tb_training_client_forward_backward_sync(
    tb_training_client_t *tc, const tb_train_datum_t *data, size_t n, const char *loss_fn,
    const tb_loss_fn_config_entry_t *config, size_t n_config,
    tb_forward_backward_output_t **result, tb_error_t *err);

/* ------------------------------------------------------------ custom loss */

/* What a custom loss function sees and fills (forward_backward_custom). */
typedef struct tb_custom_loss_s {
  void *data;                     /* the caller's, as given */
  const tb_train_datum_t *datums; /* the data, as given */
  size_t n;
  /* Per datum: the model's log-probs of its target tokens (n_logprobs[i]
   * values) and, zeroed, room for dLoss/dlogprob of each. */
  const float *const *logprobs;
  const size_t *n_logprobs;
  float *const *grads;
  /* Filled by the function: the loss (reported as the metric "loss:sum")
   * and any metrics of its own (tb_custom_loss_add_metric). */
  double loss;
  /* private */
  tb_metric_t *metrics_;
  size_t n_metrics_;
  char *message_;
} tb_custom_loss_t;

/* Computes the loss and its gradient with respect to the log-probs.
 * Returns 0, or a negative code after tb_custom_loss_fail: the operation
 * then fails with it (category user). */
typedef int (*tb_custom_loss_fn)(tb_custom_loss_t *ctx);

/* Adds a metric to the result ("name:reduction"); 0 or TB_ENOMEM. */
TB_EXTERN int tb_custom_loss_add_metric(tb_custom_loss_t *ctx, const char *name, double value);
/* Records why the function fails; returns code. */
TB_EXTERN int tb_custom_loss_fail(tb_custom_loss_t *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A loss computed by fn on the client, as the SDK does it: a forward pass
 * (cross_entropy, so the outputs are the log-probs of "target_tokens"),
 * then fn on those log-probs, then a forward_backward whose cross_entropy
 * weights are -dLoss/dlogprob, so the server's gradient is that of fn's
 * loss.  Datums may carry only "target_tokens" and "weights" (a datum
 * without weights is given zero weights for the forward pass).  Both
 * passes take their seq_ids at this call, so later operations wait for
 * fn to have run.  The result is the backward pass's output with "loss:sum"
 * set to fn's loss and fn's metrics added. */
TB_EXTERN int tb_training_client_forward_backward_custom(tb_training_client_t *tc,
                                                         const tb_train_datum_t *data,
                                                         size_t n, tb_custom_loss_fn fn,
                                                         void *fn_data, tb_future_t **out);
TB_EXTERN int tb_training_client_forward_backward_custom_sync(
    tb_training_client_t *tc, const tb_train_datum_t *data, size_t n, tb_custom_loss_fn fn,
    void *fn_data, tb_forward_backward_output_t **result, tb_error_t *err);

/* ------------------------------------------------------------ optimizer */

/* An AdamW step over the accumulated gradients (params NULL: the
 * defaults).  Result: tb_optim_step_output_t (tb_result_optim_step_output). */
TB_EXTERN int tb_training_client_optim_step(tb_training_client_t *tc,
                                            const tb_adamw_params_t *params, tb_future_t **out);
TB_EXTERN int tb_training_client_optim_step_sync(tb_training_client_t *tc,
                                                 const tb_adamw_params_t *params,
                                                 tb_optim_step_output_t **result,
                                                 tb_error_t *err);

/* ------------------------------------------------------------ checkpoints */

/* Saves the weights and optimizer state as `name` (letters, digits, '.',
 * '_', '-'); ttl_seconds 0: kept.  Result: the tinker:// path
 * (tb_result_string). */
TB_EXTERN int tb_training_client_save_state(tb_training_client_t *tc, const char *name,
                                            int64_t ttl_seconds, tb_future_t **out);
TB_EXTERN int tb_training_client_save_state_sync(tb_training_client_t *tc, const char *name,
                                                 int64_t ttl_seconds, char **path,
                                                 tb_error_t *err);

/* Loads the weights of a saved state (path: tinker://...), keeping the
 * optimizer state as it is; the _with_optimizer form restores it too.
 * Result: the path (tb_result_string). */
TB_EXTERN int tb_training_client_load_state(tb_training_client_t *tc, const char *path,
                                            tb_future_t **out);
TB_EXTERN int tb_training_client_load_state_sync(tb_training_client_t *tc, const char *path,
                                                 tb_error_t *err);
TB_EXTERN int tb_training_client_load_state_with_optimizer(tb_training_client_t *tc,
                                                           const char *path,
                                                           tb_future_t **out);
TB_EXTERN int tb_training_client_load_state_with_optimizer_sync(tb_training_client_t *tc,
                                                                const char *path,
                                                                tb_error_t *err);

/* Saves the weights for sampling as `name`.  Result: the tinker://
 * .../sampler_weights/<name> path (tb_result_string). */
TB_EXTERN int tb_training_client_save_weights_for_sampler(tb_training_client_t *tc,
                                                          const char *name,
                                                          int64_t ttl_seconds,
                                                          tb_future_t **out);
TB_EXTERN int tb_training_client_save_weights_for_sampler_sync(tb_training_client_t *tc,
                                                               const char *name,
                                                               int64_t ttl_seconds,
                                                               char **path, tb_error_t *err);

/* Saves the current weights (unnamed, ephemeral) and sets up sc as a
 * sampling client of them, in one request.  Result: the sampling session
 * id (tb_result_string).  On success sc is set up as by
 * tb_service_client_create_sampling_client (close it); on an error return
 * it is not. */
TB_EXTERN int tb_training_client_save_weights_and_get_sampling_client(tb_training_client_t *tc,
                                                                      tb_sampling_client_t *sc,
                                                                      tb_future_t **out);
TB_EXTERN int tb_training_client_save_weights_and_get_sampling_client_sync(
    tb_training_client_t *tc, tb_sampling_client_t *sc, tb_error_t *err);

/* A sampling client of saved sampler weights (model_path), like
 * tb_service_client_create_sampling_client on tc's ServiceClient. */
TB_EXTERN int tb_training_client_create_sampling_client(tb_training_client_t *tc,
                                                        const char *model_path,
                                                        tb_sampling_client_t *sc,
                                                        tb_future_t **out);
TB_EXTERN int tb_training_client_create_sampling_client_sync(tb_training_client_t *tc,
                                                             const char *model_path,
                                                             tb_sampling_client_t *sc,
                                                             tb_error_t *err);

/* ------------------------------------------------------------ the model */

/* POST /api/v1/get_info: the model's base, LoRA rank and tokenizer.
 * Result: tb_model_info_t (tb_result_model_info). */
TB_EXTERN int tb_training_client_get_info(tb_training_client_t *tc, tb_future_t **out);
TB_EXTERN int tb_training_client_get_info_sync(tb_training_client_t *tc,
                                               tb_model_info_t **info, tb_error_t *err);

/* Unloads the model from the server (its checkpoints stay).  Later
 * operations fail on the server.  Result: none. */
TB_EXTERN int tb_training_client_unload(tb_training_client_t *tc, tb_future_t **out);
TB_EXTERN int tb_training_client_unload_sync(tb_training_client_t *tc, tb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_TRAINING_CLIENT_H */

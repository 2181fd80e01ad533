/*
 * What the training, sampling and REST clients share: the blocking wait
 * of their _sync twins, and the internal entry points by which a
 * training client sets up a sampling client.
 */
#ifndef TB_CLIENT_CLIENTS_H
#define TB_CLIENT_CLIENTS_H

#include "client/internal.h"
#include "tinkerbell/sampling_client.h"

/* Waits for f within the config's wait_timeout_ms, takes its result of
 * type into *result (freed when result is NULL), or copies its failure
 * into err; frees f.  Returns 0 or the failure's code. */
int tb__client_wait_take(tb__rt_t *rt, tb_future_t *f, const tb_result_type_t *type,
                         void **result, tb_error_t *err);

/* TB_ENESTED, with err saying so, when a blocking wait on sc's loop would
 * nest (a _sync function called from a callback of that loop); else 0.
 * Checked before the operation is made: a sequenced training operation
 * that were made and then dropped would stop its client. */
int tb__client_check_nested(tb_service_client_t *sc, tb_error_t *err);

/* For a _sync twin whose asynchronous form returned rc before making a
 * future: fills err and returns rc. */
int tb__client_refused(tb_error_t *err, int rc, const char *what);

/* A sampling client set up now whose session id comes later: by
 * tb__sampling_client_ready (id, or err when it failed).  The training
 * client uses it for save_weights_and_get_sampling_client. */
int tb__sampling_client_init_pending(tb_service_client_t *svc, tb_sampling_client_t *samp,
                                     const char *model_path, const char *base_model);
void tb__sampling_client_ready(tb_sampling_client_t *samp, const char *session_id,
                               const tb_error_t *err);
/* Undoes tb__sampling_client_init_pending at once, before anything was
 * asked of the client. */
void tb__sampling_client_discard(tb_sampling_client_t *samp);

#endif /* TB_CLIENT_CLIENTS_H */

/*
 * The scheduler of the training part (sched.c): the registry of models,
 * each with its queue of ops in seq_id order, the creates held behind
 * their base model and their user's model limit, and what a pending
 * future reports of its place.
 */
#ifndef TB_SERVER_SCHED_H
#define TB_SERVER_SCHED_H

#include "server/training.h"

/* The caller's model, or NULL after answering 404.  Models of the
 * Tinkerbell dialect (no session) are not the Tinker dialect's to see. */
tb__tmodel_t *tb__tmodel_find(tb__http_request_t *req, tb_slice_t id);
/* Frees a model that is no longer listed; what waits in its queue fails. */
void tb__model_free(tb__tmodel_t *m);
/* Takes m off the list; counted: it was counted in its owner's n_models. */
void tb__model_unlink(tb__training_t *tr, tb__tmodel_t *m, int counted);
/* Registers model id (malloc'd; the model's on success) of owner, in
 * session s or, for the Tinkerbell dialect, in none, and holds its create
 * op (with op->then, if any) behind the base model's load and the user's
 * model limit; tb__start_held starts it.  lora NULL: read from op->then's
 * checkpoint first.  NULL on ENOMEM (nothing changed). */
tb__tmodel_t *tb__model_register(tb__training_t *tr, tb__top_t *op, tb__user_t *owner,
                                 tb__session_t *s, tb__tbase_t *base, char *id,
                                 const tb__lora_config_t *lora);
/* Starts the held creates that may run now (may free models whose
 * creation fails at once). */
void tb__start_held(tb__training_t *tr);

/* Takes op (of op->model; op->seq, or -1 for "after everything
 * accepted") in seq_id order and answers the request: the future of an
 * earlier op with the same seq_id, 400 for a seq_id out of the window,
 * else op's new future. */
void tb__submit_ordered(tb__http_request_t *req, tb__top_t *op);
/* The same, but it answers only its refusals: 0 with the id of the
 * future that answers op (its own, or an earlier one's for a repeated
 * seq_id) copied to id, else the request was answered. */
int tb__submit_ordered_id(tb__http_request_t *req, tb__top_t *op, char id[TB__FUTURE_ID_MAX]);
/* Starts (tr->start) the waiting ops of m that are next in order. */
void tb__sched_drain(tb__tmodel_t *m);
/* The futures' position hook: the jobs a pending op waits behind. */
size_t tb__sched_position(const tb__future_t *f);
/* The engine's capacity hook (job.on_capacity): the client's poll says
 * paused_capacity until the job's work starts. */
void tb__sched_on_capacity(tb__engine_job_t *job, int waiting);

#endif /* TB_SERVER_SCHED_H */

/*
 * Where the training part tells the store (store.h) what its jobs did: a
 * model created is a training run, a save is a checkpoint, any other
 * success is the run's last request, and a training step or load that
 * failed for a server reason marks the run corrupted (its weights may be
 * half-updated).  training.c calls tb__store_job_done once per finished
 * job, before it looks at the result itself.
 *
 * Only the Tinker dialect's models are training runs: they live in a
 * session and save under tinker://<run>/...  The Tinkerbell dialect's
 * adapters (no session; names chosen per user, checkpoints under
 * tinkerbell:// paths in their own directories) are not recorded.
 */
#include "server/store.h"

#include "server/training.h"

void tb__store_job_done(const struct tb__top_s *op, int status) {
  const tb__tmodel_t *m = op->model;
  tb__store_t *st = op->tr->srv->store;
  /* Models of the Tinkerbell dialect (no session) are no Tinker training
   * runs: their names are their users' own, not unique ids. */
  if (st == NULL || m == NULL || m->session == NULL)
    return;
  if (status != 0) {
    int step = op->type == TB__OP_FORWARD_BACKWARD || op->type == TB__OP_OPTIM ||
               op->type == TB__OP_LOAD;
    if (step && !op->tr->closing && status != TB_ECANCELED &&
        op->job.error.category != TB_CATEGORY_USER)
      tb__store_run_corrupted(st, m->id);
    return;
  }
  switch (op->type) {
  case TB__OP_CREATE: {
    tb__store_run_t run = {
      .id = m->id,
      .owner = m->owner->name,
      .session_id = m->session->id,
      .base_model = m->base->name,
      .lora_rank = m->lora.rank,
      .seed = m->lora.seed,
      .train_attn = m->lora.train_attn,
      .train_mlp = m->lora.train_mlp,
      .train_unembed = m->lora.train_unembed,
    };
    tb__store_run_created(st, &run);
    break;
  }
  case TB__OP_SAVE:
  case TB__OP_SAVE_SAMPLER:
    if (op->tinker_path != NULL && op->dir != NULL)
      tb__store_checkpoint_saved(st, m->owner->name, m->id, op->tinker_path, op->dir,
                                 op->ttl_seconds);
    break;
  default:
    tb__store_run_touched(st, m->id);
    break;
  }
}

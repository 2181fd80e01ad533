/*
 * What engine.c (scheduling, adapters), engine_models.c (the model
 * registry) and engine_jobs.c (the work the threadpool runs) share.  Not
 * for use outside src/engine/.
 *
 * Threads: everything here is owned by the loop thread, except while a
 * work item runs, when its work function may touch its own item, its job,
 * the job's adapter LoRA state (the adapter's FIFO guarantees no other job
 * of the adapter runs) and the read-only base weights.
 */
#ifndef TB_ENGINE_ENGINE_INTERNAL_H
#define TB_ENGINE_ENGINE_INTERNAL_H

#include "engine/engine.h"

/* One uv_work_t of a job.  A batch job has one per shard plus, when it
 * has several shards and a backward pass, as many that then sum their
 * gradients, each over one piece of the flat buffers.  An optimizer step
 * has one item per piece, run twice: for the norm, then for the update. */
struct tb__engine_shard_s {
  uv_work_t req;
  tb__engine_job_t *job;
  void (*work)(tb__engine_shard_t *it);
  tb__engine_shard_t *wait_next;  /* the engine's queue of waiting items */
  tb__llama_ws_t *ws;             /* lent by the engine while queued */
  int needs_ws;
  int queued;                    /* handed to uv_queue_work */
  int skip;                      /* non-zero: do not run, complete with this */
  int status;
  tb_error_t error;
  /* shards of a batch */
  size_t d0, d1;                 /* datums [d0, d1) */
  size_t out0;                   /* first log-prob of d0 in job->logprobs */
  float *grads;                  /* own gradient buffer (several shards),
                                  * lent by the adapter */
  double loss;
  int apply;                     /* the sum: every shard succeeded */
  /* the sum and the optimizer */
  size_t p0, p1;                 /* the piece [p0, p1) of the adapter's
                                  * flat buffers */
  double sumsq;                  /* the optimizer: sum of squared grads */
};

struct tb__engine_model_s {
  tb__engine_t *engine;
  tb__engine_model_t *next;       /* registry */
  char *name;
  char *source;                  /* "base" or the directory */
  tb__weights_t weights;
  size_t refs;
  int loaded;
  tb__engine_job_t *waiters;      /* LOAD_MODEL jobs until it is loaded */
  uv_work_t free_req;
};

struct tb__engine_adapter_s {
  tb__engine_t *engine;
  tb__engine_adapter_t *next;
  tb__engine_model_t *model;      /* one reference */
  tb__lora_t lora;
  tb__engine_job_t *head, *tail;  /* FIFO; head is the running job */
  int removing;
  int kicking;                   /* inside adapter_kick */
  /* Gradient buffers of the shards of a forward_backward (shard_slots of
   * lora.num_params floats), kept across jobs: allocating and freeing
   * tens of megabytes per step costs page faults and TLB shootdowns.
   * Only the FIFO's head uses them. */
  float *shard_grads;
  size_t shard_slots;
};

/* The scheduler (engine.c), for the registry's LOAD_MODEL jobs. */
/* Resets a job for a new submission, keeping the caller's data. */
int tb__engine_job_begin(tb__engine_job_t *job, tb__engine_t *e,
                         tb__engine_job_type_t type, tb__engine_job_cb cb);
/* Allocates n work items running `work`. */
int tb__engine_items_alloc(tb__engine_job_t *job, size_t n,
                           void (*work)(tb__engine_shard_t *), int needs_ws);
/* Starts the work of a job; on error nothing was queued. */
int tb__engine_job_start(tb__engine_job_t *job);
void tb__engine_item_submit(tb__engine_t *e, tb__engine_shard_t *it);
void tb__engine_active_add(tb__engine_t *e, tb__engine_job_t *job);
void tb__engine_job_finish(tb__engine_job_t *job, int status);
/* Queues the close once nothing runs any more. */
void tb__engine_maybe_close(tb__engine_t *e);

/* The registry (engine_models.c), for completion and close. */
/* A LOAD_MODEL job's work finished: it and every job waiting for the same
 * model complete. */
void tb__engine_load_model_done(tb__engine_job_t *job, int status);
/* Frees a model's struct (its weights are freed apart). */
void tb__engine_model_free_struct(tb__engine_model_t *m);

/* Work functions (engine_jobs.c); each sets it->status and, on failure,
 * it->error. */
void tb__engine_work_load_model(tb__engine_shard_t *it);
void tb__engine_work_create(tb__engine_shard_t *it);
void tb__engine_work_remove(tb__engine_shard_t *it);
void tb__engine_work_shard(tb__engine_shard_t *it);
void tb__engine_work_sum(tb__engine_shard_t *it);
void tb__engine_work_optim_norm(tb__engine_shard_t *it);
void tb__engine_work_optim_update(tb__engine_shard_t *it);
void tb__engine_work_sample(tb__engine_shard_t *it);
void tb__engine_work_save(tb__engine_shard_t *it);
void tb__engine_work_load(tb__engine_shard_t *it);

/* Cheap whole-batch checks for the loop thread (loss function, its
 * config, the number of targets per position): 0 or TB_EINVAL with the
 * reason in err. */
int tb__engine_batch_precheck(const tb__batch_t *b, tb_error_t *err);

/* Gives an error that carries only a code a message and a category. */
void tb__engine_error_default(tb_error_t *err, int code);

#endif /* TB_ENGINE_ENGINE_INTERNAL_H */

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

#include "engine/decode.h"
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

/* A model's decoder and the sample jobs it serves (engine_sample.c). */
typedef struct tb__engine_decoder_s {
  tb__dec_t dec;
  tb__engine_model_t *model;
  int open;                       /* opened; 0 while opening */
  int closing;
  int destroy;                    /* the model goes once it has closed */
  /* Sample jobs not yet admitted, in submission order: waiting for the
   * open, or for room in the KV pool (the head got TB_EBUSY). */
  tb__engine_job_t *wait_head, *wait_tail;
  size_t running;                 /* admitted jobs not yet completed */
} tb__engine_decoder_t;

struct tb__engine_model_s {
  tb__engine_t *engine;
  tb__engine_model_t *next;       /* registry */
  char *name;
  char *source;                  /* "base" or the directory */
  tb__weights_t weights;
  size_t refs;
  int loaded;
  tb__engine_job_t *waiters;      /* LOAD_MODEL jobs until it is loaded */
  tb__engine_decoder_t *decoder;  /* from the first sample on, or NULL */
  uv_work_t free_req;
};

struct tb__engine_adapter_s {
  tb__engine_t *engine;
  tb__engine_adapter_t *next;
  tb__engine_model_t *model;      /* one reference */
  tb__lora_t lora;
  /* FIFO.  Its started jobs are a prefix: the head alone, or a run of
   * sample jobs, which read the weights together (engine.c). */
  tb__engine_job_t *head, *tail;
  /* The key its prefix blocks are cached under in the decoder: id is
   * unique in the engine, version counts the changes of its weights
   * (optimizer steps and loads). */
  uint64_t id, version;
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
/* Frees a job's work items. */
void tb__engine_release_items(tb__engine_job_t *job);

/* The split of a job into work items (engine_split.c); on error nothing
 * was queued. */
int tb__engine_start_batch(tb__engine_job_t *job);
int tb__engine_start_optim(tb__engine_job_t *job);
void tb__engine_item_submit(tb__engine_t *e, tb__engine_shard_t *it);
void tb__engine_active_add(tb__engine_t *e, tb__engine_job_t *job);
void tb__engine_job_finish(tb__engine_job_t *job, int status);
/* Queues the close once nothing runs any more. */
void tb__engine_maybe_close(tb__engine_t *e);
/* Starts waiting work items while there is room. */
void tb__engine_pump(tb__engine_t *e);
/* Completes a job with rc and err's message (moved from err) from the
 * loop's next turn, never from inside the caller. */
void tb__engine_job_fail_later(tb__engine_job_t *job, int rc, tb_error_t *err);

/* Sampling through the model's decoder (engine_sample.c). */
/* Starts a sample job: its sequence joins the decoder's batch when there
 * is room.  0, or an error with nothing started. */
int tb__engine_sample_start(tb__engine_job_t *job);
/* Cancels a sample job's sequence; the job completes TB_ECANCELED. */
void tb__engine_sample_cancel(tb__engine_job_t *job);
/* Threadpool slots the running decoders' steps use. */
size_t tb__engine_decode_items(const tb__engine_t *e);
/* Closes the model's decoder, cancelling its jobs; the model is freed
 * afterwards when destroy is set.  0 when there was none. */
int tb__engine_decoder_close(tb__engine_model_t *m, int destroy);
/* Frees the weights of a model whose decoder is gone (engine_models.c). */
void tb__engine_model_destroy_now(tb__engine_model_t *m);

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
void tb__engine_work_save(tb__engine_shard_t *it);
void tb__engine_work_load(tb__engine_shard_t *it);

/* Cheap whole-batch checks for the loop thread (loss function, its
 * config, the number of targets per position): 0 or TB_EINVAL with the
 * reason in err. */
int tb__engine_batch_precheck(const tb__batch_t *b, tb_error_t *err);

/* Gives an error that carries only a code a message and a category. */
void tb__engine_error_default(tb_error_t *err, int code);

#endif /* TB_ENGINE_ENGINE_INTERNAL_H */

/*
 * The engine: models, LoRA adapters and the jobs that train and sample
 * them, run on the libuv threadpool of a host's loop.
 *
 * Objects:
 *  - tb__engine_t, a handle the caller owns (tb__engine_init /
 *    tb__engine_close, libuv style: its memory may be released only in
 *    the close callback).
 *  - Models, loaded once by name and reference-counted: "base" (the
 *    generated model), "NAME=HF_DIR" (a Hugging Face directory registered
 *    as NAME), or weights the caller hands over (tb__engine_model_add).
 *    Every adapter on a model shares its one read-only copy of the base
 *    weights.
 *  - Adapters (tb__engine_adapter_t): a LoRA adapter over a model with its
 *    gradients and Adam moments.
 *  - Jobs (tb__engine_job_t), requests the caller owns: load a model,
 *    create or remove an adapter, forward, forward_backward, optim_step,
 *    sample, save, load.  Each runs in uv_queue_work items and completes
 *    on the loop thread through its callback, with the results inside the
 *    job.  If a submission returns an error, the callback is never called
 *    (job->error may then carry a message; tb__engine_job_cleanup frees it).
 *
 * Scheduling: the jobs of one adapter run one after another in submission
 * order (a FIFO per adapter), so a work item touches only its own job,
 * its adapter's buffers and the read-only base weights; different adapters
 * run at the same time.  forward and forward_backward split their batch by
 * datums into up to `shards` work items (one per core by default); each
 * shard backpropagates into its own gradient buffer, and a final work item
 * adds them to the adapter's gradients, so nothing large runs on the loop.
 * The gradient of a job is applied whole or not at all: a bad datum fails
 * the job before any gradient is added.
 *
 * Errors of the request (unknown model, a token outside the vocabulary, a
 * sequence longer than the context, a missing checkpoint) complete with
 * category TB_CATEGORY_USER and a message naming the datum and key, e.g.
 * "data[2].loss_fn_inputs.target_tokens[7]: token 300 is outside the
 * vocabulary [0, 272)".
 *
 * Non-goals: HTTP, JSON, request ids and futures (the server maps them to
 * jobs), and ordering between adapters.
 */
#ifndef TB_ENGINE_ENGINE_H
#define TB_ENGINE_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engine/llama.h"
#include "engine/lora.h"
#include "engine/optim.h"
#include "engine/sampler.h"
#include "engine/weights.h"
#include "tinkerbell/error.h"

typedef struct tb__engine_s tb__engine_t;
typedef struct tb__engine_job_s tb__engine_job_t;
typedef struct tb__engine_model_s tb__engine_model_t;      /* opaque */
typedef struct tb__engine_adapter_s tb__engine_adapter_t;  /* opaque */
typedef struct tb__engine_shard_s tb__engine_shard_t;      /* private */

typedef void (*tb__engine_close_cb)(tb__engine_t *engine);
/* status is 0 or job->error.code. */
typedef void (*tb__engine_job_cb)(tb__engine_job_t *job, int status);

typedef struct tb__engine_opts_s {
  /* Work items per forward / forward_backward; 0 means one per core
   * (uv_available_parallelism). */
  size_t shards;
  /* A batch is not split into shards of fewer tokens than this (splitting
   * tiny batches costs more than it gains); 0 means 64. */
  size_t min_shard_tokens;
  /* Work items the engine keeps in the threadpool at once; the rest wait
   * in the engine's queue, so activation memory stays bounded by this
   * many workspaces.  0 means the threadpool's size (UV_THREADPOOL_SIZE,
   * default 4). */
  size_t max_work_items;
  /* The KV pool of each model's decoder, in bytes; 0 means twice the
   * model's float32 weights, at least 64 MiB (decode.h). */
  size_t kv_bytes;
  /* Sample rows of one decode step of each model's decoder; 0 means
   * TB_DEC_DEFAULT_DECODE_ROWS (decode.h, "Rows per step"). */
  size_t decode_rows;
} tb__engine_opts_t;

struct tb__engine_s {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *loop;
  size_t shards;
  size_t min_shard_tokens;
  size_t max_work_items;
  size_t kv_bytes;
  size_t decode_rows;
  /* private */
  int closing;
  uint64_t next_adapter_id;
  size_t decoders;                /* decoders not yet closed */
  int close_queued;
  tb__engine_close_cb close_cb;
  tb__engine_model_t *models;      /* registry: loading and loaded */
  tb__engine_adapter_t *adapters;
  tb__engine_job_t *active;        /* submitted and not completed */
  size_t pending_work;            /* our uv_work_t in the threadpool */
  size_t running_items;           /* job items among them */
  tb__engine_shard_t *wait_head;   /* job items waiting for a slot */
  tb__engine_shard_t *wait_tail;
  tb__llama_ws_t **ws_free;        /* idle workspaces, one per work item */
  size_t ws_free_len, ws_free_cap;
  uv_work_t close_req;
};

typedef enum {
  TB_ENGINE_JOB_NONE = 0,
  TB_ENGINE_LOAD_MODEL,
  TB_ENGINE_CREATE_ADAPTER,
  TB_ENGINE_REMOVE_ADAPTER,
  TB_ENGINE_FORWARD,
  TB_ENGINE_FORWARD_BACKWARD,
  TB_ENGINE_OPTIM_STEP,
  TB_ENGINE_SAMPLE,
  TB_ENGINE_SAVE,
  TB_ENGINE_LOAD
} tb__engine_job_type_t;

typedef enum {
  TB_ENGINE_SAVE_STATE = 0,        /* checkpoint: weights only */
  TB_ENGINE_SAVE_STATE_OPTIMIZER,  /* checkpoint with the Adam moments */
  TB_ENGINE_SAVE_SAMPLER           /* PEFT export for sampling */
} tb__engine_save_kind_t;

/* A result metric: key is a static "<name>:<reduction>" string with
 * exactly one colon (the Tinker client splits keys on it). */
typedef struct tb__engine_metric_s {
  const char *key;
  double value;
} tb__engine_metric_t;

#define TB_ENGINE_MAX_METRICS 4

struct tb__engine_job_s {
  /* public */
  void *data;
  /* Optional, set before submission: called on the loop (possibly from
   * inside the submission) when the job's work has to wait because every
   * work item the engine keeps in the threadpool belongs to other jobs
   * (waiting 1), and again when its work starts (waiting 0).  A job that
   * never waits for room is never reported. */
  void (*on_capacity)(tb__engine_job_t *job, int waiting);
  /* Optional, set before submission: called on the loop when the job's
   * work starts (its first work item is handed to the threadpool), so
   * that the caller can tell a running job from a queued one. */
  void (*on_start)(tb__engine_job_t *job);
  /* read-only: set by the submission */
  tb__engine_t *engine;
  tb__engine_job_type_t type;
  /* read-only: results, valid from the callback until
   * tb__engine_job_cleanup */
  tb_error_t error;
  tb__engine_model_t *model;      /* LOAD_MODEL: a reference the caller owns */
  tb__engine_adapter_t *adapter;  /* CREATE_ADAPTER: the new adapter */
  float *logprobs;               /* FORWARD*: (num_logprobs) per-token */
  size_t num_logprobs;           /*   target log-probs in datum order */
  double loss;                   /* FORWARD*: summed loss */
  tb__engine_metric_t metrics[TB_ENGINE_MAX_METRICS];
  size_t num_metrics;
  tb__optim_metrics_t optim;      /* OPTIM_STEP */
  tb__sample_result_t sample;     /* SAMPLE */
  /* private */
  tb__engine_job_cb cb;
  tb__engine_adapter_t *target;   /* the adapter whose FIFO holds the job */
  tb__engine_model_t *held;       /* model reference held while running */
  tb__engine_job_t *queue_next;   /* FIFO of target */
  tb__engine_job_t *active_prev, *active_next;
  int started;
  int capacity_waiting;          /* on_capacity(job, 1) was called */
  /* SAMPLE: its sequence in the model's decoder, once admitted or
   * refused for room; the decoder's queue of jobs not yet admitted */
  struct tb__dec_seq_s *seq;
  tb__engine_job_t *dec_next;
  int dec_queued, dec_admitted, cancelled;
  /* inputs; pointers must stay valid until the callback */
  tb__batch_t batch;
  tb__adam_params_t adam;
  tb__lora_config_t lora_config;
  const int32_t *prompt;
  size_t prompt_len;
  tb__sampling_params_t sampling;
  char *path;                    /* copied */
  int flags;
  /* execution */
  tb__engine_shard_t *items;      /* work items: the shards, then the sum */
  size_t num_items, items_left;
  size_t num_shards;
  int stage;                     /* 1 while the sum of shards or the
                                  * optimizer's update runs */
};

/* Calls openblas_set_num_threads(1) (parallelism comes from work items).
 * 0 or TB_EINVAL. */
int tb__engine_init(uv_loop_t *loop, tb__engine_t *engine,
                    const tb__engine_opts_t *opts);
/* Stops accepting jobs, cancels the work that has not started (those jobs
 * complete with TB_ECANCELED), waits for running work, frees every model,
 * adapter and workspace, then calls close_cb (may be NULL) from the loop.
 * Models and adapters the caller still points to are gone afterwards.
 * 0, or TB_ECLOSING when already closing. */
int tb__engine_close(tb__engine_t *engine, tb__engine_close_cb close_cb);

/* Releases what a job's results hold (log-probs, samples, the error
 * message); job->model of a LOAD_MODEL job is the caller's reference and
 * is not released here.  Call after the callback, or after a submission
 * that returned an error.  Safe on a zeroed job. */
void tb__engine_job_cleanup(tb__engine_job_t *job);

/* ------------------------------------------------------------ models */

/* Loads "base" or "NAME=HF_DIR" (the directory is read on the threadpool)
 * unless a model of that name is already loaded or loading; job->model
 * receives a reference (release it with tb__engine_model_unref).  A bare
 * name other than "base" that is not loaded gives TB_ENOTFOUND at once. */
int tb__engine_load_model(tb__engine_job_t *job, tb__engine_t *engine,
                          const char *spec, tb__engine_job_cb cb);
/* Registers weights the caller built (the engine takes ownership of w's
 * storage and zeroes *w, also on error) as model `name`, with one
 * reference for the caller.  No I/O, so it is synchronous.  TB_EEXIST
 * when the name is taken, TB_EINVAL for an invalid config. */
int tb__engine_model_add(tb__engine_t *engine, const char *name,
                         tb__weights_t *w, tb__engine_model_t **out);
/* A loaded model by name (no reference is taken), or NULL. */
tb__engine_model_t *tb__engine_model_find(tb__engine_t *engine,
                                         const char *name);
/* Drops a reference; the weights are freed (on the threadpool) when no
 * caller, adapter or job holds the model any more. */
void tb__engine_model_unref(tb__engine_model_t *m);
const char *tb__engine_model_name(const tb__engine_model_t *m);
const tb__weights_t *tb__engine_model_weights(const tb__engine_model_t *m);

/* ------------------------------------------------------------ adapters */

/* Creates an adapter over a loaded model (A drawn from config->seed, B
 * zero); job->adapter receives it.  Invalid configs give TB_EINVAL at
 * once, with the reason in job->error. */
int tb__engine_create_adapter(tb__engine_job_t *job, tb__engine_model_t *model,
                              const tb__lora_config_t *config,
                              tb__engine_job_cb cb);
/* Queues the removal behind the adapter's jobs; the adapter is freed
 * before cb runs, and jobs submitted after this one fail at once with
 * TB_ECLOSING. */
int tb__engine_remove_adapter(tb__engine_job_t *job, tb__engine_adapter_t *a,
                              tb__engine_job_cb cb);
tb__engine_model_t *tb__engine_adapter_model(const tb__engine_adapter_t *a);
/* The adapter's LoRA state.  Reading or writing it is safe only while no
 * job of the adapter is queued or running (tb__engine_adapter_busy). */
tb__lora_t *tb__engine_adapter_lora(tb__engine_adapter_t *a);
int tb__engine_adapter_busy(const tb__engine_adapter_t *a);
/* Jobs in a's FIFO, the running one included. */
size_t tb__engine_adapter_jobs(const tb__engine_adapter_t *a);
/* How many jobs must make way before a submitted job's work starts: the
 * jobs ahead of it in its adapter's FIFO and, while its work waits for
 * room in the threadpool, the jobs whose work runs there or waits ahead
 * of it.  0 once it runs. */
size_t tb__engine_job_position(const tb__engine_job_t *job);

/* ------------------------------------------------------------ jobs */

/* Forward only: job->logprobs and "loss:sum".  The batch and every array
 * it points to must stay valid until the callback. */
int tb__engine_forward(tb__engine_job_t *job, tb__engine_adapter_t *a,
                       const tb__batch_t *batch, tb__engine_job_cb cb);
/* Forward and backward: as tb__engine_forward, and the gradient of the
 * summed loss is added to the adapter's gradients (they accumulate until
 * the next optim_step). */
int tb__engine_forward_backward(tb__engine_job_t *job, tb__engine_adapter_t *a,
                                const tb__batch_t *batch, tb__engine_job_cb cb);
/* One AdamW step over the accumulated gradients, which are then zeroed:
 * job->optim and the metrics "grad_norm:mean", "learning_rate:mean".
 * Invalid params give TB_EINVAL at once. */
int tb__engine_optim_step(tb__engine_job_t *job, tb__engine_adapter_t *a,
                          const tb__adam_params_t *params, tb__engine_job_cb cb);
/* Samples a continuation of prompt from the adapter or, with a == NULL,
 * from the bare model.  Result in job->sample.  prompt and the pointers
 * inside params must stay valid until the callback.
 *
 * Every sample job of a model, whatever its adapter, is a sequence of the
 * model's one decoder (decode.h), opened at the first sample and kept
 * with the model: the sequences of all requests decode together, one step
 * at a time, each joining at a step boundary and leaving when it stops.
 * A job's result does not depend on what it decodes beside.
 *  - In the adapter's FIFO a run of consecutive sample jobs starts
 *    together (they only read the weights); a job that changes them
 *    (optim_step, load) waits until they are done, and samples submitted
 *    after it wait for it, so a sample sees the weights as of its
 *    submission.
 *  - Admission is in submission order.  A job whose worst case (prompt
 *    plus num_samples * max_tokens positions) does not fit in the KV
 *    pool's free room now waits, reported through on_capacity (1, then 0
 *    when admitted; on_start follows), and those behind it wait too, so a
 *    large request is never starved by small ones.  A request larger than
 *    the whole pool fails at once (TB_EINVAL, category user).
 *  - While a decoder has sequences, the other jobs' work items keep to
 *    max_work_items less the decoder's, at least one: a decode step never
 *    waits behind a queue of training items, and a decode step takes only
 *    its own items, so a flood of samples never starves training. */
int tb__engine_sample(tb__engine_job_t *job, tb__engine_model_t *model,
                      tb__engine_adapter_t *a, const int32_t *prompt,
                      size_t n, const tb__sampling_params_t *params,
                      tb__engine_job_cb cb);
/* What a model's decoder is doing, for metrics. */
typedef struct tb__engine_decode_stats_s {
  int open;                  /* 0: no sample yet, or closed */
  size_t running;            /* requests whose sequences decode */
  size_t waiting;            /* requests waiting for room (or the open) */
  uint64_t steps;            /* decode steps run */
  size_t kv_blocks;          /* the pool's bound, in blocks */
  size_t kv_room;            /* blocks an admission could still get */
  size_t block_tokens;
  uint64_t prefix_hits;      /* prompt blocks found in the prefix cache */
} tb__engine_decode_stats_t;
void tb__engine_decode_stats(const tb__engine_model_t *m,
                             tb__engine_decode_stats_t *out);
/* Cancels a submitted sample job: its KV blocks go back to the pool now
 * (or when the step using them ends), and the job completes with
 * TB_ECANCELED (category cancelled) from the loop's next turn, unless it
 * has completed already.  TB_EINVAL for any other job. */
int tb__engine_job_cancel(tb__engine_job_t *job);
/* Writes the adapter to dir (see checkpoint.h for the layouts). */
int tb__engine_save(tb__engine_job_t *job, tb__engine_adapter_t *a,
                    const char *dir, tb__engine_save_kind_t kind,
                    tb__engine_job_cb cb);
/* Loads a checkpoint into the adapter, whose rank, alpha and targets must
 * match it.  With with_optimizer the Adam moments and step count come
 * from the checkpoint; without, they restart from zero.  The adapter is
 * unchanged when the load fails.  Pending gradients are dropped. */
int tb__engine_load(tb__engine_job_t *job, tb__engine_adapter_t *a,
                    const char *dir, int with_optimizer, tb__engine_job_cb cb);

#endif /* TB_ENGINE_ENGINE_H */

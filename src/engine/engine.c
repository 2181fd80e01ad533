/*
 * The engine's job scheduling (see engine.h): adapters and their FIFOs,
 * jobs turned into work items, the bounded queue of items waiting for the
 * threadpool, completion and close.  The model registry is in
 * engine_models.c.
 *
 * Everything in this file runs on the loop thread.  The work functions
 * are in engine_jobs.c, the split of a job into work items in
 * engine_split.c.  Ownership rules:
 *  - a job is in engine->active from a successful submission until just
 *    before its callback;
 *  - an adapter job is in its adapter's FIFO from submission until
 *    completion; the started jobs are a prefix of the FIFO: its head
 *    alone, or a run of sample jobs (readers of the weights together);
 *  - a model is freed when its last reference goes (callers' references
 *    from LOAD_MODEL or tb__engine_model_add, one per adapter, one per
 *    running sample job), or at close.
 */
#include "engine/engine_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/base_model.h"
#include "engine/weights.h"

#define DEFAULT_MIN_SHARD_TOKENS 64

/* ------------------------------------------------------------ workspaces */

static int ws_take(tb__engine_t *e, tb__llama_ws_t **out) {
  if (e->ws_free_len > 0) {
    *out = e->ws_free[--e->ws_free_len];
    return 0;
  }
  return tb__llama_ws_new(out);
}

static void ws_give(tb__engine_t *e, tb__llama_ws_t *ws) {
  if (e->ws_free_len == e->ws_free_cap) {
    size_t cap = e->ws_free_cap ? 2 * e->ws_free_cap : 8;
    tb__llama_ws_t **p = realloc(e->ws_free, cap * sizeof(*p));
    if (p == NULL) {
      tb__llama_ws_free(ws);
      return;
    }
    e->ws_free = p;
    e->ws_free_cap = cap;
  }
  e->ws_free[e->ws_free_len++] = ws;
}

/* ------------------------------------------------------------ work items */

static void item_work_cb(uv_work_t *req) {
  tb__engine_shard_t *it = (tb__engine_shard_t *)req;
  if (it->skip != 0) {
    it->status = it->skip;
    return;
  }
  it->work(it);
}

static void item_after_cb(uv_work_t *req, int status);

static void item_start(tb__engine_t *e, tb__engine_shard_t *it) {
  tb__engine_job_t *job = it->job;
  if (job->capacity_waiting) {
    job->capacity_waiting = 0;
    job->on_capacity(job, 0);
  }
  /* An item that only carries a failure or a cancellation starts
   * nothing. */
  if (it == &job->items[0] && job->on_start != NULL && it->skip == 0)
    job->on_start(job);
  if (it->skip == 0 && it->needs_ws && ws_take(e, &it->ws) != 0)
    it->skip = TB_ENOMEM;
  it->queued = 1;
  e->pending_work++;
  e->running_items++;
  /* Fails only for a NULL work callback. */
  uv_queue_work(e->loop, &it->req, item_work_cb, item_after_cb);
}

/* Items beyond max_work_items wait in the engine's queue, so that at most
 * that many workspaces hold activations at once; while decoders step, the
 * threadpool slots their steps take are kept free for them (engine.h). */
static size_t item_limit(const tb__engine_t *e) {
  size_t dec = tb__engine_decode_items(e);
  return e->max_work_items > dec ? e->max_work_items - dec : 1;
}

void tb__engine_item_submit(tb__engine_t *e, tb__engine_shard_t *it) {
  if (e->closing)
    it->skip = TB_ECANCELED;
  if (it->skip != 0 || e->running_items < item_limit(e)) {
    item_start(e, it);
    return;
  }
  it->wait_next = NULL;
  if (e->wait_tail)
    e->wait_tail->wait_next = it;
  else
    e->wait_head = it;
  e->wait_tail = it;
  /* Only a job none of whose work runs yet is waiting for room. */
  tb__engine_job_t *job = it->job;
  if (it == &job->items[0] && job->on_capacity != NULL && !job->capacity_waiting) {
    job->capacity_waiting = 1;
    job->on_capacity(job, 1);
  }
}

void tb__engine_pump(tb__engine_t *e) {
  while (e->wait_head != NULL && e->running_items < item_limit(e)) {
    tb__engine_shard_t *it = e->wait_head;
    e->wait_head = it->wait_next;
    if (e->wait_head == NULL)
      e->wait_tail = NULL;
    item_start(e, it);
  }
}

static void *items_calloc(size_t n) {
  return calloc(n, sizeof(tb__engine_shard_t));
}

/* ------------------------------------------------------------ active jobs */

void tb__engine_active_add(tb__engine_t *e, tb__engine_job_t *job) {
  job->active_prev = NULL;
  job->active_next = e->active;
  if (e->active)
    e->active->active_prev = job;
  e->active = job;
}

static void active_remove(tb__engine_t *e, tb__engine_job_t *job) {
  if (job->active_prev)
    job->active_prev->active_next = job->active_next;
  else
    e->active = job->active_next;
  if (job->active_next)
    job->active_next->active_prev = job->active_prev;
  job->active_prev = job->active_next = NULL;
}

/* Resets a job for a new submission, keeping the caller's data. */
int tb__engine_job_begin(tb__engine_job_t *job, tb__engine_t *e,
                         tb__engine_job_type_t type, tb__engine_job_cb cb) {
  void *data = job->data;
  void (*on_capacity)(tb__engine_job_t *, int) = job->on_capacity;
  void (*on_start)(tb__engine_job_t *) = job->on_start;
  memset(job, 0, sizeof(*job));
  job->data = data;
  job->on_capacity = on_capacity;
  job->on_start = on_start;
  job->engine = e;
  job->type = type;
  job->cb = cb;
  if (e->closing)
    return tb_error_set(&job->error, TB_ECLOSING, TB_CATEGORY_CANCELLED,
                        "the engine is closing");
  return 0;
}

void tb__engine_release_items(tb__engine_job_t *job) {
  if (job->items == NULL)
    return;
  for (size_t i = 0; i < job->num_items; i++)
    tb_error_clear(&job->items[i].error);
  free(job->items);
  job->items = NULL;
  job->num_items = job->items_left = 0;
}

/* Allocates n work items running `work`. */
int tb__engine_items_alloc(tb__engine_job_t *job, size_t n,
                           void (*work)(tb__engine_shard_t *), int needs_ws) {
  job->items = items_calloc(n);
  if (job->items == NULL)
    return tb_error_set(&job->error, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "out of memory");
  job->num_items = job->items_left = n;
  for (size_t i = 0; i < n; i++) {
    job->items[i].job = job;
    job->items[i].work = work;
    job->items[i].needs_ws = needs_ws;
  }
  return 0;
}

/* Starts the work of a job; on error nothing was queued. */
int tb__engine_job_start(tb__engine_job_t *job) {
  tb__engine_t *e = job->engine;
  job->started = 1;
  switch (job->type) {
    case TB_ENGINE_FORWARD:
    case TB_ENGINE_FORWARD_BACKWARD:
      return tb__engine_start_batch(job);
    case TB_ENGINE_OPTIM_STEP:
      return tb__engine_start_optim(job);
    case TB_ENGINE_SAMPLE:
      return tb__engine_sample_start(job);
    default:
      break;
  }
  void (*work)(tb__engine_shard_t *) = NULL;
  int needs_ws = 0;
  switch (job->type) {
    case TB_ENGINE_LOAD_MODEL: work = tb__engine_work_load_model; break;
    case TB_ENGINE_CREATE_ADAPTER: work = tb__engine_work_create; break;
    case TB_ENGINE_REMOVE_ADAPTER: work = tb__engine_work_remove; break;
    case TB_ENGINE_SAVE: work = tb__engine_work_save; break;
    case TB_ENGINE_LOAD: work = tb__engine_work_load; break;
    default: break;
  }
  int rc = tb__engine_items_alloc(job, 1, work, needs_ws);
  if (rc != 0)
    return rc;
  tb__engine_item_submit(e, &job->items[0]);
  return 0;
}

/* ------------------------------------------------------------ adapters */

static void adapter_unlink(tb__engine_adapter_t *a) {
  tb__engine_adapter_t **p = &a->engine->adapters;
  while (*p != NULL && *p != a)
    p = &(*p)->next;
  if (*p == a)
    *p = a->next;
}

tb__engine_model_t *tb__engine_adapter_model(const tb__engine_adapter_t *a) {
  return a->model;
}

tb__lora_t *tb__engine_adapter_lora(tb__engine_adapter_t *a) {
  return &a->lora;
}

int tb__engine_adapter_busy(const tb__engine_adapter_t *a) {
  return a->head != NULL;
}

int tb__engine_create_adapter(tb__engine_job_t *job, tb__engine_model_t *m,
                              const tb__lora_config_t *config,
                              tb__engine_job_cb cb) {
  int rc = tb__engine_job_begin(job, m->engine, TB_ENGINE_CREATE_ADAPTER, cb);
  if (rc != 0)
    return rc;
  const char *why = NULL;
  if (!m->loaded)
    return tb_error_set(&job->error, TB_EINVAL, TB_CATEGORY_USER,
                        "base_model: %s is not loaded yet", m->name);
  if (tb__lora_config_validate(config, &why) != 0)
    return tb_error_set(&job->error, TB_EINVAL, TB_CATEGORY_USER,
                        "lora_config: %s", why);
  tb__engine_adapter_t *a = calloc(1, sizeof(*a));
  if (a == NULL)
    return tb_error_set(&job->error, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "out of memory");
  a->engine = m->engine;
  a->model = m;
  a->id = ++m->engine->next_adapter_id;
  job->lora_config = *config;
  job->target = a;
  if ((rc = tb__engine_job_start(job)) != 0) {
    free(a);
    job->target = NULL;
    return rc;
  }
  m->refs++;
  tb__engine_active_add(m->engine, job);
  return 0;
}

static void create_done(tb__engine_job_t *job, int status) {
  tb__engine_adapter_t *a = job->target;
  tb__engine_t *e = job->engine;
  job->target = NULL;
  if (status == 0) {
    a->next = e->adapters;
    e->adapters = a;
    job->adapter = a;
  } else {
    tb__lora_free(&a->lora);
    tb__engine_model_unref(a->model);
    free(a);
  }
  tb__engine_job_finish(job, status);
}

static void remove_done(tb__engine_job_t *job, int status) {
  tb__engine_adapter_t *a = job->target;
  if (status == 0) {
    /* The removal was the last job of the FIFO: nothing can follow it. */
    a->head = a->tail = NULL;
    job->target = NULL;
    adapter_unlink(a);
    tb__engine_model_unref(a->model);
    free(a);
  }
  tb__engine_job_finish(job, status);
}

/* Queues an adapter job; it starts at once when the FIFO was empty. */
static int adapter_submit(tb__engine_job_t *job, tb__engine_adapter_t *a) {
  if (a->removing)
    return tb_error_set(&job->error, TB_ECLOSING, TB_CATEGORY_USER,
                        "the adapter is being removed");
  job->target = a;
  job->queue_next = NULL;
  /* The started jobs are a prefix: a sample joins a started run of
   * samples at the tail. */
  int first = a->head == NULL ||
              (job->type == TB_ENGINE_SAMPLE && a->tail->started &&
               a->tail->type == TB_ENGINE_SAMPLE);
  if (first) {
    int rc = tb__engine_job_start(job);
    if (rc != 0) {
      job->target = NULL;
      return rc;
    }
    if (a->head == NULL)
      a->head = job;
    else
      a->tail->queue_next = job;
  } else {
    a->tail->queue_next = job;
  }
  a->tail = job;
  tb__engine_active_add(a->engine, job);
  return 0;
}

size_t tb__engine_adapter_jobs(const tb__engine_adapter_t *a) {
  size_t n = 0;
  for (const tb__engine_job_t *j = a->head; j != NULL; j = j->queue_next)
    n++;
  return n;
}

size_t tb__engine_job_position(const tb__engine_job_t *job) {
  size_t n = 0;
  if (job->target != NULL && !job->started)
    for (const tb__engine_job_t *j = job->target->head; j != NULL && j != job; j = j->queue_next)
      n++;
  if (job->dec_queued && job->held != NULL && job->held->decoder != NULL)
    /* Waiting for room in the decoder: the jobs admitted before it. */
    for (const tb__engine_job_t *j = job->held->decoder->wait_head;
         j != NULL && j != job; j = j->dec_next)
      n++;
  if (job->started && job->num_items > 0 && !job->items[0].queued) {
    /* Waiting for room: the jobs whose work holds the threadpool, and the
     * ones whose items wait ahead of it (each job's items are queued
     * together, so counting changes of job counts jobs). */
    for (const tb__engine_job_t *j = job->engine->active; j != NULL; j = j->active_next)
      if (j != job && j->started && j->num_items > 0 && j->items[0].queued)
        n++;
    const tb__engine_job_t *last = NULL;
    for (const tb__engine_shard_t *it = job->engine->wait_head;
         it != NULL && it != &job->items[0]; it = it->wait_next)
      if (it->job != last && it->job != job) {
        n++;
        last = it->job;
      }
  }
  return n;
}

/* The FIFO's first job not started, if it may start now: it is the head,
 * or a sample behind a run of started samples. */
static tb__engine_job_t *next_to_start(tb__engine_adapter_t *a) {
  tb__engine_job_t *j = a->head;
  while (j != NULL && j->started) {
    if (j->type != TB_ENGINE_SAMPLE)
      return NULL;
    j = j->queue_next;
  }
  if (j == NULL || (j != a->head && j->type != TB_ENGINE_SAMPLE))
    return NULL;
  return j;
}

/* Starts the next jobs of the FIFO, or cancels the queue while closing. */
static void adapter_kick(tb__engine_adapter_t *a) {
  /* tb__engine_job_finish calls back in here; the outer call keeps going instead, so
   * cancelling a long queue does not recurse once per job. */
  if (a->kicking)
    return;
  a->kicking = 1;
  tb__engine_job_t *job;
  while ((job = next_to_start(a)) != NULL) {
    int rc = a->engine->closing ? TB_ECANCELED : tb__engine_job_start(job);
    if (rc == 0)
      continue;
    if (rc == TB_ECANCELED && job->error.code == 0)
      tb_error_set(&job->error, rc, TB_CATEGORY_CANCELLED,
                   "the engine closed before the job ran");
    job->started = 1;
    tb__engine_job_finish(job, rc);
  }
  a->kicking = 0;
}

int tb__engine_remove_adapter(tb__engine_job_t *job, tb__engine_adapter_t *a,
                              tb__engine_job_cb cb) {
  int rc = tb__engine_job_begin(job, a->engine, TB_ENGINE_REMOVE_ADAPTER, cb);
  if (rc == 0)
    rc = adapter_submit(job, a);
  if (rc == 0)
    a->removing = 1;
  return rc;
}

/* ------------------------------------------------------------ jobs */

static int batch_submit(tb__engine_job_t *job, tb__engine_adapter_t *a,
                        const tb__batch_t *batch, tb__engine_job_type_t type,
                        tb__engine_job_cb cb) {
  int rc = tb__engine_job_begin(job, a->engine, type, cb);
  if (rc != 0)
    return rc;
  if (batch == NULL)
    return tb_error_set(&job->error, TB_EINVAL, TB_CATEGORY_USER,
                        "no batch");
  if ((rc = tb__engine_batch_precheck(batch, &job->error)) != 0)
    return rc;
  job->batch = *batch;
  job->num_logprobs = tb__batch_num_outputs(batch);
  job->logprobs = malloc(job->num_logprobs * sizeof(float));
  if (job->logprobs == NULL)
    return tb_error_set(&job->error, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "out of memory");
  return adapter_submit(job, a);
}

int tb__engine_forward(tb__engine_job_t *job, tb__engine_adapter_t *a,
                       const tb__batch_t *batch, tb__engine_job_cb cb) {
  return batch_submit(job, a, batch, TB_ENGINE_FORWARD, cb);
}

int tb__engine_forward_backward(tb__engine_job_t *job, tb__engine_adapter_t *a,
                                const tb__batch_t *batch, tb__engine_job_cb cb) {
  return batch_submit(job, a, batch, TB_ENGINE_FORWARD_BACKWARD, cb);
}

/* All shards are done: sum their gradients (off the loop) or finish. */
static void batch_done(tb__engine_job_t *job) {
  int status = 0;
  size_t S = job->num_shards;
  for (size_t s = 0; s < S && status == 0; s++)
    status = job->items[s].status;
  if (job->stage == 0 && job->num_items > S) {
    job->stage = 1;
    job->items_left = job->num_items - S;
    for (size_t i = S; i < job->num_items; i++) {
      job->items[i].apply = status == 0;
      tb__engine_item_submit(job->engine, &job->items[i]);
    }
    return;
  }
  for (size_t i = S; i < job->num_items && status == 0; i++)
    status = job->items[i].status;
  if (status == 0) {
    double loss = 0;
    for (size_t s = 0; s < S; s++)
      loss += job->items[s].loss;
    job->loss = loss;
    job->metrics[0].key = "loss:sum";
    job->metrics[0].value = loss;
    job->num_metrics = 1;
  } else {
    /* The first failing shard holds the first bad datum. */
    for (size_t s = 0; s < job->num_items; s++)
      if (job->items[s].status != 0) {
        job->error = job->items[s].error;
        memset(&job->items[s].error, 0, sizeof(job->items[s].error));
        break;
      }
  }
  tb__engine_job_finish(job, status);
}

int tb__engine_optim_step(tb__engine_job_t *job, tb__engine_adapter_t *a,
                          const tb__adam_params_t *params,
                          tb__engine_job_cb cb) {
  int rc = tb__engine_job_begin(job, a->engine, TB_ENGINE_OPTIM_STEP, cb);
  if (rc != 0)
    return rc;
  const char *field = NULL, *why = NULL;
  if (params == NULL || tb__adam_params_validate(params, &field, &why) != 0)
    return tb_error_set(&job->error, TB_EINVAL, TB_CATEGORY_USER,
                        "adam_params%s%s: %s", field ? "." : "",
                        field ? field : "", why ? why : "missing");
  job->adam = *params;
  return adapter_submit(job, a);
}

int tb__engine_sample(tb__engine_job_t *job, tb__engine_model_t *model,
                      tb__engine_adapter_t *a, const int32_t *prompt,
                      size_t n, const tb__sampling_params_t *params,
                      tb__engine_job_cb cb) {
  if (a != NULL)
    model = a->model;
  if (model == NULL)
    return TB_EINVAL;
  int rc = tb__engine_job_begin(job, model->engine, TB_ENGINE_SAMPLE, cb);
  if (rc != 0)
    return rc;
  if (prompt == NULL || n == 0 || params == NULL)
    return tb_error_set(&job->error, TB_EINVAL, TB_CATEGORY_USER,
                        "prompt: at least one token is needed");
  job->prompt = prompt;
  job->prompt_len = n;
  job->sampling = *params;
  job->held = model;
  if (a != NULL) {
    rc = adapter_submit(job, a);
  } else {
    rc = tb__engine_job_start(job);
    if (rc == 0)
      tb__engine_active_add(model->engine, job);
  }
  if (rc != 0) {
    job->held = NULL;
    return rc;
  }
  model->refs++;
  return 0;
}

static int path_submit(tb__engine_job_t *job, tb__engine_adapter_t *a,
                       const char *dir, int flags, tb__engine_job_type_t type,
                       tb__engine_job_cb cb) {
  int rc = tb__engine_job_begin(job, a->engine, type, cb);
  if (rc != 0)
    return rc;
  if (dir == NULL || dir[0] == '\0')
    return tb_error_set(&job->error, TB_EINVAL, TB_CATEGORY_USER,
                        "path: empty");
  job->path = strdup(dir);
  if (job->path == NULL)
    return tb_error_set(&job->error, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "out of memory");
  job->flags = flags;
  return adapter_submit(job, a);
}

int tb__engine_save(tb__engine_job_t *job, tb__engine_adapter_t *a,
                    const char *dir, tb__engine_save_kind_t kind,
                    tb__engine_job_cb cb) {
  if ((unsigned)kind > TB_ENGINE_SAVE_SAMPLER)
    return TB_EINVAL;
  return path_submit(job, a, dir, (int)kind, TB_ENGINE_SAVE, cb);
}

int tb__engine_load(tb__engine_job_t *job, tb__engine_adapter_t *a,
                    const char *dir, int with_optimizer, tb__engine_job_cb cb) {
  return path_submit(job, a, dir, with_optimizer != 0, TB_ENGINE_LOAD, cb);
}

void tb__engine_job_cleanup(tb__engine_job_t *job) {
  free(job->logprobs);
  job->logprobs = NULL;
  job->num_logprobs = 0;
  tb__sample_result_free(&job->sample);
  tb_error_clear(&job->error);
  free(job->path);
  job->path = NULL;
  tb__engine_release_items(job);
}

/* ------------------------------------------------------------ completion */

/* The optimizer's norm is known: count the step and run the update round
 * over the same pieces. */
static void optim_update(tb__engine_job_t *job) {
  tb__lora_t *lora = &job->target->lora;
  double sumsq = 0;
  for (size_t i = 0; i < job->num_items; i++)  /* in order: reproducible */
    sumsq += job->items[i].sumsq;
  lora->step++;
  job->optim.grad_norm = sqrt(sumsq);
  job->optim.learning_rate = job->adam.learning_rate;
  job->optim.step = lora->step;
  job->stage = 1;
  job->items_left = job->num_items;
  for (size_t i = 0; i < job->num_items; i++) {
    job->items[i].work = tb__engine_work_optim_update;
    tb__engine_item_submit(job->engine, &job->items[i]);
  }
}

static void item_after_cb(uv_work_t *req, int status) {
  tb__engine_shard_t *it = (tb__engine_shard_t *)req;
  tb__engine_job_t *job = it->job;
  tb__engine_t *e = job->engine;
  e->pending_work--;
  e->running_items--;
  it->queued = 0;
  if (it->ws != NULL) {
    ws_give(e, it->ws);
    it->ws = NULL;
  }
  if (status == UV_ECANCELED)
    it->status = TB_ECANCELED;
  if (it->status == TB_ECANCELED && it->error.code == 0)
    tb_error_set(&it->error, TB_ECANCELED, TB_CATEGORY_CANCELLED,
                 "the engine closed before the job ran");
  tb__engine_error_default(&it->error, it->status);
  tb__engine_pump(e);
  if (--job->items_left > 0)
    return;
  if (job->type == TB_ENGINE_FORWARD ||
      job->type == TB_ENGINE_FORWARD_BACKWARD) {
    batch_done(job);
    return;
  }
  int rc = it->status;
  if (rc != 0) {
    job->error = it->error;
    memset(&it->error, 0, sizeof(it->error));
  }
  switch (job->type) {
    case TB_ENGINE_LOAD_MODEL: tb__engine_load_model_done(job, rc); break;
    case TB_ENGINE_CREATE_ADAPTER: create_done(job, rc); break;
    case TB_ENGINE_REMOVE_ADAPTER: remove_done(job, rc); break;
    case TB_ENGINE_OPTIM_STEP:
      for (size_t i = 0; i < job->num_items && rc == 0; i++)
        if ((rc = job->items[i].status) != 0) {
          job->error = job->items[i].error;
          memset(&job->items[i].error, 0, sizeof(job->items[i].error));
        }
      if (rc == 0 && job->stage == 0) {
        optim_update(job);
        return;
      }
      if (rc == 0) {
        job->metrics[0].key = "grad_norm:mean";
        job->metrics[0].value = job->optim.grad_norm;
        job->metrics[1].key = "learning_rate:mean";
        job->metrics[1].value = job->optim.learning_rate;
        job->num_metrics = 2;
      }
      tb__engine_job_finish(job, rc);
      break;
    default: tb__engine_job_finish(job, rc); break;
  }
}

/* Takes job out of a's FIFO, wherever it is (sample jobs of a started run
 * end in any order); 0 when it was not there. */
static int fifo_unlink(tb__engine_adapter_t *a, tb__engine_job_t *job) {
  tb__engine_job_t *prev = NULL;
  for (tb__engine_job_t *j = a->head; j != NULL; prev = j, j = j->queue_next) {
    if (j != job)
      continue;
    if (prev != NULL)
      prev->queue_next = j->queue_next;
    else
      a->head = j->queue_next;
    if (a->tail == j)
      a->tail = prev;
    job->queue_next = NULL;
    return 1;
  }
  return 0;
}

void tb__engine_job_fail_later(tb__engine_job_t *job, int rc, tb_error_t *err) {
  /* One no-op work item carries the failure through the threadpool's
   * completion, as every job's result comes back. */
  if (tb__engine_items_alloc(job, 1, NULL, 0) != 0) {
    tb_error_clear(err);
    tb__engine_job_finish(job, TB_ENOMEM);
    return;
  }
  tb__engine_shard_t *it = &job->items[0];
  it->skip = rc;
  if (err != NULL) {
    it->error = *err;
    memset(err, 0, sizeof(*err));
  }
  item_start(job->engine, it);
}

int tb__engine_job_cancel(tb__engine_job_t *job) {
  if (job == NULL || job->type != TB_ENGINE_SAMPLE || job->engine == NULL)
    return TB_EINVAL;
  tb__engine_sample_cancel(job);
  return 0;
}

/* Takes the job out of the engine's books, runs its callback, then lets
 * its adapter's next job start. */
void tb__engine_job_finish(tb__engine_job_t *job, int status) {
  tb__engine_t *e = job->engine;
  tb__engine_adapter_t *a = job->target;
  if (status != 0) {
    tb__engine_error_default(&job->error, status);
    status = job->error.code;
  }
  tb__engine_release_items(job);
  if (job->type != TB_ENGINE_LOAD_MODEL && job->held != NULL)
    tb__engine_model_unref(job->held);
  job->held = NULL;
  active_remove(e, job);
  if (a != NULL && !fifo_unlink(a, job))
    a = NULL;
  if (a != NULL && status == 0 &&
      (job->type == TB_ENGINE_OPTIM_STEP || job->type == TB_ENGINE_LOAD))
    a->version++;  /* new weights: new prefix cache entries */
  if (job->cb != NULL)
    job->cb(job, status);
  if (a != NULL)
    adapter_kick(a);
  tb__engine_maybe_close(e);
}

/* ------------------------------------------------------------ engine */

static size_t threadpool_size(void) {
  const char *v = getenv("UV_THREADPOOL_SIZE");
  long n = v ? strtol(v, NULL, 10) : 0;
  if (n <= 0)
    n = 4;  /* libuv's default */
  if (n > 1024)
    n = 1024;
  return (size_t)n;
}

int tb__engine_init(uv_loop_t *loop, tb__engine_t *e,
                    const tb__engine_opts_t *opts) {
  if (loop == NULL || e == NULL)
    return TB_EINVAL;
  void *data = e->data;
  memset(e, 0, sizeof(*e));
  e->data = data;
  e->loop = loop;
  e->shards = opts && opts->shards ? opts->shards : uv_available_parallelism();
  if (e->shards < 1)
    e->shards = 1;
  e->min_shard_tokens = opts && opts->min_shard_tokens
                            ? opts->min_shard_tokens
                            : DEFAULT_MIN_SHARD_TOKENS;
  e->max_work_items = opts && opts->max_work_items ? opts->max_work_items
                                                   : threadpool_size();
  e->kv_bytes = opts ? opts->kv_bytes : 0;
  e->decode_rows = opts ? opts->decode_rows : 0;
  /* Parallelism comes from work items; a threaded BLAS inside each would
   * oversubscribe the cores. */
  openblas_set_num_threads(1);
  return 0;
}

static void close_work(uv_work_t *req) {
  tb__engine_t *e = (tb__engine_t *)((char *)req -
                                   offsetof(tb__engine_t, close_req));
  /* Nothing else runs now: free the big buffers here, off the loop. */
  for (tb__engine_adapter_t *a = e->adapters; a != NULL; a = a->next) {
    tb__lora_free(&a->lora);
    free(a->shard_grads);
  }
  for (tb__engine_model_t *m = e->models; m != NULL; m = m->next)
    tb__weights_free(&m->weights);
  for (size_t i = 0; i < e->ws_free_len; i++)
    tb__llama_ws_free(e->ws_free[i]);
  e->ws_free_len = 0;
}

static void close_after(uv_work_t *req, int status) {
  (void)status;
  tb__engine_t *e = (tb__engine_t *)((char *)req -
                                   offsetof(tb__engine_t, close_req));
  while (e->adapters != NULL) {
    tb__engine_adapter_t *a = e->adapters;
    e->adapters = a->next;
    free(a);
  }
  while (e->models != NULL) {
    tb__engine_model_t *m = e->models;
    e->models = m->next;
    tb__engine_model_free_struct(m);
  }
  free(e->ws_free);
  e->ws_free = NULL;
  e->ws_free_cap = 0;
  if (e->close_cb != NULL)
    e->close_cb(e);
}

void tb__engine_maybe_close(tb__engine_t *e) {
  if (!e->closing || e->close_queued || e->active != NULL ||
      e->pending_work != 0 || e->decoders != 0)
    return;
  e->close_queued = 1;
  uv_queue_work(e->loop, &e->close_req, close_work, close_after);
}

int tb__engine_close(tb__engine_t *e, tb__engine_close_cb close_cb) {
  if (e->closing)
    return TB_ECLOSING;
  e->closing = 1;
  e->close_cb = close_cb;
  /* Waiting items never reach a worker: queue them as no-ops that
   * complete with TB_ECANCELED. */
  while (e->wait_head != NULL) {
    tb__engine_shard_t *it = e->wait_head;
    e->wait_head = it->wait_next;
    it->skip = TB_ECANCELED;
    item_start(e, it);
  }
  e->wait_tail = NULL;
  /* Items a worker has not picked up yet are cancelled; running ones
   * finish normally. */
  for (tb__engine_job_t *job = e->active; job != NULL; job = job->active_next)
    for (size_t i = 0; i < job->num_items; i++)
      if (job->items[i].queued)
        uv_cancel((uv_req_t *)&job->items[i].req);
  for (tb__engine_model_t *m = e->models; m != NULL; m = m->next)
    tb__engine_decoder_close(m, 0);
  tb__engine_maybe_close(e);
  return 0;
}

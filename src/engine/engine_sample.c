/*
 * The engine's sample jobs (see engine.h, tb__engine_sample): every sample
 * job of a model is a sequence of the model's one decoder (decode.h),
 * which decodes the sequences of all requests and adapters together, one
 * step at a time.  This file is the scheduler that drives it: it opens the
 * decoder at the model's first sample, admits jobs in submission order
 * while the KV pool has room (the others wait, reported as capacity), runs
 * a step whenever sequences are running and none is under way, and
 * completes each job when its sequence finishes, fails or is cancelled.
 *
 * Everything here runs on the loop thread.  The adapter's FIFO
 * (engine.c) guarantees that an adapter's weights do not change while any
 * of its sequences decodes: a run of sample jobs starts together, and a
 * job that writes the weights waits for the run to end.
 *
 * Non-goals: the order of jobs inside an adapter (engine.c), HTTP and
 * futures (the server), the math (decode*.c).
 */
#include "engine/engine_internal.h"

#include <stdlib.h>
#include <string.h>

static void step_kick(tb__engine_decoder_t *d);
static void admit(tb__engine_decoder_t *d);

/* ------------------------------------------------------------ the queue */

static void queue_push(tb__engine_decoder_t *d, tb__engine_job_t *job) {
  job->dec_next = NULL;
  job->dec_queued = 1;
  if (d->wait_tail)
    d->wait_tail->dec_next = job;
  else
    d->wait_head = job;
  d->wait_tail = job;
}

static void queue_remove(tb__engine_decoder_t *d, tb__engine_job_t *job) {
  tb__engine_job_t *prev = NULL;
  for (tb__engine_job_t *j = d->wait_head; j != NULL; prev = j, j = j->dec_next) {
    if (j != job)
      continue;
    if (prev)
      prev->dec_next = j->dec_next;
    else
      d->wait_head = j->dec_next;
    if (d->wait_tail == j)
      d->wait_tail = prev;
    break;
  }
  job->dec_next = NULL;
  job->dec_queued = 0;
}

/* ------------------------------------------------------------ completion */

static void seq_drop(tb__engine_job_t *job) {
  if (job->seq != NULL) {
    tb__dec_seq_free(job->seq);
    job->seq = NULL;
  }
}

/* The job's sequence ended (or never began): it leaves the decoder's
 * books and completes now (from a step's callback) or later. */
static void job_end(tb__engine_job_t *job, int rc, tb_error_t *err, int now) {
  tb__engine_model_t *m = job->held;
  tb__engine_decoder_t *d = m->decoder;
  if (job->dec_queued)
    queue_remove(d, job);
  if (job->dec_admitted) {
    job->dec_admitted = 0;
    d->running--;
  }
  seq_drop(job);
  if (now) {
    if (rc != 0 && err != NULL) {
      job->error = *err;
      memset(err, 0, sizeof(*err));
    }
    tb__engine_job_finish(job, rc);
  } else {
    tb__engine_job_fail_later(job, rc, err);
  }
}

static void nonfinite_error(const tb__engine_job_t *job, tb_error_t *err) {
  /* No tokens from noise: the weights, not the request, are broken, but
   * it is the user's adapter (or model) that made them so. */
  tb_error_clear(err);
  tb_error_set(err, TB_ENONFINITE, TB_CATEGORY_USER, "%s",
               job->target != NULL
                   ? "the model's outputs are not finite (NaN or infinity): "
                     "the adapter has diverged; load an earlier checkpoint "
                     "or train with a lower learning rate"
                   : "the model's outputs are not finite (NaN or infinity): "
                     "the base model's weights are broken");
}

static void reap(tb__engine_decoder_t *d) {
  tb__dec_seq_t *s;
  while ((s = tb__dec_next_finished(&d->dec)) != NULL) {
    tb__engine_job_t *job = s->data;
    if (s->state == TB_DEC_DONE) {
      tb__dec_seq_take(s, &job->sample);
      job_end(job, 0, NULL, 1);
      continue;
    }
    tb_error_t err = { 0 };
    int rc = s->status != 0 ? s->status : TB_ECANCELED;
    if (rc == TB_ENONFINITE)
      nonfinite_error(job, &err);
    else
      tb_error_set(&err, rc, s->error.code ? s->error.category
                                           : TB_CATEGORY_SERVER,
                   "%s", s->error.code ? tb_error_message(&s->error)
                                       : tb_strerror(rc));
    job_end(job, rc, &err, 1);
  }
}

/* ------------------------------------------------------------ steps */

static void on_step(tb__dec_t *dec, int status) {
  tb__engine_decoder_t *d = dec->data;
  tb__engine_t *e = d->model->engine;
  (void)status;  /* TB_ECANCELED while closing: the close completes them */
  reap(d);
  admit(d);
  step_kick(d);
  /* Slots the step held may go to training items again. */
  tb__engine_pump(e);
  tb__engine_maybe_close(e);
}

static void fail_running(tb__engine_decoder_t *d, int rc) {
  for (tb__engine_job_t *j = d->model->engine->active, *next; j != NULL; j = next) {
    next = j->active_next;
    if (j->type == TB_ENGINE_SAMPLE && j->held == d->model && j->dec_admitted) {
      tb_error_t err = { 0 };
      tb_error_set(&err, rc, TB_CATEGORY_SERVER, "cannot run a decode step: %s",
                   tb_strerror(rc));
      job_end(j, rc, &err, 0);
    }
  }
}

static void step_kick(tb__engine_decoder_t *d) {
  if (!d->open || d->closing || d->dec.stepping || tb__dec_running(&d->dec) == 0)
    return;
  int rc = tb__dec_step(&d->dec, on_step);
  if (rc != 0)
    fail_running(d, rc);  /* out of memory planning the step */
}

size_t tb__engine_decode_items(const tb__engine_t *e) {
  size_t n = 0;
  for (const tb__engine_model_t *m = e->models; m != NULL; m = m->next)
    if (m->decoder != NULL && m->decoder->dec.stepping)
      n += m->decoder->dec.items;
  return n;
}

void tb__engine_decode_stats(const tb__engine_model_t *m,
                             tb__engine_decode_stats_t *out) {
  memset(out, 0, sizeof(*out));
  const tb__engine_decoder_t *d = m->decoder;
  if (d == NULL)
    return;
  for (const tb__engine_job_t *j = d->wait_head; j != NULL; j = j->dec_next)
    out->waiting++;
  if (!d->open)
    return;
  out->open = 1;
  out->running = d->running;
  out->steps = d->dec.steps;
  out->kv_blocks = d->dec.pool.num_blocks;
  out->kv_room = tb__dec_room(&d->dec);
  out->block_tokens = d->dec.pool.block_tokens;
  out->prefix_hits = d->dec.pool.hits;
}

/* ------------------------------------------------------------ admission */

static tb__dec_adapter_t adapter_of(const tb__engine_job_t *job) {
  tb__dec_adapter_t ad = { NULL, { 0, 0 } };
  if (job->target != NULL) {
    ad.lora = &job->target->lora;
    ad.key.adapter = job->target->id;
    ad.key.version = job->target->version;
  }
  return ad;
}

/* Admits the waiting jobs in order while the pool has room. */
static void admit(tb__engine_decoder_t *d) {
  if (!d->open || d->closing)
    return;
  tb__engine_job_t *job;
  while ((job = d->wait_head) != NULL) {
    if (job->seq == NULL) {
      tb__dec_adapter_t ad = adapter_of(job);
      tb_error_t err = { 0 };
      int rc = tb__dec_seq_new(&d->dec, &ad, job->prompt, job->prompt_len,
                               &job->sampling, &job->seq, &err);
      if (rc != 0) {
        job_end(job, rc, &err, 0);
        continue;
      }
      job->seq->data = job;
    }
    int rc = tb__dec_seq_add(job->seq);
    if (rc == TB_EBUSY) {
      /* Everything behind waits too: admission keeps submission order. */
      for (tb__engine_job_t *j = job; j != NULL; j = j->dec_next)
        if (!j->capacity_waiting && j->on_capacity != NULL) {
          j->capacity_waiting = 1;
          j->on_capacity(j, 1);
        }
      break;
    }
    if (rc != 0) {
      job_end(job, rc, NULL, 0);
      continue;
    }
    queue_remove(d, job);
    job->dec_admitted = 1;
    d->running++;
    if (job->capacity_waiting) {
      job->capacity_waiting = 0;
      job->on_capacity(job, 0);
    }
    if (job->on_start != NULL)
      job->on_start(job);
  }
}

static void on_open(tb__dec_t *dec, int status) {
  tb__engine_decoder_t *d = dec->data;
  if (status == 0 && !d->closing) {
    d->open = 1;
    admit(d);
    step_kick(d);
    return;
  }
  /* The weights' decoding view or the pool could not be made: the
   * waiting jobs fail, and the decoder closes (a later sample tries
   * again). */
  while (d->wait_head != NULL) {
    tb_error_t err = { 0 };
    tb_error_set(&err, status, status == TB_ECANCELED ? TB_CATEGORY_CANCELLED
                                                      : TB_CATEGORY_SERVER,
                 "cannot open the model's decoder: %s", tb_strerror(status));
    job_end(d->wait_head, status, &err, 0);
  }
  tb__engine_decoder_close(d->model, 0);
}

static int decoder_new(tb__engine_model_t *m) {
  tb__engine_t *e = m->engine;
  tb__engine_decoder_t *d = calloc(1, sizeof(*d));
  if (d == NULL)
    return TB_ENOMEM;
  d->model = m;
  d->dec.data = d;
  tb__dec_opts_t opts = { 0 };
  opts.kv_bytes = e->kv_bytes;
  opts.max_decode_rows = e->decode_rows;
  int rc = tb__dec_open(e->loop, &d->dec, &m->weights, &opts, on_open);
  if (rc != 0) {
    free(d);
    return rc;
  }
  m->decoder = d;
  e->decoders++;
  return 0;
}

int tb__engine_sample_start(tb__engine_job_t *job) {
  tb__engine_model_t *m = job->held;
  if (job->cancelled)
    return tb_error_set(&job->error, TB_ECANCELED, TB_CATEGORY_CANCELLED,
                        "the sample request was cancelled");
  if (m->decoder == NULL || m->decoder->closing) {
    if (m->decoder != NULL)
      return tb_error_set(&job->error, TB_EBUSY, TB_CATEGORY_SERVER,
                          "the model's decoder is restarting");
    int rc = decoder_new(m);
    if (rc != 0)
      return tb_error_set(&job->error, rc, TB_CATEGORY_SERVER,
                          "cannot open the model's decoder: %s",
                          tb_strerror(rc));
  }
  tb__engine_decoder_t *d = m->decoder;
  queue_push(d, job);
  admit(d);
  step_kick(d);
  return 0;
}

/* ------------------------------------------------------------ cancel, close */

void tb__engine_sample_cancel(tb__engine_job_t *job) {
  tb__engine_model_t *m = job->held;
  if (job->cancelled || m == NULL)
    return;
  if (!job->started) {  /* its adapter's FIFO holds it: it never starts */
    job->cancelled = 1;
    return;
  }
  if (m->decoder == NULL || (!job->dec_queued && !job->dec_admitted))
    return;  /* completed or completing */
  job->cancelled = 1;
  tb_error_t err = { 0 };
  tb_error_set(&err, TB_ECANCELED, TB_CATEGORY_CANCELLED,
               "the sample request was cancelled");
  job_end(job, TB_ECANCELED, &err, 0);
  admit(m->decoder);  /* its room may let the next one in */
  step_kick(m->decoder);
}

static void on_closed(tb__dec_t *dec) {
  tb__engine_decoder_t *d = dec->data;
  tb__engine_model_t *m = d->model;
  tb__engine_t *e = m->engine;
  int destroy = d->destroy;
  if (m->decoder == d)
    m->decoder = NULL;
  free(d);
  e->decoders--;
  if (destroy)
    tb__engine_model_destroy_now(m);
  tb__engine_pump(e);
  tb__engine_maybe_close(e);
}

int tb__engine_decoder_close(tb__engine_model_t *m, int destroy) {
  tb__engine_decoder_t *d = m->decoder;
  if (d == NULL)
    return 0;
  d->destroy |= destroy;
  if (d->closing)
    return 1;
  d->closing = 1;
  /* Every job it still serves is cancelled; none is left when the model
   * itself goes (each holds a reference). */
  for (tb__engine_job_t *j = m->engine->active, *next; j != NULL; j = next) {
    next = j->active_next;
    if (j->type == TB_ENGINE_SAMPLE && j->held == m &&
        (j->dec_queued || j->dec_admitted)) {
      tb_error_t err = { 0 };
      tb_error_set(&err, TB_ECANCELED, TB_CATEGORY_CANCELLED,
                   "the engine closed before the job ran");
      job_end(j, TB_ECANCELED, &err, 0);
    }
  }
  tb__dec_close(&d->dec, on_closed);
  return 1;
}

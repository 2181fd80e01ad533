/*
 * The scheduler of the training part: when each op may run.  A model's
 * ops run strictly in seq_id order (the SDK numbers them from 1,
 * create_model being 0): a later seq_id waits in the model's list until
 * the missing earlier ones arrive, and only then goes to the engine (by
 * tr->start, training.c), whose per-adapter FIFO keeps that order.  A
 * seq_id seen again is answered with the first one's request_id (retries
 * of the SDK resend it); one older than the remembered window is refused,
 * one too far ahead is back-pressure (429).  Creates are held, in arrival
 * order, behind their base model's load and their user's model limit
 * (the fairness between users).  Also: the registry of models (each is
 * its queue), the queue position and state a pending future reports.
 *
 * Not here: what an op does on the engine and how its result is encoded
 * (training.c), the engine's own FIFOs and worker capacity (engine/).
 * The batching of samples across requests is to join here.
 */
#include "server/sched.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ models */

tb__tbase_t *tb__tbase_find(tb__training_t *tr, tb_slice_t name) {
  for (size_t i = 0; i < tr->n_bases; i++)
    if (tb__slice_eq_str(name, tr->bases[i].name))
      return &tr->bases[i];
  return NULL;
}

int tb__tbase_field(tb__jctx_t *c, tb__training_t *tr, tb_slice_t name, int hint,
                    tb__tbase_t **out) {
  *out = tb__tbase_find(tr, name);
  if (*out != NULL)
    return 0;
  return tb__jctx_fail_at(c, "base_model", "unknown model \"%.*s\"%s",
                          (int)(name.len > 80 ? 80 : name.len), name.base,
                          hint ? " (see get_server_capabilities)" : "");
}

tb__tmodel_t *tb__tmodel_find(tb__http_request_t *req, tb_slice_t id) {
  tb__training_t *tr = tb__training_of(req);
  for (tb__tmodel_t *m = tr->models; m != NULL; m = m->next)
    if (m->owner == tb__sreq(req)->user && m->session != NULL && !m->unloading &&
        tb__slice_eq_str(id, m->id))
      return m;
  if (tb__session_gone(req, id))
    return NULL;
  tb__server_respond_error(req, 404, "model %.*s: unknown model",
                           (int)(id.len > 120 ? 120 : id.len), id.base);
  return NULL;
}

void tb__model_free(tb__tmodel_t *m) {
  /* Ops a client sent before the model existed, when its creation
   * failed. */
  while (m->waiting != NULL) {
    tb__top_t *w = m->waiting;
    m->waiting = w->next;
    tb__top_fail(w, TB_CATEGORY_USER, "the model could not be created");
  }
  if (m->pending_unload != NULL)
    tb__top_fail(m->pending_unload, TB_CATEGORY_USER, "the model could not be created");
  free(m->id);
  free(m);
}

void tb__model_unlink(tb__training_t *tr, tb__tmodel_t *m, int counted) {
  for (tb__tmodel_t **p = &tr->models; *p != NULL; p = &(*p)->next)
    if (*p == m) {
      *p = m->next;
      break;
    }
  if (counted && m->owner->n_models > 0)
    m->owner->n_models--;
}

tb__tmodel_t *tb__model_register(tb__training_t *tr, tb__top_t *op, tb__user_t *owner,
                                 tb__session_t *s, tb__tbase_t *base, char *id,
                                 const tb__lora_config_t *lora) {
  tb__tmodel_t *m = calloc(1, sizeof(*m));
  if (m == NULL)
    return NULL;
  tb__top_t *fop = op->then ? op->then : op;
  op->need_lora = lora == NULL;
  m->tr = tr;
  m->id = id;
  m->owner = owner;
  m->session = s;
  m->base = base;
  if (lora != NULL)
    m->lora = *lora;
  m->next_seq = 1;
  m->max_seq = 0;
  for (size_t i = 0; i < TB__SEQ_WINDOW; i++)
    m->recent[i].seq = -1;
  if (fop->future != NULL)
    memcpy(m->create_id, fop->future->id, sizeof(m->create_id));
  m->next = tr->models;
  tr->models = m;
  if (s != NULL)
    tb__session_add_training_run(s, id);
  op->model = m;
  if (op->then != NULL)
    op->then->model = m;
  /* Held first, so that creates start in arrival order. */
  tb__top_t **p = &tr->held;
  while (*p != NULL)
    p = &(*p)->next;
  *p = op;
  return m;
}

/* ------------------------------------------------------------ order */

/* queue_position of a pending future's op: the jobs it waits behind. */
size_t tb__sched_position(const tb__future_t *f) {
  const tb__top_t *op = f->data;
  if (op == NULL)
    return 0;
  if (op->job.engine != NULL)  /* submitted to the engine */
    return tb__engine_job_position(&op->job);
  size_t k = 0;
  for (const tb__top_t *p = op->tr->held; p != NULL; p = p->next, k++)
    if (p == op)
      return k;  /* creates ahead of it */
  const tb__tmodel_t *m = op->model;
  if (m == NULL)
    return 0;
  k = m->adapter != NULL ? tb__engine_adapter_jobs(m->adapter) : 0;
  for (const tb__top_t *p = m->waiting; p != NULL; p = p->next, k++)
    if (p == op)
      return k;  /* its model's jobs, and the ops of lower seq_id */
  return 0;
}

/* The engine is full (its work items, or for a sample the decoder's KV
 * pool): the client's poll says paused_capacity until the job's work
 * starts. */
void tb__sched_on_capacity(tb__engine_job_t *job, int waiting) {
  tb__top_t *op = job->data;
  tb__future_t *f = tb__top_client_future(op);
  if (f != NULL)
    tb__future_set_queue_state(f, waiting ? TB__QUEUE_PAUSED_CAPACITY : TB__QUEUE_ACTIVE,
                               !waiting ? NULL
                               : job->type == TB_ENGINE_SAMPLE
                                   ? "the model's KV memory is full: the sample waits for "
                                     "sequences to finish"
                                   : "every worker is busy with other models' jobs");
}

void tb__sched_drain(tb__tmodel_t *m) {
  while (m->ready && !m->unloading && !m->blocked && m->waiting != NULL &&
         m->waiting->seq == m->next_seq) {
    tb__top_t *op = m->waiting;
    m->waiting = op->next;
    op->next = NULL;
    m->next_seq++;
    m->tr->start(op);
  }
}

int tb__submit_ordered_id(tb__http_request_t *req, tb__top_t *op, char id[TB__FUTURE_ID_MAX]) {
  tb__tmodel_t *m = op->model;
  int64_t seq = op->seq;
  if (seq < 0)
    seq = (m->max_seq + 1 > m->next_seq ? m->max_seq + 1 : m->next_seq);
  size_t slot = (size_t)(seq % TB__SEQ_WINDOW);
  if (m->recent[slot].seq == seq) {
    /* A retry: the first one's future answers it. */
    memcpy(id, m->recent[slot].id, TB__FUTURE_ID_MAX);
    tb__top_free(op);
    return 0;
  }
  if (seq < m->next_seq) {
    tb__server_respond_error(req, 400,
                             "seq_id: %lld is out of order for model %s (the next "
                             "operation is %lld)",
                             (long long)seq, m->id, (long long)m->next_seq);
    tb__top_free(op);
    return -1;
  }
  if (seq >= m->next_seq + TB__SEQ_WINDOW) {
    /* The bound of a model's queue: back-pressure the client retries,
     * not a user error (a large pipelined batch may get here). */
    static const tb__http_header_t h = { TB_SLICE_LIT("Retry-After"), TB_SLICE_LIT("1") };
    tb__server_respond_error_h(req, 429, &h, 1,
                               "seq_id: %lld is %d or more ahead of model %s's next "
                               "operation (%lld); retry once earlier ones ran",
                               (long long)seq, TB__SEQ_WINDOW, m->id, (long long)m->next_seq);
    tb__top_free(op);
    return -1;
  }
  if (tb__top_accept(req, op) != 0)
    return -1;
  op->seq = seq;
  m->recent[slot].seq = seq;
  memcpy(m->recent[slot].id, op->future->id, sizeof(m->recent[slot].id));
  memcpy(id, op->future->id, TB__FUTURE_ID_MAX);
  if (seq > m->max_seq)
    m->max_seq = seq;
  tb__top_t **p = &m->waiting;
  while (*p != NULL && (*p)->seq < seq)
    p = &(*p)->next;
  op->next = *p;
  *p = op;
  tb__sched_drain(m);
  return 0;
}

void tb__submit_ordered(tb__http_request_t *req, tb__top_t *op) {
  tb__tmodel_t *m = op->model;
  char id[TB__FUTURE_ID_MAX];
  /* The model outlives the drain: only an unload or a failed create
   * frees it, and neither runs from there. */
  if (tb__submit_ordered_id(req, op, id) == 0)
    tb__respond_future(req, id, m->id);
}

static void set_create_state(tb__top_t *op, tb__queue_state_t state, const char *reason) {
  tb__future_t *f = tb__top_client_future(op);
  if (f != NULL)
    tb__future_set_queue_state(f, state, reason);
}

void tb__start_held(tb__training_t *tr) {
  tb__top_t **p = &tr->held;
  while (*p != NULL) {
    tb__top_t *op = *p;
    tb__tmodel_t *m = op->model;
    tb__tbase_t *b = m->base;
    if (b->state < 0) {
      /* For good: the client is told why at once (a server failure would
       * have it poll on until the result expires). */
      *p = op->next;
      tb__model_unlink(tr, m, 0);
      tb__model_free(m);
      tb__top_fail(op, TB_CATEGORY_USER, b->error ? b->error : "the base model failed to load");
      continue;
    }
    if (b->state == 0 || tb__server_user_at_model_limit(tr->srv, m->owner)) {
      set_create_state(op, b->state == 0 ? TB__QUEUE_ACTIVE : TB__QUEUE_PAUSED_RATE_LIMIT,
                       b->state == 0 ? NULL
                                     : "the user has as many models loaded as allowed");
      p = &op->next;
      continue;
    }
    *p = op->next;
    op->next = NULL;
    m->owner->n_models++;
    set_create_state(op, TB__QUEUE_ACTIVE, NULL);
    tr->start(op);
  }
}

/*
 * The engine's model registry (see engine.h): base models by name, loaded
 * once (LOAD_MODEL jobs through the scheduler of engine.c, later loads of
 * the same model waiting for the first) or added by the caller, and freed
 * off the loop when their last reference goes.  Not the scheduling of
 * jobs, which is engine.c's.
 *
 * Everything in this file runs on the loop thread.
 */
#include "engine/engine_internal.h"

#include <stdlib.h>
#include <string.h>

#include "engine/base_model.h"
#include "engine/weights.h"

static void model_free_work(uv_work_t *req) {
  tb__engine_model_t *m = (tb__engine_model_t *)((char *)req -
                         offsetof(tb__engine_model_t, free_req));
  tb__weights_free(&m->weights);
}

void tb__engine_model_free_struct(tb__engine_model_t *m) {
  free(m->name);
  free(m->source);
  free(m);
}

static void model_free_after(uv_work_t *req, int status) {
  (void)status;  /* never cancelled: close does not cancel these */
  tb__engine_model_t *m = (tb__engine_model_t *)((char *)req -
                         offsetof(tb__engine_model_t, free_req));
  tb__engine_t *e = m->engine;
  e->pending_work--;
  tb__engine_model_free_struct(m);
  tb__engine_maybe_close(e);
}

static void model_unlink(tb__engine_model_t *m) {
  tb__engine_model_t **p = &m->engine->models;
  while (*p != NULL && *p != m)
    p = &(*p)->next;
  if (*p == m)
    *p = m->next;
}

/* Weights can be hundreds of megabytes, so they are released off the
 * loop, after the model's decoder (which reads them) has closed. */
void tb__engine_model_destroy_now(tb__engine_model_t *m) {
  tb__engine_t *e = m->engine;
  e->pending_work++;
  uv_queue_work(e->loop, &m->free_req, model_free_work, model_free_after);
}

static void model_destroy(tb__engine_model_t *m) {
  model_unlink(m);
  if (!tb__engine_decoder_close(m, 1))
    tb__engine_model_destroy_now(m);
}

tb__engine_model_t *tb__engine_model_find(tb__engine_t *e, const char *name) {
  for (tb__engine_model_t *m = e->models; m != NULL; m = m->next)
    if (m->loaded && strcmp(m->name, name) == 0)
      return m;
  return NULL;
}

static tb__engine_model_t *model_lookup(tb__engine_t *e, const char *name) {
  for (tb__engine_model_t *m = e->models; m != NULL; m = m->next)
    if (strcmp(m->name, name) == 0)
      return m;
  return NULL;
}

void tb__engine_model_unref(tb__engine_model_t *m) {
  if (m == NULL || m->refs == 0)
    return;
  if (--m->refs == 0 && m->loaded)
    model_destroy(m);
}

const char *tb__engine_model_name(const tb__engine_model_t *m) {
  return m->name;
}

const tb__weights_t *tb__engine_model_weights(const tb__engine_model_t *m) {
  return &m->weights;
}

static tb__engine_model_t *model_new(tb__engine_t *e, const char *name,
                                    size_t name_len, const char *source) {
  tb__engine_model_t *m = calloc(1, sizeof(*m));
  if (m == NULL)
    return NULL;
  m->engine = e;
  m->name = malloc(name_len + 1);
  m->source = strdup(source);
  if (m->name == NULL || m->source == NULL) {
    tb__engine_model_free_struct(m);
    return NULL;
  }
  memcpy(m->name, name, name_len);
  m->name[name_len] = '\0';
  return m;
}

int tb__engine_model_add(tb__engine_t *e, const char *name, tb__weights_t *w,
                         tb__engine_model_t **out) {
  tb__weights_t taken = *w;
  memset(w, 0, sizeof(*w));
  int rc = 0;
  if (e->closing)
    rc = TB_ECLOSING;
  else if (model_lookup(e, name) != NULL)
    rc = TB_EEXIST;
  else if (tb__model_config_validate(&taken.config, NULL) != 0)
    rc = TB_EINVAL;
  tb__engine_model_t *m = NULL;
  if (rc == 0) {
    m = model_new(e, name, strlen(name), name);
    if (m == NULL)
      rc = TB_ENOMEM;
  }
  if (rc != 0) {
    tb__weights_free(&taken);
    return rc;
  }
  m->weights = taken;
  m->loaded = 1;
  m->refs = 1;
  m->next = e->models;
  e->models = m;
  *out = m;
  return 0;
}

/* A model load that found the model already loaded still completes
 * through the threadpool, so that the callback never runs inside the
 * submission. */
static void work_nothing(tb__engine_shard_t *it) { it->status = 0; }

int tb__engine_load_model(tb__engine_job_t *job, tb__engine_t *e,
                          const char *spec, tb__engine_job_cb cb) {
  int rc = tb__engine_job_begin(job, e, TB_ENGINE_LOAD_MODEL, cb);
  if (rc != 0)
    return rc;
  if (spec == NULL || spec[0] == '\0')
    return tb_error_set(&job->error, TB_EINVAL, TB_CATEGORY_USER,
                        "base_model: empty model name");
  const char *eq = strchr(spec, '=');
  size_t name_len = eq ? (size_t)(eq - spec) : strlen(spec);
  const char *source = eq ? eq + 1 : spec;
  if (eq != NULL && (name_len == 0 || *source == '\0'))
    return tb_error_set(&job->error, TB_EINVAL, TB_CATEGORY_USER,
                        "base_model: \"%s\" is not NAME=DIRECTORY", spec);
  tb__engine_model_t *m = NULL;
  for (tb__engine_model_t *x = e->models; x != NULL; x = x->next)
    if (strlen(x->name) == name_len && memcmp(x->name, spec, name_len) == 0)
      m = x;
  if (m != NULL && eq != NULL && strcmp(m->source, source) != 0)
    return tb_error_set(&job->error, TB_EEXIST, TB_CATEGORY_USER,
                        "base_model: %.*s is already loaded from %s",
                        (int)name_len, spec, m->source);
  if (m == NULL && eq == NULL && strcmp(spec, TB_BASE_MODEL_NAME) != 0)
    return tb_error_set(&job->error, TB_ENOTFOUND, TB_CATEGORY_USER,
                        "base_model: unknown model \"%s\"", spec);
  if (m != NULL && !m->loaded) {
    /* Loading already: wait for that load. */
    job->held = m;
    tb__engine_job_t **tail = &m->waiters;  /* in arrival order */
    while (*tail != NULL)
      tail = &(*tail)->queue_next;
    *tail = job;
    tb__engine_active_add(e, job);
    return 0;
  }
  if (m != NULL) {
    if ((rc = tb__engine_items_alloc(job, 1, work_nothing, 0)) != 0)
      return rc;
    m->refs++;
    job->model = m;
    job->held = m;
    job->started = 1;
    tb__engine_active_add(e, job);
    tb__engine_item_submit(e, &job->items[0]);
    return 0;
  }
  m = model_new(e, spec, name_len, source);
  if (m == NULL)
    return tb_error_set(&job->error, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "out of memory");
  job->held = m;
  if ((rc = tb__engine_job_start(job)) != 0) {
    tb__engine_model_free_struct(m);
    return rc;
  }
  m->next = e->models;
  e->models = m;
  tb__engine_active_add(e, job);
  return 0;
}

/* The loader's load finished: every job waiting for it completes. */
void tb__engine_load_model_done(tb__engine_job_t *job, int status) {
  tb__engine_model_t *m = job->held;
  if (m->loaded) {  /* it was loaded before this job: nothing to do */
    tb__engine_job_finish(job, status);
    return;
  }
  /* The waiters complete in arrival order after the loader. */
  tb__engine_job_t *waiters = m->waiters;
  m->waiters = NULL;
  if (status == 0) {
    m->loaded = 1;
    m->refs++;
    job->model = m;
    for (tb__engine_job_t *w = waiters; w != NULL; w = w->queue_next) {
      m->refs++;
      w->model = m;
    }
  } else {
    model_unlink(m);
    for (tb__engine_job_t *w = waiters; w != NULL; w = w->queue_next)
      tb_error_copy(&w->error, &job->error);
  }
  tb__engine_job_finish(job, status);
  while (waiters != NULL) {
    tb__engine_job_t *next = waiters->queue_next;
    waiters->queue_next = NULL;
    tb__engine_job_finish(waiters, status);
    waiters = next;
  }
  if (status != 0)
    tb__engine_model_free_struct(m);  /* weights were never filled */
}

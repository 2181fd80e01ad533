/*
 * The training part of the server: an extension owning an engine on the
 * server's loop, the models (LoRA adapters over its base models) and the
 * ops the routes (model_routes.c, sampling_routes.c) submit: what each op
 * does on the engine (start_op), its result (on_job), the checkpoint
 * directories a save makes, the session expiry, the base models' loads and
 * the part's lifecycle.
 *
 * Not here: when an op runs (sched.c: seq_id order, held creates), an
 * op's life (ops.c).
 */
#include "server/training.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "engine/base_model.h"
#include "engine/checkpoint.h"
#include "server/sched.h"
#include "server/store.h"
#include "server/tinkerbell.h"
#include "wire/op_result.h"
#include "wire/output.h"

/* ------------------------------------------------------------ ops */

/* ------------------------------------------------------------ models */

static void start_op(tb__top_t *op);
static void training_free(tb__training_t *tr);

/* ------------------------------------------------------------ results */

static void on_forward(tb__top_t *op) {
  tb__engine_job_t *j = &op->job;
  const tb__batch_t *b = &op->batch;
  tb__wire_fwdbwd_output_t o = { 0 };
  o.loss_fn_output_type = "ArrayRecord";
  o.n_outputs = b->num_data;
  o.outputs = tb__arena_calloc(&op->arena, b->num_data + 1, sizeof(*o.outputs));
  o.metrics = tb__arena_calloc(&op->arena, j->num_metrics + 1, sizeof(*o.metrics));
  int ok = o.outputs != NULL && o.metrics != NULL;
  size_t at = 0;
  for (size_t i = 0; ok && i < b->num_data; i++) {
    const tb__datum_t *d = &b->data[i];
    size_t k = d->k ? d->k : 1;
    tb__wire_named_tensor_t *f = tb__arena_calloc(&op->arena, 1, sizeof(*f));
    ok = f != NULL && at + d->n * k <= j->num_logprobs;
    if (!ok)
      break;
    f->name = "logprobs";
    f->tensor.dtype = TB_DTYPE_FLOAT32;
    f->tensor.ndim = k > 1 ? 2 : 1;
    f->tensor.shape[0] = (int64_t)d->n;
    f->tensor.shape[1] = (int64_t)k;
    f->tensor.numel = d->n * k;
    f->tensor.f32 = j->logprobs + at;
    at += d->n * k;
    o.outputs[i].fields = f;
    o.outputs[i].n_fields = 1;
  }
  for (size_t i = 0; ok && i < j->num_metrics; i++) {
    o.metrics[i].name = j->metrics[i].key;
    o.metrics[i].value = j->metrics[i].value;
  }
  o.n_metrics = j->num_metrics;
  json_t *v = ok ? tb__wire_fwdbwd_output_to_json(&o) : NULL;
  tb__buf_t pb = { 0 };
  int rc = v ? tb__wire_fwdbwd_output_to_proto(&o, &pb) : TB_ENOMEM;
  tb__top_resolve_encoded(op, v, &pb, rc, "cannot encode the output");
}

static void on_job(tb__engine_job_t *job, int status) {
  tb__top_t *op = job->data;
  tb__tmodel_t *m = op->model;
  tb__store_job_done(op, status);  /* runs and checkpoints in the database */
  if (status != 0) {
    if (op->type == TB__OP_CREATE) {
      tb__model_unlink(op->tr, m, 1);
      tb__model_free(m);
      tb__start_held(op->tr);
    }
    tb__top_fail_job(op, status);
    return;
  }
  if (op->encode != NULL && op->type != TB__OP_CREATE && op->type != TB__OP_UNLOAD) {
    /* The Tinkerbell dialect's result. */
    tb__top_resolve_json(op, op->encode(op));
    return;
  }
  json_t *v = NULL;
  switch (op->type) {
  case TB__OP_CREATE:
    m->adapter = job->adapter;
    m->ready = 1;
    v = op->encode ? op->encode(op)
                   : tb__wire_op_result_to_json(
                         &(tb__wire_op_result_t){ .model_id = m->id, .type = "create_model" });
    tb__top_t *then = op->then;
    op->then = NULL;
    tb__top_resolve_json(op, v);
    if (then != NULL)
      start_op(then);  /* before any seq_id of the client */
    if (m->unloading) {
      /* Unloaded, or its session expired, while it was being created. */
      tb__top_t *u = m->pending_unload;
      m->pending_unload = NULL;
      tb__unload_now(m, u);
    } else {
      tb__sched_drain(m);
    }
    return;
  case TB__OP_FORWARD:
  case TB__OP_FORWARD_BACKWARD:
    on_forward(op);
    return;
  case TB__OP_OPTIM: {
    tb__wire_metric_t ms[TB_ENGINE_MAX_METRICS];
    size_t n = job->num_metrics < TB_ENGINE_MAX_METRICS ? job->num_metrics
                                                         : TB_ENGINE_MAX_METRICS;
    for (size_t i = 0; i < n; i++)
      ms[i] = (tb__wire_metric_t){ job->metrics[i].key, job->metrics[i].value };
    v = tb__wire_optim_result_to_json(&(tb__wire_optim_result_t){ ms, n });
    break;
  }
  case TB__OP_SAVE:
    v = tb__wire_op_result_to_json(
        &(tb__wire_op_result_t){ .path = op->tinker_path, .type = "save_weights" });
    break;
  case TB__OP_SAVE_SAMPLER: {
    tb__wire_op_result_t r = { .path = op->tinker_path, .type = "save_weights_for_sampler" };
    if (op->sampler_seq >= 0) {
      char *id = tb__asprintf("%s:sample:%lld", m->session->id, (long long)op->sampler_seq);
      tb__sampler_t *s = id ? tb__sampler_find(op->tr, m->owner, id) : NULL;
      if (s != NULL) {
        free(id);
      } else if (id != NULL) {
        tb_slice_t path = { op->tinker_path, strlen(op->tinker_path) };
        s = tb__sampler_open(op->tr, m->owner, m->session, m->base, id, &path, op->dir,
                             &m->lora);
        op->dir = NULL;  /* the sampler's now */
      }
      if (s == NULL) {
        tb__top_fail(op, TB_CATEGORY_SERVER, "out of memory");
        return;
      }
      r.sampling_session_id = s->id;
    }
    v = tb__wire_op_result_to_json(&r);
    break;
  }
  case TB__OP_LOAD:
    v = tb__wire_op_result_to_json(&(tb__wire_op_result_t){
        .path = op->tinker_path, .model_id = m->id, .type = "load_weights" });
    break;
  case TB__OP_UNLOAD: {
    v = op->encode ? op->encode(op)
                   : tb__wire_op_result_to_json(
                         &(tb__wire_op_result_t){ .model_id = m->id, .type = "unload_model" });
    tb__training_t *tr = op->tr;
    tb__model_unlink(tr, m, 1);
    tb__model_free(m);
    op->model = NULL;
    tb__top_resolve_json(op, v);
    tb__start_held(tr);
    return;
  }
  default:
    break;
  }
  tb__top_resolve_json(op, v);
}

/* ------------------------------------------------------------ order */

/* The parents of a checkpoint directory, <data_dir>/<model_id> and
 * <data_dir>/<model_id>/<kind>, are made on the threadpool, and for
 * save_weights without overwrite the name is checked to be free.  Meanwhile
 * the model is blocked: nothing after the save may reach the engine's
 * FIFO before it. */
static void on_mkdir(uv_fs_t *fs);

static void save_mkdir(tb__top_t *op) {
  tb__tmodel_t *m = op->model;
  /* Stage 0 makes the parent's parent, stage 1 the parent. */
  size_t end = strlen(op->dir);
  for (int i = op->mkdir_stage; i < 2; i++) {
    while (end > 0 && op->dir[end - 1] != '/')
      end--;
    if (end > 0)
      end--;
  }
  char *parent = end > 0 ? tb__strndup(op->dir, end) : NULL;
  op->fs.data = op;
  int rc;
  if (op->mkdir_stage == 2)  /* without overwrite: is the name taken? */
    rc = uv_fs_stat(op->tr->srv->loop, &op->fs, op->dir, on_mkdir);
  else
    rc = parent ? uv_fs_mkdir(op->tr->srv->loop, &op->fs, parent, 0755, on_mkdir) : TB_ENOMEM;
  free(parent);
  if (rc != 0) {
    tb__top_fail(op, TB_CATEGORY_SERVER, "cannot create the checkpoint directory");
    return;
  }
  m->blocked = 1;
  op->tr->n_fs++;
}

static void on_mkdir(uv_fs_t *fs) {
  tb__top_t *op = fs->data;
  tb__tmodel_t *m = op->model;
  tb__training_t *tr = op->tr;
  ssize_t result = fs->result;
  uv_fs_req_cleanup(fs);
  tr->n_fs--;
  m->blocked = 0;
  if (tr->closing) {
    tb__top_fail(op, TB_CATEGORY_SERVER, "the server is closing");
  } else if (op->mkdir_stage == 2 && result == 0) {
    char *msg = tb__asprintf("path: %s exists; send overwrite: true to replace it",
                             op->tinker_path);
    tb__top_fail(op, TB_CATEGORY_USER, msg ? msg : "path: the checkpoint exists");
    free(msg);
  } else if (op->mkdir_stage == 2 && result != UV_ENOENT) {
    tb__warn("cannot look up %s: %s", op->dir, uv_strerror((int)result));
    tb__top_fail(op, TB_CATEGORY_SERVER, "cannot look up the checkpoint directory");
  } else if (op->mkdir_stage < 2 && result < 0 && result != UV_EEXIST) {
    tb__warn("cannot create a directory for %s: %s", op->dir, uv_strerror((int)result));
    tb__top_fail(op, TB_CATEGORY_SERVER, "cannot create the checkpoint directory");
  } else {
    op->mkdir_stage++;
    start_op(op);  /* the next directory, or the save */
  }
  if (tr->closing) {
    if (tr->n_fs == 0 && tr->engine_closed)
      training_free(tr);
    return;
  }
  if (!m->blocked) {
    tb__top_t *unload = m->pending_unload;
    m->pending_unload = NULL;
    if (unload != NULL)
      tb__unload_now(m, unload);
    else
      tb__sched_drain(m);
  }
}

/* A create-via-load whose shape was read from the checkpoint. */
static void on_create_lora(tb__training_t *tr, void *data, int status,
                           const tb__lora_config_t *lora, const char *base_name,
                           const char *message) {
  tb__top_t *op = data;
  tb__tmodel_t *m = op->model;
  char why[256];
  if (status == 0 && base_name[0] != '\0' && strcmp(base_name, m->base->name) != 0) {
    /* The weights of another base model would not fit this one. */
    snprintf(why, sizeof(why), "the checkpoint is of base model %s, not %s", base_name,
             m->base->name);
    message = why;
    status = TB_EINVAL;
  }
  if (tr->closing || status != 0) {
    tb__model_unlink(tr, m, 1);
    tb__model_free(m);
    char *msg = tb__asprintf("path: %s", message);
    tb__top_fail(op, tr->closing ? TB_CATEGORY_SERVER : TB_CATEGORY_USER,
                 tr->closing ? "the server is closing" : msg ? msg : message);
    free(msg);
    if (!tr->closing)
      tb__start_held(tr);
    return;
  }
  m->lora = *lora;
  op->need_lora = 0;
  start_op(op);
}

static void start_op(tb__top_t *op) {
  tb__tmodel_t *m = op->model;
  tb__training_t *tr = op->tr;
  int rc;
  op->job.on_capacity = tb__sched_on_capacity;
  switch (op->type) {
  case TB__OP_CREATE:
    if (op->need_lora) {
      rc = tb__read_checkpoint_lora(tr, op->then->dir, on_create_lora, op);
      if (rc == 0)
        return;
      break;
    }
    rc = tb__engine_create_adapter(&op->job, m->base->model, &m->lora, on_job);
    break;
  case TB__OP_FORWARD:
    rc = tb__engine_forward(&op->job, m->adapter, &op->batch, on_job);
    break;
  case TB__OP_FORWARD_BACKWARD:
    rc = tb__engine_forward_backward(&op->job, m->adapter, &op->batch, on_job);
    break;
  case TB__OP_OPTIM:
    rc = tb__engine_optim_step(&op->job, m->adapter, &op->adam, on_job);
    break;
  case TB__OP_SAVE:
  case TB__OP_SAVE_SAMPLER:
    if (op->mkdir_stage < 2 ||
        (op->mkdir_stage == 2 && op->type == TB__OP_SAVE && !op->overwrite)) {
      save_mkdir(op);
      return;
    }
    rc = tb__engine_save(&op->job, m->adapter, op->dir,
                         op->type == TB__OP_SAVE ? TB_ENGINE_SAVE_STATE_OPTIMIZER
                                                 : TB_ENGINE_SAVE_SAMPLER,
                         on_job);
    break;
  case TB__OP_LOAD:
    rc = tb__engine_load(&op->job, m->adapter, op->dir, op->optimizer, on_job);
    break;
  case TB__OP_UNLOAD:
    rc = tb__engine_remove_adapter(&op->job, m->adapter, on_job);
    break;
  case TB__OP_SAMPLE:  /* from the model's adapter, in its order */
    rc = tb__engine_sample(&op->job, m->base->model, m->adapter, op->prompt, op->prompt_len,
                           &op->sampling, on_job);
    break;
  default:
    rc = TB_EINVAL;
    break;
  }
  if (rc != 0) {
    if (op->type == TB__OP_CREATE) {
      tb__model_unlink(tr, m, 1);
      tb__model_free(m);
    }
    tb__top_fail_job(op, rc);
  }
}

/* Registers model <session>:train:<mseq> and queues its creation.  With
 * then (an accepted-to-be load), the client's future is then's, which
 * runs right after the adapter exists; otherwise the create's own. */
void tb__create_model(tb__http_request_t *req, tb__training_t *tr, tb__tbase_t *base,
                      tb__session_t *s, int64_t mseq, const tb__lora_config_t *lora,
                      tb__top_t *then) {
  char *id = tb__asprintf("%s:train:%lld", s->id, (long long)mseq);
  if (id == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    if (then != NULL)
      tb__top_free(then);
    return;
  }
  for (tb__tmodel_t *m = tr->models; m != NULL; m = m->next)
    if (strcmp(m->id, id) == 0) {
      /* The SDK retries create_model with the same model_seq_id. */
      tb__respond_future(req, m->create_id, m->id);
      free(id);
      if (then != NULL)
        tb__top_free(then);
      return;
    }
  tb__top_t *op = tb__top_new(req, TB__OP_CREATE);
  if (op == NULL) {
    if (then != NULL)
      tb__top_free(then);
    free(id);
    return;
  }
  tb__top_t *fop = then ? then : op;
  if (tb__top_accept(req, fop) != 0) {
    if (then != NULL)
      tb__top_free(op);
    free(id);
    return;
  }
  op->then = then;
  if (tb__model_register(tr, op, tb__sreq(req)->user, s, base, id, lora) == NULL) {
    free(id);
    tb__server_respond_error(req, 503, "out of memory");
    tb__top_fail(op, TB_CATEGORY_SERVER, "out of memory");
    return;
  }
  tb__respond_future(req, fop->future->id, id);
  tb__start_held(tr);
}

static void ext_close(tb__server_t *srv, tb__server_ext_t *ext);

/* Removes m's adapter behind the jobs already in its FIFO.  op carries
 * the client's future, or is NULL for the server's own unloads. */
void tb__unload_now(tb__tmodel_t *m, tb__top_t *op) {
  m->unloading = 1;
  /* What waits for a missing seq_id never runs now. */
  while (m->waiting != NULL) {
    tb__top_t *w = m->waiting;
    m->waiting = w->next;
    tb__top_fail(w, TB_CATEGORY_USER, "the model was unloaded");
  }
  if (op == NULL && (op = tb__top_alloc(m->tr, TB__OP_UNLOAD)) == NULL) {
    tb__warn("cannot unload model %s: out of memory", m->id);
    return;
  }
  op->model = m;
  if (m->blocked) {
    m->pending_unload = op;  /* after the save in progress */
    return;
  }
  start_op(op);
}

/* A session expired or was closed: its models are unloaded (checkpoints
 * stay).  Operations already in a model's engine FIFO run to the end
 * (their results stay retrievable), except samples, which stop decoding
 * (tb__samplers_session_expired); the ones waiting for an earlier
 * seq_id, and creations not yet started, fail; the adapter is removed
 * behind the last running one. */
static void on_session_expired(tb__sessions_t *ss, tb__session_t *s) {
  tb__server_t *srv = ss->data;
  tb__training_t *tr = NULL;
  for (tb__server_ext_t *e = srv->exts; e != NULL; e = e->next)
    if (e->close == ext_close)
      tr = e->data;
  if (tr == NULL || tr->closing)
    return;
  /* Creates still held never start. */
  for (tb__top_t **p = &tr->held; *p != NULL;) {
    tb__top_t *op = *p;
    if (op->model->session != s) {
      p = &op->next;
      continue;
    }
    *p = op->next;
    tb__model_unlink(tr, op->model, 0);
    tb__model_free(op->model);
    tb__top_fail(op, TB_CATEGORY_USER,
                 s->closed ? "the session was closed" : "the session expired");
  }
  tb__samplers_session_expired(tr, s);
  for (tb__tmodel_t *m = tr->models; m != NULL; m = m->next) {
    if (m->session != s || m->unloading)
      continue;
    if (m->ready)
      tb__unload_now(m, NULL);
    else
      m->unloading = 1;  /* unloaded once created */
  }
}

/* ------------------------------------------------------------ lifecycle */

tb__training_t *tb__training_find(tb__server_t *srv) {
  for (tb__server_ext_t *e = srv->exts; e != NULL; e = e->next)
    if (e->close == ext_close)
      return e->data;
  return NULL;
}

static void on_base_loaded(tb__engine_job_t *job, int status) {
  tb__tbase_t *b = job->data;
  tb__training_t *tr = b->tr;
  if (status == 0) {
    b->model = job->model;
    b->state = 1;
    b->cfg = tb__engine_model_weights(b->model)->config;
    /* Announced once its context length is known. */
    if (!b->builtin && !tr->closing)
      tb_server_add_model(tr->srv->pub, b->name, b->cfg.max_position_embeddings);
    const char *dir = strchr(b->spec, '=');
    if (!b->builtin)
      tb__info("model %s loaded%s%s", b->name, dir ? " from " : "", dir ? dir + 1 : "");
  } else {
    b->state = -1;
    b->error = tb__asprintf("the base model %s failed to load: %s", b->name,
                            job->error.message ? job->error.message : tb_strerror(status));
    tb__warn("%s", b->error ? b->error : "a base model failed to load");
  }
  tb__engine_job_cleanup(job);
  if (!tr->closing) {
    tb__start_held(tr);
    tb__samples_base_settled(tr);
  }
}

static void training_free(tb__training_t *tr) {
  tb__tmodel_t *m = tr->models;
  while (m != NULL) {
    tb__tmodel_t *next = m->next;
    if (m->pending_unload != NULL)
      tb__top_fail(m->pending_unload, TB_CATEGORY_SERVER, "the server is closing");
    m->pending_unload = NULL;
    tb__model_free(m);
    m = next;
  }
  tb__samplers_free(tr);
  for (size_t i = 0; i < tr->n_bases; i++) {
    tb__mtext_free(tr->bases[i].text);
    free(tr->bases[i].name);
    free(tr->bases[i].spec);
    free(tr->bases[i].error);
  }
  free(tr->bases);
  tb__server_t *srv = tr->srv;
  for (tb__server_ext_t **p = &srv->exts; *p != NULL; p = &(*p)->next)
    if (*p == &tr->ext) {
      *p = tr->ext.next;
      break;
    }
  tb__server_ext_closed(srv, &tr->ext);
  free(tr);
}

static void on_engine_closed(tb__engine_t *e) {
  tb__training_t *tr = e->data;
  tr->engine_closed = 1;
  /* A directory still being made finishes the close. */
  if (tr->n_fs == 0)
    training_free(tr);
}

static void ext_close(tb__server_t *srv, tb__server_ext_t *ext) {
  srv->sessions.on_expire = NULL;
  tb__training_t *tr = ext->data;
  tr->closing = 1;
  while (tr->held != NULL) {
    tb__top_t *op = tr->held;
    tr->held = op->next;
    tb__top_fail(op, TB_CATEGORY_SERVER, "the server is closing");
  }
  for (tb__tmodel_t *m = tr->models; m != NULL; m = m->next)
    while (m->waiting != NULL) {
      tb__top_t *op = m->waiting;
      m->waiting = op->next;
      tb__top_fail(op, TB_CATEGORY_SERVER, "the server is closing");
    }
  tb__samplers_fail_all(tr, "the server is closing");
  tb__samples_base_settled(tr);
  tb__mtext_fail_waiters(tr);
  /* The engine releases the base models with everything else. */
  for (size_t i = 0; i < tr->n_bases; i++)
    tr->bases[i].model = NULL;
  tb__engine_close(&tr->engine, on_engine_closed);
}

static void ext_metrics(tb__server_t *srv, tb__server_ext_t *ext, tb__buf_t *out) {
  tb__training_t *tr = ext->data;
  size_t n_models = 0;
  for (tb__tmodel_t *m = tr->models; m != NULL; m = m->next)
    n_models++;
  tb__buf_printf(out,
                 "# TYPE tinkerbell_models gauge\ntinkerbell_models %zu\n"
                 "# TYPE tinkerbell_ops gauge\ntinkerbell_ops %zu\n"
                 "# TYPE tinkerbell_ops_done_total counter\n"
                 "tinkerbell_ops_done_total %llu\n"
                 "# TYPE tinkerbell_ops_failed_total counter\n"
                 "tinkerbell_ops_failed_total %llu\n",
                 n_models, tr->n_ops, (unsigned long long)tr->n_done,
                 (unsigned long long)tr->n_failed);
  tb__metrics_training(tr, out);
}

/* One base model from "base" or "NAME=HF_DIR". */
static int base_init(tb__training_t *tr, tb__tbase_t *b, const char *spec) {
  const char *eq = strchr(spec, '=');
  b->tr = tr;
  b->name = eq ? tb__strndup(spec, (size_t)(eq - spec)) : tb__strndup(spec, strlen(spec));
  b->spec = tb__strndup(spec, strlen(spec));
  if (b->name == NULL || b->spec == NULL)
    return TB_ENOMEM;
  if (b->name[0] == '\0' || (eq != NULL && eq[1] == '\0'))
    return TB_EINVAL;
  b->builtin = eq == NULL && strcmp(spec, TB_BASE_MODEL_NAME) == 0;
  /* Messages about its files name the model, not the operator's path. */
  if (eq != NULL && tb__server_name_path(tr->srv, eq + 1, b->name) != 0)
    return TB_ENOMEM;
  if (b->builtin)
    tb__base_model_config(&b->cfg);
  for (tb__tbase_t *o = tr->bases; o < b; o++)
    if (strcmp(o->name, b->name) == 0)
      return TB_EEXIST;
  return 0;
}

int tb__training_create(tb__server_t *srv, const tb__engine_opts_t *opts,
                        const char *const *models, size_t n_models, tb__training_t **out,
                        tb_error_t *err) {
  *out = NULL;
  /* Large bodies are decoded on the threadpool: jansson's hash seed is
   * set here, on the loop, before any worker makes an object. */
  json_object_seed(0);
  static const char *const dflt[] = { TB_BASE_MODEL_NAME };
  if (n_models == 0) {
    models = dflt;
    n_models = 1;
  }
  tb__training_t *tr = calloc(1, sizeof(*tr));
  tb__tbase_t *bases = tr ? calloc(n_models, sizeof(*bases)) : NULL;
  if (bases == NULL) {
    free(tr);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  }
  tr->srv = srv;
  tr->bases = bases;
  tr->n_bases = n_models;
  int rc = 0;
  size_t i;
  for (i = 0; rc == 0 && i < n_models; i++)
    rc = base_init(tr, &bases[i], models[i]);
  /* The server's kv_memory and decode_rows options, unless the caller's
   * engine options say otherwise. */
  tb__engine_opts_t eo = opts ? *opts : (tb__engine_opts_t){ 0 };
  if (eo.kv_bytes == 0)
    eo.kv_bytes = srv->opts.kv_memory;
  if (eo.decode_rows == 0)
    eo.decode_rows = srv->opts.decode_rows;
  if (rc == 0)
    rc = tb__engine_init(srv->loop, &tr->engine, &eo);
  if (rc != 0) {
    for (size_t j = 0; j < n_models; j++) {
      free(bases[j].name);
      free(bases[j].spec);
    }
    free(bases);
    free(tr);
    return tb_error_set(err, rc, TB_CATEGORY_SERVER, "cannot start the training part: %s%s%s",
                        rc == TB_EINVAL || rc == TB_EEXIST ? "model " : "",
                        rc == TB_EINVAL || rc == TB_EEXIST ? models[i - 1] : "",
                        rc == TB_EEXIST ? " is named twice" : rc == TB_EINVAL ? " is malformed"
                                                                               : tb_strerror(rc));
  }
  tr->engine.data = tr;
  tr->start = start_op;
  tr->idle = training_free;
  tr->ext.data = tr;
  tr->ext.close = ext_close;
  tr->ext.metrics = ext_metrics;
  for (i = 0; rc == 0 && i < n_models; i++)
    if (bases[i].builtin) {
      rc = tb_server_add_model(srv->pub, bases[i].name, bases[i].cfg.max_position_embeddings);
      rc = rc == TB_EEXIST ? 0 : rc;
    }
  /* From here the engine is the extension's to close, also on error. */
  tb__server_add_ext(srv, &tr->ext);
  *out = tr;
  srv->sessions.on_expire = on_session_expired;
  srv->futures.position = tb__sched_position;
  for (i = 0; i < n_models; i++) {
    tb__tbase_t *b = &bases[i];
    b->job.data = b;
    /* The tokenizer loads beside the weights, on the threadpool too. */
    int trc = rc ? rc : tb__mtext_start(tr, b);
    if (trc != 0) {
      b->text_state = -1;
      if (rc == 0)
        rc = trc;
    }
    int lrc = rc ? rc : tb__engine_load_model(&b->job, &tr->engine, b->spec, on_base_loaded);
    if (lrc != 0) {
      b->state = -1;
      b->error = tb__asprintf("the base model %s failed to load: %s", b->name,
                              b->job.error.message ? b->job.error.message : tb_strerror(lrc));
      tb__engine_job_cleanup(&b->job);
      if (rc == 0)
        rc = lrc;
    }
  }
  if (rc != 0)
    return tb_error_set(err, rc, TB_CATEGORY_SERVER, "cannot start the training part: %s",
                        tb_strerror(rc));
  return 0;
}

int tb_server_model_state(tb_server_t *server, const char *name, const char **message) {
  tb__server_t *srv = server->impl_;
  if (message != NULL)
    *message = NULL;
  for (tb__server_ext_t *e = srv ? srv->exts : NULL; e != NULL; e = e->next) {
    if (e->close != ext_close)
      continue;
    tb__tbase_t *b = tb__tbase_find(e->data, (tb_slice_t){ name, strlen(name) });
    if (b == NULL)
      break;
    if (b->state < 0 && message != NULL)
      *message = b->error ? b->error : "out of memory";
    return b->state < 0 ? TB_EINVAL : b->state;
  }
  return TB_ENOENT;
}

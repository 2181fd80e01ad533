/*
 * The training routes of the Tinker dialect on an engine of the server's
 * loop: create_model, forward, forward_backward, optim_step, save_weights,
 * save_weights_for_sampler, load_weights, unload_model (futures) and
 * get_info (direct).
 *
 * Order: the operations of one model run strictly in seq_id order (the
 * SDK numbers them from 1, create_model being 0).  A later seq_id waits in
 * the model's list until the missing earlier ones arrive; only then is it
 * submitted to the engine, whose per-adapter FIFO keeps that order.  A
 * seq_id seen again is answered with the first one's request_id (retries
 * of the SDK resend it), one older than the remembered window is refused.
 *
 * Checkpoints live under the server's data_dir:
 *   <data_dir>/<model_id>/weights/<name>           (save_weights)
 *   <data_dir>/<model_id>/sampler_weights/<name>   (save_weights_for_sampler)
 */
#include "server/training.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "engine/base_model.h"
#include "wire/datum.h"
#include "wire/output.h"

/* ------------------------------------------------------------ ops */

tb__training_t *tb__training_of(tb_http_request_t *req) {
  return tb__sreq(req)->route->data;
}

static tb__top_t *top_alloc(tb__training_t *tr, tb__op_type_t type) {
  tb__top_t *op = calloc(1, sizeof(*op));
  if (op == NULL)
    return NULL;
  op->tr = tr;
  op->type = type;
  op->seq = -1;
  op->sampler_seq = -1;
  op->job.data = op;
  tb__arena_init(&op->arena, 0);
  tr->n_ops++;
  return op;
}

tb__top_t *tb__top_new(tb_http_request_t *req, tb__op_type_t type) {
  tb__top_t *op = top_alloc(tb__training_of(req), type);
  if (op == NULL)
    tb__server_respond_error(req, 503, "out of memory");
  return op;
}

int tb__top_accept(tb_http_request_t *req, tb__top_t *op) {
  tb__training_t *tr = op->tr;
  int rc = tb__future_create(&tr->srv->futures, tb__sreq(req)->user, &op->future);
  if (rc != 0) {
    tb__server_respond_error(req, 503, "cannot create a future: %s", tb_strerror(rc));
    tb__top_free(op);
  }
  return rc;
}

void tb__top_free(tb__top_t *op) {
  if (op->then != NULL)
    tb__top_free(op->then);
  tb__engine_job_cleanup(&op->job);
  tb__arena_free(&op->arena);
  free(op->dir);
  free(op->tinker_path);
  op->tr->n_ops--;
  free(op);
}

void tb__top_fail(tb__top_t *op, tb_category_t category, const char *message) {
  if (op->then != NULL) {
    /* A load that was to follow a create fails with it. */
    tb__top_fail(op->then, category, message);
    op->then = NULL;
  }
  op->tr->n_failed++;
  if (op->future != NULL)
    tb__future_fail(op->future, category, "%s", message);
  tb__top_free(op);
}

void tb__top_fail_job(tb__top_t *op, int status) {
  tb_category_t cat = op->job.error.category == TB_CATEGORY_USER ? TB_CATEGORY_USER
                                                                 : TB_CATEGORY_SERVER;
  const char *msg = op->job.error.message;
  if (status == TB_ECANCELED || op->tr->closing)
    msg = "the server is closing";
  tb__top_fail(op, cat, msg ? msg : tb_strerror(status));
}

/* Resolves op's future with a JSON object (consumed) and frees op. */
static void top_resolve_json(tb__top_t *op, json_t *v) {
  if (op->future == NULL) {
    /* An op of the server's own (an unload at session expiry). */
    json_decref(v);
    tb__top_free(op);
    return;
  }
  size_t len = 0;
  char *json = v ? tb__json_dump(v, &len) : NULL;
  json_decref(v);
  if (json == NULL) {
    tb__top_fail(op, TB_CATEGORY_SERVER, "out of memory encoding the result");
    return;
  }
  op->tr->n_done++;
  tb__future_resolve(op->future, json, len, NULL, 0);
  tb__top_free(op);
}

void tb__respond_future(tb_http_request_t *req, const char *request_id,
                        const char *model_id) {
  json_t *v = json_pack("{ss}", "request_id", request_id);
  if (v != NULL && model_id != NULL)
    json_object_set_new(v, "model_id", json_string(model_id));
  if (v == NULL) {
    tb__server_respond_error(req, 500, "out of memory");
    return;
  }
  tb__server_respond_jsonv(req, 200, v);
  json_decref(v);
}

static void respond_bad(tb_http_request_t *req, tb_error_t *err) {
  tb__server_respond_bad(req, err);
  tb_error_clear(err);
}

/* ------------------------------------------------------------ models */

tb__tmodel_t *tb__tmodel_find(tb_http_request_t *req, tb_slice_t id) {
  tb__training_t *tr = tb__training_of(req);
  for (tb__tmodel_t *m = tr->models; m != NULL; m = m->next)
    if (m->owner == tb__sreq(req)->user && !m->unloading && tb__slice_eq_str(id, m->id))
      return m;
  tb__server_respond_error(req, 404, "model %.*s: unknown model",
                           (int)(id.len > 120 ? 120 : id.len), id.base);
  return NULL;
}

static void model_free(tb__tmodel_t *m) {
  free(m->id);
  free(m);
}

/* counted: the model was counted in its owner's n_models. */
static void model_unlink(tb__training_t *tr, tb__tmodel_t *m, int counted) {
  for (tb__tmodel_t **p = &tr->models; *p != NULL; p = &(*p)->next)
    if (*p == m) {
      *p = m->next;
      break;
    }
  if (counted && m->owner->n_models > 0)
    m->owner->n_models--;
}

static void start_held(tb__training_t *tr);
static void drain(tb__tmodel_t *m);
static void unload_now(tb__tmodel_t *m, tb__top_t *op);
static void start_op(tb__top_t *op);
static void training_free(tb__training_t *tr);

/* ------------------------------------------------------------ results */

static void on_forward(tb__top_t *op) {
  tb_engine_job_t *j = &op->job;
  const tb_batch_t *b = &op->batch;
  tb_wire_fwdbwd_output_t o = { 0 };
  o.loss_fn_output_type = "ArrayRecord";
  o.n_outputs = b->num_data;
  o.outputs = tb__arena_calloc(&op->arena, b->num_data + 1, sizeof(*o.outputs));
  o.metrics = tb__arena_calloc(&op->arena, j->num_metrics + 1, sizeof(*o.metrics));
  int ok = o.outputs != NULL && o.metrics != NULL;
  size_t at = 0;
  for (size_t i = 0; ok && i < b->num_data; i++) {
    const tb_datum_t *d = &b->data[i];
    size_t k = d->k ? d->k : 1;
    tb_wire_named_tensor_t *f = tb__arena_calloc(&op->arena, 1, sizeof(*f));
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
  size_t jlen = 0;
  char *json = v ? tb__json_dump(v, &jlen) : NULL;
  json_decref(v);
  tb_buf_t pb = { 0 };
  int rc = json ? tb__wire_fwdbwd_output_to_proto(&o, &pb) : TB_ENOMEM;
  if (rc != 0) {
    free(json);
    tb__buf_free(&pb);
    tb__top_fail(op, TB_CATEGORY_SERVER, "cannot encode the output");
    return;
  }
  op->tr->n_done++;
  tb__future_resolve(op->future, json, jlen, pb.base, pb.len);
  tb__top_free(op);
}

static void on_job(tb_engine_job_t *job, int status) {
  tb__top_t *op = job->data;
  tb__tmodel_t *m = op->model;
  if (status != 0) {
    if (op->type == TB__OP_CREATE) {
      model_unlink(op->tr, m, 1);
      /* Later ops cannot have been accepted: the model was not ready. */
      model_free(m);
      start_held(op->tr);
    }
    tb__top_fail_job(op, status);
    return;
  }
  json_t *v = NULL;
  switch (op->type) {
  case TB__OP_CREATE:
    m->adapter = job->adapter;
    m->ready = 1;
    v = json_pack("{ssss}", "model_id", m->id, "type", "create_model");
    tb__top_t *then = op->then;
    op->then = NULL;
    top_resolve_json(op, v);
    if (then != NULL)
      start_op(then);  /* before any seq_id of the client */
    if (m->unloading)
      unload_now(m, NULL);  /* its session expired meanwhile */
    else
      drain(m);
    return;
  case TB__OP_FORWARD:
  case TB__OP_FORWARD_BACKWARD:
    on_forward(op);
    return;
  case TB__OP_OPTIM: {
    json_t *metrics = json_object();
    for (size_t i = 0; metrics && i < job->num_metrics; i++)
      json_object_set_new(metrics, job->metrics[i].key, json_real(job->metrics[i].value));
    v = json_pack("{so}", "metrics", metrics);
    break;
  }
  case TB__OP_SAVE:
    v = json_pack("{ssss}", "path", op->tinker_path, "type", "save_weights");
    break;
  case TB__OP_SAVE_SAMPLER:
    v = json_pack("{ssss}", "path", op->tinker_path, "type", "save_weights_for_sampler");
    if (v != NULL && op->sampler_seq >= 0) {
      char *id = tb__asprintf("%s:sample:%lld", m->session->id, (long long)op->sampler_seq);
      tb__sampler_t *s = id ? tb__sampler_find(op->tr, m->owner, id) : NULL;
      if (s != NULL) {
        free(id);
      } else if (id != NULL) {
        tb_slice_t path = { op->tinker_path, strlen(op->tinker_path) };
        s = tb__sampler_open(op->tr, m->owner, m->session, id, &path, op->dir, &m->lora);
        op->dir = NULL;  /* the sampler's now */
      }
      if (s == NULL) {
        json_decref(v);
        tb__top_fail(op, TB_CATEGORY_SERVER, "out of memory");
        return;
      }
      json_object_set_new(v, "sampling_session_id", json_string(s->id));
    }
    break;
  case TB__OP_LOAD:
    v = json_pack("{ssssss}", "path", op->tinker_path, "model_id", m->id, "type",
                  "load_weights");
    break;
  case TB__OP_UNLOAD: {
    v = json_pack("{ssss}", "model_id", m->id, "type", "unload_model");
    tb__training_t *tr = op->tr;
    model_unlink(tr, m, 1);
    model_free(m);
    op->model = NULL;
    top_resolve_json(op, v);
    start_held(tr);
    return;
  }
  default:
    break;
  }
  top_resolve_json(op, v);
}

/* ------------------------------------------------------------ order */

/* The parents of a checkpoint directory, <data_dir>/<model_id> and
 * <data_dir>/<model_id>/<kind>, are made on the threadpool.  Meanwhile
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
  int rc = parent ? uv_fs_mkdir(op->tr->srv->loop, &op->fs, parent, 0755, on_mkdir)
                  : TB_ENOMEM;
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
  } else if (result < 0 && result != UV_EEXIST) {
    tb_warn("cannot create a directory for %s: %s", op->dir, uv_strerror((int)result));
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
      unload_now(m, unload);
    else
      drain(m);
  }
}

/* Submits op to the engine; on an immediate error fails it. */
static void start_op(tb__top_t *op) {
  tb__tmodel_t *m = op->model;
  tb__training_t *tr = op->tr;
  int rc;
  switch (op->type) {
  case TB__OP_CREATE:
    rc = tb__engine_create_adapter(&op->job, tr->base, &m->lora, on_job);
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
    if (op->mkdir_stage < 2) {
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
  default:
    rc = TB_EINVAL;
    break;
  }
  if (rc != 0) {
    if (op->type == TB__OP_CREATE) {
      model_unlink(tr, m, 1);
      model_free(m);
    }
    tb__top_fail_job(op, rc);
  }
}

/* Runs the waiting ops of m that are next in order. */
static void drain(tb__tmodel_t *m) {
  while (m->ready && !m->unloading && !m->blocked && m->waiting != NULL &&
         m->waiting->seq == m->next_seq) {
    tb__top_t *op = m->waiting;
    m->waiting = op->next;
    op->next = NULL;
    m->next_seq++;
    start_op(op);
  }
}

/* Takes op (of model m, seq op->seq or -1) in order; answers the request. */
static void submit_ordered(tb_http_request_t *req, tb__top_t *op) {
  tb__tmodel_t *m = op->model;
  int64_t seq = op->seq;
  if (seq < 0)
    seq = (m->max_seq + 1 > m->next_seq ? m->max_seq + 1 : m->next_seq);
  size_t slot = (size_t)(seq % TB__SEQ_WINDOW);
  if (m->recent[slot].seq == seq) {
    /* A retry: the first one's future answers it. */
    tb__respond_future(req, m->recent[slot].id, m->id);
    tb__top_free(op);
    return;
  }
  if (seq < m->next_seq || seq >= m->next_seq + TB__SEQ_WINDOW) {
    tb__server_respond_error(req, 400,
                             "seq_id: %lld is out of order for model %s (the next "
                             "operation is %lld)",
                             (long long)seq, m->id, (long long)m->next_seq);
    tb__top_free(op);
    return;
  }
  if (tb__top_accept(req, op) != 0)
    return;
  op->seq = seq;
  m->recent[slot].seq = seq;
  memcpy(m->recent[slot].id, op->future->id, sizeof(m->recent[slot].id));
  if (seq > m->max_seq)
    m->max_seq = seq;
  tb__top_t **p = &m->waiting;
  while (*p != NULL && (*p)->seq < seq)
    p = &(*p)->next;
  op->next = *p;
  *p = op;
  tb__respond_future(req, op->future->id, m->id);
  drain(m);
}

/* The future the client of a create polls: its own, or that of the load
 * of create-via-load. */
static tb__future_t *client_future(tb__top_t *op) {
  return op->future != NULL ? op->future : op->then->future;
}

/* Starts the creates that may run now. */
static void start_held(tb__training_t *tr) {
  tb__top_t **p = &tr->held;
  while (*p != NULL) {
    tb__top_t *op = *p;
    tb__tmodel_t *m = op->model;
    if (tr->base_state < 0) {
      *p = op->next;
      model_unlink(tr, m, 0);
      model_free(m);
      tb__top_fail(op, TB_CATEGORY_SERVER, tr->base_error ? tr->base_error
                                                          : "the base model failed to load");
      continue;
    }
    if (tr->base_state == 0 || tb__server_user_at_model_limit(tr->srv, m->owner)) {
      tb__future_set_queue_state(client_future(op),
                                 tr->base_state == 0 ? TB__QUEUE_ACTIVE
                                                     : TB__QUEUE_PAUSED_RATE_LIMIT,
                                 tr->base_state == 0 ? NULL
                                                     : "the user has as many models "
                                                       "loaded as allowed");
      p = &op->next;
      continue;
    }
    *p = op->next;
    op->next = NULL;
    m->owner->n_models++;
    tb__future_set_queue_state(client_future(op), TB__QUEUE_ACTIVE, NULL);
    start_op(op);
  }
}

/* ------------------------------------------------------------ routes */

/* The common start of a route: parsed body and jctx. */
#define ROUTE_BEGIN(req, doc, err, c)              \
  json_t *doc;                                     \
  if (tb__server_parse_body(req, &doc) != 0)       \
    return;                                        \
  tb_error_t err = { 0 };                          \
  tb_jctx_t c;                                     \
  tb__jctx_init(&c, &err)

static int closing_503(tb_http_request_t *req) {
  if (!tb__training_of(req)->closing)
    return 0;
  tb__server_respond_error(req, 503, "the server is closing");
  return 1;
}

static int get_bool_default(tb_jctx_t *c, const json_t *o, const char *key, int def,
                            int *out) {
  *out = def;
  return tb__json_get_bool(c, o, key, TB_JSON_OPTIONAL, out);
}

static void create_model(tb_http_request_t *req, tb__training_t *tr, tb__session_t *s,
                         int64_t mseq, const tb_lora_config_t *lora, tb__top_t *then);

static void route_create_model(tb_http_request_t *req) {
  tb__training_t *tr = tb__training_of(req);
  if (closing_503(req) || tb__server_rate_limited(req) != 0)
    return;
  ROUTE_BEGIN(req, doc, err, c);
  tb_slice_t sid, base;
  int64_t mseq = 0, rank = 32, seed = 0;
  json_t *lc = NULL;
  tb_lora_config_t lora = { 0 };
  int rc = tb__json_get_string(&c, doc, "session_id", TB_JSON_REQUIRED, &sid);
  rc = rc < 0 ? rc
              : tb__json_get_int(&c, doc, "model_seq_id", TB_JSON_REQUIRED, 0, INT32_MAX,
                                 &mseq);
  rc = rc < 0 ? rc : tb__json_get_string(&c, doc, "base_model", TB_JSON_REQUIRED, &base);
  rc = rc < 0 ? rc : tb__json_get_object(&c, doc, "lora_config", TB_JSON_OPTIONAL, &lc);
  lora.train_attn = lora.train_mlp = lora.train_unembed = 1;
  if (rc >= 0 && lc != NULL) {
    size_t mark = tb__jctx_push_key(&c, "lora_config");
    rc = tb__json_get_int(&c, lc, "rank", TB_JSON_OPTIONAL, 1, 4096, &rank);
    rc = rc < 0 ? rc : tb__json_get_int(&c, lc, "seed", TB_JSON_OPTIONAL, 0, INT64_MAX, &seed);
    rc = rc < 0 ? rc : get_bool_default(&c, lc, "train_attn", 1, &lora.train_attn);
    rc = rc < 0 ? rc : get_bool_default(&c, lc, "train_mlp", 1, &lora.train_mlp);
    rc = rc < 0 ? rc : get_bool_default(&c, lc, "train_unembed", 1, &lora.train_unembed);
    tb__jctx_pop(&c, mark);
  }
  if (rc >= 0 && !tb__slice_eq_str(base, TB_BASE_MODEL_NAME))
    rc = tb__jctx_fail_at(&c, "base_model", "unknown model \"%.*s\" (this server has \"%s\")",
                          (int)(base.len > 80 ? 80 : base.len), base.base,
                          TB_BASE_MODEL_NAME);
  if (rc < 0) {
    respond_bad(req, &err);
    json_decref(doc);
    return;
  }
  lora.rank = (int)rank;
  lora.seed = (uint64_t)seed;
  tb__session_t *s = tb__session_find(&tr->srv->sessions, tb__sreq(req)->user, sid);
  json_decref(doc);
  if (s == NULL || s->expired) {
    tb__server_respond_error(req, 404, "session_id: unknown or expired session");
    return;
  }
  create_model(req, tr, s, mseq, &lora, NULL);
}

/* Registers model <session>:train:<mseq> and queues its creation.  With
 * then (an accepted-to-be load), the client's future is then's, which
 * runs right after the adapter exists; otherwise the create's own. */
static void create_model(tb_http_request_t *req, tb__training_t *tr, tb__session_t *s,
                         int64_t mseq, const tb_lora_config_t *lora, tb__top_t *then) {
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
  tb__top_t *fop = then ? then : op;
  tb__tmodel_t *m = op ? calloc(1, sizeof(*m)) : NULL;
  if (m == NULL) {
    if (op != NULL)
      tb__top_free(op);
    if (then != NULL)
      tb__top_free(then);
    if (op != NULL)
      tb__server_respond_error(req, 503, "out of memory");
    free(id);
    return;
  }
  if (tb__top_accept(req, fop) != 0) {
    if (then != NULL)
      tb__top_free(op);
    free(m);
    free(id);
    return;
  }
  op->then = then;
  m->tr = tr;
  m->id = id;
  m->owner = tb__sreq(req)->user;
  m->session = s;
  m->lora = *lora;
  m->next_seq = 1;
  m->max_seq = 0;
  for (size_t i = 0; i < TB__SEQ_WINDOW; i++)
    m->recent[i].seq = -1;
  memcpy(m->create_id, fop->future->id, sizeof(m->create_id));
  m->next = tr->models;
  tr->models = m;
  tb__session_add_training_run(s, id);
  op->model = m;
  if (then != NULL)
    then->model = m;
  tb__respond_future(req, fop->future->id, id);
  /* Held first, so that creates start in arrival order. */
  tb__top_t **p = &tr->held;
  while (*p != NULL)
    p = &(*p)->next;
  *p = op;
  start_held(tr);
}

/* model_id and seq_id of a JSON training request. */
static int get_model_seq(tb_jctx_t *c, const json_t *doc, tb_slice_t *mid, int64_t *seq) {
  int rc = tb__json_get_string(c, doc, "model_id", TB_JSON_REQUIRED, mid);
  *seq = -1;
  return rc < 0 ? rc : tb__json_get_int(c, doc, "seq_id", TB_JSON_OPTIONAL, 0, INT64_MAX, seq);
}

/* The decoded request as an engine batch; checks that the loss has its
 * inputs, with their lengths. */
static int to_batch(tb_jctx_t *c, tb_arena_t *a, const tb_wire_fwdbwd_t *w, tb_batch_t *b,
                    const char *input_key) {
  size_t m0 = tb__jctx_push_key(c, input_key);
  int rc = 0;
  if (tb__loss_fn_parse(w->loss_fn, strlen(w->loss_fn), &b->loss_fn) != 0)
    rc = tb__jctx_fail_at(c, "loss_fn",
                          "unknown loss function \"%s\" (expected cross_entropy, "
                          "importance_sampling, ppo, cispo or dro)",
                          w->loss_fn);
  tb__loss_config_default(&b->loss_config);
  double v;
  if (tb__wire_fwdbwd_config(w, "clip_low_threshold", &v))
    b->loss_config.clip_low_threshold = (float)v;
  if (tb__wire_fwdbwd_config(w, "clip_high_threshold", &v))
    b->loss_config.clip_high_threshold = (float)v;
  if (tb__wire_fwdbwd_config(w, "beta", &v))
    b->loss_config.beta = (float)v;
  tb_datum_t *d = tb__arena_calloc(a, w->n_data + 1, sizeof(*d));
  if (rc == 0 && d == NULL)
    rc = tb__jctx_fail(c, "out of memory");
  size_t m1 = tb__jctx_push_key(c, "data");
  for (size_t i = 0; rc == 0 && i < w->n_data; i++) {
    const tb_wire_datum_t *wd = &w->data[i];
    size_t m2 = tb__jctx_push_index(c, i);
    size_t m3 = tb__jctx_push_key(c, "loss_fn_inputs");
    d[i].tokens = wd->tokens;
    d[i].n = wd->n_tokens;
    const tb_wire_tensor_t *tt = tb__wire_datum_input(wd, "target_tokens");
    const tb_wire_tensor_t *wt = tb__wire_datum_input(wd, "weights");
    const tb_wire_tensor_t *lp = tb__wire_datum_input(wd, "logprobs");
    const tb_wire_tensor_t *ad = tb__wire_datum_input(wd, "advantages");
    int ce = b->loss_fn == TB_LOSS_CROSS_ENTROPY;
    const char *loss = w->loss_fn;
    if (tt == NULL)
      rc = tb__jctx_fail_at(c, "target_tokens", "missing (the loss %s needs it)", loss);
    else if (tt->dtype != TB_DTYPE_INT64)
      rc = tb__jctx_fail_at(c, "target_tokens", "expected int64");
    else if (!ce && (lp == NULL || ad == NULL))
      rc = tb__jctx_fail_at(c, lp == NULL ? "logprobs" : "advantages",
                            "missing (the loss %s needs it)", loss);
    size_t n = wd->n_tokens;
    size_t k = (rc == 0 && tt->ndim == 2) ? (size_t)tt->shape[1] : 1;
    if (rc == 0 && (k == 0 || tt->numel != n * k))
      rc = tb__jctx_fail_at(c, "target_tokens", "expected %zu elements (the input length), got %zu",
                            n, tt->numel);
    if (rc == 0 && wt != NULL && (wt->dtype != TB_DTYPE_FLOAT32 || wt->numel != n * k))
      rc = tb__jctx_fail_at(c, "weights", "expected %zu float32 elements", n * k);
    if (rc == 0 && !ce && (lp->dtype != TB_DTYPE_FLOAT32 || lp->numel != n))
      rc = tb__jctx_fail_at(c, "logprobs", "expected %zu float32 elements", n);
    if (rc == 0 && !ce && (ad->dtype != TB_DTYPE_FLOAT32 || ad->numel != n))
      rc = tb__jctx_fail_at(c, "advantages", "expected %zu float32 elements", n);
    int32_t *t32 = rc == 0 ? tb__arena_alloc(a, n * k * sizeof(int32_t) + 1) : NULL;
    if (rc == 0 && t32 == NULL)
      rc = tb__jctx_fail(c, "out of memory");
    for (size_t j = 0; rc == 0 && j < n * k; j++) {
      int64_t t = tt->i64[j];
      if (t < 0 || t > INT32_MAX) {
        size_t m4 = tb__jctx_push_key(c, "target_tokens");
        size_t m5 = tb__jctx_push_index(c, j);
        rc = tb__jctx_fail(c, "token %lld is outside the vocabulary", (long long)t);
        tb__jctx_pop(c, m5);
        tb__jctx_pop(c, m4);
      }
      if (rc == 0)
        t32[j] = (int32_t)t;
    }
    if (rc == 0 && ce && wt == NULL) {
      float *ones = tb__arena_alloc(a, n * k * sizeof(float) + 1);
      if (ones == NULL)
        rc = tb__jctx_fail(c, "out of memory");
      for (size_t j = 0; rc == 0 && j < n * k; j++)
        ones[j] = 1.0f;
      d[i].weights = ones;
    } else if (rc == 0 && wt != NULL) {
      d[i].weights = wt->f32;
    }
    if (rc == 0) {
      d[i].k = k;
      d[i].target_tokens = t32;
      d[i].logprobs = lp ? lp->f32 : NULL;
      d[i].advantages = ad ? ad->f32 : NULL;
    }
    tb__jctx_pop(c, m3);
    tb__jctx_pop(c, m2);
  }
  tb__jctx_pop(c, m1);
  tb__jctx_pop(c, m0);
  b->data = d;
  b->num_data = w->n_data;
  return rc;
}

static int is_proto(const tb_http_request_t *req) {
  const tb_http_header_t *h = tb__http_request_header(req, "Content-Type");
  static const char want[] = "application/x-protobuf";
  return h != NULL && h->value.len >= sizeof(want) - 1 &&
         strncasecmp(h->value.base, want, sizeof(want) - 1) == 0;
}

static void route_fwd_common(tb_http_request_t *req, int forward_only_route) {
  if (closing_503(req) || tb__server_rate_limited(req) != 0)
    return;
  tb__top_t *op = tb__top_new(req, forward_only_route ? TB__OP_FORWARD
                                                      : TB__OP_FORWARD_BACKWARD);
  if (op == NULL)
    return;
  tb_error_t err = { 0 };
  tb_jctx_t c;
  tb__jctx_init(&c, &err);
  tb_wire_fwdbwd_t w = { 0 };
  const char *key = forward_only_route ? "forward_input" : "forward_backward_input";
  int rc;
  if (is_proto(req)) {
    rc = tb__wire_fwdbwd_request_from_proto(&c, &op->arena, req->body, &w);
  } else {
    json_t *doc = NULL;
    rc = tb__json_parse(req->body, &doc, &err);
    rc = rc < 0 ? rc : tb__wire_fwdbwd_request_from_json(&c, &op->arena, doc, key, &w);
    json_decref(doc);
  }
  if (rc >= 0 && w.model_id == NULL)
    rc = tb__jctx_fail_at(&c, "model_id", "required");
  if (rc >= 0)
    rc = to_batch(&c, &op->arena, &w, &op->batch, key);
  if (rc < 0) {
    respond_bad(req, &err);
    tb__top_free(op);
    return;
  }
  if (w.forward_only)
    op->type = TB__OP_FORWARD;
  tb_slice_t mid = { w.model_id, strlen(w.model_id) };
  op->model = tb__tmodel_find(req, mid);
  if (op->model == NULL) {
    tb__top_free(op);
    return;
  }
  op->seq = w.seq_id;
  submit_ordered(req, op);
}

static void route_forward_backward(tb_http_request_t *req) {
  route_fwd_common(req, 0);
}

static void route_forward(tb_http_request_t *req) {
  route_fwd_common(req, 1);
}

/* Common to the JSON training routes: the model and seq of the body, and
 * a new op; NULL after answering. */
static tb__top_t *json_op(tb_http_request_t *req, tb__op_type_t type, json_t *doc,
                          tb_jctx_t *c, tb_error_t *err) {
  tb_slice_t mid;
  int64_t seq;
  if (get_model_seq(c, doc, &mid, &seq) < 0) {
    respond_bad(req, err);
    return NULL;
  }
  tb__tmodel_t *m = tb__tmodel_find(req, mid);
  tb__top_t *op = m ? tb__top_new(req, type) : NULL;
  if (op != NULL) {
    op->model = m;
    op->seq = seq;
  }
  return op;
}

/* Refuses op after a validation error known at submission. */
static void refuse(tb_http_request_t *req, tb__top_t *op, tb_error_t *err) {
  respond_bad(req, err);
  tb__top_free(op);
}

static void route_optim_step(tb_http_request_t *req) {
  if (closing_503(req) || tb__server_rate_limited(req) != 0)
    return;
  ROUTE_BEGIN(req, doc, err, c);
  tb__top_t *op = json_op(req, TB__OP_OPTIM, doc, &c, &err);
  if (op == NULL) {
    json_decref(doc);
    return;
  }
  tb__adam_params_default(&op->adam);
  json_t *ap = NULL;
  int rc = tb__json_get_object(&c, doc, "adam_params", TB_JSON_OPTIONAL, &ap);
  if (rc >= 0 && ap != NULL) {
    static const char *names[] = { "learning_rate", "beta1", "beta2", "eps",
                                   "weight_decay", "grad_clip_norm" };
    float *dst[] = { &op->adam.learning_rate, &op->adam.beta1, &op->adam.beta2,
                     &op->adam.eps, &op->adam.weight_decay, &op->adam.grad_clip_norm };
    size_t mark = tb__jctx_push_key(&c, "adam_params");
    for (size_t i = 0; rc >= 0 && i < 6; i++) {
      double v = *dst[i];
      rc = tb__json_get_double(&c, ap, names[i], TB_JSON_OPTIONAL, &v);
      *dst[i] = (float)v;
    }
    const char *why = NULL;
    if (rc >= 0 && tb__adam_params_validate(&op->adam, &why) != 0)
      rc = tb__jctx_fail(&c, "%s", why ? why : "invalid");
    tb__jctx_pop(&c, mark);
  }
  json_decref(doc);
  if (rc < 0) {
    refuse(req, op, &err);
    return;
  }
  submit_ordered(req, op);
}

/* A checkpoint name: a single path component of safe characters. */
static int check_name(tb_jctx_t *c, tb_slice_t name) {
  int ok = name.len > 0 && name.len <= 128 && name.base[0] != '.';
  for (size_t i = 0; ok && i < name.len; i++) {
    char ch = name.base[i];
    ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '.' || ch == '_' || ch == '-';
  }
  return ok ? 0 : tb__jctx_fail_at(c, "path", "expected a name of 1 to 128 letters, digits, "
                                                "'.', '_' or '-', not starting with '.'");
}

static void route_save_common(tb_http_request_t *req, tb__op_type_t type) {
  tb__training_t *tr = tb__training_of(req);
  if (closing_503(req) || tb__server_rate_limited(req) != 0)
    return;
  ROUTE_BEGIN(req, doc, err, c);
  tb__top_t *op = json_op(req, type, doc, &c, &err);
  if (op == NULL) {
    json_decref(doc);
    return;
  }
  const char *kind = type == TB__OP_SAVE ? "weights" : "sampler_weights";
  tb_slice_t name = { NULL, 0 };
  char gen[64];
  int rc = tb__json_get_string(&c, doc, "path",
                               type == TB__OP_SAVE ? TB_JSON_REQUIRED : TB_JSON_OPTIONAL, &name);
  if (rc >= 0 && name.base == NULL) {
    /* The unnamed form: the weights get a name and a sampling session. */
    rc = tb__json_get_int(&c, doc, "sampling_session_seq_id", TB_JSON_REQUIRED, 0, INT32_MAX,
                          &op->sampler_seq);
    int n = snprintf(gen, sizeof(gen), "sampler-%llu",
                     (unsigned long long)(uv_hrtime() / 1000));
    name = (tb_slice_t){ gen, (size_t)n };
  }
  rc = rc < 0 ? rc : check_name(&c, name);
  if (rc >= 0 && tr->srv->opts.data_dir == NULL)
    rc = tb__jctx_fail_at(&c, "path", "this server keeps no checkpoints (no data_dir)");
  if (rc >= 0) {
    op->dir = tb__asprintf("%s/%s/%s/%.*s", tr->srv->opts.data_dir, op->model->id, kind,
                           (int)name.len, name.base);
    op->tinker_path = tb__asprintf("tinker://%s/%s/%.*s", op->model->id, kind, (int)name.len,
                                   name.base);
    if (op->dir == NULL || op->tinker_path == NULL)
      rc = tb__jctx_fail(&c, "out of memory");
  }
  json_decref(doc);
  if (rc < 0) {
    refuse(req, op, &err);
    return;
  }
  submit_ordered(req, op);
}

static void route_save_weights(tb_http_request_t *req) {
  route_save_common(req, TB__OP_SAVE);
}

static void route_save_for_sampler(tb_http_request_t *req) {
  route_save_common(req, TB__OP_SAVE_SAMPLER);
}

char *tb__checkpoint_dir(tb_http_request_t *req, const char *field, tb_slice_t path) {
  tb__training_t *tr = tb__training_of(req);
  static const char scheme[] = "tinker://";
  size_t sl = sizeof(scheme) - 1;
  const char *p = path.base, *end = path.base + path.len;
  const char *s1 = path.len > sl && memcmp(p, scheme, sl) == 0 ? memchr(p + sl, '/', path.len - sl)
                                                                : NULL;
  const char *s2 = s1 ? memchr(s1 + 1, '/', (size_t)(end - s1 - 1)) : NULL;
  tb_slice_t mid = { p + sl, s1 ? (size_t)(s1 - p - sl) : 0 };
  tb_slice_t kind = { s1 ? s1 + 1 : NULL, s2 ? (size_t)(s2 - s1 - 1) : 0 };
  tb_slice_t name = { s2 ? s2 + 1 : NULL, s2 ? (size_t)(end - s2 - 1) : 0 };
  tb_error_t err = { 0 };
  tb_jctx_t c;
  tb__jctx_init(&c, &err);
  int rc = 0;
  if (s2 == NULL || mid.len == 0 ||
      !(tb__slice_eq_str(kind, "weights") || tb__slice_eq_str(kind, "sampler_weights")))
    rc = tb__jctx_fail_at(&c, field, "expected tinker://<model_id>/weights/<name> or "
                                     "tinker://<model_id>/sampler_weights/<name>");
  rc = rc < 0 ? rc : check_name(&c, name);
  if (rc >= 0 && tr->srv->opts.data_dir == NULL)
    rc = tb__jctx_fail(&c, "this server keeps no checkpoints (no data_dir)");
  for (size_t i = 0; rc >= 0 && i < mid.len; i++)
    if (mid.base[i] == '.' && i == 0)
      rc = tb__jctx_fail(&c, "invalid model id");
  if (rc < 0) {
    respond_bad(req, &err);
    return NULL;
  }
  /* Checkpoints belong to the user whose session made the model. */
  const char *colon = memchr(mid.base, ':', mid.len);
  tb_slice_t sid = { mid.base, colon ? (size_t)(colon - mid.base) : mid.len };
  if (tb__session_find(&tr->srv->sessions, tb__sreq(req)->user, sid) == NULL) {
    tb__server_respond_error(req, 404, "%s: no such checkpoint", field);
    return NULL;
  }
  char *dir = tb__asprintf("%s/%.*s/%.*s/%.*s", tr->srv->opts.data_dir, (int)mid.len,
                           mid.base, (int)kind.len, kind.base, (int)name.len, name.base);
  if (dir == NULL)
    tb__server_respond_error(req, 503, "out of memory");
  return dir;
}

/* The create-via-load form: {"session_id", "model_seq_id", "base_model"?,
 * "path", "optimizer"} creates model <session_id>:train:<model_seq_id>
 * with the checkpoint's LoRA shape and loads it as its first operation. */
static void load_creating(tb_http_request_t *req, json_t *doc, tb_jctx_t *c, tb_error_t *err) {
  tb__training_t *tr = tb__training_of(req);
  tb_slice_t sid, path, base = { NULL, 0 };
  int64_t mseq = 0;
  int optimizer = 0;
  int rc = tb__json_get_string(c, doc, "session_id", TB_JSON_REQUIRED, &sid);
  rc = rc < 0 ? rc
              : tb__json_get_int(c, doc, "model_seq_id", TB_JSON_REQUIRED, 0, INT32_MAX, &mseq);
  rc = rc < 0 ? rc : tb__json_get_string(c, doc, "path", TB_JSON_REQUIRED, &path);
  rc = rc < 0 ? rc : tb__json_get_string(c, doc, "base_model", TB_JSON_OPTIONAL, &base);
  rc = rc < 0 ? rc : get_bool_default(c, doc, "optimizer", 0, &optimizer);
  if (rc >= 0 && base.base != NULL && !tb__slice_eq_str(base, TB_BASE_MODEL_NAME))
    rc = tb__jctx_fail_at(c, "base_model", "unknown model \"%.*s\"",
                          (int)(base.len > 80 ? 80 : base.len), base.base);
  if (rc < 0) {
    respond_bad(req, err);
    return;
  }
  tb__session_t *s = tb__session_find(&tr->srv->sessions, tb__sreq(req)->user, sid);
  if (s == NULL || s->expired) {
    tb__server_respond_error(req, 404, "session_id: unknown or expired session");
    return;
  }
  char *dir = tb__checkpoint_dir(req, "path", path);
  if (dir == NULL)
    return;
  tb_lora_config_t lora;
  if (tb__checkpoint_lora(tr, path, dir, &lora, err) != 0) {
    tb__server_respond_error(req, 404, "path: %s", err->message ? err->message
                                                                : "no such checkpoint");
    tb_error_clear(err);
    free(dir);
    return;
  }
  tb__top_t *op = tb__top_new(req, TB__OP_LOAD);
  if (op != NULL) {
    op->dir = dir;
    dir = NULL;
    op->optimizer = optimizer;
    op->tinker_path = tb__strndup(path.base, path.len);
  }
  free(dir);
  if (op == NULL)
    return;
  if (op->tinker_path == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    tb__top_free(op);
    return;
  }
  create_model(req, tr, s, mseq, &lora, op);
}

static void route_load_weights(tb_http_request_t *req) {
  if (closing_503(req) || tb__server_rate_limited(req) != 0)
    return;
  ROUTE_BEGIN(req, doc, err, c);
  if (json_object_get(doc, "model_id") == NULL && json_object_get(doc, "session_id") != NULL) {
    load_creating(req, doc, &c, &err);
    json_decref(doc);
    return;
  }
  tb__top_t *op = json_op(req, TB__OP_LOAD, doc, &c, &err);
  if (op == NULL) {
    json_decref(doc);
    return;
  }
  tb_slice_t path;
  int rc = tb__json_get_string(&c, doc, "path", TB_JSON_REQUIRED, &path);
  rc = rc < 0 ? rc : get_bool_default(&c, doc, "optimizer", 0, &op->optimizer);
  if (rc < 0) {
    json_decref(doc);
    refuse(req, op, &err);
    return;
  }
  op->dir = tb__checkpoint_dir(req, "path", path);
  op->tinker_path = op->dir ? tb__strndup(path.base, path.len) : NULL;
  json_decref(doc);
  if (op->tinker_path == NULL) {
    if (op->dir != NULL)
      tb__server_respond_error(req, 503, "out of memory");
    tb__top_free(op);
    return;
  }
  submit_ordered(req, op);
}

static void ext_close(tb__server_t *srv, tb__server_ext_t *ext);

static void route_unload_model(tb_http_request_t *req) {
  if (closing_503(req))
    return;
  ROUTE_BEGIN(req, doc, err, c);
  tb_slice_t mid;
  int rc = tb__json_get_string(&c, doc, "model_id", TB_JSON_REQUIRED, &mid);
  if (rc < 0) {
    respond_bad(req, &err);
    json_decref(doc);
    return;
  }
  tb__tmodel_t *m = tb__tmodel_find(req, mid);
  json_decref(doc);
  if (m == NULL)
    return;
  if (!m->ready) {
    tb__server_respond_error(req, 409, "model %s is still being created", m->id);
    return;
  }
  tb__top_t *op = tb__top_new(req, TB__OP_UNLOAD);
  if (op == NULL || tb__top_accept(req, op) != 0)
    return;
  tb__respond_future(req, op->future->id, m->id);
  unload_now(m, op);
}

/* Removes m's adapter behind the jobs already in its FIFO.  op carries
 * the client's future, or is NULL for the server's own unloads. */
static void unload_now(tb__tmodel_t *m, tb__top_t *op) {
  m->unloading = 1;
  /* What waits for a missing seq_id never runs now. */
  while (m->waiting != NULL) {
    tb__top_t *w = m->waiting;
    m->waiting = w->next;
    tb__top_fail(w, TB_CATEGORY_USER, "the model was unloaded");
  }
  if (op == NULL && (op = top_alloc(m->tr, TB__OP_UNLOAD)) == NULL) {
    tb_warn("cannot unload model %s: out of memory", m->id);
    return;
  }
  op->model = m;
  if (m->blocked) {
    m->pending_unload = op;  /* after the save in progress */
    return;
  }
  start_op(op);
}

/* A session expired: its models are unloaded (checkpoints stay). */
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
    model_unlink(tr, op->model, 0);
    model_free(op->model);
    tb__top_fail(op, TB_CATEGORY_USER, "the session expired");
  }
  for (tb__tmodel_t *m = tr->models; m != NULL; m = m->next) {
    if (m->session != s || m->unloading)
      continue;
    if (m->ready)
      unload_now(m, NULL);
    else
      m->unloading = 1;  /* unloaded once created */
  }
}

static void route_get_info(tb_http_request_t *req) {
  tb__training_t *tr = tb__training_of(req);
  ROUTE_BEGIN(req, doc, err, c);
  tb_slice_t mid;
  int rc = tb__json_get_string(&c, doc, "model_id", TB_JSON_REQUIRED, &mid);
  if (rc < 0) {
    respond_bad(req, &err);
    json_decref(doc);
    return;
  }
  tb__tmodel_t *m = tb__tmodel_find(req, mid);
  json_decref(doc);
  if (m == NULL)
    return;
  (void)tr;
  json_t *v = json_pack("{s{ssssss}sssbsiss}", "model_data", "arch", "llama", "model_name",
                        TB_BASE_MODEL_NAME, "tokenizer_id", TB_BASE_MODEL_NAME, "model_id",
                        m->id, "is_lora", 1, "lora_rank", m->lora.rank, "model_name",
                        TB_BASE_MODEL_NAME);
  if (v != NULL)
    json_object_set_new(v, "type", json_string("get_info"));
  if (v == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  tb__server_respond_jsonv(req, 200, v);
  json_decref(v);
}

/* ------------------------------------------------------------ lifecycle */

static void on_base_loaded(tb_engine_job_t *job, int status) {
  tb__training_t *tr = job->data;
  if (status == 0) {
    tr->base = job->model;
    tr->base_state = 1;
  } else {
    tr->base_state = -1;
    tr->base_error = tb__asprintf("the base model failed to load: %s",
                                  job->error.message ? job->error.message
                                                     : tb_strerror(status));
    tb_warn("%s", tr->base_error ? tr->base_error : "the base model failed to load");
  }
  tb__engine_job_cleanup(job);
  if (!tr->closing)
    start_held(tr);
}

static void training_free(tb__training_t *tr) {
  tb__tmodel_t *m = tr->models;
  while (m != NULL) {
    tb__tmodel_t *next = m->next;
    if (m->pending_unload != NULL)
      tb__top_fail(m->pending_unload, TB_CATEGORY_SERVER, "the server is closing");
    model_free(m);
    m = next;
  }
  tb__samplers_free(tr);
  free(tr->base_error);
  tb__server_t *srv = tr->srv;
  for (tb__server_ext_t **p = &srv->exts; *p != NULL; p = &(*p)->next)
    if (*p == &tr->ext) {
      *p = tr->ext.next;
      break;
    }
  tb__server_ext_closed(srv, &tr->ext);
  free(tr);
}

static void on_engine_closed(tb_engine_t *e) {
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
  /* The engine releases the base model with everything else. */
  tr->base = NULL;
  tb__engine_close(&tr->engine, on_engine_closed);
}

static void ext_metrics(tb__server_t *srv, tb__server_ext_t *ext, tb_buf_t *out) {
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
}

static int add_routes(tb__training_t *tr) {
  static const struct {
    const char *path;
    tb_http_handler_cb cb;
    const char *summary;
  } routes[] = {
    { "/api/v1/create_model", route_create_model,
      "Creates a LoRA model: future of {model_id}" },
    { "/api/v1/forward_backward", route_forward_backward,
      "Forward and backward (JSON or protobuf body): future of ForwardBackwardOutput" },
    { "/api/v1/forward", route_forward, "Forward only: future of ForwardBackwardOutput" },
    { "/api/v1/optim_step", route_optim_step, "An Adam step: future of {metrics}" },
    { "/api/v1/save_weights", route_save_weights,
      "Saves a training checkpoint: future of {path}" },
    { "/api/v1/save_weights_for_sampler", route_save_for_sampler,
      "Saves sampler weights: future of {path}" },
    { "/api/v1/load_weights", route_load_weights, "Loads a checkpoint: future" },
    { "/api/v1/unload_model", route_unload_model, "Unloads a model: future" },
    { "/api/v1/get_info", route_get_info, "A model's base, rank and tokenizer" },
  };
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < sizeof(routes) / sizeof(routes[0]); i++)
    rc = tb__server_route(tr->srv, "POST", routes[i].path, TB__DIALECT_TINKER, 0,
                          routes[i].cb, tr, routes[i].summary);
  return rc ? rc : tb__sampling_routes(tr);
}

int tb__training_start(tb__server_t *srv, const tb_engine_opts_t *opts, tb_error_t *err) {
  tb__training_t *tr = calloc(1, sizeof(*tr));
  if (tr == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  tr->srv = srv;
  int rc = tb__engine_init(srv->loop, &tr->engine, opts);
  if (rc != 0) {
    free(tr);
    return tb_error_set(err, rc, TB_CATEGORY_SERVER, "cannot start the engine");
  }
  tr->engine.data = tr;
  tr->ext.data = tr;
  tr->ext.close = ext_close;
  tr->ext.metrics = ext_metrics;
  tb_model_config_t cfg;
  tb__base_model_config(&cfg);
  rc = add_routes(tr);
  if (rc == 0) {
    rc = tb_server_add_model(srv->pub, TB_BASE_MODEL_NAME, cfg.max_position_embeddings);
    rc = rc == TB_EEXIST ? 0 : rc;
  }
  tr->load_job.data = tr;
  rc = rc ? rc : tb__engine_load_model(&tr->load_job, &tr->engine, TB_BASE_MODEL_NAME,
                                       on_base_loaded);
  /* From here the engine is the extension's to close, also on error. */
  tb__server_add_ext(srv, &tr->ext);
  srv->sessions.on_expire = on_session_expired;
  if (rc != 0) {
    tr->base_state = -1;
    tb__engine_job_cleanup(&tr->load_job);
    return tb_error_set(err, rc, TB_CATEGORY_SERVER, "cannot start the training part: %s",
                        tb_strerror(rc));
  }
  return 0;
}

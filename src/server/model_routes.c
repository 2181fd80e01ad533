/*
 * The model routes of the Tinker dialect: what a request says, checked
 * and decoded into an op of training.c, which keeps the seq_id order and
 * runs it on the engine.  create_model, forward, forward_backward (the
 * JSON body of SDK 0.24 or the protobuf body of SDK 0.25), optim_step,
 * save_weights, save_weights_for_sampler (named and unnamed), load_weights
 * (also the create-via-load form), unload_model (futures) and get_info
 * (direct): the submits (and the forward decoder) of the route table's
 * generic handler (handler.c), which reads the body, makes the op and
 * answers 400 with the field's path for the validation errors known
 * here; the engine's own checks fail the future.
 *
 * Checkpoints live under the server's data_dir:
 *   <data_dir>/<model_id>/weights/<name>           (save_weights)
 *   <data_dir>/<model_id>/sampler_weights/<name>   (save_weights_for_sampler)
 */
#include "server/training.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "server/routes.h"
#include "server/sched.h"
#include "server/store.h"
#include "wire/datum.h"
#include "wire/op_request.h"
#include "wire/rest.h"
#include "wire/service.h"

int tb__route_create_model(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  tb__jctx_t *c = &call->c;
  const tb__wire_create_model_t *w = call->in;
  tb__lora_config_t lora = { 0 };
  lora.rank = (int)w->rank;
  lora.seed = (uint64_t)w->seed;
  lora.train_attn = w->train_attn;
  lora.train_mlp = w->train_mlp;
  lora.train_unembed = w->train_unembed;
  const char *why = NULL;
  int rc = 0;
  if (tb__lora_config_validate(&lora, &why) != 0)
    rc = tb__jctx_fail_at(c, "lora_config", "%s", why);
  tb__tbase_t *b = NULL;
  rc = rc < 0 ? rc : tb__tbase_field(c, tr, tb__wire_str(w->base_model), 1, &b);
  if (rc < 0)
    return rc;
  tb__session_t *s = tb__session_live(req, tb__wire_str(w->session_id));
  if (s != NULL)
    tb__create_model(req, tr, b, s, w->model_seq_id, &lora, NULL);
  return 0;
}

/* The decoded request as an engine batch; checks that the loss has its
 * inputs, with their lengths. */
static int to_batch(tb__jctx_t *c, tb__arena_t *a, const tb__wire_fwdbwd_t *w, tb__batch_t *b,
                    const char *input_key) {
  /* The protobuf request has the input's fields at its top level. */
  size_t m0 = input_key ? tb__jctx_push_key(c, input_key) : 0;
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
  tb__datum_t *d = tb__arena_calloc(a, w->n_data + 1, sizeof(*d));
  if (rc == 0 && d == NULL)
    rc = tb__jctx_fail(c, "out of memory");
  size_t m1 = tb__jctx_push_key(c, "data");
  for (size_t i = 0; rc == 0 && i < w->n_data; i++) {
    const tb__wire_datum_t *wd = &w->data[i];
    size_t m2 = tb__jctx_push_index(c, i);
    size_t m3 = tb__jctx_push_key(c, "loss_fn_inputs");
    d[i].tokens = wd->tokens;
    d[i].n = wd->n_tokens;
    const tb__wire_tensor_t *tt = tb__wire_datum_input(wd, "target_tokens");
    const tb__wire_tensor_t *wt = tb__wire_datum_input(wd, "weights");
    const tb__wire_tensor_t *lp = tb__wire_datum_input(wd, "logprobs");
    const tb__wire_tensor_t *ad = tb__wire_datum_input(wd, "advantages");
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
  if (input_key != NULL)
    tb__jctx_pop(c, m0);
  b->data = d;
  b->num_data = w->n_data;
  return rc;
}

int tb__fwdbwd_to_batch(tb__jctx_t *c, tb__arena_t *a, const tb__wire_fwdbwd_t *w, tb__batch_t *b,
                        const char *input_key) {
  return to_batch(c, a, w, b, input_key);
}

/* Decodes a forward / forward_backward body (JSON, or protobuf by its
 * Content-Type) into a tb__wire_fwdbwd_t and the op's batch; on the
 * threadpool when large (TB__CALL_OFF_LOOP): a 64 MiB JSON batch takes
 * long enough to stall every other client of the loop.  Touches only the
 * body, the op's arena and the call. */
int tb__route_fwd_decode(tb__route_call_t *call) {
  tb__top_t *op = call->op;
  tb__wire_fwdbwd_t *w = call->in;
  const char *key = op->type == TB__OP_FORWARD ? "forward_input" : "forward_backward_input";
  /* No decoded tensor may take more than a whole request could. */
  size_t max_bytes = op->tr->srv->opts.max_body;
  int rc;
  if (call->proto) {
    rc = tb__wire_fwdbwd_request_from_proto(&call->c, &op->arena, call->req->body, max_bytes,
                                            w);
  } else {
    json_t *doc = NULL;
    rc = tb__json_parse(call->req->body, &doc, &call->err);
    rc = rc < 0 ? rc
                : tb__wire_fwdbwd_request_from_json(&call->c, &op->arena, doc, key, max_bytes,
                                                    w);
    json_decref(doc);
  }
  if (rc >= 0 && w->model_id == NULL)
    rc = tb__jctx_fail_at(&call->c, "model_id", "required");
  if (rc >= 0)
    rc = to_batch(&call->c, &op->arena, w, &op->batch, call->proto ? NULL : key);
  return rc;
}

/* On the loop, after the decode: the model, then the order. */
int tb__route_fwd(tb__route_call_t *call) {
  const tb__wire_fwdbwd_t *w = call->in;
  tb__top_t *op = call->op;
  if (w->forward_only)
    op->type = TB__OP_FORWARD;
  tb_slice_t mid = { w->model_id, strlen(w->model_id) };
  op->model = tb__tmodel_find(call->req, mid);
  if (op->model == NULL)
    return 0;
  op->seq = w->seq_id;
  call->op = NULL;
  tb__submit_ordered(call->req, op);
  return 0;
}

/* Common to the JSON training routes: the model and seq of the body, into
 * the call's op.  c's error; or 0, with op->model NULL after answering
 * 404. */
static int op_model(tb__route_call_t *call) {
  tb__wire_op_target_t w;
  int rc = tb__wire_op_target_from_json(&call->c, call->doc, &w);
  if (rc < 0)
    return rc;
  call->op->model = tb__tmodel_find(call->req, tb__wire_str(w.model_id));
  call->op->seq = w.seq_id;
  return 0;
}

/* Submits the call's op in its model's order. */
static int submit(tb__route_call_t *call) {
  tb__top_t *op = call->op;
  call->op = NULL;
  tb__submit_ordered(call->req, op);
  return 0;
}

int tb__adam_from_json(tb__jctx_t *c, const json_t *doc, int strict, tb__adam_params_t *out) {
  tb__adam_params_t d;
  tb__adam_params_default(&d);
  tb__wire_adam_t v = { d.learning_rate, d.beta1, d.beta2, d.eps, d.weight_decay,
                        d.grad_clip_norm };
  int rc = tb__wire_adam_from_json(c, doc, strict, &v);
  if (rc < 0)
    return rc;
  /* Checked as doubles, before they are narrowed to float. */
  const char *field = NULL, *why = NULL;
  if (tb__adam_values_validate(v.learning_rate, v.beta1, v.beta2, v.eps, v.weight_decay,
                               v.grad_clip_norm, &field, &why) != 0) {
    size_t mark = tb__jctx_push_key(c, "adam_params");
    rc = tb__jctx_fail_at(c, field, "%s", why);
    tb__jctx_pop(c, mark);
    return rc;
  }
  out->learning_rate = (float)v.learning_rate;
  out->beta1 = (float)v.beta1;
  out->beta2 = (float)v.beta2;
  out->eps = (float)v.eps;
  out->weight_decay = (float)v.weight_decay;
  out->grad_clip_norm = (float)v.grad_clip_norm;
  return 0;
}

int tb__route_optim_step(tb__route_call_t *call) {
  int rc = op_model(call);
  if (rc < 0 || call->op->model == NULL)
    return rc;
  rc = tb__adam_from_json(&call->c, call->doc, 0, &call->op->adam);
  return rc < 0 ? rc : submit(call);
}

/* A checkpoint name: a single path component of safe characters. */
int tb__route_save(tb__route_call_t *call) {
  tb__training_t *tr = tb__training_of(call->req);
  int rc = op_model(call);
  if (rc < 0 || call->op->model == NULL)
    return rc;
  tb__top_t *op = call->op;
  tb__op_type_t type = op->type;
  tb__jctx_t *c = &call->c;
  const char *kind = type == TB__OP_SAVE ? "weights" : "sampler_weights";
  tb__wire_save_request_t w;
  rc = tb__wire_save_request_from_json(c, call->doc,
                                       type == TB__OP_SAVE ? "save_weights"
                                                           : "save_weights_for_sampler",
                                       &w);
  tb_slice_t name = tb__wire_str(w.path);
  char gen[64];
  if (rc >= 0 && name.base == NULL) {
    /* The unnamed form: the weights get a name and a sampling session. */
    op->sampler_seq = w.sampling_session_seq_id;
    int n = snprintf(gen, sizeof(gen), "sampler-%llu",
                     (unsigned long long)(uv_hrtime() / 1000));
    name = (tb_slice_t){ gen, (size_t)n };
  }
  rc = rc < 0 ? rc : tb__checkpoint_check_name(c, name);
  op->overwrite = w.overwrite;
  op->ttl_seconds = w.ttl_seconds;
  if (rc >= 0 && tr->srv->opts.data_dir == NULL)
    rc = tb__jctx_fail_at(c, "path", "this server keeps no checkpoints (no data_dir)");
  if (rc >= 0) {
    op->dir = tb__asprintf("%s/%s/%s/%.*s", tr->srv->opts.data_dir, op->model->id, kind,
                           (int)name.len, name.base);
    op->tinker_path = tb__asprintf("tinker://%s/%s/%.*s", op->model->id, kind, (int)name.len,
                                   name.base);
    if (op->dir == NULL || op->tinker_path == NULL)
      rc = tb__jctx_fail(c, "out of memory");
  }
  return rc < 0 ? rc : submit(call);
}

/* The create-via-load form: {"session_id", "model_seq_id", "base_model"?,
 * "path", "optimizer"} creates model <session_id>:train:<model_seq_id>
 * with the checkpoint's LoRA shape and loads it as its first operation. */
static int load_creating(tb__route_call_t *call, const tb__wire_load_request_t *w) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  tb__jctx_t *c = &call->c;
  tb_slice_t path = tb__wire_str(w->path);
  tb__tbase_t *b = NULL;
  if (w->base_model != NULL) {
    int rc = tb__tbase_field(c, tr, tb__wire_str(w->base_model), 0, &b);
    if (rc < 0)
      return rc;
  }
  tb__session_t *s = tb__session_live(req, tb__wire_str(w->session_id));
  if (s == NULL)
    return 0;
  tb__top_t *op = call->op;
  op->dir = tb__checkpoint_dir(req, "path", path);
  if (op->dir == NULL)
    return 0;
  tb__lora_config_t lora;
  tb__tbase_t *live_base = NULL;
  int known = tb__checkpoint_lora(tr, path, &lora, &live_base);
  if (b == NULL)  /* the base of the live model, else the default one */
    b = live_base ? live_base : &tr->bases[0];
  op->optimizer = w->optimizer;
  op->tinker_path = tb__strndup(path.base, path.len);
  if (op->tinker_path == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return 0;
  }
  /* An unloaded model's shape is read from the checkpoint first. */
  call->op = NULL;
  tb__create_model(req, tr, b, s, w->model_seq_id, known ? &lora : NULL, op);
  return 0;
}

int tb__route_load_weights(tb__route_call_t *call) {
  tb__wire_load_request_t w;
  int rc;
  if (tb__wire_load_is_create(call->doc)) {
    rc = tb__wire_load_request_from_json(&call->c, call->doc, &w);
    return rc < 0 ? rc : load_creating(call, &w);
  }
  rc = op_model(call);
  if (rc < 0 || call->op->model == NULL)
    return rc;
  tb__top_t *op = call->op;
  rc = tb__wire_load_request_from_json(&call->c, call->doc, &w);
  if (rc < 0)
    return rc;
  op->optimizer = w.optimizer;
  tb_slice_t path = tb__wire_str(w.path);
  op->dir = tb__checkpoint_dir(call->req, "path", path);
  op->tinker_path = op->dir ? tb__strndup(path.base, path.len) : NULL;
  if (op->tinker_path == NULL) {
    if (op->dir != NULL)
      tb__server_respond_error(call->req, 503, "out of memory");
    return 0;
  }
  return submit(call);
}

/* The decoder of the routes that take only {"model_id"}: the model into
 * call->model, or c's error, or 0 after answering 404. */
int tb__route_model(tb__route_call_t *call) {
  tb_slice_t mid;
  int rc = tb__json_get_string(&call->c, call->doc, "model_id", TB_JSON_REQUIRED, &mid);
  if (rc < 0)
    return rc;
  call->model = tb__tmodel_find(call->req, mid);
  return 0;
}

int tb__route_unload_model(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__tmodel_t *m = call->model;
  tb__top_t *op = call->op;
  call->op = NULL;
  if (tb__top_accept(req, op) != 0)
    return 0;
  tb__respond_future(req, op->future->id, m->id);
  if (!m->ready) {
    /* Unloaded as soon as it exists. */
    m->unloading = 1;
    op->model = m;
    m->pending_unload = op;
    return 0;
  }
  tb__unload_now(m, op);
  return 0;
}

int tb__route_get_info(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__tmodel_t *m = call->model;
  tb__wire_model_info_t w = { .model_id = m->id,
                              .model_name = m->base->name,
                              .arch = tb__model_arch_type(m->base->cfg.arch),
                              .tokenizer_id = m->base->name,
                              .is_lora = 1,
                              .lora_rank = m->lora.rank };
  tb__server_respond_answer(req, tb__wire_model_info_to_json(&w));
  return 0;
}

/* {"base_model", "is_lora", "lora_rank", "train_*"} of a checkpoint. */
static void respond_weights_info(tb__http_request_t *req, const char *base,
                                 const tb__lora_config_t *l) {
  tb__wire_weights_info_t w = { base, 1, l->rank, !!l->train_unembed, !!l->train_mlp,
                                !!l->train_attn };
  tb__server_respond_answer(req, tb__wire_weights_info_to_json(&w));
}

static void on_weights_info(tb__training_t *tr, void *data, int status,
                            const tb__lora_config_t *lora, const char *base_name,
                            const char *message) {
  /* The request is still ours: if its client went away, answering only
   * gives it back. */
  tb__http_request_t *req = data;
  if (status != 0)
    tb__server_respond_error(req, 404, "tinker_path: %s", message);
  else
    respond_weights_info(req, base_name[0] ? base_name : tr->bases[0].name, lora);
}

/* POST /api/v1/weights_info {"tinker_path"}: what the SDK reads before
 * create_training_client_from_state. */
int tb__route_weights_info(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  const tb__wire_weights_info_request_t *w = call->in;
  tb_slice_t path = w->tinker_path;
  char *dir = tb__checkpoint_dir(req, "tinker_path", path);
  tb__lora_config_t lora;
  tb__tbase_t *base = NULL;
  if (dir != NULL && tb__checkpoint_lora(tr, path, &lora, &base)) {
    respond_weights_info(req, base->name, &lora);
  } else if (dir != NULL) {
    int rc = tb__read_checkpoint_lora(tr, dir, on_weights_info, req);
    if (rc != 0)
      tb__server_respond_error(req, 503, "cannot read the checkpoint: %s", tb_strerror(rc));
  }
  free(dir);
  return 0;
}

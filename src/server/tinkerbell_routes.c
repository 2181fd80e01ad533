/*
 * The routes of the Tinkerbell dialect (tinkerbell.h): what each request
 * says, checked, turned into an op of training.c and answered -- at once
 * with {"request_id", "model_id"} by the async routes, or with the result
 * by the sync routes, which wait for the op's future on the loop (a
 * waiter of the futures store; nothing sleeps) and mark it delivered.
 * The results are those of tinkerbell_results.c, also what
 * POST /retrieve_future answers for the async calls.
 *
 * Paths that both dialects serve (/api/v1/forward, forward_backward,
 * optim_step, asample, load_weights, save_weights,
 * save_weights_for_sampler) are TB__DIALECT_BOTH rows of the route table
 * (routes.c): tb__dialect_of (dialect.c) reads the body and the server
 * calls this dialect's handler or the Tinker one's.
 *
 * Checkpoints of this dialect live apart from the Tinker dialect's, under
 * a directory per user and model, since model names here are the
 * caller's and two users may both have a "test":
 *   <data_dir>/tb-<hex of the user name>-<model_id>/weights/<name>
 *   <data_dir>/tb-<hex of the user name>-<model_id>/sampler_weights/<name>
 * and are named tinkerbell://<model_id>/weights/<name> in results.
 */
#include "server/tinkerbell.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/json.h"
#include "server/routes.h"
#include "server/sched.h"
#include "wire/tinkerbell.h"
#include "wire/tinkerbell_request.h"

/* ------------------------------------------------------------ answers */

typedef struct sync_wait_s {
  tb__fwaiter_t w;  /* first: the waiter callback gets &w */
  tb__http_request_t *req;
  tb__future_t *f;
} sync_wait_t;

/* A finished future as the answer of a sync route.  A job that failed
 * for a reason of the request is 400, for one of the server 500; both
 * carry the guide's "detail" beside the error. */
static void answer_finished(tb__http_request_t *req, tb__future_t *f) {
  if (f->state == TB__FUTURE_PENDING) {
    tb__server_respond_error(req, 503, "the server is closing");
    return;
  }
  tb__future_mark_delivered(f);
  if (f->state == TB__FUTURE_DONE) {
    tb__server_respond_result(req, 200, f->result, 0);
    return;
  }
  /* Built by hand, as retrieve_future's answer: jansson refuses a message
   * that is not UTF-8. */
  tb__futures_respond_failure(req, f->category == TB_CATEGORY_USER ? 400 : 500, f, 1);
}

static void on_sync_finished(tb__fwaiter_t *w, tb__future_t *f) {
  answer_finished(((sync_wait_t *)w)->req, f);
}

static void on_sync_abort(tb__http_request_t *req, int status) {
  sync_wait_t *sw = tb__sreq(req)->data;
  tb__future_unwait(&sw->w);
  /* Nobody else knows the future's id: a sample stops decoding now
   * rather than run to its max_tokens for no one. */
  if (sw->f->data != NULL)
    tb__top_cancel(sw->f->data, "the sample was cancelled: its client went away");
  tb__server_release(req);
}

/* Answers an accepted call: async, {"request_id", "model_id"}; sync, the
 * future's result once it finishes. */
void tb__tb_answer_call(tb__http_request_t *req, const char *fid, const char *model_id,
                        int sync) {
  if (!sync) {
    tb__respond_future(req, fid, model_id);
    return;
  }
  tb__server_t *srv = tb__server_from_req(req);
  tb__future_t *f;
  tb_slice_t id = { fid, strlen(fid) };
  if (tb__futures_find(&srv->futures, tb__sreq(req)->user, id, &f) != TB__LOOKUP_FOUND) {
    tb__server_respond_error(req, 500, "the result of %s is gone", fid);
    return;
  }
  if (f->state != TB__FUTURE_PENDING) {
    answer_finished(req, f);  /* it failed at submission */
    return;
  }
  sync_wait_t *sw = tb__arena_calloc(&req->arena, 1, sizeof(*sw));
  if (sw == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  sw->req = req;
  sw->f = f;
  tb__sreq(req)->data = sw;
  req->on_abort = on_sync_abort;
  tb__future_wait(f, &sw->w, on_sync_finished);
}

/* ------------------------------------------------------------ models */

/* The caller's model of this dialect named id, or NULL. */
tb__tmodel_t *tb__tb_find_model(tb__training_t *tr, const tb__user_t *u, tb_slice_t id) {
  for (tb__tmodel_t *m = tr->models; m != NULL; m = m->next)
    if (m->owner == u && m->session == NULL && !m->unloading && tb__slice_eq_str(id, m->id))
      return m;
  return NULL;
}

static void default_lora(tb__lora_config_t *l) {
  memset(l, 0, sizeof(*l));
  l->rank = TB__TB_DEFAULT_RANK;
  l->alpha = (float)TB__TB_DEFAULT_ALPHA;
  l->train_attn = l->train_mlp = l->train_unembed = 1;
}

/* Registers the caller's model id with create op cop (its `then`, if
 * any, runs first after the adapter exists) on the default base model.
 * The create starts with tb__start_held.  0, or answers 503. */
static int create_implicit(tb__http_request_t *req, tb__top_t *cop, tb_slice_t id,
                           const tb__lora_config_t *lora) {
  tb__training_t *tr = tb__training_of(req);
  char *mid = tb__strndup(id.base, id.len);
  if (mid == NULL ||
      tb__model_register(tr, cop, tb__sreq(req)->user, NULL, &tr->bases[0], mid, lora) == NULL) {
    free(mid);
    tb__server_respond_error(req, 503, "out of memory");
    return -1;
  }
  return 0;
}

/* Submits op (of op->model, or of a new model id when op->model is NULL)
 * in the model's order and answers.  Takes op. */
void tb__tb_submit(tb__http_request_t *req, tb__top_t *op, tb_slice_t id, int sync) {
  tb__training_t *tr = tb__training_of(req);
  tb__tbop_t *info = op->encode_data;
  if (op->model == NULL) {
    tb__top_t *cop = tb__top_new(req, TB__OP_CREATE);
    tb__lora_config_t lora;
    default_lora(&lora);
    if (cop == NULL || create_implicit(req, cop, id, &lora) != 0) {
      if (cop != NULL)
        tb__top_free(cop);
      tb__top_free(op);
      return;
    }
    op->model = cop->model;
    info->created = 1;
  }
  tb__tmodel_t *m = op->model;
  if (m->max_seq + 1 - m->next_seq >= TB__TB_MAX_WAITING) {
    /* Calls of this dialect carry no seq_id; what bounds the calls that
     * wait for a model still being created is said plainly. */
    static const tb__http_header_t h = { TB_SLICE_LIT("Retry-After"), TB_SLICE_LIT("1") };
    tb__server_respond_error_h(req, 429, &h, 1,
                               "model_id: %d operations of this model wait already; retry "
                               "once they run", TB__TB_MAX_WAITING);
    tb__top_free(op);
    tb__start_held(tr);
    return;
  }
  /* The model may be gone after tb__start_held (its creation failing at
   * once fails op's future too), so its name is kept here. */
  char *mid = tb__arena_strndup(&req->arena, op->model->id, strlen(op->model->id));
  char fid[TB__FUTURE_ID_MAX];
  int rc = tb__submit_ordered_id(req, op, fid);
  tb__start_held(tr);
  if (rc != 0)
    return;
  if (mid == NULL)
    tb__server_respond_error(req, 503, "out of memory");
  else
    tb__tb_answer_call(req, fid, mid, sync);
}

/* The call's op, which the caller now owns. */
static tb__top_t *take_op(tb__route_call_t *call) {
  tb__top_t *op = call->op;
  call->op = NULL;
  return op;
}

/* "model_id" of the body: the caller's model, or (*m NULL) a name a call
 * may create.  0 or c's error. */
static int get_model(tb__jctx_t *c, tb__http_request_t *req, const json_t *doc, tb_slice_t *id,
                     tb__tmodel_t **m) {
  int rc = tb__json_get_string(c, doc, "model_id", TB_JSON_REQUIRED, id);
  if (rc < 0)
    return rc;
  *m = tb__tb_find_model(tb__training_of(req), tb__sreq(req)->user, *id);
  return *m != NULL ? 0 : tb__tb_check_name(c, "model_id", *id);
}

void tb__tb_unknown_model(tb__http_request_t *req, tb_slice_t id) {
  tb__server_respond_error(req, 404, "model_id: unknown model %.*s",
                           (int)(id.len > 120 ? 120 : id.len), id.base);
}

/* ------------------------------------------------------------ training */

/* forward, forward_backward: "model_id" (the caller's model, or a name
 * the call creates on the default base model), whose base model's text
 * chat data needs. */
int tb__route_tb_train_prepare(tb__route_call_t *call) {
  tb__training_t *tr = tb__training_of(call->req);
  tb__tb_text_in_t *in = call->in;
  int rc = get_model(&call->c, call->req, call->doc, &in->id, &in->m);
  if (rc < 0)
    return rc;
  in->b = in->m ? in->m->base : &tr->bases[0];
  if (tb__wire_tb_batch_is_chat(call->doc) && tb__mtext_wait(call->req, in->b, tb__route_generic))
    return 1;  /* the body is read again when the route runs again */
  tb__tctx_init(&in->x, tr, in->b);
  return 0;
}

/* The data, decoded off the loop when the body is large. */
int tb__route_tb_train_decode(tb__route_call_t *call) {
  tb__tb_text_in_t *in = call->in;
  return tb__tb_decode_batch(&call->c, &call->op->arena, call->doc, &in->x, &call->op->batch,
                             call->op->encode_data, &call->status);
}

int tb__route_tb_train(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  tb__tb_text_in_t *in = call->in;
  /* The model may have gone (or come) while the data was encoded for
   * the base model it had then. */
  tb__tmodel_t *m = tb__tb_find_model(tr, tb__sreq(req)->user, in->id);
  const tb__tbase_t *now = m ? m->base : &tr->bases[0];
  if (m != in->m && strcmp(now->name, in->x.name) != 0) {
    tb__server_respond_error(req, 409, "model_id: %.*s changed while its data was "
                                       "encoded; retry",
                             (int)(in->id.len > 120 ? 120 : in->id.len), in->id.base);
    return 0;
  }
  call->op->model = m;
  tb__tb_submit(req, take_op(call), in->id, call->side->sync);
  return 0;
}

/* {"model_id", "adam_params"?}: an Adam step. */
int tb__route_tb_optim(tb__route_call_t *call) {
  tb_slice_t id;
  tb__tmodel_t *m = NULL;
  int rc = get_model(&call->c, call->req, call->doc, &id, &m);
  rc = rc < 0 ? rc : tb__adam_from_json(&call->c, call->doc, 1, &call->op->adam);
  if (rc < 0)
    return rc;
  call->op->model = m;
  tb__tb_submit(call->req, take_op(call), id, call->side->sync);
  return 0;
}

/* ------------------------------------------------------------ adapters */

static int get_bool(tb__jctx_t *c, const json_t *o, const char *key, int *out) {
  int rc = tb__json_get_bool(c, o, key, TB_JSON_OPTIONAL, out);
  return rc < 0 ? rc : 0;
}

/* {"base_model"?, "rank"?, "alpha"?, "model_id"?, "seed"?, "train_attn"?,
 * "train_mlp"?, "train_unembed"?} creates an adapter. */
int tb__route_tb_add_lora(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  const json_t *doc = call->doc;
  tb__jctx_t *c = &call->c;
  tb_slice_t base = { tr->bases[0].name, strlen(tr->bases[0].name) }, name = { NULL, 0 };
  tb__lora_config_t lora;
  default_lora(&lora);
  int64_t rank = lora.rank, seed = 0;
  double alpha = lora.alpha;
  int rc = tb__json_get_string(c, doc, "base_model", TB_JSON_OPTIONAL, &base);
  rc = rc < 0 ? rc : tb__json_get_int(c, doc, "rank", TB_JSON_OPTIONAL, 1, 4096, &rank);
  rc = rc < 0 ? rc : tb__json_get_double(c, doc, "alpha", TB_JSON_OPTIONAL, &alpha);
  if (rc >= 0 && alpha <= 0)
    rc = tb__jctx_fail_at(c, "alpha", "expected a number > 0");
  rc = rc < 0 ? rc : tb__json_get_int(c, doc, "seed", TB_JSON_OPTIONAL, 0, INT64_MAX, &seed);
  rc = rc < 0 ? rc : get_bool(c, doc, "train_attn", &lora.train_attn);
  rc = rc < 0 ? rc : get_bool(c, doc, "train_mlp", &lora.train_mlp);
  rc = rc < 0 ? rc : get_bool(c, doc, "train_unembed", &lora.train_unembed);
  rc = rc < 0 ? rc : tb__json_get_string(c, doc, "model_id", TB_JSON_OPTIONAL, &name);
  if (rc >= 0 && name.base != NULL)
    rc = tb__tb_check_name(c, "model_id", name);
  lora.rank = (int)rank;
  lora.alpha = (float)alpha;
  lora.seed = (uint64_t)seed;
  const char *why = NULL;
  if (rc >= 0 && tb__lora_config_validate(&lora, &why) != 0)
    rc = tb__jctx_fail(c, "%s", why ? why : "invalid LoRA settings");
  tb__tbase_t *b = NULL;
  rc = rc < 0 ? rc : tb__tbase_field(c, tr, base, 1, &b);
  if (rc < 0)
    return rc;
  if (name.base != NULL && tb__tb_find_model(tr, tb__sreq(req)->user, name) != NULL) {
    tb__server_respond_error(req, 409, "model_id: %.*s exists", (int)name.len, name.base);
    return 0;
  }
  tb__top_t *op = take_op(call);
  if (tb__top_accept(req, op) != 0)
    return 0;
  /* A name of the Python server's form, unguessable like the future's id
   * it is drawn from; a base model name that is no valid model name
   * (NAME=HF_DIR may be anything) is left out. */
  char gen[200];
  tb_slice_t bn = { b->name, strlen(b->name) };
  tb__jctx_t quiet;
  tb__jctx_init(&quiet, NULL);
  if (name.base == NULL) {
    int ok = bn.len <= 64 && tb__tb_check_name(&quiet, "", bn) == 0;
    int n = snprintf(gen, sizeof(gen), "%s%slora_%.16s", ok ? b->name : "", ok ? "_" : "",
                     op->future->id + 4);
    name = (tb_slice_t){ gen, (size_t)n };
  }
  char fid[TB__FUTURE_ID_MAX];
  memcpy(fid, op->future->id, sizeof(fid));
  char *mid = tb__arena_strndup(&req->arena, name.base, name.len);
  char *id = tb__strndup(name.base, name.len);
  if (mid == NULL || id == NULL ||
      tb__model_register(tr, op, tb__sreq(req)->user, NULL, b, id, &lora) == NULL) {
    free(id);
    tb__server_respond_error(req, 503, "out of memory");
    tb__top_fail(op, TB_CATEGORY_SERVER, "out of memory");
    return 0;
  }
  tb__start_held(tr);
  tb__tb_answer_call(req, fid, mid, call->side->sync);
  return 0;
}

/* The decoder of the routes that take only {"model_id"}: the caller's
 * model into call->model, or c's error, or 0 after answering 404. */
int tb__route_tb_model(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb_slice_t id;
  int rc = tb__json_get_string(&call->c, call->doc, "model_id", TB_JSON_REQUIRED, &id);
  if (rc < 0)
    return rc;
  call->model = tb__tb_find_model(tb__training_of(req), tb__sreq(req)->user, id);
  if (call->model == NULL)
    tb__tb_unknown_model(req, id);
  return 0;
}

int tb__route_tb_remove_lora(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__tmodel_t *m = call->model;
  tb__top_t *op = take_op(call);
  if (tb__top_accept(req, op) != 0)
    return 0;
  char fid[TB__FUTURE_ID_MAX];
  memcpy(fid, op->future->id, sizeof(fid));
  char *mid = tb__arena_strndup(&req->arena, m->id, strlen(m->id));
  op->model = m;
  if (!m->ready) {
    /* Removed as soon as it exists. */
    m->unloading = 1;
    m->pending_unload = op;
  } else {
    tb__unload_now(m, op);
  }
  if (mid == NULL)
    tb__server_respond_error(req, 503, "out of memory");
  else
    tb__tb_answer_call(req, fid, mid, call->side->sync);
  return 0;
}

/* ------------------------------------------------------------ weights */

/* The checkpoint directory of the caller's model mid. */
static char *checkpoint_dir(tb__http_request_t *req, tb_slice_t mid, const char *kind,
                            tb_slice_t name) {
  static const char hex[] = "0123456789abcdef";
  const tb__user_t *u = tb__sreq(req)->user;
  char *uh = tb__arena_alloc(&req->arena, u->name_len * 2 + 1);
  if (uh == NULL)
    return NULL;
  for (size_t i = 0; i < u->name_len; i++) {
    uh[2 * i] = hex[(unsigned char)u->name[i] >> 4];
    uh[2 * i + 1] = hex[(unsigned char)u->name[i] & 15];
  }
  uh[2 * u->name_len] = '\0';
  return tb__asprintf("%s/tb-%s-%.*s/%s/%.*s", tb__server_from_req(req)->opts.data_dir, uh,
                      (int)mid.len, mid.base, kind, (int)name.len, name.base);
}

/* {"model_id", "path"?, "overwrite"?}: save_weights (kind "weights") or
 * save_weights_for_sampler ("sampler_weights"). */
int tb__route_tb_save(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  tb__op_type_t type = call->op->type;
  const json_t *doc = call->doc;
  tb__jctx_t *c = &call->c;
  tb_slice_t id, name = { NULL, 0 };
  int rc = tb__json_get_string(c, doc, "model_id", TB_JSON_REQUIRED, &id);
  rc = rc < 0 ? rc : tb__json_get_string(c, doc, "path", TB_JSON_OPTIONAL, &name);
  char gen[48];
  if (rc >= 0 && name.base == NULL) {
    int n = snprintf(gen, sizeof(gen), "%s-%llu", type == TB__OP_SAVE ? "weights" : "sampler",
                     (unsigned long long)(uv_hrtime() / 1000));
    name = (tb_slice_t){ gen, (size_t)n };
  }
  rc = rc < 0 ? rc : tb__tb_check_name(c, "path", name);
  int overwrite = 0;
  rc = rc < 0 ? rc : get_bool(c, doc, "overwrite", &overwrite);
  if (rc >= 0 && tr->srv->opts.data_dir == NULL)
    rc = tb__jctx_fail_at(c, "path", "this server keeps no checkpoints (no data_dir)");
  if (rc < 0)
    return rc;
  tb__tmodel_t *m = tb__tb_find_model(tr, tb__sreq(req)->user, id);
  if (m == NULL) {
    tb__tb_unknown_model(req, id);
    return 0;
  }
  tb__top_t *op = call->op;
  const char *kind = type == TB__OP_SAVE ? "weights" : "sampler_weights";
  op->model = m;
  op->overwrite = overwrite;
  op->dir = checkpoint_dir(req, id, kind, name);
  op->tinker_path = tb__asprintf("tinkerbell://%s/%s/%.*s", m->id, kind, (int)name.len,
                                 name.base);
  if (op->dir == NULL || op->tinker_path == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return 0;
  }
  tb__tb_submit(req, take_op(call), id, 0);
  return 0;
}

/* {"model_id", "path", "optimizer"?}: path is a name of the model's own
 * weights or tinkerbell://<model_id>/<weights|sampler_weights>/<name> of
 * any of the caller's models.  A model_id the caller does not have is
 * created with the checkpoint's LoRA shape. */
int tb__route_tb_load(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  const json_t *doc = call->doc;
  tb__jctx_t *c = &call->c;
  tb_slice_t id = { 0 }, path = { 0 };  /* read below only when found */
  tb__tmodel_t *m = NULL;
  int optimizer = 0;
  int rc = get_model(c, req, doc, &id, &m);
  rc = rc < 0 ? rc : tb__json_get_string(c, doc, "path", TB_JSON_REQUIRED, &path);
  rc = rc < 0 ? rc : get_bool(c, doc, "optimizer", &optimizer);
  static const char scheme[] = "tinkerbell://";
  const size_t sl = sizeof(scheme) - 1;
  tb_slice_t src = id, kind = TB_SLICE_LIT("weights"), name = path;
  if (rc >= 0 && path.len > sl && memcmp(path.base, scheme, sl) == 0) {
    const char *p = path.base + sl, *end = path.base + path.len;
    const char *s1 = memchr(p, '/', (size_t)(end - p));
    const char *s2 = s1 ? memchr(s1 + 1, '/', (size_t)(end - s1 - 1)) : NULL;
    src = (tb_slice_t){ p, s1 ? (size_t)(s1 - p) : 0 };
    kind = (tb_slice_t){ s1 ? s1 + 1 : p, s2 ? (size_t)(s2 - s1 - 1) : 0 };
    name = (tb_slice_t){ s2 ? s2 + 1 : p, s2 ? (size_t)(end - s2 - 1) : 0 };
    if (s2 == NULL ||
        !(tb__slice_eq_str(kind, "weights") || tb__slice_eq_str(kind, "sampler_weights")))
      rc = tb__jctx_fail_at(c, "path", "expected a checkpoint name or "
                                        "tinkerbell://<model_id>/weights/<name>");
    rc = rc < 0 ? rc : tb__tb_check_name(c, "path", src);
  }
  rc = rc < 0 ? rc : tb__tb_check_name(c, "path", name);
  if (rc >= 0 && tr->srv->opts.data_dir == NULL)
    rc = tb__jctx_fail_at(c, "path", "this server keeps no checkpoints (no data_dir)");
  if (rc < 0)
    return rc;
  tb__top_t *op = call->op;
  char k[32];
  snprintf(k, sizeof(k), "%.*s", (int)kind.len, kind.base);
  op->optimizer = optimizer;
  op->dir = checkpoint_dir(req, src, k, name);
  op->tinker_path = tb__asprintf("tinkerbell://%.*s/%s/%.*s", (int)src.len, src.base, k,
                                 (int)name.len, name.base);
  if (op->dir == NULL || op->tinker_path == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return 0;
  }
  if (m != NULL) {
    op->model = m;
    tb__tb_submit(req, take_op(call), id, 0);
    return 0;
  }
  /* Created from the checkpoint: the load runs right after the create
   * and answers the call. */
  tb__top_t *cop = tb__top_new(req, TB__OP_CREATE);
  if (cop == NULL)
    return 0;
  take_op(call);
  if (tb__top_accept(req, op) != 0) {
    tb__top_free(cop);
    return 0;
  }
  cop->then = op;
  char fid[TB__FUTURE_ID_MAX];
  memcpy(fid, op->future->id, sizeof(fid));
  char *mid = tb__arena_strndup(&req->arena, id.base, id.len);
  ((tb__tbop_t *)op->encode_data)->created = 1;
  if (create_implicit(req, cop, id, NULL) != 0) {
    tb__top_fail(cop, TB_CATEGORY_SERVER, "out of memory");
    return 0;
  }
  tb__start_held(tr);
  if (mid == NULL)
    tb__server_respond_error(req, 503, "out of memory");
  else
    tb__tb_answer_call(req, fid, mid, 0);
  return 0;
}

/* ------------------------------------------------------------ direct */

/* Answers 200 with v (released), or 503 when it could not be made. */
static void respond(tb__http_request_t *req, json_t *v) {
  if (v == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  tb__server_respond_jsonv(req, 200, v);
  json_decref(v);
}

/* POST /get_info {"model_id"}: the caller's model, as the Python server's
 * shape with what it left out filled in. */
int tb__route_tb_get_info(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__tmodel_t *m = call->model;
  tb__wire_tb_model_t r = {
    .model_id = m->id,
    .base_model = m->base->name,
    .arch = tb__model_arch_type(m->base->cfg.arch),
    .vocab_size = m->base->cfg.vocab_size,
    .lora_rank = m->lora.rank,
    .lora_alpha = m->lora.alpha > 0 ? m->lora.alpha : TB_LORA_DEFAULT_ALPHA,
    .ready = m->ready,
  };
  respond(req, tb__wire_tb_model_to_json(&r));
  return 0;
}

/* GET /list_loss_functions: the losses forward_backward takes. */
void tb__route_tb_list_loss_functions(tb__http_request_t *req) {
  const char *names[TB_LOSS_DRO - TB_LOSS_CROSS_ENTROPY + 1];
  tb__wire_tb_loss_fns_t r = { names, 0 };
  for (int i = TB_LOSS_CROSS_ENTROPY; i <= TB_LOSS_DRO; i++)
    names[r.n_names++] = tb__loss_fn_name((tb__loss_fn_t)i);
  respond(req, tb__wire_tb_loss_fns_to_json(&r));
}

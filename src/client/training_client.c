/*
 * The TrainingClient (tinkerbell/training_client.h): seq_id order, turns,
 * chunking and the operations of one model.
 *
 * Each public call becomes a tc_op_t holding one or more requests
 * (tc_req_t, one per seq_id: the chunks of a forward_backward).  Their
 * bodies are encoded at the call, without the model id, which is added
 * when they are sent (the model may not exist yet).  Sequenced ops wait in
 * a FIFO; the head is started when no other op is being submitted, and
 * the turn passes on when its last request's POST has been answered (the
 * submitted hook of the operation layer, op.c).  Each request is then a
 * tb__client_op_t of its own whose future is polled concurrently with the
 * others; when all of an op's requests are done, its chunk results are
 * joined (chunk.c) and the op's own future completes.
 *
 * Non-goals: retries of a whole operation (the request layer retries each
 * POST) and any ordering of the unsequenced get_info and sampling-client
 * calls beyond waiting for the model to exist.
 */
#include "tinkerbell/training_client.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/chunk.h"
#include "client/clients.h"
#include "client/convert.h"
#include "core/json.h"
#include "wire/encode.h"

typedef enum {
  K_FORWARD,
  K_FORWARD_BACKWARD,
  K_CUSTOM,
  K_OPTIM,
  K_SAVE,
  K_SAVE_SAMPLER,
  K_SAVE_GET_SAMPLER,
  K_LOAD,
  K_UNLOAD,
  K_INFO,
  K_SAMPLING_CLIENT
} kind_t;

typedef struct tc_op_s tc_op_t;
typedef struct tb__training_client_s tc_t;

/* One request of an op: one seq_id on the wire. */
typedef struct tc_req_s {
  tc_op_t *op;
  size_t index;
  int64_t seq;                 /* -1: none */
  tb_buf_t proto;              /* the protobuf body without model_id, or */
  json_t *json;                /* the JSON body without model_id */
  size_t n_datums;
  tb_future_t *f;              /* the operation's future once started */
  int started;
  int submit_status;           /* 1 until the POST ends, then its status */
  int done;
} tc_req_t;

struct tc_op_s {
  tc_t *tc;
  kind_t kind;
  tb_future_t *future;         /* the caller's */
  tc_req_t *reqs;
  size_t n_reqs;
  size_t first;                /* the requests of the current phase: */
  size_t count;                /* [first, first + count) */
  size_t n_started, n_done;
  tb_forward_backward_output_t **parts;
  tb_error_t err;              /* the first failure */
  int cancelled;
  int queued;                  /* in tc->queue */
  int holds_turn;
  /* forward_backward_custom */
  tb_train_datum_t *datums;
  size_t n_datums;
  tb_custom_loss_fn fn;
  void *fn_data;
  /* sampling clients */
  tb_sampling_client_t *samp;
  char *model_path;
  tc_op_t *next;               /* in the queue or the model's wait list */
  tc_op_t *live_next, *live_prev;  /* every registered op, for close */
  tb__alarm_t alarm;           /* completes the op on a later turn */
};

struct tb__training_client_s {
  tb_training_client_t *pub;
  tb_service_client_t *svc;
  tb__rt_t *rt;
  char *model_id;
  char *base_model;
  int64_t model_seq;
  int64_t next_seq;            /* the next seq_id to reserve */
  int json;
  int state;                   /* 0 creating, 1 created, -1 creation failed */
  tb_error_t create_err;
  tb_future_t *create_f;       /* the caller's creation future */
  tb_future_t *session_f;      /* the session being obtained */
  tb_future_t *create_op_f;    /* the create request */
  int broken;                  /* a seq_id was lost: those after it cannot run */
  int64_t broken_seq;          /* the first lost seq_id (0: all, when closing) */
  tb_error_t broken_err;
  tc_op_t *queue, *queue_tail; /* sequenced ops not yet started */
  tc_op_t *submitting;         /* the op holding the turn */
  tc_op_t *waiting_model;      /* unsequenced ops waiting for the model */
  tc_op_t *live;               /* ops not yet completed */
  size_t n_live;
  int closing;
  tb__alarm_t close_alarm;
  /* creation */
  int create_via_load;
  int create_optimizer;
  char *create_path;
  tb_lora_params_t lora;
};

static void pump(tc_t *tc);
static void op_finish(tc_op_t *op);
static int start_phase(tc_op_t *op);

/* ------------------------------------------------------------ errors */

static void set_broken(tc_t *tc, int64_t seq, const tb_error_t *why) {
  if (tc->broken)
    return;
  tc->broken = 1;
  tc->broken_seq = seq;
  tb_error_set(&tc->broken_err, TB_EBUSY, TB_CATEGORY_USER,
               "the training client stopped: seq_id %lld was not accepted by the server (%s), "
               "so no later operation of this model could run; create a new training client",
               (long long)seq, why ? tb_error_message(why) : "cancelled");
}

/* Whether seq (of an op not yet sent) comes after a lost one. */
static int stopped_at(const tc_t *tc, int64_t seq) {
  return tc->broken && seq >= tc->broken_seq;
}

static void keep_first_error(tc_op_t *op, const tb_error_t *e) {
  if (op->err.code == 0 && tb_error_copy(&op->err, e) != 0)
    tb_error_set(&op->err, e->code ? e->code : TB_EIO, e->category, "%s", tb_strerror(e->code));
}

/* ------------------------------------------------------------ ops */

static tc_op_t *op_new(tc_t *tc, kind_t kind, size_t n_reqs) {
  tc_op_t *op = calloc(1, sizeof(*op));
  if (op == NULL)
    return NULL;
  op->tc = tc;
  op->kind = kind;
  op->reqs = calloc(n_reqs + 1, sizeof(*op->reqs));
  op->future = tb__client_future_new(tc->rt->loop);
  if (op->reqs == NULL || op->future == NULL) {
    free(op->reqs);
    free(op->future);
    free(op);
    return NULL;
  }
  op->n_reqs = n_reqs;
  for (size_t i = 0; i < n_reqs; i++) {
    op->reqs[i].op = op;
    op->reqs[i].index = i;
    op->reqs[i].seq = -1;
    op->reqs[i].submit_status = 1;
  }
  tb__alarm_init(&op->alarm, NULL, op);
  return op;
}

static void op_free(tc_op_t *op) {
  for (size_t i = 0; i < op->n_reqs; i++) {
    tb__buf_free(&op->reqs[i].proto);
    json_decref(op->reqs[i].json);
    if (op->reqs[i].f != NULL)
      tb_future_free(op->reqs[i].f);
  }
  if (op->parts != NULL)
    for (size_t i = 0; i < op->n_reqs; i++)
      tb_forward_backward_output_free(op->parts[i]);
  free(op->parts);
  free(op->reqs);
  for (size_t i = 0; op->datums != NULL && i < op->n_datums; i++)
    tb_train_datum_clear(&op->datums[i]);
  free(op->datums);
  free(op->model_path);
  tb_error_clear(&op->err);
  free(op);
}

/* A future that was never started (op_new's) is discarded with the op. */
static void op_discard(tc_op_t *op) {
  free(op->future);
  op->future = NULL;
  op_free(op);
}

static void check_closed(tc_t *tc);

/* Completes the caller's future and releases the op. */
static void op_complete(tc_op_t *op, const tb_result_type_t *type, void *result) {
  tc_t *tc = op->tc;
  tb_future_t *f = op->future;
  tb_error_t e = { 0 };
  int failed = op->err.code != 0 || op->cancelled;
  if (op->cancelled) {
    tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "cancelled");
    if (op->err.request_id)
      tb_error_set_request_id(&e, op->err.request_id);
  } else if (failed) {
    e = op->err;
    memset(&op->err, 0, sizeof(op->err));
  }
  /* A sampling client waiting for this op's session learns it failed. */
  if (op->samp != NULL && failed)
    tb__sampling_client_ready(op->samp, NULL, &e);
  if (op->live_prev != NULL)
    op->live_prev->live_next = op->live_next;
  else if (tc->live == op)
    tc->live = op->live_next;
  if (op->live_next != NULL)
    op->live_next->live_prev = op->live_prev;
  op_free(op);
  tc->n_live--;
  if (failed) {
    if (type != NULL && type->free != NULL)
      type->free(result);
    tb__client_future_fail(f, &e);
  } else {
    tb__client_future_resolve(f, type, result);
  }
  check_closed(tc);
}

static void on_finish_alarm(tb__alarm_t *a) {
  op_finish(a->data);
}

static void on_op_alarm(tb__alarm_t *a) {
  op_complete(a->data, NULL, NULL);
}

/* Fails an op that never started, on a later turn. */
static void op_fail_later(tc_op_t *op, const tb_error_t *e) {
  keep_first_error(op, e);
  op->alarm.cb = on_op_alarm;
  if (tb__alarm_start(op->tc->rt, &op->alarm, 0) != 0)
    op_complete(op, NULL, NULL);  /* out of memory: at once rather than never */
}

static void op_cancel(tb_future_t *f) {
  tc_op_t *op = f->driver_;
  tc_t *tc = op->tc;
  if (op->cancelled)
    return;
  op->cancelled = 1;
  if (op->queued) {
    /* Never sent: its seq_ids are lost, and with them the order. */
    tc_op_t **p = &tc->queue;
    while (*p != op)
      p = &(*p)->next;
    *p = op->next;
    if (tc->queue_tail == op) {
      tc->queue_tail = NULL;
      for (tc_op_t *q = tc->queue; q != NULL; q = q->next)
        tc->queue_tail = q;
    }
    op->queued = 0;
    if (op->n_reqs > 0)
      set_broken(tc, op->reqs[0].seq, NULL);
    op_fail_later(op, &op->err);
    pump(tc);
    return;
  }
  if (tb__alarm_armed(&op->alarm))
    return;  /* already completing */
  tc_op_t **w = &tc->waiting_model;
  while (*w != NULL && *w != op)
    w = &(*w)->next;
  if (*w == op) {
    *w = op->next;
    op_fail_later(op, &op->err);
    return;
  }
  for (size_t i = 0; i < op->n_reqs; i++)
    if (op->reqs[i].f != NULL && !op->reqs[i].done)
      tb_future_cancel(op->reqs[i].f);
  /* Nothing in flight (between phases): finish on a later turn, never
   * inside tb_future_cancel. */
  if (op->n_done == op->n_started) {
    op->alarm.cb = on_finish_alarm;
    tb__alarm_start(tc->rt, &op->alarm, 0);
  }
}

static int op_register(tc_op_t *op, tb_future_t **out) {
  tb__client_future_set_driver(op->future, op_cancel, op);
  op->tc->n_live++;
  op->live_next = op->tc->live;
  if (op->tc->live != NULL)
    op->tc->live->live_prev = op;
  op->tc->live = op;
  *out = op->future;
  return 0;
}

/* ------------------------------------------------------------ requests */

/* The final body of a request: the model id put in front (protobuf) or
 * into the object (JSON). */
static int req_body(tc_req_t *r, tb_buf_t *out) {
  tc_t *tc = r->op->tc;
  if (r->json != NULL) {
    if (json_object_set_new(r->json, "model_id", json_string(tc->model_id)) != 0)
      return TB_ENOMEM;
    size_t len = 0;
    char *text = tb__json_dump(r->json, &len);
    if (text == NULL)
      return TB_ENOMEM;
    int rc = tb__buf_append(out, text, len);
    free(text);
    return rc;
  }
  int rc = tb__wire_fwdbwd_model_id_to_proto(tc->model_id, out);
  return rc ? rc : tb__buf_append(out, r->proto.base, r->proto.len);
}

static int decode_fwdbwd(tb__client_op_t *cop, const char *body, size_t len, int proto,
                         const tb_result_type_t **type, void **result, tb_error_t *err) {
  tb_forward_backward_output_t *o = NULL;
  int rc = tb__decode_fwdbwd_output(body, len, proto, &o, err);
  if (rc == 0) {
    *type = &tb_result_forward_backward_output;
    *result = o;
  }
  return rc;
}

static int parse_json(const char *body, size_t len, json_t **doc, tb_error_t *err) {
  int rc = tb__json_parse((tb_slice_t){ body, len }, doc, err);
  if (rc != 0)
    err->category = TB_CATEGORY_SERVER;
  else if (!json_is_object(*doc)) {
    json_decref(*doc);
    rc = tb_error_set(err, TB_EPROTO, TB_CATEGORY_SERVER, "the result is not a JSON object");
  }
  return rc;
}

static int decode_optim(tb__client_op_t *cop, const char *body, size_t len, int proto,
                        const tb_result_type_t **type, void **result, tb_error_t *err) {
  json_t *doc;
  int rc = parse_json(body, len, &doc, err);
  if (rc != 0)
    return rc;
  tb_optim_step_output_t *o = calloc(1, sizeof(*o));
  rc = o ? tb__metrics_from_json(json_object_get(doc, "metrics"), &o->metrics, &o->n_metrics)
         : TB_ENOMEM;
  json_decref(doc);
  if (rc != 0) {
    tb_optim_step_output_free(o);
    return tb_error_set(err, rc, TB_CATEGORY_NONE, "out of memory");
  }
  *type = &tb_result_optim_step_output;
  *result = o;
  return 0;
}

/* A result naming a string field: "path", "model_id",
 * "sampling_session_id" (given as decode_data of the request's op). */
static int decode_string_field(const char *body, size_t len, const char *field, int required,
                               const char *fallback, const tb_result_type_t **type,
                               void **result, tb_error_t *err) {
  json_t *doc;
  int rc = parse_json(body, len, &doc, err);
  if (rc != 0)
    return rc;
  const char *v = json_string_value(json_object_get(doc, field));
  if (v == NULL && required) {
    json_decref(doc);
    return tb_error_set(err, TB_EFIELD, TB_CATEGORY_SERVER, "the result has no \"%s\"",
                        field);
  }
  char *copy = v ? strdup(v) : fallback ? strdup(fallback) : NULL;
  json_decref(doc);
  if (copy == NULL && (v != NULL || fallback != NULL))
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  *type = copy ? &tb_result_string : NULL;
  *result = copy;
  return 0;
}

static int decode_path(tb__client_op_t *cop, const char *body, size_t len, int proto,
                       const tb_result_type_t **type, void **result, tb_error_t *err) {
  tc_req_t *r = cop->decode_data;
  int required = r->op->kind != K_LOAD;
  return decode_string_field(body, len, "path", required, r->op->model_path, type, result, err);
}

static int decode_sampling_session(tb__client_op_t *cop, const char *body, size_t len,
                                   int proto, const tb_result_type_t **type, void **result,
                                   tb_error_t *err) {
  return decode_string_field(body, len, "sampling_session_id", 1, NULL, type, result, err);
}

static int decode_info(tb__client_op_t *cop, const char *body, size_t len, int proto,
                       const tb_result_type_t **type, void **result, tb_error_t *err) {
  json_t *doc;
  int rc = parse_json(body, len, &doc, err);
  if (rc != 0)
    return rc;
  json_t *md = json_object_get(doc, "model_data");
  const char *mid = json_string_value(json_object_get(doc, "model_id"));
  if (mid == NULL || !json_is_object(md)) {
    json_decref(doc);
    return tb_error_set(err, TB_EFIELD, TB_CATEGORY_SERVER,
                        "get_info: the answer lacks model_id or model_data");
  }
  tb_model_info_t *info = calloc(1, sizeof(*info));
  const char *name = json_string_value(json_object_get(md, "model_name"));
  if (name == NULL)
    name = json_string_value(json_object_get(doc, "model_name"));
  const char *arch = json_string_value(json_object_get(md, "arch"));
  const char *tok = json_string_value(json_object_get(md, "tokenizer_id"));
  int ok = info != NULL && (info->model_id = strdup(mid)) != NULL &&
           (name == NULL || (info->model_name = strdup(name)) != NULL) &&
           (arch == NULL || (info->arch = strdup(arch)) != NULL) &&
           (tok == NULL || (info->tokenizer_id = strndup(tok, strcspn(tok, ":"))) != NULL);
  if (info != NULL) {
    json_t *rank = json_object_get(doc, "lora_rank");
    info->is_lora = json_is_true(json_object_get(doc, "is_lora"));
    info->lora_rank = json_is_integer(rank) ? (int64_t)json_integer_value(rank) : -1;
  }
  json_decref(doc);
  if (!ok) {
    tb_model_info_free(info);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  }
  *type = &tb_result_model_info;
  *result = info;
  return 0;
}

static void on_req_done(tb_future_t *f, int status);

static void release_turn(tc_op_t *op) {
  if (!op->holds_turn)
    return;
  op->holds_turn = 0;
  op->tc->submitting = NULL;
  pump(op->tc);
}

/* The POST of request r ended.  The first request of a phase goes last,
 * once the others' POSTs were all answered; when it has been, the turn
 * passes on (the custom loss keeps it from its forward pass to its
 * backward pass). */
static void on_req_submitted(tb__client_op_t *cop, int status) {
  tc_req_t *r = cop->decode_data;
  tc_op_t *op = r->op;
  r->submit_status = status;
  if (status != 0 && r->seq >= 0)
    set_broken(op->tc, r->seq, &cop->call.err);
  if (!op->holds_turn)
    return;
  size_t first = op->first, end = op->first + op->count;
  tc_req_t *r0 = &op->reqs[first];
  if (r != r0) {
    int ok = 1;
    for (size_t i = first + 1; i < end; i++) {
      if (op->reqs[i].started && op->reqs[i].submit_status == 1)
        return;  /* another one is still being sent */
      ok = ok && op->reqs[i].started && op->reqs[i].submit_status == 0;
    }
    if (ok && !op->cancelled && !stopped_at(op->tc, r0->seq) && start_phase(op) == 0)
      return;
    /* The first request is not sent: its seq_id is lost. */
    set_broken(op->tc, r0->seq, op->err.code ? &op->err : NULL);
    release_turn(op);
    return;
  }
  int keep = op->kind == K_CUSTOM && first == 0 && status == 0 &&
             !stopped_at(op->tc, op->reqs[op->count].seq) &&
             !op->cancelled;
  if (!keep)
    release_turn(op);
}

/* Starts request i of op as an operation of the runtime. */
static int start_req(tc_op_t *op, size_t i) {
  tc_t *tc = op->tc;
  tc_req_t *r = &op->reqs[i];
  tb__client_op_opts_t o = { 0 };
  o.max_retries = -1;
  o.poll = 1;
  o.decode_data = r;
  o.submitted = on_req_submitted;
  switch (op->kind) {
    case K_FORWARD:
    case K_FORWARD_BACKWARD:
    case K_CUSTOM: {
      int fwd = op->kind == K_FORWARD || (op->kind == K_CUSTOM && i < op->n_reqs / 2);
      o.path = (r->json != NULL && fwd) ? "/api/v1/forward" : "/api/v1/forward_backward";
      o.content_type = r->json != NULL ? NULL : "application/x-protobuf";
      o.request_type = fwd ? "Forward" : "ForwardBackward";
      o.accept_proto = r->json == NULL;
      o.decode = decode_fwdbwd;
      break;
    }
    case K_OPTIM:
      o.path = "/api/v1/optim_step";
      o.request_type = "OptimStep";
      o.decode = decode_optim;
      break;
    case K_SAVE:
      o.path = "/api/v1/save_weights";
      o.request_type = "SaveWeights";
      o.decode = decode_path;
      o.max_retries = 0;  /* as the SDK: a resent save could clash with the first */
      break;
    case K_SAVE_SAMPLER:
      o.path = "/api/v1/save_weights_for_sampler";
      o.request_type = "SaveWeightsForSampler";
      o.decode = decode_path;
      o.max_retries = 0;
      break;
    case K_SAVE_GET_SAMPLER:
      o.path = "/api/v1/save_weights_for_sampler";
      o.request_type = "SaveWeightsForSampler";
      o.decode = decode_sampling_session;
      o.max_retries = 0;
      break;
    case K_LOAD:
      o.path = "/api/v1/load_weights";
      o.request_type = "LoadWeights";
      o.decode = decode_path;
      break;
    case K_UNLOAD:
      o.path = "/api/v1/unload_model";
      break;
    case K_INFO:
      o.path = "/api/v1/get_info";
      o.poll = 0;
      o.decode = decode_info;
      o.submitted = NULL;
      break;
    default:
      return TB_EINVAL;
  }
  tb_buf_t body = TB_BUF_INIT;
  int rc = req_body(r, &body);
  if (rc == 0) {
    o.body = body.base;
    o.body_len = body.len;
    rc = tb__client_op_start(tc->rt, &o, &r->f);
  }
  tb__buf_free(&body);
  if (rc != 0)
    return rc;
  r->started = 1;
  op->n_started++;
  r->f->data = r;
  tb_future_set_callback(r->f, on_req_done);
  return 0;
}

/* Starts the current phase: every request but the first, or the first
 * alone when it is the only one left. */
static int start_phase(tc_op_t *op) {
  size_t first = op->first, end = op->first + op->count;
  int others = 0;
  for (size_t i = first + 1; i < end; i++)
    if (!op->reqs[i].started)
      others = 1;
  tb_error_t e = { 0 };
  int rc = 0;
  if (others) {
    for (size_t i = first + 1; i < end && rc == 0; i++)
      rc = start_req(op, i);
  } else {
    rc = start_req(op, first);
  }
  if (rc != 0) {
    tb_error_set(&e, rc, rc == TB_ECLOSING ? TB_CATEGORY_CANCELLED : TB_CATEGORY_NONE,
                 "cannot send: %s", tb_strerror(rc));
    keep_first_error(op, &e);
    tb_error_clear(&e);
    for (size_t i = first; i < end; i++)
      if (!op->reqs[i].started && op->reqs[i].seq >= 0) {
        set_broken(op->tc, op->reqs[i].seq, &op->err);
        break;
      }
  }
  return rc;
}

/* ------------------------------------------------------------ turns */

static void start_sequenced(tc_op_t *op) {
  tc_t *tc = op->tc;
  op->holds_turn = 1;
  tc->submitting = op;
  if (start_phase(op) != 0) {
    release_turn(op);
    if (op->n_started == 0) {
      op_fail_later(op, &op->err);
      return;
    }
    /* Some chunks are on the wire: the op ends when they do. */
  }
}

/* Starts the next sequenced op when the turn is free; fails the ops of a
 * client that stopped or whose model was never made. */
static void pump(tc_t *tc) {
  while (tc->submitting == NULL && tc->queue != NULL && tc->state != 0) {
    tc_op_t *op = tc->queue;
    tc->queue = op->next;
    if (tc->queue == NULL)
      tc->queue_tail = NULL;
    op->next = NULL;
    op->queued = 0;
    if (tc->state < 0) {
      op_fail_later(op, &tc->create_err);
    } else if (op->n_reqs > 0 && op->reqs[0].seq >= 0 && stopped_at(tc, op->reqs[0].seq)) {
      op_fail_later(op, &tc->broken_err);
    } else {
      start_sequenced(op);
    }
  }
}

static void enqueue(tc_op_t *op) {
  tc_t *tc = op->tc;
  op->queued = 1;
  if (tc->queue_tail != NULL)
    tc->queue_tail->next = op;
  else
    tc->queue = op;
  tc->queue_tail = op;
  pump(tc);
}

/* Unsequenced ops run once the model exists. */
static void start_unsequenced(tc_op_t *op);

static void run_or_wait_model(tc_op_t *op) {
  tc_t *tc = op->tc;
  if (tc->state == 0) {
    op->next = tc->waiting_model;
    tc->waiting_model = op;
  } else if (tc->state < 0) {
    op_fail_later(op, &tc->create_err);
  } else {
    start_unsequenced(op);
  }
}

/* ------------------------------------------------------------ completion */

static void run_custom_loss(tc_op_t *op);

static void on_req_done(tb_future_t *f, int status) {
  tc_req_t *r = f->data;
  tc_op_t *op = r->op;
  r->done = 1;
  op->n_done++;
  if (status != 0) {
    keep_first_error(op, &f->error);
  } else if (op->parts != NULL) {
    op->parts[r->index] = tb_future_take(f, &tb_result_forward_backward_output);
  }
  if (op->n_done < op->n_started)
    return;
  /* A phase whose first request still waits for the others' POSTs is not
   * over. */
  size_t first = op->first;
  if (op->holds_turn && !op->reqs[first].started && !op->cancelled && op->err.code == 0 &&
      !stopped_at(op->tc, op->reqs[first].seq))
    return;
  op_finish(op);
}

static void finish_sampling_client(tc_op_t *op, char *session_id);

/* Every started request is done: complete the op (or start its next
 * phase). */
static void op_finish(tc_op_t *op) {
  tc_t *tc = op->tc;
  int failed = op->err.code != 0 || op->cancelled;
  if (op->holds_turn) {
    tc_req_t *r0 = &op->reqs[op->first];
    int keep = op->kind == K_CUSTOM && op->first == 0 && !failed && r0->submit_status == 0;
    if (!keep) {
      if (!r0->started && r0->seq >= 0)
        set_broken(tc, r0->seq, failed && op->err.code ? &op->err : NULL);
      else if (op->kind == K_CUSTOM && op->first == 0)
        set_broken(tc, op->reqs[op->count].seq, op->err.code ? &op->err : NULL);
      release_turn(op);
    }
  }
  if (op->err.code != 0 || op->cancelled) {
    op_complete(op, NULL, NULL);
    return;
  }
  switch (op->kind) {
    case K_FORWARD:
    case K_FORWARD_BACKWARD:
    case K_CUSTOM: {
      size_t first = op->first;
      size_t *counts = calloc(op->count + 1, sizeof(size_t));
      tb_forward_backward_output_t *o = NULL;
      tb_error_t e = { 0 };
      int rc = counts ? 0 : TB_ENOMEM;
      for (size_t i = 0; rc == 0 && i < op->count; i++)
        counts[i] = op->reqs[first + i].n_datums;
      if (rc == 0)
        rc = tb__fwdbwd_combine(op->parts + first, counts, op->count, &o, &e);
      else
        tb_error_set(&e, rc, TB_CATEGORY_NONE, "out of memory");
      free(counts);
      if (rc != 0) {
        keep_first_error(op, &e);
        tb_error_clear(&e);
        if (op->kind == K_CUSTOM && first == 0)
          set_broken(op->tc, op->reqs[op->count].seq, &op->err);
        op_complete(op, NULL, NULL);
        return;
      }
      if (op->kind == K_CUSTOM && first == 0) {
        op->parts[0] = o;  /* the forward pass, for the loss function */
        run_custom_loss(op);
        return;
      }
      if (op->kind == K_CUSTOM) {
        /* the loss function's numbers, kept in parts[0] by run_custom_loss */
        tb_forward_backward_output_t *fwd = op->parts[0];
        for (size_t i = 0; i < fwd->n_metrics; i++) {
          int replaced = 0;
          for (size_t j = 0; j < o->n_metrics && !replaced; j++)
            if (strcmp(o->metrics[j].name, fwd->metrics[i].name) == 0) {
              o->metrics[j].value = fwd->metrics[i].value;
              replaced = 1;
            }
          if (!replaced) {
            tb_metric_t *m = realloc(o->metrics, (o->n_metrics + 1) * sizeof(*m));
            if (m == NULL)
              break;
            o->metrics = m;
            m[o->n_metrics].name = fwd->metrics[i].name;
            m[o->n_metrics].value = fwd->metrics[i].value;
            fwd->metrics[i].name = NULL;
            o->n_metrics++;
          }
        }
      }
      op_complete(op, &tb_result_forward_backward_output, o);
      return;
    }
    case K_SAVE_GET_SAMPLER: {
      char *sid = tb_future_take(op->reqs[0].f, &tb_result_string);
      finish_sampling_client(op, sid);
      return;
    }
    default: {
      /* The single request's result is the op's. */
      tb_future_t *f = op->reqs[0].f;
      const tb_result_type_t *type = f->result_type;
      void *result = tb_future_take(f, type);
      op_complete(op, type, result);
      return;
    }
  }
}

/* ------------------------------------------------------------ custom loss */

int tb_custom_loss_add_metric(tb_custom_loss_t *ctx, const char *name, double value) {
  if (ctx == NULL || name == NULL)
    return TB_EINVAL;
  tb_metric_t *m = realloc(ctx->metrics_, (ctx->n_metrics_ + 1) * sizeof(*m));
  if (m == NULL)
    return TB_ENOMEM;
  ctx->metrics_ = m;
  if ((m[ctx->n_metrics_].name = strdup(name)) == NULL)
    return TB_ENOMEM;
  m[ctx->n_metrics_].value = value;
  ctx->n_metrics_++;
  return 0;
}

int tb_custom_loss_fail(tb_custom_loss_t *ctx, int code, const char *fmt, ...) {
  if (ctx == NULL)
    return code;
  va_list ap;
  va_start(ap, fmt);
  free(ctx->message_);
  ctx->message_ = tb__vasprintf(fmt, ap);
  va_end(ap);
  return code;
}

/* Encodes the requests [first, first + count) of op from datums, with
 * seq_ids from seq0; bounds split the datums. */
static int encode_chunks(tc_op_t *op, size_t first, const tb_train_datum_t *data,
                         const size_t *bounds, size_t count, int64_t seq0,
                         const char *loss_fn, const tb_loss_fn_config_entry_t *config,
                         size_t n_config, int forward_only);

static void run_custom_loss(tc_op_t *op) {
  tc_t *tc = op->tc;
  size_t n = op->n_datums;
  tb_forward_backward_output_t *fwd = op->parts[0];
  const float **lps = calloc(n + 1, sizeof(*lps));
  size_t *nlp = calloc(n + 1, sizeof(*nlp));
  float **grads = calloc(n + 1, sizeof(*grads));
  tb_custom_loss_t ctx = { 0 };
  tb_error_t e = { 0 };
  int rc = lps && nlp && grads ? 0 : TB_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const tb_tensor_data_t *t = tb_forward_backward_output_tensor(fwd, i, "logprobs");
    const tb_tensor_data_t *tt = tb_train_datum_input(&op->datums[i], "target_tokens");
    if (t == NULL || t->dtype != TB_TENSOR_FLOAT32 || tt == NULL || t->numel != tt->numel) {
      rc = tb_error_set(&e, TB_EPROTO, TB_CATEGORY_SERVER,
                        "forward_backward_custom: the forward pass gave no logprobs of "
                        "datum %zu's %zu target tokens", i, tt ? tt->numel : 0);
      break;
    }
    lps[i] = t->f32;
    nlp[i] = t->numel;
    if ((grads[i] = calloc(t->numel + 1, sizeof(float))) == NULL)
      rc = TB_ENOMEM;
  }
  if (rc == 0) {
    ctx.data = op->fn_data;
    ctx.datums = op->datums;
    ctx.n = n;
    ctx.logprobs = lps;
    ctx.n_logprobs = nlp;
    ctx.grads = grads;
    tb__loop_frame_t frame;
    tb__loop_enter(&frame, tc->rt->loop);
    int urc = op->fn(&ctx);
    tb__loop_leave(&frame);
    if (urc != 0) {
      rc = tb_error_set(&e, urc < 0 ? urc : TB_EINVAL, TB_CATEGORY_USER,
                        "forward_backward_custom: the loss function failed: %s",
                        ctx.message_ ? ctx.message_ : tb_strerror(urc));
    } else if (!isfinite(ctx.loss)) {
      rc = tb_error_set(&e, TB_EINVAL, TB_CATEGORY_USER,
                        "forward_backward_custom: the loss is not a finite number");
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
      for (size_t j = 0; rc == 0 && j < nlp[i]; j++)
        if (!isfinite(grads[i][j]))
          rc = tb_error_set(&e, TB_EINVAL, TB_CATEGORY_USER,
                            "forward_backward_custom: gradient %zu of datum %zu is not a "
                            "finite number", j, i);
  }
  /* The backward pass: cross_entropy weighted by -dLoss/dlogprob. */
  for (size_t i = 0; rc == 0 && i < n; i++) {
    for (size_t j = 0; j < nlp[i]; j++)
      grads[i][j] = -grads[i][j];
    rc = tb_train_datum_set_f32(&op->datums[i], "weights", grads[i], nlp[i]);
  }
  size_t c = op->n_reqs / 2;
  size_t *bounds = rc == 0 ? calloc(c + 1, sizeof(size_t)) : NULL;
  if (rc == 0 && bounds == NULL)
    rc = TB_ENOMEM;
  for (size_t k = 0; rc == 0 && k < c; k++)
    bounds[k + 1] = bounds[k] + op->reqs[k].n_datums;
  if (rc == 0)
    rc = encode_chunks(op, c, op->datums, bounds, c, op->reqs[c].seq, "cross_entropy", NULL, 0,
                       0);
  free(bounds);
  /* The loss and the function's metrics ride in the forward output until
   * the backward's combine (op_finish). */
  if (rc == 0) {
    for (size_t i = 0; i < fwd->n_metrics; i++)
      free(fwd->metrics[i].name);
    free(fwd->metrics);
    fwd->metrics = ctx.metrics_;
    fwd->n_metrics = ctx.n_metrics_;
    ctx.metrics_ = NULL;
    ctx.n_metrics_ = 0;
    tb_metric_t *m = realloc(fwd->metrics, (fwd->n_metrics + 1) * sizeof(*m));
    if (m == NULL || (m[fwd->n_metrics].name = strdup("loss:sum")) == NULL) {
      if (m != NULL)
        fwd->metrics = m;
      rc = TB_ENOMEM;
    } else {
      fwd->metrics = m;
      m[fwd->n_metrics].value = ctx.loss;
      fwd->n_metrics++;
    }
  }
  for (size_t i = 0; grads != NULL && i < n; i++)
    free(grads[i]);
  free(grads);
  free(lps);
  free(nlp);
  for (size_t i = 0; i < ctx.n_metrics_; i++)
    free(ctx.metrics_[i].name);
  free(ctx.metrics_);
  free(ctx.message_);
  if (rc != 0) {
    if (e.code == 0)
      tb_error_set(&e, rc, TB_CATEGORY_NONE, "forward_backward_custom: %s", tb_strerror(rc));
    keep_first_error(op, &e);
    tb_error_clear(&e);
    set_broken(tc, op->reqs[c].seq, &op->err);
    release_turn(op);
    op_complete(op, NULL, NULL);
    return;
  }
  /* Phase two holds the turn it kept since phase one. */
  op->first = c;
  op->count = c;
  if (op->cancelled || stopped_at(tc, op->reqs[c].seq)) {
    if (!op->cancelled)
      keep_first_error(op, &tc->broken_err);
    op_finish(op);
    return;
  }
  if (start_phase(op) != 0 && op->n_started == op->n_done)
    op_finish(op);
}

/* ------------------------------------------------------------ encoding */

static int encode_chunks(tc_op_t *op, size_t first, const tb_train_datum_t *data,
                         const size_t *bounds, size_t count, int64_t seq0,
                         const char *loss_fn, const tb_loss_fn_config_entry_t *config,
                         size_t n_config, int forward_only) {
  tc_t *tc = op->tc;
  tb_arena_t a;
  tb__arena_init(&a, 0);
  int rc = 0;
  tb_wire_config_entry_t *cfg = tb__arena_calloc(&a, n_config + 1, sizeof(*cfg));
  if (cfg == NULL)
    rc = TB_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n_config; i++) {
    cfg[i].name = config[i].name;
    cfg[i].value = config[i].value;
  }
  for (size_t k = 0; rc == 0 && k < count; k++) {
    tc_req_t *r = &op->reqs[first + k];
    tb_wire_fwdbwd_t w = { 0 };
    size_t lo = bounds[k], hi = bounds[k + 1];
    rc = tb__datums_to_wire(&a, data + lo, hi - lo, &w.data);
    if (rc != 0)
      break;
    w.n_data = hi - lo;
    w.loss_fn = loss_fn;
    w.config = cfg;
    w.n_config = n_config;
    w.forward_only = forward_only;
    w.seq_id = seq0 + (int64_t)k;
    r->seq = w.seq_id;
    r->n_datums = hi - lo;
    if (tc->json) {
      r->json = tb__wire_fwdbwd_request_to_json(
          &w, forward_only ? "forward_input" : "forward_backward_input");
      if (r->json == NULL)
        rc = TB_ENOMEM;
    } else {
      rc = tb__wire_fwdbwd_request_to_proto(&w, &r->proto);
    }
    tb__arena_reset(&a);
  }
  tb__arena_free(&a);
  return rc;
}

static int check_data(const tb_train_datum_t *data, size_t n) {
  if (data == NULL || n == 0)
    return TB_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (tb_model_input_length(&data[i].model_input) == 0)
      return TB_EINVAL;
    for (size_t j = 0; j < data[i].n_loss_fn_inputs; j++) {
      const tb_tensor_data_t *t = &data[i].loss_fn_inputs[j].tensor;
      if (data[i].loss_fn_inputs[j].name == NULL ||
          (t->dtype != TB_TENSOR_FLOAT32 && t->dtype != TB_TENSOR_INT64) ||
          (t->numel > 0 && (t->dtype == TB_TENSOR_FLOAT32 ? (void *)t->f32 : (void *)t->i64) ==
                               NULL))
        return TB_EINVAL;
    }
  }
  return 0;
}

static tc_t *usable(tb_training_client_t *tc) {
  if (tc == NULL || tc->impl_ == NULL)
    return NULL;
  return tc->impl_;
}

/* forward, forward_backward and the first half of the custom loss. */
static int fwd_common(tb_training_client_t *ptc, kind_t kind, const tb_train_datum_t *data,
                      size_t n, const char *loss_fn, const tb_loss_fn_config_entry_t *config,
                      size_t n_config, tb_custom_loss_fn fn, void *fn_data, tb_future_t **out) {
  tc_t *tc = usable(ptc);
  if (tc == NULL || out == NULL || loss_fn == NULL || loss_fn[0] == '\0' ||
      (config == NULL && n_config > 0))
    return TB_EINVAL;
  if (tc->closing)
    return TB_ECLOSING;
  int rc = check_data(data, n);
  for (size_t i = 0; rc == 0 && i < n_config; i++)
    if (config[i].name == NULL || !isfinite(config[i].value))
      rc = TB_EINVAL;
  if (rc != 0)
    return rc;
  tb_train_datum_t *copies = NULL;
  if (kind == K_CUSTOM) {
    /* Only target_tokens and weights; a datum without weights gets zeros
     * for the forward pass. */
    copies = calloc(n, sizeof(*copies));
    if (copies == NULL)
      return TB_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
      const tb_tensor_data_t *tt = tb_train_datum_input(&data[i], "target_tokens");
      for (size_t j = 0; j < data[i].n_loss_fn_inputs; j++) {
        const char *nm = data[i].loss_fn_inputs[j].name;
        if (strcmp(nm, "target_tokens") != 0 && strcmp(nm, "weights") != 0)
          rc = TB_EINVAL;
      }
      if (tt == NULL || tt->dtype != TB_TENSOR_INT64)
        rc = TB_EINVAL;
      rc = rc ? rc : tb_train_datum_copy(&copies[i], &data[i]);
      if (rc == 0 && tb_train_datum_input(&copies[i], "weights") == NULL) {
        float *z = calloc(tt->numel + 1, sizeof(float));
        rc = z ? tb_train_datum_set_f32(&copies[i], "weights", z, tt->numel) : TB_ENOMEM;
        free(z);
      }
    }
    data = copies;
  }
  size_t *bounds = NULL, nc = 0;
  if (rc == 0)
    rc = tb__chunk_split(data, n, TB_CHUNK_MAX_LEN, TB_CHUNK_MAX_BYTES, &bounds, &nc);
  size_t n_reqs = kind == K_CUSTOM ? 2 * nc : nc;
  tc_op_t *op = rc == 0 ? op_new(tc, kind, n_reqs) : NULL;
  if (rc == 0 && op == NULL)
    rc = TB_ENOMEM;
  if (rc == 0 && (op->parts = calloc(n_reqs + 1, sizeof(*op->parts))) == NULL)
    rc = TB_ENOMEM;
  if (rc == 0)
    rc = encode_chunks(op, 0, data, bounds, nc, tc->next_seq,
                       kind == K_CUSTOM ? "cross_entropy" : loss_fn,
                       kind == K_CUSTOM ? NULL : config, kind == K_CUSTOM ? 0 : n_config,
                       kind != K_FORWARD_BACKWARD);
  free(bounds);
  if (rc != 0) {
    if (op != NULL)
      op_discard(op);
    for (size_t i = 0; copies != NULL && i < n; i++)
      tb_train_datum_clear(&copies[i]);
    free(copies);
    return rc;
  }
  if (kind == K_CUSTOM) {
    op->datums = copies;
    op->n_datums = n;
    op->fn = fn;
    op->fn_data = fn_data;
    for (size_t k = 0; k < nc; k++) {
      op->reqs[nc + k].seq = tc->next_seq + (int64_t)(nc + k);
      op->reqs[nc + k].n_datums = op->reqs[k].n_datums;
    }
  }
  op->first = 0;
  op->count = nc;
  tc->next_seq += (int64_t)n_reqs;
  op_register(op, out);
  enqueue(op);
  return 0;
}

int tb_training_client_forward(tb_training_client_t *tc, const tb_train_datum_t *data, size_t n,
                               const char *loss_fn, const tb_loss_fn_config_entry_t *config,
                               size_t n_config, tb_future_t **out) {
  return fwd_common(tc, K_FORWARD, data, n, loss_fn, config, n_config, NULL, NULL, out);
}

int tb_training_client_forward_backward(tb_training_client_t *tc, const tb_train_datum_t *data,
                                        size_t n, const char *loss_fn,
                                        const tb_loss_fn_config_entry_t *config,
                                        size_t n_config, tb_future_t **out) {
  return fwd_common(tc, K_FORWARD_BACKWARD, data, n, loss_fn, config, n_config, NULL, NULL,
                    out);
}

int tb_training_client_forward_backward_custom(tb_training_client_t *tc,
                                               const tb_train_datum_t *data, size_t n,
                                               tb_custom_loss_fn fn, void *fn_data,
                                               tb_future_t **out) {
  if (fn == NULL)
    return TB_EINVAL;
  return fwd_common(tc, K_CUSTOM, data, n, "cross_entropy", NULL, 0, fn, fn_data, out);
}

/* An op of one JSON request; body is taken over. */
static int json_op(tb_training_client_t *ptc, kind_t kind, json_t *body, int sequenced,
                   tc_op_t **opp, tb_future_t **out) {
  tc_t *tc = usable(ptc);
  if (tc == NULL || out == NULL) {
    json_decref(body);
    return TB_EINVAL;
  }
  if (tc->closing) {
    json_decref(body);
    return TB_ECLOSING;
  }
  tc_op_t *op = body ? op_new(tc, kind, 1) : NULL;
  if (op == NULL) {
    json_decref(body);
    return TB_ENOMEM;
  }
  op->reqs[0].json = body;
  op->count = 1;
  if (sequenced) {
    op->reqs[0].seq = tc->next_seq;
    if (json_object_set_new(body, "seq_id", json_integer((json_int_t)tc->next_seq)) != 0) {
      op_discard(op);
      return TB_ENOMEM;
    }
    tc->next_seq++;
  }
  if (opp != NULL)
    *opp = op;
  op_register(op, out);
  if (kind == K_UNLOAD || sequenced)
    enqueue(op);
  else
    run_or_wait_model(op);
  return 0;
}

int tb_training_client_optim_step(tb_training_client_t *tc, const tb_adamw_params_t *params,
                                  tb_future_t **out) {
  tb_adamw_params_t p;
  if (params == NULL)
    tb_adamw_params_default(&p);
  else
    p = *params;
  double v[] = { p.learning_rate, p.beta1, p.beta2, p.eps, p.weight_decay, p.grad_clip_norm };
  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
    if (!isfinite(v[i]) || v[i] < 0)
      return TB_EINVAL;
  json_t *b = json_pack("{s{sfsfsfsfsfsf}ss}", "adam_params", "learning_rate", p.learning_rate,
                        "beta1", p.beta1, "beta2", p.beta2, "eps", p.eps, "weight_decay",
                        p.weight_decay, "grad_clip_norm", p.grad_clip_norm, "type",
                        "optim_step");
  return json_op(tc, K_OPTIM, b, 1, NULL, out);
}

static int check_name(const char *name) {
  if (name == NULL || name[0] == '\0')
    return TB_EINVAL;
  return 0;
}

static json_t *save_body(const char *type, const char *name, int64_t ttl_seconds) {
  json_t *b = json_pack("{ssss}", "type", type, "path", name);
  if (b != NULL && ttl_seconds > 0 &&
      json_object_set_new(b, "ttl_seconds", json_integer((json_int_t)ttl_seconds)) != 0) {
    json_decref(b);
    return NULL;
  }
  return b;
}

int tb_training_client_save_state(tb_training_client_t *tc, const char *name,
                                  int64_t ttl_seconds, tb_future_t **out) {
  if (check_name(name) != 0 || ttl_seconds < 0)
    return TB_EINVAL;
  json_t *b = save_body("save_weights", name, ttl_seconds);
  if (b != NULL && json_object_set_new(b, "overwrite", json_false()) != 0) {
    json_decref(b);
    b = NULL;
  }
  return json_op(tc, K_SAVE, b, 1, NULL, out);
}

int tb_training_client_save_weights_for_sampler(tb_training_client_t *tc, const char *name,
                                                int64_t ttl_seconds, tb_future_t **out) {
  if (check_name(name) != 0 || ttl_seconds < 0)
    return TB_EINVAL;
  return json_op(tc, K_SAVE_SAMPLER, save_body("save_weights_for_sampler", name, ttl_seconds),
                 1, NULL, out);
}

static int load_common(tb_training_client_t *tc, const char *path, int optimizer,
                       tb_future_t **out) {
  if (path == NULL || strncmp(path, "tinker://", 9) != 0)
    return TB_EINVAL;
  json_t *b = json_pack("{sssbss}", "path", path, "optimizer", optimizer, "type", "load_weights");
  tc_op_t *op = NULL;
  int rc = json_op(tc, K_LOAD, b, 1, &op, out);
  /* The answer's path when it gives one, else this one (when it could be
   * copied). */
  if (rc == 0)
    op->model_path = strdup(path);
  return rc;
}

int tb_training_client_load_state(tb_training_client_t *tc, const char *path,
                                  tb_future_t **out) {
  return load_common(tc, path, 0, out);
}

int tb_training_client_load_state_with_optimizer(tb_training_client_t *tc, const char *path,
                                                 tb_future_t **out) {
  return load_common(tc, path, 1, out);
}

int tb_training_client_unload(tb_training_client_t *tc, tb_future_t **out) {
  return json_op(tc, K_UNLOAD, json_pack("{ss}", "type", "unload_model"), 0, NULL, out);
}

int tb_training_client_get_info(tb_training_client_t *tc, tb_future_t **out) {
  return json_op(tc, K_INFO, json_pack("{ss}", "type", "get_info"), 0, NULL, out);
}

/* ------------------------------------------------------------ sampling clients */

static void finish_sampling_client(tc_op_t *op, char *session_id) {
  if (session_id == NULL) {
    tb_error_t e = { 0 };
    tb_error_set(&e, TB_EPROTO, TB_CATEGORY_SERVER, "no sampling session id in the answer");
    keep_first_error(op, &e);
    tb_error_clear(&e);
    op_complete(op, NULL, NULL);
    return;
  }
  tb__sampling_client_ready(op->samp, session_id, NULL);
  op->samp = NULL;
  op_complete(op, &tb_result_string, session_id);
}

int tb_training_client_save_weights_and_get_sampling_client(tb_training_client_t *ptc,
                                                            tb_sampling_client_t *samp,
                                                            tb_future_t **out) {
  tc_t *tc = usable(ptc);
  if (tc == NULL || samp == NULL || out == NULL)
    return TB_EINVAL;
  if (tc->closing)
    return TB_ECLOSING;
  int rc = tb__sampling_client_init_pending(tc->svc, samp, NULL, tc->base_model);
  if (rc != 0)
    return rc;
  json_t *b = json_pack("{sssI}", "type", "save_weights_for_sampler", "sampling_session_seq_id",
                        (json_int_t)tb__service_next_sampling_seq(tc->svc));
  tc_op_t *op = NULL;
  rc = json_op(ptc, K_SAVE_GET_SAMPLER, b, 1, &op, out);
  if (rc != 0) {
    tb__sampling_client_discard(samp);
    return rc;
  }
  op->samp = samp;
  return 0;
}

int tb_training_client_create_sampling_client(tb_training_client_t *ptc, const char *model_path,
                                              tb_sampling_client_t *samp, tb_future_t **out) {
  tc_t *tc = usable(ptc);
  if (tc == NULL)
    return TB_EINVAL;
  return tb_service_client_create_sampling_client(tc->svc, samp, model_path, NULL, out);
}

static void start_unsequenced(tc_op_t *op) {
  if (start_req(op, 0) != 0) {
    tb_error_t e = { 0 };
    tb_error_set(&e, TB_ECLOSING, TB_CATEGORY_CANCELLED, "the client is closing");
    op_fail_later(op, &e);
    tb_error_clear(&e);
  }
}

/* ------------------------------------------------------------ creation */

static void created(tc_t *tc, int status, tb_error_t *err) {
  tb_future_t *f = tc->create_f;
  tc->create_f = NULL;
  if (status == 0) {
    tc->state = 1;
    tc->pub->model_id = tc->model_id;
    tc->pub->base_model = tc->base_model;
  } else {
    tc->state = -1;
    if (tb_error_copy(&tc->create_err, err) != 0)
      tc->create_err.code = err->code;
    if (tc->create_err.code == 0)
      tc->create_err.code = TB_EIO;
  }
  /* Waiting ops go now (or fail later, on their own alarms). */
  tc_op_t *w = tc->waiting_model;
  tc->waiting_model = NULL;
  while (w != NULL) {
    tc_op_t *next = w->next;
    w->next = NULL;
    run_or_wait_model(w);
    w = next;
  }
  pump(tc);
  if (status == 0) {
    char *id = strdup(tc->model_id);
    if (id == NULL) {
      tb_error_t e = { 0 };
      tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
      tb__client_future_fail(f, &e);
    } else {
      tb__client_future_resolve(f, &tb_result_string, id);
    }
  } else {
    tb__client_future_fail(f, err);
  }
  check_closed(tc);
}

static void on_create_done(tb_future_t *f, int status) {
  tc_t *tc = f->data;
  tc->create_op_f = NULL;
  tb_error_t e = { 0 };
  if (status == 0) {
    char *mid = tb_future_take(f, &tb_result_string);
    if (mid != NULL) {
      free(tc->model_id);
      tc->model_id = mid;
    }
    if (tc->model_id == NULL) {
      status = tb_error_set(&e, TB_EPROTO, TB_CATEGORY_SERVER, "the server named no model id");
    }
  } else {
    tb_error_copy(&e, &f->error);
    if (e.code == 0)
      e.code = status;
  }
  tb_future_free(f);
  created(tc, status, &e);
  tb_error_clear(&e);
}

static int decode_model_id(tb__client_op_t *cop, const char *body, size_t len, int proto,
                           const tb_result_type_t **type, void **result, tb_error_t *err) {
  return decode_string_field(body, len, "model_id", 0, NULL, type, result, err);
}

static void on_session(tb_future_t *f, int status) {
  tc_t *tc = f->data;
  tc->session_f = NULL;
  tb_error_t e = { 0 };
  if (status != 0) {
    tb_error_copy(&e, &f->error);
    if (e.code == 0)
      e.code = status;
    tb_future_free(f);
    created(tc, status, &e);
    tb_error_clear(&e);
    return;
  }
  const char *sid = tb_future_result(f, &tb_result_string);
  json_t *b;
  if (tc->create_via_load) {
    b = json_pack("{sssIsssbss}", "session_id", sid, "model_seq_id", (json_int_t)tc->model_seq,
                  "path", tc->create_path, "optimizer", tc->create_optimizer, "type",
                  "load_weights");
    /* The SDK's assumption, kept unless the answer names the model. */
    tc->model_id = tb__asprintf("%s:train:%lld", sid, (long long)tc->model_seq);
  } else {
    json_t *lc = json_pack("{sisbsbsb}", "rank", tc->lora.rank, "train_mlp",
                           tc->lora.train_mlp, "train_attn", tc->lora.train_attn,
                           "train_unembed", tc->lora.train_unembed);
    if (lc != NULL && tc->lora.has_seed)
      json_object_set_new(lc, "seed", json_integer((json_int_t)tc->lora.seed));
    b = json_pack("{sssIsssoss}", "session_id", sid, "model_seq_id", (json_int_t)tc->model_seq,
                  "base_model", tc->base_model, "lora_config", lc, "type", "create_model");
  }
  tb_future_free(f);
  size_t len = 0;
  char *text = b ? tb__json_dump(b, &len) : NULL;
  json_decref(b);
  int rc = text ? 0 : TB_ENOMEM;
  if (rc == 0) {
    tb__client_op_opts_t o = { 0 };
    o.path = tc->create_via_load ? "/api/v1/load_weights" : "/api/v1/create_model";
    o.body = text;
    o.body_len = len;
    o.max_retries = -1;
    o.poll = 1;
    o.request_type = tc->create_via_load ? "LoadWeights" : "CreateModel";
    o.decode = decode_model_id;
    rc = tb__client_op_start(tc->rt, &o, &tc->create_op_f);
  }
  free(text);
  if (rc != 0) {
    tb_error_set(&e, rc, rc == TB_ECLOSING ? TB_CATEGORY_CANCELLED : TB_CATEGORY_NONE,
                 "cannot create the model: %s", tb_strerror(rc));
    created(tc, rc, &e);
    tb_error_clear(&e);
    return;
  }
  tc->create_op_f->data = tc;
  tb_future_set_callback(tc->create_op_f, on_create_done);
}

static void cancel_create(tb_future_t *f) {
  tc_t *tc = f->driver_;
  if (tc->session_f != NULL)
    tb_future_cancel(tc->session_f);
  if (tc->create_op_f != NULL)
    tb_future_cancel(tc->create_op_f);
}

static int create_common(tb_service_client_t *sc, tb_training_client_t *ptc,
                         const char *base_model, const tb_lora_params_t *lora,
                         const char *path, int optimizer, tb_future_t **out) {
  if (sc == NULL || ptc == NULL || out == NULL)
    return TB_EINVAL;
  tb__rt_t *rt = tb__service_rt(sc);
  if (rt == NULL)
    return sc->impl_ == NULL ? TB_EINVAL : TB_ECLOSING;
  tc_t *tc = calloc(1, sizeof(*tc));
  tb_future_t *f = tb__client_future_new(sc->loop);
  int rc = tc && f ? 0 : TB_ENOMEM;
  if (rc == 0 && base_model != NULL && (tc->base_model = strdup(base_model)) == NULL)
    rc = TB_ENOMEM;
  if (rc == 0 && path != NULL && (tc->create_path = strdup(path)) == NULL)
    rc = TB_ENOMEM;
  if (rc == 0)
    rc = tb_service_client_session(sc, &tc->session_f);
  if (rc != 0) {
    if (tc != NULL) {
      free(tc->base_model);
      free(tc->create_path);
    }
    free(tc);
    free(f);
    return rc;
  }
  memset(ptc, 0, sizeof(*ptc));
  ptc->loop = sc->loop;
  ptc->service = sc;
  ptc->impl_ = tc;
  tc->pub = ptc;
  tc->svc = sc;
  tc->rt = rt;
  tc->next_seq = 1;
  tc->create_f = f;
  tc->create_via_load = path != NULL;
  tc->create_optimizer = optimizer;
  if (lora != NULL)
    tc->lora = *lora;
  else
    tb_lora_params_default(&tc->lora);
  tc->model_seq = tb__service_next_model_seq(sc);
  tc->session_f->data = tc;
  tb_future_set_callback(tc->session_f, on_session);
  tb__client_future_set_driver(f, cancel_create, tc);
  *out = f;
  return 0;
}

int tb_service_client_create_lora_training_client(tb_service_client_t *sc,
                                                  tb_training_client_t *tc,
                                                  const char *base_model,
                                                  const tb_lora_params_t *lora,
                                                  tb_future_t **out) {
  if (base_model == NULL || base_model[0] == '\0')
    return TB_EINVAL;
  if (lora != NULL && (lora->rank < 1 || !(lora->train_mlp || lora->train_attn ||
                                           lora->train_unembed)))
    return TB_EINVAL;
  return create_common(sc, tc, base_model, lora, NULL, 0, out);
}

int tb_service_client_create_training_client_from_state(tb_service_client_t *sc,
                                                        tb_training_client_t *tc,
                                                        const char *path, tb_future_t **out) {
  if (path == NULL || strncmp(path, "tinker://", 9) != 0)
    return TB_EINVAL;
  return create_common(sc, tc, NULL, NULL, path, 0, out);
}

int tb_service_client_create_training_client_from_state_with_optimizer(
    tb_service_client_t *sc, tb_training_client_t *tc, const char *path, tb_future_t **out) {
  if (path == NULL || strncmp(path, "tinker://", 9) != 0)
    return TB_EINVAL;
  return create_common(sc, tc, NULL, NULL, path, 1, out);
}

void tb_training_client_use_json(tb_training_client_t *ptc, int on) {
  tc_t *tc = usable(ptc);
  if (tc != NULL)
    tc->json = on != 0;
}

/* ------------------------------------------------------------ close */

static void on_close_alarm(tb__alarm_t *a) {
  tc_t *tc = a->data;
  tb_training_client_t *ptc = tc->pub;
  tb_training_client_close_cb cb = ptc->close_cb_;
  free(tc->model_id);
  free(tc->base_model);
  free(tc->create_path);
  tb_error_clear(&tc->create_err);
  tb_error_clear(&tc->broken_err);
  free(tc);
  ptc->impl_ = NULL;
  ptc->model_id = NULL;
  ptc->base_model = NULL;
  if (cb != NULL) {
    tb__loop_frame_t frame;
    tb__loop_enter(&frame, ptc->loop);
    cb(ptc);
    tb__loop_leave(&frame);
  }
}

static void check_closed(tc_t *tc) {
  if (tc->closing != 1 || tc->n_live != 0 || tc->create_f != NULL)
    return;
  tc->closing = 2;
  tb__alarm_init(&tc->close_alarm, on_close_alarm, tc);
  if (tb__alarm_start(tc->rt, &tc->close_alarm, 0) != 0)
    on_close_alarm(&tc->close_alarm);
}

void tb_training_client_close(tb_training_client_t *ptc, tb_training_client_close_cb close_cb) {
  tc_t *tc = usable(ptc);
  if (tc == NULL || tc->closing)
    return;
  tc->closing = 1;
  ptc->close_cb_ = close_cb;
  if (!tc->broken || tc->broken_seq > 0) {
    tc->broken = 1;
    tc->broken_seq = 0;
    tb_error_clear(&tc->broken_err);
    tb_error_set(&tc->broken_err, TB_ECANCELED, TB_CATEGORY_CANCELLED,
                 "the training client is closing");
  }
  if (tc->create_f != NULL)
    tb_future_cancel(tc->create_f);
  /* Queued ops fail through the pump; started ones are cancelled. */
  tc_op_t *q = tc->queue;
  tc->queue = tc->queue_tail = NULL;
  while (q != NULL) {
    tc_op_t *next = q->next;
    q->next = NULL;
    q->queued = 0;
    q->cancelled = 1;
    op_fail_later(q, &tc->broken_err);
    q = next;
  }
  tc_op_t *w = tc->waiting_model;
  tc->waiting_model = NULL;
  while (w != NULL) {
    tc_op_t *next = w->next;
    w->next = NULL;
    w->cancelled = 1;
    op_fail_later(w, &tc->broken_err);
    w = next;
  }
  /* Ops on the wire: their requests are cancelled, and they fail once
   * every one has stopped. */
  for (tc_op_t *op = tc->live; op != NULL; op = op->live_next) {
    if (op->cancelled || tb__alarm_armed(&op->alarm))
      continue;
    op->cancelled = 1;
    for (size_t i = 0; i < op->n_reqs; i++)
      if (op->reqs[i].f != NULL && !op->reqs[i].done)
        tb_future_cancel(op->reqs[i].f);
  }
  check_closed(tc);
}

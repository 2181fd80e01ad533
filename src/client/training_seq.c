/*
 * The TrainingClient's seq_id order: an op's requests on the operation
 * layer, the turns that send them in call order, and their completion
 * (see training_internal.h).
 *
 * Non-goals: retries of a whole operation (the request layer retries each
 * POST) and any ordering of the unsequenced get_info and sampling-client
 * calls beyond waiting for the model to exist.
 */
#include "client/training_internal.h"

#include <stdlib.h>
#include <string.h>

#include "client/answer.h"
#include "client/chunk.h"
#include "client/convert.h"
#include "core/json.h"
#include "wire/encode.h"
#include "wire/op_request.h"
#include "wire/op_result.h"
#include "wire/service.h"

/* ------------------------------------------------------------ cancel */

/* A cancelled op leaves the order: queued, its seq_ids are lost; waiting
 * for the model, it fails; on the wire, its requests are cancelled. */
static void on_finish_alarm(tb__alarm_t *a) {
  tb__tc_op_finish(a->data);
}

static void op_cancel(tb_future_t *f) {
  tb__tc_op_t *op = f->driver_;
  tb__tc_t *tc = op->tc;
  if (op->cancelled)
    return;
  op->cancelled = 1;
  if (op->queued) {
    /* Never sent: its seq_ids are lost, and with them the order. */
    tb__tc_op_t **p = &tc->queue;
    while (*p != op)
      p = &(*p)->next;
    *p = op->next;
    if (tc->queue_tail == op) {
      tc->queue_tail = NULL;
      for (tb__tc_op_t *q = tc->queue; q != NULL; q = q->next)
        tc->queue_tail = q;
    }
    op->queued = 0;
    if (op->n_reqs > 0 && op->reqs[0].seq >= 0)  /* unload has none */
      tb__tc_set_broken(tc, op->reqs[0].seq, NULL);
    tb__tc_op_fail_later(op, &op->err);
    tb__tc_pump(tc);
    return;
  }
  if (tb__alarm_armed(&op->alarm))
    return;  /* already completing */
  tb__tc_op_t **w = &tc->waiting_model;
  while (*w != NULL && *w != op)
    w = &(*w)->next;
  if (*w == op) {
    *w = op->next;
    tb__tc_op_fail_later(op, &op->err);
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

int tb__tc_op_register(tb__tc_op_t *op, tb_future_t **out) {
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
static int req_body(tb__tc_req_t *r, tb__buf_t *out) {
  tb__tc_t *tc = r->op->tc;
  if (r->json != NULL) {
    if (tb__wire_request_add_model_id(r->json, tc->model_id) != 0)
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

/* Large answers are decoded off the loop: on_req_done queues the work. */
static const tb_result_type_t raw_body_type = { "forward_backward_body",
                                                tb__raw_body_free };

static int decode_fwdbwd(tb__client_op_t *cop, const char *body, size_t len, int proto,
                         const tb_result_type_t **type, void **result, tb_error_t *err) {
  if (len > TB__INLINE_DECODE_MAX)
    return tb__raw_body_keep(body, len, proto, &raw_body_type, type, result, err);
  tb_forward_backward_output_t *o = NULL;
  int rc = tb__decode_fwdbwd_output(body, len, proto, &o, err);
  if (rc == 0) {
    *type = &tb_result_forward_backward_output;
    *result = o;
  }
  return rc;
}

static int decode_optim(tb__client_op_t *cop, const char *body, size_t len, int proto,
                        const tb_result_type_t **type, void **result, tb_error_t *err) {
  TB__DECODE_FIELDS(tb__wire_optim_result_t,
                    tb__wire_optim_result_from_json(&d.jc, &d.arena, d.doc, &w), "optim_step");
  tb_optim_step_output_t *o = calloc(1, sizeof(*o));
  rc = o ? tb__metrics_from_wire(w.metrics, w.n_metrics, &o->metrics, &o->n_metrics)
         : TB_ENOMEM;
  return tb__answer_result(&d, rc == 0, &tb_result_optim_step_output, o, type, result, err);
}

/* The field of a small result (wire/op_result.h) a decoder wants. */
static const char *op_result_field(const tb__wire_op_result_t *w, const char *field) {
  if (strcmp(field, "path") == 0)
    return w->path;
  if (strcmp(field, "model_id") == 0)
    return w->model_id;
  return w->sampling_session_id;
}

/* A result naming a string field: "path", "model_id",
 * "sampling_session_id" (given as decode_data of the request's op). */
int tb__tc_decode_string_field(const char *body, size_t len, const char *field, int required,
                               const char *fallback, const tb_result_type_t **type,
                               void **result, tb_error_t *err) {
  TB__DECODE_FIELDS(tb__wire_op_result_t, tb__wire_op_result_from_json(&d.jc, d.doc, &w),
                    "the result");
  const char *v = op_result_field(&w, field);
  if (v == NULL && required) {
    tb__answer_end(&d);
    return tb_error_set(err, TB_EFIELD, TB_CATEGORY_SERVER, "the result has no \"%s\"",
                        field);
  }
  char *copy = v ? strdup(v) : fallback ? strdup(fallback) : NULL;
  tb__answer_end(&d);
  if (copy == NULL && (v != NULL || fallback != NULL))
    return tb__answer_out_of_memory(err);
  *type = copy ? &tb_result_string : NULL;
  *result = copy;
  return 0;
}

static int decode_path(tb__client_op_t *cop, const char *body, size_t len, int proto,
                       const tb_result_type_t **type, void **result, tb_error_t *err) {
  tb__tc_req_t *r = cop->decode_data;
  int required = r->op->kind != TB__TC_LOAD;
  return tb__tc_decode_string_field(body, len, "path", required, r->op->model_path, type,
                                    result, err);
}

static int decode_sampling_session(tb__client_op_t *cop, const char *body, size_t len,
                                   int proto, const tb_result_type_t **type, void **result,
                                   tb_error_t *err) {
  return tb__tc_decode_string_field(body, len, "sampling_session_id", 1, NULL, type, result, err);
}

static int decode_info(tb__client_op_t *cop, const char *body, size_t len, int proto,
                       const tb_result_type_t **type, void **result, tb_error_t *err) {
  TB__DECODE_FIELDS(tb__wire_model_info_t, tb__wire_model_info_from_json(&d.jc, d.doc, &w),
                    "get_info");
  tb_model_info_t *info = calloc(1, sizeof(*info));
  int ok = info != NULL;
  if (ok) {
    info->model_id = tb__answer_dup(w.model_id, &ok);
    info->model_name = tb__answer_dup(w.model_name, &ok);
    info->arch = tb__answer_dup(w.arch, &ok);
    /* "<name>:<revision>" names the tokenizer by its name alone */
    if (w.tokenizer_id != NULL &&
        (info->tokenizer_id = strndup(w.tokenizer_id, strcspn(w.tokenizer_id, ":"))) == NULL)
      ok = 0;
    info->is_lora = w.is_lora;
    info->lora_rank = w.lora_rank;
  }
  return tb__answer_result(&d, ok, &tb_result_model_info, info, type, result, err);
}

static void on_req_done(tb_future_t *f, int status);

void tb__tc_release_turn(tb__tc_op_t *op) {
  if (!op->holds_turn)
    return;
  op->holds_turn = 0;
  op->tc->submitting = NULL;
  tb__tc_pump(op->tc);
}

/* Whether op's turn passes on as soon as the last POST of its phase is
 * handed to the runtime, rather than when it is answered: the server holds
 * a seq_id that arrives before an earlier one (the chunks of one call
 * already rely on it), so waiting for the answer would only add a round
 * trip per operation to a pipelined client.  The custom loss keeps the
 * turn from its forward pass to its backward pass, and passes it on the
 * backward pass's answer. */
static int passes_at_send(const tb__tc_op_t *op) {
  return op->kind != TB__TC_CUSTOM;
}

/* Request r's seq_id was lost after later operations were sent: the
 * server holds those until it comes, which it never will, so their polls
 * are cancelled and the operations fail with the client's TB_EBUSY (the
 * other requests of r's own operation fail with it, with its error). */
static void stop_sent_after(tb__tc_t *tc, const tb__tc_req_t *lost) {
  for (tb__tc_op_t *op = tc->live; op != NULL; op = op->live_next)
    for (size_t i = 0; i < op->n_reqs; i++) {
      tb__tc_req_t *q = &op->reqs[i];
      if (!q->started || q->done || q->f == NULL || q->seq <= lost->seq ||
          tb_future_is_done(q->f))
        continue;
      if (op != lost->op)
        tb__tc_keep_first_error(op, &tc->broken_err);
      tb_future_cancel(q->f);
    }
}

/* The POST of request r ended.  The first request of a phase goes last,
 * once the others' POSTs were all answered; the turn passes on once it
 * is sent (passes_at_send), or once it is answered. */
static void on_req_submitted(tb__client_op_t *cop, int status) {
  tb__tc_req_t *r = cop->decode_data;
  tb__tc_op_t *op = r->op;
  r->submit_status = status;
  if (status != 0 && r->seq >= 0) {
    tb__tc_set_broken(op->tc, r->seq, &cop->call.err);
    stop_sent_after(op->tc, r);
  }
  if (!op->holds_turn)
    return;
  size_t first = op->first, end = op->first + op->count;
  tb__tc_req_t *r0 = &op->reqs[first];
  if (r != r0) {
    int ok = 1;
    for (size_t i = first + 1; i < end; i++) {
      if (op->reqs[i].started && op->reqs[i].submit_status == 1)
        return;  /* another one is still being sent */
      ok = ok && op->reqs[i].started && op->reqs[i].submit_status == 0;
    }
    if (ok && !op->cancelled && !tb__tc_stopped_at(op->tc, r0->seq) &&
        tb__tc_start_phase(op) == 0) {
      if (passes_at_send(op))
        tb__tc_release_turn(op);
      return;
    }
    /* The first request is not sent: its seq_id is lost. */
    tb__tc_set_broken(op->tc, r0->seq, op->err.code ? &op->err : NULL);
    tb__tc_release_turn(op);
    return;
  }
  int keep = op->kind == TB__TC_CUSTOM && first == 0 && status == 0 &&
             !tb__tc_stopped_at(op->tc, op->reqs[op->count].seq) &&
             !op->cancelled;
  if (!keep)
    tb__tc_release_turn(op);
}

/* The path, request type and decoder of every kind but the forward ones,
 * whose path and type depend on the request.  Saves keep the submission
 * retries: resent with its seq_id, a save is answered by the server with
 * the first one's future (the SDK's outer retry layer resends it too), and
 * a lost save would stop the client. */
static const struct {
  const char *path;
  const char *request_type;
  tb__client_op_decode_fn decode;
} k_plain_ops[] = {
  [TB__TC_OPTIM] = { "/api/v1/optim_step", "OptimStep", decode_optim },
  [TB__TC_SAVE] = { "/api/v1/save_weights", "SaveWeights", decode_path },
  [TB__TC_SAVE_SAMPLER] = { "/api/v1/save_weights_for_sampler", "SaveWeightsForSampler",
                            decode_path },
  [TB__TC_SAVE_GET_SAMPLER] = { "/api/v1/save_weights_for_sampler", "SaveWeightsForSampler",
                                decode_sampling_session },
  [TB__TC_LOAD] = { "/api/v1/load_weights", "LoadWeights", decode_path },
  [TB__TC_UNLOAD] = { "/api/v1/unload_model", NULL, NULL },
  [TB__TC_INFO] = { "/api/v1/get_info", NULL, decode_info },
};

/* Starts request i of op as an operation of the runtime. */
int tb__tc_start_req(tb__tc_op_t *op, size_t i) {
  tb__tc_t *tc = op->tc;
  tb__tc_req_t *r = &op->reqs[i];
  tb__client_op_opts_t o = { 0 };
  o.max_retries = -1;
  o.poll = 1;
  o.decode_data = r;
  o.submitted = on_req_submitted;
  switch (op->kind) {
    case TB__TC_FORWARD:
    case TB__TC_FORWARD_BACKWARD:
    case TB__TC_CUSTOM: {
      int fwd = op->kind == TB__TC_FORWARD || (op->kind == TB__TC_CUSTOM && i < op->n_reqs / 2);
      o.path = (r->json != NULL && fwd) ? "/api/v1/forward" : "/api/v1/forward_backward";
      o.content_type = r->json != NULL ? NULL : "application/x-protobuf";
      o.request_type = fwd ? "Forward" : "ForwardBackward";
      o.accept_proto = r->json == NULL;
      o.decode = decode_fwdbwd;
      break;
    }
    default:
      if ((size_t)op->kind >= sizeof(k_plain_ops) / sizeof(k_plain_ops[0]) ||
          k_plain_ops[op->kind].path == NULL)
        return TB_EINVAL;
      o.path = k_plain_ops[op->kind].path;
      o.request_type = k_plain_ops[op->kind].request_type;
      o.decode = k_plain_ops[op->kind].decode;
      if (op->kind == TB__TC_INFO) {  /* answered at once: no poll */
        o.poll = 0;
        o.submitted = NULL;
      }
      break;
  }
  tb__buf_t body = TB_BUF_INIT;
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
int tb__tc_start_phase(tb__tc_op_t *op) {
  size_t first = op->first, end = op->first + op->count;
  int others = 0;
  for (size_t i = first + 1; i < end; i++)
    if (!op->reqs[i].started)
      others = 1;
  tb_error_t e = { 0 };
  int rc = 0;
  if (others) {
    for (size_t i = first + 1; i < end && rc == 0; i++)
      rc = tb__tc_start_req(op, i);
  } else {
    rc = tb__tc_start_req(op, first);
  }
  if (rc != 0) {
    tb__client_not_started(&e, rc, "cannot send");
    tb__tc_keep_first_error(op, &e);
    tb_error_clear(&e);
    for (size_t i = first; i < end; i++)
      if (!op->reqs[i].started && op->reqs[i].seq >= 0) {
        tb__tc_set_broken(op->tc, op->reqs[i].seq, &op->err);
        break;
      }
  }
  return rc;
}

/* ------------------------------------------------------------ turns */

/* Called from tb__tc_pump's loop, which starts the next op once the turn
 * is free: passing it here by hand (not through tb__tc_release_turn)
 * keeps a long queue from recursing. */
static void start_sequenced(tb__tc_op_t *op) {
  tb__tc_t *tc = op->tc;
  op->holds_turn = 1;
  tc->submitting = op;
  if (tb__tc_start_phase(op) != 0) {
    op->holds_turn = 0;
    tc->submitting = NULL;
    if (op->n_started == 0) {
      tb__tc_op_fail_later(op, &op->err);
      return;
    }
    /* Some chunks are on the wire: the op ends when they do. */
    return;
  }
  if (passes_at_send(op) && op->reqs[op->first].started && tc->submitting == op) {
    op->holds_turn = 0;
    tc->submitting = NULL;
  }
}

/* Starts the next sequenced op when the turn is free; fails the ops of a
 * client that stopped or whose model was never made. */
void tb__tc_pump(tb__tc_t *tc) {
  while (tc->submitting == NULL && tc->queue != NULL && tc->state != 0) {
    tb__tc_op_t *op = tc->queue;
    tc->queue = op->next;
    if (tc->queue == NULL)
      tc->queue_tail = NULL;
    op->next = NULL;
    op->queued = 0;
    if (tc->state < 0) {
      tb__tc_op_fail_later(op, &tc->create_err);
    } else if (op->n_reqs > 0 && op->reqs[0].seq >= 0 && tb__tc_stopped_at(tc, op->reqs[0].seq)) {
      tb__tc_op_fail_later(op, &tc->broken_err);
    } else {
      start_sequenced(op);
    }
  }
}

void tb__tc_enqueue(tb__tc_op_t *op) {
  tb__tc_t *tc = op->tc;
  op->queued = 1;
  if (tc->queue_tail != NULL)
    tc->queue_tail->next = op;
  else
    tc->queue = op;
  tc->queue_tail = op;
  tb__tc_pump(tc);
}

/* Unsequenced ops run once the model exists. */

void tb__tc_start_unsequenced(tb__tc_op_t *op) {
  if (tb__tc_start_req(op, 0) != 0) {
    tb_error_t e = { 0 };
    tb_error_set(&e, TB_ECLOSING, TB_CATEGORY_CANCELLED, "the client is closing");
    tb__tc_op_fail_later(op, &e);
    tb_error_clear(&e);
  }
}

void tb__tc_run_or_wait_model(tb__tc_op_t *op) {
  tb__tc_t *tc = op->tc;
  if (tc->state == 0) {
    op->next = tc->waiting_model;
    tc->waiting_model = op;
  } else if (tc->state < 0) {
    tb__tc_op_fail_later(op, &tc->create_err);
  } else {
    tb__tc_start_unsequenced(op);
  }
}

/* ------------------------------------------------------------ completion */

/* Request r is over (its result or failure recorded). */
static void req_finished(tb__tc_req_t *r) {
  tb__tc_op_t *op = r->op;
  r->done = 1;
  op->n_done++;
  if (op->n_done < op->n_started)
    return;
  /* A phase whose first request still waits for the others' POSTs is not
   * over. */
  size_t first = op->first;
  if (op->holds_turn && !op->reqs[first].started && !op->cancelled && op->err.code == 0 &&
      !tb__tc_stopped_at(op->tc, op->reqs[first].seq))
    return;
  tb__tc_op_finish(op);
}

/* A large result decoded off the loop: the work touches only this. */
typedef struct decode_work_s {
  uv_work_t work;
  tb__tc_req_t *r;
  tb__raw_body_t *raw;
  tb_forward_backward_output_t *out;
  tb_error_t err;
  int rc;
} decode_work_t;

static void decode_work(uv_work_t *w) {
  decode_work_t *d = w->data;
  d->rc = tb__decode_fwdbwd_output(d->raw->data, d->raw->len, d->raw->proto, &d->out, &d->err);
}

static void decode_done(uv_work_t *w, int status) {
  decode_work_t *d = w->data;
  tb__tc_req_t *r = d->r;
  if (d->rc == 0) {
    r->op->parts[r->index] = d->out;
  } else {
    if (d->err.code == 0)
      tb_error_set(&d->err, d->rc, TB_CATEGORY_SERVER, "cannot decode the result: %s",
                   tb_strerror(d->rc));
    tb__tc_keep_first_error(r->op, &d->err);
  }
  tb_error_clear(&d->err);
  tb__raw_body_free(d->raw);
  free(d);
  req_finished(r);
}

static void on_req_done(tb_future_t *f, int status) {
  tb__tc_req_t *r = f->data;
  tb__tc_op_t *op = r->op;
  if (status != 0) {
    tb__tc_keep_first_error(op, &f->error);
  } else if (f->result_type == &raw_body_type) {
    decode_work_t *d = calloc(1, sizeof(*d));
    tb__raw_body_t *raw = tb_future_take(f, &raw_body_type);
    if (d != NULL) {
      d->r = r;
      d->raw = raw;
      d->work.data = d;
      if (uv_queue_work(op->tc->rt->loop, &d->work, decode_work, decode_done) == 0)
        return;  /* decode_done finishes r */
    }
    /* No work item: decode here rather than fail. */
    tb_error_t e = { 0 };
    tb_forward_backward_output_t *o = NULL;
    if (tb__decode_fwdbwd_output(raw->data, raw->len, raw->proto, &o, &e) == 0)
      op->parts[r->index] = o;
    else
      tb__tc_keep_first_error(op, &e);
    tb_error_clear(&e);
    tb__raw_body_free(raw);
    free(d);
  } else if (op->parts != NULL) {
    op->parts[r->index] = tb_future_take(f, &tb_result_forward_backward_output);
  }
  req_finished(r);
}


/* Every started request is done: complete the op (or start its next
 * phase). */
void tb__tc_op_finish(tb__tc_op_t *op) {
  tb__tc_t *tc = op->tc;
  int failed = op->err.code != 0 || op->cancelled;
  if (op->holds_turn) {
    tb__tc_req_t *r0 = &op->reqs[op->first];
    int keep = op->kind == TB__TC_CUSTOM && op->first == 0 && !failed && r0->submit_status == 0;
    if (!keep) {
      if (!r0->started && r0->seq >= 0)
        tb__tc_set_broken(tc, r0->seq, failed && op->err.code ? &op->err : NULL);
      else if (op->kind == TB__TC_CUSTOM && op->first == 0)
        tb__tc_set_broken(tc, op->reqs[op->count].seq, op->err.code ? &op->err : NULL);
      tb__tc_release_turn(op);
    }
  }
  if (op->err.code != 0 || op->cancelled) {
    tb__tc_op_complete(op, NULL, NULL);
    return;
  }
  switch (op->kind) {
    case TB__TC_FORWARD:
    case TB__TC_FORWARD_BACKWARD:
    case TB__TC_CUSTOM: {
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
        tb__tc_keep_first_error(op, &e);
        tb_error_clear(&e);
        if (op->kind == TB__TC_CUSTOM && first == 0)
          tb__tc_set_broken(op->tc, op->reqs[op->count].seq, &op->err);
        tb__tc_op_complete(op, NULL, NULL);
        return;
      }
      if (op->kind == TB__TC_CUSTOM && first == 0) {
        op->parts[0] = o;  /* the forward pass, for the loss function */
        op->after_forward(op);
        return;
      }
      if (op->kind == TB__TC_CUSTOM) {
        /* the loss function's numbers, kept in parts[0] by after_forward */
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
      tb__tc_op_complete(op, &tb_result_forward_backward_output, o);
      return;
    }
    case TB__TC_SAVE_GET_SAMPLER: {
      char *sid = tb_future_take(op->reqs[0].f, &tb_result_string);
      op->take_session(op, sid);
      return;
    }
    default: {
      /* The single request's result is the op's. */
      tb_future_t *f = op->reqs[0].f;
      const tb_result_type_t *type = f->result_type;
      void *result = tb_future_take(f, type);
      tb__tc_op_complete(op, type, result);
      return;
    }
  }
}

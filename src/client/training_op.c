/*
 * The TrainingClient's op objects (see training_internal.h): an op with
 * its requests and their encoded bodies, the client's lost seq_ids, the
 * completion of the caller's future, and the client's close, which waits
 * for every live op.
 */
#include "client/training_internal.h"

#include <stdlib.h>
#include <string.h>

#include "client/chunk.h"
#include "client/convert.h"
#include "core/json.h"
#include "wire/encode.h"

/* ------------------------------------------------------------ errors */

void tb__tc_set_broken(tb__tc_t *tc, int64_t seq, const tb_error_t *why) {
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
int tb__tc_stopped_at(const tb__tc_t *tc, int64_t seq) {
  return tc->broken && seq >= tc->broken_seq;
}

void tb__tc_keep_first_error(tb__tc_op_t *op, const tb_error_t *e) {
  if (op->err.code == 0 && tb_error_copy(&op->err, e) != 0)
    tb_error_set(&op->err, e->code ? e->code : TB_EIO, e->category, "%s", tb_strerror(e->code));
}

/* ------------------------------------------------------------ ops */

tb__tc_op_t *tb__tc_op_new(tb__tc_t *tc, tb__tc_kind_t kind, size_t n_reqs) {
  tb__tc_op_t *op = calloc(1, sizeof(*op));
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

static void op_free(tb__tc_op_t *op) {
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

/* A future that was never started (tb__tc_op_new's) is discarded with the op. */
void tb__tc_op_discard(tb__tc_op_t *op) {
  free(op->future);
  op->future = NULL;
  op_free(op);
}


/* Completes the caller's future and releases the op. */
void tb__tc_op_complete(tb__tc_op_t *op, const tb_result_type_t *type, void *result) {
  tb__tc_t *tc = op->tc;
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
  tb__tc_check_closed(tc);
}

static void on_op_alarm(tb__alarm_t *a) {
  tb__tc_op_complete(a->data, NULL, NULL);
}

/* Fails an op that never started, on a later turn. */
void tb__tc_op_fail_later(tb__tc_op_t *op, const tb_error_t *e) {
  tb__tc_keep_first_error(op, e);
  op->alarm.cb = on_op_alarm;
  if (tb__alarm_start(op->tc->rt, &op->alarm, 0) != 0)
    tb__tc_op_complete(op, NULL, NULL);  /* out of memory: at once rather than never */
}


/* ------------------------------------------------------------ encoding */

int tb__tc_encode_chunks(tb__tc_op_t *op, size_t first, const tb_train_datum_t *data,
                         const size_t *bounds, size_t count, int64_t seq0,
                         const char *loss_fn, const tb_loss_fn_config_entry_t *config,
                         size_t n_config, int forward_only) {
  tb__tc_t *tc = op->tc;
  tb__arena_t a;
  tb__arena_init(&a, 0);
  int rc = 0;
  tb__wire_config_entry_t *cfg = tb__arena_calloc(&a, n_config + 1, sizeof(*cfg));
  if (cfg == NULL)
    rc = TB_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n_config; i++) {
    cfg[i].name = config[i].name;
    cfg[i].value = config[i].value;
  }
  for (size_t k = 0; rc == 0 && k < count; k++) {
    tb__tc_req_t *r = &op->reqs[first + k];
    tb__wire_fwdbwd_t w = { 0 };
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

/* ------------------------------------------------------------ close */

static void on_close_alarm(tb__alarm_t *a) {
  tb__tc_t *tc = a->data;
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

void tb__tc_check_closed(tb__tc_t *tc) {
  if (tc->closing != 1 || tc->n_live != 0 || tc->create_f != NULL)
    return;
  tc->closing = 2;
  tb__alarm_init(&tc->close_alarm, on_close_alarm, tc);
  if (tb__alarm_start(tc->rt, &tc->close_alarm, 0) != 0)
    on_close_alarm(&tc->close_alarm);
}

void tb_training_client_close(tb_training_client_t *ptc, tb_training_client_close_cb close_cb) {
  tb__tc_t *tc = tb__tc_usable(ptc);
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
  /* Queued and waiting ops fail on a later turn; started ones are cancelled. */
  tb__tc_op_t *q = tc->queue;
  tc->queue = tc->queue_tail = NULL;
  while (q != NULL) {
    tb__tc_op_t *next = q->next;
    q->next = NULL;
    q->queued = 0;
    q->cancelled = 1;
    tb__tc_op_fail_later(q, &tc->broken_err);
    q = next;
  }
  tb__tc_op_t *w = tc->waiting_model;
  tc->waiting_model = NULL;
  while (w != NULL) {
    tb__tc_op_t *next = w->next;
    w->next = NULL;
    w->cancelled = 1;
    tb__tc_op_fail_later(w, &tc->broken_err);
    w = next;
  }
  /* Ops on the wire: their requests are cancelled, and they fail once
   * every one has stopped. */
  for (tb__tc_op_t *op = tc->live; op != NULL; op = op->live_next) {
    if (op->cancelled || tb__alarm_armed(&op->alarm))
      continue;
    op->cancelled = 1;
    for (size_t i = 0; i < op->n_reqs; i++)
      if (op->reqs[i].f != NULL && !op->reqs[i].done)
        tb_future_cancel(op->reqs[i].f);
  }
  tb__tc_check_closed(tc);
}

/*
 * Operations: the glue between a future and the wire.  An operation sends
 * one API request (with the submission retries), and either decodes its
 * answer directly or, for the asynchronous Tinker endpoints, reads
 * {"request_id"} from it and long-polls that id; the final body goes
 * through the operation's decoder into the future's typed result.
 *
 * The runtime keeps every operation in a list so that closing the client
 * cancels them all; an operation is freed before its future completes, so
 * a future callback may close the client or start new operations.
 */
#include "client/internal.h"

#include <stdlib.h>
#include <string.h>

#include "client/answer.h"
#include "core/json.h"
#include "wire/service.h"

static void unlink_op(tb__client_op_t *op) {
  tb__rt_t *rt = op->rt;
  if (op->prev != NULL)
    op->prev->next = op->next;
  else
    rt->ops = op->next;
  if (op->next != NULL)
    op->next->prev = op->prev;
  op->next = op->prev = NULL;
  rt->n_ops--;
}

static void destroy(tb__client_op_t *op) {
  if (op->phase == 0)
    tb__call_free(&op->call);
  else
    tb__client_poll_free(&op->poll);
  tb__buf_free(&op->body);
  free(op->request_type);
  free(op->path);
  free(op);
}

/* Completes the future with a result (err NULL) or a failure, after the
 * operation is gone. */
static void complete(tb__client_op_t *op, const tb_result_type_t *type, void *result,
                     tb_error_t *err) {
  tb__rt_t *rt = op->rt;
  tb_future_t *f = op->future;
  tb_error_t e = { 0 };
  if (err != NULL) {
    e = *err;
    memset(err, 0, sizeof(*err));
  }
  unlink_op(op);
  destroy(op);
  if (err != NULL)
    tb__client_future_fail(f, &e);
  else
    tb__client_future_resolve(f, type, result);
  tb__rt_check_closed(rt);
}

static void complete_cancelled(tb__client_op_t *op) {
  tb_error_t e = { 0 };
  tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "%s %s: cancelled",
               op->method, op->path);
  if (op->phase == 1 && op->poll.request_id != NULL)
    tb_error_set_request_id(&e, op->poll.request_id);
  complete(op, NULL, NULL, &e);
}

static void decode_and_complete(tb__client_op_t *op, const char *body, size_t len, int proto) {
  if (op->decode == NULL) {
    complete(op, NULL, NULL, NULL);
    return;
  }
  const tb_result_type_t *type = NULL;
  void *result = NULL;
  tb_error_t e = { 0 };
  int rc = op->decode(op, body, len, proto, &type, &result, &e);
  if (rc != 0) {
    if (e.code == 0)
      tb_error_set(&e, rc, TB_CATEGORY_SERVER, "cannot decode the answer: %s",
                   tb_strerror(rc));
    if (op->phase == 1 && op->poll.request_id != NULL && e.request_id == NULL)
      tb_error_set_request_id(&e, op->poll.request_id);
    complete(op, NULL, NULL, &e);
    return;
  }
  complete(op, type, result, NULL);
}

static void on_poll(tb__client_poll_t *p, int status) {
  tb__client_op_t *op = p->data;
  if (op->cancelled) {
    complete_cancelled(op);
    return;
  }
  if (status != 0) {
    complete(op, NULL, NULL, &p->err);
    return;
  }
  decode_and_complete(op, p->result_body, p->result_len, p->result_proto);
}

static void on_call(tb__call_t *call, int status) {
  tb__client_op_t *op = call->data;
  if (op->submitted != NULL)
    op->submitted(op, op->cancelled ? TB_ECANCELED : status);
  if (op->cancelled) {
    complete_cancelled(op);
    return;
  }
  if (status != 0) {
    complete(op, NULL, NULL, &call->err);
    return;
  }
  const tb__http_response_t *res = &call->http->response;
  if (!op->do_poll) {
    decode_and_complete(op, res->body, res->body_len, 0);
    return;
  }
  /* {"request_id": "...", "model_id"?: "..."}: poll that id. */
  tb_error_t e = { 0 };
  tb__answer_t d;
  tb__wire_future_ref_t ref;
  int rc = tb__answer_begin(&d, res->body, res->body_len, &e);
  if (rc == 0)
    rc = tb__wire_future_ref_from_json(&d.jc, d.doc, &ref);
  if (rc != 0) {
    /* no id to poll, whatever the body held */
    tb__answer_refused(rc, &e, TB_EFIELD, call->path);
    e.http_status = res->status;
    tb__answer_end(&d);
    complete(op, NULL, NULL, &e);
    return;
  }
  /* The call is done with: its memory becomes the poll's. */
  uint64_t rtt = uv_now(op->rt->loop) - call->started_;
  char *id = strdup(ref.request_id);
  tb__answer_end(&d);
  tb__call_free(&op->call);
  tb__buf_free(&op->body);  /* sent: a pending future keeps no copy */
  memset(&op->poll, 0, sizeof(op->poll));
  op->phase = 1;
  if (id == NULL) {
    tb_error_set(&e, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
    complete(op, NULL, NULL, &e);
    return;
  }
  op->poll.data = op;
  op->poll.request_type = op->request_type;
  op->poll.accept_proto = op->accept_proto;
  op->poll.submit_rtt_ms = rtt;
  rc = tb__client_poll_start(op->rt, &op->poll, id, on_poll);
  free(id);
  if (rc != 0) {
    tb__client_not_started(&e, rc, "cannot poll");
    complete(op, NULL, NULL, &e);
  }
}

static void op_cancel(tb_future_t *f) {
  tb__client_op_t *op = f->driver_;
  if (op->cancelled)
    return;
  op->cancelled = 1;
  /* Both guarantee their callback on a later turn, which completes. */
  if (op->phase == 0)
    tb__call_cancel(&op->call);
  else
    tb__client_poll_cancel(&op->poll);
}

int tb__client_op_start(tb__rt_t *rt, const tb__client_op_opts_t *opts, tb_future_t **out) {
  if (out == NULL || opts == NULL || opts->path == NULL)
    return TB_EINVAL;
  *out = NULL;
  if (rt->closing)
    return TB_ECLOSING;
  tb__client_op_t *op = calloc(1, sizeof(*op));
  tb_future_t *f = tb__client_future_new(rt->loop);
  if (op == NULL || f == NULL)
    goto nomem;
  op->rt = rt;
  op->future = f;
  op->decode = opts->decode;
  op->decode_data = opts->decode_data;
  op->submitted = opts->submitted;
  op->do_poll = opts->poll;
  op->accept_proto = opts->accept_proto;
  if (opts->request_type != NULL && (op->request_type = strdup(opts->request_type)) == NULL)
    goto nomem;
  if ((op->path = strdup(opts->path)) == NULL)
    goto nomem;
  if (opts->body_len > 0 && tb__buf_append(&op->body, opts->body, opts->body_len) != 0)
    goto nomem;
  op->method = opts->method != NULL ? opts->method : "POST";
  op->call.data = op;
  op->call.method = op->method;
  op->call.path = op->path;
  op->call.body = tb__buf_slice(&op->body);
  op->call.content_type = opts->content_type;
  op->call.max_retries = opts->max_retries;
  op->call.extra = opts->extra;
  op->call.n_extra = opts->n_extra;
  int rc = tb__call_start(rt, &op->call, on_call);
  if (rc != 0) {
    destroy(op);
    free(f);
    return rc;
  }
  tb__client_future_set_driver(f, op_cancel, op);
  op->next = rt->ops;
  if (rt->ops != NULL)
    rt->ops->prev = op;
  rt->ops = op;
  rt->n_ops++;
  *out = f;
  return 0;

nomem:
  if (op != NULL)
    destroy(op);
  free(f);
  return TB_ENOMEM;
}

int tb__client_op_start_json(tb__rt_t *rt, tb__client_op_opts_t *opts, json_t *body,
                             tb_future_t **out) {
  size_t len = 0;
  char *text = body != NULL ? tb__json_dump(body, &len) : NULL;
  json_decref(body);
  if (text == NULL)
    return TB_ENOMEM;
  opts->body = text;
  opts->body_len = len;
  int rc = tb__client_op_start(rt, opts, out);
  opts->body = NULL;
  opts->body_len = 0;
  free(text);
  return rc;
}

int tb__client_not_started(tb_error_t *e, int rc, const char *what) {
  return tb_error_set(e, rc, rc == TB_ECLOSING ? TB_CATEGORY_CANCELLED : TB_CATEGORY_NONE,
                      "%s: %s", what, tb_strerror(rc));
}

void tb__client_op_cancel_all(tb__rt_t *rt) {
  for (tb__client_op_t *op = rt->ops; op != NULL; op = op->next) {
    op->future->cancelled_ = 1;
    op_cancel(op->future);
  }
}

void tb__raw_body_free(void *p) {
  tb__raw_body_t *b = p;
  if (b != NULL)
    free(b->data);
  free(b);
}

int tb__raw_body_keep(const char *body, size_t len, int proto, const tb_result_type_t *t,
                      const tb_result_type_t **type, void **result, tb_error_t *err) {
  tb__raw_body_t *b = malloc(sizeof(*b));
  char *copy = malloc(len);
  if (b == NULL || copy == NULL) {
    free(b);
    free(copy);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  }
  memcpy(copy, body, len);
  *b = (tb__raw_body_t){ copy, len, proto };
  *type = t;
  *result = b;
  return 0;
}

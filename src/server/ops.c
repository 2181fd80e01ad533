/*
 * The life of an op (training.h): made for a request, given its future
 * when accepted, and ended once: resolved with its result or failed with
 * a message, which also counts it in the metrics; and the work of a
 * request that runs off the loop (tb__offload), which the training part
 * waits for before it is freed.  What an op does and when it runs are
 * training.c's and sched.c's.
 */
#include "server/training.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "wire/service.h"

/* ------------------------------------------------------------ ops */

tb__training_t *tb__training_of(tb__http_request_t *req) {
  return tb__sreq(req)->route->data;
}

/* The op's work started: try_again says so from now on. */
static void on_op_start(tb__engine_job_t *job) {
  tb__future_t *f = tb__top_client_future(job->data);
  if (f != NULL)
    tb__future_set_started(f);
}

tb__top_t *tb__top_alloc(tb__training_t *tr, tb__op_type_t type) {
  tb__top_t *op = calloc(1, sizeof(*op));
  if (op == NULL)
    return NULL;
  op->tr = tr;
  op->type = type;
  op->seq = -1;
  if (tb__top_has_checkpoint(op))
    op->sampler_seq = -1;
  op->job.data = op;
  op->job.on_start = on_op_start;
  tb__arena_init(&op->arena, 0);
  op->anext = tr->ops;
  if (tr->ops != NULL)
    tr->ops->aprev = op;
  tr->ops = op;
  tr->n_ops++;
  return op;
}

void tb__top_cancel(tb__top_t *op, const char *why) {
  if (op->type != TB__OP_SAMPLE || op->cancelled)
    return;
  op->cancelled = why;  /* one not submitted yet fails when it would start */
  if (op->job.type == TB_ENGINE_SAMPLE)
    tb__engine_job_cancel(&op->job);
}

tb__top_t *tb__top_new(tb__http_request_t *req, tb__op_type_t type) {
  tb__top_t *op = tb__top_alloc(tb__training_of(req), type);
  if (op == NULL)
    tb__server_respond_error(req, 503, "out of memory");
  return op;
}

int tb__top_accept(tb__http_request_t *req, tb__top_t *op) {
  tb__training_t *tr = op->tr;
  int rc = tb__future_create(&tr->srv->futures, tb__sreq(req)->user, &op->future);
  if (rc == 0)
    op->future->data = op;
  if (rc != 0) {
    tb__server_respond_error(req, 503, "cannot create a future: %s", tb_strerror(rc));
    tb__top_free(op);
  }
  return rc;
}

void tb__top_free(tb__top_t *op) {
  if (op->type == TB__OP_CREATE && op->then != NULL)
    tb__top_free(op->then);
  if (op->future != NULL && op->future->data == op)
    op->future->data = NULL;
  if (op->aprev != NULL)
    op->aprev->anext = op->anext;
  else
    op->tr->ops = op->anext;
  if (op->anext != NULL)
    op->anext->aprev = op->aprev;
  tb__engine_job_cleanup(&op->job);
  tb__arena_free(&op->arena);
  if (tb__top_has_checkpoint(op)) {
    free(op->dir);
    free(op->tinker_path);
  }
  op->tr->n_ops--;
  free(op);
}

void tb__top_fail(tb__top_t *op, tb_category_t category, const char *message) {
  if (op->type == TB__OP_CREATE && op->then != NULL) {
    /* A load that was to follow a create fails with it. */
    tb__top_fail(op->then, category, message);
    op->then = NULL;
  }
  op->tr->n_failed++;
  tb__metrics_op_finished(op, 0);
  if (op->future != NULL)
    tb__future_fail(op->future, category, "%s", message);
  op->future = NULL;  /* the store's now */
  tb__top_free(op);
}

void tb__top_fail_job(tb__top_t *op, int status) {
  tb_category_t cat = op->job.error.category == TB_CATEGORY_USER ? TB_CATEGORY_USER
                                                                 : TB_CATEGORY_SERVER;
  const char *msg = op->job.error.message;
  if (status == TB_ECANCELED && op->cancelled != NULL && !op->tr->closing) {
    /* Stopped because its client is gone: the client's doing. */
    cat = TB_CATEGORY_USER;
    msg = op->cancelled;
  } else if (status == TB_ECANCELED || op->tr->closing) {
    msg = "the server is closing";
  }
  tb__top_fail(op, cat, msg ? msg : tb_strerror(status));
}

void tb__top_resolve_encoded(tb__top_t *op, json_t *v, tb__buf_t *pb, int rc,
                             const char *message) {
  size_t jlen = 0;
  char *json = v != NULL && rc == 0 ? tb__json_dump(v, &jlen) : NULL;
  json_decref(v);
  if (json == NULL) {
    tb__buf_free(pb);
    tb__top_fail(op, TB_CATEGORY_SERVER, message);
    return;
  }
  op->tr->n_done++;
  tb__metrics_op_finished(op, 1);
  tb__future_resolve(op->future, json, jlen, pb->base, pb->len);
  op->future = NULL;  /* the store's now */
  tb__top_free(op);
}

void tb__top_resolve_json(tb__top_t *op, json_t *v) {
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
  tb__metrics_op_finished(op, 1);
  tb__future_resolve(op->future, json, len, NULL, 0);
  op->future = NULL;  /* the store's now */
  tb__top_free(op);
}

void tb__respond_future(tb__http_request_t *req, const char *request_id,
                        const char *model_id) {
  json_t *v = tb__wire_future_ref_to_json(&(tb__wire_future_ref_t){ request_id, model_id });
  if (v == NULL) {
    tb__server_respond_error(req, 500, "out of memory");
    return;
  }
  tb__server_respond_jsonv(req, 200, v);
  json_decref(v);
}

/* The future the client of a create polls: its own, or that of the load
 * of create-via-load; NULL for the implicit creates of the Tinkerbell
 * dialect, whose client polls the operation that caused them. */
tb__future_t *tb__top_client_future(tb__top_t *op) {
  if (op->future != NULL)
    return op->future;
  return op->type == TB__OP_CREATE && op->then != NULL ? op->then->future : NULL;
}

/* ------------------------------------------------------------ off the loop */

void tb__training_fs_done(tb__training_t *tr) {
  if (--tr->n_fs == 0 && tr->engine_closed)
    tr->idle(tr);
}

static void offload_work(uv_work_t *w) {
  tb__offload_t *o = w->data;
  o->run(o);
}

static void offload_done(uv_work_t *w, int status) {
  (void)status;  /* never cancelled */
  tb__offload_t *o = w->data;
  tb__training_t *tr = o->tr;
  o->done(o);
  tb__training_fs_done(tr);
}

void tb__offload(tb__offload_t *o) {
  if (o->req->body.len > TB__OFF_LOOP_BODY) {
    o->work.data = o;
    if (uv_queue_work(o->tr->srv->loop, &o->work, offload_work, offload_done) == 0) {
      o->tr->n_fs++;
      return;
    }
    /* No room off the loop: run here rather than refuse. */
  }
  o->run(o);
  o->done(o);
}

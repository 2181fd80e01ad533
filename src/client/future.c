/*
 * Futures: completion, ownership of results and errors, cancellation, and
 * the blocking waits that run the loop.
 *
 * A future knows nothing of HTTP: the operation that drives it (op.c)
 * registers a cancel function and completes it with tb__client_future_resolve or
 * tb__client_future_fail.  A future the caller released while pending is freed
 * by that completion instead of being called back.
 *
 * Nested waits: a thread-local stack of loop frames records which loops
 * the thread is inside -- running them in tb_future_wait*, or calling one
 * of the library's callbacks for them.  A blocking wait on a loop found in
 * that stack would re-enter uv_run from one of its callbacks, which libuv
 * does not support, so it is refused with TB_ENESTED.
 */
#include "client/internal.h"

#include <stdlib.h>
#include <string.h>

static void free_string(void *s) { free(s); }

const tb_result_type_t tb_result_string = { "string", free_string };

/* ------------------------------------------------------------ loop frames */

static _Thread_local tb__loop_frame_t *frames_;
/* The loop a blocking wait is running on this thread, if any: a future
 * of that loop that completes stops the wait's uv_run, so that a
 * completion in the timer phase does not leave it asleep in the poll
 * phase until some unrelated timer or I/O. */
static _Thread_local uv_loop_t *waiting_;

void tb__loop_enter(tb__loop_frame_t *frame, uv_loop_t *loop) {
  frame->loop = loop;
  frame->next = frames_;
  frames_ = frame;
}

void tb__loop_leave(tb__loop_frame_t *frame) {
  /* Frames nest strictly: the one left is the innermost. */
  frames_ = frame->next;
}

int tb__loop_is_entered(const uv_loop_t *loop) {
  for (const tb__loop_frame_t *f = frames_; f != NULL; f = f->next)
    if (f->loop == loop)
      return 1;
  return 0;
}

/* ------------------------------------------------------------ lifecycle */

tb_future_t *tb__client_future_new(uv_loop_t *loop) {
  tb_future_t *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return NULL;
  f->loop = loop;
  f->state = TB_FUTURE_PENDING;
  return f;
}

void tb__client_future_set_driver(tb_future_t *f, void (*cancel)(tb_future_t *f),
                           void *driver) {
  f->cancel_ = cancel;
  f->driver_ = driver;
}

static void destroy(tb_future_t *f) {
  if (f->result != NULL && f->result_type != NULL && f->result_type->free != NULL)
    f->result_type->free(f->result);
  tb_error_clear(&f->error);
  free(f);
}

static void complete(tb_future_t *f) {
  if (waiting_ == f->loop)
    uv_stop(f->loop);
  f->cancel_ = NULL;
  f->driver_ = NULL;
  if (f->released_) {
    destroy(f);
    return;
  }
  tb_future_cb cb = f->cb_;
  if (cb != NULL) {
    tb__loop_frame_t frame;
    tb__loop_enter(&frame, f->loop);
    cb(f, f->status);  /* may free f */
    tb__loop_leave(&frame);
  }
}

void tb__client_future_resolve(tb_future_t *f, const tb_result_type_t *type, void *result) {
  f->state = TB_FUTURE_DONE;
  f->status = 0;
  f->result_type = type;
  f->result = result;
  complete(f);
}

void tb__client_future_fail(tb_future_t *f, tb_error_t *err) {
  f->state = TB_FUTURE_FAILED;
  f->error = *err;
  memset(err, 0, sizeof(*err));
  if (f->error.code >= 0)  /* a failure always has a negative code */
    f->error.code = TB_EIO;
  f->status = f->error.code;
  complete(f);
}

int tb_future_set_callback(tb_future_t *f, tb_future_cb cb) {
  if (f == NULL)
    return TB_EINVAL;
  if (f->state != TB_FUTURE_PENDING)
    return TB_EBUSY;
  f->cb_ = cb;
  return 0;
}

int tb_future_is_done(const tb_future_t *f) {
  return f != NULL && f->state != TB_FUTURE_PENDING;
}

void *tb_future_result(const tb_future_t *f, const tb_result_type_t *type) {
  if (f == NULL || f->state != TB_FUTURE_DONE || f->result_type != type)
    return NULL;
  return f->result;
}

void *tb_future_take(tb_future_t *f, const tb_result_type_t *type) {
  void *r = tb_future_result(f, type);
  if (r != NULL) {
    f->result = NULL;
    f->result_type = NULL;
  }
  return r;
}

int tb_future_cancel(tb_future_t *f) {
  if (f == NULL)
    return TB_EINVAL;
  if (f->state != TB_FUTURE_PENDING || f->cancelled_ || f->cancel_ == NULL)
    return TB_EBUSY;
  f->cancelled_ = 1;
  f->cancel_(f);
  return 0;
}

void tb_future_free(tb_future_t *f) {
  if (f == NULL)
    return;
  if (f->state == TB_FUTURE_PENDING) {
    /* The driver still points at f: it frees f when it completes it. */
    f->released_ = 1;
    f->cb_ = NULL;
    if (!f->cancelled_ && f->cancel_ != NULL) {
      f->cancelled_ = 1;
      f->cancel_(f);
    }
    return;
  }
  destroy(f);
}

/* ------------------------------------------------------------ waiting */

typedef struct {
  uv_timer_t timer;
  int fired;
  int closed;
} wait_timer_t;

static void on_wait_timer(uv_timer_t *t) {
  ((wait_timer_t *)t->data)->fired = 1;
}

static void on_wait_timer_closed(uv_handle_t *h) {
  ((wait_timer_t *)h->data)->closed = 1;
}

static int all_done(tb_future_t *const *fs, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (fs[i]->state == TB_FUTURE_PENDING)
      return 0;
  return 1;
}

/* Runs the loop until every future completed or the timer fired.  Returns
 * 0, TB_ETIMEDOUT, or TB_EIO when the loop ran dry with futures pending. */
static int run_until(uv_loop_t *loop, tb_future_t *const *fs, size_t n,
                     uint64_t timeout_ms) {
  wait_timer_t wt = { .fired = 0, .closed = 0 };
  int have_timer = 0, rc = 0;
  if (timeout_ms > 0 && !all_done(fs, n)) {
    if (uv_timer_init(loop, &wt.timer) != 0)
      return TB_ENOMEM;
    wt.timer.data = &wt;
    uv_timer_start(&wt.timer, on_wait_timer, timeout_ms, 0);
    have_timer = 1;
  }
  tb__loop_frame_t frame;
  tb__loop_enter(&frame, loop);
  uv_loop_t *outer = waiting_;
  waiting_ = loop;
  while (!all_done(fs, n)) {
    if (wt.fired) {
      rc = TB_ETIMEDOUT;
      break;
    }
    if (uv_run(loop, UV_RUN_ONCE) == 0 && !all_done(fs, n) && !wt.fired) {
      /* Nothing on the loop can complete the futures any more. */
      rc = TB_EIO;
      break;
    }
  }
  if (have_timer) {
    uv_close((uv_handle_t *)&wt.timer, on_wait_timer_closed);
    while (!wt.closed)
      uv_run(loop, UV_RUN_ONCE);
  }
  waiting_ = outer;
  tb__loop_leave(&frame);
  return rc;
}

int tb_future_wait(tb_future_t *f, uint64_t timeout_ms) {
  if (f == NULL)
    return TB_EINVAL;
  if (f->state == TB_FUTURE_PENDING) {
    if (tb__loop_is_entered(f->loop))
      return TB_ENESTED;
    int rc = run_until(f->loop, &f, 1, timeout_ms);
    if (f->state == TB_FUTURE_PENDING)
      return rc != 0 ? rc : TB_EIO;
  }
  return f->status;
}

int tb_future_wait_many(tb_future_t *const *fs, size_t n, uint64_t timeout_ms,
                        int *statuses) {
  if (n == 0)
    return 0;
  if (fs == NULL)
    return TB_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (fs[i] == NULL || fs[i]->loop != fs[0]->loop)
      return TB_EINVAL;
  int why = TB_ETIMEDOUT;  /* what a future still pending is reported as */
  if (!all_done(fs, n)) {
    if (tb__loop_is_entered(fs[0]->loop))
      return TB_ENESTED;
    int r = run_until(fs[0]->loop, fs, n, timeout_ms);
    if (r != 0)
      why = r;
  }
  int rc = 0, pending = 0;
  for (size_t i = 0; i < n; i++) {
    int s = fs[i]->state == TB_FUTURE_PENDING ? why : fs[i]->status;
    if (statuses != NULL)
      statuses[i] = s;
    if (fs[i]->state == TB_FUTURE_PENDING)
      pending = 1;
    else if (s != 0 && rc == 0)
      rc = s;
  }
  return pending ? why : rc;
}

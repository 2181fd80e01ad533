/*
 * Futures: the result of every network operation of the client runtime.
 *
 * An operation (tb_service_client_get_server_capabilities, the training and
 * sampling calls, ...) returns a tb_future_t at once; the work runs on the
 * loop the client was made on, and the future completes on that loop:
 *
 *   tb_future_t *f;
 *   tb_service_client_get_server_capabilities(&sc, &f);
 *   f->data = app;
 *   tb_future_set_callback(f, on_caps);      // runs on the loop, later
 *
 *   static void on_caps(tb_future_t *f, int status) {
 *     if (status == 0) {
 *       const tb_server_capabilities_t *caps =
 *           tb_future_result(f, &tb_result_server_capabilities);
 *       ...
 *     } else {
 *       fprintf(stderr, "%s\n", tb_error_message(&f->error));
 *     }
 *     tb_future_free(f);                     // allowed inside the callback
 *   }
 *
 * or, from code that is not itself running inside a callback of the loop:
 *
 *   int rc = tb_future_wait(f, 30000);       // runs the loop until done
 *
 * Ownership, in one place:
 *   - The caller owns the future it receives and releases it exactly once
 *     with tb_future_free(), done or not (a pending future is cancelled
 *     first and its callback then never runs).
 *   - The future owns its result.  tb_future_result() lends it (valid until
 *     tb_future_free); tb_future_take() hands it over, after which the
 *     caller frees it with the free function of its type (type->free, or the
 *     type's own tb_xxx_free named next to the type).
 *   - A failed future owns its f->error; tb_future_free clears it.  Copy it
 *     with tb_error_copy() to keep it longer.
 *
 * Every future completes exactly once: done (status 0) or failed (a
 * negative code, with f->error telling code, category, HTTP status, the
 * server's message and the request id).  Completion never happens inside
 * the call that created the future, nor inside tb_future_cancel().
 *
 * Futures belong to one loop and one thread, like every libuv object.
 */
#ifndef TINKERBELL_FUTURE_H
#define TINKERBELL_FUTURE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tb_future_s tb_future_t;

/* Runs once, on the loop, when the future completes: status is 0 (done) or
 * the failure's code (the same as f->error.code). */
typedef void (*tb_future_cb)(tb_future_t *f, int status);

/* What a result is.  Each operation documents the type of its result, for
 * example tb_result_server_capabilities.  Types are compared by address. */
typedef struct tb_result_type_s {
  const char *name;              /* "server_capabilities", ... */
  void (*free)(void *result);    /* releases a result of this type */
} tb_result_type_t;

/* A result that is a NUL-terminated string allocated with malloc (a session
 * id, a path); released with free(). */
TB_EXTERN extern const tb_result_type_t tb_result_string;

typedef enum {
  TB_FUTURE_PENDING = 0,
  TB_FUTURE_DONE,
  TB_FUTURE_FAILED
} tb_future_state_t;

struct tb_future_s {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *loop;
  tb_future_state_t state;
  int status;                         /* 0, or the failure's code */
  tb_error_t error;                   /* set when failed */
  const tb_result_type_t *result_type; /* set when done; NULL for none */
  void *result;                       /* owned by the future (see above) */
  /* private */
  tb_future_cb cb_;
  void (*cancel_)(tb_future_t *f);    /* the operation that drives it */
  void *driver_;
  unsigned released_ : 1;             /* tb_future_free while pending */
  unsigned cancelled_ : 1;
};

/* Sets the completion callback (replacing an earlier one; NULL removes
 * it).  Returns 0, TB_EINVAL (f is NULL) or TB_EBUSY when f has already
 * completed: the callback would never run then, so act on f->status
 * directly.  Since no future completes inside the call that made it,
 * setting the callback right after that call always succeeds. */
TB_EXTERN int tb_future_set_callback(tb_future_t *f, tb_future_cb cb);

/* 1 when f completed (done or failed), 0 while pending. */
TB_EXTERN int tb_future_is_done(const tb_future_t *f);

/* The result of a done future, when it is of the given type; NULL when f is
 * pending, failed, has no result, or holds another type.  Borrowed: valid
 * until tb_future_free(f) or tb_future_take(f). */
TB_EXTERN void *tb_future_result(const tb_future_t *f, const tb_result_type_t *type);

/* Like tb_future_result, but hands the result to the caller, who frees it
 * with type->free (or the type's tb_xxx_free).  The future then holds no
 * result.  NULL under the same conditions as tb_future_result. */
TB_EXTERN void *tb_future_take(tb_future_t *f, const tb_result_type_t *type);

/* Runs f's loop until f completes or timeout_ms passed (0: no limit).
 * Returns 0 when f is done, f's failure code when it failed, TB_ETIMEDOUT
 * when the wait ran out while f is still pending (f goes on; cancel or
 * free it, or wait again), TB_ENESTED when called from inside a callback
 * run by that loop (a nested uv_run would re-enter the callbacks that are
 * running; use tb_future_set_callback there), TB_EINVAL for a NULL future,
 * TB_EIO when the loop has nothing left that could complete f.  The wait's
 * timeout is independent of the operation's own deadlines (the poll
 * deadline and each HTTP request's timeout, see tb_client_config_t).
 *
 * TB_ENESTED is detected for every callback the library runs (future
 * callbacks, observers, telemetry hooks, close callbacks) and for any
 * callback while the loop is run by tb_future_wait*; a host that calls it
 * from a callback of its own handle under its own uv_run is not detected. */
TB_EXTERN int tb_future_wait(tb_future_t *f, uint64_t timeout_ms);

/* Waits for n futures under one overall deadline (timeout_ms from now, 0:
 * no limit), never stopping early because one failed.  statuses (may be
 * NULL) receives, in input order, each future's outcome: 0, its failure
 * code, or TB_ETIMEDOUT for a future still pending at the deadline.
 * Returns 0 when every future is done, TB_ETIMEDOUT when the deadline
 * passed with some pending (TB_EIO when the loop had nothing left that
 * could complete them; the pending ones get that code in statuses too),
 * otherwise the code of the first failed future in input order;
 * TB_ENESTED and TB_EINVAL (a NULL entry, futures of several loops) as
 * tb_future_wait, with statuses untouched. */
TB_EXTERN int tb_future_wait_many(tb_future_t *const *futures, size_t n,
                                  uint64_t timeout_ms, int *statuses);

/* Asks the operation behind f to stop: its HTTP request is aborted, its
 * timers stopped, and f fails with TB_ECANCELED (category cancelled) on a
 * later loop turn -- its callback then runs as for any failure.  Returns
 * 0, or TB_EBUSY when f has already completed or is being cancelled,
 * TB_EINVAL for NULL.  What the server already accepted is not undone. */
TB_EXTERN int tb_future_cancel(tb_future_t *f);

/* Releases f and what it owns (result, error).  A pending f is cancelled
 * and released once its operation has stopped; its callback never runs.
 * NULL is a no-op.  Allowed inside f's own callback. */
TB_EXTERN void tb_future_free(tb_future_t *f);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_FUTURE_H */

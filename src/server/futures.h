/*
 * The futures store: every asynchronous request gets a future with an
 * unguessable id ("req-" + 32 hex digits) that belongs to one user.  A
 * future is pending until the training part resolves it with an encoded
 * result or fails it; until then it reports a queue state, when its job
 * started (started_at, null while queued) and how many jobs are ahead of
 * it (queue_position, through the training part's position callback).
 *
 * Lifetime of a finished future:
 *   - unretrieved, it expires result_ttl_ms after it finished;
 *   - once delivered (answered to a client the first time), it stays
 *     retrievable for grace_ms more, so that a client whose poll timed out
 *     on its side while the answer was on its way still gets it;
 *   - when the bytes held by results pass max_bytes, delivered results go
 *     first (oldest delivery first), then the oldest undelivered ones.
 * An expired future leaves a tombstone for tombstone_ms (and at most
 * TB__FUTURES_MAX_TOMBSTONES of them), so that a late poll is told 410
 * Gone rather than 404.  Pending futures never expire: the training part
 * holds them until it resolves or fails them.
 *
 * Waiters: anything that wants to know when a future finishes (a held
 * long poll, a synchronous route waiting for its job) links a
 * tb__fwaiter_t to it; when the future finishes, each waiter is unlinked
 * and its callback runs.  When the store closes, waiters of futures still
 * pending are called with the future pending: they must answer anyway.
 *
 * Results are reference-counted because an answer sends them by reference
 * while the store may evict the future before the write ends.
 *
 * Timers: one for the long-poll deadlines (every held poll waits the same
 * long_poll_ms, so a FIFO list is sorted by deadline) and one sweep timer
 * for expiry, both unref'd so that the store alone keeps no loop alive.
 */
#ifndef TB_SERVER_FUTURES_H
#define TB_SERVER_FUTURES_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/idmap.h"
#include "server/auth.h"
#include "server/idgen.h"
#include "tinkerbell/error.h"

#define TB__FUTURE_ID_MAX 40            /* "req-" + 32 hex + NUL, rounded */
#define TB__FUTURES_MAX_TOMBSTONES 100000

typedef enum {
  TB__FUTURE_PENDING = 0,
  TB__FUTURE_DONE,
  TB__FUTURE_FAILED
} tb__future_state_t;

typedef enum {
  TB__QUEUE_ACTIVE = 0,
  TB__QUEUE_PAUSED_CAPACITY,
  TB__QUEUE_PAUSED_RATE_LIMIT
} tb__queue_state_t;

/* An encoded result in one or both forms.  The buffers are malloc'd and
 * owned by the result, which is freed when its last reference goes. */
typedef struct tb__result_s {
  unsigned refs;
  char *json;           /* application/json, or NULL */
  size_t json_len;
  char *proto;          /* application/x-protobuf, or NULL */
  size_t proto_len;
} tb__result_t;

typedef struct tb__future_s tb__future_t;
typedef struct tb__futures_s tb__futures_t;
typedef struct tb__fwaiter_s tb__fwaiter_t;

typedef void (*tb__fwaiter_cb)(tb__fwaiter_t *w, tb__future_t *f);

struct tb__fwaiter_s {
  /* public */
  void *data;
  /* private */
  tb__fwaiter_cb cb;
  tb__future_t *future;
  tb__fwaiter_t *next, *prev;
};

struct tb__future_s {
  /* public */
  void *data;                      /* the training part's */
  /* read-only */
  char id[TB__FUTURE_ID_MAX];
  size_t id_len;
  const tb__user_t *owner;
  tb__future_state_t state;
  tb__queue_state_t queue_state;
  char *queue_reason;              /* NULL or malloc'd */
  tb__result_t *result;            /* DONE */
  tb_category_t category;          /* FAILED: user or server */
  char *message;                   /* FAILED */
  uint64_t created_ms, finished_ms, delivered_ms;  /* loop times; 0: not yet */
  uint64_t started_ms;             /* loop time its job started; 0: queued */
  double started_wall;             /* the same, seconds since the epoch */
  /* private */
  tb__futures_t *store;
  size_t bytes;                    /* counted against max_bytes */
  tb__fwaiter_t *waiters;
  tb__idmap_link_t link;           /* in the store's by_id */
  tb__future_t *lnext, *lprev;     /* the undelivered or delivered list */
};

typedef struct tb__tombstone_s tb__tombstone_t;

typedef struct tb__futures_opts_s {
  uint64_t long_poll_ms;
  uint64_t grace_ms;
  uint64_t ttl_ms;
  uint64_t tombstone_ms;
  size_t max_bytes;
  /* Optional: rewrites a failure's message before it is kept (the server
   * replaces its paths by the user's names for them); returns a malloc'd
   * string, or NULL to keep the message as it is. */
  char *(*rewrite_message)(void *data, const char *msg);
  void *rewrite_data;
} tb__futures_opts_t;

typedef struct tb__poll_s tb__poll_t;
typedef void (*tb__futures_close_cb)(tb__futures_t *fs);
/* How many jobs are ahead of pending f's (the training part knows). */
typedef size_t (*tb__futures_position_fn)(const tb__future_t *f);

struct tb__futures_s {
  /* public */
  void *data;
  tb__futures_position_fn position;  /* optional: queue_position of try_again */
  /* read-only */
  uv_loop_t *loop;
  tb__futures_opts_t opts;
  size_t n_pending, n_finished;    /* futures in the table */
  size_t bytes;                    /* held by finished futures */
  size_t n_polls;                  /* long polls held now */
  size_t n_queue_state[3];         /* pending futures by the queue state
                                      they report (tb__queue_state_t) */
  uint64_t n_created, n_expired, n_evicted, n_try_again;
  /* private */
  tb__idgen_t ids;
  tb__idmap_t by_id;               /* every future, pending or finished */
  struct { tb__future_t *head, *tail; } undelivered, delivered;
  tb__idmap_t tombs_by_id;
  size_t n_tombstones;
  tb__tombstone_t *thead, *ttail;  /* oldest first */
  tb__poll_t *phead, *ptail;       /* held polls, by deadline */
  uv_timer_t poll_timer;
  uv_timer_t sweep_timer;
  uint64_t sweep_due;              /* 0: not armed */
  int closing;
  int open_handles;
  tb__futures_close_cb close_cb;
};

int tb__futures_init(uv_loop_t *loop, tb__futures_t *fs, const tb__futures_opts_t *opts);
/* Answers every held poll (try_again), calls every other waiter with its
 * future pending, closes the timers and frees everything; close_cb runs
 * once the handles are closed. */
void tb__futures_close(tb__futures_t *fs, tb__futures_close_cb close_cb);

/* --- the API of the training part ------------------------------------ */

/* A new pending future of user owner, queue state active.  Its id is in
 * (*out)->id.  Returns 0, TB_ECLOSING or TB_ENOMEM. */
int tb__future_create(tb__futures_t *fs, const tb__user_t *owner, tb__future_t **out);
/* Updates what try_again reports; reason may be NULL. */
int tb__future_set_queue_state(tb__future_t *f, tb__queue_state_t state,
                               const char *reason);
/* Records that f's job started running now (started_at of try_again). */
void tb__future_set_started(tb__future_t *f);
/* Finishes f with a result (JSON and/or protobuf).  Takes the buffers
 * (malloc'd) in every case, also on TB_ENOMEM (f then fails with category
 * server).  Every waiter is answered.  Afterwards f belongs to the
 * store, which may expire it at any time: do not keep the pointer. */
int tb__future_resolve(tb__future_t *f, char *json, size_t json_len, char *proto,
                       size_t proto_len);
/* Finishes f as failed with category user or server and a message. */
void tb__future_fail(tb__future_t *f, tb_category_t category, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Counts f as delivered (the grace period starts).  Retrieval does it;
 * a synchronous route that answers the result itself calls it. */
void tb__future_mark_delivered(tb__future_t *f);

/* Links w to pending f: cb runs once when f finishes or the store
 * closes. */
void tb__future_wait(tb__future_t *f, tb__fwaiter_t *w, tb__fwaiter_cb cb);
/* Unlinks a waiter whose callback has not run (a no-op otherwise). */
void tb__future_unwait(tb__fwaiter_t *w);

/* --- lookup ----------------------------------------------------------- */

typedef enum {
  TB__LOOKUP_FOUND = 0,
  TB__LOOKUP_UNKNOWN,    /* never existed, or another user's */
  TB__LOOKUP_EXPIRED     /* this user's, expired: 410 */
} tb__lookup_t;

tb__lookup_t tb__futures_find(tb__futures_t *fs, const tb__user_t *user,
                              tb_slice_t id, tb__future_t **out);

void tb__result_ref(tb__result_t *r);
void tb__result_unref(tb__result_t *r);

const char *tb__queue_state_name(tb__queue_state_t s);

/* --- the retrieve_future routes (futures_routes.c) --------------------- */

/* POST /api/v1/retrieve_future and POST /retrieve_future. */
void tb__futures_route_tinker(tb__http_request_t *req);
void tb__futures_route_tinkerbell(tb__http_request_t *req);
/* Answers status with a failed future's {"error", "category"} (and, with
 * with_detail, the Tinkerbell dialect's "detail": "Job failed: ..."),
 * whatever bytes its message holds. */
void tb__futures_respond_failure(tb__http_request_t *req, int status, const tb__future_t *f,
                                 int with_detail);

/* The long-poll timer's callback (futures_routes.c). */
void tb__futures_poll_timeout(uv_timer_t *t);

/* Runs the sweep now (tests call it after moving time forward). */
void tb__futures_sweep(tb__futures_t *fs);

#endif /* TB_SERVER_FUTURES_H */

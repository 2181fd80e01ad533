/*
 * The server's persistent store: a SQLite database in data_dir
 * (<data_dir>/tinkerbell.db, WAL mode) of sessions, training runs,
 * checkpoints and sampling sessions, so that a restarted server still
 * lists what earlier ones made and still finds who owns a checkpoint.
 *
 * Threads: the database connection is used only from threadpool work
 * items (uv_queue_work), one at a time.  Every call that reaches the
 * database becomes an op in a FIFO on the loop side; the next op is
 * queued to the threadpool only after the previous one's after-work
 * callback ran, so one connection never sees two threads at once and
 * writes keep the order in which the loop issued them.  Results come back
 * in the op's done callback, on the loop.  File work that belongs with a
 * checkpoint (its size, removing it, packing it into a tar) runs in the
 * same work items.
 *
 * What the loop keeps in memory: the owner of every training run and the
 * set of public checkpoints (read at open, kept current by the hooks), so
 * that load_weights and create_sampling_session can check a tinker://
 * path without waiting for the database.  Until the database has been
 * read at open, a path only it can vouch for holds its request
 * (tb__store_defer), which runs again once it is read.
 *
 * At open the sessions of earlier runs of the server are restored into
 * the sessions table in memory (sessions.h): those that had expired stay
 * expired, those still live when the server stopped come back live with a
 * fresh heartbeat, each with its training runs and sampling sessions.
 *
 * Checkpoints with a ttl are deleted (files and row) by a sweep on an
 * unreferenced timer armed for the next expiry, so it never keeps the
 * loop alive.
 *
 * Non-goals: several server processes sharing one database; migrations
 * beyond the schema version this file creates.
 */
#ifndef TB_SERVER_STORE_H
#define TB_SERVER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>
#include <uv.h>

#include "core/buf.h"
#include "http/server.h"
#include "server/auth.h"
#include "server/sessions.h"

#define TB__STORE_DB_NAME "tinkerbell.db"

typedef struct tb__store_s tb__store_t;
typedef struct tb__store_op_s tb__store_op_t;
typedef struct tb__server_s tb__server_t;

/* Runs on a threadpool thread with the open connection (NULL when the
 * database could not be opened; the op then reports that).  Touches only
 * the op and the database. */
typedef void (*tb__store_work_cb)(tb__store_op_t *op, sqlite3 *db);
/* Runs on the loop after the work; status is 0 or a libuv error of the
 * threadpool (UV_ECANCELED).  Frees the op. */
typedef void (*tb__store_done_cb)(tb__store_op_t *op, int status);

struct tb__store_op_s {
  /* public */
  void *data;
  tb__store_t *store;
  tb__store_work_cb work;
  tb__store_done_cb done;
  /* private */
  uv_work_t req;
  tb__store_op_t *next;
};

/* Opens the store of srv (srv->opts.data_dir must be set): the database
 * is opened, its schema made and its contents read on the threadpool; the
 * sessions are restored on the loop once that is done.  Returns 0 or
 * TB_ENOMEM; a database that cannot be opened is reported in the log and
 * by every route that needs it (503).  resume runs the requests
 * tb__store_defer held again once the contents are read (the server's
 * dispatch, which answers 503 while it closes). */
int tb__store_open(tb__server_t *srv, tb__http_handler_cb resume, tb__store_t **out);
/* Closes after the ops already queued ran; cb runs on the loop (never
 * from inside this call), then the store's memory is gone. */
void tb__store_close(tb__store_t *st, void (*cb)(void *data), void *data);

/* Queues op.  Returns 0, or TB_ECLOSING (the store closes; op is not
 * taken and its callbacks never run). */
int tb__store_submit(tb__store_t *st, tb__store_op_t *op);

/* 1 once the contents were read at open, 0 before, -1 when the database
 * could not be opened. */
int tb__store_state(const tb__store_t *st);
/* Why the database could not be opened, or NULL. */
const char *tb__store_error(const tb__store_t *st);
const char *tb__store_data_dir(const tb__store_t *st);

/* Whether u may read the checkpoint at tinker_path of run run_id: 1 when
 * u owns the run or the checkpoint is public, 0 when not, UV_EAGAIN when
 * that depends on what the store is still reading at open (a run this
 * server did not make): see tb__store_defer. */
int tb__store_may_read(const tb__store_t *st, const tb__user_t *u, tb_slice_t run_id,
                       tb_slice_t tinker_path);
/* Keeps req, unanswered, until the store has read the database at open,
 * then runs its route's handler again (the Tinker one).  For a route that
 * got UV_EAGAIN from tb__store_may_read before any side effect.  0 or
 * TB_ENOMEM. */
int tb__store_defer(tb__store_t *st, tb__http_request_t *req);
/* Keeps the in-memory set of public checkpoints current. */
void tb__store_set_public(tb__store_t *st, const char *tinker_path, int is_public);
/* Arms the ttl sweep for expires_at (seconds since the epoch) if that is
 * earlier than what it waits for now. */
void tb__store_sweep_at(tb__store_t *st, double expires_at);
/* Runs the ttl sweep now (tests). */
void tb__store_sweep_now(tb__store_t *st);

/* --- hooks: where runs, checkpoints and sessions come into being -------
 * Each writes in the background; st may be NULL (no data_dir).  A write
 * that fails is logged: the request that caused it already succeeded. */

typedef struct tb__store_run_s {
  const char *id;
  const char *owner;
  const char *session_id;
  const char *base_model;
  int lora_rank;
  uint64_t seed;
  int train_attn, train_mlp, train_unembed;
} tb__store_run_t;

void tb__store_run_created(tb__store_t *st, const tb__store_run_t *run);
/* A request of the run succeeded: last_request_time (written at most
 * about once a second per run). */
void tb__store_run_touched(tb__store_t *st, const char *run_id);
/* An operation failed for a server reason and may have left the run's
 * weights half-updated. */
void tb__store_run_corrupted(tb__store_t *st, const char *run_id);
/* A checkpoint was written at dir under tinker_path
 * ("tinker://<run>/<kind>/<name>").  ttl_seconds <= 0: no expiry.  Its
 * size is read off the loop. */
void tb__store_checkpoint_saved(tb__store_t *st, const char *owner, const char *run_id,
                                const char *tinker_path, const char *dir,
                                int64_t ttl_seconds);
/* store_hooks.c: what a finished job of the training part (a
 * tb__top_t of training.h) means for the database; status is the job's. */
struct tb__top_s;
void tb__store_job_done(const struct tb__top_s *op, int status);
/* sessions.h's on_event, set by tb__store_open. */
void tb__store_session_event(tb__sessions_t *ss, tb__session_t *s, int event,
                             const char *id);

/* --- shared with rest_routes.c and store_files.c ---------------------- */

/* "2026-11-30T09:44:35.123Z" (32 bytes are enough). */
void tb__store_iso_time(double t, char *buf, size_t cap);
/* Removes dir and everything under it.  0 or a negative errno. */
int tb__store_remove_tree(const char *dir);
/* The bytes of the regular files directly in dir, or a negative errno. */
int64_t tb__store_dir_size(const char *dir);
/* Sweeps the leftovers of saves interrupted before `before` (a crash, a
 * kill -9) from every checkpoint directory of data_dir; see
 * tb__ckpt_sweep.  0 or a negative errno when data_dir cannot be read. */
struct timespec;
int tb__store_sweep_leftovers(const char *data_dir, const struct timespec *before,
                              size_t *removed, size_t *restored);
/* A ustar archive of the regular files of dir under the folder name top.
 * 0, or a negative errno / TB_ETOOLARGE; out is reset on failure. */
int tb__store_tar_dir(const char *dir, const char *top, tb__buf_t *out);


#endif /* TB_SERVER_STORE_H */

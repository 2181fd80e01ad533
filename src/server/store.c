/*
 * The persistent store (store.h): the op queue that keeps the database
 * on one threadpool worker at a time, opening and reading the database
 * back at start, the in-memory index of run owners and public
 * checkpoints (a store_index.c table each), the hooks that write runs,
 * checkpoints and sessions, and the ttl sweep.  The SQL of the REST routes is in rest_queries.c, the
 * file work (sizes, removal, tar) in store_files.c.
 */
#include "server/store.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "server/internal.h"
#include "server/store_index.h"

/* Sessions read back at open, newest first; as many as the sessions
 * table keeps expired. */
#define MAX_RESTORED_SESSIONS 10000
/* last_request_time is written at most this often per run. */
#define TOUCH_INTERVAL_MS 1000
/* The sweep looks again at least this often, whatever it waits for. */
#define MAX_SWEEP_DELAY_MS (3600u * 1000u)


struct tb__store_s {
  tb__server_t *srv;
  uv_loop_t *loop;
  char *data_dir;
  char *db_path;
  sqlite3 *db;                    /* used by work items only */
  int state;                      /* 0 opening, 1 ready, -1 failed */
  char *error;
  tb__store_op_t *head, *tail;    /* waiting ops */
  int busy;                       /* an op is on the threadpool */
  tb__sindex_t runs;                   /* run id -> owner */
  tb__sindex_t public_ckpts;           /* tinker paths */
  uv_timer_t sweep;
  double sweep_due;               /* wall time the timer waits for; 0: none */
  int closing;
  int db_closed;
  tb__store_op_t close_op;        /* the last op: closes the connection */
  struct deferred_s *deferred;    /* requests run again once read */
  tb__http_handler_cb resume;     /* runs a deferred request again */
  struct deferred_s **deferred_tail;
  void (*close_cb)(void *data);
  void *close_data;
};

/* A request whose answer depends on what the store reads at open; its
 * route runs again once that is done.  Lives in the request's arena. */
typedef struct deferred_s {
  tb__http_request_t *req;
  struct deferred_s *next;
} deferred_t;

/* ------------------------------------------------------------ index */

int tb__store_may_read(const tb__store_t *st, const tb__user_t *u, tb_slice_t run_id,
                       tb_slice_t tinker_path) {
  if (st == NULL || st->state < 0)
    return 0;
  const tb__sindex_entry_t *e = tb__sindex_get(&st->runs, run_id);
  if ((e != NULL && e->owner != NULL && strcmp(e->owner, u->name) == 0) ||
      tb__sindex_get(&st->public_ckpts, tinker_path) != NULL)
    return 1;
  /* While the database is read, only a run made by this server (which
   * no earlier one can have published) has a known answer. */
  return st->state == 0 && (e == NULL || !e->fresh) ? UV_EAGAIN : 0;
}

void tb__store_set_public(tb__store_t *st, const char *tinker_path, int is_public) {
  if (st == NULL)
    return;
  if (is_public) {
    if (tb__sindex_put(&st->public_ckpts, tinker_path, NULL) == NULL)
      tb__warn("out of memory: %s is public but not known as such until a restart",
              tinker_path);
  } else {
    tb__sindex_del(&st->public_ckpts, tinker_path);
  }
}

/* ------------------------------------------------------------ queue */

static void pump(tb__store_t *st);
static void finish_close(tb__store_t *st);

static void op_work(uv_work_t *w) {
  tb__store_op_t *op = w->data;
  op->work(op, op->store->db);
}

static void op_after(uv_work_t *w, int status) {
  tb__store_op_t *op = w->data;
  tb__store_t *st = op->store;
  st->busy = 0;
  op->done(op, status);
  pump(st);
}

static void pump(tb__store_t *st) {
  while (!st->busy && st->head != NULL) {
    tb__store_op_t *op = st->head;
    st->head = op->next;
    if (st->head == NULL)
      st->tail = NULL;
    op->req.data = op;
    int rc = uv_queue_work(st->loop, &op->req, op_work, op_after);
    if (rc == 0) {
      st->busy = 1;
      return;
    }
    op->done(op, rc);  /* never happens with a valid loop and callbacks */
  }
  if (!st->busy && st->head == NULL && st->closing && !st->db_closed)
    finish_close(st);
}

static void enqueue(tb__store_t *st, tb__store_op_t *op) {
  op->store = st;
  op->next = NULL;
  if (st->tail)
    st->tail->next = op;
  else
    st->head = op;
  st->tail = op;
  pump(st);
}

int tb__store_submit(tb__store_t *st, tb__store_op_t *op) {
  if (st == NULL || st->closing)
    return TB_ECLOSING;
  enqueue(st, op);
  return 0;
}

int tb__store_state(const tb__store_t *st) {
  return st ? st->state : -1;
}

const char *tb__store_error(const tb__store_t *st) {
  return st ? st->error : "no data_dir";
}

const char *tb__store_data_dir(const tb__store_t *st) {
  return st->data_dir;
}

int tb__store_defer(tb__store_t *st, tb__http_request_t *req) {
  deferred_t *d = tb__arena_alloc(&req->arena, sizeof(*d));
  if (d == NULL)
    return TB_ENOMEM;
  d->req = req;
  d->next = NULL;
  if (st->deferred_tail == NULL)
    st->deferred_tail = &st->deferred;
  *st->deferred_tail = d;
  st->deferred_tail = &d->next;
  return 0;
}

/* Runs the deferred requests' routes again, now that the store knows. */
static void run_deferred(tb__store_t *st) {
  deferred_t *d = st->deferred;
  st->deferred = NULL;
  st->deferred_tail = NULL;
  while (d != NULL) {
    deferred_t *next = d->next;  /* d goes with the request's arena */
    st->resume(d->req);
    d = next;
  }
}

/* ------------------------------------------------------------ helpers */

void tb__store_iso_time(double t, char *buf, size_t cap) {
  time_t s = (time_t)floor(t);
  int ms = (int)((t - (double)s) * 1000.0);
  if (ms < 0 || ms > 999)
    ms = 0;
  struct tm tm;
  gmtime_r(&s, &tm);
  char head[32];
  strftime(head, sizeof(head), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf, cap, "%s.%03dZ", head, ms);
}

/* sqlite3_prepare_v2 + binds + step, for statements without rows.  types
 * is one letter per argument: 's' text (NULL binds NULL), 'i' int64, 'd'
 * double, 'n' a double where NAN binds NULL. */
static int exec_args(sqlite3 *db, const char *sql, const char *types, ...) {
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
  va_list ap;
  va_start(ap, types);
  for (int i = 0; rc == SQLITE_OK && types[i] != '\0'; i++) {
    switch (types[i]) {
    case 's': {
      const char *s = va_arg(ap, const char *);
      rc = s ? sqlite3_bind_text(stmt, i + 1, s, -1, SQLITE_TRANSIENT)
             : sqlite3_bind_null(stmt, i + 1);
      break;
    }
    case 'i':
      rc = sqlite3_bind_int64(stmt, i + 1, va_arg(ap, int64_t));
      break;
    case 'd':
      rc = sqlite3_bind_double(stmt, i + 1, va_arg(ap, double));
      break;
    case 'n': {
      double d = va_arg(ap, double);
      rc = isnan(d) ? sqlite3_bind_null(stmt, i + 1) : sqlite3_bind_double(stmt, i + 1, d);
      break;
    }
    default:
      rc = SQLITE_MISUSE;
    }
  }
  va_end(ap);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
  }
  if (rc != SQLITE_OK)
    tb__warn("database: %s: %s", sql, sqlite3_errmsg(db));
  sqlite3_finalize(stmt);
  return rc;
}

/* ------------------------------------------------------------ open */

/* sessions.expired: 0 live, 1 expired, 2 closed by its client. */
static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "PRAGMA busy_timeout=5000;"
    "CREATE TABLE IF NOT EXISTS sessions ("
    "  id TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL,"
    "  expired INTEGER NOT NULL DEFAULT 0, tags TEXT, user_metadata TEXT,"
    "  sdk_version TEXT, project_id TEXT);"
    "CREATE TABLE IF NOT EXISTS training_runs ("
    "  id TEXT PRIMARY KEY, owner TEXT NOT NULL, session_id TEXT NOT NULL,"
    "  base_model TEXT NOT NULL, lora_rank INTEGER NOT NULL, seed INTEGER NOT NULL,"
    "  train_attn INTEGER NOT NULL, train_mlp INTEGER NOT NULL,"
    "  train_unembed INTEGER NOT NULL, created REAL NOT NULL,"
    "  last_request REAL NOT NULL, corrupted INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS training_runs_owner ON training_runs(owner, created);"
    "CREATE INDEX IF NOT EXISTS training_runs_session ON training_runs(session_id);"
    "CREATE TABLE IF NOT EXISTS checkpoints ("
    "  run_id TEXT NOT NULL, checkpoint_id TEXT NOT NULL, kind TEXT NOT NULL,"
    "  tinker_path TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, time REAL NOT NULL,"
    "  size_bytes INTEGER, public INTEGER NOT NULL DEFAULT 0, expires_at REAL,"
    "  PRIMARY KEY (run_id, checkpoint_id));"
    "CREATE INDEX IF NOT EXISTS checkpoints_owner ON checkpoints(owner, time);"
    "CREATE INDEX IF NOT EXISTS checkpoints_expiry ON checkpoints(expires_at)"
    "  WHERE expires_at IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS samplers ("
    "  id TEXT PRIMARY KEY, session_id TEXT NOT NULL, owner TEXT NOT NULL,"
    "  created REAL NOT NULL);"
    "CREATE INDEX IF NOT EXISTS samplers_session ON samplers(session_id);"
    "CREATE TABLE IF NOT EXISTS archive_tokens ("
    "  token TEXT PRIMARY KEY, run_id TEXT NOT NULL, checkpoint_id TEXT NOT NULL,"
    "  expires REAL NOT NULL);"
    "PRAGMA user_version=1;";

typedef struct open_op_s {
  tb__store_op_t op;
  char *data_dir;
  char *db_path;
  int failed;
  char error[256];
  json_t *sessions;       /* [{id, owner, created, expired, tags, ...,
                             runs: [id], samplers: [id]}], oldest first */
  json_t *runs;           /* [[id, owner]] */
  json_t *publics;        /* [tinker_path] */
  struct timespec started; /* when the server started: older leftovers of
                              interrupted saves are swept */
  size_t swept, restored;
  double next_expiry;     /* 0: none */
  sqlite3 *db;            /* the connection, handed over in open_done */
} open_op_t;

static json_t *col_json(sqlite3_stmt *s, int i) {
  const char *t = (const char *)sqlite3_column_text(s, i);
  return t ? json_loads(t, 0, NULL) : NULL;
}

static json_t *col_str(sqlite3_stmt *s, int i) {
  const char *t = (const char *)sqlite3_column_text(s, i);
  return t ? json_string(t) : json_null();
}

/* Appends column 0 of every row of sql (bound to id) to arr. */
static int ids_of(sqlite3 *db, const char *sql, const char *id, json_t *arr) {
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
  while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    json_array_append_new(arr, json_string((const char *)sqlite3_column_text(s, 0)));
    rc = SQLITE_OK;
  }
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int read_back(open_op_t *o, sqlite3 *db) {
  o->sessions = json_array();
  o->runs = json_array();
  o->publics = json_array();
  if (!o->sessions || !o->runs || !o->publics)
    return SQLITE_NOMEM;
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(
      db,
      "SELECT id, owner, created, expired, tags, user_metadata, sdk_version, project_id "
      "FROM (SELECT * FROM sessions ORDER BY created DESC LIMIT ?) ORDER BY created ASC",
      -1, &s, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_int(s, 1, MAX_RESTORED_SESSIONS);
  while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *id = (const char *)sqlite3_column_text(s, 0);
    json_t *runs = json_array(), *samplers = json_array();
    json_t *v = json_pack("{s:s, s:s, s:f, s:i, s:o*, s:o*, s:o, s:o, s:o, s:o}", "id", id,
                          "owner", (const char *)sqlite3_column_text(s, 1), "created",
                          sqlite3_column_double(s, 2), "expired", sqlite3_column_int(s, 3),
                          "tags", col_json(s, 4), "user_metadata", col_json(s, 5),
                          "sdk_version", col_str(s, 6), "project_id", col_str(s, 7), "runs",
                          runs, "samplers", samplers);
    if (v == NULL || json_array_append_new(o->sessions, v) != 0) {
      rc = SQLITE_NOMEM;
      break;
    }
    rc = ids_of(db, "SELECT id FROM training_runs WHERE session_id = ? ORDER BY created",
                id, runs);
    if (rc == SQLITE_OK)
      rc = ids_of(db, "SELECT id FROM samplers WHERE session_id = ? ORDER BY created", id,
                  samplers);
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE && rc != SQLITE_OK)
    return rc;
  rc = sqlite3_prepare_v2(db, "SELECT id, owner FROM training_runs", -1, &s, NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    json_array_append_new(o->runs, json_pack("[ss]", (const char *)sqlite3_column_text(s, 0),
                                             (const char *)sqlite3_column_text(s, 1)));
    rc = SQLITE_OK;
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE && rc != SQLITE_OK)
    return rc;
  rc = sqlite3_prepare_v2(db, "SELECT tinker_path FROM checkpoints WHERE public = 1", -1, &s,
                          NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    json_array_append_new(o->publics, json_string((const char *)sqlite3_column_text(s, 0)));
    rc = SQLITE_OK;
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE && rc != SQLITE_OK)
    return rc;
  rc = sqlite3_prepare_v2(db, "SELECT MIN(expires_at) FROM checkpoints", -1, &s, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    o->next_expiry = sqlite3_column_type(s, 0) == SQLITE_NULL ? 0 : sqlite3_column_double(s, 0);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void open_work(tb__store_op_t *op, sqlite3 *unused) {
  open_op_t *o = (open_op_t *)op;
  if (mkdir(o->data_dir, 0755) != 0 && errno != EEXIST) {
    snprintf(o->error, sizeof(o->error), "cannot create %s: %s", o->data_dir, strerror(errno));
    o->failed = 1;
    return;
  }
  /* What saves cut short by a crash left; the saves of this server, which
   * may already run, began after `started` and keep theirs. */
  (void)tb__store_sweep_leftovers(o->data_dir, &o->started, &o->swept, &o->restored);
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(o->db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  char *msg = NULL;
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, schema, NULL, NULL, &msg);
  if (rc == SQLITE_OK)
    rc = read_back(o, db);
  if (rc != SQLITE_OK) {
    snprintf(o->error, sizeof(o->error), "cannot open the database %s: %s", o->db_path,
             msg ? msg : db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_free(msg);
    sqlite3_close(db);
    o->failed = 1;
    return;
  }
  o->db = db;
}

static void restore_sessions(tb__store_t *st, json_t *sessions) {
  tb__sessions_t *ss = &st->srv->sessions;
  size_t i, n_restored = 0;
  json_t *v;
  json_array_foreach(sessions, i, v) {
    const char *id = json_string_value(json_object_get(v, "id"));
    tb__user_t *u = tb__auth_user(&st->srv->auth,
                                  json_string_value(json_object_get(v, "owner")));
    if (u == NULL || id == NULL)
      continue;  /* the user is no longer in the keys file */
    json_t *tags = json_object_get(v, "tags"), *meta = json_object_get(v, "user_metadata");
    tb__session_t *s = NULL;
    int rc = tb__session_restore(ss, u, (tb_slice_t){ id, strlen(id) },
                                 json_real_value(json_object_get(v, "created")),
                                 (int)json_integer_value(json_object_get(v, "expired")),
                                 tags ? json_incref(tags) : NULL,
                                 meta ? json_incref(meta) : NULL,
                                 json_string_value(json_object_get(v, "sdk_version")),
                                 json_string_value(json_object_get(v, "project_id")), &s);
    if (rc != 0) {
      if (rc != TB_EEXIST)
        tb__warn("cannot restore session %s: %s", id, tb_strerror(rc));
      continue;
    }
    size_t j;
    json_t *x;
    json_array_foreach(json_object_get(v, "runs"), j, x)
      tb__session_add_training_run(s, json_string_value(x));
    json_array_foreach(json_object_get(v, "samplers"), j, x)
      tb__session_add_sampler(s, json_string_value(x));
    n_restored++;
  }
  if (n_restored > 0)
    tb__info("sessions read back from %s: %zu", st->db_path, n_restored);
}

static void open_done(tb__store_op_t *op, int status) {
  open_op_t *o = (open_op_t *)op;
  tb__store_t *st = op->store;
  if (o->swept > 0 || o->restored > 0)
    tb__info("%s: swept %zu leftovers of interrupted checkpoint saves (%zu earlier "
            "checkpoints put back)", o->data_dir, o->swept + o->restored, o->restored);
  if (status != 0 && !o->failed) {
    snprintf(o->error, sizeof(o->error), "cannot open the database: %s", uv_strerror(status));
    o->failed = 1;
  }
  if (o->failed) {
    st->state = -1;
    st->error = tb__strndup(o->error, strlen(o->error));
    tb__log(TB_LOG_ERROR, "%s; the REST routes answer 503 and nothing is kept", o->error);
  } else {
    /* The next op is queued after this callback: the connection passes
     * from this op's worker to the next one's through the loop. */
    st->db = o->db;
    /* Sampler ids read back must not be written again. */
    tb__session_event_cb on_event = st->srv->sessions.on_event;
    st->srv->sessions.on_event = NULL;
    if (!st->closing)  /* else the sessions table is closing too */
      restore_sessions(st, o->sessions);
    st->srv->sessions.on_event = on_event;
    size_t i;
    json_t *v;
    int ok = 1;
    json_array_foreach(o->runs, i, v)
      ok &= tb__sindex_put(&st->runs, json_string_value(json_array_get(v, 0)),
                      json_string_value(json_array_get(v, 1))) != NULL;
    json_array_foreach(o->publics, i, v)
      ok &= tb__sindex_put(&st->public_ckpts, json_string_value(v), NULL) != NULL;
    if (!ok)
      tb__warn("out of memory reading the index of %s", st->db_path);
    st->state = 1;
    if (o->next_expiry > 0)
      tb__store_sweep_at(st, o->next_expiry);
  }
  json_decref(o->sessions);
  json_decref(o->runs);
  json_decref(o->publics);
  free(o);
  run_deferred(st);
}

static void on_sweep_timer(uv_timer_t *t);

int tb__store_open(tb__server_t *srv, tb__http_handler_cb resume, tb__store_t **out) {
  tb__store_t *st = calloc(1, sizeof(*st));
  open_op_t *o = st ? calloc(1, sizeof(*o)) : NULL;
  if (o == NULL) {
    free(st);
    return TB_ENOMEM;
  }
  st->srv = srv;
  st->resume = resume;
  st->loop = srv->loop;
  st->data_dir = tb__strndup(srv->opts.data_dir, strlen(srv->opts.data_dir));
  st->db_path = tb__asprintf("%s/%s", srv->opts.data_dir, TB__STORE_DB_NAME);
  if (st->data_dir == NULL || st->db_path == NULL) {
    free(st->data_dir);
    free(st->db_path);
    free(st);
    free(o);
    return TB_ENOMEM;
  }
  uv_timer_init(st->loop, &st->sweep);
  st->sweep.data = st;
  uv_unref((uv_handle_t *)&st->sweep);
  o->data_dir = st->data_dir;
  o->db_path = st->db_path;
  clock_gettime(CLOCK_REALTIME, &o->started);
  o->op.work = open_work;
  o->op.done = open_done;
  srv->sessions.on_event = tb__store_session_event;
  enqueue(st, &o->op);
  *out = st;
  return 0;
}

/* ------------------------------------------------------------ close */

static void on_sweep_closed(uv_handle_t *h) {
  tb__store_t *st = h->data;
  tb__sindex_free(&st->runs);
  tb__sindex_free(&st->public_ckpts);
  void (*cb)(void *) = st->close_cb;
  void *data = st->close_data;
  free(st->data_dir);
  free(st->db_path);
  free(st->error);
  free(st);
  if (cb)
    cb(data);
}

static void close_db_work(tb__store_op_t *op, sqlite3 *db) {
  if (db != NULL && sqlite3_close(db) != SQLITE_OK)
    tb__warn("cannot close the database: %s", sqlite3_errmsg(db));
}

static void close_db_done(tb__store_op_t *op, int status) {
  tb__store_t *st = op->store;
  st->db = NULL;
  uv_close((uv_handle_t *)&st->sweep, on_sweep_closed);
}

static void finish_close(tb__store_t *st) {
  st->db_closed = 1;
  st->close_op.work = close_db_work;
  st->close_op.done = close_db_done;
  enqueue(st, &st->close_op);
}

void tb__store_close(tb__store_t *st, void (*cb)(void *data), void *data) {
  if (st->closing)
    return;
  st->closing = 1;
  st->close_cb = cb;
  st->close_data = data;
  if (st->srv->sessions.on_event == tb__store_session_event)
    st->srv->sessions.on_event = NULL;
  uv_timer_stop(&st->sweep);
  /* The close callback must not run from inside this call: when nothing
   * is queued, the final op still goes through the threadpool. */
  pump(st);
}

/* ------------------------------------------------------------ writes */

enum {
  W_SESSION_CREATED = 1,
  W_SESSION_EXPIRED,
  W_SESSION_CLOSED,
  W_SAMPLER,
  W_RUN,
  W_TOUCH,
  W_CORRUPTED,
  W_CHECKPOINT
};

typedef struct write_op_s {
  tb__store_op_t op;
  int kind;
  char *s[7];
  int64_t i[6];
  double d[2];
} write_op_t;

static void write_work(tb__store_op_t *op, sqlite3 *db) {
  write_op_t *w = (write_op_t *)op;
  if (db == NULL)
    return;
  double now = tb__wall_time();
  switch (w->kind) {
  case W_SESSION_CREATED:
    exec_args(db,
              "INSERT OR REPLACE INTO sessions (id, owner, created, expired, tags, "
              "user_metadata, sdk_version, project_id) VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
              "ssdssss", w->s[0], w->s[1], w->d[0], w->s[2], w->s[3], w->s[4], w->s[5]);
    break;
  case W_SESSION_EXPIRED:
    exec_args(db, "UPDATE sessions SET expired = 1 WHERE id = ?", "s", w->s[0]);
    break;
  case W_SESSION_CLOSED:
    exec_args(db, "UPDATE sessions SET expired = 2 WHERE id = ?", "s", w->s[0]);
    break;
  case W_SAMPLER:
    exec_args(db,
              "INSERT OR IGNORE INTO samplers (id, session_id, owner, created) "
              "VALUES (?, ?, ?, ?)",
              "sssd", w->s[0], w->s[1], w->s[2], now);
    break;
  case W_RUN:
    exec_args(db,
              "INSERT OR REPLACE INTO training_runs (id, owner, session_id, base_model, "
              "lora_rank, seed, train_attn, train_mlp, train_unembed, created, last_request, "
              "corrupted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
              "ssssiiiiidd", w->s[0], w->s[1], w->s[2], w->s[3], w->i[0], w->i[1], w->i[2],
              w->i[3], w->i[4], now, now);
    break;
  case W_TOUCH:
    exec_args(db, "UPDATE training_runs SET last_request = ? WHERE id = ?", "ds", w->d[0],
              w->s[0]);
    break;
  case W_CORRUPTED:
    exec_args(db, "UPDATE training_runs SET corrupted = 1, last_request = ? WHERE id = ?",
              "ds", now, w->s[0]);
    break;
  case W_CHECKPOINT: {
    /* s: owner, run, path, checkpoint_id, kind, dir; i[0]: ttl. */
    int64_t size = tb__store_dir_size(w->s[5]);
    double expires = w->i[0] > 0 ? now + (double)w->i[0] : NAN;
    w->d[1] = isnan(expires) ? 0 : expires;
    exec_args(db,
              "INSERT OR REPLACE INTO checkpoints (run_id, checkpoint_id, kind, tinker_path, "
              "owner, time, size_bytes, public, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, "
              "COALESCE((SELECT public FROM checkpoints WHERE tinker_path = ?), 0), ?)",
              "sssssdisn", w->s[1], w->s[3], w->s[4], w->s[2], w->s[0], now,
              size < 0 ? (int64_t)0 : size, w->s[2], expires);
    exec_args(db, "UPDATE training_runs SET last_request = ? WHERE id = ?", "ds", now,
              w->s[1]);
    break;
  }
  default:
    break;
  }
}

static void write_done(tb__store_op_t *op, int status) {
  write_op_t *w = (write_op_t *)op;
  if (w->kind == W_CHECKPOINT && w->d[1] > 0 && !op->store->closing)
    tb__store_sweep_at(op->store, w->d[1]);
  for (size_t i = 0; i < sizeof(w->s) / sizeof(w->s[0]); i++)
    free(w->s[i]);
  free(w);
}

/* A write op with copies of the strings (NULLs stay NULL); NULL when
 * there is no store to write to or no memory. */
static write_op_t *write_new(tb__store_t *st, int kind, const char *const *s, size_t n) {
  if (st == NULL || st->closing || st->state < 0)
    return NULL;
  write_op_t *w = calloc(1, sizeof(*w));
  if (w == NULL)
    goto oom;
  w->kind = kind;
  w->op.work = write_work;
  w->op.done = write_done;
  for (size_t i = 0; i < n; i++)
    if (s[i] != NULL && (w->s[i] = tb__strndup(s[i], strlen(s[i]))) == NULL) {
      write_done(&w->op, 0);
      goto oom;
    }
  return w;
oom:
  tb__warn("out of memory: a change is not written to %s", st->db_path);
  return NULL;
}

static char *dump_or_null(const json_t *v) {
  return v ? json_dumps(v, JSON_COMPACT) : NULL;
}

void tb__store_session_event(tb__sessions_t *ss, tb__session_t *s, int event,
                             const char *id) {
  tb__store_t *st = ((tb__server_t *)ss->data)->store;
  write_op_t *w = NULL;
  if (event == TB__SESSION_CREATED) {
    char *tags = dump_or_null(s->tags), *meta = dump_or_null(s->user_metadata);
    const char *strs[] = { s->id, s->owner->name, tags, meta, s->sdk_version, s->project_id };
    w = write_new(st, W_SESSION_CREATED, strs, 6);
    free(tags);
    free(meta);
    if (w != NULL)
      w->d[0] = s->created_wall;
  } else if (event == TB__SESSION_EXPIRED) {
    const char *strs[] = { s->id };
    w = write_new(st, W_SESSION_EXPIRED, strs, 1);
  } else if (event == TB__SESSION_CLOSED) {
    const char *strs[] = { s->id };
    w = write_new(st, W_SESSION_CLOSED, strs, 1);
  } else if (event == TB__SESSION_SAMPLER_ADDED && id != NULL) {
    const char *strs[] = { id, s->id, s->owner->name };
    w = write_new(st, W_SAMPLER, strs, 3);
  }
  if (w != NULL)
    enqueue(st, &w->op);
}

void tb__store_run_created(tb__store_t *st, const tb__store_run_t *run) {
  const char *strs[] = { run->id, run->owner, run->session_id, run->base_model };
  write_op_t *w = write_new(st, W_RUN, strs, 4);
  if (w == NULL)
    return;
  w->i[0] = run->lora_rank;
  w->i[1] = (int64_t)run->seed;
  w->i[2] = run->train_attn;
  w->i[3] = run->train_mlp;
  w->i[4] = run->train_unembed;
  tb__sindex_entry_t *e = tb__sindex_put(&st->runs, run->id, run->owner);
  if (e != NULL) {
    e->touched_ms = uv_now(st->loop);
    e->fresh = 1;
  }
  else
    tb__warn("out of memory: run %s is not in the index until a restart", run->id);
  enqueue(st, &w->op);
}

void tb__store_run_touched(tb__store_t *st, const char *run_id) {
  if (st == NULL)
    return;
  tb__sindex_entry_t *e = tb__sindex_get(&st->runs, (tb_slice_t){ run_id, strlen(run_id) });
  uint64_t now = uv_now(st->loop);
  if (e == NULL || now - e->touched_ms < TOUCH_INTERVAL_MS)
    return;  /* not a run of the database, or written a moment ago */
  const char *strs[] = { run_id };
  write_op_t *w = write_new(st, W_TOUCH, strs, 1);
  if (w == NULL)
    return;
  w->d[0] = tb__wall_time();
  e->touched_ms = now;
  enqueue(st, &w->op);
}

void tb__store_run_corrupted(tb__store_t *st, const char *run_id) {
  const char *strs[] = { run_id };
  write_op_t *w = write_new(st, W_CORRUPTED, strs, 1);
  if (w != NULL)
    enqueue(st, &w->op);
}

void tb__store_checkpoint_saved(tb__store_t *st, const char *owner, const char *run_id,
                                const char *tinker_path, const char *dir,
                                int64_t ttl_seconds) {
  /* "tinker://<run>/<kind>/<name>": the id is "<kind>/<name>". */
  const char *after = tinker_path + strlen("tinker://") + strlen(run_id);
  if (strncmp(tinker_path, "tinker://", 9) != 0 || *after != '/')
    return;
  const char *id = after + 1;
  const char *kind = strncmp(id, "weights/", 8) == 0 ? "training" : "sampler";
  const char *strs[] = { owner, run_id, tinker_path, id, kind, dir };
  write_op_t *w = write_new(st, W_CHECKPOINT, strs, 6);
  if (w == NULL)
    return;
  w->i[0] = ttl_seconds;
  enqueue(st, &w->op);
}

/* ------------------------------------------------------------ ttl sweep */

typedef struct sweep_op_s {
  tb__store_op_t op;
  char *data_dir;
  json_t *removed;        /* tinker paths */
  double next;            /* the next expiry; 0: none */
} sweep_op_t;

static void sweep_work(tb__store_op_t *op, sqlite3 *db) {
  sweep_op_t *w = (sweep_op_t *)op;
  if (db == NULL)
    return;
  double now = tb__wall_time();
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT run_id, checkpoint_id, tinker_path FROM checkpoints "
                              "WHERE expires_at IS NOT NULL AND expires_at <= ?",
                              -1, &s, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_double(s, 1, now);
  while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    rc = SQLITE_OK;
    const char *run = (const char *)sqlite3_column_text(s, 0);
    const char *cid = (const char *)sqlite3_column_text(s, 1);
    char *dir = tb__asprintf("%s/%s/%s", w->data_dir, run, cid);
    int frc = dir ? tb__store_remove_tree(dir) : TB_ENOMEM;
    if (frc != 0 && frc != -ENOENT) {
      tb__warn("cannot remove the expired checkpoint %s: %s", dir ? dir : cid, strerror(-frc));
    } else {
      json_array_append_new(w->removed, json_string((const char *)sqlite3_column_text(s, 2)));
      tb__info("checkpoint %s expired and was removed", (const char *)sqlite3_column_text(s, 2));
    }
    free(dir);
  }
  sqlite3_finalize(s);
  size_t i;
  json_t *v;
  json_array_foreach(w->removed, i, v)
    exec_args(db, "DELETE FROM checkpoints WHERE tinker_path = ?", "s", json_string_value(v));
  rc = sqlite3_prepare_v2(db, "SELECT MIN(expires_at) FROM checkpoints", -1, &s, NULL);
  if (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW &&
      sqlite3_column_type(s, 0) != SQLITE_NULL) {
    w->next = sqlite3_column_double(s, 0);
    /* A checkpoint that could not be removed is tried again later, not
     * in a tight loop. */
    if (w->next <= now)
      w->next = now + 60;
  }
  sqlite3_finalize(s);
}

static void sweep_done(tb__store_op_t *op, int status) {
  sweep_op_t *w = (sweep_op_t *)op;
  tb__store_t *st = op->store;
  size_t i;
  json_t *v;
  json_array_foreach(w->removed, i, v)
    tb__sindex_del(&st->public_ckpts, json_string_value(v));
  if (w->next > 0 && !st->closing)
    tb__store_sweep_at(st, w->next);
  json_decref(w->removed);
  free(w);
}

void tb__store_sweep_now(tb__store_t *st) {
  if (st == NULL || st->closing)
    return;
  sweep_op_t *w = calloc(1, sizeof(*w));
  if (w == NULL || (w->removed = json_array()) == NULL) {
    free(w);
    tb__warn("out of memory: the checkpoint sweep waits for its next turn");
    tb__store_sweep_at(st, tb__wall_time() + 60);
    return;
  }
  w->data_dir = st->data_dir;
  w->op.work = sweep_work;
  w->op.done = sweep_done;
  enqueue(st, &w->op);
}

static void on_sweep_timer(uv_timer_t *t) {
  tb__store_t *st = t->data;
  st->sweep_due = 0;
  tb__store_sweep_now(st);
}

void tb__store_sweep_at(tb__store_t *st, double expires_at) {
  if (st == NULL || st->closing)
    return;
  if (st->sweep_due > 0 && st->sweep_due <= expires_at)
    return;
  double delay = (expires_at - tb__wall_time()) * 1000.0;
  uint64_t ms = delay <= 0 ? 0 : delay >= MAX_SWEEP_DELAY_MS ? MAX_SWEEP_DELAY_MS
                                                           : (uint64_t)delay + 1;
  st->sweep_due = expires_at;
  uv_timer_start(&st->sweep, on_sweep_timer, ms, 0);
}

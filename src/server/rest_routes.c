/*
 * The REST routes of the Tinker dialect over the store (store.h):
 *
 *   GET    /api/v1/training_runs                 (limit, offset, access_scope,
 *                                                 project_id)
 *   GET    /api/v1/training_runs/{run_id}        (access_scope)
 *   GET    /api/v1/training_runs/{run_id}/checkpoints   (limit, offset)
 *   GET    /api/v1/checkpoints                   (limit, offset): the user's, newest first
 *   DELETE /api/v1/training_runs/{run_id}/checkpoints/{kind}/{name}
 *   GET    .../checkpoints/{kind}/{name}/archive  -> {"url", "expires"}
 *   POST   .../checkpoints/{kind}/{name}/publish, DELETE .../publish
 *   PUT    .../checkpoints/{kind}/{name}/ttl     {"ttl_seconds": int | null}
 *   GET    /api/v1/checkpoint_archives/{token}   the tar (no API key: the
 *                                                 token is the credential)
 *
 * A checkpoint id is "<kind>/<name>" with kind weights or sampler_weights,
 * as in tinker://<run_id>/<kind>/<name>, so the SDK's interpolated URLs
 * route as they are.  Every query runs as a store op on the threadpool;
 * its work builds the answer (a JSON value, or the tar) and the loop sends
 * it.  Runs and checkpoints of another user are 404, except checkpoints
 * that were published (and their runs, with access_scope=accessible).
 */
#define _GNU_SOURCE  /* memmem */
#include "server/store.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "server/internal.h"
#include "server/routes.h"

/* How long an archive URL stays valid. */
#define ARCHIVE_URL_SECONDS (15 * 60)
#define MAX_TTL_SECONDS ((int64_t)100 * 365 * 24 * 3600)

enum {
  Q_LIST_RUNS = 1,
  Q_GET_RUN,
  Q_RUN_CHECKPOINTS,
  Q_USER_CHECKPOINTS,
  Q_DELETE,
  Q_ARCHIVE,
  Q_DOWNLOAD,
  Q_PUBLISH,
  Q_UNPUBLISH,
  Q_TTL
};

typedef struct rest_op_s {
  tb__store_op_t op;
  tb__http_request_t *req;
  int kind;
  /* inputs, copied */
  char *user;
  char *run_id;
  char *ckpt_id;          /* "<kind>/<name>" */
  char *token;
  char *project_id;
  const char *data_dir;
  int64_t limit, offset;
  int accessible;
  int has_ttl;            /* Q_TTL: 0 clears the expiry */
  int64_t ttl;
  /* results */
  int status;
  char message[512];
  json_t *answer;
  char *tinker_path;      /* publish/unpublish/delete: what changed */
  double expires_at;      /* Q_TTL */
  tb__buf_t tar;
  char *tar_name;
} rest_op_t;

/* ------------------------------------------------------------ SQL side */

static int fail(rest_op_t *q, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(rest_op_t *q, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(q->message, sizeof(q->message), fmt, ap);
  va_end(ap);
  q->status = status;
  return status;
}

static int db_fail(rest_op_t *q, sqlite3 *db) {
  tb__warn("database: %s", sqlite3_errmsg(db));
  return fail(q, 500, "the database failed: %s", sqlite3_errmsg(db));
}

static json_t *iso_or_null(sqlite3_stmt *s, int col) {
  if (sqlite3_column_type(s, col) == SQLITE_NULL)
    return json_null();
  char buf[40];
  tb__store_iso_time(sqlite3_column_double(s, col), buf, sizeof(buf));
  return json_string(buf);
}

#define CKPT_COLS "run_id, checkpoint_id, kind, tinker_path, time, size_bytes, public, expires_at"
/* Expired but not yet swept: already gone as far as anyone can see. */
#define LIVE "(expires_at IS NULL OR expires_at > ?)"

/* The Checkpoint of a row of CKPT_COLS starting at column c. */
static json_t *checkpoint_json(sqlite3_stmt *s, int c) {
  return json_pack("{s:s, s:s, s:o, s:s, s:I, s:b, s:o, s:s}", "checkpoint_id",
                   (const char *)sqlite3_column_text(s, c + 1), "checkpoint_type",
                   (const char *)sqlite3_column_text(s, c + 2), "time", iso_or_null(s, c + 4),
                   "tinker_path", (const char *)sqlite3_column_text(s, c + 3), "size_bytes",
                   (json_int_t)sqlite3_column_int64(s, c + 5), "public",
                   sqlite3_column_int(s, c + 6), "expires_at", iso_or_null(s, c + 7),
                   "training_run_id", (const char *)sqlite3_column_text(s, c + 0));
}

/* The newest live checkpoint of run of this kind, or JSON null. */
static json_t *last_checkpoint(sqlite3 *db, const char *run, const char *kind, double now,
                               const char *viewer, const char *owner) {
  sqlite3_stmt *s = NULL;
  json_t *v = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT " CKPT_COLS " FROM checkpoints WHERE run_id = ? AND "
                              "kind = ? AND " LIVE " AND (public = 1 OR ? = ?) "
                              "ORDER BY time DESC LIMIT 1",
                              -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(s, 1, run, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 3, now);
    sqlite3_bind_text(s, 4, viewer, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 5, owner, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(s) == SQLITE_ROW)
      v = checkpoint_json(s, 0);
  }
  sqlite3_finalize(s);
  return v ? v : json_null();
}

#define RUN_COLS                                                                         \
  "r.id, r.owner, r.session_id, r.base_model, r.lora_rank, r.seed, r.train_attn, "      \
  "r.train_mlp, r.train_unembed, r.created, r.last_request, r.corrupted"

/* Who may see a run: its owner, and with access_scope=accessible anyone
 * when it has a public checkpoint.  Binds: viewer, accessible, now. */
#define RUN_VISIBLE                                                                      \
  "(r.owner = ?1 OR (?2 AND EXISTS (SELECT 1 FROM checkpoints c WHERE c.run_id = r.id " \
  "AND c.public = 1 AND (c.expires_at IS NULL OR c.expires_at > ?3))))"

/* The TrainingRun of a row of RUN_COLS. */
static json_t *run_json(sqlite3 *db, sqlite3_stmt *s, const char *viewer, double now) {
  const char *id = (const char *)sqlite3_column_text(s, 0);
  const char *owner = (const char *)sqlite3_column_text(s, 1);
  json_t *lora = json_pack("{s:i, s:I, s:b, s:b, s:b}", "rank", sqlite3_column_int(s, 4),
                           "seed", (json_int_t)sqlite3_column_int64(s, 5), "train_attn",
                           sqlite3_column_int(s, 6), "train_mlp", sqlite3_column_int(s, 7),
                           "train_unembed", sqlite3_column_int(s, 8));
  return json_pack("{s:s, s:s, s:s, s:b, s:b, s:i, s:o, s:o, s:o, s:o, s:o, s:s, s:o*}",
                   "training_run_id", id, "base_model",
                   (const char *)sqlite3_column_text(s, 3), "model_owner", owner, "is_lora", 1,
                   "corrupted", sqlite3_column_int(s, 11), "lora_rank",
                   sqlite3_column_int(s, 4), "last_request_time", iso_or_null(s, 10),
                   "created_time", iso_or_null(s, 9), "last_checkpoint",
                   last_checkpoint(db, id, "training", now, viewer, owner),
                   "last_sampler_checkpoint",
                   last_checkpoint(db, id, "sampler", now, viewer, owner), "user_metadata",
                   json_null(), "session_id", (const char *)sqlite3_column_text(s, 2),
                   "lora_config", lora);
}

static void bind_visible(sqlite3_stmt *s, const rest_op_t *q, double now) {
  sqlite3_bind_text(s, 1, q->user, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(s, 2, q->accessible);
  sqlite3_bind_double(s, 3, now);
}

/* COUNT(*) of a statement whose binds bind() sets. */
static int64_t count_rows(sqlite3 *db, const char *sql, const rest_op_t *q, double now,
                          int with_project) {
  sqlite3_stmt *s = NULL;
  int64_t n = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
    bind_visible(s, q, now);
    if (with_project)
      sqlite3_bind_text(s, 4, q->project_id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(s) == SQLITE_ROW)
      n = sqlite3_column_int64(s, 0);
  }
  sqlite3_finalize(s);
  return n;
}

static json_t *cursor_json(const rest_op_t *q, int64_t total) {
  return json_pack("{s:I, s:I, s:I}", "offset", (json_int_t)q->offset, "limit",
                   (json_int_t)q->limit, "total_count", (json_int_t)total);
}

static void list_runs(rest_op_t *q, sqlite3 *db, double now) {
  const char *where_project =
      q->project_id ? " AND r.session_id IN (SELECT id FROM sessions WHERE project_id = ?4)"
                    : "";
  char count_sql[512], sql[1024];
  snprintf(count_sql, sizeof(count_sql),
           "SELECT COUNT(*) FROM training_runs r WHERE " RUN_VISIBLE "%s", where_project);
  snprintf(sql, sizeof(sql),
           "SELECT " RUN_COLS " FROM training_runs r WHERE " RUN_VISIBLE
           "%s ORDER BY r.created DESC, r.id LIMIT ?5 OFFSET ?6",
           where_project);
  int64_t total = count_rows(db, count_sql, q, now, q->project_id != NULL);
  json_t *runs = json_array();
  sqlite3_stmt *s = NULL;
  int rc = total < 0 ? SQLITE_ERROR : sqlite3_prepare_v2(db, sql, -1, &s, NULL);
  if (rc == SQLITE_OK) {
    bind_visible(s, q, now);
    if (q->project_id)
      sqlite3_bind_text(s, 4, q->project_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 5, q->limit);
    sqlite3_bind_int64(s, 6, q->offset);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
      json_array_append_new(runs, run_json(db, s, q->user, now));
  }
  if (rc != SQLITE_DONE) {
    db_fail(q, db);
  } else {
    q->answer = json_pack("{s:o, s:o}", "training_runs", runs, "cursor", cursor_json(q, total));
    runs = NULL;
  }
  sqlite3_finalize(s);
  json_decref(runs);
}

static void get_run(rest_op_t *q, sqlite3 *db, double now) {
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT " RUN_COLS " FROM training_runs r WHERE " RUN_VISIBLE
                              " AND r.id = ?4",
                              -1, &s, NULL);
  if (rc == SQLITE_OK) {
    bind_visible(s, q, now);
    sqlite3_bind_text(s, 4, q->run_id, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(s);
  }
  if (rc == SQLITE_ROW)
    q->answer = run_json(db, s, q->user, now);
  else if (rc == SQLITE_DONE)
    fail(q, 404, "run_id: no training run %s", q->run_id);
  else
    db_fail(q, db);
  sqlite3_finalize(s);
}

/* Checkpoints of one run (q->run_id) or of the user (run_id NULL),
 * newest first. */
static void list_checkpoints(rest_op_t *q, sqlite3 *db, double now) {
  const char *owner_sql = "SELECT owner FROM training_runs WHERE id = ?";
  int own = 1;
  if (q->run_id != NULL) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, owner_sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(s, 1, q->run_id, -1, SQLITE_TRANSIENT);
      rc = sqlite3_step(s);
    }
    if (rc == SQLITE_ROW)
      own = strcmp((const char *)sqlite3_column_text(s, 0), q->user) == 0;
    sqlite3_finalize(s);
    if (rc == SQLITE_DONE)
      own = -1;
    else if (rc != SQLITE_ROW) {
      db_fail(q, db);
      return;
    }
  }
  /* ?1 viewer, ?2 run (or NULL), ?3 now, ?4 limit, ?5 offset.  Another
   * user's run shows its public checkpoints only. */
  const char *where = q->run_id ? "run_id = ?2 AND (owner = ?1 OR public = 1)" : "owner = ?1";
  char count_sql[512], sql[768];
  snprintf(count_sql, sizeof(count_sql),
           "SELECT COUNT(*) FROM checkpoints WHERE %s AND (expires_at IS NULL OR "
           "expires_at > ?3)",
           where);
  snprintf(sql, sizeof(sql),
           "SELECT " CKPT_COLS " FROM checkpoints WHERE %s AND (expires_at IS NULL OR "
           "expires_at > ?3) ORDER BY time DESC, checkpoint_id LIMIT ?4 OFFSET ?5",
           where);
  int64_t total = -1;
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db, count_sql, -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(s, 1, q->user, -1, SQLITE_TRANSIENT);
    if (q->run_id)
      sqlite3_bind_text(s, 2, q->run_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 3, now);
    if (sqlite3_step(s) == SQLITE_ROW)
      total = sqlite3_column_int64(s, 0);
  }
  sqlite3_finalize(s);
  s = NULL;
  if (total < 0) {
    db_fail(q, db);
    return;
  }
  if (q->run_id != NULL && (own < 0 || (own == 0 && total == 0))) {
    fail(q, 404, "run_id: no training run %s", q->run_id);
    return;
  }
  json_t *list = json_array();
  rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(s, 1, q->user, -1, SQLITE_TRANSIENT);
    if (q->run_id)
      sqlite3_bind_text(s, 2, q->run_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 3, now);
    sqlite3_bind_int64(s, 4, q->limit);
    sqlite3_bind_int64(s, 5, q->offset);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
      json_array_append_new(list, checkpoint_json(s, 0));
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE) {
    json_decref(list);
    db_fail(q, db);
    return;
  }
  q->answer = json_pack("{s:o, s:o}", "checkpoints", list, "cursor", cursor_json(q, total));
}

/* The tinker path of the live checkpoint q names that the user may use
 * (owner_only: as its owner); 0, or fails q with 404. */
static int find_checkpoint(rest_op_t *q, sqlite3 *db, double now, int owner_only,
                           int *is_public) {
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT tinker_path, public FROM checkpoints WHERE run_id = ? AND "
                              "checkpoint_id = ? AND " LIVE " AND (owner = ? OR (? AND public = 1))",
                              -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(s, 1, q->run_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, q->ckpt_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 3, now);
    sqlite3_bind_text(s, 4, q->user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 5, !owner_only);
    rc = sqlite3_step(s);
  }
  if (rc == SQLITE_ROW) {
    q->tinker_path = strdup((const char *)sqlite3_column_text(s, 0));
    if (is_public)
      *is_public = sqlite3_column_int(s, 1);
  }
  sqlite3_finalize(s);
  if (rc == SQLITE_ROW && q->tinker_path != NULL)
    return 0;
  if (rc == SQLITE_DONE)
    return fail(q, 404, "checkpoint_id: no checkpoint %s in training run %s", q->ckpt_id,
                q->run_id);
  return rc == SQLITE_ROW ? fail(q, 500, "out of memory") : db_fail(q, db);
}

static int exec1(sqlite3 *db, const char *sql, const char *a, const char *b, double d,
                 int with_d) {
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
  if (rc == SQLITE_OK) {
    int i = 1;
    if (with_d)
      sqlite3_bind_double(s, i++, d);
    sqlite3_bind_text(s, i++, a, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, i++, b, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(s);
  }
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void delete_checkpoint(rest_op_t *q, sqlite3 *db, double now) {
  if (find_checkpoint(q, db, now, 1, NULL) != 0)
    return;
  char *dir = tb__asprintf("%s/%s/%s", q->data_dir, q->run_id, q->ckpt_id);
  int rc = dir ? tb__store_remove_tree(dir) : -ENOMEM;
  if (rc != 0 && rc != -ENOENT) {
    tb__warn("cannot remove checkpoint %s: %s", dir ? dir : q->ckpt_id, strerror(-rc));
    fail(q, 500, "cannot remove the checkpoint's files: %s", strerror(-rc));
  } else if (exec1(db, "DELETE FROM checkpoints WHERE run_id = ? AND checkpoint_id = ?",
                   q->run_id, q->ckpt_id, 0, 0) != SQLITE_OK) {
    db_fail(q, db);
  } else {
    q->answer = json_pack("{s:s, s:b}", "tinker_path", q->tinker_path, "deleted", 1);
  }
  free(dir);
}

static void publish(rest_op_t *q, sqlite3 *db, double now, int on) {
  int is_public = 0;
  if (find_checkpoint(q, db, now, 1, &is_public) != 0)
    return;
  if (is_public == on) {
    fail(q, 409, "checkpoint_id: %s is already %s", q->tinker_path,
         on ? "public" : "private");
    return;
  }
  if (exec1(db,
            on ? "UPDATE checkpoints SET public = 1 WHERE run_id = ? AND checkpoint_id = ?"
               : "UPDATE checkpoints SET public = 0 WHERE run_id = ? AND checkpoint_id = ?",
            q->run_id, q->ckpt_id, 0, 0) != SQLITE_OK) {
    db_fail(q, db);
    return;
  }
  q->answer = json_pack("{s:s, s:b}", "tinker_path", q->tinker_path, "public", on);
}

static void set_ttl(rest_op_t *q, sqlite3 *db, double now) {
  if (find_checkpoint(q, db, now, 1, NULL) != 0)
    return;
  q->expires_at = q->has_ttl ? now + (double)q->ttl : 0;
  int rc = q->has_ttl
               ? exec1(db,
                       "UPDATE checkpoints SET expires_at = ? WHERE run_id = ? AND "
                       "checkpoint_id = ?",
                       q->run_id, q->ckpt_id, q->expires_at, 1)
               : exec1(db,
                       "UPDATE checkpoints SET expires_at = NULL WHERE run_id = ? AND "
                       "checkpoint_id = ?",
                       q->run_id, q->ckpt_id, 0, 0);
  if (rc != SQLITE_OK) {
    db_fail(q, db);
    return;
  }
  char buf[40];
  tb__store_iso_time(q->expires_at, buf, sizeof(buf));
  q->answer = json_pack("{s:s, s:o}", "tinker_path", q->tinker_path, "expires_at",
                        q->has_ttl ? json_string(buf) : json_null());
}

static void archive(rest_op_t *q, sqlite3 *db, double now) {
  if (find_checkpoint(q, db, now, 0, NULL) != 0)
    return;
  unsigned char rnd[16];
  if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
    fail(q, 500, "cannot draw an archive token");
    return;
  }
  char token[40];
  strcpy(token, "arc-");
  for (size_t i = 0; i < sizeof(rnd); i++)
    snprintf(token + 4 + 2 * i, 3, "%02x", rnd[i]);
  double expires = now + ARCHIVE_URL_SECONDS;
  sqlite3_stmt *s = NULL;
  /* Tokens past their time go with each new one. */
  int rc = sqlite3_prepare_v2(db, "DELETE FROM archive_tokens WHERE expires <= ?", -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_double(s, 1, now);
    rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  sqlite3_finalize(s);
  s = NULL;
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db, "INSERT INTO archive_tokens VALUES (?, ?, ?, ?)", -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(s, 1, token, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, q->run_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, q->ckpt_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 4, expires);
    rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_OK) {
    db_fail(q, db);
    return;
  }
  char when[40];
  tb__store_iso_time(expires, when, sizeof(when));
  /* The loop turns the token into a URL with the request's Host. */
  q->answer = json_pack("{s:s, s:s}", "token", token, "expires", when);
}

static void download(rest_op_t *q, sqlite3 *db, double now) {
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT a.run_id, a.checkpoint_id FROM archive_tokens a JOIN "
                              "checkpoints c ON c.run_id = a.run_id AND c.checkpoint_id = "
                              "a.checkpoint_id WHERE a.token = ? AND a.expires > ? AND "
                              "(c.expires_at IS NULL OR c.expires_at > ?)",
                              -1, &s, NULL);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(s);
    db_fail(q, db);
    return;
  }
  sqlite3_bind_text(s, 1, q->token, -1, SQLITE_TRANSIENT);
  sqlite3_bind_double(s, 2, now);
  sqlite3_bind_double(s, 3, now);
  rc = sqlite3_step(s);
  char *dir = NULL, *name = NULL;
  if (rc == SQLITE_ROW) {
    const char *cid = (const char *)sqlite3_column_text(s, 1);
    const char *slash = strchr(cid, '/');
    dir = tb__asprintf("%s/%s/%s", q->data_dir, (const char *)sqlite3_column_text(s, 0), cid);
    name = strdup(slash ? slash + 1 : cid);
  }
  sqlite3_finalize(s);
  if (rc == SQLITE_DONE) {
    fail(q, 404, "token: unknown or expired archive link");
  } else if (rc != SQLITE_ROW) {
    db_fail(q, db);
  } else if (dir == NULL || name == NULL) {
    fail(q, 500, "out of memory");
  } else {
    int trc = tb__store_tar_dir(dir, name, &q->tar);
    if (trc == -ENOENT)
      fail(q, 404, "token: the checkpoint's files are gone");
    else if (trc == 0 && q->tar.len > UINT_MAX)
      fail(q, 500, "the checkpoint is too large to serve as one archive");
    else if (trc != 0)
      fail(q, 500, "cannot read the checkpoint: %s", trc < -4000 ? tb_strerror(trc)
                                                               : strerror(-trc));
    else
      q->tar_name = name, name = NULL;
  }
  free(dir);
  free(name);
}

static void rest_work(tb__store_op_t *op, sqlite3 *db) {
  rest_op_t *q = (rest_op_t *)op;
  if (db == NULL) {
    fail(q, 503, "the database is unavailable");
    return;
  }
  double now = tb__wall_time();
  switch (q->kind) {
  case Q_LIST_RUNS:
    list_runs(q, db, now);
    break;
  case Q_GET_RUN:
    get_run(q, db, now);
    break;
  case Q_RUN_CHECKPOINTS:
  case Q_USER_CHECKPOINTS:
    list_checkpoints(q, db, now);
    break;
  case Q_DELETE:
    delete_checkpoint(q, db, now);
    break;
  case Q_PUBLISH:
  case Q_UNPUBLISH:
    publish(q, db, now, q->kind == Q_PUBLISH);
    break;
  case Q_TTL:
    set_ttl(q, db, now);
    break;
  case Q_ARCHIVE:
    archive(q, db, now);
    break;
  case Q_DOWNLOAD:
    download(q, db, now);
    break;
  default:
    break;
  }
  if (q->status == 0 && q->answer == NULL && q->tar.len == 0)
    fail(q, 500, "out of memory");
}

/* ------------------------------------------------------------ loop side */

static void rest_op_free(rest_op_t *q) {
  free(q->user);
  free(q->run_id);
  free(q->ckpt_id);
  free(q->token);
  free(q->project_id);
  free(q->tinker_path);
  free(q->tar_name);
  json_decref(q->answer);
  tb__buf_free(&q->tar);
  free(q);
}

/* The tar is lent to the answer until the request is done. */
static void on_download_done(tb__http_request_t *req, int status) {
  rest_op_free(tb__sreq(req)->data);
}

/* "http://<Host>" of the request, when its Host header is a plain host
 * and port; else the address the server listens on. */
static char *base_url(tb__http_request_t *req) {
  const tb__http_header_t *h = tb__http_request_header(req, "Host");
  int ok = h != NULL && h->value.len > 0 && h->value.len < 256;
  for (size_t i = 0; ok && i < h->value.len; i++) {
    char c = h->value.base[i];
    ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
  }
  if (ok)
    return tb__asprintf("http://%.*s", (int)h->value.len, h->value.base);
  int port = tb__http_server_port(&tb__server_from_req(req)->http);
  return tb__asprintf("http://127.0.0.1:%d", port);
}

static void rest_done(tb__store_op_t *op, int status) {
  rest_op_t *q = (rest_op_t *)op;
  tb__http_request_t *req = q->req;
  tb__store_t *st = op->store;
  if (status != 0 && q->status == 0)
    fail(q, 503, "the database is unavailable: %s", uv_strerror(status));
  if (q->status != 0) {
    tb__server_respond_error(req, q->status, "%s", q->message);
    rest_op_free(q);
    return;
  }
  switch (q->kind) {
  case Q_DELETE:
  case Q_UNPUBLISH:
    tb__store_set_public(st, q->tinker_path, 0);
    break;
  case Q_PUBLISH:
    tb__store_set_public(st, q->tinker_path, 1);
    break;
  case Q_TTL:
    if (q->has_ttl)
      tb__store_sweep_at(st, q->expires_at);
    break;
  case Q_ARCHIVE: {
    char *base = base_url(req);
    const char *token = json_string_value(json_object_get(q->answer, "token"));
    char *url = base ? tb__asprintf("%s/api/v1/checkpoint_archives/%s", base, token) : NULL;
    free(base);
    if (url == NULL) {
      tb__server_respond_error(req, 503, "out of memory");
      rest_op_free(q);
      return;
    }
    json_object_set_new(q->answer, "url", json_string(url));
    json_object_del(q->answer, "token");
    free(url);
    break;
  }
  case Q_DOWNLOAD: {
    char *disp = tb__arena_alloc(&req->arena, strlen(q->tar_name) + 40);
    if (disp == NULL) {
      tb__server_respond_error(req, 503, "out of memory");
      rest_op_free(q);
      return;
    }
    sprintf(disp, "attachment; filename=\"%s.tar\"", q->tar_name);
    tb__http_header_t hs[2] = {
      { TB_SLICE_LIT("Content-Type"), TB_SLICE_LIT("application/x-tar") },
      { TB_SLICE_LIT("Content-Disposition"), { disp, strlen(disp) } },
    };
    tb__sreq(req)->data = q;
    tb__sreq(req)->on_done = on_download_done;
    uv_buf_t b = uv_buf_init(q->tar.base, (unsigned)q->tar.len);
    tb__server_respond(req, 200, hs, 2, &b, 1);
    return;
  }
  default:
    break;
  }
  tb__server_respond_jsonv(req, 200, q->answer);
  rest_op_free(q);
}

static rest_op_t *rest_op_new(tb__http_request_t *req, int kind) {
  tb__server_t *srv = tb__server_from_req(req);
  if (srv->store == NULL || tb__store_state(srv->store) < 0) {
    tb__server_respond_error(req, 503, "the database is unavailable: %s",
                             tb__store_error(srv->store));
    return NULL;
  }
  rest_op_t *q = calloc(1, sizeof(*q));
  const tb__user_t *u = tb__sreq(req)->user;
  if (q != NULL) {
    q->req = req;
    q->kind = kind;
    q->op.work = rest_work;
    q->op.done = rest_done;
    q->data_dir = tb__store_data_dir(srv->store);
    q->user = u ? tb__strndup(u->name, u->name_len) : tb__strndup("", 0);
  }
  if (q == NULL || q->user == NULL) {
    free(q);
    tb__server_respond_error(req, 503, "out of memory");
    return NULL;
  }
  return q;
}

static void rest_submit(tb__http_request_t *req, rest_op_t *q) {
  if (tb__store_submit(tb__server_from_req(req)->store, &q->op) != 0) {
    tb__server_respond_error(req, 503, "the server is closing");
    rest_op_free(q);
  }
}

/* A path parameter that names a file-system component: printable ASCII
 * without '/', not "." or "..", nor starting with '.'.  Answers 400 and
 * returns NULL otherwise; the copy is malloc'd. */
static char *path_param(tb__http_request_t *req, const char *name, size_t max) {
  const tb_slice_t *v = tb__http_request_param(req, name);
  const char *why = NULL;
  if (v == NULL || v->len == 0)
    why = "required";
  else if (v->len > max)
    why = "too long";
  else if (memmem(v->base, v->len, "..", 2) != NULL)
    why = "'..' is not allowed";
  else if (v->base[0] == '.')
    why = "must not start with '.'";
  for (size_t i = 0; why == NULL && i < v->len; i++) {
    unsigned char c = (unsigned char)v->base[i];
    if (c == '/' || c == '\\' || c <= 0x20 || c >= 0x7f)
      why = "expected printable ASCII without '/', '\\' or spaces";
  }
  if (why != NULL) {
    tb__server_respond_error(req, 400, "%s: %s", name, why);
    return NULL;
  }
  char *s = tb__strndup(v->base, v->len);
  if (s == NULL)
    tb__server_respond_error(req, 503, "out of memory");
  return s;
}

/* run_id, and with a checkpoint "<kind>/<name>" in q->ckpt_id. */
static int checkpoint_params(tb__http_request_t *req, rest_op_t *q, int with_checkpoint) {
  q->run_id = path_param(req, "run_id", 200);
  if (q->run_id == NULL)
    return -1;
  if (!with_checkpoint)
    return 0;
  const tb_slice_t *kind = tb__http_request_param(req, "kind");
  if (kind == NULL ||
      !(tb__slice_eq_str(*kind, "weights") || tb__slice_eq_str(*kind, "sampler_weights"))) {
    tb__server_respond_error(req, 400,
                             "checkpoint_id: expected weights/<name> or sampler_weights/<name>");
    return -1;
  }
  char *name = path_param(req, "name", 128);
  if (name == NULL)
    return -1;
  q->ckpt_id = tb__asprintf("%.*s/%s", (int)kind->len, kind->base, name);
  free(name);
  if (q->ckpt_id == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return -1;
  }
  return 0;
}

/* An integer query parameter within [min, max] (def when absent); answers
 * 400 and returns -1 when malformed. */
static int query_int(tb__http_request_t *req, const char *name, int64_t min, int64_t max,
                     int64_t def, int64_t *out) {
  tb_slice_t v;
  *out = def;
  int rc = tb__http_request_query(req, name, &v);
  if (rc == 0)
    return 0;
  char buf[32];
  char *end = NULL;
  long long n = 0;
  if (rc > 0 && v.len > 0 && v.len < sizeof(buf)) {
    memcpy(buf, v.base, v.len);
    buf[v.len] = '\0';
    errno = 0;
    n = strtoll(buf, &end, 10);
  }
  if (rc < 0 || end == NULL || *end != '\0' || errno != 0 || n < min || n > max) {
    tb__server_respond_error(req, 400, "%s: expected an integer from %lld to %lld", name,
                             (long long)min, (long long)max);
    return -1;
  }
  *out = n;
  return 0;
}

/* access_scope=owned (default) or accessible. */
static int query_scope(tb__http_request_t *req, int *accessible) {
  tb_slice_t v;
  *accessible = 0;
  int rc = tb__http_request_query(req, "access_scope", &v);
  if (rc == 0 || (rc > 0 && tb__slice_eq_str(v, "owned")))
    return 0;
  if (rc > 0 && tb__slice_eq_str(v, "accessible")) {
    *accessible = 1;
    return 0;
  }
  tb__server_respond_error(req, 400, "access_scope: expected owned or accessible");
  return -1;
}

void tb__route_list_runs(tb__http_request_t *req) {
  rest_op_t *q = rest_op_new(req, Q_LIST_RUNS);
  if (q == NULL)
    return;
  tb_slice_t project;
  int prc = tb__http_request_query(req, "project_id", &project);
  if (query_int(req, "limit", 1, 1000, 20, &q->limit) != 0 ||
      query_int(req, "offset", 0, INT32_MAX, 0, &q->offset) != 0 ||
      query_scope(req, &q->accessible) != 0) {
    rest_op_free(q);
    return;
  }
  if (prc < 0 || (prc > 0 && project.len == 0)) {
    tb__server_respond_error(req, 400, "project_id: expected a non-empty string");
    rest_op_free(q);
    return;
  }
  if (prc > 0 && (q->project_id = tb__strndup(project.base, project.len)) == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

void tb__route_get_run(tb__http_request_t *req) {
  rest_op_t *q = rest_op_new(req, Q_GET_RUN);
  if (q == NULL)
    return;
  if (query_scope(req, &q->accessible) != 0 || checkpoint_params(req, q, 0) != 0) {
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

void tb__route_run_checkpoints(tb__http_request_t *req) {
  rest_op_t *q = rest_op_new(req, Q_RUN_CHECKPOINTS);
  if (q == NULL)
    return;
  if (query_int(req, "limit", 1, 10000, 10000, &q->limit) != 0 ||
      query_int(req, "offset", 0, INT32_MAX, 0, &q->offset) != 0 ||
      checkpoint_params(req, q, 0) != 0) {
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

void tb__route_user_checkpoints(tb__http_request_t *req) {
  rest_op_t *q = rest_op_new(req, Q_USER_CHECKPOINTS);
  if (q == NULL)
    return;
  if (query_int(req, "limit", 1, 1000, 100, &q->limit) != 0 ||
      query_int(req, "offset", 0, INT32_MAX, 0, &q->offset) != 0) {
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

/* The routes on one checkpoint. */
static void checkpoint_route(tb__http_request_t *req, int kind) {
  rest_op_t *q = rest_op_new(req, kind);
  if (q == NULL)
    return;
  if (checkpoint_params(req, q, 1) != 0) {
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

void tb__route_delete_checkpoint(tb__http_request_t *req) {
  checkpoint_route(req, Q_DELETE);
}

void tb__route_archive(tb__http_request_t *req) {
  checkpoint_route(req, Q_ARCHIVE);
}

void tb__route_publish(tb__http_request_t *req) {
  checkpoint_route(req, Q_PUBLISH);
}

void tb__route_unpublish(tb__http_request_t *req) {
  checkpoint_route(req, Q_UNPUBLISH);
}

void tb__route_ttl(tb__http_request_t *req) {
  json_t *doc;
  if (tb__server_parse_body(req, &doc) != 0)
    return;
  json_t *v = json_object_get(doc, "ttl_seconds");
  int64_t ttl = 0;
  int has = 0;
  const char *why = NULL;
  if (v == NULL)
    why = "required (an integer number of seconds, or null for no expiry)";
  else if (json_is_integer(v))
    has = 1, ttl = json_integer_value(v);
  else if (!json_is_null(v))
    why = "expected an integer or null";
  if (why == NULL && has && (ttl <= 0 || ttl > MAX_TTL_SECONDS))
    why = "expected a positive number of seconds (at most 100 years)";
  json_decref(doc);
  if (why != NULL) {
    tb__server_respond_error(req, 400, "ttl_seconds: %s", why);
    return;
  }
  rest_op_t *q = rest_op_new(req, Q_TTL);
  if (q == NULL)
    return;
  q->has_ttl = has;
  q->ttl = ttl;
  if (checkpoint_params(req, q, 1) != 0) {
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

void tb__route_download(tb__http_request_t *req) {
  const tb_slice_t *t = tb__http_request_param(req, "token");
  int ok = t != NULL && t->len == 36 && memcmp(t->base, "arc-", 4) == 0;
  for (size_t i = 4; ok && i < t->len; i++)
    ok = (t->base[i] >= '0' && t->base[i] <= '9') || (t->base[i] >= 'a' && t->base[i] <= 'f');
  if (!ok) {
    tb__server_respond_error(req, 404, "token: unknown or expired archive link");
    return;
  }
  rest_op_t *q = rest_op_new(req, Q_DOWNLOAD);
  if (q == NULL)
    return;
  if ((q->token = tb__strndup(t->base, t->len)) == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    rest_op_free(q);
    return;
  }
  rest_submit(req, q);
}

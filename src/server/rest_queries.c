/*
 * The queries of the REST routes (rest_routes.c), on the threadpool: each
 * reads or changes the database and builds its answer (a JSON value, or a
 * checkpoint's tar), which the loop sends.  Runs and checkpoints of
 * another user are not found, except published checkpoints.
 */
#include "server/rest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "wire/rest.h"

/* How long an archive URL stays valid. */
#define ARCHIVE_URL_SECONDS (15 * 60)

int tb__rest_fail(tb__rest_op_t *q, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(q->message, sizeof(q->message), fmt, ap);
  va_end(ap);
  q->status = status;
  return status;
}

static int db_fail(tb__rest_op_t *q, sqlite3 *db) {
  tb__warn("database: %s", sqlite3_errmsg(db));
  return tb__rest_fail(q, 500, "the database failed: %s", sqlite3_errmsg(db));
}

/* The time in column col as RFC 3339 into buf, or NULL when NULL. */
static const char *iso_or_null(sqlite3_stmt *s, int col, char *buf, size_t size) {
  if (sqlite3_column_type(s, col) == SQLITE_NULL)
    return NULL;
  tb__store_iso_time(sqlite3_column_double(s, col), buf, size);
  return buf;
}

#define CKPT_COLS "run_id, checkpoint_id, kind, tinker_path, time, size_bytes, public, expires_at"
/* Expired but not yet swept: already gone as far as anyone can see. */
#define LIVE "(expires_at IS NULL OR expires_at > ?)"

/* The Checkpoint of a row of CKPT_COLS starting at column c, its times in
 * t[0] and t[1]; valid until the statement steps again. */
static void checkpoint_row(sqlite3_stmt *s, int c, tb__wire_checkpoint_t *ck, char t[2][40]) {
  *ck = (tb__wire_checkpoint_t){
    .checkpoint_id = (const char *)sqlite3_column_text(s, c + 1),
    .checkpoint_type = (const char *)sqlite3_column_text(s, c + 2),
    .time = iso_or_null(s, c + 4, t[0], 40),
    .tinker_path = (const char *)sqlite3_column_text(s, c + 3),
    .size_bytes = sqlite3_column_int64(s, c + 5),
    .is_public = sqlite3_column_int(s, c + 6) != 0,
    .expires_at = iso_or_null(s, c + 7, t[1], 40),
    .training_run_id = (const char *)sqlite3_column_text(s, c + 0),
  };
}

static json_t *checkpoint_json(sqlite3_stmt *s, int c) {
  tb__wire_checkpoint_t ck;
  char t[2][40];
  checkpoint_row(s, c, &ck, t);
  return tb__wire_checkpoint_to_json(&ck);
}

/* The newest live checkpoint of run of this kind: its statement, stepped
 * onto the row (*found), for the caller to finalize. */
static sqlite3_stmt *last_checkpoint(sqlite3 *db, const char *run, const char *kind, double now,
                                     const char *viewer, const char *owner, int *found) {
  sqlite3_stmt *s = NULL;
  *found = 0;
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
    *found = sqlite3_step(s) == SQLITE_ROW;
  }
  return s;
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
  char times[2][40], ct[2][2][40];
  tb__wire_checkpoint_t ck[2];
  int found[2];
  sqlite3_stmt *last[2] = {
    last_checkpoint(db, id, "training", now, viewer, owner, &found[0]),
    last_checkpoint(db, id, "sampler", now, viewer, owner, &found[1]),
  };
  for (int i = 0; i < 2; i++)
    if (found[i])
      checkpoint_row(last[i], 0, &ck[i], ct[i]);
  tb__wire_training_run_t r = {
    .training_run_id = id,
    .base_model = (const char *)sqlite3_column_text(s, 3),
    .model_owner = owner,
    .is_lora = 1,
    .corrupted = sqlite3_column_int(s, 11) != 0,
    .lora_rank = sqlite3_column_int(s, 4),
    .last_request_time = iso_or_null(s, 10, times[0], sizeof(times[0])),
    .created_time = iso_or_null(s, 9, times[1], sizeof(times[1])),
    .last_checkpoint = found[0] ? &ck[0] : NULL,
    .last_sampler_checkpoint = found[1] ? &ck[1] : NULL,
    .user_metadata = NULL,
    .session_id = (const char *)sqlite3_column_text(s, 2),
    .lora_config = { .present = 1,
                     .rank = sqlite3_column_int(s, 4),
                     .seed = sqlite3_column_int64(s, 5),
                     .train_attn = sqlite3_column_int(s, 6) != 0,
                     .train_mlp = sqlite3_column_int(s, 7) != 0,
                     .train_unembed = sqlite3_column_int(s, 8) != 0 },
  };
  json_t *v = tb__wire_training_run_to_json(&r);
  sqlite3_finalize(last[0]);
  sqlite3_finalize(last[1]);
  return v;
}

static void bind_visible(sqlite3_stmt *s, const tb__rest_op_t *q, double now) {
  sqlite3_bind_text(s, 1, q->user, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(s, 2, q->accessible);
  sqlite3_bind_double(s, 3, now);
}

/* COUNT(*) of a statement whose binds bind() sets. */
static int64_t count_rows(sqlite3 *db, const char *sql, const tb__rest_op_t *q, double now,
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

static tb__wire_cursor_t cursor_of(const tb__rest_op_t *q, int64_t total) {
  return (tb__wire_cursor_t){ .offset = q->offset, .limit = q->limit, .total_count = total };
}

static void list_runs(tb__rest_op_t *q, sqlite3 *db, double now) {
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
    tb__wire_cursor_t cur = cursor_of(q, total);
    q->answer = tb__wire_training_runs_wrap(runs, &cur);
    runs = NULL;
  }
  sqlite3_finalize(s);
  json_decref(runs);
}

static void get_run(tb__rest_op_t *q, sqlite3 *db, double now) {
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
    tb__rest_fail(q, 404, "run_id: no training run %s", q->run_id);
  else
    db_fail(q, db);
  sqlite3_finalize(s);
}

/* Checkpoints of one run (q->run_id) or of the user (run_id NULL),
 * newest first. */
static void list_checkpoints(tb__rest_op_t *q, sqlite3 *db, double now) {
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
    tb__rest_fail(q, 404, "run_id: no training run %s", q->run_id);
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
  tb__wire_cursor_t cur = cursor_of(q, total);
  q->answer = tb__wire_checkpoints_wrap(list, &cur);
}

/* The tinker path of the live checkpoint q names that the user may use
 * (owner_only: as its owner); 0, or fails q with 404. */
static int find_checkpoint(tb__rest_op_t *q, sqlite3 *db, double now, int owner_only,
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
    return tb__rest_fail(q, 404, "checkpoint_id: no checkpoint %s in training run %s", q->ckpt_id,
                q->run_id);
  return rc == SQLITE_ROW ? tb__rest_fail(q, 500, "out of memory") : db_fail(q, db);
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

static void delete_checkpoint(tb__rest_op_t *q, sqlite3 *db, double now) {
  if (find_checkpoint(q, db, now, 1, NULL) != 0)
    return;
  char *dir = tb__asprintf("%s/%s/%s", q->data_dir, q->run_id, q->ckpt_id);
  int rc = dir ? tb__store_remove_tree(dir) : -ENOMEM;
  if (rc != 0 && rc != -ENOENT) {
    tb__warn("cannot remove checkpoint %s: %s", dir ? dir : q->ckpt_id, strerror(-rc));
    tb__rest_fail(q, 500, "cannot remove the checkpoint's files: %s", strerror(-rc));
  } else if (exec1(db, "DELETE FROM checkpoints WHERE run_id = ? AND checkpoint_id = ?",
                   q->run_id, q->ckpt_id, 0, 0) != SQLITE_OK) {
    db_fail(q, db);
  } else {
    tb__wire_checkpoint_change_t c = { .kind = TB__WIRE_CKPT_DELETED,
                                       .tinker_path = q->tinker_path };
    q->answer = tb__wire_checkpoint_change_to_json(&c);
  }
  free(dir);
}

static void publish(tb__rest_op_t *q, sqlite3 *db, double now, int on) {
  int is_public = 0;
  if (find_checkpoint(q, db, now, 1, &is_public) != 0)
    return;
  if (is_public == on) {
    tb__rest_fail(q, 409, "checkpoint_id: %s is already %s", q->tinker_path,
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
  tb__wire_checkpoint_change_t c = { .kind = TB__WIRE_CKPT_PUBLIC,
                                     .tinker_path = q->tinker_path, .is_public = on };
  q->answer = tb__wire_checkpoint_change_to_json(&c);
}

static void set_ttl(tb__rest_op_t *q, sqlite3 *db, double now) {
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
  tb__wire_checkpoint_change_t c = { .kind = TB__WIRE_CKPT_TTL,
                                     .tinker_path = q->tinker_path,
                                     .expires_at = q->has_ttl ? buf : NULL };
  q->answer = tb__wire_checkpoint_change_to_json(&c);
}

static void archive(tb__rest_op_t *q, sqlite3 *db, double now) {
  if (find_checkpoint(q, db, now, 0, NULL) != 0)
    return;
  unsigned char rnd[16];
  if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
    tb__rest_fail(q, 500, "cannot draw an archive token");
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
  /* The loop turns the token into a URL with the request's Host
   * (rest_routes.c) and encodes the answer. */
  tb__store_iso_time(expires, q->expires, sizeof(q->expires));
  if ((q->token = strdup(token)) == NULL)
    tb__rest_fail(q, 500, "out of memory");
}

static void download(tb__rest_op_t *q, sqlite3 *db, double now) {
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
    tb__rest_fail(q, 404, "token: unknown or expired archive link");
  } else if (rc != SQLITE_ROW) {
    db_fail(q, db);
  } else if (dir == NULL || name == NULL) {
    tb__rest_fail(q, 500, "out of memory");
  } else {
    int trc = tb__store_tar_dir(dir, name, &q->tar);
    if (trc == -ENOENT)
      tb__rest_fail(q, 404, "token: the checkpoint's files are gone");
    else if (trc == 0 && q->tar.len > UINT_MAX)
      tb__rest_fail(q, 500, "the checkpoint is too large to serve as one archive");
    else if (trc != 0)
      tb__rest_fail(q, 500, "cannot read the checkpoint: %s", trc < -4000 ? tb_strerror(trc)
                                                               : strerror(-trc));
    else
      q->tar_name = name, name = NULL;
  }
  free(dir);
  free(name);
}

void tb__rest_work(tb__store_op_t *op, sqlite3 *db) {
  tb__rest_op_t *q = (tb__rest_op_t *)op;
  if (db == NULL) {
    tb__rest_fail(q, 503, "the database is unavailable");
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
  if (q->status == 0 && q->answer == NULL && q->tar.len == 0 && q->kind != Q_ARCHIVE)
    tb__rest_fail(q, 500, "out of memory");
}

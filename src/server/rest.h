/*
 * What the REST routes (rest_routes.c: the loop side, HTTP) and their
 * queries (rest_queries.c: the threadpool side, SQL) share: the op of one
 * request.
 */
#ifndef TB_SERVER_REST_H
#define TB_SERVER_REST_H

#include <jansson.h>
#include <stdint.h>

#include "core/buf.h"
#include "server/store.h"

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

typedef struct tb__rest_op_s {
  tb__store_op_t op;
  tb__http_request_t *req;
  int kind;
  /* inputs, copied */
  char *user;
  char *run_id;
  char *ckpt_id;          /* "<kind>/<name>" */
  char *token;            /* Q_DOWNLOAD's input, Q_ARCHIVE's result */
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
  char expires[40];       /* Q_ARCHIVE: when the link expires, RFC 3339 */
  tb__buf_t tar;
  char *tar_name;
} tb__rest_op_t;

/* Fails q with an HTTP status and a message; returns status. */
int tb__rest_fail(tb__rest_op_t *q, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The store op's work: runs q's query on the threadpool, filling its
 * results (status and message on failure). */
void tb__rest_work(tb__store_op_t *op, sqlite3 *db);

#endif /* TB_SERVER_REST_H */

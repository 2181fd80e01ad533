/*
 * Sessions: what a Tinker client creates first and keeps alive with a
 * heartbeat every 10 s.  A session that sends no heartbeat for timeout_ms
 * expires: the on_expire hook runs (the training part unloads its models
 * there; checkpoints stay) and the session is kept, marked expired, so
 * that GET /api/v1/sessions/{id} still lists what it made.  At most
 * max_expired expired sessions are kept in memory; older ones are dropped
 * (the database keeps them once persistence is in).
 *
 * A client may also close its session (POST /api/v1/close_session): the
 * same as an expiry -- the models are unloaded, checkpoints and records
 * stay -- but at once and for good.  A closed session is kept with the
 * expired ones, marked closed (in the database too, so a restart does not
 * revive it), and every later call on it or on its models and sampling
 * sessions is answered 410 Gone, its heartbeats too.
 *
 * Live sessions are kept in order of their last heartbeat; since every
 * session has the same timeout, the head is always the next to expire and
 * one unref'd timer suffices.
 */
#ifndef TB_SERVER_SESSIONS_H
#define TB_SERVER_SESSIONS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/idmap.h"
#include "server/auth.h"
#include "server/idgen.h"

#define TB__SESSION_ID_MAX 40  /* "sess-" + 32 hex + NUL, rounded */

typedef struct tb__session_s tb__session_t;
typedef struct tb__sessions_s tb__sessions_t;

typedef struct tb__strlist_s {
  char **items;
  size_t n, cap;
} tb__strlist_t;

struct tb__session_s {
  /* public */
  void *data;                     /* the training part's */
  /* read-only */
  char id[TB__SESSION_ID_MAX];
  size_t id_len;
  const tb__user_t *owner;
  json_t *tags;                   /* array of strings */
  json_t *user_metadata;          /* object */
  char *sdk_version;              /* NULL when not sent */
  char *project_id;               /* NULL when not sent */
  double created_wall;            /* seconds since the epoch */
  uint64_t last_heartbeat_ms;     /* loop time */
  int expired;                    /* expired or closed: no longer live */
  int closed;                     /* closed by its client */
  tb__strlist_t training_run_ids;
  tb__strlist_t sampler_ids;
  /* private */
  tb__sessions_t *ss;             /* the table it is in */
  tb__idmap_link_t link;          /* in ss->by_id */
  tb__session_t *lnext, *lprev;   /* live (by heartbeat) or expired list */
  tb__session_t *anext, *aprev;   /* every session, newest first */
};

typedef void (*tb__session_expire_cb)(tb__sessions_t *ss, tb__session_t *s);
/* What the persistent store hears about (on_event): a session made,
 * expired or closed, a sampling session id added (id). */
enum {
  TB__SESSION_CREATED = 1,
  TB__SESSION_EXPIRED,
  TB__SESSION_SAMPLER_ADDED,
  TB__SESSION_CLOSED
};
typedef void (*tb__session_event_cb)(tb__sessions_t *ss, tb__session_t *s, int event,
                                     const char *id);
typedef void (*tb__sessions_close_cb)(tb__sessions_t *ss);

struct tb__sessions_s {
  /* public */
  void *data;
  tb__session_expire_cb on_expire;  /* optional; set by the training part */
  tb__session_event_cb on_event;    /* optional; set by the store */
  /* read-only */
  uv_loop_t *loop;
  uint64_t timeout_ms;
  size_t max_expired;
  size_t n_live, n_expired;
  uint64_t n_created, n_heartbeats, n_closed;
  /* private */
  tb__idgen_t ids;
  tb__idmap_t by_id;              /* every session kept, by id */
  struct { tb__session_t *head, *tail; } live, dead;
  tb__session_t *all;             /* newest first */
  uv_timer_t timer;
  uint64_t timer_due;
  int closing;
  tb__sessions_close_cb close_cb;
};

int tb__sessions_init(uv_loop_t *loop, tb__sessions_t *ss, uint64_t timeout_ms);
void tb__sessions_close(tb__sessions_t *ss, tb__sessions_close_cb close_cb);

/* A new live session of owner.  tags and user_metadata are borrowed and
 * referenced (may be NULL).  Returns 0, TB_ECLOSING or TB_ENOMEM. */
int tb__session_create(tb__sessions_t *ss, const tb__user_t *owner, json_t *tags,
                       json_t *user_metadata, tb_slice_t sdk_version,
                       tb_slice_t project_id, tb__session_t **out);
/* A session of an earlier run of the server, read back from the store:
 * expired (expired 1), closed (2), or live with a fresh heartbeat (0).  tags and user_metadata are
 * taken (may be NULL); on_event is not told.  Returns 0, TB_EEXIST (the id
 * is known), TB_EINVAL (a malformed id), TB_ECLOSING or TB_ENOMEM. */
int tb__session_restore(tb__sessions_t *ss, const tb__user_t *owner, tb_slice_t id,
                        double created_wall, int expired, json_t *tags,
                        json_t *user_metadata, const char *sdk_version,
                        const char *project_id, tb__session_t **out);
/* owner's session with this id (live or expired), or NULL. */
tb__session_t *tb__session_find(tb__sessions_t *ss, const tb__user_t *owner,
                                tb_slice_t id);
/* Records a heartbeat of a live session. */
void tb__session_heartbeat(tb__sessions_t *ss, tb__session_t *s);
/* Closes a live session: it leaves the live list at once, on_expire
 * unloads what it holds and on_event hears TB__SESSION_CLOSED.  A session
 * that is no longer live is left as it is. */
void tb__session_close(tb__sessions_t *ss, tb__session_t *s);
/* When id -- a session id, or a model or sampling session id made from one
 * ("<session_id>:train:N", "<session_id>:sample:N") -- names a session of
 * the caller that was closed, answers 410 with a user error and returns 1;
 * otherwise answers nothing and returns 0. */
int tb__session_gone(tb__http_request_t *req, tb_slice_t id);
/* The caller's live session named by a body's "session_id", or NULL after
 * answering 410 (closed) or 404 (unknown or expired). */
tb__session_t *tb__session_live(tb__http_request_t *req, tb_slice_t sid);
/* Answers 410 for the closed session s. */
void tb__session_respond_closed(tb__http_request_t *req, const tb__session_t *s);
/* What GET /api/v1/sessions/{id} lists; the training part adds to them.
 * Returns 0 or TB_ENOMEM; an id already there is not added twice. */
int tb__session_add_training_run(tb__session_t *s, const char *id);
int tb__session_add_sampler(tb__session_t *s, const char *id);
/* Expires sessions whose heartbeat is overdue (the timer calls it). */
void tb__sessions_sweep(tb__sessions_t *ss);

#endif /* TB_SERVER_SESSIONS_H */

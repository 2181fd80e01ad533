/*
 * The Tinkerbell training server: a handle on the host's libuv loop that
 * serves the Tinker dialect (/api/v1/...) and the Tinkerbell dialect
 * (/retrieve_future, legacy routes) over HTTP/1.1.
 *
 * Like a libuv handle, the caller owns the memory of a tb_server_t:
 *
 *   tb_server_t server;
 *   tb_server_options_t opts = { .long_poll_ms = 30000 };
 *   tb_server_init(loop, &server, &opts);
 *   tb_server_listen(&server, "127.0.0.1", 8000);
 *   ...
 *   tb_server_close(&server, on_closed);  // memory valid until on_closed
 *
 * The close is graceful: listening stops, requests held in long polls are
 * answered ("try_again"), answers already under way are written, and the
 * close callback runs once nothing of the server remains on the loop.
 *
 * API keys file (opts.api_keys_file): one key and its user per line,
 * separated by spaces or tabs:
 *
 *   # comments start with '#'; blank lines are ignored
 *   tml-4f0c2a...   alice
 *   tml-9d1b77...   bob
 *   tml-55aa01...   alice     (a user may have several keys)
 *
 * Keys and user names are printable ASCII without spaces; a key may
 * appear only once.  The Tinker Python SDK refuses keys that do not start
 * with "tml-".  With a file, every route except GET /api/v1/healthz and
 * GET / needs the key in X-API-Key or "Authorization: Bearer <key>";
 * what a user creates is invisible to the others.  Without a file, every
 * request is the single user "local".  The key is checked on the
 * request's head: a request without a valid one is answered 401 before
 * its body is read (and its connection closes when a body was coming).
 *
 * HTTPS: with tls_cert_file and tls_key_file the server speaks only TLS
 * (1.2 or later) on its port.
 *
 * Signals: libuv leaves SIGPIPE to the program, and a client that goes
 * away while its answer is written raises it; a program that embeds the
 * server must ignore it (signal(SIGPIPE, SIG_IGN)), as `tinkerbell serve`
 * does.
 *
 * Non-goals: several processes sharing one store.
 */
#ifndef TINKERBELL_SERVER_H
#define TINKERBELL_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "tinkerbell/common.h"
#include "tinkerbell/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tb_server_s tb_server_t;
typedef void (*tb_server_close_cb)(tb_server_t *server);

/* Zero means the default in brackets everywhere. */
typedef struct tb_server_options_s {
  const char *data_dir;         /* checkpoints and the database [none];
                                   copied */
  const char *api_keys_file;    /* see above [no auth]; read at init */
  uint64_t long_poll_ms;        /* how long retrieve_future holds [30000] */
  uint64_t session_timeout_ms;  /* no heartbeat this long: the session
                                   expires [120000] */
  uint64_t result_grace_ms;     /* a delivered result stays retrievable
                                   this long; at least 120000 [120000] */
  uint64_t result_ttl_ms;       /* an unretrieved result expires after
                                   this long [3600000] */
  size_t max_result_bytes;      /* bytes held by results [1 GiB]; above
                                   it delivered results go first */
  double rate_limit_rps;        /* submissions per second per user
                                   [no limit] */
  double rate_limit_burst;      /* token bucket size [max(1, rps)] */
  unsigned max_models_per_user; /* concurrent models per user [no limit] */
  size_t max_body;              /* request body limit [64 MiB]; larger
                                   bodies are answered 413 */
  size_t max_body_memory;       /* bytes of request bodies held at once
                                   over all connections, counted from
                                   each request's head [512 MiB, or
                                   max_body if larger]; a request that
                                   would pass it is answered 503 with
                                   Retry-After before its body is read.
                                   At least max_body. */
  uint64_t request_timeout_ms;  /* a request's head and body must arrive
                                   within this long of its first byte,
                                   or the connection closes [120000] */
  size_t max_connections;       /* open connections; one more is answered
                                   503 with Retry-After and closed [1024,
                                   or the open-file limit less 64] */
  size_t kv_memory;             /* the KV cache of each base model's
                                   decoder, in bytes [twice the model's
                                   float32 weights, at least 64 MiB]: the
                                   sequences of all sample requests share
                                   it; a request that does not fit now
                                   waits (paused_capacity), one larger
                                   than all of it is answered 400 */
  size_t decode_rows;           /* sample rows of one decode step of
                                   each base model's decoder [32]; a
                                   prompt row counts half of one, so a
                                   step holds twice as many prompt rows:
                                   a new request's prompt goes first, and
                                   the running samples take turns for the
                                   rest, so a step, and the wait of a new
                                   request's first token, stays short;
                                   more rows per step trade that wait for
                                   throughput under heavy load */
  const char *tls_cert_file;    /* HTTPS: a PEM certificate (chain) and */
  const char *tls_key_file;     /* its key, read at init [plain HTTP] */
} tb_server_options_t;

struct tb_server_s {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *loop;
  char message[256];            /* why init or listen failed */
  /* private */
  struct tb__server_s *impl_;
  tb_server_close_cb close_cb_;
};

/* Sets the server up on loop (nothing listens yet).  Returns 0, or
 * TB_EINVAL (bad options), TB_ENOENT / TB_EIO (the keys file cannot be
 * read), TB_ECORRUPT (a malformed keys file; message says which line),
 * TB_ETLS (an unusable certificate or key; message names the file),
 * TB_ENOMEM.  After an error there is nothing to close. */
TB_EXTERN int tb_server_init(uv_loop_t *loop, tb_server_t *server,
                             const tb_server_options_t *opts);
/* Binds host ("127.0.0.1", "::1", "0.0.0.0", "::") and port (0: an
 * ephemeral port, see tb_server_port) and starts accepting. */
TB_EXTERN int tb_server_listen(tb_server_t *server, const char *host, int port);
/* The bound port, or a negative error. */
TB_EXTERN int tb_server_port(const tb_server_t *server);
/* Announces a base model in get_server_capabilities.  The name is copied.
 * Returns 0, TB_EEXIST, TB_EINVAL or TB_ENOMEM. */
TB_EXTERN int tb_server_add_model(tb_server_t *server, const char *name,
                                  int64_t max_context_length);
/* Starts the training part: an engine whose jobs run on the loop's
 * threadpool, the training and sampling routes, and the loads of the base
 * models, each "base" (the generated model every build carries) or
 * "NAME=HF_DIR" (a Hugging Face model directory).  n_models 0 means
 * {"base"}; the first model is the default where a request names none.
 * Each model is announced in get_server_capabilities once loaded (a load
 * that fails is reported in the log and by the requests that need it).
 * shards: work items per training step, 0 for one per core.  Call at most
 * once, before or after tb_server_listen; without it the server answers
 * the service routes (sessions, futures) only.  Returns 0, or TB_EEXIST (a
 * name given twice), TB_EINVAL (a malformed model), TB_EBUSY (called
 * twice) or TB_ENOMEM, with server->message saying why; the server then
 * still needs its tb_server_close. */
TB_EXTERN int tb_server_start_training(tb_server_t *server, const char *const *models,
                                       size_t n_models, size_t shards);
/* Whether a base model of the training part is there: 1 loaded, 0 still
 * loading (on the threadpool), TB_EINVAL when its load failed (*message,
 * valid while the server lives, says why, naming the file and field:
 * "the base model q failed to load: DIR/config.json: ..."), or TB_ENOENT
 * for a name it does not serve.  message may be NULL.  A program that
 * serves its own models can wait for them with this before it listens. */
TB_EXTERN int tb_server_model_state(tb_server_t *server, const char *name,
                                    const char **message);
/* Graceful close (see above).  close_cb may be NULL; it never runs from
 * inside this call. */
TB_EXTERN void tb_server_close(tb_server_t *server, tb_server_close_cb close_cb);

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_SERVER_H */

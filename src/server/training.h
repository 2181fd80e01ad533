/*
 * The engine-backed routes of the Tinker dialect: what training.c (models
 * and their seq_id-ordered operations) and sampling_routes.c (sampling
 * sessions and asample) share.
 *
 * The training part is a server extension that owns a tb__engine_t on the
 * server's loop.  Every model is a LoRA adapter over one of the base
 * models loaded at start.  Each asynchronous request becomes an op that
 * owns a future, an arena for its decoded inputs (which must outlive the HTTP
 * request) and an engine job.
 */
#ifndef TB_SERVER_TRAINING_H
#define TB_SERVER_TRAINING_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/json.h"
#include "engine/engine.h"
#include "server/internal.h"
#include "server/metrics.h"
#include "server/model_text.h"
#include "wire/types.h"

/* How many recent seq_ids of a model are remembered for deduplication,
 * and how far ahead of the next one a seq_id may be: a model's queue.  A
 * pipelined client with a large batch (one seq_id per chunk of 1024
 * datums) may be hundreds ahead. */
#define TB__SEQ_WINDOW 1024

typedef struct tb__training_s tb__training_t;
typedef struct tb__tmodel_s tb__tmodel_t;
typedef struct tb__top_s tb__top_t;
typedef struct tb__sampler_s tb__sampler_t;

/* A base model the server serves: "base" or NAME=HF_DIR, loaded at
 * start. */
typedef struct tb__tbase_s {
  tb__training_t *tr;
  char *name;
  char *spec;                    /* what the engine loads */
  int builtin;                   /* the generated `base` (byte tokenizer) */
  tb__engine_job_t job;
  tb__engine_model_t *model;      /* our reference, once loaded */
  int state;                     /* 0 loading, 1 ready, -1 failed */
  char *error;
  tb__model_config_t cfg;         /* once loaded; from the start if builtin */
  /* Its tokenizer and renderers (model_text.h), loaded beside the
   * weights; immutable once text_state is 1. */
  tb__mtext_t *text;
  int text_state;                /* 0 loading, 1 settled, -1 out of memory */
  struct text_wait_s *text_waiters;
} tb__tbase_t;

typedef enum {
  TB__OP_CREATE = 0,
  TB__OP_FORWARD,
  TB__OP_FORWARD_BACKWARD,
  TB__OP_OPTIM,
  TB__OP_SAVE,
  TB__OP_SAVE_SAMPLER,
  TB__OP_LOAD,
  TB__OP_UNLOAD,
  TB__OP_SAMPLE
} tb__op_type_t;

/* An op: what every type shares, then the fields of its type, a tagged
 * union on type (C11 anonymous members, so each is named as a field of
 * the op).  Code that handles every type reads a member only under its
 * tag. */
struct tb__top_s {
  tb__training_t *tr;
  tb__op_type_t type;            /* the tag */
  tb__tmodel_t *model;           /* training ops; TB__OP_SAMPLE of a model */
  int64_t seq;
  tb__future_t *future;          /* pending until the op ends; NULL until
                                    accepted */
  tb__engine_job_t job;
  tb__arena_t arena;              /* decoded inputs */
  const char *cancelled;         /* why tb__top_cancel stopped it */
  tb__top_t *next;               /* a model's waiting list, held lists */
  tb__top_t *anext, *aprev;      /* every op alive (tr->ops) */
  /* The Tinkerbell dialect's shape of the result (tinkerbell_results.c),
   * or NULL for the Tinker one; called once the job succeeded, before the
   * model of an unload is freed. */
  json_t *(*encode)(tb__top_t *op);
  void *encode_data;             /* the encoder's, in the arena */
  union {
    struct {                     /* TB__OP_CREATE */
      tb__top_t *then;           /* the load of create-via-load */
      int need_lora;             /* read the shape from then->dir */
    };
    tb__batch_t batch;            /* TB__OP_FORWARD, TB__OP_FORWARD_BACKWARD */
    tb__adam_params_t adam;       /* TB__OP_OPTIM */
    struct {                     /* TB__OP_SAVE, TB__OP_SAVE_SAMPLER, TB__OP_LOAD */
      char *dir;                 /* the checkpoint directory */
      char *tinker_path;         /* what the result names */
      int optimizer;             /* load: with the Adam moments */
      uv_fs_t fs;                /* save: making the parent directories */
      int mkdir_stage;           /* save: parents made (2: all; 3: the
                                    name is free too) */
      int overwrite;             /* save_weights: replace a checkpoint */
      int64_t sampler_seq;       /* unnamed save for sampler: the
                                    sampling_session_seq_id, else -1 */
      int64_t ttl_seconds;       /* save: the checkpoint expires after
                                    this long; 0: never (store.h) */
    };
    struct {                     /* TB__OP_SAMPLE */
      tb__tbase_t *base;         /* the base model */
      int unchecked;             /* tokens not yet checked against the
                                    vocabulary (base loading) */
      tb__sampler_t *sampler;    /* a Tinker sampling session's, or NULL */
      tb__sampling_params_t sampling;
      const int32_t *prompt;
      size_t prompt_len;
    };
  };
};

/* Whether op's type has the checkpoint members (dir, tinker_path...). */
static inline int tb__top_has_checkpoint(const tb__top_t *op) {
  return op->type == TB__OP_SAVE || op->type == TB__OP_SAVE_SAMPLER ||
         op->type == TB__OP_LOAD;
}

struct tb__tmodel_s {
  tb__training_t *tr;
  char *id;                      /* "<session_id>:train:<model_seq_id>" */
  tb__user_t *owner;
  tb__session_t *session;
  tb__tbase_t *base;
  tb__lora_config_t lora;
  tb__engine_adapter_t *adapter;  /* NULL until created */
  char create_id[TB__FUTURE_ID_MAX];
  int ready;                     /* the adapter exists */
  int unloading;
  int blocked;                   /* a save's directories are being made */
  tb__top_t *pending_unload;     /* waits for the model to be created or
                                    unblocked */
  int64_t next_seq;              /* the next seq_id to execute */
  int64_t max_seq;               /* the highest seq_id accepted */
  tb__top_t *waiting;            /* accepted, sorted by seq */
  struct {
    int64_t seq;
    char id[TB__FUTURE_ID_MAX];
  } recent[TB__SEQ_WINDOW];
  tb__tmodel_t *next;
};

struct tb__sampler_s {
  tb__training_t *tr;
  char *id;                      /* "<session_id>:sample:<seq>" */
  tb__user_t *owner;
  tb__tbase_t *base;
  char *model_path;              /* NULL: the base model */
  char *dir;
  tb__lora_config_t lora;
  tb__engine_adapter_t *adapter;  /* model_path samplers, once created */
  tb__engine_job_t job;           /* creating and loading the adapter */
  int state;                     /* 0 loading, 1 ready, -1 failed */
  int await_base;                /* created while its base model loads:
                                    1, or 2 with lora known; started by
                                    tb__samples_base_settled */
  tb_category_t fail_category;
  char *fail_message;
  tb__top_t *waiting;            /* asamples until the adapter is ready */
  tb__sampler_t *next;
};

struct tb__training_s {
  tb__server_ext_t ext;
  tb__server_t *srv;
  tb__engine_t engine;
  tb__tbase_t *bases;            /* [0] is the default */
  size_t n_bases;
  tb__tmodel_t *models;
  tb__top_t *held;               /* creates waiting for their base model or
                                    the user's model limit */
  tb__sampler_t *samplers;
  tb__top_t *base_waiting;       /* asamples of a base model while it
                                    loads */
  tb__top_t *ops;                /* ops alive, newest first */
  size_t n_ops;
  size_t n_fs;                   /* file requests in flight */
  int engine_closed;
  uint64_t n_done, n_failed;
  tb__op_metrics_t metrics;      /* latencies and tokens (metrics.c) */
  /* Submits an op whose turn came to the engine (training.c's start_op):
   * the scheduler (sched.c) decides when, training.c what runs. */
  void (*start)(tb__top_t *op);
  /* Frees the part once the engine closed and no work is off the loop
   * (training.c's; ops.c calls it when the last work is back). */
  void (*idle)(tb__training_t *tr);
  int closing;
};

/* Starts the training part on srv's loop: the engine and the loads of
 * the base models, each "base" (the generated model) or "NAME=HF_DIR";
 * n_models 0 means {"base"}.  The first is the default where a request
 * names none.  Every model is announced in get_server_capabilities
 * (`base` at once, the others once loaded).  0 with *out, or a negative
 * code with err's message: TB_EEXIST for a name given twice, TB_EINVAL
 * for a malformed one (nothing to close then, *out NULL), or the
 * engine's error for a model it refuses at once (the extension then
 * closes with the server).  Its routes are the route table's training
 * part, which tb__training_start (api.c) adds. */
int tb__training_create(tb__server_t *srv, const tb__engine_opts_t *opts,
                        const char *const *models, size_t n_models, tb__training_t **out,
                        tb_error_t *err);
/* tb__training_create and the training part's routes (api.c). */
int tb__training_start(tb__server_t *srv, const tb__engine_opts_t *opts,
                       const char *const *models, size_t n_models, tb_error_t *err);
/* srv's training part, or NULL when it does not run. */
tb__training_t *tb__training_find(tb__server_t *srv);
/* The base model of this name, or NULL (sched.c). */
tb__tbase_t *tb__tbase_find(tb__training_t *tr, tb_slice_t name);
/* The same for a request's "base_model" field: 0, or c's error naming
 * the unknown model (with a pointer to get_server_capabilities when
 * hint). */
int tb__tbase_field(tb__jctx_t *c, tb__training_t *tr, tb_slice_t name, int hint,
                    tb__tbase_t **out);

/* --- shared by the route files ---------------------------------------- */

/* ops.c: an op's life, and work off the loop. */
tb__training_t *tb__training_of(tb__http_request_t *req);
/* Work of the training part queued on the threadpool (file reads, large
 * decodes) counts in tr->n_fs: the part is freed only once it is back.
 * Call when such work has finished on the loop. */
void tb__training_fs_done(tb__training_t *tr);
/* A new op of tr, without a future yet (requests refused at submission
 * leave none behind); NULL on ENOMEM. */
tb__top_t *tb__top_alloc(tb__training_t *tr, tb__op_type_t type);
/* The same for a request; answers 503 itself and returns NULL on
 * failure. */
tb__top_t *tb__top_new(tb__http_request_t *req, tb__op_type_t type);
/* Gives op its pending future of the request's user.  0, or answers 503,
 * frees op and returns a negative code. */
int tb__top_accept(tb__http_request_t *req, tb__top_t *op);
void tb__top_free(tb__top_t *op);
/* Fails op's future and frees op. */
void tb__top_fail(tb__top_t *op, tb_category_t category, const char *message);
/* Answers {"request_id", "model_id"?} for a future. */
void tb__respond_future(tb__http_request_t *req, const char *request_id,
                        const char *model_id);
/* Resolves op's future with a JSON object (consumed) and frees op. */
void tb__top_resolve_json(tb__top_t *op, json_t *v);
/* Resolves op's future with a JSON object (consumed) and its protobuf twin pb (taken;
 * rc is what encoding it returned), and frees op; fails it with message when either could
 * not be made. */
void tb__top_resolve_encoded(tb__top_t *op, json_t *v, tb__buf_t *pb, int rc,
                             const char *message);
/* The engine's error as a failed future of op (and frees op). */
void tb__top_fail_job(tb__top_t *op, int status);
/* Nobody waits for op any more (why says so, a static string): a sample
 * stops decoding and gives its KV memory back; it then fails, category
 * user, with why.  Other ops run to their end. */
void tb__top_cancel(tb__top_t *op, const char *why);
/* The future the client of op polls: its own or, for a create, that of
 * the load of create-via-load; NULL for the implicit creates of the
 * Tinkerbell dialect, whose client polls the operation that caused
 * them. */
tb__future_t *tb__top_client_future(tb__top_t *op);

/* checkpoints.c */
/* Parses "tinker://<model_id>/<kind>/<name>"; answers 400 / 404 itself
 * and returns NULL, else the checkpoint directory (malloc'd). */
char *tb__checkpoint_dir(tb__http_request_t *req, const char *field, tb_slice_t path);
/* A checkpoint's name: 1 to 128 letters, digits, '.', '_' or '-', not
 * starting with '.'.  0 or c's error at "path". */
int tb__checkpoint_check_name(tb__jctx_t *c, tb_slice_t name);
/* The LoRA shape of the checkpoint at path when its model is loaded:
 * 1 and *out, else 0. */
int tb__checkpoint_lora(tb__training_t *tr, tb_slice_t path, tb__lora_config_t *out,
                        tb__tbase_t **base);
/* Reads the LoRA shape of the checkpoint at dir on the threadpool.  cb
 * runs on the loop, also while closing (tr->closing then holds), with
 * status 0, lora and the base model the checkpoint was made on ("" when
 * it does not say), or a negative status and a message. */
typedef void (*tb__lora_read_cb)(tb__training_t *tr, void *data, int status,
                                 const tb__lora_config_t *lora, const char *base_name,
                                 const char *message);
int tb__read_checkpoint_lora(tb__training_t *tr, const char *dir, tb__lora_read_cb cb,
                             void *data);

/* Registers model <session>:train:<mseq> and queues its creation behind
 * the base model's load and the user's model limit.  lora NULL: read from
 * then's checkpoint first.  With then (a load, not yet accepted), the
 * client's future is then's, which runs right after the adapter exists;
 * otherwise the create's own.  Answers the request. */
void tb__create_model(tb__http_request_t *req, tb__training_t *tr, tb__tbase_t *base,
                      tb__session_t *s, int64_t mseq, const tb__lora_config_t *lora,
                      tb__top_t *then);
/* Removes m's adapter behind the jobs already in its FIFO; what waits for
 * a missing seq_id fails.  op carries the client's future, or is NULL for
 * the server's own unloads. */
void tb__unload_now(tb__tmodel_t *m, tb__top_t *op);

/* model_routes.c */
/* A decoded forward_backward request as an engine batch (input_key: the
 * path prefix of data, or NULL); checks that the loss has its inputs. */
int tb__fwdbwd_to_batch(tb__jctx_t *c, tb__arena_t *a, const tb__wire_fwdbwd_t *w, tb__batch_t *b,
                        const char *input_key);

/* The "adam_params"? of an optim_step body doc (wire/op_request.h; left
 * out: the defaults) into out, checked before it is narrowed to float:
 * failures name the field ("adam_params.learning_rate: ...").  strict:
 * unknown keys are refused too. */
int tb__adam_from_json(tb__jctx_t *c, const json_t *doc, int strict, tb__adam_params_t *out);

/* sampling_routes.c */
/* owner's sampling session with this id, or NULL. */
tb__sampler_t *tb__sampler_find(tb__training_t *tr, const tb__user_t *owner, const char *id);
/* A new sampling session of owner in sess: over the base model (dir
 * NULL) or over the weights at dir (both taken, also on failure) with the
 * LoRA shape lora, whose adapter starts loading now.  NULL on ENOMEM. */
tb__sampler_t *tb__sampler_open(tb__training_t *tr, tb__user_t *owner, tb__session_t *sess,
                                tb__tbase_t *base, char *id, const tb_slice_t *path,
                                char *dir, const tb__lora_config_t *lora);
void tb__samplers_fail_all(tb__training_t *tr, const char *message);
/* Releases the adapters of sess's sampling sessions; their samples fail
 * from now on. */
void tb__samplers_session_expired(tb__training_t *tr, const tb__session_t *sess);
/* Starts (or fails) the samples that waited for the base model. */
void tb__samples_base_settled(tb__training_t *tr);
void tb__samplers_free(tb__training_t *tr);
/* Samples op (op->base, op->sampler) now. */
void tb__sample_start(tb__top_t *op);

#endif /* TB_SERVER_TRAINING_H */

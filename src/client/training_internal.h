/*
 * What the files of the TrainingClient share (tinkerbell/training_client.h):
 *
 *   training_op.c      op objects, their encoded requests, completion, close
 *   training_seq.c     seq_id order: requests, turns, joining the results
 *   training_custom.c  forward_backward_custom's loss function and second pass
 *   training_ops.c     the operations' entry points and their checks
 *   training_create.c  creation of the model
 *   training_sync.c    the blocking twins
 *
 * Each file calls only those listed above it (training_ops.c sets the
 * hooks by which training_seq.c reaches the custom loss and the sampling
 * client), so the files form no circle.
 *
 * Each public call becomes a tb__tc_op_t holding one or more requests
 * (tb__tc_req_t, one per seq_id: the chunks of a forward_backward).  Their
 * bodies are encoded at the call, without the model id, which is added
 * when they are sent (the model may not exist yet).  Sequenced ops wait in
 * a FIFO; the head is started when no other op is being submitted, and
 * the turn passes on once its last request's POST is handed to the
 * runtime (the custom loss's forward pass: once its backward pass's POST
 * was answered, through the submitted hook of the operation layer, op.c).  Each request is then a
 * tb__client_op_t of its own whose future is polled concurrently with the
 * others; when all of an op's requests are done, its chunk results are
 * joined (chunk.c) and the op's own future completes.
 */
#ifndef TB_CLIENT_TRAINING_INTERNAL_H
#define TB_CLIENT_TRAINING_INTERNAL_H

#include <jansson.h>

#include "client/clients.h"
#include "tinkerbell/training_client.h"

typedef enum {
  TB__TC_FORWARD,
  TB__TC_FORWARD_BACKWARD,
  TB__TC_CUSTOM,
  TB__TC_OPTIM,
  TB__TC_SAVE,
  TB__TC_SAVE_SAMPLER,
  TB__TC_SAVE_GET_SAMPLER,
  TB__TC_LOAD,
  TB__TC_UNLOAD,
  TB__TC_INFO
} tb__tc_kind_t;

typedef struct tb__tc_op_s tb__tc_op_t;
typedef struct tb__training_client_s tb__tc_t;

/* One request of an op: one seq_id on the wire. */
typedef struct tb__tc_req_s {
  tb__tc_op_t *op;
  size_t index;
  int64_t seq;                 /* -1: none */
  tb__buf_t proto;              /* the protobuf body without model_id, or */
  json_t *json;                /* the JSON body without model_id */
  size_t n_datums;
  tb_future_t *f;              /* the operation's future once started */
  int started;
  int submit_status;           /* 1 until the POST ends, then its status */
  int done;
} tb__tc_req_t;

struct tb__tc_op_s {
  tb__tc_t *tc;
  tb__tc_kind_t kind;
  tb_future_t *future;         /* the caller's */
  tb__tc_req_t *reqs;
  size_t n_reqs;
  size_t first;                /* the requests of the current phase: */
  size_t count;                /* [first, first + count) */
  size_t n_started, n_done;
  tb_forward_backward_output_t **parts;
  tb_error_t err;              /* the first failure */
  int cancelled;
  int queued;                  /* in tc->queue */
  int holds_turn;
  /* forward_backward_custom */
  tb_train_datum_t *datums;
  size_t n_datums;
  tb_custom_loss_fn fn;
  void *fn_data;
  /* what follows a forward pass of a custom loss (training_custom.c) */
  void (*after_forward)(tb__tc_op_t *op);
  /* sampling clients; take_session receives the answer's session id */
  tb_sampling_client_t *samp;
  char *model_path;
  void (*take_session)(tb__tc_op_t *op, char *session_id);
  tb__tc_op_t *next;               /* in the queue or the model's wait list */
  tb__tc_op_t *live_next, *live_prev;  /* every registered op, for close */
  tb__alarm_t alarm;           /* completes the op on a later turn */
};

struct tb__training_client_s {
  tb_training_client_t *pub;
  tb_service_client_t *svc;
  tb__rt_t *rt;
  char *model_id;
  char *base_model;
  int64_t model_seq;
  int64_t next_seq;            /* the next seq_id to reserve */
  int json;
  int state;                   /* 0 creating, 1 created, -1 creation failed */
  tb_error_t create_err;
  tb_future_t *create_f;       /* the caller's creation future */
  tb_future_t *session_f;      /* the session being obtained */
  tb_future_t *create_op_f;    /* the create request */
  int broken;                  /* a seq_id was lost: those after it cannot run */
  int64_t broken_seq;          /* the first lost seq_id (0: all, when closing) */
  tb_error_t broken_err;
  tb__tc_op_t *queue, *queue_tail; /* sequenced ops not yet started */
  tb__tc_op_t *submitting;         /* the op holding the turn */
  tb__tc_op_t *waiting_model;      /* unsequenced ops waiting for the model */
  tb__tc_op_t *live;               /* ops not yet completed */
  size_t n_live;
  int closing;
  tb__alarm_t close_alarm;
  /* creation */
  int create_via_load;
  int create_optimizer;
  char *create_path;
  tb_lora_params_t lora;
};

/* ------------------------------------------------------------ training_op.c */

static inline tb__tc_t *tb__tc_usable(tb_training_client_t *tc) {
  return tc != NULL ? tc->impl_ : NULL;
}

/* A seq_id was lost (a failed or cancelled submission, why NULL for
 * cancelled): the ops after it fail with TB_EBUSY.  stopped_at tells
 * whether seq is one of those. */
void tb__tc_set_broken(tb__tc_t *tc, int64_t seq, const tb_error_t *why);
int tb__tc_stopped_at(const tb__tc_t *tc, int64_t seq);
/* Keeps e as op's failure unless it has one. */
void tb__tc_keep_first_error(tb__tc_op_t *op, const tb_error_t *e);

/* An op of n_reqs requests with its (not yet returned) future; discard
 * releases one never registered (training_seq.c registers). */
tb__tc_op_t *tb__tc_op_new(tb__tc_t *tc, tb__tc_kind_t kind, size_t n_reqs);
void tb__tc_op_discard(tb__tc_op_t *op);
/* Completes the caller's future (failed when op has an error or was
 * cancelled) and releases op; fail_later does it on a later turn. */
void tb__tc_op_complete(tb__tc_op_t *op, const tb_result_type_t *type, void *result);
void tb__tc_op_fail_later(tb__tc_op_t *op, const tb_error_t *e);
/* Encodes the requests [first, first + count) of op from datums, with
 * seq_ids from seq0; bounds split the datums. */
int tb__tc_encode_chunks(tb__tc_op_t *op, size_t first, const tb_train_datum_t *data,
                         const size_t *bounds, size_t count, int64_t seq0, const char *loss_fn,
                         const tb_loss_fn_config_entry_t *config, size_t n_config,
                         int forward_only);
/* Closing: once nothing is live, the close callback runs on a later turn. */
void tb__tc_check_closed(tb__tc_t *tc);

/* ------------------------------------------------------------ training_seq.c */

/* Hands op's future to the caller, counts it live, and lets the caller
 * cancel it (the op then leaves the order). */
int tb__tc_op_register(tb__tc_op_t *op, tb_future_t **out);
/* Every started request of op is done: complete it or start its next phase. */
void tb__tc_op_finish(tb__tc_op_t *op);
/* Requests: start request i, or the current phase (the others first, the
 * first alone once they are in). */
int tb__tc_start_req(tb__tc_op_t *op, size_t i);
int tb__tc_start_phase(tb__tc_op_t *op);
/* Turns: sequenced ops go through the queue; the turn is released when
 * the op's submission is over. */
void tb__tc_enqueue(tb__tc_op_t *op);
void tb__tc_pump(tb__tc_t *tc);
void tb__tc_release_turn(tb__tc_op_t *op);
/* Unsequenced ops (get_info) wait only for the model; start_unsequenced
 * sends one now. */
void tb__tc_run_or_wait_model(tb__tc_op_t *op);
void tb__tc_start_unsequenced(tb__tc_op_t *op);
/* A result's string field as a tb_result_string (fallback when absent and
 * not required). */
int tb__tc_decode_string_field(const char *body, size_t len, const char *field, int required,
                               const char *fallback, const tb_result_type_t **type, void **result,
                               tb_error_t *err);

/* ------------------------------------------------------------ training_custom.c */

/* The forward pass of a custom loss is done (in op->parts[0]): run the
 * caller's function and start the backward pass (op->after_forward). */
void tb__tc_run_custom_loss(tb__tc_op_t *op);

#endif /* TB_CLIENT_TRAINING_INTERNAL_H */

/*
 * What one answer of retrieve_future says about the future itself
 * (pending: {"type": "try_again", "queue_state", "queue_state_reason"?,
 * "started_at", "queue_position", "retry_after_ms"?}; failed: {"error",
 * "category"} or an error object; the Tinkerbell dialect's {"status"}),
 * read by the flat-object reader (core/json_scan.h) without allocating,
 * or from a jansson document for other shapes.  Lenient, as a poller
 * must be: a field of another type reads as absent.  The client's poll
 * (client/poll.c) decides what an answer leads to.  The server's pending
 * and failed answers are written here too, into a buffer the caller sizes
 * (a poll is answered many thousand times a second, so no allocation but
 * the request's arena); a result's own fields are its decoder's
 * (op_result.h, output.h, ...).
 */
#ifndef TB_WIRE_FUTURE_ANSWER_H
#define TB_WIRE_FUTURE_ANSWER_H

#include <jansson.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/json_scan.h"

/* What a JSON answer says, read by the flat-object reader or from a
 * jansson document; the slices point into the body or the document. */
typedef struct tb__wire_future_answer_s {
  tb_slice_t type, status;        /* base NULL: absent */
  int has_error;                  /* "error" present and not null */
  tb_slice_t error_msg, category;
  int has_queue_state;
  tb_slice_t queue_state, reason;
  int has_started;                /* "started_at" present */
  double started_at;              /* 0: null or unreadable */
  int64_t queue_position;         /* -1: absent */
  int64_t retry_after_ms;         /* 0: absent */
  const json_t *result;           /* a "completed" envelope's "result";
                                     NULL: absent (from_json only) */
} tb__wire_future_answer_t;

/* POST /api/v1/retrieve_future {"request_id", "allow_metadata_only"}. */
typedef struct tb__wire_future_request_s {
  const char *request_id;
  int allow_metadata_only;
} tb__wire_future_request_t;

/* Appends the request to b without allocating but for b (a poll is sent
 * again and again); 0 or TB_ENOMEM. */
int tb__wire_future_request_to_buf(const tb__wire_future_request_t *r, tb__buf_t *b);
/* 0 or TB_EFIELD (recorded in c); request_id is the document's. */
int tb__wire_future_request_from_json(tb__jctx_t *c, const json_t *v,
                                      tb__wire_future_request_t *out);

/* Every field absent. */
void tb__wire_future_answer_init(tb__wire_future_answer_t *a);
/* The tb__jscan_object member callback: ctx is a tb__wire_future_answer_t,
 * initialised by tb__wire_future_answer_init. */
int tb__wire_future_answer_member(void *ctx, const tb__jscan_member_t *m);
/* The same from a document (nested values, escapes, an error object). */
void tb__wire_future_answer_from_json(tb__wire_future_answer_t *a, const json_t *doc);

/* What the server says of a pending future: {"type": "try_again",
 * "request_id", "queue_state", "queue_state_reason"?, "started_at":
 * RFC 3339 | null, "queue_position": jobs ahead}.  The SDK ignores the
 * fields it does not know (its response models are extra="ignore"); the
 * last two tell a job queued behind others from one that runs. */
typedef struct tb__wire_try_again_s {
  const char *request_id;   /* the server's own id: written as it is */
  const char *queue_state;  /* active, paused_capacity, ... */
  const char *reason;       /* NULL: absent */
  const char *started_at;   /* NULL: null */
  size_t queue_position;
} tb__wire_try_again_t;

/* The most bytes tb__wire_try_again_write writes for a. */
size_t tb__wire_try_again_size(const tb__wire_try_again_t *a);
/* Writes the answer into dst and returns its length. */
size_t tb__wire_try_again_write(const tb__wire_try_again_t *a, char *dst);

/* A failed future: {"error": message, "category"}, and for the Tinkerbell
 * dialect "detail": "Job failed: message" first.  The size is the most
 * bytes the write takes. */
size_t tb__wire_failure_size(const char *message);
size_t tb__wire_failure_write(const char *message, const char *category, int with_detail,
                              char *dst);

#endif /* TB_WIRE_FUTURE_ANSWER_H */

/*
 * What one answer of retrieve_future says (poll.c decides what it leads
 * to): read by the flat-object reader (core/json_scan.h) without
 * allocating, or from a jansson document for other shapes.  Private to
 * src/client/poll*.c.
 */
#ifndef TB_CLIENT_POLL_ANSWER_H
#define TB_CLIENT_POLL_ANSWER_H

#include <jansson.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/json_scan.h"

/* What a JSON answer says, read by the flat-object reader or from a
 * jansson document; the slices point into the body or the document. */
typedef struct tb__poll_answer_s {
  tb_slice_t type, status;        /* base NULL: absent */
  int has_error;                  /* "error" present and not null */
  tb_slice_t error_msg, category;
  int has_queue_state;
  tb_slice_t queue_state, reason;
  int has_started;                /* "started_at" present */
  double started_at;              /* 0: null or unreadable */
  int64_t queue_position;         /* -1: absent */
  int64_t retry_after_ms;         /* 0: absent */
} tb__poll_answer_t;

void tb__poll_answer_init(tb__poll_answer_t *a);
/* The tb__jscan_object member callback: ctx is a tb__poll_answer_t,
 * initialised by tb__poll_answer_init. */
int tb__poll_answer_member(void *ctx, const tb__jscan_member_t *m);
/* The same from a document (nested values, escapes, an error object). */
void tb__poll_answer_from_doc(tb__poll_answer_t *a, const json_t *doc);

#endif /* TB_CLIENT_POLL_ANSWER_H */

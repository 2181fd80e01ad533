/*
 * The generic handler of the route table (routes.h): what every route
 * with a body did at its start, done once from the row's columns.  It
 * reads the body (a JSON object, or JSON or protobuf for the decoder),
 * makes the row's op, runs the row's prepare (which may wait for a base
 * model's text and run the handler again), decodes (on the threadpool
 * when the body is large and the row allows it), answers the failures of
 * decoding and submission (400 with the field's path, or the status the
 * route set), then hands the decoded request to the row's submit (or
 * sends the answer its decoder wrote) and frees what is left.
 *
 * Not here: what a route checks and does (its submit, in the file of its
 * concern), the gates of a row (server.c), the answers of success.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/routes.h"
#include "server/training.h"

static int is_proto(const tb__http_request_t *req) {
  const tb__http_header_t *h = tb__http_request_header(req, "Content-Type");
  static const char want[] = "application/x-protobuf";
  return h != NULL && h->value.len >= sizeof(want) - 1 &&
         strncasecmp(h->value.base, want, sizeof(want) - 1) == 0;
}

/* Parses and decodes.  Touches only the body, the call and the op's
 * arena: safe on a worker thread. */
static void decode(tb__route_call_t *call) {
  int rc = 0;
  if ((call->side->call & TB__CALL_JSON) && call->doc == NULL)
    rc = tb__server_parse_object(call->req->body, &call->doc, &call->err);
  if (rc >= 0 && call->side->decode != NULL)
    rc = call->side->decode(call);
  call->rc = rc;
}

/* Answers a failure of decoding or submission. */
static void refuse(tb__route_call_t *call) {
  if (call->status == 400)
    tb__server_respond_bad(call->req, &call->err);  /* 503 for a bare out of memory */
  else
    tb__server_respond_error(call->req, call->status, "%s", tb_error_message(&call->err));
}

/* Frees what the submit did not take.  The call is the handler's own
 * allocation, not the request's: an answer may end the request (and its
 * arena) before the handler is done. */
static void release(tb__route_call_t *call) {
  if (call->op != NULL)
    tb__top_free(call->op);
  json_decref(call->doc);
  tb__arena_free(&call->arena);
  free(call->answer);
  tb_error_clear(&call->err);
  free(call);
}

static void on_answered(tb__http_request_t *req, int status) {
  (void)status;
  free(tb__sreq(req)->data);
}

/* The answer the decoder wrote, lent to the response until it is sent. */
static void send_answer(tb__route_call_t *call) {
  tb__sreq_t *sr = tb__sreq(call->req);
  sr->data = call->answer;
  sr->on_done = on_answered;
  call->answer = NULL;
  tb__server_respond_json(call->req, 200, sr->data, call->answer_len);
}

/* On the loop, once decoded: the submit, then the clean-up. */
static void finish(tb__route_call_t *call, int closing) {
  if (closing)
    tb__server_respond_error(call->req, 503, "the server is closing");
  else if (call->rc < 0)
    refuse(call);
  else if (call->answer != NULL)
    send_answer(call);
  else if (tb__sreq(call->req)->status == 0 && call->side->submit(call) < 0)
    refuse(call);  /* (a decoder on the loop may have answered) */
  release(call);
}

static void offload_run(tb__offload_t *o) {
  decode((tb__route_call_t *)o);
}

static void offload_done(tb__offload_t *o) {
  finish((tb__route_call_t *)o, o->tr->closing);
}

/* The row's prepare: 0 to decode; else the request is answered (a
 * failure refused here) or waits for its base model's text, and the
 * handler runs again once that is loaded. */
static int prepare(tb__route_call_t *call) {
  int rc = call->side->prepare(call);
  if (rc < 0 && tb__sreq(call->req)->status == 0)
    refuse(call);
  return rc != 0 || tb__sreq(call->req)->status != 0;
}

/* The op of the row, with its result's encoder; 0, or answers 503. */
static int make_op(tb__route_call_t *call) {
  const tb__route_side_t *side = call->side;
  call->op = tb__top_new(call->req, side->op);
  if (call->op == NULL)
    return -1;
  if (side->encode_size == 0)
    return 0;
  call->op->encode = side->encode;
  call->op->encode_data = tb__arena_calloc(&call->op->arena, 1, side->encode_size);
  if (call->op->encode_data != NULL)
    return 0;
  tb__server_respond_error(call->req, 503, "out of memory");
  return -1;
}

void tb__route_generic(tb__http_request_t *req) {
  const tb__route_side_t *side = tb__sreq(req)->side;
  /* The decoder's request follows the call, aligned for any type. */
  size_t head = (sizeof(tb__route_call_t) + _Alignof(max_align_t) - 1) &
                ~(_Alignof(max_align_t) - 1);
  tb__route_call_t *call = calloc(1, head + side->in_size);
  if (call == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return;
  }
  call->req = req;
  call->side = side;
  call->in = side->in_size ? (char *)call + head : NULL;
  call->status = 400;
  tb__jctx_init(&call->c, &call->err);
  tb__arena_init(&call->arena, 4096);
  /* A large JSON body is parsed off the loop, unless the prepare reads it. */
  int off_loop = (side->call & TB__CALL_OFF_LOOP) && req->body.len > TB__OFF_LOOP_BODY &&
                 side->prepare == NULL;
  /* A small JSON body is read before the op is made, as it always was. */
  if (((side->call & TB__CALL_JSON) && !off_loop &&
       tb__server_parse_body(req, &call->doc) != 0) ||
      ((side->call & TB__CALL_OP) && make_op(call) != 0) ||
      (side->prepare != NULL && prepare(call) != 0)) {
    release(call);  /* answered, or waiting */
    return;
  }
  if (side->call & TB__CALL_PROTO)
    call->proto = is_proto(req);
  if (side->call & TB__CALL_OFF_LOOP) {
    call->o = (tb__offload_t){ .tr = tb__training_of(req), .req = req, .run = offload_run,
                               .done = offload_done };
    tb__offload(&call->o);
    return;
  }
  decode(call);
  finish(call, 0);
}

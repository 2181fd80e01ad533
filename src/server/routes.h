/*
 * The route table of the server (routes.c): one row per route of both
 * dialects, and what each row's dialect does with a request.
 *
 * Every handler starts after the server's common start (server.c,
 * on_request): the route's user is known (or the request was answered
 * 401), and the row's gates have passed: TB__ROUTE_CLOSING answers 503
 * while the server closes, TB__ROUTE_SUBMITS takes the user's rate limit
 * (429).  Answers go through the server's tb__server_respond*.
 *
 * Every route that reads a body, but those listed below, is served by
 * the generic handler (tb__route_generic, handler.c), from its row's
 * columns: the body (TB__CALL_JSON: a JSON object, 400 otherwise;
 * TB__CALL_PROTO: JSON or protobuf, which the decoder reads), an op made
 * first (TB__CALL_OP, of type `op`, whose result the row's `encode`
 * encodes: the Tinker wire types when NULL, the Tinkerbell dialect's
 * shape with tb__tb_encode), a prepare, a decoder filling `in_size` bytes
 * of typed request (the wire struct of src/wire/ where the wire type
 * exists, so that the submit begins with its fields), TB__CALL_OFF_LOOP
 * to decode on the threadpool when the body is over TB__OFF_LOOP_BODY,
 * and the submit, which gets the decoded call.
 *
 * The prepare runs on the loop before the decoder, for the routes that
 * meet text (asample of both dialects, the Tinkerbell dialect's sample,
 * forward, forward_backward, tokenize and detokenize): it finds from the
 * body the base model whose tokenizer or renderer the decoder needs, and
 * when that text is still loading returns 1 after tb__mtext_wait, which
 * runs the handler again from the start once it is there (a prepare
 * reads the body on the loop, even a large one).  The submit of a
 * training or sampling call looks its model up again, since the model may
 * have changed during an off-loop decode (409, or 404 for a sample).  The
 * decoder of tokenize and detokenize writes the whole answer
 * (call->answer, off the loop too), which the handler sends instead of
 * calling a submit.
 *
 * A prepare, decoder or submit that fails returns a negative code with
 * call->err set: the handler answers 400 with its "<path>: <reason>" (or
 * call->status, such as 422, with its message) and frees the op.  A
 * prepare, or a decoder on the loop, may answer itself (the 404 of an
 * unknown model); nothing after it is called then.
 *
 * Rows that keep a handler of their own, and why:
 * - the GET and DELETE routes and POST .../checkpoints/.../publish: no
 *   body; their input is the path and the query.
 * - client_config and dynamic_config: an empty body is accepted, and
 *   client_config closes its connection whatever the body holds.
 * - retrieve_future (both dialects): a long poll, held on the future.
 */
#ifndef TB_SERVER_ROUTES_H
#define TB_SERVER_ROUTES_H

#include "core/json.h"
#include "server/internal.h"
#include "server/model_text.h"
#include "wire/sample.h"

enum {
  TB__CALL_JSON = 1,      /* the body is a JSON object */
  TB__CALL_PROTO = 2,     /* JSON or protobuf (Content-Type): the decoder reads it */
  TB__CALL_OP = 4,        /* an op of type `op` (and encoder `encode`) is made
                             before decoding */
  TB__CALL_OFF_LOOP = 8   /* decoded on the threadpool when over TB__OFF_LOOP_BODY */
};

/* One request through the generic handler (which allocates and frees it). */
struct tb__route_call_s {
  tb__offload_t o;               /* first: the work off the loop */
  tb__http_request_t *req;
  const tb__route_side_t *side;  /* the row's columns */
  json_t *doc;                   /* TB__CALL_JSON: the body; released after
                                    submit */
  void *in;                      /* the decoder's request (in_size bytes,
                                    zeroed), or NULL */
  struct tb__top_s *op;          /* TB__CALL_OP: the op; submit takes it by
                                    setting this NULL, else it is freed */
  struct tb__tmodel_s *model;    /* the body's model, for the decoders
                                    that look it up */
  int proto;                     /* TB__CALL_PROTO: the body is protobuf */
  int status;                    /* of a failure: 400 unless set */
  int rc;                        /* the decoder's */
  tb__jctx_t c;                  /* field paths of failures, into err */
  tb_error_t err;
  tb__arena_t arena;             /* the decoder's, for rows without an op */
  /* A decoder that writes the whole answer (tokenize: off the loop)
   * leaves its JSON here (malloc'd): the handler answers 200 with it
   * instead of calling the submit. */
  char *answer;
  size_t answer_len;
};

/* The handler of every row whose side has a submit (handler.c). */
void tb__route_generic(tb__http_request_t *req);

/* Adds the rows of part, in the table's order (which the index keeps),
 * with data as their route data (tb__training_t for the training part,
 * the server for the others).  0, TB_EINVAL or TB_ENOMEM. */
int tb__routes_add(tb__server_t *srv, tb__part_t part, void *data);

/* service.c */
void tb__route_index(tb__http_request_t *req);
void tb__route_metrics(tb__http_request_t *req);
void tb__route_healthz(tb__http_request_t *req);
void tb__route_client_config(tb__http_request_t *req);
void tb__route_dynamic_config(tb__http_request_t *req);
void tb__route_capabilities(tb__http_request_t *req);
int tb__route_telemetry(tb__route_call_t *call);
/* sessions.c */
int tb__route_create_session(tb__route_call_t *call);
int tb__route_heartbeat(tb__route_call_t *call);
int tb__route_close_session(tb__route_call_t *call);
void tb__route_list_sessions(tb__http_request_t *req);
void tb__route_get_session(tb__http_request_t *req);
/* futures_routes.c */
void tb__futures_route_tinker(tb__http_request_t *req);
void tb__futures_route_tinkerbell(tb__http_request_t *req);
/* rest_routes.c */
void tb__route_list_runs(tb__http_request_t *req);
void tb__route_get_run(tb__http_request_t *req);
void tb__route_run_checkpoints(tb__http_request_t *req);
void tb__route_user_checkpoints(tb__http_request_t *req);
void tb__route_delete_checkpoint(tb__http_request_t *req);
void tb__route_archive(tb__http_request_t *req);
void tb__route_publish(tb__http_request_t *req);
void tb__route_unpublish(tb__http_request_t *req);
int tb__route_ttl(tb__route_call_t *call);
void tb__route_download(tb__http_request_t *req);
/* model_routes.c: the Tinker dialect's models (generic) */
int tb__route_create_model(tb__route_call_t *call);
int tb__route_fwd_decode(tb__route_call_t *call);
int tb__route_fwd(tb__route_call_t *call);
int tb__route_optim_step(tb__route_call_t *call);
int tb__route_save(tb__route_call_t *call);
int tb__route_load_weights(tb__route_call_t *call);
int tb__route_unload_model(tb__route_call_t *call);
int tb__route_get_info(tb__route_call_t *call);
int tb__route_model(tb__route_call_t *call);
int tb__route_weights_info(tb__route_call_t *call);
/* sampling_routes.c: the Tinker dialect's sampling */
/* An asample's request (call->in), read by its prepare. */
typedef struct tb__asample_in_s {
  tb__wire_sample_request_t r;
  struct tb__sampler_s *s;       /* its sampling session, or NULL */
} tb__asample_in_t;
int tb__route_create_sampling_session(tb__route_call_t *call);
void tb__route_get_sampler(tb__http_request_t *req);
int tb__route_asample_prepare(tb__route_call_t *call);
int tb__route_asample_decode(tb__route_call_t *call);
int tb__route_asample(tb__route_call_t *call);
/* tinkerbell_routes.c: the Tinkerbell dialect's models */
void tb__route_tb_list_loss_functions(tb__http_request_t *req);
/* (generic; forward and forward_backward with a tb__tb_text_in_t) */
int tb__route_tb_train_prepare(tb__route_call_t *call);
int tb__route_tb_train_decode(tb__route_call_t *call);
int tb__route_tb_train(tb__route_call_t *call);
int tb__route_tb_get_info(tb__route_call_t *call);
int tb__route_tb_model(tb__route_call_t *call);
int tb__route_tb_optim(tb__route_call_t *call);
int tb__route_tb_add_lora(tb__route_call_t *call);
int tb__route_tb_remove_lora(tb__route_call_t *call);
int tb__route_tb_save(tb__route_call_t *call);
int tb__route_tb_load(tb__route_call_t *call);
/* tinkerbell_text.c: the Tinkerbell dialect's text (generic, with a
 * tb__tb_text_in_t) */
int tb__route_tb_sample_prepare(tb__route_call_t *call);
int tb__route_tb_sample_decode(tb__route_call_t *call);
int tb__route_tb_sample(tb__route_call_t *call);
int tb__route_tb_text_prepare(tb__route_call_t *call);
int tb__route_tb_tokenize(tb__route_call_t *call);    /* decoders that answer */
int tb__route_tb_detokenize(tb__route_call_t *call);

#endif /* TB_SERVER_ROUTES_H */

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
 * Every route that reads a body, but those listed below, is served by the
 * generic handler (tb__route_generic, handler.c), from its row's columns: the body (TB__CALL_JSON: a JSON object,
 * 400 otherwise; TB__CALL_PROTO: JSON or protobuf, which the decoder
 * reads), an op made first (TB__CALL_OP, of type `op`, whose result the
 * row's `encode` encodes: the Tinker wire types when NULL, the Tinkerbell
 * dialect's shape with tb__tb_encode), a decoder filling `in_size`
 * bytes of typed request (from src/wire/ where the wire type exists),
 * TB__CALL_OFF_LOOP to decode on the threadpool when the body is over
 * TB__OFF_LOOP_BODY, and the submit, which gets the decoded call.  A
 * decoder or submit that fails returns a negative code with call->err
 * set: the handler answers 400 with its "<path>: <reason>" (or
 * call->status, such as 422, with its message) and frees the op.  A
 * decoder on the loop may answer itself (the 404 of an unknown model);
 * the submit is then not called.
 *
 * Rows that keep a handler of their own, and why:
 * - the GET and DELETE routes and POST .../checkpoints/.../publish: no
 *   body; their input is the path and the query.
 * - client_config and dynamic_config: an empty body is accepted, and
 *   client_config closes its connection whatever the body holds.
 * - retrieve_future (both dialects): a long poll, held on the future.
 * - asample (Tinker; stop strings) and the Tinkerbell dialect's sample,
 *   asample, forward, forward_backward (and their _async and legacy
 *   paths), tokenize and detokenize: from the body they find the base
 *   model whose tokenizer or renderer they need, and wait for it to load
 *   (tb__mtext_wait, which runs the handler again) before they decode;
 *   the training and sampling ones look their model up again after an
 *   off-loop decode (409 when it changed), and tokenize writes its answer
 *   off the loop too.  A step before the op, able to wait, would be one
 *   more column for these rows alone.
 */
#ifndef TB_SERVER_ROUTES_H
#define TB_SERVER_ROUTES_H

#include "core/json.h"
#include "server/internal.h"
#include "server/model_text.h"

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
int tb__route_create_sampling_session(tb__route_call_t *call);
void tb__route_get_sampler(tb__http_request_t *req);
void tb__route_asample(tb__http_request_t *req);
/* tinkerbell_routes.c: the Tinkerbell dialect's models */
void tb__route_tb_forward(tb__http_request_t *req);
void tb__route_tb_forward_async(tb__http_request_t *req);
void tb__route_tb_fwdbwd(tb__http_request_t *req);
void tb__route_tb_fwdbwd_async(tb__http_request_t *req);
void tb__route_tb_list_loss_functions(tb__http_request_t *req);
/* (generic) */
int tb__route_tb_get_info(tb__route_call_t *call);
int tb__route_tb_model(tb__route_call_t *call);
int tb__route_tb_optim(tb__route_call_t *call);
int tb__route_tb_add_lora(tb__route_call_t *call);
int tb__route_tb_remove_lora(tb__route_call_t *call);
int tb__route_tb_save(tb__route_call_t *call);
int tb__route_tb_load(tb__route_call_t *call);
/* tinkerbell_text.c: the Tinkerbell dialect's text */
void tb__route_tb_sample(tb__http_request_t *req);
void tb__route_tb_asample(tb__http_request_t *req);
void tb__route_tb_tokenize(tb__http_request_t *req);
void tb__route_tb_detokenize(tb__http_request_t *req);

#endif /* TB_SERVER_ROUTES_H */

/*
 * The route table of the server (routes.c): one row per route of both
 * dialects, and the handlers the rows name, each defined in the file of
 * its concern (service.c, sessions.c, futures_routes.c, rest_routes.c,
 * model_routes.c, sampling_routes.c, tinkerbell_routes.c,
 * tinkerbell_text.c).
 *
 * A handler starts after the server's common start (server.c, on_request):
 * the route's user is known (or the request was answered 401), and the
 * row's gates have passed: TB__ROUTE_CLOSING answers 503 while the server
 * closes, TB__ROUTE_SUBMITS takes the user's rate limit (429).  A handler
 * parses its body with tb__server_parse_body and answers through the
 * server's tb__server_respond*.
 */
#ifndef TB_SERVER_ROUTES_H
#define TB_SERVER_ROUTES_H

#include "server/internal.h"


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
void tb__route_telemetry(tb__http_request_t *req);
/* sessions.c */
void tb__route_create_session(tb__http_request_t *req);
void tb__route_heartbeat(tb__http_request_t *req);
void tb__route_close_session(tb__http_request_t *req);
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
void tb__route_ttl(tb__http_request_t *req);
void tb__route_download(tb__http_request_t *req);
/* model_routes.c: the Tinker dialect's models */
void tb__route_create_model(tb__http_request_t *req);
void tb__route_forward_backward(tb__http_request_t *req);
void tb__route_forward(tb__http_request_t *req);
void tb__route_optim_step(tb__http_request_t *req);
void tb__route_save_weights(tb__http_request_t *req);
void tb__route_save_for_sampler(tb__http_request_t *req);
void tb__route_load_weights(tb__http_request_t *req);
void tb__route_unload_model(tb__http_request_t *req);
void tb__route_get_info(tb__http_request_t *req);
void tb__route_weights_info(tb__http_request_t *req);
/* sampling_routes.c: the Tinker dialect's sampling */
void tb__route_create_sampling_session(tb__http_request_t *req);
void tb__route_get_sampler(tb__http_request_t *req);
void tb__route_asample(tb__http_request_t *req);
/* tinkerbell_routes.c: the Tinkerbell dialect's models */
void tb__route_tb_get_info(tb__http_request_t *req);
void tb__route_tb_list_loss_functions(tb__http_request_t *req);
void tb__route_tb_forward(tb__http_request_t *req);
void tb__route_tb_forward_async(tb__http_request_t *req);
void tb__route_tb_fwdbwd(tb__http_request_t *req);
void tb__route_tb_fwdbwd_async(tb__http_request_t *req);
void tb__route_tb_optim(tb__http_request_t *req);
void tb__route_tb_optim_async(tb__http_request_t *req);
void tb__route_tb_add_lora(tb__http_request_t *req);
void tb__route_tb_add_lora_async(tb__http_request_t *req);
void tb__route_tb_remove_lora(tb__http_request_t *req);
void tb__route_tb_remove_lora_async(tb__http_request_t *req);
void tb__route_tb_load_async(tb__http_request_t *req);
void tb__route_tb_save_async(tb__http_request_t *req);
void tb__route_tb_save_sampler_async(tb__http_request_t *req);
/* tinkerbell_text.c: the Tinkerbell dialect's text */
void tb__route_tb_sample(tb__http_request_t *req);
void tb__route_tb_asample(tb__http_request_t *req);
void tb__route_tb_tokenize(tb__http_request_t *req);
void tb__route_tb_detokenize(tb__http_request_t *req);

#endif /* TB_SERVER_ROUTES_H */

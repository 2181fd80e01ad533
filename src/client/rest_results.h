/*
 * The decoders of the RestClient's answers (rest_results.c), each a
 * tb__client_op_decode_fn of the operation layer (clients.h): the
 * answer's JSON into the public result type it names.
 */
#ifndef TB_CLIENT_REST_RESULTS_H
#define TB_CLIENT_REST_RESULTS_H

#include "client/clients.h"
#include "tinkerbell/rest_client.h"

int tb__rest_decode_run(tb__client_op_t *cop, const char *body, size_t len, int proto,
                        const tb_result_type_t **type, void **result, tb_error_t *err);
int tb__rest_decode_runs(tb__client_op_t *cop, const char *body, size_t len, int proto,
                         const tb_result_type_t **type, void **result, tb_error_t *err);
int tb__rest_decode_weights_info(tb__client_op_t *cop, const char *body, size_t len, int proto,
                                 const tb_result_type_t **type, void **result, tb_error_t *err);
int tb__rest_decode_checkpoints(tb__client_op_t *cop, const char *body, size_t len, int proto,
                                const tb_result_type_t **type, void **result, tb_error_t *err);
int tb__rest_decode_archive(tb__client_op_t *cop, const char *body, size_t len, int proto,
                            const tb_result_type_t **type, void **result, tb_error_t *err);
int tb__rest_decode_session(tb__client_op_t *cop, const char *body, size_t len, int proto,
                            const tb_result_type_t **type, void **result, tb_error_t *err);
int tb__rest_decode_sessions(tb__client_op_t *cop, const char *body, size_t len, int proto,
                             const tb_result_type_t **type, void **result, tb_error_t *err);
int tb__rest_decode_sampler(tb__client_op_t *cop, const char *body, size_t len, int proto,
                            const tb_result_type_t **type, void **result, tb_error_t *err);
int tb__rest_decode_json_text(tb__client_op_t *cop, const char *body, size_t len, int proto,
                              const tb_result_type_t **type, void **result, tb_error_t *err);

#endif /* TB_CLIENT_REST_RESULTS_H */

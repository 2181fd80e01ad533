/*
 * The small results of the Tinker dialect's training futures, which the
 * server stores when an op is done and the client reads from
 * retrieve_future: {"model_id", "type"} of create_model and unload_model,
 * {"path", "type"} of save_weights, with "sampling_session_id" for
 * save_weights_for_sampler, {"path", "model_id", "type"} of load_weights,
 * and {"metrics"} of optim_step.  Not here: ForwardBackwardOutput
 * (output.h) and SampleResponse (sample.h).  Strings are borrowed as in
 * rest.h; keys are written in the order the server has always sent them.
 */
#ifndef TB_WIRE_OP_RESULT_H
#define TB_WIRE_OP_RESULT_H

#include <jansson.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/json.h"
#include "wire/types.h"

typedef struct tb__wire_op_result_s {
  const char *path;                 /* NULL: left out */
  const char *model_id;             /* NULL: left out */
  const char *type;                 /* "create_model", ...; NULL: left out */
  const char *sampling_session_id;  /* NULL: left out */
} tb__wire_op_result_t;

typedef struct tb__wire_optim_result_s {
  const tb__wire_metric_t *metrics;
  size_t n_metrics;
} tb__wire_optim_result_t;

/* New references, or NULL when memory runs out. */
json_t *tb__wire_op_result_to_json(const tb__wire_op_result_t *r);
json_t *tb__wire_optim_result_to_json(const tb__wire_optim_result_t *r);
/* 0, TB_EFIELD (recorded in c) or TB_ENOMEM.  Every field may be left
 * out: the SDK's result types default their "type", and which of the
 * others an op needs is the reader's to check. */
int tb__wire_op_result_from_json(tb__jctx_t *c, const json_t *v, tb__wire_op_result_t *out);
/* The metrics in the arena; a value must be a finite number.  metrics
 * may be left out or null (the SDK's OptimStepResponse makes it
 * optional): none then. */
int tb__wire_optim_result_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *v,
                                    tb__wire_optim_result_t *out);

#endif /* TB_WIRE_OP_RESULT_H */

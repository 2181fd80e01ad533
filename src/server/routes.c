/*
 * The route table: every route of the server, one row each (routes.h),
 * in the order the index at GET / lists them.  A row has a side per
 * dialect: its own handler, or the generic handler's columns (what the
 * body is, the op made for it and the encoder of its result, the decoder,
 * whether decoding may leave the loop, the submit).  A path both dialects
 * serve is one row of dialect TB__DIALECT_BOTH with a side for each; the
 * body decides which runs (tb__dialect_of).  The gates of a row (closing,
 * rate limit) run in the server's common start.
 *
 * Not here: what a route checks and does (its submit or handler, in the
 * file of its concern), the generic handler (handler.c), the matching of
 * paths (http/router.c).
 */
#include "server/routes.h"

#include <stddef.h>

#include "server/tinkerbell.h"
#include "wire/op_request.h"
#include "wire/service.h"

#define C TB__ROUTE_CLOSING
#define S TB__ROUTE_SUBMITS
#define P TB__ROUTE_PUBLIC
#define SERVICE TB__DIALECT_SERVICE
#define TINKER TB__DIALECT_TINKER
#define TINKERBELL TB__DIALECT_TINKERBELL
#define BOTH TB__DIALECT_BOTH
#define CKPT "/api/v1/training_runs/{run_id}/checkpoints/{kind}/{name}"
#define FWD "{model_id, data, loss_fn?}"
/* A side: a handler of its own (H), or the generic handler (G) with its
 * columns.  JSON: the body is a JSON object for the submit; OP: and an op
 * is made first, whose result is a Tinker wire type; TB, TB_SYNC: the
 * same with the Tinkerbell dialect's result encoder, answered with the
 * op's request id or (sync) its result; WIRE: a JSON body decoded into
 * its wire struct (call->in) for the submit; FWDBWD: a JSON or protobuf
 * ForwardBackwardRequest decoded into its wire struct, off the loop when
 * large. */
#define NONE { 0 }
#define H(fn) { .handler = fn }
#define G(flags, ...) { .handler = tb__route_generic, .call = (flags), __VA_ARGS__ }
#define J TB__CALL_JSON
#define JSON(fn) G(J, .submit = fn)
#define WIRE(type, dec, fn) G(J, .decode = dec, .in_size = sizeof(type), .submit = fn)
#define OP(type, fn) G(J | TB__CALL_OP, .op = type, .submit = fn)
#define TB_OP(type) .op = type, .encode = tb__tb_encode, .encode_size = sizeof(tb__tbop_t)
#define TB(type, fn) G(J | TB__CALL_OP, TB_OP(type), .submit = fn)
#define TB_SYNC(type, fn) G(J | TB__CALL_OP, TB_OP(type), .sync = 1, .submit = fn)
#define FWDBWD(type)                                                                        \
  G(TB__CALL_PROTO | TB__CALL_OP | TB__CALL_OFF_LOOP, .op = type,                           \
    .decode = tb__route_fwd_decode, .in_size = sizeof(tb__wire_fwdbwd_t),                  \
    .submit = tb__route_fwd)
/* ASAMPLE: the Tinker asample, whose prepare reads the body and waits for
 * the base model's text when it has stop strings.  TB_TEXT: a Tinkerbell
 * call that meets text, whose prepare finds the base model the body is
 * decoded for and waits for its text, then decoded off the loop when
 * large: training data (TB_TRAIN), a sample's prompt (TB_SAMPLE), or
 * tokenize and detokenize (TOKENS), whose decoder writes the answer. */
#define ASAMPLE                                                                            \
  G(TB__CALL_OP, .op = TB__OP_SAMPLE, .prepare = tb__route_asample_prepare,                 \
    .decode = tb__route_asample_decode, .in_size = sizeof(tb__asample_in_t),              \
    .submit = tb__route_asample)
#define TB_TEXT(type, sync_, prep, dec, fn)                                                 \
  G(J | TB__CALL_OP | TB__CALL_OFF_LOOP, TB_OP(type), .sync = (sync_), .prepare = prep,     \
    .decode = dec, .in_size = sizeof(tb__tb_text_in_t), .submit = fn)
#define TB_TRAIN(type, sync_)                                                               \
  TB_TEXT(type, sync_, tb__route_tb_train_prepare, tb__route_tb_train_decode,               \
          tb__route_tb_train)
#define TB_SAMPLE(sync_)                                                                    \
  TB_TEXT(TB__OP_SAMPLE, sync_, tb__route_tb_sample_prepare, tb__route_tb_sample_decode,   \
          tb__route_tb_sample)
#define TOKENS(dec)                                                                         \
  G(J | TB__CALL_OFF_LOOP, .prepare = tb__route_tb_text_prepare, .decode = dec,             \
    .in_size = sizeof(tb__tb_text_in_t))

/* Decoders into the wire structs of src/wire/ (call->in), for WIRE rows. */
#define WIRE_DECODER(name, type, from_json)                                                 \
  static int name(tb__route_call_t *call) {                                                 \
    return from_json(&call->c, call->doc, (type *)call->in);                                \
  }
WIRE_DECODER(create_session, tb__wire_create_session_t, tb__wire_create_session_from_json)
WIRE_DECODER(ttl, tb__wire_ttl_request_t, tb__wire_ttl_request_from_json)
WIRE_DECODER(create_model, tb__wire_create_model_t, tb__wire_create_model_from_json)
WIRE_DECODER(weights_info, tb__wire_weights_info_request_t,
             tb__wire_weights_info_request_from_json)
WIRE_DECODER(create_sampler, tb__wire_create_sampler_t, tb__wire_create_sampler_from_json)

/* {"session_id", "type"}, the type the route's. */
static int heartbeat(tb__route_call_t *call) {
  return tb__wire_session_call_from_json(&call->c, call->doc, "session_heartbeat", call->in);
}

static int close_session(tb__route_call_t *call) {
  return tb__wire_session_call_from_json(&call->c, call->doc, "close_session", call->in);
}

static const tb__route_row_t table[] = {
  /* ---------------------------------------------------------- core */
  { TB__PART_CORE, "GET", "/", SERVICE, P, H(tb__route_index), NONE,
    "This index: every route of both dialects", NULL },
  { TB__PART_CORE, "GET", "/metrics", SERVICE, 0, H(tb__route_metrics), NONE,
    "Prometheus metrics", NULL },
  { TB__PART_CORE, "GET", "/api/v1/healthz", TINKER, P, H(tb__route_healthz), NONE,
    "{status: ok}", NULL },
  { TB__PART_CORE, "GET", "/healthz", TINKERBELL, P, H(tb__route_healthz), NONE,
    "{status: ok}", NULL },
  { TB__PART_CORE, "POST", "/api/v1/client/config", TINKER, 0, H(tb__route_client_config), NONE,
    "The SDK's feature flags (ClientConfigResponse); the connection closes after it", NULL },
  { TB__PART_CORE, "POST", "/api/v1/client/dynamic_config", TINKER, 0,
    H(tb__route_dynamic_config), NONE, "{refresh_interval_sec}", NULL },
  { TB__PART_CORE, "GET", "/api/v1/get_server_capabilities", TINKER, 0,
    H(tb__route_capabilities), NONE, "The base models served, with max_context_length", NULL },
  { TB__PART_CORE, "GET", "/get_server_capabilities", TINKERBELL, 0, H(tb__route_capabilities),
    NONE, "The base models served, with max_context_length", NULL },
  { TB__PART_CORE, "POST", "/api/v1/telemetry", TINKER, 0, JSON(tb__route_telemetry), NONE,
    "SDK telemetry batches: counted, {status: accepted}", NULL },
  { TB__PART_CORE, "POST", "/api/v1/create_session", TINKER, 0,
    WIRE(tb__wire_create_session_t, create_session, tb__route_create_session), NONE,
    "Creates a session: {tags, user_metadata, sdk_version, project_id?} -> {session_id}",
    NULL },
  { TB__PART_CORE, "POST", "/api/v1/session_heartbeat", TINKER, 0,
    WIRE(tb__wire_session_call_t, heartbeat, tb__route_heartbeat), NONE,
    "Keeps a session alive: {session_id}", NULL },
  { TB__PART_CORE, "POST", "/api/v1/close_session", TINKER, 0,
    WIRE(tb__wire_session_call_t, close_session, tb__route_close_session), NONE,
    "Closes a session: its models are unloaded at once, its checkpoints kept; later calls "
    "on it answer 410: {session_id}",
    NULL },
  { TB__PART_CORE, "GET", "/api/v1/sessions", TINKER, 0, H(tb__route_list_sessions), NONE,
    "The caller's sessions, newest first (limit, offset)", NULL },
  { TB__PART_CORE, "GET", "/api/v1/sessions/{session_id}", TINKER, 0, H(tb__route_get_session),
    NONE, "A session's training runs and samplers", NULL },
  { TB__PART_CORE, "POST", "/api/v1/retrieve_future", TINKER, 0, H(tb__futures_route_tinker),
    NONE,
    "Long-polls a future: {request_id} -> the result, {error, category} or {type: "
    "try_again, queue_state}",
    NULL },
  { TB__PART_CORE, "POST", "/retrieve_future", TINKERBELL, 0, H(tb__futures_route_tinkerbell),
    NONE,
    "Polls a future: 202 {status: pending}, 200 the result, 500 {detail: Job failed: ...}",
    NULL },

  /* ---------------------------------------------------------- store */
  { TB__PART_STORE, "GET", "/api/v1/training_runs", TINKER, 0, H(tb__route_list_runs), NONE,
    "The caller's training runs, newest first (limit, offset, access_scope, project_id) "
    "-> {training_runs, cursor}",
    NULL },
  { TB__PART_STORE, "GET", "/api/v1/training_runs/{run_id}", TINKER, 0, H(tb__route_get_run),
    NONE, "A training run (access_scope)", NULL },
  { TB__PART_STORE, "GET", "/api/v1/training_runs/{run_id}/checkpoints", TINKER, 0,
    H(tb__route_run_checkpoints), NONE,
    "A run's checkpoints, newest first -> {checkpoints, cursor}", NULL },
  { TB__PART_STORE, "GET", "/api/v1/checkpoints", TINKER, 0, H(tb__route_user_checkpoints), NONE,
    "The caller's checkpoints, newest first (limit, offset) -> {checkpoints, cursor}", NULL },
  { TB__PART_STORE, "DELETE", CKPT, TINKER, 0, H(tb__route_delete_checkpoint), NONE,
    "Deletes a checkpoint and its files", NULL },
  { TB__PART_STORE, "GET", CKPT "/archive", TINKER, 0, H(tb__route_archive), NONE,
    "A download link for a checkpoint's tar -> {url, expires}", NULL },
  { TB__PART_STORE, "POST", CKPT "/publish", TINKER, 0, H(tb__route_publish), NONE,
    "Makes a checkpoint loadable by every user (409 if public)", NULL },
  { TB__PART_STORE, "DELETE", CKPT "/publish", TINKER, 0, H(tb__route_unpublish), NONE,
    "Makes a checkpoint private again (409 if private)", NULL },
  { TB__PART_STORE, "PUT", CKPT "/ttl", TINKER, 0,
    WIRE(tb__wire_ttl_request_t, ttl, tb__route_ttl), NONE,
    "Sets a checkpoint's expiry: {ttl_seconds: int | null}", NULL },
  { TB__PART_STORE, "GET", "/api/v1/checkpoint_archives/{token}", TINKER, P,
    H(tb__route_download), NONE,
    "A checkpoint as a tar (the link from .../archive; no API key)", NULL },

  /* ---------------------------------------------------------- training */
  { TB__PART_TRAINING, "POST", "/api/v1/create_model", TINKER, C | S,
    WIRE(tb__wire_create_model_t, create_model, tb__route_create_model), NONE,
    "Creates a LoRA model: future of {model_id}", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/forward_backward", BOTH, C | S,
    FWDBWD(TB__OP_FORWARD_BACKWARD), TB_TRAIN(TB__OP_FORWARD_BACKWARD, 1),
    "Forward and backward (JSON or protobuf body): future of ForwardBackwardOutput",
    "Forward and backward, sync: " FWD " -> {loss, num_samples, model_id, backend, ...}" },
  { TB__PART_TRAINING, "POST", "/api/v1/forward", BOTH, C | S, FWDBWD(TB__OP_FORWARD),
    TB_TRAIN(TB__OP_FORWARD, 1), "Forward only: future of ForwardBackwardOutput",
    "Forward only, sync: " FWD " -> {loss, logprobs, ...}" },
  { TB__PART_TRAINING, "POST", "/api/v1/optim_step", BOTH, C | S,
    OP(TB__OP_OPTIM, tb__route_optim_step), TB_SYNC(TB__OP_OPTIM, tb__route_tb_optim),
    "An Adam step: future of {metrics}",
    "An Adam step, sync: {model_id, adam_params?} -> {metrics, step, ...}" },
  { TB__PART_TRAINING, "POST", "/api/v1/save_weights", BOTH, C | S,
    OP(TB__OP_SAVE, tb__route_save), TB(TB__OP_SAVE, tb__route_tb_save),
    "Saves a training checkpoint: future of {path}", "As /api/v1/save_weights_async" },
  { TB__PART_TRAINING, "POST", "/api/v1/save_weights_for_sampler", BOTH, C | S,
    OP(TB__OP_SAVE_SAMPLER, tb__route_save), TB(TB__OP_SAVE_SAMPLER, tb__route_tb_save),
    "Saves sampler weights: future of {path}", "As /api/v1/save_weights_for_sampler_async" },
  { TB__PART_TRAINING, "POST", "/api/v1/load_weights", BOTH, C | S,
    OP(TB__OP_LOAD, tb__route_load_weights), TB(TB__OP_LOAD, tb__route_tb_load),
    "Loads a checkpoint: future", "As /api/v1/load_weights_async" },
  { TB__PART_TRAINING, "POST", "/api/v1/unload_model", TINKER, C,
    G(J | TB__CALL_OP, .op = TB__OP_UNLOAD, .decode = tb__route_model,
      .submit = tb__route_unload_model),
    NONE, "Unloads a model: future", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/get_info", TINKER, 0,
    G(J, .decode = tb__route_model, .submit = tb__route_get_info), NONE,
    "A model's base, rank and tokenizer", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/weights_info", TINKER, 0,
    WIRE(tb__wire_weights_info_request_t, weights_info, tb__route_weights_info), NONE,
    "A checkpoint's base model, rank and trained parts", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/create_sampling_session", TINKER, C,
    WIRE(tb__wire_create_sampler_t, create_sampler,
         tb__route_create_sampling_session), NONE,
    "A sampling session over the base model or saved weights", NULL },
  { TB__PART_TRAINING, "GET", "/api/v1/samplers/{sampler_id}", TINKER, 0,
    H(tb__route_get_sampler), NONE, "A sampling session's base model and weights", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/asample", BOTH, C | S, ASAMPLE,
    TB_SAMPLE(0), "Samples: future of SampleResponse",
    "Samples: {model_id?, prompt | messages, ...} -> {request_id, model_id}" },
  { TB__PART_TRAINING, "POST", "/get_info", TINKERBELL, C,
    G(J, .decode = tb__route_tb_model, .submit = tb__route_tb_get_info), NONE,
    "A model: {model_id} -> {model_id, model_data, base_model, lora_rank, ...}", NULL },
  { TB__PART_TRAINING, "GET", "/list_loss_functions", TINKERBELL, 0,
    H(tb__route_tb_list_loss_functions), NONE, "{available_loss_functions}", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/forward_async", TINKERBELL, C | S,
    TB_TRAIN(TB__OP_FORWARD, 0), NONE, "Forward only: " FWD " -> {request_id, model_id}",
    NULL },
  { TB__PART_TRAINING, "POST", "/fwd", TINKERBELL, C | S, TB_TRAIN(TB__OP_FORWARD, 0), NONE,
    "Legacy /api/v1/forward_async", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/forward_backward_async", TINKERBELL, C | S,
    TB_TRAIN(TB__OP_FORWARD_BACKWARD, 0), NONE,
    "Forward and backward: " FWD " -> {request_id, model_id}", NULL },
  { TB__PART_TRAINING, "POST", "/fwdbwd", TINKERBELL, C | S,
    TB_TRAIN(TB__OP_FORWARD_BACKWARD, 0), NONE,
    "Legacy /api/v1/forward_backward_async", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/optim_step_async", TINKERBELL, C | S,
    TB(TB__OP_OPTIM, tb__route_tb_optim), NONE,
    "An Adam step: {model_id, adam_params?} -> {request_id, model_id}", NULL },
  { TB__PART_TRAINING, "POST", "/optim_step", TINKERBELL, C | S,
    TB(TB__OP_OPTIM, tb__route_tb_optim), NONE, "Legacy /api/v1/optim_step_async", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/add_lora", TINKERBELL, C | S,
    TB_SYNC(TB__OP_CREATE, tb__route_tb_add_lora), NONE,
    "Creates an adapter, sync: {base_model?, rank?, alpha?} -> {model_id, ...}", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/add_lora_async", TINKERBELL, C | S,
    TB(TB__OP_CREATE, tb__route_tb_add_lora), NONE,
    "Creates an adapter: {base_model?, rank?, alpha?} -> {request_id, model_id}", NULL },
  { TB__PART_TRAINING, "POST", "/add_lora", TINKERBELL, C | S,
    TB(TB__OP_CREATE, tb__route_tb_add_lora), NONE, "Legacy /api/v1/add_lora_async", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/remove_lora", TINKERBELL, C,
    G(J | TB__CALL_OP, TB_OP(TB__OP_UNLOAD), .sync = 1, .decode = tb__route_tb_model,
      .submit = tb__route_tb_remove_lora),
    NONE, "Removes an adapter, sync: {model_id} -> {model_id, status: deleted}", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/remove_lora_async", TINKERBELL, C,
    G(J | TB__CALL_OP, TB_OP(TB__OP_UNLOAD), .decode = tb__route_tb_model,
      .submit = tb__route_tb_remove_lora),
    NONE, "Removes an adapter: {model_id} -> {request_id, model_id}", NULL },
  { TB__PART_TRAINING, "POST", "/remove_lora", TINKERBELL, C,
    G(J | TB__CALL_OP, TB_OP(TB__OP_UNLOAD), .decode = tb__route_tb_model,
      .submit = tb__route_tb_remove_lora),
    NONE, "Legacy /api/v1/remove_lora_async", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/load_weights_async", TINKERBELL, C | S,
    TB(TB__OP_LOAD, tb__route_tb_load), NONE,
    "Loads a checkpoint: {model_id, path} -> {request_id, model_id}", NULL },
  { TB__PART_TRAINING, "POST", "/load_weights", TINKERBELL, C | S,
    TB(TB__OP_LOAD, tb__route_tb_load), NONE, "Legacy /api/v1/load_weights_async", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/save_weights_async", TINKERBELL, C | S,
    TB(TB__OP_SAVE, tb__route_tb_save), NONE,
    "Saves a checkpoint: {model_id, path?} -> {request_id, model_id}", NULL },
  { TB__PART_TRAINING, "POST", "/save_weights", TINKERBELL, C | S,
    TB(TB__OP_SAVE, tb__route_tb_save), NONE, "Legacy /api/v1/save_weights_async", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/save_weights_for_sampler_async", TINKERBELL, C | S,
    TB(TB__OP_SAVE_SAMPLER, tb__route_tb_save), NONE,
    "Saves sampler weights: {model_id, path?} -> {request_id, model_id}", NULL },
  { TB__PART_TRAINING, "POST", "/save_weights_for_sampler", TINKERBELL, C | S,
    TB(TB__OP_SAVE_SAMPLER, tb__route_tb_save), NONE,
    "Legacy /api/v1/save_weights_for_sampler_async", NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/sample", TINKERBELL, C | S, TB_SAMPLE(1), NONE,
    "Samples, sync: {model_id?, prompt | messages, max_tokens?, ...} -> {generated_text, "
    "samples}",
    NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/tokenize", TINKERBELL, C | S, TOKENS(tb__route_tb_tokenize),
    NONE,
    "Text to tokens with a model's tokenizer: {model_id | base_model, text, "
    "add_special_tokens?} -> {tokens}; {..., messages, add_generation_prompt?, renderer?} "
    "-> {tokens, text}",
    NULL },
  { TB__PART_TRAINING, "POST", "/api/v1/detokenize", TINKERBELL, C | S,
    TOKENS(tb__route_tb_detokenize), NONE,
    "Tokens to text, special tokens kept: {model_id | base_model, tokens, "
    "skip_special_tokens?} -> {text}",
    NULL },
};

int tb__routes_add(tb__server_t *srv, tb__part_t part, void *data) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < sizeof(table) / sizeof(table[0]); i++)
    if (table[i].part == part)
      rc = tb__server_add_row(srv, &table[i], data);
  return rc;
}

/*
 * The JSON of an asample request (see encode.h): what the SamplingClient
 * sends, read back by the server's tb__wire_sample_request_from_json.
 */
#include "wire/encode.h"

#include <math.h>

json_t *tb__wire_sampling_params_to_json(const tb__wire_sampling_params_t *p) {
  json_t *o = json_object();
  if (o == NULL)
    return NULL;
  if (!isfinite(p->temperature) || !isfinite(p->top_p))
    goto fail;
  if (json_object_set_new(o, "temperature", json_real(p->temperature)) != 0 ||
      json_object_set_new(o, "top_k", json_integer((json_int_t)p->top_k)) != 0 ||
      json_object_set_new(o, "top_p", json_real(p->top_p)) != 0)
    goto fail;
  if (p->max_tokens >= 0 &&
      json_object_set_new(o, "max_tokens", json_integer((json_int_t)p->max_tokens)) != 0)
    goto fail;
  /* The seed is a uint64 on the proto side; JSON integers are signed, and
   * the server reads the same bits back. */
  if (p->has_seed && json_object_set_new(o, "seed", json_integer((json_int_t)p->seed)) != 0)
    goto fail;
  if (p->n_stop_strings > 0 || p->n_stop_tokens > 0) {
    json_t *stop = json_array();
    if (json_object_set_new(o, "stop", stop) != 0)
      goto fail;
    for (size_t i = 0; i < p->n_stop_strings; i++)
      if (json_array_append_new(stop, json_string(p->stop_strings[i])) != 0)
        goto fail;
    for (size_t i = 0; p->n_stop_strings == 0 && i < p->n_stop_tokens; i++)
      if (json_array_append_new(stop, json_integer(p->stop_tokens[i])) != 0)
        goto fail;
  }
  return o;
fail:
  json_decref(o);
  return NULL;
}

int tb__wire_sample_request_add_ids(json_t *body, const char *sampling_session_id,
                                    int64_t seq_id) {
  if (json_object_set_new(body, "sampling_session_id", json_string(sampling_session_id)) != 0 ||
      json_object_set_new(body, "seq_id", json_integer((json_int_t)seq_id)) != 0)
    return TB_ENOMEM;
  return 0;
}

json_t *tb__wire_sample_request_to_json(const tb__wire_sample_request_t *r) {
  json_t *o = json_object();
  if (o == NULL)
    return NULL;
  if (json_object_set_new(o, "prompt", tb__wire_model_input_to_json(r->prompt, r->n_prompt)) != 0 ||
      json_object_set_new(o, "sampling_params",
                          tb__wire_sampling_params_to_json(&r->params)) != 0 ||
      json_object_set_new(o, "num_samples", json_integer((json_int_t)r->num_samples)) != 0 ||
      json_object_set_new(o, "prompt_logprobs", json_boolean(r->prompt_logprobs)) != 0 ||
      json_object_set_new(o, "topk_prompt_logprobs",
                          json_integer((json_int_t)r->topk_prompt_logprobs)) != 0 ||
      json_object_set_new(o, "type", json_string("sample")) != 0)
    goto fail;
  if (r->sampling_session_id != NULL &&
      json_object_set_new(o, "sampling_session_id", json_string(r->sampling_session_id)) != 0)
    goto fail;
  if (r->base_model != NULL &&
      json_object_set_new(o, "base_model", json_string(r->base_model)) != 0)
    goto fail;
  if (r->model_path != NULL &&
      json_object_set_new(o, "model_path", json_string(r->model_path)) != 0)
    goto fail;
  if (r->seq_id >= 0 &&
      json_object_set_new(o, "seq_id", json_integer((json_int_t)r->seq_id)) != 0)
    goto fail;
  return o;
fail:
  json_decref(o);
  return NULL;
}

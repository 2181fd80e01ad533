/*
 * Sampling requests and SampleResponse codecs (see sample.h).
 */
#include "wire/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "wire/datum.h"
#include "wire/le.h"
#include "wire/proto.h"

/* ---------------------------------------------------------------- request */

static int stop_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *stop,
                          tb__wire_sampling_params_t *p) {
  if (json_is_string(stop)) {
    p->stop_strings = tb__arena_alloc(a, sizeof(char *));
    if (p->stop_strings == NULL)
      return TB_ENOMEM;
    p->stop_strings[0] = tb__arena_strndup(a, json_string_value(stop),
                                           json_string_length(stop));
    if (p->stop_strings[0] == NULL)
      return TB_ENOMEM;
    p->n_stop_strings = 1;
    return 0;
  }
  if (!json_is_array(stop))
    return tb__jctx_fail(c, "expected a string, a list of strings or a list of "
                         "token ids, got %s", tb__json_type_name(stop));
  size_t n = json_array_size(stop);
  if (n == 0)
    return 0;
  if (json_is_string(json_array_get(stop, 0))) {
    p->stop_strings = tb__arena_calloc(a, n, sizeof(char *));
    if (p->stop_strings == NULL)
      return TB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
      const json_t *s = json_array_get(stop, i);
      if (!json_is_string(s) || json_string_length(s) == 0) {
        tb__jctx_push_index(c, i);
        return tb__jctx_fail(c, "expected a non-empty string, got %s",
                             tb__json_type_name(s));
      }
      p->stop_strings[i] = tb__arena_strndup(a, json_string_value(s),
                                             json_string_length(s));
      if (p->stop_strings[i] == NULL)
        return TB_ENOMEM;
    }
    p->n_stop_strings = n;
    return 0;
  }
  p->stop_tokens = tb__arena_calloc(a, n, sizeof(int32_t));
  if (p->stop_tokens == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    int64_t v;
    size_t m = tb__jctx_push_index(c, i);
    int rc = tb__json_as_int(c, json_array_get(stop, i), 0, INT32_MAX, &v);
    tb__jctx_pop(c, m);
    if (rc != 0)
      return rc;
    p->stop_tokens[i] = (int32_t)v;
  }
  p->n_stop_tokens = n;
  return 0;
}

int tb__wire_sampling_params_from_json(tb__jctx_t *c, tb__arena_t *a,
                                       const json_t *v,
                                       tb__wire_sampling_params_t *p) {
  int64_t seed;
  int rc;
  memset(p, 0, sizeof(*p));
  p->max_tokens = -1;
  p->temperature = 1.0;
  p->top_k = -1;
  p->top_p = 1.0;
  if (v == NULL)
    return 0;
  if ((rc = tb__json_expect_object(c, v)) != 0 ||
      (rc = tb__json_get_int(c, v, "max_tokens", TB_JSON_OPTIONAL, 0, INT32_MAX,
                             &p->max_tokens)) < 0 ||
      (rc = tb__json_get_double(c, v, "temperature", TB_JSON_OPTIONAL, &p->temperature)) < 0 ||
      (rc = tb__json_get_int(c, v, "top_k", TB_JSON_OPTIONAL, -1, INT32_MAX, &p->top_k)) < 0 ||
      (rc = tb__json_get_double(c, v, "top_p", TB_JSON_OPTIONAL, &p->top_p)) < 0)
    return rc;
  if ((rc = tb__json_get_int(c, v, "seed", TB_JSON_OPTIONAL, INT64_MIN, INT64_MAX,
                             &seed)) < 0)
    return rc;
  if (rc == 0) {
    p->has_seed = 1;
    p->seed = (uint64_t)seed;
  }
  if (p->temperature < 0)
    return tb__jctx_fail_at(c, "temperature", "must not be negative");
  if (!(p->top_p > 0 && p->top_p <= 1))
    return tb__jctx_fail_at(c, "top_p", "must be in (0, 1]");
  if (p->top_k == 0)
    return tb__jctx_fail_at(c, "top_k", "must be positive, or -1 for no limit");
  json_t *stop = json_object_get(v, "stop");
  if (stop != NULL && !json_is_null(stop)) {
    size_t m = tb__jctx_push_key(c, "stop");
    rc = stop_from_json(c, a, stop, p);
    tb__jctx_pop(c, m);
    return rc;
  }
  return 0;
}

static int opt_string(tb__jctx_t *c, tb__arena_t *a, const json_t *body,
                      const char *key, const char **out) {
  tb_slice_t s;
  int rc = tb__json_get_string(c, body, key, TB_JSON_OPTIONAL, &s);
  *out = NULL;
  if (rc != 0)
    return rc < 0 ? rc : 0;
  *out = tb__arena_strndup(a, s.base, s.len);
  return *out ? 0 : TB_ENOMEM;
}

int tb__wire_sample_request_from_json(tb__jctx_t *c, tb__arena_t *a,
                                      const json_t *body,
                                      tb__wire_sample_request_t *r) {
  json_t *prompt, *params;
  int rc;
  memset(r, 0, sizeof(*r));
  r->num_samples = 1;
  r->seq_id = -1;
  if ((rc = tb__json_expect_object(c, body)) != 0 ||
      (rc = tb__json_get_object(c, body, "prompt", TB_JSON_REQUIRED, &prompt)) != 0)
    return rc;
  size_t m = tb__jctx_push_key(c, "prompt");
  rc = tb__wire_model_input_from_json(c, a, prompt, &r->prompt, &r->n_prompt);
  tb__jctx_pop(c, m);
  if (rc != 0)
    return rc;
  if ((rc = tb__json_get_object(c, body, "sampling_params", TB_JSON_OPTIONAL, &params)) < 0)
    return rc;
  m = tb__jctx_push_key(c, "sampling_params");
  rc = tb__wire_sampling_params_from_json(c, a, params, &r->params);
  tb__jctx_pop(c, m);
  if (rc != 0)
    return rc;
  if ((rc = tb__json_get_int(c, body, "num_samples", TB_JSON_OPTIONAL, 1, 1024,
                             &r->num_samples)) < 0 ||
      (rc = tb__json_get_bool(c, body, "prompt_logprobs", TB_JSON_OPTIONAL,
                              &r->prompt_logprobs)) < 0 ||
      (rc = tb__json_get_int(c, body, "topk_prompt_logprobs", TB_JSON_OPTIONAL, 0, 1024,
                             &r->topk_prompt_logprobs)) < 0 ||
      (rc = tb__json_get_int(c, body, "seq_id", TB_JSON_OPTIONAL, 0, INT32_MAX,
                             &r->seq_id)) < 0 ||
      (rc = opt_string(c, a, body, "sampling_session_id", &r->sampling_session_id)) < 0 ||
      (rc = opt_string(c, a, body, "base_model", &r->base_model)) < 0 ||
      (rc = opt_string(c, a, body, "model_path", &r->model_path)) < 0)
    return rc;
  return 0;
}

/* ---------------------------------------------------------------- response, JSON */

static json_t *real_or_null(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

static const char *stop_reason_name(tb__wire_stop_reason_t r) {
  return r == TB_WIRE_STOP_REASON_LENGTH ? "length" : "stop";
}

/* A top-k row whose first cell is the empty sentinel is null; trailing
 * sentinel cells are trimmed, as the SDK reads them. */
static json_t *topk_row_to_json(const tb__wire_sample_response_t *r, size_t row) {
  const int32_t *ids = r->topk_ids + row * r->topk_k;
  const float *lps = r->topk_logprobs + row * r->topk_k;
  if (r->topk_k == 0 || lps[0] == TB_WIRE_TOPK_EMPTY_LOGPROB)
    return json_null();
  json_t *arr = json_array();
  for (size_t k = 0; k < r->topk_k && lps[k] != TB_WIRE_TOPK_EMPTY_LOGPROB; k++)
    if (json_array_append_new(arr, json_pack("[If]", (json_int_t)ids[k], (double)lps[k])) != 0) {
      json_decref(arr);
      return NULL;
    }
  return arr;
}

json_t *tb__wire_sample_response_to_json(const tb__wire_sample_response_t *r) {
  json_t *root = json_object(), *seqs = json_array();
  if (root == NULL) {
    json_decref(seqs);
    return NULL;
  }
  /* Every child is attached, also after a failed one, so that one decref
   * of the root releases everything. */
  int bad = json_object_set_new(root, "type", json_string("sample")) != 0;
  bad |= json_object_set_new(root, "sequences", seqs) != 0;
  bad |= json_object_set_new(root, "prompt_cache_hit_tokens",
                             json_integer((json_int_t)r->prompt_cache_hit_tokens)) != 0;
  if (bad)
    goto fail;
  for (size_t i = 0; i < r->n_sequences; i++) {
    const tb__wire_sequence_t *s = &r->sequences[i];
    json_t *seq = json_object(), *toks = json_array();
    if (json_array_append_new(seqs, seq) != 0) {
      json_decref(toks);
      goto fail;
    }
    bad = json_object_set_new(seq, "stop_reason",
                              json_string(stop_reason_name(s->stop_reason))) != 0;
    bad |= json_object_set_new(seq, "tokens", toks) != 0;
    if (bad)
      goto fail;
    for (size_t k = 0; k < s->n_tokens; k++)
      if (json_array_append_new(toks, json_integer(s->tokens[k])) != 0)
        goto fail;
    if (s->logprobs != NULL) {
      json_t *lps = json_array();
      if (json_object_set_new(seq, "logprobs", lps) != 0)
        goto fail;
      for (size_t k = 0; k < s->n_tokens; k++)
        if (json_array_append_new(lps, real_or_null(s->logprobs[k])) != 0)
          goto fail;
    }
  }
  if (r->prompt_logprobs != NULL) {
    json_t *plp = json_array();
    if (json_object_set_new(root, "prompt_logprobs", plp) != 0)
      goto fail;
    for (size_t k = 0; k < r->n_prompt; k++)
      if (json_array_append_new(plp, real_or_null(r->prompt_logprobs[k])) != 0)
        goto fail;
  }
  if (r->topk_ids != NULL) {
    json_t *tk = json_array();
    if (json_object_set_new(root, "topk_prompt_logprobs", tk) != 0)
      goto fail;
    for (size_t row = 0; row < r->topk_rows; row++)
      if (json_array_append_new(tk, topk_row_to_json(r, row)) != 0)
        goto fail;
  }
  return root;
fail:
  json_decref(root);
  return NULL;
}

static int floats_from_json(tb__jctx_t *c, tb__arena_t *a, const json_t *arr,
                            float **out, size_t *n) {
  *n = json_array_size(arr);
  *out = tb__arena_calloc(a, *n + 1, sizeof(float));
  if (*out == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < *n; i++) {
    const json_t *v = json_array_get(arr, i);
    double d = NAN;
    if (!json_is_null(v)) {
      size_t m = tb__jctx_push_index(c, i);
      int rc = tb__json_as_double(c, v, &d);
      tb__jctx_pop(c, m);
      if (rc != 0)
        return rc;
    }
    (*out)[i] = (float)d;
  }
  return 0;
}

int tb__wire_sample_response_from_json(tb__jctx_t *c, tb__arena_t *a,
                                       const json_t *v,
                                       tb__wire_sample_response_t *r) {
  json_t *seqs, *plp, *tk;
  int rc;
  memset(r, 0, sizeof(*r));
  if ((rc = tb__json_expect_object(c, v)) != 0 ||
      (rc = tb__json_get_array(c, v, "sequences", TB_JSON_REQUIRED, &seqs)) != 0 ||
      (rc = tb__json_get_int(c, v, "prompt_cache_hit_tokens", TB_JSON_OPTIONAL, 0, INT64_MAX,
                             &r->prompt_cache_hit_tokens)) < 0 ||
      (rc = tb__json_get_array(c, v, "prompt_logprobs", TB_JSON_OPTIONAL, &plp)) < 0 ||
      (rc = tb__json_get_array(c, v, "topk_prompt_logprobs", TB_JSON_OPTIONAL, &tk)) < 0)
    return rc;
  r->n_sequences = json_array_size(seqs);
  r->sequences = tb__arena_calloc(a, r->n_sequences + 1, sizeof(*r->sequences));
  if (r->sequences == NULL)
    return TB_ENOMEM;
  size_t mark = tb__jctx_push_key(c, "sequences");
  for (size_t i = 0; i < r->n_sequences; i++) {
    const json_t *s = json_array_get(seqs, i);
    tb__wire_sequence_t *seq = &r->sequences[i];
    json_t *toks, *lps;
    tb_slice_t reason;
    tb__jctx_pop(c, mark);
    tb__jctx_push_key(c, "sequences");
    tb__jctx_push_index(c, i);
    if ((rc = tb__json_expect_object(c, s)) != 0 ||
        (rc = tb__json_get_string(c, s, "stop_reason", TB_JSON_REQUIRED, &reason)) != 0 ||
        (rc = tb__json_get_array(c, s, "tokens", TB_JSON_REQUIRED, &toks)) != 0 ||
        (rc = tb__json_get_array(c, s, "logprobs", TB_JSON_OPTIONAL, &lps)) < 0)
      goto out;
    if (tb__slice_eq_str(reason, "stop")) {
      seq->stop_reason = TB_WIRE_STOP_REASON_STOP;
    } else if (tb__slice_eq_str(reason, "length")) {
      seq->stop_reason = TB_WIRE_STOP_REASON_LENGTH;
    } else {
      rc = tb__jctx_fail_at(c, "stop_reason", "expected \"stop\" or \"length\"");
      goto out;
    }
    seq->n_tokens = json_array_size(toks);
    seq->tokens = tb__arena_calloc(a, seq->n_tokens + 1, sizeof(int32_t));
    if (seq->tokens == NULL) {
      rc = TB_ENOMEM;
      goto out;
    }
    tb__jctx_push_key(c, "tokens");
    for (size_t k = 0; k < seq->n_tokens; k++) {
      int64_t t;
      size_t mk = tb__jctx_push_index(c, k);
      if ((rc = tb__json_as_int(c, json_array_get(toks, k), 0, INT32_MAX, &t)) != 0)
        goto out;
      tb__jctx_pop(c, mk);
      seq->tokens[k] = (int32_t)t;
    }
    if (lps != NULL) {
      size_t n = 0;
      tb__jctx_pop(c, mark);
      tb__jctx_push_key(c, "sequences");
      tb__jctx_push_index(c, i);
      tb__jctx_push_key(c, "logprobs");
      if ((rc = floats_from_json(c, a, lps, &seq->logprobs, &n)) != 0)
        goto out;
      if (n != seq->n_tokens) {
        rc = tb__jctx_fail(c, "expected %zu values (one per token), got %zu",
                           seq->n_tokens, n);
        goto out;
      }
    }
  }
  tb__jctx_pop(c, mark);
  if (plp != NULL) {
    mark = tb__jctx_push_key(c, "prompt_logprobs");
    rc = floats_from_json(c, a, plp, &r->prompt_logprobs, &r->n_prompt);
    tb__jctx_pop(c, mark);
    if (rc != 0)
      return rc;
  }
  if (tk != NULL) {
    /* Rows of [id, logprob] pairs of varying length, or null. */
    r->topk_rows = json_array_size(tk);
    size_t sent = 0;
    for (size_t row = 0; row < r->topk_rows; row++) {
      size_t n = json_array_size(json_array_get(tk, row));
      sent += n;
      if (n > r->topk_k)
        r->topk_k = n;
    }
    /* Rows are padded to the longest: real answers have rows of one
     * length (the first may be empty), so the padded grid is about the
     * cells sent.  Many empty rows and one long one would make it
     * quadratic in the answer's size. */
    if (r->topk_k > 0 && r->topk_rows > 2 * (sent / r->topk_k) + 2)
      return tb__jctx_fail(c, "topk_prompt_logprobs: rows of very different lengths "
                           "(%zu rows, %zu cells, up to %zu per row)",
                           r->topk_rows, sent, r->topk_k);
    size_t cells = r->topk_rows * r->topk_k + 1;
    r->topk_ids = tb__arena_calloc(a, cells, sizeof(int32_t));
    r->topk_logprobs = tb__arena_calloc(a, cells, sizeof(float));
    if (r->topk_ids == NULL || r->topk_logprobs == NULL)
      return TB_ENOMEM;
    for (size_t i = 0; i < cells; i++)
      r->topk_logprobs[i] = TB_WIRE_TOPK_EMPTY_LOGPROB;
    mark = tb__jctx_push_key(c, "topk_prompt_logprobs");
    for (size_t row = 0; row < r->topk_rows; row++) {
      const json_t *cells_row = json_array_get(tk, row);
      if (json_is_null(cells_row))
        continue;
      for (size_t k = 0; k < json_array_size(cells_row); k++) {
        const json_t *cell = json_array_get(cells_row, k);
        json_int_t id;
        double lp;
        if (json_unpack((json_t *)cell, "[IF]", &id, &lp) != 0 || id < 0 ||
            id > INT32_MAX || !isfinite(lp)) {
          tb__jctx_push_index(c, row);
          tb__jctx_push_index(c, k);
          rc = tb__jctx_fail(c, "expected [token_id, logprob]");
          tb__jctx_pop(c, mark);
          return rc;
        }
        r->topk_ids[row * r->topk_k + k] = (int32_t)id;
        r->topk_logprobs[row * r->topk_k + k] = (float)lp;
      }
    }
    tb__jctx_pop(c, mark);
  }
  return 0;
out:
  tb__jctx_pop(c, mark);
  return rc;
}

/* ---------------------------------------------------------------- response, protobuf */

int tb__wire_sample_response_to_proto(const tb__wire_sample_response_t *r,
                                      tb__buf_t *out) {
  int rc = TB_ENOMEM;
  TinkerPublic__SampledSequence *seqs = calloc(r->n_sequences + 1, sizeof(*seqs));
  TinkerPublic__SampledSequence **seqp = calloc(r->n_sequences + 1, sizeof(*seqp));
  TinkerPublic__SampleResponse msg = TINKER_PUBLIC__SAMPLE_RESPONSE__INIT;
  TinkerPublic__TopkPromptLogprobs topk = TINKER_PUBLIC__TOPK_PROMPT_LOGPROBS__INIT;
  if (seqs == NULL || seqp == NULL)
    goto done;
  /* Host order is the wire's little-endian order (le.h): arrays are
   * referenced in place, not copied. */
  for (size_t i = 0; i < r->n_sequences; i++) {
    const tb__wire_sequence_t *s = &r->sequences[i];
    tinker_public__sampled_sequence__init(&seqs[i]);
    seqs[i].stop_reason = s->stop_reason == TB_WIRE_STOP_REASON_LENGTH
                              ? TINKER_PUBLIC__STOP_REASON__STOP_REASON_LENGTH
                              : TINKER_PUBLIC__STOP_REASON__STOP_REASON_STOP;
    seqs[i].tokens.data = (uint8_t *)s->tokens;
    seqs[i].tokens.len = s->n_tokens * sizeof(int32_t);
    if (s->logprobs != NULL) {
      seqs[i]._logprobs_case = TINKER_PUBLIC__SAMPLED_SEQUENCE___LOGPROBS_LOGPROBS;
      seqs[i].logprobs.data = (uint8_t *)s->logprobs;
      seqs[i].logprobs.len = s->n_tokens * sizeof(float);
    }
    seqp[i] = &seqs[i];
  }
  msg.n_sequences = r->n_sequences;
  msg.sequences = seqp;
  msg.prompt_cache_hit_tokens = (int32_t)r->prompt_cache_hit_tokens;
  if (r->prompt_logprobs != NULL) {
    msg._prompt_logprobs_case = TINKER_PUBLIC__SAMPLE_RESPONSE___PROMPT_LOGPROBS_PROMPT_LOGPROBS;
    msg.prompt_logprobs.data = (uint8_t *)r->prompt_logprobs;
    msg.prompt_logprobs.len = r->n_prompt * sizeof(float);
  }
  if (r->topk_ids != NULL) {
    msg._topk_prompt_logprobs_case =
        TINKER_PUBLIC__SAMPLE_RESPONSE___TOPK_PROMPT_LOGPROBS_TOPK_PROMPT_LOGPROBS;
    msg.topk_prompt_logprobs = &topk;
    topk.token_ids.data = (uint8_t *)r->topk_ids;
    topk.token_ids.len = r->topk_rows * r->topk_k * sizeof(int32_t);
    topk.logprobs.data = (uint8_t *)r->topk_logprobs;
    topk.logprobs.len = r->topk_rows * r->topk_k * sizeof(float);
    topk.k = (uint32_t)r->topk_k;
    topk.prompt_length = (uint32_t)r->topk_rows;
  }
  size_t n = tinker_public__sample_response__get_packed_size(&msg);
  if ((rc = tb__buf_reserve(out, n)) == 0)
    out->len += tinker_public__sample_response__pack(&msg, (uint8_t *)out->base + out->len);
done:
  free(seqs);
  free(seqp);
  return rc;
}

/* Copies a little-endian byte array of 4-byte elements. */
static int copy4(tb__jctx_t *c, tb__arena_t *a, const ProtobufCBinaryData *b,
                 void **out, size_t *n, const char *what) {
  if (b->len % 4 != 0)
    return tb__jctx_fail(c, "%s: %zu bytes is not a whole number of 4-byte values",
                         what, b->len);
  *n = b->len / 4;
  *out = tb__arena_alloc(a, b->len + 4);
  if (*out == NULL)
    return TB_ENOMEM;
  if (b->len > 0)
    memcpy(*out, b->data, b->len);
  return 0;
}

int tb__wire_sample_response_from_proto(tb__jctx_t *c, tb__arena_t *a,
                                        tb_slice_t body,
                                        tb__wire_sample_response_t *r) {
  ProtobufCAllocator alloc = tb__wire_proto_allocator(a);
  memset(r, 0, sizeof(*r));
  TinkerPublic__SampleResponse *msg =
      tinker_public__sample_response__unpack(&alloc, body.len, (const uint8_t *)body.base);
  if (msg == NULL)
    return tb__jctx_fail(c, "not a valid protobuf SampleResponse");
  /* What the JSON decoder refuses, this one refuses too. */
  if (msg->prompt_cache_hit_tokens < 0)
    return tb__jctx_fail_at(c, "prompt_cache_hit_tokens", "%d is negative",
                            (int)msg->prompt_cache_hit_tokens);
  r->prompt_cache_hit_tokens = msg->prompt_cache_hit_tokens;
  r->n_sequences = msg->n_sequences;
  r->sequences = tb__arena_calloc(a, r->n_sequences + 1, sizeof(*r->sequences));
  if (r->sequences == NULL)
    return TB_ENOMEM;
  int rc = 0;
  size_t mark = tb__jctx_push_key(c, "sequences");
  for (size_t i = 0; i < r->n_sequences && rc == 0; i++) {
    const TinkerPublic__SampledSequence *s = msg->sequences[i];
    tb__wire_sequence_t *seq = &r->sequences[i];
    size_t mi = tb__jctx_push_index(c, i);
    if (s->stop_reason == TINKER_PUBLIC__STOP_REASON__STOP_REASON_STOP)
      seq->stop_reason = TB_WIRE_STOP_REASON_STOP;
    else if (s->stop_reason == TINKER_PUBLIC__STOP_REASON__STOP_REASON_LENGTH)
      seq->stop_reason = TB_WIRE_STOP_REASON_LENGTH;
    else
      rc = tb__jctx_fail(c, "stop_reason: unknown value %d", (int)s->stop_reason);
    if (rc == 0)
      rc = copy4(c, a, &s->tokens, (void **)&seq->tokens, &seq->n_tokens, "tokens");
    for (size_t k = 0; rc == 0 && k < seq->n_tokens; k++)
      if (seq->tokens[k] < 0) {
        size_t mt = tb__jctx_push_key(c, "tokens");
        tb__jctx_push_index(c, k);
        rc = tb__jctx_fail(c, "%d is negative", (int)seq->tokens[k]);
        tb__jctx_pop(c, mt);
      }
    /* Empty logprobs bytes are read as absent, as the SDK does. */
    if (rc == 0 && s->logprobs.len > 0) {
      size_t n = 0;
      rc = copy4(c, a, &s->logprobs, (void **)&seq->logprobs, &n, "logprobs");
      if (rc == 0 && n != seq->n_tokens)
        rc = tb__jctx_fail(c, "logprobs: expected %zu values (one per token), got %zu",
                           seq->n_tokens, n);
    }
    tb__jctx_pop(c, mi);
  }
  tb__jctx_pop(c, mark);
  if (rc != 0)
    return rc;
  if (msg->_prompt_logprobs_case ==
          TINKER_PUBLIC__SAMPLE_RESPONSE___PROMPT_LOGPROBS_PROMPT_LOGPROBS &&
      msg->prompt_logprobs.len > 0 &&
      (rc = copy4(c, a, &msg->prompt_logprobs, (void **)&r->prompt_logprobs, &r->n_prompt,
                  "prompt_logprobs")) != 0)
    return rc;
  const TinkerPublic__TopkPromptLogprobs *tk = msg->topk_prompt_logprobs;
  if (msg->_topk_prompt_logprobs_case ==
          TINKER_PUBLIC__SAMPLE_RESPONSE___TOPK_PROMPT_LOGPROBS_TOPK_PROMPT_LOGPROBS &&
      tk != NULL && tk->k > 0 && tk->prompt_length > 0) {
    size_t cells = (size_t)tk->k * tk->prompt_length, ni = 0, nl = 0;
    if ((rc = copy4(c, a, &tk->token_ids, (void **)&r->topk_ids, &ni,
                    "topk_prompt_logprobs.token_ids")) != 0 ||
        (rc = copy4(c, a, &tk->logprobs, (void **)&r->topk_logprobs, &nl,
                    "topk_prompt_logprobs.logprobs")) != 0)
      return rc;
    if (ni != cells || nl != cells)
      return tb__jctx_fail(c, "topk_prompt_logprobs: expected %zu cells (k x prompt_length)",
                           cells);
    for (size_t i = 0; i < cells; i++) {
      float lp = r->topk_logprobs[i];
      if (lp != TB_WIRE_TOPK_EMPTY_LOGPROB && (r->topk_ids[i] < 0 || !isfinite(lp))) {
        size_t mt = tb__jctx_push_key(c, "topk_prompt_logprobs");
        tb__jctx_push_index(c, i / tk->k);
        tb__jctx_push_index(c, i % tk->k);
        rc = tb__jctx_fail(c, "expected [token_id, logprob]");
        tb__jctx_pop(c, mt);
        return rc;
      }
    }
    r->topk_k = tk->k;
    r->topk_rows = tk->prompt_length;
  }
  return 0;
}

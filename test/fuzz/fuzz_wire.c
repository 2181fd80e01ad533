/*
 * Fuzz target: the decoders of src/wire/, both formats, both directions.
 *
 * Input: a selector byte, then the body.  The selector (mod 9) picks
 *   0  forward_backward request, JSON    (server: forward_backward_input)
 *   1  forward request, JSON             (server: forward_input)
 *   2  forward / forward_backward request, protobuf (server)
 *   3  asample request, JSON             (server; SamplingParams inside)
 *   4  ForwardBackwardOutput, JSON       (client)
 *   5  ForwardBackwardOutput, protobuf   (client)
 *   6  SampleResponse, JSON              (client)
 *   7  SampleResponse, protobuf          (client)
 *   8  a flat JSON object as the poll reader takes it (core/json_scan.h:
 *      retrieve_future bodies on the server, try_again answers on the
 *      client), against jansson: what it accepts, jansson must read as
 *      the same object, member by member
 * Requests go the way the server decodes them (model_routes.c decode_fwd:
 * the body, then the engine batch and its checks against `base`);
 * results the way the client does (client/convert.c, into the public
 * types).  What decodes must encode and decode again to the same thing
 * (the codecs of one type live side by side so that the two ends cannot
 * drift apart), unless the encoder refuses a value its format cannot
 * carry.
 *
 * Every input gets a fresh arena, freed at the end.
 */
#include "fuzz.h"

#include <string.h>

#include "client/convert.h"
#include "core/json_scan.h"
#include "core/log.h"
#include "engine/base_model.h"
#include "engine/llama.h"
#include "server/training.h"
#include "wire/datum.h"
#include "wire/encode.h"
#include "wire/output.h"
#include "wire/sample.h"

/* The server's --max-body, which bounds every decoded tensor: a server
 * run with --max-body 1M (the default 64M only makes inputs slower). */
#define MAX_BODY ((size_t)1 << 20)

static tb__model_config_t base_cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  tb__log_set_level(TB_LOG_OFF);
  tb__base_model_config(&base_cfg);
  return 0;
}

/* ------------------------------------------------------------ compare */

static int same_tensor(const tb__wire_tensor_t *a, const tb__wire_tensor_t *b) {
  if (a->dtype != b->dtype || a->numel != b->numel)
    return 0;
  if (a->numel == 0)
    return 1;
  return a->dtype == TB_DTYPE_FLOAT32
             ? memcmp(a->f32, b->f32, a->numel * sizeof(float)) == 0
             : memcmp(a->i64, b->i64, a->numel * sizeof(int64_t)) == 0;
}

static void same_fwdbwd(const tb__wire_fwdbwd_t *a, const tb__wire_fwdbwd_t *b,
                        const char *how) {
  FUZZ_CHECK(a->n_data == b->n_data, "%s: %zu datums became %zu", how, a->n_data,
             b->n_data);
  for (size_t i = 0; i < a->n_data; i++) {
    const tb__wire_datum_t *x = &a->data[i], *y = &b->data[i];
    FUZZ_CHECK(x->n_tokens == y->n_tokens &&
                   (x->n_tokens == 0 ||
                    memcmp(x->tokens, y->tokens, x->n_tokens * sizeof(int32_t)) == 0),
               "%s: datum %zu: tokens differ", how, i);
    FUZZ_CHECK(x->n_inputs == y->n_inputs, "%s: datum %zu: %zu inputs became %zu", how,
               i, x->n_inputs, y->n_inputs);
    for (size_t j = 0; j < x->n_inputs; j++) {
      const tb__wire_tensor_t *t = tb__wire_datum_input(y, x->inputs[j].name);
      FUZZ_CHECK(t != NULL && same_tensor(&x->inputs[j].tensor, t),
                 "%s: datum %zu: input %s differs", how, i, x->inputs[j].name);
    }
  }
  FUZZ_CHECK((a->loss_fn == NULL) == (b->loss_fn == NULL) &&
                 (a->loss_fn == NULL || strcmp(a->loss_fn, b->loss_fn) == 0),
             "%s: loss_fn differs", how);
  FUZZ_CHECK(a->n_config == b->n_config, "%s: loss_fn_config differs", how);
  FUZZ_CHECK((a->model_id == NULL) == (b->model_id == NULL) &&
                 (a->model_id == NULL || strcmp(a->model_id, b->model_id) == 0),
             "%s: model_id differs", how);
}

/* ------------------------------------------------------------ requests */

/* The server's decode of a forward / forward_backward body. */
static int decode_fwd(tb__arena_t *a, tb_slice_t body, int proto, const char *key,
                      tb__wire_fwdbwd_t *w, tb__batch_t *batch) {
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  memset(w, 0, sizeof(*w));
  int rc;
  if (proto) {
    rc = tb__wire_fwdbwd_request_from_proto(&c, a, body, MAX_BODY, w);
  } else {
    json_t *doc = NULL;
    rc = tb__json_parse(body, &doc, &err);
    rc = rc < 0 ? rc : tb__wire_fwdbwd_request_from_json(&c, a, doc, key, MAX_BODY, w);
    json_decref(doc);
  }
  if (rc < 0)
    FUZZ_CHECK(rc == TB_ENOMEM || err.code != 0,
               "decoding failed (%d) without saying why", rc);
  if (rc >= 0 && batch != NULL) {
    memset(batch, 0, sizeof(*batch));
    rc = tb__fwdbwd_to_batch(&c, a, w, batch, proto ? NULL : key);
    const char *why = NULL;
    if (rc >= 0)
      (void)tb__batch_validate(batch, &base_cfg, &why);
  }
  tb_error_clear(&err);
  return rc;
}

static void fwdbwd_request(tb_slice_t body, int proto, const char *key) {
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__wire_fwdbwd_t w;
  tb__batch_t batch;
  if (decode_fwd(&a, body, proto, key, &w, &batch) >= 0) {
    /* The client's encoders, back through the server's decoders. */
    tb__buf_t pb = TB_BUF_INIT;
    int rc = tb__wire_fwdbwd_request_to_proto(&w, &pb);
    FUZZ_CHECK(rc == 0 || rc == TB_EINVAL || rc == TB_ENOMEM, "to_proto: %d", rc);
    if (rc == 0) {
      tb__wire_fwdbwd_t w2;
      tb_slice_t s = { pb.base, pb.len };
      rc = decode_fwd(&a, s, 1, key, &w2, NULL);
      FUZZ_CHECK(rc >= 0, "its protobuf encoding does not decode (%d)", rc);
      same_fwdbwd(&w, &w2, "protobuf round trip");
    }
    tb__buf_free(&pb);
    json_t *j = tb__wire_fwdbwd_request_to_json(&w, key);
    if (j != NULL) {
      size_t n;
      char *text = tb__json_dump(j, &n);
      if (text != NULL) {
        tb__wire_fwdbwd_t w3;
        tb_slice_t s = { text, n };
        rc = decode_fwd(&a, s, 0, key, &w3, NULL);
        FUZZ_CHECK(rc >= 0, "its JSON encoding does not decode (%d): %s", rc, text);
        same_fwdbwd(&w, &w3, "JSON round trip");
        free(text);
      }
      json_decref(j);
    }
  }
  tb__arena_free(&a);
}

static int decode_sample(tb__arena_t *a, tb_slice_t body, tb__wire_sample_request_t *r) {
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  json_t *doc = NULL;
  memset(r, 0, sizeof(*r));
  int rc = tb__json_parse(body, &doc, &err);
  rc = rc < 0 ? rc : tb__wire_sample_request_from_json(&c, a, doc, r);
  json_decref(doc);
  tb_error_clear(&err);
  return rc;
}

static void sample_request(tb_slice_t body) {
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__wire_sample_request_t r;
  if (decode_sample(&a, body, &r) >= 0) {
    json_t *j = tb__wire_sample_request_to_json(&r);
    size_t n;
    char *text = j != NULL ? tb__json_dump(j, &n) : NULL;
    if (text != NULL) {
      tb__wire_sample_request_t r2;
      tb_slice_t s = { text, n };
      int rc = decode_sample(&a, s, &r2);
      FUZZ_CHECK(rc >= 0, "its JSON encoding does not decode (%d): %s", rc, text);
      FUZZ_CHECK(r.n_prompt == r2.n_prompt &&
                     (r.n_prompt == 0 ||
                      memcmp(r.prompt, r2.prompt, r.n_prompt * sizeof(int32_t)) == 0),
                 "round trip: the prompt differs");
      FUZZ_CHECK(r.num_samples == r2.num_samples && r.seq_id == r2.seq_id &&
                     r.params.max_tokens == r2.params.max_tokens &&
                     r.params.top_k == r2.params.top_k &&
                     r.params.n_stop_strings == r2.params.n_stop_strings &&
                     r.params.n_stop_tokens == r2.params.n_stop_tokens,
                 "round trip: the parameters differ");
      free(text);
    }
    json_decref(j);
  }
  tb__arena_free(&a);
}

/* ------------------------------------------------------------ results */

/* NAME(arena, body, proto, out): a result decoded from its protobuf or
 * JSON form; a failure must say why. */
#define DEFINE_DECODE(NAME, T, FROM_PROTO, FROM_JSON)                            \
  static int NAME(tb__arena_t *a, tb_slice_t body, int proto, T *out) {          \
    tb_error_t err = { 0 };                                                      \
    tb__jctx_t c;                                                                \
    tb__jctx_init(&c, &err);                                                     \
    memset(out, 0, sizeof(*out));                                                \
    int rc;                                                                      \
    if (proto) {                                                                 \
      rc = FROM_PROTO(&c, a, body, out);                                         \
    } else {                                                                     \
      json_t *doc = NULL;                                                        \
      rc = tb__json_parse(body, &doc, &err);                                     \
      rc = rc < 0 ? rc : FROM_JSON(&c, a, doc, out);                             \
      json_decref(doc);                                                          \
    }                                                                            \
    if (rc < 0)                                                                  \
      FUZZ_CHECK(rc == TB_ENOMEM || err.code != 0,                               \
                 "decoding failed (%d) without saying why", rc);                 \
    tb_error_clear(&err);                                                        \
    return rc;                                                                   \
  }

DEFINE_DECODE(decode_output, tb__wire_fwdbwd_output_t, tb__wire_fwdbwd_output_from_proto,
              tb__wire_fwdbwd_output_from_json)
DEFINE_DECODE(decode_response, tb__wire_sample_response_t,
              tb__wire_sample_response_from_proto, tb__wire_sample_response_from_json)

static void fwdbwd_output(tb_slice_t body, int proto) {
  /* The client's whole decode, into the public result. */
  tb_forward_backward_output_t *out = NULL;
  tb_error_t err = { 0 };
  if (tb__decode_fwdbwd_output(body.base, body.len, proto, &out, &err) == 0)
    tb_forward_backward_output_free(out);
  tb_error_clear(&err);

  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__wire_fwdbwd_output_t o;
  if (decode_output(&a, body, proto, &o) >= 0) {
    tb__buf_t pb = TB_BUF_INIT;
    int rc = tb__wire_fwdbwd_output_to_proto(&o, &pb);
    FUZZ_CHECK(rc == 0 || rc == TB_EINVAL || rc == TB_ENOMEM, "to_proto: %d", rc);
    /* Datums without fields travel as a bare count, which the decoder
     * believes only up to the length of the body (more would allocate far
     * beyond what came): their compact encoding may read as a lie. */
    int fieldless = o.n_outputs > 0 && o.outputs[0].n_fields == 0;
    if (rc == 0 && !(fieldless && o.n_outputs > pb.len)) {
      tb__wire_fwdbwd_output_t o2;
      tb_slice_t s = { pb.base, pb.len };
      rc = decode_output(&a, s, 1, &o2);
      FUZZ_CHECK(rc >= 0, "its protobuf encoding does not decode (%d)", rc);
      FUZZ_CHECK(o2.n_outputs == o.n_outputs && o2.n_metrics == o.n_metrics,
                 "protobuf round trip: %zu outputs, %zu metrics became %zu, %zu",
                 o.n_outputs, o.n_metrics, o2.n_outputs, o2.n_metrics);
    }
    tb__buf_free(&pb);
    json_t *j = tb__wire_fwdbwd_output_to_json(&o);
    size_t n;
    char *text = j != NULL ? tb__json_dump(j, &n) : NULL;
    if (text != NULL) {
      tb__wire_fwdbwd_output_t o3;
      tb_slice_t s = { text, n };
      rc = decode_output(&a, s, 0, &o3);
      FUZZ_CHECK(rc >= 0, "its JSON encoding does not decode (%d): %s", rc, text);
      FUZZ_CHECK(o3.n_outputs == o.n_outputs && o3.n_metrics == o.n_metrics,
                 "JSON round trip: outputs or metrics differ");
      free(text);
    }
    json_decref(j);
  }
  tb__arena_free(&a);
}

static void same_response(const tb__wire_sample_response_t *a,
                          const tb__wire_sample_response_t *b, const char *how) {
  FUZZ_CHECK(a->n_sequences == b->n_sequences, "%s: %zu sequences became %zu", how,
             a->n_sequences, b->n_sequences);
  for (size_t i = 0; i < a->n_sequences; i++) {
    const tb__wire_sequence_t *x = &a->sequences[i], *y = &b->sequences[i];
    FUZZ_CHECK(x->stop_reason == y->stop_reason && x->n_tokens == y->n_tokens &&
                   (x->n_tokens == 0 ||
                    memcmp(x->tokens, y->tokens, x->n_tokens * sizeof(int32_t)) == 0),
               "%s: sequence %zu differs", how, i);
  }
  FUZZ_CHECK(a->n_prompt == b->n_prompt, "%s: prompt log-probs differ", how);
  FUZZ_CHECK(a->topk_rows == b->topk_rows, "%s: %zu top-k rows became %zu", how, a->topk_rows,
             b->topk_rows);
  /* A row is its cells up to the first empty one (the JSON form keeps no
   * more, as the SDK reads it); k may shrink to the longest row. */
  for (size_t r = 0; r < a->topk_rows; r++)
    for (size_t k = 0; k < a->topk_k || k < b->topk_k; k++) {
      float la = k < a->topk_k ? a->topk_logprobs[r * a->topk_k + k] : TB_WIRE_TOPK_EMPTY_LOGPROB;
      float lb = k < b->topk_k ? b->topk_logprobs[r * b->topk_k + k] : TB_WIRE_TOPK_EMPTY_LOGPROB;
      if (la == TB_WIRE_TOPK_EMPTY_LOGPROB) {
        FUZZ_CHECK(lb == TB_WIRE_TOPK_EMPTY_LOGPROB, "%s: top-k row %zu grew", how, r);
        break;
      }
      FUZZ_CHECK(la == lb && a->topk_ids[r * a->topk_k + k] == b->topk_ids[r * b->topk_k + k],
                 "%s: top-k row %zu cell %zu differs", how, r, k);
    }
}

static void sample_response(tb_slice_t body, int proto) {
  tb_sample_response_t *out = NULL;
  tb_error_t err = { 0 };
  if (tb__decode_sample_response(body.base, body.len, proto, &out, &err) == 0)
    tb_sample_response_free(out);
  tb_error_clear(&err);

  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__wire_sample_response_t r;
  if (decode_response(&a, body, proto, &r) >= 0) {
    tb__buf_t pb = TB_BUF_INIT;
    int rc = tb__wire_sample_response_to_proto(&r, &pb);
    FUZZ_CHECK(rc == 0 || rc == TB_EINVAL || rc == TB_ENOMEM, "to_proto: %d", rc);
    if (rc == 0) {
      tb__wire_sample_response_t r2;
      tb_slice_t s = { pb.base, pb.len };
      rc = decode_response(&a, s, 1, &r2);
      FUZZ_CHECK(rc >= 0, "its protobuf encoding does not decode (%d)", rc);
      same_response(&r, &r2, "protobuf round trip");
    }
    tb__buf_free(&pb);
    json_t *j = tb__wire_sample_response_to_json(&r);
    size_t n;
    char *text = j != NULL ? tb__json_dump(j, &n) : NULL;
    if (text != NULL) {
      tb__wire_sample_response_t r3;
      tb_slice_t s = { text, n };
      rc = decode_response(&a, s, 0, &r3);
      FUZZ_CHECK(rc >= 0, "its JSON encoding does not decode (%d): %s", rc, text);
      same_response(&r, &r3, "JSON round trip");
      free(text);
    }
    json_decref(j);
  }
  tb__arena_free(&a);
}

/* ------------------------------------------------------------ flat objects */

typedef struct scan_check_s {
  json_t *doc;  /* what jansson read, or NULL */
  int dup;      /* a key comes twice: jansson keeps the last value */
  int skip;     /* a number jansson cannot hold: no verdict */
  size_t i;     /* the member the scanner is at */
} scan_check_t;

static int scan_member(void *ctx, const tb__jscan_member_t *m) {
  scan_check_t *s = ctx;
  if (s->skip)
    return 0;
  FUZZ_CHECK(s->doc != NULL, "the scanner reads what is no JSON object (member %zu)", s->i);
  json_t *v = json_object_getn(s->doc, m->key.base, m->key.len);
  FUZZ_CHECK(v != NULL, "member %zu: key %.*s is not jansson's", s->i, (int)m->key.len,
             m->key.base);
  if (!s->dup) {
    switch (m->type) {
      case TB_JSCAN_STRING:
        FUZZ_CHECK(json_is_string(v) && json_string_length(v) == m->str.len &&
                       memcmp(json_string_value(v), m->str.base, m->str.len) == 0,
                   "member %zu: the string differs from jansson's", s->i);
        break;
      case TB_JSCAN_NUMBER:
        FUZZ_CHECK(json_is_number(v) && json_number_value(v) == m->num,
                   "member %zu: the number %.17g differs from jansson's", s->i, m->num);
        break;
      case TB_JSCAN_TRUE:
        FUZZ_CHECK(json_is_true(v), "member %zu: true for the scanner only", s->i);
        break;
      case TB_JSCAN_FALSE:
        FUZZ_CHECK(json_is_false(v), "member %zu: false for the scanner only", s->i);
        break;
      case TB_JSCAN_NULL:
        FUZZ_CHECK(json_is_null(v), "member %zu: null for the scanner only", s->i);
        break;
    }
  }
  s->i++;
  return 0;
}

static int scan_count(void *ctx, const tb__jscan_member_t *m) {
  return 0;
}

static void flat_object(tb_slice_t body) {
  scan_check_t s = { 0 };
  json_error_t je;
  s.doc = json_loadb(body.base, body.len, JSON_DECODE_INT_AS_REAL, &je);
  /* JSON has numbers of any size; jansson's stop at a double. */
  s.skip = s.doc == NULL && json_error_code(&je) == json_error_numeric_overflow;
  if (s.doc != NULL && !json_is_object(s.doc)) {
    json_decref(s.doc);
    s.doc = NULL;
  }
  if (s.doc != NULL) {
    json_t *strict =
        json_loadb(body.base, body.len, JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES, &je);
    s.dup = strict == NULL;
    json_decref(strict);
  }
  /* Members before a give-up are passed on too: the verdict is on the
   * objects it reads whole, member by member in a second pass. */
  if (tb__jscan_object(body, scan_count, NULL) && !s.skip) {
    FUZZ_CHECK(tb__jscan_object(body, scan_member, &s), "the second pass gave up");
    FUZZ_CHECK(s.dup || s.i == json_object_size(s.doc),
               "the scanner read %zu members, jansson %zu", s.i, json_object_size(s.doc));
  }
  json_decref(s.doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in_t in = { data, size };
  uint8_t sel = fuzz_byte(&in) % 9;
  tb_slice_t body = { (const char *)in.p, in.n };
  switch (sel) {
    case 0: fwdbwd_request(body, 0, "forward_backward_input"); break;
    case 1: fwdbwd_request(body, 0, "forward_input"); break;
    case 2: fwdbwd_request(body, 1, "forward_backward_input"); break;
    case 3: sample_request(body); break;
    case 4: fwdbwd_output(body, 0); break;
    case 5: fwdbwd_output(body, 1); break;
    case 6: sample_response(body, 0); break;
    case 7: sample_response(body, 1); break;
    case 8: flat_object(body); break;
  }
  return 0;
}

/*
 * The SamplingClient (tinkerbell/sampling_client.h): a sampling session,
 * and samples submitted under the SDK's flow control.
 *
 * Each sample is a sop_t that waits in a FIFO until it may be submitted:
 * the session exists, fewer than max_in_flight submissions are on the
 * wire, and no 429 backoff is running.  Its POST is a tb__client_op_t
 * without submission retries of its own, so that a 429 reaches this file:
 * the backoff is then shared by every sample of the client and the
 * request goes back to the head of the queue with its seq_id.  Other
 * retryable failures of the POST (connection errors, 408, 409, 5xx) are
 * retried here with the config's backoff; a 410 while polling (the
 * server's future expired) submits the sample again with a new seq_id.
 * The session (creation, the pending client of the training side) is
 * sampling_session.c's.
 */
#include "tinkerbell/sampling_client.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/answer.h"
#include "client/clients.h"
#include "client/sampling_internal.h"
#include "client/convert.h"
#include "core/json.h"
#include "wire/encode.h"
#include "wire/rest.h"

/* The SDK's estimate of a prompt's size, and the size past which a 429
 * pauses for longer. */
#define SAMPLE_BYTES_PER_TOKEN 10
#define SAMPLE_LARGE_PROMPT_BYTES (128 * 1024)
#define SAMPLE_BACKOFF_MS 1000
#define SAMPLE_LARGE_BACKOFF_MS 5000

typedef enum { S_SAMPLE, S_LOGPROBS, S_BASE_MODEL } skind_t;

typedef struct tb__sampling_client_s sc_t;
typedef struct tb__sampling_op_s sop_t;

struct tb__sampling_op_s {
  sc_t *s;
  skind_t kind;
  tb_future_t *future;          /* the caller's */
  json_t *body;                 /* without sampling_session_id and seq_id */
  size_t prompt_tokens;
  int64_t seq;                  /* -1: not yet numbered */
  tb_future_t *inner;
  int submit_status;            /* of the last POST: 1 while it is sent */
  int submit_http;
  unsigned attempts;            /* retries of failed POSTs */
  int cancelled;
  int queued;
  sop_t *next;                  /* in the queue */
  sop_t *live_next, *live_prev; /* every op not yet completed, for close */
  tb__alarm_t alarm;
};



/* ------------------------------------------------------------ ops */

static sop_t *sop_new(sc_t *s, skind_t kind) {
  sop_t *op = calloc(1, sizeof(*op));
  if (op == NULL)
    return NULL;
  op->future = tb__client_future_new(s->rt->loop);
  if (op->future == NULL) {
    free(op);
    return NULL;
  }
  op->s = s;
  op->kind = kind;
  op->seq = -1;
  op->submit_status = 1;
  tb__alarm_init(&op->alarm, NULL, op);
  return op;
}

static void sop_complete(sop_t *op, const tb_result_type_t *type, void *result,
                         tb_error_t *err) {
  sc_t *s = op->s;
  tb_future_t *f = op->future;
  tb_error_t e = { 0 };
  if (op->cancelled) {
    tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "cancelled");
  } else if (err != NULL) {
    e = *err;
    memset(err, 0, sizeof(*err));
  }
  if (op->inner != NULL)
    tb_future_free(op->inner);
  json_decref(op->body);
  if (op->live_prev != NULL)
    op->live_prev->live_next = op->live_next;
  else
    s->live = op->live_next;
  if (op->live_next != NULL)
    op->live_next->live_prev = op->live_prev;
  free(op);
  s->n_live--;
  if (e.code != 0) {
    if (type != NULL && type->free != NULL)
      type->free(result);
    tb__client_future_fail(f, &e);
  } else {
    tb__client_future_resolve(f, type, result);
  }
  tb__sampling_check_closed(s);
}

static void on_fail_alarm(tb__alarm_t *a) {
  sop_t *op = a->data;
  tb_error_t e = { 0 };
  if (op->s->state >= 0 || tb_error_copy(&e, &op->s->create_err) != 0 || e.code == 0)
    tb_error_set(&e, TB_ECANCELED, TB_CATEGORY_CANCELLED, "cancelled");
  sop_complete(op, NULL, NULL, &e);
}

/* Fails op on a later turn (cancelled, or with the session's failure). */
static void sop_fail_later(sop_t *op) {
  op->alarm.cb = on_fail_alarm;
  if (tb__alarm_start(op->s->rt, &op->alarm, 0) != 0)
    on_fail_alarm(&op->alarm);
}

static void unqueue(sop_t *op) {
  sc_t *s = op->s;
  sop_t **p = &s->queue;
  while (*p != NULL && *p != op)
    p = &(*p)->next;
  if (*p == op)
    *p = op->next;
  s->queue_tail = NULL;
  for (sop_t *q = s->queue; q != NULL; q = q->next)
    s->queue_tail = q;
  op->next = NULL;
  op->queued = 0;
}

static void sop_cancel(tb_future_t *f) {
  sop_t *op = f->driver_;
  if (op->cancelled)
    return;
  op->cancelled = 1;
  if (op->queued) {
    unqueue(op);
    sop_fail_later(op);
  } else if (op->inner != NULL) {
    tb_future_cancel(op->inner);  /* its callback completes op */
  } else if (tb__alarm_armed(&op->alarm)) {
    tb__alarm_stop(op->s->rt, &op->alarm);  /* a retry that was waiting */
    sop_fail_later(op);
  }
}

static void enqueue(sop_t *op, int at_head) {
  sc_t *s = op->s;
  op->queued = 1;
  if (at_head) {
    op->next = s->queue;
    s->queue = op;
    if (s->queue_tail == NULL)
      s->queue_tail = op;
  } else {
    op->next = NULL;
    if (s->queue_tail != NULL)
      s->queue_tail->next = op;
    else
      s->queue = op;
    s->queue_tail = op;
  }
}

/* ------------------------------------------------------------ decoding */

/* The result of a sample (kind S_SAMPLE) or of compute_logprobs from its
 * body.  Touches nothing but its arguments: it also runs on the
 * threadpool. */
static int decode_result(skind_t kind, const char *body, size_t len, int proto,
                         const tb_result_type_t **type, void **result, tb_error_t *err) {
  tb_sample_response_t *r = NULL;
  int rc = tb__decode_sample_response(body, len, proto, &r, err);
  if (rc != 0)
    return rc;
  if (kind == S_SAMPLE) {
    *type = &tb_result_sample_response;
    *result = r;
    return 0;
  }
  /* compute_logprobs: the prompt's log-probs alone. */
  tb_logprobs_t *l = calloc(1, sizeof(*l));
  if (l != NULL && r->prompt_logprobs != NULL) {
    l->values = r->prompt_logprobs;
    l->n = r->n_prompt_logprobs;
    r->prompt_logprobs = NULL;
  } else if (l != NULL) {
    free(l);
    tb_sample_response_free(r);
    return tb_error_set(err, TB_EPROTO, TB_CATEGORY_SERVER,
                        "compute_logprobs: the answer has no prompt_logprobs");
  }
  tb_sample_response_free(r);
  if (l == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  *type = &tb_result_logprobs;
  *result = l;
  return 0;
}

/* Large answers are decoded off the loop: on_sample_done queues the work. */
static const tb_result_type_t raw_body_type = { "sample_body", tb__raw_body_free };

static int decode_sample(tb__client_op_t *cop, const char *body, size_t len, int proto,
                         const tb_result_type_t **type, void **result, tb_error_t *err) {
  sop_t *op = cop->decode_data;
  if (len <= TB__INLINE_DECODE_MAX)
    return decode_result(op->kind, body, len, proto, type, result, err);
  return tb__raw_body_keep(body, len, proto, &raw_body_type, type, result, err);
}

/* A large result decoded off the loop: the work touches only this. */
typedef struct decode_work_s {
  uv_work_t work;
  sop_t *op;
  skind_t kind;
  tb__raw_body_t *raw;
  const tb_result_type_t *type;
  void *result;
  tb_error_t err;
  int rc;
} decode_work_t;

static void sop_complete(sop_t *op, const tb_result_type_t *type, void *result,
                         tb_error_t *err);

static void decode_work(uv_work_t *w) {
  decode_work_t *d = w->data;
  d->rc = decode_result(d->kind, d->raw->data, d->raw->len, d->raw->proto, &d->type,
                        &d->result, &d->err);
}

static void decode_done(uv_work_t *w, int status) {
  decode_work_t *d = w->data;
  sop_t *op = d->op;
  if (d->rc != 0 && d->err.code == 0)
    tb_error_set(&d->err, d->rc, TB_CATEGORY_SERVER, "cannot decode the result: %s",
                 tb_strerror(d->rc));
  tb__raw_body_free(d->raw);
  if (d->rc == 0)
    sop_complete(op, d->type, d->result, NULL);
  else
    sop_complete(op, NULL, NULL, &d->err);
  tb_error_clear(&d->err);
  free(d);
}

/* Completes op with the raw body of a large result, decoded off the loop
 * (or here when no work item can be made). */
static void complete_raw(sop_t *op, tb__raw_body_t *raw) {
  decode_work_t *d = calloc(1, sizeof(*d));
  if (d != NULL) {
    d->op = op;
    d->kind = op->kind;
    d->raw = raw;
    d->work.data = d;
    if (uv_queue_work(op->s->rt->loop, &d->work, decode_work, decode_done) == 0)
      return;
    free(d);
  }
  const tb_result_type_t *type = NULL;
  void *result = NULL;
  tb_error_t e = { 0 };
  int rc = decode_result(op->kind, raw->data, raw->len, raw->proto, &type, &result, &e);
  tb__raw_body_free(raw);
  sop_complete(op, type, result, rc == 0 ? NULL : &e);
  tb_error_clear(&e);
}

static int decode_base_model(tb__client_op_t *cop, const char *body, size_t len, int proto,
                             const tb_result_type_t **type, void **result, tb_error_t *err) {
  TB__DECODE_FIELDS(tb__wire_sampler_info_t, tb__wire_sampler_info_from_json(&d.jc, d.doc, &w),
                    "sampler");
  return tb__answer_string(&d, w.base_model, type, result, err);
}

/* ------------------------------------------------------------ submission */

static void on_sample_done(tb_future_t *f, int status);

static void on_submitted(tb__client_op_t *cop, int status) {
  sop_t *op = cop->decode_data;
  sc_t *s = op->s;
  op->submit_status = status;
  op->submit_http = cop->call.http_status;
  s->in_flight--;
  if (status != 0 && op->submit_http == 429) {
    /* Every sample of the client waits; this one is sent again. */
    uint64_t pause = op->prompt_tokens * SAMPLE_BYTES_PER_TOKEN > SAMPLE_LARGE_PROMPT_BYTES
                         ? SAMPLE_LARGE_BACKOFF_MS
                         : SAMPLE_BACKOFF_MS;
    uint64_t until = uv_now(s->rt->loop) + pause;
    if (until > s->backoff_until)
      s->backoff_until = until;
  }
  tb__sampling_pump(s);
}

/* Tells the server that this client handles a 429 itself (as the SDK
 * does), so that it may answer one rather than queue the sample. */
static const tb__http_header_t backpressure_header[] = {
  { { "X-Tinker-Sampling-Backpressure", 30 }, { "1", 1 } },
};

static int start_sample(sop_t *op) {
  sc_t *s = op->s;
  if (op->seq < 0)
    op->seq = s->next_seq++;
  if (tb__wire_sample_request_add_ids(op->body, s->session_id, op->seq) != 0)
    return TB_ENOMEM;
  size_t len = 0;
  char *text = tb__json_dump(op->body, &len);
  if (text == NULL)
    return TB_ENOMEM;
  tb__client_op_opts_t o = { 0 };
  o.path = "/api/v1/asample";
  o.body = text;
  o.body_len = len;
  o.max_retries = 0;
  o.poll = 1;
  o.request_type = "Sample";
  o.accept_proto = 1;
  o.decode = decode_sample;
  o.decode_data = op;
  o.submitted = on_submitted;
  o.extra = backpressure_header;
  o.n_extra = 1;
  op->submit_status = 1;
  int rc = tb__client_op_start(s->rt, &o, &op->inner);
  free(text);
  if (rc != 0)
    return rc;
  s->in_flight++;
  op->inner->data = op;
  tb_future_set_callback(op->inner, on_sample_done);
  return 0;
}

static int start_base_model(sop_t *op) {
  sc_t *s = op->s;
  char *path = tb__asprintf("/api/v1/samplers/%s", s->session_id);
  if (path == NULL)
    return TB_ENOMEM;
  tb__client_op_opts_t o = { 0 };
  o.method = "GET";
  o.path = path;
  o.max_retries = -1;
  o.decode = decode_base_model;
  o.decode_data = op;
  int rc = tb__client_op_start(s->rt, &o, &op->inner);
  free(path);
  if (rc != 0)
    return rc;
  op->inner->data = op;
  tb_future_set_callback(op->inner, on_sample_done);
  return 0;
}

static void on_retry_alarm(tb__alarm_t *a) {
  sop_t *op = a->data;
  enqueue(op, 1);
  tb__sampling_pump(op->s);
}

static int retryable_submit(const sop_t *op) {
  int h = op->submit_http;
  return h == 0 || h == 408 || h == 409 || h >= 500;
}

static void on_sample_done(tb_future_t *f, int status) {
  sop_t *op = f->data;
  sc_t *s = op->s;
  if (status == 0 && f->result_type == &raw_body_type && !op->cancelled) {
    tb__raw_body_t *raw = tb_future_take(f, &raw_body_type);
    tb_future_free(f);
    op->inner = NULL;
    complete_raw(op, raw);
    return;
  }
  if (status == 0 || op->cancelled || s->closing) {
    const tb_result_type_t *type = f->result_type;
    void *result = status == 0 ? tb_future_take(f, type) : NULL;
    tb_error_t e = { 0 };
    if (status != 0)
      tb_error_copy(&e, &f->error);
    sop_complete(op, type, result, status != 0 ? &e : NULL);
    tb_error_clear(&e);
    return;
  }
  int again = 0, at_head = 0;
  uint64_t delay = 0;
  if (op->kind != S_BASE_MODEL && op->submit_status != 0) {
    if (op->submit_http == 429) {
      again = at_head = 1;  /* same seq_id, after the shared backoff */
    } else if (retryable_submit(op) && op->attempts < s->rt->cfg.max_retries &&
               f->error.code != TB_ECANCELED) {
      uint64_t base = s->rt->cfg.retry_base_ms << (op->attempts < 20 ? op->attempts : 20);
      if (base > s->rt->cfg.retry_max_ms)
        base = s->rt->cfg.retry_max_ms;
      delay = (uint64_t)((double)base * tb__rt_jitter(s->rt, 0.75, 1.0));
      op->attempts++;
      again = 1;
    }
  } else if (op->kind != S_BASE_MODEL && f->error.http_status == 410) {
    /* The server's future expired: the whole sample again, numbered anew. */
    op->seq = -1;
    again = 1;
  }
  if (!again) {
    tb_error_t e = { 0 };
    tb_error_copy(&e, &f->error);
    if (e.code == 0)
      e.code = status;
    sop_complete(op, NULL, NULL, &e);
    tb_error_clear(&e);
    return;
  }
  tb_future_free(f);
  op->inner = NULL;
  if (delay > 0) {
    op->alarm.cb = on_retry_alarm;
    if (tb__alarm_start(s->rt, &op->alarm, delay) == 0)
      return;
  }
  enqueue(op, at_head);
  tb__sampling_pump(s);
}

/* Sends what may be sent now. */
void tb__sampling_pump(sc_t *s) {
  if (s->state == 0)
    return;
  if (s->state < 0 || s->closing) {
    while (s->queue != NULL) {
      sop_t *op = s->queue;
      unqueue(op);
      sop_fail_later(op);
    }
    return;
  }
  uint64_t now = uv_now(s->rt->loop);
  while (s->queue != NULL) {
    sop_t *op = s->queue;
    int limited = op->kind != S_BASE_MODEL;
    if (limited && now < s->backoff_until) {
      tb__alarm_start(s->rt, &s->backoff_alarm, s->backoff_until - now);
      return;
    }
    if (limited && s->in_flight >= s->max_in_flight)
      return;  /* the next answered POST pumps again */
    unqueue(op);
    int rc = op->kind == S_BASE_MODEL ? start_base_model(op) : start_sample(op);
    if (rc != 0) {
      tb_error_t e = { 0 };
      tb__client_not_started(&e, rc, "cannot send the sample");
      sop_complete(op, NULL, NULL, &e);
    }
  }
}

/* ------------------------------------------------------------ API */

static int submit_new(sc_t *s, skind_t kind, json_t *body, size_t prompt_tokens,
                      tb_future_t **out) {
  /* get_base_model sends no body */
  sop_t *op = body != NULL || kind == S_BASE_MODEL ? sop_new(s, kind) : NULL;
  if (op == NULL) {
    json_decref(body);
    return TB_ENOMEM;
  }
  op->body = body;
  op->prompt_tokens = prompt_tokens;
  tb__client_future_set_driver(op->future, sop_cancel, op);
  s->n_live++;
  op->live_next = s->live;
  if (s->live != NULL)
    s->live->live_prev = op;
  s->live = op;
  *out = op->future;
  enqueue(op, 0);
  tb__sampling_pump(s);
  return 0;
}

static int sample_common(tb_sampling_client_t *samp, skind_t kind, const tb_model_input_t *prompt,
                         size_t num_samples, const tb_sample_params_t *params,
                         int include_prompt_logprobs, size_t topk, tb_future_t **out,
                         tb_error_t *err) {
  sc_t *s = tb__sampling_usable(samp);
  if (s == NULL || out == NULL || prompt == NULL)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "sample: NULL argument");
  if (s->closing)
    return tb_error_set(err, TB_ECLOSING, TB_CATEGORY_CANCELLED, "the client is closing");
  if (tb_model_input_length(prompt) == 0)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "sample: the prompt is empty");
  if (num_samples < 1)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "sample: num_samples must be >= 1");
  tb_sample_params_t def;
  if (params == NULL) {
    tb_sample_params_default(&def);
    params = &def;
  }
  tb__wire_sampling_params_t wp;
  int rc = tb__sample_params_to_wire(params, &wp, err);
  if (rc != 0)
    return rc;
  size_t n_tokens = tb_model_input_length(prompt);
  int32_t *toks = malloc((n_tokens + 1) * sizeof(int32_t));
  if (toks == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  tb_model_input_tokens(prompt, toks);
  /* The session and the seq_id are added when the request is sent. */
  tb__wire_sample_request_t r = { .prompt = toks,
                                  .n_prompt = n_tokens,
                                  .params = wp,
                                  .num_samples = (int64_t)num_samples,
                                  .prompt_logprobs = include_prompt_logprobs,
                                  .topk_prompt_logprobs = (int64_t)topk,
                                  .seq_id = -1 };
  json_t *b = tb__wire_sample_request_to_json(&r);
  free(toks);
  if (b == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NONE, "out of memory");
  rc = submit_new(s, kind, b, n_tokens, out);
  return rc ? tb_error_set(err, rc, TB_CATEGORY_NONE, "%s", tb_strerror(rc)) : 0;
}

int tb_sampling_client_sample(tb_sampling_client_t *samp, const tb_model_input_t *prompt,
                              size_t num_samples, const tb_sample_params_t *params,
                              int include_prompt_logprobs, size_t topk_prompt_logprobs,
                              tb_future_t **out) {
  return sample_common(samp, S_SAMPLE, prompt, num_samples, params, include_prompt_logprobs,
                       topk_prompt_logprobs, out, NULL);
}

int tb_sampling_client_sample_sync(tb_sampling_client_t *samp, const tb_model_input_t *prompt,
                                   size_t num_samples, const tb_sample_params_t *params,
                                   int include_prompt_logprobs, size_t topk_prompt_logprobs,
                                   tb_sample_response_t **result, tb_error_t *err) {
  if (tb__client_check_nested(samp ? samp->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f;
  int rc = sample_common(samp, S_SAMPLE, prompt, num_samples, params, include_prompt_logprobs,
                         topk_prompt_logprobs, &f, err);
  if (rc != 0)
    return rc;
  return tb__client_wait_take(samp->impl_->rt, f, &tb_result_sample_response,
                              (void **)result, err);
}

int tb_sampling_client_compute_logprobs(tb_sampling_client_t *samp,
                                        const tb_model_input_t *prompt, tb_future_t **out) {
  tb_sample_params_t p;
  tb_sample_params_default(&p);
  p.max_tokens = 1;
  return sample_common(samp, S_LOGPROBS, prompt, 1, &p, 1, 0, out, NULL);
}

int tb_sampling_client_compute_logprobs_sync(tb_sampling_client_t *samp,
                                             const tb_model_input_t *prompt,
                                             tb_logprobs_t **result, tb_error_t *err) {
  if (tb__client_check_nested(samp ? samp->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_sample_params_t p;
  tb_sample_params_default(&p);
  p.max_tokens = 1;
  tb_future_t *f;
  int rc = sample_common(samp, S_LOGPROBS, prompt, 1, &p, 1, 0, &f, err);
  if (rc != 0)
    return rc;
  return tb__client_wait_take(samp->impl_->rt, f, &tb_result_logprobs, (void **)result, err);
}

int tb_sampling_client_get_base_model(tb_sampling_client_t *samp, tb_future_t **out) {
  sc_t *s = tb__sampling_usable(samp);
  if (s == NULL || out == NULL)
    return TB_EINVAL;
  if (s->closing)
    return TB_ECLOSING;
  return submit_new(s, S_BASE_MODEL, NULL, 0, out);
}

int tb_sampling_client_get_base_model_sync(tb_sampling_client_t *samp, char **base_model,
                                           tb_error_t *err) {
  if (tb__client_check_nested(samp ? samp->service : NULL, err) != 0)
    return TB_ENESTED;
  tb_future_t *f;
  int rc = tb_sampling_client_get_base_model(samp, &f);
  if (rc != 0)
    return tb__client_refused(err, rc, "get_base_model");
  return tb__client_wait_take(samp->impl_->rt, f, &tb_result_string, (void **)base_model, err);
}

void tb_sampling_client_set_max_in_flight(tb_sampling_client_t *samp, size_t n) {
  sc_t *s = tb__sampling_usable(samp);
  if (s == NULL || n < 1)
    return;
  s->max_in_flight = n;
  tb__sampling_pump(s);
}

/* ------------------------------------------------------------ close */

static void on_close_alarm(tb__alarm_t *a) {
  sc_t *s = a->data;
  tb_sampling_client_t *samp = s->pub;
  tb_sampling_client_close_cb cb = samp->close_cb_;
  free(s->session_id);
  free(s->model_path);
  free(s->base_model);
  tb_error_clear(&s->create_err);
  free(s);
  samp->sampling_session_id = NULL;
  samp->model_path = NULL;
  samp->base_model = NULL;
  samp->impl_ = NULL;
  if (cb != NULL) {
    tb__loop_frame_t frame;
    tb__loop_enter(&frame, samp->loop);
    cb(samp);
    tb__loop_leave(&frame);
  }
}

void tb__sampling_check_closed(sc_t *s) {
  if (s->closing != 1 || s->n_live != 0 || s->create_f != NULL || s->session_f != NULL ||
      s->create_op_f != NULL || s->state == 0)
    return;
  s->closing = 2;
  tb__alarm_stop(s->rt, &s->backoff_alarm);
  tb__alarm_init(&s->close_alarm, on_close_alarm, s);
  if (tb__alarm_start(s->rt, &s->close_alarm, 0) != 0)
    on_close_alarm(&s->close_alarm);
}

void tb_sampling_client_close(tb_sampling_client_t *samp, tb_sampling_client_close_cb close_cb) {
  sc_t *s = tb__sampling_usable(samp);
  if (s == NULL || s->closing)
    return;
  s->closing = 1;
  samp->close_cb_ = close_cb;
  /* A client whose session comes from a training client's request closes
   * once that request has answered (tb__sampling_client_ready). */
  if (s->create_f != NULL)
    tb_future_cancel(s->create_f);
  /* Every sample fails: queued ones and retries later, those on the wire
   * once their request is cancelled. */
  for (sop_t *op = s->live; op != NULL; op = op->live_next) {
    if (op->cancelled)
      continue;
    op->cancelled = 1;
    if (op->queued) {
      unqueue(op);
      sop_fail_later(op);
    } else if (op->inner != NULL) {
      tb_future_cancel(op->inner);
    } else if (tb__alarm_armed(&op->alarm) && op->alarm.cb == on_retry_alarm) {
      tb__alarm_stop(s->rt, &op->alarm);
      sop_fail_later(op);
    }
  }
  tb__sampling_check_closed(s);
}

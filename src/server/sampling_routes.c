/*
 * Sampling routes of the Tinker dialect: create_sampling_session (direct)
 * and asample (future of SampleResponse, JSON and protobuf).
 *
 * A sampling session samples either a base model or sampler weights
 * saved earlier (model_path).  For weights, the session gets its own
 * adapter, created and loaded from the checkpoint on the engine; asample
 * requests that arrive meanwhile wait in the session.  Sampling has no
 * order between requests (the SDK's sampling seq_id is only a counter).
 */
#include "server/training.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "server/routes.h"
#include "server/sched.h"
#include "wire/rest.h"
#include "wire/sample.h"
#include "wire/service.h"

static void sampler_free(tb__sampler_t *s) {
  tb__engine_job_cleanup(&s->job);
  free(s->id);
  free(s->model_path);
  free(s->dir);
  free(s->fail_message);
  free(s);
}

void tb__samplers_free(tb__training_t *tr) {
  while (tr->samplers != NULL) {
    tb__sampler_t *s = tr->samplers;
    tr->samplers = s->next;
    sampler_free(s);
  }
}

static void on_sampler_removed(tb__engine_job_t *job, int status) {
  tb__sampler_t *s = job->data;
  s->adapter = NULL;
  tb__engine_job_cleanup(job);
}

void tb__samplers_session_expired(tb__training_t *tr, const tb__session_t *sess) {
  for (tb__sampler_t *s = tr->samplers; s != NULL; s = s->next) {
    /* Loading ones are left to finish; their samples may still come. */
    if (s->owner != sess->owner || s->state != 1 || strncmp(s->id, sess->id, sess->id_len) != 0 ||
        s->id[sess->id_len] != ':')
      continue;
    s->state = -1;
    /* Its samples stop decoding: nobody is left to ask for them. */
    for (tb__top_t *op = tr->ops; op != NULL; op = op->anext)
      if (op->type == TB__OP_SAMPLE && op->sampler == s)
        tb__top_cancel(op, sess->closed ? "the sample was cancelled: its session was closed"
                                        : "the sample was cancelled: its session expired");
    s->fail_category = TB_CATEGORY_USER;
    s->fail_message = tb__asprintf("sampling_session_id: the session %s",
                                   sess->closed ? "was closed" : "expired");
    if (s->adapter != NULL) {
      memset(&s->job, 0, sizeof(s->job));
      s->job.data = s;
      if (tb__engine_remove_adapter(&s->job, s->adapter, on_sampler_removed) != 0)
        tb__engine_job_cleanup(&s->job);
    }
  }
}

static void start_sample(tb__top_t *op);

/* The checks of the tokens that had to wait for the base model's
 * vocabulary; a message, or NULL when they pass. */
static char *late_check(const tb__top_t *op) {
  const tb__model_config_t *mc = &op->base->cfg;
  if (op->prompt_len >= (size_t)mc->max_position_embeddings)
    return tb__asprintf("prompt: %zu tokens do not fit the context of %d", op->prompt_len,
                        mc->max_position_embeddings);
  for (size_t i = 0; i < op->prompt_len; i++)
    if (op->prompt[i] < 0 || op->prompt[i] >= mc->vocab_size)
      return tb__asprintf("prompt: token %d at position %zu is outside the vocabulary [0, %d)",
                          op->prompt[i], i, mc->vocab_size);
  for (size_t i = 0; i < op->sampling.num_stop_tokens; i++)
    if (op->sampling.stop_tokens[i] < 0 || op->sampling.stop_tokens[i] >= mc->vocab_size)
      return tb__asprintf("sampling_params.stop: token %d is outside the vocabulary",
                          op->sampling.stop_tokens[i]);
  return NULL;
}

static void samplers_base_settled(tb__training_t *tr);

void tb__samples_base_settled(tb__training_t *tr) {
  samplers_base_settled(tr);
  tb__top_t **p = &tr->base_waiting;
  while (*p != NULL) {
    tb__top_t *op = *p;
    if (op->base->state == 0 && !tr->closing) {
      p = &op->next;
      continue;
    }
    *p = op->next;
    op->next = NULL;
    char *why = NULL;
    if (tr->closing)
      tb__top_fail(op, TB_CATEGORY_SERVER, "the server is closing");
    else if (op->base->state < 0)
      tb__top_fail(op, TB_CATEGORY_USER, op->base->error ? op->base->error
                                                         : "the base model failed to load");
    else if (op->unchecked && (why = late_check(op)) != NULL)
      tb__top_fail(op, TB_CATEGORY_USER, why);
    else
      start_sample(op);
    free(why);
  }
}

void tb__samplers_fail_all(tb__training_t *tr, const char *message) {
  for (tb__sampler_t *s = tr->samplers; s != NULL; s = s->next)
    while (s->waiting != NULL) {
      tb__top_t *op = s->waiting;
      s->waiting = op->next;
      tb__top_fail(op, TB_CATEGORY_SERVER, message);
    }
}

/* ------------------------------------------------------------ asample */

static void on_sampled(tb__engine_job_t *job, int status) {
  tb__top_t *op = job->data;
  if (status != 0) {
    tb__top_fail_job(op, status);
    return;
  }
  if (op->encode != NULL) {
    /* The Tinkerbell dialect's result. */
    tb__top_resolve_json(op, op->encode(op));
    return;
  }
  const tb__sample_result_t *r = &job->sample;
  tb__wire_sample_response_t w = { 0 };
  w.n_sequences = r->num_seqs;
  w.sequences = tb__arena_calloc(&op->arena, r->num_seqs + 1, sizeof(*w.sequences));
  for (size_t i = 0; w.sequences != NULL && i < r->num_seqs; i++) {
    w.sequences[i].stop_reason = r->seqs[i].stop_reason == TB_STOP_STOP
                                     ? TB_WIRE_STOP_REASON_STOP
                                     : TB_WIRE_STOP_REASON_LENGTH;
    w.sequences[i].tokens = r->seqs[i].tokens;
    w.sequences[i].n_tokens = r->seqs[i].len;
    w.sequences[i].logprobs = r->seqs[i].logprobs;
  }
  w.prompt_logprobs = r->prompt_logprobs;
  w.n_prompt = r->prompt_logprobs ? r->prompt_len : 0;
  if (r->topk_ids != NULL) {
    w.topk_ids = r->topk_ids;
    w.topk_logprobs = r->topk_logprobs;
    w.topk_rows = r->prompt_len;
    w.topk_k = r->topk;
  }
  json_t *v = w.sequences ? tb__wire_sample_response_to_json(&w) : NULL;
  tb__buf_t pb = { 0 };
  int rc = v ? tb__wire_sample_response_to_proto(&w, &pb) : TB_ENOMEM;
  tb__top_resolve_encoded(op, v, &pb, rc, "cannot encode the samples");
}

static void start_sample(tb__top_t *op) {
  tb__sampler_t *s = op->sampler;
  tb__engine_adapter_t *a = s ? s->adapter : NULL;
  if (op->cancelled != NULL) {  /* while it waited for its base model */
    tb__top_fail(op, TB_CATEGORY_USER, op->cancelled);
    return;
  }
  op->job.on_capacity = tb__sched_on_capacity;
  int rc = tb__engine_sample(&op->job, op->base->model, a, op->prompt, op->prompt_len,
                             &op->sampling, on_sampled);
  if (rc != 0)
    tb__top_fail_job(op, rc);
}

void tb__sample_start(tb__top_t *op) {
  start_sample(op);
}

/* Runs what waits on a sampler whose adapter is settled. */
static void sampler_flush(tb__sampler_t *s) {
  while (s->waiting != NULL) {
    tb__top_t *op = s->waiting;
    s->waiting = op->next;
    op->next = NULL;
    if (s->state < 0)
      tb__top_fail(op, s->fail_category, s->fail_message ? s->fail_message
                                                         : "the sampler failed to load");
    else
      start_sample(op);
  }
}

static void sampler_failed(tb__sampler_t *s, int status) {
  s->state = -1;
  s->fail_category = s->job.error.category == TB_CATEGORY_USER ? TB_CATEGORY_USER
                                                               : TB_CATEGORY_SERVER;
  s->fail_message = tb__asprintf("model_path: %s", s->job.error.message
                                                       ? s->job.error.message
                                                       : tb_strerror(status));
  tb__engine_job_cleanup(&s->job);
  sampler_flush(s);
}

static void on_sampler_loaded(tb__engine_job_t *job, int status) {
  tb__sampler_t *s = job->data;
  if (status != 0) {
    sampler_failed(s, status);
    return;
  }
  tb__engine_job_cleanup(job);
  s->state = 1;
  sampler_flush(s);
}

static void on_sampler_created(tb__engine_job_t *job, int status) {
  tb__sampler_t *s = job->data;
  if (status != 0) {
    sampler_failed(s, status);
    return;
  }
  s->adapter = job->adapter;
  tb__engine_job_cleanup(job);
  memset(job, 0, sizeof(*job));
  job->data = s;
  int rc = tb__engine_load(job, s->adapter, s->dir, 0, on_sampler_loaded);
  if (rc != 0)
    sampler_failed(s, rc);
}

/* The sampling parameters of the wire for the engine; checks the prompt
 * against the vocabulary. */
static int to_sampling(tb__jctx_t *c, tb__training_t *tr, tb__arena_t *a, const tb__tbase_t *b,
                       const tb__wire_sample_request_t *r, tb__sampling_params_t *p,
                       int *unchecked, int *status) {
  /* The vocabulary is known once the model is loaded, or from the start
   * for the generated base; otherwise the checks wait (late_check). */
  const tb__model_config_t *mc = b->state == 1 || b->builtin ? &b->cfg : NULL;
  int64_t vocab = mc ? mc->vocab_size : INT32_MAX;
  *unchecked = mc == NULL;
  tb__sampling_params_default(p);
  if (r->n_prompt == 0)
    return tb__jctx_fail_at(c, "prompt", "expected at least one token");
  if (mc != NULL && r->n_prompt >= (size_t)mc->max_position_embeddings)
    return tb__jctx_fail_at(c, "prompt", "%zu tokens do not fit the context of %d", r->n_prompt,
                            mc->max_position_embeddings);
  for (size_t i = 0; i < r->n_prompt; i++)
    if (r->prompt[i] < 0 || r->prompt[i] >= vocab)
      return tb__jctx_fail_at(c, "prompt",
                              "token %d at position %zu is outside the vocabulary [0, %lld)",
                              r->prompt[i], i, (long long)vocab);
  const tb__wire_sampling_params_t *wp = &r->params;
  size_t m = tb__jctx_push_key(c, "sampling_params");
  int rc = 0;
  tb__tctx_t x;
  tb__tctx_init(&x, tr, b);
  if (wp->n_stop_strings > 0 && tb__tctx_tokenizer(c, &x, "stop", status) == NULL) {
    rc = -1;  /* 422: the model has no tokenizer to match them with */
  } else if (wp->n_stop_strings > 0) {
    /* Matched on the bytes of the model's tokens as they are sampled. */
    tb_slice_t *ss = tb__arena_calloc(a, wp->n_stop_strings, sizeof(*ss));
    p->token_bytes = x.text->token_bytes;
    if (ss == NULL)
      rc = tb__jctx_fail_at(c, "stop", "out of memory");
    for (size_t i = 0; rc == 0 && i < wp->n_stop_strings; i++) {
      /* The decoder's copies, in the same arena. */
      ss[i] = (tb_slice_t){ wp->stop_strings[i], strlen(wp->stop_strings[i]) };
      if (ss[i].len == 0)
        rc = tb__jctx_fail_at(c, "stop", "an empty stop string");
    }
    p->stop_strings = ss;
    p->num_stop_strings = wp->n_stop_strings;
  }
  for (size_t i = 0; rc == 0 && i < wp->n_stop_tokens; i++)
    if (wp->stop_tokens[i] < 0 || wp->stop_tokens[i] >= vocab)
      rc = tb__jctx_fail_at(c, "stop", "token %d is outside the vocabulary", wp->stop_tokens[i]);
  if (rc == 0 && wp->max_tokens >= 0)
    p->max_tokens = (size_t)wp->max_tokens;
  if (rc == 0 && (wp->temperature < 0 || wp->top_p <= 0 || wp->top_p > 1))
    rc = tb__jctx_fail(c, "temperature must be >= 0 and top_p in (0, 1]");
  tb__jctx_pop(c, m);
  if (rc != 0)
    return rc;
  p->temperature = (float)wp->temperature;
  p->top_k = wp->top_k < 0 ? -1 : (int)(wp->top_k > INT32_MAX ? INT32_MAX : wp->top_k);
  p->top_p = (float)wp->top_p;
  p->seed = wp->has_seed ? wp->seed : uv_hrtime();
  p->stop_tokens = wp->stop_tokens;
  p->num_stop_tokens = wp->n_stop_tokens;
  if (r->num_samples < 1 || r->num_samples > 128)
    return tb__jctx_fail_at(c, "num_samples", "expected 1 to 128");
  p->num_samples = (size_t)r->num_samples;
  p->prompt_logprobs = r->prompt_logprobs || r->topk_prompt_logprobs > 0;
  if (r->topk_prompt_logprobs < 0 || r->topk_prompt_logprobs > vocab)
    return tb__jctx_fail_at(c, "topk_prompt_logprobs", "expected 0 to %lld", (long long)vocab);
  p->topk_prompt_logprobs = (size_t)r->topk_prompt_logprobs;
  return 0;
}

tb__sampler_t *tb__sampler_find(tb__training_t *tr, const tb__user_t *u, const char *id) {
  for (tb__sampler_t *s = tr->samplers; s != NULL; s = s->next)
    if (s->owner == u && strcmp(s->id, id) == 0)
      return s;
  return NULL;
}

/* The asample request (into the op's arena) and what it samples: a
 * sampling session or a base model, whose text stop strings need. */
int tb__route_asample_prepare(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  tb__asample_in_t *in = call->in;
  tb__top_t *op = call->op;
  tb__wire_sample_request_t *r = &in->r;
  tb__jctx_t *c = &call->c;
  int rc = tb__json_parse(req->body, &call->doc, &call->err);
  rc = rc < 0 ? rc : tb__wire_sample_request_from_json(c, &op->arena, call->doc, r);
  if (rc >= 0 && r->sampling_session_id != NULL) {
    in->s = tb__sampler_find(tr, tb__sreq(req)->user, r->sampling_session_id);
    if (tb__session_gone(req, (tb_slice_t){ r->sampling_session_id,
                                            strlen(r->sampling_session_id) }))
      return -1;
    if (in->s == NULL) {
      tb__server_respond_error(req, 404, "sampling_session_id: unknown sampling session");
      return -1;
    }
    op->base = in->s->base;
  } else if (rc >= 0 && r->base_model != NULL) {
    op->base = tb__tbase_find(tr, (tb_slice_t){ r->base_model, strlen(r->base_model) });
    if (op->base == NULL)
      rc = tb__jctx_fail_at(c, "base_model", "unknown model \"%s\"", r->base_model);
  } else if (rc >= 0) {
    rc = tb__jctx_fail_at(c, "sampling_session_id", "required (or base_model)");
  }
  if (rc < 0)
    return rc;
  if (op->base->state < 0) {
    tb__server_respond_error(req, 422, "base_model: %s", op->base->error ? op->base->error
                                                                           : "failed to load");
    return -1;
  }
  /* Stop strings need the model's tokenizer, which may be loading. */
  if (r->params.n_stop_strings > 0 && tb__mtext_wait(req, op->base, tb__route_generic))
    return 1;
  return 0;
}

/* The sampling parameters, checked against the model. */
int tb__route_asample_decode(tb__route_call_t *call) {
  tb__asample_in_t *in = call->in;
  tb__top_t *op = call->op;
  return to_sampling(&call->c, op->tr, &op->arena, op->base, &in->r, &op->sampling,
                     &op->unchecked, &call->status);
}

int tb__route_asample(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  tb__asample_in_t *in = call->in;
  tb__sampler_t *s = in->s;
  tb__top_t *op = call->op;
  call->op = NULL;  /* taken */
  op->prompt = in->r.prompt;
  op->prompt_len = in->r.n_prompt;
  op->sampler = s;
  if (tb__top_accept(req, op) != 0)
    return 0;
  tb__respond_future(req, op->future->id, NULL);
  if (s != NULL && s->state == 0) {
    op->next = s->waiting;
    s->waiting = op;
    return 0;
  }
  if (op->base->state == 0) {
    op->next = tr->base_waiting;  /* started when the base model is loaded */
    tr->base_waiting = op;
    return 0;
  }
  if (s != NULL && s->state < 0) {
    tb__top_fail(op, s->fail_category, s->fail_message ? s->fail_message : "failed");
    return 0;
  }
  start_sample(op);
  return 0;
}

/* ------------------------------------------------------------ sessions */

static void sampler_create(tb__sampler_t *s) {
  int rc = tb__engine_create_adapter(&s->job, s->base->model, &s->lora, on_sampler_created);
  if (rc != 0)
    sampler_failed(s, rc);
}

static void on_sampler_info(tb__training_t *tr, void *data, int status,
                            const tb__lora_config_t *lora, const char *base_name,
                            const char *message) {
  tb__sampler_t *s = data;
  char why[256];
  if (status == 0 && base_name[0] != '\0' && strcmp(base_name, s->base->name) != 0) {
    snprintf(why, sizeof(why), "the checkpoint is of base model %s, not %s", base_name,
             s->base->name);
    message = why;
    status = TB_EINVAL;
  }
  if (tr->closing || status != 0) {
    s->state = -1;
    s->fail_category = tr->closing ? TB_CATEGORY_SERVER : TB_CATEGORY_USER;
    s->fail_message = tr->closing ? tb__asprintf("the server is closing")
                                  : tb__asprintf("model_path: %s", message);
    sampler_flush(s);
    return;
  }
  s->lora = *lora;
  sampler_create(s);
}

/* The samplers that waited for their base model: their adapters are made
 * now, or they fail with it. */
static void samplers_base_settled(tb__training_t *tr) {
  for (tb__sampler_t *s = tr->samplers; s != NULL; s = s->next) {
    if (s->await_base == 0 || (s->base->state == 0 && !tr->closing))
      continue;
    int known = s->await_base == 2;
    s->await_base = 0;
    if (tr->closing || s->base->state < 0) {
      s->state = -1;
      s->fail_category = tr->closing ? TB_CATEGORY_SERVER : TB_CATEGORY_USER;
      s->fail_message = tr->closing ? tb__asprintf("the server is closing")
                                    : tb__asprintf("%s", s->base->error ? s->base->error
                                                                        : "the base model "
                                                                          "failed to load");
      sampler_flush(s);
    } else if (known) {
      sampler_create(s);
    } else {
      int rc = tb__read_checkpoint_lora(tr, s->dir, on_sampler_info, s);
      if (rc != 0)
        sampler_failed(s, rc);
    }
  }
}

tb__sampler_t *tb__sampler_open(tb__training_t *tr, tb__user_t *owner, tb__session_t *sess,
                                tb__tbase_t *base, char *id, const tb_slice_t *path,
                                char *dir, const tb__lora_config_t *lora) {
  tb__sampler_t *s = calloc(1, sizeof(*s));
  if (s == NULL || (path && (s->model_path = tb__strndup(path->base, path->len)) == NULL)) {
    free(s);
    free(id);
    free(dir);
    return NULL;
  }
  s->tr = tr;
  s->base = base;
  s->id = id;
  s->owner = owner;
  s->dir = dir;
  if (lora != NULL)
    s->lora = *lora;
  s->job.data = s;
  s->state = 1;
  s->next = tr->samplers;
  tr->samplers = s;
  tb__session_add_sampler(sess, id);
  if (dir != NULL) {
    if (base->state == 0) {
      /* Its adapter is made once the base model is loaded. */
      s->state = 0;
      s->await_base = lora != NULL ? 2 : 1;
    } else if (base->state != 1) {
      s->state = -1;
      s->fail_category = TB_CATEGORY_SERVER;
      s->fail_message = tb__asprintf("the base model %s is not loaded", base->name);
    } else if (lora == NULL) {
      s->state = 0;
      int rc = tb__read_checkpoint_lora(tr, dir, on_sampler_info, s);
      if (rc != 0)
        sampler_failed(s, rc);
    } else {
      s->state = 0;
      sampler_create(s);
    }
  }
  return s;
}

int tb__route_create_sampling_session(tb__route_call_t *call) {
  tb__http_request_t *req = call->req;
  tb__training_t *tr = tb__training_of(req);
  tb__jctx_t *c = &call->c;
  const tb__wire_create_sampler_t *w = call->in;
  tb_slice_t sid = w->session_id, base = w->base_model, path = w->model_path;
  int64_t seq = w->seq_id;
  tb__tbase_t *b = NULL;
  int rc = 0;
  if (base.base != NULL)
    rc = tb__tbase_field(c, tr, base, 0, &b);
  if (rc < 0)
    return rc;
  tb__session_t *sess = tb__session_live(req, sid);
  if (sess == NULL)
    return 0;
  char *id = tb__asprintf("%s:sample:%lld", sess->id, (long long)seq);
  tb__sampler_t *s = id ? tb__sampler_find(tr, tb__sreq(req)->user, id) : NULL;
  if (s != NULL) {
    /* A retry of the same sampling_session_seq_id. */
    free(id);
    goto answer;
  }
  char *dir = NULL;
  tb__lora_config_t lora = { 0 };
  int known = 0;
  if (id != NULL && path.base != NULL) {
    dir = tb__checkpoint_dir(req, "model_path", path);
    if (dir == NULL) {
      free(id);
      return 0;
    }
    tb__tbase_t *live_base = NULL;
    known = tb__checkpoint_lora(tr, path, &lora, &live_base);
    if (b == NULL)  /* the base of the live model, else the default one */
      b = live_base ? live_base : &tr->bases[0];
  }
  s = id ? tb__sampler_open(tr, tb__sreq(req)->user, sess, b, id, path.base ? &path : NULL, dir,
                            known ? &lora : NULL)
        : NULL;
  if (s == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return 0;
  }
answer:;
  tb__server_respond_answer(req, tb__wire_sampler_created_to_json(
                                     &(tb__wire_sampler_created_t){ s->id }));
  return 0;
}

void tb__route_get_sampler(tb__http_request_t *req) {
  tb__training_t *tr = tb__training_of(req);
  const tb_slice_t *id = tb__http_request_param(req, "sampler_id");
  if (tb__session_gone(req, *id))
    return;
  char *cid = tb__strndup(id->base, id->len);
  tb__sampler_t *s = cid ? tb__sampler_find(tr, tb__sreq(req)->user, cid) : NULL;
  free(cid);
  if (s == NULL) {
    tb__server_respond_error(req, 404, "sampler %.*s: unknown sampling session",
                             (int)(id->len > 120 ? 120 : id->len), id->base);
    return;
  }
  tb__wire_sampler_info_t w = { s->id, s->base->name, s->model_path };
  tb__server_respond_answer(req, tb__wire_sampler_info_to_json(&w));
}

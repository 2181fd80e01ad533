/*
 * The decoder's loop side (see decode.h): opening and closing, sequences
 * and their admission into the pool, and the work items of a step.  The
 * planning of a step and the application of its results are in
 * decode_step.c.
 *
 * Ownership: the loop thread (or the synchronous decoder's thread) owns
 * every field here; while a step runs, its work items read the plan, the
 * pool's memory and the sequences' tables, and write the positions and
 * per-sample state the plan gave them (decode_step.c lists which).
 */
#include "engine/decode_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BLOCK_TOKENS 16
#define MAX_BLOCK_TOKENS 256
#define DEFAULT_PREFILL_ROWS 256
#define MIN_POOL_BYTES ((size_t)64 << 20)

static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

/* ------------------------------------------------------------ sizes */

size_t tb__dec_sample_blocks(size_t bs, size_t n, size_t mt) {
  if (mt < 2)
    return 0;  /* the only token drawn comes from the prompt's logits */
  return cdiv(n + mt - 1, bs) - cdiv(n, bs);
}

size_t tb__dec_sample_share(size_t bs, size_t n, size_t mt, size_t S,
                            size_t s) {
  int copies = S > 1 && s + 1 < S && mt >= 2 && n % bs != 0;
  return tb__dec_sample_blocks(bs, n, mt) + (copies ? 1 : 0);
}

size_t tb__dec_blocks_needed(size_t bs, size_t n,
                             const tb__sampling_params_t *p) {
  size_t S = p->num_samples, need = cdiv(n, bs);
  for (size_t s = 0; s < S; s++)
    need += tb__dec_sample_share(bs, n, p->max_tokens, S, s);
  return need;
}

size_t tb__dec_pool_bytes(const tb__weights_t *w, const tb__dec_opts_t *opts) {
  if (opts != NULL && opts->kv_bytes > 0)
    return opts->kv_bytes;
  size_t b = 2 * w->storage_floats * sizeof(float);
  return b > MIN_POOL_BYTES ? b : MIN_POOL_BYTES;
}

static size_t block_floats(const tb__dec_t *dec, size_t bs) {
  const tb__model_config_t *m = &dec->w->config;
  return 2 * (size_t)m->num_layers * bs * (size_t)m->num_kv_heads *
         (size_t)m->head_dim;
}

size_t tb__dec_room(const tb__dec_t *dec) {
  return tb__kv_pool_available(&dec->pool);
}

size_t tb__dec_running(const tb__dec_t *dec) {
  size_t n = 0;
  for (const tb__dec_seq_t *s = dec->run_head; s != NULL; s = s->run_next)
    n++;
  return n;
}

/* ------------------------------------------------------------ decoder */

static int setup(tb__dec_t *dec, uv_loop_t *loop, const tb__weights_t *w,
                 const tb__dec_opts_t *opts) {
  void *data = dec->data;
  memset(dec, 0, sizeof(*dec));
  dec->data = data;
  tb__dec_opts_t o = { 0 };
  if (opts != NULL)
    o = *opts;
  if (o.block_tokens == 0)
    o.block_tokens = DEFAULT_BLOCK_TOKENS;
  if (o.block_tokens > MAX_BLOCK_TOKENS || w == NULL ||
      (unsigned)o.weights > TB_DEC_WEIGHTS_BF16)
    return TB_EINVAL;
  if (o.work_items == 0)
    o.work_items = uv_available_parallelism();
  if (o.work_items < 1)
    o.work_items = 1;
  if (o.max_prefill_rows == 0)
    o.max_prefill_rows = DEFAULT_PREFILL_ROWS;
  if (o.max_decode_rows == 0)
    o.max_decode_rows = TB_DEC_DEFAULT_DECODE_ROWS;
  if (o.max_decode_rows > SIZE_MAX / TB_DEC_SAMPLE_ROW_COST)
    o.max_decode_rows = SIZE_MAX / TB_DEC_SAMPLE_ROW_COST;
  dec->opts = o;
  dec->loop = loop;
  dec->w = w;
  dec->items = loop ? o.work_items : 1;
  dec->max_prefill_rows = o.max_prefill_rows;
  dec->max_decode_rows = o.max_decode_rows;
  dec->step_budget = o.max_decode_rows * TB_DEC_SAMPLE_ROW_COST;
  dec->fwd.w = w;
  dec->fwd.dw = &dec->dw;
  dec->fwd.pool = &dec->pool;
  return 0;
}

/* The heavy part: the weights' view and the pool.  Off the loop. */
static int build(tb__dec_t *dec) {
  int rc = tb__dec_weights_init(&dec->dw, dec->w, dec->opts.weights);
  if (rc != 0)
    return rc;
  size_t bf = block_floats(dec, dec->opts.block_tokens);
  size_t n = tb__dec_pool_bytes(dec->w, &dec->opts) / (bf * sizeof(float));
  rc = n == 0 ? TB_EINVAL
              : tb__kv_pool_init(&dec->pool, dec->opts.block_tokens, bf, n,
                                 !dec->opts.no_prefix_cache);
  if (rc != 0)
    tb__dec_weights_free(&dec->dw);
  return rc;
}

static void teardown(tb__dec_t *dec) {
  tb__kv_pool_free(&dec->pool);
  tb__dec_weights_free(&dec->dw);
  tb__dec_fwd_free(&dec->fwd);
  free(dec->rows);
  free(dec->groups);
  free(dec->tasks);
  free(dec->step_seqs);
  free(dec->turns);
  dec->turns = NULL;
  dec->turns_cap = 0;
  dec->rows = NULL;
  dec->groups = NULL;
  dec->tasks = NULL;
  dec->step_seqs = NULL;
  dec->rows_cap = dec->groups_cap = dec->tasks_cap = dec->step_seqs_cap = 0;
}

int tb__dec_init_sync(tb__dec_t *dec, const tb__weights_t *w,
                      const tb__dec_opts_t *opts) {
  int rc = setup(dec, NULL, w, opts);
  if (rc == 0)
    rc = build(dec);
  if (rc == 0)
    dec->opened = 1;
  return rc;
}

void tb__dec_free_sync(tb__dec_t *dec) {
  while (dec->all != NULL)
    tb__dec_seq_free(dec->all);
  teardown(dec);
}

static void open_work(uv_work_t *req) {
  tb__dec_t *dec = (tb__dec_t *)((char *)req - offsetof(tb__dec_t, open_req));
  dec->open_status = build(dec);
}

static void maybe_close(tb__dec_t *dec);

static void open_after(uv_work_t *req, int status) {
  tb__dec_t *dec = (tb__dec_t *)((char *)req - offsetof(tb__dec_t, open_req));
  dec->pending--;
  int rc = status == UV_ECANCELED ? TB_ECANCELED : dec->open_status;
  if (rc == 0 && dec->closing)
    rc = TB_ECANCELED;
  dec->opened = rc == 0;
  if (dec->open_cb != NULL)
    dec->open_cb(dec, rc);
  maybe_close(dec);
}

int tb__dec_open(uv_loop_t *loop, tb__dec_t *dec, const tb__weights_t *w,
                 const tb__dec_opts_t *opts, tb__dec_cb cb) {
  if (loop == NULL)
    return TB_EINVAL;
  int rc = setup(dec, loop, w, opts);
  if (rc != 0)
    return rc;
  dec->open_cb = cb;
  dec->pending++;
  uv_queue_work(loop, &dec->open_req, open_work, open_after);
  return 0;
}

static void close_work(uv_work_t *req) {
  tb__dec_t *dec = (tb__dec_t *)((char *)req - offsetof(tb__dec_t, close_req));
  teardown(dec);  /* munmap of the pool and the weight copies */
}

static void close_after(uv_work_t *req, int status) {
  (void)status;
  tb__dec_t *dec = (tb__dec_t *)((char *)req - offsetof(tb__dec_t, close_req));
  if (dec->close_cb != NULL)
    dec->close_cb(dec);
}

static void maybe_close(tb__dec_t *dec) {
  if (!dec->closing || dec->close_queued || dec->stepping || dec->pending)
    return;
  dec->close_queued = 1;
  uv_queue_work(dec->loop, &dec->close_req, close_work, close_after);
}

int tb__dec_close(tb__dec_t *dec, void (*cb)(tb__dec_t *dec)) {
  if (dec->closing)
    return TB_ECLOSING;
  dec->closing = 1;
  dec->close_cb = cb;
  /* Sequences are cancelled and detached: their handles stay the
   * caller's, and freeing them later does not touch the decoder. */
  for (tb__dec_seq_t *s = dec->all, *next; s != NULL; s = next) {
    next = s->all_next;
    tb__dec_seq_cancel(s);
    if (!s->in_step)  /* the others go when the step ends */
      tb__dec_seq_detach(s);
  }
  maybe_close(dec);
  return 0;
}

void tb__dec_closing_step_done(tb__dec_t *dec) {
  if (!dec->closing)
    return;
  while (dec->all != NULL) {
    tb__dec_seq_cancel(dec->all);
    tb__dec_seq_detach(dec->all);
  }
  maybe_close(dec);
}

/* ------------------------------------------------------------ sequences */

static void all_unlink(tb__dec_seq_t *s) {
  tb__dec_t *dec = s->dec;
  if (s->all_prev)
    s->all_prev->all_next = s->all_next;
  else if (dec->all == s)
    dec->all = s->all_next;
  if (s->all_next)
    s->all_next->all_prev = s->all_prev;
  s->all_prev = s->all_next = NULL;
}

void tb__dec_run_unlink(tb__dec_seq_t *s) {
  tb__dec_t *dec = s->dec;
  if (!s->in_run)
    return;
  if (s->run_prev)
    s->run_prev->run_next = s->run_next;
  else
    dec->run_head = s->run_next;
  if (s->run_next)
    s->run_next->run_prev = s->run_prev;
  else
    dec->run_tail = s->run_prev;
  s->run_prev = s->run_next = NULL;
  s->in_run = 0;
}

static void run_link(tb__dec_seq_t *s) {
  tb__dec_t *dec = s->dec;
  s->run_prev = dec->run_tail;
  s->run_next = NULL;
  if (dec->run_tail)
    dec->run_tail->run_next = s;
  else
    dec->run_head = s;
  dec->run_tail = s;
  s->in_run = 1;
}

static void fin_unlink(tb__dec_seq_t *s) {
  tb__dec_t *dec = s->dec;
  tb__dec_seq_t *prev = NULL;
  for (tb__dec_seq_t *x = dec->fin_head; x != NULL; prev = x, x = x->fin_next)
    if (x == s) {
      if (prev)
        prev->fin_next = s->fin_next;
      else
        dec->fin_head = s->fin_next;
      if (dec->fin_tail == s)
        dec->fin_tail = prev;
      s->fin_next = NULL;
      return;
    }
}

void tb__dec_seq_detach(tb__dec_seq_t *s) {
  if (s->dec == NULL)
    return;
  fin_unlink(s);
  tb__dec_run_unlink(s);
  all_unlink(s);
  s->dec = NULL;
}

static void seq_destroy(tb__dec_seq_t *s) {
  for (size_t i = 0; s->samples && i < s->S; i++) {
    free(s->samples[i].table);
    tb__buf_free(&s->samples[i].text);
  }
  free(s->samples);
  free(s->prompt);
  free(s->stop_tokens);
  free(s->stop_strings);
  free(s->stop_bytes);
  tb__sample_result_free(&s->result);
  tb_error_clear(&s->error);
  free(s);
}

static int user_error(tb_error_t *err, int code, const char *msg) {
  return tb_error_set(err, code, TB_CATEGORY_USER, "%s", msg);
}

/* Copies the stop tokens and strings so the request may go. */
static int copy_stops(tb__dec_seq_t *s, const tb__sampling_params_t *p) {
  s->params = *p;
  if (p->num_stop_tokens > 0) {
    s->stop_tokens = malloc(p->num_stop_tokens * sizeof(int32_t));
    if (s->stop_tokens == NULL)
      return TB_ENOMEM;
    memcpy(s->stop_tokens, p->stop_tokens,
           p->num_stop_tokens * sizeof(int32_t));
    s->params.stop_tokens = s->stop_tokens;
  }
  if (p->num_stop_strings > 0) {
    size_t bytes = 0;
    for (size_t i = 0; i < p->num_stop_strings; i++)
      bytes += p->stop_strings[i].len;
    s->stop_strings = malloc(p->num_stop_strings * sizeof(tb_slice_t));
    s->stop_bytes = malloc(bytes ? bytes : 1);
    if (s->stop_strings == NULL || s->stop_bytes == NULL)
      return TB_ENOMEM;
    char *at = s->stop_bytes;
    for (size_t i = 0; i < p->num_stop_strings; i++) {
      memcpy(at, p->stop_strings[i].base, p->stop_strings[i].len);
      s->stop_strings[i] = (tb_slice_t){ at, p->stop_strings[i].len };
      at += p->stop_strings[i].len;
    }
    s->params.stop_strings = s->stop_strings;
  }
  return 0;
}

/* The result arrays, filled in place by the steps. */
static int alloc_result(tb__dec_seq_t *s, size_t V) {
  tb__sample_result_t *r = &s->result;
  const tb__sampling_params_t *p = &s->params;
  size_t n = s->n, cap = p->max_tokens ? p->max_tokens : 1;
  r->seqs = calloc(s->S, sizeof(*r->seqs));
  if (r->seqs == NULL)
    return TB_ENOMEM;
  r->num_seqs = s->S;
  r->prompt_len = n;
  for (size_t i = 0; i < s->S; i++) {
    r->seqs[i].tokens = malloc(cap * sizeof(int32_t));
    r->seqs[i].logprobs = malloc(cap * sizeof(float));
    if (!r->seqs[i].tokens || !r->seqs[i].logprobs)
      return TB_ENOMEM;
  }
  if (p->prompt_logprobs) {
    if (!(r->prompt_logprobs = malloc(n * sizeof(float))))
      return TB_ENOMEM;
    for (size_t i = 0; i < n; i++)
      r->prompt_logprobs[i] = NAN;
  }
  if (p->topk_prompt_logprobs > 0) {
    r->topk = p->topk_prompt_logprobs < V ? p->topk_prompt_logprobs : V;
    r->topk_ids = calloc(n * r->topk, sizeof(int32_t));
    r->topk_logprobs = malloc(n * r->topk * sizeof(float));
    if (!r->topk_ids || !r->topk_logprobs)
      return TB_ENOMEM;
    for (size_t i = 0; i < n * r->topk; i++)
      r->topk_logprobs[i] = TB_TOPK_EMPTY_LOGPROB;
  }
  return 0;
}

int tb__dec_seq_new(tb__dec_t *dec, const tb__dec_adapter_t *adapter,
                    const int32_t *prompt, size_t n,
                    const tb__sampling_params_t *p, tb__dec_seq_t **out,
                    tb_error_t *err) {
  *out = NULL;
  const tb__model_config_t *m = &dec->w->config;
  if (dec->closing || !dec->opened)
    return tb_error_set(err, TB_ECLOSING, TB_CATEGORY_CANCELLED,
                        "the decoder is %s",
                        dec->closing ? "closing" : "not open");
  if (prompt == NULL || n == 0 || p == NULL)
    return user_error(err, TB_EINVAL, "prompt: at least one token is needed");
  for (size_t i = 0; i < n; i++)
    if (prompt[i] < 0 || prompt[i] >= m->vocab_size)
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "prompt[%zu]: token %d is outside the vocabulary "
                          "[0, %d)", i, (int)prompt[i], m->vocab_size);
  if (n + p->max_tokens > (size_t)m->max_position_embeddings)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "prompt of %zu tokens plus max_tokens %zu exceeds "
                        "the model's context of %d", n, p->max_tokens,
                        m->max_position_embeddings);
  if (!tb__sampling_params_ok(p, m->vocab_size))
    return user_error(err, TB_EINVAL,
                      "sampling_params: invalid (num_samples >= 1, "
                      "temperature >= 0, top_p in (0, 1], stop strings need "
                      "token bytes)");
  size_t bs = dec->pool.block_tokens, need = tb__dec_blocks_needed(bs, n, p);
  if (need > dec->pool.num_blocks)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "the request needs up to %zu KV blocks of %zu "
                        "positions (a prompt of %zu tokens, %zu samples of "
                        "up to %zu tokens), more than the decoder's pool "
                        "of %zu blocks holds", need, bs, n, p->num_samples,
                        p->max_tokens, dec->pool.num_blocks);

  tb__dec_seq_t *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  s->dec = dec;
  s->adapter = adapter ? *adapter : (tb__dec_adapter_t){ NULL, { 0, 0 } };
  s->n = n;
  s->S = p->num_samples;
  s->want_prompt = p->prompt_logprobs || p->topk_prompt_logprobs > 0;
  s->prompt = malloc(n * sizeof(int32_t));
  s->samples = calloc(s->S, sizeof(*s->samples));
  int rc = s->prompt && s->samples ? copy_stops(s, p) : TB_ENOMEM;
  if (rc == 0)
    rc = alloc_result(s, (size_t)m->vocab_size);
  size_t cap = cdiv(n + p->max_tokens, bs) + 1;
  uint64_t seed_state = p->seed;
  for (size_t i = 0; rc == 0 && i < s->S; i++) {
    tb__dec_sample_t *smp = &s->samples[i];
    smp->table = malloc(cap * sizeof(int32_t));
    if (smp->table == NULL)
      rc = TB_ENOMEM;
    smp->cap = cap;
    tb__k_rng_seed(&smp->rng, tb__k_splitmix64(&seed_state));
  }
  if (rc != 0) {
    seq_destroy(s);
    return tb_error_set(err, rc, TB_CATEGORY_SERVER, "out of memory");
  }
  memcpy(s->prompt, prompt, n * sizeof(int32_t));
  s->all_next = dec->all;
  if (dec->all)
    dec->all->all_prev = s;
  dec->all = s;
  *out = s;
  return 0;
}

int tb__dec_seq_add(tb__dec_seq_t *s) {
  tb__dec_t *dec = s->dec;
  if (dec == NULL || dec->closing)
    return TB_ECLOSING;
  if (s->state == TB_DEC_PAUSED) {
    run_link(s);
    s->state = TB_DEC_RUNNING;
    return 0;
  }
  if (s->state != TB_DEC_NEW)
    return TB_EINVAL;
  tb__kv_pool_t *pool = &dec->pool;
  size_t bs = pool->block_tokens, S = s->S, mt = s->params.max_tokens;
  tb__dec_sample_t *s0 = &s->samples[0];
  /* At least one prompt token is computed, for the logits the first
   * tokens are drawn from; the prompt's log-probs need every row. */
  size_t nhit = 0;
  if (!s->want_prompt)
    nhit = tb__kv_pool_lookup(pool, s->adapter.key, s->prompt, s->n,
                              s0->table, (s->n - 1) / bs);
  size_t need = tb__dec_blocks_needed(bs, s->n, &s->params) - nhit;
  if (tb__kv_pool_admit(pool, s0->table, nhit, need) != 0)
    return TB_EBUSY;
  s0->nblocks = nhit;
  s->prefilled = s0->len = nhit * bs;
  s->prompt_hit = s->prefilled;
  s->reserve_left = need;
  s->prompt_left = cdiv(s->n, bs) - nhit;
  for (size_t i = 0; i < S; i++)
    s->samples[i].share_left = tb__dec_sample_share(bs, s->n, mt, S, i);
  run_link(s);
  s->state = TB_DEC_RUNNING;
  return 0;
}

void tb__dec_seq_remove(tb__dec_seq_t *s) {
  if (s->dec == NULL || s->state != TB_DEC_RUNNING)
    return;
  tb__dec_run_unlink(s);
  s->state = TB_DEC_PAUSED;
}

void tb__dec_release(tb__dec_seq_t *s) {
  tb__kv_pool_t *pool = &s->dec->pool;
  for (size_t i = 0; i < s->S; i++) {
    tb__dec_sample_t *smp = &s->samples[i];
    for (size_t b = 0; b < smp->nblocks; b++)
      tb__kv_pool_unref(pool, smp->table[b]);
    smp->nblocks = 0;
    smp->live = 0;
    smp->share_left = 0;
  }
  tb__kv_pool_unreserve(pool, s->reserve_left);
  s->reserve_left = s->prompt_left = 0;
}

void tb__dec_seq_cancel(tb__dec_seq_t *s) {
  if (s->dec == NULL)
    return;
  tb__dec_state_t st = s->state;
  if (st == TB_DEC_DONE || st == TB_DEC_FAILED || st == TB_DEC_CANCELLED)
    return;
  tb__dec_run_unlink(s);
  s->state = TB_DEC_CANCELLED;
  /* Blocks a running step writes are released when it ends. */
  if (!s->in_step)
    tb__dec_release(s);
}

void tb__dec_seq_free(tb__dec_seq_t *s) {
  if (s == NULL)
    return;
  if (s->dec != NULL) {
    tb__dec_seq_cancel(s);
    if (s->in_step) {
      s->free_pending = 1;  /* tb__dec_step_done frees it */
      return;
    }
    tb__dec_seq_detach(s);
  }
  seq_destroy(s);
}

void tb__dec_seq_take(tb__dec_seq_t *s, tb__sample_result_t *out) {
  *out = s->result;
  memset(&s->result, 0, sizeof(s->result));
}

tb__dec_seq_t *tb__dec_next_finished(tb__dec_t *dec) {
  tb__dec_seq_t *s = dec->fin_head;
  if (s == NULL)
    return NULL;
  dec->fin_head = s->fin_next;
  if (dec->fin_head == NULL)
    dec->fin_tail = NULL;
  s->fin_next = NULL;
  return s;
}

void tb__dec_push_finished(tb__dec_seq_t *s) {
  tb__dec_t *dec = s->dec;
  s->fin_next = NULL;
  if (dec->fin_tail)
    dec->fin_tail->fin_next = s;
  else
    dec->fin_head = s;
  dec->fin_tail = s;
}

void tb__dec_seq_destroy_pending(tb__dec_seq_t *s) {
  tb__dec_seq_detach(s);
  seq_destroy(s);
}

/* ------------------------------------------------------------ steps */

struct tb__dec_step_s {
  tb__dec_t *dec;
  tb__coop_t *coop;
  size_t outstanding;
  int completed;
  struct step_item {
    uv_work_t req;
    tb__dec_step_t *step;
    size_t index;
    int returned;
  } items[];
};

static void item_work(uv_work_t *req) {
  struct step_item *it = (struct step_item *)req;
  tb__coop_run(it->step->coop, it->index);
}

static void item_after(uv_work_t *req, int status) {
  struct step_item *it = (struct step_item *)req;
  tb__dec_step_t *st = it->step;
  tb__dec_t *dec = st->dec;
  it->returned = 1;
  st->outstanding--;
  dec->pending--;
  if (!st->completed && status != UV_ECANCELED &&
      tb__coop_finished(st->coop)) {
    /* Any item that returns has seen the whole step done (coop.h rule
     * 5).  The items that never got a thread are not needed. */
    st->completed = 1;
    for (size_t i = 0; i < dec->items; i++)
      if (!st->items[i].returned)
        uv_cancel((uv_req_t *)&st->items[i].req);
    dec->step = NULL;
    tb__dec_step_done(dec);
    tb__dec_cb cb = dec->step_cb;
    dec->step_cb = NULL;
    if (cb != NULL)
      cb(dec, dec->closing ? TB_ECANCELED : 0);
    tb__dec_closing_step_done(dec);
  }
  if (st->outstanding == 0) {
    tb__coop_free(st->coop);
    free(st);
    maybe_close(dec);
  }
}

int tb__dec_step(tb__dec_t *dec, tb__dec_cb cb) {
  if (dec->loop == NULL || !dec->opened)
    return TB_EINVAL;
  if (dec->closing)
    return TB_ECLOSING;
  if (dec->stepping)
    return TB_EBUSY;
  if (dec->run_head == NULL)
    return TB_EINVAL;
  tb__dec_step_t *st = calloc(1, sizeof(*st) + dec->items * sizeof(st->items[0]));
  if (st == NULL)
    return TB_ENOMEM;
  int rc = tb__dec_plan(dec, &st->coop);
  if (rc != 0) {
    free(st);
    return rc;
  }
  st->dec = dec;
  dec->stepping = 1;
  dec->step = st;
  dec->step_cb = cb;
  st->outstanding = dec->items;
  for (size_t i = 0; i < dec->items; i++) {
    st->items[i].step = st;
    st->items[i].index = i;
    dec->pending++;
    uv_queue_work(dec->loop, &st->items[i].req, item_work, item_after);
  }
  return 0;
}

int tb__dec_step_sync(tb__dec_t *dec) {
  if (dec->loop != NULL || !dec->opened)
    return TB_EINVAL;
  if (dec->run_head == NULL)
    return TB_EINVAL;
  tb__coop_t *c;
  int rc = tb__dec_plan(dec, &c);
  if (rc != 0)
    return rc;
  dec->stepping = 1;
  tb__coop_run(c, 0);
  tb__coop_free(c);
  tb__dec_step_done(dec);
  return 0;
}

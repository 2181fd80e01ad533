/*
 * How a job of the engine becomes work items (see engine.h): a batch of
 * forward or forward_backward split by datums into shards of about equal
 * tokens (and, with a backward pass over several shards, as many items
 * that then add their gradients, each over one piece of the adapter's
 * flat buffers), and an optimizer step split into pieces of the flat
 * buffers.  The scheduling of the items is engine.c's.
 *
 * Everything in this file runs on the loop thread.
 */
#include "engine/engine_internal.h"

#include <stdlib.h>
#include <string.h>

/* Splits the batch into contiguous datum ranges of about equal token
 * counts: at most engine->shards, none smaller than min_shard_tokens
 * (unless there is only one), never more than the datums with tokens. */
static size_t plan_shards(const tb__engine_t *e, const tb__batch_t *b,
                          size_t *cuts) {
  size_t total = 0, nonempty = 0;
  for (size_t i = 0; i < b->num_data; i++) {
    total += b->data[i].n;
    nonempty += b->data[i].n > 0;
  }
  size_t S = e->shards;
  if (S > nonempty)
    S = nonempty;
  if (S > total / e->min_shard_tokens)
    S = total / e->min_shard_tokens;
  if (S < 1)
    S = 1;
  size_t s = 0, acc = 0;
  cuts[0] = 0;
  for (size_t i = 0; i < b->num_data; i++) {
    acc += b->data[i].n;
    if (s + 1 < S && i + 1 < b->num_data && acc * S >= (s + 1) * total)
      cuts[++s] = i + 1;
  }
  cuts[s + 1] = b->num_data;
  return s + 1;
}

/* Gives items[first .. first+n-1] equal pieces of the adapter's flat
 * buffers, in order, cut at multiples of 16 floats (a cache line). */
static void split_params(tb__engine_job_t *job, size_t first, size_t n) {
  size_t np = job->target->lora.num_params, p = 0;
  for (size_t i = 0; i < n; i++) {
    size_t end = i + 1 == n ? np : (np * (i + 1) / n) & ~(size_t)15;
    if (end < p)
      end = p;
    job->items[first + i].p0 = p;
    job->items[first + i].p1 = end;
    p = end;
  }
}

/* Pieces for the optimizer: one per engine thread, but none under 64K
 * floats, where a second item would cost more than it saves. */
static size_t param_pieces(const tb__engine_t *e, size_t np) {
  size_t n = np / 65536;
  if (n > e->shards)
    n = e->shards;
  return n < 1 ? 1 : n;
}

int tb__engine_start_batch(tb__engine_job_t *job) {
  tb__engine_t *e = job->engine;
  const tb__batch_t *b = &job->batch;
  size_t *cuts = malloc((e->shards + 1) * sizeof(size_t));
  if (cuts == NULL)
    return tb_error_set(&job->error, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "out of memory");
  size_t S = plan_shards(e, b, cuts);
  /* With several shards and a backward pass, as many items then sum the
   * shards' gradients, each over its piece of the buffers. */
  size_t sums = job->type == TB_ENGINE_FORWARD_BACKWARD && S > 1 ? S : 0;
  int rc = tb__engine_items_alloc(job, S + sums, tb__engine_work_shard, 1);
  if (rc != 0) {
    free(cuts);
    return rc;
  }
  job->num_shards = S;
  job->items_left = S;
  size_t out = 0, d = 0;
  for (size_t s = 0; s < S; s++) {
    tb__engine_shard_t *it = &job->items[s];
    it->d0 = cuts[s];
    it->d1 = cuts[s + 1];
    for (; d < it->d0; d++)
      out += b->data[d].n * (b->data[d].k ? b->data[d].k : 1);
    it->out0 = out;
  }
  free(cuts);
  if (sums > 0) {
    tb__engine_adapter_t *a = job->target;
    size_t np = a->lora.num_params;
    if (a->shard_slots < S) {
      /* Untouched pages cost nothing until a shard writes them. */
      free(a->shard_grads);
      a->shard_slots = 0;
      a->shard_grads = malloc(S * np * sizeof(float));
      if (a->shard_grads == NULL) {
        tb__engine_release_items(job);
        return tb_error_set(&job->error, TB_ENOMEM, TB_CATEGORY_SERVER,
                            "out of memory");
      }
      a->shard_slots = S;
    }
    for (size_t s = 0; s < S; s++) {
      job->items[s].grads = a->shard_grads + s * np;
      job->items[S + s].work = tb__engine_work_sum;
      job->items[S + s].needs_ws = 0;
    }
    split_params(job, S, sums);
  }
  for (size_t s = 0; s < S; s++)
    tb__engine_item_submit(e, &job->items[s]);
  return 0;
}

/* The optimizer's first round: each item's piece of the squared norm. */
int tb__engine_start_optim(tb__engine_job_t *job) {
  size_t n = param_pieces(job->engine, job->target->lora.num_params);
  int rc = tb__engine_items_alloc(job, n, tb__engine_work_optim_norm, 0);
  if (rc != 0)
    return rc;
  split_params(job, 0, n);
  for (size_t i = 0; i < n; i++)
    tb__engine_item_submit(job->engine, &job->items[i]);
  return 0;
}


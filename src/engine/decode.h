/*
 * A model's decoder: sequences of many requests and adapters sampled
 * together, one decode step at a time, over a bounded pool of KV blocks.
 * This is the engine API a scheduler drives.
 *
 * Objects:
 *  - tb__dec_t, a handle the caller owns, one per model: the KV pool
 *    (kv_pool.h), the decoding view of the weights (dec_weights.h) and the
 *    set of running sequences.  tb__dec_open / tb__dec_close (libuv style;
 *    its memory may be released only after the close callback), or
 *    tb__dec_init_sync / tb__dec_free_sync for a decoder used on one
 *    thread without a loop (tb__sample, tests, benchmarks).
 *  - tb__dec_seq_t, a sequence: one prompt with its sampling parameters and
 *    adapter, and its num_samples samples, whose result is the sampler's
 *    tb__sample_result_t.  Created and freed by the caller.
 *
 * The life of a sequence:
 *   tb__dec_seq_new      checks the request (tokens, parameters, context,
 *                        whether its worst case fits the pool at all) and
 *                        copies what it needs; nothing is reserved yet.
 *   tb__dec_seq_add      admits it into the running batch: looks its
 *                        prompt up in the prefix cache and reserves the
 *                        blocks its worst case needs (prompt, plus
 *                        num_samples * max_tokens positions).  TB_EBUSY
 *                        means no room now: nothing was taken, and the
 *                        caller tries again later (after a sequence ends
 *                        or is cancelled; tb__dec_room tells how much is
 *                        free).  A scheduler shows that as paused_capacity.
 *                        An admitted sequence never waits for memory again.
 *   each step            a prefilling sequence runs its next chunk of
 *                        up to TB_DEC_PREFILL_CHUNK prompt tokens (within
 *                        the step's budget of prompt rows, oldest first); a
 *                        decoding one feeds one token per live sample that
 *                        has its turn (see "Rows per step" below).
 *   tb__dec_seq_remove   takes it out of the running batch from the next
 *                        step on, keeping its blocks and reservation;
 *                        tb__dec_seq_add puts it back (no new admission).
 *   finished             when every sample has stopped, or the sequence
 *                        failed (TB_ENONFINITE: the model's logits for it
 *                        held NaN or an infinity; the other sequences of
 *                        the step are not affected), it leaves the batch,
 *                        its blocks are released and it is queued for
 *                        tb__dec_next_finished.
 *   tb__dec_seq_cancel   ends it at once: its blocks and reservation go
 *                        back to the pool now, or at the end of the step
 *                        that is using them.  It is not reported finished.
 *   tb__dec_seq_free     cancels it if needed and frees it (after the
 *                        running step, if it is in one).
 *
 * Steps: tb__dec_step plans one step on the loop (which rows, blocks for
 * the positions they write, copies of shared partly filled blocks) and
 * queues the decoder's work items (coop.h); the callback runs on the loop
 * once the step is done and its results are applied: sampled tokens
 * appended, finished sequences queued.  Sequences may be created, added,
 * removed, cancelled and freed while a step runs; additions and removals
 * take effect at the next step.  One step at a time.
 *
 * Rows per step: a step's rows cost at most step_budget prompt rows, a
 * sample's row counting TB_DEC_SAMPLE_ROW_COST of them: at most
 * max_decode_rows sample rows, or twice as many prompt rows.  So a step
 * never lasts much longer than one prefill chunk, and a new prompt's first
 * token waits for at most the step under way plus its own prefill steps.
 * Prompt rows come first (prefill first: the oldest prefilling sequence,
 * then the next, each a chunk of at most TB_DEC_PREFILL_CHUNK and together
 * within max_prefill_rows and the budget); sample rows fill what is left,
 * least recently run first (ties in the running batch's order), one row
 * per live sample: with R live samples and room for r of them, each runs
 * once in every ceil(R / r) steps, a fair rotation whatever the samples'
 * ages.  Prompts never starve decoding: after a step in which samples
 * waited and none ran, the next step gives prompts at most half the
 * budget.  The bound costs throughput under heavy load: the products run
 * faster over more rows (bench_sample at the SmolLM2-135M shape: 333
 * tokens/s in steps of 64 sample rows, 641 in steps of 256), which is the
 * price of a short wait for a new request's first token.
 *
 * Results: every sample draws from its own PRNG stream, seeded from
 * (seed, sample index) by splitmix64 as the sampler always did, and every
 * row is computed by row-independent kernels (decode_fwd.h), so a
 * sequence's tokens and log-probs are the same bits alone or in any batch,
 * with any adapters beside it, joining at any step, and with or without
 * the prefix cache.
 *
 * Threads: everything here runs on the loop thread (or the one thread of
 * a synchronous decoder).  A sequence's adapter weights (lora) must not
 * change while it is in a running step; its key names the weights version
 * its cached prefix blocks and its packed copy (dec_lora.h) are filed
 * under, so a new version must come with a new key.
 *
 * Non-goals: fairness between requests beyond the turns of rows, and
 * with training (the engine's scheduler), streaming tokens, beam search
 * and speculative decoding.
 */
#ifndef TB_ENGINE_DECODE_H
#define TB_ENGINE_DECODE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "engine/coop.h"
#include "engine/dec_weights.h"
#include "engine/decode_fwd.h"
#include "engine/kv_pool.h"
#include "engine/sampler.h"
#include "kernels/kernels.h"
#include "tinkerbell/error.h"

/* Prompt tokens of a sequence per step while it prefills, at most. */
#define TB_DEC_PREFILL_CHUNK 64
/* What a sample's row costs a step, in prompt rows.  Beside the layers
 * that every row runs, a sample's row also runs the logits over the whole
 * vocabulary and a draw, and attends over its whole context: at the
 * SmolLM2-135M shape a step of 64 sample rows takes about twice as long as
 * one of 64 prompt rows (bench_sample: 333 against 655 rows/s). */
#define TB_DEC_SAMPLE_ROW_COST 2
/* Sample rows of one step, by default: their cost is one prefill chunk,
 * so that a step under way delays a new prompt by about as long as its
 * own prefill takes. */
#define TB_DEC_DEFAULT_DECODE_ROWS (TB_DEC_PREFILL_CHUNK / TB_DEC_SAMPLE_ROW_COST)

typedef struct tb__dec_s tb__dec_t;
typedef struct tb__dec_seq_s tb__dec_seq_t;
typedef struct tb__dec_step_s tb__dec_step_t;  /* private */

typedef void (*tb__dec_cb)(tb__dec_t *dec, int status);

typedef struct tb__dec_opts_s {
  /* The KV pool's bound in bytes; 0 means twice the model's float32
   * weights, at least 64 MiB. */
  size_t kv_bytes;
  size_t block_tokens;      /* positions per block; 0 means 16 */
  int no_prefix_cache;      /* non-zero: never share prompts across requests */
  size_t work_items;        /* per step; 0 means one per core */
  size_t max_prefill_rows;  /* prompt rows per step; 0 means 256 */
  size_t max_decode_rows;   /* sample rows per step, at most; a step's
                             * budget is what they cost, in prompt rows;
                             * 0 means TB_DEC_DEFAULT_DECODE_ROWS */
  tb__dec_weights_mode_t weights;
} tb__dec_opts_t;

/* An adapter as the decoder sees it: its LoRA state (NULL: the bare
 * model) and the key its prefix blocks are cached under. */
typedef struct tb__dec_adapter_s {
  const tb__lora_t *lora;
  tb__kv_key_t key;
} tb__dec_adapter_t;

typedef enum {
  TB_DEC_NEW = 0,     /* created, not admitted */
  TB_DEC_RUNNING,     /* admitted and in the running batch */
  TB_DEC_PAUSED,      /* admitted, removed from the batch */
  TB_DEC_DONE,        /* finished: result holds the samples */
  TB_DEC_FAILED,      /* finished: status and error say why */
  TB_DEC_CANCELLED
} tb__dec_state_t;

typedef struct tb__dec_sample_s tb__dec_sample_t;  /* private */

struct tb__dec_seq_s {
  /* public */
  void *data;
  /* read-only */
  tb__dec_t *dec;
  tb__dec_state_t state;
  int status;                  /* 0 or the failure */
  tb_error_t error;            /* its message (category user for
                                * TB_ENONFINITE) */
  tb__sample_result_t result;   /* DONE: take it with tb__dec_seq_take */
  size_t prompt_hit;           /* prompt positions found in the cache */
  /* private */
  tb__dec_adapter_t adapter;
  int32_t *prompt;
  size_t n;
  tb__sampling_params_t params;
  int32_t *stop_tokens;
  tb_slice_t *stop_strings;
  char *stop_bytes;
  int want_prompt;
  size_t prefilled;            /* prompt positions whose KV exist */
  size_t S;
  tb__dec_sample_t *samples;
  size_t reserve_left;         /* blocks still reserved for it */
  size_t prompt_left;          /* of them, for the prompt */
  size_t step_rows;            /* prompt rows in the running step */
  int step_status;
  int in_step, in_run, free_pending;
  tb__dec_seq_t *all_prev, *all_next;
  tb__dec_seq_t *run_prev, *run_next;
  tb__dec_seq_t *fin_next;
};

struct tb__dec_s {
  /* public */
  void *data;
  /* read-only */
  uv_loop_t *loop;             /* NULL for a synchronous decoder */
  const tb__weights_t *w;
  tb__kv_pool_t pool;
  tb__dec_weights_t dw;
  size_t items;                /* work items per step */
  size_t max_prefill_rows;
  size_t max_decode_rows;
  size_t step_budget;          /* max_decode_rows' cost, in prompt rows */
  size_t step_prompt_rows;     /* the rows of the last planned step */
  size_t step_decode_rows;
  int stepping;                /* a step is planned and not completed */
  uint64_t steps;              /* completed */
  /* private */
  tb__dec_opts_t opts;
  int closing, close_queued, opened;
  tb__dec_cb open_cb, step_cb;
  void (*close_cb)(tb__dec_t *dec);
  size_t pending;              /* our uv_work_t in the threadpool */
  uv_work_t open_req, close_req;
  int open_status;
  tb__dec_seq_t *all;
  tb__dec_seq_t *run_head, *run_tail;
  tb__dec_seq_t *fin_head, *fin_tail;
  tb__dec_step_t *step;         /* the running step */
  /* the plan of the running step */
  tb__dec_fwd_t fwd;
  tb__dec_row_t *rows;
  size_t rows_cap;
  tb__dec_group_t *groups;
  size_t groups_cap;
  struct tb__dec_task_s *tasks;
  size_t ntasks, tasks_cap;
  tb__dec_seq_t **step_seqs;
  size_t nstep_seqs, step_seqs_cap;
  struct tb__dec_turn_s *turns;  /* decode rows that want a turn */
  size_t turns_cap;
  int decode_starved;          /* the last step ran no decode row while
                                * some waited */
};

/* Opens a decoder of the model whose weights are w (they must outlive
 * it): the weights' decoding view is built and the pool mapped on the
 * threadpool, then cb(dec, status) runs on the loop.  An error return
 * means cb is never called.  TB_EINVAL for bad options. */
int tb__dec_open(uv_loop_t *loop, tb__dec_t *dec, const tb__weights_t *w,
                 const tb__dec_opts_t *opts, tb__dec_cb cb);
/* Stops the decoder: waits for a running step, cancels every sequence
 * (the caller still frees its handles), releases the pool and the weight
 * copies off the loop, then calls cb.  TB_ECLOSING when already closing. */
int tb__dec_close(tb__dec_t *dec, void (*cb)(tb__dec_t *dec));

/* The same without a loop: built on the calling thread, stepped with
 * tb__dec_step_sync, freed with tb__dec_free_sync (every sequence must be
 * freed first). */
int tb__dec_init_sync(tb__dec_t *dec, const tb__weights_t *w,
                      const tb__dec_opts_t *opts);
void tb__dec_free_sync(tb__dec_t *dec);

/* The pool size the options give for w: kv_bytes, or the default. */
size_t tb__dec_pool_bytes(const tb__weights_t *w, const tb__dec_opts_t *opts);
/* Blocks the pool could still promise to an admission. */
size_t tb__dec_room(const tb__dec_t *dec);
/* Blocks of block_tokens positions that a request of n prompt tokens
 * and these parameters reserves in the worst case, without prefix hits:
 * the prompt's, then for each sample the positions it writes
 * (max_tokens - 1: the last token drawn is never fed back) and, when the
 * samples share a partly filled last prompt block, a copy of it for all
 * but one. */
size_t tb__dec_blocks_needed(size_t block_tokens, size_t n,
                             const tb__sampling_params_t *p);

/* A new sequence.  prompt (n >= 1 tokens) and the stop tokens and strings
 * of p are copied; p->token_bytes must outlive the sequence, and so must
 * the adapter's LoRA state.  On error *out is NULL and err (may be NULL)
 * says why: TB_EINVAL (a token outside the vocabulary, invalid
 * parameters, a prompt plus max_tokens beyond the model's context, or a
 * worst case larger than the whole pool), TB_ECLOSING or TB_ENOMEM. */
int tb__dec_seq_new(tb__dec_t *dec, const tb__dec_adapter_t *adapter,
                    const int32_t *prompt, size_t n,
                    const tb__sampling_params_t *p, tb__dec_seq_t **out,
                    tb_error_t *err);
/* Admits a new sequence (TB_EBUSY: no room now, nothing changed) or puts
 * a paused one back.  TB_EINVAL in any other state. */
int tb__dec_seq_add(tb__dec_seq_t *s);
/* Pauses a running sequence from the next step on. */
void tb__dec_seq_remove(tb__dec_seq_t *s);
void tb__dec_seq_cancel(tb__dec_seq_t *s);
void tb__dec_seq_free(tb__dec_seq_t *s);
/* Moves a DONE sequence's result to *out (free it with
 * tb__sample_result_free). */
void tb__dec_seq_take(tb__dec_seq_t *s, tb__sample_result_t *out);

/* Sequences in the running batch. */
size_t tb__dec_running(const tb__dec_t *dec);
/* Runs one step over the running sequences; cb(dec, 0) on the loop when
 * it is done.  0, TB_EBUSY (a step is running), TB_EINVAL (no running
 * sequence, or a synchronous decoder), TB_ECLOSING or TB_ENOMEM (nothing
 * was started; the sequences are as they were). */
int tb__dec_step(tb__dec_t *dec, tb__dec_cb cb);
/* The same on the calling thread, with one work item. */
int tb__dec_step_sync(tb__dec_t *dec);
/* The next finished (DONE or FAILED) sequence, in the order they
 * finished, or NULL. */
tb__dec_seq_t *tb__dec_next_finished(tb__dec_t *dec);

#endif /* TB_ENGINE_DECODE_H */

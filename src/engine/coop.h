/*
 * One parallel task run by however many work items happen to run it: a
 * sequence of phases, each split into chunks, claimed one at a time by
 * whichever item is running.
 *
 * A decode step is hundreds of short phases (about ten per layer), too
 * many for a round trip through the loop each, and too short to give each
 * to a work item of its own.  The step queues k work items instead; each
 * runs tb__coop_run, which walks the phases: it claims chunks of the
 * current phase until none is left, then waits until every claimed chunk
 * of the phase is done, then moves on.  An item waits only for chunks that
 * running items have claimed, so one item can run the whole task alone
 * when the others never get a thread (the threadpool busy with training):
 * nothing waits for an item that has not started.  An item that starts
 * late walks the finished phases at the cost of two atomic loads each and
 * joins the current one, or returns at once when the task is done.
 *
 * Memory ordering:
 *  1. Before the items are queued, the owner writes the task's inputs and
 *     sets every counter to zero; handing the items to the threadpool
 *     (uv_queue_work, a mutex) publishes those writes.
 *  2. A chunk is claimed with a relaxed fetch_add on the phase's `claimed`
 *     counter: the claim orders nothing, it only gives the chunk to one
 *     item.
 *  3. After writing a chunk's results, the item adds one to the phase's
 *     `done` counter with release ordering.
 *  4. An item moves past a phase only after an acquire load of `done`
 *     reads the phase's chunk count.  Every increment of `done` is a
 *     read-modify-write, so they form one release sequence and that load
 *     synchronises with all of them: every result of the phase (and, by
 *     induction, of all earlier phases) is visible to the item before it
 *     claims a chunk of the next phase.  A late item reaches a phase the
 *     same way, through the acquire loads of every earlier phase.
 *  5. An item returns only once the last phase is done, so the loop's
 *     after-work callback of any item (libuv passes it through a mutex)
 *     sees the whole task's results.
 * Chunks of one phase must not write what another chunk of the same phase
 * reads or writes.
 *
 * Waiting spins with a pause instruction, then yields the processor: a
 * chunk lasts microseconds, but the item holding it may have lost its core
 * to another process.
 *
 * Non-goals: queueing the items (the decoder does that), cancellation
 * (a task runs to its end), and nesting.
 */
#ifndef TB_ENGINE_COOP_H
#define TB_ENGINE_COOP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tb__coop_s tb__coop_t;

/* Runs chunk `chunk` of phase `phase` on work item `item` (0 .. items-1,
 * for per-item scratch). */
typedef void (*tb__coop_chunk_fn)(void *ctx, size_t phase, size_t chunk,
                                 size_t item);

typedef struct tb__coop_phase_s {
  _Atomic uint32_t claimed;
  _Atomic uint32_t done;
  uint32_t chunks;
} tb__coop_phase_t;

struct tb__coop_s {
  tb__coop_chunk_fn fn;
  void *ctx;
  size_t num_phases;
  size_t items;
  _Atomic int finished;          /* an item walked past the last phase */
  /* chunks run by each item, for tests and measurements */
  _Atomic uint32_t *ran;
  tb__coop_phase_t phases[];
};

/* A task of num_phases phases for `items` items, every counter zero; the
 * caller then sets each phase's chunk count (phases[p].chunks) before the
 * items start.  NULL when out of memory.  A task is used once: its items
 * may still be walking it after it is done (a late item that returns at
 * once), so the owner frees it only when every item has returned, and
 * runs the next task in a new one. */
tb__coop_t *tb__coop_new(size_t num_phases, size_t items, tb__coop_chunk_fn fn,
                        void *ctx);
void tb__coop_free(tb__coop_t *c);

/* What work item `item` runs: see above.  Returns when the task is done. */
void tb__coop_run(tb__coop_t *c, size_t item);

/* 1 once every chunk of every phase is done (acquire). */
int tb__coop_finished(tb__coop_t *c);

#endif /* TB_ENGINE_COOP_H */

/*
 * Phases of chunks claimed by whichever work items run (see coop.h for
 * the scheme and its memory-ordering rules).
 */
#include "engine/coop.h"

#include <sched.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Pause instructions before each yield of the processor: about a
 * microsecond, the length of a short chunk. */
#define SPINS 64

tb__coop_t *tb__coop_new(size_t num_phases, size_t items, tb__coop_chunk_fn fn,
                        void *ctx) {
  tb__coop_t *c = calloc(1, sizeof(*c) + num_phases * sizeof(tb__coop_phase_t));
  if (c == NULL)
    return NULL;
  c->ran = calloc(items ? items : 1, sizeof(*c->ran));
  if (c->ran == NULL) {
    free(c);
    return NULL;
  }
  c->fn = fn;
  c->ctx = ctx;
  c->num_phases = num_phases;
  c->items = items;
  atomic_init(&c->finished, 0);
  for (size_t p = 0; p < num_phases; p++) {
    atomic_init(&c->phases[p].claimed, 0);
    atomic_init(&c->phases[p].done, 0);
  }
  for (size_t i = 0; i < items; i++)
    atomic_init(&c->ran[i], 0);
  return c;
}

void tb__coop_free(tb__coop_t *c) {
  if (c == NULL)
    return;
  free((void *)c->ran);
  free(c);
}

void tb__coop_run(tb__coop_t *c, size_t item) {
  uint32_t ran = 0;
  for (size_t p = 0; p < c->num_phases; p++) {
    tb__coop_phase_t *ph = &c->phases[p];
    const uint32_t n = ph->chunks;
    /* Rule 4: a finished phase costs one acquire load. */
    if (atomic_load_explicit(&ph->done, memory_order_acquire) == n)
      continue;
    for (;;) {
      uint32_t i = atomic_fetch_add_explicit(&ph->claimed, 1,
                                             memory_order_relaxed);
      if (i >= n)
        break;
      c->fn(c->ctx, p, i, item);
      ran++;
      atomic_fetch_add_explicit(&ph->done, 1, memory_order_release);
    }
    /* Every chunk is claimed: wait for the ones other items run. */
    for (unsigned spins = 0;
         atomic_load_explicit(&ph->done, memory_order_acquire) != n;) {
      if (++spins < SPINS) {
        cpu_relax();
      } else {
        spins = 0;
        sched_yield();
      }
    }
  }
  if (item < c->items)
    atomic_fetch_add_explicit(&c->ran[item], ran, memory_order_relaxed);
  /* Everything is done and visible to this item; the flag passes that
   * on (release) to whoever reads it (acquire). */
  atomic_store_explicit(&c->finished, 1, memory_order_release);
}

int tb__coop_finished(tb__coop_t *c) {
  return atomic_load_explicit(&c->finished, memory_order_acquire);
}

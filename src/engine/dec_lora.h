/*
 * The adapters as decoding reads them: each adapter's A and B matrices
 * packed once into the panels of tb__k_rowmm_packed_f32 (kernels.h), kept
 * from step to step under the adapter's key, and packed again only when
 * a step brings a key (an adapter or a weights version) not seen before.
 *
 * A step's LoRA products are thin (rank outputs, or rank inputs), and
 * the packed kernel makes each output one chain of multiply-adds whatever
 * the rows beside it, so packing is all that stands between the
 * adapter's own layout and the kernel; doing it per product call rewrote
 * the whole adapter every step.  The copy holds the adapter's values
 * exactly (float32, padded to whole panels): about the adapter's size
 * again per cached adapter.
 *
 * Lifetime: an entry is used by the steps whose groups name its LoRA
 * state and key; entries no step of the last TB__DEC_LORA_IDLE steps used
 * are freed at the next plan.  Packing runs in the step's first phase
 * (tb__dec_lora_pack per chunk, on the work items), the plan on the loop
 * only finds entries and maps their memory.
 *
 * Non-goals: adapters whose weights change under an unchanged key (the
 * decoder's contract, decode.h, forbids it) and the bare model (no
 * entry).
 */
#ifndef TB_ENGINE_DEC_LORA_H
#define TB_ENGINE_DEC_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kv_pool.h"
#include "engine/lora.h"

/* Steps an entry stays cached without being used. */
#define TB__DEC_LORA_IDLE 64

typedef struct tb__dec_lora_s {
  const tb__lora_t *lora;
  tb__kv_key_t key;
  float *buf;             /* the packed copies */
  size_t floats;
  size_t *a_pk, *b_pk;    /* per slot: offsets of packed A and B in buf */
  uint8_t *ready;         /* per slot: packed by a step that ran */
  uint64_t used;          /* the last step that used it */
} tb__dec_lora_t;

typedef struct tb__dec_lora_todo_s {
  tb__dec_lora_t *e;
  size_t slot;
} tb__dec_lora_todo_t;

typedef struct tb__dec_lora_cache_s {
  tb__dec_lora_t **e;
  size_t n, cap;
  uint64_t step;
  tb__dec_lora_todo_t *todo;  /* this step's packing, one per chunk */
  size_t ntodo, todo_cap;
} tb__dec_lora_cache_t;

/* Starts a step's plan: frees the entries idle too long. */
void tb__dec_lora_begin(tb__dec_lora_cache_t *c);
/* The entry of (lora, key) for this step, made (and its slots queued for
 * packing) when new.  0 or TB_ENOMEM. */
int tb__dec_lora_use(tb__dec_lora_cache_t *c, const tb__lora_t *lora,
                     tb__kv_key_t key, const tb__dec_lora_t **out);
/* Chunks of packing this step (0 when every entry used is packed). */
static inline size_t tb__dec_lora_chunks(const tb__dec_lora_cache_t *c) {
  return c->ntodo;
}
/* Packs chunk i: one slot's A and B of one entry. */
void tb__dec_lora_pack(tb__dec_lora_cache_t *c, size_t i);
/* Packed A (rank, in) and B (out, rank) of slot s. */
static inline const float *tb__dec_lora_a(const tb__dec_lora_t *e,
                                          const tb__lora_slot_t *s) {
  return e->buf + e->a_pk[s - e->lora->slots];
}
static inline const float *tb__dec_lora_b(const tb__dec_lora_t *e,
                                          const tb__lora_slot_t *s) {
  return e->buf + e->b_pk[s - e->lora->slots];
}
void tb__dec_lora_free(tb__dec_lora_cache_t *c);

#endif /* TB_ENGINE_DEC_LORA_H */

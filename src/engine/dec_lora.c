/*
 * The adapters' packed copies for decoding (see dec_lora.h).
 */
#include "engine/dec_lora.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "engine/bigmem.h"
#include "kernels/kernels.h"
#include "tinkerbell/error.h"

static void entry_free(tb__dec_lora_t *e) {
  if (e == NULL)
    return;
  tb__big_free(e->buf, e->floats * sizeof(float));
  free(e->a_pk);
  free(e->ready);
  free(e);
}


void tb__dec_lora_begin(tb__dec_lora_cache_t *c) {
  c->step++;
  c->ntodo = 0;
  size_t k = 0;
  for (size_t i = 0; i < c->n; i++) {
    if (c->e[i]->used + TB__DEC_LORA_IDLE < c->step)
      entry_free(c->e[i]);
    else
      c->e[k++] = c->e[i];
  }
  c->n = k;
}

/* A new entry: the offsets of every slot's packed A and B, the memory
 * mapped (its pages are first touched by the packing). */
static tb__dec_lora_t *entry_new(const tb__lora_t *lora, tb__kv_key_t key) {
  tb__dec_lora_t *e = calloc(1, sizeof(*e));
  if (e == NULL)
    return NULL;
  e->lora = lora;
  e->key = key;
  size_t ns = lora->num_slots, r = lora->rank, off = 0;
  e->a_pk = calloc(2 * ns, sizeof(size_t));
  e->ready = calloc(ns, 1);
  if (e->a_pk == NULL || e->ready == NULL) {
    entry_free(e);
    return NULL;
  }
  e->b_pk = e->a_pk + ns;
  for (size_t s = 0; s < ns; s++) {
    const tb__lora_slot_t *sl = &lora->slots[s];
    if (!sl->on)
      continue;
    e->a_pk[s] = off;
    off += tb__k_packed_elems(sl->in, r);
    e->b_pk[s] = off;
    off += tb__k_packed_elems(r, sl->out);
  }
  e->floats = off;
  e->buf = off ? tb__big_alloc(off * sizeof(float)) : NULL;
  if (off && e->buf == NULL) {
    entry_free(e);
    return NULL;
  }
  return e;
}

int tb__dec_lora_use(tb__dec_lora_cache_t *c, const tb__lora_t *lora,
                     tb__kv_key_t key, const tb__dec_lora_t **out) {
  *out = NULL;
  if (lora == NULL)
    return 0;
  tb__dec_lora_t *e = NULL;
  for (size_t i = 0; i < c->n && e == NULL; i++)
    if (c->e[i]->lora == lora && c->e[i]->key.adapter == key.adapter &&
        c->e[i]->key.version == key.version)
      e = c->e[i];
  if (e == NULL) {
    if (tb__array_grow((void **)&c->e, &c->cap, c->n + 1, sizeof(*c->e)))
      return TB_ENOMEM;
    if ((e = entry_new(lora, key)) == NULL)
      return TB_ENOMEM;
    c->e[c->n++] = e;
  }
  if (e->used == c->step) {  /* a second group of the same entry */
    *out = e;
    return 0;
  }
  e->used = c->step;
  for (size_t s = 0; s < lora->num_slots; s++) {
    if (!lora->slots[s].on || e->ready[s])
      continue;
    if (tb__array_grow((void **)&c->todo, &c->todo_cap, c->ntodo + 1, sizeof(*c->todo)))
      return TB_ENOMEM;
    c->todo[c->ntodo++] = (tb__dec_lora_todo_t){ e, s };
  }
  *out = e;
  return 0;
}

void tb__dec_lora_pack(tb__dec_lora_cache_t *c, size_t i) {
  tb__dec_lora_t *e = c->todo[i].e;
  size_t s = c->todo[i].slot, r = e->lora->rank;
  const tb__lora_slot_t *sl = &e->lora->slots[s];
  const float *p = e->lora->params;
  tb__k_pack_f32(e->buf + e->a_pk[s], p + sl->a_off, sl->in, sl->in, r);
  tb__k_pack_f32(e->buf + e->b_pk[s], p + sl->b_off, r, r, sl->out);
  e->ready[s] = 1;
}

void tb__dec_lora_free(tb__dec_lora_cache_t *c) {
  for (size_t i = 0; i < c->n; i++)
    entry_free(c->e[i]);
  free(c->e);
  free(c->todo);
  memset(c, 0, sizeof(*c));
}

/*
 * The BPE model: hashes of tokens and merges, the merge of one word, and
 * the bounded, thread-safe cache of words already encoded.
 *
 * A word is merged as `tokenizers` merges it: the pair of lowest rank
 * first, the leftmost of equal ranks, until no pair has a rank.  Short
 * words (the usual case) scan their pairs directly; long ones use a heap,
 * so a megabyte without spaces stays O(n log n).
 *
 * Non-goals: BPE dropout (the files of the supported models set none),
 * continuing_subword_prefix/end_of_word_suffix (the loader refuses them).
 */
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"

uint32_t tb__tok_hash(const void *p, size_t n) {
  /* FNV-1a, then a final mix so the low bits index well. */
  const unsigned char *s = p;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ s[i]) * 16777619u;
  h ^= h >> 15;
  h *= 0x2c1b3c6du;
  h ^= h >> 12;
  return h;
}

static uint64_t pow2_at_least(size_t n) {
  uint64_t c = 16;
  while (c < n)
    c <<= 1;
  return c;
}

int tb__strhash_init(tb__strhash_t *h, size_t n) {
  uint64_t cap = pow2_at_least(n * 2 + 1);
  h->slots = calloc(cap, sizeof(*h->slots));
  if (h->slots == NULL)
    return TB_ENOMEM;
  h->mask = cap - 1;
  return 0;
}

void tb__strhash_free(tb__strhash_t *h) {
  free(h->slots);
  h->slots = NULL;
}

void tb__strhash_put(tb__strhash_t *h, const char *blob, const tb__span32_t *spans,
                     int32_t id, int replace) {
  tb__strhash_put_hashed(h, blob, spans, id,
                         tb__tok_hash(blob + spans[id].off, spans[id].len), replace);
}

void tb__strhash_prefetch(const tb__strhash_t *h, uint32_t hv) {
  __builtin_prefetch(&h->slots[hv & h->mask]);
}

void tb__strhash_put_hashed(tb__strhash_t *h, const char *blob, const tb__span32_t *spans,
                            int32_t id, uint32_t hv, int replace) {
  const char *k = blob + spans[id].off;
  size_t n = spans[id].len;
  for (uint64_t i = hv & h->mask;; i = (i + 1) & h->mask) {
    tb__strhash_slot_t *s = &h->slots[i];
    if (s->id1 == 0) {
      s->hash = hv;
      s->id1 = (uint32_t)id + 1;
      return;
    }
    if (s->hash != hv)
      continue;
    const tb__span32_t *o = &spans[s->id1 - 1];
    if (o->len == n && memcmp(blob + o->off, k, n) == 0) {
      if (replace)
        s->id1 = (uint32_t)id + 1;
      return;
    }
  }
}

int32_t tb__strhash_get(const tb__strhash_t *h, const char *blob, const tb__span32_t *spans,
                        const void *key, size_t n) {
  if (h->slots == NULL)
    return -1;
  uint32_t hv = tb__tok_hash(key, n);
  for (uint64_t i = hv & h->mask;; i = (i + 1) & h->mask) {
    const tb__strhash_slot_t *s = &h->slots[i];
    if (s->id1 == 0)
      return -1;
    if (s->hash != hv)
      continue;
    const tb__span32_t *o = &spans[s->id1 - 1];
    if (o->len == n && memcmp(blob + o->off, key, n) == 0)
      return (int32_t)(s->id1 - 1);
  }
}

/* Lookups by the thousand (the merges at load) spend their time waiting
 * for memory: each stage here starts the loads the next one needs, for
 * the whole batch, before any is used. */
void tb__strhash_get_many(const tb__strhash_t *h, const char *blob, const tb__span32_t *spans,
                          tb__lookup_t *q, size_t n) {
  for (size_t i = 0; i < n; i++) {
    q[i].hash = tb__tok_hash(q[i].key, q[i].n);
    __builtin_prefetch(&h->slots[q[i].hash & h->mask]);
  }
  for (size_t i = 0; i < n; i++) {
    const tb__strhash_slot_t *s = &h->slots[q[i].hash & h->mask];
    q[i].id = s->hash == q[i].hash && s->id1 != 0 ? (int32_t)s->id1 - 1 : -1;
    if (q[i].id >= 0)
      __builtin_prefetch(&spans[q[i].id]);
  }
  for (size_t i = 0; i < n; i++)
    if (q[i].id >= 0)
      __builtin_prefetch(blob + spans[q[i].id].off);
  for (size_t i = 0; i < n; i++)
    q[i].id = tb__strhash_get(h, blob, spans, q[i].key, q[i].n);
}

static inline uint64_t pair_hash(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

int tb__pairhash_init(tb__pairhash_t *h, size_t n) {
  /* At most two thirds full: every merge is looked up in encoding, most
   * of them in vain, and probes stay short. */
  uint64_t cap = pow2_at_least(n + n / 2 + 1);
  h->slots = calloc(cap, sizeof(*h->slots));
  if (h->slots == NULL)
    return TB_ENOMEM;
  h->mask = cap - 1;
  return 0;
}

void tb__pairhash_free(tb__pairhash_t *h) {
  free(h->slots);
  h->slots = NULL;
}

void tb__pairhash_prefetch(const tb__pairhash_t *h, int32_t a, int32_t b) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  __builtin_prefetch(&h->slots[pair_hash(key) & h->mask], 1);
}

int tb__pairhash_put(tb__pairhash_t *h, int32_t a, int32_t b, uint32_t rank, int32_t merged) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  for (uint64_t i = pair_hash(key) & h->mask;; i = (i + 1) & h->mask) {
    if (h->slots[i].key == 0) {
      h->slots[i] = (tb__pair_entry_t){ key, rank, merged };
      return 0;
    }
    if (h->slots[i].key == key)
      return 1;
  }
}

static inline const tb__pair_entry_t *pair_get(const tb__pairhash_t *h, int32_t a, int32_t b) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  for (uint64_t i = pair_hash(key) & h->mask;; i = (i + 1) & h->mask) {
    const tb__pair_entry_t *e = &h->slots[i];
    if (e->key == key)
      return e;
    if (e->key == 0)
      return NULL;
  }
}

/* ---------------------------------------------------------------- cache */

int tb__cache_init(tb_tokenizer_t *t) {
  t->cache = calloc(TB__CACHE_SHARDS, sizeof(*t->cache));
  if (t->cache == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < TB__CACHE_SHARDS; i++) {
    t->cache[i].slots = aligned_alloc(64, TB__CACHE_SLOTS * sizeof(tb__cache_slot_t));
    if (t->cache[i].slots != NULL)
      memset(t->cache[i].slots, 0, TB__CACHE_SLOTS * sizeof(tb__cache_slot_t));
    if (t->cache[i].slots == NULL || pthread_mutex_init(&t->cache[i].lock, NULL) != 0) {
      free(t->cache[i].slots);
      t->cache[i].slots = NULL;
      for (size_t j = 0; j < i; j++) {
        pthread_mutex_destroy(&t->cache[j].lock);
        free(t->cache[j].slots);
      }
      free(t->cache);
      t->cache = NULL;
      return TB_ENOMEM;
    }
  }
  return 0;
}

void tb__cache_free(tb_tokenizer_t *t) {
  if (t->cache == NULL)
    return;
  for (size_t i = 0; i < TB__CACHE_SHARDS; i++) {
    pthread_mutex_destroy(&t->cache[i].lock);
    free(t->cache[i].slots);
  }
  free(t->cache);
  t->cache = NULL;
}

void tb__cache_prefetch(const tb_tokenizer_t *t, uint32_t h) {
  if (t->cache != NULL)
    __builtin_prefetch(&t->cache[h % TB__CACHE_SHARDS].slots[(h / TB__CACHE_SHARDS) %
                                                             TB__CACHE_SLOTS]);
}

/* Copies the cached ids of word w into ids; returns their count or -1. */
static int cache_get(const tb_tokenizer_t *t, uint32_t h, const char *w, size_t n,
                     int32_t *ids) {
  tb__cache_shard_t *sh = &t->cache[h % TB__CACHE_SHARDS];
  tb__cache_slot_t *s = &sh->slots[(h / TB__CACHE_SHARDS) % TB__CACHE_SLOTS];
  int got = -1;
  pthread_mutex_lock(&sh->lock);
  if (s->klen == n && s->hash == h && memcmp(s->key, w, n) == 0) {
    got = s->nids;
    memcpy(ids, s->ids, (size_t)got * sizeof(*ids));
  }
  pthread_mutex_unlock(&sh->lock);
  return got;
}

static void cache_put(const tb_tokenizer_t *t, uint32_t h, const char *w, size_t n,
                      const int32_t *ids, size_t nids) {
  tb__cache_shard_t *sh = &t->cache[h % TB__CACHE_SHARDS];
  tb__cache_slot_t *s = &sh->slots[(h / TB__CACHE_SHARDS) % TB__CACHE_SLOTS];
  pthread_mutex_lock(&sh->lock);
  s->hash = h;
  s->klen = (uint8_t)n;
  s->nids = (uint8_t)nids;
  memcpy(s->key, w, n);
  memcpy(s->ids, ids, nids * sizeof(*ids));
  pthread_mutex_unlock(&sh->lock);
}

/* ---------------------------------------------------------------- output */

int tb__ids_push(tb__ids_t *o, int32_t id, size_t start, size_t end) {
  if (o->len == o->cap) {
    size_t cap = o->cap ? o->cap * 2 : 256;
    if (cap > SIZE_MAX / (2 * sizeof(size_t)))
      return TB_ENOMEM;
    int32_t *ids = realloc(o->ids, cap * sizeof(*ids));
    if (ids == NULL)
      return TB_ENOMEM;
    o->ids = ids;
    if (o->want_offs) {
      size_t *offs = realloc(o->offs, cap * 2 * sizeof(*offs));
      if (offs == NULL)
        return TB_ENOMEM;
      o->offs = offs;
    }
    o->cap = cap;
  }
  o->ids[o->len] = id;
  if (o->want_offs) {
    o->offs[2 * o->len] = start;
    o->offs[2 * o->len + 1] = end;
  }
  o->len++;
  return 0;
}

void tb__ids_free(tb__ids_t *o) {
  free(o->ids);
  free(o->offs);
  memset(o, 0, sizeof(*o));
}

/* ---------------------------------------------------------------- merge */

typedef struct tb__heap_s {
  uint32_t rank;
  uint32_t pos; /* the left symbol's index */
} heap_item_t;

static inline int heap_less(heap_item_t a, heap_item_t b) {
  return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(heap_item_t *h, size_t *n, heap_item_t it) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_less(it, h[p]))
      break;
    h[i] = h[p];
    i = p;
  }
  h[i] = it;
}

static heap_item_t heap_pop(heap_item_t *h, size_t *n) {
  heap_item_t top = h[0], last = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n)
      break;
    if (c + 1 < *n && heap_less(h[c + 1], h[c]))
      c++;
    if (!heap_less(h[c], last))
      break;
    h[i] = h[c];
    i = c;
  }
  if (*n > 0)
    h[i] = last;
  return top;
}

static int scratch_reserve(tb__bpe_scratch_t *s, size_t n) {
  if (n <= s->cap)
    return 0;
  size_t cap = s->cap ? s->cap : 64;
  while (cap < n)
    cap *= 2;
  int32_t *sym = realloc(s->sym, cap * sizeof(*sym));
  if (sym == NULL)
    return TB_ENOMEM;
  s->sym = sym;
  uint32_t *pos = realloc(s->pos, cap * sizeof(*pos));
  if (pos == NULL)
    return TB_ENOMEM;
  s->pos = pos;
  uint32_t *len = realloc(s->len, cap * sizeof(*len));
  if (len == NULL)
    return TB_ENOMEM;
  s->len = len;
  uint32_t *link = realloc(s->link, 2 * cap * sizeof(*link));
  if (link == NULL)
    return TB_ENOMEM;
  s->link = link;
  s->cap = cap;
  return 0;
}

void tb__bpe_scratch_free(tb__bpe_scratch_t *s) {
  free(s->sym);
  free(s->pos);
  free(s->len);
  free(s->link);
  free(s->heap);
  memset(s, 0, sizeof(*s));
}

/* Splits the word into its first symbols: one per byte, through
 * byte_fallback or the unknown token where a byte has no token.  Returns
 * the count, or -1 for a byte nothing can stand for (the loader makes
 * that impossible) or -2 out of memory. */
static long initial_symbols(const tb_tokenizer_t *t, const char *w, size_t n,
                            tb__bpe_scratch_t *s) {
  if (scratch_reserve(s, n) != 0)
    return -2;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)w[i];
    int32_t id = t->byte_id[b];
    if (id < 0 && t->byte_fallback)
      id = t->fallback_id[b];
    if (id < 0)
      id = t->unk_id;
    if (id < 0)
      return -1;
    s->sym[k] = id;
    s->pos[k] = (uint32_t)i;
    s->len[k] = 1;
    k++;
  }
  return (long)k;
}

/* Merges with a linear scan for the best pair: fast for short words. */
static size_t merge_scan(const tb_tokenizer_t *t, tb__bpe_scratch_t *s, size_t k) {
  while (k > 1) {
    uint32_t best = UINT32_MAX;
    size_t at = 0;
    int32_t merged = -1;
    for (size_t i = 0; i + 1 < k; i++) {
      const tb__pair_entry_t *e = pair_get(&t->merges, s->sym[i], s->sym[i + 1]);
      if (e != NULL && e->rank < best) {
        best = e->rank;
        at = i;
        merged = e->merged;
      }
    }
    if (merged < 0)
      break;
    s->sym[at] = merged;
    s->len[at] += s->len[at + 1];
    memmove(&s->sym[at + 1], &s->sym[at + 2], (k - at - 2) * sizeof(*s->sym));
    memmove(&s->pos[at + 1], &s->pos[at + 2], (k - at - 2) * sizeof(*s->pos));
    memmove(&s->len[at + 1], &s->len[at + 2], (k - at - 2) * sizeof(*s->len));
    k--;
  }
  return k;
}

/* Merges with a heap of candidate pairs over a linked list of symbols,
 * as `tokenizers`' Word::merge_all: stale entries are skipped when the
 * pair at their position has changed. */
static long merge_heap(const tb_tokenizer_t *t, tb__bpe_scratch_t *s, size_t k) {
  /* k - 1 pairs at first, then at most two new ones per merge. */
  if (s->heap_cap < 3 * k) {
    heap_item_t *h = realloc(s->heap, 3 * k * sizeof(*h));
    if (h == NULL)
      return -2;
    s->heap = h;
    s->heap_cap = 3 * k;
  }
  uint32_t *next = s->link, *prev = s->link + k;
  for (size_t i = 0; i < k; i++) {
    next[i] = (uint32_t)(i + 1);
    prev[i] = (uint32_t)(i ? i - 1 : UINT32_MAX);
  }
  heap_item_t *h = s->heap;
  size_t hn = 0;
  for (size_t i = 0; i + 1 < k; i++) {
    const tb__pair_entry_t *e = pair_get(&t->merges, s->sym[i], s->sym[i + 1]);
    if (e != NULL)
      heap_push(h, &hn, (heap_item_t){ e->rank, (uint32_t)i });
  }
  while (hn > 0) {
    heap_item_t it = heap_pop(h, &hn);
    uint32_t i = it.pos;
    if (s->len[i] == 0 || next[i] >= k)
      continue;
    uint32_t j = next[i];
    const tb__pair_entry_t *e = pair_get(&t->merges, s->sym[i], s->sym[j]);
    if (e == NULL || e->rank != it.rank)
      continue; /* stale: one side has merged since */
    s->sym[i] = e->merged;
    s->len[i] += s->len[j];
    s->len[j] = 0;
    next[i] = next[j];
    if (next[j] < k)
      prev[next[j]] = i;
    if (prev[i] != UINT32_MAX) {
      const tb__pair_entry_t *l = pair_get(&t->merges, s->sym[prev[i]], s->sym[i]);
      if (l != NULL)
        heap_push(h, &hn, (heap_item_t){ l->rank, prev[i] });
    }
    if (next[i] < k) {
      const tb__pair_entry_t *r = pair_get(&t->merges, s->sym[i], s->sym[next[i]]);
      if (r != NULL)
        heap_push(h, &hn, (heap_item_t){ r->rank, i });
    }
  }
  size_t m = 0;
  for (size_t i = 0; i < k; i++)
    if (s->len[i] != 0) {
      s->sym[m] = s->sym[i];
      s->pos[m] = s->pos[i];
      s->len[m] = s->len[i];
      m++;
    }
  return (long)m;
}

int tb__bpe_word(const tb_tokenizer_t *t, const char *w, size_t n, size_t base,
                 tb__bpe_scratch_t *s, tb__ids_t *out) {
  return tb__bpe_word_hashed(t, w, n, base, tb__tok_hash(w, n), s, out);
}

int tb__bpe_word_hashed(const tb_tokenizer_t *t, const char *w, size_t n, size_t base,
                        uint32_t h, tb__bpe_scratch_t *s, tb__ids_t *out) {
  if (n == 0)
    return 0;
  /* The cache first: a hit costs one slot's load, where a look in the
   * vocabulary (ignore_merges) costs three. */
  int cacheable = t->cache != NULL && n <= TB__CACHE_KEY && !out->want_offs;
  if (cacheable) {
    int32_t ids[TB__CACHE_IDS];
    int got = cache_get(t, h, w, n, ids);
    if (got >= 0) {
      for (int i = 0; i < got; i++)
        if (tb__ids_push(out, ids[i], 0, 0) != 0)
          return TB_ENOMEM;
      return 0;
    }
  }
  if (t->ignore_merges) {
    int32_t id = tb__strhash_get(&t->by_bytes, t->blob, t->bytes, w, n);
    if (id >= 0) {
      if (cacheable)
        cache_put(t, h, w, n, &id, 1);
      return tb__ids_push(out, id, base, base + n);
    }
  }
  long k = initial_symbols(t, w, n, s);
  if (k == -2)
    return TB_ENOMEM;
  if (k < 0)
    return TB_EINVAL;
  /* The scan looks up every pair again after each merge: quadratic, and
   * faster than the heap only for the shortest words. */
  if (k <= 8)
    k = (long)merge_scan(t, s, (size_t)k);
  else
    k = merge_heap(t, s, (size_t)k);
  if (k < 0)
    return TB_ENOMEM;
  for (long i = 0; i < k; i++)
    if (tb__ids_push(out, s->sym[i], base + s->pos[i], base + s->pos[i] + s->len[i]) != 0)
      return TB_ENOMEM;
  if (cacheable && k <= TB__CACHE_IDS)
    cache_put(t, h, w, n, s->sym, (size_t)k);
  return 0;
}

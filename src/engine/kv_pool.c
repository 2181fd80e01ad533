/*
 * The pool of KV blocks and its prefix cache (see kv_pool.h).
 *
 * Block states: free (on free_stack, refs 0, not cached), held (refs > 0,
 * cached or not), and evictable (refs 0, cached, in the LRU list).  The
 * hash table chains cached blocks by id; a key's hash mixes the adapter,
 * its version, the parent's id and generation and the tokens, and a
 * lookup compares all of them, so a collision costs a comparison, never a
 * wrong block.
 */
#include "engine/kv_pool.h"

#include <stdlib.h>
#include <string.h>

#include "engine/bigmem.h"
#include "tinkerbell/error.h"

static uint64_t mix(uint64_t h, uint64_t v) {
  /* splitmix64's finaliser over the running value. */
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

static uint64_t key_hash(const tb__kv_pool_t *p, tb__kv_key_t key,
                         int32_t parent, uint32_t parent_gen,
                         const int32_t *tokens) {
  uint64_t h = mix(mix(0, key.adapter), key.version);
  h = mix(h, ((uint64_t)(uint32_t)parent << 32) | parent_gen);
  for (size_t i = 0; i < p->block_tokens; i++)
    h = mix(h, (uint32_t)tokens[i]);
  return h;
}

int tb__kv_pool_init(tb__kv_pool_t *p, size_t block_tokens,
                     size_t block_floats, size_t num_blocks, int cache) {
  memset(p, 0, sizeof(*p));
  if (block_tokens == 0 || block_floats == 0 || num_blocks == 0 ||
      num_blocks > INT32_MAX / 2)
    return TB_EINVAL;
  p->block_tokens = block_tokens;
  p->block_floats = block_floats;
  p->num_blocks = num_blocks;
  p->cache = cache != 0;
  p->lru_head = p->lru_tail = TB_KV_NONE;
  p->num_buckets = 1;
  while (p->num_buckets < num_blocks)
    p->num_buckets *= 2;
  size_t n = num_blocks;
  p->mem_bytes = n * block_floats * sizeof(float);
  p->mem = tb__big_alloc(p->mem_bytes);  /* pages are touched on use */
  p->refs = calloc(n, sizeof(*p->refs));
  p->gen = calloc(n, sizeof(*p->gen));
  p->free_stack = malloc(n * sizeof(*p->free_stack));
  p->cached = calloc(n, 1);
  p->hash = calloc(n, sizeof(*p->hash));
  p->key = calloc(n, sizeof(*p->key));
  p->parent = malloc(n * sizeof(*p->parent));
  p->parent_gen = calloc(n, sizeof(*p->parent_gen));
  p->tokens = malloc(n * block_tokens * sizeof(*p->tokens));
  p->chain = malloc(n * sizeof(*p->chain));
  p->buckets = malloc(p->num_buckets * sizeof(*p->buckets));
  p->lru_prev = malloc(n * sizeof(*p->lru_prev));
  p->lru_next = malloc(n * sizeof(*p->lru_next));
  if (!p->mem || !p->refs || !p->gen || !p->free_stack || !p->cached ||
      !p->hash || !p->key || !p->parent || !p->parent_gen || !p->tokens ||
      !p->chain || !p->buckets || !p->lru_prev || !p->lru_next) {
    tb__kv_pool_free(p);
    return TB_ENOMEM;
  }
  /* Block 0 on top: low addresses are used first. */
  for (size_t i = 0; i < n; i++)
    p->free_stack[i] = (int32_t)(n - 1 - i);
  p->num_free = n;
  for (size_t i = 0; i < p->num_buckets; i++)
    p->buckets[i] = TB_KV_NONE;
  return 0;
}

void tb__kv_pool_free(tb__kv_pool_t *p) {
  tb__big_free(p->mem, p->mem_bytes);
  free(p->refs);
  free(p->gen);
  free(p->free_stack);
  free(p->cached);
  free(p->hash);
  free(p->key);
  free(p->parent);
  free(p->parent_gen);
  free(p->tokens);
  free(p->chain);
  free(p->buckets);
  free(p->lru_prev);
  free(p->lru_next);
  memset(p, 0, sizeof(*p));
}

size_t tb__kv_pool_available(const tb__kv_pool_t *p) {
  size_t have = p->num_free + p->num_lru;
  return have > p->reserved ? have - p->reserved : 0;
}

/* ------------------------------------------------------------ LRU */

static void lru_remove(tb__kv_pool_t *p, int32_t b) {
  int32_t pr = p->lru_prev[b], nx = p->lru_next[b];
  if (pr != TB_KV_NONE)
    p->lru_next[pr] = nx;
  else
    p->lru_head = nx;
  if (nx != TB_KV_NONE)
    p->lru_prev[nx] = pr;
  else
    p->lru_tail = pr;
  p->num_lru--;
}

static void lru_push(tb__kv_pool_t *p, int32_t b) {
  p->lru_prev[b] = p->lru_tail;
  p->lru_next[b] = TB_KV_NONE;
  if (p->lru_tail != TB_KV_NONE)
    p->lru_next[p->lru_tail] = b;
  else
    p->lru_head = b;
  p->lru_tail = b;
  p->num_lru++;
}

/* ------------------------------------------------------------ hash */

static void hash_remove(tb__kv_pool_t *p, int32_t b) {
  int32_t *at = &p->buckets[p->hash[b] & (p->num_buckets - 1)];
  while (*at != TB_KV_NONE && *at != b)
    at = &p->chain[*at];
  if (*at == b)
    *at = p->chain[b];
  p->cached[b] = 0;
}

static int32_t hash_find(const tb__kv_pool_t *p, uint64_t h, tb__kv_key_t key,
                         int32_t parent, uint32_t parent_gen,
                         const int32_t *tokens) {
  for (int32_t b = p->buckets[h & (p->num_buckets - 1)]; b != TB_KV_NONE;
       b = p->chain[b])
    if (p->hash[b] == h && p->key[b].adapter == key.adapter &&
        p->key[b].version == key.version && p->parent[b] == parent &&
        p->parent_gen[b] == parent_gen &&
        memcmp(p->tokens + (size_t)b * p->block_tokens, tokens,
               p->block_tokens * sizeof(int32_t)) == 0)
      return b;
  return TB_KV_NONE;
}

size_t tb__kv_pool_lookup(const tb__kv_pool_t *p, tb__kv_key_t key,
                          const int32_t *tokens, size_t n, int32_t *out,
                          size_t max) {
  if (!p->cache)
    return 0;
  size_t found = 0;
  int32_t parent = TB_KV_NONE;
  uint32_t pgen = 0;
  for (size_t i = 0; found < max && (i + 1) * p->block_tokens <= n; i++) {
    const int32_t *t = tokens + i * p->block_tokens;
    uint64_t h = key_hash(p, key, parent, pgen, t);
    int32_t b = hash_find(p, h, key, parent, pgen, t);
    if (b == TB_KV_NONE)
      break;
    out[found++] = b;
    parent = b;
    pgen = p->gen[b];
  }
  return found;
}

void tb__kv_pool_register(tb__kv_pool_t *p, tb__kv_key_t key, int32_t parent,
                          const int32_t *tokens, int32_t b) {
  if (!p->cache || p->cached[b])
    return;
  uint32_t pgen = parent == TB_KV_NONE ? 0 : p->gen[parent];
  uint64_t h = key_hash(p, key, parent, pgen, tokens);
  if (hash_find(p, h, key, parent, pgen, tokens) != TB_KV_NONE)
    return;
  p->cached[b] = 1;
  p->hash[b] = h;
  p->key[b] = key;
  p->parent[b] = parent;
  p->parent_gen[b] = pgen;
  memcpy(p->tokens + (size_t)b * p->block_tokens, tokens,
         p->block_tokens * sizeof(int32_t));
  int32_t *bucket = &p->buckets[h & (p->num_buckets - 1)];
  p->chain[b] = *bucket;
  *bucket = b;
}

/* ------------------------------------------------------------ blocks */

int tb__kv_pool_admit(tb__kv_pool_t *p, const int32_t *hit, size_t nhit,
                      size_t need) {
  /* Taking a hit that nobody holds makes it unevictable. */
  size_t idle = 0;
  for (size_t i = 0; i < nhit; i++)
    idle += p->refs[hit[i]] == 0;
  size_t have = p->num_free + p->num_lru - idle;
  if (p->reserved > have || need > have - p->reserved)
    return TB_EBUSY;
  for (size_t i = 0; i < nhit; i++)
    tb__kv_pool_ref(p, hit[i]);
  p->hits += nhit;
  p->reserved += need;
  return 0;
}

void tb__kv_pool_unreserve(tb__kv_pool_t *p, size_t n) {
  p->reserved -= n < p->reserved ? n : p->reserved;
}

int32_t tb__kv_pool_alloc(tb__kv_pool_t *p) {
  int32_t b;
  if (p->num_free > 0) {
    b = p->free_stack[--p->num_free];
  } else {
    /* Reservations never exceed free + evictable blocks, so one of the
     * two lists has a block. */
    b = p->lru_head;
    lru_remove(p, b);
    hash_remove(p, b);
    p->evictions++;
  }
  if (p->reserved > 0)
    p->reserved--;
  p->refs[b] = 1;
  p->gen[b]++;
  return b;
}

void tb__kv_pool_ref(tb__kv_pool_t *p, int32_t b) {
  if (p->refs[b]++ == 0 && p->cached[b])
    lru_remove(p, b);
}

void tb__kv_pool_unref(tb__kv_pool_t *p, int32_t b) {
  if (--p->refs[b] > 0)
    return;
  if (p->cached[b])
    lru_push(p, b);
  else
    p->free_stack[p->num_free++] = b;
}

int tb__kv_pool_cow(tb__kv_pool_t *p, int32_t *b, size_t filled,
                    size_t layers, size_t kv_floats) {
  if (p->refs[*b] <= 1)
    return 0;
  int32_t nb = tb__kv_pool_alloc(p);
  const float *src = tb__kv_block(p, *b);
  float *dst = tb__kv_block(p, nb);
  size_t part = p->block_tokens * kv_floats;  /* one layer's keys */
  for (size_t i = 0; i < 2 * layers; i++)
    memcpy(dst + i * part, src + i * part, filled * kv_floats * sizeof(float));
  tb__kv_pool_unref(p, *b);
  *b = nb;
  p->copies++;
  return 1;
}

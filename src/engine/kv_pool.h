/*
 * The KV memory of one model's decoding: a bounded pool of fixed-size
 * blocks, shared by reference, with a prefix cache.
 *
 * A block holds the keys and values of `block_tokens` consecutive
 * positions of one sequence for every layer, laid out (L, 2, block, KVH*D)
 * floats: layer l's keys, then its values.  A sequence's KV is a block
 * table, the ids of its blocks in position order, so sequences of any
 * length draw from one pool without fragmenting it.
 *
 * Sharing.  Blocks are reference-counted: the samples of one request start
 * from one prefill and share its blocks, and requests whose prompts begin
 * alike share the blocks of the common prefix.  Only a block's last
 * holder may write into it; a sequence about to write into a shared,
 * partly filled block takes a copy first (tb__kv_pool_cow).  Full blocks
 * are never written again.
 *
 * The prefix cache.  A full block can be registered under a key: the
 * adapter's identity and weights version (an optimizer step or a load
 * makes a new version, whose outputs differ), the block's parent in the
 * table (its id and generation, so the key names the whole prefix) and
 * its tokens.  A lookup walks a prompt block by block and returns the
 * cached blocks that continue it.  A cached block that nobody holds any
 * more stays in the cache, in LRU order, until its memory is needed:
 * allocation takes a never-used or freed block first, then evicts the
 * least recently released cached one.  Each allocation bumps the block's
 * generation, so a child registered under an evicted parent can never be
 * found again (it waits in the LRU list to be reused).
 *
 * Bound and reservations.  The pool never holds more than `num_blocks`
 * blocks (its memory is mapped once, and pages are touched only as blocks
 * are first used).  A request reserves the blocks it may need before it
 * runs (tb__kv_pool_admit) and allocates only from its reservation, so a
 * request that was admitted never finds the pool empty, and one that
 * cannot be admitted waits without holding anything.
 *
 * Everything here runs on one thread at a time (the decoder's loop
 * thread, or the thread of a synchronous sample); the workers of a step
 * only read block memory and write the positions the step planned.
 * Non-goals: swapping blocks out, and sharing between models.
 */
#ifndef TB_ENGINE_KV_POOL_H
#define TB_ENGINE_KV_POOL_H

#include <stddef.h>
#include <stdint.h>

/* What a cached block was computed with: the adapter (0: the bare model;
 * engine adapters have ids that are never reused) and its weights
 * version. */
typedef struct tb__kv_key_s {
  uint64_t adapter;
  uint64_t version;
} tb__kv_key_t;

#define TB_KV_NONE (-1)

typedef struct tb__kv_pool_s {
  /* read-only */
  size_t block_tokens;
  size_t block_floats;   /* floats per block */
  size_t num_blocks;     /* the bound */
  size_t num_free;       /* never used, or released without a key */
  size_t num_lru;        /* cached and held by nobody: evictable */
  size_t reserved;       /* promised to admitted requests */
  int cache;             /* the prefix cache is on */
  /* counters, for tests and metrics */
  uint64_t hits, evictions, copies;
  /* private */
  float *mem;
  size_t mem_bytes;
  uint32_t *refs;
  uint32_t *gen;
  int32_t *free_stack;
  /* Cached blocks: their key, parent and tokens, hash chain and LRU
   * links (TB_KV_NONE ends a list). */
  uint8_t *cached;
  uint64_t *hash;
  tb__kv_key_t *key;
  int32_t *parent;
  uint32_t *parent_gen;
  int32_t *tokens;       /* (num_blocks, block_tokens) */
  int32_t *chain;
  int32_t *buckets;
  size_t num_buckets;
  int32_t lru_head, lru_tail;
  int32_t *lru_prev, *lru_next;
} tb__kv_pool_t;

/* A pool of num_blocks blocks of block_tokens positions and block_floats
 * floats each.  0, TB_EINVAL (a zero size) or TB_ENOMEM. */
int tb__kv_pool_init(tb__kv_pool_t *p, size_t block_tokens,
                     size_t block_floats, size_t num_blocks, int cache);
/* Releases everything; safe on a zeroed pool. */
void tb__kv_pool_free(tb__kv_pool_t *p);

/* The floats of block b. */
static inline float *tb__kv_block(const tb__kv_pool_t *p, int32_t b) {
  return p->mem + (size_t)b * p->block_floats;
}

/* Blocks an admission could still reserve: free and evictable ones, less
 * what is promised. */
size_t tb__kv_pool_available(const tb__kv_pool_t *p);

/* The cached blocks that continue the prompt tokens[0, n) under key, at
 * most `max` of them, into out; returns how many (0 when the cache is
 * off).  Takes no reference: pass them to tb__kv_pool_admit. */
size_t tb__kv_pool_lookup(const tb__kv_pool_t *p, tb__kv_key_t key,
                          const int32_t *tokens, size_t n, int32_t *out,
                          size_t max);

/* Admits a request that will use the nhit cached blocks hit[] and
 * allocate up to `need` more: when the pool can promise that, takes a
 * reference on each hit, reserves `need` and returns 0; otherwise changes
 * nothing and returns TB_EBUSY (no room now; try again after blocks are
 * released). */
int tb__kv_pool_admit(tb__kv_pool_t *p, const int32_t *hit, size_t nhit,
                      size_t need);
/* Gives back n reserved blocks that will not be allocated. */
void tb__kv_pool_unreserve(tb__kv_pool_t *p, size_t n);

/* A block from the caller's reservation (which must hold one), with one
 * reference; its contents are undefined. */
int32_t tb__kv_pool_alloc(tb__kv_pool_t *p);
void tb__kv_pool_ref(tb__kv_pool_t *p, int32_t b);
/* Drops a reference; the last one frees the block, or, if it is cached,
 * puts it at the end of the LRU list. */
void tb__kv_pool_unref(tb__kv_pool_t *p, int32_t b);

/* Makes *b writable for positions [filled, block_tokens): when others
 * hold it too, replaces *b by a copy of its first `filled` positions
 * (a block from the caller's reservation) and drops the reference to the
 * original.  Returns 1 when it copied. */
int tb__kv_pool_cow(tb__kv_pool_t *p, int32_t *b, size_t filled,
                    size_t layers, size_t kv_floats);

/* Registers full block b, which holds tokens[0, block_tokens) after the
 * block `parent` (TB_KV_NONE for a sequence's first block), under key.  A
 * block already cached, a cache that is off, or an equal block already
 * registered (the older one stays) leave things as they are. */
void tb__kv_pool_register(tb__kv_pool_t *p, tb__kv_key_t key, int32_t parent,
                          const int32_t *tokens, int32_t b);

#endif /* TB_ENGINE_KV_POOL_H */

/*
 * A per-request arena: bump allocation from chained blocks, released in one
 * call when the request completes (after h2o's h2o_mem_pool_t).  Not
 * thread-safe; an arena belongs to one request on one thread.
 */
#ifndef TB_CORE_ARENA_H
#define TB_CORE_ARENA_H

#include <stddef.h>

typedef struct tb__arena_block_s tb__arena_block_t;

typedef struct tb__arena_s {
  tb__arena_block_t *head;  /* the block being filled; older ones follow */
  size_t used;             /* bytes used in head */
  size_t block_size;       /* default size of new blocks */
  size_t total;            /* bytes handed out, for limits and metrics */
} tb__arena_t;

/* block_size 0 means the default (4 KiB). */
void tb__arena_init(tb__arena_t *a, size_t block_size);
/* 16-byte aligned memory valid until reset or free; NULL on ENOMEM. */
void *tb__arena_alloc(tb__arena_t *a, size_t size);
void *tb__arena_calloc(tb__arena_t *a, size_t n, size_t size);
char *tb__arena_strndup(tb__arena_t *a, const char *s, size_t n);
/* Releases every block but the first, which is kept for reuse. */
void tb__arena_reset(tb__arena_t *a);
void tb__arena_free(tb__arena_t *a);

#endif /* TB_CORE_ARENA_H */

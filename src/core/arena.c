/*
 * Per-request arena (see arena.h).  Requests larger than a quarter of the
 * block size get a block of their own, so a large body never wastes the
 * rest of a shared block.
 */
#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

#define TB__ARENA_ALIGN 16
#define TB__ARENA_DEFAULT 4096

struct tb__arena_block_s {
  tb__arena_block_t *next;
  size_t size;
  _Alignas(16) unsigned char data[];
};

void tb__arena_init(tb__arena_t *a, size_t block_size) {
  a->head = NULL;
  a->used = 0;
  a->block_size = block_size ? block_size : TB__ARENA_DEFAULT;
  a->total = 0;
}

static size_t align_up(size_t n) {
  return (n + TB__ARENA_ALIGN - 1) & ~(size_t)(TB__ARENA_ALIGN - 1);
}

static tb__arena_block_t *new_block(size_t size) {
  /* The header must not wrap a huge size around to a tiny block. */
  if (size > SIZE_MAX - sizeof(tb__arena_block_t))
    return NULL;
  tb__arena_block_t *b = malloc(sizeof(*b) + size);
  if (b != NULL) {
    b->next = NULL;
    b->size = size;
  }
  return b;
}

void *tb__arena_alloc(tb__arena_t *a, size_t size) {
  if (size > SIZE_MAX - TB__ARENA_ALIGN)
    return NULL;
  size = align_up(size ? size : 1);
  if (size > a->block_size / 4) {
    /* A dedicated block, linked behind head so head keeps filling. */
    tb__arena_block_t *b = new_block(size);
    if (b == NULL)
      return NULL;
    if (a->head == NULL) {
      a->head = b;
      a->used = size;
    } else {
      b->next = a->head->next;
      a->head->next = b;
    }
    a->total += size;
    return b->data;
  }
  if (a->head == NULL || a->head->size - a->used < size) {
    tb__arena_block_t *b = new_block(a->block_size);
    if (b == NULL)
      return NULL;
    b->next = a->head;
    a->head = b;
    a->used = 0;
  }
  void *p = a->head->data + a->used;
  a->used += size;
  a->total += size;
  return p;
}

void *tb__arena_calloc(tb__arena_t *a, size_t n, size_t size) {
  if (size != 0 && n > SIZE_MAX / size)
    return NULL;
  void *p = tb__arena_alloc(a, n * size);
  if (p != NULL)
    memset(p, 0, n * size);
  return p;
}

char *tb__arena_strndup(tb__arena_t *a, const char *s, size_t n) {
  return tb__str_fill(tb__arena_alloc(a, n + 1), s, n);
}

void tb__arena_reset(tb__arena_t *a) {
  /* Keep the most recent block if it is a regular one. */
  tb__arena_block_t *keep = NULL;
  tb__arena_block_t *b = a->head;
  if (b != NULL && b->size == a->block_size) {
    keep = b;
    b = b->next;
    keep->next = NULL;
  }
  while (b != NULL) {
    tb__arena_block_t *next = b->next;
    free(b);
    b = next;
  }
  a->head = keep;
  a->used = 0;
  a->total = 0;
}

void tb__arena_free(tb__arena_t *a) {
  tb__arena_reset(a);
  free(a->head);
  a->head = NULL;
}

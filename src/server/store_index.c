/*
 * A chained hash of strings for the store's indexes (store_index.h):
 * FNV-1a, power-of-two buckets, doubled when full.
 */
#include "server/store_index.h"

#include <stdlib.h>
#include <string.h>

static size_t index_bucket(const tb__sindex_t *ix, const char *s, size_t len) {
  uint64_t h = 1469598103934665603ULL;  /* FNV-1a */
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return (size_t)(h & (ix->n_buckets - 1));
}

tb__sindex_entry_t *tb__sindex_get(const tb__sindex_t *ix, tb_slice_t key) {
  if (ix->n_buckets == 0)
    return NULL;
  for (tb__sindex_entry_t *e = ix->buckets[index_bucket(ix, key.base, key.len)]; e; e = e->next)
    if (tb__slice_eq_str(key, e->key))
      return e;
  return NULL;
}

static int index_grow(tb__sindex_t *ix) {
  size_t n = ix->n_buckets ? ix->n_buckets * 2 : 64;
  tb__sindex_entry_t **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return TB_ENOMEM;
  tb__sindex_t nx = { b, n, ix->n };
  for (size_t i = 0; i < ix->n_buckets; i++)
    for (tb__sindex_entry_t *e = ix->buckets[i], *next; e != NULL; e = next) {
      next = e->next;
      size_t k = index_bucket(&nx, e->key, strlen(e->key));
      e->next = b[k];
      b[k] = e;
    }
  free(ix->buckets);
  *ix = nx;
  return 0;
}

/* Adds key (or finds it) and sets its owner (may be NULL). */
tb__sindex_entry_t *tb__sindex_put(tb__sindex_t *ix, const char *key, const char *owner) {
  tb_slice_t k = { key, strlen(key) };
  tb__sindex_entry_t *e = tb__sindex_get(ix, k);
  if (e == NULL) {
    if (ix->n >= ix->n_buckets && index_grow(ix) != 0)
      return NULL;
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->key = tb__strndup(key, k.len)) == NULL) {
      free(e);
      return NULL;
    }
    size_t b = index_bucket(ix, key, k.len);
    e->next = ix->buckets[b];
    ix->buckets[b] = e;
    ix->n++;
  }
  if (owner != NULL && (e->owner == NULL || strcmp(e->owner, owner) != 0)) {
    char *o = tb__strndup(owner, strlen(owner));
    if (o == NULL)
      return NULL;
    free(e->owner);
    e->owner = o;
  }
  return e;
}

void tb__sindex_del(tb__sindex_t *ix, const char *key) {
  if (ix->n_buckets == 0)
    return;
  for (tb__sindex_entry_t **p = &ix->buckets[index_bucket(ix, key, strlen(key))]; *p;
       p = &(*p)->next)
    if (strcmp((*p)->key, key) == 0) {
      tb__sindex_entry_t *e = *p;
      *p = e->next;
      free(e->key);
      free(e->owner);
      free(e);
      ix->n--;
      return;
    }
}

void tb__sindex_free(tb__sindex_t *ix) {
  for (size_t i = 0; i < ix->n_buckets; i++)
    for (tb__sindex_entry_t *e = ix->buckets[i], *next; e != NULL; e = next) {
      next = e->next;
      free(e->key);
      free(e->owner);
      free(e);
    }
  free(ix->buckets);
  memset(ix, 0, sizeof(*ix));
}

/*
 * The intrusive string-keyed hash map (see idmap.h).
 */
#include "core/idmap.h"

#include <stdlib.h>
#include <string.h>

#include "tinkerbell/error.h"

#define FIRST_BUCKETS 64

static size_t bucket_of(size_t n_buckets, uint64_t hash) {
  return (size_t)(hash & (n_buckets - 1));
}

void tb__idmap_init(tb__idmap_t *m) {
  *m = (tb__idmap_t)TB__IDMAP_INIT;
}

void tb__idmap_free(tb__idmap_t *m) {
  free(m->buckets);
  tb__idmap_init(m);
}

/* Moves every link to a table of n buckets; 0 or TB_ENOMEM (m unchanged). */
static int rehash(tb__idmap_t *m, size_t n) {
  tb__idmap_link_t **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < m->n_buckets; i++)
    for (tb__idmap_link_t *l = m->buckets[i], *next; l != NULL; l = next) {
      next = l->next;
      size_t k = bucket_of(n, l->hash);
      l->next = b[k];
      b[k] = l;
    }
  free(m->buckets);
  m->buckets = b;
  m->n_buckets = n;
  return 0;
}

int tb__idmap_insert(tb__idmap_t *m, tb__idmap_link_t *l, const char *key, size_t len) {
  if (m->n_buckets == 0) {
    if (rehash(m, FIRST_BUCKETS) != 0)
      return TB_ENOMEM;
  } else if (m->n >= m->n_buckets * 2) {
    (void)rehash(m, m->n_buckets * 2);  /* without memory, longer chains */
  }
  l->key = key;
  l->len = len;
  l->hash = tb__idmap_hash(key, len);
  size_t k = bucket_of(m->n_buckets, l->hash);
  l->next = m->buckets[k];
  m->buckets[k] = l;
  m->n++;
  return 0;
}

tb__idmap_link_t *tb__idmap_find(const tb__idmap_t *m, const char *key, size_t len) {
  if (m->n_buckets == 0)
    return NULL;
  uint64_t h = tb__idmap_hash(key, len);
  for (tb__idmap_link_t *l = m->buckets[bucket_of(m->n_buckets, h)]; l != NULL; l = l->next)
    if (l->hash == h && l->len == len && (len == 0 || memcmp(l->key, key, len) == 0))
      return l;
  return NULL;
}

void tb__idmap_remove(tb__idmap_t *m, tb__idmap_link_t *l) {
  tb__idmap_link_t **p = &m->buckets[bucket_of(m->n_buckets, l->hash)];
  while (*p != l)
    p = &(*p)->next;
  *p = l->next;
  l->next = NULL;
  m->n--;
}

/* The first link in bucket i or after it. */
static tb__idmap_link_t *from_bucket(const tb__idmap_t *m, size_t i) {
  for (; i < m->n_buckets; i++)
    if (m->buckets[i] != NULL)
      return m->buckets[i];
  return NULL;
}

tb__idmap_link_t *tb__idmap_first(const tb__idmap_t *m) {
  return from_bucket(m, 0);
}

tb__idmap_link_t *tb__idmap_next(const tb__idmap_t *m, const tb__idmap_link_t *l) {
  return l->next != NULL ? l->next : from_bucket(m, bucket_of(m->n_buckets, l->hash) + 1);
}

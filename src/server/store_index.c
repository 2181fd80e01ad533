/*
 * The store's indexes (store_index.h): entries that own their key and
 * owner strings, in a core/idmap.h map.
 */
#include "server/store_index.h"

#include <stdlib.h>
#include <string.h>

static tb__sindex_entry_t *entry_of(tb__idmap_link_t *l) {
  return l != NULL ? TB__IDMAP_ENTRY(l, tb__sindex_entry_t, link) : NULL;
}

static void entry_free(tb__sindex_entry_t *e) {
  free(e->key);
  free(e->owner);
  free(e);
}

tb__sindex_entry_t *tb__sindex_get(const tb__sindex_t *ix, tb_slice_t key) {
  return entry_of(tb__idmap_find(&ix->map, key.base, key.len));
}

/* Adds key (or finds it) and sets its owner (may be NULL). */
tb__sindex_entry_t *tb__sindex_put(tb__sindex_t *ix, const char *key, const char *owner) {
  tb_slice_t k = { key, strlen(key) };
  tb__sindex_entry_t *e = tb__sindex_get(ix, k);
  if (e == NULL) {
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->key = tb__strndup(key, k.len)) == NULL) {
      free(e);
      return NULL;
    }
    if (tb__idmap_insert(&ix->map, &e->link, e->key, k.len) != 0) {
      entry_free(e);
      return NULL;
    }
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
  tb__sindex_entry_t *e = tb__sindex_get(ix, (tb_slice_t){ key, strlen(key) });
  if (e == NULL)
    return;
  tb__idmap_remove(&ix->map, &e->link);
  entry_free(e);
}

void tb__sindex_free(tb__sindex_t *ix) {
  for (tb__idmap_link_t *l = tb__idmap_first(&ix->map), *next; l != NULL; l = next) {
    next = tb__idmap_next(&ix->map, l);
    entry_free(entry_of(l));
  }
  tb__idmap_free(&ix->map);
}

/*
 * An intrusive hash map keyed by strings (the server's ids: sessions,
 * futures, tombstones, run ids).  The object embeds a tb__idmap_link_t;
 * the map holds only its bucket array, so an entry costs no allocation of
 * its own, and TB__IDMAP_ENTRY gets the object back from its link.  The
 * key is borrowed: it lives in the object and must not change while the
 * object is in the map.
 *
 * Chained buckets, a power of two of them, doubled when the map holds
 * twice as many entries as buckets.  A failed doubling is not an error:
 * chains grow longer until a later insert succeeds in growing.  Only the
 * first bucket array can fail an insert.
 *
 * The hash is FNV-1a, unkeyed: keys a client chooses should not be
 * inserted in numbers (lookups of them are harmless; ids the server
 * generates are unguessable, see server/idgen.h).
 *
 * Not thread-safe; one map belongs to one loop.  Not for: ordered
 * iteration (keep a list beside it), or keys with their own lifetime (the
 * map never copies or frees a key).
 */
#ifndef TB_CORE_IDMAP_H
#define TB_CORE_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct tb__idmap_link_s tb__idmap_link_t;

struct tb__idmap_link_s {
  tb__idmap_link_t *next;  /* the bucket's chain */
  const char *key;         /* borrowed from the object */
  size_t len;
  uint64_t hash;           /* of key, kept so that growing rehashes nothing */
};

typedef struct tb__idmap_s {
  tb__idmap_link_t **buckets;  /* NULL until the first insert */
  size_t n_buckets;            /* 0 or a power of two */
  size_t n;                    /* entries */
} tb__idmap_t;

/* An empty map; so is a zeroed one. */
#define TB__IDMAP_INIT { NULL, 0, 0 }

/* The object of type whose member link is. */
#define TB__IDMAP_ENTRY(link, type, member) \
  ((type *)(void *)((char *)(link) - offsetof(type, member)))

/* FNV-1a of n bytes of s. */
static inline uint64_t tb__idmap_hash(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

void tb__idmap_init(tb__idmap_t *m);
/* Frees the bucket array (not the entries); m is empty and usable after. */
void tb__idmap_free(tb__idmap_t *m);

/* Links l under key (len bytes, borrowed).  The caller makes sure the key
 * is not in the map yet.  Returns 0, or TB_ENOMEM when the map has no
 * bucket array and cannot get one. */
int tb__idmap_insert(tb__idmap_t *m, tb__idmap_link_t *l, const char *key, size_t len);
/* The link under key, or NULL. */
tb__idmap_link_t *tb__idmap_find(const tb__idmap_t *m, const char *key, size_t len);
/* Unlinks l, which is in m. */
void tb__idmap_remove(tb__idmap_t *m, tb__idmap_link_t *l);

/* Iteration in no particular order:
 *   for (l = tb__idmap_first(m); l != NULL; l = next) {
 *     next = tb__idmap_next(m, l);
 *     ... l may be removed (and its object freed) here ...
 *   }
 * Removing the current link is safe when next was taken before; removing
 * any other, or inserting, during the walk is not. */
tb__idmap_link_t *tb__idmap_first(const tb__idmap_t *m);
tb__idmap_link_t *tb__idmap_next(const tb__idmap_t *m, const tb__idmap_link_t *l);

#endif /* TB_CORE_IDMAP_H */

/*
 * The store's in-memory indexes (store.c): a hash of strings (core/idmap.h),
 * each with an optional owner and what the store notes of a run.  Run
 * ids to their owners, and the tinker paths of public checkpoints, so
 * that a route can check a path without waiting for the database.
 */
#ifndef TB_SERVER_STORE_INDEX_H
#define TB_SERVER_STORE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/idmap.h"

typedef struct tb__sindex_entry_s {
  char *key;
  char *owner;            /* runs: the owner's name */
  uint64_t touched_ms;    /* runs: last_request_time last written */
  int fresh;              /* runs: created by this server, so what the
                             loop knows of it is all there is */
  tb__idmap_link_t link;  /* in the index, keyed by key */
} tb__sindex_entry_t;

/* A hash of strings; zeroed, it is empty. */
typedef struct tb__sindex_s {
  tb__idmap_t map;
} tb__sindex_t;

/* The entry of key, or NULL. */
tb__sindex_entry_t *tb__sindex_get(const tb__sindex_t *ix, tb_slice_t key);
/* Adds key (or finds it) and sets its owner (may be NULL); NULL on
 * ENOMEM. */
tb__sindex_entry_t *tb__sindex_put(tb__sindex_t *ix, const char *key, const char *owner);
void tb__sindex_del(tb__sindex_t *ix, const char *key);
/* Frees every entry; ix is empty after. */
void tb__sindex_free(tb__sindex_t *ix);

#endif /* TB_SERVER_STORE_INDEX_H */

/*
 * What the protobuf codecs share beyond the generated code (see proto.h).
 */
#include "wire/proto.h"

#include <stdlib.h>
#include <string.h>

#include "tinkerbell/error.h"

typedef struct map_key_s {
  const char *key;
  size_t pos;
} map_key_t;

/* By key, then by position: the last of equal keys sorts last. */
static int cmp_key(const void *a, const void *b) {
  const map_key_t *x = a, *y = b;
  int c = strcmp(x->key, y->key);
  if (c != 0)
    return c;
  return x->pos < y->pos ? -1 : x->pos > y->pos;
}

int tb__wire_proto_map_last(tb__arena_t *a, void **entries, size_t *n, size_t key_offset) {
  if (*n < 2)
    return 0;
  /* Sorted rather than compared pairwise: a body of a few megabytes can
   * hold a million entries. */
  map_key_t *keys = tb__arena_calloc(a, *n, sizeof(*keys));
  unsigned char *drop = tb__arena_calloc(a, *n, 1);
  if (keys == NULL || drop == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < *n; i++) {
    const char *k = *(const char **)((const char *)entries[i] + key_offset);
    keys[i].key = k != NULL ? k : "";
    keys[i].pos = i;
  }
  qsort(keys, *n, sizeof(*keys), cmp_key);
  for (size_t i = 0; i + 1 < *n; i++)
    if (strcmp(keys[i].key, keys[i + 1].key) == 0)
      drop[keys[i].pos] = 1;
  size_t m = 0;
  for (size_t i = 0; i < *n; i++)
    if (!drop[i])
      entries[m++] = entries[i];
  *n = m;
  return 0;
}

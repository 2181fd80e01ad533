/*
 * The generated protobuf-c declarations of the Tinker wire messages
 * (tinker_public.proto), for the codecs of both the server and the client,
 * and what those codecs share: the arena allocator, maps.
 */
#ifndef TB_WIRE_PROTO_H
#define TB_WIRE_PROTO_H

#include "tinker_public.pb-c.h"

#include <stddef.h>

#include "core/arena.h"

static inline void *tb__wire_arena_alloc(void *arena, size_t size) {
  return tb__arena_alloc(arena, size);
}

static inline void tb__wire_arena_free(void *arena, void *ptr) {
  (void)arena;
  (void)ptr; /* released with the arena */
}

/* A protobuf-c allocator drawing from a request's arena, so a decoded
 * message needs no free_unpacked: it goes with the arena. */
static inline ProtobufCAllocator tb__wire_proto_allocator(tb__arena_t *arena) {
  ProtobufCAllocator a = { tb__wire_arena_alloc, tb__wire_arena_free, arena };
  return a;
}

/* Protobuf maps travel as repeated key-value entries, and a key sent
 * twice means its last value (the protobuf rule, which protobuf-c leaves
 * to its caller).  Removes the earlier entries of every repeated key from
 * entries[0 .. *n), keeping the order of the rest, and updates *n.
 * key_offset is offsetof(<the entry type>, key).  0 or TB_ENOMEM. */
int tb__wire_proto_map_last(tb__arena_t *a, void **entries, size_t *n, size_t key_offset);

#define TB__WIRE_PROTO_MAP_LAST(a, entries, n, type) \
  tb__wire_proto_map_last((a), (void **)(entries), &(n), offsetof(type, key))

#endif /* TB_WIRE_PROTO_H */

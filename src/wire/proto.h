/*
 * The generated protobuf-c declarations of the Tinker wire messages
 * (tinker_public.proto), for the codecs of both the server and the client.
 */
#ifndef TB_WIRE_PROTO_H
#define TB_WIRE_PROTO_H

#include "tinker_public.pb-c.h"

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

#endif /* TB_WIRE_PROTO_H */

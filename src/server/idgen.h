/*
 * Identifiers that are unique and hard to guess: SipHash-2-4 of a counter
 * under a 128-bit key drawn from the system's random source when the
 * generator is set up.  Two hashes of the counter give 128 bits, printed
 * as 32 hex digits after a prefix ("req-", "sess-").  Without the key the
 * next id cannot be predicted from earlier ones; the caller still checks
 * its table for the (astronomically unlikely) collision.
 */
#ifndef TB_SERVER_IDGEN_H
#define TB_SERVER_IDGEN_H

#include <stdint.h>
#include <string.h>

#include <uv.h>

typedef struct tb__idgen_s {
  uint64_t key[2];
  uint64_t counter;
} tb__idgen_t;

#define TB__ID_HEX 32

static inline uint64_t tb__rotl64(uint64_t x, int b) {
  return (x << b) | (x >> (64 - b));
}

#define TB__SIPROUND                                                      \
  do {                                                                    \
    v0 += v1; v1 = tb__rotl64(v1, 13); v1 ^= v0; v0 = tb__rotl64(v0, 32); \
    v2 += v3; v3 = tb__rotl64(v3, 16); v3 ^= v2;                          \
    v0 += v3; v3 = tb__rotl64(v3, 21); v3 ^= v0;                          \
    v2 += v1; v1 = tb__rotl64(v1, 17); v1 ^= v2; v2 = tb__rotl64(v2, 32); \
  } while (0)

/* SipHash-2-4 of one 8-byte message. */
static inline uint64_t tb__siphash_u64(const uint64_t k[2], uint64_t m) {
  uint64_t v0 = 0x736f6d6570736575ULL ^ k[0];
  uint64_t v1 = 0x646f72616e646f6dULL ^ k[1];
  uint64_t v2 = 0x6c7967656e657261ULL ^ k[0];
  uint64_t v3 = 0x7465646279746573ULL ^ k[1];
  uint64_t b = (uint64_t)8 << 56;
  v3 ^= m;
  TB__SIPROUND;
  TB__SIPROUND;
  v0 ^= m;
  v3 ^= b;
  TB__SIPROUND;
  TB__SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  TB__SIPROUND;
  TB__SIPROUND;
  TB__SIPROUND;
  TB__SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* Draws the key.  The random source failing (no getrandom, no
 * /dev/urandom) is unusual enough that the clock and the generator's
 * address stand in, which still gives unique ids. */
static inline void tb__idgen_init(tb__idgen_t *g) {
  g->counter = 0;
  if (uv_random(NULL, NULL, g->key, sizeof(g->key), 0, NULL) != 0) {
    g->key[0] = uv_hrtime() ^ 0x9e3779b97f4a7c15ULL;
    g->key[1] = (uint64_t)(uintptr_t)g ^ (uv_hrtime() << 17);
  }
}

/* Writes prefix + 32 hex digits + NUL into out (room for strlen(prefix) +
 * 33 bytes) and returns the length. */
static inline size_t tb__idgen_next(tb__idgen_t *g, const char *prefix, char *out) {
  static const char hex[] = "0123456789abcdef";
  size_t n = strlen(prefix);
  memcpy(out, prefix, n);
  uint64_t c = g->counter++;
  uint64_t h[2] = { tb__siphash_u64(g->key, c << 1), tb__siphash_u64(g->key, (c << 1) | 1) };
  for (int w = 0; w < 2; w++)
    for (int i = 15; i >= 0; i--)
      out[n++] = hex[(h[w] >> (i * 4)) & 15];
  out[n] = '\0';
  return n;
}

#endif /* TB_SERVER_IDGEN_H */

/*
 * Little-endian loads and stores for the byte arrays of the protobuf
 * messages (tokens, tensors, offsets).  They do not assume alignment: a
 * bytes field can start anywhere in a message.
 */
#ifndef TB_WIRE_LE_H
#define TB_WIRE_LE_H

#include <stdint.h>
#include <string.h>

/* Whole arrays are copied with memcpy when encoding, which needs a
 * little-endian host: every platform this builds for is one. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the wire codecs assume a little-endian host");

static inline int64_t tb__le_i64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return (int64_t)v;
}

static inline int32_t tb__le_i32(const uint8_t *p) {
  return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                   (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static inline float tb__le_f32(const uint8_t *p) {
  uint32_t u = (uint32_t)tb__le_i32(p);
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

/* bfloat16 is the upper half of a float32. */
static inline float tb__le_bf16(const uint8_t *p) {
  uint32_t u = ((uint32_t)p[0] | (uint32_t)p[1] << 8) << 16;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

static inline void tb__le_put_i64(uint8_t *p, int64_t v) {
  uint64_t u = (uint64_t)v;
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(u >> (8 * i));
}

static inline void tb__le_put_i32(uint8_t *p, int32_t v) {
  uint32_t u = (uint32_t)v;
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(u >> (8 * i));
}

static inline void tb__le_put_f32(uint8_t *p, float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  tb__le_put_i32(p, (int32_t)u);
}

#endif /* TB_WIRE_LE_H */

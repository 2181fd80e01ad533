/*
 * Definitions every public Tinkerbell header shares: the export macro, the
 * version, and the slice type that carries bytes across module boundaries.
 */
#ifndef TINKERBELL_COMMON_H
#define TINKERBELL_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Only functions marked TB_EXTERN are exported from the shared library; the
 * build uses -fvisibility=hidden, as libuv does (uv.h). */
#if defined(TB_BUILDING_LIBRARY) && defined(__GNUC__)
# define TB_EXTERN __attribute__((visibility("default")))
#else
# define TB_EXTERN /* nothing */
#endif

#define TB_VERSION_MAJOR 0
#define TB_VERSION_MINOR 1
#define TB_VERSION_PATCH 0
#define TB_VERSION_STRING "0.1.0"

/* The library's version, "MAJOR.MINOR.PATCH" (TB_VERSION_STRING of the
 * build it was compiled from; compare with the header's to catch a
 * mismatched shared library). */
TB_EXTERN const char *tb_version_string(void);

/* A read-only view of bytes.  Not NUL-terminated unless said otherwise. */
typedef struct tb_slice_s {
  const char *base;
  size_t len;
} tb_slice_t;

#define TB_SLICE_LIT(s) ((tb_slice_t){ (s), sizeof(s) - 1 })

#ifdef __cplusplus
}
#endif
#endif /* TINKERBELL_COMMON_H */

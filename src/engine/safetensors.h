/*
 * The safetensors format: a memory-mapped reader (also over bytes in
 * memory) and an atomic writer.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 * ..., "__metadata__": {"key": "value"}}), then the data region that the
 * offsets index.  The reader maps the file, validates every entry against
 * the file's size before any tensor is touched, and converts F32, F16 and
 * BF16 tensors to float32; other dtypes are rejected by name.  A truncated
 * or corrupt file gives TB_ECORRUPT (or TB_EUNSUPPORTED for a dtype) with a
 * message naming the file and, when one is involved, the tensor.
 *
 * The writer emits tensors in the order given (F32, or rounded to F16 or
 * BF16 to nearest even, for tests and smaller files), with the header padded
 * by spaces so that the data region starts 8-byte aligned, through
 * tb__atomic_file_t (temporary name, fsync, rename, fsync of the directory).
 *
 * Little-endian hosts only (checked at compile time).  File I/O here is
 * synchronous by design: the engine calls these functions from threadpool
 * work items, never from the loop thread.
 */
#ifndef TB_ENGINE_SAFETENSORS_H
#define TB_ENGINE_SAFETENSORS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "tinkerbell/error.h"

#define TB_ST_MAX_DIMS 8
/* Headers larger than this are refused as corrupt (the reference
 * implementation's limit). */
#define TB_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

typedef enum { TB_ST_F32 = 0, TB_ST_F16, TB_ST_BF16 } tb__st_dtype_t;

typedef struct tb__st_tensor_s {
  const char *name;          /* owned by the file's header */
  tb__st_dtype_t dtype;
  int ndim;
  int64_t shape[TB_ST_MAX_DIMS];
  size_t numel;              /* product of shape (1 for a scalar) */
  const unsigned char *data; /* inside the mapping; not aligned */
  size_t nbytes;             /* numel * dtype size */
} tb__st_tensor_t;

typedef struct tb__st_file_s {
  char *path;
  void *map;                 /* NULL when opened over a buffer */
  size_t map_len;
  json_t *header;            /* keeps the names alive */
  tb__st_tensor_t *tensors;   /* sorted by name */
  size_t n_tensors;
} tb__st_file_t;

/* Size in bytes of one element; "F32", "F16", "BF16" names. */
size_t tb__st_dtype_size(tb__st_dtype_t dt);
const char *tb__st_dtype_name(tb__st_dtype_t dt);

/* Maps and validates a file.  On error f is left zeroed (no close needed).
 * Codes: the open error (TB_ENOENT, ...), TB_ECORRUPT, TB_EUNSUPPORTED,
 * TB_ENOMEM. */
int tb__st_open(tb__st_file_t *f, const char *path, tb_error_t *err);
/* The same over a file's bytes already in memory, which must stay valid
 * and unchanged until tb__st_close (the tensors point into them); name
 * stands for the path in messages. */
int tb__st_open_buffer(tb__st_file_t *f, const char *name, const void *data,
                       size_t len, tb_error_t *err);
/* Unmaps; safe on a zeroed or closed struct. */
void tb__st_close(tb__st_file_t *f);

/* The tensor with this name, or NULL. */
const tb__st_tensor_t *tb__st_find(const tb__st_file_t *f, const char *name);
/* A value of __metadata__, or NULL. */
const char *tb__st_metadata(const tb__st_file_t *f, const char *key);

/* Converts a tensor to float32 into dst, which holds exactly `numel`
 * floats (TB_ESHAPE naming the tensor when numel differs). */
int tb__st_read_f32(const tb__st_file_t *f, const tb__st_tensor_t *t,
                    float *dst, size_t numel, tb_error_t *err);

/* Gives back the memory the mapping holds for a tensor already read (its
 * pages, which a later read faults in again from the file), so a loader
 * that converts tensor by tensor holds at most one tensor of the file at
 * a time besides its own copy. */
void tb__st_release(const tb__st_file_t *f, const tb__st_tensor_t *t);

/* Scalar conversions, exact for every input (subnormals, infinities, NaN
 * payloads keep their meaning). */
float tb__f16_to_f32(uint16_t h);
float tb__bf16_to_f32(uint16_t b);

/* Rounding conversions to the 16-bit types, to nearest even (NaN stays a
 * quiet NaN, overflow of f16 gives infinity). */
uint16_t tb__f32_to_f16(float f);
uint16_t tb__f32_to_bf16(float f);

/* One tensor to write: float32 data of prod(shape) elements, stored as
 * dtype (F32 when the struct is zeroed). */
typedef struct tb__st_out_s {
  const char *name;
  int ndim;
  int64_t shape[TB_ST_MAX_DIMS];
  const float *data;
  tb__st_dtype_t dtype;
} tb__st_out_t;

/* Writes n tensors atomically.  metadata, when not NULL, is an object of
 * string values stored as __metadata__.  Codes: TB_EINVAL (bad name or
 * shape, duplicate name), I/O errors naming the file, TB_ENOMEM. */
int tb__st_write(const char *path, const tb__st_out_t *tensors, size_t n,
                 const json_t *metadata, tb_error_t *err);

/* Number of bytes tb__st_write produces for these tensors (for sharding). */
size_t tb__st_out_nbytes(const tb__st_out_t *t);

#endif /* TB_ENGINE_SAFETENSORS_H */

/*
 * safetensors reading (mmap, validated up front, pages given back tensor by
 * tensor) and atomic writing; see safetensors.h.
 *
 * The reader trusts nothing in the file: every size is checked against the
 * mapping with overflow-safe size_t arithmetic before a tensor is exposed,
 * so a caller can read any tensor the open call returned without further
 * bounds checks.  Non-goals: dtypes other than F32, F16 and BF16, and
 * big-endian hosts.
 */
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/file.h"
#include "core/json.h"
#include "engine/jsonfile.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; big-endian hosts are not supported"
#endif

size_t tb__st_dtype_size(tb__st_dtype_t dt) {
  return dt == TB_ST_F32 ? 4 : 2;
}

const char *tb__st_dtype_name(tb__st_dtype_t dt) {
  switch (dt) {
    case TB_ST_F32: return "F32";
    case TB_ST_F16: return "F16";
    case TB_ST_BF16: return "BF16";
  }
  return "?";
}

float tb__f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;  /* signed zero */
    } else {
      /* Subnormal half: value = mant * 2^-24.  Shift the mantissa up until
       * its leading one reaches the implicit-bit position, lowering the
       * exponent once per shift; every half subnormal is a normal float. */
      int e = -14;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        e--;
      }
      mant &= 0x3ffu;
      bits = sign | ((uint32_t)(e + 127) << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    /* Infinity or NaN; the payload moves up with the quiet bit in place. */
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f;
}

float tb__bf16_to_f32(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t tb__f32_to_bf16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((bits >> 16) | 0x40u);  /* quiet NaN, sign kept */
  uint32_t round = 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)((bits + round) >> 16);
}

uint16_t tb__f32_to_f16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof(bits));
  uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u)
    return (uint16_t)(sign | 0x7e00u);        /* NaN */
  if (abs >= 0x477ff000u)                     /* >= 65520: rounds past max */
    return (uint16_t)(sign | 0x7c00u);        /* infinity */
  if (abs < 0x38800000u) {                    /* below 2^-14: subnormal */
    if (abs < 0x33000000u)                    /* below 2^-25: rounds to 0 */
      return sign;
    uint32_t e = abs >> 23, mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                 /* 14..24: value mant >> shift */
    uint32_t half = mant >> shift;
    uint32_t rest = mant & ((1u << shift) - 1u), mid = 1u << (shift - 1);
    if (rest > mid || (rest == mid && (half & 1u)))
      half++;
    return (uint16_t)(sign | half);
  }
  /* Normal: rebias the exponent, round the 13 dropped bits to even; a
   * carry into the exponent is the right result. */
  uint32_t v = abs - ((uint32_t)(127 - 15) << 23);
  v += 0xfffu + ((v >> 13) & 1u);
  return (uint16_t)(sign | (v >> 13));
}

/* ------------------------------------------------------------------ reader */

static int corrupt(tb_error_t *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int corrupt(tb_error_t *err, const char *path, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = tb__vasprintf(fmt, ap);
  va_end(ap);
  int rc = tb_error_set(err, TB_ECORRUPT, TB_CATEGORY_USER, "%s: %s", path,
                        msg != NULL ? msg : "corrupt");
  free(msg);
  return rc;
}

static int parse_dtype(const char *s, tb__st_dtype_t *out) {
  if (strcmp(s, "F32") == 0) *out = TB_ST_F32;
  else if (strcmp(s, "F16") == 0) *out = TB_ST_F16;
  else if (strcmp(s, "BF16") == 0) *out = TB_ST_BF16;
  else return -1;
  return 0;
}

/* Reads one header entry into t; failures are recorded through the JSON
 * context (TB_EFIELD / TB_EUNSUPPORTED) and reworded by the caller. */
static int parse_entry(tb__jctx_t *c, const char *name, const json_t *v,
                       tb__st_tensor_t *t, uint64_t off[2]) {
  size_t mark = tb__jctx_push_key(c, name);
  int rc = tb__json_expect_object(c, v);
  tb_slice_t dt;
  json_t *shape, *offs;
  if (rc == 0)
    rc = tb__json_get_string(c, v, "dtype", TB_JSON_REQUIRED, &dt);
  if (rc == 0 && parse_dtype(dt.base, &t->dtype) != 0) {
    tb__jctx_fail_at(c, "dtype", "unsupported dtype \"%s\" (F32, F16 and "
                     "BF16 are supported)", dt.base);
    if (c->err != NULL)
      c->err->code = TB_EUNSUPPORTED;
    rc = TB_EUNSUPPORTED;
  }
  if (rc == 0)
    rc = tb__json_get_array(c, v, "shape", TB_JSON_REQUIRED, &shape);
  if (rc == 0 && json_array_size(shape) > TB_ST_MAX_DIMS)
    rc = tb__jctx_fail_at(c, "shape", "more than %d dimensions",
                          TB_ST_MAX_DIMS);
  size_t numel = 1;
  if (rc == 0) {
    t->ndim = (int)json_array_size(shape);
    size_t m2 = tb__jctx_push_key(c, "shape");
    for (size_t i = 0; rc == 0 && i < json_array_size(shape); i++) {
      int64_t d;
      size_t m3 = tb__jctx_push_index(c, i);
      rc = tb__json_as_int(c, json_array_get(shape, i), 0,
                           (int64_t)1 << 48, &d);
      tb__jctx_pop(c, m3);
      if (rc != 0)
        break;
      t->shape[i] = d;
      if (d != 0 && numel > SIZE_MAX / (size_t)d) {
        rc = tb__jctx_fail(c, "element count overflows");
        break;
      }
      numel *= (size_t)d;
    }
    tb__jctx_pop(c, m2);
  }
  if (rc == 0)
    rc = tb__json_get_array(c, v, "data_offsets", TB_JSON_REQUIRED, &offs);
  if (rc == 0 && json_array_size(offs) != 2)
    rc = tb__jctx_fail_at(c, "data_offsets", "expected [begin, end]");
  for (size_t i = 0; rc == 0 && i < 2; i++) {
    int64_t o;
    size_t m2 = tb__jctx_push_key(c, "data_offsets");
    size_t m3 = tb__jctx_push_index(c, i);
    rc = tb__json_as_int(c, json_array_get(offs, i), 0, INT64_MAX, &o);
    tb__jctx_pop(c, m3);
    tb__jctx_pop(c, m2);
    off[i] = (uint64_t)o;
  }
  tb__jctx_pop(c, mark);
  if (rc == 0) {
    t->name = name;
    t->numel = numel;
    if (numel > SIZE_MAX / 4)
      return tb__jctx_fail(c, "%s: element count overflows", name);
    t->nbytes = numel * tb__st_dtype_size(t->dtype);
  }
  return rc;
}

static int cmp_offset(const void *a, const void *b) {
  const tb__st_tensor_t *x = a, *y = b;
  if (x->data != y->data)
    return x->data < y->data ? -1 : 1;
  return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int cmp_name(const void *a, const void *b) {
  const tb__st_tensor_t *x = a, *y = b;
  return strcmp(x->name, y->name);
}

static int validate_header(tb__st_file_t *f, const unsigned char *data,
                           size_t data_len, tb_error_t *err) {
  tb__jctx_t c;
  tb__jctx_init(&c, err);
  if (!json_is_object(f->header))
    return corrupt(err, f->path, "header is %s, not an object",
                   tb__json_type_name(f->header));
  size_t n = json_object_size(f->header);
  f->tensors = calloc(n == 0 ? 1 : n, sizeof(*f->tensors));
  if (f->tensors == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "%s: out of memory", f->path);
  const char *key;
  json_t *v;
  json_object_foreach(f->header, key, v) {
    if (strcmp(key, "__metadata__") == 0) {
      const char *mk;
      json_t *mv;
      if (!json_is_object(v))
        return corrupt(err, f->path, "header: __metadata__ is %s, not an "
                       "object", tb__json_type_name(v));
      json_object_foreach(v, mk, mv) {
        if (!json_is_string(mv))
          return corrupt(err, f->path, "header: __metadata__.%s is %s, not "
                         "a string", mk, tb__json_type_name(mv));
      }
      continue;
    }
    tb__st_tensor_t *t = &f->tensors[f->n_tensors];
    uint64_t off[2];
    int rc = parse_entry(&c, key, v, t, off);
    if (rc != 0) {
      tb__error_prefix(err, "header");
      if (rc != TB_EUNSUPPORTED && err != NULL)
        err->code = TB_ECORRUPT;
      tb__error_prefix(err, f->path);
      return rc == TB_EUNSUPPORTED ? rc : TB_ECORRUPT;
    }
    if (off[0] > off[1])
      return corrupt(err, f->path, "tensor %s: data_offsets [%llu, %llu] "
                     "are reversed", key, (unsigned long long)off[0],
                     (unsigned long long)off[1]);
    if (off[1] > (uint64_t)data_len)
      return corrupt(err, f->path, "tensor %s: data_offsets end %llu is "
                     "past the end of the data (%zu bytes; file truncated?)",
                     key, (unsigned long long)off[1], data_len);
    if (off[1] - off[0] != (uint64_t)t->nbytes)
      return corrupt(err, f->path, "tensor %s: data_offsets span %llu "
                     "bytes but shape and dtype %s need %zu", key,
                     (unsigned long long)(off[1] - off[0]),
                     tb__st_dtype_name(t->dtype), t->nbytes);
    t->data = data + off[0];
    f->n_tensors++;
  }
  /* No two tensors may share bytes. */
  qsort(f->tensors, f->n_tensors, sizeof(*f->tensors), cmp_offset);
  for (size_t i = 1; i < f->n_tensors; i++) {
    const tb__st_tensor_t *a = &f->tensors[i - 1], *b = &f->tensors[i];
    if (a->data + a->nbytes > b->data && b->nbytes > 0)
      return corrupt(err, f->path, "tensors %s and %s overlap", a->name,
                     b->name);
  }
  qsort(f->tensors, f->n_tensors, sizeof(*f->tensors), cmp_name);
  return 0;
}

/* Reads the header and the tensor index of bytes[0 .. size), which f's
 * tensors then point into; f->path names them in messages. */
static int parse(tb__st_file_t *f, const unsigned char *p, size_t size,
                 tb_error_t *err) {
  const char *path = f->path;
  if (size < 8)
    return corrupt(err, path, "file is %zu bytes, too short for the 8-byte "
                   "header length (truncated?)", size);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | p[i];
  if (hlen == 0 || hlen > TB_ST_MAX_HEADER || hlen > (uint64_t)(size - 8))
    return corrupt(err, path, "header length %llu does not fit the file "
                   "(%zu bytes; limit %llu; truncated or not safetensors?)",
                   (unsigned long long)hlen, size,
                   (unsigned long long)TB_ST_MAX_HEADER);
  json_error_t je;
  f->header = json_loadb((const char *)p + 8, (size_t)hlen,
                         JSON_REJECT_DUPLICATES, &je);
  if (f->header == NULL)
    return corrupt(err, path, "header is not valid JSON (line %d column %d: "
                   "%s)", je.line, je.column, je.text);
  size_t base = 8 + (size_t)hlen;
  return validate_header(f, p + base, size - base, err);
}

int tb__st_open(tb__st_file_t *f, const char *path, tb_error_t *err) {
  memset(f, 0, sizeof(*f));
  f->path = tb__strndup(path, strlen(path));
  if (f->path == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  int rc = 0;
  int fd = tb__open_regular(path);
  if (fd == TB_EINVAL) {
    rc = tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                      "%s: not a regular file", path);
    goto fail;
  }
  if (fd < 0) {
    rc = tb_error_set(err, fd, TB_CATEGORY_USER, "%s: cannot open: %s",
                      path, strerror(-fd));
    goto fail;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    rc = tb_error_set(err, tb__errno_code(e), TB_CATEGORY_USER,
                      "%s: cannot stat: %s", path, strerror(e));
    goto fail;
  }
  size_t size = (size_t)st.st_size;
  if (size < 8) {
    close(fd);
    rc = parse(f, NULL, size, err);  /* too short to map: says so */
    goto fail;
  }
  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  if (map == MAP_FAILED) {
    rc = tb_error_set(err, tb__errno_code(e), TB_CATEGORY_SERVER,
                      "%s: mmap failed: %s", path, strerror(e));
    goto fail;
  }
  f->map = map;
  f->map_len = size;
  rc = parse(f, map, size, err);
  if (rc != 0)
    goto fail;
  return 0;

fail:
  tb__st_close(f);
  return rc;
}

int tb__st_open_buffer(tb__st_file_t *f, const char *name, const void *data,
                       size_t len, tb_error_t *err) {
  memset(f, 0, sizeof(*f));
  f->path = tb__strndup(name, strlen(name));
  if (f->path == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  int rc = parse(f, data, len, err);
  if (rc != 0)
    tb__st_close(f);
  return rc;
}

void tb__st_close(tb__st_file_t *f) {
  if (f->map != NULL)
    munmap(f->map, f->map_len);
  if (f->header != NULL)
    json_decref(f->header);
  free(f->tensors);
  free(f->path);
  memset(f, 0, sizeof(*f));
}

const tb__st_tensor_t *tb__st_find(const tb__st_file_t *f, const char *name) {
  tb__st_tensor_t key;
  memset(&key, 0, sizeof(key));
  key.name = name;
  if (f->n_tensors == 0)
    return NULL;
  return bsearch(&key, f->tensors, f->n_tensors, sizeof(key), cmp_name);
}

const char *tb__st_metadata(const tb__st_file_t *f, const char *key) {
  json_t *m = json_object_get(f->header, "__metadata__");
  return json_string_value(json_object_get(m, key));
}

int tb__st_read_f32(const tb__st_file_t *f, const tb__st_tensor_t *t,
                    float *dst, size_t numel, tb_error_t *err) {
  if (numel != t->numel)
    return tb_error_set(err, TB_ESHAPE, TB_CATEGORY_USER,
                        "%s: tensor %s has %zu elements, expected %zu",
                        f->path, t->name, t->numel, numel);
  const unsigned char *s = t->data;
  switch (t->dtype) {
    case TB_ST_F32:
      if (numel > 0)
        memcpy(dst, s, numel * sizeof(float));
      break;
    case TB_ST_F16:
      for (size_t i = 0; i < numel; i++)
        dst[i] = tb__f16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
      break;
    case TB_ST_BF16:
      for (size_t i = 0; i < numel; i++)
        dst[i] = tb__bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
      break;
  }
  return 0;
}

void tb__st_release(const tb__st_file_t *f, const tb__st_tensor_t *t) {
  if (f->map == NULL || t->nbytes == 0)
    return;
  /* Whole pages only, rounded outwards: a page shared with a neighbour is
   * simply read again if that tensor is read later. */
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t lo = (uintptr_t)t->data & ~(page - 1);
  uintptr_t hi = ((uintptr_t)t->data + t->nbytes + page - 1) & ~(page - 1);
  uintptr_t map_hi = (uintptr_t)f->map + f->map_len;
  if (hi > ((map_hi + page - 1) & ~(page - 1)))
    hi = (map_hi + page - 1) & ~(page - 1);
  (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* ------------------------------------------------------------------ writer */

size_t tb__st_out_nbytes(const tb__st_out_t *t) {
  size_t n = 1;
  for (int d = 0; d < t->ndim; d++)
    n *= (size_t)t->shape[d];
  return n * tb__st_dtype_size(t->dtype);
}

static int build_header(const char *path, const tb__st_out_t *tensors,
                        size_t n, const json_t *metadata, tb__buf_t *out,
                        tb_error_t *err) {
  json_t *h = json_object();
  int rc = h == NULL ? TB_ENOMEM : 0;
  if (rc == 0 && metadata != NULL) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)metadata, k, v) {
      if (!json_is_string(v)) {
        json_decref(h);
        return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                            "%s: metadata value %s is not a string", path, k);
      }
    }
    rc = json_object_set(h, "__metadata__", (json_t *)metadata) ? TB_ENOMEM
                                                                : 0;
  }
  uint64_t off = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const tb__st_out_t *t = &tensors[i];
    if (t->name == NULL || t->name[0] == '\0' ||
        strcmp(t->name, "__metadata__") == 0 ||
        json_object_get(h, t->name) != NULL || t->ndim < 0 ||
        t->ndim > TB_ST_MAX_DIMS) {
      json_decref(h);
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "%s: tensor %zu: empty, reserved or duplicate name "
                          "\"%s\", or bad rank", path, i,
                          t->name ? t->name : "");
    }
    json_t *shape = json_array();
    rc = shape == NULL ? TB_ENOMEM : 0;
    for (int d = 0; rc == 0 && d < t->ndim; d++) {
      if (t->shape[d] < 0) {
        json_decref(shape);
        json_decref(h);
        return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                            "%s: tensor %s: negative dimension", path,
                            t->name);
      }
      rc = json_array_append_new(shape, json_integer(t->shape[d])) ? TB_ENOMEM
                                                                   : 0;
    }
    uint64_t end = off + (uint64_t)tb__st_out_nbytes(t);
    json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype",
                          tb__st_dtype_name(t->dtype), "shape",
                          shape, "data_offsets", (json_int_t)off,
                          (json_int_t)end);
    if (rc == 0 && (e == NULL || json_object_set_new(h, t->name, e) != 0))
      rc = TB_ENOMEM;
    off = end;
  }
  char *text = rc == 0 ? json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER)
                       : NULL;
  json_decref(h);
  if (text == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "%s: out of memory", path);
  size_t len = strlen(text);
  size_t pad = (8 - (8 + len) % 8) % 8;
  unsigned char lenbytes[8];
  uint64_t hl = (uint64_t)(len + pad);
  for (int i = 0; i < 8; i++)
    lenbytes[i] = (unsigned char)(hl >> (8 * i));
  rc = tb__buf_append(out, lenbytes, 8);
  if (rc == 0)
    rc = tb__buf_append(out, text, len);
  if (rc == 0)
    rc = tb__buf_append(out, "        ", pad);
  free(text);
  if (rc != 0)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "%s: out of memory", path);
  return 0;
}

int tb__st_write(const char *path, const tb__st_out_t *tensors, size_t n,
                 const json_t *metadata, tb_error_t *err) {
  tb__buf_t head = TB_BUF_INIT;
  int rc = build_header(path, tensors, n, metadata, &head, err);
  if (rc != 0) {
    tb__buf_free(&head);
    return rc;
  }
  tb__atomic_file_t f;
  rc = tb__atomic_open(&f, path, err);
  if (rc == 0)
    rc = tb__atomic_write(&f, head.base, head.len, err);
  tb__buf_free(&head);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const tb__st_out_t *t = &tensors[i];
    size_t nb = tb__st_out_nbytes(t);
    if (nb > 0 && t->dtype == TB_ST_F32) {
      rc = tb__atomic_write(&f, t->data, nb, err);
      continue;
    }
    /* 16-bit types: converted through a small buffer. */
    uint16_t chunk[4096];
    size_t numel = nb / 2;
    for (size_t j = 0; rc == 0 && j < numel; j += 4096) {
      size_t m = numel - j < 4096 ? numel - j : 4096;
      for (size_t k = 0; k < m; k++)
        chunk[k] = t->dtype == TB_ST_BF16 ? tb__f32_to_bf16(t->data[j + k])
                                          : tb__f32_to_f16(t->data[j + k]);
      rc = tb__atomic_write(&f, chunk, m * 2, err);
    }
  }
  if (rc != 0) {
    tb__atomic_abort(&f);
    return rc;
  }
  return tb__atomic_commit(&f, err);
}

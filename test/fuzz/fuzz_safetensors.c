/*
 * Fuzz target: the safetensors reader (src/engine/safetensors.c) over a
 * file's bytes in memory: the header length, the JSON header, every
 * entry checked against the data region, the tensor index.
 *
 * Input: the file.  What opens must hold what the reader promises its
 * callers: every tensor is found by its name, its bytes lie inside the
 * file, no two tensors share bytes, and each converts to float32 (as the
 * model loader then does).  What fails must say why.
 */
#include "fuzz.h"

#include <string.h>

#include "core/log.h"
#include "engine/safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  tb__log_set_level(TB_LOG_OFF);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tb__st_file_t f;
  tb_error_t err = { 0 };
  int rc = tb__st_open_buffer(&f, "model.safetensors", data, size, &err);
  if (rc != 0) {
    FUZZ_CHECK(rc == TB_ECORRUPT || rc == TB_EUNSUPPORTED || rc == TB_ENOMEM,
               "open failed with %d", rc);
    FUZZ_CHECK(err.code == rc && err.message != NULL, "open failed (%d) without "
               "saying why", rc);
    tb_error_clear(&err);
    return 0;
  }
  const unsigned char *begin = data, *end = data + size;
  for (size_t i = 0; i < f.n_tensors; i++) {
    const tb__st_tensor_t *t = &f.tensors[i];
    FUZZ_CHECK(tb__st_find(&f, t->name) == t, "tensor %s is not found by name",
               t->name);
    FUZZ_CHECK(t->ndim >= 0 && t->ndim <= TB_ST_MAX_DIMS, "rank %d", t->ndim);
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++)
      numel *= (size_t)t->shape[d];
    FUZZ_CHECK(numel == t->numel, "tensor %s: numel %zu, shape says %zu", t->name,
               t->numel, numel);
    FUZZ_CHECK(t->nbytes == t->numel * tb__st_dtype_size(t->dtype),
               "tensor %s: %zu bytes", t->name, t->nbytes);
    FUZZ_CHECK(t->data >= begin && t->nbytes <= (size_t)(end - t->data),
               "tensor %s lies outside the file", t->name);
    if (i > 0)
      FUZZ_CHECK(strcmp(f.tensors[i - 1].name, t->name) < 0,
                 "the index is not sorted by name");
    float *dst = malloc((t->numel ? t->numel : 1) * sizeof(float));
    FUZZ_CHECK(dst != NULL, "out of memory for %zu floats", t->numel);
    rc = tb__st_read_f32(&f, t, dst, t->numel, &err);
    FUZZ_CHECK(rc == 0, "tensor %s does not convert: %s", t->name,
               tb_error_message(&err));
    if (t->numel > 0) {
      rc = tb__st_read_f32(&f, t, dst, t->numel - 1, &err);
      FUZZ_CHECK(rc == TB_ESHAPE, "a wrong element count was accepted");
      tb_error_clear(&err);
    }
    free(dst);
  }
  /* No two tensors share bytes: check pairwise over the (small) index. */
  for (size_t i = 0; i < f.n_tensors && i < 256; i++)
    for (size_t j = i + 1; j < f.n_tensors && j < 256; j++) {
      const tb__st_tensor_t *a = &f.tensors[i], *b = &f.tensors[j];
      if (a->nbytes == 0 || b->nbytes == 0)
        continue;
      FUZZ_CHECK(a->data + a->nbytes <= b->data || b->data + b->nbytes <= a->data,
                 "tensors %s and %s overlap", a->name, b->name);
    }
  (void)tb__st_metadata(&f, "format");
  tb__st_close(&f);
  return 0;
}

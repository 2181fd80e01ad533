/*
 * Huge-page-advised buffers (see bigmem.h).
 */
#include "engine/bigmem.h"

#include <stdlib.h>
#include <sys/mman.h>

void *tb__big_alloc(size_t bytes) {
  if (bytes < TB__BIGMEM_MIN)
    return calloc(1, bytes ? bytes : 1);
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
#ifdef MADV_HUGEPAGE
  (void)madvise(p, bytes, MADV_HUGEPAGE);  /* advice: ignored if refused */
#endif
  return p;
}

void tb__big_free(void *p, size_t bytes) {
  if (p == NULL)
    return;
  if (bytes < TB__BIGMEM_MIN)
    free(p);
  else
    munmap(p, bytes);
}

/*
 * Zero-filled memory for the engine's large float buffers (base weights,
 * activations, adapter state), in transparent huge pages where the kernel
 * offers them.
 *
 * OpenBLAS packs each weight panel by reading a few floats from each of
 * many rows: with 4 KiB pages a (1536, 576) matrix spans 864 pages and the
 * packing walks the TLB; 2 MiB pages cover it with two entries.  Debian's
 * default leaves huge pages to madvise(MADV_HUGEPAGE), which is what this
 * asks for; where it is refused the memory is ordinary pages.  Buffers
 * below TB__BIGMEM_MIN come from calloc.
 */
#ifndef TB_ENGINE_BIGMEM_H
#define TB_ENGINE_BIGMEM_H

#include <stddef.h>

#define TB__BIGMEM_MIN ((size_t)4 << 20)

/* bytes of zeroes, or NULL when out of memory. */
void *tb__big_alloc(size_t bytes);
/* Releases p (NULL is fine); bytes must be what tb__big_alloc was given. */
void tb__big_free(void *p, size_t bytes);

#endif /* TB_ENGINE_BIGMEM_H */

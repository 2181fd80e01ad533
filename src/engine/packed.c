/*
 * Frozen matrices packed once, on oneDNN's matmul (see packed.h).
 *
 * oneDNN chooses the packed layout of a matmul's weights when they are
 * declared "any"; a matrix is reordered into that layout on its first
 * product and kept.  Each later product asks oneDNN for the primitive of
 * its shape (oneDNN caches them, so this costs microseconds) and runs it
 * only when the primitive wants exactly the layout that was kept.  Any
 * failure sends the product to OpenBLAS, so packing can make a product
 * faster but never make it fail.
 */
#include "engine/packed.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "kernels/kernels.h"

/* OpenBLAS's backward always accumulates: an overwrite starts from zero. */
static void blas_backward_input(float *dx, const float *dy, const float *W,
                                int accumulate, size_t T, size_t K, size_t N) {
  if (!accumulate)
    tb__k_zero(dx, T * K);
  tb__k_linear_backward_input(dx, dy, W, T, K, N);
}

#ifdef TB_HAVE_ONEDNN

#include <oneapi/dnnl/dnnl.h>
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
#include <omp.h>
#endif

enum { ROLE_FORWARD, ROLE_BACKWARD, ROLES };
enum { PACK_OFF = -1, PACK_NONE = 0, PACK_READY = 1 };

typedef struct {
  int state;                /* PACK_*; read with acquire ordering */
  const float *src;         /* the matrix it was packed from */
  dnnl_memory_desc_t md;    /* the layout the products want */
  dnnl_memory_t mem;
  size_t bytes;
} entry_t;

struct tb__packed_s {
  uv_mutex_t lock;          /* serialises packing; products never take it */
  size_t slots;
  entry_t e[];              /* slots * ROLES */
};

static dnnl_engine_t engine;
static int engine_ok;
static uv_once_t engine_once = UV_ONCE_INIT;

static void engine_init(void) {
  const char *env = getenv("TINKERBELL_PACKED_WEIGHTS");
  if (env != NULL && strcmp(env, "0") == 0)
    return;
  engine_ok = dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success;
}

int tb__packed_available(void) {
  uv_once(&engine_once, engine_init);
  return engine_ok;
}

/* oneDNN sizes its parallel regions by OpenMP's thread count.  A work item
 * is one core's share of the work, so the product runs on the calling
 * thread alone and OpenMP never starts a team. */
static void one_thread(void) {
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
  if (omp_get_max_threads() != 1)
    omp_set_num_threads(1);
#endif
}

static void dims2(dnnl_dims_t d, size_t rows, size_t cols) {
  d[0] = (dnnl_dim_t)rows;
  d[1] = (dnnl_dim_t)cols;
}

/* The matmul C (T, Np) (+)= A (T, Kp) B with B (Kp, Np) in the layout
 * oneDNN prefers; NULL when oneDNN has none for this shape. */
static dnnl_primitive_desc_t product_desc(size_t T, size_t Kp, size_t Np,
                                          int accumulate) {
  dnnl_memory_desc_t a, b, c;
  dnnl_dims_t ad, bd, cd;
  dims2(ad, T, Kp);
  dims2(bd, Kp, Np);
  dims2(cd, T, Np);
  dnnl_matmul_desc_t md;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  if (dnnl_memory_desc_init_by_tag(&a, 2, ad, dnnl_f32, dnnl_ab) ||
      dnnl_memory_desc_init_by_tag(&b, 2, bd, dnnl_f32, dnnl_format_tag_any) ||
      dnnl_memory_desc_init_by_tag(&c, 2, cd, dnnl_f32, dnnl_ab) ||
      dnnl_matmul_desc_init(&md, &a, &b, NULL, &c) ||
      dnnl_primitive_attr_create(&attr))
    return NULL;
  /* A user scratchpad lets two threads run one primitive at once. */
  int bad = dnnl_primitive_attr_set_scratchpad_mode(attr,
                                                    dnnl_scratchpad_mode_user);
  if (!bad && accumulate)
    bad = dnnl_post_ops_create(&po) || dnnl_post_ops_append_sum(po, 1.0f) ||
          dnnl_primitive_attr_set_post_ops(attr, po);
  if (!bad && dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL))
    pd = NULL;
  if (po != NULL)
    dnnl_post_ops_destroy(po);
  dnnl_primitive_attr_destroy(attr);
  return pd;
}

static int run(dnnl_primitive_t prim, int nargs, const dnnl_exec_arg_t *args) {
  dnnl_stream_t s;
  if (dnnl_stream_create(&s, engine, dnnl_stream_default_flags))
    return -1;
  int rc = dnnl_primitive_execute(prim, s, nargs, args) || dnnl_stream_wait(s);
  dnnl_stream_destroy(s);
  return rc ? -1 : 0;
}

/* Reorders W into the layout the product of T rows wants, filling e's
 * fields; PACK_READY, or PACK_OFF when OpenBLAS should keep the products.
 * The forward role reads W (N, K) as B = W^T (K, N): the same bytes, dims
 * swapped. */
static int pack(entry_t *e, const float *W, int role, size_t T, size_t Kp,
                size_t Np) {
  dnnl_primitive_desc_t pd = product_desc(T, Kp, Np, 0);
  if (pd == NULL)
    return PACK_OFF;
  const char *impl = "";
  dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
  e->md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  dnnl_primitive_desc_destroy(pd);

  dnnl_memory_desc_t plain;
  dnnl_dims_t bd;
  dims2(bd, Kp, Np);
  if (dnnl_memory_desc_init_by_tag(&plain, 2, bd, dnnl_f32,
                                   role == ROLE_FORWARD ? dnnl_ba : dnnl_ab))
    return PACK_OFF;
  /* A reference kernel, or one that reads W as it is, gains nothing over
   * OpenBLAS. */
  if (strncmp(impl, "ref", 3) == 0 || dnnl_memory_desc_equal(&e->md, &plain))
    return PACK_OFF;

  dnnl_memory_t from = NULL, to = NULL;
  dnnl_primitive_desc_t rpd = NULL;
  dnnl_primitive_t reorder = NULL;
  int rc = -1;
  if (dnnl_memory_create(&from, &plain, engine, (void *)W) == dnnl_success &&
      dnnl_memory_create(&to, &e->md, engine, DNNL_MEMORY_ALLOCATE) ==
          dnnl_success &&
      dnnl_reorder_primitive_desc_create(&rpd, &plain, engine, &e->md, engine,
                                         NULL) == dnnl_success &&
      dnnl_primitive_create(&reorder, rpd) == dnnl_success) {
    dnnl_exec_arg_t args[] = { { DNNL_ARG_FROM, from }, { DNNL_ARG_TO, to } };
    rc = run(reorder, 2, args);
  }
  if (reorder != NULL)
    dnnl_primitive_destroy(reorder);
  if (rpd != NULL)
    dnnl_primitive_desc_destroy(rpd);
  if (from != NULL)
    dnnl_memory_destroy(from);
  if (rc != 0) {
    if (to != NULL)
      dnnl_memory_destroy(to);
    return PACK_OFF;
  }
  e->src = W;
  e->mem = to;
  e->bytes = dnnl_memory_desc_get_size(&e->md);
  return PACK_READY;
}

/* The entry of slot's matrix in this role, packed on first use; NULL when
 * the product should go to OpenBLAS. */
static const entry_t *entry_for(tb__packed_t *p, size_t slot, int role,
                                const float *W, size_t T, size_t Kp,
                                size_t Np) {
  if (p == NULL || slot >= p->slots || T < TB__PACKED_MIN_ROWS)
    return NULL;
  entry_t *e = &p->e[slot * ROLES + role];
  int state = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
  if (state == PACK_NONE) {
    one_thread();
    uv_mutex_lock(&p->lock);
    /* Readers look at the fields only after seeing PACK_READY, which is
     * stored after them. */
    if (e->state == PACK_NONE)
      __atomic_store_n(&e->state, pack(e, W, role, T, Kp, Np),
                       __ATOMIC_RELEASE);
    state = e->state;
    uv_mutex_unlock(&p->lock);
  }
  /* A slot always names the same matrix; anything else is a caller's bug,
   * answered correctly by OpenBLAS. */
  return state == PACK_READY && e->src == W ? e : NULL;
}

/* C (T, Np) (+)= A (T, Kp) B with B packed in e; 0 when done, -1 when the
 * caller should use OpenBLAS.  oneDNN checks its arguments before it
 * writes C, so a failed call leaves C as it was. */
static int apply(const entry_t *e, float *c, const float *a, size_t T,
                 size_t Kp, size_t Np, int accumulate) {
  one_thread();
  dnnl_primitive_desc_t pd = product_desc(T, Kp, Np, accumulate);
  if (pd == NULL)
    return -1;
  int rc = -1;
  dnnl_primitive_t prim = NULL;
  dnnl_memory_t ma = NULL, mc = NULL, ms = NULL;
  void *scratch = NULL;
  const dnnl_memory_desc_t *want =
      dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *smd =
      dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  size_t sbytes = smd != NULL ? dnnl_memory_desc_get_size(smd) : 0;
  if (!dnnl_memory_desc_equal(want, &e->md))
    goto out;
  if (sbytes > 0 && (scratch = aligned_alloc(64, (sbytes + 63) / 64 * 64)) == NULL)
    goto out;
  const dnnl_memory_desc_t *amd =
      dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
  const dnnl_memory_desc_t *cmd =
      dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  if (dnnl_primitive_create(&prim, pd) ||
      dnnl_memory_create(&ma, amd, engine, (void *)a) ||
      dnnl_memory_create(&mc, cmd, engine, c) ||
      (sbytes > 0 && dnnl_memory_create(&ms, smd, engine, scratch)))
    goto out;
  dnnl_exec_arg_t args[] = { { DNNL_ARG_SRC, ma },
                             { DNNL_ARG_WEIGHTS, e->mem },
                             { DNNL_ARG_DST, mc },
                             { DNNL_ARG_SCRATCHPAD, ms } };
  rc = run(prim, sbytes > 0 ? 4 : 3, args);
out:
  if (ms != NULL)
    dnnl_memory_destroy(ms);
  if (mc != NULL)
    dnnl_memory_destroy(mc);
  if (ma != NULL)
    dnnl_memory_destroy(ma);
  if (prim != NULL)
    dnnl_primitive_destroy(prim);
  free(scratch);
  dnnl_primitive_desc_destroy(pd);
  return rc;
}

tb__packed_t *tb__packed_new(size_t slots) {
  if (!tb__packed_available() || slots == 0)
    return NULL;
  tb__packed_t *p = calloc(1, sizeof(*p) + slots * ROLES * sizeof(entry_t));
  if (p == NULL)
    return NULL;
  if (uv_mutex_init(&p->lock) != 0) {
    free(p);
    return NULL;
  }
  p->slots = slots;
  return p;
}

void tb__packed_free(tb__packed_t *p) {
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->slots * ROLES; i++)
    if (p->e[i].state == PACK_READY)
      dnnl_memory_destroy(p->e[i].mem);
  uv_mutex_destroy(&p->lock);
  free(p);
}

size_t tb__packed_count(const tb__packed_t *p, size_t *bytes) {
  size_t n = 0, b = 0;
  for (size_t i = 0; p != NULL && i < p->slots * ROLES; i++)
    if (__atomic_load_n(&p->e[i].state, __ATOMIC_ACQUIRE) == PACK_READY) {
      n++;
      b += p->e[i].bytes;
    }
  if (bytes != NULL)
    *bytes = b;
  return n;
}

void tb__packed_forward(tb__packed_t *p, size_t slot, float *y, const float *x,
                        const float *W, int accumulate, size_t T, size_t K,
                        size_t N) {
  const entry_t *e = entry_for(p, slot, ROLE_FORWARD, W, T, K, N);
  if (e == NULL || apply(e, y, x, T, K, N, accumulate) != 0)
    tb__k_linear_forward(y, x, W, accumulate, T, K, N);
}

void tb__packed_backward_input(tb__packed_t *p, size_t slot, float *dx,
                               const float *dy, const float *W, int accumulate,
                               size_t T, size_t K, size_t N) {
  const entry_t *e = entry_for(p, slot, ROLE_BACKWARD, W, T, N, K);
  if (e == NULL || apply(e, dx, dy, T, N, K, accumulate) != 0)
    blas_backward_input(dx, dy, W, accumulate, T, K, N);
}

#else /* no oneDNN in this build: every product is OpenBLAS's */

tb__packed_t *tb__packed_new(size_t slots) {
  (void)slots;
  return NULL;
}

void tb__packed_free(tb__packed_t *p) { (void)p; }

int tb__packed_available(void) { return 0; }

size_t tb__packed_count(const tb__packed_t *p, size_t *bytes) {
  (void)p;
  if (bytes != NULL)
    *bytes = 0;
  return 0;
}

void tb__packed_forward(tb__packed_t *p, size_t slot, float *y, const float *x,
                        const float *W, int accumulate, size_t T, size_t K,
                        size_t N) {
  (void)p;
  (void)slot;
  tb__k_linear_forward(y, x, W, accumulate, T, K, N);
}

void tb__packed_backward_input(tb__packed_t *p, size_t slot, float *dx,
                               const float *dy, const float *W, int accumulate,
                               size_t T, size_t K, size_t N) {
  (void)p;
  (void)slot;
  blas_backward_input(dx, dy, W, accumulate, T, K, N);
}

#endif

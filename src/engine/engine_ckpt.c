/*
 * Adapter checkpoints for the engine (see engine_ckpt.h): converts the
 * engine's tensor list to checkpoint.h's and checks that a checkpoint
 * fits the adapter it is loaded into.
 */
#include "engine/engine_ckpt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/checkpoint.h"

static int oom(tb_error_t *err) {
  return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
}

/* The PEFT module names of the adapter's targets, in layout order. */
static size_t target_names(const tb__eng_ckpt_meta_t *m, char **out) {
  size_t n = 0;
  for (int t = 0; t < TB_LORA_NTARGETS; t++) {
    int on = t <= TB_LORA_O ? m->train_attn
           : t == TB_LORA_UNEMBED ? m->train_unembed : m->train_mlp;
    if (on)
      out[n++] = (char *)tb__lora_target_module((tb__lora_target_t)t);
  }
  return n;
}

static tb__ckpt_tensor_t *to_ckpt(const tb__eng_tensor_t *t, size_t n) {
  tb__ckpt_tensor_t *c = calloc(n ? n : 1, sizeof(*c));
  for (size_t i = 0; c != NULL && i < n; i++) {
    c[i].name = t[i].name;
    c[i].ndim = 2;
    c[i].shape[0] = t[i].shape[0];
    c[i].shape[1] = t[i].shape[1];
    c[i].data = t[i].data;
    c[i].adam_m = t[i].adam_m;
    c[i].adam_v = t[i].adam_v;
  }
  return c;
}

int tb__eng_ckpt_save(const char *dir, const tb__eng_tensor_t *t, size_t n,
                      const tb__eng_ckpt_meta_t *meta, int flags,
                      tb_error_t *err) {
  char *targets[TB_LORA_NTARGETS];
  tb__ckpt_info_t info;
  memset(&info, 0, sizeof(info));
  info.rank = meta->rank;
  info.alpha = meta->alpha;
  info.targets = targets;
  info.n_targets = target_names(meta, targets);
  info.base_model = (char *)meta->base_model;
  info.step = meta->step;
  tb__ckpt_tensor_t *c = to_ckpt(t, n);
  if (c == NULL)
    return oom(err);
  int rc;
  if (flags & TB__ENG_CKPT_SAMPLER)
    rc = tb__peft_export(dir, c, n, &info, err);
  else
    rc = tb__ckpt_save(dir, c, n, &info,
                       (flags & TB__ENG_CKPT_OPTIMIZER) ? TB_CKPT_OPTIMIZER
                                                        : 0, err);
  free(c);
  return rc;
}

/* The checkpoint must describe the same adapter layout: the tensor check
 * of tb__ckpt_load catches a different rank or target set by shape or
 * name, but not a different alpha, which would silently rescale B. */
static int check_meta(const char *dir, const tb__ckpt_info_t *info,
                      const tb__eng_ckpt_meta_t *meta, tb_error_t *err) {
  char *want[TB_LORA_NTARGETS];
  size_t nw = target_names(meta, want);
  if (info->rank != meta->rank)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "%s: checkpoint has rank %d, the adapter rank %d",
                        dir, info->rank, meta->rank);
  if (fabs(info->alpha - meta->alpha) > 1e-6 * fabs(meta->alpha))
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "%s: checkpoint has lora_alpha %g, the adapter %g",
                        dir, info->alpha, meta->alpha);
  int same = info->n_targets == nw;
  for (size_t i = 0; same && i < nw; i++) {
    int found = 0;
    for (size_t j = 0; j < info->n_targets && !found; j++)
      found = strcmp(info->targets[j], want[i]) == 0;
    same = found;
  }
  if (!same)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "%s: checkpoint targets other modules than the "
                        "adapter", dir);
  return 0;
}

int tb__eng_ckpt_load(const char *dir, const tb__eng_tensor_t *t, size_t n,
                      const tb__eng_ckpt_meta_t *meta, int flags,
                      int64_t *step, tb_error_t *err) {
  tb__ckpt_info_t info;
  memset(&info, 0, sizeof(info));
  int rc = tb__ckpt_read_info(dir, &info, err);
  if (rc == 0)
    rc = check_meta(dir, &info, meta, err);
  tb__ckpt_info_free(&info);
  if (rc != 0)
    return rc;
  tb__ckpt_tensor_t *c = to_ckpt(t, n);
  if (c == NULL)
    return oom(err);
  rc = tb__ckpt_load(dir, c, n,
                     (flags & TB__ENG_CKPT_OPTIMIZER) ? TB_CKPT_OPTIMIZER : 0,
                     &info, err);
  free(c);
  if (rc == 0)
    *step = info.step;
  tb__ckpt_info_free(&info);
  return rc;
}

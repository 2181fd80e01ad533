/*
 * Adapter checkpoints and the PEFT layout (see checkpoint.h).
 *
 * Non-goals: incremental or partial checkpoints, and cleaning up temporary
 * directories that a crashed process left behind (they are inert: no load
 * ever opens them).
 */
#define _GNU_SOURCE  /* renameat2 */
#include "engine/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/json.h"
#include "engine/jsonfile.h"

void (*tb__ckpt_test_hook)(const char *stage) = NULL;

#define CKPT_FORMAT "tinkerbell-lora-checkpoint"
#define CKPT_VERSION 1

/* ------------------------------------------------------------ PEFT names */

static const char *const modules[TB_LORA_NTARGETS] = {
  "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
  "down_proj", "lm_head",
};

const char *tb__lora_target_module(tb__lora_target_t t) {
  return (unsigned)t < TB_LORA_NTARGETS ? modules[t] : NULL;
}

int tb__lora_target_from_module(const char *module) {
  for (int i = 0; i < TB_LORA_NTARGETS; i++)
    if (strcmp(module, modules[i]) == 0)
      return i;
  return -1;
}

void tb__lora_target_dims(const tb__model_config_t *c, tb__lora_target_t t,
                          int64_t *in, int64_t *out) {
  int64_t C = c->hidden_size, I = c->intermediate_size;
  int64_t q = (int64_t)c->num_heads * c->head_dim;
  int64_t kv = (int64_t)c->num_kv_heads * c->head_dim;
  switch (t) {
    case TB_LORA_Q: *in = C; *out = q; break;
    case TB_LORA_K:
    case TB_LORA_V: *in = C; *out = kv; break;
    case TB_LORA_O: *in = q; *out = C; break;
    case TB_LORA_GATE:
    case TB_LORA_UP: *in = C; *out = I; break;
    case TB_LORA_DOWN: *in = I; *out = C; break;
    default: *in = C; *out = c->vocab_size; break;
  }
}

static const char *block_of(tb__lora_target_t t) {
  return t <= TB_LORA_O ? "self_attn" : "mlp";
}

int tb__peft_tensor_name(char *buf, size_t cap, int layer,
                         tb__lora_target_t t, int is_b) {
  if ((unsigned)t >= TB_LORA_NTARGETS)
    return TB_EINVAL;
  int n;
  if (t == TB_LORA_UNEMBED)
    n = snprintf(buf, cap, "base_model.model.lm_head.lora_%c.weight",
                 is_b ? 'B' : 'A');
  else
    n = snprintf(buf, cap, "base_model.model.model.layers.%d.%s.%s.lora_%c"
                 ".weight", layer, block_of(t), modules[t], is_b ? 'B' : 'A');
  return n < 0 || (size_t)n >= cap ? TB_EINVAL : 0;
}

int tb__peft_parse_name(const char *name, int *layer, tb__lora_target_t *t,
                        int *is_b) {
  static const char layers[] = "base_model.model.model.layers.";
  int l = 0;
  const char *p;
  if (strncmp(name, layers, sizeof(layers) - 1) == 0) {
    p = name + sizeof(layers) - 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.'))
      return TB_EINVAL;
    while (*p >= '0' && *p <= '9') {
      if (l > 100000)
        return TB_EINVAL;
      l = l * 10 + (*p++ - '0');
    }
  } else {
    p = NULL;
  }
  for (int k = 0; k < TB_LORA_NTARGETS; k++) {
    for (int b = 0; b < 2; b++) {
      char want[256];
      if (tb__peft_tensor_name(want, sizeof(want), l, (tb__lora_target_t)k,
                               b) != 0)
        return TB_EINVAL;
      if (strcmp(name, want) == 0 && (k == TB_LORA_UNEMBED) == (p == NULL)) {
        *layer = k == TB_LORA_UNEMBED ? 0 : l;
        *t = (tb__lora_target_t)k;
        *is_b = b;
        return 0;
      }
    }
  }
  return TB_EINVAL;
}

/* ------------------------------------------------------------ helpers */

static int oom(tb_error_t *err) {
  return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
}

static void hook(const char *stage) {
  if (tb__ckpt_test_hook != NULL)
    tb__ckpt_test_hook(stage);
}

void tb__ckpt_info_free(tb__ckpt_info_t *info) {
  for (size_t i = 0; i < info->n_targets; i++)
    free(info->targets[i]);
  free(info->targets);
  free(info->base_model);
  memset(info, 0, sizeof(*info));
}

static size_t numel_of(const tb__ckpt_tensor_t *t) {
  size_t n = 1;
  for (int d = 0; d < t->ndim; d++)
    n *= (size_t)t->shape[d];
  return n;
}

static void to_out(const tb__ckpt_tensor_t *t, const char *name,
                   const float *data, tb__st_out_t *o) {
  memset(o, 0, sizeof(*o));
  o->name = name;
  o->ndim = t->ndim;
  memcpy(o->shape, t->shape, sizeof(o->shape));
  o->data = data;
}

static json_t *number(double v) {
  /* PEFT's lora_alpha is an int in most configs: keep integral values
   * integral. */
  if (v == floor(v) && fabs(v) < 1e15)
    return json_integer((json_int_t)v);
  return json_real(v);
}

static json_t *targets_json(const tb__ckpt_info_t *info) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < info->n_targets; i++)
    if (json_array_append_new(a, json_string(info->targets[i])) != 0) {
      json_decref(a);
      return NULL;
    }
  return a;
}

static json_t *peft_config_json(const tb__ckpt_info_t *info) {
  json_t *targets = targets_json(info);
  if (targets == NULL)
    return NULL;
  return json_pack(
      "{s:s, s:s, s:s?, s:i, s:o, s:o, s:f, s:s, s:b, s:b, s:b, s:n, s:b, "
      "s:b, s:n}",
      "peft_type", "LORA", "task_type", "CAUSAL_LM",
      "base_model_name_or_path", info->base_model, "r", info->rank,
      "lora_alpha", number(info->alpha), "target_modules", targets,
      "lora_dropout", 0.0, "bias", "none", "fan_in_fan_out", 0,
      "inference_mode", 1, "init_lora_weights", 1, "modules_to_save",
      "use_rslora", 0, "use_dora", 0, "layers_to_transform");
}

static json_t *meta_json(const tb__ckpt_info_t *info, int64_t created,
                         int has_optimizer, size_t n_tensors) {
  char iso[32];
  time_t tt = (time_t)created;
  struct tm tm;
  gmtime_r(&tt, &tm);
  strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
  json_t *targets = targets_json(info);
  if (targets == NULL)
    return NULL;
  return json_pack("{s:s, s:i, s:i, s:o, s:o, s:s?, s:I, s:s, s:I, s:b, "
                   "s:I}",
                   "format", CKPT_FORMAT, "version", CKPT_VERSION, "rank",
                   info->rank, "alpha", number(info->alpha), "targets",
                   targets, "base_model", info->base_model, "step",
                   (json_int_t)info->step, "created", iso, "created_unix",
                   (json_int_t)created, "has_optimizer", has_optimizer,
                   "tensors", (json_int_t)n_tensors);
}

/* ------------------------------------------------------------ directories */

/* Removes the regular files in dir and dir itself (one level: our
 * checkpoint directories hold no subdirectories). */
static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d != NULL) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      (void)unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
  }
  (void)rmdir(dir);
}

static int sys_error(tb_error_t *err, const char *what, const char *path) {
  int e = errno;
  return tb_error_set(err, tb__errno_code(e), TB_CATEGORY_SERVER,
                      "%s: %s: %s", path, what, strerror(e));
}

/* A fresh hidden sibling of `dir` named ".<base>.<tag>-XXXXXX". */
static char *sibling_template(const char *dir, const char *tag) {
  char *parent = tb__path_dir(dir);
  const char *slash = strrchr(dir, '/');
  const char *base = slash != NULL ? slash + 1 : dir;
  char *name = parent != NULL ? tb__asprintf(".%s.%s-XXXXXX", base, tag)
                              : NULL;
  char *full = name != NULL ? tb__path_join(parent, name) : NULL;
  free(parent);
  free(name);
  return full;
}

/* Moves the complete temporary directory into place at dir. */
static int commit_dir(const char *tmp, const char *dir, tb_error_t *err) {
  int rc = tb__fsync_dir(tmp, err);
  if (rc != 0)
    return rc;
  hook("rename");
  if (rename(tmp, dir) != 0) {
    if (errno != EEXIST && errno != ENOTEMPTY && errno != ENOTDIR)
      return sys_error(err, "cannot rename checkpoint into place", dir);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
      return tb_error_set(err, TB_EEXIST, TB_CATEGORY_USER,
                          "%s: exists and is not a checkpoint directory",
                          dir);
    /* Swap with the old checkpoint in one step where the file system can;
     * afterwards tmp names the old one. */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS)
        return sys_error(err, "cannot exchange checkpoint", dir);
      /* No exchange here: move the old one aside first.  A crash between
       * the two renames leaves the complete new checkpoint under its
       * temporary name and none under dir, never a partial one. */
      char *old = sibling_template(dir, "old");
      if (old == NULL)
        return oom(err);
      if (mkdtemp(old) == NULL || rmdir(old) != 0 || rename(dir, old) != 0) {
        rc = sys_error(err, "cannot move old checkpoint aside", dir);
        free(old);
        return rc;
      }
      if (rename(tmp, dir) != 0) {
        rc = sys_error(err, "cannot rename checkpoint into place", dir);
        (void)rename(old, dir);
        free(old);
        return rc;
      }
      remove_dir(old);
      free(old);
    } else {
      remove_dir(tmp);
    }
  }
  char *parent = tb__path_dir(dir);
  if (parent == NULL)
    return oom(err);
  rc = tb__fsync_dir(parent, err);
  free(parent);
  return rc;
}

typedef struct {
  const tb__ckpt_tensor_t *tensors;
  size_t n;
  const tb__ckpt_info_t *info;
  int flags;
  int peft_only;
} save_req_t;

static int write_weights(const char *tmp, const save_req_t *r,
                         tb_error_t *err) {
  tb__st_out_t *outs = calloc(r->n + 1, sizeof(*outs));
  json_t *meta = json_pack("{s:s}", "format", "pt");
  char *path = tb__path_join(tmp, TB_CKPT_WEIGHTS);
  int rc = 0;
  if (outs == NULL || meta == NULL || path == NULL) {
    rc = oom(err);
  } else {
    for (size_t i = 0; i < r->n; i++)
      to_out(&r->tensors[i], r->tensors[i].name, r->tensors[i].data,
             &outs[i]);
    rc = tb__st_write(path, outs, r->n, meta, err);
  }
  free(outs);
  json_decref(meta);
  free(path);
  if (rc == 0)
    hook(TB_CKPT_WEIGHTS);
  return rc;
}

static int write_optimizer(const char *tmp, const save_req_t *r,
                           tb_error_t *err) {
  tb__st_out_t *outs = calloc(2 * r->n + 1, sizeof(*outs));
  char **names = calloc(2 * r->n + 1, sizeof(*names));
  char *path = tb__path_join(tmp, TB_CKPT_OPTIMIZER_FILE);
  int rc = outs == NULL || names == NULL || path == NULL ? oom(err) : 0;
  for (size_t i = 0; rc == 0 && i < r->n; i++) {
    const tb__ckpt_tensor_t *t = &r->tensors[i];
    names[2 * i] = tb__asprintf("%s.exp_avg", t->name);
    names[2 * i + 1] = tb__asprintf("%s.exp_avg_sq", t->name);
    if (names[2 * i] == NULL || names[2 * i + 1] == NULL) {
      rc = oom(err);
      break;
    }
    to_out(t, names[2 * i], t->adam_m, &outs[2 * i]);
    to_out(t, names[2 * i + 1], t->adam_v, &outs[2 * i + 1]);
  }
  if (rc == 0)
    rc = tb__st_write(path, outs, 2 * r->n, NULL, err);
  for (size_t i = 0; names != NULL && i < 2 * r->n; i++)
    free(names[i]);
  free(names);
  free(outs);
  free(path);
  if (rc == 0)
    hook(TB_CKPT_OPTIMIZER_FILE);
  return rc;
}

static int write_json(const char *tmp, const char *name, json_t *v,
                      tb_error_t *err) {
  char *path = tb__path_join(tmp, name);
  int rc = v == NULL || path == NULL ? oom(err)
                                     : tb__json_write_file(path, v, err);
  free(path);
  json_decref(v);
  if (rc == 0)
    hook(name);
  return rc;
}

static int check_list(const save_req_t *r, tb_error_t *err) {
  if (r->info->rank <= 0)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "checkpoint: rank must be positive");
  for (size_t i = 0; i < r->n; i++) {
    const tb__ckpt_tensor_t *t = &r->tensors[i];
    if (t->name == NULL || t->data == NULL || t->ndim < 1 ||
        t->ndim > TB_ST_MAX_DIMS)
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "checkpoint: tensor %zu (%s) has no name, no data "
                          "or a bad rank", i, t->name ? t->name : "?");
    if ((r->flags & TB_CKPT_OPTIMIZER) &&
        (t->adam_m == NULL || t->adam_v == NULL))
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "checkpoint: tensor %s has no optimizer state",
                          t->name);
    for (int d = 0; d < t->ndim; d++)
      if (t->shape[d] < 0)
        return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                            "checkpoint: tensor %s: negative dimension",
                            t->name);
  }
  return 0;
}

static int save_dir(const char *dir_in, const save_req_t *r,
                    tb_error_t *err) {
  int rc = check_list(r, err);
  if (rc != 0)
    return rc;
  /* "ckpt/" names the same directory as "ckpt"; without the slash the
   * temporary sibling lands next to it rather than inside it. */
  size_t len = strlen(dir_in);
  while (len > 1 && dir_in[len - 1] == '/')
    len--;
  char *dir = tb__strndup(dir_in, len);
  char *tmp = dir != NULL ? sibling_template(dir, "tmp") : NULL;
  if (tmp == NULL) {
    free(dir);
    return oom(err);
  }
  if (mkdtemp(tmp) == NULL) {
    rc = sys_error(err, "cannot create temporary directory for", dir);
    free(tmp);
    free(dir);
    return rc;
  }
  (void)chmod(tmp, 0755);
  int64_t created = r->info->created != 0 ? r->info->created
                                          : (int64_t)time(NULL);
  int opt = (r->flags & TB_CKPT_OPTIMIZER) != 0;
  rc = write_weights(tmp, r, err);
  if (rc == 0 && opt && !r->peft_only)
    rc = write_optimizer(tmp, r, err);
  if (rc == 0)
    rc = write_json(tmp, TB_CKPT_PEFT_CONFIG, peft_config_json(r->info), err);
  /* checkpoint.json goes last: it is what makes a directory a training
   * checkpoint (tb__ckpt_read_info). */
  if (rc == 0 && !r->peft_only)
    rc = write_json(tmp, TB_CKPT_META,
                    meta_json(r->info, created, opt, r->n), err);
  if (rc == 0)
    rc = commit_dir(tmp, dir, err);
  if (rc != 0)
    remove_dir(tmp);
  free(tmp);
  free(dir);
  return rc;
}

/* The kind of a crash leftover ".<name>.<tag>-XXXXXX" of sibling_template,
 * with the length of <name>: 't' (tmp), 'o' (old) or 0 for any other name. */
static int leftover_kind(const char *entry, size_t *name_len) {
  size_t len = strlen(entry);
  if (len < 1 + 1 + 5 + 6 || entry[0] != '.')
    return 0;
  const char *x = entry + len - 6;
  for (size_t i = 0; i < 6; i++) {
    char c = x[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
      return 0;
  }
  const char *tag = x - 5;
  int kind = memcmp(tag, ".tmp-", 5) == 0 ? 't' : memcmp(tag, ".old-", 5) == 0 ? 'o' : 0;
  *name_len = (size_t)(tag - entry) - 1;
  return *name_len > 0 ? kind : 0;
}

static int changed_before(const struct stat *st, const struct timespec *t) {
  return st->st_ctim.tv_sec < t->tv_sec ||
         (st->st_ctim.tv_sec == t->tv_sec && st->st_ctim.tv_nsec < t->tv_nsec);
}

int tb__ckpt_sweep(const char *dir, const struct timespec *before, size_t *removed,
                   size_t *restored) {
  /* Two passes: an old checkpoint goes back before the temporaries of
   * its name go, which keeps a crash during the sweep itself harmless. */
  for (int pass = 0; pass < 2; pass++) {
    DIR *d = opendir(dir);
    if (d == NULL)
      return -errno;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      size_t name_len;
      int kind = leftover_kind(e->d_name, &name_len);
      if (kind != (pass == 0 ? 'o' : 't'))
        continue;
      struct stat st;
      if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
          !S_ISDIR(st.st_mode) || !changed_before(&st, before))
        continue;
      char *path = tb__path_join(dir, e->d_name);
      char *name = tb__strndup(e->d_name + 1, name_len);
      char *final = name != NULL ? tb__path_join(dir, name) : NULL;
      struct stat fs;
      if (path != NULL && final != NULL && kind == 'o' &&
          lstat(final, &fs) != 0 && errno == ENOENT && rename(path, final) == 0) {
        (*restored)++;
      } else if (path != NULL) {
        remove_dir(path);
        if (access(path, F_OK) != 0)
          (*removed)++;
      }
      free(path);
      free(name);
      free(final);
    }
    closedir(d);
  }
  return 0;
}

int tb__ckpt_save(const char *dir, const tb__ckpt_tensor_t *tensors,
                  size_t n, const tb__ckpt_info_t *info, int flags,
                  tb_error_t *err) {
  save_req_t r = { tensors, n, info, flags, 0 };
  return save_dir(dir, &r, err);
}

int tb__peft_export(const char *dir, const tb__ckpt_tensor_t *tensors,
                    size_t n, const tb__ckpt_info_t *info, tb_error_t *err) {
  /* Each A must have its B with a matching rank; remember which we saw. */
  for (size_t i = 0; i < n; i++) {
    const tb__ckpt_tensor_t *t = &tensors[i];
    int layer, is_b;
    tb__lora_target_t tgt;
    if (t->name == NULL ||
        tb__peft_parse_name(t->name, &layer, &tgt, &is_b) != 0)
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "%s: tensor %s is not a PEFT LoRA name", dir,
                          t->name ? t->name : "?");
    int64_t r_dim = is_b ? t->shape[1] : t->shape[0];
    if (t->ndim != 2 || r_dim != info->rank)
      return tb_error_set(err, TB_ESHAPE, TB_CATEGORY_USER,
                          "%s: tensor %s must be 2-D with rank %d on its %s "
                          "axis", dir, t->name, info->rank,
                          is_b ? "second" : "first");
    char other[256];
    tb__peft_tensor_name(other, sizeof(other), layer, tgt, !is_b);
    int found = 0;
    for (size_t j = 0; j < n && !found; j++)
      found = tensors[j].name != NULL && strcmp(tensors[j].name, other) == 0;
    if (!found)
      return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                          "%s: tensor %s has no matching %s", dir, t->name,
                          other);
  }
  save_req_t r = { tensors, n, info, 0, 1 };
  return save_dir(dir, &r, err);
}

/* ------------------------------------------------------------ loading */

static int read_targets(tb__jctx_t *c, const json_t *obj, const char *key,
                        tb__ckpt_info_t *info) {
  json_t *a;
  int rc = tb__json_get_array(c, obj, key, TB_JSON_REQUIRED, &a);
  if (rc != 0)
    return rc;
  info->targets = calloc(json_array_size(a) + 1, sizeof(char *));
  if (info->targets == NULL)
    return oom(c->err);
  for (size_t i = 0; i < json_array_size(a); i++) {
    const char *s = json_string_value(json_array_get(a, i));
    if (s == NULL) {
      size_t m = tb__jctx_push_key(c, key);
      tb__jctx_push_index(c, i);
      rc = tb__jctx_fail(c, "expected a module name");
      tb__jctx_pop(c, m);
      return rc;
    }
    info->targets[i] = tb__strndup(s, strlen(s));
    if (info->targets[i] == NULL)
      return oom(c->err);
    info->n_targets++;
  }
  return 0;
}

static int parse_info(const json_t *root, int peft, tb__ckpt_info_t *info,
                      tb_error_t *err) {
  tb__jctx_t c;
  tb__jctx_init(&c, err);
  int64_t rank = 0, step = 0, created = 0;
  double alpha = 0;
  tb_slice_t s;
  int rc = tb__json_expect_object(&c, root);
  if (!peft) {
    if (rc >= 0) {
      rc = tb__json_get_string(&c, root, "format", TB_JSON_REQUIRED, &s);
      if (rc == 0 && !tb__slice_eq_str(s, CKPT_FORMAT))
        rc = tb__jctx_fail_at(&c, "format", "expected \"%s\"", CKPT_FORMAT);
    }
    int64_t version;
    if (rc >= 0)
      rc = tb__json_get_int(&c, root, "version", TB_JSON_REQUIRED, 1,
                            CKPT_VERSION, &version);
    if (rc >= 0)
      rc = tb__json_get_int(&c, root, "rank", TB_JSON_REQUIRED, 1, 1 << 20,
                            &rank);
    if (rc >= 0)
      rc = tb__json_get_double(&c, root, "alpha", TB_JSON_REQUIRED, &alpha);
    if (rc >= 0) rc = read_targets(&c, root, "targets", info);
    if (rc >= 0)
      rc = tb__json_get_int(&c, root, "step", TB_JSON_REQUIRED, 0, INT64_MAX,
                            &step);
    if (rc >= 0)
      rc = tb__json_get_int(&c, root, "created_unix", TB_JSON_OPTIONAL, 0,
                            INT64_MAX, &created);
    if (rc >= 0)
      rc = tb__json_get_bool(&c, root, "has_optimizer", TB_JSON_REQUIRED,
                             &info->has_optimizer);
    if (rc >= 0)
      rc = tb__json_get_string(&c, root, "base_model", TB_JSON_OPTIONAL, &s);
  } else {
    if (rc >= 0) {
      rc = tb__json_get_string(&c, root, "peft_type", TB_JSON_REQUIRED, &s);
      if (rc == 0 && !tb__slice_eq_str(s, "LORA"))
        rc = tb__jctx_fail_at(&c, "peft_type", "expected \"LORA\"");
    }
    if (rc >= 0)
      rc = tb__json_get_int(&c, root, "r", TB_JSON_REQUIRED, 1, 1 << 20,
                            &rank);
    if (rc >= 0)
      rc = tb__json_get_double(&c, root, "lora_alpha", TB_JSON_REQUIRED,
                               &alpha);
    if (rc >= 0) rc = read_targets(&c, root, "target_modules", info);
    if (rc >= 0)
      rc = tb__json_get_string(&c, root, "base_model_name_or_path",
                               TB_JSON_OPTIONAL, &s);
  }
  if (rc < 0)
    return rc;
  if (rc == 0) {
    info->base_model = tb__strndup(s.base, s.len);
    if (info->base_model == NULL)
      return oom(err);
  }
  info->rank = (int)rank;
  info->alpha = alpha;
  info->step = step;
  info->created = created;
  return 0;
}

/* The rank a checkpoint's metadata states must be the rank of its tensors:
 * an adapter of that rank is allocated from it before any tensor is read,
 * and the tensors are what the file's bytes back (the safetensors reader
 * checks every size against them), so a lying number cannot ask for more
 * memory than the checkpoint holds. */
static int check_rank(const char *dir, const tb__ckpt_info_t *info, tb_error_t *err) {
  char *path = tb__path_join(dir, TB_CKPT_WEIGHTS);
  if (path == NULL)
    return oom(err);
  tb__st_file_t f;
  int rc = tb__st_open(&f, path, err);
  size_t n_lora = 0;
  for (size_t i = 0; rc == 0 && i < f.n_tensors; i++) {
    const tb__st_tensor_t *t = &f.tensors[i];
    int layer, is_b;
    tb__lora_target_t tgt;
    if (tb__peft_parse_name(t->name, &layer, &tgt, &is_b) != 0)
      continue;
    n_lora++;
    int64_t r = t->ndim == 2 ? t->shape[is_b ? 1 : 0] : -1;
    if (r != info->rank)
      rc = tb_error_set(err, TB_ESHAPE, TB_CATEGORY_USER,
                        "%s: tensor %s has rank %lld, but the checkpoint's "
                        "metadata says %d", path, t->name, (long long)r,
                        info->rank);
  }
  if (rc == 0 && n_lora == 0)
    rc = tb_error_set(err, TB_ESHAPE, TB_CATEGORY_USER,
                      "%s: holds no LoRA tensors", path);
  tb__st_close(&f);
  free(path);
  return rc;
}

int tb__ckpt_read_info(const char *dir, tb__ckpt_info_t *info,
                       tb_error_t *err) {
  memset(info, 0, sizeof(*info));
  char *meta = tb__path_join(dir, TB_CKPT_META);
  char *peft = tb__path_join(dir, TB_CKPT_PEFT_CONFIG);
  int rc = meta == NULL || peft == NULL ? oom(err) : 0;
  struct stat st;
  const char *path = NULL;
  int is_peft = 0;
  if (rc == 0) {
    if (stat(meta, &st) == 0) {
      path = meta;
    } else if (stat(peft, &st) == 0) {
      path = peft;
      is_peft = 1;
    } else {
      rc = tb_error_set(err, TB_ENOENT, TB_CATEGORY_USER,
                        "%s: not a checkpoint (no %s or %s)", dir,
                        TB_CKPT_META, TB_CKPT_PEFT_CONFIG);
    }
  }
  json_t *root = NULL;
  if (rc == 0)
    rc = tb__json_read_file(path, &root, err);
  if (rc == 0) {
    rc = parse_info(root, is_peft, info, err);
    if (rc != 0 && rc != TB_ENOMEM)
      tb__error_prefix(err, path);
  }
  if (rc == 0)
    rc = check_rank(dir, info, err);
  json_decref(root);
  free(meta);
  free(peft);
  if (rc != 0)
    tb__ckpt_info_free(info);
  return rc;
}

/* Reads `name` (with the shape of t) from f into dst. */
static int load_one(const tb__st_file_t *f, const char *name,
                    const tb__ckpt_tensor_t *t, float *dst, tb_error_t *err) {
  const tb__st_tensor_t *s = tb__st_find(f, name);
  if (s == NULL)
    return tb_error_set(err, TB_ENOENT, TB_CATEGORY_USER,
                        "%s: tensor %s is missing", f->path, name);
  int same = s->ndim == t->ndim;
  for (int d = 0; same && d < t->ndim; d++)
    same = s->shape[d] == t->shape[d];
  if (!same) {
    char got[96] = "", want[96] = "";
    size_t a = 0, b = 0;
    for (int d = 0; d < s->ndim && a < sizeof(got); d++)
      a += (size_t)snprintf(got + a, sizeof(got) - a, d ? ", %lld" : "%lld",
                            (long long)s->shape[d]);
    for (int d = 0; d < t->ndim && b < sizeof(want); d++)
      b += (size_t)snprintf(want + b, sizeof(want) - b,
                            d ? ", %lld" : "%lld", (long long)t->shape[d]);
    return tb_error_set(err, TB_ESHAPE, TB_CATEGORY_USER,
                        "%s: tensor %s has shape [%s], expected [%s]",
                        f->path, name, got, want);
  }
  return tb__st_read_f32(f, s, dst, numel_of(t), err);
}

/* Every tensor in f must be one the caller expects: its names, or with
 * `moments` its names plus ".exp_avg" / ".exp_avg_sq". */
static int check_no_extra(const tb__st_file_t *f, int moments,
                          const tb__ckpt_tensor_t *ts, size_t n,
                          tb_error_t *err) {
  for (size_t i = 0; i < f->n_tensors; i++) {
    const char *nm = f->tensors[i].name;
    int known = 0;
    for (size_t j = 0; j < n && !known; j++) {
      size_t len = strlen(ts[j].name);
      if (strncmp(nm, ts[j].name, len) != 0)
        continue;
      if (moments)
        known = strcmp(nm + len, ".exp_avg") == 0 ||
                strcmp(nm + len, ".exp_avg_sq") == 0;
      else
        known = nm[len] == '\0';
    }
    if (!known)
      return tb_error_set(err, TB_ESHAPE, TB_CATEGORY_USER,
                          "%s: tensor %s is not part of the adapter layout",
                          f->path, nm);
  }
  return 0;
}

int tb__ckpt_load(const char *dir, const tb__ckpt_tensor_t *expected,
                  size_t n, int flags, tb__ckpt_info_t *info_out,
                  tb_error_t *err) {
  tb__ckpt_info_t info;
  int rc = tb__ckpt_read_info(dir, &info, err);
  if (rc != 0)
    return rc;
  tb__st_file_t f;
  memset(&f, 0, sizeof(f));
  char *path = tb__path_join(dir, TB_CKPT_WEIGHTS);
  rc = path == NULL ? oom(err) : tb__st_open(&f, path, err);
  free(path);
  if (rc == 0)
    rc = check_no_extra(&f, 0, expected, n, err);
  for (size_t i = 0; rc == 0 && i < n; i++)
    rc = load_one(&f, expected[i].name, &expected[i], expected[i].data, err);
  tb__st_close(&f);
  if (rc == 0 && (flags & TB_CKPT_OPTIMIZER)) {
    if (!info.has_optimizer) {
      rc = tb_error_set(err, TB_ENOENT, TB_CATEGORY_USER,
                        "%s: checkpoint has no optimizer state", dir);
    } else {
      path = tb__path_join(dir, TB_CKPT_OPTIMIZER_FILE);
      rc = path == NULL ? oom(err) : tb__st_open(&f, path, err);
      free(path);
      if (rc == 0)
        rc = check_no_extra(&f, 1, expected, n, err);
      for (size_t i = 0; rc == 0 && i < n; i++) {
        char *m = tb__asprintf("%s.exp_avg", expected[i].name);
        char *v = tb__asprintf("%s.exp_avg_sq", expected[i].name);
        if (m == NULL || v == NULL)
          rc = oom(err);
        if (rc == 0)
          rc = load_one(&f, m, &expected[i], expected[i].adam_m, err);
        if (rc == 0)
          rc = load_one(&f, v, &expected[i], expected[i].adam_v, err);
        free(m);
        free(v);
      }
      tb__st_close(&f);
    }
  }
  if (rc == 0 && info_out != NULL) {
    *info_out = info;
    return 0;
  }
  tb__ckpt_info_free(&info);
  return rc;
}

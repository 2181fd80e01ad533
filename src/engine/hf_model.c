/*
 * Hugging Face directory loader and writer (see hf_model.h); config.json
 * itself is hf_config.c's.
 *
 * The loader lists the tensors the config declares, in tb__weights_t
 * storage order, finds each one by its Hugging Face name (in the single
 * file, or through the index's weight_map in its shard) and checks its
 * shape exactly, and refuses tensors the config does not declare; only
 * then does it allocate, and convert tensor by tensor into the storage.
 * Non-goals: quantised tensors, and tokenizer files.
 */
#include "engine/hf_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/json.h"
#include "engine/jsonfile.h"
#include "engine/safetensors.h"

/* ------------------------------------------------------------ tensor names */

size_t tb__hf_tensor_count(const tb__model_config_t *c) {
  size_t per = 9 + (c->qkv_bias ? 3 : 0) + (c->qk_norm ? 2 : 0);
  return 2 + (size_t)c->num_layers * per + (c->tie_word_embeddings ? 0 : 1);
}

static void put(tb__hf_tensor_t *t, const float *data, int64_t rows,
                int64_t cols, const char *dims, const char *fmt, int layer) {
  snprintf(t->name, sizeof(t->name), fmt, layer);
  t->data = data;
  t->ndim = cols > 0 ? 2 : 1;
  t->shape[0] = rows;
  t->shape[1] = cols > 0 ? cols : 0;
  t->dims = dims;
}

#define QD "num_attention_heads * head_dim"
#define KVD "num_key_value_heads * head_dim"

size_t tb__hf_tensors(const tb__model_config_t *c, const tb__weights_t *w,
                      tb__hf_tensor_t *out) {
  int64_t C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
  int64_t D = c->head_dim;
  int64_t q = (int64_t)c->num_heads * D;
  int64_t kv = (int64_t)c->num_kv_heads * D;
  static const tb__layer_weights_t none;
  size_t n = 0;
  put(&out[n++], w ? w->embed : NULL, V, C, "vocab_size, hidden_size",
      "model.embed_tokens.weight", 0);
  for (int l = 0; l < c->num_layers; l++) {
    const tb__layer_weights_t *L = w ? &w->layers[l] : &none;
    put(&out[n++], L->attn_norm, C, 0, "hidden_size",
        "model.layers.%d.input_layernorm.weight", l);
    put(&out[n++], L->wq, q, C, QD ", hidden_size",
        "model.layers.%d.self_attn.q_proj.weight", l);
    put(&out[n++], L->wk, kv, C, KVD ", hidden_size",
        "model.layers.%d.self_attn.k_proj.weight", l);
    put(&out[n++], L->wv, kv, C, KVD ", hidden_size",
        "model.layers.%d.self_attn.v_proj.weight", l);
    if (c->qkv_bias) {
      put(&out[n++], L->bq, q, 0, QD, "model.layers.%d.self_attn.q_proj.bias",
          l);
      put(&out[n++], L->bk, kv, 0, KVD,
          "model.layers.%d.self_attn.k_proj.bias", l);
      put(&out[n++], L->bv, kv, 0, KVD,
          "model.layers.%d.self_attn.v_proj.bias", l);
    }
    if (c->qk_norm) {
      put(&out[n++], L->q_norm, D, 0, "head_dim",
          "model.layers.%d.self_attn.q_norm.weight", l);
      put(&out[n++], L->k_norm, D, 0, "head_dim",
          "model.layers.%d.self_attn.k_norm.weight", l);
    }
    put(&out[n++], L->wo, C, q, "hidden_size, " QD,
        "model.layers.%d.self_attn.o_proj.weight", l);
    put(&out[n++], L->mlp_norm, C, 0, "hidden_size",
        "model.layers.%d.post_attention_layernorm.weight", l);
    put(&out[n++], L->w_gate, I, C, "intermediate_size, hidden_size",
        "model.layers.%d.mlp.gate_proj.weight", l);
    put(&out[n++], L->w_up, I, C, "intermediate_size, hidden_size",
        "model.layers.%d.mlp.up_proj.weight", l);
    put(&out[n++], L->w_down, C, I, "hidden_size, intermediate_size",
        "model.layers.%d.mlp.down_proj.weight", l);
  }
  put(&out[n++], w ? w->final_norm : NULL, C, 0, "hidden_size",
      "model.norm.weight", 0);
  if (!c->tie_word_embeddings)
    put(&out[n++], w ? w->lm_head : NULL, V, C, "vocab_size, hidden_size",
        "lm_head.weight", 0);
  return n;
}

#undef QD
#undef KVD

/* ------------------------------------------------------------ loading */

typedef struct {
  tb__st_file_t *files;    /* one, or one per distinct shard */
  size_t n_files;
  json_t *index;          /* NULL when single-file */
  char *index_path;
} sources_t;

static void sources_free(sources_t *s) {
  for (size_t i = 0; i < s->n_files; i++)
    tb__st_close(&s->files[i]);
  free(s->files);
  json_decref(s->index);
  free(s->index_path);
  memset(s, 0, sizeof(*s));
}

static int oom(tb_error_t *err) {
  return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
}

/* Shard names come from the file: keep them inside the directory. */
static int safe_shard_name(const char *s) {
  return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 &&
         strcmp(s, "..") != 0;
}

static int open_sources(const char *dir, sources_t *s, tb_error_t *err) {
  memset(s, 0, sizeof(*s));
  char *single = tb__path_join(dir, TB_HF_WEIGHTS);
  s->index_path = tb__path_join(dir, TB_HF_INDEX);
  if (single == NULL || s->index_path == NULL) {
    free(single);
    return oom(err);
  }
  struct stat st;
  int rc;
  if (stat(single, &st) == 0) {
    s->files = calloc(1, sizeof(*s->files));
    rc = s->files == NULL ? oom(err) : tb__st_open(&s->files[0], single, err);
    free(single);
    if (rc == 0)
      s->n_files = 1;
    return rc;
  }
  free(single);
  if (stat(s->index_path, &st) != 0)
    return tb_error_set(err, TB_ENOENT, TB_CATEGORY_USER,
                        "%s: no %s or %s in the directory", dir,
                        TB_HF_WEIGHTS, TB_HF_INDEX);
  rc = tb__json_read_file(s->index_path, &s->index, err);
  if (rc != 0)
    return rc;
  tb__jctx_t c;
  tb__jctx_init(&c, err);
  json_t *map;
  rc = tb__json_get_object(&c, s->index, "weight_map", TB_JSON_REQUIRED, &map);
  if (rc != 0)
    return tb__error_prefix(err, s->index_path);
  s->files = calloc(json_object_size(map) + 1, sizeof(*s->files));
  if (s->files == NULL)
    return oom(err);
  /* Open each distinct shard once; the file's position in s->files is
   * stored back into the shard-name map for the lookups that follow. */
  const char *name;
  json_t *v;
  json_object_foreach(map, name, v) {
    const char *shard = json_string_value(v);
    if (shard == NULL || !safe_shard_name(shard))
      return tb_error_set(err, TB_ECORRUPT, TB_CATEGORY_USER,
                          "%s: weight_map.%s: expected a file name in the "
                          "directory", s->index_path, name);
    int seen = 0;
    for (size_t i = 0; i < s->n_files && !seen; i++) {
      const char *p = s->files[i].path;
      const char *base = strrchr(p, '/');
      seen = strcmp(base != NULL ? base + 1 : p, shard) == 0;
    }
    if (seen)
      continue;
    char *path = tb__path_join(dir, shard);
    if (path == NULL)
      return oom(err);
    rc = tb__st_open(&s->files[s->n_files], path, err);
    free(path);
    if (rc != 0)
      return rc;
    s->n_files++;
  }
  return 0;
}

/* The file that should hold `name` and the tensor, or an error. */
static int find_tensor(const sources_t *s, const char *name,
                       const tb__st_file_t **file, const tb__st_tensor_t **t,
                       tb_error_t *err) {
  const tb__st_file_t *f = &s->files[0];
  if (s->index != NULL) {
    const char *shard = json_string_value(
        json_object_get(json_object_get(s->index, "weight_map"), name));
    if (shard == NULL)
      return tb_error_set(err, TB_ENOENT, TB_CATEGORY_USER,
                          "%s: tensor %s is missing from weight_map",
                          s->index_path, name);
    f = NULL;
    for (size_t i = 0; i < s->n_files && f == NULL; i++) {
      const char *base = strrchr(s->files[i].path, '/');
      if (strcmp(base != NULL ? base + 1 : s->files[i].path, shard) == 0)
        f = &s->files[i];
    }
  }
  *file = f;
  *t = tb__st_find(f, name);
  if (*t == NULL)
    return tb_error_set(err, TB_ENOENT, TB_CATEGORY_USER,
                        "%s: tensor %s is missing", f->path, name);
  return 0;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t n = 0;
  n += (size_t)snprintf(buf, cap, "[");
  for (int d = 0; d < ndim && n < cap; d++)
    n += (size_t)snprintf(buf + n, cap - n, d ? ", %lld" : "%lld",
                          (long long)shape[d]);
  if (n < cap)
    snprintf(buf + n, cap - n, "]");
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Every tensor of the files must be one the config declares: a bias, a
 * norm or a layer it does not know of would be silently dropped, and the
 * model would compute something else.  Two are harmless: the rotary
 * frequencies some old checkpoints store, and a tied model's lm_head. */
static int check_no_extra(const sources_t *s, const tb__hf_tensor_t *want,
                          size_t n, const tb__model_config_t *c,
                          tb_error_t *err) {
  const char **names = calloc(n, sizeof(*names));
  if (names == NULL)
    return oom(err);
  for (size_t i = 0; i < n; i++)
    names[i] = want[i].name;
  qsort(names, n, sizeof(*names), cmp_str);
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < s->n_files; i++) {
    for (size_t j = 0; rc == 0 && j < s->files[i].n_tensors; j++) {
      const char *nm = s->files[i].tensors[j].name;
      if (bsearch(&nm, names, n, sizeof(*names), cmp_str) != NULL ||
          ends_with(nm, ".rotary_emb.inv_freq") ||
          (c->tie_word_embeddings && strcmp(nm, "lm_head.weight") == 0))
        continue;
      rc = tb_error_set(err, TB_EUNSUPPORTED, TB_CATEGORY_USER,
                        "%s: tensor %s is not part of a %s as config.json "
                        "describes it", s->files[i].path, nm,
                        tb__model_arch_name(c->arch));
    }
  }
  free(names);
  return rc;
}

/* Checks every tensor the config declares against the files: present,
 * with exactly its shape.  Runs before anything is allocated, so a config
 * that claims more than the files hold fails here, naming the field. */
static int check_tensors(const sources_t *s, const tb__hf_tensor_t *want,
                         size_t n, const tb__model_config_t *c,
                         tb_error_t *err) {
  for (size_t i = 0; i < n; i++) {
    const tb__st_file_t *f;
    const tb__st_tensor_t *t;
    int rc = find_tensor(s, want[i].name, &f, &t, err);
    if (rc != 0) {
      /* A layer past the files' last one: the layer count is wrong. */
      if (rc == TB_ENOENT && strncmp(want[i].name, "model.layers.", 13) == 0 &&
          strncmp(want[i].name, "model.layers.0.", 15) != 0) {
        char note[96];
        snprintf(note, sizeof(note), "config.json num_hidden_layers is %d",
                 c->num_layers);
        tb__error_prefix(err, note);
      }
      return rc;
    }
    int same = t->ndim == want[i].ndim;
    for (int d = 0; same && d < t->ndim; d++)
      same = t->shape[d] == want[i].shape[d];
    if (!same) {
      char got[128], exp[128];
      shape_str(got, sizeof(got), t->ndim, t->shape);
      shape_str(exp, sizeof(exp), want[i].ndim, want[i].shape);
      return tb_error_set(err, TB_ESHAPE, TB_CATEGORY_USER,
                          "%s: tensor %s has shape %s, expected %s (config.json "
                          "%s)", f->path, want[i].name, got, exp,
                          want[i].dims);
    }
  }
  return check_no_extra(s, want, n, c, err);
}

/* Converts the tensors into w's storage one by one, giving back each
 * one's pages of the file as soon as it is converted. */
static int load_tensors(const sources_t *s, tb__weights_t *w,
                        tb__hf_tensor_t *want, tb_error_t *err) {
  size_t n = tb__hf_tensors(&w->config, w, want);
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const tb__st_file_t *f;
    const tb__st_tensor_t *t;
    rc = find_tensor(s, want[i].name, &f, &t, err);
    /* The views are const for the math; the loader owns the storage. */
    if (rc == 0)
      rc = tb__st_read_f32(f, t, (float *)want[i].data, t->numel, err);
    if (rc == 0)
      tb__st_release(f, t);
  }
  return rc;
}

int tb__hf_load(const char *dir, tb__weights_t *w, tb_error_t *err) {
  memset(w, 0, sizeof(*w));
  char *cfg_path = tb__path_join(dir, TB_HF_CONFIG);
  if (cfg_path == NULL)
    return oom(err);
  json_t *root;
  int rc = tb__json_read_file(cfg_path, &root, err);
  tb__model_config_t cfg;
  if (rc == 0) {
    rc = tb__hf_config_from_json(root, cfg_path, &cfg, err);
    json_decref(root);
  }
  free(cfg_path);
  if (rc != 0)
    return rc;
  sources_t s;
  rc = open_sources(dir, &s, err);
  tb__hf_tensor_t *want = NULL;
  if (rc == 0) {
    want = calloc(tb__hf_tensor_count(&cfg), sizeof(*want));
    if (want == NULL)
      rc = oom(err);
  }
  if (rc == 0)
    rc = check_tensors(&s, want, tb__hf_tensors(&cfg, NULL, want), &cfg, err);
  if (rc == 0) {
    rc = tb__weights_alloc(w, &cfg);
    if (rc != 0)
      oom(err);
  }
  if (rc == 0)
    rc = load_tensors(&s, w, want, err);
  free(want);
  sources_free(&s);
  if (rc != 0)
    tb__weights_free(w);
  return rc;
}

/* ------------------------------------------------------------ writing */

static void to_out(const tb__hf_tensor_t *h, tb__st_dtype_t dtype,
                   tb__st_out_t *o) {
  memset(o, 0, sizeof(*o));
  o->dtype = dtype;
  o->name = h->name;
  o->ndim = h->ndim;
  o->shape[0] = h->shape[0];
  o->shape[1] = h->shape[1];
  o->data = h->data;
}

/* Removes a file of the other layout so the loader cannot pick up a stale
 * one (model.safetensors wins over an index). */
static int remove_stale(const char *dir, const char *name, tb_error_t *err) {
  char *p = tb__path_join(dir, name);
  if (p == NULL)
    return oom(err);
  int rc = 0;
  if (unlink(p) != 0 && errno != ENOENT)
    rc = tb_error_set(err, tb__errno_code(errno), TB_CATEGORY_SERVER,
                      "%s: cannot remove: %s", p, strerror(errno));
  free(p);
  return rc;
}

static int write_shards(const char *dir, const tb__st_out_t *outs, size_t n,
                        size_t shard_bytes, const json_t *meta,
                        tb_error_t *err) {
  /* Greedy split in storage order. */
  size_t *first = calloc(n + 1, sizeof(size_t));
  if (first == NULL)
    return oom(err);
  size_t n_shards = 0, cur = 0, total = 0;
  for (size_t i = 0; i < n; i++) {
    size_t b = tb__st_out_nbytes(&outs[i]);
    total += b;
    if (i == 0 || (cur > 0 && cur + b > shard_bytes)) {
      first[n_shards++] = i;
      cur = 0;
    }
    cur += b;
  }
  first[n_shards] = n;
  json_t *map = json_object();
  json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size",
                            (json_int_t)total, "weight_map", map);
  int rc = index == NULL ? oom(err) : 0;
  for (size_t s = 0; rc == 0 && s < n_shards; s++) {
    char name[64];
    snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", s + 1,
             n_shards);
    char *path = tb__path_join(dir, name);
    if (path == NULL) {
      rc = oom(err);
      break;
    }
    rc = tb__st_write(path, outs + first[s], first[s + 1] - first[s], meta,
                      err);
    free(path);
    for (size_t i = first[s]; rc == 0 && i < first[s + 1]; i++)
      if (json_object_set_new(map, outs[i].name, json_string(name)) != 0)
        rc = oom(err);
  }
  char *ipath = rc == 0 ? tb__path_join(dir, TB_HF_INDEX) : NULL;
  if (rc == 0 && ipath == NULL)
    rc = oom(err);
  if (rc == 0)
    rc = tb__json_write_file(ipath, index, err);
  free(ipath);
  json_decref(index);
  free(first);
  if (rc == 0)
    rc = remove_stale(dir, TB_HF_WEIGHTS, err);
  return rc;
}

int tb__hf_save(const char *dir, const tb__weights_t *w,
                const json_t *extra_config, size_t shard_bytes,
                tb_error_t *err) {
  return tb__hf_save_as(dir, w, extra_config, shard_bytes, TB_ST_F32, err);
}

int tb__hf_save_as(const char *dir, const tb__weights_t *w,
                   const json_t *extra_config, size_t shard_bytes,
                   tb__st_dtype_t dtype, tb_error_t *err) {
  int rc = tb__mkdir_p1(dir, err);
  if (rc != 0)
    return rc;
  size_t cap = tb__hf_tensor_count(&w->config);
  tb__hf_tensor_t *hts = calloc(cap, sizeof(*hts));
  tb__st_out_t *outs = calloc(cap, sizeof(*outs));
  json_t *cfg = tb__hf_config_to_json(&w->config);
  json_t *meta = json_pack("{s:s}", "format", "pt");
  char *cfg_path = tb__path_join(dir, TB_HF_CONFIG);
  char *single = tb__path_join(dir, TB_HF_WEIGHTS);
  if (hts == NULL || outs == NULL || cfg == NULL || meta == NULL ||
      cfg_path == NULL || single == NULL ||
      (extra_config != NULL &&
       json_object_update(cfg, (json_t *)extra_config) != 0)) {
    rc = oom(err);
    goto done;
  }
  if (json_object_set_new(cfg, "torch_dtype",
                          json_string(dtype == TB_ST_BF16  ? "bfloat16"
                                      : dtype == TB_ST_F16 ? "float16"
                                                           : "float32")) != 0) {
    rc = oom(err);
    goto done;
  }
  size_t n = tb__hf_tensors(&w->config, w, hts);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    to_out(&hts[i], dtype, &outs[i]);
    total += tb__st_out_nbytes(&outs[i]);
  }
  rc = tb__json_write_file(cfg_path, cfg, err);
  if (rc != 0)
    goto done;
  if (shard_bytes == 0 || total <= shard_bytes) {
    rc = tb__st_write(single, outs, n, meta, err);
    if (rc == 0)
      rc = remove_stale(dir, TB_HF_INDEX, err);
  } else {
    rc = write_shards(dir, outs, n, shard_bytes, meta, err);
  }
done:
  free(hts);
  free(outs);
  json_decref(cfg);
  json_decref(meta);
  free(cfg_path);
  free(single);
  return rc;
}

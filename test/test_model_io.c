/*
 * engine model and checkpoint I/O: the generated `base` model, Hugging Face
 * directories (single file and sharded), precise load errors, adapter
 * checkpoints with atomic replacement and crash safety, and the PEFT
 * export layout.
 */
#define _GNU_SOURCE  /* nftw flags */
#include "tb_test.h"
#include "fixtures.h"

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/json.h"
#include "engine/base_model.h"
#include "engine/bigmem.h"
#include "engine/checkpoint.h"
#include "engine/hf_model.h"
#include "engine/jsonfile.h"
#include "engine/safetensors.h"
#include "text/base_chat.h"

/* FNV-1a of the `base` weights: pinned so that any change to the
 * generator, the shape or the storage order is noticed. */
#define BASE_HASH UINT64_C(0x0b3cbdb6278bea12)

static char tmpdir[64];
static void make_tmpdir(void) { tb_test_tmpdir(tmpdir, "tb-mio"); }
static void remove_tmpdir(void) { tb_test_tmpdir_remove(tmpdir); }
static char *path_in(const char *name) { return tb_test_path_in(tmpdir, name); }

static int exists(const char *dir, const char *name) {
  char *p = tb__path_join(dir, name);
  int ok = access(p, F_OK) == 0;
  free(p);
  return ok;
}

/* Number of entries in dir (not counting . and ..), and whether any name
 * contains `needle`. */
static int count_entries(const char *dir, const char *needle, int *found) {
  DIR *d = opendir(dir);
  ASSERT(d != NULL);
  int n = 0;
  *found = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    n++;
    if (needle != NULL && strstr(e->d_name, needle) != NULL)
      *found = 1;
  }
  closedir(d);
  return n;
}

static void assert_weights_equal(const tb__weights_t *a, const tb__weights_t *b) {
  ASSERT_EQ_INT(memcmp(&a->config, &b->config, sizeof(a->config)), 0);
  ASSERT_EQ_INT(a->storage_floats, b->storage_floats);
  ASSERT_EQ_INT(memcmp(a->storage, b->storage,
                       a->storage_floats * sizeof(float)), 0);
}

/* ------------------------------------------------------------ base model */

TEST(base_model_is_deterministic_and_pinned) {
  tb__weights_t a, b;
  ASSERT_OK(tb__base_model_generate(&a));
  ASSERT_OK(tb__base_model_generate(&b));
  assert_weights_equal(&a, &b);
  uint64_t h = tb__weights_hash(&a);
  if (h != BASE_HASH)
    tb_test_fail(__FILE__, __LINE__, "base hash 0x%016" PRIx64
                 " != pinned 0x%016" PRIx64, h, BASE_HASH);

  const tb__model_config_t *c = &a.config;
  ASSERT_EQ_INT(c->hidden_size, 128);
  ASSERT_EQ_INT(c->num_layers, 4);
  ASSERT_EQ_INT(c->num_kv_heads, 2);
  ASSERT_EQ_INT(c->head_dim, 32);
  ASSERT_EQ_INT(c->vocab_size, TB_TOK_VOCAB);
  ASSERT(c->tie_word_embeddings);
  ASSERT(a.lm_head == a.embed);
  ASSERT_OK(tb__model_config_validate(c, NULL));

  /* Norms are one; matrices have the intended spread and mean ~0. */
  for (int i = 0; i < c->hidden_size; i++) {
    ASSERT_NEAR(a.layers[2].attn_norm[i], 1, 0, 0);
    ASSERT_NEAR(a.final_norm[i], 1, 0, 0);
  }
  size_t n = (size_t)c->intermediate_size * (size_t)c->hidden_size;
  double s = 0, s2 = 0;
  for (size_t i = 0; i < n; i++) {
    s += a.layers[1].w_up[i];
    s2 += (double)a.layers[1].w_up[i] * a.layers[1].w_up[i];
  }
  ASSERT_NEAR(s / (double)n, 0, 5e-4, 0);
  ASSERT_NEAR(sqrt(s2 / (double)n), 0.02, 0, 0.02);
  s2 = 0;
  for (size_t i = 0; i < n; i++)
    s2 += (double)a.layers[0].w_down[i] * a.layers[0].w_down[i];
  ASSERT_NEAR(sqrt(s2 / (double)n), 0.02 / sqrt(8.0), 0, 0.02);
  /* Different tensors get different streams. */
  ASSERT(memcmp(a.layers[0].wq, a.layers[1].wq, 64 * sizeof(float)) != 0);
  tb__weights_free(&a);
  tb__weights_free(&b);
}

/* ------------------------------------------------------------ HF dirs */

TEST(hf_round_trip_of_base_is_bitwise) {
  make_tmpdir();
  char *dir = path_in("base");
  tb_error_t err = { 0 };
  ASSERT_OK(tb__base_model_save(dir, &err));
  ASSERT(exists(dir, "config.json"));
  ASSERT(exists(dir, "model.safetensors"));
  int found;
  ASSERT_EQ_INT(count_entries(dir, ".tmp", &found), 2);
  ASSERT(!found);

  tb__weights_t a, b;
  ASSERT_OK(tb__base_model_generate(&a));
  ASSERT_OK(tb__hf_load(dir, &b, &err));
  assert_weights_equal(&a, &b);
  ASSERT(b.lm_head == b.embed);
  ASSERT_EQ_INT(tb__weights_hash(&b), tb__weights_hash(&a));

  /* config.json says what the PyTorch reference needs. */
  char *cfg_path = tb__path_join(dir, "config.json");
  json_t *cfg;
  ASSERT_OK(tb__json_read_file(cfg_path, &cfg, &err));
  ASSERT_EQ_INT(json_integer_value(json_object_get(cfg, "hidden_size")), 128);
  ASSERT_EQ_INT(json_integer_value(json_object_get(cfg, "num_key_value_heads")),
                2);
  ASSERT_EQ_INT(json_integer_value(json_object_get(cfg, "bos_token_id")),
                TB_TOK_BOS);
  ASSERT(json_is_true(json_object_get(cfg, "tie_word_embeddings")));
  ASSERT_NEAR(json_real_value(json_object_get(cfg, "rms_norm_eps")), 1e-5, 0,
              0);
  ASSERT_STR_EQ(json_string_value(json_object_get(cfg, "model_type")),
                "llama");
  json_decref(cfg);
  free(cfg_path);

  /* Tied: no lm_head.weight in the file. */
  char *st_path = tb__path_join(dir, "model.safetensors");
  tb__st_file_t f;
  ASSERT_OK(tb__st_open(&f, st_path, &err));
  ASSERT(tb__st_find(&f, "lm_head.weight") == NULL);
  ASSERT(tb__st_find(&f, "model.layers.3.mlp.down_proj.weight") != NULL);
  ASSERT_EQ_INT(f.n_tensors, tb__hf_tensor_count(&a.config));
  tb__st_close(&f);
  free(st_path);

  /* Loading by name: "base" is generated, a path is a directory. */
  tb__weights_free(&b);
  ASSERT_OK(tb__model_weights_load(TB_BASE_MODEL_NAME, &b, &err));
  assert_weights_equal(&a, &b);
  tb__weights_free(&b);
  ASSERT_OK(tb__model_weights_load(dir, &b, &err));
  assert_weights_equal(&a, &b);
  tb__weights_free(&b);
  ASSERT_ERR(tb__model_weights_load("no-such-model", &b, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "no-such-model/config.json");

  tb__weights_free(&a);
  tb_error_clear(&err);
  free(dir);
  remove_tmpdir();
}

TEST(hf_sharded_index_with_two_shards) {
  make_tmpdir();
  char *dir = path_in("sharded");
  tb__weights_t a, b;
  ASSERT_OK(tb__base_model_generate(&a));
  tb_error_t err = { 0 };
  size_t total = a.storage_floats * sizeof(float);
  ASSERT_OK(tb__hf_save(dir, &a, NULL, total * 6 / 10, &err));
  ASSERT(exists(dir, "model-00001-of-00002.safetensors"));
  ASSERT(exists(dir, "model-00002-of-00002.safetensors"));
  ASSERT(exists(dir, "model.safetensors.index.json"));
  ASSERT(!exists(dir, "model.safetensors"));
  ASSERT_OK(tb__hf_load(dir, &b, &err));
  assert_weights_equal(&a, &b);
  tb__weights_free(&b);

  /* Saving unsharded over it removes the index, so the two layouts never
   * disagree. */
  ASSERT_OK(tb__hf_save(dir, &a, NULL, 0, &err));
  ASSERT(!exists(dir, "model.safetensors.index.json"));
  ASSERT_OK(tb__hf_load(dir, &b, &err));
  assert_weights_equal(&a, &b);
  tb__weights_free(&b);

  /* A tensor dropped from weight_map is named with the index file. */
  ASSERT_OK(tb__hf_save(dir, &a, NULL, total * 6 / 10, &err));
  char *ipath = tb__path_join(dir, "model.safetensors.index.json");
  json_t *index;
  ASSERT_OK(tb__json_read_file(ipath, &index, &err));
  json_t *map = json_object_get(index, "weight_map");
  ASSERT_EQ_INT(json_object_size(map), tb__hf_tensor_count(&a.config));
  ASSERT_OK(json_object_del(map, "model.layers.1.self_attn.v_proj.weight"));
  ASSERT_OK(tb__json_write_file(ipath, index, &err));
  ASSERT_ERR(tb__hf_load(dir, &b, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "model.layers.1.self_attn.v_proj.weight");
  ASSERT_STR_CONTAINS(err.message, ipath);
  ASSERT(b.storage == NULL);

  /* A shard name that leaves the directory is refused. */
  json_object_set_new(map, "model.layers.1.self_attn.v_proj.weight",
                      json_string("../evil.safetensors"));
  ASSERT_OK(tb__json_write_file(ipath, index, &err));
  ASSERT_ERR(tb__hf_load(dir, &b, &err), TB_ECORRUPT);
  ASSERT_STR_CONTAINS(err.message, "weight_map");
  json_decref(index);
  free(ipath);

  tb__weights_free(&a);
  tb_error_clear(&err);
  free(dir);
  remove_tmpdir();
}

/* A small untied model with head_dim != hidden / heads. */
static void tiny_config(tb__model_config_t *c) {
  *c = tb_test_config(8, 12, 2, 2, 1, 6, 10, 64, 1e-6f, 500000.0f);
}

TEST(hf_untied_round_trip) {
  make_tmpdir();
  char *dir = path_in("tiny");
  tb__model_config_t c;
  tiny_config(&c);
  tb__weights_t a, b;
  ASSERT_OK(tb__weights_alloc(&a, &c));
  for (size_t i = 0; i < a.storage_floats; i++)
    a.storage[i] = (float)i * 0.25f - 3.0f;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__hf_save(dir, &a, NULL, 0, &err));
  ASSERT_OK(tb__hf_load(dir, &b, &err));
  assert_weights_equal(&a, &b);
  ASSERT(b.lm_head != b.embed);
  ASSERT_NEAR(b.config.rope_theta, 500000.0, 0, 0);
  tb__weights_free(&a);
  tb__weights_free(&b);
  tb_error_clear(&err);
  free(dir);
  remove_tmpdir();
}

/* Writes a model directory for `c` whose tensor list is changed by
 * `edit` (drop or reshape one), with 1.0 everywhere, as dtype `dt`. */
static void write_edited(const char *dir, const tb__model_config_t *c,
                         const char *drop, const char *reshape,
                         const char *dtype) {
  tb_error_t err = { 0 };
  ASSERT_OK(tb__mkdir_p1(dir, &err));
  json_t *cfg = tb__hf_config_to_json(c);
  char *cpath = tb__path_join(dir, "config.json");
  ASSERT_OK(tb__json_write_file(cpath, cfg, &err));
  json_decref(cfg);
  free(cpath);

  tb__weights_t w;
  ASSERT_OK(tb__weights_alloc(&w, c));
  tb__hf_tensor_t *ts = calloc(tb__hf_tensor_count(c), sizeof(*ts));
  size_t n = tb__hf_tensors(c, &w, ts);
  json_t *hdr = json_object();
  tb__buf_t data = TB_BUF_INIT;
  size_t esize = strcmp(dtype, "F32") == 0 ? 4 : 2;
  for (size_t i = 0; i < n; i++) {
    if (drop != NULL && strcmp(ts[i].name, drop) == 0)
      continue;
    int64_t s0 = ts[i].shape[0], s1 = ts[i].shape[1];
    if (reshape != NULL && strcmp(ts[i].name, reshape) == 0) {
      int64_t t = s0;
      s0 = s1 > 0 ? s1 : s0 + 1;
      s1 = s1 > 0 ? t : 0;
    }
    size_t numel = (size_t)s0 * (size_t)(ts[i].ndim == 2 ? s1 : 1);
    json_t *shape = ts[i].ndim == 2 ? json_pack("[I,I]", s0, s1)
                                    : json_pack("[I]", s0);
    json_object_set_new(hdr, ts[i].name,
                        json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype,
                                  "shape", shape, "data_offsets",
                                  (json_int_t)data.len,
                                  (json_int_t)(data.len + numel * esize)));
    for (size_t j = 0; j < numel; j++) {
      /* 1.0 in each dtype, little-endian. */
      static const unsigned char f32[4] = { 0, 0, 0x80, 0x3f };
      static const unsigned char f16[2] = { 0x00, 0x3c };
      static const unsigned char bf16[2] = { 0x80, 0x3f };
      const unsigned char *v = esize == 4 ? f32
                               : strcmp(dtype, "F16") == 0 ? f16 : bf16;
      ASSERT_OK(tb__buf_append(&data, v, esize));
    }
  }
  char *text = json_dumps(hdr, JSON_COMPACT);
  tb__buf_t file = TB_BUF_INIT;
  uint64_t hl = strlen(text);
  unsigned char lb[8];
  for (int i = 0; i < 8; i++)
    lb[i] = (unsigned char)(hl >> (8 * i));
  ASSERT_OK(tb__buf_append(&file, lb, 8));
  ASSERT_OK(tb__buf_append(&file, text, hl));
  ASSERT_OK(tb__buf_append(&file, data.base, data.len));
  char *spath = tb__path_join(dir, "model.safetensors");
  ASSERT_OK(tb__file_write_atomic(spath, file.base, file.len, &err));
  free(spath);
  free(text);
  tb__buf_free(&file);
  tb__buf_free(&data);
  json_decref(hdr);
  free(ts);
  tb__weights_free(&w);
}

TEST(hf_loads_f16_and_bf16_weights) {
  make_tmpdir();
  tb__model_config_t c;
  tiny_config(&c);
  static const char *const dtypes[] = { "F16", "BF16" };
  for (int k = 0; k < 2; k++) {
    char *dir = path_in(dtypes[k]);
    write_edited(dir, &c, NULL, NULL, dtypes[k]);
    tb__weights_t w;
    tb_error_t err = { 0 };
    ASSERT_OK(tb__hf_load(dir, &w, &err));
    for (size_t i = 0; i < w.storage_floats; i++)
      ASSERT_NEAR(w.storage[i], 1.0, 0, 0);
    tb__weights_free(&w);
    free(dir);
  }
  remove_tmpdir();
}

TEST(hf_missing_tensor_and_wrong_shape_name_the_tensor) {
  make_tmpdir();
  tb__model_config_t c;
  tiny_config(&c);
  tb__weights_t w;
  tb_error_t err = { 0 };

  char *dir = path_in("missing");
  write_edited(dir, &c, "model.layers.1.mlp.up_proj.weight", NULL, "F32");
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "model.layers.1.mlp.up_proj.weight");
  ASSERT_STR_CONTAINS(err.message, "missing/model.safetensors");
  ASSERT(w.storage == NULL && w.layers == NULL);
  free(dir);

  dir = path_in("untied_no_head");
  write_edited(dir, &c, "lm_head.weight", NULL, "F32");
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "tensor lm_head.weight is missing");
  free(dir);

  dir = path_in("shape");
  write_edited(dir, &c, NULL, "model.layers.0.self_attn.k_proj.weight", "F32");
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_ESHAPE);
  ASSERT_STR_CONTAINS(err.message, "shape/model.safetensors: tensor "
                      "model.layers.0.self_attn.k_proj.weight has shape "
                      "[8, 6], expected [6, 8]");
  free(dir);

  dir = path_in("shape1d");
  write_edited(dir, &c, NULL, "model.norm.weight", "BF16");
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_ESHAPE);
  ASSERT_STR_CONTAINS(err.message, "model.norm.weight has shape [9], "
                      "expected [8]");
  free(dir);

  /* A directory with no weights, and no directory at all. */
  dir = path_in("noweights");
  write_edited(dir, &c, NULL, NULL, "F32");
  char *spath = tb__path_join(dir, "model.safetensors");
  ASSERT_EQ_INT(unlink(spath), 0);
  free(spath);
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "no model.safetensors");
  free(dir);
  dir = path_in("nothing");
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "nothing/config.json");
  free(dir);
  tb_error_clear(&err);
  remove_tmpdir();
}

static int config_error(const char *text, tb__model_config_t *out,
                        tb_error_t *err) {
  json_t *root = json_loads(text, 0, NULL);
  ASSERT(root != NULL);
  int rc = tb__hf_config_from_json(root, "dir/config.json", out, err);
  json_decref(root);
  return rc;
}

/* A Llama config's first fields; each case adds the rest. */
#define LLAMA_64 "{\"model_type\": \"llama\", \"hidden_size\": 64, " \
                 "\"intermediate_size\": 128, \"num_hidden_layers\": 2, "

TEST(hf_config_defaults_and_errors) {
  tb__model_config_t c;
  tb_error_t err = { 0 };
  ASSERT_OK(config_error(LLAMA_64 "\"num_attention_heads\": 4, "
                         "\"vocab_size\": 100}", &c, &err));
  ASSERT_EQ_INT(c.num_kv_heads, 4);
  ASSERT_EQ_INT(c.head_dim, 16);
  ASSERT_NEAR(c.rope_theta, 10000, 0, 0);
  ASSERT_EQ_INT(c.tie_word_embeddings, 0);
  ASSERT_EQ_INT(c.max_position_embeddings, 2048);

  ASSERT_ERR(config_error("{\"model_type\": \"llama\", "
                          "\"intermediate_size\": 128}", &c, &err),
             TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "dir/config.json: hidden_size");
  ASSERT_ERR(config_error(LLAMA_64 "\"num_attention_heads\": 4, "
                          "\"vocab_size\": 100, \"num_key_value_heads\": 3}",
                          &c, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "num_key_value_heads must divide");
  ASSERT_ERR(config_error(LLAMA_64 "\"num_attention_heads\": 4, "
                          "\"vocab_size\": 100, \"rope_scaling\": "
                          "{\"type\": \"linear\"}}", &c, &err),
             TB_EUNSUPPORTED);
  ASSERT_STR_CONTAINS(err.message, "dir/config.json: rope_scaling");
  ASSERT_ERR(config_error(LLAMA_64 "\"num_attention_heads\": 4, "
                          "\"vocab_size\": 100, \"hidden_act\": \"gelu\"}",
                          &c, &err), TB_EUNSUPPORTED);
  ASSERT_ERR(config_error(LLAMA_64 "\"num_attention_heads\": 5, "
                          "\"vocab_size\": 100}", &c, &err), TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "head_dim");
  ASSERT_ERR(config_error("{\"model_type\": \"llama\", "
                          "\"hidden_size\": \"64\"}", &c, &err), TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "expected an integer");
  tb_error_clear(&err);
}

/* ------------------------------------------------------------ checkpoints */

#define RANK 4
#define MAX_T 16

typedef struct {
  char names[MAX_T][128];
  tb__ckpt_tensor_t t[MAX_T];
  size_t n;
  float *buf;      /* data, m, v for every tensor, contiguous */
  size_t floats;
} lora_t;

/* LoRA on q, v, down (every layer) and lm_head of `base`, filled with a
 * pattern shifted by `seed`. */
static void lora_make(lora_t *l, int rank, float seed) {
  memset(l, 0, sizeof(*l));
  tb__model_config_t c;
  tb__base_model_config(&c);
  tb__lora_target_t tg[] = { TB_LORA_Q, TB_LORA_V, TB_LORA_DOWN };
  size_t k = 0;
  for (int layer = 0; layer < 2; layer++)
    for (int j = 0; j < 3; j++)
      for (int b = 0; b < 2; b++, k++) {
        int64_t in, out;
        tb__lora_target_dims(&c, tg[j], &in, &out);
        ASSERT_OK(tb__peft_tensor_name(l->names[k], 128, layer, tg[j], b));
        l->t[k].ndim = 2;
        l->t[k].shape[0] = b ? out : rank;
        l->t[k].shape[1] = b ? rank : in;
      }
  for (int b = 0; b < 2; b++, k++) {
    ASSERT_OK(tb__peft_tensor_name(l->names[k], 128, 0, TB_LORA_UNEMBED, b));
    l->t[k].ndim = 2;
    l->t[k].shape[0] = b ? c.vocab_size : rank;
    l->t[k].shape[1] = b ? rank : c.hidden_size;
  }
  l->n = k;
  size_t total = 0;
  for (size_t i = 0; i < l->n; i++)
    total += (size_t)(l->t[i].shape[0] * l->t[i].shape[1]);
  l->floats = 3 * total;
  l->buf = xmalloc(l->floats * sizeof(float));
  float *p = l->buf;
  for (size_t i = 0; i < l->n; i++) {
    size_t m = (size_t)(l->t[i].shape[0] * l->t[i].shape[1]);
    l->t[i].name = l->names[i];
    l->t[i].data = p;
    l->t[i].adam_m = p + total;
    l->t[i].adam_v = p + 2 * total;
    p += m;
  }
  for (size_t i = 0; i < l->floats; i++)
    l->buf[i] = seed + (float)(i % 1000) * 0.001f;
}

static void lora_zero(lora_t *l) {
  memset(l->buf, 0, l->floats * sizeof(float));
}

static char *targets_list[] = { "q_proj", "v_proj", "down_proj", "lm_head" };

static tb__ckpt_info_t info_for(int64_t step) {
  tb__ckpt_info_t info;
  memset(&info, 0, sizeof(info));
  info.rank = RANK;
  info.alpha = 32;
  info.targets = targets_list;
  info.n_targets = 4;
  info.base_model = (char *)"base";
  info.step = step;
  info.created = 1700000000;
  return info;
}

TEST(peft_names) {
  char buf[128];
  ASSERT_OK(tb__peft_tensor_name(buf, sizeof(buf), 3, TB_LORA_Q, 0));
  ASSERT_STR_EQ(buf, "base_model.model.model.layers.3.self_attn.q_proj."
                "lora_A.weight");
  ASSERT_OK(tb__peft_tensor_name(buf, sizeof(buf), 0, TB_LORA_GATE, 1));
  ASSERT_STR_EQ(buf, "base_model.model.model.layers.0.mlp.gate_proj.lora_B."
                "weight");
  ASSERT_OK(tb__peft_tensor_name(buf, sizeof(buf), 9, TB_LORA_UNEMBED, 1));
  ASSERT_STR_EQ(buf, "base_model.model.lm_head.lora_B.weight");
  ASSERT_ERR(tb__peft_tensor_name(buf, 10, 0, TB_LORA_Q, 0), TB_EINVAL);

  for (int t = 0; t < TB_LORA_NTARGETS; t++)
    for (int b = 0; b < 2; b++) {
      int layer, is_b;
      tb__lora_target_t got;
      ASSERT_OK(tb__peft_tensor_name(buf, sizeof(buf), 17, t, b));
      ASSERT_OK(tb__peft_parse_name(buf, &layer, &got, &is_b));
      ASSERT_EQ_INT(got, t);
      ASSERT_EQ_INT(is_b, b);
      ASSERT_EQ_INT(layer, t == TB_LORA_UNEMBED ? 0 : 17);
      ASSERT_EQ_INT(tb__lora_target_from_module(tb__lora_target_module(t)), t);
    }
  int layer, is_b;
  tb__lora_target_t got;
  ASSERT_ERR(tb__peft_parse_name("model.layers.0.self_attn.q_proj.weight",
                                 &layer, &got, &is_b), TB_EINVAL);
  ASSERT_ERR(tb__peft_parse_name("base_model.model.model.layers.01.mlp."
                                 "up_proj.lora_A.weight", &layer, &got,
                                 &is_b), TB_EINVAL);
  ASSERT_ERR(tb__peft_parse_name("base_model.model.model.layers.1.mlp."
                                 "q_proj.lora_A.weight", &layer, &got,
                                 &is_b), TB_EINVAL);
  ASSERT_EQ_INT(tb__lora_target_from_module("embed_tokens"), -1);

  tb__model_config_t c;
  tb__base_model_config(&c);
  int64_t in, out;
  tb__lora_target_dims(&c, TB_LORA_K, &in, &out);
  ASSERT_EQ_INT(in, 128);
  ASSERT_EQ_INT(out, 64);
  tb__lora_target_dims(&c, TB_LORA_DOWN, &in, &out);
  ASSERT_EQ_INT(in, 384);
  ASSERT_EQ_INT(out, 128);
  tb__lora_target_dims(&c, TB_LORA_UNEMBED, &in, &out);
  ASSERT_EQ_INT(out, TB_TOK_VOCAB);
}

TEST(checkpoint_round_trip_with_optimizer_state) {
  make_tmpdir();
  char *dir = path_in("ckpt");
  lora_t a, b;
  lora_make(&a, RANK, 1.0f);
  lora_make(&b, RANK, 0.0f);
  lora_zero(&b);
  tb__ckpt_info_t info = info_for(7);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__ckpt_save(dir, a.t, a.n, &info, TB_CKPT_OPTIMIZER, &err));
  int found;
  ASSERT_EQ_INT(count_entries(dir, NULL, &found), 4);
  ASSERT(exists(dir, TB_CKPT_WEIGHTS) && exists(dir, TB_CKPT_META) &&
         exists(dir, TB_CKPT_OPTIMIZER_FILE) &&
         exists(dir, TB_CKPT_PEFT_CONFIG));
  /* Nothing but the checkpoint is left next to it. */
  ASSERT_EQ_INT(count_entries(tmpdir, NULL, &found), 1);

  tb__ckpt_info_t got;
  ASSERT_OK(tb__ckpt_load(dir, b.t, b.n, TB_CKPT_OPTIMIZER, &got, &err));
  ASSERT_EQ_INT(memcmp(a.buf, b.buf, a.floats * sizeof(float)), 0);
  ASSERT_EQ_INT(got.rank, RANK);
  ASSERT_NEAR(got.alpha, 32, 0, 0);
  ASSERT_EQ_INT(got.step, 7);
  ASSERT_EQ_INT(got.created, 1700000000);
  ASSERT_EQ_INT(got.has_optimizer, 1);
  ASSERT_STR_EQ(got.base_model, "base");
  ASSERT_EQ_INT(got.n_targets, 4);
  ASSERT_STR_EQ(got.targets[2], "down_proj");
  tb__ckpt_info_free(&got);

  char *meta_path = tb__path_join(dir, TB_CKPT_META);
  json_t *meta;
  ASSERT_OK(tb__json_read_file(meta_path, &meta, &err));
  ASSERT_STR_EQ(json_string_value(json_object_get(meta, "created")),
                "2023-11-14T22:13:20Z");
  json_decref(meta);
  free(meta_path);

  /* Weights only: the moments are left alone. */
  lora_zero(&b);
  ASSERT_OK(tb__ckpt_load(dir, b.t, b.n, 0, NULL, &err));
  ASSERT_EQ_INT(memcmp(a.buf, b.buf, a.floats / 3 * sizeof(float)), 0);
  ASSERT_NEAR(b.t[0].adam_m[0], 0, 0, 0);

  /* Saved without optimizer state: asking for it is an error. */
  char *dir2 = path_in("weights_only");
  ASSERT_OK(tb__ckpt_save(dir2, a.t, a.n, &info, 0, &err));
  ASSERT(!exists(dir2, TB_CKPT_OPTIMIZER_FILE));
  ASSERT_ERR(tb__ckpt_load(dir2, b.t, b.n, TB_CKPT_OPTIMIZER, NULL, &err),
             TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "no optimizer state");

  free(dir2);
  free(a.buf);
  free(b.buf);
  tb_error_clear(&err);
  free(dir);
  remove_tmpdir();
}

TEST(checkpoint_load_validates_the_layout) {
  make_tmpdir();
  char *dir = path_in("ckpt");
  lora_t a, b;
  lora_make(&a, RANK, 1.0f);
  tb__ckpt_info_t info = info_for(1);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__ckpt_save(dir, a.t, a.n, &info, TB_CKPT_OPTIMIZER, &err));

  /* Another rank: a shape error naming the first tensor and the file. */
  lora_make(&b, RANK * 2, 0.0f);
  ASSERT_ERR(tb__ckpt_load(dir, b.t, b.n, 0, NULL, &err), TB_ESHAPE);
  ASSERT_STR_CONTAINS(err.message, "ckpt/adapter_model.safetensors");
  ASSERT_STR_CONTAINS(err.message, "has shape [4, 128], expected [8, 128]");
  free(b.buf);

  /* A tensor of the file under another name in the adapter: the file's
   * one is named as foreign to the layout. */
  lora_make(&b, RANK, 0.0f);
  b.t[3].name = "base_model.model.model.layers.5.mlp.up_proj.lora_B.weight";
  ASSERT_ERR(tb__ckpt_load(dir, b.t, b.n, 0, NULL, &err), TB_ESHAPE);
  ASSERT_STR_CONTAINS(err.message, "is not part of the adapter layout");
  free(b.buf);
  /* Fewer expected tensors than stored: the extra one is named. */
  lora_make(&b, RANK, 0.0f);
  ASSERT_ERR(tb__ckpt_load(dir, b.t, b.n - 1, 0, NULL, &err), TB_ESHAPE);
  ASSERT_STR_CONTAINS(err.message, "lm_head.lora_B.weight is not part");
  free(b.buf);

  /* More expected than stored: the missing one is named. */
  lora_make(&b, RANK, 0.0f);
  char *short_dir = path_in("short");
  ASSERT_OK(tb__ckpt_save(short_dir, a.t, a.n - 2, &info, 0, &err));
  ASSERT_ERR(tb__ckpt_load(short_dir, b.t, b.n, 0, NULL, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "tensor base_model.model.lm_head.lora_A."
                      "weight is missing");
  free(short_dir);

  /* Not a checkpoint at all. */
  char *none = path_in("none");
  ASSERT_ERR(tb__ckpt_load(none, b.t, b.n, 0, NULL, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "not a checkpoint");
  free(none);

  /* A checkpoint.json that is not JSON, or not ours, is reported with its
   * path. */
  char *meta0 = tb__path_join(dir, TB_CKPT_META);
  ASSERT_OK(tb__file_write_atomic(meta0, "{\"format\": ", 11, &err));
  ASSERT_ERR(tb__ckpt_load(dir, b.t, b.n, 0, NULL, &err), TB_EJSON);
  ASSERT_STR_CONTAINS(err.message, "checkpoint.json: invalid JSON at line 1");
  free(meta0);
  char *meta = tb__path_join(dir, TB_CKPT_META);
  ASSERT_OK(tb__file_write_atomic(meta, "{\"format\": \"x\"}", 15, &err));
  ASSERT_ERR(tb__ckpt_load(dir, b.t, b.n, 0, NULL, &err), TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "checkpoint.json: format");
  free(meta);

  free(a.buf);
  free(b.buf);
  tb_error_clear(&err);
  free(dir);
  remove_tmpdir();
}

TEST(checkpoint_overwrite_is_atomic_and_clean) {
  make_tmpdir();
  char *dir = path_in("ckpt");
  lora_t a, b, c;
  lora_make(&a, RANK, 1.0f);
  lora_make(&b, RANK, 2.0f);
  lora_make(&c, RANK, 0.0f);
  tb__ckpt_info_t ia = info_for(1), ib = info_for(2);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__ckpt_save(dir, a.t, a.n, &ia, TB_CKPT_OPTIMIZER, &err));
  ASSERT_OK(tb__ckpt_save(dir, b.t, b.n, &ib, 0, &err));
  tb__ckpt_info_t got;
  ASSERT_OK(tb__ckpt_load(dir, c.t, c.n, 0, &got, &err));
  ASSERT_EQ_INT(got.step, 2);
  ASSERT_EQ_INT(got.has_optimizer, 0);
  tb__ckpt_info_free(&got);
  ASSERT_EQ_INT(memcmp(b.buf, c.buf, b.floats / 3 * sizeof(float)), 0);
  /* The old optimizer file went with the old checkpoint. */
  ASSERT(!exists(dir, TB_CKPT_OPTIMIZER_FILE));
  int found;
  ASSERT_EQ_INT(count_entries(tmpdir, NULL, &found), 1);

  /* A trailing slash names the same checkpoint. */
  char *slash = tb__asprintf("%s/", dir);
  ASSERT_OK(tb__ckpt_save(slash, a.t, a.n, &ia, 0, &err));
  ASSERT_OK(tb__ckpt_load(dir, c.t, c.n, 0, NULL, &err));
  ASSERT_EQ_INT(memcmp(a.buf, c.buf, a.floats / 3 * sizeof(float)), 0);
  ASSERT_EQ_INT(count_entries(tmpdir, NULL, &found), 1);
  ASSERT_EQ_INT(count_entries(dir, NULL, &found), 3);
  free(slash);

  /* A path that is a file is not replaced. */
  char *file = path_in("plain");
  ASSERT_OK(tb__file_write_atomic(file, "x", 1, &err));
  ASSERT_ERR(tb__ckpt_save(file, a.t, a.n, &ia, 0, &err), TB_EEXIST);
  ASSERT_EQ_INT(count_entries(tmpdir, ".tmp", &found), 2);
  ASSERT(!found);
  free(file);

  free(a.buf);
  free(b.buf);
  free(c.buf);
  tb_error_clear(&err);
  free(dir);
  remove_tmpdir();
}

static const char *crash_stage;

static void crash_hook(const char *stage) {
  if (strcmp(stage, crash_stage) == 0)
    _exit(3);
}

/* Runs a save in a child that dies at `stage`. */
static void save_and_crash(const char *dir, lora_t *l, int64_t step,
                           const char *stage) {
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    crash_stage = stage;
    tb__ckpt_test_hook = crash_hook;
    tb__ckpt_info_t info = info_for(step);
    tb_error_t err = { 0 };
    tb__ckpt_save(dir, l->t, l->n, &info, TB_CKPT_OPTIMIZER, &err);
    _exit(0);  /* the hook never fired */
  }
  int status;
  ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status));
  ASSERT_EQ_INT(WEXITSTATUS(status), 3);
}

TEST(crash_during_save_never_exposes_a_partial_checkpoint) {
  make_tmpdir();
  char *dir = path_in("ckpt");
  lora_t old, neu, got;
  lora_make(&old, RANK, 1.0f);
  lora_make(&neu, RANK, 5.0f);
  lora_make(&got, RANK, 0.0f);
  tb_error_t err = { 0 };

  /* No checkpoint yet: a crash at any point leaves none under the name. */
  static const char *const stages[] = {
    TB_CKPT_WEIGHTS, TB_CKPT_OPTIMIZER_FILE, TB_CKPT_PEFT_CONFIG,
    TB_CKPT_META, "rename",
  };
  for (size_t s = 0; s < 5; s++) {
    save_and_crash(dir, &neu, 9, stages[s]);
    ASSERT_ERR(tb__ckpt_load(dir, got.t, got.n, 0, NULL, &err), TB_ENOENT);
    ASSERT(access(dir, F_OK) != 0);
  }
  /* What the crashes left are hidden temporaries, never the final name. */
  int found;
  ASSERT_EQ_INT(count_entries(tmpdir, ".ckpt.tmp-", &found), 5);
  ASSERT(found);

  /* With an old checkpoint in place, a crash at any stage keeps it whole. */
  tb__ckpt_info_t info = info_for(1);
  ASSERT_OK(tb__ckpt_save(dir, old.t, old.n, &info, TB_CKPT_OPTIMIZER, &err));
  for (size_t s = 0; s < 5; s++) {
    save_and_crash(dir, &neu, 9, stages[s]);
    tb__ckpt_info_t gi;
    lora_zero(&got);
    ASSERT_OK(tb__ckpt_load(dir, got.t, got.n, TB_CKPT_OPTIMIZER, &gi, &err));
    ASSERT_EQ_INT(gi.step, 1);
    tb__ckpt_info_free(&gi);
    ASSERT_EQ_INT(memcmp(old.buf, got.buf, old.floats * sizeof(float)), 0);
  }
  /* And the next successful save replaces it. */
  info = info_for(9);
  ASSERT_OK(tb__ckpt_save(dir, neu.t, neu.n, &info, TB_CKPT_OPTIMIZER, &err));
  ASSERT_OK(tb__ckpt_load(dir, got.t, got.n, TB_CKPT_OPTIMIZER, NULL, &err));
  ASSERT_EQ_INT(memcmp(neu.buf, got.buf, neu.floats * sizeof(float)), 0);

  free(old.buf);
  free(neu.buf);
  free(got.buf);
  tb_error_clear(&err);
  free(dir);
  remove_tmpdir();
}

TEST(peft_export_layout_and_config) {
  make_tmpdir();
  char *dir = path_in("sampler");
  lora_t a;
  lora_make(&a, RANK, 1.0f);
  tb__ckpt_info_t info = info_for(3);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__peft_export(dir, a.t, a.n, &info, &err));
  int found;
  ASSERT_EQ_INT(count_entries(dir, NULL, &found), 2);
  ASSERT(exists(dir, "adapter_model.safetensors"));
  ASSERT(exists(dir, "adapter_config.json"));

  char *st = tb__path_join(dir, "adapter_model.safetensors");
  tb__st_file_t f;
  ASSERT_OK(tb__st_open(&f, st, &err));
  ASSERT_EQ_INT(f.n_tensors, a.n);
  const tb__st_tensor_t *t = tb__st_find(
      &f, "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
  ASSERT(t != NULL);
  ASSERT_EQ_INT(t->shape[0], RANK);
  ASSERT_EQ_INT(t->shape[1], 128);
  t = tb__st_find(&f, "base_model.model.model.layers.0.mlp.down_proj.lora_B."
                  "weight");
  ASSERT(t != NULL);
  ASSERT_EQ_INT(t->shape[0], 128);
  ASSERT_EQ_INT(t->shape[1], RANK);
  t = tb__st_find(&f, "base_model.model.lm_head.lora_B.weight");
  ASSERT(t != NULL);
  ASSERT_EQ_INT(t->shape[0], TB_TOK_VOCAB);
  ASSERT_EQ_INT(t->dtype, TB_ST_F32);
  ASSERT_STR_EQ(tb__st_metadata(&f, "format"), "pt");
  tb__st_close(&f);
  free(st);

  char *cp = tb__path_join(dir, "adapter_config.json");
  json_t *cfg;
  ASSERT_OK(tb__json_read_file(cp, &cfg, &err));
  ASSERT_STR_EQ(json_string_value(json_object_get(cfg, "peft_type")), "LORA");
  ASSERT_STR_EQ(json_string_value(json_object_get(cfg, "task_type")),
                "CAUSAL_LM");
  ASSERT_STR_EQ(json_string_value(json_object_get(cfg, "bias")), "none");
  ASSERT_STR_EQ(json_string_value(
                    json_object_get(cfg, "base_model_name_or_path")), "base");
  ASSERT(json_is_integer(json_object_get(cfg, "r")));
  ASSERT_EQ_INT(json_integer_value(json_object_get(cfg, "r")), RANK);
  ASSERT(json_is_integer(json_object_get(cfg, "lora_alpha")));
  ASSERT_EQ_INT(json_integer_value(json_object_get(cfg, "lora_alpha")), 32);
  ASSERT(json_is_false(json_object_get(cfg, "fan_in_fan_out")));
  json_t *tm = json_object_get(cfg, "target_modules");
  ASSERT_EQ_INT(json_array_size(tm), 4);
  ASSERT_STR_EQ(json_string_value(json_array_get(tm, 0)), "q_proj");
  ASSERT_STR_EQ(json_string_value(json_array_get(tm, 3)), "lm_head");
  json_decref(cfg);
  free(cp);

  /* A PEFT directory loads as weights (info from adapter_config.json). */
  lora_t b;
  lora_make(&b, RANK, 0.0f);
  lora_zero(&b);
  tb__ckpt_info_t got;
  ASSERT_OK(tb__ckpt_load(dir, b.t, b.n, 0, &got, &err));
  ASSERT_EQ_INT(memcmp(a.buf, b.buf, a.floats / 3 * sizeof(float)), 0);
  ASSERT_EQ_INT(got.rank, RANK);
  ASSERT_EQ_INT(got.step, 0);
  ASSERT_EQ_INT(got.has_optimizer, 0);
  ASSERT_STR_EQ(got.targets[1], "v_proj");
  tb__ckpt_info_free(&got);
  free(b.buf);

  /* Export refuses what PEFT could not read. */
  char *bad = path_in("bad");
  const char *keep = a.t[0].name;
  a.t[0].name = "layers.0.q.A";
  ASSERT_ERR(tb__peft_export(bad, a.t, a.n, &info, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "layers.0.q.A is not a PEFT LoRA name");
  a.t[0].name = keep;
  ASSERT_ERR(tb__peft_export(bad, a.t + 1, a.n - 1, &info, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "has no matching");
  info.rank = RANK + 1;
  ASSERT_ERR(tb__peft_export(bad, a.t, a.n, &info, &err), TB_ESHAPE);
  ASSERT(access(bad, F_OK) != 0);
  free(bad);

  free(a.buf);
  tb_error_clear(&err);
  free(dir);
  remove_tmpdir();
}

/* Both kinds of big buffer (calloc below TB__BIGMEM_MIN, huge-page-advised
 * mappings above) come zeroed, take writes everywhere and free cleanly;
 * weights of either size go through them. */
TEST(big_buffers_and_weights_of_both_sizes) {
  const size_t sizes[] = { 1000, TB__BIGMEM_MIN - 4, TB__BIGMEM_MIN,
                           3 * TB__BIGMEM_MIN + 12 };
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    unsigned char *p = tb__big_alloc(sizes[i]);
    ASSERT(p != NULL);
    for (size_t j = 0; j < sizes[i]; j += 4093)
      ASSERT_EQ_INT(p[j], 0);
    ASSERT_EQ_INT(p[sizes[i] - 1], 0);
    memset(p, 0xab, sizes[i]);
    tb__big_free(p, sizes[i]);
  }
  tb__big_free(NULL, TB__BIGMEM_MIN);
  tb__model_config_t c;
  tb__base_model_config(&c);
  c.vocab_size = 1 << 15;  /* 4M floats of embedding: the mapped kind */
  tb__weights_t w;
  ASSERT_OK(tb__weights_alloc(&w, &c));
  ASSERT(w.storage_floats * sizeof(float) >= TB__BIGMEM_MIN);
  ASSERT(w.embed[0] == 0.0f && w.final_norm[c.hidden_size - 1] == 0.0f);
  w.storage[w.storage_floats - 1] = 1.0f;  /* the last float is ours */
  tb__weights_free(&w);
}

TEST_LIST(
  TEST_ENTRY(big_buffers_and_weights_of_both_sizes),
  TEST_ENTRY(base_model_is_deterministic_and_pinned),
  TEST_ENTRY(hf_round_trip_of_base_is_bitwise),
  TEST_ENTRY(hf_sharded_index_with_two_shards),
  TEST_ENTRY(hf_untied_round_trip),
  TEST_ENTRY(hf_loads_f16_and_bf16_weights),
  TEST_ENTRY(hf_missing_tensor_and_wrong_shape_name_the_tensor),
  TEST_ENTRY(hf_config_defaults_and_errors),
  TEST_ENTRY(peft_names),
  TEST_ENTRY(checkpoint_round_trip_with_optimizer_state),
  TEST_ENTRY(checkpoint_load_validates_the_layout),
  TEST_ENTRY(checkpoint_overwrite_is_atomic_and_clean),
  TEST_ENTRY(crash_during_save_never_exposes_a_partial_checkpoint),
  TEST_ENTRY(peft_export_layout_and_config),
)

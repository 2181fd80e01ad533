/*
 * Hugging Face model directories as users bring them: files that are not
 * regular files, config sizes checked before anything is allocated, the
 * supported families (Llama, Qwen2, Qwen3) and the refusals of everything
 * else, sharded and bf16 weights and the memory a load holds.
 */
#define _GNU_SOURCE  /* nftw flags */
#include "tb_test.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "engine/checkpoint.h"
#include "engine/hf_model.h"
#include "engine/jsonfile.h"
#include "engine/safetensors.h"
#include "kernels/kernels.h"

static char tmpdir[64];

static void make_tmpdir(void) {
  strcpy(tmpdir, "/tmp/tb-hf-XXXXXX");
  ASSERT(mkdtemp(tmpdir) != NULL);
}

static int rm_cb(const char *p, const struct stat *st, int flag,
                 struct FTW *ftw) {
  (void)st; (void)flag; (void)ftw;
  return remove(p);
}

static void remove_tmpdir(void) {
  ASSERT_EQ_INT(nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static char *path_in(const char *dir, const char *name) {
  char *p = tb__path_join(dir, name);
  ASSERT(p != NULL);
  return p;
}

/* A small untied Llama. */
static void tiny_config(tb_model_config_t *c) {
  memset(c, 0, sizeof(*c));
  c->hidden_size = 8;
  c->intermediate_size = 12;
  c->num_layers = 2;
  c->num_heads = 2;
  c->num_kv_heads = 1;
  c->head_dim = 4;
  c->vocab_size = 10;
  c->max_position_embeddings = 64;
  c->rms_norm_eps = 1e-6f;
  c->rope_theta = 10000.0f;
}

/* Writes w's model as a directory under tmpdir, random weights. */
static char *write_model(const char *name, const tb_model_config_t *c,
                         size_t shard_bytes) {
  char *dir = path_in(tmpdir, name);
  tb_weights_t w;
  ASSERT_OK(tb__weights_alloc(&w, c));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 3);
  tb__k_rng_fill_uniform(w.storage, &rng, -1, 1, w.storage_floats);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__hf_save(dir, &w, NULL, shard_bytes, &err));
  tb__weights_free(&w);
  return dir;
}

/* Replaces dir/name by a FIFO nobody writes to. */
static void make_fifo(const char *dir, const char *name) {
  char *p = path_in(dir, name);
  unlink(p);
  ASSERT_EQ_INT(mkfifo(p, 0600), 0);
  free(p);
}

/* ------------------------------------------------------------ FIFOs */

/* Every file of a model directory or a checkpoint that a user names may
 * be a FIFO: each is refused at once as not a regular file, where an
 * open(2) for reading used to wait for a writer forever. */
TEST(fifo_files_are_refused_not_waited_on) {
  make_tmpdir();
  tb_model_config_t c;
  tiny_config(&c);
  tb_weights_t w;
  tb_error_t err = { 0 };
  static const char *const names[] = { "model.safetensors", "config.json" };
  for (int i = 0; i < 2; i++) {
    char *dir = write_model(names[i], &c, 0);
    make_fifo(dir, names[i]);
    ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_EINVAL);
    ASSERT_STR_CONTAINS(err.message, names[i]);
    ASSERT_STR_CONTAINS(err.message, "not a regular file");
    free(dir);
  }
  /* Sharded: the index, then one shard. */
  char *dir = write_model("index", &c, 256);
  make_fifo(dir, TB_HF_INDEX);
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "index/model.safetensors.index.json: not "
                      "a regular file");
  free(dir);
  dir = write_model("shard", &c, 256);
  char *ip = path_in(dir, TB_HF_INDEX);
  json_t *index;
  ASSERT_OK(tb__json_read_file(ip, &index, &err));
  free(ip);
  const char *shard = json_string_value(json_object_get(
      json_object_get(index, "weight_map"), "model.norm.weight"));
  ASSERT(shard != NULL);
  make_fifo(dir, shard);
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, shard);
  ASSERT_STR_CONTAINS(err.message, "not a regular file");
  json_decref(index);
  free(dir);

  /* A checkpoint given by path: its metadata and its tensors. */
  char *ck = path_in(tmpdir, "ckpt");
  ASSERT_EQ_INT(mkdir(ck, 0755), 0);
  make_fifo(ck, TB_CKPT_META);
  tb_ckpt_info_t info = { 0 };
  ASSERT_ERR(tb__ckpt_read_info(ck, &info, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "checkpoint.json: not a regular file");
  free(ck);
  ck = path_in(tmpdir, "ckpt2");
  ASSERT_EQ_INT(mkdir(ck, 0755), 0);
  json_t *peft = json_pack("{s:s, s:i, s:i, s:[s]}", "peft_type", "LORA", "r",
                           1, "lora_alpha", 1, "target_modules", "lm_head");
  char *pp = path_in(ck, TB_CKPT_PEFT_CONFIG);
  ASSERT_OK(tb__json_write_file(pp, peft, &err));
  json_decref(peft);
  free(pp);
  make_fifo(ck, TB_CKPT_WEIGHTS);
  tb_ckpt_tensor_t t = { 0 };
  float x[4];
  t.name = "base_model.model.lm_head.lora_A.weight";
  t.ndim = 2;
  t.shape[0] = 1;
  t.shape[1] = 4;
  t.data = x;
  ASSERT(tb__ckpt_load(ck, &t, 1, 0, NULL, &err) != 0);
  ASSERT_STR_CONTAINS(err.message, "not a regular file");
  free(ck);
  tb_error_clear(&err);
  remove_tmpdir();
}

TEST_LIST(
  TEST_ENTRY_TIMEOUT(fifo_files_are_refused_not_waited_on, 20000),
)

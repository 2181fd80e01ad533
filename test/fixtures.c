/*
 * The shared fixtures of fixtures.h.
 */
#define _GNU_SOURCE  /* nftw flags */
#include "fixtures.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/jsonfile.h"
#include "kernels/kernels.h"
#include "tb_test.h"

tb__model_config_t tb_test_config(int hidden, int intermediate, int layers, int heads,
                                  int kv_heads, int head_dim, int vocab, int max_positions,
                                  float rms_norm_eps, float rope_theta) {
  return (tb__model_config_t){
    .hidden_size = hidden, .intermediate_size = intermediate, .num_layers = layers,
    .num_heads = heads, .num_kv_heads = kv_heads, .head_dim = head_dim, .vocab_size = vocab,
    .max_position_embeddings = max_positions, .rms_norm_eps = rms_norm_eps,
    .rope_theta = rope_theta,
  };
}

tb__model_config_t tb_test_tiny_config(void) {
  return tb_test_config(16, 24, 2, 4, 2, 4, 37, 64, 1e-5f, 10000.0f);
}

void tb_test_random_model(tb__weights_t *w, const tb__model_config_t *c, uint64_t seed) {
  ASSERT_OK(tb__weights_alloc(w, c));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  tb__k_rng_fill_normal(w->storage, &rng, 0.0f, 0.4f, w->storage_floats);
  size_t C = (size_t)c->hidden_size;
  for (int l = 0; l < c->num_layers; l++) {
    tb__k_rng_fill_uniform((float *)w->layers[l].attn_norm, &rng, 0.8f, 1.2f, C);
    tb__k_rng_fill_uniform((float *)w->layers[l].mlp_norm, &rng, 0.8f, 1.2f, C);
  }
  tb__k_rng_fill_uniform((float *)w->final_norm, &rng, 0.8f, 1.2f, C);
}

void tb_test_uniform_model(tb__weights_t *w, const tb__model_config_t *c, uint64_t seed,
                           float lo, float hi) {
  ASSERT_OK(tb__weights_alloc(w, c));
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  tb__k_rng_fill_uniform(w->storage, &rng, lo, hi, w->storage_floats);
}

tb__lora_config_t tb_test_all_targets(int rank, uint64_t seed) {
  tb__lora_config_t lc = { 0 };
  lc.rank = rank;
  lc.seed = seed;
  lc.train_attn = lc.train_mlp = lc.train_unembed = 1;
  return lc;
}

void tb_test_tmpdir(char *dir, const char *prefix) {
  ASSERT(snprintf(dir, 64, "/tmp/%s-XXXXXX", prefix) < 64);
  ASSERT(mkdtemp(dir) != NULL);
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st; (void)flag; (void)ftw;
  return remove(p);
}

void tb_test_tmpdir_remove(const char *dir) {
  ASSERT_EQ_INT(nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS), 0);
}

char *tb_test_path_in(const char *dir, const char *name) {
  char *p = tb__path_join(dir, name);
  ASSERT(p != NULL);
  return p;
}

void tb_test_temp_file(char *path, const char *text) {
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  ASSERT_EQ_INT(write(fd, text, strlen(text)), (long)strlen(text));
  close(fd);
}

char *tb_test_repeat(const char *prefix, char c, size_t n, const char *suffix) {
  size_t lp = strlen(prefix), ls = strlen(suffix);
  char *s = xmalloc(lp + n + ls + 1);
  memcpy(s, prefix, lp);
  memset(s + lp, c, n);
  memcpy(s + lp + n, suffix, ls + 1);
  return s;
}

static void on_copy_written(uv_write_t *w, int status) {
  (void)status;
  free(w->data);
  free(w);
}

void tb_test_write_copy(uv_stream_t *stream, const void *data, size_t n) {
  uv_write_t *w = xmalloc(sizeof(*w));
  char *copy = xmalloc(n);
  memcpy(copy, data, n);
  w->data = copy;
  uv_buf_t b = uv_buf_init(copy, (unsigned)n);
  ASSERT_OK(uv_write(w, stream, &b, 1, on_copy_written));
}

/*
 * The helpers of model_dirs.h.
 */
#include "model_dirs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/hf_model.h"
#include "kernels/kernels.h"

int tb_test_write_model(const char *dir, tb__model_arch_t arch, int vocab, uint64_t seed) {
  tb__model_config_t c;
  memset(&c, 0, sizeof(c));
  c.arch = arch;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = arch == TB_ARCH_QWEN3 ? 16 : 8;
  c.vocab_size = vocab;
  c.max_position_embeddings = 1024;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = arch == TB_ARCH_QWEN3 ? 1000000.0f : 500000.0f;
  c.tie_word_embeddings = arch != TB_ARCH_LLAMA;
  c.qk_norm = arch == TB_ARCH_QWEN3;
  c.qkv_bias = arch == TB_ARCH_QWEN2;
  tb__weights_t w;
  if (tb__weights_alloc(&w, &c) != 0) {
    fprintf(stderr, "%s: cannot allocate the weights\n", dir);
    return -1;
  }
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, seed);
  tb__k_rng_fill_normal(w.storage, &rng, 0.0f, 0.02f, w.storage_floats);
  /* Norm weights are 1, as a trained model's are near. */
  for (int l = 0; l < c.num_layers; l++) {
    for (int i = 0; i < c.hidden_size; i++)
      ((float *)w.layers[l].attn_norm)[i] = ((float *)w.layers[l].mlp_norm)[i] = 1.0f;
    for (int i = 0; c.qk_norm && i < c.head_dim; i++)
      ((float *)w.layers[l].q_norm)[i] = ((float *)w.layers[l].k_norm)[i] = 1.0f;
  }
  for (int i = 0; i < c.hidden_size; i++)
    ((float *)w.final_norm)[i] = 1.0f;
  tb_error_t err = { 0 };
  int rc = tb__hf_save(dir, &w, NULL, 0, &err);
  if (rc != 0)
    fprintf(stderr, "writing %s: %s\n", dir, tb_error_message(&err));
  tb_error_clear(&err);
  tb__weights_free(&w);
  return rc ? -1 : 0;
}

int tb_test_copy_tokenizer(const char *src_dir, const char *dir) {
  char cmd[4096];
  snprintf(cmd, sizeof(cmd),
           "for f in tokenizer.json tokenizer_config.json; do [ ! -e '%s'/$f ] || "
           "cp '%s'/$f '%s'/ || exit 1; done",
           src_dir, src_dir, dir);
  return system(cmd) == 0 ? 0 : -1;
}

int tb_test_write_file(const char *dir, const char *name, const char *text) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (f == NULL || fputs(text, f) < 0) {
    fprintf(stderr, "cannot write %s\n", path);
    if (f != NULL)
      fclose(f);
    return -1;
  }
  return fclose(f) == 0 ? 0 : -1;
}

int tb_test_remove_tree(const char *dir) {
  char cmd[4096];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/*
 * The generated `base` model (see base_model.h).
 *
 * The generator is private to this file on purpose: the bytes of `base`
 * are pinned by a hash in the tests, and they must not move when some
 * other part of the engine changes its own random numbers.
 */
#include "engine/base_model.h"

#include <stdlib.h>
#include <string.h>

#include "engine/hf_model.h"
#include "text/base_vocab.h"

void tb__base_model_config(tb__model_config_t *c) {
  memset(c, 0, sizeof(*c));
  c->hidden_size = 128;
  c->intermediate_size = 384;
  c->num_layers = 4;
  c->num_heads = 4;
  c->num_kv_heads = 2;
  c->head_dim = 32;
  c->vocab_size = TB_TOK_VOCAB;
  c->max_position_embeddings = 2048;
  c->rms_norm_eps = 1e-5f;
  c->rope_theta = 10000.0f;
  c->tie_word_embeddings = 1;
}

/* splitmix64 (Steele, Lea, Flood 2014): tiny, fast and fully specified. */
static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits (exact in a double). */
static double uniform(uint64_t *state) {
  return (double)(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Irwin-Hall: the sum of 12 uniforms minus 6 has mean 0, variance 1 and a
 * close-to-normal shape (bounded at +-6).  Only IEEE additions in a fixed
 * order, so it is bit-identical everywhere. */
static double normal(uint64_t *state) {
  double s = 0.0;
  for (int i = 0; i < 12; i++)
    s += uniform(state);
  return s - 6.0;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

int tb__base_model_generate(tb__weights_t *w) {
  tb__model_config_t c;
  tb__base_model_config(&c);
  int rc = tb__weights_alloc(w, &c);
  if (rc != 0)
    return rc;
  tb__hf_tensor_t *ts = calloc(tb__hf_tensor_count(&c), sizeof(*ts));
  if (ts == NULL) {
    tb__weights_free(w);
    return TB_ENOMEM;
  }
  size_t n = tb__hf_tensors(&c, w, ts);
  /* 1/sqrt(8) for L = 4, written out so no libm call is involved. */
  const double out_scale = 0.35355339059327373;
  for (size_t i = 0; i < n; i++) {
    float *p = (float *)ts[i].data;
    size_t numel = (size_t)ts[i].shape[0] *
                   (ts[i].ndim == 2 ? (size_t)ts[i].shape[1] : 1);
    if (ts[i].ndim == 1) {
      for (size_t j = 0; j < numel; j++)
        p[j] = 1.0f;
      continue;
    }
    double std = 0.02;
    if (ends_with(ts[i].name, "o_proj.weight") ||
        ends_with(ts[i].name, "down_proj.weight"))
      std *= out_scale;
    uint64_t state = TB_BASE_MODEL_SEED ^
                     ((uint64_t)(i + 1) * UINT64_C(0xd1b54a32d192ed03));
    for (size_t j = 0; j < numel; j++)
      p[j] = (float)(normal(&state) * std);
  }
  free(ts);
  return 0;
}

int tb__base_model_save(const char *dir, tb_error_t *err) {
  tb__weights_t w;
  if (tb__base_model_generate(&w) != 0)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  json_t *extra = json_pack("{s:i, s:i, s:i, s:s}", "bos_token_id",
                            TB_TOK_BOS, "eos_token_id", TB_TOK_EOS,
                            "pad_token_id", TB_TOK_PAD, "_name_or_path",
                            TB_BASE_MODEL_NAME);
  int rc = extra == NULL
               ? tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                              "out of memory")
               : tb__hf_save(dir, &w, extra, 0, err);
  json_decref(extra);
  tb__weights_free(&w);
  return rc;
}

int tb__model_weights_load(const char *model, tb__weights_t *w,
                           tb_error_t *err) {
  if (strcmp(model, TB_BASE_MODEL_NAME) == 0) {
    if (tb__base_model_generate(w) != 0)
      return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                          "out of memory");
    return 0;
  }
  return tb__hf_load(model, w, err);
}

uint64_t tb__weights_hash(const tb__weights_t *w) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < w->storage_floats; i++) {
    uint32_t bits;
    memcpy(&bits, &w->storage[i], sizeof(bits));
    for (int b = 0; b < 4; b++) {
      h ^= (bits >> (8 * b)) & 0xffu;
      h *= UINT64_C(0x100000001b3);
    }
  }
  return h;
}

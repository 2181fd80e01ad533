/*
 * The engine benchmarks' shared setup (bench_model.h).
 */
#define _GNU_SOURCE /* program_invocation_short_name */
#include "bench_model.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "engine/hf_model.h"
#include "kernels/kernels.h"

void die(const char *what, int rc) {
  fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
          tb_strerror(rc));
  exit(1);
}

void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) {
    fprintf(stderr, "%s: out of memory (%zu bytes)\n",
            program_invocation_short_name, n);
    exit(1);
  }
  return p;
}

double now_s(void) { return (double)uv_hrtime() / 1e9; }

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  return v[n / 2];
}

tb__model_config_t bench_smollm_config(void) {
  return (tb__model_config_t){
    .hidden_size = 576, .intermediate_size = 1536, .num_layers = 30,
    .num_heads = 9, .num_kv_heads = 3, .head_dim = 64, .vocab_size = 49152,
    .max_position_embeddings = 8192, .rms_norm_eps = 1e-5f,
    .rope_theta = 100000.0f, .tie_word_embeddings = 1,
  };
}

void bench_random_weights(tb__weights_t *w, const tb__model_config_t *c) {
  int rc = tb__weights_alloc(w, c);
  if (rc != 0)
    die("weights", rc);
  tb__k_rng_t rng;
  tb__k_rng_seed(&rng, 2024);
  tb__k_rng_fill_uniform(w->storage, &rng, -0.0346f, 0.0346f,
                         w->storage_floats);
  /* The norms by their checkpoint names, so that every architecture's
   * (q/k norms too) are found. */
  tb__hf_tensor_t *ts = xmalloc(tb__hf_tensor_count(c) * sizeof(*ts));
  size_t n = tb__hf_tensors(c, w, ts);
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(ts[i].name);
    if (len > 11 && strcmp(ts[i].name + len - 11, "norm.weight") == 0)
      for (int64_t j = 0; j < ts[i].shape[0]; j++)
        ((float *)ts[i].data)[j] = 1.0f;
  }
  free(ts);
}

void bench_round_bf16(tb__weights_t *w) {
  uint16_t h;
  for (size_t i = 0; i < w->storage_floats; i++) {
    tb__k_bf16_from_f32(&h, &w->storage[i], 1);
    uint32_t u = (uint32_t)h << 16;
    memcpy(&w->storage[i], &u, sizeof(u));
  }
}

void bench_peer_script(char *out, size_t cap, const char *env_var, const char *name) {
  const char *env = getenv(env_var);
  if (env != NULL && env[0] != '\0') {
    snprintf(out, cap, "%s", env);
    return;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  exe[n > 0 ? n : 0] = '\0';
  snprintf(out, cap, "%s/%s", dirname(exe), name);
  if (access(out, R_OK) == 0)
    return;
  /* The source tree: this file's directory, absolute or relative to the
   * build directory above the program's. */
  char src[PATH_MAX];
  snprintf(src, sizeof(src), "%s", __FILE__);
  const char *srcdir = dirname(src);
  if (srcdir[0] == '/') {
    snprintf(out, cap, "%s/%s", srcdir, name);
    return;
  }
  n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  exe[n > 0 ? n : 0] = '\0';
  snprintf(out, cap, "%s/../%s/%s", dirname(exe), srcdir, name);
}

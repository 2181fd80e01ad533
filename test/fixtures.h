/*
 * Fixtures the tests share: a tiny model (its config and random weights),
 * the adapter config that trains everything, a temporary directory
 * removed with what it holds, long strings and writes of a copy for the
 * HTTP tests.  Each fails the test (ASSERT) instead of returning an
 * error.
 */
#ifndef TB_TEST_FIXTURES_H
#define TB_TEST_FIXTURES_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engine/lora.h"
#include "engine/weights.h"

/* An untied Llama config of these dimensions (the rest 0: no biases, no
 * q/k norms, plain rotary), a table row in one call. */
tb__model_config_t tb_test_config(int hidden, int intermediate, int layers, int heads,
                                  int kv_heads, int head_dim, int vocab, int max_positions,
                                  float rms_norm_eps, float rope_theta);
/* A tiny untied Llama: hidden 16, 2 layers, 4 heads over 2 KV heads of
 * head_dim 4, vocabulary 37, 64 positions. */
tb__model_config_t tb_test_tiny_config(void);
/* Weights of c drawn from seed: normal(0, 0.4), norm weights uniform in
 * [0.8, 1.2] so that every path matters.  Free with tb__weights_free. */
void tb_test_random_model(tb__weights_t *w, const tb__model_config_t *c, uint64_t seed);
/* Weights of c all uniform in [lo, hi) from seed.  Free with
 * tb__weights_free. */
void tb_test_uniform_model(tb__weights_t *w, const tb__model_config_t *c, uint64_t seed,
                           float lo, float hi);
/* LoRA of rank on attention, MLP and unembedding. */
tb__lora_config_t tb_test_all_targets(int rank, uint64_t seed);

/* Makes a directory /tmp/<prefix>-XXXXXX into dir (64 bytes). */
void tb_test_tmpdir(char *dir, const char *prefix);
/* Removes dir and everything in it. */
void tb_test_tmpdir_remove(const char *dir);
/* dir/name, malloc'd. */
char *tb_test_path_in(const char *dir, const char *name);
/* Makes a file from path, a mkstemp template ending in XXXXXX, holding text. */
void tb_test_temp_file(char *path, const char *text);

/* prefix, then n times c, then suffix: malloc'd. */
char *tb_test_repeat(const char *prefix, char c, size_t n, const char *suffix);

/* Writes a copy of data[0..n) to stream, freed once written. */
void tb_test_write_copy(uv_stream_t *stream, const void *data, size_t n);

#endif

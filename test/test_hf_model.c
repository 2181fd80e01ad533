/*
 * Hugging Face model directories as users bring them: files that are not
 * regular files, config sizes checked before anything is allocated, the
 * supported families (Llama, Qwen2, Qwen3) and the refusals of everything
 * else, sharded and bf16 weights and the memory a load holds.
 */
#define _GNU_SOURCE  /* nftw flags */
#include "tb_test.h"
#include "fixtures.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "engine/checkpoint.h"
#include "engine/hf_model.h"
#include "engine/jsonfile.h"
#include "engine/llama.h"
#include "engine/lora.h"
#include "engine/safetensors.h"
#include "kernels/kernels.h"

static char tmpdir[64];
static void make_tmpdir(void) { tb_test_tmpdir(tmpdir, "tb-hf"); }
static void remove_tmpdir(void) { tb_test_tmpdir_remove(tmpdir); }
#define path_in tb_test_path_in

/* A small untied Llama. */
static void tiny_config(tb__model_config_t *c) {
  *c = tb_test_config(8, 12, 2, 2, 1, 4, 10, 64, 1e-6f, 10000.0f);
}

/* Writes w's model as a directory under tmpdir, random weights. */
static char *write_model(const char *name, const tb__model_config_t *c,
                         size_t shard_bytes) {
  char *dir = path_in(tmpdir, name);
  tb__weights_t w;
  tb_test_uniform_model(&w, c, 3, -1, 1);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__hf_save(dir, &w, NULL, shard_bytes, &err));
  tb__weights_free(&w);
  return dir;
}

/* Replaces dir/name by a FIFO nobody writes to. */
static void make_fifo(const char *dir, const char *name) {
  char *p = path_in(dir, name);
  unlink(p);
  ASSERT_EQ_INT(mkfifo(p, 0600), 0);
  free(p);
}

/* ------------------------------------------------------------ FIFOs */

/* Loading the model directory dir fails with rc, saying want. */
static void load_fails(const char *dir, int rc, const char *want) {
  tb__weights_t w;
  tb_error_t err = { 0 };
  ASSERT_ERR(tb__hf_load(dir, &w, &err), rc);
  ASSERT_STR_CONTAINS(err.message, want);
  tb_error_clear(&err);
}

/* Every file of a model directory or a checkpoint that a user names may
 * be a FIFO: each is refused at once as not a regular file, where an
 * open(2) for reading used to wait for a writer forever. */
TEST(fifo_files_are_refused_not_waited_on) {
  make_tmpdir();
  tb__model_config_t c;
  tiny_config(&c);
  tb__weights_t w;
  tb_error_t err = { 0 };
  static const char *const names[] = { "model.safetensors", "config.json" };
  for (int i = 0; i < 2; i++) {
    char *dir = write_model(names[i], &c, 0);
    make_fifo(dir, names[i]);
    ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_EINVAL);
    ASSERT_STR_CONTAINS(err.message, names[i]);
    ASSERT_STR_CONTAINS(err.message, "not a regular file");
    free(dir);
  }
  /* Sharded: the index, then one shard. */
  char *dir = write_model("index", &c, 256);
  make_fifo(dir, TB_HF_INDEX);
  load_fails(dir, TB_EINVAL, "index/model.safetensors.index.json: not "
                             "a regular file");
  free(dir);
  dir = write_model("shard", &c, 256);
  char *ip = path_in(dir, TB_HF_INDEX);
  json_t *index;
  ASSERT_OK(tb__json_read_file(ip, &index, &err));
  free(ip);
  const char *shard = json_string_value(json_object_get(
      json_object_get(index, "weight_map"), "model.norm.weight"));
  ASSERT(shard != NULL);
  make_fifo(dir, shard);
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, shard);
  ASSERT_STR_CONTAINS(err.message, "not a regular file");
  json_decref(index);
  free(dir);

  /* A checkpoint given by path: its metadata and its tensors. */
  char *ck = path_in(tmpdir, "ckpt");
  ASSERT_EQ_INT(mkdir(ck, 0755), 0);
  make_fifo(ck, TB_CKPT_META);
  tb__ckpt_info_t info = { 0 };
  ASSERT_ERR(tb__ckpt_read_info(ck, &info, &err), TB_EINVAL);
  ASSERT_STR_CONTAINS(err.message, "checkpoint.json: not a regular file");
  free(ck);
  ck = path_in(tmpdir, "ckpt2");
  ASSERT_EQ_INT(mkdir(ck, 0755), 0);
  json_t *peft = json_pack("{s:s, s:i, s:i, s:[s]}", "peft_type", "LORA", "r",
                           1, "lora_alpha", 1, "target_modules", "lm_head");
  char *pp = path_in(ck, TB_CKPT_PEFT_CONFIG);
  ASSERT_OK(tb__json_write_file(pp, peft, &err));
  json_decref(peft);
  free(pp);
  make_fifo(ck, TB_CKPT_WEIGHTS);
  tb__ckpt_tensor_t t = { 0 };
  float x[4];
  t.name = "base_model.model.lm_head.lora_A.weight";
  t.ndim = 2;
  t.shape[0] = 1;
  t.shape[1] = 4;
  t.data = x;
  ASSERT(tb__ckpt_load(ck, &t, 1, 0, NULL, &err) != 0);
  ASSERT_STR_CONTAINS(err.message, "not a regular file");
  free(ck);
  tb_error_clear(&err);
  remove_tmpdir();
}

/* ------------------------------------------------------------ config sizes */

/* Writes config.json text into dir (which holds the tiny model). */
static void write_config_text(const char *dir, const char *text) {
  char *p = path_in(dir, TB_HF_CONFIG);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__file_write_atomic(p, text, strlen(text), &err));
  free(p);
}

/* The tiny model's config.json with one member set (value is JSON text;
 * NULL removes the member). */
static void edit_config(const char *dir, const tb__model_config_t *c,
                        const char *key, const char *value) {
  json_t *j = tb__hf_config_to_json(c);
  ASSERT(j != NULL);
  if (value == NULL) {
    json_object_del(j, key);
  } else {
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    ASSERT(v != NULL);
    ASSERT_OK(json_object_set_new(j, key, v));
  }
  char *text = json_dumps(j, JSON_COMPACT);
  write_config_text(dir, text);
  free(text);
  json_decref(j);
}

/* A config's sizes are bounded, and checked against the tensors before
 * the weights are allocated: num_hidden_layers 2^30 used to ask for a
 * 72 GiB allocation (and answered "out of memory"). */
TEST(config_sizes_are_checked_before_allocating) {
  make_tmpdir();
  tb__model_config_t c;
  tiny_config(&c);
  char *dir = write_model("m", &c, 0);
  tb__weights_t w;
  tb_error_t err = { 0 };

  edit_config(dir, &c, "num_hidden_layers", "1073741824");
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_EFIELD);
  ASSERT_STR_CONTAINS(err.message, "m/config.json: num_hidden_layers: "
                      "1073741824 is out of range [1, 1024]");
  ASSERT(w.storage == NULL);
  static const char *const big[][2] = {
    { "hidden_size", "1048576" }, { "intermediate_size", "2147483647" },
    { "vocab_size", "4294967296" }, { "num_attention_heads", "65536" },
    { "num_key_value_heads", "99999" }, { "head_dim", "4096" },
    { "max_position_embeddings", "1099511627776" },
  };
  for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
    edit_config(dir, &c, big[i][0], big[i][1]);
    ASSERT(tb__hf_load(dir, &w, &err) != 0);
    ASSERT_STR_CONTAINS(err.message, big[i][0]);
    ASSERT_STR_CONTAINS(err.message, "out of range");
  }

  /* Within the bounds but more than the files hold: the tensor check
   * names the tensor and the field, and nothing was allocated. */
  edit_config(dir, &c, "num_hidden_layers", "1000");
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_ENOENT);
  ASSERT_STR_CONTAINS(err.message, "config.json num_hidden_layers is 1000: ");
  ASSERT_STR_CONTAINS(err.message, "tensor model.layers.2.input_layernorm."
                      "weight is missing");
  edit_config(dir, &c, "vocab_size", "4194304");
  load_fails(dir, TB_ESHAPE, "tensor model.embed_tokens.weight has "
                             "shape [10, 8], expected [4194304, 8] (config.json "
                             "vocab_size, hidden_size)");
  edit_config(dir, &c, "head_dim", "8");
  ASSERT_ERR(tb__hf_load(dir, &w, &err), TB_ESHAPE);
  ASSERT_STR_CONTAINS(err.message, "(config.json num_attention_heads * "
                      "head_dim, hidden_size)");
  ASSERT(w.storage == NULL && w.layers == NULL);
  edit_config(dir, &c, "head_dim", "4");
  ASSERT_OK(tb__hf_load(dir, &w, &err));
  tb__weights_free(&w);
  free(dir);
  tb_error_clear(&err);
  remove_tmpdir();
}

/* ------------------------------------------------------------ families */

static void family_config(tb__model_config_t *c, tb__model_arch_t arch) {
  tiny_config(c);
  c->arch = arch;
  c->tie_word_embeddings = arch != TB_ARCH_LLAMA;
  if (arch == TB_ARCH_LLAMA) {
    c->rope_type = TB_ROPE_LLAMA3;
    c->rope_factor = 32.0f;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_position_embeddings = 8192;
  }
  c->qkv_bias = arch == TB_ARCH_QWEN2;
  c->qk_norm = arch == TB_ARCH_QWEN3;
  if (arch == TB_ARCH_QWEN3)
    c->head_dim = 6;  /* 2 heads of 6 over hidden 8 */
}

/* Each family saves and loads back bit for bit, its switches read from
 * config.json and its extra tensors (biases, head norms) under their
 * Hugging Face names. */
TEST(families_round_trip) {
  make_tmpdir();
  for (int a = 0; a < TB_ARCH_COUNT; a++) {
    tb__model_config_t c;
    family_config(&c, (tb__model_arch_t)a);
    char *dir = write_model(tb__model_arch_type(a), &c, 0);
    tb__weights_t w, x;
    tb_error_t err = { 0 };
    ASSERT_OK(tb__hf_load(dir, &w, &err));
    ASSERT_EQ_INT(memcmp(&w.config, &c, sizeof(c)), 0);
    tb_test_uniform_model(&x, &c, 3, -1, 1);  /* what write_model wrote */
    ASSERT_EQ_INT(w.storage_floats, x.storage_floats);
    ASSERT_EQ_INT(memcmp(w.storage, x.storage, w.storage_floats * 4), 0);
    ASSERT((w.layers[1].bq != NULL) == (a == TB_ARCH_QWEN2));
    ASSERT((w.layers[1].q_norm != NULL) == (a == TB_ARCH_QWEN3));
    tb__st_file_t f;
    char *st = path_in(dir, TB_HF_WEIGHTS);
    ASSERT_OK(tb__st_open(&f, st, &err));
    ASSERT_EQ_INT(f.n_tensors, tb__hf_tensor_count(&c));
    if (a == TB_ARCH_QWEN2)
      ASSERT(tb__st_find(&f, "model.layers.1.self_attn.v_proj.bias") != NULL);
    if (a == TB_ARCH_QWEN3)
      ASSERT(tb__st_find(&f, "model.layers.1.self_attn.k_norm.weight") !=
             NULL);
    tb__st_close(&f);
    free(st);
    tb__weights_free(&w);
    tb__weights_free(&x);
    free(dir);
  }
  remove_tmpdir();
}

/* Everything the math does not compute is refused at load, with one line
 * naming config.json, the field and its value. */
TEST(unsupported_configs_name_the_field_and_value) {
  make_tmpdir();
  static const struct {
    tb__model_arch_t arch;
    const char *key, *value, *message;
  } cases[] = {
    { TB_ARCH_LLAMA, "architectures", "[\"MistralForCausalLM\"]",
      "config.json: architectures: \"MistralForCausalLM\" is not supported" },
    { TB_ARCH_QWEN3, "architectures", "[\"Qwen3MoeForCausalLM\"]",
      "architectures: \"Qwen3MoeForCausalLM\" is not supported" },
    { TB_ARCH_LLAMA, "architectures", "[\"LlamaForCausalLM\", \"X\"]",
      "architectures: [\"LlamaForCausalLM\", \"X\"] is not one supported" },
    { TB_ARCH_QWEN3, "model_type", "\"qwen2\"",
      "model_type: \"qwen2\" does not match architectures Qwen3ForCausalLM" },
    { TB_ARCH_QWEN2, "num_experts", "64",
      "num_experts: 64 is not supported (mixture of experts)" },
    { TB_ARCH_LLAMA, "num_local_experts", "8",
      "num_local_experts: 8 is not supported (mixture of experts)" },
    { TB_ARCH_QWEN2, "use_sliding_window", "true",
      "use_sliding_window: true is not supported (sliding-window" },
    { TB_ARCH_QWEN3, "layer_types", "[\"full_attention\", "
      "\"sliding_attention\"]",
      "layer_types[1]: \"sliding_attention\" is not supported" },
    { TB_ARCH_LLAMA, "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": "
      "4.0}", "rope_scaling.rope_type: \"yarn\" is not supported" },
    { TB_ARCH_QWEN2, "rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2}",
      "rope_scaling.type: \"dynamic\" is not supported" },
    { TB_ARCH_LLAMA, "rope_scaling", "{\"rope_type\": \"llama3\", "
      "\"low_freq_factor\": 1, \"high_freq_factor\": 4, "
      "\"original_max_position_embeddings\": 8192}",
      "rope_scaling.factor: required field is missing" },
    { TB_ARCH_LLAMA, "attention_bias", "true",
      "attention_bias: true is not supported (biases on the attention "
      "projections, o_proj included)" },
    { TB_ARCH_QWEN3, "attention_bias", "true", "attention_bias: true" },
    { TB_ARCH_LLAMA, "mlp_bias", "true", "mlp_bias: true is not supported" },
    { TB_ARCH_QWEN3, "hidden_act", "\"gelu_pytorch_tanh\"",
      "hidden_act: \"gelu_pytorch_tanh\" is not supported" },
    { TB_ARCH_QWEN2, "quantization_config", "{\"quant_method\": \"awq\"}",
      "quantization_config: {\"quant_method\": \"awq\"} is not supported" },
    { TB_ARCH_LLAMA, "partial_rotary_factor", "0.5",
      "partial_rotary_factor: 0.5 is not supported" },
  };
  tb__weights_t w;
  tb_error_t err = { 0 };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    tb__model_config_t c;
    family_config(&c, cases[i].arch);
    char name[16];
    snprintf(name, sizeof(name), "case%zu", i);
    char *dir = write_model(name, &c, 0);
    ASSERT_OK(tb__hf_load(dir, &w, &err));  /* as written, it loads */
    tb__weights_free(&w);
    edit_config(dir, &c, cases[i].key, cases[i].value);
    int rc = tb__hf_load(dir, &w, &err);
    if (rc == 0 || strstr(err.message, cases[i].message) == NULL)
      fprintf(stderr, "case %zu (%s): %s\n", i, cases[i].key,
              rc == 0 ? "loaded" : err.message);
    ASSERT(rc == TB_EUNSUPPORTED || rc == TB_EFIELD);
    ASSERT_STR_CONTAINS(err.message, "config.json: ");
    ASSERT_STR_CONTAINS(err.message, cases[i].message);
    ASSERT(strchr(err.message, '\n') == NULL);
    ASSERT(w.storage == NULL);
    free(dir);
  }
  /* Neither architectures nor model_type: the family is unknown. */
  tb__model_config_t c;
  family_config(&c, TB_ARCH_LLAMA);
  char *dir = write_model("anon", &c, 0);
  json_t *j = tb__hf_config_to_json(&c);
  json_object_del(j, "architectures");
  json_object_del(j, "model_type");
  char *text = json_dumps(j, 0);
  write_config_text(dir, text);
  free(text);
  json_decref(j);
  load_fails(dir, TB_EFIELD, "config.json: architectures: missing");
  free(dir);
  tb_error_clear(&err);
  remove_tmpdir();
}

/* The tensors must be those the config declares: a Qwen3 file under a
 * Llama config (its head norms would be dropped), a Qwen2 file without a
 * bias, or with a bias on o_proj. */
TEST(tensors_the_config_does_not_declare_are_refused) {
  make_tmpdir();
  tb__model_config_t q3, q2;
  family_config(&q3, TB_ARCH_QWEN3);
  family_config(&q2, TB_ARCH_QWEN2);
  tb_error_t err = { 0 };
  char *dir = write_model("q3", &q3, 0);
  tb__model_config_t as_llama = q3;
  as_llama.arch = TB_ARCH_LLAMA;
  as_llama.qk_norm = 0;
  edit_config(dir, &as_llama, "model_type", "\"llama\"");
  load_fails(dir, TB_EUNSUPPORTED, "q3/model.safetensors: tensor "
                                   "model.layers.0.self_attn.k_norm.weight is not part of "
                                   "a LlamaForCausalLM as config.json describes it");
  free(dir);

  /* A Qwen2 directory whose file lacks the biases: a Llama's file. */
  tb__model_config_t l = q2;
  l.arch = TB_ARCH_LLAMA;
  l.qkv_bias = 0;
  dir = write_model("q2", &l, 0);
  edit_config(dir, &q2, "model_type", "\"qwen2\"");
  load_fails(dir, TB_ENOENT, "tensor model.layers.0.self_attn.q_proj."
                             "bias is missing");
  free(dir);

  /* An o_proj bias beside Qwen2's own. */
  dir = write_model("q2o", &q2, 0);
  char *st = path_in(dir, TB_HF_WEIGHTS);
  tb__weights_t x;
  ASSERT_OK(tb__weights_alloc(&x, &q2));
  size_t cap = tb__hf_tensor_count(&q2) + 1;
  tb__hf_tensor_t *ts = calloc(cap, sizeof(*ts));
  tb__st_out_t *outs = calloc(cap, sizeof(*outs));
  size_t n = tb__hf_tensors(&q2, &x, ts);
  for (size_t i = 0; i < n; i++) {
    outs[i].name = ts[i].name;
    outs[i].ndim = ts[i].ndim;
    outs[i].shape[0] = ts[i].shape[0];
    outs[i].shape[1] = ts[i].shape[1];
    outs[i].data = ts[i].data;
  }
  outs[n].name = "model.layers.1.self_attn.o_proj.bias";
  outs[n].ndim = 1;
  outs[n].shape[0] = q2.hidden_size;
  outs[n].data = x.storage;
  ASSERT_OK(tb__st_write(st, outs, n + 1, NULL, &err));
  load_fails(dir, TB_EUNSUPPORTED, "tensor model.layers.1.self_attn.o_proj."
                                   "bias is not part of a Qwen2ForCausalLM");
  free(ts);
  free(outs);
  free(st);
  tb__weights_free(&x);
  free(dir);
  tb_error_clear(&err);
  remove_tmpdir();
}

/* The sampling path of each family (prefill and decode over a KV cache,
 * with the biases, the head norms and Llama 3's frequencies) gives the
 * logits of the full forward; the full forward itself is checked against
 * PyTorch in test_torch_reference. */
TEST(families_kv_cache_decode_equals_full_forward) {
  for (int a = 0; a < TB_ARCH_COUNT; a++) {
    tb__model_config_t c;
    family_config(&c, (tb__model_arch_t)a);
    c.vocab_size = 23;
    /* Positions up to 12 with original_max_position_embeddings 16 put
     * frequencies in all three of Llama 3's bands. */
    c.rope_original_max_position_embeddings =
        a == TB_ARCH_LLAMA ? 16 : 0;
    c.rope_theta = a == TB_ARCH_LLAMA ? 100.0f : c.rope_theta;
    tb__weights_t w;
    ASSERT_OK(tb__weights_alloc(&w, &c));
    tb__k_rng_t rng;
    tb__k_rng_seed(&rng, 40 + (uint64_t)a);
    tb__k_rng_fill_normal(w.storage, &rng, 0.0f, 0.5f, w.storage_floats);
    tb__lora_t lora;
    tb__lora_config_t lc = { 2, 9, 4.0f, 1, 1, 1 };
    ASSERT_OK(tb__lora_init(&lora, &c, &lc));
    tb__k_rng_fill_uniform(lora.params, &rng, -0.3f, 0.3f, lora.num_params);
    enum { N = 12, V = 23 };
    int32_t seq[N] = { 3, 14, 15, 9, 2, 6, 5, 22, 8, 9, 7, 1 };
    tb__llama_ws_t *ws;
    ASSERT_OK(tb__llama_ws_new(&ws));
    static float full[N * V], step[N * V];
    ASSERT_OK(tb__llama_logits(ws, &w, &lora, seq, N, full));
    tb__kv_cache_t cache;
    ASSERT_OK(tb__kv_cache_init(&cache, &c, N));
    tb__kv_cache_t *cp = &cache;
    size_t len = 4;
    ASSERT_OK(tb__llama_step(ws, &w, &lora, seq, &len, &cp, 1, 1, step));
    for (size_t i = 0; i < 4 * V; i++)
      ASSERT_NEAR(step[i], full[i], 1e-5, 1e-5);
    len = 1;
    for (size_t t = 4; t < N; t++) {
      ASSERT_OK(tb__llama_step(ws, &w, &lora, seq + t, &len, &cp, 1, 0, step));
      for (size_t v = 0; v < V; v++)
        ASSERT_NEAR(step[v], full[t * V + v], 1e-5, 1e-5);
    }
    /* The family's feature matters: without it the logits differ. */
    tb__weights_t plain = w;
    plain.config.rope_type = TB_ROPE_DEFAULT;
    plain.config.qkv_bias = plain.config.qk_norm = 0;
    tb__layer_weights_t layers[2];
    memcpy(layers, w.layers, sizeof(layers));
    for (int l = 0; l < 2; l++) {
      layers[l].bq = layers[l].bk = layers[l].bv = NULL;
      layers[l].q_norm = layers[l].k_norm = NULL;
    }
    plain.layers = layers;
    plain.packed = NULL;
    ASSERT_OK(tb__llama_logits(ws, &plain, &lora, seq, N, step));
    double diff = 0;
    for (size_t i = 0; i < N * V; i++)
      diff = fmax(diff, fabs(step[i] - full[i]));
    ASSERT(diff > 1e-3);
    tb__kv_cache_free(&cache);
    tb__llama_ws_free(ws);
    tb__lora_free(&lora);
    tb__weights_free(&w);
  }
}

/* ------------------------------------------------------------ memory */

/* Peak resident memory of this process in kB since the last reset, or
 * -1 when the kernel offers no reset (then the test skips). */
static long peak_rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL)
    return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
      break;
  fclose(f);
  return kb;
}

static int reset_peak_rss(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (f == NULL)
    return -1;
  int ok = fputs("5", f) >= 0;
  return fclose(f) == 0 && ok ? 0 : -1;
}

/* Loading a bf16 directory holds the float32 weights and at most about
 * one tensor of the file besides: the file's pages are given back tensor
 * by tensor.  (Holding the whole mapping peaked at the weights plus the
 * whole file, 1.5 times the weights.) */
TEST(bf16_load_holds_the_weights_and_one_tensor) {
  if (reset_peak_rss() != 0)
    SKIP("/proc/self/clear_refs cannot reset the peak RSS here");
  make_tmpdir();
  tb__model_config_t c = tb_test_config(512, 1024, 4, 8, 4, 64, 16384, 64, 1e-6f, 10000.0f);
  char *dir = path_in(tmpdir, "bf16");
  tb__weights_t w;
  tb_test_uniform_model(&w, &c, 5, -1, 1);
  tb_error_t err = { 0 };
  ASSERT_OK(tb__hf_save_as(dir, &w, NULL, 0, TB_ST_BF16, &err));
  size_t weights_kb = w.storage_floats * 4 / 1024;
  size_t file_kb = weights_kb / 2;
  size_t tensor_kb = (size_t)c.vocab_size * (size_t)c.hidden_size * 2 / 1024;
  tb__weights_free(&w);
  ASSERT_OK(reset_peak_rss());
  long before = peak_rss_kb();
  ASSERT_OK(tb__hf_load(dir, &w, &err));
  long peak = peak_rss_kb() - before;
  fprintf(stderr, "weights %zu kB, file %zu kB, largest tensor %zu kB: peak "
          "growth %ld kB\n", weights_kb, file_kb, tensor_kb, peak);
  ASSERT(peak > 0);
  ASSERT_LT(peak, (long)(weights_kb + tensor_kb + file_kb / 8));
  tb__weights_free(&w);
  free(dir);
  remove_tmpdir();
}

TEST_LIST(
  TEST_ENTRY_TIMEOUT(fifo_files_are_refused_not_waited_on, 20000),
  TEST_ENTRY(config_sizes_are_checked_before_allocating),
  TEST_ENTRY(families_round_trip),
  TEST_ENTRY(unsupported_configs_name_the_field_and_value),
  TEST_ENTRY(tensors_the_config_does_not_declare_are_refused),
  TEST_ENTRY(families_kv_cache_decode_equals_full_forward),
  TEST_ENTRY_TIMEOUT(bf16_load_holds_the_weights_and_one_tensor, 60000),
)

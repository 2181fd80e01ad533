/*
 * config.json of a Hugging Face model directory: read into, and written
 * from, a tb__model_config_t (see hf_model.h).
 *
 * The reader accepts the three families the math runs (Llama, Qwen2,
 * Qwen3 dense) with the features each one's transformers class reads, and
 * refuses every setting that would make the model compute something else:
 * another architecture, MoE, a sliding window in use, a rope scaling other
 * than Llama 3's, a bias on o_proj or the MLP, partial rotary, another
 * activation, quantised weights.  A refusal is one line naming the field
 * and its value.  Settings that transformers itself ignores for these
 * classes are ignored here too.  Non-goals: the tensors (hf_model.c).
 */
#include "engine/hf_model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"
#include "engine/jsonfile.h"

static int get_dim(tb__jctx_t *c, const json_t *o, const char *key,
                   int required, int64_t max, int *out) {
  int64_t v;
  int rc = tb__json_get_int(c, o, key, required, 1, max, &v);
  if (rc == 0)
    *out = (int)v;
  return rc;
}

/* Records an unsupported setting at `key`: TB_EUNSUPPORTED. */
static int unsupported(tb__jctx_t *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int unsupported(tb__jctx_t *c, const char *key, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = tb__vasprintf(fmt, ap);
  va_end(ap);
  tb__jctx_fail_at(c, key, "%s", msg != NULL ? msg : "not supported");
  free(msg);
  if (c->err != NULL)
    c->err->code = TB_EUNSUPPORTED;
  return TB_EUNSUPPORTED;
}

/* The value as short text for a message: strings quoted, others as JSON. */
static void value_text(const json_t *v, char *buf, size_t cap) {
  char *s = json_dumps(v, JSON_ENCODE_ANY);
  snprintf(buf, cap, "%s", s != NULL ? s : "?");
  free(s);
  if (strlen(buf) > 60)
    snprintf(buf + 56, cap - 56, "...");
}

/* ------------------------------------------------------------ family */

static int arch_from_name(const char *s, int by_type) {
  for (int a = 0; a < TB_ARCH_COUNT; a++) {
    const char *n = by_type ? tb__model_arch_type((tb__model_arch_t)a)
                            : tb__model_arch_name((tb__model_arch_t)a);
    if (strcmp(s, n) == 0)
      return a;
  }
  return -1;
}

/* architectures decides; model_type, when present, must agree.  A config
 * with model_type alone (no architectures) is read by that. */
static int read_arch(tb__jctx_t *c, const json_t *root, tb__model_arch_t *out) {
  json_t *archs = json_object_get(root, "architectures");
  tb_slice_t type = { NULL, 0 };
  int rc = tb__json_get_string(c, root, "model_type", TB_JSON_OPTIONAL, &type);
  if (rc < 0)
    return rc;
  int have_type = rc == 0;
  int arch = -1;
  if (archs != NULL && !json_is_null(archs)) {
    if (!json_is_array(archs) || json_array_size(archs) != 1 ||
        !json_is_string(json_array_get(archs, 0))) {
      char v[64];
      value_text(archs, v, sizeof(v));
      return unsupported(c, "architectures", "%s is not one supported "
                         "architecture (LlamaForCausalLM, Qwen2ForCausalLM or "
                         "Qwen3ForCausalLM)", v);
    }
    const char *name = json_string_value(json_array_get(archs, 0));
    arch = arch_from_name(name, 0);
    if (arch < 0)
      return unsupported(c, "architectures", "\"%s\" is not supported "
                         "(LlamaForCausalLM, Qwen2ForCausalLM and "
                         "Qwen3ForCausalLM are)", name);
    if (have_type && !tb__slice_eq_str(type, tb__model_arch_type(arch)))
      return unsupported(c, "model_type", "\"%s\" does not match "
                         "architectures %s (model_type \"%s\")", type.base,
                         name, tb__model_arch_type(arch));
  } else if (have_type) {
    arch = arch_from_name(type.base, 1);
    if (arch < 0)
      return unsupported(c, "model_type", "\"%s\" is not supported (llama, "
                         "qwen2 and qwen3 are)", type.base);
  } else {
    return tb__jctx_fail_at(c, "architectures", "missing, and no model_type "
                            "either: the model's family is not known");
  }
  *out = (tb__model_arch_t)arch;
  return 0;
}

/* A field that must be absent, null, false or 0 (or equal to `allowed`
 * when that is not NULL); its presence would change the computation. */
static int must_be_off(tb__jctx_t *c, const json_t *root, const char *key,
                       const char *what) {
  json_t *v = json_object_get(root, key);
  if (v == NULL || json_is_null(v) || json_is_false(v) ||
      (json_is_number(v) && json_number_value(v) == 0))
    return 0;
  char text[64];
  value_text(v, text, sizeof(text));
  return unsupported(c, key, "%s is not supported (%s)", text, what);
}

/* Sliding-window attention, in either of the two ways transformers
 * configures it for Qwen2/Qwen3: use_sliding_window, or per-layer
 * layer_types. */
static int no_sliding_window(tb__jctx_t *c, const json_t *root) {
  int rc = must_be_off(c, root, "use_sliding_window",
                       "sliding-window attention");
  if (rc != 0)
    return rc;
  json_t *types = json_object_get(root, "layer_types");
  if (types == NULL || json_is_null(types))
    return 0;
  if (!json_is_array(types))
    return tb__jctx_fail_at(c, "layer_types", "expected an array, got %s",
                            tb__json_type_name(types));
  for (size_t i = 0; i < json_array_size(types); i++) {
    const char *t = json_string_value(json_array_get(types, i));
    if (t == NULL || strcmp(t, "full_attention") != 0) {
      char key[48], text[64];
      snprintf(key, sizeof(key), "layer_types[%zu]", i);
      value_text(json_array_get(types, i), text, sizeof(text));
      return unsupported(c, key, "%s is not supported (only "
                         "\"full_attention\")", text);
    }
  }
  return 0;
}

/* rope_scaling (or transformers 5's rope_parameters): none, "default", or
 * "llama3" with its four numbers. */
static int read_rope(tb__jctx_t *c, const json_t *root, tb__model_config_t *m,
                     double *theta) {
  const char *key = "rope_scaling";
  json_t *rs = json_object_get(root, key);
  if (rs == NULL || json_is_null(rs)) {
    key = "rope_parameters";
    rs = json_object_get(root, key);
  }
  if (rs == NULL || json_is_null(rs))
    return 0;
  size_t mark = tb__jctx_push_key(c, key);
  int rc = tb__json_expect_object(c, rs);
  tb_slice_t type = { NULL, 0 };
  const char *type_key = "rope_type";
  if (rc == 0) {
    rc = tb__json_get_string(c, rs, type_key, TB_JSON_OPTIONAL, &type);
    if (rc == 1) {
      type_key = "type";  /* the older spelling */
      rc = tb__json_get_string(c, rs, type_key, TB_JSON_OPTIONAL, &type);
    }
    if (rc == 1)
      rc = tb__jctx_fail_at(c, "rope_type", "required field is missing");
  }
  if (rc == 0 && json_object_get(rs, "rope_theta") != NULL)
    rc = tb__json_get_double(c, rs, "rope_theta", TB_JSON_REQUIRED, theta);
  if (rc == 0 && tb__slice_eq_str(type, "llama3")) {
    double f = 0, lo = 0, hi = 0;
    int64_t orig = 0;
    rc = tb__json_get_double(c, rs, "factor", TB_JSON_REQUIRED, &f);
    if (rc == 0)
      rc = tb__json_get_double(c, rs, "low_freq_factor", TB_JSON_REQUIRED,
                               &lo);
    if (rc == 0)
      rc = tb__json_get_double(c, rs, "high_freq_factor", TB_JSON_REQUIRED,
                               &hi);
    if (rc == 0)
      rc = tb__json_get_int(c, rs, "original_max_position_embeddings",
                            TB_JSON_REQUIRED, 1, TB_MODEL_MAX_POSITIONS,
                            &orig);
    if (rc == 0 && !(f >= 1.0 && f < 1e6))
      rc = tb__jctx_fail_at(c, "factor", "%g is out of range [1, 1e6)", f);
    if (rc == 0 && !(lo > 0 && lo < hi && hi < 1e6))
      rc = tb__jctx_fail_at(c, "low_freq_factor", "%g must be positive and "
                            "below high_freq_factor %g", lo, hi);
    m->rope_type = TB_ROPE_LLAMA3;
    m->rope_factor = (float)f;
    m->rope_low_freq_factor = (float)lo;
    m->rope_high_freq_factor = (float)hi;
    m->rope_original_max_position_embeddings = (int)orig;
  } else if (rc == 0 && !tb__slice_eq_str(type, "default")) {
    rc = unsupported(c, type_key, "\"%.*s\" is not supported (\"llama3\" and "
                     "\"default\" are)", (int)type.len, type.base);
  }
  tb__jctx_pop(c, mark);
  return rc;
}

/* ------------------------------------------------------------ reading */

int tb__hf_config_from_json(const json_t *root, const char *file,
                            tb__model_config_t *out, tb_error_t *err) {
  tb__jctx_t c;
  tb__jctx_init(&c, err);
  tb__model_config_t m;
  memset(&m, 0, sizeof(m));
  double eps = 1e-6, theta = 10000.0;
  int rc = tb__json_expect_object(&c, root);
  if (rc >= 0) rc = read_arch(&c, root, &m.arch);
  m.max_position_embeddings = m.arch == TB_ARCH_LLAMA ? 2048 : 32768;
  /* Readers return 0 (read) or 1 (optional and absent); both go on.  The
   * bounds keep every size computed from the config far from overflow
   * and from absurd allocations; the tensors are checked against the
   * config before anything is allocated (hf_model.c). */
  if (rc >= 0)
    rc = get_dim(&c, root, "hidden_size", 1, TB_MODEL_MAX_HIDDEN,
                 &m.hidden_size);
  if (rc >= 0)
    rc = get_dim(&c, root, "intermediate_size", 1, TB_MODEL_MAX_INTERMEDIATE,
                 &m.intermediate_size);
  if (rc >= 0)
    rc = get_dim(&c, root, "num_hidden_layers", 1, TB_MODEL_MAX_LAYERS,
                 &m.num_layers);
  if (rc >= 0)
    rc = get_dim(&c, root, "num_attention_heads", 1, TB_MODEL_MAX_HEADS,
                 &m.num_heads);
  if (rc >= 0)
    rc = get_dim(&c, root, "vocab_size", 1, TB_MODEL_MAX_VOCAB,
                 &m.vocab_size);
  if (rc >= 0) {
    m.num_kv_heads = m.num_heads;
    rc = get_dim(&c, root, "num_key_value_heads", 0, TB_MODEL_MAX_HEADS,
                 &m.num_kv_heads);
  }
  if (rc >= 0) {
    m.head_dim = m.hidden_size / m.num_heads;
    rc = get_dim(&c, root, "head_dim", 0, TB_MODEL_MAX_HEAD_DIM, &m.head_dim);
    if (rc == 1 && m.hidden_size % m.num_heads != 0)
      rc = tb__jctx_fail_at(&c, "head_dim", "absent, and hidden_size %d is "
                            "not a multiple of num_attention_heads %d",
                            m.hidden_size, m.num_heads);
  }
  if (rc >= 0)
    rc = get_dim(&c, root, "max_position_embeddings", 0,
                 TB_MODEL_MAX_POSITIONS, &m.max_position_embeddings);
  if (rc >= 0) rc = tb__json_get_double(&c, root, "rms_norm_eps", 0, &eps);
  if (rc >= 0) rc = tb__json_get_double(&c, root, "rope_theta", 0, &theta);
  if (rc >= 0)
    rc = tb__json_get_bool(&c, root, "tie_word_embeddings", 0,
                           &m.tie_word_embeddings);
  if (rc >= 0) {
    tb_slice_t act;
    rc = tb__json_get_string(&c, root, "hidden_act", 0, &act);
    if (rc == 0 && !tb__slice_eq_str(act, "silu"))
      rc = unsupported(&c, "hidden_act", "\"%.*s\" is not supported (only "
                       "\"silu\")", (int)act.len, act.base);
  }
  if (rc >= 0) rc = read_rope(&c, root, &m, &theta);
  /* What the three classes read and the math does not do. */
  if (rc >= 0)
    rc = must_be_off(&c, root, "quantization_config", "quantised weights");
  if (rc >= 0)
    rc = must_be_off(&c, root, "num_experts", "mixture of experts");
  if (rc >= 0)
    rc = must_be_off(&c, root, "num_local_experts", "mixture of experts");
  if (rc >= 0)
    rc = must_be_off(&c, root, "n_routed_experts", "mixture of experts");
  if (rc >= 0 && json_object_get(root, "partial_rotary_factor") != NULL &&
      json_number_value(json_object_get(root, "partial_rotary_factor")) != 1.0) {
    char text[64];
    value_text(json_object_get(root, "partial_rotary_factor"), text,
               sizeof(text));
    rc = unsupported(&c, "partial_rotary_factor", "%s is not supported "
                     "(rotary over the whole head only)", text);
  }
  if (rc >= 0 && m.arch == TB_ARCH_LLAMA)
    rc = must_be_off(&c, root, "mlp_bias", "biases on the MLP projections");
  /* Llama's and Qwen3's attention_bias puts a bias on o_proj too, which
   * the math does not have; Qwen2 always has q, k, v biases and no
   * attention_bias field. */
  if (rc >= 0 && m.arch != TB_ARCH_QWEN2)
    rc = must_be_off(&c, root, "attention_bias",
                     "biases on the attention projections, o_proj included");
  if (rc >= 0 && m.arch != TB_ARCH_LLAMA)
    rc = no_sliding_window(&c, root);
  if (rc < 0) {
    tb__error_prefix(err, file);
    return rc;
  }
  m.qkv_bias = m.arch == TB_ARCH_QWEN2;
  m.qk_norm = m.arch == TB_ARCH_QWEN3;
  if (!(eps > 0.0 && eps < 1.0))
    return tb_error_set(err, TB_EFIELD, TB_CATEGORY_USER,
                        "%s: rms_norm_eps: %g is out of range (0, 1)", file,
                        eps);
  if (!(theta > 0.0 && theta < 1e30))
    return tb_error_set(err, TB_EFIELD, TB_CATEGORY_USER,
                        "%s: rope_theta: %g is out of range (0, 1e30)", file,
                        theta);
  m.rms_norm_eps = (float)eps;
  m.rope_theta = (float)theta;
  const char *why;
  if (tb__model_config_validate(&m, &why) != 0)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s: %s", file,
                        why);
  *out = m;
  return 0;
}

/* ------------------------------------------------------------ writing */

/* The shortest decimal that reads back as the same float, as a double,
 * so that config.json says 1e-05 rather than 9.99999974737875e-06. */
static double float_to_json(float f) {
  char text[32];
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(text, sizeof(text), "%.*g", prec, (double)f);
    double d = strtod(text, NULL);
    if ((float)d == f)
      return d;
  }
  return (double)f;
}

json_t *tb__hf_config_to_json(const tb__model_config_t *c) {
  json_t *j = json_pack(
      "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, "
      "s:s, s:s}",
      "architectures", tb__model_arch_name(c->arch), "model_type",
      tb__model_arch_type(c->arch), "hidden_size", c->hidden_size,
      "intermediate_size", c->intermediate_size, "num_hidden_layers",
      c->num_layers, "num_attention_heads", c->num_heads,
      "num_key_value_heads", c->num_kv_heads, "head_dim", c->head_dim,
      "vocab_size", c->vocab_size, "max_position_embeddings",
      c->max_position_embeddings, "rms_norm_eps",
      float_to_json(c->rms_norm_eps), "rope_theta",
      float_to_json(c->rope_theta), "tie_word_embeddings",
      c->tie_word_embeddings ? 1 : 0, "hidden_act", "silu", "torch_dtype",
      "float32");
  if (j == NULL)
    return NULL;
  int rc = 0;
  if (c->arch != TB_ARCH_QWEN2)
    rc |= json_object_set_new(j, "attention_bias", json_false());
  if (c->arch != TB_ARCH_LLAMA)
    rc |= json_object_set_new(j, "use_sliding_window", json_false());
  if (c->rope_type == TB_ROPE_LLAMA3)
    rc |= json_object_set_new(
        j, "rope_scaling",
        json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3",
                  "factor", float_to_json(c->rope_factor), "low_freq_factor",
                  float_to_json(c->rope_low_freq_factor), "high_freq_factor",
                  float_to_json(c->rope_high_freq_factor),
                  "original_max_position_embeddings",
                  c->rope_original_max_position_embeddings));
  if (rc != 0) {
    json_decref(j);
    return NULL;
  }
  return j;
}

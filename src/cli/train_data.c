/*
 * Loading and rendering the chat JSONL of `tinkerbell train`; see
 * train_data.h.
 */
#include "cli/train_data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"
#include "tinkerbell/renderer.h"

void tb__train_example_free(tb__train_example_t *e) {
  free(e->tokens);
  free(e->targets);
  free(e->weights);
  free(e->prompt);
  free(e->reply);
  memset(e, 0, sizeof(*e));
}

void tb__train_data_free(tb__train_data_t *d) {
  for (size_t i = 0; i < d->n; i++)
    tb__train_example_free(&d->examples[i]);
  free(d->examples);
  memset(d, 0, sizeof(*d));
}

/* messages[] of one line into msgs (borrowed from the document). */
static int read_messages(tb__jctx_t *c, const json_t *obj, tb_chat_message_t **out, size_t *n) {
  json_t *arr;
  int rc = tb__json_get_array(c, obj, "messages", TB_JSON_REQUIRED, &arr);
  if (rc != 0)
    return rc;
  size_t count = json_array_size(arr);
  if (count == 0)
    return tb__jctx_fail_at(c, "messages", "expected at least one message");
  tb_chat_message_t *msgs = calloc(count, sizeof(*msgs));
  if (msgs == NULL)
    return TB_ENOMEM;
  size_t top = tb__jctx_push_key(c, "messages");
  for (size_t i = 0; rc == 0 && i < count; i++) {
    size_t mark = tb__jctx_push_index(c, i);
    const json_t *m = json_array_get(arr, i);
    rc = tb__json_expect_object(c, m);
    tb_slice_t role = { NULL, 0 }, content = { NULL, 0 }, reasoning = { NULL, 0 };
    rc = rc ? rc : tb__json_get_string(c, m, "role", TB_JSON_REQUIRED, &role);
    rc = rc ? rc : tb__json_get_string(c, m, "content", TB_JSON_REQUIRED, &content);
    if (rc == 0 && tb__json_get_string(c, m, "reasoning_content", TB_JSON_OPTIONAL,
                                       &reasoning) < 0)
      rc = TB_EFIELD;
    /* The strings are the document's (jansson keeps them NUL-terminated);
     * content goes by length, since JSON strings may hold NUL. */
    msgs[i].role = role.base;
    msgs[i].content = content.len ? content.base : "";
    msgs[i].content_len = content.len;
    msgs[i].reasoning = reasoning.base;
    if (rc == 0 && !tb__slice_eq_str(role, "system") && !tb__slice_eq_str(role, "user") &&
        !tb__slice_eq_str(role, "assistant"))
      rc = tb__jctx_fail_at(c, "role", "expected \"system\", \"user\" or \"assistant\", got "
                            "\"%.*s\"", (int)(role.len > 40 ? 40 : role.len), role.base);
    if (rc == 0 && reasoning.base != NULL && !tb__slice_eq_str(role, "assistant"))
      rc = tb__jctx_fail_at(c, "reasoning_content", "only an assistant message has one");
    tb__jctx_pop(c, mark);
  }
  tb__jctx_pop(c, top);
  if (rc != 0) {
    free(msgs);
    return rc;
  }
  *out = msgs;
  *n = count;
  return 0;
}

/* The first user message and the assistant reply that follows it. */
static int keep_texts(const tb_chat_message_t *msgs, size_t n, tb__train_example_t *e) {
  for (size_t i = 0; i < n; i++) {
    if (strcmp(msgs[i].role, "user") != 0)
      continue;
    e->prompt = tb__strndup(msgs[i].content, msgs[i].content_len);
    if (e->prompt == NULL)
      return TB_ENOMEM;
    for (size_t j = i + 1; j < n; j++)
      if (strcmp(msgs[j].role, "assistant") == 0) {
        e->reply = tb__strndup(msgs[j].content, msgs[j].content_len);
        return e->reply ? 0 : TB_ENOMEM;
      }
    return 0;
  }
  return 0;
}

int tb__train_example_from_line(const tb_renderer_t *r, const char *text, size_t len,
                                size_t max_length, int flags, size_t line,
                                tb__train_example_t *out, int *truncated, tb_error_t *err) {
  memset(out, 0, sizeof(*out));
  *truncated = 0;
  json_t *doc = NULL;
  int rc = tb__json_parse((tb_slice_t){ text, len }, &doc, err);
  if (rc != 0)
    return rc;
  tb__jctx_t c;
  tb__jctx_init(&c, err);
  tb_chat_message_t *msgs = NULL;
  size_t n_msgs = 0;
  rc = tb__json_expect_object(&c, doc);
  rc = rc ? rc : read_messages(&c, doc, &msgs, &n_msgs);
  tb_rendered_t toks = { 0 };
  rc = rc ? rc : tb_renderer_render(r, msgs, n_msgs, flags, &toks, err);
  rc = rc ? rc : keep_texts(msgs, n_msgs, out);
  if (rc == 0 && toks.len > max_length) {
    toks.len = max_length;
    *truncated = 1;
  }
  size_t n = rc == 0 && toks.len > 0 ? toks.len - 1 : 0;
  if (rc == 0) {
    out->tokens = malloc((n ? n : 1) * sizeof(int32_t));
    out->targets = malloc((n ? n : 1) * sizeof(int32_t));
    out->weights = malloc((n ? n : 1) * sizeof(float));
    if (out->tokens == NULL || out->targets == NULL || out->weights == NULL)
      rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_USER, "out of memory");
  }
  for (size_t i = 0; rc == 0 && i < n; i++) {
    out->tokens[i] = toks.tokens[i];
    out->targets[i] = toks.tokens[i + 1];
    /* The renderer weights every token of a conversation without an
     * assistant message. */
    int trained = toks.weights[i + 1] > 0;
    out->weights[i] = trained ? 1.0f : 0.0f;
    out->n_trained += (size_t)trained;
  }
  out->n = n;
  out->line = line;
  if (rc == 0 && out->n_trained == 0)
    rc = tb_error_set(err, TB_EFIELD, TB_CATEGORY_USER,
                      "no assistant token within the first %zu tokens (raise --max-length)",
                      max_length);
  tb_rendered_free(&toks);
  free(msgs);
  json_decref(doc);
  if (rc != 0)
    tb__train_example_free(out);
  return rc;
}

/* Re-states err's message as "path:line: message". */
static int fail_line(tb_error_t *err, int rc, const char *path, size_t line) {
  char *msg = tb__asprintf("%s:%zu: %s", path, line, tb_error_message(err));
  tb_error_clear(err);
  tb_error_set(err, rc == TB_ENOMEM ? TB_ENOMEM : TB_EFIELD, TB_CATEGORY_USER, "%s",
               msg ? msg : "out of memory");
  free(msg);
  return rc == TB_ENOMEM ? TB_ENOMEM : TB_EFIELD;
}

static int is_blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
      return 0;
  return 1;
}

int tb__train_data_load(const tb_renderer_t *r, const char *path, size_t max_length,
                        int flags, tb__train_data_t *out, tb_error_t *err) {
  memset(out, 0, sizeof(*out));
  if (max_length < 2)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "--max-length must be at least 2 tokens");
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    int rc = errno == ENOENT ? TB_ENOENT : TB_EIO;
    return tb_error_set(err, rc, TB_CATEGORY_USER, "%s: %s", path, strerror(errno));
  }
  char *line = NULL;
  size_t cap = 0, lineno = 0, cap_ex = 0;
  ssize_t got;
  int rc = 0;
  while (rc == 0 && (got = getline(&line, &cap, f)) >= 0) {
    lineno++;
    size_t len = (size_t)got;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      len--;
    if (is_blank(line, len))
      continue;
    if (out->n == cap_ex) {
      size_t nc = cap_ex ? 2 * cap_ex : 64;
      tb__train_example_t *p = realloc(out->examples, nc * sizeof(*p));
      if (p == NULL) {
        rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_USER, "out of memory");
        break;
      }
      out->examples = p;
      cap_ex = nc;
    }
    int truncated;
    rc = tb__train_example_from_line(r, line, len, max_length, flags, lineno,
                                     &out->examples[out->n], &truncated, err);
    if (rc != 0) {
      rc = fail_line(err, rc, path, lineno);
      break;
    }
    out->n_tokens += out->examples[out->n].n;
    out->n_truncated += (size_t)truncated;
    out->n++;
  }
  if (rc == 0 && ferror(f))
    rc = tb_error_set(err, TB_EIO, TB_CATEGORY_USER, "%s: read error", path);
  if (rc == 0 && out->n == 0)
    rc = tb_error_set(err, TB_EFIELD, TB_CATEGORY_USER, "%s: no conversations in the file",
                      path);
  free(line);
  fclose(f);
  if (rc != 0)
    tb__train_data_free(out);
  return rc;
}

int tb__train_data_split(tb__train_data_t *d, double eval_fraction, uint64_t seed,
                         tb__train_data_t *eval) {
  memset(eval, 0, sizeof(*eval));
  size_t k = 0;
  if (eval_fraction > 0 && d->n > 1) {
    double want = eval_fraction * (double)d->n + 0.5;
    k = want < 1 ? 1 : (size_t)want;
    if (k > d->n - 1)
      k = d->n - 1;
  }
  if (k == 0)
    return 0;
  /* Choose k indices by a partial Fisher-Yates shuffle, then keep the
   * file order within both parts. */
  size_t *idx = malloc(d->n * sizeof(*idx));
  unsigned char *pick = calloc(d->n, 1);
  tb__train_example_t *train = malloc((d->n - k) * sizeof(*train));
  eval->examples = malloc(k * sizeof(*eval->examples));
  if (idx == NULL || pick == NULL || train == NULL || eval->examples == NULL) {
    free(idx);
    free(pick);
    free(train);
    free(eval->examples);
    eval->examples = NULL;
    return TB_ENOMEM;
  }
  uint64_t rng = seed;
  for (size_t i = 0; i < d->n; i++)
    idx[i] = i;
  for (size_t i = 0; i < k; i++) {
    size_t j = i + (size_t)(tb__cli_rand(&rng) % (d->n - i));
    size_t t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
    pick[idx[i]] = 1;
  }
  size_t nt = 0, ne = 0, tokens = 0;
  for (size_t i = 0; i < d->n; i++) {
    if (pick[i]) {
      eval->examples[ne++] = d->examples[i];
      eval->n_tokens += d->examples[i].n;
    } else {
      train[nt++] = d->examples[i];
      tokens += d->examples[i].n;
    }
  }
  free(d->examples);
  d->examples = train;
  d->n = nt;
  d->n_tokens = tokens;
  eval->n = ne;
  free(idx);
  free(pick);
  return 0;
}

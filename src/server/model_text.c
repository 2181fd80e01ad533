/*
 * The text of the base models (model_text.h): loading it beside the
 * weights, the requests that wait for it, what a request may use of it,
 * and running a request's encoding off the loop.
 *
 * The files are read here, through tb__open_regular (a model directory
 * is the operator's path, and a FIFO named tokenizer.json must not hang a
 * worker), and handed to the text layer as buffers.
 */
#include "server/model_text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/file.h"
#include "core/log.h"
#include "server/training.h"
#include "text/render_internal.h"

void tb__mtext_free(tb__mtext_t *t) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < TB__MAX_RENDERERS; i++) {
    tb_renderer_free(t->renderers[i]);
    free(t->why[i]);
  }
  tb_tokenizer_free(t->tok);
  free(t->missing);
  free(t->dflt_why);
  free(t->token_bytes);
  free(t);
}

/* ------------------------------------------------------------ loading */

/* Reads path (a regular file of at most max bytes): 0, or 1 when it does
 * not exist and optional, else a negative code with err naming it. */
static int read_file(const char *path, size_t max, int optional, char **data, size_t *len,
                     tb_error_t *err) {
  *data = NULL;
  *len = 0;
  int fd = tb__open_regular(path);
  if (fd == -ENOENT && optional)
    return 1;
  if (fd < 0)
    return tb_error_set(err, fd == -ENOENT ? TB_ENOENT : TB_EIO, TB_CATEGORY_USER, "%s: %s",
                        path, fd == TB_EINVAL ? "not a regular file" : strerror(-fd));
  tb__buf_t b = TB_BUF_INIT;
  int rc = 0;
  for (;;) {
    if (tb__buf_reserve(&b, b.len + 65536) != 0) {
      rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
      break;
    }
    ssize_t n = read(fd, b.base + b.len, 65536);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = tb_error_set(err, TB_EIO, TB_CATEGORY_USER, "%s: %s", path, strerror(errno));
      break;
    }
    if (n == 0)
      break;
    b.len += (size_t)n;
    if (b.len > max) {
      rc = tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER, "%s: larger than %zu bytes", path,
                        max);
      break;
    }
  }
  close(fd);
  if (rc != 0) {
    tb__buf_free(&b);
    return rc;
  }
  *data = b.base ? b.base : strdup("");
  *len = b.len;
  return *data ? 0 : tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
}

/* The text layer's advice names the command's option; a request names
 * the field. */
static char *for_requests(const char *msg) {
  static const char opt[] = "with --renderer";
  const char *at = strstr(msg, opt);
  if (at == NULL)
    return tb__strndup(msg, strlen(msg));
  return tb__asprintf("%.*swith the field \"renderer\"%s", (int)(at - msg), msg,
                      at + sizeof(opt) - 1);
}

/* Every renderer the tokenizer can take, and the bytes of its tokens. */
static int make_renderers(tb__mtext_t *t, const char *dflt, const tb__render_variant_t *v) {
  size_t n;
  const char *const *names = tb_renderer_names(&n);
  t->dflt = -1;
  for (size_t i = 0; i < n && i < TB__MAX_RENDERERS; i++) {
    tb_error_t err = { 0 };
    int own = dflt != NULL && strcmp(names[i], dflt) == 0;
    int rc = tb__renderer_new_variant(names[i], own ? v : NULL, t->tok, &t->renderers[i], &err);
    if (rc == TB_ENOMEM) {
      tb_error_clear(&err);
      return TB_ENOMEM;
    }
    if (rc != 0 && (t->why[i] = tb__strndup(tb_error_message(&err),
                                            strlen(tb_error_message(&err)))) == NULL)
      rc = TB_ENOMEM;
    tb_error_clear(&err);
    if (rc == TB_ENOMEM)
      return rc;
    if (rc == 0 && own)
      t->dflt = (int)i;
  }
  size_t vocab = tb_tokenizer_vocab_size(t->tok);
  t->token_bytes = malloc((vocab ? vocab : 1) * sizeof(*t->token_bytes));
  if (t->token_bytes == NULL)
    return TB_ENOMEM;
  for (size_t id = 0; id < vocab; id++) {
    size_t len;
    const char *p = tb_tokenizer_token_bytes(t->tok, (int32_t)id, &len);
    t->token_bytes[id] = (tb_slice_t){ p ? p : "", p ? len : 0 };
  }
  return 0;
}

/* What loading dir's text found: the tokenizer, or why there is none;
 * the renderer of its chat template, or why not. */
static int load_dir(const char *dir, tb__mtext_t *t) {
  char *paths[4] = { tb__asprintf("%s/tokenizer.json", dir),
                     tb__asprintf("%s/tokenizer_config.json", dir),
                     tb__asprintf("%s/generation_config.json", dir),
                     tb__asprintf("%s/config.json", dir) };
  char *data[4] = { NULL, NULL, NULL, NULL };
  size_t len[4] = { 0, 0, 0, 0 };
  static const size_t max[4] = { (size_t)1 << 30, 64u << 20, 64u << 20, 64u << 20 };
  tb_error_t err = { 0 };
  int rc = 0;
  for (size_t i = 0; i < 4; i++)
    if (paths[i] == NULL)
      rc = TB_ENOMEM;
  int found = 0;
  for (size_t i = 0; rc == 0 && i < 4; i++) {
    int r = read_file(paths[i], max[i], 1, &data[i], &len[i], &err);
    if (i == 0 && r == 1)
      break;  /* no tokenizer: nothing else matters */
    found |= i == 0;
    if (r < 0)
      rc = r;
  }
  if (rc == 0 && !found) {
    t->missing = tb__asprintf("%s is missing: the model serves token ids only", paths[0]);
  } else if (rc == 0) {
    tb_tokenizer_source_t s[3];
    for (size_t i = 0; i < 3; i++)
      s[i] = (tb_tokenizer_source_t){ data[i], len[i], paths[i] };
    rc = tb_tokenizer_load_buffers(&s[0], data[1] ? &s[1] : NULL, data[2] ? &s[2] : NULL,
                                   &t->tok, &err);
  }
  if (rc == 0 && t->tok != NULL) {
    const char *name = NULL;
    tb__render_variant_t v = { 0 };
    tb_error_t derr = { 0 };
    int drc = data[1] == NULL
                  ? tb_error_set(&derr, TB_ENOENT, TB_CATEGORY_USER,
                                 "%s is missing (it holds the chat template); choose a renderer "
                                 "with --renderer",
                                 paths[1])
                  : tb__renderer_detect(data[3], len[3], data[1], len[1], paths[3], paths[1],
                                        &name, &v, &derr);
    if (drc == TB_ENOMEM)
      rc = TB_ENOMEM;
    else if (drc != 0 && (t->dflt_why = for_requests(tb_error_message(&derr))) == NULL)
      rc = TB_ENOMEM;
    tb_error_clear(&derr);
    rc = rc ? rc : make_renderers(t, drc == 0 ? name : NULL, &v);
    if (rc == 0 && t->dflt < 0 && t->dflt_why == NULL)
      t->dflt_why = tb__asprintf("its tokenizer cannot take the %s renderer its chat template "
                                 "asks for", name);
  }
  if (rc != 0 && rc != TB_ENOMEM) {
    /* A tokenizer that cannot be read exactly is none at all. */
    tb_tokenizer_free(t->tok);
    t->tok = NULL;
    t->missing = tb__strndup(tb_error_message(&err), strlen(tb_error_message(&err)));
    rc = t->missing ? 0 : TB_ENOMEM;
  }
  if (rc == 0 && t->tok == NULL && t->missing == NULL)
    rc = TB_ENOMEM;
  tb_error_clear(&err);
  for (size_t i = 0; i < 4; i++) {
    free(paths[i]);
    free(data[i]);
  }
  return rc;
}

typedef struct text_load_s {
  uv_work_t work;
  tb__training_t *tr;
  tb__tbase_t *b;
  char *dir;
  tb__mtext_t *text;
  int rc;
} text_load_t;

/* A request that waits for its base model's text. */
typedef struct text_wait_s {
  tb__http_request_t *req;
  tb__http_handler_cb resume;
  tb__tbase_t *b;
  struct text_wait_s *next;
} text_wait_t;

static void load_work(uv_work_t *w) {
  text_load_t *l = w->data;
  l->text = calloc(1, sizeof(*l->text));
  l->rc = l->text ? load_dir(l->dir, l->text) : TB_ENOMEM;
}

/* Runs (or, closing, answers) what waited for b's text. */
static void flush_waiters(tb__tbase_t *b) {
  text_wait_t *w = b->text_waiters;  /* in arrival order */
  b->text_waiters = NULL;
  while (w != NULL) {
    text_wait_t *next = w->next;
    tb__http_request_t *req = w->req;
    req->on_abort = NULL;
    if (b->tr->closing)
      tb__server_respond_error(req, 503, "the server is closing");
    else
      w->resume(req);
    w = next;
  }
}

static void load_done(uv_work_t *w, int status) {
  text_load_t *l = w->data;
  tb__tbase_t *b = l->b;
  tb__training_t *tr = l->tr;
  if (l->rc != 0 || status != 0) {
    tb__mtext_free(l->text);
    l->text = calloc(1, sizeof(*l->text));
    if (l->text != NULL)
      l->text->missing = tb__asprintf("the tokenizer of %s could not be loaded: %s", b->name,
                                      tb_strerror(l->rc ? l->rc : status));
    if (l->text != NULL && l->text->missing == NULL) {
      free(l->text);
      l->text = NULL;
    }
  }
  b->text = l->text;
  b->text_state = b->text != NULL ? 1 : -1;
  if (b->text != NULL && b->text->tok == NULL)
    tb__info("model %s has no tokenizer: %s", b->name, b->text->missing);
  else if (b->text != NULL && b->text->dflt < 0)
    tb__info("model %s has no chat renderer of its own: %s", b->name, b->text->dflt_why);
  flush_waiters(b);
  free(l->dir);
  free(l);
  tb__training_fs_done(tr);
}

int tb__mtext_start(tb__training_t *tr, tb__tbase_t *b) {
  if (b->builtin) {
    tb__mtext_t *t = calloc(1, sizeof(*t));
    int rc = t ? tb_tokenizer_base(&t->tok) : TB_ENOMEM;
    rc = rc ? rc : make_renderers(t, "base", NULL);
    if (rc != 0) {
      tb__mtext_free(t);
      return TB_ENOMEM;
    }
    b->text = t;
    b->text_state = 1;
    return 0;
  }
  const char *eq = strchr(b->spec, '=');
  text_load_t *l = calloc(1, sizeof(*l));
  if (l == NULL || eq == NULL || (l->dir = tb__strndup(eq + 1, strlen(eq + 1))) == NULL) {
    free(l);
    return TB_ENOMEM;
  }
  l->work.data = l;
  l->tr = tr;
  l->b = b;
  int rc = uv_queue_work(tr->srv->loop, &l->work, load_work, load_done);
  if (rc != 0) {
    free(l->dir);
    free(l);
    return rc;
  }
  tr->n_fs++;
  return 0;
}

/* ------------------------------------------------------------ waiting */

static void on_wait_abort(tb__http_request_t *req, int status) {
  (void)status;
  text_wait_t *w = tb__sreq(req)->data;
  for (text_wait_t **p = &w->b->text_waiters; *p != NULL; p = &(*p)->next)
    if (*p == w) {
      *p = w->next;
      break;
    }
  tb__server_release(req);
}

int tb__mtext_wait(tb__http_request_t *req, tb__tbase_t *b, tb__http_handler_cb resume) {
  if (b->text_state != 0)
    return 0;
  text_wait_t *w = tb__arena_calloc(&req->arena, 1, sizeof(*w));
  if (w == NULL) {
    tb__server_respond_error(req, 503, "out of memory");
    return 1;
  }
  w->req = req;
  w->resume = resume;
  w->b = b;
  text_wait_t **tail = &b->text_waiters;  /* in arrival order */
  while (*tail != NULL)
    tail = &(*tail)->next;
  *tail = w;
  tb__sreq(req)->data = w;
  tb__sreq(req)->resumed = 1;
  req->on_abort = on_wait_abort;
  return 1;
}

void tb__mtext_fail_waiters(tb__training_t *tr) {
  for (size_t i = 0; i < tr->n_bases; i++)
    flush_waiters(&tr->bases[i]);
}

/* ------------------------------------------------------------ requests */

void tb__tctx_init(tb__tctx_t *x, const tb__training_t *tr, const tb__tbase_t *b) {
  memset(x, 0, sizeof(*x));
  x->name = b->name;
  x->builtin = b->builtin;
  x->text = b->text_state == 1 ? b->text : NULL;
  x->has_cfg = b->state == 1 || b->builtin;
  if (x->has_cfg)
    x->cfg = b->cfg;
  x->max_body = tr->srv->opts.max_body;
}

/* c's error at key (NULL: at the current path). */
static void fail(tb__jctx_t *c, const char *key, const char *msg) {
  if (key != NULL)
    tb__jctx_fail_at(c, key, "%s", msg);
  else
    tb__jctx_fail(c, "%s", msg);
}

const tb_tokenizer_t *tb__tctx_tokenizer(tb__jctx_t *c, const tb__tctx_t *x, const char *key,
                                         int *status) {
  *status = 422;
  char *msg = NULL;
  size_t vocab = x->text && x->text->tok ? tb_tokenizer_vocab_size(x->text->tok) : 0;
  if (x->text == NULL)
    msg = tb__asprintf("the tokenizer of the model %s is not available", x->name);
  else if (x->text->tok == NULL)
    msg = tb__asprintf("the model %s has no tokenizer (%s): send token ids", x->name,
                       x->text->missing);
  else if (x->has_cfg && vocab > (size_t)x->cfg.vocab_size)
    msg = tb__asprintf("the tokenizer of the model %s has %zu ids, more than its vocab_size "
                       "%d: it is not this model's tokenizer",
                       x->name, vocab, x->cfg.vocab_size);
  else
    return (*status = 400, x->text->tok);
  fail(c, key, msg ? msg : "out of memory");
  free(msg);
  return NULL;
}

const tb_renderer_t *tb__tctx_renderer(tb__jctx_t *c, const tb__tctx_t *x, const json_t *doc,
                                       const char *key, int *status) {
  if (tb__tctx_tokenizer(c, x, key, status) == NULL)
    return NULL;
  tb_slice_t name = { NULL, 0 };
  if (tb__json_get_string(c, doc, "renderer", TB_JSON_OPTIONAL, &name) < 0)
    return NULL;
  const tb__mtext_t *t = x->text;
  if (name.base == NULL) {
    if (t->dflt >= 0)
      return t->renderers[t->dflt];
    *status = 422;
    tb__jctx_fail_at(c, key, "the model %s has no chat renderer of its own (%s)", x->name,
                     t->dflt_why);
    return NULL;
  }
  size_t n;
  const char *const *names = tb_renderer_names(&n);
  for (size_t i = 0; i < n && i < TB__MAX_RENDERERS; i++) {
    if (!tb__slice_eq_str(name, names[i]))
      continue;
    if (t->renderers[i] != NULL)
      return t->renderers[i];
    *status = 422;
    tb__jctx_fail_at(c, "renderer", "%s does not fit the model %s: %s", names[i], x->name,
                     t->why[i]);
    return NULL;
  }
  tb__jctx_fail_at(c, "renderer", "\"%.*s\" is not one of llama3, qwen3, "
                                  "qwen3_disable_thinking, chatml, role_colon, base",
                   (int)(name.len > 40 ? 40 : name.len), name.base);
  return NULL;
}

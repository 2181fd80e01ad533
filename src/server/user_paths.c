/*
 * Error messages speak of what the user named, not of where the server
 * keeps it (see internal.h).
 *
 * The engine and the store report failures with the paths they worked on,
 * which is right for the log and wrong for a client: it learns the
 * server's layout and not which of its own checkpoints failed.  Every
 * message that leaves the server (an error body, a failed future) passes
 * through tb__server_user_paths, which rewrites the paths it knows:
 *
 *   DIR/<run>/<kind>/<name>[/<file>]  ->  tinker://<run>/<kind>/<name>[/<file>]
 *   DIR/tb-<hex>-<model>/...          ->  tinkerbell://<model>/...
 *   DIR/.../.<name>.tmp-XXXXXX/...    ->  the same with <name>
 *   DIR/tinkerbell.db...              ->  "the server's database"
 *   DIR                               ->  "the data directory"
 *   HF_DIR/<file> of --model NAME=HF_DIR  ->  NAME/<file>
 *
 * A path in a message runs until a space, a quote, a comma, a parenthesis
 * or a colon that ends it (": "); run ids hold colons of their own.
 *
 * Non-goals: paths the server never chose (there are none in messages
 * that reach users besides these).
 */
#include "server/internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "server/store.h"

int tb__server_name_path(tb__server_t *srv, const char *dir, const char *name) {
  size_t dl = strlen(dir);
  while (dl > 1 && dir[dl - 1] == '/')
    dl--;
  if (srv->n_path_names == srv->cap_path_names) {
    size_t cap = srv->cap_path_names ? srv->cap_path_names * 2 : 4;
    tb__path_name_t *p = realloc(srv->path_names, cap * sizeof(*p));
    if (p == NULL)
      return TB_ENOMEM;
    srv->path_names = p;
    srv->cap_path_names = cap;
  }
  tb__path_name_t *p = &srv->path_names[srv->n_path_names];
  p->dir = tb__strndup(dir, dl);
  p->name = tb__strndup(name, strlen(name));
  if (p->dir == NULL || p->name == NULL) {
    free(p->dir);
    free(p->name);
    return TB_ENOMEM;
  }
  srv->n_path_names++;
  return 0;
}

void tb__server_path_names_free(tb__server_t *srv) {
  for (size_t i = 0; i < srv->n_path_names; i++) {
    free(srv->path_names[i].dir);
    free(srv->path_names[i].name);
  }
  free(srv->path_names);
  srv->path_names = NULL;
  srv->n_path_names = srv->cap_path_names = 0;
}

/* Where the path that starts at p ends. */
static const char *path_end(const char *p) {
  for (;; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '\0' || c == ' ' || c == '\t' || c == '\n' || c == '"' || c == '\'' ||
        c == ',' || c == '(' || c == ')' || c == '[' || c == ']')
      return p;
    if (c == ':' && (p[1] == '\0' || p[1] == ' ' || p[1] == '\n'))
      return p;
  }
}

/* Does msg at p hold the directory prefix (len bytes) as a whole path
 * component? */
static int at_dir(const char *p, const char *dir, size_t len) {
  if (len == 0 || strncmp(p, dir, len) != 0)
    return 0;
  char c = p[len];
  return c == '/' || path_end(p + len) == p + len;
}

/* Appends the user's name of the data-directory path rest (what follows
 * DIR, without its leading slashes), rest[0 .. n). */
static void append_data_path(tb__buf_t *out, const char *rest, size_t n) {
  while (n > 0 && rest[0] == '/') {
    rest++;
    n--;
  }
  if (n == 0) {
    tb__buf_append_str(out, "the data directory");
    return;
  }
  size_t db = strlen(TB__STORE_DB_NAME);
  if (n >= db && memcmp(rest, TB__STORE_DB_NAME, db) == 0 && memchr(rest, '/', n) == NULL) {
    tb__buf_append_str(out, "the server's database");
    return;
  }
  /* The run: the Tinkerbell dialect's directories carry the user's hex. */
  const char *slash = memchr(rest, '/', n);
  size_t run_len = slash ? (size_t)(slash - rest) : n;
  const char *run = rest;
  const char *scheme = "tinker://";
  if (run_len > 3 && memcmp(run, "tb-", 3) == 0) {
    const char *dash = memchr(run + 3, '-', run_len - 3);
    if (dash != NULL) {
      scheme = "tinkerbell://";
      run_len -= (size_t)(dash + 1 - run);
      run = dash + 1;
    }
  }
  tb__buf_append_str(out, scheme);
  tb__buf_append(out, run, run_len);
  /* Then kind, name (a save's temporary sibling named by its checkpoint)
   * and any file. */
  const char *p = run + run_len, *end = rest + n;
  for (int comp = 1; p < end; comp++) {
    p++;  /* the slash */
    const char *e = memchr(p, '/', (size_t)(end - p));
    if (e == NULL)
      e = end;
    const char *s = p;
    size_t len = (size_t)(e - p);
    if (comp == 2 && len > 12 && s[0] == '.' &&
        (memcmp(e - 11, ".tmp-", 5) == 0 || memcmp(e - 11, ".old-", 5) == 0)) {
      s++;
      len -= 12;
    }
    tb__buf_append(out, "/", 1);
    tb__buf_append(out, s, len);
    p = e;
  }
}

char *tb__server_user_paths(const tb__server_t *srv, const char *msg) {
  const char *data = srv->opts.data_dir;
  size_t dl = data ? strlen(data) : 0;
  while (dl > 1 && data[dl - 1] == '/')
    dl--;
  tb__buf_t out = TB_BUF_INIT;
  const char *p = msg;
  while (*p != '\0') {
    /* Paths start a message or follow a separator. */
    int start = p == msg || p[-1] == ' ' || p[-1] == '"' || p[-1] == '\'' || p[-1] == '(' ||
                p[-1] == '[' || p[-1] == '=';
    if (start && at_dir(p, data, dl)) {
      const char *e = path_end(p + dl);
      append_data_path(&out, p + dl, (size_t)(e - p - dl));
      p = e;
      continue;
    }
    size_t i = 0;
    while (start && i < srv->n_path_names &&
           !at_dir(p, srv->path_names[i].dir, strlen(srv->path_names[i].dir)))
      i++;
    if (start && i < srv->n_path_names) {
      const char *e = path_end(p);
      tb__buf_append_str(&out, srv->path_names[i].name);
      const char *rest = p + strlen(srv->path_names[i].dir);
      tb__buf_append(&out, rest, (size_t)(e - rest));
      p = e;
      continue;
    }
    tb__buf_append(&out, p, 1);
    p++;
  }
  if (tb__buf_append(&out, "", 1) != 0) {
    tb__buf_free(&out);
    return NULL;
  }
  return out.base;
}

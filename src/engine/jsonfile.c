/*
 * Whole-file reads, atomic writes and JSON files (see jsonfile.h).
 *
 * Non-goals: portability beyond POSIX, and durability against a disk that
 * lies about fsync.
 */
#define _GNU_SOURCE  /* mkostemp */
#include "engine/jsonfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"

int tb__errno_code(int errnum) {
  if (errnum == 0)
    return TB_EIO;
  return -errnum;
}

int tb__error_prefix(tb_error_t *err, const char *prefix) {
  if (err == NULL)
    return 0;
  char *old = err->message;
  err->message = NULL;
  int code = err->code;
  tb_category_t cat = err->category;
  tb_error_set(err, code, cat, "%s: %s", prefix,
               old != NULL ? old : tb_strerror(code));
  free(old);
  return code;
}

static int io_error(tb_error_t *err, int errnum, const char *what,
                    const char *path) {
  int code = tb__errno_code(errnum);
  return tb_error_set(err, code, TB_CATEGORY_USER, "%s: %s: %s", path, what,
                      strerror(errnum));
}

int tb__file_read_all(const char *path, tb__buf_t *out, tb_error_t *err) {
  out->len = 0;
  int fd = tb__open_regular(path);
  if (fd == TB_EINVAL)
    return tb_error_set(err, TB_EINVAL, TB_CATEGORY_USER,
                        "%s: not a regular file", path);
  if (fd < 0)
    return io_error(err, -fd, "cannot open", path);
  for (;;) {
    if (tb__buf_reserve(out, 65536) != 0) {
      close(fd);
      return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                          "%s: out of memory", path);
    }
    ssize_t n = read(fd, out->base + out->len, out->cap - out->len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      close(fd);
      return io_error(err, e, "read failed", path);
    }
    if (n == 0)
      break;
    out->len += (size_t)n;
  }
  close(fd);
  if (tb__buf_terminate(out) != 0)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "%s: out of memory", path);
  return 0;
}

char *tb__path_join(const char *dir, const char *name) {
  size_t dl = strlen(dir);
  while (dl > 1 && dir[dl - 1] == '/')
    dl--;
  return tb__asprintf("%.*s/%s", (int)dl, dir, name);
}

int tb__mkdir_p1(const char *dir, tb_error_t *err) {
  if (mkdir(dir, 0755) == 0)
    return 0;
  int e = errno;
  struct stat st;
  if (e == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
    return 0;
  return io_error(err, e, "cannot create directory", dir);
}

int tb__fsync_dir(const char *dir, tb_error_t *err) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return io_error(err, errno, "cannot open directory", dir);
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  /* Some file systems refuse fsync on directories; the rename is still as
   * durable as they can make it. */
  if (rc != 0 && e != EINVAL && e != EROFS)
    return io_error(err, e, "fsync of directory failed", dir);
  return 0;
}

char *tb__path_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    return tb__strndup(".", 1);
  if (slash == path)
    return tb__strndup("/", 1);
  return tb__strndup(path, (size_t)(slash - path));
}

static void atomic_release(tb__atomic_file_t *f) {
  free(f->path);
  free(f->tmp);
  f->path = NULL;
  f->tmp = NULL;
  f->fd = -1;
}

int tb__atomic_open(tb__atomic_file_t *f, const char *path, tb_error_t *err) {
  f->fd = -1;
  f->path = tb__strndup(path, strlen(path));
  f->tmp = tb__asprintf("%s.tmp.XXXXXX", path);
  if (f->path == NULL || f->tmp == NULL) {
    atomic_release(f);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "%s: out of memory", path);
  }
  f->fd = mkostemp(f->tmp, O_CLOEXEC);
  if (f->fd < 0) {
    int e = errno;
    atomic_release(f);
    return io_error(err, e, "cannot create temporary file for", path);
  }
  /* mkstemp creates 0600; the result is an ordinary data file. */
  (void)fchmod(f->fd, 0644);
  return 0;
}

int tb__atomic_write(tb__atomic_file_t *f, const void *data, size_t len,
                     tb_error_t *err) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(f->fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return io_error(err, errno, "write failed", f->tmp);
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int tb__atomic_commit(tb__atomic_file_t *f, tb_error_t *err) {
  int rc = 0;
  if (fsync(f->fd) != 0)
    rc = io_error(err, errno, "fsync failed", f->tmp);
  if (close(f->fd) != 0 && rc == 0)
    rc = io_error(err, errno, "close failed", f->tmp);
  f->fd = -1;
  if (rc == 0 && rename(f->tmp, f->path) != 0)
    rc = io_error(err, errno, "rename failed", f->path);
  if (rc != 0) {
    tb__atomic_abort(f);
    return rc;
  }
  char *dir = tb__path_dir(f->path);
  if (dir == NULL)
    rc = tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER, "out of memory");
  else
    rc = tb__fsync_dir(dir, err);
  free(dir);
  atomic_release(f);
  return rc;
}

void tb__atomic_abort(tb__atomic_file_t *f) {
  if (f->fd >= 0)
    close(f->fd);
  if (f->tmp != NULL)
    unlink(f->tmp);
  atomic_release(f);
}

int tb__file_write_atomic(const char *path, const void *data, size_t len,
                          tb_error_t *err) {
  tb__atomic_file_t f;
  int rc = tb__atomic_open(&f, path, err);
  if (rc != 0)
    return rc;
  rc = tb__atomic_write(&f, data, len, err);
  if (rc != 0) {
    tb__atomic_abort(&f);
    return rc;
  }
  return tb__atomic_commit(&f, err);
}

int tb__json_parse_text(const char *path, const char *text, size_t len,
                        json_t **out, tb_error_t *err) {
  /* Parsed here rather than with tb__json_parse, whose messages speak of
   * a request body. */
  json_error_t je;
  *out = json_loadb(text != NULL ? text : "", len, JSON_REJECT_DUPLICATES, &je);
  if (*out == NULL)
    return tb_error_set(err, TB_EJSON, TB_CATEGORY_USER,
                        "%s: invalid JSON at line %d column %d: %s", path,
                        je.line, je.column, je.text);
  return 0;
}

int tb__json_read_file(const char *path, json_t **out, tb_error_t *err) {
  *out = NULL;
  tb__buf_t b = TB_BUF_INIT;
  int rc = tb__file_read_all(path, &b, err);
  if (rc == 0)
    rc = tb__json_parse_text(path, b.base, b.len, out, err);
  tb__buf_free(&b);
  return rc;
}

int tb__json_write_file(const char *path, const json_t *v, tb_error_t *err) {
  char *text = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (text == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "%s: cannot serialise JSON", path);
  size_t n = strlen(text);
  tb__buf_t b = TB_BUF_INIT;
  int rc = tb__buf_append(&b, text, n);
  if (rc == 0)
    rc = tb__buf_append(&b, "\n", 1);
  free(text);
  if (rc != 0) {
    tb__buf_free(&b);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_SERVER,
                        "%s: out of memory", path);
  }
  rc = tb__file_write_atomic(path, b.base, b.len, err);
  tb__buf_free(&b);
  return rc;
}

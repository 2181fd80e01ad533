/*
 * The file work of the store: a checkpoint's size, its removal, the tar
 * the archive route serves, and the sweep of what interrupted saves left
 * in the data directory.  Synchronous by design: these run inside the
 * store's threadpool work items, never on the loop.
 *
 * The tar is POSIX ustar: one directory entry named after the checkpoint
 * and its regular files, sorted by name, with mode 0644 and the files'
 * mtimes.  Checkpoint directories are flat (see engine/checkpoint.h), so
 * subdirectories are skipped.
 */
#define _GNU_SOURCE  /* nftw, O_NOFOLLOW */
#include "server/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "engine/checkpoint.h"
#include "tinkerbell/error.h"

/* ustar's size field holds 11 octal digits. */
#define TAR_MAX_FILE ((int64_t)077777777777)
#define TAR_BLOCK 512

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

int tb__store_remove_tree(const char *dir) {
  struct stat sb;
  if (lstat(dir, &sb) != 0)
    return -errno;
  if (nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
    return errno ? -errno : -EIO;
  return 0;
}

typedef struct entry_s {
  char *name;
  struct stat sb;
} entry_t;

static int by_name(const void *a, const void *b) {
  return strcmp(((const entry_t *)a)->name, ((const entry_t *)b)->name);
}

static void entries_free(entry_t *e, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(e[i].name);
  free(e);
}

/* The regular files of dir, sorted; 0 or a negative errno. */
static int list_files(const char *dir, entry_t **out, size_t *n_out) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return -errno;
  entry_t *e = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *de;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    struct stat sb;
    if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
      rc = -errno;
      break;
    }
    if (!S_ISREG(sb.st_mode))
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 8;
      entry_t *ne = realloc(e, cap * sizeof(*e));
      if (ne == NULL) {
        rc = -ENOMEM;
        break;
      }
      e = ne;
    }
    e[n].name = strdup(de->d_name);
    if (e[n].name == NULL) {
      rc = -ENOMEM;
      break;
    }
    e[n++].sb = sb;
  }
  closedir(d);
  if (rc != 0) {
    entries_free(e, n);
    return rc;
  }
  qsort(e, n, sizeof(*e), by_name);
  *out = e;
  *n_out = n;
  return 0;
}

int64_t tb__store_dir_size(const char *dir) {
  entry_t *e = NULL;
  size_t n = 0;
  int rc = list_files(dir, &e, &n);
  if (rc != 0)
    return rc;
  int64_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += (int64_t)e[i].sb.st_size;
  entries_free(e, n);
  return total;
}

/* One ustar header block at the end of out (already reserved). */
static void tar_header(tb__buf_t *out, const char *prefix, const char *name, int64_t size,
                       int64_t mtime, char type) {
  unsigned char *h = (unsigned char *)out->base + out->len;
  memset(h, 0, TAR_BLOCK);
  snprintf((char *)h, 100, "%s", name);
  snprintf((char *)h + 100, 8, "%07o", type == '5' ? 0755 : 0644);
  snprintf((char *)h + 108, 8, "%07o", 0);
  snprintf((char *)h + 116, 8, "%07o", 0);
  /* Both fit 11 octal digits: sizes are checked, and mtimes do until 6429. */
  snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size & 077777777777ULL);
  snprintf((char *)h + 136, 12, "%011llo",
           (unsigned long long)(mtime < 0 ? 0 : mtime) & 077777777777ULL);
  memset(h + 148, ' ', 8);
  h[156] = (unsigned char)type;
  memcpy(h + 257, "ustar", 6);
  memcpy(h + 263, "00", 2);
  snprintf((char *)h + 345, 155, "%s", prefix);
  unsigned sum = 0;
  for (size_t i = 0; i < TAR_BLOCK; i++)
    sum += h[i];
  snprintf((char *)h + 148, 8, "%06o", sum);
  h[155] = ' ';
  out->len += TAR_BLOCK;
}

static int read_file_into(int dfd, const char *name, int64_t size, tb__buf_t *out) {
  int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return -errno;
  int64_t got = 0;
  int rc = 0;
  while (got < size) {
    ssize_t r = read(fd, out->base + out->len + got, (size_t)(size - got));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      rc = r < 0 ? -errno : -EIO;  /* shorter than when it was listed */
      break;
    }
    got += r;
  }
  close(fd);
  return rc;
}

int tb__store_tar_dir(const char *dir, const char *top, tb__buf_t *out) {
  out->len = 0;
  /* A directory name longer than the prefix field does not fit ustar. */
  if (strlen(top) >= 155)
    return TB_ETOOLARGE;
  entry_t *e = NULL;
  size_t n = 0;
  int rc = list_files(dir, &e, &n);
  if (rc != 0)
    return rc;
  size_t total = 3 * TAR_BLOCK;  /* the directory entry and the end marker */
  for (size_t i = 0; rc == 0 && i < n; i++) {
    int64_t sz = (int64_t)e[i].sb.st_size;
    if (sz > TAR_MAX_FILE || strlen(e[i].name) >= 100)
      rc = TB_ETOOLARGE;
    else
      total += TAR_BLOCK + ((size_t)sz + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
  }
  int dfd = rc == 0 ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  if (rc == 0 && dfd < 0)
    rc = -errno;
  if (rc == 0 && tb__buf_reserve(out, total) != 0)
    rc = -ENOMEM;
  if (rc == 0) {
    char dname[160];
    snprintf(dname, sizeof(dname), "%s/", top);
    tar_header(out, "", dname, 0, n > 0 ? (int64_t)e[0].sb.st_mtime : 0, '5');
  }
  for (size_t i = 0; rc == 0 && i < n; i++) {
    int64_t sz = (int64_t)e[i].sb.st_size;
    tar_header(out, top, e[i].name, sz, (int64_t)e[i].sb.st_mtime, '0');
    rc = read_file_into(dfd, e[i].name, sz, out);
    if (rc == 0) {
      size_t padded = ((size_t)sz + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
      memset(out->base + out->len + sz, 0, padded - (size_t)sz);
      out->len += padded;
    }
  }
  if (rc == 0) {
    memset(out->base + out->len, 0, 2 * TAR_BLOCK);
    out->len += 2 * TAR_BLOCK;
  }
  if (dfd >= 0)
    close(dfd);
  entries_free(e, n);
  if (rc != 0)
    out->len = 0;
  return rc;
}

/* Checkpoints live in DIR/<run>/<kind>/<name> (both dialects' runs), and a
 * save writes its temporaries beside <name>: only those directories are
 * swept, and only names the engine's atomic saves make. */
int tb__store_sweep_leftovers(const char *data_dir, const struct timespec *before,
                              size_t *removed, size_t *restored) {
  static const char *const kinds[] = { "weights", "sampler_weights" };
  DIR *d = opendir(data_dir);
  if (d == NULL)
    return -errno;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
      continue;
    for (size_t k = 0; k < 2; k++) {
      char *kd = tb__asprintf("%s/%s/%s", data_dir, e->d_name, kinds[k]);
      if (kd != NULL && lstat(kd, &st) == 0 && S_ISDIR(st.st_mode))
        (void)tb__ckpt_sweep(kd, before, removed, restored);
      free(kd);
    }
  }
  closedir(d);
  return 0;
}

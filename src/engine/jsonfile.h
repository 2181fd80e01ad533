/*
 * Whole-file reads, atomic file writes and JSON files, with errors that name
 * the file.
 *
 * Everything that writes a file the engine will read back later (weights,
 * checkpoints, configs) goes through tb__atomic_file_t: the bytes go to a
 * temporary name in the same directory, are fsync'ed, and are renamed over
 * the final name, after which the directory is fsync'ed.  A reader therefore
 * sees either the old file or the complete new one, never a prefix.
 *
 * File I/O here is synchronous by design: the engine calls these functions
 * from threadpool work items (uv_queue_work), never from the loop thread.
 */
#ifndef TB_ENGINE_JSONFILE_H
#define TB_ENGINE_JSONFILE_H

#include <jansson.h>
#include <stddef.h>

#include "core/buf.h"
#include "tinkerbell/error.h"

/* errno -> our negative code (libuv's codes are -errno on Unix). */
int tb__errno_code(int errnum);

/* Rewrites err's message as "<prefix>: <old message>" (keeps code and
 * category).  Returns err's code. */
int tb__error_prefix(tb_error_t *err, const char *prefix);

/* Reads a whole regular file into out (replacing its contents, with a NUL
 * kept after len).  Errors name the file. */
int tb__file_read_all(const char *path, tb__buf_t *out, tb_error_t *err);

/* "<dir>/<name>" as a malloc'd string; NULL on allocation failure. */
char *tb__path_join(const char *dir, const char *name);

/* The directory part of a path ("." when there is none), malloc'd; NULL
 * on allocation failure. */
char *tb__path_dir(const char *path);

/* Creates a directory if it does not exist yet (its parent must). */
int tb__mkdir_p1(const char *dir, tb_error_t *err);

/* fsyncs a directory so that a rename inside it is durable. */
int tb__fsync_dir(const char *dir, tb_error_t *err);

typedef struct tb__atomic_file_s {
  char *path;  /* final name */
  char *tmp;   /* temporary name in the same directory */
  int fd;      /* -1 when not open */
} tb__atomic_file_t;

/* Opens a fresh temporary file next to `path`.  On error nothing is left
 * behind and f needs no abort. */
int tb__atomic_open(tb__atomic_file_t *f, const char *path, tb_error_t *err);
int tb__atomic_write(tb__atomic_file_t *f, const void *data, size_t len,
                     tb_error_t *err);
/* fsync, close, rename over the final name, fsync the directory.  On error
 * the temporary file is removed.  Either way f is released. */
int tb__atomic_commit(tb__atomic_file_t *f, tb_error_t *err);
/* Removes the temporary file and releases f; safe on a zeroed or released
 * struct. */
void tb__atomic_abort(tb__atomic_file_t *f);

/* Writes a whole file atomically. */
int tb__file_write_atomic(const char *path, const void *data, size_t len,
                          tb_error_t *err);

/* Parses a JSON file.  Errors: the file's open error, or TB_EJSON with
 * "<path>: invalid JSON at line L column C: ...". */
int tb__json_read_file(const char *path, json_t **out, tb_error_t *err);
/* The same over the file's text already in memory (path names it). */
int tb__json_parse_text(const char *path, const char *text, size_t len,
                        json_t **out, tb_error_t *err);
/* Writes v indented by two spaces, keys in insertion order, with a final
 * newline, atomically. */
int tb__json_write_file(const char *path, const json_t *v, tb_error_t *err);

#endif /* TB_ENGINE_JSONFILE_H */

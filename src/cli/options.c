/*
 * Option parsing for the sub-commands (see cli.h): one table per command
 * drives the parser and the help, and every mistake is reported as one
 * line that names the option and what was expected.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HELP_COLUMN 26

void tb__cli_args_init(tb__cli_args_t *a, const char *cmd, const tb__cli_opt_t *opts,
                       int argc, char **argv) {
  memset(a, 0, sizeof(*a));
  a->cmd = cmd;
  a->opts = opts;
  a->argc = argc;
  a->argv = argv;
  a->next = 1;
}

void tb__cli_error(const tb__cli_args_t *a, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "tinkerbell %s: ", a->cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nRun 'tinkerbell %s --help' for its options.\n", a->cmd);
}

static int find(const tb__cli_args_t *a, const char *name, size_t len) {
  for (int i = 0; a->opts[i].name != NULL; i++)
    if (strlen(a->opts[i].name) == len && memcmp(a->opts[i].name, name, len) == 0)
      return i;
  return -1;
}

int tb__cli_next(tb__cli_args_t *a, const char **value) {
  *value = NULL;
  if (a->next >= a->argc)
    return TB__CLI_END;
  char *s = a->argv[a->next++];
  if (a->only_args || s[0] != '-' || s[1] == '\0') {
    *value = s;
    return TB__CLI_ARG;
  }
  if (strcmp(s, "--") == 0) {
    a->only_args = 1;
    return tb__cli_next(a, value);
  }
  if (strcmp(s, "-h") == 0)
    s = "--help";
  if (s[1] != '-') {
    tb__cli_error(a, "unknown option '%s' (options are spelled --name)", s);
    return TB__CLI_ERROR;
  }
  const char *name = s + 2;
  const char *eq = strchr(name, '=');
  size_t len = eq ? (size_t)(eq - name) : strlen(name);
  int i = find(a, name, len);
  if (i < 0) {
    tb__cli_error(a, "unknown option '--%.*s'", (int)len, name);
    return TB__CLI_ERROR;
  }
  const tb__cli_opt_t *o = &a->opts[i];
  if (o->arg == NULL) {
    if (eq != NULL) {
      tb__cli_error(a, "--%s takes no value (got '%s')", o->name, s);
      return TB__CLI_ERROR;
    }
    return i;
  }
  if (eq != NULL) {
    *value = eq + 1;
  } else if (a->next < a->argc) {
    *value = a->argv[a->next++];
  } else {
    tb__cli_error(a, "--%s needs a value: --%s %s", o->name, o->name, o->arg);
    return TB__CLI_ERROR;
  }
  return i;
}

/* Decimal digits only: strtoull would take a sign, spaces and "0x". */
static int parse_u64(const char *s, const char **end, uint64_t *out) {
  if (!isdigit((unsigned char)s[0]))
    return -1;
  errno = 0;
  char *e;
  unsigned long long v = strtoull(s, &e, 10);
  if (errno == ERANGE)
    return -1;
  *end = e;
  *out = v;
  return 0;
}

int tb__cli_uint(const tb__cli_args_t *a, const char *opt, const char *s, uint64_t min,
                 uint64_t max, uint64_t *out) {
  const char *end;
  uint64_t v;
  if (parse_u64(s, &end, &v) != 0 || *end != '\0' || v < min || v > max) {
    tb__cli_error(a, "--%s: expected an integer from %llu to %llu, got '%s'", opt,
                  (unsigned long long)min, (unsigned long long)max, s);
    return -1;
  }
  *out = v;
  return 0;
}

int tb__cli_size(const tb__cli_args_t *a, const char *opt, const char *s, uint64_t min,
                 uint64_t max, uint64_t *out) {
  static const struct {
    const char *suffix;
    unsigned shift;
  } units[] = {
    { "", 0 }, { "B", 0 },
    { "k", 10 }, { "K", 10 }, { "kB", 10 }, { "KB", 10 }, { "KiB", 10 },
    { "M", 20 }, { "MB", 20 }, { "MiB", 20 },
    { "G", 30 }, { "GB", 30 }, { "GiB", 30 },
  };
  const char *end;
  uint64_t v;
  int ok = parse_u64(s, &end, &v) == 0;
  size_t u = 0;
  while (ok && u < sizeof(units) / sizeof(units[0]) && strcmp(end, units[u].suffix) != 0)
    u++;
  ok = ok && u < sizeof(units) / sizeof(units[0]) && v <= (UINT64_MAX >> units[u].shift);
  if (ok)
    v <<= units[u].shift;
  if (!ok || v < min || v > max) {
    tb__cli_error(a, "--%s: expected a size in bytes from %llu to %llu (suffixes k, M, "
                     "G: powers of 1024), got '%s'",
                  opt, (unsigned long long)min, (unsigned long long)max, s);
    return -1;
  }
  *out = v;
  return 0;
}

int tb__cli_number(const tb__cli_args_t *a, const char *opt, const char *s, double min,
                   double max, double *out) {
  char *end;
  errno = 0;
  double v = s[0] != '\0' && !isspace((unsigned char)s[0]) ? strtod(s, &end) : NAN;
  if (isnan(v) || isinf(v) || errno == ERANGE || *end != '\0' || v < min || v > max) {
    tb__cli_error(a, "--%s: expected a number from %g to %g, got '%s'", opt, min, max, s);
    return -1;
  }
  *out = v;
  return 0;
}

void tb__cli_help(FILE *out, const char *usage, const char *description,
                  const tb__cli_opt_t *opts) {
  fprintf(out, "usage: %s\n\n%s\n\nOptions:\n", usage, description);
  for (const tb__cli_opt_t *o = opts; o->name != NULL; o++) {
    char left[64];
    snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "",
             o->arg ? o->arg : "");
    /* A long name gets its help on the lines below it. */
    int same_line = strlen(left) <= HELP_COLUMN - 2;
    if (same_line)
      fprintf(out, "  %-*s", HELP_COLUMN - 2, left);
    else
      fprintf(out, "  %s\n", left);
    for (const char *line = o->help; line != NULL;) {
      const char *nl = strchr(line, '\n');
      int len = nl ? (int)(nl - line) : (int)strlen(line);
      fprintf(out, "%*s%.*s\n", same_line ? 2 : HELP_COLUMN + 2, "", len, line);
      same_line = 0;
      line = nl ? nl + 1 : NULL;
    }
  }
}

int tb__cli_make_dirs(const char *dir) {
  size_t len = strlen(dir);
  char *path = malloc(len + 1);
  if (path == NULL)
    return -ENOMEM;
  memcpy(path, dir, len + 1);
  int err = 0;
  for (size_t i = 1; err == 0 && i <= len; i++) {
    if (path[i] != '/' && path[i] != '\0')
      continue;
    char c = path[i];
    path[i] = '\0';
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
      err = errno;
    path[i] = c;
  }
  free(path);
  return -err;
}

/*
 * Levelled logging (see log.h).  One fprintf per message keeps lines whole
 * when threadpool workers log at the same time as the loop.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* -1: not read from the environment yet.  A benign race: every thread that
 * reads it computes the same value. */
static volatile int log_level = -1;

int tb__log_parse_level(const char *name) {
  static const char *names[] = { "debug", "info", "warn", "error", "off" };
  for (int i = 0; i < 5; i++)
    if (strcmp(name, names[i]) == 0)
      return i;
  return -1;
}

tb__log_level_t tb__log_level(void) {
  int lvl = log_level;
  if (lvl < 0) {
    const char *env = getenv("TINKERBELL_LOG");
    lvl = env != NULL ? tb__log_parse_level(env) : -1;
    if (lvl < 0)
      lvl = TB_LOG_WARN;
    log_level = lvl;
  }
  return (tb__log_level_t)lvl;
}

void tb__log_set_level(tb__log_level_t level) {
  log_level = (int)level;
}

void tb__log(tb__log_level_t level, const char *fmt, ...) {
  static const char *tags[] = { "debug", "info", "warn", "error", "off" };
  char msg[1024];
  struct timespec ts;
  struct tm tm;
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s\n",
          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
          tm.tm_sec, ts.tv_nsec / 1000000, tags[level], msg);
}

/*
 * Levelled logging to stderr.  The level comes from TINKERBELL_LOG
 * (debug|info|warn|error|off, default warn) the first time a message is
 * logged, or from tb__log_set_level().  Logging is for people: nothing in
 * the library depends on what it prints.
 */
#ifndef TB_CORE_LOG_H
#define TB_CORE_LOG_H

typedef enum {
  TB_LOG_DEBUG = 0,
  TB_LOG_INFO,
  TB_LOG_WARN,
  TB_LOG_ERROR,
  TB_LOG_OFF
} tb__log_level_t;

void tb__log_set_level(tb__log_level_t level);
tb__log_level_t tb__log_level(void);
/* Parses "debug", "info", ...; returns -1 when the name is unknown. */
int tb__log_parse_level(const char *name);
void tb__log(tb__log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define TB_LOG_ENABLED(lvl) ((lvl) >= tb__log_level())
#define tb__debug(...) \
  do { if (TB_LOG_ENABLED(TB_LOG_DEBUG)) tb__log(TB_LOG_DEBUG, __VA_ARGS__); } while (0)
#define tb__info(...) \
  do { if (TB_LOG_ENABLED(TB_LOG_INFO)) tb__log(TB_LOG_INFO, __VA_ARGS__); } while (0)
#define tb__warn(...) \
  do { if (TB_LOG_ENABLED(TB_LOG_WARN)) tb__log(TB_LOG_WARN, __VA_ARGS__); } while (0)
#define tb__log_error(...) \
  do { if (TB_LOG_ENABLED(TB_LOG_ERROR)) tb__log(TB_LOG_ERROR, __VA_ARGS__); } while (0)

#endif /* TB_CORE_LOG_H */

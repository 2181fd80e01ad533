/*
 * Time.  Timers and deadlines use the loop's monotonic clock (uv_now, in
 * milliseconds, cached per loop iteration); durations that must be exact,
 * such as latency metrics, use uv_hrtime.  Wall-clock time is used only for
 * timestamps shown to people or stored with checkpoints.
 */
#ifndef TB_CORE_CLOCK_H
#define TB_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>
#include <uv.h>

static inline uint64_t tb__now_ms(const uv_loop_t *loop) {
  return uv_now(loop);
}

static inline uint64_t tb__hrtime_ns(void) {
  return uv_hrtime();
}

/* Seconds since the epoch, for records people read. */
static inline double tb__wall_time(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif /* TB_CORE_CLOCK_H */

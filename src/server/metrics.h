/*
 * What GET /metrics tells about the training part beyond plain counters:
 * how long operations take from the moment they are accepted to their
 * result (a Prometheus histogram per kind of operation), the tokens they
 * processed, and how many wait in each queue.
 *
 * The training part calls tb__metrics_op_finished for every accepted
 * operation right before its future finishes, and its metrics callback
 * appends tb__metrics_training.  Everything runs on the loop.
 */
#ifndef TB_SERVER_METRICS_H
#define TB_SERVER_METRICS_H

#include <stdint.h>

#include "core/buf.h"

#define TB__LATENCY_BUCKETS 15
#define TB__METRIC_OPS 12       /* at least the kinds of operation */

typedef struct tb__histogram_s {
  uint64_t buckets[TB__LATENCY_BUCKETS];  /* per bucket, not cumulative */
  uint64_t count;
  double sum;
} tb__histogram_t;

typedef struct tb__op_metrics_s {
  tb__histogram_t latency[TB__METRIC_OPS];  /* by tb__op_type_t */
  uint64_t tokens[TB__METRIC_OPS];
} tb__op_metrics_t;

struct tb__top_s;
struct tb__training_s;

void tb__histogram_observe(tb__histogram_t *h, double seconds);
/* name_bucket{labels,le="..."} lines (cumulative), name_sum and
 * name_count; labels is "" or "key=\"value\"". */
void tb__histogram_print(tb__buf_t *out, const char *name, const char *labels,
                         const tb__histogram_t *h);

/* Counts op, whose future is about to finish: the time since it was
 * accepted and, when ok, the tokens its job processed. */
void tb__metrics_op_finished(struct tb__top_s *op, int ok);
/* Appends the queue depths, latencies and token counts of tr. */
void tb__metrics_training(const struct tb__training_s *tr, tb__buf_t *out);

#endif /* TB_SERVER_METRICS_H */

/*
 * What `tinkerbell train` shows and writes about its progress, as pure
 * formatting into buffers (the command does the I/O): the progress line
 * for a terminal or a log, one metrics.jsonl record per step, and the loss
 * curve as a standalone SVG.
 */
#ifndef TB_CLI_TRAIN_REPORT_H
#define TB_CLI_TRAIN_REPORT_H

#include <stddef.h>

#include "core/buf.h"

typedef struct tb__train_point_s {
  size_t step;       /* 1-based optimizer step */
  size_t epoch;      /* 1-based */
  double loss;       /* mean loss per trained token of the step's batch */
  double eval_loss;  /* mean over the eval set; NaN when not measured */
  double tokens_per_s;
  double elapsed_s;  /* since training started */
} tb__train_point_t;

/* "step 12/80 epoch 1/2 [#####.....] loss 1.2345 eval 1.3000 840 tok/s ETA 1:05".
 * bar_width 0 leaves the bar out (plain log lines).  ETA from elapsed and
 * the steps left; "--:--" before the first step. */
int tb__train_progress(tb__buf_t *out, const tb__train_point_t *p, size_t total_steps,
                       size_t total_epochs, int bar_width);
/* One JSON object and a newline: step, epoch, loss, eval_loss (only when
 * measured), tokens_per_s, elapsed_s. */
int tb__train_metrics_line(tb__buf_t *out, const tb__train_point_t *p);
/* An SVG (width x height pixels) of loss and eval loss over the steps,
 * with axes, ticks and a legend.  n may be 0 (an empty chart). */
int tb__train_loss_svg(tb__buf_t *out, const tb__train_point_t *pts, size_t n, int width,
                       int height);

#endif /* TB_CLI_TRAIN_REPORT_H */

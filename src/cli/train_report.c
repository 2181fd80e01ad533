/*
 * Progress line, metrics records and the loss curve of `tinkerbell train`;
 * see train_report.h.
 */
#include "cli/train_report.h"

#include <math.h>
#include <stdio.h>

static int append_duration(tb__buf_t *out, double s) {
  if (!isfinite(s) || s < 0)
    return tb__buf_append_str(out, "--:--");
  unsigned long t = (unsigned long)(s + 0.5);
  if (t >= 3600)
    return tb__buf_printf(out, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
  return tb__buf_printf(out, "%lu:%02lu", t / 60, t % 60);
}

int tb__train_progress(tb__buf_t *out, const tb__train_point_t *p, size_t total_steps,
                       size_t total_epochs, int bar_width) {
  int rc = tb__buf_printf(out, "step %zu/%zu epoch %zu/%zu", p->step, total_steps, p->epoch,
                          total_epochs);
  if (rc == 0 && bar_width > 0) {
    int full = total_steps ? (int)((double)bar_width * (double)p->step / (double)total_steps)
                           : 0;
    full = full > bar_width ? bar_width : full;
    rc = tb__buf_append_str(out, " [");
    for (int i = 0; rc == 0 && i < bar_width; i++)
      rc = tb__buf_append(out, i < full ? "#" : ".", 1);
    rc = rc ? rc : tb__buf_append_str(out, "]");
  }
  rc = rc ? rc : tb__buf_printf(out, " loss %.4f", p->loss);
  if (rc == 0 && !isnan(p->eval_loss))
    rc = tb__buf_printf(out, " eval %.4f", p->eval_loss);
  rc = rc ? rc : tb__buf_printf(out, " %.0f tok/s ETA ", p->tokens_per_s);
  double eta = p->step > 0 && total_steps >= p->step
                   ? p->elapsed_s / (double)p->step * (double)(total_steps - p->step)
                   : NAN;
  return rc ? rc : append_duration(out, eta);
}

int tb__train_metrics_line(tb__buf_t *out, const tb__train_point_t *p) {
  int rc = tb__buf_printf(out, "{\"step\":%zu,\"epoch\":%zu,\"loss\":%.9g", p->step, p->epoch,
                          p->loss);
  if (rc == 0 && !isnan(p->eval_loss))
    rc = tb__buf_printf(out, ",\"eval_loss\":%.9g", p->eval_loss);
  return rc ? rc
            : tb__buf_printf(out, ",\"tokens_per_s\":%.1f,\"elapsed_s\":%.3f}\n",
                             p->tokens_per_s, p->elapsed_s);
}

/* A "nice" step for about n ticks over span (1, 2 or 5 times a power of 10). */
static double tick_step(double span, int n) {
  double raw = span / n;
  double mag = pow(10, floor(log10(raw)));
  double f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

int tb__train_loss_svg(tb__buf_t *out, const tb__train_point_t *pts, size_t n, int width,
                       int height) {
  const double left = 64, right = 16, top = 28, bottom = 40;
  double pw = width - left - right, ph = height - top - bottom;
  double ymin = INFINITY, ymax = -INFINITY;
  size_t smax = 1;
  for (size_t i = 0; i < n; i++) {
    double v[2] = { pts[i].loss, pts[i].eval_loss };
    for (int k = 0; k < 2; k++)
      if (isfinite(v[k])) {
        ymin = fmin(ymin, v[k]);
        ymax = fmax(ymax, v[k]);
      }
    if (pts[i].step > smax)
      smax = pts[i].step;
  }
  if (!isfinite(ymin)) {
    ymin = 0;
    ymax = 1;
  }
  /* The curve starts from 0 so the fall reads at its true scale. */
  ymin = fmin(ymin, 0);
  if (ymax - ymin < 1e-9)
    ymax = ymin + 1;
  double ystep = tick_step(ymax - ymin, 5);
  ymax = ceil(ymax / ystep) * ystep;
  int rc = tb__buf_printf(
      out,
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
      "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%g\" y=\"18\" font-size=\"14\">Training loss per token</text>\n",
      width, height, width, height, left);
#define X(s) (left + pw * ((double)(s)) / (double)smax)
#define Y(v) (top + ph * (1 - ((v) - ymin) / (ymax - ymin)))
  for (double y = ymin; rc == 0 && y <= ymax + ystep / 2; y += ystep)
    rc = tb__buf_printf(out,
                        "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                        "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                        left, Y(y), left + pw, Y(y), left - 6, Y(y) + 4, y);
  double xstep = tick_step((double)smax, 6);
  if (xstep < 1)
    xstep = 1;
  for (double s = 0; rc == 0 && s <= smax + xstep / 2 && s <= smax; s += xstep)
    rc = tb__buf_printf(out, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%g</text>\n",
                        X(s), top + ph + 16, s);
  rc = rc ? rc
          : tb__buf_printf(out,
                           "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">step</text>\n"
                           "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>"
                           "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n",
                           left + pw / 2, top + ph + 34, left, top, left, top + ph, left,
                           top + ph, left + pw, top + ph);
  rc = rc ? rc : tb__buf_append_str(out, "<polyline fill=\"none\" stroke=\"#1f77b4\" "
                                         "stroke-width=\"1.5\" points=\"");
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (isfinite(pts[i].loss))
      rc = tb__buf_printf(out, "%.1f,%.1f ", X(pts[i].step), Y(pts[i].loss));
  rc = rc ? rc : tb__buf_append_str(out, "\"/>\n");
  int any_eval = 0;
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (isfinite(pts[i].eval_loss)) {
      any_eval = 1;
      rc = tb__buf_printf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n",
                          X(pts[i].step), Y(pts[i].eval_loss));
    }
#undef X
#undef Y
  rc = rc ? rc
          : tb__buf_printf(out,
                           "<line x1=\"%g\" y1=\"14\" x2=\"%g\" y2=\"14\" stroke=\"#1f77b4\" "
                           "stroke-width=\"2\"/><text x=\"%g\" y=\"18\">train</text>\n",
                           left + pw - 120, left + pw - 100, left + pw - 95);
  if (rc == 0 && any_eval)
    rc = tb__buf_printf(out,
                        "<circle cx=\"%g\" cy=\"14\" r=\"3\" fill=\"#d62728\"/>"
                        "<text x=\"%g\" y=\"18\">eval</text>\n",
                        left + pw - 45, left + pw - 38);
  return rc ? rc : tb__buf_append_str(out, "</svg>\n");
}

/*
 * forward_backward_custom: the caller's loss function on the log-probs of
 * the forward pass, then the backward pass with the gradient as the
 * weights of a linear loss (see training_internal.h).
 */
#include "client/training_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ custom loss */

int tb_custom_loss_add_metric(tb_custom_loss_t *ctx, const char *name, double value) {
  if (ctx == NULL || name == NULL)
    return TB_EINVAL;
  tb_metric_t *m = realloc(ctx->metrics_, (ctx->n_metrics_ + 1) * sizeof(*m));
  if (m == NULL)
    return TB_ENOMEM;
  ctx->metrics_ = m;
  if ((m[ctx->n_metrics_].name = strdup(name)) == NULL)
    return TB_ENOMEM;
  m[ctx->n_metrics_].value = value;
  ctx->n_metrics_++;
  return 0;
}

int tb_custom_loss_fail(tb_custom_loss_t *ctx, int code, const char *fmt, ...) {
  if (ctx == NULL)
    return code;
  va_list ap;
  va_start(ap, fmt);
  free(ctx->message_);
  ctx->message_ = tb__vasprintf(fmt, ap);
  va_end(ap);
  return code;
}

void tb__tc_run_custom_loss(tb__tc_op_t *op) {
  tb__tc_t *tc = op->tc;
  size_t n = op->n_datums;
  tb_forward_backward_output_t *fwd = op->parts[0];
  const float **lps = calloc(n + 1, sizeof(*lps));
  size_t *nlp = calloc(n + 1, sizeof(*nlp));
  float **grads = calloc(n + 1, sizeof(*grads));
  tb_custom_loss_t ctx = { 0 };
  tb_error_t e = { 0 };
  int rc = lps && nlp && grads ? 0 : TB_ENOMEM;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    const tb_tensor_data_t *t = tb_forward_backward_output_tensor(fwd, i, "logprobs");
    const tb_tensor_data_t *tt = tb_train_datum_input(&op->datums[i], "target_tokens");
    if (t == NULL || t->dtype != TB_TENSOR_FLOAT32 || tt == NULL || t->numel != tt->numel) {
      rc = tb_error_set(&e, TB_EPROTO, TB_CATEGORY_SERVER,
                        "forward_backward_custom: the forward pass gave no logprobs of "
                        "datum %zu's %zu target tokens", i, tt ? tt->numel : 0);
      break;
    }
    lps[i] = t->f32;
    nlp[i] = t->numel;
    if ((grads[i] = calloc(t->numel + 1, sizeof(float))) == NULL)
      rc = TB_ENOMEM;
  }
  if (rc == 0) {
    ctx.data = op->fn_data;
    ctx.datums = op->datums;
    ctx.n = n;
    ctx.logprobs = lps;
    ctx.n_logprobs = nlp;
    ctx.grads = grads;
    tb__loop_frame_t frame;
    tb__loop_enter(&frame, tc->rt->loop);
    int urc = op->fn(&ctx);
    tb__loop_leave(&frame);
    if (urc != 0) {
      rc = tb_error_set(&e, urc < 0 ? urc : TB_EINVAL, TB_CATEGORY_USER,
                        "forward_backward_custom: the loss function failed: %s",
                        ctx.message_ ? ctx.message_ : tb_strerror(urc));
    } else if (!isfinite(ctx.loss)) {
      rc = tb_error_set(&e, TB_EINVAL, TB_CATEGORY_USER,
                        "forward_backward_custom: the loss is not a finite number");
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
      for (size_t j = 0; rc == 0 && j < nlp[i]; j++)
        if (!isfinite(grads[i][j]))
          rc = tb_error_set(&e, TB_EINVAL, TB_CATEGORY_USER,
                            "forward_backward_custom: gradient %zu of datum %zu is not a "
                            "finite number", j, i);
  }
  /* The backward pass: cross_entropy weighted by -dLoss/dlogprob. */
  for (size_t i = 0; rc == 0 && i < n; i++) {
    for (size_t j = 0; j < nlp[i]; j++)
      grads[i][j] = -grads[i][j];
    rc = tb_train_datum_set_f32(&op->datums[i], "weights", grads[i], nlp[i]);
  }
  size_t c = op->n_reqs / 2;
  size_t *bounds = rc == 0 ? calloc(c + 1, sizeof(size_t)) : NULL;
  if (rc == 0 && bounds == NULL)
    rc = TB_ENOMEM;
  for (size_t k = 0; rc == 0 && k < c; k++)
    bounds[k + 1] = bounds[k] + op->reqs[k].n_datums;
  if (rc == 0)
    rc = tb__tc_encode_chunks(op, c, op->datums, bounds, c, op->reqs[c].seq, "cross_entropy",
                              NULL, 0, 0);
  free(bounds);
  /* The loss and the function's metrics ride in the forward output until
   * the backward's combine (tb__tc_op_finish). */
  if (rc == 0) {
    for (size_t i = 0; i < fwd->n_metrics; i++)
      free(fwd->metrics[i].name);
    free(fwd->metrics);
    fwd->metrics = ctx.metrics_;
    fwd->n_metrics = ctx.n_metrics_;
    ctx.metrics_ = NULL;
    ctx.n_metrics_ = 0;
    tb_metric_t *m = realloc(fwd->metrics, (fwd->n_metrics + 1) * sizeof(*m));
    if (m == NULL || (m[fwd->n_metrics].name = strdup("loss:sum")) == NULL) {
      if (m != NULL)
        fwd->metrics = m;
      rc = TB_ENOMEM;
    } else {
      fwd->metrics = m;
      m[fwd->n_metrics].value = ctx.loss;
      fwd->n_metrics++;
    }
  }
  for (size_t i = 0; grads != NULL && i < n; i++)
    free(grads[i]);
  free(grads);
  free(lps);
  free(nlp);
  for (size_t i = 0; i < ctx.n_metrics_; i++)
    free(ctx.metrics_[i].name);
  free(ctx.metrics_);
  free(ctx.message_);
  if (rc != 0) {
    if (e.code == 0)
      tb_error_set(&e, rc, TB_CATEGORY_NONE, "forward_backward_custom: %s", tb_strerror(rc));
    tb__tc_keep_first_error(op, &e);
    tb_error_clear(&e);
    tb__tc_set_broken(tc, op->reqs[c].seq, &op->err);
    tb__tc_release_turn(op);
    tb__tc_op_complete(op, NULL, NULL);
    return;
  }
  /* Phase two holds the turn it kept since phase one. */
  op->first = c;
  op->count = c;
  if (op->cancelled || tb__tc_stopped_at(tc, op->reqs[c].seq)) {
    if (!op->cancelled)
      tb__tc_keep_first_error(op, &tc->broken_err);
    tb__tc_op_finish(op);
    return;
  }
  if (tb__tc_start_phase(op) != 0 && op->n_started == op->n_done)
    tb__tc_op_finish(op);
}

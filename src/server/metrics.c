/*
 * The training part's latency histograms, token counts and queue depths
 * for GET /metrics (see metrics.h).
 */
#include "server/metrics.h"

#include <stdio.h>

#include "server/training.h"

_Static_assert(TB__OP_SAMPLE < TB__METRIC_OPS, "TB__METRIC_OPS must cover every op type");

/* Upper bounds in seconds: from a cached answer to a long training step. */
static const double bounds[TB__LATENCY_BUCKETS] = {
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};

static const char *op_name(size_t type) {
  static const char *const names[TB__METRIC_OPS] = {
    [TB__OP_CREATE] = "create_model",
    [TB__OP_FORWARD] = "forward",
    [TB__OP_FORWARD_BACKWARD] = "forward_backward",
    [TB__OP_OPTIM] = "optim_step",
    [TB__OP_SAVE] = "save_weights",
    [TB__OP_SAVE_SAMPLER] = "save_weights_for_sampler",
    [TB__OP_LOAD] = "load_weights",
    [TB__OP_UNLOAD] = "unload_model",
    [TB__OP_SAMPLE] = "sample",
  };
  return type < TB__METRIC_OPS && names[type] != NULL ? names[type] : "other";
}

void tb__histogram_observe(tb__histogram_t *h, double seconds) {
  size_t i = 0;
  while (i < TB__LATENCY_BUCKETS && seconds > bounds[i])
    i++;
  if (i < TB__LATENCY_BUCKETS)
    h->buckets[i]++;
  h->count++;
  h->sum += seconds;
}

void tb__histogram_print(tb__buf_t *out, const char *name, const char *labels,
                         const tb__histogram_t *h) {
  const char *sep = labels[0] != '\0' ? "," : "";
  uint64_t cum = 0;
  for (size_t i = 0; i < TB__LATENCY_BUCKETS; i++) {
    cum += h->buckets[i];
    tb__buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i],
                   (unsigned long long)cum);
  }
  tb__buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                 (unsigned long long)h->count);
  tb__buf_printf(out, "%s_sum{%s} %.17g\n%s_count{%s} %llu\n", name, labels, h->sum, name,
                 labels, (unsigned long long)h->count);
}

/* Tokens of the job's input, and for a sample the tokens generated. */
static uint64_t op_tokens(const tb__top_t *op) {
  uint64_t n = 0;
  switch (op->type) {
  case TB__OP_FORWARD:
  case TB__OP_FORWARD_BACKWARD:
    for (size_t i = 0; i < op->batch.num_data; i++)
      n += op->batch.data[i].n;
    break;
  case TB__OP_SAMPLE:
    n = op->job.sample.prompt_len;
    for (size_t i = 0; i < op->job.sample.num_seqs; i++)
      n += op->job.sample.seqs[i].len;
    break;
  default:
    break;
  }
  return n;
}

void tb__metrics_op_finished(tb__top_t *op, int ok) {
  if (op->future == NULL || (size_t)op->type >= TB__METRIC_OPS)
    return;
  tb__op_metrics_t *m = &op->tr->metrics;
  uint64_t now = uv_now(op->tr->srv->loop);
  uint64_t ms = now > op->future->created_ms ? now - op->future->created_ms : 0;
  tb__histogram_observe(&m->latency[op->type], (double)ms / 1e3);
  if (ok)
    m->tokens[op->type] += op_tokens(op);
}

static size_t list_length(const tb__top_t *op) {
  size_t n = 0;
  for (; op != NULL; op = op->next)
    n++;
  return n;
}

/* A label value as the text format wants it: backslash, quote and newline
 * escaped (a model's name is the operator's). */
static void label_value(char *dst, size_t cap, const char *s) {
  size_t n = 0;
  for (; *s != '\0' && n + 3 < cap; s++) {
    if (*s == '\\' || *s == '"' || *s == '\n')
      dst[n++] = '\\';
    dst[n++] = *s == '\n' ? 'n' : *s;
  }
  dst[n] = '\0';
}

/* The families of each base model's decoder: a family's samples follow
 * its HELP and TYPE, one per model and state (state[0] NULL: one per
 * model, without a state label); col[j] is the column of the stats row
 * tb__metrics_training gathers (running, waiting, steps, kv_blocks,
 * kv_room, prefix_hits) that state j reads. */
typedef struct decode_series_s {
  const char *name, *type, *help;
  const char *state[2];
  int col[2];
} decode_series_t;

static const decode_series_t k_decode_series[] = {
  { "tinkerbell_decode_requests", "gauge",
    "Sample requests of a base model's decoder: running (their sequences decode) or waiting "
    "(for room in its KV cache).",
    { "running", "waiting" }, { 0, 1 } },
  { "tinkerbell_decode_steps_total", "counter",
    "Decode steps run, each one pass over the layers for every running sequence.",
    { NULL, NULL }, { 2 } },
  { "tinkerbell_kv_blocks", "gauge",
    "Blocks of the KV cache (each of block_tokens positions): total, and available to "
    "admissions.",
    { "total", "available" }, { 3, 4 } },
  { "tinkerbell_kv_prefix_hits_total", "counter", "Prompt blocks found in the prefix cache.",
    { NULL, NULL }, { 5 } },
};

void tb__metrics_training(const tb__training_t *tr, tb__buf_t *out) {
  size_t ordered = 0, engine = 0;
  for (const tb__tmodel_t *m = tr->models; m != NULL; m = m->next)
    ordered += list_length(m->waiting);
  for (const tb__engine_job_t *j = tr->engine.active; j != NULL; j = j->active_next)
    engine++;
  tb__buf_printf(out,
                 "# HELP tinkerbell_queue_depth Operations accepted and not finished, by "
                 "where they are: held (a create waiting for its base model or the user's "
                 "model limit), ordered (waiting for an earlier seq_id or for its model), "
                 "engine (jobs queued behind their adapter's or running).\n"
                 "# TYPE tinkerbell_queue_depth gauge\n"
                 "tinkerbell_queue_depth{stage=\"held\"} %zu\n"
                 "tinkerbell_queue_depth{stage=\"ordered\"} %zu\n"
                 "tinkerbell_queue_depth{stage=\"engine\"} %zu\n"
                 "# HELP tinkerbell_engine_work_items_running Work items of the engine in "
                 "the threadpool now.\n"
                 "# TYPE tinkerbell_engine_work_items_running gauge\n"
                 "tinkerbell_engine_work_items_running %zu\n",
                 list_length(tr->held), ordered, engine, tr->engine.running_items);
  /* Clients' jobs by whether their work started, and the oldest of each:
   * a queued job that ages is stuck behind others, a running one that
   * ages is slow or lost. */
  size_t n_queued = 0, n_running = 0;
  uint64_t now = uv_now(tr->srv->loop), oldest_queued = 0, oldest_running = 0;
  for (const tb__top_t *op = tr->ops; op != NULL; op = op->anext) {
    const tb__future_t *f = op->future;
    if (f == NULL || f->state != TB__FUTURE_PENDING || f->data != op)
      continue;
    if (f->started_ms != 0) {
      n_running++;
      if (now - f->started_ms > oldest_running)
        oldest_running = now - f->started_ms;
    } else {
      n_queued++;
      if (now - f->created_ms > oldest_queued)
        oldest_queued = now - f->created_ms;
    }
  }
  tb__buf_printf(out,
                 "# HELP tinkerbell_jobs Clients' operations accepted and not finished: "
                 "queued (held, ordered, or in the engine behind other jobs) or running "
                 "(their work started).\n"
                 "# TYPE tinkerbell_jobs gauge\n"
                 "tinkerbell_jobs{state=\"queued\"} %zu\n"
                 "tinkerbell_jobs{state=\"running\"} %zu\n"
                 "# HELP tinkerbell_job_oldest_age_seconds The oldest queued job's time "
                 "since it was accepted, and the oldest running job's time since it "
                 "started; 0 when there is none.\n"
                 "# TYPE tinkerbell_job_oldest_age_seconds gauge\n"
                 "tinkerbell_job_oldest_age_seconds{state=\"queued\"} %.3f\n"
                 "tinkerbell_job_oldest_age_seconds{state=\"running\"} %.3f\n",
                 n_queued, n_running, (double)oldest_queued / 1e3,
                 (double)oldest_running / 1e3);
  /* Each base model's decoder: what decodes, what waits for KV room.  A
   * family's samples follow its HELP and TYPE, one group each. */
  tb__engine_decode_stats_t st;
  char name[8][128];
  unsigned long long v[8][6];  /* the columns of k_decode_series */
  size_t nb = tr->n_bases < 8 ? tr->n_bases : 8;
  for (size_t i = 0; i < nb; i++) {
    const tb__tbase_t *b = &tr->bases[i];
    memset(&st, 0, sizeof(st));
    if (b->model != NULL)  /* else still loading: nothing decodes */
      tb__engine_decode_stats(b->model, &st);
    label_value(name[i], sizeof(name[i]), b->name);
    unsigned long long row[6] = { st.running, st.waiting, st.steps,
                                  st.kv_blocks, st.kv_room, st.prefix_hits };
    memcpy(v[i], row, sizeof(row));
  }
  for (size_t k = 0; k < sizeof(k_decode_series) / sizeof(k_decode_series[0]); k++) {
    const decode_series_t *d = &k_decode_series[k];
    tb__buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name, d->type);
    for (size_t i = 0; i < nb; i++) {
      if (d->state[0] == NULL) {
        tb__buf_printf(out, "%s{model=\"%s\"} %llu\n", d->name, name[i], v[i][d->col[0]]);
        continue;
      }
      for (size_t j = 0; j < 2; j++)
        tb__buf_printf(out, "%s{model=\"%s\",state=\"%s\"} %llu\n", d->name, name[i],
                       d->state[j], v[i][d->col[j]]);
    }
  }
  tb__buf_printf(out, "# HELP tinkerbell_tokens_total Tokens processed by finished "
                      "operations: the inputs of forward and forward_backward, the prompt "
                      "and generated tokens of sample.\n"
                      "# TYPE tinkerbell_tokens_total counter\n");
  for (size_t i = 0; i < TB__METRIC_OPS; i++)
    if (tr->metrics.tokens[i] > 0 || i == TB__OP_FORWARD_BACKWARD)
      tb__buf_printf(out, "tinkerbell_tokens_total{op=\"%s\"} %llu\n", op_name(i),
                     (unsigned long long)tr->metrics.tokens[i]);
  tb__buf_printf(out, "# HELP tinkerbell_job_latency_seconds Time from accepting an "
                      "operation to its result or failure, by operation.\n"
                      "# TYPE tinkerbell_job_latency_seconds histogram\n");
  for (size_t i = 0; i < TB__METRIC_OPS; i++) {
    if (tr->metrics.latency[i].count == 0)
      continue;  /* a series appears with its first observation */
    char labels[64];
    snprintf(labels, sizeof(labels), "op=\"%s\"", op_name(i));
    tb__histogram_print(out, "tinkerbell_job_latency_seconds", labels,
                        &tr->metrics.latency[i]);
  }
}

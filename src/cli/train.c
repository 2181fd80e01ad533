/*
 * tinkerbell train: fine-tunes a LoRA adapter on a chat JSONL file.
 *
 * By default the training server runs embedded on the command's own loop
 * (loopback, an ephemeral port, checkpoints under --data-dir) and the
 * command drives it through the client runtime, exactly as it drives a
 * remote Tinker-compatible service given with --base-url: one code path.
 *
 * The whole file is checked before anything starts (a bad line stops the
 * run with its number).  Steps are pipelined as the Tinkerbell guide
 * recommends: the forward_backward and optim_step of the next batch are
 * submitted while the current ones run (the client's seq_ids keep them in
 * order on the server).  Each step's loss is the mean cross-entropy per
 * trained token.  At each epoch's end the eval set (--eval-fraction of the
 * data, held out with --seed) is measured with forward passes.
 *
 * Written next to the checkpoints (--out, default <data-dir>/<model id>):
 * metrics.jsonl, one line per step, and loss.svg.  At the end the final
 * sampler weights are saved (a PEFT export sits beside them) and a reply
 * to a prompt of the data is sampled before and after training.
 *
 * Ctrl-C finishes the step under way, saves a checkpoint, writes the
 * files and exits with status 130; a second Ctrl-C exits at once.
 *
 * The model: the built-in `base`, a Hugging Face directory the embedded
 * server loads (--model DIR), or a remote service's --base-model rendered
 * with the tokenizer of --tokenizer DIR (client_session.h).  The
 * conversations are rendered by the model's renderer (its chat template's,
 * or --renderer), as the model's own template renders them, and the loss
 * counts what it weights: every assistant message, or with --train-on
 * last only the last one of each conversation.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "cli/cli.h"
#include "cli/client_session.h"
#include "cli/train_data.h"
#include "cli/train_report.h"
#include "core/buf.h"
#include "core/log.h"
#include "tinkerbell.h"
#include "tinkerbell/sampling_client.h"
#include "tinkerbell/training_client.h"

#define PIPELINE_DEPTH 2      /* steps in flight */
#define SAMPLE_MAX_TOKENS 64

enum {
  OPT_BASE_URL,
  OPT_CA_FILE,
  OPT_BASE_MODEL,
  OPT_MODEL,
  OPT_TOKENIZER,
  OPT_RENDERER,
  OPT_TRAIN_ON,
  OPT_RANK,
  OPT_LEARNING_RATE,
  OPT_EPOCHS,
  OPT_BATCH_SIZE,
  OPT_MAX_LENGTH,
  OPT_SAVE_EVERY,
  OPT_EVAL_FRACTION,
  OPT_SEED,
  OPT_OUT,
  OPT_DATA_DIR,
  OPT_THREADS,
  OPT_HELP,
  OPT_COUNT
};

static const tb__cli_opt_t train_opts[OPT_COUNT + 1] = {
  [OPT_BASE_URL] = { "base-url", "URL",
                     "train on a running Tinker-compatible service\n"
                     "(TINKER_API_KEY for its key) instead of the\n"
                     "embedded server [embedded]" },
  [OPT_CA_FILE] = TB__CLI_OPT_CA_FILE,
  [OPT_BASE_MODEL] = { "base-model", "NAME", "the base model to adapt: the service's name\n"
                                           "for it [base, or the --model directory's\n"
                                           "name]" },
  [OPT_MODEL] = { "model", "DIR", "a Hugging Face model directory (weights,\n"
                                  "tokenizer, chat template) for the embedded\n"
                                  "server to train [the built-in base]" },
  [OPT_TOKENIZER] = TB__CLI_OPT_TOKENIZER,
  [OPT_RENDERER] = TB__CLI_OPT_RENDERER,
  [OPT_TRAIN_ON] = { "train-on", "WHICH", "the assistant messages the loss counts: all,\n"
                                          "or the last of each conversation [all]" },
  [OPT_RANK] = { "rank", "N", "LoRA rank [16]" },
  [OPT_LEARNING_RATE] = { "learning-rate", "LR", "AdamW learning rate, at most 1 [0.003]" },
  [OPT_EPOCHS] = { "epochs", "N", "passes over the training data [10]" },
  [OPT_BATCH_SIZE] = { "batch-size", "N", "conversations per step [8]" },
  [OPT_MAX_LENGTH] = { "max-length", "TOKENS",
                       "longer conversations are cut to this many tokens\n"
                       "[512]" },
  [OPT_SAVE_EVERY] = { "save-every", "STEPS",
                       "save a checkpoint (weights and optimizer) every\n"
                       "this many steps; 0: only at the end [0]" },
  [OPT_EVAL_FRACTION] = { "eval-fraction", "F",
                          "share of the conversations held out to measure\n"
                          "the eval loss each epoch; 0: none [0.1]" },
  [OPT_SEED] = { "seed", "N", "seeds the eval split, the order of the data and\n"
                              "the adapter's initialisation [0]" },
  [OPT_OUT] = { "out", "DIR", "where metrics.jsonl and loss.svg go\n"
                              "[<data-dir>/<model id>, beside the checkpoints]" },
  [OPT_DATA_DIR] = { "data-dir", "DIR", "the embedded server's checkpoints\n"
                                        "[./tinkerbell-data]" },
  [OPT_THREADS] = { "threads", "N", "threadpool size of the embedded server [cores]" },
  [OPT_HELP] = { "help", NULL, "print this help and exit" },
  [OPT_COUNT] = { NULL, NULL, NULL },
};

static const char train_description[] =
    "Fine-tunes a LoRA adapter on DATA.jsonl: one JSON object per line with\n"
    "\"messages\": [{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": ...}, ...],\n"
    "rendered in the model's chat format; the loss counts the assistant tokens.\n"
    "Runs the training server embedded unless --base-url names one.  Shows progress (step, epoch, loss, eval loss,\n"
    "tokens/s, ETA), writes metrics.jsonl and loss.svg next to the checkpoints,\n"
    "and prints where the final weights and their PEFT export are, with a reply\n"
    "sampled before and after training.  Ctrl-C saves a checkpoint and stops.";

typedef struct train_config_s {
  const char *data_path;
  const char *base_url;
  const char *ca_file;
  tb__cli_model_t model;
  int render_flags;             /* TB_RENDER_TRAIN_LAST with --train-on last */
  const char *out;
  const char *data_dir;
  uint64_t rank, epochs, batch_size, max_length, save_every, seed, threads;
  double learning_rate, eval_fraction;
} train_config_t;

/* One submitted step: its futures and what its report needs. */
typedef struct step_s {
  tb_future_t *fb, *opt;
  size_t step, epoch;
  size_t trained;       /* trained target tokens of the batch */
  size_t tokens;        /* input tokens of the batch */
} step_t;

typedef struct trainer_s {
  train_config_t cfg;
  tb__cli_session_t session;
  uv_loop_t *loop;              /* the session's */
  tb_training_client_t tc;
  int tc_on;
  uv_signal_t sigint;
  int interrupted;
  int interrupt_on;
  tb__train_data_t data, eval;
  tb__cli_text_t text;          /* what the data is rendered with */
  size_t *order;
  step_t pending[PIPELINE_DEPTH];
  size_t n_pending;
  tb__train_point_t *points;
  size_t n_points;
  size_t total_steps, steps_per_epoch;
  uint64_t started_ms, last_done_ms;
  int tty;
  char *out_dir;
  char *model_id;
  char *last_checkpoint;
  int metrics_fd;
  int64_t metrics_off;
  int writes_in_flight;
} trainer_t;

/* ------------------------------------------------------------ output files */

typedef struct file_write_s {
  uv_fs_t req;
  trainer_t *t;
  char *data;
} file_write_t;

static void on_written(uv_fs_t *req) {
  file_write_t *w = (file_write_t *)req;
  if (req->result < 0)
    fprintf(stderr, "tinkerbell train: cannot write metrics.jsonl: %s\n",
            uv_strerror((int)req->result));
  w->t->writes_in_flight--;
  uv_fs_req_cleanup(req);
  free(w->data);
  free(w);
}

/* Appends a line to metrics.jsonl off the loop thread (at its own offset,
 * so the order of completion does not matter). */
static void metrics_append(trainer_t *t, tb__buf_t *line) {
  if (t->metrics_fd < 0)
    return;
  file_write_t *w = malloc(sizeof(*w));
  if (w == NULL)
    return;
  size_t len = line->len;
  w->t = t;
  w->data = tb__buf_steal(line, NULL);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  if (uv_fs_write(t->loop, &w->req, t->metrics_fd, &b, 1, t->metrics_off, on_written) != 0) {
    free(w->data);
    free(w);
    return;
  }
  t->metrics_off += (int64_t)len;
  t->writes_in_flight++;
}

typedef struct file_job_s {
  uv_work_t work;
  const char *path, *data;
  size_t len;
  int status;
  int done;
} file_job_t;

static void file_job_work(uv_work_t *w) {
  file_job_t *j = w->data;
  int fd = open(j->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    j->status = -errno;
    return;
  }
  for (size_t off = 0; off < j->len;) {
    ssize_t n = write(fd, j->data + off, j->len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      j->status = -errno;
      break;
    }
    off += (size_t)n;
  }
  if (close(fd) != 0 && j->status == 0)
    j->status = -errno;
}

static void file_job_done(uv_work_t *w, int status) {
  file_job_t *j = w->data;
  j->done = 1;
  if (status != 0)
    j->status = status;
}

/* Writes a whole file on the threadpool while the loop runs on (the
 * embedded server keeps serving), and returns once it is written. */
static int write_file(trainer_t *t, const char *path, const char *data, size_t len) {
  file_job_t j = { .path = path, .data = data, .len = len };
  j.work.data = &j;
  int rc = uv_queue_work(t->loop, &j.work, file_job_work, file_job_done);
  if (rc != 0)
    return rc;
  while (!j.done)
    uv_run(t->loop, UV_RUN_ONCE);
  return j.status < 0 ? j.status : 0;
}

/* ------------------------------------------------------------ waiting */

/* Waits for f; on failure prints what failed and returns the code. */
static int wait_ok(tb_future_t *f, const char *what) {
  int rc = tb_future_wait(f, 0);
  if (rc != 0)
    fprintf(stderr, "\ntinkerbell train: %s failed: %s\n", what,
            f != NULL && f->error.message ? tb_error_message(&f->error) : tb_strerror(rc));
  return rc;
}

static void on_sigint(uv_signal_t *s, int signum) {
  trainer_t *t = s->data;
  if (t->interrupted) {
    fprintf(stderr, "\ntinkerbell train: interrupted again: exiting now\n");
    _exit(130);
  }
  t->interrupted = 1;
  fprintf(stderr, "\ntinkerbell train: interrupted: finishing the step, then saving\n");
}

/* ------------------------------------------------------------ batches */

static int make_datums(const tb__train_example_t *const *ex, size_t n, tb_train_datum_t **out,
                       size_t *trained, size_t *tokens) {
  tb_train_datum_t *d = calloc(n, sizeof(*d));
  if (d == NULL)
    return TB_ENOMEM;
  int rc = 0;
  *trained = *tokens = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    rc = tb_train_datum_init(&d[i], ex[i]->tokens, ex[i]->n);
    rc = rc ? rc : tb_train_datum_set_tokens(&d[i], "target_tokens", ex[i]->targets, ex[i]->n);
    rc = rc ? rc : tb_train_datum_set_f32(&d[i], "weights", ex[i]->weights, ex[i]->n);
    *trained += ex[i]->n_trained;
    *tokens += ex[i]->n;
  }
  if (rc != 0) {
    for (size_t i = 0; i < n; i++)
      tb_train_datum_clear(&d[i]);
    free(d);
    return rc;
  }
  *out = d;
  return 0;
}

static void free_datums(tb_train_datum_t *d, size_t n) {
  for (size_t i = 0; i < n; i++)
    tb_train_datum_clear(&d[i]);
  free(d);
}

/* The loss per trained token of a forward / forward_backward result. */
static double mean_loss(tb_future_t *f, size_t trained) {
  const tb_forward_backward_output_t *o = tb_future_result(f, &tb_result_forward_backward_output);
  double sum;
  if (o == NULL || !tb_forward_backward_output_metric(o, "loss:sum", &sum) || trained == 0)
    return NAN;
  return sum / (double)trained;
}

/* Mean eval loss per trained token over the held-out set, or NaN. */
static double eval_loss(trainer_t *t, int *failed) {
  if (t->eval.n == 0)
    return NAN;
  const tb__train_example_t **ex = malloc(t->eval.n * sizeof(*ex));
  if (ex == NULL)
    return NAN;
  for (size_t i = 0; i < t->eval.n; i++)
    ex[i] = &t->eval.examples[i];
  tb_train_datum_t *d;
  size_t trained, tokens;
  double loss = NAN;
  if (make_datums(ex, t->eval.n, &d, &trained, &tokens) == 0) {
    tb_future_t *f = NULL;
    if (tb_training_client_forward(&t->tc, d, t->eval.n, "cross_entropy", NULL, 0, &f) == 0) {
      if (wait_ok(f, "the eval forward pass") == 0)
        loss = mean_loss(f, trained);
      else
        *failed = 1;
      tb_future_free(f);
    }
    free_datums(d, t->eval.n);
  }
  free(ex);
  return loss;
}

/* Waits for the oldest step in flight and reports it. */
static int finish_oldest(trainer_t *t, double eval) {
  step_t s = t->pending[0];
  memmove(&t->pending[0], &t->pending[1], (t->n_pending - 1) * sizeof(step_t));
  t->n_pending--;
  int rc = wait_ok(s.fb, "forward_backward");
  rc = rc ? rc : wait_ok(s.opt, "optim_step");
  double loss = rc == 0 ? mean_loss(s.fb, s.trained) : NAN;
  tb_future_free(s.fb);
  tb_future_free(s.opt);
  if (rc != 0)
    return rc;
  uint64_t now = uv_now(t->loop);
  double dt = (double)(now - t->last_done_ms) / 1000.0;
  t->last_done_ms = now;
  tb__train_point_t *p = &t->points[t->n_points++];
  *p = (tb__train_point_t){
    .step = s.step,
    .epoch = s.epoch,
    .loss = loss,
    .eval_loss = eval,
    .tokens_per_s = dt > 0 ? (double)s.tokens / dt : 0,
    .elapsed_s = (double)(now - t->started_ms) / 1000.0,
  };
  tb__buf_t line = TB_BUF_INIT;
  tb__train_progress(&line, p, t->total_steps, t->cfg.epochs, t->tty ? 24 : 0);
  tb__buf_terminate(&line);
  if (t->tty)
    fprintf(stdout, "\r%s\033[K", line.base);
  else
    fprintf(stdout, "%s\n", line.base);
  fflush(stdout);
  line.len = 0;
  tb__train_metrics_line(&line, p);
  metrics_append(t, &line);
  tb__buf_free(&line);
  return 0;
}

static int drain(trainer_t *t) {
  int rc = 0;
  while (rc == 0 && t->n_pending > 0)
    rc = finish_oldest(t, NAN);
  return rc;
}

/* Submits one step's forward_backward and optim_step. */
static int submit_step(trainer_t *t, size_t step, size_t epoch, size_t first) {
  size_t n = t->cfg.batch_size;
  if (first + n > t->data.n)
    n = t->data.n - first;
  const tb__train_example_t **ex = malloc(n * sizeof(*ex));
  if (ex == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < n; i++)
    ex[i] = &t->data.examples[t->order[first + i]];
  tb_train_datum_t *d;
  step_t s = { .step = step, .epoch = epoch };
  int rc = make_datums(ex, n, &d, &s.trained, &s.tokens);
  free(ex);
  if (rc != 0)
    return rc;
  tb_adamw_params_t adam;
  tb_adamw_params_default(&adam);
  adam.learning_rate = t->cfg.learning_rate;
  rc = tb_training_client_forward_backward(&t->tc, d, n, "cross_entropy", NULL, 0, &s.fb);
  free_datums(d, n);
  if (rc == 0) {
    rc = tb_training_client_optim_step(&t->tc, &adam, &s.opt);
    if (rc != 0)
      tb_future_free(s.fb);
  }
  if (rc != 0) {
    fprintf(stderr, "tinkerbell train: cannot submit step %zu: %s\n", step, tb_strerror(rc));
    return rc;
  }
  t->pending[t->n_pending++] = s;
  return 0;
}

static void shuffle(size_t *order, size_t n, uint64_t *rng) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)(tb__cli_rand(rng) % i);
    size_t tmp = order[i - 1];
    order[i - 1] = order[j];
    order[j] = tmp;
  }
}

/* ------------------------------------------------------------ sampling */

/* A greedy reply of the model at path (NULL: the base model) to prompt. */
static char *sample_reply(trainer_t *t, const char *path, const char *prompt) {
  tb_sample_params_t sp;
  tb_sample_params_default(&sp);
  sp.temperature = 0;
  sp.max_tokens = SAMPLE_MAX_TOKENS;
  char *text = NULL;
  tb__cli_sample_texts(&t->session, &t->text, path, t->cfg.model.name, prompt, 0, &sp, 1,
                       &text, NULL);
  return text;
}

/* A sampled reply as printed: said so when there is none. */
static const char *reply_text(const char *text) {
  if (text == NULL)
    return "(sampling failed)";
  return text[0] != '\0' ? text : "(an empty reply: the model ended its message at once)";
}

/* The example whose prompt comes most often in the data (the first of
 * them): the reply the model has seen most, to show before and after. */
static const tb__train_example_t *most_frequent_prompt(const tb__train_data_t *d) {
  const tb__train_example_t *best = &d->examples[0];
  size_t best_count = 0;
  /* Quadratic, over a bounded prefix: a probe, not an analysis. */
  size_t n = d->n < 2000 ? d->n : 2000;
  for (size_t i = 0; i < n; i++) {
    const tb__train_example_t *e = &d->examples[i];
    if (e->prompt == NULL || e->reply == NULL)
      continue;
    size_t count = 0;
    for (size_t j = 0; j < n; j++)
      count += d->examples[j].prompt != NULL && strcmp(d->examples[j].prompt, e->prompt) == 0;
    if (count > best_count) {
      best = e;
      best_count = count;
    }
  }
  return best;
}

/* ------------------------------------------------------------ options */

static int parse_options(int argc, char **argv, train_config_t *c) {
  tb__cli_args_t a;
  tb__cli_args_init(&a, "train", train_opts, argc, argv);
  const char *v;
  int opt, rc = 0;
  while (rc == 0 && (opt = tb__cli_next(&a, &v)) != TB__CLI_END) {
    switch (opt) {
      case TB__CLI_ARG:
        if (c->data_path != NULL) {
          tb__cli_error(&a, "one data file only (got '%s' and '%s')", c->data_path, v);
          return -1;
        }
        c->data_path = v;
        break;
      case OPT_BASE_URL: c->base_url = v; break;
      case OPT_CA_FILE: c->ca_file = v; break;
      case OPT_BASE_MODEL: c->model.base_model = v; break;
      case OPT_MODEL: c->model.dir = v; break;
      case OPT_TOKENIZER: c->model.tokenizer = v; break;
      case OPT_RENDERER: c->model.renderer = v; break;
      case OPT_TRAIN_ON:
        if (strcmp(v, "all") != 0 && strcmp(v, "last") != 0) {
          tb__cli_error(&a, "--train-on: expected all or last, got '%s'", v);
          return -1;
        }
        c->render_flags = strcmp(v, "last") == 0 ? TB_RENDER_TRAIN_LAST : 0;
        break;
      case OPT_RANK: rc = tb__cli_uint(&a, "rank", v, 1, 1024, &c->rank); break;
      case OPT_LEARNING_RATE:
        rc = tb__cli_number(&a, "learning-rate", v, 1e-12, 1, &c->learning_rate);
        break;
      case OPT_EPOCHS: rc = tb__cli_uint(&a, "epochs", v, 1, 100000, &c->epochs); break;
      case OPT_BATCH_SIZE:
        rc = tb__cli_uint(&a, "batch-size", v, 1, 100000, &c->batch_size);
        break;
      case OPT_MAX_LENGTH:
        rc = tb__cli_uint(&a, "max-length", v, 2, 1u << 20, &c->max_length);
        break;
      case OPT_SAVE_EVERY:
        rc = tb__cli_uint(&a, "save-every", v, 0, UINT32_MAX, &c->save_every);
        break;
      case OPT_EVAL_FRACTION:
        rc = tb__cli_number(&a, "eval-fraction", v, 0, 0.9, &c->eval_fraction);
        break;
      case OPT_SEED: rc = tb__cli_uint(&a, "seed", v, 0, UINT64_MAX, &c->seed); break;
      case OPT_OUT: c->out = v; break;
      case OPT_DATA_DIR: c->data_dir = v; break;
      case OPT_THREADS: rc = tb__cli_uint(&a, "threads", v, 1, 1024, &c->threads); break;
      case OPT_HELP:
        tb__cli_help(stdout, "tinkerbell train DATA.jsonl [options]", train_description,
                     train_opts);
        return 1;
      default:
        return -1;
    }
  }
  if (rc != 0)
    return -1;
  if (c->data_path == NULL) {
    tb__cli_error(&a, "which data? (tinkerbell train DATA.jsonl)");
    return -1;
  }
  return tb__cli_model_resolve(&a, c->base_url, &c->model);
}

/* ------------------------------------------------------------ the run */

static int open_outputs(trainer_t *t) {
  if (t->cfg.out != NULL) {
    t->out_dir = tb__strndup(t->cfg.out, strlen(t->cfg.out));
  } else {
    /* Beside the embedded server's checkpoints of this model. */
    t->out_dir = tb__asprintf("%s/%s", t->cfg.base_url ? "tinkerbell-runs" : t->cfg.data_dir,
                              t->model_id);
  }
  if (t->out_dir == NULL)
    return TB_ENOMEM;
  int rc = tb__cli_make_dirs(t->out_dir);
  char path[4200];
  snprintf(path, sizeof(path), "%s/metrics.jsonl", t->out_dir);
  uv_fs_t req;
  if (rc == 0) {
    rc = uv_fs_open(t->loop, &req, path, O_WRONLY | O_CREAT | O_TRUNC, 0644, NULL);
    uv_fs_req_cleanup(&req);
  }
  if (rc < 0) {
    fprintf(stderr, "tinkerbell train: --out %s: %s\n", t->out_dir, uv_strerror(rc));
    return rc;
  }
  t->metrics_fd = rc;
  return 0;
}

/* Saves the state (weights and optimizer) as name; prints the path. */
static int save_state(trainer_t *t, const char *name) {
  char *path = NULL;
  tb_error_t err = { 0 };
  int rc = tb_training_client_save_state_sync(&t->tc, name, 0, &path, &err);
  if (rc != 0) {
    fprintf(stderr, "\ntinkerbell train: saving %s failed: %s\n", name,
            err.message ? tb_error_message(&err) : tb_strerror(rc));
  } else {
    free(t->last_checkpoint);
    t->last_checkpoint = path;
  }
  tb_error_clear(&err);
  return rc;
}

static void write_curve(trainer_t *t) {
  tb__buf_t svg = TB_BUF_INIT;
  char path[4200];
  snprintf(path, sizeof(path), "%s/loss.svg", t->out_dir);
  if (tb__train_loss_svg(&svg, t->points, t->n_points, 720, 400) == 0 &&
      write_file(t, path, svg.base, svg.len) != 0)
    fprintf(stderr, "tinkerbell train: cannot write %s\n", path);
  tb__buf_free(&svg);
  while (t->writes_in_flight > 0)
    uv_run(t->loop, UV_RUN_ONCE);
}

static int train_loop(trainer_t *t) {
  uint64_t rng = t->cfg.seed ^ 0x5eedull;
  t->order = malloc(t->data.n * sizeof(*t->order));
  t->points = calloc(t->total_steps, sizeof(*t->points));
  if (t->order == NULL || t->points == NULL)
    return TB_ENOMEM;
  for (size_t i = 0; i < t->data.n; i++)
    t->order[i] = i;
  t->started_ms = t->last_done_ms = uv_now(t->loop);
  size_t step = 0;
  int rc = 0, failed = 0;
  for (size_t epoch = 1; rc == 0 && epoch <= t->cfg.epochs && !t->interrupted; epoch++) {
    shuffle(t->order, t->data.n, &rng);
    for (size_t first = 0; rc == 0 && first < t->data.n && !t->interrupted;
         first += t->cfg.batch_size) {
      rc = submit_step(t, ++step, epoch, first);
      if (rc == 0 && t->n_pending == PIPELINE_DEPTH)
        rc = finish_oldest(t, NAN);
      if (rc == 0 && t->cfg.save_every && step % t->cfg.save_every == 0) {
        char name[32];
        snprintf(name, sizeof(name), "step-%zu", step);
        rc = drain(t);
        rc = rc ? rc : save_state(t, name);
      }
    }
    rc = rc ? rc : drain(t);
    if (rc == 0 && t->n_points > 0 && !t->interrupted) {
      /* The epoch's eval loss goes with its last step. */
      tb__train_point_t *p = &t->points[t->n_points - 1];
      p->eval_loss = eval_loss(t, &failed);
      if (failed)
        rc = TB_ESERVER;
      else if (!isnan(p->eval_loss)) {
        fprintf(stdout, "%sepoch %zu: eval loss %.4f\n", t->tty ? "\n" : "", epoch,
                p->eval_loss);
        tb__buf_t line = TB_BUF_INIT;
        tb__buf_printf(&line, "{\"epoch\":%zu,\"step\":%zu,\"eval_loss\":%.9g}\n", epoch,
                       p->step, p->eval_loss);
        metrics_append(t, &line);
        tb__buf_free(&line);
      }
    }
  }
  if (t->tty)
    fputc('\n', stdout);
  return rc;
}

static int run(trainer_t *t) {
  train_config_t *c = &t->cfg;
  tb_error_t err = { 0 };
  int rc = tb__cli_text_open(&t->text, "train", &c->model);
  if (rc != 0)
    return rc;
  rc = tb__train_data_load(t->text.renderer, c->data_path, c->max_length, c->render_flags,
                           &t->data, &err);
  if (rc == 0)
    rc = tb__train_data_split(&t->data, c->eval_fraction, c->seed, &t->eval);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell train: %s\n", err.message ? tb_error_message(&err)
                                                          : tb_strerror(rc));
    tb_error_clear(&err);
    return TB__CLI_USAGE;
  }
  t->steps_per_epoch = (t->data.n + c->batch_size - 1) / c->batch_size;
  t->total_steps = t->steps_per_epoch * c->epochs;
  printf("tinkerbell train: %zu conversations (%zu tokens) to train on, %zu held out; "
         "%zu steps of %zu over %zu epoch%s%s\n",
         t->data.n, t->data.n_tokens, t->eval.n, t->total_steps, (size_t)c->batch_size,
         (size_t)c->epochs, c->epochs == 1 ? "" : "s",
         t->data.n_truncated ? " (some conversations cut to --max-length)" : "");

  rc = tb__cli_session_open(&t->session, "train", c->base_url, c->ca_file, c->data_dir,
                            c->model.spec, c->threads);
  t->loop = &t->session.loop;
  if (rc != 0)
    return rc;
  if (t->interrupt_on == 0) {
    uv_signal_init(t->loop, &t->sigint);
    t->sigint.data = t;
    uv_signal_start(&t->sigint, on_sigint, SIGINT);
    uv_unref((uv_handle_t *)&t->sigint);
    t->interrupt_on = 1;
  }
  tb_lora_params_t lora;
  tb_lora_params_default(&lora);
  lora.rank = (int)c->rank;
  lora.has_seed = 1;
  lora.seed = c->seed;
  rc = tb_service_client_create_lora_training_client_sync(&t->session.sc, &t->tc,
                                                          c->model.name, &lora, &err);
  t->tc_on = t->tc.impl_ != NULL;
  if (rc != 0) {
    fprintf(stderr, "tinkerbell train: cannot create the model on %s: %s\n", t->session.url,
            err.message ? tb_error_message(&err) : tb_strerror(rc));
    tb_error_clear(&err);
    return 1;
  }
  t->model_id = tb__strndup(t->tc.model_id, strlen(t->tc.model_id));
  if (t->model_id == NULL || open_outputs(t) != 0)
    return 1;
  printf("tinkerbell train: model %s on %s%s\n", t->model_id, t->session.url,
         c->base_url ? "" : " (embedded)");

  const tb__train_example_t *probe = most_frequent_prompt(&t->data);
  char *before = probe->prompt ? sample_reply(t, NULL, probe->prompt) : NULL;

  rc = train_loop(t);
  int interrupted = t->interrupted;
  if (rc == 0 && interrupted) {
    char name[48];
    snprintf(name, sizeof(name), "interrupted-step-%zu", t->n_points);
    rc = save_state(t, name);
  }
  char *sampler = NULL;
  if (rc == 0) {
    rc = tb_training_client_save_weights_for_sampler_sync(&t->tc, interrupted ? "interrupted"
                                                                              : "final",
                                                          0, &sampler, &err);
    if (rc != 0) {
      fprintf(stderr, "tinkerbell train: saving the sampler weights failed: %s\n",
              err.message ? tb_error_message(&err) : tb_strerror(rc));
      tb_error_clear(&err);
    }
  }
  write_curve(t);
  if (t->n_points > 0)
    printf("loss %.4f -> %.4f over %zu steps\n", t->points[0].loss,
           t->points[t->n_points - 1].loss, t->n_points);
  printf("metrics: %s/metrics.jsonl\nloss curve: %s/loss.svg\n", t->out_dir, t->out_dir);
  if (t->last_checkpoint != NULL)
    printf("checkpoint (weights and optimizer): %s\n", t->last_checkpoint);
  if (sampler != NULL) {
    printf("sampler weights: %s\n", sampler);
    if (c->base_url == NULL) {
      const char *rest = strstr(sampler, "://");
      printf("PEFT export: %s/%s/adapter_model.safetensors (with adapter_config.json)\n",
             c->data_dir, rest ? rest + 3 : sampler);
    }
    if (probe->prompt != NULL) {
      char *after = sample_reply(t, sampler, probe->prompt);
      printf("\nprompt:  %s\n", probe->prompt);
      if (probe->reply)
        printf("data:    %s\n", probe->reply);
      printf("before:  %s\nafter:   %s\n", reply_text(before), reply_text(after));
      free(after);
    }
  }
  free(before);
  free(sampler);
  if (rc != 0)
    return 1;
  return interrupted ? 130 : 0;
}

static void close_all(trainer_t *t) {
  if (t->loop == NULL)
    return;
  if (t->metrics_fd >= 0) {
    uv_fs_t req;
    uv_fs_close(t->loop, &req, t->metrics_fd, NULL);
    uv_fs_req_cleanup(&req);
  }
  for (size_t i = 0; i < t->n_pending; i++) {
    tb_future_free(t->pending[i].fb);
    tb_future_free(t->pending[i].opt);
  }
  /* The training client closes before the ServiceClient. */
  if (t->tc_on) {
    tb_training_client_close(&t->tc, tb__cli_on_training_closed);
    tb__cli_wait_closed(&t->session);
  }
  if (t->interrupt_on)
    uv_close((uv_handle_t *)&t->sigint, NULL);
  tb__cli_session_close(&t->session);
}

int tb__cli_train(int argc, char **argv) {
  trainer_t t;
  memset(&t, 0, sizeof(t));
  t.metrics_fd = -1;
  t.cfg = (train_config_t){
    .data_dir = "./tinkerbell-data",
    .rank = 16,
    .epochs = 10,
    .batch_size = 8,
    .max_length = 512,
    .learning_rate = 3e-3,
    .eval_fraction = 0.1,
  };
  int rc = parse_options(argc, argv, &t.cfg);
  if (rc != 0) {
    tb__cli_model_clear(&t.cfg.model);
    return rc > 0 ? 0 : TB__CLI_USAGE;
  }
  /* The command reports what goes wrong itself (a model that does not
   * load, a failed request); the embedded server's warnings would say it
   * twice.  TINKERBELL_LOG=warn shows them. */
  if (getenv("TINKERBELL_LOG") == NULL)
    tb__log_set_level(TB_LOG_ERROR);
  t.tty = isatty(STDOUT_FILENO);
  rc = run(&t);
  close_all(&t);
  tb__train_data_free(&t.data);
  tb__train_data_free(&t.eval);
  tb__cli_text_close(&t.text);
  free(t.order);
  free(t.points);
  free(t.out_dir);
  free(t.model_id);
  free(t.last_checkpoint);
  tb__cli_model_clear(&t.cfg.model);
  return rc;
}

/*
 * Fuzz target: chat data, as both of its readers take it.
 *
 * Input: a selector byte, a length byte, then the data.  The selector
 * (mod 4) picks
 *   0  one JSONL line of `tinkerbell train` (src/cli/train_data.c)
 *   1  a whole JSONL file of `tinkerbell train` (lines, blank lines, CRs)
 *   2  the body of a Tinkerbell forward / forward_backward call: "data"
 *      as conversations or Tinker datums (src/server/tinkerbell_data.c)
 *   3  the body of a Tinkerbell sample call: "prompt", "messages" or
 *      "prompt_tokens", the parameters and "stop"
 * and the length byte the most tokens per example of `train` (2 to 256,
 * or 512, the default, for 0); the selector's bit 2 trains only the last
 * assistant message (--train-last).  Both render conversations with the
 * renderer of `base`; the server's bodies are read for `base`, with its
 * text (tokenizer and renderers) as the server loads it.
 *
 * What is accepted must be what the trainer and the sampler rely on:
 * targets are the inputs shifted by one, weights 0 or 1 and some of them
 * 1, batches that pass the engine's checks against `base`, prompts and
 * stops inside its vocabulary and context.  What is refused must say why.
 *
 * Each input gets fresh arenas and documents; the file of selector 1 is
 * one memfd, rewritten per input.
 */
#define _GNU_SOURCE
#include "fuzz.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli/train_data.h"
#include "core/json.h"
#include "core/log.h"
#include "engine/base_model.h"
#include "engine/llama.h"
#include "server/internal.h"
#include "server/tinkerbell.h"
#include "server/training.h"
#include "text/base_chat.h"
#include "text/base_vocab.h"

static tb__server_t server;  /* only its options are read: --max-body 1M */
static tb__training_t training;
static tb__tbase_t base;
static tb__tctx_t text;        /* what a request on `base` may use */
static int data_fd = -1;
static char data_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  tb__log_set_level(TB_LOG_OFF);
  server.opts.max_body = (size_t)1 << 20;
  training.srv = &server;
  base.tr = &training;
  base.name = (char *)TB_BASE_MODEL_NAME;
  base.builtin = 1;
  base.state = 1;
  tb__base_model_config(&base.cfg);
  training.bases = &base;
  training.n_bases = 1;
  if (tb__mtext_start(&training, &base) != 0)
    abort();
  tb__tctx_init(&text, &training, &base);
  data_fd = memfd_create("chat.jsonl", 0);
  if (data_fd < 0)
    abort();
  snprintf(data_path, sizeof(data_path), "/proc/self/fd/%d", data_fd);
  return 0;
}

/* ------------------------------------------------------------ train */

static void check_example(const tb__train_example_t *e, size_t max_length) {
  FUZZ_CHECK(e->n >= 1 && e->n + 1 <= max_length, "%zu positions for at most %zu tokens",
             e->n, max_length);
  size_t trained = 0;
  for (size_t i = 0; i < e->n; i++) {
    FUZZ_CHECK(e->tokens[i] >= 0 && e->tokens[i] < TB_TOK_VOCAB &&
                   e->targets[i] >= 0 && e->targets[i] < TB_TOK_VOCAB,
               "token outside the vocabulary at %zu", i);
    if (i + 1 < e->n)
      FUZZ_CHECK(e->targets[i] == e->tokens[i + 1], "targets are not shifted at %zu", i);
    FUZZ_CHECK(e->weights[i] == 0.0f || e->weights[i] == 1.0f, "weight %g", e->weights[i]);
    trained += e->weights[i] == 1.0f;
  }
  FUZZ_CHECK(trained == e->n_trained && trained > 0, "%zu trained, %zu counted", trained,
             e->n_trained);
}

static void train_line(const char *line, size_t len, size_t max_length, int flags) {
  tb__train_example_t e;
  tb_error_t err = { 0 };
  int truncated;
  int rc = tb__train_example_from_line(tb__base_renderer(), line, len, max_length, flags, 1,
                                       &e, &truncated, &err);
  if (rc == 0) {
    check_example(&e, max_length);
    tb__train_example_free(&e);
  } else {
    FUZZ_CHECK(err.code != 0, "refused (%d) without saying why", rc);
  }
  tb_error_clear(&err);
}

static void train_file(const uint8_t *data, size_t len, size_t max_length, int flags) {
  if (ftruncate(data_fd, 0) != 0 || (len > 0 && pwrite(data_fd, data, len, 0) != (ssize_t)len))
    abort();
  tb__train_data_t d;
  tb_error_t err = { 0 };
  int rc = tb__train_data_load(tb__base_renderer(), data_path, max_length, flags, &d, &err);
  if (rc == 0) {
    FUZZ_CHECK(d.n > 0, "loaded no examples");
    size_t tokens = 0;
    for (size_t i = 0; i < d.n; i++) {
      check_example(&d.examples[i], max_length);
      tokens += d.examples[i].n;
    }
    FUZZ_CHECK(tokens == d.n_tokens, "%zu tokens, %zu counted", tokens, d.n_tokens);
    tb__train_data_t eval;
    if (tb__train_data_split(&d, 0.5, 1, &eval) == 0) {
      FUZZ_CHECK(d.n >= 1, "the split left no training example");
      tb__train_data_free(&eval);
    }
    tb__train_data_free(&d);
  } else {
    FUZZ_CHECK(err.code != 0 && err.message != NULL &&
                   strstr(err.message, data_path) != NULL,
               "refused (%d) without naming the file: %s", rc, tb_error_message(&err));
  }
  tb_error_clear(&err);
}

/* ------------------------------------------------------------ server */

/* The body as the routes take it: a JSON object, or answered 400. */
static json_t *body_object(const uint8_t *data, size_t len) {
  json_t *doc = NULL;
  tb_slice_t s = { (const char *)data, len };
  if (tb__json_parse(s, &doc, NULL) != 0)
    return NULL;
  if (!json_is_object(doc)) {
    json_decref(doc);
    return NULL;
  }
  return doc;
}

static void server_batch(const uint8_t *data, size_t len) {
  json_t *doc = body_object(data, len);
  if (doc == NULL)
    return;
  tb__arena_t a;
  tb__arena_init(&a, 0);
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  tb__batch_t b;
  memset(&b, 0, sizeof(b));
  tb__tbop_t info;
  memset(&info, 0, sizeof(info));
  int status = 0;
  int rc = tb__tb_decode_batch(&c, &a, doc, &text, &b, &info, &status);
  if (rc == 0) {
    const char *why = NULL;
    FUZZ_CHECK(tb__batch_validate(&b, &base.cfg, &why) == 0,
               "an accepted batch fails the engine's checks: %s", why);
    for (size_t i = 0; i < b.num_data; i++)
      FUZZ_CHECK(b.data[i].n <= (size_t)base.cfg.max_position_embeddings,
                 "datum %zu is longer than the context", i);
  } else {
    FUZZ_CHECK(err.code != 0 && (status == 400 || status == 422),
               "refused (%d, status %d) without saying why", rc, status);
  }
  tb_error_clear(&err);
  tb__arena_free(&a);
  json_decref(doc);
}

static void server_sample(const uint8_t *data, size_t len) {
  json_t *doc = body_object(data, len);
  if (doc == NULL)
    return;
  tb__top_t *op = calloc(1, sizeof(*op));
  if (op == NULL)
    abort();
  op->tr = &training;
  op->type = TB__OP_SAMPLE;
  op->base = &base;
  tb__arena_init(&op->arena, 0);
  tb_error_t err = { 0 };
  tb__jctx_t c;
  tb__jctx_init(&c, &err);
  tb__tbop_t info;
  memset(&info, 0, sizeof(info));
  int status = 0;
  int rc = tb__tb_decode_sample(&c, &text, op, doc, &info, &status);
  if (rc == 0) {
    const tb__sampling_params_t *p = &op->sampling;
    size_t ctx = (size_t)base.cfg.max_position_embeddings;
    FUZZ_CHECK(op->prompt_len > 0 && op->prompt_len < ctx, "a prompt of %zu tokens",
               op->prompt_len);
    for (size_t i = 0; i < op->prompt_len; i++)
      FUZZ_CHECK(op->prompt[i] >= 0 && op->prompt[i] < base.cfg.vocab_size,
                 "prompt token %d", op->prompt[i]);
    FUZZ_CHECK(p->max_tokens >= 1 && op->prompt_len + p->max_tokens <= ctx,
               "%zu more tokens after %zu in a context of %zu", p->max_tokens,
               op->prompt_len, ctx);
    FUZZ_CHECK(p->num_samples >= 1 && p->num_samples <= 128, "%zu samples", p->num_samples);
    for (size_t i = 0; i < p->num_stop_tokens; i++)
      FUZZ_CHECK(p->stop_tokens[i] >= 0 && p->stop_tokens[i] < base.cfg.vocab_size,
                 "stop token %d", p->stop_tokens[i]);
    for (size_t i = 0; i < p->num_stop_strings; i++)
      FUZZ_CHECK(p->stop_strings[i].len > 0, "an empty stop string");
  } else {
    FUZZ_CHECK(err.code != 0 && (status == 400 || status == 422),
               "refused (%d, status %d) without saying why", rc, status);
  }
  tb_error_clear(&err);
  tb__arena_free(&op->arena);
  free(op);
  json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in_t in = { data, size };
  uint8_t sel = fuzz_byte(&in);
  int flags = (sel & 4) ? TB_RENDER_TRAIN_LAST : 0;
  uint8_t lb = fuzz_byte(&in);
  size_t max_length = lb == 0 ? 512 : (size_t)lb + 1;
  switch (sel % 4) {
    case 0: train_line((const char *)in.p, in.n, max_length, flags); break;
    case 1: train_file(in.p, in.n, max_length, flags); break;
    case 2: server_batch(in.p, in.n); break;
    case 3: server_sample(in.p, in.n); break;
  }
  return 0;
}

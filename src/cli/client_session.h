/*
 * What the client-side commands (train, sample) share: a loop with either
 * the training server embedded on it or a remote service, the
 * ServiceClient over it, sampling a text reply, and closing it all in
 * order.  The embedded server listens on an ephemeral loopback port and is
 * reached through HTTP like any other: one code path for both.
 */
#ifndef TB_CLI_CLIENT_SESSION_H
#define TB_CLI_CLIENT_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "cli/cli.h"
#include "tinkerbell.h"
#include "tinkerbell/sampling_client.h"
#include "tinkerbell/training_client.h"

/* Where the model of train and sample and its text come from:
 *
 *   --model DIR            the embedded server serves DIR (a Hugging Face
 *                          directory) as NAME, its last path component
 *                          unless --base-model names it; the tokenizer and
 *                          renderer are DIR's
 *   --base-url URL --base-model NAME --tokenizer DIR
 *                          a remote service's model, rendered with the
 *                          tokenizer and renderer of DIR (its
 *                          tokenizer.json and tokenizer_config.json)
 *   neither                the built-in `base` and its byte template
 *
 * --tokenizer DIR also replaces --model DIR's tokenizer, and --renderer
 * NAME the renderer a directory's chat template picks.  Rendering a model
 * other than `base` with base's byte template is refused: the service
 * would receive byte ids its model does not read. */
typedef struct tb__cli_model_s {
  /* The options as given (NULL when not). */
  const char *dir;          /* --model */
  const char *base_model;   /* --base-model */
  const char *tokenizer;    /* --tokenizer */
  const char *renderer;     /* --renderer */
  /* Resolved by tb__cli_model_resolve. */
  const char *name;         /* what the service calls the model */
  char *spec;               /* the embedded server's model: "base" or NAME=DIR */
  const char *text_dir;     /* the tokenizer's directory; NULL: base's */
  char *name_buf;           /* name, when made from --model */
} tb__cli_model_t;

/* Checks the options against each other and fills the rest of m.  0, or
 * -1 after a message naming the option (the command exits 2). */
int tb__cli_model_resolve(const tb__cli_args_t *a, const char *base_url, tb__cli_model_t *m);
void tb__cli_model_clear(tb__cli_model_t *m);

/* The tokenizer and renderer a command renders chat with, through the
 * public API as any client program would. */
typedef struct tb__cli_text_s {
  tb_tokenizer_t *tok;
  tb_renderer_t *renderer;
  int is_base;              /* base's byte tokenizer */
} tb__cli_text_t;

/* Loads them for m.  0, or 2 after a message naming the file and field. */
int tb__cli_text_open(tb__cli_text_t *t, const char *cmd, const tb__cli_model_t *m);
void tb__cli_text_close(tb__cli_text_t *t);

typedef struct tb__cli_session_s {
  const char *cmd;            /* "train": messages say "tinkerbell train: " */
  uv_loop_t loop;
  int loop_on;
  tb_server_t server;
  int server_on;
  tb_service_client_t sc;
  int sc_on;
  char base_url[96];          /* the embedded server's */
  const char *url;            /* the one in use */
} tb__cli_session_t;

/* Makes the loop, starts the embedded server serving model_spec ("base"
 * or NAME=DIR) with its checkpoints in data_dir (made if missing) unless
 * base_url is given, and the ServiceClient.  0, or the command's exit
 * status after a message (2 for unusable options, 1 otherwise);
 * tb__cli_session_close either way.  ca_file (may be NULL): the PEM
 * certificates an https base URL is verified against instead of the
 * system's trust store. */
int tb__cli_session_open(tb__cli_session_t *s, const char *cmd, const char *base_url,
                         const char *ca_file, const char *data_dir, const char *model_spec,
                         uint64_t threads);
/* Closes the ServiceClient (clients made from it first!) and the server,
 * runs the loop to its end and closes it. */
void tb__cli_session_close(tb__cli_session_t *s);

/* Runs the loop until a close callback of this session has run. */
void tb__cli_wait_closed(tb__cli_session_t *s);
void tb__cli_on_training_closed(tb_training_client_t *tc);

/* Samples from the model at path (NULL: base_model) a reply to prompt,
 * rendered by text's renderer as a user message (raw: as plain text),
 * stopping at the renderer's stop sequences.  texts[0..n) receive the
 * replies as the renderer reads them back (malloc'd), and reasoning[0..n)
 * (when not NULL) the thinking part of a reply that has one, else NULL.
 * 0, or the failure after a message. */
int tb__cli_sample_texts(tb__cli_session_t *s, const tb__cli_text_t *text, const char *path,
                         const char *base_model, const char *prompt, int raw,
                         const tb_sample_params_t *params, size_t n, char **texts,
                         char **reasoning);

#endif /* TB_CLI_CLIENT_SESSION_H */

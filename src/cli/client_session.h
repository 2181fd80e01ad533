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

#include "tinkerbell.h"
#include "tinkerbell/sampling_client.h"
#include "tinkerbell/training_client.h"

/* The tokenizer and renderer a command renders chat with: `base`'s today,
 * through the public API as any client program would. */
typedef struct tb__cli_text_s {
  tb_tokenizer_t *tok;
  tb_renderer_t *renderer;
} tb__cli_text_t;

/* 0, or 1 after a message. */
int tb__cli_text_open(tb__cli_text_t *t, const char *cmd);
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
  tb__cli_text_t text;        /* what prompts are rendered with */
} tb__cli_session_t;

/* Makes the loop, starts the embedded server serving base_model with its
 * checkpoints in data_dir (made if missing) unless base_url is given, and
 * the ServiceClient.  0, or the command's exit status after a message
 * (2 for unusable options, 1 otherwise); tb__cli_session_close either way.
 * ca_file (may be NULL): the PEM certificates an https base URL is
 * verified against instead of the system's trust store. */
int tb__cli_session_open(tb__cli_session_t *s, const char *cmd, const char *base_url,
                         const char *ca_file, const char *data_dir, const char *base_model,
                         uint64_t threads);
/* Closes the ServiceClient (clients made from it first!) and the server,
 * runs the loop to its end and closes it. */
void tb__cli_session_close(tb__cli_session_t *s);

/* Runs the loop until a close callback of this session has run. */
void tb__cli_wait_closed(tb__cli_session_t *s);
void tb__cli_on_training_closed(tb_training_client_t *tc);

/* Samples from the model at path (NULL: base_model) a reply to prompt,
 * rendered as a user message of the chat template (raw: as plain text),
 * stopping at the end of the message.  texts[0..n) receive malloc'd
 * texts.  0, or the failure after a message. */
int tb__cli_sample_texts(tb__cli_session_t *s, const char *path, const char *base_model,
                   const char *prompt, int raw, const tb_sample_params_t *params, size_t n,
                   char **texts);

#endif /* TB_CLI_CLIENT_SESSION_H */

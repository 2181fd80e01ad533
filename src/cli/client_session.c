/*
 * The loop, the embedded server and the ServiceClient of train and
 * sample; see client_session.h.
 */
#include "cli/client_session.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/buf.h"
#include "engine/tokenizer.h"

/* ------------------------------------------------------------ closing */

static int closed_flag;

static void on_sampling_closed(tb_sampling_client_t *samp) {
  closed_flag = 1;
}

void tb__cli_on_training_closed(tb_training_client_t *tc) {
  closed_flag = 1;
}

static void on_service_closed(tb_service_client_t *sc) {
  closed_flag = 1;
}

static void on_server_closed(tb_server_t *server) {
  (void)server;
}

void tb__cli_wait_closed(tb__cli_session_t *s) {
  while (!closed_flag)
    uv_run(&s->loop, UV_RUN_ONCE);
  closed_flag = 0;
}

/* ------------------------------------------------------------ opening */

static int start_embedded(tb__cli_session_t *s, const char *data_dir, const char *base_model,
                          uint64_t threads) {
  int rc = tb__cli_make_dirs(data_dir);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell %s: --data-dir %s: %s\n", s->cmd, data_dir, uv_strerror(rc));
    return TB__CLI_USAGE;
  }
  tb_server_options_t so = { .data_dir = data_dir };
  rc = tb_server_init(&s->loop, &s->server, &so);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell %s: %s\n", s->cmd, s->server.message);
    return 1;
  }
  s->server_on = 1;
  const char *models[] = { base_model };
  rc = tb_server_start_training(&s->server, models, 1, (size_t)threads);
  rc = rc ? rc : tb_server_listen(&s->server, "127.0.0.1", 0);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell %s: the embedded server: %s\n", s->cmd, s->server.message);
    return 1;
  }
  snprintf(s->base_url, sizeof(s->base_url), "http://127.0.0.1:%d", tb_server_port(&s->server));
  return 0;
}

int tb__cli_session_open(tb__cli_session_t *s, const char *cmd, const char *base_url,
                         const char *ca_file, const char *data_dir, const char *base_model,
                         uint64_t threads) {
  memset(s, 0, sizeof(*s));
  s->cmd = cmd;
  /* A peer that closes while an answer is written must not kill us. */
  signal(SIGPIPE, SIG_IGN);
  if (threads > 0) {
    /* Before anything on the loop starts libuv's threadpool. */
    char n[24];
    snprintf(n, sizeof(n), "%llu", (unsigned long long)threads);
    setenv("UV_THREADPOOL_SIZE", n, 1);
  }
  int rc = uv_loop_init(&s->loop);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell %s: cannot make a loop: %s\n", cmd, uv_strerror(rc));
    return 1;
  }
  s->loop_on = 1;
  if (base_url == NULL && (rc = start_embedded(s, data_dir, base_model, threads)) != 0)
    return rc;
  s->url = base_url ? base_url : s->base_url;
  tb_client_config_t cc = { .base_url = s->url, .tls_ca_file = ca_file };
  tb_error_t err = { 0 };
  rc = tb_service_client_init(&s->loop, &s->sc, &cc, &err);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell %s: %s\n", cmd, tb_error_message(&err));
    tb_error_clear(&err);
    return TB__CLI_USAGE;
  }
  s->sc_on = 1;
  return 0;
}

void tb__cli_session_close(tb__cli_session_t *s) {
  if (!s->loop_on)
    return;
  if (s->sc_on) {
    tb_service_client_close(&s->sc, on_service_closed);
    tb__cli_wait_closed(s);
    s->sc_on = 0;
  }
  if (s->server_on) {
    tb_server_close(&s->server, on_server_closed);
    s->server_on = 0;
  }
  uv_run(&s->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&s->loop) != 0)
    fprintf(stderr, "tinkerbell %s: the loop did not close\n", s->cmd);
}

/* ------------------------------------------------------------ sampling */

static int render_prompt(const char *prompt, int raw, tb_tokens_t *toks, tb_error_t *err) {
  if (!raw) {
    tb_chat_msg_t msg = { TB_SLICE_LIT("user"), { prompt, strlen(prompt) } };
    return tb__chat_render_prompt(&msg, 1, toks, err);
  }
  int rc = tb__tokens_push(toks, TB_TOK_BOS, 0);
  return rc ? rc : tb__tok_encode((tb_slice_t){ prompt, strlen(prompt) }, toks);
}

int tb__cli_sample_texts(tb__cli_session_t *s, const char *path, const char *base_model,
                   const char *prompt, int raw, const tb_sample_params_t *params, size_t n,
                   char **texts) {
  for (size_t i = 0; i < n; i++)
    texts[i] = NULL;
  tb_tokens_t toks = TB_TOKENS_INIT;
  tb_error_t err = { 0 };
  tb_sampling_client_t samp;
  memset(&samp, 0, sizeof(samp));
  tb_model_input_t mi = { 0 };
  tb_sample_response_t *res = NULL;
  const char *what = "the prompt";
  int rc = render_prompt(prompt, raw, &toks, &err);
  if (rc == 0) {
    what = "the sampling session";
    rc = tb_service_client_create_sampling_client_sync(&s->sc, &samp, path,
                                                       path ? NULL : base_model, &err);
  }
  rc = rc ? rc : tb_model_input_init(&mi, toks.ids, toks.len);
  tb_sample_params_t sp = *params;
  const int32_t stop = TB_TOK_END;
  if (!raw && sp.n_stop_tokens == 0 && sp.n_stop_strings == 0) {
    sp.stop_tokens = &stop;
    sp.n_stop_tokens = 1;
  }
  if (rc == 0) {
    what = "sampling";
    rc = tb_sampling_client_sample_sync(&samp, &mi, n, &sp, 0, 0, &res, &err);
  }
  for (size_t i = 0; rc == 0 && i < n && i < res->n_sequences; i++) {
    const tb_sampled_sequence_t *q = &res->sequences[i];
    size_t len = q->n_tokens;
    if (len > 0 && tb__chat_is_stop(q->tokens[len - 1]))
      len--;
    tb_buf_t b = TB_BUF_INIT;
    rc = tb__tok_decode(q->tokens, len, 0, &b);
    rc = rc ? rc : tb__buf_terminate(&b);
    texts[i] = rc == 0 ? tb__buf_steal(&b, NULL) : NULL;
    tb__buf_free(&b);
  }
  if (rc != 0) {
    fprintf(stderr, "tinkerbell %s: %s failed: %s\n", s->cmd, what,
            err.message ? tb_error_message(&err) : tb_strerror(rc));
    for (size_t i = 0; i < n; i++) {
      free(texts[i]);
      texts[i] = NULL;
    }
  }
  tb_sample_response_free(res);
  tb_model_input_clear(&mi);
  if (samp.impl_ != NULL) {
    tb_sampling_client_close(&samp, on_sampling_closed);
    tb__cli_wait_closed(s);
  }
  tb__tokens_free(&toks);
  tb_error_clear(&err);
  return rc;
}

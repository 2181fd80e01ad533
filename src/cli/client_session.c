/*
 * The loop, the embedded server and the ServiceClient of train and
 * sample; see client_session.h.
 */
#include "cli/client_session.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/buf.h"

/* ------------------------------------------------------------ closing */

static int closed_flag;
static uv_loop_t *closing_loop;

/* A close callback runs inside uv_run(UV_RUN_ONCE), which would then go on
 * to wait for I/O until the next timer (seconds, with an idle connection
 * open): uv_stop makes that run return at once. */
static void closed(void) {
  closed_flag = 1;
  if (closing_loop != NULL)
    uv_stop(closing_loop);
}

static void on_sampling_closed(tb_sampling_client_t *samp) {
  closed();
}

void tb__cli_on_training_closed(tb_training_client_t *tc) {
  closed();
}

static void on_service_closed(tb_service_client_t *sc) {
  closed();
}

static void on_server_closed(tb_server_t *server) {
  (void)server;
}

void tb__cli_wait_closed(tb__cli_session_t *s) {
  closing_loop = &s->loop;
  while (!closed_flag)
    uv_run(&s->loop, UV_RUN_ONCE);
  closing_loop = NULL;
  closed_flag = 0;
}

/* ------------------------------------------------------------ the model */

/* Whether path is a directory holding name. */
static int dir_has(const char *dir, const char *name) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int tb__cli_model_resolve(const tb__cli_args_t *a, const char *base_url, tb__cli_model_t *m) {
  struct stat st;
  if (m->dir != NULL && base_url != NULL) {
    tb__cli_error(a, "--model %s runs the model on the embedded server; against --base-url, "
                     "name the service's model with --base-model and its tokenizer with "
                     "--tokenizer %s",
                  m->dir, m->dir);
    return -1;
  }
  if (m->dir != NULL) {
    int found = stat(m->dir, &st) == 0;
    if (!found || !S_ISDIR(st.st_mode)) {
      tb__cli_error(a, "--model %s: %s", m->dir, found ? "not a directory" : strerror(errno));
      return -1;
    }
    if (!dir_has(m->dir, "config.json")) {
      tb__cli_error(a, "--model %s: no config.json in it (expected a Hugging Face model "
                       "directory: config.json, model.safetensors, tokenizer.json, "
                       "tokenizer_config.json)",
                    m->dir);
      return -1;
    }
    /* The model's name: --base-model, else the directory's own
     * ("/models/Qwen3-0.6B/" and "." in it are Qwen3-0.6B). */
    char *abs = m->base_model ? NULL : realpath(m->dir, NULL);
    const char *base = abs ? strrchr(abs, '/') : NULL;
    char *name = m->base_model ? tb__strndup(m->base_model, strlen(m->base_model))
                 : base != NULL ? tb__strndup(base + 1, strlen(base + 1))
                                : NULL;
    free(abs);
    if (name == NULL || name[0] == '\0' || strchr(name, '=') != NULL) {
      tb__cli_error(a, "--model %s: name the model with --base-model NAME (a name without "
                       "'=')", m->dir);
      free(name);
      return -1;
    }
    m->spec = tb__asprintf("%s=%s", name, m->dir);
    m->name = m->name_buf = name;
    if (m->spec == NULL)
      return -1;
    m->text_dir = m->tokenizer ? m->tokenizer : m->dir;
    return 0;
  }
  m->name = m->base_model ? m->base_model : TB_BASE_MODEL_NAME;
  int is_base = strcmp(m->name, TB_BASE_MODEL_NAME) == 0;
  if (base_url == NULL && !is_base) {
    tb__cli_error(a, "--base-model %s: the embedded server serves %s, or the Hugging Face "
                     "directory --model DIR",
                  m->name, TB_BASE_MODEL_NAME);
    return -1;
  }
  if (!is_base && m->tokenizer == NULL) {
    tb__cli_error(a, "--base-model %s: its chat cannot be rendered with the byte template of "
                     "%s (it would be sent byte ids it does not read); pass --tokenizer DIR, "
                     "a folder with the model's tokenizer.json and tokenizer_config.json (as "
                     "its Hugging Face repository has)",
                  m->name, TB_BASE_MODEL_NAME);
    return -1;
  }
  if (m->tokenizer != NULL && base_url == NULL) {
    tb__cli_error(a, "--tokenizer %s: the embedded %s has its own; --tokenizer goes with "
                     "--base-url or --model",
                  m->tokenizer, TB_BASE_MODEL_NAME);
    return -1;
  }
  m->spec = tb__asprintf("%s", TB_BASE_MODEL_NAME);
  m->text_dir = m->tokenizer;
  return m->spec ? 0 : -1;
}

void tb__cli_model_clear(tb__cli_model_t *m) {
  free(m->name_buf);
  free(m->spec);
  m->name_buf = m->spec = NULL;
  m->name = NULL;
}

/* ------------------------------------------------------------ text */

int tb__cli_text_open(tb__cli_text_t *t, const char *cmd, const tb__cli_model_t *m) {
  memset(t, 0, sizeof(*t));
  tb_error_t err = { 0 };
  int rc;
  if (m->text_dir != NULL) {
    rc = tb_tokenizer_load_dir(m->text_dir, &t->tok, &err);
  } else {
    rc = tb_tokenizer_base(&t->tok);
    t->is_base = 1;
  }
  if (rc == 0 && m->renderer != NULL)
    rc = tb_renderer_new(m->renderer, t->tok, &t->renderer, &err);
  else if (rc == 0 && m->text_dir != NULL)
    rc = tb_renderer_from_dir(m->text_dir, t->tok, &t->renderer, &err);
  else if (rc == 0)
    rc = tb_renderer_new(TB_BASE_MODEL_NAME, t->tok, &t->renderer, &err);
  if (rc == 0 && !t->is_base && strcmp(tb_renderer_name(t->renderer), TB_BASE_MODEL_NAME) == 0)
    rc = tb_error_set(&err, TB_EINVAL, TB_CATEGORY_USER,
                      "--renderer %s: the byte template of %s renders only %s", m->renderer,
                      TB_BASE_MODEL_NAME, TB_BASE_MODEL_NAME);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell %s: %s\n", cmd, err.message ? tb_error_message(&err)
                                                             : tb_strerror(rc));
    tb_error_clear(&err);
    tb__cli_text_close(t);
    return TB__CLI_USAGE;
  }
  return 0;
}

void tb__cli_text_close(tb__cli_text_t *t) {
  tb_renderer_free(t->renderer);
  tb_tokenizer_free(t->tok);
  memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------ opening */

static int start_embedded(tb__cli_session_t *s, const char *data_dir, const char *model_spec,
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
  const char *models[] = { model_spec };
  rc = tb_server_start_training(&s->server, models, 1, (size_t)threads);
  rc = rc ? rc : tb_server_listen(&s->server, "127.0.0.1", 0);
  if (rc != 0) {
    fprintf(stderr, "tinkerbell %s: the embedded server: %s\n", s->cmd, s->server.message);
    return 1;
  }
  snprintf(s->base_url, sizeof(s->base_url), "http://127.0.0.1:%d", tb_server_port(&s->server));
  /* A directory the engine refuses (its config.json, its tensors) is the
   * command line's mistake: said now, rather than as a failed request. */
  const char *eq = strchr(model_spec, '=');
  char name[256];
  snprintf(name, sizeof(name), "%.*s", (int)(eq ? (size_t)(eq - model_spec) : strlen(model_spec)),
           model_spec);
  const char *why = NULL;
  while ((rc = tb_server_model_state(&s->server, name, &why)) == 0)
    uv_run(&s->loop, UV_RUN_ONCE);
  if (rc < 0) {
    fprintf(stderr, "tinkerbell %s: --model %s: %s\n", s->cmd, eq ? eq + 1 : model_spec,
            why ? why : tb_strerror(rc));
    return TB__CLI_USAGE;
  }
  return 0;
}

int tb__cli_session_open(tb__cli_session_t *s, const char *cmd, const char *base_url,
                         const char *ca_file, const char *data_dir, const char *model_spec,
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
  if (base_url == NULL && (rc = start_embedded(s, data_dir, model_spec, threads)) != 0)
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

/* The prompt's tokens: one user message and the assistant's header, or
 * (raw) the text as the tokenizer encodes it with its special tokens
 * (BOS, where its post-processor adds one; `base`'s <|bos|>), whose
 * special-token text stays text. */
static int render_prompt(const tb__cli_text_t *t, const char *prompt, int raw, int32_t **ids,
                         size_t *n, tb_error_t *err) {
  if (!raw) {
    tb_chat_message_t msg = { "user", prompt, NULL, 0 };
    tb_rendered_t r;
    int rc = tb_renderer_render(t->renderer, &msg, 1, TB_RENDER_GENERATION_PROMPT, &r, err);
    if (rc == 0) {
      *ids = r.tokens;
      *n = r.len;
      r.tokens = NULL;
      tb_rendered_free(&r);
    }
    return rc;
  }
  int32_t *text;
  size_t len;
  int rc = tb_tokenizer_encode(t->tok, prompt, strlen(prompt),
                               TB_ENCODE_SPECIAL_AS_TEXT | TB_ENCODE_ADD_SPECIAL, &text, NULL,
                               &len, err);
  if (rc != 0)
    return rc;
  int32_t bos = t->is_base ? tb_tokenizer_bos_id(t->tok) : -1;
  *ids = malloc((len + 1) * sizeof(**ids));
  if (*ids == NULL) {
    free(text);
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_USER, "out of memory");
  }
  *n = 0;
  if (bos >= 0)
    (*ids)[(*n)++] = bos;
  memcpy(*ids + *n, text, len * sizeof(*text));
  *n += len;
  free(text);
  return 0;
}

/* The text of a sampled sequence: the reply as the renderer reads it
 * (with its reasoning apart), or (raw) the text up to an end-of-sequence
 * token. */
static int reply_text(const tb__cli_text_t *t, const int32_t *ids, size_t n, int raw,
                      char **text, char **reasoning, tb_error_t *err) {
  if (raw) {
    size_t n_eos;
    const int32_t *eos = tb_tokenizer_eos_ids(t->tok, &n_eos);
    for (size_t i = 0; n > 0 && i < n_eos; i++)
      if (ids[n - 1] == eos[i]) {
        n--;
        break;
      }
    return tb_tokenizer_decode(t->tok, ids, n, TB_DECODE_SKIP_SPECIAL, text, NULL, err);
  }
  tb_reply_t r;
  int rc = tb_renderer_parse(t->renderer, ids, n, &r, err);
  if (rc == 0) {
    *text = r.content;
    r.content = NULL;
    if (reasoning != NULL) {
      *reasoning = r.reasoning;
      r.reasoning = NULL;
    }
    tb_reply_free(&r);
  }
  return rc;
}

int tb__cli_sample_texts(tb__cli_session_t *s, const tb__cli_text_t *text, const char *path,
                         const char *base_model, const char *prompt, int raw,
                         const tb_sample_params_t *params, size_t n, char **texts,
                         char **reasoning) {
  for (size_t i = 0; i < n; i++) {
    texts[i] = NULL;
    if (reasoning != NULL)
      reasoning[i] = NULL;
  }
  int32_t *prompt_ids = NULL;
  size_t n_prompt = 0;
  tb_error_t err = { 0 };
  tb_sampling_client_t samp;
  memset(&samp, 0, sizeof(samp));
  tb_model_input_t mi = { 0 };
  tb_sample_response_t *res = NULL;
  const char *what = "the prompt";
  int rc = render_prompt(text, prompt, raw, &prompt_ids, &n_prompt, &err);
  if (rc == 0) {
    what = "the sampling session";
    rc = tb_service_client_create_sampling_client_sync(&s->sc, &samp, path,
                                                       path ? NULL : base_model, &err);
  }
  rc = rc ? rc : tb_model_input_init(&mi, prompt_ids, n_prompt);
  tb_sample_params_t sp = *params;
  tb_stop_t stop;
  tb_renderer_stop(text->renderer, &stop);
  if (!raw && sp.n_stop_tokens == 0 && sp.n_stop_strings == 0) {
    sp.stop_tokens = stop.tokens;
    sp.n_stop_tokens = stop.n_tokens;
    sp.stop_strings = stop.strings;
    sp.n_stop_strings = stop.n_strings;
  }
  if (rc == 0) {
    what = "sampling";
    rc = tb_sampling_client_sample_sync(&samp, &mi, n, &sp, 0, 0, &res, &err);
  }
  for (size_t i = 0; rc == 0 && i < n && i < res->n_sequences; i++) {
    const tb_sampled_sequence_t *q = &res->sequences[i];
    rc = reply_text(text, q->tokens, q->n_tokens, raw, &texts[i],
                    reasoning ? &reasoning[i] : NULL, &err);
  }
  if (rc != 0) {
    fprintf(stderr, "tinkerbell %s: %s failed: %s\n", s->cmd, what,
            err.message ? tb_error_message(&err) : tb_strerror(rc));
    for (size_t i = 0; i < n; i++) {
      free(texts[i]);
      texts[i] = NULL;
      if (reasoning != NULL) {
        free(reasoning[i]);
        reasoning[i] = NULL;
      }
    }
  }
  tb_sample_response_free(res);
  tb_model_input_clear(&mi);
  if (samp.impl_ != NULL) {
    tb_sampling_client_close(&samp, on_sampling_closed);
    tb__cli_wait_closed(s);
  }
  free(prompt_ids);
  tb_error_clear(&err);
  return rc;
}

/*
 * tinkerbell sample: text from a base model or from saved sampler weights,
 * through the client runtime -- against the embedded server (whose
 * --data-dir holds the checkpoints `tinkerbell train` wrote) or a running
 * service with --base-url.
 *
 * The model is `base`, a Hugging Face directory served by the embedded
 * server (--model DIR), or the remote service's --base-model, whose text
 * comes from --tokenizer DIR (client_session.h).  The prompt is one user
 * message rendered by the model's renderer, sampling stops at the
 * renderer's stop sequences, and the reply printed is the message the
 * renderer reads back: Qwen3's thinking part is left out unless
 * --show-thinking prints it first, between <think> and </think> lines.
 * --raw: the prompt is plain text (after the BOS the tokenizer adds) and
 * sampling runs to --max-tokens, the end of the sequence or a --stop
 * string.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client_session.h"
#include "core/log.h"

enum {
  OPT_BASE_URL,
  OPT_CA_FILE,
  OPT_MODEL_PATH,
  OPT_BASE_MODEL,
  OPT_MODEL,
  OPT_TOKENIZER,
  OPT_RENDERER,
  OPT_MAX_TOKENS,
  OPT_TEMPERATURE,
  OPT_TOP_P,
  OPT_TOP_K,
  OPT_SEED,
  OPT_NUM_SAMPLES,
  OPT_STOP,
  OPT_RAW,
  OPT_SHOW_THINKING,
  OPT_DATA_DIR,
  OPT_HELP,
  OPT_COUNT
};

#define MAX_STOPS 16

static const tb__cli_opt_t sample_opts[OPT_COUNT + 1] = {
  [OPT_BASE_URL] = { "base-url", "URL",
                     "sample from a running Tinker-compatible service\n"
                     "(TINKER_API_KEY for its key) [embedded server]" },
  [OPT_CA_FILE] = TB__CLI_OPT_CA_FILE,
  [OPT_MODEL_PATH] = { "model-path", "PATH",
                       "saved sampler weights, tinker://<model>/\n"
                       "sampler_weights/<name> (train prints it)\n"
                       "[the base model]" },
  [OPT_BASE_MODEL] = { "base-model", "NAME", "the base model: the service's name for it\n"
                                           "[base, or the --model directory's name]" },
  [OPT_MODEL] = { "model", "DIR", "a Hugging Face model directory (weights,\n"
                                  "tokenizer, chat template) for the embedded\n"
                                  "server to serve [the built-in base]" },
  [OPT_TOKENIZER] = TB__CLI_OPT_TOKENIZER,
  [OPT_RENDERER] = TB__CLI_OPT_RENDERER,
  [OPT_MAX_TOKENS] = { "max-tokens", "N", "longest reply in tokens [128]" },
  [OPT_TEMPERATURE] = { "temperature", "T", "0 is greedy [0.7]" },
  [OPT_TOP_P] = { "top-p", "P", "nucleus sampling, in (0, 1] [1]" },
  [OPT_TOP_K] = { "top-k", "K", "only the K likeliest tokens; 0: all [0]" },
  [OPT_SEED] = { "seed", "N", "the same seed gives the same text [random]" },
  [OPT_NUM_SAMPLES] = { "num-samples", "N", "replies to draw [1]" },
  [OPT_STOP] = { "stop", "TEXT", "also stop at this text (repeatable)" },
  [OPT_RAW] = { "raw", NULL, "the prompt is plain text, not a chat message" },
  [OPT_SHOW_THINKING] = { "show-thinking", NULL, "print a reply's thinking part (Qwen3's\n"
                                                 "<think>) before it [left out]" },
  [OPT_DATA_DIR] = { "data-dir", "DIR", "the embedded server's checkpoints\n"
                                        "[./tinkerbell-data]" },
  [OPT_HELP] = { "help", NULL, "print this help and exit" },
  [OPT_COUNT] = { NULL, NULL, NULL },
};

static const char sample_description[] =
    "Samples a reply to PROMPT from a base model or from sampler weights saved\n"
    "by training, on the embedded server or the service at --base-url, and\n"
    "prints it (one block per sample with --num-samples).  The prompt is a user\n"
    "message in the model's chat format; the reply is the message it writes.";

int tb__cli_sample(int argc, char **argv) {
  tb__cli_args_t a;
  tb__cli_args_init(&a, "sample", sample_opts, argc, argv);
  const char *base_url = NULL, *ca_file = NULL, *path = NULL;
  tb__cli_model_t model = { 0 };
  const char *data_dir = "./tinkerbell-data", *prompt = NULL;
  const char *stops[MAX_STOPS];
  uint64_t max_tokens = 128, top_k = 0, seed = 0, num = 1;
  double temperature = 0.7, top_p = 1.0;
  int raw = 0, has_seed = 0, show_thinking = 0, rc = 0, opt;
  size_t n_stops = 0;
  const char *v;
  while (rc == 0 && (opt = tb__cli_next(&a, &v)) != TB__CLI_END) {
    switch (opt) {
      case TB__CLI_ARG:
        if (prompt != NULL) {
          tb__cli_error(&a, "one prompt only (quote it)");
          return TB__CLI_USAGE;
        }
        prompt = v;
        break;
      case OPT_BASE_URL: base_url = v; break;
      case OPT_CA_FILE: ca_file = v; break;
      case OPT_MODEL_PATH: path = v; break;
      case OPT_BASE_MODEL: model.base_model = v; break;
      case OPT_MODEL: model.dir = v; break;
      case OPT_TOKENIZER: model.tokenizer = v; break;
      case OPT_RENDERER: model.renderer = v; break;
      case OPT_MAX_TOKENS: rc = tb__cli_uint(&a, "max-tokens", v, 1, 1u << 20, &max_tokens); break;
      case OPT_TEMPERATURE: rc = tb__cli_number(&a, "temperature", v, 0, 100, &temperature); break;
      case OPT_TOP_P: rc = tb__cli_number(&a, "top-p", v, 1e-9, 1, &top_p); break;
      case OPT_TOP_K: rc = tb__cli_uint(&a, "top-k", v, 0, 1u << 24, &top_k); break;
      case OPT_SEED:
        rc = tb__cli_uint(&a, "seed", v, 0, UINT64_MAX, &seed);
        has_seed = 1;
        break;
      case OPT_NUM_SAMPLES: rc = tb__cli_uint(&a, "num-samples", v, 1, 64, &num); break;
      case OPT_STOP:
        if (n_stops == MAX_STOPS) {
          tb__cli_error(&a, "--stop: at most %d", MAX_STOPS);
          return TB__CLI_USAGE;
        }
        stops[n_stops++] = v;
        break;
      case OPT_RAW: raw = 1; break;
      case OPT_SHOW_THINKING: show_thinking = 1; break;
      case OPT_DATA_DIR: data_dir = v; break;
      case OPT_HELP:
        tb__cli_help(stdout, "tinkerbell sample [options] PROMPT", sample_description,
                     sample_opts);
        return 0;
      default:
        return TB__CLI_USAGE;
    }
  }
  if (rc != 0)
    return TB__CLI_USAGE;
  if (prompt == NULL || prompt[0] == '\0') {
    tb__cli_error(&a, "what prompt? (tinkerbell sample \"...\")");
    return TB__CLI_USAGE;
  }
  if (path != NULL && strncmp(path, "tinker://", 9) != 0) {
    tb__cli_error(&a, "--model-path: expected tinker://<model>/sampler_weights/<name>, got '%s'",
                  path);
    return TB__CLI_USAGE;
  }
  if (tb__cli_model_resolve(&a, base_url, &model) != 0) {
    tb__cli_model_clear(&model);
    return TB__CLI_USAGE;
  }
  /* The command reports what goes wrong itself (a model that does not
   * load, a failed request); the embedded server's warnings would say it
   * twice.  TINKERBELL_LOG=warn shows them. */
  if (getenv("TINKERBELL_LOG") == NULL)
    tb__log_set_level(TB_LOG_ERROR);

  tb__cli_text_t text;
  rc = tb__cli_text_open(&text, "sample", &model);
  if (rc != 0) {
    tb__cli_model_clear(&model);
    return rc;
  }
  tb__cli_session_t s;
  rc = tb__cli_session_open(&s, "sample", base_url, ca_file, data_dir, model.spec, 0);
  char **texts = calloc(num, sizeof(*texts));
  char **thoughts = calloc(num, sizeof(*thoughts));
  if (rc == 0 && texts != NULL && thoughts != NULL) {
    tb_sample_params_t sp;
    tb_sample_params_default(&sp);
    sp.max_tokens = (int64_t)max_tokens;
    sp.temperature = temperature;
    sp.top_p = top_p;
    sp.top_k = top_k ? (int64_t)top_k : -1;
    sp.has_seed = has_seed;
    sp.seed = seed;
    sp.stop_strings = n_stops ? stops : NULL;
    sp.n_stop_strings = n_stops;
    rc = tb__cli_sample_texts(&s, &text, path, model.name, prompt, raw, &sp, num, texts,
                              thoughts) != 0;
    for (size_t i = 0; rc == 0 && i < num; i++) {
      if (num > 1)
        printf("--- sample %zu\n", i + 1);
      if (show_thinking && thoughts[i] != NULL)
        printf("<think>\n%s\n</think>\n", thoughts[i]);
      printf("%s\n", texts[i] ? texts[i] : "");
    }
  } else if (rc == 0) {
    rc = 1;
  }
  for (size_t i = 0; i < num; i++) {
    free(texts ? texts[i] : NULL);
    free(thoughts ? thoughts[i] : NULL);
  }
  free(texts);
  free(thoughts);
  tb__cli_session_close(&s);
  tb__cli_text_close(&text);
  tb__cli_model_clear(&model);
  return rc;
}

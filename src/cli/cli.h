/*
 * What the sub-commands of the tinkerbell command share: their entry
 * points (one file each, listed in main.c's table) and the parsing of
 * their options.
 *
 * Options are described once, in a table per command, which drives both
 * the parser and the --help text, so the two cannot disagree:
 *
 *   static const tb__cli_opt_t opts[] = {
 *     { "port", "PORT", "TCP port to listen on; 0 picks a free one [8000]" },
 *     { "help", NULL, "print this help and exit" },
 *     { NULL, NULL, NULL },
 *   };
 *
 * The parser takes "--name VALUE", "--name=VALUE", "--flag", "-h" for
 * "--help" and "--" (everything after it is an argument).  Names must be
 * spelled out: unlike getopt_long there are no abbreviations, so a new
 * option can never make a script's abbreviation ambiguous.  Every error
 * is printed as one line naming the option, and the command then exits
 * with TB__CLI_USAGE.
 */
#ifndef TB_CLI_CLI_H
#define TB_CLI_CLI_H

#include <stdint.h>
#include <stdio.h>

/* The exit status of a command line that cannot be used. */
#define TB__CLI_USAGE 2

/* The sub-commands: argv[0] is the command's name. */
int tb__cli_serve(int argc, char **argv);
int tb__cli_bench(int argc, char **argv);
int tb__cli_train(int argc, char **argv);
int tb__cli_sample(int argc, char **argv);

typedef struct tb__cli_opt_s {
  const char *name;     /* without the leading "--" */
  const char *arg;      /* the value's name in the help, NULL for a flag */
  const char *help;     /* lines separated by '\n' */
} tb__cli_opt_t;

/* The rows of the options that mean the same in every command that takes them. */
#define TB__CLI_OPT_CA_FILE                                                                  \
  { "ca-file", "FILE",                                                                      \
    "verify an https --base-url against these PEM\n"                                        \
    "certificates [the system's trust store]" }
#define TB__CLI_OPT_TOKENIZER                                                                \
  { "tokenizer", "DIR",                                                                     \
    "the model's tokenizer.json and\n"                                                      \
    "tokenizer_config.json are in DIR (needed\n"                                            \
    "for a --base-model other than base)" }
#define TB__CLI_OPT_RENDERER                                                                 \
  { "renderer", "NAME",                                                                     \
    "llama3, qwen3, qwen3_disable_thinking, chatml,\n"                                      \
    "role_colon or base [the one the chat\n"                                                \
    "template asks for]" }

typedef struct tb__cli_args_s {
  const char *cmd;            /* "serve": messages say "tinkerbell serve: " */
  const tb__cli_opt_t *opts;  /* ends with a NULL name */
  int argc;
  char **argv;
  /* private */
  int next;
  int only_args;              /* after "--" */
} tb__cli_args_t;

enum {
  TB__CLI_ARG = -1,     /* a positional argument, in *value */
  TB__CLI_END = -2,     /* nothing left */
  TB__CLI_ERROR = -3    /* the message was printed */
};

/* Starts parsing argv[1..argc) of command cmd. */
void tb__cli_args_init(tb__cli_args_t *a, const char *cmd, const tb__cli_opt_t *opts,
                       int argc, char **argv);
/* The next option: its index in opts with *value its value (NULL for a
 * flag), or TB__CLI_ARG, TB__CLI_END or TB__CLI_ERROR. */
int tb__cli_next(tb__cli_args_t *a, const char **value);

/* Prints "tinkerbell <cmd>: <message>" and the hint to --help to stderr. */
void tb__cli_error(const tb__cli_args_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Value parsers: 0, or -1 after an error naming --opt and the value.
 * Integers are decimal; a size may end in k, M or G (powers of 1024,
 * optionally followed by "iB" or "B"); a number is finite. */
int tb__cli_uint(const tb__cli_args_t *a, const char *opt, const char *s, uint64_t min,
                 uint64_t max, uint64_t *out);
int tb__cli_size(const tb__cli_args_t *a, const char *opt, const char *s, uint64_t min,
                 uint64_t max, uint64_t *out);
int tb__cli_number(const tb__cli_args_t *a, const char *opt, const char *s, double min,
                   double max, double *out);

/* mkdir -p (directories made 0777, as umask allows); 0 or a negative
 * errno. */
int tb__cli_make_dirs(const char *dir);

/* Prints the usage line, a description and every option of the table. */
void tb__cli_help(FILE *out, const char *usage, const char *description,
                  const tb__cli_opt_t *opts);

#endif /* TB_CLI_CLI_H */

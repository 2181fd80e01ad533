/*
 * The tinkerbell command: dispatches to one sub-command per file in this
 * directory.  A new sub-command is one file with its tb__cli_<name>
 * entry point (declared in cli.h) and one line in the table below.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "tinkerbell.h"

typedef struct {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv);
} command_t;

/* argv[0] of run is the command's name. */
static const command_t commands[] = {
  { "serve", "run the training server (Tinker and Tinkerbell HTTP APIs)", tb__cli_serve },
  { "train", "fine-tune a LoRA adapter on a chat JSONL file", tb__cli_train },
  { "sample", "sample a reply from a base model or trained weights", tb__cli_sample },
  { "bench", "run the benchmarks and print one table of figures and ratios", tb__cli_bench },
  { NULL, NULL, NULL },
};

static void usage(FILE *out) {
  fprintf(out,
          "usage: tinkerbell <command> [options]\n"
          "       tinkerbell --version\n\n"
          "The Tinker training API on one libuv event loop.\n\n");
  if (commands[0].name != NULL) {
    fprintf(out, "commands:\n");
    for (const command_t *c = commands; c->name != NULL; c++)
      fprintf(out, "  %-8s %s\n", c->name, c->summary);
    fprintf(out, "\nRun 'tinkerbell <command> --help' for its options.\n");
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return TB__CLI_USAGE;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
    printf("tinkerbell %s\n", tb_version_string());
    return 0;
  }
  for (const command_t *c = commands; c->name != NULL; c++)
    if (strcmp(argv[1], c->name) == 0)
      return c->run(argc - 1, argv + 1);
  fprintf(stderr, "tinkerbell: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return TB__CLI_USAGE;
}

/* weft — command-line entry point: dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "weft_version.h"
#include "weft/common.h"

struct command {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
};

static const struct command commands[] = {
    {"generate", cmd_generate, "generate text from a prompt with a GGUF model"},
    {"run", cmd_run, "run a Lua workflow script"},
    {"repl", cmd_repl, "interactive Lua workflow prompt"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server (loopback by default)"},
    {"index", cmd_index, "index a document collection for retrieval (not built yet)"},
    {"bench", cmd_bench, "benchmark the engine"},
    {"runs", cmd_runs, "list workflow runs and their status"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: weft <command> [options]\n\n"
               "weft runs LLM applications: Lua workflows of LLM calls over semantic\n"
               "variables, on its own batched inference engine.\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'weft <command> --help' describes a command's options; 'weft --version'\n"
               "prints the version and the commit weft was built from.\n");
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) return 0;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return 1;
    }
    return 0;
}

int cli_not_yet(const char *cmd, const char *what)
{
    fprintf(stderr, "weft %s: not available yet: %s\n", cmd, what);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("weft %s (commit %s)\n", WEFT_VERSION, WEFT_COMMIT);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "weft: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}

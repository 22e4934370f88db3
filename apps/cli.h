/* apps/cli.h — the weft command table. Each subcommand is a main-like function
 * in its own apps/cmd_*.c file; it returns the process exit code
 * (0 ok, 1 runtime failure, 2 usage error). */
#ifndef WEFT_APPS_CLI_H
#define WEFT_APPS_CLI_H

int cmd_generate(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_repl(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_runs(int argc, char **argv);

/* For subcommands whose issue has not landed: prints a clear message, returns 2. */
int cli_not_yet(const char *cmd, const char *what);
/* True when argv[1..] holds -h or --help. */
int cli_wants_help(int argc, char **argv);

#endif

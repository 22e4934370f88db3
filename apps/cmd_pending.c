/* Subcommands whose issues have not landed yet. Each prints what it will do
 * with --help and exits 2 otherwise, so scripts can tell "not there" apart
 * from "failed". */
#include <stdio.h>

#include "cli.h"

#define PENDING(fn, name, help, what)                                               \
    int fn(int argc, char **argv)                                                   \
    {                                                                               \
        if (cli_wants_help(argc, argv)) {                                           \
            printf("usage: weft " name " " help "\n\n(not available yet: %s)\n",   \
                   what);                                                           \
            return 0;                                                               \
        }                                                                           \
        return cli_not_yet(name, what);                                             \
    }

PENDING(cmd_index, "index", "COLLECTION FILES...",
        "document collections land with the retrieval work")

/* tests/cli_common.h — running the weft binary from a test and checking what
 * it printed. Header-only. */
#ifndef WEFT_TESTS_CLI_COMMON_H
#define WEFT_TESTS_CLI_COMMON_H

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "test.h"

static char out[1 << 16]; /* what the last run printed, stdout and stderr */

/* Runs `ENV WEFT ARGS` through the shell (env: variable assignments or "")
 * with stderr folded into out; returns the exit code, or 128 + the signal. */
static int run_weft(const char *env, const char *weft, const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s %s 2>&1", env, weft, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

#define ASSERT_OUT_HAS(s)                                                                   \
    do {                                                                                    \
        if (!strstr(out, (s))) TEST_FAIL_("output lacks \"%s\":\n%s", (s), out);            \
    } while (0)

#endif

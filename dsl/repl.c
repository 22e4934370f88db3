/*
 * weft repl: each line (or multi-line chunk) runs as its own coroutine on
 * the loop thread, so v:get() suspends only that line. Values a line returns
 * are printed when they are ready: at once, or — for pending variables —
 * when they complete, tagged [N] with the line's task number. On a terminal
 * libedit reads the line in callback mode, driven by a libevent read event
 * on stdin, so results print while the user types; elsewhere lines are read
 * one at a time and the loop runs between them.
 *
 * Ctrl-C on a terminal: a SIGINT handler sets a flag that the state's count
 * hook checks (weft_sandbox_set_interrupt), so a statement running Lua stops
 * with "interrupted"; the handler also writes to a pipe that wakes the loop,
 * which then clears the flag and — when no statement took the interrupt —
 * the line being edited (and an unfinished multi-line statement), and shows
 * a fresh prompt. Statements suspended in v:get() are not running and go on.
 * A statement the hook cannot stop (one long C call, a looping xpcall
 * handler) ends the REPL at a second Ctrl-C a second later (sigint_handler).
 *
 * A sandboxed state's instruction budget is given anew to each line (the
 * memory cap is the session's): one line that spends it fails alone.
 */
#include <editline/readline.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "dsl/dsl_internal.h"
#include "weft/sandbox.h"

typedef struct repl {
    dsl *d;
    bool tty, eof, continued;
    sig_atomic_t seq_taken; /* the last Ctrl-C (g_sigint_seq) a statement took */
    uint64_t line_budget;   /* a sandboxed state's instruction budget, given anew to each line (0: none) */
    char *chunk;            /* incomplete input so far (multi-line) */
} repl;

static repl *g_repl; /* libedit's line callback has no user pointer */

#define REPL_HISTORY_LINES 1000 /* lines the history file keeps, the latest */

static void on_line(char *line);

/* Before printing on a terminal: clear the line being edited. */
static void out_begin(void)
{
    if (g_repl && g_repl->tty) fputs("\r\033[K", stdout);
}

static void out_end(void)
{
    fflush(stdout);
    if (g_repl && g_repl->tty && !g_repl->eof) rl_forced_update_display();
}

static void print_var(dsl *d, int label, int32_t var)
{
    size_t len;
    const char *v = orch_var_value(d->o, var, &len);
    out_begin();
    if (v) {
        printf("[%d] ", label);
        fwrite(v, 1, len, stdout);
        putchar('\n');
    } else {
        printf("[%d] error: %s\n", label, orch_var_error(d->o, var));
    }
    out_end();
}

/* Ctrl-C: g_sigint is set by the SIGINT handler, read by the Lua hook,
 * cleared by the loop (on_sigint); g_sigint_seq counts the presses (only the
 * handler writes it), so that on_sigint can tell a press a statement took
 * from one at the prompt when the two come before it runs. */
static volatile sig_atomic_t g_sigint, g_sigint_seq;
static int g_sigpipe[2] = {-1, -1}; /* the handler wakes the loop through it */

static void task_done(dsl *d, int task, lua_State *co, int status, int nres)
{
    if (status != LUA_OK && g_sigint && g_repl) g_repl->seq_taken = g_sigint_seq;
    if (status != LUA_OK) {
        const char *msg = lua_tostring(co, -1);
        out_begin();
        printf("[%d] error: %s\n", task, msg ? msg : "(error object is not a string)");
        out_end();
        return;
    }
    for (int i = nres; i >= 1; i--) {
        const int idx = -i;
        lua_State *L = d->L;
        const int32_t *var = luaL_testudata(co, idx, DSL_VAR_MT);
        if (!var) {
            const char *s = luaL_tolstring(co, idx, NULL);
            out_begin();
            printf("[%d] %s\n", task, s);
            out_end();
            lua_pop(co, 1);
            continue;
        }
        if (orch_var_state_of(d->o, *var) != ORCH_VAR_PENDING) {
            print_var(d, task, *var);
            continue;
        }
        orch_await(d->o, *var); /* the user is looking at it */
        lua_pushinteger(L, task); /* a label to print it under: several lines may show it */
        dsl_list_append(L, DSL_WATCH, *var);
    }
    lua_pop(co, nres);
}

/* Compiles chunk (as an expression first); on success starts it. Returns 1
 * when the chunk is incomplete (more lines wanted). Protected. */
static bool incomplete(lua_State *L)
{
    size_t ml;
    const char *msg = lua_tolstring(L, -1, &ml);
    return msg && ml >= 5 && strcmp(msg + ml - 5, "<eof>") == 0;
}

static int exec_l(lua_State *L)
{
    dsl *d = lua_touserdata(L, 1);
    size_t len;
    const char *chunk = lua_tolstring(L, 2, &len);
    lua_pushfstring(L, "return %s", chunk);
    if (luaL_loadbufferx(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin", "t") != LUA_OK) {
        const bool expr_open = incomplete(L); /* "1 +" */
        lua_pop(L, 2);
        if (luaL_loadbufferx(L, chunk, len, "=stdin", "t") != LUA_OK) {
            if (expr_open || incomplete(L)) {
                lua_pushboolean(L, 1);
                return 1;
            }
            out_begin();
            printf("syntax error: %s\n", lua_tostring(L, -1));
            out_end();
            lua_pushboolean(L, 0);
            return 1;
        }
    }
    dsl_task_start(d, L);
    lua_pushboolean(L, 0);
    return 1;
}

static void exec_line(repl *r, const char *line)
{
    dsl *d = r->d;
    size_t have = r->chunk ? strlen(r->chunk) : 0;
    char *chunk = realloc(r->chunk, have + strlen(line) + 2);
    if (!chunk) return;
    if (have) chunk[have++] = '\n';
    strcpy(chunk + have, line);
    r->chunk = chunk;
    lua_State *L = d->L;
    /* each line gets the whole budget: a session's lines do not share one
     * (spent, it would fail every later line, print() included) */
    if (r->line_budget) weft_sandbox_budget_reset(L, r->line_budget);
    lua_pushcfunction(L, exec_l);
    lua_pushlightuserdata(L, d);
    lua_pushstring(L, chunk);
    int more = 0;
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        out_begin();
        printf("error: %s\n", lua_tostring(L, -1));
        out_end();
    } else {
        more = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    if (!more) {
        free(r->chunk);
        r->chunk = NULL;
    }
    orch_flush(d->o);
}

/* libedit calls on_line with the terminal back in cooked mode and its
 * buffer still holding the line. Left so while the line runs, the terminal
 * would echo what is typed meanwhile (and libedit again), a redraw would
 * show the line just run, and a Ctrl-D typed then would be the terminal's
 * end of file, which becomes a NUL byte once libedit makes the terminal raw
 * again (the REPL then did not end). So the handler is installed anew at
 * once (raw mode, an empty buffer) with no prompt while the line runs, and
 * then with the prompt the line ends with. (The instants the terminal is
 * still cooked, here and in libedit, a Ctrl-D meets with the terminal's
 * end-of-file key off: see dsl_repl.) */
static void prompt_install(const char *prompt)
{
    rl_callback_handler_remove();
    rl_callback_handler_install(prompt, on_line);
}

static void on_line(char *line)
{
    repl *r = g_repl;
    if (!line) {
        r->eof = true;
        return;
    }
    if (r->tty) prompt_install("");
    if (*line) add_history(line);
    exec_line(r, line);
    free(line);
    if (r->tty) {
        r->continued = r->chunk != NULL;
        prompt_install(r->continued ? ">> " : "weft> ");
    }
}

/* libedit's callback mode drops Ctrl-D on an empty line (el_gets returns
 * nothing), so the loop reads each first byte itself: Ctrl-D on an empty
 * line is the end; any other byte goes to libedit through rl_getc_function,
 * which reads further bytes (escape sequences) from stdin as usual. */
static int pushed = -1;

static int repl_getc(FILE *f)
{
    if (pushed >= 0) {
        const int c = pushed;
        pushed = -1;
        return c;
    }
    unsigned char c;
    return read(fileno(f), &c, 1) == 1 ? c : EOF;
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
    unsigned char c;
    if (read(0, &c, 1) != 1 || (c == 4 && rl_end == 0 && !g_repl->chunk)) {
        g_repl->eof = true;
        return;
    }
    pushed = c;
    rl_callback_read_char();
}

/* The terminal as it was before libedit took it, restored by a forced exit. */
static struct termios g_term_saved;
static bool g_term_ok;
static const char *g_history_path; /* while the terminal REPL runs: for repl_atexit */
static bool g_in_repl;

/* os.exit() in a statement ends the process from inside the loop: the
 * terminal gets its settings back (libedit's raw mode, without echo, would
 * outlive the REPL in the user's shell) and the history is saved, as at
 * Ctrl-D. */
static void repl_atexit(void)
{
    if (!g_in_repl) return;
    g_in_repl = false;
    rl_callback_handler_remove();
    if (g_term_ok) tcsetattr(0, TCSANOW, &g_term_saved);
    if (g_history_path) write_history(g_history_path);
}
static struct timespec g_sigint_at; /* when the press not yet taken came (the handler's only) */

/* A second Ctrl-C a second or more after one no statement has taken ends
 * the process, as lua.c does: the statement is stuck where the hook cannot
 * stop it — inside one C call (a pathological string.find) or in an
 * xpcall message handler, which Lua runs with hooks off after an error the
 * hook raised. The terminal is restored first; the history of the session
 * is not saved. Everything here is async-signal-safe. */
static void sigint_force_exit(void)
{
    static const char msg[] = "\nweft repl: the statement does not stop at Ctrl-C; exiting\n";
    if (g_term_ok) tcsetattr(0, TCSANOW, &g_term_saved);
    const ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGINT, &dfl, NULL);
    raise(SIGINT); /* delivered when the handler returns: ends the process as Ctrl-C does */
}

static void sigint_handler(int sig)
{
    (void)sig;
    const int saved = errno;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (g_sigint && (now.tv_sec - g_sigint_at.tv_sec) * 1000000000L + (now.tv_nsec - g_sigint_at.tv_nsec) >=
                        1000000000L) {
        sigint_force_exit();
        errno = saved;
        return;
    }
    if (!g_sigint) g_sigint_at = now;
    g_sigint = 1;
    g_sigint_seq++;
    /* the pipe full is fine: a wake-up is pending already */
    const ssize_t w = g_sigpipe[1] >= 0 ? write(g_sigpipe[1], "", 1) : 0;
    (void)w;
    errno = saved;
}

/* Drops the line being edited and any unfinished statement; a fresh prompt. */
static void discard_input(repl *r)
{
    free(r->chunk);
    r->chunk = NULL;
    r->continued = false;
    rl_replace_line("", 0);
    putchar('\n'); /* the terminal has echoed ^C, or not */
    fflush(stdout);
    /* rl_set_prompt does not reach libedit's callback mode: install anew */
    rl_callback_handler_remove();
    rl_callback_handler_install("weft> ", on_line);
}

/* The loop's side of Ctrl-C: if a statement took the last press, it has
 * ended (and printed its error, with a fresh prompt); otherwise the press
 * came at the prompt. A press after g_sigint is cleared writes the pipe
 * again: it is seen on the next call. */
static void on_sigint(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    repl *r = arg;
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    g_sigint = 0;
    if (g_sigint_seq != r->seq_taken) discard_input(r);
    r->seq_taken = g_sigint_seq;
}

/* Installs the Ctrl-C handling (see the top of the file); *old gets the
 * previous SIGINT action. Returns the pipe's event, or NULL (Ctrl-C then
 * does what it did before: ends the process). */
static struct event *sigint_install(repl *r, struct sigaction *old)
{
    if (pipe(g_sigpipe) < 0) return NULL;
    for (int i = 0; i < 2; i++) {
        fcntl(g_sigpipe[i], F_SETFL, fcntl(g_sigpipe[i], F_GETFL) | O_NONBLOCK);
        fcntl(g_sigpipe[i], F_SETFD, FD_CLOEXEC);
    }
    struct event *ev = event_new(r->d->base, g_sigpipe[0], EV_READ | EV_PERSIST, on_sigint, r);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sigint_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (!ev || event_add(ev, NULL) < 0 || weft_sandbox_set_interrupt(r->d->L, &g_sigint) < 0 ||
        sigaction(SIGINT, &sa, old) < 0) {
        if (ev) event_free(ev);
        weft_sandbox_set_interrupt(r->d->L, NULL);
        close(g_sigpipe[0]);
        close(g_sigpipe[1]);
        g_sigpipe[0] = g_sigpipe[1] = -1;
        return NULL;
    }
    return ev;
}

static void sigint_remove(repl *r, struct event *ev, const struct sigaction *old)
{
    if (!ev) return;
    sigaction(SIGINT, old, NULL);
    weft_sandbox_set_interrupt(r->d->L, NULL);
    event_free(ev);
    close(g_sigpipe[0]);
    close(g_sigpipe[1]);
    g_sigpipe[0] = g_sigpipe[1] = -1;
    g_sigint = 0;
}

int dsl_repl(dsl *d, const char *history_path)
{
    if (!d) return weft_error(WEFT_EINVAL, "dsl_repl: bad argument");
    repl r = {.d = d, .tty = isatty(0) && isatty(1), .line_budget = weft_sandbox_get_usage(d->L).instr_limit};
    g_repl = &r;
    d->on_task_done = task_done;
    d->print_watch = print_var;
    if (r.tty) {
        g_term_ok = tcgetattr(0, &g_term_saved) == 0;
        if (g_term_ok) {
            /* libedit leaves the terminal cooked for an instant between a
             * line's handler and the next (prompt_install); a Ctrl-D typed
             * then was the terminal's end of file, a NUL byte by the time
             * the REPL read it, and the REPL did not end. With the key off
             * it is the byte 0x04 that on_stdin takes for the end. Set
             * before libedit initializes: it keeps this as its cooked mode. */
            struct termios t = g_term_saved;
            t.c_cc[VEOF] = _POSIX_VDISABLE;
            tcsetattr(0, TCSANOW, &t);
        }
        rl_getc_function = repl_getc; /* before libedit initializes: it reads it then */
        rl_catch_signals = 0;         /* SIGINT is ours (sigint_install) */
        using_history();
        stifle_history(REPL_HISTORY_LINES); /* before the read: an older, longer file is cut too */
        if (history_path) read_history(history_path);
        printf("weft repl — Lua 5.4 with the weft module; values print as they complete. "
               "Ctrl-C interrupts, Ctrl-D quits.\n");
        rl_callback_handler_install("weft> ", on_line);
        static bool atexit_set;
        if (!atexit_set) atexit_set = atexit(repl_atexit) == 0;
        g_history_path = history_path;
        g_in_repl = true;
        struct sigaction old_int;
        struct event *int_ev = sigint_install(&r, &old_int);
        struct event *ev = event_new(d->base, 0, EV_READ | EV_PERSIST, on_stdin, NULL);
        if (ev) event_add(ev, NULL);
        while (ev && !r.eof) dsl_loop_once(d);
        sigint_remove(&r, int_ev, &old_int);
        g_in_repl = false;
        rl_callback_handler_remove();
        if (g_term_ok) tcsetattr(0, TCSANOW, &g_term_saved); /* Ctrl-D is the end of file again */
        if (ev) event_free(ev);
        putchar('\n');
        if (history_path) write_history(history_path);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, stdin)) >= 0) {
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
            exec_line(&r, line);
            event_base_loop(d->base, EVLOOP_NONBLOCK);
        }
        free(line);
        r.eof = true;
        if (r.chunk) { /* the input ended inside a statement: say so, as a file's load would */
            out_begin();
            printf("syntax error: the input ended inside an unfinished statement\n");
            out_end();
        }
    }
    /* what is still running finishes and prints */
    while (!orch_idle(d->o)) dsl_loop_once(d);
    free(r.chunk);
    d->on_task_done = NULL;
    d->print_watch = NULL;
    g_repl = NULL;
    return 0;
}

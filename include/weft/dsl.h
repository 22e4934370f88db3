/*
 * weft/dsl.h — the embedded Lua 5.4 module `weft` and the driver that runs
 * workflow scripts as coroutines over an orchestrator.
 *
 * In Lua:
 *   f = weft.fn{template = "...{{x}}...{{out}}", outputs = {out = {max_tokens = 64,
 *               stop = {"\n"}, temperature = 0, ...}}, name = "f"}
 *   f = weft.fn{messages = {{role = "system", content = "..."},
 *                           {role = "user", content = "...{{x}}..."}},
 *               outputs = {out = {...}}}            -- chat, the model's template
 *   out = f{x = "text" or var}                      -- futures, at once
 *   v = weft.var("value"); j = weft.join({v1, v2, "text"}, sep)
 *   t = weft.gather({v1, v2})                       -- their values
 *   v:get()  v:ready()  v:error()  v:id()  weft.stream(v, fn)  weft.stats()
 *
 * A template's placeholders are its inputs and outputs; an output is
 * generated at its first placeholder, its prompt being the template text up
 * to there (earlier outputs included, as generated), so a function with
 * several outputs is a chain of calls; later placeholders of an output
 * repeat its value. In a chat function an output is generated as the first
 * assistant message whose whole content is its placeholder (its prompt: the
 * messages before it, rendered with the model's template), or — for a single
 * output without one — as the reply to all the messages; later messages may
 * refer to it. Sampling defaults to greedy (temperature 0), max_tokens to
 * 128. An output with n = K (the last output only) is K completions of one
 * prompt, computed once and forked (completion i samples with seed + i): the
 * call returns a list of K variables for it.
 *
 * v:get() returns the value when ready; otherwise it marks v awaited (its
 * upstream calls get latency priority) and suspends the calling coroutine
 * until v is ready. A failed variable raises its error, which names the call
 * that failed. get() cannot suspend inside a weft.stream callback.
 *
 * Threading: all of this runs on the loop thread of the orchestrator's
 * event base. Every entry from C into Lua is a protected call.
 */
#ifndef WEFT_DSL_H
#define WEFT_DSL_H

#include <stdbool.h>

#include "weft/orch.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsl dsl;
struct lua_State;

struct weft_sandbox_params;

/* o, m and base are borrowed (o must be on base). sb: the Lua state's
 * sandbox (weft/sandbox.h: restricted library, memory cap, instruction
 * budget); NULL for the whole standard library and no caps. */
WEFT_API int dsl_create(orch *o, const weft_model *m, struct event_base *base,
                        const struct weft_sandbox_params *sb, dsl **out);
WEFT_API void dsl_destroy(dsl *d);
WEFT_API struct lua_State *dsl_lua(dsl *d);

/* Sets arg[key] = value in the script's global table `arg`. */
WEFT_API int dsl_set_arg(dsl *d, const char *key, const char *value);

/* Runs a script (path) or a chunk of code (chunkname names it in messages)
 * as the main coroutine and drives the event loop until the script has
 * ended and every call it created has completed. 0 on success; WEFT_EINVAL
 * when the script fails to load or raises an error (printed to stderr with
 * a traceback, and in weft_last_error()). */
WEFT_API int dsl_run_file(dsl *d, const char *path);
WEFT_API int dsl_run_string(dsl *d, const char *code, const char *chunkname);

/* The string the last script returned (its main chunk's first result),
 * NULL if it returned none. Borrowed; valid until the next run. */
WEFT_API const char *dsl_result(const dsl *d);

/* Called by the script's os.exit (only where the state has the os library:
 * not sandboxed) with the status the process is about to exit with
 * (os.exit(true) and os.exit() give EXIT_SUCCESS, os.exit(false)
 * EXIT_FAILURE), on the loop thread, right before the exit: the caller
 * records what must outlive the process (weft run: the run's end). NULL fn:
 * none. */
typedef void (*dsl_exit_fn)(void *user, int status);
WEFT_API void dsl_on_exit(dsl *d, dsl_exit_fn fn, void *user);
/* Interactive prompt on stdin/stdout: line editing and history (libedit)
 * on a terminal, plain lines otherwise. Each line runs as its own coroutine;
 * variables it returns are printed as they complete. history_path may be
 * NULL. Returns 0 at end of input. */
WEFT_API int dsl_repl(dsl *d, const char *history_path);

#ifdef __cplusplus
}
#endif
#endif

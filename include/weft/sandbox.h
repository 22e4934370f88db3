/*
 * weft/sandbox.h — Lua 5.4 states for workflow scripts, with an optional
 * restricted standard library, a memory cap and an instruction budget.
 *
 * A sandboxed state (params.sandboxed) has only:
 *   base      assert error getmetatable ipairs next pairs pcall print rawequal
 *             rawget rawlen rawset select setmetatable tonumber tostring type
 *             xpcall _G _VERSION, plus
 *             load        text chunks only (mode is forced to "t"; a chunk
 *                         starting with the bytecode signature is refused with a
 *                         clear message); the default env is the sandbox's _G
 *             collectgarbage  only "collect", "count", "step", "isrunning"
 *   string    without string.dump
 *   table math utf8 coroutine
 *   os        only os.time, os.clock, os.date, os.difftime
 * and no io, package, require, debug, dofile, loadfile or warn. Host code
 * that adds its own modules (the `weft` module) sets them as globals — there
 * is no `require` in a sandboxed state.
 *
 * Memory cap: the state's lua_Alloc counts the bytes it holds (through
 * weft_realloc, so they also show in weft_mem_in_use()) and refuses an
 * allocation that would pass the cap. Lua then collects garbage and retries
 * once, and if that fails raises a memory error; weft_sandbox_error() reports
 * it as "memory limit of N bytes exceeded" (WEFT_ERANGE). After the error has
 * unwound, the memory is collectable and the state is usable again.
 *
 * Instruction budget: a count hook (lua_sethook, LUA_MASKCOUNT) fires every
 * `min(1000, budget)` VM instructions and adds them to a counter that all
 * threads of the state share; past the budget it raises
 * "instruction budget of N exceeded". Once spent, the hook fires on every
 * instruction, so a script cannot swallow the error with pcall and go on: every
 * further instruction raises it again, until the host calls
 * weft_sandbox_budget_reset() or _add().
 *
 * Coroutines: hooks are per thread in Lua, but Lua 5.4 copies the creating
 * thread's hook into a new thread (lua_newthread, coroutine.create), so every
 * coroutine created from a state's main thread or from its coroutines is
 * counted against the same shared budget — no per-coroutine setup. Threads
 * created before a budget was first set (a state created with budget 0) have
 * no hook: call weft_sandbox_hook_thread() on them. The count is exact to
 * within `granularity` instructions per thread; because a new thread starts
 * a fresh countdown, a sandboxed state's coroutine.create and coroutine.wrap
 * charge each new thread `granularity` instructions up front, so that many
 * short coroutines cannot run uncounted.
 *
 * Memory the host keeps for a script outside the Lua heap (the weft
 * module's copies of templates, prompts and values) is charged to the same
 * cap with weft_sandbox_charge().
 *
 * Time limit: with params.time_limit, the same hook also ends the state's
 * scripts once that many seconds of wall clock have passed since its
 * creation: "time limit of S s exceeded", as sticky as a spent budget (every
 * further instruction raises it; in an unsandboxed state the plain xpcall
 * runs a Lua message handler with hooks off, so a looping handler outlasts
 * it). weft_sandbox_get_usage() gives the
 * deadline, for a host that also waits on work outside Lua.
 *
 * Not counted: time spent inside one C library call (a long string.rep is
 * capped by memory, but a pathological string.find pattern runs in C without
 * VM instructions, and the time limit cannot interrupt it either). A host
 * must stop such a state from outside (weft run --time-limit exits the
 * process a few seconds past the limit).
 *
 * Threading: a state and everything it creates belong to one thread at a time.
 * Errors: functions return 0 or a negative WEFT_E* code with weft_last_error().
 */
#ifndef WEFT_SANDBOX_H
#define WEFT_SANDBOX_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lua_State;

typedef struct weft_sandbox_params {
    bool sandboxed;       /* restricted library (above); false: all of luaL_openlibs */
    size_t mem_limit;     /* bytes the state may hold; 0 = no cap */
    uint64_t instr_limit; /* VM instructions; 0 = no budget */
    double time_limit;    /* seconds of wall clock from creation; 0 = none (no hook
                             when there is no budget either) */
    size_t output_limit;  /* bytes print() may write in a sandboxed state over
                             its life (a loop of prints of a 16 MB string is a
                             few instructions); past it print raises "output
                             limit of N bytes exceeded"; 0 = none */
} weft_sandbox_params;

/* sandboxed, 64 MiB, 1e9 instructions (a few seconds of pure Lua), no time
 * limit, 16 MiB of print output. */
WEFT_API weft_sandbox_params weft_sandbox_default_params(void);

/* Creates a state (params NULL: the defaults). *out is owned by the caller:
 * weft_sandbox_destroy() it. WEFT_ENOMEM if the libraries do not fit in
 * mem_limit (or memory runs out). */
WEFT_API int weft_sandbox_create(const weft_sandbox_params *params, struct lua_State **out);
/* Closes a state made by weft_sandbox_create (any of its threads may be
 * passed) and frees its accounting. NULL is a no-op. */
WEFT_API void weft_sandbox_destroy(struct lua_State *L);

/* Loads `len` bytes of `code` as chunk `name` (e.g. "@script.lua" or
 * "=repl"; NULL: "=chunk") — text only in a sandboxed state — and calls it
 * with weft_sandbox_pcall(). On success the chunk's results, adjusted to
 * `nresults` (LUA_MULTRET for all), are on the stack. On error nothing is
 * left on the stack; WEFT_EINVAL (syntax or runtime error, binary chunk in a
 * sandbox), WEFT_ERANGE (memory cap or instruction budget), WEFT_ENOMEM, and
 * weft_last_error() holds the message ("name:line: what" + a traceback). */
WEFT_API int weft_sandbox_run(struct lua_State *L, const char *code, size_t len,
                              const char *name, int nresults);

/* lua_pcall(L, nargs, nresults) with a message handler that appends a
 * traceback; errors are converted by weft_sandbox_error(). */
WEFT_API int weft_sandbox_pcall(struct lua_State *L, int nargs, int nresults);

/* lua_resume(co, from, nargs, nresults) for a script coroutine. Returns 0 when
 * the coroutine finished, 1 when it yielded (*nresults values on co's stack
 * either way), or a negative code from weft_sandbox_error() (error value
 * popped from co; co is dead). */
WEFT_API int weft_sandbox_resume(struct lua_State *co, struct lua_State *from, int nargs,
                                 int *nresults);

/* Converts a Lua error — `status` from lua_pcall/lua_resume/lua_load, the
 * error value on top of L — to a WEFT_E* code and a weft_error() message, and
 * pops the value. LUA_OK gives 0 and pops nothing. Works on any lua_State;
 * the memory/budget messages need a state from weft_sandbox_create. */
WEFT_API int weft_sandbox_error(struct lua_State *L, int status);

/* Charges `bytes` that the host keeps for the script outside the Lua heap
 * to the state's memory cap, for the state's life. Over the cap it raises
 * a Lua error in L that weft_sandbox_error() reports as "memory limit of N
 * bytes exceeded" (call it where a Lua error may be raised); without a cap,
 * or in a state not made here, it only counts. */
WEFT_API void weft_sandbox_charge(struct lua_State *L, size_t bytes);

/* Installs the budget hook on thread `co` (see Coroutines above).
 * WEFT_EINVAL if co is not a thread of a weft_sandbox state. */
WEFT_API int weft_sandbox_hook_thread(struct lua_State *co);

/* Lets the host interrupt L's scripts from a signal handler (Ctrl-C in the
 * REPL): while *flag is nonzero, every hooked thread of L raises
 * "interrupted" at its next hook call (within `min(1000, budget)`
 * instructions), and on every instruction after that, so that a pcall in
 * the script cannot catch it and go on — until the host sets *flag back to
 * 0. The flag is only read (a sig_atomic_t a handler may set). Installs the
 * count hook on L if it had none (a state with no budget and no time limit);
 * threads created from L afterwards inherit it, older ones need
 * weft_sandbox_hook_thread(). flag NULL: no interruption. WEFT_EINVAL if L is
 * not a weft_sandbox state. */
WEFT_API int weft_sandbox_set_interrupt(struct lua_State *L, const volatile sig_atomic_t *flag);

/* Sets a new budget of `limit` instructions (0: none) counted from zero, and
 * makes a spent state runnable again. Installs the hook on L if it had none. */
WEFT_API int weft_sandbox_budget_reset(struct lua_State *L, uint64_t limit);
/* Extends the current budget by `more` instructions (a spent state becomes
 * runnable if the new budget is above what it used). */
WEFT_API int weft_sandbox_budget_add(struct lua_State *L, uint64_t more);

typedef struct weft_sandbox_usage {
    size_t mem_used, mem_peak, mem_limit;    /* bytes */
    uint64_t instr_used, instr_limit;        /* instructions */
    double time_limit, deadline;             /* seconds; deadline in weft_now() time (0: none) */
} weft_sandbox_usage;
/* Zeroes when L is not a weft_sandbox state. */
WEFT_API weft_sandbox_usage weft_sandbox_get_usage(struct lua_State *L);

#ifdef __cplusplus
}
#endif
#endif

/* The Lua sandbox: escapes are refused (io, os.execute, require,
 * package.loadlib, debug, bytecode through load, string.dump), memory bombs
 * and endless loops end in clear errors for that script only, and after each
 * failure both the same state and a fresh one still run code. */
#include <lauxlib.h>
#include <lua.h>
#include <unistd.h>

#include "test.h"
#include "weft/sandbox.h"

#define MEM_CAP ((size_t)8 << 20)
#define BUDGET 2000000ull

static lua_State *new_state(void)
{
    weft_sandbox_params p = weft_sandbox_default_params();
    p.mem_limit = MEM_CAP;
    p.instr_limit = BUDGET;
    lua_State *L = NULL;
    if (weft_sandbox_create(&p, &L) != 0) return NULL;
    return L;
}

static int run(lua_State *L, const char *code) { return weft_sandbox_run(L, code, strlen(code), "=test", 1); }

/* Runs `code` expecting a single result; returns it as an integer (-999 on
 * error). */
static long long eval_int(lua_State *L, const char *code)
{
    if (run(L, code) != 0) return -999;
    long long v = lua_isinteger(L, -1) ? (long long)lua_tointeger(L, -1) : -998;
    lua_pop(L, 1);
    return v;
}

/* The host is fine: the same state (after a budget reset) and a fresh one
 * compute. */
#define ASSERT_STILL_WORKS(L)                                                       \
    do {                                                                            \
        ASSERT_EQ_INT(weft_sandbox_budget_reset((L), BUDGET), 0);                   \
        ASSERT_EQ_INT(eval_int((L), "local t = {} for i = 1, 100 do t[i] = i end "  \
                                    "return #t + 1"),                               \
                      101);                                                         \
        lua_State *fresh_ = new_state();                                            \
        ASSERT(fresh_ != NULL);                                                     \
        ASSERT_EQ_INT(eval_int(fresh_, "return 6 * 7"), 42);                        \
        weft_sandbox_destroy(fresh_);                                               \
    } while (0)

TEST(unsafe_libraries_are_absent)
{
    lua_State *L = new_state();
    ASSERT(L != NULL);
    static const char *const absent[] = {
        "io", "package", "require", "debug", "dofile", "loadfile", "warn",
        "string.dump", "os.execute", "os.exit", "os.getenv", "os.remove",
        "os.rename", "os.tmpname", "os.setlocale", "(\"\").dump", NULL,
    };
    for (int i = 0; absent[i]; i++) {
        char code[128];
        snprintf(code, sizeof code, "return %s == nil and 1 or 0", absent[i]);
        long long v = eval_int(L, code);
        if (v != 1) TEST_FAIL_("%s is reachable in the sandbox (%lld)", absent[i], v);
    }
    static const char *const present[] = {"string.format", "table.concat", "math.floor",
                                          "utf8.char", "coroutine.wrap", "os.time", "os.clock",
                                          "pcall", "load", "print", NULL};
    for (int i = 0; present[i]; i++) {
        char code[128];
        snprintf(code, sizeof code, "return %s ~= nil and 1 or 0", present[i]);
        if (eval_int(L, code) != 1) TEST_FAIL_("%s is missing in the sandbox", present[i]);
    }
    weft_sandbox_destroy(L);
}

TEST(escapes_are_refused_with_clear_errors)
{
    lua_State *L = new_state();
    ASSERT(L != NULL);
    ASSERT_EQ_INT(run(L, "return io.open('/etc/passwd')"), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "io"));
    ASSERT_EQ_INT(run(L, "return os.execute('touch /tmp/weft-sandbox-escaped')"), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "execute"));
    ASSERT_EQ_INT(run(L, "return require('os')"), WEFT_EINVAL);
    ASSERT_EQ_INT(run(L, "return package.loadlib('libc.so.6', 'system')"), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "package"));
    ASSERT_EQ_INT(run(L, "return debug.getinfo(1)"), WEFT_EINVAL);
    ASSERT_EQ_INT(run(L, "return string.dump(function() end)"), WEFT_EINVAL);
    /* finalizers run with hooks off: no __gc, not even a placeholder */
    ASSERT_EQ_INT(run(L, "setmetatable({}, {__gc = function() while true do end end})"),
                  WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "__gc"));
    ASSERT_EQ_INT(run(L, "setmetatable({}, {__gc = false})"), WEFT_EINVAL);
    ASSERT_EQ_INT(eval_int(L, "local t = setmetatable({}, {__index = function() return 9 end}) "
                              "return t.x"),
                  9);
    /* xpcall still calls the script's handler for its own errors, and f may yield */
    ASSERT_EQ_INT(eval_int(L, "local ok, v = xpcall(function() error('e') end, "
                              "function(m) return 11 end) return v"),
                  11);
    ASSERT_EQ_INT(eval_int(L, "local co = coroutine.wrap(function() return select(2, "
                              "xpcall(function() return coroutine.yield(1) + 1 end, print)) end) "
                              "co() return co(12)"),
                  13);
    ASSERT_EQ_INT(run(L, "collectgarbage('stop')"), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "not allowed"));
    ASSERT_EQ_INT(eval_int(L, "collectgarbage() return collectgarbage('count') > 0 and 1 or 0"), 1);
    /* load of text works, with the sandbox's globals as its env */
    ASSERT_EQ_INT(eval_int(L, "return load('return 1 + 2')()"), 3);
    ASSERT_EQ_INT(eval_int(L, "return load('return io == nil and 7 or 0')()"), 7);
    ASSERT_EQ_INT(eval_int(L, "return load('return x', 'c', 't', {x = 5})()"), 5);
    /* and errors (never crashes) when handed nonsense */
    ASSERT_EQ_INT(run(L, "return load()"), WEFT_EINVAL);
    ASSERT_EQ_INT(eval_int(L, "return load('syntax error here') == nil and 1 or 0"), 1);
    ASSERT_STILL_WORKS(L);
    weft_sandbox_destroy(L);
    ASSERT(access("/tmp/weft-sandbox-escaped", F_OK) != 0);
}

TEST(bytecode_is_refused)
{
    /* bytecode made by a full (unsandboxed) state */
    weft_sandbox_params p = weft_sandbox_default_params();
    p.sandboxed = false;
    lua_State *full = NULL;
    ASSERT_EQ_INT(weft_sandbox_create(&p, &full), 0);
    ASSERT_EQ_INT(run(full, "return string.dump(function() return 42 end)"), 0);
    size_t len;
    const char *bc = lua_tolstring(full, -1, &len);
    ASSERT(bc && len > 4 && bc[0] == '\x1b');
    /* it is valid bytecode: the full state loads it */
    ASSERT_EQ_INT(weft_sandbox_run(full, bc, len, "=bc", 1), 0);
    ASSERT_EQ_INT(lua_tointeger(full, -1), 42);
    lua_pop(full, 1);

    lua_State *L = new_state();
    ASSERT(L != NULL);
    /* from the host */
    ASSERT_EQ_INT(weft_sandbox_run(L, bc, len, "=bc", 1), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "binary"));
    /* from a script: load(string) and load(reader function) */
    lua_pushlstring(L, bc, len);
    lua_setglobal(L, "bc");
    lua_pop(full, 1);
    weft_sandbox_destroy(full);
    ASSERT_EQ_INT(run(L, "local f, err = load(bc) assert(f == nil) return err"), 0);
    ASSERT(strstr(lua_tostring(L, -1), "binary"));
    lua_pop(L, 1);
    ASSERT_EQ_INT(run(L, "local f, err = load(bc, 'x', 'b') assert(f == nil) return err"), 0);
    lua_pop(L, 1);
    ASSERT_EQ_INT(run(L, "local done = false local f, err = load(function() "
                         "if done then return nil end done = true return bc end) "
                         "assert(f == nil) return err"),
                  0);
    ASSERT(strstr(lua_tostring(L, -1), "binary"));
    lua_pop(L, 1);
    ASSERT_STILL_WORKS(L);
    weft_sandbox_destroy(L);
}

TEST(memory_bombs_hit_the_cap)
{
    static const char *const bombs[] = {
        "local s = string.rep('x', 1 << 30) return #s",
        "local s = 'x' while true do s = s .. s end",
        "local t = {} for i = 1, 1e9 do t[i] = {i} end",
        "local t = {} while true do t[#t + 1] = string.rep('y', 1000) .. #t end",
        /* caught by pcall in the script: still bounded, then reported */
        "local ok, err = pcall(string.rep, 'x', 1 << 30) error(err, 0)",
        NULL,
    };
    char expect[64];
    snprintf(expect, sizeof expect, "memory limit of %zu bytes exceeded", MEM_CAP);
    for (int i = 0; bombs[i]; i++) {
        lua_State *L = new_state();
        ASSERT(L != NULL);
        weft_sandbox_budget_reset(L, 0); /* the loops must end on memory, not time */
        int rc = run(L, bombs[i]);
        if (rc != WEFT_ERANGE || !strstr(weft_last_error(), expect))
            TEST_FAIL_("bomb %d: rc %d, \"%s\"", i, rc, weft_last_error());
        weft_sandbox_usage u = weft_sandbox_get_usage(L);
        ASSERT(u.mem_peak <= MEM_CAP);
        ASSERT_EQ_INT(lua_gettop(L), 0);
        ASSERT_STILL_WORKS(L);
        weft_sandbox_destroy(L);
    }
}

TEST(endless_loops_exhaust_the_budget)
{
    static const char *const loops[] = {
        "while true do end",
        "local i = 0 repeat i = i + 1 until false",
        /* a pcall in the script cannot swallow the budget error */
        "while true do pcall(function() while true do end end) end",
        "local co = coroutine.wrap(function() while true do end end) co()",
        "local co = coroutine.create(function() while true do coroutine.yield() end end) "
        "while true do coroutine.resume(co) end",
        /* a Lua message handler would run with hooks off after the budget's
         * error: the sandbox's xpcall skips it then */
        "xpcall(function() while true do end end, function() while true do end end) "
        "while true do end",
        "local ok = xpcall(function() while true do end end, function(e) return e end) "
        "while true do end",
        /* a handler for an ordinary error starts metered, loops, and the
         * budget's error inside it must not re-enter it unmetered */
        "xpcall(error, function() while true do end end)",
        NULL,
    };
    char expect[64];
    snprintf(expect, sizeof expect, "instruction budget of %llu exceeded", BUDGET);
    for (int i = 0; loops[i]; i++) {
        lua_State *L = new_state();
        ASSERT(L != NULL);
        int rc = run(L, loops[i]);
        if (rc != WEFT_ERANGE || !strstr(weft_last_error(), expect))
            TEST_FAIL_("loop %d: rc %d, \"%s\"", i, rc, weft_last_error());
        ASSERT(strstr(weft_last_error(), "test:")); /* says where */
        weft_sandbox_usage u = weft_sandbox_get_usage(L);
        ASSERT(u.instr_used > BUDGET);
        ASSERT(u.instr_used < BUDGET + 100000);
        /* spent: nothing more runs until the host resets or extends it */
        ASSERT_EQ_INT(run(L, "return 1"), WEFT_ERANGE);
        ASSERT_STILL_WORKS(L);
        weft_sandbox_destroy(L);
    }
}

/* A time limit ends the same loops without an instruction budget, as
 * stickily (pcall, coroutines and message handlers cannot outlast it), and
 * in an unsandboxed state too — but there the plain xpcall runs a Lua
 * message handler with hooks off, so the loops in handlers (the xpcall ones)
 * are left to the host (weft run's exit past the limit); a state with
 * neither has no hook. */
TEST(time_limit_ends_endless_loops)
{
    static const char *const loops[] = {
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "local co = coroutine.wrap(function() while true do end end) co()",
        "xpcall(error, function() while true do end end)",
        "xpcall(function() while true do end end, function() while true do end end) "
        "while true do end",
        NULL,
    };
    for (int sandboxed = 0; sandboxed < 2; sandboxed++)
        for (int i = 0; loops[i]; i++) {
            if (!sandboxed && strncmp(loops[i], "xpcall", 6) == 0) continue;
            weft_sandbox_params p = {.sandboxed = sandboxed, .time_limit = 0.2};
            lua_State *L = NULL;
            ASSERT_EQ_INT(weft_sandbox_create(&p, &L), 0);
            const weft_sandbox_usage u = weft_sandbox_get_usage(L);
            ASSERT(u.time_limit == 0.2 && u.deadline > weft_now());
            const double t0 = weft_now();
            const int rc = run(L, loops[i]);
            const double dt = weft_now() - t0;
            if (rc != WEFT_ERANGE || !strstr(weft_last_error(), "time limit of 0.2 s exceeded"))
                TEST_FAIL_("loop %d (sandboxed %d): rc %d, \"%s\"", i, sandboxed, rc, weft_last_error());
            if (dt > 5.0) TEST_FAIL_("loop %d took %.1f s to stop", i, dt);
            ASSERT_EQ_INT(run(L, "return 1"), WEFT_ERANGE); /* past the limit nothing runs */
            ASSERT(strstr(weft_last_error(), "time limit of 0.2 s exceeded"));
            weft_sandbox_destroy(L);
        }
    weft_sandbox_params none = {.sandboxed = true};
    lua_State *L = NULL;
    ASSERT_EQ_INT(weft_sandbox_create(&none, &L), 0);
    ASSERT(lua_gethook(L) == NULL);
    ASSERT(weft_sandbox_get_usage(L).deadline == 0);
    weft_sandbox_destroy(L);
}

/* The host's interrupt flag (the REPL's Ctrl-C) stops a running loop with
 * "interrupted", in a state with no budget and no time limit too (the hook
 * is installed for it), a pcall in the script cannot swallow it, and once
 * the host clears the flag the state runs again. */
TEST(the_host_can_interrupt_a_running_script)
{
    static const char *const loops[] = {
        "while true do end",
        "while true do pcall(function() while true do end end) end",
        "local co = coroutine.wrap(function() while true do end end) co()",
        NULL,
    };
    static volatile sig_atomic_t flag;
    for (int sandboxed = 0; sandboxed < 2; sandboxed++)
        for (int i = 0; loops[i]; i++) {
            weft_sandbox_params p = {.sandboxed = sandboxed};
            lua_State *L = NULL;
            ASSERT_EQ_INT(weft_sandbox_create(&p, &L), 0);
            ASSERT_EQ_INT(weft_sandbox_set_interrupt(L, &flag), 0);
            ASSERT_EQ_INT(eval_int(L, "local n = 0 for i = 1, 5000 do n = n + 1 end return n"), 5000);
            flag = 1; /* set before the run: the hook sees it within 1000 instructions */
            const int rc = run(L, loops[i]);
            if (rc != WEFT_EINVAL || !strstr(weft_last_error(), "test:1: interrupted"))
                TEST_FAIL_("loop %d (sandboxed %d): rc %d, \"%s\"", i, sandboxed, rc, weft_last_error());
            ASSERT_EQ_INT(lua_gettop(L), 0);
            flag = 0;
            ASSERT_EQ_INT(eval_int(L, "local n = 0 for i = 1, 5000 do n = n + 1 end return n"), 5000);
            weft_sandbox_destroy(L);
        }
    lua_State *L = new_state();
    ASSERT(L != NULL);
    ASSERT_EQ_INT(weft_sandbox_set_interrupt(L, NULL), 0);
    ASSERT_EQ_INT(eval_int(L, "return 6 * 7"), 42);
    weft_sandbox_destroy(L);
}

TEST(budget_can_be_reset_and_extended)
{
    weft_sandbox_params p = weft_sandbox_default_params();
    p.instr_limit = 100000;
    lua_State *L = NULL;
    ASSERT_EQ_INT(weft_sandbox_create(&p, &L), 0);
    const char *work = "local s = 0 for i = 1, 30000 do s = s + i end return 1";
    ASSERT_EQ_INT(eval_int(L, work), 1); /* ~4 instructions per iteration */
    ASSERT_EQ_INT(run(L, work), WEFT_ERANGE);
    ASSERT_EQ_INT(run(L, "return 1"), WEFT_ERANGE);
    ASSERT_EQ_INT(weft_sandbox_budget_add(L, 200000), 0);
    ASSERT_EQ_INT(eval_int(L, work), 1);
    ASSERT_EQ_INT(weft_sandbox_budget_reset(L, 100000), 0);
    ASSERT_EQ_INT(weft_sandbox_get_usage(L).instr_used, 0);
    ASSERT_EQ_INT(eval_int(L, work), 1);
    weft_sandbox_destroy(L);

    /* no budget at creation: a later reset installs one */
    p.instr_limit = 0;
    ASSERT_EQ_INT(weft_sandbox_create(&p, &L), 0);
    ASSERT_EQ_INT(weft_sandbox_budget_reset(L, 50000), 0);
    ASSERT_EQ_INT(run(L, "while true do end"), WEFT_ERANGE);
    weft_sandbox_destroy(L);
}

/* A coroutine the host drives (as weft run drives a script) shares the
 * state's budget; a thread made before the budget existed gets it through
 * weft_sandbox_hook_thread. */
TEST(coroutines_share_the_budget)
{
    lua_State *L = new_state();
    ASSERT(L != NULL);
    lua_State *co = lua_newthread(L);
    ASSERT_EQ_INT(luaL_loadstring(co, "local n = 0 while true do n = n + 1 "
                                      "if n % 1000 == 0 then coroutine.yield(n) end end"),
                  LUA_OK);
    int nres, rc, yields = 0;
    while ((rc = weft_sandbox_resume(co, L, 0, &nres)) == 1) {
        lua_pop(co, nres);
        yields++;
    }
    ASSERT_EQ_INT(rc, WEFT_ERANGE);
    ASSERT(strstr(weft_last_error(), "instruction budget"));
    ASSERT(yields > 10);
    lua_pop(L, 1); /* the thread */
    ASSERT_STILL_WORKS(L);
    weft_sandbox_destroy(L);

    weft_sandbox_params p = weft_sandbox_default_params();
    p.instr_limit = 0;
    ASSERT_EQ_INT(weft_sandbox_create(&p, &L), 0);
    co = lua_newthread(L); /* no hook yet */
    ASSERT_EQ_INT(weft_sandbox_budget_reset(L, 100000), 0);
    ASSERT_EQ_INT(weft_sandbox_hook_thread(co), 0);
    ASSERT_EQ_INT(luaL_loadstring(co, "while true do end"), LUA_OK);
    ASSERT_EQ_INT(weft_sandbox_resume(co, L, 0, &nres), WEFT_ERANGE);
    lua_pop(L, 1);
    weft_sandbox_destroy(L);
}

/* A new coroutine starts a fresh hook countdown: many short ones (each
 * under the hook's granularity) once ran uncounted. Now each is charged. */
TEST(short_coroutines_cannot_dodge_the_budget)
{
    lua_State *L = new_state();
    ASSERT(L != NULL);
    /* ~1e5 coroutines of a few hundred instructions: 4e7 in all, against 2e6 */
    ASSERT_EQ_INT(run(L, "for i = 1, 100000 do coroutine.wrap(function() for j = 1, 200 do end end)() end "
                         "return 1"),
                  WEFT_ERANGE);
    ASSERT(strstr(weft_last_error(), "instruction budget"));
    ASSERT_STILL_WORKS(L);
    ASSERT_EQ_INT(run(L, "for i = 1, 100000 do local co = coroutine.create(function() end) end return 1"),
                  WEFT_ERANGE);
    ASSERT_STILL_WORKS(L);
    /* a few coroutines are as cheap as ever */
    ASSERT_EQ_INT(eval_int(L, "local n = 0 for i = 1, 100 do coroutine.wrap(function() n = n + 1 end)() end "
                              "return n"),
                  100);
    weft_sandbox_destroy(L);
}

/* print's output counts against the state's output limit. */
TEST(print_output_is_capped)
{
    weft_sandbox_params p = weft_sandbox_default_params();
    ASSERT(p.output_limit > 0);
    p.output_limit = 1000;
    lua_State *L = NULL;
    ASSERT_EQ_INT(weft_sandbox_create(&p, &L), 0);
    ASSERT_EQ_INT(run(L, "local s = ('-'):rep(600) print(s) print(s) return 1"), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "output limit of 1000 bytes exceeded"));
    ASSERT_EQ_INT(eval_int(L, "return 7"), 7); /* the state still computes */
    weft_sandbox_destroy(L);
}

TEST(deep_recursion_is_an_error)
{
    static const char *const deep[] = {
        "local function f(n) return f(n + 1) + 1 end return f(1)",
        /* C-level recursion through a metamethod */
        "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x",
        "local function f() return tostring(setmetatable({}, {__tostring = f})) end return f()",
        "local s = string.rep('(', 100000) return assert(load('return ' .. s))",
        NULL,
    };
    for (int i = 0; deep[i]; i++) {
        lua_State *L = new_state();
        ASSERT(L != NULL);
        int rc = run(L, deep[i]);
        if (rc != WEFT_EINVAL && rc != WEFT_ERANGE)
            TEST_FAIL_("deep %d: rc %d, \"%s\"", i, rc, weft_last_error());
        ASSERT_EQ_INT(lua_gettop(L), 0);
        ASSERT_STILL_WORKS(L);
        weft_sandbox_destroy(L);
    }
}

TEST(errors_are_clear_and_leave_the_stack_clean)
{
    lua_State *L = new_state();
    ASSERT(L != NULL);
    ASSERT_EQ_INT(weft_sandbox_run(L, "x = = 1", 7, "@script.lua", 0), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "script.lua:1:"));
    ASSERT_EQ_INT(run(L, "local t = nil\nreturn t.field"), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "test:2:"));
    ASSERT(strstr(weft_last_error(), "index a nil value"));
    ASSERT(strstr(weft_last_error(), "stack traceback"));
    ASSERT_EQ_INT(run(L, "error({code = 1})"), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "table value"));
    ASSERT_EQ_INT(run(L, "error(setmetatable({}, {__tostring = function() return 'custom' end}))"),
                  WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "custom"));
    ASSERT_EQ_INT(lua_gettop(L), 0);
    ASSERT_EQ_INT(weft_sandbox_run(L, "return 1, 2, 3", 14, NULL, LUA_MULTRET), 0);
    ASSERT_EQ_INT(lua_gettop(L), 3);
    lua_settop(L, 0);
    /* a cap too small for the libraries is a clear error, not a crash */
    weft_sandbox_params p = weft_sandbox_default_params();
    p.mem_limit = 4096;
    lua_State *tiny = NULL;
    ASSERT_EQ_INT(weft_sandbox_create(&p, &tiny), WEFT_ERANGE);
    ASSERT(tiny == NULL);
    ASSERT(strstr(weft_last_error(), "too small"));
    weft_sandbox_destroy(L);
}

TEST(memory_is_accounted_and_returned)
{
    size_t before = weft_mem_in_use();
    lua_State *L = new_state();
    ASSERT(L != NULL);
    weft_sandbox_usage u = weft_sandbox_get_usage(L);
    ASSERT(u.mem_used > 1000 && u.mem_used < MEM_CAP);
    ASSERT(weft_mem_in_use() >= before + u.mem_used); /* through weft's allocator */
    ASSERT_EQ_INT(run(L, "big = string.rep('z', 1 << 20)"), 0);
    ASSERT(weft_sandbox_get_usage(L).mem_used > u.mem_used + (1 << 20));
    ASSERT_EQ_INT(run(L, "big = nil collectgarbage()"), 0);
    ASSERT(weft_sandbox_get_usage(L).mem_used < u.mem_used + (1 << 19));
    weft_sandbox_destroy(L);
    ASSERT_EQ_INT(weft_mem_in_use(), before);
}

TEST(unsandboxed_state_has_the_full_library)
{
    weft_sandbox_params p = weft_sandbox_default_params();
    p.sandboxed = false;
    p.instr_limit = BUDGET;
    lua_State *L = NULL;
    ASSERT_EQ_INT(weft_sandbox_create(&p, &L), 0);
    ASSERT_EQ_INT(eval_int(L, "return (io and os.getenv and require and debug) and 1 or 0"), 1);
    ASSERT_EQ_INT(run(L, "while true do end"), WEFT_ERANGE); /* limits still apply */
    weft_sandbox_destroy(L);
}

int main(void)
{
    RUN(unsafe_libraries_are_absent);
    RUN(escapes_are_refused_with_clear_errors);
    RUN(bytecode_is_refused);
    RUN(memory_bombs_hit_the_cap);
    RUN(endless_loops_exhaust_the_budget);
    RUN(time_limit_ends_endless_loops);
    RUN(the_host_can_interrupt_a_running_script);
    RUN(budget_can_be_reset_and_extended);
    RUN(coroutines_share_the_budget);
    RUN(short_coroutines_cannot_dodge_the_budget);
    RUN(print_output_is_capped);
    RUN(deep_recursion_is_an_error);
    RUN(errors_are_clear_and_leave_the_stack_clean);
    RUN(memory_is_accounted_and_returned);
    RUN(unsandboxed_state_has_the_full_library);
    TEST_DONE();
}

/* Lua states with a restricted library, a memory cap and an instruction
 * budget (see weft/sandbox.h for what a sandboxed state holds and why).
 *
 * The accounting lives in the allocator's userdata, so any thread of a state
 * finds it with lua_getallocf() — no registry lookup, nothing a script can
 * reach. */
#include "weft/sandbox.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

#define HOOK_GRANULARITY 1000

typedef struct sandbox {
    size_t mem_used, mem_peak, mem_limit;
    bool mem_hit;          /* an allocation was refused since the last pcall/resume */
    uint64_t instr_used, instr_limit;
    int granularity;       /* instructions between two hook calls */
    bool sandboxed;
    double time_limit, deadline; /* seconds; deadline in weft_now() time, 0: none */
    bool timed_out;        /* the deadline has passed (sticky) */
    size_t out_used, out_limit; /* bytes print() wrote, may write (0: no limit) */
    const volatile sig_atomic_t *interrupt; /* nonzero: the host interrupts (may be NULL) */
} sandbox;

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sandbox *sb = ud;
    size_t old = ptr ? osize : 0; /* with ptr NULL, osize is a type tag */
    if (nsize == 0) {
        weft_free(ptr);
        sb->mem_used -= old;
        return NULL;
    }
    if (nsize > old && sb->mem_limit && sb->mem_used - old + nsize > sb->mem_limit) {
        sb->mem_hit = true; /* Lua collects, retries, then raises LUA_ERRMEM */
        return NULL;
    }
    void *np = weft_realloc(ptr, nsize);
    if (!np) {
        /* Lua assumes a shrink cannot fail: keep the larger old block. */
        if (nsize <= old) np = ptr;
        else return NULL;
    }
    sb->mem_used = sb->mem_used - old + nsize;
    if (sb->mem_used > sb->mem_peak) sb->mem_peak = sb->mem_used;
    return np;
}

static sandbox *sandbox_of(lua_State *L)
{
    void *ud;
    return lua_getallocf(L, &ud) == l_alloc ? ud : NULL;
}

/* The instruction budget is spent, or the time limit passed. */
static bool budget_spent(sandbox *sb)
{
    if (!sb->timed_out && sb->deadline > 0 && weft_now() > sb->deadline) sb->timed_out = true;
    return sb->timed_out || (sb->instr_limit && sb->instr_used > sb->instr_limit);
}

/* What budget_spent() found, in words. */
static const char *spent_message(const sandbox *sb, char *buf, size_t n)
{
    if (sb->instr_limit && sb->instr_used > sb->instr_limit)
        snprintf(buf, n, "instruction budget of %llu exceeded", (unsigned long long)sb->instr_limit);
    else
        snprintf(buf, n, "time limit of %g s exceeded", sb->time_limit);
    return buf;
}

static bool is_spent_message(const char *msg)
{
    return strstr(msg, "instruction budget of") || strstr(msg, "time limit of");
}

static void count_hook(lua_State *L, lua_Debug *ar);

/* The budget is spent: raises its error in L, stickily — from now on every
 * instruction of L lands in the hook, so a pcall in the script cannot catch
 * the error and go on; so does the main thread's, which may resume L and
 * catch it there; other threads switch at their next hook call. */
static int raise_spent(lua_State *L, sandbox *sb)
{
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (main && main != L) lua_sethook(main, count_hook, LUA_MASKCOUNT, 1);
    char what[96];
    luaL_where(L, 0);
    lua_pushstring(L, spent_message(sb, what, sizeof what));
    lua_concat(L, 2);
    return lua_error(L);
}

static bool interrupted(const sandbox *sb) { return sb->interrupt && *sb->interrupt; }

/* The host's interrupt flag is set: raises "interrupted" in L, and keeps
 * doing so on every instruction while the flag stays set (a pcall in the
 * script cannot swallow it; count_hook goes back to the granularity once
 * the host has cleared it). */
static int raise_interrupted(lua_State *L)
{
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
    luaL_where(L, 0);
    lua_pushliteral(L, "interrupted");
    lua_concat(L, 2);
    return lua_error(L);
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    sandbox *sb = sandbox_of(L);
    if (!sb) return;
    const int step = lua_gethookcount(L);
    sb->instr_used += (uint64_t)step;
    if (budget_spent(sb)) raise_spent(L, sb);
    if (interrupted(sb)) raise_interrupted(L);
    if (step != sb->granularity) /* after a reset, or a granularity change */
        lua_sethook(L, count_hook, LUA_MASKCOUNT, sb->granularity);
}

static void set_granularity(sandbox *sb)
{
    uint64_t left = sb->instr_limit > sb->instr_used ? sb->instr_limit - sb->instr_used : 1;
    sb->granularity = sb->instr_limit && left < HOOK_GRANULARITY ? (int)left : HOOK_GRANULARITY;
}

static void hook(lua_State *L, sandbox *sb)
{
    lua_sethook(L, count_hook, LUA_MASKCOUNT, sb->granularity);
}

/* ---- the restricted library ---------------------------------------------- */

/* load() that only takes text: the original load is upvalue 1. */
static int safe_load(lua_State *L)
{
    const int n = lua_gettop(L);
    luaL_checkany(L, 1);
    if (lua_type(L, 1) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, 1, &len);
        if (len > 0 && s[0] == LUA_SIGNATURE[0]) {
            luaL_pushfail(L);
            lua_pushliteral(L, "load: binary chunks (bytecode) are not allowed in the sandbox");
            return 2;
        }
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    if (n >= 2) lua_pushvalue(L, 2);
    else lua_pushnil(L);
    lua_pushliteral(L, "t"); /* a function reader returning bytecode is refused here */
    if (n >= 4) lua_pushvalue(L, 4); /* env; absent means the sandbox's _G */
    lua_call(L, n >= 4 ? 4 : 3, LUA_MULTRET);
    return lua_gettop(L) - n;
}

/* collectgarbage() without the options that change the collector's mode or
 * stop it: the original is upvalue 1. */
static int safe_collectgarbage(lua_State *L)
{
    static const char *const allowed[] = {"collect", "count", "step", "isrunning", NULL};
    const char *opt = luaL_optstring(L, 1, "collect");
    for (int i = 0; allowed[i]; i++) {
        if (strcmp(opt, allowed[i]) != 0) continue;
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_insert(L, 1);
        lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
        return lua_gettop(L);
    }
    return luaL_error(L, "collectgarbage('%s') is not allowed in the sandbox", opt);
}

/* The function in upvalue 1 (the wrapped library function, or a script's
 * handler) on all the arguments; its first result. */
static int call_original(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* Lua runs a message handler at the point of the error. When the error is the
 * budget's, raised from the count hook, hooks are still off there (Lua
 * re-enables them only when the error unwinds), so a Lua handler would run
 * unmetered: `xpcall(loop, function() while true do end end)`. The sandbox's
 * xpcall wraps the handler in this C function, which skips it once the budget
 * is spent or while the host interrupts. Upvalue 1: the script's handler. */
static int xpcall_handler(lua_State *L)
{
    sandbox *sb = sandbox_of(L);
    if (sb && (budget_spent(sb) || interrupted(sb))) return 1; /* the error object as it is */
    return call_original(L);
}

static int xpcall_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    return lua_gettop(L);
}

/* xpcall(f, handler, ...) with the handler guarded; the original is upvalue 1.
 * Called with a continuation, so a script may still yield inside f. */
static int safe_xpcall(lua_State *L)
{
    const int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, xpcall_handler, 1);
    lua_replace(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_callk(L, n, LUA_MULTRET, 0, xpcall_done);
    return xpcall_done(L, LUA_OK, 0);
}

/* setmetatable() that refuses a __gc field: finalizers run with hooks off
 * (during any allocation, or at lua_close), so one could loop forever outside
 * the budget. Any non-nil __gc counts — Lua marks the object for finalization
 * when the field exists at this call, and the value can be swapped for a
 * function later. Upvalue 1: the original. */
static int safe_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        int t = lua_rawget(L, 2);
        lua_pop(L, 1);
        if (t != LUA_TNIL)
            return luaL_error(L, "setmetatable: __gc metamethods are not allowed in the sandbox");
    }
    return call_original(L);
}

/* coroutine.create and coroutine.wrap, charged: a new thread starts a fresh
 * hook countdown, so one that runs fewer than `granularity` instructions
 * would never be counted, and a script could do unbounded work in many
 * short coroutines. Each new thread is charged the countdown it starts
 * with, up front (an overcount of at most that, never an undercount).
 * Upvalue 1: the original. */
static int charged_thread(lua_State *L)
{
    sandbox *sb = sandbox_of(L);
    if (sb && (sb->instr_limit || sb->deadline > 0)) {
        sb->instr_used += (uint64_t)sb->granularity;
        if (budget_spent(sb)) return raise_spent(L, sb);
    }
    return call_original(L);
}

/* print() that counts what it writes against the state's output limit
 * (weft_sandbox_params.output_limit), checked before each piece: output
 * is the host's resource too. Otherwise Lua's print: tostring of each
 * argument, tabs between, a newline, a flush. */
static int counted_print(lua_State *L)
{
    sandbox *sb = sandbox_of(L);
    const int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        const size_t need = len + 1; /* the tab before it, or the newline after */
        if (sb && sb->out_limit && (need > sb->out_limit || sb->out_used > sb->out_limit - need))
            return luaL_error(L, "output limit of %I bytes exceeded", (lua_Integer)sb->out_limit);
        if (sb) sb->out_used += need;
        if (i > 1) fputc('\t', stdout);
        fwrite(s, 1, len, stdout);
        lua_pop(L, 1);
    }
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
}

static void wrap_global(lua_State *L, const char *name, lua_CFunction f)
{
    lua_getfield(L, -1, name);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -2, name);
}

/* Runs protected: a memory error while opening becomes an error return. */
static int open_libs(lua_State *L)
{
    if (!lua_toboolean(L, 1)) {
        luaL_openlibs(L);
        return 0;
    }
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},      {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {LUA_COLIBNAME, luaopen_coroutine},
        {NULL, NULL},
    };
    for (const luaL_Reg *lib = libs; lib->func; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    static const char *const drop[] = {"dofile", "loadfile", "warn", NULL};
    for (int i = 0; drop[i]; i++) {
        lua_pushnil(L);
        lua_setfield(L, -2, drop[i]);
    }
    wrap_global(L, "load", safe_load);
    wrap_global(L, "collectgarbage", safe_collectgarbage);
    wrap_global(L, "xpcall", safe_xpcall);
    wrap_global(L, "setmetatable", safe_setmetatable);
    lua_pushcfunction(L, counted_print);
    lua_setfield(L, -2, "print");
    lua_getfield(L, -1, LUA_COLIBNAME);
    wrap_global(L, "create", charged_thread);
    wrap_global(L, "wrap", charged_thread);
    lua_pop(L, 1);
    lua_getfield(L, -1, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    /* os: the clock and calendar only (no execute, exit, getenv, remove,
     * rename, tmpname, setlocale). luaopen_os called directly is not
     * registered anywhere, so the full table is garbage after this. */
    luaopen_os(L);
    lua_createtable(L, 0, 4);
    static const char *const os_keep[] = {"time", "clock", "date", "difftime", NULL};
    for (int i = 0; os_keep[i]; i++) {
        lua_getfield(L, -2, os_keep[i]);
        lua_setfield(L, -2, os_keep[i]);
    }
    lua_setfield(L, -3, LUA_OSLIBNAME);
    lua_pop(L, 2);
    return 0;
}

static int panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "weft: unprotected Lua error (a bug in weft): %s\n", msg ? msg : "?");
    return 0; /* Lua aborts */
}

/* ---- public -------------------------------------------------------------- */

weft_sandbox_params weft_sandbox_default_params(void)
{
    return (weft_sandbox_params){
        .sandboxed = true,
        .mem_limit = (size_t)64 << 20,
        .instr_limit = 1000000000ull,
        .output_limit = (size_t)16 << 20,
    };
}

int weft_sandbox_create(const weft_sandbox_params *params, lua_State **out)
{
    *out = NULL;
    weft_sandbox_params d = weft_sandbox_default_params();
    if (!params) params = &d;
    sandbox *sb = weft_calloc(1, sizeof *sb);
    if (!sb) return weft_error(WEFT_ENOMEM, "out of memory");
    sb->mem_limit = params->mem_limit;
    sb->instr_limit = params->instr_limit;
    sb->sandboxed = params->sandboxed;
    sb->out_limit = params->output_limit;
    sb->time_limit = params->time_limit > 0 ? params->time_limit : 0;
    if (sb->time_limit > 0) sb->deadline = weft_now() + sb->time_limit;
    set_granularity(sb);
    lua_State *L = lua_newstate(l_alloc, sb);
    if (!L) {
        bool capped = sb->mem_hit;
        weft_free(sb);
        if (capped)
            return weft_error(WEFT_ERANGE, "memory limit of %zu bytes is too small for a Lua state",
                              params->mem_limit);
        return weft_error(WEFT_ENOMEM, "out of memory creating a Lua state");
    }
    lua_atpanic(L, panic);
    lua_pushcfunction(L, open_libs);
    lua_pushboolean(L, params->sandboxed);
    int st = lua_pcall(L, 1, 0, 0);
    if (st != LUA_OK) {
        int rc = weft_sandbox_error(L, st);
        if (rc == WEFT_ERANGE)
            rc = weft_error(WEFT_ERANGE,
                            "memory limit of %zu bytes is too small for the Lua libraries",
                            params->mem_limit);
        lua_close(L);
        weft_free(sb);
        return rc;
    }
    if (sb->instr_limit || sb->deadline > 0) hook(L, sb);
    *out = L;
    return 0;
}

void weft_sandbox_destroy(lua_State *L)
{
    if (!L) return;
    sandbox *sb = sandbox_of(L);
    lua_close(L);
    weft_free(sb);
}

int weft_sandbox_error(lua_State *L, int status)
{
    if (status == LUA_OK || status == LUA_YIELD) return 0;
    sandbox *sb = sandbox_of(L);
    char tmp[96];
    const char *msg = lua_tostring(L, -1);
    if (!msg) {
        snprintf(tmp, sizeof tmp, "(error object is a %s value)", luaL_typename(L, -1));
        msg = tmp;
    }
    int rc;
    const bool mem_msg = strncmp(msg, "not enough memory", 17) == 0 ||
                         strcmp(msg, "error in error handling") == 0;
    if (sb && sb->mem_hit && (status == LUA_ERRMEM || mem_msg)) {
        rc = weft_error(WEFT_ERANGE, "memory limit of %zu bytes exceeded", sb->mem_limit);
    } else if (sb && budget_spent(sb) && (status == LUA_ERRERR || is_spent_message(msg))) {
        char what[96];
        rc = weft_error(WEFT_ERANGE, "%s", is_spent_message(msg) ? msg : spent_message(sb, what, sizeof what));
    } else if (status == LUA_ERRMEM) {
        rc = weft_error(WEFT_ENOMEM, "out of memory in Lua");
    } else {
        rc = weft_error(WEFT_EINVAL, "%s", msg);
    }
    if (sb) sb->mem_hit = false;
    lua_pop(L, 1);
    return rc;
}

/* Message handler: the error text (or its __tostring) plus a traceback. */
static int msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* A spent budget refuses work at every entry from the host, whatever the
 * entered thread's hook counter says. */
static int check_budget(lua_State *L, sandbox *sb)
{
    if (!sb || !budget_spent(sb)) return 0;
    char what[96];
    return weft_error(WEFT_ERANGE, "%s", spent_message(sb, what, sizeof what));
}

int weft_sandbox_pcall(lua_State *L, int nargs, int nresults)
{
    sandbox *sb = sandbox_of(L);
    int rc;
    if ((rc = check_budget(L, sb))) {
        lua_pop(L, nargs + 1);
        return rc;
    }
    if (sb) sb->mem_hit = false;
    if (!lua_checkstack(L, 1)) {
        lua_pop(L, nargs + 1);
        return weft_error(WEFT_ENOMEM, "Lua stack overflow");
    }
    const int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    int st = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return weft_sandbox_error(L, st);
}

int weft_sandbox_run(lua_State *L, const char *code, size_t len, const char *name,
                     int nresults)
{
    sandbox *sb = sandbox_of(L);
    if (!name) name = "=chunk";
    const char *shown = (name[0] == '=' || name[0] == '@') ? name + 1 : name;
    if (!code) return weft_error(WEFT_EINVAL, "%s: no code", shown);
    if ((!sb || sb->sandboxed) && len > 0 && code[0] == LUA_SIGNATURE[0])
        return weft_error(WEFT_EINVAL, "%s: binary chunks (bytecode) are not allowed in the sandbox",
                          shown);
    int rc;
    if ((rc = check_budget(L, sb))) return rc;
    if (sb) sb->mem_hit = false;
    int st = luaL_loadbufferx(L, code, len, name, sb && !sb->sandboxed ? "bt" : "t");
    if (st != LUA_OK) return weft_sandbox_error(L, st);
    return weft_sandbox_pcall(L, 0, nresults);
}

int weft_sandbox_resume(lua_State *co, lua_State *from, int nargs, int *nresults)
{
    sandbox *sb = sandbox_of(co);
    int rc;
    if ((rc = check_budget(co, sb))) {
        lua_pop(co, nargs);
        *nresults = 0;
        return rc;
    }
    if (sb) sb->mem_hit = false;
    int st = lua_resume(co, from, nargs, nresults);
    if (st == LUA_OK) return 0;
    if (st == LUA_YIELD) return 1;
    *nresults = 0;
    return weft_sandbox_error(co, st);
}

void weft_sandbox_charge(lua_State *L, size_t bytes)
{
    sandbox *sb = sandbox_of(L);
    if (!sb) return;
    if (sb->mem_limit && (bytes > sb->mem_limit || sb->mem_used > sb->mem_limit - bytes)) {
        sb->mem_hit = true; /* weft_sandbox_error words it as the cap's */
        lua_pushliteral(L, "not enough memory");
        lua_error(L);
    }
    sb->mem_used += bytes;
    if (sb->mem_used > sb->mem_peak) sb->mem_peak = sb->mem_used;
}

int weft_sandbox_hook_thread(lua_State *co)
{
    sandbox *sb = sandbox_of(co);
    if (!sb) return weft_error(WEFT_EINVAL, "not a weft sandbox state");
    hook(co, sb);
    return 0;
}

int weft_sandbox_set_interrupt(lua_State *L, const volatile sig_atomic_t *flag)
{
    sandbox *sb = sandbox_of(L);
    if (!sb) return weft_error(WEFT_EINVAL, "not a weft sandbox state");
    sb->interrupt = flag;
    if (flag && lua_gethook(L) != count_hook) hook(L, sb);
    return 0;
}

/* Hooks L and the main thread; the others heal on their next hook call. */
static void rehook(lua_State *L, sandbox *sb)
{
    set_granularity(sb);
    hook(L, sb);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (main && main != L) hook(main, sb);
}

int weft_sandbox_budget_reset(lua_State *L, uint64_t limit)
{
    sandbox *sb = sandbox_of(L);
    if (!sb) return weft_error(WEFT_EINVAL, "not a weft sandbox state");
    sb->instr_used = 0;
    sb->instr_limit = limit;
    rehook(L, sb);
    return 0;
}

int weft_sandbox_budget_add(lua_State *L, uint64_t more)
{
    sandbox *sb = sandbox_of(L);
    if (!sb) return weft_error(WEFT_EINVAL, "not a weft sandbox state");
    if (!sb->instr_limit) return 0; /* no budget: nothing to extend */
    sb->instr_limit = more > UINT64_MAX - sb->instr_limit ? UINT64_MAX : sb->instr_limit + more;
    rehook(L, sb);
    return 0;
}

weft_sandbox_usage weft_sandbox_get_usage(lua_State *L)
{
    weft_sandbox_usage u = {0};
    sandbox *sb = sandbox_of(L);
    if (!sb) return u;
    u.mem_used = sb->mem_used;
    u.mem_peak = sb->mem_peak;
    u.mem_limit = sb->mem_limit;
    u.instr_used = sb->instr_used;
    u.instr_limit = sb->instr_limit;
    u.time_limit = sb->time_limit;
    u.deadline = sb->deadline;
    return u;
}

/*
 * The Lua side of a run: the lua_State, tasks (coroutines) and their
 * resumption when the variables they wait on complete, and the driver that
 * runs a script to the end (see weft/dsl.h).
 */
#include <event2/event.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl_internal.h"
#include "weft/sandbox.h"

/* The one place a run's lua_State is made: the sandbox's factory, restricted
 * or not. NULL params: the whole standard library, no caps. */
static lua_State *dsl_new_state(const weft_sandbox_params *sb)
{
    weft_sandbox_params open = {.sandboxed = false, .mem_limit = 0, .instr_limit = 0};
    lua_State *L = NULL;
    return weft_sandbox_create(sb ? sb : &open, &L) == 0 ? L : NULL;
}

dsl *dsl_of(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, DSL_KEY);
    dsl *d = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return d;
}

/* ---- tasks ---- */

static void task_finish(dsl *d, lua_State *co, int status, int nres)
{
    lua_State *L = d->L;
    lua_getfield(L, LUA_REGISTRYINDEX, DSL_TASKS);
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_rawget(L, -2);
    const int task = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (status != LUA_OK) {
        /* memory cap and instruction budget errors get their own words */
        weft_sandbox_error(co, status);
        luaL_traceback(L, co, weft_last_error(), 0);
        lua_pushstring(co, weft_last_error()); /* for on_task_done */
    }
    if (d->on_task_done) d->on_task_done(d, task, co, status, nres);
    if (status != LUA_OK) lua_pop(L, 1);
    /* unanchor */
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Resumes co (suspended in get(), or new). Runs inside a protected call. */
static void task_resume(dsl *d, lua_State *co)
{
    int nres = 0;
    d->yield_ok = false;
    const int st = lua_resume(co, d->L, 0, &nres);
    if (st == LUA_YIELD) {
        lua_pop(co, nres);
        if (!d->yield_ok) {
            lua_pushstring(co, "coroutine.yield() at the top of a weft task: only v:get() "
                               "may suspend a script");
            task_finish(d, co, LUA_ERRRUN, 0);
        }
        return;
    }
    task_finish(d, co, st, nres);
}

int dsl_task_start(dsl *d, lua_State *L)
{
    luaL_checktype(L, -1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L); /* fn, co */
    lua_getfield(L, LUA_REGISTRYINDEX, DSL_TASKS);
    lua_pushvalue(L, -2);
    const int id = ++d->next_task;
    lua_pushinteger(L, id);
    lua_rawset(L, -3);
    lua_pop(L, 1);         /* fn, co */
    lua_pushvalue(L, -2);  /* fn, co, fn */
    lua_xmove(L, co, 1);   /* fn, co */
    lua_pop(L, 2);
    task_resume(d, co);
    return id;
}

/* ---- the orchestrator's listener (protected) ---- */

static int on_done_l(lua_State *L)
{
    dsl *d = lua_touserdata(L, 1);
    const lua_Integer var = lua_tointeger(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, DSL_STREAMS);
    lua_pushnil(L);
    lua_rawseti(L, -2, var);
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, DSL_WATCH); /* var -> list of REPL labels */
    if (lua_rawgeti(L, -1, var) == LUA_TTABLE && d->print_watch) {
        lua_pushnil(L);
        lua_rawseti(L, -3, var); /* watch[var] = nil; the list stays on the stack */
        const lua_Integer n = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const int label = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
            d->print_watch(d, label, (int32_t)var);
        }
    }
    lua_pop(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, DSL_WAITERS);
    if (lua_rawgeti(L, -1, var) != LUA_TTABLE) return 0;
    lua_pushnil(L);
    lua_rawseti(L, -3, var); /* waiters[var] = nil; the list stays on the stack */
    const lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_State *co = lua_tothread(L, -1);
        lua_pop(L, 1); /* still anchored by the list on the stack */
        if (co && lua_status(co) == LUA_YIELD) task_resume(d, co);
    }
    return 0;
}

/* A stream callback's error is the script's: the run fails with it (the
 * driver cancels the calls; a script waiting in get() gets the message), as
 * it would had the script called the function itself. */
static int on_text_l(lua_State *L)
{
    dsl *d = lua_touserdata(L, 1);
    const lua_Integer var = lua_tointeger(L, 2);
    size_t len;
    const char *text = lua_tolstring(L, 3, &len);
    if (d->stream_error) return 0; /* failing already: no more script code */
    lua_getfield(L, LUA_REGISTRYINDEX, DSL_STREAMS);
    if (lua_rawgeti(L, -1, var) != LUA_TTABLE) return 0;
    const lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_pushlstring(L, text, len);
        if (weft_sandbox_pcall(L, 1, 0) < 0) {
            char msg[1024];
            snprintf(msg, sizeof msg, "weft.stream callback failed: %s", weft_last_error());
            d->stream_error = weft_strdup(msg);
            if (!d->stream_error) d->stream_error = weft_strdup("weft.stream callback failed");
            break;
        }
    }
    return 0;
}

static void report_internal(lua_State *L, const char *where)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "weft: %s: %s\n", where, msg ? msg : luaL_typename(L, -1));
    lua_pop(L, 1);
}

static void listen_done(void *user, int32_t var)
{
    dsl *d = user;
    lua_State *L = d->L;
    lua_pushcfunction(L, on_done_l);
    lua_pushlightuserdata(L, d);
    lua_pushinteger(L, var);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) report_internal(L, "resuming a script");
}

static void listen_text(void *user, int32_t var, const char *text, size_t len)
{
    dsl *d = user;
    lua_State *L = d->L;
    lua_pushcfunction(L, on_text_l);
    lua_pushlightuserdata(L, d);
    lua_pushinteger(L, var);
    lua_pushlstring(L, text, len);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) report_internal(L, "streaming");
}

/* ---- creation ---- */

/* os.exit, wrapped: the status as Lua's own os.exit reads it (a bad
 * argument raises here, before anything is recorded), the dsl_on_exit hook,
 * then the original (upvalue 1) with the same arguments. */
static int os_exit_l(lua_State *L)
{
    const int status = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE)
                                           : (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
    dsl *d = dsl_of(L);
    if (d && d->on_exit) d->on_exit(d->exit_user, status);
    const int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, 0);
    return 0;
}

void dsl_on_exit(dsl *d, dsl_exit_fn fn, void *user)
{
    if (!d) return;
    d->on_exit = fn;
    d->exit_user = user;
}

static int setup_l(lua_State *L)
{
    dsl *d = lua_touserdata(L, 1);
    lua_pushlightuserdata(L, d);
    lua_setfield(L, LUA_REGISTRYINDEX, DSL_KEY);
    const char *tables[] = {DSL_WAITERS, DSL_STREAMS, DSL_TASKS, DSL_WATCH};
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
        lua_newtable(L);
        lua_setfield(L, LUA_REGISTRYINDEX, tables[i]);
    }
    lua_newtable(L);
    lua_setglobal(L, "arg");
    if (lua_getglobal(L, "os") == LUA_TTABLE) { /* not sandboxed: wrap os.exit */
        if (lua_getfield(L, -1, "exit") == LUA_TFUNCTION) {
            lua_pushcclosure(L, os_exit_l, 1);
            lua_setfield(L, -2, "exit");
        } else {
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    dsl_open_weft(L);
    return 0;
}

int dsl_create(orch *o, const weft_model *m, struct event_base *base,
               const weft_sandbox_params *sb, dsl **out)
{
    if (!o || !m || !base || !out) return weft_error(WEFT_EINVAL, "dsl_create: bad argument");
    dsl *d = weft_calloc(1, sizeof *d);
    if (!d) return weft_error(WEFT_ENOMEM, "dsl: out of memory");
    d->o = o;
    d->m = m;
    d->base = base;
    d->L = dsl_new_state(sb);
    if (!d->L) {
        weft_free(d);
        return weft_error(WEFT_ENOMEM, "dsl: cannot create a Lua state: %s", weft_last_error());
    }
    lua_pushcfunction(d->L, setup_l);
    lua_pushlightuserdata(d->L, d);
    if (lua_pcall(d->L, 1, 0, 0) != LUA_OK) {
        int rc = weft_error(WEFT_ENOMEM, "dsl: setting up Lua: %s", lua_tostring(d->L, -1));
        dsl_destroy(d);
        return rc;
    }
    orch_listener lis = {.on_text = listen_text, .on_done = listen_done, .user = d};
    orch_set_listener(o, &lis);
    if (sb && sb->sandboxed && sb->mem_limit) orch_set_max_value(o, sb->mem_limit);
    *out = d;
    return 0;
}

void dsl_destroy(dsl *d)
{
    if (!d) return;
    orch_set_listener(d->o, NULL);
    weft_sandbox_destroy(d->L);
    weft_free(d->result);
    weft_free(d->stream_error);
    weft_free(d->main_error);
    weft_free(d);
}

lua_State *dsl_lua(dsl *d) { return d ? d->L : NULL; }

const char *dsl_result(const dsl *d) { return d ? d->result : NULL; }

static int set_arg_l(lua_State *L)
{
    lua_getglobal(L, "arg");
    if (!lua_istable(L, -1)) return luaL_error(L, "the global 'arg' is not a table");
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_settable(L, -3);
    return 0;
}

int dsl_set_arg(dsl *d, const char *key, const char *value)
{
    if (!d || !key || !value) return weft_error(WEFT_EINVAL, "dsl_set_arg: bad argument");
    lua_pushcfunction(d->L, set_arg_l);
    lua_pushstring(d->L, key);
    lua_pushstring(d->L, value);
    if (lua_pcall(d->L, 2, 0, 0) != LUA_OK) {
        int rc = weft_error(WEFT_EINVAL, "%s", lua_tostring(d->L, -1));
        lua_pop(d->L, 1);
        return rc;
    }
    return 0;
}

/* ---- running a script ---- */

void dsl_loop_once(dsl *d) { event_base_loop(d->base, EVLOOP_ONCE); }

static void main_done(dsl *d, int task, lua_State *co, int status, int nres)
{
    if (task != d->main_task) return;
    if (status == LUA_OK) {
        d->main_status = 1;
        weft_free(d->result);
        d->result = NULL;
        if (nres > 0 && lua_type(co, -nres) == LUA_TSTRING) d->result = weft_strdup(lua_tostring(co, -nres));
        lua_pop(co, nres);
        return;
    }
    d->main_status = -1;
    const char *tb = lua_tostring(d->L, -1);
    fprintf(stderr, "weft run: %s\n", tb ? tb : "error");
    weft_free(d->main_error);
    d->main_error = weft_strdup(tb ? tb : "error");
}

static int start_main_l(lua_State *L)
{
    dsl *d = lua_touserdata(L, 1);
    lua_pushvalue(L, 2);
    d->main_task = d->next_task + 1;
    dsl_task_start(d, L);
    return 0;
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg; /* only ends event_base_loop's wait */
}

/* Drives the loop until the script and its graph are done. Past the Lua
 * state's time limit (weft_sandbox_params.time_limit) the calls still to
 * come are cancelled: the Lua hook ends a script that is running, this ends
 * one that waits on its calls. */
static int run_loaded(dsl *d)
{
    lua_State *L = d->L;
    const weft_sandbox_usage u = weft_sandbox_get_usage(L);
    struct event *wake = NULL;
    if (u.deadline > 0 && (wake = evtimer_new(d->base, wake_cb, NULL))) {
        const double left = u.deadline - weft_now() + 0.001;
        struct timeval tv = {.tv_sec = left > 0 ? (time_t)left : 0,
                             .tv_usec = left > 0 ? (suseconds_t)((left - (double)(time_t)left) * 1e6) : 0};
        evtimer_add(wake, &tv);
    }
    bool timed_out = false;
    char limit_msg[96];
    snprintf(limit_msg, sizeof limit_msg, "time limit of %g s exceeded", u.time_limit);
    d->main_status = 0;
    weft_free(d->result); /* a failed run has no result: not the last one's */
    d->result = NULL;
    weft_free(d->stream_error);
    d->stream_error = NULL;
    weft_free(d->main_error);
    d->main_error = NULL;
    d->on_task_done = main_done;
    lua_pushcfunction(L, start_main_l);
    lua_pushlightuserdata(L, d);
    lua_rotate(L, -3, 2); /* start, d, fn */
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        int rc = weft_error(WEFT_EINVAL, "%s", lua_tostring(L, -1));
        fprintf(stderr, "weft run: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        if (wake) event_free(wake);
        return rc;
    }
    orch_flush(d->o);
    bool cancelled = false;
    for (;;) {
        if (u.deadline > 0 && !timed_out && !orch_idle(d->o) && weft_now() > u.deadline) {
            /* the waiting script resumes into the limit's error */
            timed_out = true;
            orch_cancel_all(d->o, limit_msg);
            cancelled = true;
        }
        if (d->main_status < 0 && !cancelled) {
            orch_cancel_all(d->o, "the script failed");
            cancelled = true;
        }
        if (d->stream_error && !cancelled) { /* a waiting script resumes into the error */
            orch_cancel_all(d->o, d->stream_error);
            cancelled = true;
        }
        if (d->main_status != 0 && orch_idle(d->o)) break;
        if (d->main_status == 0 && orch_idle(d->o)) {
            fprintf(stderr, "weft run: the script is suspended but nothing it waits for is "
                            "running\n");
            d->main_status = -1;
            weft_error(WEFT_EINVAL, "the script is suspended but nothing it waits for is running");
            break;
        }
        dsl_loop_once(d);
    }
    d->on_task_done = NULL;
    if (wake) event_free(wake);
    if (d->main_status < 0 && d->main_error) /* the calls it left ran since: their errors are not the run's */
        weft_error(WEFT_EINVAL, "%s", d->main_error);
    if (d->stream_error && d->main_status > 0) { /* the script had ended before the callback failed */
        d->main_status = -1;
        weft_error(WEFT_EINVAL, "%s", d->stream_error);
    }
    if (timed_out && d->main_status > 0) { /* the script had ended; calls it left were cut */
        d->main_status = -1;
        fprintf(stderr, "weft run: %s (calls still running were cancelled)\n", limit_msg);
        weft_error(WEFT_ERANGE, "%s (calls still running were cancelled)", limit_msg);
    }
    return d->main_status > 0 ? 0 : WEFT_EINVAL;
}

int dsl_run_file(dsl *d, const char *path)
{
    if (!d || !path) return weft_error(WEFT_EINVAL, "dsl_run_file: bad argument");
    if (luaL_loadfilex(d->L, path, "t") != LUA_OK) { /* text only: no bytecode */
        int rc = weft_error(WEFT_EINVAL, "%s", lua_tostring(d->L, -1));
        fprintf(stderr, "weft run: %s\n", lua_tostring(d->L, -1));
        lua_pop(d->L, 1);
        return rc;
    }
    return run_loaded(d);
}

int dsl_run_string(dsl *d, const char *code, const char *chunkname)
{
    if (!d || !code) return weft_error(WEFT_EINVAL, "dsl_run_string: bad argument");
    if (luaL_loadbufferx(d->L, code, strlen(code), chunkname ? chunkname : "=(string)", "t") !=
        LUA_OK) {
        int rc = weft_error(WEFT_EINVAL, "%s", lua_tostring(d->L, -1));
        fprintf(stderr, "weft run: %s\n", lua_tostring(d->L, -1));
        lua_pop(d->L, 1);
        return rc;
    }
    return run_loaded(d);
}

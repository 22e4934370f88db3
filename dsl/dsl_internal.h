/* dsl/dsl_internal.h — what the Lua module, the task driver and the REPL
 * share. Loop thread only. */
#ifndef WEFT_DSL_INTERNAL_H
#define WEFT_DSL_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>

#include "weft/dsl.h"

/* Registry keys. */
#define DSL_KEY "weft.dsl"         /* light userdata: the dsl */
#define DSL_WAITERS "weft.waiters" /* var id -> array of threads suspended in get() */
#define DSL_STREAMS "weft.streams" /* var id -> array of stream functions */
#define DSL_TASKS "weft.tasks"     /* thread -> task id (anchors running tasks) */
#define DSL_WATCH "weft.watch"     /* var id -> list of REPL labels, printed when done */
#define DSL_VAR_MT "weft.Var"
#define DSL_FN_MT "weft.Fn"

typedef struct dsl dsl;

/* Called when a task's coroutine ends: status is LUA_OK (its nres results
 * are on top of co's stack) or an error (message with traceback on top of
 * the main state). */
typedef void (*dsl_task_done_fn)(dsl *d, int task, struct lua_State *co, int status, int nres);

struct dsl {
    lua_State *L;
    orch *o;
    const weft_model *m;
    struct event_base *base;
    dsl_task_done_fn on_task_done;
    int main_task;   /* id of the running script's task, 0 if none */
    int main_status; /* 0 running, 1 ended, -1 failed */
    int next_task;
    bool yield_ok;   /* set by get() right before it yields */
    void (*print_watch)(dsl *d, int label, int32_t var); /* REPL */
    char *result;    /* the script's first return value as text, or NULL */
    char *stream_error; /* a weft.stream callback failed: the run fails with this */
    char *main_error;   /* the script's error (with its traceback), or NULL; kept because
                           the calls it left may set weft_last_error() before the run ends */
    dsl_exit_fn on_exit; /* dsl_on_exit; NULL: none */
    void *exit_user;
};

dsl *dsl_of(lua_State *L);
/* Opens the weft module into L (global `weft`). Protected-call it. */
int dsl_open_weft(lua_State *L);
/* Pops the value on top and appends it to registry[table][id], a list
 * made on first use. */
void dsl_list_append(lua_State *L, const char *table, int32_t id);
/* Pushes a new Var userdata for var id. */
void dsl_push_var(lua_State *L, int32_t id);
/* Starts fn (on top of L) as a task; returns its id. Must run inside a
 * protected call. */
int dsl_task_start(dsl *d, lua_State *L);
/* Drives the loop once (blocking). */
void dsl_loop_once(dsl *d);

#endif

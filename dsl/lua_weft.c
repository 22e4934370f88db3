/*
 * The Lua module `weft`: semantic functions (templates parsed once into
 * parts), variables as userdata holding an orchestrator id, and the calls
 * that build the graph (see weft/dsl.h). Every function here checks its
 * arguments before touching the orchestrator.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/dsl_internal.h"
#include "weft/sandbox.h"

/* ---- templates ---- */

typedef struct tpart {
    char *text; /* literal, or NULL for a placeholder */
    size_t len;
    char *name; /* placeholder name */
} tpart;

typedef struct tmpl {
    tpart *parts;
    int n;
} tmpl;

typedef struct fout {
    char *name;
    weft_sampling sp;
    int32_t max_tokens;
    char **stop;
    int n_stop;
    bool ignore_eos;
    int32_t n; /* completions (1, or a list of n variables) */
    int where; /* raw: index of its part; chat: index of its assistant message */
} fout;

typedef struct fn {
    char *name, *fn_id;
    bool chat;
    tmpl raw;
    int n_msgs;
    char **roles;
    tmpl *msgs;
    fout *outs; /* in template order */
    int n_outs;
    char **inputs;
    int n_inputs;
} fn;

static void tmpl_free(tmpl *t)
{
    for (int i = 0; i < t->n; i++) {
        free(t->parts[i].text);
        free(t->parts[i].name);
    }
    free(t->parts);
    t->parts = NULL;
    t->n = 0;
}

static void fn_free(fn *f)
{
    free(f->name);
    free(f->fn_id);
    tmpl_free(&f->raw);
    for (int i = 0; i < f->n_msgs; i++) {
        free(f->roles[i]);
        tmpl_free(&f->msgs[i]);
    }
    free(f->roles);
    free(f->msgs);
    for (int i = 0; i < f->n_outs; i++) {
        free(f->outs[i].name);
        for (int k = 0; k < f->outs[i].n_stop; k++) free(f->outs[i].stop[k]);
        free(f->outs[i].stop);
    }
    free(f->outs);
    for (int i = 0; i < f->n_inputs; i++) free(f->inputs[i]);
    free(f->inputs);
    memset(f, 0, sizeof *f);
}

static int tmpl_add(tmpl *t, const char *text, size_t len, const char *name, size_t nlen)
{
    tpart *np = realloc(t->parts, ((size_t)t->n + 1) * sizeof *np);
    if (!np) return -1;
    t->parts = np;
    tpart *p = &t->parts[t->n];
    memset(p, 0, sizeof *p);
    if (name) {
        p->name = strndup(name, nlen);
        if (!p->name) return -1;
    } else {
        p->text = strndup(text, len); /* templates hold no NUL byte (refused) */
        if (!p->text) return -1;
        p->len = len;
    }
    t->n++;
    return 0;
}

#define TMPL_MAX_PLACEHOLDERS 4096
#define TMPL_MAX_PLACEHOLDERS_S "4096"

/* Splits s into literal text and {{name}} placeholders. Returns NULL or an
 * error message (static). A "{{" not followed by name}} is literal text. */
static const char *tmpl_parse(const char *s, size_t n, tmpl *t)
{
    size_t lit = 0, i = 0, n_names = 0;
    while (i < n) {
        if (i + 1 < n && s[i] == '{' && s[i + 1] == '{') {
            size_t j = i + 2;
            while (j < n && s[j] == ' ') j++;
            const size_t name_at = j;
            while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '_')) j++;
            const size_t name_len = j - name_at;
            while (j < n && s[j] == ' ') j++;
            if (name_len > 0 && !isdigit((unsigned char)s[name_at]) && j + 1 < n && s[j] == '}' &&
                s[j + 1] == '}') {
                if (++n_names > TMPL_MAX_PLACEHOLDERS) /* names are looked up by scanning */
                    return "too many placeholders in one template (at most " TMPL_MAX_PLACEHOLDERS_S ")";
                if ((i > lit && tmpl_add(t, s + lit, i - lit, NULL, 0) < 0) ||
                    tmpl_add(t, NULL, 0, s + name_at, name_len) < 0)
                    return "out of memory";
                i = lit = j + 2;
                continue;
            }
        }
        i++;
    }
    if (n > lit && tmpl_add(t, s + lit, n - lit, NULL, 0) < 0) return "out of memory";
    return NULL;
}

/* ---- reading an fn spec ---- */

static bool is_output(const fn *f, const char *name)
{
    for (int i = 0; i < f->n_outs; i++)
        if (strcmp(f->outs[i].name, name) == 0) return true;
    return false;
}

static int out_index(const fn *f, const char *name)
{
    for (int i = 0; i < f->n_outs; i++)
        if (strcmp(f->outs[i].name, name) == 0) return i;
    return -1;
}

static void add_input_name(lua_State *L, fn *f, const char *name)
{
    if (is_output(f, name)) return;
    for (int i = 0; i < f->n_inputs; i++)
        if (strcmp(f->inputs[i], name) == 0) return;
    char **ni = realloc(f->inputs, ((size_t)f->n_inputs + 1) * sizeof *ni);
    if (!ni || !(ni[f->n_inputs] = strdup(name))) {
        if (ni) f->inputs = ni;
        luaL_error(L, "out of memory");
    }
    f->inputs = ni;
    f->n_inputs++;
}

static const char *const out_keys[] = {"max_tokens", "stop", "temperature", "top_k", "top_p",
                                       "min_p", "repeat_penalty", "repeat_last_n", "seed",
                                       "ignore_eos", "n", NULL};

/* Reads outputs[name] (a table of sampling options, or true) at index idx. */
static void read_out(lua_State *L, int idx, fout *o)
{
    o->sp = weft_sampling_default();
    o->sp.temperature = 0.0f; /* greedy unless asked: reproducible, resumable */
    o->max_tokens = 128;
    o->n = 1;
    if (lua_isboolean(L, idx)) {
        if (!lua_toboolean(L, idx)) luaL_error(L, "weft.fn: outputs.%s must be true or a table of options", o->name);
        return;
    }
    if (!lua_istable(L, idx))
        luaL_error(L, "weft.fn: outputs.%s must be a table of options", o->name);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        bool known = false;
        for (int i = 0; k && out_keys[i]; i++) known |= strcmp(k, out_keys[i]) == 0;
        if (!known)
            luaL_error(L, "weft.fn: outputs.%s: unknown option '%s'", o->name,
                       k ? k : luaL_typename(L, -2));
        lua_pop(L, 1);
    }
/* a number in [lo, hi] (NaN is not): converting one out of its type's range
 * would be undefined */
#define NUM_IN(key, dst, cast, lo, hi)                                                             \
    if (lua_getfield(L, idx, key) != LUA_TNIL) {                                                 \
        const lua_Number x_ = lua_tonumber(L, -1);                                                \
        if (!lua_isnumber(L, -1) || !(x_ >= (lo) && x_ <= (hi)))                                  \
            luaL_error(L, "weft.fn: outputs.%s.%s must be a number in %f..%f", o->name, key,     \
                       (lua_Number)(lo), (lua_Number)(hi));                                       \
        dst = (cast)x_;                                                                           \
    }                                                                                             \
    lua_pop(L, 1)
#define NUM(key, dst, cast) NUM_IN(key, dst, cast, -1e30, 1e30)
    lua_Number mt = o->max_tokens;
    NUM("max_tokens", mt, lua_Number);
    if (!(mt >= 1 && mt <= 1e6)) luaL_error(L, "weft.fn: outputs.%s.max_tokens must be in 1..1e6", o->name);
    o->max_tokens = (int32_t)mt;
    NUM("temperature", o->sp.temperature, float);
    NUM_IN("top_k", o->sp.top_k, int32_t, 0, 1e9);
    NUM("top_p", o->sp.top_p, float);
    NUM("min_p", o->sp.min_p, float);
    NUM("repeat_penalty", o->sp.repeat_penalty, float);
    NUM_IN("repeat_last_n", o->sp.repeat_last_n, int32_t, 0, 1 << 20);
    NUM_IN("seed", o->sp.seed, uint64_t, 0, 18446744073709549568.0); /* the largest double below 2^64 */
    lua_Number forks = 1;
    NUM("n", forks, lua_Number);
    if (forks < 1 || forks > ORCH_MAX_N || forks != (int32_t)forks)
        luaL_error(L, "weft.fn: outputs.%s.n must be an integer in 1..%d", o->name, ORCH_MAX_N);
    o->n = (int32_t)forks;
#undef NUM
#undef NUM_IN
    if (lua_getfield(L, idx, "ignore_eos") != LUA_TNIL) o->ignore_eos = lua_toboolean(L, -1);
    lua_pop(L, 1);
    const int t = lua_getfield(L, idx, "stop");
    if (t == LUA_TSTRING) {
        o->stop = calloc(1, sizeof *o->stop);
        if (!o->stop || !(o->stop[0] = strdup(lua_tostring(L, -1)))) luaL_error(L, "out of memory");
        o->n_stop = 1;
    } else if (t == LUA_TTABLE) {
        const lua_Integer n = luaL_len(L, -1);
        if (n > 16) luaL_error(L, "weft.fn: outputs.%s.stop: at most 16 stop strings", o->name);
        o->stop = calloc((size_t)n + 1, sizeof *o->stop);
        if (!o->stop) luaL_error(L, "out of memory");
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                luaL_error(L, "weft.fn: outputs.%s.stop must hold strings", o->name);
            if (!(o->stop[o->n_stop] = strdup(lua_tostring(L, -1)))) luaL_error(L, "out of memory");
            o->n_stop++;
            lua_pop(L, 1);
        }
    } else if (t != LUA_TNIL) {
        luaL_error(L, "weft.fn: outputs.%s.stop must be a string or a list of strings", o->name);
    }
    lua_pop(L, 1);
}

static int part_of(const tmpl *t, const char *name, int *count)
{
    int at = -1;
    *count = 0;
    for (int i = 0; i < t->n; i++)
        if (t->parts[i].name && strcmp(t->parts[i].name, name) == 0) {
            if (at < 0) at = i;
            (*count)++;
        }
    return at;
}

static int cmp_out(const void *a, const void *b)
{
    const fout *x = a, *y = b;
    return (x->where > y->where) - (x->where < y->where);
}

/* Builds a raw (template) fn: each output's position, inputs in order. */
static void fn_build_raw(lua_State *L, fn *f)
{
    /* an output is generated at its first placeholder; later ones repeat it */
    for (int k = 0; k < f->n_outs; k++) {
        int count;
        f->outs[k].where = part_of(&f->raw, f->outs[k].name, &count);
        if (count == 0)
            luaL_error(L, "weft.fn: output '%s' does not appear in the template", f->outs[k].name);
    }
    qsort(f->outs, (size_t)f->n_outs, sizeof *f->outs, cmp_out);
    const int last = f->outs[f->n_outs - 1].where;
    for (int i = 0; i < last; i++)
        if (f->raw.parts[i].name) add_input_name(L, f, f->raw.parts[i].name);
}

/* Builds a chat fn from messages at index idx. */
static void fn_build_chat(lua_State *L, fn *f, int idx)
{
    const lua_Integer n = luaL_len(L, idx);
    if (n < 1 || n > 256) luaL_error(L, "weft.fn: messages must hold 1 to 256 messages");
    f->roles = calloc((size_t)n, sizeof *f->roles);
    f->msgs = calloc((size_t)n, sizeof *f->msgs);
    if (!f->roles || !f->msgs) luaL_error(L, "out of memory");
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, idx, i) != LUA_TTABLE)
            luaL_error(L, "weft.fn: messages[%d] must be a table {role=, content=}", (int)i);
        lua_getfield(L, -1, "role");
        lua_getfield(L, -2, "content");
        if (!lua_isstring(L, -2) || !lua_isstring(L, -1))
            luaL_error(L, "weft.fn: messages[%d] needs string role and content", (int)i);
        const char *role = lua_tostring(L, -2);
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
            luaL_error(L, "weft.fn: messages[%d].role must be system, user or assistant", (int)i);
        size_t cl;
        const char *content = lua_tolstring(L, -1, &cl);
        if (memchr(content, 0, cl)) luaL_error(L, "weft.fn: messages[%d].content holds a NUL byte", (int)i);
        f->roles[i - 1] = strdup(role);
        f->n_msgs = (int)i;
        if (!f->roles[i - 1]) luaL_error(L, "out of memory");
        const char *err = tmpl_parse(content, cl, &f->msgs[i - 1]);
        if (err) luaL_error(L, "weft.fn: %s", err);
        lua_pop(L, 3);
    }
    /* an output is generated as the first assistant message that is exactly
     * its placeholder; its other placeholders (later) repeat its value */
    for (int k = 0; k < f->n_outs; k++) f->outs[k].where = -1;
    for (int m = 0; m < f->n_msgs; m++) {
        const tmpl *t = &f->msgs[m];
        const int k = t->n == 1 && t->parts[0].name && strcmp(f->roles[m], "assistant") == 0
                          ? out_index(f, t->parts[0].name)
                          : -1;
        if (k >= 0 && f->outs[k].where < 0) f->outs[k].where = m;
    }
    for (int k = 0; k < f->n_outs; k++) {
        if (f->outs[k].where >= 0) continue;
        if (f->n_outs != 1)
            luaL_error(L, "weft.fn: with several outputs, each needs an assistant message "
                          "'{{%s}}' where it is generated", f->outs[k].name);
        f->outs[k].where = f->n_msgs; /* the reply to every message */
    }
    for (int k = 0; k < f->n_outs; k++)
        if (f->outs[k].where == 0)
            luaL_error(L, "weft.fn: output '%s' is generated by the first message: a call needs a "
                          "prompt before it", f->outs[k].name);
    for (int m = 0; m < f->n_msgs; m++) {
        const tmpl *t = &f->msgs[m];
        for (int i = 0; i < t->n; i++) {
            if (!t->parts[i].name) continue;
            const int k = out_index(f, t->parts[i].name);
            if (k < 0) add_input_name(L, f, t->parts[i].name);
            else if (f->outs[k].where > m)
                luaL_error(L, "weft.fn: output '%s' is used before the message that generates it",
                           t->parts[i].name);
        }
    }
    qsort(f->outs, (size_t)f->n_outs, sizeof *f->outs, cmp_out);
}

/* Later outputs' prompts hold earlier outputs: only the last can fork. */
static void check_forks(lua_State *L, const fn *f)
{
    for (int k = 0; k + 1 < f->n_outs; k++)
        if (f->outs[k].n > 1)
            luaL_error(L, "weft.fn: output '%s' has n > 1, so it must be the function's last output",
                       f->outs[k].name);
}

static int fn_gc(lua_State *L)
{
    fn *f = luaL_checkudata(L, 1, DSL_FN_MT);
    fn_free(f);
    return 0;
}

/* weft.fn{template=|messages=, outputs={...}, name=} */
static int l_fn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    fn *f = lua_newuserdatauv(L, sizeof *f, 0);
    memset(f, 0, sizeof *f);
    luaL_setmetatable(L, DSL_FN_MT); /* from here __gc frees what is built */
    const int fi = lua_gettop(L);
    lua_getfield(L, 1, "template");
    lua_getfield(L, 1, "messages");
    const bool has_t = !lua_isnil(L, -2), has_m = !lua_isnil(L, -1);
    if (has_t == has_m) return luaL_error(L, "weft.fn: give exactly one of 'template' and 'messages'");
    if (has_t && !lua_isstring(L, -2)) return luaL_error(L, "weft.fn: 'template' must be a string");
    if (has_m && !lua_istable(L, -1)) return luaL_error(L, "weft.fn: 'messages' must be a list");
    const int ti = fi + 1, mi = fi + 2;
    lua_getfield(L, 1, "outputs");
    if (!lua_istable(L, -1)) return luaL_error(L, "weft.fn: 'outputs' must be a table {name = {options}}");
    const int oi = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, oi)) {
        if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "weft.fn: output names must be strings");
        fout *no = realloc(f->outs, ((size_t)f->n_outs + 1) * sizeof *no);
        if (!no) return luaL_error(L, "out of memory");
        f->outs = no;
        memset(&f->outs[f->n_outs], 0, sizeof *no);
        f->outs[f->n_outs].name = strdup(lua_tostring(L, -2));
        f->n_outs++;
        if (!f->outs[f->n_outs - 1].name) return luaL_error(L, "out of memory");
        read_out(L, lua_gettop(L), &f->outs[f->n_outs - 1]);
        lua_pop(L, 1);
    }
    if (f->n_outs == 0) return luaL_error(L, "weft.fn: at least one output is needed");
    f->chat = has_m;
    if (has_t) {
        size_t tl;
        const char *t = lua_tolstring(L, ti, &tl);
        if (memchr(t, 0, tl)) return luaL_error(L, "weft.fn: the template holds a NUL byte");
        const char *err = tmpl_parse(t, tl, &f->raw);
        if (err) return luaL_error(L, "weft.fn: %s", err);
        fn_build_raw(L, f);
    } else {
        fn_build_chat(L, f, mi);
    }
    check_forks(L, f);
    /* identity for call keys: the template text or the messages */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (has_t) {
        lua_pushvalue(L, ti);
        luaL_addvalue(&b);
    } else {
        for (int m = 0; m < f->n_msgs; m++) {
            luaL_addstring(&b, f->roles[m]);
            luaL_addchar(&b, '\x1e'); /* not NUL: fn_id is a C string (templates hold no NUL) */
            for (int i = 0; i < f->msgs[m].n; i++) {
                const tpart *p = &f->msgs[m].parts[i];
                if (p->name) {
                    luaL_addstring(&b, "{{");
                    luaL_addstring(&b, p->name);
                    luaL_addstring(&b, "}}");
                } else {
                    luaL_addlstring(&b, p->text, p->len);
                }
            }
            luaL_addchar(&b, '\x1e');
        }
    }
    luaL_pushresult(&b);
    f->fn_id = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, 1, "name");
    if (!lua_isnil(L, -1) && !lua_isstring(L, -1)) return luaL_error(L, "weft.fn: 'name' must be a string");
    f->name = strdup(lua_isnil(L, -1) ? f->outs[0].name : lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!f->fn_id || !f->name) return luaL_error(L, "out of memory");
    /* the parts and fn_id hold about the template twice, outside the Lua heap */
    weft_sandbox_charge(L, 2 * strlen(f->fn_id) + 256);
    lua_settop(L, fi);
    return 1;
}

/* ---- variables ---- */

typedef struct lvar {
    int32_t id;
} lvar;

void dsl_push_var(lua_State *L, int32_t id)
{
    lvar *v = lua_newuserdatauv(L, sizeof *v, 0);
    v->id = id;
    luaL_setmetatable(L, DSL_VAR_MT);
}

static int32_t check_var(lua_State *L, int idx)
{
    const lvar *v = luaL_checkudata(L, idx, DSL_VAR_MT);
    return v->id;
}

static lvar *test_var(lua_State *L, int idx) { return luaL_testudata(L, idx, DSL_VAR_MT); }

/* ---- calling an fn ---- */

typedef struct segbuf {
    orch_seg *s;
    int n, cap;
} segbuf;

static void seg_push(lua_State *L, segbuf *b, const char *text, size_t len, int32_t var)
{
    if (b->n == b->cap) {
        int nc = b->cap ? 2 * b->cap : 16;
        orch_seg *ns = realloc(b->s, (size_t)nc * sizeof *ns);
        if (!ns) luaL_error(L, "out of memory");
        b->s = ns;
        b->cap = nc;
    }
    b->s[b->n++] = (orch_seg){.text = text, .len = len, .var = var};
}

/* Appends the segments of template t (parts [0, end)) with placeholders
 * resolved: inputs from the args table at ai, outputs from out_vars. The
 * text pointers borrow from f and from strings anchored in args. */
static void render_parts(lua_State *L, const fn *f, const tmpl *t, int end, int ai,
                         const int32_t *out_vars, segbuf *b)
{
    for (int i = 0; i < end; i++) {
        const tpart *p = &t->parts[i];
        if (!p->name) {
            seg_push(L, b, p->text, p->len, -1);
            continue;
        }
        const int k = out_index(f, p->name);
        if (k >= 0) {
            if (out_vars[k] < 0) luaL_error(L, "internal: output '%s' used before it is made", p->name);
            seg_push(L, b, NULL, 0, out_vars[k]);
            continue;
        }
        lua_pushstring(L, p->name); /* the value is anchored by the private inputs table (check_args) */
        lua_rawget(L, ai);
        const lvar *v = test_var(L, -1);
        if (v) {
            seg_push(L, b, NULL, 0, v->id);
        } else {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            seg_push(L, b, s, len, -1);
        }
        lua_pop(L, 1);
    }
}

/* Checks the inputs and replaces args at ai with a private table of them:
 * each input read once (an __index metamethod runs once), numbers as their
 * text, strings and variables as they are. The rendered segments borrow
 * their strings from this table, which the stack anchors; the caller's
 * table is left as it was. */
static void check_args(lua_State *L, const fn *f, int ai)
{
    lua_createtable(L, 0, f->n_inputs);
    const int ci = lua_gettop(L);
    if (!lua_istable(L, ai)) {
        /* f(x) for a function with one input */
        if (f->n_inputs != 1)
            return (void)luaL_error(L, "%s: call it with a table of its inputs {%s%s}", f->name,
                                    f->n_inputs ? f->inputs[0] : "", f->n_inputs > 1 ? "=..., ..." : "");
        lua_newtable(L);
        lua_pushvalue(L, ai);
        lua_setfield(L, -2, f->inputs[0]);
        lua_replace(L, ai);
    }
    for (int i = 0; i < f->n_inputs; i++) {
        lua_getfield(L, ai, f->inputs[i]);
        const int t = lua_type(L, -1);
        if (t == LUA_TNIL) luaL_error(L, "%s: missing input '%s'", f->name, f->inputs[i]);
        if (t == LUA_TNUMBER) {
            lua_pushstring(L, lua_tostring(L, -1));
            lua_replace(L, -2);
        } else if (t == LUA_TSTRING) {
            size_t len;
            const char *v = lua_tolstring(L, -1, &len);
            if (memchr(v, 0, len)) luaL_error(L, "%s: input '%s' holds a NUL byte", f->name, f->inputs[i]);
        } else if (!test_var(L, -1)) {
            luaL_error(L, "%s: input '%s' must be a string or a weft variable, not %s", f->name,
                       f->inputs[i], luaL_typename(L, -1));
        }
        lua_setfield(L, ci, f->inputs[i]);
    }
    lua_pushnil(L);
    while (lua_next(L, ai)) {
        lua_pop(L, 1);
        bool known = false;
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        for (int i = 0; k && i < f->n_inputs && !known; i++) known = strcmp(k, f->inputs[i]) == 0;
        if (!known) luaL_error(L, "%s: '%s' is not an input of this function", f->name, k ? k : "?");
    }
    lua_replace(L, ai); /* the private table takes the arguments' place */
}

typedef struct call_scratch {
    segbuf segs;
    int n_msegs;
    segbuf *msegs;
    orch_msg *msgs;
    int32_t *out_vars;
} call_scratch;

static int scratch_gc(lua_State *L)
{
    call_scratch *s = lua_touserdata(L, 1);
    free(s->segs.s);
    for (int i = 0; s->msegs && i < s->n_msegs; i++) free(s->msegs[i].s);
    free(s->msegs);
    free(s->msgs);
    free(s->out_vars);
    memset(s, 0, sizeof *s);
    return 0;
}

/* Scratch memory on the Lua stack, freed by __gc even when an error unwinds. */
static call_scratch *push_scratch(lua_State *L)
{
    call_scratch *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    lua_newtable(L);
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    return s;
}

/* Bytes of literal text in segs: what the orchestrator copies of them. */
static size_t segs_bytes(const segbuf *b)
{
    size_t n = 0;
    for (int i = 0; i < b->n; i++) n += b->s[i].len;
    return n;
}

/* What the orchestrator keeps of one call or variable besides its text. */
#define CALL_OVERHEAD 512

static int fn_call(lua_State *L)
{
    const fn *f = luaL_checkudata(L, 1, DSL_FN_MT);
    if (lua_gettop(L) < 2) return luaL_error(L, "%s: missing its inputs", f->name);
    lua_settop(L, 2);
    check_args(L, f, 2);
    dsl *d = dsl_of(L);
    call_scratch *s = push_scratch(L);
    s->out_vars = malloc((size_t)f->n_outs * sizeof *s->out_vars);
    if (f->chat) {
        s->msegs = calloc((size_t)f->n_msgs + 1, sizeof *s->msegs);
        s->msgs = calloc((size_t)f->n_msgs + 1, sizeof *s->msgs);
        if (s->msegs) s->n_msegs = f->n_msgs + 1;
    }
    if (!s->out_vars || (f->chat && (!s->msegs || !s->msgs))) return luaL_error(L, "out of memory");
    for (int k = 0; k < f->n_outs; k++) s->out_vars[k] = -1;
    for (int k = 0; k < f->n_outs; k++) {
        const fout *o = &f->outs[k];
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", f->name, strcmp(f->name, o->name) ? "." : "",
                 strcmp(f->name, o->name) ? o->name : "");
        orch_call_spec spec = {.name = name, .fn_id = f->fn_id, .sampling = o->sp,
                               .max_tokens = o->max_tokens, .stop = (const char *const *)o->stop,
                               .n_stop = o->n_stop, .ignore_eos = o->ignore_eos, .n = o->n};
        if (f->chat) {
            for (int m = 0; m < o->where; m++) {
                s->msegs[m].n = 0;
                render_parts(L, f, &f->msgs[m], f->msgs[m].n, 2, s->out_vars, &s->msegs[m]);
                s->msgs[m] = (orch_msg){f->roles[m], s->msegs[m].s, s->msegs[m].n};
            }
            spec.msgs = s->msgs;
            spec.n_msgs = o->where;
            size_t bytes = CALL_OVERHEAD;
            for (int m = 0; m < o->where; m++) bytes += segs_bytes(&s->msegs[m]);
            weft_sandbox_charge(L, bytes); /* the host's copies count against the cap */
        } else {
            s->segs.n = 0;
            render_parts(L, f, &f->raw, o->where, 2, s->out_vars, &s->segs);
            spec.segs = s->segs.s;
            spec.n_segs = s->segs.n;
            if (spec.n_segs == 0) return luaL_error(L, "%s: the prompt of '%s' is empty", f->name, o->name);
            weft_sandbox_charge(L, CALL_OVERHEAD + segs_bytes(&s->segs));
        }
        if (orch_call(d->o, &spec, &s->out_vars[k]) < 0)
            return luaL_error(L, "%s: %s", f->name, weft_last_error());
    }
    luaL_checkstack(L, f->n_outs, "too many outputs");
    for (int k = 0; k < f->n_outs; k++) {
        if (f->outs[k].n <= 1) {
            dsl_push_var(L, s->out_vars[k]);
            continue;
        }
        lua_createtable(L, f->outs[k].n, 0); /* n completions: a list */
        for (int32_t i = 0; i < f->outs[k].n; i++) {
            dsl_push_var(L, s->out_vars[k] + i);
            lua_rawseti(L, -2, i + 1);
        }
    }
    return f->n_outs;
}

/* ---- weft.var, weft.join, v:get() and friends ---- */

static int l_var(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    weft_sandbox_charge(L, CALL_OVERHEAD + len);
    int32_t id;
    if (orch_var_new(dsl_of(L)->o, s, len, &id) < 0) return luaL_error(L, "weft.var: %s", weft_last_error());
    dsl_push_var(L, id);
    return 1;
}

static int l_join(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t sl = 0;
    const char *sep = luaL_optlstring(L, 2, "", &sl);
    const lua_Integer n = luaL_len(L, 1);
    if (n > 1000000) return luaL_error(L, "weft.join: too many pieces");
    call_scratch *s = push_scratch(L);
    lua_newtable(L); /* numbers' texts */
    const int anchor = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i); /* a string or variable: anchored in the table */
        const lvar *v = test_var(L, -1);
        if (i > 1 && sl) seg_push(L, &s->segs, sep, sl, -1);
        if (v) {
            seg_push(L, &s->segs, NULL, 0, v->id);
        } else if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
            size_t len;
            const char *t = lua_tolstring(L, -1, &len); /* a number becomes its text, here */
            lua_pushvalue(L, -1);
            lua_rawseti(L, anchor, i); /* anchored until orch_join has copied it */
            seg_push(L, &s->segs, t, len, -1);
        } else {
            return luaL_error(L, "weft.join: item %d is a %s, not a string, number or weft variable",
                              (int)i, luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    weft_sandbox_charge(L, CALL_OVERHEAD + segs_bytes(&s->segs) + (size_t)s->segs.n * sizeof(orch_seg));
    int32_t id;
    if (orch_join(dsl_of(L)->o, "join", s->segs.s, s->segs.n, &id) < 0)
        return luaL_error(L, "weft.join: %s", weft_last_error());
    dsl_push_var(L, id);
    return 1;
}

static int var_get_k(lua_State *L, int status, lua_KContext ctx);

void dsl_list_append(lua_State *L, const char *table, int32_t id)
{
    lua_getfield(L, LUA_REGISTRYINDEX, table); /* v, t */
    if (lua_rawgeti(L, -1, id) != LUA_TTABLE) { /* v, t, list */
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, id);
    }
    lua_rotate(L, -3, -1); /* t, list, v */
    lua_rawseti(L, -2, luaL_len(L, -2) + 1);
    lua_pop(L, 2);
}

/* True when L can wait in get(): a weft task, yieldable. */
static bool can_wait(lua_State *L)
{
    if (!lua_isyieldable(L)) return false;
    lua_getfield(L, LUA_REGISTRYINDEX, DSL_TASKS);
    lua_pushthread(L);
    const bool task = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return task;
}

static int var_wait(lua_State *L, int32_t id)
{
    dsl *d = dsl_of(L);
    if (!lua_isyieldable(L))
        return luaL_error(L, "v:get() cannot wait here (inside a weft.stream callback or a "
                             "metamethod); wait in the script's own code");
    /* a coroutine the script made would yield to the script's resume, not
     * to weft: the wait would be lost, and the script misled */
    if (!can_wait(L))
        return luaL_error(L, "v:get() cannot wait inside a coroutine the script made "
                             "(coroutine.create/wrap): wait in the script's own code, or test v:ready()");
    orch_await(d->o, id);
    lua_pushthread(L);
    dsl_list_append(L, DSL_WAITERS, id);
    d->yield_ok = true;
    return lua_yieldk(L, 0, (lua_KContext)id, var_get_k);
}

/* A value (or error) is returned once it has been announced, so that the
 * variable's weft.stream watchers have had all of its text; where the
 * script cannot wait, as soon as it is there. */
static int var_get_k(lua_State *L, int status, lua_KContext ctx)
{
    const int32_t id = (int32_t)ctx;
    dsl *d = dsl_of(L);
    size_t len;
    const char *v = orch_var_value(d->o, id, &len);
    const char *err = v ? NULL : orch_var_error(d->o, id);
    if ((v || err) && !orch_var_announced(d->o, id) && can_wait(L)) return var_wait(L, id);
    if (v) {
        lua_pushlstring(L, v, len);
        return 1;
    }
    if (err) return luaL_error(L, "%s", err);
    return var_wait(L, id);
}

static int var_get(lua_State *L)
{
    const int32_t id = check_var(L, 1);
    return var_get_k(L, LUA_OK, (lua_KContext)id);
}

static int var_ready(lua_State *L)
{
    lua_pushboolean(L, orch_var_state_of(dsl_of(L)->o, check_var(L, 1)) == ORCH_VAR_READY);
    return 1;
}

static int var_error(lua_State *L)
{
    const char *e = orch_var_error(dsl_of(L)->o, check_var(L, 1));
    if (e) lua_pushstring(L, e);
    else lua_pushnil(L);
    return 1;
}

static int var_id(lua_State *L)
{
    lua_pushinteger(L, check_var(L, 1));
    return 1;
}

static int var_tostring(lua_State *L)
{
    const int32_t id = check_var(L, 1);
    dsl *d = dsl_of(L);
    size_t len;
    const char *v = orch_var_value(d->o, id, &len);
    if (v) lua_pushlstring(L, v, len);
    else if (orch_var_error(d->o, id)) lua_pushfstring(L, "<weft var %d: failed>", (int)id);
    else lua_pushfstring(L, "<weft var %d: pending>", (int)id);
    return 1;
}

/* weft._await(v, i): gather's first pass (the error names gather's caller) */
static int l_await(lua_State *L)
{
    if (!test_var(L, 1)) {
        luaL_where(L, 2);
        lua_pushfstring(L, "weft.gather: item %d is a %s, not a string or a weft variable",
                        (int)luaL_optinteger(L, 2, 0), luaL_typename(L, 1));
        lua_concat(L, 2);
        return lua_error(L);
    }
    orch_await(dsl_of(L)->o, check_var(L, 1));
    return 0;
}

static int l_stream(lua_State *L)
{
    const int32_t id = check_var(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    dsl *d = dsl_of(L);
    size_t len;
    const char *v = orch_var_value(d->o, id, &len);
    if (v) { /* already complete: all of it at once */
        lua_pushvalue(L, 2);
        lua_pushlstring(L, v, len);
        lua_call(L, 1, 0);
        return 0;
    }
    if (orch_var_state_of(d->o, id) != ORCH_VAR_PENDING) return 0;
    orch_await(d->o, id); /* someone is watching it: latency */
    const char *head = orch_var_streamed(d->o, id, &len);
    if (head) { /* started late: what the others were given, first */
        lua_pushvalue(L, 2);
        lua_pushlstring(L, head, len);
        lua_call(L, 1, 0);
    }
    lua_pushvalue(L, 2);
    dsl_list_append(L, DSL_STREAMS, id);
    return 0;
}

static int l_stats(lua_State *L)
{
    dsl *d = dsl_of(L);
    const orch_stats s = orch_get_stats(d->o);
    lua_newtable(L);
#define F(name, val)                       \
    lua_pushinteger(L, (lua_Integer)(val)); \
    lua_setfield(L, -2, name)
    F("calls", s.n_calls);
    F("submitted", s.n_submitted);
    F("from_store", s.n_from_store);
    F("failed", s.n_failed);
    F("prompt_tokens", s.n_prompt_tokens);
    F("cached_tokens", s.n_cached_tokens);
    F("generated_tokens", s.n_generated);
#undef F
    return 1;
}

/* Written in Lua: gather awaits all first, so that every producer becomes
 * latency work at once, then collects. */
static const char prelude[] =
    "local weft = ...\n"
    "function weft.gather(vars)\n"
    "  if type(vars) ~= 'table' then error('weft.gather: expects a list of variables', 2) end\n"
    "  for i, v in ipairs(vars) do if type(v) ~= 'string' then weft._await(v, i) end end\n"
    "  local out = {}\n"
    "  for i, v in ipairs(vars) do\n"
    "    if type(v) == 'string' then out[i] = v else out[i] = v:get() end\n"
    "  end\n"
    "  return out\n"
    "end\n";

int dsl_open_weft(lua_State *L)
{
    static const luaL_Reg var_methods[] = {{"get", var_get},     {"ready", var_ready},
                                           {"error", var_error}, {"id", var_id},
                                           {NULL, NULL}};
    /* __metatable: getmetatable(v) must not hand a script the shared
     * metatables, where a __gc it set would run unmetered (at lua_close too) */
    luaL_newmetatable(L, DSL_VAR_MT);
    lua_pushliteral(L, "weft.Var");
    lua_setfield(L, -2, "__metatable");
    luaL_newlib(L, var_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, var_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, DSL_FN_MT);
    lua_pushliteral(L, "weft.Fn");
    lua_setfield(L, -2, "__metatable");
    lua_pushcfunction(L, fn_call);
    lua_setfield(L, -2, "__call");
    lua_pushcfunction(L, fn_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    static const luaL_Reg lib[] = {{"fn", l_fn},         {"var", l_var},       {"join", l_join},
                                   {"stream", l_stream}, {"_await", l_await},  {"stats", l_stats},
                                   {NULL, NULL}};
    luaL_newlib(L, lib);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "weft");
    if (luaL_loadbufferx(L, prelude, sizeof prelude - 1, "=weft.prelude", "t") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    /* require("weft") works where package exists */
    if (lua_getglobal(L, "package") == LUA_TTABLE) {
        lua_getfield(L, -1, "loaded");
        if (lua_istable(L, -1)) {
            lua_pushvalue(L, -3);
            lua_setfield(L, -2, "weft");
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return 0;
}

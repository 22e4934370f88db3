/*
 * The orchestrator: variables, calls, readiness, objectives, failure
 * propagation, and the hand-off between the engine thread and the loop
 * thread (see weft/orch.h).
 *
 * Engine events are copied on the engine thread into `q` (evq.h), which
 * activates `ev`. On the loop thread, on_notify drains the queue into the
 * graph, flushes ready calls, then delivers what happened (text pieces and
 * completed variables, in order) to the listener. Delivery goes through the
 * `out` list so that the listener is never entered from inside an orch_*
 * function: what it does (create calls, await) cannot disturb an iteration
 * in progress.
 */
#define _GNU_SOURCE /* memmem */
#include "weft/orch.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "orchestrator/evq.h"
#include "weft/tokenizer.h"

enum { CALL_WAITING, CALL_READY, CALL_SUBMITTED, CALL_DONE, CALL_FAILED };
enum { KIND_LLM, KIND_JOIN };

typedef struct seg {
    char *text; /* owned, NUL-terminated */
    size_t len;
    int32_t var;
} seg;

typedef struct cmsg {
    char *role;
    seg *segs;
    int n_segs;
} cmsg;

/* One completion of a call: its text so far, its final event. */
typedef struct ostream {
    char *text;
    size_t len, cap;
    bool lost; /* an event copy failed: this completion fails */
    evq_msg final; /* where the final event goes when memory runs out */
} ostream;

typedef struct ocall {
    orch *o;
    int32_t id, kind, state, priority, out;
    char *name, *fn_id;
    seg *segs;
    int n_segs;
    cmsg *msgs;
    int n_msgs;
    weft_sampling sampling;
    int32_t max_tokens;
    char **stop;
    int n_stop;
    bool ignore_eos, from_store;
    int32_t *inputs; /* distinct referenced variables */
    int n_inputs, n_missing;
    uint64_t req_id, key;
    int32_t n_out, n_left; /* completions (output variables out .. out + n_out - 1), unfinished */
    ostream *streams;      /* n_out of them */
    bool any_failed;
    int32_t n_prompt, n_cached, n_generated;
    int64_t done_seq;
    double t_submit, t_done;
    bool warm_dirty;   /* an input (maybe through joins) completed since the last warm_heads */
    uint32_t mark;     /* visited in walk number `mark` (orch.epoch) */
    int32_t n_warmed;  /* tokens of the longest head sent to warm the prefix cache */
} ocall;

typedef struct ovar {
    int state;
    char *value, *error;
    size_t len;
    int32_t producer;
    int32_t *users; /* calls that take this variable as input */
    int n_users, cap_users;
    size_t n_noted;     /* bytes of its text queued for on_text */
    size_t n_delivered; /* of those, bytes on_text has been given */
    bool announced;     /* on_done was called (or it never has to be: orch_var_new) */
    bool done_lost;     /* its done note could not be queued: deliver() announces it */
    const char *root;   /* failed: the first failure's message (some variable's error) */
} ovar;

/* Something to tell the listener. */
typedef struct onote {
    int32_t var;
    bool done;
    bool borrowed; /* text points into the variable's value */
    char *text;    /* owned unless borrowed, for text pieces */
    size_t len;
} onote;

struct orch {
    weft_engine *e;
    const weft_model *m;
    orch_params p;
    orch_listener lis;
    orch_hooks hooks;
    struct event *ev;
    ovar **vars;
    int32_t n_vars, cap_vars;
    ocall **calls;
    int32_t n_calls, cap_calls;
    int32_t *ready; /* calls in CALL_READY */
    int32_t n_ready, cap_ready;
    onote *out;
    int32_t n_out, cap_out;
    int32_t n_engine; /* submitted, not yet done (loop thread's view) */
    int32_t n_open;   /* calls not done or failed */
    int64_t done_seq;
    bool delivering;
    int32_t n_done_lost; /* variables with done_lost set */
    /* key ordinals: content hash -> count, open addressing */
    uint64_t *ord_keys;
    int32_t *ord_counts;
    int32_t ord_cap, ord_n;
    orch_stats st;
    size_t max_value;    /* longest text a join or prompt may render (0: no limit) */
    uint64_t warmed[64]; /* hashes of heads already sent (ring) */
    bool any_dirty;      /* some call has warm_dirty set */
    int32_t n_warmed_heads;
    uint32_t epoch; /* walks over the graph so far: each visits a call once */
    /* shared with the engine thread */
    evq *q;                          /* expects every submitted completion's final event */
    _Atomic int32_t n_warm_inflight; /* warming requests not yet done (warm_call) */
};

orch_params orch_default_params(void)
{
    orch_params p = {.sequential = false, .latency_priority = ORCH_PRIO_LATENCY};
    return p;
}

/* ---- small helpers ---- */

static int grow(void **arr, int32_t *cap, int32_t need, size_t elem)
{
    if (need <= *cap) return 0;
    int32_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *na = weft_realloc(*arr, (size_t)nc * elem);
    if (!na) return weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
    *arr = na;
    *cap = nc;
    return 0;
}

static char *dup_len(const char *s, size_t n)
{
    char *d = weft_malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static char *fmt(const char *f, ...) WEFT_PRINTF(1, 2);
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char buf[1024];
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return weft_strdup(buf);
}

static ovar *var_at(const orch *o, int32_t v)
{
    return v >= 0 && v < o->n_vars ? o->vars[v] : NULL;
}

/* A done note that could not be queued is not dropped: a script awaiting
 * the variable would wait forever. The variable is flagged instead, which
 * needs no memory, and deliver() announces it. (A lost text piece only
 * costs the stream that piece: var_complete sends what was not noted.) */
static void note_done_lost(orch *o, int32_t var)
{
    ovar *v = o->vars[var];
    if (!v->done_lost) o->n_done_lost++;
    v->done_lost = true;
    event_active(o->ev, EV_READ, 0);
}

static void note(orch *o, int32_t var, bool done, const char *text, size_t len)
{
    if (grow((void **)&o->out, &o->cap_out, o->n_out + 1, sizeof *o->out) < 0) {
        if (done) note_done_lost(o, var);
        return;
    }
    onote *n = &o->out[o->n_out];
    n->var = var;
    n->done = done;
    n->borrowed = false;
    n->text = NULL;
    n->len = 0;
    if (!done) {
        n->text = dup_len(text, len);
        if (!n->text) return;
        n->len = len;
        o->vars[var]->n_noted += len;
    }
    o->n_out++;
    event_active(o->ev, EV_READ, 0);
}

/* ---- variables ---- */

static int var_add(orch *o, int32_t producer, int32_t *id)
{
    if (grow((void **)&o->vars, &o->cap_vars, o->n_vars + 1, sizeof *o->vars) < 0)
        return WEFT_ENOMEM;
    ovar *v = weft_calloc(1, sizeof *v);
    if (!v) return weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
    v->producer = producer;
    o->vars[o->n_vars] = v;
    *id = o->n_vars++;
    return 0;
}

static int var_add_user(orch *o, int32_t var, int32_t call)
{
    ovar *v = o->vars[var];
    if (grow((void **)&v->users, &v->cap_users, v->n_users + 1, sizeof *v->users) < 0)
        return WEFT_ENOMEM;
    v->users[v->n_users++] = call;
    return 0;
}

static void call_fail_self(orch *o, ocall *c, const char *fmt_, ...) WEFT_PRINTF(3, 4);
static uint64_t index_key(const ocall *c, int32_t i);

/* The ready calls are a binary min-heap of ids (creation order is a
 * topological order: lowest first). A call that fails while in it stays
 * until popped, and is skipped then (take_ready). */
static void ready_push(orch *o, ocall *c)
{
    if (grow((void **)&o->ready, &o->cap_ready, o->n_ready + 1, sizeof *o->ready) < 0) {
        call_fail_self(o, c, "out of memory");
        return;
    }
    c->state = CALL_READY;
    int32_t i = o->n_ready++;
    while (i > 0 && o->ready[(i - 1) / 2] > c->id) {
        o->ready[i] = o->ready[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    o->ready[i] = c->id;
}

static int32_t ready_pop(orch *o)
{
    const int32_t top = o->ready[0], last = o->ready[--o->n_ready];
    int32_t i = 0;
    for (;;) {
        int32_t k = 2 * i + 1;
        if (k >= o->n_ready) break;
        if (k + 1 < o->n_ready && o->ready[k + 1] < o->ready[k]) k++;
        if (o->ready[k] >= last) break;
        o->ready[i] = o->ready[k];
        i = k;
    }
    if (o->n_ready > 0) o->ready[i] = last;
    return top;
}

static void call_fail(orch *o, ocall *c, const char *root);

/* var gets its value (owned: value was weft_malloc'd with len + 1 bytes). */
/* The calls still waiting that var feeds, directly or through joins still
 * waiting, may now have a longer known head (warm_heads). */
static void mark_dirty(orch *o, int32_t var)
{
    const uint32_t ep = ++o->epoch; /* each call once: joins can form a lattice */
    int32_t *stack = NULL, n = 0, cap = 0;
    if (grow((void **)&stack, &cap, 1, sizeof *stack) < 0) return;
    stack[n++] = var;
    while (n > 0) {
        const ovar *v = o->vars[stack[--n]];
        for (int i = 0; i < v->n_users; i++) {
            ocall *u = o->calls[v->users[i]];
            if (u->state != CALL_WAITING || u->mark == ep) continue;
            u->mark = ep;
            if (u->kind != KIND_JOIN) {
                u->warm_dirty = true;
                o->any_dirty = true;
            } else if (grow((void **)&stack, &cap, n + 1, sizeof *stack) == 0) {
                stack[n++] = u->out;
            }
        }
    }
    weft_free(stack);
}

static void var_complete(orch *o, int32_t id, char *value, size_t len)
{
    ovar *v = o->vars[id];
    v->state = ORCH_VAR_READY;
    v->value = value;
    v->len = len;
    /* on_text's pieces add up to the value: what was not streamed (a
     * join's, a stored value's, all of it) goes now, in one piece */
    if (v->n_noted < len && grow((void **)&o->out, &o->cap_out, o->n_out + 1, sizeof *o->out) == 0) {
        o->out[o->n_out++] = (onote){.var = id, .borrowed = true, .text = value + v->n_noted,
                                     .len = len - v->n_noted};
        v->n_noted = len;
    }
    note(o, id, true, NULL, 0);
    for (int i = 0; i < v->n_users; i++) {
        ocall *u = o->calls[v->users[i]];
        if (u->state == CALL_WAITING && --u->n_missing == 0) ready_push(o, u);
    }
    if (!o->p.sequential) mark_dirty(o, id);
}

static void call_finish_common(orch *o, ocall *c, int state);

/* c fails (it will not run); its outputs are failed by the caller. */
static void call_mark_failed(orch *o, ocall *c)
{
    call_finish_common(o, c, CALL_FAILED); /* if it sits in the ready heap, it is skipped there */
    if (c->kind == KIND_LLM) o->st.n_failed++;
}

/* A failed variable's error when its own message could not be allocated:
 * failing must not need memory, or the variable would stay pending and a
 * script awaiting it would wait forever. Never freed (error_free). */
static char oom_error[] = "failed (out of memory)";

static void error_free(char *e)
{
    if (e != oom_error) weft_free(e);
}

/* Variable id fails with msg (owned; NULL: oom_error) naming root (NULL:
 * its own error), and every call waiting on it is marked failed. Those
 * calls' outputs go on *stack (pairs: output, call; stack NULL: nowhere)
 * for the caller to fail in turn; returns false when some could not. */
static bool var_set_failed(orch *o, int32_t id, char *msg, const char *root, int32_t **stack,
                           int32_t *n, int32_t *cap)
{
    ovar *v = o->vars[id];
    bool all = true;
    v->state = ORCH_VAR_FAILED;
    v->error = msg ? msg : oom_error;
    v->root = root ? root : v->error;
    note(o, id, true, NULL, 0);
    for (int i = 0; i < v->n_users; i++) {
        ocall *u = o->calls[v->users[i]];
        if (u->state != CALL_WAITING && u->state != CALL_READY) continue;
        call_mark_failed(o, u);
        for (int32_t k = 0; stack && k < u->n_out && all; k++) {
            all = grow((void **)stack, cap, *n + 2, sizeof **stack) == 0;
            if (!all) break;
            (*stack)[(*n)++] = u->out + k;
            (*stack)[(*n)++] = u->id;
        }
    }
    return all;
}

/* The root of a failed call's first failed input (oom_error if none). */
static const char *failed_input_root(const orch *o, const ocall *c)
{
    for (int i = 0; i < c->n_inputs; i++) {
        const ovar *in = o->vars[c->inputs[i]];
        if (in->state == ORCH_VAR_FAILED) return in->root;
    }
    return oom_error;
}

/* var_fail's fallback when its stack could not grow: the variables after
 * `first` still pending whose call has failed are failed, in id order, each
 * failing its own waiting users. One pass settles them all, because a
 * call's outputs are made after its inputs (their ids are larger); no
 * memory is needed (the messages fall back to oom_error). */
static void settle_failed_after(orch *o, int32_t first)
{
    for (int32_t id = first + 1; id < o->n_vars; id++) {
        const ovar *v = o->vars[id];
        if (v->state != ORCH_VAR_PENDING || v->producer < 0) continue;
        const ocall *c = o->calls[v->producer];
        if (c->state != CALL_FAILED) continue;
        const char *root = failed_input_root(o, c);
        var_set_failed(o, id, fmt("'%s' (#%d) not run: %s", c->name, c->id, root), root, NULL, NULL, NULL);
    }
}

/* var fails with msg (owned; NULL: out of memory); root names the call that
 * failed first (borrowed: a failed variable's error, which lives as long as
 * o; NULL: this variable's own). Every call downstream that has not run
 * fails too, naming root — iteratively: a chain of joins may be 100,000
 * long. A variable that is not pending any more keeps what it has. */
static void var_fail(orch *o, int32_t id, char *msg, const char *root)
{
    if (o->vars[id]->state != ORCH_VAR_PENDING) {
        error_free(msg);
        return;
    }
    const int32_t first = id;
    int32_t *stack = NULL, n = 0, cap = 0;
    bool all = true;
    for (;;) {
        all &= var_set_failed(o, id, msg, root, &stack, &n, &cap);
        if (n == 0) break;
        const ocall *u = o->calls[stack[--n]];
        id = stack[--n];
        root = o->vars[first]->root;
        msg = fmt("'%s' (#%d) not run: %s", u->name, u->id, root);
    }
    weft_free(stack);
    if (!all) settle_failed_after(o, first);
}

/* ---- calls ---- */

static void call_finish_common(orch *o, ocall *c, int state)
{
    c->state = state;
    c->done_seq = o->done_seq++;
    c->t_done = weft_now();
    o->n_open--;
}

/* Fails c because of `root` (the message of the call that failed first,
 * borrowed as var_fail says). */
static void call_fail(orch *o, ocall *c, const char *root)
{
    if (c->state == CALL_DONE || c->state == CALL_FAILED) return;
    call_mark_failed(o, c);
    for (int32_t i = 0; i < c->n_out; i++)
        var_fail(o, c->out + i, fmt("'%s' (#%d) not run: %s", c->name, c->id, root), root);
}

/* c itself failed (render, submit or engine error). */
static void call_fail_self(orch *o, ocall *c, const char *fmt_, ...)
{
    char why[768];
    va_list ap;
    va_start(ap, fmt_);
    vsnprintf(why, sizeof why, fmt_, ap);
    va_end(ap);
    if (c->state == CALL_DONE || c->state == CALL_FAILED) return;
    call_mark_failed(o, c);
    for (int32_t i = 0; i < c->n_out; i++) {
        if (o->vars[c->out + i]->state != ORCH_VAR_PENDING) continue; /* finished earlier */
        char *root = fmt("call '%s' (#%d) failed: %s", c->name, c->id, why);
        if (o->hooks.status && c->kind == KIND_LLM && c->key)
            o->hooks.status(o->hooks.user, index_key(c, i), root ? root : why);
        var_fail(o, c->out + i, root, NULL); /* not why: it is on this stack */
    }
}

static void segs_free(seg *s, int n)
{
    for (int i = 0; i < n; i++) weft_free(s[i].text);
    weft_free(s);
}

static void call_free(ocall *c)
{
    segs_free(c->segs, c->n_segs);
    for (int i = 0; i < c->n_msgs; i++) {
        weft_free(c->msgs[i].role);
        segs_free(c->msgs[i].segs, c->msgs[i].n_segs);
    }
    weft_free(c->msgs);
    for (int i = 0; i < c->n_stop; i++) weft_free(c->stop[i]);
    weft_free(c->stop);
    weft_free(c->inputs);
    weft_free(c->name);
    weft_free(c->fn_id);
    for (int32_t i = 0; c->streams && i < c->n_out; i++) weft_free(c->streams[i].text);
    weft_free(c->streams);
    weft_free(c);
}

static int copy_segs(const orch *o, const orch_seg *in, int n, seg **out)
{
    *out = NULL;
    if (n <= 0) return 0;
    seg *s = weft_calloc((size_t)n, sizeof *s);
    if (!s) return weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
    for (int i = 0; i < n; i++) {
        s[i].var = in[i].var;
        if (in[i].var >= 0) {
            if (in[i].var >= o->n_vars) {
                segs_free(s, n);
                return weft_error(WEFT_EINVAL, "reference to unknown variable %d", in[i].var);
            }
            continue;
        }
        s[i].text = dup_len(in[i].text ? in[i].text : "", in[i].text ? in[i].len : 0);
        s[i].len = in[i].text ? in[i].len : 0;
        if (!s[i].text) {
            segs_free(s, n);
            return weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
        }
    }
    *out = s;
    return 0;
}

static int add_input(ocall *c, int32_t var)
{
    for (int i = 0; i < c->n_inputs; i++)
        if (c->inputs[i] == var) return 0;
    int32_t *ni = weft_realloc(c->inputs, ((size_t)c->n_inputs + 1) * sizeof *ni);
    if (!ni) return weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
    c->inputs = ni;
    c->inputs[c->n_inputs++] = var;
    return 0;
}

static int collect_inputs(ocall *c, const seg *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i].var >= 0 && add_input(c, s[i].var) < 0) return WEFT_ENOMEM;
    return 0;
}

/* Links a fully built call into the graph: its output, its edges, its state. */
static int call_link(orch *o, ocall *c, int32_t *var)
{
    if (grow((void **)&o->calls, &o->cap_calls, o->n_calls + 1, sizeof *o->calls) < 0)
        return WEFT_ENOMEM;
    c->id = o->n_calls;
    if (c->n_out < 1) c->n_out = 1;
    c->n_left = c->n_out;
    int rc = 0;
    for (int32_t i = 0; i < c->n_out && rc == 0; i++) { /* consecutive ids */
        int32_t v;
        rc = var_add(o, c->id, &v);
        if (i == 0) c->out = v;
    }
    if (rc < 0) return rc;
    for (int i = 0; i < c->n_inputs; i++)
        if ((rc = var_add_user(o, c->inputs[i], c->id)) < 0) return rc;
    o->calls[o->n_calls++] = c;
    o->n_open++;
    if (c->kind == KIND_LLM) o->st.n_calls++;
    *var = c->out;
    /* inputs already failed or missing */
    const char *root = NULL;
    c->n_missing = 0;
    for (int i = 0; i < c->n_inputs; i++) {
        const ovar *v = o->vars[c->inputs[i]];
        if (v->state == ORCH_VAR_FAILED && !root) root = v->root; /* the first failure's words */
        if (v->state == ORCH_VAR_PENDING) c->n_missing++;
    }
    if (root) {
        call_fail(o, c, root);
    } else if (c->n_missing == 0) {
        ready_push(o, c);
    }
    return 0;
}

int orch_var_new(orch *o, const char *value, size_t len, int32_t *var)
{
    if (!o || !var || (!value && len)) return weft_error(WEFT_EINVAL, "orch_var_new: bad argument");
    char *v = dup_len(value ? value : "", value ? len : 0);
    if (!v) return weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
    int rc = var_add(o, -1, var);
    if (rc < 0) {
        weft_free(v);
        return rc;
    }
    ovar *x = o->vars[*var];
    x->state = ORCH_VAR_READY;
    x->value = v;
    x->len = len;
    x->announced = true; /* nothing to deliver: ready from the start */
    return 0;
}

int orch_call(orch *o, const orch_call_spec *s, int32_t *var)
{
    if (!o || !s || !var) return weft_error(WEFT_EINVAL, "orch_call: bad argument");
    if (s->max_tokens < 1) return weft_error(WEFT_EINVAL, "max_tokens must be at least 1");
    if (s->n < 0 || s->n > ORCH_MAX_N) return weft_error(WEFT_EINVAL, "n must be in 1..%d", ORCH_MAX_N);
    if (s->n_segs <= 0 && s->n_msgs <= 0) return weft_error(WEFT_EINVAL, "a call needs a prompt");
    ocall *c = weft_calloc(1, sizeof *c);
    if (!c) return weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
    c->o = o;
    c->kind = KIND_LLM;
    c->priority = ORCH_PRIO_THROUGHPUT;
    c->done_seq = -1;
    c->sampling = s->sampling;
    c->max_tokens = s->max_tokens;
    c->n_out = s->n > 1 ? s->n : 1;
    c->streams = weft_calloc((size_t)c->n_out, sizeof *c->streams);
    c->ignore_eos = s->ignore_eos;
    c->name = weft_strdup(s->name ? s->name : "call");
    c->fn_id = weft_strdup(s->fn_id ? s->fn_id : "");
    int rc = 0;
    if (!c->name || !c->fn_id || !c->streams) rc = weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
    if (!rc && s->n_msgs > 0) {
        c->msgs = weft_calloc((size_t)s->n_msgs, sizeof *c->msgs);
        if (!c->msgs) rc = weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
        for (int i = 0; !rc && i < s->n_msgs; i++) {
            c->n_msgs = i + 1;
            c->msgs[i].role = weft_strdup(s->msgs[i].role ? s->msgs[i].role : "user");
            rc = c->msgs[i].role ? copy_segs(o, s->msgs[i].segs, s->msgs[i].n_segs, &c->msgs[i].segs)
                                 : weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
            if (!rc) c->msgs[i].n_segs = s->msgs[i].n_segs;
            if (!rc) rc = collect_inputs(c, c->msgs[i].segs, c->msgs[i].n_segs);
        }
    } else if (!rc) {
        rc = copy_segs(o, s->segs, s->n_segs, &c->segs);
        if (!rc) c->n_segs = s->n_segs;
        if (!rc) rc = collect_inputs(c, c->segs, c->n_segs);
    }
    if (!rc && s->n_stop > 0) {
        c->stop = weft_calloc((size_t)s->n_stop, sizeof *c->stop);
        if (!c->stop) rc = weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
        for (int i = 0; !rc && i < s->n_stop; i++) {
            c->n_stop = i + 1;
            c->stop[i] = weft_strdup(s->stop[i] ? s->stop[i] : "");
            if (!c->stop[i]) rc = weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
        }
    }
    if (!rc) rc = call_link(o, c, var);
    if (rc < 0) {
        call_free(c);
        return rc;
    }
    return 0;
}

int orch_join(orch *o, const char *name, const orch_seg *segs, int n_segs, int32_t *var)
{
    if (!o || !var || n_segs < 0 || (n_segs && !segs)) return weft_error(WEFT_EINVAL, "orch_join: bad argument");
    ocall *c = weft_calloc(1, sizeof *c);
    if (!c) return weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
    c->o = o;
    c->kind = KIND_JOIN;
    c->done_seq = -1;
    c->n_out = 1;
    c->streams = weft_calloc(1, sizeof *c->streams);
    c->name = weft_strdup(name ? name : "join");
    c->fn_id = weft_strdup("");
    int rc = (!c->name || !c->fn_id || !c->streams) ? weft_error(WEFT_ENOMEM, "orchestrator: out of memory") : 0;
    if (!rc) rc = copy_segs(o, segs, n_segs, &c->segs);
    if (!rc) c->n_segs = n_segs;
    if (!rc) rc = collect_inputs(c, c->segs, c->n_segs);
    if (!rc) rc = call_link(o, c, var);
    if (rc < 0) {
        call_free(c);
        return rc;
    }
    return 0;
}

/* ---- rendering ---- */

/* Concatenates segments whose variables are all ready into a NUL-terminated
 * weft_malloc'd string. */
/* The text of segments, variables filled in. NULL when it would be longer
 * than the limit (orch_set_max_value: a join of a large value with itself
 * a thousand times is a few bytes of script) or memory runs out, with *why
 * saying which when why is not NULL. */
static char *render_segs(const orch *o, const seg *s, int n, size_t *len, const char **why)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) total += s[i].var >= 0 ? o->vars[s[i].var]->len : s[i].len;
    if (o->max_value && total > o->max_value) {
        if (why) *why = "its text would pass the run's size limit for one value (the sandbox's memory cap)";
        return NULL;
    }
    char *r = weft_malloc(total + 1);
    if (!r) {
        if (why) *why = "out of memory";
        return NULL;
    }
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        const char *t = s[i].var >= 0 ? o->vars[s[i].var]->value : s[i].text;
        const size_t l = s[i].var >= 0 ? o->vars[s[i].var]->len : s[i].len;
        if (l) memcpy(r + at, t, l);
        at += l;
    }
    r[at] = 0;
    *len = at;
    return r;
}

/* The prompt text of an LLM call (chat messages through the model's
 * template). Returns NULL with *why set on failure. A chat prompt's tokens
 * come with it in *ids (tok_chat_encode: the messages' contents cannot
 * spell the template's control tokens); a raw one's are left to the caller. */
static char *render_prompt(orch *o, ocall *c, size_t *len, const char **why, int32_t **ids, int32_t *n_ids)
{
    *why = "out of memory";
    if (c->n_msgs == 0) return render_segs(o, c->segs, c->n_segs, len, why);
    char **contents = weft_calloc((size_t)c->n_msgs, sizeof *contents);
    tok_chat_msg *msgs = weft_calloc((size_t)c->n_msgs, sizeof *msgs);
    char *out = NULL;
    bool ok = contents && msgs;
    for (int i = 0; ok && i < c->n_msgs; i++) {
        size_t l = 0;
        contents[i] = render_segs(o, c->msgs[i].segs, c->msgs[i].n_segs, &l, why);
        ok = contents[i] != NULL;
        /* with its length: a value may hold NUL bytes */
        msgs[i] = (tok_chat_msg){c->msgs[i].role, contents[i], l};
    }
    if (ok && tok_chat_encode(weft_model_vocab(o->m), msgs, c->n_msgs, true, &out, len, ids, n_ids) < 0) {
        *why = weft_last_error();
        out = NULL;
    }
    for (int i = 0; contents && i < c->n_msgs; i++) weft_free(contents[i]);
    weft_free(contents);
    weft_free(msgs);
    return out;
}

/* ---- keys (see weft/orch.h) ---- */

static uint64_t content_hash(const ocall *c, const char *prompt, size_t len)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st) return XXH3_64bits(prompt, len);
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, c->fn_id, strlen(c->fn_id) + 1);
    XXH3_64bits_update(st, prompt, len);
    const weft_sampling *s = &c->sampling;
    const double nums[] = {s->temperature, s->top_k, s->top_p, s->min_p, s->repeat_penalty,
                           s->repeat_last_n, (double)s->seed, c->max_tokens, c->ignore_eos};
    XXH3_64bits_update(st, nums, sizeof nums);
    for (int i = 0; i < c->n_stop; i++) XXH3_64bits_update(st, c->stop[i], strlen(c->stop[i]) + 1);
    const uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

/* How many earlier calls of this run had content hash h (then counts this one). */
static int32_t ordinal(orch *o, uint64_t h)
{
    if (o->ord_n * 2 >= o->ord_cap) {
        const int32_t nc = o->ord_cap ? o->ord_cap * 2 : 64;
        uint64_t *nk = weft_calloc((size_t)nc, sizeof *nk);
        int32_t *ncnt = weft_calloc((size_t)nc, sizeof *ncnt);
        if (!nk || !ncnt) {
            weft_free(nk);
            weft_free(ncnt);
            return 0;
        }
        for (int32_t i = 0; i < o->ord_cap; i++) {
            if (!o->ord_counts[i]) continue;
            int32_t j = (int32_t)(o->ord_keys[i] & (uint64_t)(nc - 1));
            while (ncnt[j]) j = (j + 1) & (nc - 1);
            nk[j] = o->ord_keys[i];
            ncnt[j] = o->ord_counts[i];
        }
        weft_free(o->ord_keys);
        weft_free(o->ord_counts);
        o->ord_keys = nk;
        o->ord_counts = ncnt;
        o->ord_cap = nc;
    }
    int32_t j = (int32_t)(h & (uint64_t)(o->ord_cap - 1));
    while (o->ord_counts[j] && o->ord_keys[j] != h) j = (j + 1) & (o->ord_cap - 1);
    if (!o->ord_counts[j]) {
        o->ord_keys[j] = h;
        o->ord_n++;
    }
    return o->ord_counts[j]++;
}

/* Reports to hooks.edge every LLM call whose output reaches c through its
 * inputs (looking through joins). */
static void report_edges(orch *o, const ocall *c)
{
    const uint32_t ep = ++o->epoch; /* each source once: joins can form a lattice */
    int32_t *stack = NULL, n = 0, cap = 0;
    for (int i = 0; i < c->n_inputs; i++) {
        if (grow((void **)&stack, &cap, n + 1, sizeof *stack) < 0) break;
        stack[n++] = c->inputs[i];
    }
    while (n > 0) {
        const int32_t p = o->vars[stack[--n]]->producer;
        if (p < 0 || o->calls[p]->mark == ep) continue;
        ocall *src = o->calls[p];
        src->mark = ep;
        if (src->kind == KIND_LLM) {
            if (src->key) o->hooks.edge(o->hooks.user, src->key, c->key);
            continue;
        }
        for (int i = 0; i < src->n_inputs; i++) {
            if (grow((void **)&stack, &cap, n + 1, sizeof *stack) < 0) break;
            stack[n++] = src->inputs[i];
        }
    }
    weft_free(stack);
}

/* ---- submission ---- */

static void on_engine_event(const weft_event *ev, void *user);

typedef struct pending_sub {
    ocall *c;
    int32_t *tokens;
    int32_t n_tokens;
    int32_t group; /* index of the first call with the same first KV block */
} pending_sub;

static void call_complete(orch *o, ocall *c, char *value, size_t len)
{
    call_finish_common(o, c, CALL_DONE);
    var_complete(o, c->out, value, len);
}

/* Key of completion i: the call's key for the first, derived for the others. */
static uint64_t index_key(const ocall *c, int32_t i)
{
    return i == 0 ? c->key : XXH3_64bits_withSeed(&c->key, sizeof c->key, (uint64_t)i);
}

/* Asks the store for every completion; all found: the call is done. */
static bool from_store(orch *o, ocall *c)
{
    char **vals = weft_calloc((size_t)c->n_out, sizeof *vals);
    size_t *lens = weft_calloc((size_t)c->n_out, sizeof *lens);
    int32_t hits = 0;
    for (int32_t i = 0; vals && lens && i < c->n_out && hits == i; i++)
        if (o->hooks.lookup(o->hooks.user, index_key(c, i), c->name, &vals[i], &lens[i]) == 1 && vals[i])
            hits++;
    const bool all = vals && lens && hits == c->n_out;
    if (all) {
        c->from_store = true;
        o->st.n_from_store++;
        c->n_left = 0;
        call_finish_common(o, c, CALL_DONE);
        for (int32_t i = 0; i < c->n_out; i++) var_complete(o, c->out + i, vals[i], lens[i]);
    } else {
        for (int32_t i = 0; vals && i < c->n_out; i++) weft_free(vals[i]);
    }
    weft_free(vals);
    weft_free(lens);
    return all;
}

/* Renders an LLM call, asks the store, tokenizes. Returns 1 when the call is
 * to be submitted (*sub filled), 0 when it is finished already. */
static int prepare(orch *o, ocall *c, pending_sub *sub)
{
    size_t len = 0;
    const char *why;
    int32_t *ids = NULL, n = 0;
    char *prompt = render_prompt(o, c, &len, &why, &ids, &n);
    if (!prompt) {
        call_fail_self(o, c, "rendering the prompt: %s", why);
        return 0;
    }
    const uint64_t h = content_hash(c, prompt, len);
    const int32_t ord = ordinal(o, h);
    const uint64_t pair[2] = {h, (uint64_t)ord};
    c->key = XXH3_64bits(pair, sizeof pair);
    if (!c->key) c->key = 1; /* 0 means "not rendered" */
    if (o->hooks.edge) report_edges(o, c);
    if (o->hooks.lookup && from_store(o, c)) {
        weft_free(prompt);
        weft_free(ids);
        return 0;
    }
    int rc = c->n_msgs > 0 ? 0 : tok_encode(weft_model_vocab(o->m), prompt, len, true, false, &ids, &n);
    weft_free(prompt);
    if (rc < 0) {
        call_fail_self(o, c, "tokenizing the prompt: %s", weft_last_error());
        return 0;
    }
    if (n <= 0) {
        weft_free(ids);
        call_fail_self(o, c, "the prompt is empty");
        return 0;
    }
    sub->c = c;
    sub->tokens = ids;
    sub->n_tokens = n;
    return 1;
}

static void submit(orch *o, pending_sub *s)
{
    ocall *c = s->c;
    weft_request r = {.tokens = s->tokens, .n_tokens = s->n_tokens, .sampling = c->sampling,
                      .max_tokens = c->max_tokens, .stop = (const char *const *)c->stop,
                      .n_stop = c->n_stop, .priority = c->priority, .ignore_eos = c->ignore_eos,
                      .n = c->n_out};
    evq_expect(o->q, c->n_out); /* each completion has its final event */
    c->state = CALL_SUBMITTED;
    c->t_submit = weft_now();
    c->n_prompt = s->n_tokens;
    int rc = weft_engine_submit(o->e, &r, on_engine_event, c, &c->req_id);
    weft_free(s->tokens);
    s->tokens = NULL;
    if (rc < 0) {
        evq_expect(o->q, -c->n_out);
        c->state = CALL_READY; /* so that call_fail_self finishes it */
        call_fail_self(o, c, "%s: %s", weft_strerror(rc), weft_last_error());
        return;
    }
    o->n_engine++;
    o->st.n_submitted++;
    for (int32_t i = 0; o->hooks.status && i < c->n_out; i++)
        o->hooks.status(o->hooks.user, index_key(c, i), NULL);
}

static int cmp_sub(const void *a, const void *b)
{
    const pending_sub *x = a, *y = b;
    if (x->c->priority != y->c->priority) return x->c->priority > y->c->priority ? -1 : 1;
    if (x->group != y->group) return x->group < y->group ? -1 : 1;
    return (x->c->id > y->c->id) - (x->c->id < y->c->id);
}

/* Takes the ready list; finishes joins (which may make more calls ready)
 * and prepares LLM calls. Returns how many are in subs. */
static int32_t take_ready(orch *o, pending_sub **subs, int32_t *cap, int32_t limit)
{
    int32_t n = 0;
    while (o->n_ready > 0 && n < limit) {
        ocall *c = o->calls[ready_pop(o)]; /* lowest id first */
        if (c->state != CALL_READY) continue; /* failed while it waited here */
        if (c->kind == KIND_JOIN) {
            size_t len;
            const char *why = "out of memory";
            char *v = render_segs(o, c->segs, c->n_segs, &len, &why);
            if (v) call_complete(o, c, v, len);
            else call_fail_self(o, c, "%s", why);
            continue;
        }
        if (grow((void **)subs, cap, n + 1, sizeof **subs) < 0) {
            call_fail_self(o, c, "out of memory");
            continue;
        }
        if (prepare(o, c, &(*subs)[n]) == 1) n++;
    }
    return n;
}

/* ---- warming the heads of waiting calls ----
 * A call waiting for some inputs often has a long known head: its template
 * up to the first missing variable, with the inputs before it (a reduce
 * over summaries that finish one after another, a reviser whose prompt
 * starts with code already written). Computing that head's KV now, while
 * the inputs it waits for are still being generated, takes it off the
 * critical path: the head goes to the engine as a request of one token, and
 * when the call is ready the prefix cache serves its full blocks. Only in
 * graph mode (a request-level client does not know its next prompt). */

enum {
    WARM_MIN_TOKENS = 64,      /* a head must grow by this much to be sent again */
    WARM_MAX_INFLIGHT = 4,     /* warming requests in the engine at once */
    WARM_MAX_PER_FLUSH = 8,    /* heads rendered and tokenized per flush (loop thread time) */
    WARM_MAX_BYTES = 256 << 10 /* longer heads are not warmed */
};

/* Appends t[0..n) to s->text (NUL-terminated); on out of memory sets s->lost. */
static void append_text(ostream *s, const char *t, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = 2 * (s->len + n + 1) + 64;
        char *nt = weft_realloc(s->text, cap);
        if (!nt) {
            s->lost = true;
            return;
        }
        s->text = nt;
        s->cap = cap;
    }
    memcpy(s->text + s->len, t, n);
    s->len += n;
    s->text[s->len] = 0;
}

/* Appends the known head of segs; returns true when all of segs is known.
 * A variable not ready ends the head, unless a join still waiting makes
 * it: then the join's own head continues it. */
static bool head_segs(const orch *o, const seg *s, int n, ostream *b, int depth)
{
    for (int i = 0; i < n; i++) {
        if (b->len > WARM_MAX_BYTES) return false; /* too long to warm: stop copying */
        if (s[i].var < 0) {
            append_text(b, s[i].text, s[i].len);
            continue;
        }
        const ovar *v = o->vars[s[i].var];
        if (v->state == ORCH_VAR_READY) {
            append_text(b, v->value, v->len);
            continue;
        }
        const ocall *p = v->producer >= 0 ? o->calls[v->producer] : NULL;
        if (p && p->kind == KIND_JOIN && p->state == CALL_WAITING && depth < 64)
            head_segs(o, p->segs, p->n_segs, b, depth + 1);
        return false;
    }
    return true;
}

/* The known head of c's prompt text (weft_malloc'd, *len bytes, which may
 * hold NUL bytes), or NULL. Chat calls: the messages through the first
 * incomplete one are rendered with a sentinel where the head ends, and the
 * text is cut there. */
static char *head_text(orch *o, const ocall *c, size_t *len)
{
    static const char cut[] = "\x01weft-head-ends\x01";
    ostream b = {0};
    if (c->n_msgs == 0) {
        head_segs(o, c->segs, c->n_segs, &b, 0);
        if (b.lost || !b.text) {
            weft_free(b.text);
            return NULL;
        }
        *len = b.len;
        return b.text;
    }
    tok_chat_msg *msgs = weft_calloc((size_t)c->n_msgs, sizeof *msgs);
    char **contents = weft_calloc((size_t)c->n_msgs, sizeof *contents);
    int n = 0;
    bool ok = msgs && contents;
    for (int i = 0; ok && i < c->n_msgs; i++) {
        ostream m = {0};
        const bool all = head_segs(o, c->msgs[i].segs, c->msgs[i].n_segs, &m, 0);
        if (!all) append_text(&m, cut, sizeof cut - 1);
        if (!m.text && !m.lost) m.text = dup_len("", 0);
        ok = !m.lost && m.text;
        contents[i] = m.text;
        msgs[n++] = (tok_chat_msg){c->msgs[i].role, m.text ? m.text : "", m.len};
        if (!all) break;
    }
    char *out = NULL;
    size_t out_len = 0;
    if (ok && tok_chat_render(weft_model_vocab(o->m), msgs, n, true, &out, &out_len) < 0) out = NULL;
    char *at = out ? memmem(out, out_len, cut, sizeof cut - 1) : NULL;
    if (out && !at) { /* the template changed the sentinel: no head */
        weft_free(out);
        out = NULL;
    }
    if (at) {
        *at = 0;
        *len = (size_t)(at - out);
    }
    for (int i = 0; contents && i < n; i++) weft_free(contents[i]);
    weft_free(contents);
    weft_free(msgs);
    return out;
}

/* Engine thread: a warming request's events carry nothing wanted. Its
 * final event is counted, not queued; o is not touched after the count. */
static void on_warm_event(const weft_event *ev, void *user)
{
    orch *o = user;
    if (!ev->done) return;
    o->n_warm_inflight--;
    evq_expect(o->q, -1);
}

static void warm_call(orch *o, ocall *c)
{
    size_t len = 0;
    char *head = head_text(o, c, &len);
    if (!head) return;
    if (len > WARM_MAX_BYTES) {
        weft_free(head);
        return;
    }
    int32_t *ids = NULL, n = 0;
    const int rc = tok_encode(weft_model_vocab(o->m), head, len, true, c->n_msgs > 0, &ids, &n);
    weft_free(head);
    if (rc < 0 || n < c->n_warmed + WARM_MIN_TOKENS) {
        weft_free(ids);
        return;
    }
    /* calls with the same head (four revisers of one codebase) warm it once */
    const uint64_t h = XXH3_64bits(ids, (size_t)n * sizeof *ids);
    for (int i = 0; i < (int)(sizeof o->warmed / sizeof o->warmed[0]); i++)
        if (o->warmed[i] == h) {
            c->n_warmed = n;
            weft_free(ids);
            return;
        }
    weft_request r = {.tokens = ids, .n_tokens = n, .sampling = weft_sampling_greedy(),
                      .max_tokens = 1, .priority = c->priority};
    o->n_warm_inflight++;
    evq_expect(o->q, 1);
    uint64_t id;
    if (weft_engine_submit(o->e, &r, on_warm_event, o, &id) < 0) { /* busy or too long: skip */
        o->n_warm_inflight--;
        evq_expect(o->q, -1);
    } else {
        c->n_warmed = n;
        o->warmed[o->n_warmed_heads++ % (int32_t)(sizeof o->warmed / sizeof o->warmed[0])] = h;
        o->st.n_warm++;
        o->st.n_warm_tokens += n;
    }
    weft_free(ids);
}

/* Dirty calls stay dirty when a limit stops the scan: a later flush
 * (every engine event ends in one) takes them up. */
static void warm_heads(orch *o)
{
    if (!o->any_dirty) return; /* most flushes: no scan of the calls */
    o->any_dirty = false;
    int tried = 0;
    for (int32_t i = 0; i < o->n_calls; i++) {
        ocall *c = o->calls[i];
        if (!c->warm_dirty) continue;
        if (c->kind != KIND_LLM || c->state != CALL_WAITING) {
            c->warm_dirty = false;
            continue;
        }
        const bool full = o->n_warm_inflight >= WARM_MAX_INFLIGHT;
        if (full || tried >= WARM_MAX_PER_FLUSH) { /* this one and later ones wait for a later flush */
            o->any_dirty = true;
            break;
        }
        c->warm_dirty = false;
        warm_call(o, c);
        tried++;
    }
}

void orch_flush(orch *o)
{
    if (!o) return;
    pending_sub *subs = NULL;
    int32_t cap = 0;
    if (o->p.sequential) {
        /* one engine call at a time; joins and stored values do not count */
        while (o->n_engine == 0 && o->n_ready > 0) {
            int32_t n = take_ready(o, &subs, &cap, 1);
            if (n == 1) submit(o, &subs[0]);
        }
        weft_free(subs);
        return;
    }
    int32_t n = take_ready(o, &subs, &cap, INT32_MAX);
    /* group calls whose first KV block is equal: the engine computes the
     * shared head once when they are submitted together */
    enum { BLOCK = 16 };
    for (int32_t i = 0; i < n; i++) {
        subs[i].group = i;
        if (subs[i].n_tokens <= BLOCK) continue;
        for (int32_t j = 0; j < i; j++)
            if (subs[j].n_tokens > BLOCK &&
                memcmp(subs[j].tokens, subs[i].tokens, BLOCK * sizeof(int32_t)) == 0) {
                subs[i].group = subs[j].group;
                break;
            }
    }
    if (n > 1) qsort(subs, (size_t)n, sizeof *subs, cmp_sub);
    for (int32_t i = 0; i < n; i++) submit(o, &subs[i]);
    weft_free(subs);
    warm_heads(o);
}

/* ---- objectives ---- */

int orch_await(orch *o, int32_t var)
{
    if (!o || !var_at(o, var)) return weft_error(WEFT_EINVAL, "orch_await: unknown variable %d", var);
    int32_t *stack = NULL, n = 0, cap = 0;
    if (grow((void **)&stack, &cap, 1, sizeof *stack) < 0) return WEFT_ENOMEM;
    stack[n++] = var;
    while (n > 0) {
        const ovar *v = o->vars[stack[--n]];
        if (v->state != ORCH_VAR_PENDING || v->producer < 0) continue;
        ocall *c = o->calls[v->producer];
        if (c->priority >= o->p.latency_priority) continue;
        c->priority = o->p.latency_priority;
        if (c->state == CALL_SUBMITTED) /* already queued or running: raise it there */
            weft_engine_set_priority(o->e, c->req_id, c->priority);
        for (int i = 0; i < c->n_inputs; i++) {
            if (grow((void **)&stack, &cap, n + 1, sizeof *stack) < 0) break;
            stack[n++] = c->inputs[i];
        }
    }
    weft_free(stack);
    return 0;
}

/* ---- engine events ---- */

/* Engine thread: copy, queue, wake the loop. */
static void on_engine_event(const weft_event *ev, void *user)
{
    ocall *c = user;
    const int32_t index = ev->index >= 0 && ev->index < c->n_out ? ev->index : 0;
    if (evq_push(c->o->q, ev, c, &c->streams[index].final) < 0)
        c->streams[index].lost = true; /* read on the loop thread after the final event */
}

/* Completion i of c failed: its variable fails, the others go on. */
static void index_fail(orch *o, ocall *c, int32_t i, const char *why)
{
    c->any_failed = true;
    char *root = c->n_out > 1 ? fmt("call '%s' (#%d) failed (completion %d): %s", c->name, c->id, i, why)
                              : fmt("call '%s' (#%d) failed: %s", c->name, c->id, why);
    if (o->hooks.status && c->key) o->hooks.status(o->hooks.user, index_key(c, i), root ? root : why);
    var_fail(o, c->out + i, root, NULL);
}

static void engine_done(orch *o, ocall *c, const evq_msg *nd)
{
    const bool last = --c->n_left == 0;
    if (last) o->n_engine--;
    if (nd->index == 0) { /* the prompt is counted once */
        c->n_cached = nd->n_cached;
        o->st.n_prompt_tokens += nd->n_prompt;
        o->st.n_cached_tokens += nd->n_cached;
    }
    c->n_generated += nd->n_generated;
    o->st.n_generated += nd->n_generated;
    if (c->state != CALL_SUBMITTED) return; /* failed meanwhile (cancel_all) */
    ostream *s = &c->streams[nd->index];
    char *v = NULL;
    if (nd->status != 0) index_fail(o, c, nd->index, weft_strerror(nd->status));
    else if (s->lost || nd->lost) index_fail(o, c, nd->index, "out of memory while collecting its text");
    else if (!(v = s->text ? s->text : dup_len("", 0))) index_fail(o, c, nd->index, "out of memory");
    const size_t len = s->len;
    if (!v) weft_free(s->text); /* else the variable owns it */
    s->text = NULL;
    s->len = s->cap = 0;
    if (last) {
        call_finish_common(o, c, c->any_failed ? CALL_FAILED : CALL_DONE);
        if (c->any_failed) o->st.n_failed++;
    }
    if (!v) return;
    var_complete(o, c->out + nd->index, v, len);
    if (o->hooks.record) {
        orch_call_info ci;
        orch_call_info_get(o, c->id, &ci);
        o->hooks.record(o->hooks.user, index_key(c, nd->index), v, len, &ci);
    }
}

/* The final event may carry text too: what was held back in case it began a
 * stop string, and an incomplete UTF-8 tail (weft/engine.h). */
static void drain_engine(orch *o)
{
    evq_msg *m = evq_take(o->q);
    while (m) {
        evq_msg *next = m->next;
        ocall *c = m->owner;
        const int32_t index = m->index >= 0 && m->index < c->n_out ? m->index : 0;
        m->index = index;
        if (m->len && c->state == CALL_SUBMITTED) {
            append_text(&c->streams[index], m->text, m->len);
            note(o, c->out + index, false, m->text, m->len);
        }
        if (m->done) engine_done(o, c, m);
        evq_msg_free(m);
        m = next;
    }
}

/* Announces the variables whose done note was lost (note_done_lost), in id
 * order, after the notes that were queued (their text came first). */
static void announce_lost(orch *o)
{
    for (int32_t i = 0; i < o->n_vars && o->n_done_lost > 0; i++) {
        ovar *v = o->vars[i];
        if (!v->done_lost) continue;
        v->done_lost = false;
        o->n_done_lost--;
        v->announced = true;
        if (o->lis.on_done) o->lis.on_done(o->lis.user, i);
    }
    orch_flush(o); /* what the listener made ready */
}

static void deliver_notes(orch *o)
{
    /* the listener may add notes (through flush): index loop, re-read n_out */
    for (int32_t i = 0; i < o->n_out; i++) {
        onote n = o->out[i];
        o->out[i].text = NULL;
        if (n.done) {
            o->vars[n.var]->announced = true;
            if (o->lis.on_done) o->lis.on_done(o->lis.user, n.var);
        } else {
            o->vars[n.var]->n_delivered += n.len;
            if (o->lis.on_text) o->lis.on_text(o->lis.user, n.var, n.text, n.len);
        }
        if (!n.borrowed) weft_free(n.text);
        if (i == o->n_out - 1) orch_flush(o); /* what the listener made ready */
    }
    o->n_out = 0;
}

static void deliver(orch *o)
{
    if (o->delivering) return;
    o->delivering = true;
    do {
        deliver_notes(o);
        if (o->n_done_lost > 0) announce_lost(o); /* its listener may add notes */
    } while (o->n_out > 0 || o->n_done_lost > 0);
    o->delivering = false;
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    orch *o = arg;
    drain_engine(o);
    orch_flush(o);
    deliver(o);
}

/* ---- lifecycle and queries ---- */

int orch_create(weft_engine *e, const weft_model *m, struct event_base *base,
                const orch_params *p, orch **out)
{
    if (!e || !m || !base || !out) return weft_error(WEFT_EINVAL, "orch_create: bad argument");
    orch *o = weft_calloc(1, sizeof *o);
    if (!o) return weft_error(WEFT_ENOMEM, "orchestrator: out of memory");
    o->e = e;
    o->m = m;
    o->p = p ? *p : orch_default_params();
    if (o->p.latency_priority <= ORCH_PRIO_THROUGHPUT) o->p.latency_priority = ORCH_PRIO_LATENCY;
    /* a timeout keeps the event pending, so the loop blocks instead of
     * returning "no events"; event_active wakes it */
    struct timeval hour = {3600, 0};
    o->ev = event_new(base, -1, EV_PERSIST, on_notify, o);
    if (!o->ev || event_add(o->ev, &hour) < 0 || evq_create(o->ev, &o->q) < 0) {
        orch_destroy(o);
        return weft_error(WEFT_ENOMEM, "orchestrator: cannot create its event");
    }
    *out = o;
    return 0;
}

void orch_cancel_all(orch *o, const char *why)
{
    if (!o) return;
    for (int32_t i = 0; i < o->n_calls; i++) {
        ocall *c = o->calls[i];
        if (c->state == CALL_SUBMITTED) weft_engine_cancel(o->e, c->req_id);
        if (c->state != CALL_DONE && c->state != CALL_FAILED) call_fail_self(o, c, "%s", why);
    }
    o->n_ready = 0;
}

void orch_destroy(orch *o)
{
    if (!o) return;
    for (int32_t i = 0; i < o->n_calls; i++)
        if (o->calls[i]->state == CALL_SUBMITTED) weft_engine_cancel(o->e, o->calls[i]->req_id);
    if (o->q) evq_wait_idle(o->q); /* no event of the engine's reaches o after this */
    evq_destroy(o->q);
    if (o->ev) event_free(o->ev);
    for (int32_t i = 0; i < o->n_calls; i++) call_free(o->calls[i]);
    for (int32_t i = 0; i < o->n_vars; i++) {
        weft_free(o->vars[i]->value);
        error_free(o->vars[i]->error);
        weft_free(o->vars[i]->users);
        weft_free(o->vars[i]);
    }
    for (int32_t i = 0; i < o->n_out; i++) weft_free(o->out[i].text);
    weft_free(o->out);
    weft_free(o->calls);
    weft_free(o->vars);
    weft_free(o->ready);
    weft_free(o->ord_keys);
    weft_free(o->ord_counts);
    weft_free(o);
}

void orch_set_max_value(orch *o, size_t bytes)
{
    if (o) o->max_value = bytes;
}

void orch_set_listener(orch *o, const orch_listener *l)
{
    if (o) o->lis = l ? *l : (orch_listener){0};
}

void orch_set_hooks(orch *o, const orch_hooks *h)
{
    if (o) o->hooks = h ? *h : (orch_hooks){0};
}

int32_t orch_n_vars(const orch *o) { return o ? o->n_vars : 0; }
int32_t orch_n_calls(const orch *o) { return o ? o->n_calls : 0; }

orch_var_state orch_var_state_of(const orch *o, int32_t var)
{
    const ovar *v = o ? var_at(o, var) : NULL;
    return v ? (orch_var_state)v->state : ORCH_VAR_FAILED;
}

const char *orch_var_value(const orch *o, int32_t var, size_t *len)
{
    const ovar *v = o ? var_at(o, var) : NULL;
    if (!v || v->state != ORCH_VAR_READY) return NULL;
    if (len) *len = v->len;
    return v->value;
}

bool orch_var_announced(const orch *o, int32_t var)
{
    const ovar *v = o ? var_at(o, var) : NULL;
    return v && v->announced;
}

const char *orch_var_streamed(const orch *o, int32_t var, size_t *len)
{
    *len = 0;
    const ovar *v = o ? var_at(o, var) : NULL;
    if (!v || v->state != ORCH_VAR_PENDING || v->producer < 0 || v->n_delivered == 0) return NULL;
    const ocall *c = o->calls[v->producer];
    if (c->kind != KIND_LLM || var < c->out || var >= c->out + c->n_out) return NULL;
    const ostream *s = &c->streams[var - c->out];
    if (!s->text) return NULL;
    *len = s->len < v->n_delivered ? s->len : v->n_delivered;
    return s->text;
}

const char *orch_var_error(const orch *o, int32_t var)
{
    const ovar *v = o ? var_at(o, var) : NULL;
    return v && v->state == ORCH_VAR_FAILED ? v->error : NULL;
}

int32_t orch_var_producer(const orch *o, int32_t var)
{
    const ovar *v = o ? var_at(o, var) : NULL;
    return v ? v->producer : -1;
}

bool orch_idle(const orch *o)
{
    return !o || (o->n_open == 0 && o->n_out == 0 && o->n_done_lost == 0);
}

int orch_call_info_get(const orch *o, int32_t call, orch_call_info *info)
{
    if (!o || !info || call < 0 || call >= o->n_calls)
        return weft_error(WEFT_EINVAL, "unknown call %d", call);
    const ocall *c = o->calls[call];
    *info = (orch_call_info){.name = c->name, .out = c->out, .n_out = c->n_out, .priority = c->priority,
                             .is_llm = c->kind == KIND_LLM, .from_store = c->from_store,
                             .key = c->key, .n_prompt = c->n_prompt, .n_cached = c->n_cached,
                             .n_generated = c->n_generated, .done_seq = c->done_seq,
                             .t_submit = c->t_submit, .t_done = c->t_done};
    return 0;
}

orch_stats orch_get_stats(const orch *o)
{
    return o ? o->st : (orch_stats){0};
}

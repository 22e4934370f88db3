/*
 * weft/orch.h — the orchestrator: the graph of a run's semantic variables and
 * the calls that produce them, run on an engine.
 *
 * A variable is pending, ready (it has a value) or failed (it has an error
 * message). A call produces exactly one variable from a prompt made of
 * segments: literal text and references to other variables (the graph's
 * edges). A call is ready when all its inputs are; ready calls are rendered,
 * tokenized and sent to the engine together (throughput work in one batch),
 * ordered so that calls whose prompts share a head are adjacent: the engine
 * holds back a request whose first KV block another one is still prefilling,
 * so the shared head is computed once and then forked (counters:
 * weft_engine_get_stats, orch_call_info). A call still waiting for inputs
 * has its known head (the prompt up to the first input not ready, through
 * joins) sent ahead as a one-token request each time it grows by 64 tokens,
 * so that its KV is in the prefix cache when the call is ready (not in
 * sequential mode; orch_stats.n_warm). These requests are not calls: they
 * count in the engine's statistics, not in the calls' own.
 *
 * Objectives (Parrot): awaiting a variable (orch_await) gives the call that
 * feeds it, and every pending call upstream of that, latency priority;
 * everything else runs at throughput priority.
 *
 * Errors: a call that fails (its prompt does not fit, the engine fails it)
 * fails its variable with a message naming the call; every call that depends
 * on a failed variable fails without running, with a message naming the call
 * that failed first. Independent branches run on.
 *
 * Durable runs: every LLM call gets a deterministic key once its prompt is
 * rendered (XXH3 of the function id, the prompt, the sampling parameters,
 * max_tokens and stop strings, then of that hash and an ordinal counting
 * earlier calls with the same hash in this run). Before submitting a call the
 * orchestrator asks hooks.lookup for a stored value under that key (a hit
 * completes the call without the engine); after a call completes it passes
 * the value to hooks.record.
 *
 * Threading: everything here runs on the thread of the libevent base given
 * to orch_create (the loop thread) — except that engine events arrive on the
 * engine thread, where the orchestrator only copies them into a locked queue
 * and activates an event on the base. The listener is called only from that
 * event's callback, never from inside another orch_* function, so it may call
 * any orch_* function (create calls, await) but must not destroy the orch.
 *
 * Ids: variables and calls are numbered from 0 in creation order; ids stay
 * valid until orch_destroy. Return codes: 0 or a negative WEFT_E* code with
 * weft_last_error() set.
 */
#ifndef WEFT_ORCH_H
#define WEFT_ORCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;
typedef struct orch orch;

enum { ORCH_PRIO_THROUGHPUT = 0, ORCH_PRIO_LATENCY = 100 };

typedef enum { ORCH_VAR_PENDING = 0, ORCH_VAR_READY, ORCH_VAR_FAILED } orch_var_state;

/* A piece of a prompt: literal text (var < 0) or the value of variable var. */
typedef struct orch_seg {
    const char *text;
    size_t len;
    int32_t var;
} orch_seg;

/* A chat message whose content is made of segments. */
typedef struct orch_msg {
    const char *role;
    const orch_seg *segs;
    int n_segs;
} orch_msg;

/* One LLM call. Everything is copied by orch_call. */
typedef struct orch_call_spec {
    const char *name;  /* for messages and listings, e.g. "summarize.summary" */
    const char *fn_id; /* identity of the function (its template) for the key */
    const orch_seg *segs; /* a raw prompt ... */
    int n_segs;
    const orch_msg *msgs; /* ... or chat messages (rendered with the model's
                             template, generation prompt added); msgs wins */
    int n_msgs;
    weft_sampling sampling;
    int32_t max_tokens;
    const char *const *stop;
    int n_stop;
    bool ignore_eos;
    int32_t n; /* completions of the one prompt (0 or 1: one; at most ORCH_MAX_N):
                  the prompt is computed once and forked; completion i samples
                  with seed + i; its output is variable *var + i */
} orch_call_spec;

#define ORCH_MAX_N 64

typedef struct orch_listener {
    /* A piece of the text of var as it is generated (borrowed, not
     * NUL-terminated). A variable's pieces, in order, add up to its value:
     * one made without the model (a join, a value from the store) gets
     * its value as one piece, right before on_done. */
    void (*on_text)(void *user, int32_t var, const char *text, size_t len);
    /* var became ready or failed. */
    void (*on_done)(void *user, int32_t var);
    void *user;
} orch_listener;

typedef struct orch_call_info orch_call_info;

typedef struct orch_hooks {
    /* Called once per LLM call when its key is known, before it is sent.
     * Returns 1 and a weft_malloc'd value (the orch takes it) when a value is
     * stored under key, 0 when not, negative on error (treated as a miss). */
    int (*lookup)(void *user, uint64_t key, const char *name, char **value, size_t *len);
    /* The call completed with value under key (all borrowed). */
    void (*record)(void *user, uint64_t key, const char *value, size_t len,
                   const orch_call_info *info);
    /* Optional, before lookup: the output of the LLM call keyed src feeds the
     * call keyed dst (through joins too) — the run's graph. */
    void (*edge)(void *user, uint64_t src, uint64_t dst);
    /* Optional: the completion keyed key was sent to the engine (error NULL)
     * or failed (error: its message, borrowed). A call that fails before it
     * is rendered (an input failed) has no key and is not reported. */
    void (*status)(void *user, uint64_t key, const char *error);
    void *user;
} orch_hooks;

typedef struct orch_params {
    bool sequential; /* a request-level client: one call in the engine at a time,
                        in creation order, each awaited before the next is sent */
    int32_t latency_priority; /* engine priority of awaited work (default ORCH_PRIO_LATENCY) */
} orch_params;

WEFT_API orch_params orch_default_params(void);

/* The engine and model are borrowed and must outlive the orch; the model
 * gives the tokenizer and chat template. evthread_use_pthreads() must have
 * been called before `base` was created. */
WEFT_API int orch_create(weft_engine *e, const weft_model *m, struct event_base *base,
                         const orch_params *p, orch **out);
/* Cancels what is in the engine and waits for its final events. */
WEFT_API void orch_destroy(orch *o);

WEFT_API void orch_set_listener(orch *o, const orch_listener *l);
/* The longest text a join's value or a call's prompt may be rendered to;
 * past it that call fails, naming the limit (0, the default: none). A
 * sandboxed run sets its memory cap here: the values are the host's memory,
 * not the script's Lua heap. */
WEFT_API void orch_set_max_value(orch *o, size_t bytes);
WEFT_API void orch_set_hooks(orch *o, const orch_hooks *h);

/* A variable that is ready at once with value[0..len) (copied). */
WEFT_API int orch_var_new(orch *o, const char *value, size_t len, int32_t *var);
/* An LLM call; *var gets its output variable (with n > 1, the first of n
 * consecutive ones). WEFT_EINVAL for a reference to an unknown variable, no
 * segments, max_tokens < 1, n out of range. */
WEFT_API int orch_call(orch *o, const orch_call_spec *s, int32_t *var);
/* A variable whose value is the concatenation of segs (no model involved);
 * it fails if any referenced variable fails. */
WEFT_API int orch_join(orch *o, const char *name, const orch_seg *segs, int n_segs, int32_t *var);

WEFT_API int32_t orch_n_vars(const orch *o);
WEFT_API orch_var_state orch_var_state_of(const orch *o, int32_t var); /* FAILED for a bad id */
/* Value of a ready variable (borrowed, NUL-terminated; NULL if not ready). */
WEFT_API const char *orch_var_value(const orch *o, int32_t var, size_t *len);
/* True once the listener's on_done has been called for var (a variable
 * made by orch_var_new: always): its on_text pieces have all been given.
 * A value can be ready a little before that, while the loop delivers what
 * came before it; a waiter that wants the pieces first waits for this. */
WEFT_API bool orch_var_announced(const orch *o, int32_t var);
/* The text of a pending variable that the listener's on_text has been given
 * so far, the head of its value (borrowed until the next orch call; NULL and
 * *len 0 when nothing was). A watcher that starts late begins with it. */
WEFT_API const char *orch_var_streamed(const orch *o, int32_t var, size_t *len);
/* Error of a failed variable (borrowed; NULL if not failed). */
WEFT_API const char *orch_var_error(const orch *o, int32_t var);

/* Marks var awaited: its producer and every pending call upstream get
 * latency priority (raised in the engine too if already submitted). */
WEFT_API int orch_await(orch *o, int32_t var);

/* Renders and submits the calls that are ready. Called by the orchestrator
 * itself after engine events; call it after adding calls from outside the
 * listener. Completions it causes (joins, stored values, failures) are
 * delivered to the listener from the event loop, not from here. */
WEFT_API void orch_flush(orch *o);

/* True when no call is waiting, ready or in the engine and nothing is left
 * to deliver to the listener. */
WEFT_API bool orch_idle(const orch *o);
/* Fails every call not done yet with `why` (e.g. the script failed) and
 * cancels what is in the engine. */
WEFT_API void orch_cancel_all(orch *o, const char *why);

struct orch_call_info {
    const char *name;   /* borrowed */
    int32_t out;        /* output variable (the first of n_out, consecutive) */
    int32_t n_out;
    int32_t priority;   /* current objective priority */
    bool is_llm;        /* false for joins */
    bool from_store;    /* value came from hooks.lookup */
    uint64_t key;       /* 0 until rendered */
    int32_t n_prompt, n_cached, n_generated;
    int64_t done_seq;   /* order of completion (0, 1, ...), -1 if not done */
    double t_submit, t_done; /* weft_now() */
};

WEFT_API int32_t orch_n_calls(const orch *o);
/* The call producing var (-1 for variables made by orch_var_new). */
WEFT_API int32_t orch_var_producer(const orch *o, int32_t var);
WEFT_API int orch_call_info_get(const orch *o, int32_t call, orch_call_info *info);

typedef struct orch_stats {
    int64_t n_calls;        /* LLM calls created */
    int64_t n_submitted;    /* sent to the engine */
    int64_t n_from_store;   /* completed from hooks.lookup */
    int64_t n_failed;       /* LLM calls failed (including not run) */
    int64_t n_prompt_tokens, n_cached_tokens, n_generated; /* over engine calls */
    int64_t n_warm, n_warm_tokens; /* heads of waiting calls sent ahead to the
                                      prefix cache (graph mode; not in the above) */
} orch_stats;
WEFT_API orch_stats orch_get_stats(const orch *o);

#ifdef __cplusplus
}
#endif
#endif

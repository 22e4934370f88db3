/*
 * weft/engine.h — the serving engine: many concurrent requests over one model,
 * run by a step loop on the engine's own thread with continuous batching
 * (each step one forward pass mixing the decode tokens of running requests
 * with prefill chunks of new ones under a token budget), a paged KV cache
 * whose full blocks are shared between requests with the same prompt prefix
 * (automatic prefix caching), priorities, preemption and cancellation.
 *
 * Threading: every function here is thread-safe and never blocks on the
 * step loop (submit and cancel only take a short lock). Events are delivered
 * on the engine thread: a callback must return quickly and must not call
 * weft_engine_destroy; it may call weft_engine_submit / weft_engine_cancel.
 */
#ifndef WEFT_ENGINE_H
#define WEFT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/model.h"
#include "weft/sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_engine weft_engine;

typedef struct weft_engine_params {
    weft_ctx_params ctx;  /* n_ctx per request, n_threads, n_batch = token budget
                             per step, n_seq_max = requests running at once,
                             kv_mem = KV pool bytes (0: n_seq_max x n_ctx) */
    bool prefix_cache;    /* share full KV blocks across equal prompt prefixes */
    bool share_generated; /* with prefix_cache, also share the blocks of ended
                             requests' generated tokens with later prompts
                             that repeat them. Off by default: that KV comes
                             from the decoding kernels and differs in the
                             last bits from a prompt's, so a later request's
                             output would depend on what the cache held. */
    int32_t max_waiting;  /* submit fails with WEFT_EBUSY past this (0 = no limit);
                             an n larger than max_waiting + n_seq_max, which
                             could never be queued, is WEFT_EINVAL */
    int32_t prefill_cap;  /* prompt tokens per step while some request is
                             decoding (a long prefill chunk delays every
                             decode token in its step); 0: n_batch.
                             Default 64. */
    int32_t spec_max;     /* speculative decoding: at most this many draft
                             tokens per decoding request and step (prompt
                             lookup, verified in the same step; the output
                             is the same as without). How many a step takes
                             follows its modelled goodput. 0: off. Default 8. */
} weft_engine_params;

WEFT_API weft_engine_params weft_engine_default_params(void);

/* Largest weft_request.n. */
#define WEFT_ENGINE_MAX_N 128

typedef struct weft_request {
    const int32_t *tokens; /* prompt token ids (copied) */
    int32_t n_tokens;
    weft_sampling sampling;
    int32_t max_tokens;    /* tokens to generate, >= 1 */
    const char *const *stop; /* stop strings (copied), n_stop of them */
    int n_stop;
    int32_t priority;      /* higher is admitted first and preempted last */
    bool ignore_eos;       /* do not stop at end-of-generation tokens */
    bool logprobs;         /* fill weft_event.logprob (a log-softmax over the
                              vocabulary per token; off, it is 0) */
    int32_t n;             /* completions of this prompt (0 or 1: one). The
                              prompt is computed once; when it is done the
                              sequence is forked n ways (copy-on-write KV)
                              and completion i samples with seed + i. All
                              share one id; events carry the index and each
                              index gets its own final event. */
} weft_request;

typedef struct weft_event {
    uint64_t id;          /* the request */
    int32_t index;        /* which of its n completions (0 when n <= 1) */
    int32_t token;        /* generated token id, or -1 in the final event */
    const char *text;     /* its text: complete UTF-8 only, may be empty; not NUL-terminated */
    size_t text_len;
    float logprob;        /* of `token` under the model (raw logits), when the
                             request asked for logprobs; else 0 */
    bool done;            /* the last event of this request */
    int status;           /* in the final event: 0, WEFT_ECANCELED, or the error */
    const char *finish;   /* in the final event: "stop", "length", "cancelled", "error" */
    int32_t n_prompt;     /* prompt tokens */
    int32_t n_cached;     /* prompt tokens whose KV came from the prefix cache */
    int32_t n_generated;
    double t_first;       /* seconds from submit to the first token (final event) */
} weft_event;

/* Borrowed event; valid during the call. */
typedef void (*weft_event_cb)(const weft_event *ev, void *user);

WEFT_API int weft_engine_create(const weft_model *m, const weft_engine_params *p,
                                weft_engine **out);
/* Cancels what is in flight (each gets its final event), stops the thread. */
WEFT_API void weft_engine_destroy(weft_engine *e);

/* Queues a request; *id gets its id. Errors (the request is not queued and
 * gets no event): WEFT_EINVAL (empty prompt, bad token id, max_tokens < 1,
 * bad sampling), WEFT_ERANGE (prompt + max_tokens beyond n_ctx, or more KV
 * blocks than the whole pool), WEFT_EBUSY (queue full). */
WEFT_API int weft_engine_submit(weft_engine *e, const weft_request *r, weft_event_cb cb,
                                void *user, uint64_t *id);
/* Cancels a queued or running request (every one of its n completions): its
 * KV is freed at the next step and it gets a final event with
 * WEFT_ECANCELED. WEFT_ENOTFOUND if the id was never issued; an id that
 * already finished is ignored. */
WEFT_API int weft_engine_cancel(weft_engine *e, uint64_t id);

/* Changes the priority of a queued or running request (all its
 * completions), e.g. when a client starts waiting on its result. Applied at
 * the next step; an id that already finished is ignored. WEFT_ENOTFOUND if
 * the id was never issued. */
WEFT_API int weft_engine_set_priority(weft_engine *e, uint64_t id, int32_t priority);

typedef struct weft_engine_stats {
    int64_t n_requests;       /* submitted */
    int64_t n_finished;
    int64_t n_prompt_tokens;  /* over admitted requests */
    int64_t n_cached_tokens;  /* prompt tokens served from the prefix cache */
    int64_t n_computed_tokens;/* tokens run through the forward pass */
    int64_t n_generated;
    int64_t n_preempted;
    int64_t n_steps;
    int64_t n_drafted;        /* draft tokens run (speculative decoding) */
    int64_t n_draft_accepted; /* of them, kept as output */
    int32_t n_running, n_waiting;
    int32_t blocks_total, blocks_free, blocks_cached;
} weft_engine_stats;
WEFT_API weft_engine_stats weft_engine_get_stats(weft_engine *e);

/* Blocks until nothing is queued or running (for tests and benchmarks). */
WEFT_API void weft_engine_wait_idle(weft_engine *e);

#ifdef __cplusplus
}
#endif
#endif

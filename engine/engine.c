/*
 * The serving engine: a step loop on its own thread. Each step builds one
 * token batch — first the decode token of every running request, then
 * prefill chunks of the others, highest priority first, under the n_batch
 * token budget — runs one forward pass, samples, and emits events.
 *
 * KV: each running request owns one sequence slot of the context. Full
 * blocks of prompts (and of finished outputs) are registered in the prefix
 * index; a new request's prompt is looked up block by block and the hits are
 * attached to its sequence, so only the rest is computed. When the pool runs
 * short the index evicts its least recently used unreferenced blocks; when
 * that is not enough the lowest-priority running request is preempted (its
 * blocks dropped, its prompt + output so far recomputed when it is admitted
 * again).
 */
#include "weft/engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/prefix.h"
#include "engine/ctx_internal.h"
#include "engine/spec.h"


typedef struct req {
    uint64_t id;
    weft_event_cb cb;
    void *user;
    int32_t *tokens;    /* prompt, then generated tokens */
    int32_t n_prompt, n_tokens, cap;
    int32_t max_tokens, n_generated;
    int32_t priority;
    bool ignore_eos, logprobs;
    char **stop;
    int n_stop;
    weft_sampler *smp;
    int32_t seq;        /* -1 while waiting */
    int32_t n_done;     /* positions whose KV its sequence holds */
    int32_t n_cached;
    bool cancelled;
    double t_submit, t_first;
    char *text;         /* generated text, for stop strings */
    size_t text_len, text_cap, emitted;
    bool stop_hit;      /* a stop string completed: nothing after it is output */
    bool admitted;      /* had a slot once: a re-admission after preemption does not count again */
    tok_utf8_stream us;
    int32_t index;      /* which completion of its request */
    int32_t draft[SPEC_MAX_DRAFT]; /* drafts for this step (spec.h) */
    int32_t n_draft;    /* of them in the batch being built */
    double spec_hit, spec_try; /* drafts accepted, drafts judged (a rejection ends a judgement) */
    struct req *sibs;   /* completions 1..n-1, waiting for this one's prompt */
    struct req *next;
} req;

struct weft_engine {
    const weft_model *m;
    weft_engine_params p;
    weft_ctx *ctx;
    prefix_index *prefix;
    int32_t n_slots;
    req **running;      /* (n_slots) by sequence */
    req *waiting;       /* priority order; engine thread only */
    int32_t n_waiting;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake, idle;
    req *incoming;      /* under mu */
    uint64_t *cancels;  /* ids, under mu */
    int n_cancels, cap_cancels;
    struct reprio { uint64_t id; int32_t priority; } *reprios; /* under mu */
    int n_reprios, cap_reprios;
    int32_t n_pending;  /* incoming + waiting + running, under mu */
    bool settled;       /* n_pending reached 0 and the statistics were published
                           since (under mu): what weft_engine_wait_idle waits for */
    bool stop;
    bool trace; /* WEFT_TRACE set: trace_step after every forward pass, trace_request per completion */
    uint64_t next_id;
    spec_cost cost;     /* step time against tokens, for the draft planner */
    double spec_hit, spec_try; /* over every request: the prior of a new one */
    bool spec_skip;     /* this step's batch ran out of KV with drafts: none */
    weft_engine_stats st;  /* published copy, under mu */
    weft_engine_stats lst; /* the engine thread's own counters */

    /* batch scratch */
    int32_t *b_tok, *b_pos, *b_seq;
    int8_t *b_want;
    int8_t *b_prompt;  /* token is part of its request's prompt */
    int32_t b_drafts;  /* draft tokens in the batch */
    req **b_req;        /* request of each logits row */
};

weft_engine_params weft_engine_default_params(void)
{
    weft_engine_params p;
    memset(&p, 0, sizeof p);
    p.ctx = weft_ctx_default_params();
    p.ctx.n_seq_max = 16;
    p.ctx.n_batch = 256;
    p.prefix_cache = true;
    p.max_waiting = 0;
    p.prefill_cap = 64;
    p.spec_max = 8;
    return p;
}

static void req_free(req *r)
{
    if (!r) return;
    for (int i = 0; i < r->n_stop; i++) weft_free(r->stop[i]);
    weft_free(r->stop);
    weft_free(r->tokens);
    weft_free(r->text);
    weft_sampler_free(r->smp);
    weft_free(r);
}

/* WEFT_TRACE=1: one line per finished completion — its prompt's token ids,
 * how many came from the prefix cache and how many tokens it generated —
 * so that a trace holds the whole work of a run, in order, for a replay on
 * another engine (bench/workflows.py --against-llama). */
static void trace_request(const req *r, int status)
{
    flockfile(stderr);
    fprintf(stderr, "weft request t=%.3f id=%llu index=%d status=%d prompt=%d cached=%d generated=%d ids=", weft_now(),
            (unsigned long long)r->id, (int)r->index, status, (int)r->n_prompt, (int)r->n_cached,
            (int)r->n_generated);
    for (int32_t k = 0; k < r->n_prompt && k < r->n_tokens; k++)
        fprintf(stderr, k ? ",%d" : "%d", (int)r->tokens[k]);
    fputc('\n', stderr);
    funlockfile(stderr);
}

static void publish_stats(weft_engine *e);

static void emit_final(weft_engine *e, req *r, int status, const char *finish)
{
    if (e->trace) trace_request(r, status);
    /* a normal end outputs what was held back in case it began a stop string,
     * then the incomplete UTF-8 tail; neither after a completed stop string */
    char tail[16];
    const char *text = tail;
    size_t tl = status == 0 && !r->stop_hit ? tok_utf8_flush(&r->us, tail) : 0;
    if (status == 0 && !r->stop_hit && r->text_len > r->emitted) {
        char *nt = weft_realloc(r->text, r->text_len + tl);
        if (nt) {
            memcpy(nt + r->text_len, tail, tl);
            r->text = nt;
            text = nt + r->emitted;
            tl += r->text_len - r->emitted;
        }
    }
    weft_event ev = {.id = r->id, .index = r->index, .token = -1, .text = text, .text_len = tl, .done = true,
                     .status = status, .finish = finish, .n_prompt = r->n_prompt,
                     .n_cached = r->n_cached, .n_generated = r->n_generated,
                     .t_first = r->t_first > 0 ? r->t_first - r->t_submit : 0};
    /* a caller that reads the statistics once its last request ended sees
     * that request's tokens counted */
    publish_stats(e);
    if (r->cb) r->cb(&ev, r->user);
    pthread_mutex_lock(&e->mu);
    e->st.n_finished++;
    e->n_pending--;
    pthread_mutex_unlock(&e->mu);
}

/* Final event for r and the completions still waiting for its prompt; frees
 * them all. */
static void req_finish(weft_engine *e, req *r, int status, const char *finish)
{
    for (req *sb = r->sibs; sb;) {
        req *next = sb->next;
        emit_final(e, sb, status, finish);
        req_free(sb);
        sb = next;
    }
    r->sibs = NULL;
    emit_final(e, r, status, finish);
    req_free(r);
}

/* Drops a running request's sequence, keeping full blocks in the index
 * (register_blocks): those of its prompt, and of its output too only with
 * params.share_generated — a generated token's KV comes from the decoding
 * kernels and differs in the last bits from the same token's computed as a
 * prompt's, so serving it to a later prompt would make that request's
 * output depend on what the cache held. That holds for a preempted request
 * too: its output's blocks, once in the index, would outlive it and serve
 * others; it computes its output's KV again, as a prompt, when it comes
 * back (as it did whenever the blocks were evicted meanwhile). */
static void release_seq(weft_engine *e, req *r, bool register_blocks)
{
    if (r->seq < 0) return;
    int32_t n_keep = r->n_done;
    if (!e->p.share_generated && n_keep > r->n_prompt) n_keep = r->n_prompt;
    if (register_blocks && e->prefix && n_keep >= KV_BLOCK_TOKENS) {
        const int32_t *blocks;
        int32_t nb = weft_seq_blocks(e->ctx, r->seq, &blocks);
        prefix_insert(e->prefix, r->tokens, n_keep, blocks, nb);
    }
    weft_seq_truncate(e->ctx, r->seq, 0);
    e->running[r->seq] = NULL;
    r->seq = -1;
}

static void waiting_insert(weft_engine *e, req *r)
{
    req **pp = &e->waiting;
    while (*pp && ((*pp)->priority > r->priority ||
                   ((*pp)->priority == r->priority && (*pp)->id < r->id)))
        pp = &(*pp)->next;
    r->next = *pp;
    *pp = r;
    e->n_waiting++;
}

/* ---- submit / cancel (any thread) ---------------------------------------- */

/* Frees a request that was never queued, with its completions. */
static void req_free_all(req *r)
{
    for (req *sb = r->sibs; sb;) {
        req *next = sb->next;
        req_free(sb);
        sb = next;
    }
    req_free(r);
}

/* A request record for completion `index` of rq (sampling seed + index). */
static int req_new(const weft_request *rq, int32_t n_vocab, int32_t index, req **out)
{
    *out = NULL;
    req *r = weft_calloc(1, sizeof *r);
    if (!r) return weft_error(WEFT_ENOMEM, "out of memory");
    r->cap = rq->n_tokens + rq->max_tokens;
    r->tokens = weft_malloc((size_t)r->cap * sizeof *r->tokens);
    r->stop = rq->n_stop ? weft_calloc((size_t)rq->n_stop, sizeof *r->stop) : NULL;
    weft_sampling sp = rq->sampling;
    sp.seed += (uint64_t)index;
    int rc = weft_sampler_create(&sp, n_vocab, &r->smp);
    if (rc < 0 || !r->tokens || (rq->n_stop && !r->stop)) {
        req_free(r);
        return rc < 0 ? rc : weft_error(WEFT_ENOMEM, "out of memory");
    }
    memcpy(r->tokens, rq->tokens, (size_t)rq->n_tokens * sizeof *r->tokens);
    r->n_prompt = r->n_tokens = rq->n_tokens;
    for (int i = 0; i < rq->n_stop; i++) {
        if (!(r->stop[i] = weft_strdup(rq->stop[i] ? rq->stop[i] : ""))) {
            r->n_stop = i;
            req_free(r);
            return weft_error(WEFT_ENOMEM, "out of memory");
        }
        r->n_stop = i + 1;
    }
    for (int32_t i = 0; i < rq->n_tokens; i++) weft_sampler_accept(r->smp, rq->tokens[i]);
    r->max_tokens = rq->max_tokens;
    r->priority = rq->priority;
    r->ignore_eos = rq->ignore_eos;
    r->logprobs = rq->logprobs;
    r->index = index;
    r->seq = -1;
    *out = r;
    return 0;
}

int weft_engine_submit(weft_engine *e, const weft_request *rq, weft_event_cb cb, void *user,
                       uint64_t *id)
{
    const weft_hparams *hp = weft_model_hparams(e->m);
    const int32_t n_ctx = weft_ctx_params_of(e->ctx)->n_ctx;
    if (!rq || rq->n_tokens <= 0 || !rq->tokens) return weft_error(WEFT_EINVAL, "empty prompt");
    if (rq->max_tokens < 1) return weft_error(WEFT_EINVAL, "max_tokens must be >= 1 (got %d)", rq->max_tokens);
    const int32_t n = rq->n > 1 ? rq->n : 1;
    if (rq->n < 0 || n > WEFT_ENGINE_MAX_N)
        return weft_error(WEFT_EINVAL, "n must be between 1 and %d (got %d)", WEFT_ENGINE_MAX_N, rq->n);
    for (int32_t i = 0; i < rq->n_tokens; i++)
        if (rq->tokens[i] < 0 || rq->tokens[i] >= hp->n_vocab)
            return weft_error(WEFT_EINVAL, "prompt token %d (position %d) out of range", rq->tokens[i], i);
    if ((int64_t)rq->n_tokens + rq->max_tokens > n_ctx)
        return weft_error(WEFT_ERANGE, "prompt (%d tokens) + max_tokens (%d) exceeds the context size %d",
                          rq->n_tokens, rq->max_tokens, n_ctx);
    const int64_t need_blocks = ((int64_t)rq->n_tokens + rq->max_tokens + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
    if (need_blocks > kv_pool_n_blocks(weft_ctx_kv(e->ctx)))
        return weft_error(WEFT_ERANGE, "the request needs %lld KV blocks, the pool has %d",
                          (long long)need_blocks, kv_pool_n_blocks(weft_ctx_kv(e->ctx)));
    if (rq->n_stop < 0 || rq->n_stop > 64) return weft_error(WEFT_EINVAL, "at most 64 stop strings");
    req *r;
    int rc = req_new(rq, hp->n_vocab, 0, &r);
    if (rc < 0) return rc;
    for (int32_t i = n - 1; i >= 1; i--) {
        req *sb;
        if ((rc = req_new(rq, hp->n_vocab, i, &sb)) < 0) {
            req_free_all(r);
            return rc;
        }
        sb->next = r->sibs;
        r->sibs = sb;
    }
    r->t_submit = weft_now();
    for (req *sb = r->sibs; sb; sb = sb->next) {
        sb->cb = cb;
        sb->user = user;
        sb->t_submit = r->t_submit;
    }
    r->cb = cb;
    r->user = user;
    if (e->p.max_waiting > 0 && n > e->p.max_waiting + e->n_slots) { /* could never be queued */
        req_free_all(r);
        return weft_error(WEFT_EINVAL, "n = %d completions: this engine takes at most %d at once "
                          "(running slots + waiting queue)", n, e->p.max_waiting + e->n_slots);
    }
    pthread_mutex_lock(&e->mu);
    if (e->stop || (e->p.max_waiting > 0 && e->n_pending + n > e->p.max_waiting + e->n_slots)) {
        const bool stopping = e->stop;
        pthread_mutex_unlock(&e->mu);
        req_free_all(r);
        return stopping ? weft_error(WEFT_ECANCELED, "the engine is shutting down")
                        : weft_error(WEFT_EBUSY, "the request queue is full");
    }
    r->id = ++e->next_id;
    for (req *sb = r->sibs; sb; sb = sb->next) sb->id = r->id;
    /* keep arrival order in the incoming list */
    req **pp = &e->incoming;
    while (*pp) pp = &(*pp)->next;
    *pp = r;
    e->n_pending += n;
    e->settled = false;
    e->st.n_requests++;
    if (id) *id = r->id;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

int weft_engine_cancel(weft_engine *e, uint64_t id)
{
    pthread_mutex_lock(&e->mu);
    if (id == 0 || id > e->next_id) {
        pthread_mutex_unlock(&e->mu);
        return weft_error(WEFT_ENOTFOUND, "no request %llu", (unsigned long long)id);
    }
    if (e->n_cancels == e->cap_cancels) {
        int cap = e->cap_cancels ? 2 * e->cap_cancels : 16;
        uint64_t *nc = weft_realloc(e->cancels, (size_t)cap * sizeof *nc);
        if (!nc) {
            pthread_mutex_unlock(&e->mu);
            return weft_error(WEFT_ENOMEM, "out of memory");
        }
        e->cancels = nc;
        e->cap_cancels = cap;
    }
    e->cancels[e->n_cancels++] = id;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

int weft_engine_set_priority(weft_engine *e, uint64_t id, int32_t priority)
{
    pthread_mutex_lock(&e->mu);
    if (id == 0 || id > e->next_id) {
        pthread_mutex_unlock(&e->mu);
        return weft_error(WEFT_ENOTFOUND, "no request %llu", (unsigned long long)id);
    }
    for (req *r = e->incoming; r; r = r->next) /* not yet seen by the engine */
        if (r->id == id) {
            r->priority = priority;
            for (req *sb = r->sibs; sb; sb = sb->next) sb->priority = priority;
        }
    if (e->n_reprios == e->cap_reprios) {
        int cap = e->cap_reprios ? 2 * e->cap_reprios : 16;
        struct reprio *nr = weft_realloc(e->reprios, (size_t)cap * sizeof *nr);
        if (!nr) {
            pthread_mutex_unlock(&e->mu);
            return weft_error(WEFT_ENOMEM, "out of memory");
        }
        e->reprios = nr;
        e->cap_reprios = cap;
    }
    e->reprios[e->n_reprios++] = (struct reprio){id, priority};
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

/* ---- the step loop (engine thread) ---------------------------------------- */

static void apply_cancels(weft_engine *e, const uint64_t *ids, int n)
{
    for (int i = 0; i < n; i++) {
        for (req **pp = &e->waiting; *pp;) {
            req *r = *pp;
            if (r->id != ids[i]) {
                pp = &r->next;
                continue;
            }
            *pp = r->next;
            e->n_waiting--;
            req_finish(e, r, WEFT_ECANCELED, "cancelled");
        }
        for (int32_t s = 0; s < e->n_slots; s++) {
            req *r = e->running[s];
            if (r && r->id == ids[i]) {
                release_seq(e, r, true);
                req_finish(e, r, WEFT_ECANCELED, "cancelled");
            }
        }
    }
}

static void apply_reprios(weft_engine *e, const struct reprio *rp, int n)
{
    for (int i = 0; i < n; i++) {
        for (int32_t s = 0; s < e->n_slots; s++) {
            req *r = e->running[s];
            if (r && r->id == rp[i].id) r->priority = rp[i].priority;
            for (req *sb = r ? r->sibs : NULL; sb; sb = sb->next)
                if (sb->id == rp[i].id) sb->priority = rp[i].priority;
        }
        req *moved = NULL;
        for (req **pp = &e->waiting; *pp;) {
            req *r = *pp;
            if (r->id != rp[i].id) {
                pp = &r->next;
                continue;
            }
            *pp = r->next;
            e->n_waiting--;
            r->next = moved;
            moved = r;
        }
        while (moved) {
            req *r = moved;
            moved = r->next;
            r->priority = rp[i].priority;
            for (req *sb = r->sibs; sb; sb = sb->next) sb->priority = rp[i].priority;
            waiting_insert(e, r);
        }
    }
}

/* True when r gains by waiting: a running request still prefilling shares
 * more of r's leading full blocks than the prefix index holds yet, so r
 * finds them cached a step or two later instead of computing them again.
 * Blocks already cached are no reason to wait (step() registers a prompt's
 * full blocks as they are computed): requests that share a system prompt
 * are admitted together once its blocks are in, not one per step. */
static bool shares_with_prefilling(const weft_engine *e, const req *r)
{
    if (!e->prefix || r->n_tokens <= KV_BLOCK_TOKENS) return false;
    const int32_t r_blocks = (r->n_tokens - 1) / KV_BLOCK_TOKENS; /* admit() looks up this far */
    int32_t cached = -1;                                           /* computed when first needed */
    for (int32_t s = 0; s < e->n_slots; s++) {
        const req *o = e->running[s];
        if (!o || o->n_done >= o->n_prompt || o->n_prompt <= KV_BLOCK_TOKENS) continue;
        int32_t lim = o->n_prompt / KV_BLOCK_TOKENS, common = 0;
        if (lim > r_blocks) lim = r_blocks;
        while (common < lim && memcmp(o->tokens + (size_t)common * KV_BLOCK_TOKENS,
                                      r->tokens + (size_t)common * KV_BLOCK_TOKENS,
                                      KV_BLOCK_TOKENS * sizeof *r->tokens) == 0)
            common++;
        if (common == 0) continue;
        if (cached < 0) cached = prefix_count(e->prefix, r->tokens, r_blocks * KV_BLOCK_TOKENS);
        if (common > cached) return true;
    }
    return false;
}

static void admit(weft_engine *e)
{
    /* Blocks a newcomer may take: free ones and cached ones nobody uses. */
    kv_pool *kv = weft_ctx_kv(e->ctx);
    int32_t avail = kv_pool_n_free(kv);
    if (e->prefix && e->waiting) {
        prefix_stats ps;
        prefix_index_stats(e->prefix, &ps);
        avail += ps.n_evictable;
    }
    const int32_t chunk = weft_ctx_params_of(e->ctx)->n_batch;
    for (req **pp = &e->waiting; *pp;) {
        int32_t slot = 0;
        while (slot < e->n_slots && e->running[slot]) slot++;
        if (slot == e->n_slots) return;
        req *r = *pp;
        if (shares_with_prefilling(e, r)) {
            pp = &r->next;
            continue;
        }
        /* room for its first chunk (hits would only lower the need); an
         * empty engine admits anyway: the request fits the pool (submit
         * checked) once everything cached is evicted */
        const int32_t first = r->n_tokens < chunk ? r->n_tokens : chunk;
        const int32_t need = first / KV_BLOCK_TOKENS + 2;
        bool any_running = false;
        for (int32_t s = 0; s < e->n_slots && !any_running; s++) any_running = e->running[s] != NULL;
        if (need > avail && any_running) return;
        avail -= need;
        *pp = r->next;
        e->n_waiting--;
        r->seq = slot;
        r->n_done = 0;
        e->running[slot] = r;
        if (e->prefix) {
            /* at least the last token is computed: its logits are needed */
            const int32_t max_blocks = (r->n_tokens - 1) / KV_BLOCK_TOKENS;
            int32_t *blocks = max_blocks > 0 ? weft_malloc((size_t)max_blocks * sizeof *blocks) : NULL;
            const int32_t hits =
                blocks ? prefix_lookup(e->prefix, r->tokens, r->n_tokens, blocks, max_blocks) : 0;
            if (hits > 0 && weft_seq_attach(e->ctx, slot, blocks, hits * KV_BLOCK_TOKENS) == 0) {
                r->n_done = hits * KV_BLOCK_TOKENS;
            } else {
                for (int32_t i = 0; i < hits; i++) kv_block_unref(weft_ctx_kv(e->ctx), blocks[i]);
            }
            weft_free(blocks);
        }
        if (!r->admitted) { /* not a re-admission after preemption (maybe mid-prefill) */
            r->admitted = true;
            r->n_cached = r->n_done;
            e->lst.n_prompt_tokens += r->n_prompt;
            e->lst.n_cached_tokens += r->n_done < r->n_prompt ? r->n_done : r->n_prompt;
        }
    }
}

/* Preempts the lowest-priority running request (latest id on ties). */
static bool preempt_one(weft_engine *e)
{
    req *victim = NULL;
    int32_t n_running = 0;
    for (int32_t s = 0; s < e->n_slots; s++) {
        req *r = e->running[s];
        if (!r) continue;
        n_running++;
        if (!victim || r->priority < victim->priority ||
            (r->priority == victim->priority && r->id > victim->id))
            victim = r;
    }
    if (!victim || n_running < 2) return false;
    release_seq(e, victim, true);
    waiting_insert(e, victim);
    e->lst.n_preempted++;
    return true;
}

static bool is_decoding(const req *r) { return r->n_tokens - r->n_done == 1 && r->n_generated > 0; }

/* Sets n_draft of every running request: drafts (spec.h) for the decoding
 * ones as far as the step's modelled goodput rises, none for the others. */
static void plan_drafts(weft_engine *e, int32_t budget)
{
    enum { MAX_CAND = 256 };
    req *dec[MAX_CAND];
    spec_cand cand[MAX_CAND];
    int32_t k[MAX_CAND];
    int m = 0;
    int32_t prefill = 0, n_dec = 0; /* every decoding request, drafted or not */
    const bool drafting = e->p.spec_max > 0 && !e->spec_skip;
    /* a new request starts from what requests so far accepted */
    const double prior = (e->spec_hit + 1.0) / (e->spec_try + 2.0);
    for (int32_t s = 0; s < e->n_slots; s++) {
        req *r = e->running[s];
        if (!r) continue;
        r->n_draft = 0;
        if (r->n_done >= r->n_tokens) continue;
        if (!is_decoding(r)) {
            prefill += r->n_tokens - r->n_done;
            continue;
        }
        n_dec++;
        if (!drafting || m == MAX_CAND) continue;
        int32_t max = r->max_tokens - r->n_generated - 1; /* k drafts give up to k + 1 tokens */
        if (max > e->p.spec_max) max = e->p.spec_max;
        if (max > SPEC_MAX_DRAFT) max = SPEC_MAX_DRAFT;
        dec[m] = r;
        cand[m].n_draft = spec_propose(r->tokens, r->n_tokens, max, r->draft);
        cand[m].p_accept = (r->spec_hit + 2.0 * prior) / (r->spec_try + 2.0);
        m++;
    }
    if (m == 0) return;
    const int32_t cap = e->p.prefill_cap > 0 ? e->p.prefill_cap : budget;
    int32_t n0 = n_dec + (prefill < cap ? prefill : cap);
    if (n0 > budget) n0 = budget;
    spec_plan(cand, m, n0, spec_cost_slope(&e->cost), budget - n0, k);
    for (int i = 0; i < m; i++) dec[i]->n_draft = k[i];
}

/* Fills the batch; returns its size. A decoding request's drafts follow its
 * last token, each a row with logits. */
static int32_t build_batch(weft_engine *e, int32_t *n_rows)
{
    int32_t budget = weft_ctx_params_of(e->ctx)->n_batch;
    int32_t n = 0, rows = 0;
    plan_drafts(e, budget);
    e->b_drafts = 0;
    /* decode tokens first: they hold the latency of running requests */
    for (int pass = 0; pass < 2; pass++) {
        /* pass 1: prefill chunks in priority order (scan slots, best first);
         * with decode tokens in, at most prefill_cap of them (a long prompt
         * must not stretch the step every decoding request waits for) */
        if (pass == 1 && n > 0 && e->p.prefill_cap > 0 && n + e->p.prefill_cap < budget)
            budget = n + e->p.prefill_cap;
        for (;;) {
            req *best = NULL;
            for (int32_t s = 0; s < e->n_slots; s++) {
                req *r = e->running[s];
                if (!r || r->n_done >= r->n_tokens) continue;
                if ((pass == 0) != is_decoding(r)) continue;
                if (r->seq < 0) continue;
                /* already in this batch? */
                bool in = false;
                for (int32_t k = 0; k < rows && !in; k++) in = e->b_req[k] == r;
                for (int32_t k = 0; k < n && !in; k++) in = e->b_seq[k] == r->seq;
                if (in) continue;
                if (!best || r->priority > best->priority ||
                    (r->priority == best->priority && r->id < best->id))
                    best = r;
            }
            if (!best || n >= budget) break;
            int32_t take = best->n_tokens - best->n_done;
            if (take > budget - n) take = budget - n;
            for (int32_t k = 0; k < take; k++) {
                e->b_tok[n] = best->tokens[best->n_done + k];
                e->b_pos[n] = best->n_done + k;
                e->b_seq[n] = best->seq;
                e->b_want[n] = 0;
                e->b_prompt[n] = best->n_done + k < best->n_prompt;
                n++;
            }
            if (best->n_done + take == best->n_tokens) {
                e->b_want[n - 1] = 1;
                e->b_req[rows++] = best;
            }
            if (pass == 0) {
                if (best->n_draft > budget - n) best->n_draft = budget - n;
                for (int32_t d = 0; d < best->n_draft; d++, n++) {
                    e->b_tok[n] = best->draft[d];
                    e->b_pos[n] = best->n_tokens + d;
                    e->b_seq[n] = best->seq;
                    e->b_want[n] = 1;
                    e->b_prompt[n] = 0;
                    e->b_req[rows++] = best;
                }
                e->b_drafts += best->n_draft;
            }
        }
    }
    *n_rows = rows;
    return n;
}

/* Appends the token's text; emits what cannot start a stop string.
 * Returns true when a stop string completed. */
static bool emit_token(weft_engine *e, req *r, int32_t tok, float lp)
{
    char piece[256], out[256 + 8];
    int pl = tok_piece(weft_model_vocab(e->m), tok, piece, sizeof piece, false);
    size_t ol = tok_utf8_push(&r->us, piece, pl > 0 ? (size_t)pl : 0, out);
    size_t from = r->emitted;
    bool stopped = false;
    if (r->n_stop == 0) {
        weft_event ev = {.id = r->id, .index = r->index, .token = tok, .text = out, .text_len = ol, .logprob = lp};
        if (r->cb) r->cb(&ev, r->user);
        return false;
    }
    if (r->text_len + ol > r->text_cap || !r->text) { /* allocated at the first token, empty or not */
        size_t cap = 2 * (r->text_len + ol) + 64;
        char *nt = weft_realloc(r->text, cap);
        if (!nt) return true; /* out of memory: stop this request cleanly */
        r->text = nt;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, out, ol);
    r->text_len += ol;
    /* nothing before `from` can start a stop string: scan the tail only */
    size_t safe;
    int64_t at = weft_stop_find(r->text + from, r->text_len - from, (const char *const *)r->stop,
                                r->n_stop, &safe);
    safe += from;
    if (at >= 0) {
        safe = from + (size_t)at;
        stopped = r->stop_hit = true;
    }
    if (safe < from) safe = from;
    weft_event ev = {.id = r->id, .index = r->index, .token = tok, .text = r->text + from, .text_len = safe - from,
                     .logprob = lp};
    r->emitted = safe;
    if (r->cb) r->cb(&ev, r->user);
    return stopped;
}

/* Samples r's next token from its logits row and emits it. Returns the
 * finish reason when r is done with it, else NULL. */
static const char *sample_emit(weft_engine *e, req *r, const float *lg)
{
    float lp = 0.0f;
    const int32_t tok = weft_sampler_sample(r->smp, lg, r->logprobs ? &lp : NULL);
    if (r->t_first == 0) r->t_first = weft_now();
    r->tokens[r->n_tokens++] = tok;
    r->n_generated++;
    e->lst.n_generated++;
    const bool eog = !r->ignore_eos && tok_is_eog(weft_model_vocab(e->m), tok);
    bool stopped = eog;
    if (!eog) stopped = emit_token(e, r, tok, lp);
    return stopped ? "stop" : r->n_generated >= r->max_tokens ? "length" : NULL;
}

static void finish_req(weft_engine *e, req *r, const char *finish)
{
    /* the last token's KV was never computed */
    release_seq(e, r, true);
    emit_final(e, r, 0, finish);
    req_free(r);
}

/* Samples r's next token from its logits row, emits it, finishes r when it
 * is done. */
static void advance(weft_engine *e, req *r, const float *lg)
{
    const char *finish = sample_emit(e, r, lg);
    if (finish) finish_req(e, r, finish);
}

/* r ran its last token and n_draft drafts (logits rows j0..j0+n_draft):
 * samples row after row while the token sampled is the draft the next row
 * ran, so r gets exactly the tokens decoding without drafts gives it. The
 * KV of the drafts not kept is dropped. */
static void verify(weft_engine *e, req *r, int32_t j0)
{
    const int32_t k = r->n_draft, p = r->n_tokens - 1; /* the last token's position */
    r->n_draft = 0;
    int32_t i = 0;
    const char *finish;
    for (;; i++) {
        finish = sample_emit(e, r, weft_get_logits(e->ctx, j0 + i));
        if (finish || i == k || r->tokens[r->n_tokens - 1] != r->draft[i]) break;
    }
    /* drafts 0..i-1 were kept; draft i, when judged, was not */
    const int32_t judged = i + (!finish && i < k);
    r->spec_hit += i;
    r->spec_try += judged;
    e->spec_hit = 0.999 * e->spec_hit + i;
    e->spec_try = 0.999 * e->spec_try + judged;
    e->lst.n_drafted += k;
    e->lst.n_draft_accepted += i;
    r->n_done = p + i + 1;
    weft_seq_truncate(e->ctx, r->seq, r->n_done);
    if (finish) finish_req(e, r, finish);
}

/* r's prompt is computed (lg: its last position's logits): its other
 * completions fork its sequence — sharing every KV block, the partial last
 * one copied on its first write — and sample their first token from the
 * same logits. A completion that finds no free sequence slot waits as an
 * ordinary request (the prefix index then serves its prompt's full blocks). */
static void fork_completions(weft_engine *e, req *r, const float *lg)
{
    req *sb = r->sibs;
    r->sibs = NULL;
    while (sb) {
        req *next = sb->next;
        sb->next = NULL;
        int32_t slot = 0;
        while (slot < e->n_slots && e->running[slot]) slot++;
        if (slot < e->n_slots && weft_seq_fork(e->ctx, r->seq, slot, r->n_prompt) == 0) {
            sb->seq = slot;
            sb->n_done = sb->n_cached = r->n_prompt;
            e->running[slot] = sb;
            e->lst.n_prompt_tokens += sb->n_prompt;
            e->lst.n_cached_tokens += sb->n_prompt;
            advance(e, sb, lg);
        } else {
            waiting_insert(e, sb);
        }
        sb = next;
    }
}

/* WEFT_TRACE=1: one line per forward pass to stderr — when it started
 * (weft_now), its tokens, how many of them are prompt tokens, the requests
 * it completes a step of, its time, how many requests run and wait, and
 * its draft tokens (speculative decoding). */
static void trace_step(const weft_engine *e, int32_t n, int32_t rows, int rc, double t0)
{
    const double ms = 1e3 * (weft_now() - t0);
    int32_t n_prompt = 0, n_running = 0;
    for (int32_t k = 0; k < n; k++) n_prompt += e->b_prompt[k];
    for (int32_t s = 0; s < e->n_slots; s++) n_running += e->running[s] != NULL;
    fprintf(stderr, "weft step t=%.3f tokens=%d prompt=%d rows=%d ms=%.2f running=%d waiting=%d rc=%d drafts=%d\n",
            t0, (int)n, (int)n_prompt, (int)(rows - e->b_drafts), ms, (int)n_running, (int)e->n_waiting, rc,
            (int)e->b_drafts);
}

static bool rows_have_drafts(const weft_engine *e, int32_t rows)
{
    for (int32_t j = 0; j < rows; j++)
        if (e->b_req[j]->n_draft > 0) return true;
    return false;
}

static void step(weft_engine *e)
{
    int32_t rows = 0, n = 0;
    int rc;
    admit(e);
    for (;;) {
        /* no admission inside this loop: a request preempted for lack of
         * blocks would come straight back and be preempted again */
        n = build_batch(e, &rows);
        if (n == 0) return;
        weft_batch b = {.n = n, .tokens = e->b_tok, .pos = e->b_pos, .seq = e->b_seq,
                        .want_logits = e->b_want, .prompt = e->b_prompt};
        const double t0 = weft_now();
        rc = weft_decode(e->ctx, &b);
        if (e->trace) trace_step(e, n, rows, rc, t0);
        if (rc == 0) spec_cost_observe(&e->cost, n, 1e3 * (weft_now() - t0));
        if (rc != WEFT_ENOKV) break;
        if (rows > 0 && n > 0 && !e->spec_skip && rows_have_drafts(e, rows)) {
            e->spec_skip = true; /* drafts first: they are only a bet */
            continue;
        }
        if (!preempt_one(e)) break;
    }
    e->spec_skip = false;
    e->lst.n_steps++;
    if (rc < 0) {
        /* the batch cannot run even alone (no KV): fail its requests */
        for (int32_t s = 0; s < e->n_slots; s++) {
            req *r = e->running[s];
            if (!r) continue;
            bool in = false;
            for (int32_t k = 0; k < n && !in; k++) in = e->b_seq[k] == s;
            if (!in) continue;
            release_seq(e, r, false);
            req_finish(e, r, rc, "error");
        }
        return;
    }
    e->lst.n_computed_tokens += n;
    /* every position in the batch is now cached */
    for (int32_t k = 0; k < n; k++) {
        req *r = e->running[e->b_seq[k]];
        if (r && e->b_pos[k] + 1 > r->n_done) r->n_done = e->b_pos[k] + 1;
    }
    if (e->prefix) /* a prompt still in progress: its full blocks so far can serve others now */
        for (int32_t s = 0; s < e->n_slots; s++) {
            req *r = e->running[s];
            if (!r || r->n_generated > 0 || r->n_done >= r->n_prompt || r->n_done < KV_BLOCK_TOKENS) continue;
            bool in = false;
            for (int32_t k = 0; k < n && !in; k++) in = e->b_seq[k] == s;
            if (!in) continue;
            const int32_t *blocks;
            int32_t nb = weft_seq_blocks(e->ctx, r->seq, &blocks);
            prefix_insert(e->prefix, r->tokens, r->n_done, blocks, nb);
        }
    for (int32_t j = 0; j < rows;) {
        req *r = e->b_req[j];
        const int32_t k = r->n_draft;
        const float *lg = weft_get_logits(e->ctx, j);
        if (r->n_generated == 0 && e->prefix && r->n_prompt >= KV_BLOCK_TOKENS) {
            /* prompt computed: later requests with this prefix can share it now */
            const int32_t *blocks;
            int32_t nb = weft_seq_blocks(e->ctx, r->seq, &blocks);
            prefix_insert(e->prefix, r->tokens, r->n_prompt, blocks, nb);
        }
        if (r->sibs) fork_completions(e, r, lg);
        if (k > 0)
            verify(e, r, j);
        else
            advance(e, r, lg);
        j += 1 + k;
    }
}

/* Copies the engine thread's view into the published statistics. */
static void publish_stats(weft_engine *e)
{
    int32_t nr = 0;
    for (int32_t i = 0; i < e->n_slots; i++) nr += e->running[i] != NULL;
    kv_pool *kv = weft_ctx_kv(e->ctx);
    prefix_stats ps = {0};
    if (e->prefix) prefix_index_stats(e->prefix, &ps);
    pthread_mutex_lock(&e->mu);
    e->st.n_prompt_tokens = e->lst.n_prompt_tokens;
    e->st.n_cached_tokens = e->lst.n_cached_tokens;
    e->st.n_computed_tokens = e->lst.n_computed_tokens;
    e->st.n_generated = e->lst.n_generated;
    e->st.n_preempted = e->lst.n_preempted;
    e->st.n_steps = e->lst.n_steps;
    e->st.n_drafted = e->lst.n_drafted;
    e->st.n_draft_accepted = e->lst.n_draft_accepted;
    e->st.n_running = nr;
    e->st.n_waiting = e->n_waiting;
    e->st.blocks_total = kv_pool_n_blocks(kv);
    e->st.blocks_free = kv_pool_n_free(kv);
    e->st.blocks_cached = ps.n_entries;
    pthread_mutex_unlock(&e->mu);
}

static void *engine_main(void *arg)
{
    weft_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        bool busy = e->n_waiting > 0;
        for (int32_t s = 0; s < e->n_slots && !busy; s++) busy = e->running[s] != NULL;
        while (!e->stop && !e->incoming && e->n_cancels == 0 && e->n_reprios == 0 && !busy)
            pthread_cond_wait(&e->wake, &e->mu);
        req *in = e->incoming;
        e->incoming = NULL;
        uint64_t cancels[64];
        int nc = e->n_cancels < 64 ? e->n_cancels : 64;
        if (nc > 0) {
            memcpy(cancels, e->cancels, (size_t)nc * sizeof *cancels);
            memmove(e->cancels, e->cancels + nc, (size_t)(e->n_cancels - nc) * sizeof *e->cancels);
            e->n_cancels -= nc;
        }
        struct reprio reprios[64];
        int nr = e->n_reprios < 64 ? e->n_reprios : 64;
        if (nr > 0) {
            memcpy(reprios, e->reprios, (size_t)nr * sizeof *reprios);
            memmove(e->reprios, e->reprios + nr, (size_t)(e->n_reprios - nr) * sizeof *e->reprios);
            e->n_reprios -= nr;
        }
        const bool stopping = e->stop;
        pthread_mutex_unlock(&e->mu);
        while (in) {
            req *next = in->next;
            waiting_insert(e, in);
            in = next;
        }
        apply_cancels(e, cancels, nc);
        apply_reprios(e, reprios, nr);
        if (stopping) {
            while (e->waiting) {
                req *r = e->waiting;
                e->waiting = r->next;
                e->n_waiting--;
                req_finish(e, r, WEFT_ECANCELED, "cancelled");
            }
            for (int32_t s = 0; s < e->n_slots; s++)
                if (e->running[s]) {
                    req *r = e->running[s];
                    release_seq(e, r, false);
                    req_finish(e, r, WEFT_ECANCELED, "cancelled");
                }
            return NULL;
        }
        step(e);
        publish_stats(e);
        pthread_mutex_lock(&e->mu);
        if (e->n_pending == 0) {
            e->settled = true;
            pthread_cond_broadcast(&e->idle);
        }
        pthread_mutex_unlock(&e->mu);
    }
}

static int32_t alloc_with_eviction(void *ud) { return prefix_alloc_block(ud); }

int weft_engine_create(const weft_model *m, const weft_engine_params *p, weft_engine **out)
{
    *out = NULL;
    weft_engine *e = weft_calloc(1, sizeof *e);
    if (!e) return weft_error(WEFT_ENOMEM, "out of memory");
    e->m = m;
    e->p = p ? *p : weft_engine_default_params();
    e->settled = true; /* idle, nothing to publish */
    const char *tr = getenv("WEFT_TRACE");
    e->trace = tr && *tr && strcmp(tr, "0") != 0;
    int rc = weft_ctx_create(m, &e->p.ctx, &e->ctx);
    if (rc < 0) {
        weft_free(e);
        return rc;
    }
    const weft_ctx_params *cp = weft_ctx_params_of(e->ctx);
    e->n_slots = cp->n_seq_max;
    e->running = weft_calloc((size_t)e->n_slots, sizeof *e->running);
    e->b_tok = weft_malloc((size_t)cp->n_batch * sizeof *e->b_tok);
    e->b_pos = weft_malloc((size_t)cp->n_batch * sizeof *e->b_pos);
    e->b_seq = weft_malloc((size_t)cp->n_batch * sizeof *e->b_seq);
    e->b_want = weft_malloc((size_t)cp->n_batch * sizeof *e->b_want);
    e->b_prompt = weft_malloc((size_t)cp->n_batch * sizeof *e->b_prompt);
    e->b_req = weft_malloc((size_t)cp->n_batch * sizeof *e->b_req);
    if (e->p.prefix_cache) {
        e->prefix = prefix_index_create(weft_ctx_kv(e->ctx), weft_model_fingerprint(m));
        if (e->prefix) weft_ctx_set_block_alloc(e->ctx, alloc_with_eviction, e->prefix);
    }
    if (!e->running || !e->b_tok || !e->b_pos || !e->b_seq || !e->b_want || !e->b_prompt || !e->b_req ||
        (e->p.prefix_cache && !e->prefix)) {
        rc = weft_error(WEFT_ENOMEM, "out of memory");
        goto fail;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->idle, NULL);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        rc = weft_error(WEFT_ENOMEM, "cannot start the engine thread");
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->wake);
        pthread_cond_destroy(&e->idle);
        goto fail;
    }
    *out = e;
    return 0;
fail:
    prefix_index_destroy(e->prefix);
    weft_ctx_destroy(e->ctx);
    weft_free(e->running);
    weft_free(e->b_tok);
    weft_free(e->b_pos);
    weft_free(e->b_seq);
    weft_free(e->b_want);
    weft_free(e->b_prompt);
    weft_free(e->b_req);
    weft_free(e);
    return rc;
}

void weft_engine_destroy(weft_engine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    for (req *r = e->incoming; r;) { /* submitted after the last drain */
        req *next = r->next;
        req_finish(e, r, WEFT_ECANCELED, "cancelled");
        r = next;
    }
    /* the index's blocks go back before the pool does */
    weft_ctx_set_block_alloc(e->ctx, NULL, NULL);
    prefix_index_destroy(e->prefix);
    weft_ctx_destroy(e->ctx);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->idle);
    weft_free(e->cancels);
    weft_free(e->reprios);
    weft_free(e->running);
    weft_free(e->b_tok);
    weft_free(e->b_pos);
    weft_free(e->b_seq);
    weft_free(e->b_want);
    weft_free(e->b_prompt);
    weft_free(e->b_req);
    weft_free(e);
}

weft_engine_stats weft_engine_get_stats(weft_engine *e)
{
    pthread_mutex_lock(&e->mu);
    weft_engine_stats s = e->st;
    pthread_mutex_unlock(&e->mu);
    return s;
}

void weft_engine_wait_idle(weft_engine *e)
{
    pthread_mutex_lock(&e->mu);
    /* not only n_pending == 0: the step that finished the last request
     * publishes its statistics after the final events */
    while (e->n_pending > 0 || !e->settled) pthread_cond_wait(&e->idle, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

/* Speculative decoding: the prompt-lookup proposer, the step-time fit and
 * the goodput planner (engine/spec.c), and the engine with drafts on a tiny
 * model — every event (token, log-probability, text, finish) the same as
 * without drafts, greedy and sampled, with stop strings, n completions and a
 * KV pool small enough to run out mid-step. */
#include <unistd.h>

#include "engine/spec.h"
#include "engine_common.h"
#include "test.h"
#include "tiny_model.h"

static weft_model *model;

TEST(propose_takes_what_followed_the_latest_longest_ngram)
{
    int32_t d[8];
    /* ... 1 2 3 [7 8] ... 1 2 3 [9 5] ... 1 2 3: the latest "1 2 3" wins */
    const int32_t t[] = {1, 2, 3, 7, 8, 0, 1, 2, 3, 9, 5, 4, 1, 2, 3};
    ASSERT_EQ_INT(spec_propose(t, 15, 8, d), 6);
    ASSERT_EQ_INT(d[0], 9);
    ASSERT_EQ_INT(d[1], 5);
    ASSERT_EQ_INT(d[5], 3);
    ASSERT_EQ_INT(spec_propose(t, 15, 2, d), 2); /* max */
    ASSERT_EQ_INT(spec_propose(t, 15, 0, d), 0);
    /* only "6 2" recurs (a 2-gram): what followed it */
    const int32_t u[] = {6, 2, 42, 43, 5, 6, 2};
    ASSERT_EQ_INT(spec_propose(u, 7, 8, d), 5);
    ASSERT_EQ_INT(d[0], 42);
    /* nothing recurs, or a 1-gram only: no drafts */
    const int32_t v[] = {1, 2, 3, 4, 5, 1};
    ASSERT_EQ_INT(spec_propose(v, 6, 8, d), 0);
    ASSERT_EQ_INT(spec_propose(v, 1, 8, d), 0);
}

TEST(cost_fit_recovers_the_step_time_line)
{
    spec_cost c = {0};
    ASSERT(fabs(spec_cost_slope(&c) - 0.15) < 1e-9); /* prior */
    for (int i = 0; i < 50; i++) spec_cost_observe(&c, 1, 4.0); /* no spread: still the prior */
    ASSERT(fabs(spec_cost_slope(&c) - 0.15) < 1e-9);
    for (int i = 0; i < 200; i++) spec_cost_observe(&c, 1 + i % 9, 4.0 + 0.5 * (i % 9)); /* 3.5 + 0.5 n */
    ASSERT(fabs(spec_cost_slope(&c) - 0.5 / 3.5) < 1e-6);
    spec_cost_observe(&c, 0, 1.0); /* ignored */
    spec_cost_observe(&c, 3, -1.0);
    ASSERT(fabs(spec_cost_slope(&c) - 0.5 / 3.5) < 1e-6);
}

TEST(plan_follows_goodput)
{
    int32_t k[3];
    /* one stream, cheap rows, likely drafts: several, no more than proposed */
    spec_cand one[] = {{.n_draft = 8, .p_accept = 0.8}};
    spec_plan(one, 1, 1, 0.1, 100, k);
    ASSERT(k[0] >= 3 && k[0] <= 8);
    /* the same with no room in the batch: none */
    spec_plan(one, 1, 1, 0.1, 0, k);
    ASSERT_EQ_INT(k[0], 0);
    /* unlikely drafts: none */
    spec_cand poor[] = {{.n_draft = 8, .p_accept = 0.05}};
    spec_plan(poor, 1, 1, 0.15, 100, k);
    ASSERT_EQ_INT(k[0], 0);
    /* a large decoding batch where each row costs a lot: none */
    spec_cand many[32];
    int32_t km[32];
    for (int i = 0; i < 32; i++) many[i] = (spec_cand){8, 0.6};
    spec_plan(many, 32, 32, 0.5, 100, km);
    int32_t sum = 0;
    for (int i = 0; i < 32; i++) sum += km[i];
    ASSERT_EQ_INT(sum, 0);
    /* one decoding request in a step a long prompt chunk makes slow anyway:
     * its drafts ride along, as far as the room left */
    spec_plan(one, 1, 60, 0.5, 4, k);
    ASSERT_EQ_INT(k[0], 4);
    /* the likelier request gets its drafts first */
    spec_cand mixed[] = {{4, 0.3}, {4, 0.9}, {0, 0.9}};
    spec_plan(mixed, 3, 3, 0.1, 100, k);
    ASSERT(k[1] > k[0]);
    ASSERT_EQ_INT(k[2], 0);
}

static weft_engine *engine(int32_t spec, size_t kv_blocks, int32_t n_seq)
{
    weft_engine_params p = weft_engine_default_params();
    p.ctx.n_seq_max = n_seq;
    p.ctx.n_ctx = 256;
    p.ctx.n_threads = 2;
    p.ctx.n_batch = 64;
    p.ctx.kv_mem = kv_blocks * 2 * 2 * 16 * 128 * 2; /* tiny model: see test_engine.c */
    p.spec_max = spec;
    weft_engine *e = NULL;
    if (weft_engine_create(model, &p, &e) != 0) fprintf(stderr, "engine: %s\n", weft_last_error());
    return e;
}

/* Completion i of a request goes to record user + i. */
static void collect_index_cb(const weft_event *ev, void *user)
{
    collect_cb(ev, (collected *)user + ev->index);
}

enum { N_REQ = 24 };

static int32_t prompts[N_REQ][96], lens[N_REQ];

/* Prompts with a repeated phrase (the proposer finds n-grams in them), and
 * in every other one the pair "x x" followed by something else, x being
 * what the tiny model repeats once it is past the prompt: when its output
 * reaches "x x" the proposer drafts what followed the pair in the prompt,
 * and the model does not follow — rejected drafts. */
static void make_prompts(void)
{
    uint32_t rng = 777;
    for (int i = 0; i < N_REQ; i++) {
        int32_t n = 30 + (int32_t)(tiny_rng(&rng) % 60), period = 3 + (int32_t)(tiny_rng(&rng) % 9);
        for (int32_t j = 0; j < n; j++)
            prompts[i][j] = j < period ? (int32_t)(tiny_rng(&rng) % 300) : prompts[i][j - period];
        lens[i] = n;
        if (i % 2) continue;
        for (int tries = 0; tries < 4; tries++) { /* x depends a little on the prompt */
            int32_t x;
            if (solo_greedy(model, prompts[i], n, 1, false, &x) != 1) break;
            const int32_t at = n / 3;
            prompts[i][at] = prompts[i][at + 1] = x;
            for (int k = 2; k < 6; k++) prompts[i][at + k] = (x + 17 * k) % 300;
        }
    }
}

/* The same requests on an engine with spec_max = spec: greedy and sampled
 * ones, some with stop strings, logprobs or 2 completions. */
static void run_all(int32_t spec, size_t kv_blocks, collected *got, weft_engine_stats *st)
{
    weft_engine *e = engine(spec, kv_blocks, 6);
    if (!e) return;
    for (int i = 0; i < N_REQ; i++) {
        weft_request r = {.tokens = prompts[i], .n_tokens = lens[i], .max_tokens = 10 + i * 3, .ignore_eos = i % 2};
        r.sampling = i % 3 == 0 ? weft_sampling_greedy() : weft_sampling_default();
        r.sampling.seed = 100 + (uint64_t)i;
        if (i % 4 == 1) r.sampling.repeat_penalty = 1.3f;
        r.logprobs = i % 5 == 2;
        static const char *const stops[] = {"\x41\x41", "z"};
        if (i % 6 == 4) r.stop = stops, r.n_stop = 2;
        r.n = i % 7 == 3 ? 2 : 1;
        collected *c = &got[2 * i];
        if (weft_engine_submit(e, &r, collect_index_cb, c, NULL) != 0) fprintf(stderr, "submit: %s\n", weft_last_error());
    }
    weft_engine_wait_idle(e);
    *st = weft_engine_get_stats(e);
    weft_engine_destroy(e);
}

static void check_same(const collected *a, const collected *b)
{
    ASSERT_EQ_INT(a->done, 1);
    ASSERT_EQ_INT(b->done, 1);
    ASSERT_EQ_INT(a->n, b->n);
    ASSERT(memcmp(a->toks, b->toks, (size_t)a->n * sizeof *a->toks) == 0);
    ASSERT(memcmp(a->lps, b->lps, (size_t)a->n * sizeof *a->lps) == 0);
    ASSERT_EQ_INT((int)a->text_len, (int)b->text_len);
    ASSERT(memcmp(a->text, b->text, a->text_len) == 0);
    ASSERT(strcmp(a->finish, b->finish) == 0);
    ASSERT_EQ_INT(a->status, b->status);
    ASSERT_EQ_INT(a->events_after_done, 0);
    ASSERT_EQ_INT(b->events_after_done, 0);
}

static void outputs_equal_with_and_without_drafts(size_t kv_blocks)
{
    static collected off[2 * N_REQ], on[2 * N_REQ];
    memset(off, 0, sizeof off);
    memset(on, 0, sizeof on);
    weft_engine_stats s_off = {0}, s_on = {0};
    run_all(0, kv_blocks, off, &s_off);
    run_all(8, kv_blocks, on, &s_on);
    fprintf(stderr, "  %zu blocks: drafted %lld, kept %lld; steps %lld without drafts, %lld with; preempted %lld, %lld\n",
            kv_blocks, (long long)s_on.n_drafted, (long long)s_on.n_draft_accepted, (long long)s_off.n_steps,
            (long long)s_on.n_steps, (long long)s_off.n_preempted, (long long)s_on.n_preempted);
    ASSERT_EQ_INT((int)s_off.n_drafted, 0);
    ASSERT(s_on.n_drafted > 0);
    ASSERT(s_on.n_draft_accepted > 0);
    ASSERT(s_on.n_drafted > s_on.n_draft_accepted); /* rejections were exercised too */
    ASSERT(s_on.n_steps < s_off.n_steps);
    ASSERT_EQ_INT((int)s_on.n_generated, (int)s_off.n_generated);
    for (int i = 0; i < N_REQ; i++)
        for (int c = 0; c < (i % 7 == 3 ? 2 : 1); c++) check_same(&off[2 * i + c], &on[2 * i + c]);
    /* greedy ones without a stop: what one sequence decoding alone gives */
    for (int i = 3; i < N_REQ; i += 6) {
        int32_t solo[128];
        ASSERT_EQ_INT(solo_greedy(model, prompts[i], lens[i], on[2 * i].n, false, solo), on[2 * i].n);
        ASSERT(memcmp(solo, on[2 * i].toks, (size_t)on[2 * i].n * sizeof *solo) == 0);
    }
    ASSERT_EQ_INT(s_on.blocks_free + s_on.blocks_cached, s_on.blocks_total); /* nothing leaked */
}

TEST(outputs_equal_with_and_without_drafts)
{
    outputs_equal_with_and_without_drafts(512);
}

TEST(outputs_equal_when_kv_runs_out_mid_step)
{
    /* 6 sequences of up to ~170 positions in 24, then 16 blocks of 16:
     * drafts run out of blocks (the step runs again without them) and
     * requests are preempted */
    outputs_equal_with_and_without_drafts(24);
    outputs_equal_with_and_without_drafts(16);
}

int main(void)
{
    RUN(propose_takes_what_followed_the_latest_longest_ngram);
    RUN(cost_fit_recovers_the_step_time_line);
    RUN(plan_follows_goodput);
    char path[256];
    if (!(model = tiny_engine_model(path, sizeof path, "spec"))) {
        fprintf(stderr, "tiny model: %s\n", weft_last_error());
        return 1;
    }
    make_prompts();
    RUN(outputs_equal_with_and_without_drafts);
    RUN(outputs_equal_when_kv_runs_out_mid_step);
    weft_model_free(model);
    unlink(path);
    TEST_DONE();
}

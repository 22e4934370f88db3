/* The serving engine on a tiny model: batched outputs equal solo runs,
 * n completions forked from one prefill, priorities raised while waiting,
 * prefix sharing (counters), priorities, 2,000 random requests with random
 * cancellations on a pool small enough to preempt and evict (no leaked
 * blocks), and bad requests rejected alone. */
#include <unistd.h>

#include "engine_common.h"
#include "test.h"
#include "tiny_model.h"


static weft_model *model;

static weft_engine *engine(int32_t n_seq, int32_t n_ctx, size_t kv_blocks, bool prefix)
{
    weft_engine_params p = weft_engine_default_params();
    p.ctx.n_seq_max = n_seq;
    p.ctx.n_ctx = n_ctx;
    p.ctx.n_threads = 2;
    p.ctx.n_batch = 64;
    /* tiny model: 2 layers x K,V x 16 positions x 128 values x 2 bytes */
    p.ctx.kv_mem = kv_blocks * 2 * 2 * 16 * 128 * 2;
    p.prefix_cache = prefix;
    weft_engine *e = NULL;
    if (weft_engine_create(model, &p, &e) != 0) fprintf(stderr, "engine: %s\n", weft_last_error());
    return e;
}

static uint32_t rng = 12345;

static void random_prompt(int32_t *t, int32_t n, const int32_t *shared, int32_t n_shared)
{
    for (int32_t i = 0; i < n; i++)
        t[i] = i < n_shared ? shared[i] : (int32_t)(tiny_rng(&rng) % 300);
}

static weft_request greedy_req(const int32_t *t, int32_t n, int32_t max_tokens)
{
    weft_request r = {.tokens = t, .n_tokens = n, .sampling = weft_sampling_greedy(),
                      .max_tokens = max_tokens, .ignore_eos = true};
    return r;
}

TEST(batched_outputs_equal_solo_runs)
{
    enum { N = 24 };
    static int32_t prompts[N][80];
    static int32_t lens[N], solo[N][16];
    static collected got[N];
    memset(got, 0, sizeof got);
    for (int i = 0; i < N; i++) {
        lens[i] = 3 + (int32_t)(tiny_rng(&rng) % 70);
        random_prompt(prompts[i], lens[i], NULL, 0);
        ASSERT_EQ_INT(solo_greedy(model, prompts[i], lens[i], 16, false, solo[i]), 16);
    }
    weft_engine *e = engine(8, 128, 256, true);
    ASSERT(e != NULL);
    for (int i = 0; i < N; i++) {
        weft_request r = greedy_req(prompts[i], lens[i], 16);
        ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, &got[i], NULL), 0);
    }
    weft_engine_wait_idle(e);
    for (int i = 0; i < N; i++) {
        ASSERT(got[i].done);
        ASSERT_EQ_INT(got[i].status, 0);
        ASSERT_STR_EQ(got[i].finish, "length");
        ASSERT_EQ_INT(got[i].n, 16);
        ASSERT(memcmp(got[i].toks, solo[i], sizeof solo[i]) == 0);
        ASSERT_EQ_INT(got[i].events_after_done, 0);
    }
    weft_engine_stats st = weft_engine_get_stats(e);
    ASSERT_EQ_INT(st.n_finished, N);
    ASSERT_EQ_INT(st.n_running, 0);
    weft_engine_destroy(e);
}

TEST(shared_prefix_is_computed_once)
{
    static int32_t a[120], b[120];
    random_prompt(a, 100, NULL, 0);
    random_prompt(b, 110, a, 96); /* 6 full blocks shared */
    int32_t solo_b[8];
    ASSERT_EQ_INT(solo_greedy(model, b, 110, 8, false, solo_b), 8);
    weft_engine *e = engine(4, 256, 64, true);
    ASSERT(e != NULL);
    collected ga = {0}, gb = {0};
    weft_request ra = greedy_req(a, 100, 8), rb = greedy_req(b, 110, 8);
    ASSERT_EQ_INT(weft_engine_submit(e, &ra, collect_cb, &ga, NULL), 0);
    weft_engine_wait_idle(e);
    weft_engine_stats s1 = weft_engine_get_stats(e);
    ASSERT_EQ_INT(weft_engine_submit(e, &rb, collect_cb, &gb, NULL), 0);
    weft_engine_wait_idle(e);
    weft_engine_stats s2 = weft_engine_get_stats(e);
    ASSERT_EQ_INT(gb.n_cached, 96);
    ASSERT_EQ_INT(s2.n_cached_tokens - s1.n_cached_tokens, 96);
    /* b computed its 14-token suffix and 7 decode steps, nothing else */
    ASSERT_EQ_INT(s2.n_computed_tokens - s1.n_computed_tokens, 14 + 7);
    ASSERT(memcmp(gb.toks, solo_b, sizeof solo_b) == 0);
    weft_engine_destroy(e);
}

/* Twelve requests with the same 32-token head, submitted together: the
 * head is computed once (by the first, whose long prompt takes four
 * steps), and the others are admitted as soon as the head's blocks are in
 * the index — after the first step, not when the first prompt is done, nor
 * one newcomer per step (each waiting on the previous one's prompt). With
 * no request decoding, every step is a full n_batch (64) of prompt tokens,
 * whatever prefill_cap says: 232 + 11 x 40 = 672 tokens take 11 steps. */
TEST(requests_sharing_a_cached_head_are_admitted_together)
{
    enum { N = 12, HEAD = 32, OWN = 40, LONG = 232 };
    static int32_t head[HEAD], prompts[N][LONG];
    static int32_t solo[N][1];
    static collected got[N];
    memset(got, 0, sizeof got);
    random_prompt(head, HEAD, NULL, 0);
    for (int i = 0; i < N; i++) {
        random_prompt(prompts[i], i == 0 ? LONG : HEAD + OWN, head, HEAD);
        ASSERT_EQ_INT(solo_greedy(model, prompts[i], i == 0 ? LONG : HEAD + OWN, 1, false, solo[i]), 1);
    }
    weft_engine_params p = weft_engine_default_params();
    p.ctx.n_seq_max = 16;
    p.ctx.n_ctx = 256;
    p.ctx.n_threads = 2;
    p.ctx.n_batch = 64;
    p.ctx.kv_mem = (size_t)256 * 2 * 2 * 16 * 128 * 2;
    p.prefill_cap = 16; /* applies only while some request decodes: none does here */
    weft_engine *e = NULL;
    ASSERT_EQ_INT(weft_engine_create(model, &p, &e), 0);
    for (int i = 0; i < N; i++) {
        weft_request r = greedy_req(prompts[i], i == 0 ? LONG : HEAD + OWN, 1);
        ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, &got[i], NULL), 0);
    }
    weft_engine_wait_idle(e);
    weft_engine_stats st = weft_engine_get_stats(e);
    for (int i = 0; i < N; i++) {
        ASSERT(got[i].done);
        ASSERT_EQ_INT(got[i].status, 0);
        ASSERT_EQ_INT(got[i].toks[0], solo[i][0]);
        ASSERT_EQ_INT(got[i].n_cached, i == 0 ? 0 : HEAD);
    }
    ASSERT_EQ_INT(st.n_computed_tokens, LONG + (N - 1) * OWN);
    /* one newcomer per step would take at least 4 + 11 */
    fprintf(stderr, "  %lld steps for %d prompt tokens\n", (long long)st.n_steps, LONG + (N - 1) * OWN);
    ASSERT(st.n_steps <= 12);
    weft_engine_destroy(e);
}

static void collect_by_index(const weft_event *ev, void *user)
{
    collect_cb(ev, (collected *)user + ev->index);
}

static weft_request sampled_req(const int32_t *t, int32_t n, int32_t max_tokens, uint64_t seed)
{
    weft_request r = greedy_req(t, n, max_tokens);
    r.sampling = weft_sampling_default();
    r.sampling.temperature = 50.0f; /* varied tokens from the tiny model */
    r.sampling.top_k = 0;
    r.sampling.top_p = 1.0f;
    r.sampling.min_p = 0.0f;
    r.sampling.seed = seed;
    return r;
}

TEST(stop_strings_end_the_output_before_them)
{
    int32_t t[20];
    random_prompt(t, 20, NULL, 0);
    weft_engine *e = engine(2, 128, 32, true);
    ASSERT(e != NULL);
    static collected free_run, stopped;
    memset(&free_run, 0, sizeof free_run);
    memset(&stopped, 0, sizeof stopped);
    /* seeded sampling: varied text (greedy on random weights repeats one
     * byte), the same in both runs up to the stop */
    weft_request r = sampled_req(t, 20, 24, 3);
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, &free_run, NULL), 0);
    weft_engine_wait_idle(e);
    free_run.text[free_run.text_len] = 0;
    /* stop at a 3-byte piece of the text past its start that does not occur earlier */
    char stop[4] = {0};
    size_t at = 0;
    for (size_t k = 4; k + 3 <= free_run.text_len && !at; k++) {
        memcpy(stop, free_run.text + k, 3);
        if (!memchr(stop, 0, 3) && strstr(free_run.text, stop) == free_run.text + k) at = k;
    }
    if (!at) {
        fprintf(stderr, "  free run: %zu bytes:", free_run.text_len);
        for (size_t k = 0; k < free_run.text_len; k++) fprintf(stderr, " %02x", (unsigned char)free_run.text[k]);
        fprintf(stderr, " tokens:");
        for (int k = 0; k < free_run.n; k++) fprintf(stderr, " %d", free_run.toks[k]);
        fprintf(stderr, "\n");
    }
    ASSERT(at > 0);
    fprintf(stderr, "  stop string at byte %zu of %zu\n", at, free_run.text_len);
    const char *stops[1] = {stop};
    r.stop = stops;
    r.n_stop = 1;
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, &stopped, NULL), 0);
    weft_engine_wait_idle(e);
    ASSERT_STR_EQ(stopped.finish, "stop");
    ASSERT_EQ_INT(stopped.text_len, at);
    ASSERT(memcmp(stopped.text, free_run.text, at) == 0);
    weft_engine_destroy(e);
}

/* Output that ends (max tokens) with the start of a stop string that never
 * completes is output all the same: the final event carries what was held
 * back. */
TEST(text_held_back_for_a_stop_string_is_output_at_the_end)
{
    int32_t t[20];
    random_prompt(t, 20, NULL, 0);
    weft_engine *e = engine(2, 128, 32, true);
    ASSERT(e != NULL);
    static collected free_run, held;
    memset(&free_run, 0, sizeof free_run);
    memset(&held, 0, sizeof held);
    weft_request r = sampled_req(t, 20, 16, 5);
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, &free_run, NULL), 0);
    weft_engine_wait_idle(e);
    ASSERT(free_run.text_len >= 1);
    /* the last byte of the output, then a byte no output has: never completes */
    char stop[3] = {free_run.text[free_run.text_len - 1], '\x01', 0};
    const char *stops[1] = {stop};
    r.stop = stops;
    r.n_stop = 1;
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, &held, NULL), 0);
    weft_engine_wait_idle(e);
    ASSERT_STR_EQ(held.finish, "length");
    ASSERT_EQ_INT(held.text_len, free_run.text_len);
    ASSERT(memcmp(held.text, free_run.text, free_run.text_len) == 0);
    weft_engine_destroy(e);
}

TEST(n_completions_fork_one_prefill)
{
    int32_t t[40];
    random_prompt(t, 40, NULL, 0); /* 2 full blocks and a partial one */
    weft_engine *e = engine(8, 128, 64, true);
    ASSERT(e != NULL);
    static collected many[4], one[4], cancelled[3];
    memset(many, 0, sizeof many);
    memset(one, 0, sizeof one);
    memset(cancelled, 0, sizeof cancelled);
    weft_request r = sampled_req(t, 40, 12, 7);
    r.n = 4;
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_by_index, many, NULL), 0);
    weft_engine_wait_idle(e);
    weft_engine_stats st = weft_engine_get_stats(e);
    /* the prompt once, then 11 decode steps per completion (each first
     * token comes from the shared prompt logits) */
    ASSERT_EQ_INT(st.n_computed_tokens, 40 + 4 * 11);
    ASSERT_EQ_INT(st.n_cached_tokens, 3 * 40);
    ASSERT_EQ_INT(st.n_finished, 4);
    for (int i = 0; i < 4; i++) {
        ASSERT(many[i].done);
        ASSERT_EQ_INT(many[i].n, 12);
        ASSERT_EQ_INT(many[i].n_cached, i == 0 ? 0 : 40);
        /* completion i is the n = 1 request with seed + i */
        weft_request r1 = sampled_req(t, 40, 12, 7 + (uint64_t)i);
        ASSERT_EQ_INT(weft_engine_submit(e, &r1, collect_cb, &one[i], NULL), 0);
        weft_engine_wait_idle(e);
        ASSERT_EQ_INT(one[i].n, 12);
        ASSERT(memcmp(many[i].toks, one[i].toks, sizeof one[i].toks[0] * 12) == 0);
    }
    ASSERT(memcmp(many[0].toks, many[1].toks, sizeof many[0].toks[0] * 12) != 0);
    /* cancelling the id ends every completion */
    r.n = 3;
    r.max_tokens = 60;
    uint64_t id;
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_by_index, cancelled, &id), 0);
    ASSERT_EQ_INT(weft_engine_cancel(e, id), 0);
    weft_engine_wait_idle(e);
    for (int i = 0; i < 3; i++) {
        ASSERT(cancelled[i].done);
        ASSERT_EQ_INT(cancelled[i].status, WEFT_ECANCELED);
    }
    st = weft_engine_get_stats(e);
    ASSERT_EQ_INT(st.blocks_free + st.blocks_cached, st.blocks_total);
    r.n = WEFT_ENGINE_MAX_N + 1;
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_by_index, cancelled, NULL), WEFT_EINVAL);
    weft_engine_destroy(e);
}

static uint64_t finish_order[8];
static int n_finish_order;

static void order_cb(const weft_event *ev, void *user)
{
    (void)user;
    pthread_mutex_lock(&collect_mu);
    if (ev->done && n_finish_order < 8) finish_order[n_finish_order++] = ev->id;
    pthread_mutex_unlock(&collect_mu);
}

TEST(priority_can_be_raised_while_waiting)
{
    int32_t t[20];
    random_prompt(t, 20, NULL, 0);
    weft_engine *e = engine(1, 128, 32, true); /* one request at a time */
    ASSERT(e != NULL);
    n_finish_order = 0;
    uint64_t a, b, c;
    weft_request r = greedy_req(t, 20, 30);
    ASSERT_EQ_INT(weft_engine_submit(e, &r, order_cb, NULL, &a), 0);
    while (weft_engine_get_stats(e).n_generated == 0) usleep(1000); /* a runs */
    ASSERT_EQ_INT(weft_engine_submit(e, &r, order_cb, NULL, &b), 0);
    ASSERT_EQ_INT(weft_engine_submit(e, &r, order_cb, NULL, &c), 0);
    ASSERT_EQ_INT(weft_engine_set_priority(e, c, 5), 0);
    ASSERT_EQ_INT(weft_engine_set_priority(e, 999, 5), WEFT_ENOTFOUND);
    weft_engine_wait_idle(e);
    ASSERT_EQ_INT(n_finish_order, 3);
    ASSERT_EQ_INT(finish_order[0], a);
    ASSERT_EQ_INT(finish_order[1], c);
    ASSERT_EQ_INT(finish_order[2], b);
    weft_engine_destroy(e);
}

static int32_t n_got(collected *c)
{
    pthread_mutex_lock(&collect_mu);
    const int32_t n = c->n;
    pthread_mutex_unlock(&collect_mu);
    return n;
}

/* Preemption keeps the prefix cache to prompt KV too: after A (32-token
 * prompt, 80 tokens) was preempted by a higher-priority B in a pool too
 * small for both, a prompt made of A's prompt and 48 of its tokens finds
 * only A's prompt blocks (it found A's output blocks, decode-computed, and
 * its result depended on the preemption). A request preempted in its
 * prefill counts its prompt once; an n no engine queue can ever take is an
 * error, not "busy"; wait_idle returns with the statistics published. */
/* Collects into got and, at got's token `at`, submits rb: from the engine
 * thread, so that the request it collects is exactly that far along
 * whatever the test thread's scheduling (a test thread that woke late saw
 * A nearly done, and A ended before B needed its blocks: no preemption). */
typedef struct submit_at {
    collected *got, *got_b;
    weft_engine *e;
    const weft_request *rb;
    int32_t at;
    int rc;
} submit_at;

static void submit_at_cb(const weft_event *ev, void *user)
{
    submit_at *s = user;
    collect_cb(ev, s->got);
    if (s->rb && !ev->done && s->got->n == s->at) {
        s->rc = weft_engine_submit(s->e, s->rb, collect_cb, s->got_b, NULL);
        s->rb = NULL;
    }
}

TEST(preemption_shares_no_generated_kv_and_counts_once)
{
    weft_engine *e = engine(2, 128, 10, true);
    ASSERT(e != NULL);
    static int32_t a[32], b[16], c[80];
    random_prompt(a, 32, NULL, 0);
    random_prompt(b, 16, NULL, 0);
    collected ga = {0}, gb = {0}, gc = {0};
    weft_request ra = greedy_req(a, 32, 80), rb = greedy_req(b, 16, 80);
    rb.priority = 1;
    submit_at at = {.got = &ga, .got_b = &gb, .e = e, .rb = &rb, .at = 20, .rc = -1};
    ASSERT_EQ_INT(weft_engine_submit(e, &ra, submit_at_cb, &at, NULL), 0);
    while (n_got(&ga) < 20) usleep(200);
    weft_engine_wait_idle(e);
    ASSERT_EQ_INT(at.rc, 0);
    const weft_engine_stats st = weft_engine_get_stats(e);
    fprintf(stderr, "  A preempted %lld times\n", (long long)st.n_preempted);
    ASSERT(st.n_preempted >= 1);
    ASSERT_EQ_INT(ga.n, 80);
    ASSERT_EQ_INT(st.n_prompt_tokens, 32 + 16); /* each prompt once, however often readmitted */
    memcpy(c, a, sizeof a);
    memcpy(c + 32, ga.toks, 48 * sizeof *c);
    weft_request rc = greedy_req(c, 80, 4);
    ASSERT_EQ_INT(weft_engine_submit(e, &rc, collect_cb, &gc, NULL), 0);
    weft_engine_wait_idle(e);
    ASSERT_EQ_INT(gc.n_cached, 32);
    ASSERT_EQ_INT(weft_engine_get_stats(e).n_finished, 3); /* published before wait_idle returned */
    weft_engine_destroy(e);

    weft_engine_params p = weft_engine_default_params();
    p.ctx.n_seq_max = 2;
    p.ctx.n_ctx = 64;
    p.max_waiting = 1;
    ASSERT_EQ_INT(weft_engine_create(model, &p, &e), 0);
    weft_request rn = greedy_req(b, 16, 2);
    rn.n = 4;
    ASSERT_EQ_INT(weft_engine_submit(e, &rn, collect_cb, &gc, NULL), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "at most 3") != NULL);
    weft_engine_destroy(e);
}

TEST(bad_requests_fail_alone)
{
    weft_engine *e = engine(2, 64, 8, true);
    ASSERT(e != NULL);
    int32_t t[64];
    random_prompt(t, 64, NULL, 0);
    collected ok = {0};
    weft_request good = greedy_req(t, 10, 4);
    ASSERT_EQ_INT(weft_engine_submit(e, &good, collect_cb, &ok, NULL), 0);
    weft_request r = greedy_req(t, 10, 60); /* 70 > n_ctx 64 */
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, NULL, NULL), WEFT_ERANGE);
    r = greedy_req(t, 0, 4);
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, NULL, NULL), WEFT_EINVAL);
    r = greedy_req(t, 10, 0);
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, NULL, NULL), WEFT_EINVAL);
    int32_t bad = 999999;
    r = greedy_req(&bad, 1, 4);
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, NULL, NULL), WEFT_EINVAL);
    r = greedy_req(t, 60, 4); /* 64 positions = 4 blocks: fits the 8-block pool */
    collected big = {0};
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, &big, NULL), 0);
    weft_engine_wait_idle(e);
    ASSERT_EQ_INT(ok.status, 0);
    ASSERT_EQ_INT(ok.n, 4);
    ASSERT_EQ_INT(big.status, 0);
    weft_engine_destroy(e);
    /* a pool too small for even one request */
    e = engine(2, 256, 2, true);
    ASSERT(e != NULL);
    r = greedy_req(t, 50, 4);
    ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, NULL, NULL), WEFT_ERANGE);
    ASSERT(strstr(weft_last_error(), "KV blocks") != NULL);
    weft_engine_destroy(e);
}

TEST(random_requests_and_cancellations_leak_nothing)
{
    enum { N = 2000, SHARED = 4 };
    static int32_t shared[SHARED][64];
    for (int i = 0; i < SHARED; i++) random_prompt(shared[i], 64, NULL, 0);
    static int32_t prompts[N][72], lens[N], maxt[N];
    static collected got[N];
    static uint64_t ids[N];
    memset(got, 0, sizeof got);
    /* 14 blocks for up to 6 running requests of up to 5 blocks: preemption
     * and eviction both happen */
    weft_engine *e = engine(6, 96, 14, true);
    ASSERT(e != NULL);
    for (int i = 0; i < N; i++) {
        lens[i] = 1 + (int32_t)(tiny_rng(&rng) % 70);
        maxt[i] = 1 + (int32_t)(tiny_rng(&rng) % 8);
        const int s = (int)(tiny_rng(&rng) % (SHARED + 1));
        random_prompt(prompts[i], lens[i], s < SHARED ? shared[s] : NULL,
                      s < SHARED ? (int32_t)(tiny_rng(&rng) % 64) : 0);
        weft_request r = greedy_req(prompts[i], lens[i], maxt[i]);
        r.priority = (int32_t)(tiny_rng(&rng) % 3);
        ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, &got[i], &ids[i]), 0);
        if (tiny_rng(&rng) % 5 == 0) { /* cancel an earlier one, maybe finished */
            const int k = (int)(tiny_rng(&rng) % (uint32_t)(i + 1));
            weft_engine_cancel(e, ids[k]);
        }
    }
    weft_engine_wait_idle(e);
    weft_engine_stats st = weft_engine_get_stats(e);
    int completed = 0, cancelled = 0, checked = 0;
    solo_threads = 1;
    for (int i = 0; i < N; i++) {
        ASSERT(got[i].done);
        ASSERT_EQ_INT(got[i].events_after_done, 0);
        if (got[i].status == 0) {
            completed++;
            ASSERT_EQ_INT(got[i].n, maxt[i]);
            { /* every completed output against its solo run */
                int32_t solo[8];
                ASSERT_EQ_INT(solo_greedy(model, prompts[i], lens[i], maxt[i], false, solo), maxt[i]);
                ASSERT(memcmp(got[i].toks, solo, (size_t)maxt[i] * sizeof *solo) == 0);
                checked++;
            }
        } else {
            ASSERT_EQ_INT(got[i].status, WEFT_ECANCELED);
            cancelled++;
        }
    }
    fprintf(stderr, "  %d completed, %d cancelled, %lld preemptions, %lld/%lld prompt tokens cached, "
                    "%d outputs checked against solo runs\n",
            completed, cancelled, (long long)st.n_preempted, (long long)st.n_cached_tokens,
            (long long)st.n_prompt_tokens, checked);
    ASSERT_EQ_INT(completed + cancelled, N);
    ASSERT(cancelled > 0);
    ASSERT(st.n_preempted > 0);
    ASSERT(st.n_cached_tokens > 0);
    /* nothing leaked: every block is free or held by the prefix index alone */
    ASSERT_EQ_INT(st.blocks_free + st.blocks_cached, st.blocks_total);
    weft_engine_destroy(e);
}

int main(void)
{
    char path[256];
    if (!(model = tiny_engine_model(path, sizeof path, "engine"))) {
        fprintf(stderr, "tiny model: %s\n", weft_last_error());
        return 1;
    }
    RUN(batched_outputs_equal_solo_runs);
    RUN(shared_prefix_is_computed_once);
    RUN(requests_sharing_a_cached_head_are_admitted_together);
    RUN(stop_strings_end_the_output_before_them);
    RUN(text_held_back_for_a_stop_string_is_output_at_the_end);
    RUN(n_completions_fork_one_prefill);
    RUN(priority_can_be_raised_while_waiting);
    RUN(preemption_shares_no_generated_kv_and_counts_once);
    RUN(bad_requests_fail_alone);
    RUN(random_requests_and_cancellations_leak_nothing);
    weft_model_free(model);
    unlink(path);
    TEST_DONE();
}

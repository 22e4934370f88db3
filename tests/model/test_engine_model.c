/* The serving engine on the real model: greedy outputs of 32 prompts of mixed
 * lengths are the same run alone and batched at concurrency 1, 8 and 32; a
 * request sharing a 400-token prefix with an earlier one computes only its
 * suffix, and its output equals the unshared run; speculative decoding
 * changes no output of summaries of real articles, greedy or sampled. */
#include "engine_common.h"
#include "model_common.h"
#include "test.h"

#define N_PROMPTS 32
#define GEN 12

static weft_model *model;
static int32_t *prompts[N_PROMPTS], lens[N_PROMPTS], solo[N_PROMPTS][GEN];

static void load_prompts(void)
{
    const char *files[] = {"ref_greedy.json", "ref_logits.json"};
    int n = 0;
    for (int f = 0; f < 2 && n < N_PROMPTS; f++) {
        json_t *fx = fixture(files[f]);
        json_t *ps = json_object_get(fx, "prompts");
        for (size_t i = 0; i < json_array_size(ps) && n < N_PROMPTS; i++, n++)
            prompts[n] = json_ints(json_object_get(json_array_get(ps, i), "tokens"), &lens[n]);
        json_decref(fx);
    }
}

static weft_engine *engine_spec(int32_t concurrency, int32_t spec)
{
    weft_engine_params p = weft_engine_default_params();
    p.spec_max = spec;
    p.ctx.n_seq_max = concurrency;
    p.ctx.n_ctx = 1024;
    p.ctx.n_threads = 2;
    p.ctx.n_batch = 256;
    p.ctx.kv_mem = 0;
    weft_engine *e = NULL;
    if (weft_engine_create(model, &p, &e) != 0) fprintf(stderr, "engine: %s\n", weft_last_error());
    return e;
}

static weft_engine *engine(int32_t concurrency) { return engine_spec(concurrency, 0); }

TEST(batched_greedy_equals_solo_at_concurrency_1_8_32)
{
    const int32_t conc[] = {1, 8, 32};
    static collected got[N_PROMPTS];
    for (int c = 0; c < 3; c++) {
        memset(got, 0, sizeof got);
        weft_engine *e = engine(conc[c]);
        ASSERT(e != NULL);
        const double t0 = weft_now();
        for (int i = 0; i < N_PROMPTS; i++) {
            weft_request r = {.tokens = prompts[i], .n_tokens = lens[i],
                              .sampling = weft_sampling_greedy(), .max_tokens = GEN,
                              .ignore_eos = true};
            ASSERT_EQ_INT(weft_engine_submit(e, &r, collect_cb, &got[i], NULL), 0);
        }
        weft_engine_wait_idle(e);
        int same = 0;
        for (int i = 0; i < N_PROMPTS; i++) {
            ASSERT_EQ_INT(got[i].status, 0);
            ASSERT_EQ_INT(got[i].n, GEN);
            same += memcmp(got[i].toks, solo[i], sizeof solo[i]) == 0;
        }
        weft_engine_stats st = weft_engine_get_stats(e);
        fprintf(stderr, "  concurrency %2d: %d/%d outputs equal the solo runs, %lld steps, %.1f s\n",
                conc[c], same, N_PROMPTS, (long long)st.n_steps, weft_now() - t0);
        ASSERT_EQ_INT(same, N_PROMPTS);
        ASSERT_EQ_INT(st.blocks_free + st.blocks_cached, st.blocks_total);
        weft_engine_destroy(e);
    }
}

TEST(shared_400_token_prefix_computes_only_the_suffix)
{
    int32_t *longest = NULL;
    for (int i = 0; i < N_PROMPTS; i++)
        if (lens[i] >= 400 && (!longest)) longest = prompts[i];
    ASSERT(longest != NULL);
    static int32_t a[440], b[440];
    memcpy(a, longest, 400 * sizeof *a);
    memcpy(b, longest, 400 * sizeof *b);
    memcpy(a + 400, prompts[0], 20 * sizeof *a); /* two different 20-token suffixes */
    memcpy(b + 400, prompts[1], 20 * sizeof *b);
    int32_t solo_b[GEN];
    ASSERT_EQ_INT(solo_greedy(model, b, 420, GEN, false, solo_b), GEN);
    weft_engine *e = engine(4);
    ASSERT(e != NULL);
    collected ga = {0}, gb = {0};
    weft_request ra = {.tokens = a, .n_tokens = 420, .sampling = weft_sampling_greedy(),
                       .max_tokens = GEN, .ignore_eos = true};
    weft_request rb = ra;
    rb.tokens = b;
    ASSERT_EQ_INT(weft_engine_submit(e, &ra, collect_cb, &ga, NULL), 0);
    weft_engine_wait_idle(e);
    weft_engine_stats s1 = weft_engine_get_stats(e);
    ASSERT_EQ_INT(weft_engine_submit(e, &rb, collect_cb, &gb, NULL), 0);
    weft_engine_wait_idle(e);
    weft_engine_stats s2 = weft_engine_get_stats(e);
    fprintf(stderr, "  second request: %d of %d prompt tokens from the cache, %lld computed\n",
            gb.n_cached, gb.n_prompt, (long long)(s2.n_computed_tokens - s1.n_computed_tokens));
    ASSERT_EQ_INT(gb.n_cached, 400);
    /* the suffix, then every generated token but the last; drafts the
     * output did not keep (speculative decoding) are computed on top */
    const int64_t rejected = (s2.n_drafted - s2.n_draft_accepted) - (s1.n_drafted - s1.n_draft_accepted);
    ASSERT_EQ_INT(s2.n_computed_tokens - s1.n_computed_tokens - rejected, 20 + GEN - 1);
    ASSERT(memcmp(gb.toks, solo_b, sizeof solo_b) == 0);
    weft_engine_destroy(e);
}

/* A prompt that continues an earlier request's output (a workflow's second
 * output, a chat's next turn) gives the same tokens and log-probabilities
 * bit for bit whether the earlier request ran on this engine or not: the
 * generated tokens' KV (computed by the decoding kernels) is not served as
 * a prompt's, only the KV of prompt positions is shared. (Served, it made a
 * resumed workflow's output differ from the uninterrupted run's.) */
TEST(continuing_an_output_does_not_depend_on_the_cache)
{
    int32_t *longest = NULL;
    for (int i = 0; i < N_PROMPTS; i++)
        if (lens[i] >= 100 && !longest) longest = prompts[i];
    ASSERT(longest != NULL);
    enum { P = 100, G = 48, S = 10, G2 = 16 };
    static int32_t b[P + G + S];
    weft_request ra = {.tokens = longest, .n_tokens = P, .sampling = weft_sampling_greedy(),
                       .max_tokens = G, .ignore_eos = true};
    collected ga = {0}, warm = {0}, cold = {0};
    weft_engine *e = engine(2);
    ASSERT(e != NULL);
    ASSERT_EQ_INT(weft_engine_submit(e, &ra, collect_cb, &ga, NULL), 0);
    weft_engine_wait_idle(e);
    ASSERT_EQ_INT(ga.n, G);
    memcpy(b, longest, P * sizeof *b);
    memcpy(b + P, ga.toks, G * sizeof *b);
    memcpy(b + P + G, prompts[1], S * sizeof *b);
    weft_request rb = {.tokens = b, .n_tokens = P + G + S, .sampling = weft_sampling_greedy(),
                       .max_tokens = G2, .ignore_eos = true, .logprobs = true};
    ASSERT_EQ_INT(weft_engine_submit(e, &rb, collect_cb, &warm, NULL), 0);
    weft_engine_wait_idle(e);
    weft_engine_destroy(e);
    e = engine(2);
    ASSERT(e != NULL);
    ASSERT_EQ_INT(weft_engine_submit(e, &rb, collect_cb, &cold, NULL), 0);
    weft_engine_wait_idle(e);
    weft_engine_destroy(e);
    fprintf(stderr, "  continuation: %d of %d prompt tokens from the cache\n", warm.n_cached, warm.n_prompt);
    ASSERT_EQ_INT(warm.n, G2);
    ASSERT_EQ_INT(cold.n, G2);
    ASSERT(memcmp(warm.toks, cold.toks, sizeof warm.toks[0] * G2) == 0);
    ASSERT(memcmp(warm.lps, cold.lps, sizeof warm.lps[0] * G2) == 0);
    ASSERT_EQ_INT(warm.n_cached, P / 16 * 16); /* the first request's prompt blocks only */
    ASSERT_EQ_INT(cold.n_cached, 0);
}

/* "Summarize ..." chat prompts over the first 1,200 bytes of arXiv articles. */
#define N_ARTICLES 6
static int32_t *articles[N_ARTICLES], article_lens[N_ARTICLES];

static int load_articles(void)
{
    const char *dir = getenv("WEFT_DATA_DIR");
    for (int i = 0; i < N_ARTICLES; i++) {
        char path[4096], text[1300];
        snprintf(path, sizeof path, "%s/arxiv/article_%d.txt", dir ? dir : "../shared/data", i);
        FILE *f = fopen(path, "rb");
        if (!f) return -1;
        size_t n = fread(text, 1, 1200, f);
        fclose(f);
        text[n] = 0;
        char msg[1400];
        snprintf(msg, sizeof msg, "Summarize the main idea of this article excerpt in two sentences.\n\n%s", text);
        tok_chat_msg m[] = {{.role = "user", .content = msg}};
        if (tok_chat_encode(weft_model_vocab(model), m, 1, true, NULL, NULL, &articles[i], &article_lens[i]) < 0)
            return -1;
    }
    return 0;
}

/* Every article at once on an engine of `concurrency` slots: the first half
 * greedy, the rest sampled (seeded) with a repetition penalty, every third
 * with a stop string. */
static void summarize_all(int32_t concurrency, int32_t spec, collected *got, weft_engine_stats *st)
{
    weft_engine *e = engine_spec(concurrency, spec);
    if (!e) return;
    static const char *const stop[] = {"\n\n"};
    for (int i = 0; i < N_ARTICLES; i++) {
        weft_request r = {.tokens = articles[i], .n_tokens = article_lens[i], .max_tokens = 96, .logprobs = true};
        r.sampling = i < N_ARTICLES / 2 ? weft_sampling_greedy() : weft_sampling_default();
        r.sampling.seed = 7 + (uint64_t)i;
        if (i >= N_ARTICLES / 2) r.sampling.repeat_penalty = 1.2f;
        if (i % 3 == 2) r.stop = stop, r.n_stop = 1;
        if (weft_engine_submit(e, &r, collect_cb, &got[i], NULL) != 0) fprintf(stderr, "submit: %s\n", weft_last_error());
    }
    weft_engine_wait_idle(e);
    *st = weft_engine_get_stats(e);
    weft_engine_destroy(e);
}

TEST(drafts_change_no_output_of_real_summaries)
{
    ASSERT_EQ_INT(load_articles(), 0);
    static collected off[N_ARTICLES], on[N_ARTICLES];
    const int32_t conc[] = {1, 8};
    for (int c = 0; c < 2; c++) {
        memset(off, 0, sizeof off);
        memset(on, 0, sizeof on);
        weft_engine_stats s_off = {0}, s_on = {0};
        double t0 = weft_now();
        summarize_all(conc[c], 0, off, &s_off);
        const double t_off = weft_now() - t0;
        t0 = weft_now();
        summarize_all(conc[c], 8, on, &s_on);
        const double t_on = weft_now() - t0;
        fprintf(stderr, "  concurrency %d: %lld tokens; drafts %lld, kept %lld; steps %lld -> %lld; %.2f s -> %.2f s\n",
                conc[c], (long long)s_on.n_generated, (long long)s_on.n_drafted, (long long)s_on.n_draft_accepted,
                (long long)s_off.n_steps, (long long)s_on.n_steps, t_off, t_on);
        ASSERT(s_on.n_draft_accepted > 0);
        for (int i = 0; i < N_ARTICLES; i++) {
            ASSERT_EQ_INT(on[i].status, 0);
            ASSERT_EQ_INT(on[i].n, off[i].n);
            ASSERT(memcmp(on[i].toks, off[i].toks, (size_t)on[i].n * sizeof *on[i].toks) == 0);
            ASSERT(memcmp(on[i].lps, off[i].lps, (size_t)on[i].n * sizeof *on[i].lps) == 0);
            ASSERT_EQ_INT((int)on[i].text_len, (int)off[i].text_len);
            ASSERT(memcmp(on[i].text, off[i].text, on[i].text_len) == 0);
            ASSERT(strcmp(on[i].finish, off[i].finish) == 0);
        }
    }
    for (int i = 0; i < N_ARTICLES; i++) weft_free(articles[i]);
}

int main(void)
{
    int code = 0;
    model = model_or_skip(&code);
    if (!model) return code;
    load_prompts();
    for (int i = 0; i < N_PROMPTS; i++)
        if (solo_greedy(model, prompts[i], lens[i], GEN, false, solo[i]) != GEN) return 1;
    RUN(batched_greedy_equals_solo_at_concurrency_1_8_32);
    RUN(shared_400_token_prefix_computes_only_the_suffix);
    RUN(continuing_an_output_does_not_depend_on_the_cache);
    RUN(drafts_change_no_output_of_real_summaries);
    for (int i = 0; i < N_PROMPTS; i++) free(prompts[i]);
    weft_model_free(model);
    TEST_DONE();
}

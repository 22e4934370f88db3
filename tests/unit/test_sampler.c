/* Sampling: greedy, seeded reproducibility, each filter, the temperature's
 * effect on the distribution, repetition penalty, log-probs, stop strings. */
#include <math.h>

#include "test.h"
#include "weft/sampler.h"

#define NV 1000

static void make_logits(float *l, unsigned seed)
{
    for (int i = 0; i < NV; i++) {
        seed = seed * 1103515245u + 12345u;
        l[i] = (float)((seed >> 8) % 1000) / 100.0f; /* 0 .. 10 */
    }
}

static int32_t draw(const weft_sampling *p, const float *l, int n, int32_t *out)
{
    weft_sampler *s = NULL;
    if (weft_sampler_create(p, NV, &s) != 0) return -1;
    for (int i = 0; i < n; i++) out[i] = weft_sampler_sample(s, l, NULL);
    weft_sampler_free(s);
    return 0;
}

TEST(greedy_is_argmax_with_lowest_index_on_ties)
{
    float l[NV];
    make_logits(l, 1);
    l[500] = 50.0f;
    l[700] = 50.0f;
    weft_sampling p = weft_sampling_greedy();
    int32_t t[3];
    ASSERT_EQ_INT(draw(&p, l, 3, t), 0);
    ASSERT_EQ_INT(t[0], 500);
    ASSERT_EQ_INT(t[2], 500);
    ASSERT_EQ_INT(weft_argmax(l, NV), 500);
}

/* the first index of the maximum, as a plain loop finds it */
static int32_t argmax_ref(const float *l, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

TEST(argmax_matches_a_plain_loop_on_any_length_ties_inf_and_nan)
{
    static float l[NV + 40];
    unsigned seed = 7;
    for (int32_t n = 1; n < 200; n++) {
        for (int32_t i = 0; i < n; i++) {
            seed = seed * 1664525u + 1013904223u;
            l[i] = (float)(seed >> 24) / 16.0f; /* 256 values: many ties */
        }
        ASSERT_EQ_INT(weft_argmax(l, n), argmax_ref(l, n));
    }
    make_logits(l, 3);
    ASSERT_EQ_INT(weft_argmax(l, NV), argmax_ref(l, NV));
    l[NV - 1] = 1e30f; /* the maximum in the tail past the vector loop */
    ASSERT_EQ_INT(weft_argmax(l, NV), NV - 1);
    for (int32_t i = 0; i < NV; i++) l[i] = -INFINITY;
    ASSERT_EQ_INT(weft_argmax(l, NV), 0);
    l[567] = -1.0f;
    ASSERT_EQ_INT(weft_argmax(l, NV), 567);
    make_logits(l, 4);
    l[100] = NAN; /* a NaN: whatever the plain loop does */
    ASSERT_EQ_INT(weft_argmax(l, NV), argmax_ref(l, NV));
    l[0] = NAN;
    ASSERT_EQ_INT(weft_argmax(l, NV), argmax_ref(l, NV));
}

TEST(same_seed_same_tokens_other_seed_other_tokens)
{
    float l[NV];
    make_logits(l, 2);
    weft_sampling p = weft_sampling_default();
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.temperature = 1.0f;
    p.seed = 1234;
    int32_t a[64], b[64], c[64];
    ASSERT_EQ_INT(draw(&p, l, 64, a), 0);
    ASSERT_EQ_INT(draw(&p, l, 64, b), 0);
    p.seed = 99;
    ASSERT_EQ_INT(draw(&p, l, 64, c), 0);
    ASSERT(memcmp(a, b, sizeof a) == 0);
    ASSERT(memcmp(a, c, sizeof a) != 0);
}

TEST(top_k_keeps_only_the_k_best)
{
    float l[NV];
    make_logits(l, 3);
    weft_sampling p = weft_sampling_default();
    p.top_k = 3;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.temperature = 5.0f; /* flat enough that all three show up */
    int32_t ids[3];
    float lps[3];
    ASSERT_EQ_INT(weft_top_logprobs(l, NV, 3, ids, lps), 3);
    int32_t t[500];
    ASSERT_EQ_INT(draw(&p, l, 500, t), 0);
    int seen[3] = {0};
    for (int i = 0; i < 500; i++) {
        int k = 0;
        while (k < 3 && ids[k] != t[i]) k++;
        ASSERT(k < 3);
        seen[k]++;
    }
    ASSERT(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
}

TEST(top_p_and_min_p_cut_the_tail)
{
    float l[NV];
    for (int i = 0; i < NV; i++) l[i] = 0.0f;
    l[10] = 10.0f; /* p ~ 0.95 */
    l[20] = 7.0f;
    weft_sampling p = weft_sampling_default();
    p.top_k = 0;
    p.min_p = 0.0f;
    p.top_p = 0.5f;
    p.temperature = 1.0f;
    int32_t t[200];
    ASSERT_EQ_INT(draw(&p, l, 200, t), 0);
    for (int i = 0; i < 200; i++) ASSERT_EQ_INT(t[i], 10);
    p.top_p = 1.0f;
    p.min_p = 0.01f; /* keeps 10 and 20 (e^-3 = 0.05 of the top), drops the zeros */
    ASSERT_EQ_INT(draw(&p, l, 200, t), 0);
    int n20 = 0;
    for (int i = 0; i < 200; i++) {
        ASSERT(t[i] == 10 || t[i] == 20);
        n20 += t[i] == 20;
    }
    ASSERT(n20 > 0);
}

TEST(temperature_shapes_the_distribution)
{
    /* two tokens, logits differ by 1: at T=1, P(b) = 1/(1+e) = 0.269 */
    float l[NV];
    for (int i = 0; i < NV; i++) l[i] = -1e9f;
    l[1] = 1.0f;
    l[2] = 0.0f;
    weft_sampling p = weft_sampling_default();
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.temperature = 1.0f;
    p.seed = 7;
    static int32_t t[20000];
    ASSERT_EQ_INT(draw(&p, l, 20000, t), 0);
    int nb = 0;
    for (int i = 0; i < 20000; i++) nb += t[i] == 2;
    ASSERT_NEAR(nb / 20000.0, 0.2689, 0.015);
    p.temperature = 0.25f; /* P(b) = 1/(1+e^4) = 0.018 */
    ASSERT_EQ_INT(draw(&p, l, 20000, t), 0);
    nb = 0;
    for (int i = 0; i < 20000; i++) nb += t[i] == 2;
    ASSERT_NEAR(nb / 20000.0, 0.0180, 0.006);
}

TEST(repetition_penalty_discourages_recent_tokens)
{
    float l[NV];
    for (int i = 0; i < NV; i++) l[i] = 0.0f;
    l[5] = 2.0f;
    l[6] = 1.9f;
    weft_sampling p = weft_sampling_greedy();
    p.repeat_penalty = 1.3f;
    p.repeat_last_n = 8;
    weft_sampler *s = NULL;
    ASSERT_EQ_INT(weft_sampler_create(&p, NV, &s), 0);
    ASSERT_EQ_INT(weft_sampler_sample(s, l, NULL), 5); /* 5 now in the history */
    ASSERT_EQ_INT(weft_sampler_sample(s, l, NULL), 6); /* 2.0/1.3 < 1.9 */
    weft_sampler_free(s);
}

TEST(logprobs_are_log_softmax)
{
    float l[NV];
    make_logits(l, 4);
    double z = 0;
    for (int i = 0; i < NV; i++) z += exp(l[i]);
    ASSERT_NEAR(weft_logprob(l, NV, 17), l[17] - log(z), 1e-4);
    int32_t ids[5];
    float lps[5];
    ASSERT_EQ_INT(weft_top_logprobs(l, NV, 5, ids, lps), 5);
    for (int i = 1; i < 5; i++) ASSERT(lps[i] <= lps[i - 1]);
    ASSERT_EQ_INT(ids[0], weft_argmax(l, NV));
    weft_sampling p = weft_sampling_greedy();
    weft_sampler *s = NULL;
    ASSERT_EQ_INT(weft_sampler_create(&p, NV, &s), 0);
    float lp;
    int32_t t = weft_sampler_sample(s, l, &lp);
    ASSERT_NEAR(lp, weft_logprob(l, NV, t), 1e-6);
    weft_sampler_free(s);
}

TEST(bad_parameters_are_rejected)
{
    weft_sampling p = weft_sampling_default();
    weft_sampler *s = NULL;
    p.repeat_penalty = 0.0f;
    ASSERT_EQ_INT(weft_sampler_create(&p, NV, &s), WEFT_EINVAL);
    p = weft_sampling_default();
    p.temperature = NAN;
    ASSERT_EQ_INT(weft_sampler_create(&p, NV, &s), WEFT_EINVAL);
    p = weft_sampling_default();
    ASSERT_EQ_INT(weft_sampler_create(&p, 0, &s), WEFT_EINVAL);
    ASSERT(s == NULL);
}

TEST(stop_strings_hold_back_a_possible_start)
{
    const char *stops[] = {"\n\nUser:", "END"};
    size_t safe;
    const char *t1 = "Hello world";
    ASSERT_EQ_INT(weft_stop_find(t1, strlen(t1), stops, 2, &safe), -1);
    ASSERT_EQ_INT(safe, strlen(t1));
    const char *t2 = "Hello\n\nUs"; /* could become the first stop string */
    ASSERT_EQ_INT(weft_stop_find(t2, strlen(t2), stops, 2, &safe), -1);
    ASSERT_EQ_INT(safe, 5);
    const char *t3 = "Hello\n\nUser: hi";
    ASSERT_EQ_INT(weft_stop_find(t3, strlen(t3), stops, 2, &safe), 5);
    ASSERT_EQ_INT(safe, 5);
    const char *t4 = "xxENDyy\n\nUser:";
    ASSERT_EQ_INT(weft_stop_find(t4, strlen(t4), stops, 2, &safe), 2); /* the earliest */
    const char *t5 = "ab";
    ASSERT_EQ_INT(weft_stop_find(t5, strlen(t5), NULL, 0, &safe), -1);
    ASSERT_EQ_INT(safe, 2);
}

int main(void)
{
    RUN(greedy_is_argmax_with_lowest_index_on_ties);
    RUN(argmax_matches_a_plain_loop_on_any_length_ties_inf_and_nan);
    RUN(same_seed_same_tokens_other_seed_other_tokens);
    RUN(top_k_keeps_only_the_k_best);
    RUN(top_p_and_min_p_cut_the_tail);
    RUN(temperature_shapes_the_distribution);
    RUN(repetition_penalty_discourages_recent_tokens);
    RUN(logprobs_are_log_softmax);
    RUN(bad_parameters_are_rejected);
    RUN(stop_strings_hold_back_a_possible_start);
    TEST_DONE();
}

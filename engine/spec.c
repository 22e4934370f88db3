/* Speculative decoding's policy: prompt-lookup drafts, the step-time model
 * and the goodput planner (spec.h). */
#include "engine/spec.h"

#include <string.h>

/* Per step, older steps' weight decays by this: the fit follows the last
 * hundred or so steps (a prompt's big steps fade once decoding settles). */
#define SPEC_DECAY 0.98
#define SPEC_PRIOR_SLOPE 0.15

void spec_cost_observe(spec_cost *c, int32_t n, double ms)
{
    if (n <= 0 || !(ms > 0)) return;
    c->w = c->w * SPEC_DECAY + 1.0;
    c->sn = c->sn * SPEC_DECAY + n;
    c->snn = c->snn * SPEC_DECAY + (double)n * n;
    c->st = c->st * SPEC_DECAY + ms;
    c->snt = c->snt * SPEC_DECAY + n * ms;
}

double spec_cost_slope(const spec_cost *c)
{
    /* var(n) * w²: no spread in step sizes, no slope to fit */
    const double var = c->w * c->snn - c->sn * c->sn;
    if (c->w < 4.0 || var < 0.5 * c->w * c->w) return SPEC_PRIOR_SLOPE;
    const double b = (c->w * c->snt - c->sn * c->st) / var;
    const double a = (c->st - b * c->sn) / c->w;
    double s = a > 1e-9 ? b / a : 2.0;
    if (!(s >= 0.01)) s = 0.01; /* also NaN */
    if (s > 2.0) s = 2.0;
    return s;
}

int32_t spec_propose(const int32_t *toks, int32_t n, int32_t max, int32_t *draft)
{
    if (max <= 0) return 0;
    for (int32_t g = SPEC_NGRAM_MAX; g >= SPEC_NGRAM_MIN; g--) {
        if (n < g + 1) continue;
        const int32_t *suf = toks + n - g;
        /* the latest earlier occurrence with a token after it: recent text
         * predicts the next tokens best */
        for (int32_t i = n - g - 1; i >= 0; i--) {
            if (toks[i] != suf[0] || memcmp(toks + i, suf, (size_t)g * sizeof *toks) != 0) continue;
            int32_t k = n - (i + g);
            if (k > max) k = max;
            memcpy(draft, toks + i + g, (size_t)k * sizeof *draft);
            return k;
        }
    }
    return 0;
}

void spec_plan(const spec_cand *cand, int m, int32_t n0, double slope, int32_t room, int32_t *k)
{
    double gain[256]; /* the next draft's expected tokens, per request */
    if (m > 256) m = 256;
    double e = m, t = 1.0 + slope * n0; /* tokens out, time (a = 1) */
    for (int i = 0; i < m; i++) {
        k[i] = 0;
        gain[i] = cand[i].n_draft > 0 ? cand[i].p_accept : 0.0;
    }
    while (room-- > 0) {
        int best = -1;
        for (int i = 0; i < m; i++)
            if (gain[i] > 0.0 && (best < 0 || gain[i] > gain[best])) best = i;
        /* (e + g) / (t + slope) > e / t */
        if (best < 0 || gain[best] * t <= e * slope) return;
        e += gain[best];
        t += slope;
        k[best]++;
        gain[best] = k[best] < cand[best].n_draft ? gain[best] * cand[best].p_accept : 0.0;
    }
}

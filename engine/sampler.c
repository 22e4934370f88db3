/* Sampling: penalties → top-k → top-p → min-p → temperature → draw, in
 * llama.cpp's order. Candidates are kept as (id, logit) pairs sorted only as
 * far as the filters need. */
#include "weft/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct weft_sampler {
    weft_sampling p;
    int32_t n_vocab;
    uint64_t rng[4];  /* xoshiro256** */
    int32_t *hist;    /* ring of the last repeat_last_n tokens */
    int32_t n_hist, hist_pos;
    struct cand { int32_t id; float logit; } *cand;
    float *work;      /* penalised logits */
};

weft_sampling weft_sampling_default(void)
{
    weft_sampling p = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                       .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
    return p;
}

weft_sampling weft_sampling_greedy(void)
{
    weft_sampling p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                       .repeat_penalty = 1.0f, .repeat_last_n = 0, .seed = 0};
    return p;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t *s)
{
    const uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1). */
static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

void weft_sampler_reset(weft_sampler *s)
{
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    s->n_hist = s->hist_pos = 0;
}

int weft_sampler_create(const weft_sampling *params, int32_t n_vocab, weft_sampler **out)
{
    *out = NULL;
    if (n_vocab <= 0) return weft_error(WEFT_EINVAL, "vocabulary size %d", n_vocab);
    const weft_sampling p = params ? *params : weft_sampling_default();
    if (!(p.temperature == p.temperature) || !(p.top_p == p.top_p) || !(p.min_p == p.min_p) ||
        !(p.repeat_penalty > 0.0f))
        return weft_error(WEFT_EINVAL, "sampling parameters must be numbers (repeat_penalty > 0)");
    if (p.repeat_last_n < 0 || p.repeat_last_n > 1 << 20)
        return weft_error(WEFT_EINVAL, "repeat_last_n %d out of range", p.repeat_last_n);
    weft_sampler *s = weft_calloc(1, sizeof *s);
    if (!s) return weft_error(WEFT_ENOMEM, "out of memory");
    s->p = p;
    s->n_vocab = n_vocab;
    s->cand = weft_malloc((size_t)n_vocab * sizeof *s->cand);
    s->work = weft_malloc((size_t)n_vocab * sizeof *s->work);
    s->hist = weft_malloc((size_t)(p.repeat_last_n > 0 ? p.repeat_last_n : 1) * sizeof *s->hist);
    if (!s->cand || !s->work || !s->hist) {
        weft_sampler_free(s);
        return weft_error(WEFT_ENOMEM, "out of memory");
    }
    weft_sampler_reset(s);
    *out = s;
    return 0;
}

void weft_sampler_free(weft_sampler *s)
{
    if (!s) return;
    weft_free(s->cand);
    weft_free(s->work);
    weft_free(s->hist);
    weft_free(s);
}

void weft_sampler_accept(weft_sampler *s, int32_t token)
{
    if (s->p.repeat_last_n <= 0) return;
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->n_hist < s->p.repeat_last_n) s->n_hist++;
}

static int32_t argmax_scalar(const float *logits, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
/* The maximum with 8-lane max passes (4 independent accumulators), then its
 * first index: the same answer as the scalar loop for any input without
 * NaN (a NaN anywhere sends it back to the scalar loop). */
__attribute__((target("avx2"))) static int32_t argmax_avx2(const float *logits, int32_t n)
{
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0, nan = _mm256_setzero_ps();
    int32_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256 a = _mm256_loadu_ps(logits + i), b = _mm256_loadu_ps(logits + i + 8);
        const __m256 c = _mm256_loadu_ps(logits + i + 16), d = _mm256_loadu_ps(logits + i + 24);
        nan = _mm256_or_ps(nan, _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q), _mm256_cmp_ps(c, d, _CMP_UNORD_Q)));
        m0 = _mm256_max_ps(m0, a);
        m1 = _mm256_max_ps(m1, b);
        m2 = _mm256_max_ps(m2, c);
        m3 = _mm256_max_ps(m3, d);
    }
    if (_mm256_movemask_ps(nan)) return argmax_scalar(logits, n);
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
    float max = -INFINITY;
    for (int k = 0; k < 8; k++) max = lanes[k] > max ? lanes[k] : max;
    for (; i < n; i++) {
        if (logits[i] != logits[i]) return argmax_scalar(logits, n);
        max = logits[i] > max ? logits[i] : max;
    }
    for (int32_t k = 0; k < n; k++)
        if (logits[k] == max) return k;
    return argmax_scalar(logits, n); /* all -inf */
}
#endif

int32_t weft_argmax(const float *logits, int32_t n)
{
    if (n <= 0) return 0;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("avx2")) return argmax_avx2(logits, n);
#endif
    return argmax_scalar(logits, n);
}

static double logsumexp(const float *x, int32_t n)
{
    float max = x[weft_argmax(x, n)];
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)x[i] - max);
    return max + log(sum);
}

float weft_logprob(const float *logits, int32_t n, int32_t id)
{
    if (id < 0 || id >= n) return -INFINITY;
    return (float)((double)logits[id] - logsumexp(logits, n));
}

static int cand_desc(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

/* Moves the k largest candidates to the front, sorted descending. */
static void partial_sort(struct cand *c, int32_t n, int32_t k)
{
    if (k >= 256) { /* insertion into the window would cost O(n k) */
        qsort(c, (size_t)n, sizeof *c, cand_desc);
        return;
    }
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        /* keep a sorted top-k window in c[0..m) */
        if (m < k || cand_desc(&c[i], &c[m - 1]) < 0) {
            struct cand v = c[i];
            int32_t j = m < k ? m++ : m - 1;
            while (j > 0 && cand_desc(&v, &c[j - 1]) < 0) {
                c[j] = c[j - 1];
                j--;
            }
            c[j] = v;
        }
    }
}

int32_t weft_top_logprobs(const float *logits, int32_t n, int32_t k, int32_t *ids, float *logprobs)
{
    if (k <= 0) return 0;
    if (k > n) k = n;
    const double lse = logsumexp(logits, n);
    struct cand *c = weft_malloc((size_t)n * sizeof *c);
    if (!c) return 0;
    for (int32_t i = 0; i < n; i++) c[i] = (struct cand){i, logits[i]};
    partial_sort(c, n, k);
    for (int32_t i = 0; i < k; i++) {
        ids[i] = c[i].id;
        logprobs[i] = (float)((double)c[i].logit - lse);
    }
    weft_free(c);
    return k;
}

int32_t weft_sampler_sample(weft_sampler *s, const float *logits, float *logprob)
{
    const int32_t n = s->n_vocab;
    const weft_sampling *p = &s->p;
    const float *lg = logits;
    if (p->repeat_penalty != 1.0f && s->n_hist > 0) {
        memcpy(s->work, logits, (size_t)n * sizeof *s->work);
        for (int32_t i = 0; i < s->n_hist; i++) {
            const int32_t t = s->hist[i];
            if (t < 0 || t >= n) continue;
            /* penalise once per distinct token: mark by checking earlier slots */
            int dup = 0;
            for (int32_t j = 0; j < i; j++) dup |= s->hist[j] == t;
            if (dup) continue;
            s->work[t] = s->work[t] > 0 ? s->work[t] / p->repeat_penalty : s->work[t] * p->repeat_penalty;
        }
        lg = s->work;
    }
    int32_t tok;
    if (p->temperature <= 0.0f) {
        tok = weft_argmax(lg, n);
    } else {
        int32_t m = n;
        for (int32_t i = 0; i < n; i++) s->cand[i] = (struct cand){i, lg[i]};
        const int32_t k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
        partial_sort(s->cand, n, k);
        m = k;
        /* softmax over the survivors (at temperature 1, as llama.cpp's top-p) */
        double *pr = weft_malloc((size_t)m * sizeof *pr);
        if (!pr) return weft_argmax(lg, n);
        double sum = 0.0;
        for (int32_t i = 0; i < m; i++) sum += pr[i] = exp((double)s->cand[i].logit - s->cand[0].logit);
        if (p->top_p < 1.0f) {
            double cum = 0.0;
            int32_t keep = m;
            for (int32_t i = 0; i < m; i++) {
                cum += pr[i] / sum;
                if (cum >= p->top_p) {
                    keep = i + 1;
                    break;
                }
            }
            m = keep;
        }
        if (p->min_p > 0.0f) {
            int32_t keep = 1;
            while (keep < m && pr[keep] >= p->min_p * pr[0]) keep++;
            m = keep;
        }
        sum = 0.0;
        for (int32_t i = 0; i < m; i++)
            sum += pr[i] = exp(((double)s->cand[i].logit - s->cand[0].logit) / p->temperature);
        double r = rng_uniform(s->rng) * sum;
        tok = s->cand[m - 1].id;
        for (int32_t i = 0; i < m; i++) {
            r -= pr[i];
            if (r < 0) {
                tok = s->cand[i].id;
                break;
            }
        }
        weft_free(pr);
    }
    if (logprob) *logprob = weft_logprob(logits, n, tok);
    weft_sampler_accept(s, tok);
    return tok;
}

int64_t weft_stop_find(const char *text, size_t len, const char *const *stops, int n_stops,
                       size_t *safe)
{
    int64_t found = -1;
    size_t hold = 0;
    for (int i = 0; i < n_stops; i++) {
        const size_t sl = strlen(stops[i]);
        if (sl == 0) continue;
        for (size_t at = 0; at + sl <= len; at++)
            if (memcmp(text + at, stops[i], sl) == 0) {
                if (found < 0 || (int64_t)at < found) found = (int64_t)at;
                break;
            }
        /* longest suffix of text that is a proper prefix of this stop string */
        for (size_t k = sl - 1 < len ? sl - 1 : len; k > 0; k--)
            if (memcmp(text + len - k, stops[i], k) == 0) {
                if (k > hold) hold = k;
                break;
            }
    }
    if (safe) *safe = found >= 0 ? (size_t)found : len - hold;
    return found;
}

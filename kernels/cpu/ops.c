/* CPU operators of the forward pass; see ops.h. */
#include "kernels/cpu/ops.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

#include "kernels/cpu/bf16_tile.h"
#endif

#include "kernels/cpu/amx.h"
#include "weft/common.h"

#if defined(__x86_64__)
/* sum of x[i]^2 in double, four lanes of four accumulators, then the scale
 * loop; double sums of floats agree with the sequential sum to ~1e-16. */
__attribute__((target("avx2,fma"))) static void rmsnorm_row_avx2(float *y, const float *x,
                                                                 const float *w, int dim, float eps)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= dim; i += 8) {
        const __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), hi = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(a0, a1));
    double ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < dim; i++) ss += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
    const __m256 vs = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= dim; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(w + i)));
    for (; i < dim; i++) y[i] = (x[i] * scale) * w[i];
}
#endif

void op_rmsnorm(const pool_thread *t, float *y, const float *x, const float *w, int n_rows,
                int dim, float eps)
{
    long lo, hi;
    pool_range(t, n_rows, &lo, &hi);
#if defined(__x86_64__)
    const bool avx2 = quant_has_avx2();
#endif
    for (long r = lo; r < hi; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
#if defined(__x86_64__)
        if (avx2) {
            rmsnorm_row_avx2(yr, xr, w, dim, eps);
            continue;
        }
#endif
        double ss = 0.0; /* llama.cpp sums in double too */
        for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        const float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int i = 0; i < dim; i++) yr[i] = (xr[i] * scale) * w[i];
    }
}

size_t op_qslot_size(int64_t n_in, int n_tok)
{
    /* f32 is the widest activation type; the AMX layout of a quantized row
     * follows it. Rounded up to keep slots 64-byte aligned. */
    const size_t f32 = (((size_t)n_in * sizeof(float) * (size_t)n_tok) + 63) & ~(size_t)63;
    return f32 + ((amx_act_size(n_in, n_tok) + 63) & ~(size_t)63);
}

/* Rows per tile: a tile of weight rows stays in L1 while every token's
 * activations stream past it. */
#define MM_TILE_ROWS 16
#define MM_TILE_TOK 64

/* Output rows [tlo, thi) x MM_TILE_ROWS against every token, tile by tile. */
static void matmul_tiles(float *y, const op_matrix *w, const float *bias, const void *act,
                         size_t arow, int n_tok, long tlo, long thi)
{
    const int64_t n_out = w->n_out;
    const char *wd = w->data;
    for (long tile = tlo; tile < thi; tile++) {
        const int64_t r0 = tile * MM_TILE_ROWS;
        const int64_t r1 = r0 + MM_TILE_ROWS < n_out ? r0 + MM_TILE_ROWS : n_out;
        for (int t0 = 0; t0 < n_tok; t0 += MM_TILE_TOK) {
            const int t1 = t0 + MM_TILE_TOK < n_tok ? t0 + MM_TILE_TOK : n_tok;
            quant_vec_dot_tile(w->type, w->n_in, wd + (size_t)r0 * w->row_bytes, w->row_bytes,
                               (int)(r1 - r0), (const char *)act + (size_t)t0 * arow, arow, t1 - t0,
                               y + (size_t)t0 * n_out + r0, (size_t)n_out);
            if (bias)
                for (int tk = t0; tk < t1; tk++)
                    for (int64_t r = r0; r < r1; r++) y[(size_t)tk * n_out + r] += bias[r];
        }
    }
}

/* The AMX activation buffer of a slot: after its f32-sized part. */
static void *amx_part(void *slot, int64_t n_in, int n_tok)
{
    return (char *)slot + ((((size_t)n_in * sizeof(float) * (size_t)n_tok) + 63) & ~(size_t)63);
}

/* The matrix's rows go to amx.h: on its tiles, or under amx_compact_only()
 * on its vpdpbusd kernel (8 rows at a time) — prompt rows too, which there
 * run faster on it than on AVX512-BF16 (vdpbf16ps). */
static bool use_amx(const op_matrix *w)
{
    return w->amx && (amx_available() || amx_compact_only());
}

static size_t al64(size_t x) { return (x + 63) & ~(size_t)63; }

size_t op_qbuf_size(int64_t n_in, int n_tok)
{
    return 3 * op_qslot_size(n_in, n_tok) + al64(amx_bf16_act_size(n_in, n_tok)) +
           al64((size_t)n_tok * sizeof(int32_t));
}

/* WEFT_PROMPT_BF16=0 keeps prompt rows on the int8 kernels (ops.h). */
static bool prompt_bf16_ok;
static pthread_once_t prompt_bf16_once = PTHREAD_ONCE_INIT;
static void prompt_bf16_probe(void)
{
    const char *e = getenv("WEFT_PROMPT_BF16");
    prompt_bf16_ok = amx_bf16_available() && !(e && strcmp(e, "0") == 0);
}

bool op_prompt_bf16(void)
{
    pthread_once(&prompt_bf16_once, prompt_bf16_probe);
    return prompt_bf16_ok;
}

void op_matmul_multi(const pool_thread *t, int k, float *const *ys, const op_matrix *const *ws,
                     const float *const *biases, const float *x, int n_tok, void *qbuf,
                     const int8_t *prompt)
{
    WEFT_ASSERT(k >= 1 && k <= 3);
    const int64_t n_in = ws[0]->n_in;
    const size_t slot = op_qslot_size(n_in, n_tok);
    if (prompt && !op_prompt_bf16()) prompt = NULL;
    weft_type vts[3];
    bool amx[3] = {false, false, false};
    bool all_bf16[3] = {true, true, true}; /* prompt rows of slot s need no int8 form */
    bool bf16[3];                          /* prompt rows of ws[i] take its bf16 kernel */
    bool any_bf16 = false;
    int n_slots = 0;
    int slot_of[3];
    for (int i = 0; i < k; i++) {
        const weft_type vt = quant_vec_dot_type(ws[i]->type);
        WEFT_ASSERT(ws[i]->n_in == n_in);
        int s = 0;
        while (s < n_slots && vts[s] != vt) s++;
        if (s == n_slots) vts[n_slots++] = vt;
        slot_of[i] = s;
        amx[s] |= use_amx(ws[i]);
        bf16[i] = prompt && use_amx(ws[i]) && amx_has_bf16(ws[i]->amx);
        all_bf16[s] &= bf16[i];
        any_bf16 |= bf16[i];
    }
    /* after the three slots (qbuf is op_qbuf_size bytes when prompt rows
     * come): the prompt rows in bf16, the p-th of them as row p of the
     * bf16 kernel's tile layout, then prow[p] = its row in the batch */
    uint16_t *xbf = any_bf16 ? (uint16_t *)((char *)qbuf + 3 * slot) : NULL;
    int32_t *prow = any_bf16 ? (int32_t *)((char *)xbf + al64(amx_bf16_act_size(n_in, n_tok))) : NULL;
    long lo, hi;
    pool_range(t, n_tok, &lo, &hi);
    int n_prompt = 0;
    if (any_bf16) {
        for (int r = 0; r < n_tok; r++) {
            if (!prompt[r]) continue;
            if (r >= lo && r < hi) amx_to_bf16_row(xbf, x + (size_t)r * n_in, n_in, n_prompt);
            if (t->ith == 0) prow[n_prompt] = r;
            n_prompt++;
        }
        if (t->ith == 0) amx_bf16_act_pad(xbf, n_in, n_prompt);
    }
    for (int s = 0; s < n_slots; s++) {
        if (vts[s] == WEFT_TYPE_F32) continue; /* used in place */
        const size_t qrow = quant_row_size(vts[s], n_in);
        char *dst = (char *)qbuf + (size_t)s * slot;
        for (long r = lo; r < hi; r++) {
            if (prompt && prompt[r] && all_bf16[s]) continue;
            quant_quantize_row(vts[s], x + (size_t)r * n_in, dst + (size_t)r * qrow, n_in);
            if (amx[s])
                amx_act_fill(amx_part(dst, n_in, n_tok), n_in, n_tok, (int)r, vts[s],
                             dst + (size_t)r * qrow);
        }
    }
    pool_barrier(t);
    for (int i = 0; i < k; i++) {
        const int s = slot_of[i];
        void *act = vts[s] == WEFT_TYPE_F32 ? (void *)x : (char *)qbuf + (size_t)s * slot;
        const long n_tiles = (long)((ws[i]->n_out + MM_TILE_ROWS - 1) / MM_TILE_ROWS);
        long tlo, thi;
        pool_range(t, n_tiles, &tlo, &thi);
        if (!use_amx(ws[i])) {
            matmul_tiles(ys[i], ws[i], biases ? biases[i] : NULL, act,
                         quant_row_size(vts[s], n_in), n_tok, tlo, thi);
            continue;
        }
        const int64_t n_out = ws[i]->n_out;
        /* the prompt rows, all at once, on the bf16 tiles; the runs of the
         * other rows on the int8 ones (in the engine's batches the
         * generated tokens come first, then the prompt chunks) */
        if (bf16[i] && n_prompt)
            amx_matmul_bf16(ws[i]->amx, xbf, n_prompt, prow, ys[i], (size_t)n_out, tlo, thi);
        for (int r0 = 0, r1; r0 < n_tok; r0 = r1) {
            const bool bf = bf16[i] && prompt[r0];
            for (r1 = r0 + 1; r1 < n_tok && (bf16[i] && prompt[r1]) == bf; r1++) {}
            if (!bf)
                amx_matmul_rows(ws[i]->amx, amx_part(act, n_in, n_tok), n_tok, r0, r1 - r0,
                                ys[i] + (size_t)r0 * (size_t)n_out, (size_t)n_out, tlo, thi);
        }
        const float *bias = biases ? biases[i] : NULL;
        if (bias)
            for (int tk = 0; tk < n_tok; tk++)
                for (int64_t r = tlo * MM_TILE_ROWS; r < thi * MM_TILE_ROWS && r < n_out; r++)
                    ys[i][(size_t)tk * n_out + r] += bias[r];
    }
}

void op_matmul(const pool_thread *t, float *y, const op_matrix *w, const float *bias,
               const float *x, int n_tok, void *qbuf, const int8_t *prompt)
{
    op_matmul_multi(t, 1, &y, &w, &bias, x, n_tok, qbuf, prompt);
}

void op_rope_angles(const pool_thread *t, float *cs, const int32_t *pos, int n_tok, int rope_dim,
                    float theta, float freq_scale, const float *freq_factors)
{
    long lo, hi;
    pool_range(t, n_tok, &lo, &hi);
    const int half = rope_dim / 2;
    const float theta_scale = powf(theta, -2.0f / (float)rope_dim);
    for (long tk = lo; tk < hi; tk++) {
        float *c = cs + (size_t)tk * (size_t)rope_dim, *s = c + half;
        float angle = (float)pos[tk];
        for (int j = 0; j < half; j++, angle *= theta_scale) {
            const float ff = freq_factors ? freq_factors[j] : 1.0f;
            const float a = freq_scale * (angle / ff);
            c[j] = cosf(a);
            s[j] = sinf(a);
        }
    }
}

void op_rope(const pool_thread *t, float *x, const float *cs, int n_tok, int n_heads,
             int head_dim, int rope_dim, int mode)
{
    long lo, hi;
    pool_range(t, n_tok, &lo, &hi);
    const int half = rope_dim / 2;
    for (long tk = lo; tk < hi; tk++) {
        const float *c = cs + (size_t)tk * (size_t)rope_dim, *s = c + half;
        for (int hd = 0; hd < n_heads; hd++) {
            float *h = x + ((size_t)tk * n_heads + hd) * head_dim;
            if (mode == 2) {
                for (int j = 0; j < half; j++) {
                    const float x0 = h[j], x1 = h[j + half];
                    h[j] = x0 * c[j] - x1 * s[j];
                    h[j + half] = x0 * s[j] + x1 * c[j];
                }
            } else {
                for (int j = 0; j < half; j++) {
                    const float x0 = h[2 * j], x1 = h[2 * j + 1];
                    h[2 * j] = x0 * c[j] - x1 * s[j];
                    h[2 * j + 1] = x0 * s[j] + x1 * c[j];
                }
            }
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) static inline __m256 exp256(__m256 x);

__attribute__((target("avx2,fma,f16c"))) static void swiglu_avx2(float *g, const float *u, long lo, long hi)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    long i = lo;
    for (; i + 8 <= hi; i += 8) {
        const __m256 v = _mm256_loadu_ps(g + i);
        const __m256 e = exp256(_mm256_sub_ps(zero, v));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < hi; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__attribute__((target("avx2"))) static void add_avx2(float *x, const float *y, long lo, long hi)
{
    long i = lo;
    for (; i + 8 <= hi; i += 8)
        _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < hi; i++) x[i] += y[i];
}
#endif

/* g[i] = silu(g[i]) * u[i] and x[i] += y[i] for i in [lo, hi). */
static void swiglu_range(float *g, const float *u, long lo, long hi)
{
#if defined(__x86_64__)
    if (quant_has_avx2()) {
        swiglu_avx2(g, u, lo, hi);
        return;
    }
#endif
    for (long i = lo; i < hi; i++) {
        const float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

static void add_range(float *x, const float *y, long lo, long hi)
{
#if defined(__x86_64__)
    if (quant_has_avx2()) {
        add_avx2(x, y, lo, hi);
        return;
    }
#endif
    for (long i = lo; i < hi; i++) x[i] += y[i];
}

void op_swiglu(const pool_thread *t, float *g, const float *u, int64_t n)
{
    long lo, hi;
    pool_range(t, (long)n, &lo, &hi);
    swiglu_range(g, u, lo, hi);
}

void op_swiglu_rows(const pool_thread *t, float *g, const float *u, int n_rows, int64_t width)
{
    long lo, hi;
    pool_range(t, n_rows, &lo, &hi);
    swiglu_range(g, u, lo * (long)width, hi * (long)width);
}

void op_add(const pool_thread *t, float *x, const float *y, int64_t n)
{
    long lo, hi;
    pool_range(t, (long)n, &lo, &hi);
    add_range(x, y, lo, hi);
}

void op_add_rows(const pool_thread *t, float *x, const float *y, int n_rows, int64_t width)
{
    long lo, hi;
    pool_range(t, n_rows, &lo, &hi);
    add_range(x, y, lo * (long)width, hi * (long)width);
}

/* ---- attention helpers ------------------------------------------------ */

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) static float dot_f16_avx2(int64_t n, const uint16_t *a,
                                                                     const uint16_t *b)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i)));
        __m256 b0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i)));
        __m256 a1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8)));
        __m256 b1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i + 8)));
        acc0 = _mm256_fmadd_ps(a0, b0, acc0);
        acc1 = _mm256_fmadd_ps(a1, b1, acc1);
    }
    acc0 = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    float r = _mm_cvtss_f32(s);
    for (; i < n; i++) r += quant_f16_to_f32(a[i]) * quant_f16_to_f32(b[i]);
    return r;
}

__attribute__((target("avx2,fma,f16c"))) static void mad_f16_avx2(int64_t n, float *y,
                                                                    const uint16_t *v, float a)
{
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 vv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vv, va, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++) y[i] += a * quant_f16_to_f32(v[i]);
}

__attribute__((target("avx2,fma,f16c"))) static void f32_to_f16_avx2(uint16_t *y, const float *x,
                                                                       int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = quant_f32_to_f16(x[i]);
}

/* scores[r] = q . K row r for the 16 positions of a transposed block
 * (kt[d * 16 + r]): per dimension one broadcast of q[d] times two vectors
 * of 8 positions, summed over d in two interleaved partial sums. */
__attribute__((target("avx2,fma,f16c"))) static void dot_cols_avx2(int64_t hd, const uint16_t *q,
                                                                     const uint16_t *kt, int n,
                                                                     float *scores)
{
    __m256 a[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {_mm256_setzero_ps(), _mm256_setzero_ps()}};
    for (int64_t d = 0; d < hd; d++) {
        const __m256 qd = _mm256_set1_ps(quant_f16_to_f32(q[d]));
        const uint16_t *row = kt + (size_t)d * 16;
        a[0][d & 1] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)row)), qd, a[0][d & 1]);
        a[1][d & 1] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 8))), qd, a[1][d & 1]);
    }
    float tmp[16];
    _mm256_storeu_ps(tmp, _mm256_add_ps(a[0][0], a[0][1]));
    _mm256_storeu_ps(tmp + 8, _mm256_add_ps(a[1][0], a[1][1]));
    for (int r = 0; r < n; r++) scores[r] = tmp[r];
}

/* e^x for 8 floats (Cephes' expf: 2^n * p(r), r = x - n ln 2), |rel err| < 2e-7;
 * x below -87.3 gives 0. */
__attribute__((target("avx2,fma,f16c"))) static inline __m256 exp256(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365478515625f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* x = softmax(x * scale), each weight then rounded to f16 and back. */
__attribute__((target("avx2,fma,f16c"))) static void softmax_f16w_avx2(float *x, int64_t n, float scale)
{
    const __m256 vs = _mm256_set1_ps(scale);
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float max = -INFINITY, lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    for (int k = 0; k < 8; k++) max = fmaxf(max, lanes[k]);
    for (int64_t k = i; k < n; k++) max = fmaxf(max, x[k]);
    max *= scale; /* scale > 0: the max of x * scale */
    const __m256 vm = _mm256_set1_ps(max);
    __m256 vsum = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 ex = exp256(_mm256_fmsub_ps(_mm256_loadu_ps(x + i), vs, vm));
        _mm256_storeu_ps(x + i, ex);
        vsum = _mm256_add_ps(vsum, ex);
    }
    _mm256_storeu_ps(lanes, vsum);
    double sum = 0.0;
    for (int k = 0; k < 8; k++) sum += lanes[k];
    for (int64_t k = i; k < n; k++) {
        x[k] = expf(x[k] * scale - max);
        sum += x[k];
    }
    const __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv),
                                                                _MM_FROUND_TO_NEAREST_INT)));
    for (int64_t k = i; k < n; k++) x[k] = quant_f16_to_f32(quant_f32_to_f16(x[k] * (float)(1.0 / sum)));
}

__attribute__((target("avx2,fma,f16c"))) static void mad_rows_avx2(int64_t hd, float *out,
                                                                     const uint16_t *base,
                                                                     size_t stride, int n,
                                                                     const float *w)
{
    for (int64_t d = 0; d < hd; d += 32) {
        if (d + 32 > hd) { /* odd head size: row by row */
            for (int i = 0; i < n; i++) mad_f16_avx2(hd - d, out + d, base + i * stride + d, w[i]);
            return;
        }
        __m256 a0 = _mm256_loadu_ps(out + d), a1 = _mm256_loadu_ps(out + d + 8);
        __m256 a2 = _mm256_loadu_ps(out + d + 16), a3 = _mm256_loadu_ps(out + d + 24);
        for (int i = 0; i < n; i++) {
            const uint16_t *r = base + i * stride + d;
            const __m256 wi = _mm256_set1_ps(w[i]);
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)r)), wi, a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 8))), wi, a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 16))), wi, a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 24))), wi, a3);
        }
        _mm256_storeu_ps(out + d, a0);
        _mm256_storeu_ps(out + d + 8, a1);
        _mm256_storeu_ps(out + d + 16, a2);
        _mm256_storeu_ps(out + d + 24, a3);
    }
}
#endif

#if defined(__x86_64__)
#define TGT512A __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512dq")))

/* exp256 on 16 lanes (the same operations per lane). */
TGT512A static inline __m512 exp512(__m512 x)
{
    const __m512 hi = _mm512_set1_ps(88.3762626647949f), lo = _mm512_set1_ps(-87.3365478515625f);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(_mm512_min_ps(x, hi), lo);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps((__mmask16)~under, p, _mm512_castsi512_ps(e));
}

/* x[0..n) = softmax(x * scale), each weight rounded to f16 and back; x is
 * zero-padded up to n rounded to 16 (it has that room). */
TGT512A static void softmax_f16w_avx512(float *x, int64_t n, float scale)
{
    const int64_t n16 = (n + 15) & ~(int64_t)15;
    for (int64_t i = n; i < n16; i++) x[i] = -INFINITY;
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n16; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    const float max = _mm512_reduce_max_ps(vmax) * scale; /* scale > 0 */
    const __m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(max);
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t i = 0; i < n16; i += 16) {
        const __m512 ex = exp512(_mm512_fmsub_ps(_mm512_loadu_ps(x + i), vs, vm));
        _mm512_storeu_ps(x + i, ex);
        vsum = _mm512_add_ps(vsum, ex);
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, vsum);
    double sum = 0.0;
    for (int k = 0; k < 16; k++) sum += lanes[k];
    const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (int64_t i = 0; i < n16; i += 16)
        _mm512_storeu_ps(x + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_mul_ps(_mm512_loadu_ps(x + i), inv),
                                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
}

/* outs[i0 + i] = sum over p of sc[i0 + i][p] * V[p], for M queries (known
 * at compile time, so the accumulators stay in registers): each V row is
 * converted once for the M of them. Per query the same operations in the
 * same order whatever M is. */
TGT512A static inline __attribute__((always_inline)) void
pv_pass(const int HD, const int M, int i0, const uint16_t *const *vb, size_t stride,
        const int32_t *n_kv, const float *sc, size_t ldsc, float *const *outs)
{
    int32_t n_set = 0;
    for (int i = 0; i < M; i++) n_set = n_kv[i0 + i] > n_set ? n_kv[i0 + i] : n_set;
    /* fixed sizes (M <= 6, HD <= 128): a variable-length array would live in
     * memory; with every index constant after unrolling these are registers */
    __m512 acc[6][8];
#pragma GCC unroll 6
    for (int i = 0; i < M; i++)
#pragma GCC unroll 8
        for (int d = 0; d < HD / 16; d++) acc[i][d] = _mm512_setzero_ps();
    for (int32_t p = 0; p < n_set; p++) {
        const uint16_t *v = vb[p / 16] + (size_t)(p % 16) * stride;
        if (p + 16 < n_set)
            for (int d = 0; d < HD; d += 32)
                _mm_prefetch((const char *)(vb[p / 16 + 1] + (size_t)(p % 16) * stride + d), _MM_HINT_T0);
        __m512 vr[8];
#pragma GCC unroll 8
        for (int d = 0; d < HD; d += 16) vr[d / 16] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v + d)));
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            const __m512 w = _mm512_set1_ps(sc[(size_t)(i0 + i) * ldsc + p]);
#pragma GCC unroll 8
            for (int d = 0; d < HD / 16; d++) acc[i][d] = _mm512_fmadd_ps(vr[d], w, acc[i][d]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < M; i++)
#pragma GCC unroll 8
        for (int d = 0; d < HD / 16; d++) _mm512_storeu_ps(outs[i0 + i] + d * 16, acc[i][d]);
}

/* Scores of queries i..i+U-1 (U <= 4, known at compile time) against the
 * K block kt at position p: each dimension's vector converted once for
 * them, each score the sum of two interleaved partial sums (even, odd d) —
 * per query the same operations whatever U is. */
TGT512A static inline __attribute__((always_inline)) void
scores_block(const int HD, const int U, int i, const uint16_t *kt, int32_t p, const float *qf,
             const int32_t *n_kv, float *sc, size_t ldsc)
{
    const float *q0 = qf + (size_t)i * HD;
    __m512 a[4][2];
#pragma GCC unroll 4
    for (int u = 0; u < U; u++) a[u][0] = a[u][1] = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int d = 0; d < HD; d += 2) {
        const __m512 k0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kt + (size_t)d * 16)));
        const __m512 k1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kt + (size_t)(d + 1) * 16)));
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            a[u][0] = _mm512_fmadd_ps(k0, _mm512_set1_ps(q0[(size_t)u * HD + d]), a[u][0]);
            a[u][1] = _mm512_fmadd_ps(k1, _mm512_set1_ps(q0[(size_t)u * HD + d + 1]), a[u][1]);
        }
    }
#pragma GCC unroll 4
    for (int u = 0; u < U; u++)
        if (p < n_kv[i + u]) _mm512_storeu_ps(sc + (size_t)(i + u) * ldsc + p, _mm512_add_ps(a[u][0], a[u][1]));
}

/* How many blocks ahead of the score loop the K and V of a block are
 * requested. The blocks are scattered in the pool, so no hardware
 * prefetcher follows them; one block ahead (2 KB of K) was not enough to
 * cover the memory latency — decoding many sequences at a few hundred
 * positions each, the loop waited on K most of its time. V comes along to
 * L2, for the weighted sum that follows. */
#define ATTN_PF_BLOCKS 3

TGT512A static inline __attribute__((always_inline)) void
attn_prefetch_block(const int HD, const uint16_t *kt, const uint16_t *v, size_t stride)
{
    for (int off = 0; off < HD * 16; off += 32) _mm_prefetch((const char *)(kt + off), _MM_HINT_T0);
    for (int r = 0; r < 16; r++)
        for (int d = 0; d < HD; d += 32) _mm_prefetch((const char *)(v + (size_t)r * stride + d), _MM_HINT_T1);
}

/* The tiled attention of op_attention for head size HD (64 or 128). */
TGT512A static inline __attribute__((always_inline)) void
attn_zmm(const int HD, int nq, const float *qf, const uint16_t *const *kb, const uint16_t *const *vb,
         size_t stride, const int32_t *n_kv, float scale, float *sc, size_t ldsc, float *const *outs)
{
    int32_t n_max = 0;
    for (int i = 0; i < nq; i++) n_max = n_kv[i] > n_max ? n_kv[i] : n_max;
    /* scores: K comes transposed (kb[j] + d * 16: dimension d of block j's
     * 16 positions), so each dimension is one vector of 16 scores' terms;
     * four queries at a time, each score a sum over d in two interleaved
     * partial sums (even, odd d) — the same operations for a query whatever
     * it is grouped with. Lanes past a query's positions are discarded by
     * the softmax below. */
    const int32_t n_blk = (n_max + 15) / 16;
    for (int32_t j = 0; j < ATTN_PF_BLOCKS && j < n_blk; j++) attn_prefetch_block(HD, kb[j], vb[j], stride);
    for (int32_t p = 0; p < n_max; p += 16) {
        const uint16_t *kt = kb[p / 16];
        if (p / 16 + ATTN_PF_BLOCKS < n_blk) /* blocks are scattered: ask for them early */
            attn_prefetch_block(HD, kb[p / 16 + ATTN_PF_BLOCKS], vb[p / 16 + ATTN_PF_BLOCKS], stride);
        int i = 0;
        for (; i + 4 <= nq; i += 4) scores_block(HD, 4, i, kt, p, qf, n_kv, sc, ldsc);
        switch (nq - i) { /* the rest together too: each K vector converted once for them */
        case 3: scores_block(HD, 3, i, kt, p, qf, n_kv, sc, ldsc); break;
        case 2: scores_block(HD, 2, i, kt, p, qf, n_kv, sc, ldsc); break;
        case 1: scores_block(HD, 1, i, kt, p, qf, n_kv, sc, ldsc); break;
        default: break;
        }
    }
    /* weights (f16-rounded, as they meet the f16 cache); zero past each
     * query's own positions, up to the last block's end */
    for (int i = 0; i < nq; i++) {
        float *si = sc + (size_t)i * ldsc;
        softmax_f16w_avx512(si, n_kv[i], scale); /* zeroes past n_kv[i] to the block's end */
        for (int32_t p = (n_kv[i] + 15) & ~15; p < ((n_max + 15) & ~15); p++) si[p] = 0.0f;
    }
    /* outputs: each V row converted once per pass of up to PV_Q queries */
    const int per = HD == 64 ? 6 : 3; /* accumulators that fit the 32 registers */
    int i0 = 0;
    for (; i0 + per <= nq; i0 += per)
        if (HD == 64) pv_pass(64, 6, i0, vb, stride, n_kv, sc, ldsc, outs);
        else pv_pass(128, 3, i0, vb, stride, n_kv, sc, ldsc, outs);
    switch (nq - i0) {
    case 0: break;
    case 1: pv_pass(HD, 1, i0, vb, stride, n_kv, sc, ldsc, outs); break;
    case 2: pv_pass(HD, 2, i0, vb, stride, n_kv, sc, ldsc, outs); break;
    case 3: pv_pass(HD, 3, i0, vb, stride, n_kv, sc, ldsc, outs); break;
    case 4: pv_pass(HD, 4, i0, vb, stride, n_kv, sc, ldsc, outs); break;
    default: pv_pass(HD, 5, i0, vb, stride, n_kv, sc, ldsc, outs); break;
    }
}


/* ---- attention on AMX-BF16 tiles ------------------------------------------
 * q, K and V enter the tiles as bf16 (rounded to nearest from their f16
 * values: 8 significant bits of 11), the softmax weights as bf16 rounded
 * from f32 before their division by the sum, which scales the output row
 * instead (a cheaper exp, exact enough for 8 bits: softmax_bf16_row);
 * products accumulate in f32.
 * Measured against llama.cpp (test_reference) this stays inside the bound
 * the f32 path is held to (worst logit difference 0.85 vs 0.87 there, with
 * the prompt rows' matrix products on bf16 too; bound 1.49); the
 * f32 FMA path (attn_avx512, WEFT_ATTN_TILES=0) keeps the f16 semantics.
 * A tile's rows are independent, so a query's result does not depend on
 * what it is computed with. */
#define TGTAMXBF __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,f16c,fma")))
/* the helpers both bf16 attention kernels use (no tile instruction) */
#define TGTBF __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,f16c,fma")))

/* tmm0-2: C, one per chunk of 16 query rows (16 x 16 f32); tmm3: A (16 x 32
 * bf16); tmm4-7: B (16 rows x 16 pairs of bf16); all 16 rows of 64 bytes. */
#define ATTN_CHUNKS 3

static void attn_tiles(void)
{
    uint8_t rows[8];
    uint16_t colsb[8];
    for (int i = 0; i < 8; i++) {
        rows[i] = 16;
        colsb[i] = 64;
    }
    amx_tile_config(rows, colsb);
}

TGTBF static inline __m512 f16x16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }


/* Scores of chunk C (query rows 16C..16C+15 of qa) against the K block
 * whose B tiles are loaded (tmm4, 5 and for HD 128 also 6, 7), stored at
 * column p of their score rows. */
#define ATTN_SCORES(C)                                                                             \
    do {                                                                                           \
        _tile_zero(C);                                                                             \
        _tile_loadd(3, &qa[16 * (C)][0], sizeof qa[0]);                                            \
        _tile_dpbf16ps(C, 3, 4);                                                                   \
        _tile_loadd(3, &qa[16 * (C)][32], sizeof qa[0]);                                           \
        _tile_dpbf16ps(C, 3, 5);                                                                   \
        if (HD == 128) {                                                                           \
            _tile_loadd(3, &qa[16 * (C)][64], sizeof qa[0]);                                       \
            _tile_dpbf16ps(C, 3, 6);                                                               \
            _tile_loadd(3, &qa[16 * (C)][96], sizeof qa[0]);                                       \
            _tile_dpbf16ps(C, 3, 7);                                                               \
        }                                                                                          \
        _tile_stored(C, s0 + (size_t)16 * (C) * ldsc + p, ldsc * sizeof(float));                   \
    } while (0)

/* Chunk C's weights for positions p..p+31 (bf16, in its score rows) times
 * the V tile in tmm4, into its C tile. */
#define ATTN_PV(C)                                                                                 \
    do {                                                                                           \
        _tile_loadd(3, (const uint16_t *)(s0 + (size_t)16 * (C) * ldsc) + p, ldsc * sizeof(float)); \
        _tile_dpbf16ps(C, 3, 4);                                                                   \
    } while (0)

/* 2^t on 16 lanes for finite t <= 0: a degree-3 fit on [-1/2, 1/2]
 * (relative error under 7.5e-5, against bf16's 3.9e-3) scaled exactly by
 * 2^round(t) (vscalefps: 0 far below) — a third of exp512's operations,
 * for weights that end in bf16. */
TGTBF static inline __m512 exp2_neg(__m512 t)
{
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(0.0551716685295105f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.2426111251115799f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6932609677314758f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999280571937561f));
    return _mm512_scalef_ps(p, n);
}

/* The first r (<= 16) of 16 lanes. */
static inline __mmask16 lanes16(int32_t r)
{
    return r >= 16 ? (__mmask16)0xFFFF : r <= 0 ? (__mmask16)0 : (__mmask16)((1u << r) - 1);
}

/* A row of scores x[0..n) becomes exp((x - max) * scale) in bf16 — the
 * softmax weights before the division by their sum, which the caller
 * applies to the output row; returns 1 / sum. The bf16 weights are written
 * over the row's own memory (weight p where float p / 2 was: each float is
 * read before its bytes are written), zero from n up to n32 (a multiple of
 * 32; the row has room for n32 / 2 floats). */
TGTBF static float softmax_bf16_row(float *x, int32_t n, int32_t n32, float scale)
{
    uint16_t *w = (uint16_t *)x;
    if (n <= 0) {
        memset(w, 0, (size_t)n32 * sizeof *w);
        return 0.0f;
    }
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int32_t i = 0; i < n; i += 16)
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), lanes16(n - i), x + i));
    const float k = scale * 1.44269504088896341f; /* scale > 0: max(x) * k is the largest */
    const __m512 vk = _mm512_set1_ps(k), vb = _mm512_set1_ps(_mm512_reduce_max_ps(vmax) * k);
    __m512 vsum = _mm512_setzero_ps();
    for (int32_t p = 0; p < n32; p += 32) {
        const __mmask16 m0 = lanes16(n - p), m1 = lanes16(n - p - 16);
        const __m512 e0 = _mm512_maskz_mov_ps(m0, exp2_neg(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m0, x + p), vk, vb)));
        const __m512 e1 = _mm512_maskz_mov_ps(m1, exp2_neg(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m1, x + p + 16), vk, vb)));
        vsum = _mm512_add_ps(vsum, _mm512_add_ps(e0, e1));
        _mm512_storeu_si512(w + p, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
    }
    return 1.0f / _mm512_reduce_add_ps(vsum);
}

/* op_attention for nr <= 16 * ATTN_CHUNKS queries (i0 the first), head size
 * HD: every K and V block is converted to bf16 once and serves all of
 * them. The last chunk is padded with zero queries (their rows of sc are
 * scratch, zero weights, results dropped). */
TGTAMXBF static void attn_amx_rows(const int HD, int i0, int nr, const float *qf,
                                   const uint16_t *const *kb, const uint16_t *const *vb,
                                   size_t stride, const int32_t *n_kv, float scale, float *sc,
                                   size_t ldsc, float *const *outs)
{
    uint16_t qa[16 * ATTN_CHUNKS][128] __attribute__((aligned(64)));
    uint16_t bt[4][16][32] __attribute__((aligned(64)));
    float o[16 * ATTN_CHUNKS][128] __attribute__((aligned(64)));
    const int nc = (nr + 15) / 16;
    int32_t n_max = 0;
    for (int i = 0; i < nr; i++) n_max = n_kv[i0 + i] > n_max ? n_kv[i0 + i] : n_max;
    const int32_t n16 = (n_max + 15) & ~15;
    for (int i = 0; i < 16 * nc; i++)
        for (int d = 0; d < HD; d += 32) {
            const float *q = qf + (size_t)(i0 + i) * HD + d;
            const __m512 lo = i < nr ? _mm512_loadu_ps(q) : _mm512_setzero_ps();
            const __m512 hi = i < nr ? _mm512_loadu_ps(q + 16) : _mm512_setzero_ps();
            _mm512_store_si512(&qa[i][d], (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    attn_tiles();
    float *s0 = sc + (size_t)i0 * ldsc;
    /* scores, a block of 16 positions at a time: K comes transposed, so B's
     * row i (dimensions 2i, 2i + 1 of a 32-dimension chunk) is two rows of kt */
    for (int32_t p = 0; p < n_max; p += 16) {
        const uint16_t *kt = kb[p / 16];
        if (p + 16 < n_max)
            for (int off = 0; off < HD * 16; off += 32) _mm_prefetch((const char *)(kb[p / 16 + 1] + off), _MM_HINT_T0);
        for (int d = 0; d < HD; d += 32)
            for (int i = 0; i < 16; i++)
                bf16_pair_row(f16x16(kt + (size_t)(d + 2 * i) * 16), f16x16(kt + (size_t)(d + 2 * i + 1) * 16), bt[d / 32][i]);
        _tile_loadd(4, bt[0], sizeof bt[0][0]);
        _tile_loadd(5, bt[1], sizeof bt[0][0]);
        if (HD == 128) {
            _tile_loadd(6, bt[2], sizeof bt[0][0]);
            _tile_loadd(7, bt[3], sizeof bt[0][0]);
        }
        ATTN_SCORES(0);
        if (nc > 1) ATTN_SCORES(1);
        if (nc > 2) ATTN_SCORES(2);
    }
    /* weights, in bf16 over their score rows, zero up to n16 rounded to 32;
     * each output row is divided by its sum at the end */
    const int32_t n32 = (n16 + 31) & ~31;
    float inv[16 * ATTN_CHUNKS];
    for (int i = 0; i < 16 * nc; i++)
        inv[i] = softmax_bf16_row(s0 + (size_t)i * ldsc, i < nr ? n_kv[i0 + i] : 0, n32, scale);
    /* outputs, 16 dimensions at a time: 32 positions of V (zero past n_max:
     * those cache rows may hold anything) make one B tile, converted once
     * for all the chunks */
    for (int j = 0; j < HD; j += 16) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        for (int32_t p = 0; p < n16; p += 32) {
            for (int i = 0; i < 16; i++) {
                const int32_t k = p + 2 * i;
                const __m512 x0 = k < n_max ? f16x16(vb[k / 16] + (size_t)(k % 16) * stride + j) : _mm512_setzero_ps();
                const __m512 x1 = k + 1 < n_max ? f16x16(vb[(k + 1) / 16] + (size_t)((k + 1) % 16) * stride + j)
                                                : _mm512_setzero_ps();
                bf16_pair_row(x0, x1, bt[0][i]);
            }
            _tile_loadd(4, bt[0], sizeof bt[0][0]);
            ATTN_PV(0);
            if (nc > 1) ATTN_PV(1);
            if (nc > 2) ATTN_PV(2);
        }
        _tile_stored(0, &o[0][j], sizeof o[0]);
        _tile_stored(1, &o[16][j], sizeof o[0]);
        _tile_stored(2, &o[32][j], sizeof o[0]);
    }
    _tile_release();
    for (int i = 0; i < nr; i++) {
        const __m512 vi = _mm512_set1_ps(inv[i]);
        for (int d = 0; d < HD; d += 16) _mm512_storeu_ps(outs[i0 + i] + d, _mm512_mul_ps(_mm512_load_ps(&o[i][d]), vi));
    }
}
#undef ATTN_SCORES
#undef ATTN_PV

TGTAMXBF static void attn_amx(int hd, int nq, const float *qf, const uint16_t *const *kb,
                             const uint16_t *const *vb, size_t stride, const int32_t *n_kv,
                             float scale, float *sc, size_t ldsc, float *const *outs)
{
    for (int i0 = 0; i0 < nq; i0 += 16 * ATTN_CHUNKS) {
        const int nr = nq - i0 < 16 * ATTN_CHUNKS ? nq - i0 : 16 * ATTN_CHUNKS;
        if (hd == 64)
            attn_amx_rows(64, i0, nr, qf, kb, vb, stride, n_kv, scale, sc, ldsc, outs);
        else
            attn_amx_rows(128, i0, nr, qf, kb, vb, stride, n_kv, scale, sc, ldsc, outs);
    }
}

/* ---- prompt attention on AVX512-BF16 (no AMX) ----------------------------
 * The AMX path's contract — q, K, V and the softmax weights in bf16
 * (softmax_bf16_row: the division by the sum scales the output row), f32
 * sums — on vdpbf16ps, where the CPU has AVX512-BF16 but no AMX (AMD Zen 4,
 * say). One vdpbf16ps does 32 multiply-adds, twice an FMA's 16, and each
 * converted K block serves up to ATTN_BF_Q queries. Per query the same
 * operations in the same order whatever it is computed with: a score is
 * one chain over the dimension pairs, an output chunk one chain over the
 * position pairs. */
#define ATTN_BF_Q 48

/* The bf16 pair at p (an even index) in all 16 lanes. */
TGTBF static inline __m512bh bf_bcast(const uint16_t *p)
{
    uint32_t u;
    memcpy(&u, p, 4);
    return (__m512bh)_mm512_set1_epi32((int)u);
}

/* Scores of queries i..i+U-1 (U <= 8, known at compile time) against the
 * converted K block kp (HD / 2 vectors of 16 position pairs) at column p. */
TGTBF static inline __attribute__((always_inline)) void
bf_scores(const int HD, const int U, int i, int i0, const uint16_t (*qa)[128], const uint16_t (*kp)[32], int32_t p,
          const int32_t *n_kv, float *s0, size_t ldsc)
{
    __m512 a[8];
#pragma GCC unroll 8
    for (int u = 0; u < U; u++) a[u] = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int dp = 0; dp < HD / 2; dp++) {
        const __m512bh b = (__m512bh)_mm512_load_si512(kp[dp]);
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) a[u] = _mm512_dpbf16_ps(a[u], bf_bcast(&qa[i + u][2 * dp]), b);
    }
#pragma GCC unroll 8
    for (int u = 0; u < U; u++)
        if (p < n_kv[i0 + i + u]) _mm512_storeu_ps(s0 + (size_t)(i + u) * ldsc + p, a[u]);
}

/* Outputs of queries i..i+U-1 (U <= 8): the weights (bf16 over their score
 * rows) times V, two positions a step, from vs (V as bf16 pairs: for the
 * positions 2pp, 2pp + 1, HD / 16 vectors of 16 dimensions). */
TGTBF static inline __attribute__((always_inline)) void
bf_pv(const int HD, const int U, int i, int i0, const uint16_t *vs, int32_t n16, const float *s0, size_t ldsc,
      const float *inv, float *const *outs)
{
    const uint16_t *w[8];
#pragma GCC unroll 8
    for (int u = 0; u < U; u++) w[u] = (const uint16_t *)(s0 + (size_t)(i + u) * ldsc);
    for (int j = 0; j < HD / 16; j++) {
        __m512 a[8];
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) a[u] = _mm512_setzero_ps();
        for (int32_t p = 0; p < n16; p += 2) {
            const __m512bh b = (__m512bh)_mm512_load_si512(vs + ((size_t)(p / 2) * (HD / 16) + (size_t)j) * 32);
#pragma GCC unroll 8
            for (int u = 0; u < U; u++) a[u] = _mm512_dpbf16_ps(a[u], bf_bcast(w[u] + p), b);
        }
#pragma GCC unroll 8
        for (int u = 0; u < U; u++)
            _mm512_storeu_ps(outs[i0 + i + u] + 16 * j, _mm512_mul_ps(a[u], _mm512_set1_ps(inv[i + u])));
    }
}

/* CALL(U, i) for the queries in groups of 8 from i = 0, then the rest:
 * U is a compile-time constant in every call, as the kernels need. */
#define BF_BY8(nr, CALL)                                                                           \
    do {                                                                                           \
        int i_ = 0;                                                                                \
        for (; i_ + 8 <= (nr); i_ += 8) CALL(8, i_);                                               \
        switch ((nr) - i_) {                                                                       \
        case 7: CALL(7, i_); break;                                                                \
        case 6: CALL(6, i_); break;                                                                \
        case 5: CALL(5, i_); break;                                                                \
        case 4: CALL(4, i_); break;                                                                \
        case 3: CALL(3, i_); break;                                                                \
        case 2: CALL(2, i_); break;                                                                \
        case 1: CALL(1, i_); break;                                                                \
        default: break;                                                                            \
        }                                                                                          \
    } while (0)

TGTBF static void attn_bf16_rows(const int HD, int i0, int nr, const float *qf, const uint16_t *const *kb,
                                 const uint16_t *const *vb, size_t stride, const int32_t *n_kv, float scale,
                                 float *sc, size_t ldsc, float *const *outs, const uint16_t *vs)
{
    uint16_t qa[ATTN_BF_Q][128] __attribute__((aligned(64)));
    uint16_t kp[64][32] __attribute__((aligned(64)));
    int32_t n_max = 0;
    for (int i = 0; i < nr; i++) n_max = n_kv[i0 + i] > n_max ? n_kv[i0 + i] : n_max;
    const int32_t n16 = (n_max + 15) & ~15;
    for (int i = 0; i < nr; i++)
        for (int d = 0; d < HD; d += 32) {
            const float *q = qf + (size_t)(i0 + i) * HD + d;
            _mm512_store_si512(&qa[i][d], (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 16), _mm512_loadu_ps(q)));
        }
    float *s0 = sc + (size_t)i0 * ldsc;
    /* scores, a block of 16 positions at a time: K comes transposed, so the
     * pair of dimensions 2dp, 2dp + 1 is two rows of kt */
    for (int32_t p = 0; p < n_max; p += 16) {
        const uint16_t *kt = kb[p / 16];
        if (p + 16 < n_max)
            for (int off = 0; off < HD * 16; off += 32) _mm_prefetch((const char *)(kb[p / 16 + 1] + off), _MM_HINT_T0);
        for (int dp = 0; dp < HD / 2; dp++)
            _mm512_store_si512(kp[dp], bf16_pairs(f16x16(kt + (size_t)(2 * dp) * 16), f16x16(kt + (size_t)(2 * dp + 1) * 16)));
#define SCORES(U_, I_) bf_scores(HD, U_, I_, i0, qa, kp, p, n_kv, s0, ldsc)
        BF_BY8(nr, SCORES);
#undef SCORES
    }
    /* weights, in bf16 over their score rows, zero from each query's end up
     * to n16 rounded to 32 */
    const int32_t n32 = (n16 + 31) & ~31;
    float inv[ATTN_BF_Q];
    for (int i = 0; i < nr; i++) inv[i] = softmax_bf16_row(s0 + (size_t)i * ldsc, n_kv[i0 + i], n32, scale);
    /* outputs, up to 8 queries at a time over V converted once (attn_bf16) */
#define PV(U_, I_) bf_pv(HD, U_, I_, i0, vs, n16, s0, ldsc, inv, outs)
    BF_BY8(nr, PV);
#undef PV
}
#undef BF_BY8

/* V of positions [0, n16) as bf16 pairs into vs (zero past n_max: those
 * cache rows may hold anything), once for all the call's queries. */
TGTBF static void bf_convert_v(const int HD, const uint16_t *const *vb, size_t stride, int32_t n_max, int32_t n16,
                               uint16_t *vs)
{
    for (int32_t p = 0; p < n16; p += 2) {
        const uint16_t *r0 = vb[p / 16] + (size_t)(p % 16) * stride, *r1 = r0 + stride;
        for (int j = 0; j < HD / 16; j++) {
            const __m512 x0 = p < n_max ? f16x16(r0 + 16 * j) : _mm512_setzero_ps();
            const __m512 x1 = p + 1 < n_max ? f16x16(r1 + 16 * j) : _mm512_setzero_ps();
            _mm512_store_si512(vs + ((size_t)(p / 2) * (HD / 16) + (size_t)j) * 32, bf16_pairs(x0, x1));
        }
    }
}

TGTBF static void attn_bf16(int hd, int nq, const float *qf, const uint16_t *const *kb,
                            const uint16_t *const *vb, size_t stride, const int32_t *n_kv,
                            float scale, float *sc, size_t ldsc, float *const *outs, uint16_t *vs)
{
    int32_t n_max = 0;
    for (int i = 0; i < nq; i++) n_max = n_kv[i] > n_max ? n_kv[i] : n_max;
    bf_convert_v(hd, vb, stride, n_max, (n_max + 15) & ~15, vs);
    for (int i0 = 0; i0 < nq; i0 += ATTN_BF_Q) {
        const int nr = nq - i0 < ATTN_BF_Q ? nq - i0 : ATTN_BF_Q;
        if (hd == 64)
            attn_bf16_rows(64, i0, nr, qf, kb, vb, stride, n_kv, scale, sc, ldsc, outs, vs);
        else
            attn_bf16_rows(128, i0, nr, qf, kb, vb, stride, n_kv, scale, sc, ldsc, outs, vs);
    }
}

TGT512A static void attn_avx512(int hd, int nq, const float *qf, const uint16_t *const *kb,
                                const uint16_t *const *vb, size_t stride, const int32_t *n_kv,
                                float scale, float *sc, size_t ldsc, float *const *outs)
{
    if (hd == 64)
        attn_zmm(64, nq, qf, kb, vb, stride, n_kv, scale, sc, ldsc, outs);
    else
        attn_zmm(128, nq, qf, kb, vb, stride, n_kv, scale, sc, ldsc, outs);
}
#endif

/* WEFT_ATTN_TILES=0 keeps prompt tokens' attention on AVX-512 FMAs too
 * (off the AMX-BF16 tiles, or off AVX512-BF16 where there is no AMX). */
static bool attn_tiles_ok, attn_bf16_ok;
static pthread_once_t attn_tiles_once = PTHREAD_ONCE_INIT;
static void attn_tiles_probe(void)
{
    const char *e = getenv("WEFT_ATTN_TILES");
    const bool on = !(e && strcmp(e, "0") == 0);
    attn_tiles_ok = amx_bf16_available() && on;
#if defined(__x86_64__)
    unsigned a, b, c, d; /* AVX512-BF16: leaf 7 subleaf 1 eax bit 5 */
    attn_bf16_ok = on && !attn_tiles_ok && quant_simd() == QUANT_SIMD_AVX512_VNNI &&
                   __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
#endif
}

bool op_attention_available(int hd)
{
#if defined(__x86_64__)
    return (hd == 64 || hd == 128) && quant_simd() == QUANT_SIMD_AVX512_VNNI;
#else
    (void)hd;
    return false;
#endif
}

size_t op_attention_vs_size(int hd, size_t ldsc)
{
    return ldsc * (size_t)(hd > 0 ? hd : 0) * sizeof(uint16_t); /* V of ldsc positions in bf16 */
}

void op_attention(int hd, int nq, const float *qf, const uint16_t *const *kb,
                  const uint16_t *const *vb, size_t stride, const int32_t *n_kv, float scale,
                  float *sc, size_t ldsc, float *const *outs, bool prompt, uint16_t *vs)
{
#if defined(__x86_64__)
    WEFT_ASSERT(op_attention_available(hd));
    pthread_once(&attn_tiles_once, attn_tiles_probe);
    if (attn_tiles_ok && prompt)
        attn_amx(hd, nq, qf, kb, vb, stride, n_kv, scale, sc, ldsc, outs);
    else if (attn_bf16_ok && prompt && vs)
        attn_bf16(hd, nq, qf, kb, vb, stride, n_kv, scale, sc, ldsc, outs, vs);
    else
        attn_avx512(hd, nq, qf, kb, vb, stride, n_kv, scale, sc, ldsc, outs);
#else
    (void)hd, (void)nq, (void)qf, (void)kb, (void)vb, (void)stride, (void)n_kv, (void)scale;
    (void)sc, (void)ldsc, (void)outs, (void)prompt, (void)vs;
    WEFT_ASSERT(!"op_attention without AVX-512");
#endif
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) static void round_f16_avx2(float *y, const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) y[i] = quant_f16_to_f32(quant_f32_to_f16(x[i]));
}
#endif

void vec_round_f16(float *y, const float *x, int64_t n)
{
#if defined(__x86_64__)
    if (quant_has_avx2()) {
        round_f16_avx2(y, x, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = quant_f16_to_f32(quant_f32_to_f16(x[i]));
}

void vec_dot_f16_cols(int64_t hd, const uint16_t *q, const uint16_t *kt, int n, float *scores)
{
#if defined(__x86_64__)
    if (quant_has_avx2()) {
        dot_cols_avx2(hd, q, kt, n, scores);
        return;
    }
#endif
    for (int r = 0; r < n; r++) {
        float even = 0.0f, odd = 0.0f;
        for (int64_t d = 0; d < hd; d++) {
            const float t = quant_f16_to_f32(q[d]) * quant_f16_to_f32(kt[(size_t)d * 16 + r]);
            if (d & 1) odd += t;
            else even += t;
        }
        scores[r] = even + odd;
    }
}

void vec_mad_f16_rows(int64_t hd, float *out, const uint16_t *base, size_t stride, int n,
                      const float *w)
{
#if defined(__x86_64__)
    if (quant_has_avx2()) {
        mad_rows_avx2(hd, out, base, stride, n, w);
        return;
    }
#endif
    for (int i = 0; i < n; i++) vec_mad_f16(hd, out, base + i * stride, w[i]);
}

void vec_f32_to_f16(uint16_t *y, const float *x, int64_t n)
{
#if defined(__x86_64__)
    if (quant_has_avx2()) {
        f32_to_f16_avx2(y, x, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = quant_f32_to_f16(x[i]);
}

float vec_dot_f16(int64_t n, const uint16_t *a, const uint16_t *b)
{
#if defined(__x86_64__)
    if (quant_has_avx2()) return dot_f16_avx2(n, a, b);
#endif
    float r = 0.0f;
    for (int64_t i = 0; i < n; i++) r += quant_f16_to_f32(a[i]) * quant_f16_to_f32(b[i]);
    return r;
}

void vec_mad_f16(int64_t n, float *y, const uint16_t *v, float a)
{
#if defined(__x86_64__)
    if (quant_has_avx2()) {
        mad_f16_avx2(n, y, v, a);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] += a * quant_f16_to_f32(v[i]);
}

void vec_softmax_f16w(float *x, int64_t n, float scale)
{
#if defined(__x86_64__)
    if (quant_has_avx2()) {
        softmax_f16w_avx2(x, n, scale);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) x[i] *= scale;
    vec_softmax(x, n);
    for (int64_t i = 0; i < n; i++) x[i] = quant_f16_to_f32(quant_f32_to_f16(x[i]));
}

void vec_softmax(float *x, int64_t n)
{
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > max) max = x[i];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

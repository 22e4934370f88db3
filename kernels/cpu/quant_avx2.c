/*
 * kernels/cpu/quant_avx2.c — x86 AVX2 + FMA + F16C kernels, chosen at run time
 * by quant.c. Every function carries a target attribute instead of the file
 * being built with -mavx2, so the binary still runs on any x86-64; nothing
 * here is called unless cpuid says the CPU has the features.
 *
 * The integer dot products use the approach of llama.cpp's AVX2 code: weights
 * as unsigned bytes times signed activation bytes with vpmaddubsw, pairs
 * summed with vpmaddwd, one float scale per block. No saturation is possible:
 * every pair sum stays below 2 * 128 * 127 < 32767 for the value ranges of
 * these formats. On CPUs with VNNI the maddubs+madd pair becomes one vpdpbusd
 * (emitted with inline asm so that one generic body serves the three
 * variants, and no function needs an avxvnni target attribute).
 *
 * Results are bitwise equal to llama.cpp's AVX2 ggml_vec_dot_* on the same
 * inputs, on every variant: the int32 lanes hold the same partial sums and
 * the float operations (scale products from the same fp16 table, FMA into one
 * 8-lane accumulator, the same horizontal-sum tree) come in the same order.
 * bench/bench_quant.c -DBENCH_LLAMA checks this against ggml's objects.
 *
 * The 32-value formats have three shapes: one weight row (dot32_1, a single
 * FMA chain like llama.cpp, ~4 cycles per block), four weight rows against one
 * activation (dot32_4: activation loads, corrections and scale shared, four
 * independent chains) and 4 x 2 tiles (dot32_tile, for prefill). All three
 * give the same bits for a given (row, activation) pair.
 */
#include "kernels/cpu/quant_internal.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline, target("avx2,fma,f16c")))

enum { V_AVX2 = 0, V_VEX = 1, V_EVEX = 2 };

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

/* acc + 8 x int32 sums of 4 products u8 (u) x s8 (s). */
INL __m256i dp_u8s8_acc(__m256i acc, __m256i u, __m256i s, const int v)
{
    if (v == V_VEX) {
        __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
        return acc;
    }
    if (v == V_EVEX) {
        __asm__("vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
        return acc;
    }
    return _mm256_add_epi32(acc,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

/* 8 x int32: sums of 4 products u8 (u) x s8 (s). */
INL __m256i dp_u8s8(__m256i u, __m256i s, const int v)
{
    if (v != V_AVX2) return dp_u8s8_acc(_mm256_setzero_si256(), u, s, v);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* 8 x int32 sums of s8 x s8 products: |x| times y with x's sign. */
INL __m256i dp_s8s8(__m256i x, __m256i y, const int v)
{
    return dp_u8s8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x), v);
}

INL float hsum8(__m256 x)
{
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* [hsum8 a, hsum8 b, hsum8 c, hsum8 d], each added in hsum8's order */
INL __m128 hsum8x4(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m128 ra = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 rb = _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
    __m128 rc = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
    __m128 rd = _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
    _MM_TRANSPOSE4_PS(ra, rb, rc, rd); /* ra = lane 0 of each, ... */
    return _mm_add_ps(_mm_add_ps(ra, rc), _mm_add_ps(rb, rd));
}

INL uint32_t ld32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles then high nibbles. */
INL __m256i nibbles32(const uint8_t *qs)
{
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    const __m256i sh = _mm256_srlv_epi32(both, _mm256_set_epi32(4, 4, 4, 4, 0, 0, 0, 0));
    return _mm256_and_si256(sh, _mm256_set1_epi8(0xF));
}

/* 32 bits -> 32 bytes: 0xFF where the bit is set. */
INL __m256i bits32(const uint8_t *p)
{
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)ld32(p)),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

/* ------------------------------------------------------------------------ */
/* 32-value block formats                                                   */

/* The offset b of the types stored as unsigned q with value q - b. Their dot
 * is taken on q and corrected by -b * sum(y), which is computed once per
 * activation block and shared by all weight rows, instead of llama.cpp's
 * per-row sign trick (two vpsignb per block and row). The corrected int32
 * lanes equal llama.cpp's exactly. Q8_0 gets the same treatment (q = w + 128)
 * only with VNNI: with vpmaddubsw, 255 * 127 pairs would saturate its 16-bit
 * sums, so without VNNI Q8_0 keeps the sign trick (bias 0 = signed bytes). */
INL int bias32(const int t, const int v, const int rows)
{
    switch (t) {
    case WEFT_TYPE_Q4_0: return 8;
    case WEFT_TYPE_Q5_0: return 16;
    /* for one row the correction is not shared and the sign trick is cheaper */
    case WEFT_TYPE_Q8_0: return v == V_AVX2 || rows == 1 ? 0 : 128;
    default: return 0;
    }
}

/* The 32 weights of a block as bytes: unsigned q for every type except Q8_0
 * without VNNI, which stays signed. */
INL __m256i w32(const int t, const uint8_t *b, const int v, const int rows)
{
    switch (t) {
    case WEFT_TYPE_Q4_0: return nibbles32(((const block_q4_0 *)b)->qs);
    case WEFT_TYPE_Q4_1: return nibbles32(((const block_q4_1 *)b)->qs);
    case WEFT_TYPE_Q5_0: {
        const block_q5_0 *x = (const block_q5_0 *)b;
        const __m256i hi = _mm256_and_si256(bits32(x->qh), _mm256_set1_epi8(0x10));
        return _mm256_or_si256(nibbles32(x->qs), hi);
    }
    case WEFT_TYPE_Q5_1: {
        const block_q5_1 *x = (const block_q5_1 *)b;
        const __m256i hi = _mm256_and_si256(bits32(x->qh), _mm256_set1_epi8(0x10));
        return _mm256_or_si256(nibbles32(x->qs), hi);
    }
    default: {
        const __m256i q = _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)b)->qs);
        return bias32(t, v, rows) ? _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)) : q;
    }
    }
}

INL size_t wsize32(const int t)
{
    switch (t) {
    case WEFT_TYPE_Q4_0: return sizeof(block_q4_0);
    case WEFT_TYPE_Q4_1: return sizeof(block_q4_1);
    case WEFT_TYPE_Q5_0: return sizeof(block_q5_0);
    case WEFT_TYPE_Q5_1: return sizeof(block_q5_1);
    default: return sizeof(block_q8_0);
    }
}

/* Weight types with a min are dotted with Q8_1, the others with Q8_0. */
INL int has_min(const int t)
{
    return t == WEFT_TYPE_Q4_1 || t == WEFT_TYPE_Q5_1;
}

#define F16T(h) quant_f16_table[(h)]

/* Activation block, loaded once per block for all weight rows. */
typedef struct {
    __m256i q;    /* 32 int8 */
    __m256i corr; /* -bias * (sum of 4 consecutive q) per int32 lane */
    __m256 d;     /* its scale, in all lanes */
    float ds;     /* and as a scalar */
    float s;      /* Q8_1 only */
} act32;

/* A table entry in all 8 lanes: vbroadcastss from memory is a pure load. */
INL __m256 f16t_bcast(uint16_t h)
{
    return _mm256_broadcast_ss(&quant_f16_table[h]);
}

INL act32 act32_load(const int t, const uint8_t *ab, const int v, const int rows)
{
    act32 r;
    const uint16_t *h = (const uint16_t *)ab; /* d, then s for Q8_1 */
    r.q = _mm256_loadu_si256((const __m256i *)(ab + (has_min(t) ? 4 : 2)));
    r.d = f16t_bcast(h[0]);
    r.ds = F16T(h[0]);
    r.s = has_min(t) ? F16T(h[1]) : 0.0f;
    r.corr = _mm256_setzero_si256();
    if (bias32(t, v, rows))
        r.corr =
            _mm256_sub_epi32(r.corr, dp_u8s8(_mm256_set1_epi8((char)bias32(t, v, rows)), r.q, v));
    return r;
}

/* acc += (dw * da) * dot(block), and summs += mw * sa for the types with a
 * min. The operation order is llama.cpp's (its AVX2 ggml_vec_dot_*, where GCC
 * contracts `summs += m * s` into an FMA), so the sums come out bitwise
 * equal to its. The scales are multiplied as splatted vectors (two load-only
 * broadcasts and a vmulps, same product as the scalar one) to keep the
 * shuffle port free. */
INL void step32(const int t, const uint8_t *wb, const act32 *a, __m256 *acc, float *summs,
                const int v, const int rows)
{
    const __m256i wq = w32(t, wb, v, rows);
    const __m256 d = rows == 1 ? _mm256_set1_ps(F16T(((const uint16_t *)wb)[0]) * a->ds)
                               : _mm256_mul_ps(f16t_bcast(((const uint16_t *)wb)[0]), a->d);
    __m256i ip;
    if (bias32(t, v, rows))
        ip = dp_u8s8_acc(a->corr, wq, a->q, v);
    else if (has_min(t))
        ip = dp_u8s8(wq, a->q, v);
    else
        ip = dp_s8s8(wq, a->q, v);
    if (has_min(t)) *summs = fmaf(F16T(((const uint16_t *)wb)[1]), a->s, *summs);
    *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(ip), *acc);
}

INL float dot32_1(const int t, int64_t n, const void *vw, const void *va, const int v)
{
    const uint8_t *w = vw, *a = va;
    const size_t wbs = wsize32(t), abs_ = has_min(t) ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const int64_t nb = n / 32;
    /* One accumulator, like llama.cpp: the FMA chain bounds a single row at
     * ~4 cycles per block, which dot32_4 avoids; two accumulators here would
     * make the result depend on whether a row went through dot32_1 or
     * dot32_4. */
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const act32 ab = act32_load(t, a + b * abs_, v, 1);
        step32(t, w + b * wbs, &ab, &acc, &summs, v, 1);
    }
    /* no "+ 0.0f" for the types without a min: it would turn -0 into +0 */
    return has_min(t) ? hsum8(acc) + summs : hsum8(acc);
}

INL void dot32_4(const int t, int64_t n, const void *vw, size_t stride, const void *va, float *out,
                 const int v)
{
    const uint8_t *w0 = vw, *w1 = w0 + stride, *w2 = w1 + stride, *w3 = w2 + stride;
    const uint8_t *a = va;
    const size_t wbs = wsize32(t), abs_ = has_min(t) ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const int64_t nb = n / 32;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    float m0 = 0.0f, m1 = 0.0f, m2 = 0.0f, m3 = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const act32 ab = act32_load(t, a + b * abs_, v, 4);
        step32(t, w0 + b * wbs, &ab, &acc0, &m0, v, 4);
        step32(t, w1 + b * wbs, &ab, &acc1, &m1, v, 4);
        step32(t, w2 + b * wbs, &ab, &acc2, &m2, v, 4);
        step32(t, w3 + b * wbs, &ab, &acc3, &m3, v, 4);
    }
    __m128 r = hsum8x4(acc0, acc1, acc2, acc3);
    if (has_min(t)) r = _mm_add_ps(r, _mm_setr_ps(m0, m1, m2, m3));
    _mm_storeu_ps(out, r);
}

/* 4 weight rows x 2 activation rows: each weight block is decoded once for
 * two activations and each activation block (with its correction) loaded
 * once for four rows. Every (row, activation) pair keeps its own accumulator
 * and the operation order of dot32_1, so the results are bitwise those of
 * dot32_1. The eight scale products d_w * d_a of a block come from one
 * multiply and are spread with vpermps, and the Q4_1/Q5_1 min terms are
 * 4-wide FMAs: that moves 14 of the ~45 uops per block that need ports 0/1
 * (which bound this loop) to the shuffle port.
 * out[j * os + i] = dot(w_i, a_j). */
INL void dot32_tile(const int t, int64_t n, const void *vw, size_t ws, const void *va, size_t as,
                    float *out, size_t os, const int v)
{
    const uint8_t *w = vw, *a = va;
    const uint8_t *w0 = w, *w1 = w + ws, *w2 = w + 2 * ws, *w3 = w + 3 * ws;
    const size_t wbs = wsize32(t), abs_ = has_min(t) ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const int64_t nb = n / 32;
    __m256 acc[4][2];
    __m128 summs[2] = {_mm_setzero_ps(), _mm_setzero_ps()}; /* lane i: row i */
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const size_t ob = (size_t)b * wbs;
        const uint16_t *h0 = (const uint16_t *)(w0 + ob), *h1 = (const uint16_t *)(w1 + ob);
        const uint16_t *h2 = (const uint16_t *)(w2 + ob), *h3 = (const uint16_t *)(w3 + ob);
        act32 ab[2];
#pragma GCC unroll 2
        for (int j = 0; j < 2; j++) ab[j] = act32_load(t, a + j * as + b * abs_, v, 4);
        /* lanes 0..3: d_w(row i) * d_a(act 0), lanes 4..7: * d_a(act 1) */
        const __m128 dw = _mm_setr_ps(F16T(h0[0]), F16T(h1[0]), F16T(h2[0]), F16T(h3[0]));
        const __m256 dd =
            _mm256_mul_ps(_mm256_set_m128(dw, dw), _mm256_blend_ps(ab[0].d, ab[1].d, 0xf0));
        if (has_min(t)) {
            const __m128 mw = _mm_setr_ps(F16T(h0[1]), F16T(h1[1]), F16T(h2[1]), F16T(h3[1]));
            summs[0] = _mm_fmadd_ps(mw, _mm_set1_ps(ab[0].s), summs[0]);
            summs[1] = _mm_fmadd_ps(mw, _mm_set1_ps(ab[1].s), summs[1]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m256i wq = w32(t, w + i * ws + ob, v, 4);
#pragma GCC unroll 2
            for (int j = 0; j < 2; j++) {
                __m256i ip;
                if (bias32(t, v, 4))
                    ip = dp_u8s8_acc(ab[j].corr, wq, ab[j].q, v);
                else if (has_min(t))
                    ip = dp_u8s8(wq, ab[j].q, v);
                else
                    ip = dp_s8s8(wq, ab[j].q, v);
                const __m256 d = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(4 * j + i));
                acc[i][j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(ip), acc[i][j]);
            }
        }
    }
#pragma GCC unroll 2
    for (int j = 0; j < 2; j++) {
        __m128 r = hsum8x4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]);
        if (has_min(t)) r = _mm_add_ps(r, summs[j]);
        _mm_storeu_ps(out + j * os, r);
    }
}

/* The same 4 x 2 tile on 512-bit registers (AVX512F/BW/VL/VNNI), for Q4_1 and
 * Q8_0. Each zmm holds two (row, activation) pairs side by side: lanes 0..7
 * are the 8 int32 / float lanes of (row i, act 0) and lanes 8..15 those of
 * (row i, act 1), so one vpdpbusd, vcvtdq2ps, vmulps and vfmadd does the work
 * of two on ymm while every lane sees exactly the operations of dot32_tile
 * (and so of dot32_1): the results stay bitwise equal.
 *
 * Q4_1 weights are not shifted: the 16 bytes are broadcast to the four
 * 128-bit lanes and masked with 0x0F (elements 0..15) / 0xF0 (16..31), so the
 * int32 lanes 4..7 of each half hold 16 x the true sums (still exact in
 * float, |x| < 2^17), and their scale is d / 16. d / 16 is exact (d is a
 * product of two fp16 values, far from float underflow) and
 * (d / 16) * (16 x) == d * x exactly, so the FMA rounds the same value.
 * That saves the vpsrlvd of nibbles32 (port 0 on zmm, like vpdpbusd). */
#define TGT512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define INL512                                                                                     \
    static inline __attribute__((always_inline,                                                    \
                                 target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

INL512 __m512i act2_load(const uint8_t *a0, const uint8_t *a1)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a0)),
                              _mm256_loadu_si256((const __m256i *)a1), 1);
}

/* 4 weight rows x na (2 or 4) activation rows; zmm p holds activations 2p
 * and 2p + 1. */
INL512 void dot32_tile_zmm(const int t, const int na, int64_t n, const void *vw, size_t ws,
                           const void *va, size_t as, float *out, size_t os)
{
    const uint8_t *w = vw, *a = va;
    const uint8_t *w0 = w, *w1 = w + ws, *w2 = w + 2 * ws, *w3 = w + 3 * ws;
    const int q41 = t == WEFT_TYPE_Q4_1;
    const size_t wbs = q41 ? sizeof(block_q4_1) : sizeof(block_q8_0);
    const size_t abs_ = q41 ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t aoff = q41 ? 4 : 2, woff = q41 ? 4 : 2;
    const int64_t nb = n / 32;
    const int np = na / 2;
    /* Q4_1: 0x0F for bytes 0..15 of each 32-byte half, 0xF0 for 16..31 */
    const __m512i nmask = _mm512_set_epi64(
        (long long)0xF0F0F0F0F0F0F0F0ULL, (long long)0xF0F0F0F0F0F0F0F0ULL, 0x0F0F0F0F0F0F0F0F,
        0x0F0F0F0F0F0F0F0F, (long long)0xF0F0F0F0F0F0F0F0ULL, (long long)0xF0F0F0F0F0F0F0F0ULL,
        0x0F0F0F0F0F0F0F0F, 0x0F0F0F0F0F0F0F0F);
    const __m512 dscale = _mm512_setr_ps(1.0f, 1.0f, 1.0f, 1.0f, 0.0625f, 0.0625f, 0.0625f,
                                         0.0625f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0625f, 0.0625f,
                                         0.0625f, 0.0625f);
    __m512 acc[4][2];
    __m128 summs[4]; /* lane i: row i */
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) summs[j] = _mm_setzero_ps();
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const size_t ob = (size_t)b * wbs;
        __m512i aq[2], corr[2];
        __m512 da[2];
#pragma GCC unroll 2
        for (int p = 0; p < np; p++) {
            const uint8_t *a0 = a + 2 * p * as + b * abs_, *a1 = a0 + as;
            const uint16_t *ha0 = (const uint16_t *)a0, *ha1 = (const uint16_t *)a1;
            aq[p] = act2_load(a0 + aoff, a1 + aoff);
            /* lanes 0..7: d_a(act 2p), 8..15: d_a(act 2p + 1) */
            da[p] = _mm512_mask_broadcastss_ps(_mm512_set1_ps(F16T(ha0[0])), 0xFF00,
                                               _mm_set_ss(F16T(ha1[0])));
            corr[p] = _mm512_setzero_si512();
            if (q41)
                da[p] = _mm512_mul_ps(da[p], dscale);
            else
                corr[p] = _mm512_sub_epi32(
                    corr[p], _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                                 _mm512_set1_epi8((char)128), aq[p]));
        }
        if (q41) {
            const uint16_t *h0 = (const uint16_t *)(w0 + ob), *h1 = (const uint16_t *)(w1 + ob);
            const uint16_t *h2 = (const uint16_t *)(w2 + ob), *h3 = (const uint16_t *)(w3 + ob);
            const __m128 mw = _mm_setr_ps(F16T(h0[1]), F16T(h1[1]), F16T(h2[1]), F16T(h3[1]));
#pragma GCC unroll 4
            for (int j = 0; j < na; j++) {
                const uint16_t *ha = (const uint16_t *)(a + j * as + b * abs_);
                summs[j] = _mm_fmadd_ps(mw, _mm_set1_ps(F16T(ha[1])), summs[j]);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const uint8_t *wb = w + i * ws + ob;
            __m512i wq;
            if (q41)
                wq = _mm512_and_si512(
                    _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(wb + woff))), nmask);
            else
                wq = _mm512_xor_si512(
                    _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wb + woff))),
                    _mm512_set1_epi8((char)0x80));
            const __m512 dw = _mm512_set1_ps(F16T(((const uint16_t *)wb)[0]));
#pragma GCC unroll 2
            for (int p = 0; p < np; p++) {
                const __m512i ip = _mm512_dpbusd_epi32(corr[p], wq, aq[p]);
                const __m512 d = _mm512_mul_ps(dw, da[p]);
                acc[i][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(ip), acc[i][p]);
            }
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < na; j++) {
        __m256 h[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
        {
            /* the lane half must be an immediate (clang checks even at -O0) */
            const __m512d v = _mm512_castps_pd(acc[i][j / 2]);
            h[i] = _mm256_castpd_ps((j & 1) ? _mm512_extractf64x4_pd(v, 1) : _mm512_extractf64x4_pd(v, 0));
        }
        __m128 r = hsum8x4(h[0], h[1], h[2], h[3]);
        if (q41) r = _mm_add_ps(r, summs[j]);
        _mm_storeu_ps(out + j * os, r);
    }
}

TGT512 static void tile_q4_1_zmm(int64_t n, const void *w, size_t ws, const void *a, size_t as,
                                 float *o, size_t os)
{
    dot32_tile_zmm(WEFT_TYPE_Q4_1, 2, n, w, ws, a, as, o, os);
}

TGT512 static void tile_q8_0_zmm(int64_t n, const void *w, size_t ws, const void *a, size_t as,
                                 float *o, size_t os)
{
    dot32_tile_zmm(WEFT_TYPE_Q8_0, 2, n, w, ws, a, as, o, os);
}

TGT512 static void tile4_q4_1_zmm(int64_t n, const void *w, size_t ws, const void *a, size_t as,
                                  float *o, size_t os)
{
    dot32_tile_zmm(WEFT_TYPE_Q4_1, 4, n, w, ws, a, as, o, os);
}

TGT512 static void tile4_q8_0_zmm(int64_t n, const void *w, size_t ws, const void *a, size_t as,
                                  float *o, size_t os)
{
    dot32_tile_zmm(WEFT_TYPE_Q8_0, 4, n, w, ws, a, as, o, os);
}

/* ------------------------------------------------------------------------ */
/* K-quants (256-value super-blocks, Q8_K activations)                      */

/* The 8 scales (lanes 0..7) and 8 mins (lanes 8..15) of a Q4_K/Q5_K block as
 * int16. */
INL __m256i k4_scales_mins(const uint8_t *s12)
{
    const uint32_t u0 = ld32(s12), u1 = ld32(s12 + 4), u2 = ld32(s12 + 8);
    const uint32_t sc03 = u0 & 0x3f3f3f3f, mn03 = u1 & 0x3f3f3f3f;
    const uint32_t sc47 = (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4);
    const uint32_t mn47 = ((u2 >> 4) & 0x0f0f0f0f) | (((u1 >> 6) & 0x03030303) << 4);
    return _mm256_cvtepu8_epi16(_mm_set_epi32((int)mn47, (int)mn03, (int)sc47, (int)sc03));
}

/* int16 x in all 16 lanes, x = lane j of the 8 int16 in v (both halves). */
INL __m256i bcast_i16(__m256i v2, const int j)
{
    return _mm256_shuffle_epi8(v2, _mm256_set1_epi16((short)((2 * j) | ((2 * j + 1) << 8))));
}

/* dmin * sum_j mins[j] * (bsums[2j] + bsums[2j+1]) as 4 int32 lanes */
INL __m128i k4_min_terms(__m256i scmn, const int16_t *bsums)
{
    const __m256i bs = _mm256_loadu_si256((const __m256i *)bsums);
    const __m128i pairs =
        _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return _mm_madd_epi16(_mm256_extracti128_si256(scmn, 1), pairs);
}

INL float dot_q4_K_impl(int64_t n, const void *vw, const void *va)
{
    const block_q4_K *x = vw;
    const block_q8_K *y = va;
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const float dy = y[i].d;
        const float d = dy * F16T(x[i].d), dmin = -dy * F16T(x[i].dmin);
        const __m256i scmn = k4_scales_mins(x[i].scales);
        accm =
            _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_min_terms(scmn, y[i].bsums)), accm);
        const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(scmn));
        const uint8_t *q4 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(q4 + 32 * c));
            const __m256i lo = _mm256_and_si256(bits, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            const __m256i plo =
                _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(q8 + 64 * c)));
            const __m256i phi =
                _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 64 * c + 32)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(bcast_i16(sc, 2 * c), plo));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(bcast_i16(sc, 2 * c + 1), phi));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    accm = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
    accm = _mm_add_ss(accm, _mm_movehdup_ps(accm));
    return hsum8(acc) + _mm_cvtss_f32(accm);
}

INL float dot_q5_K_impl(int64_t n, const void *vw, const void *va)
{
    const block_q5_K *x = vw;
    const block_q8_K *y = va;
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF), m16 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    __m128 summs = _mm_setzero_ps(); /* lane 0; a scalar sum in llama.cpp's order */
    for (int64_t i = 0; i < nb; i++) {
        const float dy = y[i].d;
        const float d = dy * F16T(x[i].d), dmin = -dy * F16T(x[i].dmin);
        const __m256i scmn = k4_scales_mins(x[i].scales);
        __m128i pm = k4_min_terms(scmn, y[i].bsums);
        pm = _mm_add_epi32(pm, _mm_unpackhi_epi64(pm, pm));
        pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 1));
        summs = _mm_fmadd_ss(_mm_set_ss(dmin), _mm_cvtepi32_ps(pm), summs);
        const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(scmn));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)x[i].qh);
        const uint8_t *q5 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(q5 + 32 * c));
            /* bit 2c of qh -> bit 4 for the low half, bit 2c+1 for the high half */
            const __m256i hlo =
                2 * c <= 4 ? _mm256_slli_epi16(qh, 4 - 2 * c) : _mm256_srli_epi16(qh, 2 * c - 4);
            const __m256i hhi = 2 * c + 1 <= 4 ? _mm256_slli_epi16(qh, 3 - 2 * c)
                                               : _mm256_srli_epi16(qh, 2 * c - 3);
            const __m256i lo =
                _mm256_or_si256(_mm256_and_si256(bits, m4), _mm256_and_si256(hlo, m16));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
                                               _mm256_and_si256(hhi, m16));
            const __m256i plo =
                _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(q8 + 64 * c)));
            const __m256i phi =
                _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 64 * c + 32)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(bcast_i16(sc, 2 * c), plo));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(bcast_i16(sc, 2 * c + 1), phi));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc) + _mm_cvtss_f32(summs);
}

/* Scales for 32 values that straddle two 16-value groups j and j+1: int16
 * sc[j] in lanes 0..7, sc[j+1] in lanes 8..15. `s16` holds the 16 int8 scales
 * sign-extended to int16 in both 128-bit halves as two copies of scales
 * 0..7 and 8..15: lo = scales 0..7 twice, hi = scales 8..15 twice. */
INL __m256i pair_scales(__m256i lo8, __m256i hi8, const int j)
{
    const __m256i src = j < 8 ? lo8 : hi8;
    const int k = j & 7;
    const __m256i ctl = _mm256_setr_epi8(
        (char)(2 * k), (char)(2 * k + 1), (char)(2 * k), (char)(2 * k + 1), (char)(2 * k),
        (char)(2 * k + 1), (char)(2 * k), (char)(2 * k + 1), (char)(2 * k), (char)(2 * k + 1),
        (char)(2 * k), (char)(2 * k + 1), (char)(2 * k), (char)(2 * k + 1), (char)(2 * k),
        (char)(2 * k + 1), (char)(2 * k + 2), (char)(2 * k + 3), (char)(2 * k + 2),
        (char)(2 * k + 3), (char)(2 * k + 2), (char)(2 * k + 3), (char)(2 * k + 2),
        (char)(2 * k + 3), (char)(2 * k + 2), (char)(2 * k + 3), (char)(2 * k + 2),
        (char)(2 * k + 3), (char)(2 * k + 2), (char)(2 * k + 3), (char)(2 * k + 2),
        (char)(2 * k + 3));
    return _mm256_shuffle_epi8(src, ctl);
}

/* The 16 int8 scales as int16: scales 0..7 in both halves (lo8) and 8..15 in
 * both halves (hi8). */
INL void scales16(const int8_t *sc, __m256i *lo8, __m256i *hi8)
{
    const __m256i s = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
    *lo8 = _mm256_permute2x128_si256(s, s, 0x00);
    *hi8 = _mm256_permute2x128_si256(s, s, 0x11);
}

INL float dot_q6_K_impl(int64_t n, const void *vw, const void *va)
{
    const block_q6_K *x = vw;
    const block_q8_K *y = va;
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF), m3 = _mm256_set1_epi8(0x30);
    const __m256i m32 = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const float d = y[i].d * F16T(x[i].d);
        __m256i lo8, hi8;
        scales16(x[i].scales, &lo8, &hi8);
        __m256i sumi = _mm256_setzero_si256();
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *q8 = y[i].qs;
#pragma GCC unroll 2
        for (int c = 0; c < 2; c++) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(ql + 64 * c));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 64 * c + 32));
            const __m256i h = _mm256_loadu_si256((const __m256i *)(qh + 32 * c));
            const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(h, 4), m3));
            const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(h, 2), m3));
            const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                               _mm256_and_si256(h, m3));
            const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                               _mm256_and_si256(_mm256_srli_epi16(h, 2), m3));
            const int8_t *a = q8 + 128 * c;
            /* (q - 32) * y per 16-bit lane, so that the int32 lanes hold the
             * same partial sums as llama.cpp's (the float result then matches
             * bitwise); folding the -32 into bsums would be cheaper. */
            const __m256i a0 = _mm256_loadu_si256((const __m256i *)(a + 0));
            const __m256i a1 = _mm256_loadu_si256((const __m256i *)(a + 32));
            const __m256i a2 = _mm256_loadu_si256((const __m256i *)(a + 64));
            const __m256i a3 = _mm256_loadu_si256((const __m256i *)(a + 96));
            const __m256i p0 =
                _mm256_sub_epi16(_mm256_maddubs_epi16(q0, a0), _mm256_maddubs_epi16(m32, a0));
            const __m256i p1 =
                _mm256_sub_epi16(_mm256_maddubs_epi16(q1, a1), _mm256_maddubs_epi16(m32, a1));
            const __m256i p2 =
                _mm256_sub_epi16(_mm256_maddubs_epi16(q2, a2), _mm256_maddubs_epi16(m32, a2));
            const __m256i p3 =
                _mm256_sub_epi16(_mm256_maddubs_epi16(q3, a3), _mm256_maddubs_epi16(m32, a3));
            const int j = 8 * c;
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pair_scales(lo8, hi8, j + 0), p0));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pair_scales(lo8, hi8, j + 2), p1));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pair_scales(lo8, hi8, j + 4), p2));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pair_scales(lo8, hi8, j + 6), p3));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

INL float dot_q2_K_impl(int64_t n, const void *vw, const void *va)
{
    const block_q2_K *x = vw;
    const block_q8_K *y = va;
    const int64_t nb = n / QK_K;
    const __m256i m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const float d = y[i].d * F16T(x[i].d), dmin = -y[i].d * F16T(x[i].dmin);
        const __m128i sm = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m256i mins =
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(0xF)));
        const __m256i pm = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)y[i].bsums));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(pm), acc);
        const __m256i s = _mm256_cvtepu8_epi16(_mm_and_si128(sm, _mm_set1_epi8(0xF)));
        const __m256i lo8 = _mm256_permute2x128_si256(s, s, 0x00),
                      hi8 = _mm256_permute2x128_si256(s, s, 0x11);
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int c = 0; c < 2; c++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * c));
            const int8_t *a = y[i].qs + 128 * c;
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m2);
                const __m256i p =
                    _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)(a + 32 * k)));
                sumi = _mm256_add_epi32(sumi,
                                        _mm256_madd_epi16(pair_scales(lo8, hi8, 8 * c + 2 * k), p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

INL float dot_q3_K_impl(int64_t n, const void *vw, const void *va)
{
    const block_q3_K *x = vw;
    const block_q8_K *y = va;
    const int64_t nb = n / QK_K;
    const __m256i m2 = _mm256_set1_epi8(3), m4v = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    int8_t sc[16];
    for (int64_t i = 0; i < nb; i++) {
        const float d = y[i].d * F16T(x[i].d);
        quant_q3k_scales(x[i].scales, sc);
        __m256i lo8, hi8;
        scales16(sc, &lo8, &hi8);
        const __m256i hm = _mm256_loadu_si256((const __m256i *)x[i].hmask);
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int c = 0; c < 2; c++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * c));
            const int8_t *a = y[i].qs + 128 * c;
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const int bit = 4 * c + k;
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m2);
                /* 4 where the high bit is clear: q - 4 */
                const __m256i bmask = _mm256_set1_epi8((char)(1u << bit));
                const __m256i clear =
                    _mm256_cmpeq_epi8(_mm256_and_si256(hm, bmask), _mm256_setzero_si256());
                const __m256i sub = _mm256_and_si256(clear, m4v);
                const __m256i av = _mm256_loadu_si256((const __m256i *)(a + 32 * k));
                const __m256i p =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(q, av), _mm256_maddubs_epi16(sub, av));
                sumi = _mm256_add_epi32(sumi,
                                        _mm256_madd_epi16(pair_scales(lo8, hi8, 8 * c + 2 * k), p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

/* ------------------------------------------------------------------------ */
/* Float types                                                              */

INL __m256 ld_f16x8(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

INL __m256 ld_bf16x8(const uint16_t *p)
{
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

enum { FT_F32, FT_F16, FT_BF16 };

INL __m256 ld_x8(const int ft, const void *p, int64_t i)
{
    if (ft == FT_F32) return _mm256_loadu_ps((const float *)p + i);
    if (ft == FT_F16) return ld_f16x8((const uint16_t *)p + i);
    return ld_bf16x8((const uint16_t *)p + i);
}

INL float ld_x1(const int ft, const void *p, int64_t i)
{
    if (ft == FT_F32) return ((const float *)p)[i];
    if (ft == FT_F16) return _cvtsh_ss(((const uint16_t *)p)[i]);
    return quant_bf16_to_f32(((const uint16_t *)p)[i]);
}

/* ggml_vec_dot_f16's AVX2 shape: four 8-wide FMA accumulators over 32 values,
 * reduced (0+2)+(1+3), the remainder added in double. */
INL float dot_float_impl(const int ft, int64_t n, const void *w, const void *a)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const int64_t np = n & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 32) {
        s0 = _mm256_fmadd_ps(ld_x8(ft, w, i), ld_x8(ft, a, i), s0);
        s1 = _mm256_fmadd_ps(ld_x8(ft, w, i + 8), ld_x8(ft, a, i + 8), s1);
        s2 = _mm256_fmadd_ps(ld_x8(ft, w, i + 16), ld_x8(ft, a, i + 16), s2);
        s3 = _mm256_fmadd_ps(ld_x8(ft, w, i + 24), ld_x8(ft, a, i + 24), s3);
    }
    s0 = _mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s1, s3));
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    double sum = _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
    for (int64_t i = np; i < n; i++) sum += (double)(ld_x1(ft, w, i) * ld_x1(ft, a, i));
    return (float)sum;
}

INL float dot_f32_impl(int64_t n, const void *w, const void *a)
{
    return dot_float_impl(FT_F32, n, w, a);
}

INL float dot_f16_impl(int64_t n, const void *w, const void *a)
{
    return dot_float_impl(FT_F16, n, w, a);
}

INL float dot_bf16_impl(int64_t n, const void *w, const void *a)
{
    return dot_float_impl(FT_BF16, n, w, a);
}

/* ------------------------------------------------------------------------ */
/* Quantize / dequantize                                                    */

/* llama.cpp's AVX2 quantize_row_q8_0 / q8_1: d = amax / 127 (stored fp16),
 * q = round-half-even(x * (127 / amax)). */
INL void q8_avx2_impl(const float *x, void *vy, int64_t n, const int with_sum)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const int64_t nb = n / 32;
    for (int64_t b = 0; b < nb; b++, x += 32) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 amax = _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1));
        amax = _mm256_max_ps(amax,
                             _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float mx = _mm_cvtss_f32(m4);
        const float d = mx / 127.0f;
        const __m256 id = _mm256_set1_ps(mx != 0.0f ? 127.0f / mx : 0.0f);
        const __m256i i0 = _mm256_cvtps_epi32(
            _mm256_round_ps(_mm256_mul_ps(v0, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        const __m256i i1 = _mm256_cvtps_epi32(
            _mm256_round_ps(_mm256_mul_ps(v1, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        const __m256i i2 = _mm256_cvtps_epi32(
            _mm256_round_ps(_mm256_mul_ps(v2, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        const __m256i i3 = _mm256_cvtps_epi32(
            _mm256_round_ps(_mm256_mul_ps(v3, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        /* packs interleave 128-bit lanes; the permute restores element order */
        const __m256i p16a = _mm256_packs_epi32(i0, i1), p16b = _mm256_packs_epi32(i2, i3);
        const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b),
                                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        if (with_sum) {
            block_q8_1 *y = (block_q8_1 *)vy + b;
            const __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
            y->d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
            y->s = _cvtss_sh(d * (float)_mm_cvtsi128_si32(s4), _MM_FROUND_TO_NEAREST_INT);
            _mm256_storeu_si256((__m256i *)y->qs, p8);
        } else {
            block_q8_0 *y = (block_q8_0 *)vy + b;
            y->d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
            _mm256_storeu_si256((__m256i *)y->qs, p8);
        }
    }
}

TGT static void q_q8_0_avx2(const float *x, void *y, int64_t n)
{
    q8_avx2_impl(x, y, n, 0);
}

TGT static void q_q8_1_avx2(const float *x, void *y, int64_t n)
{
    q8_avx2_impl(x, y, n, 1);
}

TGT static void q_f16_avx2(const float *x, void *vy, int64_t n)
{
    uint16_t *y = vy;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

TGT static void dq_f16_avx2(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, ld_f16x8(x + i));
    for (; i < n; i++) y[i] = _cvtsh_ss(x[i]);
}

TGT static void dq_bf16_avx2(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, ld_bf16x8(x + i));
    for (; i < n; i++) y[i] = quant_bf16_to_f32(x[i]);
}

/* ------------------------------------------------------------------------ */
/* Entry points and tables                                                  */

#define DOT32_VARIANTS(name, T)                                                                    \
    TGT static float dot_##name##_avx2(int64_t n, const void *w, const void *a)                    \
    {                                                                                              \
        return dot32_1(T, n, w, a, V_AVX2);                                                        \
    }                                                                                              \
    TGT static float dot_##name##_vex(int64_t n, const void *w, const void *a)                     \
    {                                                                                              \
        return dot32_1(T, n, w, a, V_VEX);                                                         \
    }                                                                                              \
    TGT static float dot_##name##_evex(int64_t n, const void *w, const void *a)                    \
    {                                                                                              \
        return dot32_1(T, n, w, a, V_EVEX);                                                        \
    }                                                                                              \
    TGT static void dot4_##name##_avx2(int64_t n, const void *w, size_t s, const void *a,          \
                                       float *o)                                                   \
    {                                                                                              \
        dot32_4(T, n, w, s, a, o, V_AVX2);                                                         \
    }                                                                                              \
    TGT static void dot4_##name##_vex(int64_t n, const void *w, size_t s, const void *a, float *o) \
    {                                                                                              \
        dot32_4(T, n, w, s, a, o, V_VEX);                                                          \
    }                                                                                              \
    TGT static void dot4_##name##_evex(int64_t n, const void *w, size_t s, const void *a,          \
                                       float *o)                                                   \
    {                                                                                              \
        dot32_4(T, n, w, s, a, o, V_EVEX);                                                         \
    }

#define TILE_VARIANTS(name, T)                                                                     \
    TGT static void tile_##name##_avx2(int64_t n, const void *w, size_t ws, const void *a,         \
                                       size_t as, float *o, size_t os)                             \
    {                                                                                              \
        dot32_tile(T, n, w, ws, a, as, o, os, V_AVX2);                                             \
    }                                                                                              \
    TGT static void tile_##name##_vex(int64_t n, const void *w, size_t ws, const void *a,          \
                                      size_t as, float *o, size_t os)                              \
    {                                                                                              \
        dot32_tile(T, n, w, ws, a, as, o, os, V_VEX);                                              \
    }                                                                                              \
    TGT static void tile_##name##_evex(int64_t n, const void *w, size_t ws, const void *a,         \
                                       size_t as, float *o, size_t os)                             \
    {                                                                                              \
        dot32_tile(T, n, w, ws, a, as, o, os, V_EVEX);                                             \
    }

TILE_VARIANTS(q4_0, WEFT_TYPE_Q4_0)
TILE_VARIANTS(q4_1, WEFT_TYPE_Q4_1)
TILE_VARIANTS(q5_0, WEFT_TYPE_Q5_0)
TILE_VARIANTS(q5_1, WEFT_TYPE_Q5_1)
TILE_VARIANTS(q8_0, WEFT_TYPE_Q8_0)

DOT32_VARIANTS(q4_0, WEFT_TYPE_Q4_0)
DOT32_VARIANTS(q4_1, WEFT_TYPE_Q4_1)
DOT32_VARIANTS(q5_0, WEFT_TYPE_Q5_0)
DOT32_VARIANTS(q5_1, WEFT_TYPE_Q5_1)
DOT32_VARIANTS(q8_0, WEFT_TYPE_Q8_0)

#define DOT_SIMPLE(name)                                                                           \
    TGT static float dot_##name##_avx2(int64_t n, const void *w, const void *a)                    \
    {                                                                                              \
        return dot_##name##_impl(n, w, a);                                                         \
    }

DOT_SIMPLE(q2_K)
DOT_SIMPLE(q3_K)
DOT_SIMPLE(q4_K)
DOT_SIMPLE(q5_K)
DOT_SIMPLE(q6_K)
DOT_SIMPLE(f32)
DOT_SIMPLE(f16)
DOT_SIMPLE(bf16)

bool quant_x86_kernels(int level, quant_kernels *k)
{
    memset(k, 0, sizeof *k);
    if (level < QUANT_SIMD_AVX2) return false;
#define SET32(T, name)                                                                             \
    do {                                                                                           \
        k->dot[WEFT_TYPE_##T] = level == QUANT_SIMD_AVX2_VNNI     ? dot_##name##_vex               \
                                : level == QUANT_SIMD_AVX512_VNNI ? dot_##name##_evex              \
                                                                  : dot_##name##_avx2;             \
        k->dot4[WEFT_TYPE_##T] = level == QUANT_SIMD_AVX2_VNNI     ? dot4_##name##_vex             \
                                 : level == QUANT_SIMD_AVX512_VNNI ? dot4_##name##_evex            \
                                                                   : dot4_##name##_avx2;           \
        k->tile[WEFT_TYPE_##T] = level == QUANT_SIMD_AVX2_VNNI     ? tile_##name##_vex             \
                                 : level == QUANT_SIMD_AVX512_VNNI ? tile_##name##_evex            \
                                                                   : tile_##name##_avx2;           \
    } while (0)
    SET32(Q4_0, q4_0);
    SET32(Q4_1, q4_1);
    SET32(Q5_0, q5_0);
    SET32(Q5_1, q5_1);
    SET32(Q8_0, q8_0);
#undef SET32
    if (level == QUANT_SIMD_AVX512_VNNI) {
        k->tile[WEFT_TYPE_Q4_1] = tile_q4_1_zmm;
        k->tile[WEFT_TYPE_Q8_0] = tile_q8_0_zmm;
        k->tile4[WEFT_TYPE_Q4_1] = tile4_q4_1_zmm;
        k->tile4[WEFT_TYPE_Q8_0] = tile4_q8_0_zmm;
    }
    k->dot[WEFT_TYPE_Q2_K] = dot_q2_K_avx2;
    k->dot[WEFT_TYPE_Q3_K] = dot_q3_K_avx2;
    k->dot[WEFT_TYPE_Q4_K] = dot_q4_K_avx2;
    k->dot[WEFT_TYPE_Q5_K] = dot_q5_K_avx2;
    k->dot[WEFT_TYPE_Q6_K] = dot_q6_K_avx2;
    k->dot[WEFT_TYPE_F32] = dot_f32_avx2;
    k->dot[WEFT_TYPE_F16] = dot_f16_avx2;
    k->dot[WEFT_TYPE_BF16] = dot_bf16_avx2;
    k->quantize[WEFT_TYPE_Q8_0] = q_q8_0_avx2;
    k->quantize[WEFT_TYPE_Q8_1] = q_q8_1_avx2;
    k->quantize[WEFT_TYPE_F16] = q_f16_avx2;
    k->dequantize[WEFT_TYPE_F16] = dq_f16_avx2;
    k->dequantize[WEFT_TYPE_BF16] = dq_bf16_avx2;
    return true;
}

#else /* not x86 */

bool quant_x86_kernels(int level, quant_kernels *k)
{
    (void)level;
    memset(k, 0, sizeof *k);
    return false;
}

#endif

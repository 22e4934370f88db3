/*
 * kernels/cpu/quant.c — type table, fp16/bf16 conversion, the scalar reference
 * of every quant kernel, and the run-time dispatch to the SIMD kernels of
 * quant_avx2.c.
 *
 * Activation quantization (Q8_0, Q8_1, Q8_K) follows llama.cpp:
 *  - scalar path: quantize_row_q8_0_ref / q8_1_ref (d = amax/127 stored as
 *    fp16, id = 1/d, q = roundf(x*id), half away from zero; Q8_1 adds
 *    s = fp16(d * sum(q)));
 *  - AVX2 path: llama.cpp's AVX2 quantize_row_q8_0 / q8_1 (id = 127/amax,
 *    q = round-half-even(x*id)), so that weft on an AVX2 machine produces the
 *    same activations as llama.cpp on that machine;
 *  - Q8_K: quantize_row_q8_K_ref on every path (llama.cpp uses it on x86 too):
 *    iscale = -127/max where max is the signed value of largest magnitude,
 *    q = min(127, nearest_int(iscale*x)), d = 1/iscale, bsums per 16.
 * Weight quantizers are simple references for building test weights: Q4_0 /
 * Q4_1 / Q5_0 / Q5_1 as llama.cpp's *_ref, the K-quants a one-pass min/max
 * scheme (not llama.cpp's iterative search, so files differ from
 * llama-quantize's, but they dequantize close to the input).
 */
#include "kernels/cpu/quant_internal.h"

#include "weft/common.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Type table                                                               */

typedef struct {
    const char *name;
    uint16_t block; /* values per block, 0 = unknown id */
    uint16_t size;  /* bytes per block */
    bool supported; /* weights of this type can be dequantized and dotted */
    int8_t vec_dot; /* activation type, -1 if none */
} type_info;

/* Every GGML type id up to 39; sizes of the types weft cannot compute with are
 * still listed so that a GGUF reader can walk files containing them. */
static const type_info type_table[WEFT_TYPE_COUNT] = {
    [0] = {"f32", 1, 4, true, WEFT_TYPE_F32},
    [1] = {"f16", 1, 2, true, WEFT_TYPE_F16},
    [2] = {"q4_0", 32, 18, true, WEFT_TYPE_Q8_0},
    [3] = {"q4_1", 32, 20, true, WEFT_TYPE_Q8_1},
    [6] = {"q5_0", 32, 22, true, WEFT_TYPE_Q8_0},
    [7] = {"q5_1", 32, 24, true, WEFT_TYPE_Q8_1},
    [8] = {"q8_0", 32, 34, true, WEFT_TYPE_Q8_0},
    [9] = {"q8_1", 32, 36, false, -1},
    [10] = {"q2_K", 256, 84, true, WEFT_TYPE_Q8_K},
    [11] = {"q3_K", 256, 110, true, WEFT_TYPE_Q8_K},
    [12] = {"q4_K", 256, 144, true, WEFT_TYPE_Q8_K},
    [13] = {"q5_K", 256, 176, true, WEFT_TYPE_Q8_K},
    [14] = {"q6_K", 256, 210, true, WEFT_TYPE_Q8_K},
    [15] = {"q8_K", 256, 292, false, -1},
    [16] = {"iq2_xxs", 256, 66, false, -1},
    [17] = {"iq2_xs", 256, 74, false, -1},
    [18] = {"iq3_xxs", 256, 98, false, -1},
    [19] = {"iq1_s", 256, 50, false, -1},
    [20] = {"iq4_nl", 32, 18, false, -1},
    [21] = {"iq3_s", 256, 110, false, -1},
    [22] = {"iq2_s", 256, 82, false, -1},
    [23] = {"iq4_xs", 256, 136, false, -1},
    [24] = {"i8", 1, 1, false, -1},
    [25] = {"i16", 1, 2, false, -1},
    [26] = {"i32", 1, 4, false, -1},
    [27] = {"i64", 1, 8, false, -1},
    [28] = {"f64", 1, 8, false, -1},
    [29] = {"iq1_m", 256, 56, false, -1},
    [30] = {"bf16", 1, 2, true, WEFT_TYPE_BF16},
    [34] = {"tq1_0", 256, 54, false, -1},
    [35] = {"tq2_0", 256, 66, false, -1},
    [39] = {"mxfp4", 32, 17, false, -1},
};

static const type_info *type_get(int t)
{
    if (t < 0 || t >= WEFT_TYPE_COUNT || !type_table[t].block) return NULL;
    return &type_table[t];
}

const char *quant_type_name(int t)
{
    const type_info *ti = type_get(t);
    return ti ? ti->name : "unknown";
}

bool quant_type_supported(int t)
{
    const type_info *ti = type_get(t);
    return ti && ti->supported;
}

size_t quant_block_size(int t)
{
    const type_info *ti = type_get(t);
    return ti ? ti->block : 0;
}

size_t quant_type_size(int t)
{
    const type_info *ti = type_get(t);
    return ti ? ti->size : 0;
}

size_t quant_row_size(int t, int64_t n)
{
    const type_info *ti = type_get(t);
    if (!ti || n < 0 || n % ti->block) return 0;
    return (size_t)(n / ti->block) * ti->size;
}

weft_type quant_vec_dot_type(weft_type t)
{
    const type_info *ti = type_get(t);
    if (!ti || ti->vec_dot < 0) return t;
    return (weft_type)ti->vec_dot;
}

/* ------------------------------------------------------------------------ */
/* fp16 / bf16                                                              */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float quant_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000 | (mant << 13));
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float */
        float v = (float)mant * 0x1p-24f;
        return f32_from_bits(sign | f32_bits(v));
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t quant_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) /* NaN: keep it quiet, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000) /* >= 65520 rounds to infinity (and inf stays inf) */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000) {
        /* Below 2^-14: an fp16 subnormal (or zero). Adding 0.5 puts the ulp
         * at 2^-24, the fp16 subnormal step, so the FPU rounds to nearest
         * even for us; the result's low mantissa bits are the fp16 bits. */
        float v = f32_from_bits(ax) + 0.5f;
        return (uint16_t)(sign | (f32_bits(v) - f32_bits(0.5f)));
    }
    /* Normal: round the 13 dropped mantissa bits to nearest even; a carry
     * into the exponent is the right answer. Rebias 127 -> 15. */
    uint32_t r = ax + 0xfff + ((ax >> 13) & 1);
    return (uint16_t)(sign | ((r >> 13) - (112 << 10)));
}

float quant_bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t quant_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

#define F16(h) quant_f16_to_f32(h)

/* ------------------------------------------------------------------------ */
/* Dequantization (scalar)                                                  */

static void dq_f32(const void *vx, float *y, int64_t n)
{
    memcpy(y, vx, (size_t)n * sizeof(float));
}

static void dq_f16(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = quant_f16_to_f32(x[i]);
}

static void dq_bf16(const void *vx, float *y, int64_t n)
{
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = quant_bf16_to_f32(x[i]);
}

static void dq_q4_0(const void *vx, float *y, int64_t n)
{
    const block_q4_0 *x = vx;
    for (int64_t b = 0; b < n / QK4_0; b++, y += QK4_0) {
        const float d = F16(x[b].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * ((x[b].qs[j] & 0xF) - 8);
            y[j + 16] = d * ((x[b].qs[j] >> 4) - 8);
        }
    }
}

static void dq_q4_1(const void *vx, float *y, int64_t n)
{
    const block_q4_1 *x = vx;
    for (int64_t b = 0; b < n / QK4_1; b++, y += QK4_1) {
        const float d = F16(x[b].d), m = F16(x[b].m);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (x[b].qs[j] & 0xF) + m;
            y[j + 16] = d * (x[b].qs[j] >> 4) + m;
        }
    }
}

static inline uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void dq_q5_0(const void *vx, float *y, int64_t n)
{
    const block_q5_0 *x = vx;
    for (int64_t b = 0; b < n / QK5_0; b++, y += QK5_0) {
        const float d = F16(x[b].d);
        const uint32_t qh = load_u32(x[b].qh);
        for (int j = 0; j < 16; j++) {
            int q0 = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int q1 = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (q0 - 16);
            y[j + 16] = d * (q1 - 16);
        }
    }
}

static void dq_q5_1(const void *vx, float *y, int64_t n)
{
    const block_q5_1 *x = vx;
    for (int64_t b = 0; b < n / QK5_1; b++, y += QK5_1) {
        const float d = F16(x[b].d), m = F16(x[b].m);
        const uint32_t qh = load_u32(x[b].qh);
        for (int j = 0; j < 16; j++) {
            int q0 = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int q1 = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = d * q0 + m;
            y[j + 16] = d * q1 + m;
        }
    }
}

static void dq_q8_0(const void *vx, float *y, int64_t n)
{
    const block_q8_0 *x = vx;
    for (int64_t b = 0; b < n / QK8_0; b++, y += QK8_0) {
        const float d = F16(x[b].d);
        for (int j = 0; j < QK8_0; j++) y[j] = d * x[b].qs[j];
    }
}

static void dq_q8_1(const void *vx, float *y, int64_t n)
{
    const block_q8_1 *x = vx;
    for (int64_t b = 0; b < n / QK8_1; b++, y += QK8_1) {
        const float d = F16(x[b].d);
        for (int j = 0; j < QK8_1; j++) y[j] = d * x[b].qs[j];
    }
}

static void dq_q2_K(const void *vx, float *y, int64_t n)
{
    const block_q2_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K) {
        const float d = F16(x[b].d), dmin = F16(x[b].dmin);
        for (int e = 0; e < QK_K; e++) {
            const uint8_t sc = x[b].scales[e / 16];
            const int q = (x[b].qs[(e / 128) * 32 + (e % 32)] >> (2 * ((e % 128) / 32))) & 3;
            y[e] = d * (sc & 0xF) * q - dmin * (sc >> 4);
        }
    }
}

static void dq_q3_K(const void *vx, float *y, int64_t n)
{
    const block_q3_K *x = vx;
    int8_t sc[16];
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K) {
        const float d = F16(x[b].d);
        quant_q3k_scales(x[b].scales, sc);
        for (int e = 0; e < QK_K; e++) {
            int q = (x[b].qs[(e / 128) * 32 + (e % 32)] >> (2 * ((e % 128) / 32))) & 3;
            if (!(x[b].hmask[e % 32] & (1u << (e / 32)))) q -= 4;
            y[e] = d * sc[e / 16] * q;
        }
    }
}

static void dq_q4_K(const void *vx, float *y, int64_t n)
{
    const block_q4_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = F16(x[b].d), dmin = F16(x[b].dmin);
        const uint8_t *q = x[b].qs;
        for (int c = 0; c < 4; c++, q += 32, y += 64) {
            uint8_t sc, m;
            quant_k4_scale_min(2 * c, x[b].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            quant_k4_scale_min(2 * c + 1, x[b].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) y[l] = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) y[l + 32] = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void dq_q5_K(const void *vx, float *y, int64_t n)
{
    const block_q5_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = F16(x[b].d), dmin = F16(x[b].dmin);
        const uint8_t *q = x[b].qs, *qh = x[b].qh;
        for (int c = 0; c < 4; c++, q += 32, y += 64) {
            uint8_t sc, m;
            quant_k4_scale_min(2 * c, x[b].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            quant_k4_scale_min(2 * c + 1, x[b].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            const uint8_t u1 = (uint8_t)(1u << (2 * c)), u2 = (uint8_t)(2u << (2 * c));
            for (int l = 0; l < 32; l++) y[l] = d1 * ((q[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                y[l + 32] = d2 * ((q[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* The 6-bit value (0..63) of element e of a Q6_K block. */
static inline int q6k_value(const block_q6_K *x, int e)
{
    const int c = e / 128, r = e % 128, l = r % 32, part = r / 32;
    const uint8_t ql = x->ql[64 * c + l + (part & 1) * 32];
    const int lo = part < 2 ? (ql & 0xF) : (ql >> 4);
    const int hi = (x->qh[32 * c + l] >> (2 * part)) & 3;
    return lo | (hi << 4);
}

static void dq_q6_K(const void *vx, float *y, int64_t n)
{
    const block_q6_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K) {
        const float d = F16(x[b].d);
        for (int e = 0; e < QK_K; e++) y[e] = d * x[b].scales[e / 16] * (q6k_value(&x[b], e) - 32);
    }
}

static void dq_q8_K(const void *vx, float *y, int64_t n)
{
    const block_q8_K *x = vx;
    for (int64_t b = 0; b < n / QK_K; b++, y += QK_K)
        for (int j = 0; j < QK_K; j++) y[j] = x[b].d * x[b].qs[j];
}

/* ------------------------------------------------------------------------ */
/* Quantization (scalar)                                                    */

static void q_f32(const float *x, void *y, int64_t n)
{
    memcpy(y, x, (size_t)n * sizeof(float));
}

static void q_f16(const float *x, void *vy, int64_t n)
{
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = quant_f32_to_f16(x[i]);
}

static void q_bf16(const float *x, void *vy, int64_t n)
{
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = quant_f32_to_bf16(x[i]);
}

static float block_amax(const float *x, int n)
{
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

/* The signed value of largest magnitude (the first one on ties). */
static float block_signed_max(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void q_q8_0(const float *x, void *vy, int64_t n)
{
    block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / QK8_0; b++, x += QK8_0) {
        const float d = block_amax(x, QK8_0) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = quant_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void q_q8_1(const float *x, void *vy, int64_t n)
{
    block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / QK8_1; b++, x += QK8_1) {
        const float d = block_amax(x, QK8_1) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        y[b].d = quant_f32_to_f16(d);
        for (int j = 0; j < QK8_1; j++) {
            y[b].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[b].qs[j];
        }
        y[b].s = quant_f32_to_f16((float)sum * d);
    }
}

static void q_q8_K(const float *x, void *vy, int64_t n)
{
    block_q8_K *y = vy;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        const float max = block_signed_max(x, QK_K);
        if (max == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = quant_nearest_int(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[b].qs[16 * j + l];
            y[b].bsums[j] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

static inline int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The legacy 4/5-bit formats: llama.cpp's quantize_row_q*_ref. */
static void q_q4_0(const float *x, void *vy, int64_t n)
{
    block_q4_0 *y = vy;
    for (int64_t b = 0; b < n / QK4_0; b++, x += QK4_0) {
        const float d = block_signed_max(x, QK4_0) / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = quant_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int q0 = clampi((int)(int8_t)(x[j] * id + 8.5f), 0, 15);
            int q1 = clampi((int)(int8_t)(x[j + 16] * id + 8.5f), 0, 15);
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void block_min_max(const float *x, int n, float *mn, float *mx)
{
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        lo = fminf(lo, x[j]);
        hi = fmaxf(hi, x[j]);
    }
    *mn = lo;
    *mx = hi;
}

static void q_q4_1(const float *x, void *vy, int64_t n)
{
    block_q4_1 *y = vy;
    for (int64_t b = 0; b < n / QK4_1; b++, x += QK4_1) {
        float mn, mx;
        block_min_max(x, QK4_1, &mn, &mx);
        const float d = (mx - mn) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = quant_f32_to_f16(d);
        y[b].m = quant_f32_to_f16(mn);
        for (int j = 0; j < 16; j++) {
            int q0 = clampi((int)((x[j] - mn) * id + 0.5f), 0, 15);
            int q1 = clampi((int)((x[j + 16] - mn) * id + 0.5f), 0, 15);
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void q_q5_0(const float *x, void *vy, int64_t n)
{
    block_q5_0 *y = vy;
    for (int64_t b = 0; b < n / QK5_0; b++, x += QK5_0) {
        const float d = block_signed_max(x, QK5_0) / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        y[b].d = quant_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int q0 = clampi((int)(int8_t)(x[j] * id + 16.5f), 0, 31);
            int q1 = clampi((int)(int8_t)(x[j + 16] * id + 16.5f), 0, 31);
            y[b].qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        memcpy(y[b].qh, &qh, 4);
    }
}

static void q_q5_1(const float *x, void *vy, int64_t n)
{
    block_q5_1 *y = vy;
    for (int64_t b = 0; b < n / QK5_1; b++, x += QK5_1) {
        float mn, mx;
        block_min_max(x, QK5_1, &mn, &mx);
        const float d = (mx - mn) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        y[b].d = quant_f32_to_f16(d);
        y[b].m = quant_f32_to_f16(mn);
        for (int j = 0; j < 16; j++) {
            int q0 = clampi((int)((x[j] - mn) * id + 0.5f), 0, 31);
            int q1 = clampi((int)((x[j + 16] - mn) * id + 0.5f), 0, 31);
            y[b].qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        memcpy(y[b].qh, &qh, 4);
    }
}

/* K-quants with a minimum (Q2_K, Q4_K, Q5_K): sub-blocks of `sub` values get
 * x ~ scale*q - min with q in 0..qmax; scales and mins are then quantized to
 * `sbits` bits against the block's d and dmin, and the values re-quantized
 * with the scales actually stored. Writes d, dmin, ls[], lm[] and L[]. */
static void kquant_min_scales(const float *x, int nsub, int sub, int qmax, int smax, float *d,
                              float *dmin, uint8_t *ls, uint8_t *lm, uint8_t *L)
{
    float scales[16], mins[16], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < nsub; j++) {
        float mn, mx;
        block_min_max(x + j * sub, sub, &mn, &mx);
        if (mn > 0.0f) mn = 0.0f;
        scales[j] = (mx - mn) / qmax;
        mins[j] = -mn;
        max_scale = fmaxf(max_scale, scales[j]);
        max_min = fmaxf(max_min, mins[j]);
    }
    const uint16_t hd = quant_f32_to_f16(max_scale / smax);
    const uint16_t hm = quant_f32_to_f16(max_min / smax);
    *d = quant_f16_to_f32(hd);
    *dmin = quant_f16_to_f32(hm);
    for (int j = 0; j < nsub; j++) {
        ls[j] = (uint8_t)(*d > 0.0f ? clampi(quant_nearest_int(scales[j] / *d), 0, smax) : 0);
        lm[j] = (uint8_t)(*dmin > 0.0f ? clampi(quant_nearest_int(mins[j] / *dmin), 0, smax) : 0);
        const float ds = *d * ls[j], dm = *dmin * lm[j];
        for (int l = 0; l < sub; l++) {
            const float v = x[j * sub + l];
            L[j * sub + l] =
                (uint8_t)(ds > 0.0f ? clampi(quant_nearest_int((v + dm) / ds), 0, qmax) : 0);
        }
    }
}

static void k4_pack_scales(const uint8_t *ls, const uint8_t *lm, uint8_t *s12)
{
    memset(s12, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s12[j] = ls[j];
            s12[j + 4] = lm[j];
        } else {
            s12[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s12[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s12[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Q2_K / Q3_K 2-bit field layout: per 128 values, byte l of 32 holds values
 * l, l+32, l+64, l+96 at shifts 0, 2, 4, 6. */
static void pack_2bit(const uint8_t *L, uint8_t *qs)
{
    for (int c = 0; c < QK_K; c += 128)
        for (int l = 0; l < 32; l++)
            qs[c / 4 + l] = (uint8_t)((L[c + l] & 3) | ((L[c + l + 32] & 3) << 2) |
                                      ((L[c + l + 64] & 3) << 4) | ((L[c + l + 96] & 3) << 6));
}

static void q_q2_K(const float *x, void *vy, int64_t n)
{
    block_q2_K *y = vy;
    uint8_t L[QK_K], ls[16], lm[16];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float d, dmin;
        kquant_min_scales(x, 16, 16, 3, 15, &d, &dmin, ls, lm, L);
        y[b].d = quant_f32_to_f16(d);
        y[b].dmin = quant_f32_to_f16(dmin);
        for (int j = 0; j < 16; j++) y[b].scales[j] = (uint8_t)(ls[j] | (lm[j] << 4));
        pack_2bit(L, y[b].qs);
    }
}

static void q_q4_K(const float *x, void *vy, int64_t n)
{
    block_q4_K *y = vy;
    uint8_t L[QK_K], ls[8], lm[8];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float d, dmin;
        kquant_min_scales(x, 8, 32, 15, 63, &d, &dmin, ls, lm, L);
        y[b].d = quant_f32_to_f16(d);
        y[b].dmin = quant_f32_to_f16(dmin);
        k4_pack_scales(ls, lm, y[b].scales);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                y[b].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

static void q_q5_K(const float *x, void *vy, int64_t n)
{
    block_q5_K *y = vy;
    uint8_t L[QK_K], ls[8], lm[8];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float d, dmin;
        kquant_min_scales(x, 8, 32, 31, 63, &d, &dmin, ls, lm, L);
        y[b].d = quant_f32_to_f16(d);
        y[b].dmin = quant_f32_to_f16(dmin);
        k4_pack_scales(ls, lm, y[b].scales);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                const int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
                y[b].qs[32 * c + l] = (uint8_t)((l1 & 0xF) | ((l2 & 0xF) << 4));
                y[b].qh[l] |= (uint8_t)(((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1)));
            }
        }
    }
}

/* Symmetric K-quants (Q3_K, Q6_K): sub-blocks of 16 get x ~ scale * q with q in
 * [-qhalf, qhalf); the per-sub-block scales are quantized to signed integers
 * in [-smax-1, smax] against d. Writes d, sc[] and L[] = q + qhalf. */
static void kquant_sym_scales(const float *x, int qhalf, int smax, float *d, int8_t *sc, uint8_t *L)
{
    float scales[16], max_scale = 0.0f, amax = 0.0f;
    for (int j = 0; j < 16; j++) {
        /* The value of largest magnitude maps to -qhalf, the end with room. */
        scales[j] = block_signed_max(x + 16 * j, 16) / (float)-qhalf;
        if (fabsf(scales[j]) > amax) {
            amax = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    if (amax == 0.0f) {
        *d = 0.0f;
        memset(sc, 0, 16);
        memset(L, qhalf, QK_K);
        return;
    }
    const float iscale = (float)-(smax + 1) / max_scale;
    *d = quant_f16_to_f32(quant_f32_to_f16(1.0f / iscale));
    for (int j = 0; j < 16; j++) {
        sc[j] = (int8_t)clampi(quant_nearest_int(iscale * scales[j]), -(smax + 1), smax);
        const float ds = *d * sc[j];
        for (int l = 0; l < 16; l++) {
            const int q = ds != 0.0f ? quant_nearest_int(x[16 * j + l] / ds) : 0;
            L[16 * j + l] = (uint8_t)(clampi(q, -qhalf, qhalf - 1) + qhalf);
        }
    }
}

static void q_q3_K(const float *x, void *vy, int64_t n)
{
    block_q3_K *y = vy;
    uint8_t L[QK_K];
    int8_t sc[16];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float d;
        kquant_sym_scales(x, 4, 31, &d, sc, L);
        y[b].d = quant_f32_to_f16(d);
        memset(y[b].scales, 0, 12);
        for (int j = 0; j < 16; j++) {
            const int l = sc[j] + 32;
            if (j < 8)
                y[b].scales[j] |= (uint8_t)(l & 0xF);
            else
                y[b].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
            y[b].scales[8 + (j & 3)] |= (uint8_t)((l >> 4) << (2 * (j >> 2)));
        }
        memset(y[b].hmask, 0, sizeof y[b].hmask);
        for (int e = 0; e < QK_K; e++) {
            if (L[e] > 3) {
                y[b].hmask[e % 32] |= (uint8_t)(1u << (e / 32));
                L[e] -= 4;
            }
        }
        pack_2bit(L, y[b].qs);
    }
}

static void q_q6_K(const float *x, void *vy, int64_t n)
{
    block_q6_K *y = vy;
    uint8_t L[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float d;
        kquant_sym_scales(x, 32, 127, &d, y[b].scales, L);
        y[b].d = quant_f32_to_f16(d);
        for (int c = 0; c < 2; c++) {
            const uint8_t *Lc = L + 128 * c;
            for (int l = 0; l < 32; l++) {
                y[b].ql[64 * c + l] = (uint8_t)((Lc[l] & 0xF) | ((Lc[l + 64] & 0xF) << 4));
                y[b].ql[64 * c + l + 32] =
                    (uint8_t)((Lc[l + 32] & 0xF) | ((Lc[l + 96] & 0xF) << 4));
                y[b].qh[32 * c + l] =
                    (uint8_t)((Lc[l] >> 4) | ((Lc[l + 32] >> 4) << 2) | ((Lc[l + 64] >> 4) << 4) |
                              ((Lc[l + 96] >> 4) << 6));
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Dot products (scalar reference)                                          */

static float dot_f32(int64_t n, const void *vw, const void *va)
{
    const float *w = vw, *a = va;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(w[i] * a[i]);
    return (float)sum;
}

static float dot_f16(int64_t n, const void *vw, const void *va)
{
    const uint16_t *w = vw, *a = va;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(F16(w[i]) * F16(a[i]));
    return (float)sum;
}

static float dot_bf16(int64_t n, const void *vw, const void *va)
{
    const uint16_t *w = vw, *a = va;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(quant_bf16_to_f32(w[i]) * quant_bf16_to_f32(a[i]));
    return (float)sum;
}

static float dot_q4_0(int64_t n, const void *vw, const void *va)
{
    const block_q4_0 *x = vw;
    const block_q8_0 *y = va;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += ((x[b].qs[j] & 0xF) - 8) * y[b].qs[j];
            sumi += ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + 16];
        }
        sum += (F16(x[b].d) * F16(y[b].d)) * (float)sumi;
    }
    return sum;
}

static float dot_q4_1(int64_t n, const void *vw, const void *va)
{
    const block_q4_1 *x = vw;
    const block_q8_1 *y = va;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_1; b++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += (x[b].qs[j] & 0xF) * y[b].qs[j];
            sumi += (x[b].qs[j] >> 4) * y[b].qs[j + 16];
        }
        sum += (F16(x[b].d) * F16(y[b].d)) * (float)sumi + F16(x[b].m) * F16(y[b].s);
    }
    return sum;
}

static float dot_q5_0(int64_t n, const void *vw, const void *va)
{
    const block_q5_0 *x = vw;
    const block_q8_0 *y = va;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK5_0; b++) {
        const uint32_t qh = load_u32(x[b].qh);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            const int q0 = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            const int q1 = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            sumi += (q0 - 16) * y[b].qs[j] + (q1 - 16) * y[b].qs[j + 16];
        }
        sum += (F16(x[b].d) * F16(y[b].d)) * (float)sumi;
    }
    return sum;
}

static float dot_q5_1(int64_t n, const void *vw, const void *va)
{
    const block_q5_1 *x = vw;
    const block_q8_1 *y = va;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK5_1; b++) {
        const uint32_t qh = load_u32(x[b].qh);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            const int q0 = (x[b].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            const int q1 = (x[b].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            sumi += q0 * y[b].qs[j] + q1 * y[b].qs[j + 16];
        }
        sum += (F16(x[b].d) * F16(y[b].d)) * (float)sumi + F16(x[b].m) * F16(y[b].s);
    }
    return sum;
}

static float dot_q8_0(int64_t n, const void *vw, const void *va)
{
    const block_q8_0 *x = vw;
    const block_q8_0 *y = va;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += x[b].qs[j] * y[b].qs[j];
        sum += (F16(x[b].d) * F16(y[b].d)) * (float)sumi;
    }
    return sum;
}

static float dot_q2_K(int64_t n, const void *vw, const void *va)
{
    const block_q2_K *x = vw;
    const block_q8_K *y = va;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) {
                const int e = 16 * j + l;
                const int q = (x[b].qs[(e / 128) * 32 + (e % 32)] >> (2 * ((e % 128) / 32))) & 3;
                s += q * y[b].qs[e];
            }
            sumi += (x[b].scales[j] & 0xF) * s;
            summ += (x[b].scales[j] >> 4) * y[b].bsums[j];
        }
        sum += y[b].d * F16(x[b].d) * (float)sumi - y[b].d * F16(x[b].dmin) * (float)summ;
    }
    return sum;
}

static float dot_q3_K(int64_t n, const void *vw, const void *va)
{
    const block_q3_K *x = vw;
    const block_q8_K *y = va;
    int8_t sc[16];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        quant_q3k_scales(x[b].scales, sc);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) {
                const int e = 16 * j + l;
                int q = (x[b].qs[(e / 128) * 32 + (e % 32)] >> (2 * ((e % 128) / 32))) & 3;
                if (!(x[b].hmask[e % 32] & (1u << (e / 32)))) q -= 4;
                s += q * y[b].qs[e];
            }
            sumi += sc[j] * s;
        }
        sum += y[b].d * F16(x[b].d) * (float)sumi;
    }
    return sum;
}

static float dot_q4_K(int64_t n, const void *vw, const void *va)
{
    const block_q4_K *x = vw;
    const block_q8_K *y = va;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            quant_k4_scale_min(j, x[b].scales, &sc, &m);
            const uint8_t *q = x[b].qs + 32 * (j / 2);
            const int8_t *a = y[b].qs + 32 * j;
            int s = 0;
            for (int l = 0; l < 32; l++) s += ((j & 1) ? q[l] >> 4 : q[l] & 0xF) * a[l];
            sumi += sc * s;
            summ += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        sum += y[b].d * F16(x[b].d) * (float)sumi - y[b].d * F16(x[b].dmin) * (float)summ;
    }
    return sum;
}

static float dot_q5_K(int64_t n, const void *vw, const void *va)
{
    const block_q5_K *x = vw;
    const block_q8_K *y = va;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            quant_k4_scale_min(j, x[b].scales, &sc, &m);
            const uint8_t *q = x[b].qs + 32 * (j / 2);
            const int8_t *a = y[b].qs + 32 * j;
            int s = 0;
            for (int l = 0; l < 32; l++) {
                const int lo = (j & 1) ? q[l] >> 4 : q[l] & 0xF;
                const int hi = (x[b].qh[l] >> j) & 1;
                s += (lo | (hi << 4)) * a[l];
            }
            sumi += sc * s;
            summ += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        sum += y[b].d * F16(x[b].d) * (float)sumi - y[b].d * F16(x[b].dmin) * (float)summ;
    }
    return sum;
}

static float dot_q6_K(int64_t n, const void *vw, const void *va)
{
    const block_q6_K *x = vw;
    const block_q8_K *y = va;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += (q6k_value(&x[b], 16 * j + l) - 32) * y[b].qs[16 * j + l];
            sumi += x[b].scales[j] * s;
        }
        sum += y[b].d * F16(x[b].d) * (float)sumi;
    }
    return sum;
}

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                 */

static void scalar_kernels(quant_kernels *k)
{
    memset(k, 0, sizeof *k);
#define SET(T, name)                                                                               \
    do {                                                                                           \
        k->dequantize[WEFT_TYPE_##T] = dq_##name;                                                  \
        k->quantize[WEFT_TYPE_##T] = q_##name;                                                     \
    } while (0)
    SET(F32, f32);
    SET(F16, f16);
    SET(BF16, bf16);
    SET(Q4_0, q4_0);
    SET(Q4_1, q4_1);
    SET(Q5_0, q5_0);
    SET(Q5_1, q5_1);
    SET(Q8_0, q8_0);
    SET(Q8_1, q8_1);
    SET(Q2_K, q2_K);
    SET(Q3_K, q3_K);
    SET(Q4_K, q4_K);
    SET(Q5_K, q5_K);
    SET(Q6_K, q6_K);
    SET(Q8_K, q8_K);
#undef SET
    k->dot[WEFT_TYPE_F32] = dot_f32;
    k->dot[WEFT_TYPE_F16] = dot_f16;
    k->dot[WEFT_TYPE_BF16] = dot_bf16;
    k->dot[WEFT_TYPE_Q4_0] = dot_q4_0;
    k->dot[WEFT_TYPE_Q4_1] = dot_q4_1;
    k->dot[WEFT_TYPE_Q5_0] = dot_q5_0;
    k->dot[WEFT_TYPE_Q5_1] = dot_q5_1;
    k->dot[WEFT_TYPE_Q8_0] = dot_q8_0;
    k->dot[WEFT_TYPE_Q2_K] = dot_q2_K;
    k->dot[WEFT_TYPE_Q3_K] = dot_q3_K;
    k->dot[WEFT_TYPE_Q4_K] = dot_q4_K;
    k->dot[WEFT_TYPE_Q5_K] = dot_q5_K;
    k->dot[WEFT_TYPE_Q6_K] = dot_q6_K;
}

float quant_f16_table[1 << 16];

static quant_kernels k_scalar, k_active;
static int k_level; /* quant_simd_level of k_active */
static int k_ready; /* read with acquire; set once by quant_init */
static pthread_once_t k_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* cpuid + xgetbv rather than __builtin_cpu_supports: clang's builtin knows
 * neither "f16c" nor "avxvnni", and the OS must have enabled the YMM (and for
 * EVEX, ZMM/opmask) register state. */
static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static bool cpu_has(quant_simd_level level)
{
    unsigned a, b, c, d;
    if (level == QUANT_SIMD_SCALAR) return true;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28),
               f16c = c & (1u << 29);
    if (!(fma && osxsave && avx && f16c)) return false;
    const uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 6) != 6) return false; /* XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30),
               avx512vl = b & (1u << 31), avx512vnni = c & (1u << 11);
    if (!avx2) return false;
    switch (level) {
    case QUANT_SIMD_AVX2: return true;
    case QUANT_SIMD_AVX2_VNNI: {
        unsigned a1, b1, c1, d1;
        if (!__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) return false;
        return a1 & (1u << 4);
    }
    /* the Q4_1/Q8_0 tiles use zmm: opmask, ZMM_Hi256 and Hi16_ZMM state (XCR0 bits 5..7) */
    case QUANT_SIMD_AVX512_VNNI:
        return avx512f && avx512bw && avx512vl && avx512vnni && (xcr0 & 0xe6) == 0xe6;
    default: return false;
    }
}
#else
static bool cpu_has(quant_simd_level level)
{
    return level == QUANT_SIMD_SCALAR;
}
#endif

static void kernels_build(int level)
{
    k_active = k_scalar;
    k_level = QUANT_SIMD_SCALAR;
    if (level == QUANT_SIMD_SCALAR) return;
    quant_kernels simd;
    if (!quant_x86_kernels(level, &simd)) return;
    for (int t = 0; t < WEFT_TYPE_COUNT; t++) {
        if (simd.dot[t]) k_active.dot[t] = simd.dot[t];
        if (simd.dot4[t]) k_active.dot4[t] = simd.dot4[t];
        if (simd.tile[t]) k_active.tile[t] = simd.tile[t];
        if (simd.tile4[t]) k_active.tile4[t] = simd.tile4[t];
        if (simd.quantize[t]) k_active.quantize[t] = simd.quantize[t];
        if (simd.dequantize[t]) k_active.dequantize[t] = simd.dequantize[t];
    }
    k_level = level;
}

static void quant_init(void)
{
    for (uint32_t h = 0; h < (1u << 16); h++) quant_f16_table[h] = quant_f16_to_f32((uint16_t)h);
    scalar_kernels(&k_scalar);
    int level = QUANT_SIMD_SCALAR;
    const char *env = getenv("WEFT_NO_SIMD");
    if (!(env && *env && strcmp(env, "0") != 0)) {
        /* AVX512-VNNI first: its Q4_1/Q8_0 tiles run on 512-bit registers */
        if (cpu_has(QUANT_SIMD_AVX512_VNNI))
            level = QUANT_SIMD_AVX512_VNNI;
        else if (cpu_has(QUANT_SIMD_AVX2_VNNI))
            level = QUANT_SIMD_AVX2_VNNI;
        else if (cpu_has(QUANT_SIMD_AVX2))
            level = QUANT_SIMD_AVX2;
    }
    kernels_build(level);
    __atomic_store_n(&k_ready, 1, __ATOMIC_RELEASE);
}

static inline const quant_kernels *kernels(void)
{
    if (__builtin_expect(!__atomic_load_n(&k_ready, __ATOMIC_ACQUIRE), 0))
        pthread_once(&k_once, quant_init);
    return &k_active;
}

quant_simd_level quant_simd(void)
{
    kernels();
    return (quant_simd_level)k_level;
}

bool quant_has_avx2(void)
{
    return quant_simd() >= QUANT_SIMD_AVX2;
}

const char *quant_simd_name(quant_simd_level level)
{
    switch (level) {
    case QUANT_SIMD_SCALAR: return "scalar";
    case QUANT_SIMD_AVX2: return "avx2";
    case QUANT_SIMD_AVX2_VNNI: return "avx2+avxvnni";
    case QUANT_SIMD_AVX512_VNNI: return "avx2+avx512vnni";
    }
    return "unknown";
}

bool quant_simd_available(quant_simd_level level)
{
    return cpu_has(level);
}

int quant_simd_set(quant_simd_level level)
{
    kernels();
    if (!cpu_has(level))
        return weft_error(WEFT_EUNSUPPORTED, "quant: this CPU cannot run %s",
                          quant_simd_name(level));
    kernels_build(level);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Public entry points                                                      */

/* Cheap enough for the per-row hot path: every block size is a power of two,
 * so no division. */
static inline void check_row(weft_type t, int64_t n)
{
    const type_info *ti = type_get(t);
    WEFT_ASSERT(ti && n >= 0 && (n & (ti->block - 1)) == 0);
}

void quant_dequantize_row(weft_type t, const void *src, float *dst, int64_t n)
{
    check_row(t, n);
    quant_unrow_fn f = kernels()->dequantize[t];
    WEFT_ASSERT(f);
    f(src, dst, n);
}

int quant_quantize_row(weft_type t, const float *src, void *dst, int64_t n)
{
    const type_info *ti = type_get(t);
    quant_row_fn f = ti ? kernels()->quantize[t] : NULL;
    if (!f)
        return weft_error(WEFT_EUNSUPPORTED, "quant: cannot quantize to %s", quant_type_name(t));
    if (n < 0 || n % ti->block)
        return weft_error(WEFT_EINVAL,
                          "quant: row of %lld values is not a whole number of %s blocks",
                          (long long)n, ti->name);
    f(src, dst, n);
    return 0;
}

float quant_vec_dot(weft_type t, int64_t n, const void *w, const void *a)
{
    check_row(t, n);
    quant_dot_fn f = kernels()->dot[t];
    WEFT_ASSERT(f);
    return f(n, w, a);
}

float quant_vec_dot_ref(weft_type t, int64_t n, const void *w, const void *a)
{
    check_row(t, n);
    kernels();
    quant_dot_fn f = k_scalar.dot[t];
    WEFT_ASSERT(f);
    return f(n, w, a);
}

void quant_vec_dot_nx(weft_type t, int64_t n, const void *w, size_t w_stride_bytes, int nw,
                      const void *a, float *out)
{
    check_row(t, n);
    const quant_kernels *k = kernels();
    quant_dot_fn f1 = k->dot[t];
    quant_dot4_fn f4 = k->dot4[t];
    WEFT_ASSERT(f1);
    const char *wr = w;
    int i = 0;
    if (f4)
        for (; i + 4 <= nw; i += 4)
            f4(n, wr + (size_t)i * w_stride_bytes, w_stride_bytes, a, out + i);
    for (; i < nw; i++) out[i] = f1(n, wr + (size_t)i * w_stride_bytes, a);
}

void quant_vec_dot_tile(weft_type t, int64_t n, const void *w, size_t w_stride_bytes, int nw,
                        const void *a, size_t a_stride_bytes, int na, float *out, size_t out_stride)
{
    check_row(t, n);
    const quant_kernels *k = kernels();
    quant_tile_fn tile = k->tile[t], tile4 = k->tile4[t];
    const char *wr = w, *ar = a;
    int i = 0;
    if (tile) {
        for (; i + QUANT_TILE_R <= nw; i += QUANT_TILE_R) {
            int j = 0;
            if (tile4)
                for (; j + QUANT_TILE_C4 <= na; j += QUANT_TILE_C4)
                    tile4(n, wr + (size_t)i * w_stride_bytes, w_stride_bytes,
                          ar + (size_t)j * a_stride_bytes, a_stride_bytes,
                          out + (size_t)j * out_stride + i, out_stride);
            for (; j + QUANT_TILE_C <= na; j += QUANT_TILE_C)
                tile(n, wr + (size_t)i * w_stride_bytes, w_stride_bytes,
                     ar + (size_t)j * a_stride_bytes, a_stride_bytes,
                     out + (size_t)j * out_stride + i, out_stride);
            for (; j < na; j++)
                quant_vec_dot_nx(t, n, wr + (size_t)i * w_stride_bytes, w_stride_bytes,
                                 QUANT_TILE_R, ar + (size_t)j * a_stride_bytes,
                                 out + (size_t)j * out_stride + i);
        }
    }
    if (i == nw) return;
    for (int j = 0; j < na; j++)
        quant_vec_dot_nx(t, n, wr + (size_t)i * w_stride_bytes, w_stride_bytes, nw - i,
                         ar + (size_t)j * a_stride_bytes, out + (size_t)j * out_stride + i);
}

/* kernels/quant.h: type table, fp16/bf16, quantize/dequantize, vec_dot on the
 * scalar path and on every SIMD level the CPU has. */
#include "kernels/cpu/quant_internal.h"
#include "kernels/quant.h"
#include "test.h"
#include "weft/common.h"

#include <float.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* roughly normal, unit variance, with the odd outlier like real weights */
static float frand_normal(void)
{
    float s = 0.0f;
    for (int i = 0; i < 4; i++) s += (float)rnd32() / 4294967296.0f;
    float v = (s - 2.0f) * 1.7320508f;
    if (rnd32() % 97 == 0) v *= 4.0f;
    return v;
}

static float *rand_row(int64_t n, float scale, float offset)
{
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = frand_normal() * scale + offset;
    return x;
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float ffrom(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static const weft_type weight_types[] = {
    WEFT_TYPE_F32,  WEFT_TYPE_F16,  WEFT_TYPE_BF16, WEFT_TYPE_Q4_0, WEFT_TYPE_Q4_1,
    WEFT_TYPE_Q5_0, WEFT_TYPE_Q5_1, WEFT_TYPE_Q8_0, WEFT_TYPE_Q2_K, WEFT_TYPE_Q3_K,
    WEFT_TYPE_Q4_K, WEFT_TYPE_Q5_K, WEFT_TYPE_Q6_K,
};
#define N_WEIGHT_TYPES (int)(sizeof weight_types / sizeof weight_types[0])

static const quant_simd_level all_levels[] = {QUANT_SIMD_SCALAR, QUANT_SIMD_AVX2,
                                              QUANT_SIMD_AVX2_VNNI, QUANT_SIMD_AVX512_VNNI};

/* ------------------------------------------------------------------------ */
/* type table                                                               */

TEST(type_sizes_match_ggml)
{
    static const struct {
        int t;
        const char *name;
        size_t block, size;
    } want[] = {
        {0, "f32", 1, 4},         {1, "f16", 1, 2},         {2, "q4_0", 32, 18},
        {3, "q4_1", 32, 20},      {6, "q5_0", 32, 22},      {7, "q5_1", 32, 24},
        {8, "q8_0", 32, 34},      {9, "q8_1", 32, 36},      {10, "q2_K", 256, 84},
        {11, "q3_K", 256, 110},   {12, "q4_K", 256, 144},   {13, "q5_K", 256, 176},
        {14, "q6_K", 256, 210},   {15, "q8_K", 256, 292},   {16, "iq2_xxs", 256, 66},
        {17, "iq2_xs", 256, 74},  {18, "iq3_xxs", 256, 98}, {19, "iq1_s", 256, 50},
        {20, "iq4_nl", 32, 18},   {21, "iq3_s", 256, 110},  {22, "iq2_s", 256, 82},
        {23, "iq4_xs", 256, 136}, {24, "i8", 1, 1},         {25, "i16", 1, 2},
        {26, "i32", 1, 4},        {27, "i64", 1, 8},        {28, "f64", 1, 8},
        {29, "iq1_m", 256, 56},   {30, "bf16", 1, 2},       {34, "tq1_0", 256, 54},
        {35, "tq2_0", 256, 66},   {39, "mxfp4", 32, 17},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ASSERT_STR_EQ(quant_type_name(want[i].t), want[i].name);
        ASSERT_EQ_INT(quant_block_size(want[i].t), want[i].block);
        ASSERT_EQ_INT(quant_type_size(want[i].t), want[i].size);
        ASSERT_EQ_INT(quant_row_size(want[i].t, 4096), 4096 / want[i].block * want[i].size);
    }
    /* the figures the brief pins */
    ASSERT_EQ_INT(quant_row_size(WEFT_TYPE_Q4_1, 576), 18 * 20);
    ASSERT_EQ_INT(quant_row_size(WEFT_TYPE_Q8_0, 49152), 1536 * 34);
    ASSERT_EQ_INT(quant_row_size(WEFT_TYPE_Q6_K, 1536), 6 * 210);
    /* removed ids and out-of-range ids are unknown */
    const int unknown[] = {4, 5, 31, 32, 33, 36, 37, 38, 40, -1, 1000};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        ASSERT_STR_EQ(quant_type_name(unknown[i]), "unknown");
        ASSERT_EQ_INT(quant_block_size(unknown[i]), 0);
        ASSERT_EQ_INT(quant_type_size(unknown[i]), 0);
        ASSERT_EQ_INT(quant_row_size(unknown[i], 256), 0);
        ASSERT(!quant_type_supported(unknown[i]));
    }
    /* not a whole number of blocks */
    ASSERT_EQ_INT(quant_row_size(WEFT_TYPE_Q4_0, 33), 0);
    ASSERT_EQ_INT(quant_row_size(WEFT_TYPE_Q4_K, 128), 0);
    ASSERT_EQ_INT(quant_row_size(WEFT_TYPE_F16, 3), 6);
}

TEST(supported_types_and_vec_dot_types)
{
    for (int i = 0; i < N_WEIGHT_TYPES; i++) ASSERT(quant_type_supported(weight_types[i]));
    ASSERT(!quant_type_supported(WEFT_TYPE_Q8_1));
    ASSERT(!quant_type_supported(WEFT_TYPE_Q8_K));
    ASSERT(!quant_type_supported(16)); /* iq2_xxs */
    ASSERT_EQ_INT(quant_vec_dot_type(WEFT_TYPE_F32), WEFT_TYPE_F32);
    ASSERT_EQ_INT(quant_vec_dot_type(WEFT_TYPE_F16), WEFT_TYPE_F16);
    ASSERT_EQ_INT(quant_vec_dot_type(WEFT_TYPE_BF16), WEFT_TYPE_BF16);
    ASSERT_EQ_INT(quant_vec_dot_type(WEFT_TYPE_Q4_0), WEFT_TYPE_Q8_0);
    ASSERT_EQ_INT(quant_vec_dot_type(WEFT_TYPE_Q4_1), WEFT_TYPE_Q8_1);
    ASSERT_EQ_INT(quant_vec_dot_type(WEFT_TYPE_Q5_0), WEFT_TYPE_Q8_0);
    ASSERT_EQ_INT(quant_vec_dot_type(WEFT_TYPE_Q5_1), WEFT_TYPE_Q8_1);
    ASSERT_EQ_INT(quant_vec_dot_type(WEFT_TYPE_Q8_0), WEFT_TYPE_Q8_0);
    for (int t = WEFT_TYPE_Q2_K; t <= WEFT_TYPE_Q6_K; t++)
        ASSERT_EQ_INT(quant_vec_dot_type((weft_type)t), WEFT_TYPE_Q8_K);
}

TEST(quantize_rejects_bad_input)
{
    float x[64] = {0};
    uint8_t y[512];
    ASSERT_EQ_INT(quant_quantize_row((weft_type)16, x, y, 256), WEFT_EUNSUPPORTED);
    ASSERT_EQ_INT(quant_quantize_row((weft_type)4, x, y, 32), WEFT_EUNSUPPORTED);
    ASSERT_EQ_INT(quant_quantize_row(WEFT_TYPE_Q4_0, x, y, 33), WEFT_EINVAL);
    ASSERT_EQ_INT(quant_quantize_row(WEFT_TYPE_Q8_0, x, y, 64), 0);
}

TEST(simd_level_switch)
{
    const quant_simd_level start = quant_simd();
    ASSERT(quant_simd_available(QUANT_SIMD_SCALAR));
    ASSERT_EQ_INT(quant_simd_set(QUANT_SIMD_SCALAR), 0);
    ASSERT(!quant_has_avx2());
    ASSERT_EQ_INT(quant_simd(), QUANT_SIMD_SCALAR);
    if (!quant_simd_available(QUANT_SIMD_AVX512_VNNI))
        ASSERT_EQ_INT(quant_simd_set(QUANT_SIMD_AVX512_VNNI), WEFT_EUNSUPPORTED);
    ASSERT_EQ_INT(quant_simd_set(start), 0);
    ASSERT_EQ_INT(quant_simd(), start);
    const char *env = getenv("WEFT_NO_SIMD");
    if (env && strcmp(env, "1") == 0) ASSERT_EQ_INT(start, QUANT_SIMD_SCALAR);
    fprintf(stderr, "  simd in use: %s\n", quant_simd_name(start));
}

/* ------------------------------------------------------------------------ */
/* fp16 / bf16                                                              */

TEST(f16_all_values_round_trip)
{
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = quant_f16_to_f32((uint16_t)h);
        const bool nan16 = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan16) {
            if (!isnan(f)) TEST_FAIL_("f16 %04x should be NaN", h);
            const uint16_t back = quant_f32_to_f16(f);
            if (!((back & 0x7c00) == 0x7c00 && (back & 0x3ff)))
                TEST_FAIL_("NaN %04x came back as %04x", h, back);
            continue;
        }
        const uint16_t back = quant_f32_to_f16(f);
        if (back != h) TEST_FAIL_("f16 %04x -> %.9g -> %04x", h, (double)f, back);
    }
    ASSERT(quant_f16_to_f32(0x3c00) == 1.0f);
    ASSERT(quant_f16_to_f32(0xc000) == -2.0f);
    ASSERT(quant_f16_to_f32(0x0001) == 0x1p-24f);
    ASSERT(quant_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    ASSERT(quant_f16_to_f32(0x0400) == 0x1p-14f);
    ASSERT(quant_f16_to_f32(0x7bff) == 65504.0f);
    ASSERT(isinf(quant_f16_to_f32(0x7c00)) && quant_f16_to_f32(0x7c00) > 0);
    ASSERT(isinf(quant_f16_to_f32(0xfc00)) && quant_f16_to_f32(0xfc00) < 0);
    ASSERT(quant_f16_to_f32(0x8000) == 0.0f && signbit(quant_f16_to_f32(0x8000)));
}

TEST(f16_rounding_is_nearest_even)
{
    ASSERT_EQ_INT(quant_f32_to_f16(65519.0f), 0x7bff);
    ASSERT_EQ_INT(quant_f32_to_f16(65520.0f), 0x7c00); /* tie, rounds to even = inf */
    ASSERT_EQ_INT(quant_f32_to_f16(1e10f), 0x7c00);
    ASSERT_EQ_INT(quant_f32_to_f16(-1e10f), 0xfc00);
    ASSERT_EQ_INT(quant_f32_to_f16(INFINITY), 0x7c00);
    ASSERT_EQ_INT(quant_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);     /* tie -> even */
    ASSERT_EQ_INT(quant_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02); /* tie -> even */
    ASSERT_EQ_INT(quant_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    ASSERT_EQ_INT(quant_f32_to_f16(0x1p-25f), 0x0000);        /* tie -> 0 */
    ASSERT_EQ_INT(quant_f32_to_f16(0x1.000002p-25f), 0x0001); /* just above */
    ASSERT_EQ_INT(quant_f32_to_f16(3 * 0x1p-25f), 0x0002);    /* 1.5 -> 2 */
    ASSERT_EQ_INT(quant_f32_to_f16(-0x1p-24f), 0x8001);
    ASSERT_EQ_INT(quant_f32_to_f16(0x1p-14f - 0x1p-26f), 0x0400); /* rounds up to normal */
    ASSERT_EQ_INT(quant_f32_to_f16(1e-30f), 0x0000);
    ASSERT_EQ_INT(quant_f32_to_f16(-0.0f), 0x8000);
    ASSERT_EQ_INT(quant_f32_to_f16(NAN) & 0x7e00, 0x7e00);
    /* every midpoint between neighbouring finite f16 values rounds to the
     * even one, and a hair either side rounds to the nearer */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        const float lo = quant_f16_to_f32((uint16_t)h), hi = quant_f16_to_f32((uint16_t)(h + 1));
        const double mid = ((double)lo + (double)hi) / 2;
        const float midf = (float)mid; /* exact: midpoints need one more bit */
        const uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (quant_f32_to_f16(midf) != even) TEST_FAIL_("midpoint above %04x", h);
        if (quant_f32_to_f16(nextafterf(midf, 0.0f)) != h) TEST_FAIL_("below midpoint of %04x", h);
        if (quant_f32_to_f16(nextafterf(midf, INFINITY)) != h + 1)
            TEST_FAIL_("above midpoint of %04x", h);
    }
}

/* The F16C row paths must agree bit for bit with the scalar conversion. */
TEST(f16_rows_simd_match_scalar)
{
    if (!quant_simd_available(QUANT_SIMD_AVX2)) return;
    const quant_simd_level start = quant_simd();
    enum { N = 65536 };
    uint16_t *h = malloc(N * 2), *h2 = malloc(N * 2);
    float *f = malloc(N * 4);
    for (uint32_t i = 0; i < N; i++) h[i] = (uint16_t)i;
    ASSERT_EQ_INT(quant_simd_set(QUANT_SIMD_AVX2), 0);
    quant_dequantize_row(WEFT_TYPE_F16, h, f, N);
    for (uint32_t i = 0; i < N; i++) {
        const float s = quant_f16_to_f32((uint16_t)i);
        if (isnan(s) ? !isnan(f[i]) : fbits(s) != fbits(f[i]))
            TEST_FAIL_("f16c %04x: %a vs scalar %a", i, (double)f[i], (double)s);
    }
    /* random f32 bit patterns, plus ranges around the f16 subnormal/overflow edges */
    for (int round = 0; round < 64; round++) {
        for (uint32_t i = 0; i < N; i++) {
            uint32_t u = rnd32();
            if (round % 4 == 1) u = (u & 0x807fffff) | ((uint32_t)(100 + (rnd32() % 45)) << 23);
            if (round % 4 == 2) u = 0x477fe000 + (rnd32() % 0x4000) + ((u & 1) << 31);
            f[i] = ffrom(u);
        }
        quant_quantize_row(WEFT_TYPE_F16, f, h2, N);
        for (uint32_t i = 0; i < N; i++) {
            const uint16_t s = quant_f32_to_f16(f[i]);
            if (isnan(f[i])) {
                if ((h2[i] & 0x7c00) != 0x7c00 || !(h2[i] & 0x3ff)) TEST_FAIL_("NaN lost");
            } else if (s != h2[i]) {
                TEST_FAIL_("f32 %08x: f16c %04x scalar %04x", fbits(f[i]), h2[i], s);
            }
        }
    }
    ASSERT_EQ_INT(quant_simd_set(start), 0);
    free(h);
    free(h2);
    free(f);
}

TEST(bf16_conversions)
{
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = quant_bf16_to_f32((uint16_t)h);
        ASSERT_EQ_INT(fbits(f), h << 16);
        if (isnan(f))
            ASSERT(isnan(quant_bf16_to_f32(quant_f32_to_bf16(f))));
        else
            ASSERT_EQ_INT(quant_f32_to_bf16(f), h);
    }
    ASSERT_EQ_INT(quant_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);     /* tie -> even */
    ASSERT_EQ_INT(quant_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie -> even */
    ASSERT_EQ_INT(quant_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    ASSERT_EQ_INT(quant_f32_to_bf16(FLT_MAX), 0x7f80);                      /* rounds to inf */
    ASSERT(isnan(quant_bf16_to_f32(quant_f32_to_bf16(ffrom(0x7f800001))))); /* sNaN stays NaN */
    /* rows, at every level */
    float x[37], y[37];
    uint16_t b[37];
    for (int i = 0; i < 37; i++) x[i] = frand_normal();
    const quant_simd_level start = quant_simd();
    for (int l = 0; l < 4; l++) {
        if (quant_simd_set(all_levels[l]) != 0) continue;
        ASSERT_EQ_INT(quant_quantize_row(WEFT_TYPE_BF16, x, b, 37), 0);
        quant_dequantize_row(WEFT_TYPE_BF16, b, y, 37);
        for (int i = 0; i < 37; i++) {
            ASSERT_EQ_INT(b[i], quant_f32_to_bf16(x[i]));
            ASSERT_EQ_INT(fbits(y[i]), (uint32_t)b[i] << 16);
        }
    }
    quant_simd_set(start);
}

/* ------------------------------------------------------------------------ */
/* quantize -> dequantize                                                   */

static double rel_rms_error(weft_type t, const float *x, int64_t n)
{
    void *q = malloc(quant_row_size(t, n));
    float *y = malloc((size_t)n * sizeof *y);
    if (quant_quantize_row(t, x, q, n) != 0) {
        free(q);
        free(y);
        return 1e9;
    }
    quant_dequantize_row(t, q, y, n);
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        s += (double)x[i] * x[i];
    }
    free(q);
    free(y);
    return sqrt(e / s);
}

TEST(quantize_dequantize_error_bounded)
{
    /* relative RMS error bounds, ~1.3x what the quantizers achieve on this data
     * (Q8_K is coarser than Q8_0: one scale per 256 values) */
    static const struct {
        weft_type t;
        double bound;
    } want[] = {
        {WEFT_TYPE_F32, 0.0},    {WEFT_TYPE_F16, 4e-4},   {WEFT_TYPE_BF16, 3e-3},
        {WEFT_TYPE_Q8_0, 0.008}, {WEFT_TYPE_Q8_1, 0.008}, {WEFT_TYPE_Q8_K, 0.016},
        {WEFT_TYPE_Q4_0, 0.13},  {WEFT_TYPE_Q4_1, 0.11},  {WEFT_TYPE_Q5_0, 0.065},
        {WEFT_TYPE_Q5_1, 0.052}, {WEFT_TYPE_Q2_K, 0.45},  {WEFT_TYPE_Q3_K, 0.22},
        {WEFT_TYPE_Q4_K, 0.11},  {WEFT_TYPE_Q5_K, 0.055}, {WEFT_TYPE_Q6_K, 0.027},
    };
    const int64_t n = 4096;
    float *x = rand_row(n, 0.02f, 0.0f);
    float *xo = rand_row(n, 0.02f, 0.01f); /* with an offset: the min formats win */
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const double e = rel_rms_error(want[i].t, x, n), eo = rel_rms_error(want[i].t, xo, n);
        fprintf(stderr, "  %-5s rel rms error %.5f (offset data %.5f)\n",
                quant_type_name(want[i].t), e, eo);
        if (!(e <= want[i].bound))
            TEST_FAIL_("%s: %g > %g", quant_type_name(want[i].t), e, want[i].bound);
        if (!(eo <= want[i].bound))
            TEST_FAIL_("%s offset: %g > %g", quant_type_name(want[i].t), eo, want[i].bound);
    }
    free(x);
    free(xo);
}

TEST(quantize_zero_and_constant_rows)
{
    const int64_t n = 512;
    float *x = calloc(n, sizeof *x), *y = malloc(n * sizeof *y);
    void *q = malloc(quant_row_size(WEFT_TYPE_F32, n));
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < n; i++) x[i] = pass ? 0.25f : 0.0f;
        for (int i = 0; i < N_WEIGHT_TYPES; i++) {
            const weft_type t = weight_types[i];
            ASSERT_EQ_INT(quant_quantize_row(t, x, q, n), 0);
            quant_dequantize_row(t, q, y, n);
            for (int64_t j = 0; j < n; j++)
                if (!(fabsf(y[j] - x[j]) <= 0.02f))
                    TEST_FAIL_("%s pass %d: [%d] %g", quant_type_name(t), pass, (int)j,
                               (double)y[j]);
        }
    }
    free(x);
    free(y);
    free(q);
}

/* Pseudo-random blocks with fixed scales (d = 1, min/dmin = -0.5, Q8_K
 * d = 0.25), so that every quant bit lands somewhere visible. */
static void golden_bytes(weft_type t, uint8_t *p, size_t nbytes)
{
    uint32_t s = 12345u + (uint32_t)t;
    for (size_t i = 0; i < nbytes; i++) {
        s = s * 1103515245u + 12345u;
        p[i] = (uint8_t)(s >> 16);
    }
    const size_t bs = quant_type_size(t);
    const uint16_t one = 0x3c00, mhalf = 0xb800;
    for (size_t b = 0; b < nbytes / bs; b++) {
        uint8_t *blk = p + b * bs;
        switch (t) {
        case WEFT_TYPE_Q2_K: /* d, dmin at the end */
            memcpy(blk + bs - 4, &one, 2);
            memcpy(blk + bs - 2, &mhalf, 2);
            break;
        case WEFT_TYPE_Q3_K:
        case WEFT_TYPE_Q6_K: memcpy(blk + bs - 2, &one, 2); break;
        case WEFT_TYPE_Q8_K: {
            const float d = 0.25f;
            memcpy(blk, &d, 4);
            break;
        }
        default:
            memcpy(blk, &one, 2);
            if (t == WEFT_TYPE_Q4_1 || t == WEFT_TYPE_Q5_1 || t == WEFT_TYPE_Q4_K ||
                t == WEFT_TYPE_Q5_K)
                memcpy(blk + 2, &mhalf, 2);
        }
    }
}

/* The block layouts are ggml's: these figures were produced by llama.cpp's
 * own dequantize_row_* (ggml-quants.c as vendored in llama-cpp-python
 * 0.3.16) on the bytes of golden_bytes(), 512 values per type: the sum of
 * y[i] * (i % 7 + 1) and y[0], y[17], y[300], y[511]. */
TEST(dequantize_matches_llama_cpp_golden)
{
    static const struct {
        weft_type t;
        double wsum;
        float y[4];
    } golden[] = {
        {WEFT_TYPE_Q4_0, -333, {-8, 3, 7, -6}},
        {WEFT_TYPE_Q4_1, 13520.5, {1.5, 3.5, 13.5, 12.5}},
        {WEFT_TYPE_Q5_0, -1418, {13, 8, 15, -5}},
        {WEFT_TYPE_Q5_1, 30854.5, {-0.5, 25.5, 17.5, 24.5}},
        {WEFT_TYPE_Q8_0, -1218, {83, 23, -81, -15}},
        {WEFT_TYPE_Q2_K, 29750.5, {15.5, 44.5, 32, 27}},
        {WEFT_TYPE_Q3_K, -2492, {14, 63, 51, 57}},
        {WEFT_TYPE_Q4_K, 539282.5, {377.5, 515.5, 137, 280}},
        {WEFT_TYPE_Q5_K, 1086606.5, {351.5, 351.5, 417, 641}},
        {WEFT_TYPE_Q6_K, -101110, {-1344, -296, 312, 1139}},
        {WEFT_TYPE_Q8_K, 411.25, {-27.5, -11.5, -27.25, 11.5}},
    };
    const int64_t n = 512;
    uint8_t buf[4096];
    float y[512];
    for (size_t k = 0; k < sizeof golden / sizeof golden[0]; k++) {
        const weft_type t = golden[k].t;
        golden_bytes(t, buf, quant_row_size(t, n));
        quant_dequantize_row(t, buf, y, n);
        double s = 0;
        for (int i = 0; i < n; i++) s += (double)y[i] * ((i % 7) + 1);
        if (s != golden[k].wsum)
            TEST_FAIL_("%s: checksum %.17g, llama.cpp %.17g", quant_type_name(t), s,
                       golden[k].wsum);
        const int at[4] = {0, 17, 300, 511};
        for (int i = 0; i < 4; i++)
            if (y[at[i]] != golden[k].y[i])
                TEST_FAIL_("%s: y[%d] = %g, llama.cpp %g", quant_type_name(t), at[i],
                           (double)y[at[i]], (double)golden[k].y[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* activation quantization                                                  */

static int8_t round_away(float v)
{
    return (int8_t)roundf(v);
}

static int8_t round_even(float v)
{
    return (int8_t)nearbyintf(v);
}

/* Check a Q8_0 / Q8_1 row against the formula: scalar = llama.cpp's _ref
 * (id = 1/d, roundf), AVX2 = llama.cpp's AVX2 code (id = 127/amax, ties to
 * even). */
static int check_q8(const float *x, int64_t n, const void *row, bool q81, bool avx2)
{
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127.0f;
        const float id = avx2 ? (amax != 0 ? 127.0f / amax : 0.0f) : (d != 0 ? 1.0f / d : 0.0f);
        const uint8_t *blk = (const uint8_t *)row + b * (q81 ? 36 : 34);
        uint16_t hd;
        memcpy(&hd, blk, 2);
        if (hd != quant_f32_to_f16(d)) return 1;
        const int8_t *qs = (const int8_t *)(blk + (q81 ? 4 : 2));
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            const int8_t want = avx2 ? round_even(xb[j] * id) : round_away(xb[j] * id);
            if (qs[j] != want) return 2;
            sum += qs[j];
        }
        if (q81) {
            uint16_t hs;
            memcpy(&hs, blk + 2, 2);
            if (hs != quant_f32_to_f16((float)sum * d)) return 3;
        }
    }
    return 0;
}

TEST(q8_0_q8_1_activations_match_llama_cpp)
{
    const int64_t n = 1024;
    float *x = rand_row(n, 1.0f, 0.0f);
    /* a block where x * id hits exact .5 ties: amax 127 makes id exactly 1 */
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) + 0.5f;
    x[0] = 127.0f;
    for (int j = 32; j < 64; j++) x[j] = 0.0f; /* an all-zero block */
    uint8_t *row = malloc(quant_row_size(WEFT_TYPE_Q8_1, n));
    const quant_simd_level start = quant_simd();
    for (int l = 0; l < 4; l++) {
        if (quant_simd_set(all_levels[l]) != 0) continue;
        const bool avx2 = all_levels[l] != QUANT_SIMD_SCALAR;
        ASSERT_EQ_INT(quant_quantize_row(WEFT_TYPE_Q8_0, x, row, n), 0);
        ASSERT_EQ_INT(check_q8(x, n, row, false, avx2), 0);
        ASSERT_EQ_INT(quant_quantize_row(WEFT_TYPE_Q8_1, x, row, n), 0);
        ASSERT_EQ_INT(check_q8(x, n, row, true, avx2), 0);
        /* the tie block: 2.5 -> 3 (scalar) or 2 (AVX2) */
        const int8_t *qs = (const int8_t *)row + 4;
        ASSERT_EQ_INT(qs[18], avx2 ? 2 : 3);
        ASSERT_EQ_INT(qs[13], avx2 ? -2 : -3); /* -2.5 */
    }
    quant_simd_set(start);
    free(x);
    free(row);
}

TEST(q8_K_activations_match_llama_cpp)
{
    const int64_t n = 768;
    float *x = rand_row(n, 0.5f, 0.0f);
    for (int j = 256; j < 512; j++) x[j] = 0.0f;
    x[600] = -9.0f; /* signed max negative */
    x[601] = 9.0f;  /* same magnitude later: the first one wins */
    block_q8_K *q = malloc(quant_row_size(WEFT_TYPE_Q8_K, n));
    const quant_simd_level start = quant_simd();
    for (int l = 0; l < 4; l++) {
        if (quant_simd_set(all_levels[l]) != 0) continue;
        ASSERT_EQ_INT(quant_quantize_row(WEFT_TYPE_Q8_K, x, q, n), 0);
        for (int b = 0; b < 3; b++) {
            const float *xb = x + 256 * b;
            float amax = 0, max = 0;
            for (int j = 0; j < 256; j++)
                if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]), max = xb[j];
            if (b == 1) {
                ASSERT(q[b].d == 0.0f);
                for (int j = 0; j < 256; j++) ASSERT_EQ_INT(q[b].qs[j], 0);
                for (int j = 0; j < 16; j++) ASSERT_EQ_INT(q[b].bsums[j], 0);
                continue;
            }
            const float iscale = -127.0f / max;
            ASSERT(q[b].d == 1.0f / iscale);
            for (int j = 0; j < 256; j++) {
                int v = (int)nearbyintf(iscale * xb[j]);
                if (v > 127) v = 127;
                ASSERT_EQ_INT(q[b].qs[j], v);
            }
            for (int j = 0; j < 16; j++) {
                int s = 0;
                for (int k = 0; k < 16; k++) s += q[b].qs[16 * j + k];
                ASSERT_EQ_INT(q[b].bsums[j], s);
            }
        }
        /* -9 came first, so it is the max: iscale = -127 / -9 */
        ASSERT(q[2].d > 0.0f);
        ASSERT_EQ_INT(q[2].qs[600 - 512], -127);
        ASSERT_EQ_INT(q[2].qs[601 - 512], 127);
    }
    quant_simd_set(start);
    free(x);
    free(q);
}

TEST(q8_1_s_field)
{
    const int64_t n = 256;
    float *x = rand_row(n, 3.0f, 1.0f);
    block_q8_1 q[8];
    const quant_simd_level start = quant_simd();
    for (int l = 0; l < 4; l++) {
        if (quant_simd_set(all_levels[l]) != 0) continue;
        ASSERT_EQ_INT(quant_quantize_row(WEFT_TYPE_Q8_1, x, q, n), 0);
        for (int b = 0; b < 8; b++) {
            /* s = fp16(sum * d), d = amax / 127 before its own fp16 rounding */
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
            int sum = 0;
            for (int j = 0; j < 32; j++) sum += q[b].qs[j];
            ASSERT(sum != 0);
            ASSERT_EQ_INT(q[b].s, quant_f32_to_f16((float)sum * (amax / 127.0f)));
        }
    }
    quant_simd_set(start);
    free(x);
}

/* ------------------------------------------------------------------------ */
/* dot products                                                             */

typedef struct {
    weft_type t, at;
    int64_t n;
    void *w; /* nw rows */
    void *a;
    float *wf; /* dequantized weights, row 0 */
    float *af; /* dequantized activation */
    float *ax; /* float activation before quantization */
} dot_case;

static void dot_case_make(dot_case *c, weft_type t, int64_t n, int nw, float wscale, float woff)
{
    c->t = t;
    c->at = quant_vec_dot_type(t);
    c->n = n;
    const size_t ws = quant_row_size(t, n);
    c->w = malloc(ws * (size_t)nw);
    for (int r = 0; r < nw; r++) {
        float *x = rand_row(n, wscale, woff);
        quant_quantize_row(t, x, (char *)c->w + ws * (size_t)r, n);
        free(x);
    }
    c->ax = rand_row(n, 1.0f, 0.1f);
    c->a = malloc(quant_row_size(c->at, n));
    quant_quantize_row(c->at, c->ax, c->a, n);
    c->wf = malloc((size_t)n * sizeof(float));
    c->af = malloc((size_t)n * sizeof(float));
    quant_dequantize_row(t, c->w, c->wf, n);
    quant_dequantize_row(c->at, c->a, c->af, n);
}

static void dot_case_free(dot_case *c)
{
    free(c->w);
    free(c->a);
    free(c->wf);
    free(c->af);
    free(c->ax);
}

/* sum |w_i a_i| over the dequantized rows: the scale of float rounding error */
static double abs_dot(const dot_case *c)
{
    double s = 0;
    for (int64_t i = 0; i < c->n; i++) s += fabs((double)c->wf[i] * c->af[i]);
    return s;
}

/* Q4_1 / Q5_1 dot with Q8_1 use s = fp16(d * sum q) for the min term; this
 * bounds how far that may move the result from the exact dequantized dot. */
static double min_term_slack(const dot_case *c)
{
    if (c->t != WEFT_TYPE_Q4_1 && c->t != WEFT_TYPE_Q5_1) return 0;
    const size_t wbs = quant_type_size(c->t);
    const block_q8_1 *y = c->a;
    double slack = 0;
    for (int64_t b = 0; b < c->n / 32; b++) {
        uint16_t hm;
        memcpy(&hm, (const char *)c->w + b * wbs + 2, 2);
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += y[b].qs[j];
        const double exact = (double)quant_f16_to_f32(y[b].d) * sum;
        slack += fabs(quant_f16_to_f32(hm)) *
                 (fabs(quant_f16_to_f32(y[b].s) - exact) + 1e-7 * fabs(exact));
    }
    return slack;
}

static int64_t case_n(weft_type t, int k)
{
    static const int64_t n32[] = {32, 64, 576, 1536, 4096};
    static const int64_t nK[] = {256, 512, 1536, 2048, 4096};
    static const int64_t nf[] = {1, 7, 33, 576, 1000};
    if (t == WEFT_TYPE_F32 || t == WEFT_TYPE_F16 || t == WEFT_TYPE_BF16) return nf[k];
    return quant_block_size(t) == 256 ? nK[k] : n32[k];
}

/* The scalar reference equals the dot of the dequantized rows, up to float
 * rounding (and the fp16-rounded s of Q8_1). */
TEST(vec_dot_ref_matches_dequantized_dot)
{
    const quant_simd_level start = quant_simd();
    quant_simd_set(QUANT_SIMD_SCALAR);
    for (int i = 0; i < N_WEIGHT_TYPES; i++) {
        for (int k = 0; k < 5; k++) {
            dot_case c;
            dot_case_make(&c, weight_types[i], case_n(weight_types[i], k), 1, 0.05f, 0.02f);
            double exact = 0;
            for (int64_t j = 0; j < c.n; j++) exact += (double)c.wf[j] * c.af[j];
            const float got = quant_vec_dot_ref(c.t, c.n, c.w, c.a);
            const double tol = 1e-5 * abs_dot(&c) + min_term_slack(&c) + 1e-12;
            if (!(fabs(got - exact) <= tol))
                TEST_FAIL_("%s n=%lld: ref %.9g vs dequantized %.9g (tol %g)", quant_type_name(c.t),
                           (long long)c.n, (double)got, exact, tol);
            /* and the activation quantization moved the result by no more than
             * its own error allows */
            double fx = 0, bound = tol;
            for (int64_t j = 0; j < c.n; j++) {
                fx += (double)c.wf[j] * c.ax[j];
                bound += fabs((double)c.wf[j]) * fabs((double)c.af[j] - c.ax[j]);
            }
            if (!(fabs(got - fx) <= bound))
                TEST_FAIL_("%s n=%lld: %.9g vs float activations %.9g", quant_type_name(c.t),
                           (long long)c.n, (double)got, fx);
            dot_case_free(&c);
        }
    }
    /* the activation error itself is within half a quantization step */
    float *x = rand_row(1024, 1.0f, 0.0f), y[1024];
    uint8_t q[2048];
    const weft_type acts[] = {WEFT_TYPE_Q8_0, WEFT_TYPE_Q8_1, WEFT_TYPE_Q8_K};
    for (int i = 0; i < 3; i++) {
        const int bs = (int)quant_block_size(acts[i]);
        quant_quantize_row(acts[i], x, q, 1024);
        quant_dequantize_row(acts[i], q, y, 1024);
        for (int b = 0; b < 1024 / bs; b++) {
            float amax = 0;
            for (int j = 0; j < bs; j++) amax = fmaxf(amax, fabsf(x[b * bs + j]));
            const float step = amax / 127;
            for (int j = 0; j < bs; j++)
                ASSERT(fabsf(x[b * bs + j] - y[b * bs + j]) <=
                       step * (0.5f + 127 * 0x1p-11f) * 1.0001f);
        }
    }
    free(x);
    quant_simd_set(start);
}

/* The SIMD kernels agree with the scalar reference on every level, and the
 * multi-row entry points agree bit for bit with the single-row one. */
TEST(vec_dot_simd_matches_ref)
{
    const quant_simd_level start = quant_simd();
    int levels_run = 0;
    for (int l = 0; l < 4; l++) {
        if (quant_simd_set(all_levels[l]) != 0) continue;
        levels_run++;
        for (int i = 0; i < N_WEIGHT_TYPES; i++) {
            const weft_type t = weight_types[i];
            for (int k = 0; k < 5; k++) {
                /* NA = 7 activation rows: a 4-wide tile, a 2-wide one and a single row */
                enum { NW = 11, NA = 7 };
                dot_case c;
                /* activations quantized at this level (AVX2 rounds ties to even) */
                dot_case_make(&c, t, case_n(t, k), NW, 0.05f, k & 1 ? 0.02f : 0.0f);
                const float ref = quant_vec_dot_ref(t, c.n, c.w, c.a);
                const float got = quant_vec_dot(t, c.n, c.w, c.a);
                const double tol = 1e-5 * abs_dot(&c) + 1e-12;
                if (!(fabs((double)got - ref) <= tol))
                    TEST_FAIL_("%s %s n=%lld: simd %.9g ref %.9g (tol %g)",
                               quant_simd_name(all_levels[l]), quant_type_name(t), (long long)c.n,
                               (double)got, (double)ref, tol);
                /* nx and tile == single rows, bitwise */
                const size_t ws = quant_row_size(t, c.n);
                float one[NW], nx[NW], tile[NA * NW];
                for (int r = 0; r < NW; r++)
                    one[r] = quant_vec_dot(t, c.n, (char *)c.w + ws * r, c.a);
                for (int nw = 0; nw <= NW; nw++) {
                    for (int r = 0; r < NW; r++) nx[r] = -1.0f;
                    quant_vec_dot_nx(t, c.n, c.w, ws, nw, c.a, nx);
                    for (int r = 0; r < NW; r++)
                        if (fbits(nx[r]) != fbits(r < nw ? one[r] : -1.0f))
                            TEST_FAIL_("%s %s n=%lld nx nw=%d row %d: %.9g vs %.9g",
                                       quant_simd_name(all_levels[l]), quant_type_name(t),
                                       (long long)c.n, nw, r, (double)nx[r], (double)one[r]);
                }
                /* tile: NA different activation rows (the first is c.a) */
                const size_t as = quant_row_size(c.at, c.n);
                char *a3 = malloc(NA * as);
                memcpy(a3, c.a, as);
                for (int j = 1; j < NA; j++) {
                    float *x = rand_row(c.n, 1.0f, -0.1f * j);
                    quant_quantize_row(c.at, x, a3 + j * as, c.n);
                    free(x);
                }
                quant_vec_dot_tile(t, c.n, c.w, ws, NW, a3, as, NA, tile, NW);
                for (int j = 0; j < NA; j++)
                    for (int r = 0; r < NW; r++) {
                        const float want = quant_vec_dot(t, c.n, (char *)c.w + ws * r, a3 + j * as);
                        if (fbits(tile[j * NW + r]) != fbits(want))
                            TEST_FAIL_("%s %s n=%lld tile (%d,%d): %.9g vs %.9g",
                                       quant_simd_name(all_levels[l]), quant_type_name(t),
                                       (long long)c.n, j, r, (double)tile[j * NW + r],
                                       (double)want);
                    }
                free(a3);
                dot_case_free(&c);
            }
        }
    }
    quant_simd_set(start);
    fprintf(stderr, "  %d level(s) checked\n", levels_run);
}

/* Every SIMD level gives the same floats (the integer parts are exact and the
 * float operations are done in the same order). */
TEST(vec_dot_levels_agree_bitwise)
{
    const quant_simd_level start = quant_simd();
    if (!quant_simd_available(QUANT_SIMD_AVX2)) return;
    for (int i = 0; i < N_WEIGHT_TYPES; i++) {
        const weft_type t = weight_types[i];
        dot_case c;
        quant_simd_set(QUANT_SIMD_AVX2);
        dot_case_make(&c, t, case_n(t, 3), 1, 0.05f, 0.01f);
        const float base = quant_vec_dot(t, c.n, c.w, c.a);
        for (int l = 2; l < 4; l++) {
            if (quant_simd_set(all_levels[l]) != 0) continue;
            const float v = quant_vec_dot(t, c.n, c.w, c.a);
            if (fbits(v) != fbits(base))
                TEST_FAIL_("%s: %s %.9g vs avx2 %.9g", quant_type_name(t),
                           quant_simd_name(all_levels[l]), (double)v, (double)base);
        }
        dot_case_free(&c);
    }
    quant_simd_set(start);
}

/* Extreme but legal blocks: full-scale weights and activations, where any
 * 16-bit saturation in the SIMD kernels would show. */
TEST(vec_dot_extreme_values)
{
    const quant_simd_level start = quant_simd();
    const int64_t n = 512;
    float *w = malloc(n * sizeof *w), *a = malloc(n * sizeof *a);
    for (int pattern = 0; pattern < 3; pattern++) {
        for (int64_t i = 0; i < n; i++) {
            w[i] = pattern == 0 ? 1.0f : pattern == 1 ? ((i & 1) ? 1.0f : -1.0f) : -1.0f;
            a[i] = pattern == 2 ? -1.0f : 1.0f;
        }
        w[3] = 0.0f; /* q4_1/q5_1: gives a min and full-range values */
        for (int i = 0; i < N_WEIGHT_TYPES; i++) {
            const weft_type t = weight_types[i], at = quant_vec_dot_type(t);
            void *wq = malloc(quant_row_size(t, n)), *aq = malloc(quant_row_size(at, n));
            quant_quantize_row(t, w, wq, n);
            float ref = 0;
            for (int l = 0; l < 4; l++) {
                if (quant_simd_set(all_levels[l]) != 0) continue;
                quant_quantize_row(at, a, aq, n);
                if (l == 0) ref = quant_vec_dot_ref(t, n, wq, aq);
                const float got = quant_vec_dot(t, n, wq, aq);
                if (!(fabsf(got - ref) <= 1e-4f * n))
                    TEST_FAIL_("%s pattern %d %s: %g vs %g", quant_type_name(t), pattern,
                               quant_simd_name(all_levels[l]), (double)got, (double)ref);
            }
            free(wq);
            free(aq);
        }
    }
    quant_simd_set(start);
    free(w);
    free(a);
}

int main(void)
{
    RUN(type_sizes_match_ggml);
    RUN(supported_types_and_vec_dot_types);
    RUN(quantize_rejects_bad_input);
    RUN(simd_level_switch);
    RUN(f16_all_values_round_trip);
    RUN(f16_rounding_is_nearest_even);
    RUN(f16_rows_simd_match_scalar);
    RUN(bf16_conversions);
    RUN(quantize_dequantize_error_bounded);
    RUN(quantize_zero_and_constant_rows);
    RUN(dequantize_matches_llama_cpp_golden);
    RUN(q8_0_q8_1_activations_match_llama_cpp);
    RUN(q8_K_activations_match_llama_cpp);
    RUN(q8_1_s_field);
    RUN(vec_dot_ref_matches_dequantized_dot);
    RUN(vec_dot_simd_matches_ref);
    RUN(vec_dot_levels_agree_bitwise);
    RUN(vec_dot_extreme_values);
    TEST_DONE();
}

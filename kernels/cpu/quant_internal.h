/*
 * kernels/cpu/quant_internal.h — block layouts and the kernel table shared by
 * quant.c (scalar reference, dispatch) and quant_avx2.c (x86 SIMD kernels).
 *
 * The structs below are byte-identical to ggml's block_* types (ggml-common.h):
 * weights are read in place from the mmap'd GGUF file. fp16 fields are kept as
 * raw uint16_t bits.
 */
#ifndef WEFT_KERNELS_CPU_QUANT_INTERNAL_H
#define WEFT_KERNELS_CPU_QUANT_INTERNAL_H

#include "kernels/quant.h"

#include <stddef.h>
#include <stdint.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef struct {
    uint16_t d;            /* scale; x = d * (q - 8) */
    uint8_t qs[QK4_0 / 2]; /* low nibbles: elements 0..15, high: 16..31 */
} block_q4_0;

typedef struct {
    uint16_t d, m; /* x = d * q + m */
    uint8_t qs[QK4_1 / 2];
} block_q4_1;

typedef struct {
    uint16_t d;    /* x = d * (q - 16) */
    uint8_t qh[4]; /* bit j = 5th bit of element j (little-endian u32) */
    uint8_t qs[QK5_0 / 2];
} block_q5_0;

typedef struct {
    uint16_t d, m; /* x = d * q + m */
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;

typedef struct {
    uint16_t d; /* x = d * q */
    int8_t qs[QK8_0];
} block_q8_0;

typedef struct {
    uint16_t d; /* x = d * q */
    uint16_t s; /* d * sum(qs), rounded to fp16 */
    int8_t qs[QK8_1];
} block_q8_1;

/* 16 sub-blocks of 16: x = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4) */
typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    uint16_t d, dmin;
} block_q2_K;

/* 16 sub-blocks of 16, 6-bit signed scales (biased by 32) packed in 12 bytes;
 * q = 2 low bits + (hmask bit set ? 0 : -4) */
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} block_q3_K;

/* 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes
 * (see k4_scale_min): x = d * sc * q - dmin * m */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;

/* 16 sub-blocks of 16, int8 scales: x = d * scales[j] * (q - 32) */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
} block_q6_K;

/* Activations for the K-quants: x = d * q; bsums[j] = sum of qs[16j..16j+16) */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 layout");
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 layout");
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 layout");
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 layout");
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");
_Static_assert(sizeof(block_q8_1) == 36, "block_q8_1 layout");
_Static_assert(sizeof(block_q2_K) == 84, "block_q2_K layout");
_Static_assert(sizeof(block_q3_K) == 110, "block_q3_K layout");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K layout");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K layout");

/* Kernel shapes. A "dot" kernel is one weight row against one activation row;
 * a "dot4" kernel is four weight rows (w, w + stride, ...) against one
 * activation row, writing out[0..4). */
typedef float (*quant_dot_fn)(int64_t n, const void *w, const void *a);
typedef void (*quant_dot4_fn)(int64_t n, const void *w, size_t stride, const void *a, float *out);
/* A "tile" kernel is QUANT_TILE_R weight rows (stride ws) against
 * QUANT_TILE_C activation rows (stride as): out[j * os + i] = dot(w_i, a_j). */
#define QUANT_TILE_R 4
#define QUANT_TILE_C 2
#define QUANT_TILE_C4 4
typedef void (*quant_tile_fn)(int64_t n, const void *w, size_t ws, const void *a, size_t as,
                              float *out, size_t os);
typedef void (*quant_row_fn)(const float *x, void *y, int64_t n);
typedef void (*quant_unrow_fn)(const void *x, float *y, int64_t n);

/* One SIMD implementation level; NULL members fall back to the scalar code. */
typedef struct {
    quant_dot_fn dot[WEFT_TYPE_COUNT];
    quant_dot4_fn dot4[WEFT_TYPE_COUNT];
    quant_tile_fn tile[WEFT_TYPE_COUNT];
    /* optional: QUANT_TILE_R weight rows x QUANT_TILE_C4 activation rows */
    quant_tile_fn tile4[WEFT_TYPE_COUNT];
    quant_row_fn quantize[WEFT_TYPE_COUNT];
    quant_unrow_fn dequantize[WEFT_TYPE_COUNT];
} quant_kernels;

/* fp16 bits -> float for every fp16 value, filled before any kernel runs.
 * The SIMD kernels read their per-block scales from it: a table load costs
 * no ALU uops, where vcvtph2ps costs two (one on the shuffle port), and the
 * 32-value kernels are port-bound by a handful of uops per block. The same
 * trick as ggml's ggml_table_f32_f16. */
extern float quant_f16_table[1 << 16];

/* Fill `k` with the x86 kernels of `level` (QUANT_SIMD_AVX2...). Returns false
 * when not built for x86. Defined in quant_avx2.c. */
bool quant_x86_kernels(int level, quant_kernels *k);

/* Round to nearest, ties to even, for |x| < 2^22: llama.cpp's nearest_int. */
static inline int quant_nearest_int(float x)
{
    union {
        float f;
        int32_t i;
    } u;
    /* Adding 1.5 * 2^23 leaves no fraction bits, so the FPU's default rounding
     * (to nearest even) does the work; the integer sits in the low mantissa. */
    u.f = x + 12582912.0f;
    return (u.i & 0x007fffff) - 0x00400000;
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block:
 * bytes 0..3 hold scales 0..3 (low 6 bits), bytes 4..7 mins 0..3, bytes 8..11
 * the low 4 bits of scale/min 4..7, and the top 2 bits of bytes 0..7 the high
 * bits of scales/mins 4..7. */
static inline void quant_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* The 16 signed scales (-32..31) of a Q3_K block. */
static inline void quant_q3k_scales(const uint8_t *s12, int8_t out[16])
{
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? s12[j] & 0xF : s12[j - 8] >> 4;
        int hi = (s12[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        out[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

#endif

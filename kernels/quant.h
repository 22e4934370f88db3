/*
 * kernels/quant.h — weight types (GGML numbering, as stored in GGUF files),
 * their block layouts, dequantization, activation quantization and quantized
 * dot products.
 *
 * A row of n values of type t occupies quant_row_size(t, n) bytes and
 * n must be a multiple of quant_block_size(t). Layouts are byte-identical to
 * ggml's (block_q4_0, block_q4_1, ..., block_q6_K) since weights are read
 * straight from the mmap'd GGUF file.
 *
 * Matrix-vector products: a weight row of type t is dotted with an activation
 * row that was first quantized to quant_vec_dot_type(t) (Q8_0 for Q4_0/Q5_0/
 * Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, F16 for F16, BF16 for BF16,
 * F32 for F32) — the same pairing llama.cpp uses, so results agree to
 * rounding.
 *
 * Every function has a scalar reference; on CPUs with AVX2+FMA (checked once at
 * run time with cpuid) the hot ones run vectorised code. Set WEFT_NO_SIMD=1
 * in the environment to force the scalar paths.
 */
#ifndef WEFT_KERNELS_QUANT_H
#define WEFT_KERNELS_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    WEFT_TYPE_F32 = 0,
    WEFT_TYPE_F16 = 1,
    WEFT_TYPE_Q4_0 = 2,
    WEFT_TYPE_Q4_1 = 3,
    WEFT_TYPE_Q5_0 = 6,
    WEFT_TYPE_Q5_1 = 7,
    WEFT_TYPE_Q8_0 = 8,
    WEFT_TYPE_Q8_1 = 9,
    WEFT_TYPE_Q2_K = 10,
    WEFT_TYPE_Q3_K = 11,
    WEFT_TYPE_Q4_K = 12,
    WEFT_TYPE_Q5_K = 13,
    WEFT_TYPE_Q6_K = 14,
    WEFT_TYPE_Q8_K = 15,
    WEFT_TYPE_BF16 = 30,
    WEFT_TYPE_COUNT = 40, /* upper bound on GGML type ids weft knows of */
} weft_type;

/* Name ("q4_1") of any GGML type id, "unknown" if out of range. */
const char *quant_type_name(int t);
/* True when weft can load weights of this type (dequantize + dot). */
bool quant_type_supported(int t);
/* Values per block (1 for F32/F16/BF16, 32, or 256 for K-quants); 0 if unknown. */
size_t quant_block_size(int t);
/* Bytes per block; 0 if unknown. */
size_t quant_type_size(int t);
/* Bytes of a row of n values; 0 if t is unknown or n is not a multiple of
 * the block size. */
size_t quant_row_size(int t, int64_t n);

/* The activation type a weight row of type t is dotted with (t itself for
 * types without a dot product). */
weft_type quant_vec_dot_type(weft_type t);

/* dst[0..n) = values of a row of type t. Every supported type plus the
 * activation types Q8_1 and Q8_K; anything else, or n not a whole number of
 * blocks, is a programming error (WEFT_ASSERT). */
void quant_dequantize_row(weft_type t, const void *src, float *dst, int64_t n);

/* Quantize n floats into a row of type t. Implemented for every activation
 * type (F32, F16, BF16, Q8_0, Q8_1, Q8_K) the way llama.cpp quantizes
 * activations, and for every supported weight type with a simple reference
 * quantizer (used by tests to build weights; Q4_0/Q4_1/Q5_0/Q5_1 byte-equal
 * to llama.cpp's quantize_row_*_ref, the K-quants a one-pass scheme that is
 * not). Returns 0, WEFT_EUNSUPPORTED for other types, or WEFT_EINVAL when n
 * is not a whole number of blocks. */
int quant_quantize_row(weft_type t, const float *src, void *dst, int64_t n);

/* Dot product of a weight row of type t with an activation row of type
 * quant_vec_dot_type(t), both n values long. t must be supported and n a
 * whole number of blocks (WEFT_ASSERT). */
float quant_vec_dot(weft_type t, int64_t n, const void *w, const void *a);

/* Scalar reference of quant_vec_dot (tests compare the SIMD path with it). */
float quant_vec_dot_ref(weft_type t, int64_t n, const void *w, const void *a);

/* Several weight rows against one activation row (decode): out[i] =
 * dot(w_i, a) for i < nw, where w_i = (const char *)w + i * w_stride_bytes
 * (rows of type t, n values each) and a is of type quant_vec_dot_type(t).
 * Any nw >= 0. Rows are taken four at a time, sharing the activation loads
 * and running four independent accumulator chains, which is ~1.3-1.8x faster
 * per row than quant_vec_dot (the 32-value types; other types loop over
 * quant_vec_dot). Each out[i] is bitwise equal to quant_vec_dot(t, n, w_i, a),
 * so results do not depend on how rows are split among threads. */
void quant_vec_dot_nx(weft_type t, int64_t n, const void *w, size_t w_stride_bytes, int nw,
                      const void *a, float *out);

/* A tile of a matrix product (prefill): for i < nw, j < na,
 * out[j * out_stride + i] = dot(w_i, a_j), w_i as in quant_vec_dot_nx and
 * a_j = (const char *)a + j * a_stride_bytes (out_stride in floats, so a
 * [token][row] output matrix takes out_stride = its row count). Works on
 * 4 weight rows x 2 activation rows at a time (x 4 for Q4_1 and Q8_0 on
 * AVX512-VNNI, on 512-bit registers), decoding each weight block once per
 * two (four) activations; ~10-15% faster than quant_vec_dot_nx per dot on
 * AVX2.
 * Every value is bitwise equal to quant_vec_dot(t, n, w_i, a_j). */
void quant_vec_dot_tile(weft_type t, int64_t n, const void *w, size_t w_stride_bytes, int nw,
                        const void *a, size_t a_stride_bytes, int na, float *out,
                        size_t out_stride);

/* fp16 / bf16 conversions. */
float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);

/* True when the AVX2+FMA paths are in use. */
bool quant_has_avx2(void);

/* SIMD levels. The two VNNI levels are alternatives built on AVX2: they run
 * the 4/5/8-bit x Q8 kernels with vpdpbusd, VEX-encoded (AVX-VNNI) or
 * EVEX-encoded on 256-bit registers (AVX512-VNNI + VL); the AVX512 level also
 * runs the Q4_1 and Q8_0 tiles of quant_vec_dot_tile on 512-bit registers
 * (needs AVX512F/BW/VL/VNNI and the OS's ZMM state). Results are identical to
 * AVX2. Auto-detection prefers AVX512-VNNI, then AVX-VNNI.
 *
 * On every SIMD level the dot products and activation quantization are
 * bitwise equal to llama.cpp's AVX2 code (ggml_vec_dot_*, quantize_row_q8_*)
 * on the same inputs: same integer lanes, same float operation order. The
 * scalar level instead follows llama.cpp's reference quantizers
 * (quantize_row_q8_0_ref: roundf, ties away from zero, where AVX2 rounds
 * ties to even) and sums in a simple order. */
typedef enum {
    QUANT_SIMD_SCALAR = 0,
    QUANT_SIMD_AVX2 = 1,      /* AVX2 + FMA + F16C */
    QUANT_SIMD_AVX2_VNNI = 2,   /* + AVX-VNNI */
    QUANT_SIMD_AVX512_VNNI = 3, /* + AVX512F/BW/VL/VNNI instead of AVX-VNNI */
} quant_simd_level;

/* Level in use: the best the CPU has (checked once with cpuid/xgetbv), or
 * scalar when WEFT_NO_SIMD is set to anything but "" or "0". */
quant_simd_level quant_simd(void);
/* "scalar", "avx2", "avx2+avxvnni", "avx2+avx512vnni". */
const char *quant_simd_name(quant_simd_level level);
/* True when the CPU can run `level`. */
bool quant_simd_available(quant_simd_level level);
/* For tests and benchmarks: switch to `level` if the CPU can run it (returns
 * 0) or leave the level alone (returns WEFT_EUNSUPPORTED). Not safe while
 * other threads run kernels. */
int quant_simd_set(quant_simd_level level);

#endif

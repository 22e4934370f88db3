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
/* Bytes of a row of n values (n a multiple of the block size). */
size_t quant_row_size(int t, int64_t n);

/* The activation type a weight row of type t is dotted with. */
weft_type quant_vec_dot_type(weft_type t);

/* dst[0..n) = values of a row of type t. */
void quant_dequantize_row(weft_type t, const void *src, float *dst, int64_t n);

/* Quantize n floats into a row of type t. Implemented for every activation
 * type (F32, F16, BF16, Q8_0, Q8_1, Q8_K) the way llama.cpp quantizes
 * activations, and for every supported weight type with a simple reference
 * quantizer (used by tests to build weights). Returns 0, or WEFT_EUNSUPPORTED. */
int quant_quantize_row(weft_type t, const float *src, void *dst, int64_t n);

/* Dot product of a weight row of type t with an activation row of type
 * quant_vec_dot_type(t), both n values long. */
float quant_vec_dot(weft_type t, int64_t n, const void *w, const void *a);

/* Scalar reference of quant_vec_dot (tests compare the SIMD path with it). */
float quant_vec_dot_ref(weft_type t, int64_t n, const void *w, const void *a);

/* fp16 / bf16 conversions. */
float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);

/* True when the AVX2+FMA paths are in use. */
bool quant_has_avx2(void);

#endif

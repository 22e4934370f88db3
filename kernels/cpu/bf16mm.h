/*
 * kernels/cpu/bf16mm.h — prompt rows' matrix products on AVX512-BF16
 * (vdpbf16ps), for x86 CPUs that have it but no AMX (AMD Zen 4 and later,
 * Intel Cooper Lake). Where the CPU has AMX-BF16, amx.h's tiles do this.
 *
 * Why: the int8 kernels (quant.c) scale every block of 32 values in float —
 * a vpdpbusd, a convert, a multiply and an FMA per block, row and
 * activation — which bounds them far below the CPU's multiply rate. Here the
 * weights are dequantized once at load and rounded to bf16, and each
 * vdpbf16ps does 32 multiply-adds into f32 sums with no per-block step.
 * Prompt tokens come in hundreds a step, so the weights are read once per
 * step for many rows; generated tokens (one row per sequence) stay on the
 * int8 kernels, which read a third of the bytes.
 *
 *     y[row(a)][r] = sum over pairs p, in order, of
 *                    W[r][2p] * X[a][2p] + W[r][2p+1] * X[a][2p+1]
 *
 * (one vdpbf16ps per pair, f32 accumulator), so a row's result does not
 * depend on n_tok, on the other rows, or on the thread split: batch
 * invariance holds as on the other kernels. The numbers differ from the int8
 * kernels' by the bf16 rounding of weights and activations (8 significant
 * bits), as the AMX-BF16 path's do.
 *
 * Layout: W in groups of 16 weight rows ("tiles"), each [n_in / 2][16][2]:
 * the pair p of the 16 rows in 64 bytes, the operand vdpbf16ps takes. The
 * same order as amx.c's bf16 B tiles. X is row-major bf16, n_in apart.
 */
#ifndef WEFT_KERNELS_CPU_BF16MM_H
#define WEFT_KERNELS_CPU_BF16MM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when the CPU has AVX512-BF16, the AVX512-VNNI kernels are in use
 * (quant_simd()) and AMX-BF16 is not available (amx.h takes prompt rows
 * there). The CPU part is checked once. (WEFT_PROMPT_BF16=0 is for the
 * caller: op_prompt_bf16 in ops.h.) */
bool bf16mm_available(void);

/* Bytes of the bf16 copy of an n_out x n_in matrix (2 per weight), or 0
 * when the shape does not fit (n_out not a multiple of 16, n_in odd). */
size_t bf16mm_bytes(int64_t n_in, int64_t n_out);

/* Writes the copy of n_out rows of type `type` (row_bytes apart, any type
 * quant_dequantize_row takes) into w, bf16mm_bytes(n_in, n_out) bytes,
 * 64-byte aligned. Returns 0, or -1 when the shape does not fit or a row
 * buffer cannot be allocated (w then holds nothing usable). Only where
 * bf16mm_available() (it converts with AVX512-BF16). */
int bf16mm_pack(uint16_t *w, int type, const void *data, size_t row_bytes, int64_t n_in,
                int64_t n_out);

/* Bytes of the activation buffer for n_tok rows of n_in values. */
size_t bf16mm_act_size(int64_t n_in, int n_tok);

/* Row a of the activation buffer x from n_in floats (rounded to nearest
 * even). Rows are independent: threads may fill different rows at once. */
void bf16mm_act_row(uint16_t *x, const float *f, int64_t n_in, int a);

/* y[row(a) * ldy + r] = W[r] . X[a] for a < n_tok and r in [16 * tlo,
 * 16 * thi): tiles tlo..thi-1 of W; row(a) = rows[a] (rows NULL: a).
 * Only where bf16mm_available(). */
void bf16mm_matmul(const uint16_t *w, int64_t n_in, const uint16_t *x, int n_tok,
                   const int32_t *rows, float *y, size_t ldy, long tlo, long thi);

#endif

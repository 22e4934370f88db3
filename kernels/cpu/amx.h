/*
 * kernels/cpu/amx.h — matrix products of Q4_0 / Q4_1 / Q8_0 weights on Intel
 * AMX (the int8 tile unit of Sapphire Rapids and later).
 *
 * One TDPBUSD multiplies 16 activation rows by 16 weight rows over one
 * 32-value block, giving the exact int32 block sums; the float part then
 * runs once per block and output (not once per 8-lane partial sum, as the
 * vpdpbusd kernels in quant.c do to stay bitwise equal to llama.cpp):
 *
 *     y[a][w] = sum over blocks b, in order, of
 *               fma(float(isum), dw[w,b] * da[a,b], y)   then, for Q4_1,
 *               fma(mw[w,b], sa[a,b], y)
 *
 * where isum is the exact integer dot of the block. Every output runs the
 * same operations whatever the number of activation rows in the call, so a
 * token's result does not depend on what it was batched with (a request's
 * greedy output is the same alone or under load). The numbers differ from
 * the vpdpbusd kernels in the last bits (a different, shorter float
 * summation), within the bounds the model tests hold weft to.
 *
 * Weights are repacked once at load into the tile layout (amx_pack): per 16
 * rows and block, the 32 values as int8 in the VNNI order TDPBUSD reads,
 * the row scales as f32 and 128 x the row's block sum (the one-row kernels
 * bias the activations by +128 for vpdpbusd's unsigned operand and take it
 * out with it; the tiles multiply signed by signed, TDPBSSD). About 1.4
 * bytes per weight.
 */
#ifndef WEFT_KERNELS_CPU_AMX_H
#define WEFT_KERNELS_CPU_AMX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/common.h"

typedef struct amx_matrix amx_matrix;

/* True when the CPU has AMX-TILE and AMX-INT8, the OS grants the tile state
 * to this process (arch_prctl), AVX512-VNNI kernels are in use
 * (quant_simd()) and WEFT_NO_AMX is unset or "0". Checked once (the
 * quant_simd part every call). */
bool amx_available(void);

/* True when amx_available() and the CPU also has AMX-BF16 and AVX512-BF16
 * (the attention kernel in ops.c uses them). */
bool amx_bf16_available(void);

/* True on CPUs with the AVX512-VNNI kernels in use but no AMX (AMD Zen 4,
 * say), unless WEFT_NO_NIB is set: amx_pack then keeps only the compact
 * copies (Q4_0/Q4_1's nibbles, Q8_0's bytes; 0.625 and 1.125 bytes a
 * weight), and amx_matmul runs every call on the vpdpbusd kernel of 1-8
 * rows, 8 rows at a time — the same exact block sums and float steps as
 * the tiles, so the same numbers as on an AMX CPU, batch-invariant too.
 * (The vpdpbusd kernels of quant.c, bitwise llama.cpp's, scale every
 * 8-lane partial sum of every block: on such a CPU one sequence decoded
 * at 1/3 of the rate memory allows.) amx_pack_bf16 is not available. */
bool amx_compact_only(void);

/* Repacks a (n_out x n_in) matrix of Q4_0, Q4_1 or Q8_0 rows (row_bytes
 * apart). Returns NULL when the type or shape does not fit (n_out not a
 * multiple of 16, n_in not a multiple of 32), when neither AMX nor
 * amx_compact_only() is available or on out of memory — the caller then
 * uses the other kernels. Owned by the caller: amx_free. */
amx_matrix *amx_pack(int type, const void *data, size_t row_bytes, int64_t n_in, int64_t n_out);
/* amx_pack with every copy of the weights (this one and those amx_pack_bf16
 * and amx_pack_bytes add) taken from `arena` (common/arena.h: 2 MB pages),
 * which must outlive the matrix; amx_free then frees the rest. */
struct weft_arena;
amx_matrix *amx_pack_in(struct weft_arena *arena, int type, const void *data, size_t row_bytes, int64_t n_in,
                        int64_t n_out);
void amx_free(amx_matrix *m);

/* The activation type the matrix's rows are multiplied with (Q8_0 or Q8_1). */
int amx_act_type(const amx_matrix *m);

/* Bytes of the activation buffer for n_tok rows of n_in values. */
size_t amx_act_size(int64_t n_in, int n_tok);

/* Fills row `tok` of the activation buffer from one quantized row q (of
 * amx_act_type, n_in values). Rows are independent: threads may fill
 * different rows at once. */
void amx_act_fill(void *buf, int64_t n_in, int n_tok, int tok, int act_type, const void *q);

/* y[a * ldy + r] = (row r of m) . (activation a), for a < n_tok and r in
 * [16 * tlo, 16 * thi): weight tiles tlo..thi-1 of m, every activation. */
void amx_matmul(const amx_matrix *m, const void *act, int n_tok, float *y, size_t ldy, long tlo,
                long thi);
/* amx_matmul over activations first..first + n_tok - 1 of a buffer of
 * n_act rows; y is activation `first`'s output row. */
void amx_matmul_rows(const amx_matrix *m, const void *act, int n_act, int first, int n_tok,
                     float *y, size_t ldy, long tlo, long thi);

/* A Q8_0 matrix (the output head) can add a compact copy of its int8
 * blocks, 576 bytes a block, not 704 (values + 128 and f16 scales), which
 * calls of 1-8 rows read — decoding a few sequences is bound by reading the
 * weights; the numbers are the same. 0, or -1 (not Q8_0, or no memory: m is
 * unchanged). About 1.1 bytes a weight more. (Under amx_compact_only()
 * amx_pack makes it, and it is the only copy.) */
int amx_pack_bytes(amx_matrix *m);

/* Prompt rows on AMX-BF16 tiles. amx_pack_bf16 adds to m a second copy of
 * its weights: dequantized (scale * value + minimum, in f32), rounded to
 * bf16, in TDPBF16PS's tile layout — amx_bf16_bytes(m), about 2 bytes a
 * weight. Returns 0, or -1 without AMX-BF16 or memory (m is unchanged).
 * Then amx_matmul_bf16: y[row(a) * ldy + r] = sum over i of W[r][i] * X[a][i]
 * for a < n_tok and r in tiles [tlo, thi), row(a) = rows[a] (rows NULL: a),
 * products accumulated in f32 block after block. X is bf16, in the tiles'
 * layout (amx_bf16_act_size(n_in, n_tok) bytes): amx_to_bf16_row puts row
 * a there, and amx_bf16_act_pad zeroes the rows past n_tok up to a multiple
 * of 16 once all rows are in. No per-block float step (what bounds the int8
 * path), so from a few dozen rows on it is several times faster; below that
 * the weights' bytes (more than the int8 layout's) bound both. A row's
 * result does not depend on n_tok or on the other rows. Only where
 * amx_has_bf16(m) (amx_bf16_act_size: everywhere). */
int amx_pack_bf16(amx_matrix *m);
bool amx_has_bf16(const amx_matrix *m);
size_t amx_bf16_bytes(const amx_matrix *m);
size_t amx_bf16_act_size(int64_t n_in, int n_tok);
void amx_to_bf16_row(uint16_t *x, const float *f, int64_t n_in, int a);
void amx_bf16_act_pad(uint16_t *x, int64_t n_in, int n_tok);
void amx_matmul_bf16(const amx_matrix *m, const uint16_t *x, int n_tok, const int32_t *rows, float *y,
                     size_t ldy, long tlo, long thi);

/* Loads a tile configuration (palette 1): tile i has rows[i] rows of
 * colsb[i] bytes (0, 0: unused). For this file's kernels and the attention
 * tiles in ops.c; only where amx_available(). */
void amx_tile_config(const uint8_t rows[8], const uint16_t colsb[8]);

/* Number of 16-row tiles of m. */
long amx_n_tiles(const amx_matrix *m);

#endif

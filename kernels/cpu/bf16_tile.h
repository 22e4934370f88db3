/*
 * kernels/cpu/bf16_tile.h — building the B operand of TDPBF16PS (AMX-BF16)
 * and of vdpbf16ps (AVX512-BF16), shared by the matrix kernels (amx.c) and
 * the attention kernels (ops.c).
 * x86-64 only; include after <immintrin.h>.
 */
#ifndef WEFT_KERNELS_CPU_BF16_TILE_H
#define WEFT_KERNELS_CPU_BF16_TILE_H

#include <stdint.h>

/* The pairs (x0[n], x1[n]) for n < 16, each rounded to bf16 (nearest even),
 * pair n in 32-bit lane n (x0 in its low half): a row of a B tile, and the
 * operand vdpbf16ps pairs with a broadcast pair. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static inline __m512i
bf16_pairs(__m512 x0, __m512 x1)
{
    static const uint16_t il[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(il), (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
}

/* bf16_pairs stored as one 64-byte row of a B tile; row 64-byte aligned. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static inline void
bf16_pair_row(__m512 x0, __m512 x1, uint16_t *row)
{
    _mm512_store_si512(row, bf16_pairs(x0, x1));
}

#endif

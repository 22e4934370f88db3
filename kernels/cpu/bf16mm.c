/* Prompt rows' matrix products on AVX512-BF16; see bf16mm.h. */
#include "kernels/cpu/bf16mm.h"

#include <pthread.h>
#include <string.h>

#include "kernels/cpu/amx.h"
#include "kernels/quant.h"

#define TILE 16 /* weight rows per tile: the 16 f32 lanes of a zmm */

size_t bf16mm_bytes(int64_t n_in, int64_t n_out)
{
    if (n_in <= 0 || n_out <= 0 || n_in % 2 || n_out % TILE) return 0;
    return (size_t)n_in * (size_t)n_out * sizeof(uint16_t);
}

size_t bf16mm_act_size(int64_t n_in, int n_tok)
{
    return (size_t)n_in * (size_t)(n_tok > 0 ? n_tok : 0) * sizeof(uint16_t);
}

int bf16mm_pack(uint16_t *w, int type, const void *data, size_t row_bytes, int64_t n_in,
                int64_t n_out)
{
    if (!bf16mm_bytes(n_in, n_out)) return -1;
    /* 16 rows at a time: dequantized, rounded, then pair p of row i goes to
     * w[tile][p][i] (two bf16 as one 32-bit word) */
    float *f = weft_malloc((size_t)n_in * sizeof *f);
    uint32_t *rb = weft_malloc((size_t)TILE * (size_t)n_in * sizeof(uint16_t));
    if (!f || !rb) {
        weft_free(f);
        weft_free(rb);
        return -1;
    }
    const int64_t np = n_in / 2;
    for (int64_t t = 0; t < n_out / TILE; t++) {
        for (int i = 0; i < TILE; i++) {
            quant_dequantize_row(type, (const char *)data + (size_t)(t * TILE + i) * row_bytes, f, n_in);
            bf16mm_act_row((uint16_t *)(rb + (size_t)i * (size_t)np), f, n_in, 0);
        }
        uint32_t *out = (uint32_t *)w + (size_t)t * (size_t)np * TILE;
        for (int64_t p = 0; p < np; p++)
            for (int i = 0; i < TILE; i++) out[(size_t)p * TILE + (size_t)i] = rb[(size_t)i * (size_t)np + (size_t)p];
    }
    weft_free(f);
    weft_free(rb);
    return 0;
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

static bool cpu_ok;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void cpu_probe(void)
{
    unsigned a, b, c, d;
    /* AVX512-BF16: leaf 7 subleaf 1 eax bit 5; the zmm state is checked by
     * quant_simd's AVX512-VNNI level */
    cpu_ok = __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
}

bool bf16mm_available(void)
{
    pthread_once(&cpu_once, cpu_probe);
    return cpu_ok && quant_simd() == QUANT_SIMD_AVX512_VNNI && !amx_bf16_available();
}

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

TGT void bf16mm_act_row(uint16_t *x, const float *f, int64_t n_in, int a)
{
    uint16_t *r = x + (size_t)a * (size_t)n_in;
    int64_t k = 0;
    for (; k + 32 <= n_in; k += 32)
        _mm512_storeu_si512(r + k, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(f + k + 16), _mm512_loadu_ps(f + k)));
    for (; k < n_in; k++) r[k] = quant_f32_to_bf16(f[k]);
}

/* nw (1 or 2) tiles from w by nt (1-8) activation rows from a0: 16 f32
 * accumulators at most, each pair p one weight load per tile, one broadcast
 * per row and nw * nt vdpbf16ps. Always inlined with constant nw and nt. */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512bf16"))) void
kern(const uint16_t *w, size_t tile_elems, const int nw, const uint16_t *x, int64_t n_in, int a0,
     const int nt, const int32_t *rows, float *y, size_t ldy, long t)
{
    __m512 acc[2][8];
    const uint16_t *xr[8];
#pragma GCC unroll 8
    for (int j = 0; j < nt; j++) {
        acc[0][j] = acc[1][j] = _mm512_setzero_ps();
        xr[j] = x + (size_t)(a0 + j) * (size_t)n_in;
    }
    const uint16_t *w0 = w + (size_t)t * tile_elems, *w1 = w0 + tile_elems;
    const int64_t np = n_in / 2;
    for (int64_t p = 0; p < np; p++) {
        const __m512bh wv0 = (__m512bh)_mm512_load_si512(w0 + (size_t)p * 2 * TILE);
        const __m512bh wv1 = nw == 2 ? (__m512bh)_mm512_load_si512(w1 + (size_t)p * 2 * TILE) : wv0;
#pragma GCC unroll 8
        for (int j = 0; j < nt; j++) {
            uint32_t pair;
            memcpy(&pair, xr[j] + 2 * p, sizeof pair);
            const __m512bh xv = (__m512bh)_mm512_set1_epi32((int)pair);
            acc[0][j] = _mm512_dpbf16_ps(acc[0][j], wv0, xv);
            if (nw == 2) acc[1][j] = _mm512_dpbf16_ps(acc[1][j], wv1, xv);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < nt; j++) {
        float *yr = y + (size_t)(rows ? rows[a0 + j] : a0 + j) * ldy + (size_t)t * TILE;
        _mm512_storeu_ps(yr, acc[0][j]);
        if (nw == 2) _mm512_storeu_ps(yr + TILE, acc[1][j]);
    }
}

#define KERN_NT(NW)                                                                                \
    switch (nt) {                                                                                  \
    case 8: kern(w, tile_elems, NW, x, n_in, a0, 8, rows, y, ldy, t); break;                      \
    case 7: kern(w, tile_elems, NW, x, n_in, a0, 7, rows, y, ldy, t); break;                      \
    case 6: kern(w, tile_elems, NW, x, n_in, a0, 6, rows, y, ldy, t); break;                      \
    case 5: kern(w, tile_elems, NW, x, n_in, a0, 5, rows, y, ldy, t); break;                      \
    case 4: kern(w, tile_elems, NW, x, n_in, a0, 4, rows, y, ldy, t); break;                      \
    case 3: kern(w, tile_elems, NW, x, n_in, a0, 3, rows, y, ldy, t); break;                      \
    case 2: kern(w, tile_elems, NW, x, n_in, a0, 2, rows, y, ldy, t); break;                      \
    default: kern(w, tile_elems, NW, x, n_in, a0, 1, rows, y, ldy, t); break;                     \
    }

/* Two tiles at a time (up to 96 KB of weights for n_in = 1536) stay in L2
 * while every group of 8 rows goes past them; the activations (n_tok rows
 * of n_in bf16) stay in L2 too. */
TGT void bf16mm_matmul(const uint16_t *w, int64_t n_in, const uint16_t *x, int n_tok,
                       const int32_t *rows, float *y, size_t ldy, long tlo, long thi)
{
    const size_t tile_elems = (size_t)n_in * TILE;
    for (long t = tlo; t < thi; t += 2) {
        const bool two = t + 1 < thi;
        for (int a0 = 0; a0 < n_tok; a0 += 8) {
            const int nt = n_tok - a0 < 8 ? n_tok - a0 : 8;
            if (two) {
                KERN_NT(2)
            } else {
                KERN_NT(1)
            }
        }
    }
}
#undef KERN_NT

#else /* not x86-64 */

bool bf16mm_available(void) { return false; }
void bf16mm_act_row(uint16_t *x, const float *f, int64_t n_in, int a)
{
    for (int64_t k = 0; k < n_in; k++) x[(size_t)a * (size_t)n_in + (size_t)k] = quant_f32_to_bf16(f[k]);
}
void bf16mm_matmul(const uint16_t *w, int64_t n_in, const uint16_t *x, int n_tok,
                   const int32_t *rows, float *y, size_t ldy, long tlo, long thi)
{
    (void)w, (void)n_in, (void)x, (void)n_tok, (void)rows, (void)y, (void)ldy, (void)tlo, (void)thi;
}
#endif

/* Q4_0 / Q4_1 / Q8_0 matrix products on AMX tiles; see amx.h. */
#include "kernels/cpu/amx.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"
#include "kernels/cpu/quant_internal.h"
#include "kernels/quant.h"

#define AMX_ROWS 16 /* weight rows per tile, activation rows per group */
#define AMX_K 32    /* values per block */

/* One tile of 16 weight rows x one block, as TDPBUSD's B operand reads it:
 * q[r][4n + j] = value 4r + j of row n. */
typedef struct {
    int8_t q[AMX_K / 4][4 * AMX_ROWS];
    float dw[AMX_ROWS]; /* row scales */
    float mw[AMX_ROWS]; /* row minimums (Q4_1), else 0 */
    int32_t cs[AMX_ROWS]; /* 128 x the block's value sum: the one-row kernels bias activations by + 128 */
} amx_block;
_Static_assert(sizeof(amx_block) % 64 == 0, "amx_block keeps 64-byte alignment");

/* The same block for decoding a few sequences with 4-bit types, in 320
 * bytes, not 704 (decoding is bound by reading the weights): byte j of q[r]
 * holds, in its low nibble, byte j of amx_block.q[r] and in its high
 * nibble byte j of q[r + 4] — each value + 8 for Q4_0, as is for Q4_1 —
 * and the scales as f16 (they come from f16: exact). 0.625 bytes a weight,
 * what Q4_1 takes in the file. */
typedef struct {
    uint8_t q[AMX_K / 8][4 * AMX_ROWS];
    uint16_t dw[AMX_ROWS], mw[AMX_ROWS];
} amx_nblock;
_Static_assert(sizeof(amx_nblock) % 64 == 0, "amx_nblock keeps 64-byte alignment");

/* The int8 block of Q8_0 for decoding a few sequences (the output head): the
 * values + 128 (vpdpbusd's unsigned operand) and the scales as f16 (they
 * come from f16: exact), 576 bytes, not 704. */
typedef struct {
    uint8_t q[AMX_K / 4][4 * AMX_ROWS];
    uint16_t dw[AMX_ROWS], pad[AMX_ROWS];
} amx_bblock;
_Static_assert(sizeof(amx_bblock) % 64 == 0, "amx_bblock keeps 64-byte alignment");

struct amx_matrix {
    int type, act_type;
    int64_t n_in, n_out, nb;
    long nt;
    amx_block *blocks; /* [nt][nb], 64-byte aligned inside `raw` */
    void *raw;
    amx_nblock *nblocks; /* [nt][nb] for Q4_0 / Q4_1 (else NULL), inside nraw */
    void *nraw;
    amx_bblock *bblocks; /* amx_pack_bytes: [nt][nb] for Q8_0, or NULL; inside braw */
    void *braw;
    uint16_t *wbf; /* amx_pack_bf16: [nt][nb][16][32] B tiles of TDPBF16PS, or NULL */
    void *wbf_raw;
    weft_arena *arena; /* the copies come from it (the *raw fields stay NULL), or NULL */
};

/* n bytes, 64-byte aligned, for one of m's copies: from m's arena, or from
 * weft_malloc with *raw the block to free. NULL when out of memory. */
static void *copy_mem(amx_matrix *m, size_t n, void **raw)
{
    *raw = NULL;
    if (m->arena) return weft_arena_alloc(m->arena, n);
    if (!(*raw = weft_malloc(n + 63))) return NULL;
    return (void *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

#include "kernels/cpu/bf16_tile.h"
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static bool amx_ok, amx_bf16_ok;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_probe(void)
{
    const char *env = getenv("WEFT_NO_AMX");
    if (env && *env && strcmp(env, "0") != 0) return;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return; /* OSXSAVE */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    if (!(d & (1u << 24)) || !(d & (1u << 25))) return; /* AMX-TILE, AMX-INT8 */
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    const uint64_t xcr0 = ((uint64_t)hi << 32) | lo;
    if ((xcr0 & (3u << 17)) != (3u << 17)) return; /* XTILECFG, XTILEDATA */
    /* Linux hands out the 8 KB tile state only on request (per process). */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return;
    amx_ok = true;
    /* AMX-BF16: leaf 7 edx bit 22; AVX512-BF16: leaf 7 subleaf 1 eax bit 5 */
    const bool tile_bf16 = (d & (1u << 22)) != 0;
    if (tile_bf16 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) amx_bf16_ok = true;
}

bool amx_available(void)
{
    pthread_once(&amx_once, amx_probe);
    return amx_ok && quant_simd() == QUANT_SIMD_AVX512_VNNI;
}

bool amx_bf16_available(void)
{
    return amx_available() && amx_bf16_ok;
}

static bool nib_off(void);

bool amx_compact_only(void)
{
    return !amx_available() && quant_simd() == QUANT_SIMD_AVX512_VNNI && !nib_off();
}
#else
bool amx_available(void) { return false; }
bool amx_bf16_available(void) { return false; }
bool amx_compact_only(void) { return false; }
#endif

/* The 32 integer values of block b of a row, its scale and minimum. */
static void block_values(int type, const void *row, int64_t b, int8_t v[AMX_K], float *d, float *m)
{
    *m = 0.0f;
    if (type == WEFT_TYPE_Q8_0) {
        const block_q8_0 *x = (const block_q8_0 *)row + b;
        memcpy(v, x->qs, AMX_K);
        *d = quant_f16_to_f32(x->d);
    } else if (type == WEFT_TYPE_Q4_1) {
        const block_q4_1 *x = (const block_q4_1 *)row + b;
        for (int j = 0; j < AMX_K / 2; j++) {
            v[j] = (int8_t)(x->qs[j] & 0x0F);
            v[j + AMX_K / 2] = (int8_t)(x->qs[j] >> 4);
        }
        *d = quant_f16_to_f32(x->d);
        *m = quant_f16_to_f32(x->m);
    } else { /* Q4_0 */
        const block_q4_0 *x = (const block_q4_0 *)row + b;
        for (int j = 0; j < AMX_K / 2; j++) {
            v[j] = (int8_t)((x->qs[j] & 0x0F) - 8);
            v[j + AMX_K / 2] = (int8_t)((x->qs[j] >> 4) - 8);
        }
        *d = quant_f16_to_f32(x->d);
    }
}

amx_matrix *amx_pack(int type, const void *data, size_t row_bytes, int64_t n_in, int64_t n_out)
{
    return amx_pack_in(NULL, type, data, row_bytes, n_in, n_out);
}

/* Block b of weight tile t, in the int8 tile layout. */
static void fill_block(int type, const void *data, size_t row_bytes, long t, int64_t b, amx_block *ab)
{
    for (int n = 0; n < AMX_ROWS; n++) {
        int8_t v[AMX_K];
        const char *row = (const char *)data + (size_t)(t * AMX_ROWS + n) * row_bytes;
        block_values(type, row, b, v, &ab->dw[n], &ab->mw[n]);
        int32_t sum = 0;
        for (int k = 0; k < AMX_K; k++) {
            ab->q[k / 4][4 * n + k % 4] = v[k];
            sum += v[k];
        }
        ab->cs[n] = 128 * sum;
    }
}

/* Q8_0's compact form of an int8 block: bytes + 128, f16 scales (exact:
 * they come from f16); amx_pack_bytes, which has no rows to read. */
static void byte_block(const amx_block *ab, amx_bblock *bb)
{
    for (int r = 0; r < AMX_K / 4; r++)
        for (int j = 0; j < 4 * AMX_ROWS; j++) bb->q[r][j] = (uint8_t)(ab->q[r][j] + 128);
    for (int n = 0; n < AMX_ROWS; n++) {
        bb->dw[n] = quant_f32_to_f16(ab->dw[n]);
        bb->pad[n] = 0;
    }
}

/* Block b of tile t in its compact form straight from the rows: byte
 * 4n + k of the nibble copy's q[r] is byte 4r + k of row n's qs (value
 * 4r + k in its low nibble, 4r + k + 16 in its high one: Q4_1's values,
 * Q4_0's + 8, its raw nibbles), Q8_0's byte copy is the values + 128 (as
 * byte_block makes it), and the scales are the rows' f16 fields. A 32-bit
 * copy per row and 4 values. */
static void compact_block(int type, const void *data, size_t row_bytes, long t, int64_t b, amx_nblock *nb4,
                          amx_bblock *bb)
{
    for (int n = 0; n < AMX_ROWS; n++) {
        const char *row = (const char *)data + (size_t)(t * AMX_ROWS + n) * row_bytes;
        if (type == WEFT_TYPE_Q8_0) {
            const block_q8_0 *x = (const block_q8_0 *)row + b;
            for (int r = 0; r < AMX_K / 4; r++) {
                uint32_t w;
                memcpy(&w, x->qs + 4 * r, 4);
                w ^= 0x80808080u;
                memcpy(&bb->q[r][4 * n], &w, 4);
            }
            bb->dw[n] = x->d;
            bb->pad[n] = 0;
        } else {
            const uint8_t *qs;
            if (type == WEFT_TYPE_Q4_1) {
                const block_q4_1 *x = (const block_q4_1 *)row + b;
                qs = x->qs;
                nb4->dw[n] = x->d;
                nb4->mw[n] = x->m;
            } else {
                const block_q4_0 *x = (const block_q4_0 *)row + b;
                qs = x->qs;
                nb4->dw[n] = x->d;
                nb4->mw[n] = 0; /* f16 +0: Q4_0 has no minimum */
            }
            for (int r = 0; r < AMX_K / 8; r++) memcpy(&nb4->q[r][4 * n], qs + 4 * r, 4);
        }
    }
}

amx_matrix *amx_pack_in(weft_arena *arena, int type, const void *data, size_t row_bytes, int64_t n_in,
                        int64_t n_out)
{
    if (type != WEFT_TYPE_Q4_0 && type != WEFT_TYPE_Q4_1 && type != WEFT_TYPE_Q8_0) return NULL;
    if (n_out <= 0 || n_in <= 0 || n_out % AMX_ROWS || n_in % AMX_K) return NULL;
    const bool compact = !amx_available(); /* no tiles: only the compact copy is made */
    if (compact && !amx_compact_only()) return NULL;
    amx_matrix *m = weft_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->type = type;
    m->act_type = quant_vec_dot_type((weft_type)type);
    m->n_in = n_in;
    m->n_out = n_out;
    m->nb = n_in / AMX_K;
    m->nt = (long)(n_out / AMX_ROWS);
    m->arena = arena;
    const long n_blocks = m->nt * (long)m->nb;
    if (compact) {
        const bool q8 = type == WEFT_TYPE_Q8_0;
        if (q8 ? !(m->bblocks = copy_mem(m, (size_t)n_blocks * sizeof(amx_bblock), &m->braw))
               : !(m->nblocks = copy_mem(m, (size_t)n_blocks * sizeof(amx_nblock), &m->nraw))) {
            amx_free(m);
            return NULL;
        }
        for (long t = 0; t < m->nt; t++)
            for (int64_t b = 0; b < m->nb; b++) {
                const long i = t * (long)m->nb + (long)b;
                compact_block(type, data, row_bytes, t, b, q8 ? NULL : &m->nblocks[i], q8 ? &m->bblocks[i] : NULL);
            }
        return m;
    }
    if (!(m->blocks = copy_mem(m, (size_t)n_blocks * sizeof(amx_block), &m->raw))) {
        weft_free(m);
        return NULL;
    }
    for (long t = 0; t < m->nt; t++)
        for (int64_t b = 0; b < m->nb; b++) fill_block(type, data, row_bytes, t, b, &m->blocks[t * m->nb + b]);
    if (type != WEFT_TYPE_Q8_0) { /* the 4-bit copy; without it (memory) the int8 blocks serve */
        m->nblocks = copy_mem(m, (size_t)n_blocks * sizeof(amx_nblock), &m->nraw);
        if (m->nblocks)
            for (long t = 0; t < m->nt; t++)
                for (int64_t b = 0; b < m->nb; b++)
                    compact_block(type, data, row_bytes, t, b, &m->nblocks[t * m->nb + b], NULL);
    }
    return m;
}

int amx_pack_bytes(amx_matrix *m)
{
    if (!m || m->type != WEFT_TYPE_Q8_0) return -1;
    if (m->bblocks) return 0;
    if (!m->blocks) return -1;
    if (!(m->bblocks = copy_mem(m, (size_t)m->nt * (size_t)m->nb * sizeof(amx_bblock), &m->braw))) return -1;
    for (long i = 0; i < m->nt * m->nb; i++) byte_block(&m->blocks[i], &m->bblocks[i]);
    return 0;
}

void amx_free(amx_matrix *m)
{
    if (!m) return;
    weft_free(m->nraw);
    weft_free(m->braw);
    weft_free(m->wbf_raw);
    weft_free(m->raw);
    weft_free(m);
}

int amx_act_type(const amx_matrix *m) { return m->act_type; }
long amx_n_tiles(const amx_matrix *m) { return m->nt; }

/* Activation buffer: s8[n_tok][n_in] (the Q8 values), then da[n_tok][nb] and
 * sa[n_tok][nb] (f32 scales and, for Q8_1, d * sum), then is8[n_tok][nb]
 * (for Q8_0 activations: 8 x the block's integer value sum, which few_rows
 * takes out for Q4_0 and Q8_0 weights; not written for Q8_1). */
static size_t al64(size_t x) { return (x + 63) & ~(size_t)63; }

size_t amx_act_size(int64_t n_in, int n_tok)
{
    const size_t nb = (size_t)(n_in / AMX_K);
    return al64((size_t)n_in * (size_t)n_tok) + 3 * al64(nb * (size_t)n_tok * sizeof(float));
}

size_t amx_bf16_act_size(int64_t n_in, int n_tok)
{
    return (size_t)((n_tok + AMX_ROWS - 1) / AMX_ROWS) * AMX_ROWS * (size_t)n_in * sizeof(uint16_t);
}

typedef struct {
    uint8_t *u;
    float *da, *sa;
    int32_t *is8;
} act_view;

static act_view act_at(const void *buf, int64_t n_in, int n_tok)
{
    const size_t nb = (size_t)(n_in / AMX_K);
    act_view v;
    v.u = (uint8_t *)buf;
    v.da = (float *)(v.u + al64((size_t)n_in * (size_t)n_tok));
    v.sa = (float *)((char *)v.da + al64(nb * (size_t)n_tok * sizeof(float)));
    v.is8 = (int32_t *)((char *)v.sa + al64(nb * (size_t)n_tok * sizeof(float)));
    return v;
}

void amx_act_fill(void *buf, int64_t n_in, int n_tok, int tok, int act_type, const void *q)
{
    const act_view v = act_at(buf, n_in, n_tok);
    const int64_t nb = n_in / AMX_K;
    uint8_t *u = v.u + (size_t)tok * (size_t)n_in;
    float *da = v.da + (size_t)tok * (size_t)nb, *sa = v.sa + (size_t)tok * (size_t)nb;
    int32_t *is8 = v.is8 + (size_t)tok * (size_t)nb;
    for (int64_t b = 0; b < nb; b++) {
        const int8_t *qs;
        if (act_type == WEFT_TYPE_Q8_1) {
            const block_q8_1 *x = (const block_q8_1 *)q + b;
            qs = x->qs;
            da[b] = quant_f16_to_f32(x->d);
            sa[b] = quant_f16_to_f32(x->s);
        } else {
            const block_q8_0 *x = (const block_q8_0 *)q + b;
            qs = x->qs;
            da[b] = quant_f16_to_f32(x->d);
            sa[b] = 0.0f;
        }
        memcpy(u + b * AMX_K, qs, AMX_K); /* signed: the tiles take them as they are */
        if (act_type == WEFT_TYPE_Q8_1) continue; /* Q4_1's rows: few_rows takes nothing out */
        int32_t sum = 0;
        for (int k = 0; k < AMX_K; k++) sum += qs[k];
        is8[b] = 8 * sum;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#define TGTAMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

void amx_tile_config(const uint8_t rows[8], const uint16_t colsb[8])
{
    amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.rows[i] = rows[i];
        c.colsb[i] = colsb[i];
    }
    /* inline asm with the struct as a memory operand: gcc 12 drops the
     * stores to `c` before __builtin_ia32_ldtilecfg as dead */
    __asm__ volatile("ldtilecfg %0" : : "m"(c));
}

/* tmm0/3: C (rows x 16 int32), tmm1/4: A (rows x 32 u8), tmm2/5: B (8 x 64 s8). */
static void config_rows(int rows)
{
    const uint8_t r = (uint8_t)rows;
    const uint8_t rs[8] = {r, r, AMX_K / 4, r, r, AMX_K / 4, 0, 0};
    const uint16_t cs[8] = {64, AMX_K, 64, 64, AMX_K, 64, 0, 0};
    amx_tile_config(rs, cs);
}

/* The float part of one block, the same for every path:
 * acc = fma(float(isum - cs), dw * da, acc), then for Q4_1
 * acc = fma(mw, sa, acc); isum is the exact block sum of (a + 128) * w
 * (vpdpbusd), so isum - cs = the sum of a * w, which TDPBSSD gives at once
 * (epilogue_s): the same integer, the same float steps. */
TGTAMX static inline __attribute__((always_inline)) __m512
epilogue_v(__m512 acc, __m512i isum, __m512i cs, __m512 dw, __m512 mw, float da, float sa, bool q41)
{
    const __m512i x = _mm512_sub_epi32(isum, cs);
    const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(da));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(x), s, acc);
    if (q41) acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(sa), acc);
    return acc;
}

/* epilogue_v for a block sum already exact (TDPBSSD: no +128 bias to take
 * out): the same float steps on the same integer. */
TGTAMX static inline __attribute__((always_inline)) __m512
epilogue_s(__m512 acc, __m512i x, __m512 dw, __m512 mw, float da, float sa, bool q41)
{
    const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(da));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(x), s, acc);
    if (q41) acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(sa), acc);
    return acc;
}

TGTAMX static inline __attribute__((always_inline)) __m512
epilogue(__m512 acc, __m512i isum, const amx_block *blk, float da, float sa, bool q41)
{
    return epilogue_v(acc, isum, _mm512_load_si512(blk->cs), _mm512_load_ps(blk->dw),
                      q41 ? _mm512_load_ps(blk->mw) : _mm512_setzero_ps(), da, sa, q41);
}

/* Block b's scales, from the int8 blocks or the nibble copy. */
TGTAMX static inline __attribute__((always_inline)) void
block_scales(const amx_block *blk, const amx_nblock *nblk, int64_t b, bool q41, __m512 *dw, __m512 *mw)
{
    if (nblk) {
        *dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)nblk[b].dw));
        *mw = q41 ? _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)nblk[b].mw)) : _mm512_setzero_ps();
    } else {
        *dw = _mm512_load_ps(blk[b].dw);
        *mw = q41 ? _mm512_load_ps(blk[b].mw) : _mm512_setzero_ps();
    }
}

/* A nibble block unpacked into the int8 tile layout (8 rows of 64 bytes). */
TGTAMX static inline __attribute__((always_inline)) const int8_t *
unpack_nib(const amx_nblock *nb4, int8_t out[AMX_K / 4][4 * AMX_ROWS], __m512i bias)
{
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int r = 0; r < AMX_K / 8; r++) {
        const __m512i raw = _mm512_load_si512(nb4->q[r]);
        _mm512_store_si512(out[r], _mm512_sub_epi8(_mm512_and_si512(raw, low), bias));
        _mm512_store_si512(out[r + 4], _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(raw, 4), low), bias));
    }
    return out[0];
}

#define EPILOGUE(M, C, b)                                                                          \
    do {                                                                                           \
        __m512 dw_, mw_; /* TDPBSSD's sums are the signed ones already: no correction */       \
        block_scales(blk, nblk, b, q41, &dw_, &mw_);                                               \
        _Pragma("GCC unroll 16") for (int m = 0; m < (M); m++) acc[m] =                           \
            epilogue_s(acc[m], _mm512_load_si512((C)[m]), dw_, mw_, da[(size_t)m * nb + (b)],      \
                       sa[(size_t)m * nb + (b)], q41);                                             \
    } while (0)

/* How far ahead (in blocks, 704 bytes each) the first group of a tile
 * prefetches its weights: memory latency is several rounds of two blocks,
 * and a tile of SmolLM2 has only 18 or 48 blocks, so the prefetch runs on
 * into the next tile of the thread's range. */
#define AMX_PF_BLOCKS 8

/* M activation rows (u, da, sa point at the first) x weight tile t.
 * Software-pipelined: the tiles of blocks b, b+1 are multiplied and stored
 * while the float part reads the sums of b-2, b-1, stored a round earlier
 * (a load right after the TILESTORED that feeds it would stall). pf_lim:
 * prefetch blocks below this index of the matrix (0: none). */
TGTAMX static inline __attribute__((always_inline)) void
group(const amx_matrix *mat, long t, const uint8_t *u, const float *da, const float *sa,
      const int M, const bool q41, const long pf_lim, const bool nib, float *y, size_t ldy)
{
    const int64_t nb = mat->nb;
    const amx_block *blk = &mat->blocks[t * nb];
    const amx_nblock *nblk = nib ? &mat->nblocks[t * nb] : NULL;
    const __m512i bias = _mm512_set1_epi8(q41 ? 0 : 8); /* nibbles hold Q4_0's values + 8 */
    int8_t qb[2][AMX_K / 4][4 * AMX_ROWS] __attribute__((aligned(64)));
    const long pf_first = t * nb + AMX_PF_BLOCKS; /* block index of blk[AMX_PF_BLOCKS] */
    int32_t c[4][AMX_ROWS][AMX_ROWS] __attribute__((aligned(64)));
    __m512 acc[AMX_ROWS];
    _Pragma("GCC unroll 16") for (int m = 0; m < M; m++) acc[m] = _mm512_setzero_ps();
    const size_t lda = (size_t)mat->n_in;
    int64_t b = 0;
    int cur = 0; /* c[2 * cur], c[2 * cur + 1]: this round's sums */
    for (; b + 1 < nb; b += 2, cur ^= 1) {
        /* the first group streams the weights from memory: ask for the
         * blocks AMX_PF_BLOCKS on, into the next tile of the range (later
         * groups find them in cache) */
        if (pf_first + b + 1 < pf_lim) {
            if (nib)
                for (size_t off = 0; off < 2 * sizeof(amx_nblock); off += 64)
                    _mm_prefetch((const char *)&nblk[b + AMX_PF_BLOCKS] + off, _MM_HINT_T0);
            else
                for (size_t off = 0; off < 2 * sizeof(amx_block); off += 64)
                    _mm_prefetch((const char *)&blk[b + AMX_PF_BLOCKS] + off, _MM_HINT_T0);
        }
        _tile_zero(0);
        _tile_zero(3);
        _tile_loadd(1, u + b * AMX_K, lda);
        _tile_loadd(2, nib ? unpack_nib(&nblk[b], qb[0], bias) : &blk[b].q[0][0], 64);
        _tile_loadd(4, u + (b + 1) * AMX_K, lda);
        _tile_loadd(5, nib ? unpack_nib(&nblk[b + 1], qb[1], bias) : &blk[b + 1].q[0][0], 64);
        _tile_dpbssd(0, 1, 2);
        _tile_dpbssd(3, 4, 5);
        _tile_stored(0, c[2 * cur], 64);
        _tile_stored(3, c[2 * cur + 1], 64);
        if (b >= 2) {
            EPILOGUE(M, c[2 * (cur ^ 1)], b - 2);
            EPILOGUE(M, c[2 * (cur ^ 1) + 1], b - 1);
        }
    }
    if (b >= 2) { /* the last full round */
        EPILOGUE(M, c[2 * (cur ^ 1)], b - 2);
        EPILOGUE(M, c[2 * (cur ^ 1) + 1], b - 1);
    }
    if (b < nb) {
        _tile_zero(0);
        _tile_loadd(1, u + b * AMX_K, lda);
        _tile_loadd(2, nib ? unpack_nib(&nblk[b], qb[0], bias) : &blk[b].q[0][0], 64);
        _tile_dpbssd(0, 1, 2);
        _tile_stored(0, c[0], 64);
        EPILOGUE(M, c[0], b);
    }
    _Pragma("GCC unroll 16") for (int m = 0; m < M; m++)
        _mm512_storeu_ps(y + (size_t)m * ldy + (size_t)t * AMX_ROWS, acc[m]);
}

/* Specialised for full groups and the Q4_1 minimum term (both known at
 * compile time keep the 16 accumulators in registers). */
TGTAMX static void group16(const amx_matrix *mat, long t, const uint8_t *u, const float *da,
                           const float *sa, long pf, bool nib, float *y, size_t ldy)
{
    if (mat->type == WEFT_TYPE_Q4_1) {
        if (nib) group(mat, t, u, da, sa, AMX_ROWS, true, pf, true, y, ldy);
        else group(mat, t, u, da, sa, AMX_ROWS, true, pf, false, y, ldy);
    } else {
        if (nib) group(mat, t, u, da, sa, AMX_ROWS, false, pf, true, y, ldy);
        else group(mat, t, u, da, sa, AMX_ROWS, false, pf, false, y, ldy);
    }
}

TGTAMX static void group_n(const amx_matrix *mat, long t, const uint8_t *u, const float *da,
                           const float *sa, int M, long pf, bool nib, float *y, size_t ldy)
{
    if (nib) group(mat, t, u, da, sa, M, mat->type == WEFT_TYPE_Q4_1, pf, true, y, ldy);
    else group(mat, t, u, da, sa, M, mat->type == WEFT_TYPE_Q4_1, pf, false, y, ldy);
}

/* One activation row over the int8 blocks, for a matrix without a compact
 * copy (a Q8_0 layer matrix; WEFT_NO_NIB=1) — the tiles' latency made one
 * row ~3x slower: the block sums with vpdpbusd straight from the tile
 * layout (lane n of row r holds weight row n's values 4r..4r+3, so one
 * broadcast dword of the activation multiplies all 16 rows at once) — the
 * same exact integers as TDPBUSD, then the same float part. Matrices with
 * a compact copy take few_rows below for 1-8 rows. */
#define SMALL_M 1
#define NIB_MAX_ROWS 16 /* the tile path reads the nibble copy up to this many rows */
#define SMALL_PF_BLOCKS 6 /* how far ahead small() prefetches the weights */
TGTAMX static void small(const amx_matrix *mat, long t, const uint8_t *u, const float *da,
                         const float *sa, int M, long pf_lim, float *y, size_t ldy)
{
    const int64_t nb = mat->nb;
    const bool q41 = mat->type == WEFT_TYPE_Q4_1;
    const amx_block *blk = &mat->blocks[t * nb];
    const long pf_first = t * nb + SMALL_PF_BLOCKS; /* block index of blk[SMALL_PF_BLOCKS] */
    const size_t lda = (size_t)mat->n_in;
    __m512 acc[SMALL_M];
    for (int m = 0; m < M; m++) acc[m] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        if (pf_first + b < pf_lim) /* on into the next tile of the range */
            for (size_t off = 0; off < sizeof(amx_block); off += 64)
                _mm_prefetch((const char *)&blk[b + SMALL_PF_BLOCKS] + off, _MM_HINT_T0);
        __m512i q[AMX_K / 4];
        for (int r = 0; r < AMX_K / 4; r++) q[r] = _mm512_load_si512(blk[b].q[r]);
        for (int m = 0; m < M; m++) {
            const uint8_t *ub = u + (size_t)m * lda + (size_t)b * AMX_K;
            __m512i isum = _mm512_setzero_si512();
            for (int r = 0; r < AMX_K / 4; r++) {
                int32_t w4;
                memcpy(&w4, ub + 4 * r, 4);
                w4 ^= (int32_t)0x80808080u; /* + 128: vpdpbusd's first operand is unsigned */
                isum = _mm512_dpbusd_epi32(isum, _mm512_set1_epi32(w4), q[r]);
            }
            acc[m] = epilogue(acc[m], isum, &blk[b], da[(size_t)m * nb + b], sa[(size_t)m * nb + b], q41);
        }
    }
    for (int m = 0; m < M; m++) _mm512_storeu_ps(y + (size_t)m * ldy + (size_t)t * AMX_ROWS, acc[m]);
}

/* WEFT_NO_NIB=1: few_rows is off, the int8 blocks serve every call (for
 * comparison; the same numbers). */
static bool nib_off_v;
static pthread_once_t nib_once = PTHREAD_ONCE_INIT;
static void nib_probe(void)
{
    const char *e = getenv("WEFT_NO_NIB");
    nib_off_v = e && *e && strcmp(e, "0") != 0;
}
static bool nib_off(void)
{
    pthread_once(&nib_once, nib_probe);
    return nib_off_v;
}

/* M = 1..FEW_MAX_ROWS activation rows (a few sequences decoding) over a
 * compact copy of the weights with vpdpbusd — the nibble copy of Q4_0/Q4_1
 * (amx_nblock) or the byte copy of Q8_0 (amx_bblock, amx_pack_bytes). The
 * weights, unpacked once per block for all M rows, are vpdpbusd's unsigned
 * operand as they are (nibbles; Q8_0's values + 128), and each row's
 * activations its signed one (a dword broadcast from memory): for Q4_1 the
 * sum is the sum of w * a at once; for Q4_0 (values = nibbles - 8) it is
 * that plus 8 x the activations' sum, for Q8_0 plus 128 x it (amx_act_fill
 * keeps is8 = 8 x the sum), taken out where the other paths take out their
 * cs. The same exact integers as the tiles, then the same float part: the
 * same numbers, from 320 (nibbles) or 576 (bytes) bytes a block, not 704
 * (the tiles' store-and-reload of every block cost more than the products
 * at a few rows). */
#define FEW_MAX_ROWS 8
TGTAMX static inline __attribute__((always_inline)) void
few_rows(const amx_matrix *mat, long t, const uint8_t *u, const float *da, const float *sa, const int32_t *is8,
         const int M, const bool bytes, const bool q41, long pf_lim, float *y, size_t ldy)
{
    const int64_t nb = mat->nb;
    const amx_nblock *blk = bytes ? NULL : &mat->nblocks[t * nb];
    const amx_bblock *bblk = bytes ? &mat->bblocks[t * nb] : NULL;
    const size_t bsize = bytes ? sizeof(amx_bblock) : sizeof(amx_nblock);
    const char *pf_base = bytes ? (const char *)bblk : (const char *)blk;
    const long pf_first = t * nb + SMALL_PF_BLOCKS;
    const size_t lda = (size_t)mat->n_in;
    const __m512i low = _mm512_set1_epi8(0x0F);
    const int corr_k = bytes ? 16 : 1; /* times is8: 128 or 8 x the activations' sum (Q4_1: none) */
    __m512 acc[FEW_MAX_ROWS];
    _Pragma("GCC unroll 8") for (int m = 0; m < M; m++) acc[m] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        if (pf_first + b < pf_lim)
            for (size_t off = 0; off < bsize; off += 64)
                _mm_prefetch(pf_base + (size_t)(b + SMALL_PF_BLOCKS) * bsize + off, _MM_HINT_T0);
        __m512i q[AMX_K / 4]; /* q[r]: values 4r..4r+3 of the 16 weight rows */
        __m512 dw, mw = _mm512_setzero_ps();
        if (bytes) {
            _Pragma("GCC unroll 8") for (int r = 0; r < AMX_K / 4; r++) q[r] = _mm512_load_si512(bblk[b].q[r]);
            dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)bblk[b].dw));
        } else {
            _Pragma("GCC unroll 4") for (int r = 0; r < AMX_K / 8; r++) {
                const __m512i raw = _mm512_load_si512(blk[b].q[r]);
                q[r] = _mm512_and_si512(raw, low);
                q[r + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
            }
            dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)blk[b].dw));
            if (q41) mw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)blk[b].mw));
        }
        /* two partial sums a row (even, odd r: exact integers, so their sum
         * is the block's), the rows interleaved: 2M short dependency chains */
        const int P = M <= 4 ? 2 : 1; /* past 4 rows the registers hold one a row */
        __m512i is[FEW_MAX_ROWS][2];
        _Pragma("GCC unroll 8") for (int m = 0; m < M; m++) is[m][0] = is[m][1] = _mm512_setzero_si512();
        _Pragma("GCC unroll 8") for (int r = 0; r < AMX_K / 4; r++)
            _Pragma("GCC unroll 8") for (int m = 0; m < M; m++) {
                int32_t a4;
                memcpy(&a4, u + (size_t)m * lda + (size_t)b * AMX_K + 4 * r, 4);
                is[m][r % P] = _mm512_dpbusd_epi32(is[m][r % P], q[r], _mm512_set1_epi32(a4));
            }
        _Pragma("GCC unroll 8") for (int m = 0; m < M; m++) {
            const __m512i isum = P == 2 ? _mm512_add_epi32(is[m][0], is[m][1]) : is[m][0];
            /* Q4_1 has nothing to take out (kinds are compile-time: no sub of 0) */
            acc[m] = q41 ? epilogue_s(acc[m], isum, dw, mw, da[(size_t)m * nb + b], sa[(size_t)m * nb + b], true)
                         : epilogue_v(acc[m], isum, _mm512_set1_epi32(corr_k * is8[(size_t)m * nb + b]), dw, mw,
                                      da[(size_t)m * nb + b], sa[(size_t)m * nb + b], false);
        }
    }
    _Pragma("GCC unroll 8") for (int m = 0; m < M; m++)
        _mm512_storeu_ps(y + (size_t)m * ldy + (size_t)t * AMX_ROWS, acc[m]);
}

/* few_rows for M (1..FEW_MAX_ROWS) rows known at run time: the kernel takes
 * M and the weights' kind as compile-time constants. */
TGTAMX static void few_rows_m(const amx_matrix *mat, long t, const uint8_t *u, const float *da, const float *sa,
                              const int32_t *is8, int M, long pf_lim, float *y, size_t ldy)
{
#define FEW_M(M_)                                                                                  \
    do {                                                                                           \
        if (mat->bblocks)                                                                          \
            few_rows(mat, t, u, da, sa, is8, M_, true, false, pf_lim, y, ldy);                     \
        else if (mat->type == WEFT_TYPE_Q4_1)                                                      \
            few_rows(mat, t, u, da, sa, is8, M_, false, true, pf_lim, y, ldy);                     \
        else                                                                                       \
            few_rows(mat, t, u, da, sa, is8, M_, false, false, pf_lim, y, ldy);                    \
    } while (0)
    switch (M) {
    case 1: FEW_M(1); break;
    case 2: FEW_M(2); break;
    case 3: FEW_M(3); break;
    case 4: FEW_M(4); break;
    case 5: FEW_M(5); break;
    case 6: FEW_M(6); break;
    case 7: FEW_M(7); break;
    default: FEW_M(8); break;
    }
#undef FEW_M
}

/* n rows (<= FEW_MAX_ROWS) over tiles tlo..thi-1. Past 8 rows the tiles
 * are faster: 16 rows as two groups of 8 here took 8.0 ms a step of the
 * layers' matrices (bench_amx's sweep) against their 7.1-7.6. */
TGTAMX static void few_rows_n(const amx_matrix *mat, long tlo, long thi, const act_view *v, int n, float *y,
                              size_t ldy)
{
    const long lim = thi * (long)mat->nb;
    for (long t = tlo; t < thi; t++) few_rows_m(mat, t, v->u, v->da, v->sa, v->is8, n, lim, y, ldy);
}

/* Any number of rows over tiles tlo..thi-1, 8 rows at a time, each tile's
 * compact blocks read by every group while they are in L1/L2 (from memory
 * once a call). The same numbers for a row as few_rows_n gives it alone:
 * where there are no tiles (amx_compact_only()) this serves every call. */
TGTAMX static void few_rows_groups(const amx_matrix *mat, long tlo, long thi, const act_view *v, int n,
                                   float *y, size_t ldy)
{
    const long lim = thi * (long)mat->nb;
    const size_t nb = (size_t)mat->nb, lda = (size_t)mat->n_in;
    for (long t = tlo; t < thi; t++)
        for (int g = 0; g < n; g += FEW_MAX_ROWS) /* the first group brings the tile in */
            few_rows_m(mat, t, v->u + (size_t)g * lda, v->da + (size_t)g * nb, v->sa + (size_t)g * nb,
                       v->is8 + (size_t)g * nb, n - g < FEW_MAX_ROWS ? n - g : FEW_MAX_ROWS, g == 0 ? lim : 0,
                       y + (size_t)g * ldy, ldy);
}

TGTAMX void amx_matmul_rows(const amx_matrix *m, const void *act, int n_act, int first, int n_tok,
                            float *y, size_t ldy, long tlo, long thi)
{
    if (tlo >= thi || n_tok <= 0) return;
    act_view v = act_at(act, m->n_in, n_act);
    const size_t nb = (size_t)m->nb;
    v.u += (size_t)first * (size_t)m->n_in;
    v.da += (size_t)first * nb;
    v.sa += (size_t)first * nb;
    v.is8 += (size_t)first * nb;
    if (n_tok <= FEW_MAX_ROWS && (m->nblocks || m->bblocks) && !nib_off()) {
        few_rows_n(m, tlo, thi, &v, n_tok, y, ldy);
        return;
    }
    if (!m->blocks) { /* amx_compact_only(): no tiles, groups of 8 rows */
        few_rows_groups(m, tlo, thi, &v, n_tok, y, ldy);
        return;
    }
    if (n_tok <= SMALL_M) {
        for (long t = tlo; t < thi; t++) small(m, t, v.u, v.da, v.sa, n_tok, thi * (long)nb, y, ldy);
        return;
    }
    const int full = n_tok / AMX_ROWS, rest = n_tok % AMX_ROWS;
    const long lim = thi * (long)nb; /* prefetch no further than the range's last block */
    /* one group of rows: reading the weights bounds it, so the nibble copy
     * (unpacked per block) is faster; with more groups each would unpack */
    const bool nib = m->nblocks && n_tok <= NIB_MAX_ROWS && !nib_off();
    if (full) {
        config_rows(AMX_ROWS);
        for (long t = tlo; t < thi; t++)
            for (int g = 0; g < full; g++) {
                const size_t a0 = (size_t)g * AMX_ROWS;
                group16(m, t, v.u + a0 * (size_t)m->n_in, v.da + a0 * nb, v.sa + a0 * nb, g == 0 ? lim : 0, nib,
                        y + a0 * ldy, ldy);
            }
    }
    if (rest) {
        config_rows(rest);
        const size_t a0 = (size_t)full * AMX_ROWS;
        for (long t = tlo; t < thi; t++)
            group_n(m, t, v.u + a0 * (size_t)m->n_in, v.da + a0 * nb, v.sa + a0 * nb, rest, full ? 0 : lim, nib,
                    y + a0 * ldy, ldy);
    }
    _tile_release();
}

void amx_matmul(const amx_matrix *m, const void *act, int n_tok, float *y, size_t ldy, long tlo,
                long thi)
{
    amx_matmul_rows(m, act, n_tok, 0, n_tok, y, ldy, tlo, thi);
}

/* ---- prompt rows on AMX-BF16 tiles ---------------------------------------- */

#define TGTBF16 __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

size_t amx_bf16_bytes(const amx_matrix *m) { return (size_t)m->nt * (size_t)m->nb * AMX_ROWS * AMX_K * 2; }
bool amx_has_bf16(const amx_matrix *m) { return m && m->wbf; }


/* A block (16 weight rows x 32 values) as a B tile of TDPBF16PS: row i holds
 * values 2i and 2i + 1 of each weight row n, dequantized (dw * q + mw in
 * f32, as the int8 path's float part has them) and rounded to bf16. q[r]
 * holds, in 32-bit lane n, values 4r..4r+3 of weight row n. */
TGTBF16 static inline void block_bf16(const amx_block *blk, uint16_t out[AMX_ROWS][AMX_K])
{
    const __m512 dw = _mm512_load_ps(blk->dw), mw = _mm512_load_ps(blk->mw);
    for (int r = 0; r < AMX_K / 4; r++) {
        const __m512i q = _mm512_load_si512(blk->q[r]);
        __m512 f[4];
        for (int j = 0; j < 4; j++) /* value 4r + j of every row: byte j of its lane, sign-extended */
            f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(q, 24 - 8 * j), 24)), dw, mw);
        bf16_pair_row(f[0], f[1], out[2 * r]);
        bf16_pair_row(f[2], f[3], out[2 * r + 1]);
    }
}

TGTBF16 static void pack_bf16(amx_matrix *m)
{
    for (long i = 0; i < m->nt * m->nb; i++)
        block_bf16(&m->blocks[i], (uint16_t(*)[AMX_K])(m->wbf + (size_t)i * AMX_ROWS * AMX_K));
}

int amx_pack_bf16(amx_matrix *m)
{
    if (!amx_bf16_available()) return -1;
    if (m->wbf) return 0;
    if (!(m->wbf = copy_mem(m, amx_bf16_bytes(m), &m->wbf_raw))) return -1;
    pack_bf16(m);
    return 0;
}

/* Row a of the tile layout: group a / 16, block b, row a % 16 of that tile. */
static uint16_t *bf16_act_at(uint16_t *x, int64_t n_in, int a, int64_t b)
{
    const int64_t nb = n_in / AMX_K;
    return x + (((size_t)(a / AMX_ROWS) * (size_t)nb + (size_t)b) * AMX_ROWS + (size_t)(a % AMX_ROWS)) * AMX_K;
}

TGTBF16 void amx_to_bf16_row(uint16_t *x, const float *f, int64_t n_in, int a)
{
    for (int64_t b = 0; b < n_in / AMX_K; b++, f += AMX_K)
        _mm512_storeu_si512(bf16_act_at(x, n_in, a, b),
                           (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(f + 16), _mm512_loadu_ps(f)));
}

void amx_bf16_act_pad(uint16_t *x, int64_t n_in, int n_tok)
{
    for (int a = n_tok; a % AMX_ROWS; a++)
        for (int64_t b = 0; b < n_in / AMX_K; b++) memset(bf16_act_at(x, n_in, a, b), 0, AMX_K * sizeof *x);
}

/* C tile CT (group G x weight tile T) into y's rows: straight when the
 * group's 16 rows are consecutive rows of y, else through cbuf. */
#define BF16_STORE(CT, G, T)                                                                       \
    do {                                                                                           \
        const int a0_ = (G) * AMX_ROWS;                                                            \
        const int n_ = n_tok - a0_ < AMX_ROWS ? n_tok - a0_ : AMX_ROWS;                            \
        const size_t r0_ = rows ? (size_t)rows[a0_] : (size_t)a0_;                                 \
        if (n_ == AMX_ROWS && (!rows || rows[a0_ + AMX_ROWS - 1] == rows[a0_] + AMX_ROWS - 1)) {   \
            _tile_stored(CT, y + r0_ * ldy + (size_t)(T) * AMX_ROWS, ldy * sizeof(float));         \
        } else {                                                                                   \
            _tile_stored(CT, cbuf, sizeof cbuf[0]);                                                \
            for (int r_ = 0; r_ < n_; r_++)                                                        \
                memcpy(y + (rows ? (size_t)rows[a0_ + r_] : (size_t)(a0_ + r_)) * ldy +            \
                           (size_t)(T) * AMX_ROWS,                                                 \
                       cbuf[r_], sizeof cbuf[0]);                                                  \
        }                                                                                          \
    } while (0)

/* Two groups of activation rows (g, g + 1) by two weight tiles (t, t + 1)
 * per pass, C in tmm0-3: each A and B tile loaded serves two products. The
 * activations are in the tiles' own layout (amx_to_bf16_row): a tile load
 * reads 1 KB in a row, not 16 rows of the activation matrix 1-3 KB apart
 * (perf put many of the kernel's samples next to those loads; the measured
 * gain in the engine was small, near the machine's noise). The activations of the two groups
 * (2 x 16 rows) stay in L1 or L2 while the range's weight tiles go past
 * them. */
TGTBF16 void amx_matmul_bf16(const amx_matrix *m, const uint16_t *x, int n_tok, const int32_t *rows,
                             float *y, size_t ldy, long tlo, long thi)
{
    if (tlo >= thi || n_tok <= 0) return;
    WEFT_ASSERT(m->wbf);
    const int64_t nb = m->nb;
    const size_t tile_elems = (size_t)nb * AMX_ROWS * AMX_K;
    float cbuf[AMX_ROWS][AMX_ROWS] __attribute__((aligned(64)));
    uint8_t trows[8];
    uint16_t colsb[8];
    for (int i = 0; i < 8; i++) {
        trows[i] = AMX_ROWS;
        colsb[i] = 64;
    }
    amx_tile_config(trows, colsb);
    const int n_groups = (n_tok + AMX_ROWS - 1) / AMX_ROWS;
    /* weight tiles in chunks of about 256 KB, which stay in L2 while every
     * group pair goes past them: the weights come from memory once a call */
    long chunk = (long)((256 << 10) / (tile_elems * 2)) & ~1L;
    if (chunk < 2) chunk = 2;
    for (long tc = tlo; tc < thi; tc += chunk) {
    const long tend = tc + chunk < thi ? tc + chunk : thi;
    for (int g = 0; g < n_groups; g += 2) {
        const bool g2 = g + 1 < n_groups;
        const uint16_t *a0 = x + (size_t)g * tile_elems, *a1 = a0 + tile_elems;
        for (long t = tc; t < tend; t += 2) {
            const bool t2 = t + 1 < tend;
            const uint16_t *w0 = m->wbf + (size_t)t * tile_elems, *w1 = w0 + tile_elems;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t b = 0; b < nb; b++) {
                const size_t wo = (size_t)b * AMX_ROWS * AMX_K;
                if (g == 0 && b + 4 < nb) /* the first pass brings the chunk in from memory */
                    for (size_t off = 0; off < AMX_ROWS * AMX_K; off += 32) {
                        _mm_prefetch((const char *)(w0 + wo + 4 * AMX_ROWS * AMX_K + off), _MM_HINT_T0);
                        if (t2) _mm_prefetch((const char *)(w1 + wo + 4 * AMX_ROWS * AMX_K + off), _MM_HINT_T0);
                    }
                _tile_loadd(4, a0 + wo, AMX_K * 2);
                _tile_loadd(6, w0 + wo, AMX_K * 2);
                _tile_dpbf16ps(0, 4, 6);
                if (t2) {
                    _tile_loadd(7, w1 + wo, AMX_K * 2);
                    _tile_dpbf16ps(1, 4, 7);
                }
                if (g2) {
                    _tile_loadd(5, a1 + wo, AMX_K * 2);
                    _tile_dpbf16ps(2, 5, 6);
                    if (t2) _tile_dpbf16ps(3, 5, 7);
                }
            }
            BF16_STORE(0, g, t);
            if (t2) BF16_STORE(1, g, t + 1);
            if (g2) {
                BF16_STORE(2, g + 1, t);
                if (t2) BF16_STORE(3, g + 1, t + 1);
            }
        }
    }
    }
    _tile_release();
}
#undef BF16_STORE
#else
size_t amx_bf16_bytes(const amx_matrix *m) { (void)m; return 0; }
bool amx_has_bf16(const amx_matrix *m) { (void)m; return false; }
int amx_pack_bf16(amx_matrix *m) { (void)m; return -1; }
void amx_to_bf16_row(uint16_t *x, const float *f, int64_t n_in, int a)
{
    (void)x; (void)f; (void)n_in; (void)a;
    WEFT_ASSERT(!"amx_to_bf16_row without AMX-BF16");
}
void amx_bf16_act_pad(uint16_t *x, int64_t n_in, int n_tok) { (void)x; (void)n_in; (void)n_tok; }
void amx_matmul_bf16(const amx_matrix *m, const uint16_t *x, int n_tok, const int32_t *rows, float *y,
                     size_t ldy, long tlo, long thi)
{
    (void)m, (void)x, (void)rows, (void)n_tok, (void)y, (void)ldy, (void)tlo, (void)thi;
    WEFT_ASSERT(!"amx_matmul_bf16 without AMX-BF16");
}
void amx_matmul_rows(const amx_matrix *m, const void *act, int n_act, int first, int n_tok,
                     float *y, size_t ldy, long tlo, long thi)
{
    (void)m, (void)act, (void)n_act, (void)first, (void)n_tok, (void)y, (void)ldy, (void)tlo, (void)thi;
    WEFT_ASSERT(!"amx_matmul without AMX");
}
void amx_matmul(const amx_matrix *m, const void *act, int n_tok, float *y, size_t ldy, long tlo,
                long thi)
{
    amx_matmul_rows(m, act, n_tok, 0, n_tok, y, ldy, tlo, thi);
}
void amx_tile_config(const uint8_t rows[8], const uint16_t colsb[8])
{
    (void)rows, (void)colsb;
    WEFT_ASSERT(!"amx_tile_config without AMX");
}
#endif

/* bench_amx.c - speed of the AMX matrix product (kernels/cpu/amx.c), one thread.
 *
 *   cmake --build build --target bench_amx && build/bench_amx
 *
 * For the three weight shapes of SmolLM2-135M's layers (Q4_1, random values)
 * and 1, 2, 16, 64 and 256 activation rows, prints the best of 20 rounds:
 * ms per call, multiply-adds per second, and clock cycles (rdtsc) per
 * 16 x 16 x 32 block product — the unit the kernel works in. The weights of
 * one matrix stay in L2 after the first round, so this is the kernel's own
 * speed; the forward pass adds memory traffic on top. Where the CPU has
 * AMX-BF16, the same product on the bf16 tiles that prompt rows take
 * (amx_matmul_bf16) follows on each line, with its speed-up over int8; and
 * on every line the same product through quant.c's vpdpbusd kernels
 * (quant_vec_dot_tile, bitwise llama.cpp's, what a matrix without an amx.h
 * copy runs). Then a sweep like one forward step: 30 layers of the seven matrices
 * (about 150 MB, more than the caches hold), each multiplied by M rows in
 * turn, so the weights come from memory as in the engine — on one thread,
 * and on two with each taking half of every matrix's tiles; then the same
 * for prompt rows on the bf16 copies (amx_matmul_bf16), 64 and 256 rows.
 * First, where the CPU has AMX-BF16, the tiles' own peak (tile_peak_gmacs;
 * `bench_amx --peak` prints only that, as a number: bench/workflows.py
 * records it before and after its runs, to tell a slow spell of the machine);
 * where it has AVX512-VNNI, vpdpbusd's own peak, alone and with the float
 * step's FMAs mixed in (vnni_peak_gmacs): what bounds the 1-8 row kernel.
 * Without AMX but with AVX512-VNNI (amx_compact_only) amx_matmul runs the
 * compact copies' kernel and everything but the bf16 parts runs; with
 * neither it prints "AMX not available" and exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include "kernels/cpu/amx.h"
#include "kernels/cpu/pool.h"
#include "kernels/quant.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

/* the sweep on the engine's thread pool (two threads), each half of every
 * matrix's tiles, with the pool's spinning barrier between the products as
 * in the forward pass (a sleeping pthread barrier costs more than a
 * one-row product) */
typedef struct {
    amx_matrix *(*mats)[7];
    void **act;
    float *y;
    int M, layers;
    const int64_t (*shape)[2];
    bool bf16;
} sweep_arg;

static void sweep_thread(void *p, const pool_thread *t)
{
    sweep_arg *a = p;
    for (int l = 0; l < a->layers; l++)
        for (int k = 0; k < 7; k++) {
            long lo, hi;
            pool_range(t, amx_n_tiles(a->mats[l][k]), &lo, &hi);
            if (a->bf16) /* act[] holds bf16 rows: the prompt path */
                amx_matmul_bf16(a->mats[l][k], a->act[k == 6], a->M, NULL, a->y, (size_t)a->shape[k][1], lo,
                                hi);
            else
                amx_matmul(a->mats[l][k], a->act[k == 6], a->M, a->y, (size_t)a->shape[k][1], lo, hi);
            pool_barrier(t);
        }
}

/* The 2-thread sweep once (seconds). */
static double sweep2(pool *pl, amx_matrix *(*mats)[7], void **act, float *y, int M, bool bf16,
                     const int64_t (*shape)[2])
{
    sweep_arg a = {mats, act, y, M, 30, shape, bf16};
    const double t0 = now();
    pool_run(pl, sweep_thread, &a);
    return now() - t0;
}

/* The tiles' own rate: TDPBF16PS back to back on four C tiles, no loads,
 * for about 0.2 s — what no kernel can pass. A machine shared with other
 * tenants can show half of its quiet rate here (seen: 450-630 against 994
 * GMAC/s a core on the same VM, the same day): compare kernels
 * only against timings taken in the same run. */
__attribute__((target("amx-tile,amx-bf16"))) static double tile_peak_gmacs(void)
{
    static const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 16, 16};
    static const uint16_t colsb[8] = {64, 64, 64, 64, 64, 64, 64, 64};
    static uint16_t zero[16 * 32] __attribute__((aligned(64)));
    amx_tile_config(rows, colsb);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, zero, 64);
    _tile_loadd(5, zero, 64);
    _tile_loadd(6, zero, 64);
    _tile_loadd(7, zero, 64);
    long n = 0;
    const double t0 = now();
    double t = t0;
    while (t - t0 < 0.2) {
        for (int i = 0; i < 4096; i++) {
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        n += 4 * 4096;
        t = now();
    }
    _tile_release();
    return (double)n * 16 * 16 * 32 / (t - t0) * 1e-9;
}

/* vpdpbusd's own peak on this core: 8 independent accumulators, back to
 * back, no loads (GMAC/s, one thread, 0.2 s), with `fmas` independent f32
 * FMA chains issued with every 8 — the 1-8 row kernel's float step per
 * 16-lane block row is about 3 FP ops (a mul and two FMAs) for its 8
 * vpdpbusd. Where both go to the same 512-bit pipes (AMD Zen 4: one
 * 512-bit op of either kind a cycle) the FMAs take the vpdpbusd's cycles,
 * so 3 of them cap the kernel at 8/11 of the first figure. */
#define VNNI_R8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double vnni_peak_gmacs(int fmas)
{
    const __m512i b = _mm512_set1_epi8(1), c = _mm512_set1_epi8(2);
    const __m512 x = _mm512_set1_ps(1.0f);
#define VNNI_ACC(i) __m512i a##i = _mm512_set1_epi32(i);
    VNNI_R8(VNNI_ACC)
    __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0;
    long n = 0;
    const double t0 = now();
    double t = t0;
    while (t - t0 < 0.2) {
        for (int i = 0; i < 4096; i++) {
#define VNNI_DP(i) a##i = _mm512_dpbusd_epi32(a##i, b, c);
            VNNI_R8(VNNI_DP)
            if (fmas > 0) f0 = _mm512_fmadd_ps(f0, x, x);
            if (fmas > 1) f1 = _mm512_fmadd_ps(f1, x, x);
            if (fmas > 2) f2 = _mm512_fmadd_ps(f2, x, x);
            __asm__ volatile("" : "+v"(f0), "+v"(f1), "+v"(f2)); /* kept, not hoisted */
        }
        n += 8 * 4096;
        t = now();
    }
    volatile int sink = 0;
#define VNNI_SINK(i) sink += _mm512_reduce_add_epi32(a##i);
    VNNI_R8(VNNI_SINK)
    volatile float fsink = _mm512_reduce_add_ps(_mm512_add_ps(f0, _mm512_add_ps(f1, f2)));
    (void)sink, (void)fsink;
    return (double)n * 64 / (t - t0) * 1e-9;
}

int main(int argc, char **argv)
{
    const bool peak_only = argc == 2 && strcmp(argv[1], "--peak") == 0;
    if (argc > 1 && !peak_only) {
        printf("usage: bench_amx [--peak]\n(times amx_matmul on SmolLM2-135M shapes; --peak: only the\n"
               "AMX-BF16 tiles' own rate, GMAC/s on one thread, or 0 without AMX-BF16)\n");
        return 0;
    }
    if (peak_only) {
        printf("%.0f\n", amx_bf16_available() ? tile_peak_gmacs() : 0.0);
        return 0;
    }
    if (!amx_available() && !amx_compact_only()) {
        printf("AMX not available (nor AVX512-VNNI for the compact copies)\n");
        return 0;
    }
    if (!amx_available())
        printf("no AMX: amx_matmul runs the compact copies' vpdpbusd kernel, 8 rows at a time "
               "(amx_compact_only)\n");
    if (amx_bf16_available())
        printf("AMX-BF16 tile peak (TDPBF16PS back to back, no loads, one thread): %.0f GMAC/s\n",
               tile_peak_gmacs());
    if (__builtin_cpu_supports("avx512vnni"))
        printf("vpdpbusd peak (zmm, back to back, no loads, one thread): %.0f GMAC/s; with 3 f32 FMAs "
               "issued with every 8 (the 1-8 row kernel's float step): %.0f GMAC/s\n",
               vnni_peak_gmacs(0), vnni_peak_gmacs(3));
    static const struct {
        const char *name;
        int64_t n_in, n_out;
    } shapes[] = {{"attn q/o 576x576", 576, 576}, {"ffn gate/up 576->1536", 576, 1536},
                  {"ffn down 1536->576", 1536, 576}};
    static const int ms[] = {1, 2, 4, 8, 16, 64, 256};
    unsigned seed = 1;
    printf("%-24s %5s %10s %10s %12s  %s\n", "shape", "rows", "ms/call", "GMAC/s", "cycles/block",
           "quant.c's kernels (llama.cpp's numbers), same product");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t n_in = shapes[si].n_in, n_out = shapes[si].n_out;
        float *f = malloc((size_t)(n_in > n_out ? n_in : n_out) * 4);
        const size_t rb = quant_row_size(WEFT_TYPE_Q4_1, n_in);
        char *w = malloc(rb * (size_t)n_out);
        for (int64_t r = 0; r < n_out; r++) {
            for (int64_t i = 0; i < n_in; i++) f[i] = frand(&seed);
            quant_quantize_row(WEFT_TYPE_Q4_1, f, w + (size_t)r * rb, n_in);
        }
        amx_matrix *m = amx_pack(WEFT_TYPE_Q4_1, w, rb, n_in, n_out);
        const int at = amx_act_type(m);
        const size_t ab = quant_row_size((weft_type)at, n_in);
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            const int M = ms[mi];
            void *act = aligned_alloc(64, (amx_act_size(n_in, M) + 63) & ~(size_t)63);
            char *q = malloc(ab * (size_t)M); /* every row, for quant.c's kernels too */
            for (int a = 0; a < M; a++) {
                for (int64_t i = 0; i < n_in; i++) f[i] = frand(&seed);
                quant_quantize_row((weft_type)at, f, q + (size_t)a * ab, n_in);
                amx_act_fill(act, n_in, M, a, at, q + (size_t)a * ab);
            }
            float *y = malloc((size_t)M * (size_t)n_out * 4);
            double best = 1e9, cyc = 1e18;
            for (int round = 0; round < 20; round++) {
                const double t0 = now();
                const unsigned long long c0 = __rdtsc();
                amx_matmul(m, act, M, y, (size_t)n_out, 0, amx_n_tiles(m));
                const double c = (double)(__rdtsc() - c0), t = now() - t0;
                if (t < best) best = t;
                if (c < cyc) cyc = c;
            }
            const double macs = (double)M * (double)n_in * (double)n_out;
            const double blocks = (double)((M + 15) / 16) * (double)(n_out / 16) * (double)(n_in / 32);
            printf("%-24s %5d %10.4f %10.1f %12.1f", shapes[si].name, M, best * 1e3,
                   macs / best * 1e-9, cyc / blocks);
            /* quant.c: 16 weight rows by up to 64 activation rows, as ops.c's
             * matmul_tiles calls it */
            double qbest = 1e9;
            for (int round = 0; round < 20; round++) {
                const double t0 = now();
                for (int64_t r0 = 0; r0 < n_out; r0 += 16)
                    for (int a0 = 0; a0 < M; a0 += 64)
                        quant_vec_dot_tile(WEFT_TYPE_Q4_1, n_in, w + (size_t)r0 * rb, rb, 16, q + (size_t)a0 * ab, ab,
                                           M - a0 < 64 ? M - a0 : 64, y + (size_t)a0 * (size_t)n_out + (size_t)r0,
                                           (size_t)n_out);
                const double t = now() - t0;
                if (t < qbest) qbest = t;
            }
            printf("  %9.4f ms %8.1f GMAC/s", qbest * 1e3, macs / qbest * 1e-9);
            if (amx_bf16_available()) { /* the same product on bf16 tiles (prompt rows) */
                uint16_t *xb = aligned_alloc(64, (amx_bf16_act_size(n_in, M) + 63) & ~(size_t)63);
                amx_pack_bf16(m);
                for (int a = 0; a < M; a++) {
                    for (int64_t i = 0; i < n_in; i++) f[i] = frand(&seed);
                    amx_to_bf16_row(xb, f, n_in, a);
                }
                amx_bf16_act_pad(xb, n_in, M);
                double bbest = 1e9;
                for (int round = 0; round < 20; round++) {
                    const double t0 = now();
                    amx_matmul_bf16(m, xb, M, NULL, y, (size_t)n_out, 0, amx_n_tiles(m));
                    const double t = now() - t0;
                    if (t < bbest) bbest = t;
                }
                printf("   bf16 %9.4f ms %8.1f GMAC/s  %5.2fx", bbest * 1e3, macs / bbest * 1e-9, best / bbest);
                free(xb);
            }
            printf("\n");
            free(y);

            free(q);
            free(act);
        }
        amx_free(m);
        free(w);
        free(f);
    }
    /* the sweep */
    enum { LAYERS = 30 };
    static const int64_t mshape[7][2] = {{576, 576}, {576, 192}, {576, 192}, {576, 576},
                                         {576, 1536}, {576, 1536}, {1536, 576}};
    amx_matrix *mats[LAYERS][7];
    double macs_step = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int k = 0; k < 7; k++) {
            const int64_t n_in = mshape[k][0], n_out = mshape[k][1];
            const size_t rb = quant_row_size(WEFT_TYPE_Q4_1, n_in);
            char *w = malloc(rb * (size_t)n_out);
            float *f = malloc((size_t)n_in * 4);
            for (int64_t r = 0; r < n_out; r++) {
                for (int64_t i = 0; i < n_in; i++) f[i] = frand(&seed);
                quant_quantize_row(WEFT_TYPE_Q4_1, f, w + (size_t)r * rb, n_in);
            }
            mats[l][k] = amx_pack(WEFT_TYPE_Q4_1, w, rb, n_in, n_out);
            macs_step += (double)n_in * (double)n_out;
            free(w);
            free(f);
        }
    pool *pl = pool_create(2);
    if (!pl) {
        fprintf(stderr, "bench_amx: cannot start the thread pool\n");
        return 1;
    }
    printf("\nsweep: %d layers x 7 matrices (weights from memory; 2 threads: the engine's pool)\n"
           "%5s %10s %10s %12s %10s\n",
           LAYERS, "rows", "ms/step", "GMAC/s", "2 threads ms", "GMAC/s");
    static const int sweep_m[] = {1, 2, 4, 8, 16, 32, 64, 512};
    for (size_t mi = 0; mi < sizeof sweep_m / sizeof sweep_m[0]; mi++) {
        const int M = sweep_m[mi];
        void *act[2];
        float *y = malloc((size_t)M * 1536 * 4);
        for (int k = 0; k < 2; k++) {
            const int64_t n_in = k ? 1536 : 576;
            act[k] = aligned_alloc(64, (amx_act_size(n_in, M) + 63) & ~(size_t)63);
            const int at = amx_act_type(mats[0][k ? 6 : 0]);
            float *f = malloc((size_t)n_in * 4);
            char *q = malloc(quant_row_size((weft_type)at, n_in));
            for (int a = 0; a < M; a++) {
                for (int64_t i = 0; i < n_in; i++) f[i] = frand(&seed);
                quant_quantize_row((weft_type)at, f, q, n_in);
                amx_act_fill(act[k], n_in, M, a, at, q);
            }
            free(q);
            free(f);
        }
        double best = 1e9;
        for (int round = 0; round < 3; round++) {
            const double t0 = now();
            for (int l = 0; l < LAYERS; l++)
                for (int k = 0; k < 7; k++)
                    amx_matmul(mats[l][k], act[k == 6], M, y, (size_t)mshape[k][1], 0,
                               amx_n_tiles(mats[l][k]));
            const double t = now() - t0;
            if (t < best) best = t;
        }
        double best2 = 1e9;
        for (int round = 0; round < 3; round++) {
            const double t = sweep2(pl, mats, act, y, M, false, mshape);
            if (t < best2) best2 = t;
        }
        printf("%5d %10.3f %10.1f %12.3f %10.1f\n", M, best * 1e3, macs_step * M / best * 1e-9, best2 * 1e3,
               macs_step * M / best2 * 1e-9);
        free(act[0]);
        free(act[1]);
        free(y);
    }
    /* prompt rows: the bf16 copies, 256 rows a step as the engine's chunks */
    bool have_bf16 = true;
    for (int l = 0; l < LAYERS; l++)
        for (int k = 0; k < 7; k++) have_bf16 = have_bf16 && amx_pack_bf16(mats[l][k]) == 0;
    if (have_bf16) {
        printf("\nbf16 sweep (prompt rows, weights from memory)\n%5s %12s %10s %12s %10s\n", "rows", "1 thread ms",
               "GMAC/s", "2 threads ms", "GMAC/s");
        static const int bf_m[] = {64, 256};
        for (size_t mi = 0; mi < sizeof bf_m / sizeof bf_m[0]; mi++) {
            const int M = bf_m[mi];
            void *act[2];
            float *y = malloc((size_t)M * 1536 * 4);
            for (int k = 0; k < 2; k++) {
                const int64_t n_in = k ? 1536 : 576;
                uint16_t *x = aligned_alloc(64, ((size_t)M * n_in * 2 + 63) & ~(size_t)63);
                for (size_t i = 0; i < (size_t)M * n_in; i++) x[i] = 0x3f80 ^ (uint16_t)(i * 2654435761u >> 20 & 0x7f);
                act[k] = x;
            }
            double best1 = 1e9, best2 = 1e9;
            for (int round = 0; round < 3; round++) {
                const double t0 = now();
                for (int l = 0; l < LAYERS; l++)
                    for (int k = 0; k < 7; k++)
                        amx_matmul_bf16(mats[l][k], act[k == 6], M, NULL, y, (size_t)mshape[k][1], 0,
                                        amx_n_tiles(mats[l][k]));
                const double t1 = now() - t0;
                if (t1 < best1) best1 = t1;
                const double t = sweep2(pl, mats, act, y, M, true, mshape);
                if (t < best2) best2 = t;
            }
            printf("%5d %12.3f %10.1f %12.3f %10.1f\n", M, best1 * 1e3, macs_step * M / best1 * 1e-9, best2 * 1e3,
                   macs_step * M / best2 * 1e-9);
            free(act[0]);
            free(act[1]);
            free(y);
        }
    }
    for (int l = 0; l < LAYERS; l++)
        for (int k = 0; k < 7; k++) amx_free(mats[l][k]);
    pool_destroy(pl);
    return 0;
}

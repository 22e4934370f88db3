/* The CUDA backend against the CPU backend (its reference): every op of the
 * table on the same random data, in the llm.c way — run both, compare with a
 * tolerance that says how far the two may drift apart and why.
 * Skipped (77) when built without CUDA or when no GPU can be used. */
#include <stdint.h>
#include <stdio.h>

#include "kernels/backend.h"
#include "weft/common.h"

#ifndef WEFT_USE_CUDA

int main(void)
{
    printf("skipped: built without CUDA\n");
    return 77;
}

#else

#include "test.h"
#include "test_rand.h"

static weft_backend cpu, gpu;

/* A device copy of `bytes` of host memory; NULL (with the reason printed) on failure. */
static void *to_gpu(const void *host, size_t bytes)
{
    void *d = NULL;
    if (gpu.alloc(gpu.ctx, &d, bytes) != 0) {
        fprintf(stderr, "  gpu alloc: %s\n", weft_last_error());
        return NULL;
    }
    if (gpu.upload(gpu.ctx, d, host, bytes) != 0) {
        fprintf(stderr, "  gpu upload: %s\n", weft_last_error());
        gpu.free(gpu.ctx, d);
        return NULL;
    }
    return d;
}

/* Downloads n floats after waiting for the queued ops; 0 on success. */
static int from_gpu(float *host, const void *dev, int64_t n)
{
    if (gpu.sync(gpu.ctx) != 0 || gpu.download(gpu.ctx, host, dev, (size_t)n * sizeof(float)) != 0) {
        fprintf(stderr, "  gpu: %s\n", weft_last_error());
        return -1;
    }
    return 0;
}

/* Largest |a - b| / (abs_tol + rel_tol * |b|); the arrays agree when it is <= 1. */
static double worst_ratio(const float *a, const float *b, int64_t n, double abs_tol,
                          double rel_tol, int64_t *at)
{
    double worst = 0;
    *at = 0;
    for (int64_t i = 0; i < n; i++) {
        const double r = fabs((double)a[i] - b[i]) / (abs_tol + rel_tol * fabs((double)b[i]));
        if (!(r <= worst)) { /* NaN counts as worst */
            worst = isnan(r) ? INFINITY : r;
            *at = i;
        }
    }
    return worst;
}

#define ASSERT_CLOSE(gpu_v, cpu_v, n, abs_tol, rel_tol)                                    \
    do {                                                                                  \
        int64_t at_;                                                                      \
        const double w_ = worst_ratio(gpu_v, cpu_v, n, abs_tol, rel_tol, &at_);            \
        if (!(w_ <= 1.0))                                                                 \
            TEST_FAIL_("%s vs %s: [%lld] %.9g vs %.9g (abs %g, rel %g)", #gpu_v, #cpu_v,   \
                       (long long)at_, (double)(gpu_v)[at_], (double)(cpu_v)[at_],         \
                       (double)(abs_tol), (double)(rel_tol));                             \
    } while (0)

/* ---- elementwise ops ------------------------------------------------------ */

/* Both sum x² in double and compute the scale in float the same way, so only
 * the order of the double sum differs. */
static void check_rmsnorm(int rows, int dim)
{
    float *x = rand_vec((int64_t)rows * dim, 4.0f), *w = rand_vec(dim, 1.0f);
    float *yc = malloc(sizeof(float) * rows * dim), *yg = malloc(sizeof(float) * rows * dim);
    float *dx = to_gpu(x, sizeof(float) * rows * dim), *dw = to_gpu(w, sizeof(float) * dim);
    float *dy = to_gpu(x, sizeof(float) * rows * dim);
    ASSERT(dx && dw && dy);
    ASSERT_EQ_INT(cpu.rmsnorm(cpu.ctx, yc, x, w, rows, dim, 1e-6f), 0);
    ASSERT_EQ_INT(gpu.rmsnorm(gpu.ctx, dy, dx, dw, rows, dim, 1e-6f), 0);
    ASSERT_EQ_INT(from_gpu(yg, dy, (int64_t)rows * dim), 0);
    ASSERT_CLOSE(yg, yc, (int64_t)rows * dim, 1e-6, 1e-6);
    /* In place. */
    ASSERT_EQ_INT(gpu.rmsnorm(gpu.ctx, dx, dx, dw, rows, dim, 1e-6f), 0);
    ASSERT_EQ_INT(from_gpu(yg, dx, (int64_t)rows * dim), 0);
    ASSERT_CLOSE(yg, yc, (int64_t)rows * dim, 1e-6, 1e-6);
    gpu.free(gpu.ctx, dx);
    gpu.free(gpu.ctx, dw);
    gpu.free(gpu.ctx, dy);
    free(x);
    free(w);
    free(yc);
    free(yg);
}

/* Row shorter than a warp, not a multiple of 32, a typical width, and rows
 * longer than the 1024-thread block. */
TEST(rmsnorm_matches_cpu)
{
    check_rmsnorm(3, 7);
    if (test_cur_failed) return;
    check_rmsnorm(5, 67);
    if (test_cur_failed) return;
    check_rmsnorm(4, 4096);
    if (test_cur_failed) return;
    check_rmsnorm(2, 5000);
}

/* Device expf is within 2 ulp of glibc's. */
TEST(swiglu_matches_cpu)
{
    const int64_t n = 300007;
    float *g = rand_vec(n, 10.0f), *u = rand_vec(n, 2.0f), *out = malloc(sizeof(float) * n);
    float *dg = to_gpu(g, sizeof(float) * n), *du = to_gpu(u, sizeof(float) * n);
    ASSERT(dg && du);
    ASSERT_EQ_INT(cpu.swiglu(cpu.ctx, g, u, n), 0);
    ASSERT_EQ_INT(gpu.swiglu(gpu.ctx, dg, du, n), 0);
    ASSERT_EQ_INT(from_gpu(out, dg, n), 0);
    ASSERT_CLOSE(out, g, n, 1e-7, 1e-6);
    gpu.free(gpu.ctx, dg);
    gpu.free(gpu.ctx, du);
    free(g);
    free(u);
    free(out);
}

/* One rounding each: exact. Longer than one grid-stride pass. */
TEST(add_matches_cpu)
{
    const int64_t n = 65535LL * 256 + 17;
    float *x = rand_vec(n, 1.0f), *y = rand_vec(n, 1.0f), *out = malloc(sizeof(float) * n);
    float *dx = to_gpu(x, sizeof(float) * n), *dy = to_gpu(y, sizeof(float) * n);
    ASSERT(dx && dy);
    ASSERT_EQ_INT(cpu.add(cpu.ctx, x, y, n), 0);
    ASSERT_EQ_INT(gpu.add(gpu.ctx, dx, dy, n), 0);
    ASSERT_EQ_INT(from_gpu(out, dx, n), 0);
    ASSERT(memcmp(out, x, sizeof(float) * n) == 0);
    gpu.free(gpu.ctx, dx);
    gpu.free(gpu.ctx, dy);
    free(x);
    free(y);
    free(out);
}

/* ---- dequantize ------------------------------------------------------------- */

/* Same arithmetic on both sides, but a CPU build may fuse Q4_1's d*q + m
 * into an FMA: allow an ulp of the operands (values are up to 3) rather than
 * demand memcmp. */
static void check_dequantize(weft_type t)
{
    const int64_t n = 32 * 1001;
    float *x = rand_vec(n, 3.0f), *yc = malloc(sizeof(float) * n), *yg = malloc(sizeof(float) * n);
    const size_t bytes = quant_row_size(t, n);
    void *q = malloc(bytes);
    ASSERT_EQ_INT(quant_quantize_row(t, x, q, n), 0);
    void *dq = to_gpu(q, bytes);
    float *dy = NULL;
    ASSERT(dq);
    ASSERT_EQ_INT(gpu.alloc(gpu.ctx, (void **)&dy, sizeof(float) * n), 0);
    ASSERT_EQ_INT(cpu.dequantize(cpu.ctx, yc, q, t, n), 0);
    ASSERT_EQ_INT(gpu.dequantize(gpu.ctx, dy, dq, t, n), 0);
    ASSERT_EQ_INT(from_gpu(yg, dy, n), 0);
    ASSERT_CLOSE(yg, yc, n, 1e-6, 4e-7);
    gpu.free(gpu.ctx, dq);
    gpu.free(gpu.ctx, dy);
    free(x);
    free(yc);
    free(yg);
    free(q);
}

TEST(dequantize_q8_0_matches_cpu) { check_dequantize(WEFT_TYPE_Q8_0); }
TEST(dequantize_q4_0_matches_cpu) { check_dequantize(WEFT_TYPE_Q4_0); }
TEST(dequantize_q4_1_matches_cpu) { check_dequantize(WEFT_TYPE_Q4_1); }
TEST(dequantize_f16_matches_cpu) { check_dequantize(WEFT_TYPE_F16); }

TEST(dequantize_rejects_what_it_cannot_do)
{
    ASSERT_EQ_INT(gpu.dequantize(gpu.ctx, NULL, NULL, WEFT_TYPE_Q6_K, 256), WEFT_EUNSUPPORTED);
    ASSERT_EQ_INT(gpu.dequantize(gpu.ctx, NULL, NULL, WEFT_TYPE_Q8_0, 33), WEFT_EINVAL);
}

/* ---- matmul ------------------------------------------------------------------ */

/*
 * W (n_out × n_in) of type t against x (n_tok × n_in), both backends.
 * The two round activations differently: the CPU quantizes x to the weights'
 * vec-dot type (Q8_0/Q8_1 for the quantized types, f16 for F16, none for F32);
 * the GPU multiplies the exactly dequantized weights by f32 x (f16 x for F16
 * weights, like the CPU). The tolerance per output is therefore
 *   Σ|w_i| · (activation rounding of x_i on the CPU) + f32 summation slack,
 * with the activation rounding bounded by half a Q8 step (amax/254 of the
 * block) plus the fp16 rounding of the Q8 scale; for Q4_1 also the fp16
 * rounding of Q8_1's block sum s, which the CPU multiplies by the block's m
 * (|m| <= the block's largest |w|).
 */
static void check_matmul(weft_type t, int n_out, int n_in, int n_tok)
{
    const size_t rb = quant_row_size(t, n_in);
    float *wf = rand_vec((int64_t)n_out * n_in, 1.0f), *x = rand_vec((int64_t)n_tok * n_in, 1.0f);
    unsigned char *wq = malloc(rb * (size_t)n_out);
    for (int o = 0; o < n_out; o++) {
        ASSERT_EQ_INT(quant_quantize_row(t, wf + (size_t)o * n_in, wq + (size_t)o * rb, n_in), 0);
        quant_dequantize_row(t, wq + (size_t)o * rb, wf + (size_t)o * n_in, n_in);
    }
    const int64_t ny = (int64_t)n_out * n_tok;
    float *yc = malloc(sizeof(float) * ny), *yg = malloc(sizeof(float) * ny);
    double *tol = malloc(sizeof(double) * ny);
    const bool q8_acts = t != WEFT_TYPE_F32 && t != WEFT_TYPE_F16 && t != WEFT_TYPE_BF16;
    for (int tk = 0; tk < n_tok; tk++) {
        const float *xr = x + (size_t)tk * n_in;
        for (int o = 0; o < n_out; o++) {
            const float *wr = wf + (size_t)o * n_in;
            double bound = 0, mag = 0;
            for (int b = 0; b < n_in; b += 32) {
                float amax = 0, wmax = 0;
                double xsum = 0;
                for (int j = b; j < b + 32 && j < n_in; j++) {
                    amax = fmaxf(amax, fabsf(xr[j]));
                    wmax = fmaxf(wmax, fabsf(wr[j]));
                    xsum += fabs(xr[j]);
                }
                for (int j = b; j < b + 32 && j < n_in; j++) {
                    mag += fabs(wr[j] * xr[j]);
                    if (q8_acts) bound += fabs(wr[j]) * (amax / 254.0 + fabs(xr[j]) * 1e-3);
                }
                if (t == WEFT_TYPE_Q4_1) bound += wmax * xsum * 1e-3;
            }
            /* f32 sums (and f16 products of F16 weights, which both sides share). */
            tol[(size_t)tk * n_out + o] = bound + 1e-5 * mag + 1e-5;
        }
    }
    op_matrix mc = {wq, t, n_in, n_out, rb, NULL};
    ASSERT_EQ_INT(cpu.matmul(cpu.ctx, yc, &mc, x, n_tok), 0);

    void *dw = to_gpu(wq, rb * (size_t)n_out);
    float *dx = to_gpu(x, sizeof(float) * n_tok * n_in), *dy = NULL;
    ASSERT(dw && dx);
    ASSERT_EQ_INT(gpu.alloc(gpu.ctx, (void **)&dy, sizeof(float) * ny), 0);
    op_matrix mg = {dw, t, n_in, n_out, rb, NULL};
    ASSERT_EQ_INT(gpu.matmul(gpu.ctx, dy, &mg, dx, n_tok), 0);
    ASSERT_EQ_INT(from_gpu(yg, dy, ny), 0);
    for (int64_t i = 0; i < ny; i++)
        if (!(fabs((double)yg[i] - yc[i]) <= tol[i]))
            TEST_FAIL_("%s matmul %dx%d, %d tok: y[%lld] gpu %.9g cpu %.9g (tol %g)",
                       quant_type_name(t), n_out, n_in, n_tok, (long long)i, yg[i], yc[i],
                       tol[i]);
    gpu.free(gpu.ctx, dw);
    gpu.free(gpu.ctx, dx);
    gpu.free(gpu.ctx, dy);
    free(wf);
    free(x);
    free(wq);
    free(yc);
    free(yg);
    free(tol);
}

/* Decode (one token) and prefill (several) shapes; n_out not a tile multiple. */
#define MATMUL_TEST(name, type)                                                     \
    TEST(name)                                                                      \
    {                                                                               \
        check_matmul(type, 301, 512, 1);                                            \
        if (test_cur_failed) return;                                                \
        check_matmul(type, 301, 512, 7);                                            \
        if (test_cur_failed) return;                                                \
        check_matmul(type, 64, 4096, 3);                                            \
    }

MATMUL_TEST(matmul_f32_matches_cpu, WEFT_TYPE_F32)
MATMUL_TEST(matmul_f16_matches_cpu, WEFT_TYPE_F16)
MATMUL_TEST(matmul_q8_0_matches_cpu, WEFT_TYPE_Q8_0)
MATMUL_TEST(matmul_q4_0_matches_cpu, WEFT_TYPE_Q4_0)
MATMUL_TEST(matmul_q4_1_matches_cpu, WEFT_TYPE_Q4_1)

int main(void)
{
    rng_state = 0x2545f4914f6cdd1dull; /* its own data, not test_backend's */
    printf("nccl version: %d\n", weft_backend_cuda_nccl_version());
    int rc = weft_backend_cuda_create(0, &gpu);
    if (rc == WEFT_EUNSUPPORTED) {
        printf("skipped: %s\n", weft_last_error());
        return 77;
    }
    if (rc != 0) {
        fprintf(stderr, "weft_backend_cuda_create: %s: %s\n", weft_strerror(rc), weft_last_error());
        return 1;
    }
    if (weft_backend_cpu_create(0, &cpu) != 0) {
        fprintf(stderr, "weft_backend_cpu_create: %s\n", weft_last_error());
        gpu.destroy(gpu.ctx);
        return 1;
    }
    RUN(rmsnorm_matches_cpu);
    RUN(swiglu_matches_cpu);
    RUN(add_matches_cpu);
    RUN(dequantize_q8_0_matches_cpu);
    RUN(dequantize_q4_0_matches_cpu);
    RUN(dequantize_q4_1_matches_cpu);
    RUN(dequantize_f16_matches_cpu);
    RUN(dequantize_rejects_what_it_cannot_do);
    RUN(matmul_f32_matches_cpu);
    RUN(matmul_f16_matches_cpu);
    RUN(matmul_q8_0_matches_cpu);
    RUN(matmul_q4_0_matches_cpu);
    RUN(matmul_q4_1_matches_cpu);
    cpu.destroy(cpu.ctx);
    gpu.destroy(gpu.ctx);
    TEST_DONE();
}

#endif

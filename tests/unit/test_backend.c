/* The CPU backend table (kernels/backend.h): every member against a scalar
 * reference written here or the direct operator, on shapes that do not
 * divide evenly among the pool's threads; block layouts pinned by hand-built
 * blocks; bad arguments rejected with the documented codes. */
#include <stdint.h>

#include "common/arena.h"
#include "kernels/backend.h"
#include "test.h"
#include "test_rand.h"
#include "weft/common.h"

/* Three threads: most sizes below leave a ragged last share. */
#define N_THREADS 3

static weft_backend be;


/* ---- memory members ------------------------------------------------------ */

TEST(alloc_is_aligned_and_copies_round_trip)
{
    const size_t before = weft_mem_in_use();
    void *p = NULL;
    ASSERT_EQ_INT(be.alloc(be.ctx, &p, 1000), 0);
    ASSERT(p != NULL);
    ASSERT_EQ_INT((uintptr_t)p % 64, 0);
    ASSERT(weft_mem_in_use() >= before + 1000);
    unsigned char src[1000], dst[1000];
    for (int i = 0; i < 1000; i++) src[i] = (unsigned char)(i * 7);
    ASSERT_EQ_INT(be.upload(be.ctx, p, src, sizeof src), 0);
    ASSERT_EQ_INT(be.sync(be.ctx), 0);
    memset(dst, 0, sizeof dst);
    ASSERT_EQ_INT(be.download(be.ctx, dst, p, sizeof dst), 0);
    ASSERT(memcmp(src, dst, sizeof src) == 0);
    be.free(be.ctx, p);
    ASSERT_EQ_INT(weft_mem_in_use(), before);
}

/* The arena the repacked weights come from: aligned, disjoint, writable
 * blocks (one larger than a chunk too), counted while it lives. */
TEST(arena_blocks_are_aligned_disjoint_and_counted)
{
    const size_t before = weft_mem_in_use();
    weft_arena *a = weft_arena_create();
    ASSERT(a != NULL);
    unsigned char *p[4];
    const size_t n[4] = {1000, 64, WEFT_ARENA_CHUNK + (1u << 20), 3000};
    size_t sum = 0;
    for (int i = 0; i < 4; i++) {
        p[i] = weft_arena_alloc(a, n[i]);
        ASSERT(p[i] != NULL);
        ASSERT_EQ_INT((uintptr_t)p[i] % 64, 0);
        memset(p[i], i + 1, n[i]);
        sum += (n[i] + 63) & ~(size_t)63;
    }
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ_INT(p[i][0], i + 1);
        ASSERT_EQ_INT(p[i][n[i] - 1], i + 1); /* no later block overwrote it */
    }
    ASSERT_EQ_INT(weft_mem_in_use(), before + sum);
    ASSERT(weft_arena_alloc(a, SIZE_MAX) == NULL);
    weft_arena_destroy(a);
    weft_arena_destroy(NULL);
    ASSERT_EQ_INT(weft_mem_in_use(), before);
}

/* ---- elementwise ops ------------------------------------------------------- */

TEST(rmsnorm_matches_scalar_reference)
{
    const int rows = 5, dim = 67;
    float *x = rand_vec((int64_t)rows * dim, 3.0f), *w = rand_vec(dim, 1.0f);
    float *y = malloc(sizeof(float) * rows * dim);
    const float eps = 1e-5f;
    ASSERT_EQ_INT(be.rmsnorm(be.ctx, y, x, w, rows, dim, eps), 0);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
        const double scale = 1.0 / sqrt(ss / dim + eps);
        for (int i = 0; i < dim; i++) {
            const double ref = x[r * dim + i] * scale * w[i];
            ASSERT_NEAR(y[r * dim + i], ref, 1e-6 * (1.0 + fabs(ref)));
        }
    }
    /* In place, as the forward pass does it, gives the same values. */
    ASSERT_EQ_INT(be.rmsnorm(be.ctx, x, x, w, rows, dim, eps), 0);
    ASSERT(memcmp(x, y, sizeof(float) * rows * dim) == 0);
    free(x);
    free(w);
    free(y);
}

TEST(swiglu_matches_scalar_reference)
{
    const int64_t n = 1001;
    float *g = rand_vec(n, 8.0f), *u = rand_vec(n, 2.0f);
    float *g0 = malloc(sizeof(float) * n);
    memcpy(g0, g, sizeof(float) * n);
    ASSERT_EQ_INT(be.swiglu(be.ctx, g, u, n), 0);
    for (int64_t i = 0; i < n; i++) {
        const double ref = g0[i] / (1.0 + exp(-(double)g0[i])) * u[i];
        ASSERT_NEAR(g[i], ref, 1e-6 * (1.0 + fabs(ref)));
    }
    free(g);
    free(u);
    free(g0);
}

TEST(add_matches_scalar_reference)
{
    const int64_t n = 1003;
    float *x = rand_vec(n, 1.0f), *y = rand_vec(n, 1.0f);
    float *x0 = malloc(sizeof(float) * n);
    memcpy(x0, x, sizeof(float) * n);
    ASSERT_EQ_INT(be.add(be.ctx, x, y, n), 0);
    for (int64_t i = 0; i < n; i++) ASSERT(x[i] == x0[i] + y[i]);
    free(x);
    free(y);
    free(x0);
}

/* ---- dequantize ------------------------------------------------------------- */

/* One hand-built block of each layout, decoded by the table: pins the byte
 * layout (fp16 scale first, low nibbles = elements 0..15) independently of
 * the quantizer. */
TEST(dequantize_q8_0_block_layout)
{
    unsigned char blk[2 * 34];
    for (int b = 0; b < 2; b++) {
        const uint16_t d = b ? 0x3400 : 0x3800; /* 0.25, 0.5 */
        memcpy(blk + 34 * b, &d, 2);
        for (int j = 0; j < 32; j++) blk[34 * b + 2 + j] = (unsigned char)(int8_t)(j * 8 - 127 + b);
    }
    float y[64];
    ASSERT_EQ_INT(be.dequantize(be.ctx, y, blk, WEFT_TYPE_Q8_0, 64), 0);
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 32; j++)
            ASSERT(y[32 * b + j] == (b ? 0.25f : 0.5f) * (float)(j * 8 - 127 + b));
}

TEST(dequantize_q4_1_block_layout)
{
    unsigned char blk[20];
    const uint16_t d = 0x3400, m = 0xBC00; /* 0.25, -1.0 */
    memcpy(blk, &d, 2);
    memcpy(blk + 2, &m, 2);
    for (int j = 0; j < 16; j++) blk[4 + j] = (unsigned char)(j | ((15 - j) << 4));
    float y[32];
    ASSERT_EQ_INT(be.dequantize(be.ctx, y, blk, WEFT_TYPE_Q4_1, 32), 0);
    for (int j = 0; j < 16; j++) {
        ASSERT(y[j] == 0.25f * j - 1.0f);
        ASSERT(y[16 + j] == 0.25f * (15 - j) - 1.0f);
    }
}

/* A quantized random row in [-2, 2): the table agrees with
 * quant_dequantize_row to the bit, and both are within the format's rounding
 * of the original (half a step plus the fp16 rounding of the scales). */
static void check_dequantize_row(weft_type t, float max_err)
{
    const int64_t n = 32 * 37; /* 37 blocks over 3 threads */
    float *x = rand_vec(n, 2.0f);
    void *q = malloc(quant_row_size(t, n));
    float *ref = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    ASSERT_EQ_INT(quant_quantize_row(t, x, q, n), 0);
    quant_dequantize_row(t, q, ref, n);
    ASSERT_EQ_INT(be.dequantize(be.ctx, y, q, t, n), 0);
    ASSERT(memcmp(y, ref, sizeof(float) * n) == 0);
    for (int64_t i = 0; i < n; i++) ASSERT_NEAR(y[i], x[i], max_err);
    free(x);
    free(q);
    free(ref);
    free(y);
}

TEST(dequantize_q8_0_matches_quant)
{
    check_dequantize_row(WEFT_TYPE_Q8_0, 2.0f / 254 + 0.002f);
}

TEST(dequantize_q4_1_matches_quant)
{
    check_dequantize_row(WEFT_TYPE_Q4_1, 4.0f / 30 + 0.005f);
}

TEST(dequantize_rejects_bad_arguments)
{
    float y[64];
    unsigned char q[68] = {0};
    ASSERT_EQ_INT(be.dequantize(be.ctx, y, q, WEFT_TYPE_Q8_0, 33), WEFT_EINVAL);
    ASSERT_EQ_INT(be.dequantize(be.ctx, y, q, WEFT_TYPE_Q8_K, 256), WEFT_EUNSUPPORTED);
    ASSERT_EQ_INT(be.dequantize(be.ctx, y, q, (weft_type)99, 32), WEFT_EUNSUPPORTED);
    ASSERT(strstr(weft_last_error(), "dequantize") != NULL);
}

/* ---- matmul ------------------------------------------------------------------ */

/* y = x · Wᵀ with W given as float rows, in double. */
static void matmul_ref(double *y, const float *w, const float *x, int n_out, int n_in, int n_tok)
{
    for (int t = 0; t < n_tok; t++)
        for (int o = 0; o < n_out; o++) {
            double s = 0;
            for (int i = 0; i < n_in; i++) s += (double)w[o * n_in + i] * x[t * n_in + i];
            y[t * n_out + o] = s;
        }
}

TEST(matmul_f32_matches_reference)
{
    const int n_out = 37, n_in = 96, n_tok = 5;
    float *w = rand_vec((int64_t)n_out * n_in, 1.0f), *x = rand_vec((int64_t)n_tok * n_in, 1.0f);
    float *y = malloc(sizeof(float) * n_out * n_tok);
    double *ref = malloc(sizeof(double) * n_out * n_tok);
    op_matrix m = {w, WEFT_TYPE_F32, n_in, n_out, sizeof(float) * n_in, NULL};
    ASSERT_EQ_INT(be.matmul(be.ctx, y, &m, x, n_tok), 0);
    matmul_ref(ref, w, x, n_out, n_in, n_tok);
    for (int i = 0; i < n_out * n_tok; i++) ASSERT_NEAR(y[i], ref[i], 1e-4);
    free(w);
    free(x);
    free(y);
    free(ref);
}

/* Q8_0 weights: the reference uses the dequantized weights, so the only error
 * left is the Q8_0 rounding of the activations, bounded per block by half a
 * step (amax/254) plus the fp16 rounding of the block scale. */
TEST(matmul_q8_0_matches_reference)
{
    const int n_out = 29, n_in = 128, n_tok = 4;
    const weft_type t = WEFT_TYPE_Q8_0;
    const size_t rb = quant_row_size(t, n_in);
    float *wf = rand_vec((int64_t)n_out * n_in, 1.0f), *x = rand_vec((int64_t)n_tok * n_in, 1.0f);
    unsigned char *wq = malloc(rb * n_out);
    for (int o = 0; o < n_out; o++) {
        ASSERT_EQ_INT(quant_quantize_row(t, wf + o * n_in, wq + o * rb, n_in), 0);
        quant_dequantize_row(t, wq + o * rb, wf + o * n_in, n_in);
    }
    float *y = malloc(sizeof(float) * n_out * n_tok);
    double *ref = malloc(sizeof(double) * n_out * n_tok);
    op_matrix m = {wq, t, n_in, n_out, rb, NULL};
    ASSERT_EQ_INT(be.matmul(be.ctx, y, &m, x, n_tok), 0);
    matmul_ref(ref, wf, x, n_out, n_in, n_tok);
    for (int tk = 0; tk < n_tok; tk++) {
        for (int o = 0; o < n_out; o++) {
            double bound = 1e-4;
            for (int b = 0; b < n_in / 32; b++) {
                float amax = 0;
                for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[tk * n_in + b * 32 + j]));
                for (int j = 0; j < 32; j++) {
                    const int i = b * 32 + j;
                    bound += fabs(wf[o * n_in + i]) *
                             (amax / 254.0 + fabs(x[tk * n_in + i]) * 1e-3);
                }
            }
            ASSERT_NEAR(y[tk * n_out + o], ref[tk * n_out + o], bound);
        }
    }
    free(wf);
    free(x);
    free(wq);
    free(y);
    free(ref);
}

TEST(matmul_rejects_bad_arguments)
{
    float w[64] = {0}, x[64] = {0};
    op_matrix m = {w, WEFT_TYPE_F32, 8, 8, 8 * sizeof(float), NULL};
    /* Output over the input: op_matmul would read what it has written. */
    ASSERT_EQ_INT(be.matmul(be.ctx, x, &m, x, 2), WEFT_EINVAL);
    op_matrix short_rows = {w, WEFT_TYPE_F32, 8, 4, 4 * sizeof(float), NULL};
    ASSERT_EQ_INT(be.matmul(be.ctx, x + 32, &short_rows, x, 1), WEFT_EINVAL);
    op_matrix q = {w, WEFT_TYPE_Q8_0, 33, 1, 40, NULL};
    ASSERT_EQ_INT(be.matmul(be.ctx, x + 32, &q, x, 1), WEFT_EINVAL);
    op_matrix k = {w, WEFT_TYPE_Q8_K, 256, 1, 292, NULL};
    ASSERT_EQ_INT(be.matmul(be.ctx, x + 32, &k, x, 1), WEFT_EUNSUPPORTED);
}

int main(void)
{
    const size_t mem0 = weft_mem_in_use();
    if (weft_backend_cpu_create(N_THREADS, &be) != 0) {
        fprintf(stderr, "weft_backend_cpu_create: %s\n", weft_last_error());
        return 1;
    }
    RUN(alloc_is_aligned_and_copies_round_trip);
    RUN(arena_blocks_are_aligned_disjoint_and_counted);
    RUN(rmsnorm_matches_scalar_reference);
    RUN(swiglu_matches_scalar_reference);
    RUN(add_matches_scalar_reference);
    RUN(dequantize_q8_0_block_layout);
    RUN(dequantize_q4_1_block_layout);
    RUN(dequantize_q8_0_matches_quant);
    RUN(dequantize_q4_1_matches_quant);
    RUN(dequantize_rejects_bad_arguments);
    RUN(matmul_f32_matches_reference);
    RUN(matmul_q8_0_matches_reference);
    RUN(matmul_rejects_bad_arguments);
    be.destroy(be.ctx);
    if (weft_mem_in_use() != mem0) {
        fprintf(stderr, "FAIL leak: %zu bytes still allocated after destroy\n",
                weft_mem_in_use() - mem0);
        return 1;
    }
    TEST_DONE();
}

/* bench_quant.c - speed of weft's quantized dot products, per weight row.
 *
 *   cc -O2 -Iinclude -I. bench/bench_quant.c kernels/cpu/quant*.c common/common.c \
 *      -lm -lpthread -o build/bench_quant
 *   build/bench_quant
 *
 * For each hot shape of SmolLM2-135M (Q4_1 weights x Q8_1 activations,
 * Q8_0 x Q8_0 output matrix; rows of 576 and 1536 values) and every SIMD
 * level the CPU has, prints ns per weight row for:
 *   dot   quant_vec_dot, one row at a time (what llama.cpp's vec_dot does),
 *   nx    quant_vec_dot_nx over all rows (decode),
 *   tile  quant_vec_dot_tile over all rows x 32 activation rows (prefill; ns per
 *         row and activation),
 * and the ratio against the scalar reference measured in the same run.
 * Each figure is the best of 30 rounds (robust to other load on the machine);
 * the weights (1536 x 576 or 576 x 1536) stay in L2, so this is the kernel
 * speed, not memory bandwidth (bench/roofline.c measures that).
 *
 * Against llama.cpp in the same run: build with -DBENCH_LLAMA and link the
 * objects of ggml's quant code, e.g. from the llama.cpp vendored in
 * llama-cpp-python 0.3.16 (G = .../vendor/llama.cpp/ggml):
 *   for f in $G/src/ggml-quants.c $G/src/ggml-cpu/quants.c \
 *            $G/src/ggml-cpu/arch/x86/quants.c; do
 *     gcc -O3 -march=native -DGGML_USE_CPU -I$G/include -I$G/src -I$G/src/ggml-cpu \
 *         -c $f -o /tmp/ggml_$(basename $(dirname $f))_$(basename $f .c).o; done
 *   cc -O2 -DBENCH_LLAMA -Iinclude -I. bench/bench_quant.c kernels/cpu/quant*.c \
 *      common/common.c /tmp/ggml_*.o -lm -lpthread -o build/bench_quant
 * It then also times ggml_vec_dot_* row by row, and checks that weft's
 * activations and dot products are bitwise equal to llama.cpp's.
 */
#include "kernels/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef BENCH_LLAMA
/* what the ggml objects need from the rest of ggml */
float ggml_table_f32_f16[1 << 16];
size_t ggml_row_size(int t, int64_t n)
{
    return quant_row_size(t, n);
}
size_t ggml_type_size(int t)
{
    return quant_type_size(t);
}
const char *ggml_type_name(int t)
{
    return quant_type_name(t);
}
void ggml_abort(const char *file, int line, const char *fmt, ...)
{
    fprintf(stderr, "ggml_abort %s:%d %s\n", file, line, fmt);
    abort();
}
typedef void (*ggml_dot_fn)(int n, float *s, size_t bs, const void *x, size_t bx, const void *y,
                            size_t by, int nrc);
void ggml_vec_dot_q4_1_q8_1(int, float *, size_t, const void *, size_t, const void *, size_t, int);
void ggml_vec_dot_q8_0_q8_0(int, float *, size_t, const void *, size_t, const void *, size_t, int);
void quantize_row_q8_0(const float *, void *, int64_t);
void quantize_row_q8_1(const float *, void *, int64_t);
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile float sink;

enum { BATCH = 32, ROUNDS = 30 };

typedef struct {
    weft_type t, at;
    int64_t n;
    int rows;
    size_t wrow, arow;
    unsigned char *w, *a; /* rows weight rows, BATCH activation rows */
    float *out;
} shape;

static float pseudo(int64_t i, int r)
{
    return (float)(((i + 3 * r) * 7919) % 2001) / 1000.0f - 1.0f;
}

static void shape_init(shape *s, weft_type t, int64_t n, int rows)
{
    s->t = t;
    s->at = quant_vec_dot_type(t);
    s->n = n;
    s->rows = rows;
    s->wrow = quant_row_size(t, n);
    s->arow = quant_row_size(s->at, n);
    s->w = malloc(s->wrow * rows);
    s->a = malloc(s->arow * BATCH);
    s->out = malloc(sizeof(float) * rows * BATCH);
    float *x = malloc(sizeof(float) * n);
    for (int r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n; i++) x[i] = 0.05f * pseudo(i, r);
        quant_quantize_row(t, x, s->w + s->wrow * r, n);
    }
    for (int j = 0; j < BATCH; j++) {
        for (int64_t i = 0; i < n; i++) x[i] = pseudo(i, 1000 + j);
        quant_quantize_row(s->at, x, s->a + s->arow * j, n);
    }
    free(x);
}

static void shape_free(shape *s)
{
    free(s->w);
    free(s->a);
    free(s->out);
}

/* best-of-ROUNDS ns per weight row (per row and activation for the tile) */
static double time_dot(const shape *s)
{
    double best = 1e30;
    for (int it = 0; it < ROUNDS; it++) {
        const double t0 = now();
        for (int r = 0; r < s->rows; r++)
            s->out[r] = quant_vec_dot(s->t, s->n, s->w + s->wrow * r, s->a);
        const double dt = now() - t0;
        if (dt < best) best = dt;
    }
    sink = s->out[0];
    return best * 1e9 / s->rows;
}

static double time_nx(const shape *s)
{
    double best = 1e30;
    for (int it = 0; it < ROUNDS; it++) {
        const double t0 = now();
        quant_vec_dot_nx(s->t, s->n, s->w, s->wrow, s->rows, s->a, s->out);
        const double dt = now() - t0;
        if (dt < best) best = dt;
    }
    sink = s->out[0];
    return best * 1e9 / s->rows;
}

static double time_tile(const shape *s)
{
    double best = 1e30;
    for (int it = 0; it < ROUNDS / 3; it++) {
        const double t0 = now();
        /* 16-row panels, as a matmul would hand them out */
        for (int r0 = 0; r0 < s->rows; r0 += 16) {
            const int nw = s->rows - r0 < 16 ? s->rows - r0 : 16;
            quant_vec_dot_tile(s->t, s->n, s->w + s->wrow * r0, s->wrow, nw, s->a, s->arow, BATCH,
                               s->out + r0, s->rows);
        }
        const double dt = now() - t0;
        if (dt < best) best = dt;
    }
    sink = s->out[0];
    return best * 1e9 / ((double)s->rows * BATCH);
}

#ifdef BENCH_LLAMA
static double time_llama(const shape *s, ggml_dot_fn f)
{
    double best = 1e30;
    for (int it = 0; it < ROUNDS; it++) {
        const double t0 = now();
        for (int r = 0; r < s->rows; r++)
            f((int)s->n, &s->out[r], 0, s->w + s->wrow * r, 0, s->a, 0, 1);
        const double dt = now() - t0;
        if (dt < best) best = dt;
    }
    sink = s->out[0];
    return best * 1e9 / s->rows;
}

/* activations and dots bitwise equal to llama.cpp's on this machine */
static int check_llama(const shape *s, ggml_dot_fn f)
{
    int bad = 0;
    float *x = malloc(sizeof(float) * s->n);
    unsigned char *qa = malloc(s->arow), *qb = malloc(s->arow);
    for (int64_t i = 0; i < s->n; i++) x[i] = pseudo(i, 7) * 3.0f;
    if (s->at == WEFT_TYPE_Q8_0)
        quantize_row_q8_0(x, qa, s->n);
    else
        quantize_row_q8_1(x, qa, s->n);
    quant_quantize_row(s->at, x, qb, s->n);
    if (memcmp(qa, qb, s->arow) != 0) bad++;
    for (int r = 0; r < s->rows; r += 97) {
        float g, w;
        f((int)s->n, &g, 0, s->w + s->wrow * r, 0, qa, 0, 1);
        w = quant_vec_dot(s->t, s->n, s->w + s->wrow * r, qa);
        if (memcmp(&g, &w, 4) != 0) bad++;
    }
    free(x);
    free(qa);
    free(qb);
    return bad;
}
#endif

int main(void)
{
    static const struct {
        weft_type t;
        int64_t n;
        int rows;
        const char *what;
    } shapes[] = {
        {WEFT_TYPE_Q4_1, 576, 1536, "q4_1 576  (attn/ffn_up)"},
        {WEFT_TYPE_Q4_1, 1536, 576, "q4_1 1536 (ffn_down)"},
        {WEFT_TYPE_Q8_0, 576, 1536, "q8_0 576  (output)"},
        {WEFT_TYPE_Q8_0, 1536, 576, "q8_0 1536"},
    };
    const quant_simd_level start = quant_simd();
#ifdef BENCH_LLAMA
    for (uint32_t h = 0; h < (1u << 16); h++) ggml_table_f32_f16[h] = quant_f16_to_f32((uint16_t)h);
    int bad = 0;
#endif
    printf("ns per weight row (tile: per row and activation); (xR) = speed-up over scalar\n");
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        shape s;
        shape_init(&s, shapes[k].t, shapes[k].n, shapes[k].rows);
        printf("%s, %d rows\n", shapes[k].what, shapes[k].rows);
        quant_simd_set(QUANT_SIMD_SCALAR);
        const double ref = time_dot(&s);
        printf("  %-16s dot %7.1f\n", quant_simd_name(QUANT_SIMD_SCALAR), ref);
        for (int l = QUANT_SIMD_AVX2; l <= QUANT_SIMD_AVX512_VNNI; l++) {
            if (quant_simd_set((quant_simd_level)l) != 0) continue;
            const double d = time_dot(&s), nx = time_nx(&s), tile = time_tile(&s);
            printf("  %-16s dot %7.1f (x%4.1f)  nx %7.1f (x%4.1f)  tile %7.1f (x%4.1f)\n",
                   quant_simd_name((quant_simd_level)l), d, ref / d, nx, ref / nx, tile,
                   ref / tile);
        }
#ifdef BENCH_LLAMA
        quant_simd_set(start);
        ggml_dot_fn f =
            shapes[k].t == WEFT_TYPE_Q4_1 ? ggml_vec_dot_q4_1_q8_1 : ggml_vec_dot_q8_0_q8_0;
        const double g = time_llama(&s, f);
        const int b = check_llama(&s, f);
        bad += b;
        printf("  %-16s dot %7.1f (x%4.1f)  weft %s nx/llama = x%.2f; bitwise %s\n", "llama.cpp", g,
               ref / g, quant_simd_name(start), g / time_nx(&s), b ? "DIFFERENT" : "equal");
#endif
        shape_free(&s);
    }
    quant_simd_set(start);
#ifdef BENCH_LLAMA
    return bad != 0;
#else
    return 0;
#endif
}

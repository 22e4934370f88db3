/* Prompt rows on AVX512-BF16 (kernels/cpu/bf16mm.h): the packed layout
 * value by value, the product against a double reference over the
 * bf16-rounded operands, every row bitwise the same whatever its batch, its
 * place in the output and the thread split, and op_matmul_multi sending a
 * mixed batch's prompt rows here and its other rows to the int8 kernels
 * (bitwise what they give without prompt rows). Skipped where the CPU has
 * no AVX512-BF16 or has AMX-BF16 (amx.h then takes prompt rows; test_amx). */
#include <string.h>

#include "kernels/cpu/bf16mm.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"
#include "kernels/quant.h"
#include "test.h"
#include "test_rand.h"

enum { N_IN = 160, N_OUT = 80, MAX_TOK = 40 }; /* 5 weight tiles; 80 pairs */

/* bf16 of an f32, nearest even (what vcvtne2ps2bf16 does for finite values). */
static float bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

static uint16_t bf16_bits(float x)
{
    const float r = bf16_round(x);
    uint32_t u;
    memcpy(&u, &r, 4);
    return (uint16_t)(u >> 16);
}

typedef struct {
    weft_type t;
    size_t rb;
    unsigned char *w; /* quantized weights */
    float *wf;        /* dequantized */
    uint16_t *wbf;    /* the packed copy */
    float *x;         /* MAX_TOK activation rows */
} fixture;

static void setup(fixture *f, weft_type t)
{
    f->t = t;
    f->rb = quant_row_size(t, N_IN);
    f->w = malloc(f->rb * N_OUT);
    f->wf = rand_vec((int64_t)N_IN * N_OUT, 1.0f);
    for (int o = 0; o < N_OUT; o++) {
        quant_quantize_row(t, f->wf + (size_t)o * N_IN, f->w + (size_t)o * f->rb, N_IN);
        quant_dequantize_row(t, f->w + (size_t)o * f->rb, f->wf + (size_t)o * N_IN, N_IN);
    }
    f->wbf = aligned_alloc(64, bf16mm_bytes(N_IN, N_OUT));
    f->x = rand_vec((int64_t)N_IN * MAX_TOK, 2.0f);
}

static void teardown(fixture *f)
{
    free(f->w);
    free(f->wf);
    free(f->wbf);
    free(f->x);
}

static void check_type(weft_type t)
{
    fixture f;
    setup(&f, t);
    ASSERT(bf16mm_bytes(N_IN, N_OUT) == (size_t)N_IN * N_OUT * 2);
    ASSERT_EQ_INT(bf16mm_pack(f.wbf, t, f.w, f.rb, N_IN, N_OUT), 0);
    /* the layout: tile o / 16, pair i / 2, row o % 16, element i % 2 */
    for (int o = 0; o < N_OUT; o++)
        for (int i = 0; i < N_IN; i++) {
            const uint16_t got = f.wbf[(((size_t)(o / 16) * (N_IN / 2) + (size_t)(i / 2)) * 16 + (size_t)(o % 16)) * 2 +
                                       (size_t)(i % 2)];
            const uint16_t want = bf16_bits(f.wf[(size_t)o * N_IN + i]);
            if (got != want) TEST_FAIL_("%s pack: row %d value %d: %04x, expected %04x", quant_type_name(t), o, i, got, want);
        }
    uint16_t *xb = malloc(bf16mm_act_size(N_IN, MAX_TOK));
    for (int a = 0; a < MAX_TOK; a++) bf16mm_act_row(xb, f.x + (size_t)a * N_IN, N_IN, a);
    for (int a = 0; a < MAX_TOK; a++)
        for (int i = 0; i < N_IN; i++)
            if (xb[(size_t)a * N_IN + i] != bf16_bits(f.x[(size_t)a * N_IN + i]))
                TEST_FAIL_("bf16mm_act_row: row %d value %d: %04x, expected %04x", a, i, xb[(size_t)a * N_IN + i],
                           bf16_bits(f.x[(size_t)a * N_IN + i]));
    /* each row alone, against the double reference: the products of bf16
     * values are exact in f32, so only the f32 sums round (80 steps) */
    float *solo = malloc(sizeof(float) * MAX_TOK * N_OUT);
    for (int k = 0; k < MAX_TOK; k++)
        bf16mm_matmul(f.wbf, N_IN, xb + (size_t)k * N_IN, 1, NULL, solo + (size_t)k * N_OUT, N_OUT, 0, N_OUT / 16);
    for (int k = 0; k < MAX_TOK; k++)
        for (int o = 0; o < N_OUT; o++) {
            double r = 0, mag = 0;
            for (int i = 0; i < N_IN; i++) {
                const double p = (double)bf16_round(f.wf[(size_t)o * N_IN + i]) * bf16_round(f.x[(size_t)k * N_IN + i]);
                r += p;
                mag += fabs(p);
            }
            const double v = solo[(size_t)k * N_OUT + o];
            if (fabs(v - r) > 1e-5 * mag) TEST_FAIL_("%s token %d row %d: %.7f vs %.7f", quant_type_name(t), k, o, v, r);
        }
    /* batches of every shape the kernel splits into (groups of 8, one or
     * two tiles), two "threads" with an odd split: bitwise the rows alone */
    const int sizes[] = {2, 7, 8, 9, 16, 17, 33, 40};
    float *y = malloc(sizeof(float) * MAX_TOK * N_OUT);
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const int n = sizes[si];
        memset(y, 0, sizeof(float) * MAX_TOK * N_OUT);
        bf16mm_matmul(f.wbf, N_IN, xb, n, NULL, y, N_OUT, 0, 3);
        bf16mm_matmul(f.wbf, N_IN, xb, n, NULL, y, N_OUT, 3, N_OUT / 16);
        for (int k = 0; k < MAX_TOK; k++)
            for (int o = 0; o < N_OUT; o++) {
                const float want = k < n ? solo[(size_t)k * N_OUT + o] : 0.0f; /* rows past n untouched */
                if (memcmp(&y[(size_t)k * N_OUT + o], &want, sizeof want))
                    TEST_FAIL_("%s batch of %d: token %d row %d = %.9g, alone %.9g", quant_type_name(t), n, k, o,
                               y[(size_t)k * N_OUT + o], want);
            }
    }
    /* rows scattered in the output: packed row a is row rows[a] of y */
    {
        enum { N = 12 };
        int32_t rows[N];
        for (int a = 0; a < N; a++) rows[a] = a < 8 ? 3 * a : a + 24; /* 0, 3, ..., 21, 32..35 */
        uint16_t *xs = malloc(bf16mm_act_size(N_IN, N));
        for (int a = 0; a < N; a++) bf16mm_act_row(xs, f.x + (size_t)rows[a] * N_IN, N_IN, a);
        memset(y, 0, sizeof(float) * MAX_TOK * N_OUT);
        bf16mm_matmul(f.wbf, N_IN, xs, N, rows, y, N_OUT, 0, N_OUT / 16);
        for (int k = 0; k < MAX_TOK; k++) {
            bool used = false;
            for (int a = 0; a < N; a++) used |= rows[a] == k;
            for (int o = 0; o < N_OUT; o++) {
                const float want = used ? solo[(size_t)k * N_OUT + o] : 0.0f;
                if (memcmp(&y[(size_t)k * N_OUT + o], &want, sizeof want))
                    TEST_FAIL_("%s scattered rows: token %d row %d = %.9g, want %.9g", quant_type_name(t), k, o,
                               y[(size_t)k * N_OUT + o], want);
            }
        }
        free(xs);
    }
    free(y);
    free(solo);
    free(xb);
    teardown(&f);
}

TEST(q4_1) { check_type(WEFT_TYPE_Q4_1); }
TEST(q8_0) { check_type(WEFT_TYPE_Q8_0); }
TEST(f16) { check_type(WEFT_TYPE_F16); } /* any type that dequantizes */

TEST(pack_refuses_shapes_it_cannot_run)
{
    ASSERT(bf16mm_bytes(160, 17) == 0); /* rows not a multiple of 16 */
    ASSERT(bf16mm_bytes(33, 16) == 0);  /* odd row length */
    ASSERT(bf16mm_bytes(0, 16) == 0);
    uint16_t w[64];
    float z[33 * 16] = {0};
    ASSERT_EQ_INT(bf16mm_pack(w, WEFT_TYPE_F32, z, 33 * sizeof(float), 33, 16), -1);
}

/* op_matmul_multi on two threads, a batch of generated rows around two
 * runs of prompt rows (as the engine mixes them): prompt rows equal
 * bf16mm's result for them, and the other rows are bitwise what the int8
 * kernels give when no row is a prompt row. */
typedef struct {
    float *y;
    const op_matrix *w;
    const float *bias, *x;
    int n_tok;
    void *qbuf;
    const int8_t *prompt;
} mm_job;

static void mm_run(void *arg, const pool_thread *t)
{
    const mm_job *j = arg;
    op_matmul_multi(t, 1, &j->y, &j->w, &j->bias, j->x, j->n_tok, j->qbuf, j->prompt);
}

TEST(matmul_multi_sends_prompt_rows_here)
{
    if (!op_prompt_bf16()) {
        printf("  (WEFT_PROMPT_BF16=0: prompt rows stay on int8; checking that only)\n");
    }
    fixture f;
    setup(&f, WEFT_TYPE_Q4_1);
    ASSERT_EQ_INT(bf16mm_pack(f.wbf, f.t, f.w, f.rb, N_IN, N_OUT), 0);
    float bias[N_OUT];
    for (int o = 0; o < N_OUT; o++) bias[o] = (float)o * 0.25f;
    const op_matrix m = {f.w, f.t, N_IN, N_OUT, f.rb, NULL, f.wbf};
    enum { N = 30 };
    int8_t prompt[N];
    for (int r = 0; r < N; r++) prompt[r] = (r >= 3 && r < 14) || r >= 20;
    void *qbuf = aligned_alloc(64, (op_qbuf_size(N_IN, N) + 63) & ~(size_t)63);
    float *y = malloc(sizeof(float) * N * N_OUT), *y8 = malloc(sizeof(float) * N * N_OUT);
    pool *p = pool_create(2);
    ASSERT(p != NULL);
    mm_job j = {y, &m, bias, f.x, N, qbuf, prompt};
    pool_run(p, mm_run, &j);
    mm_job j8 = {y8, &m, bias, f.x, N, qbuf, NULL};
    pool_run(p, mm_run, &j8);
    uint16_t *xb = malloc(bf16mm_act_size(N_IN, 1));
    float ref[N_OUT];
    for (int r = 0; r < N; r++) {
        const float *got = y + (size_t)r * N_OUT, *want = y8 + (size_t)r * N_OUT;
        if (prompt[r] && op_prompt_bf16()) {
            bf16mm_act_row(xb, f.x + (size_t)r * N_IN, N_IN, 0);
            bf16mm_matmul(f.wbf, N_IN, xb, 1, NULL, ref, N_OUT, 0, N_OUT / 16);
            for (int o = 0; o < N_OUT; o++) ref[o] += bias[o];
            want = ref;
        }
        for (int o = 0; o < N_OUT; o++)
            if (memcmp(&got[o], &want[o], sizeof(float)))
                TEST_FAIL_("row %d (%s) output %d = %.9g, want %.9g", r, prompt[r] ? "prompt" : "generated", o,
                           got[o], want[o]);
    }
    /* and the two kernels do differ (else the check above proves nothing) */
    bool differs = false;
    for (int o = 0; o < N_OUT; o++) differs |= y[3 * N_OUT + o] != y8[3 * N_OUT + o];
    ASSERT(differs || !op_prompt_bf16());
    pool_destroy(p);
    free(xb);
    free(y);
    free(y8);
    free(qbuf);
    teardown(&f);
}

int main(void)
{
    if (!bf16mm_available()) TEST_SKIP("no AVX512-BF16 on this CPU, or AMX-BF16 takes prompt rows");
    RUN(q4_1);
    RUN(q8_0);
    RUN(f16);
    RUN(pack_refuses_shapes_it_cannot_run);
    RUN(matmul_multi_sends_prompt_rows_here);
    TEST_DONE();
}

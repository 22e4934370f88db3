/* AMX matrix products (kernels/cpu/amx.h): exact block sums against a double
 * reference, a token's result independent of the batch it is in (bitwise),
 * and agreement with the vpdpbusd kernels. Where the CPU has AVX512-VNNI but
 * no AMX, the same checks on amx_compact_only()'s kernel (the bf16 ones need
 * AMX-BF16); skipped where it has neither. */
#include "kernels/cpu/amx.h"
#include "kernels/quant.h"
#include "test.h"
#include "test_rand.h"

typedef struct {
    weft_type t, vt;
    int64_t n_in, n_out;
    size_t rb, arb;
    unsigned char *w;  /* quantized weights */
    unsigned char *aq; /* quantized activations, max_tok rows */
    amx_matrix *m;
} fixture;

static const int max_tok = 40;

static int setup(fixture *f, weft_type t, int64_t n_in, int64_t n_out)
{
    f->t = t;
    f->vt = quant_vec_dot_type(t);
    f->n_in = n_in;
    f->n_out = n_out;
    f->rb = quant_row_size(t, n_in);
    f->arb = quant_row_size(f->vt, n_in);
    f->w = malloc(f->rb * (size_t)n_out);
    f->aq = malloc(f->arb * (size_t)max_tok);
    float *wf = rand_vec(n_in * n_out, 1.0f), *x = rand_vec(n_in * max_tok, 2.0f);
    for (int64_t o = 0; o < n_out; o++) quant_quantize_row(t, wf + o * n_in, f->w + o * f->rb, n_in);
    for (int k = 0; k < max_tok; k++) quant_quantize_row(f->vt, x + k * n_in, f->aq + k * f->arb, n_in);
    free(wf);
    free(x);
    f->m = amx_pack(t, f->w, f->rb, n_in, n_out);
    return f->m ? 0 : -1;
}

static void teardown(fixture *f)
{
    amx_free(f->m);
    free(f->w);
    free(f->aq);
}

/* y[n_tok][n_out] for activation rows first..first+n_tok-1. */
static float *run(const fixture *f, int first, int n_tok)
{
    void *buf = malloc(amx_act_size(f->n_in, n_tok));
    float *y = malloc(sizeof(float) * (size_t)n_tok * (size_t)f->n_out);
    for (int k = 0; k < n_tok; k++)
        amx_act_fill(buf, f->n_in, n_tok, k, amx_act_type(f->m), f->aq + (size_t)(first + k) * f->arb);
    /* two "threads": the tiles split in two ranges */
    const long nt = amx_n_tiles(f->m);
    amx_matmul(f->m, buf, n_tok, y, (size_t)f->n_out, 0, nt / 2);
    amx_matmul(f->m, buf, n_tok, y, (size_t)f->n_out, nt / 2, nt);
    free(buf);
    return y;
}

/* The dot of weight row o and activation row k from the dequantized values,
 * in double. */
static double ref_dot(const fixture *f, int64_t o, int k)
{
    float *w = malloc(sizeof(float) * (size_t)f->n_in), *a = malloc(sizeof(float) * (size_t)f->n_in);
    quant_dequantize_row(f->t, f->w + (size_t)o * f->rb, w, f->n_in);
    /* Q8_1 rows dequantize like Q8_0 apart from the sum field: do it by hand */
    const unsigned char *ar = f->aq + (size_t)k * f->arb;
    const size_t bsz = f->vt == WEFT_TYPE_Q8_1 ? 36 : 34, qoff = f->vt == WEFT_TYPE_Q8_1 ? 4 : 2;
    for (int64_t b = 0; b < f->n_in / 32; b++) {
        uint16_t d;
        memcpy(&d, ar + b * bsz, 2);
        for (int j = 0; j < 32; j++) a[b * 32 + j] = quant_f16_to_f32(d) * (int8_t)ar[b * bsz + qoff + j];
    }
    double s = 0;
    for (int64_t i = 0; i < f->n_in; i++) s += (double)w[i] * a[i];
    free(w);
    free(a);
    return s;
}

static void check_type(weft_type t, bool bytes, int64_t n_in)
{
    fixture f;
    if (setup(&f, t, n_in, 48) < 0) TEST_FAIL_("amx_pack refused %s", quant_type_name(t));
    /* Q8_0's compact copy: calls of 1-8 rows read it, larger ones the int8 blocks */
    if (bytes && amx_pack_bytes(f.m) != 0) TEST_FAIL_("amx_pack_bytes refused %s", quant_type_name(t));
    const int sizes[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 33, 40};
    float *solo = malloc(sizeof(float) * (size_t)max_tok * (size_t)f.n_out);
    for (int k = 0; k < max_tok; k++) {
        float *y = run(&f, k, 1);
        memcpy(solo + (size_t)k * f.n_out, y, sizeof(float) * (size_t)f.n_out);
        free(y);
    }
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const int n = sizes[si];
        float *y = run(&f, 0, n);
        for (int k = 0; k < n; k++)
            for (int64_t o = 0; o < f.n_out; o++)
                if (memcmp(&y[(size_t)k * f.n_out + o], &solo[(size_t)k * f.n_out + o], sizeof(float)))
                    TEST_FAIL_("%s batch of %d: token %d row %lld = %.9g, alone %.9g", quant_type_name(t), n,
                               k, (long long)o, y[(size_t)k * f.n_out + o], solo[(size_t)k * f.n_out + o]);
        free(y);
    }
    for (int k = 0; k < max_tok; k++)
        for (int64_t o = 0; o < f.n_out; o++) {
            const double r = ref_dot(&f, o, k);
            /* Q4_1's minimum term uses s = d * sum(q) rounded to fp16 */
            const double tol = 1e-4 * (1 + fabs(r)) + (t == WEFT_TYPE_Q4_1 ? 0.05 : 0);
            const float v = solo[(size_t)k * f.n_out + o];
            if (fabs(v - r) > tol) TEST_FAIL_("%s token %d row %lld: %.6f vs %.6f", quant_type_name(t), k, (long long)o, v, r);
            const float dv = quant_vec_dot(t, f.n_in, f.w + (size_t)o * f.rb, f.aq + (size_t)k * f.arb);
            if (fabsf(v - dv) > 1e-4f * (1 + fabsf(dv)))
                TEST_FAIL_("%s token %d row %lld: amx %.7f, vpdpbusd %.7f", quant_type_name(t), k, (long long)o, v, dv);
        }
    free(solo);
    teardown(&f);
}

/* The tile kernel works in rounds of two blocks, the float part a round
 * behind the products: nb = 5 (two rounds and a tail block), 9 (four
 * rounds and a tail) and 8 (no tail block). */
static void check_shapes(weft_type t, bool bytes)
{
    check_type(t, bytes, 160);
    check_type(t, bytes, 288);
    check_type(t, bytes, 256);
}

TEST(q4_0) { check_shapes(WEFT_TYPE_Q4_0, false); }
TEST(q4_1) { check_shapes(WEFT_TYPE_Q4_1, false); }
TEST(q8_0) { check_shapes(WEFT_TYPE_Q8_0, false); }
TEST(q8_0_compact_copy) { check_shapes(WEFT_TYPE_Q8_0, true); }

/* bf16 of an f32, nearest even (what the kernels' vcvtne* do for finite values). */
static float bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* amx_matmul_bf16 (prompt rows): against a double reference over the
 * bf16-rounded weights and activations, and every row bitwise the same
 * whatever the batch size (short last groups included) and the tile split
 * (an odd range leaves a weight tile without its pair). */
static void check_bf16(weft_type t)
{
    fixture f;
    /* nb = 5 blocks; 80 outputs = 5 weight tiles */
    if (setup(&f, t, 160, 80) < 0) TEST_FAIL_("amx_pack refused %s", quant_type_name(t));
    ASSERT(!amx_has_bf16(f.m));
    ASSERT_EQ_INT(amx_pack_bf16(f.m), 0);
    ASSERT(amx_has_bf16(f.m));
    ASSERT(amx_bf16_bytes(f.m) == (size_t)(80 * 160 * 2));
    const int n_in = (int)f.n_in, n_out = (int)f.n_out, nt = (int)amx_n_tiles(f.m);
    float *x = rand_vec((int64_t)n_in * max_tok, 2.0f);
    uint16_t *xt = aligned_alloc(64, (amx_bf16_act_size(n_in, max_tok) + 63) & ~(size_t)63);
    /* amx_to_bf16_row: each value rounded to nearest even, at its place in
     * the tiles (group a / 16, block i / 32, row a % 16, column i % 32) */
    for (int a = 0; a < max_tok; a++) amx_to_bf16_row(xt, x + (size_t)a * n_in, n_in, a);
    for (int a = 0; a < max_tok; a++)
        for (int i = 0; i < n_in; i++) {
            const float r = bf16_round(x[(size_t)a * n_in + i]);
            uint32_t u;
            memcpy(&u, &r, 4);
            const uint16_t h = (uint16_t)(u >> 16);
            const uint16_t got = xt[(((size_t)(a / 16) * (size_t)(n_in / 32) + (size_t)(i / 32)) * 16 +
                                     (size_t)(a % 16)) * 32 + (size_t)(i % 32)];
            if (got != h) TEST_FAIL_("amx_to_bf16_row: row %d value %d: %04x, expected %04x", a, i, got, h);
        }
    float *wf = malloc(sizeof(float) * (size_t)n_in * n_out);
    for (int o = 0; o < n_out; o++) {
        quant_dequantize_row(f.t, f.w + (size_t)o * f.rb, wf + (size_t)o * n_in, n_in);
        for (int i = 0; i < n_in; i++) wf[(size_t)o * n_in + i] = bf16_round(wf[(size_t)o * n_in + i]);
    }
    float *solo = malloc(sizeof(float) * (size_t)max_tok * n_out);
    memset(xt, 0xFF, amx_bf16_act_size(n_in, max_tok)); /* NaN where no row is written */
    for (int k = 0; k < max_tok; k++) {
        amx_to_bf16_row(xt, x + (size_t)k * n_in, n_in, 0);
        amx_bf16_act_pad(xt, n_in, 1);
        amx_matmul_bf16(f.m, xt, 1, NULL, solo + (size_t)k * n_out, (size_t)n_out, 0, nt);
    }
    for (int k = 0; k < max_tok; k++)
        for (int o = 0; o < n_out; o++) {
            double r = 0, mag = 0;
            for (int i = 0; i < n_in; i++) {
                const double p = (double)wf[(size_t)o * n_in + i] * bf16_round(x[(size_t)k * n_in + i]);
                r += p;
                mag += fabs(p);
            }
            /* dequantization in f32 may differ in its last bit, moving a
             * bf16 rounding: a few bf16 ulps of one term at most */
            const double v = solo[(size_t)k * n_out + o];
            if (fabs(v - r) > 1e-5 * mag + 0.05) TEST_FAIL_("%s token %d row %d: %.6f vs %.6f", quant_type_name(t), k, o, v, r);
        }
    const int sizes[] = {2, 15, 16, 17, 32, 33, 40};
    float *y = malloc(sizeof(float) * (size_t)max_tok * n_out);
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const int n = sizes[si];
        memset(y, 0, sizeof(float) * (size_t)max_tok * n_out);
        memset(xt, 0xFF, amx_bf16_act_size(n_in, max_tok));
        for (int k = n - 1; k >= 0; k--) amx_to_bf16_row(xt, x + (size_t)k * n_in, n_in, k);
        amx_bf16_act_pad(xt, n_in, n);
        amx_matmul_bf16(f.m, xt, n, NULL, y, (size_t)n_out, 0, 3); /* "two threads": 3 + 2 tiles */
        amx_matmul_bf16(f.m, xt, n, NULL, y, (size_t)n_out, 3, nt);
        for (int k = 0; k < max_tok; k++)
            for (int o = 0; o < n_out; o++) {
                const float want = k < n ? solo[(size_t)k * n_out + o] : 0.0f; /* rows past n untouched */
                if (memcmp(&y[(size_t)k * n_out + o], &want, sizeof want))
                    TEST_FAIL_("%s bf16 batch of %d: token %d row %d = %.9g, alone %.9g", quant_type_name(t), n, k,
                               o, y[(size_t)k * n_out + o], want);
            }
    }
    /* rows scattered in the output (a batch whose prompt rows are not one
     * run): packed row a is row rows[a] of y, the others untouched */
    {
        const int n = 20;
        int32_t rows[20];
        for (int a = 0; a < n; a++) rows[a] = a < 16 ? 2 * a : a + 20; /* 0, 2, ..., 30, 36..39 */
        WEFT_ASSERT(rows[n - 1] < max_tok);
        memset(y, 0, sizeof(float) * (size_t)max_tok * n_out);
        for (int a = 0; a < n; a++) amx_to_bf16_row(xt, x + (size_t)rows[a] * n_in, n_in, a);
        amx_bf16_act_pad(xt, n_in, n);
        amx_matmul_bf16(f.m, xt, n, rows, y, (size_t)n_out, 0, nt);
        for (int k = 0; k < max_tok; k++) {
            bool used = false;
            for (int a = 0; a < n; a++) used |= rows[a] == k;
            for (int o = 0; o < n_out; o++) {
                const float want = used ? solo[(size_t)k * n_out + o] : 0.0f;
                if (memcmp(&y[(size_t)k * n_out + o], &want, sizeof want))
                    TEST_FAIL_("%s bf16 scattered rows: token %d row %d = %.9g, want %.9g", quant_type_name(t), k,
                               o, y[(size_t)k * n_out + o], want);
            }
        }
    }
    free(y);
    free(solo);
    free(wf);
    free(xt);
    free(x);
    teardown(&f);
}

TEST(bf16_q4_0) { check_bf16(WEFT_TYPE_Q4_0); }
TEST(bf16_q4_1) { check_bf16(WEFT_TYPE_Q4_1); }
TEST(bf16_q8_0) { check_bf16(WEFT_TYPE_Q8_0); }

TEST(pack_refuses_what_it_cannot_run)
{
    unsigned char w[34 * 8 * 17] = {0};
    ASSERT(amx_pack(WEFT_TYPE_Q8_0, w, 34 * 8, 256, 17) == NULL); /* rows not a multiple of 16 */
    ASSERT(amx_pack(WEFT_TYPE_Q4_K, w, 144, 256, 16) == NULL);    /* K-quant */
    ASSERT(amx_pack(WEFT_TYPE_F32, w, 64, 16, 16) == NULL);
}

int main(void)
{
    if (!amx_available() && !amx_compact_only())
        TEST_SKIP("no AMX or AVX512-VNNI on this CPU (or WEFT_NO_NIB set without AMX)");
    if (!amx_available()) /* the same checks: every call on the compact copies */
        printf("no AMX: checking amx_compact_only()'s kernel (1-8 rows, 8 at a time past that)\n");
    RUN(q4_0);
    RUN(q4_1);
    RUN(q8_0);
    RUN(q8_0_compact_copy);
    if (amx_bf16_available()) {
        RUN(bf16_q4_0);
        RUN(bf16_q4_1);
        RUN(bf16_q8_0);
    } else {
        printf("skip bf16_*: no AMX-BF16 on this CPU\n");
    }
    RUN(pack_refuses_what_it_cannot_run);
    TEST_DONE();
}

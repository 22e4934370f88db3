/* The forward pass on tiny random models: against a naive float reference
 * (every architecture feature, every weight type), batch/sequence/fork
 * consistency of the paged KV cache, and bad input. */
#include <math.h>

#include "test.h"
#include "kernels/quant.h"
#include "tiny_model.h"
#include "weft/model.h"

/* ---- naive reference forward (double precision, dequantized weights) ---- */

typedef struct ref_model {
    tiny_spec sp;
    gguf_file *g;
} ref_model;

static double *ref_tensor(gguf_file *g, const char *name, int64_t *n_in, int64_t *n_out)
{
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t) return NULL;
    int64_t ni = t->ne[0], no = t->n_dims > 1 ? t->ne[1] : 1;
    float *row = malloc((size_t)ni * sizeof *row);
    double *out = malloc((size_t)(ni * no) * sizeof *out);
    for (int64_t r = 0; r < no; r++) {
        quant_dequantize_row((weft_type)t->type, (const char *)t->data + (size_t)r * quant_row_size(t->type, ni), row, ni);
        for (int64_t i = 0; i < ni; i++) out[r * ni + i] = row[i];
    }
    free(row);
    if (n_in) *n_in = ni;
    if (n_out) *n_out = no;
    return out;
}

static void ref_matvec(double *y, const double *w, const double *x, int64_t n_in, int64_t n_out)
{
    for (int64_t r = 0; r < n_out; r++) {
        double s = 0;
        for (int64_t i = 0; i < n_in; i++) s += w[r * n_in + i] * x[i];
        y[r] = s;
    }
}

static void ref_rmsnorm(double *y, const double *x, const double *w, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double sc = 1.0 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++) y[i] = x[i] * sc * w[i];
}

static void ref_rope(double *h, int hd, int pos, float theta, int neox)
{
    for (int j = 0; j < hd / 2; j++) {
        double a = pos * pow(theta, -2.0 * j / hd);
        int i0 = neox ? j : 2 * j, i1 = neox ? j + hd / 2 : 2 * j + 1;
        double x0 = h[i0], x1 = h[i1];
        h[i0] = x0 * cos(a) - x1 * sin(a);
        h[i1] = x0 * sin(a) + x1 * cos(a);
    }
}

/* Logits of the last of n tokens. */
static void ref_forward(const tiny_spec *sp, gguf_file *g, const int32_t *toks, int n, double *logits)
{
    const int dim = sp->dim, hd = dim / sp->n_head, kvd = sp->n_head_kv * hd, ffn = sp->ffn_dim;
    const int qwen = strcmp(sp->arch, "qwen2") == 0;
    double *x = calloc((size_t)n * dim, sizeof *x), *xb = malloc(dim * sizeof *xb);
    double *K = malloc((size_t)n * kvd * sizeof *K), *V = malloc((size_t)n * kvd * sizeof *V);
    double *Q = malloc((size_t)n * dim * sizeof *Q), *att = malloc(dim * sizeof *att);
    double *tmp = malloc(ffn * sizeof *tmp), *tmp2 = malloc(ffn * sizeof *tmp2), *sc = malloc(n * sizeof *sc);
    double *emb = ref_tensor(g, "token_embd.weight", NULL, NULL);
    for (int t = 0; t < n; t++) memcpy(x + t * dim, emb + (size_t)toks[t] * dim, dim * sizeof *x);
    for (int l = 0; l < sp->n_layer; l++) {
        char nm[64];
#define W(s) (snprintf(nm, sizeof nm, "blk.%d.%s", l, s), ref_tensor(g, nm, NULL, NULL))
        double *an = W("attn_norm.weight"), *wq = W("attn_q.weight"), *wk = W("attn_k.weight"),
               *wv = W("attn_v.weight"), *wo = W("attn_output.weight"), *fn = W("ffn_norm.weight"),
               *wg = W("ffn_gate.weight"), *wu = W("ffn_up.weight"), *wd = W("ffn_down.weight");
        double *bq = qwen ? W("attn_q.bias") : NULL, *bk = qwen ? W("attn_k.bias") : NULL,
               *bv = qwen ? W("attn_v.bias") : NULL;
#undef W
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(xb, x + t * dim, an, dim);
            ref_matvec(Q + t * dim, wq, xb, dim, dim);
            ref_matvec(K + t * kvd, wk, xb, dim, kvd);
            ref_matvec(V + t * kvd, wv, xb, dim, kvd);
            for (int i = 0; bq && i < dim; i++) Q[t * dim + i] += bq[i];
            for (int i = 0; bk && i < kvd; i++) K[t * kvd + i] += bk[i], V[t * kvd + i] += bv[i];
            for (int h = 0; h < sp->n_head; h++) ref_rope(Q + t * dim + h * hd, hd, t, sp->rope_theta, qwen);
            for (int h = 0; h < sp->n_head_kv; h++) ref_rope(K + t * kvd + h * hd, hd, t, sp->rope_theta, qwen);
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < sp->n_head; h++) {
                const int kh = h / (sp->n_head / sp->n_head_kv);
                double mx = -1e300, sum = 0;
                for (int p = 0; p <= t; p++) {
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += Q[t * dim + h * hd + d] * K[p * kvd + kh * hd + d];
                    sc[p] = s / sqrt(hd);
                    if (sc[p] > mx) mx = sc[p];
                }
                for (int p = 0; p <= t; p++) sum += sc[p] = exp(sc[p] - mx);
                for (int d = 0; d < hd; d++) {
                    double o = 0;
                    for (int p = 0; p <= t; p++) o += sc[p] / sum * V[p * kvd + kh * hd + d];
                    att[h * hd + d] = o;
                }
            }
            ref_matvec(xb, wo, att, dim, dim);
            for (int i = 0; i < dim; i++) x[t * dim + i] += xb[i];
            ref_rmsnorm(xb, x + t * dim, fn, dim);
            ref_matvec(tmp, wg, xb, dim, ffn);
            ref_matvec(tmp2, wu, xb, dim, ffn);
            for (int i = 0; i < ffn; i++) tmp[i] = tmp[i] / (1 + exp(-tmp[i])) * tmp2[i];
            ref_matvec(xb, wd, tmp, ffn, dim);
            for (int i = 0; i < dim; i++) x[t * dim + i] += xb[i];
        }
        free(an); free(wq); free(wk); free(wv); free(wo); free(fn); free(wg); free(wu); free(wd);
        free(bq); free(bk); free(bv);
    }
    double *on = ref_tensor(g, "output_norm.weight", NULL, NULL);
    double *ow = sp->tied ? emb : ref_tensor(g, "output.weight", NULL, NULL);
    ref_rmsnorm(xb, x + (n - 1) * dim, on, dim);
    ref_matvec(logits, ow, xb, dim, sp->n_vocab);
    if (ow != emb) free(ow);
    free(on); free(emb); free(x); free(xb); free(K); free(V); free(Q); free(att); free(tmp); free(tmp2); free(sc);
}

/* ---- helpers ---- */

/* When set, decode_seq marks its tokens as prompt tokens (weft_batch.prompt):
 * on CPUs with AMX-BF16 their attention then runs on tiles. */
static int mark_prompt;

static int decode_seq(weft_ctx *c, int32_t seq, const int32_t *toks, int n, int32_t start)
{
    int32_t *pos = malloc(n * sizeof *pos), *sq = malloc(n * sizeof *sq);
    int8_t *given = malloc(n);
    for (int i = 0; i < n; i++) pos[i] = start + i, sq[i] = seq, given[i] = 1;
    weft_batch b = {.n = n, .tokens = toks, .pos = pos, .seq = sq, .prompt = mark_prompt ? given : NULL};
    int rc = weft_decode(c, &b);
    free(pos);
    free(sq);
    free(given);
    return rc;
}

static double max_abs_diff(const float *a, const float *b, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static const int32_t prompt[] = {5, 17, 260, 3, 99, 200, 1, 42, 42, 7, 250, 131, 64, 8, 300, 12,
                                 77, 90, 33, 261, 19, 2, 150, 11, 27};
#define N_PROMPT ((int)(sizeof prompt / sizeof prompt[0]))

/* weft vs the reference for one spec; tolerance relative to the logit spread. */
static void check_against_ref(tiny_spec sp, double rel_tol, const char *tag)
{
    char path[256];
    tiny_path(path, sizeof path, tag);
    ASSERT_EQ_INT(tiny_write(&sp, path), 0);
    weft_model *m = NULL;
    int rc = weft_model_load(path, &m);
    if (rc) fprintf(stderr, "  load: %s\n", weft_last_error());
    ASSERT_EQ_INT(rc, 0);
    weft_ctx_params cp = weft_ctx_default_params();
    cp.n_threads = 2;
    cp.n_ctx = 64;
    weft_ctx *c = NULL;
    ASSERT_EQ_INT(weft_ctx_create(m, &cp, &c), 0);
    ASSERT_EQ_INT(decode_seq(c, 0, prompt, N_PROMPT, 0), 0);
    const float *lg = weft_get_logits(c, 0);
    ASSERT(lg != NULL);
    gguf_file *g = NULL;
    ASSERT_EQ_INT(gguf_open(path, &g), 0);
    double *ref = malloc(sp.n_vocab * sizeof *ref);
    ref_forward(&sp, g, prompt, N_PROMPT, ref);
    double lo = 1e300, hi = -1e300, md = 0;
    int am_w = 0, am_r = 0;
    for (int i = 0; i < sp.n_vocab; i++) {
        lo = fmin(lo, ref[i]);
        hi = fmax(hi, ref[i]);
        md = fmax(md, fabs(ref[i] - lg[i]));
        if (lg[i] > lg[am_w]) am_w = i;
        if (ref[i] > ref[am_r]) am_r = i;
    }
    fprintf(stderr, "  %-14s max |weft - ref| = %.5f (logit range %.3f)\n", tag, md, hi - lo);
    free(ref);
    gguf_close(g);
    weft_ctx_destroy(c);
    weft_model_free(m);
    unlink(path);
    ASSERT(md <= rel_tol * (hi - lo));
    if (rel_tol < 0.01) ASSERT_EQ_INT(am_w, am_r);
}

TEST(llama_f32_matches_reference)
{
    tiny_spec sp = tiny_default();
    check_against_ref(sp, 2e-3, "llama-f32");
}

/* Below AVX-512 the attention runs the fallback path (vec_dot_f16_cols and
 * friends over the transposed K cache), and the matrix products the AVX2 or
 * scalar kernels: every level the CPU has must match the reference. */
TEST(every_simd_level_matches_reference)
{
    const quant_simd_level top = quant_simd();
    static const quant_simd_level levels[] = {QUANT_SIMD_SCALAR, QUANT_SIMD_AVX2, QUANT_SIMD_AVX2_VNNI,
                                              QUANT_SIMD_AVX512_VNNI};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (quant_simd_set(levels[i]) != 0) continue;
        fprintf(stderr, "  level %s\n", quant_simd_name(levels[i]));
        tiny_spec sp = tiny_default();
        check_against_ref(sp, 2e-3, "llama-f32");
        sp = tiny_default();
        sp.weight_type = WEFT_TYPE_Q8_0;
        sp.embd_type = WEFT_TYPE_Q8_0;
        check_against_ref(sp, 4e-2, "q8_0");
        if (test_cur_failed) break;
    }
    quant_simd_set(top);
}

/* Prompt tokens (their attention on AMX-BF16 tiles or AVX512-BF16 where
 * the CPU has them; the same path as the rest elsewhere) against the
 * reference, at head sizes 64 and 128. */
TEST(prompt_tokens_match_reference)
{
    mark_prompt = 1;
    tiny_spec sp = tiny_default();
    check_against_ref(sp, 2e-3, "llama-f32 prompt");
    sp = tiny_default();
    sp.weight_type = WEFT_TYPE_Q4_1;
    sp.embd_type = WEFT_TYPE_Q8_0;
    check_against_ref(sp, 4e-2, "q4_1 prompt");
    sp = tiny_default();
    sp.n_head = 2; /* head size 128 */
    sp.n_head_kv = 1;
    check_against_ref(sp, 2e-3, "hd128 prompt");
    mark_prompt = 0;
}

TEST(qwen2_biases_neox_untied_match_reference)
{
    tiny_spec sp = tiny_default();
    sp.arch = "qwen2";
    sp.tied = 0;
    sp.seed = 7;
    check_against_ref(sp, 2e-3, "qwen2-f32");
}

TEST(spm_tokenizer_model_loads_and_matches)
{
    tiny_spec sp = tiny_default();
    sp.spm = 1;
    sp.seed = 9;
    check_against_ref(sp, 2e-3, "llama-spm");
}

TEST(every_weight_type_matches_reference)
{
    const int types[] = {WEFT_TYPE_F16, WEFT_TYPE_BF16, WEFT_TYPE_Q8_0, WEFT_TYPE_Q4_0,
                         WEFT_TYPE_Q4_1, WEFT_TYPE_Q5_0, WEFT_TYPE_Q5_1, WEFT_TYPE_Q4_K,
                         WEFT_TYPE_Q5_K, WEFT_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        tiny_spec sp = tiny_default();
        sp.weight_type = types[i];
        sp.embd_type = types[i];
        sp.tied = (int)(i % 2);
        sp.seed = 100 + (uint32_t)i;
        /* activations are quantized to 8 bits on the quantized paths: a few
         * percent of the logit range is the expected error, the reference
         * uses the same dequantized weights */
        const double tol = types[i] == WEFT_TYPE_F16 || types[i] == WEFT_TYPE_BF16 ? 5e-3 : 4e-2;
        check_against_ref(sp, tol, quant_type_name(types[i]));
        if (test_cur_failed) return;
    }
}

static weft_model *load_tiny(tiny_spec sp, const char *tag, char *path, size_t cap)
{
    tiny_path(path, cap, tag);
    if (tiny_write(&sp, path) != 0) return NULL;
    weft_model *m = NULL;
    if (weft_model_load(path, &m) != 0) fprintf(stderr, "  load: %s\n", weft_last_error());
    return m;
}

TEST(batched_prefill_equals_token_by_token)
{
    char path[256];
    tiny_spec sp = tiny_default();
    sp.weight_type = WEFT_TYPE_Q4_1;
    sp.embd_type = WEFT_TYPE_Q8_0;
    weft_model *m = load_tiny(sp, "batch", path, sizeof path);
    ASSERT(m != NULL);
    weft_ctx_params cp = weft_ctx_default_params();
    cp.n_threads = 2;
    cp.n_ctx = 64;
    cp.n_seq_max = 2;
    cp.n_batch = 7; /* forces chunking of the 25-token prompt */
    weft_ctx *c = NULL;
    ASSERT_EQ_INT(weft_ctx_create(m, &cp, &c), 0);
    ASSERT_EQ_INT(decode_seq(c, 0, prompt, N_PROMPT, 0), 0);
    float *a = malloc(sp.n_vocab * sizeof *a);
    memcpy(a, weft_get_logits(c, 0), sp.n_vocab * sizeof *a);
    for (int i = 0; i < N_PROMPT; i++) ASSERT_EQ_INT(decode_seq(c, 1, prompt + i, 1, i), 0);
    const double d = max_abs_diff(a, weft_get_logits(c, 0), sp.n_vocab);
    ASSERT(d < 1e-5);
    ASSERT_EQ_INT(weft_seq_len(c, 0), N_PROMPT);
    ASSERT_EQ_INT(weft_seq_len(c, 1), N_PROMPT);
    /* every row's logits from one 25-token batch split in 7-token chunks:
     * more rows than n_batch; row i equals the one-by-one run at i */
    ASSERT_EQ_INT(weft_seq_truncate(c, 0, 0), 0);
    int32_t pos[N_PROMPT], sq[N_PROMPT];
    int8_t want[N_PROMPT], given[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++) pos[i] = i, sq[i] = 0, want[i] = 1, given[i] = 1;
    weft_batch all = {.n = N_PROMPT, .tokens = prompt, .pos = pos, .seq = sq, .want_logits = want,
                      .prompt = mark_prompt ? given : NULL};
    ASSERT_EQ_INT(weft_decode(c, &all), 0);
    ASSERT_EQ_INT(weft_n_logits(c), N_PROMPT);
    float *rows = malloc((size_t)N_PROMPT * sp.n_vocab * sizeof *rows);
    for (int i = 0; i < N_PROMPT; i++)
        memcpy(rows + (size_t)i * sp.n_vocab, weft_get_logits(c, i), sp.n_vocab * sizeof *rows);
    ASSERT_EQ_INT(weft_seq_truncate(c, 1, 0), 0);
    for (int i = 0; i < N_PROMPT; i++) {
        ASSERT_EQ_INT(decode_seq(c, 1, prompt + i, 1, i), 0);
        ASSERT(max_abs_diff(rows + (size_t)i * sp.n_vocab, weft_get_logits(c, 0), sp.n_vocab) < 1e-5);
    }
    free(rows);
    free(a);
    weft_ctx_destroy(c);
    weft_model_free(m);
    unlink(path);
}

/* Generated tokens at a long context (the other tests stay within 64
 * positions): a 600-token sequence given as generated tokens against the
 * reference, and each of its last tokens decoded alone equal to the same
 * row of the all-at-once batch, bit for bit. */
TEST(long_context_generated_tokens_match_reference)
{
    char path[256];
    tiny_spec sp = tiny_default();
    sp.n_ctx = 1024;
    weft_model *m = load_tiny(sp, "longctx", path, sizeof path);
    ASSERT(m != NULL);
    enum { N = 600, TAIL = 6 };
    int32_t toks[N], pos[N], sq[N];
    int8_t want[N];
    uint32_t rng = 7;
    for (int i = 0; i < N; i++)
        toks[i] = (int32_t)(tiny_rng(&rng) % (uint32_t)sp.n_vocab), pos[i] = i, sq[i] = 0, want[i] = i >= N - TAIL;
    weft_ctx_params cp = weft_ctx_default_params();
    cp.n_threads = 2;
    cp.n_ctx = N + 8;
    cp.n_seq_max = 2;
    weft_ctx *c = NULL;
    ASSERT_EQ_INT(weft_ctx_create(m, &cp, &c), 0);
    weft_batch b = {.n = N, .tokens = toks, .pos = pos, .seq = sq, .want_logits = want}; /* not marked: generated */
    ASSERT_EQ_INT(weft_decode(c, &b), 0);
    ASSERT_EQ_INT(weft_n_logits(c), TAIL);
    float *rows = malloc((size_t)TAIL * sp.n_vocab * sizeof *rows);
    for (int i = 0; i < TAIL; i++) memcpy(rows + (size_t)i * sp.n_vocab, weft_get_logits(c, i), sp.n_vocab * sizeof *rows);
    /* against the reference */
    gguf_file *g = NULL;
    ASSERT_EQ_INT(gguf_open(path, &g), 0);
    double *ref = malloc(sp.n_vocab * sizeof *ref);
    ref_forward(&sp, g, toks, N, ref);
    double lo = 1e300, hi = -1e300, md = 0;
    const float *last = rows + (size_t)(TAIL - 1) * sp.n_vocab;
    for (int i = 0; i < sp.n_vocab; i++) {
        lo = fmin(lo, ref[i]);
        hi = fmax(hi, ref[i]);
        md = fmax(md, fabs(ref[i] - last[i]));
    }
    fprintf(stderr, "  %d positions: max |weft - ref| = %.5f (logit range %.3f)\n", N, md, hi - lo);
    /* 0.0006 of 141.5 here */
    ASSERT(md <= 2e-5 * (hi - lo));
    /* the same sequence again, its last tokens one at a time */
    for (int i = 0; i < N; i++) sq[i] = 1;
    b.n = N - TAIL;
    b.want_logits = NULL;
    ASSERT_EQ_INT(weft_decode(c, &b), 0);
    for (int k = 0; k < TAIL; k++) {
        const int i = N - TAIL + k;
        weft_batch one = {.n = 1, .tokens = toks + i, .pos = pos + i, .seq = sq + i};
        ASSERT_EQ_INT(weft_decode(c, &one), 0);
        if (memcmp(weft_get_logits(c, 0), rows + (size_t)k * sp.n_vocab, sp.n_vocab * sizeof *rows))
            TEST_FAIL_("position %d alone: logits differ from the batch's (max %.3g)", i,
                       max_abs_diff(weft_get_logits(c, 0), rows + (size_t)k * sp.n_vocab, sp.n_vocab));
    }
    free(ref);
    free(rows);
    gguf_close(g);
    weft_ctx_destroy(c);
    weft_model_free(m);
    unlink(path);
}

TEST(two_sequences_in_one_batch_equal_separate_runs)
{
    char path[256];
    tiny_spec sp = tiny_default();
    weft_model *m = load_tiny(sp, "twoseq", path, sizeof path);
    ASSERT(m != NULL);
    weft_ctx_params cp = weft_ctx_default_params();
    cp.n_threads = 2;
    cp.n_ctx = 64;
    cp.n_seq_max = 3;
    weft_ctx *c = NULL;
    ASSERT_EQ_INT(weft_ctx_create(m, &cp, &c), 0);
    /* interleave seq 0 (prompt[0..10)) and seq 1 (prompt[10..25)) in one batch */
    int32_t tk[25], pos[25], sq[25];
    int8_t want[25] = {0};
    int n = 0, i0 = 0, i1 = 0;
    while (i0 < 10 || i1 < 15) {
        if (i0 < 10) tk[n] = prompt[i0], pos[n] = i0, sq[n] = 0, i0++, n++;
        if (i1 < 15) tk[n] = prompt[10 + i1], pos[n] = i1, sq[n] = 1, i1++, n++;
    }
    for (int i = 0; i < n; i++) want[i] = (sq[i] == 0 && pos[i] == 9) || (sq[i] == 1 && pos[i] == 14);
    weft_batch b = {.n = n, .tokens = tk, .pos = pos, .seq = sq, .want_logits = want};
    ASSERT_EQ_INT(weft_decode(c, &b), 0);
    ASSERT_EQ_INT(weft_n_logits(c), 2);
    float *l0 = malloc(sp.n_vocab * sizeof *l0), *l1 = malloc(sp.n_vocab * sizeof *l1);
    /* which of the two logit rows is seq 0 depends on batch order */
    int first_is_seq0 = 0;
    for (int i = 0; i < n; i++)
        if (want[i]) {
            first_is_seq0 = sq[i] == 0;
            break;
        }
    memcpy(l0, weft_get_logits(c, first_is_seq0 ? 0 : 1), sp.n_vocab * sizeof *l0);
    memcpy(l1, weft_get_logits(c, first_is_seq0 ? 1 : 0), sp.n_vocab * sizeof *l1);
    ASSERT_EQ_INT(decode_seq(c, 2, prompt, 10, 0), 0);
    ASSERT(max_abs_diff(l0, weft_get_logits(c, 0), sp.n_vocab) < 1e-5);
    ASSERT_EQ_INT(weft_seq_truncate(c, 2, 0), 0);
    ASSERT_EQ_INT(decode_seq(c, 2, prompt + 10, 15, 0), 0);
    ASSERT(max_abs_diff(l1, weft_get_logits(c, 0), sp.n_vocab) < 1e-5);
    free(l0);
    free(l1);
    weft_ctx_destroy(c);
    weft_model_free(m);
    unlink(path);
}

TEST(fork_shares_prefix_and_copies_on_write)
{
    char path[256];
    tiny_spec sp = tiny_default();
    weft_model *m = load_tiny(sp, "fork", path, sizeof path);
    ASSERT(m != NULL);
    weft_ctx_params cp = weft_ctx_default_params();
    cp.n_threads = 2;
    cp.n_ctx = 64;
    cp.n_seq_max = 3;
    weft_ctx *c = NULL;
    ASSERT_EQ_INT(weft_ctx_create(m, &cp, &c), 0);
    /* seq 0 holds 20 tokens; seq 1 forks its first 18 (a partial second block)
     * and continues with different tokens; seq 0 must not see the writes. */
    ASSERT_EQ_INT(decode_seq(c, 0, prompt, 20, 0), 0);
    ASSERT_EQ_INT(weft_seq_fork(c, 0, 1, 18), 0);
    const int32_t alt[3] = {9, 8, 7};
    ASSERT_EQ_INT(decode_seq(c, 1, alt, 3, 18), 0);
    float *forked = malloc(sp.n_vocab * sizeof *forked);
    memcpy(forked, weft_get_logits(c, 0), sp.n_vocab * sizeof *forked);
    ASSERT_EQ_INT(decode_seq(c, 0, prompt + 20, 1, 20), 0);
    float *orig = malloc(sp.n_vocab * sizeof *orig);
    memcpy(orig, weft_get_logits(c, 0), sp.n_vocab * sizeof *orig);
    /* fresh computations to compare with */
    int32_t both[21];
    memcpy(both, prompt, 18 * sizeof *both);
    memcpy(both + 18, alt, sizeof alt);
    ASSERT_EQ_INT(decode_seq(c, 2, both, 21, 0), 0);
    ASSERT(max_abs_diff(forked, weft_get_logits(c, 0), sp.n_vocab) < 1e-5);
    ASSERT_EQ_INT(weft_seq_truncate(c, 2, 0), 0);
    ASSERT_EQ_INT(decode_seq(c, 2, prompt, 21, 0), 0);
    ASSERT(max_abs_diff(orig, weft_get_logits(c, 0), sp.n_vocab) < 1e-5);
    free(forked);
    free(orig);
    weft_ctx_destroy(c);
    weft_model_free(m);
    unlink(path);
}

TEST(bad_batches_are_rejected_and_leave_the_cache_alone)
{
    char path[256];
    tiny_spec sp = tiny_default();
    weft_model *m = load_tiny(sp, "badbatch", path, sizeof path);
    ASSERT(m != NULL);
    weft_ctx_params cp = weft_ctx_default_params();
    cp.n_threads = 1;
    cp.n_ctx = 32;
    cp.n_seq_max = 2;
    cp.kv_mem = 0;
    weft_ctx *c = NULL;
    ASSERT_EQ_INT(weft_ctx_create(m, &cp, &c), 0);
    ASSERT_EQ_INT(decode_seq(c, 0, prompt, 5, 0), 0);
    ASSERT_EQ_INT(decode_seq(c, 0, prompt, 1, 7), WEFT_EINVAL); /* gap */
    ASSERT(strstr(weft_last_error(), "position") != NULL);
    const int32_t bad_tok = 100000;
    ASSERT_EQ_INT(decode_seq(c, 0, &bad_tok, 1, 5), WEFT_EINVAL);
    ASSERT_EQ_INT(decode_seq(c, 5, prompt, 1, 0), WEFT_EINVAL); /* no such sequence */
    int32_t many[40];
    for (int i = 0; i < 40; i++) many[i] = i;
    ASSERT_EQ_INT(decode_seq(c, 1, many, 40, 0), WEFT_ERANGE); /* beyond n_ctx */
    ASSERT_EQ_INT(weft_seq_len(c, 0), 5);
    ASSERT_EQ_INT(weft_seq_len(c, 1), 0);
    ASSERT_EQ_INT(decode_seq(c, 0, prompt + 5, 1, 5), 0);
    weft_ctx_destroy(c);
    /* a KV budget too small for a single block */
    cp.kv_mem = 1;
    ASSERT_EQ_INT(weft_ctx_create(m, &cp, &c), WEFT_ERANGE);
    /* one block (2 layers x K,V x 16 positions x 128 values x 2 bytes):
     * the 17th position cannot be stored, and the failure changes nothing */
    cp.kv_mem = 2 * 2 * 16 * 128 * 2;
    ASSERT_EQ_INT(weft_ctx_create(m, &cp, &c), 0);
    ASSERT_EQ_INT(decode_seq(c, 0, many, 16, 0), 0);
    ASSERT_EQ_INT(decode_seq(c, 1, many, 1, 0), WEFT_ENOKV);
    ASSERT_EQ_INT(decode_seq(c, 0, many + 16, 1, 16), WEFT_ENOKV);
    ASSERT_EQ_INT(weft_seq_len(c, 0), 16);
    ASSERT_EQ_INT(weft_seq_truncate(c, 0, 0), 0);
    ASSERT_EQ_INT(decode_seq(c, 1, many, 3, 0), 0);
    weft_ctx_destroy(c);
    weft_model_free(m);
    unlink(path);
}

static void expect_load_error(tiny_spec sp, const char *tag, int code, const char *needle)
{
    char path[256];
    tiny_path(path, sizeof path, tag);
    ASSERT_EQ_INT(tiny_write(&sp, path), 0);
    weft_model *m = NULL;
    int rc = weft_model_load(path, &m);
    unlink(path);
    ASSERT_EQ_INT(rc, code);
    ASSERT(m == NULL);
    if (!strstr(weft_last_error(), needle))
        TEST_FAIL_("error '%s' does not mention '%s'", weft_last_error(), needle);
}

TEST(bad_models_get_clear_errors)
{
    tiny_spec sp = tiny_default();
    sp.arch_override = "mamba";
    expect_load_error(sp, "arch", WEFT_EUNSUPPORTED, "mamba");
    sp = tiny_default();
    sp.skip_tensor = "blk.1.ffn_up.weight";
    expect_load_error(sp, "missing", WEFT_EFORMAT, "blk.1.ffn_up.weight");
    sp = tiny_default();
    sp.weight_type = 16; /* IQ2_XXS: a real GGML type weft does not implement */
    expect_load_error(sp, "iq2", WEFT_EUNSUPPORTED, "iq2_xxs");
    weft_model *m = NULL;
    ASSERT_EQ_INT(weft_model_load("/nonexistent/model.gguf", &m), WEFT_EIO);
    ASSERT(strstr(weft_last_error(), "/nonexistent/model.gguf") != NULL);
}

int main(void)
{
    RUN(llama_f32_matches_reference);
    RUN(every_simd_level_matches_reference);
    RUN(qwen2_biases_neox_untied_match_reference);
    RUN(spm_tokenizer_model_loads_and_matches);
    RUN(every_weight_type_matches_reference);
    RUN(batched_prefill_equals_token_by_token);
    RUN(prompt_tokens_match_reference);
    mark_prompt = 1; /* again with prompt tokens: tile rows must not depend on each other */
    RUN(batched_prefill_equals_token_by_token);
    mark_prompt = 0;
    RUN(long_context_generated_tokens_match_reference);
    RUN(two_sequences_in_one_batch_equal_separate_runs);
    RUN(fork_shares_prefix_and_copies_on_write);
    RUN(bad_batches_are_rejected_and_leave_the_cache_alone);
    RUN(bad_models_get_clear_errors);
    TEST_DONE();
}

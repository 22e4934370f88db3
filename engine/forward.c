/*
 * The forward pass of a llama-family transformer over a batch of tokens, and
 * the context that holds its KV cache and scratch buffers.
 *
 * KV layout: a block (cache/kv.h) holds KV_BLOCK_TOKENS positions of every
 * layer as [layer][K | V][position in block][n_head_kv * head_dim] in f16,
 * so attention reads one contiguous run of rows per block and layer. A
 * sequence maps position p to block table[p / KV_BLOCK_TOKENS].
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache/kv.h"
#include "engine/ctx_internal.h"
#include "engine/model_internal.h"

typedef struct kv_seq {
    int32_t *blocks; /* block table: (max_blocks) */
    int32_t n_blocks;
    int32_t len;     /* positions held */
} kv_seq;

struct weft_ctx {
    const weft_model *m;
    weft_ctx_params p;
    pool *pool;
    kv_pool *kv;
    kv_seq *seqs;        /* (n_seq_max) */
    int32_t max_blocks;  /* per sequence */
    size_t kv_row;       /* bytes of one position's K (or V) in one layer */
    size_t kv_layer;     /* bytes of one layer in a block: K and V */
    double prof[16];     /* WEFT_PROFILE: seconds per forward phase (PH_*) */

    /* scratch, sized for n_batch tokens */
    float *x;      /* (n_batch, dim) residual stream */
    float *xb;     /* (n_batch, dim) normed input */
    float *q;      /* (n_batch, n_head * head_dim) */
    float *k;      /* (n_batch, kv_dim) */
    float *v;      /* (n_batch, kv_dim) */
    float *att;    /* (n_batch, n_head * head_dim) attention output */
    float *hb;     /* (n_batch, ffn_dim) gate, then silu(gate) * up */
    float *hb2;    /* (n_batch, ffn_dim) up */
    float *rope_cs; /* (n_batch, rope_dim) the batch's rotary cosines and sines */
    void *qbuf;    /* quantized activations */
    float *scores; /* (n_threads, group, n_ctx) attention scores of the query
                      heads sharing a KV head */
    uint16_t *q16; /* (n_threads, group, head_dim) those queries in f16 */
    char *attn;    /* (n_threads, attn_bytes): op_attention's scratch, or NULL
                      (no AVX-512: attention() instead) */
    void *attn_raw;
    size_t attn_bytes;
    float *logits; /* (logits_cap, n_vocab) */
    int32_t logits_cap;
    int32_t n_logits;
    weft_perf perf;
    int32_t (*block_alloc)(void *ud); /* NULL: kv_block_alloc */
    void *block_alloc_ud;
};

/* What one pool run of the forward pass works on. */
typedef struct fwd_job {
    weft_ctx *c;
    int n;                  /* tokens in this chunk */
    const int32_t *tokens, *pos, *seq;
    const int8_t *prompt;   /* (n) or NULL: see weft_batch.prompt */
    const int32_t *out_rows; /* rows whose logits are wanted, (n_out) */
    int n_out;
    float *logits;          /* (n_out, n_vocab) */
} fwd_job;

weft_ctx_params weft_ctx_default_params(void)
{
    weft_ctx_params p = {0};
    p.n_ctx = 0;
    p.n_batch = 512;
    p.n_threads = 0;
    p.n_seq_max = 1;
    p.kv_mem = 0;
    return p;
}

/* A block holds, per layer, K then V of its KV_BLOCK_TOKENS positions (f16).
 * K is stored transposed: element c (of kv_dim) of row r at kt[c * 16 + r],
 * so a head's dimension d over the block's 16 positions is one contiguous
 * vector — what the score loop multiplies, with no transposition at read.
 * V is stored by rows (row r at r * kv_row bytes), as the weighted sum reads
 * it. */
static inline unsigned char *kv_block_layer(const weft_ctx *c, const kv_seq *s, int layer, int32_t pos)
{
    return (unsigned char *)kv_block_data(c->kv, s->blocks[pos / KV_BLOCK_TOKENS]) + layer * c->kv_layer;
}

/* K of the block that holds pos, transposed (kt[c * 16 + r]). */
static inline uint16_t *kv_kt(const weft_ctx *c, const kv_seq *s, int layer, int32_t pos)
{
    return (uint16_t *)kv_block_layer(c, s, layer, pos);
}

/* V row of position pos. */
static inline uint16_t *kv_v(const weft_ctx *c, const kv_seq *s, int layer, int32_t pos)
{
    return (uint16_t *)(kv_block_layer(c, s, layer, pos) + KV_BLOCK_TOKENS * c->kv_row +
                        (size_t)(pos % KV_BLOCK_TOKENS) * c->kv_row);
}

/* Writes this chunk's K and V rows into the cache (f16). */
static void kv_store(const pool_thread *t, weft_ctx *c, const fwd_job *j, int layer)
{
    const int kv_dim = c->m->hp.n_head_kv * c->m->hp.head_dim;
    uint16_t tmp[4096];
    WEFT_ASSERT(kv_dim <= 4096);
    long lo, hi;
    pool_range(t, j->n, &lo, &hi);
    for (long i = lo; i < hi; i++) {
        const kv_seq *s = &c->seqs[j->seq[i]];
        const int32_t r = j->pos[i] % KV_BLOCK_TOKENS;
        uint16_t *kt = kv_kt(c, s, layer, j->pos[i]) + r;
        vec_f32_to_f16(tmp, c->k + i * kv_dim, kv_dim);
        for (int e = 0; e < kv_dim; e++) kt[(size_t)e * KV_BLOCK_TOKENS] = tmp[e];
        vec_f32_to_f16(kv_v(c, s, layer, j->pos[i]), c->v + i * kv_dim, kv_dim);
    }
}

/* Causal attention of every (token, head) over its sequence's cached
 * positions 0..pos. Mirrors llama.cpp's non-flash path: q and the softmax
 * weights are rounded to f16 before they meet the f16 cache. The query heads
 * that share a KV head (grouped-query attention) go through each block of
 * cached rows together, so the rows are read from memory once, not once per
 * query head: with many long sequences in a batch this read is what bounds
 * the step. */
static void attention(const pool_thread *t, weft_ctx *c, const fwd_job *j, int layer)
{
    const weft_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_head = hp->n_head, n_kv_head = hp->n_head_kv;
    const int group = n_head / n_kv_head;
    const float scale = 1.0f / sqrtf((float)hd);
    float *sc = c->scores + (size_t)t->ith * group * c->p.n_ctx;
    uint16_t *q16 = c->q16 + (size_t)t->ith * group * hd;
    const size_t stride = c->kv_row / sizeof(uint16_t);
    /* Interleaved, not in ranges: later tokens attend over more positions. */
    for (long i = t->ith; i < (long)j->n * n_kv_head; i += t->nth) {
        const int tk = (int)(i / n_kv_head), kvh = (int)(i % n_kv_head), h0 = kvh * group;
        const kv_seq *s = &c->seqs[j->seq[tk]];
        const int32_t n_kv = j->pos[tk] + 1;
        for (int g = 0; g < group; g++)
            vec_f32_to_f16(q16 + (size_t)g * hd, c->q + (size_t)tk * n_head * hd + (size_t)(h0 + g) * hd, hd);
        /* positions come a block at a time: its K (and V) rows are contiguous */
        for (int32_t p = 0; p < n_kv; p += KV_BLOCK_TOKENS) {
            const int nr = n_kv - p < KV_BLOCK_TOKENS ? n_kv - p : KV_BLOCK_TOKENS;
            const uint16_t *kt = kv_kt(c, s, layer, p) + (size_t)kvh * hd * KV_BLOCK_TOKENS;
            for (int g = 0; g < group; g++)
                vec_dot_f16_cols(hd, q16 + (size_t)g * hd, kt, nr, sc + (size_t)g * n_kv + p);
        }
        /* the weights meet V in f16, as in llama.cpp */
        for (int g = 0; g < group; g++) vec_softmax_f16w(sc + (size_t)g * n_kv, n_kv, scale);
        float *out = c->att + (size_t)tk * n_head * hd + (size_t)h0 * hd;
        memset(out, 0, (size_t)group * hd * sizeof *out);
        for (int32_t p = 0; p < n_kv; p += KV_BLOCK_TOKENS) {
            const int nr = n_kv - p < KV_BLOCK_TOKENS ? n_kv - p : KV_BLOCK_TOKENS;
            const uint16_t *vrows = kv_v(c, s, layer, p) + kvh * hd;
            for (int g = 0; g < group; g++)
                vec_mad_f16_rows(hd, out + (size_t)g * hd, vrows, stride, nr, sc + (size_t)g * n_kv + p);
        }
    }
}

/* Query rows (tokens times the heads of a GQA group) of one op_attention
 * call: the tokens are of one sequence at consecutive positions, so a
 * prefill chunk's queries read (and on tiles convert) each cached block
 * once for all of them. 48 is three 16-row AMX tiles, which share each
 * converted block (ops.c, attn_amx_rows); it was 12 (four tokens of
 * SmolLM2's groups of three), which converted every block four times as
 * often. */
#define ATTN_ROWS 48

/* Tokens per op_attention call: as many as fill ATTN_ROWS, at least one. */
static int attn_tile_tokens(const weft_hparams *hp)
{
    const int group = hp->n_head / hp->n_head_kv;
    return group >= ATTN_ROWS ? 1 : ATTN_ROWS / group;
}

/* The per-thread scratch of attention_tiled, carved from c->attn. */
typedef struct {
    float *qf, *sc, **outs;
    const uint16_t **kb, **vb;
    int32_t *n_kv;
    uint16_t *vs;
} attn_scratch;

static size_t attn_scratch_layout(const weft_ctx *c, char *base, attn_scratch *a)
{
    const weft_hparams *hp = &c->m->hp;
    const size_t nq = (size_t)attn_tile_tokens(hp) * (size_t)(hp->n_head / hp->n_head_kv);
    const size_t nq16 = (nq + 15) & ~(size_t)15; /* sc: op_attention pads to 16 rows */
    const size_t ld = ((size_t)c->p.n_ctx + 15) & ~(size_t)15, hd = (size_t)hp->head_dim;
    size_t off = 0;
#define CARVE(field, type, count)                                                                  \
    do {                                                                                           \
        off = (off + 63) & ~(size_t)63;                                                            \
        if (a) a->field = (type)(void *)(base + off);                                              \
        off += (count) * sizeof(*a->field);                                                        \
    } while (0)
    CARVE(qf, float *, nq * hd);
    CARVE(sc, float *, nq16 * ld);
    CARVE(outs, float **, nq);
    CARVE(kb, const uint16_t **, (size_t)c->max_blocks);
    CARVE(vb, const uint16_t **, (size_t)c->max_blocks);
    CARVE(n_kv, int32_t *, nq);
    CARVE(vs, uint16_t *, op_attention_vs_size((int)hd, ld) / sizeof(uint16_t));
#undef CARVE
    return (off + 63) & ~(size_t)63;
}

/* attention() with op_attention: work items are (tile of up to
 * attn_tile_tokens() tokens of one sequence at consecutive positions, KV head); the query
 * heads of the group and the tile's tokens go through the cached blocks
 * together. Each token's result is the same whatever tile it is in. */
static void attention_tiled(const pool_thread *t, weft_ctx *c, const fwd_job *j, int layer)
{
    const weft_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_head = hp->n_head, n_kv_head = hp->n_head_kv;
    const int group = n_head / n_kv_head;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t stride = c->kv_row / sizeof(uint16_t);
    attn_scratch a;
    attn_scratch_layout(c, c->attn + (size_t)t->ith * c->attn_bytes, &a);
    const size_t ld = ((size_t)c->p.n_ctx + 15) & ~(size_t)15;
    /* tiles: the same scan on every thread, items dealt round-robin */
    const int tile = attn_tile_tokens(hp);
    long item = 0;
    for (int32_t tk0 = 0; tk0 < j->n;) {
        int32_t nt = 1;
        /* a tile holds prompt tokens or generated ones, not both: the two
         * may take different kernels (op_attention's `prompt`) */
        const bool prompt = j->prompt && j->prompt[tk0];
        while (nt < tile && tk0 + nt < j->n && j->seq[tk0 + nt] == j->seq[tk0] &&
               j->pos[tk0 + nt] == j->pos[tk0] + nt && (j->prompt && j->prompt[tk0 + nt]) == prompt)
            nt++;
        const kv_seq *s = &c->seqs[j->seq[tk0]];
        const int32_t n_max = j->pos[tk0 + nt - 1] + 1;
        for (int kvh = 0; kvh < n_kv_head; kvh++, item++) {
            if (item % t->nth != t->ith) continue;
            int nq = 0;
            for (int32_t k = 0; k < nt; k++)
                for (int g = 0; g < group; g++, nq++) {
                    const int h = kvh * group + g;
                    const float *q = c->q + (size_t)(tk0 + k) * n_head * hd + (size_t)h * hd;
                    /* q meets the f16 cache in f16, as in llama.cpp */
                    vec_round_f16(a.qf + (size_t)nq * hd, q, hd);
                    a.n_kv[nq] = j->pos[tk0 + k] + 1;
                    a.outs[nq] = c->att + (size_t)(tk0 + k) * n_head * hd + (size_t)h * hd;
                }
            for (int32_t p = 0; p < n_max; p += KV_BLOCK_TOKENS) {
                a.kb[p / KV_BLOCK_TOKENS] = kv_kt(c, s, layer, p) + (size_t)kvh * hd * KV_BLOCK_TOKENS;
                a.vb[p / KV_BLOCK_TOKENS] = kv_v(c, s, layer, p) + kvh * hd;
            }
            op_attention(hd, nq, a.qf, a.kb, a.vb, stride, a.n_kv, scale, a.sc, ld, a.outs, prompt, a.vs);
        }
        tk0 += nt;
    }
}

static void embed(const pool_thread *t, weft_ctx *c, const fwd_job *j)
{
    const weft_model *m = c->m;
    long lo, hi;
    pool_range(t, j->n, &lo, &hi);
    for (long i = lo; i < hi; i++)
        quant_dequantize_row(m->tok_embd.type,
                             (const char *)m->tok_embd.data + (size_t)j->tokens[i] * m->tok_embd.row_bytes,
                             c->x + (size_t)i * m->hp.dim, m->hp.dim);
}

/* WEFT_PROFILE=1: thread 0's wall time per phase of the forward pass,
 * summed over the context's life and printed to stderr when it is
 * destroyed. A phase that ends at a barrier (the matrix products,
 * attention) includes waiting for the slowest thread; the row-parallel ones
 * between them (norms, adds) have none and count thread 0's own time. Off by
 * default; one clock read per phase when on. */
enum { PH_EMBED, PH_NORM, PH_QKV, PH_ROPE_KV, PH_ATTN, PH_WO, PH_GATE_UP, PH_DOWN, PH_HEAD, PH_N };
static const char *const prof_names[PH_N] = {"embed", "norms, adds, swiglu", "q k v", "rope, kv store",
                                              "attention", "wo", "gate, up", "down", "output head"};
static bool prof_on;
_Static_assert(PH_N <= 16, "weft_ctx.prof holds every phase");
static pthread_once_t prof_once = PTHREAD_ONCE_INIT;
static void prof_init(void)
{
    const char *e = getenv("WEFT_PROFILE");
    prof_on = e && *e && strcmp(e, "0") != 0;
}
static double prof_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
#define PHASE(k)                                                                                   \
    do {                                                                                           \
        if (prof_on && t->ith == 0) {                                                              \
            const double now_ = prof_now();                                                        \
            c->prof[k] += now_ - last;                                                            \
            last = now_;                                                                           \
        }                                                                                          \
    } while (0)

static void prof_print(const weft_ctx *c)
{
    double total = 0.0;
    for (int k = 0; k < PH_N; k++) total += c->prof[k];
    if (!prof_on || total <= 0.0) return;
    fprintf(stderr, "weft profile (forward passes, thread 0, %.3f s):\n", total);
    for (int k = 0; k < PH_N; k++)
        fprintf(stderr, "  %-22s %9.3f s %5.1f%%\n", prof_names[k], c->prof[k], 100.0 * c->prof[k] / total);
}

static void forward(void *arg, const pool_thread *t)
{
    fwd_job *j = arg;
    weft_ctx *c = j->c;
    const weft_model *m = c->m;
    const weft_hparams *hp = &m->hp;
    const int n = j->n, dim = hp->dim;
    double last = prof_on && t->ith == 0 ? prof_now() : 0.0;

    /* Row-parallel ops follow each other without a barrier (ops.h): a
     * barrier stands only where a thread reads rows another one wrote */
    embed(t, c, j);
    op_rope_angles(t, c->rope_cs, j->pos, n, hp->rope_dim, hp->rope_theta, hp->rope_freq_scale,
                   m->rope_freqs);
    PHASE(PH_EMBED);
    for (int l = 0; l < hp->n_layer; l++) {
        const weft_layer *L = &m->layers[l];
        /* attention block */
        op_rmsnorm(t, c->xb, c->x, L->attn_norm, n, dim, hp->rms_eps);
        PHASE(PH_NORM);
        {
            float *ys[3] = {c->q, c->k, c->v};
            const op_matrix *ws[3] = {&L->wq, &L->wk, &L->wv};
            const float *bs[3] = {L->bq, L->bk, L->bv};
            op_matmul_multi(t, 3, ys, ws, bs, c->xb, n, c->qbuf, j->prompt);
        }
        pool_barrier(t);
        PHASE(PH_QKV);
        op_rope(t, c->q, c->rope_cs, n, hp->n_head, hp->head_dim, hp->rope_dim, hp->rope_type);
        op_rope(t, c->k, c->rope_cs, n, hp->n_head_kv, hp->head_dim, hp->rope_dim, hp->rope_type);
        kv_store(t, c, j, l);
        pool_barrier(t);
        PHASE(PH_ROPE_KV);
        if (c->attn && op_attention_available(c->m->hp.head_dim)) /* the SIMD level can change */
            attention_tiled(t, c, j, l);
        else
            attention(t, c, j, l);
        pool_barrier(t);
        PHASE(PH_ATTN);
        op_matmul(t, c->xb, &L->wo, NULL, c->att, n, c->qbuf, j->prompt);
        pool_barrier(t);
        PHASE(PH_WO);
        op_add_rows(t, c->x, c->xb, n, dim);
        /* feed-forward block */
        op_rmsnorm(t, c->xb, c->x, L->ffn_norm, n, dim, hp->rms_eps);
        {
            float *ys[2] = {c->hb, c->hb2};
            const op_matrix *ws[2] = {&L->w_gate, &L->w_up};
            op_matmul_multi(t, 2, ys, ws, NULL, c->xb, n, c->qbuf, j->prompt);
        }
        pool_barrier(t);
        PHASE(PH_GATE_UP);
        op_swiglu_rows(t, c->hb, c->hb2, n, hp->ffn_dim);
        PHASE(PH_NORM);
        op_matmul(t, c->xb, &L->w_down, NULL, c->hb, n, c->qbuf, j->prompt);
        pool_barrier(t);
        PHASE(PH_DOWN);
        op_add_rows(t, c->x, c->xb, n, dim);
        PHASE(PH_NORM);
    }
    if (j->n_out == 0) return;
    pool_barrier(t); /* the rows that want logits may be another thread's */
    /* final norm of the rows that want logits, gathered into xb, then the head */
    long lo, hi;
    pool_range(t, j->n_out, &lo, &hi);
    for (long r = lo; r < hi; r++)
        memcpy(c->hb + (size_t)r * dim, c->x + (size_t)j->out_rows[r] * dim, (size_t)dim * sizeof(float));
    pool_barrier(t);
    op_rmsnorm(t, c->xb, c->hb, m->output_norm, j->n_out, dim, hp->rms_eps);
    /* the head stays on the int8 kernels: its rows are few (those that want
     * logits), and converting 49,152 rows of weights to bf16 would not pay */
    op_matmul(t, j->logits, &m->output, NULL, c->xb, j->n_out, c->qbuf, NULL);
    if (prof_on) { /* the head has no barrier of its own: the pool's end is the mark */
        pool_barrier(t);
        PHASE(PH_HEAD);
    }
}

/* ---- context -------------------------------------------------------------- */

int weft_ctx_create(const weft_model *m, const weft_ctx_params *params, weft_ctx **out)
{
    pthread_once(&prof_once, prof_init);
    *out = NULL;
    const weft_hparams *hp = &m->hp;
    weft_ctx *c = weft_calloc(1, sizeof *c);
    if (!c) return weft_error(WEFT_ENOMEM, "out of memory");
    c->m = m;
    c->p = params ? *params : weft_ctx_default_params();
    if (c->p.n_ctx <= 0) c->p.n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (c->p.n_batch <= 0) c->p.n_batch = 512;
    if (c->p.n_seq_max <= 0) c->p.n_seq_max = 1;
    if (c->p.n_threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        c->p.n_threads = nc > 0 ? (int)nc : 1;
    }
    if (c->p.n_threads > 256) c->p.n_threads = 256;
    const int kv_dim = hp->n_head_kv * hp->head_dim, q_dim = hp->n_head * hp->head_dim;
    c->kv_row = (size_t)kv_dim * sizeof(uint16_t);
    c->kv_layer = 2 * KV_BLOCK_TOKENS * c->kv_row;
    const size_t block_bytes = c->kv_layer * (size_t)hp->n_layer;
    c->max_blocks = (c->p.n_ctx + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
    int64_t n_blocks = c->p.kv_mem ? (int64_t)(c->p.kv_mem / block_bytes)
                                   : (int64_t)c->max_blocks * c->p.n_seq_max;
    int rc = WEFT_ENOMEM;
    if (n_blocks < 1 || n_blocks > INT32_MAX) {
        rc = weft_error(WEFT_ERANGE, "KV memory %zu bytes holds no block of %zu bytes",
                        c->p.kv_mem, block_bytes);
        goto fail;
    }
    c->kv = kv_pool_create((int32_t)n_blocks, block_bytes);
    c->seqs = weft_calloc((size_t)c->p.n_seq_max, sizeof *c->seqs);
    if (!c->kv || !c->seqs) goto nomem;
    for (int s = 0; s < c->p.n_seq_max; s++) {
        c->seqs[s].blocks = weft_malloc((size_t)c->max_blocks * sizeof(int32_t));
        if (!c->seqs[s].blocks) goto nomem;
    }
    const size_t nb = (size_t)c->p.n_batch;
    const int64_t widest = hp->ffn_dim > q_dim ? (hp->ffn_dim > hp->dim ? hp->ffn_dim : hp->dim)
                                               : (q_dim > hp->dim ? q_dim : hp->dim);
    c->x = weft_malloc(nb * hp->dim * sizeof(float));
    c->xb = weft_malloc(nb * hp->dim * sizeof(float));
    c->q = weft_malloc(nb * q_dim * sizeof(float));
    c->k = weft_malloc(nb * kv_dim * sizeof(float));
    c->v = weft_malloc(nb * kv_dim * sizeof(float));
    c->att = weft_malloc(nb * q_dim * sizeof(float));
    c->hb = weft_malloc(nb * (hp->ffn_dim > hp->dim ? hp->ffn_dim : hp->dim) * sizeof(float));
    c->hb2 = weft_malloc(nb * hp->ffn_dim * sizeof(float));
    c->rope_cs = weft_malloc(nb * (size_t)(hp->rope_dim > 0 ? hp->rope_dim : 1) * sizeof(float));
    /* Quantized activations (see op_matmul_multi). */
    c->qbuf = weft_malloc(op_qbuf_size(widest, (int)nb));
    const size_t group = (size_t)(hp->n_head / hp->n_head_kv);
    c->scores = weft_malloc((size_t)c->p.n_threads * group * c->p.n_ctx * sizeof(float));
    c->q16 = weft_malloc((size_t)c->p.n_threads * group * hp->head_dim * sizeof(uint16_t));
    c->logits = weft_malloc(nb * hp->n_vocab * sizeof(float));
    c->logits_cap = (int32_t)nb;
    if (KV_BLOCK_TOKENS == 16 && hp->head_dim <= 256 && op_attention_available(hp->head_dim)) {
        c->attn_bytes = attn_scratch_layout(c, NULL, NULL);
        c->attn_raw = weft_malloc((size_t)c->p.n_threads * c->attn_bytes + 63);
        if (!c->attn_raw) goto nomem;
        c->attn = (char *)(((uintptr_t)c->attn_raw + 63) & ~(uintptr_t)63);
    }
    if (!c->x || !c->xb || !c->q || !c->k || !c->v || !c->att || !c->hb || !c->hb2 || !c->rope_cs || !c->qbuf ||
        !c->scores || !c->q16 || !c->logits)
        goto nomem;
    c->pool = pool_create(c->p.n_threads);
    if (!c->pool) goto nomem;
    *out = c;
    return 0;
nomem:
    rc = weft_error(WEFT_ENOMEM, "out of memory creating a context (n_ctx %d, n_batch %d)",
                    c->p.n_ctx, c->p.n_batch);
fail:
    weft_ctx_destroy(c);
    return rc;
}

void weft_ctx_destroy(weft_ctx *c)
{
    if (!c) return;
    prof_print(c);
    pool_destroy(c->pool);
    if (c->seqs)
        for (int s = 0; s < c->p.n_seq_max; s++) weft_free(c->seqs[s].blocks);
    weft_free(c->seqs);
    kv_pool_destroy(c->kv);
    weft_free(c->x);
    weft_free(c->xb);
    weft_free(c->q);
    weft_free(c->k);
    weft_free(c->v);
    weft_free(c->att);
    weft_free(c->attn_raw);
    weft_free(c->hb);
    weft_free(c->hb2);
    weft_free(c->rope_cs);
    weft_free(c->qbuf);
    weft_free(c->scores);
    weft_free(c->q16);
    weft_free(c->logits);
    weft_free(c);
}

const weft_ctx_params *weft_ctx_params_of(const weft_ctx *c) { return &c->p; }

static int32_t alloc_block(weft_ctx *c)
{
    return c->block_alloc ? c->block_alloc(c->block_alloc_ud) : kv_block_alloc(c->kv);
}

/* Makes sure sequence s has blocks for positions < new_len, and that the
 * block holding position `from` onwards is not shared (copy-on-write).
 * On failure nothing changes. */
static int seq_reserve(weft_ctx *c, kv_seq *s, int32_t from, int32_t new_len)
{
    const int32_t need = (new_len + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
    const int32_t had = s->n_blocks;
    const int32_t first = from / KV_BLOCK_TOKENS;
    int32_t cow_old = -1;
    if (first < had && kv_block_refcount(c->kv, s->blocks[first]) > 1) {
        int32_t b = alloc_block(c);
        if (b < 0) return weft_error(WEFT_ENOKV, "KV pool exhausted (%d blocks)", kv_pool_n_blocks(c->kv));
        memcpy(kv_block_data(c->kv, b), kv_block_data(c->kv, s->blocks[first]), kv_pool_block_bytes(c->kv));
        cow_old = s->blocks[first];
        s->blocks[first] = b;
    }
    for (int32_t i = had; i < need; i++) {
        int32_t b = alloc_block(c);
        if (b < 0) {
            for (int32_t k = had; k < i; k++) kv_block_unref(c->kv, s->blocks[k]);
            if (cow_old >= 0) {
                kv_block_unref(c->kv, s->blocks[first]);
                s->blocks[first] = cow_old;
            }
            return weft_error(WEFT_ENOKV, "KV pool exhausted (%d blocks)", kv_pool_n_blocks(c->kv));
        }
        s->blocks[i] = b;
    }
    if (cow_old >= 0) kv_block_unref(c->kv, cow_old);
    if (need > had) s->n_blocks = need;
    return 0;
}

int weft_decode(weft_ctx *c, const weft_batch *b)
{
    const weft_hparams *hp = &c->m->hp;
    c->n_logits = 0;
    if (!b || b->n <= 0 || !b->tokens || !b->pos || !b->seq)
        return weft_error(WEFT_EINVAL, "empty batch");
    /* Validate: ids, sequences, and consecutive positions per sequence. */
    int32_t *next = weft_malloc((size_t)c->p.n_seq_max * sizeof *next);
    int32_t *saved_nb = weft_malloc((size_t)c->p.n_seq_max * sizeof *saved_nb);
    int32_t *rows = weft_malloc((size_t)b->n * sizeof *rows);
    int rc = 0;
    if (!next || !saved_nb || !rows) {
        rc = weft_error(WEFT_ENOMEM, "out of memory");
        goto done;
    }
    for (int s = 0; s < c->p.n_seq_max; s++) {
        next[s] = c->seqs[s].len;
        saved_nb[s] = c->seqs[s].n_blocks;
    }
    for (int32_t i = 0; i < b->n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= hp->n_vocab) {
            rc = weft_error(WEFT_EINVAL, "token id %d out of range [0, %d)", b->tokens[i], hp->n_vocab);
            goto done;
        }
        if (b->seq[i] < 0 || b->seq[i] >= c->p.n_seq_max) {
            rc = weft_error(WEFT_EINVAL, "sequence %d out of range [0, %d)", b->seq[i], c->p.n_seq_max);
            goto done;
        }
        if (b->pos[i] != next[b->seq[i]]) {
            rc = weft_error(WEFT_EINVAL, "sequence %d: position %d given, %d expected", b->seq[i],
                            b->pos[i], next[b->seq[i]]);
            goto done;
        }
        if (b->pos[i] >= c->p.n_ctx) {
            rc = weft_error(WEFT_ERANGE, "position %d is beyond the context size %d", b->pos[i], c->p.n_ctx);
            goto done;
        }
        next[b->seq[i]]++;
    }
    /* Rows that want logits. */
    int32_t n_rows = 0;
    for (int32_t i = 0; i < b->n; i++)
        if (b->want_logits ? b->want_logits[i] != 0 : i == b->n - 1) rows[n_rows++] = i;
    if (n_rows > c->logits_cap) { /* more rows want logits than one chunk holds */
        float *grown = weft_realloc(c->logits, (size_t)n_rows * hp->n_vocab * sizeof(float));
        if (!grown) {
            rc = weft_error(WEFT_ENOMEM, "out of memory for %d rows of logits", n_rows);
            goto done;
        }
        c->logits = grown;
        c->logits_cap = n_rows;
    }
    for (int s = 0; s < c->p.n_seq_max; s++) {
        if (next[s] == c->seqs[s].len) continue;
        if ((rc = seq_reserve(c, &c->seqs[s], c->seqs[s].len, next[s])) < 0) {
            /* roll back the sequences reserved before this one */
            for (int r = 0; r < s; r++) {
                for (int32_t k = saved_nb[r]; k < c->seqs[r].n_blocks; k++)
                    kv_block_unref(c->kv, c->seqs[r].blocks[k]);
                c->seqs[r].n_blocks = saved_nb[r];
            }
            goto done;
        }
    }
    /* Run in chunks of n_batch tokens. */
    const double t0 = weft_now();
    for (int32_t start = 0; start < b->n; start += c->p.n_batch) {
        const int32_t n = b->n - start < c->p.n_batch ? b->n - start : c->p.n_batch;
        int32_t first_out = 0;
        while (first_out < n_rows && rows[first_out] < start) first_out++;
        int32_t n_out = 0;
        while (first_out + n_out < n_rows && rows[first_out + n_out] < start + n) n_out++;
        for (int32_t r = 0; r < n_out; r++) rows[first_out + r] -= start;
        fwd_job j = {.c = c,
                     .n = n,
                     .tokens = b->tokens + start,
                     .pos = b->pos + start,
                     .seq = b->seq + start,
                     .prompt = b->prompt ? b->prompt + start : NULL,
                     .out_rows = rows + first_out,
                     .n_out = n_out,
                     .logits = c->logits + (size_t)first_out * hp->n_vocab};
        pool_run(c->pool, forward, &j);
    }
    for (int s = 0; s < c->p.n_seq_max; s++) c->seqs[s].len = next[s];
    c->n_logits = n_rows;
    const double dt = weft_now() - t0;
    if (b->n == 1) {
        c->perf.t_decode += dt;
        c->perf.n_decode_tokens++;
    } else {
        c->perf.t_prefill += dt;
        c->perf.n_prefill_tokens += b->n;
    }
done:
    weft_free(next);
    weft_free(saved_nb);
    weft_free(rows);
    return rc;
}

const float *weft_get_logits(const weft_ctx *c, int32_t j)
{
    if (j < 0 || j >= c->n_logits) return NULL;
    return c->logits + (size_t)j * c->m->hp.n_vocab;
}

int32_t weft_n_logits(const weft_ctx *c) { return c->n_logits; }

int32_t weft_seq_len(const weft_ctx *c, int32_t seq)
{
    if (seq < 0 || seq >= c->p.n_seq_max) return 0;
    return c->seqs[seq].len;
}

int weft_seq_truncate(weft_ctx *c, int32_t seq, int32_t keep)
{
    if (seq < 0 || seq >= c->p.n_seq_max) return weft_error(WEFT_EINVAL, "sequence %d out of range", seq);
    kv_seq *s = &c->seqs[seq];
    if (keep < 0) keep = 0;
    if (keep >= s->len) return 0;
    const int32_t need = (keep + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
    for (int32_t i = need; i < s->n_blocks; i++) kv_block_unref(c->kv, s->blocks[i]);
    s->n_blocks = need;
    s->len = keep;
    return 0;
}

int weft_seq_fork(weft_ctx *c, int32_t src, int32_t dst, int32_t n)
{
    if (src < 0 || src >= c->p.n_seq_max || dst < 0 || dst >= c->p.n_seq_max || src == dst)
        return weft_error(WEFT_EINVAL, "bad fork %d -> %d", src, dst);
    kv_seq *s = &c->seqs[src], *d = &c->seqs[dst];
    if (n < 0 || n > s->len) return weft_error(WEFT_EINVAL, "fork of %d positions, source holds %d", n, s->len);
    weft_seq_truncate(c, dst, 0);
    const int32_t nb = (n + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
    for (int32_t i = 0; i < nb; i++) {
        d->blocks[i] = s->blocks[i];
        kv_block_ref(c->kv, s->blocks[i]);
    }
    d->n_blocks = nb;
    d->len = n;
    return 0;
}

weft_perf weft_ctx_perf(const weft_ctx *c) { return c->perf; }
void weft_ctx_perf_reset(weft_ctx *c) { memset(&c->perf, 0, sizeof c->perf); }

kv_pool *weft_ctx_kv(weft_ctx *c) { return c->kv; }

void weft_ctx_set_block_alloc(weft_ctx *c, int32_t (*alloc)(void *ud), void *ud)
{
    c->block_alloc = alloc;
    c->block_alloc_ud = ud;
}

int32_t weft_seq_blocks(const weft_ctx *c, int32_t seq, const int32_t **blocks)
{
    if (seq < 0 || seq >= c->p.n_seq_max) return 0;
    *blocks = c->seqs[seq].blocks;
    return c->seqs[seq].n_blocks;
}

int weft_seq_attach(weft_ctx *c, int32_t seq, const int32_t *blocks, int32_t n_tokens)
{
    if (seq < 0 || seq >= c->p.n_seq_max) return weft_error(WEFT_EINVAL, "sequence %d out of range", seq);
    kv_seq *s = &c->seqs[seq];
    const int32_t nb = (n_tokens + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
    if (s->len != 0 || s->n_blocks != 0 || n_tokens < 0 || nb > c->max_blocks)
        return weft_error(WEFT_EINVAL, "cannot attach %d positions to sequence %d", n_tokens, seq);
    memcpy(s->blocks, blocks, (size_t)nb * sizeof *blocks);
    s->n_blocks = nb;
    s->len = n_tokens;
    return 0;
}

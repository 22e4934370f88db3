/*
 * kernels/cpu/backend_cpu.c — the CPU implementation of the backend table
 * (kernels/backend.h), built on the operators of ops.h.
 *
 * Each table call is one pool_run of a small job that calls the operator on
 * every thread. "Backend memory" is host memory, so upload/download are
 * memcpy and every op is finished when it returns (sync is a no-op).
 *
 * One backend may be used by one thread at a time: pool_run is not reentrant
 * and matmul reuses one activation buffer.
 */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "weft/common.h"

/* Matches the widest AVX-512 load and a cache line. */
#define CPU_ALIGN 64

typedef struct cpu_ctx {
    pool *pool;
    void *qbuf; /* quantized activations of the last matmul, op_qslot_size bytes */
    size_t qbuf_size;
} cpu_ctx;

/* ---- aligned allocations through the counting allocator ---------------- */

/* The raw weft_malloc pointer sits in the word just before the aligned block. */
static void *cpu_aligned_alloc(size_t bytes)
{
    if (bytes > SIZE_MAX - CPU_ALIGN - sizeof(void *)) return NULL;
    char *raw = weft_malloc(bytes + CPU_ALIGN + sizeof(void *));
    if (!raw) return NULL;
    uintptr_t a = ((uintptr_t)(raw + sizeof(void *)) + CPU_ALIGN - 1) & ~(uintptr_t)(CPU_ALIGN - 1);
    memcpy((char *)a - sizeof(void *), &raw, sizeof raw);
    return (void *)a;
}

static void cpu_aligned_free(void *p)
{
    if (!p) return;
    void *raw;
    memcpy(&raw, (char *)p - sizeof(void *), sizeof raw);
    weft_free(raw);
}

static int cpu_alloc(void *ctx, void **ptr, size_t bytes)
{
    *ptr = cpu_aligned_alloc(bytes ? bytes : 1);
    if (!*ptr) return weft_error(WEFT_ENOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
    return 0;
}

static void cpu_free(void *ctx, void *ptr) { cpu_aligned_free(ptr); }

static int cpu_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    if (bytes) memcpy(dst, src, bytes);
    return 0;
}

static int cpu_sync(void *ctx) { return 0; }

/* ---- ops: one pool run each ------------------------------------------- */

typedef struct {
    float *y;
    const float *x, *w;
    int n_rows, dim;
    float eps;
} rmsnorm_job;

static void rmsnorm_run(void *arg, const pool_thread *t)
{
    const rmsnorm_job *j = arg;
    op_rmsnorm(t, j->y, j->x, j->w, j->n_rows, j->dim, j->eps);
}

static int cpu_rmsnorm(void *ctx, float *y, const float *x, const float *w, int n_rows, int dim,
                       float eps)
{
    cpu_ctx *c = ctx;
    if (n_rows < 0 || dim <= 0)
        return weft_error(WEFT_EINVAL, "rmsnorm: bad shape %d x %d", n_rows, dim);
    rmsnorm_job j = {y, x, w, n_rows, dim, eps};
    pool_run(c->pool, rmsnorm_run, &j);
    return 0;
}

typedef struct {
    float *a;
    const float *b;
    int64_t n;
} binary_job;

static void swiglu_run(void *arg, const pool_thread *t)
{
    const binary_job *j = arg;
    op_swiglu(t, j->a, j->b, j->n);
}

static void add_run(void *arg, const pool_thread *t)
{
    const binary_job *j = arg;
    op_add(t, j->a, j->b, j->n);
}

static int cpu_swiglu(void *ctx, float *g, const float *u, int64_t n)
{
    cpu_ctx *c = ctx;
    if (n < 0) return weft_error(WEFT_EINVAL, "swiglu: negative length %lld", (long long)n);
    binary_job j = {g, u, n};
    pool_run(c->pool, swiglu_run, &j);
    return 0;
}

static int cpu_add(void *ctx, float *x, const float *y, int64_t n)
{
    cpu_ctx *c = ctx;
    if (n < 0) return weft_error(WEFT_EINVAL, "add: negative length %lld", (long long)n);
    binary_job j = {x, y, n};
    pool_run(c->pool, add_run, &j);
    return 0;
}

typedef struct {
    float *dst;
    const void *src;
    weft_type t;
    int64_t n_blocks;
    size_t block, block_bytes;
} dequant_job;

/* Each thread decodes a run of whole blocks. */
static void dequant_run(void *arg, const pool_thread *t)
{
    const dequant_job *j = arg;
    long lo, hi;
    pool_range(t, (long)j->n_blocks, &lo, &hi);
    if (hi <= lo) return;
    quant_dequantize_row(j->t, (const char *)j->src + (size_t)lo * j->block_bytes,
                         j->dst + (size_t)lo * j->block, (int64_t)(hi - lo) * (int64_t)j->block);
}

static int cpu_dequantize(void *ctx, float *dst, const void *src, weft_type t, int64_t n)
{
    cpu_ctx *c = ctx;
    if (!quant_type_supported(t))
        return weft_error(WEFT_EUNSUPPORTED, "dequantize: type %s is not supported",
                          quant_type_name(t));
    const size_t block = quant_block_size(t);
    if (n < 0 || (uint64_t)n % block)
        return weft_error(WEFT_EINVAL, "dequantize: %lld values is not a whole number of %s blocks",
                          (long long)n, quant_type_name(t));
    dequant_job j = {dst, src, t, n / (int64_t)block, block, quant_type_size(t)};
    pool_run(c->pool, dequant_run, &j);
    return 0;
}

typedef struct {
    float *y;
    const op_matrix *w;
    const float *x;
    int n_tok;
    void *qbuf;
} matmul_job;

static void matmul_run(void *arg, const pool_thread *t)
{
    const matmul_job *j = arg;
    op_matmul(t, j->y, j->w, NULL, j->x, j->n_tok, j->qbuf, NULL);
}

static int cpu_matmul(void *ctx, float *y, const op_matrix *w, const float *x, int n_tok)
{
    cpu_ctx *c = ctx;
    if (!quant_type_supported(w->type))
        return weft_error(WEFT_EUNSUPPORTED, "matmul: weight type %s is not supported",
                          quant_type_name(w->type));
    if (n_tok < 0 || w->n_in <= 0 || w->n_out < 0 ||
        (uint64_t)w->n_in % quant_block_size(w->type) ||
        w->row_bytes < quant_row_size(w->type, w->n_in))
        return weft_error(WEFT_EINVAL, "matmul: bad shape (%lld x %lld %s, row %zu bytes, %d tokens)",
                          (long long)w->n_out, (long long)w->n_in, quant_type_name(w->type),
                          w->row_bytes, n_tok);
    if (n_tok == 0 || w->n_out == 0) return 0;
    /* op_matmul reads x while it writes y. */
    const uintptr_t xb = (uintptr_t)x, yb = (uintptr_t)y;
    if (xb < yb + (size_t)n_tok * (size_t)w->n_out * sizeof(float) &&
        yb < xb + (size_t)n_tok * (size_t)w->n_in * sizeof(float))
        return weft_error(WEFT_EINVAL, "matmul: output overlaps input");
    const size_t need = op_qslot_size(w->n_in, n_tok);
    if (need > c->qbuf_size) {
        void *q = cpu_aligned_alloc(need);
        if (!q) return weft_error(WEFT_ENOMEM, "matmul: cannot allocate %zu bytes", need);
        cpu_aligned_free(c->qbuf);
        c->qbuf = q;
        c->qbuf_size = need;
    }
    matmul_job j = {y, w, x, n_tok, c->qbuf};
    pool_run(c->pool, matmul_run, &j);
    return 0;
}

static void cpu_destroy(void *ctx)
{
    cpu_ctx *c = ctx;
    if (!c) return;
    pool_destroy(c->pool);
    cpu_aligned_free(c->qbuf);
    weft_free(c);
}

int weft_backend_cpu_create(int n_threads, weft_backend *out)
{
    if (!out || n_threads < 0)
        return weft_error(WEFT_EINVAL, "cpu backend: bad arguments (n_threads %d)", n_threads);
    if (n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    cpu_ctx *c = weft_calloc(1, sizeof *c);
    if (!c) return weft_error(WEFT_ENOMEM, "cpu backend: out of memory");
    c->pool = pool_create(n_threads);
    if (!c->pool) {
        weft_free(c);
        return weft_error(WEFT_ENOMEM, "cpu backend: cannot start %d threads", n_threads);
    }
    *out = (weft_backend){
        .name = "cpu",
        .ctx = c,
        .alloc = cpu_alloc,
        .free = cpu_free,
        .upload = cpu_copy,
        .download = cpu_copy,
        .sync = cpu_sync,
        .rmsnorm = cpu_rmsnorm,
        .swiglu = cpu_swiglu,
        .add = cpu_add,
        .dequantize = cpu_dequantize,
        .matmul = cpu_matmul,
        .destroy = cpu_destroy,
    };
    return 0;
}

/*
 * kernels/backend.h — the compute backend table: a set of function pointers
 * over a `void *ctx`, one implementation per device. The CPU backend is
 * always built and is the numeric reference; the CUDA backend (kernels/cuda/,
 * WEFT_USE_CUDA) implements the same table with cuBLAS and its own kernels.
 *
 * Pointers passed to an op are in the backend's memory (alloc/upload). Ops
 * are asynchronous on devices; sync() waits for them. Every op returns 0 or a
 * negative WEFT_E* code. Members marked optional may be NULL.
 *
 * The CPU forward pass (engine/forward.c) calls the CPU operators
 * (kernels/cpu/ops.h) directly inside one thread-pool run rather than through
 * this table: a table call per op would wake the pool ~250 times per token.
 */
#ifndef WEFT_KERNELS_BACKEND_H
#define WEFT_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu/ops.h"

typedef struct weft_backend {
    const char *name;
    void *ctx;
    int (*alloc)(void *ctx, void **ptr, size_t bytes);
    void (*free)(void *ctx, void *ptr);
    int (*upload)(void *ctx, void *dst, const void *src, size_t bytes);   /* host → backend */
    int (*download)(void *ctx, void *dst, const void *src, size_t bytes); /* backend → host */
    int (*sync)(void *ctx);
    /* y[r] = x[r] / rms(x[r]) * w for r < n_rows */
    int (*rmsnorm)(void *ctx, float *y, const float *x, const float *w, int n_rows, int dim,
                   float eps);
    /* g[i] = silu(g[i]) * u[i] */
    int (*swiglu)(void *ctx, float *g, const float *u, int64_t n);
    /* x[i] += y[i] */
    int (*add)(void *ctx, float *x, const float *y, int64_t n);
    /* dst[n] = values of a row of weight type t (optional) */
    int (*dequantize)(void *ctx, float *dst, const void *src, weft_type t, int64_t n);
    /* y[n_tok][w->n_out] = x[n_tok][w->n_in] · wᵀ; w->data in backend memory (optional) */
    int (*matmul)(void *ctx, float *y, const op_matrix *w, const float *x, int n_tok);
    void (*destroy)(void *ctx);
} weft_backend;

/* The CPU backend with n_threads compute threads (0 = all cores). */
int weft_backend_cpu_create(int n_threads, weft_backend *out);

#ifdef WEFT_USE_CUDA
/* The CUDA backend on `device`. WEFT_EUNSUPPORTED when no GPU is present
 * (the message says why: no device, driver missing, ...). */
int weft_backend_cuda_create(int device, weft_backend *out);
/* NCCL version linked in (for the tensor-parallel split); 0 if unavailable. */
int weft_backend_cuda_nccl_version(void);
#endif

#endif

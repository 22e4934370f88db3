/*
 * kernels/cuda/backend_cuda.cu — the CUDA implementation of the backend table
 * (kernels/backend.h). Built only with -DWEFT_CUDA=ON.
 *
 * Each kernel here has its CPU reference in kernels/cpu/ (ops.c for rmsnorm,
 * swiglu and add; quant.c for dequantization; op_matmul for matmul), and
 * tests/unit/test_backend_gpu.c compares the two on random data.
 *
 * All work goes on one stream per backend. Ops are asynchronous; upload and
 * download return when their copy is complete (so the host buffer may be
 * reused or read at once). The backend selects its device on every call, so
 * several backends on different devices may share a host thread, but one
 * backend must not be used by two threads at once (matmul scratch is shared).
 *
 * Host code is written as C; only the kernels use CUDA C++.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <nccl.h>

#include <stdint.h>
#include <string.h>

#include "weft/common.h" /* has its own extern "C" guard */

/* The prototypes in backend.h are behind WEFT_USE_CUDA, which CMake defines
 * for weftcore's users but not for this library itself. */
#ifndef WEFT_USE_CUDA
#define WEFT_USE_CUDA 1
#endif
extern "C" {
#include "kernels/backend.h"
#include "kernels/cpu/ops.h"
#include "kernels/quant.h"
}

/* ---- error checking ---------------------------------------------------- */

#define CU_CHECK(call)                                                              \
    do {                                                                            \
        cudaError_t e_ = (call);                                                    \
        if (e_ != cudaSuccess)                                                      \
            return weft_error(cuda_code(e_), "cuda: %s failed: %s (%s:%d)", #call,   \
                              cudaGetErrorString(e_), __FILE__, __LINE__);          \
    } while (0)

#define BLAS_CHECK(call)                                                            \
    do {                                                                            \
        cublasStatus_t s_ = (call);                                                 \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                            \
            return weft_error(s_ == CUBLAS_STATUS_ALLOC_FAILED ? WEFT_ENOMEM : WEFT_EIO, \
                              "cublas: %s failed: %s (%s:%d)", #call,               \
                              cublasGetStatusString(s_), __FILE__, __LINE__);       \
    } while (0)

/* A kernel launch reports bad configurations through cudaGetLastError. The
 * launch is passed in parentheses (template arguments contain commas). */
#define LAUNCH_CHECK(launch)                                                        \
    do {                                                                            \
        launch;                                                                     \
        CU_CHECK(cudaGetLastError());                                               \
    } while (0)

static int cuda_code(cudaError_t e)
{
    switch (e) {
    case cudaErrorMemoryAllocation:
        return WEFT_ENOMEM;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidConfiguration:
        return WEFT_EINVAL;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
        return WEFT_EUNSUPPORTED;
    default:
        return WEFT_EIO;
    }
}

typedef struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    /* matmul scratch: a dequantized weight matrix (f32) or f16 activations */
    void *scratch;
    size_t scratch_size;
} cuda_ctx;

#define CUDA_THREADS 256
/* Grid-stride loops cover the rest; more blocks than this buys nothing. */
#define CUDA_MAX_BLOCKS 65535

static unsigned grid_for(int64_t n)
{
    int64_t b = (n + CUDA_THREADS - 1) / CUDA_THREADS;
    if (b < 1) b = 1;
    return (unsigned)(b > CUDA_MAX_BLOCKS ? CUDA_MAX_BLOCKS : b);
}

static int cuda_enter(cuda_ctx *c)
{
    CU_CHECK(cudaSetDevice(c->device));
    return 0;
}

/* Grows the matmul scratch to `bytes`; waits for queued work that may use the old one. */
static int scratch_reserve(cuda_ctx *c, size_t bytes)
{
    if (bytes <= c->scratch_size) return 0;
    CU_CHECK(cudaStreamSynchronize(c->stream));
    if (c->scratch) {
        CU_CHECK(cudaFree(c->scratch));
        c->scratch = NULL;
        c->scratch_size = 0;
    }
    CU_CHECK(cudaMalloc(&c->scratch, bytes));
    c->scratch_size = bytes;
    return 0;
}

/* ---- kernels ------------------------------------------------------------ */

/* One block per row; each thread sums a strided share of x², warps reduce by
 * shuffle, then warp 0 reduces the per-warp sums. The sum is in double and
 * the scale is 1/sqrtf((float)(ss/dim) + eps), as in op_rmsnorm. */
__global__ void k_rmsnorm(float *y, const float *x, const float *w, int dim, float eps)
{
    __shared__ double warp_sums[32];
    __shared__ float scale_s;
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)xr[i] * xr[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        const int n_warps = (blockDim.x + 31) >> 5;
        ss = lane < n_warps ? warp_sums[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if (lane == 0) scale_s = 1.0f / sqrtf((float)(ss / dim) + eps);
    }
    __syncthreads();
    const float scale = scale_s;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = (xr[i] * scale) * w[i];
}

__global__ void k_swiglu(float *g, const float *u, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

__global__ void k_add(float *x, const float *y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

__global__ void k_f32_to_f16(__half *y, const float *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2half_rn(x[i]);
}

/* fp16 fields of the blocks are raw bits, 2-byte aligned (blocks are 18, 20
 * or 34 bytes), so they are loaded as unsigned short. */
__device__ __forceinline__ float f16_at(const uint8_t *p)
{
    return __half2float(__ushort_as_half(*(const unsigned short *)p));
}

/* Decodes element j (0..31) of a 32-value block; layouts as ggml's
 * block_q8_0 {d; qs[32]}, block_q4_0 {d; qs[16]}, block_q4_1 {d, m; qs[16]},
 * where the low nibble of qs[j] is element j and the high nibble element j+16.
 * The arithmetic is that of quant.c's dq_* (Q4_1's d*q + m kept unfused). */
template <int T> __device__ __forceinline__ float dq_elem(const uint8_t *blk, int j);

template <> __device__ __forceinline__ float dq_elem<WEFT_TYPE_Q8_0>(const uint8_t *blk, int j)
{
    return f16_at(blk) * (float)(int8_t)blk[2 + j];
}

template <> __device__ __forceinline__ float dq_elem<WEFT_TYPE_Q4_0>(const uint8_t *blk, int j)
{
    const uint8_t q = blk[2 + (j & 15)];
    const int v = j < 16 ? (q & 0xF) : (q >> 4);
    return f16_at(blk) * (float)(v - 8);
}

template <> __device__ __forceinline__ float dq_elem<WEFT_TYPE_Q4_1>(const uint8_t *blk, int j)
{
    const uint8_t q = blk[4 + (j & 15)];
    const int v = j < 16 ? (q & 0xF) : (q >> 4);
    return __fmul_rn(f16_at(blk), (float)v) + f16_at(blk + 2); /* no FMA: match the CPU */
}

template <> __device__ __forceinline__ float dq_elem<WEFT_TYPE_F16>(const uint8_t *blk, int j)
{
    return f16_at(blk);
}

template <> __device__ __forceinline__ float dq_elem<WEFT_TYPE_BF16>(const uint8_t *blk, int j)
{
    return __uint_as_float((uint32_t)(*(const unsigned short *)blk) << 16);
}

template <> __device__ __forceinline__ float dq_elem<WEFT_TYPE_F32>(const uint8_t *blk, int j)
{
    return *(const float *)blk;
}

/* dst[r][c] for r < n_rows, c < n_cols: rows of `src` are row_bytes apart and
 * hold blocks of BS values, BB bytes each. One thread per output value. */
template <int T, int BS, int BB>
__global__ void k_dequantize(float *dst, const uint8_t *src, int64_t n_rows, int64_t n_cols,
                             size_t row_bytes)
{
    const int64_t n = n_rows * n_cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / n_cols, col = i - r * n_cols;
        const uint8_t *blk = src + (size_t)r * row_bytes + (size_t)(col / BS) * BB;
        dst[i] = dq_elem<T>(blk, (int)(col % BS));
    }
}

/* Block geometry of the types this backend decodes; false for the rest. */
static bool cuda_type_geometry(weft_type t, int *bs, int *bb)
{
    switch (t) {
    case WEFT_TYPE_F32: *bs = 1; *bb = 4; return true;
    case WEFT_TYPE_F16: *bs = 1; *bb = 2; return true;
    case WEFT_TYPE_BF16: *bs = 1; *bb = 2; return true;
    case WEFT_TYPE_Q4_0: *bs = 32; *bb = 18; return true;
    case WEFT_TYPE_Q4_1: *bs = 32; *bb = 20; return true;
    case WEFT_TYPE_Q8_0: *bs = 32; *bb = 34; return true;
    default: return false;
    }
}

static int launch_dequantize(cuda_ctx *c, float *dst, const void *src, weft_type t,
                             int64_t n_rows, int64_t n_cols, size_t row_bytes)
{
    const int64_t n = n_rows * n_cols;
    if (n == 0) return 0;
    const unsigned g = grid_for(n);
    const uint8_t *s = (const uint8_t *)src;
    switch (t) {
    case WEFT_TYPE_F32:
        LAUNCH_CHECK((k_dequantize<WEFT_TYPE_F32, 1, 4>
                      <<<g, CUDA_THREADS, 0, c->stream>>>(dst, s, n_rows, n_cols, row_bytes)));
        break;
    case WEFT_TYPE_F16:
        LAUNCH_CHECK((k_dequantize<WEFT_TYPE_F16, 1, 2>
                      <<<g, CUDA_THREADS, 0, c->stream>>>(dst, s, n_rows, n_cols, row_bytes)));
        break;
    case WEFT_TYPE_BF16:
        LAUNCH_CHECK((k_dequantize<WEFT_TYPE_BF16, 1, 2>
                      <<<g, CUDA_THREADS, 0, c->stream>>>(dst, s, n_rows, n_cols, row_bytes)));
        break;
    case WEFT_TYPE_Q4_0:
        LAUNCH_CHECK((k_dequantize<WEFT_TYPE_Q4_0, 32, 18>
                      <<<g, CUDA_THREADS, 0, c->stream>>>(dst, s, n_rows, n_cols, row_bytes)));
        break;
    case WEFT_TYPE_Q4_1:
        LAUNCH_CHECK((k_dequantize<WEFT_TYPE_Q4_1, 32, 20>
                      <<<g, CUDA_THREADS, 0, c->stream>>>(dst, s, n_rows, n_cols, row_bytes)));
        break;
    case WEFT_TYPE_Q8_0:
        LAUNCH_CHECK((k_dequantize<WEFT_TYPE_Q8_0, 32, 34>
                      <<<g, CUDA_THREADS, 0, c->stream>>>(dst, s, n_rows, n_cols, row_bytes)));
        break;
    default:
        return weft_error(WEFT_EUNSUPPORTED, "cuda: cannot dequantize type %d", (int)t);
    }
    return 0;
}

/* ---- table members -------------------------------------------------------- */

static int cuda_alloc(void *ctx, void **ptr, size_t bytes)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    *ptr = NULL;
    int rc = cuda_enter(c);
    if (rc) return rc;
    CU_CHECK(cudaMalloc(ptr, bytes ? bytes : 1));
    return 0;
}

static void cuda_free(void *ctx, void *ptr)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!ptr || cuda_enter(c)) return;
    cudaError_t e = cudaFree(ptr);
    if (e != cudaSuccess) weft_log(0, "cuda: cudaFree failed: %s\n", cudaGetErrorString(e));
}

static int cuda_copy(cuda_ctx *c, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    if (!bytes) return 0;
    int rc = cuda_enter(c);
    if (rc) return rc;
    /* Ordered after the queued ops on the stream, and complete on return. */
    CU_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, c->stream));
    CU_CHECK(cudaStreamSynchronize(c->stream));
    return 0;
}

static int cuda_upload(void *ctx, void *dst, const void *src, size_t bytes)
{
    return cuda_copy((cuda_ctx *)ctx, dst, src, bytes, cudaMemcpyHostToDevice);
}

static int cuda_download(void *ctx, void *dst, const void *src, size_t bytes)
{
    return cuda_copy((cuda_ctx *)ctx, dst, src, bytes, cudaMemcpyDeviceToHost);
}

static int cuda_sync(void *ctx)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int rc = cuda_enter(c);
    if (rc) return rc;
    CU_CHECK(cudaStreamSynchronize(c->stream));
    return 0;
}

static int cuda_rmsnorm(void *ctx, float *y, const float *x, const float *w, int n_rows, int dim,
                        float eps)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (n_rows < 0 || dim <= 0)
        return weft_error(WEFT_EINVAL, "rmsnorm: bad shape %d x %d", n_rows, dim);
    if (n_rows == 0) return 0;
    int rc = cuda_enter(c);
    if (rc) return rc;
    /* Rows longer than the block loop over it; short rows use fewer warps. */
    const int threads = dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32;
    LAUNCH_CHECK((k_rmsnorm<<<(unsigned)n_rows, threads, 0, c->stream>>>(y, x, w, dim, eps)));
    return 0;
}

static int cuda_swiglu(void *ctx, float *g, const float *u, int64_t n)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (n < 0) return weft_error(WEFT_EINVAL, "swiglu: negative length %lld", (long long)n);
    if (n == 0) return 0;
    int rc = cuda_enter(c);
    if (rc) return rc;
    LAUNCH_CHECK((k_swiglu<<<grid_for(n), CUDA_THREADS, 0, c->stream>>>(g, u, n)));
    return 0;
}

static int cuda_add(void *ctx, float *x, const float *y, int64_t n)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (n < 0) return weft_error(WEFT_EINVAL, "add: negative length %lld", (long long)n);
    if (n == 0) return 0;
    int rc = cuda_enter(c);
    if (rc) return rc;
    LAUNCH_CHECK((k_add<<<grid_for(n), CUDA_THREADS, 0, c->stream>>>(x, y, n)));
    return 0;
}

static int cuda_dequantize(void *ctx, float *dst, const void *src, weft_type t, int64_t n)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int bs, bb;
    if (!cuda_type_geometry(t, &bs, &bb))
        return weft_error(WEFT_EUNSUPPORTED, "cuda dequantize: type %d is not implemented",
                          (int)t);
    if (n < 0 || n % bs)
        return weft_error(WEFT_EINVAL, "cuda dequantize: %lld values is not a whole number of blocks",
                          (long long)n);
    int rc = cuda_enter(c);
    if (rc) return rc;
    return launch_dequantize(c, dst, src, t, 1, n, (size_t)(n / bs) * bb);
}

/*
 * y[n_tok][n_out] = x[n_tok][n_in] · Wᵀ with W row-major [n_out][n_in].
 * In cuBLAS's column-major terms W is an (n_in × n_out) matrix with leading
 * dimension = row stride, x is (n_in × n_tok) and y is (n_out × n_tok), so
 * y = Wᵀ·x: GEMM(op_T, op_N, m = n_out, n = n_tok, k = n_in).
 *
 * F32 weights: cublasSgemm. F16 weights: x is rounded to f16 (as the CPU
 * path rounds activations to the weights' vec-dot type) and cublasGemmEx
 * multiplies f16 × f16 with f32 accumulation and output. Quantized weights
 * (Q4_0, Q4_1, Q8_0, BF16): the whole matrix is dequantized into an f32
 * scratch buffer, then cublasSgemm. That costs a full f32 copy of the matrix
 * in bandwidth and memory per call; fused quantized GEMV/GEMM kernels that
 * read the blocks directly (as llama.cpp's mmvq/mmq) are future work.
 */
static int cuda_matmul(void *ctx, float *y, const op_matrix *w, const float *x, int n_tok)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    int bs, bb;
    if (!cuda_type_geometry(w->type, &bs, &bb))
        return weft_error(WEFT_EUNSUPPORTED, "cuda matmul: weight type %d is not implemented",
                          (int)w->type);
    /* Rows must keep the fp16/f32 loads aligned (GGUF rows always do). */
    if (n_tok < 0 || w->n_in <= 0 || w->n_out < 0 || w->n_in % bs ||
        w->row_bytes < (size_t)(w->n_in / bs) * bb ||
        w->row_bytes % (w->type == WEFT_TYPE_F32 ? sizeof(float) : sizeof(uint16_t)))
        return weft_error(WEFT_EINVAL, "cuda matmul: bad shape (%lld x %lld, row %zu bytes, %d tokens)",
                          (long long)w->n_out, (long long)w->n_in, w->row_bytes, n_tok);
    if (w->n_in > INT32_MAX || w->n_out > INT32_MAX)
        return weft_error(WEFT_ERANGE, "cuda matmul: %lld x %lld is over cuBLAS's int dimensions",
                          (long long)w->n_out, (long long)w->n_in);
    if (n_tok == 0 || w->n_out == 0) return 0;
    int rc = cuda_enter(c);
    if (rc) return rc;
    const int m = (int)w->n_out, n = n_tok, k = (int)w->n_in;
    const float one = 1.0f, zero = 0.0f;

    if (w->type == WEFT_TYPE_F32) {
        const int lda = (int)(w->row_bytes / sizeof(float));
        BLAS_CHECK(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one,
                               (const float *)w->data, lda, x, k, &zero, y, m));
        return 0;
    }
    if (w->type == WEFT_TYPE_F16) {
        const size_t n_x = (size_t)n * (size_t)k;
        rc = scratch_reserve(c, n_x * sizeof(__half));
        if (rc) return rc;
        __half *xh = (__half *)c->scratch;
        LAUNCH_CHECK((k_f32_to_f16<<<grid_for((int64_t)n_x), CUDA_THREADS, 0, c->stream>>>(
            xh, x, (int64_t)n_x)));
        const int lda = (int)(w->row_bytes / sizeof(__half));
        BLAS_CHECK(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w->data,
                                CUDA_R_16F, lda, xh, CUDA_R_16F, k, &zero, y, CUDA_R_32F, m,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return 0;
    }
    /* Quantized and BF16: decode to a dense f32 matrix. */
    rc = scratch_reserve(c, (size_t)m * (size_t)k * sizeof(float));
    if (rc) return rc;
    float *wf = (float *)c->scratch;
    rc = launch_dequantize(c, wf, w->data, w->type, m, k, w->row_bytes);
    if (rc) return rc;
    BLAS_CHECK(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, wf, k, x, k, &zero,
                           y, m));
    return 0;
}

static void cuda_destroy(void *ctx)
{
    cuda_ctx *c = (cuda_ctx *)ctx;
    if (!c) return;
    if (cudaSetDevice(c->device) == cudaSuccess) {
        if (c->stream) cudaStreamSynchronize(c->stream);
        if (c->scratch) cudaFree(c->scratch);
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
    }
    weft_free(c);
}

static int cuda_setup(cuda_ctx *c)
{
    CU_CHECK(cudaSetDevice(c->device));
    CU_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    BLAS_CHECK(cublasCreate(&c->blas));
    BLAS_CHECK(cublasSetStream(c->blas, c->stream));
    /* Full f32 precision (no TF32) so results track the CPU reference. */
    BLAS_CHECK(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    return 0;
}

extern "C" int weft_backend_cuda_create(int device, weft_backend *out)
{
    if (!out) return weft_error(WEFT_EINVAL, "cuda backend: out is NULL");
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* reset the runtime's last error for whoever calls next */
        return weft_error(WEFT_EUNSUPPORTED, "cuda backend: no usable GPU: %s (%s)",
                          cudaGetErrorString(e), cudaGetErrorName(e));
    }
    if (count == 0)
        return weft_error(WEFT_EUNSUPPORTED, "cuda backend: no CUDA device present");
    if (device < 0 || device >= count)
        return weft_error(WEFT_EINVAL, "cuda backend: device %d out of range (%d devices)", device,
                          count);

    cuda_ctx *c = (cuda_ctx *)weft_calloc(1, sizeof *c);
    if (!c) return weft_error(WEFT_ENOMEM, "cuda backend: out of memory");
    c->device = device;
    int rc = cuda_setup(c);
    if (rc) {
        cuda_destroy(c);
        return rc;
    }
    memset(out, 0, sizeof *out);
    out->name = "cuda";
    out->ctx = c;
    out->alloc = cuda_alloc;
    out->free = cuda_free;
    out->upload = cuda_upload;
    out->download = cuda_download;
    out->sync = cuda_sync;
    out->rmsnorm = cuda_rmsnorm;
    out->swiglu = cuda_swiglu;
    out->add = cuda_add;
    out->dequantize = cuda_dequantize;
    out->matmul = cuda_matmul;
    out->destroy = cuda_destroy;
    return 0;
}

extern "C" int weft_backend_cuda_nccl_version(void)
{
    int v = 0;
    if (ncclGetVersion(&v) != ncclSuccess) return 0;
    return v;
}

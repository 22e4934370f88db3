/* roofline.c - machine limits for weft: memory read bandwidth and compute peaks,
 * and the bounds they put on decode and prefill tokens/s of a model.
 *
 *   cc -O2 -pthread bench/roofline.c -o build/roofline -lm
 *   build/roofline [--threads N] [--model file.gguf] [--weights-bytes B]
 *                  [--flops-per-token F] [--buffer-mib M] [--reps R]
 *
 * Measures, with 1 and N threads (pthreads, barrier-synchronised start):
 *   - read bandwidth: streaming 64-bit-lane sum over a 1 GiB buffer (DRAM), and
 *     over a buffer the size of the weights, read repeatedly (what decode sees
 *     when the weights fit in the last-level cache);
 *   - FP32 FMA peak: 12 independent vfmadd chains in ymm registers (AVX2+FMA);
 *   - int8 peak, AVX2: vpmaddubsw u8 x s8 -> s16 (+ vpaddw accumulate), and the
 *     ggml-style dot sequence vpmaddubsw -> vpmaddwd(ones) -> vpaddd, which is
 *     what llama.cpp's AVX2 q4/q8 kernels use. 1 multiply-add = 2 ops.
 *   - when the CPU has them (runtime cpuid check), extras: AVX-512 FP32 FMA,
 *     AVX-VNNI vpdpbusd (ymm) and AVX512-VNNI vpdpbusd (zmm).
 * Bounds: decode tok/s <= bandwidth / weights bytes (every weight is read once
 * per token); prefill tok/s <= peak / flops per token (flops = 2 x params,
 * attention excluded; for int8 dot-product paths the int8 peak is the relevant one).
 *
 * Defaults are for SmolLM2-135M-Instruct.Q4_1.gguf: weights bytes = size of the
 * GGUF ($WEFT_MODEL or ~/.cache/weft/models/..., else 98362432), flops per token
 * = 2 x 134515008 parameters = 2.69e8.
 * SIMD kernels use __attribute__((target(...))) so no -m flags are needed.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MODEL_REL ".cache/weft/models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define DEFAULT_WEIGHTS_BYTES 98362432.0
#define DEFAULT_PARAMS 134515008.0

static volatile uint64_t g_sink;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds used by the whole machine (Linux /proc/stat) and by this process,
 * to detect other load that would skew the measurements. */
static void cpu_usage(double *machine, double *self)
{
    unsigned long long v[8] = {0};
    long hz = sysconf(_SC_CLK_TCK);
    struct rusage ru;
    FILE *f = fopen("/proc/stat", "r");
    *machine = -1;
    if (f) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) == 8)
            *machine = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)hz;
        fclose(f);
    }
    getrusage(RUSAGE_SELF, &ru);
    *self = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
            (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* ------------------------------------------------------------------ threads */

struct job;
typedef void (*job_fn)(struct job *j, int tid);

struct job {
    job_fn fn;
    int nthr;
    pthread_barrier_t start, stop;
    /* parameters */
    unsigned char *buf;
    size_t bytes;   /* bytes to read per pass (whole job) */
    int passes;
    long iters;     /* compute iterations per thread */
    int kernel;
};

struct targ {
    struct job *j;
    int tid;
};

static void *worker(void *p)
{
    struct targ *a = p;
    pthread_barrier_wait(&a->j->start);
    a->j->fn(a->j, a->tid);
    pthread_barrier_wait(&a->j->stop);
    return NULL;
}

/* Runs fn on nthr threads (the caller is thread 0); returns wall seconds from
 * the common start to the last thread's end. */
static double run_job(struct job *j, int nthr)
{
    pthread_t th[256];
    struct targ ta[256];
    double t0, t1;
    int i;

    j->nthr = nthr;
    pthread_barrier_init(&j->start, NULL, (unsigned)nthr);
    pthread_barrier_init(&j->stop, NULL, (unsigned)nthr);
    for (i = 1; i < nthr; i++) {
        ta[i].j = j;
        ta[i].tid = i;
        if (pthread_create(&th[i], NULL, worker, &ta[i]) != 0) {
            perror("pthread_create");
            exit(1);
        }
    }
    pthread_barrier_wait(&j->start);
    t0 = now();
    j->fn(j, 0);
    pthread_barrier_wait(&j->stop);
    t1 = now();
    for (i = 1; i < nthr; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&j->start);
    pthread_barrier_destroy(&j->stop);
    return t1 - t0;
}

static void slice(size_t n, int nthr, int tid, size_t *lo, size_t *hi)
{
    /* 4 KiB-aligned contiguous slices */
    size_t pages = n / 4096, per = pages / (size_t)nthr, rem = pages % (size_t)nthr;
    size_t t = (size_t)tid;
    *lo = 4096 * (t * per + (t < rem ? t : rem));
    *hi = *lo + 4096 * (per + (t < rem ? 1 : 0));
}

/* ---------------------------------------------------------------- bandwidth */

static int g_avx2;

__attribute__((target("avx2"))) static uint64_t sum_avx2(const unsigned char *p, size_t n)
{
    const __m256i *v = (const __m256i *)p;
    size_t nv = n / 32, i;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    uint64_t r[4];
    for (i = 0; i + 4 <= nv; i += 4) {
        s0 = _mm256_add_epi64(s0, _mm256_load_si256(v + i));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256(v + i + 1));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256(v + i + 2));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256(v + i + 3));
    }
    s0 = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    _mm256_storeu_si256((__m256i *)r, s0);
    return r[0] + r[1] + r[2] + r[3];
}

static uint64_t sum_scalar(const unsigned char *p, size_t n)
{
    const uint64_t *v = (const uint64_t *)(const void *)p;
    size_t nv = n / 8, i;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (i = 0; i + 4 <= nv; i += 4) {
        s0 += v[i];
        s1 += v[i + 1];
        s2 += v[i + 2];
        s3 += v[i + 3];
    }
    return s0 + s1 + s2 + s3;
}

static void bw_fn(struct job *j, int tid)
{
    size_t lo, hi;
    uint64_t s = 0;
    int p;
    slice(j->bytes, j->nthr, tid, &lo, &hi);
    for (p = 0; p < j->passes; p++)
        s += g_avx2 ? sum_avx2(j->buf + lo, hi - lo) : sum_scalar(j->buf + lo, hi - lo);
    __atomic_fetch_add(&g_sink, s, __ATOMIC_RELAXED);
}

static void init_fn(struct job *j, int tid)
{
    size_t lo, hi, i;
    slice(j->bytes, j->nthr, tid, &lo, &hi);
    for (i = lo; i < hi; i++)
        j->buf[i] = (unsigned char)(i * 131u + 7u);
}

/* GB/s (1e9 bytes), best of reps; each rep reads `bytes` `passes` times */
static double bandwidth(unsigned char *buf, size_t bytes, int passes, int nthr, int reps)
{
    struct job j;
    double best = 1e30;
    int r;
    memset(&j, 0, sizeof j);
    j.fn = bw_fn;
    j.buf = buf;
    j.bytes = bytes;
    j.passes = passes;
    run_job(&j, nthr); /* warm-up */
    for (r = 0; r < reps; r++) {
        double t = run_job(&j, nthr);
        if (t < best)
            best = t;
    }
    return (double)bytes * passes / best / 1e9;
}

/* ------------------------------------------------------------------ compute */

enum { K_FMA_AVX2, K_MADDUBS, K_MADDUBS_MADD, K_FMA_AVX512, K_VNNI_YMM, K_VNNI_ZMM, K_COUNT };

static const char *k_name[K_COUNT] = {
    "FP32 FMA, AVX2 ymm (GFLOP/s)",
    "int8 vpmaddubsw+vpaddw, AVX2 (GOP/s)",
    "int8 maddubs+maddwd+addd, AVX2 ggml-style (GOP/s)",
    "FP32 FMA, AVX-512 zmm (GFLOP/s)",
    "int8 vpdpbusd, AVX-VNNI ymm (GOP/s)",
    "int8 vpdpbusd, AVX512-VNNI zmm (GOP/s)",
};
/* ops per loop iteration of each kernel (1 FMA / multiply-add = 2 ops) */
static const double k_ops[K_COUNT] = {
    12 * 8 * 2,  /* 12 ymm FMAs x 8 lanes */
    6 * 32 * 2,  /* 6 vpmaddubsw x 32 byte products */
    6 * 32 * 2,
    12 * 16 * 2, /* 12 zmm FMAs x 16 lanes */
    12 * 32 * 2, /* 12 ymm vpdpbusd x 32 byte products */
    12 * 64 * 2, /* 12 zmm vpdpbusd x 64 byte products */
};

/* An empty asm that claims to modify v: keeps loop-invariant inputs from being
 * hoisted out of the loop, costs no instruction. */
#define OPAQUE(v) __asm__ volatile("" : "+x"(v))

__attribute__((target("avx2,fma"))) static uint64_t k_fma_avx2(long iters, int seed)
{
    __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    __m256 a0 = _mm256_set1_ps(0.01f * (float)seed), a1 = _mm256_add_ps(a0, b),
           a2 = _mm256_add_ps(a1, b), a3 = _mm256_add_ps(a2, b), a4 = _mm256_add_ps(a3, b),
           a5 = _mm256_add_ps(a4, b), a6 = _mm256_add_ps(a5, b), a7 = _mm256_add_ps(a6, b),
           a8 = _mm256_add_ps(a7, b), a9 = _mm256_add_ps(a8, b), a10 = _mm256_add_ps(a9, b),
           a11 = _mm256_add_ps(a10, b);
    float r[8];
    long i;
    for (i = 0; i < iters; i++) {
        a0 = _mm256_fmadd_ps(a0, b, c);
        a1 = _mm256_fmadd_ps(a1, b, c);
        a2 = _mm256_fmadd_ps(a2, b, c);
        a3 = _mm256_fmadd_ps(a3, b, c);
        a4 = _mm256_fmadd_ps(a4, b, c);
        a5 = _mm256_fmadd_ps(a5, b, c);
        a6 = _mm256_fmadd_ps(a6, b, c);
        a7 = _mm256_fmadd_ps(a7, b, c);
        a8 = _mm256_fmadd_ps(a8, b, c);
        a9 = _mm256_fmadd_ps(a9, b, c);
        a10 = _mm256_fmadd_ps(a10, b, c);
        a11 = _mm256_fmadd_ps(a11, b, c);
    }
    a0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                       _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    a0 = _mm256_add_ps(a0, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    _mm256_storeu_ps(r, a0);
    return (uint64_t)(r[0] + r[7]);
}

/* 6 independent vpmaddubsw per iteration on distinct (x, y) pairs (2 x 3 inputs),
 * made opaque each iteration so nothing is hoisted or CSE'd across iterations;
 * 6 chains keep everything in the 16 ymm registers (no spills). */
#define MADDUBS_CHAINS 6
__attribute__((target("avx2"))) static uint64_t k_maddubs(long iters, int seed, int with_madd)
{
    __m256i x0 = _mm256_set1_epi8((char)(3 + seed)), x1 = _mm256_set1_epi8(5);
    __m256i y0 = _mm256_set1_epi8(1), y1 = _mm256_set1_epi8(-2), y2 = _mm256_set1_epi8(3);
    __m256i ones = _mm256_set1_epi16(1);
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0;
    int32_t r[8];
    long i;
    if (with_madd) {
        for (i = 0; i < iters; i++) {
            OPAQUE(x0); OPAQUE(x1); OPAQUE(y0); OPAQUE(y1); OPAQUE(y2);
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_maddubs_epi16(x0, y0), ones));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_maddubs_epi16(x0, y1), ones));
            s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(_mm256_maddubs_epi16(x0, y2), ones));
            s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(_mm256_maddubs_epi16(x1, y0), ones));
            s4 = _mm256_add_epi32(s4, _mm256_madd_epi16(_mm256_maddubs_epi16(x1, y1), ones));
            s5 = _mm256_add_epi32(s5, _mm256_madd_epi16(_mm256_maddubs_epi16(x1, y2), ones));
        }
    } else {
        for (i = 0; i < iters; i++) {
            OPAQUE(x0); OPAQUE(x1); OPAQUE(y0); OPAQUE(y1); OPAQUE(y2);
            s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(x0, y0));
            s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(x0, y1));
            s2 = _mm256_add_epi16(s2, _mm256_maddubs_epi16(x0, y2));
            s3 = _mm256_add_epi16(s3, _mm256_maddubs_epi16(x1, y0));
            s4 = _mm256_add_epi16(s4, _mm256_maddubs_epi16(x1, y1));
            s5 = _mm256_add_epi16(s5, _mm256_maddubs_epi16(x1, y2));
        }
    }
    s0 = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3)),
                          _mm256_add_epi32(s4, s5));
    _mm256_storeu_si256((__m256i *)r, s0);
    return (uint64_t)(uint32_t)(r[0] ^ r[7]);
}

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define HAVE_EXTRAS 1

__attribute__((target("avx512f"))) static uint64_t k_fma_avx512(long iters, int seed)
{
    __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    __m512 a[12];
    float r[16];
    long i;
    int k;
    for (k = 0; k < 12; k++)
        a[k] = _mm512_set1_ps(0.01f * (float)(seed + k));
    for (i = 0; i < iters; i++) {
        a[0] = _mm512_fmadd_ps(a[0], b, c);
        a[1] = _mm512_fmadd_ps(a[1], b, c);
        a[2] = _mm512_fmadd_ps(a[2], b, c);
        a[3] = _mm512_fmadd_ps(a[3], b, c);
        a[4] = _mm512_fmadd_ps(a[4], b, c);
        a[5] = _mm512_fmadd_ps(a[5], b, c);
        a[6] = _mm512_fmadd_ps(a[6], b, c);
        a[7] = _mm512_fmadd_ps(a[7], b, c);
        a[8] = _mm512_fmadd_ps(a[8], b, c);
        a[9] = _mm512_fmadd_ps(a[9], b, c);
        a[10] = _mm512_fmadd_ps(a[10], b, c);
        a[11] = _mm512_fmadd_ps(a[11], b, c);
    }
    for (k = 1; k < 12; k++)
        a[0] = _mm512_add_ps(a[0], a[k]);
    _mm512_storeu_ps(r, a[0]);
    return (uint64_t)(r[0] + r[15]);
}

__attribute__((target("avx2,avxvnni"))) static uint64_t k_vnni_ymm(long iters, int seed)
{
    __m256i x = _mm256_set1_epi8((char)(3 + seed)), y = _mm256_set1_epi8(-2);
    __m256i s[12];
    int32_t r[8];
    long i;
    int k;
    for (k = 0; k < 12; k++)
        s[k] = _mm256_set1_epi32(k);
    for (i = 0; i < iters; i++) {
        s[0] = _mm256_dpbusd_avx_epi32(s[0], x, y);
        s[1] = _mm256_dpbusd_avx_epi32(s[1], x, y);
        s[2] = _mm256_dpbusd_avx_epi32(s[2], x, y);
        s[3] = _mm256_dpbusd_avx_epi32(s[3], x, y);
        s[4] = _mm256_dpbusd_avx_epi32(s[4], x, y);
        s[5] = _mm256_dpbusd_avx_epi32(s[5], x, y);
        s[6] = _mm256_dpbusd_avx_epi32(s[6], x, y);
        s[7] = _mm256_dpbusd_avx_epi32(s[7], x, y);
        s[8] = _mm256_dpbusd_avx_epi32(s[8], x, y);
        s[9] = _mm256_dpbusd_avx_epi32(s[9], x, y);
        s[10] = _mm256_dpbusd_avx_epi32(s[10], x, y);
        s[11] = _mm256_dpbusd_avx_epi32(s[11], x, y);
    }
    for (k = 1; k < 12; k++)
        s[0] = _mm256_add_epi32(s[0], s[k]);
    _mm256_storeu_si256((__m256i *)r, s[0]);
    return (uint64_t)(uint32_t)(r[0] ^ r[7]);
}

__attribute__((target("avx512f,avx512vnni"))) static uint64_t k_vnni_zmm(long iters, int seed)
{
    __m512i x = _mm512_set1_epi8((char)(3 + seed)), y = _mm512_set1_epi8(-2);
    __m512i s[12];
    int32_t r[16];
    long i;
    int k;
    for (k = 0; k < 12; k++)
        s[k] = _mm512_set1_epi32(k);
    for (i = 0; i < iters; i++) {
        s[0] = _mm512_dpbusd_epi32(s[0], x, y);
        s[1] = _mm512_dpbusd_epi32(s[1], x, y);
        s[2] = _mm512_dpbusd_epi32(s[2], x, y);
        s[3] = _mm512_dpbusd_epi32(s[3], x, y);
        s[4] = _mm512_dpbusd_epi32(s[4], x, y);
        s[5] = _mm512_dpbusd_epi32(s[5], x, y);
        s[6] = _mm512_dpbusd_epi32(s[6], x, y);
        s[7] = _mm512_dpbusd_epi32(s[7], x, y);
        s[8] = _mm512_dpbusd_epi32(s[8], x, y);
        s[9] = _mm512_dpbusd_epi32(s[9], x, y);
        s[10] = _mm512_dpbusd_epi32(s[10], x, y);
        s[11] = _mm512_dpbusd_epi32(s[11], x, y);
    }
    for (k = 1; k < 12; k++)
        s[0] = _mm512_add_epi32(s[0], s[k]);
    _mm512_storeu_si512((void *)r, s[0]);
    return (uint64_t)(uint32_t)(r[0] ^ r[15]);
}
#else
#define HAVE_EXTRAS 0
#endif

static int k_available(int k)
{
    switch (k) {
    case K_FMA_AVX2:
        return g_avx2 && __builtin_cpu_supports("fma");
    case K_MADDUBS:
    case K_MADDUBS_MADD:
        return g_avx2;
#if HAVE_EXTRAS
    case K_FMA_AVX512:
        return __builtin_cpu_supports("avx512f");
    case K_VNNI_YMM:
        return g_avx2 && __builtin_cpu_supports("avxvnni");
    case K_VNNI_ZMM:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
#endif
    default:
        return 0;
    }
}

static void compute_fn(struct job *j, int tid)
{
    uint64_t s = 0;
    switch (j->kernel) {
    case K_FMA_AVX2: s = k_fma_avx2(j->iters, tid); break;
    case K_MADDUBS: s = k_maddubs(j->iters, tid, 0); break;
    case K_MADDUBS_MADD: s = k_maddubs(j->iters, tid, 1); break;
#if HAVE_EXTRAS
    case K_FMA_AVX512: s = k_fma_avx512(j->iters, tid); break;
    case K_VNNI_YMM: s = k_vnni_ymm(j->iters, tid); break;
    case K_VNNI_ZMM: s = k_vnni_zmm(j->iters, tid); break;
#endif
    default: break;
    }
    __atomic_fetch_add(&g_sink, s, __ATOMIC_RELAXED);
}

/* G(FL)OP/s summed over threads, best of reps; iterations calibrated to ~0.2 s */
static double peak(int kernel, int nthr, int reps)
{
    struct job j;
    double best = 1e30, t;
    int r;
    memset(&j, 0, sizeof j);
    j.fn = compute_fn;
    j.kernel = kernel;
    j.iters = 1000000;
    for (;;) { /* calibrate on one thread */
        t = run_job(&j, 1);
        if (t > 0.05 || j.iters > (1L << 40))
            break;
        j.iters *= 4;
    }
    j.iters = (long)((double)j.iters * 0.2 / t) + 1;
    for (r = 0; r < reps; r++) {
        t = run_job(&j, nthr);
        if (t < best)
            best = t;
    }
    return k_ops[kernel] * (double)j.iters * nthr / best / 1e9;
}

/* --------------------------------------------------------------------- main */

static void usage(const char *p)
{
    fprintf(stderr,
            "usage: %s [--threads N] [--model file.gguf] [--weights-bytes B]\n"
            "          [--flops-per-token F] [--buffer-mib M] [--reps R]\n",
            p);
    exit(2);
}

int main(int argc, char **argv)
{
    int nthr = (int)sysconf(_SC_NPROCESSORS_ONLN), reps = 5, i, k;
    double wbytes = 0, fpt = 2.0 * DEFAULT_PARAMS;
    size_t bufmib = 1024, bytes, wsz;
    const char *model = NULL, *wsrc = "default";
    char defpath[4096];
    struct stat st;
    unsigned char *buf;
    double bw_dram[2], bw_warm[2], pk[K_COUNT][2];
    double m0, s0, m1, s1, w0, w1;
    int tcount[2];

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            nthr = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--weights-bytes") && i + 1 < argc)
            wbytes = atof(argv[++i]);
        else if (!strcmp(argv[i], "--flops-per-token") && i + 1 < argc)
            fpt = atof(argv[++i]);
        else if (!strcmp(argv[i], "--buffer-mib") && i + 1 < argc)
            bufmib = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else
            usage(argv[0]);
    }
    if (nthr < 1 || nthr > 256 || reps < 1 || bufmib < 1 || fpt <= 0)
        usage(argv[0]);

    if (wbytes > 0) {
        wsrc = "--weights-bytes";
    } else {
        if (!model) {
            const char *env = getenv("WEFT_MODEL"), *home = getenv("HOME");
            if (env && *env)
                model = env;
            else if (home) {
                snprintf(defpath, sizeof defpath, "%s/%s", home, DEFAULT_MODEL_REL);
                model = defpath;
            }
        }
        if (model && stat(model, &st) == 0) {
            wbytes = (double)st.st_size;
            wsrc = model;
        } else {
            wbytes = DEFAULT_WEIGHTS_BYTES;
            wsrc = "built-in default (SmolLM2-135M Q4_1)";
        }
    }

    __builtin_cpu_init();
    g_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;

    bytes = bufmib << 20;
    buf = aligned_alloc(1 << 21, bytes);
    if (!buf) {
        fprintf(stderr, "cannot allocate %zu MiB\n", bufmib);
        return 1;
    }
#ifdef MADV_HUGEPAGE
    madvise(buf, bytes, MADV_HUGEPAGE);
#endif
    {
        struct job j;
        memset(&j, 0, sizeof j);
        j.fn = init_fn;
        j.buf = buf;
        j.bytes = bytes;
        run_job(&j, nthr); /* first touch by the threads that will read */
    }
    wsz = (size_t)wbytes;
    if (wsz > bytes)
        wsz = bytes;
    wsz &= ~(size_t)4095;

    printf("roofline: threads=%d, avx2=%d fma=%d avx512f=%d avxvnni=%d avx512vnni=%d\n", nthr,
           g_avx2, __builtin_cpu_supports("fma") ? 1 : 0,
           __builtin_cpu_supports("avx512f") ? 1 : 0,
#if HAVE_EXTRAS
           __builtin_cpu_supports("avxvnni") ? 1 : 0,
#else
           -1,
#endif
           __builtin_cpu_supports("avx512vnni") ? 1 : 0);
    printf("weights bytes %.0f (%s), flops/token %.4g\n\n", wbytes, wsrc, fpt);
    fflush(stdout);

    cpu_usage(&m0, &s0);
    w0 = now();
    tcount[0] = 1;
    tcount[1] = nthr;
    for (i = 0; i < 2; i++) {
        int passes = (int)((double)bytes / (double)wsz + 0.5);
        if (i == 1 && nthr == 1) {
            bw_dram[1] = bw_dram[0];
            bw_warm[1] = bw_warm[0];
            break;
        }
        bw_dram[i] = bandwidth(buf, bytes, 1, tcount[i], reps);
        bw_warm[i] = bandwidth(buf, wsz, passes < 1 ? 1 : passes, tcount[i], reps);
    }
    for (k = 0; k < K_COUNT; k++) {
        pk[k][0] = pk[k][1] = -1;
        if (!k_available(k))
            continue;
        pk[k][0] = peak(k, 1, reps);
        pk[k][1] = nthr == 1 ? pk[k][0] : peak(k, nthr, reps);
    }

    cpu_usage(&m1, &s1);
    w1 = now();

    printf("%-52s %12s %12s\n", "measurement", "1 thread", "threads");
    printf("%-52s %12.2f %12.2f\n", "read bandwidth, 1 GiB buffer (GB/s)", bw_dram[0], bw_dram[1]);
    {
        char lab[96];
        snprintf(lab, sizeof lab, "read bandwidth, %.1f MB buffer, warm (GB/s)", (double)wsz / 1e6);
        printf("%-52s %12.2f %12.2f\n", lab, bw_warm[0], bw_warm[1]);
    }
    for (k = 0; k < K_COUNT; k++) {
        if (pk[k][0] < 0)
            printf("%-52s %12s %12s\n", k_name[k], "n/a", "n/a");
        else
            printf("%-52s %12.1f %12.1f\n", k_name[k], pk[k][0], pk[k][1]);
    }

    printf("\nbounds (tokens/s)                                        1 thread      threads\n");
    printf("%-52s %12.1f %12.1f\n", "decode <= DRAM bandwidth / weights bytes",
           bw_dram[0] * 1e9 / wbytes, bw_dram[1] * 1e9 / wbytes);
    printf("%-52s %12.1f %12.1f\n", "decode <= warm-cache bandwidth / weights bytes",
           bw_warm[0] * 1e9 / wbytes, bw_warm[1] * 1e9 / wbytes);
    for (k = 0; k < K_COUNT; k++) {
        char lab[96];
        if (pk[k][0] < 0 || k == K_MADDUBS)
            continue;
        snprintf(lab, sizeof lab, "prefill <= %s peak / flops", k == K_FMA_AVX2 ? "FP32 AVX2"
                 : k == K_MADDUBS_MADD ? "int8 AVX2 (ggml-style)"
                 : k == K_FMA_AVX512 ? "FP32 AVX-512"
                 : k == K_VNNI_YMM ? "int8 AVX-VNNI" : "int8 AVX512-VNNI");
        printf("%-52s %12.1f %12.1f\n", lab, pk[k][0] * 1e9 / fpt, pk[k][1] * 1e9 / fpt);
    }
    printf("\nnotes: GB/s = 1e9 bytes/s; 1 multiply-add = 2 ops; flops/token excludes attention\n"
           "(which adds ~4*n_layer*dim*ctx per token); the q4/q8 dot kernels also spend\n"
           "instructions on nibble unpacking and scales, so their real peak is below the int8 row.\n");
    if (m0 >= 0) {
        double ncpu = (double)sysconf(_SC_NPROCESSORS_ONLN);
        double other = ((m1 - m0) - (s1 - s0)) / ((w1 - w0) * ncpu);
        printf("other processes used %.1f%% of the CPUs during the measurements%s\n",
               100.0 * (other > 0 ? other : 0),
               other > 0.03 ? " -- WARNING: results are skewed, rerun on an idle machine" : "");
    }
    free(buf);
    return 0;
}

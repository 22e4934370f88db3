/*
 * kernels/cpu/pool.h — a fixed pool of compute threads that run one function
 * together, llama.cpp-style: pool_run(fn) calls fn(arg, &t) on every thread
 * (the caller is thread 0) and returns when all have returned. Inside fn,
 * pool_barrier(&t) waits for all threads; ops split their work by t.ith/t.nth.
 * Between runs the workers sleep; inside a run barriers spin (a forward pass
 * has hundreds of them per token, far too many for a sleeping barrier).
 */
#ifndef WEFT_KERNELS_CPU_POOL_H
#define WEFT_KERNELS_CPU_POOL_H

typedef struct pool pool;

typedef struct pool_thread {
    int ith; /* this thread's index, 0..nth-1 */
    int nth; /* number of threads in the run */
    pool *p;
} pool_thread;

typedef void (*pool_fn)(void *arg, const pool_thread *t);

/* n_threads >= 1 (n_threads - 1 workers are started). Returns NULL on failure. */
pool *pool_create(int n_threads);
void pool_destroy(pool *p);
int pool_size(const pool *p);

/* Runs fn on all threads; not reentrant (one run at a time per pool). */
void pool_run(pool *p, pool_fn fn, void *arg);

/* All threads of the run must call it the same number of times. */
void pool_barrier(const pool_thread *t);

/* Splits [0, n) into nth nearly equal ranges; sets *lo, *hi for thread ith. */
static inline void pool_range(const pool_thread *t, long n, long *lo, long *hi)
{
    long per = (n + t->nth - 1) / t->nth;
    *lo = per * t->ith;
    if (*lo > n) *lo = n;
    *hi = *lo + per;
    if (*hi > n) *hi = n;
}

#endif

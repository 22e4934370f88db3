/* Thread pool with spinning barriers; see pool.h. */
#include "kernels/cpu/pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "weft/common.h"

struct worker_arg;

struct pool {
    int n;
    pthread_t *threads;
    struct worker_arg *args; /* (n) owned here, not by the workers: a worker
                                that freed its own at start would change the
                                allocation count whenever it got scheduled */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* A run: the workers see gen change, run fn, then count themselves done. */
    atomic_int gen;
    atomic_int n_done;
    bool stop;
    pool_fn fn;
    void *arg;
    /* Barrier: count arrivals; the last one flips the phase and wakes
     * whoever went to sleep on it. */
    atomic_int bar_count;
    atomic_int bar_phase;
    atomic_int bar_sleepers;
};

/* Spins before a waiter sleeps: long enough that a barrier between two ops
 * of a forward pass never sleeps on an idle machine, short enough that an
 * oversubscribed one (more runnable threads than cores) hands the core to
 * the thread everyone is waiting for. */
#define SPIN_BEFORE_SLEEP 4096

struct worker_arg {
    pool *p;
    int ith;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void futex_wait(atomic_int *addr, int val)
{
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(atomic_int *addr)
{
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void pool_barrier(const pool_thread *t)
{
    pool *p = t->p;
    if (t->nth == 1) return;
    const int phase = atomic_load(&p->bar_phase);
    if (atomic_fetch_add(&p->bar_count, 1) == t->nth - 1) {
        atomic_store(&p->bar_count, 0);
        atomic_fetch_add(&p->bar_phase, 1);
        /* seq_cst store/load pair with the sleeper's: either it sees the new
         * phase, or we see it counted and wake it */
        if (atomic_load(&p->bar_sleepers) > 0) futex_wake_all(&p->bar_phase);
        return;
    }
    for (int i = 0; i < SPIN_BEFORE_SLEEP; i++) {
        if (atomic_load_explicit(&p->bar_phase, memory_order_acquire) != phase) return;
        cpu_relax();
    }
    atomic_fetch_add(&p->bar_sleepers, 1);
    while (atomic_load(&p->bar_phase) == phase) futex_wait(&p->bar_phase, phase);
    atomic_fetch_sub(&p->bar_sleepers, 1);
}

static void *worker_main(void *arg_)
{
    const struct worker_arg *wa = arg_;
    pool *p = wa->p;
    pool_thread t = {.ith = wa->ith, .nth = p->n, .p = p};
    int seen = 0;
    for (;;) {
        /* Spin briefly for the next run (decode steps come back to back), then sleep. */
        int spins = 0;
        while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen && spins < 20000) {
            cpu_relax();
            spins++;
        }
        if (atomic_load_explicit(&p->gen, memory_order_acquire) == seen) {
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (p->stop && atomic_load(&p->gen) == seen) return NULL;
        seen = atomic_load(&p->gen);
        if (p->stop) return NULL;
        p->fn(p->arg, &t);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_release);
    }
}

pool *pool_create(int n_threads)
{
    if (n_threads < 1) n_threads = 1;
    pool *p = weft_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = weft_calloc((size_t)n_threads, sizeof *p->threads);
    p->args = weft_calloc((size_t)n_threads, sizeof *p->args);
    if (!p->threads || !p->args) {
        p->n = 1; /* no worker exists */
        goto fail;
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *wa = &p->args[i];
        wa->p = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            p->n = i; /* only i-1 workers exist */
            goto fail;
        }
    }
    return p;
fail:
    pool_destroy(p);
    return NULL;
}

void pool_destroy(pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        if (p->threads && p->threads[i]) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    weft_free(p->threads);
    weft_free(p->args);
    weft_free(p);
}

int pool_size(const pool *p) { return p->n; }

void pool_run(pool *p, pool_fn fn, void *arg)
{
    pool_thread t = {.ith = 0, .nth = p->n, .p = p};
    if (p->n == 1) {
        fn(arg, &t);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->n_done, 0);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(arg, &t);
    for (int spins = 0; atomic_load_explicit(&p->n_done, memory_order_acquire) != p->n - 1;) {
        cpu_relax();
        if (++spins > SPIN_BEFORE_SLEEP) sched_yield();
    }
}

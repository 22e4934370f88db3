/* Error detail, logging, the counting allocator, the arena (common/arena.h) and the clock. */
#include "weft/common.h"
#include "common/arena.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

static _Thread_local char err_detail[1024];
static int log_level = 1;
static atomic_size_t mem_in_use;

const char *weft_strerror(int code)
{
    switch (code) {
    case WEFT_OK: return "success";
    case WEFT_EINVAL: return "invalid argument";
    case WEFT_ENOMEM: return "out of memory";
    case WEFT_EIO: return "I/O error";
    case WEFT_EFORMAT: return "bad file format";
    case WEFT_EUNSUPPORTED: return "not supported";
    case WEFT_ERANGE: return "out of range";
    case WEFT_ENOKV: return "no KV blocks available";
    case WEFT_ECANCELED: return "cancelled";
    case WEFT_ENOTFOUND: return "not found";
    case WEFT_EBUSY: return "busy";
    default: return "unknown error";
    }
}

int weft_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_detail, sizeof err_detail, fmt, ap);
    va_end(ap);
    return code;
}

const char *weft_last_error(void) { return err_detail; }

void weft_log_set_level(int level) { log_level = level; }
int weft_log_level(void) { return log_level; }

void weft_log(int level, const char *fmt, ...)
{
    if (level > log_level) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* Each block carries its size in a 16-byte header (keeps 16-byte alignment). */
#define HDR 16

void *weft_malloc(size_t n)
{
    if (n > SIZE_MAX - HDR) return NULL;
    unsigned char *p = malloc(n + HDR);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    atomic_fetch_add(&mem_in_use, n);
    return p + HDR;
}

void *weft_calloc(size_t n, size_t size)
{
    if (size && n > (SIZE_MAX - HDR) / size) return NULL;
    void *p = weft_malloc(n * size);
    if (p) memset(p, 0, n * size);
    return p;
}

void *weft_realloc(void *p, size_t n)
{
    if (!p) return weft_malloc(n);
    if (n > SIZE_MAX - HDR) return NULL;
    unsigned char *b = (unsigned char *)p - HDR;
    size_t old;
    memcpy(&old, b, sizeof old);
    unsigned char *nb = realloc(b, n + HDR);
    if (!nb) return NULL;
    memcpy(nb, &n, sizeof n);
    atomic_fetch_add(&mem_in_use, n);
    atomic_fetch_sub(&mem_in_use, old);
    return nb + HDR;
}

void weft_free(void *p)
{
    if (!p) return;
    unsigned char *b = (unsigned char *)p - HDR;
    size_t n;
    memcpy(&n, b, sizeof n);
    atomic_fetch_sub(&mem_in_use, n);
    free(b);
}

char *weft_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = weft_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

size_t weft_mem_in_use(void) { return atomic_load(&mem_in_use); }

double weft_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void weft_assert_fail(const char *file, int line, const char *expr)
{
    fprintf(stderr, "weft: assertion failed at %s:%d: %s\n", file, line, expr);
    abort();
}


/* ---- arena ---------------------------------------------------------------- */

#define HUGE_PAGE ((size_t)2 << 20)

typedef struct arena_chunk {
    struct arena_chunk *next;
    void *map;     /* what to unmap (or free) */
    size_t map_n;
    unsigned char *cur, *end;
} arena_chunk;

struct weft_arena {
    arena_chunk *chunks; /* the newest first */
    size_t handed;       /* bytes handed out, counted in weft_mem_in_use */
};

void weft_huge_hint(void *p, size_t n)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t lo = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1),
                    hi = ((uintptr_t)p + n) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (p && hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p, (void)n;
#endif
}

weft_arena *weft_arena_create(void)
{
    weft_arena *a = malloc(sizeof *a);
    if (a) *a = (weft_arena){0};
    return a;
}

static arena_chunk *chunk_new(size_t need)
{
    arena_chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    size_t n = need > WEFT_ARENA_CHUNK ? need : WEFT_ARENA_CHUNK;
    n = (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
#if defined(__linux__)
    /* one huge page more, to start on a 2 MB boundary */
    void *m = mmap(NULL, n + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        free(c);
        return NULL;
    }
    c->map = m;
    c->map_n = n + HUGE_PAGE;
    c->cur = (unsigned char *)(((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    weft_huge_hint(c->cur, n);
#else
    void *m = malloc(n + 64);
    if (!m) {
        free(c);
        return NULL;
    }
    c->map = m;
    c->map_n = n + 64;
    c->cur = (unsigned char *)(((uintptr_t)m + 63) & ~(uintptr_t)63);
#endif
    c->end = c->cur + n;
    c->next = NULL;
    return c;
}

void *weft_arena_alloc(weft_arena *a, size_t n)
{
    if (!a || n > SIZE_MAX / 2) return NULL;
    n = (n + 63) & ~(size_t)63;
    arena_chunk *c = a->chunks;
    if (!c || (size_t)(c->end - c->cur) < n) {
        if (!(c = chunk_new(n))) return NULL;
        c->next = a->chunks;
        a->chunks = c;
    }
    void *p = c->cur;
    c->cur += n;
    a->handed += n;
    atomic_fetch_add(&mem_in_use, n);
    return p;
}

void weft_arena_destroy(weft_arena *a)
{
    if (!a) return;
    for (arena_chunk *c = a->chunks, *next; c; c = next) {
        next = c->next;
#if defined(__linux__)
        munmap(c->map, c->map_n);
#else
        free(c->map);
#endif
        free(c);
    }
    atomic_fetch_sub(&mem_in_use, a->handed);
    free(a);
}

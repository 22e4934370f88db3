/* Error detail, logging, the counting allocator and the clock. */
#include "weft/common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/*
 * weft/common.h — error codes, error detail, logging and the counting allocator
 * shared by every weft module.
 *
 * Return convention: functions that can fail return int, 0 on success and a
 * negative WEFT_E* code on failure. The failing function also records a
 * human-readable detail for the calling thread, read with weft_last_error();
 * the detail stays valid until the next failure on the same thread.
 */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define WEFT_API __attribute__((visibility("default")))
#define WEFT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define WEFT_API
#define WEFT_PRINTF(a, b)
#endif

enum {
    WEFT_OK = 0,
    WEFT_EINVAL = -1,       /* bad argument or malformed input */
    WEFT_ENOMEM = -2,       /* allocation failed */
    WEFT_EIO = -3,          /* open/read/mmap failed */
    WEFT_EFORMAT = -4,      /* a file is corrupt or not of the expected format */
    WEFT_EUNSUPPORTED = -5, /* valid, but weft does not implement it */
    WEFT_ERANGE = -6,       /* a size is over a limit (context, body, ...) */
    WEFT_ENOKV = -7,        /* no KV blocks left */
    WEFT_ECANCELED = -8,    /* the request was cancelled */
    WEFT_ENOTFOUND = -9,    /* a key, tensor or name does not exist */
    WEFT_EBUSY = -10,       /* a queue is full */
};

/* Static name of a code: "invalid argument", ... Never NULL. */
WEFT_API const char *weft_strerror(int code);

/* Records a detail for this thread and returns `code`, so callers can write
 * `return weft_error(WEFT_EFORMAT, "tensor %s: offset out of file", name);` */
WEFT_API int weft_error(int code, const char *fmt, ...) WEFT_PRINTF(2, 3);

/* The detail recorded by the last weft_error() on this thread ("" if none).
 * Borrowed; valid until the next weft_error() on this thread. */
WEFT_API const char *weft_last_error(void);

/* Logging to stderr. Level 0 = errors only, 1 = info (default), 2 = debug. */
WEFT_API void weft_log_set_level(int level);
WEFT_API int weft_log_level(void);
WEFT_API void weft_log(int level, const char *fmt, ...) WEFT_PRINTF(2, 3);

/* Counting allocator: every weft allocation goes through these so that usage
 * can be read and capped (the Lua sandbox builds its lua_Alloc on them).
 * weft_malloc/weft_calloc/weft_realloc return NULL on failure, never abort. */
WEFT_API void *weft_malloc(size_t n);
WEFT_API void *weft_calloc(size_t n, size_t size);
WEFT_API void *weft_realloc(void *p, size_t n);
WEFT_API void weft_free(void *p);
WEFT_API char *weft_strdup(const char *s);
/* Bytes currently allocated through the functions above. */
WEFT_API size_t weft_mem_in_use(void);

/* Monotonic time in seconds. */
WEFT_API double weft_now(void);

/* Broken invariant: print and abort. Not for input errors. */
#define WEFT_ASSERT(x)                                                              \
    do {                                                                            \
        if (!(x)) weft_assert_fail(__FILE__, __LINE__, #x);                         \
    } while (0)
WEFT_API void weft_assert_fail(const char *file, int line, const char *expr)
    __attribute__((noreturn));

#ifdef __cplusplus
}
#endif
#endif

/*
 * common/arena.h — a bump allocator over large mappings backed, where the
 * kernel allows, by 2 MB pages (transparent huge pages).
 *
 * For memory that lives as long as a model and is streamed on every step —
 * the repacked weight copies (hundreds of MB in matrices of 0.5-2 MB each).
 * With 4 KB pages each page read is a TLB miss and a page walk; Debian's
 * default THP mode is "madvise", so a region gets 2 MB pages only when it
 * is marked MADV_HUGEPAGE before it is first written. Allocations come from
 * chunks of at least WEFT_ARENA_CHUNK bytes of address space (pages are
 * only backed as they are written, so an unused tail costs address space,
 * not memory); nothing is freed before weft_arena_destroy. Counted in
 * weft_mem_in_use (the bytes handed out). Not thread-safe. Internal.
 */
#ifndef WEFT_COMMON_ARENA_H
#define WEFT_COMMON_ARENA_H

#include <stddef.h>

#define WEFT_ARENA_CHUNK ((size_t)256 << 20)

typedef struct weft_arena weft_arena;

/* NULL when out of memory. */
weft_arena *weft_arena_create(void);
/* n bytes aligned to 64, or NULL when out of memory (the arena is unchanged). */
void *weft_arena_alloc(weft_arena *a, size_t n);
/* Unmaps every chunk. NULL is a no-op. */
void weft_arena_destroy(weft_arena *a);

/* Marks the 2 MB-aligned part of [p, p + n) MADV_HUGEPAGE (a hint: nothing
 * happens off Linux or when the kernel declines). For one large allocation,
 * right after it is made. */
void weft_huge_hint(void *p, size_t n);

#endif

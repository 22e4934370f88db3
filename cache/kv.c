/* KV block pool: a free list over one arena; see kv.h. */
#include "cache/kv.h"
#include "common/arena.h"

#include <stdlib.h>

#include "weft/common.h"

struct kv_pool {
    int32_t n_blocks;
    size_t block_bytes;
    unsigned char *arena;
    int32_t *refcount; /* per block */
    int32_t *free_list; /* stack of free block ids */
    int32_t n_free;
};

kv_pool *kv_pool_create(int32_t n_blocks, size_t block_bytes)
{
    if (n_blocks <= 0 || block_bytes == 0) return NULL;
    kv_pool *p = weft_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_blocks = n_blocks;
    p->block_bytes = (block_bytes + 63) & ~(size_t)63;
    if (posix_memalign((void **)&p->arena, 64, p->block_bytes * (size_t)n_blocks) != 0) {
        p->arena = NULL;
        goto fail;
    }
    /* every step reads blocks all over it: 2 MB pages where the kernel allows */
    weft_huge_hint(p->arena, p->block_bytes * (size_t)n_blocks);
    p->refcount = weft_calloc((size_t)n_blocks, sizeof *p->refcount);
    p->free_list = weft_malloc((size_t)n_blocks * sizeof *p->free_list);
    if (!p->refcount || !p->free_list) goto fail;
    /* Hand out low ids first. */
    for (int32_t i = 0; i < n_blocks; i++) p->free_list[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    return p;
fail:
    kv_pool_destroy(p);
    return NULL;
}

void kv_pool_destroy(kv_pool *p)
{
    if (!p) return;
    free(p->arena);
    weft_free(p->refcount);
    weft_free(p->free_list);
    weft_free(p);
}

int32_t kv_block_alloc(kv_pool *p)
{
    if (p->n_free == 0) return -1;
    int32_t b = p->free_list[--p->n_free];
    p->refcount[b] = 1;
    return b;
}

void kv_block_ref(kv_pool *p, int32_t b)
{
    WEFT_ASSERT(b >= 0 && b < p->n_blocks && p->refcount[b] > 0);
    p->refcount[b]++;
}

void kv_block_unref(kv_pool *p, int32_t b)
{
    WEFT_ASSERT(b >= 0 && b < p->n_blocks && p->refcount[b] > 0);
    if (--p->refcount[b] == 0) p->free_list[p->n_free++] = b;
}

int32_t kv_block_refcount(const kv_pool *p, int32_t b) { return p->refcount[b]; }
void *kv_block_data(const kv_pool *p, int32_t b) { return p->arena + (size_t)b * p->block_bytes; }
int32_t kv_pool_n_blocks(const kv_pool *p) { return p->n_blocks; }
int32_t kv_pool_n_free(const kv_pool *p) { return p->n_free; }
size_t kv_pool_block_bytes(const kv_pool *p) { return p->block_bytes; }

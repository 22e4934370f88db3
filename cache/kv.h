/*
 * cache/kv.h — the KV block pool: fixed-size blocks carved from one arena,
 * reference counted so sequences can share them (prefix sharing, forks).
 * A block holds KV_BLOCK_TOKENS positions of every layer; what the bytes mean
 * is the model context's business (engine/forward.c lays them out).
 */
#ifndef WEFT_CACHE_KV_H
#define WEFT_CACHE_KV_H

#include <stddef.h>
#include <stdint.h>

#define KV_BLOCK_TOKENS 16

typedef struct kv_pool kv_pool;

/* n_blocks blocks of block_bytes each (64-byte aligned). NULL on failure. */
kv_pool *kv_pool_create(int32_t n_blocks, size_t block_bytes);
void kv_pool_destroy(kv_pool *p);

/* A free block with refcount 1, or -1 when none is left. */
int32_t kv_block_alloc(kv_pool *p);
void kv_block_ref(kv_pool *p, int32_t b);
/* Drops a reference; at zero the block is free again. */
void kv_block_unref(kv_pool *p, int32_t b);
int32_t kv_block_refcount(const kv_pool *p, int32_t b);
void *kv_block_data(const kv_pool *p, int32_t b);

int32_t kv_pool_n_blocks(const kv_pool *p);
int32_t kv_pool_n_free(const kv_pool *p);
size_t kv_pool_block_bytes(const kv_pool *p);

#endif

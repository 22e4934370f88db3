/* engine/ctx_internal.h — what the request engine (engine/engine.c) needs of a
 * context beyond the public model.h: the KV pool behind it, a block
 * allocator hook (so the prefix index can evict when the pool runs short),
 * and direct access to sequences' block tables. */
#ifndef WEFT_ENGINE_CTX_INTERNAL_H
#define WEFT_ENGINE_CTX_INTERNAL_H

#include "cache/kv.h"
#include "weft/model.h"

/* The context's pool (borrowed). */
kv_pool *weft_ctx_kv(weft_ctx *c);

/* Blocks for new positions come from alloc(ud) instead of kv_block_alloc;
 * it returns a block with refcount 1, or -1. NULL restores the default. */
void weft_ctx_set_block_alloc(weft_ctx *c, int32_t (*alloc)(void *ud), void *ud);

/* Sequence `seq`'s block table: returns the number of blocks, *blocks
 * borrowed until the sequence next changes. */
int32_t weft_seq_blocks(const weft_ctx *c, int32_t seq, const int32_t **blocks);

/* Makes empty sequence `seq` hold n_tokens positions whose KV is in `blocks`
 * (ceil(n_tokens / KV_BLOCK_TOKENS) of them). Takes over one reference per
 * block from the caller. WEFT_EINVAL if the sequence is not empty or the
 * counts do not fit. */
int weft_seq_attach(weft_ctx *c, int32_t seq, const int32_t *blocks, int32_t n_tokens);

#endif

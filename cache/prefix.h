/*
 * cache/prefix.h — the prefix index: automatic prefix caching over the KV
 * block pool (cache/kv.h), in the manner of vLLM.
 *
 * Every FULL block of a prompt (KV_BLOCK_TOKENS token ids) is keyed by a
 * chained hash:
 *     key_{-1} = prefix_key_seed(fingerprint)
 *     key_i    = XXH3_64bits(key_{i-1} || tokens[16 i .. 16 i + 16) || fingerprint)
 * so a key names the whole prefix up to and including block i, for one model.
 * A new request walks its prompt block by block and reuses every block whose
 * key is cached, stopping at the first miss.
 *
 * Hits are exact, not probabilistic. The key only finds candidates; an entry
 * matches when its 16 token ids are equal AND its parent (the entry matched
 * for the previous block, named by an id that is never reused) is the one the
 * walk matched one step earlier. By induction the whole token prefix is equal,
 * so a 64-bit hash collision can cost a miss but never a wrong block. An entry
 * whose parent has been evicted is unreachable ("orphan") and ages out of the
 * LRU. A walk (lookup or insert) puts a chain's first block at the warm end
 * and each later block right behind its parent, so parents outlive their
 * children in the LRU order.
 *
 * Ownership: the index holds one reference (kv_block_ref) on every block it
 * has cached, so a cached block outlives the sequence that computed it. A
 * cached block whose refcount is 1 is held by the index alone: it is
 * "evictable". Eviction takes least recently used evictable blocks, removes
 * them from the index and drops the index's reference, which frees them.
 * A block with refcount > 1 is in use by a sequence and is never evicted.
 * The index never frees a reference it did not take.
 *
 * The pool is borrowed: it must outlive the index. Not thread-safe; the
 * scheduler owns both and calls from one thread.
 */
#ifndef WEFT_CACHE_PREFIX_H
#define WEFT_CACHE_PREFIX_H

#include <stdint.h>

#include "cache/kv.h"

typedef struct prefix_index prefix_index;

/* Creates an index over `pool` (borrowed; must outlive the index) for the
 * model named by `model_fingerprint` (any 64-bit value that differs between
 * models/weights/KV layouts whose KV is not interchangeable). Its memory is
 * sized once from kv_pool_n_blocks(pool). NULL on failure (weft_last_error). */
prefix_index *prefix_index_create(kv_pool *pool, uint64_t model_fingerprint);
/* Drops every reference the index holds (blocks held only by the index are
 * freed; blocks still used by sequences stay allocated) and frees the index.
 * NULL is a no-op. */
void prefix_index_destroy(prefix_index *idx);

/* ---- keys -------------------------------------------------------------- */

/* key_{-1} for a fingerprint. */
uint64_t prefix_key_seed(uint64_t model_fingerprint);
/* key_i from key_{i-1} and the block's KV_BLOCK_TOKENS token ids. The token
 * ids are hashed as little-endian int32, so keys are the same on every host. */
uint64_t prefix_key_next(uint64_t model_fingerprint, uint64_t prev_key,
                         const int32_t tokens[KV_BLOCK_TOKENS]);

/* ---- whole-prompt calls ------------------------------------------------ */

/* Walks the full blocks of tokens[0 .. n_tokens) from the start and returns
 * how many consecutive blocks hit (0 .. min(n_tokens / 16, max_blocks)); a
 * partial last block never hits. For each hit, writes the block id to
 * blocks_out[i] and takes a reference FOR THE CALLER, who must drop it with
 * kv_block_unref when the sequence is done with the block. Touches the hits
 * in the LRU. Returns WEFT_EINVAL (< 0) on bad arguments; then no references
 * were taken.
 * A caller that needs logits for the last prompt token should pass
 * n_tokens - 1, so at least one token is left to compute. */
int32_t prefix_lookup(prefix_index *idx, const int32_t *tokens, int32_t n_tokens,
                      int32_t *blocks_out, int32_t max_blocks);

/* How many consecutive full blocks of tokens[0 .. n_tokens) are cached, from
 * the start: what prefix_lookup would hit, without taking references,
 * touching the LRU or counting in the statistics (a scheduler's question,
 * not a use). Returns >= 0, or WEFT_EINVAL on bad arguments. */
int32_t prefix_count(const prefix_index *idx, const int32_t *tokens, int32_t n_tokens);
/* Registers the full blocks of a sequence whose KV has been computed:
 * block i = blocks[i] holds tokens[16 i .. 16 i + 16), for
 * i < min(n_tokens / 16, n_blocks); the rest (a partial block) is ignored.
 * Every blocks[i] used must be allocated (refcount >= 1) and stays the
 * caller's: the index takes its own reference on each block it newly caches.
 * A prefix already cached under the same chain wins and the caller's block is
 * left alone (same KV content, so the chain continues through the cached
 * entry). Registration stops early if a block is already cached under a
 * different chain (the caller passed inconsistent blocks).
 * Returns the number of blocks newly cached (>= 0), or WEFT_EINVAL. */
int prefix_insert(prefix_index *idx, const int32_t *tokens, int32_t n_tokens,
                  const int32_t *blocks, int32_t n_blocks);

/* ---- incremental calls (a running key, for decode-time registration) ---- */

/* Where a walk stands: the chained key of the blocks consumed so far and the
 * entry matched or registered for the last of them. Plain value; copyable. */
typedef struct prefix_cursor {
    uint64_t key;       /* key_{n_blocks - 1}; the seed at the start */
    uint64_t parent_id; /* entry id of block n_blocks - 1; 0 at the start */
    int32_t block;      /* its block id (LRU placement only); -1 at the start */
    int32_t n_blocks;   /* full blocks consumed */
    int32_t dead;       /* 1 after a failed insert: later inserts are no-ops */
} prefix_cursor;

void prefix_cursor_init(const prefix_index *idx, prefix_cursor *cur);
/* Looks up the next block. On a hit: takes a reference for the caller,
 * touches the entry, advances the cursor and returns the block id. On a miss
 * returns -1 and leaves the cursor where it was (so the caller can compute
 * the block and prefix_cursor_insert it). */
int32_t prefix_cursor_lookup(prefix_index *idx, prefix_cursor *cur,
                             const int32_t tokens[KV_BLOCK_TOKENS]);
/* Registers the next block (the caller's `block`, refcount >= 1, holding the
 * KV of `tokens` after the cursor's prefix) and advances the cursor.
 * Returns 1 if the index took a reference on `block`, 0 if the prefix was
 * already cached (the existing entry wins; the cursor follows it), or if the
 * cursor is dead; WEFT_EINVAL on a bad block. If `block` is already cached
 * under another chain, returns 0 and marks the cursor dead. */
int prefix_cursor_insert(prefix_index *idx, prefix_cursor *cur,
                         const int32_t tokens[KV_BLOCK_TOKENS], int32_t block);

/* ---- eviction ---------------------------------------------------------- */

/* Evicts least recently used evictable blocks until kv_pool_n_free(pool) >=
 * n_needed or nothing evictable is left. Returns the number of blocks freed.
 * In-use cached blocks met on the way are moved to the warm end (they are
 * being used, so they are recent); each call visits every entry at most once.
 */
int32_t prefix_evict(prefix_index *idx, int32_t n_needed);
/* kv_block_alloc, evicting one LRU evictable block first if the pool is
 * empty. A block with refcount 1 owned by the caller, or -1 if none. */
int32_t prefix_alloc_block(prefix_index *idx);

/* ---- introspection ----------------------------------------------------- */

typedef struct prefix_stats {
    int32_t n_entries;      /* blocks cached now */
    int32_t n_evictable;    /* of those, refcount == 1 (computed by a scan) */
    uint64_t n_lookups;     /* prefix_lookup calls */
    uint64_t n_query_blocks; /* full blocks those calls asked about */
    uint64_t n_hit_blocks;  /* blocks that hit (lookup and cursor lookup) */
    uint64_t n_inserted;    /* blocks newly cached */
    uint64_t n_evicted;     /* blocks evicted */
} prefix_stats;

void prefix_index_stats(const prefix_index *idx, prefix_stats *out);
/* 1 if block b is cached by the index, else 0. */
int prefix_block_cached(const prefix_index *idx, int32_t b);
/* Checks the internal invariants (hash table, LRU list, references against
 * the pool). 0 if they hold, else WEFT_EINVAL with a detail. For tests. */
int prefix_index_check(const prefix_index *idx);

#endif

/* Prefix index: an open-addressing table over chained block keys plus an
 * intrusive LRU list; see prefix.h. */
#include "cache/prefix.h"

#include <string.h>
#include <xxhash.h>

#include "weft/common.h"

/* A block is cached at most once, so entries are indexed by block id: no
 * entry allocator, and entries <= n_blocks bounds the table's load. */
typedef struct prefix_entry {
    uint64_t key;
    uint64_t id;        /* serial, never reused; 0 = slot unused */
    uint64_t parent_id; /* id of the entry for the previous block; 0 = first */
    int32_t tokens[KV_BLOCK_TOKENS];
    int32_t newer, older; /* LRU links (block ids), -1 at the ends */
} prefix_entry;

#define SLOT_EMPTY (-1)
#define SLOT_TOMB (-2)

struct prefix_index {
    kv_pool *pool; /* borrowed */
    uint64_t fingerprint;
    uint64_t seed;
    int32_t n_blocks;
    prefix_entry *entries; /* (n_blocks) by block id */
    int32_t *table;        /* (mask + 1) block id, SLOT_EMPTY or SLOT_TOMB */
    uint32_t mask;
    int32_t n_tombs;
    int32_t n_entries;
    int32_t mru, lru; /* LRU list ends, -1 when empty */
    uint64_t next_id;
    prefix_stats st;
};

/* ---- keys ---- */

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t prefix_key_seed(uint64_t model_fingerprint)
{
    static const char tag[] = "weft-prefix-v1";
    return XXH3_64bits_withSeed(tag, sizeof tag - 1, model_fingerprint);
}

uint64_t prefix_key_next(uint64_t model_fingerprint, uint64_t prev_key,
                         const int32_t tokens[KV_BLOCK_TOKENS])
{
    unsigned char buf[8 + 4 * KV_BLOCK_TOKENS + 8];
    put_le64(buf, prev_key);
    for (int i = 0; i < KV_BLOCK_TOKENS; i++) {
        uint32_t t = (uint32_t)tokens[i];
        for (int j = 0; j < 4; j++) buf[8 + 4 * i + j] = (unsigned char)(t >> (8 * j));
    }
    put_le64(buf + 8 + 4 * KV_BLOCK_TOKENS, model_fingerprint);
    return XXH3_64bits(buf, sizeof buf);
}

/* ---- LRU list ---- */

static void lru_unlink(prefix_index *idx, int32_t b)
{
    prefix_entry *e = &idx->entries[b];
    if (e->newer >= 0) idx->entries[e->newer].older = e->older;
    else idx->mru = e->older;
    if (e->older >= 0) idx->entries[e->older].newer = e->newer;
    else idx->lru = e->newer;
    e->newer = e->older = -1;
}

static void lru_push_mru(prefix_index *idx, int32_t b)
{
    prefix_entry *e = &idx->entries[b];
    e->newer = -1;
    e->older = idx->mru;
    if (idx->mru >= 0) idx->entries[idx->mru].newer = b;
    idx->mru = b;
    if (idx->lru < 0) idx->lru = b;
}

static void lru_touch(prefix_index *idx, int32_t b)
{
    if (idx->mru == b) return;
    lru_unlink(idx, b);
    lru_push_mru(idx, b);
}

/* Moves b to just colder than `anchor`. */
static void lru_place_after(prefix_index *idx, int32_t b, int32_t anchor)
{
    if (idx->entries[anchor].older == b) return;
    lru_unlink(idx, b);
    prefix_entry *a = &idx->entries[anchor], *e = &idx->entries[b];
    e->newer = anchor;
    e->older = a->older;
    if (a->older >= 0) idx->entries[a->older].newer = b;
    else idx->lru = b;
    a->older = b;
}

/* Touches the entry a walk just reached. The first block of a chain goes to
 * the warm end and each later block right behind its parent, so a chain runs
 * shallow-warm to deep-cold: evicting a parent would orphan its children,
 * evicting a leaf costs nothing more. */
static void lru_touch_walk(prefix_index *idx, const prefix_cursor *cur, int32_t b)
{
    if (cur->block >= 0 && idx->entries[cur->block].id == cur->parent_id)
        lru_place_after(idx, b, cur->block);
    else
        lru_touch(idx, b);
}

/* ---- hash table ---- */

/* The entry whose chain is exactly (parent_id, tokens) under `key`, or -1.
 * Several entries may share a key (a collision, or an orphan left behind by
 * an evicted parent), so probing continues past key matches that fail. */
static int32_t table_find(const prefix_index *idx, uint64_t key, uint64_t parent_id,
                          const int32_t *tokens)
{
    for (uint32_t i = (uint32_t)key & idx->mask;; i = (i + 1) & idx->mask) {
        int32_t s = idx->table[i];
        if (s == SLOT_EMPTY) return -1;
        if (s == SLOT_TOMB) continue;
        const prefix_entry *e = &idx->entries[s];
        if (e->key == key && e->parent_id == parent_id &&
            memcmp(e->tokens, tokens, sizeof e->tokens) == 0)
            return s;
    }
}

static void table_put(prefix_index *idx, int32_t b)
{
    for (uint32_t i = (uint32_t)idx->entries[b].key & idx->mask;; i = (i + 1) & idx->mask) {
        if (idx->table[i] < 0) {
            if (idx->table[i] == SLOT_TOMB) idx->n_tombs--;
            idx->table[i] = b;
            return;
        }
    }
}

static void table_rebuild(prefix_index *idx)
{
    for (uint32_t i = 0; i <= idx->mask; i++) idx->table[i] = SLOT_EMPTY;
    idx->n_tombs = 0;
    for (int32_t b = idx->mru; b >= 0; b = idx->entries[b].older) table_put(idx, b);
}

static void table_del(prefix_index *idx, int32_t b)
{
    for (uint32_t i = (uint32_t)idx->entries[b].key & idx->mask;; i = (i + 1) & idx->mask) {
        WEFT_ASSERT(idx->table[i] != SLOT_EMPTY); /* an indexed entry is reachable */
        if (idx->table[i] == b) {
            idx->table[i] = SLOT_TOMB;
            idx->n_tombs++;
            break;
        }
    }
    /* Keep at least a quarter of the slots empty so probes terminate fast. */
    if ((uint64_t)(idx->n_entries + idx->n_tombs) * 4 > (uint64_t)(idx->mask + 1) * 3)
        table_rebuild(idx);
}

/* ---- entries ---- */

static void entry_add(prefix_index *idx, int32_t b, uint64_t key, uint64_t parent_id,
                      const int32_t *tokens)
{
    prefix_entry *e = &idx->entries[b];
    e->key = key;
    e->id = idx->next_id++;
    e->parent_id = parent_id;
    memcpy(e->tokens, tokens, sizeof e->tokens);
    kv_block_ref(idx->pool, b);
    idx->n_entries++;
    lru_push_mru(idx, b);
    table_put(idx, b);
    idx->st.n_inserted++;
}

/* Removes b from the index and drops the index's reference. */
static void entry_remove(prefix_index *idx, int32_t b)
{
    /* Off the LRU list and the count first: table_del may rebuild the table
     * from the list. */
    idx->n_entries--;
    lru_unlink(idx, b);
    table_del(idx, b);
    idx->entries[b].id = 0;
    kv_block_unref(idx->pool, b);
}

/* ---- create / destroy ---- */

prefix_index *prefix_index_create(kv_pool *pool, uint64_t model_fingerprint)
{
    if (!pool) {
        weft_error(WEFT_EINVAL, "prefix_index_create: NULL pool");
        return NULL;
    }
    prefix_index *idx = weft_calloc(1, sizeof *idx);
    if (!idx) goto fail;
    idx->pool = pool;
    idx->fingerprint = model_fingerprint;
    idx->seed = prefix_key_seed(model_fingerprint);
    idx->n_blocks = kv_pool_n_blocks(pool);
    idx->mru = idx->lru = -1;
    idx->next_id = 1;
    /* Load stays <= 1/2 from entries alone (at most one per block). */
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)idx->n_blocks) cap *= 2;
    idx->mask = cap - 1;
    idx->entries = weft_calloc((size_t)idx->n_blocks, sizeof *idx->entries);
    idx->table = weft_malloc((size_t)cap * sizeof *idx->table);
    if (!idx->entries || !idx->table) goto fail;
    for (uint32_t i = 0; i < cap; i++) idx->table[i] = SLOT_EMPTY;
    for (int32_t b = 0; b < idx->n_blocks; b++) idx->entries[b].newer = idx->entries[b].older = -1;
    return idx;
fail:
    prefix_index_destroy(idx);
    weft_error(WEFT_ENOMEM, "prefix_index_create: out of memory");
    return NULL;
}

void prefix_index_destroy(prefix_index *idx)
{
    if (!idx) return;
    if (idx->entries)
        for (int32_t b = 0; b < idx->n_blocks; b++)
            if (idx->entries[b].id) kv_block_unref(idx->pool, b);
    weft_free(idx->entries);
    weft_free(idx->table);
    weft_free(idx);
}

/* ---- cursor ---- */

void prefix_cursor_init(const prefix_index *idx, prefix_cursor *cur)
{
    cur->key = idx->seed;
    cur->parent_id = 0;
    cur->block = -1;
    cur->n_blocks = 0;
    cur->dead = 0;
}

/* Looks up without touching or referencing. */
static int32_t cursor_peek(const prefix_index *idx, const prefix_cursor *cur,
                           const int32_t *tokens, uint64_t *key_out)
{
    uint64_t key = prefix_key_next(idx->fingerprint, cur->key, tokens);
    *key_out = key;
    return table_find(idx, key, cur->parent_id, tokens);
}

int32_t prefix_cursor_lookup(prefix_index *idx, prefix_cursor *cur,
                             const int32_t tokens[KV_BLOCK_TOKENS])
{
    uint64_t key;
    int32_t b = cursor_peek(idx, cur, tokens, &key);
    if (b < 0) return -1;
    kv_block_ref(idx->pool, b);
    lru_touch_walk(idx, cur, b);
    idx->st.n_hit_blocks++;
    cur->key = key;
    cur->parent_id = idx->entries[b].id;
    cur->block = b;
    cur->n_blocks++;
    return b;
}

int prefix_cursor_insert(prefix_index *idx, prefix_cursor *cur,
                         const int32_t tokens[KV_BLOCK_TOKENS], int32_t block)
{
    if (block < 0 || block >= idx->n_blocks || kv_block_refcount(idx->pool, block) < 1)
        return weft_error(WEFT_EINVAL, "prefix_cursor_insert: block %d is not allocated",
                          (int)block);
    if (cur->dead) return 0;
    uint64_t key;
    int32_t b = cursor_peek(idx, cur, tokens, &key);
    int taken = 0;
    if (b < 0) {
        if (idx->entries[block].id) {
            /* Cached under another chain: the caller's blocks do not match its
             * tokens as we know them; registering more would be a guess. */
            cur->dead = 1;
            return 0;
        }
        entry_add(idx, block, key, cur->parent_id, tokens);
        b = block;
        taken = 1;
    }
    lru_touch_walk(idx, cur, b);
    cur->key = key;
    cur->parent_id = idx->entries[b].id;
    cur->block = b;
    cur->n_blocks++;
    return taken;
}

/* ---- whole-prompt calls ---- */

int32_t prefix_lookup(prefix_index *idx, const int32_t *tokens, int32_t n_tokens,
                      int32_t *blocks_out, int32_t max_blocks)
{
    if (!idx || n_tokens < 0 || max_blocks < 0 || (n_tokens > 0 && !tokens) ||
        (max_blocks > 0 && !blocks_out))
        return weft_error(WEFT_EINVAL, "prefix_lookup: bad arguments");
    int32_t n_full = n_tokens / KV_BLOCK_TOKENS;
    if (n_full > max_blocks) n_full = max_blocks;
    idx->st.n_lookups++;
    idx->st.n_query_blocks += (uint64_t)n_full;
    prefix_cursor cur;
    prefix_cursor_init(idx, &cur);
    int32_t n = 0;
    while (n < n_full) {
        int32_t b = prefix_cursor_lookup(idx, &cur, tokens + (size_t)n * KV_BLOCK_TOKENS);
        if (b < 0) break;
        blocks_out[n++] = b;
    }
    return n;
}

int32_t prefix_count(const prefix_index *idx, const int32_t *tokens, int32_t n_tokens)
{
    if (!idx || n_tokens < 0 || (n_tokens > 0 && !tokens))
        return weft_error(WEFT_EINVAL, "prefix_count: bad arguments");
    prefix_cursor cur;
    prefix_cursor_init(idx, &cur);
    int32_t n = 0;
    for (; n < n_tokens / KV_BLOCK_TOKENS; n++) {
        uint64_t key;
        const int32_t b = cursor_peek(idx, &cur, tokens + (size_t)n * KV_BLOCK_TOKENS, &key);
        if (b < 0) break;
        cur.key = key;
        cur.parent_id = idx->entries[b].id;
    }
    return n;
}

int prefix_insert(prefix_index *idx, const int32_t *tokens, int32_t n_tokens,
                  const int32_t *blocks, int32_t n_blocks)
{
    if (!idx || n_tokens < 0 || n_blocks < 0 || (n_tokens > 0 && !tokens) ||
        (n_blocks > 0 && !blocks))
        return weft_error(WEFT_EINVAL, "prefix_insert: bad arguments");
    int32_t n_full = n_tokens / KV_BLOCK_TOKENS;
    if (n_full > n_blocks) n_full = n_blocks;
    /* Validate everything first so a bad block leaves the index untouched. */
    for (int32_t i = 0; i < n_full; i++)
        if (blocks[i] < 0 || blocks[i] >= idx->n_blocks ||
            kv_block_refcount(idx->pool, blocks[i]) < 1)
            return weft_error(WEFT_EINVAL, "prefix_insert: block %d (index %d) is not allocated",
                              (int)blocks[i], (int)i);
    prefix_cursor cur;
    prefix_cursor_init(idx, &cur);
    int n_new = 0;
    for (int32_t i = 0; i < n_full && !cur.dead; i++) {
        int rc = prefix_cursor_insert(idx, &cur, tokens + (size_t)i * KV_BLOCK_TOKENS,
                                      blocks[i]);
        WEFT_ASSERT(rc >= 0);
        n_new += rc;
    }
    return n_new;
}

/* ---- eviction ---- */

int32_t prefix_evict(prefix_index *idx, int32_t n_needed)
{
    int32_t freed = 0;
    int32_t budget = idx->n_entries; /* every entry visited at most once */
    while (kv_pool_n_free(idx->pool) < n_needed && budget-- > 0 && idx->lru >= 0) {
        int32_t b = idx->lru;
        if (kv_block_refcount(idx->pool, b) == 1) {
            entry_remove(idx, b);
            idx->st.n_evicted++;
            freed++;
        } else {
            lru_touch(idx, b);
        }
    }
    return freed;
}

int32_t prefix_alloc_block(prefix_index *idx)
{
    int32_t b = kv_block_alloc(idx->pool);
    if (b >= 0) return b;
    if (prefix_evict(idx, 1) == 0) return -1;
    return kv_block_alloc(idx->pool);
}

/* ---- introspection ---- */

void prefix_index_stats(const prefix_index *idx, prefix_stats *out)
{
    *out = idx->st;
    out->n_entries = idx->n_entries;
    out->n_evictable = 0;
    for (int32_t b = idx->mru; b >= 0; b = idx->entries[b].older)
        if (kv_block_refcount(idx->pool, b) == 1) out->n_evictable++;
}

int prefix_block_cached(const prefix_index *idx, int32_t b)
{
    return b >= 0 && b < idx->n_blocks && idx->entries[b].id != 0;
}

int prefix_index_check(const prefix_index *idx)
{
    int32_t n_used = 0;
    for (int32_t b = 0; b < idx->n_blocks; b++) {
        const prefix_entry *e = &idx->entries[b];
        if (!e->id) continue;
        n_used++;
        if (kv_block_refcount(idx->pool, b) < 1)
            return weft_error(WEFT_EINVAL, "cached block %d has refcount %d", (int)b,
                              (int)kv_block_refcount(idx->pool, b));
        if (e->id >= idx->next_id || e->parent_id >= e->id)
            return weft_error(WEFT_EINVAL, "block %d: bad ids", (int)b);
        if (table_find(idx, e->key, e->parent_id, e->tokens) < 0)
            return weft_error(WEFT_EINVAL, "block %d not reachable in the table", (int)b);
    }
    if (n_used != idx->n_entries)
        return weft_error(WEFT_EINVAL, "%d entries used, %d counted", (int)n_used,
                          (int)idx->n_entries);
    int32_t n_lru = 0, prev = -1;
    for (int32_t b = idx->mru; b >= 0; b = idx->entries[b].older) {
        if (!idx->entries[b].id || idx->entries[b].newer != prev || ++n_lru > n_used)
            return weft_error(WEFT_EINVAL, "LRU list broken at block %d", (int)b);
        prev = b;
    }
    if (prev != idx->lru || n_lru != n_used)
        return weft_error(WEFT_EINVAL, "LRU list has %d of %d entries", (int)n_lru, (int)n_used);
    int32_t n_slots = 0, n_tombs = 0;
    for (uint32_t i = 0; i <= idx->mask; i++) {
        int32_t s = idx->table[i];
        if (s == SLOT_TOMB) n_tombs++;
        else if (s >= 0) {
            if (s >= idx->n_blocks || !idx->entries[s].id)
                return weft_error(WEFT_EINVAL, "table slot %u holds a dead entry", i);
            n_slots++;
        } else if (s != SLOT_EMPTY)
            return weft_error(WEFT_EINVAL, "table slot %u corrupt", i);
    }
    if (n_slots != n_used || n_tombs != idx->n_tombs)
        return weft_error(WEFT_EINVAL, "table holds %d entries, %d tombs", (int)n_slots,
                          (int)n_tombs);
    return 0;
}

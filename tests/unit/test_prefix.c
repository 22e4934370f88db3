/* The prefix index (cache/prefix.h): chained keys, exact hits, references,
 * LRU eviction, and a randomized run checking the invariants every step. */
#include "cache/prefix.h"

#include "test.h"
#include "weft/common.h"

#define BT KV_BLOCK_TOKENS

/* tokens[i] = base + i: sequences with different bases share nothing. */
static void fill_seq(int32_t *t, int32_t n, int32_t base)
{
    for (int32_t i = 0; i < n; i++) t[i] = base + i;
}

static int alloc_n(kv_pool *p, int32_t *blocks, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        if ((blocks[i] = kv_block_alloc(p)) < 0) return -1;
    return 0;
}

static void unref_n(kv_pool *p, const int32_t *blocks, int32_t n)
{
    for (int32_t i = 0; i < n; i++) kv_block_unref(p, blocks[i]);
}

TEST(shared_prefix_hits_full_blocks_only)
{
    kv_pool *p = kv_pool_create(16, 64);
    prefix_index *idx = prefix_index_create(p, 42);
    ASSERT(p && idx);
    int32_t a[56], ab[4];
    fill_seq(a, 56, 1000); /* 3.5 blocks */
    ASSERT_EQ_INT(alloc_n(p, ab, 4), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 56, ab, 4), 3); /* partial block ignored */
    ASSERT_EQ_INT(prefix_block_cached(idx, ab[3]), 0);
    for (int i = 0; i < 3; i++) ASSERT_EQ_INT(kv_block_refcount(p, ab[i]), 2);
    ASSERT_EQ_INT(kv_block_refcount(p, ab[3]), 1);

    /* b shares 40 tokens (2.5 blocks) with a. */
    int32_t b[64], got[8];
    fill_seq(b, 64, 1000);
    b[40] = -7;
    ASSERT_EQ_INT(prefix_lookup(idx, b, 64, got, 8), 2);
    ASSERT_EQ_INT(got[0], ab[0]);
    ASSERT_EQ_INT(got[1], ab[1]);
    unref_n(p, got, 2);
    /* a itself: 3 full blocks hit; the partial 4th never does. */
    ASSERT_EQ_INT(prefix_lookup(idx, a, 56, got, 8), 3);
    unref_n(p, got, 3);
    ASSERT_EQ_INT(prefix_lookup(idx, a, 48, got, 8), 3);
    unref_n(p, got, 3);
    ASSERT_EQ_INT(prefix_lookup(idx, a, 47, got, 8), 2);
    unref_n(p, got, 2);
    ASSERT_EQ_INT(prefix_lookup(idx, a, 56, got, 1), 1); /* max_blocks caps */
    unref_n(p, got, 1);
    ASSERT_EQ_INT(prefix_lookup(idx, a, 15, got, 8), 0);
    /* prefix_count answers what the lookups did, taking and counting nothing */
    ASSERT_EQ_INT(prefix_count(idx, b, 64), 2);
    ASSERT_EQ_INT(prefix_count(idx, a, 56), 3);
    ASSERT_EQ_INT(prefix_count(idx, a, 47), 2);
    ASSERT_EQ_INT(prefix_count(idx, a, 15), 0);
    ASSERT(prefix_count(idx, NULL, 16) < 0);
    for (int i = 0; i < 3; i++) ASSERT_EQ_INT(kv_block_refcount(p, ab[i]), 2);

    prefix_stats st;
    prefix_index_stats(idx, &st);
    ASSERT_EQ_INT(st.n_entries, 3);
    ASSERT_EQ_INT(st.n_evictable, 0); /* the sequence still holds them */
    ASSERT_EQ_INT(st.n_lookups, 6);
    ASSERT_EQ_INT(st.n_hit_blocks, 2 + 3 + 3 + 2 + 1);
    ASSERT_EQ_INT(st.n_query_blocks, 4 + 3 + 3 + 2 + 1 + 0);
    ASSERT_EQ_INT(st.n_inserted, 3);
    ASSERT_EQ_INT(prefix_index_check(idx), 0);
    unref_n(p, ab, 4);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 16);
    kv_pool_destroy(p);
}

TEST(different_tokens_miss)
{
    kv_pool *p = kv_pool_create(8, 64);
    prefix_index *idx = prefix_index_create(p, 1);
    int32_t a[32], b[32], blk[2], got[2];
    fill_seq(a, 32, 0);
    ASSERT_EQ_INT(alloc_n(p, blk, 2), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 32, blk, 2), 2);
    fill_seq(b, 32, 5000);
    ASSERT_EQ_INT(prefix_lookup(idx, b, 32, got, 2), 0);
    memcpy(b, a, sizeof b);
    b[0] = 99999; /* differs in the very first token */
    ASSERT_EQ_INT(prefix_lookup(idx, b, 32, got, 2), 0);
    ASSERT_EQ_INT(kv_block_refcount(p, blk[0]), 2); /* a miss takes nothing */
    unref_n(p, blk, 2);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 8);
    kv_pool_destroy(p);
}

/* Blocks after the first difference never hit, even when their own tokens
 * are equal: their KV was computed on another prefix. */
TEST(hits_stop_at_first_differing_block)
{
    kv_pool *p = kv_pool_create(16, 64);
    prefix_index *idx = prefix_index_create(p, 7);
    int32_t a[64], b[64], ab[4], got[4];
    fill_seq(a, 64, 0);
    memcpy(b, a, sizeof b);
    b[2 * BT + 5] = -1; /* block 2 differs by one token; block 3 equal */
    ASSERT_EQ_INT(alloc_n(p, ab, 4), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 64, ab, 4), 4);
    ASSERT_EQ_INT(prefix_lookup(idx, b, 64, got, 4), 2);
    unref_n(p, got, 2);
    unref_n(p, ab, 4);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 16);
    kv_pool_destroy(p);
}

/* A key equal to a cached one is not enough: the entry's parent must be the
 * one the walk matched. Forge a cursor whose key equals a's key after block 0
 * (as a colliding, different prefix would produce) but whose parent is not
 * a's block 0: a's block 1 must not hit. */
TEST(same_key_other_chain_misses)
{
    kv_pool *p = kv_pool_create(8, 64);
    prefix_index *idx = prefix_index_create(p, 3);
    int32_t a[32], ab[2];
    fill_seq(a, 32, 100);
    ASSERT_EQ_INT(alloc_n(p, ab, 2), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 32, ab, 2), 2);
    prefix_cursor c;
    prefix_cursor_init(idx, &c);
    ASSERT_EQ_INT(prefix_cursor_lookup(idx, &c, a), ab[0]);
    prefix_cursor forged = c;
    forged.parent_id = c.parent_id + 1000; /* same key, another chain */
    ASSERT_EQ_INT(prefix_cursor_lookup(idx, &forged, a + BT), -1);
    ASSERT_EQ_INT(forged.n_blocks, 1); /* a miss does not advance */
    ASSERT_EQ_INT(prefix_cursor_lookup(idx, &c, a + BT), ab[1]);
    kv_block_unref(p, ab[0]);
    kv_block_unref(p, ab[1]);
    unref_n(p, ab, 2);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 8);
    kv_pool_destroy(p);
}

TEST(fingerprint_changes_keys)
{
    int32_t t[BT];
    fill_seq(t, BT, 0);
    ASSERT(prefix_key_seed(1) != prefix_key_seed(2));
    ASSERT(prefix_key_next(1, 0, t) != prefix_key_next(2, 0, t));
    ASSERT(prefix_key_next(1, 0, t) != prefix_key_next(1, 1, t)); /* chained */
    ASSERT(prefix_key_next(1, 5, t) == prefix_key_next(1, 5, t));

    kv_pool *p = kv_pool_create(8, 64);
    prefix_index *m1 = prefix_index_create(p, 1), *m2 = prefix_index_create(p, 2);
    int32_t a[32], blk[2], got[2];
    fill_seq(a, 32, 0);
    ASSERT_EQ_INT(alloc_n(p, blk, 2), 0);
    ASSERT_EQ_INT(prefix_insert(m1, a, 32, blk, 2), 2);
    ASSERT_EQ_INT(prefix_lookup(m2, a, 32, got, 2), 0);
    ASSERT_EQ_INT(prefix_lookup(m1, a, 32, got, 2), 2);
    unref_n(p, got, 2);
    unref_n(p, blk, 2);
    prefix_index_destroy(m1);
    prefix_index_destroy(m2);
    ASSERT_EQ_INT(kv_pool_n_free(p), 8);
    kv_pool_destroy(p);
}

/* The cursor, driven block by block, finds what prefix_insert registered. */
TEST(cursor_matches_bulk_calls)
{
    kv_pool *p = kv_pool_create(8, 64);
    prefix_index *idx = prefix_index_create(p, 9);
    int32_t a[48], blk[3];
    fill_seq(a, 48, 3);
    ASSERT_EQ_INT(alloc_n(p, blk, 3), 0);
    prefix_cursor c;
    prefix_cursor_init(idx, &c);
    ASSERT_EQ_INT(c.key, prefix_key_seed(9));
    for (int i = 0; i < 3; i++) ASSERT_EQ_INT(prefix_cursor_insert(idx, &c, a + i * BT, blk[i]), 1);
    ASSERT_EQ_INT(c.n_blocks, 3);
    uint64_t k = prefix_key_seed(9);
    for (int i = 0; i < 3; i++) k = prefix_key_next(9, k, a + i * BT);
    ASSERT(c.key == k);
    ASSERT_EQ_INT(prefix_insert(idx, a, 48, blk, 3), 0); /* already there */
    int32_t got[3];
    ASSERT_EQ_INT(prefix_lookup(idx, a, 48, got, 3), 3);
    for (int i = 0; i < 3; i++) ASSERT_EQ_INT(got[i], blk[i]);
    unref_n(p, got, 3);
    unref_n(p, blk, 3);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 8);
    kv_pool_destroy(p);
}

TEST(refcounts_caller_and_index)
{
    kv_pool *p = kv_pool_create(4, 64);
    prefix_index *idx = prefix_index_create(p, 0);
    int32_t a[BT], blk, got;
    fill_seq(a, BT, 0);
    blk = kv_block_alloc(p);
    ASSERT_EQ_INT(prefix_insert(idx, a, BT, &blk, 1), 1);
    ASSERT_EQ_INT(kv_block_refcount(p, blk), 2);
    kv_block_unref(p, blk); /* the sequence ends */
    ASSERT_EQ_INT(kv_block_refcount(p, blk), 1);
    ASSERT_EQ_INT(prefix_block_cached(idx, blk), 1);
    prefix_stats st;
    prefix_index_stats(idx, &st);
    ASSERT_EQ_INT(st.n_evictable, 1);
    ASSERT_EQ_INT(prefix_lookup(idx, a, BT, &got, 1), 1);
    ASSERT_EQ_INT(got, blk);
    ASSERT_EQ_INT(kv_block_refcount(p, blk), 2); /* the caller's ref */
    prefix_index_stats(idx, &st);
    ASSERT_EQ_INT(st.n_evictable, 0);
    ASSERT_EQ_INT(prefix_evict(idx, 4), 0); /* in use: not evicted */
    ASSERT_EQ_INT(prefix_block_cached(idx, blk), 1);
    kv_block_unref(p, got);
    ASSERT_EQ_INT(kv_block_refcount(p, blk), 1);
    ASSERT_EQ_INT(kv_pool_n_free(p), 3);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 4);
    kv_pool_destroy(p);
}

/* A second sequence that computed the same prompt into its own blocks: the
 * cached entries win and its blocks stay its own. */
TEST(existing_entry_wins)
{
    kv_pool *p = kv_pool_create(8, 64);
    prefix_index *idx = prefix_index_create(p, 0);
    int32_t a[32], b1[2], b2[2];
    fill_seq(a, 32, 0);
    ASSERT_EQ_INT(alloc_n(p, b1, 2), 0);
    ASSERT_EQ_INT(alloc_n(p, b2, 2), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 32, b1, 2), 2);
    ASSERT_EQ_INT(prefix_insert(idx, a, 32, b2, 2), 0);
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ_INT(kv_block_refcount(p, b2[i]), 1);
        ASSERT_EQ_INT(prefix_block_cached(idx, b2[i]), 0);
    }
    /* A longer sequence reusing a's first block via its own copy still
     * extends the cached chain. */
    int32_t c[48], cb[3], got[3];
    fill_seq(c, 48, 0);
    ASSERT_EQ_INT(alloc_n(p, cb, 3), 0);
    ASSERT_EQ_INT(prefix_insert(idx, c, 48, cb, 3), 1);
    ASSERT_EQ_INT(prefix_lookup(idx, c, 48, got, 3), 3);
    ASSERT_EQ_INT(got[0], b1[0]);
    ASSERT_EQ_INT(got[1], b1[1]);
    ASSERT_EQ_INT(got[2], cb[2]);
    unref_n(p, got, 3);
    unref_n(p, b1, 2);
    unref_n(p, b2, 2);
    unref_n(p, cb, 3);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 8);
    kv_pool_destroy(p);
}

TEST(bad_block_is_rejected_untouched)
{
    kv_pool *p = kv_pool_create(4, 64);
    prefix_index *idx = prefix_index_create(p, 0);
    int32_t a[32], blk[2];
    fill_seq(a, 32, 0);
    blk[0] = kv_block_alloc(p);
    blk[1] = 3; /* free */
    ASSERT_EQ_INT(prefix_insert(idx, a, 32, blk, 2), WEFT_EINVAL);
    ASSERT_EQ_INT(prefix_block_cached(idx, blk[0]), 0);
    ASSERT_EQ_INT(kv_block_refcount(p, blk[0]), 1);
    blk[1] = 99;
    ASSERT_EQ_INT(prefix_insert(idx, a, 32, blk, 2), WEFT_EINVAL);
    int32_t got;
    ASSERT_EQ_INT(prefix_lookup(idx, a, -1, &got, 1), WEFT_EINVAL);
    kv_block_unref(p, blk[0]);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 4);
    kv_pool_destroy(p);
}

/* Three one-block prompts cached in the order A, B, C, then A touched: the
 * cold end is B, C, A. With B in use, eviction takes C, then A, never B. */
TEST(evicts_lru_first_never_in_use)
{
    kv_pool *p = kv_pool_create(3, 64);
    prefix_index *idx = prefix_index_create(p, 0);
    int32_t t[3][BT], blk[3], got;
    for (int i = 0; i < 3; i++) {
        fill_seq(t[i], BT, 100 * (i + 1));
        blk[i] = kv_block_alloc(p);
        ASSERT_EQ_INT(prefix_insert(idx, t[i], BT, &blk[i], 1), 1);
        kv_block_unref(p, blk[i]);
    }
    ASSERT_EQ_INT(kv_pool_n_free(p), 0);
    ASSERT_EQ_INT(prefix_lookup(idx, t[0], BT, &got, 1), 1); /* touch A */
    kv_block_unref(p, got);
    int32_t held;
    ASSERT_EQ_INT(prefix_lookup(idx, t[1], BT, &held, 1), 1); /* B in use */
    /* the lookup made B warmest; make A warmer again so B is coldest */
    ASSERT_EQ_INT(prefix_lookup(idx, t[2], BT, &got, 1), 1);
    kv_block_unref(p, got);
    ASSERT_EQ_INT(prefix_lookup(idx, t[0], BT, &got, 1), 1);
    kv_block_unref(p, got);
    /* cold end now: B (in use), C, A */
    ASSERT_EQ_INT(prefix_evict(idx, 1), 1);
    ASSERT_EQ_INT(prefix_block_cached(idx, blk[2]), 0);
    ASSERT_EQ_INT(prefix_block_cached(idx, blk[0]), 1);
    ASSERT_EQ_INT(prefix_block_cached(idx, blk[1]), 1);
    ASSERT_EQ_INT(prefix_evict(idx, 2), 1);
    ASSERT_EQ_INT(prefix_block_cached(idx, blk[0]), 0);
    ASSERT_EQ_INT(prefix_evict(idx, 3), 0); /* only B is left, in use */
    ASSERT_EQ_INT(prefix_block_cached(idx, blk[1]), 1);
    ASSERT_EQ_INT(kv_block_refcount(p, blk[1]), 2);
    prefix_stats st;
    prefix_index_stats(idx, &st);
    ASSERT_EQ_INT(st.n_evicted, 2);
    ASSERT_EQ_INT(prefix_index_check(idx), 0);
    kv_block_unref(p, held);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 3);
    kv_pool_destroy(p);
}

/* A chain is kept shallow-warm: eviction takes its deepest block first, so
 * parents are not evicted from under their children. */
TEST(chain_evicts_deepest_first)
{
    kv_pool *p = kv_pool_create(4, 64);
    prefix_index *idx = prefix_index_create(p, 0);
    int32_t a[64], blk[4], got[4];
    fill_seq(a, 64, 0);
    ASSERT_EQ_INT(alloc_n(p, blk, 4), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 64, blk, 4), 4);
    unref_n(p, blk, 4);
    for (int k = 3; k >= 1; k--) {
        ASSERT_EQ_INT(prefix_evict(idx, 4 - k), 1);
        ASSERT_EQ_INT(prefix_block_cached(idx, blk[k]), 0);
        ASSERT_EQ_INT(prefix_lookup(idx, a, 64, got, 4), k); /* touches again */
        unref_n(p, got, k);
    }
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 4);
    kv_pool_destroy(p);
}

TEST(alloc_block_evicts_when_pool_is_empty)
{
    kv_pool *p = kv_pool_create(4, 64);
    prefix_index *idx = prefix_index_create(p, 0);
    int32_t a[64], blk[4];
    fill_seq(a, 64, 0);
    ASSERT_EQ_INT(alloc_n(p, blk, 4), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 64, blk, 4), 4);
    ASSERT_EQ_INT(prefix_alloc_block(idx), -1); /* all in use by the sequence */
    unref_n(p, blk, 4);
    ASSERT_EQ_INT(kv_pool_n_free(p), 0);
    ASSERT_EQ_INT(kv_block_alloc(p), -1);
    int32_t nb = prefix_alloc_block(idx);
    ASSERT_EQ_INT(nb, blk[3]); /* the deepest, coldest block, now ours */
    ASSERT_EQ_INT(kv_block_refcount(p, nb), 1);
    ASSERT_EQ_INT(prefix_block_cached(idx, nb), 0);
    prefix_stats st;
    prefix_index_stats(idx, &st);
    ASSERT_EQ_INT(st.n_entries, 3);
    ASSERT_EQ_INT(st.n_evicted, 1);
    kv_block_unref(p, nb);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 4);
    kv_pool_destroy(p);
}

/* Evicting a parent leaves its children unreachable; caching the prompt
 * again must work even though the orphans still hold the same keys. */
TEST(orphans_do_not_block_reinsert)
{
    kv_pool *p = kv_pool_create(8, 64);
    prefix_index *idx = prefix_index_create(p, 0);
    int32_t a[48], blk[3], got[3];
    fill_seq(a, 48, 0);
    ASSERT_EQ_INT(alloc_n(p, blk, 3), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 48, blk, 3), 3);
    kv_block_unref(p, blk[0]); /* only block 0 evictable */
    ASSERT_EQ_INT(prefix_evict(idx, 8), 1);
    ASSERT_EQ_INT(prefix_block_cached(idx, blk[0]), 0);
    ASSERT_EQ_INT(prefix_lookup(idx, a, 48, got, 3), 0);
    int32_t nb[3];
    ASSERT_EQ_INT(alloc_n(p, nb, 3), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 48, nb, 3), 3);
    ASSERT_EQ_INT(prefix_lookup(idx, a, 48, got, 3), 3);
    for (int i = 0; i < 3; i++) ASSERT_EQ_INT(got[i], nb[i]);
    ASSERT_EQ_INT(prefix_index_check(idx), 0);
    unref_n(p, got, 3);
    unref_n(p, nb, 3);
    unref_n(p, blk + 1, 2);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), 8);
    kv_pool_destroy(p);
}

TEST(destroy_keeps_blocks_sequences_hold)
{
    kv_pool *p = kv_pool_create(4, 64);
    prefix_index *idx = prefix_index_create(p, 0);
    int32_t a[32], blk[2];
    fill_seq(a, 32, 0);
    ASSERT_EQ_INT(alloc_n(p, blk, 2), 0);
    ASSERT_EQ_INT(prefix_insert(idx, a, 32, blk, 2), 2);
    kv_block_unref(p, blk[1]);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_block_refcount(p, blk[0]), 1); /* still the sequence's */
    ASSERT_EQ_INT(kv_pool_n_free(p), 3);
    kv_block_unref(p, blk[0]);
    ASSERT_EQ_INT(kv_pool_n_free(p), 4);
    kv_pool_destroy(p);
}

/* ---- randomized ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

#define S_POOL 64
#define S_MAXTOK 128
#define S_MAXBLK (S_MAXTOK / BT)
#define S_LIVE 6

typedef struct {
    int32_t n_tokens, n_blocks;
    int32_t tokens[S_MAXTOK];
    int32_t blocks[S_MAXBLK];
} sim_seq;

/* What a block's "KV" is in this test: its tokens and a hash of the whole
 * prefix through them, so a hit on wrong content is caught. */
typedef struct {
    uint64_t prefix_hash;
    int32_t tokens[BT];
} sim_kv;

static uint64_t prefix_fnv(const int32_t *t, int32_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (int32_t i = 0; i < n; i++) h = (h ^ (uint32_t)t[i]) * 1099511628211ull;
    return h;
}

static int check_world(kv_pool *p, prefix_index *idx, sim_seq *live, int n_live)
{
    int32_t expect[S_POOL] = {0};
    for (int s = 0; s < n_live; s++)
        for (int32_t i = 0; i < live[s].n_blocks; i++) expect[live[s].blocks[i]]++;
    int32_t n_used = 0;
    for (int32_t b = 0; b < S_POOL; b++) {
        if (prefix_block_cached(idx, b)) expect[b]++;
        if (kv_block_refcount(p, b) != expect[b]) {
            fprintf(stderr, "block %d: refcount %d, expected %d\n", (int)b,
                    (int)kv_block_refcount(p, b), (int)expect[b]);
            return -1;
        }
        if (expect[b] > 0) n_used++;
    }
    if (kv_pool_n_free(p) + n_used != S_POOL) return -2;
    if (prefix_index_check(idx) != 0) {
        fprintf(stderr, "%s\n", weft_last_error());
        return -3;
    }
    return 0;
}

TEST(randomized_invariants)
{
    kv_pool *p = kv_pool_create(S_POOL, sizeof(sim_kv));
    prefix_index *idx = prefix_index_create(p, 0xfeed);
    ASSERT(p && idx);
    /* A few shared prefixes from a tiny vocabulary, so blocks repeat. */
    int32_t bases[5][S_MAXTOK];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < S_MAXTOK; j++) bases[i][j] = (int32_t)rnd(3);
    sim_seq live[S_LIVE];
    int n_live = 0;
    uint64_t n_hits = 0, n_starts = 0;
    for (int op = 0; op < 10000; op++) {
        uint32_t r = rnd(100);
        if (r < 45 && n_live < S_LIVE) {
            /* Start a sequence: shared prefix, random suffix. */
            sim_seq *s = &live[n_live];
            int base = (int)rnd(5);
            int32_t n_shared = (int32_t)rnd(S_MAXTOK + 1);
            s->n_tokens = 1 + (int32_t)rnd(S_MAXTOK);
            for (int32_t i = 0; i < s->n_tokens; i++)
                s->tokens[i] = i < n_shared ? bases[base][i] : (int32_t)rnd(4);
            int32_t need = (s->n_tokens + BT - 1) / BT;
            int32_t h = prefix_lookup(idx, s->tokens, s->n_tokens - 1, s->blocks, S_MAXBLK);
            ASSERT(h >= 0 && h <= (s->n_tokens - 1) / BT);
            n_hits += (uint64_t)h;
            n_starts++;
            for (int32_t i = 0; i < h; i++) {
                const sim_kv *kv = kv_block_data(p, s->blocks[i]);
                ASSERT(kv->prefix_hash == prefix_fnv(s->tokens, (i + 1) * BT));
                ASSERT(memcmp(kv->tokens, s->tokens + i * BT, sizeof kv->tokens) == 0);
            }
            s->n_blocks = h;
            int ok = 1;
            while (s->n_blocks < need) {
                int32_t b = prefix_alloc_block(idx);
                if (b < 0) {
                    ok = 0;
                    break;
                }
                s->blocks[s->n_blocks] = b;
                /* "Compute" the block. */
                int32_t i = s->n_blocks, end = (i + 1) * BT;
                if (end > s->n_tokens) end = s->n_tokens;
                sim_kv *kv = kv_block_data(p, b);
                memset(kv, 0, sizeof *kv);
                memcpy(kv->tokens, s->tokens + i * BT, (size_t)(end - i * BT) * sizeof(int32_t));
                kv->prefix_hash = prefix_fnv(s->tokens, end);
                s->n_blocks++;
            }
            if (!ok) { /* out of KV: the request is refused */
                unref_n(p, s->blocks, s->n_blocks);
            } else {
                if (rnd(4) != 0) {
                    int rc = prefix_insert(idx, s->tokens, s->n_tokens, s->blocks, s->n_blocks);
                    ASSERT(rc >= 0 && rc <= s->n_tokens / BT - h);
                }
                n_live++;
            }
        } else if (r < 80 && n_live > 0) {
            /* A sequence ends, maybe registering its blocks first. */
            int k = (int)rnd((uint32_t)n_live);
            sim_seq *s = &live[k];
            if (rnd(2)) {
                int rc = prefix_insert(idx, s->tokens, s->n_tokens, s->blocks, s->n_blocks);
                ASSERT(rc >= 0);
            }
            unref_n(p, s->blocks, s->n_blocks);
            live[k] = live[--n_live];
        } else if (r < 90) {
            int32_t before = kv_pool_n_free(p);
            int32_t want = (int32_t)rnd(S_POOL + 1);
            int in_use[S_POOL];
            for (int32_t b = 0; b < S_POOL; b++)
                in_use[b] = prefix_block_cached(idx, b) && kv_block_refcount(p, b) > 1;
            int32_t freed = prefix_evict(idx, want);
            ASSERT_EQ_INT(kv_pool_n_free(p), before + freed);
            for (int32_t b = 0; b < S_POOL; b++)
                if (in_use[b]) ASSERT(prefix_block_cached(idx, b)); /* never evicted */
            if (kv_pool_n_free(p) < want) { /* then nothing evictable is left */
                prefix_stats st;
                prefix_index_stats(idx, &st);
                ASSERT_EQ_INT(st.n_evictable, 0);
            }
        } else {
            /* A probe: look up a random shared prefix, then let go. */
            int32_t t[S_MAXTOK], got[S_MAXBLK];
            int base = (int)rnd(5);
            int32_t n = (int32_t)rnd(S_MAXTOK + 1);
            memcpy(t, bases[base], sizeof t);
            int32_t h = prefix_lookup(idx, t, n, got, S_MAXBLK);
            ASSERT(h >= 0);
            for (int32_t i = 0; i < h; i++) {
                const sim_kv *kv = kv_block_data(p, got[i]);
                ASSERT(kv->prefix_hash == prefix_fnv(t, (i + 1) * BT));
            }
            unref_n(p, got, h);
        }
        int rc = check_world(p, idx, live, n_live);
        if (rc) TEST_FAIL_("invariant %d broken after op %d", rc, op);
    }
    prefix_stats st;
    prefix_index_stats(idx, &st);
    fprintf(stderr, "  stress: %llu starts, %llu hit blocks, %llu inserted, %llu evicted\n",
            (unsigned long long)n_starts, (unsigned long long)n_hits,
            (unsigned long long)st.n_inserted, (unsigned long long)st.n_evicted);
    ASSERT(n_hits > 0 && st.n_evicted > 0); /* the run exercised both */
    while (n_live > 0) {
        n_live--;
        unref_n(p, live[n_live].blocks, live[n_live].n_blocks);
    }
    ASSERT_EQ_INT(check_world(p, idx, live, 0), 0);
    prefix_index_destroy(idx);
    ASSERT_EQ_INT(kv_pool_n_free(p), S_POOL);
    kv_pool_destroy(p);
}

int main(void)
{
    RUN(shared_prefix_hits_full_blocks_only);
    RUN(different_tokens_miss);
    RUN(hits_stop_at_first_differing_block);
    RUN(same_key_other_chain_misses);
    RUN(fingerprint_changes_keys);
    RUN(cursor_matches_bulk_calls);
    RUN(refcounts_caller_and_index);
    RUN(existing_entry_wins);
    RUN(bad_block_is_rejected_untouched);
    RUN(evicts_lru_first_never_in_use);
    RUN(chain_evicts_deepest_first);
    RUN(alloc_block_evicts_when_pool_is_empty);
    RUN(orphans_do_not_block_reinsert);
    RUN(destroy_keeps_blocks_sequences_hold);
    RUN(randomized_invariants);
    TEST_DONE();
}

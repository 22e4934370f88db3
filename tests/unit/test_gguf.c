/* GGUF reader and writer: round trips through the writer, hand-built files
 * for every value type, and malformed files that must each fail with the
 * right code and a message naming the problem. */
#include <stdint.h>
#include <unistd.h>

#include "kernels/quant.h"
#include "test.h"
#include "weft/gguf.h"

/* ---- fixtures -------------------------------------------------------------- */

/* A temp file path unique to this process; the file is removed by the caller. */
static const char *tmp_path(const char *tag)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/weft_test_gguf_%d_%s.gguf", (int)getpid(), tag);
    return path;
}

/* Reads a whole file into weft_malloc'd memory of exactly its size, so that
 * ASan flags any read past its end. */
static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return p;
}

/* A growable byte buffer for building files by hand. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void b_raw(buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void b_u8(buf *b, uint8_t v) { b_raw(b, &v, 1); }
static void b_u32(buf *b, uint32_t v) { b_raw(b, &v, 4); }
static void b_u64(buf *b, uint64_t v) { b_raw(b, &v, 8); }
static void b_str(buf *b, const char *s)
{
    b_u64(b, strlen(s));
    b_raw(b, s, strlen(s));
}
static void b_pad(buf *b, size_t align)
{
    while (b->n % align) b_u8(b, 0);
}
static void b_hdr(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    b_raw(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}
static void b_kv_u32(buf *b, const char *key, uint32_t v)
{
    b_str(b, key);
    b_u32(b, GGUF_TYPE_UINT32);
    b_u32(b, v);
}
static void b_tensor(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                     uint32_t type, uint64_t offset)
{
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) b_u64(b, ne[d]);
    b_u32(b, type);
    b_u64(b, offset);
}
/* A file with one kv and one f32 tensor of ne {ne0, 1} at `offset`, with
 * `data_bytes` of data after the padding. */
static void b_one_tensor(buf *b, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                         uint64_t offset, size_t data_bytes)
{
    b_hdr(b, 3, 1, 1);
    b_kv_u32(b, "general.quantization_version", 2);
    b_tensor(b, "w", n_dims, ne, type, offset);
    b_pad(b, 32);
    for (size_t i = 0; i < data_bytes; i++) b_u8(b, (uint8_t)i);
}

/* Opens b as a GGUF image that must fail with `code` and a detail containing
 * each of the strings given. */
#define EXPECT_BAD(b, code, ...)                                                      \
    do {                                                                            \
        gguf_file *g_ = NULL;                                                       \
        int rc_ = gguf_open_mem((b)->p, (b)->n, &g_);                               \
        ASSERT_EQ_INT(rc_, code);                                                   \
        ASSERT(g_ == NULL);                                                         \
        const char *want_[] = {__VA_ARGS__};                                        \
        for (size_t k_ = 0; k_ < sizeof want_ / sizeof *want_; k_++)                \
            if (!strstr(weft_last_error(), want_[k_]))                              \
                TEST_FAIL_("error \"%s\" does not mention \"%s\"", weft_last_error(), \
                           want_[k_]);                                              \
        free((b)->p);                                                               \
    } while (0)

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
}

/* ---- round trips ----------------------------------------------------------- */

TEST(writer_round_trip_metadata)
{
    size_t mem0 = weft_mem_in_use();
    const char *path = tmp_path("meta");
    gguf_writer *w = gguf_writer_create();
    ASSERT(w);
    static const uint8_t u8s[] = {0, 1, 255};
    static const int8_t i8s[] = {-128, 0, 127};
    static const uint16_t u16s[] = {0, 65535};
    static const int16_t i16s[] = {-32768, 32767};
    static const uint32_t u32s[] = {0, 7, 4294967295u};
    static const int32_t i32s[] = {INT32_MIN, -1, INT32_MAX};
    static const float f32s[] = {1.5f, -0.25f, 1e30f};
    static const uint8_t bools[] = {1, 0, 1, 1};
    static const uint64_t u64s[] = {0, UINT64_MAX};
    static const int64_t i64s[] = {INT64_MIN, INT64_MAX};
    static const double f64s[] = {3.141592653589793, -1e300};
    static const char *const strs[] = {"hello", "", "\xc4\xa0world", "a\tb"};

    ASSERT_EQ_INT(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    ASSERT_EQ_INT(gguf_writer_set_u32(w, "llama.block_count", 30), 0);
    ASSERT_EQ_INT(gguf_writer_set_i32(w, "test.i32", -5), 0);
    ASSERT_EQ_INT(gguf_writer_set_f32(w, "test.f32", 1e-5f), 0);
    ASSERT_EQ_INT(gguf_writer_set_bool(w, "test.bool", true), 0);
    ASSERT_EQ_INT(gguf_writer_set_str(w, "test.empty", ""), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.u8", GGUF_TYPE_UINT8, u8s, 3), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.i8", GGUF_TYPE_INT8, i8s, 3), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.u16", GGUF_TYPE_UINT16, u16s, 2), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.i16", GGUF_TYPE_INT16, i16s, 2), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.u32", GGUF_TYPE_UINT32, u32s, 3), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.i32", GGUF_TYPE_INT32, i32s, 3), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.f32", GGUF_TYPE_FLOAT32, f32s, 3), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.bool", GGUF_TYPE_BOOL, bools, 4), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.u64", GGUF_TYPE_UINT64, u64s, 2), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.i64", GGUF_TYPE_INT64, i64s, 2), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.f64", GGUF_TYPE_FLOAT64, f64s, 2), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.empty", GGUF_TYPE_INT32, NULL, 0), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr_str(w, "arr.str", strs, 4), 0);
    ASSERT_EQ_INT(gguf_writer_set_arr_str(w, "arr.str_empty", NULL, 0), 0);
    /* Setting a key again replaces its value. */
    ASSERT_EQ_INT(gguf_writer_set_u32(w, "test.replaced", 1), 0);
    ASSERT_EQ_INT(gguf_writer_set_str(w, "test.replaced", "two"), 0);
    /* The writer refuses what the reader would reject. */
    ASSERT_EQ_INT(gguf_writer_set_arr(w, "arr.bad", GGUF_TYPE_STRING, strs, 1), WEFT_EINVAL);
    ASSERT_EQ_INT(gguf_writer_set_u32(w, "general.alignment", 48), WEFT_EINVAL);
    ASSERT_EQ_INT(gguf_writer_set_u32(w, "", 1), WEFT_EINVAL);
    ASSERT_EQ_INT(gguf_writer_save(w, path), 0);
    gguf_writer_destroy(w);

    gguf_file *g = NULL;
    ASSERT_EQ_INT(gguf_open(path, &g), 0);
    unlink(path);
    ASSERT_EQ_INT(gguf_version(g), 3);
    ASSERT_EQ_INT(gguf_alignment(g), 32);
    ASSERT_EQ_INT(gguf_n_kv(g), 21);
    ASSERT_EQ_INT(gguf_n_tensors(g), 0);
    ASSERT_STR_EQ(gguf_kv_key(g, 0), "general.architecture");
    ASSERT(gguf_kv_key(g, 21) == NULL);
    ASSERT_EQ_INT(gguf_find_key(g, "arr.u8"), 6);
    ASSERT_EQ_INT(gguf_find_key(g, "nope"), -1);

    const char *s;
    size_t len;
    uint32_t u32;
    int64_t i64;
    float f;
    bool bl;
    ASSERT_EQ_INT(gguf_get_str(g, "general.architecture", &s, &len), 0);
    ASSERT(len == 5 && memcmp(s, "llama", 5) == 0);
    ASSERT_EQ_INT(gguf_get_str(g, "test.empty", &s, &len), 0);
    ASSERT_EQ_INT(len, 0);
    ASSERT_EQ_INT(gguf_get_str(g, "test.replaced", &s, &len), 0);
    ASSERT(len == 3 && memcmp(s, "two", 3) == 0);
    ASSERT_EQ_INT(gguf_get_u32(g, "llama.block_count", &u32), 0);
    ASSERT_EQ_INT(u32, 30);
    ASSERT_EQ_INT(gguf_get_i64(g, "llama.block_count", &i64), 0);
    ASSERT_EQ_INT(i64, 30);
    ASSERT_EQ_INT(gguf_get_i64(g, "test.i32", &i64), 0);
    ASSERT_EQ_INT(i64, -5);
    ASSERT_EQ_INT(gguf_get_u32(g, "test.i32", &u32), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "test.i32") && strstr(weft_last_error(), "-5"));
    ASSERT_EQ_INT(gguf_get_f32(g, "test.f32", &f), 0);
    ASSERT(f == 1e-5f);
    ASSERT_EQ_INT(gguf_get_bool(g, "test.bool", &bl), 0);
    ASSERT(bl);
    ASSERT_EQ_INT(gguf_get_u32(g, "general.architecture", &u32), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "general.architecture"));
    ASSERT_EQ_INT(gguf_get_f32(g, "llama.block_count", &f), WEFT_EFORMAT);
    ASSERT_EQ_INT(gguf_get_bool(g, "test.i32", &bl), WEFT_EFORMAT);
    ASSERT_EQ_INT(gguf_get_str(g, "arr.str", &s, &len), WEFT_EFORMAT);
    ASSERT_EQ_INT(gguf_get_u32(g, "missing.key", &u32), WEFT_ENOTFOUND);
    ASSERT(strstr(weft_last_error(), "missing.key"));

    /* Numeric arrays, element by element. */
    struct {
        const char *key;
        gguf_type type;
        const void *want;
        size_t n, esize;
    } arrs[] = {
        {"arr.u8", GGUF_TYPE_UINT8, u8s, 3, 1},     {"arr.i8", GGUF_TYPE_INT8, i8s, 3, 1},
        {"arr.u16", GGUF_TYPE_UINT16, u16s, 2, 2},  {"arr.i16", GGUF_TYPE_INT16, i16s, 2, 2},
        {"arr.u32", GGUF_TYPE_UINT32, u32s, 3, 4},  {"arr.i32", GGUF_TYPE_INT32, i32s, 3, 4},
        {"arr.f32", GGUF_TYPE_FLOAT32, f32s, 3, 4}, {"arr.bool", GGUF_TYPE_BOOL, bools, 4, 1},
        {"arr.u64", GGUF_TYPE_UINT64, u64s, 2, 8},  {"arr.i64", GGUF_TYPE_INT64, i64s, 2, 8},
        {"arr.f64", GGUF_TYPE_FLOAT64, f64s, 2, 8}, {"arr.empty", GGUF_TYPE_INT32, NULL, 0, 4},
    };
    for (size_t k = 0; k < sizeof arrs / sizeof *arrs; k++) {
        gguf_type t;
        const void *data;
        uint64_t n;
        int64_t i = gguf_find_key(g, arrs[k].key);
        ASSERT(i >= 0);
        ASSERT_EQ_INT(gguf_kv_type(g, i), GGUF_TYPE_ARRAY);
        ASSERT_EQ_INT(gguf_kv_arr_type(g, i), arrs[k].type);
        ASSERT_EQ_INT(gguf_kv_arr_len(g, i), arrs[k].n);
        ASSERT_EQ_INT(gguf_get_arr(g, arrs[k].key, &t, &data, &n), 0);
        ASSERT_EQ_INT(t, arrs[k].type);
        ASSERT_EQ_INT(n, arrs[k].n);
        if (n) ASSERT(memcmp(data, arrs[k].want, arrs[k].n * arrs[k].esize) == 0);
    }

    /* String arrays. */
    gguf_type t;
    const void *data;
    uint64_t n;
    ASSERT_EQ_INT(gguf_get_arr(g, "arr.str", &t, &data, &n), 0);
    ASSERT_EQ_INT(t, GGUF_TYPE_STRING);
    ASSERT_EQ_INT(n, 4);
    ASSERT(data == NULL);
    for (uint64_t i = 0; i < 4; i++) {
        ASSERT_EQ_INT(gguf_get_arr_str(g, "arr.str", i, &s, &len), 0);
        ASSERT(len == strlen(strs[i]) && memcmp(s, strs[i], len) == 0);
    }
    ASSERT_EQ_INT(gguf_get_arr_str(g, "arr.str", 4, &s, &len), WEFT_EINVAL);
    ASSERT_EQ_INT(gguf_get_arr_str(g, "arr.u8", 0, &s, &len), WEFT_EFORMAT);
    ASSERT_EQ_INT(gguf_get_arr_str(g, "arr.str_empty", 0, &s, &len), WEFT_EINVAL);
    ASSERT_EQ_INT(gguf_get_arr(g, "test.f32", &t, &data, &n), WEFT_EFORMAT);

    gguf_close(g);
    ASSERT_EQ_INT(weft_mem_in_use(), mem0);
}

typedef struct {
    const char *name;
    int type;
    uint32_t n_dims;
    int64_t ne[4];
} tspec;

static size_t tspec_size(const tspec *t)
{
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) n *= t->ne[d];
    return (size_t)n / quant_block_size(t->type) * quant_type_size(t->type);
}

/* Writes the tensors in `ts` with random data, reads them back and compares. */
static int round_trip_tensors(const tspec *ts, size_t n_ts, uint32_t alignment)
{
    const char *path = tmp_path("tensors");
    uint8_t *data[8];
    int ok = 0;
    gguf_file *g = NULL;
    gguf_writer *w = gguf_writer_create();
    if (alignment) gguf_writer_set_u32(w, "general.alignment", alignment);
    gguf_writer_set_str(w, "general.name", "t");
    for (size_t i = 0; i < n_ts; i++) {
        size_t size = tspec_size(&ts[i]);
        data[i] = malloc(size);
        fill(data[i], size, (uint32_t)i + 1);
        if (gguf_writer_add_tensor(w, ts[i].name, ts[i].type, ts[i].n_dims, ts[i].ne, data[i],
                                   size) != 0)
            goto done;
    }
    if (gguf_writer_save(w, path) != 0 || gguf_open(path, &g) != 0) goto done;
    size_t align = alignment ? alignment : 32;
    if (gguf_alignment(g) != align || gguf_n_tensors(g) != (int64_t)n_ts) goto done;
    for (size_t i = 0; i < n_ts; i++) {
        const gguf_tensor *t = gguf_tensor_at(g, (int64_t)i);
        if (!t || gguf_find_tensor(g, ts[i].name) != t || strcmp(t->name, ts[i].name) != 0 ||
            t->type != ts[i].type || t->n_dims != ts[i].n_dims ||
            t->size != tspec_size(&ts[i]) || t->offset % align != 0 ||
            (uintptr_t)t->data % align != 0 || memcmp(t->data, data[i], t->size) != 0)
            goto done;
        for (int d = 0; d < 4; d++)
            if (t->ne[d] != (d < (int)ts[i].n_dims ? ts[i].ne[d] : 1)) goto done;
    }
    ok = gguf_tensor_at(g, (int64_t)n_ts) == NULL && gguf_find_tensor(g, "absent") == NULL;
done:
    gguf_close(g);
    gguf_writer_destroy(w);
    unlink(path);
    for (size_t i = 0; i < n_ts; i++) free(data[i]);
    return ok;
}

static const tspec mixed_tensors[] = {
    {"token_embd.weight", WEFT_TYPE_Q8_0, 2, {64, 5}},
    {"blk.0.attn_norm.weight", WEFT_TYPE_F32, 1, {7}},
    {"blk.0.attn_q.weight", WEFT_TYPE_Q4_1, 3, {32, 3, 2}},
    {"blk.0.ffn_up.weight", WEFT_TYPE_F16, 4, {3, 2, 1, 5}},
    {"blk.0.ffn_down.weight", WEFT_TYPE_Q4_K, 2, {256, 2}},
    {"output.weight", WEFT_TYPE_BF16, 2, {9, 1}},
};

TEST(writer_round_trip_tensors)
{
    size_t mem0 = weft_mem_in_use();
    ASSERT(round_trip_tensors(mixed_tensors, 6, 0));
    ASSERT(round_trip_tensors(mixed_tensors, 6, 64));
    ASSERT(round_trip_tensors(mixed_tensors, 6, 1));
    ASSERT_EQ_INT(weft_mem_in_use(), mem0);
}

TEST(writer_rejects_bad_tensors)
{
    gguf_writer *w = gguf_writer_create();
    int64_t ne[2] = {32, 2};
    uint8_t d[68] = {0};
    ASSERT_EQ_INT(gguf_writer_add_tensor(w, "a", WEFT_TYPE_Q8_0, 2, ne, d, 68), 0);
    ASSERT_EQ_INT(gguf_writer_add_tensor(w, "a", WEFT_TYPE_Q8_0, 2, ne, d, 68), WEFT_EINVAL);
    ASSERT_EQ_INT(gguf_writer_add_tensor(w, "b", WEFT_TYPE_Q8_0, 2, ne, d, 67), WEFT_EINVAL);
    ASSERT_EQ_INT(gguf_writer_add_tensor(w, "c", WEFT_TYPE_Q8_0, 0, ne, d, 68), WEFT_EINVAL);
    ASSERT_EQ_INT(gguf_writer_add_tensor(w, "e", 99, 2, ne, d, 68), WEFT_EUNSUPPORTED);
    ne[0] = 16;
    ASSERT_EQ_INT(gguf_writer_add_tensor(w, "f", WEFT_TYPE_Q8_0, 2, ne, d, 34), WEFT_EINVAL);
    gguf_writer_destroy(w);
}

/* Every scalar type, built by hand (the writer only emits the common ones),
 * read through the converting getters. */
TEST(reader_scalar_types)
{
    buf b = {0};
    b_hdr(&b, 2, 0, 12);
#define KV(key, type, ctype, v)                                                       \
    do {                                                                            \
        ctype v_ = (v);                                                             \
        b_str(&b, key);                                                             \
        b_u32(&b, type);                                                            \
        b_raw(&b, &v_, sizeof v_);                                                  \
    } while (0)
    KV("u8", GGUF_TYPE_UINT8, uint8_t, 200);
    KV("i8", GGUF_TYPE_INT8, int8_t, -3);
    KV("u16", GGUF_TYPE_UINT16, uint16_t, 60000);
    KV("i16", GGUF_TYPE_INT16, int16_t, -30000);
    KV("u32", GGUF_TYPE_UINT32, uint32_t, 4000000000u);
    KV("i32", GGUF_TYPE_INT32, int32_t, 123456);
    KV("f32", GGUF_TYPE_FLOAT32, float, 0.5f);
    KV("bool", GGUF_TYPE_BOOL, uint8_t, 1);
    KV("u64", GGUF_TYPE_UINT64, uint64_t, UINT64_MAX);
    KV("i64", GGUF_TYPE_INT64, int64_t, INT64_MIN);
    KV("f64", GGUF_TYPE_FLOAT64, double, 2.5e-3);
    KV("u64small", GGUF_TYPE_UINT64, uint64_t, 77);
#undef KV
    gguf_file *g = NULL;
    ASSERT_EQ_INT(gguf_open_mem(b.p, b.n, &g), 0);
    ASSERT_EQ_INT(gguf_version(g), 2);
    uint32_t u;
    int64_t i;
    float f;
    bool bl;
    static const struct {
        const char *key;
        int rc_u32;
        uint32_t u32;
        int rc_i64;
        int64_t i64;
    } ints[] = {
        {"u8", 0, 200, 0, 200},
        {"i8", WEFT_EFORMAT, 0, 0, -3},
        {"u16", 0, 60000, 0, 60000},
        {"i16", WEFT_EFORMAT, 0, 0, -30000},
        {"u32", 0, 4000000000u, 0, 4000000000},
        {"i32", 0, 123456, 0, 123456},
        {"u64", WEFT_EFORMAT, 0, WEFT_EFORMAT, 0},
        {"i64", WEFT_EFORMAT, 0, 0, INT64_MIN},
        {"u64small", 0, 77, 0, 77},
        {"f32", WEFT_EFORMAT, 0, WEFT_EFORMAT, 0},
        {"bool", WEFT_EFORMAT, 0, WEFT_EFORMAT, 0},
    };
    for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) {
        u = 0xdead;
        i = 0xdead;
        ASSERT_EQ_INT(gguf_get_u32(g, ints[k].key, &u), ints[k].rc_u32);
        ASSERT_EQ_INT(gguf_get_i64(g, ints[k].key, &i), ints[k].rc_i64);
        if (ints[k].rc_u32 == 0) ASSERT_EQ_INT(u, ints[k].u32);
        if (ints[k].rc_i64 == 0) ASSERT(i == ints[k].i64);
    }
    ASSERT_EQ_INT(gguf_get_f32(g, "f32", &f), 0);
    ASSERT(f == 0.5f);
    ASSERT_EQ_INT(gguf_get_f32(g, "f64", &f), 0);
    ASSERT(f == (float)2.5e-3);
    ASSERT_EQ_INT(gguf_get_bool(g, "bool", &bl), 0);
    ASSERT(bl);
    for (int64_t k = 0; k < gguf_n_kv(g); k++) ASSERT_EQ_INT(gguf_kv_arr_len(g, k), 0);
    gguf_close(g);
    free(b.p);
}

/* A file with no tensors may end right after its metadata, without padding. */
TEST(reader_no_tensors_no_padding)
{
    buf b = {0};
    b_hdr(&b, 3, 0, 1);
    b_kv_u32(&b, "a", 1);
    ASSERT(b.n % 32 != 0);
    gguf_file *g = NULL;
    ASSERT_EQ_INT(gguf_open_mem(b.p, b.n, &g), 0);
    gguf_close(g);
    free(b.p);
}

/* ---- malformed files ------------------------------------------------------- */

TEST(bad_magic)
{
    buf b = {0};
    b_hdr(&b, 3, 0, 0);
    b.p[3] = 'X';
    EXPECT_BAD(&b, WEFT_EFORMAT, "magic");
}

TEST(bad_version)
{
    buf b = {0};
    b_hdr(&b, 1, 0, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "version 1 is not supported");
    b = (buf){0};
    b_hdr(&b, 99, 0, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "version 99");
    b = (buf){0};
    b_hdr(&b, 0x03000000, 0, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "big-endian");
}

TEST(empty_and_tiny_inputs)
{
    gguf_file *g = NULL;
    ASSERT_EQ_INT(gguf_open_mem(NULL, 0, &g), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "truncated"));
    ASSERT_EQ_INT(gguf_open_mem("GGU", 3, &g), WEFT_EFORMAT);
    ASSERT_EQ_INT(gguf_open_mem(NULL, 5, &g), WEFT_EINVAL);
}

TEST(open_errors)
{
    gguf_file *g = NULL;
    ASSERT_EQ_INT(gguf_open("/nonexistent/dir/model.gguf", &g), WEFT_EIO);
    ASSERT(strstr(weft_last_error(), "/nonexistent/dir/model.gguf"));
    ASSERT_EQ_INT(gguf_open("/tmp", &g), WEFT_EIO);
    const char *path = tmp_path("empty");
    FILE *f = fopen(path, "wb");
    ASSERT(f);
    fclose(f);
    ASSERT_EQ_INT(gguf_open(path, &g), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "empty"));
    /* A parse error from a file names the file. */
    f = fopen(path, "wb");
    fwrite("GGUF\x01\0\0\0", 1, 8, f);
    fclose(f);
    ASSERT_EQ_INT(gguf_open(path, &g), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), path) && strstr(weft_last_error(), "version 1"));
    unlink(path);
    ASSERT(g == NULL);
}

/* Every proper prefix of a valid file must fail cleanly. The file is built so
 * that its last tensor ends exactly at the end of the file. */
TEST(truncated_at_every_length)
{
    size_t mem0 = weft_mem_in_use();
    const char *path = tmp_path("trunc");
    static const char *const vocab[] = {"<s>", "</s>", "a", "bc", ""};
    static const int32_t ids[] = {1, 2, 3};
    gguf_writer *w = gguf_writer_create();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, "llama.context_length", 2048);
    gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", vocab, 5);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, ids, 3);
    int64_t ne_q[2] = {32, 3}, ne_f[1] = {8};
    uint8_t q[3 * 34], fl[32];
    fill(q, sizeof q, 7);
    fill(fl, sizeof fl, 8);
    gguf_writer_add_tensor(w, "blk.0.attn_q.weight", WEFT_TYPE_Q8_0, 2, ne_q, q, sizeof q);
    gguf_writer_add_tensor(w, "output_norm.weight", WEFT_TYPE_F32, 1, ne_f, fl, sizeof fl);
    ASSERT_EQ_INT(gguf_writer_save(w, path), 0);
    gguf_writer_destroy(w);

    size_t size;
    uint8_t *full = slurp(path, &size);
    unlink(path);
    ASSERT(full);
    gguf_file *g = NULL;
    ASSERT_EQ_INT(gguf_open_mem(full, size, &g), 0);
    const gguf_tensor *last = gguf_tensor_at(g, 1);
    ASSERT((const uint8_t *)last->data + last->size == full + size);
    gguf_close(g);

    int failures = 0;
    for (size_t n = 0; n < size; n++) {
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, full, n);
        g = NULL;
        int rc = gguf_open_mem(cut, n, &g);
        if (rc != WEFT_EFORMAT || g != NULL) {
            fprintf(stderr, "  prefix %zu: rc %d (%s)\n", n, rc, weft_last_error());
            failures++;
        }
        gguf_close(g);
        free(cut);
    }
    free(full);
    ASSERT_EQ_INT(failures, 0);
    ASSERT_EQ_INT(weft_mem_in_use(), mem0);
}

TEST(huge_counts)
{
    buf b = {0};
    b_hdr(&b, 3, 0, 1ull << 60);
    b_kv_u32(&b, "a", 1);
    EXPECT_BAD(&b, WEFT_EFORMAT, "key-value count 1152921504606846976");

    b = (buf){0};
    b_hdr(&b, 3, UINT64_MAX, 1);
    b_kv_u32(&b, "a", 1);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor count");

    /* The key's length. */
    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_u64(&b, 1ull << 62);
    b_raw(&b, "abcdefgh", 8);
    EXPECT_BAD(&b, WEFT_EFORMAT, "key length 4611686018427387904");

    /* A string value's length. */
    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "general.name");
    b_u32(&b, GGUF_TYPE_STRING);
    b_u64(&b, UINT64_MAX);
    b_raw(&b, "abcdefgh", 8);
    EXPECT_BAD(&b, WEFT_EFORMAT, "general.name", "string value length");

    /* A numeric array whose count × 4 overflows u64. */
    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, GGUF_TYPE_ARRAY);
    b_u32(&b, GGUF_TYPE_UINT32);
    b_u64(&b, (1ull << 62) + 1);
    b_u64(&b, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "'arr'", "array of 4611686018427387905 u32");

    /* A string array with more elements than bytes. */
    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, GGUF_TYPE_ARRAY);
    b_u32(&b, GGUF_TYPE_STRING);
    b_u64(&b, 1000000);
    b_str(&b, "a");
    EXPECT_BAD(&b, WEFT_EFORMAT, "tokenizer.ggml.tokens", "1000000 strings");

    /* An element of a string array whose length runs past the end. */
    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, GGUF_TYPE_ARRAY);
    b_u32(&b, GGUF_TYPE_STRING);
    b_u64(&b, 2);
    b_str(&b, "a");
    b_u64(&b, 5);
    b_raw(&b, "abcd", 4);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tokenizer.ggml.tokens", "array string length 5");
}

TEST(bad_value_types)
{
    buf b = {0};
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "weird.key");
    b_u32(&b, 13);
    b_u32(&b, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "weird.key", "unknown value type 13");

    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "arr.key");
    b_u32(&b, GGUF_TYPE_ARRAY);
    b_u32(&b, 0xffffffff);
    b_u64(&b, 1);
    b_u64(&b, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "arr.key", "unknown array element type 4294967295");

    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "nested");
    b_u32(&b, GGUF_TYPE_ARRAY);
    b_u32(&b, GGUF_TYPE_ARRAY);
    b_u64(&b, 1);
    b_u32(&b, GGUF_TYPE_UINT8);
    b_u64(&b, 1);
    b_u8(&b, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "nested", "nested arrays");
}

TEST(bad_keys)
{
    buf b = {0};
    b_hdr(&b, 3, 0, 3);
    b_kv_u32(&b, "llama.block_count", 1);
    b_kv_u32(&b, "other", 1);
    b_kv_u32(&b, "llama.block_count", 2);
    EXPECT_BAD(&b, WEFT_EFORMAT, "duplicate key", "llama.block_count", "#0", "#2");

    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_kv_u32(&b, "", 1);
    EXPECT_BAD(&b, WEFT_EFORMAT, "key #0", "empty");

    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_u64(&b, 3);
    b_raw(&b, "a\0b", 3);
    b_u32(&b, GGUF_TYPE_UINT8);
    b_u8(&b, 1);
    EXPECT_BAD(&b, WEFT_EFORMAT, "NUL byte");
}

TEST(bad_alignment)
{
    buf b = {0};
    b_hdr(&b, 3, 0, 1);
    b_kv_u32(&b, "general.alignment", 48);
    EXPECT_BAD(&b, WEFT_EFORMAT, "general.alignment", "48 is not a power of two");

    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_kv_u32(&b, "general.alignment", 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "general.alignment", "0 is not a power of two");

    b = (buf){0};
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, GGUF_TYPE_UINT64);
    b_u64(&b, 32);
    EXPECT_BAD(&b, WEFT_EFORMAT, "general.alignment", "type u64, expected u32");

    /* A huge alignment pushes the data section past the end. */
    b = (buf){0};
    uint64_t ne[1] = {8};
    b_hdr(&b, 3, 1, 1);
    b_kv_u32(&b, "general.alignment", 1u << 31);
    b_tensor(&b, "w", 1, ne, WEFT_TYPE_F32, 0);
    b_pad(&b, 32);
    for (int i = 0; i < 32; i++) b_u8(&b, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "data section would start at offset 2147483648");
}

TEST(bad_tensor_offsets)
{
    buf b = {0};
    uint64_t ne[2] = {8, 2}; /* 64 bytes of f32 */
    b_one_tensor(&b, 2, ne, WEFT_TYPE_F32, 0, 64);
    gguf_file *g = NULL;
    ASSERT_EQ_INT(gguf_open_mem(b.p, b.n, &g), 0);
    ASSERT_EQ_INT(gguf_find_tensor(g, "w")->size, 64);
    gguf_close(g);
    free(b.p);

    b = (buf){0};
    b_one_tensor(&b, 2, ne, WEFT_TYPE_F32, 0, 63);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "past the end of the data section");

    b = (buf){0};
    b_one_tensor(&b, 2, ne, WEFT_TYPE_F32, 32, 64);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "offset 32", "past the end");

    b = (buf){0};
    b_one_tensor(&b, 2, ne, WEFT_TYPE_F32, UINT64_MAX - 31, 64);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "past the end");

    b = (buf){0};
    b_one_tensor(&b, 2, ne, WEFT_TYPE_F32, 4, 128);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "offset 4 is not a multiple of the alignment 32");
}

TEST(bad_tensor_shapes)
{
    buf b = {0};
    uint64_t ne[5] = {8, 1, 1, 1, 1};
    b_one_tensor(&b, 0, ne, WEFT_TYPE_F32, 0, 32);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "n_dims is 0");

    b = (buf){0};
    b_one_tensor(&b, 5, ne, WEFT_TYPE_F32, 0, 32);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "n_dims is 5");

    b = (buf){0};
    uint64_t ne0[2] = {8, 0};
    b_one_tensor(&b, 2, ne0, WEFT_TYPE_F32, 0, 32);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "ne[1] is 0");

    b = (buf){0};
    uint64_t neg[1] = {1ull << 63};
    b_one_tensor(&b, 1, neg, WEFT_TYPE_F32, 0, 32);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "ne[0] is 9223372036854775808");

    b = (buf){0};
    uint64_t big[3] = {1ull << 31, 1ull << 31, 1ull << 31};
    b_one_tensor(&b, 3, big, WEFT_TYPE_F32, 0, 32);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "overflows");

    /* The element count fits int64, the byte size does not fit u64. */
    b = (buf){0};
    uint64_t wide[2] = {1ull << 31, 1ull << 31};
    b_one_tensor(&b, 2, wide, WEFT_TYPE_F32, 0, 32);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "data size overflows");

    /* A byte size that fits but is far larger than the file. */
    b = (buf){0};
    uint64_t large[2] = {1ull << 30, 1ull << 30};
    b_one_tensor(&b, 2, large, WEFT_TYPE_F32, 0, 32);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "(4611686018427387904 bytes)", "past the end");

    b = (buf){0};
    uint64_t odd[2] = {48, 1};
    b_one_tensor(&b, 2, odd, WEFT_TYPE_Q8_0, 0, 64);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor 'w'", "ne[0] = 48", "block size 32", "q8_0");
}

TEST(unknown_tensor_type)
{
    buf b = {0};
    uint64_t ne[1] = {32};
    b_one_tensor(&b, 1, ne, 99, 0, 128);
    EXPECT_BAD(&b, WEFT_EUNSUPPORTED, "tensor 'w'", "unknown tensor type id 99");

    b = (buf){0};
    b_one_tensor(&b, 1, ne, 0x80000000u, 0, 128);
    EXPECT_BAD(&b, WEFT_EUNSUPPORTED, "tensor 'w'", "unknown tensor type id 2147483648");
}

TEST(bad_tensor_names)
{
    buf b = {0};
    uint64_t ne[1] = {8};
    b_hdr(&b, 3, 2, 0);
    b_tensor(&b, "blk.0.attn_k.weight", 1, ne, WEFT_TYPE_F32, 0);
    b_tensor(&b, "blk.0.attn_k.weight", 1, ne, WEFT_TYPE_F32, 32);
    b_pad(&b, 32);
    for (int i = 0; i < 64; i++) b_u8(&b, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "duplicate tensor name", "blk.0.attn_k.weight");

    char long_name[300];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    b = (buf){0};
    b_hdr(&b, 3, 1, 0);
    b_tensor(&b, long_name, 1, ne, WEFT_TYPE_F32, 0);
    b_pad(&b, 32);
    for (int i = 0; i < 32; i++) b_u8(&b, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor #0", "299 bytes", "256 allowed");

    b = (buf){0};
    b_hdr(&b, 3, 1, 0);
    b_tensor(&b, "", 1, ne, WEFT_TYPE_F32, 0);
    b_pad(&b, 32);
    for (int i = 0; i < 32; i++) b_u8(&b, 0);
    EXPECT_BAD(&b, WEFT_EFORMAT, "tensor #0", "tensor name is empty");
}

/* ---- the real model -------------------------------------------------------- */

TEST(real_model)
{
    char path[1024];
    const char *env = getenv("WEFT_MODEL");
    if (env && *env)
        snprintf(path, sizeof path, "%s", env);
    else
        snprintf(path, sizeof path, "%s/.cache/weft/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                 getenv("HOME") ? getenv("HOME") : "");
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "  note: %s not present, real-model checks skipped\n", path);
        return;
    }
    size_t mem0 = weft_mem_in_use();
    gguf_file *g = NULL;
    double t0 = weft_now();
    int rc = gguf_open(path, &g);
    if (rc != 0) TEST_FAIL_("gguf_open(%s): %d %s", path, rc, weft_last_error());
    double dt = weft_now() - t0;
    ASSERT_EQ_INT(gguf_n_tensors(g), 272);
    uint32_t u;
    ASSERT_EQ_INT(gguf_get_u32(g, "llama.block_count", &u), 0);
    ASSERT_EQ_INT(u, 30);
    ASSERT_EQ_INT(gguf_get_u32(g, "llama.embedding_length", &u), 0);
    ASSERT_EQ_INT(u, 576);
    int64_t k = gguf_find_key(g, "tokenizer.ggml.tokens");
    ASSERT(k >= 0);
    ASSERT_EQ_INT(gguf_kv_arr_type(g, k), GGUF_TYPE_STRING);
    ASSERT_EQ_INT(gguf_kv_arr_len(g, k), 49152);
    const char *s;
    size_t len;
    ASSERT_EQ_INT(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 49151, &s, &len), 0);
    ASSERT(len > 0);
    const gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    ASSERT(t);
    ASSERT_EQ_INT(t->type, WEFT_TYPE_Q8_0);
    ASSERT_EQ_INT(t->n_dims, 2);
    ASSERT_EQ_INT(t->ne[0], 576);
    ASSERT_EQ_INT(t->ne[1], 49152);
    ASSERT_EQ_INT(t->size, quant_row_size(WEFT_TYPE_Q8_0, 576) * 49152);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        ASSERT(gguf_find_tensor(g, gguf_tensor_at(g, i)->name) == gguf_tensor_at(g, i));
    fprintf(stderr, "  note: %s: %" PRId64 " keys, %" PRId64 " tensors, opened in %.1f ms\n",
            path, gguf_n_kv(g), gguf_n_tensors(g), dt * 1e3);
    gguf_close(g);
    ASSERT_EQ_INT(weft_mem_in_use(), mem0);
}

int main(void)
{
    RUN(writer_round_trip_metadata);
    RUN(writer_round_trip_tensors);
    RUN(writer_rejects_bad_tensors);
    RUN(reader_scalar_types);
    RUN(reader_no_tensors_no_padding);
    RUN(bad_magic);
    RUN(bad_version);
    RUN(empty_and_tiny_inputs);
    RUN(open_errors);
    RUN(truncated_at_every_length);
    RUN(huge_counts);
    RUN(bad_value_types);
    RUN(bad_keys);
    RUN(bad_alignment);
    RUN(bad_tensor_offsets);
    RUN(bad_tensor_shapes);
    RUN(unknown_tensor_type);
    RUN(bad_tensor_names);
    RUN(real_model);
    TEST_DONE();
}

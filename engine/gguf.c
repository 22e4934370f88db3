/*
 * engine/gguf.c — GGUF v2/v3 reader and a small v3 writer.
 *
 * The format is described in include/weft/gguf.h. The reader validates the
 * whole header in one pass over a cursor that never moves past the end of the
 * image; after that, getters only index arrays built during the pass, so none
 * of them can read out of bounds:
 *   - keys and tensor names are copied into owned NUL-terminated strings,
 *   - string values stay in the mapping as (pointer, length),
 *   - string arrays get a table of per-element offsets (vocabularies hold
 *     ~50-150k strings and gguf_get_arr_str must be O(1)),
 *   - keys and tensor names are indexed by two small open-addressing hash
 *     tables, which also catch duplicates while parsing.
 *
 * Every size read from the file is checked against the bytes that remain
 * before it is used, so a forged count can never cause a large allocation:
 * all allocations are bounded by a small multiple of the file size.
 */
#include "weft/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/quant.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 256      /* ggml allows 64; be lenient */
#define GGUF_N_TYPES 13        /* value types 0..GGUF_TYPE_FLOAT64 */
#define SHOW_MAX 64            /* how much of a key or name an error message shows */

/* Smallest encodings, used to bound counts by the bytes that remain:
 * a kv is a 1-byte key (8 + 1), a type (4) and a 1-byte value; a tensor info
 * is a 1-byte name (8 + 1), n_dims (4), one dim (8), type (4) and offset (8). */
#define MIN_KV_BYTES 14
#define MIN_TENSOR_BYTES 33

/* ---- shared helpers ------------------------------------------------------ */

/* Bytes of one value of a scalar type; 0 for STRING, ARRAY and unknown. */
static size_t value_size(uint32_t t)
{
    static const uint8_t sizes[GGUF_N_TYPES] = {
        [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,    [GGUF_TYPE_UINT16] = 2,
        [GGUF_TYPE_INT16] = 2,   [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4,
        [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,    [GGUF_TYPE_UINT64] = 8,
        [GGUF_TYPE_INT64] = 8,   [GGUF_TYPE_FLOAT64] = 8,
    };
    return t < GGUF_N_TYPES ? sizes[t] : 0;
}

static const char *value_type_name(uint32_t t)
{
    static const char *const names[GGUF_N_TYPES] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
        "u64", "i64", "f64",
    };
    return t < GGUF_N_TYPES ? names[t] : "unknown";
}

static uint64_t align_up(uint64_t x, uint64_t a) { return x + (a - x % a) % a; }

static bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* FNV-1a; keys and names are short. */
static uint64_t hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* A printable, truncated rendering of bytes from the file for error messages. */
static const char *show(char buf[SHOW_MAX + 4], const char *s, size_t n)
{
    size_t m = n < SHOW_MAX ? n : SHOW_MAX;
    for (size_t i = 0; i < m; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (char)(c >= 0x20 && c < 0x7f ? c : '?');
    }
    strcpy(buf + m, n > m ? "..." : "");
    return buf;
}

/* ---- name index: open addressing over indices into an array of names ---- */

typedef struct {
    int64_t *slots; /* -1 = empty */
    size_t mask;
} name_index;

static int index_init(name_index *ix, int64_t n)
{
    size_t cap = 8;
    while (cap < (size_t)n * 2) cap *= 2;
    ix->slots = weft_malloc(cap * sizeof *ix->slots);
    if (!ix->slots) return weft_error(WEFT_ENOMEM, "gguf: out of memory for a %zu-slot index", cap);
    memset(ix->slots, 0xff, cap * sizeof *ix->slots);
    ix->mask = cap - 1;
    return 0;
}

/* names(i) gives the name at index i; the table stores indices only. */
typedef const char *(*name_at_fn)(const void *owner, int64_t i);

static int64_t index_find(const name_index *ix, const void *owner, name_at_fn name_at,
                          const char *name)
{
    if (!ix->slots || !name) return -1;
    for (size_t s = hash_str(name) & ix->mask;; s = (s + 1) & ix->mask) {
        int64_t i = ix->slots[s];
        if (i < 0) return -1;
        if (strcmp(name_at(owner, i), name) == 0) return i;
    }
}

/* Inserts index i under its name; returns the index already there, or -1. */
static int64_t index_insert(name_index *ix, const void *owner, name_at_fn name_at, int64_t i)
{
    const char *name = name_at(owner, i);
    size_t s = hash_str(name) & ix->mask;
    for (; ix->slots[s] >= 0; s = (s + 1) & ix->mask)
        if (strcmp(name_at(owner, ix->slots[s]), name) == 0) return ix->slots[s];
    ix->slots[s] = i;
    return -1;
}

/* ---- reader -------------------------------------------------------------- */

typedef struct {
    char *key;            /* owned, NUL-terminated */
    gguf_type type;
    gguf_type arr_type;   /* element type when type == ARRAY */
    uint64_t n;           /* element count when type == ARRAY */
    const uint8_t *val;   /* scalar / string bytes / first array element, in the image */
    uint64_t len;         /* string length when type == STRING */
    uint64_t *str_off;    /* string arrays: offset of element i's bytes from val */
} gguf_kv;

struct gguf_file {
    const uint8_t *base; /* the image: the mapping, or the borrowed buffer */
    size_t size;
    void *map;           /* non-NULL when we own an mmap of `size` bytes */
    uint32_t version;
    size_t alignment;
    size_t data_off;     /* start of the data section in the image */
    int64_t n_kv;
    gguf_kv *kv;         /* (n_kv) */
    int64_t n_tensors;
    gguf_tensor *tensors; /* (n_tensors) */
    name_index kv_index, tensor_index;
};

static const char *kv_name_at(const void *owner, int64_t i)
{
    return ((const gguf_file *)owner)->kv[i].key;
}

static const char *tensor_name_at(const void *owner, int64_t i)
{
    return ((const gguf_file *)owner)->tensors[i].name;
}

/* A cursor over the image plus the item being parsed, for error messages. */
typedef struct {
    const uint8_t *base;
    size_t size, pos;
    char ctx[160];
} parser;

static int perr(parser *p, int code, const char *fmt, ...) WEFT_PRINTF(3, 4);
static int perr(parser *p, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->ctx[0]) return weft_error(code, "gguf: %s: %s", p->ctx, msg);
    return weft_error(code, "gguf: %s", msg);
}

static size_t remaining(const parser *p) { return p->size - p->pos; }

static int need(parser *p, uint64_t n, const char *what)
{
    if (n <= remaining(p)) return 0;
    return perr(p, WEFT_EFORMAT,
                "truncated: %s needs %" PRIu64 " bytes at offset %zu, but only %zu remain "
                "(file size %zu)",
                what, n, p->pos, remaining(p), p->size);
}

static int read_u32(parser *p, uint32_t *v, const char *what)
{
    int rc = need(p, 4, what);
    if (rc < 0) return rc;
    memcpy(v, p->base + p->pos, 4);
    p->pos += 4;
    return 0;
}

static int read_u64(parser *p, uint64_t *v, const char *what)
{
    int rc = need(p, 8, what);
    if (rc < 0) return rc;
    memcpy(v, p->base + p->pos, 8);
    p->pos += 8;
    return 0;
}

/* A string: u64 length then bytes. *s points into the image. */
static int read_str(parser *p, const char **s, uint64_t *len, const char *what)
{
    int rc = read_u64(p, len, what);
    if (rc < 0) return rc;
    if (*len > remaining(p))
        return perr(p, WEFT_EFORMAT,
                    "%s length %" PRIu64 " at offset %zu exceeds the %zu bytes left in the file",
                    what, *len, p->pos - 8, remaining(p));
    *s = (const char *)p->base + p->pos;
    p->pos += *len;
    return 0;
}

/* Keys and tensor names: non-empty, no NUL inside, copied out. */
static int read_name(parser *p, char **out, uint64_t max, const char *what)
{
    const char *s;
    uint64_t len;
    char shown[SHOW_MAX + 4];
    int rc = read_str(p, &s, &len, what);
    if (rc < 0) return rc;
    if (len == 0) return perr(p, WEFT_EFORMAT, "%s is empty", what);
    if (len > max)
        return perr(p, WEFT_EFORMAT, "%s '%s' is %" PRIu64 " bytes, more than the %" PRIu64
                    " allowed", what, show(shown, s, len), len, max);
    if (memchr(s, 0, len))
        return perr(p, WEFT_EFORMAT, "%s '%s' contains a NUL byte", what, show(shown, s, len));
    *out = weft_malloc(len + 1);
    if (!*out) return weft_error(WEFT_ENOMEM, "gguf: out of memory copying a %s", what);
    memcpy(*out, s, len);
    (*out)[len] = 0;
    return 0;
}

static int parse_array(parser *p, gguf_kv *kv)
{
    uint32_t et;
    uint64_t n;
    int rc;
    if ((rc = read_u32(p, &et, "array element type")) < 0) return rc;
    if (et == GGUF_TYPE_ARRAY) return perr(p, WEFT_EFORMAT, "nested arrays are not supported");
    if (et >= GGUF_N_TYPES)
        return perr(p, WEFT_EFORMAT, "unknown array element type %" PRIu32 " (expected 0..%d)",
                    et, GGUF_N_TYPES - 1);
    if ((rc = read_u64(p, &n, "array count")) < 0) return rc;
    kv->arr_type = (gguf_type)et;
    kv->n = n;
    kv->val = p->base + p->pos;

    if (et != GGUF_TYPE_STRING) {
        size_t es = value_size(et);
        if (n > remaining(p) / es)
            return perr(p, WEFT_EFORMAT,
                        "array of %" PRIu64 " %s at offset %zu needs more than the %zu bytes "
                        "left in the file",
                        n, value_type_name(et), p->pos, remaining(p));
        p->pos += n * es;
        return 0;
    }

    /* Each string takes at least its 8-byte length, which bounds the table. */
    if (n > remaining(p) / 8)
        return perr(p, WEFT_EFORMAT,
                    "array of %" PRIu64 " strings at offset %zu cannot fit in the %zu bytes "
                    "left in the file",
                    n, p->pos, remaining(p));
    if (n) {
        kv->str_off = weft_malloc(n * sizeof *kv->str_off);
        if (!kv->str_off)
            return weft_error(WEFT_ENOMEM, "gguf: out of memory for %" PRIu64 " string offsets", n);
    }
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t len;
        if ((rc = read_str(p, &s, &len, "array string")) < 0) return rc;
        kv->str_off[i] = (uint64_t)((const uint8_t *)s - kv->val);
    }
    return 0;
}

static int parse_kv(parser *p, gguf_file *g, int64_t i)
{
    gguf_kv *kv = &g->kv[i];
    uint32_t t;
    int rc;
    char shown[SHOW_MAX + 4];

    snprintf(p->ctx, sizeof p->ctx, "key #%" PRId64, i);
    if ((rc = read_name(p, &kv->key, UINT64_MAX, "key")) < 0) return rc;
    snprintf(p->ctx, sizeof p->ctx, "key '%s'", show(shown, kv->key, strlen(kv->key)));

    int64_t dup = index_insert(&g->kv_index, g, kv_name_at, i);
    if (dup >= 0)
        return perr(p, WEFT_EFORMAT, "duplicate key (entries #%" PRId64 " and #%" PRId64 ")", dup,
                    i);

    if ((rc = read_u32(p, &t, "value type")) < 0) return rc;
    if (t >= GGUF_N_TYPES)
        return perr(p, WEFT_EFORMAT, "unknown value type %" PRIu32 " (expected 0..%d)", t,
                    GGUF_N_TYPES - 1);
    kv->type = (gguf_type)t;

    if (t == GGUF_TYPE_ARRAY) return parse_array(p, kv);
    if (t == GGUF_TYPE_STRING) {
        const char *s;
        if ((rc = read_str(p, &s, &kv->len, "string value")) < 0) return rc;
        kv->val = (const uint8_t *)s;
        return 0;
    }
    if ((rc = need(p, value_size(t), "value")) < 0) return rc;
    kv->val = p->base + p->pos;
    p->pos += value_size(t);
    return 0;
}

/* The info record of tensor i; offsets are checked later, once the data
 * section's start is known. */
static int parse_tensor_info(parser *p, gguf_file *g, int64_t i)
{
    gguf_tensor *t = &g->tensors[i];
    char *name = NULL;
    uint32_t n_dims, type;
    int rc;
    char shown[SHOW_MAX + 4];

    snprintf(p->ctx, sizeof p->ctx, "tensor #%" PRId64, i);
    rc = read_name(p, &name, GGUF_MAX_NAME, "tensor name");
    t->name = name;
    if (rc < 0) return rc;
    snprintf(p->ctx, sizeof p->ctx, "tensor '%s'", show(shown, name, strlen(name)));

    int64_t dup = index_insert(&g->tensor_index, g, tensor_name_at, i);
    if (dup >= 0)
        return perr(p, WEFT_EFORMAT, "duplicate tensor name (tensors #%" PRId64 " and #%" PRId64
                    ")", dup, i);

    if ((rc = read_u32(p, &n_dims, "n_dims")) < 0) return rc;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return perr(p, WEFT_EFORMAT, "n_dims is %" PRIu32 ", expected 1..%d", n_dims,
                    GGUF_MAX_DIMS);
    t->n_dims = n_dims;

    int64_t nelem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        if ((rc = read_u64(p, &ne, "dimension")) < 0) return rc;
        if (ne < 1 || ne > (uint64_t)INT64_MAX)
            return perr(p, WEFT_EFORMAT, "ne[%" PRIu32 "] is %" PRIu64 ", expected 1..INT64_MAX",
                        d, ne);
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(nelem, t->ne[d], &nelem))
            return perr(p, WEFT_EFORMAT, "element count overflows int64");
    }

    if ((rc = read_u32(p, &type, "tensor type")) < 0) return rc;
    size_t bs = type < WEFT_TYPE_COUNT ? quant_block_size((int)type) : 0;
    size_t ts = type < WEFT_TYPE_COUNT ? quant_type_size((int)type) : 0;
    if (bs == 0 || ts == 0)
        return perr(p, WEFT_EUNSUPPORTED, "unknown tensor type id %" PRIu32 " (%s)", type,
                    type < WEFT_TYPE_COUNT ? quant_type_name((int)type) : "unknown");
    t->type = (int)type;
    if (t->ne[0] % (int64_t)bs != 0)
        return perr(p, WEFT_EFORMAT,
                    "ne[0] = %" PRId64 " is not a multiple of the block size %zu of type %s",
                    t->ne[0], bs, quant_type_name(t->type));

    /* bytes = ne[0]/bs blocks per row × ts bytes × rows; rows fit int64 already. */
    uint64_t row = (uint64_t)(t->ne[0] / (int64_t)bs), bytes;
    uint64_t rows = (uint64_t)(nelem / t->ne[0]);
    if (__builtin_mul_overflow(row, (uint64_t)ts, &row) ||
        __builtin_mul_overflow(row, rows, &bytes) || bytes > SIZE_MAX)
        return perr(p, WEFT_EFORMAT, "data size overflows");
    t->size = (size_t)bytes;

    return read_u64(p, &t->offset, "tensor offset");
}

/* general.alignment, if present, must be a u32 power of two. */
static int parse_alignment(parser *p, gguf_file *g)
{
    int64_t i = gguf_find_key(g, "general.alignment");
    uint32_t a;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (i < 0) return 0;
    snprintf(p->ctx, sizeof p->ctx, "key 'general.alignment'");
    if (g->kv[i].type != GGUF_TYPE_UINT32)
        return perr(p, WEFT_EFORMAT, "has type %s, expected u32",
                    value_type_name(g->kv[i].type));
    memcpy(&a, g->kv[i].val, 4);
    if (!is_pow2(a)) return perr(p, WEFT_EFORMAT, "%" PRIu32 " is not a power of two", a);
    g->alignment = a;
    return 0;
}

static int check_tensor_data(parser *p, gguf_file *g)
{
    char shown[SHOW_MAX + 4];
    uint64_t data_len = g->size - g->data_off;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        snprintf(p->ctx, sizeof p->ctx, "tensor '%s'", show(shown, t->name, strlen(t->name)));
        if (t->offset % g->alignment)
            return perr(p, WEFT_EFORMAT,
                        "offset %" PRIu64 " is not a multiple of the alignment %zu", t->offset,
                        g->alignment);
        if (t->offset > data_len || t->size > data_len - t->offset)
            return perr(p, WEFT_EFORMAT,
                        "data at offset %" PRIu64 " (%zu bytes) runs past the end of the "
                        "data section, which holds %" PRIu64 " bytes from file offset %zu",
                        t->offset, t->size, data_len, g->data_off);
        t->data = g->base + g->data_off + t->offset;
    }
    return 0;
}

static int parse(gguf_file *g)
{
    parser p = {.base = g->base, .size = g->size};
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    int rc;

    if ((rc = read_u32(&p, &magic, "magic")) < 0) return rc;
    if (magic != GGUF_MAGIC)
        return perr(&p, WEFT_EFORMAT, "bad magic 0x%08" PRIx32 ", expected \"GGUF\" (0x%08x)",
                    magic, GGUF_MAGIC);
    if ((rc = read_u32(&p, &g->version, "version")) < 0) return rc;
    if (g->version == 1)
        return perr(&p, WEFT_EFORMAT,
                    "version 1 is not supported (only 2 and 3); re-convert the model with a "
                    "current llama.cpp");
    if (g->version != 2 && g->version != 3) {
        if (__builtin_bswap32(g->version) == 2 || __builtin_bswap32(g->version) == 3)
            return perr(&p, WEFT_EFORMAT, "big-endian GGUF files are not supported");
        return perr(&p, WEFT_EFORMAT, "unknown version %" PRIu32 " (supported: 2 and 3)",
                    g->version);
    }
    if ((rc = read_u64(&p, &n_tensors, "tensor count")) < 0) return rc;
    if ((rc = read_u64(&p, &n_kv, "key-value count")) < 0) return rc;
    if (n_kv > remaining(&p) / MIN_KV_BYTES)
        return perr(&p, WEFT_EFORMAT,
                    "key-value count %" PRIu64 " cannot fit in the %zu bytes after the header",
                    n_kv, remaining(&p));
    if (n_tensors > remaining(&p) / MIN_TENSOR_BYTES ||
        n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_BYTES > remaining(&p))
        return perr(&p, WEFT_EFORMAT,
                    "tensor count %" PRIu64 " and key-value count %" PRIu64
                    " cannot fit in the %zu bytes after the header",
                    n_tensors, n_kv, remaining(&p));

    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    g->kv = weft_calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->tensors = weft_calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors)
        return weft_error(WEFT_ENOMEM, "gguf: out of memory for %" PRIu64 " keys and %" PRIu64
                          " tensors", n_kv, n_tensors);
    if ((rc = index_init(&g->kv_index, g->n_kv)) < 0) return rc;
    if ((rc = index_init(&g->tensor_index, g->n_tensors)) < 0) return rc;

    for (int64_t i = 0; i < g->n_kv; i++)
        if ((rc = parse_kv(&p, g, i)) < 0) return rc;
    if ((rc = parse_alignment(&p, g)) < 0) return rc;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((rc = parse_tensor_info(&p, g, i)) < 0) return rc;

    /* A file without tensors may end right after its header, unpadded. */
    p.ctx[0] = 0;
    uint64_t data_off = align_up(p.pos, g->alignment);
    if (data_off > g->size) {
        if (g->n_tensors > 0)
            return perr(&p, WEFT_EFORMAT,
                        "data section would start at offset %" PRIu64 " (header end %zu aligned "
                        "to %zu), past the end of the file (%zu bytes)",
                        data_off, p.pos, g->alignment, g->size);
        data_off = g->size;
    }
    g->data_off = (size_t)data_off;
    return check_tensor_data(&p, g);
}

int gguf_open_mem(const void *data, size_t size, gguf_file **out)
{
    int rc;
    if (!out || (!data && size)) return weft_error(WEFT_EINVAL, "gguf_open_mem: bad arguments");
    *out = NULL;
    gguf_file *g = weft_calloc(1, sizeof *g);
    if (!g) return weft_error(WEFT_ENOMEM, "gguf: out of memory");
    g->base = data ? data : (const uint8_t *)"";
    g->size = size;
    if ((rc = parse(g)) < 0) goto fail;
    *out = g;
    return 0;
fail:
    gguf_close(g);
    return rc;
}

int gguf_open(const char *path, gguf_file **out)
{
    int rc, fd = -1;
    struct stat st;
    gguf_file *g = NULL;

    if (!path || !out) return weft_error(WEFT_EINVAL, "gguf_open: bad arguments");
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = weft_error(WEFT_EIO, "gguf: cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        rc = weft_error(WEFT_EIO, "gguf: cannot stat %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = weft_error(WEFT_EIO, "gguf: %s is not a regular file", path);
        goto fail;
    }
    if (st.st_size == 0) {
        rc = weft_error(WEFT_EFORMAT, "gguf: %s is empty", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = weft_error(WEFT_ERANGE, "gguf: %s is too large to map", path);
        goto fail;
    }
    g = weft_calloc(1, sizeof *g);
    if (!g) {
        rc = weft_error(WEFT_ENOMEM, "gguf: out of memory");
        goto fail;
    }
    g->size = (size_t)st.st_size;
    g->map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (g->map == MAP_FAILED) {
        g->map = NULL;
        rc = weft_error(WEFT_EIO, "gguf: cannot map %s: %s", path, strerror(errno));
        goto fail;
    }
    g->base = g->map;
    close(fd);
    fd = -1;
    if ((rc = parse(g)) < 0) {
        /* Keep the parser's detail, prefixed with the path. */
        char detail[768];
        snprintf(detail, sizeof detail, "%s", weft_last_error());
        weft_error(rc, "%s: %s", path, detail);
        goto fail;
    }
    *out = g;
    return 0;
fail:
    if (fd >= 0) close(fd);
    gguf_close(g);
    return rc;
}

void gguf_close(gguf_file *g)
{
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) {
            weft_free(g->kv[i].key);
            weft_free(g->kv[i].str_off);
        }
    if (g->tensors)
        for (int64_t i = 0; i < g->n_tensors; i++) weft_free((char *)g->tensors[i].name);
    weft_free(g->kv);
    weft_free(g->tensors);
    weft_free(g->kv_index.slots);
    weft_free(g->tensor_index.slots);
    if (g->map) munmap(g->map, g->size);
    weft_free(g);
}

/* ---- getters ------------------------------------------------------------- */

uint32_t gguf_version(const gguf_file *g) { return g->version; }
size_t gguf_alignment(const gguf_file *g) { return g->alignment; }
int64_t gguf_n_kv(const gguf_file *g) { return g->n_kv; }

/* NULL when i is out of range. */
const char *gguf_kv_key(const gguf_file *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

int64_t gguf_find_key(const gguf_file *g, const char *key)
{
    return index_find(&g->kv_index, g, kv_name_at, key);
}

/* An index out of range is a caller bug: these abort. */
gguf_type gguf_kv_type(const gguf_file *g, int64_t i)
{
    WEFT_ASSERT(i >= 0 && i < g->n_kv);
    return g->kv[i].type;
}

/* For a non-array value: its own type, and length 0. */
gguf_type gguf_kv_arr_type(const gguf_file *g, int64_t i)
{
    WEFT_ASSERT(i >= 0 && i < g->n_kv);
    return g->kv[i].type == GGUF_TYPE_ARRAY ? g->kv[i].arr_type : g->kv[i].type;
}

uint64_t gguf_kv_arr_len(const gguf_file *g, int64_t i)
{
    WEFT_ASSERT(i >= 0 && i < g->n_kv);
    return g->kv[i].type == GGUF_TYPE_ARRAY ? g->kv[i].n : 0;
}

static int lookup(const gguf_file *g, const char *key, const gguf_kv **kv)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0) return weft_error(WEFT_ENOTFOUND, "gguf: key '%s' not found", key ? key : "(null)");
    *kv = &g->kv[i];
    return 0;
}

static int wrong_type(const gguf_kv *kv, const char *expected)
{
    return weft_error(WEFT_EFORMAT, "gguf: key '%s' has type %s, expected %s", kv->key,
                      value_type_name(kv->type), expected);
}

/* Reads an integer value of any width. Returns false if the value is not an
 * integer; *is_neg tells whether *mag is the magnitude of a negative value. */
static bool read_int(const gguf_kv *kv, uint64_t *mag, bool *is_neg)
{
    int64_t s;
    *is_neg = false;
    *mag = 0;
    switch (kv->type) {
    case GGUF_TYPE_UINT8: { uint8_t v; memcpy(&v, kv->val, 1); *mag = v; return true; }
    case GGUF_TYPE_UINT16: { uint16_t v; memcpy(&v, kv->val, 2); *mag = v; return true; }
    case GGUF_TYPE_UINT32: { uint32_t v; memcpy(&v, kv->val, 4); *mag = v; return true; }
    case GGUF_TYPE_UINT64: memcpy(mag, kv->val, 8); return true;
    case GGUF_TYPE_INT8: { int8_t v; memcpy(&v, kv->val, 1); s = v; break; }
    case GGUF_TYPE_INT16: { int16_t v; memcpy(&v, kv->val, 2); s = v; break; }
    case GGUF_TYPE_INT32: { int32_t v; memcpy(&v, kv->val, 4); s = v; break; }
    case GGUF_TYPE_INT64: memcpy(&s, kv->val, 8); break;
    default: return false;
    }
    *is_neg = s < 0;
    *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return true;
}

int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out)
{
    const gguf_kv *kv;
    uint64_t mag;
    bool neg;
    int rc = lookup(g, key, &kv);
    if (rc < 0) return rc;
    if (!read_int(kv, &mag, &neg)) return wrong_type(kv, "an integer");
    if (neg || mag > UINT32_MAX)
        return weft_error(WEFT_EFORMAT, "gguf: key '%s': value %s%" PRIu64 " does not fit u32",
                          key, neg ? "-" : "", mag);
    *out = (uint32_t)mag;
    return 0;
}

int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out)
{
    const gguf_kv *kv;
    uint64_t mag;
    bool neg;
    int rc = lookup(g, key, &kv);
    if (rc < 0) return rc;
    if (!read_int(kv, &mag, &neg)) return wrong_type(kv, "an integer");
    if (!neg && mag > (uint64_t)INT64_MAX)
        return weft_error(WEFT_EFORMAT, "gguf: key '%s': value %" PRIu64 " does not fit i64",
                          key, mag);
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return 0;
}

int gguf_get_f32(const gguf_file *g, const char *key, float *out)
{
    const gguf_kv *kv;
    int rc = lookup(g, key, &kv);
    if (rc < 0) return rc;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        memcpy(out, kv->val, 4);
    } else if (kv->type == GGUF_TYPE_FLOAT64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
    } else {
        return wrong_type(kv, "f32 or f64");
    }
    return 0;
}

int gguf_get_bool(const gguf_file *g, const char *key, bool *out)
{
    const gguf_kv *kv;
    int rc = lookup(g, key, &kv);
    if (rc < 0) return rc;
    if (kv->type != GGUF_TYPE_BOOL) return wrong_type(kv, "bool");
    *out = kv->val[0] != 0;
    return 0;
}

int gguf_get_str(const gguf_file *g, const char *key, const char **out, size_t *len)
{
    const gguf_kv *kv;
    int rc = lookup(g, key, &kv);
    if (rc < 0) return rc;
    if (kv->type != GGUF_TYPE_STRING) return wrong_type(kv, "string");
    *out = (const char *)kv->val;
    *len = (size_t)kv->len;
    return 0;
}

/* For a string array *data is NULL (use gguf_get_arr_str); *type and *n are set. */
int gguf_get_arr(const gguf_file *g, const char *key, gguf_type *type, const void **data,
                 uint64_t *n)
{
    const gguf_kv *kv;
    int rc = lookup(g, key, &kv);
    if (rc < 0) return rc;
    if (kv->type != GGUF_TYPE_ARRAY) return wrong_type(kv, "array");
    *type = kv->arr_type;
    *data = kv->arr_type == GGUF_TYPE_STRING ? NULL : kv->val;
    *n = kv->n;
    return 0;
}

/* WEFT_EINVAL when i >= the array's length. */
int gguf_get_arr_str(const gguf_file *g, const char *key, uint64_t i, const char **out,
                     size_t *len)
{
    const gguf_kv *kv;
    uint64_t l;
    int rc = lookup(g, key, &kv);
    if (rc < 0) return rc;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return weft_error(WEFT_EFORMAT, "gguf: key '%s' is not an array of strings", key);
    if (i >= kv->n)
        return weft_error(WEFT_EINVAL, "gguf: key '%s': index %" PRIu64 " past the %" PRIu64
                          " strings", key, i, kv->n);
    const uint8_t *s = kv->val + kv->str_off[i];
    memcpy(&l, s - 8, 8);
    *out = (const char *)s;
    *len = (size_t)l;
    return 0;
}

int64_t gguf_n_tensors(const gguf_file *g) { return g->n_tensors; }

/* NULL when i is out of range. */
const gguf_tensor *gguf_tensor_at(const gguf_file *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name)
{
    int64_t i = index_find(&g->tensor_index, g, tensor_name_at, name);
    return i < 0 ? NULL : &g->tensors[i];
}

/* ---- writer -------------------------------------------------------------- */

/* Values are kept serialized (everything after the u32 value type) so that
 * saving is a copy. */
typedef struct {
    char *key;
    gguf_type type;
    uint8_t *bytes;
    size_t size;
} wkv;

typedef struct {
    char *name;
    int type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    void *data;
    size_t size;
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

gguf_writer *gguf_writer_create(void) { return weft_calloc(1, sizeof(gguf_writer)); }

void gguf_writer_destroy(gguf_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        weft_free(w->kv[i].key);
        weft_free(w->kv[i].bytes);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        weft_free(w->t[i].name);
        weft_free(w->t[i].data);
    }
    weft_free(w->kv);
    weft_free(w->t);
    weft_free(w);
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 16;
    void *p = weft_realloc(*arr, nc * elem);
    if (!p) return weft_error(WEFT_ENOMEM, "gguf writer: out of memory");
    *arr = p;
    *cap = nc;
    return 0;
}

/* Stores a serialized value under key, replacing an existing one. Takes
 * ownership of `bytes` in every case. */
static int writer_set(gguf_writer *w, const char *key, gguf_type type, uint8_t *bytes,
                      size_t size)
{
    int rc;
    if (!w || !key || !key[0]) {
        rc = weft_error(WEFT_EINVAL, "gguf writer: empty key");
        goto fail;
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            weft_free(w->kv[i].bytes);
            w->kv[i].type = type;
            w->kv[i].bytes = bytes;
            w->kv[i].size = size;
            return 0;
        }
    if ((rc = grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv)) < 0) goto fail;
    char *k = weft_strdup(key);
    if (!k) {
        rc = weft_error(WEFT_ENOMEM, "gguf writer: out of memory");
        goto fail;
    }
    w->kv[w->n_kv++] = (wkv){.key = k, .type = type, .bytes = bytes, .size = size};
    return 0;
fail:
    weft_free(bytes);
    return rc;
}

static int writer_set_scalar(gguf_writer *w, const char *key, gguf_type type, const void *v)
{
    size_t n = value_size(type);
    uint8_t *b = weft_malloc(n);
    if (!b) return weft_error(WEFT_ENOMEM, "gguf writer: out of memory");
    memcpy(b, v, n);
    return writer_set(w, key, type, b, n);
}

int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v)
{
    if (key && strcmp(key, "general.alignment") == 0 && !is_pow2(v))
        return weft_error(WEFT_EINVAL, "gguf writer: alignment %" PRIu32 " is not a power of two",
                          v);
    return writer_set_scalar(w, key, GGUF_TYPE_UINT32, &v);
}

int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v)
{
    return writer_set_scalar(w, key, GGUF_TYPE_INT32, &v);
}

int gguf_writer_set_f32(gguf_writer *w, const char *key, float v)
{
    return writer_set_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}

int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return writer_set_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v)
{
    if (!v) return weft_error(WEFT_EINVAL, "gguf writer: NULL string for '%s'", key ? key : "");
    uint64_t len = strlen(v);
    uint8_t *b = weft_malloc(8 + len);
    if (!b) return weft_error(WEFT_ENOMEM, "gguf writer: out of memory");
    memcpy(b, &len, 8);
    memcpy(b + 8, v, len);
    return writer_set(w, key, GGUF_TYPE_STRING, b, 8 + len);
}

int gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type type, const void *data,
                        uint64_t n)
{
    size_t es = value_size(type);
    uint32_t t = type;
    if (es == 0)
        return weft_error(WEFT_EINVAL, "gguf writer: '%s': array element type %d is not numeric",
                          key ? key : "", (int)type);
    if (n && !data) return weft_error(WEFT_EINVAL, "gguf writer: '%s': NULL array", key ? key : "");
    if (n > (SIZE_MAX - 12) / es)
        return weft_error(WEFT_EINVAL, "gguf writer: '%s': array too large", key ? key : "");
    uint8_t *b = weft_malloc(12 + n * es);
    if (!b) return weft_error(WEFT_ENOMEM, "gguf writer: out of memory");
    memcpy(b, &t, 4);
    memcpy(b + 4, &n, 8);
    if (n) memcpy(b + 12, data, n * es);
    return writer_set(w, key, GGUF_TYPE_ARRAY, b, 12 + n * es);
}

int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    size_t size = 12;
    uint32_t t = GGUF_TYPE_STRING;
    if (n && !v) return weft_error(WEFT_EINVAL, "gguf writer: '%s': NULL array", key ? key : "");
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i])
            return weft_error(WEFT_EINVAL, "gguf writer: '%s': string %" PRIu64 " is NULL",
                              key ? key : "", i);
        size += 8 + strlen(v[i]);
    }
    uint8_t *b = weft_malloc(size);
    if (!b) return weft_error(WEFT_ENOMEM, "gguf writer: out of memory");
    uint8_t *p = b + 12;
    memcpy(b, &t, 4);
    memcpy(b + 4, &n, 8);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = strlen(v[i]);
        memcpy(p, &len, 8);
        memcpy(p + 8, v[i], len);
        p += 8 + len;
    }
    return writer_set(w, key, GGUF_TYPE_ARRAY, b, size);
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, int type, uint32_t n_dims,
                           const int64_t *ne, const void *data, size_t size)
{
    int rc;
    if (!w || !name || !ne || (size && !data))
        return weft_error(WEFT_EINVAL, "gguf writer: add_tensor: bad arguments");
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > GGUF_MAX_NAME)
        return weft_error(WEFT_EINVAL, "gguf writer: tensor name '%s' must be 1..%d bytes", name,
                          GGUF_MAX_NAME);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return weft_error(WEFT_EINVAL, "gguf writer: duplicate tensor '%s'", name);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return weft_error(WEFT_EINVAL, "gguf writer: tensor '%s': n_dims %" PRIu32
                          " not in 1..%d", name, n_dims, GGUF_MAX_DIMS);
    size_t bs = type >= 0 && type < WEFT_TYPE_COUNT ? quant_block_size(type) : 0;
    size_t ts = type >= 0 && type < WEFT_TYPE_COUNT ? quant_type_size(type) : 0;
    if (!bs || !ts)
        return weft_error(WEFT_EUNSUPPORTED, "gguf writer: tensor '%s': unknown type %d", name,
                          type);
    uint64_t expect = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || (d == 0 && ne[0] % (int64_t)bs) ||
            __builtin_mul_overflow(expect, (uint64_t)ne[d], &expect))
            return weft_error(WEFT_EINVAL, "gguf writer: tensor '%s': bad ne[%" PRIu32 "] %" PRId64,
                              name, d, ne[d]);
    }
    if (__builtin_mul_overflow(expect / bs, (uint64_t)ts, &expect) || expect != size)
        return weft_error(WEFT_EINVAL,
                          "gguf writer: tensor '%s': %zu data bytes, expected %" PRIu64, name,
                          size, expect);

    if ((rc = grow((void **)&w->t, &w->cap_t, w->n_t, sizeof *w->t)) < 0) return rc;
    wtensor t = {.type = type, .n_dims = n_dims, .size = size};
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t.ne[d] = d < (int)n_dims ? ne[d] : 1;
    t.name = weft_strdup(name);
    t.data = weft_malloc(size ? size : 1);
    if (!t.name || !t.data) {
        weft_free(t.name);
        weft_free(t.data);
        return weft_error(WEFT_ENOMEM, "gguf writer: out of memory");
    }
    memcpy(t.data, data, size);
    w->t[w->n_t++] = t;
    return 0;
}

/* fwrite helpers: errors are collected in ferror() and checked once. */
static void put(FILE *f, const void *p, size_t n) { fwrite(p, 1, n, f); }
static void put_u32(FILE *f, uint32_t v) { put(f, &v, 4); }
static void put_u64(FILE *f, uint64_t v) { put(f, &v, 8); }
static void put_str(FILE *f, const char *s)
{
    put_u64(f, strlen(s));
    put(f, s, strlen(s));
}
static void put_pad(FILE *f, uint64_t *pos, size_t align)
{
    static const uint8_t zeros[64];
    uint64_t pad = align_up(*pos, align) - *pos;
    *pos += pad;
    while (pad) {
        size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        put(f, zeros, k);
        pad -= k;
    }
}

int gguf_writer_save(gguf_writer *w, const char *path)
{
    size_t align = GGUF_DEFAULT_ALIGNMENT;
    uint64_t pos = 24, data_pos = 0;
    int rc = 0;
    FILE *f = NULL;

    if (!w || !path) return weft_error(WEFT_EINVAL, "gguf_writer_save: bad arguments");
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, "general.alignment") == 0) {
            uint32_t a;
            if (w->kv[i].type != GGUF_TYPE_UINT32)
                return weft_error(WEFT_EINVAL, "gguf writer: general.alignment must be u32");
            memcpy(&a, w->kv[i].bytes, 4);
            align = a;
        }

    f = fopen(path, "wb");
    if (!f) return weft_error(WEFT_EIO, "gguf writer: cannot create %s: %s", path, strerror(errno));
    put_u32(f, GGUF_MAGIC);
    put_u32(f, 3);
    put_u64(f, w->n_t);
    put_u64(f, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(f, w->kv[i].key);
        put_u32(f, w->kv[i].type);
        put(f, w->kv[i].bytes, w->kv[i].size);
        pos += 8 + strlen(w->kv[i].key) + 4 + w->kv[i].size;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(f, t->name);
        put_u32(f, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(f, (uint64_t)t->ne[d]);
        put_u32(f, (uint32_t)t->type);
        put_u64(f, data_pos);
        data_pos = align_up(data_pos + t->size, align);
        pos += 8 + strlen(t->name) + 4 + 8ull * t->n_dims + 4 + 8;
    }
    put_pad(f, &pos, align);
    for (size_t i = 0; i < w->n_t; i++) {
        put(f, w->t[i].data, w->t[i].size);
        pos += w->t[i].size;
        put_pad(f, &pos, align);
    }
    if (ferror(f)) rc = weft_error(WEFT_EIO, "gguf writer: writing %s failed", path);
    if (fclose(f) != 0 && rc == 0)
        rc = weft_error(WEFT_EIO, "gguf writer: writing %s failed: %s", path, strerror(errno));
    return rc;
}

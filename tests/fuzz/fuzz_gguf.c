/* libFuzzer target for the GGUF reader: any input must either be rejected
 * cleanly or, once accepted, be walkable in full — every key through every
 * getter, every array element, every string and every tensor data byte —
 * without reading out of bounds (ASan) or undefined behaviour (UBSan).
 * Build and run: see tests/fuzz/README.md. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "weft/gguf.h"

static volatile uint64_t sink;

static uint64_t touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++) h = h * 31 + b[i];
    return h;
}

static void walk_kv(const gguf_file *g, int64_t i)
{
    const char *key = gguf_kv_key(g, i);
    uint64_t h = strlen(key);
    uint32_t u32;
    int64_t i64;
    float f;
    bool b;
    const char *s;
    size_t len;
    gguf_type t;
    const void *data;
    uint64_t n;

    if (gguf_find_key(g, key) != i) __builtin_trap();
    h += (uint64_t)gguf_kv_type(g, i) + gguf_kv_arr_type(g, i) + gguf_kv_arr_len(g, i);
    if (gguf_get_u32(g, key, &u32) == 0) h += u32;
    if (gguf_get_i64(g, key, &i64) == 0) h += (uint64_t)i64;
    if (gguf_get_f32(g, key, &f) == 0) h += (uint64_t)(f == f);
    if (gguf_get_bool(g, key, &b) == 0) h += b;
    if (gguf_get_str(g, key, &s, &len) == 0) h += touch(s, len);
    if (gguf_get_arr(g, key, &t, &data, &n) == 0) {
        if (t == GGUF_TYPE_STRING) {
            for (uint64_t k = 0; k < n; k++) {
                if (gguf_get_arr_str(g, key, k, &s, &len) != 0) __builtin_trap();
                h += touch(s, len);
            }
            if (gguf_get_arr_str(g, key, n, &s, &len) == 0) __builtin_trap();
        } else {
            static const size_t esize[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
            if ((unsigned)t >= sizeof esize / sizeof *esize || !esize[t]) __builtin_trap();
            h += touch(data, n * esize[t]);
        }
    }
    sink += h;
}

static void walk_tensor(const gguf_file *g, int64_t i)
{
    const gguf_tensor *t = gguf_tensor_at(g, i);
    if (!t || gguf_find_tensor(g, t->name) != t) __builtin_trap();
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS || t->offset % gguf_alignment(g))
        __builtin_trap();
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        if (t->ne[d] < 1) __builtin_trap();
    sink += touch(t->data, t->size) + (uint64_t)t->type;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *g = NULL;
    if (gguf_open_mem(data, size, &g) != 0) {
        if (g) __builtin_trap();
        return 0;
    }
    sink += gguf_version(g);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) walk_kv(g, i);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) walk_tensor(g, i);
    if (gguf_kv_key(g, gguf_n_kv(g)) || gguf_tensor_at(g, gguf_n_tensors(g))) __builtin_trap();
    gguf_close(g);
    return 0;
}

/*
 * weft/gguf.h — reader for GGUF model files, versions 2 and 3.
 *
 * File format (all little-endian):
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv × { string key | u32 value_type | value }
 *   n_tensors × { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   padding to `general.alignment` (default 32) | tensor data
 * A string is u64 length + bytes (no NUL). An array value is u32 elem_type |
 * u64 count | elements. Tensor offsets are relative to the start of the data
 * section and must be multiples of the alignment.
 *
 * gguf_open() maps the file and validates all of it before returning: magic,
 * version, counts, every string and array length, value types, tensor
 * dimensions, types, offsets and sizes against the file size, and duplicate
 * keys or tensor names. A bad file is rejected with WEFT_EFORMAT (or
 * WEFT_EUNSUPPORTED for an unknown tensor type) and weft_last_error() names
 * the problem. After a successful open no getter can read out of bounds.
 */
#ifndef WEFT_GGUF_H
#define WEFT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
} gguf_type;

#define GGUF_MAX_DIMS 4

typedef struct gguf_tensor {
    const char *name;     /* NUL-terminated copy, owned by the gguf_file */
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] = innermost (row length); unused dims = 1 */
    int type;             /* GGML type id (see kernels/quant.h) */
    uint64_t offset;      /* from the start of the data section */
    size_t size;          /* bytes */
    const void *data;     /* points into the mapping; valid until gguf_close */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Maps and validates `path`. On success *out owns the mapping. */
WEFT_API int gguf_open(const char *path, gguf_file **out);
/* Validates a GGUF image in memory; `data` is borrowed and must outlive *out. */
WEFT_API int gguf_open_mem(const void *data, size_t size, gguf_file **out);
WEFT_API void gguf_close(gguf_file *g);

WEFT_API uint32_t gguf_version(const gguf_file *g);
WEFT_API size_t gguf_alignment(const gguf_file *g);

/* Metadata. Keys are looked up by exact name. */
WEFT_API int64_t gguf_n_kv(const gguf_file *g);
WEFT_API const char *gguf_kv_key(const gguf_file *g, int64_t i);   /* NUL-terminated */
WEFT_API int64_t gguf_find_key(const gguf_file *g, const char *key); /* -1 if absent */
WEFT_API gguf_type gguf_kv_type(const gguf_file *g, int64_t i);
/* For arrays: element type and count. */
WEFT_API gguf_type gguf_kv_arr_type(const gguf_file *g, int64_t i);
WEFT_API uint64_t gguf_kv_arr_len(const gguf_file *g, int64_t i);

/* Typed getters by key. Return 0, WEFT_ENOTFOUND if the key is absent, or
 * WEFT_EFORMAT if its value has an incompatible type. Integer getters accept
 * any integer type whose value fits; gguf_get_f32 accepts f32 and f64. */
WEFT_API int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out);
WEFT_API int gguf_get_i64(const gguf_file *g, const char *key, int64_t *out);
WEFT_API int gguf_get_f32(const gguf_file *g, const char *key, float *out);
WEFT_API int gguf_get_bool(const gguf_file *g, const char *key, bool *out);
/* *out points into the mapping, *len bytes, not NUL-terminated. */
WEFT_API int gguf_get_str(const gguf_file *g, const char *key, const char **out, size_t *len);

/* Arrays by key. Numeric: *data points into the mapping (may be unaligned:
 * read with memcpy), *n elements of *type. */
WEFT_API int gguf_get_arr(const gguf_file *g, const char *key, gguf_type *type,
                          const void **data, uint64_t *n);
/* String arrays: element i of the array under key. */
WEFT_API int gguf_get_arr_str(const gguf_file *g, const char *key, uint64_t i,
                              const char **out, size_t *len);

/* Tensors. */
WEFT_API int64_t gguf_n_tensors(const gguf_file *g);
WEFT_API const gguf_tensor *gguf_tensor_at(const gguf_file *g, int64_t i);
WEFT_API const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name); /* NULL if absent */

/* Writer, for tests and tools that build small GGUF files. Values are copied.
 * gguf_writer_save() writes version 3 with alignment 32 (or the value set under
 * general.alignment). Tensor data must be exactly the size the type and
 * dims imply. */
typedef struct gguf_writer gguf_writer;
WEFT_API gguf_writer *gguf_writer_create(void);
WEFT_API void gguf_writer_destroy(gguf_writer *w);
WEFT_API int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
WEFT_API int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
WEFT_API int gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
WEFT_API int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
WEFT_API int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
WEFT_API int gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type type,
                                 const void *data, uint64_t n);
WEFT_API int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v,
                                     uint64_t n);
WEFT_API int gguf_writer_add_tensor(gguf_writer *w, const char *name, int type,
                                    uint32_t n_dims, const int64_t *ne, const void *data,
                                    size_t size);
WEFT_API int gguf_writer_save(gguf_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif

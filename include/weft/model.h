/*
 * weft/model.h — load a llama-family GGUF model and run its forward pass over
 * token batches on the CPU.
 *
 * A weft_model holds the mapped weights, hyper-parameters and tokenizer; it is
 * read-only after loading and may be shared by several contexts. A weft_ctx
 * holds what a forward pass writes: the KV cache (a pool of fixed-size blocks
 * with a block table per sequence), scratch buffers and the compute threads.
 * A context is used by one thread at a time.
 *
 * Supported: architectures llama (SmolLM2, TinyLlama, Llama 2/3, Mistral) and
 * qwen2 (QKV biases, NeoX RoPE); tied or separate output embeddings; weight
 * types F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K.
 */
#ifndef WEFT_MODEL_H
#define WEFT_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/common.h"
#include "weft/gguf.h"
#include "weft/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { WEFT_ARCH_LLAMA = 0, WEFT_ARCH_QWEN2 = 1 } weft_arch;
typedef enum { WEFT_ROPE_NORM = 0, WEFT_ROPE_NEOX = 2 } weft_rope_type;

typedef struct weft_hparams {
    weft_arch arch;
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t dim;        /* embedding length */
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;   /* per head (key_length) */
    int32_t ffn_dim;
    int32_t rope_dim;   /* rotated dimensions per head */
    weft_rope_type rope_type;
    float rope_theta;
    float rope_freq_scale; /* 1 / linear scaling factor */
    float rms_eps;
} weft_hparams;

typedef struct weft_model weft_model;

/* Loads and validates the model at `path` (weights stay mmap'd). Errors:
 * WEFT_EIO, WEFT_EFORMAT (corrupt file, missing tensor, wrong shape),
 * WEFT_EUNSUPPORTED (architecture, weight type or tokenizer weft lacks);
 * weft_last_error() says which. */
WEFT_API int weft_model_load(const char *path, weft_model **out);
WEFT_API void weft_model_free(weft_model *m);

WEFT_API const weft_hparams *weft_model_hparams(const weft_model *m);
/* Borrowed; lives as long as the model. */
WEFT_API const tok_vocab *weft_model_vocab(const weft_model *m);
/* "llama", "qwen2". */
WEFT_API const char *weft_model_arch_name(const weft_model *m);
/* general.name if present, else the file name. Borrowed. */
WEFT_API const char *weft_model_name(const weft_model *m);
/* 64-bit content fingerprint of the weights and hyper-parameters: equal for
 * the same file, different for different models (keys cached KV). */
WEFT_API uint64_t weft_model_fingerprint(const weft_model *m);
/* Path of the default model: $WEFT_MODEL, else
 * ${WEFT_MODEL_DIR:-~/.cache/weft/models}/SmolLM2-135M-Instruct.Q4_1.gguf.
 * Writes into buf; returns buf. */
WEFT_API const char *weft_default_model_path(char *buf, size_t cap);

typedef struct weft_ctx weft_ctx;

typedef struct weft_ctx_params {
    int32_t n_ctx;     /* max positions per sequence (0 = min(train ctx, 4096)) */
    int32_t n_batch;   /* max tokens per forward pass; larger batches are split */
    int32_t n_threads; /* compute threads (0 = number of cores) */
    int32_t n_seq_max; /* sequences that can hold KV at once */
    size_t kv_mem;     /* bytes for the KV pool (0 = enough for n_seq_max × n_ctx) */
} weft_ctx_params;

WEFT_API weft_ctx_params weft_ctx_default_params(void);
WEFT_API int weft_ctx_create(const weft_model *m, const weft_ctx_params *p, weft_ctx **out);
WEFT_API void weft_ctx_destroy(weft_ctx *c);
WEFT_API const weft_ctx_params *weft_ctx_params_of(const weft_ctx *c);

/* One forward pass over n tokens. Token i has id tokens[i], position pos[i]
 * in sequence seq[i]; its K/V are stored in the cache. A sequence's positions
 * must be consecutive from 0 (what it already holds, then this batch).
 * want_logits[i] != 0 asks for token i's logits (NULL: only the last token).
 * Returns 0, WEFT_EINVAL (bad id/seq/pos), WEFT_ERANGE (position >= n_ctx),
 * WEFT_ENOKV (pool exhausted). On error the cache is left as before the call
 * for every sequence. */
typedef struct weft_batch {
    int32_t n;
    const int32_t *tokens;
    const int32_t *pos;
    const int32_t *seq;
    const int8_t *want_logits;
    /* prompt[i] != 0 marks token i as given (part of a prompt), not
     * generated. Prompt tokens may take faster kernels whose results differ
     * from the others' in the last bits (on CPUs with AMX-BF16, attention on
     * tiles), so a token must be marked the same way each time it is
     * computed for its results to repeat. NULL: no token is a prompt token. */
    const int8_t *prompt;
} weft_batch;
WEFT_API int weft_decode(weft_ctx *c, const weft_batch *b);

/* Logits of the j-th token that asked for them in the last weft_decode
 * (j in order of the batch). Borrowed; valid until the next weft_decode.
 * NULL if j is out of range. */
WEFT_API const float *weft_get_logits(const weft_ctx *c, int32_t j);
WEFT_API int32_t weft_n_logits(const weft_ctx *c);

/* Number of positions sequence `seq` holds. */
WEFT_API int32_t weft_seq_len(const weft_ctx *c, int32_t seq);
/* Drops positions >= keep of sequence `seq` (keep = 0 clears it). */
WEFT_API int weft_seq_truncate(weft_ctx *c, int32_t seq, int32_t keep);
/* Makes `dst` share src's first n positions (copy-on-write of blocks). */
WEFT_API int weft_seq_fork(weft_ctx *c, int32_t src, int32_t dst, int32_t n);

/* Timing of the forward passes since creation (or the last reset). */
typedef struct weft_perf {
    double t_prefill; /* seconds in passes of more than one token */
    double t_decode;  /* seconds in passes of one token */
    int64_t n_prefill_tokens;
    int64_t n_decode_tokens;
} weft_perf;
WEFT_API weft_perf weft_ctx_perf(const weft_ctx *c);
WEFT_API void weft_ctx_perf_reset(weft_ctx *c);

#ifdef __cplusplus
}
#endif
#endif

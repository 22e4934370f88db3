/* engine/model_internal.h — the model's weights as the forward pass sees them.
 * Shared by engine/model.c (loading) and engine/forward.c (running). */
#ifndef WEFT_ENGINE_MODEL_INTERNAL_H
#define WEFT_ENGINE_MODEL_INTERNAL_H

#include "kernels/cpu/ops.h"
#include "weft/model.h"

typedef struct weft_layer {
    const float *attn_norm; /* (dim) */
    op_matrix wq;           /* (n_head * head_dim, dim) */
    op_matrix wk;           /* (n_head_kv * head_dim, dim) */
    op_matrix wv;           /* (n_head_kv * head_dim, dim) */
    op_matrix wo;           /* (dim, n_head * head_dim) */
    const float *bq, *bk, *bv; /* optional biases (qwen2) */
    const float *ffn_norm;  /* (dim) */
    op_matrix w_gate;       /* (ffn_dim, dim) */
    op_matrix w_up;         /* (ffn_dim, dim) */
    op_matrix w_down;       /* (dim, ffn_dim) */
} weft_layer;

struct weft_model {
    gguf_file *gguf;
    weft_hparams hp;
    tok_vocab *vocab;
    char *name;
    uint64_t fingerprint;
    op_matrix tok_embd;     /* (n_vocab, dim): row i = embedding of token i */
    op_matrix output;       /* (n_vocab, dim); the same as tok_embd when tied */
    const float *output_norm; /* (dim) */
    const float *rope_freqs;  /* (rope_dim / 2) or NULL */
    weft_layer *layers;     /* (n_layer) */
    struct weft_arena *arena; /* the repacked weight copies (on 2 MB pages), or NULL */
    /* 1-D tensors stored as F16/BF16 in the file, converted to f32 and owned. */
    float **owned;
    int n_owned;
};

#endif

/*
 * tests/tiny_model.h — writes small GGUF models with random weights for the
 * unit tests: either architecture, any weight type, either tokenizer kind.
 * Header-only (static functions); include once per test program.
 */
#ifndef WEFT_TESTS_TINY_MODEL_H
#define WEFT_TESTS_TINY_MODEL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/quant.h"
#include "weft/gguf.h"
#include "weft/model.h"

typedef struct tiny_spec {
    const char *arch;     /* "llama" or "qwen2" */
    int weight_type;      /* type of the 2-D weights */
    int embd_type;        /* type of token_embd */
    int tied;             /* no output.weight */
    int spm;              /* SentencePiece ("llama") tokenizer instead of gpt2 */
    int dim, n_layer, n_head, n_head_kv, ffn_dim, n_vocab, n_ctx;
    float rope_theta;
    uint32_t seed;
    const char *skip_tensor; /* leave this tensor out (bad-input tests) */
    const char *arch_override;
    const char *chat_template; /* tokenizer.chat_template (gpt2 tokenizer), or none */
} tiny_spec;

static tiny_spec tiny_default(void)
{
    tiny_spec s = {.arch = "llama", .weight_type = WEFT_TYPE_F32, .embd_type = WEFT_TYPE_F32,
                   .tied = 1, .spm = 0, .dim = 256, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
                   .ffn_dim = 512, .n_vocab = 320, .n_ctx = 256, .rope_theta = 10000.0f,
                   .seed = 1};
    return s;
}

static uint32_t tiny_rng(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static float tiny_randf(uint32_t *s) { return ((float)(tiny_rng(s) >> 8) / 16777216.0f) * 2.0f - 1.0f; }

/* Adds a tensor of random values in [-scale, scale] (or `fill` + noise). */
static int tiny_add(gguf_writer *w, const tiny_spec *sp, uint32_t *rng, const char *name, int type,
                    int64_t n_in, int64_t n_out, float scale, float fill)
{
    if (sp->skip_tensor && strcmp(sp->skip_tensor, name) == 0) return 0;
    const int64_t n = n_in * n_out;
    float *v = malloc((size_t)n * sizeof *v);
    const size_t bytes = quant_row_size(type, n_in) * (size_t)n_out;
    void *q = malloc(bytes);
    if (!v || !q) return -1;
    for (int64_t i = 0; i < n; i++) v[i] = fill + scale * tiny_randf(rng);
    if (!quant_type_supported(type)) /* for tests of unsupported types: bytes only */
        memset(q, 0, bytes);
    else
        for (int64_t r = 0; r < n_out; r++)
            if (quant_quantize_row((weft_type)type, v + r * n_in,
                                   (char *)q + (size_t)r * quant_row_size(type, n_in), n_in) != 0)
                return -1;
    int64_t ne[2] = {n_in, n_out};
    int rc = gguf_writer_add_tensor(w, name, type, n_out == 1 ? 1 : 2, ne, q, bytes);
    free(v);
    free(q);
    return rc;
}

/* GPT-2 byte → unicode mapping, as UTF-8 into out (needs 3 bytes). */
static void tiny_byte_unicode(int b, char *out)
{
    int cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
        cp = b;
    } else {
        /* the others map to 256 + their rank among the excluded bytes */
        int rank = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) rank++;
        cp = 256 + rank;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* Tokenizer metadata: gpt2 = 256 byte tokens + merges of a few pairs + specials;
 * spm = <unk> <s> </s> + 256 byte-fallback tokens + a few pieces. n_vocab
 * tokens in all (padded with user-defined filler). */
static int tiny_add_tokenizer(gguf_writer *w, const tiny_spec *sp)
{
    const int n = sp->n_vocab;
    char **toks = calloc((size_t)n, sizeof *toks);
    int32_t *types = calloc((size_t)n, sizeof *types);
    float *scores = calloc((size_t)n, sizeof *scores);
    if (!toks || !types || !scores) return -1;
    int k = 0;
    const char *merges[8];
    int n_merges = 0;
    if (!sp->spm) {
        for (int b = 0; b < 256 && k < n; b++, k++) {
            toks[k] = malloc(4);
            tiny_byte_unicode(b, toks[k]);
            types[k] = 1;
        }
        const char *extra[] = {"th", "the", "Ġt", "Ġthe", "he"};
        const char *mg[] = {"t h", "th e", "Ġ t", "Ġt he", "h e"};
        for (int i = 0; i < 5 && k < n; i++, k++) {
            toks[k] = strdup(extra[i]);
            types[k] = 1;
            merges[n_merges++] = mg[i];
        }
        const char *specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
        for (int i = 0; i < 3 && k < n; i++, k++) {
            toks[k] = strdup(specials[i]);
            types[k] = 3;
        }
    } else {
        const char *specials[] = {"<unk>", "<s>", "</s>"};
        const int st[] = {2, 3, 3};
        for (int i = 0; i < 3; i++, k++) {
            toks[k] = strdup(specials[i]);
            types[k] = st[i];
        }
        for (int b = 0; b < 256 && k < n; b++, k++) {
            toks[k] = malloc(8);
            snprintf(toks[k], 8, "<0x%02X>", b);
            types[k] = 6;
        }
        const char *pieces[] = {"\xe2\x96\x81", "\xe2\x96\x81t", "\xe2\x96\x81the", "h", "e", "t", "th", "the"};
        for (int i = 0; i < 8 && k < n; i++, k++) {
            toks[k] = strdup(pieces[i]);
            types[k] = 1;
            scores[k] = -(float)i;
        }
    }
    for (int f = 0; k < n; k++, f++) {
        toks[k] = malloc(24);
        snprintf(toks[k], 24, "<filler_%d>", f);
        types[k] = 4;
        scores[k] = -100.0f;
    }
    int rc = 0;
    rc |= gguf_writer_set_str(w, "tokenizer.ggml.model", sp->spm ? "llama" : "gpt2");
    if (!sp->spm) rc |= gguf_writer_set_str(w, "tokenizer.ggml.pre", "smollm");
    if (sp->chat_template) rc |= gguf_writer_set_str(w, "tokenizer.chat_template", sp->chat_template);
    rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, (uint64_t)n);
    rc |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n);
    if (sp->spm)
        rc |= gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, (uint64_t)n);
    else
        rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, (uint64_t)n_merges);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", sp->spm ? 1 : 256 + 5);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", sp->spm ? 2 : 256 + 5 + 2);
    rc |= gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", sp->spm ? true : false);
    for (int i = 0; i < n; i++) free(toks[i]);
    free(toks);
    free(types);
    free(scores);
    return rc;
}

/* Writes the model to `path`. Returns 0 on success. */
static int tiny_write(const tiny_spec *sp, const char *path)
{
    gguf_writer *w = gguf_writer_create();
    if (!w) return -1;
    uint32_t rng = sp->seed ? sp->seed : 1;
    const char *arch = sp->arch_override ? sp->arch_override : sp->arch;
    char key[128];
    int rc = gguf_writer_set_str(w, "general.architecture", arch);
    rc |= gguf_writer_set_str(w, "general.name", "tiny test model");
#define KEY(s) (snprintf(key, sizeof key, "%s.%s", arch, s), key)
    rc |= gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)sp->n_layer);
    rc |= gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)sp->n_ctx);
    rc |= gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)sp->dim);
    rc |= gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)sp->ffn_dim);
    rc |= gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)sp->n_head);
    rc |= gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)sp->n_head_kv);
    rc |= gguf_writer_set_f32(w, KEY("rope.freq_base"), sp->rope_theta);
    rc |= gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
#undef KEY
    rc |= tiny_add_tokenizer(w, sp);
    const int hd = sp->dim / sp->n_head, kv = sp->n_head_kv * hd, wt = sp->weight_type;
    const float ws = 0.08f; /* keeps activations O(1) through the layers */
    rc |= tiny_add(w, sp, &rng, "token_embd.weight", sp->embd_type, sp->dim, sp->n_vocab, 1.0f, 0);
    rc |= tiny_add(w, sp, &rng, "output_norm.weight", WEFT_TYPE_F32, sp->dim, 1, 0.2f, 1.0f);
    if (!sp->tied) rc |= tiny_add(w, sp, &rng, "output.weight", wt, sp->dim, sp->n_vocab, ws, 0);
    for (int l = 0; l < sp->n_layer; l++) {
        char n[64];
#define T(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), n)
        rc |= tiny_add(w, sp, &rng, T("attn_norm.weight"), WEFT_TYPE_F32, sp->dim, 1, 0.2f, 1.0f);
        rc |= tiny_add(w, sp, &rng, T("attn_q.weight"), wt, sp->dim, sp->dim, ws, 0);
        rc |= tiny_add(w, sp, &rng, T("attn_k.weight"), wt, sp->dim, kv, ws, 0);
        rc |= tiny_add(w, sp, &rng, T("attn_v.weight"), wt, sp->dim, kv, ws, 0);
        rc |= tiny_add(w, sp, &rng, T("attn_output.weight"), wt, sp->dim, sp->dim, ws, 0);
        if (strcmp(sp->arch, "qwen2") == 0) {
            rc |= tiny_add(w, sp, &rng, T("attn_q.bias"), WEFT_TYPE_F32, sp->dim, 1, 0.1f, 0);
            rc |= tiny_add(w, sp, &rng, T("attn_k.bias"), WEFT_TYPE_F32, kv, 1, 0.1f, 0);
            rc |= tiny_add(w, sp, &rng, T("attn_v.bias"), WEFT_TYPE_F32, kv, 1, 0.1f, 0);
        }
        rc |= tiny_add(w, sp, &rng, T("ffn_norm.weight"), WEFT_TYPE_F32, sp->dim, 1, 0.2f, 1.0f);
        rc |= tiny_add(w, sp, &rng, T("ffn_gate.weight"), wt, sp->dim, sp->ffn_dim, ws, 0);
        rc |= tiny_add(w, sp, &rng, T("ffn_up.weight"), wt, sp->dim, sp->ffn_dim, ws, 0);
        rc |= tiny_add(w, sp, &rng, T("ffn_down.weight"), wt, sp->ffn_dim, sp->dim, ws, 0);
#undef T
    }
    if (rc == 0) rc = gguf_writer_save(w, path);
    gguf_writer_destroy(w);
    return rc;
}

/* A temp path unique to this process. */
static const char *tiny_path(char *buf, size_t cap, const char *tag)
{
    snprintf(buf, cap, "/tmp/weft-test-%d-%s.gguf", (int)getpid(), tag);
    return buf;
}

/* The serving engine tests' model — Q4_1 layers and a Q8_0 embedding, the
 * default model's types — written to tiny_path(path, cap, tag) and loaded.
 * NULL on failure (weft_last_error says why). The caller frees the model
 * and unlinks path. */
static inline weft_model *tiny_engine_model(char *path, size_t cap, const char *tag)
{
    tiny_spec sp = tiny_default();
    sp.weight_type = WEFT_TYPE_Q4_1;
    sp.embd_type = WEFT_TYPE_Q8_0;
    tiny_path(path, cap, tag);
    weft_model *m = NULL;
    if (tiny_write(&sp, path) != 0 || weft_model_load(path, &m) != 0) return NULL;
    return m;
}

#endif

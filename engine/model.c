/* Loading a llama-family model from GGUF: hyper-parameters, weight tensors
 * (validated against the hyper-parameters, left in the mapping), tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/arena.h"
#include "engine/model_internal.h"
#include "kernels/cpu/amx.h"

const char *weft_default_model_path(char *buf, size_t cap)
{
    const char *m = getenv("WEFT_MODEL");
    if (m && *m) {
        snprintf(buf, cap, "%s", m);
        return buf;
    }
    const char *dir = getenv("WEFT_MODEL_DIR");
    const char *home = getenv("HOME");
    if (dir && *dir)
        snprintf(buf, cap, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir);
    else
        snprintf(buf, cap, "%s/.cache/weft/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                 home ? home : ".");
    return buf;
}

/* Reads an integer hyper-parameter "<arch>.<key>"; def < 0 means required. */
static int hp_int(const gguf_file *g, const char *arch, const char *key, int64_t def,
                  int64_t lo, int64_t hi, int32_t *out)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int64_t v;
    int rc = gguf_get_i64(g, full, &v);
    if (rc == WEFT_ENOTFOUND) {
        if (def < 0) return weft_error(WEFT_EFORMAT, "missing hyper-parameter %s", full);
        v = def;
    } else if (rc < 0) {
        return weft_error(WEFT_EFORMAT, "hyper-parameter %s is not an integer", full);
    }
    if (v < lo || v > hi)
        return weft_error(WEFT_EFORMAT, "hyper-parameter %s = %lld is out of range [%lld, %lld]",
                          full, (long long)v, (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return 0;
}

static int hp_float(const gguf_file *g, const char *arch, const char *key, float def,
                    bool required, float *out)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = gguf_get_f32(g, full, out);
    if (rc == WEFT_ENOTFOUND) {
        if (required) return weft_error(WEFT_EFORMAT, "missing hyper-parameter %s", full);
        *out = def;
        return 0;
    }
    if (rc < 0) return weft_error(WEFT_EFORMAT, "hyper-parameter %s is not a number", full);
    if (!(*out == *out)) return weft_error(WEFT_EFORMAT, "hyper-parameter %s is NaN", full);
    return 0;
}

/* A 2-D weight: ne = {n_in, n_out}. */
static int get_matrix(weft_model *m, const char *name, int64_t n_in, int64_t n_out,
                      bool optional, op_matrix *out)
{
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (optional) {
            memset(out, 0, sizeof *out);
            return 0;
        }
        return weft_error(WEFT_EFORMAT, "missing tensor %s", name);
    }
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        return weft_error(WEFT_EFORMAT,
                          "tensor %s has shape [%lld, %lld] (%u dims), expected [%lld, %lld]",
                          name, (long long)t->ne[0], (long long)t->ne[1], t->n_dims,
                          (long long)n_in, (long long)n_out);
    if (!quant_type_supported(t->type) || t->type == WEFT_TYPE_Q8_1 ||
        t->type == WEFT_TYPE_Q8_K)
        return weft_error(WEFT_EUNSUPPORTED, "tensor %s has weight type %s (%d), which weft does not support",
                          name, quant_type_name(t->type), t->type);
    out->data = t->data;
    out->type = (weft_type)t->type;
    out->n_in = n_in;
    out->n_out = n_out;
    out->row_bytes = quant_row_size(t->type, n_in);
    return 0;
}

/* A 1-D tensor of n values as f32 (converted and owned when stored otherwise). */
static int get_vector(weft_model *m, const char *name, int64_t n, bool optional,
                      const float **out)
{
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    *out = NULL;
    if (!t) return optional ? 0 : weft_error(WEFT_EFORMAT, "missing tensor %s", name);
    if (t->n_dims != 1 || t->ne[0] != n)
        return weft_error(WEFT_EFORMAT, "tensor %s has %lld values (%u dims), expected %lld",
                          name, (long long)t->ne[0], t->n_dims, (long long)n);
    if (t->type == WEFT_TYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        return 0;
    }
    if (!quant_type_supported(t->type))
        return weft_error(WEFT_EUNSUPPORTED, "tensor %s has type %s (%d)", name,
                          quant_type_name(t->type), t->type);
    float *v = weft_malloc((size_t)n * sizeof *v);
    float **grown = weft_realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *grown);
    if (!v || !grown) {
        weft_free(v);
        if (grown) m->owned = grown;
        return weft_error(WEFT_ENOMEM, "out of memory converting %s", name);
    }
    m->owned = grown;
    m->owned[m->n_owned++] = v;
    quant_dequantize_row((weft_type)t->type, t->data, v, n);
    *out = v;
    return 0;
}

static int load_hparams(weft_model *m, const char *arch)
{
    const gguf_file *g = m->gguf;
    weft_hparams *hp = &m->hp;
    int rc;
    if (strcmp(arch, "llama") == 0) {
        hp->arch = WEFT_ARCH_LLAMA;
        hp->rope_type = WEFT_ROPE_NORM;
    } else if (strcmp(arch, "qwen2") == 0) {
        hp->arch = WEFT_ARCH_QWEN2;
        hp->rope_type = WEFT_ROPE_NEOX;
    } else {
        return weft_error(WEFT_EUNSUPPORTED,
                          "architecture '%s' is not supported (weft runs llama and qwen2)", arch);
    }
    if ((rc = hp_int(g, arch, "block_count", -1, 1, 1024, &hp->n_layer)) < 0 ||
        (rc = hp_int(g, arch, "context_length", 2048, 1, 1 << 24, &hp->n_ctx_train)) < 0 ||
        (rc = hp_int(g, arch, "embedding_length", -1, 1, 1 << 16, &hp->dim)) < 0 ||
        (rc = hp_int(g, arch, "feed_forward_length", -1, 1, 1 << 20, &hp->ffn_dim)) < 0 ||
        (rc = hp_int(g, arch, "attention.head_count", -1, 1, 1024, &hp->n_head)) < 0 ||
        (rc = hp_int(g, arch, "attention.head_count_kv", hp->n_head, 1, hp->n_head,
                     &hp->n_head_kv)) < 0)
        return rc;
    if (hp->n_head % hp->n_head_kv != 0)
        return weft_error(WEFT_EFORMAT, "head_count %d is not a multiple of head_count_kv %d",
                          hp->n_head, hp->n_head_kv);
    if ((rc = hp_int(g, arch, "attention.key_length", hp->dim / hp->n_head, 2, 1024,
                     &hp->head_dim)) < 0 ||
        (rc = hp_int(g, arch, "rope.dimension_count", hp->head_dim, 2, hp->head_dim,
                     &hp->rope_dim)) < 0)
        return rc;
    if (hp->head_dim % 2 || hp->rope_dim % 2)
        return weft_error(WEFT_EFORMAT, "head/rope dimension must be even");
    if ((rc = hp_float(g, arch, "rope.freq_base", 10000.0f, false, &hp->rope_theta)) < 0 ||
        (rc = hp_float(g, arch, "attention.layer_norm_rms_epsilon", 1e-5f, true, &hp->rms_eps)) < 0)
        return rc;
    float factor = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const char *stype;
    size_t slen;
    if (gguf_get_str(g, key, &stype, &slen) == 0) {
        if (slen == 6 && memcmp(stype, "linear", 6) == 0) {
            if ((rc = hp_float(g, arch, "rope.scaling.factor", 1.0f, false, &factor)) < 0) return rc;
        } else if (!(slen == 4 && memcmp(stype, "none", 4) == 0)) {
            return weft_error(WEFT_EUNSUPPORTED, "rope scaling type '%.*s' is not supported",
                              (int)slen, stype);
        }
    }
    if (!(factor > 0.0f)) return weft_error(WEFT_EFORMAT, "rope scaling factor must be > 0");
    hp->rope_freq_scale = 1.0f / factor;
    if (hp->rope_theta <= 0.0f) return weft_error(WEFT_EFORMAT, "rope.freq_base must be > 0");
    return 0;
}

static int load_tensors(weft_model *m)
{
    const weft_hparams *hp = &m->hp;
    const int64_t dim = hp->dim, q_dim = (int64_t)hp->n_head * hp->head_dim,
                  kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    int rc;
    if ((rc = get_matrix(m, "token_embd.weight", dim, hp->n_vocab, false, &m->tok_embd)) < 0 ||
        (rc = get_vector(m, "output_norm.weight", dim, false, &m->output_norm)) < 0 ||
        (rc = get_matrix(m, "output.weight", dim, hp->n_vocab, true, &m->output)) < 0 ||
        (rc = get_vector(m, "rope_freqs.weight", hp->rope_dim / 2, true, &m->rope_freqs)) < 0)
        return rc;
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    m->layers = weft_calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return weft_error(WEFT_ENOMEM, "out of memory");
    const bool need_bias = hp->arch == WEFT_ARCH_QWEN2;
    for (int l = 0; l < hp->n_layer; l++) {
        weft_layer *L = &m->layers[l];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), n)
        if ((rc = get_vector(m, NAME("attn_norm.weight"), dim, false, &L->attn_norm)) < 0 ||
            (rc = get_matrix(m, NAME("attn_q.weight"), dim, q_dim, false, &L->wq)) < 0 ||
            (rc = get_matrix(m, NAME("attn_k.weight"), dim, kv_dim, false, &L->wk)) < 0 ||
            (rc = get_matrix(m, NAME("attn_v.weight"), dim, kv_dim, false, &L->wv)) < 0 ||
            (rc = get_matrix(m, NAME("attn_output.weight"), q_dim, dim, false, &L->wo)) < 0 ||
            (rc = get_vector(m, NAME("attn_q.bias"), q_dim, !need_bias, &L->bq)) < 0 ||
            (rc = get_vector(m, NAME("attn_k.bias"), kv_dim, !need_bias, &L->bk)) < 0 ||
            (rc = get_vector(m, NAME("attn_v.bias"), kv_dim, !need_bias, &L->bv)) < 0 ||
            (rc = get_vector(m, NAME("ffn_norm.weight"), dim, false, &L->ffn_norm)) < 0 ||
            (rc = get_matrix(m, NAME("ffn_gate.weight"), dim, hp->ffn_dim, false, &L->w_gate)) < 0 ||
            (rc = get_matrix(m, NAME("ffn_up.weight"), dim, hp->ffn_dim, false, &L->w_up)) < 0 ||
            (rc = get_matrix(m, NAME("ffn_down.weight"), hp->ffn_dim, dim, false, &L->w_down)) < 0)
            return rc;
#undef NAME
    }
    return 0;
}

/* Calls fn(matrix, ctx) on the layers' matrices, and first on the output
 * head when with_head (output is its own op_matrix even when tied to
 * tok_embd, which is only read by rows). */
static void each_matrix_ctx(weft_model *m, bool with_head, void (*fn)(op_matrix *, void *), void *ctx)
{
    if (with_head) fn(&m->output, ctx);
    for (int l = 0; m->layers && l < m->hp.n_layer; l++) {
        weft_layer *L = &m->layers[l];
        op_matrix *ms[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) fn(ms[i], ctx);
    }
}

typedef struct {
    void (*fn)(op_matrix *);
} plain_fn;

static void call_plain(op_matrix *w, void *p) { ((const plain_fn *)p)->fn(w); }

/* Calls fn on every matrix of the forward pass, the head included. */
static void each_matrix(weft_model *m, void (*fn)(op_matrix *))
{
    plain_fn p = {fn};
    each_matrix_ctx(m, true, call_plain, &p);
}

/* Repacks a matrix for AMX (see kernels/cpu/amx.h) when the CPU has it, or
 * into the compact copies alone on AVX512-VNNI without AMX
 * (amx_compact_only); a matrix that cannot be repacked (type, shape,
 * memory) keeps quant.c's vpdpbusd kernels, for every batch size alike. */
static void pack_amx(op_matrix *w, void *arena)
{
    if (w->data) w->amx = amx_pack_in(arena, w->type, w->data, w->row_bytes, w->n_in, w->n_out);
}

static void free_amx(op_matrix *w)
{
    amx_free((amx_matrix *)w->amx);
    w->amx = NULL;
}

/* The bf16 copies of the layers' matrices (amx_pack_bf16) that prompt
 * rows run on (op_matmul_multi), where op_prompt_bf16() and they take at
 * most PROMPT_BF16_MAX bytes in all (about 2 bytes a weight: 212 MB for
 * SmolLM2-135M); otherwise every row keeps the int8 kernels. The output
 * head has none (ops on it never pass prompt rows). */
#define PROMPT_BF16_MAX ((size_t)2 << 30)

static void add_bf16_bytes(op_matrix *w, void *total)
{
    if (w->amx) *(size_t *)total += amx_bf16_bytes(w->amx);
}

static void pack_bf16_copy(op_matrix *w, void *unused)
{
    (void)unused;
    if (w->amx) amx_pack_bf16((amx_matrix *)w->amx); /* on failure: int8 for this one */
}

static void pack_prompt_bf16(weft_model *m)
{
    size_t total = 0;
    each_matrix_ctx(m, false, add_bf16_bytes, &total);
    if (total <= PROMPT_BF16_MAX) each_matrix_ctx(m, false, pack_bf16_copy, NULL);
}

/* Fingerprint: hyper-parameters and every tensor's name, shape, type and bytes. */
static uint64_t fingerprint(const weft_model *m)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st) return 0;
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, &m->hp, sizeof m->hp);
    for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
        const gguf_tensor *t = gguf_tensor_at(m->gguf, i);
        XXH3_64bits_update(st, t->name, strlen(t->name));
        XXH3_64bits_update(st, t->ne, sizeof t->ne);
        XXH3_64bits_update(st, &t->type, sizeof t->type);
        XXH3_64bits_update(st, t->data, t->size);
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

int weft_model_load(const char *path, weft_model **out)
{
    *out = NULL;
    weft_model *m = weft_calloc(1, sizeof *m);
    if (!m) return weft_error(WEFT_ENOMEM, "out of memory");
    int rc = gguf_open(path, &m->gguf);
    if (rc < 0) goto fail;
    const char *arch;
    size_t alen;
    if (gguf_get_str(m->gguf, "general.architecture", &arch, &alen) < 0) {
        rc = weft_error(WEFT_EFORMAT, "%s: missing general.architecture", path);
        goto fail;
    }
    char archz[64];
    snprintf(archz, sizeof archz, "%.*s", (int)(alen < 63 ? alen : 63), arch);
    if ((rc = load_hparams(m, archz)) < 0) goto fail;
    if ((rc = tok_load(m->gguf, &m->vocab)) < 0) goto fail;
    m->hp.n_vocab = tok_n_vocab(m->vocab);
    if ((rc = load_tensors(m)) < 0) goto fail;
    if (amx_available() || amx_compact_only()) {
        /* the copies are read on every step: 2 MB pages spare the TLB misses
         * (bench/ab.sh, weft bench -c 1 -n 256: TPOT 2.5-3.0 ms against
         * 2.9-3.5 with each copy its own malloc, on 4 KB pages);
         * without an arena (no memory) each copy is its own allocation */
        m->arena = weft_arena_create();
        each_matrix_ctx(m, true, pack_amx, m->arena);
    }
    /* the head runs for every decoding row: its compact copy (on failure the
     * int8 blocks serve) */
    if (m->output.amx) amx_pack_bytes((amx_matrix *)m->output.amx);
    if (op_prompt_bf16()) pack_prompt_bf16(m);
    const char *name;
    size_t nlen;
    if (gguf_get_str(m->gguf, "general.name", &name, &nlen) == 0) {
        m->name = weft_malloc(nlen + 1);
        if (m->name) {
            memcpy(m->name, name, nlen);
            m->name[nlen] = 0;
        }
    } else {
        const char *slash = strrchr(path, '/');
        m->name = weft_strdup(slash ? slash + 1 : path);
    }
    if (!m->name) {
        rc = weft_error(WEFT_ENOMEM, "out of memory");
        goto fail;
    }
    m->fingerprint = fingerprint(m);
    *out = m;
    return 0;
fail:
    if (rc != WEFT_ENOMEM && strstr(weft_last_error(), path) == NULL) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", weft_last_error());
        weft_error(rc, "%s: %s", path, msg);
    }
    weft_model_free(m);
    return rc;
}

void weft_model_free(weft_model *m)
{
    if (!m) return;
    each_matrix(m, free_amx);
    weft_arena_destroy(m->arena); /* after the matrices that point into it */
    for (int i = 0; i < m->n_owned; i++) weft_free(m->owned[i]);
    weft_free(m->owned);
    weft_free(m->layers);
    weft_free(m->name);
    tok_free(m->vocab);
    gguf_close(m->gguf);
    weft_free(m);
}

const weft_hparams *weft_model_hparams(const weft_model *m) { return &m->hp; }
const tok_vocab *weft_model_vocab(const weft_model *m) { return m->vocab; }
const char *weft_model_arch_name(const weft_model *m)
{
    return m->hp.arch == WEFT_ARCH_QWEN2 ? "qwen2" : "llama";
}
const char *weft_model_name(const weft_model *m) { return m->name; }
uint64_t weft_model_fingerprint(const weft_model *m) { return m->fingerprint; }

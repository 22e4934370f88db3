/*
 * kernels/cpu/ops.h — the CPU operators of the forward pass. Every op is
 * called by all threads of a pool run with the same arguments and does its
 * share of the work (split by t->ith / t->nth); ops that need all threads'
 * results before they go on say so and contain their own barrier.
 * Shapes are row-major: x[n_rows][dim].
 */
#ifndef WEFT_KERNELS_CPU_OPS_H
#define WEFT_KERNELS_CPU_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu/pool.h"
#include "kernels/quant.h"

/* A weight matrix: n_out rows of n_in values of `type`, row-major. */
typedef struct op_matrix {
    const void *data;
    weft_type type;
    int64_t n_in;
    int64_t n_out;
    size_t row_bytes;
    const struct amx_matrix *amx; /* the same rows repacked for amx.h (AMX tiles, or
                                   * amx_compact_only()'s copies), or NULL */
} op_matrix;

/* y[r] = x[r] / rms(x[r]) * w, for r < n_rows (no barrier). */
void op_rmsnorm(const pool_thread *t, float *y, const float *x, const float *w, int n_rows,
                int dim, float eps);

/* Bytes of one quantized-activation slot for n_tok rows of n_in values
 * (enough for any vec-dot type). */
size_t op_qslot_size(int64_t n_in, int n_tok);
/* Bytes of the qbuf of op_matmul_multi for up to n_tok rows of up to n_in
 * values: three slots, then the bf16 form of prompt rows. */
size_t op_qbuf_size(int64_t n_in, int n_tok);

/* ys[i][n_tok][ws[i]->n_out] = x[n_tok][n_in] · ws[i]ᵀ (+ biases[i]) for
 * i < k (k <= 3): several matrices that read the same input. x is quantized
 * once per distinct vec-dot type into consecutive slots of qbuf (each
 * op_qslot_size bytes), then a barrier, then the dot products; no barrier at
 * the end. No thread may still be reading qbuf from an earlier matmul when
 * this starts (a barrier between them), and ys must not alias x.
 * prompt (n_tok flags, or NULL): rows marked are prompt tokens
 * (weft_batch.prompt); where op_prompt_bf16() and the matrix has its bf16
 * copy (amx_pack_bf16) they run on AMX-BF16 tiles — weights and
 * activations rounded to bf16, f32 sums, several times faster from a few
 * dozen rows on — and the others on the int8 kernels. Which kernel a row
 * takes depends only on its own flag, so a token's result does not depend
 * on its batch. */
void op_matmul_multi(const pool_thread *t, int k, float *const *ys, const op_matrix *const *ws,
                     const float *const *biases, const float *x, int n_tok, void *qbuf,
                     const int8_t *prompt);

/* op_matmul_multi with one matrix. */
void op_matmul(const pool_thread *t, float *y, const op_matrix *w, const float *bias,
               const float *x, int n_tok, void *qbuf, const int8_t *prompt);

/* True when prompt rows may take the bf16 kernels: the CPU has AMX-BF16
 * and WEFT_PROMPT_BF16 is not "0". Checked once. */
bool op_prompt_bf16(void);

/* Rotary embedding, in two steps: the angles depend on the position only,
 * so a forward pass computes their cosines and sines once
 * (op_rope_angles) and every layer turns q and k by them (op_rope).
 *
 * op_rope_angles: cs[n_tok][rope_dim], for each token the cosines of pairs
 * 0..rope_dim/2-1, then their sines. Pair j turns by
 * pos * freq_scale * theta^(-2j/rope_dim) / freq_factors[j] (freq_factors may
 * be NULL), the angle built by repeated multiplication as llama.cpp does, so
 * the two agree to the last bit. No barrier.
 *
 * op_rope: in place on x[n_tok][n_heads * head_dim]; the first rope_dim dims
 * of each head rotate by cs. mode: 0 = normal (adjacent pairs), 2 = NeoX
 * (pairs j, j + rope_dim/2). No barrier. */
void op_rope_angles(const pool_thread *t, float *cs, const int32_t *pos, int n_tok, int rope_dim,
                    float theta, float freq_scale, const float *freq_factors);
void op_rope(const pool_thread *t, float *x, const float *cs, int n_tok, int n_heads,
             int head_dim, int rope_dim, int mode);

/* Row-parallel ops. Every op that splits its work by rows — op_rmsnorm,
 * op_rope_angles and op_rope (by token), op_swiglu_rows, op_add_rows, and the quantization at
 * the start of op_matmul_multi — gives thread t the same rows
 * (pool_range(t, n_rows)), so one may follow another without a barrier when
 * each row depends only on the same row before. */

/* g[i] = silu(g[i]) * u[i], n values. No barrier. */
void op_swiglu(const pool_thread *t, float *g, const float *u, int64_t n);
/* op_swiglu over n_rows rows of `width` values, split by rows. No barrier. */
void op_swiglu_rows(const pool_thread *t, float *g, const float *u, int n_rows, int64_t width);

/* x[i] += y[i], n values. No barrier. */
void op_add(const pool_thread *t, float *x, const float *y, int64_t n);
/* op_add over n_rows rows of `width` values, split by rows. No barrier. */
void op_add_rows(const pool_thread *t, float *x, const float *y, int n_rows, int64_t width);

/* Helpers for attention (single-thread, vectorised when AVX2 is present). */
/* Converts n floats to f16. */
void vec_f32_to_f16(uint16_t *y, const float *x, int64_t n);

/* y[i] = x[i] rounded to f16 (nearest even) and back to f32; y may be x. */
void vec_round_f16(float *y, const float *x, int64_t n);
/* Dot of two f16 vectors, accumulated in f32. */
float vec_dot_f16(int64_t n, const uint16_t *a, const uint16_t *b);
/* y[i] += a * v[i] for f16 v. */
void vec_mad_f16(int64_t n, float *y, const uint16_t *v, float a);
/* scores[r] = dot(q, K row r) for r < n <= 16, K a block of 16 rows stored
 * transposed: element d of row r at kt[d * 16 + r] (f16). */
void vec_dot_f16_cols(int64_t hd, const uint16_t *q, const uint16_t *kt, int n, float *scores);
/* out[d] += sum_i w[i] * row_i[d] for i < n, rows as above. */
void vec_mad_f16_rows(int64_t hd, float *out, const uint16_t *base, size_t stride, int n,
                      const float *w);
/* Attention of nq queries that share one KV head, over cached positions in
 * blocks of 16 (f16): kb[j] is the K of positions 16j..16j+15 for this head,
 * transposed (dimension d of the 16 positions at kb[j] + 16 d; all 16
 * readable, those past a query's positions ignored); vb[j] their V rows,
 * `stride` elements apart. Query i (qf + i * hd, f32 values already rounded
 * to f16) sees positions [0, n_kv[i]); its output (hd floats) goes to
 * outs[i]. sc: scratch of nq rows rounded up to 16, ldsc >= the largest
 * n_kv rounded up to 16. Each block is read once for all the queries, so a prefill chunk's
 * tokens and a GQA group's heads share it. prompt: the queries are prompt
 * tokens (weft_batch.prompt); where the CPU has AMX-BF16 they run on tiles
 * in bf16 (many queries share each converted block), where it has
 * AVX512-BF16 but no AMX on vdpbf16ps with the same bf16 contract (V
 * converted once a call into vs); WEFT_ATTN_TILES=0 turns both off.
 * Generated tokens always take the f32 FMA path. vs: scratch of
 * op_attention_vs_size(hd, ldsc) bytes, 64-byte aligned (NULL: prompt
 * tokens take the f32 path where they would take vdpbf16ps).
 * Each output depends only on its own query and positions — not on nq or on
 * the other queries. Only where op_attention_available(hd) (AVX-512). */
bool op_attention_available(int hd);
size_t op_attention_vs_size(int hd, size_t ldsc);
void op_attention(int hd, int nq, const float *qf, const uint16_t *const *kb,
                  const uint16_t *const *vb, size_t stride, const int32_t *n_kv, float scale,
                  float *sc, size_t ldsc, float *const *outs, bool prompt, uint16_t *vs);

/* In-place softmax of x[0..n) times... returns nothing; x[i] = exp(x[i]-max)/sum. */
void vec_softmax(float *x, int64_t n);
/* x = softmax(x * scale) (scale > 0), each weight then rounded to f16 (the
 * precision attention weights meet the f16 V cache in). Vectorised with a
 * polynomial exp where AVX2 is present. */
void vec_softmax_f16w(float *x, int64_t n, float scale);

#endif

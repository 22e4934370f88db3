/*
 * weft/sampler.h — turning logits into the next token: greedy, temperature,
 * top-k, top-p, min-p, repetition penalty, seeded; per-token log-probs; stop
 * strings.
 */
#ifndef WEFT_SAMPLER_H
#define WEFT_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_sampling {
    float temperature;    /* <= 0: greedy (argmax) */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off; > 1 penalises tokens seen in the last repeat_last_n */
    int32_t repeat_last_n;
    uint64_t seed;        /* same seed, same logits → same tokens */
} weft_sampling;

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1 (off),
 * repeat_last_n 64, seed 0 — llama.cpp's defaults. */
WEFT_API weft_sampling weft_sampling_default(void);
/* Greedy: temperature 0, every filter off. */
WEFT_API weft_sampling weft_sampling_greedy(void);

typedef struct weft_sampler weft_sampler;

WEFT_API int weft_sampler_create(const weft_sampling *params, int32_t n_vocab, weft_sampler **out);
WEFT_API void weft_sampler_free(weft_sampler *s);
/* Picks the next token from logits[n_vocab]. If logprob is not NULL it gets
 * the log-probability of the chosen token under the model's distribution
 * (log-softmax of the raw logits, before any sampling transform). The token
 * is also added to the repetition history. */
WEFT_API int32_t weft_sampler_sample(weft_sampler *s, const float *logits, float *logprob);
/* Adds a token to the repetition history without sampling (prompt tokens). */
WEFT_API void weft_sampler_accept(weft_sampler *s, int32_t token);
WEFT_API void weft_sampler_reset(weft_sampler *s);

/* Index of the largest logit (the lowest index on ties). */
WEFT_API int32_t weft_argmax(const float *logits, int32_t n);
/* log-softmax of logits at `id`. */
WEFT_API float weft_logprob(const float *logits, int32_t n, int32_t id);
/* The k most likely tokens, most likely first: ids[k], logprobs[k]. Returns k' <= k. */
WEFT_API int32_t weft_top_logprobs(const float *logits, int32_t n, int32_t k, int32_t *ids,
                                   float *logprobs);

/* Stop strings over streamed text. Given the text generated so far (len
 * bytes), returns the offset of the earliest complete stop string, or -1;
 * *safe gets how many bytes can be emitted now without risking emitting the
 * start of a stop string that is not complete yet. No stop string can start
 * before a previous call's *safe, so a streaming caller passes only the text
 * from there on (and adds that offset back): linear, not quadratic. */
WEFT_API int64_t weft_stop_find(const char *text, size_t len, const char *const *stops,
                                int n_stops, size_t *safe);

#ifdef __cplusplus
}
#endif
#endif

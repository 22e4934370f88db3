/* tests/engine_common.h — collecting engine events and solo greedy runs to
 * compare them with. Header-only. */
#ifndef WEFT_TESTS_ENGINE_COMMON_H
#define WEFT_TESTS_ENGINE_COMMON_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "weft/engine.h"

typedef struct collected {
    int32_t toks[512];
    float lps[512]; /* the tokens' log-probabilities, when the request asked */
    int32_t n;
    int done, status, n_cached, n_prompt;
    const char *finish;
    int events_after_done; /* must stay 0 */
    char text[8192];       /* the streamed text */
    size_t text_len;
} collected;

static pthread_mutex_t collect_mu = PTHREAD_MUTEX_INITIALIZER;

static void collect_cb(const weft_event *ev, void *user)
{
    collected *c = user;
    pthread_mutex_lock(&collect_mu);
    if (c->done) c->events_after_done++;
    if (ev->text_len && c->text_len + ev->text_len < sizeof c->text) {
        memcpy(c->text + c->text_len, ev->text, ev->text_len);
        c->text_len += ev->text_len;
    }
    if (ev->done) {
        c->done = 1;
        c->status = ev->status;
        c->finish = ev->finish;
        c->n_cached = ev->n_cached;
        c->n_prompt = ev->n_prompt;
    } else if (c->n < 512) {
        c->lps[c->n] = ev->logprob;
        c->toks[c->n++] = ev->token;
    }
    pthread_mutex_unlock(&collect_mu);
}

/* Threads of the solo runs (tiny models run faster on one). */
static int solo_threads = 2;

/* Greedy continuation of toks[0..n) on a fresh context, one sequence. */
static int solo_greedy(const weft_model *m, const int32_t *toks, int32_t n, int32_t max_tokens,
                       bool stop_at_eog, int32_t *out)
{
    weft_ctx_params cp = weft_ctx_default_params();
    cp.n_ctx = n + max_tokens + 1;
    cp.n_threads = solo_threads;
    weft_ctx *c = NULL;
    if (weft_ctx_create(m, &cp, &c) != 0) return -1;
    int32_t *pos = malloc(((size_t)n + 1) * sizeof *pos), *seq = calloc((size_t)n + 1, sizeof *seq);
    int8_t *given = malloc((size_t)n + 1); /* prompt tokens, marked as the engine marks them */
    for (int32_t i = 0; i < n; i++) pos[i] = i, given[i] = 1;
    weft_batch b = {.n = n, .tokens = toks, .pos = pos, .seq = seq, .prompt = given};
    int got = -1;
    if (weft_decode(c, &b) == 0) {
        got = 0;
        const int32_t nv = weft_model_hparams(m)->n_vocab;
        while (got < max_tokens) {
            int32_t t = weft_argmax(weft_get_logits(c, 0), nv);
            out[got++] = t;
            if (stop_at_eog && tok_is_eog(weft_model_vocab(m), t)) {
                got--; /* the engine does not report the end-of-generation token */
                break;
            }
            if (got == max_tokens) break;
            int32_t p = n + got - 1, s = 0;
            weft_batch d = {.n = 1, .tokens = &t, .pos = &p, .seq = &s};
            if (weft_decode(c, &d) != 0) {
                got = -1;
                break;
            }
        }
    }
    free(pos);
    free(seq);
    free(given);
    weft_ctx_destroy(c);
    return got;
}

#endif

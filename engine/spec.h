/*
 * engine/spec.h — speculative decoding's policy for the engine (engine.c):
 * where draft tokens come from and how many a step takes.
 *
 * Drafts are prompt lookup: the longest recent n-gram (n = SPEC_NGRAM_MAX
 * down to SPEC_NGRAM_MIN) that ends a request's tokens and occurred earlier
 * in them (prompt or output) proposes the tokens that followed it there.
 * Drafting costs no model. The engine runs a decoding request's last token
 * and its drafts in one step as generated (not prompt) rows, samples each
 * row's logits in order with the request's own sampler and keeps the drafts
 * up to the first one the sampler did not produce — so the output is the
 * one decoding without drafts gives, for any sampler, greedy or not.
 *
 * How many drafts a step takes is SmartSpec's question: the goodput of the
 * step (expected tokens out over its time). A step of n tokens is modelled
 * as a + b n, fitted to the engine's own recent steps; each draft is kept
 * with a probability estimated from the request's acceptance so far. The
 * planner adds drafts in order of their expected gain while the goodput
 * rises: one request on a memory-bound machine takes several, a large
 * decoding batch on a compute-bound one takes few or none.
 */
#ifndef WEFT_ENGINE_SPEC_H
#define WEFT_ENGINE_SPEC_H

#include <stdint.h>

#define SPEC_NGRAM_MAX 3
#define SPEC_NGRAM_MIN 2
#define SPEC_MAX_DRAFT 16 /* per request and step */

/* Step time a + b n over n tokens, least squares over the recent steps
 * (older ones decay). Zero-initialise. */
typedef struct spec_cost {
    double w, sn, snn, st, snt; /* decayed sums: weight, n, n², ms, n·ms */
} spec_cost;

/* One step of n tokens took ms milliseconds. */
void spec_cost_observe(spec_cost *c, int32_t n, double ms);
/* b / a of the fit: what one more token adds to a step, as a share of a
 * one-token step's fixed part. A prior (0.15) until steps of different
 * sizes have been seen; clamped to [0.01, 2]. */
double spec_cost_slope(const spec_cost *c);

/* Drafts for a request whose tokens (prompt, then output) are toks[0..n):
 * writes at most max of them to draft and returns how many (0: no n-gram
 * recurs). */
int32_t spec_propose(const int32_t *toks, int32_t n, int32_t max, int32_t *draft);

/* A decoding request's candidate drafts: n_draft proposed, each kept with
 * probability p_accept given the ones before it were. */
typedef struct spec_cand {
    int32_t n_draft;
    double p_accept;
} spec_cand;

/* Chooses k[i] <= cand[i].n_draft drafts for each of m decoding requests in
 * a step that already holds n0 tokens (their last tokens and any prompt
 * tokens), at most `room` drafts in all, maximising expected tokens out per
 * unit of modelled step time (slope: spec_cost_slope). */
void spec_plan(const spec_cand *cand, int m, int32_t n0, double slope, int32_t room, int32_t *k);

#endif

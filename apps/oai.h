/* apps/oai.h — the OpenAI wire format of `weft serve`: bodies of
 * POST /v1/completions and /v1/chat/completions parsed and checked into an
 * oai_request, and the JSON of responses, stream chunks and errors
 * (../shared/data/openai/openapi.yaml). Pure functions of their inputs — no
 * HTTP, no engine — called on the server's loop thread. */
#ifndef WEFT_APPS_OAI_H
#define WEFT_APPS_OAI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "weft/sampler.h"
#include "weft/tokenizer.h"

#define OAI_MAX_CHOICES 128 /* prompts x n */
#define OAI_MAX_STOPS 16

typedef enum { OAI_COMPLETION, OAI_CHAT } oai_kind;

/* An error as OpenAI reports it: {"error": {message, type, param, code}}. */
typedef struct oai_error {
    int status;        /* HTTP status */
    const char *type;  /* static: "invalid_request_error", "server_error", ... */
    const char *code;  /* static or NULL */
    char param[64];    /* the offending field, "" for none */
    char message[512];
} oai_error;

/* Fills *e and returns -1, so parsers can `return oai_fail(e, 400, ...)`. */
int oai_fail(oai_error *e, int status, const char *type, const char *code, const char *param,
             const char *fmt, ...) __attribute__((format(printf, 6, 7)));

typedef struct oai_request {
    oai_kind kind;
    char *model;            /* as sent */
    int32_t **prompts;      /* token ids of each prompt (chat: one, rendered) */
    int32_t *n_prompt;      /* their lengths */
    int n_prompts;
    int n;                  /* choices per prompt */
    int32_t max_tokens;     /* 0: up to the end of the context (chat default) */
    const char *max_tokens_param; /* static: the field it came from, for errors */
    weft_sampling sampling; /* OpenAI defaults: temperature 1, top_p 1, no top-k/min-p */
    bool seed_set;
    char **stop;
    int n_stop;
    bool stream, include_usage;
    bool logprobs;          /* per-token log-probabilities of the sampled tokens */
    bool ignore_eos;        /* extension (vLLM, llama-server): run to max_tokens */
} oai_request;

/* Parses and checks a request body; tokenizes the prompt(s) with v (chat
 * messages through the model's chat template). Returns 0, or -1 with *err
 * filled (status 400 for every input problem). On success the caller frees
 * *out with oai_request_free; on failure nothing is left to free. */
int oai_parse(oai_kind kind, const char *body, size_t len, const tok_vocab *v, oai_request *out,
              oai_error *err);
void oai_request_free(oai_request *r);

/* The error body; the caller json_decref()s it. */
json_t *oai_error_json(const oai_error *e);

/* A JSON string of s[0..n): invalid UTF-8 becomes U+FFFD (jansson refuses
 * it). Never NULL unless out of memory. */
json_t *oai_string(const char *s, size_t n);

/* Log-probabilities of sampled tokens, in the kind's shape: chat
 * {"content": [{token, logprob, bytes, top_logprobs: []}], "refusal": null},
 * completions {tokens, token_logprobs, top_logprobs: [{token: lp}],
 * text_offset}. */
json_t *oai_logprobs_new(oai_kind kind);
void oai_logprobs_add(oai_kind kind, json_t *lp, const char *tok, size_t len, float logprob,
                      size_t text_offset);

typedef struct oai_head {
    oai_kind kind;
    const char *id;    /* "cmpl-..." / "chatcmpl-..." */
    long long created;
    const char *model;
} oai_head;

typedef struct oai_choice {
    const char *text;
    size_t len;
    const char *finish; /* "stop", "length" */
    json_t *logprobs;   /* borrowed, or NULL */
} oai_choice;

typedef struct oai_usage {
    int64_t prompt, completion, cached;
} oai_usage;

/* The whole non-streamed response. */
json_t *oai_response(const oai_head *h, const oai_choice *c, int n, const oai_usage *u);

/* One stream chunk for choice `index`: text (may be empty), logprobs (borrowed,
 * may be NULL), finish (NULL while running); role_first: the chat chunk that
 * opens a choice (delta.role). usage_null: the chunk carries "usage": null
 * (include_usage was asked for). */
json_t *oai_chunk(const oai_head *h, int index, const char *text, size_t len, json_t *logprobs,
                  const char *finish, bool role_first, bool usage_null);
/* The last chunk when include_usage: choices [] and the usage. */
json_t *oai_usage_chunk(const oai_head *h, const oai_usage *u);

#endif

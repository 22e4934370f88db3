/* libFuzzer target for the OpenAI request parser of `weft serve`
 * (apps/oai.c: oai_parse, with the default model's tokenizer): the body of
 * every POST /v1/completions and /v1/chat/completions goes through it
 * straight from the network. Any bytes must be parsed or refused without
 * reading out of bounds (ASan), undefined behaviour (UBSan) or a leak, and
 * the target traps when a promise breaks:
 *   - refused: status 400 (every input problem is the client's), a message,
 *     and an error body that serializes;
 *   - accepted: 1..OAI_MAX_CHOICES choices (prompts x n), every prompt
 *     non-empty with ids in range, at most OAI_MAX_STOPS stop strings, none
 *     empty, sampling values finite (a stop with a NUL is refused by the
 *     parser; once copied as a C string it could not be seen here);
 *   - oai_string turns any bytes into a JSON string jansson can write.
 * The first input byte picks the route (bit 0: chat); the rest is the body.
 * Build and run: see tests/fuzz/README.md. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/oai.h"
#include "tests/fuzz/fuzz_vocab.h"

static tok_vocab *vocab;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    vocab = fuzz_load_vocab("fuzz_oai");
    return 0;
}

static void must_dump(json_t *j)
{
    if (!j) __builtin_trap();
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) __builtin_trap();
    free(s);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const oai_kind kind = data[0] & 1 ? OAI_CHAT : OAI_COMPLETION;
    const char *body = (const char *)data + 1;
    const size_t len = size - 1;

    must_dump(oai_string(body, len));

    oai_request r;
    oai_error e;
    memset(&e, 0, sizeof e);
    if (oai_parse(kind, body, len, vocab, &r, &e) != 0) {
        if (e.status != 400 || !e.message[0] || !e.type) __builtin_trap();
        must_dump(oai_error_json(&e));
        return 0;
    }
    if (r.n_prompts < 1 || r.n < 1 || (long long)r.n_prompts * r.n > OAI_MAX_CHOICES || !r.model) __builtin_trap();
    for (int i = 0; i < r.n_prompts; i++) {
        if (r.n_prompt[i] < 1) __builtin_trap();
        for (int32_t k = 0; k < r.n_prompt[i]; k++)
            if (r.prompts[i][k] < 0 || r.prompts[i][k] >= tok_n_vocab(vocab)) __builtin_trap();
    }
    if (r.n_stop < 0 || r.n_stop > OAI_MAX_STOPS) __builtin_trap();
    for (int i = 0; i < r.n_stop; i++)
        if (!r.stop[i] || !r.stop[i][0]) __builtin_trap();
    if (r.max_tokens < 0 || !isfinite(r.sampling.temperature) || !isfinite(r.sampling.top_p)) __builtin_trap();
    oai_request_free(&r);
    return 0;
}

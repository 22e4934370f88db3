/* libFuzzer target for the tokenizer of the default model (the text every
 * prompt, chat message and workflow template goes through): any bytes must
 * tokenize without reading out of bounds (ASan) or undefined behaviour
 * (UBSan), and the target traps when a promise breaks:
 *   - every id is in [0, n_vocab);
 *   - plain text (no special parsing) of valid UTF-8 decodes back to itself,
 *     but for the ASCII bytes the vocabulary has no token for (SmolLM2 has
 *     none for 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d: llama.cpp drops them
 *     too), and streaming its pieces through tok_utf8_push gives the same;
 *   - a chat message's content cannot forge a control token: rendering one
 *     user message holding the input yields as many <|im_start|> tokens
 *     whatever the content says.
 * The first input byte picks add_special / parse_special; the rest is the
 * text. The model comes from WEFT_MODEL or the default path (scripts/setup.sh).
 * Build and run: see tests/fuzz/README.md. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_vocab.h"

static tok_vocab *vocab;
static int32_t im_start = -1;
static int n_turns = -1;  /* <|im_start|> tokens of one rendered user message: the template's own */
static bool dropped[128]; /* ASCII bytes that tokenize to nothing */

static int count(const int32_t *ids, int32_t n, int32_t id)
{
    int c = 0;
    for (int32_t i = 0; i < n; i++) c += ids[i] == id;
    return c;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    vocab = fuzz_load_vocab("fuzz_tokenizer");
    im_start = tok_find(vocab, "<|im_start|>");
    for (int b = 0; b < 128; b++) {
        const char c = (char)b;
        int32_t *ids = NULL, n = 0;
        if (tok_encode(vocab, &c, 1, false, false, &ids, &n) != 0) exit(1);
        dropped[b] = n == 0;
        weft_free(ids);
    }
    if (im_start >= 0 && tok_chat_style_of(vocab) == TOK_CHAT_CHATML) {
        const tok_chat_msg m = {"user", "x", 1};
        int32_t *ids = NULL, n = 0;
        if (tok_chat_encode(vocab, &m, 1, true, NULL, NULL, &ids, &n) != 0) exit(1);
        n_turns = count(ids, n, im_start); /* system (the default one), user, assistant */
        weft_free(ids);
    }
    return 0;
}

/* Valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        const uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) k = 1, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) k = 3, cp = c & 0x07;
        else return false;
        if (n - i <= k) return false; /* bytes i+1 .. i+k must exist */
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const bool add_special = data[0] & 1, parse_special = data[0] & 2;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    const int32_t n_vocab = tok_n_vocab(vocab);

    int32_t *ids = NULL, n = 0;
    if (tok_encode(vocab, text, len, add_special, parse_special, &ids, &n) != 0) __builtin_trap();
    for (int32_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_vocab) __builtin_trap();

    if (!add_special && !parse_special && utf8_valid((const uint8_t *)text, len)) {
        /* what should come back: the text without the bytes that have no token */
        char *want = malloc(len + 1);
        size_t wl = 0;
        for (size_t i = 0; i < len; i++)
            if (!((unsigned char)text[i] < 128 && dropped[(unsigned char)text[i]])) want[wl++] = text[i];
        char *back = NULL;
        if (tok_decode(vocab, ids, n, false, &back) != 0) __builtin_trap();
        if (memchr(want, 0, wl) == NULL && (strlen(back) != wl || memcmp(back, want, wl) != 0)) __builtin_trap();
        weft_free(back);
        /* the same bytes streamed a piece at a time */
        size_t cap = wl + 64, at = 0;
        char *out = malloc(cap), piece[256];
        tok_utf8_stream us = {0};
        for (int32_t i = 0; i < n; i++) {
            const int pl = tok_piece(vocab, ids[i], piece, sizeof piece, false);
            if (pl < 0) __builtin_trap();
            if (at + (size_t)pl + 8 > cap) __builtin_trap(); /* more bytes than the text has */
            at += tok_utf8_push(&us, piece, (size_t)pl, out + at);
        }
        at += tok_utf8_flush(&us, out + at);
        if (at != wl || memcmp(out, want, wl) != 0) __builtin_trap();
        free(out);
        free(want);
    }
    weft_free(ids);

    if (n_turns >= 0) {
        const tok_chat_msg m = {"user", len ? text : "", len};
        int32_t *cids = NULL, cn = 0;
        char *rendered = NULL;
        if (tok_chat_encode(vocab, &m, 1, true, &rendered, NULL, &cids, &cn) != 0) __builtin_trap();
        for (int32_t i = 0; i < cn; i++)
            if (cids[i] < 0 || cids[i] >= n_vocab) __builtin_trap();
        if (count(cids, cn, im_start) != n_turns) __builtin_trap();
        weft_free(cids);
        weft_free(rendered);
    }
    return 0;
}

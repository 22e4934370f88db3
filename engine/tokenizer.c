/*
 * engine/tokenizer.c — byte-level BPE ("gpt2") and SentencePiece BPE
 * ("llama") tokenizers built from GGUF metadata, matching llama.cpp's
 * llama-vocab.cpp / unicode.cpp token for token.
 *
 * Encoding a text:
 *   1. Special tokens are split out first (llama.cpp's tokenizer_st_partition):
 *      for each control / user-defined / unknown token, longest text first,
 *      every raw-text fragment is cut at its occurrences. User-defined tokens
 *      are always split out; control and unknown ones only with parse_special.
 *   2. BPE: the fragment is decoded to code points (invalid UTF-8 -> U+FFFD),
 *      split by the pre-tokenizer's steps, each piece mapped to GPT-2's
 *      byte-level alphabet and merged by rank. SPM: spaces become U+2581, a
 *      leading space is added after a special token (add_space_prefix), and
 *      adjacent symbols are merged by token score; leftovers fall back to
 *      <0xNN> byte tokens.
 *
 * Why not plain PCRE2 with \p{..}: llama.cpp does not run the pre-tokenizer
 * regexes as written. It special-cases the GPT-2 and Llama 3 patterns, and
 * every other pattern runs on a "collapsed" copy of the text with one byte
 * per code point standing for its category (letter, number, ...). We match
 * the GPT-2 and Llama 3 patterns with a small matcher of our own (below), and
 * run the others with PCRE2 (JIT) in byte mode on the same collapsed text.
 * Categories and white space come from unicode_table.h, generated from the
 * Unicode version llama.cpp uses, so they agree with it even where PCRE2's
 * Unicode version would say otherwise.
 */
#define _GNU_SOURCE /* memmem, qsort_r */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "tok_internal.h"

/* ------------------------------------------------------------------------ */
/* Unicode categories and white space, generated from Python's unicodedata by
 * scripts/gen_unicode_table.py. It is Unicode 15.1.0, the version of
 * llama.cpp's tables, so category decisions agree with it. */

#include "unicode_table.h"

#define UCD_N_RANGES (sizeof ucd_ranges / sizeof ucd_ranges[0])
#define CPT_MAX 0x110000u

static uint16_t ucd_bmp[0x10000];
static pthread_once_t ucd_once = PTHREAD_ONCE_INIT;

static void ucd_init(void)
{
    for (size_t i = 0; i + 1 < UCD_N_RANGES; i++) {
        uint32_t lo = ucd_ranges[i] >> 8, hi = ucd_ranges[i + 1] >> 8;
        uint16_t f = (uint16_t)(ucd_ranges[i] & 0xFF);
        if (lo >= 0x10000) break;
        if (hi > 0x10000) hi = 0x10000;
        for (uint32_t c = lo; c < hi; c++) ucd_bmp[c] = f;
    }
    for (size_t i = 0; i < sizeof ucd_whitespace / sizeof ucd_whitespace[0]; i++)
        ucd_bmp[ucd_whitespace[i]] |= UF_WHITESPACE;
}

static uint16_t ucd_flags(uint32_t c)
{
    if (c < 0x10000) return ucd_bmp[c];
    if (c >= CPT_MAX) return UF_UNDEFINED;
    size_t lo = 0, hi = UCD_N_RANGES - 1; /* ranges[lo] <= c < ranges[hi] */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if ((ucd_ranges[mid] >> 8) <= c) lo = mid;
        else hi = mid;
    }
    return (uint16_t)(ucd_ranges[lo] & 0xFF);
}

/* ------------------------------------------------------------------------ */
/* UTF-8 as llama.cpp reads it: no check for overlong forms or surrogates, an
 * invalid lead or truncated sequence is U+FFFD and skips one byte. */

static uint32_t utf8_next(const uint8_t *s, size_t n, size_t *off)
{
    size_t o = *off;
    uint8_t b = s[o];
    if (!(b & 0x80)) {
        *off = o + 1;
        return b;
    }
    if (b & 0x40) {
        if (!(b & 0x20)) {
            if (o + 1 < n && (s[o + 1] & 0xC0) == 0x80) {
                *off = o + 2;
                return ((uint32_t)(b & 0x1F) << 6) | (s[o + 1] & 0x3F);
            }
        } else if (!(b & 0x10)) {
            if (o + 2 < n && (s[o + 1] & 0xC0) == 0x80 && (s[o + 2] & 0xC0) == 0x80) {
                *off = o + 3;
                return ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[o + 1] & 0x3F) << 6) |
                       (s[o + 2] & 0x3F);
            }
        } else if (!(b & 0x08)) {
            if (o + 3 < n && (s[o + 1] & 0xC0) == 0x80 && (s[o + 2] & 0xC0) == 0x80 &&
                (s[o + 3] & 0xC0) == 0x80) {
                *off = o + 4;
                return ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[o + 1] & 0x3F) << 12) |
                       ((uint32_t)(s[o + 2] & 0x3F) << 6) | (s[o + 3] & 0x3F);
            }
        }
    }
    *off = o + 1;
    return 0xFFFD;
}

/* Writes c (at most 4 bytes). Code points past U+10FFFF, which llama.cpp
 * refuses with an exception, become U+FFFD. */
static size_t utf8_put(uint8_t *out, uint32_t c)
{
    if (c < 0x80) {
        out[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (uint8_t)(0xC0 | (c >> 6));
        out[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c >= CPT_MAX) c = 0xFFFD;
    if (c < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (c >> 12));
        out[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (c >> 18));
    out[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* Length of the sequence a lead byte announces (llama.cpp's unicode_len_utf8:
 * a stray continuation byte counts as 1). */
static size_t utf8_len(uint8_t b)
{
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[b >> 4];
}

/* ------------------------------------------------------------------------ */
/* GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes map to U+0100.. in byte order. */

static uint16_t byte_cpt[256];    /* byte -> code point */
static int16_t cpt_byte[0x144];   /* code point -> byte, -1 if none */
static pthread_once_t bytes_once = PTHREAD_ONCE_INIT;

static void bytes_init(void)
{
    int n = 0;
    for (int i = 0; i < 0x144; i++) cpt_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        byte_cpt[b] = (uint16_t)(printable ? b : 256 + n++);
        cpt_byte[byte_cpt[b]] = (int16_t)b;
    }
}

static size_t byte_enc(uint8_t b, uint8_t *out) { return utf8_put(out, byte_cpt[b]); }

/* ------------------------------------------------------------------------ */
/* Lookups. */

static uint64_t hash_bytes(const void *s, size_t n) { return XXH3_64bits(s, n); }

static int32_t lookup(const tok_vocab *v, const void *s, size_t n)
{
    uint32_t i = (uint32_t)hash_bytes(s, n) & v->text_hash_mask;
    for (;;) {
        int32_t id = v->text_hash[i];
        if (id < 0) return -1;
        if (v->text_len[id] == n && memcmp(v->text_blob + v->text_off[id], s, n) == 0)
            return id;
        i = (i + 1) & v->text_hash_mask;
    }
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

#define MERGE_EMPTY UINT64_MAX

static bool merge_find(const tok_vocab *v, int32_t a, int32_t b, uint32_t *rank, int32_t *res)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = (uint32_t)mix64(key) & v->merge_mask;
    for (;;) {
        uint64_t k = v->merge_key[i];
        if (k == MERGE_EMPTY) return false;
        if (k == key) {
            *rank = v->merge_rank[i];
            *res = v->merge_res[i];
            return true;
        }
        i = (i + 1) & v->merge_mask;
    }
}

/* ------------------------------------------------------------------------ */
/* Pre-tokenizers: the regex lists of llama.cpp's llm_tokenizer_bpe. */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3                                                                           \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct {
    const char *names; /* NUL-separated list, ends with an empty name */
    const char *regex[7];
    bool ignore_merges, add_bos;
} pre_def;

static const pre_def pre_defs[] = {
    {"default\0", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, 0, 0},
    {"llama3\0llama-v3\0llama-bpe\0falcon3\0falcon-h1\0pixtral\0midm-2.0\0lfm2\0",
     {RE_LLAMA3}, 1, 1},
    {"dbrx\0smaug-bpe\0", {RE_LLAMA3}, 0, 0},
    {"glm4\0chatglm-bpe\0", {RE_LLAMA3}, 0, 0},
    {"deepseek-llm\0",
     {"[\r\n]",
      "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
      "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+", "\\p{N}+"},
     0, 0},
    {"deepseek-v3\0hunyuan-dense\0",
     {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
      "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
     0, 0},
    {"deepseek-coder\0", {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}, 0, 0},
    {"falcon\0", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, 0, 0},
    {"starcoder\0refact\0command-r\0smollm\0codeshell\0exaone\0minerva-7b\0",
     {"\\p{N}", RE_GPT2}, 0, 0},
    {"gpt-2\0phi-2\0jina-es\0jina-de\0gigachat\0jina-v2-es\0jina-v2-de\0a.x-4.0\0mellum\0"
     "jina-v1-en\0jina-v2-code\0roberta-bpe\0mpt\0olmo\0jais\0exaone4\0trillion\0",
     {RE_GPT2}, 0, 0},
    {"qwen2\0deepseek-r1-qwen\0stablelm2\0megrez\0hunyuan\0",
     {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
      "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     0, 0},
    {"poro-chat\0bloom\0gpt3-finnish\0", {" ?[^(\\s|.,!?…。，、।۔،)]+"}, 0, 0},
    {"viking\0", {" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"}, 0, 0},
    {"tekken\0",
     {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?("
      "(?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*["
      "\\r\\n]+|\\s+(?!\\S)|\\s+"},
     1, 1},
    {"chameleon\0",
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2},
     0, 1},
    {"gpt-4o\0llama4\0",
     {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR]["
      "eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=["
      "\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     0, 0},
    {"superbpe\0", {"\\p{N}+", "(?=(\\d{3})+(?!\\d))"}, 0, 0},
    {"bailingmoe\0",
     {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
     0, 0},
    {"seed-coder\0",
     {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
      "\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     0, 0},
};

static const pre_def *pre_find(const char *name)
{
    for (size_t i = 0; i < sizeof pre_defs / sizeof pre_defs[0]; i++)
        for (const char *n = pre_defs[i].names; *n; n += strlen(n) + 1)
            if (strcmp(n, name) == 0) return &pre_defs[i];
    return NULL;
}

static void *pcre_malloc(PCRE2_SIZE n, void *ud)
{
    (void)ud;
    return weft_malloc(n);
}

static void pcre_free(void *p, void *ud)
{
    (void)ud;
    weft_free(p);
}

/* The category classes llama.cpp rewrites, and what they become on the
 * collapsed text (unicode_regex_split's k_ucat_*). */
static const struct {
    const char *name;
    uint8_t byte;
    const char *ascii;
} ucat[] = {
    {"\\p{N}", 0xD1, "\x30-\x39"},
    {"\\p{L}", 0xD2, "\x41-\x5A\x61-\x7A"},
    {"\\p{P}", 0xD3, "\x21-\x23\x25-\x2A\x2C-\x2F\x3A-\x3B\x3F-\x40\\\x5B-\\\x5D\x5F\\\x7B\\\x7D"},
    {"\\p{M}", 0xD4, ""},
    {"\\p{S}", 0xD5, "\\\x24\\\x2B\x3C-\x3E\x5E\x60\\\x7C"},
};

static bool uses_categories(const char *re)
{
    for (size_t i = 0; i < sizeof ucat / sizeof ucat[0]; i++)
        if (strstr(re, ucat[i].name)) return true;
    return false;
}

/* The regex rewritten for the collapsed text, as llama.cpp does it. */
static char *collapse_regex(const char *re)
{
    size_t n = strlen(re);
    char *out = weft_malloc(n * 24 + 1), *o = out;
    bool inside = false;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (re[i] == '[' && (i == 0 || re[i - 1] != '\\')) {
            *o++ = '[';
            inside = true;
            continue;
        }
        if (inside && re[i] == ']' && re[i - 1] != '\\') {
            *o++ = ']';
            inside = false;
            continue;
        }
        if (re[i] == '\\' && i + 4 < n && re[i + 1] == 'p' && re[i + 2] == '{' && re[i + 4] == '}') {
            size_t k;
            for (k = 0; k < sizeof ucat / sizeof ucat[0]; k++)
                if (strncmp(re + i, ucat[k].name, 5) == 0) break;
            if (k < sizeof ucat / sizeof ucat[0]) {
                if (!inside) *o++ = '[';
                *o++ = (char)ucat[k].byte;
                o += sprintf(o, "%s", ucat[k].ascii);
                if (!inside) *o++ = ']';
                i += 4;
                continue;
            }
        }
        *o++ = re[i];
    }
    *o = 0;
    return out;
}

static int step_compile(tok_vocab *v, const char *re, tok_step *st)
{
    if (strcmp(re, RE_GPT2) == 0) {
        st->kind = TOK_STEP_GPT2;
        return 0;
    }
    if (strcmp(re, RE_LLAMA3) == 0) {
        st->kind = TOK_STEP_LLAMA3;
        return 0;
    }
    st->kind = TOK_STEP_REGEX;
    st->collapsed = uses_categories(re);
    char *pat = NULL;
    uint32_t opts = PCRE2_DOLLAR_ENDONLY; /* ECMAScript's $: end of subject only */
    if (st->collapsed) {
        pat = collapse_regex(re);
        if (!pat) return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
    } else {
        opts |= PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    }
    int err = 0;
    PCRE2_SIZE erroff = 0;
    pcre2_compile_context *cc = pcre2_compile_context_create(v->gctx);
    if (!cc) {
        weft_free(pat);
        return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
    }
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)(pat ? pat : re), PCRE2_ZERO_TERMINATED, opts,
                                     &err, &erroff, cc);
    pcre2_compile_context_free(cc);
    weft_free(pat);
    if (!code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return weft_error(WEFT_EUNSUPPORTED, "tokenizer: pre-tokenizer '%s': regex error at %zu: %s",
                          v->pre_name, (size_t)erroff, (const char *)msg);
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* without JIT the interpreter runs */
    st->code = code;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Loading. */

/* Open-addressing table size: a power of two, at most half full. */
static size_t table_cap(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

static int load_ids(const gguf_file *g, const char *key, int32_t n_tokens, int32_t *id)
{
    uint32_t u;
    int rc = gguf_get_u32(g, key, &u);
    if (rc == WEFT_ENOTFOUND) return 0;
    if (rc == WEFT_EFORMAT) { /* e.g. -1 for "none" */
        weft_log(1, "tokenizer: %s is not a token id, using %d\n", key, *id);
        return 0;
    }
    if (rc < 0) return rc;
    if (u >= (uint32_t)n_tokens) {
        weft_log(1, "tokenizer: %s = %u is out of the vocabulary, using %d\n", key, u, *id);
        return 0;
    }
    *id = (int32_t)u;
    return 0;
}

static int load_bool(const gguf_file *g, const char *key, bool *b)
{
    int rc = gguf_get_bool(g, key, b);
    return rc == WEFT_ENOTFOUND ? 0 : rc;
}

static int32_t lookup_str(const tok_vocab *v, const char *s) { return lookup(v, s, strlen(s)); }

/* Growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static int sbuf_add(sbuf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = weft_realloc(b->p, cap);
        if (!p) return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

/* The piece of a token as llama.cpp's token_to_piece(special = true). */
static int make_piece(const tok_vocab *v, int32_t id, sbuf *out)
{
    size_t len;
    const char *t = tok_text(v, id, &len);
    uint16_t a = v->attr[id];
    if (a & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED))
        return sbuf_add(out, t, len);
    if (v->kind == TOK_KIND_SPM) {
        if (a & TOK_ATTR_NORMAL) {
            for (size_t i = 0; i < len;) {
                if (i + 3 <= len && memcmp(t + i, "\xe2\x96\x81", 3) == 0) {
                    if (sbuf_add(out, " ", 1)) return WEFT_ENOMEM;
                    i += 3;
                } else {
                    if (sbuf_add(out, t + i, 1)) return WEFT_ENOMEM;
                    i++;
                }
            }
            return 0;
        }
        if (a & TOK_ATTR_BYTE) {
            /* "<0xNN>": llama.cpp reads the two hex digits after "<0x" */
            char hex[3] = {len > 3 ? t[3] : 0, len > 4 ? t[4] : 0, 0};
            char byte = (char)strtol(hex, NULL, 16);
            return sbuf_add(out, &byte, 1);
        }
        return 0;
    }
    if (!(a & TOK_ATTR_NORMAL)) return 0;
    /* byte-level: each code point of the text stands for one byte */
    for (size_t off = 0; off < len;) {
        uint32_t c = utf8_next((const uint8_t *)t, len, &off);
        if (c < 0x144 && cpt_byte[c] >= 0) {
            char byte = (char)cpt_byte[c];
            if (sbuf_add(out, &byte, 1)) return WEFT_ENOMEM;
        } else {
            /* llama.cpp's llama_decode_text marks it like this */
            uint8_t u[4];
            size_t n = utf8_put(u, c);
            char tmp[16];
            if (sbuf_add(out, "[UNK_BYTE_0x", 12)) return WEFT_ENOMEM;
            for (size_t k = 0; k < n; k++) {
                snprintf(tmp, sizeof tmp, "%02x", u[k]);
                if (sbuf_add(out, tmp, 2)) return WEFT_ENOMEM;
            }
            if (sbuf_add(out, t, len) || sbuf_add(out, "]", 1)) return WEFT_ENOMEM;
        }
    }
    return 0;
}

static int cmp_special(const void *pa, const void *pb, void *ctx)
{
    const tok_vocab *v = ctx;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    if (v->text_len[a] != v->text_len[b]) return v->text_len[a] > v->text_len[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

static const char *const eot_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                        "<|endoftext|>", "<EOT>", "_<EOT>",
                                        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                        "<end_of_utterance>", NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
                                            "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
                                            "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>", NULL};
static const char *const fim_suf_texts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
                                            "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>",
                                            "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>", NULL};
static const char *const fim_mid_texts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
                                            "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>",
                                            "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>", NULL};
static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
                                            "<reponame>", NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};
static const char *const eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>",
                                        "<|call|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
                                        "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
                                        NULL};

/* llama.cpp finds some special tokens by their text and forces them to be
 * control tokens; the choices below mirror its load(). (It takes the first
 * candidate in hash-map order; we take the first in list order.) */
static void detect_by_text(tok_vocab *v, const char *const *texts, int32_t *id)
{
    if (*id >= 0) return;
    for (; *texts; texts++) {
        int32_t i = lookup_str(v, *texts);
        if (i >= 0) {
            *id = i;
            v->attr[i] |= TOK_ATTR_CONTROL;
            return;
        }
    }
}

static int load_specials(tok_vocab *v, const gguf_file *g)
{
    int32_t sep = -1, mask = -1, fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1,
            fim_rep = -1, fim_sep = -1;
    int rc;
    if (v->kind == TOK_KIND_SPM) {
        v->bos = v->n_tokens > 1 ? 1 : -1;
        v->eos = v->n_tokens > 2 ? 2 : -1;
        v->unk = 0;
    } else {
        v->bos = v->eos = v->unk = -1;
    }
    v->eot = v->eom = v->pad = -1;
    struct {
        const char *key;
        int32_t *id;
    } keys[] = {
        {"tokenizer.ggml.bos_token_id", &v->bos},
        {"tokenizer.ggml.eos_token_id", &v->eos},
        {"tokenizer.ggml.eot_token_id", &v->eot},
        {"tokenizer.ggml.eom_token_id", &v->eom},
        {"tokenizer.ggml.unknown_token_id", &v->unk},
        {"tokenizer.ggml.seperator_token_id", &sep},
        {"tokenizer.ggml.padding_token_id", &v->pad},
        {"tokenizer.ggml.mask_token_id", &mask},
        {"tokenizer.ggml.fim_pre_token_id", &fim_pre},
        {"tokenizer.ggml.fim_suf_token_id", &fim_suf},
        {"tokenizer.ggml.fim_mid_token_id", &fim_mid},
        {"tokenizer.ggml.fim_pad_token_id", &fim_pad},
        {"tokenizer.ggml.fim_rep_token_id", &fim_rep},
        {"tokenizer.ggml.fim_sep_token_id", &fim_sep},
        {"tokenizer.ggml.prefix_token_id", &fim_pre},
        {"tokenizer.ggml.suffix_token_id", &fim_suf},
        {"tokenizer.ggml.middle_token_id", &fim_mid},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if ((rc = load_ids(g, keys[i].key, v->n_tokens, keys[i].id)) < 0) return rc;
    if ((rc = load_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos)) < 0) return rc;
    if ((rc = load_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos)) < 0) return rc;

    detect_by_text(v, eot_texts, &v->eot);
    detect_by_text(v, eom_texts, &v->eom);
    detect_by_text(v, fim_pre_texts, &fim_pre);
    detect_by_text(v, fim_suf_texts, &fim_suf);
    detect_by_text(v, fim_mid_texts, &fim_mid);
    detect_by_text(v, fim_pad_texts, &fim_pad);
    detect_by_text(v, fim_rep_texts, &fim_rep);
    detect_by_text(v, fim_sep_texts, &fim_sep);

    v->is_eog = weft_calloc((size_t)v->n_tokens, 1);
    if (!v->is_eog) return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
    if (fim_pad >= 0) v->is_eog[fim_pad] = 1;
    if (fim_rep >= 0) v->is_eog[fim_rep] = 1;
    if (fim_sep >= 0) v->is_eog[fim_sep] = 1;
    for (const char *const *t = eog_texts; *t; t++) {
        int32_t i = lookup_str(v, *t);
        if (i >= 0) {
            v->is_eog[i] = 1;
            v->attr[i] |= TOK_ATTR_CONTROL;
        }
    }
    /* gpt-oss: always rendered */
    static const char *const gpt_oss[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};
    for (const char *const *t = gpt_oss; *t; t++) {
        int32_t i = lookup_str(v, *t);
        if (i >= 0) v->attr[i] = TOK_ATTR_USER_DEFINED;
    }
    if (v->eos >= 0) v->is_eog[v->eos] = 1;
    if (v->eot >= 0) v->is_eog[v->eot] = 1;
    if (v->eom >= 0) v->is_eog[v->eom] = 1;
    {
        /* o200k_harmony: <|end|> is not the end of generation when
         * <|return|> and <|call|> are there */
        int32_t ret = lookup_str(v, "<|return|>"), call = lookup_str(v, "<|call|>"),
                end_id = lookup_str(v, "<|end|>");
        if (ret >= 0 && v->is_eog[ret] && call >= 0 && v->is_eog[call] && end_id >= 0 &&
            v->is_eog[end_id]) {
            v->is_eog[end_id] = 0;
            v->attr[end_id] = TOK_ATTR_USER_DEFINED;
        }
    }

    /* Phi-3: special tokens eat the spaces after them (llama.cpp keys this
     * on the model name) */
    const char *name;
    size_t name_len;
    if (gguf_get_str(g, "general.name", &name, &name_len) == 0) {
        char lower[256];
        size_t n = name_len < sizeof lower - 1 ? name_len : sizeof lower - 1;
        for (size_t i = 0; i < n; i++)
            lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
        lower[n] = 0;
        if (strstr(lower, "phi-3") || strstr(lower, "phi3")) {
            for (int32_t i = 0; i < v->n_tokens; i++)
                if (v->attr[i] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN))
                    v->attr[i] |= TOK_ATTR_RSTRIP;
            int32_t id;
            if ((id = lookup(v, "</s>", 4)) >= 0) v->attr[id] |= TOK_ATTR_RSTRIP;
            if ((id = lookup(v, "<unk>", 5)) >= 0) v->attr[id] &= (uint16_t)~TOK_ATTR_RSTRIP;
            if ((id = lookup(v, "<s>", 3)) >= 0) v->attr[id] &= (uint16_t)~TOK_ATTR_RSTRIP;
            if ((id = lookup(v, "<|endoftext|>", 13)) >= 0)
                v->attr[id] &= (uint16_t)~TOK_ATTR_RSTRIP;
        }
    }
    return 0;
}

static int load_tokens(tok_vocab *v, const gguf_file *g)
{
    const char *key = "tokenizer.ggml.tokens";
    int64_t ki = gguf_find_key(g, key);
    if (ki < 0) return weft_error(WEFT_EFORMAT, "tokenizer: missing %s", key);
    if (gguf_kv_type(g, ki) != GGUF_TYPE_ARRAY || gguf_kv_arr_type(g, ki) != GGUF_TYPE_STRING)
        return weft_error(WEFT_EFORMAT, "tokenizer: %s is not an array of strings", key);
    uint64_t n = gguf_kv_arr_len(g, ki);
    if (n == 0 || n > INT32_MAX / 2)
        return weft_error(WEFT_EFORMAT, "tokenizer: %s has %llu entries", key, (unsigned long long)n);
    v->n_tokens = (int32_t)n;

    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        int rc = gguf_get_arr_str(g, key, i, &s, &len);
        if (rc < 0) return rc;
        len = strnlen(s, len);
        total += (len ? len : 32) + 1;
    }
    if (total > UINT32_MAX) return weft_error(WEFT_EFORMAT, "tokenizer: token texts too large");
    v->text_blob = weft_malloc(total);
    v->text_off = weft_malloc(n * sizeof *v->text_off);
    v->text_len = weft_malloc(n * sizeof *v->text_len);
    v->score = weft_calloc(n, sizeof *v->score);
    v->attr = weft_malloc(n * sizeof *v->attr);
    if (!v->text_blob || !v->text_off || !v->text_len || !v->score || !v->attr)
        return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        gguf_get_arr_str(g, key, i, &s, &len);
        /* llama.cpp reads the text as a C string: it ends at a NUL */
        len = strnlen(s, len);
        v->text_off[i] = (uint32_t)off;
        if (len == 0) {
            /* llama.cpp renames empty tokens */
            len = (size_t)snprintf(v->text_blob + off, 32, "[EMPTY_%llu]", (unsigned long long)i);
        } else {
            memcpy(v->text_blob + off, s, len);
        }
        v->text_blob[off + len] = 0;
        v->text_len[i] = (uint32_t)len;
        v->attr[i] = TOK_ATTR_NORMAL;
        off += len + 1;
    }

    /* text -> id; a repeated text maps to its last id, as in llama.cpp */
    size_t cap = table_cap(n);
    v->text_hash = weft_malloc(cap * sizeof *v->text_hash);
    if (!v->text_hash) return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
    memset(v->text_hash, 0xFF, cap * sizeof *v->text_hash);
    v->text_hash_mask = (uint32_t)(cap - 1);
    for (int32_t id = 0; id < (int32_t)n; id++) {
        const char *t = v->text_blob + v->text_off[id];
        uint32_t i = (uint32_t)hash_bytes(t, v->text_len[id]) & v->text_hash_mask;
        for (;;) {
            int32_t o = v->text_hash[i];
            if (o < 0) {
                v->text_hash[i] = id;
                break;
            }
            if (v->text_len[o] == v->text_len[id] && memcmp(v->text_blob + v->text_off[o], t, v->text_len[id]) == 0) {
                v->text_hash[i] = id;
                break;
            }
            i = (i + 1) & v->text_hash_mask;
        }
    }

    /* scores and types */
    gguf_type type;
    const void *data;
    uint64_t cnt;
    int rc = gguf_get_arr(g, "tokenizer.ggml.scores", &type, &data, &cnt);
    if (rc == 0) {
        if (type != GGUF_TYPE_FLOAT32)
            return weft_error(WEFT_EFORMAT, "tokenizer: tokenizer.ggml.scores is not f32");
        if (cnt != n)
            return weft_error(WEFT_EFORMAT,
                              "tokenizer: tokenizer.ggml.scores has %llu entries for %llu tokens",
                              (unsigned long long)cnt, (unsigned long long)n);
        memcpy(v->score, data, n * sizeof(float));
    } else if (rc != WEFT_ENOTFOUND) {
        return rc;
    }
    rc = gguf_get_arr(g, "tokenizer.ggml.token_type", &type, &data, &cnt);
    if (rc == 0) {
        size_t w;
        switch (type) {
        case GGUF_TYPE_INT32: case GGUF_TYPE_UINT32: w = 4; break;
        case GGUF_TYPE_INT16: case GGUF_TYPE_UINT16: w = 2; break;
        case GGUF_TYPE_INT8: case GGUF_TYPE_UINT8: w = 1; break;
        default:
            return weft_error(WEFT_EFORMAT, "tokenizer: tokenizer.ggml.token_type is not an integer array");
        }
        if (cnt != n)
            return weft_error(WEFT_EFORMAT,
                              "tokenizer: tokenizer.ggml.token_type has %llu entries for %llu tokens",
                              (unsigned long long)cnt, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            int32_t t = 0;
            const uint8_t *p = (const uint8_t *)data + i * w;
            if (w == 4) memcpy(&t, p, 4);
            else if (w == 2) { int16_t s16; memcpy(&s16, p, 2); t = s16; }
            else t = (int8_t)*p;
            switch (t) {
            case 1: v->attr[i] = TOK_ATTR_NORMAL; break;
            case 2: v->attr[i] = TOK_ATTR_UNKNOWN; break;
            case 3: v->attr[i] = TOK_ATTR_CONTROL; break;
            case 4: v->attr[i] = TOK_ATTR_USER_DEFINED; break;
            case 5: v->attr[i] = TOK_ATTR_UNUSED; break;
            case 6: v->attr[i] = TOK_ATTR_BYTE; break;
            default: v->attr[i] = TOK_ATTR_UNDEFINED; break;
            }
        }
    } else if (rc != WEFT_ENOTFOUND) {
        return rc;
    }
    return 0;
}

static int load_merges(tok_vocab *v, const gguf_file *g)
{
    const char *key = "tokenizer.ggml.merges";
    int64_t ki = gguf_find_key(g, key);
    if (ki < 0) return weft_error(WEFT_EFORMAT, "tokenizer: gpt2 tokenizer without %s", key);
    if (gguf_kv_type(g, ki) != GGUF_TYPE_ARRAY || gguf_kv_arr_type(g, ki) != GGUF_TYPE_STRING)
        return weft_error(WEFT_EFORMAT, "tokenizer: %s is not an array of strings", key);
    uint64_t n = gguf_kv_arr_len(g, ki);
    if (n > INT32_MAX / 4) return weft_error(WEFT_EFORMAT, "tokenizer: too many merges");
    size_t cap = table_cap(n);
    v->merge_key = weft_malloc(cap * sizeof *v->merge_key);
    v->merge_rank = weft_malloc(cap * sizeof *v->merge_rank);
    v->merge_res = weft_malloc(cap * sizeof *v->merge_res);
    if (!v->merge_key || !v->merge_rank || !v->merge_res)
        return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
    memset(v->merge_key, 0xFF, cap * sizeof *v->merge_key);
    v->merge_mask = (uint32_t)(cap - 1);
    v->n_merges = (uint32_t)n;

    sbuf cat = {0};
    int rc = 0;
    for (uint64_t r = 0; r < n; r++) {
        const char *s;
        size_t len;
        if ((rc = gguf_get_arr_str(g, key, r, &s, &len)) < 0) break;
        len = strnlen(s, len);
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) {
            rc = weft_error(WEFT_EFORMAT, "tokenizer: merge %llu ('%.*s') is not \"left right\"",
                            (unsigned long long)r, (int)(len > 64 ? 64 : len), s);
            break;
        }
        size_t la = (size_t)(sp - s), lb = len - la - 1;
        int32_t a = lookup(v, s, la), b = lookup(v, sp + 1, lb);
        cat.n = 0;
        if ((rc = sbuf_add(&cat, s, la)) < 0 || (rc = sbuf_add(&cat, sp + 1, lb)) < 0) break;
        int32_t m = lookup(v, cat.p, cat.n);
        if (a < 0 || b < 0 || m < 0) {
            rc = weft_error(WEFT_EFORMAT,
                            "tokenizer: merge %llu ('%.*s') refers to '%.*s', which is not in the "
                            "vocabulary",
                            (unsigned long long)r, (int)(len > 64 ? 64 : len), s,
                            (int)(a < 0 ? la : b < 0 ? lb : cat.n),
                            a < 0 ? s : b < 0 ? sp + 1 : cat.p);
            break;
        }
        uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint32_t i = (uint32_t)mix64(k) & v->merge_mask;
        while (v->merge_key[i] != MERGE_EMPTY && v->merge_key[i] != k) i = (i + 1) & v->merge_mask;
        if (v->merge_key[i] == MERGE_EMPTY) { /* a repeated merge keeps its first rank */
            v->merge_key[i] = k;
            v->merge_rank[i] = (uint32_t)r;
            v->merge_res[i] = m;
        }
    }
    weft_free(cat.p);
    return rc;
}

static int load_pieces(tok_vocab *v)
{
    sbuf b = {0};
    v->piece_off = weft_malloc((size_t)v->n_tokens * sizeof *v->piece_off);
    v->piece_len = weft_malloc((size_t)v->n_tokens * sizeof *v->piece_len);
    if (!v->piece_off || !v->piece_len) return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
    for (int32_t id = 0; id < v->n_tokens; id++) {
        size_t start = b.n;
        int rc = make_piece(v, id, &b);
        if (rc < 0) {
            weft_free(b.p);
            return rc;
        }
        if (b.n > UINT32_MAX) {
            weft_free(b.p);
            return weft_error(WEFT_EFORMAT, "tokenizer: token texts too large");
        }
        v->piece_off[id] = (uint32_t)start;
        v->piece_len[id] = (uint32_t)(b.n - start);
    }
    if (!b.p && sbuf_add(&b, "", 0) < 0) return WEFT_ENOMEM;
    v->piece_blob = b.p;
    return 0;
}

int tok_load(const gguf_file *g, tok_vocab **out)
{
    if (!g || !out) return weft_error(WEFT_EINVAL, "tok_load: NULL argument");
    *out = NULL;
    pthread_once(&ucd_once, ucd_init);
    pthread_once(&bytes_once, bytes_init);

    const char *s;
    size_t len;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &s, &len);
    if (rc == WEFT_ENOTFOUND) return weft_error(WEFT_EFORMAT, "tokenizer: missing tokenizer.ggml.model");
    if (rc < 0) return rc;

    tok_vocab *v = weft_calloc(1, sizeof *v);
    if (!v) return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
    v->bos = v->eos = v->eot = v->eom = v->unk = v->pad = -1;

    const pre_def *pre = NULL;
    if (len == 4 && memcmp(s, "gpt2", 4) == 0) {
        v->kind = TOK_KIND_BPE;
        const char *p;
        size_t plen;
        rc = gguf_get_str(g, "tokenizer.ggml.pre", &p, &plen);
        if (rc == WEFT_ENOTFOUND) {
            weft_log(1, "tokenizer: no tokenizer.ggml.pre, using the default pre-tokenizer\n");
            p = "default";
            plen = 7;
        } else if (rc < 0) {
            goto fail;
        }
        snprintf(v->pre_name, sizeof v->pre_name, "%.*s", (int)(plen < 63 ? plen : 63), p);
        pre = plen < sizeof v->pre_name ? pre_find(v->pre_name) : NULL;
        if (!pre) {
            rc = weft_error(WEFT_EUNSUPPORTED, "tokenizer: unknown pre-tokenizer '%.*s'",
                            (int)(plen > 64 ? 64 : plen), p);
            goto fail;
        }
        v->ignore_merges = pre->ignore_merges;
        v->add_bos = pre->add_bos;
    } else if (len == 5 && memcmp(s, "llama", 5) == 0) {
        v->kind = TOK_KIND_SPM;
        v->add_bos = true;
        v->add_space_prefix = true;
        snprintf(v->pre_name, sizeof v->pre_name, "spm");
    } else {
        rc = weft_error(WEFT_EUNSUPPORTED, "tokenizer: unsupported tokenizer model '%.*s'",
                        (int)(len > 64 ? 64 : len), s);
        goto fail;
    }
    if ((rc = load_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix)) < 0) goto fail;

    if ((rc = load_tokens(v, g)) < 0) goto fail;
    if (v->kind == TOK_KIND_BPE && (rc = load_merges(v, g)) < 0) goto fail;
    if ((rc = load_specials(v, g)) < 0) goto fail;

    /* special tokens, longest text first */
    v->special = weft_malloc((size_t)v->n_tokens * sizeof *v->special);
    if (!v->special) {
        rc = weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < v->n_tokens; i++)
        if (v->attr[i] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN))
            v->special[v->n_special++] = i;
    qsort_r(v->special, (size_t)v->n_special, sizeof *v->special, cmp_special, v);

    for (int b = 0; b < 256; b++) {
        uint8_t e[4];
        size_t n = byte_enc((uint8_t)b, e);
        v->byte_sym[b] = v->kind == TOK_KIND_BPE ? lookup(v, e, n) : -1;
        if (v->kind == TOK_KIND_SPM) {
            char hex[8];
            uint8_t c = (uint8_t)b;
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            v->byte_tok[b] = lookup(v, hex, 6);
            if (v->byte_tok[b] < 0) v->byte_tok[b] = lookup(v, &c, 1);
        } else {
            v->byte_tok[b] = -1;
        }
    }

    if ((rc = load_pieces(v)) < 0) goto fail;

    if (pre) {
        pcre2_general_context *gc = pcre2_general_context_create(pcre_malloc, pcre_free, NULL);
        if (!gc) {
            rc = weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
            goto fail;
        }
        v->gctx = gc;
        for (int i = 0; i < 7 && pre->regex[i]; i++) {
            if ((rc = step_compile(v, pre->regex[i], &v->steps[v->n_steps])) < 0) goto fail;
            v->n_steps++;
        }
    }

    if (gguf_get_str(g, "tokenizer.chat_template", &s, &len) == 0) {
        len = strnlen(s, len);
        v->chat_template = weft_malloc(len + 1);
        if (!v->chat_template) {
            rc = weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
            goto fail;
        }
        memcpy(v->chat_template, s, len);
        v->chat_template[len] = 0;
    }
    *out = v;
    return 0;

fail:
    tok_free(v);
    return rc;
}

void tok_free(tok_vocab *v)
{
    if (!v) return;
    for (int i = 0; i < v->n_steps; i++)
        if (v->steps[i].code) pcre2_code_free(v->steps[i].code);
    if (v->gctx) pcre2_general_context_free(v->gctx);
    weft_free(v->text_blob);
    weft_free(v->text_off);
    weft_free(v->text_len);
    weft_free(v->score);
    weft_free(v->attr);
    weft_free(v->text_hash);
    weft_free(v->merge_key);
    weft_free(v->merge_rank);
    weft_free(v->merge_res);
    weft_free(v->piece_blob);
    weft_free(v->piece_off);
    weft_free(v->piece_len);
    weft_free(v->is_eog);
    weft_free(v->special);
    weft_free(v->chat_template);
    weft_free(v);
}

int32_t tok_n_vocab(const tok_vocab *v) { return v->n_tokens; }
int32_t tok_bos(const tok_vocab *v) { return v->bos; }
int32_t tok_eos(const tok_vocab *v) { return v->eos; }
bool tok_add_bos(const tok_vocab *v) { return v->add_bos; }

bool tok_is_eog(const tok_vocab *v, int32_t id)
{
    return id >= 0 && id < v->n_tokens && v->is_eog[id];
}

int32_t tok_find(const tok_vocab *v, const char *text)
{
    return text ? lookup(v, text, strlen(text)) : -1;
}

/* ------------------------------------------------------------------------ */
/* Encoding. All scratch memory of one call lives here. */

typedef struct {
    size_t off, len;
    int32_t tok; /* -1: raw text */
} frag;

typedef struct {
    int32_t id;
    int32_t prev, next;
} bpe_sym;

typedef struct {
    uint32_t rank;
    int32_t left, right;
    int32_t lid, rid, res;
} bpe_pair;

typedef struct {
    uint32_t start, n;
    int32_t prev, next;
} spm_sym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;
} spm_pair;

typedef struct {
    int32_t *ids;
    size_t n_ids, cap_ids;

    frag *fr, *fr2;
    size_t n_fr, cap_fr, cap_fr2;

    uint32_t *cpts;     /* code points of the fragment */
    uint32_t *coff;     /* byte offset of each code point in clean[] (n + 1) */
    uint8_t *clean;     /* the fragment re-encoded (invalid UTF-8 -> U+FFFD) */
    uint8_t *coll;      /* collapsed text, one byte per code point */
    uint8_t *wide;      /* UTF-8 with non-ASCII whitespace as \v */
    uint32_t *woff;     /* code point -> byte offset in wide[] */
    uint32_t *wcpt;     /* byte offset in wide[] -> code point */
    size_t cap_cpts, cap_coff, cap_clean, cap_coll, cap_wide, cap_woff, cap_wcpt;

    size_t *seg, *seg2; /* piece lengths, in code points */
    size_t n_seg, cap_seg, cap_seg2;

    bpe_sym *bsym;
    bpe_pair *bheap;
    spm_sym *ssym;
    spm_pair *sheap;
    size_t cap_sym, n_heap, cap_heap;
    uint8_t *buf;
    size_t cap_buf;

    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
} enc;

/* Grows p to hold `need` elements; on failure p stays as it was. */
static void *grow_(void *p, size_t *cap, size_t need, size_t elem)
{
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = weft_realloc(p, c * elem);
    if (!q) {
        weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
        return NULL;
    }
    *cap = c;
    return q;
}

#define GROW(p, cap, need)                                                                  \
    __extension__({                                                                         \
        int rc_ = 0;                                                                        \
        if ((size_t)(need) > (cap)) {                                                       \
            void *q_ = grow_((p), &(cap), (need), sizeof *(p));                             \
            if (q_) (p) = q_;                                                               \
            else rc_ = WEFT_ENOMEM;                                                         \
        }                                                                                   \
        rc_;                                                                                \
    })

static int push_id(enc *e, int32_t id)
{
    if (GROW(e->ids, e->cap_ids, e->n_ids + 1)) return WEFT_ENOMEM;
    e->ids[e->n_ids++] = id;
    return 0;
}

static void enc_free(enc *e)
{
    weft_free(e->ids);
    weft_free(e->fr);
    weft_free(e->fr2);
    weft_free(e->cpts);
    weft_free(e->coff);
    weft_free(e->clean);
    weft_free(e->coll);
    weft_free(e->wide);
    weft_free(e->woff);
    weft_free(e->wcpt);
    weft_free(e->seg);
    weft_free(e->seg2);
    weft_free(e->bsym);
    weft_free(e->bheap);
    weft_free(e->ssym);
    weft_free(e->sheap);
    weft_free(e->buf);
    if (e->md) pcre2_match_data_free(e->md);
    if (e->mctx) pcre2_match_context_free(e->mctx);
    if (e->jit) pcre2_jit_stack_free(e->jit);
}

/* --- special tokens ----------------------------------------------------- */

static bool c_isspace(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static int frag_push(frag **a, size_t *n, size_t *cap, size_t off, size_t len, int32_t tok)
{
    if (GROW(*a, *cap, *n + 1)) return WEFT_ENOMEM;
    (*a)[(*n)++] = (frag){off, len, tok};
    return 0;
}

/* True when [at, at + n) overlaps one of the n_plain ranges plain[2i]..plain[2i+1]. */
static bool in_plain(const size_t *plain, int n_plain, size_t at, size_t n)
{
    for (int i = 0; i < n_plain; i++)
        if (at < plain[2 * i + 1] && at + n > plain[2 * i]) return true;
    return false;
}

/* Splits text into special tokens and plain fragments. Control and unknown
 * tokens only with parse_special, and not where they would overlap a plain
 * range (a chat message's content: tok_encode_guarded). */
static int partition(const tok_vocab *v, enc *e, const char *text, size_t len, bool parse_special,
                     const size_t *plain, int n_plain)
{
    e->n_fr = 0;
    if (len == 0) return 0;
    if (frag_push(&e->fr, &e->n_fr, &e->cap_fr, 0, len, -1)) return WEFT_ENOMEM;
    for (int32_t k = 0; k < v->n_special; k++) {
        int32_t id = v->special[k];
        uint16_t a = v->attr[id];
        if (!parse_special && (a & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN))) continue;
        size_t slen;
        const char *st = tok_text(v, id, &slen);
        size_t n2 = 0;
        bool changed = false;
        for (size_t f = 0; f < e->n_fr; f++) {
            frag fr = e->fr[f];
            if (fr.tok >= 0) {
                if (frag_push(&e->fr2, &n2, &e->cap_fr2, fr.off, fr.len, fr.tok)) return WEFT_ENOMEM;
                continue;
            }
            size_t off = fr.off, flen = fr.len, from = fr.off; /* search from `from` */
            const bool guard = n_plain > 0 && (a & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN));
            for (;;) {
                const char *m = memmem(text + from, off + flen - from, st, slen);
                if (!m) break;
                size_t mo = (size_t)(m - text);
                if (guard && in_plain(plain, n_plain, mo, slen)) { /* content: plain text */
                    from = mo + 1;
                    continue;
                }
                changed = true;
                size_t left = mo - off;
                if (a & TOK_ATTR_LSTRIP)
                    while (left > 0 && c_isspace((uint8_t)text[off + left - 1])) left--;
                if (left > 0 && frag_push(&e->fr2, &n2, &e->cap_fr2, off, left, -1)) return WEFT_ENOMEM;
                if (frag_push(&e->fr2, &n2, &e->cap_fr2, 0, 0, id)) return WEFT_ENOMEM;
                size_t roff = mo + slen, rlen = off + flen - roff;
                if (a & TOK_ATTR_RSTRIP)
                    while (rlen > 0 && c_isspace((uint8_t)text[roff])) roff++, rlen--;
                off = from = roff;
                flen = rlen;
                if (flen == 0) break;
            }
            if (flen > 0 && frag_push(&e->fr2, &n2, &e->cap_fr2, off, flen, -1)) return WEFT_ENOMEM;
        }
        if (!changed) continue;
        frag *t = e->fr;
        e->fr = e->fr2;
        e->fr2 = t;
        size_t tc = e->cap_fr;
        e->cap_fr = e->cap_fr2;
        e->cap_fr2 = tc;
        e->n_fr = n2;
    }
    return 0;
}

/* --- pre-tokenizer ------------------------------------------------------ */

static int seg_push(enc *e, size_t len)
{
    if (len == 0) return 0;
    if (GROW(e->seg2, e->cap_seg2, e->n_seg + 1)) return WEFT_ENOMEM;
    e->seg2[e->n_seg++] = len;
    return 0;
}

/* The GPT-2 and Llama 3 patterns, matched directly on the code points
 * rather than through PCRE2 (llama.cpp, the reference, also special-cases
 * them):
 *
 *   GPT-2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+
 *            |\s+(?!\S)|\s+
 *   Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *            | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * Each pattern is a function giving the end of the match that starts at a
 * position: the alternatives are tried left to right, each with the greedy
 * backtracking result a backtracking engine would give, and the first that
 * matches wins. \p{L}, \p{N} and \s come from the tables above. Every code
 * point is a letter, a number, white space or "other", so some alternative
 * always matches and the matches tile the piece. The piece being split is
 * the whole subject: nothing is seen past its end (so "(?!\S)" holds there).
 * (?i) folds ASCII only, as llama.cpp does. */

typedef struct {
    const uint32_t *cpt;
    size_t end; /* end of the piece being split */
} subject;

static inline uint16_t subj_flags(const subject *s, size_t i)
{
    if (i >= s->end) return 0;
    uint32_t c = s->cpt[i];
    return c < 0x10000 ? ucd_bmp[c] : ucd_flags(c); /* the common case inline */
}

static inline bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

/* [^\s\p{L}\p{N}]: any code point that is not white space, letter or number */
static inline bool is_other(uint16_t f) { return f && !(f & (UF_WHITESPACE | UF_LETTER | UF_NUMBER)); }

/* End of the longest run at i whose flags have one of the bits in mask. */
static inline size_t run_of(const subject *s, size_t i, uint16_t mask)
{
    while (subj_flags(s, i) & mask) i++;
    return i;
}

static inline size_t run_of_other(const subject *s, size_t i)
{
    while (is_other(subj_flags(s, i))) i++;
    return i;
}

/* 's|'t|'re|'ve|'m|'ll|'d, optionally ASCII-case-insensitive; i if none. */
static inline size_t match_suffix(const subject *s, size_t i, bool fold)
{
    if (s->cpt[i] != '\'' || i + 1 >= s->end) return i;
    uint32_t a = s->cpt[i + 1], b = i + 2 < s->end ? s->cpt[i + 2] : 0;
    if (fold) {
        if (a >= 'A' && a <= 'Z') a += 'a' - 'A';
        if (b >= 'A' && b <= 'Z') b += 'a' - 'A';
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
}

/* \s+(?!\S)|\s+ at i, which is white space: the whole run, less its last
 * code point when something other than white space follows it (that one
 * then goes with the next match), unless the run is a single code point. */
static size_t match_spaces(const subject *s, size_t i)
{
    size_t end = run_of(s, i, UF_WHITESPACE);
    return end - i > 1 && end < s->end ? end - 1 : end;
}

static size_t next_gpt2(const subject *s, size_t i)
{
    size_t end = match_suffix(s, i, false);
    if (end > i) return end;
    /* " ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+": the space is in none of the
     * three classes, so it is taken when, and only when, one follows */
    size_t j = i + (s->cpt[i] == ' ');
    uint16_t f = subj_flags(s, j);
    if (f & UF_LETTER) return run_of(s, j + 1, UF_LETTER);
    if (f & UF_NUMBER) return run_of(s, j + 1, UF_NUMBER);
    if (is_other(f)) return run_of_other(s, j + 1);
    if (subj_flags(s, i) & UF_WHITESPACE) return match_spaces(s, i);
    return i + 1; /* not reached: see above */
}

static size_t next_llama3(const subject *s, size_t i)
{
    size_t end = match_suffix(s, i, true);
    if (end > i) return end;
    uint32_t c = s->cpt[i];
    uint16_t f = subj_flags(s, i);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (f & UF_LETTER) return run_of(s, i, UF_LETTER);
    if (!is_crlf(c) && !(f & UF_NUMBER) && (end = run_of(s, i + 1, UF_LETTER)) > i + 1) return end;
    /* \p{N}{1,3} */
    if (f & UF_NUMBER) {
        end = i + 1;
        while (end < i + 3 && (subj_flags(s, end) & UF_NUMBER)) end++;
        return end;
    }
    /* " ?[^\s\p{L}\p{N}]+[\r\n]*" */
    size_t j = i + (c == ' ');
    if (is_other(subj_flags(s, j))) {
        end = run_of_other(s, j + 1);
        while (end < s->end && is_crlf(s->cpt[end])) end++;
        return end;
    }
    if (!(f & UF_WHITESPACE)) return i + 1; /* not reached */
    /* \s*[\r\n]+: up to the last CR or LF of the white-space run */
    end = run_of(s, i, UF_WHITESPACE);
    for (size_t k = end; k > i; k--)
        if (is_crlf(s->cpt[k - 1])) return k;
    return match_spaces(s, i);
}

/* Splits each of the n_in pieces by the pattern that next() matches
 * (inlined, so that next() is a direct call in each caller). */
static inline __attribute__((always_inline)) int split_by(enc *e, size_t n_in, size_t (*next)(const subject *, size_t))
{
    size_t start = 0;
    e->n_seg = 0;
    for (size_t p = 0; p < n_in; p++) {
        subject s = {e->cpts, start + e->seg[p]};
        for (size_t i = start; i < s.end;) {
            size_t end = next(&s, i);
            if (seg_push(e, end - i)) return WEFT_ENOMEM;
            i = end;
        }
        start = s.end;
    }
    return 0;
}

static int split_gpt2(enc *e, size_t n_in) { return split_by(e, n_in, next_gpt2); }
static int split_llama3(enc *e, size_t n_in) { return split_by(e, n_in, next_llama3); }

static int build_collapsed(enc *e, size_t n)
{
    if (GROW(e->coll, e->cap_coll, n + 1)) return WEFT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = e->cpts[i];
        if (c < 128) {
            e->coll[i] = (uint8_t)c;
            continue;
        }
        uint16_t f = ucd_flags(c);
        if (f & UF_WHITESPACE) {
            e->coll[i] = 0x0B;
            continue;
        }
        switch (f & UF_CATEGORIES) {
        case UF_NUMBER: e->coll[i] = 0xD1; break;
        case UF_LETTER: e->coll[i] = 0xD2; break;
        case UF_PUNCTUATION: e->coll[i] = 0xD3; break;
        case UF_ACCENT_MARK: e->coll[i] = 0xD4; break;
        case UF_SYMBOL: e->coll[i] = 0xD5; break;
        default: e->coll[i] = 0xD0; break;
        }
    }
    return 0;
}

static int build_wide(enc *e, size_t n)
{
    /* sized for the worst case: 4 bytes per code point */
    if (GROW(e->wide, e->cap_wide, n * 4 + 1) || GROW(e->woff, e->cap_woff, n + 1) ||
        GROW(e->wcpt, e->cap_wcpt, n * 4 + 1))
        return WEFT_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = e->cpts[i];
        if (c > 0x7F && (ucd_flags(c) & UF_WHITESPACE)) c = 0x0B;
        /* a lone surrogate (from CESU-style input) cannot be UTF-8 for
         * PCRE2; std::wregex sees a plain non-space character, and so does
         * PCRE2 with a private-use one, which no pre-tokenizer class names */
        if (c >= 0xD800 && c <= 0xDFFF) c = 0xE000;
        e->woff[i] = (uint32_t)o;
        size_t k = utf8_put(e->wide + o, c);
        for (size_t j = 0; j < k; j++) e->wcpt[o + j] = (uint32_t)i;
        o += k;
    }
    e->woff[n] = (uint32_t)o;
    e->wcpt[o] = (uint32_t)n;
    return 0;
}

/* std::regex_iterator over each piece: matches and the gaps between them
 * become pieces. */
static int split_regex(const tok_vocab *v, enc *e, const tok_step *st, size_t n_in)
{
    pcre2_code *code = st->code;
    if (!e->md) {
        e->md = pcre2_match_data_create(4, v->gctx);
        e->mctx = pcre2_match_context_create(v->gctx);
        e->jit = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, v->gctx);
        if (!e->md || !e->mctx || !e->jit) return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
        pcre2_jit_stack_assign(e->mctx, NULL, e->jit);
    }
    size_t start = 0;
    e->n_seg = 0;
    for (size_t s = 0; s < n_in; s++) {
        size_t cs = start, cl = e->seg[s];
        start += cl;
        const uint8_t *subj;
        size_t slen;
        if (st->collapsed) {
            subj = e->coll + cs;
            slen = cl;
        } else {
            subj = e->wide + e->woff[cs];
            slen = e->woff[cs + cl] - e->woff[cs];
        }
#define TO_CPT(b) (st->collapsed ? (b) : e->wcpt[e->woff[cs] + (b)] - cs)
        size_t off = 0, last = 0; /* in code points: last = end of the previous match */
        uint32_t opts = 0;
        while (off <= slen) {
            int rc = pcre2_match(code, subj, slen, off, opts, e->md, e->mctx);
            if (rc == PCRE2_ERROR_NOMATCH) {
                if (!opts) break;
                /* an empty match could not be extended: step one character */
                if (off >= slen) break;
                off++;
                if (!st->collapsed)
                    while (off < slen && (subj[off] & 0xC0) == 0x80) off++;
                opts = 0;
                continue;
            }
            if (rc < 0) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return weft_error(WEFT_EINVAL, "tokenizer: pre-tokenizer regex failed: %s",
                                  (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
            size_t ms = TO_CPT(ov[0]), me = TO_CPT(ov[1]);
            if (ms > last && seg_push(e, ms - last)) return WEFT_ENOMEM;
            if (seg_push(e, me - ms)) return WEFT_ENOMEM;
            last = me;
            off = ov[1];
            opts = ov[0] == ov[1] ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
        }
        if (last < cl && seg_push(e, cl - last)) return WEFT_ENOMEM;
#undef TO_CPT
    }
    return 0;
}

/* --- BPE ------------------------------------------------------------------ */

static bool bpe_less(const bpe_pair *a, const bpe_pair *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void bpe_heap_push(enc *e, bpe_pair p)
{
    bpe_pair *h = e->bheap;
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!bpe_less(&p, &h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = p;
}

static bpe_pair bpe_heap_pop(enc *e)
{
    bpe_pair *h = e->bheap;
    bpe_pair top = h[0], last = h[--e->n_heap];
    size_t n = e->n_heap, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bpe_less(&h[c + 1], &h[c])) c++;
        if (!bpe_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = last;
    return top;
}

static void bpe_add_pair(const tok_vocab *v, enc *e, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return;
    bpe_sym *sym = e->bsym;
    int32_t a = sym[l].id, b = sym[r].id;
    uint32_t rank;
    int32_t res;
    if (a < 0 || b < 0 || !merge_find(v, a, b, &rank, &res)) return;
    bpe_heap_push(e, (bpe_pair){rank, l, r, a, b, res});
}

static int bpe_word(const tok_vocab *v, enc *e, const uint8_t *w, size_t n)
{
    if (n == 0) return 0;
    if (v->ignore_merges) {
        if (GROW(e->buf, e->cap_buf, 2 * n)) return WEFT_ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) k += byte_enc(w[i], e->buf + k);
        int32_t id = lookup(v, e->buf, k);
        if (id >= 0) return push_id(e, id);
    }
    if (GROW(e->bsym, e->cap_sym, n) || GROW(e->bheap, e->cap_heap, 3 * n)) return WEFT_ENOMEM;
    bpe_sym *sym = e->bsym;
    for (size_t i = 0; i < n; i++)
        sym[i] = (bpe_sym){v->byte_sym[w[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
    e->n_heap = 0;
    for (size_t i = 1; i < n; i++) bpe_add_pair(v, e, (int32_t)i - 1, (int32_t)i);
    while (e->n_heap) {
        bpe_pair p = bpe_heap_pop(e);
        if (sym[p.left].id != p.lid || sym[p.right].id != p.rid) continue; /* outdated */
        sym[p.left].id = p.res;
        sym[p.right].id = -2;
        sym[p.left].next = sym[p.right].next;
        if (sym[p.right].next >= 0) sym[sym[p.right].next].prev = p.left;
        bpe_add_pair(v, e, sym[p.left].prev, p.left);
        bpe_add_pair(v, e, p.left, sym[p.left].next);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0) {
            if (push_id(e, sym[i].id)) return WEFT_ENOMEM;
            continue;
        }
        /* a byte whose character is not a token: llama.cpp tries each byte
         * of the character's UTF-8 as a one-byte token */
        uint8_t ch[4];
        size_t k = byte_enc(w[i], ch);
        for (size_t j = 0; j < k; j++) {
            int32_t id = lookup(v, &ch[j], 1);
            if (id >= 0 && push_id(e, id)) return WEFT_ENOMEM;
        }
    }
    return 0;
}

static int bpe_fragment(const tok_vocab *v, enc *e, const char *text, size_t len)
{
    /* code points, and the text re-encoded from them */
    if (GROW(e->cpts, e->cap_cpts, len + 1) || GROW(e->coff, e->cap_coff, len + 1) ||
        GROW(e->clean, e->cap_clean, 3 * len + 1))
        return WEFT_ENOMEM;
    size_t n = 0, o = 0;
    for (size_t off = 0; off < len;) {
        uint32_t c = utf8_next((const uint8_t *)text, len, &off);
        e->cpts[n] = c;
        e->coff[n++] = (uint32_t)o;
        o += utf8_put(e->clean + o, c);
    }
    e->coff[n] = (uint32_t)o;

    if (GROW(e->seg, e->cap_seg, 1)) return WEFT_ENOMEM;
    e->seg[0] = n;
    size_t n_seg = 1;
    bool have_coll = false, have_wide = false;
    for (int i = 0; i < v->n_steps; i++) {
        const tok_step *st = &v->steps[i];
        int rc;
        e->n_seg = 0;
        if (st->kind == TOK_STEP_GPT2) {
            rc = split_gpt2(e, n_seg);
        } else if (st->kind == TOK_STEP_LLAMA3) {
            rc = split_llama3(e, n_seg);
        } else {
            if (st->collapsed && !have_coll) {
                if ((rc = build_collapsed(e, n)) < 0) return rc;
                have_coll = true;
            }
            if (!st->collapsed && !have_wide) {
                if ((rc = build_wide(e, n)) < 0) return rc;
                have_wide = true;
            }
            rc = split_regex(v, e, st, n_seg);
        }
        if (rc < 0) return rc;
        size_t *t = e->seg;
        e->seg = e->seg2;
        e->seg2 = t;
        size_t tc = e->cap_seg;
        e->cap_seg = e->cap_seg2;
        e->cap_seg2 = tc;
        n_seg = e->n_seg;
    }

    size_t start = 0;
    for (size_t s = 0; s < n_seg; s++) {
        size_t b0 = e->coff[start], b1 = e->coff[start + e->seg[s]];
        start += e->seg[s];
        int rc = bpe_word(v, e, e->clean + b0, b1 - b0);
        if (rc < 0) return rc;
    }
    return 0;
}

/* --- SentencePiece BPE ---------------------------------------------------- */

static bool spm_less(const spm_pair *a, const spm_pair *b)
{
    /* "a comes out first": higher score, then the leftmost */
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void spm_heap_push(enc *e, spm_pair p)
{
    spm_pair *h = e->sheap;
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!spm_less(&p, &h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = p;
}

static spm_pair spm_heap_pop(enc *e)
{
    spm_pair *h = e->sheap;
    spm_pair top = h[0], last = h[--e->n_heap];
    size_t n = e->n_heap, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && spm_less(&h[c + 1], &h[c])) c++;
        if (!spm_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = last;
    return top;
}

static void spm_add_pair(const tok_vocab *v, enc *e, const uint8_t *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return;
    spm_sym *sym = e->ssym;
    uint32_t size = sym[l].n + sym[r].n;
    int32_t id = lookup(v, s + sym[l].start, size);
    if (id < 0) return;
    spm_heap_push(e, (spm_pair){v->score[id], l, r, size});
}

static int spm_fragment(const tok_vocab *v, enc *e, const char *text, size_t len, bool prefix)
{
    /* spaces become U+2581 */
    size_t cap = 3 * (len + 1);
    if (GROW(e->buf, e->cap_buf, cap)) return WEFT_ENOMEM;
    uint8_t *s = e->buf;
    size_t n = 0;
    if (prefix) {
        memcpy(s, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            s[n++] = (uint8_t)text[i];
        }
    }
    if (n == 0) return 0;
    if (GROW(e->ssym, e->cap_sym, n) || GROW(e->sheap, e->cap_heap, 3 * n)) return WEFT_ENOMEM;
    s = e->buf;
    spm_sym *sym = e->ssym;
    size_t ns = 0;
    for (size_t off = 0; off < n;) {
        size_t k = utf8_len(s[off]);
        if (k > n - off) k = n - off;
        sym[ns] = (spm_sym){(uint32_t)off, (uint32_t)k, (int32_t)ns - 1, -1};
        off += k;
        sym[ns].next = off == n ? -1 : (int32_t)ns + 1;
        ns++;
    }
    e->n_heap = 0;
    for (size_t i = 1; i < ns; i++) spm_add_pair(v, e, s, (int32_t)i - 1, (int32_t)i);
    while (e->n_heap) {
        spm_pair p = spm_heap_pop(e);
        spm_sym *L = &sym[p.left], *R = &sym[p.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != p.size) continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) sym[R->next].prev = p.left;
        spm_add_pair(v, e, s, L->prev, p.left);
        spm_add_pair(v, e, s, p.left, L->next);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        int32_t id = lookup(v, s + sym[i].start, sym[i].n);
        if (id >= 0) {
            if (push_id(e, id)) return WEFT_ENOMEM;
            continue;
        }
        for (uint32_t j = 0; j < sym[i].n; j++) {
            id = v->byte_tok[s[sym[i].start + j]];
            if (id < 0) id = v->unk; /* llama.cpp throws here */
            if (id >= 0 && push_id(e, id)) return WEFT_ENOMEM;
        }
    }
    return 0;
}

static int encode(const tok_vocab *v, const char *text, size_t len, bool add_special, bool parse_special,
                  const size_t *plain, int n_plain, int32_t **ids, int32_t *n_ids);

int tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special,
               bool parse_special, int32_t **ids, int32_t *n_ids)
{
    return encode(v, text, len, add_special, parse_special, NULL, 0, ids, n_ids);
}

int tok_encode_guarded(const tok_vocab *v, const char *text, size_t len, bool add_special,
                       const size_t *plain, int n_plain, int32_t **ids, int32_t *n_ids)
{
    if (n_plain < 0 || (n_plain > 0 && !plain)) return weft_error(WEFT_EINVAL, "tok_encode_guarded: bad ranges");
    return encode(v, text, len, add_special, true, plain, n_plain, ids, n_ids);
}

static int encode(const tok_vocab *v, const char *text, size_t len, bool add_special, bool parse_special,
                  const size_t *plain, int n_plain, int32_t **ids, int32_t *n_ids)
{
    if (!v || (!text && len) || !ids || !n_ids) return weft_error(WEFT_EINVAL, "tok_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (len > (size_t)INT32_MAX / 4) return weft_error(WEFT_ERANGE, "tok_encode: text of %zu bytes is too long", len);
    enc e = {0};
    int rc = partition(v, &e, text, len, parse_special, plain, n_plain);
    if (rc < 0) goto fail;
    if (add_special && v->add_bos && v->bos >= 0 && (rc = push_id(&e, v->bos)) < 0) goto fail;
    bool prev_special = true;
    for (size_t f = 0; f < e.n_fr; f++) {
        frag fr = e.fr[f];
        if (fr.tok >= 0) {
            if ((rc = push_id(&e, fr.tok)) < 0) goto fail;
            prev_special = true;
            continue;
        }
        if (v->kind == TOK_KIND_BPE)
            rc = bpe_fragment(v, &e, text + fr.off, fr.len);
        else
            rc = spm_fragment(v, &e, text + fr.off, fr.len, v->add_space_prefix && prev_special);
        if (rc < 0) goto fail;
        prev_special = false;
    }
    if (add_special && v->add_eos && v->eos >= 0 && (rc = push_id(&e, v->eos)) < 0) goto fail;
    if ((rc = GROW(e.ids, e.cap_ids, 1)) < 0) goto fail;
    *ids = e.ids;
    *n_ids = (int32_t)e.n_ids;
    e.ids = NULL;
    enc_free(&e);
    return 0;
fail:
    enc_free(&e);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Decoding. */

int tok_piece(const tok_vocab *v, int32_t id, char *buf, size_t cap, bool render_special)
{
    if (!v || id < 0 || id >= v->n_tokens) return weft_error(WEFT_EINVAL, "tok_piece: token id %d out of range", (int)id);
    if (!render_special && (v->attr[id] & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL))) return 0;
    size_t n = v->piece_len[id];
    if (n > cap) n = cap;
    if (n) memcpy(buf, v->piece_blob + v->piece_off[id], n);
    return (int)n;
}

int tok_decode(const tok_vocab *v, const int32_t *ids, int32_t n, bool render_special, char **out)
{
    if (!v || (!ids && n) || n < 0 || !out) return weft_error(WEFT_EINVAL, "tok_decode: bad argument");
    *out = NULL;
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= v->n_tokens)
            return weft_error(WEFT_EINVAL, "tok_decode: token id %d out of range", (int)ids[i]);
        total += v->piece_len[ids[i]];
    }
    char *s = weft_malloc(total + 1);
    if (!s) return weft_error(WEFT_ENOMEM, "tokenizer: out of memory");
    size_t o = 0;
    /* SPM: the space that add_space_prefix put before the text goes away
     * again when it would be the first byte of the output (after a BOS
     * rendered as nothing) */
    bool strip = v->kind == TOK_KIND_SPM && v->add_space_prefix;
    for (int32_t i = 0; i < n; i++) {
        int k = tok_piece(v, ids[i], s + o, total - o, render_special);
        if (strip && k > 0) {
            if (o == 0 && s[0] == ' ') {
                memmove(s, s + 1, (size_t)k - 1);
                k--;
            }
            strip = false;
        }
        o += (size_t)k;
    }
    s[o] = 0;
    *out = s;
    return 0;
}

/* Bytes at the end of s[0..n) that start a UTF-8 sequence not yet complete. */
static size_t utf8_incomplete_tail(const uint8_t *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t b = s[n - back];
        if ((b & 0xC0) == 0x80) continue; /* continuation: look further back */
        size_t need = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

size_t tok_utf8_push(tok_utf8_stream *s, const char *piece, size_t len, char *out)
{
    size_t n = (size_t)s->n_pending;
    memcpy(out, s->pending, n);
    if (len) memcpy(out + n, piece, len);
    n += len;
    size_t keep = utf8_incomplete_tail((const uint8_t *)out, n);
    memcpy(s->pending, out + n - keep, keep);
    s->n_pending = (int)keep;
    return n - keep;
}

size_t tok_utf8_flush(tok_utf8_stream *s, char *out)
{
    if (s->n_pending == 0) return 0;
    s->n_pending = 0;
    memcpy(out, "\xef\xbf\xbd", 3);
    return 3;
}

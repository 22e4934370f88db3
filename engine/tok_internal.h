/*
 * engine/tok_internal.h — the tokenizer's private state, shared by
 * tokenizer.c (encode/decode) and chat.c (chat templates).
 */
#ifndef WEFT_TOK_INTERNAL_H
#define WEFT_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/tokenizer.h"

/* Token attributes, as llama.cpp's llama_token_attr (bit flags). */
enum {
    TOK_ATTR_UNDEFINED = 0,
    TOK_ATTR_UNKNOWN = 1 << 0,
    TOK_ATTR_UNUSED = 1 << 1,
    TOK_ATTR_NORMAL = 1 << 2,
    TOK_ATTR_CONTROL = 1 << 3,
    TOK_ATTR_USER_DEFINED = 1 << 4,
    TOK_ATTR_BYTE = 1 << 5,
    TOK_ATTR_LSTRIP = 1 << 7,
    TOK_ATTR_RSTRIP = 1 << 8,
};

typedef enum { TOK_KIND_BPE, TOK_KIND_SPM } tok_kind;

/* One step of the BPE pre-tokenizer: each step splits every piece the
 * previous step produced (llama.cpp's unicode_regex_split). */
typedef enum {
    TOK_STEP_GPT2,    /* GPT-2 pattern, matched by tokenizer.c's own matcher */
    TOK_STEP_LLAMA3,  /* Llama 3 pattern, likewise */
    TOK_STEP_REGEX,   /* PCRE2, on the category-collapsed text or the code points */
} tok_step_kind;

typedef struct {
    tok_step_kind kind;
    bool collapsed; /* regex runs on one byte per code point (category bytes) */
    void *code;     /* pcre2_code_8 * */
} tok_step;

struct tok_vocab {
    tok_kind kind;
    int32_t n_tokens;

    /* Token texts, NUL-terminated, in one block. */
    char *text_blob;
    uint32_t *text_off;
    uint32_t *text_len;
    float *score;
    uint16_t *attr;

    /* text -> id (open addressing; -1 = empty slot). */
    int32_t *text_hash;
    uint32_t text_hash_mask;

    /* BPE merges: (left id, right id) -> rank and merged id. */
    uint64_t *merge_key;
    uint32_t *merge_rank;
    int32_t *merge_res;
    uint32_t merge_mask;
    uint32_t n_merges;

    /* Decoded pieces (llama.cpp's token_to_piece with special = true). */
    char *piece_blob;
    uint32_t *piece_off;
    uint32_t *piece_len;

    uint8_t *is_eog;
    int32_t *special;  /* control / user-defined / unknown ids, longest text first */
    int32_t n_special;

    int32_t bos, eos, eot, eom, unk, pad;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;

    /* BPE: initial symbol of each byte (token of its byte-level character). */
    int32_t byte_sym[256];
    /* SPM: byte-fallback token of each byte (<0xNN>), -1 if none. */
    int32_t byte_tok[256];

    char pre_name[64];
    tok_step steps[8];
    int n_steps;
    void *gctx; /* pcre2_general_context_8 * */

    char *chat_template; /* NULL if absent */
};

/* Text of token id (NUL-terminated), its length in *len. */
static inline const char *tok_text(const tok_vocab *v, int32_t id, size_t *len)
{
    if (len) *len = v->text_len[id];
    return v->text_blob + v->text_off[id];
}

#endif

/*
 * weft/tokenizer.h — tokenizers read from GGUF metadata, detokenization and
 * chat templates.
 *
 * Two kinds (tokenizer.ggml.model): "gpt2" — byte-level BPE with a
 * pre-tokenizer chosen by tokenizer.ggml.pre (smollm, qwen2, llama3/llama-bpe,
 * gpt2/default), regexes run with PCRE2 — and "llama" — SentencePiece-style BPE
 * over scores with byte fallback (<0xNN> tokens) and the "▁" space marker.
 * Token ids, special/control tokens and merges behave as llama.cpp's.
 */
#ifndef WEFT_TOKENIZER_H
#define WEFT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/common.h"
#include "weft/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tok_vocab tok_vocab;

/* Builds a tokenizer from the metadata of `g` (copies what it needs: g may be
 * closed afterwards). WEFT_EFORMAT for missing/inconsistent metadata,
 * WEFT_EUNSUPPORTED for an unknown tokenizer model or pre-tokenizer. */
WEFT_API int tok_load(const gguf_file *g, tok_vocab **out);
WEFT_API void tok_free(tok_vocab *v);

WEFT_API int32_t tok_n_vocab(const tok_vocab *v);
WEFT_API int32_t tok_bos(const tok_vocab *v); /* -1 if none */
WEFT_API int32_t tok_eos(const tok_vocab *v); /* -1 if none */
WEFT_API bool tok_add_bos(const tok_vocab *v); /* tokenizer.ggml.add_bos_token */
/* End of generation: eos, eot, <|im_end|>, <|eot_id|> and the like. */
WEFT_API bool tok_is_eog(const tok_vocab *v, int32_t id);
/* Id of the token whose text is exactly `text`, -1 if none. */
WEFT_API int32_t tok_find(const tok_vocab *v, const char *text);

/* Tokenizes text[0..len). add_special: prepend BOS when the model asks for it
 * (as llama.cpp's add_special). parse_special: text like "<|im_start|>" that
 * spells a special/control token becomes that token (else it is plain text).
 * On success *ids is allocated with weft_malloc (caller frees with weft_free)
 * and *n_ids set. */
WEFT_API int tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special,
                        bool parse_special, int32_t **ids, int32_t *n_ids);
/* tok_encode with parse_special, except inside the n_plain byte ranges
 * plain[2i] .. plain[2i + 1] of text: there the text of a control token is
 * plain text. A chat prompt's own special tokens parse; a message's content
 * cannot forge one (tok_chat_encode). */
WEFT_API int tok_encode_guarded(const tok_vocab *v, const char *text, size_t len, bool add_special,
                                const size_t *plain, int n_plain, int32_t **ids, int32_t *n_ids);

/* The bytes of token `id` (byte-level decoding applied, "▁" → " ", <0xNN> →
 * the byte). Control tokens render as their text only if render_special.
 * Returns the length written (at most cap; may be a partial UTF-8 sequence),
 * or WEFT_EINVAL for an id out of range. */
WEFT_API int tok_piece(const tok_vocab *v, int32_t id, char *buf, size_t cap,
                       bool render_special);

/* Detokenizes a whole sequence into a NUL-terminated weft_malloc'd string. */
WEFT_API int tok_decode(const tok_vocab *v, const int32_t *ids, int32_t n, bool render_special,
                        char **out);

/* Streaming detokenization that never splits a UTF-8 character: push pieces,
 * get back the longest complete prefix; the incomplete tail waits for the
 * next push. */
typedef struct {
    char pending[8];
    int n_pending;
} tok_utf8_stream;
/* Appends piece to the stream; writes complete text to out (cap >= len + 8)
 * and returns its length. */
WEFT_API size_t tok_utf8_push(tok_utf8_stream *s, const char *piece, size_t len, char *out);
/* Flushes what is left (an invalid tail is emitted as U+FFFD). */
WEFT_API size_t tok_utf8_flush(tok_utf8_stream *s, char *out);

/* Chat templates, recognised from tokenizer.chat_template. */
typedef enum {
    TOK_CHAT_UNKNOWN = 0,
    TOK_CHAT_CHATML,  /* <|im_start|>role\n...<|im_end|>\n — SmolLM2, Qwen */
    TOK_CHAT_LLAMA3,  /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    TOK_CHAT_LLAMA2,  /* [INST] ... [/INST] — Llama 2, Mistral, TinyLlama-style */
} tok_chat_style;

typedef struct {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
    size_t content_len;  /* bytes of content, which may hold NUL bytes (a model's
                            output can); 0: up to content's terminating NUL */
} tok_chat_msg;

/* Recognises the template of the model (empty or absent: TOK_CHAT_UNKNOWN). */
WEFT_API tok_chat_style tok_chat_style_of(const tok_vocab *v);
WEFT_API const char *tok_chat_style_name(tok_chat_style s);
/* Renders messages as the model's template would (including a default system
 * message that the template adds when none is given). WEFT_EUNSUPPORTED when
 * the template is not recognised. *out is weft_malloc'd and NUL-terminated;
 * *out_len (when not NULL) gets its length, which counts the contents' NUL
 * bytes, if any (strlen would stop at the first). */
WEFT_API int tok_chat_render(const tok_vocab *v, const tok_chat_msg *msgs, int n_msgs,
                             bool add_generation_prompt, char **out, size_t *out_len);
/* Renders msgs as tok_chat_render does and tokenizes the text: the
 * template's special tokens parse, the messages' contents (the ranges the
 * renderer wrote them to) are plain text — "<|im_end|>" typed by a user
 * stays text and cannot end a turn. BOS as tok_encode's add_special. *text
 * (when not NULL) gets the rendered text, weft_malloc'd and NUL-terminated,
 * and *text_len (when not NULL) its length: the text holds the contents'
 * NUL bytes, if any, so strlen() would undercount it. */
WEFT_API int tok_chat_encode(const tok_vocab *v, const tok_chat_msg *msgs, int n_msgs,
                             bool add_generation_prompt, char **text, size_t *text_len,
                             int32_t **ids, int32_t *n_ids);

#ifdef __cplusplus
}
#endif
#endif

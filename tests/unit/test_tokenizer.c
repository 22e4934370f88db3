/*
 * Tokenizer unit tests on tiny vocabularies written with the GGUF writer:
 * byte-level BPE (merge order, pre-tokenizer splits, special tokens),
 * SentencePiece BPE (scores, space prefix, byte fallback), decoding, the
 * UTF-8 stream, chat templates and bad metadata.
 */
#define _GNU_SOURCE /* memmem */
#include <unistd.h>

#include "test.h"
#include "weft/tokenizer.h"

/* --- building vocabularies ------------------------------------------------ */

typedef struct {
    char *text[512];
    int32_t type[512];
    float score[512];
    int n;
} toks;

static int tok_add(toks *t, const char *text, int32_t type, float score)
{
    t->text[t->n] = strdup(text);
    t->type[t->n] = type;
    t->score[t->n] = score;
    return t->n++;
}

static void toks_free(toks *t)
{
    for (int i = 0; i < t->n; i++) free(t->text[i]);
    t->n = 0;
}

/* GPT-2's byte -> character map, written out independently of the engine. */
static void byte_char(int b, char out[3])
{
    int n = 0, cp = -1;
    for (int x = 0; x < 256; x++) {
        bool printable = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
        int c = printable ? x : 256 + n++;
        if (x == b) cp = c;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* Saves w, opens it and loads its tokenizer; returns tok_load's code. */
static int load_writer(gguf_writer *w, tok_vocab **v)
{
    char path[] = "/tmp/weft_tok_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -100;
    close(fd);
    int rc = gguf_writer_save(w, path);
    gguf_writer_destroy(w);
    if (rc != 0) {
        unlink(path);
        return rc;
    }
    gguf_file *g = NULL;
    rc = gguf_open(path, &g);
    if (rc == 0) {
        rc = tok_load(g, v);
        gguf_close(g);
    }
    unlink(path);
    return rc;
}

static void set_tokens(gguf_writer *w, toks *t, bool scores)
{
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)t->text, (uint64_t)t->n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, t->type, (uint64_t)t->n);
    if (scores) gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, t->score, (uint64_t)t->n);
}

/* Byte-level vocabulary: the 256 byte characters (ids 0..255), merged
 * tokens, then specials. */
static const char *const bpe_merges[] = {
    "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "Ġ Ġ", "Ġ b",
    "b c", "a b", "a a", "1 2", "Ã ©", "ð Ł", "Ļ Ĥ", "ðŁ ĻĤ", "Ġ h", "Ġh ello", "e l", "el l",
    "ell o",
};
static const char *const bpe_merged[] = {
    "he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "ĠĠ", "Ġb", "bc", "ab",
    "aa", "12", "Ã©", "ðŁ", "ĻĤ", "ðŁĻĤ", "Ġh", "ello", "el", "ell", "Ġhello",
};

enum { ID_ENDOFTEXT = 280, ID_IM_START, ID_IM_END, ID_TOOL, ID_X, ID_XY };

static gguf_writer *bpe_writer(const char *pre, const char *chat_template, toks *t)
{
    char c[3];
    for (int b = 0; b < 256; b++) {
        byte_char(b, c);
        tok_add(t, c, 1, 0);
    }
    for (size_t i = 0; i < sizeof bpe_merged / sizeof bpe_merged[0]; i++) tok_add(t, bpe_merged[i], 1, 0);
    while (t->n < ID_ENDOFTEXT) {
        char filler[32];
        snprintf(filler, sizeof filler, "<unused%d>", t->n);
        tok_add(t, filler, 5, 0);
    }
    tok_add(t, "<|endoftext|>", 3, 0);
    tok_add(t, "<|im_start|>", 3, 0);
    tok_add(t, "<|im_end|>", 3, 0);
    tok_add(t, "<tool>", 4, 0);
    tok_add(t, "<|x|>", 3, 0);
    tok_add(t, "<|x|>y", 3, 0);

    gguf_writer *w = gguf_writer_create();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre) gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    set_tokens(w, t, false);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", bpe_merges,
                            sizeof bpe_merges / sizeof bpe_merges[0]);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", ID_IM_START);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", ID_ENDOFTEXT);
    if (chat_template) gguf_writer_set_str(w, "tokenizer.chat_template", chat_template);
    return w;
}

static tok_vocab *bpe_vocab(const char *pre, const char *chat_template)
{
    toks t = {0};
    tok_vocab *v = NULL;
    int rc = load_writer(bpe_writer(pre, chat_template, &t), &v);
    toks_free(&t);
    if (rc != 0) fprintf(stderr, "  bpe_vocab: %d %s\n", rc, weft_last_error());
    return v;
}

/* Id of a byte's character in the BPE vocabulary above. */
static int32_t B(int b) { return b; }

static int32_t id_of(tok_vocab *v, const char *s)
{
    int32_t id = tok_find(v, s);
    if (id < 0) fprintf(stderr, "  no token '%s'\n", s);
    return id;
}

/* Encodes and compares with the expected ids. */
static bool enc_is(tok_vocab *v, const char *text, bool add, bool special, const int32_t *want, int n_want)
{
    int32_t *ids = NULL, n = -1;
    int rc = tok_encode(v, text, strlen(text), add, special, &ids, &n);
    bool ok = rc == 0 && n == n_want && (n == 0 || memcmp(ids, want, (size_t)n * sizeof *ids) == 0);
    if (!ok) {
        fprintf(stderr, "  \"%s\": rc %d, got", text, rc);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, ", want");
        for (int i = 0; i < n_want; i++) fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    weft_free(ids);
    return ok;
}

#define ENC_IS(v, text, add, special, ...)                                                  \
    do {                                                                                    \
        const int32_t want_[] = {__VA_ARGS__};                                              \
        ASSERT(enc_is(v, text, add, special, want_, (int)(sizeof want_ / sizeof want_[0]))); \
    } while (0)

static bool round_trips(tok_vocab *v, const char *text, bool special)
{
    int32_t *ids = NULL, n = 0;
    char *back = NULL;
    bool ok = tok_encode(v, text, strlen(text), false, special, &ids, &n) == 0 &&
              tok_decode(v, ids, n, special, &back) == 0 && strcmp(back, text) == 0;
    if (!ok) fprintf(stderr, "  \"%s\" decodes to \"%s\"\n", text, back ? back : "(null)");
    weft_free(ids);
    weft_free(back);
    return ok;
}

/* --- byte-level BPE --------------------------------------------------------- */

TEST(bpe_merges_apply_in_rank_order)
{
    tok_vocab *v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    ENC_IS(v, "hello", false, false, id_of(v, "hello"));
    /* "b c" has a lower rank than "a b": abc -> a|bc, never ab|c */
    ENC_IS(v, "abc", false, false, B('a'), id_of(v, "bc"));
    /* equal ranks: the leftmost pair first */
    ENC_IS(v, "aaa", false, false, id_of(v, "aa"), B('a'));
    ENC_IS(v, "hello world", false, false, id_of(v, "hello"), id_of(v, "Ġworld"));
    /* "h e" (rank 0) beats "Ġ h" (rank 19), so " hello" never becomes the
     * token "Ġhello" (reachable only through "Ġh" + "ello") */
    ENC_IS(v, " hello", false, false, B(' '), id_of(v, "hello"));
    tok_free(v);
}

TEST(bpe_empty_string_gives_no_tokens)
{
    tok_vocab *v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    int32_t *ids = NULL, n = -1;
    ASSERT_EQ_INT(tok_encode(v, "", 0, false, true, &ids, &n), 0);
    ASSERT_EQ_INT(n, 0);
    ASSERT(ids != NULL);
    weft_free(ids);
    tok_free(v);
}

TEST(bpe_smollm_splits_digits_one_by_one)
{
    tok_vocab *v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    ENC_IS(v, "12", false, false, B('1'), B('2'));
    ENC_IS(v, "a1234", false, false, B('a'), B('1'), B('2'), B('3'), B('4'));
    tok_free(v);
    /* plain GPT-2 keeps numbers together, so the "1 2" merge applies */
    v = bpe_vocab("gpt-2", NULL);
    ASSERT(v != NULL);
    ENC_IS(v, "12", false, false, id_of(v, "12"));
    tok_free(v);
}

TEST(bpe_whitespace_runs_leave_the_last_space_to_the_word)
{
    tok_vocab *v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    /* \s+(?!\S): "a", "  ", " b" */
    ENC_IS(v, "a   b", false, false, B('a'), id_of(v, "ĠĠ"), id_of(v, "Ġb"));
    /* trailing run stays whole */
    ENC_IS(v, "a  ", false, false, B('a'), id_of(v, "ĠĠ"));
    /* a newline before a word is its own piece */
    ENC_IS(v, "\nb", false, false, B('\n'), B('b'));
    ENC_IS(v, "\t\n  ", false, false, B('\t'), B('\n'), id_of(v, "ĠĠ"));
    ASSERT(round_trips(v, " \t\n\n   x  y \r\n", false));
    tok_free(v);
}

TEST(bpe_unicode_is_byte_level)
{
    tok_vocab *v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    /* é = C3 A9 -> "Ã" "©" -> merged */
    ENC_IS(v, "é", false, false, id_of(v, "Ã©"));
    /* ü = C3 BC: no merge, two byte tokens */
    ENC_IS(v, "ü", false, false, B(0xC3), B(0xBC));
    /* 🙂 = F0 9F 99 82 */
    ENC_IS(v, "🙂", false, false, id_of(v, "ðŁĻĤ"));
    ASSERT(round_trips(v, "naïve café 🙂 中文 Ελληνικά", false));
    /* invalid UTF-8 becomes U+FFFD (EF BF BD), as in llama.cpp */
    ENC_IS(v, "\xff", false, false, B(0xEF), B(0xBF), B(0xBD));
    tok_free(v);
}

TEST(bpe_special_tokens_split_only_when_asked)
{
    tok_vocab *v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    ENC_IS(v, "<|im_start|>hello<|im_end|>", false, true, ID_IM_START, id_of(v, "hello"), ID_IM_END);
    /* without parse_special the same text is plain text */
    int32_t *ids = NULL, n = 0;
    ASSERT_EQ_INT(tok_encode(v, "<|im_start|>", 12, false, false, &ids, &n), 0);
    ASSERT(n > 1);
    for (int i = 0; i < n; i++) ASSERT(ids[i] != ID_IM_START);
    weft_free(ids);
    /* user-defined tokens are always split out */
    ENC_IS(v, "a<tool>b", false, false, B('a'), ID_TOOL, B('b'));
    /* longest special text first */
    ENC_IS(v, "<|x|>y<|x|>", false, true, ID_XY, ID_X);
    ASSERT(round_trips(v, "x<|im_start|>user\nhello<|im_end|>\n", true));
    tok_free(v);
}

TEST(bpe_add_special_follows_add_bos_token)
{
    toks t = {0};
    gguf_writer *w = bpe_writer("smollm", NULL, &t);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    tok_vocab *v = NULL;
    ASSERT_EQ_INT(load_writer(w, &v), 0);
    toks_free(&t);
    ASSERT(tok_add_bos(v));
    ASSERT_EQ_INT(tok_bos(v), ID_IM_START);
    ENC_IS(v, "hello", true, false, ID_IM_START, id_of(v, "hello"));
    ENC_IS(v, "hello", false, false, id_of(v, "hello"));
    tok_free(v);

    v = bpe_vocab("smollm", NULL); /* add_bos_token absent: BPE default is no BOS */
    ASSERT(v != NULL);
    ASSERT(!tok_add_bos(v));
    ENC_IS(v, "hello", true, false, id_of(v, "hello"));
    tok_free(v);
}

TEST(bpe_pieces_and_end_of_generation)
{
    tok_vocab *v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    char buf[64];
    int n = tok_piece(v, id_of(v, "Ġworld"), buf, sizeof buf, false);
    ASSERT_EQ_INT(n, 6);
    ASSERT(memcmp(buf, " world", 6) == 0);
    ASSERT_EQ_INT(tok_piece(v, ID_IM_END, buf, sizeof buf, false), 0);
    ASSERT_EQ_INT(tok_piece(v, ID_IM_END, buf, sizeof buf, true), 10);
    ASSERT(memcmp(buf, "<|im_end|>", 10) == 0);
    ASSERT_EQ_INT(tok_piece(v, ID_TOOL, buf, sizeof buf, false), 6); /* user-defined: always */
    ASSERT_EQ_INT(tok_piece(v, id_of(v, "ðŁĻĤ"), buf, 2, false), 2); /* truncated at cap */
    ASSERT_EQ_INT(tok_piece(v, -1, buf, sizeof buf, false), WEFT_EINVAL);
    ASSERT_EQ_INT(tok_piece(v, tok_n_vocab(v), buf, sizeof buf, false), WEFT_EINVAL);
    ASSERT(tok_is_eog(v, ID_IM_END));
    ASSERT(tok_is_eog(v, ID_ENDOFTEXT));
    ASSERT(!tok_is_eog(v, ID_IM_START));
    ASSERT(!tok_is_eog(v, -1));
    ASSERT_EQ_INT(tok_find(v, "<|im_start|>"), ID_IM_START);
    ASSERT_EQ_INT(tok_find(v, "no such token"), -1);
    char *s = NULL;
    const int32_t ids[] = {ID_IM_START, id_of(v, "hello"), ID_IM_END};
    ASSERT_EQ_INT(tok_decode(v, ids, 3, false, &s), 0);
    ASSERT_STR_EQ(s, "hello");
    weft_free(s);
    ASSERT_EQ_INT(tok_decode(v, ids, 3, true, &s), 0);
    ASSERT_STR_EQ(s, "<|im_start|>hello<|im_end|>");
    weft_free(s);
    tok_free(v);
}

TEST(bpe_llama3_and_qwen2_pre_tokenizers)
{
    tok_vocab *v = bpe_vocab("llama-bpe", NULL);
    ASSERT(v != NULL);
    /* \p{N}{1,3}: "1234" -> "123" "4", and "123" merges to "12" "3" */
    ENC_IS(v, "1234", false, false, id_of(v, "12"), B('3'), B('4'));
    ENC_IS(v, "hello world", false, false, id_of(v, "hello"), id_of(v, "Ġworld"));
    ASSERT(tok_add_bos(v)); /* llama3's default */
    ASSERT(round_trips(v, "It's 12345 DON'T\r\n\r\n  x", false));
    tok_free(v);
    v = bpe_vocab("qwen2", NULL);
    ASSERT(v != NULL);
    ENC_IS(v, "12", false, false, B('1'), B('2'));
    ASSERT(round_trips(v, "It's 12345 DON'T\r\n\r\n  x", false));
    tok_free(v);
}

/* Piece boundaries of the Llama 3 pattern, seen through the merges "Ġ Ġ"
 * and "Ġ b", which cannot cross a piece. */
TEST(bpe_llama3_whitespace_pieces)
{
    tok_vocab *v = bpe_vocab("llama-bpe", NULL);
    ASSERT(v != NULL);
    /* \s+(?!\S) leaves the last space to the word */
    ENC_IS(v, "a   b", false, false, B('a'), id_of(v, "ĠĠ"), id_of(v, "Ġb"));
    /* \s*[\r\n]+ runs to the last newline, spaces before it included */
    ENC_IS(v, "  \n b", false, false, id_of(v, "ĠĠ"), B('\n'), id_of(v, "Ġb"));
    ENC_IS(v, "\n \n  b", false, false, B('\n'), B(' '), B('\n'), B(' '), id_of(v, "Ġb"));
    /* [^\r\n\p{L}\p{N}]?\p{L}+: a space or a sign leads the word, a newline does not */
    ENC_IS(v, "!b\nb", false, false, B('!'), B('b'), B('\n'), B('b'));
    /* a trailing run stays whole; a lone trailing space is a piece */
    ENC_IS(v, "b  ", false, false, B('b'), id_of(v, "ĠĠ"));
    ENC_IS(v, "b ", false, false, B('b'), B(' '));
    /* ASCII-case-insensitive contractions, and their GPT-2 counterparts */
    ASSERT(round_trips(v, "IT'S it's 'LL 'Ll 're 'x '", false));
    tok_free(v);
    v = bpe_vocab("gpt-2", NULL);
    ASSERT(v != NULL);
    ENC_IS(v, "a   b", false, false, B('a'), id_of(v, "ĠĠ"), id_of(v, "Ġb"));
    ENC_IS(v, "  \n b", false, false, id_of(v, "ĠĠ"), B('\n'), id_of(v, "Ġb"));
    ASSERT(round_trips(v, "IT'S it's 'LL 'Ll 're 'x '", false));
    tok_free(v);
}

TEST(long_text_is_fast_enough_to_finish)
{
    /* 200 KB without a single split point: one huge BPE word */
    size_t n = 200000;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++) s[i] = "ab"[i % 2];
    s[n] = 0;
    tok_vocab *v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    int32_t *ids = NULL, k = 0;
    ASSERT_EQ_INT(tok_encode(v, s, n, false, false, &ids, &k), 0);
    ASSERT_EQ_INT(k, (int)(n / 2));
    ASSERT_EQ_INT(ids[0], id_of(v, "ab"));
    weft_free(ids);
    tok_free(v);
    free(s);
}

/* --- SentencePiece BPE ------------------------------------------------------ */

enum { SPM_UNK = 0, SPM_BOS = 1, SPM_EOS = 2, SPM_BYTE0 = 3 };

static tok_vocab *spm_vocab(int add_space_prefix, const char *chat_template)
{
    toks t = {0};
    tok_add(&t, "<unk>", 2, 0);
    tok_add(&t, "<s>", 3, 0);
    tok_add(&t, "</s>", 3, 0);
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        tok_add(&t, s, 6, 0);
    }
    static const struct {
        const char *t;
        float s;
    } pieces[] = {
        {"▁", -1}, {"h", -20}, {"e", -20}, {"l", -20}, {"o", -20}, {"w", -20}, {"r", -20},
        {"d", -20}, {"▁h", -2}, {"▁he", -5}, {"ll", -3}, {"▁hell", -7}, {"▁hello", -10},
        {"▁w", -4}, {"or", -4.5f}, {"▁wor", -8}, {"ld", -4.6f}, {"▁world", -12}, {"é", -9},
        {"[INST]", 0},
    };
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) tok_add(&t, pieces[i].t, 1, pieces[i].s);
    gguf_writer *w = gguf_writer_create();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    set_tokens(w, &t, true);
    if (add_space_prefix >= 0) gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", add_space_prefix);
    if (chat_template) gguf_writer_set_str(w, "tokenizer.chat_template", chat_template);
    tok_vocab *v = NULL;
    int rc = load_writer(w, &v);
    toks_free(&t);
    if (rc != 0) fprintf(stderr, "  spm_vocab: %d %s\n", rc, weft_last_error());
    return v;
}

TEST(spm_merges_by_score_with_space_prefix)
{
    tok_vocab *v = spm_vocab(-1, NULL);
    ASSERT(v != NULL);
    ASSERT(tok_add_bos(v));
    ENC_IS(v, "hello world", false, false, id_of(v, "▁hello"), id_of(v, "▁world"));
    ENC_IS(v, "hello", true, false, SPM_BOS, id_of(v, "▁hello"));
    /* after a special token the space prefix comes back */
    ENC_IS(v, "<s>hello</s>", false, true, SPM_BOS, id_of(v, "▁hello"), SPM_EOS);
    ENC_IS(v, "", true, false, SPM_BOS);
    tok_free(v);

    v = spm_vocab(0, NULL);
    ASSERT(v != NULL);
    ENC_IS(v, "hello", false, false, id_of(v, "h"), id_of(v, "e"), id_of(v, "ll"), id_of(v, "o"));
    tok_free(v);
}

TEST(spm_byte_fallback_and_decode)
{
    tok_vocab *v = spm_vocab(-1, NULL);
    ASSERT(v != NULL);
    /* € = E2 82 AC is no token: <0xE2> <0x82> <0xAC> */
    ENC_IS(v, "€", false, false, id_of(v, "▁"), SPM_BYTE0 + 0xE2, SPM_BYTE0 + 0x82, SPM_BYTE0 + 0xAC);
    ENC_IS(v, "é", false, false, id_of(v, "▁"), id_of(v, "é"));
    char buf[8];
    ASSERT_EQ_INT(tok_piece(v, SPM_BYTE0 + 'A', buf, sizeof buf, false), 1);
    ASSERT_EQ_INT(buf[0], 'A');
    ASSERT_EQ_INT(tok_piece(v, id_of(v, "▁world"), buf, sizeof buf, false), 6);
    ASSERT(memcmp(buf, " world", 6) == 0);
    ASSERT(round_trips(v, "hello world €uro 🙂 done", false));
    ASSERT(round_trips(v, "  two leading spaces", false));
    /* the prefix space also goes away after a BOS that renders as nothing */
    char *s = NULL;
    const int32_t ids[] = {SPM_BOS, id_of(v, "▁hello")};
    ASSERT_EQ_INT(tok_decode(v, ids, 2, false, &s), 0);
    ASSERT_STR_EQ(s, "hello");
    weft_free(s);
    ASSERT_EQ_INT(tok_decode(v, ids, 2, true, &s), 0);
    ASSERT_STR_EQ(s, "<s> hello");
    weft_free(s);
    tok_free(v);
}

/* --- UTF-8 stream ------------------------------------------------------------ */

TEST(utf8_stream_holds_back_a_split_emoji)
{
    tok_utf8_stream st = {0};
    char out[64];
    size_t n = tok_utf8_push(&st, "a\xF0\x9F", 3, out);
    ASSERT_EQ_INT(n, 1);
    ASSERT(out[0] == 'a');
    n = tok_utf8_push(&st, "\x99", 1, out);
    ASSERT_EQ_INT(n, 0);
    n = tok_utf8_push(&st, "\x82!", 2, out);
    ASSERT_EQ_INT(n, 5);
    ASSERT(memcmp(out, "\xF0\x9F\x99\x82!", 5) == 0);
    ASSERT_EQ_INT(tok_utf8_flush(&st, out), 0);
    /* an unfinished tail is flushed as U+FFFD */
    n = tok_utf8_push(&st, "x\xE4\xB8", 3, out);
    ASSERT_EQ_INT(n, 1);
    ASSERT_EQ_INT(tok_utf8_flush(&st, out), 3);
    ASSERT(memcmp(out, "\xEF\xBF\xBD", 3) == 0);
    ASSERT_EQ_INT(tok_utf8_flush(&st, out), 0);
    /* stray continuation bytes are not held forever */
    n = tok_utf8_push(&st, "\x80\x80\x80\x80", 4, out);
    ASSERT_EQ_INT(n, 4);
}

TEST(utf8_stream_over_real_pieces)
{
    tok_vocab *v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    const char *text = "ü🙂é中";
    int32_t *ids = NULL, n = 0;
    ASSERT_EQ_INT(tok_encode(v, text, strlen(text), false, false, &ids, &n), 0);
    tok_utf8_stream st = {0};
    char acc[128] = "", out[64], piece[32];
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        int k = tok_piece(v, ids[i], piece, sizeof piece, false);
        size_t m = tok_utf8_push(&st, piece, (size_t)k, out);
        /* every chunk handed out is whole characters */
        for (size_t j = 0; j < m;) {
            unsigned char c = (unsigned char)out[j];
            size_t cl = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            ASSERT(j + cl <= m);
            j += cl;
        }
        memcpy(acc + len, out, m);
        len += m;
    }
    len += tok_utf8_flush(&st, acc + len);
    acc[len] = 0;
    ASSERT_STR_EQ(acc, text);
    weft_free(ids);
    tok_free(v);
}

/* --- chat templates -------------------------------------------------------- */

#define SMOLLM_TEMPLATE                                                                     \
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' "   \
    "%}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "    \
    "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "   \
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "   \
    "%}{{ '<|im_start|>assistant\n' }}{% endif %}"
/* Qwen2's, with the newlines written as escapes inside the literals */
#define QWEN2_TEMPLATE                                                                      \
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' "   \
    "%}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif "    \
    "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "   \
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% " \
    "endif %}"
#define CHATML_TEMPLATE                                                                     \
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "            \
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "   \
    "%}{{ '<|im_start|>assistant\n' }}{% endif %}"
#define LLAMA3_TEMPLATE                                                                     \
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = " \
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] " \
    "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + "        \
    "content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "       \
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
#define LLAMA2_TEMPLATE                                                                     \
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set " \
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages "  \
    "%}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if " \
    "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('"         \
    "Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% " \
    "if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "    \
    "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content " \
    "= message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "   \
    "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' "    \
    "%}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
#define MISTRAL_TEMPLATE                                                                    \
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "     \
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "      \
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ " \
    "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' " \
    "%}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and "     \
    "assistant roles are supported!') }}{% endif %}{% endfor %}"

static const tok_chat_msg conv_user[] = {{"user", "Hi there", 0}};
static const tok_chat_msg conv_sys[] = {{"system", "Be brief.", 0},
                                        {"user", "  Hi there \n", 0},
                                        {"assistant", " Hello! ", 0},
                                        {"user", "2+2?", 0}};
static const tok_chat_msg conv_multi[] = {{"user", "Hi", 0}, {"assistant", "Hello", 0}, {"user", "Bye", 0}};

/* Renders and compares (the expected strings are Jinja2's output). */
static bool renders(tok_vocab *v, const tok_chat_msg *m, int n, const char *want)
{
    char *s = NULL;
    int rc = tok_chat_render(v, m, n, true, &s, NULL);
    bool ok = rc == 0 && strcmp(s, want) == 0;
    if (!ok) fprintf(stderr, "  rendered (rc %d %s):\n%s\n  want:\n%s\n", rc, weft_last_error(), s ? s : "", want);
    weft_free(s);
    return ok;
}

TEST(chat_chatml_default_system_comes_from_the_template)
{
    tok_vocab *v = bpe_vocab("smollm", SMOLLM_TEMPLATE);
    ASSERT(v != NULL);
    ASSERT_EQ_INT(tok_chat_style_of(v), TOK_CHAT_CHATML);
    ASSERT_STR_EQ(tok_chat_style_name(TOK_CHAT_CHATML), "chatml");
    ASSERT(renders(v, conv_user, 1,
                   "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                   "Hugging Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                   "<|im_start|>assistant\n"));
    ASSERT(renders(v, conv_sys, 4,
                   "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  Hi there \n"
                   "<|im_end|>\n<|im_start|>assistant\n Hello! <|im_end|>\n<|im_start|>user\n"
                   "2+2?<|im_end|>\n<|im_start|>assistant\n"));
    char *s = NULL;
    ASSERT_EQ_INT(tok_chat_render(v, conv_multi, 3, false, &s, NULL), 0);
    ASSERT_STR_EQ(s, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained "
                     "by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>"
                     "assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n");
    weft_free(s);
    tok_free(v);

    v = bpe_vocab("qwen2", QWEN2_TEMPLATE);
    ASSERT(v != NULL);
    ASSERT(renders(v, conv_user, 1,
                   "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                   "Hi there<|im_end|>\n<|im_start|>assistant\n"));
    tok_free(v);

    v = bpe_vocab("smollm", CHATML_TEMPLATE);
    ASSERT(v != NULL);
    ASSERT(renders(v, conv_multi, 3,
                   "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
                   "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"));
    tok_free(v);
}

TEST(chat_llama3)
{
    toks t = {0};
    gguf_writer *w = bpe_writer("llama-bpe", LLAMA3_TEMPLATE, &t);
    toks_free(&t);
    tok_vocab *v = NULL;
    /* the BOS of this vocabulary is "<|im_start|>": the template's bos_token */
    ASSERT_EQ_INT(load_writer(w, &v), 0);
    ASSERT_EQ_INT(tok_chat_style_of(v), TOK_CHAT_LLAMA3);
    ASSERT(renders(v, conv_user, 1,
                   "<|im_start|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n"));
    ASSERT(renders(v, conv_sys, 4,
                   "<|im_start|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n"));
    tok_free(v);
}

TEST(chat_llama31_system_header_with_dates)
{
    /* the parts of Llama 3.1's template that weft reads */
    const char *tpl = "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = "
                      "\"26 Jul 2024\" %}{%- endif %}{{- \"<|start_header_id|>system<|end_header_id|>"
                      "\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}{{- \"Today "
                      "Date: \" + date_string + \"\\n\\n\" }}";
    toks t = {0};
    gguf_writer *w = bpe_writer("llama-bpe", tpl, &t);
    toks_free(&t);
    tok_vocab *v = NULL;
    ASSERT_EQ_INT(load_writer(w, &v), 0);
    ASSERT_EQ_INT(tok_chat_style_of(v), TOK_CHAT_LLAMA3);
    ASSERT(renders(v, conv_user, 1,
                   "<|im_start|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
                   "Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>"
                   "user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant"
                   "<|end_header_id|>\n\n"));
    const tok_chat_msg m[] = {{"system", " Be brief. ", 0}, {"user", "Hi", 0}};
    ASSERT(renders(v, m, 2,
                   "<|im_start|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
                   "Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>"
                   "assistant<|end_header_id|>\n\n"));
    tok_free(v);
}

TEST(chat_llama2_and_mistral)
{
    tok_vocab *v = spm_vocab(-1, LLAMA2_TEMPLATE);
    ASSERT(v != NULL);
    ASSERT_EQ_INT(tok_chat_style_of(v), TOK_CHAT_LLAMA2);
    ASSERT(renders(v, conv_user, 1, "<s>[INST] Hi there [/INST]"));
    ASSERT(renders(v, conv_sys, 4,
                   "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n  Hi there [/INST] Hello! </s>"
                   "<s>[INST] 2+2? [/INST]"));
    ASSERT(renders(v, conv_multi, 3, "<s>[INST] Hi [/INST] Hello </s><s>[INST] Bye [/INST]"));
    /* roles must alternate, as the template's raise_exception says */
    const tok_chat_msg bad[] = {{"user", "a", 0}, {"user", "b", 0}};
    char *s = NULL;
    ASSERT_EQ_INT(tok_chat_render(v, bad, 2, true, &s, NULL), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "alternate") != NULL);
    /* the rendered text tokenizes with <s> as the BOS token */
    ASSERT_EQ_INT(tok_chat_render(v, conv_user, 1, true, &s, NULL), 0);
    int32_t *ids = NULL, n = 0;
    ASSERT_EQ_INT(tok_encode(v, s, strlen(s), false, true, &ids, &n), 0);
    ASSERT_EQ_INT(ids[0], SPM_BOS);
    weft_free(ids);
    weft_free(s);
    /* a NUL byte in a content is text: the length counts what follows it */
    const tok_chat_msg nul[] = {{"user", "a\0b", 3}};
    size_t len = 0;
    ASSERT_EQ_INT(tok_chat_render(v, nul, 1, true, &s, &len), 0);
    ASSERT(len > strlen(s));
    ASSERT(memmem(s, len, "a\0b [/INST]", 11) != NULL);
    weft_free(s);
    tok_free(v);

    v = spm_vocab(-1, MISTRAL_TEMPLATE);
    ASSERT(v != NULL);
    ASSERT_EQ_INT(tok_chat_style_of(v), TOK_CHAT_LLAMA2);
    ASSERT(renders(v, conv_multi, 3, "<s>[INST] Hi [/INST]Hello</s>[INST] Bye [/INST]"));
    tok_free(v);
}

TEST(chat_unknown_template_is_unsupported)
{
    tok_vocab *v = bpe_vocab("smollm", "{% for m in messages %}<|user|>{{ m.content }}{% endfor %}");
    ASSERT(v != NULL);
    ASSERT_EQ_INT(tok_chat_style_of(v), TOK_CHAT_UNKNOWN);
    char *s = NULL;
    ASSERT_EQ_INT(tok_chat_render(v, conv_user, 1, true, &s, NULL), WEFT_EUNSUPPORTED);
    ASSERT(strstr(weft_last_error(), "not recognised") != NULL);
    ASSERT(s == NULL);
    tok_free(v);
    v = bpe_vocab("smollm", NULL);
    ASSERT(v != NULL);
    ASSERT_EQ_INT(tok_chat_style_of(v), TOK_CHAT_UNKNOWN);
    ASSERT_EQ_INT(tok_chat_render(v, conv_user, 1, true, &s, NULL), WEFT_EUNSUPPORTED);
    ASSERT(strstr(weft_last_error(), "no chat template") != NULL);
    tok_free(v);
}

/* --- bad metadata ------------------------------------------------------------ */

TEST(bad_merge_is_a_format_error)
{
    toks t = {0};
    gguf_writer *w = bpe_writer("smollm", NULL, &t);
    const char *merges[] = {"h e", "he zz"};
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 2); /* replaces the list */
    tok_vocab *v = NULL;
    ASSERT_EQ_INT(load_writer(w, &v), WEFT_EFORMAT);
    ASSERT(v == NULL);
    ASSERT(strstr(weft_last_error(), "not in the vocabulary") != NULL);
    ASSERT(strstr(weft_last_error(), "zz") != NULL);
    toks_free(&t);

    w = bpe_writer("smollm", NULL, &t);
    const char *nospace[] = {"hello"};
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", nospace, 1);
    ASSERT_EQ_INT(load_writer(w, &v), WEFT_EFORMAT);
    toks_free(&t);
}

TEST(token_type_length_mismatch_is_a_format_error)
{
    toks t = {0};
    gguf_writer *w = bpe_writer("smollm", NULL, &t);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, t.type, (uint64_t)t.n - 1);
    tok_vocab *v = NULL;
    ASSERT_EQ_INT(load_writer(w, &v), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "token_type") != NULL);
    toks_free(&t);

    w = bpe_writer("smollm", NULL, &t);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, t.score, 3);
    ASSERT_EQ_INT(load_writer(w, &v), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "scores") != NULL);
    toks_free(&t);
}

TEST(unknown_models_and_missing_keys)
{
    toks t = {0};
    tok_vocab *v = NULL;
    gguf_writer *w = bpe_writer("no-such-pre", NULL, &t);
    ASSERT_EQ_INT(load_writer(w, &v), WEFT_EUNSUPPORTED);
    ASSERT(strstr(weft_last_error(), "no-such-pre") != NULL);
    toks_free(&t);

    w = bpe_writer("smollm", NULL, &t);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "bert");
    ASSERT_EQ_INT(load_writer(w, &v), WEFT_EUNSUPPORTED);
    ASSERT(strstr(weft_last_error(), "bert") != NULL);
    toks_free(&t);

    w = gguf_writer_create();
    gguf_writer_set_str(w, "general.architecture", "llama");
    ASSERT_EQ_INT(load_writer(w, &v), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "tokenizer.ggml.model") != NULL);

    w = gguf_writer_create();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    ASSERT_EQ_INT(load_writer(w, &v), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "tokenizer.ggml.tokens") != NULL);

    /* a gpt2 vocabulary needs its merges */
    w = gguf_writer_create();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2");
    const char *one[] = {"a"};
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", one, 1);
    ASSERT_EQ_INT(load_writer(w, &v), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "merges") != NULL);
    ASSERT(v == NULL);
}

/* Random bytes (valid UTF-8 or not) through both tokenizers: encoding
 * never fails; decoding gives back the text with each invalid byte replaced
 * by U+FFFD for BPE (llama.cpp does the same), and, for valid UTF-8, the text
 * itself for SPM. (An invalid lead byte before a space swallows a byte of
 * the U+2581 that stands for the space, in llama.cpp as here, so invalid
 * input does not round-trip through SPM.) Meant for the sanitizer build. */
TEST(random_bytes_encode_and_decode)
{
    tok_vocab *bpe = bpe_vocab("smollm", NULL), *spm = spm_vocab(0, NULL);
    ASSERT(bpe != NULL && spm != NULL);
    static const char *const alphabet[] = {"a", "b", "h", "e", "l", "o", " ", "  ", "\n", "\t",
                                           "1", "2", "'s", "é", "🙂", "中", "\xC3", "\xF0\x9F",
                                           "\x80", "\xFF", "<|im_start|>", "<tool>", "<|x|>y",
                                           "\xe2\x80\x83", "!", "==", "\r\n", "\xed\xa0\x80"};
    uint32_t seed = 12345;
    for (int iter = 0; iter < 2000; iter++) {
        char text[512];
        size_t len = 0;
        int parts = (int)((seed = seed * 1664525u + 1013904223u) >> 24) % 30;
        for (int k = 0; k < parts; k++) {
            seed = seed * 1664525u + 1013904223u;
            const char *p = alphabet[(seed >> 16) % (sizeof alphabet / sizeof alphabet[0])];
            memcpy(text + len, p, strlen(p));
            len += strlen(p);
        }
        text[len] = 0;
        bool special = iter % 3 == 0;
        for (int which = 0; which < 2; which++) {
            tok_vocab *v = which ? spm : bpe;
            int32_t *ids = NULL, n = 0;
            ASSERT_EQ_INT(tok_encode(v, text, len, iter % 5 == 0, special, &ids, &n), 0);
            char *back = NULL;
            ASSERT_EQ_INT(tok_decode(v, ids, n, true, &back), 0);
            if (iter % 5 != 0) {
                /* the text as llama.cpp reads it: invalid bytes -> U+FFFD */
                char want[2048];
                size_t w = 0;
                bool valid = true;
                for (size_t i = 0; i < len;) {
                    unsigned char c = (unsigned char)text[i];
                    size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                                : (c & 0xF8) == 0xF0 ? 4 : 0;
                    bool ok = need > 0 && i + need <= len;
                    for (size_t j = 1; ok && j < need; j++) ok = ((unsigned char)text[i + j] & 0xC0) == 0x80;
                    if (ok) {
                        memcpy(want + w, text + i, need);
                        w += need;
                        i += need;
                    } else {
                        memcpy(want + w, "\xEF\xBF\xBD", 3);
                        w += 3;
                        i++;
                        valid = false;
                    }
                }
                want[w] = 0;
                if (which == 0) ASSERT_STR_EQ(back, want);
                else if (valid) ASSERT_STR_EQ(back, text);
            }
            weft_free(back);
            weft_free(ids);
        }
    }
    tok_free(bpe);
    tok_free(spm);
}

TEST(no_leaks_through_the_counting_allocator)
{
    size_t before = weft_mem_in_use();
    tok_vocab *v = bpe_vocab("default", SMOLLM_TEMPLATE);
    ASSERT(v != NULL);
    int32_t *ids = NULL, n = 0;
    const char *text = "Hello, world! 12345 ... <|im_start|> 'tis";
    ASSERT_EQ_INT(tok_encode(v, text, strlen(text), true, true, &ids, &n), 0);
    char *s = NULL;
    ASSERT_EQ_INT(tok_decode(v, ids, n, true, &s), 0);
    ASSERT_STR_EQ(s, text);
    weft_free(s);
    weft_free(ids);
    tok_free(v);
    ASSERT_EQ_INT(weft_mem_in_use(), before);
}

int main(void)
{
    RUN(bpe_merges_apply_in_rank_order);
    RUN(bpe_empty_string_gives_no_tokens);
    RUN(bpe_smollm_splits_digits_one_by_one);
    RUN(bpe_whitespace_runs_leave_the_last_space_to_the_word);
    RUN(bpe_unicode_is_byte_level);
    RUN(bpe_special_tokens_split_only_when_asked);
    RUN(bpe_add_special_follows_add_bos_token);
    RUN(bpe_pieces_and_end_of_generation);
    RUN(bpe_llama3_and_qwen2_pre_tokenizers);
    RUN(bpe_llama3_whitespace_pieces);
    RUN(long_text_is_fast_enough_to_finish);
    RUN(spm_merges_by_score_with_space_prefix);
    RUN(spm_byte_fallback_and_decode);
    RUN(utf8_stream_holds_back_a_split_emoji);
    RUN(utf8_stream_over_real_pieces);
    RUN(chat_chatml_default_system_comes_from_the_template);
    RUN(chat_llama3);
    RUN(chat_llama31_system_header_with_dates);
    RUN(chat_llama2_and_mistral);
    RUN(chat_unknown_template_is_unsupported);
    RUN(bad_merge_is_a_format_error);
    RUN(token_type_length_mismatch_is_a_format_error);
    RUN(unknown_models_and_missing_keys);
    RUN(random_bytes_encode_and_decode);
    RUN(no_leaks_through_the_counting_allocator);
    TEST_DONE();
}

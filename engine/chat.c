/*
 * engine/chat.c — chat templates. weft does not run Jinja: it recognises the
 * family of tokenizer.chat_template by its markers and renders messages the
 * way that family's template does, taking the parts that vary between models
 * (a default system message, a knowledge-date line) from the template text.
 *
 *   ChatML  "<|im_start|>"         <|im_start|>role\ncontent<|im_end|>\n ...
 *           A default system message is a string literal
 *           '<|im_start|>system\n...<|im_end|>' in the template (SmolLM2,
 *           Qwen2); it is rendered when the first message is not a system one.
 *   Llama 3 "<|start_header_id|>"  bos <|start_header_id|>role<|end_header_id|>
 *           \n\ncontent|trim<|eot_id|> ... (3.1+: a system header with the
 *           "Cutting Knowledge Date" lines first).
 *   Llama 2 "[INST]" with "<<SYS>>": bos[INST] (<<SYS>>\nsys\n<</SYS>>\n\n)
 *           user|strip [/INST] assistant|strip eos ... ; roles must
 *           alternate. Without "<<SYS>>" (Mistral v0.1): bos once, then
 *           [INST] user [/INST]assistant eos, a system message goes in front
 *           of the first user message.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tok_internal.h"

typedef struct {
    char *p;
    size_t n, cap;
    int err;
    size_t *spans; /* [start, end) byte ranges that hold messages' contents */
    int n_spans, cap_spans;
} str;

static void put(str *s, const char *t, size_t n)
{
    if (s->err) return;
    if (s->n + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->n + n + 1) cap *= 2;
        char *p = weft_realloc(s->p, cap);
        if (!p) {
            s->err = WEFT_ENOMEM;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void puts_(str *s, const char *t) { put(s, t, strlen(t)); }

/* Appends a message's content (trimmed as the template trims it) and
 * records where it went: text the template did not write, which
 * tok_chat_encode tokenizes as plain text. */
static void put_trimmed(str *s, const char *t, size_t n);
static void put_content(str *s, const char *t, size_t n, bool trim)
{
    const size_t at = s->n;
    if (trim) put_trimmed(s, t, n);
    else put(s, t, n);
    if (s->err || s->n == at) return;
    if (s->n_spans == s->cap_spans) {
        const int cap = s->cap_spans ? 2 * s->cap_spans : 8;
        size_t *sp = weft_realloc(s->spans, (size_t)cap * 2 * sizeof *sp);
        if (!sp) {
            s->err = WEFT_ENOMEM;
            return;
        }
        s->spans = sp;
        s->cap_spans = cap;
    }
    s->spans[2 * s->n_spans] = at;
    s->spans[2 * s->n_spans + 1] = s->n;
    s->n_spans++;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Python's str.strip() / Jinja's trim, for ASCII whitespace. */
static void put_trimmed(str *s, const char *t, size_t n)
{
    size_t a = 0, b = n;
    while (a < b && is_ws(t[a])) a++;
    while (b > a && is_ws(t[b - 1])) b--;
    put(s, t + a, b - a);
}

static const char *special_text(const tok_vocab *v, int32_t id)
{
    return id >= 0 ? tok_text(v, id, NULL) : "";
}

tok_chat_style tok_chat_style_of(const tok_vocab *v)
{
    const char *t = v ? v->chat_template : NULL;
    if (!t || !*t) return TOK_CHAT_UNKNOWN;
    if (strstr(t, "<|im_start|>")) return TOK_CHAT_CHATML;
    if (strstr(t, "<|start_header_id|>")) return TOK_CHAT_LLAMA3;
    if (strstr(t, "[INST]")) return TOK_CHAT_LLAMA2;
    return TOK_CHAT_UNKNOWN;
}

const char *tok_chat_style_name(tok_chat_style s)
{
    switch (s) {
    case TOK_CHAT_CHATML: return "chatml";
    case TOK_CHAT_LLAMA3: return "llama3";
    case TOK_CHAT_LLAMA2: return "llama2";
    default: return "unknown";
    }
}

/* Appends the body of a Jinja string literal that starts at p and runs to
 * `end` (escapes undone); false if a quote ends the literal first, i.e. the
 * text is not one literal. */
static bool put_literal(str *s, const char *p, const char *end)
{
    for (; p < end; p++) {
        if (*p == '\'' || *p == '"') return false;
        if (*p == '\\' && p + 1 < end) {
            char c = *++p;
            char o = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
            put(s, &o, 1);
            continue;
        }
        put(s, p, 1);
    }
    return true;
}

/* The default system message of a ChatML template: the first literal
 * '<|im_start|>system\n...<|im_end|>'. *found false if there is none. */
static int chatml_default_system(const char *t, str *out, bool *found)
{
    static const char mark[] = "<|im_start|>system";
    *found = false;
    for (const char *p = strstr(t, mark); p; p = strstr(p + 1, mark)) {
        const char *q = p + sizeof mark - 1;
        if (*q == '\n') q++;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *end = strstr(q, "<|im_end|>");
        if (!end) break;
        out->n = 0;
        put(out, "", 0);
        if (put_literal(out, q, end)) {
            *found = true;
            break;
        }
    }
    return out->err;
}

/* The bytes of m's content: a model's output may hold NUL bytes, so the
 * length travels with it (tok_chat_msg.content_len). */
static size_t content_len(const tok_chat_msg *m)
{
    return m->content_len ? m->content_len : strlen(m->content);
}

static int render_chatml(const tok_vocab *v, const tok_chat_msg *m, int n, bool gen, str *s)
{
    if (n > 0 && strcmp(m[0].role, "system") != 0) {
        str def = {0};
        bool found;
        int rc = chatml_default_system(v->chat_template, &def, &found);
        if (rc == 0 && found) {
            puts_(s, "<|im_start|>system\n");
            put(s, def.p, def.n);
            puts_(s, "<|im_end|>\n");
        }
        weft_free(def.p);
        if (rc) return rc;
    }
    for (int i = 0; i < n; i++) {
        puts_(s, "<|im_start|>");
        puts_(s, m[i].role);
        puts_(s, "\n");
        put_content(s, m[i].content, content_len(&m[i]), false);
        puts_(s, "<|im_end|>\n");
    }
    if (gen) puts_(s, "<|im_start|>assistant\n");
    return 0;
}

/* A literal that follows `key` up to the next quote or escaped newline. */
static bool template_phrase(const char *t, const char *key, str *out)
{
    const char *p = strstr(t, key);
    if (!p) return false;
    const char *e = p;
    while (*e && *e != '\'' && *e != '"' && *e != '\n' && !(e[0] == '\\' && e[1] == 'n')) e++;
    out->n = 0;
    put(out, p, (size_t)(e - p));
    return true;
}

static int render_llama3(const tok_vocab *v, const tok_chat_msg *m, int n, bool gen, str *s)
{
    const char *t = v->chat_template;
    str kd = {0};
    int i = 0;
    bool dated = template_phrase(t, "Cutting Knowledge Date:", &kd);
    if (n > 0 || dated) puts_(s, special_text(v, v->bos));
    if (dated) {
        /* Llama 3.1+: the system turn always comes first, with the dates */
        char date[64] = "26 Jul 2024";
        const char *ds = strstr(t, "date_string = \"");
        if (ds) {
            ds += strlen("date_string = \"");
            const char *de = strchr(ds, '"');
            if (de && (size_t)(de - ds) < sizeof date) snprintf(date, sizeof date, "%.*s", (int)(de - ds), ds);
        } else if (strstr(t, "strftime_now")) {
            time_t now = time(NULL);
            struct tm tmv;
            gmtime_r(&now, &tmv);
            strftime(date, sizeof date, "%d %b %Y", &tmv);
        }
        puts_(s, "<|start_header_id|>system<|end_header_id|>\n\n");
        put(s, kd.p, kd.n);
        puts_(s, "\nToday Date: ");
        puts_(s, date);
        puts_(s, "\n\n");
        if (n > 0 && strcmp(m[0].role, "system") == 0) {
            put_content(s, m[0].content, content_len(&m[0]), true);
            i = 1;
        }
        puts_(s, "<|eot_id|>");
    }
    weft_free(kd.p);
    for (; i < n; i++) {
        puts_(s, "<|start_header_id|>");
        puts_(s, m[i].role);
        puts_(s, "<|end_header_id|>\n\n");
        put_content(s, m[i].content, content_len(&m[i]), true);
        puts_(s, "<|eot_id|>");
    }
    if (gen) puts_(s, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

static int render_llama2(const tok_vocab *v, const tok_chat_msg *m, int n, str *s)
{
    const char *bos = special_text(v, v->bos), *eos = special_text(v, v->eos);
    bool sys_block = strstr(v->chat_template, "<<SYS>>") != NULL;
    const tok_chat_msg *system = NULL;
    int first = 0;
    if (n > 0 && strcmp(m[0].role, "system") == 0) {
        system = &m[0];
        first = 1;
    }
    for (int i = first; i < n; i++) {
        bool user = strcmp(m[i].role, "user") == 0;
        if (user != ((i - first) % 2 == 0))
            return weft_error(WEFT_EINVAL,
                              "chat template: conversation roles must alternate "
                              "user/assistant/user/assistant/...");
        if (!user && strcmp(m[i].role, "assistant") != 0)
            return weft_error(WEFT_EINVAL, "chat template: role '%s' is not supported", m[i].role);
    }
    if (sys_block) {
        for (int i = first; i < n; i++) {
            bool user = strcmp(m[i].role, "user") == 0;
            str c = {0};
            if (i == first && system) {
                puts_(&c, "<<SYS>>\n");
                put(&c, system->content, content_len(system));
                puts_(&c, "\n<</SYS>>\n\n");
            }
            put(&c, m[i].content, content_len(&m[i]));
            if (c.err) {
                weft_free(c.p);
                return c.err;
            }
            /* c: the contents, and <<SYS>> markers that are plain text anyway */
            if (user) {
                puts_(s, bos);
                puts_(s, "[INST] ");
                put_content(s, c.p, c.n, true);
                puts_(s, " [/INST]");
            } else {
                puts_(s, " ");
                put_content(s, c.p, c.n, true);
                puts_(s, " ");
                puts_(s, eos);
            }
            weft_free(c.p);
        }
        return 0;
    }
    puts_(s, bos);
    for (int i = first; i < n; i++) {
        if (strcmp(m[i].role, "user") == 0) {
            puts_(s, "[INST] ");
            if (i == first && system) {
                put_content(s, system->content, content_len(system), false);
                puts_(s, "\n\n");
            }
            put_content(s, m[i].content, content_len(&m[i]), false);
            puts_(s, " [/INST]");
        } else {
            put_content(s, m[i].content, content_len(&m[i]), false);
            puts_(s, eos);
        }
    }
    return 0;
}

/* Renders into *s (its text and the contents' spans; the caller frees both). */
static int render(const tok_vocab *v, const tok_chat_msg *msgs, int n_msgs, bool add_generation_prompt, str *s)
{
    if (!v || n_msgs < 0 || (n_msgs > 0 && !msgs)) return weft_error(WEFT_EINVAL, "tok_chat_render: bad argument");
    for (int i = 0; i < n_msgs; i++)
        if (!msgs[i].role || !msgs[i].content)
            return weft_error(WEFT_EINVAL, "tok_chat_render: message %d has no role or content", i);
    int rc;
    switch (tok_chat_style_of(v)) {
    case TOK_CHAT_CHATML: rc = render_chatml(v, msgs, n_msgs, add_generation_prompt, s); break;
    case TOK_CHAT_LLAMA3: rc = render_llama3(v, msgs, n_msgs, add_generation_prompt, s); break;
    case TOK_CHAT_LLAMA2: rc = render_llama2(v, msgs, n_msgs, s); break;
    default:
        return weft_error(WEFT_EUNSUPPORTED,
                          v->chat_template && *v->chat_template
                              ? "chat template not recognised (weft knows ChatML, Llama 3 and "
                                "Llama 2/Mistral [INST] templates)"
                              : "the model has no chat template (tokenizer.chat_template)");
    }
    if (rc == 0 && !s->p) put(s, "", 0);
    if (rc == 0 && s->err) rc = weft_error(s->err, "chat template: out of memory");
    return rc;
}

int tok_chat_render(const tok_vocab *v, const tok_chat_msg *msgs, int n_msgs,
                    bool add_generation_prompt, char **out, size_t *out_len)
{
    if (out_len) *out_len = 0;
    if (!out) return weft_error(WEFT_EINVAL, "tok_chat_render: bad argument");
    *out = NULL;
    str s = {0};
    const int rc = render(v, msgs, n_msgs, add_generation_prompt, &s);
    weft_free(s.spans);
    if (rc < 0) {
        weft_free(s.p);
        return rc;
    }
    *out = s.p;
    if (out_len) *out_len = s.n;
    return 0;
}

int tok_chat_encode(const tok_vocab *v, const tok_chat_msg *msgs, int n_msgs, bool add_generation_prompt,
                    char **text, size_t *text_len, int32_t **ids, int32_t *n_ids)
{
    if (text) *text = NULL;
    if (text_len) *text_len = 0;
    if (!ids || !n_ids) return weft_error(WEFT_EINVAL, "tok_chat_encode: bad argument");
    str s = {0};
    int rc = render(v, msgs, n_msgs, add_generation_prompt, &s);
    if (rc == 0) rc = tok_encode_guarded(v, s.p, s.n, true, s.spans, s.n_spans, ids, n_ids);
    weft_free(s.spans);
    if (rc == 0 && text_len) *text_len = s.n;
    if (rc == 0 && text) *text = s.p;
    else weft_free(s.p);
    return rc;
}

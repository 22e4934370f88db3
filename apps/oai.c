/* The OpenAI wire format: request parsing and checking, response JSON.
 * What is supported, ignored or rejected is listed in the README (`weft
 * serve`); the rule is that a field whose meaning weft cannot honour is
 * rejected (400), and a field that is only a hint or bookkeeping is ignored. */
#include "oai.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "weft/common.h"

#define BAD_REQ "invalid_request_error"

int oai_fail(oai_error *e, int status, const char *type, const char *code, const char *param,
             const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

json_t *oai_error_json(const oai_error *e)
{
    /* the message may quote input cut at any byte: oai_string keeps it valid UTF-8 */
    return json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message",
                     oai_string(e->message, strlen(e->message)), "type", e->type ? e->type : BAD_REQ, "param",
                     e->param[0] ? json_string(e->param) : json_null(), "code",
                     e->code ? json_string(e->code) : json_null());
}

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t k;
    uint32_t cp;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) k = 2, cp = s[0] & 0x1F;
    else if ((s[0] & 0xF0) == 0xE0) k = 3, cp = s[0] & 0x0F;
    else if ((s[0] & 0xF8) == 0xF0) k = 4, cp = s[0] & 0x07;
    else return 0;
    if (k > n) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

json_t *oai_string(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_len((const unsigned char *)s + i, n - i);
        if (!k || memchr(s + i, 0, k)) break;
        i += k;
    }
    if (i == n) return json_stringn_nocheck(s, n);
    /* rebuild with U+FFFD for each bad byte (and NUL, which jansson allows
     * but C strings downstream would cut at) */
    char *buf = weft_malloc(3 * n + 1);
    if (!buf) return NULL;
    size_t o = 0;
    for (i = 0; i < n;) {
        size_t k = utf8_len((const unsigned char *)s + i, n - i);
        if (k && s[i] != 0) {
            memcpy(buf + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_t *j = json_stringn_nocheck(buf, o);
    weft_free(buf);
    return j;
}

/* ---- field getters: absent and null are the same (the spec's nullable) ---- */

static json_t *field(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_null(v) ? NULL : v;
}

static int get_int(json_t *o, const char *name, long long lo, long long hi, long long *out,
                   oai_error *e)
{
    json_t *v = field(o, name);
    if (!v) return 0;
    if (!json_is_integer(v))
        return oai_fail(e, 400, BAD_REQ, "invalid_type", name, "'%s' must be an integer", name);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return oai_fail(e, 400, BAD_REQ, "invalid_value", name,
                        "'%s' is %lld; it must be between %lld and %lld", name, x, lo, hi);
    *out = x;
    return 0;
}

static int get_num(json_t *o, const char *name, double lo, double hi, double *out, oai_error *e)
{
    json_t *v = field(o, name);
    if (!v) return 0;
    if (!json_is_number(v))
        return oai_fail(e, 400, BAD_REQ, "invalid_type", name, "'%s' must be a number", name);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return oai_fail(e, 400, BAD_REQ, "invalid_value", name,
                        "'%s' is %g; it must be between %g and %g", name, x, lo, hi);
    *out = x;
    return 0;
}

static int get_bool(json_t *o, const char *name, bool *out, oai_error *e)
{
    json_t *v = field(o, name);
    if (!v) return 0;
    if (!json_is_boolean(v))
        return oai_fail(e, 400, BAD_REQ, "invalid_type", name, "'%s' must be a boolean", name);
    *out = json_is_true(v);
    return 0;
}

/* A field that is an array (or, array false, an object) when present:
 * returns it (NULL when absent or null), or NULL with *bad set and *e
 * filled. Checked before its value, so that `"tools": {}` is a wrong type
 * rather than an empty list. */
static json_t *get_typed(json_t *o, const char *name, bool array, bool *bad, oai_error *e)
{
    json_t *v = field(o, name);
    *bad = v && (array ? !json_is_array(v) : !json_is_object(v));
    if (*bad) {
        oai_fail(e, 400, BAD_REQ, "invalid_type", name, "'%s' must be %s", name,
                 array ? "an array" : "an object");
        return NULL;
    }
    return v;
}

static int unsupported(oai_error *e, const char *name, const char *why)
{
    return oai_fail(e, 400, BAD_REQ, "unsupported_parameter", name, "'%s' is not supported by weft: %s",
                    name, why);
}

/* ---- the parts of a request ------------------------------------------------- */

static int parse_stop(json_t *o, oai_request *r, oai_error *e)
{
    json_t *v = field(o, "stop");
    if (!v) return 0;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > OAI_MAX_STOPS)
            return oai_fail(e, 400, BAD_REQ, "invalid_value", "stop", "at most %d stop strings",
                            OAI_MAX_STOPS);
        items = NULL;
    }
    if (n == 0) return 0;
    r->stop = weft_calloc(n, sizeof *r->stop);
    if (!r->stop) return oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = items ? items[i] : json_array_get(v, i);
        if (!json_is_string(s) || json_string_length(s) == 0)
            return oai_fail(e, 400, BAD_REQ, "invalid_type", "stop",
                            "'stop' must be a non-empty string or an array of them");
        /* the engine matches stop strings as C strings */
        if (memchr(json_string_value(s), 0, json_string_length(s)))
            return oai_fail(e, 400, BAD_REQ, "invalid_value", "stop", "a stop string cannot hold a NUL (\\u0000)");
        if (!(r->stop[i] = weft_strdup(json_string_value(s))))
            return oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        r->n_stop = (int)i + 1;
    }
    return 0;
}

/* Appends one prompt (takes ownership of ids). */
static int add_prompt(oai_request *r, int32_t *ids, int32_t n, oai_error *e)
{
    int32_t **np = weft_realloc(r->prompts, (size_t)(r->n_prompts + 1) * sizeof *np);
    if (np) r->prompts = np;
    int32_t *nn = np ? weft_realloc(r->n_prompt, (size_t)(r->n_prompts + 1) * sizeof *nn) : NULL;
    if (nn) r->n_prompt = nn;
    if (!np || !nn) {
        weft_free(ids);
        return oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    r->prompts[r->n_prompts] = ids;
    r->n_prompt[r->n_prompts++] = n;
    return 0;
}

static int prompt_text(oai_request *r, const tok_vocab *v, json_t *s, oai_error *e)
{
    int32_t *ids = NULL, n = 0;
    /* as `weft generate -p`: BOS when the model wants one, special-token text stays text */
    if (tok_encode(v, json_string_value(s), json_string_length(s), true, false, &ids, &n) < 0)
        return oai_fail(e, 400, BAD_REQ, "invalid_value", "prompt", "cannot tokenize the prompt: %s",
                        weft_last_error());
    if (n == 0) {
        weft_free(ids);
        return oai_fail(e, 400, BAD_REQ, "invalid_value", "prompt", "the prompt is empty");
    }
    return add_prompt(r, ids, n, e);
}

static int prompt_ids(oai_request *r, const tok_vocab *v, json_t *a, oai_error *e)
{
    const size_t n = json_array_size(a);
    if (n == 0) return oai_fail(e, 400, BAD_REQ, "invalid_value", "prompt", "the prompt is empty");
    int32_t *ids = weft_malloc(n * sizeof *ids);
    if (!ids) return oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(a, i);
        long long id = json_is_integer(t) ? json_integer_value(t) : -1;
        if (id < 0 || id >= tok_n_vocab(v)) {
            weft_free(ids);
            return oai_fail(e, 400, BAD_REQ, "invalid_value", "prompt",
                            "prompt token %zu is not a token id of this model (0..%d)", i,
                            tok_n_vocab(v) - 1);
        }
        ids[i] = (int32_t)id;
    }
    return add_prompt(r, ids, (int32_t)n, e);
}

/* string | [string] | [int] | [[int]] */
static int parse_prompt(json_t *o, oai_request *r, const tok_vocab *v, oai_error *e)
{
    json_t *p = json_object_get(o, "prompt");
    if (!p) return oai_fail(e, 400, BAD_REQ, "missing_required_parameter", "prompt", "'prompt' is required");
    if (json_is_string(p)) return prompt_text(r, v, p, e);
    if (!json_is_array(p) || json_array_size(p) == 0)
        return oai_fail(e, 400, BAD_REQ, "invalid_type", "prompt",
                        "'prompt' must be a string, an array of strings, an array of token ids or "
                        "an array of arrays of token ids");
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) return prompt_ids(r, v, p, e);
    if (json_array_size(p) > OAI_MAX_CHOICES)
        return oai_fail(e, 400, BAD_REQ, "invalid_value", "prompt", "at most %d prompts", OAI_MAX_CHOICES);
    size_t i;
    json_t *item;
    json_array_foreach(p, i, item) {
        int rc = json_is_string(item) && json_is_string(first) ? prompt_text(r, v, item, e)
                 : json_is_array(item) && json_is_array(first) ? prompt_ids(r, v, item, e)
                 : oai_fail(e, 400, BAD_REQ, "invalid_type", "prompt",
                            "'prompt' array items must all be strings or all be token id arrays");
        if (rc < 0) return rc;
    }
    return 0;
}

/* A message's content: a string or an array of {"type": "text", "text"} parts,
 * joined; *len its bytes (NUL bytes, \u0000 in the JSON, are content too).
 * *out is weft_malloc'd. */
static int message_content(json_t *c, char **out, size_t *len, oai_error *e)
{
    if (json_is_string(c)) {
        *len = json_string_length(c);
        *out = weft_malloc(*len + 1);
        if (!*out) return oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        memcpy(*out, json_string_value(c), *len + 1);
        return 0;
    }
    if (!json_is_array(c))
        return oai_fail(e, 400, BAD_REQ, "invalid_type", "messages",
                        "a message's 'content' must be a string or an array of text parts");
    size_t total = 1, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(text))
            return oai_fail(e, 400, BAD_REQ, "invalid_value", "messages",
                            "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
        total += json_string_length(text);
    }
    char *s = weft_malloc(total);
    if (!s) return oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    size_t o = 0;
    json_array_foreach(c, i, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(s + o, json_string_value(text), json_string_length(text));
        o += json_string_length(text);
    }
    s[o] = 0;
    *out = s;
    *len = o;
    return 0;
}

static int parse_messages(json_t *o, oai_request *r, const tok_vocab *v, oai_error *e)
{
    json_t *ms = json_object_get(o, "messages");
    if (!ms) return oai_fail(e, 400, BAD_REQ, "missing_required_parameter", "messages", "'messages' is required");
    const size_t n = json_array_size(ms);
    if (!json_is_array(ms) || n == 0)
        return oai_fail(e, 400, BAD_REQ, "invalid_type", "messages", "'messages' must be a non-empty array");
    tok_chat_msg *msgs = weft_calloc(n, sizeof *msgs);
    char **texts = weft_calloc(n, sizeof *texts);
    int rc = -1;
    if (!msgs || !texts) {
        oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(ms, i), *role = json_object_get(m, "role");
        const char *rs = json_is_string(role) && !memchr(json_string_value(role), 0, json_string_length(role))
                             ? json_string_value(role)
                             : NULL;
        if (!json_is_object(m) || !rs) {
            oai_fail(e, 400, BAD_REQ, "invalid_type", "messages",
                     "messages[%zu] must be an object with a string 'role'", i);
            goto out;
        }
        if (strcmp(rs, "developer") == 0) rs = "system"; /* the newer name of the same role */
        if (strcmp(rs, "system") != 0 && strcmp(rs, "user") != 0 && strcmp(rs, "assistant") != 0) {
            oai_fail(e, 400, BAD_REQ, "unsupported_value", "messages",
                     "messages[%zu]: role '%s' is not supported (weft has no tools)", i, rs);
            goto out;
        }
        if (field(m, "tool_calls") || field(m, "function_call")) {
            unsupported(e, "messages", "tool calls");
            goto out;
        }
        json_t *content = field(m, "content");
        size_t len = 0;
        if (!content) texts[i] = weft_strdup("");
        if (content ? message_content(content, &texts[i], &len, e) < 0
                    : !texts[i] && oai_fail(e, 500, "server_error", NULL, NULL, "out of memory"))
            goto out;
        /* content_len 0 means "up to the first NUL": right for "" */
        msgs[i] = (tok_chat_msg){rs, texts[i], len};
    }
    int32_t *ids = NULL, nt = 0;
    /* the messages' contents cannot spell the template's control tokens */
    if (tok_chat_encode(v, msgs, (int)n, true, NULL, NULL, &ids, &nt) < 0 || nt == 0) {
        weft_free(ids);
        oai_fail(e, 400, BAD_REQ, "invalid_value", "messages", "%s",
                 nt == 0 ? "cannot tokenize the conversation" : weft_last_error());
        goto out;
    }
    rc = add_prompt(r, ids, nt, e);
out:
    if (texts)
        for (size_t i = 0; i < n; i++) weft_free(texts[i]);
    weft_free(texts);
    weft_free(msgs);
    return rc;
}

/* Fields whose meaning weft cannot honour: rejected unless left at their
 * no-op value. */
static int check_unsupported(json_t *o, oai_kind kind, int n, oai_error *e)
{
    double pen = 0;
    if (get_num(o, "frequency_penalty", -2, 2, &pen, e) < 0) return -1;
    if (pen != 0) return unsupported(e, "frequency_penalty", "only 0");
    if (get_num(o, "presence_penalty", -2, 2, &pen, e) < 0) return -1;
    if (pen != 0) return unsupported(e, "presence_penalty", "only 0");
    bool bad;
    json_t *lb = get_typed(o, "logit_bias", false, &bad, e);
    if (bad) return -1;
    if (lb && json_object_size(lb) > 0) return unsupported(e, "logit_bias", "only null or {}");
    if (kind == OAI_COMPLETION) {
        bool echo = false;
        long long best_of = 1;
        if (get_bool(o, "echo", &echo, e) < 0) return -1;
        if (echo) return unsupported(e, "echo", "only false");
        json_t *sfx = field(o, "suffix");
        if (sfx && (!json_is_string(sfx) || json_string_length(sfx) > 0))
            return unsupported(e, "suffix", "only null or \"\"");
        if (get_int(o, "best_of", 0, 20, &best_of, e) < 0) return -1;
        if (best_of > 1 && best_of != n) return unsupported(e, "best_of", "only 1 or equal to n");
        return 0;
    }
    json_t *tools = get_typed(o, "tools", true, &bad, e);
    if (bad) return -1;
    json_t *fns = get_typed(o, "functions", true, &bad, e);
    if (bad) return -1;
    if (json_array_size(tools) > 0 || json_array_size(fns) > 0)
        return unsupported(e, json_array_size(tools) > 0 ? "tools" : "functions",
                           "weft has no tool calling");
    json_t *tc = field(o, "tool_choice");
    if (tc && !(json_is_string(tc) && (strcmp(json_string_value(tc), "none") == 0 ||
                                       strcmp(json_string_value(tc), "auto") == 0)))
        return unsupported(e, "tool_choice", "weft has no tool calling");
    json_t *rf = get_typed(o, "response_format", false, &bad, e);
    if (bad) return -1;
    if (rf) {
        json_t *t = json_object_get(rf, "type");
        if (!json_is_string(t) || strcmp(json_string_value(t), "text") != 0)
            return unsupported(e, "response_format", "only {\"type\": \"text\"}");
    }
    if (field(o, "audio")) return unsupported(e, "audio", "text only");
    json_t *mod = field(o, "modalities");
    if (mod) {
        size_t i;
        json_t *m;
        if (!json_is_array(mod))
            return oai_fail(e, 400, BAD_REQ, "invalid_type", "modalities", "'modalities' must be an array");
        json_array_foreach(mod, i, m) if (!json_is_string(m) || strcmp(json_string_value(m), "text") != 0)
            return unsupported(e, "modalities", "only [\"text\"]");
    }
    if (field(o, "web_search_options")) return unsupported(e, "web_search_options", "no web search");
    return 0;
}

static int parse_sampling(json_t *o, oai_request *r, oai_error *e)
{
    double temp = 1, top_p = 1, min_p = 0, rep = 1;
    long long seed = 0, top_k = 0;
    if (get_num(o, "temperature", 0, 2, &temp, e) < 0 || get_num(o, "top_p", 0, 1, &top_p, e) < 0 ||
        get_int(o, "top_k", -1, 1 << 20, &top_k, e) < 0 || get_num(o, "min_p", 0, 1, &min_p, e) < 0 ||
        get_num(o, "repetition_penalty", 0.01, 100, &rep, e) < 0)
        return -1;
    json_t *sv = field(o, "seed");
    if (sv && !json_is_integer(sv))
        return oai_fail(e, 400, BAD_REQ, "invalid_type", "seed", "'seed' must be an integer");
    if (sv) seed = json_integer_value(sv);
    r->sampling = weft_sampling_default();
    r->sampling.temperature = (float)temp;
    /* top_p 0 keeps only the most likely token, which is greedy */
    if (top_p <= 0) r->sampling.temperature = 0;
    r->sampling.top_p = (float)top_p;
    r->sampling.top_k = (int32_t)(top_k < 0 ? 0 : top_k);
    r->sampling.min_p = (float)min_p;
    r->sampling.repeat_penalty = (float)rep;
    r->sampling.seed = (uint64_t)seed;
    r->seed_set = sv != NULL;
    return 0;
}

static int parse_logprobs(json_t *o, oai_request *r, oai_error *e)
{
    if (r->kind == OAI_COMPLETION) {
        long long lp = -1;
        if (get_int(o, "logprobs", 0, 5, &lp, e) < 0) return -1;
        if (lp > 0) return unsupported(e, "logprobs", "only 0 (the sampled tokens' log-probabilities, no alternatives)");
        r->logprobs = lp == 0;
        return 0;
    }
    long long top = 0;
    if (get_bool(o, "logprobs", &r->logprobs, e) < 0 || get_int(o, "top_logprobs", 0, 20, &top, e) < 0)
        return -1;
    if (top > 0 && !r->logprobs)
        return oai_fail(e, 400, BAD_REQ, "invalid_value", "top_logprobs",
                        "'top_logprobs' needs 'logprobs': true");
    if (top > 0) return unsupported(e, "top_logprobs", "only 0 (no alternatives)");
    return 0;
}

static int parse_object(json_t *o, oai_request *r, const tok_vocab *v, oai_error *e)
{
    json_t *model = json_object_get(o, "model");
    if (!json_is_string(model))
        return oai_fail(e, 400, BAD_REQ, model ? "invalid_type" : "missing_required_parameter",
                        "model", "'model' must be a string");
    if (!(r->model = weft_strdup(json_string_value(model))))
        return oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    long long n = 1, max_tokens = r->kind == OAI_COMPLETION ? 16 : 0;
    if (get_int(o, "n", 1, OAI_MAX_CHOICES, &n, e) < 0) return -1;
    r->n = (int)n;
    if (get_int(o, "max_tokens", 1, INT32_MAX, &max_tokens, e) < 0) return -1;
    r->max_tokens_param = "max_tokens";
    if (r->kind == OAI_CHAT && field(o, "max_completion_tokens")) {
        if (get_int(o, "max_completion_tokens", 1, INT32_MAX, &max_tokens, e) < 0) return -1;
        r->max_tokens_param = "max_completion_tokens";
    }
    r->max_tokens = (int32_t)max_tokens;
    if (get_bool(o, "stream", &r->stream, e) < 0 || get_bool(o, "ignore_eos", &r->ignore_eos, e) < 0)
        return -1;
    json_t *so = field(o, "stream_options");
    if (so) {
        if (!r->stream)
            return oai_fail(e, 400, BAD_REQ, "invalid_value", "stream_options",
                            "'stream_options' is only allowed when 'stream' is true");
        if (!json_is_object(so))
            return oai_fail(e, 400, BAD_REQ, "invalid_type", "stream_options", "'stream_options' must be an object");
        if (get_bool(so, "include_usage", &r->include_usage, e) < 0) return -1;
    }
    if (check_unsupported(o, r->kind, r->n, e) < 0 || parse_sampling(o, r, e) < 0 ||
        parse_logprobs(o, r, e) < 0 || parse_stop(o, r, e) < 0)
        return -1;
    if (r->kind == OAI_COMPLETION ? parse_prompt(o, r, v, e) : parse_messages(o, r, v, e)) return -1;
    if ((long long)r->n_prompts * r->n > OAI_MAX_CHOICES)
        return oai_fail(e, 400, BAD_REQ, "invalid_value", "n", "prompts x n is at most %d", OAI_MAX_CHOICES);
    return 0;
}

int oai_parse(oai_kind kind, const char *body, size_t len, const tok_vocab *v, oai_request *out,
              oai_error *err)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    json_error_t je;
    /* \u0000 is valid JSON: a prompt or a message may hold NUL bytes */
    json_t *o = json_loadb(body, len, JSON_ALLOW_NUL, &je);
    if (!o)
        return oai_fail(err, 400, BAD_REQ, "invalid_json", NULL,
                        "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    int rc = json_is_object(o) ? parse_object(o, out, v, err)
                               : oai_fail(err, 400, BAD_REQ, "invalid_type", NULL,
                                          "the body must be a JSON object");
    json_decref(o);
    if (rc < 0) oai_request_free(out);
    return rc;
}

void oai_request_free(oai_request *r)
{
    for (int i = 0; i < r->n_prompts; i++) weft_free(r->prompts[i]);
    weft_free(r->prompts);
    weft_free(r->n_prompt);
    for (int i = 0; i < r->n_stop; i++) weft_free(r->stop[i]);
    weft_free(r->stop);
    weft_free(r->model);
    memset(r, 0, sizeof *r);
}

/* ---- responses ------------------------------------------------------------------ */

json_t *oai_logprobs_new(oai_kind kind)
{
    if (kind == OAI_CHAT) return json_pack("{s:[],s:n}", "content", "refusal");
    return json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
}

void oai_logprobs_add(oai_kind kind, json_t *lp, const char *tok, size_t len, float logprob,
                      size_t text_offset)
{
    json_t *s = oai_string(tok, len);
    if (!lp || !s) {
        json_decref(s);
        return;
    }
    if (kind == OAI_CHAT) {
        json_t *bytes = json_array();
        for (size_t i = 0; i < len; i++) json_array_append_new(bytes, json_integer((unsigned char)tok[i]));
        json_array_append_new(json_object_get(lp, "content"),
                              json_pack("{s:o,s:f,s:o,s:[]}", "token", s, "logprob", (double)logprob,
                                        "bytes", bytes, "top_logprobs"));
        return;
    }
    json_t *top = json_object();
    json_object_set_new(top, json_string_value(s), json_real(logprob));
    json_array_append_new(json_object_get(lp, "tokens"), s);
    json_array_append_new(json_object_get(lp, "token_logprobs"), json_real(logprob));
    json_array_append_new(json_object_get(lp, "top_logprobs"), top);
    json_array_append_new(json_object_get(lp, "text_offset"), json_integer((json_int_t)text_offset));
}

static json_t *usage_json(const oai_usage *u)
{
    return json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens", (json_int_t)u->prompt,
                     "completion_tokens", (json_int_t)u->completion, "total_tokens",
                     (json_int_t)(u->prompt + u->completion), "prompt_tokens_details",
                     "cached_tokens", (json_int_t)u->cached);
}

static json_t *head_json(const oai_head *h, const char *object)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", h->id, "object", object, "created",
                     (json_int_t)h->created, "model", h->model, "system_fingerprint", "weft-0.1.0");
}

static json_t *lp_or_null(json_t *lp) { return lp ? json_incref(lp) : json_null(); }

json_t *oai_response(const oai_head *h, const oai_choice *c, int n, const oai_usage *u)
{
    const bool chat = h->kind == OAI_CHAT;
    json_t *o = head_json(h, chat ? "chat.completion" : "text_completion");
    json_t *choices = json_array();
    for (int i = 0; i < n; i++) {
        json_t *text = oai_string(c[i].text, c[i].len);
        json_t *ch = chat ? json_pack("{s:i,s:{s:s,s:o,s:n},s:o,s:s}", "index", i, "message", "role",
                                      "assistant", "content", text, "refusal", "logprobs",
                                      lp_or_null(c[i].logprobs), "finish_reason", c[i].finish)
                          : json_pack("{s:i,s:o,s:o,s:s}", "index", i, "text", text, "logprobs",
                                      lp_or_null(c[i].logprobs), "finish_reason", c[i].finish);
        json_array_append_new(choices, ch);
    }
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "usage", usage_json(u));
    return o;
}

json_t *oai_chunk(const oai_head *h, int index, const char *text, size_t len, json_t *logprobs,
                  const char *finish, bool role_first, bool usage_null)
{
    const bool chat = h->kind == OAI_CHAT;
    json_t *o = head_json(h, chat ? "chat.completion.chunk" : "text_completion");
    json_t *fin = finish ? json_string(finish) : json_null(), *ch;
    if (chat) {
        json_t *delta = json_object();
        if (role_first) json_object_set_new(delta, "role", json_string("assistant"));
        if (len > 0 || role_first) json_object_set_new(delta, "content", oai_string(text, len));
        ch = json_pack("{s:i,s:o,s:o,s:o}", "index", index, "delta", delta, "logprobs",
                       lp_or_null(logprobs), "finish_reason", fin);
    } else {
        ch = json_pack("{s:i,s:o,s:o,s:o}", "index", index, "text", oai_string(text, len), "logprobs",
                       lp_or_null(logprobs), "finish_reason", fin);
    }
    json_object_set_new(o, "choices", json_pack("[o]", ch));
    if (usage_null) json_object_set_new(o, "usage", json_null());
    return o;
}

json_t *oai_usage_chunk(const oai_head *h, const oai_usage *u)
{
    json_t *o = head_json(h, h->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion");
    json_object_set_new(o, "choices", json_array());
    json_object_set_new(o, "usage", usage_json(u));
    return o;
}

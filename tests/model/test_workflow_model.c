/* A small map-reduce workflow on the real model over three arxiv articles:
 * real text comes out, the map calls' shared chat head (system message and
 * instruction) is computed once — the engine's counters say so — and the
 * graph mode gives the same values as the same calls issued one at a time. */
#include <event2/event.h>
#include <event2/thread.h>
#include <lauxlib.h>
#include <lua.h>

#include "model_common.h"
#include "test.h"
#include "weft/dsl.h"

static weft_model *model;

static const char script[] =
    "local data = arg.data\n"
    "local function excerpt(i)\n"
    "  local f = assert(io.open(data .. '/arxiv/article_' .. i .. '.txt', 'rb'))\n"
    "  local t = f:read('a'):gsub('%s+', ' ') f:close() return t:sub(1, 300)\n"
    "end\n"
    "local map = weft.fn{name = 'map', messages = {\n"
    "  {role = 'system', content = 'You are a helpful assistant that summarizes scientific articles.'},\n"
    "  {role = 'user', content = 'Summarize the main idea of this article excerpt in one sentence.\\n\\n{{text}}'}},\n"
    "  outputs = {summary = {max_tokens = 12}}}\n"
    "local reduce = weft.fn{name = 'reduce', messages = {\n"
    "  {role = 'user', content = 'Name the common topic of these summaries:\\n{{all}}'}},\n"
    "  outputs = {topic = {max_tokens = 12}}}\n"
    "local s = {}\n"
    "for i = 0, 2 do s[#s + 1] = map{text = excerpt(i)} end\n"
    "local topic = reduce{all = weft.join(s, '\\n')}\n"
    "local v = weft.gather(s)\n"
    "out = table.concat(v, '|') .. '#' .. topic:get()\n";

typedef struct result {
    char *out;
    int32_t cached[3], prompt[3], gen[3];
    int64_t computed, prompt_total, gen_total, cached_total;
} result;

/* An engine, an orchestrator and a Lua state on one event base. */
typedef struct session {
    weft_engine *e;
    struct event_base *base;
    orch *o;
    dsl *d;
} session;

static int session_open(session *s, bool sequential, int n_seq, size_t kv_mb)
{
    memset(s, 0, sizeof *s);
    weft_engine_params p = weft_engine_default_params();
    p.ctx.n_seq_max = n_seq;
    p.ctx.n_ctx = 1024;
    p.ctx.n_threads = 2;
    p.ctx.kv_mem = kv_mb << 20;
    p.prefix_cache = true;
    orch_params op = orch_default_params();
    op.sequential = sequential;
    const char *data = getenv("WEFT_DATA_DIR");
    s->base = event_base_new();
    if (weft_engine_create(model, &p, &s->e) == 0 && s->base && orch_create(s->e, model, s->base, &op, &s->o) == 0 &&
        dsl_create(s->o, model, s->base, NULL, &s->d) == 0 &&
        dsl_set_arg(s->d, "data", data ? data : "../shared/data") == 0)
        return 0;
    fprintf(stderr, "session: %s\n", weft_last_error());
    return -1;
}

static void session_close(session *s)
{
    dsl_destroy(s->d);
    orch_destroy(s->o);
    if (s->base) event_base_free(s->base);
    weft_engine_destroy(s->e);
}

/* The global `out` the script set (strdup'd). */
static char *script_out(session *s)
{
    lua_State *L = dsl_lua(s->d);
    lua_getglobal(L, "out");
    char *out = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return out;
}

static int run(bool sequential, result *r)
{
    memset(r, 0, sizeof *r);
    session s;
    int rc = -1;
    if (session_open(&s, sequential, 8, 64) == 0 && dsl_run_string(s.d, script, "=mapreduce") == 0) {
        r->out = script_out(&s);
        weft_engine_wait_idle(s.e);
        const weft_engine_stats st = weft_engine_get_stats(s.e);
        /* drafts the output did not keep (speculative decoding) aside */
        r->computed = st.n_computed_tokens - (st.n_drafted - st.n_draft_accepted);
        r->prompt_total = st.n_prompt_tokens;
        r->cached_total = st.n_cached_tokens;
        r->gen_total = st.n_generated;
        for (int i = 0; i < 3; i++) {
            orch_call_info ci;
            orch_call_info_get(s.o, i, &ci);
            r->cached[i] = ci.n_cached;
            r->prompt[i] = ci.n_prompt;
            r->gen[i] = ci.n_generated;
        }
        rc = 0;
    } else {
        fprintf(stderr, "run: %s\n", weft_last_error());
    }
    session_close(&s);
    return rc;
}

TEST(map_reduce_shares_the_head_and_equals_sequential)
{
    result g, s;
    ASSERT_EQ_INT(run(false, &g), 0);
    ASSERT_EQ_INT(run(true, &s), 0);
    fprintf(stderr, "  graph: %s\n", g.out);
    fprintf(stderr, "  cached per map call: %d %d %d; computed %lld of %lld prompt + %lld generated\n",
            g.cached[0], g.cached[1], g.cached[2], (long long)g.computed, (long long)g.prompt_total,
            (long long)g.gen_total);
    ASSERT(g.out && s.out);
    ASSERT_STR_EQ(g.out, s.out);
    ASSERT(strlen(g.out) > 20); /* three summaries and a topic of real text */
    /* one map call computed the shared head, the other two found it cached */
    int leaders = 0;
    for (int i = 0; i < 3; i++) leaders += g.cached[i] == 0;
    ASSERT_EQ_INT(leaders, 1);
    for (int i = 0; i < 3; i++) ASSERT(g.cached[i] == 0 || g.cached[i] >= 32);
    /* the forward pass ran every prompt token not cached and one step per
     * generated token but each call's first: the head was not recomputed */
    ASSERT_EQ_INT(g.computed, g.prompt_total - g.cached_total + g.gen_total - 4);
    free(g.out);
    free(s.out);
}

/* A call waiting for a slow input has its known head (a long constant part
 * and a fast input) computed ahead: a one-token request warms the prefix
 * cache when the fast input completes, the call then finds that head
 * cached, and the values are those of the same calls one at a time. */
static const char warm_script[] =
    "local data = arg.data\n"
    "local f = assert(io.open(data .. '/arxiv/article_4.txt', 'rb'))\n"
    "local text = f:read('a'):gsub('%s+', ' '):sub(1, 700) f:close()\n"
    "local short = weft.fn{template = 'Q: Name a color.\\nA:{{a}}', outputs = {a = {max_tokens = 3}}}\n"
    "local long = weft.fn{template = 'Q: Write a sentence about the sea.\\nA:{{a}}', outputs = {a = {max_tokens = 40}}}\n"
    "local final = weft.fn{template = 'Article: ' .. text:gsub('{', '(') .. '\\nColor: {{c}}\\nSea: {{s}}\\nSummary:{{out}}',\n"
    "                      outputs = {out = {max_tokens = 8}}}\n"
    "local r = final{c = short{}, s = long{}}\n"
    "out = r:get()\n";

static int run_warm(bool sequential, char **out, orch_stats *os, orch_call_info *fin)
{
    session s;
    int rc = -1;
    if (session_open(&s, sequential, 4, 32) == 0 && dsl_run_string(s.d, warm_script, "=warm") == 0) {
        *out = script_out(&s);
        *os = orch_get_stats(s.o);
        orch_call_info_get(s.o, 2, fin);
        rc = 0;
    } else {
        fprintf(stderr, "run_warm: %s\n", weft_last_error());
    }
    session_close(&s);
    return rc;
}

TEST(waiting_call_head_is_warmed_ahead)
{
    char *g = NULL, *s = NULL;
    orch_stats gs, ss;
    orch_call_info gf, sf;
    ASSERT_EQ_INT(run_warm(false, &g, &gs, &gf), 0);
    ASSERT_EQ_INT(run_warm(true, &s, &ss, &sf), 0);
    fprintf(stderr, "  final call: prompt %d, cached %d (graph) / %d (sequential); warm requests %lld (%lld tokens)\n",
            gf.n_prompt, gf.n_cached, sf.n_cached, (long long)gs.n_warm, (long long)gs.n_warm_tokens);
    ASSERT(g && s);
    ASSERT_STR_EQ(g, s);
    ASSERT(gs.n_warm >= 1);
    ASSERT(ss.n_warm == 0); /* a request-level client cannot know the head */
    /* the head through the fast input came from the cache: all but the
     * slow input's part and the tail, in whole blocks */
    ASSERT(gf.n_cached >= 160);
    ASSERT(gf.n_cached > sf.n_cached + 100);
    free(g);
    free(s);
}

/* A chat function with two outputs: the second turn refers to the first's answer. */
TEST(chat_outputs_chain_turns)
{
    weft_engine_params p = weft_engine_default_params();
    p.ctx.n_seq_max = 2;
    p.ctx.n_ctx = 512;
    p.ctx.n_threads = 2;
    p.ctx.kv_mem = 16u << 20;
    weft_engine *e = NULL;
    struct event_base *base = event_base_new();
    orch *o = NULL;
    dsl *d = NULL;
    ASSERT(weft_engine_create(model, &p, &e) == 0 && base && orch_create(e, model, base, NULL, &o) == 0 &&
           dsl_create(o, model, base, NULL, &d) == 0);
    ASSERT_EQ_INT(dsl_run_string(d,
                                 "local f = weft.fn{messages = {\n"
                                 "  {role = 'user', content = 'Name one fruit. Answer with one word.'},\n"
                                 "  {role = 'assistant', content = '{{fruit}}'},\n"
                                 "  {role = 'user', content = 'What color is a {{fruit}}? One word.'},\n"
                                 "  {role = 'assistant', content = '{{color}}'}},\n"
                                 "  outputs = {fruit = {max_tokens = 6}, color = {max_tokens = 6}}}\n"
                                 "local fruit, color = f{}\n"
                                 "assert(#fruit:get() > 0 and #color:get() > 0)\n"
                                 "print('  fruit: ' .. fruit:get() .. ', color: ' .. color:get())\n",
                                 "=chat"),
                  0);
    orch_call_info a, b;
    orch_call_info_get(o, 0, &a);
    orch_call_info_get(o, 1, &b);
    ASSERT(b.n_prompt > a.n_prompt + a.n_generated); /* the second turn holds the first */
    ASSERT(b.done_seq > a.done_seq);
    dsl_destroy(d);
    orch_destroy(o);
    event_base_free(base);
    weft_engine_destroy(e);
}

int main(void)
{
    int code = 0;
    (void)fixture; /* model_common.h helpers this test does not need */
    (void)json_ints;
    evthread_use_pthreads();
    model = model_or_skip(&code);
    if (!model) return code;
    RUN(map_reduce_shares_the_head_and_equals_sequential);
    RUN(chat_outputs_chain_turns);
    RUN(waiting_call_head_is_warmed_ahead);
    weft_model_free(model);
    TEST_DONE();
}

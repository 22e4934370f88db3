/* Lua workflows on a tiny random model: graph semantics (ordering, fan-out
 * and fan-in, error propagation that names the failed call while
 * independent branches run on), prefix sharing proven by the engine's
 * counters, objective ordering (awaited work first), sequential mode
 * equal to graph mode, deterministic call keys and the store hooks, and
 * the Lua boundary refusing bad arguments. */
#include <event2/event.h>
#include <event2/thread.h>
#include <lauxlib.h>
#include <lua.h>

#include "test.h"
#include "tiny_model.h"
#include "weft/dsl.h"
#include "weft/sandbox.h"
#include "weft/tokenizer.h"

static weft_model *model;

typedef struct rig {
    weft_engine *e;
    struct event_base *base;
    orch *o;
    dsl *d;
} rig;

/* The objective tests count on a call's tokens taking a step each: the
 * tiny model repeats one token, which speculative decoding drafts right. */
static bool rig_no_drafts;

static int rig_open_on(rig *r, weft_model *m, int32_t n_seq, bool sequential)
{
    memset(r, 0, sizeof *r);
    weft_engine_params p = weft_engine_default_params();
    if (rig_no_drafts) p.spec_max = 0;
    p.ctx.n_seq_max = n_seq;
    p.ctx.n_ctx = 256;
    p.ctx.n_threads = 2;
    p.ctx.n_batch = 64;
    p.prefix_cache = true;
    orch_params op = orch_default_params();
    op.sequential = sequential;
    if (weft_engine_create(m, &p, &r->e) != 0 || !(r->base = event_base_new()) ||
        orch_create(r->e, m, r->base, &op, &r->o) != 0 || dsl_create(r->o, m, r->base, NULL, &r->d) != 0) {
        fprintf(stderr, "rig: %s\n", weft_last_error());
        return -1;
    }
    return 0;
}

static int rig_open(rig *r, int32_t n_seq, bool sequential) { return rig_open_on(r, model, n_seq, sequential); }

static void rig_close(rig *r)
{
    dsl_destroy(r->d);
    orch_destroy(r->o);
    if (r->base) event_base_free(r->base);
    weft_engine_destroy(r->e);
}

/* Global integer `name` of the script (a variable id it saved). */
static int32_t lua_int(rig *r, const char *name)
{
    lua_State *L = dsl_lua(r->d);
    lua_getglobal(L, name);
    const int32_t v = lua_isinteger(L, -1) ? (int32_t)lua_tointeger(L, -1) : -1;
    lua_pop(L, 1);
    return v;
}

static orch_call_info info_of_var(rig *r, int32_t var)
{
    orch_call_info ci = {0};
    orch_call_info_get(r->o, orch_var_producer(r->o, var), &ci);
    return ci;
}

/* A shared head long enough for several KV blocks. */
#define HEAD "You are a careful assistant. Read the text below and answer in one short line. "

TEST(fan_out_fan_in_runs_in_dependency_order)
{
    rig r;
    ASSERT_EQ_INT(rig_open(&r, 8, false), 0);
    const char *script =
        "local f = weft.fn{template = 'seed {{x}} ->{{y}}', outputs = {y = {max_tokens = 6}}, name = 'root'}\n"
        "local g = weft.fn{template = 'branch {{k}} of {{y}} ->{{z}}', outputs = {z = {max_tokens = 5}}, name = 'branch'}\n"
        "local h = weft.fn{template = 'all: {{j}} =>{{w}}', outputs = {w = {max_tokens = 4}}, name = 'sink'}\n"
        "local y = f{x = 'the'}\n"
        "local zs = {}\n"
        "for k = 1, 4 do zs[k] = g{k = k, y = y} end\n"
        "local j = weft.join(zs, '|')\n"
        "local w = h{j = j}\n"
        "root, b1, b4, joined, sink = y:id(), zs[1]:id(), zs[4]:id(), j:id(), w:id()\n"
        "assert(not w:ready())\n"
        "local got = w:get()\n"
        "assert(w:ready() and type(got) == 'string')\n"
        "local parts = {} for k = 1, 4 do parts[k] = zs[k]:get() end\n"
        "assert(j:get() == table.concat(parts, '|'), 'join is the concatenation')\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=fan"), 0);
    const orch_call_info root = info_of_var(&r, lua_int(&r, "root"));
    const orch_call_info b1 = info_of_var(&r, lua_int(&r, "b1")), b4 = info_of_var(&r, lua_int(&r, "b4"));
    const orch_call_info sink = info_of_var(&r, lua_int(&r, "sink"));
    ASSERT(root.done_seq >= 0 && b1.done_seq > root.done_seq && b4.done_seq > root.done_seq);
    ASSERT(sink.done_seq > b1.done_seq && sink.done_seq > b4.done_seq);
    /* a dependent is sent only after its inputs are done */
    ASSERT(b1.t_submit >= root.t_done && sink.t_submit >= b4.t_done);
    ASSERT_EQ_INT(b1.n_generated, 5);
    ASSERT_STR_EQ(b1.name, "branch.z"); /* function.output */
    rig_close(&r);
}

TEST(a_failed_call_fails_its_dependents_and_spares_the_rest)
{
    rig r;
    ASSERT_EQ_INT(rig_open(&r, 4, false), 0);
    /* max_tokens beyond the 256-token context: the engine refuses the call */
    const char *script =
        "local bad = weft.fn{template = 'x {{a}}{{b}}', outputs = {b = {max_tokens = 100000}}, name = 'toolong'}\n"
        "local f = weft.fn{template = 'y {{a}}{{b}}', outputs = {b = {max_tokens = 4}}, name = 'next'}\n"
        "local b = bad{a = 'the'}\n"
        "local d1 = f{a = b}\n"
        "local d2 = f{a = weft.join({d1, 'and'})}\n"
        "local ok1 = f{a = 'the'}\n"
        "local ok2 = f{a = ok1}\n"
        "dep = d2:id()\n"
        "assert(#ok2:get() >= 0)\n"
        "local okcall, err = pcall(d2.get, d2)\n"
        "assert(not okcall, 'a dependent of a failed call fails')\n"
        "assert(err:find(\"call 'toolong.b' %(#0%) failed\"), err)\n"
        "assert(d1:error():find('toolong'), d1:error())\n"
        "assert(not d2:ready())\n"
        "e1 = err\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=err"), 0);
    const char *e = orch_var_error(r.o, lua_int(&r, "dep"));
    ASSERT(e != NULL);
    ASSERT(strstr(e, "not run") != NULL);
    ASSERT(strstr(e, "'toolong.b'") != NULL);
    const orch_stats st = orch_get_stats(r.o);
    ASSERT_EQ_INT(st.n_failed, 3);    /* toolong, and the two 'next' calls below it */
    ASSERT_EQ_INT(st.n_submitted, 2); /* ok1, ok2 (the engine refused toolong) */
    rig_close(&r);
    /* an uncaught failure ends the script with the message */
    ASSERT_EQ_INT(rig_open(&r, 4, false), 0);
    ASSERT_EQ_INT(dsl_run_string(r.d,
                                 "local bad = weft.fn{template = '{{a}}{{b}}', outputs = {b = "
                                 "{max_tokens = 9999}}, name = 'boom'}\n"
                                 "print(bad{a = 'the'}:get())\n",
                                 "=err2"),
                  WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "call 'boom.b'") != NULL);
    rig_close(&r);
}

/* Longest common prefix of the token ids of two prompts. */
static int32_t lcp_tokens(const char *a, const char *b)
{
    const tok_vocab *v = weft_model_vocab(model);
    int32_t *ta, *tb, na, nb;
    tok_encode(v, a, strlen(a), true, false, &ta, &na);
    tok_encode(v, b, strlen(b), true, false, &tb, &nb);
    int32_t n = 0;
    while (n < na && n < nb && ta[n] == tb[n]) n++;
    weft_free(ta);
    weft_free(tb);
    return n;
}

TEST(calls_sharing_a_head_compute_it_once)
{
    rig r;
    ASSERT_EQ_INT(rig_open(&r, 8, false), 0);
    const char *script =
        "local f = weft.fn{template = '" HEAD "Text: {{t}} Answer:{{a}}', outputs = {a = {max_tokens = 4, ignore_eos = true}}}\n"
        "local vs = {}\n"
        "for i = 1, 8 do vs[i] = f{t = 'item number ' .. i .. ' of the list'} end\n"
        "first = vs[1]:id()\n"
        "weft.gather(vs)\n";
    const weft_engine_stats s0 = weft_engine_get_stats(r.e);
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=prefix"), 0);
    weft_engine_wait_idle(r.e); /* statistics are published after a step's events */
    const weft_engine_stats s1 = weft_engine_get_stats(r.e);
    const int32_t lcp = lcp_tokens(HEAD "Text: item number 1 of the list Answer:",
                                   HEAD "Text: item number 2 of the list Answer:");
    const int32_t shared = lcp / 16 * 16;
    ASSERT(shared >= 16);
    int64_t n_prompt = 0, n_cached = 0, n_gen = 0;
    int leaders = 0;
    for (int32_t c = 0; c < orch_n_calls(r.o); c++) {
        orch_call_info ci;
        ASSERT_EQ_INT(orch_call_info_get(r.o, c, &ci), 0);
        n_prompt += ci.n_prompt;
        n_cached += ci.n_cached;
        n_gen += ci.n_generated;
        if (ci.n_cached == 0) leaders++;
        else ASSERT_EQ_INT(ci.n_cached, shared);
    }
    ASSERT_EQ_INT(leaders, 1);
    ASSERT_EQ_INT(s1.n_cached_tokens - s0.n_cached_tokens, 7 * shared);
    /* the forward pass saw the shared head once: every prompt token not
     * cached, plus one decode step per generated token but the first */
    ASSERT_EQ_INT(s1.n_computed_tokens - s0.n_computed_tokens, n_prompt - 7 * shared + n_gen - 8);
    ASSERT_EQ_INT(n_cached, 7 * shared);
    rig_close(&r);
}

TEST(awaited_work_runs_before_throughput_work)
{
    rig r;
    rig_no_drafts = true;
    const int rc = rig_open(&r, 1, false); /* one call at a time: order is the objective */
    rig_no_drafts = false;
    ASSERT_EQ_INT(rc, 0);
    const char *script =
        /* background calls long enough that the loop thread submits c2
         * before a second one could run */
        "local bg = weft.fn{template = 'background {{i}}:{{o}}', outputs = {o = {max_tokens = 192, ignore_eos = true}}, name = 'bg'}\n"
        "local f = weft.fn{template = 'first {{x}}:{{o}}', outputs = {o = {max_tokens = 3, ignore_eos = true}}, name = 'first'}\n"
        "local g = weft.fn{template = 'then {{x}}:{{o}}', outputs = {o = {max_tokens = 3, ignore_eos = true}}, name = 'then'}\n"
        "local bgs = {}\n"
        "for i = 1, 6 do bgs[i] = bg{i = i} end\n"
        "local c1 = f{x = 'the'}\n"
        "local c2 = g{x = c1}\n"
        "v1, v2, vb = c1:id(), c2:id(), bgs[1]:id()\n"
        "c2:get()\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=objective"), 0);
    const orch_call_info c1 = info_of_var(&r, lua_int(&r, "v1"));
    const orch_call_info c2 = info_of_var(&r, lua_int(&r, "v2"));
    const orch_call_info b = info_of_var(&r, lua_int(&r, "vb"));
    /* c2 was awaited; c1 feeds it: both latency, the background throughput */
    ASSERT_EQ_INT(c1.priority, ORCH_PRIO_LATENCY);
    ASSERT_EQ_INT(c2.priority, ORCH_PRIO_LATENCY);
    ASSERT_EQ_INT(b.priority, ORCH_PRIO_THROUGHPUT);
    ASSERT_EQ_INT(c1.done_seq, 0); /* created after the six, run first */
    /* c2 becomes ready only when c1 is done: at most the call admitted in
     * between runs before it; without the objective it would be last (7) */
    ASSERT(c2.done_seq <= 2);
    rig_close(&r);
}

TEST(awaiting_raises_calls_already_in_the_engine)
{
    rig r;
    rig_no_drafts = true;
    const int rc = rig_open(&r, 1, false);
    rig_no_drafts = false;
    ASSERT_EQ_INT(rc, 0);
    int32_t vars[7];
    for (int i = 0; i < 7; i++) {
        char text[32];
        snprintf(text, sizeof text, "call %d:", i);
        const orch_seg seg = {.text = text, .len = strlen(text), .var = -1};
        const orch_call_spec cs = {.name = "c", .segs = &seg, .n_segs = 1,
                                   .sampling = weft_sampling_greedy(), .max_tokens = 48, .ignore_eos = true};
        ASSERT_EQ_INT(orch_call(r.o, &cs, &vars[i]), 0);
    }
    orch_flush(r.o); /* all seven in the engine at throughput priority */
    ASSERT_EQ_INT(info_of_var(&r, vars[6]).priority, ORCH_PRIO_THROUGHPUT);
    ASSERT_EQ_INT(orch_await(r.o, vars[6]), 0);
    ASSERT_EQ_INT(info_of_var(&r, vars[6]).priority, ORCH_PRIO_LATENCY);
    while (!orch_idle(r.o)) event_base_loop(r.base, EVLOOP_ONCE);
    /* one slot: the call running when it was raised may finish first, then
     * the raised one; in submission order it would be last (6) */
    ASSERT(info_of_var(&r, vars[6]).done_seq <= 1);
    rig_close(&r);
}

static char *run_values(bool sequential, int32_t n_seq, uint64_t *keys, int32_t *n_keys, orch_stats *st)
{
    rig r;
    if (rig_open(&r, n_seq, sequential) != 0) return NULL;
    const char *script =
        "local m = weft.fn{template = 'map {{d}}:{{s}}', outputs = {s = {max_tokens = 5}}, name = 'map'}\n"
        "local red = weft.fn{template = 'reduce {{all}}:{{s}}', outputs = {s = {max_tokens = 6}}, name = 'reduce'}\n"
        "local two = weft.fn{template = 'a {{x}} b{{p}} (p was {{p}}) c{{q}}', outputs = {p = {max_tokens = 3}, q = {max_tokens = 3}}, name = 'two'}\n"
        "local ss = {}\n"
        "for i = 1, 5 do ss[i] = m{d = 'doc ' .. i} end\n"
        "local p, q = two{x = ss[2]}\n"
        "out = red{all = weft.join(ss, ';')}:get() .. '#' .. p:get() .. '#' .. q:get()\n";
    char *res = NULL;
    if (dsl_run_string(r.d, script, "=values") == 0) {
        lua_State *L = dsl_lua(r.d);
        lua_getglobal(L, "out");
        res = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
        lua_pop(L, 1);
        *n_keys = 0;
        for (int32_t c = 0; c < orch_n_calls(r.o); c++) {
            orch_call_info ci;
            orch_call_info_get(r.o, c, &ci);
            if (ci.is_llm) keys[(*n_keys)++] = ci.key;
        }
        /* sequential: each engine call sent after the previous one ended */
        double last_done = 0;
        for (int32_t c = 0; sequential && c < orch_n_calls(r.o); c++) {
            orch_call_info ci;
            orch_call_info_get(r.o, c, &ci);
            if (!ci.is_llm) continue;
            if (ci.t_submit < last_done) {
                free(res);
                res = strdup("(overlap)");
            }
            last_done = ci.t_done;
        }
        *st = orch_get_stats(r.o);
    }
    rig_close(&r);
    return res;
}

TEST(sequential_mode_gives_the_same_values_one_call_at_a_time)
{
    uint64_t ka[32], kb[32];
    int32_t na = 0, nb = 0;
    orch_stats sa, sb;
    char *a = run_values(false, 8, ka, &na, &sa), *b = run_values(true, 8, kb, &nb, &sb);
    ASSERT(a && b);
    ASSERT_STR_EQ(b, a);
    ASSERT_EQ_INT(na, 8); /* 5 maps, the two outputs of 'two', reduce */
    ASSERT_EQ_INT(nb, na);
    /* keys are deterministic across runs and modes; distinct within a run */
    for (int i = 0; i < na; i++) {
        ASSERT(ka[i] != 0);
        ASSERT(ka[i] == kb[i]);
        for (int k = 0; k < i; k++) ASSERT(ka[k] != ka[i]);
    }
    free(a);
    free(b);
}

/* A store in memory: what record saw, lookup hands back. */
typedef struct mem_store {
    uint64_t keys[64];
    char *vals[64];
    int n, lookups, hits;
} mem_store;

static int ms_lookup(void *u, uint64_t key, const char *name, char **value, size_t *len)
{
    mem_store *s = u;
    s->lookups++;
    for (int i = 0; i < s->n; i++)
        if (s->keys[i] == key) {
            *value = weft_strdup(s->vals[i]);
            *len = strlen(s->vals[i]);
            s->hits++;
            return 1;
        }
    return 0;
}

static void ms_record(void *u, uint64_t key, const char *value, size_t len,
                      const orch_call_info *info)
{
    mem_store *s = u;
    if (s->n < 64) {
        s->keys[s->n] = key;
        s->vals[s->n++] = strndup(value, len);
    }
}

TEST(stored_values_replace_calls_without_the_engine)
{
    mem_store ms = {0};
    orch_hooks h = {.lookup = ms_lookup, .record = ms_record, .user = &ms};
    const char *script =
        "local f = weft.fn{template = 'one {{x}}:{{y}}', outputs = {y = {max_tokens = 5}}}\n"
        "local g = weft.fn{template = 'two {{y}}:{{z}}', outputs = {z = {max_tokens = 5}}}\n"
        "local a, b = f{x = 'the'}, f{x = 'the'}\n" /* same prompt twice: two keys */
        "out = g{y = weft.join({a, b})}:get()\n";
    char *first = NULL;
    for (int pass = 0; pass < 2; pass++) {
        rig r;
        ASSERT_EQ_INT(rig_open(&r, 4, false), 0);
        orch_set_hooks(r.o, &h);
        ASSERT_EQ_INT(dsl_run_string(r.d, script, "=store"), 0);
        lua_State *L = dsl_lua(r.d);
        lua_getglobal(L, "out");
        const orch_stats st = orch_get_stats(r.o);
        if (pass == 0) {
            first = strdup(lua_tostring(L, -1));
            ASSERT_EQ_INT(ms.n, 3);
            ASSERT(ms.keys[0] != ms.keys[1]);
            ASSERT_EQ_INT(st.n_submitted, 3);
        } else {
            ASSERT_STR_EQ(lua_tostring(L, -1), first);
            ASSERT_EQ_INT(st.n_submitted, 0);
            ASSERT_EQ_INT(st.n_from_store, 3);
            ASSERT_EQ_INT(weft_engine_get_stats(r.e).n_requests, 0);
        }
        lua_pop(L, 1);
        rig_close(&r);
    }
    ASSERT_EQ_INT(ms.hits, 3);
    free(first);
    for (int i = 0; i < ms.n; i++) free(ms.vals[i]);
}

TEST(forked_completions_share_one_prefill)
{
    mem_store ms = {0};
    orch_hooks h = {.lookup = ms_lookup, .record = ms_record, .user = &ms};
    /* high temperature on the tiny model: the four samples differ */
    const char *script =
        "local f = weft.fn{template = '" HEAD "pick {{x}}:{{o}}', outputs = {o = {max_tokens = 8, n = 4,\n"
        "  temperature = 50, top_k = 0, top_p = 1, min_p = 0, seed = 3, ignore_eos = true}}}\n"
        "local outs = f{x = 'the'}\n"
        "assert(type(outs) == 'table' and #outs == 4)\n"
        "local vals = weft.gather(outs)\n"
        "local seen, distinct = {}, 0\n"
        "for _, v in ipairs(vals) do if not seen[v] then seen[v] = true distinct = distinct + 1 end end\n"
        "assert(distinct >= 2, 'samples with different seeds differ')\n"
        "local g = weft.fn{template = 'then {{y}}:{{z}}', outputs = {z = {max_tokens = 3}}}\n"
        "out = table.concat(vals, '|') .. '#' .. g{y = outs[2]}:get()\n";
    char *first = NULL;
    for (int pass = 0; pass < 2; pass++) {
        rig r;
        ASSERT_EQ_INT(rig_open(&r, 8, false), 0);
        orch_set_hooks(r.o, &h);
        ASSERT_EQ_INT(dsl_run_string(r.d, script, "=forks"), 0);
        weft_engine_wait_idle(r.e);
        const weft_engine_stats st = weft_engine_get_stats(r.e);
        lua_State *L = dsl_lua(r.d);
        lua_getglobal(L, "out");
        if (pass == 0) {
            orch_call_info ci;
            ASSERT_EQ_INT(orch_call_info_get(r.o, 0, &ci), 0);
            ASSERT_EQ_INT(ci.n_out, 4);
            ASSERT_EQ_INT(ci.n_generated, 32);
            ASSERT_EQ_INT(st.n_requests, 2); /* one request for the four, one for g */
            /* the prompt went through the forward pass once, not four times */
            ASSERT(st.n_computed_tokens < 2 * ci.n_prompt + 32 + 3);
            ASSERT_EQ_INT(ms.n, 5);
            first = strdup(lua_tostring(L, -1));
        } else {
            ASSERT_EQ_INT(st.n_requests, 0); /* all five values from the store */
            ASSERT_STR_EQ(lua_tostring(L, -1), first);
        }
        lua_pop(L, 1);
        rig_close(&r);
    }
    free(first);
    for (int i = 0; i < ms.n; i++) free(ms.vals[i]);
}

/* A completion that ends by length while its tail could begin a stop string
 * gets that tail in the engine's final event: the value and the streamed
 * pieces keep it (they once lost it, and the incomplete UTF-8 tail with it). */
TEST(held_back_tail_reaches_the_value_and_the_stream)
{
    rig r;
    ASSERT_EQ_INT(rig_open(&r, 8, false), 0);
    const char *script =
        "local plain = weft.fn{template = 'tail {{x}}:{{o}}', outputs = {o = {max_tokens = 12, ignore_eos = true}}}\n"
        "local v = plain{x = 'a'}:get()\n"
        "assert(#v > 0, 'the tiny model wrote something')\n"
        "local z\n"
        "for b = 33, 126 do if not v:find(string.char(b), 1, true) then z = string.char(b) break end end\n"
        "assert(z, 'a byte the text lacks')\n"
        "local held = weft.fn{template = 'tail {{x}}:{{o}}',\n"
        "  outputs = {o = {max_tokens = 12, ignore_eos = true, stop = {v:sub(-1) .. z}}}}\n"
        "local w = held{x = 'a'}\n"
        "local pieces = {}\n"
        "weft.stream(w, function(p) pieces[#pieces + 1] = p end)\n"
        "plain_text, held_text, streamed = v, w:get(), table.concat(pieces)\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=held"), 0);
    lua_State *L = dsl_lua(r.d);
    lua_getglobal(L, "plain_text");
    lua_getglobal(L, "held_text");
    lua_getglobal(L, "streamed");
    size_t lp, lh, ls;
    const char *p = lua_tolstring(L, -3, &lp), *h = lua_tolstring(L, -2, &lh), *st = lua_tolstring(L, -1, &ls);
    ASSERT(p && h && st);
    ASSERT_EQ_INT((long)lh, (long)lp);
    ASSERT(memcmp(h, p, lp) == 0);
    ASSERT_EQ_INT((long)ls, (long)lp);
    ASSERT(memcmp(st, p, lp) == 0);
    lua_pop(L, 3);
    rig_close(&r);
}

/* weft.stream's pieces add up to the value whatever made it (a call, a
 * join) and however late the watcher came; an error in a callback fails
 * the run with its message; a failed run leaves no result behind. */
TEST(streams_give_whole_values_and_their_errors_fail_the_run)
{
    rig r;
    ASSERT_EQ_INT(rig_open(&r, 8, false), 0);
    const char *script =
        "local long = weft.fn{template = 'long {{x}}:{{o}}', outputs = {o = {max_tokens = 40, ignore_eos = true}}}\n"
        "local short = weft.fn{template = 'short {{x}}:{{o}}', outputs = {o = {max_tokens = 2, ignore_eos = true}}}\n"
        "local a, b = long{x = 'a'}, short{x = 'b'}\n"
        "b:get()\n"
        "local late = {}\n"
        "weft.stream(a, function(p) late[#late + 1] = p end)\n"
        "local j = weft.join({a, '!', b})\n"
        "local jp = {}\n"
        "weft.stream(j, function(p) jp[#jp + 1] = p end)\n"
        "local av = a:get() -- first: the watchers' pieces are complete once it returns\n"
        "assert(table.concat(late) == av, 'a late watcher gets all of the text')\n"
        "assert(j:get() == a:get() .. '!' .. b:get())\n"
        "assert(table.concat(jp) == j:get(), 'a join streams its value')\n"
        "return 'first result'\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=streams"), 0);
    ASSERT_STR_EQ(dsl_result(r.d), "first result");
    const char *failing =
        "local long = weft.fn{template = 'again {{x}}:{{o}}', outputs = {o = {max_tokens = 30, ignore_eos = true}}}\n"
        "local a = long{x = 'c'}\n"
        "weft.stream(a, function(p) error('callback broke') end)\n"
        "a:get()\n"
        "return 'never'\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, failing, "=failing"), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "callback broke") != NULL);
    ASSERT(dsl_result(r.d) == NULL);
    rig_close(&r);
}

/* The weft module in a sandboxed run: its shared metatables are out of a
 * script's reach (a __gc set there would run unmetered), and what the host
 * keeps for the script outside the Lua heap (values, joins, templates)
 * counts against the memory cap, so a few bytes of script cannot make the
 * host allocate without bound. */
TEST(sandboxed_scripts_cannot_use_the_weft_module_to_escape_their_caps)
{
    rig r;
    ASSERT_EQ_INT(rig_open(&r, 2, false), 0);
    dsl_destroy(r.d);
    weft_sandbox_params sp = weft_sandbox_default_params();
    sp.mem_limit = (size_t)16 << 20;
    sp.instr_limit = 50000000;
    ASSERT_EQ_INT(dsl_create(r.o, model, r.base, &sp, &r.d), 0);
    ASSERT_EQ_INT(dsl_run_string(r.d,
                                 "assert(getmetatable(weft.var('a')) == 'weft.Var')\n"
                                 "assert(getmetatable(weft.fn{template = 'x{{o}}', outputs = {o = true}}) == 'weft.Fn')\n",
                                 "=mt"),
                  0);
    /* 400 values of 4 MB held by the orchestrator: 1.6 GB before */
    ASSERT_EQ_INT(dsl_run_string(r.d, "local s = ('x'):rep(4 << 20) for i = 1, 400 do weft.var(s) end", "=vars"),
                  WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "memory limit") != NULL);
    rig_close(&r);
    ASSERT_EQ_INT(rig_open(&r, 2, false), 0);
    dsl_destroy(r.d);
    ASSERT_EQ_INT(dsl_create(r.o, model, r.base, &sp, &r.d), 0);
    /* a join of one 1 MB value forty times: 40 MB rendered by the host */
    ASSERT_EQ_INT(dsl_run_string(r.d,
                                 "local big = weft.var(('x'):rep(1 << 20))\n"
                                 "local parts = {} for i = 1, 40 do parts[i] = big end\n"
                                 "weft.join(parts):get()\n",
                                 "=join"),
                  WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "size limit") != NULL);
    /* the same run's state still works */
    ASSERT_EQ_INT(dsl_run_string(r.d, "assert(weft.join({'a', 'b'}):get() == 'ab')", "=fine"), 0);
    rig_close(&r);
}

static int n_edges;
static void count_edge(void *u, uint64_t src, uint64_t dst)
{
    (void)u, (void)src, (void)dst;
    n_edges++;
}

/* Graph walks visit each call once and failure spreads without recursion:
 * a lattice of joins 40 deep (2^40 paths) over a call that fails, a chain
 * of 100,000 joins below one, dependents made after the failure, and a
 * lattice over a call that succeeds whose edges go to the store hook once
 * each. The errors name the call that failed first. */
TEST(join_lattices_and_long_chains_stay_linear)
{
    rig r;
    ASSERT_EQ_INT(rig_open(&r, 4, false), 0);
    orch_hooks h = {.edge = count_edge};
    orch_set_hooks(r.o, &h);
    const double t0 = weft_now();
    const char *script =
        "local bad = weft.fn{template = 'x {{a}}{{b}}', outputs = {b = {max_tokens = 100000}}, name = 'toolong'}\n"
        "local x = bad{a = 'the'}\n"
        "local a = weft.join({''})\n"
        "local j, k = weft.join({a, x}), weft.join({x, a})\n"
        "for i = 2, 40 do j, k = weft.join({j, '', k}), weft.join({k, '', j}) end\n"
        "local ok, err = pcall(j.get, j)\n"
        "assert(not ok and err:find(\"call 'toolong.b' %(#0%) failed\"), err)\n"
        /* made after the failure: still names the first one, not 60 joins deep */
        "local c = x\n"
        "for i = 1, 60 do c = weft.join({c, '.'}) end\n"
        "ok, err = pcall(c.get, c)\n"
        "assert(not ok and err:find(\"call 'toolong.b' %(#0%) failed\") and #err < 400, err)\n"
        /* a chain of 100,000 joins below a call that will fail */
        "local y = bad{a = 'again'}\n"
        "c = y\n"
        "for i = 1, 100000 do c = weft.join({c, '.'}) end\n"
        "ok, err = pcall(c.get, c)\n"
        "assert(not ok and err:find('toolong'), err)\n"
        /* a lattice over a call that succeeds, feeding one more call */
        "local f = weft.fn{template = 'y {{a}}{{b}}', outputs = {b = {max_tokens = 2}}, name = 'src'}\n"
        "local s = f{a = 'the'}\n"
        "j, k = weft.join({s, '1'}), weft.join({s, '2'})\n"
        "for i = 2, 5 do j, k = weft.join({j, k}), weft.join({k, j}) end -- 16 paths; values double\n"
        "local g = weft.fn{template = 'z {{a}}{{b}}', outputs = {b = {max_tokens = 1}}, name = 'sink'}\n"
        "g{a = weft.join({j, ''})}:get()\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=lattice"), 0);
    const double dt = weft_now() - t0;
    fprintf(stderr, "  lattices and chains: %.2f s, %d edges reported\n", dt, n_edges);
    ASSERT(dt < 60.0); /* 2^40 paths were walked before: forever */
    ASSERT_EQ_INT(n_edges, 1); /* src -> sink, once */
    rig_close(&r);
}

static int n_sent, n_failed_status;
static char failed_msg[256];
static void count_status(void *u, uint64_t key, const char *error)
{
    (void)u, (void)key;
    if (!error) {
        n_sent++;
        return;
    }
    n_failed_status++;
    snprintf(failed_msg, sizeof failed_msg, "%s", error);
}

/* The status hook hears of every completion sent to the engine and of every
 * rendered call that fails (the store marks them running or failed). */
TEST(status_hook_reports_sent_and_failed_calls)
{
    rig r;
    ASSERT_EQ_INT(rig_open(&r, 4, false), 0);
    orch_hooks h = {.status = count_status};
    orch_set_hooks(r.o, &h);
    const char *script =
        "local bad = weft.fn{template = 'x {{a}}{{b}}', outputs = {b = {max_tokens = 100000}}, name = 'toolong'}\n"
        "local ok = weft.fn{template = 'y {{a}}{{b}}', outputs = {b = {max_tokens = 2, n = 2}}, name = 'fine'}\n"
        "local v = ok{a = 'the'}\n"
        "local b = bad{a = 'x'}\n"
        "weft.gather(v)\n"
        "pcall(b.get, b)\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=status"), 0);
    ASSERT_EQ_INT(n_sent, 2); /* the two completions of 'fine' */
    ASSERT_EQ_INT(n_failed_status, 1);
    ASSERT(strstr(failed_msg, "call 'toolong.b'") != NULL);
    rig_close(&r);
}

/* A tiny model with a ChatML-style template (weft_model_free), or NULL. */
static weft_model *chat_model(const char *name)
{
    char path[256];
    tiny_path(path, sizeof path, name);
    tiny_spec sp = tiny_default();
    sp.chat_template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";
    weft_model *chat = NULL;
    if (tiny_write(&sp, path) == 0 && weft_model_load(path, &chat) != 0) chat = NULL;
    unlink(path);
    return chat;
}

/* A value is bytes with a length, and a model may write a NUL byte: in a
 * chat message the whole value reaches the prompt, not the part before the
 * NUL. Seen in the calls' prompt token counts (the tiny tokenizer spells
 * each of "\0" and "b" as one byte token) and keys (a hash of the rendered
 * text). */
TEST(a_nul_byte_in_a_value_reaches_the_chat_prompt)
{
    weft_model *chat = chat_model("workflow-chat");
    ASSERT(chat != NULL);
    rig r;
    ASSERT_EQ_INT(rig_open_on(&r, chat, 4, false), 0);
    const char *script =
        "local f = weft.fn{messages = {{role = 'user', content = 'say {{x}}'},\n"
        "                              {role = 'assistant', content = '{{y}}'}},\n"
        "                  outputs = {y = {max_tokens = 1}}}\n"
        "local nb, nc, a = f{x = weft.var('a\\0b')}, f{x = weft.var('a\\0c')}, f{x = weft.var('a')}\n"
        "nb:get() nc:get() a:get()\n"
        "with_b, with_c, plain = nb:id(), nc:id(), a:id()\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=nul"), 0);
    const orch_call_info b = info_of_var(&r, lua_int(&r, "with_b"));
    const orch_call_info c = info_of_var(&r, lua_int(&r, "with_c"));
    const orch_call_info a = info_of_var(&r, lua_int(&r, "plain"));
    ASSERT(a.n_prompt > 0);
    ASSERT_EQ_INT(b.n_prompt, a.n_prompt + 2);
    ASSERT_EQ_INT(c.n_prompt, b.n_prompt);
    ASSERT(b.key != c.key); /* the bytes after the NUL are in the key */
    rig_close(&r);
    weft_model_free(chat);
}

/* A waiting chat call's known head is sent ahead (warmed: when `fast` is
 * ready, and `t`, which waits for it, cannot be) even when a value in it
 * holds a NUL byte: the head is cut at a sentinel found in the
 * rendered text's whole length (it was found with strstr, which stopped at
 * the NUL, and the head was not warmed). */
TEST(a_head_with_a_nul_byte_is_warmed)
{
    weft_model *chat = chat_model("workflow-nulhead");
    ASSERT(chat != NULL);
    rig r;
    ASSERT_EQ_INT(rig_open_on(&r, chat, 4, false), 0);
    const char *script =
        "local g = weft.fn{template = 'go {{s}}', outputs = {s = {max_tokens = 1}}}\n"
        "local after = weft.fn{template = 'then {{x}} {{s}}', outputs = {s = {max_tokens = 4}}}\n"
        "local f = weft.fn{messages = {{role = 'user', content = '{{h}} {{fast}} and {{t}}'},\n"
        "                              {role = 'assistant', content = '{{y}}'}},\n"
        "                  outputs = {y = {max_tokens = 1}}}\n"
        "local h = weft.var(string.rep('ab ', 25) .. '\\0' .. string.rep('cd ', 25))\n"
        "local fast = g{}\n"
        "f{h = h, fast = fast, t = after{x = fast}}:get()\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=nulhead"), 0);
    const orch_stats st = orch_get_stats(r.o);
    ASSERT(st.n_warm >= 1);
    ASSERT(st.n_warm_tokens > 130); /* the whole head, past the NUL (at ~90) */
    rig_close(&r);
    weft_model_free(chat);
}

TEST(bad_lua_arguments_are_errors_not_crashes)
{
    rig r;
    ASSERT_EQ_INT(rig_open(&r, 2, false), 0);
    const char *script =
        "local function fails(pat, f, ...)\n"
        "  local ok, err = pcall(f, ...)\n"
        "  assert(not ok, 'expected an error matching ' .. pat)\n"
        "  assert(tostring(err):find(pat), tostring(err) .. ' does not match ' .. pat)\n"
        "end\n"
        "fails('table', weft.fn, 'x')\n"
        "fails('exactly one', weft.fn, {outputs = {a = {}}})\n"
        "fails('outputs', weft.fn, {template = '{{a}}'})\n"
        "fails('at least one output', weft.fn, {template = '{{a}}', outputs = {}})\n"
        "fails('does not appear', weft.fn, {template = 'x', outputs = {a = {}}})\n"
        "fails('used before', weft.fn, {messages = {{role = 'user', content = '{{a}}'}, {role = 'assistant', content = '{{a}}'}}, outputs = {a = {}}})\n"
        "fails('each needs an assistant', weft.fn, {messages = {{role = 'user', content = 'x'}}, outputs = {a = {}, b = {}}})\n"
        "fails('unknown option', weft.fn, {template = 'x{{a}}', outputs = {a = {max_token = 3}}})\n"
        "fails('max_tokens', weft.fn, {template = 'x{{a}}', outputs = {a = {max_tokens = 0}}})\n"
        "fails('stop', weft.fn, {template = 'x{{a}}', outputs = {a = {stop = 3}}})\n"
        "fails('integer in 1', weft.fn, {template = 'x{{a}}', outputs = {a = {n = 0}}})\n"
        "fails('last output', weft.fn, {template = 'x{{a}} y{{b}}', outputs = {a = {n = 2}, b = {}}})\n"
        "fails('role', weft.fn, {messages = {{role = 'robot', content = 'x'}}, outputs = {a = {}}})\n"
        "fails('first message', weft.fn, {messages = {{role = 'assistant', content = '{{a}}'}}, outputs = {a = {}}})\n"
        "fails('true or a table', weft.fn, {template = 'x{{a}}', outputs = {a = false}})\n"
        "local f = weft.fn{template = 'q {{x}} {{y}}:{{a}}', outputs = {a = {max_tokens = 2}}}\n"
        "fails('missing input .y.', f, {x = 'a'})\n"
        "fails('not an input', f, {x = 'a', y = 'b', z = 'c'})\n"
        "fails('must be a string or a weft variable', f, {x = {}, y = 'b'})\n"
        "fails('table of its inputs', f, 'positional')\n"
        "fails('weft.Var', weft.var('x').get, {})\n"
        "fails('not a string, number or weft variable', weft.join, {1, {}})\n"
        "assert(weft.join({1, 'x', 2.5}, '-'):get() == '1-x-2.5', 'numbers join as their text')\n"
        "fails('NUL byte', weft.fn, {template = 'a\\0b{{a}}', outputs = {a = {}}})\n"
        "fails('NUL byte', weft.fn, {messages = {{role = 'user', content = 'a\\0b'}}, outputs = {a = {}}})\n"
        "fails('NUL byte', f, {x = 'a\\0b', y = 'c'})\n"
        "fails('max_tokens', weft.fn, {template = 'x{{a}}', outputs = {a = {max_tokens = 0/0}}})\n"
        "fails('top_k', weft.fn, {template = 'x{{a}}', outputs = {a = {top_k = 1e300}}})\n"
        "fails('seed', weft.fn, {template = 'x{{a}}', outputs = {a = {seed = -1}}})\n"
        /* the caller's table is read once (__index included) and left as it was */
        "local reads, t = 0, {x = 42}\n"
        "local proxy = setmetatable({}, {__index = function(_, k) reads = reads + 1 collectgarbage() return k .. reads end,\n"
        "  __newindex = function() error('read-only') end})\n"
        "local pv = f(proxy)\n"
        "assert(reads == 2, 'each input read once, not ' .. reads)\n"
        "local tv = f{x = t.x, y = 'b'}\n"
        "f(setmetatable({y = 'b'}, {__index = t}))\n"
        "assert(math.type(t.x) == 'integer', 'the caller table keeps its number')\n"
        /* get() that would wait inside the script's own coroutine is refused */
        "local co = coroutine.wrap(function() return pcall(pv.get, pv) end)\n"
        "local ok, err = co()\n"
        "assert(ok or tostring(err):find('coroutine the script made'), tostring(err))\n"
        /* many outputs come back, none lost to the C stack */
        "local parts = {}\n"
        "for i = 1, 200 do parts[#parts + 1] = ' {{o' .. i .. '}}' end\n"
        "local outs = {}\n"
        "for i = 1, 200 do outs['o' .. i] = {max_tokens = 1} end\n"
        "local many = weft.fn{template = 'many:' .. table.concat(parts), outputs = outs}\n"
        "assert(select('#', many{}) == 200)\n"
        "local huge = {} for i = 1, 5000 do huge[i] = '{{p' .. i .. '}}' end\n"
        "fails('too many placeholders', weft.fn, {template = table.concat(huge) .. '{{o}}', outputs = {o = true}})\n"
        "fails('string expected', weft.var, {})\n"
        "local v = f{x = 1, y = weft.var('two')}\n"
        "local w = f{x = v, y = 'later'}\n" /* pending while v streams */
        "local inner\n"
        "weft.stream(v, function(t) inner = inner or {pcall(w.get, w)} end)\n"
        "assert(w:get())\n"
        "assert(inner == nil or (inner[1] == false and inner[2]:find('cannot wait here')), inner and tostring(inner[2]))\n"
        "assert(tostring(weft.var('shown')) == 'shown')\n";
    ASSERT_EQ_INT(dsl_run_string(r.d, script, "=bad"), 0);
    rig_close(&r);
    /* yielding outside get() is refused, the host survives */
    ASSERT_EQ_INT(rig_open(&r, 2, false), 0);
    ASSERT_EQ_INT(dsl_run_string(r.d, "coroutine.yield()", "=y"), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "only v:get()") != NULL);
    ASSERT_EQ_INT(dsl_run_string(r.d, "error('plain failure')", "=e"), WEFT_EINVAL);
    ASSERT_EQ_INT(dsl_run_string(r.d, "syntax error here", "=s"), WEFT_EINVAL);
    ASSERT_EQ_INT(dsl_run_string(r.d, "x = 1", "=fine"), 0);
    rig_close(&r);
}

int main(void)
{
    evthread_use_pthreads();
    char path[256];
    tiny_path(path, sizeof path, "workflow");
    tiny_spec sp = tiny_default();
    if (tiny_write(&sp, path) != 0 || weft_model_load(path, &model) != 0) {
        fprintf(stderr, "tiny model: %s\n", weft_last_error());
        return 1;
    }
    RUN(fan_out_fan_in_runs_in_dependency_order);
    RUN(a_failed_call_fails_its_dependents_and_spares_the_rest);
    RUN(calls_sharing_a_head_compute_it_once);
    RUN(awaited_work_runs_before_throughput_work);
    RUN(awaiting_raises_calls_already_in_the_engine);
    RUN(sequential_mode_gives_the_same_values_one_call_at_a_time);
    RUN(stored_values_replace_calls_without_the_engine);
    RUN(forked_completions_share_one_prefill);
    RUN(held_back_tail_reaches_the_value_and_the_stream);
    RUN(streams_give_whole_values_and_their_errors_fail_the_run);
    RUN(sandboxed_scripts_cannot_use_the_weft_module_to_escape_their_caps);
    RUN(join_lattices_and_long_chains_stay_linear);
    RUN(status_hook_reports_sent_and_failed_calls);
    RUN(a_nul_byte_in_a_value_reaches_the_chat_prompt);
    RUN(a_head_with_a_nul_byte_is_warmed);
    RUN(bad_lua_arguments_are_errors_not_crashes);
    weft_model_free(model);
    unlink(path);
    TEST_DONE();
}

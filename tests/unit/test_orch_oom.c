/* The orchestrator when memory runs out: failing a variable must not need
 * memory, or the variable (and what depends on it) stays pending and a
 * script awaiting it waits forever. Allocation failures are injected by
 * wrapping weft's allocator at link time (tests/CMakeLists.txt links this
 * test with -Wl,--wrap=weft_malloc and friends): while `failing` is set,
 * every allocation made outside common.c fails. */
#include <event2/event.h>
#include <event2/thread.h>
#include <stdatomic.h>

#include "test.h"
#include "tiny_model.h"
#include "weft/orch.h"

static atomic_bool failing;

void *__real_weft_malloc(size_t n);
void *__real_weft_calloc(size_t n, size_t size);
void *__real_weft_realloc(void *p, size_t n);
char *__real_weft_strdup(const char *s);
void *__wrap_weft_malloc(size_t n);
void *__wrap_weft_calloc(size_t n, size_t size);
void *__wrap_weft_realloc(void *p, size_t n);
char *__wrap_weft_strdup(const char *s);

void *__wrap_weft_malloc(size_t n) { return failing ? NULL : __real_weft_malloc(n); }
void *__wrap_weft_calloc(size_t n, size_t size) { return failing ? NULL : __real_weft_calloc(n, size); }
void *__wrap_weft_realloc(void *p, size_t n) { return failing ? NULL : __real_weft_realloc(p, n); }
char *__wrap_weft_strdup(const char *s) { return failing ? NULL : __real_weft_strdup(s); }

static weft_model *model;

typedef struct done_log {
    int n;
    int32_t vars[16];
} done_log;

static void on_done(void *user, int32_t var)
{
    done_log *l = user;
    if (l->n < 16) l->vars[l->n++] = var;
}

static bool was_announced(const done_log *l, int32_t var)
{
    for (int i = 0; i < l->n; i++)
        if (l->vars[i] == var) return true;
    return false;
}

static int32_t join_of(orch *o, int32_t a, int32_t b)
{
    const orch_seg segs[] = {{NULL, 0, a}, {"+", 1, -1}, {NULL, 0, b}};
    int32_t v = -1;
    return orch_join(o, "j", segs, b >= 0 ? 3 : 1, &v) == 0 ? v : -1;
}

/* A join fails for want of memory while every allocation fails: it, its
 * dependents (a chain and a diamond) and theirs all end failed, with an
 * error, and are announced to the listener once memory is back; a call
 * made later on one of them fails at once, naming the failure. */
TEST(failing_without_memory_settles_every_dependent)
{
    weft_engine_params p = weft_engine_default_params();
    p.ctx.n_seq_max = 1;
    p.ctx.n_ctx = 64;
    p.ctx.n_threads = 1;
    weft_engine *e = NULL;
    struct event_base *base = event_base_new();
    orch *o = NULL;
    ASSERT(base != NULL);
    ASSERT_EQ_INT(weft_engine_create(model, &p, &e), 0);
    ASSERT_EQ_INT(orch_create(e, model, base, NULL, &o), 0);
    done_log log = {0};
    const orch_listener lis = {.on_done = on_done, .user = &log};
    orch_set_listener(o, &lis);

    int32_t a = -1;
    ASSERT_EQ_INT(orch_var_new(o, "x", 1, &a), 0);
    const int32_t j1 = join_of(o, a, -1), j2 = join_of(o, j1, -1), j3 = join_of(o, j2, -1);
    const int32_t j4 = join_of(o, j1, j3), j5 = join_of(o, j4, j2);
    const int32_t js[] = {j1, j2, j3, j4, j5};
    for (int i = 0; i < 5; i++) ASSERT(js[i] >= 0);

    failing = true;
    orch_flush(o); /* j1 is ready: rendering it fails, and so does every message */
    failing = false;

    for (int i = 0; i < 5; i++) {
        if (orch_var_state_of(o, js[i]) != ORCH_VAR_FAILED)
            TEST_FAIL_("join %d (var %d) is still %d, not failed", i + 1, js[i],
                       (int)orch_var_state_of(o, js[i]));
        const char *err = orch_var_error(o, js[i]);
        ASSERT(err != NULL);
        ASSERT(strstr(err, "out of memory") != NULL);
    }
    /* the done notes that could not be queued are delivered all the same */
    ASSERT(!orch_idle(o));
    ASSERT_EQ_INT(event_base_loop(base, EVLOOP_NONBLOCK), 0);
    for (int i = 0; i < 5; i++) {
        if (!was_announced(&log, js[i]) || !orch_var_announced(o, js[i]))
            TEST_FAIL_("join %d (var %d) was not announced", i + 1, js[i]);
    }
    ASSERT(orch_idle(o));

    const int32_t late = join_of(o, j5, -1);
    ASSERT(late >= 0);
    ASSERT_EQ_INT(orch_var_state_of(o, late), ORCH_VAR_FAILED);
    ASSERT(strstr(orch_var_error(o, late), "not run: failed (out of memory)") != NULL);

    orch_destroy(o);
    weft_engine_destroy(e);
    event_base_free(base);
}

int main(void)
{
    evthread_use_pthreads();
    char path[256];
    tiny_path(path, sizeof path, "orch-oom");
    tiny_spec sp = tiny_default();
    if (tiny_write(&sp, path) != 0 || weft_model_load(path, &model) != 0) {
        fprintf(stderr, "tiny model: %s\n", weft_last_error());
        return 1;
    }
    unlink(path);
    RUN(failing_without_memory_settles_every_dependent);
    weft_model_free(model);
    TEST_DONE();
}

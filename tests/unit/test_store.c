/* Durable runs: values round-trip and survive close/open and a kill -9 of the
 * writing process mid-run; a reader sees consistent data while another
 * process writes; corrupt, foreign and newer databases are clear errors. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "weft/store.h"

static char dir[256];

static void db_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
}

static void call_key(char *buf, size_t n, int i) { snprintf(buf, n, "call-%06d", i); }

static void call_value(char *buf, size_t n, int i)
{
    snprintf(buf, n, "{\"out\":\"value of call %d\"}", i);
}

TEST(round_trip)
{
    char path[512];
    db_path(path, sizeof path, "rt/sub/weft.db"); /* parents are created */
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    ASSERT_STR_EQ(weft_store_path(s), path);
    int64_t run;
    ASSERT_EQ_INT(weft_store_run_begin(s, "examples/map.lua", "abc123", "{\"n\":\"3\"}", &run), 0);
    ASSERT(run > 0);

    ASSERT_EQ_INT(weft_store_call_add(s, run, "k1", "summarize", "prompt-hash-1"), 0);
    ASSERT_EQ_INT(weft_store_call_add(s, run, "k2", "reduce", NULL), 0);
    ASSERT_EQ_INT(weft_store_call_add(s, run, "k1", "summarize", "again"), 0); /* idempotent */
    ASSERT_EQ_INT(weft_store_edge_add(s, run, "k1", "k2"), 0);
    ASSERT_EQ_INT(weft_store_edge_add(s, run, "k1", "k2"), 0);
    ASSERT_EQ_INT(weft_store_call_set_status(s, run, "k1", WEFT_CALL_RUNNING, NULL), 0);

    char *out;
    size_t len;
    ASSERT_EQ_INT(weft_store_call_lookup(s, run, "k1", &out, &len, NULL), WEFT_ENOTFOUND);
    ASSERT(out == NULL);

    /* binary-safe: an embedded NUL survives */
    const char val[] = "{\"a\":\"x\"}\0tail";
    weft_store_call_stats st = {.n_prompt = 100, .n_cached = 64, .n_generated = 20,
                                .seconds = 1.5};
    ASSERT_EQ_INT(weft_store_call_complete(s, run, "k1", val, sizeof val - 1, &st), 0);
    weft_store_call_stats got = {0};
    ASSERT_EQ_INT(weft_store_call_lookup(s, run, "k1", &out, &len, &got), 0);
    ASSERT_EQ_INT(len, sizeof val - 1);
    ASSERT(memcmp(out, val, len) == 0);
    ASSERT_EQ_INT(out[len], 0);
    weft_free(out);
    ASSERT_EQ_INT(got.n_prompt, 100);
    ASSERT_EQ_INT(got.n_cached, 64);
    ASSERT_EQ_INT(got.n_generated, 20);
    ASSERT_NEAR(got.seconds, 1.5, 1e-9);

    /* a completed call is not downgraded by a late status update */
    ASSERT_EQ_INT(weft_store_call_set_status(s, run, "k1", WEFT_CALL_FAILED, "late"), 0);
    ASSERT_EQ_INT(weft_store_call_lookup(s, run, "k1", &out, &len, NULL), 0);
    weft_free(out);
    /* complete without add; empty output */
    ASSERT_EQ_INT(weft_store_call_complete(s, run, "k3", NULL, 0, NULL), 0);
    ASSERT_EQ_INT(weft_store_call_lookup(s, run, "k3", &out, &len, NULL), 0);
    ASSERT_EQ_INT(len, 0);
    ASSERT_STR_EQ(out, "");
    weft_free(out);
    ASSERT_EQ_INT(weft_store_call_set_status(s, run, "k2", WEFT_CALL_FAILED, "engine said no"), 0);
    ASSERT_EQ_INT(weft_store_call_lookup(s, run, "k2", &out, &len, NULL), WEFT_ENOTFOUND);

    weft_store_run r;
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT_EQ_INT(r.status, WEFT_RUN_RUNNING);
    ASSERT_STR_EQ(r.script_path, "examples/map.lua");
    ASSERT_STR_EQ(r.script_hash, "abc123");
    ASSERT_STR_EQ(r.args_json, "{\"n\":\"3\"}");
    ASSERT_EQ_INT(r.calls_total, 3);
    ASSERT_EQ_INT(r.calls_done, 2);
    ASSERT_EQ_INT(r.calls_failed, 1);
    ASSERT_EQ_INT(r.tokens_generated, 20);
    ASSERT_EQ_INT(r.pid, getpid());
    ASSERT(r.output == NULL && r.error == NULL);
    ASSERT(r.started_at > 1.6e9);
    weft_store_run_clear(&r);

    ASSERT_EQ_INT(weft_store_run_finish(s, run, "final answer", NULL), 0);
    int64_t run2;
    ASSERT_EQ_INT(weft_store_run_begin(s, "b.lua", NULL, NULL, &run2), 0);
    ASSERT(run2 > run);
    ASSERT_EQ_INT(weft_store_run_finish(s, run2, NULL, "k9: model not found"), 0);

    weft_store_run *runs;
    size_t n;
    ASSERT_EQ_INT(weft_store_runs_list(s, 0, &runs, &n), 0);
    ASSERT_EQ_INT(n, 2);
    ASSERT_EQ_INT(runs[0].id, run2); /* newest first */
    ASSERT_EQ_INT(runs[0].status, WEFT_RUN_FAILED);
    ASSERT_STR_EQ(runs[0].error, "k9: model not found");
    ASSERT_STR_EQ(runs[0].args_json, "{}");
    ASSERT_STR_EQ(runs[0].script_hash, "");
    ASSERT_EQ_INT(runs[0].calls_total, 0);
    ASSERT_EQ_INT(runs[1].status, WEFT_RUN_FINISHED);
    ASSERT(runs[1].output == NULL); /* lists leave output out */
    ASSERT(runs[1].finished_at >= runs[1].started_at);
    ASSERT_EQ_INT(runs[1].calls_done, 2);
    weft_store_runs_free(runs, n);
    ASSERT_EQ_INT(weft_store_runs_list(s, 1, &runs, &n), 0);
    ASSERT_EQ_INT(n, 1);
    weft_store_runs_free(runs, n);
    weft_store_close(s);
}

TEST(bad_arguments_are_errors)
{
    char path[512];
    db_path(path, sizeof path, "bad.db");
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    int64_t run;
    ASSERT_EQ_INT(weft_store_run_begin(s, "a.lua", NULL, "{not json", &run), WEFT_EINVAL);
    ASSERT(strstr(weft_last_error(), "JSON"));
    ASSERT_EQ_INT(weft_store_run_begin(s, "a.lua", NULL, "\"a string\"", &run), WEFT_EINVAL);
    ASSERT_EQ_INT(weft_store_run_begin(s, "", NULL, NULL, &run), WEFT_EINVAL);
    ASSERT_EQ_INT(weft_store_run_begin(s, "a.lua", NULL, "[1,2]", &run), 0);
    ASSERT_EQ_INT(weft_store_call_add(s, run, "", NULL, NULL), WEFT_EINVAL);
    char big[2000];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = 0;
    ASSERT_EQ_INT(weft_store_call_add(s, run, big, NULL, NULL), WEFT_EINVAL);
    ASSERT_EQ_INT(weft_store_call_add(s, 9999, "k", NULL, NULL), WEFT_ENOTFOUND);
    ASSERT(strstr(weft_last_error(), "no such run"));
    ASSERT_EQ_INT(weft_store_call_complete(s, 9999, "k", "x", 1, NULL), WEFT_ENOTFOUND);
    ASSERT_EQ_INT(weft_store_call_set_status(s, run, "k", WEFT_CALL_DONE, NULL), WEFT_EINVAL);
    ASSERT_EQ_INT(weft_store_run_finish(s, 9999, NULL, NULL), WEFT_ENOTFOUND);
    weft_store_run r;
    ASSERT_EQ_INT(weft_store_run_get(s, 9999, &r), WEFT_ENOTFOUND);
    ASSERT_EQ_INT(weft_store_run_resume(s, 9999, &r), WEFT_ENOTFOUND);
    ASSERT(r.script_path == NULL);
    weft_store_close(s);

    /* read-only: no file is not created; writes are refused */
    char missing[512];
    db_path(missing, sizeof missing, "missing/none.db");
    ASSERT_EQ_INT(weft_store_open(missing, WEFT_STORE_READONLY, &s), WEFT_ENOTFOUND);
    struct stat sb;
    ASSERT(stat(missing, &sb) != 0);
    ASSERT_EQ_INT(weft_store_open(path, WEFT_STORE_READONLY, &s), 0);
    ASSERT_EQ_INT(weft_store_run_begin(s, "a.lua", NULL, NULL, &run), WEFT_EINVAL);
    weft_store_run *runs;
    size_t n;
    ASSERT_EQ_INT(weft_store_runs_list(s, 0, &runs, &n), 0);
    ASSERT_EQ_INT(n, 1);
    weft_store_runs_free(runs, n);
    weft_store_close(s);
    ASSERT_EQ_INT(weft_store_open(dir, 0, &s), WEFT_EIO); /* a directory */
}

TEST(default_path_follows_the_environment)
{
    char buf[512], *old_db = getenv("WEFT_DB") ? strdup(getenv("WEFT_DB")) : NULL;
    setenv("WEFT_DB", "/x/y.db", 1);
    ASSERT_EQ_INT(weft_store_default_path(buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/x/y.db");
    unsetenv("WEFT_DB");
    setenv("XDG_DATA_HOME", "/data", 1);
    ASSERT_EQ_INT(weft_store_default_path(buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/data/weft/weft.db");
    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/home/u", 1);
    ASSERT_EQ_INT(weft_store_default_path(buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "/home/u/.local/share/weft/weft.db");
    ASSERT_EQ_INT(weft_store_default_path(buf, 8), WEFT_ERANGE);
    if (old_db) {
        setenv("WEFT_DB", old_db, 1);
        free(old_db);
    }
    /* WEFT_DB is what open(NULL) uses */
    char path[512];
    db_path(path, sizeof path, "env/weft.db");
    setenv("WEFT_DB", path, 1);
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(NULL, 0, &s), 0);
    ASSERT_STR_EQ(weft_store_path(s), path);
    weft_store_close(s);
    unsetenv("WEFT_DB");
    char h1[WEFT_STORE_HASH_HEX], h2[WEFT_STORE_HASH_HEX];
    weft_store_hash_hex("abc", 3, h1);
    weft_store_hash_hex("abd", 3, h2);
    ASSERT_EQ_INT(strlen(h1), 32);
    ASSERT(strcmp(h1, h2) != 0);
}

TEST(values_persist_across_close_and_open)
{
    char path[512];
    db_path(path, sizeof path, "persist.db");
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    int64_t run;
    ASSERT_EQ_INT(weft_store_run_begin(s, "p.lua", "h", NULL, &run), 0);
    char key[64], val[128];
    for (int i = 0; i < 20; i++) {
        call_key(key, sizeof key, i);
        call_value(val, sizeof val, i);
        ASSERT_EQ_INT(weft_store_call_add(s, run, key, "f", NULL), 0);
        if (i % 2 == 0) ASSERT_EQ_INT(weft_store_call_complete(s, run, key, val, strlen(val), NULL), 0);
    }
    weft_store_close(s);

    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    for (int i = 0; i < 20; i++) {
        char *out;
        size_t len;
        call_key(key, sizeof key, i);
        call_value(val, sizeof val, i);
        int rc = weft_store_call_lookup(s, run, key, &out, &len, NULL);
        if (i % 2 == 0) {
            ASSERT_EQ_INT(rc, 0);
            ASSERT_STR_EQ(out, val);
            weft_free(out);
        } else {
            ASSERT_EQ_INT(rc, WEFT_ENOTFOUND);
        }
    }
    weft_store_run r;
    ASSERT_EQ_INT(weft_store_run_resume(s, run, &r), 0); /* its store closed: interrupted */
    ASSERT_STR_EQ(r.script_path, "p.lua");
    ASSERT_EQ_INT(r.calls_total, 20);
    ASSERT_EQ_INT(r.calls_done, 10);
    weft_store_run_clear(&r);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT_EQ_INT(r.resumes, 1);
    weft_store_run_clear(&r);
    weft_store_close(s);
}

/* The child records values one committed call at a time and reports each
 * index on a pipe after weft_store_call_complete returns; the parent kills it
 * with SIGKILL mid-run. Every reported value must be in the file. A second
 * child kills itself between two writes. */
static int crash_child(const char *path, int wfd, int self_kill_at)
{
    weft_store *s;
    int64_t run;
    if (weft_store_open(path, 0, &s) || weft_store_run_begin(s, "crash.lua", "h", NULL, &run))
        return 1;
    if (write(wfd, &run, sizeof run) != sizeof run) return 1;
    char key[64], val[128];
    for (int i = 0;; i++) {
        call_key(key, sizeof key, i);
        call_value(val, sizeof val, i);
        if (weft_store_call_add(s, run, key, "f", NULL)) return 1;
        if (i == self_kill_at) raise(SIGKILL); /* added, never completed */
        if (weft_store_call_complete(s, run, key, val, strlen(val), NULL)) return 1;
        if (write(wfd, &i, sizeof i) != sizeof i) return 1;
    }
}

static int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

TEST(committed_values_survive_kill_9)
{
    for (int variant = 0; variant < 2; variant++) {
        char path[512];
        db_path(path, sizeof path, variant ? "crash-self.db" : "crash.db");
        int fds[2];
        ASSERT_EQ_INT(pipe(fds), 0);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            _exit(crash_child(path, fds[1], variant ? 37 : -1));
        }
        close(fds[1]);
        int64_t run;
        ASSERT_EQ_INT(read_full(fds[0], &run, sizeof run), 0);
        int last = -1, i;
        if (variant == 0) {
            while (last < 150 && read_full(fds[0], &i, sizeof i) == 0) last = i;
            kill(pid, SIGKILL); /* while it writes the next ones */
        }
        while (read_full(fds[0], &i, sizeof i) == 0) last = i; /* acks sent before death */
        close(fds[0]);
        int wst;
        ASSERT_EQ_INT(waitpid(pid, &wst, 0), pid);
        ASSERT(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL);
        if (variant == 0) ASSERT(last >= 150);
        if (variant == 1) ASSERT_EQ_INT(last, 36);

        weft_store *s;
        ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
        char key[64], val[128];
        for (int k = 0; k <= last; k++) {
            char *out;
            size_t len;
            call_key(key, sizeof key, k);
            call_value(val, sizeof val, k);
            int rc = weft_store_call_lookup(s, run, key, &out, &len, NULL);
            if (rc) TEST_FAIL_("value %d (of %d acknowledged) lost: %s", k, last, weft_last_error());
            ASSERT_STR_EQ(out, val);
            weft_free(out);
        }
        weft_store_run r;
        ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
        ASSERT_EQ_INT(r.status, WEFT_RUN_INTERRUPTED); /* its process is gone */
        ASSERT(r.calls_done >= last + 1);
        ASSERT(r.calls_total >= r.calls_done);
        if (variant == 1) ASSERT_EQ_INT(r.calls_total, r.calls_done + 1);
        weft_store_run_clear(&r);
        ASSERT_EQ_INT(weft_store_run_resume(s, run, NULL), 0);
        call_key(key, sizeof key, last + 1000);
        ASSERT_EQ_INT(weft_store_call_complete(s, run, key, "x", 1, NULL), 0);
        ASSERT_EQ_INT(weft_store_run_finish(s, run, "done", NULL), 0);
        ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
        ASSERT_EQ_INT(r.status, WEFT_RUN_FINISHED);
        ASSERT_STR_EQ(r.output, "done");
        ASSERT_EQ_INT(r.resumes, 1);
        weft_store_run_clear(&r);
        weft_store_close(s);
    }
}

TEST(resume_of_a_live_run_is_busy)
{
    char path[512];
    db_path(path, sizeof path, "live.db");
    int up[2], down[2];
    ASSERT_EQ_INT(pipe(up), 0);
    ASSERT_EQ_INT(pipe(down), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        weft_store *s;
        int64_t run;
        if (weft_store_open(path, 0, &s) || weft_store_run_begin(s, "live.lua", NULL, NULL, &run))
            _exit(1);
        if (write(up[1], &run, sizeof run) != sizeof run) _exit(1);
        char c;
        if (read(down[0], &c, 1) != 1) _exit(1); /* wait for the parent */
        weft_store_close(s);
        _exit(0);
    }
    int64_t run;
    ASSERT_EQ_INT(read_full(up[0], &run, sizeof run), 0);
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    ASSERT_EQ_INT(weft_store_run_resume(s, run, NULL), WEFT_EBUSY);
    ASSERT(strstr(weft_last_error(), "still running"));
    ASSERT_EQ_INT(write(down[1], "x", 1), 1);
    int wst;
    ASSERT_EQ_INT(waitpid(pid, &wst, 0), pid);
    ASSERT(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    ASSERT_EQ_INT(weft_store_run_resume(s, run, NULL), 0);
    weft_store_close(s);
    close(up[0]);
    close(up[1]);
    close(down[0]);
    close(down[1]);
}

static int sql_on(const char *path, const char *sql);

/* A run is running while a store holds its lock, whatever pid it recorded:
 * another store (even in this process) reads it running and cannot resume
 * it; once the holder finishes or closes, it reads finished or interrupted
 * — with the pid of a live process (1) recorded — and resumes. */
TEST(liveness_is_the_runs_lock_not_its_pid)
{
    char path[512], sql[128];
    db_path(path, sizeof path, "lock.db");
    weft_store *a, *b, *ro;
    int64_t run, run2;
    weft_store_run r;
    ASSERT_EQ_INT(weft_store_open(path, 0, &a), 0);
    ASSERT_EQ_INT(weft_store_open(path, 0, &b), 0);
    ASSERT_EQ_INT(weft_store_run_begin(a, "l.lua", NULL, NULL, &run), 0);
    ASSERT_EQ_INT(weft_store_run_begin(a, "l2.lua", NULL, NULL, &run2), 0);
    ASSERT_EQ_INT(weft_store_run_resume(b, run, NULL), WEFT_EBUSY);
    ASSERT(strstr(weft_last_error(), "still running"));
    ASSERT_EQ_INT(weft_store_run_resume(a, run, NULL), 0); /* the holder may */
    ASSERT_EQ_INT(weft_store_run_finish(a, run2, "done", NULL), 0); /* releases run2 only */
    ASSERT_EQ_INT(weft_store_run_resume(b, run, NULL), WEFT_EBUSY);
    ASSERT_EQ_INT(weft_store_run_resume(b, run2, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_finish(b, run2, "again", NULL), 0);
    weft_store_close(a); /* as a process dying would: the lock goes */
    snprintf(sql, sizeof sql, "UPDATE runs SET pid = 1 WHERE id = %lld", (long long)run);
    ASSERT_EQ_INT(sql_on(path, sql), SQLITE_OK);
    ASSERT_EQ_INT(weft_store_open(path, WEFT_STORE_READONLY, &ro), 0);
    ASSERT_EQ_INT(weft_store_run_get(ro, run, &r), 0);
    ASSERT_EQ_INT(r.status, WEFT_RUN_INTERRUPTED);
    ASSERT_EQ_INT(r.pid, 1);
    weft_store_run_clear(&r);
    ASSERT_EQ_INT(weft_store_run_resume(b, run, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_get(ro, run, &r), 0);
    ASSERT_EQ_INT(r.status, WEFT_RUN_RUNNING); /* b holds it now */
    weft_store_run_clear(&r);
    weft_store_close(ro);
    weft_store_close(b);
}

TEST(a_reader_sees_consistent_data_while_another_process_writes)
{
    char path[512];
    db_path(path, sizeof path, "concurrent.db");
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0); /* schema exists before the race */
    const int N = 300;
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        weft_store *w;
        int64_t run;
        if (weft_store_open(path, 0, &w) || weft_store_run_begin(w, "w.lua", NULL, NULL, &run))
            _exit(1);
        char key[64], val[128];
        for (int i = 0; i < N; i++) {
            call_key(key, sizeof key, i);
            call_value(val, sizeof val, i);
            if (weft_store_call_add(w, run, key, "f", NULL) ||
                weft_store_call_complete(w, run, key, val, strlen(val), NULL))
                _exit(2);
        }
        if (weft_store_run_finish(w, run, "ok", NULL)) _exit(3);
        weft_store_close(w);
        _exit(0);
    }
    int64_t seen = 0;
    int reads = 0, finished = 0, exited = 0, wst = 0;
    for (;;) {
        weft_store_run *runs;
        size_t n;
        int rc = weft_store_runs_list(s, 0, &runs, &n);
        if (rc) TEST_FAIL_("list while writing: %s", weft_last_error());
        reads++;
        if (n == 1) {
            /* never goes backwards, never counts a call done that it has not added */
            ASSERT(runs[0].calls_done >= seen);
            ASSERT(runs[0].calls_done <= runs[0].calls_total);
            seen = runs[0].calls_done;
            finished = runs[0].status == WEFT_RUN_FINISHED;
            if (seen > 0) {
                char key[64], val[128], *out;
                size_t len;
                call_key(key, sizeof key, (int)seen - 1);
                call_value(val, sizeof val, (int)seen - 1);
                ASSERT_EQ_INT(weft_store_call_lookup(s, runs[0].id, key, &out, &len, NULL), 0);
                ASSERT_STR_EQ(out, val);
                weft_free(out);
            }
        }
        weft_store_runs_free(runs, n);
        if (finished) break;
        /* one more read after the writer exits: it may have finished since */
        if (exited) TEST_FAIL_("writer exited before finishing the run");
        if (waitpid(pid, &wst, WNOHANG) == pid) exited = 1;
    }
    if (!exited) ASSERT_EQ_INT(waitpid(pid, &wst, 0), pid);
    ASSERT(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    ASSERT_EQ_INT(seen, N);
    ASSERT(reads > 1);
    weft_store_close(s);
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Runs `sql` on the database file at `path` with plain SQLite. */
static int sql_on(const char *path, const char *sql)
{
    sqlite3 *db;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

TEST(corrupt_and_foreign_files_are_clear_errors)
{
    char path[512];
    weft_store *s;
    /* not a database at all */
    db_path(path, sizeof path, "garbage.db");
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 7 + 3);
    ASSERT_EQ_INT(write_file(path, junk, sizeof junk), 0);
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), path));
    ASSERT(strstr(weft_last_error(), "not a SQLite database"));
    ASSERT_EQ_INT(weft_store_open(path, WEFT_STORE_READONLY, &s), WEFT_EFORMAT);

    /* a text file */
    db_path(path, sizeof path, "text.db");
    const char text[] = "SQLite format 3? no, just a note\n";
    ASSERT_EQ_INT(write_file(path, text, sizeof text - 1), 0);
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), WEFT_EFORMAT);

    /* some other program's SQLite database */
    db_path(path, sizeof path, "foreign.db");
    ASSERT_EQ_INT(sql_on(path, "CREATE TABLE contacts(name, phone)"), SQLITE_OK);
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "not a weft database"));
    /* and it was left alone: creating our table there would clash */
    ASSERT_EQ_INT(sql_on(path, "CREATE TABLE weft_schema(x)"), SQLITE_OK);
    ASSERT_EQ_INT(sql_on(path, "DROP TABLE weft_schema; PRAGMA application_id = 1234"), SQLITE_OK);
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), "application_id"));

    /* a newer weft's schema */
    db_path(path, sizeof path, "newer.db");
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    weft_store_close(s);
    ASSERT_EQ_INT(sql_on(path, "UPDATE weft_schema SET version = 99"), SQLITE_OK);
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), WEFT_EUNSUPPORTED);
    ASSERT(strstr(weft_last_error(), "newer"));

    /* a weft database damaged inside: pages after the first overwritten */
    db_path(path, sizeof path, "damaged.db");
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    int64_t run;
    ASSERT_EQ_INT(weft_store_run_begin(s, "d.lua", NULL, NULL, &run), 0);
    char key[64];
    for (int i = 0; i < 200; i++) {
        call_key(key, sizeof key, i);
        ASSERT_EQ_INT(weft_store_call_complete(s, run, key, junk, 500, NULL), 0);
    }
    weft_store_close(s); /* checkpoints the WAL into the file */
    struct stat sb;
    ASSERT_EQ_INT(stat(path, &sb), 0);
    ASSERT(sb.st_size > 8 * 4096);
    int fd = open(path, O_WRONLY);
    ASSERT(fd >= 0);
    for (off_t off = 4096; off < sb.st_size; off += 4096)
        ASSERT_EQ_INT(pwrite(fd, junk, 4096, off), 4096);
    close(fd);
    int rc = weft_store_open(path, 0, &s);
    if (rc == 0) { /* the header page may still read fine: then the first query fails */
        weft_store_run *runs;
        size_t n;
        rc = weft_store_runs_list(s, 0, &runs, &n);
        weft_store_close(s);
    }
    ASSERT_EQ_INT(rc, WEFT_EFORMAT);
    ASSERT(strstr(weft_last_error(), path));

    /* and a good database next to them still works */
    db_path(path, sizeof path, "fine.db");
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    ASSERT_EQ_INT(weft_store_run_begin(s, "ok.lua", NULL, NULL, &run), 0);
    weft_store_close(s);
}

/* The version of the runs schema in the file at `path`, or -1. */
static int runs_schema_version(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT version FROM weft_schema WHERE component = 'runs'", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The record of a run: what it executes and the sandbox it runs in. A
 * resume replaces them (so the record says what the output was computed
 * from) but may only tighten a sandbox, never drop or loosen it. */
TEST(resume_records_the_new_spec_and_keeps_the_sandbox)
{
    char path[512];
    db_path(path, sizeof path, "spec.db");
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    const weft_store_run_limits box = {.sandboxed = true, .mem_limit = 64 << 20,
                                       .instr_limit = 1000, .time_limit = 600};
    weft_store_run_spec spec = {"/w/a.lua", "h1", "{\"x\":\"1\"}", box, NULL, NULL};
    int64_t run;
    ASSERT_EQ_INT(weft_store_run_begin_with(s, &spec, &run), 0);
    ASSERT_EQ_INT(weft_store_run_finish(s, run, "out", NULL), 0);
    weft_store_run r;
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT(r.limits.sandboxed);
    ASSERT_EQ_INT(r.limits.mem_limit, 64 << 20);
    ASSERT_EQ_INT(r.limits.instr_limit, 1000);
    ASSERT_NEAR(r.limits.time_limit, 600, 1e-9);
    weft_store_run_clear(&r);

    /* dropping or loosening the sandbox is refused and changes nothing */
    weft_store_run_limits loose[5] = {box, box, box, box, box};
    loose[0].sandboxed = false;
    loose[1].mem_limit = 65 << 20;
    loose[2].instr_limit = 0; /* no budget */
    loose[3].time_limit = 601;
    loose[4].time_limit = 0;
    for (int i = 0; i < 5; i++) {
        weft_store_run_spec l = {"/w/a.lua", "h1", NULL, loose[i], NULL, NULL};
        ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &l, &r), WEFT_EINVAL);
        ASSERT(strstr(weft_last_error(), "is sandboxed: it cannot be resumed"));
        ASSERT(r.script_path == NULL);
    }
    weft_store_run_spec neg = spec;
    neg.limits.time_limit = -1;
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &neg, NULL), WEFT_EINVAL);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT_EQ_INT(r.status, WEFT_RUN_FINISHED);
    ASSERT_STR_EQ(r.output, "out");
    ASSERT_EQ_INT(r.resumes, 0);
    weft_store_run_clear(&r);

    /* a new script, arguments and a tighter sandbox are recorded; info tells
     * what the run was */
    weft_store_run_spec next = {"/w/b.lua", "h2", "{\"x\":\"2\"}", box, NULL, NULL};
    next.limits.mem_limit = 32 << 20;
    next.limits.time_limit = 60;
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &next, &r), 0);
    ASSERT_STR_EQ(r.script_path, "/w/a.lua");
    ASSERT_STR_EQ(r.args_json, "{\"x\":\"1\"}");
    weft_store_run_clear(&r);
    ASSERT_EQ_INT(weft_store_run_resume(s, run, NULL), 0); /* no spec: keeps the record */
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT_STR_EQ(r.script_path, "/w/b.lua");
    ASSERT_STR_EQ(r.script_hash, "h2");
    ASSERT_STR_EQ(r.args_json, "{\"x\":\"2\"}");
    ASSERT(r.limits.sandboxed);
    ASSERT_EQ_INT(r.limits.mem_limit, 32 << 20);
    ASSERT_EQ_INT(r.limits.instr_limit, 1000);
    ASSERT_NEAR(r.limits.time_limit, 60, 1e-9);
    ASSERT_EQ_INT(r.resumes, 2);
    weft_store_run_clear(&r);

    /* a run begun unsandboxed may be resumed sandboxed, and then stays so */
    ASSERT_EQ_INT(weft_store_run_begin(s, "/w/c.lua", NULL, NULL, &run), 0);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT(!r.limits.sandboxed && r.limits.mem_limit == 0 && r.limits.time_limit == 0);
    weft_store_run_clear(&r);
    weft_store_run_spec open = {"/w/c.lua", NULL, NULL, {0}, NULL, NULL};
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &open, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &spec, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &open, NULL), WEFT_EINVAL);
    weft_store_close(s);
}

/* A run records the model its values are computed by: a resume with another
 * model is refused with both named and nothing changed; the same model, or
 * no model given, resumes. A run recorded without a model takes the first
 * one a resume gives. */
TEST(a_resume_with_another_model_is_refused)
{
    char path[512];
    db_path(path, sizeof path, "model.db");
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    const weft_store_run_spec a = {"/w/a.lua", "h", NULL, {0}, "00000000000000aa", "/m/a.gguf"};
    const weft_store_run_spec b = {"/w/a.lua", "h", NULL, {0}, "00000000000000bb", "/m/b.gguf"};
    int64_t run;
    ASSERT_EQ_INT(weft_store_run_begin_with(s, &a, &run), 0);
    ASSERT_EQ_INT(weft_store_run_finish(s, run, "from a", NULL), 0);
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &b, NULL), WEFT_EINVAL);
    const char *e = weft_last_error();
    ASSERT(strstr(e, "/m/a.gguf (00000000000000aa)") && strstr(e, "/m/b.gguf (00000000000000bb)"));
    weft_store_run r;
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    const int kept = r.status == WEFT_RUN_FINISHED && r.resumes == 0 && strcmp(r.output, "from a") == 0 &&
                     strcmp(r.model_hash, "00000000000000aa") == 0 && strcmp(r.model_path, "/m/a.gguf") == 0;
    weft_store_run_clear(&r);
    ASSERT(kept);
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &a, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_resume(s, run, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    const int same = strcmp(r.model_hash, "00000000000000aa") == 0;
    weft_store_run_clear(&r);
    ASSERT(same);

    ASSERT_EQ_INT(weft_store_run_begin(s, "/w/old.lua", NULL, NULL, &run), 0); /* no model */
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &b, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &a, NULL), WEFT_EINVAL);
    weft_store_close(s);
}

static void sleep_s(double s) { usleep((useconds_t)(s * 1e6)); }

/* A run's active seconds add up its attempts and leave out the time between
 * an interrupted attempt's last recorded call and the resume; an attempt
 * that finished counts to its end, and a finished run resumed adds its new
 * attempt to what it had. */
TEST(active_seconds_leave_out_the_time_between_attempts)
{
    char path[512];
    db_path(path, sizeof path, "active.db");
    weft_store *s;
    int64_t run;
    weft_store_run r;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    ASSERT_EQ_INT(weft_store_run_begin(s, "a.lua", NULL, NULL, &run), 0);
    sleep_s(0.2);
    ASSERT_EQ_INT(weft_store_call_complete(s, run, "k1", "x", 1, NULL), 0);
    weft_store_close(s); /* interrupted: nothing records when */
    sleep_s(1.0);
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    ASSERT_EQ_INT(weft_store_run_resume(s, run, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    const double first = r.active_seconds, resumed_at = r.attempt_started_at, began = r.started_at;
    weft_store_run_clear(&r);
    ASSERT(first >= 0.19 && first < 0.6);
    ASSERT(resumed_at - began >= 1.1);
    sleep_s(0.2);
    ASSERT_EQ_INT(weft_store_run_finish(s, run, "out", NULL), 0);
    ASSERT_EQ_INT(weft_store_run_finish(s, run, "out", NULL), 0); /* again: counted once */
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    const double active = r.active_seconds, span = r.finished_at - r.started_at;
    weft_store_run_clear(&r);
    ASSERT(active >= first + 0.19 && active < first + 0.6);
    ASSERT(active < span - 0.9);
    sleep_s(0.5);
    ASSERT_EQ_INT(weft_store_run_resume(s, run, NULL), 0); /* finished: the gap adds nothing */
    ASSERT_EQ_INT(weft_store_run_finish(s, run, "out", NULL), 0);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    const double again = r.active_seconds;
    weft_store_run_clear(&r);
    ASSERT(again >= active && again < active + 0.3);
    weft_store_close(s);
}

/* In a child process that cannot write what root could (as root: uid and
 * gid 65534, "nobody"), opens `path` read-only and lists it. Exit 0: listed
 * `want` runs as an immutable snapshot; 77: cannot drop root; else failed. */
static int list_unprivileged(const char *path, size_t want)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
            _exit(77);
        weft_store *s;
        weft_store_run *runs = NULL;
        size_t n = 0;
        if (weft_store_open(path, WEFT_STORE_READONLY, &s) != 0) {
            fprintf(stderr, "  read-only open: %s\n", weft_last_error());
            _exit(1);
        }
        const int ok = weft_store_immutable(s) && weft_store_runs_list(s, 0, &runs, &n) == 0 && n == want;
        weft_store_runs_free(runs, n);
        weft_store_close(s);
        _exit(ok ? 0 : 2);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

/* A WAL database needs its -shm file; in a read-only directory that cannot
 * be created, and a read-only open reads the file as an immutable snapshot
 * instead of failing, creating nothing. Where the directory is writable it
 * is an ordinary read-only open. */
TEST(a_database_in_a_read_only_directory_is_read_immutable)
{
    char sub[512], path[600], shm[620];
    db_path(sub, sizeof sub, "ro");
    snprintf(path, sizeof path, "%s/weft.db", sub);
    snprintf(shm, sizeof shm, "%s-shm", path);
    weft_store *s;
    int64_t run;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    ASSERT_EQ_INT(weft_store_run_begin(s, "ro.lua", NULL, NULL, &run), 0);
    ASSERT_EQ_INT(weft_store_run_finish(s, run, "kept", NULL), 0);
    weft_store_close(s); /* the last connection: the WAL is checkpointed, -shm removed */
    ASSERT(access(shm, F_OK) != 0);

    ASSERT_EQ_INT(chmod(dir, 0755), 0); /* "nobody" reaches it */
    ASSERT_EQ_INT(chmod(path, 0444), 0);
    ASSERT_EQ_INT(chmod(sub, 0555), 0);
    const int rc = list_unprivileged(path, 1);
    chmod(sub, 0755);
    if (rc == 77) {
        fprintf(stderr, "  skipped: running as root and cannot drop to uid 65534, where a "
                        "read-only directory stops writes\n");
        return;
    }
    ASSERT_EQ_INT(rc, 0);
    ASSERT(access(shm, F_OK) != 0); /* nothing written */
    ASSERT_EQ_INT(weft_store_open(path, WEFT_STORE_READONLY, &s), 0); /* writable again */
    ASSERT(!weft_store_immutable(s));
    weft_store_close(s);
}

/* A database written before the limits were recorded (runs schema version 1)
 * is read as it is when opened read-only, and upgraded when opened for
 * writing; its runs have no limits. */
TEST(a_version_1_database_is_read_and_upgraded)
{
    char path[512];
    db_path(path, sizeof path, "v1.db");
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    int64_t run;
    ASSERT_EQ_INT(weft_store_run_begin(s, "old.lua", "h", "{\"k\":\"v\"}", &run), 0);
    ASSERT_EQ_INT(weft_store_call_complete(s, run, "k1", "x", 1, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_finish(s, run, "old output", NULL), 0);
    weft_store_close(s);
    /* what version 1 wrote: the same tables without the columns of later versions */
    ASSERT_EQ_INT(sql_on(path, "ALTER TABLE runs DROP COLUMN sandbox; ALTER TABLE runs DROP COLUMN "
                               "mem_limit; ALTER TABLE runs DROP COLUMN instr_limit; ALTER TABLE runs "
                               "DROP COLUMN time_limit; ALTER TABLE runs DROP COLUMN model_hash; "
                               "ALTER TABLE runs DROP COLUMN model_path; ALTER TABLE runs DROP COLUMN "
                               "active_s; ALTER TABLE runs DROP COLUMN attempt_at; "
                               "UPDATE weft_schema SET version = 1"),
                  SQLITE_OK);

    ASSERT_EQ_INT(weft_store_open(path, WEFT_STORE_READONLY, &s), 0);
    weft_store_run *runs;
    size_t n;
    ASSERT_EQ_INT(weft_store_runs_list(s, 0, &runs, &n), 0);
    ASSERT_EQ_INT(n, 1);
    ASSERT_STR_EQ(runs[0].script_path, "old.lua");
    ASSERT(!runs[0].limits.sandboxed);
    ASSERT(runs[0].model_hash == NULL && runs[0].model_path == NULL);
    ASSERT_NEAR(runs[0].active_seconds, runs[0].finished_at - runs[0].started_at, 1e-6);
    weft_store_runs_free(runs, n);
    weft_store_run r;
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT_STR_EQ(r.output, "old output");
    ASSERT_EQ_INT(r.calls_done, 1);
    weft_store_run_clear(&r);
    weft_store_close(s);

    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT_STR_EQ(r.output, "old output");
    ASSERT(!r.limits.sandboxed && r.limits.time_limit == 0);
    weft_store_run_clear(&r);
    const weft_store_run_spec spec = {"old.lua", "h", NULL, {.sandboxed = true, .time_limit = 5}, NULL, NULL};
    ASSERT_EQ_INT(weft_store_run_resume_with(s, run, &spec, NULL), 0);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT(r.limits.sandboxed);
    ASSERT_NEAR(r.limits.time_limit, 5, 1e-9);
    weft_store_run_clear(&r);
    weft_store_close(s);
    /* upgraded: a read-only open reads the limits from the file now */
    ASSERT_EQ_INT(runs_schema_version(path), 4);
    ASSERT_EQ_INT(weft_store_open(path, WEFT_STORE_READONLY, &s), 0);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT(r.limits.sandboxed);
    weft_store_run_clear(&r);
    weft_store_close(s);
}

/* A read-only string of more 'x' than SQLite's length limit (a billion bytes
 * by default) then a NUL, costing 1 MiB of memory: a 1 MiB file of 'x' mapped
 * over and over, then a zero page. *n gets its length; free_big_text(). */
#define BIG_CHUNK ((size_t)1 << 20)
static char *big_text(size_t *n)
{
    sqlite3 *db;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) return NULL;
    const size_t limit = (size_t)sqlite3_limit(db, SQLITE_LIMIT_LENGTH, -1);
    sqlite3_close(db);
    *n = (limit / BIG_CHUNK + 1) * BIG_CHUNK;
    char path[512];
    db_path(path, sizeof path, "big.x");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    unlink(path);
    char *chunk = malloc(BIG_CHUNK);
    int ok = fd >= 0 && chunk;
    if (ok) memset(chunk, 'x', BIG_CHUNK);
    ok = ok && write(fd, chunk, BIG_CHUNK) == (ssize_t)BIG_CHUNK;
    free(chunk);
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *p = ok ? mmap(NULL, *n + page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
                 : MAP_FAILED;
    for (size_t off = 0; p != MAP_FAILED && off < *n; off += BIG_CHUNK)
        if (mmap(p + off, BIG_CHUNK, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
            munmap(p, *n + page);
            p = MAP_FAILED;
        }
    if (p != MAP_FAILED &&
        mmap(p + *n, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
        munmap(p, *n + page);
        p = MAP_FAILED;
    }
    if (fd >= 0) close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static void free_big_text(char *p, size_t n) { munmap(p, n + (size_t)sysconf(_SC_PAGESIZE)); }

TEST(values_over_sqlites_length_limit_are_errors_not_nulls)
{
    char path[512];
    db_path(path, sizeof path, "big.db");
    weft_store *s;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    int64_t run;
    ASSERT_EQ_INT(weft_store_run_begin(s, "big.lua", NULL, NULL, &run), 0);
    size_t n;
    char *big = big_text(&n);
    ASSERT(big != NULL);
    ASSERT_EQ_INT(strlen(big), n);
    /* a call's value: refused, and the call is not left done with no value */
    int rc = weft_store_call_complete(s, run, "k", big, n, NULL);
    char *out = NULL;
    size_t len;
    int found = weft_store_call_lookup(s, run, "k", &out, &len, NULL);
    weft_free(out);
    /* the run's output and error, and a run's script path */
    int rc_out = weft_store_run_finish(s, run, big, NULL);
    int rc_err = weft_store_run_finish(s, run, NULL, big);
    int64_t run2 = 0;
    int rc_begin = weft_store_run_begin(s, big, NULL, NULL, &run2);
    free_big_text(big, n);
    ASSERT_EQ_INT(rc, WEFT_ERANGE);
    ASSERT(strstr(weft_last_error(), "larger than SQLite's limit"));
    ASSERT_EQ_INT(found, WEFT_ENOTFOUND);
    ASSERT_EQ_INT(rc_out, WEFT_ERANGE);
    ASSERT_EQ_INT(rc_err, WEFT_ERANGE);
    ASSERT_EQ_INT(rc_begin, WEFT_ERANGE);
    weft_store_run r;
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT_EQ_INT(r.status, WEFT_RUN_RUNNING); /* not "finished" with no output */
    ASSERT_EQ_INT(r.calls_total, 0);
    weft_store_run_clear(&r);
    /* the statements were reset: the store goes on working */
    ASSERT_EQ_INT(weft_store_run_finish(s, run, "small", NULL), 0);
    ASSERT_EQ_INT(weft_store_run_get(s, run, &r), 0);
    ASSERT_STR_EQ(r.output, "small");
    weft_store_run_clear(&r);
    weft_store_close(s);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/weft-test-store-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(round_trip);
    RUN(bad_arguments_are_errors);
    RUN(default_path_follows_the_environment);
    RUN(values_persist_across_close_and_open);
    RUN(committed_values_survive_kill_9);
    RUN(resume_of_a_live_run_is_busy);
    RUN(liveness_is_the_runs_lock_not_its_pid);
    RUN(a_reader_sees_consistent_data_while_another_process_writes);
    RUN(corrupt_and_foreign_files_are_clear_errors);
    RUN(values_over_sqlites_length_limit_are_errors_not_nulls);
    RUN(resume_records_the_new_spec_and_keeps_the_sandbox);
    RUN(a_version_1_database_is_read_and_upgraded);
    RUN(a_resume_with_another_model_is_refused);
    RUN(active_seconds_leave_out_the_time_between_attempts);
    RUN(a_database_in_a_read_only_directory_is_read_immutable);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (test_failed_count == 0 && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    TEST_DONE();
}

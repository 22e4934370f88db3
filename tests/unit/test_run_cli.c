/* weft run and weft repl as a user meets them, on a tiny model: help and
 * usage errors, a script's output, a failing script's exit code, the REPL
 * on piped input and on a terminal (Ctrl-C, Ctrl-D), and a durable run
 * killed with SIGKILL mid-run that resumes with --resume recomputing
 * nothing completed and ending with the same output as an uninterrupted
 * run. */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "test.h"
#include "tiny_model.h"
#include "cli_common.h" /* after tiny_model.h: its parameters named out */
#include "weft/store.h"

static char weft[4096], model_path[256], db[512], script[512];

/* Runs `weft ARGS` in directory `dir` with this test's runs database; see
 * run_weft. */
static int run_in(const char *dir, const char *args)
{
    char env[1200];
    snprintf(env, sizeof env, "cd '%s' && WEFT_DB=%s", dir, db);
    return run_weft(env, weft, args);
}

/* run_in() the current directory. */
static int run(const char *args) { return run_in(".", args); }

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* A chain of 12 calls, each prompt built from the previous output; prints
 * "step k" as each completes and returns all outputs joined. */
static const char chain_lua[] =
    "local f = weft.fn{template = 'step {{k}} {{prev}}:{{out}}',\n"
    "                  outputs = {out = {max_tokens = tonumber(arg.tokens or 24), ignore_eos = true}}}\n"
    "local prev, all = 'the', {}\n"
    "for k = 1, 12 do\n"
    "  local t = f{k = k, prev = prev}:get()\n"
    "  all[#all + 1] = t\n"
    "  prev = t:gsub('[^%w ]', ''):sub(1, 12)\n"
    "  io.stdout:write('step ', k, '\\n') io.stdout:flush()\n"
    "end\n"
    "return 'final:' .. table.concat(all, '|')\n";

TEST(help_usage_and_script_errors)
{
    ASSERT_EQ_INT(run("run --help"), 0);
    ASSERT_OUT_HAS("--resume");
    ASSERT_OUT_HAS("--arg KEY=VALUE");
    ASSERT_OUT_HAS("and --time-limit 600 unless a --time-limit is given");
    ASSERT_EQ_INT(run("repl --help"), 0);
    ASSERT_OUT_HAS("--instr-limit N  with --sandbox: Lua instructions for each line");
    ASSERT_EQ_INT(run("run"), 2);
    ASSERT_OUT_HAS("script is required");
    ASSERT_EQ_INT(run("run a.lua b.lua"), 2);
    ASSERT_EQ_INT(run("run x.lua --arg novalue"), 2);
    ASSERT_EQ_INT(run("run --resume 0"), 2);
    /* arguments are recorded as JSON: bytes that are not UTF-8 are refused,
     * not dropped from the record */
    ASSERT_EQ_INT(run("run x.lua --arg \"k=a$(printf '\\377')\""), 2);
    ASSERT_OUT_HAS("--arg k: not valid UTF-8");
    char args[2048], bad[600];
    snprintf(bad, sizeof bad, "%s.bad.lua", script);
    ASSERT_EQ_INT(write_file(bad, "local x = weft.var('a')\nerror('on purpose: ' .. x:get())\n"), 0);
    /* the sandbox's caps without --sandbox would cap nothing: refused */
    snprintf(args, sizeof args, "run %s -m %s --no-store --mem-limit-mb 5", bad, model_path);
    ASSERT_EQ_INT(run(args), 2);
    ASSERT_OUT_HAS("--mem-limit-mb goes with --sandbox");
    snprintf(args, sizeof args, "run %s -m %s --no-store", bad, model_path);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("on purpose: a");
    ASSERT_OUT_HAS("stack traceback");
    snprintf(args, sizeof args, "run /nonexistent/s.lua -m %s --no-store", model_path);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("/nonexistent/s.lua");
    unlink(bad);
}

static long stat_field(const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\": ", name);
    const char *p = strstr(out, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

TEST(a_script_prints_model_output_and_its_result)
{
    char args[2048];
    snprintf(args, sizeof args, "run %s -m %s --ctx 256 -t 2 --arg tokens=4 --no-store --stats", script,
             model_path);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("step 12");
    ASSERT_OUT_HAS("final:");
    ASSERT_OUT_HAS("\"calls\": 12");
    /* counted up to the last call's last token: the statistics are read as
     * soon as the last call ends */
    ASSERT_EQ_INT(stat_field("generated_tokens"), 12 * 4);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

TEST(repl_runs_lines_and_prints_results_as_they_complete)
{
    char args[2048], input[600];
    snprintf(input, sizeof input, "%s.repl.txt", script);
    /* results are tagged with the task number of their line ([1] is f = ...) */
    ASSERT_EQ_INT(write_file(input,
                             "f = weft.fn{template = 'q {{x}}:{{y}}', outputs = {y = {max_tokens = 3}}}\n"
                             "1 + 2\n"
                             "v = f{x = 'the'}\n"
                             "v\n"
                             "weft.join({'a', 'b'}, '-')\n"
                             "for i = 1,\n"
                             "  2 do print('multi', i) end\n"
                             "error('oops')\n"
                             "this is not lua\n"
                             "#weft.var('abc'):get()\n"
                             "w = f{x = 'a'}\n"
                             "w\n"
                             "return w, w\n"
                             "for i = 1, 2 do\n"),
                  0);
    snprintf(args, sizeof args, "repl -m %s --ctx 256 -t 2 < %s", model_path, input);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("[2] 3\n");
    ASSERT_OUT_HAS("[4] "); /* the variable, printed when complete */
    ASSERT_OUT_HAS("[5] a-b\n");
    ASSERT_OUT_HAS("multi\t1\nmulti\t2\n");
    ASSERT_OUT_HAS("[7] error: stdin:1: oops");
    ASSERT_OUT_HAS("syntax error: stdin:1: syntax error near 'is'");
    ASSERT_OUT_HAS("[8] 3\n");
    ASSERT(strstr(out, "[3]") == NULL); /* a statement returns nothing to print */
    /* a variable shown by several lines prints under each of them */
    ASSERT_OUT_HAS("[10] ");
    const char *first11 = strstr(out, "[11] ");
    ASSERT(first11 != NULL && strstr(first11 + 1, "[11] ") != NULL);
    /* input that ends inside a statement is an error, not silence */
    ASSERT_OUT_HAS("syntax error: the input ended inside an unfinished statement");
    unlink(input);
}

/* weft repl --sandbox gives each line the whole instruction budget: a line
 * that spends it fails alone, and the lines after it run (they all failed,
 * print() included, when the session shared one budget). weft run's store
 * options are refused, not ignored. */
TEST(repl_sandbox_budget_is_per_line_and_run_options_are_refused)
{
    char args[2048], input[600];
    snprintf(input, sizeof input, "%s.repl-budget.txt", script);
    ASSERT_EQ_INT(write_file(input,
                             "for i = 1, 1000000 do end\n"
                             "print('after' .. 'wards')\n"
                             "for i = 1, 120000 do end\n"
                             "for i = 1, 120000 do end\n"
                             "for i = 1, 120000 do end\n"
                             "for i = 1, 120000 do end\n"
                             "print('st' .. 'ill')\n"
                             "io.write('x')\n"),
                  0);
    snprintf(args, sizeof args, "repl -m %s --ctx 256 -t 1 --sandbox --instr-limit 500000 < %s", model_path, input);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("[1] error: stdin:1: instruction budget of 500000 exceeded");
    ASSERT_OUT_HAS("afterwards\n");
    ASSERT_OUT_HAS("still\n");
    ASSERT(count_of(out, "budget") == 1); /* four lines of ~480k instructions in all: each its own */
    ASSERT_OUT_HAS("global 'io'"); /* the sandbox's library: no io */
    unlink(input);
    ASSERT_EQ_INT(run("repl --resume 3"), 2);
    ASSERT_OUT_HAS("--resume is for weft run");
    ASSERT_EQ_INT(run("repl --db /tmp/x.db"), 2);
    ASSERT_EQ_INT(run("repl --no-store"), 2);
    ASSERT_EQ_INT(run("repl --instr-limit 5"), 2);
    ASSERT_OUT_HAS("--instr-limit goes with --sandbox");
}

static const char escapes_lua[] =
    "local refused = 0\n"
    "local function try(name, f)\n"
    "  local ok = pcall(f)\n"
    "  if ok then print('ESCAPED ' .. name) else refused = refused + 1 end\n"
    "end\n"
    "try('io.open', function() return io.open('/etc/passwd') end)\n"
    "try('os.execute', function() return os.execute('true') end)\n"
    "try('os.remove', function() return os.remove('/tmp/x') end)\n"
    "try('require', function() return require('os') end)\n"
    "try('package', function() return package.loadlib('libc.so.6', 'system') end)\n"
    "try('string.dump', function() return string.dump(print) end)\n"
    "try('bytecode', function() return assert(load('\\27Lua\\84\\0\\25\\147', 'b', 'b')) end)\n"
    "try('bytecode as text', function() return assert(load('\\27LuaT\\0')) end)\n"
    "try('debug', function() return debug.getinfo(1) end)\n"
    "try('loadfile', function() return loadfile('/etc/passwd') end)\n"
    "try('dofile', function() return dofile('/etc/passwd') end)\n"
    "try('memory bomb', function() return string.rep('x', 1 << 30) end)\n"
    "print('refused ' .. refused)\n"
    "return weft.var('weft still works'):get()\n";

TEST(sandboxed_scripts_cannot_escape_or_exhaust_the_host)
{
    char args[2048], path[600];
    snprintf(path, sizeof path, "%s.escape.lua", script);
    ASSERT_EQ_INT(write_file(path, escapes_lua), 0);
    snprintf(args, sizeof args, "run %s -m %s --no-store --sandbox", path, model_path);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT(strstr(out, "ESCAPED") == NULL);
    ASSERT_OUT_HAS("refused 12\n");
    ASSERT_OUT_HAS("weft still works");
    /* without --sandbox the same script reaches io: the flag is what refuses */
    snprintf(args, sizeof args, "run %s -m %s --no-store", path, model_path);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("ESCAPED io.open");
    /* an endless loop ends the run with a clear error */
    ASSERT_EQ_INT(write_file(path, "local n = 0\nwhile true do n = n + 1 end\n"), 0);
    snprintf(args, sizeof args, "run %s -m %s --no-store --sandbox --instr-limit 1000000", path, model_path);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("instruction budget of 1000000 exceeded");
    /* so does a memory bomb that is not caught */
    ASSERT_EQ_INT(write_file(path, "local t = {}\nfor i = 1, 1e9 do t[i] = string.rep('x', 4096) .. i end\n"), 0);
    snprintf(args, sizeof args, "run %s -m %s --no-store --sandbox --mem-limit-mb 16", path, model_path);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("memory limit");
    unlink(path);
}

/* The newest run's id, -1 if there is none. */
static int64_t only_run_id(void)
{
    weft_store *s = NULL;
    weft_store_run *runs = NULL;
    size_t n = 0;
    int64_t id = -1;
    if (weft_store_open(db, WEFT_STORE_READONLY, &s) == 0 && weft_store_runs_list(s, 1, &runs, &n) == 0 && n == 1)
        id = runs[0].id;
    weft_store_runs_free(runs, n);
    weft_store_close(s);
    return id;
}

/* Reads run `id`'s record into *r (weft_store_run_clear() it); 0 or -1. */
static int get_run(int64_t id, weft_store_run *r)
{
    weft_store *s = NULL;
    int rc = weft_store_open(db, WEFT_STORE_READONLY, &s) == 0 && weft_store_run_get(s, id, r) == 0 ? 0 : -1;
    weft_store_close(s);
    return rc;
}

static int64_t calls_done(int64_t id)
{
    weft_store_run r = {0};
    const int64_t done = get_run(id, &r) == 0 ? r.calls_done : -1;
    weft_store_run_clear(&r);
    return done;
}

/* --time-limit, with or without --sandbox: a script running Lua (even one
 * that swallows errors with pcall), a script waiting on its calls (they are
 * cancelled), and one stuck inside a C library call (the process exits a few
 * seconds past the limit) all end with a clear error and exit 1. */
/* Runs `code` as a script with `opts` added; 0 when weft exits 1 within 20 s
 * and prints `want`. */
static int limited_run(const char *path, const char *code, const char *opts, const char *want)
{
    char args[2048];
    if (write_file(path, code) != 0) return -1;
    const double t0 = weft_now();
    snprintf(args, sizeof args, "run %s -m %s --no-store %s", path, model_path, opts);
    const int rc = run(args);
    if (rc != 1 || !strstr(out, want) || weft_now() - t0 >= 20) {
        fprintf(stderr, "  %s: exit %d after %.1f s, wanted 1 and '%s' in:\n%s\n", opts, rc, weft_now() - t0,
                want, out);
        return -1;
    }
    return 0;
}

TEST(time_limit_ends_runs_that_loop_wait_or_hang)
{
    char path[600], args[2048];
    snprintf(path, sizeof path, "%s.slow.lua", script);
    static const char loop[] = "while true do pcall(function() while true do end end) end\n";
    ASSERT_EQ_INT(limited_run(path, loop, "--time-limit 0.5", "time limit of 0.5 s exceeded"), 0);
    ASSERT_EQ_INT(limited_run(path, loop, "--sandbox --time-limit 0.5", "time limit of 0.5 s exceeded"), 0);
    /* waiting: 256 calls of 240 tokens each take the tiny model seconds */
    ASSERT_EQ_INT(limited_run(path,
                              "local f = weft.fn{template = 'story {{k}}: {{out}}',\n"
                              "  outputs = {out = {max_tokens = 240, ignore_eos = true}}}\n"
                              "local vs = {}\n"
                              "for k = 1, 256 do vs[k] = f{k = k} end\n"
                              "return #table.concat(weft.gather(vs))\n",
                              "-t 2 --ctx 256 --slots 16 --time-limit 0.3", "failed: time limit of 0.3 s exceeded"),
                  0);
    /* stuck in C: string.find backtracking over 30,000 characters */
    ASSERT_EQ_INT(limited_run(path, "print(string.find(string.rep('a', 30000), '.-.-.-.-.-b'))\n",
                              "--time-limit 0.5", "time limit of 0.5 s exceeded and the script did not stop"),
                  0);
    /* with the store, the exit records the run failed with that error (as
     * --help says), not left marked running to read as "interrupted" */
    snprintf(args, sizeof args, "run %s -m %s --time-limit 0.5", path, model_path);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("did not stop");
    weft_store_run r = {0};
    ASSERT_EQ_INT(get_run(only_run_id(), &r), 0);
    const int failed = r.status == WEFT_RUN_FAILED && r.error && strstr(r.error, "time limit of 0.5 s exceeded");
    weft_store_run_clear(&r);
    ASSERT(failed);
    snprintf(args, sizeof args, "run %s -m %s --no-store --time-limit 0", path, model_path);
    ASSERT_EQ_INT(run(args), 2);
    ASSERT_EQ_INT(run("repl --time-limit 5"), 2);
    unlink(path);
}

/* Edges of the run's graph in the database. */
static int count_edges(int64_t id)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int n = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(h, "SELECT count(*) FROM edges WHERE run_id = ?1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

/* Starts `weft run PATH ... --arg tokens=40` in a child with stdout on a
 * pipe (*f) and waits until it has printed "step <at>". Returns the steps it
 * printed (less than `at` if it ended first), or -1; *pid is the child. */
static int start_run(const char *path, int at, pid_t *pid, FILE **f)
{
    int fds[2];
    *f = NULL;
    if (pipe(fds) != 0) return -1;
    *pid = fork();
    if (*pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        setenv("WEFT_DB", db, 1);
        execl(weft, weft, "run", path, "-m", model_path, "--ctx", "256", "-t", "2", "--arg",
              "tokens=40", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    *f = fdopen(fds[0], "r");
    char line[256];
    int steps = 0;
    while (*f && steps < at && fgets(line, sizeof line, *f))
        if (strncmp(line, "step ", 5) == 0) steps = atoi(line + 5);
    return *pid > 0 && *f ? steps : -1;
}

/* Kills the child of start_run with SIGKILL; 0 when it died of it. */
static int kill_run(pid_t pid, FILE *f)
{
    int st;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    if (f) fclose(f);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL ? 0 : -1;
}

/* Runs the chain script and kills it with SIGKILL once it has printed
 * "step <at>". Returns the steps it printed, or -1. */
static int run_and_kill(int at)
{
    pid_t pid;
    FILE *f;
    const int steps = start_run(script, at, &pid, &f);
    return kill_run(pid, f) == 0 && steps >= at ? steps : -1;
}

TEST(a_run_stores_its_graph)
{
    char args[2048], path[600];
    snprintf(path, sizeof path, "%s.graph.lua", script);
    ASSERT_EQ_INT(write_file(path,
                             "local f = weft.fn{template = 'x {{x}}:{{y}}', outputs = {y = {max_tokens = 3}}}\n"
                             "local a = f{x = 'the'}\n"
                             "local b, c = f{x = a}, f{x = a}\n"
                             "return f{x = weft.join({b, c}, ' ')}:get()\n"),
                  0);
    snprintf(args, sizeof args, "run %s -m %s --ctx 256 -t 2", path, model_path);
    ASSERT_EQ_INT(run(args), 0);
    const int64_t id = only_run_id();
    ASSERT(id > 0);
    ASSERT_EQ_INT(calls_done(id), 4);
    ASSERT_EQ_INT(count_edges(id), 4); /* a->b, a->c, and b, c -> d through the join */
    unlink(path);
}

TEST(a_killed_run_resumes_without_recomputing_what_completed)
{
    char args[2048], reference[1 << 14];
    /* the same script uninterrupted, for the expected output */
    snprintf(args, sizeof args, "run %s -m %s --ctx 256 -t 2 --arg tokens=40 --no-store", script, model_path);
    ASSERT_EQ_INT(run(args), 0);
    const char *fin = strstr(out, "final:");
    ASSERT(fin != NULL);
    snprintf(reference, sizeof reference, "%s", fin);

    const int steps = run_and_kill(4);
    ASSERT(steps >= 4);
    const int64_t id = only_run_id();
    ASSERT(id > 0);
    const int64_t done = calls_done(id);
    fprintf(stderr, "  killed after step %d; %lld calls stored as done\n", steps, (long long)done);
    ASSERT(done >= 4 && done < 12);
    ASSERT_EQ_INT(run("runs --json"), 0);
    ASSERT_OUT_HAS("interrupted");

    snprintf(args, sizeof args, "run --resume %lld -m %s --ctx 256 -t 2 --stats", (long long)id, model_path);
    ASSERT_EQ_INT(run(args), 0);
    /* nothing completed is computed again: the engine saw only the rest */
    ASSERT_EQ_INT(stat_field("from_store"), done);
    ASSERT_EQ_INT(stat_field("submitted"), 12 - done);
    fin = strstr(out, "final:");
    ASSERT(fin != NULL);
    ASSERT(strncmp(fin, reference, strlen(reference)) == 0);
    ASSERT_EQ_INT(calls_done(id), 12);
    /* resuming a finished run serves everything from the store */
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_EQ_INT(stat_field("from_store"), 12);
    ASSERT_EQ_INT(stat_field("submitted"), 0);
}

/* Sets the pid recorded with run `id`; 0 or -1. */
static int set_recorded_pid(int64_t id, long long pid)
{
    sqlite3 *h = NULL;
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE runs SET pid = %lld WHERE id = %lld", pid, (long long)id);
    const int rc = sqlite3_open(db, &h) == SQLITE_OK && sqlite3_exec(h, sql, NULL, NULL, NULL) == SQLITE_OK &&
                           sqlite3_changes(h) == 1
                       ? 0
                       : -1;
    sqlite3_close(h);
    return rc;
}

/* A run is running while its process holds the run's lock, not while some
 * process has the pid it recorded: a run killed with SIGKILL whose recorded
 * pid now belongs to a live process (this test's) reads as interrupted and
 * resumes; a live run refuses a concurrent --resume. */
TEST(liveness_is_the_runs_lock_not_its_pid)
{
    ASSERT(run_and_kill(2) >= 2);
    const int64_t id = only_run_id();
    ASSERT(id > 0);
    ASSERT_EQ_INT(set_recorded_pid(id, (long long)getpid()), 0); /* as if the pid were reused */
    char args[2048], want[64];
    snprintf(args, sizeof args, "runs --json %lld", (long long)id);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("\"status\":\"interrupted\"");
    snprintf(want, sizeof want, "\"pid\":%lld", (long long)getpid());
    ASSERT_OUT_HAS(want);
    snprintf(args, sizeof args, "run --resume %lld -m %s --ctx 256 -t 2 --arg tokens=4", (long long)id,
             model_path);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("final:");

    char path[600];
    snprintf(path, sizeof path, "%s.live.lua", script);
    ASSERT_EQ_INT(write_file(path, "io.stdout:write('step 1\\n') io.stdout:flush()\nwhile true do end\n"), 0);
    pid_t pid;
    FILE *f;
    const int started = start_run(path, 1, &pid, &f);
    const int64_t live = only_run_id();
    snprintf(args, sizeof args, "run --resume %lld -m %s --ctx 256 -t 2", (long long)live, model_path);
    const int resumed = run(args);
    const int refused = resumed == 1 && strstr(out, "still running") != NULL;
    snprintf(args, sizeof args, "runs --json %lld", (long long)live);
    const int listed = run(args) == 0 && strstr(out, "\"status\":\"running\"") != NULL;
    ASSERT_EQ_INT(kill_run(pid, f), 0);
    ASSERT_EQ_INT(started, 1);
    ASSERT(live > id);
    ASSERT(refused);
    ASSERT(listed);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("\"status\":\"interrupted\"");
    unlink(path);
}

/* A run killed, left a while, then resumed: its duration is its two
 * attempts, less than the span from its start to its end by about the time
 * it lay dead. */
TEST(duration_leaves_out_the_time_between_a_crash_and_the_resume)
{
    ASSERT(run_and_kill(2) >= 2);
    const int64_t id = only_run_id();
    sleep(2);
    char args[2048];
    snprintf(args, sizeof args, "run --resume %lld -m %s --ctx 256 -t 2 --arg tokens=4", (long long)id,
             model_path);
    ASSERT_EQ_INT(run(args), 0);
    weft_store_run r = {0};
    ASSERT_EQ_INT(get_run(id, &r), 0);
    const double active = r.active_seconds, span = r.finished_at - r.started_at;
    weft_store_run_clear(&r);
    fprintf(stderr, "  active %.2f s of a %.2f s span\n", active, span);
    ASSERT(active > 0);
    ASSERT(active < span - 1.5);
    snprintf(args, sizeof args, "runs --json %lld", (long long)id);
    ASSERT_EQ_INT(run(args), 0);
    const char *p = strstr(out, "\"seconds\":");
    ASSERT(p != NULL);
    ASSERT_NEAR(strtod(p + 10, NULL), active, 1e-3);
}

/* Runs `weft run SCRIPT OPTS` on the tiny model; see run(). */
static int run_script(const char *path, const char *opts)
{
    char args[2048];
    snprintf(args, sizeof args, "run %s %s -m %s --ctx 256 -t 2", path, opts, model_path);
    return run(args);
}

/* Runs `weft run --resume ID OPTS` on the tiny model; see run(). */
static int resume(int64_t id, const char *opts)
{
    char args[2048];
    snprintf(args, sizeof args, "run --resume %lld %s -m %s --ctx 256 -t 2", (long long)id, opts, model_path);
    return run(args);
}

/* A small script: one call of two tokens; returns "out:" and the text. */
static const char small_lua[] =
    "local f = weft.fn{template = 'say {{x}}:{{y}}', outputs = {y = {max_tokens = 2, ignore_eos = true}}}\n"
    "return 'out:' .. f{x = arg.x or 'a'}:get()\n";

/* A resume checks the script and loads the model before it touches the run:
 * one that cannot start leaves a finished run finished, with its output. The
 * run records the script's absolute path, so a resume from another directory
 * finds a script started by a relative path. */
TEST(a_resume_that_cannot_start_leaves_the_run_as_it_was)
{
    char dir[600], path[700], moved[700], args[2048];
    snprintf(dir, sizeof dir, "%s.d", model_path);
    snprintf(path, sizeof path, "%s/small.lua", dir);
    snprintf(moved, sizeof moved, "%s/moved.lua", dir);
    ASSERT(mkdir(dir, 0700) == 0 || errno == EEXIST);
    ASSERT_EQ_INT(write_file(path, small_lua), 0);
    snprintf(args, sizeof args, "run small.lua -m %s --ctx 256 -t 2", model_path);
    ASSERT_EQ_INT(run_in(dir, args), 0);
    const int64_t id = only_run_id();
    weft_store_run r = {0};
    ASSERT_EQ_INT(get_run(id, &r), 0);
    char output[256];
    snprintf(output, sizeof output, "%s", r.output ? r.output : "(none)");
    ASSERT(strncmp(output, "out:", 4) == 0);
    ASSERT_STR_EQ(r.script_path, path); /* absolute (the temp dir has no links) */
    weft_store_run_clear(&r);

    snprintf(args, sizeof args, "run --resume %lld -m /nonexistent.gguf", (long long)id);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("/nonexistent.gguf");
    ASSERT_EQ_INT(rename(path, moved), 0);
    ASSERT_EQ_INT(resume(id, ""), 1);
    ASSERT_OUT_HAS("cannot read the script");
    ASSERT_EQ_INT(rename(moved, path), 0);
    ASSERT_EQ_INT(get_run(id, &r), 0);
    const int kept = r.status == WEFT_RUN_FINISHED && r.resumes == 0 && r.output && strcmp(r.output, output) == 0;
    weft_store_run_clear(&r);
    ASSERT(kept);

    /* from another directory: the recorded path is absolute */
    snprintf(args, sizeof args, "run --resume %lld -m %s --ctx 256 -t 2", (long long)id, model_path);
    ASSERT_EQ_INT(run_in("/", args), 0);
    ASSERT_OUT_HAS(output);
    unlink(path);
    rmdir(dir);
}

/* A resume with new --arg values or another SCRIPT records them with the
 * run: `weft runs` shows what the output was computed from, and the next
 * resume neither reverts them nor warns that the script changed. */
TEST(a_resume_records_its_arguments_and_script)
{
    char a[600], b[600];
    snprintf(a, sizeof a, "%s.a.lua", script);
    snprintf(b, sizeof b, "%s.b.lua", script);
    ASSERT_EQ_INT(write_file(a, small_lua), 0);
    ASSERT_EQ_INT(write_file(b, "-- b\n"), 0);
    FILE *f = fopen(b, "a");
    ASSERT(f != NULL);
    fputs(small_lua, f);
    fclose(f);
    ASSERT_EQ_INT(run_script(a, "--arg x=one"), 0);
    const int64_t id = only_run_id();
    ASSERT_EQ_INT(resume(id, "--arg x=two"), 0);
    weft_store_run r = {0};
    ASSERT_EQ_INT(get_run(id, &r), 0);
    char hash_a[64];
    snprintf(hash_a, sizeof hash_a, "%s", r.script_hash);
    const int two = strcmp(r.args_json, "{\"x\":\"two\"}") == 0;
    weft_store_run_clear(&r);
    ASSERT(two);

    ASSERT_EQ_INT(resume(id, b), 0);
    ASSERT_OUT_HAS("changed since run"); /* b is not the script the run began with */
    ASSERT_EQ_INT(get_run(id, &r), 0);
    const int now_b = strcmp(r.script_path, b) == 0 && strcmp(r.script_hash, hash_a) != 0 &&
                      strcmp(r.args_json, "{\"x\":\"two\"}") == 0;
    weft_store_run_clear(&r);
    ASSERT(now_b);
    ASSERT_EQ_INT(resume(id, ""), 0);
    ASSERT(strstr(out, "changed since run") == NULL);
    unlink(a);
    unlink(b);
}

/* A script's os.exit ends its run as the script chose: the process exits
 * with that status and the run is recorded finished (0) or failed, not left
 * marked running (which `weft runs` shows as interrupted). What was printed
 * before the exit is not lost; a bad argument is the script's error, and a
 * failed script's error is what the run records. */
static int exit_run(const char *path, const char *code, int want_rc, weft_run_status want_status,
                    const char *want_error)
{
    weft_store_run r = {0};
    int ok = write_file(path, code) == 0 && run_script(path, "") == want_rc && strstr(out, "before exit") != NULL &&
             get_run(only_run_id(), &r) == 0 && r.status == want_status &&
             (want_error ? r.error && strstr(r.error, want_error) : r.error == NULL);
    if (!ok)
        fprintf(stderr, "  %s: exit status, output or record not as wanted (status %d, error %s):\n%s\n", code,
                (int)r.status, r.error ? r.error : "-", out);
    weft_store_run_clear(&r);
    return ok ? 0 : -1;
}

TEST(os_exit_ends_the_run_with_its_status)
{
    char path[600];
    snprintf(path, sizeof path, "%s.exit.lua", script);
    static const char head[] =
        "local f = weft.fn{template = 'say {{x}}:{{y}}', outputs = {y = {max_tokens = 2, ignore_eos = true}}}\n"
        "print('before exit ' .. #f{x = 'a'}:get())\n"
        "local late = f{x = 'b'} -- still running at the exit\n";
    char code[1024];
    snprintf(code, sizeof code, "%sos.exit()\n", head);
    ASSERT_EQ_INT(exit_run(path, code, 0, WEFT_RUN_FINISHED, NULL), 0);
    snprintf(code, sizeof code, "%sos.exit(true)\n", head);
    ASSERT_EQ_INT(exit_run(path, code, 0, WEFT_RUN_FINISHED, NULL), 0);
    snprintf(code, sizeof code, "%sos.exit(3)\n", head);
    ASSERT_EQ_INT(exit_run(path, code, 3, WEFT_RUN_FAILED, "the script called os.exit(3)"), 0);
    snprintf(code, sizeof code, "%sos.exit(false)\n", head);
    ASSERT_EQ_INT(exit_run(path, code, 1, WEFT_RUN_FAILED, "the script called os.exit(1)"), 0);
    snprintf(code, sizeof code, "%sos.exit('no')\n", head);
    ASSERT_EQ_INT(exit_run(path, code, 1, WEFT_RUN_FAILED, "bad argument #1 to 'exit'"), 0);
    /* a script's error is the run's, not whatever the call it left in flight
     * set as last error while it finished (it was "run N has no completed
     * value for call ...") */
    snprintf(code, sizeof code, "%serror('boom')\n", head);
    ASSERT_EQ_INT(exit_run(path, code, 1, WEFT_RUN_FAILED, "boom"), 0);
    unlink(path);
}

/* --sandbox is recorded with the run: a resume without it runs the script
 * sandboxed with the recorded limits, may lower them, and cannot raise them. */
TEST(a_sandboxed_run_stays_sandboxed_when_resumed)
{
    char path[600], args[2048];
    snprintf(path, sizeof path, "%s.box.lua", script);
    ASSERT_EQ_INT(write_file(path, "if io then return 'UNSANDBOXED' end\n"
                                   "return 'sandboxed ' .. weft.var(arg.x or '-'):get()\n"),
                  0);
    ASSERT_EQ_INT(run_script(path, "--sandbox --mem-limit-mb 32"), 0);
    ASSERT_OUT_HAS("sandboxed -");
    const int64_t id = only_run_id();
    ASSERT_EQ_INT(resume(id, "--arg x=1"), 0);
    ASSERT_OUT_HAS("sandboxed 1");
    ASSERT_OUT_HAS("resuming it sandboxed");
    ASSERT(strstr(out, "UNSANDBOXED") == NULL);
    ASSERT_EQ_INT(resume(id, "--mem-limit-mb 64"), 2);
    ASSERT_OUT_HAS("sandboxed with --mem-limit-mb 32: a resume may lower it, not raise it");
    ASSERT_EQ_INT(resume(id, "--instr-limit 100000"), 0);
    weft_store_run r = {0};
    ASSERT_EQ_INT(get_run(id, &r), 0);
    const weft_store_run_limits l = r.limits;
    weft_store_run_clear(&r);
    ASSERT(l.sandboxed);
    ASSERT_EQ_INT(l.mem_limit, 32 << 20);
    ASSERT_EQ_INT(l.instr_limit, 100000);
    ASSERT_NEAR(l.time_limit, 600, 1e-9); /* --sandbox's default: LLM work is bounded too */
    snprintf(args, sizeof args, "runs %lld", (long long)id);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("limits    sandboxed: 32 MiB, 100000 instructions, time limit 600 s\n");
    snprintf(args, sizeof args, "runs --json %lld", (long long)id);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("\"limits\":{\"sandbox\":true,\"mem_limit\":33554432,\"instr_limit\":100000,"
                   "\"time_limit\":600.0}");

    /* an unsandboxed run resumed with --sandbox stays sandboxed after */
    ASSERT_EQ_INT(run_script(path, ""), 0);
    ASSERT_OUT_HAS("UNSANDBOXED");
    const int64_t id2 = only_run_id();
    ASSERT_EQ_INT(resume(id2, "--sandbox"), 0);
    ASSERT_OUT_HAS("sandboxed -");
    ASSERT_EQ_INT(resume(id2, ""), 0);
    ASSERT_OUT_HAS("sandboxed -");
    ASSERT(strstr(out, "UNSANDBOXED") == NULL);
    unlink(path);
}

/* Copies the file at `from` to `to`; 0 or -1. */
static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *o = fopen(to, "wb");
    char buf[1 << 16];
    size_t n;
    int rc = in && o ? 0 : -1;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0) rc = fwrite(buf, 1, n, o) == n ? 0 : -1;
    if (in) fclose(in);
    if (o && fclose(o) != 0) rc = -1;
    return rc;
}

/* A run records the model it is computed by: a resume with another model
 * (here the same file size and metadata, other weights) is refused with both
 * named and leaves the run as it was; a copy of the model under another name
 * is the same model and resumes. `weft runs` shows the model. */
TEST(a_resume_with_another_model_is_refused)
{
    char path[600], other[600], copy[600], args[2048];
    snprintf(path, sizeof path, "%s.model.lua", script);
    snprintf(other, sizeof other, "%s.other.gguf", model_path);
    snprintf(copy, sizeof copy, "%s.copy.gguf", model_path);
    tiny_spec sp = tiny_default();
    sp.seed = 2;
    ASSERT_EQ_INT(tiny_write(&sp, other), 0);
    ASSERT_EQ_INT(copy_file(model_path, copy), 0);
    ASSERT_EQ_INT(write_file(path, small_lua), 0);
    ASSERT_EQ_INT(run_script(path, ""), 0);
    const int64_t id = only_run_id();
    weft_store_run r = {0};
    ASSERT_EQ_INT(get_run(id, &r), 0);
    char hash[64], output[256];
    snprintf(hash, sizeof hash, "%s", r.model_hash ? r.model_hash : "(none)");
    snprintf(output, sizeof output, "%s", r.output ? r.output : "(none)");
    const int recorded = r.model_hash && strlen(r.model_hash) == 16 && r.model_path &&
                         strcmp(r.model_path, model_path) == 0;
    weft_store_run_clear(&r);
    ASSERT(recorded);

    snprintf(args, sizeof args, "run --resume %lld -m %s --ctx 256 -t 2", (long long)id, other);
    ASSERT_EQ_INT(run(args), 1);
    ASSERT_OUT_HAS("was computed by the model");
    ASSERT_OUT_HAS(model_path);
    ASSERT_OUT_HAS(other);
    ASSERT_OUT_HAS(hash);
    ASSERT_EQ_INT(get_run(id, &r), 0);
    const int kept = r.status == WEFT_RUN_FINISHED && r.resumes == 0 && r.output &&
                     strcmp(r.output, output) == 0 && strcmp(r.model_hash, hash) == 0;
    weft_store_run_clear(&r);
    ASSERT(kept);

    snprintf(args, sizeof args, "run --resume %lld -m %s --ctx 256 -t 2 --stats", (long long)id, copy);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_EQ_INT(stat_field("from_store"), 1);
    snprintf(args, sizeof args, "runs --json %lld", (long long)id);
    ASSERT_EQ_INT(run(args), 0);
    char want[700];
    snprintf(want, sizeof want, "\"model\":{\"hash\":\"%s\",\"path\":\"%s\"}", hash, copy);
    ASSERT_OUT_HAS(want);
    unlink(path);
    unlink(other);
    unlink(copy);
}

/* Runs `weft runs --db PATH ARG` in a child that cannot write what root
 * could (as root: uid and gid 65534, "nobody"), its output into out; returns
 * its exit code, 77 if it cannot drop root or then run weft, or -1. */
static int runs_unprivileged(const char *path, const char *arg)
{
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
            _exit(77);
        if (access(weft, X_OK) != 0) _exit(77); /* built where "nobody" cannot reach */
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execl(weft, weft, "runs", "--db", path, arg, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out - 1 && (r = read(fds[0], out + n, sizeof out - 1 - n)) > 0) n += (size_t)r;
    out[n] = 0;
    close(fds[0]);
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

/* `weft runs` on a database in a read-only directory (where SQLite cannot
 * create the -shm file WAL needs) still lists, says that it reads the file
 * as it is and writes nothing, and creates nothing. */
TEST(runs_lists_a_database_in_a_read_only_directory)
{
    char sub[600], path[700], shm[720];
    snprintf(sub, sizeof sub, "%s.ro", model_path);
    snprintf(path, sizeof path, "%s/weft.db", sub);
    snprintf(shm, sizeof shm, "%s-shm", path);
    ASSERT(mkdir(sub, 0755) == 0 || errno == EEXIST);
    weft_store *s;
    int64_t id;
    ASSERT_EQ_INT(weft_store_open(path, 0, &s), 0);
    int rc = weft_store_run_begin(s, "/w/ro.lua", NULL, NULL, &id);
    if (!rc) rc = weft_store_run_finish(s, id, "kept", NULL);
    weft_store_close(s);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(chmod(path, 0444), 0);
    ASSERT_EQ_INT(chmod(sub, 0555), 0);
    const int listed = runs_unprivileged(path, "--json");
    chmod(sub, 0755);
    if (listed == 77) {
        fprintf(stderr, "  skipped: running as root and cannot run weft as uid 65534, where a "
                        "read-only directory stops writes\n");
    } else {
        ASSERT_EQ_INT(listed, 0);
        ASSERT_OUT_HAS("\"script\":\"/w/ro.lua\"");
        ASSERT_OUT_HAS("nothing is written");
        ASSERT(access(shm, F_OK) != 0);
    }
    char p[720];
    const char *sfx[] = {"", "-wal", "-shm", "-runlock"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
    rmdir(sub);
}

/* A script path, an output or an error may hold bytes that are not UTF-8
 * (a model's output can): `weft runs --json` shows them as U+FFFD instead of
 * dropping the field or failing. */
TEST(runs_json_shows_bytes_that_are_not_utf8_as_replacement_characters)
{
    weft_store *s;
    int64_t ok_run, bad_run;
    ASSERT_EQ_INT(weft_store_open(db, 0, &s), 0);
    int rc = weft_store_run_begin(s, "/w/bad\xff.lua", NULL, NULL, &ok_run);
    if (!rc) rc = weft_store_run_finish(s, ok_run, "out\xfe.", NULL);
    if (!rc) rc = weft_store_run_begin(s, "/w/b.lua", NULL, NULL, &bad_run);
    if (!rc) rc = weft_store_run_finish(s, bad_run, NULL, "err\xc3(");
    weft_store_close(s);
    ASSERT_EQ_INT(rc, 0);
    ASSERT_EQ_INT(run("runs --json -n 2"), 0);
    ASSERT_OUT_HAS("\"script\":\"/w/bad\\uFFFD.lua\"");
    ASSERT_OUT_HAS("\"error\":\"err\\uFFFD(\"");
    char args[64];
    snprintf(args, sizeof args, "runs --json %lld", (long long)ok_run);
    ASSERT_EQ_INT(run(args), 0);
    ASSERT_OUT_HAS("\"output\":\"out\\uFFFD.\"");
}

/* weft repl on a pseudo-terminal, as a user at a keyboard meets it. */
typedef struct term {
    int fd;
    pid_t pid;
    char seen[1 << 15]; /* everything the REPL printed */
    size_t n, at;       /* bytes in seen; where the next expectation starts */
} term;

static int term_open(term *t, const char *extra)
{
    memset(t, 0, sizeof *t);
    struct winsize ws = {.ws_row = 24, .ws_col = 200};
    t->pid = forkpty(&t->fd, NULL, NULL, &ws);
    if (t->pid < 0) return -1;
    if (t->pid == 0) {
        setenv("HOME", "/tmp", 1); /* its history file is not the user's */
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "exec %s repl -m %s --ctx 256 -t 1 %s", weft, model_path, extra);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return 0;
}

/* Waits (up to 30 s) until the REPL has printed `s` after what earlier
 * expectations consumed; true if it did. */
static bool term_expect(term *t, const char *s)
{
    const double end = weft_now() + 30;
    for (;;) {
        t->seen[t->n] = 0;
        const char *at = strstr(t->seen + t->at, s);
        if (at) {
            t->at = (size_t)(at - t->seen) + strlen(s);
            return true;
        }
        const double left = end - weft_now();
        if (left <= 0 || t->n + 1 >= sizeof t->seen) break;
        struct pollfd pfd = {.fd = t->fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0) break;
        const ssize_t k = read(t->fd, t->seen + t->n, sizeof t->seen - 1 - t->n);
        if (k <= 0) break;
        t->n += (size_t)k;
    }
    fprintf(stderr, "  the REPL did not print \"%s\"; it printed:\n%s\n", s, t->seen + t->at);
    return false;
}

static void term_type(term *t, const char *keys) { ASSERT_EQ_INT(write(t->fd, keys, strlen(keys)), strlen(keys)); }

/* Waits for the REPL to exit (up to 30 s, then kills it); its exit status,
 * 128 + the signal that ended it, or -1. The terminal stays open. */
static int term_wait(term *t)
{
    int st = -1;
    /* what it prints meanwhile is read: a full terminal would block it */
    const double end = weft_now() + 30;
    while (weft_now() < end && waitpid(t->pid, &st, WNOHANG) == 0) {
        struct pollfd pfd = {.fd = t->fd, .events = POLLIN};
        ssize_t k = 0;
        if (poll(&pfd, 1, 10) > 0 && t->n + 1 < sizeof t->seen)
            k = read(t->fd, t->seen + t->n, sizeof t->seen - 1 - t->n);
        if (k > 0) t->n += (size_t)k;
        else usleep(10000); /* nothing to read, or the terminal closed before the exit */
    }
    if (waitpid(t->pid, &st, WNOHANG) == 0) {
        kill(t->pid, SIGKILL);
        waitpid(t->pid, &st, 0);
        t->seen[t->n] = 0;
        fprintf(stderr, "  the REPL did not exit in 30 s; after the last expectation it printed:\n%s\n",
                t->seen + t->at);
        st = -1;
    }
    if (st < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

/* term_wait, then the terminal is closed. */
static int term_close(term *t)
{
    const int st = term_wait(t);
    close(t->fd);
    return st;
}

#define TERM_EXPECT(t, s)                                                           \
    do {                                                                            \
        if (!term_expect((t), (s))) {                                               \
            kill((t)->pid, SIGKILL);                                                \
            term_close(t);                                                          \
            TEST_FAIL_("expected \"%s\"", (s));                                     \
        }                                                                           \
    } while (0)

/* Ctrl-C while a statement runs stops it with "interrupted" and the REPL
 * goes on; Ctrl-C at the prompt drops the line being typed (and an
 * unfinished multi-line statement) for a fresh prompt; Ctrl-D at an empty
 * prompt ends the REPL with status 0. With --sandbox too, where the same
 * hook also counts the budget. */
TEST(repl_ctrl_c_interrupts_a_statement_or_clears_the_line)
{
    const char *modes[] = {"", "--sandbox"};
    for (int m = 0; m < 2; m++) {
        term t;
        ASSERT_EQ_INT(term_open(&t, modes[m]), 0);
        TERM_EXPECT(&t, "weft> ");
        term_type(&t, "print('spin' .. 'ning') while true do end\r");
        TERM_EXPECT(&t, "spinning"); /* the statement runs: its loop holds the REPL */
        term_type(&t, "\x03");
        TERM_EXPECT(&t, "error: stdin:1: interrupted");
        TERM_EXPECT(&t, "weft> ");
        /* at the prompt: the line typed so far goes */
        term_type(&t, "abc");
        TERM_EXPECT(&t, "abc");
        term_type(&t, "\x03");
        TERM_EXPECT(&t, "weft> ");
        term_type(&t, "40 + 2\r"); /* "abc40 + 2" would be a syntax error */
        TERM_EXPECT(&t, "] 42");
        /* ... and so does an unfinished statement */
        term_type(&t, "for i = 1,\r");
        TERM_EXPECT(&t, ">> ");
        term_type(&t, "\x03");
        TERM_EXPECT(&t, "weft> ");
        term_type(&t, "'after' .. 'wards'\r");
        TERM_EXPECT(&t, "] afterwards");
        ASSERT(strstr(t.seen, "syntax error") == NULL);
        /* Ctrl-D at the prompt */
        TERM_EXPECT(&t, "weft> ");
        term_type(&t, "\x04");
        ASSERT_EQ_INT(term_close(&t), 0);
    }
}

/* A statement the hook cannot stop — one long C call (a pathological
 * string.find), or an xpcall message handler looping after the interrupt
 * (Lua runs it with hooks off) — holds the REPL at Ctrl-C; a second Ctrl-C
 * a second later ends the REPL as Ctrl-C ends a program, saying why. */
TEST(repl_second_ctrl_c_ends_a_statement_the_hook_cannot_stop)
{
    const char *stmts[] = {
        "print('in' .. 'c') string.find(string.rep('a', 100000), '.-.-.-.-.-b')\r",
        "print('in' .. 'c') xpcall(function() while true do end end, function() while true do end end)\r",
    };
    for (int i = 0; i < 2; i++) {
        term t;
        ASSERT_EQ_INT(term_open(&t, ""), 0);
        TERM_EXPECT(&t, "weft> ");
        term_type(&t, stmts[i]);
        TERM_EXPECT(&t, "inc");
        term_type(&t, "\x03");
        usleep(1300 * 1000);
        ASSERT_EQ_INT(waitpid(t.pid, NULL, WNOHANG), 0); /* the first press did not stop it */
        term_type(&t, "\x03");
        TERM_EXPECT(&t, "does not stop at Ctrl-C; exiting");
        ASSERT_EQ_INT(term_close(&t), 128 + SIGINT);
    }
}

/* Each line typed shows once, and a fresh prompt follows it, whether the
 * line printed a value, printed with print() or printed nothing. libedit's
 * callback mode had left the terminal cooked after a line: the next line
 * was echoed twice, and the prompt redrawn after a value held the line just
 * run ("[1] 42" then "weft> 1 + 41"). */
TEST(repl_shows_each_line_once_and_a_fresh_prompt_after_it)
{
    term t;
    ASSERT_EQ_INT(term_open(&t, ""), 0);
    TERM_EXPECT(&t, "weft> ");
    term_type(&t, "1 + 41\r");
    TERM_EXPECT(&t, "] 42\r\nweft> ");
    term_type(&t, "x = 5\r");
    TERM_EXPECT(&t, "x = 5\r\nweft> ");
    term_type(&t, "print('h' .. 'i')\r");
    TERM_EXPECT(&t, "\r\nhi\r\nweft> ");
    term_type(&t, "\x04");
    ASSERT_EQ_INT(term_close(&t), 0);
    t.seen[t.n] = 0;
    ASSERT_EQ_INT(count_of(t.seen, "1 + 41"), 1);
    ASSERT_EQ_INT(count_of(t.seen, "x = 5"), 1);
    ASSERT_EQ_INT(count_of(t.seen, "print('h' .. 'i')"), 1);
}

/* Ctrl-D typed the moment a statement's output shows — while libedit is
 * between a line's handler and the next, the terminal in its cooked mode
 * for an instant — still ends the REPL: in that mode the terminal's own
 * end-of-file key is off (it made the byte a NUL, and the REPL ran on), and
 * when the REPL ends the terminal has its settings back, Ctrl-D included.
 * Each round is a new REPL; the instant is short, so rounds are many. */
TEST(repl_ctrl_d_right_after_output_or_os_exit_ends_it_and_restores_the_terminal)
{
    for (int i = 0; i < 200; i++) {
        term t;
        ASSERT_EQ_INT(term_open(&t, ""), 0);
        TERM_EXPECT(&t, "weft> ");
        term_type(&t, "print('o' .. 'k')\r");
        TERM_EXPECT(&t, "ok");
        term_type(&t, "\x04");
        if (!term_expect(&t, "weft> ")) { /* the prompt after the line shows before the end */
            kill(t.pid, SIGKILL);
            term_close(&t);
            TEST_FAIL_("round %d: no prompt", i);
        }
        const int st = term_wait(&t);
        struct termios tio;
        const int got = tcgetattr(t.fd, &tio); /* the pair's settings, as the REPL left them */
        close(t.fd);
        if (st != 0) TEST_FAIL_("round %d: Ctrl-D did not end the REPL (status %d)", i, st);
        ASSERT_EQ_INT(got, 0);
        ASSERT_EQ_INT(tio.c_cc[VEOF], 4); /* Ctrl-D, as forkpty set it up */
        ASSERT(tio.c_lflag & ICANON);
    }
    /* os.exit() in a statement: the same, and the history is saved — its
     * latest 1000 lines (here a file of 1200 before) */
    FILE *hf = fopen("/tmp/.weft_history", "w");
    ASSERT(hf != NULL);
    fputs("_HiStOrY_V2_\n", hf);
    for (int i = 0; i < 1200; i++) fprintf(hf, "old%d\n", i);
    fclose(hf);
    term t;
    ASSERT_EQ_INT(term_open(&t, ""), 0);
    TERM_EXPECT(&t, "weft> ");
    term_type(&t, "xyzzy=1\r");
    TERM_EXPECT(&t, "weft> ");
    term_type(&t, "os.exit(3)\r");
    const int st = term_wait(&t);
    struct termios tio;
    const int got = tcgetattr(t.fd, &tio);
    close(t.fd);
    ASSERT_EQ_INT(st, 3);
    ASSERT_EQ_INT(got, 0);
    ASSERT_EQ_INT(tio.c_cc[VEOF], 4);
    ASSERT((tio.c_lflag & (ICANON | ECHO)) == (ICANON | ECHO)); /* libedit's raw mode had neither */
    static char hist[1 << 15];
    FILE *f = fopen("/tmp/.weft_history", "r");
    ASSERT(f != NULL);
    const size_t hn = fread(hist, 1, sizeof hist - 1, f);
    fclose(f);
    hist[hn] = 0;
    ASSERT(strstr(hist, "\nxyzzy=1\nos.exit(3)\n"));
    ASSERT(strstr(hist, "\nold201\n") == NULL && strstr(hist, "\nold202\n")); /* 998 old lines + 2 */
    ASSERT_EQ_INT(count_of(hist, "\n"), 1001);
}

int main(void)
{
    const char *bin = getenv("WEFT_BINARY_DIR");
    char rel[4096];
    snprintf(rel, sizeof rel, "%s/weft", bin ? bin : ".");
    if (!realpath(rel, weft) || access(weft, X_OK) != 0) { /* absolute: run_in changes directory */
        fprintf(stderr, "no weft binary at %s\n", rel);
        return 1;
    }
    tiny_path(model_path, sizeof model_path, "runcli");
    snprintf(db, sizeof db, "%s.db", model_path);
    snprintf(script, sizeof script, "%s.chain.lua", model_path);
    tiny_spec sp = tiny_default();
    if (tiny_write(&sp, model_path) != 0 || write_file(script, chain_lua) != 0) return 1;
    RUN(help_usage_and_script_errors);
    RUN(a_script_prints_model_output_and_its_result);
    RUN(repl_runs_lines_and_prints_results_as_they_complete);
    RUN(repl_sandbox_budget_is_per_line_and_run_options_are_refused);
    RUN(repl_ctrl_c_interrupts_a_statement_or_clears_the_line);
    RUN(repl_second_ctrl_c_ends_a_statement_the_hook_cannot_stop);
    RUN(repl_shows_each_line_once_and_a_fresh_prompt_after_it);
    RUN(repl_ctrl_d_right_after_output_or_os_exit_ends_it_and_restores_the_terminal);
    RUN(sandboxed_scripts_cannot_escape_or_exhaust_the_host);
    RUN(time_limit_ends_runs_that_loop_wait_or_hang);
    RUN(a_run_stores_its_graph);
    RUN(a_killed_run_resumes_without_recomputing_what_completed);
    RUN(liveness_is_the_runs_lock_not_its_pid);
    RUN(duration_leaves_out_the_time_between_a_crash_and_the_resume);
    RUN(a_resume_that_cannot_start_leaves_the_run_as_it_was);
    RUN(a_resume_records_its_arguments_and_script);
    RUN(os_exit_ends_the_run_with_its_status);
    RUN(a_sandboxed_run_stays_sandboxed_when_resumed);
    RUN(a_resume_with_another_model_is_refused);
    RUN(runs_lists_a_database_in_a_read_only_directory);
    RUN(runs_json_shows_bytes_that_are_not_utf8_as_replacement_characters);
    unlink(model_path);
    unlink(script);
    char p[600];
    const char *sfx[] = {"", "-wal", "-shm", "-runlock"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", db, sfx[i]);
        unlink(p);
    }
    TEST_DONE();
}

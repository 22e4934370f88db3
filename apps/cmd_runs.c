/* weft runs — lists the workflow runs recorded in the database, or shows one. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "oai.h"
#include "weft/store.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: weft runs [options] [RUN_ID]\n\n"
            "Lists workflow runs, newest first: status, start time, duration (active\n"
            "time: a resumed run's attempts added up, without the time between them), calls\n"
            "completed of those in the graph, tokens generated and the script. With\n"
            "RUN_ID, shows that run with its arguments, limits (--sandbox, --time-limit),\n"
            "model (path and fingerprint), final output and error.\n"
            "An interrupted run (its process was killed) resumes with\n"
            "'weft run --resume RUN_ID'.\n\n"
            "      --db PATH            database (default: $WEFT_DB, else\n"
            "                           ~/.local/share/weft/weft.db)\n"
            "  -n, --limit N            newest N runs (default 20; 0 = all)\n"
            "      --json               JSON instead of the table\n"
            "  -h, --help\n");
}

static void fmt_duration(char *buf, size_t n, double s)
{
    if (s < 0) s = 0;
    if (s < 60)
        snprintf(buf, n, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

static void fmt_time(char *buf, size_t n, double t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!localtime_r(&tt, &tm) || !strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm))
        snprintf(buf, n, "-");
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds the run was active — its attempts added up, not the time between
 * a crash and the resume — or has been so far; < 0 when unknown
 * (interrupted: the store does not know when its process died). */
static double run_seconds(const weft_store_run *r)
{
    if (r->finished_at > 0) return r->active_seconds;
    if (r->status == WEFT_RUN_RUNNING) return r->active_seconds + wall_now() - r->attempt_started_at;
    return -1;
}

/* A JSON string of `s`: bytes that are not UTF-8 become U+FFFD, since a
 * script path, an error or a model's output may hold any bytes and jansson
 * refuses them. NULL only when out of memory. */
static json_t *text_json(const char *s) { return oai_string(s, strlen(s)); }

/* The limits a run's script runs under (and runs under again on resume);
 * null for none. */
static json_t *limits_json(const weft_store_run_limits *l)
{
    return json_pack("{s:b, s:o, s:o, s:o}", "sandbox", l->sandboxed, "mem_limit",
                     l->mem_limit > 0 ? json_integer(l->mem_limit) : json_null(), "instr_limit",
                     l->instr_limit > 0 ? json_integer(l->instr_limit) : json_null(), "time_limit",
                     l->time_limit > 0 ? json_real(l->time_limit) : json_null());
}

/* The limits as the text view shows them. */
static void fmt_limits(char *buf, size_t n, const weft_store_run_limits *l)
{
    int k = l->sandboxed ? snprintf(buf, n, "sandboxed: %lld MiB, %lld instructions",
                                    (long long)(l->mem_limit >> 20), (long long)l->instr_limit)
                         : snprintf(buf, n, "not sandboxed");
    if (l->time_limit > 0 && k > 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, ", time limit %g s", l->time_limit);
}

/* One run as a JSON object; NULL when out of memory. */
static json_t *run_json(const weft_store_run *r)
{
    json_t *args = r->args_json ? json_loads(r->args_json, 0, NULL) : NULL;
    double secs = run_seconds(r);
    json_t *o = json_pack(
        "{s:I, s:s, s:o, s:s, s:o, s:f, s:o, s:o, s:I, s:I, s:I, s:I, s:i, s:I}", "id",
        (json_int_t)r->id, "status", weft_run_status_name(r->status), "script",
        text_json(r->script_path ? r->script_path : ""), "script_hash", r->script_hash ? r->script_hash : "",
        "args", args ? args : json_object(), "started_at", r->started_at, "finished_at",
        r->finished_at > 0 ? json_real(r->finished_at) : json_null(), "seconds",
        secs >= 0 ? json_real(secs) : json_null(), "calls_total", (json_int_t)r->calls_total,
        "calls_done", (json_int_t)r->calls_done, "calls_failed", (json_int_t)r->calls_failed,
        "tokens_generated", (json_int_t)r->tokens_generated, "resumes", r->resumes, "pid",
        (json_int_t)r->pid);
    if (!o) return NULL;
    json_t *model = r->model_hash ? json_pack("{s:s, s:o}", "hash", r->model_hash, "path",
                                              text_json(r->model_path ? r->model_path : ""))
                                  : json_null();
    if (json_object_set_new(o, "limits", limits_json(&r->limits)) != 0 ||
        json_object_set_new(o, "model", model) != 0 ||
        json_object_set_new(o, "error", r->error ? text_json(r->error) : json_null()) != 0 ||
        (r->output && json_object_set_new(o, "output", text_json(r->output)) != 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Prints a JSON value on one line; 0 or 1. */
static int print_json(json_t *j)
{
    if (!j || json_dumpf(j, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) != 0) {
        json_decref(j);
        fprintf(stderr, "weft runs: cannot format JSON\n");
        return 1;
    }
    putchar('\n');
    json_decref(j);
    return 0;
}

static int show_one(weft_store *s, int64_t id, int as_json)
{
    weft_store_run r;
    if (weft_store_run_get(s, id, &r) != 0) {
        fprintf(stderr, "weft runs: %s\n", weft_last_error());
        return 1;
    }
    int rc = 0;
    if (as_json) {
        rc = print_json(run_json(&r));
    } else {
        char started[64], dur[32] = "-", limits[160];
        fmt_time(started, sizeof started, r.started_at);
        fmt_limits(limits, sizeof limits, &r.limits);
        double secs = run_seconds(&r);
        if (secs >= 0) fmt_duration(dur, sizeof dur, secs);
        printf("run %lld\n"
               "  status    %s\n"
               "  script    %s\n"
               "  hash      %s\n"
               "  args      %s\n"
               "  started   %s\n"
               "  duration  %s\n"
               "  calls     %lld done, %lld failed, %lld in the graph\n"
               "  tokens    %lld generated\n"
               "  resumes   %d\n"
               "  limits    %s\n"
               "  model     %s%s%s%s\n",
               (long long)r.id, weft_run_status_name(r.status), r.script_path,
               *r.script_hash ? r.script_hash : "-", r.args_json, started, dur,
               (long long)r.calls_done, (long long)r.calls_failed, (long long)r.calls_total,
               (long long)r.tokens_generated, r.resumes, limits,
               r.model_path ? r.model_path : r.model_hash ? "?" : "- (not recorded)",
               r.model_hash ? " (" : "", r.model_hash ? r.model_hash : "", r.model_hash ? ")" : "");
        if (r.error) printf("  error     %s\n", r.error);
        if (r.output) printf("output:\n%s\n", r.output);
        if (r.status == WEFT_RUN_INTERRUPTED)
            printf("(interrupted: resume with 'weft run --resume %lld')\n", (long long)r.id);
    }
    weft_store_run_clear(&r);
    return rc;
}

static int list(weft_store *s, int limit, int as_json)
{
    weft_store_run *runs;
    size_t n;
    if (weft_store_runs_list(s, limit, &runs, &n) != 0) {
        fprintf(stderr, "weft runs: %s\n", weft_last_error());
        return 1;
    }
    int rc = 0;
    if (as_json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n && arr; i++)
            if (json_array_append_new(arr, run_json(&runs[i])) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        rc = print_json(arr);
    } else if (n == 0) {
        printf("no runs yet\n");
    } else {
        printf("%6s  %-11s  %-19s  %9s  %11s  %8s  %s\n", "ID", "STATUS", "STARTED",
               "DURATION", "CALLS", "TOKENS", "SCRIPT");
        for (size_t i = 0; i < n; i++) {
            const weft_store_run *r = &runs[i];
            char started[64], dur[32] = "-", calls[48];
            fmt_time(started, sizeof started, r->started_at);
            double secs = run_seconds(r);
            if (secs >= 0) fmt_duration(dur, sizeof dur, secs);
            snprintf(calls, sizeof calls, "%lld/%lld", (long long)r->calls_done,
                     (long long)r->calls_total);
            printf("%6lld  %-11s  %-19s  %9s  %11s  %8lld  %s\n", (long long)r->id,
                   weft_run_status_name(r->status), started, dur, calls,
                   (long long)r->tokens_generated, r->script_path);
        }
    }
    weft_store_runs_free(runs, n);
    return rc;
}

/* The database could be read only as an immutable snapshot (SQLite's
 * shared-memory file could not be created or written: a read-only
 * directory): says so on stderr, and what that leaves out. */
static void note_immutable(const char *path)
{
    char wal[4200];
    struct stat sb;
    snprintf(wal, sizeof wal, "%s-wal", path);
    const bool pending = stat(wal, &sb) == 0 && sb.st_size > 0;
    fprintf(stderr, "weft runs: %s: cannot create or write its -shm file (a read-only "
                    "directory?): read as it is on disk; nothing is written%s\n", path,
            pending ? " (the newest changes, still in its -wal file, are not shown)" : "");
}

int cmd_runs(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},   {"limit", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},       {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = NULL;
    int limit = 20, as_json = 0, c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': db = optarg; break;
        case 'n': {
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 0 || v > 1000000000) {
                fprintf(stderr, "weft runs: bad --limit '%s' (a number >= 0)\n", optarg);
                return 2;
            }
            limit = (int)v;
            break;
        }
        case 'j': as_json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int64_t id = 0;
    if (optind < argc) {
        long long v = strtoll(argv[optind], &end, 10);
        if (*end || end == argv[optind] || v <= 0 || optind + 1 < argc) {
            fprintf(stderr, "weft runs: unexpected argument '%s' (a run id is a number)\n",
                    argv[optind]);
            return 2;
        }
        id = v;
    }

    weft_store *s;
    int rc = weft_store_open(db, WEFT_STORE_READONLY, &s);
    if (rc == WEFT_ENOTFOUND) { /* no database or no runs table: nothing ran yet */
        if (id) {
            fprintf(stderr, "weft runs: no run %lld (%s)\n", (long long)id, weft_last_error());
            return 1;
        }
        if (as_json)
            printf("[]\n");
        else
            printf("no runs yet\n");
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "weft runs: %s\n", weft_last_error());
        return 1;
    }
    if (weft_store_immutable(s)) note_immutable(db ? db : weft_store_path(s));
    rc = id ? show_one(s, id, as_json) : list(s, limit, as_json);
    weft_store_close(s);
    return rc;
}

/* weft run / weft repl — Lua workflows over the orchestrator and the engine:
 * model, engine (its own thread), a libevent loop on this thread carrying
 * the orchestrator and the Lua state. */
#include <event2/event.h>
#include <event2/thread.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "weft/dsl.h"
#include "weft/sandbox.h"
#include "weft/store.h"

#define MAX_ARGS 64
/* --sandbox's --time-limit when none is given: the memory cap and the
 * instruction budget bound the Lua, not the LLM work a few instructions can
 * ask for (1000 calls x n=64 x 4000 tokens), nor the wall time. */
#define SANDBOX_TIME_LIMIT 600.0

typedef struct session_opts {
    const char *model_path;
    long n_threads, n_ctx, n_slots, kv_mb, prefill_cap, spec;
    bool sequential, stats, verbose, no_store, sandbox;
    long mem_limit_mb;      /* 0: not given */
    long long instr_limit;  /* 0: not given */
    double time_limit;      /* seconds, 0: not given */
    weft_store_run_limits lim; /* what the script runs under: resolved from the above
                                  (and a resumed run's record) before session_open */
    const char *db_path;
    long long resume; /* run id, 0 = a new run */
    const char *keys[MAX_ARGS], *vals[MAX_ARGS];
    int n_args;
} session_opts;

typedef struct session {
    weft_model *m;
    weft_engine *e;
    struct event_base *base;
    orch *o;
    dsl *d;
    double t0, t_run; /* session opened, script started */
    char model_path[4096]; /* the model file, absolute when it resolves */
} session;

static const char common_help[] =
    "  -m, --model PATH     GGUF model (default: $WEFT_MODEL, else the default model)\n"
    "  -t, --threads N      compute threads (default: all cores)\n"
    "      --ctx N          context per call in tokens (default 4096)\n"
    "      --slots N        calls the engine runs at once (default 32)\n"
    "      --kv-mb N        KV cache size in MiB (default 512)\n"
    "      --prefill-cap K  prompt tokens per engine step while calls decode (default 0:\n"
    "                       no cap, the whole 256-token step, for throughput)\n"
    "      --spec N         speculative decoding: up to N draft tokens a call and step,\n"
    "                       looked up in its prompt and output and checked in the\n"
    "                       same step, so the output is the same (default 8; 0: off)\n"
    "      --sequential     issue calls one at a time, each awaited before the next\n"
    "                       (what a request-level client does; for comparison)\n"
    "      --stats          print a JSON line of run statistics to stderr at the end\n"
    "  -v, --verbose        engine and timing details to stderr\n"
    "  -h, --help           this help\n";

static void session_close(session *s)
{
    dsl_destroy(s->d);
    orch_destroy(s->o);
    if (s->base) event_base_free(s->base);
    weft_engine_destroy(s->e);
    weft_model_free(s->m);
    memset(s, 0, sizeof *s);
}

static int session_open(const char *cmd, const session_opts *op, session *s)
{
    memset(s, 0, sizeof *s);
    s->t0 = weft_now();
    char pathbuf[4096];
    const char *path = op->model_path ? op->model_path : weft_default_model_path(pathbuf, sizeof pathbuf);
    if (!realpath(path, s->model_path)) snprintf(s->model_path, sizeof s->model_path, "%s", path);
    if (weft_model_load(path, &s->m) < 0) {
        fprintf(stderr, "weft %s: %s\n", cmd, weft_last_error());
        if (!op->model_path && !getenv("WEFT_MODEL"))
            fprintf(stderr, "(the default model is installed by scripts/setup.sh)\n");
        return -1;
    }
    weft_engine_params ep = weft_engine_default_params();
    ep.ctx.n_threads = (int32_t)op->n_threads;
    ep.ctx.n_ctx = (int32_t)op->n_ctx;
    ep.ctx.n_seq_max = (int32_t)op->n_slots;
    ep.ctx.kv_mem = (size_t)op->kv_mb << 20;
    ep.prefix_cache = true;
    /* a workflow is mostly throughput work: whole prefill chunks even while
     * other calls decode (the engine's default, 64, favours interactive TPOT) */
    ep.prefill_cap = (int32_t)op->prefill_cap;
    ep.spec_max = (int32_t)op->spec;
    orch_params p = orch_default_params();
    p.sequential = op->sequential;
    weft_sandbox_params sb = {.sandboxed = false}; /* the whole library, no caps */
    if (op->lim.sandboxed) {
        sb = weft_sandbox_default_params();
        sb.mem_limit = (size_t)op->lim.mem_limit;
        sb.instr_limit = (uint64_t)op->lim.instr_limit;
    }
    sb.time_limit = op->lim.time_limit;
    if (evthread_use_pthreads() < 0 || !(s->base = event_base_new()) ||
        weft_engine_create(s->m, &ep, &s->e) < 0 || orch_create(s->e, s->m, s->base, &p, &s->o) < 0 ||
        dsl_create(s->o, s->m, s->base, &sb, &s->d) < 0) {
        fprintf(stderr, "weft %s: %s\n", cmd, s->base ? weft_last_error() : "cannot create an event loop");
        session_close(s);
        return -1;
    }
    for (int i = 0; i < op->n_args; i++) dsl_set_arg(s->d, op->keys[i], op->vals[i]);
    if (op->verbose)
        fprintf(stderr, "weft: %s loaded, engine %ld slots x %ld tokens, %ld MiB KV (%.2f s)\n",
                weft_model_name(s->m), op->n_slots, op->n_ctx, op->kv_mb, weft_now() - s->t0);
    return 0;
}

static void print_stats(const session *s)
{
    const weft_engine_stats es = weft_engine_get_stats(s->e);
    const orch_stats os = orch_get_stats(s->o);
    fprintf(stderr,
            "{\"wall_s\": %.3f, \"run_s\": %.3f, \"calls\": %lld, \"submitted\": %lld, \"from_store\": %lld, "
            "\"failed\": %lld, \"prompt_tokens\": %lld, \"cached_tokens\": %lld, "
            "\"computed_tokens\": %lld, \"generated_tokens\": %lld, \"engine_steps\": %lld, "
            "\"warm_heads\": %lld, \"warm_tokens\": %lld, \"drafted_tokens\": %lld, "
            "\"accepted_drafts\": %lld}\n",
            weft_now() - s->t0, weft_now() - s->t_run, (long long)os.n_calls, (long long)os.n_submitted,
            (long long)os.n_from_store, (long long)os.n_failed, (long long)es.n_prompt_tokens,
            (long long)es.n_cached_tokens, (long long)es.n_computed_tokens,
            (long long)es.n_generated, (long long)es.n_steps, (long long)os.n_warm,
            (long long)os.n_warm_tokens, (long long)es.n_drafted, (long long)es.n_draft_accepted);
}

/* True when `s` is valid UTF-8. The arguments are recorded with a run as
 * JSON, which holds only UTF-8 (jansson refuses the rest): a value that is
 * not would be lost from the record and a resume would run without it. */
static bool utf8_text(const char *s)
{
    json_t *j = json_string(s); /* NULL also when out of memory: then refusing is right too */
    json_decref(j);
    return j != NULL;
}

/* The limits the options ask for: --sandbox with the sandbox's defaults for
 * the caps not given, and --time-limit. */
static weft_store_run_limits asked_limits(const session_opts *op)
{
    weft_store_run_limits l = {.sandboxed = op->sandbox, .time_limit = op->time_limit};
    if (op->sandbox) {
        const weft_sandbox_params d = weft_sandbox_default_params();
        l.mem_limit = op->mem_limit_mb ? (int64_t)op->mem_limit_mb << 20 : (int64_t)d.mem_limit;
        l.instr_limit = op->instr_limit ? op->instr_limit : (int64_t)d.instr_limit;
    }
    return l;
}

/* One limit of a sandboxed run being resumed: the recorded `was` (0: none),
 * or `asked` (0: not given) when that is lower. Returns -1 (printed) when
 * `asked` is higher: a resume may tighten a sandbox, never loosen it. `unit`
 * converts to the option's unit for the message. */
static int lower_limit(const char *opt, double was, double asked, double unit, double *out)
{
    if (asked > 0 && was > 0 && asked > was) {
        fprintf(stderr, "weft run: the run is sandboxed with %s %g: a resume may lower it, not raise it\n",
                opt, was / unit);
        return -1;
    }
    *out = asked > 0 ? asked : was;
    return 0;
}

/* --mem-limit-mb and --instr-limit cap the sandbox: given to a session not
 * sandboxed they would cap nothing, so they are refused, not ignored.
 * Returns 0, or -1 (printed, `why` appended). */
static int caps_need_sandbox(const char *cmd, const session_opts *op, bool sandboxed, const char *why)
{
    if (sandboxed || !(op->mem_limit_mb || op->instr_limit)) return 0;
    fprintf(stderr, "weft %s: %s goes with --sandbox%s\n", cmd, op->mem_limit_mb ? "--mem-limit-mb" : "--instr-limit",
            why);
    return -1;
}

/* Sets op->lim, the limits the script of weft run runs under. A new run, or
 * a resumed one recorded unsandboxed (`rec`): what the options ask for, the
 * recorded time limit unless one is given. A resumed sandboxed run: its
 * recorded sandbox, whether or not --sandbox is given, each limit lowered
 * where an option asks for less. A sandbox with no time limit gets
 * SANDBOX_TIME_LIMIT. Returns 0, or -1 (printed) when an option asks for
 * more, or gives --mem-limit-mb or --instr-limit to a run not sandboxed. */
static int resolve_limits(session_opts *op, const weft_store_run_limits *rec)
{
    weft_store_run_limits l = asked_limits(op);
    if (rec && !rec->sandboxed && !op->time_limit) l.time_limit = rec->time_limit;
    if (rec && rec->sandboxed) {
        double mem, instr;
        l.sandboxed = true;
        if (lower_limit("--mem-limit-mb", (double)rec->mem_limit, (double)op->mem_limit_mb * (1 << 20),
                        1 << 20, &mem) < 0 ||
            lower_limit("--instr-limit", (double)rec->instr_limit, (double)op->instr_limit, 1, &instr) < 0 ||
            lower_limit("--time-limit", rec->time_limit, op->time_limit, 1, &l.time_limit) < 0)
            return -1;
        l.mem_limit = (int64_t)mem;
        l.instr_limit = (int64_t)instr;
    }
    if (caps_need_sandbox("run", op, l.sandboxed, rec ? " (the run being resumed is not sandboxed)" : "") < 0)
        return -1;
    if (l.sandboxed && l.time_limit <= 0) l.time_limit = SANDBOX_TIME_LIMIT;
    if (rec && rec->sandboxed)
        fprintf(stderr, "weft: run %lld is sandboxed: resuming it sandboxed (--mem-limit-mb %lld, "
                        "--instr-limit %lld, --time-limit %g)\n", op->resume,
                (long long)(l.mem_limit >> 20), (long long)l.instr_limit, l.time_limit);
    op->lim = l;
    return 0;
}

/* Parses the options both commands share; returns the index of the first
 * operand, or -1 (usage error, printed) or -2 (--help printed). */
static int parse_opts(const char *cmd, int argc, char **argv, session_opts *op,
                      void (*usage)(FILE *))
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"threads", required_argument, 0, 't'},
        {"ctx", required_argument, 0, 'C'},   {"slots", required_argument, 0, 'S'},
        {"kv-mb", required_argument, 0, 'K'}, {"sequential", no_argument, 0, 'q'},
        {"stats", no_argument, 0, 's'},       {"arg", required_argument, 0, 'a'},
        {"verbose", no_argument, 0, 'v'},     {"help", no_argument, 0, 'h'},
        {"db", required_argument, 0, 'D'},    {"resume", required_argument, 0, 'R'},
        {"no-store", no_argument, 0, 'N'},    {"sandbox", no_argument, 0, 'X'},
        {"mem-limit-mb", required_argument, 0, 'L'}, {"instr-limit", required_argument, 0, 'I'},
        {"prefill-cap", required_argument, 0, 'P'}, {"time-limit", required_argument, 0, 'T'},
        {"spec", required_argument, 0, 'G'},
        {0, 0, 0, 0}};
    memset(op, 0, sizeof *op);
    op->n_ctx = 4096;
    op->n_slots = 32;
    op->kv_mb = 512;
    op->spec = weft_engine_default_params().spec_max;
    char *end;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:t:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': op->model_path = optarg; break;
        case 't': op->n_threads = strtol(optarg, &end, 10); if (*end || op->n_threads < 0) goto bad; break;
        case 'C': op->n_ctx = strtol(optarg, &end, 10); if (*end || op->n_ctx < 16) goto bad; break;
        case 'S': op->n_slots = strtol(optarg, &end, 10); if (*end || op->n_slots < 1 || op->n_slots > 1024) goto bad; break;
        case 'K': op->kv_mb = strtol(optarg, &end, 10); if (*end || op->kv_mb < 1) goto bad; break;
        case 'q': op->sequential = true; break;
        case 's': op->stats = true; break;
        case 'v': op->verbose = true; break;
        case 'D': op->db_path = optarg; break;
        case 'N': op->no_store = true; break;
        case 'X': op->sandbox = true; break;
        case 'G': op->spec = strtol(optarg, &end, 10); if (*end || op->spec < 0 || op->spec > 64) goto bad; break;
        case 'P': op->prefill_cap = strtol(optarg, &end, 10); if (*end || op->prefill_cap < 0) goto bad; break;
        case 'L': op->mem_limit_mb = strtol(optarg, &end, 10); if (*end || op->mem_limit_mb < 1 || op->mem_limit_mb > 1L << 24) goto bad; break;
        case 'I': op->instr_limit = strtoll(optarg, &end, 10); if (*end || op->instr_limit < 1) goto bad; break;
        case 'T': op->time_limit = strtod(optarg, &end); if (*end || !(op->time_limit > 0) || op->time_limit > 1e7) goto bad; break;
        case 'R': op->resume = strtoll(optarg, &end, 10); if (*end || op->resume < 1) goto bad; break;
        case 'a': {
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                fprintf(stderr, "weft %s: --arg wants KEY=VALUE, got '%s'\n", cmd, optarg);
                return -1;
            }
            if (op->n_args == MAX_ARGS) {
                fprintf(stderr, "weft %s: at most %d --arg\n", cmd, MAX_ARGS);
                return -1;
            }
            *(char *)eq = 0; /* argv is ours to split */
            if (!utf8_text(optarg) || !utf8_text(eq + 1)) {
                fprintf(stderr, "weft %s: --arg %s: not valid UTF-8 (arguments are text)\n", cmd,
                        utf8_text(optarg) ? optarg : "KEY=VALUE");
                return -1;
            }
            op->keys[op->n_args] = optarg;
            op->vals[op->n_args++] = eq + 1;
            break;
        }
        case 'h': usage(stdout); return -2;
        default: usage(stderr); return -1;
        }
    }
    return optind;
bad:
    fprintf(stderr, "weft %s: bad option value '%s' (see --help)\n", cmd, optarg);
    return -1;
}

static void run_usage(FILE *f)
{
    fprintf(f,
            "usage: weft run SCRIPT.lua [--arg KEY=VALUE]... [options]\n"
            "       weft run --resume RUN_ID [options]\n\n"
            "Runs a Lua workflow: the script runs as a coroutine; its LLM calls form a graph\n"
            "that weft batches, orders by what the script awaits (v:get()) and runs with\n"
            "shared prompt prefixes computed once. The run ends when the script has ended\n"
            "and every call it made has completed; a string the script returns is printed.\n"
            "Exit 0, 1 if the script failed; os.exit(N) in the script ends the run there and\n"
            "exits N (the run recorded finished on 0, failed otherwise).\n\n"
            "The run and every completed call are recorded in the store as they complete\n"
            "('weft runs' lists runs). A run that was interrupted (killed, crashed) or\n"
            "failed resumes with --resume: the script runs again from the start and every\n"
            "call completed before is served from the store, not recomputed.\n\n"
            "      --arg KEY=VALUE  sets arg.KEY in the script (repeatable; UTF-8 text); on\n"
            "                       --resume the run's recorded arguments are used unless\n"
            "                       given again\n"
            "      --resume RUN_ID  resume a run (its script, unless SCRIPT is given)\n"
            "      --db PATH        store database (default: $WEFT_DB, else\n"
            "                       ~/.local/share/weft/weft.db)\n"
            "      --no-store       record nothing (benchmarks, throwaway runs)\n"
            "      --sandbox        run an untrusted script: no io, os (but time), package,\n"
            "                       require, debug, bytecode or string.dump; a memory cap and\n"
            "                       an instruction budget, past which the run fails clearly,\n"
            "                       16 MB of print output,\n"
            "                       and --time-limit 600 unless a --time-limit is given.\n"
            "                       Recorded with the run: --resume runs it sandboxed again,\n"
            "                       with its limits or lower ones (higher ones are refused)\n"
            "      --mem-limit-mb N with --sandbox: memory cap (default 64)\n"
            "      --instr-limit N  with --sandbox: Lua instructions (default 1e9)\n"
            "      --time-limit S   end the run after S seconds of wall clock (with or\n"
            "                       without --sandbox): the script stops with a clear error,\n"
            "                       its calls are cancelled, the run is recorded as failed\n"
            "                       (resumable); a script stuck inside one library call\n"
            "                       (a pathological string.find) is stopped by exiting the\n"
            "                       process 3 s later. Recorded with the run: --resume\n"
            "                       applies it again unless given again\n%s",
            common_help);
}

/* ---- durable runs: the orchestrator's hooks over the store ---- */

typedef struct run_store {
    weft_store *st;
    int64_t run;
} run_store;

static void key_hex(uint64_t key, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)key); }

static int store_lookup(void *user, uint64_t key, const char *name, char **value, size_t *len)
{
    run_store *rs = user;
    char k[17];
    key_hex(key, k);
    if (weft_store_call_add(rs->st, rs->run, k, name, NULL) < 0)
        fprintf(stderr, "weft run: store: %s\n", weft_last_error());
    return weft_store_call_lookup(rs->st, rs->run, k, value, len, NULL) == 0 ? 1 : 0;
}

static void store_edge(void *user, uint64_t src, uint64_t dst)
{
    run_store *rs = user;
    char s[17], d[17];
    key_hex(src, s);
    key_hex(dst, d);
    if (weft_store_edge_add(rs->st, rs->run, s, d) < 0)
        fprintf(stderr, "weft run: store: %s\n", weft_last_error());
}

/* A call sent (error NULL) or failed: its status in the store, so that
 * `weft runs` counts failed calls and shows which were running. */
static void store_status(void *user, uint64_t key, const char *error)
{
    run_store *rs = user;
    char k[17];
    key_hex(key, k);
    const weft_call_status st = error ? WEFT_CALL_FAILED : WEFT_CALL_RUNNING;
    if (weft_store_call_set_status(rs->st, rs->run, k, st, error) < 0)
        fprintf(stderr, "weft run: store: %s\n", weft_last_error());
}

static void store_record(void *user, uint64_t key, const char *value, size_t len,
                         const orch_call_info *ci)
{
    run_store *rs = user;
    char k[17];
    key_hex(key, k);
    weft_store_call_stats cs = {.n_prompt = ci->n_prompt, .n_cached = ci->n_cached,
                                .n_generated = ci->n_generated, .seconds = ci->t_done - ci->t_submit};
    if (weft_store_call_complete(rs->st, rs->run, k, value, len, &cs) < 0)
        fprintf(stderr, "weft run: store: the value of call %s was not recorded (a resume computes it "
                        "again): %s\n", k, weft_last_error());
}

/* Records the end of the run. When the store refuses (an output or error
 * over SQLite's length limit is WEFT_ERANGE), records the run failed with
 * that reason instead, so that it neither reads as finished with no output
 * nor stays marked running. Returns 0, or -1 (printed). */
static int run_finish(run_store *rs, const char *output, const char *error)
{
    if (weft_store_run_finish(rs->st, rs->run, output, error) == 0) return 0;
    char why[1200];
    snprintf(why, sizeof why, "the run's %s could not be recorded: %s", error ? "error" : "output",
             weft_last_error());
    fprintf(stderr, "weft run: %s\n", why);
    if (weft_store_run_finish(rs->st, rs->run, NULL, why) < 0)
        fprintf(stderr, "weft run: store: %s\n", weft_last_error());
    return -1;
}

/* dsl_on_exit: the script called os.exit. The run ends there, as the
 * script chose: finished (no output) with status 0, failed otherwise — not
 * left marked running to read as interrupted and be resumed. */
static void run_exit(void *user, int status)
{
    char why[96];
    snprintf(why, sizeof why, "the script called os.exit(%d)", status);
    (void)run_finish(user, NULL, status == EXIT_SUCCESS ? NULL : why);
}

/* The arguments as a JSON object's text, malloc'd; NULL (printed) when one
 * cannot be stored. */
static char *args_json(const session_opts *op)
{
    json_t *o = json_object();
    for (int i = 0; o && i < op->n_args; i++)
        if (json_object_set_new(o, op->keys[i], json_string(op->vals[i])) != 0) {
            json_decref(o);
            o = NULL;
        }
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (!s) fprintf(stderr, "weft run: cannot record the arguments as JSON\n");
    return s;
}

/* Hex hash of the file at `path`, malloc'd; NULL (errno set) when it cannot
 * be read whole. */
static char *script_hash(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL, *hex = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap = cap ? 2 * cap : 65536);
            if (!nb) goto done;
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0) break;
        n += r;
    }
    if (ferror(f)) {
        errno = EIO;
        goto done;
    }
    if ((hex = malloc(WEFT_STORE_HASH_HEX))) weft_store_hash_hex(buf, n, hex);
done:
    fclose(f);
    free(buf);
    return hex;
}

/* Resolves the script a run executes before anything is recorded: *abs gets
 * its absolute path (what the run records, so that a resume from another
 * directory finds it), *hash the hash of its text; both malloc'd. `recorded`:
 * the path came from the run's record. Returns 0, or -1 (printed) when it
 * cannot be read. */
static int script_resolve(const char *script, bool recorded, char **abs, char **hash)
{
    *hash = NULL;
    if (!(*abs = realpath(script, NULL)) || !(*hash = script_hash(*abs))) {
        fprintf(stderr, "weft run: cannot read the script %s: %s%s\n", script, strerror(errno),
                recorded && script[0] != '/'
                    ? " (recorded relative to the directory the run began in: give SCRIPT)"
                    : "");
        free(*abs);
        *abs = NULL;
        return -1;
    }
    return 0;
}

/* For --resume: reads the run's record into *prev without changing it, takes
 * its script unless one was given and its arguments that were not given
 * again (pointing into *prev_args, owned by the caller). Returns 0, or -1
 * (printed). */
static int run_prev_load(session_opts *op, weft_store *st, const char **script, weft_store_run *prev,
                         json_t **prev_args)
{
    if (weft_store_run_get(st, op->resume, prev) < 0) {
        fprintf(stderr, "weft run: --resume %lld: %s\n", op->resume, weft_last_error());
        return -1;
    }
    /* running: a live process holds the run's lock (its recorded pid alone
     * proves nothing: pids are reused). Checked again, atomically, when the
     * run is marked resumed; here so as not to load a model for nothing */
    if (prev->status == WEFT_RUN_RUNNING) {
        fprintf(stderr, "weft run: --resume %lld: run %lld is still running (pid %lld)\n", op->resume,
                op->resume, (long long)prev->pid);
        return -1;
    }
    if (!*script) *script = prev->script_path;
    *prev_args = json_loads(prev->args_json, 0, NULL);
    const char *k;
    json_t *v;
    json_object_foreach(*prev_args, k, v) {
        bool given = false;
        for (int i = 0; i < op->n_args; i++) given |= strcmp(op->keys[i], k) == 0;
        if (given || !json_is_string(v)) continue;
        if (op->n_args == MAX_ARGS) {
            fprintf(stderr, "weft run: --resume %lld: more than %d arguments with the recorded ones\n",
                    op->resume, MAX_ARGS);
            return -1;
        }
        op->keys[op->n_args] = k;
        op->vals[op->n_args++] = json_string_value(v);
    }
    return 0;
}

/* Begins the run, or marks the resumed one running: only once the script has
 * been read and the model loaded, so that a resume that cannot start leaves
 * the run as it was (a finished run keeps its output), and a resume with
 * another model than the run's is refused. Returns 0, or -1 (printed). */
static int run_record(const session_opts *op, const session *se, run_store *rs, const weft_store_run *prev,
                      const char *script, const char *abs, const char *hash, const char *args)
{
    /* what the run executes now: a resume records it too, so that the record
     * tells what its output was computed from; the model by its fingerprint
     * (weights and hyper-parameters), which a copy or a rename keeps */
    char model[17];
    snprintf(model, sizeof model, "%016llx", (unsigned long long)weft_model_fingerprint(se->m));
    const weft_store_run_spec spec = {abs, hash, args, op->lim, model, se->model_path};
    if (op->resume) {
        rs->run = op->resume;
        if (weft_store_run_resume_with(rs->st, rs->run, &spec, NULL) < 0) {
            fprintf(stderr, "weft run: --resume %lld: %s\n", op->resume, weft_last_error());
            return -1;
        }
        if (*prev->script_hash && strcmp(hash, prev->script_hash) != 0)
            fprintf(stderr, "weft run: %s changed since run %lld began: calls whose prompts "
                            "changed are computed again\n", script, op->resume);
        fprintf(stderr, "weft: resuming run %lld (%s, %lld of %lld calls done)\n", op->resume,
                weft_run_status_name(prev->status), (long long)prev->calls_done,
                (long long)prev->calls_total);
        return 0;
    }
    if (weft_store_run_begin_with(rs->st, &spec, &rs->run) < 0) {
        fprintf(stderr, "weft run: %s\n", weft_last_error());
        return -1;
    }
    fprintf(stderr, "weft: run %lld (resume with: weft run --resume %lld)\n", (long long)rs->run,
            (long long)rs->run);
    return 0;
}

/* --time-limit's last resort: the Lua hook cannot interrupt one long C
 * library call, so a thread exits the process if the run is still going
 * WATCHDOG_GRACE seconds past the limit — recording the run failed first,
 * as a run that hits its time limit otherwise is (not left "interrupted"). */
#define WATCHDOG_GRACE 3.0

typedef struct watchdog {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, started;
    double until, limit; /* weft_now() time; seconds */
    long long run;       /* 0: not stored */
    weft_store *st;      /* the watchdog's own connection (a connection is used by one
                            thread, and the main thread has its own); NULL: not stored,
                            or it could not be opened */
} watchdog;

static void *watchdog_main(void *p)
{
    watchdog *w = p;
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        const double left = w->until - weft_now();
        if (left <= 0) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        const double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + left;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    if (!w->done) {
        char resume[96] = "", why[256];
        if (w->run) snprintf(resume, sizeof resume, "; resume with: weft run --resume %lld", w->run);
        snprintf(why, sizeof why, "time limit of %g s exceeded and the script did not stop (it is inside "
                                  "a library call that Lua cannot interrupt)", w->limit);
        fprintf(stderr, "weft run: %s: exiting%s\n", why, resume);
        /* the main thread is stuck in Lua, not in the store: this commits
         * (durably, before _exit) unless a writer holds the database for the
         * whole busy timeout */
        if (w->st && weft_store_run_finish(w->st, w->run, NULL, why) < 0)
            fprintf(stderr, "weft run: the run stays marked running: %s\n", weft_last_error());
        fflush(stderr);
        _exit(1);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Starts the watchdog when the run has a time limit. `rs`: the run's store
 * (NULL: not stored); the watchdog opens its own connection to the same
 * database here, on this thread, to record the run failed from its own. */
static void watchdog_start(watchdog *w, dsl *d, const run_store *rs)
{
    const weft_sandbox_usage u = weft_sandbox_get_usage(dsl_lua(d));
    if (u.deadline <= 0) return;
    if (rs && rs->st) {
        w->run = (long long)rs->run;
        if (weft_store_open(weft_store_path(rs->st), 0, &w->st) < 0)
            fprintf(stderr, "weft run: store: %s (a run the time-limit watchdog ends stays marked "
                            "running)\n", weft_last_error());
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->until = u.deadline + WATCHDOG_GRACE;
    w->limit = u.time_limit;
    w->started = pthread_create(&w->th, NULL, watchdog_main, w) == 0;
    if (!w->started) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
    }
}

static void watchdog_stop(watchdog *w)
{
    if (!w->started) {
        weft_store_close(w->st);
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    weft_store_close(w->st);
}

int cmd_run(int argc, char **argv)
{
    session_opts op;
    int first = parse_opts("run", argc, argv, &op, run_usage);
    if (first == -2) return 0;
    if (first < 0) return 2;
    const char *script = first < argc ? argv[first] : NULL;
    if (first + 1 < argc) {
        fprintf(stderr, "weft run: unexpected argument '%s' (script arguments go in --arg KEY=VALUE)\n",
                argv[first + 1]);
        return 2;
    }
    if (!script && !op.resume) {
        fprintf(stderr, "weft run: a script is required\n\n");
        run_usage(stderr);
        return 2;
    }
    if (op.resume && op.no_store) {
        fprintf(stderr, "weft run: --resume needs the store (drop --no-store)\n");
        return 2;
    }
    run_store rs = {0};
    weft_store_run prev = {0};
    json_t *prev_args = NULL;
    char *abs = NULL, *hash = NULL, *args = NULL;
    int rc = 1;
    session s = {0};
    /* everything that can stop the run from starting comes before the store
     * is written to */
    if (!op.no_store) {
        if (weft_store_open(op.db_path, 0, &rs.st) < 0) {
            fprintf(stderr, "weft run: %s\n", weft_last_error());
            goto out;
        }
        if (op.resume && run_prev_load(&op, rs.st, &script, &prev, &prev_args) < 0) goto out;
    }
    if (resolve_limits(&op, op.resume ? &prev.limits : NULL) < 0) {
        rc = 2;
        goto out;
    }
    if (script_resolve(script, script == prev.script_path, &abs, &hash) < 0) goto out;
    if (rs.st && !(args = args_json(&op))) goto out;
    if (session_open("run", &op, &s) < 0) goto out;
    if (rs.st && run_record(&op, &s, &rs, &prev, script, abs, hash, args) < 0) goto out;
    if (rs.st) {
        orch_hooks h = {.lookup = store_lookup, .record = store_record, .edge = store_edge,
                        .status = store_status,
                        .user = &rs};
        orch_set_hooks(s.o, &h);
        dsl_on_exit(s.d, run_exit, &rs);
    }
    s.t_run = weft_now();
    watchdog wd = {0};
    watchdog_start(&wd, s.d, &rs);
    const bool ok = dsl_run_file(s.d, script) == 0;
    watchdog_stop(&wd);
    rc = ok ? 0 : 1;
    if (rs.st && run_finish(&rs, dsl_result(s.d), ok ? NULL : weft_last_error()) < 0) rc = 1;
    if (ok && dsl_result(s.d)) printf("%s\n", dsl_result(s.d));
    if (op.stats) print_stats(&s);
out:
    session_close(&s);
    free(abs);
    free(hash);
    free(args);
    weft_store_run_clear(&prev);
    json_decref(prev_args);
    weft_store_close(rs.st);
    return rc;
}

static void repl_usage(FILE *f)
{
    fprintf(f,
            "usage: weft repl [options]\n\n"
            "Interactive Lua with the weft module. Each line runs as its own coroutine;\n"
            "variables a line returns print as they complete, tagged with the line's number.\n"
            "Line editing and history (~/.weft_history, the latest 1000 lines) on a terminal.\n"
            "Ctrl-C stops the line running (or clears the line being typed); a second\n"
            "Ctrl-C a second later ends the REPL when a line cannot be stopped (one long C\n"
            "call). Ctrl-D (or os.exit()) quits.\n"
            "Nothing is recorded in the runs store.\n\n"
            "      --arg KEY=VALUE  sets arg.KEY (repeatable)\n"
            "      --sandbox        the library of weft run --sandbox (no io, os but time,\n"
            "                       package, require, debug, bytecode or string.dump)\n"
            "      --mem-limit-mb N with --sandbox: the session's memory cap (default 64)\n"
            "      --instr-limit N  with --sandbox: Lua instructions for each line\n"
            "                       (default 1e9)\n%s",
            common_help);
}

int cmd_repl(int argc, char **argv)
{
    session_opts op;
    int first = parse_opts("repl", argc, argv, &op, repl_usage);
    if (first == -2) return 0;
    if (first < 0) return 2;
    if (first < argc) {
        fprintf(stderr, "weft repl: unexpected argument '%s'\n", argv[first]);
        return 2;
    }
    if (op.time_limit > 0 || op.resume || op.db_path || op.no_store) {
        fprintf(stderr, "weft repl: %s is for weft run (the REPL records nothing)\n",
                op.time_limit > 0 ? "--time-limit" : op.resume ? "--resume" : op.db_path ? "--db" : "--no-store");
        return 2;
    }
    if (caps_need_sandbox("repl", &op, op.sandbox, "") < 0) return 2;
    op.lim = asked_limits(&op);
    session s;
    if (session_open("repl", &op, &s) < 0) return 1;
    char hist[4096];
    const char *home = getenv("HOME");
    snprintf(hist, sizeof hist, "%s/.weft_history", home ? home : ".");
    s.t_run = weft_now();
    dsl_repl(s.d, home ? hist : NULL);
    if (op.stats) print_stats(&s);
    session_close(&s);
    return 0;
}

/* weft run / weft repl — Lua workflows over the orchestrator and the engine:
 * model, engine (its own thread), a libevent loop on this thread carrying
 * the orchestrator and the Lua state. */
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "weft/dsl.h"

#define MAX_ARGS 64

typedef struct session_opts {
    const char *model_path;
    long n_threads, n_ctx, n_slots, kv_mb;
    bool sequential, stats, verbose;
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
} session;

static const char common_help[] =
    "  -m, --model PATH     GGUF model (default: $WEFT_MODEL, else the default model)\n"
    "  -t, --threads N      compute threads (default: all cores)\n"
    "      --ctx N          context per call in tokens (default 2048)\n"
    "      --slots N        calls the engine runs at once (default 32)\n"
    "      --kv-mb N        KV cache size in MiB (default 512)\n"
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
    orch_params p = orch_default_params();
    p.sequential = op->sequential;
    if (evthread_use_pthreads() < 0 || !(s->base = event_base_new()) ||
        weft_engine_create(s->m, &ep, &s->e) < 0 || orch_create(s->e, s->m, s->base, &p, &s->o) < 0 ||
        dsl_create(s->o, s->m, s->base, &s->d) < 0) {
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
            "\"computed_tokens\": %lld, \"generated_tokens\": %lld, \"engine_steps\": %lld}\n",
            weft_now() - s->t0, weft_now() - s->t_run, (long long)os.n_calls, (long long)os.n_submitted,
            (long long)os.n_from_store, (long long)os.n_failed, (long long)es.n_prompt_tokens,
            (long long)es.n_cached_tokens, (long long)es.n_computed_tokens,
            (long long)es.n_generated, (long long)es.n_steps);
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
        {0, 0, 0, 0}};
    memset(op, 0, sizeof *op);
    op->n_ctx = 2048;
    op->n_slots = 32;
    op->kv_mb = 512;
    char *end;
    int c;
    optind = 1;
    /* "+": options end at the script, so that its own arguments stay its own */
    while ((c = getopt_long(argc, argv, "+m:t:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': op->model_path = optarg; break;
        case 't': op->n_threads = strtol(optarg, &end, 10); if (*end || op->n_threads < 0) goto bad; break;
        case 'C': op->n_ctx = strtol(optarg, &end, 10); if (*end || op->n_ctx < 16) goto bad; break;
        case 'S': op->n_slots = strtol(optarg, &end, 10); if (*end || op->n_slots < 1 || op->n_slots > 1024) goto bad; break;
        case 'K': op->kv_mb = strtol(optarg, &end, 10); if (*end || op->kv_mb < 1) goto bad; break;
        case 'q': op->sequential = true; break;
        case 's': op->stats = true; break;
        case 'v': op->verbose = true; break;
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
            "usage: weft run SCRIPT.lua [--arg KEY=VALUE]... [options]\n\n"
            "Runs a Lua workflow: the script runs as a coroutine; its LLM calls form a graph\n"
            "that weft batches, orders by what the script awaits (v:get()) and runs with\n"
            "shared prompt prefixes computed once. The run ends when the script has ended\n"
            "and every call it made has completed. Exit 0, 1 if the script failed.\n\n"
            "      --arg KEY=VALUE  sets arg.KEY in the script (repeatable)\n%s",
            common_help);
}

int cmd_run(int argc, char **argv)
{
    session_opts op;
    /* options may come before or after the script: gather them around it */
    int first = parse_opts("run", argc, argv, &op, run_usage);
    if (first == -2) return 0;
    if (first < 0) return 2;
    if (first >= argc) {
        fprintf(stderr, "weft run: a script is required\n\n");
        run_usage(stderr);
        return 2;
    }
    const char *script = argv[first];
    session_opts more;
    int rest = parse_opts("run", argc - first, argv + first, &more, run_usage);
    if (rest == -2) return 0;
    if (rest < 0) return 2;
    if (rest < argc - first) {
        fprintf(stderr, "weft run: unexpected argument '%s'\n", argv[first + rest]);
        return 2;
    }
    /* merge: later options win */
    if (more.model_path) op.model_path = more.model_path;
    if (more.n_threads) op.n_threads = more.n_threads;
    if (more.n_ctx != 2048) op.n_ctx = more.n_ctx;
    if (more.n_slots != 32) op.n_slots = more.n_slots;
    if (more.kv_mb != 512) op.kv_mb = more.kv_mb;
    op.sequential |= more.sequential;
    op.stats |= more.stats;
    op.verbose |= more.verbose;
    for (int i = 0; i < more.n_args && op.n_args < MAX_ARGS; i++) {
        op.keys[op.n_args] = more.keys[i];
        op.vals[op.n_args++] = more.vals[i];
    }
    session s;
    if (session_open("run", &op, &s) < 0) return 1;
    s.t_run = weft_now();
    const int rc = dsl_run_file(s.d, script);
    if (op.stats) print_stats(&s);
    session_close(&s);
    return rc == 0 ? 0 : 1;
}

static void repl_usage(FILE *f)
{
    fprintf(f,
            "usage: weft repl [options]\n\n"
            "Interactive Lua with the weft module. Each line runs as its own coroutine;\n"
            "variables a line returns print as they complete, tagged with the line's number.\n"
            "Line editing and history (~/.weft_history) on a terminal.\n\n"
            "      --arg KEY=VALUE  sets arg.KEY (repeatable)\n%s",
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

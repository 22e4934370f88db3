/* weft bench — drives the serving engine in-process with concurrent requests
 * built from real text and reports throughput, time to first token and time
 * per output token. */
#include <dirent.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "weft/engine.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: weft bench [options]\n\n"
            "Runs R requests through the engine, at most N at once, and reports aggregate\n"
            "throughput, time to first token (TTFT) and time per output token (TPOT).\n"
            "Prompts are cut from the arxiv articles of the data directory (mixed lengths).\n\n"
            "  -m, --model PATH         GGUF model (default: the default model)\n"
            "  -c, --concurrency N      requests in flight (default 16); 1 = one after another\n"
            "  -r, --requests R         requests in all (default 2N, at least 16)\n"
            "  -n, --max-tokens T       tokens generated per request (default 64; EOS ignored)\n"
            "      --prompt-min A       shortest prompt in tokens (default 32)\n"
            "      --prompt-max B       longest prompt in tokens (default 512)\n"
            "      --shared-prefix P    every prompt starts with the same P tokens (a system\n"
            "                           prompt), then its own 32-token question\n"
            "      --no-prefix-cache    turn off KV sharing between requests\n"
            "  -b, --batch N            tokens per engine step (default 256)\n"
            "      --prefill-cap K      prompt tokens per step while requests decode\n"
            "                           (default: the engine's; 0 = no cap)\n"
            "      --spec N             speculative decoding: up to N draft tokens a request\n"
            "                           and step (default: the engine's, 8; 0 = off)\n"
            "  -t, --threads N          compute threads (default: all cores)\n"
            "      --data DIR           data directory (default ../shared/data)\n"
            "      --json               one JSON line instead of the table\n"
            "      --dump FILE          write the requests (token ids, max tokens) as JSON lines,\n"
            "                           for bench/llama_seq.py to replay on llama.cpp\n"
            "  -h, --help\n");
}

typedef struct bench_req {
    double t_submit, t_first, t_end;
    int32_t n_gen;
    int status;
} bench_req;

typedef struct bench {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_flight;
    bench_req *reqs;
} bench;

typedef struct cb_arg {
    bench *b;
    int i;
} cb_arg;

static void on_event(const weft_event *ev, void *user)
{
    cb_arg *a = user;
    bench_req *r = &a->b->reqs[a->i];
    const double now = weft_now();
    if (!ev->done) {
        if (r->t_first == 0) r->t_first = now;
        return;
    }
    pthread_mutex_lock(&a->b->mu);
    r->t_end = now;
    r->n_gen = ev->n_generated;
    r->status = ev->status;
    a->b->in_flight--;
    pthread_cond_signal(&a->b->cv);
    pthread_mutex_unlock(&a->b->mu);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    int k = (int)(p * (n - 1) + 0.5);
    return v[k];
}

/* All arxiv articles' tokens, concatenated article by article. */
static int32_t *corpus(const tok_vocab *v, const char *data, int32_t *n_out)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/arxiv", data);
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int32_t *all = NULL, n = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        static char buf[1 << 17];
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        int32_t *ids = NULL, ni = 0;
        if (tok_encode(v, buf, len, false, false, &ids, &ni) != 0) continue;
        int32_t *grown = realloc(all, ((size_t)n + (size_t)ni) * sizeof *all);
        if (grown) {
            all = grown;
            memcpy(all + n, ids, (size_t)ni * sizeof *ids);
            n += ni;
        }
        weft_free(ids);
    }
    closedir(d);
    *n_out = n;
    return all;
}

int cmd_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},      {"concurrency", required_argument, 0, 'c'},
        {"requests", required_argument, 0, 'r'},   {"max-tokens", required_argument, 0, 'n'},
        {"prompt-min", required_argument, 0, 'A'}, {"prompt-max", required_argument, 0, 'B'},
        {"shared-prefix", required_argument, 0, 'P'}, {"no-prefix-cache", no_argument, 0, 'X'},
        {"threads", required_argument, 0, 't'},    {"data", required_argument, 0, 'D'},
        {"json", no_argument, 0, 'j'},             {"help", no_argument, 0, 'h'},
        {"dump", required_argument, 0, 'O'},       {"prefill-cap", required_argument, 0, 'K'},
        {"batch", required_argument, 0, 'b'},      {"spec", required_argument, 0, 'S'},
        {0, 0, 0, 0}};
    const char *model_path = NULL, *data = getenv("WEFT_DATA_DIR"), *dump_path = NULL;
    int conc = 16, n_req = 0, max_tokens = 64, pmin = 32, pmax = 512, shared = 0, prefix = 1,
        threads = 0, json = 0, c, cap = -1, batch = 0, lengths_given = 0, spec = -1;
    if (!data) data = "../shared/data";
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:c:r:n:t:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'c': conc = atoi(optarg); break;
        case 'r': n_req = atoi(optarg); break;
        case 'n': max_tokens = atoi(optarg); break;
        case 'A': pmin = atoi(optarg); lengths_given = 1; break;
        case 'B': pmax = atoi(optarg); lengths_given = 1; break;
        case 'P': shared = atoi(optarg); break;
        case 'X': prefix = 0; break;
        case 't': threads = atoi(optarg); break;
        case 'D': data = optarg; break;
        case 'j': json = 1; break;
        case 'O': dump_path = optarg; break;
        case 'K': cap = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'S': spec = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (conc < 1 || conc > 1024 || max_tokens < 1 || pmin < 1 || pmax < pmin || shared < 0 ||
        batch < 0 || batch > 65536 || spec > 64) {
        fprintf(stderr, "weft bench: bad option values (see --help)\n");
        return 2;
    }
    if (shared && lengths_given) { /* they would be ignored */
        fprintf(stderr, "weft bench: --shared-prefix sets the prompts' length (P + 32 tokens): "
                        "--prompt-min and --prompt-max do not go with it\n");
        return 2;
    }
    if (n_req <= 0) n_req = 2 * conc < 16 ? 16 : 2 * conc;
    char pathbuf[4096];
    if (!model_path) model_path = weft_default_model_path(pathbuf, sizeof pathbuf);
    weft_model *m = NULL;
    fprintf(stderr, "weft bench: loading %s\n", model_path);
    if (weft_model_load(model_path, &m) != 0) {
        fprintf(stderr, "weft bench: %s\n", weft_last_error());
        return 1;
    }
    int32_t n_corpus = 0;
    int32_t *all = corpus(weft_model_vocab(m), data, &n_corpus);
    const int32_t longest = shared ? shared + 32 : pmax;
    if (!all || n_corpus < longest * 2) {
        fprintf(stderr, "weft bench: no arxiv text under %s\n", data);
        weft_model_free(m);
        free(all);
        return 1;
    }
    weft_engine_params ep = weft_engine_default_params();
    ep.ctx.n_seq_max = conc;
    ep.ctx.n_ctx = longest + max_tokens + 16;
    ep.ctx.n_threads = threads;
    ep.prefix_cache = prefix;
    if (cap >= 0) ep.prefill_cap = cap;
    if (batch > 0) ep.ctx.n_batch = batch;
    if (spec >= 0) ep.spec_max = spec;
    weft_engine *e = NULL;
    if (weft_engine_create(m, &ep, &e) != 0) {
        fprintf(stderr, "weft bench: %s\n", weft_last_error());
        weft_model_free(m);
        free(all);
        return 1;
    }
    bench b = {.reqs = calloc((size_t)n_req, sizeof(bench_req))};
    cb_arg *args = calloc((size_t)n_req, sizeof *args);
    int32_t *ptoks = malloc((size_t)longest * sizeof *ptoks);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    fprintf(stderr, "weft bench: %d requests, concurrency %d, %d tokens each, prompts %s\n", n_req,
            conc, max_tokens, shared ? "with a shared prefix" : "of mixed lengths");
    FILE *dump = NULL;
    if (dump_path && !(dump = fopen(dump_path, "w"))) {
        fprintf(stderr, "weft bench: cannot write %s\n", dump_path);
        return 1;
    }
    uint32_t seed = 12345;
    const double t0 = weft_now();
    int64_t prompt_tokens = 0;
    for (int i = 0; i < n_req; i++) {
        seed = seed * 1103515245u + 12345u;
        int32_t len, off = (int32_t)((seed >> 4) % (uint32_t)(n_corpus - longest));
        if (shared) {
            memcpy(ptoks, all, (size_t)shared * sizeof *ptoks);
            memcpy(ptoks + shared, all + shared + off % (n_corpus - longest - shared), 32 * sizeof *ptoks);
            len = shared + 32;
        } else {
            len = pmin + (int32_t)((seed >> 12) % (uint32_t)(pmax - pmin + 1));
            memcpy(ptoks, all + off, (size_t)len * sizeof *ptoks);
        }
        prompt_tokens += len;
        if (dump) {
            fprintf(dump, "{\"max_tokens\": %d, \"tokens\": [", max_tokens);
            for (int32_t k = 0; k < len; k++) fprintf(dump, k ? ",%d" : "%d", ptoks[k]);
            fprintf(dump, "]}\n");
        }
        pthread_mutex_lock(&b.mu);
        while (b.in_flight >= conc) pthread_cond_wait(&b.cv, &b.mu);
        b.in_flight++;
        pthread_mutex_unlock(&b.mu);
        args[i] = (cb_arg){&b, i};
        weft_request r = {.tokens = ptoks, .n_tokens = len, .sampling = weft_sampling_greedy(),
                          .max_tokens = max_tokens, .ignore_eos = true};
        b.reqs[i].t_submit = weft_now();
        if (weft_engine_submit(e, &r, on_event, &args[i], NULL) != 0) {
            fprintf(stderr, "weft bench: request %d: %s\n", i, weft_last_error());
            pthread_mutex_lock(&b.mu);
            b.in_flight--;
            b.reqs[i].status = -1;
            pthread_mutex_unlock(&b.mu);
        }
        if ((i + 1) % (n_req / 4 > 0 ? n_req / 4 : 1) == 0)
            fprintf(stderr, "weft bench: %d/%d submitted (%.1f s)\n", i + 1, n_req, weft_now() - t0);
    }
    weft_engine_wait_idle(e);
    const double wall = weft_now() - t0;
    if (dump) fclose(dump);
    double *ttft = malloc((size_t)n_req * sizeof *ttft), *tpot = malloc((size_t)n_req * sizeof *tpot);
    int n_ok = 0, n_tp = 0;
    int64_t gen = 0;
    for (int i = 0; i < n_req; i++) {
        bench_req *r = &b.reqs[i];
        if (r->status != 0 || r->n_gen == 0) continue;
        gen += r->n_gen;
        ttft[n_ok++] = r->t_first - r->t_submit;
        if (r->n_gen > 1) tpot[n_tp++] = (r->t_end - r->t_first) / (r->n_gen - 1);
    }
    weft_engine_stats st = weft_engine_get_stats(e);
    const double t50 = pct(ttft, n_ok, 0.5), t99 = pct(ttft, n_ok, 0.99);
    const double p50 = pct(tpot, n_tp, 0.5), p99 = pct(tpot, n_tp, 0.99);
    if (json) {
        printf("{\"concurrency\": %d, \"requests\": %d, \"ok\": %d, \"max_tokens\": %d, "
               "\"prefix_cache\": %s, \"shared_prefix\": %d, \"wall_s\": %.3f, "
               "\"gen_tokens\": %lld, \"gen_tps\": %.2f, \"prompt_tokens\": %lld, "
               "\"cached_tokens\": %lld, \"ttft_p50\": %.4f, \"ttft_p99\": %.4f, "
               "\"tpot_p50\": %.4f, \"tpot_p99\": %.4f, \"spec\": %d, \"drafted\": %lld, "
               "\"accepted\": %lld, \"steps\": %lld}\n",
               conc, n_req, n_ok, max_tokens, prefix ? "true" : "false", shared, wall,
               (long long)gen, gen / wall, (long long)prompt_tokens, (long long)st.n_cached_tokens,
               t50, t99, p50, p99, (int)ep.spec_max, (long long)st.n_drafted, (long long)st.n_draft_accepted,
               (long long)st.n_steps);
    } else {
        printf("requests %d (%d ok), concurrency %d, %d tokens each, prefix cache %s\n", n_req,
               n_ok, conc, max_tokens, prefix ? "on" : "off");
        printf("wall %.2f s, generated %lld tokens: %.1f tok/s; prompt tokens %lld (%lld from cache)\n",
               wall, (long long)gen, gen / wall, (long long)prompt_tokens,
               (long long)st.n_cached_tokens);
        printf("TTFT p50 %.1f ms, p99 %.1f ms; TPOT p50 %.1f ms, p99 %.1f ms\n", t50 * 1e3,
               t99 * 1e3, p50 * 1e3, p99 * 1e3);
        printf("speculative decoding %s: %lld draft tokens, %lld kept; %lld engine steps\n",
               ep.spec_max > 0 ? "on" : "off", (long long)st.n_drafted, (long long)st.n_draft_accepted,
               (long long)st.n_steps);
    }
    free(ttft);
    free(tpot);
    weft_engine_destroy(e);
    free(b.reqs);
    free(args);
    free(ptoks);
    free(all);
    weft_model_free(m);
    return n_ok == n_req ? 0 : 1;
}

/* Prometheus text exposition (version 0.0.4) of the server's counters. */
#include "serve_metrics.h"

#include <string.h>

static const double ttft_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double tpot_bounds[] = {0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5};

void metrics_init(metrics *m)
{
    memset(m, 0, sizeof *m);
    m->ttft.bounds = ttft_bounds;
    m->ttft.n_bounds = (int)(sizeof ttft_bounds / sizeof *ttft_bounds);
    m->tpot.bounds = tpot_bounds;
    m->tpot.n_bounds = (int)(sizeof tpot_bounds / sizeof *tpot_bounds);
}

void metrics_http(metrics *m, const char *route, int status)
{
    for (int i = 0; i < m->n_http; i++)
        if (m->http[i].status == status && strcmp(m->http[i].route, route) == 0) {
            m->http[i].n++;
            return;
        }
    if (m->n_http == METRICS_MAX_SERIES) return; /* routes x statuses are few; never reached */
    m->http[m->n_http].route = route;
    m->http[m->n_http].status = status;
    m->http[m->n_http++].n = 1;
}

void metrics_observe(metrics_hist *h, double v)
{
    int b = 0;
    while (b < h->n_bounds && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->total++;
    h->sum += v;
}

static void hist(FILE *f, const char *name, const char *help, const metrics_hist *h)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    int64_t cum = 0;
    for (int b = 0; b < h->n_bounds; b++) {
        cum += h->counts[b];
        fprintf(f, "%s_bucket{le=\"%g\"} %lld\n", name, h->bounds[b], (long long)cum);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.6f\n%s_count %lld\n", name, (long long)h->total,
            name, h->sum, name, (long long)h->total);
}

static void one(FILE *f, const char *name, const char *type, const char *help, double v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

void metrics_render(const metrics *m, const weft_engine_stats *st, FILE *f)
{
    fprintf(f, "# HELP weft_http_requests_total HTTP responses by route and status.\n"
               "# TYPE weft_http_requests_total counter\n");
    for (int i = 0; i < m->n_http; i++)
        fprintf(f, "weft_http_requests_total{route=\"%s\",status=\"%d\"} %lld\n", m->http[i].route,
                m->http[i].status, (long long)m->http[i].n);
    one(f, "weft_requests_submitted_total", "counter", "Engine requests submitted (one per prompt, each with its n completions).",
        (double)st->n_requests);
    one(f, "weft_requests_finished_total", "counter", "Completions finished, cancelled ones included.",
        (double)st->n_finished);
    one(f, "weft_requests_cancelled_total", "counter", "Generation requests cancelled (client gone, shutdown).",
        (double)m->choices_cancelled);
    one(f, "weft_requests_running", "gauge", "Requests holding a sequence in the engine.", st->n_running);
    one(f, "weft_queue_depth", "gauge", "Requests waiting for admission.", st->n_waiting);
    one(f, "weft_streams_open", "gauge", "Server-sent event streams open.", (double)m->streams_open);
    one(f, "weft_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", (double)m->prompt_tokens);
    one(f, "weft_prompt_tokens_cached_total", "counter",
        "Prompt tokens of finished requests whose KV came from the prefix cache.", (double)m->cached_tokens);
    one(f, "weft_generation_tokens_total", "counter", "Tokens generated.", (double)m->generated_tokens);
    one(f, "weft_engine_generated_tokens_total", "counter", "Tokens sampled by the engine.",
        (double)st->n_generated);
    one(f, "weft_engine_computed_tokens_total", "counter", "Tokens run through the forward pass.",
        (double)st->n_computed_tokens);
    one(f, "weft_engine_draft_tokens_total", "counter",
        "Draft tokens run by speculative decoding.", (double)st->n_drafted);
    one(f, "weft_engine_draft_tokens_accepted_total", "counter",
        "Draft tokens kept as output.", (double)st->n_draft_accepted);
    one(f, "weft_engine_preempted_total", "counter", "Requests preempted for lack of KV blocks.",
        (double)st->n_preempted);
    one(f, "weft_prefix_cache_hit_rate", "gauge",
        "Share of admitted prompt tokens served from the prefix cache.",
        st->n_prompt_tokens > 0 ? (double)st->n_cached_tokens / (double)st->n_prompt_tokens : 0.0);
    one(f, "weft_kv_blocks_total", "gauge", "KV blocks in the pool.", st->blocks_total);
    one(f, "weft_kv_blocks_free", "gauge", "KV blocks free.", st->blocks_free);
    one(f, "weft_kv_blocks_used", "gauge", "KV blocks not free (held by requests or the prefix cache).",
        st->blocks_total - st->blocks_free);
    one(f, "weft_kv_blocks_cached", "gauge", "KV blocks registered in the prefix cache.", st->blocks_cached);
    hist(f, "weft_ttft_seconds", "Time from the HTTP request to the first generated token.", &m->ttft);
    hist(f, "weft_tpot_seconds", "Mean time per output token after the first, per request.", &m->tpot);
}

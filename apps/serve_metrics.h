/* apps/serve_metrics.h — what `weft serve` counts, rendered in the Prometheus
 * text format for GET /metrics. Loop thread only: no locking. */
#ifndef WEFT_APPS_SERVE_METRICS_H
#define WEFT_APPS_SERVE_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "weft/engine.h"

#define METRICS_MAX_BUCKETS 16
#define METRICS_MAX_SERIES 64

typedef struct metrics_hist {
    const double *bounds; /* upper bounds, ascending; +Inf is implied */
    int n_bounds;
    int64_t counts[METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative */
    int64_t total;
    double sum;
} metrics_hist;

typedef struct metrics {
    struct {
        const char *route; /* static */
        int status;
        int64_t n;
    } http[METRICS_MAX_SERIES];
    int n_http;
    int64_t prompt_tokens, cached_tokens, generated_tokens;
    int64_t choices_finished, choices_cancelled, streams_open;
    metrics_hist ttft, tpot;
} metrics;

void metrics_init(metrics *m);
/* Counts one HTTP response; route is a static string. */
void metrics_http(metrics *m, const char *route, int status);
void metrics_observe(metrics_hist *h, double v);
/* Writes every metric, with the engine's statistics, to f. */
void metrics_render(const metrics *m, const weft_engine_stats *st, FILE *f);

#endif

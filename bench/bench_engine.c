/*
 * bench_engine — weft's side of the engine benchmark, the same workload as
 * bench/llama_ref.py: the first arxiv article (by file name) tokenized and cut
 * to 512 tokens (--prompt P), prefilled as one batch (batches of 512 past
 * that); then 128 greedy tokens decoded one per forward pass, so the decode
 * figure is that of a P-token context. Each rep starts from an empty KV
 * cache; one untimed warm-up rep first. The timer covers the forward passes
 * only.
 *
 *   build/bench_engine [--model M] [--threads N] [--reps R] [--data DIR] [--prompt P]
 *
 * Prints progress to stderr and one JSON line to stdout.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft/model.h"
#include "weft/sampler.h"

#define N_BATCH 512
#define N_GEN 128

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *first_article(const char *data)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/arxiv", data);
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char *names[1024];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 1024;)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    closedir(d);
    if (n == 0) return NULL;
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, names[0]);
    for (int i = 0; i < n; i++) free(names[i]);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[sz] = 0;
    fclose(f);
    return buf;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    char model_buf[4096];
    const char *model_path = weft_default_model_path(model_buf, sizeof model_buf);
    const char *data = getenv("WEFT_DATA_DIR");
    int threads = 2, reps = 3, n_prompt = 512;
    if (!data) data = "../shared/data";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model_path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) n_prompt = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_engine [--model M] [--threads N] [--reps R] [--data DIR] "
                            "[--prompt P (16..8192 tokens, default 512)]\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (reps < 1 || reps > 100) reps = 3;
    if (n_prompt < 16 || n_prompt > 8192) {
        fprintf(stderr, "bench_engine: --prompt must be in 16..8192\n");
        return 2;
    }
    weft_model *m = NULL;
    if (weft_model_load(model_path, &m) != 0) {
        fprintf(stderr, "bench_engine: %s\n", weft_last_error());
        return 1;
    }
    char *text = first_article(data);
    if (!text) {
        fprintf(stderr, "bench_engine: no arxiv article under %s\n", data);
        return 1;
    }
    int32_t *ids = NULL, n_ids = 0;
    if (tok_encode(weft_model_vocab(m), text, strlen(text), false, false, &ids, &n_ids) != 0 ||
        n_ids < n_prompt) {
        fprintf(stderr, "bench_engine: tokenizing: %s (%d tokens)\n", weft_last_error(), n_ids);
        return 1;
    }
    weft_ctx_params cp = weft_ctx_default_params();
    cp.n_ctx = n_prompt + N_GEN < 1024 ? 1024 : n_prompt + N_GEN;
    cp.n_batch = n_prompt < N_BATCH ? n_prompt : N_BATCH;
    cp.n_threads = threads;
    weft_ctx *c = NULL;
    if (weft_ctx_create(m, &cp, &c) != 0) {
        fprintf(stderr, "bench_engine: %s\n", weft_last_error());
        return 1;
    }
    const int32_t n_vocab = weft_model_hparams(m)->n_vocab;
    int32_t *pos = malloc((size_t)n_prompt * sizeof *pos), *seq = calloc((size_t)n_prompt, sizeof *seq);
    int8_t *given = malloc((size_t)n_prompt);
    if (!pos || !seq || !given) {
        fprintf(stderr, "bench_engine: out of memory\n");
        return 1;
    }
    for (int i = 0; i < n_prompt; i++) pos[i] = i, given[i] = 1;
    double pf[101], dc[101];
    for (int r = -1; r < reps; r++) {
        weft_seq_truncate(c, 0, 0);
        weft_batch b = {.n = n_prompt, .tokens = ids, .pos = pos, .seq = seq, .prompt = given};
        double t0 = weft_now();
        if (weft_decode(c, &b) != 0) {
            fprintf(stderr, "bench_engine: %s\n", weft_last_error());
            return 1;
        }
        double t_pf = weft_now() - t0, t_dc = 0;
        int32_t tok = weft_argmax(weft_get_logits(c, 0), n_vocab);
        for (int i = 0; i < N_GEN; i++) {
            int32_t p = n_prompt + i, s = 0;
            weft_batch d = {.n = 1, .tokens = &tok, .pos = &p, .seq = &s};
            t0 = weft_now();
            if (weft_decode(c, &d) != 0) {
                fprintf(stderr, "bench_engine: %s\n", weft_last_error());
                return 1;
            }
            t_dc += weft_now() - t0;
            tok = weft_argmax(weft_get_logits(c, 0), n_vocab);
        }
        if (r < 0) {
            fprintf(stderr, "bench_engine: warm-up done\n");
            continue;
        }
        pf[r] = n_prompt / t_pf;
        dc[r] = N_GEN / t_dc;
        fprintf(stderr, "bench_engine: rep %d/%d prefill %.1f tok/s, decode %.1f tok/s\n", r + 1,
                reps, pf[r], dc[r]);
    }
    qsort(pf, (size_t)reps, sizeof *pf, cmp_dbl);
    qsort(dc, (size_t)reps, sizeof *dc, cmp_dbl);
    printf("{\"engine\": \"weft\", \"prefill_tps\": %.2f, \"decode_tps\": %.2f, "
           "\"prefill_tps_median\": %.2f, \"decode_tps_median\": %.2f, \"threads\": %d, "
           "\"n_prompt\": %d, \"n_gen\": %d, \"reps\": %d}\n",
           pf[reps - 1], dc[reps - 1], pf[reps / 2], dc[reps / 2], threads, n_prompt, N_GEN, reps);
    weft_ctx_destroy(c);
    weft_free(ids);
    free(pos);
    free(seq);
    free(given);
    free(text);
    weft_model_free(m);
    return 0;
}

/* weft generate — stream a completion of one prompt to stdout. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "weft/model.h"
#include "weft/sampler.h"

#define MAX_STOPS 16

static void usage(FILE *f)
{
    fprintf(f,
            "usage: weft generate [-m MODEL] -p PROMPT [options]\n\n"
            "Streams a completion of PROMPT to stdout.\n\n"
            "  -m, --model PATH       GGUF model (default: $WEFT_MODEL, else the default\n"
            "                         SmolLM2-135M-Instruct Q4_1 installed by scripts/setup.sh)\n"
            "  -p, --prompt TEXT      the prompt (raw text unless --chat)\n"
            "  -f, --file PATH        read the prompt from a file ('-' = stdin)\n"
            "      --chat             wrap the prompt as a user message in the model's chat\n"
            "                         template (an unknown template is an error: omit --chat\n"
            "                         to pass a raw prompt)\n"
            "      --system TEXT      system message for --chat\n"
            "  -n, --max-tokens N     tokens to generate (default 128; stops early at end of\n"
            "                         generation)\n"
            "      --temp T           temperature (default 0.8; 0 = greedy)\n"
            "      --top-k K          (default 40; 0 = off)\n"
            "      --top-p P          (default 0.95; 1 = off)\n"
            "      --min-p P          (default 0.05; 0 = off)\n"
            "      --repeat-penalty R (default 1 = off)\n"
            "      --seed S           (default: random, printed with --verbose)\n"
            "      --stop TEXT        stop before TEXT (repeatable, up to %d)\n"
            "      --ctx N            context size (default min(model's, 4096))\n"
            "  -t, --threads N        compute threads (default: all cores)\n"
            "      --special          parse special-token text in the prompt (with --chat, the\n"
            "                         template's own special tokens parse and the prompt's do not)\n"
            "      --logprobs         print each token with its log-probability to stderr\n"
            "  -v, --verbose          print load time and prefill/decode tokens/s to stderr\n"
            "  -h, --help             this help\n",
            MAX_STOPS);
}

static char *read_all(const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (cap - n < 2) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    if (f != stdin) fclose(f);
    if (buf) buf[n] = 0;
    return buf;
}

int cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"prompt", required_argument, 0, 'p'},
        {"file", required_argument, 0, 'f'},   {"chat", no_argument, 0, 'c'},
        {"system", required_argument, 0, 'S'}, {"max-tokens", required_argument, 0, 'n'},
        {"temp", required_argument, 0, 'T'},   {"top-k", required_argument, 0, 'k'},
        {"top-p", required_argument, 0, 'P'},  {"min-p", required_argument, 0, 'M'},
        {"repeat-penalty", required_argument, 0, 'R'},
        {"seed", required_argument, 0, 's'},   {"stop", required_argument, 0, 'x'},
        {"ctx", required_argument, 0, 'C'},    {"threads", required_argument, 0, 't'},
        {"special", no_argument, 0, 'e'},      {"logprobs", no_argument, 0, 'l'},
        {"verbose", no_argument, 0, 'v'},      {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model_path = NULL, *prompt = NULL, *prompt_file = NULL, *system_msg = NULL;
    const char *stops[MAX_STOPS];
    int n_stops = 0, chat = 0, special = 0, show_logprobs = 0, verbose = 0, seed_set = 0;
    long max_tokens = 128, n_ctx = 0, n_threads = 0;
    weft_sampling sp = weft_sampling_default();
    char *end;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:f:n:t:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'p': prompt = optarg; break;
        case 'f': prompt_file = optarg; break;
        case 'c': chat = 1; break;
        case 'S': system_msg = optarg; break;
        case 'n': max_tokens = strtol(optarg, &end, 10); if (*end || max_tokens < 0) goto bad; break;
        case 'T': sp.temperature = strtof(optarg, &end); if (*end) goto bad; break;
        case 'k': sp.top_k = (int32_t)strtol(optarg, &end, 10); if (*end) goto bad; break;
        case 'P': sp.top_p = strtof(optarg, &end); if (*end) goto bad; break;
        case 'M': sp.min_p = strtof(optarg, &end); if (*end) goto bad; break;
        case 'R': sp.repeat_penalty = strtof(optarg, &end); if (*end) goto bad; break;
        case 's': sp.seed = strtoull(optarg, &end, 10); seed_set = 1; if (*end) goto bad; break;
        case 'x':
            if (n_stops == MAX_STOPS) {
                fprintf(stderr, "weft generate: at most %d --stop strings\n", MAX_STOPS);
                return 2;
            }
            stops[n_stops++] = optarg;
            break;
        case 'C': n_ctx = strtol(optarg, &end, 10); if (*end || n_ctx < 0) goto bad; break;
        case 't': n_threads = strtol(optarg, &end, 10); if (*end || n_threads < 0) goto bad; break;
        case 'e': special = 1; break;
        case 'l': show_logprobs = 1; break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "weft generate: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (prompt && prompt_file) {
        fprintf(stderr, "weft generate: give the prompt once: -p TEXT or -f FILE, not both\n");
        return 2;
    }
    if (system_msg && !chat) {
        fprintf(stderr, "weft generate: --system goes with --chat (a raw prompt has no system message)\n");
        return 2;
    }
    if (!prompt && !prompt_file) {
        fprintf(stderr, "weft generate: a prompt is required (-p TEXT or -f FILE)\n\n");
        usage(stderr);
        return 2;
    }
    if (!seed_set) sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);

    char *file_text = NULL;
    if (prompt_file) {
        file_text = read_all(prompt_file);
        if (!file_text) {
            fprintf(stderr, "weft generate: cannot read %s\n", prompt_file);
            return 1;
        }
        prompt = file_text;
    }
    char pathbuf[4096];
    if (!model_path) model_path = weft_default_model_path(pathbuf, sizeof pathbuf);

    int rc = 1;
    weft_model *model = NULL;
    weft_ctx *ctx = NULL;
    weft_sampler *smp = NULL;
    char *text = NULL;
    int32_t *ids = NULL, n_ids = 0;

    double t0 = weft_now();
    if (verbose) fprintf(stderr, "weft: loading %s\n", model_path);
    if (weft_model_load(model_path, &model) < 0) {
        fprintf(stderr, "weft generate: %s\n", weft_last_error());
        if (!getenv("WEFT_MODEL") && strcmp(model_path, pathbuf) == 0)
            fprintf(stderr, "(the default model is installed by scripts/setup.sh)\n");
        goto out;
    }
    const weft_hparams *hp = weft_model_hparams(model);
    const tok_vocab *vocab = weft_model_vocab(model);
    if (verbose)
        fprintf(stderr, "weft: %s (%s, %d layers, dim %d, vocab %d) loaded in %.2f s\n",
                weft_model_name(model), weft_model_arch_name(model), hp->n_layer, hp->dim,
                hp->n_vocab, weft_now() - t0);

    if (chat) { /* the prompt cannot spell the template's control tokens */
        tok_chat_msg msgs[2];
        int n_msgs = 0;
        if (system_msg) msgs[n_msgs++] = (tok_chat_msg){"system", system_msg, 0};
        msgs[n_msgs++] = (tok_chat_msg){"user", prompt, 0};
        if (tok_chat_encode(vocab, msgs, n_msgs, true, NULL, NULL, &ids, &n_ids) < 0) {
            fprintf(stderr, "weft generate: %s (run without --chat to pass a raw prompt)\n",
                    weft_last_error());
            goto out;
        }
    } else if (tok_encode(vocab, prompt, strlen(prompt), true, special, &ids, &n_ids) < 0) {
        fprintf(stderr, "weft generate: tokenizing the prompt: %s\n", weft_last_error());
        goto out;
    }
    if (n_ids <= 0) {
        fprintf(stderr, "weft generate: the prompt is empty\n");
        goto out;
    }
    weft_ctx_params cp = weft_ctx_default_params();
    cp.n_ctx = (int32_t)n_ctx;
    cp.n_threads = (int32_t)n_threads;
    if (weft_ctx_create(model, &cp, &ctx) < 0) {
        fprintf(stderr, "weft generate: %s\n", weft_last_error());
        goto out;
    }
    const int32_t ctx_size = weft_ctx_params_of(ctx)->n_ctx;
    if (n_ids > ctx_size) {
        fprintf(stderr, "weft generate: the prompt has %d tokens, more than the context size %d\n",
                n_ids, ctx_size);
        goto out;
    }
    if (weft_sampler_create(&sp, hp->n_vocab, &smp) < 0) {
        fprintf(stderr, "weft generate: %s\n", weft_last_error());
        goto out;
    }
    if (verbose)
        fprintf(stderr, "weft: prompt %d tokens, context %d, %d threads, seed %llu\n", n_ids,
                ctx_size, weft_ctx_params_of(ctx)->n_threads, (unsigned long long)sp.seed);
    for (int32_t i = 0; i < n_ids; i++) weft_sampler_accept(smp, ids[i]);

    /* prefill */
    const size_t n_prompt = (uint32_t)n_ids;
    int32_t *pos = malloc(n_prompt * sizeof *pos), *seq = calloc(n_prompt, sizeof *seq);
    int8_t *given = malloc(n_prompt); /* every token a prompt token, as the engine marks them */
    if (!pos || !seq || !given) {
        free(pos);
        free(seq);
        free(given);
        fprintf(stderr, "weft generate: out of memory\n");
        goto out;
    }
    for (int32_t i = 0; i < n_ids; i++) pos[i] = i;
    memset(given, 1, n_prompt);
    weft_batch b = {.n = n_ids, .tokens = ids, .pos = pos, .seq = seq, .prompt = given};
    int drc = weft_decode(ctx, &b);
    free(pos);
    free(seq);
    free(given);
    if (drc < 0) {
        fprintf(stderr, "weft generate: %s\n", weft_last_error());
        goto out;
    }

    /* decode loop: text accumulates; what cannot start a stop string is flushed */
    size_t text_cap = 4096, text_len = 0, emitted = 0;
    text = malloc(text_cap);
    tok_utf8_stream us = {0};
    int32_t cur = n_ids;
    const char *why = "max tokens";
    for (long i = 0; i < max_tokens && text; i++) {
        float lp = 0.0f;
        const int32_t tok = weft_sampler_sample(smp, weft_get_logits(ctx, 0), show_logprobs ? &lp : NULL);
        if (tok_is_eog(vocab, tok)) {
            why = "end of generation";
            break;
        }
        char piece[256], out[256 + 8];
        int pl = tok_piece(vocab, tok, piece, sizeof piece, false);
        if (pl < 0) pl = 0;
        size_t ol = tok_utf8_push(&us, piece, (size_t)pl, out);
        if (show_logprobs) fprintf(stderr, "[%d %.4f %.*s]\n", tok, lp, pl, piece);
        if (text_len + ol + 1 > text_cap) {
            char *nt = realloc(text, text_cap = 2 * (text_len + ol + 1));
            if (!nt) break;
            text = nt;
        }
        memcpy(text + text_len, out, ol);
        text_len += ol;
        /* nothing before `emitted` can start a stop string: scan the tail only */
        size_t safe;
        int64_t at = weft_stop_find(text + emitted, text_len - emitted, stops, n_stops, &safe);
        safe += emitted;
        if (at >= 0) at += (int64_t)emitted;
        if (at >= 0) {
            fwrite(text + emitted, 1, (size_t)at - emitted, stdout);
            emitted = (size_t)at;
            why = "stop string";
            text_len = (size_t)at;
            break;
        }
        if (safe > emitted) {
            fwrite(text + emitted, 1, safe - emitted, stdout);
            fflush(stdout);
            emitted = safe;
        }
        if (cur >= ctx_size) {
            why = "context full";
            break;
        }
        const int32_t zero = 0;
        weft_batch nb = {.n = 1, .tokens = &tok, .pos = &cur, .seq = &zero};
        if (weft_decode(ctx, &nb) < 0) {
            fprintf(stderr, "\nweft generate: %s\n", weft_last_error());
            goto out;
        }
        cur++;
    }
    if (text && strcmp(why, "stop string") != 0) {
        char out[16];
        size_t ol = tok_utf8_flush(&us, out);
        fwrite(text + emitted, 1, text_len - emitted, stdout);
        fwrite(out, 1, ol, stdout);
    }
    printf("\n");
    fflush(stdout);
    if (verbose) {
        weft_perf pf = weft_ctx_perf(ctx);
        fprintf(stderr, "weft: stopped (%s); prefill %lld tokens %.1f tok/s, decode %lld tokens %.1f tok/s\n",
                why, (long long)pf.n_prefill_tokens,
                pf.t_prefill > 0 ? pf.n_prefill_tokens / pf.t_prefill : 0.0,
                (long long)pf.n_decode_tokens,
                pf.t_decode > 0 ? pf.n_decode_tokens / pf.t_decode : 0.0);
    }
    rc = 0;
out:
    free(text);
    weft_free(ids);
    weft_sampler_free(smp);
    weft_ctx_destroy(ctx);
    weft_model_free(model);
    free(file_text);
    return rc;
bad:
    fprintf(stderr, "weft generate: bad option value '%s' (see --help)\n", optarg);
    return 2;
}

#!/usr/bin/env python3
"""llama.cpp side of the weft engine benchmark (via llama-cpp-python).

    python3 bench/llama_ref.py [--model M] [--threads 2] [--reps 3] [--prompt 512]

Prefill: the first arxiv article (sorted by file name) of /work/shared/data/arxiv,
tokenized (add_bos=False, special=False; the model has add_bos_token=false) and
truncated to exactly 512 tokens (--prompt P), evaluated as ONE llama_decode
batch (n_batch = n_ubatch = 512; batches of 512 past that). Decode: 128 greedy
tokens after it, one llama_decode per token (at a P-token context). Each rep
starts from an empty KV cache. The timer covers llama_decode only (the batch
is filled before the clock starts; argmax happens outside it), so Python
overhead is excluded. One untimed warm-up rep precedes the reps.

Prints progress to stderr and one JSON line to stdout:
  {"prefill_tps": best, "decode_tps": best, "prefill_tps_median": ...,
   "decode_tps_median": ..., "threads": N, "llama_cpp_python": version, ...}
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

DATA = os.environ.get("WEFT_DATA", "/work/shared/data")
N_PROMPT = 512
N_GEN = 128


def cpu_ticks():
    """(busy ticks of the whole machine, ticks used by this process)"""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = sum(v) - v[3] - v[4]  # minus idle, iowait
    with open("/proc/self/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return busy, int(st[11]) + int(st[12])  # utime + stime (all threads)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def main():
    default_model = os.environ.get("WEFT_MODEL") or os.path.expanduser(
        "~/.cache/weft/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap = argparse.ArgumentParser(description="llama.cpp prefill/decode tokens/s")
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=N_PROMPT, help="prompt tokens (16..8192, default 512)")
    ap.add_argument("--flash-attn", action="store_true",
                    help="flash_attn=True (default False, the llama-cpp-python 0.3.16 default)")
    a = ap.parse_args()
    if not 16 <= a.prompt <= 8192:
        raise SystemExit("--prompt must be in 16..8192")
    n_prompt, n_batch = a.prompt, min(a.prompt, N_PROMPT)

    import llama_cpp

    llm = llama_cpp.Llama(a.model, n_ctx=max(1024, n_prompt + N_GEN), n_batch=n_batch, n_ubatch=n_batch,
                          n_threads=a.threads, n_threads_batch=a.threads, seed=1234,
                          logits_all=False, flash_attn=a.flash_attn, verbose=False)
    n_vocab = llm.n_vocab()
    ctx = llm._ctx.ctx

    arxiv = sorted(os.listdir(os.path.join(DATA, "arxiv")))[0]
    with open(os.path.join(DATA, "arxiv", arxiv), encoding="utf-8") as f:
        text = f.read()
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    if len(ids) < n_prompt:
        raise SystemExit("%s has only %d tokens" % (arxiv, len(ids)))
    prompt = ids[:n_prompt]

    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def fill(tokens, pos0):
        batch.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            batch.token[i] = t
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = False
        batch.logits[len(tokens) - 1] = True

    def decode():
        t0 = time.perf_counter()
        rc = llama_cpp.llama_decode(ctx, batch)
        llama_cpp.llama_synchronize(ctx)
        dt = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit("llama_decode returned %d" % rc)
        return dt

    def argmax():
        p = llama_cpp.llama_get_logits_ith(ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(p, shape=(n_vocab,))))

    def rep():
        llm.reset()
        llm._ctx.kv_cache_clear()  # fresh KV cache
        t_prefill = 0.0
        for i in range(0, n_prompt, n_batch):
            fill(prompt[i:i + n_batch], i)
            t_prefill += decode()
        tok = argmax()
        t_decode = 0.0
        out = []
        for s in range(N_GEN):
            out.append(tok)
            fill([tok], n_prompt + s)
            t_decode += decode()
            tok = argmax()
        return n_prompt / t_prefill, N_GEN / t_decode, out

    log("llama-cpp-python %s, %s, threads=%d, prompt=%s[:%d], gen=%d" % (
        llama_cpp.__version__, os.path.basename(a.model), a.threads, arxiv, n_prompt, N_GEN))
    rep()  # warm-up (page-in of the mmapped weights, thread pool start)
    pf, dc = [], []
    first = None
    foreign = []
    for r in range(a.reps):
        b0, s0 = cpu_ticks()
        w0 = time.perf_counter()
        p, d, out = rep()
        b1, s1 = cpu_ticks()
        wall_ticks = (time.perf_counter() - w0) * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
        # share of the machine used by other processes during this rep
        foreign.append(round(100.0 * max(0, (b1 - b0) - (s1 - s0)) / max(wall_ticks, 1), 1))
        if first is None:
            first = out
        elif out != first:
            log("warning: greedy output differs between reps")
        pf.append(p)
        dc.append(d)
        log("rep %d: prefill %.1f tok/s  decode %.1f tok/s  (other processes: %.1f%% of the CPUs)"
            % (r + 1, p, d, foreign[-1]))
    llama_cpp.llama_batch_free(batch)

    print(json.dumps({
        "prefill_tps": round(max(pf), 2),
        "decode_tps": round(max(dc), 2),
        "prefill_tps_median": round(statistics.median(pf), 2),
        "decode_tps_median": round(statistics.median(dc), 2),
        "threads": a.threads,
        "flash_attn": a.flash_attn,
        "reps": a.reps,
        "prompt_tokens": n_prompt,
        "gen_tokens": N_GEN,
        "model": os.path.basename(a.model),
        "llama_cpp_python": llama_cpp.__version__,
        # CPU share used by other processes during each rep; > a few % skews the result
        "foreign_cpu_pct": foreign,
    }))


if __name__ == "__main__":
    main()

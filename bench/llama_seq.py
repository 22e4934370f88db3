#!/usr/bin/env python3
"""Replays requests written by `weft bench --dump FILE` on llama.cpp
(llama-cpp-python), one after another, as a request-at-a-time server would:
each prompt prefilled as one batch, then max_tokens greedy tokens (EOS
ignored, as weft bench does). Prints one JSON line: gen_tps, wall_s,
ttft/tpot p50/p99.

    python3 bench/llama_seq.py FILE [--model M] [--threads 2]
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def pct(v, p):
    v = sorted(v)
    return v[int(p * (len(v) - 1) + 0.5)] if v else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump")
    ap.add_argument("--model", default=os.environ.get("WEFT_MODEL") or os.path.expanduser(
        "~/.cache/weft/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import llama_cpp

    reqs = [json.loads(l) for l in open(a.dump)]
    n_ctx = max(len(r["tokens"]) + r["max_tokens"] for r in reqs) + 16
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=n_ctx, n_batch=512, n_ubatch=512,
                          n_threads=a.threads, n_threads_batch=a.threads, logits_all=False,
                          verbose=False)
    n_vocab = llm.n_vocab()
    ttft, tpot, gen = [], [], 0
    t0 = time.perf_counter()
    for i, r in enumerate(reqs):
        llm.reset()
        llm._ctx.kv_cache_clear()
        ts = time.perf_counter()
        llm.eval(r["tokens"])
        for k in range(r["max_tokens"]):
            p = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
            tok = int(np.argmax(np.ctypeslib.as_array(p, shape=(n_vocab,))))
            if k == 0:
                tf = time.perf_counter()
                ttft.append(tf - ts)
            gen += 1
            if k + 1 < r["max_tokens"]:
                llm.eval([tok])
        te = time.perf_counter()
        if r["max_tokens"] > 1:
            tpot.append((te - tf) / (r["max_tokens"] - 1))
        if (i + 1) % max(1, len(reqs) // 4) == 0:
            print("llama_seq: %d/%d requests (%.1f s)" % (i + 1, len(reqs), te - t0), file=sys.stderr,
                  flush=True)
    wall = time.perf_counter() - t0
    print(json.dumps({"engine": "llama.cpp", "requests": len(reqs), "wall_s": round(wall, 3),
                      "gen_tokens": gen, "gen_tps": round(gen / wall, 2),
                      "ttft_p50": round(pct(ttft, 0.5), 4), "ttft_p99": round(pct(ttft, 0.99), 4),
                      "tpot_p50": round(pct(tpot, 0.5), 4), "tpot_p99": round(pct(tpot, 0.99), 4),
                      "llama_cpp_python": llama_cpp.__version__}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How much llama.cpp disagrees with itself: for every prompt of
tests/fixtures/ref_logits.json, evaluate the prompt token by token (one
llama_decode per token) instead of as one batch, and record the last-position
logits at the same ids (the batch run's top-64 and the probe ids).

The difference between llama.cpp's batched and token-by-token logits is the
numeric noise of the reference itself (summation order, rounding of 8-bit
activation quantization); tests/model/test_reference.c bounds weft's distance
from llama.cpp by it.

    python3 scripts/record_self_noise.py [--model M] [--out tests/fixtures/ref_logits_seq.json]
"""
import argparse
import json
import os
import sys

import numpy as np


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("WEFT_MODEL") or os.path.expanduser(
        "~/.cache/weft/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--fixture", default=os.path.join(root, "tests/fixtures/ref_logits.json"))
    ap.add_argument("--out", default=os.path.join(root, "tests/fixtures/ref_logits_seq.json"))
    a = ap.parse_args()
    import llama_cpp

    fx = json.load(open(a.fixture))
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=2,
                          n_threads_batch=2, seed=1234, logits_all=False, flash_attn=False,
                          verbose=False)
    n_vocab = llm.n_vocab()
    probe = fx["probe_ids"]
    out = {"generator": "scripts/record_self_noise.py", "llama_cpp_python": llama_cpp.__version__,
           "description": "last-position logits after token-by-token evaluation, at the batch "
                          "fixture's top-64 ids (top_seq, same order) and probe ids (probe_seq); "
                          "self_diff = max |token-by-token - batch| over those ids",
           "prompts": []}
    for i, p in enumerate(fx["prompts"]):
        llm.reset()
        llm._ctx.kv_cache_clear()
        for t in p["tokens"]:
            llm.eval([t])
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        lg = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
        top_ids = [e[0] for e in p["top"]]
        top_seq = [round(float(lg[j]), 5) for j in top_ids]
        probe_seq = [round(float(lg[j]), 5) for j in probe]
        d = max(max(abs(x - e[1]) for x, e in zip(top_seq, p["top"])),
                max(abs(x - y) for x, y in zip(probe_seq, p["probe"])))
        print("[%2d/%d] %-32s %4d tokens  self_diff %.4f" % (i + 1, len(fx["prompts"]), p["name"],
              len(p["tokens"]), d), file=sys.stderr, flush=True)
        out["prompts"].append({"name": p["name"], "top_seq": top_seq, "probe_seq": probe_seq,
                               "self_diff": round(d, 5)})
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()

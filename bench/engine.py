#!/usr/bin/env python3
"""The engine benchmark of issue 3: weft against llama.cpp on the same GGUF.

    python3 bench/engine.py [--build build] [--threads 2] [--reps 3] [--no-llama] [--prompt 512]

Runs, in this order and in the same session:
  1. build/roofline       machine read bandwidth, FP32 FMA and int8 peaks, and the
                          decode/prefill bounds they put on the model;
  2. build/bench_engine   weft: prefill tokens/s of a 512-token arxiv prompt (one
                          batch) and decode tokens/s of 128 greedy tokens
                          (--prompt P: a P-token prompt, decoding at that context);
  3. bench/llama_ref.py   llama.cpp (llama-cpp-python) on the same workload;
then prints weft/llama.cpp ratios. Results are appended to
bench/results/engine.jsonl. Needs `scripts/setup.sh --reference` for step 3.
Timings on a shared machine are noisy: compare the ratio, not the absolute figures.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_json(cmd, env=None):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-llama", action="store_true", help="skip the llama.cpp reference")
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens, 16..8192 (default 512)")
    ap.add_argument("--no-roofline", action="store_true")
    a = ap.parse_args()
    env = dict(os.environ)
    env.setdefault("WEFT_DATA_DIR", os.path.join(ROOT, "..", "shared", "data"))
    env.setdefault("WEFT_DATA", env["WEFT_DATA_DIR"])
    if not a.no_roofline:
        print("== roofline", file=sys.stderr, flush=True)
        subprocess.run([os.path.join(a.build, "roofline"), "--threads", str(a.threads)], check=True)
    print("== weft", file=sys.stderr, flush=True)
    weft = run_json([os.path.join(a.build, "bench_engine"), "--threads", str(a.threads),
                     "--reps", str(a.reps), "--data", env["WEFT_DATA_DIR"], "--prompt", str(a.prompt)], env)
    ref = None
    if not a.no_llama:
        print("== llama.cpp", file=sys.stderr, flush=True)
        ref = run_json([sys.executable, os.path.join(HERE, "llama_ref.py"), "--threads",
                        str(a.threads), "--reps", str(a.reps), "--prompt", str(a.prompt)], env)
    print()
    print("%-10s %14s %14s" % ("", "prefill tok/s", "decode tok/s"))
    print("%-10s %14.1f %14.1f" % ("weft", weft["prefill_tps"], weft["decode_tps"]))
    row = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "threads": a.threads,
           "prompt": a.prompt, "weft": weft}
    if ref:
        print("%-10s %14.1f %14.1f" % ("llama.cpp", ref["prefill_tps"], ref["decode_tps"]))
        pr, dr = weft["prefill_tps"] / ref["prefill_tps"], weft["decode_tps"] / ref["decode_tps"]
        print("%-10s %13.2fx %13.2fx" % ("weft/llama", pr, dr))
        print("(best of %d reps each; medians: prefill %.2fx, decode %.2fx)" % (
            a.reps, weft["prefill_tps_median"] / ref["prefill_tps_median"],
            weft["decode_tps_median"] / ref["decode_tps_median"]))
        row.update(llama_cpp=ref, prefill_ratio=pr, decode_ratio=dr)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "engine.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

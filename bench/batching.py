#!/usr/bin/env python3
"""The serving-engine benchmark of issue 4, in one session:

  1. aggregate decode throughput of the same R requests (short prompts, 64
     generated tokens each) through weft at concurrency 1, 4, 16 and 64,
     against the same requests one after another on weft (concurrency 1) and
     on llama.cpp (bench/llama_seq.py);
  2. 32 requests sharing a 1,000-token system prompt: TTFT with and without
     weft's prefix index.

    python3 bench/batching.py [--build build] [--requests 64] [--no-llama]

Results are appended to bench/results/batching.jsonl.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def weft_bench(build, args, data):
    cmd = [os.path.join(build, "weft"), "bench", "--json", "--data", data] + args
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    return json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--no-llama", action="store_true")
    a = ap.parse_args()
    data = os.environ.get("WEFT_DATA_DIR", os.path.join(ROOT, "..", "shared", "data"))
    common = ["-r", str(a.requests), "-n", str(a.max_tokens), "--prompt-min", "16", "--prompt-max", "64"]
    dump = os.path.join(HERE, "results", "batching-requests.tmp")
    os.makedirs(os.path.dirname(dump), exist_ok=True)
    rows = {}
    for c in (1, 4, 16, 64):
        extra = ["--dump", dump] if c == 1 else []
        rows[c] = weft_bench(a.build, ["-c", str(c)] + common + extra, data)
    ref = None
    if not a.no_llama:
        cmd = [sys.executable, os.path.join(HERE, "llama_seq.py"), dump]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        ref = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout)
    seq = rows[1]["gen_tps"]
    print("\n%d requests, %d tokens each (prompts 16-64 tokens)" % (a.requests, a.max_tokens))
    print("%-26s %10s %12s %12s %10s" % ("", "tok/s", "vs weft seq", "vs llama seq", "TPOT p50"))
    if ref:
        print("%-26s %10.1f %12s %12s %8.1fms" % ("llama.cpp, one at a time", ref["gen_tps"], "", "1.00x",
                                                   ref["tpot_p50"] * 1e3))
    for c, r in rows.items():
        name = "weft, one at a time" if c == 1 else "weft, concurrency %d" % c
        vs_ref = "%.2fx" % (r["gen_tps"] / ref["gen_tps"]) if ref else "-"
        print("%-26s %10.1f %11.2fx %12s %8.1fms" % (name, r["gen_tps"], r["gen_tps"] / seq, vs_ref,
                                                      r["tpot_p50"] * 1e3))
    shared = ["-c", "32", "-r", "32", "-n", "16", "--shared-prefix", "1000"]
    on = weft_bench(a.build, shared, data)
    off = weft_bench(a.build, shared + ["--no-prefix-cache"], data)
    print("\n32 requests sharing a 1,000-token prefix, concurrency 32:")
    print("  prefix index on : TTFT p50 %7.0f ms  p99 %7.0f ms  wall %6.1f s  (%d prompt tokens from cache)" % (
        on["ttft_p50"] * 1e3, on["ttft_p99"] * 1e3, on["wall_s"], on["cached_tokens"]))
    print("  prefix index off: TTFT p50 %7.0f ms  p99 %7.0f ms  wall %6.1f s" % (
        off["ttft_p50"] * 1e3, off["ttft_p99"] * 1e3, off["wall_s"]))
    print("  TTFT p50 %.2fx better, p99 %.2fx, wall %.2fx" % (
        off["ttft_p50"] / on["ttft_p50"], off["ttft_p99"] / on["ttft_p99"], off["wall_s"] / on["wall_s"]))
    with open(os.path.join(HERE, "results", "batching.jsonl"), "a") as f:
        f.write(json.dumps({"date": datetime.datetime.now().isoformat(timespec="seconds"),
                            "weft": rows, "llama_seq": ref, "shared_on": on, "shared_off": off}) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Speculative decoding benchmark: weft with drafts (--spec 8, the default)
against weft without (--spec 0), same binary, model and machine, alternating
the two so that drifting load hits both alike.

Workloads:
  bench c=N   weft bench -c N -r R -n 64: continuations of arXiv text cut at
              random lengths (EOS ignored), N requests in flight
  <workflow>  the examples of bench/workflows.py, in graph mode and
              --sequential (one call at a time)

Prints, for each, the median time with and without drafts, their ratio, the
draft tokens run and the share kept, and whether the outputs were the same
(workflows: the script's printed output; drafts must not change it).

Usage: python3 bench/spec.py [--reps R] [--threads N] [--only bench|workflows]
Appends one JSON line to bench/results/spec.jsonl.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

import workflows

ROOT = workflows.ROOT
WEFT = workflows.WEFT
RESULTS = os.path.join(ROOT, "bench", "results", "spec.jsonl")


def weft_bench(conc, reqs, threads, spec):
    cmd = [WEFT, "bench", "-c", str(conc), "-r", str(reqs), "-n", "64", "-t", str(threads),
           "--spec", str(spec), "--json"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    d = json.loads(p.stdout.strip().splitlines()[-1])
    return {"s": d["wall_s"], "drafted": d["drafted"], "accepted": d["accepted"],
            "steps": d["steps"], "tps": d["gen_tps"], "out": None}


def weft_workflow(name, threads, sequential, spec):
    script, args = workflows.WORKLOADS[name]
    st = workflows.run(script, args, threads, sequential, spec)
    return {"s": st["run_s"], "drafted": st["drafted_tokens"], "accepted": st["accepted_drafts"],
            "steps": st["engine_steps"], "out": st["output"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="runs per setting (the median is kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["bench", "workflows"])
    a = ap.parse_args()
    if not os.access(WEFT, os.X_OK):
        sys.exit(f"no weft binary at {WEFT} (build first)")
    cases = []
    if a.only != "workflows":
        for conc, reqs in ((1, 8), (8, 16), (32, 32)):
            cases.append((f"bench c={conc}", lambda spec, c=conc, r=reqs: weft_bench(c, r, a.threads, spec)))
    if a.only != "bench":
        for name in workflows.WORKLOADS:
            for seq in (False, True):
                label = f"{name} {'sequential' if seq else 'graph'}"
                cases.append((label, lambda spec, n=name, s=seq: weft_workflow(n, a.threads, s, spec)))
    record = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "threads": a.threads,
              "reps": a.reps, "commit": workflows.binary_commit(WEFT),
              "loadavg_before": os.getloadavg()[0], "cases": {}}
    print(f"{'workload':26} {'off s':>7} {'on s':>7} {'off/on':>7} {'drafted':>8} {'kept':>6} "
          f"{'steps off':>9} {'steps on':>8}  same")
    for label, fn in cases:
        runs = {0: [], 8: []}
        for _ in range(a.reps):
            for spec in (0, 8):
                print(f"  {label}: --spec {spec} ...", end="\r", file=sys.stderr, flush=True)
                runs[spec].append(fn(spec))
        med = {k: sorted(v, key=lambda r: r["s"])[len(v) // 2] for k, v in runs.items()}
        off, on = med[0], med[8]
        outs = {r["out"] for r in runs[0] + runs[8]}
        same = None if None in outs else len(outs) == 1
        ratio = off["s"] / on["s"]
        kept = on["accepted"] / on["drafted"] if on["drafted"] else 0.0
        print(f"{label:26} {off['s']:7.2f} {on['s']:7.2f} {ratio:6.2f}x {on['drafted']:8d} "
              f"{kept:6.0%} {off['steps']:9d} {on['steps']:8d}  {'-' if same is None else same}")
        record["cases"][label] = {"off_s": off["s"], "on_s": on["s"], "ratio": round(ratio, 3),
                                  "drafted": on["drafted"], "accepted": on["accepted"],
                                  "steps_off": off["steps"], "steps_on": on["steps"],
                                  "off_all_s": [r["s"] for r in runs[0]],
                                  "on_all_s": [r["s"] for r in runs[8]], "same_output": same}
        if same is False:
            sys.exit(f"{label}: outputs differ with drafts — a bug")
    record["loadavg_after"] = os.getloadavg()[0]
    workflows.append_record(RESULTS, record)


if __name__ == "__main__":
    main()

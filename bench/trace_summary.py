#!/usr/bin/env python3
"""Summarises a WEFT_TRACE=1 log: engine steps grouped by kind and rows.

    WEFT_TRACE=1 build/weft run examples/multi_agent.lua --no-store -t 2 \\
        --arg max_tokens=64 --arg quiet=1 2> trace.txt >/dev/null
    python3 bench/trace_summary.py trace.txt

A step is "P<rows>" when it computes prompt tokens, "D<rows>" when it only
decodes, "S<rows>" when it only decodes and runs draft tokens too
(speculative decoding; rows: the requests whose step it completes). Prints,
per group, the number of steps, their total and mean time (ms), then the
total.

    python3 bench/trace_summary.py GRAPH_TRACE --against SEQUENTIAL_TRACE

(the same workflow run with --sequential) also prints the ratio of the two
runs' step times and what bounds it: the ratio if every decode-only step of
the graph run cost what a one-row step costs in the sequential run (batching
for free), and the ratio if, on top of that, prompt tokens cost nothing in
either run (what the dependency chains alone allow).
"""
import re
import sys


def parse(lines):
    """Steps of a trace's lines: a list of (key, ms)."""
    steps = []
    for line in lines:
        if not line.startswith("weft step "):
            continue
        v = dict(re.findall(r"(\w+)=([-\d.]+)", line))
        kind = "P" if int(v["prompt"]) > 0 else "S" if int(v.get("drafts", 0)) > 0 else "D"
        steps.append((kind + v["rows"], float(v["ms"])))
    return steps


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        steps = parse(f)
    if not steps:
        sys.exit(f"{path}: no 'weft step' lines (was WEFT_TRACE=1 set?)")
    return steps


def summary(steps):
    groups = {}
    for key, ms in steps:
        n, t = groups.get(key, (0, 0.0))
        groups[key] = (n + 1, t + ms)
    for key in sorted(groups, key=lambda k: (k[0], int(k[1:]))):
        n, ms = groups[key]
        print(f"{key:>5} steps {n:5d}  {ms:8.0f} ms  mean {ms / n:7.2f} ms")
    print(f"total {len(steps):11d}  {sum(ms for _, ms in steps):8.0f} ms")


def bounds(graph, seq):
    """What bounds sequential / graph, from the two runs' steps: a dict of
    the measured step-time ratio, the ratio with batching for free (every
    graph decode-only step at the sequential one-row mean, d1_ms) and the
    ratio with prompt tokens free too (decode-only steps, sequential /
    graph); None when the sequential run has no one-row decode step."""
    one = [ms for key, ms in seq if key == "D1"]
    g_decode = sum(1 for key, _ in graph if key[0] in "DS")
    if not one or not g_decode:
        return None
    d1 = sum(one) / len(one)
    g_total, s_total = sum(ms for _, ms in graph), sum(ms for _, ms in seq)
    g_prompt = sum(ms for key, ms in graph if key[0] == "P")
    s_decode = sum(1 for key, _ in seq if key[0] in "DS")
    return {"graph_ms": g_total, "sequential_ms": s_total, "steps_ratio": s_total / g_total,
            "d1_ms": d1, "graph_decode_steps": g_decode, "sequential_decode_steps": s_decode,
            "free_batching_ms": g_prompt + g_decode * d1,
            "free_batching_ratio": s_total / (g_prompt + g_decode * d1),
            "chains_ratio": s_decode / g_decode}


def print_bounds(b):
    print(f"sequential / graph step time: {b['sequential_ms']:.0f} / {b['graph_ms']:.0f} ms = "
          f"{b['steps_ratio']:.2f}x")
    print(f"with batching for free (each of the graph's {b['graph_decode_steps']} decode-only steps at "
          f"the sequential one-row mean, {b['d1_ms']:.2f} ms): {b['sequential_ms']:.0f} / "
          f"{b['free_batching_ms']:.0f} ms = {b['free_batching_ratio']:.2f}x")
    print(f"and prompt tokens for free too: {b['sequential_decode_steps']} / {b['graph_decode_steps']} "
          f"decode-only steps = {b['chains_ratio']:.2f}x")


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 3) or args[0] in ("-h", "--help") or (len(args) == 3 and args[1] != "--against"):
        print(__doc__.strip())
        return 0 if args and args[0] in ("-h", "--help") else 2
    graph = read(args[0])
    summary(graph)
    if len(args) == 3:
        b = bounds(graph, read(args[2]))
        print()
        if b is None:
            sys.exit("no decode-only steps to compare (the sequential trace needs one-row ones)")
        print_bounds(b)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Summarises a WEFT_TRACE=1 log: engine steps grouped by kind and rows.

    WEFT_TRACE=1 build/weft run examples/multi_agent.lua --no-store -t 2 \\
        --arg max_tokens=64 --arg quiet=1 2> trace.txt >/dev/null
    python3 bench/trace_summary.py trace.txt

A step is "P<rows>" when it computes prompt tokens, "D<rows>" when it only
decodes (rows: the requests whose step it completes). Prints, per group, the
number of steps, their total and mean time (ms), then the total.

    python3 bench/trace_summary.py GRAPH_TRACE --against SEQUENTIAL_TRACE

(the same workflow run with --sequential) also prints the ratio of the two
runs' step times and what bounds it: the ratio if every decode-only step of
the graph run cost what a one-row step costs in the sequential run (batching
for free), and the ratio if, on top of that, prompt tokens cost nothing in
either run (what the dependency chains alone allow).
"""
import re
import sys


def read(path):
    """Steps of a trace: a list of (key, ms)."""
    steps = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("weft step "):
                continue
            v = dict(re.findall(r"(\w+)=([-\d.]+)", line))
            steps.append((("P" if int(v["prompt"]) > 0 else "D") + v["rows"], float(v["ms"])))
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
    one = [ms for key, ms in seq if key == "D1"]
    if not one:
        sys.exit("the sequential trace has no one-row decode steps")
    d1 = sum(one) / len(one)
    g_total, s_total = sum(ms for _, ms in graph), sum(ms for _, ms in seq)
    g_prompt = sum(ms for key, ms in graph if key[0] == "P")
    g_decode = sum(1 for key, _ in graph if key[0] == "D")
    s_decode = sum(1 for key, _ in seq if key[0] == "D")
    print(f"sequential / graph step time: {s_total:.0f} / {g_total:.0f} ms = {s_total / g_total:.2f}x")
    free = g_prompt + g_decode * d1
    print(f"with batching for free (each of the graph's {g_decode} decode-only steps at the "
          f"sequential one-row mean, {d1:.2f} ms): {s_total:.0f} / {free:.0f} ms = {s_total / free:.2f}x")
    print(f"and prompt tokens for free too: {s_decode} / {g_decode} decode-only steps = "
          f"{s_decode / g_decode:.2f}x")


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 3) or args[0] in ("-h", "--help") or (len(args) == 3 and args[1] != "--against"):
        print(__doc__.strip())
        return 0 if args and args[0] in ("-h", "--help") else 2
    graph = read(args[0])
    summary(graph)
    if len(args) == 3:
        seq = read(args[2])
        print()
        bounds(graph, seq)
    return 0


if __name__ == "__main__":
    sys.exit(main())

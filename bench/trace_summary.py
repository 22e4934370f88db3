#!/usr/bin/env python3
"""Summarises a WEFT_TRACE=1 log: engine steps grouped by kind and rows.

    WEFT_TRACE=1 build/weft run examples/multi_agent.lua --no-store -t 2 \\
        --arg max_tokens=64 --arg quiet=1 2> trace.txt >/dev/null
    python3 bench/trace_summary.py trace.txt

A step is "P<rows>" when it computes prompt tokens, "D<rows>" when it only
decodes (rows: the requests whose step it completes). Prints, per group, the
number of steps, their total and mean time (ms), then the total.
"""
import re
import sys


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) == 2 else 2
    groups = {}
    total = 0.0
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("weft step "):
                continue
            v = dict(re.findall(r"(\w+)=([-\d.]+)", line))
            key = ("P" if int(v["prompt"]) > 0 else "D") + v["rows"]
            n, ms = groups.get(key, (0, 0.0))
            groups[key] = (n + 1, ms + float(v["ms"]))
            total += float(v["ms"])
    if not groups:
        sys.exit(f"{sys.argv[1]}: no 'weft step' lines (was WEFT_TRACE=1 set?)")
    for key in sorted(groups, key=lambda k: (k[0], int(k[1:]))):
        n, ms = groups[key]
        print(f"{key:>5} steps {n:5d}  {ms:8.0f} ms  mean {ms / n:7.2f} ms")
    print(f"total {sum(n for n, _ in groups.values()):11d}  {total:8.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# A/B timing on a noisy machine: runs two weft binaries alternately, N times
# each, on the same weft arguments, and prints each side's figures sorted —
# a change is real when one side is better at every rank.
#
#   bench/ab.sh N PATTERN BIN_A BIN_B -- WEFT_ARGS...
#
# PATTERN is an extended regex whose last number on the matching stderr or
# stdout line is the figure, e.g. 'TPOT p50 [0-9.]+' (weft bench) or
# 'prefill [0-9]+ tokens [0-9.]+' (weft generate -v). BIN_A / BIN_B may be
# the same binary with different environments: "env WEFT_NO_NIB=1 build/weft".
#   bench/ab.sh 6 'TPOT p50 [0-9.]+' "env WEFT_NO_NIB=1 build/weft" build/weft -- \
#       bench -c 1 -r 4 -n 128 --prompt-min 32 --prompt-max 40 -t 2
set -euo pipefail
[ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] || [ $# -lt 5 ] && { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
n=$1 pat=$2 a=$3 b=$4
shift 4
[ "$1" = "--" ] && shift
ra=() rb=()
for i in $(seq "$n"); do
    for side in a b; do
        bin=$a; [ $side = b ] && bin=$b
        v=$($bin "$@" 2>&1 | grep -oE "$pat" | tail -1 | grep -oE '[0-9.]+$' || true)
        echo "ab: run $i $side: ${v:-no match}" >&2
        if [ $side = a ]; then ra+=("${v:-nan}"); else rb+=("${v:-nan}"); fi
    done
done
echo "A ($a): $(printf '%s\n' "${ra[@]}" | sort -g | tr '\n' ' ')"
echo "B ($b): $(printf '%s\n' "${rb[@]}" | sort -g | tr '\n' ' ')"

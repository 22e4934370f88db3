#!/usr/bin/env bash
# Runs the GGUF fuzzer for a bounded time: tests/fuzz/run.sh BUILD_DIR SECONDS
# Exit status is the fuzzer's: non-zero on a crash, leak or sanitizer report
# (the input is left as BUILD_DIR/crash-* and the log as BUILD_DIR/fuzz.log).
set -uo pipefail
build=${1:-build-fuzz}
secs=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/make_seed.py" "$build/fuzz-seed-gguf" >/dev/null || exit 1
mkdir -p "$build/fuzz-corpus-gguf"
"$build/tests/fuzz_gguf" "$build/fuzz-corpus-gguf" "$build/fuzz-seed-gguf" \
    -max_total_time="$secs" -rss_limit_mb=2048 -artifact_prefix="$build/" \
    -print_final_stats=1 >"$build/fuzz.log" 2>&1
rc=$?
grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" "$build/fuzz.log"
[ "$rc" = 0 ] || tail -40 "$build/fuzz.log"
exit "$rc"

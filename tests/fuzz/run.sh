#!/usr/bin/env bash
# Runs a fuzzer for a bounded time: tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET]
# TARGET: gguf (default; the GGUF reader), tokenizer (the default model's
# tokenizer) or oai (weft serve's request parser); the last two need the
# model that scripts/setup.sh installs.
# Exit status is the fuzzer's: non-zero on a crash, leak or sanitizer report
# (the input is left as BUILD_DIR/crash-* and the log as BUILD_DIR/fuzz-TARGET.log).
set -uo pipefail
build=${1:-build-fuzz}
secs=${2:-60}
target=${3:-gguf}
here=$(cd "$(dirname "$0")" && pwd)
case "$target" in
gguf) python3 "$here/make_seed.py" "$build/fuzz-seed-gguf" >/dev/null || exit 1 ;;
tokenizer) python3 "$here/make_seed_text.py" "$build/fuzz-seed-tokenizer" >/dev/null || exit 1 ;;
oai) python3 "$here/make_seed_oai.py" "$build/fuzz-seed-oai" >/dev/null || exit 1 ;;
*) echo "run.sh: unknown target '$target' (gguf, tokenizer, oai)" >&2; exit 2 ;;
esac
log="$build/fuzz-$target.log"
mkdir -p "$build/fuzz-corpus-$target"
"$build/tests/fuzz_$target" "$build/fuzz-corpus-$target" "$build/fuzz-seed-$target" \
    -max_total_time="$secs" -rss_limit_mb=2048 -artifact_prefix="$build/" \
    -print_final_stats=1 >"$log" 2>&1
rc=$?
grep -E "^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" "$log"
[ "$rc" = 0 ] || tail -40 "$log"
exit "$rc"

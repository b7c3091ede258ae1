#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` (parallel slots, continuous batching) once per machine and
# prints its path. The source is a registry package: the llama.cpp tree vendored in the
# llama-cpp-python sdist on PyPI. The binary is cached outside the repository so every later clone,
# CI run and worker start reuses it; a second run prints the path at once. It also sets up the
# sdist's Hugging Face -> GGUF converter next to it (scripts/llama-convert.sh: extracted, never
# compiled), so a cache holding only the binary gets the converter added without a rebuild.
#
#   bash scripts/build-llama-server.sh               # CPU build (tuned for this machine's CPU)
#   LLAMA_SERVER_FLAVOUR=cuda bash scripts/build-llama-server.sh   # or --cuda: GGML_CUDA (GPU image)
#   bash scripts/build-llama-server.sh --print-path  # where the binary is or would be; builds nothing
#
# LLAMA_CPP_SDIST=/path/to/llama_cpp_python-<version>.tar.gz uses a downloaded sdist (offline set-up);
# otherwise it is fetched with pip. Needs cmake and a C++ compiler (installed with apt-get when root).
set -euo pipefail

# Same version and path rule as model_service/engine_paths.py (tests/unit/test_engine_args.py checks
# that --print-path agrees with llama_server_path()).
VERSION=0.3.36
source "$(dirname "$0")/engine-cache.sh"
engine_args build-llama-server "${LLAMA_SERVER_FLAVOUR:-cpu}" "$@"
ROOT="$ENGINES_HOME/llama.cpp"
FINAL="$ROOT/$VERSION-$FLAVOUR"
BINARY="$FINAL/bin/llama-server"

if [ "$PRINT_ONLY" = 1 ]; then
  echo "$BINARY"
  exit 0
fi
converter() {  # the converter from the same sdist; it takes the lock itself (released here first)
  exec 9>&-
  bash "$(dirname "$0")/llama-convert.sh" >/dev/null
}
if [ -x "$BINARY" ]; then
  converter
  echo "$BINARY"
  exit 0
fi

ensure_build_tools() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  { command -v c++ >/dev/null && command -v make >/dev/null; } || missing+=(build-essential)
  [ "${#missing[@]}" = 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "build-llama-server: missing ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  apt-get update -qq || echo "build-llama-server: apt-get update failed; trying the install anyway" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

fetch_sdist() {  # $1: download folder; prints the sdist's path
  if [ -n "${LLAMA_CPP_SDIST:-}" ]; then echo "$LLAMA_CPP_SDIST"; return; fi
  "${PYTHON:-python3}" -m pip download -q --no-deps --no-binary :all: \
    "llama-cpp-python==$VERSION" -d "$1" >&2
  ls "$1"/llama_cpp_python-"$VERSION".tar.gz
}

cmake_flags() {
  # Only what llama-server needs: static (the binary is moved into the cache, no shared libraries to
  # find), no tests/examples, no OpenSSL (it only serves plain HTTP on loopback), and no web UI (the
  # prebuilt one would be downloaded at build time; the platform has its own chat UI). This llama.cpp
  # has no curl dependency any more (LLAMA_CURL is deprecated; model downloads are not used here).
  local flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF)
  # CPU: GGML_NATIVE (default ON) tunes for this CPU, which suits a per-machine cache.
  [ "$FLAVOUR" = cuda ] && flags+=(-DGGML_CUDA=ON -DGGML_NATIVE=OFF)
  echo "${flags[@]}"
}

ensure_build_tools
# One build at a time per machine: a second caller waits, then finds the binary in place.
engine_lock "$ROOT"
if [ -x "$BINARY" ]; then converter; echo "$BINARY"; exit 0; fi

WORK=$(mktemp -d "$ROOT/.build-$VERSION-$FLAVOUR.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
started=$(date +%s)
sdist=$(fetch_sdist "$WORK")
mkdir -p "$WORK/src"
tar -xzf "$sdist" -C "$WORK/src" --wildcards "*/vendor/llama.cpp/*"
SRC="$WORK/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
read -r -a FLAGS <<<"$(cmake_flags)"
echo "build-llama-server: building llama-server $VERSION ($FLAVOUR) with $(nproc) jobs" >&2
cmake -S "$SRC" -B "$WORK/build" "${FLAGS[@]}" >"$WORK/cmake.log" 2>&1 \
  || { tail -40 "$WORK/cmake.log" >&2; exit 1; }
cmake --build "$WORK/build" --target llama-server -j"$(nproc)" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; exit 1; }

# Assemble the final folder next to it, then rename it into place: an interrupted build never leaves
# a half-written binary at the cached path.
STAGE="$WORK/stage"
mkdir -p "$STAGE/bin"
cp "$WORK/build/bin/llama-server" "$STAGE/bin/llama-server"
"$STAGE/bin/llama-server" --version >"$STAGE/VERSION" 2>&1 || true
printf 'llama-cpp-python sdist %s, flavour %s, built %s in %ss\ncmake %s\n' "$VERSION" "$FLAVOUR" \
  "$(date -u +%FT%TZ)" "$(( $(date +%s) - started ))" "${FLAGS[*]}" >"$STAGE/BUILD_INFO"
mv -T "$STAGE" "$FINAL"
echo "build-llama-server: built in $(( $(date +%s) - started ))s" >&2
LLAMA_CPP_SDIST="$sdist" converter  # the sdist just fetched: no second download
echo "$BINARY"

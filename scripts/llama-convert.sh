#!/usr/bin/env bash
# Sets up llama.cpp's Hugging Face -> GGUF converter once per machine and prints its folder (used by
# `models export-gguf`). It comes from the same llama-cpp-python sdist llama-server is built from:
# convert_hf_to_gguf.py, its conversion/ package and gguf-py/ (the gguf library version this converter
# expects, put first on its path), plus the sentencepiece wheel its requirements name (the converter
# imports it for llama-family models even when the tokenizer is tokenizer.json), installed into the
# folder's own site/ rather than into the project's dependencies. Flavour-independent: one converter
# serves the cpu and cuda builds. Nothing is compiled: extracting takes seconds.
#
#   bash scripts/llama-convert.sh               # set up (build-llama-server.sh runs it too)
#   bash scripts/llama-convert.sh --print-path  # where the converter is or would be; sets up nothing
#
# LLAMA_CPP_SDIST=/path/to/llama_cpp_python-<version>.tar.gz uses a downloaded sdist (offline set-up);
# otherwise it is fetched with pip. The sentencepiece wheel is installed with pip for PYTHON (default
# python3, the interpreter the project's venv is made from), so pip's own index settings apply.
set -euo pipefail

# Same version and path rule as model_service/engine_paths.py gguf_converter_path() (checked by
# tests/unit/test_engine_args.py).
VERSION=0.3.36
source "$(dirname "$0")/engine-cache.sh"
engine_args llama-convert cpu "$@"
ROOT="$ENGINES_HOME/llama.cpp"
FINAL="$ROOT/$VERSION-convert"
SCRIPT="$FINAL/convert_hf_to_gguf.py"

if [ "$PRINT_ONLY" = 1 ] || [ -f "$SCRIPT" ]; then
  echo "$FINAL"
  exit 0
fi

# One set-up at a time per machine (the same lock as the llama-server build).
engine_lock "$ROOT"
if [ -f "$SCRIPT" ]; then echo "$FINAL"; exit 0; fi

WORK=$(mktemp -d "$ROOT/.convert-$VERSION.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ -n "${LLAMA_CPP_SDIST:-}" ]; then
  sdist=$LLAMA_CPP_SDIST
else
  "${PYTHON:-python3}" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK" >&2
  sdist=$(ls "$WORK"/llama_cpp_python-"$VERSION".tar.gz)
fi
VENDOR="llama_cpp_python-$VERSION/vendor/llama.cpp"
mkdir -p "$WORK/src"
tar -xzf "$sdist" -C "$WORK/src" --wildcards "$VENDOR/convert_hf_to_gguf.py" "$VENDOR/conversion/*" \
  "$VENDOR/gguf-py/*" "$VENDOR/requirements/*" "$VENDOR/LICENSE"
SRC="$WORK/src/$VENDOR"
pin=$(grep -h '^sentencepiece' "$SRC"/requirements/requirements-convert*.txt | head -1)
[ -n "$pin" ] || { echo "llama-convert: no sentencepiece requirement in the sdist's converter requirements" >&2; exit 1; }

# Assemble next to the final folder, then rename it into place: a half set-up is never found.
STAGE="$WORK/stage"
mkdir -p "$STAGE"
cp -r "$SRC/convert_hf_to_gguf.py" "$SRC/conversion" "$SRC/gguf-py" "$SRC/requirements" "$SRC/LICENSE" "$STAGE/"
"${PYTHON:-python3}" -m pip install -q --no-deps --only-binary :all: --target "$STAGE/site" "$pin" >&2
printf 'llama-cpp-python sdist %s converter, %s in site/, set up %s\n' "$VERSION" "$pin" "$(date -u +%FT%TZ)" \
  >"$STAGE/BUILD_INFO"
mv -T "$STAGE" "$FINAL"
echo "llama-convert: converter set up in $FINAL" >&2
echo "$FINAL"

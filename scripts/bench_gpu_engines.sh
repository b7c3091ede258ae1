#!/usr/bin/env bash
# The engines table on a CUDA host: vLLM (the CUDA venv) and the transformers engine on the same model
# (the starter chat model), each behind a worker and the gateway, and vLLM's own server alone; 1/8/32
# streams (more with LEVELS). Writes results.json and results.md under OUT.
#
#   bash scripts/bench_gpu_engines.sh                 # GPU 0, OUT=docs/bench-gpu-<date>
#   GPUS=1 LEVELS=1,8,32,64 OUT=/tmp/gpu bash scripts/bench_gpu_engines.sh
#   bash scripts/bench_gpu_engines.sh --dry-run       # print the commands; needs no GPU
#
# Installs the CUDA vLLM venv once (`VLLM_FLAVOUR=cuda make vllm-venv`: the `vllm` package and its CUDA
# torch, several GB). The project's own venv must have a CUDA torch for the transformers rows.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
GPUS=${GPUS:-0}
LEVELS=${LEVELS:-1,8,32}
ENGINES=${ENGINES:-transformers-auto,vllm,vllm-bare}
OUT=${OUT:-$REPO/docs/bench-gpu-$(date -u +%F)}
DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1

BENCH=("$PYTHON" "$REPO/scripts/bench.py" --skip chat,embeddings,gateway,ceilings,infinity,litellm
       --engines "$ENGINES" --engine-gpus "$GPUS" --engine-levels "$LEVELS" --rounds 3 --max-tokens 32
       --out "$OUT")

if [ "$DRY_RUN" = 1 ]; then
  echo "VLLM_FLAVOUR=cuda bash $REPO/scripts/vllm-venv.sh"
  echo "${BENCH[*]}"
  exit 0
fi
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "bench_gpu_engines: no CUDA GPU here (nvidia-smi finds none); this table needs one" >&2
  exit 2
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "bench_gpu_engines: $PYTHON has a CPU-only torch; install the CUDA build for the transformers rows" >&2
  exit 2
fi
VLLM_FLAVOUR=cuda bash "$REPO/scripts/vllm-venv.sh" >/dev/null
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv >&2
"${BENCH[@]}"

#!/usr/bin/env bash
# Run once on a machine WITH internet access: start MinIO and the model registry, mirror every
# model the stack serves from Hugging Face into MinIO (pinned commit, sha256 verified), check them,
# and optionally write one bundle per model to carry into an air-gapped site.
#
#   scripts/offline-setup.sh                       # the GPU-cluster model set
#   scripts/offline-setup.sh --models my-models.txt --bundle-dir ./bundles
#   MODELS="Qwen/Qwen2.5-0.5B-Instruct:llm sentence-transformers/all-MiniLM-L6-v2:embedding" scripts/offline-setup.sh
#
# A models file has one "MODEL_ID:TYPE[@REVISION]" per line (# comments allowed). HF_TOKEN and
# HF_ENDPOINT from .env are used for gated repos and mirrors. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DEFAULT_MODELS="
Qwen/Qwen2.5-0.5B-Instruct:llm
TinyLlama/TinyLlama-1.1B-Chat-v1.0:llm
llava-hf/llava-1.5-7b-hf:multimodal
sentence-transformers/all-MiniLM-L6-v2:embedding
openai/whisper-base:transcription
"
MODELS_FILE=""
BUNDLE_DIR=""
COMPOSE_FILES=(-f docker-compose.yml)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS_FILE=$2; shift 2 ;;
    --bundle-dir) BUNDLE_DIR=$2; shift 2 ;;
    --compose-file) COMPOSE_FILES+=(-f "$2"); shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
compose() { "${COMPOSE[@]}" "${COMPOSE_FILES[@]}" "$@"; }
say() { printf '\n==> %s\n' "$*"; }

[ -f .env ] || { echo "no .env: copy .env.example to .env and set the secrets first" >&2; exit 1; }

if [ -n "$MODELS_FILE" ]; then
  models=$(grep -v '^\s*#' "$MODELS_FILE" | tr -s ' \t' '\n' | grep -v '^$' || true)
else
  models=$(printf '%s\n' ${MODELS:-$DEFAULT_MODELS} | grep -v '^$')
fi
[ -n "$models" ] || { echo "no models to mirror" >&2; exit 1; }

say "starting MinIO and the model registry"
compose up -d --wait minio minio-init model-registry

failed=()
for entry in $models; do
  id=${entry%%:*}; rest=${entry#*:}; type=${rest%%@*}; rev=""
  [ "$rest" != "$type" ] && rev=${rest#*@}
  say "mirroring $id ($type${rev:+, revision $rev})"
  args=(model-service models pull "$id" --type "$type")
  [ -n "$rev" ] && args+=(--revision "$rev")
  if ! compose exec model-registry "${args[@]}"; then
    echo "FAILED: $id" >&2; failed+=("$id"); continue
  fi
done

say "verifying"
compose exec -T model-registry model-service models list
for entry in $models; do
  id=${entry%%:*}
  if ! compose exec -T model-registry model-service models fetch "$id" --cache-dir /tmp/verify >/dev/null; then
    echo "FAILED verification: $id" >&2; failed+=("$id")
  fi
done
compose exec -T model-registry rm -rf /tmp/verify || true

if [ -n "$BUNDLE_DIR" ] && [ ${#failed[@]} -eq 0 ]; then
  mkdir -p "$BUNDLE_DIR"
  for entry in $models; do
    id=${entry%%:*}; file="$(echo "$id" | tr '/' '--').tar"
    say "exporting $id to $BUNDLE_DIR/$file"
    compose exec -T model-registry model-service models export "$id" -o "/data/$file"
    compose cp "model-registry:/data/$file" "$BUNDLE_DIR/$file"
    compose exec -T model-registry rm -f "/data/$file"
  done
  echo "On the air-gapped site: model-service models import-bundle FILE (or see docs/model-registry.md)."
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "offline setup failed for: ${failed[*]}" >&2
  exit 1
fi
say "done: every model is mirrored and verified; 'docker compose up -d' now runs offline"

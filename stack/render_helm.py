"""``model-service render helm-values FILE``: the Helm chart's ``models:`` values from a deployment file.

The chart (``deploy/helm/model-service``) runs one Deployment per model; this writes that list from the
same file ``up`` and ``render compose`` read, so the three launchers agree on ids, served names, engines,
replicas, limits and engine arguments. What only one host can mean is translated, not copied:

- Kubernetes gives each replica its own pod address, so ports are dropped (every worker listens on 8000).
- GPUs are counted, not named: ``placement.gpus: [[0], [1]]`` becomes ``gpus: 1`` per replica, and the
  NVIDIA device plugin picks the devices (``CUDA_VISIBLE_DEVICES``).
- Every model must already be in the store, as in compose: the revision is ``source.store`` when the
  file names one, else the ``current`` alias (``models pull``/``import`` set it).

The store, auth and port sections of the file belong to the chart's own values (``store``, ``auth``).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from stack.deployment import Deployment, ModelSpec
from stack.plan import worker_env

# The Kubernetes name of a model: a DNS label (lower case, digits, dashes), short enough that the
# release prefix and the pod suffix still fit in 63 characters.
NAME_LENGTH = 30
# The chart's own components: a model's Deployment (<release>-<chart>-<name>) must not take their names.
RESERVED = frozenset({"gateway", "service-registry", "model-registry", "minio", "valkey", "workers", "auth",
                      "dashboard"})


def helm_models(d: Deployment) -> list[dict[str, Any]]:
    """The chart's ``models`` list: one entry per model, in file order, with unique names."""
    chosen = d.defaults()
    out: list[dict[str, Any]] = []
    taken: set[str] = set()
    for i, model in enumerate(d.models):
        name = k8s_name(model.name)
        if name in RESERVED or name.startswith("minio-init"):
            name = f"{name[:NAME_LENGTH - 6]}-model"
        if name in taken:  # two served names with the same slug (org1/x, org2/x)
            name = f"{name[:NAME_LENGTH - 4]}-m{i}"
        taken.add(name)
        out.append(_model_values(model, name, chosen.get(model.type) == model.name))
    return out


def _model_values(model: ModelSpec, name: str, default: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "id": model.id}
    if model.served_name and model.served_name != model.id:
        entry["servedName"] = model.served_name
    entry.update({"type": model.type, "engine": model.engine, "revision": model.source.store or "current",
                  "replicas": model.replicas, "gpus": _gpus_per_replica(model), "device": model.placement.device})
    if default:
        entry["default"] = True
    env = {k: v for k, v in worker_env(model, 0).items() if k not in ("WORKER_ID", "WORKER_STORE_MODEL_ID")}
    if env:
        entry["env"] = env
    return entry


def _gpus_per_replica(model: ModelSpec) -> int:
    placement = model.placement
    if placement.gpus is not None:
        return max(len(indices) for indices in placement.gpus)
    if placement.gpu_count is not None:
        return placement.gpu_count
    return 1 if placement.device == "gpu" else 0


def k8s_name(served_name: str) -> str:
    """``HuggingFaceTB/SmolLM2-135M-Instruct`` -> ``smollm2-135m-instruct``: the part after the org,
    lower case, other characters as ``-``, cut to :data:`NAME_LENGTH`."""
    slug = re.sub(r"[^a-z0-9]+", "-", served_name.rsplit("/", 1)[-1].lower()).strip("-")
    return slug[:NAME_LENGTH].strip("-") or "model"


def render_helm_values(d: Deployment, source: str) -> str:
    header = (f"# Rendered from {source} by `model-service render helm-values`; edit that file and render "
              "again.\n# Pass it with the site's own values: helm install ... -f site.yaml -f this-file.yaml\n")
    return header + yaml.safe_dump({"models": helm_models(d)}, sort_keys=False, width=120)

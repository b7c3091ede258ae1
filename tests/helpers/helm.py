"""The Helm chart as tests read it: the Kubernetes tools (installed once by ``scripts/k8s-tools.sh``),
``helm template`` of the chart with a values set, and each container's environment resolved the way
the kubelet resolves it (Secret references, the downward API, ``$(VAR)`` expansion)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "model-service"
EXAMPLES = {p.stem: p for p in sorted((CHART / "examples").glob("*.yaml")) if ".deployment" not in p.name}
RELEASE, NAMESPACE = "ms", "models"
# What the kubelet would put in for a pod's own fields.
POD_FIELDS = {"status.podIP": "10.42.0.7", "metadata.name": "ms-pod-0", "metadata.namespace": NAMESPACE}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def k8s_tools() -> Path:
    """The bin folder holding helm, kubectl, kubernetes-validate and checkov (installed on first use)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "k8s-tools.sh")], capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def helm_template(tools: Path, *values: Path, sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    argv = [str(tools / "helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for v in values:
        argv += ["-f", str(v)]
    for s in sets:
        argv += ["--set", s]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any], bool]]:
    """``(workload, container, is_init)`` for every container of every workload."""
    for d in docs:
        if d["kind"] in WORKLOADS:
            spec = d["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []):
                yield d, c, True
            for c in spec["containers"]:
                yield d, c, False


def resolved_env(container: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's environment as the process sees it. ``secrets``: ``(secret, key) -> value``."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(str(item["value"]), env)
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"], ref["key"]]
        else:
            env[item["name"]] = POD_FIELDS[source["fieldRef"]["fieldPath"]]
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    """``$(NAME)`` becomes an earlier variable's value; an unknown one stays as written (kubelet rule)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)

"""``model-service render compose``: compose files from a deployment file, one service per replica.

Each replica is its own service with its own ``WORKER_ID``, advertise URL and port (so the registry sees
real replicas to balance, unlike ``--scale`` copies that share one name), its GPUs pinned with
``device_ids``. Everything else (MinIO, the registries, the gateway, the image, secrets from ``.env``,
health checks) comes from the template ``deploy/compose/base.yml``. The shipped ``docker-compose.yml``
and ``docker-compose.gpu-cluster.yml`` are rendered from ``deploy/deployments/`` (``make render``), and a
test fails when they drift. In compose the store is MinIO: every model must be in it before the workers
start (``scripts/offline-setup.sh`` or ``model-service models import``); ``up`` imports, compose does not.

A worker whose model names its service (``compose: {service: llm}``) keeps the ``.env`` knobs the
hand-written files had, named after that service: ``<SERVICE>_PORT`` (host port), ``<SERVICE>_MODEL``
(served model) and ``<SERVICE>_GPU`` (one-GPU replicas); the gateway's defaults stay
``DEFAULT_<KIND>_MODEL``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from stack.deployment import GATEWAY_DEFAULT_KIND, Deployment, ModelSpec, replica_ports
from stack.plan import gpu_assignment, worker_env

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "compose" / "base.yml"
INFRA = ("minio", "minio-init", "model-registry", "service-registry", "gateway")
# The container port each infrastructure service listens on, its host-port key in the file and .env name.
PUBLISHED = {"gateway": (8080, "gateway"), "service-registry": (8070, "service_registry"),
             "model-registry": (8090, "model_registry")}
START_PERIOD = {"llm": "300s", "multimodal": "600s", "embedding": "120s", "transcription": "300s", "rerank": "120s"}
DEFAULT_ENV = {model_type: f"GATEWAY_DEFAULT_{kind.upper()}_MODEL" for model_type, kind in GATEWAY_DEFAULT_KIND.items()}
REGENERATE = "make render"


class _Dumper(yaml.SafeDumper):
    """Reads like the hand-written files: plain copies (never ``&id001`` anchors), short lists of scalars
    on one line (``command: [model-service, worker, ...]``), multi-line strings as ``|`` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_list(self, data: list[Any]) -> yaml.Node:
        short = all(isinstance(item, str | int | float) for item in data) and len(str(data)) <= 100
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=short)

    def represent_str(self, data: str) -> yaml.Node:
        return self.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(str, _Dumper.represent_str)


def dump(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120)


def header(source: str, comments: str) -> str:
    """The rendered file's first lines: where it comes from and how to change it, then the deployment
    file's own leading comments (its usage notes)."""
    return (f"# Rendered from {source} by `model-service render compose`.\n"
            f"# Do not edit: edit that file (or deploy/compose/), then run `{REGENERATE}`.\n#\n"
            + comments)


def leading_comments(text: str) -> str:
    """The comment block a deployment file starts with, kept for the rendered file's header."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


def worker_services(d: Deployment) -> list[tuple[str, int, ModelSpec, int, int]]:
    """``(service name, model index, model, replica, port)`` for every replica, in file order."""
    out: list[tuple[str, int, ModelSpec, int, int]] = []
    taken = set(INFRA)
    for i, model, replica, port in replica_ports(d):
        base = model.compose.service or _slug(model.name)
        name = base if model.compose.service and model.replicas == 1 else f"{base}-{replica}"
        if name in taken:  # two served names with the same slug (org1/x, org2/x)
            name = f"{_slug(model.name)}-m{i}-{replica}"
        taken.add(name)
        out.append((name, i, model, replica, port))
    return out


def render_compose(d: Deployment, template: dict[str, Any], source: str, comments: str = "") -> str:
    services = {name: copy.deepcopy(template["services"][name]) for name in INFRA}
    if d.ports.model_registry is None:
        del services["model-registry"]
    for name, (inside, key) in PUBLISHED.items():
        if name in services:
            services[name]["ports"] = [f"${{{_env_name(name)}_PORT:-{getattr(d.ports, key)}}}:{inside}"]
    gateway_env = services["gateway"]["environment"]
    for model_type, name in d.defaults().items():
        variable = DEFAULT_ENV[model_type]
        gateway_env[variable] = f"${{{variable.removeprefix('GATEWAY_')}:-{name}}}"
    gpus = gpu_assignment(d, None)
    for name, i, model, replica, port in worker_services(d):
        services[name] = _worker(template, model, name, replica, port, gpus.get((i, replica)))
    out: dict[str, Any] = {"name": template["name"]}
    if "include" in template:
        out["include"] = template["include"]
    out.update(services=services, volumes=template["volumes"])
    return header(source, comments) + dump(out)


def _worker(template: dict[str, Any], model: ModelSpec, name: str, replica: int, port: int,
            gpus: list[int] | None) -> dict[str, Any]:
    service = {k: v for k, v in copy.deepcopy(template["x-worker"]).items() if k != "environment"}
    if model.compose.profiles:
        service["profiles"] = list(model.compose.profiles)
    env = dict(template["x-app"]["environment"])
    knob = _env_name(name) if model.compose.service else None  # .env knobs only for names the file chose
    env.update({
        "MODEL_NAME": _knob(knob, "MODEL", model.name), "MODEL_TYPE": model.type, "WORKER_ENGINE": model.engine,
        "WORKER_MODEL_SOURCE": "store", "WORKER_MODEL_REVISION": model.source.store or "current",
        "WORKER_REGISTRY_URL": "http://service-registry:8070", "WORKER_ADVERTISE_URL": f"http://{name}:{port}",
        **worker_env(model, replica),
    })
    if model.placement.device == "cpu":
        env["WORKER_DEVICE"] = "cpu"
    env["HEALTHCHECK_URL"] = f"http://127.0.0.1:{port}/health"
    service["command"] = ["model-service", "worker", "--host", "0.0.0.0", "--port", str(port)]
    service["environment"] = env
    service["ports"] = [f"{_knob(knob, 'PORT', port)}:{port}"]
    service["healthcheck"] = {**service["healthcheck"], "start_period": START_PERIOD[model.type]}
    if model.compose.aliases:
        service["networks"] = {"default": {"aliases": list(model.compose.aliases)}}
    if gpus:
        ids = [_knob(knob, "GPU", gpus[0])] if len(gpus) == 1 else [str(g) for g in gpus]
        device = {"driver": "nvidia", "capabilities": ["gpu"], "device_ids": ids}
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return service


def render_prometheus_targets(d: Deployment) -> str:
    """Prometheus ``file_sd`` JSON for the workers job: every replica's compose service and port, by port
    (the registries and the gateway are fixed jobs in prometheus.yml; the metrics carry the model)."""
    targets = [f"{name}:{port}" for name, _, _, _, port in sorted(worker_services(d), key=lambda w: w[4])]
    return json.dumps([{"targets": targets, "labels": {"service": "worker"}}], indent=2) + "\n"


def render_files(d: Deployment, file: Path, extra: list[str]) -> dict[str, str]:
    """The compose file and the ``extra`` files asked for (``prometheus_targets``, ``chatui_env``,
    ``chatui_compose``) from the deployment file at ``file``, named in headers as given on the command line."""
    from stack.render_chatui import render_chatui_compose, render_chatui_env

    source = display_path(file)
    texts = {"compose": render_compose(d, load_template(), source, leading_comments(file.read_text(encoding="utf-8")))}
    makers = {"prometheus_targets": lambda: render_prometheus_targets(d),
              "chatui_env": lambda: render_chatui_env(d, source), "chatui_compose": lambda: render_chatui_compose()}
    texts.update({kind: makers[kind]() for kind in extra})
    return texts


def display_path(file: Path) -> str:
    """The file as the project names it (relative to the checkout when inside it), so a rendered header is
    the same on every machine."""
    resolved = file.resolve()
    return resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else file.name


def _knob(prefix: str | None, what: str, value: object) -> str:
    """``${LLM_PORT:-8000}``: the value, overridable from .env when the service has a chosen name."""
    return f"${{{prefix}_{what}:-{value}}}" if prefix else str(value)


def _env_name(service: str) -> str:
    """``tinyllama`` -> ``TINYLLAMA``, ``model-registry`` -> ``MODEL_REGISTRY``: the .env prefix."""
    return re.sub(r"[^A-Z0-9]+", "_", service.upper())


def _slug(name: str) -> str:
    """A compose service name from a served name: ``HuggingFaceTB/SmolLM2-135M-Instruct`` ->
    ``smollm2-135m-instruct`` (the part after the org, lower case, other characters as ``-``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.rsplit("/", 1)[-1].lower()).strip("-") or "model"


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))

"""``model-service render compose FILE``: a compose file from a deployment file, one service per replica.

Each replica is its own service with its own ``WORKER_ID``, advertise URL and port (so the registry
sees real replicas to balance, unlike ``--scale`` copies that share one name), its GPUs pinned with
``device_ids``. Everything else (MinIO, the registries, the gateway, the image, secrets from ``.env``,
health checks) is taken from the shipped ``docker-compose.yml``, read as the template, so the rendered
file changes with it. In compose the store is MinIO: every model must be in it before the workers start
(``scripts/offline-setup.sh`` or ``model-service models import``); ``up`` imports, compose does not.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from stack.deployment import GATEWAY_DEFAULT_KIND, Deployment, ModelSpec, replica_ports
from stack.plan import gpu_assignment, worker_env

TEMPLATE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
INFRA = ("minio", "minio-init", "model-registry", "service-registry", "gateway")
# The container port each infrastructure service listens on, and its host-port key in the file.
PUBLISHED = {"gateway": (8080, "gateway"), "service-registry": (8070, "service_registry"),
             "model-registry": (8090, "model_registry")}
START_PERIOD = {"llm": "300s", "multimodal": "600s", "embedding": "120s", "transcription": "300s", "rerank": "120s"}
DEFAULT_ENV = {model_type: f"GATEWAY_DEFAULT_{kind.upper()}_MODEL" for model_type, kind in GATEWAY_DEFAULT_KIND.items()}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # plain copies, never &id001 anchors
        return True


def render_compose(d: Deployment, template: dict[str, Any], source: str) -> str:
    services = {name: copy.deepcopy(template["services"][name]) for name in INFRA}
    if d.ports.model_registry is None:
        del services["model-registry"]
    for name, (inside, key) in PUBLISHED.items():
        if name in services:
            services[name]["ports"] = [f"{getattr(d.ports, key)}:{inside}"]
    gateway_env = services["gateway"]["environment"]
    for variable in DEFAULT_ENV.values():
        gateway_env.pop(variable, None)
    for model_type, name in d.defaults().items():
        gateway_env[DEFAULT_ENV[model_type]] = name
    gpus = gpu_assignment(d, None)
    for i, model, replica, port in replica_ports(d):
        name = f"{_slug(model.name)}-{replica}"
        if name in services:  # two served names with the same slug (org1/x, org2/x)
            name = f"{_slug(model.name)}-m{i}-{replica}"
        services[name] = _worker(template, model, name, replica, port, gpus.get((i, replica)))
    out = {"name": template["name"], "services": services, "volumes": template["volumes"]}
    header = (f"# Rendered from {source} by `model-service render compose`; edit that file and render again.\n"
              "# Secrets come from .env, as for docker-compose.yml. Every model must be in the store first.\n")
    return header + yaml.dump(out, Dumper=_Dumper, sort_keys=False, width=120)


def _worker(template: dict[str, Any], model: ModelSpec, name: str, replica: int, port: int,
            gpus: list[int] | None) -> dict[str, Any]:
    service = {k: v for k, v in copy.deepcopy(template["x-worker"]).items() if k != "environment"}
    env = dict(template["x-app"]["environment"])
    env.update({
        "MODEL_NAME": model.name, "MODEL_TYPE": model.type, "WORKER_ENGINE": model.engine,
        "WORKER_MODEL_SOURCE": "store", "WORKER_MODEL_REVISION": model.source.store or "current",
        "WORKER_REGISTRY_URL": "http://service-registry:8070", "WORKER_ADVERTISE_URL": f"http://{name}:{port}",
        **worker_env(model, replica),
    })
    if model.placement.device == "cpu":
        env["WORKER_DEVICE"] = "cpu"
    env["HEALTHCHECK_URL"] = f"http://127.0.0.1:{port}/health"
    service["command"] = ["model-service", "worker", "--host", "0.0.0.0", "--port", str(port)]
    service["environment"] = env
    service["ports"] = [f"{port}:{port}"]
    service["healthcheck"] = {**service["healthcheck"], "start_period": START_PERIOD[model.type]}
    if gpus:
        device = {"driver": "nvidia", "capabilities": ["gpu"], "device_ids": [str(g) for g in gpus]}
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return service


def _slug(name: str) -> str:
    """A compose service name from a served name: ``HuggingFaceTB/SmolLM2-135M-Instruct`` ->
    ``smollm2-135m-instruct`` (the part after the org, lower case, other characters as ``-``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.rsplit("/", 1)[-1].lower()).strip("-") or "model"


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))

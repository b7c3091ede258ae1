"""From a deployment file to the processes ``up`` starts, and the machine checks made before any starts.

Every replica is its own worker process with its own port, worker id and advertise URL, so the
service registry sees real replicas and the gateway balances them. The settings a file gives a worker
(limits, engine arguments, GPUs) travel as ``WORKER_*`` environment variables, the names its settings
already read; store and auth settings as the variables every service reads.
"""

from __future__ import annotations

import itertools
import json
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common.gpu import gpu_count
from stack.deployment import GATEWAY_DEFAULT_KIND, Deployment, ModelSpec, replica_ports, service_ports

if TYPE_CHECKING:
    import subprocess

REGISTRY_NAMES = ("registry", "models")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    url: str
    model: str | None = None  # the served name, for a worker
    replica: int | None = None  # its replica number, for a worker
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class PlanError(RuntimeError):
    """The machine cannot run the file as given (a port taken, too few GPUs); nothing was started."""


def taken_ports(d: Deployment) -> list[str]:
    """One line per port some other program holds, naming the service that wanted it.

    Binds each port the way uvicorn does (``SO_REUSEADDR``), so a port only in TIME_WAIT counts as free.
    """
    lines = []
    for service, port, _ in service_ports(d):
        problem = port_problem(d.host, port)
        if problem is not None:
            lines.append(f"port {port} on {d.host} (wanted by {service}) is not free: {problem}")
    return lines


def port_problem(host: str, port: int) -> str | None:
    """None when ``port`` on ``host`` can be bound now (0: any free port), else why not."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def any_free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def gpu_assignment(d: Deployment, available: int | None) -> dict[tuple[int, int], list[int]]:
    """``{(model index, replica): GPU indices}``: explicit lists as given, ``gpu_count`` replicas take the
    lowest indices nobody named. ``available`` None: the GPU count is unknown (no NVML), not checked."""
    named = {g for m in d.models for gpus in (m.placement.gpus or []) for g in gpus}
    indices = itertools.count() if available is None else iter(range(available))
    unnamed = (g for g in indices if g not in named)
    out: dict[tuple[int, int], list[int]] = {}
    for i, model in enumerate(d.models):
        for replica in range(model.replicas):
            if model.placement.gpus is not None:
                out[i, replica] = list(model.placement.gpus[replica])
            elif model.placement.gpu_count is not None:
                out[i, replica] = list(itertools.islice(unnamed, model.placement.gpu_count))
                if len(out[i, replica]) < model.placement.gpu_count:
                    raise PlanError(f"{model.name} replica {replica} needs {model.placement.gpu_count} GPU(s); "
                                    f"this machine has {available} and the file gives the others out")
    if available is not None:
        beyond = sorted({g for gpus in out.values() for g in gpus if g >= available})
        if beyond:
            raise PlanError(f"GPU index {beyond[0]} is named in the file; this machine has {available} GPU(s)")
    return out


def local_gpu_assignment(d: Deployment) -> dict[tuple[int, int], list[int]]:
    """``gpu_assignment`` on this machine (``up`` and ``apply``): NVML is asked only when a model wants a GPU."""
    return gpu_assignment(d, gpu_count()) if any(m.placement.uses_gpu for m in d.models) else {}


def advertise_host(host: str) -> str:
    return socket.gethostname() if host in ("0.0.0.0", "::") else host


@dataclass
class Planner:
    deployment: Deployment
    revisions: dict[str, str]  # model id -> store revision; empty with the fake engine
    log_level: str = "warning"
    gpus: dict[tuple[int, int], list[int]] = field(default_factory=dict)

    @property
    def registry_url(self) -> str:
        return f"http://{self.deployment.host}:{self.deployment.ports.service_registry}"

    def children(self) -> list[Child]:
        """Registries first, then workers, the gateway last (readiness and the banner rely on it)."""
        d = self.deployment
        out = [self._service("registry", "service-registry", d.ports.service_registry)]
        if d.ports.model_registry is not None:
            out.append(self._service("models", "model-registry", d.ports.model_registry))
        out += self.workers()
        gateway_args = ["--registry-url", self.registry_url, *gateway_default_flags(d)]
        gateway = self._service("gateway", "gateway", d.ports.gateway, *gateway_args)
        if d.ports.model_registry is not None:  # the console's Models page reads the store through it
            gateway.env["GATEWAY_MODEL_REGISTRY_URL"] = f"http://{d.host}:{d.ports.model_registry}"
        out.append(gateway)
        return out

    def _service(self, name: str, command: str, port: int, *extra: str) -> Child:
        host = self.deployment.host
        argv = [sys.executable, "-m", "stack", command, "--host", host, "--port", str(port),
                "--log-level", self.log_level, *extra]
        return Child(name, argv, {}, f"http://{host}:{port}")

    def workers(self) -> list[Child]:
        """Only the worker processes (what ``apply`` compares with the running ones)."""
        d = self.deployment
        return [self._worker(i, model, replica, port) for i, model, replica, port in replica_ports(d)]

    def _worker(self, index: int, model: ModelSpec, replica: int, port: int) -> Child:
        host = self.deployment.host
        url = f"http://{advertise_host(host)}:{port}"
        argv = [sys.executable, "-m", "stack", "worker", "--host", host, "--port", str(port),
                "--model-name", model.name, "--model-type", model.type, "--engine", model.engine,
                "--log-level", self.log_level, "--registry-url", self.registry_url, "--advertise-url", url]
        if model.engine != "fake":
            argv += ["--model-source", "store", "--model-revision", self.revisions[model.id]]
        env = worker_env(model, replica)
        gpus = self.gpus.get((index, replica))
        if gpus:
            argv += ["--device", f"cuda:{gpus[0]}"]
            env["WORKER_GPU_INDICES"] = ",".join(map(str, gpus))
        elif model.placement.device == "cpu":
            argv += ["--device", "cpu"]
        label = model.type if model.replicas == 1 else f"{model.type}-{replica}"
        return Child(label, argv, env, f"http://{host}:{port}", model=model.name, replica=replica)


def worker_env(model: ModelSpec, replica: int) -> dict[str, str]:
    """The ``WORKER_*`` settings one replica gets from the file, the same for ``up`` and rendered compose:
    its own id, the store id when it differs from the served name, engine arguments and limits."""
    env = {"WORKER_ID": f"{model.name}-r{replica}"}
    if model.name != model.id:
        env["WORKER_STORE_MODEL_ID"] = model.id
    settings = {**model.engine_args, **model.limits.model_dump(exclude_none=True)}
    env.update({f"WORKER_{key.upper()}": _env_value(value) for key, value in settings.items()})
    return env


def gateway_default_flags(d: Deployment) -> list[str]:
    """``--default-chat-model NAME`` and the like for every type the file has a default for."""
    return [arg for model_type, name in d.defaults().items()
            for arg in (f"--default-{GATEWAY_DEFAULT_KIND[model_type]}-model", name)]


def _env_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def environment(d: Deployment) -> dict[str, str]:
    """What every service (and ``up`` itself, for the imports) reads for the store and auth."""
    env = {f"MODEL_REGISTRY_{key.upper()}": _env_value(value)
           for key, value in d.store.model_dump(exclude_none=True).items()}
    if d.auth.enabled is not None:
        env["MODEL_SERVICE_AUTH"] = _env_value(d.auth.enabled)
    return env


def write_prometheus_targets(d: Deployment, path: Path, worker_ports: list[int] | None = None) -> None:
    """Prometheus ``file_sd`` targets: one group per service kind, every process's /metrics address.

    ``worker_ports``: where the workers really listen, when that is no longer the file's ports (after
    ``apply`` started replicas elsewhere); Prometheus rereads the file, so it follows."""
    host = advertise_host(d.host)
    groups: dict[str, list[str]] = {}
    for service, port, field_path in service_ports(d):
        job = "worker" if field_path[0] == "models" else service.replace(" ", "-")
        if job != "worker" or worker_ports is None:
            groups.setdefault(job, []).append(f"{host}:{port}")
    if worker_ports is not None:
        groups["worker"] = [f"{host}:{port}" for port in worker_ports]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"targets": t, "labels": {"job": job}} for job, t in groups.items()], indent=2))

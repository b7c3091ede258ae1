"""Internal records passed between services (worker health, GPU facts)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ModelType = Literal["llm", "embedding", "multimodal", "transcription"]

# What each model type can do, as advertised in /v1/models and used by the gateway to route.
CAPABILITIES: dict[str, list[str]] = {
    "llm": ["chat", "completions"],
    "embedding": ["embeddings"],
    "multimodal": ["chat", "completions", "vision"],
    "transcription": ["transcription"],
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

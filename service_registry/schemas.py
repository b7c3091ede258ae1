"""Request and answer bodies of the registration API, shared by the routes and :mod:`client`.

Plain pydantic, no FastAPI, so a worker can build a :class:`Registration` without importing the
registry's web app. Validation errors become 400s in OpenAI's shape through ``common.errors``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.records import ModelType
from service_registry.urls import normalize_url


class Registration(BaseModel):
    """What a worker says about itself. Sending it again with the same id is a heartbeat."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")
    url: str
    models: list[str] = Field(min_length=1)
    type: ModelType
    gpu_indices: list[int] = Field(default_factory=list)
    capacity: int | None = Field(default=None, ge=1)
    priority: int | None = None
    heartbeat_interval: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalize_url(value)

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        cleaned = [m.strip() for m in value]
        if any(not m for m in cleaned):
            raise ValueError("model ids must not be empty")
        return list(dict.fromkeys(cleaned))  # drop repeats, keep order

    @field_validator("gpu_indices")
    @classmethod
    def _gpus(cls, value: list[int]) -> list[int]:
        if any(i < 0 for i in value):
            raise ValueError("GPU indices must be >= 0")
        return sorted(set(value))


class RegistrationAnswer(BaseModel):
    id: str
    created: bool  # false: the id was known and this counted as a heartbeat
    heartbeat_interval_s: float | None
    expires_after_s: float


class HeartbeatAnswer(BaseModel):
    id: str
    expires_after_s: float


class DeregistrationAnswer(BaseModel):
    id: str
    deleted: bool = True

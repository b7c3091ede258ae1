"""Registry settings (env prefix ``REGISTRY_``) and the static external upstreams it is configured with.

Static upstreams are OpenAI-compatible servers the registry did not start (a vLLM box, a hosted API).
They come from ``REGISTRY_STATIC_UPSTREAMS`` (a JSON list) and/or ``REGISTRY_STATIC_FILE`` (a JSON
or YAML file holding the same list). Each entry::

    {"id": "vllm-a", "base_url": "http://10.0.0.5:8000/v1", "api_key": "sk-...",
     "models": {"qwen-0.5b": "Qwen/Qwen2.5-0.5B-Instruct"}, "type": "llm", "priority": 100}

``base_url`` is the OpenAI API base (what the OpenAI SDK calls ``base_url``); a URL with no path gets
``/v1`` appended. ``models`` maps public ids to upstream names, or is a plain list when they match.
``api_key_env`` names an environment variable to read the key from instead of writing it down.
The key is a ``SecretStr``: it prints as ``**********`` and no registry response or log carries it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.records import ModelType, ServiceRecord
from common.settings import ServiceSettings
from service_registry.urls import api_base_of


class StaticUpstream(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    id: str = Field(min_length=1, max_length=128)
    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    models: dict[str, str] = Field(min_length=1)
    type: ModelType = "llm"
    priority: int = 100
    capacity: int | None = Field(default=None, ge=1)

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return api_base_of(value)

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        """A plain list means each public id is also the upstream name."""
        if isinstance(value, list | tuple):
            return {str(m): str(m) for m in value}
        return value

    @field_validator("models")
    @classmethod
    def _no_blank_models(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not k.strip() or not v.strip() for k, v in value.items()):
            raise ValueError("model ids and upstream names must not be empty")
        return value

    @model_validator(mode="after")
    def _key_from_env(self) -> StaticUpstream:
        if self.api_key is None and self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ValueError(f"api_key_env names {self.api_key_env!r}, which is not set")
            object.__setattr__(self, "api_key", SecretStr(key))
        return self

    def record(self) -> ServiceRecord:
        """The public view: everything the gateway needs except the key itself."""
        return ServiceRecord(
            id=self.id, kind="external", url=self.base_url, api_base=self.base_url, models=tuple(self.models),
            upstream_models=self.models, type=self.type, capacity=self.capacity, priority=self.priority,
            has_api_key=self.api_key is not None,
        )


_STATIC_LIST = TypeAdapter(list[StaticUpstream])


def load_static_file(path: Path) -> list[StaticUpstream]:
    """Read a JSON (or, with PyYAML installed, YAML) file holding a list of static upstreams."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # not a base dependency; JSON always works
            raise ValueError(f"{path}: YAML needs PyYAML installed; use a .json file instead") from exc
        data = yaml.safe_load(text) or []
    else:
        data = json.loads(text)
    if isinstance(data, dict) and "upstreams" in data:
        data = data["upstreams"]
    return _STATIC_LIST.validate_python(data)


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REGISTRY_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")

    port: int = 8070
    # One poll round every this many seconds; every service is probed concurrently in a round.
    poll_interval_s: float = Field(default=2.0, gt=0)
    # Bound on one service's whole probe (health + GPU stats), so a stuck service cannot stall a round.
    probe_timeout_s: float = Field(default=2.0, gt=0)
    # Hysteresis: a healthy service turns unhealthy after this many failed probes in a row...
    unhealthy_after: int = Field(default=2, ge=1)
    # ...and any other state turns healthy after this many successful probes in a row.
    healthy_after: int = Field(default=1, ge=1)
    # A worker is dropped when it has not heartbeated for heartbeat_ttl_factor x its heartbeat interval,
    # or for heartbeat_ttl_s when it registered without saying its interval.
    heartbeat_ttl_s: float = Field(default=15.0, gt=0)
    heartbeat_ttl_factor: float = Field(default=3.0, ge=1)
    # Priority of self-registered workers when they do not say (lower is preferred).
    default_worker_priority: int = 0
    static_upstreams: list[StaticUpstream] = Field(default_factory=list)
    static_file: Path | None = None

    def all_static_upstreams(self) -> list[StaticUpstream]:
        """Upstreams from the env list and the file together; a repeated id is a start-up error."""
        upstreams = list(self.static_upstreams)
        if self.static_file is not None:
            upstreams += load_static_file(self.static_file)
        seen: set[str] = set()
        for up in upstreams:
            if up.id in seen:
                raise ValueError(f"static upstream id {up.id!r} is configured twice")
            seen.add(up.id)
        return upstreams

    def ttl_for(self, heartbeat_interval_s: float | None) -> float:
        if heartbeat_interval_s is None:
            return self.heartbeat_ttl_s
        return heartbeat_interval_s * self.heartbeat_ttl_factor

"""Gateway settings (env prefix ``GATEWAY_``).

``GATEWAY_WORKERS`` names the model workers to route to. Operators type it by hand in ``.env`` and
compose files, so a plain comma-separated list is accepted as well as a JSON list.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")

    port: int = 8080
    # Base URLs of the model workers, e.g. ``http://127.0.0.1:8000,http://127.0.0.1:8001``.
    workers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Used when a request leaves ``model`` out; unset means the first healthy model of the endpoint's
    # type, in the order the workers are configured.
    default_chat_model: str | None = None
    default_embedding_model: str | None = None
    # Health probing of the workers.
    probe_interval_s: float = Field(default=2.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)
    # Upstream calls. The read timeout bounds the wait for each chunk, not the whole generation.
    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=300.0, gt=0)
    # How many other replicas to try after a failure that happened before the first byte.
    retries: int = Field(default=2, ge=0)
    max_connections: int = Field(default=512, ge=1)
    max_keepalive_connections: int = Field(default=64, ge=0)

    @field_validator("workers", mode="before")
    @classmethod
    def _split_workers(cls, value: Any) -> Any:
        """Accept ``a,b``, ``["a", "b"]`` (JSON text) or a real list; drop blanks and trailing ``/``."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"GATEWAY_WORKERS is not a valid JSON list: {exc}") from exc
            else:
                value = text.split(",")
        if isinstance(value, list | tuple):
            urls = [str(v).strip().rstrip("/") for v in value]
            for url in urls:
                if url and not url.startswith(("http://", "https://")):
                    raise ValueError(f"worker URL {url!r} must start with http:// or https://")
            return list(dict.fromkeys(u for u in urls if u))
        return value

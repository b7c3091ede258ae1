"""Settings base shared by every service (pydantic-settings, one env prefix per service)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Common knobs. Subclasses set their own ``env_prefix`` (``GATEWAY_``, ``WORKER_``, ...)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # Largest request body accepted, in bytes; larger ones get 413 before they are parsed.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=0)

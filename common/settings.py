"""Settings base shared by every service (pydantic-settings, one env prefix per service)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.body_limit import DEFAULT_BODY_DEADLINE_S, DEFAULT_BODY_TIMEOUT_S


def service_home() -> Path:
    """``$MODEL_SERVICE_HOME`` or ``~/.cache/model-service``: where every service keeps its local files
    (the store, the model cache, the starter models, the gateway's keys and usage log)."""
    home = os.environ.get("MODEL_SERVICE_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "model-service"


class ServiceSettings(BaseSettings):
    """Common knobs. Subclasses set their own ``env_prefix`` (``GATEWAY_``, ``WORKER_``, ...)."""

    # Empty values count as unset: compose files pass optional variables as `${VAR:-}`.
    # hide_input_in_errors: a bad value is never printed in a start-up error (it may be a password).
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      env_ignore_empty=True, hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # Largest request body accepted, in bytes; larger ones get 413 before they are parsed.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    # A request body with no new chunk for this long, or still arriving this long after the request
    # started, gets 408 and the connection is closed (0: no limit). Slow clients must not hold a slot.
    body_timeout_s: float = Field(default=DEFAULT_BODY_TIMEOUT_S, ge=0)
    body_deadline_s: float = Field(default=DEFAULT_BODY_DEADLINE_S, ge=0)


# Values that ship in .env.example or are well-known defaults: a deployment must replace them.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "minioadmin", "placeholder")


class PlaceholderSecretError(ValueError):
    """A secret still has its example value outside a dev environment."""


def deployment_env() -> str:
    """``MODEL_SERVICE_ENV``: ``dev`` allows placeholder secrets; anything else (default) refuses them."""
    return os.environ.get("MODEL_SERVICE_ENV", "production").strip().lower()


def refuse_placeholder_secrets(secrets: dict[str, str | None]) -> None:
    """Fail start-up when a named secret looks like an example value, unless ``MODEL_SERVICE_ENV=dev``.

    Sites copy ``.env.example`` and forget a line; starting with a published password is worse than
    not starting, so the error names the variable (never its value).
    """
    if deployment_env() == "dev":
        return
    bad = [name for name, value in secrets.items()
           if value and any(marker in value.lower() for marker in PLACEHOLDER_MARKERS)]
    if bad:
        raise PlaceholderSecretError(
            f"{', '.join(sorted(bad))} still hold(s) a placeholder value; set real secrets in .env "
            "(or MODEL_SERVICE_ENV=dev for a throw-away setup)"
        )

"""Gateway settings (env prefix ``GATEWAY_``).

``GATEWAY_WORKERS`` names the model workers to route to. Operators type it by hand in ``.env`` and
compose files, so a plain comma-separated list is accepted as well as a JSON list.
``GATEWAY_REGISTRY_URL`` makes the gateway follow the service registry as well (both may be set).

External upstreams' API keys: the registry never hands them out, so the gateway reads the same
static-upstream configuration (``REGISTRY_STATIC_UPSTREAMS`` / ``REGISTRY_STATIC_FILE``, or the
``GATEWAY_`` spellings) and keeps only the keys, by upstream id.

The user-key file and the usage log default to files under the model-service home
(``$MODEL_SERVICE_HOME`` or ``~/.cache/model-service``), next to the local store and the model cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import ServiceSettings, service_home
from service_registry.settings import StaticUpstream, load_static_file


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", populate_by_name=True)

    port: int = 8080
    # Base URLs of the model workers, e.g. ``http://127.0.0.1:8000,http://127.0.0.1:8001``.
    workers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Used when a request leaves ``model`` out; unset means the first healthy model of the endpoint's
    # type, in the order the workers are configured.
    default_chat_model: str | None = None
    default_embedding_model: str | None = None
    # For /v1/audio/* without a model; unset = the first healthy transcription model.
    default_transcription_model: str | None = None
    # For a chat request that carries images and no model; unset = the first healthy multimodal model.
    default_multimodal_model: str | None = None
    # For /v1/rerank (and /rerank, /v2/rerank) without a model; unset = the first healthy rerank model.
    default_rerank_model: str | None = None
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

    # The service registry to follow (its GET /services, read every probe_interval_s); unset = static only.
    registry_url: str | None = None
    # After a restarted registry comes back, keep replicas it has not re-learned yet for this long.
    registry_settle_s: float = Field(default=10.0, ge=0)
    # Larger than a worker's 8 MiB: the gateway passes on the largest upload any worker accepts (a
    # 25 MiB audio file, a 20 MiB image base64-encoded in JSON); each worker then applies its own cap.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    routing_policy: Literal["least_outstanding", "round_robin"] = "least_outstanding"
    # Passive circuit breaker per replica: open after this many consecutive failures before the first
    # byte, let one probe request through after the cooldown.
    circuit_failures: int = Field(default=3, ge=1)
    circuit_cooldown_s: float = Field(default=5.0, gt=0)
    # Backoff before retry n on another replica: about base * 2**(n-1), capped.
    retry_backoff_s: float = Field(default=0.05, ge=0)
    retry_backoff_max_s: float = Field(default=0.5, ge=0)
    # Off by default: a replica whose GPU memory used/total reaches this fraction gets no new requests.
    # NVML reports what a process has reserved, not what it uses: PyTorch's caching allocator keeps
    # freed blocks and vLLM reserves gpu_memory_utilization (0.9) of the card at start, so an idle,
    # healthy worker can read 90-99 % and would be locked out. A worker's own admission (429 when its
    # queue is full) is the overload signal; a GPU that reports an NVML error is always skipped.
    gpu_memory_limit: float | None = Field(default=None, gt=0, le=1)
    # Per-model fallback when a model has no usable replica, e.g. {"big-model": "small-model"}.
    fallbacks: dict[str, str] = Field(default_factory=dict)
    # The same static upstream list the registry reads, for the API keys only.
    static_upstreams: list[StaticUpstream] = Field(
        default_factory=list,
        validation_alias=AliasChoices("static_upstreams", "GATEWAY_STATIC_UPSTREAMS", "REGISTRY_STATIC_UPSTREAMS"),
    )
    static_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("static_file", "GATEWAY_STATIC_FILE", "REGISTRY_STATIC_FILE"),
    )

    # The model registry the console's Models page reads (store contents and download jobs), with the
    # service token; unset: the page says it is not configured. Env: GATEWAY_MODEL_REGISTRY_URL.
    model_registry_url: str | None = None
    # The running ``model-service up``'s control endpoint (``up`` sets it), through which the console's
    # Deployment panel applies a changed deployment file; unset (compose, Kubernetes): the panel says so.
    control_url: str | None = None

    # User API keys (``model-service keys ...``): a JSON file of SHA-256 digests, never the secrets.
    keys_file: Path = Field(default_factory=lambda: service_home() / "gateway" / "keys.json")
    # The usage and audit log: one JSON line per request, rotated by size.
    usage_log_enabled: bool = True
    usage_log: Path = Field(default_factory=lambda: service_home() / "gateway" / "usage.log")
    usage_log_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    usage_log_backup_count: int = Field(default=5, ge=1)
    # Also log prompts and answers (off: only counts and ids; turning it on stores what users typed).
    usage_log_content: bool = False
    # Per-request caps checked before any worker is called (unset: no cap).
    max_tokens_limit: int | None = Field(default=None, ge=1)
    max_embedding_inputs: int | None = Field(default=None, ge=1)
    # The whole upstream answer must end within this many seconds of the request (0: no deadline);
    # read_timeout_s still bounds each wait for a chunk.
    upstream_deadline_s: float = Field(default=900.0, ge=0)

    # Shared state for several gateway replicas (docs/api-keys-and-limits.md): a Redis or Valkey URL,
    # ``redis://host:port/db`` (``rediss://`` for TLS; a password as ``redis://:secret@host:port/0``).
    # Unset: every limit, key change and usage summary stays in this process, as for one gateway.
    redis_url: str | None = None
    # Prepended to every name this gateway uses in the store, so several platforms can share one server.
    redis_prefix: str = "msp:"
    # Each store call's socket timeout; a store slower than this counts as down (see the docs).
    redis_timeout_s: float = Field(default=0.5, gt=0)
    # How often each replica checks the store for key changes made on another replica.
    redis_sync_interval_s: float = Field(default=0.2, gt=0, le=1)
    # How long the shared per-minute usage rollups are kept.
    redis_usage_retention_days: int = Field(default=35, ge=1)

    def api_keys(self) -> dict[str, SecretStr]:
        """Upstream id -> API key, for every configured upstream that has one (keys stay secret)."""
        upstreams = list(self.static_upstreams)
        if self.static_file is not None:
            upstreams += load_static_file(self.static_file)
        return {u.id: u.api_key for u in upstreams if u.api_key is not None}

    @field_validator("registry_url")
    @classmethod
    def _registry_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"GATEWAY_REGISTRY_URL {value!r} must start with http:// or https://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("GATEWAY_REDIS_URL must start with redis://, rediss:// or unix:// "
                             "(e.g. redis://valkey:6379/0)")
        return value

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

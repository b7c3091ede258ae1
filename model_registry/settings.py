"""Model registry settings (env prefix ``MODEL_REGISTRY_``).

The seed's documented names (``MINIO_ENDPOINT``, ``MINIO_SVC_USER``/``MINIO_ROOT_USER``,
``MINIO_SVC_PASSWORD``/``MINIO_ROOT_PASSWORD``, ``HF_TOKEN``, ``HF_ENDPOINT``) are read as-is through
``AliasChoices`` so one ``.env`` serves MinIO, the registry and the offline-setup script alike. The
prefixed name always wins over the seed name, and the service account over the root account.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import ServiceSettings, service_home

P = "MODEL_REGISTRY_"


def _alias(field: str, *seed_names: str) -> AliasChoices:
    return AliasChoices(P + field.upper(), *seed_names)


def default_store_root() -> Path:
    """``$MODEL_SERVICE_HOME/store`` or ``~/.cache/model-service/store`` (next to the starter cache)."""
    return service_home() / "store"


class ModelRegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=P, env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      validate_by_name=True, validate_by_alias=True)

    port: int = 8090
    storage_backend: Literal["local", "s3"] = "local"
    # Local folder backend: where objects live (created on start).
    local_root: Path = Field(default_factory=default_store_root)
    # S3 / MinIO backend.
    s3_endpoint: str = Field(default="127.0.0.1:9000", validation_alias=_alias("s3_endpoint", "MINIO_ENDPOINT"))
    s3_access_key: str | None = Field(
        default=None, validation_alias=_alias("s3_access_key", "MINIO_SVC_USER", "MINIO_ROOT_USER"))
    s3_secret_key: SecretStr | None = Field(
        default=None, validation_alias=_alias("s3_secret_key", "MINIO_SVC_PASSWORD", "MINIO_ROOT_PASSWORD"))
    s3_secure: bool = Field(default=False, validation_alias=_alias("s3_secure", "MINIO_SECURE"))
    s3_bucket: str = Field(default="models", validation_alias=_alias("s3_bucket", "MINIO_BUCKET"))
    s3_region: str | None = Field(default=None, validation_alias=_alias("s3_region", "MINIO_REGION"))
    # Multipart part size for uploads of unknown length (S3 needs >= 5 MiB).
    s3_part_size: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)
    # Hugging Face (used only while mirroring; never echoed in a response or a log).
    hf_token: SecretStr | None = Field(default=None, validation_alias=_alias("hf_token", "HF_TOKEN"))
    hf_endpoint: str | None = Field(default=None, validation_alias=_alias("hf_endpoint", "HF_ENDPOINT"))
    # Where downloads are staged before they enter the store (default: the system temp folder).
    tmp_dir: Path | None = None
    # Jobs: how many run at once, and whether a restart resumes unfinished ones (else cleans them up).
    max_concurrent_jobs: int = Field(default=2, ge=1)
    resume_jobs: bool = True
    # Folders ``POST /models/{id}/import`` may read from (comma-separated). Empty: any path the
    # registry's user can read, which is fine on one machine; a shared registry should name its
    # import folders, so an admin key alone cannot make it read and hash the whole disk.
    import_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    @field_validator("import_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("s3_endpoint", mode="after")
    @classmethod
    def _strip_endpoint(cls, value: str) -> str:
        return value.strip().rstrip("/")

    def s3_host_and_secure(self) -> tuple[str, bool]:
        """``MINIO_ENDPOINT`` may be ``host:port`` or a URL; a scheme decides TLS when present."""
        endpoint = self.s3_endpoint
        for scheme, secure in (("https://", True), ("http://", False)):
            if endpoint.startswith(scheme):
                return endpoint[len(scheme):], secure
        return endpoint, self.s3_secure

"""Worker settings: one model per process, chosen by environment variables.

``MODEL_NAME``, ``MODEL_TYPE`` and ``MODEL_PATH`` keep the seed's documented names (the compose files
and the CLI set them); every other knob reads ``WORKER_<FIELD>``. ``device``/``dtype`` default to
``auto`` and are resolved once at load time, so the same image runs on a GPU host and on a laptop.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings

WorkerModelType = Literal["llm", "embedding"]


class WorkerSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="WORKER_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        populate_by_name=True, protected_namespaces=(),
    )

    port: int = 8000
    model_name: str = Field(
        default="default-model", validation_alias=AliasChoices("WORKER_MODEL_NAME", "MODEL_NAME"),
    )
    model_type: WorkerModelType = Field(
        default="llm", validation_alias=AliasChoices("WORKER_MODEL_TYPE", "MODEL_TYPE"),
    )
    # Folder holding the Hugging Face model files; the fake engine needs none.
    model_path: str | None = Field(
        default=None, validation_alias=AliasChoices("WORKER_MODEL_PATH", "MODEL_PATH"),
    )
    engine: Literal["auto", "fake"] = "auto"
    device: str = "auto"
    dtype: str = "auto"

    # Requests the engine works on at once (the transformers engine runs one sequence at a time) and
    # requests allowed to wait for a slot; beyond that a request is answered 429 at once.
    max_concurrency: int = Field(default=1, ge=1)
    max_queue: int = Field(default=16, ge=0)
    retry_after_s: int = Field(default=1, ge=0)
    # Completion tokens when a request gives no max_tokens (always capped by the context length).
    default_max_tokens: int = Field(default=1024, ge=1)
    # Context length; taken from the model's config when absent.
    max_model_len: int | None = Field(default=None, ge=1)

    # Fake engine knobs, for HTTP-layer tests without a model.
    fake_token_delay_s: float = Field(default=0.0, ge=0.0)
    fake_load_delay_s: float = Field(default=0.0, ge=0.0)
    fake_load_error: str | None = None
    fake_embedding_dims: int = Field(default=384, ge=1)
    fake_max_model_len: int = Field(default=2048, ge=1)

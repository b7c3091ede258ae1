"""Worker settings: one model per process, chosen by environment variables.

``MODEL_NAME``, ``MODEL_TYPE`` and ``MODEL_PATH`` keep the seed's documented names (the compose files
and the CLI set them); every other knob reads ``WORKER_<FIELD>``. ``device``/``dtype`` default to
``auto`` and are resolved once at load time, so the same image runs on a GPU host and on a laptop.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import ServiceSettings, service_home
from model_service.engines import engine_name

# Room for the multipart form or JSON around the largest media upload (see _media_body_limit).
MEDIA_BODY_MARGIN = 1024 * 1024

WorkerModelType = Literal["llm", "embedding", "multimodal", "transcription", "rerank"]


def default_cache_dir() -> Path:
    """``$MODEL_SERVICE_HOME/cache`` or ``~/.cache/model-service/cache``: next to the local store."""
    return service_home() / "cache"


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
    # Where the files come from: "path" loads MODEL_PATH as is; "store" fetches the model (store id:
    # store_model_id, default MODEL_NAME) from the model store that MODEL_REGISTRY_* / MINIO_* describe
    # into cache_dir, verifies every sha256 and loads the verified copy offline (model_files.py).
    model_source: Literal["path", "store"] = "path"
    model_revision: str = Field(
        default="current", validation_alias=AliasChoices("WORKER_MODEL_REVISION", "MODEL_REVISION"),
    )
    store_model_id: str | None = None
    cache_dir: Path = Field(default_factory=default_cache_dir)
    # "auto" (the usual engine for model_type) or a name registered in model_service.engines.ENGINES.
    engine: str = "auto"
    device: str = "auto"
    dtype: str = "auto"

    # Requests the engine works on at once (default: the batch size below, so every admitted request
    # can share the batch) and requests allowed to wait for a slot; beyond that 429 at once.
    max_concurrency: int | None = Field(default=None, ge=1)
    max_queue: int = Field(default=16, ge=0)
    # llm continuous batching: sequences decoded together, and prompt tokens per prefill forward pass
    # (longer prompts are prefilled in chunks of this size between decode steps).
    max_batch_size: int = Field(default=32, ge=1)
    max_batch_tokens: int = Field(default=512, ge=16)
    # embedding (and rerank) micro-batching: inputs (query-document pairs) per encode call, and how long
    # the first input waits for company.
    embedding_max_batch_size: int = Field(default=32, ge=1)
    embedding_max_wait_ms: float = Field(default=5.0, ge=0.0)
    # What token-id arrays in an embeddings ``input`` mean: OpenAI's cl100k_base ids (what LangChain's
    # OpenAIEmbeddings sends by default), decoded to text; or the model's own ids (vLLM's meaning).
    embedding_token_ids: Literal["cl100k_base", "model"] = "cl100k_base"
    # ``dimensions``: auto = allowed where the model's config declares Matryoshka training
    # (``matryoshka_dimensions`` / ``is_matryoshka``, as vLLM reads them); on = any size; off = refused.
    embedding_matryoshka: Literal["auto", "on", "off"] = "auto"
    # CPU threads for the model's compute, for every engine (model_threads says what each one gets):
    # torch.set_num_threads in the thread that runs a torch model, ONNX Runtime's intra_op_num_threads,
    # faster-whisper's cpu_threads, llama-server's --threads, vLLM CPU's OpenMP threads. An engine's
    # own setting (whisper_cpu_threads, llamacpp_threads, vllm_cpu_threads) wins where set; unset =
    # each library's default (one per core). Env: WORKER_TORCH_THREADS.
    torch_threads: int | None = Field(default=None, ge=1)
    retry_after_s: int = Field(default=1, ge=0)
    # Completion tokens when a request gives no max_tokens (always capped by the context length).
    default_max_tokens: int = Field(default=1024, ge=1)
    # Context length; taken from the model's config when absent.
    max_model_len: int | None = Field(default=None, ge=1)

    # Self-registration with the service registry (registration.py); unset registry_url = none.
    registry_url: str | None = None
    # The URL the gateway and registry reach this worker at; default http://{host}:{port} (the
    # machine's host name when bound to 0.0.0.0). Set it behind NAT or in containers.
    advertise_url: str | None = None
    # Default "{model_name}@{host}:{port}" of the advertised URL. Env: WORKER_ID.
    worker_id: str | None = Field(default=None, validation_alias=AliasChoices("WORKER_ID", "WORKER_WORKER_ID"))
    gpu_indices: Annotated[list[int], NoDecode] = Field(default_factory=list)  # e.g. "0" or "0,1"
    heartbeat_interval_s: float = Field(default=5.0, gt=0, le=3600)
    # Graceful stop (SIGTERM, model_service/drain.py): deregister, answer 503 to new requests for at
    # least drain_linger_s (gateways following the registry stop picking it meanwhile), let in-flight
    # requests finish for at most drain_timeout_s, then exit.
    drain_linger_s: float = Field(default=3.0, ge=0)
    drain_timeout_s: float = Field(default=30.0, ge=0)

    @field_validator("gpu_indices", mode="before")
    @classmethod
    def _split_gpu_indices(cls, value: Any) -> Any:
        """Accept ``0,1`` or ``[0, 1]`` as typed in ``.env`` and compose files."""
        if isinstance(value, str):
            text = value.strip().strip("[]")
            return [int(part) for part in text.split(",") if part.strip()]
        return value

    # multimodal: image parts per request, and limits on each image (encoded bytes, decoded pixels).
    # Sites are offline, so http(s) image URLs are refused unless allowed; data: URLs always work.
    max_images: int = Field(default=8, ge=1)
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=16_000_000, ge=1)
    allow_remote_images: bool = False
    image_fetch_timeout_s: float = Field(default=10.0, gt=0)

    # transcription: upload bytes and decoded audio length per request (beyond: 413 / 400), and the
    # Whisper decoding knobs (compute_type "auto": int8 on CPU, float16 on CUDA; faster-whisper only).
    max_audio_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    max_audio_seconds: float = Field(default=1800.0, gt=0)
    whisper_compute_type: str = "auto"
    whisper_beam_size: int = Field(default=5, ge=1)
    whisper_cpu_threads: int = Field(default=0, ge=0)  # 0 = torch_threads, else the library's default

    # Supervised engine servers (llamacpp): seconds the child may take to answer its health check.
    # llamacpp: CPU threads (default: every core), parallel slots (default: the admission slots, so
    # every admitted request decodes at once; each slot holds a full max_model_len of KV cache), and
    # more llama-server options, appended last so they win (e.g. "--flash-attn on").
    engine_start_timeout_s: float = Field(default=300.0, gt=0)
    llamacpp_threads: int | None = Field(default=None, ge=1)
    llamacpp_parallel: int | None = Field(default=None, ge=1)
    llamacpp_extra_args: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # vllm (docs/engines.md): engine arguments that reach vLLM's server (vllm_args.VllmOptions). A
    # deployment file's ``engine_args: {vllm_enforce_eager: true}`` arrives as WORKER_VLLM_ENFORCE_EAGER.
    # dtype, max_model_len and gpu_indices are the worker's own; max_num_seqs is the admission slots.
    vllm_gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    vllm_prefix_caching: bool = True
    vllm_enforce_eager: bool = False  # skip torch.compile / CUDA graphs: starts in ~40 s instead of minutes
    vllm_kv_cache_gib: int = Field(default=2, ge=1)  # CPU only: VLLM_CPU_KVCACHE_SPACE
    vllm_cpu_threads: int | None = Field(default=None, ge=1)  # CPU only: OpenMP threads (default every core)
    vllm_tool_call_parser: str | None = None  # e.g. hermes, llama3_json: native tool calls
    vllm_reasoning_parser: str | None = None
    vllm_structured_outputs_backend: str | None = None  # xgrammar, guidance, outlines
    vllm_extra_args: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("llamacpp_extra_args", "vllm_extra_args", mode="before")
    @classmethod
    def _split_args(cls, value: Any) -> Any:
        """Shell-style words, as typed in ``.env``: ``--flash-attn on --mlock``."""
        return shlex.split(value) if isinstance(value, str) else value

    # Fake engine knobs, for HTTP-layer tests without a model.
    fake_token_delay_s: float = Field(default=0.0, ge=0.0)
    fake_load_delay_s: float = Field(default=0.0, ge=0.0)
    fake_load_error: str | None = None
    fake_embedding_dims: int = Field(default=384, ge=1)
    fake_max_model_len: int = Field(default=2048, ge=1)

    @model_validator(mode="after")
    def _media_body_limit(self) -> WorkerSettings:
        """Media workers accept a body as large as the upload they advertise.

        The common 8 MiB body cap would cut off a 25 MiB audio file or a 20 MiB image (27 MiB once
        base64-encoded in JSON) long before ``max_audio_bytes``/``max_image_bytes`` could apply, so
        unless ``WORKER_MAX_BODY_BYTES`` is set, a transcription or multimodal worker raises its cap
        to the largest upload plus 1 MiB for the multipart or JSON around it."""
        if "max_body_bytes" in self.model_fields_set:
            return self
        if self.model_type == "transcription":
            self.max_body_bytes = max(self.max_body_bytes, self.max_audio_bytes + MEDIA_BODY_MARGIN)
        elif self.model_type == "multimodal":
            encoded = -(-self.max_image_bytes * 4 // 3)  # base64 in a data: URL
            self.max_body_bytes = max(self.max_body_bytes, encoded + MEDIA_BODY_MARGIN)
        return self

    @model_validator(mode="after")
    def _known_engine(self) -> WorkerSettings:
        """An engine nobody registered, or one that does not serve model_type, fails here, at start-up."""
        engine_name(self.engine, self.model_type, self.model_path)
        return self

    def model_threads(self, engine_own: int | None = None) -> int | None:
        """The CPU threads an engine runs its model with: its own setting when given (a positive
        ``whisper_cpu_threads``, ``llamacpp_threads``, ``vllm_cpu_threads``), else ``torch_threads``,
        else None (the library's default). The one place that decides, so every engine reads the
        worker's threads setting the same way."""
        return engine_own or self.torch_threads

    def engine_concurrency(self) -> int:
        """Admission slots: ``max_concurrency`` when set, else as many as one batch holds."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        if self.model_type == "transcription":
            return 1  # one transcription already uses every core (or the GPU); the rest queue
        micro_batched = self.model_type in ("embedding", "rerank")
        return self.embedding_max_batch_size if micro_batched else self.max_batch_size

"""Every engine the worker can run, by name: ``ENGINES`` is the one place an engine is registered.

Adding an engine is one module plus one entry here (docs/adding-an-engine.md): a class (or factory)
that takes ``WorkerSettings`` and implements ``base.Engine`` plus the capability classes of the model
types it serves. ``WorkerSettings.engine`` accepts exactly these names and ``auto``, which picks
``AUTO[model_type]``; ``--engine`` offers the same list. Entries are ``"module:attribute"`` strings
imported on first use, so the fake engine (and the HTTP tests using it) never pay for importing torch.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from model_service.engines.base import Embedder, Engine, Reranker, TextGenerator, Transcriber
from model_service.engines.onnx_files import is_onnx_folder

if TYPE_CHECKING:
    from model_service.settings import WorkerSettings

EngineFactory = Callable[["WorkerSettings"], Engine]


@dataclass(frozen=True)
class EngineSpec:
    """How to build an engine (a factory, or ``"module:attribute"`` naming one) and the model types
    it serves; settings refuse any other pairing before anything loads."""

    factory: EngineFactory | str
    model_types: tuple[str, ...]

    def build(self, settings: WorkerSettings) -> Engine:
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory(settings)


# The model types the registry exports to ONNX; ``auto`` runs such an export on the onnx engine.
ONNX_TYPES = ("embedding", "rerank")
ENGINES: dict[str, EngineSpec] = {
    "fake": EngineSpec("model_service.engines.fake:FakeEngine",
                       ("llm", "embedding", "multimodal", "transcription", "rerank")),
    "transformers": EngineSpec("model_service.engines.llm:TransformersLLM", ("llm",)),
    "transformers-vision": EngineSpec("model_service.engines.vision:TransformersVision", ("multimodal",)),
    "sentence-transformers": EngineSpec("model_service.engines.embedding:SentenceTransformerEngine", ("embedding",)),
    # ONNX Runtime on a revision the registry exported ('models export-onnx'); auto picks it for one.
    "onnx": EngineSpec("model_service.engines.onnx_session:build_onnx_engine", ONNX_TYPES),
    "cross-encoder": EngineSpec("model_service.engines.rerank:CrossEncoderEngine", ("rerank",)),
    # faster-whisper for a CTranslate2 folder, transformers for a Hugging Face one (whisper.folder_kind).
    "whisper": EngineSpec("model_service.engines.whisper:build_whisper_engine", ("transcription",)),
    # llama.cpp's llama-server, supervised as a child, for a GGUF file (or a folder holding one).
    "llamacpp": EngineSpec("model_service.engines.llamacpp:LlamaCppEngine", ("llm",)),
    # vLLM's OpenAI server from its own venv (make vllm-venv), supervised as a child, for a HF folder.
    "vllm": EngineSpec("model_service.engines.vllm:VllmEngine", ("llm",)),
}
# What ``engine=auto`` runs for each model type.
AUTO = {"llm": "transformers", "multimodal": "transformers-vision", "embedding": "sentence-transformers",
        "transcription": "whisper", "rerank": "cross-encoder"}
# The capability an engine needs to serve each model type's endpoints.
CAPABILITIES: dict[str, type[Engine]] = {"llm": TextGenerator, "multimodal": TextGenerator,
                                         "embedding": Embedder, "transcription": Transcriber,
                                         "rerank": Reranker}


def engine_name(engine: str, model_type: str, model_path: str | None = None) -> str:
    """The registered engine that ``engine`` (a name or ``auto``) means for ``model_type``; ValueError
    for a name nobody registered or an engine that does not serve this model type. ``auto`` picks
    ``AUTO[model_type]``, except that an llm whose ``model_path`` is a GGUF file (or a folder holding
    one) runs on llamacpp: transformers would have to de-quantise it; any other llm runs on vllm where it
    serves best (a CUDA GPU on the host and the CUDA vLLM venv installed); and an embedding or rerank
    folder holding an ONNX export and no torch weights runs on onnx. A store model's path is only known once fetched, so
    the worker asks again with the fetched folder."""
    name = AUTO.get(model_type, "") if engine == "auto" else engine
    if engine == "auto" and model_type == "llm":
        name = _auto_llm(model_path)
    if engine == "auto" and model_type in ONNX_TYPES and model_path and is_onnx_folder(model_path):
        name = "onnx"
    spec = ENGINES.get(name)
    if spec is None:
        raise ValueError(f"unknown engine {engine!r}; use 'auto' or one of {sorted(ENGINES)}")
    if model_type not in spec.model_types:
        raise ValueError(f"the {name!r} engine serves {', '.join(spec.model_types)} models, not {model_type!r}")
    return name


def _auto_llm(model_path: str | None) -> str:
    """GGUF → llamacpp; CUDA + the vLLM CUDA venv → vllm; else transformers (docs/engines.md)."""
    if model_path and _is_gguf(model_path):
        return "llamacpp"
    if _vllm_gpu_ready():
        return "vllm"
    return AUTO["llm"]


@functools.cache
def _vllm_gpu_ready() -> bool:
    """An NVIDIA GPU is visible (NVML, without importing torch) and the CUDA vLLM venv is installed.
    Asked once per process; ``MODEL_SERVICE_AUTO_VLLM=0`` turns the choice off."""
    from model_service.engine_paths import find_vllm_python

    if os.environ.get("MODEL_SERVICE_AUTO_VLLM", "1") == "0" or find_vllm_python("cuda") is None:
        return False
    from common.gpu import gpu_count

    return (gpu_count() or 0) > 0


def _is_gguf(model_path: str) -> bool:
    """A .gguf file, or a folder holding one and no Hugging Face config (which transformers would load)."""
    path = Path(model_path)
    if path.is_dir():
        return not (path / "config.json").exists() and any(path.glob("*.gguf"))
    return path.suffix == ".gguf"


def build_engine(settings: WorkerSettings) -> Engine:
    """The engine the settings name, not loaded yet; it must have the capability its model type needs."""
    name = engine_name(settings.engine, settings.model_type, settings.model_path)
    engine = ENGINES[name].build(settings)
    needs = CAPABILITIES[settings.model_type]
    if not isinstance(engine, needs):
        raise TypeError(f"the {name!r} engine ({type(engine).__name__}) is not a {needs.__name__}, "
                        f"which {settings.model_type} models need")
    return engine

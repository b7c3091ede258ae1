"""Engines behind one interface (``base.Engine``); ``build_engine`` picks one from the settings.

Real engines are imported lazily so the fake engine (and the HTTP tests using it) never pay for
importing torch.
"""

from __future__ import annotations

from model_service.engines.base import Engine
from model_service.settings import WorkerSettings


def build_engine(settings: WorkerSettings) -> Engine:
    if settings.engine == "fake":
        from model_service.engines.fake import FakeEngine

        return FakeEngine(settings)
    if settings.model_type == "llm":
        from model_service.engines.llm import TransformersLLM

        return TransformersLLM(settings)
    if settings.model_type == "embedding":
        from model_service.engines.embedding import SentenceTransformerEngine

        return SentenceTransformerEngine(settings)
    if settings.model_type == "multimodal":
        from model_service.engines.vision import TransformersVision

        return TransformersVision(settings)
    if settings.model_type == "transcription":
        from model_service.engines.whisper import build_whisper_engine

        return build_whisper_engine(settings)
    raise ValueError(f"no engine for model type {settings.model_type!r}")

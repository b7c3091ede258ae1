"""Fixtures for in-process apps: the worker app inside its lifespan, reached through ASGITransport, real
engines loaded once per session, and the tiny vision and whisper models built once per session."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_service.settings import WorkerSettings
from tests.helpers.onnx import OnnxExports, export_minilm
from tests.helpers.rerank import build_tiny_cross_encoder
from tests.helpers.vision import build_tiny_llava
from tests.helpers.whisper import build_tiny_whisper
from tests.helpers.workers import WorkerClientFactory, loaded_engine, worker_client_for


@pytest.fixture
def worker_client() -> WorkerClientFactory:
    """``async with worker_client(model_type=..., **settings) as client`` for a fake-engine worker."""

    def factory(wait_ready: bool = True, **overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        values: dict[str, Any] = {"engine": "fake", "model_name": "fake-model", "model_type": "llm"}
        values.update(overrides)
        return worker_client_for(WorkerSettings(_env_file=None, **values), wait_ready=wait_ready)

    return factory


# The shared real-model engines run in float32 on purpose: their tests compare batched with unbatched
# output (equal tokens, cosine > 0.9999), which is exact only in float32. ``auto`` would pick bf16 on a
# CPU with AMX or on a GPU, where a padded row's near-ties can flip; test_batching_llm.py covers bf16
# with a claim that holds there.
@pytest.fixture(scope="session")
def worker_llm_engine(smollm_path):
    """The real SmolLM2 chat model (float32), loaded once per session and shared by the real-model tests."""
    yield from loaded_engine(model_name="smollm2", model_type="llm", model_path=str(smollm_path), dtype="float32")


@pytest.fixture(scope="session")
def worker_embedding_engine(minilm_path):
    """The real all-MiniLM-L6-v2 embedder (float32), loaded once per session."""
    yield from loaded_engine(model_name="minilm", model_type="embedding", model_path=str(minilm_path),
                             dtype="float32")


@pytest.fixture(scope="session")
def tiny_llava_path(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA with the SmolLM2 tokenizer (tests/helpers/vision.py says why)."""
    return build_tiny_llava(smollm_path, tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def tiny_whisper_hf_path(whisper_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Hugging Face Whisper with whisper-base's tokenizer (tests/helpers/whisper.py says why)."""
    return build_tiny_whisper(whisper_path / "tokenizer.json", tmp_path_factory.mktemp("tiny-whisper-hf"))


@pytest.fixture(scope="session")
def speech_bytes(speech_wav: Path) -> bytes:
    """The real speech WAV's bytes, as a client uploads them."""
    return speech_wav.read_bytes()


@pytest.fixture(scope="session")
def tiny_cross_encoder_path(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random cross-encoder with the MiniLM tokenizer (tests/helpers/rerank.py says why)."""
    return build_tiny_cross_encoder(minilm_path, tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="session")
def onnx_exports(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxExports:
    """The real MiniLM in a local store with its fp32 and int8 ONNX exports, fetched (built once)."""
    return export_minilm(minilm_path, tmp_path_factory.mktemp("onnx-store"))

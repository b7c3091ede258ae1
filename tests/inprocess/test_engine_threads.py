"""``WORKER_TORCH_THREADS`` reaches every engine's model, through each engine's own code path.

torch keeps its intra-op thread count per calling thread (OpenMP), so what counts is the count seen
*inside the thread that runs the model*: the llm scheduler's generation thread, the vision engine's
decode thread, the pool thread a transcription runs on. Each test observes ``torch.get_num_threads()``
from a call the engine itself makes into the real model. Engines that are not torch get the number
their own way: faster-whisper's ``cpu_threads``, llama-server's ``--threads``, vLLM CPU's OpenMP binding.
The embedding batcher and the ONNX sessions are covered in test_onnx_engine.py / test_onnx_rerank.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model_service.engines.base import SamplingParams
from model_service.engines.llamacpp import LlamaCppEngine
from model_service.engines.speech import TranscribeParams
from model_service.engines.vllm import child_env, vllm_options
from model_service.settings import WorkerSettings
from tests.helpers.workers import loaded_engine


def _fresh_thread_default() -> int:
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


# 1 as a site would set it; 2 only where a new thread would already have 1 (a one-core host), so
# every assertion below fails unless the engine applied the setting.
THREADS = 1 if _fresh_thread_default() != 1 else 2


def _observe(owner: Any, method: str, seen: list[int]) -> None:
    """Record torch's thread count each time the engine calls ``owner.method`` (from its own thread)."""
    original: Callable[..., Any] = getattr(owner, method)

    def observed(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    setattr(owner, method, observed)


async def _generate(engine: Any, prompt_ids: list[int]) -> None:
    async for _ in engine.generate(prompt_ids, SamplingParams(max_tokens=2, temperature=0.0)):
        pass


async def test_the_llm_scheduler_thread(smollm_path: Path) -> None:
    for engine in loaded_engine(model_name="smollm", model_type="llm", model_path=str(smollm_path),
                                engine="transformers", dtype="float32", torch_threads=THREADS):
        seen: list[int] = []
        _observe(engine.model, "forward", seen)
        await _generate(engine, engine.text_prompt("The capital of France is"))
        assert seen and set(seen) == {THREADS}, seen  # prefill and decode, in the generation thread


async def test_the_vision_decode_thread(tiny_llava_path: Path) -> None:
    for engine in loaded_engine(model_name="tiny-llava", model_type="multimodal", model_path=str(tiny_llava_path),
                                dtype="float32", torch_threads=THREADS):
        seen: list[int] = []
        _observe(engine.model, "forward", seen)
        await _generate(engine, engine.text_prompt("Hello"))
        assert seen and set(seen) == {THREADS}, seen


async def test_the_transformers_whisper_pool_thread(tiny_whisper_hf_path: Path) -> None:
    for engine in loaded_engine(model_name="whisper-tiny-hf", model_type="transcription",
                                model_path=str(tiny_whisper_hf_path), whisper_beam_size=1, torch_threads=THREADS):
        assert engine.name == "transformers-whisper"
        seen: list[int] = []
        _observe(engine.model, "generate", seen)
        silence = np.zeros(16_000, dtype=np.float32)
        await asyncio.to_thread(engine.transcribe, silence, TranscribeParams(language="en"))  # as the route does
        assert seen == [THREADS]


def test_faster_whisper_is_built_with_the_threads(whisper_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import faster_whisper

    built: list[int] = []

    class Recording(faster_whisper.WhisperModel):  # the real model, its constructor arguments noted
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(kwargs["cpu_threads"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(faster_whisper, "WhisperModel", Recording)
    values = {"model_name": "whisper-base", "model_type": "transcription", "model_path": str(whisper_path)}
    for engine in loaded_engine(**values, torch_threads=THREADS):
        assert engine.name == "faster-whisper"
    for _ in loaded_engine(**values, torch_threads=THREADS, whisper_cpu_threads=3):  # the engine's own wins
        pass
    assert built == [THREADS, 3]


def test_llama_server_gets_the_threads(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")

    def argv(**values: Any) -> list[str]:
        engine = LlamaCppEngine(WorkerSettings(_env_file=None, model_path=str(gguf), **values))
        engine._binary, engine.max_model_len = tmp_path / "llama-server", 2048  # what load() finds
        args = engine.argv(8081)
        return args[args.index("--threads") + 1:args.index("--threads") + 2]

    assert argv(torch_threads=THREADS) == [str(THREADS)]
    assert argv(torch_threads=THREADS, llamacpp_threads=3) == ["3"]


def test_vllm_cpu_gets_the_threads() -> None:
    def binding(**values: Any) -> str:
        settings = WorkerSettings(_env_file=None, engine="vllm", **values)
        return child_env(settings, vllm_options(settings, "float32", 2048))["VLLM_CPU_OMP_THREADS_BIND"]

    assert binding(torch_threads=THREADS) == f"0-{THREADS - 1}"
    assert binding(torch_threads=THREADS, vllm_cpu_threads=3) == "0-2"

"""The vllm engine's pure parts: the request it sends, how it reads vLLM's chunks and refusals, the
engine arguments from settings, and what ``auto`` picks (no vLLM needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidRequestError
from model_service import engines
from model_service.engines.base import SamplingParams
from model_service.engines.vllm import VllmEngine, completion_body, to_delta, upstream_error, vllm_options
from model_service.settings import WorkerSettings


def test_completion_body_sends_every_sampling_value_and_asks_for_token_ids() -> None:
    params = SamplingParams(max_tokens=7, temperature=0.0, top_p=0.9, seed=3, logprobs=True, top_logprobs=2,
                            logit_bias={42: -100.0})
    body = completion_body("smol", [1, 2, 3], params)
    assert body["prompt"] == [1, 2, 3] and body["stream"] and body["return_token_ids"]
    assert body["model"] == "smol" and body["max_tokens"] == 7 and body["top_k"] == -1 and body["seed"] == 3
    assert body["logprobs"] == 2 and body["logit_bias"] == {"42": -100.0}
    assert "stop" not in body and "stream_options" not in body  # stop strings and usage are the worker's


def test_to_delta_reads_tokens_text_finish_and_logprobs() -> None:
    event = {"choices": [{"index": 0, "text": " Paris", "token_ids": [7042], "finish_reason": "stop",
                          "logprobs": {"tokens": [" Paris"], "token_logprobs": [-0.1],
                                       "top_logprobs": [{" Paris": -0.1, " Lyon": -3.0}]}}]}
    delta = to_delta(event)
    assert delta is not None and delta.text == " Paris" and delta.token_ids == [7042]
    assert delta.finish_reason == "stop" and delta.logprobs[0].top == [(" Paris", -0.1), (" Lyon", -3.0)]
    assert to_delta({"choices": [], "usage": {"completion_tokens": 1}}) is None
    with pytest.raises(RuntimeError, match="vLLM: boom"):
        to_delta({"error": "boom"})


def test_vllm_400_stays_a_400_in_our_shape_and_other_failures_are_500s() -> None:
    refused = upstream_error(400, b'{"error": {"message": "too long", "type": "BadRequestError"}}')
    assert isinstance(refused, InvalidRequestError) and "too long" in refused.message
    failed = upstream_error(500, b"oops")
    assert isinstance(failed, RuntimeError) and not isinstance(failed, InvalidRequestError)


def test_options_come_from_worker_settings() -> None:
    settings = WorkerSettings(_env_file=None, engine="vllm", gpu_indices="0,1", max_concurrency=16,
                              vllm_gpu_memory_utilization=0.8, vllm_tool_call_parser="hermes",
                              vllm_extra_args="--seed 1")
    options = vllm_options(settings, "auto", 2048)
    assert options.gpus == (0, 1) and options.max_num_seqs == 16 and options.gpu_memory_utilization == 0.8
    assert options.tool_call_parser == "hermes" and options.extra_args == ("--seed", "1")
    assert options.max_model_len == 2048 and options.prefix_caching


def test_the_engine_needs_a_hugging_face_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Hugging Face model folder"):
        VllmEngine(WorkerSettings(_env_file=None, engine="vllm", model_path=str(tmp_path)))


def test_auto_picks_vllm_only_with_cuda_and_its_venv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(engines, "_vllm_gpu_ready", lambda: True)
    assert engines.engine_name("auto", "llm", str(tmp_path)) == "vllm"
    assert engines.engine_name("auto", "embedding", str(tmp_path)) == "sentence-transformers"
    monkeypatch.setattr(engines, "_vllm_gpu_ready", lambda: False)
    assert engines.engine_name("auto", "llm", str(tmp_path)) == "transformers"


def test_no_gpu_here_means_no_vllm_for_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    engines._vllm_gpu_ready.cache_clear()
    monkeypatch.setenv("MODEL_SERVICE_AUTO_VLLM", "0")
    try:
        assert engines._vllm_gpu_ready() is False
    finally:
        engines._vllm_gpu_ready.cache_clear()

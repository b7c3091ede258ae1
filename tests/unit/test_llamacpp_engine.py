"""The llamacpp engine's pure parts: which paths are GGUF (and so what ``auto`` picks), the
``/completion`` request it sends, and how llama-server's streamed events become deltas (the event
shapes are the ones this llama.cpp version streams; the e2e tests run the real server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_service.engines import engine_name
from model_service.engines.base import SamplingParams
from model_service.engines.llamacpp import completion_body, gguf_file, to_delta
from model_service.settings import WorkerSettings


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.Q4_1.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_a_gguf_file_or_a_folder_with_one(gguf: Path, tmp_path: Path) -> None:
    assert gguf_file(gguf) == gguf and gguf_file(tmp_path) == gguf
    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match=r"2 \.gguf files"):
        gguf_file(tmp_path)
    assert gguf_file(tmp_path / "other.gguf").name == "other.gguf"
    (tmp_path / "config.json").write_text("{}")
    assert gguf_file(tmp_path / "config.json") is None


def test_auto_picks_llamacpp_for_a_gguf_llm_only(gguf: Path, tmp_path: Path) -> None:
    assert engine_name("auto", "llm", str(gguf)) == "llamacpp"
    assert engine_name("auto", "llm", str(tmp_path)) == "llamacpp"  # the store's folder with the file
    assert engine_name("auto", "llm", None) == "transformers"
    assert engine_name("transformers", "llm", str(gguf)) == "transformers"  # an explicit choice stands
    (tmp_path / "config.json").write_text("{}")  # a Hugging Face folder that also has a GGUF
    assert engine_name("auto", "llm", str(tmp_path)) == "transformers"
    with pytest.raises(ValueError, match="serves llm models"):
        engine_name("llamacpp", "embedding", str(gguf))
    settings = WorkerSettings(_env_file=None, model_path=str(gguf), llamacpp_extra_args="--flash-attn on")
    assert settings.llamacpp_extra_args == ["--flash-attn", "on"]


def test_completion_body_sends_token_ids_and_openai_sampling() -> None:
    body = completion_body([1, 2, 3], SamplingParams(max_tokens=5, temperature=0.0, top_p=0.9, seed=7,
                                                     presence_penalty=0.5, logprobs=True, top_logprobs=0))
    assert body["prompt"] == [1, 2, 3] and body["stream"] is True and body["return_tokens"] is True
    assert body["n_predict"] == 5 and body["temperature"] == 0.0 and body["top_p"] == 0.9 and body["seed"] == 7
    assert body["presence_penalty"] == 0.5 and body["n_probs"] == 1
    # llama.cpp's own defaults would change what OpenAI parameters mean: off.
    assert body["top_k"] == 0 and body["min_p"] == 0.0 and body["repeat_penalty"] == 1.0
    plain = completion_body([1], SamplingParams(max_tokens=1))
    assert "seed" not in plain and "n_probs" not in plain and "logit_bias" not in plain


def test_completion_body_passes_the_vllm_sampling_extensions() -> None:
    body = completion_body([1, 2, 3], SamplingParams(max_tokens=4, top_k=5, min_p=0.1, repetition_penalty=1.2,
                                                     logit_bias={3: -100.0, 9: 2.5}))
    assert body["top_k"] == 5 and body["min_p"] == 0.1 and body["repeat_penalty"] == 1.2
    assert body["repeat_last_n"] == 3 + 4  # prompt and output, as vLLM's repetition_penalty
    assert body["logit_bias"] == [[3, -100.0], [9, 2.5]]


def test_streamed_events_become_deltas() -> None:
    token = {"index": 0, "content": " Paris", "tokens": [7042], "stop": False, "completion_probabilities": [
        {"id": 7042, "token": " Paris", "logprob": -0.1,
         "top_logprobs": [{"id": 7042, "token": " Paris", "logprob": -0.1}, {"id": 1, "token": " Lyon",
                                                                             "logprob": -3.0}]}]}
    delta = to_delta(token)
    assert delta.text == " Paris" and delta.token_ids == [7042] and delta.finish_reason is None
    assert delta.logprobs[0].logprob == -0.1 and delta.logprobs[0].top == [(" Paris", -0.1), (" Lyon", -3.0)]
    assert to_delta({"content": "", "tokens": [], "stop": True, "stop_type": "eos"}).finish_reason == "stop"
    assert to_delta({"content": "", "tokens": [], "stop": True, "stop_type": "limit"}).finish_reason == "length"
    assert to_delta({"content": "", "tokens": [], "stop": False}) is None
    with pytest.raises(RuntimeError, match="slot unavailable"):
        to_delta({"error": {"code": 503, "message": "slot unavailable"}})


def test_llama_server_gets_the_json_schema_to_constrain_with() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = completion_body([1, 2], SamplingParams(max_tokens=8, grammar="(unused)", json_schema=schema))
    assert body["json_schema"] == schema
    assert "json_schema" not in completion_body([1, 2], SamplingParams(max_tokens=8))

"""Adding an engine is one module plus one registration (docs/adding-an-engine.md), shown for real.

The tiny engine below is the whole "module": a class implementing ``Engine`` plus the capabilities
it serves. Registering it is one entry in ``model_service.engines.ENGINES`` (patched here for the
test's length; a real engine adds its line to that dict). Nothing else changes: settings accept
``engine="tiny"``, the worker builds and loads it, and the worker's own routes serve it with
everything the worker keeps for every engine (health, stop strings, n choices, usage, streaming).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from model_service.engines import ENGINES, EngineSpec
from model_service.engines.base import Delta, Embedder, Embeddings, EngineInfo, SamplingParams, TextGenerator
from model_service.settings import WorkerSettings
from stack.cli import build_parser
from tests.helpers.http import sse_events
from tests.helpers.workers import worker_client_for


class TinyEngine(TextGenerator, Embedder):
    """Answers the last user message upper-cased, one character per token; embeds text as 2 numbers."""

    name = "tiny"

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def info(self) -> EngineInfo:
        return EngineInfo(engine=self.name, device="cpu", max_model_len=64, embedding_dims=2)

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        return [ord(c) for c in messages[-1]["content"]]

    def text_prompt(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    async def generate(self, prompt_ids: list[int], params: SamplingParams,
                       media: Any = None) -> AsyncIterator[Delta]:
        answer = [ord(chr(i).upper()) for i in prompt_ids]
        for step, token in enumerate(answer[: params.max_tokens]):
            last = step + 1 == len(answer) or step + 1 == params.max_tokens
            reason = ("stop" if step + 1 == len(answer) else "length") if last else None
            yield Delta(text=chr(token), token_ids=[token], finish_reason=reason)

    async def embed(self, texts: list[str]) -> Embeddings:
        return Embeddings(vectors=[[float(len(t)), 1.0] for t in texts], prompt_tokens=sum(map(len, texts)))


@pytest.fixture
def tiny_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one registration: a name, the factory, the model types it serves."""
    monkeypatch.setitem(ENGINES, "tiny", EngineSpec(TinyEngine, ("llm", "embedding")))


def tiny_settings(model_type: str = "llm") -> WorkerSettings:
    return WorkerSettings(_env_file=None, engine="tiny", model_name="tiny-model", model_type=model_type)


async def test_a_registered_engine_serves_chat_through_the_worker(tiny_registered: None) -> None:
    async with worker_client_for(tiny_settings()) as client:
        health = await client.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok" and health.json()["engine"] == "tiny"
        assert health.json()["max_model_len"] == 64
        assert client.app.state.worker.engine.loaded  # type: ignore[attr-defined]

        resp = await client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hello, tiny"}], "n": 2, "stop": [","]})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        # Stop strings, n choices and usage are the worker's, not the engine's.
        assert [c["message"]["content"] for c in body["choices"]] == ["HELLO", "HELLO"]
        assert [c["finish_reason"] for c in body["choices"]] == ["stop", "stop"]
        assert body["usage"]["prompt_tokens"] == len("hello, tiny")

        stream = await client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "abc"}], "stream": True, "max_tokens": 2})
        events = sse_events(stream.text)
        assert events[-1] == "[DONE]"
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
        assert text == "AB"
        assert [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]][-1] == "length"


async def test_a_registered_engine_serves_embeddings_through_the_worker(tiny_registered: None) -> None:
    async with worker_client_for(tiny_settings("embedding")) as client:
        assert (await client.get("/health")).json()["engine"] == "tiny"
        resp = await client.post("/v1/embeddings", json={"input": ["four", "sixsix"]})
        assert resp.status_code == 200, resp.text
        assert [d["embedding"] for d in resp.json()["data"]] == [[4.0, 1.0], [6.0, 1.0]]
        assert resp.json()["usage"]["prompt_tokens"] == 10


def test_the_registry_is_what_settings_and_the_command_accept(tiny_registered: None) -> None:
    worker = build_parser().parse_args(["worker", "--engine", "tiny"])
    assert worker.engine == "tiny"
    with pytest.raises(ValidationError, match="serves llm, embedding models, not 'transcription'"):
        tiny_settings("transcription")
    with pytest.raises(ValidationError, match="unknown engine 'tinier'"):
        WorkerSettings(_env_file=None, engine="tinier")

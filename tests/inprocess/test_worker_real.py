"""The worker with its real engines on the real starter models (SmolLM2-135M, all-MiniLM-L6-v2).

Token budgets stay small: on two CPU cores SmolLM2 makes roughly 15-20 tokens a second.
"""

from __future__ import annotations

import asyncio
import math

from model_service.settings import WorkerSettings
from model_service.vectors import from_base64
from tests.helpers.http import LONG_CHAT_BODY, call_and_disconnect, sse_events
from tests.helpers.polling import eventually
from tests.helpers.workers import worker_client_for

CHAT = "/v1/chat/completions"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
LLM = WorkerSettings(_env_file=None, model_name="smollm2", model_type="llm", model_path="unused")
EMB = WorkerSettings(_env_file=None, model_name="minilm", model_type="embedding", model_path="unused")


async def test_llm_answers_capital_of_france(worker_llm_engine):
    async with worker_client_for(LLM, worker_llm_engine) as client:
        health = (await client.get("/health")).json()
        assert health["engine"] == "transformers" and health["device"] == "cpu"
        assert health["max_model_len"] == 8192
        resp = await client.post(CHAT, json={"model": "smollm2", "messages": FRANCE, "temperature": 0,
                                             "max_tokens": 12})
        body = resp.json()
        assert resp.status_code == 200, body
        assert "Paris" in body["choices"][0]["message"]["content"]
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"]["prompt_tokens"] > 10 and body["usage"]["completion_tokens"] <= 12


async def test_llm_stream_matches_non_stream(worker_llm_engine):
    async with worker_client_for(LLM, worker_llm_engine) as client:
        req = {"messages": FRANCE, "temperature": 0, "max_tokens": 6}
        full = (await client.post(CHAT, json=req)).json()
        resp = await client.post(CHAT, json={**req, "stream": True, "stream_options": {"include_usage": True}})
        chunks = sse_events(resp.text)[:-1]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == full["choices"][0]["message"]["content"]
        assert chunks[-2]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["usage"] == full["usage"]


async def test_llm_stop_string_and_logprobs(worker_llm_engine):
    async with worker_client_for(LLM, worker_llm_engine) as client:
        body = (await client.post(CHAT, json={"messages": FRANCE, "temperature": 0, "max_tokens": 12,
                                              "stop": [" Paris"], "logprobs": True, "top_logprobs": 2})).json()
        choice = body["choices"][0]
        assert choice["message"]["content"] == "The capital of France is"
        assert choice["finish_reason"] == "stop"
        first = choice["logprobs"]["content"][0]
        assert first["token"] == "The" and first["logprob"] <= 0
        assert first["top_logprobs"][0]["logprob"] >= first["top_logprobs"][1]["logprob"]


async def test_llm_seeded_sampling_is_reproducible(worker_llm_engine):
    async with worker_client_for(LLM, worker_llm_engine) as client:
        req = {"prompt": "Once upon a time", "temperature": 1.0, "seed": 11, "max_tokens": 4, "n": 2}
        one = (await client.post("/v1/completions", json=req)).json()
        two = (await client.post("/v1/completions", json=req)).json()
        assert [c["text"] for c in one["choices"]] == [c["text"] for c in two["choices"]]
        assert one["usage"]["completion_tokens"] == 8


async def test_llm_disconnect_stops_the_generation_thread(worker_llm_engine):
    async with worker_client_for(LLM, worker_llm_engine) as client:
        app = client.app
        sched = worker_llm_engine.scheduler
        before = sched.forward_calls
        await call_and_disconnect(app, {**LONG_CHAT_BODY, "stream": True}, disconnect_after_chunks=3)
        await eventually(lambda: worker_llm_engine.active == 0, "the engine to go idle", within_s=30.0)
        # Counted, not timed (a fast machine makes 200 tokens in no time): the request asked for 200
        # tokens, one forward pass each; a cancelled sequence leaves within a token or two of the cut.
        assert sched.forward_calls - before < 20
        assert app.state.worker.admission.running == 0
        body = (await client.post(CHAT, json={"messages": FRANCE, "temperature": 0, "max_tokens": 3})).json()
        assert body["choices"][0]["message"]["content"].startswith("The")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_embeddings_real_model(worker_embedding_engine):
    async with worker_client_for(EMB, worker_embedding_engine) as client:
        texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."]
        body = (await client.post("/v1/embeddings", json={"input": texts})).json()
        vecs = [d["embedding"] for d in body["data"]]
        assert all(len(v) == 384 for v in vecs)
        assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[2]) + 0.2
        assert body["usage"]["prompt_tokens"] > len(texts)
        b64 = (await client.post("/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"})).json()
        packed = from_base64(b64["data"][0]["embedding"])  # `dimensions`: test_embedding_inputs.py
        assert cosine(packed, vecs[0]) > 0.9999 and abs(sum(v * v for v in packed) - 1) < 1e-4


async def test_embedding_worker_loads_in_the_background(minilm_path):
    settings = WorkerSettings(_env_file=None, model_name="minilm", model_type="embedding",
                              model_path=str(minilm_path))
    async with worker_client_for(settings, wait_ready=False) as client:
        for _ in range(600):
            resp = await client.get("/health")
            if resp.status_code == 200:
                break
            assert resp.json()["error"]["code"] == "model_loading"
            await asyncio.sleep(0.05)
        assert resp.json()["engine"] == "sentence-transformers"
        body = (await client.post("/v1/embeddings", json={"input": "hello"})).json()
        assert len(body["data"][0]["embedding"]) == 384

"""Rerank in the Cohere / Jina shape: a ``rerank`` worker (fake engine for the HTTP layer, the real
``CrossEncoder`` engine on a tiny random cross-encoder) and the gateway in front of it with keys,
default-model injection, metrics and the usage log, like every other endpoint."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import openai
import pytest

from model_service.settings import WorkerSettings
from tests.helpers.auth import auth_on, authed_worker, bearer, create_key, keyed_gateway
from tests.helpers.polling import eventually
from tests.helpers.workers import loaded_engine, worker_client_for

pytestmark = pytest.mark.asyncio

CASES = [  # query, documents, the obviously relevant one
    ("capital of france", ["Berlin is in Germany.", "Paris is the capital of France.", "Cats purr."], 1),
    ("how do cats sleep", ["Stocks fell today.", "The weather is mild.", "Cats sleep most of the day."], 2),
    ("python list sort", ["Sort a Python list with sorted().", "Snakes shed skin.", "Lists of fruit."], 0),
]


async def test_rerank_through_the_gateway_with_keys_and_usage(tmp_path: Path) -> None:
    async with AsyncExitStack() as es:
        chat = await es.enter_async_context(authed_worker("chat", auth=auth_on()))
        ranker = await es.enter_async_context(authed_worker("org/fake-reranker", "rerank", auth=auth_on()))
        url, _, _ = await es.enter_async_context(keyed_gateway(tmp_path, [chat, ranker], auth=auth_on()))
        key = await create_key(url, name="ranker-user", models=["org/fake-reranker"])
        client = await es.enter_async_context(httpx.AsyncClient(base_url=url, timeout=15, trust_env=False,
                                                                headers=bearer(key["key"])))
        for query, docs, best in CASES:  # no model: the default rerank model
            resp = await client.post("/v1/rerank", json={"query": query, "documents": docs, "user": "u-1"})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["results"][0]["index"] == best
            assert body["results"][0]["document"] == {"text": docs[best]}
            scores = [r["relevance_score"] for r in body["results"]]
            assert scores == sorted(scores, reverse=True) and len(scores) == len(docs)
            assert body["model"] == "org/fake-reranker" and body["usage"]["total_tokens"] > 0
        # Jina's and Cohere's paths, object documents, top_n, return_documents
        query, docs, best = CASES[0]
        for path in ("/rerank", "/v2/rerank"):
            resp = await client.post(path, json={"model": "org/fake-reranker", "query": query, "top_n": 1,
                                                 "documents": [{"text": d, "id": i} for i, d in enumerate(docs)],
                                                 "return_documents": False})
            assert resp.status_code == 200, resp.text
            assert [(r["index"], r["document"]) for r in resp.json()["results"]] == [(best, None)]
        # refusals and errors in OpenAI's shape
        refused = await client.post("/v1/rerank", json={"query": "q", "documents": ["a"], "max_chunks_per_doc": 2})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_chunks_per_doc"
        for bad, param in (({"query": "q", "documents": []}, "documents"), ({"documents": ["a"]}, "query"),
                           ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n")):
            resp = await client.post("/v1/rerank", json=bad)
            assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text
        wrong = await client.post("/v1/rerank", json={"model": "chat", "query": "q", "documents": ["a"]})
        assert wrong.status_code == 403, wrong.text  # the key may not use the chat model
        unkeyed = await client.post("/v1/rerank", json={"query": "q", "documents": ["a"]},
                                    headers={"authorization": ""})
        assert unkeyed.status_code == 401
        # the SDK's raw post, as clients without a rerank method call it
        sdk = await es.enter_async_context(openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key["key"], max_retries=0))
        raw = await sdk.post("/rerank", body={"query": query, "documents": docs}, cast_to=httpx.Response)
        assert raw.json()["results"][0]["index"] == best

        log = tmp_path / "usage.log"

        async def logged() -> bool:
            lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
            return sum(1 for x in lines if x["endpoint"] == "/v1/rerank" and x["status"] == 200) >= len(CASES)

        await eventually(logged, "the rerank usage lines")
        line = next(json.loads(x) for x in log.read_text().splitlines() if json.loads(x).get("user") == "u-1")
        assert line["model"] == "org/fake-reranker" and line["prompt_tokens"] > 0
        assert line["key_id"] == key["id"]


async def test_the_cross_encoder_engine_scores_and_batches(tiny_cross_encoder_path: Path) -> None:
    """Real loading and scoring code on a tiny random model: scores are meaningless, the shape is not."""
    values = {"model_name": "tiny-ce", "model_type": "rerank", "model_path": str(tiny_cross_encoder_path),
              "dtype": "float32", "embedding_max_wait_ms": 50}
    for engine in loaded_engine(**values):
        assert engine.name == "cross-encoder"
        async with worker_client_for(WorkerSettings(_env_file=None, **values), engine) as client:
            query, docs, _ = CASES[0]
            answers = await asyncio.gather(*[client.post("/v1/rerank", json={"query": query, "documents": docs})
                                             for _ in range(4)])
            bodies = [a.json() for a in answers]
            assert all(a.status_code == 200 for a in answers), answers[0].text
            first = bodies[0]
            assert sorted(r["index"] for r in first["results"]) == [0, 1, 2]
            assert all(0.0 <= r["relevance_score"] <= 1.0 for r in first["results"])  # sigmoid of one label
            assert all(b["results"] == first["results"] for b in bodies)  # batched or not, the same scores
            assert engine.predict_calls < 4  # several requests shared a predict call
            assert first["usage"]["prompt_tokens"] > len(docs)
            metrics = (await client.get("/metrics")).text
            assert "batch" in metrics

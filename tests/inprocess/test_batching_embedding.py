"""Dynamic micro-batching on the real all-MiniLM-L6-v2 model, through the worker's HTTP route."""

from __future__ import annotations

import asyncio
import math

from model_service.settings import WorkerSettings
from tests.helpers.workers import worker_client_for

EMB = WorkerSettings(_env_file=None, model_name="minilm", model_type="embedding", model_path="unused")
SENTENCES = [f"Sentence number {i} talks about {'cats ' * (i % 5)}and the weather." for i in range(16)]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_concurrent_requests_share_encode_calls_and_get_their_own_vectors(worker_embedding_engine):
    engine = worker_embedding_engine
    async with worker_client_for(EMB, engine) as client:
        async def embed(inputs: str | list[str]) -> list[list[float]]:
            resp = await client.post("/v1/embeddings", json={"input": inputs})
            assert resp.status_code == 200, resp.text
            return [d["embedding"] for d in resp.json()["data"]]

        alone = [(await embed(s))[0] for s in SENTENCES[:4]]
        before = engine.encode_calls
        batched = await asyncio.gather(*(embed(s) for s in SENTENCES), embed(SENTENCES[:3]))
        calls = engine.encode_calls - before
    assert calls < len(batched)
    assert all(len(vecs) == 1 for vecs in batched[:-1]) and len(batched[-1]) == 3
    for i, vec in enumerate(alone):  # padding inside a batch moves floats by rounding error only
        assert cosine(vec, batched[i][0]) > 0.9999
        assert cosine(vec, batched[-1][i]) > 0.9999 if i < 3 else True


async def test_a_cancelled_request_is_skipped_and_the_batcher_keeps_serving(worker_embedding_engine):
    engine = worker_embedding_engine
    task = asyncio.create_task(engine.embed(["this one is cancelled before it is answered"] * 8))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    result = await engine.embed(["still serving"])
    assert len(result.vectors) == 1 and result.prompt_tokens > 2

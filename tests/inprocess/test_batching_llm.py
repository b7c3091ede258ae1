"""Continuous batching on the real SmolLM2 model, through the worker's HTTP routes.

Token budgets stay small (two shared CPU cores); the tests count forward passes, never time them.
"""

from __future__ import annotations

import asyncio

import httpx

from model_service.settings import WorkerSettings
from tests.inprocess.conftest import assert_error, sse_events, wait_until, worker_client_for

CHAT = "/v1/chat/completions"
LLM = WorkerSettings(_env_file=None, model_name="smollm2", model_type="llm", model_path="unused")
QUESTIONS = [
    "What is the capital of France?",
    "hi",
    "Explain in simple words to a child why the sky looks blue during the day and red at sunset.",
    "List three colors.",
]


async def stream_text(client: httpx.AsyncClient, body: dict) -> str:
    resp = await client.post(CHAT, json={**body, "stream": True})
    assert resp.status_code == 200, resp.text
    chunks = [c for c in sse_events(resp.text) if c != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def chat(question: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 6, **extra}


async def test_concurrent_streams_share_forward_passes_and_match_one_at_a_time(worker_llm_engine):
    sched = worker_llm_engine.scheduler
    async with worker_client_for(LLM, worker_llm_engine) as client:
        bodies = [chat(q) for q in QUESTIONS[:3]] + [chat(QUESTIONS[0], frequency_penalty=1.5)]
        alone = [await stream_text(client, b) for b in bodies]
        before, sched.peak_batch = sched.forward_calls, 0
        together = await asyncio.gather(*(stream_text(client, b) for b in bodies))
        calls = sched.forward_calls - before
    assert together == alone
    assert "Paris" in together[0]
    assert sched.peak_batch > 1
    # One at a time, every one of the 4 x 6 tokens costs its own forward pass.
    assert calls < len(bodies) * 6 // 2


async def test_full_queue_answers_429_with_retry_after(worker_llm_engine):
    settings = LLM.model_copy(update={"max_concurrency": 1, "max_queue": 0, "retry_after_s": 3})
    async with worker_client_for(settings, worker_llm_engine) as client:
        worker = client.app.state.worker
        first = asyncio.create_task(client.post(CHAT, json=chat(QUESTIONS[2], max_tokens=40)))
        assert await wait_until(lambda: worker.admission.running == 1, within_s=5)
        resp = await client.post(CHAT, json=chat("hi"))
        assert_error(resp, 429)
        assert resp.headers["retry-after"] == "3"
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert await wait_until(lambda: worker_llm_engine.active == 0, within_s=5)

"""The gateway in front of real model-worker apps (fake engine), all on loopback in one event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from model_service.app import create_app as create_worker_app
from model_service.settings import WorkerSettings
from tests.helpers.polling import eventually
from tests.helpers.servers import gateway, serve
from tests.helpers.workers import worker

PROMPT = [{"role": "user", "content": "the quick brown fox jumps"}]


@pytest.fixture
async def stack() -> AsyncIterator[dict[str, Any]]:
    """Two chat replicas of ``chat-a``, one ``chat-b``, one embedding worker, and the gateway."""
    async with AsyncExitStack() as stack:
        a1 = await stack.enter_async_context(worker("chat-a"))
        a2 = await stack.enter_async_context(worker("chat-a"))
        b = await stack.enter_async_context(worker("chat-b"))
        e = await stack.enter_async_context(worker("emb", "embedding"))
        url, state = await stack.enter_async_context(gateway([a1[0], a2[0], b[0], e[0]]))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=15, trust_env=False))
        yield {"client": client, "state": state, "a1": a1, "a2": a2, "b": b, "e": e}


def sse_data(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]


async def test_models_are_the_union_with_one_card_per_model(stack: dict[str, Any]) -> None:
    body = (await stack["client"].get("/v1/models")).json()
    cards = {c["id"]: c for c in body["data"]}
    assert list(cards) == ["chat-a", "chat-b", "emb"]
    assert cards["emb"]["type"] == "embedding" and cards["emb"]["capabilities"] == ["embeddings"]
    assert cards["chat-a"]["max_model_len"] == 2048


async def test_requests_route_by_model_and_default(stack: dict[str, Any]) -> None:
    client = stack["client"]
    for model in ("chat-a", "chat-b"):
        body = {"model": model, "messages": PROMPT, "temperature": 0}
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200 and resp.json()["model"] == model
        assert resp.json()["choices"][0]["message"]["content"] == "the quick brown fox jumps"
    resp = await client.post("/v1/chat/completions", json={"messages": PROMPT})
    assert resp.status_code == 200 and resp.json()["model"] == "chat-a"
    resp = await client.post("/v1/completions", json={"prompt": "one two", "max_tokens": 5})
    assert resp.status_code == 200 and resp.json()["model"] == "chat-a"
    resp = await client.post("/v1/embeddings", json={"input": ["x", "y"]})
    assert resp.status_code == 200 and resp.json()["model"] == "emb" and len(resp.json()["data"]) == 2


async def test_both_replicas_of_a_model_get_traffic(stack: dict[str, Any]) -> None:
    client = stack["client"]
    for _ in range(20):
        resp = await client.post("/v1/chat/completions", json={"model": "chat-a", "messages": PROMPT})
        assert resp.status_code == 200
    served = [stack[k][1].state.worker.engine.started for k in ("a1", "a2")]
    assert sum(served) == 20 and min(served) > 0


async def test_streaming_passes_through_unchanged(stack: dict[str, Any]) -> None:
    client = stack["client"]
    body = {"model": "chat-b", "messages": PROMPT, "stream": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    via_gateway = await client.post("/v1/chat/completions", json=body)
    direct = await client.post(f"{stack['b'][0]}/v1/chat/completions", json=body)
    assert via_gateway.status_code == direct.status_code == 200
    assert via_gateway.headers["content-type"] == direct.headers["content-type"]
    assert via_gateway.headers["content-type"].startswith("text/event-stream")
    # Proxies in front (nginx) must not buffer the stream: the worker's no-buffering headers pass on.
    assert via_gateway.headers["x-accel-buffering"] == "no" and via_gateway.headers["cache-control"] == "no-cache"
    got, want = sse_data(via_gateway.text), sse_data(direct.text)
    assert got[-1] == "[DONE]" and len(got) == len(want)

    def shape(events: list[str]) -> list[Any]:  # ids and timestamps differ between two requests
        out = []
        for event in events[:-1]:
            chunk = json.loads(event)
            out.append((chunk["object"], chunk["model"], chunk["choices"], chunk.get("usage")))
        return out

    assert shape(got) == shape(want)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, got[:-1])
                   if c["choices"])
    assert text == "the quick brown fox jumps"


async def test_worker_4xx_passes_through_unchanged(stack: dict[str, Any]) -> None:
    client = stack["client"]
    body = {"model": "chat-a", "messages": [], "temperature": 9}
    via_gateway = await client.post("/v1/chat/completions", json=body)
    direct = await client.post(f"{stack['a1'][0]}/v1/chat/completions", json=body)
    assert via_gateway.status_code == direct.status_code == 400
    assert via_gateway.json() == direct.json()
    assert via_gateway.json()["error"]["param"] is not None


async def test_wrong_endpoint_for_the_model_type_is_400(stack: dict[str, Any]) -> None:
    resp = await stack["client"].post("/v1/embeddings", json={"model": "chat-a", "input": "x"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"


async def test_client_disconnect_mid_stream_cancels_the_upstream_generation() -> None:
    async with worker("slow", fake_token_delay_s=0.02, fake_max_model_len=100_000) as (wurl, wapp):
        async with gateway([wurl]) as (url, state):
            engine = wapp.state.worker.engine
            words = " ".join(f"w{i}" for i in range(3000))  # a minute of tokens at 20 ms each
            body = {"model": "slow", "messages": [{"role": "user", "content": words}], "stream": True,
                    "max_tokens": 5000}
            async with httpx.AsyncClient(timeout=15, trust_env=False) as client:
                async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
                    assert resp.status_code == 200
                    seen = 0
                    async for line in resp.aiter_lines():
                        seen += line.startswith("data: ")
                        if seen >= 3:
                            break
                    assert engine.active == 1
            # The client is gone: the gateway closes its upstream request and the worker stops.
            async def stopped() -> bool:
                return not engine.active and not state.in_flight.view()

            await eventually(stopped, "the upstream generation to stop")
            assert engine.cancelled == 1 and engine.finished == 0


async def test_gpu_stats_from_every_worker_say_no_gpu(stack: dict[str, Any]) -> None:
    resp = await stack["client"].get("/gpu-stats")
    assert resp.status_code == 200
    rows = resp.json()["data"]
    assert len(rows) == 4 and {r["model"] for r in rows} == {"chat-a", "chat-b", "emb"}
    for row in rows:
        assert row["error"] is None and row["stats"]["available"] is False and row["stats"]["reason"]


async def test_services_health_and_metrics(stack: dict[str, Any]) -> None:
    client = stack["client"]
    await client.post("/v1/chat/completions", json={"model": "chat-b", "messages": PROMPT})
    await client.post("/v1/chat/completions", json={"model": "nope", "messages": PROMPT})
    rows = (await client.get("/services")).json()["data"]
    assert len(rows) == 4 and all(r["healthy"] and r["in_flight"] == 0 for r in rows)
    health = (await client.get("/health")).json()
    assert health == {**health, "status": "ok", "healthy_replicas": 4, "models": ["chat-a", "chat-b", "emb"]}
    metrics = (await client.get("/metrics")).text
    assert ('gateway_requests_total{endpoint="/v1/chat/completions",model="chat-b",status="200"} 1.0'
            in metrics)
    assert 'gateway_requests_total{endpoint="/v1/chat/completions",model="-",status="404"} 1.0' in metrics
    assert "gateway_request_duration_seconds_bucket" in metrics
    assert "nope" not in metrics


async def test_worker_that_is_not_ready_is_not_routed() -> None:
    async with worker("ready") as (ready_url, _):
        broken = WorkerSettings(engine="fake", model_name="later", fake_load_error="no weights", _env_file=None)
        async with serve(create_worker_app(broken)) as loading_url:
            async with gateway([ready_url, loading_url]) as (url, _):
                async with httpx.AsyncClient(base_url=url, timeout=15, trust_env=False) as client:
                    rows = (await client.get("/services")).json()["data"]
                    assert rows[1]["healthy"] is False and rows[1]["reason"].startswith("not ready")
                    resp = await client.post("/v1/chat/completions", json={"model": "later", "messages": PROMPT})
                    assert resp.status_code == 503
                    models = (await client.get("/v1/models")).json()["data"]
                    assert [m["id"] for m in models] == ["ready"]


async def test_client_leaving_before_a_non_streaming_answer_cancels_the_upstream() -> None:
    async with worker("slow", fake_token_delay_s=0.02, fake_max_model_len=100_000) as (wurl, wapp):
        async with gateway([wurl]) as (url, state):
            engine = wapp.state.worker.engine
            words = " ".join(f"w{i}" for i in range(3000))
            body = {"model": "slow", "messages": [{"role": "user", "content": words}], "max_tokens": 5000}
            async with httpx.AsyncClient(timeout=15, trust_env=False) as client:
                call = asyncio.ensure_future(client.post(f"{url}/v1/chat/completions", json=body))

                async def generating() -> bool:
                    return engine.active == 1

                await eventually(generating, "the worker to be generating")
                call.cancel()  # the client gives up while the worker is mid-generation
                with pytest.raises(asyncio.CancelledError):
                    await call

            async def stopped() -> bool:
                return not engine.active and not state.in_flight.view()

            await eventually(stopped, "the upstream generation to stop")
            assert engine.cancelled == 1 and engine.finished == 0
            metrics = state.metrics.render().decode()
            assert 'model="slow",status="499"' in metrics

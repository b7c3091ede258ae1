"""How one probe answer becomes an observation (httpx.MockTransport plays the service)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from common.records import ServiceRecord
from service_registry.probes import probe
from service_registry.settings import StaticUpstream

URL = "http://w:8000"
WORKER = ServiceRecord(id="w", kind="worker", url=URL, api_base=f"{URL}/v1", models=("m",), type="llm")
HEALTH = {"status": "ok", "model": "m", "type": "llm", "engine": "fake", "max_model_len": 64}
NO_GPU = {"available": False, "reason": "no GPU: NVML unavailable"}


def client_for(routes: dict[str, httpx.Response]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return routes.get(request.url.path, httpx.Response(404))
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_ready_worker() -> None:
    async with client_for({"/health": httpx.Response(200, json=HEALTH),
                           "/gpu-stats": httpx.Response(200, json=NO_GPU)}) as client:
        obs = await probe(client, WORKER, None, 1.0)
    assert obs.outcome == "ok" and obs.engine == "fake" and obs.max_model_len == 64
    assert obs.gpu is not None and obs.gpu.available is False and obs.url == URL


@pytest.mark.parametrize(("body", "loading", "reason"), [
    ({**HEALTH, "status": "error", "detail": "OOM"}, False, "error: OOM"),
    ({**HEALTH, "status": "loading"}, True, "loading"),
    ({"error": {"message": "failed to load", "type": "server_error", "param": None,
                "code": "model_load_failed"}}, False, "error: failed to load"),
    ({"error": {"message": "still loading", "type": "server_error", "param": None,
                "code": "model_loading"}}, True, "loading: still loading"),
    ({"something": "else"}, True, "not ready (HTTP 503)"),
])
async def test_503_bodies(body: dict, loading: bool, reason: str) -> None:
    async with client_for({"/health": httpx.Response(503, json=body)}) as client:
        obs = await probe(client, WORKER, None, 1.0)
    assert obs.outcome == "not_ready" and obs.loading is loading and obs.reason == reason
    assert obs.gpu is None and obs.gpu_error  # a /gpu-stats 404 is noted, not fatal


async def test_unexpected_answers_are_failures() -> None:
    async with client_for({"/health": httpx.Response(200, text="hello")}) as client:
        assert (await probe(client, WORKER, None, 1.0)).outcome == "failed"
    async with client_for({"/health": httpx.Response(500)}) as client:
        obs = await probe(client, WORKER, None, 1.0)
        assert obs.outcome == "failed" and obs.reason == "/health answered HTTP 500"


async def test_slow_service_is_cut_off_by_the_probe_timeout() -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=HEALTH)
    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        obs = await probe(client, WORKER, None, 0.1)
    assert obs.outcome == "failed" and "timed out" in (obs.reason or "")


async def test_external_sends_the_key_only_on_the_wire() -> None:
    static = StaticUpstream(id="x", base_url="http://ext:1", api_key="sk-k", models=["m"])
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "list", "data": []})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        obs = await probe(client, static.record(), static, 1.0)
    assert obs.outcome == "ok" and seen[0].url == "http://ext:1/v1/models"
    assert seen[0].headers["authorization"] == "Bearer sk-k" and "sk-k" not in repr(obs)

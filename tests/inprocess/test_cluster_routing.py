"""Gateway routing rules end to end over loopback stub workers: fallback model, 503 + Retry-After,
circuit state in /services and metrics, and the registry being unreachable at start-up."""

from __future__ import annotations

import json

import httpx

from tests.helpers.ports import free_port
from tests.helpers.servers import gateway
from tests.helpers.stub_worker import StubWorker

PROMPT = [{"role": "user", "content": "hi"}]


async def post(url: str, model: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        return await client.post(f"{url}/v1/chat/completions", json={"model": model, "messages": PROMPT})


async def test_fallback_model_takes_requests_its_model_cannot_serve() -> None:
    async with StubWorker("small", mode="echo") as small, StubWorker("big", mode="500") as big:
        async with gateway([small.url, big.url], fallbacks={"big": "small"}, retries=0) as (url, _):
            resp = await post(url, "big")  # big fails (no retry budget left) -> 503, no silent fallback
            assert resp.status_code == 503
            async with StubWorker("gone") as gone:
                pass
            async with gateway([small.url, gone.url], fallbacks={"gone": "small"}) as (url2, _):
                resp = await post(url2, "gone")  # no usable replica of "gone": its fallback answers
                assert resp.status_code == 200
                assert json.loads(resp.json()["body"])["model"] == "small"


async def test_no_usable_replica_is_503_with_retry_after() -> None:
    async with StubWorker("m") as stub:
        pass
    async with gateway([stub.url]) as (url, _):
        resp = await post(url, "m")
        assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1
        assert resp.json()["error"]["code"] == "service_unavailable"


async def test_circuit_opens_after_failures_and_shows_in_services_and_metrics() -> None:
    async with StubWorker("m", mode="500") as bad, StubWorker("m") as good:
        # Replicas tried in configured order, so the bad one is picked until its circuit opens.
        async with gateway([bad.url, good.url], ordered=True, circuit_failures=2, circuit_cooldown_s=60) as (url, _):
            for _ in range(6):
                assert (await post(url, "m")).status_code == 200
            assert bad.hits == 2  # open after two failures: skipped from then on
            async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
                rows = {r["url"]: r for r in (await client.get(f"{url}/services")).json()["data"]}
                assert rows[bad.url]["circuit"]["state"] == "open" and rows[bad.url]["usable"] is False
                assert rows[good.url]["circuit"]["state"] == "closed" and rows[good.url]["served"] == 6
                metrics = (await client.get(f"{url}/metrics")).text
            assert f'gateway_circuit_state{{replica="{bad.url}"}} 2.0' in metrics


async def test_gateway_starts_and_says_so_when_the_registry_is_down() -> None:
    registry = f"http://127.0.0.1:{free_port()}"
    async with StubWorker("m") as stub, gateway([stub.url], registry_url=registry) as (url, _):
        assert (await post(url, "m")).status_code == 200  # the static workers still route
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            health = (await client.get(f"{url}/health")).json()
        assert health["status"] == "degraded"
        assert health["registry"]["url"] == registry and health["registry"]["reachable"] is False

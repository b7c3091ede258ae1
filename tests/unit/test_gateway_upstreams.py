"""Health probing turns any worker answer (or none) into a Replica; it never raises."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from gateway.probes import UpstreamProber, probe_replica
from gateway.upstreams import Replica, Snapshot

HEALTH = {"status": "ok", "model": "m", "type": "embedding", "engine": "fake", "max_model_len": 512}


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_ready_worker_is_healthy_with_model_type_and_latency() -> None:
    async with client_for(lambda req: httpx.Response(200, json=HEALTH)) as client:
        replica = await probe_replica(client, Replica(url="http://w"), 1.0)
    assert replica.healthy and replica.reason is None
    assert (replica.model, replica.type, replica.max_model_len) == ("m", "embedding", 512)
    assert replica.last_seen is not None and replica.latency_ms is not None


async def test_loading_worker_is_unhealthy_and_keeps_what_was_known() -> None:
    before = Replica(url="http://w", model="m", type="llm", healthy=True, reason=None, last_seen=1.0)
    loading = {"error": {"message": "loading", "type": "server_error", "param": None, "code": None}}
    async with client_for(lambda req: httpx.Response(503, json=loading)) as client:
        replica = await probe_replica(client, before, 1.0)
    assert not replica.healthy and replica.reason == "not ready: HTTP 503"
    assert (replica.model, replica.type, replica.last_seen) == ("m", "llm", 1.0)


async def test_unreachable_worker_is_unhealthy_with_a_reason() -> None:
    def refuse(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    async with client_for(refuse) as client:
        replica = await probe_replica(client, Replica(url="http://w", model="m"), 1.0)
    assert not replica.healthy and replica.reason.startswith("unreachable: ConnectError")
    assert replica.model == "m"


async def test_openai_server_with_empty_health_is_known_through_its_model_list() -> None:
    def vllm_like(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/health":
            return httpx.Response(200)
        return httpx.Response(200, json={"object": "list", "data": [{"id": "Qwen/Qwen2.5", "object": "model"}]})

    async with client_for(vllm_like) as client:
        replica = await probe_replica(client, Replica(url="http://w"), 1.0)
    assert replica.healthy and replica.model == "Qwen/Qwen2.5" and replica.type == "llm"


async def test_worker_reporting_error_status_is_unhealthy() -> None:
    async with client_for(lambda req: httpx.Response(200, json={**HEALTH, "status": "error"})) as client:
        replica = await probe_replica(client, Replica(url="http://w"), 1.0)
    assert not replica.healthy and replica.reason == "not ready: error"


async def test_a_probe_round_swaps_in_a_new_immutable_snapshot_in_configured_order() -> None:
    def answer(req: httpx.Request) -> httpx.Response:
        if req.url.host == "down":
            raise httpx.ConnectError("refused", request=req)
        return httpx.Response(200, json={**HEALTH, "model": req.url.host})

    async with client_for(answer) as client:
        prober = UpstreamProber(client, ["http://b", "http://down", "http://a"], timeout=1)
        first = prober.snapshot
        fresh = await prober.probe_once()
    assert prober.snapshot is fresh and fresh is not first
    assert [r.url for r in fresh.replicas] == ["http://b", "http://down", "http://a"]
    assert [r.model for r in fresh.healthy()] == ["b", "a"]
    assert isinstance(fresh, Snapshot) and isinstance(fresh.replicas, tuple)
